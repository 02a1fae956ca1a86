/*
 * Tensors: half-precision conversions against their definition, dtype
 * conversion to F32, allocation limits, finiteness checks.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "tensor.h"
#include "unit.h"

/* IEEE binary16 decoded from its definition, in double. */
static double f16_reference(uint16_t h)
{
	int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
	double v;

	if (exp == 0)
		v = ldexp(mant, -24);
	else if (exp == 31)
		v = mant ? NAN : INFINITY;
	else
		v = ldexp(1024 + mant, exp - 25);
	return sign ? -v : v;
}

START_TEST(test_f16_decode_all)
{
	uint32_t h;

	for (h = 0; h < 65536; h++) {
		double want = f16_reference((uint16_t)h);
		float got = zm_f16_to_f32((uint16_t)h);
		if (isnan(want))
			ck_assert_msg(isnan(got), "0x%04x", h);
		else
			ck_assert_msg((double)got == want, "0x%04x: %g vs %g", h,
			              (double)got, want);
	}
}
END_TEST

START_TEST(test_f16_encode_round_trip_and_ties)
{
	uint32_t h;

	for (h = 0; h < 65536; h++) {
		float f = zm_f16_to_f32((uint16_t)h);
		if (isnan(f)) {
			ck_assert(isnan(zm_f16_to_f32(zm_f32_to_f16(f))));
			continue;
		}
		ck_assert_msg(zm_f32_to_f16(f) == h, "0x%04x", h);
	}
	/* Halfway between 1 and the next half (1 + 2^-10) rounds to even (1);
	 * halfway above that rounds up to the even neighbour. */
	ck_assert_uint_eq(zm_f32_to_f16(1.0f + ldexpf(1, -11)), 0x3c00);
	ck_assert_uint_eq(zm_f32_to_f16(1.0f + 3 * ldexpf(1, -11)), 0x3c02);
	ck_assert_uint_eq(zm_f32_to_f16(70000.0f), 0x7c00);	/* overflow */
	ck_assert_uint_eq(zm_f32_to_f16(ldexpf(1, -26)), 0);	/* underflow */
	ck_assert_uint_eq(zm_f32_to_f16(-ldexpf(1, -24)), 0x8001);
}
END_TEST

START_TEST(test_bf16)
{
	uint32_t h;

	for (h = 0; h < 65536; h++) {
		float f = zm_bf16_to_f32((uint16_t)h);
		uint32_t bits;
		memcpy(&bits, &f, 4);
		ck_assert_uint_eq(bits, h << 16);
		if (!isnan(f))
			ck_assert_uint_eq(zm_f32_to_bf16(f), h);
	}
	/* 1 + 2^-8 is halfway between bf16 1 and 1 + 2^-7: ties to even. */
	ck_assert_uint_eq(zm_f32_to_bf16(1.0f + ldexpf(1, -8)), 0x3f80);
	ck_assert_uint_eq(zm_f32_to_bf16(1.0f + 3 * ldexpf(1, -8)), 0x3f82);
	ck_assert(isnan(zm_bf16_to_f32(zm_f32_to_bf16(NAN))));
}
END_TEST

START_TEST(test_to_f32_every_dtype)
{
	static const double values[] = { 0, 1, -2, 3, 100, -100, 127 };
	enum { N = 7 };
	int d;

	for (d = 0; d < ZM_DTYPE_COUNT; d++) {
		struct zm_tensor t, f;
		struct zm_error err;
		int64_t shape[1] = { N };
		float *out;
		int i;

		ck_assert_int_eq(zm_tensor_alloc(&t, "t", (enum zm_dtype)d, 1,
		                                 shape, &err), ZM_OK);
		for (i = 0; i < N; i++) {
			double v = values[i];
			char *p = (char *)t.data + (size_t)i * zm_dtype_size(t.dtype);
			if (d == ZM_DTYPE_U8 && v < 0)
				v = -v;
			switch (t.dtype) {
			case ZM_DTYPE_F32: { float x = (float)v; memcpy(p, &x, 4); break; }
			case ZM_DTYPE_F64: memcpy(p, &v, 8); break;
			case ZM_DTYPE_F16: { uint16_t x = zm_f32_to_f16((float)v); memcpy(p, &x, 2); break; }
			case ZM_DTYPE_BF16: { uint16_t x = zm_f32_to_bf16((float)v); memcpy(p, &x, 2); break; }
			case ZM_DTYPE_U8: *(uint8_t *)p = (uint8_t)v; break;
			case ZM_DTYPE_I8: *(int8_t *)p = (int8_t)v; break;
			case ZM_DTYPE_I32: { int32_t x = (int32_t)v; memcpy(p, &x, 4); break; }
			case ZM_DTYPE_I64: { int64_t x = (int64_t)v; memcpy(p, &x, 8); break; }
			default: break;
			}
		}
		ck_assert_int_eq(zm_tensor_to_f32(&f, &t, 0.5f, &err), ZM_OK);
		out = f.data;
		for (i = 0; i < N; i++) {
			double v = values[i];
			if (d == ZM_DTYPE_U8 && v < 0)
				v = -v;
			ck_assert_msg(out[i] == (float)(v * 0.5), "%s[%d]: %g",
			              zm_dtype_name(t.dtype), i, (double)out[i]);
		}
		zm_tensor_release(&t);
		zm_tensor_release(&f);
	}
}
END_TEST

