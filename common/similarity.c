/*
 * Similarity metrics between diagonal Gaussians, their per-row GEMM form,
 * and the softmax / top-k / minimum-weight rule that turns scores into
 * model weights.  The maths is documented in similarity.h.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "mem.h"
#include "profile.h"
#include "similarity.h"

/* Rows per GEMM block in zm_similarity_rows: large enough for BLIS to run
 * at speed, small enough that the scratch stays in the low megabytes. */
#define ROW_BLOCK 256

static const char *const metric_names[ZM_METRIC_COUNT] = {
	[ZM_METRIC_COSINE] = "cosine",
	[ZM_METRIC_KL] = "kl",
	[ZM_METRIC_MAHALANOBIS] = "mahalanobis",
};

const char *zm_metric_name(enum zm_metric metric)
{
	ZM_ASSERT((unsigned)metric < ZM_METRIC_COUNT);
	return metric_names[metric];
}

bool zm_metric_parse(const char *name, enum zm_metric *out)
{
	int i;

	for (i = 0; i < ZM_METRIC_COUNT; i++) {
		if (strcmp(name, metric_names[i]) == 0) {
			*out = (enum zm_metric)i;
			return true;
		}
	}
	return false;
}

/* One side of a comparison: mean[j], and variance var[j] * var_scale
 * (var NULL: zero).  The scale lets profile entries pass M2 and 1/count
 * without a temporary array. */
struct gauss {
	const double *mean;
	const double *var;
	double var_scale;
};

static double gvar(const struct gauss *g, size_t j)
{
	return g->var ? g->var[j] * g->var_scale : 0.0;
}

static double mean_var(const struct gauss *g, size_t d)
{
	double s = 0;
	size_t j;

	for (j = 0; j < d; j++)
		s += gvar(g, j);
	return s / (double)d;
}

static double floor_kl(double floor, double mean_vq, double mean_vm)
{
	double f;

	if (floor > 0)
		return floor;
	f = ZM_SIM_FLOOR_REL * 0.5 * (mean_vq + mean_vm);
	return f > ZM_SIM_FLOOR_MIN ? f : ZM_SIM_FLOOR_MIN;
}

static double floor_mahalanobis(double floor, double mean_vm)
{
	double f;

	if (floor > 0)
		return floor;
	f = ZM_SIM_FLOOR_REL * mean_vm;
	return f > ZM_SIM_FLOOR_MIN ? f : ZM_SIM_FLOOR_MIN;
}

static double cosine(const double *a, const double *b, size_t d)
{
	double ab = 0, aa = 0, bb = 0;
	size_t j;

	for (j = 0; j < d; j++) {
		ab += a[j] * b[j];
		aa += a[j] * a[j];
		bb += b[j] * b[j];
	}
	if (aa == 0 || bb == 0)
		return 0;
	return ab / (sqrt(aa) * sqrt(bb));
}

static double similarity(enum zm_metric metric, const struct gauss *q,
                         const struct gauss *m, size_t d, double floor)
{
	double f, sum = 0;
	size_t j;

	if (d == 0)
		return 0;
	switch (metric) {
	case ZM_METRIC_COSINE:
		return cosine(q->mean, m->mean, d);
	case ZM_METRIC_KL:
		f = floor_kl(floor, mean_var(q, d), mean_var(m, d));
		for (j = 0; j < d; j++) {
			double s = fmax(gvar(q, j), f), t = fmax(gvar(m, j), f);
			double delta = q->mean[j] - m->mean[j];
			sum += 0.5 * (s / t + t / s - 2 +
			              delta * delta * (1 / s + 1 / t));
		}
		return -sum / (double)d;
	case ZM_METRIC_MAHALANOBIS:
		f = floor_mahalanobis(floor, mean_var(m, d));
		for (j = 0; j < d; j++) {
			double delta = q->mean[j] - m->mean[j];
			sum += delta * delta / fmax(gvar(m, j), f);
		}
		return -sqrt(sum / (double)d);
	default:
		ZM_ASSERT(!"unknown metric");
	}
	return 0;
}

double zm_similarity(enum zm_metric metric, const double *q_mean,
                     const double *q_var, const double *m_mean,
                     const double *m_var, size_t d, double floor)
{
	struct gauss q = { q_mean, q_var, 1.0 }, m = { m_mean, m_var, 1.0 };

	ZM_ASSERT(metric == ZM_METRIC_COSINE || m_var || d == 0);
	ZM_ASSERT(floor > 0 || floor == ZM_SIM_FLOOR_AUTO);
	return similarity(metric, &q, &m, d, floor);
}

enum zm_status zm_similarity_entries(enum zm_metric metric,
                                     const struct zm_profile_entry *q,
                                     const struct zm_profile_entry *m,
                                     double floor, double *out,
                                     struct zm_error *err)
{
	struct gauss gq, gm;

