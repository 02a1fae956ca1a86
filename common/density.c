/*
 * Densities of a model's training data: the scatter accumulated with the
 * profile, the PPCA fitted from it, and per-row log-likelihoods (see
 * density.h).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "density.h"
#include "gemm.h"
#include "mem.h"
#include "random.h"

/* Subspace iterations of a fit, and directions iterated beyond q (the
 * convergence of direction k goes as (lambda_{r+1} / lambda_k)^iters). */
#define FIT_ITERS 40
#define FIT_OVERSAMPLE 8
/* Rows per block of zm_density_loglik. */
#define LL_BLOCK 256

static const double LOG_2PI = 1.8378770664093454836;

/* ---- scatter ---- */

void zm_scatter_init(struct zm_scatter *s)
{
	memset(s, 0, sizeof(*s));
}

void zm_scatter_release(struct zm_scatter *s)
{
	free(s->mean);
	free(s->m2);
	zm_scatter_init(s);
}

static enum zm_status scatter_alloc(struct zm_scatter *s, size_t d,
                                    struct zm_error *err)
{
	size_t dd;

	zm_scatter_init(s);
	if (!zm_size_mul(d, d, &dd) ||
	    !(s->mean = zm_calloc(d, sizeof(double))) ||
	    !(s->m2 = zm_calloc(dd, sizeof(double)))) {
		zm_scatter_release(s);
		return zm_error_set(err, ZM_ERR_NOMEM, "scatter: out of memory "
		                    "for %zu features", d);
	}
	s->d = d;
	return ZM_OK;
}

/* Chan et al.: dst's sums and src's (count nb, mean mb, cross-products
 * g, a d x d array of float or double given as a getter) combined. */
static void combine(struct zm_scatter *dst, double nb, const double *mb,
                    const float *gf, const double *gd)
{
	size_t d = dst->d, i, j;
	double na = dst->count, n = na + nb, f = na * nb / n;

	for (i = 0; i < d; i++) {
		double di = mb[i] - dst->mean[i];
		double *row = dst->m2 + i * d;
		for (j = 0; j < d; j++) {
			double dj = mb[j] - dst->mean[j];
			double g = gf ? (double)gf[i * d + j] : gd[i * d + j];
			row[j] += g + f * di * dj;
		}
	}
	for (i = 0; i < d; i++)
		dst->mean[i] += (mb[i] - dst->mean[i]) * nb / n;
	dst->count = n;
}

enum zm_status zm_scatter_add(struct zm_scatter *s, const float *x,
                              size_t n, size_t d, struct zm_error *err)
{
	float *xc = NULL, *g = NULL;
	double *mb = NULL;
	size_t nd, dd, r, j;
	enum zm_status st = ZM_OK;

	if (n == 0)
		return ZM_OK;
	if (s->d && s->d != d)
		return zm_error_set(err, ZM_ERR_DATA, "scatter of %zu features, "
		                    "rows of %zu", s->d, d);
	if (!zm_size_mul(n, d, &nd) || !zm_size_mul(d, d, &dd) ||
	    !(xc = zm_malloc(nd * sizeof(float))) ||
	    !(g = zm_malloc(dd * sizeof(float))) ||
	    !(mb = zm_calloc(d, sizeof(double)))) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "scatter: out of memory");
		goto out;
	}
	if (!s->d && (st = scatter_alloc(s, d, err)) != ZM_OK)
		goto out;
	for (r = 0; r < n; r++)
		for (j = 0; j < d; j++)
			mb[j] += x[r * d + j];
	for (j = 0; j < d; j++)
		mb[j] /= (double)n;
	for (r = 0; r < n; r++)
		for (j = 0; j < d; j++)
			xc[r * d + j] = (float)((double)x[r * d + j] - mb[j]);
	zm_gemm(true, false, d, d, n, 1.0f, xc, d, xc, d, 0.0f, g, d);
	combine(s, (double)n, mb, g, NULL);
out:
	free(xc);
	free(g);
	free(mb);
	return st;
}

enum zm_status zm_scatter_merge(struct zm_scatter *dst,
                                const struct zm_scatter *src,
                                struct zm_error *err)
{
	if (!src->d || src->count <= 0)
		return ZM_OK;
	if (!dst->d || dst->count <= 0)
		return zm_scatter_copy(dst, src, err);
	if (dst->d != src->d)
		return zm_error_set(err, ZM_ERR_DATA, "scatters of %zu and %zu "
		                    "features", dst->d, src->d);
	combine(dst, src->count, src->mean, NULL, src->m2);
	return ZM_OK;
}

