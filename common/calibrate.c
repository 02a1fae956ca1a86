/*
 * The routing temperature fitted on rows of known source (calibrate.h).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calibrate.h"
#include "dataset.h"
#include "density.h"
#include "mem.h"

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

/* Reads up to max rows of the data documents of path into *x (grown;
 * *cap floats) after *n rows of width d. */
static enum zm_status read_rows(const char *path, size_t d, size_t max,
                                float **x, size_t *cap, size_t *n,
                                struct zm_error *err)
{
	struct zm_dataset_reader *r = NULL;
	struct zm_dataset_options o;
	struct zm_tensor t;
	struct zm_doc doc;
	enum zm_status st;
	size_t got = 0, m, need;
	bool eof = false;

	zm_doc_init(&doc);
	zm_tensor_init(&t);
	zm_dataset_options_init(&o);
	o.kind = ZM_DATASET_STREAM;
	o.path = path;
	if ((st = zm_dataset_open(&r, &o, err)))
		return st;
	while (got < max) {
		if ((st = zm_dataset_next(r, &doc, &eof, err)) || eof)
			break;
		if (zm_doc_meta(&doc, "zm.profile"))
			continue;
		zm_tensor_release(&t);
		if ((st = zm_data_features(&doc, &t, err))) {
			zm_error_prefix(err, "%s: ", path);
			break;
		}
		if ((size_t)t.shape[1] != d) {
			st = zm_error_set(err, ZM_ERR_DATA, "%s: %zu features, the "
			                  "models %zu", path, (size_t)t.shape[1], d);
			break;
		}
		m = (size_t)t.shape[0];
		if (m > max - got)
			m = max - got;
		need = (*n + got + m) * d;
		if (need > *cap) {
			float *g = zm_realloc(*x, need * 2 * sizeof(float));
			if (!g) {
				st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
				break;
			}
			*x = g;
			*cap = need * 2;
		}
		memcpy(*x + (*n + got) * d, t.data, m * d * sizeof(float));
		got += m;
	}
	*n += got;
	zm_tensor_release(&t);
	zm_doc_release(&doc);
	zm_dataset_close(r);
	return st;
}

enum zm_status zm_calibrate_slices(struct zm_zoo *zoo,
                                   const struct zm_assign_model *mp,
                                   size_t k, const struct zm_assignment *a,
                                   size_t max_rows,
                                   struct zm_calibration *c, bool *done,
                                   struct zm_error *err)
{
	struct zm_density *dens = NULL;
	const struct zm_density **dp = NULL;
	struct zm_density **tie = NULL;
	size_t *col = NULL, *src = NULL, i, s, n = 0, cap = 0, used = 0, d = 0;
	size_t sources = 0;

	*done = false;
	float *x = NULL;
	double *ll = NULL;
	enum zm_status st = ZM_OK;
	char v[64];

	if (!(dens = zm_calloc(k ? k : 1, sizeof(*dens))) ||
	    !(dp = zm_calloc(k ? k : 1, sizeof(*dp))) ||
	    !(tie = zm_calloc(k ? k : 1, sizeof(*tie))) ||
	    !(col = zm_calloc(k ? k : 1, sizeof(*col)))) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < k; i++) {
		zm_density_init(&dens[i]);
		col[i] = SIZE_MAX;
	}
	/* The models that are some slice's source: the ones predict routes
	 * between (a zoo's router or a base that no slice picks stays out). */
	for (i = 0; i < k; i++) {
		bool source = false;
		for (s = 0; s < a->n_slices && !source; s++)
			source = !a->slices[s].new_model &&
			         a->slices[s].n_models > 0 &&
			         strcmp(a->slices[s].models[0].model,
			                mp[i].name) == 0;
		if (!source || !mp[i].input || (d && mp[i].input->dim != d))
			continue;
		if ((st = zm_profile_density(&mp[i].prof, &dens[i], err))) {
			zm_error_prefix(err, "model '%s': ", mp[i].name);
			goto out;
		}
		d = mp[i].input->dim;
		col[i] = used;
		dp[used++] = &dens[i];
	}
	for (s = 0; s < a->n_slices; s++) {
		const struct zm_assignment_slice *sl = &a->slices[s];
		size_t before = n, m = SIZE_MAX, r;
		size_t *grown;
		for (i = 0; i < k && !sl->new_model && sl->n_models; i++)
			if (strcmp(mp[i].name, sl->models[0].model) == 0)
				m = i;
		if (m == SIZE_MAX || col[m] == SIZE_MAX || !sl->file)
			continue;
		if ((st = read_rows(sl->file, d, max_rows, &x,
		                    &cap, &n, err)))
			goto out;
		if (!(grown = zm_realloc(src, (n ? n : 1) * sizeof(*src)))) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
			goto out;
		}
		src = grown;
		for (r = before; r < n; r++)
			src[r] = col[m];
		sources++;
	}
	*done = false;
	if (used < 2 || sources < 2 || n == 0)
		goto out;
	if (!(ll = zm_malloc(n * used * sizeof(double)))) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		goto out;
	}
	/* The residual variance tied as predict ties it (density.h). */
	for (i = 0, s = 0; i < k; i++)
		if (col[i] != SIZE_MAX)
			tie[s++] = &dens[i];
	zm_density_tie_residual(tie, s);
	if ((st = zm_density_loglik(dp, used, x, n, ll, err)) ||
	    (st = zm_calibrate(ll, src, n, used, c, err)))
		goto out;
	c->sources = sources;
	for (i = 0; i < k; i++) {
		if (col[i] == SIZE_MAX)
			continue;
		snprintf(v, sizeof(v), "%.6g", c->temperature);
		if ((st = zm_kv_set(&zoo->models[i].metrics, "route_temperature",
		                    v, err)))
			goto out;
		snprintf(v, sizeof(v), "%.6g", c->accuracy);
		if ((st = zm_kv_set(&zoo->models[i].metrics, "route_accuracy", v,
		                    err)))
			goto out;
	}
	*done = true;
out:
	for (i = 0; dens && i < k; i++)
		zm_density_release(&dens[i]);
	free(dens);
	free(dp);
	free(tie);
	free(col);
	free(src);
	free(x);
	free(ll);
	return st;
}