	ZM_ASSERT(floor > 0 || floor == ZM_SIM_FLOOR_AUTO);
	if (q->dim != m->dim)
		return zm_error_set(err, ZM_ERR_DATA,
		                    "profile entry %s has %zu features, the "
		                    "model's %s has %zu", q->name, q->dim,
		                    m->name, m->dim);
	if (!(q->count > 0) || !(m->count > 0))
		return zm_error_set(err, ZM_ERR_DATA,
		                    "profile entry %s has seen no rows",
		                    q->count > 0 ? m->name : q->name);
	gq.mean = q->mean;
	gq.var = q->m2;
	gq.var_scale = 1.0 / q->count;
	gm.mean = m->mean;
	gm.var = m->m2;
	gm.var_scale = 1.0 / m->count;
	*out = similarity(metric, &gq, &gm, q->dim, floor);
	return ZM_OK;
}

/* ---- per-row similarities through GEMM ---- */

/*
 * Model side of the distance metrics: w[c] = [a_c, -2 a_c mu'_c] (k rows
 * of 2d), base[c] = sum_j a_cj mu'_cj^2 + const_c, where mu' = mu - ctr
 * and the score is -(x'^2 . a_c - 2 x' . a_c mu'_c + base[c]) for kl and
 * -sqrt(that) for mahalanobis.
 */
static void prepare_distance(enum zm_metric metric, const float *m_mean,
                             const float *m_var, size_t k, size_t d,
                             double floor, const double *ctr, float *w,
                             double *base)
{
	size_t c, j;

	for (c = 0; c < k; c++) {
		const float *mu = m_mean + c * d, *v = m_var + c * d;
		float *wa = w + c * 2 * d, *wm = wa + d;
		double mv = 0, f, acc = 0, cst = 0;

		for (j = 0; j < d; j++)
			mv += v[j];
		mv /= (double)d;
		/* A row has zero variance, so kl's floor sees only the
		 * model's mean variance (see similarity.h). */
		f = metric == ZM_METRIC_KL ? floor_kl(floor, 0, mv)
		                           : floor_mahalanobis(floor, mv);
		for (j = 0; j < d; j++) {
			double s = fmax(v[j], f), a, mc = mu[j] - ctr[j];
			if (metric == ZM_METRIC_KL) {
				a = 0.5 * (1 / f + 1 / s) / (double)d;
				cst += 0.5 * (f / s + s / f - 2);
			} else {
				a = 1 / (s * (double)d);
			}
			wa[j] = (float)a;
			wm[j] = (float)(-2 * a * mc);
			acc += a * mc * mc;
		}
		base[c] = acc + cst / (double)d;
	}
}

/* Unit-length copies of the k rows of m (zero rows stay zero). */
static void prepare_cosine(const float *m, size_t k, size_t d, float *w)
{
	size_t c, j;

	for (c = 0; c < k; c++) {
		const float *row = m + c * d;
		double nn = 0;
		for (j = 0; j < d; j++)
			nn += (double)row[j] * row[j];
		nn = nn > 0 ? 1 / sqrt(nn) : 0;
		for (j = 0; j < d; j++)
			w[c * d + j] = (float)(row[j] * nn);
	}
}

