/*
 * Four-float vectors through GCC's vector extension (clang has it too), for
 * the few element-wise passes that -O2's cheap vectoriser would leave
 * scalar: the outputs merge, the bias and activation on each block of a
 * packed product, the transposes that pack panels.  16 bytes, so baseline
 * x86-64 (SSE2) runs them; loads and stores go through memcpy and need no
 * alignment.
 */
#ifndef ZM_VEC_H
#define ZM_VEC_H

#include <stdint.h>
#include <string.h>

typedef float zm_v4f __attribute__((vector_size(16)));
typedef int32_t zm_v4i __attribute__((vector_size(16)));

static inline zm_v4f zm_load4(const float *p)
{
	zm_v4f v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static inline void zm_store4(float *p, zm_v4f v)
{
	memcpy(p, &v, sizeof(v));
}

/* relu as model.c's scalar relu computes it: negative lanes to 0, NaN
 * kept (as PyTorch does); the comparison's all-ones lanes clear v's bits. */
static inline zm_v4f zm_relu4(zm_v4f v)
{
	const zm_v4f zero = { 0, 0, 0, 0 };

	return (zm_v4f)((zm_v4i)v & ~(v < zero));
}

#endif
