/*
 * Routing densities (density.h), their calibration (calibrate.h) and the
 * route merge of predict (route.h), each against an independent reference:
 * a naive power iteration and a dense Gauss-Jordan inverse for the PPCA,
 * closed-form Gaussian posteriors for the calibration, the single model's
 * own prediction for hard routing.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "calibrate.h"
#include "density.h"
#include "gemm.h"
#include "model.h"
#include "predict.h"
#include "profile.h"
#include "random.h"
#include "route.h"
#include "unit.h"

/* n rows of d features: z ~ N(0, 1) in the first 3 coordinates scaled by
 * 3, 2 and 1.5, noise 0.3 everywhere, then rotated by a fixed mixing and
 * offset by shift. */
static float *make_rows(size_t n, size_t d, uint64_t seed, double shift)
{
	float *x = malloc(n * d * sizeof(float));
	struct zm_rng rng;
	size_t r, j;

	ck_assert_ptr_nonnull(x);
	zm_rng_seed(&rng, seed);
	for (r = 0; r < n; r++) {
		double a = 3 * zm_rng_normal(&rng), b = 2 * zm_rng_normal(&rng);
		double c = 1.5 * zm_rng_normal(&rng);
		for (j = 0; j < d; j++) {
			double v = a * sin(1.0 + (double)j) +
			           b * cos(0.5 * (double)j) +
			           c * (j % 2 ? 1.0 : -1.0) / sqrt((double)d);
			x[r * d + j] = (float)(v + 0.3 * zm_rng_normal(&rng) +
			                       shift * (double)(j + 1));
		}
	}
	return x;
}

/* Population covariance of x in double, the reference's way (two-pass). */
static void covariance(const float *x, size_t n, size_t d, double *mean,
                       double *cov)
{
	size_t r, i, j;

	memset(mean, 0, d * sizeof(double));
	memset(cov, 0, d * d * sizeof(double));
	for (r = 0; r < n; r++)
		for (j = 0; j < d; j++)
			mean[j] += x[r * d + j] / (double)n;
	for (r = 0; r < n; r++)
		for (i = 0; i < d; i++)
			for (j = 0; j < d; j++)
				cov[i * d + j] += (x[r * d + i] - mean[i]) *
				                  (x[r * d + j] - mean[j]) / (double)n;
}

/* Largest eigenpairs by power iteration with deflation (the naive
 * reference). */
static void power_eigen(const double *c, size_t d, size_t q, double *val,
                        double *vec)
{
	double *a = malloc(d * d * sizeof(double)), *v = vec, *w;
	size_t k, it, i, j;

	w = malloc(d * sizeof(double));
	memcpy(a, c, d * d * sizeof(double));
	for (k = 0; k < q; k++) {
		double lam = 0, nrm;
		for (j = 0; j < d; j++)
			v[k * d + j] = 1.0 + 0.1 * (double)j;
		for (it = 0; it < 5000; it++) {
			nrm = 0;
			for (i = 0; i < d; i++) {
				w[i] = 0;
				for (j = 0; j < d; j++)
					w[i] += a[i * d + j] * v[k * d + j];
				nrm += w[i] * w[i];
			}
			nrm = sqrt(nrm);
			for (i = 0; i < d; i++)
				v[k * d + i] = w[i] / nrm;
			lam = nrm;
		}
		val[k] = lam;
		for (i = 0; i < d; i++)
			for (j = 0; j < d; j++)
				a[i * d + j] -= lam * v[k * d + i] * v[k * d + j];
	}
	free(a);
	free(w);
}

/* log N(x; mean, c) with c inverted by Gauss-Jordan and its determinant
 * from the pivots. */
static double naive_loglik(const double *c, const double *mean,
                           const float *x, size_t d)
{
	double *a = malloc(d * 2 * d * sizeof(double)), logdet = 0, q = 0;
	size_t i, j, k, w = 2 * d;

	for (i = 0; i < d; i++)
		for (j = 0; j < w; j++)
			a[i * w + j] = j < d ? c[i * d + j] : (j - d == i);
	for (k = 0; k < d; k++) {
		double p = a[k * w + k];
		logdet += log(p);
		for (j = 0; j < w; j++)
			a[k * w + j] /= p;
		for (i = 0; i < d; i++) {
			double f = a[i * w + k];
			if (i == k)
				continue;
			for (j = 0; j < w; j++)
				a[i * w + j] -= f * a[k * w + j];
		}
	}
	for (i = 0; i < d; i++)
		for (j = 0; j < d; j++)
			q += (x[i] - mean[i]) * a[i * w + d + j] * (x[j] - mean[j]);
	free(a);
	return -0.5 * ((double)d * log(2 * M_PI) + logdet + q);
}

