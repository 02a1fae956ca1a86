/*
 * Profiles: streaming per-feature mean and variance (Chan et al.'s
 * parallel combination of per-batch two-pass statistics), class
 * histograms, and the input's scatter and mixture components (k-means
 * clusters).  Their storage as "profile.*" tensors in a document is in
 * profdoc.c.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "mem.h"
#include "profile.h"
#include "profpriv.h"
#include "random.h"
#include "stream.h"
#include "tensor.h"


void zm_profile_init(struct zm_profile *p)
{
	p->entries = NULL;
	p->n_entries = 0;
	p->labels = NULL;
	p->n_classes = 0;
	zm_scatter_init(&p->scatter);
	p->n_comp = 0;
	p->comp = NULL;
	p->centres = NULL;
}

void zm_prof_comps_free(struct zm_scatter *c, size_t n)
{
	size_t i;

	for (i = 0; c && i < n; i++)
		zm_scatter_release(&c[i]);
	free(c);
}

void zm_prof_comps_release(struct zm_profile *p)
{
	zm_prof_comps_free(p->comp, p->n_comp);
	free(p->centres);
	p->comp = NULL;
	p->centres = NULL;
	p->n_comp = 0;
}

void zm_prof_entry_release(struct zm_profile_entry *e)
{
	free(e->name);
	free(e->mean);
	memset(e, 0, sizeof(*e));
}

void zm_profile_release(struct zm_profile *p)
{
	size_t i;

	for (i = 0; i < p->n_entries; i++)
		zm_prof_entry_release(&p->entries[i]);
	free(p->entries);
	free(p->labels);
	zm_scatter_release(&p->scatter);
	zm_prof_comps_release(p);
	zm_profile_init(p);
}

struct zm_profile_entry *zm_profile_find(const struct zm_profile *p,
                                         const char *name)
{
	size_t i;

	for (i = 0; i < p->n_entries; i++)
		if (strcmp(p->entries[i].name, name) == 0)
			return &p->entries[i];
	return NULL;
}

double zm_profile_count(const struct zm_profile *p)
{
	const struct zm_profile_entry *in = zm_profile_find(p, ZM_PROFILE_INPUT);
	double best = 0, total = 0;
	size_t i;

	if (in)
		return in->count;
	for (i = 0; i < p->n_entries; i++)
		if (p->entries[i].count > best)
			best = p->entries[i].count;
	if (p->n_entries > 0)
		return best;
	for (i = 0; i < p->n_classes; i++)
		total += (double)p->labels[i];
	return total;
}

/* Makes e an empty entry of width dim with a copy of name. */
enum zm_status zm_prof_entry_alloc(struct zm_profile_entry *e,
                                   const char *name, size_t dim,
                                   struct zm_error *err)
{
	size_t n;

	memset(e, 0, sizeof(*e));
	if (!zm_size_mul(dim, 4 * sizeof(double), &n))
		return zm_error_set(err, ZM_ERR_NOMEM,
		                    "profile entry %s: %zu features is too many",
		                    name, dim);
	e->name = zm_strdup(name);
	e->mean = zm_calloc(dim, 4 * sizeof(double));
	if (!e->name || !e->mean) {
		zm_prof_entry_release(e);
		return zm_error_set(err, ZM_ERR_NOMEM,
		                    "profile entry %s: out of memory", name);
	}
	e->dim = dim;
	e->m2 = e->mean + dim;
	e->scratch = e->m2 + dim;
	return ZM_OK;
}

static enum zm_status entry_copy(struct zm_profile_entry *dst,
                                 const struct zm_profile_entry *src,
                                 struct zm_error *err)
{
	enum zm_status st = zm_prof_entry_alloc(dst, src->name, src->dim, err);

	if (st != ZM_OK)
		return st;
	dst->count = src->count;
	memcpy(dst->mean, src->mean, src->dim * sizeof(double));
	memcpy(dst->m2, src->m2, src->dim * sizeof(double));
	return ZM_OK;
}

/*
 * Folds (nb, mb, m2b) into e: the pairwise formula of Chan, Golub and
 * LeVeque, exact in exact arithmetic and stable because it only combines
 * deviations, never raw sums of squares.
 */
