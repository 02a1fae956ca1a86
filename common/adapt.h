/*
 * Test-time adaptation of the merging coefficients by entropy
 * minimisation, as AdaMerging does: the per-unit coefficients are logits
 * (the weights are their softmax, so they stay on the simplex), and a few
 * bounded descent steps per batch lower the mean entropy of the batch's
 * predictions.  The objective is a black box to this module (the
 * predictor's merged forward pass), so the gradient is taken by central
 * differences: with K models and U units that is 2KU forward passes of a
 * sub-batch per step, small for the handful of coefficients involved.
 */
#ifndef ZM_ADAPT_H
#define ZM_ADAPT_H

#include <stdbool.h>
#include <stddef.h>

struct zm_adapt_options {
	size_t steps;       /* descent steps per call (default 3) */
	double lr;          /* step size on the logits (default 1) */
	double max_step;    /* largest change of one logit per step (0.5) */
	double bound;       /* |a_j| <= bound (default 4) */
	double fd;          /* finite-difference step (default 1e-2) */
	double reg;         /* L2 penalty toward a = 0 */
};

void zm_adapt_options_init(struct zm_adapt_options *o);

/* The objective at a (m values); must be deterministic. */
typedef double (*zm_adapt_fn)(void *ctx, const double *a);

/*
 * Lowers f from a[0..m): each step takes the central-difference
 * gradient, moves against it (each component clipped to max_step, the
 * result to [-bound, bound]) and halves the move up to 5 times until f
 * decreases; a step that finds no decrease ends the descent.  So the
 * returned value, f at the final a, is never above f at the initial a.
 * scratch holds 2m doubles.  Returns f(a) at the end.
 */
double zm_adapt_minimise(double *a, size_t m, zm_adapt_fn f, void *ctx,
                         const struct zm_adapt_options *o, double *scratch);

/* Mean over n rows of the entropy -sum_j p_j log p_j of probs (n x c);
 * zero probabilities contribute 0. */
double zm_entropy_mean(const float *probs, size_t n, size_t c);

#endif