START_TEST(test_ppca_against_naive)
{
	const size_t n = 3000, d = 12, q = 3;
	float *x = make_rows(n, d, 7, 0.5);
	double mean[12], cov[144], val[3], vec[36], cp[144], ll[5];
	struct zm_scatter s;
	struct zm_density m;
	const struct zm_density *mp = &m;
	struct zm_error err;
	double tr = 0, kept = 0, s2;
	size_t i, j, k, r;

	zm_gemm_setup(1);
	zm_scatter_init(&s);
	zm_density_init(&m);
	/* Batches of uneven size: the scatter combines them. */
	ck_assert_int_eq(zm_scatter_add(&s, x, 1000, d, &err), ZM_OK);
	ck_assert_int_eq(zm_scatter_add(&s, x + 1000 * d, 1, d, &err), ZM_OK);
	ck_assert_int_eq(zm_scatter_add(&s, x + 1001 * d, n - 1001, d, &err),
	                 ZM_OK);
	covariance(x, n, d, mean, cov);
	for (i = 0; i < d * d; i++)
		ck_assert_double_eq_tol(s.m2[i] / s.count, cov[i],
		                        1e-4 * (1 + fabs(cov[i])));
	ck_assert_int_eq(zm_density_fit(&m, &s, q, &err), ZM_OK);
	ck_assert_uint_eq(m.q, q);
	power_eigen(cov, d, q, val, vec);
	for (k = 0; k < q; k++) {
		double dot = 0;
		ck_assert_double_eq_tol(m.pcvar[k], val[k], 1e-4 * val[k]);
		for (j = 0; j < d; j++)
			dot += m.pc[k * d + j] * vec[k * d + j];
		ck_assert_double_ge(fabs(dot), 1 - 1e-4);
		kept += val[k];
	}
	for (j = 0; j < d; j++)
		tr += cov[j * d + j];
	s2 = (tr - kept) / (double)(d - q);
	ck_assert_double_eq_tol(m.s2, s2, 1e-4 * s2);
	/* The PPCA's covariance built densely, its Gaussian evaluated
	 * naively, against the GEMM path. */
	for (i = 0; i < d; i++)
		for (j = 0; j < d; j++) {
			cp[i * d + j] = i == j ? s2 : 0;
			for (k = 0; k < q; k++)
				cp[i * d + j] += (val[k] - s2) * vec[k * d + i] *
				                 vec[k * d + j];
		}
	ck_assert_int_eq(zm_density_loglik(&mp, 1, x, 5, ll, &err), ZM_OK);
	for (r = 0; r < 5; r++)
		ck_assert_double_eq_tol(ll[r], naive_loglik(cp, mean, x + r * d,
		                                            d), 1e-3);
	/* A density's scatter refits to the same density. */
	{
		struct zm_scatter t;
		struct zm_density m2;
		zm_scatter_init(&t);
		zm_density_init(&m2);
		t.d = d;
		t.count = 100;
		t.mean = calloc(d, sizeof(double));
		t.m2 = calloc(d * d, sizeof(double));
		for (j = 0; j < d; j++)
			t.mean[j] = m.mean[j];
		zm_density_scatter(&m, 100, t.m2);
		ck_assert_int_eq(zm_density_fit(&m2, &t, q, &err), ZM_OK);
		for (k = 0; k < q; k++)
			ck_assert_double_eq_tol(m2.pcvar[k], m.pcvar[k],
			                        1e-4 * m.pcvar[k]);
		ck_assert_double_eq_tol(m2.s2, m.s2, 1e-4 * m.s2);
		ck_assert_double_eq_tol(zm_density_kl(&m, &m2), 0, 1e-3);
		zm_density_release(&m2);
		zm_scatter_release(&t);
	}
	zm_density_release(&m);
	zm_scatter_release(&s);
	free(x);
}
END_TEST

/*
 * Tying the residual variance: every s2 becomes the geometric mean, the
 * directions keep their variances (the first model's third falls below
 * the tied s2 here), and the log-likelihood is still that of the
 * Gaussian with the covariance built densely from them (naive
 * reference).  A diagonal density, one density or unequal widths leave
 * everything as it was.
 */
/* Constant columns: a covariance of rank below the directions asked
 * for.  The fit's directions must still be orthonormal, so that the
 * profile it writes is read back (it was refused as "not orthogonal"). */
START_TEST(test_fit_rank_deficient)
{
	const size_t n = 400, d = 6, q = 5, live = 3;
	float *x = make_rows(n, d, 11, 0.5);
	const float constant[3] = { 1, 0, 5 };
	struct zm_scatter s;
	struct zm_density m, back;
	struct zm_error err;
	size_t i, j, k;

	/* The last columns live, the first ones constant (a one-hot
	 * column of a slice with one source). */
	for (i = 0; i < n; i++)
		for (j = 0; j < d - live; j++)
			x[i * d + j] = constant[j];
	zm_gemm_setup(1);
	zm_scatter_init(&s);
	zm_density_init(&m);
	zm_density_init(&back);
	ck_assert_int_eq(zm_scatter_add(&s, x, n, d, &err), ZM_OK);
	ck_assert_int_eq(zm_density_fit(&m, &s, q, &err), ZM_OK);
	ck_assert_uint_eq(m.q, q);
	for (i = 0; i < m.q; i++)
		for (k = 0; k <= i; k++) {
			double dot = 0;
			for (j = 0; j < d; j++)
				dot += (double)m.pc[i * d + j] * m.pc[k * d + j];
			ck_assert_double_eq_tol(dot, i == k, 1e-5);
		}
	/* The live columns' variance is captured first, none is negative. */
	for (k = 0; k < m.q; k++)
		ck_assert_double_ge(m.pcvar[k], -1e-6);
	ck_assert_double_gt(m.pcvar[live - 1], 0.01);
	/* The null directions: no more than the variance floor. */
	ck_assert_double_lt(m.pcvar[live], 1e-3 * m.pcvar[0]);
	ck_assert_int_eq(zm_density_ppca(&back, m.mean, m.pc, m.pcvar, m.q, d,
	                                 m.s2 > 0 ? m.s2 : 1e-6, m.count,
	                                 &err), ZM_OK);
	zm_density_release(&back);
	zm_density_release(&m);
	zm_scatter_release(&s);
	free(x);
}
END_TEST