static void entry_combine(struct zm_profile_entry *e, double nb,
                          const double *mb, const double *m2b)
{
	double na = e->count, n = na + nb;
	size_t j;

	if (nb <= 0)
		return;
	for (j = 0; j < e->dim; j++) {
		double delta = mb[j] - e->mean[j];
		e->mean[j] += delta * (nb / n);
		e->m2[j] += m2b[j] + delta * delta * (na * nb / n);
	}
	e->count = n;
}

/* Grows the entries array to hold at least want entries. */
enum zm_status zm_prof_reserve_entries(struct zm_profile *p, size_t want,
                                       struct zm_error *err)
{
	struct zm_profile_entry *grown;
	size_t bytes;

	if (want <= p->n_entries)
		return ZM_OK;
	if (!zm_size_mul(want, sizeof(*grown), &bytes) ||
	    !(grown = zm_realloc(p->entries, bytes)))
		return zm_error_set(err, ZM_ERR_NOMEM, "profile: out of memory");
	p->entries = grown;
	return ZM_OK;
}

/* Whether p's scatter describes the same rows as its input entry (an
 * empty scatter does for a profile without input rows). */
bool zm_prof_scatter_valid(const struct zm_profile *p)
{
	const struct zm_profile_entry *in = zm_profile_find(p, ZM_PROFILE_INPUT);

	if (!in || in->count == 0)
		return p->scatter.d == 0 || p->scatter.count == 0;
	return p->scatter.d == in->dim && p->scatter.count == in->count;
}

/* Two-pass mean and M2 of one batch into e->scratch (mean, then M2);
 * ZM_ERR_DATA naming the first non-finite element. */
static enum zm_status batch_moments(struct zm_profile_entry *e,
                                    const float *x, size_t n, size_t d,
                                    struct zm_error *err)
{
	double *mb = e->scratch, *m2b = e->scratch + d;
	size_t i, j;

	for (j = 0; j < d; j++)
		mb[j] = m2b[j] = 0;
	for (i = 0; i < n; i++) {
		const float *row = x + i * d;
		for (j = 0; j < d; j++)
			mb[j] += row[j];
	}
	/* A double sum of finite floats cannot overflow, so a non-finite
	 * sum means a non-finite element; look for it only then. */
	for (j = 0; j < d; j++) {
		if (!isfinite(mb[j])) {
			for (i = 0; i < n; i++)
				if (!isfinite(x[i * d + j]))
					break;
			return zm_error_set(err, ZM_ERR_DATA,
			                    "profile entry %s: row %zu column %zu "
			                    "is not finite", e->name, i, j);
		}
		mb[j] /= (double)n;
	}
	for (i = 0; i < n; i++) {
		const float *row = x + i * d;
		for (j = 0; j < d; j++) {
			double dev = row[j] - mb[j];
			m2b[j] += dev * dev;
		}
	}
	return ZM_OK;
}


/* ---- components of the input (a mixture density) ---- */

/* Rows a component needs to be written (its PPCA then has every one of
 * ZM_DENSITY_COMPONENT_RANK directions); smaller ones are merged. */
#define COMP_MIN_ROWS (2 * ZM_DENSITY_COMPONENT_RANK + 1)
/* Rows per cluster a clustering aims at, at least. */
#define CLUSTER_ROWS 128
#define KMEANS_ITERS 25

/* Whether p's components describe the rows of its (valid) input scatter:
 * their counts add up to the scatter's. */
static bool comps_valid(const struct zm_profile *p)
{
	double total = 0;
	size_t c;

	if (p->n_comp < 2 || !p->scatter.d || !zm_prof_scatter_valid(p))
		return false;
	for (c = 0; c < p->n_comp; c++) {
		if (p->comp[c].d && p->comp[c].d != p->scatter.d)
			return false;
		total += p->comp[c].count;
	}
	return total == p->scatter.count;
}

/* a[r] = the nearest of the k centres c [k, d] to row r of x [n, d]
 * (squared Euclidean distance; |x|^2 is the same for every centre, so
 * |c|^2 - 2 x.c decides); ties to the lower index. */
