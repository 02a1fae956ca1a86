/*
 * A small portable pseudo-random number generator, so that seeded runs
 * (model initialisation, shuffling, hash splits, DARE drops) give the same
 * bits on every platform and C library: xoshiro256** (Blackman and Vigna)
 * seeded through splitmix64, uniform doubles from the top 53 bits, and
 * normals by the Box-Muller transform.
 */
#ifndef ZM_RANDOM_H
#define ZM_RANDOM_H

#include <stddef.h>
#include <stdint.h>

/* Caller-owned generator state; copy it to fork a stream. */
struct zm_rng {
	uint64_t s[4];
	double spare;        /* second Box-Muller normal, valid when has_spare */
	int has_spare;
};

/* One splitmix64 step: advances *state and returns the next output.  Also a
 * good 64-bit hash of a counter (used for hashed row splits). */
uint64_t zm_splitmix64(uint64_t *state);

/* Seeds rng from a 64-bit seed (any value, 0 included). */
void zm_rng_seed(struct zm_rng *rng, uint64_t seed);

/* The next 64 random bits (xoshiro256**). */
uint64_t zm_rng_next(struct zm_rng *rng);

/* Uniform double in [0, 1) with 53 random bits. */
double zm_rng_uniform(struct zm_rng *rng);

/* Uniform integer in [0, n) without modulo bias; n must be > 0. */
uint64_t zm_rng_below(struct zm_rng *rng, uint64_t n);

/* Standard normal (mean 0, variance 1) by Box-Muller; the transform yields
 * two values per pair of uniforms and the second is kept for the next call,
 * so the sequence depends only on the seed and the call order. */
double zm_rng_normal(struct zm_rng *rng);

/* Shuffles idx[0..n) in place (Fisher-Yates, uniform over permutations). */
void zm_rng_shuffle(struct zm_rng *rng, size_t *idx, size_t n);

/* Fills idx with 0..n-1 and shuffles it. */
void zm_rng_permutation(struct zm_rng *rng, size_t *idx, size_t n);

#endif