START_TEST(test_tie_residual)
{
	const size_t n = 2000, d = 12, q = 3;
	float *x[2];
	struct zm_scatter s[2];
	struct zm_density m[2], dg;
	struct zm_density *mp[3] = { &m[0], &m[1], &dg };
	const struct zm_density *cm[2] = { &m[0], &m[1] };
	double s2a, s2b, tied, pv2, ll[2 * 4], cp[144], mean[12];
	double dm[12], dv[12];
	struct zm_error err;
	size_t i, j, k, r, t;

	zm_gemm_setup(1);
	x[0] = make_rows(n, d, 11, 0.2);
	x[1] = make_rows(n, d, 12, -0.1);
	for (i = 0; i < n * d; i++)
		x[1][i] *= 30;
	for (t = 0; t < 2; t++) {
		zm_scatter_init(&s[t]);
		zm_density_init(&m[t]);
		ck_assert_int_eq(zm_scatter_add(&s[t], x[t], n, d, &err), ZM_OK);
		ck_assert_int_eq(zm_density_fit(&m[t], &s[t], q, &err), ZM_OK);
		ck_assert_uint_eq(m[t].q, q);
	}
	s2a = m[0].s2;
	s2b = m[1].s2;
	pv2 = m[0].pcvar[2];
	tied = sqrt(s2a * s2b);
	ck_assert_double_lt(pv2, tied);
	/* No-ops: one density; a diagonal one among them; unequal widths. */
	for (j = 0; j < d; j++) {
		dm[j] = 0;
		dv[j] = 1;
	}
	zm_density_init(&dg);
	ck_assert_int_eq(zm_density_diag(&dg, dm, dv, d, 10, &err), ZM_OK);
	zm_density_tie_residual(mp, 1);
	zm_density_tie_residual(mp, 3);
	ck_assert_double_eq(m[0].s2, s2a);
	ck_assert_double_eq(m[1].s2, s2b);
	m[1].d = d - 1;
	zm_density_tie_residual(mp, 2);
	m[1].d = d;
	ck_assert_double_eq(m[0].s2, s2a);
	zm_density_tie_residual(mp, 2);
	for (t = 0; t < 2; t++) {
		ck_assert_double_eq_tol(m[t].s2, tied, 1e-12 * tied);
		ck_assert_double_eq_tol(m[t].ivar[0], 1 / tied, 1e-6 / tied);
	}
	ck_assert_double_eq(m[0].pcvar[2], pv2);
	ck_assert_int_eq(zm_density_loglik(cm, 2, x[0], 4, ll, &err), ZM_OK);
	for (t = 0; t < 2; t++) {
		for (j = 0; j < d; j++)
			mean[j] = m[t].mean[j];
		for (i = 0; i < d; i++)
			for (j = 0; j < d; j++) {
				cp[i * d + j] = i == j ? tied : 0;
				for (k = 0; k < q; k++)
					cp[i * d + j] += (m[t].pcvar[k] - tied) *
					                 m[t].pc[k * d + i] *
					                 m[t].pc[k * d + j];
			}
		for (r = 0; r < 4; r++)
			ck_assert_double_eq_tol(ll[r * 2 + t],
			                        naive_loglik(cp, mean,
			                                     x[0] + r * d, d),
			                        1e-6 * (1 + fabs(ll[r * 2 + t])));
	}
	for (t = 0; t < 2; t++) {
		zm_density_release(&m[t]);
		zm_scatter_release(&s[t]);
		free(x[t]);
	}
	zm_density_release(&dg);
}
END_TEST

/* The KL between two diagonal Gaussians in closed form per feature. */
START_TEST(test_kl_diag_closed_form)
{
	const double ma[3] = { 0, 1, 2 }, va[3] = { 1, 2, 0.5 };
	const double mb[3] = { 1, 1, 0 }, vb[3] = { 2, 1, 1 };
	struct zm_density a, b;
	struct zm_error err;
	double want = 0;
	size_t j;

	zm_density_init(&a);
	zm_density_init(&b);
	ck_assert_int_eq(zm_density_diag(&a, ma, va, 3, 10, &err), ZM_OK);
	ck_assert_int_eq(zm_density_diag(&b, mb, vb, 3, 10, &err), ZM_OK);
	for (j = 0; j < 3; j++)
		want += 0.5 * (va[j] / vb[j] + (ma[j] - mb[j]) * (ma[j] - mb[j]) /
		               vb[j] - 1 + log(vb[j] / va[j]));
	ck_assert_double_eq_tol(zm_density_kl(&a, &b), want, 1e-9);
	ck_assert_double_eq_tol(zm_density_kl(&a, &a), 0, 1e-12);
	zm_density_release(&a);
	zm_density_release(&b);
}
END_TEST

/*
 * Three 2-D Gaussians with known parameters, rows drawn from each: with
 * the true densities the fitted temperature is near 1 and the posterior
 * softmax(ll / T) equals Bayes' closed form; log-likelihoods scaled by 5
 * (an overconfident model) are calibrated back to the same posterior.
 */
