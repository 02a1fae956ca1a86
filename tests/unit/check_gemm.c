/*
 * zm_gemm against a naive triple loop in double, for every transpose
 * combination, odd sizes, strided (ld > width) operands and beta; the
 * packed-weights path (zm_gemm_pack, zm_gemm_packed_run) the same way, in
 * both of its layouts, with block callbacks that must see every output
 * exactly once and after its last update, and zm_gemm_packed_combine
 * against the product with the combined matrix.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gemm.h"
#include "mem.h"
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

/* C = 0.9 C + A^T B (A stored k x m, B k x n: the momentum GEMM of
 * training) with C ending where an inaccessible page begins, so that a
 * read past its end faults (Check reports the signal) instead of passing
 * unseen.  BLIS 0.9's Haswell small-matrix kernels read one float past C
 * for shapes such as m = 16, n = 3 (a 3-input, 16-unit layer). */
static void accumulate_at_page_end(size_t m, size_t n, size_t k)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), i, j, p;
	unsigned seed = 99u + (unsigned)(m * 64 + n);
	float *a = malloc(k * m * sizeof(float));
	float *b = malloc(k * n * sizeof(float));
	float *c0 = malloc(m * n * sizeof(float)), *c;
	unsigned char *map;

	ck_assert(a && b && c0 && m * n * sizeof(float) <= page);
	map = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE,
	           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ck_assert(map != MAP_FAILED);
	ck_assert_int_eq(mprotect(map + page, page, PROT_NONE), 0);
	c = (float *)(void *)(map + page) - m * n;
	for (i = 0; i < k * m; i++)
		a[i] = frand(&seed);
	for (i = 0; i < k * n; i++)
		b[i] = frand(&seed);
	for (i = 0; i < m * n; i++)
		c[i] = c0[i] = frand(&seed);
	zm_gemm(true, false, m, n, k, 1.0f, a, m, b, n, 0.9f, c, n);
	for (i = 0; i < m; i++)
		for (j = 0; j < n; j++) {
			double want = 0.9 * c0[i * n + j];
			for (p = 0; p < k; p++)
				want += (double)a[p * m + i] * b[p * n + j];
			ck_assert_msg(fabs(c[i * n + j] - want) <=
			              1e-4 * (1.0 + fabs(want)),
			              "m=%zu n=%zu k=%zu (%zu,%zu)", m, n, k, i, j);
		}
	munmap(map, 2 * page);
	free(a);
	free(b);
	free(c0);
}

START_TEST(test_accumulate_stays_in_c)
{
	size_t m, n;

	accumulate_at_page_end(16, 3, 64);
	for (m = 1; m <= 20; m++)
		for (n = 1; n <= 9; n++)
			accumulate_at_page_end(m, n, 33);
}
END_TEST

START_TEST(test_arch_reported)
{
	const char *arch = zm_gemm_arch();

	ck_assert_ptr_nonnull(arch);
	ck_assert(arch[0] != '\0');
}
END_TEST


/* ---- packed weights ---- */

/* The callback of the packed runs: counts how often each element of Y was
 * handed over, and maps v to 2v + col + 1 so that a block handed over
 * before its last update, or twice, gives a wrong value. */
struct blocks_seen {
	size_t n, m;
	unsigned *count;
};

static void see_block(void *vctx, float *y, size_t ldy, size_t row,
                      size_t rows, size_t col, size_t cols)
{
	struct blocks_seen *b = vctx;
	size_t i, j;

	ck_assert(row + rows <= b->m && col + cols <= b->n);
	ck_assert(rows > 0 && cols > 0);
	for (i = 0; i < rows; i++)
		for (j = 0; j < cols; j++) {
			b->count[(row + i) * b->n + col + j]++;
			y[i * ldy + j] = 2.0f * y[i * ldy + j] + (float)(col + j) + 1.0f;
		}
}

