/*
 * Routing rows to models (predict's default merge, "route"): the
 * weighter's per-row weights (for the default density weighting, the
 * posterior of "the row comes from model i's data") decide for each row
 * whether one model is sure enough to compute it alone.
 *
 *   hard   the largest weight of the row is at least the threshold: that
 *          model alone computes the row, as if it predicted alone (its
 *          own softmax); rows of a batch that go to the same model are
 *          gathered and run as one forward pass (one GEMM per layer), and
 *          a batch whose rows all go to one model runs unchanged: per
 *          batch where the rows agree, per row where they disagree.
 *   mixed  otherwise the rows none is sure of are gathered and mixed
 *          with their weights, in one of two ways (enum zm_route_mix):
 *          final  the final outputs, p = sum_i w_i p_i (models whose
 *                 weight is below ZM_ROUTE_MIN_WEIGHT in every mixed
 *                 row are skipped and the rest renormalised): right for
 *                 models trained apart, whose hidden units do not
 *                 correspond (lineage.h); architectures may differ;
 *          layers the merged pass of --merge outputs on the gathered
 *                 rows, each layer's outputs mixed with the row's
 *                 weights (one weight vector per row: routing is at the
 *                 full granularity): for related models of one
 *                 architecture.
 *          ZM_ROUTE_MIX_AUTO, the default, chooses final for related
 *          and unrelated models alike: layers was measured no more
 *          accurate and worse in log-loss on the benchmark zoos whose
 *          models are related (route.c, predict(1) ROUTING); the
 *          lineage (zm_lineage_all_related) is still looked at, to say
 *          why under --explain.
 */
#ifndef ZM_ROUTE_H
#define ZM_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "json.h"

struct zm_predictor;

/* Weights below this in every mixed row leave a model out of the mix. */
#define ZM_ROUTE_MIN_WEIGHT 1e-4

/* What routing did, summed over batches (for --explain). */
struct zm_route_stats {
	uint64_t rows_hard, rows_mixed;
	uint64_t batches_one;      /* every row to one model: per batch */
	uint64_t batches_split;    /* rows to several models or mixed */
	uint64_t *rows_model;      /* owned [K]: rows computed alone */
	size_t k;
};

/*
 * For n rows of weights w [n, k] (rows summing to 1): group[r] = the model
 * that computes row r alone (its weight >= threshold and above every
 * other's), or SIZE_MAX for a mixed row (a tie for the largest weight is
 * mixed).  Returns the number of mixed rows.
 */
size_t zm_route_assign(const double *w, size_t n, size_t k,
                       double threshold, size_t *group);

/* Whether the rows of w [n, k] disagree about their most weighted model
 * (first index on ties). */
bool zm_route_rows_disagree(const double *w, size_t n, size_t k);

/* Its buffers (predpriv.h: zm_route_state_new) are the predictor's. */
struct zm_route_state;

/* The counts so far (borrowed from the state). */
const struct zm_route_stats *zm_route_stats(const struct zm_route_state *s);

/* What predictor p chose and why, and what routing did so far, as lines
 * of text appended to b (predict --explain); names [K] the models'. */
void zm_predict_explain(const struct zm_predictor *p,
                        const char *const *names, struct zm_buf *b);

#endif