START_TEST(test_calibration_recovers_posterior)
{
	const double mu[3][2] = { { 0, 0 }, { 2, 0 }, { 0, 2.5 } };
	const double var[3][2] = { { 1, 1 }, { 0.5, 2 }, { 1.5, 0.7 } };
	const size_t per = 4000, k = 3, n = 3 * per;
	struct zm_density dens[3];
	const struct zm_density *dp[3] = { &dens[0], &dens[1], &dens[2] };
	float *x = malloc(n * 2 * sizeof(float));
	double *ll = malloc(n * k * sizeof(double));
	size_t *src = malloc(n * sizeof(size_t)), r, i;
	struct zm_calibration c;
	struct zm_error err;
	struct zm_rng rng;

	zm_rng_seed(&rng, 3);
	for (i = 0; i < k; i++) {
		zm_density_init(&dens[i]);
		ck_assert_int_eq(zm_density_diag(&dens[i], mu[i], var[i], 2, 1e9,
		                                 &err), ZM_OK);
	}
	for (r = 0; r < n; r++) {
		src[r] = r / per;
		for (i = 0; i < 2; i++)
			x[r * 2 + i] = (float)(mu[src[r]][i] + sqrt(var[src[r]][i]) *
			                       zm_rng_normal(&rng));
	}
	ck_assert_int_eq(zm_density_loglik(dp, k, x, n, ll, &err), ZM_OK);
	ck_assert_int_eq(zm_calibrate(ll, src, n, k, &c, &err), ZM_OK);
	ck_assert_double_eq_tol(c.temperature, 1.0, 0.1);
	for (r = 0; r < n; r += 997) {
		double lse = -INFINITY, closed[3], tot = 0, mx;
		for (i = 0; i < k; i++) {
			double dx = x[r * 2] - mu[i][0], dy = x[r * 2 + 1] - mu[i][1];
			closed[i] = exp(-0.5 * (dx * dx / var[i][0] +
			                        dy * dy / var[i][1])) /
			            (2 * M_PI * sqrt(var[i][0] * var[i][1]));
			tot += closed[i];
		}
		mx = ll[r * k];
		for (i = 1; i < k; i++)
			if (ll[r * k + i] > mx)
				mx = ll[r * k + i];
		lse = 0;
		for (i = 0; i < k; i++)
			lse += exp((ll[r * k + i] - mx) / c.temperature);
		for (i = 0; i < k; i++)
			ck_assert_double_eq_tol(exp((ll[r * k + i] - mx) /
			                            c.temperature) / lse,
			                        closed[i] / tot, 0.03);
	}
	/* Overconfident scores: T comes out near 5. */
	for (r = 0; r < n * k; r++)
		ll[r] *= 5;
	ck_assert_int_eq(zm_calibrate(ll, src, n, k, &c, &err), ZM_OK);
	ck_assert_double_eq_tol(c.temperature, 5.0, 0.5);
	ck_assert_double_lt(c.nll, c.nll_t1);
	ck_assert_int_eq(zm_calibrate(ll, src, 0, k, &c, &err), ZM_ERR_DATA);
	for (i = 0; i < k; i++)
		zm_density_release(&dens[i]);
	free(x);
	free(ll);
	free(src);
}
END_TEST

START_TEST(test_route_assign_and_disagree)
{
	const double same[6] = { 0.995, 0.005, 0.9, 0.1, 0.6, 0.4 };
	const double mixed[6] = { 0.995, 0.005, 0.002, 0.998, 0.5, 0.5 };
	size_t g[3];

	ck_assert(!zm_route_rows_disagree(same, 3, 2));
	ck_assert(zm_route_rows_disagree(mixed, 3, 2));
	ck_assert_uint_eq(zm_route_assign(same, 3, 2, 0.99, g), 2);
	ck_assert_uint_eq(g[0], 0);
	ck_assert_uint_eq(g[1], SIZE_MAX);
	ck_assert_uint_eq(zm_route_assign(mixed, 3, 2, 0.99, g), 1);
	ck_assert_uint_eq(g[0], 0);
	ck_assert_uint_eq(g[1], 1);
	ck_assert_uint_eq(g[2], SIZE_MAX);
	/* The tie of row 2 stays mixed at any threshold. */
	ck_assert_uint_eq(zm_route_assign(mixed, 3, 2, 0.5, g), 1);
	ck_assert_uint_eq(g[0], 0);
	ck_assert_uint_eq(g[1], 1);
	ck_assert_uint_eq(g[2], SIZE_MAX);
	ck_assert_uint_eq(zm_route_assign(mixed, 3, 2, 0, g), 1);
	ck_assert_uint_eq(g[2], SIZE_MAX);
	{
		const double four[4] = { 0.25, 0.25, 0.25, 0.25 };
		ck_assert_uint_eq(zm_route_assign(four, 1, 4, 0, g), 1);
		ck_assert_uint_eq(g[0], SIZE_MAX);
	}
}
END_TEST

static const char *const ARCH =
	"input: [12]\nloss: cross-entropy\nlayers:\n"
	"  - {name: fc1, type: dense, units: 8, activation: relu}\n"
	"  - {name: out, type: dense, units: 3}\n";

/* A model whose profile is of rows made with shift. */
static struct zm_model *profiled_model(uint64_t seed, double shift)
{
	struct zm_model *m = unit_model(ARCH, seed);
	struct zm_profile p;
	struct zm_error err;
	float *x = make_rows(2000, 12, seed + 100, shift);

	zm_profile_init(&p);
	ck_assert_int_eq(zm_profile_add_batch(&p, ZM_PROFILE_INPUT, x, 2000, 12,
	                                      &err), ZM_OK);
	ck_assert_int_eq(zm_profile_to_doc(&p, &m->extra, &err), ZM_OK);
	zm_profile_release(&p);
	free(x);
	return m;
}

/*
 * Two models of far-apart data under the route merge: a batch of rows of
 * one model's data is that model's own prediction (and goes to it as one
 * batch); a batch mixing both sends each row to its own model, with the
 * same scores as each model alone on those rows.
 */
