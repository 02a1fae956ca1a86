/*
 * The routing temperature fitted on rows of known source (calibrate.h).
 */
#include <math.h>

#include "calibrate.h"

double zm_calibrate_nll(const double *ll, const size_t *src, size_t n,
                        size_t k, double t)
{
	double total = 0;
	size_t r, i;

	for (r = 0; r < n; r++) {
		const double *l = ll + r * k;
		double mx = l[0] / t, sum = 0;
		for (i = 1; i < k; i++)
			if (l[i] / t > mx)
				mx = l[i] / t;
		for (i = 0; i < k; i++)
			sum += exp(l[i] / t - mx);
		total += mx + log(sum) - l[src[r]] / t;
	}
	return n ? total / (double)n : 0;
}

enum zm_status zm_calibrate(const double *ll, const size_t *src, size_t n,
                            size_t k, struct zm_calibration *out,
                            struct zm_error *err)
{
	const double g = 0.6180339887498949;
	double a = log(ZM_CALIBRATE_T_MIN), b = log(ZM_CALIBRATE_T_MAX);
	double c, d, fc, fd;
	size_t r, i, hits = 0, it;

	if (n == 0 || k < 2)
		return zm_error_set(err, ZM_ERR_DATA, "calibration needs rows of "
		                    "at least two models (%zu rows, %zu models)",
		                    n, k);
	c = b - g * (b - a);
	d = a + g * (b - a);
	fc = zm_calibrate_nll(ll, src, n, k, exp(c));
	fd = zm_calibrate_nll(ll, src, n, k, exp(d));
	for (it = 0; it < 100 && b - a > 1e-4; it++) {
		if (fc <= fd) {
			b = d;
			d = c;
			fd = fc;
			c = b - g * (b - a);
			fc = zm_calibrate_nll(ll, src, n, k, exp(c));
		} else {
			a = c;
			c = d;
			fc = fd;
			d = a + g * (b - a);
			fd = zm_calibrate_nll(ll, src, n, k, exp(d));
		}
	}
	out->temperature = exp(0.5 * (a + b));
	out->nll = zm_calibrate_nll(ll, src, n, k, out->temperature);
	out->nll_t1 = zm_calibrate_nll(ll, src, n, k, 1.0);
	for (r = 0; r < n; r++) {
		const double *l = ll + r * k;
		size_t best = 0;
		for (i = 1; i < k; i++)
			if (l[i] > l[best])
				best = i;
		hits += best == src[r];
	}
	out->accuracy = (double)hits / (double)n;
	out->rows = n;
	return ZM_OK;
}
