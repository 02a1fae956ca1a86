/*
 * Bounded finite-difference descent for entropy adaptation.
 */
#include <math.h>
#include <string.h>

#include "adapt.h"

void zm_adapt_options_init(struct zm_adapt_options *o)
{
	o->steps = 3;
	o->lr = 1.0;
	o->max_step = 0.5;
	o->bound = 4.0;
	o->fd = 1e-2;
}

static double clampd(double v, double lo, double hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

double zm_adapt_minimise(double *a, size_t m, zm_adapt_fn f, void *ctx,
                         const struct zm_adapt_options *o, double *scratch)
{
	double *g = scratch, *trial = scratch + m;
	double fa = f(ctx, a);
	size_t s, j, h;

	for (s = 0; s < o->steps; s++) {
		bool moved = false;
		double scale = 1.0;

		for (j = 0; j < m; j++) {
			double keep = a[j], fp, fm;
			a[j] = keep + o->fd;
			fp = f(ctx, a);
			a[j] = keep - o->fd;
			fm = f(ctx, a);
			a[j] = keep;
			g[j] = (fp - fm) / (2 * o->fd);
		}
		/* Backtracking: a step that does not lower f is halved, so a
		 * noisy or curved objective never gets worse. */
		for (h = 0; h < 6 && !moved; h++, scale *= 0.5) {
			double ft;
			for (j = 0; j < m; j++) {
				double d = clampd(-o->lr * g[j], -o->max_step,
				                  o->max_step) * scale;
				trial[j] = clampd(a[j] + d, -o->bound, o->bound);
			}
			ft = f(ctx, trial);
			if (ft < fa) {
				memcpy(a, trial, m * sizeof(*a));
				fa = ft;
				moved = true;
			}
		}
		if (!moved)
			break;
	}
	/* Leave the objective's context evaluated at the final a. */
	return f(ctx, a);
}

double zm_entropy_mean(const float *probs, size_t n, size_t c)
{
	double sum = 0;
	size_t i;

	for (i = 0; i < n * c; i++)
		if (probs[i] > 0)
			sum -= (double)probs[i] * log((double)probs[i]);
	return n ? sum / (double)n : 0;
}
