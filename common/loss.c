/*
 * Losses over a batch's outputs, with their gradients (model.h).
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include <math.h>
#include <stdint.h>

#include "kernel.h"
#include "model.h"

/* ---- losses ---- */

enum zm_status zm_loss_cross_entropy(const float *logits,
                                     const int64_t *labels, size_t n,
                                     size_t classes, double *loss_sum,
                                     size_t *correct, float *grad,
                                     struct zm_error *err)
{
	double total = 0;
	size_t i, j, right = 0;
	float inv_n = n ? 1.0f / (float)n : 0.0f;

	for (i = 0; i < n; i++)
		if (labels[i] < 0 || (uint64_t)labels[i] >= classes)
			return zm_error_set(err, ZM_ERR_DATA,
			                    "row %zu: label %lld is not a class "
			                    "id in [0, %zu)", i,
			                    (long long)labels[i], classes);
	for (i = 0; i < n; i++) {
		const float *z = logits + i * classes;
		size_t y = (size_t)labels[i], arg = 0;
		float mx = z[0], sum = 0.0f, lse;
		for (j = 1; j < classes; j++)
			if (z[j] > mx) {
				mx = z[j];
				arg = j;
			}
		for (j = 0; j < classes; j++)
			sum += exp_approx(z[j] - mx);
		lse = mx + logf(sum);
		total += (double)lse - (double)z[y];
		right += arg == y;
		if (grad) {
			float *g = grad + i * classes;
			for (j = 0; j < classes; j++)
				g[j] = exp_approx(z[j] - lse) * inv_n;
			g[y] -= inv_n;
		}
	}
	if (loss_sum)
		*loss_sum += total;
	if (correct)
		*correct += right;
	return ZM_OK;
}

void zm_loss_mse(const float *out, const float *targets, size_t n, size_t t,
                 double *loss_sum, float *grad)
{
	double total = 0;
	size_t i, j;
	float scale = n && t ? 2.0f / ((float)n * (float)t) : 0.0f;

	for (i = 0; i < n; i++) {
		double row = 0;
		for (j = 0; j < t; j++) {
			float d = out[i * t + j] - targets[i * t + j];
			row += (double)d * d;
			if (grad)
				grad[i * t + j] = scale * d;
		}
		total += row / (double)t;
	}
	if (loss_sum)
		*loss_sum += total;
}