static enum zm_status nearest(const float *x, size_t n, size_t d,
                              const float *c, size_t k, size_t *a,
                              struct zm_error *err)
{
	double cc[ZM_DENSITY_MAX_COMPONENTS];
	float *g;
	size_t r, i, j;

	ZM_ASSERT(k <= ZM_DENSITY_MAX_COMPONENTS);
	if (!(g = zm_malloc(n * k * sizeof(float))))
		return zm_error_set(err, ZM_ERR_NOMEM, "profile: out of memory");
	for (i = 0; i < k; i++) {
		cc[i] = 0;
		for (j = 0; j < d; j++)
			cc[i] += (double)c[i * d + j] * c[i * d + j];
	}
	zm_gemm(false, true, n, k, d, 1.0f, x, d, c, d, 0.0f, g, k);
	for (r = 0; r < n; r++) {
		double best = cc[0] - 2.0 * g[r * k];
		a[r] = 0;
		for (i = 1; i < k; i++) {
			double v = cc[i] - 2.0 * g[r * k + i];
			if (v < best) {
				best = v;
				a[r] = i;
			}
		}
	}
	free(g);
	return ZM_OK;
}

enum zm_status zm_profile_cluster(struct zm_profile *p, const float *x,
                                  size_t n, size_t d, struct zm_error *err)
{
	const struct zm_profile_entry *in = zm_profile_find(p, ZM_PROFILE_INPUT);
	size_t k = n / CLUSTER_ROWS, i, j, r, it;
	float *c = NULL;
	double *sum = NULL, *cnt = NULL, *dist = NULL;
	size_t *a = NULL;
	struct zm_scatter *comp = NULL;
	struct zm_rng rng;
	enum zm_status st = ZM_OK;

	if (in && in->count > 0)
		return zm_error_set(err, ZM_ERR_USAGE, "profile: clustering "
		                    "after rows were added");
	zm_prof_comps_release(p);
	if (k > ZM_DENSITY_MAX_COMPONENTS)
		k = ZM_DENSITY_MAX_COMPONENTS;
	if (k < 2 || d == 0 || d > ZM_PROFILE_COMPONENT_MAX_DIM)
		return ZM_OK;
	if (!(c = zm_malloc(k * d * sizeof(float))) ||
	    !(sum = zm_malloc(k * d * sizeof(double))) ||
	    !(cnt = zm_malloc(k * sizeof(double))) ||
	    !(dist = zm_malloc(n * sizeof(double))) ||
	    !(a = zm_malloc(n * sizeof(size_t))) ||
	    !(comp = zm_calloc(k, sizeof(*comp)))) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "profile: out of memory");
		goto out;
	}
	/* k-means++ seeding (Arthur and Vassilvitskii): each next centre a
	 * row drawn with probability proportional to its squared distance
	 * from the nearest centre so far; a fixed seed, so deterministic. */
	zm_rng_seed(&rng, 0xc1a55);
	r = (size_t)zm_rng_below(&rng, n);
	memcpy(c, x + r * d, d * sizeof(float));
	for (r = 0; r < n; r++)
		dist[r] = INFINITY;
	for (i = 1; i < k; i++) {
		double total = 0, u;
		for (r = 0; r < n; r++) {
			double s = 0;
			for (j = 0; j < d; j++) {
				double v = (double)x[r * d + j] - c[(i - 1) * d + j];
				s += v * v;
			}
			if (s < dist[r])
				dist[r] = s;
			total += dist[r];
		}
		u = zm_rng_uniform(&rng) * total;
		for (r = 0; r + 1 < n && u >= dist[r]; r++)
			u -= dist[r];
		memcpy(c + i * d, x + r * d, d * sizeof(float));
	}
	/* Lloyd's iterations; a centre that loses every row stays put. */
	for (it = 0; it < KMEANS_ITERS; it++) {
		if ((st = nearest(x, n, d, c, k, a, err)))
			goto out;
		memset(sum, 0, k * d * sizeof(double));
		memset(cnt, 0, k * sizeof(double));
		for (r = 0; r < n; r++) {
			cnt[a[r]]++;
			for (j = 0; j < d; j++)
				sum[a[r] * d + j] += x[r * d + j];
		}
		for (i = 0; i < k; i++)
			for (j = 0; cnt[i] > 0 && j < d; j++)
				c[i * d + j] = (float)(sum[i * d + j] / cnt[i]);
	}
	for (i = 0; i < k; i++)
		zm_scatter_init(&comp[i]);
	p->centres = c;
	p->comp = comp;
	p->n_comp = k;
	c = NULL;
	comp = NULL;
