/*
 * Tensor storage and dtype conversion.
 */
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "mem.h"
#include "tensor.h"

static const struct {
	const char *name;
	size_t size;
} dtype_info[ZM_DTYPE_COUNT] = {
	[ZM_DTYPE_F32] = { "F32", 4 },
	[ZM_DTYPE_F16] = { "F16", 2 },
	[ZM_DTYPE_BF16] = { "BF16", 2 },
	[ZM_DTYPE_F64] = { "F64", 8 },
	[ZM_DTYPE_U8] = { "U8", 1 },
	[ZM_DTYPE_I8] = { "I8", 1 },
	[ZM_DTYPE_I32] = { "I32", 4 },
	[ZM_DTYPE_I64] = { "I64", 8 },
};

size_t zm_dtype_size(enum zm_dtype dtype)
{
	ZM_ASSERT((unsigned)dtype < ZM_DTYPE_COUNT);
	return dtype_info[dtype].size;
}

const char *zm_dtype_name(enum zm_dtype dtype)
{
	ZM_ASSERT((unsigned)dtype < ZM_DTYPE_COUNT);
	return dtype_info[dtype].name;
}

bool zm_dtype_parse(const char *name, enum zm_dtype *out)
{
	int i;

	for (i = 0; i < ZM_DTYPE_COUNT; i++) {
		if (strcmp(name, dtype_info[i].name) == 0) {
			*out = (enum zm_dtype)i;
			return true;
		}
	}
	return false;
}

bool zm_dtype_is_float(enum zm_dtype dtype)
{
	return dtype == ZM_DTYPE_F32 || dtype == ZM_DTYPE_F16 ||
	       dtype == ZM_DTYPE_BF16 || dtype == ZM_DTYPE_F64;
}

void zm_tensor_init(struct zm_tensor *t)
{
	memset(t, 0, sizeof(*t));
	t->dtype = ZM_DTYPE_F32;
}

void zm_tensor_release(struct zm_tensor *t)
{
	if (!t)
		return;
	free(t->name);
	if (t->owns_data)
		free(t->data);
	zm_tensor_init(t);
}

bool zm_shape_numel(int ndim, const int64_t *shape, size_t *out)
{
	size_t n = 1;
	int i;

	if (ndim < 0 || ndim > ZM_MAX_DIMS)
		return false;
	for (i = 0; i < ndim; i++) {
		if (shape[i] < 0 || (uint64_t)shape[i] > SIZE_MAX)
			return false;
		if (!zm_size_mul(n, (size_t)shape[i], &n))
			return false;
	}
	*out = n;
	return true;
}

size_t zm_tensor_numel(const struct zm_tensor *t)
{
	size_t n = 0;

	ZM_ASSERT(zm_shape_numel(t->ndim, t->shape, &n));
	return n;
}

enum zm_status zm_tensor_alloc(struct zm_tensor *t, const char *name,
                               enum zm_dtype dtype, int ndim,
                               const int64_t *shape, struct zm_error *err)
{
	size_t numel, nbytes;

	zm_tensor_init(t);
	if (!zm_shape_numel(ndim, shape, &numel) ||
	    !zm_size_mul(numel, zm_dtype_size(dtype), &nbytes))
		return zm_error_set(err, ZM_ERR_NOMEM,
		                    "tensor '%s': shape too large", name);
	t->name = zm_strdup(name);
	t->data = zm_calloc(nbytes ? nbytes : 1, 1);
	if (!t->name || !t->data) {
		free(t->name);
		free(t->data);
		zm_tensor_init(t);
		return zm_error_set(err, ZM_ERR_NOMEM,
		                    "tensor '%s': out of memory (%zu bytes)",
		                    name, nbytes);
	}
	t->owns_data = true;
	t->dtype = dtype;
	t->ndim = ndim;
	if (ndim > 0)
		memcpy(t->shape, shape, (size_t)ndim * sizeof(shape[0]));
	t->nbytes = nbytes;
	return ZM_OK;
}

enum zm_status zm_tensor_copy(struct zm_tensor *dst,
                              const struct zm_tensor *src,
                              struct zm_error *err)
{
	enum zm_status st;