/* W (n x k, ldw) times X^T, naive in double, through see_block's map,
 * against y; padding of y (ldy > n) unchanged from pad. */
static void check_product(const float *w, size_t ldw, const float *x,
                          size_t ldx, const float *y, size_t ldy, size_t m,
                          size_t n, size_t k, float pad, const char *what)
{
	size_t i, j, p;

	for (i = 0; i < m; i++) {
		for (j = 0; j < n; j++) {
			double want = 0;
			for (p = 0; p < k; p++)
				want += (double)x[i * ldx + p] * w[j * ldw + p];
			want = 2.0 * want + (double)j + 1.0;
			ck_assert_msg(fabs(y[i * ldy + j] - want) <=
			              1e-4 * (1.0 + fabs(want)),
			              "%s m=%zu n=%zu k=%zu (%zu,%zu): %g vs %g", what,
			              m, n, k, i, j, (double)y[i * ldy + j], want);
		}
		for (j = n; j < ldy; j++)
			ck_assert(y[i * ldy + j] == pad);
	}
}

/* Shapes around the micro-tile (16-32 outputs x 6-16 rows on the usual
 * kernels), the depth limit of one block (k 500 and 1000 take two and
 * three blocks where it is 384-512), more outputs than one block of them
 * (n 600) and more rows than the input scratch holds (max_rows 5). */
static const size_t pk_m[] = { 1, 5, 13, 40 };
static const size_t pk_n[] = { 1, 10, 33, 70 };
static const size_t pk_k[] = { 1, 7, 500, 1000 };

static void packed_case(size_t m, size_t n, size_t k, size_t max_rows,
                        int threads, unsigned seed)
{
	size_t ldw = k + 3, ldx = k + 1, ldy = n + 2, i;
	float *w = malloc(n * ldw * sizeof(float));
	float *x = malloc(m * ldx * sizeof(float));
	float *y = malloc(m * ldy * sizeof(float));
	struct blocks_seen b = { n, m, calloc(m * n, sizeof(unsigned)) };
	struct zm_gemm_packed p;
	struct zm_error err;
	char what[64];

	ck_assert(w && x && y && b.count);
	for (i = 0; i < n * ldw; i++)
		w[i] = frand(&seed);
	for (i = 0; i < m * ldx; i++)
		x[i] = frand(&seed);
	for (i = 0; i < m * ldy; i++)
		y[i] = NAN;	/* ignored: the first pass overwrites */
	for (i = 0; i < m; i++)
		memset(y + i * ldy + n, 0, (ldy - n) * sizeof(float));
	zm_gemm_setup(threads);
	ck_assert_int_eq(zm_gemm_pack(&p, w, n, k, ldw, max_rows, &err), ZM_OK);
	if (threads > 1)
		ck_assert_msg(!p.panels, "more than one thread keeps the row-major copy");
	/* The copy is the caller's: clobbering w must not matter. */
	for (i = 0; i < n * ldw; i++)
		w[i] = -w[i];
	zm_gemm_packed_run(&p, m, x, ldx, y, ldy, see_block, &b);
	for (i = 0; i < n * ldw; i++)
		w[i] = -w[i];
	snprintf(what, sizeof(what), "%s, max_rows %zu",
	         p.panels ? "panels" : "row-major", max_rows);
	check_product(w, ldw, x, ldx, y, ldy, m, n, k, 0.0f, what);
	for (i = 0; i < m * n; i++)
		ck_assert_msg(b.count[i] == 1, "%s: element %zu handed over %u times",
		              what, i, b.count[i]);
	zm_gemm_packed_free(&p);
	zm_gemm_setup(1);
	free(w);
	free(x);
	free(y);
	free(b.count);
}

START_TEST(test_packed_vs_naive)
{
	size_t m = pk_m[_i % 4], n = pk_n[(_i / 4) % 4], k = pk_k[(_i / 16) % 4];
	unsigned seed = 777u + (unsigned)_i;

	packed_case(m, n, k, 64, 1, seed);
	packed_case(m, n, k, 5, 1, seed);
	packed_case(m, n, k, 64, 2, seed);
}
END_TEST

