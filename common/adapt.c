/*
 * Regularised, trust-region descent for entropy adaptation.
 */
#include <math.h>
#include <string.h>

#include "adapt.h"

void zm_adapt_options_init(struct zm_adapt_options *o)
{
	o->steps = 3;
	o->lr = 2.0;
	o->max_step = 0.5;
	o->bound = 4.0;
	o->fd = 1e-3;
	o->reg = 0.1;
	o->tol = 1e-4;
}

static double clampd(double v, double lo, double hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

static double penalty(const double *a, size_t m, double reg)
{
	double s = 0;
	size_t j;

	for (j = 0; j < m; j++)
		s += a[j] * a[j];
	return 0.5 * reg * s;
}

/* f at a with its gradient; the components f leaves NaN by central
 * differences. */
static double eval_grad(double *a, size_t m, zm_adapt_fn f, void *ctx,
                        const struct zm_adapt_options *o, double *g,
                        size_t *evals)
{
	double fa = f(ctx, a, g);
	size_t j;

	(*evals)++;
	for (j = 0; j < m; j++) {
		double keep = a[j], fp, fm;
		if (!isnan(g[j]))
			continue;
		a[j] = keep + o->fd;
		fp = f(ctx, a, NULL);
		a[j] = keep - o->fd;
		fm = f(ctx, a, NULL);
		a[j] = keep;
		*evals += 2;
		g[j] = (fp - fm) / (2 * o->fd);
	}
	return fa;
}

double zm_adapt_minimise(double *a, size_t m, zm_adapt_fn f, void *ctx,
                         const struct zm_adapt_options *o, double *scratch,
                         struct zm_adapt_result *res)
{
	double *g = scratch, *trial = scratch + m, *gt = scratch + 2 * m;
	size_t s, j, h, evals = 0, taken = 0;
	double fa, ja, f0, j0;

	fa = eval_grad(a, m, f, ctx, o, g, &evals);
	ja = fa + penalty(a, m, o->reg);
	f0 = fa;
	j0 = ja;
	for (s = 0; s < o->steps; s++) {
		bool moved = false;
		double scale = 1.0, gain = 0;

		for (j = 0; j < m; j++)
			g[j] += o->reg * a[j];
		/* Backtracking: a step that does not lower J is halved, so a
		 * curved objective never gets worse. */
		for (h = 0; h < 5 && !moved; h++, scale *= 0.5) {
			double ft, jt;
			for (j = 0; j < m; j++) {
				double d = clampd(-o->lr * g[j], -o->max_step,
				                  o->max_step) * scale;
				trial[j] = clampd(a[j] + d, -o->bound, o->bound);
			}
			ft = f(ctx, trial, gt);
			evals++;
			jt = ft + penalty(trial, m, o->reg);
			if (jt < ja) {
				gain = ja - jt;
				memcpy(a, trial, m * sizeof(*a));
				fa = ft;
				ja = jt;
				moved = true;
			}
		}
		if (!moved)
			break;
		taken++;
		if (gain < o->tol || s + 1 == o->steps)
			break;
		/* The gradient at the new point: what f gave with the trial,
		 * the rest by differences. */
		memcpy(g, gt, m * sizeof(*g));
		for (j = 0; j < m; j++)
			if (isnan(g[j])) {
				double keep = a[j], fp, fm;
				a[j] = keep + o->fd;
				fp = f(ctx, a, NULL);
				a[j] = keep - o->fd;
				fm = f(ctx, a, NULL);
				a[j] = keep;
				evals += 2;
				g[j] = (fp - fm) / (2 * o->fd);
			}
	}
	if (res) {
		res->f0 = f0;
		res->f1 = fa;
		res->j0 = j0;
		res->j1 = ja;
		res->evals = evals;
		res->steps = taken;
	}
	return fa;
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