	st = zm_tensor_alloc(dst, src->name ? src->name : "", src->dtype,
	                     src->ndim, src->shape, err);
	if (st != ZM_OK)
		return st;
	if (src->nbytes)
		memcpy(dst->data, src->data, src->nbytes);
	return ZM_OK;
}

enum zm_status zm_tensor_rename(struct zm_tensor *t, const char *name,
                                struct zm_error *err)
{
	char *copy = zm_strdup(name);

	if (!copy)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	free(t->name);
	t->name = copy;
	return ZM_OK;
}

float zm_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t exp = (h >> 10) & 0x1fu;
	uint32_t mant = h & 0x3ffu;
	uint32_t bits;
	float f;

	if (exp == 0) {
		/* Zero or subnormal: value is mant * 2^-24. */
		f = ldexpf((float)mant, -24);
		return sign ? -f : f;
	}
	if (exp == 31)
		bits = sign | 0x7f800000u | (mant << 13);
	else
		bits = sign | ((exp + 112u) << 23) | (mant << 13);
	memcpy(&f, &bits, sizeof(f));
	return f;
}

uint16_t zm_f32_to_f16(float f)
{
	uint32_t bits, sign, mant;
	int32_t exp;

	memcpy(&bits, &f, sizeof(bits));
	sign = (bits >> 16) & 0x8000u;
	exp = (int32_t)((bits >> 23) & 0xffu);
	mant = bits & 0x7fffffu;
	if (exp == 255)	/* Inf or NaN; keep NaN a NaN. */
		return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u : 0));
	exp -= 127 - 15;
	if (exp >= 31)
		return (uint16_t)(sign | 0x7c00u);
	if (exp <= 0) {
		uint32_t shift, half, rest, out;
		if (exp < -10)
			return (uint16_t)sign;
		mant |= 0x800000u;
		shift = (uint32_t)(14 - exp);
		out = mant >> shift;
		rest = mant & ((1u << shift) - 1);
		half = 1u << (shift - 1);
		if (rest > half || (rest == half && (out & 1u)))
			out++;
		return (uint16_t)(sign | out);
	}
	{
		uint32_t out = ((uint32_t)exp << 10) | (mant >> 13);
		uint32_t rest = mant & 0x1fffu;
		if (rest > 0x1000u || (rest == 0x1000u && (out & 1u)))
			out++;	/* may carry into the exponent, which is right */
		return (uint16_t)(sign | out);
	}
}

float zm_bf16_to_f32(uint16_t h)
{
	uint32_t bits = (uint32_t)h << 16;
	float f;

	memcpy(&f, &bits, sizeof(f));
	return f;
}

uint16_t zm_f32_to_bf16(float f)
{
	uint32_t bits;

	memcpy(&bits, &f, sizeof(bits));
	if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x7fffffu))
		return (uint16_t)((bits >> 16) | 0x40u);	/* quiet NaN */
	bits += 0x7fffu + ((bits >> 16) & 1u);
	return (uint16_t)(bits >> 16);
}

/* Unaligned-safe element loads: data may sit at any offset in a buffer. */
static uint16_t load_u16(const void *base, size_t i)
{
	uint16_t v;
	memcpy(&v, (const char *)base + i * sizeof(v), sizeof(v));
	return v;
}

static int32_t load_i32(const void *base, size_t i)
{
	int32_t v;
	memcpy(&v, (const char *)base + i * sizeof(v), sizeof(v));
	return v;
}

static int64_t load_i64(const void *base, size_t i)
{
	int64_t v;
	memcpy(&v, (const char *)base + i * sizeof(v), sizeof(v));
	return v;
}

static double load_f64(const void *base, size_t i)
{
	double v;
	memcpy(&v, (const char *)base + i * sizeof(v), sizeof(v));
	return v;
}