enum zm_status zm_scatter_copy(struct zm_scatter *dst,
                               const struct zm_scatter *src,
                               struct zm_error *err)
{
	struct zm_scatter t;
	enum zm_status st;

	if (!src->d) {
		zm_scatter_release(dst);
		return ZM_OK;
	}
	if ((st = scatter_alloc(&t, src->d, err)) != ZM_OK)
		return st;
	t.count = src->count;
	memcpy(t.mean, src->mean, src->d * sizeof(double));
	memcpy(t.m2, src->m2, src->d * src->d * sizeof(double));
	zm_scatter_release(dst);
	*dst = t;
	return ZM_OK;
}

/* ---- symmetric eigenproblem ---- */

void zm_sym_eigen(double *a, size_t n, double *values, double *vectors)
{
	size_t i, j, p, q, sweep;

	for (i = 0; i < n; i++)
		for (j = 0; j < n; j++)
			vectors[i * n + j] = i == j;
	/* vectors holds V with A_original = V diag V'; columns of V are the
	 * eigenvectors until the transpose at the end. */
	for (sweep = 0; sweep < 100; sweep++) {
		double off = 0, total = 0;
		for (p = 0; p < n; p++)
			for (q = 0; q < n; q++) {
				double v = a[p * n + q] * a[p * n + q];
				total += v;
				if (p != q)
					off += v;
			}
		if (off <= 1e-30 * total || off == 0)
			break;
		for (p = 0; p + 1 < n; p++)
			for (q = p + 1; q < n; q++) {
				double apq = a[p * n + q], app, aqq, theta, t, c, s;
				size_t k;
				if (fabs(apq) < 1e-300)
					continue;
				app = a[p * n + p];
				aqq = a[q * n + q];
				theta = (aqq - app) / (2 * apq);
				t = (theta >= 0 ? 1.0 : -1.0) /
				    (fabs(theta) + sqrt(theta * theta + 1));
				c = 1 / sqrt(t * t + 1);
				s = t * c;
				for (k = 0; k < n; k++) {
					double akp = a[k * n + p], akq = a[k * n + q];
					a[k * n + p] = c * akp - s * akq;
					a[k * n + q] = s * akp + c * akq;
				}
				for (k = 0; k < n; k++) {
					double apk = a[p * n + k], aqk = a[q * n + k];
					a[p * n + k] = c * apk - s * aqk;
					a[q * n + k] = s * apk + c * aqk;
				}
				for (k = 0; k < n; k++) {
					double vkp = vectors[k * n + p];
					double vkq = vectors[k * n + q];
					vectors[k * n + p] = c * vkp - s * vkq;
					vectors[k * n + q] = s * vkp + c * vkq;
				}
			}
	}
	for (i = 0; i < n; i++)
		values[i] = a[i * n + i];
	/* Transpose to rows and sort by decreasing value (selection sort:
	 * n is small). */
	for (i = 0; i < n; i++)
		for (j = i + 1; j < n; j++) {
			double t = vectors[i * n + j];
			vectors[i * n + j] = vectors[j * n + i];
			vectors[j * n + i] = t;
		}
	for (i = 0; i < n; i++) {
		size_t best = i;
		for (j = i + 1; j < n; j++)
			if (values[j] > values[best])
				best = j;
		if (best != i) {
			double t = values[i];
			values[i] = values[best];
			values[best] = t;
			for (j = 0; j < n; j++) {
				t = vectors[i * n + j];
				vectors[i * n + j] = vectors[best * n + j];
				vectors[best * n + j] = t;
			}
		}
	}
}

/* ---- densities ---- */

void zm_density_init(struct zm_density *m)
{
	memset(m, 0, sizeof(*m));
}

void zm_density_release(struct zm_density *m)
{
	size_t c;

	for (c = 0; c < m->n_comp; c++)
		zm_density_release(&m->comp[c]);
	free(m->comp);
	free(m->logw);
	free(m->mean);
	free(m->pc);
	free(m->pcvar);
	free(m->ivar);
	free(m->var);
	free(m->coef);
	zm_density_init(m);
}

static enum zm_status density_alloc(struct zm_density *m, size_t d, size_t q,
                                    struct zm_error *err)
{
	size_t qd;

