/*
 * Shared between the parts of the predictor (predict.c, predadapt.c,
 * route.c); not for callers outside the library.  predict.c calls
 * routing through here, so route.c may use predict.h without a cycle.
 */
#ifndef ZM_PREDPRIV_H
#define ZM_PREDPRIV_H

#include <stddef.h>

#include "error.h"

struct zm_predictor;
struct zm_route_state;

/* One forward pass of n rows of x into scores (and logp when not NULL),
 * without timing or the latency adjustment of zm_predict_run. */
enum zm_status zm_predict_pass(struct zm_predictor *p, const float *x,
                               size_t n, float *scores, float *logp,
                               struct zm_error *err);

/* Buffers of routing for predictor p (its models, batch size, outputs);
 * freed with zm_route_state_free (NULL is fine). */
enum zm_status zm_route_state_new(const struct zm_predictor *p,
                                  struct zm_route_state **out,
                                  struct zm_error *err);
void zm_route_state_free(struct zm_route_state *s);

/*
 * Predicts n rows of x with routing (route.h) into scores [n, C] and, for
 * classification, logp [n, C] when not NULL.  Fails as
 * zm_weighter_layer (ZM_ERR_NOMEM).
 */
enum zm_status zm_route_forward(struct zm_predictor *p, const float *x,
                                size_t n, float *scores, float *logp,
                                struct zm_error *err);

#endif
