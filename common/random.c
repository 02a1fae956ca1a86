/*
 * xoshiro256** and splitmix64, written from their published definitions
 * (https://prng.di.unimi.it/).  The integer and uniform streams are exact
 * on every platform; normals go through libm's log, sin and cos, so seeded
 * initial weights are reproducible on one platform and may differ in the
 * last bit under another C library.
 */
#include <math.h>

#include "error.h"
#include "random.h"

uint64_t zm_splitmix64(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

void zm_rng_seed(struct zm_rng *rng, uint64_t seed)
{
	uint64_t st = seed;
	int i;

	/* splitmix64 never yields four zero words in a row, the one state
	 * xoshiro cannot leave. */
	for (i = 0; i < 4; i++)
		rng->s[i] = zm_splitmix64(&st);
	rng->spare = 0;
	rng->has_spare = 0;
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t zm_rng_next(struct zm_rng *rng)
{
	uint64_t *s = rng->s;
	uint64_t result = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

double zm_rng_uniform(struct zm_rng *rng)
{
	return (double)(zm_rng_next(rng) >> 11) * 0x1.0p-53;
}

uint64_t zm_rng_below(struct zm_rng *rng, uint64_t n)
{
	/* Reject the top partial block so every residue is equally likely. */
	uint64_t limit, x;

	ZM_ASSERT(n > 0);
	limit = UINT64_MAX - UINT64_MAX % n;
	do
		x = zm_rng_next(rng);
	while (x >= limit);
	return x % n;
}

double zm_rng_normal(struct zm_rng *rng)
{
	const double two_pi = 6.283185307179586476925286766559;
	double u1, u2, r;

	if (rng->has_spare) {
		rng->has_spare = 0;
		return rng->spare;
	}
	/* u1 in (0, 1] so that log(u1) is finite. */
	u1 = 1.0 - zm_rng_uniform(rng);
	u2 = zm_rng_uniform(rng);
	r = sqrt(-2.0 * log(u1));
	rng->spare = r * sin(two_pi * u2);
	rng->has_spare = 1;
	return r * cos(two_pi * u2);
}

void zm_rng_shuffle(struct zm_rng *rng, size_t *idx, size_t n)
{
	size_t i;

	for (i = n; i > 1; i--) {
		size_t j = (size_t)zm_rng_below(rng, i);
		size_t tmp = idx[i - 1];
		idx[i - 1] = idx[j];
		idx[j] = tmp;
	}
}

void zm_rng_permutation(struct zm_rng *rng, size_t *idx, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		idx[i] = i;
	zm_rng_shuffle(rng, idx, n);
}