	zm_density_release(m);
	if (!zm_size_mul(q, d, &qd) ||
	    !(m->mean = zm_calloc(d, sizeof(float))) ||
	    !(m->ivar = zm_calloc(d, sizeof(float))) ||
	    !(m->var = zm_calloc(d, sizeof(double))) ||
	    (q && (!(m->pc = zm_calloc(qd, sizeof(float))) ||
	           !(m->pcvar = zm_calloc(q, sizeof(double))) ||
	           !(m->coef = zm_calloc(q, sizeof(double)))))) {
		zm_density_release(m);
		return zm_error_set(err, ZM_ERR_NOMEM, "density: out of memory");
	}
	m->d = d;
	m->q = q;
	return ZM_OK;
}

static double var_floor(double total_var, size_t d)
{
	double f = ZM_DENSITY_FLOOR_REL * total_var / (double)d;
	return f > 1e-12 ? f : 1e-12;
}

/* Sets ivar, var, coef and logdet from pcvar and s2 (ppca) or var
 * (diag), flooring at floor. */
static void finish(struct zm_density *m, double floor)
{
	size_t j, k;

	m->logdet = 0;
	if (m->q) {
		if (!(m->s2 >= floor))
			m->s2 = floor;
		for (k = 0; k < m->q; k++) {
			if (!(m->pcvar[k] >= m->s2))
				m->pcvar[k] = m->s2;
			m->coef[k] = 1 / m->s2 - 1 / m->pcvar[k];
			m->logdet += log(m->pcvar[k]);
		}
		m->logdet += (double)(m->d - m->q) * log(m->s2);
		for (j = 0; j < m->d; j++) {
			m->var[j] = m->s2;
			m->ivar[j] = (float)(1 / m->s2);
		}
		return;
	}
	for (j = 0; j < m->d; j++) {
		if (!(m->var[j] >= floor))
			m->var[j] = floor;
		m->ivar[j] = (float)(1 / m->var[j]);
		m->logdet += log(m->var[j]);
	}
}

/* Ties the k densities' s2 to their geometric mean (see
 * zm_density_tie_residual); a no-op unless all are PPCAs of one width. */
static void tie(struct zm_density *const *m, size_t k)
{
	double ls = 0, s2;
	size_t i, j, c;

	if (k < 2)
		return;
	for (i = 0; i < k; i++) {
		if (!m[i]->q || m[i]->d != m[0]->d || !(m[i]->s2 > 0))
			return;
		ls += log(m[i]->s2);
	}
	s2 = exp(ls / (double)k);
	for (i = 0; i < k; i++) {
		struct zm_density *d = m[i];
		d->s2 = s2;
		d->logdet = (double)(d->d - d->q) * log(s2);
		for (c = 0; c < d->q; c++) {
			d->coef[c] = 1 / s2 - 1 / d->pcvar[c];
			d->logdet += log(d->pcvar[c]);
		}
		for (j = 0; j < d->d; j++) {
			d->var[j] = s2;
			d->ivar[j] = (float)(1 / s2);
		}
	}
}

void zm_density_tie_residual(struct zm_density *const *m, size_t k)
{
	struct zm_density **leaf;
	size_t i, c, n = 0, mixtures = 0;

	if (k < 2)
		return;
	for (i = 0; i < k; i++) {
		n += m[i]->n_comp ? m[i]->n_comp : 1;
		mixtures += m[i]->n_comp > 0;
	}
	if (!mixtures) {
		tie(m, k);
		return;
	}
	/* Without memory for the list nothing is tied: each density keeps
	 * its own residual (a worse scale, not a wrong result). */
	if (!(leaf = malloc(n * sizeof(*leaf))))
		return;
	for (n = 0, i = 0; i < k; i++) {
		if (!m[i]->n_comp)
			leaf[n++] = m[i];
		for (c = 0; c < m[i]->n_comp; c++)
			leaf[n++] = &m[i]->comp[c];
	}
	tie(leaf, n);
	/* The mixtures' single Gaussians (zm_density_kl) among themselves. */
	for (n = 0, i = 0; i < k; i++)
		if (m[i]->n_comp)
			leaf[n++] = m[i];
	tie(leaf, n);
	free(leaf);
}

enum zm_status zm_density_set_mixture(struct zm_density *m,
                                      struct zm_density *comp, size_t n,
                                      struct zm_error *err)
{
	double total = 0, *logw = NULL;
	enum zm_status st = ZM_OK;
	size_t c;

