/*
 * zm_gemm against a naive triple loop in double, for every transpose
 * combination, odd sizes, strided (ld > width) operands and beta.
 */
#include <math.h>
#include <stdlib.h>

#include "gemm.h"
#include "unit.h"

static float frand(unsigned *seed)
{
	*seed = *seed * 1103515245u + 12345u;
	return (float)((*seed >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static const size_t sizes[] = { 1, 3, 17, 64 };

START_TEST(test_gemm_vs_naive)
{
	size_t m = sizes[_i % 4], n = sizes[(_i / 4) % 4], k = sizes[(_i / 16) % 4];
	unsigned seed = 1234u + (unsigned)_i;
	int variant;

	for (variant = 0; variant < 4; variant++) {
		bool ta = variant & 1, tb = variant & 2;
		size_t lda = (ta ? m : k) + 2, ldb = (tb ? k : n) + 1, ldc = n + 3;
		size_t arows = ta ? k : m, brows = tb ? n : k;
		float *a = malloc(arows * lda * sizeof(float));
		float *b = malloc(brows * ldb * sizeof(float));
		float *c = malloc(m * ldc * sizeof(float));
		float *c0 = malloc(m * ldc * sizeof(float));
		size_t i, j, p;

		for (i = 0; i < arows * lda; i++)
			a[i] = frand(&seed);
		for (i = 0; i < brows * ldb; i++)
			b[i] = frand(&seed);
		for (i = 0; i < m * ldc; i++)
			c[i] = c0[i] = frand(&seed);
		zm_gemm(ta, tb, m, n, k, 0.5f, a, lda, b, ldb, 2.0f, c, ldc);
		for (i = 0; i < m; i++) {
			for (j = 0; j < n; j++) {
				double want = 2.0 * c0[i * ldc + j];
				for (p = 0; p < k; p++) {
					double x = ta ? a[p * lda + i] : a[i * lda + p];
					double y = tb ? b[j * ldb + p] : b[p * ldb + j];
					want += 0.5 * x * y;
				}
				ck_assert_msg(fabs(c[i * ldc + j] - want) <=
				              1e-4 * (1.0 + fabs(want)),
				              "m=%zu n=%zu k=%zu ta=%d tb=%d (%zu,%zu): %g vs %g",
				              m, n, k, ta, tb, i, j,
				              (double)c[i * ldc + j], want);
			}
			/* Padding columns of C must be untouched. */
			for (j = n; j < ldc; j++)
				ck_assert(c[i * ldc + j] == c0[i * ldc + j]);
		}
		free(a);
		free(b);
		free(c);
		free(c0);
	}
}
END_TEST

START_TEST(test_beta_zero_ignores_nan)
{
	float a[2] = { 1, 2 }, b[2] = { 3, 4 }, c[1] = { NAN };

	zm_gemm(false, false, 1, 1, 2, 1.0f, a, 2, b, 1, 0.0f, c, 1);
	ck_assert(c[0] == 11.0f);
}
END_TEST

START_TEST(test_arch_reported)
{
	const char *arch = zm_gemm_arch();

	ck_assert_ptr_nonnull(arch);
	ck_assert(arch[0] != '\0');
}
END_TEST

Suite *suite_gemm(void)
{
	Suite *s = suite_create("gemm");
	TCase *tc = tcase_create("core");

	tcase_add_loop_test(tc, test_gemm_vs_naive, 0, 64);
	tcase_add_test(tc, test_beta_zero_ignores_nan);
	tcase_add_test(tc, test_arch_reported);
	suite_add_tcase(s, tc);
	return s;
}