out:
	free(c);
	free(sum);
	free(cnt);
	free(dist);
	free(a);
	free(comp);
	return st;
}

/* Adds the n rows of x to the components of their nearest centres; on
 * failure the components are dropped (they refine the density, the
 * profile stays right without them). */
static void comps_add(struct zm_profile *p, const float *x, size_t n,
                      size_t d, struct zm_error *err)
{
	size_t *a = NULL, c, r, m;
	float *xb = NULL;
	enum zm_status st = ZM_OK;

	if (!(a = zm_malloc(n * sizeof(size_t))) ||
	    !(xb = zm_malloc(n * d * sizeof(float))))
		st = ZM_ERR_NOMEM;
	if (st == ZM_OK)
		st = nearest(x, n, d, p->centres, p->n_comp, a, err);
	for (c = 0; st == ZM_OK && c < p->n_comp; c++) {
		for (m = 0, r = 0; r < n; r++)
			if (a[r] == c)
				memcpy(xb + m++ * d, x + r * d, d * sizeof(float));
		if (m)
			st = zm_scatter_add(&p->comp[c], xb, m, d, err);
	}
	if (st != ZM_OK)
		zm_prof_comps_release(p);
	free(a);
	free(xb);
}

/* Merges components of n [*n] into one another until at most max are
 * left and none has fewer than min_rows rows (while two are left): the
 * two smallest each time, their rows' scatter exact (Chan et al.).
 * Empty ones are dropped first. */
static enum zm_status comps_reduce(struct zm_scatter *c, size_t *n,
                                   size_t max, double min_rows,
                                   struct zm_error *err)
{
	size_t i, k = 0;
	enum zm_status st;

	for (i = 0; i < *n; i++) {
		if (c[i].count > 0)
			c[k++] = c[i];
		else
			zm_scatter_release(&c[i]);
	}
	*n = k;
	for (;;) {
		size_t a = SIZE_MAX, b = SIZE_MAX;
		for (i = 0; i < *n; i++) {
			if (a == SIZE_MAX || c[i].count < c[a].count) {
				b = a;
				a = i;
			} else if (b == SIZE_MAX || c[i].count < c[b].count) {
				b = i;
			}
		}
		if (*n < 2 || (*n <= max && c[a].count >= min_rows))
			return ZM_OK;
		if (a > b) {
			i = a;
			a = b;
			b = i;
		}
		if ((st = zm_scatter_merge(&c[a], &c[b], err)))
			return st;
		zm_scatter_release(&c[b]);
		for (i = b; i + 1 < *n; i++)
			c[i] = c[i + 1];
		(*n)--;
	}
}

/* A deep copy of p's valid components into *out [*n], reduced to what
 * is written (comps_reduce); *n < 2: none (*out NULL). */
enum zm_status zm_prof_comps_settled(const struct zm_profile *p,
                                     struct zm_scatter **out, size_t *n,
                                     struct zm_error *err)
{
	struct zm_scatter *c;
	enum zm_status st = ZM_OK;
	size_t i;

	*out = NULL;
	*n = 0;
	if (!comps_valid(p))
		return ZM_OK;
	if (!(c = zm_calloc(p->n_comp, sizeof(*c))))
		return zm_error_set(err, ZM_ERR_NOMEM, "profile: out of memory");
	for (i = 0; i < p->n_comp && st == ZM_OK; i++)
		st = zm_scatter_copy(&c[i], &p->comp[i], err);
	*n = p->n_comp;
	if (st == ZM_OK)
		st = comps_reduce(c, n, ZM_DENSITY_MAX_COMPONENTS, COMP_MIN_ROWS,
		                  err);
	if (st != ZM_OK || *n < 2) {
		zm_prof_comps_free(c, st != ZM_OK ? p->n_comp : *n);
		*n = 0;
		return st;
	}
	*out = c;
	return ZM_OK;
}