	ZM_ASSERT(n >= 2 && !m->n_comp);
	for (c = 0; c < n && st == ZM_OK; c++) {
		if (comp[c].d != m->d || comp[c].n_comp)
			st = zm_error_set(err, ZM_ERR_DATA, "component %zu: %zu "
			                  "features, expected %zu", c, comp[c].d,
			                  m->d);
		else if (!(comp[c].count > 0) || !isfinite(comp[c].count))
			st = zm_error_set(err, ZM_ERR_DATA, "component %zu: %g "
			                  "rows", c, comp[c].count);
		else
			total += comp[c].count;
	}
	if (st == ZM_OK && !(logw = zm_malloc(n * sizeof(double))))
		st = zm_error_set(err, ZM_ERR_NOMEM, "density: out of memory");
	if (st != ZM_OK) {
		for (c = 0; c < n; c++)
			zm_density_release(&comp[c]);
		free(comp);
		return st;
	}
	for (c = 0; c < n; c++)
		logw[c] = log(comp[c].count / total);
	m->comp = comp;
	m->logw = logw;
	m->n_comp = n;
	return ZM_OK;
}

enum zm_status zm_density_diag(struct zm_density *m, const double *mean,
                               const double *var, size_t d, double count,
                               struct zm_error *err)
{
	double total = 0;
	enum zm_status st;
	size_t j;

	ZM_ASSERT(d > 0);
	if ((st = density_alloc(m, d, 0, err)) != ZM_OK)
		return st;
	m->count = count;
	for (j = 0; j < d; j++) {
		m->mean[j] = (float)mean[j];
		m->var[j] = var[j];
		total += var[j] > 0 ? var[j] : 0;
	}
	finish(m, var_floor(total, d));
	return ZM_OK;
}

/* Orthonormalises the r rows of v [r, d] in place (modified Gram-Schmidt
 * twice in double); a row that vanishes is replaced by a unit vector
 * orthogonal to the others where one is found. */
/* Subtracts from vi its projection on the first i rows of v (twice:
 * once is not enough in floating point) and returns what is left's norm. */
static double project_out(double *vi, const double *v, size_t i, size_t d)
{
	size_t k, j, pass;
	double nrm = 0;

	for (pass = 0; pass < 2; pass++)
		for (k = 0; k < i; k++) {
			const double *vk = v + k * d;
			double dot = 0;
			for (j = 0; j < d; j++)
				dot += vi[j] * vk[j];
			for (j = 0; j < d; j++)
				vi[j] -= dot * vk[j];
		}
	for (j = 0; j < d; j++)
		nrm += vi[j] * vi[j];
	return sqrt(nrm);
}

/*
 * Gram-Schmidt on the r rows of v.  A row that the earlier ones (nearly)
 * span -- the power iteration sends every start into the span of the
 * data, so a covariance of rank below r (constant columns) makes such
 * rows -- is replaced by the coordinate vector with the largest part
 * outside that span: what is left of a row cancelled down to rounding
 * is noise, and normalising it gives directions that are not orthogonal.
 */
static void orthonormalise(double *v, size_t r, size_t d)
{
	size_t i, j, t;

	for (i = 0; i < r; i++) {
		double *vi = v + i * d, before = 0, nrm;
		for (j = 0; j < d; j++)
			before += vi[j] * vi[j];
		nrm = project_out(vi, v, i, d);
		if (!(nrm > 1e-6 * sqrt(before)) || !(nrm > 1e-150)) {
			/* Some coordinate vector keeps a norm of at least
			 * sqrt((d - i) / d) outside i orthonormal rows. */
			size_t best = 0;
			double best_nrm = -1;
			for (t = 0; t < d; t++) {
				double left = 1;
				size_t k;
				for (k = 0; k < i; k++)
					left -= v[k * d + t] * v[k * d + t];
				if (left > best_nrm) {
					best_nrm = left;
					best = t;
				}
			}
			for (j = 0; j < d; j++)
				vi[j] = j == best;
			nrm = project_out(vi, v, i, d);
		}
		for (j = 0; j < d; j++)
			vi[j] /= nrm;
	}
}

enum zm_status zm_density_fit(struct zm_density *m,
                              const struct zm_scatter *s, size_t max_rank,
                              struct zm_error *err)
{
	size_t d = s->d, q, r, dd, rd, i, j, it;
	double total = 0, floor, n = s->count, captured = 0;
	float *cf = NULL, *vf = NULL, *yf = NULL;
	double *v = NULL, *b = NULL, *ev = NULL, *evec = NULL, *diag = NULL;
	struct zm_rng rng;
	enum zm_status st = ZM_OK;