START_TEST(test_hard_routing_is_the_model_alone)
{
	struct zm_model *m[2] = { profiled_model(1, 0), profiled_model(2, 4) };
	const struct zm_model *cm[2] = { m[0], m[1] };
	struct zm_predictor *p = NULL, *alone[2] = { NULL, NULL };
	struct zm_predict_options o;
	struct zm_error err;
	float *xa = make_rows(40, 12, 501, 0), *xb = make_rows(40, 12, 502, 4);
	float x[80 * 12], s[80 * 3], lp[80 * 3], want[40 * 3], wlp[40 * 3];
	const struct zm_route_stats *st;
	size_t r, j, i;

	zm_gemm_setup(1);
	zm_predict_options_init(&o);
	o.merge = ZM_MERGE_ROUTE;
	o.w.kind = ZM_WEIGHTING_DENSITY;
	o.w.per_row = true;
	ck_assert_int_eq(zm_predictor_new_opts(cm, 2, 80, &o, &p, &err), ZM_OK);
	ck_assert(p->wr->separable);
	for (i = 0; i < 2; i++)
		ck_assert_int_eq(zm_predictor_new(&cm[i], 1, 80, &alone[i], &err),
		                 ZM_OK);
	/* Homogeneous: one model, per batch. */
	ck_assert_int_eq(zm_predict_run(p, xb, 40, s, lp, &err), ZM_OK);
	zm_predict_batch(alone[1], xb, 40, want, wlp);
	for (j = 0; j < 40 * 3; j++) {
		ck_assert_float_eq_tol(s[j], want[j], 1e-6);
		ck_assert_float_eq_tol(lp[j], wlp[j], 1e-5);
	}
	st = zm_route_stats(p->route);
	ck_assert_uint_eq(st->batches_one, 1);
	ck_assert_uint_eq(st->rows_model[1], 40);
	/* Mixed: alternate rows, each to its own model, per row. */
	for (r = 0; r < 80; r++)
		memcpy(x + r * 12, (r % 2 ? xb : xa) + (r / 2) * 12,
		       12 * sizeof(float));
	ck_assert_int_eq(zm_predict_run(p, x, 80, s, lp, &err), ZM_OK);
	ck_assert_uint_eq(st->batches_split, 1);
	ck_assert_uint_eq(st->rows_mixed, 0);
	for (i = 0; i < 2; i++) {
		zm_predict_batch(alone[i], i ? xb : xa, 40, want, wlp);
		for (r = 0; r < 40; r++)
			for (j = 0; j < 3; j++)
				ck_assert_float_eq_tol(s[(2 * r + i) * 3 + j],
				                       want[r * 3 + j], 1e-6);
	}
	/* Uniform weights (no routing possible): every row mixed, the mean
	 * of the two models' probabilities. */
	zm_predictor_free(p);
	o.w.kind = ZM_WEIGHTING_UNIFORM;
	ck_assert_int_eq(zm_predictor_new_opts(cm, 2, 80, &o, &p, &err), ZM_OK);
	ck_assert_int_eq(zm_predict_run(p, xa, 40, s, lp, &err), ZM_OK);
	zm_predict_batch(alone[0], xa, 40, want, NULL);
	zm_predict_batch(alone[1], xa, 40, wlp, NULL);
	for (j = 0; j < 40 * 3; j++)
		ck_assert_float_eq_tol(s[j], 0.5f * (want[j] + wlp[j]), 1e-6);
	ck_assert_uint_eq(zm_route_stats(p->route)->rows_mixed, 40);
	zm_predictor_free(p);
	for (i = 0; i < 2; i++) {
		zm_predictor_free(alone[i]);
		zm_model_free(m[i]);
	}
	free(xa);
	free(xb);
}
END_TEST

/* Models of the same data are indistinguishable: uniform weights. */
START_TEST(test_same_data_is_not_routed)
{
	struct zm_model *m[2] = { profiled_model(1, 0), profiled_model(1, 0) };
	const struct zm_model *cm[2] = { m[0], m[1] };
	struct zm_predictor *p = NULL;
	struct zm_predict_options o;
	struct zm_error err;
	struct zm_buf b;

	zm_predict_options_init(&o);
	o.merge = ZM_MERGE_ROUTE;
	o.w.kind = ZM_WEIGHTING_DENSITY;
	o.w.per_row = true;
	ck_assert_int_eq(zm_predictor_new_opts(cm, 2, 8, &o, &p, &err), ZM_OK);
	ck_assert(!p->wr->separable);
	zm_buf_init(&b);
	zm_predict_explain(p, (const char *const[]){ "a", "b" }, &b);
	ck_assert_ptr_nonnull(strstr(b.data, "indistinguishable"));
	zm_buf_release(&b);
	zm_predictor_free(p);
	zm_model_free(m[0]);
	zm_model_free(m[1]);
}
END_TEST

/* Profiles keep the PPCA through a document, and merging two profiles'
 * scatters equals the scatter of all rows. */
