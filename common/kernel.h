/*
 * Elementwise kernels shared by the activations (layer.c), the dense
 * epilogue (compute.c) and the softmax (loss.c); private to the library.
 *
 * The elementwise loops (activations, bias, softmax) are written in blocks
 * of eight independent lanes so that GCC's -O2 vectorizer takes them; the
 * files that include this header compile with no-trapping-math so that it
 * if-converts the clamps in those blocks, which it refuses to do while it
 * must preserve floating-point traps (we never enable traps).  The
 * exponential is our own polynomial for the same reason: libm's expf and
 * tanhf are scalar calls that would cost as much as the GEMMs for tanh,
 * sigmoid and gelu layers.
 */
#ifndef ZM_KERNEL_H
#define ZM_KERNEL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

enum { LANES = 8 };

/*
 * exp(x) to about 2.5e-7 relative error: x = k ln2 + r with |r| <= ln2/2
 * (ln2 split in two for an exact product), a degree-6 Taylor polynomial for
 * exp(r), and 2^k built in the exponent bits.  Arguments are clamped to
 * [-87, 88] so 2^k stays a normal float; NaN propagates.  Branch-free so
 * that the blocked loops calling it vectorize.
 */
static inline float exp_approx(float x)
{
	float xc = x > -87.0f ? x : -87.0f;
	float k, r, p, s, y;
	int32_t ki;
	uint32_t bits;

	xc = xc < 88.0f ? xc : 88.0f;
	/* Adding and subtracting 1.5 * 2^23 rounds to the nearest integer. */
	k = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
	r = xc - k * 0.693145751953125f;
	r = r - k * 1.428606765330187045e-06f;
	p = 1.0f / 720;
	p = p * r + 1.0f / 120;
	p = p * r + 1.0f / 24;
	p = p * r + 1.0f / 6;
	p = p * r + 0.5f;
	p = p * r + 1.0f;
	p = p * r + 1.0f;
	ki = (int32_t)k;
	bits = (uint32_t)(ki + 127) << 23;
	memcpy(&s, &bits, sizeof(s));
	y = p * s;
	return x == x ? y : x;
}

static inline float sigmoid1(float x)
{
	return 1.0f / (1.0f + exp_approx(-x));
}

/* tanh(x) = 1 - 2 / (1 + e^{2x}); exact at both saturations, absolute
 * error about 1e-7 near zero. */
static inline float tanh1(float x)
{
	return 1.0f - 2.0f / (1.0f + exp_approx(2.0f * x));
}

#define GELU_C 0.7978845608028654f   /* sqrt(2 / pi) */
#define GELU_A 0.044715f

static inline float gelu1(float x)
{
	float t = tanh1(GELU_C * (x + GELU_A * x * x * x));
	return 0.5f * x * (1.0f + t);
}

static inline float gelu_grad1(float x)
{
	float t = tanh1(GELU_C * (x + GELU_A * x * x * x));
	return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * GELU_C *
	       (1.0f + 3.0f * GELU_A * x * x);
}

static inline float relu1(float x)
{
	/* NaN is kept (a comparison with NaN is false), as PyTorch does. */
	return x < 0.0f ? 0.0f : x;
}

#endif