	ZM_ASSERT(d > 0 && n > 0);
	for (j = 0; j < d; j++)
		total += s->m2[j * d + j] / n;
	floor = var_floor(total, d);
	q = max_rank < d - 1 ? max_rank : d - 1;
	if (n < 3)
		q = 0;
	else if ((size_t)((n - 1) / 2) < q)
		q = (size_t)((n - 1) / 2);
	if (q == 0) {
		if (!(diag = zm_malloc(d * sizeof(double))))
			return zm_error_set(err, ZM_ERR_NOMEM, "density: out of "
			                    "memory");
		for (j = 0; j < d; j++)
			diag[j] = s->m2[j * d + j] / n;
		st = zm_density_diag(m, s->mean, diag, d, n, err);
		free(diag);
		return st;
	}
	r = q + FIT_OVERSAMPLE < d ? q + FIT_OVERSAMPLE : d;
	dd = d * d;
	rd = r * d;
	cf = zm_malloc(dd * sizeof(float));
	vf = zm_malloc(rd * sizeof(float));
	yf = zm_malloc(rd * sizeof(float));
	v = zm_malloc(rd * sizeof(double));
	b = zm_malloc(r * r * sizeof(double));
	ev = zm_malloc(r * sizeof(double));
	evec = zm_malloc(r * r * sizeof(double));
	if (!cf || !vf || !yf || !v || !b || !ev || !evec) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "density: out of memory for "
		                  "%zu features", d);
		goto out;
	}
	if ((st = density_alloc(m, d, q, err)) != ZM_OK)
		goto out;
	for (i = 0; i < dd; i++)
		cf[i] = (float)(s->m2[i] / n);
	zm_rng_seed(&rng, 0x5eed);
	for (i = 0; i < rd; i++)
		v[i] = zm_rng_normal(&rng);
	orthonormalise(v, r, d);
	for (it = 0; it < FIT_ITERS; it++) {
		for (i = 0; i < rd; i++)
			vf[i] = (float)v[i];
		/* Y' = V C (C symmetric): the r rows of V times C. */
		zm_gemm(false, false, r, d, d, 1.0f, vf, d, cf, d, 0.0f, yf, d);
		for (i = 0; i < rd; i++)
			v[i] = yf[i];
		orthonormalise(v, r, d);
	}
	/* Rayleigh-Ritz: B = V C V', its eigenvectors rotate V. */
	for (i = 0; i < rd; i++)
		vf[i] = (float)v[i];
	zm_gemm(false, false, r, d, d, 1.0f, vf, d, cf, d, 0.0f, yf, d);
	for (i = 0; i < r; i++)
		for (j = 0; j < r; j++) {
			double acc = 0;
			size_t t;
			for (t = 0; t < d; t++)
				acc += (double)yf[i * d + t] * v[j * d + t];
			b[i * r + j] = acc;
		}
	for (i = 0; i < r; i++)
		for (j = i + 1; j < r; j++)
			b[i * r + j] = b[j * r + i] =
				0.5 * (b[i * r + j] + b[j * r + i]);
	zm_sym_eigen(b, r, ev, evec);
	for (i = 0; i < q; i++) {
		double nrm = 0;
		for (j = 0; j < d; j++) {
			double acc = 0;
			size_t t;
			for (t = 0; t < r; t++)
				acc += evec[i * r + t] * v[t * d + j];
			yf[j] = (float)acc;
			nrm += acc * acc;
		}
		nrm = sqrt(nrm);
		for (j = 0; j < d; j++)
			m->pc[i * d + j] = (float)(yf[j] / nrm);
		m->pcvar[i] = ev[i];
		captured += ev[i] > 0 ? ev[i] : 0;
	}
	for (j = 0; j < d; j++)
		m->mean[j] = (float)s->mean[j];
	m->count = n;
	m->s2 = (total - captured) / (double)(d - q);
	finish(m, floor);
out:
	free(cf);
	free(vf);
	free(yf);
	free(v);
	free(b);
	free(ev);
	free(evec);
	return st;
}

enum zm_status zm_density_ppca(struct zm_density *m, const float *mean,
                               const float *pc, const double *pcvar,
                               size_t q, size_t d, double s2, double count,
                               struct zm_error *err)
{
	double total;
	enum zm_status st;
	size_t i, k, j;

