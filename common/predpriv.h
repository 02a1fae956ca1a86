/*
 * Shared between the parts of the predictor (predict.c, predadapt.c,
 * route.c); not for callers outside the library.  predict.c calls
 * routing through here, so route.c may use predict.h without a cycle.
 */
#ifndef ZM_PREDPRIV_H
#define ZM_PREDPRIV_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

struct zm_predictor;
struct zm_route_state;

/* One forward pass of n rows of x into scores (and logp when not NULL),
 * without timing or the latency adjustment of zm_predict_run. */
enum zm_status zm_predict_pass(struct zm_predictor *p, const float *x,
                               size_t n, float *scores, float *logp,
                               struct zm_error *err);

/*
 * Buffers of routing for predictor p (its models, batch size, outputs,
 * p->o.route_mix), names [K] the models' (for the explanation, which
 * names the models' lineage).  Freed with zm_route_state_free (NULL is
 * fine).  Layer mixing asked of models of other architectures is
 * ZM_ERR_DATA naming the pair.
 */
enum zm_status zm_route_state_new(const struct zm_predictor *p,
                                  const char *const *names,
                                  struct zm_route_state **out,
                                  struct zm_error *err);
void zm_route_state_free(struct zm_route_state *s);
/* Whether the state's mixed rows go layer by layer (the predictor then
 * needs the stacked layers of --merge outputs). */
bool zm_route_mixes_layers(const struct zm_route_state *s);

/*
 * Predicts n rows of x with routing (route.h) into scores [n, C] and, for
 * classification, logp [n, C] when not NULL.  Fails as
 * zm_weighter_layer (ZM_ERR_NOMEM).
 */
enum zm_status zm_route_forward(struct zm_predictor *p, const float *x,
                                size_t n, float *scores, float *logp,
                                struct zm_error *err);

/*
 * The merged pass of --merge outputs (the predictor must have its layers
 * stacked: merge outputs, or routing that mixes layers) of n rows of x
 * with the weights already in p->wl (n x K per row, else one row) at
 * every layer, the weighter not asked: routing's uncertain rows, whose
 * weights of the full granularity it gathered.  *result receives the
 * final outputs (n x C, the predictor's buffer).  Cannot fail today;
 * returns ZM_OK.
 */
enum zm_status zm_predict_merged_rows(struct zm_predictor *p, const float *x,
                                      size_t n, const float **result,
                                      struct zm_error *err);

#endif