START_TEST(test_dtype_names)
{
	int d;
	enum zm_dtype back;

	for (d = 0; d < ZM_DTYPE_COUNT; d++) {
		ck_assert(zm_dtype_parse(zm_dtype_name((enum zm_dtype)d), &back));
		ck_assert_int_eq(back, d);
	}
	ck_assert(!zm_dtype_parse("F8_E4M3", &back));
	ck_assert(!zm_dtype_parse("f32", &back));
}
END_TEST

START_TEST(test_alloc_overflow)
{
	struct zm_tensor t;
	struct zm_error err;
	int64_t shape[3] = { INT64_C(1) << 40, INT64_C(1) << 40, 4 };
	int64_t neg[1] = { -1 };

	ck_assert_int_eq(zm_tensor_alloc(&t, "big", ZM_DTYPE_F32, 3, shape,
	                                 &err), ZM_ERR_NOMEM);
	ck_assert_ptr_null(t.data);
	ck_assert_int_eq(zm_tensor_alloc(&t, "neg", ZM_DTYPE_F32, 1, neg, &err),
	                 ZM_ERR_NOMEM);
}
END_TEST

/* zm_first_nonfinite against a naive scan: a NaN or an infinity at
 * every position of interest (first, inside and at the edges of the
 * 1024-element blocks, the tail), and none. */
START_TEST(test_first_nonfinite)
{
	enum { N = 2 * 1024 + 37 };
	static float x[N];
	const size_t at[] = { 0, 3, 1023, 1024, 1500, 2047, 2048, N - 1 };
	const float bad[] = { NAN, INFINITY, -INFINITY };
	size_t i, k, b, n;

	for (i = 0; i < N; i++)
		x[i] = (float)i * 1e30f;   /* large but finite */
	ck_assert_uint_eq(zm_first_nonfinite(x, N), N);
	ck_assert_uint_eq(zm_first_nonfinite(x, 0), 0);
	for (k = 0; k < sizeof(at) / sizeof(at[0]); k++)
		for (b = 0; b < 3; b++) {
			size_t naive = N;
			x[at[k]] = bad[b];
			x[N - 1 - at[k] / 2] = bad[(b + 1) % 3];
			for (n = 0; n < N; n++)
				if (!isfinite(x[n])) {
					naive = n;
					break;
				}
			ck_assert_uint_eq(zm_first_nonfinite(x, N), naive);
			/* A prefix that ends before the culprit is clean. */
			ck_assert_uint_eq(zm_first_nonfinite(x, naive), naive);
			x[at[k]] = 1.0f;
			x[N - 1 - at[k] / 2] = 1.0f;
		}
}
END_TEST

START_TEST(test_check_finite)
{
	struct zm_tensor t;
	struct zm_error err;
	int64_t shape[2] = { 3, 700 };
	float *x;

	ck_assert_int_eq(zm_tensor_alloc(&t, "w", ZM_DTYPE_F32, 2, shape, &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_tensor_check_finite(&t, &err), ZM_OK);
	x = t.data;
	x[1500] = NAN;
	ck_assert_int_eq(zm_tensor_check_finite(&t, &err), ZM_ERR_DATA);
	ck_assert_str_eq(err.msg, "tensor 'w': non-finite value at element 1500");
	x[1500] = 0;
	x[2099] = -INFINITY;
	ck_assert_int_eq(zm_tensor_check_finite(&t, &err), ZM_ERR_DATA);
	zm_tensor_release(&t);
}
END_TEST

Suite *suite_tensor(void)
{
	Suite *s = suite_create("tensor");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_f16_decode_all);
	tcase_add_test(tc, test_f16_encode_round_trip_and_ties);
	tcase_add_test(tc, test_bf16);
	tcase_add_test(tc, test_to_f32_every_dtype);
	tcase_add_test(tc, test_dtype_names);
	tcase_add_test(tc, test_alloc_overflow);
	tcase_add_test(tc, test_check_finite);
	tcase_add_test(tc, test_first_nonfinite);
	suite_add_tcase(s, tc);
	return s;
}