	ZM_ASSERT(d > 0 && q > 0 && q < d);
	if (!(s2 > 0) || !isfinite(s2))
		return zm_error_set(err, ZM_ERR_DATA, "residual variance %g is "
		                    "not a positive number", s2);
	if ((st = density_alloc(m, d, q, err)) != ZM_OK)
		return st;
	m->count = count;
	memcpy(m->mean, mean, d * sizeof(float));
	total = s2 * (double)(d - q);
	for (k = 0; k < q; k++) {
		double nrm = 0;
		if (!(pcvar[k] >= 0) || !isfinite(pcvar[k])) {
			zm_density_release(m);
			return zm_error_set(err, ZM_ERR_DATA, "direction %zu: "
			                    "variance %g is not a non-negative "
			                    "number", k, pcvar[k]);
		}
		for (j = 0; j < d; j++)
			nrm += (double)pc[k * d + j] * pc[k * d + j];
		if (!(fabs(nrm - 1) < 1e-3)) {
			zm_density_release(m);
			return zm_error_set(err, ZM_ERR_DATA, "direction %zu has "
			                    "norm %g, not 1", k, sqrt(nrm));
		}
		nrm = sqrt(nrm);
		for (j = 0; j < d; j++)
			m->pc[k * d + j] = (float)(pc[k * d + j] / nrm);
		m->pcvar[k] = pcvar[k];
		total += pcvar[k];
	}
	for (i = 0; i < q; i++)
		for (k = 0; k < i; k++) {
			double dot = 0;
			for (j = 0; j < d; j++)
				dot += (double)m->pc[i * d + j] * m->pc[k * d + j];
			if (!(fabs(dot) < 1e-3)) {
				zm_density_release(m);
				return zm_error_set(err, ZM_ERR_DATA, "directions %zu "
				                    "and %zu are not orthogonal (dot "
				                    "%g)", k, i, dot);
			}
		}
	m->s2 = s2;
	finish(m, var_floor(total, d));
	return ZM_OK;
}

void zm_density_scatter(const struct zm_density *m, double count,
                        double *m2)
{
	size_t d = m->d, i, j, k;

	for (i = 0; i < d; i++)
		m2[i * d + i] += count * m->var[i];
	for (k = 0; k < m->q; k++) {
		const float *u = m->pc + k * d;
		double g = count * (m->pcvar[k] - m->s2);
		for (i = 0; i < d; i++)
			for (j = 0; j < d; j++)
				m2[i * d + j] += g * (double)u[i] * u[j];
	}
}

/* zm_density_loglik for densities without components. */
static enum zm_status loglik_plain(const struct zm_density *const *m,
                                   size_t k, const float *x, size_t n,
                                   double *out, struct zm_error *err)
{
	size_t d, q_max = 0, i, r0, r, j, c, bn;
	float *xc = NULL, *p = NULL;

	if (n == 0 || k == 0)
		return ZM_OK;
	d = m[0]->d;
	for (i = 0; i < k; i++) {
		ZM_ASSERT(m[i]->d == d);
		if (m[i]->q > q_max)
			q_max = m[i]->q;
	}
	bn = n < LL_BLOCK ? n : LL_BLOCK;
	xc = zm_malloc(bn * d * sizeof(float));
	p = zm_malloc((q_max ? bn * q_max : 1) * sizeof(float));
	if (!xc || !p) {
		free(xc);
		free(p);
		return zm_error_set(err, ZM_ERR_NOMEM, "density: out of memory");
	}
	for (r0 = 0; r0 < n; r0 += bn) {
		size_t rows = n - r0 < bn ? n - r0 : bn;
		for (i = 0; i < k; i++) {
			const struct zm_density *mi = m[i];
			double base = -0.5 * ((double)d * LOG_2PI + mi->logdet);
			for (r = 0; r < rows; r++) {
				const float *xr = x + (r0 + r) * d;
				float *xo = xc + r * d;
				double quad = 0;
				/* F32 partial sums of 64 features (vectorised),
				 * added in double. */
				for (j = 0; j < d; j += 64) {
					size_t e = j + 64 < d ? j + 64 : d, t;
					float acc = 0;
					for (t = j; t < e; t++) {
						float v = xr[t] - mi->mean[t];
						xo[t] = v;
						acc += v * v * mi->ivar[t];
					}
					quad += acc;
				}
				out[(r0 + r) * k + i] = quad;
			}
			if (mi->q) {
				zm_gemm(false, true, rows, mi->q, d, 1.0f, xc, d,
				        mi->pc, d, 0.0f, p, mi->q);
				for (r = 0; r < rows; r++) {
					double s = 0;
					for (c = 0; c < mi->q; c++) {
						double pc = p[r * mi->q + c];
						s += pc * pc * mi->coef[c];
					}
					out[(r0 + r) * k + i] -= s;
				}
			}
			for (r = 0; r < rows; r++) {
				double *o = &out[(r0 + r) * k + i];
				*o = base - 0.5 * (*o > 0 ? *o : 0);
			}
		}
	}
	free(xc);
	free(p);
	return ZM_OK;
}

