/*
 * Shared between the parts of the predictor (predict.c, predadapt.c);
 * not for callers outside the library.
 */
#ifndef ZM_PREDPRIV_H
#define ZM_PREDPRIV_H

#include <stddef.h>

#include "error.h"

struct zm_predictor;

/* One forward pass of n rows of x into scores (and logp when not NULL),
 * without timing or the latency adjustment of zm_predict_run. */
enum zm_status zm_predict_pass(struct zm_predictor *p, const float *x,
                               size_t n, float *scores, float *logp,
                               struct zm_error *err);

#endif
