/*
 * Calibrating the routing posterior (predict's density weighting) on rows
 * whose source is known: the slices' own rows in assign(1).  A Gaussian
 * fitted to real data is misspecified (pixels are not jointly Gaussian),
 * so the log-likelihood ratios of a row between models are too large and
 * the posterior softmax(log p_i(x)) too sure.  One temperature T, the
 * minimiser of the mean negative log-posterior of the true source,
 *   NLL(T) = -(1/n) sum_r log softmax(ll_r / T)[src_r],
 * corrects the scale; NLL is convex in 1/T, so a golden-section search
 * over log T finds it.  With the true densities the minimiser is near 1
 * (the posterior is then exact).
 */
#ifndef ZM_CALIBRATE_H
#define ZM_CALIBRATE_H

#include <stdbool.h>
#include <stddef.h>

#include "assigner.h"
#include "assignment.h"
#include "error.h"
#include "zoo.h"

/* The range searched for T. */
#define ZM_CALIBRATE_T_MIN 1e-2
#define ZM_CALIBRATE_T_MAX 1e6

struct zm_calibration {
	double temperature;     /* the fitted T */
	double accuracy;        /* rows whose top model is their source */
	double nll;             /* mean NLL at T */
	double nll_t1;          /* mean NLL at T = 1 */
	size_t rows;
	size_t sources;         /* slices (zm_calibrate_slices) */
};

/* Mean negative log-posterior of the sources at temperature t: ll [n, k]
 * log-likelihoods, src [n] model indices < k. */
double zm_calibrate_nll(const double *ll, const size_t *src, size_t n,
                        size_t k, double t);

/*
 * Fits the temperature on n >= 1 rows (ll [n, k], finite; src [n] < k).
 * ZM_ERR_DATA when n is 0 or k < 2.
 */
enum zm_status zm_calibrate(const double *ll, const size_t *src, size_t n,
                            size_t k, struct zm_calibration *out,
                            struct zm_error *err);

/*
 * assign --calibrate: reads up to max_rows rows of each slice file of a
 * (its data documents, as a stream) whose most weighted model is one of
 * mp[0..k) with a profile, scores them under the densities of the models
 * that are some slice's source (zm_profile_density), fits the temperature
 * into *c and sets those models' route_temperature and route_accuracy
 * metrics in zoo (uncommitted).  *done is false, and nothing changed,
 * when fewer than two models are sources.  Errors name the slice file.
 */
enum zm_status zm_calibrate_slices(struct zm_zoo *zoo,
                                   const struct zm_assign_model *mp,
                                   size_t k, const struct zm_assignment *a,
                                   size_t max_rows,
                                   struct zm_calibration *c, bool *done,
                                   struct zm_error *err);

#endif