/*
 * The log-likelihoods of the n rows of x under the mixture m (every
 * component a PPCA) into out[r * stride].  One GEMM per block of rows
 * against all components' means and directions stacked: with x' = x - mu
 * (mu the mixture's mean, so that the sums stay small),
 *   |x - mu_c|^2 = |x'|^2 - 2 x'.mu'_c + |mu'_c|^2,  mu'_c = mu_c - mu,
 *   p_ck = u_ck . x' - u_ck . mu'_c,
 * so that a row costs one product with the stack, not one pass over
 * its features per component.
 */
static enum zm_status loglik_mixture(const struct zm_density *m,
                                     const float *x, size_t n, double *out,
                                     size_t stride, struct zm_error *err)
{
	size_t d = m->d, nc = m->n_comp, S = nc, c, k, j, r0, r, bn, off;
	size_t qoff[ZM_DENSITY_MAX_COMPONENTS];
	double mu2[ZM_DENSITY_MAX_COMPONENTS], *umu = NULL, *x2 = NULL;
	float *stack = NULL, *xc = NULL, *g = NULL;
	enum zm_status st = ZM_OK;

	for (c = 0; c < nc; c++) {
		qoff[c] = S;
		S += m->comp[c].q;
	}
	bn = n < LL_BLOCK ? n : LL_BLOCK;
	stack = zm_malloc(S * d * sizeof(float));
	umu = zm_malloc(S * sizeof(double));
	x2 = zm_malloc(bn * sizeof(double));
	xc = zm_malloc(bn * d * sizeof(float));
	g = zm_malloc(bn * S * sizeof(float));
	if (!stack || !umu || !x2 || !xc || !g) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "density: out of memory");
		goto out;
	}
	for (c = 0; c < nc; c++) {
		const struct zm_density *mc = &m->comp[c];
		float *row = stack + c * d;
		mu2[c] = 0;
		for (j = 0; j < d; j++) {
			row[j] = mc->mean[j] - m->mean[j];
			mu2[c] += (double)row[j] * row[j];
		}
		memcpy(stack + qoff[c] * d, mc->pc, mc->q * d * sizeof(float));
		for (k = 0; k < mc->q; k++) {
			double a = 0;
			for (j = 0; j < d; j++)
				a += (double)mc->pc[k * d + j] * row[j];
			umu[qoff[c] + k] = a;
		}
	}
	for (r0 = 0; r0 < n; r0 += bn) {
		size_t rows = n - r0 < bn ? n - r0 : bn;
		for (r = 0; r < rows; r++) {
			const float *xr = x + (r0 + r) * d;
			float *xo = xc + r * d;
			double a = 0;
			for (j = 0; j < d; j++) {
				xo[j] = xr[j] - m->mean[j];
				a += (double)xo[j] * xo[j];
			}
			x2[r] = a;
		}
		zm_gemm(false, true, rows, S, d, 1.0f, xc, d, stack, d, 0.0f, g,
		        S);
		for (r = 0; r < rows; r++) {
			const float *gr = g + r * S;
			double l[ZM_DENSITY_MAX_COMPONENTS], top = -INFINITY, sum = 0;
			for (c = 0; c < nc; c++) {
				const struct zm_density *mc = &m->comp[c];
				double q = (x2[r] - 2.0 * gr[c] + mu2[c]) / mc->s2;
				for (k = 0, off = qoff[c]; k < mc->q; k++, off++) {
					double p = gr[off] - umu[off];
					q -= p * p * mc->coef[k];
				}
				l[c] = m->logw[c] - 0.5 * ((double)d * LOG_2PI +
				                          mc->logdet +
				                          (q > 0 ? q : 0));
				if (l[c] > top)
					top = l[c];
			}
			for (c = 0; c < nc; c++)
				sum += exp(l[c] - top);
			out[(r0 + r) * stride] = top + log(sum);
		}
	}
out:
	free(stack);
	free(umu);
	free(x2);
	free(xc);
	free(g);
	return st;
}