void zm_tensor_read_f32(const struct zm_tensor *src, size_t first,
                        size_t count, float *out)
{
	const char *base = src->data;
	size_t i;

	switch (src->dtype) {
	case ZM_DTYPE_F32:
		memcpy(out, base + first * 4, count * 4);
		break;
	case ZM_DTYPE_F16:
		for (i = 0; i < count; i++)
			out[i] = zm_f16_to_f32(load_u16(base, first + i));
		break;
	case ZM_DTYPE_BF16:
		for (i = 0; i < count; i++)
			out[i] = zm_bf16_to_f32(load_u16(base, first + i));
		break;
	case ZM_DTYPE_F64:
		for (i = 0; i < count; i++)
			out[i] = (float)load_f64(base, first + i);
		break;
	case ZM_DTYPE_U8:
		for (i = 0; i < count; i++)
			out[i] = (float)((const uint8_t *)base)[first + i];
		break;
	case ZM_DTYPE_I8:
		for (i = 0; i < count; i++)
			out[i] = (float)((const int8_t *)base)[first + i];
		break;
	case ZM_DTYPE_I32:
		for (i = 0; i < count; i++)
			out[i] = (float)load_i32(base, first + i);
		break;
	case ZM_DTYPE_I64:
		for (i = 0; i < count; i++)
			out[i] = (float)load_i64(base, first + i);
		break;
	default:
		ZM_ASSERT(!"unknown dtype");
	}
}

enum zm_status zm_tensor_to_f32(struct zm_tensor *dst,
                                const struct zm_tensor *src, float scale,
                                struct zm_error *err)
{
	enum zm_status st;
	size_t n, i;
	float *out;

	st = zm_tensor_alloc(dst, src->name ? src->name : "", ZM_DTYPE_F32,
	                     src->ndim, src->shape, err);
	if (st != ZM_OK)
		return st;
	n = zm_tensor_numel(src);
	out = dst->data;
	zm_tensor_read_f32(src, 0, n, out);
	if (scale != 1.0f)
		for (i = 0; i < n; i++)
			out[i] *= scale;
	return ZM_OK;
}

size_t zm_first_nonfinite(const float *x, size_t n)
{
	size_t i = 0;

#ifdef __SSE2__
	/* On the critical path of a streamed merge and of predict: blocks of
	 * 1024 are tested four at a time (all exponent bits set: inf or
	 * NaN), and only a block that fails is scanned again for the first
	 * culprit. */
	{
		__m128i ex = _mm_set1_epi32(0x7f800000);
		while (n - i >= 1024) {
			__m128i bad = _mm_setzero_si128();
			size_t j;
			for (j = i; j < i + 1024; j += 4) {
				__m128i e = _mm_and_si128(_mm_castps_si128(
					_mm_loadu_ps(x + j)), ex);
				bad = _mm_or_si128(bad, _mm_cmpeq_epi32(e, ex));
			}
			if (_mm_movemask_epi8(bad))
				break;
			i += 1024;
		}
	}
#endif
	for (; i < n; i++)
		if (!isfinite(x[i]))
			return i;
	return n;
}

enum zm_status zm_tensor_check_finite(const struct zm_tensor *t,
                                      struct zm_error *err)
{
	enum { CHUNK = 1024 };
	float buf[CHUNK];
	size_t n, i, j;

	if (!zm_dtype_is_float(t->dtype))
		return ZM_OK;
	n = zm_tensor_numel(t);
	for (i = 0; i < n; i += CHUNK) {
		size_t m = n - i < CHUNK ? n - i : CHUNK;
		if (t->dtype == ZM_DTYPE_F64) {
			for (j = 0; j < m; j++) {
				double v = load_f64(t->data, i + j);
				if (!isfinite(v))
					goto bad;
			}
			continue;
		}
		zm_tensor_read_f32(t, i, m, buf);
		for (j = 0; j < m; j++)
			if (!isfinite(buf[j]))
				goto bad;
	}
	return ZM_OK;
bad:
	return zm_error_set(err, ZM_ERR_DATA,
	                    "tensor '%s': non-finite value at element %zu",
	                    t->name ? t->name : "", i + j);
}

void zm_shape_format(int ndim, const int64_t *shape, char *buf, size_t size)
{
	size_t len = 0;
	int i;

	if (size == 0)
		return;
	buf[0] = '\0';
	len += (size_t)snprintf(buf, size, "[");
	for (i = 0; i < ndim && len < size; i++)
		len += (size_t)snprintf(buf + len, size - len, "%s%lld",
		                        i ? ", " : "", (long long)shape[i]);
	if (len < size)
		snprintf(buf + len, size - len, "]");
}
