/*
 * Test-time adaptation of the merging coefficients by entropy
 * minimisation, as AdaMerging does: the per-unit coefficients are logits
 * (the weights are their softmax, so they stay on the simplex), and a few
 * bounded descent steps per batch lower the mean entropy of the batch's
 * predictions.  Unlike a free descent, which drives the weights onto the
 * one most confident (and often wrong) model, the objective here is
 * regularised toward the starting weights, every step stays in a trust
 * region, and the descent stops as soon as it stops paying:
 *
 *   J(a) = f(a) + reg / 2 * |a|^2
 *
 * with a the offsets added to the weighting's logits (a = 0: the weights
 * the weighting gives).  The gradient of f comes from the objective
 * itself where it can give it (the predictor back-propagates the entropy
 * through the merged network; predict.h) and by central differences for
 * the components it leaves NaN.
 */
#ifndef ZM_ADAPT_H
#define ZM_ADAPT_H

#include <stdbool.h>
#include <stddef.h>

struct zm_adapt_options {
	size_t steps;       /* descent steps per call (default 3) */
	double lr;          /* step size on the logits (default 2) */
	double max_step;    /* trust region: largest change of one logit in a
	                       step (default 0.5) */
	double bound;       /* |a_j| <= bound (default 4) */
	double fd;          /* finite-difference step (default 1e-3) */
	double reg;         /* L2 penalty toward a = 0 (default 0.1) */
	double tol;         /* stop when a step lowers J by less (1e-4) */
};

void zm_adapt_options_init(struct zm_adapt_options *o);

/*
 * The objective f at a (m values); deterministic.  When grad is not
 * NULL it receives df/da_j for the components it can give and NaN for
 * the others.
 */
typedef double (*zm_adapt_fn)(void *ctx, const double *a, double *grad);

struct zm_adapt_result {
	double f0, f1;      /* f at the start and at the end */
	double j0, j1;      /* J likewise */
	size_t evals;       /* calls of f */
	size_t steps;       /* steps taken */
};

/*
 * Lowers J from a[0..m): each step moves against the gradient of J,
 * each component clipped to max_step and the result to [-bound, bound],
 * and halves the move up to 4 times until J decreases; a step that finds
 * no decrease, or one of less than tol, ends the descent.  So J at the
 * end is never above J at the start, no component moves more than
 * max_step per step, and starting from a = 0, f at the end is never
 * above f(0).  scratch holds 3m doubles.  res may be NULL.  Returns f at
 * the final a.
 */
double zm_adapt_minimise(double *a, size_t m, zm_adapt_fn f, void *ctx,
                         const struct zm_adapt_options *o, double *scratch,
                         struct zm_adapt_result *res);

/* Mean over n rows of the entropy -sum_j p_j log p_j of probs (n x c);
 * zero probabilities contribute 0. */
double zm_entropy_mean(const float *probs, size_t n, size_t c);

#endif