/* The mixture of the n component scatters c as m's components. */
static enum zm_status fit_mixture(struct zm_density *m,
                                  const struct zm_scatter *c, size_t n,
                                  struct zm_error *err)
{
	struct zm_density *d;
	enum zm_status st = ZM_OK;
	size_t i;

	if (!(d = zm_calloc(n, sizeof(*d))))
		return zm_error_set(err, ZM_ERR_NOMEM, "profile: out of memory");
	for (i = 0; i < n && st == ZM_OK; i++)
		st = zm_density_fit(&d[i], &c[i], ZM_DENSITY_COMPONENT_RANK, err);
	if (st != ZM_OK) {
		for (i = 0; i < n; i++)
			zm_density_release(&d[i]);
		free(d);
		return st;
	}
	return zm_density_set_mixture(m, d, n, err);
}

enum zm_status zm_profile_add_batch(struct zm_profile *p, const char *name,
                                    const float *x, size_t n, size_t d,
                                    struct zm_error *err)
{
	struct zm_profile_entry *e = zm_profile_find(p, name);
	struct zm_profile_entry fresh;
	enum zm_status st;

	ZM_ASSERT(name && (x || n == 0));
	if (e && e->dim != d)
		return zm_error_set(err, ZM_ERR_DATA,
		                    "profile entry %s: %zu features, expected %zu",
		                    name, d, e->dim);
	if (!e) {
		if (!*name)
			return zm_error_set(err, ZM_ERR_USAGE,
			                    "profile entry with an empty name");
		if (d == 0)
			return zm_error_set(err, ZM_ERR_DATA,
			                    "profile entry %s: no features", name);
		st = zm_prof_reserve_entries(p, p->n_entries + 1, err);
		if (st == ZM_OK)
			st = zm_prof_entry_alloc(&fresh, name, d, err);
		if (st != ZM_OK)
			return st;
		e = &fresh;
	}
	if (n > 0) {
		bool keep = strcmp(name, ZM_PROFILE_INPUT) == 0 &&
		            d <= ZM_SCATTER_MAX_DIM && zm_prof_scatter_valid(p);
		bool comps = keep && p->n_comp && p->centres &&
		             (p->scatter.count == 0 || comps_valid(p));
		st = batch_moments(e, x, n, d, err);
		if (st == ZM_OK && keep)
			st = zm_scatter_add(&p->scatter, x, n, d, err);
		if (st != ZM_OK) {
			if (e == &fresh)
				zm_prof_entry_release(&fresh);
			return st;
		}
		if (strcmp(name, ZM_PROFILE_INPUT) == 0 && !keep)
			zm_scatter_release(&p->scatter);
		if (strcmp(name, ZM_PROFILE_INPUT) == 0) {
			if (comps && d == p->scatter.d)
				comps_add(p, x, n, d, err);
			else
				zm_prof_comps_release(p);
		}
		entry_combine(e, (double)n, e->scratch, e->scratch + d);
	}
	if (e == &fresh)
		p->entries[p->n_entries++] = fresh;
	return ZM_OK;
}

/* Grows the histogram to n classes, zero-filling the new ones. */
enum zm_status zm_prof_grow_labels(struct zm_profile *p, size_t n,
                                   struct zm_error *err)
{
	int64_t *grown;

	if (n <= p->n_classes)
		return ZM_OK;
	grown = zm_realloc(p->labels, n * sizeof(*grown));
	if (!grown)
		return zm_error_set(err, ZM_ERR_NOMEM,
		                    "profile: out of memory for %zu classes", n);
	memset(grown + p->n_classes, 0,
	       (n - p->n_classes) * sizeof(*grown));
	p->labels = grown;
	p->n_classes = n;
	return ZM_OK;
}

enum zm_status zm_profile_add_labels(struct zm_profile *p,
                                     const int64_t *labels, size_t n,
                                     struct zm_error *err)
{
	int64_t top = -1;
	enum zm_status st;
	size_t i;