START_TEST(test_packed_many_outputs)
{
	/* Several blocks of outputs and of rows at once. */
	packed_case(30, 600, 9, 12, 1, 99u);
	packed_case(30, 600, 9, 12, 2, 99u);
}
END_TEST

START_TEST(test_packed_combine)
{
	enum { N = 37, KD = 530, M = 9, C = 3 };
	float *w[C], *sum = malloc(N * KD * sizeof(float));
	float *x = malloc(M * KD * sizeof(float)), *y = malloc(M * N * sizeof(float));
	struct zm_gemm_packed p[C], d;
	const float coef[C] = { 0.5f, 0.0f, -1.25f };
	struct blocks_seen b = { N, M, calloc(M * N, sizeof(unsigned)) };
	struct zm_error err;
	unsigned seed = 5u;
	size_t i, c;

	ck_assert(sum && x && y && b.count);
	for (i = 0; i < M * KD; i++)
		x[i] = frand(&seed);
	for (i = 0; i < N * KD; i++)
		sum[i] = 0;
	for (c = 0; c < C; c++) {
		w[c] = malloc(N * KD * sizeof(float));
		ck_assert(w[c] != NULL);
		for (i = 0; i < N * KD; i++) {
			w[c][i] = frand(&seed);
			sum[i] += coef[c] * w[c][i];
		}
		ck_assert_int_eq(zm_gemm_pack(&p[c], w[c], N, KD, KD, M, &err), ZM_OK);
	}
	ck_assert_int_eq(zm_gemm_pack(&d, w[0], N, KD, KD, M, &err), ZM_OK);
	zm_gemm_packed_combine(&d, p, coef, C);
	zm_gemm_packed_run(&d, M, x, KD, y, N, see_block, &b);
	check_product(sum, KD, x, KD, y, N, M, N, KD, 0.0f, "combine");
	/* No coefficients: the zero matrix. */
	zm_gemm_packed_combine(&d, p, coef, 0);
	memset(b.count, 0, M * N * sizeof(unsigned));
	zm_gemm_packed_run(&d, M, x, KD, y, N, NULL, NULL);
	for (i = 0; i < M * N; i++)
		ck_assert(y[i] == 0.0f);
	for (c = 0; c < C; c++) {
		zm_gemm_packed_free(&p[c]);
		free(w[c]);
	}
	zm_gemm_packed_free(&d);
	free(sum);
	free(x);
	free(y);
	free(b.count);
}
END_TEST

START_TEST(test_pack_out_of_memory)
{
	float w[6] = { 1, 2, 3, 4, 5, 6 };
	struct zm_gemm_packed p;
	struct zm_error err;

	setenv("ZM_FAULT", "alloc:1", 1);
	zm_fault_reset();
	ck_assert_int_eq(zm_gemm_pack(&p, w, 2, 3, 3, 4, &err), ZM_ERR_NOMEM);
	unsetenv("ZM_FAULT");
	zm_fault_reset();
	ck_assert_ptr_null(p.data);
	zm_gemm_packed_free(&p);
}
END_TEST

Suite *suite_gemm(void)
{
	Suite *s = suite_create("gemm");
	TCase *tc = tcase_create("core");

	tcase_add_loop_test(tc, test_gemm_vs_naive, 0, 64);
	tcase_add_test(tc, test_beta_zero_ignores_nan);
	tcase_add_test(tc, test_accumulate_stays_in_c);
	tcase_add_test(tc, test_arch_reported);
	tcase_add_loop_test(tc, test_packed_vs_naive, 0, 64);
	tcase_add_test(tc, test_packed_many_outputs);
	tcase_add_test(tc, test_packed_combine);
	tcase_add_test(tc, test_pack_out_of_memory);
	suite_add_tcase(s, tc);
	return s;
}