enum zm_status zm_similarity_rows(enum zm_metric metric, const float *x,
                                  size_t n, size_t d, const float *m_mean,
                                  const float *m_var, size_t k, double floor,
                                  double *scores, struct zm_error *err)
{
	bool cos = metric == ZM_METRIC_COSINE;
	size_t width = cos ? d : 2 * d, wbytes, xbytes, i0, i, j, c;
	float *w = NULL, *xs = NULL, *out = NULL;
	double *base = NULL, *ctr = NULL;
	enum zm_status st = ZM_OK;

	ZM_ASSERT((unsigned)metric < ZM_METRIC_COUNT);
	ZM_ASSERT(cos || m_var);
	ZM_ASSERT(floor > 0 || floor == ZM_SIM_FLOOR_AUTO);
	if (n == 0 || k == 0)
		return ZM_OK;
	if (d == 0) {
		memset(scores, 0, n * k * sizeof(*scores));
		return ZM_OK;
	}
	if (!zm_size_mul(k, width, &wbytes) ||
	    !zm_size_mul(wbytes, sizeof(float), &wbytes) ||
	    !zm_size_mul(ROW_BLOCK, width, &xbytes) ||
	    !zm_size_mul(xbytes, sizeof(float), &xbytes))
		return zm_error_set(err, ZM_ERR_NOMEM,
		                    "similarity: %zu models of %zu features is "
		                    "too many", k, d);
	w = zm_malloc(wbytes);
	xs = zm_malloc(xbytes);
	out = zm_calloc(ROW_BLOCK, k * sizeof(float));
	base = zm_calloc(k, sizeof(double));
	ctr = zm_calloc(d, sizeof(double));
	if (!w || !xs || !out || !base || !ctr) {
		st = zm_error_set(err, ZM_ERR_NOMEM,
		                  "similarity: out of memory");
		goto out;
	}
	if (cos) {
		prepare_cosine(m_mean, k, d, w);
	} else {
		/* Centre on the models' average mean: the expansion then
		 * works on deviations, not on a large common offset. */
		for (c = 0; c < k; c++)
			for (j = 0; j < d; j++)
				ctr[j] += m_mean[c * d + j];
		for (j = 0; j < d; j++)
			ctr[j] /= (double)k;
		prepare_distance(metric, m_mean, m_var, k, d, floor, ctr, w,
		                 base);
	}
	for (i0 = 0; i0 < n; i0 += ROW_BLOCK) {
		size_t rows = n - i0 < ROW_BLOCK ? n - i0 : ROW_BLOCK;
		for (i = 0; i < rows; i++) {
			const float *row = x + (i0 + i) * d;
			float *dst = xs + i * width;
			if (cos) {
				double nn = 0;
				for (j = 0; j < d; j++)
					nn += (double)row[j] * row[j];
				nn = nn > 0 ? 1 / sqrt(nn) : 0;
				for (j = 0; j < d; j++)
					dst[j] = (float)(row[j] * nn);
			} else {
				for (j = 0; j < d; j++) {
					float xc = (float)(row[j] - ctr[j]);
					dst[j] = xc * xc;
					dst[d + j] = xc;
				}
			}
		}
		zm_gemm(false, true, rows, k, width, 1.0f, xs, width, w, width,
		        0.0f, out, k);
		for (i = 0; i < rows; i++) {
			double *s = scores + (i0 + i) * k;
			for (c = 0; c < k; c++) {
				double v = out[i * k + c];
				if (metric == ZM_METRIC_COSINE) {
					s[c] = v;
				} else if (metric == ZM_METRIC_KL) {
					s[c] = -(v + base[c]);
				} else {
					v += base[c];
					s[c] = -sqrt(v > 0 ? v : 0);
				}
			}
		}
	}
out:
	free(w);
	free(xs);
	free(out);
	free(base);
	free(ctr);
	return st;
}

/* ---- weights ---- */

enum zm_status zm_weights_from_scores(const double *scores, size_t k,
                                      double temperature, size_t top_k,
                                      double min_weight, double *out_w,
                                      struct zm_error *err)
{
	size_t i, j, best = 0;
	double sum = 0;

	if (k == 0)
		return zm_error_set(err, ZM_ERR_USAGE, "no models to weight");
	if (!(temperature > 0) || !isfinite(temperature))
		return zm_error_set(err, ZM_ERR_USAGE,
		                    "temperature %g is not a positive number",
		                    temperature);
	for (i = 0; i < k; i++) {
		if (!isfinite(scores[i]))
			return zm_error_set(err, ZM_ERR_DATA,
			                    "similarity of model %zu is not "
			                    "finite", i);
		if (scores[i] > scores[best])
			best = i;
	}
	/* Subtracting the best score keeps exp() in [0, 1]: no overflow,
	 * and the best model always has weight 1 before normalising. */
	for (i = 0; i < k; i++)
		out_w[i] = exp((scores[i] - scores[best]) / temperature);
	if (top_k > 0 && top_k < k) {
		for (i = 0; i < k; i++) {
			size_t rank = 0;
			for (j = 0; j < k && rank < top_k; j++)
				if (scores[j] > scores[i] ||
				    (scores[j] == scores[i] && j < i))
					rank++;
			if (rank >= top_k)
				out_w[i] = 0;
		}
	}
	for (i = 0; i < k; i++)
		sum += out_w[i];
	for (i = 0; i < k; i++)
		out_w[i] /= sum;
	sum = 0;
	for (i = 0; i < k; i++) {
		if (out_w[i] < min_weight)
			out_w[i] = 0;
		sum += out_w[i];
	}
	if (sum == 0) {
		out_w[best] = 1;
		return ZM_OK;
	}
	for (i = 0; i < k; i++)
		out_w[i] /= sum;
	return ZM_OK;
}

enum zm_status zm_weights_from_scores_rows(const double *scores, size_t n,
                                           size_t k, double temperature,
                                           size_t top_k, double min_weight,
                                           double *out_w,
                                           struct zm_error *err)
{
	enum zm_status st;
	size_t i;

	for (i = 0; i < n; i++) {
		st = zm_weights_from_scores(scores + i * k, k, temperature,
		                            top_k, min_weight, out_w + i * k,
		                            err);
		if (st != ZM_OK) {
			if (err)
				zm_error_prefix(err, "row %zu: ", i);
			return st;
		}
	}
	return ZM_OK;
}