	for (i = 0; i < n; i++) {
		if (labels[i] < 0 ||
		    (uint64_t)labels[i] >= (uint64_t)ZM_PROFILE_MAX_CLASSES)
			return zm_error_set(err, ZM_ERR_DATA,
			                    "label %zu: class %lld is out of range "
			                    "0..%zu", i, (long long)labels[i],
			                    ZM_PROFILE_MAX_CLASSES - 1);
		if (labels[i] > top)
			top = labels[i];
	}
	st = zm_prof_grow_labels(p, (size_t)(top + 1), err);
	if (st != ZM_OK)
		return st;
	for (i = 0; i < n; i++)
		p->labels[labels[i]]++;
	return ZM_OK;
}

enum zm_status zm_profile_merge(struct zm_profile *dst,
                                const struct zm_profile *src,
                                struct zm_error *err)
{
	struct zm_profile_entry *fresh = NULL;
	const struct zm_profile_entry *s_in = zm_profile_find(src,
	                                                     ZM_PROFILE_INPUT);
	struct zm_scatter sc;
	size_t i, n_new = 0, k = 0;
	enum zm_status st = ZM_OK;
	/* The merged scatter: src adds no input rows (dst's stays), both
	 * valid (combined), else none. */
	bool src_rows = s_in && s_in->count > 0;
	bool both = zm_prof_scatter_valid(dst) && zm_prof_scatter_valid(src) &&
	            (src->scatter.d || !src_rows);

	const struct zm_profile_entry *d_in = zm_profile_find(dst,
	                                                     ZM_PROFILE_INPUT);
	bool dst_rows = d_in && d_in->count > 0;
	/* The merged components: src's when dst has no input rows, both
	 * sets (reduced to ZM_DENSITY_MAX_COMPONENTS) when both are valid,
	 * else none; a mixture of mixtures is exact. */
	struct zm_scatter *nc = NULL;
	size_t nn = 0;
	float *ncent = NULL;

	ZM_ASSERT(dst != src);
	zm_scatter_init(&sc);
	for (i = 0; i < src->n_entries; i++) {
		const struct zm_profile_entry *s = &src->entries[i];
		const struct zm_profile_entry *d = zm_profile_find(dst, s->name);
		if (!d)
			n_new++;
		else if (d->dim != s->dim)
			return zm_error_set(err, ZM_ERR_DATA,
			                    "profile entry %s: %zu features, "
			                    "expected %zu", s->name, s->dim,
			                    d->dim);
	}
	/* Allocate everything first so that a failure changes nothing. */
	if (n_new > 0) {
		fresh = zm_calloc(n_new, sizeof(*fresh));
		if (!fresh)
			return zm_error_set(err, ZM_ERR_NOMEM,
			                    "profile: out of memory");
		for (i = 0; i < src->n_entries && st == ZM_OK; i++)
			if (!zm_profile_find(dst, src->entries[i].name))
				st = entry_copy(&fresh[k++], &src->entries[i],
				                err);
		if (st == ZM_OK)
			st = zm_prof_reserve_entries(dst,
			                             dst->n_entries + n_new,
			                             err);
	}
	if (st == ZM_OK && src_rows && both &&
	    (st = zm_scatter_copy(&sc, &dst->scatter, err)) == ZM_OK)
		st = zm_scatter_merge(&sc, &src->scatter, err);
	if (st == ZM_OK && src_rows && comps_valid(src) &&
	    (!dst_rows || (both && comps_valid(dst)))) {
		size_t nd = dst_rows ? dst->n_comp : 0, j;
		nn = nd + src->n_comp;
		if (!(nc = zm_calloc(nn, sizeof(*nc))))
			st = zm_error_set(err, ZM_ERR_NOMEM, "profile: out of "
			                  "memory");
		for (j = 0; st == ZM_OK && j < nn; j++)
			st = zm_scatter_copy(&nc[j], j < nd ? &dst->comp[j] :
			                     &src->comp[j - nd], err);
		if (st == ZM_OK && !dst_rows && src->centres) {
			if (!(ncent = zm_malloc(src->n_comp * src->scatter.d *
			                        sizeof(float))))
				st = zm_error_set(err, ZM_ERR_NOMEM, "profile: "
				                  "out of memory");
			else
				memcpy(ncent, src->centres, src->n_comp *
				       src->scatter.d * sizeof(float));
		}
		if (st == ZM_OK && dst_rows)
			st = comps_reduce(nc, &nn, ZM_DENSITY_MAX_COMPONENTS, 0,
			                  err);
	}
	/* Last: it grows dst's histogram, the only change before commit. */
	if (st == ZM_OK)
		st = zm_prof_grow_labels(dst, src->n_classes, err);
	if (st != ZM_OK) {
		for (i = 0; i < k; i++)
			zm_prof_entry_release(&fresh[i]);
		free(fresh);
		zm_scatter_release(&sc);
		zm_prof_comps_free(nc, nn);
		free(ncent);
		return st;
	}
	if (src_rows) {
		zm_scatter_release(&dst->scatter);
		dst->scatter = sc;
		zm_prof_comps_release(dst);
		dst->comp = nc;
		dst->n_comp = nn;
		dst->centres = ncent;
	}
	for (i = 0; i < src->n_entries; i++) {
		const struct zm_profile_entry *s = &src->entries[i];
		struct zm_profile_entry *d = zm_profile_find(dst, s->name);
		if (d)
			entry_combine(d, s->count, s->mean, s->m2);
	}
	for (i = 0; i < n_new; i++)
		dst->entries[dst->n_entries++] = fresh[i];
	free(fresh);
	for (i = 0; i < src->n_classes; i++)
		dst->labels[i] += src->labels[i];
	return ZM_OK;
}