enum zm_status zm_density_loglik(const struct zm_density *const *m,
                                 size_t k, const float *x, size_t n,
                                 double *out, struct zm_error *err)
{
	const struct zm_density **plain = NULL;
	size_t i, c, r, np = 0, w, *idx = NULL;
	double *lc = NULL;
	enum zm_status st = ZM_OK;

	if (n == 0 || k == 0)
		return ZM_OK;
	for (i = 0; i < k; i++)
		if (m[i]->n_comp)
			break;
	if (i == k)
		return loglik_plain(m, k, x, n, out, err);
	w = k > ZM_DENSITY_MAX_COMPONENTS ? k : ZM_DENSITY_MAX_COMPONENTS;
	plain = zm_malloc(k * sizeof(*plain));
	idx = zm_malloc(k * sizeof(*idx));
	lc = zm_malloc(n * w * sizeof(double));
	if (!plain || !idx || !lc) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "density: out of memory");
		goto out;
	}
	for (i = 0; i < k && st == ZM_OK; i++) {
		const struct zm_density *mi = m[i], *cp[ZM_DENSITY_MAX_COMPONENTS];
		size_t nc = mi->n_comp;
		bool fast = nc > 0;
		if (!nc) {
			/* Scored below, together. */
			plain[np] = mi;
			idx[np++] = i;
			continue;
		}
		for (c = 0; c < nc; c++)
			if (!mi->comp[c].q)
				fast = false;
		if (fast) {
			st = loglik_mixture(mi, x, n, out + i, k, err);
			continue;
		}
		/* A diagonal component: component by component. */
		for (c = 0; c < nc; c++)
			cp[c] = &mi->comp[c];
		if ((st = loglik_plain(cp, nc, x, n, lc, err)))
			break;
		for (r = 0; r < n; r++) {
			const double *l = lc + r * nc;
			double top = -INFINITY, sum = 0;
			for (c = 0; c < nc; c++)
				if (l[c] + mi->logw[c] > top)
					top = l[c] + mi->logw[c];
			for (c = 0; c < nc; c++)
				sum += exp(l[c] + mi->logw[c] - top);
			out[r * k + i] = top + log(sum);
		}
	}
	if (st == ZM_OK && np &&
	    !(st = loglik_plain(plain, np, x, n, lc, err)))
		for (r = 0; r < n; r++)
			for (c = 0; c < np; c++)
				out[r * k + idx[c]] = lc[r * np + c];
out:
	free(plain);
	free(idx);
	free(lc);
	return st;
}

/* v' C_b^{-1} w for the density b. */
static double inv_form(const struct zm_density *b, const double *v,
                       const double *w)
{
	size_t d = b->d, j, k;
	double s = 0;

	for (j = 0; j < d; j++)
		s += v[j] * w[j] * b->ivar[j];
	for (k = 0; k < b->q; k++) {
		const float *u = b->pc + k * d;
		double uv = 0, uw = 0;
		for (j = 0; j < d; j++) {
			uv += u[j] * v[j];
			uw += u[j] * w[j];
		}
		s -= b->coef[k] * uv * uw;
	}
	return s;
}

double zm_density_kl(const struct zm_density *a, const struct zm_density *b)
{
	size_t d = a->d, j, k, m;
	double tr = 0, maha, *delta;
	float *cross = NULL;

	ZM_ASSERT(a->d == b->d);
	delta = malloc(d * sizeof(double));
	if (a->q && b->q)
		cross = malloc(a->q * b->q * sizeof(float));
	if (!delta || (a->q && b->q && !cross)) {
		free(delta);
		free(cross);
		return NAN;
	}
	/* cross[m, k] = u_am . u_bk, one GEMM. */
	if (cross)
		zm_gemm(false, true, a->q, b->q, d, 1.0f, a->pc, d, b->pc, d, 0.0f,
		        cross, b->q);
	/* tr(C_b^-1 C_a), C_a = diag(var_a) + sum_m g_m u_m u_m'. */
	for (j = 0; j < d; j++) {
		double dj = (double)b->ivar[j];
		for (k = 0; k < b->q; k++) {
			double ukj = b->pc[k * d + j];
			dj -= b->coef[k] * ukj * ukj;
		}
		tr += a->var[j] * dj;
	}
	for (m = 0; m < a->q; m++) {
		const float *u = a->pc + m * d;
		double f = 0;
		for (j = 0; j < d; j++)
			f += (double)u[j] * u[j] * b->ivar[j];
		for (k = 0; k < b->q; k++) {
			double c = cross[m * b->q + k];
			f -= b->coef[k] * c * c;
		}
		tr += (a->pcvar[m] - a->s2) * f;
	}
	for (j = 0; j < d; j++)
		delta[j] = (double)a->mean[j] - b->mean[j];
	maha = inv_form(b, delta, delta);
	free(delta);
	free(cross);
	return 0.5 * (tr + maha - (double)d + b->logdet - a->logdet);
}