START_TEST(test_profile_ppca_round_trip)
{
	float *x = make_rows(600, 12, 9, 1);
	struct zm_profile a, b, all, back;
	struct zm_density da, db;
	struct zm_doc doc;
	struct zm_error err;
	size_t i;

	zm_profile_init(&a);
	zm_profile_init(&b);
	zm_profile_init(&all);
	zm_profile_init(&back);
	zm_density_init(&da);
	zm_density_init(&db);
	zm_doc_init(&doc);
	ck_assert_int_eq(zm_profile_add_batch(&a, "input", x, 250, 12, &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_profile_add_batch(&b, "input", x + 250 * 12, 350,
	                                      12, &err), ZM_OK);
	ck_assert_int_eq(zm_profile_add_batch(&all, "input", x, 600, 12, &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_profile_merge(&a, &b, &err), ZM_OK);
	for (i = 0; i < 144; i++)
		ck_assert_double_eq_tol(a.scatter.m2[i], all.scatter.m2[i],
		                        1e-3 * (1 + fabs(all.scatter.m2[i])));
	ck_assert_int_eq(zm_profile_to_doc(&all, &doc, &err), ZM_OK);
	ck_assert_ptr_nonnull(zm_doc_find(&doc, "profile.input.pc"));
	ck_assert_int_eq(zm_profile_from_doc(&back, &doc, &err), ZM_OK);
	ck_assert_int_eq(zm_profile_density(&all, &da, &err), ZM_OK);
	ck_assert_int_eq(zm_profile_density_from_doc(&doc, &db, &err), ZM_OK);
	ck_assert_uint_eq(da.q, db.q);
	ck_assert_double_eq_tol(da.logdet, db.logdet, 1e-3 * fabs(da.logdet));
	ck_assert_double_eq_tol(zm_density_kl(&da, &db), 0, 1e-3);
	zm_density_release(&db);
	/* The rebuilt scatter refits to the stored model. */
	ck_assert_int_eq(zm_profile_density(&back, &db, &err), ZM_OK);
	ck_assert_double_eq_tol(zm_density_kl(&da, &db), 0, 1e-3);
	/* A stored direction that is not unit length is refused. */
	((float *)zm_doc_find(&doc, "profile.input.pc")->data)[0] += 0.5f;
	ck_assert_int_eq(zm_profile_from_doc(&back, &doc, &err), ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "profile.input.pc"));
	zm_density_release(&da);
	zm_density_release(&db);
	zm_doc_release(&doc);
	zm_profile_release(&a);
	zm_profile_release(&b);
	zm_profile_release(&all);
	zm_profile_release(&back);
	free(x);
}
END_TEST


/* The dense covariance of the density m (PPCA or diagonal). */
static void dense_cov(const struct zm_density *m, double *c)
{
	size_t d = m->d, i, j, k;

	for (i = 0; i < d; i++)
		for (j = 0; j < d; j++) {
			c[i * d + j] = i == j ? m->var[i] : 0;
			for (k = 0; k < m->q; k++)
				c[i * d + j] += (m->pcvar[k] - m->s2) *
				                m->pc[k * d + i] * m->pc[k * d + j];
		}
}

/* log sum_c w_c N(x; mu_c, C_c), each Gaussian naively (Gauss-Jordan). */
static double naive_mixture(const struct zm_density *comp, const double *w,
                            size_t n, const float *x)
{
	double c[64], mean[8], l[4], top = -INFINITY, s = 0;
	size_t i, j;

	for (i = 0; i < n; i++) {
		dense_cov(&comp[i], c);
		for (j = 0; j < comp[i].d; j++)
			mean[j] = comp[i].mean[j];
		l[i] = log(w[i]) + naive_loglik(c, mean, x, comp[i].d);
		if (l[i] > top)
			top = l[i];
	}
	for (i = 0; i < n; i++)
		s += exp(l[i] - top);
	return top + log(s);
}

/* A PPCA of width 8 with q = 2 directions from seeded rows. */
static void small_ppca(struct zm_density *m, uint64_t seed, double shift,
                       double count)
{
	float *x = make_rows(400, 8, seed, shift);
	struct zm_scatter s;
	struct zm_error err;

	zm_scatter_init(&s);
	zm_density_init(m);
	ck_assert_int_eq(zm_scatter_add(&s, x, 400, 8, &err), ZM_OK);
	s.count = count;        /* the mixture weight's count */
	ck_assert_int_eq(zm_density_fit(m, &s, 2, &err), ZM_OK);
	ck_assert_uint_eq(m->q, 2);
	zm_scatter_release(&s);
	free(x);
}

/*
 * Mixtures: the log-likelihood is log sum_c w_c N(x; mu_c, C_c) with the
 * weights the components' counts, each Gaussian evaluated naively (the
 * stacked-GEMM path for PPCA components, the component-by-component path
 * when one is diagonal), so the posterior between two mixtures is Bayes'
 * closed form; tying the residual ties every component with the plain
 * densities beside them.
 */
START_TEST(test_mixture_closed_form)
{
	struct zm_density mix, mix2, plain, *comp, *comp2;
	const struct zm_density *mp[3] = { &mix, &plain, &mix2 };
	struct zm_density *tp[3] = { &mix, &plain, &mix2 };
	struct zm_density ref[3], ref2[2];
	const double cnt[3] = { 100, 300, 600 };
	double w[3] = { 0.1, 0.3, 0.6 }, w2[2] = { 0.25, 0.75 };
	double ll[5 * 3], dm[8], dv[8], ls, tied;
	float *x = make_rows(5, 8, 99, 0.3);
	struct zm_error err;
	size_t i, j, r;

	zm_gemm_setup(1);
	comp = calloc(3, sizeof(*comp));
	comp2 = calloc(2, sizeof(*comp2));
	for (i = 0; i < 3; i++) {
		small_ppca(&comp[i], 20 + i, 0.4 * (double)i - 0.3, cnt[i]);
		small_ppca(&ref[i], 20 + i, 0.4 * (double)i - 0.3, cnt[i]);
	}
	small_ppca(&mix, 30, 0, 1000);
	small_ppca(&plain, 31, 0.1, 500);
	/* The second mixture: a PPCA and a diagonal component. */
	small_ppca(&comp2[0], 40, -0.2, 50);
	small_ppca(&ref2[0], 40, -0.2, 50);
	for (j = 0; j < 8; j++) {
		dm[j] = 0.1 * (double)j;
		dv[j] = 1 + 0.2 * (double)j;
	}
	zm_density_init(&comp2[1]);
	zm_density_init(&ref2[1]);
	ck_assert_int_eq(zm_density_diag(&comp2[1], dm, dv, 8, 150, &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_density_diag(&ref2[1], dm, dv, 8, 150, &err),
	                 ZM_OK);
	small_ppca(&mix2, 41, 0, 200);
	ck_assert_int_eq(zm_density_set_mixture(&mix, comp, 3, &err), ZM_OK);
	ck_assert_int_eq(zm_density_set_mixture(&mix2, comp2, 2, &err), ZM_OK);
	for (i = 0; i < 3; i++)
		ck_assert_double_eq_tol(exp(mix.logw[i]), w[i], 1e-12);
	ck_assert_int_eq(zm_density_loglik(mp, 3, x, 5, ll, &err), ZM_OK);
	for (r = 0; r < 5; r++) {
		double c[64], mean[8];
		double a = naive_mixture(ref, w, 3, x + r * 8);
		double b = naive_mixture(ref2, w2, 2, x + r * 8);
		dense_cov(&plain, c);
		for (j = 0; j < 8; j++)
			mean[j] = plain.mean[j];
		ck_assert_double_eq_tol(ll[r * 3], a, 1e-4 * (1 + fabs(a)));
		ck_assert_double_eq_tol(ll[r * 3 + 2], b, 1e-4 * (1 + fabs(b)));
		ck_assert_double_eq_tol(ll[r * 3 + 1],
		                        naive_loglik(c, mean, x + r * 8, 8),
		                        1e-4 * (1 + fabs(ll[r * 3 + 1])));
		/* Bayes: the posterior of the first mixture against the
		 * second, equal priors. */
		ck_assert_double_eq_tol(1 / (1 + exp(ll[r * 3 + 2] - ll[r * 3])),
		                        1 / (1 + exp(b - a)), 1e-6);
	}
	/* Tying: nothing is tied while one Gaussian a row is scored under
	 * is diagonal (mix2's second component); without mix2, the three
	 * components of mix and plain share the geometric mean of their s2. */
	ls = log(plain.s2);
	zm_density_tie_residual(tp, 3);
	ck_assert_double_eq(mix.comp[0].s2, ref[0].s2);
	ck_assert_double_eq(log(plain.s2), ls);
	zm_density_tie_residual(tp, 2);
	for (i = 0; i < 3; i++)
		ls += log(ref[i].s2);
	tied = exp(ls / 4);
	for (i = 0; i < 3; i++)
		ck_assert_double_eq_tol(mix.comp[i].s2, tied, 1e-9 * tied);
	ck_assert_double_eq_tol(plain.s2, tied, 1e-9 * tied);
	ck_assert_int_eq(zm_density_loglik(mp, 1, x, 1, ll, &err), ZM_OK);
	for (i = 0; i < 3; i++) {
		ref[i].s2 = tied;
		for (j = 0; j < 8; j++)
			ref[i].var[j] = tied;
	}
	ck_assert_double_eq_tol(ll[0], naive_mixture(ref, w, 3, x),
	                        1e-4 * (1 + fabs(ll[0])));
	/* A component of another width is refused, and released. */
	comp = calloc(2, sizeof(*comp));
	small_ppca(&comp[0], 50, 0, 10);
	zm_density_init(&comp[1]);
	ck_assert_int_eq(zm_density_diag(&comp[1], dm, dv, 7, 10, &err), ZM_OK);
	ck_assert_int_eq(zm_density_set_mixture(&plain, comp, 2, &err),
	                 ZM_ERR_DATA);
	ck_assert_uint_eq(plain.n_comp, 0);
	for (i = 0; i < 3; i++)
		zm_density_release(&ref[i]);
	zm_density_release(&ref2[0]);
	zm_density_release(&ref2[1]);
	zm_density_release(&mix);
	zm_density_release(&mix2);
	zm_density_release(&plain);
	free(x);
}
END_TEST

/* n rows of d features in three clusters (centres 8 apart along
 * different axes, unit noise), cluster of row r in *lab (r % 3). */
static float *cluster_rows(size_t n, size_t d, uint64_t seed)
{
	float *x = malloc(n * d * sizeof(float));
	struct zm_rng rng;
	size_t r, j;

	ck_assert_ptr_nonnull(x);
	zm_rng_seed(&rng, seed);
	for (r = 0; r < n; r++)
		for (j = 0; j < d; j++)
			x[r * d + j] = (float)(zm_rng_normal(&rng) *
			                       (1 + 0.1 * (double)j) +
			                       (j == r % 3 ? 8.0 : 0.0));
	return x;
}

/*
 * A profile's components recover known clusters: rows of three clusters
 * (450 rows: three components), clustered and added in batches, give
 * three components of 150 rows each whose stored PPCAs, read back from a
 * document, are the PPCAs fitted to each cluster's own rows, weighted a
 * third each.  Merging two such profiles unites their components (all
 * rows counted); rows added to a profile read from a document drop them.
 */
START_TEST(test_profile_mixture_recovers_clusters)
{
	const size_t n = 450, d = 10;
	float *x = cluster_rows(n, d, 5), *xc;
	struct zm_profile p, q, back;
	struct zm_scatter own[3];
	struct zm_density got, want[3];
	const struct zm_density *gp = &got;
	struct zm_doc doc;
	struct zm_error err;
	double ll, w[3] = { 1.0 / 3, 1.0 / 3, 1.0 / 3 }, total = 0;
	size_t i, c, r, m;

	zm_gemm_setup(1);
	zm_profile_init(&p);
	zm_profile_init(&q);
	zm_profile_init(&back);
	zm_density_init(&got);
	zm_doc_init(&doc);
	xc = malloc(n * d * sizeof(float));
	for (c = 0; c < 3; c++) {
		for (m = 0, r = c; r < n; r += 3)
			memcpy(xc + m++ * d, x + r * d, d * sizeof(float));
		zm_scatter_init(&own[c]);
		ck_assert_int_eq(zm_scatter_add(&own[c], xc, m, d, &err), ZM_OK);
		zm_density_init(&want[c]);
		ck_assert_int_eq(zm_density_fit(&want[c], &own[c],
		                                ZM_DENSITY_COMPONENT_RANK, &err),
		                 ZM_OK);
	}
	ck_assert_int_eq(zm_profile_cluster(&p, x, n, d, &err), ZM_OK);
	ck_assert_uint_eq(p.n_comp, 3);
	for (r = 0; r < n; r += 100)
		ck_assert_int_eq(zm_profile_add_batch(&p, "input", x + r * d,
		                                      n - r < 100 ? n - r : 100,
		                                      d, &err), ZM_OK);
	/* Clustering after rows were added is refused. */
	ck_assert_int_eq(zm_profile_cluster(&p, x, n, d, &err), ZM_ERR_USAGE);
	for (c = 0; c < 3; c++)
		ck_assert_double_eq(p.comp[c].count, 150);
	ck_assert_int_eq(zm_profile_to_doc(&p, &doc, &err), ZM_OK);
	ck_assert_ptr_nonnull(zm_doc_find(&doc, "profile.input.c2.center"));
	ck_assert_ptr_null(zm_doc_find(&doc, "profile.input.c3.center"));
	ck_assert_int_eq(zm_profile_density_from_doc(&doc, &got, &err), ZM_OK);
	ck_assert_uint_eq(got.n_comp, 3);
	for (i = 0; i < 5; i++) {
		const float *xr = x + (7 * i + 1) * d;
		double top = -INFINITY, s = 0, l[3];
		for (c = 0; c < 3; c++) {
			const struct zm_density *wc = &want[c];
			ck_assert_int_eq(zm_density_loglik(&wc, 1, xr, 1, &l[c],
			                                   &err), ZM_OK);
			l[c] += log(w[c]);
			if (l[c] > top)
				top = l[c];
		}
		for (c = 0; c < 3; c++)
			s += exp(l[c] - top);
		ck_assert_int_eq(zm_density_loglik(&gp, 1, xr, 1, &ll, &err),
		                 ZM_OK);
		ck_assert_double_eq_tol(ll, top + log(s), 1e-3 * (1 + fabs(ll)));
	}
	/* The same through the profile read back (scatters rebuilt). */
	ck_assert_int_eq(zm_profile_from_doc(&back, &doc, &err), ZM_OK);
	ck_assert_uint_eq(back.n_comp, 3);
	zm_density_release(&got);
	ck_assert_int_eq(zm_profile_density(&back, &got, &err), ZM_OK);
	ck_assert_uint_eq(got.n_comp, 3);
	/* Read for its moments only: the same entries to the bit, no
	 * scatter and no component scatters; the same refusal below. */
	{
		struct zm_profile light;
		size_t e, j;
		zm_profile_init(&light);
		ck_assert_int_eq(zm_profile_moments_from_doc(&light, &doc,
		                                             &err), ZM_OK);
		ck_assert_uint_eq(light.n_comp, 0);
		ck_assert_uint_eq(light.scatter.d, 0);
		ck_assert_ptr_null(light.scatter.m2);
		ck_assert_uint_eq(light.n_entries, back.n_entries);
		for (e = 0; e < back.n_entries; e++) {
			const struct zm_profile_entry *a = &light.entries[e];
			const struct zm_profile_entry *b = &back.entries[e];
			ck_assert_str_eq(a->name, b->name);
			ck_assert_uint_eq(a->dim, b->dim);
			ck_assert_double_eq(a->count, b->count);
			for (j = 0; j < a->dim; j++) {
				ck_assert_double_eq(a->mean[j], b->mean[j]);
				ck_assert_double_eq(a->m2[j], b->m2[j]);
			}
		}
		zm_profile_release(&light);
	}
	/* Merged with a copy of itself: six components, every row. */
	ck_assert_int_eq(zm_profile_copy(&q, &p, &err), ZM_OK);
	ck_assert_uint_eq(q.n_comp, 3);
	ck_assert_int_eq(zm_profile_merge(&q, &back, &err), ZM_OK);
	ck_assert_uint_eq(q.n_comp, 6);
	for (c = 0; c < q.n_comp; c++)
		total += q.comp[c].count;
	ck_assert_double_eq(total, 2 * n);
	ck_assert_double_eq(q.scatter.count, 2 * n);
	/* Rows added without centres: the components go. */
	ck_assert_int_eq(zm_profile_add_batch(&back, "input", x, 10, d, &err),
	                 ZM_OK);
	ck_assert_uint_eq(back.n_comp, 0);
	/* A component's rows that do not add up are refused. */
	{
		struct zm_tensor *t = (struct zm_tensor *)zm_doc_find(
			&doc, "profile.input.c1.rows");
		double v = 140;
		memcpy(t->data, &v, sizeof(v));
		zm_density_release(&got);
		ck_assert_int_eq(zm_profile_density_from_doc(&doc, &got, &err),
		                 ZM_ERR_DATA);
		ck_assert_ptr_nonnull(strstr(err.msg, "profile.input.c"));
		{
			struct zm_profile light;
			zm_profile_init(&light);
			ck_assert_int_eq(zm_profile_moments_from_doc(&light,
			                 &doc, &err), ZM_ERR_DATA);
			ck_assert_ptr_nonnull(strstr(err.msg,
			                             "profile.input.c"));
			zm_profile_release(&light);
		}
	}
	for (c = 0; c < 3; c++) {
		zm_density_release(&want[c]);
		zm_scatter_release(&own[c]);
	}
	zm_density_release(&got);
	zm_doc_release(&doc);
	zm_profile_release(&p);
	zm_profile_release(&q);
	zm_profile_release(&back);
	free(x);
	free(xc);
}
END_TEST

Suite *suite_density(void)
{
	Suite *s = suite_create("density");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_ppca_against_naive);
	tcase_add_test(tc, test_kl_diag_closed_form);
	tcase_add_test(tc, test_tie_residual);
	tcase_add_test(tc, test_fit_rank_deficient);
	tcase_add_test(tc, test_calibration_recovers_posterior);
	tcase_add_test(tc, test_route_assign_and_disagree);
	tcase_add_test(tc, test_hard_routing_is_the_model_alone);
	tcase_add_test(tc, test_same_data_is_not_routed);
	tcase_add_test(tc, test_profile_ppca_round_trip);
	tcase_add_test(tc, test_mixture_closed_form);
	tcase_add_test(tc, test_profile_mixture_recovers_clusters);
	suite_add_tcase(s, tc);
	return s;
}