enum zm_status zm_profile_copy(struct zm_profile *dst,
                               const struct zm_profile *src,
                               struct zm_error *err)
{
	zm_profile_release(dst);
	return zm_profile_merge(dst, src, err);
}

double zm_profile_entry_var(const struct zm_profile_entry *e, size_t j)
{
	ZM_ASSERT(j < e->dim);
	return e->count > 0 ? e->m2[j] / e->count : 0.0;
}

void zm_profile_entry_moments(const struct zm_profile_entry *e,
                              double *mean, double *var)
{
	size_t j;

	for (j = 0; j < e->dim; j++) {
		mean[j] = e->count > 0 ? e->mean[j] : 0.0;
		var[j] = zm_profile_entry_var(e, j);
	}
}

void zm_profile_entry_moments_f32(const struct zm_profile_entry *e,
                                  float *mean, float *var)
{
	size_t j;

	for (j = 0; j < e->dim; j++) {
		mean[j] = e->count > 0 ? (float)e->mean[j] : 0.0f;
		var[j] = (float)zm_profile_entry_var(e, j);
	}
}

enum zm_status zm_profile_density(const struct zm_profile *p,
                                  struct zm_density *m,
                                  struct zm_error *err)
{
	const struct zm_profile_entry *in = zm_profile_find(p, ZM_PROFILE_INPUT);
	double *mv;
	enum zm_status st;

	if (!in || in->count <= 0)
		return zm_error_set(err, ZM_ERR_NOTFOUND, "no input profile");
	if (p->scatter.d && zm_prof_scatter_valid(p)) {
		struct zm_scatter *c;
		size_t n;
		if ((st = zm_density_fit(m, &p->scatter, ZM_DENSITY_RANK, err)) ||
		    (st = zm_prof_comps_settled(p, &c, &n, err)))
			return st;
		if (n >= 2)
			st = fit_mixture(m, c, n, err);
		zm_prof_comps_free(c, n);
		if (st != ZM_OK)
			zm_density_release(m);
		return st;
	}
	if (!(mv = zm_malloc(2 * in->dim * sizeof(double))))
		return zm_error_set(err, ZM_ERR_NOMEM, "profile: out of memory");
	zm_profile_entry_moments(in, mv, mv + in->dim);
	st = zm_density_diag(m, mv, mv + in->dim, in->dim, in->count, err);
	free(mv);
	return st;
}
