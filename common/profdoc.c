/*
 * Profiles in documents: a profile as "profile.*" tensors (entries'
 * counts, means and variances, the class histogram, the input's PPCA and
 * its mixture components) and back, and the density a document's profile
 * describes.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "profile.h"
#include "profpriv.h"
#include "stream.h"
#include "tensor.h"

#define PREFIX "profile."

/* ---- documents ---- */

/* "profile." name suffix in a new string, or NULL. */
static char *tensor_name(const char *name, const char *suffix)
{
	return zm_strconcat(PREFIX, name, suffix, NULL);
}

/* Allocates t as the F64 [1] scalar named PREFIX name suffix holding v. */
static enum zm_status make_count(struct zm_tensor *t, const char *name,
                                 const char *suffix, double v,
                                 struct zm_error *err)
{
	const int64_t shape[1] = { 1 };
	char *tn = tensor_name(name, suffix);
	enum zm_status st;

	if (!tn)
		return zm_error_set(err, ZM_ERR_NOMEM, "profile: out of memory");
	st = zm_tensor_alloc(t, tn, ZM_DTYPE_F64, 1, shape, err);
	free(tn);
	if (st == ZM_OK)
		memcpy(t->data, &v, sizeof(v));
	return st;
}

/* Allocates t as an F32 [dim] vector of e's mean (want_var false) or
 * population variance. */
static enum zm_status make_moment(struct zm_tensor *t,
                                  const struct zm_profile_entry *e,
                                  bool want_var, struct zm_error *err)
{
	const int64_t shape[1] = { (int64_t)e->dim };
	char *tn = tensor_name(e->name, want_var ? ".var" : ".mean");
	enum zm_status st;
	float *out;
	size_t j;

	if (!tn)
		return zm_error_set(err, ZM_ERR_NOMEM, "profile: out of memory");
	st = zm_tensor_alloc(t, tn, ZM_DTYPE_F32, 1, shape, err);
	free(tn);
	if (st != ZM_OK)
		return st;
	out = t->data;
	for (j = 0; j < e->dim; j++) {
		out[j] = want_var ? (float)zm_profile_entry_var(e, j)
		                  : (float)(e->count > 0 ? e->mean[j] : 0.0);
		/* The moments are kept in double; a variance of data near
		 * 1e20 and beyond overflows F32, and an Inf stored in a model
		 * would poison every similarity computed from it later. */
		if (!isfinite(out[j])) {
			zm_tensor_release(t);
			return zm_error_set(err, ZM_ERR_DATA,
			                    "profile entry %s: the %s of feature "
			                    "%zu does not fit in F32", e->name,
			                    want_var ? "variance" : "mean", j);
		}
	}
	return ZM_OK;
}

/* The PPCA of a valid input scatter as the three tensors at ts (*added
 * of them set; none when the fit has no directions). */
static enum zm_status make_ppca(const struct zm_profile *p,
                                struct zm_tensor *ts, size_t *added,
                                struct zm_error *err)
{
	struct zm_density m;
	int64_t shape[2];
	enum zm_status st;
	size_t k;

	*added = 0;
	zm_density_init(&m);
	if ((st = zm_density_fit(&m, &p->scatter, ZM_DENSITY_RANK, err)))
		return st;
	if (m.q == 0)
		goto out;
	shape[0] = (int64_t)m.q;
	shape[1] = (int64_t)m.d;
	if ((st = zm_tensor_alloc(&ts[0], PREFIX ZM_PROFILE_INPUT ".pc",
	                          ZM_DTYPE_F32, 2, shape, err)))
		goto out;
	memcpy(ts[0].data, m.pc, m.q * m.d * sizeof(float));
	if ((st = zm_tensor_alloc(&ts[1], PREFIX ZM_PROFILE_INPUT ".pcvar",
	                          ZM_DTYPE_F32, 1, shape, err)))
		goto out;
	for (k = 0; k < m.q; k++)
		((float *)ts[1].data)[k] = (float)m.pcvar[k];
	if ((st = make_count(&ts[2], ZM_PROFILE_INPUT, ".resvar", m.s2, err)))
		goto out;
	*added = 3;
out:
	zm_density_release(&m);
	return st;
}


/* The components' PPCAs (zm_prof_comps_settled) as five tensors each at ts
 * (*added of them set): PREFIX "input.cI" .center, .pc, .pcvar, .resvar
 * and .rows.  None when fewer than two, or one has no directions. */
static enum zm_status make_comps(const struct zm_profile *p,
                                 struct zm_tensor *ts, size_t *added,
                                 struct zm_error *err)
{
	struct zm_scatter *c = NULL;
	struct zm_density m;
	size_t n = 0, i, k, t = 0;
	enum zm_status st;

	*added = 0;
	zm_density_init(&m);
	if ((st = zm_prof_comps_settled(p, &c, &n, err)) || n < 2)
		return st;
	for (i = 0; i < n && st == ZM_OK; i++) {
		char base[64], name[96];
		int64_t shape[2];
		if ((st = zm_density_fit(&m, &c[i], ZM_DENSITY_COMPONENT_RANK,
		                         err)))
			break;
		if (m.q == 0)
			break;
		snprintf(base, sizeof(base), "%s.c%zu", ZM_PROFILE_INPUT, i);
		shape[0] = (int64_t)m.d;
		snprintf(name, sizeof(name), PREFIX "%s.center", base);
		if ((st = zm_tensor_alloc(&ts[t], name, ZM_DTYPE_F32, 1, shape,
		                          err)))
			break;
		memcpy(ts[t++].data, m.mean, m.d * sizeof(float));
		shape[0] = (int64_t)m.q;
		shape[1] = (int64_t)m.d;
		snprintf(name, sizeof(name), PREFIX "%s.pc", base);
		if ((st = zm_tensor_alloc(&ts[t], name, ZM_DTYPE_F32, 2, shape,
		                          err)))
			break;
		memcpy(ts[t++].data, m.pc, m.q * m.d * sizeof(float));
		snprintf(name, sizeof(name), PREFIX "%s.pcvar", base);
		if ((st = zm_tensor_alloc(&ts[t], name, ZM_DTYPE_F32, 1, shape,
		                          err)))
			break;
		for (k = 0; k < m.q; k++)
			((float *)ts[t].data)[k] = (float)m.pcvar[k];
		t++;
		if ((st = make_count(&ts[t++], base, ".resvar", m.s2, err)) ||
		    (st = make_count(&ts[t++], base, ".rows", c[i].count, err)))
			break;
	}
	if (st == ZM_OK && i == n) {
		*added = t;
	} else {
		for (k = 0; k < t; k++)
			zm_tensor_release(&ts[k]);
	}
	zm_density_release(&m);
	zm_prof_comps_free(c, n);
	return st;
}

static void release_tensors(struct zm_tensor *ts, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		zm_tensor_release(&ts[i]);
	free(ts);
}

/* Builds every profile tensor of p into a new array *out of *n_out. */
static enum zm_status build_tensors(const struct zm_profile *p,
                                    struct zm_tensor **out, size_t *n_out,
                                    struct zm_error *err)
{
	double count = zm_profile_count(p);
	struct zm_tensor *ts;
	enum zm_status st = ZM_OK;
	size_t cap, n = 0, i;

	if (!zm_size_mul(p->n_entries, 3, &cap) ||
	    !zm_size_add(cap, 5 + 5 * ZM_DENSITY_MAX_COMPONENTS, &cap) ||
	    !(ts = zm_calloc(cap, sizeof(*ts))))
		return zm_error_set(err, ZM_ERR_NOMEM, "profile: out of memory");
	for (i = 0; i < cap; i++)
		zm_tensor_init(&ts[i]);
	st = make_count(&ts[n++], "count", "", count, err);
	if (st == ZM_OK && p->n_classes > 0) {
		const int64_t shape[1] = { (int64_t)p->n_classes };
		st = zm_tensor_alloc(&ts[n++], PREFIX "labels", ZM_DTYPE_I64, 1,
		                     shape, err);
		if (st == ZM_OK)
			memcpy(ts[n - 1].data, p->labels,
			       p->n_classes * sizeof(int64_t));
	}
	for (i = 0; i < p->n_entries && st == ZM_OK; i++) {
		const struct zm_profile_entry *e = &p->entries[i];
		st = make_moment(&ts[n++], e, false, err);
		if (st == ZM_OK)
			st = make_moment(&ts[n++], e, true, err);
		if (st == ZM_OK && e->count != count)
			st = make_count(&ts[n++], e->name, ".count", e->count,
			                err);
	}
	if (st == ZM_OK && p->scatter.d && p->scatter.count > 0 &&
	    zm_prof_scatter_valid(p)) {
		size_t added;
		st = make_ppca(p, ts + n, &added, err);
		n += added;
		if (st == ZM_OK && added) {
			st = make_comps(p, ts + n, &added, err);
			n += added;
		}
	}
	if (st != ZM_OK) {
		release_tensors(ts, cap);
		return st;
	}
	*out = ts;
	*n_out = n;
	return ZM_OK;
}

/* Adds the n tensors of ts to doc (taking them); on failure drops the
 * ones already added (zm_doc_add appends) so that doc is as it was. */
static enum zm_status add_tensors(struct zm_doc *doc, struct zm_tensor *ts,
                                  size_t n, struct zm_error *err)
{
	size_t i, n0 = doc->n_tensors;
	enum zm_status st = ZM_OK;

	for (i = 0; i < n; i++)
		if (zm_doc_find(doc, ts[i].name))
			return zm_error_set(err, ZM_ERR_USAGE,
			                    "document already holds %s",
			                    ts[i].name);
	for (i = 0; i < n && st == ZM_OK; i++)
		st = zm_doc_add(doc, &ts[i], err);
	if (st != ZM_OK) {
		for (i = n0; i < doc->n_tensors; i++)
			zm_tensor_release(&doc->tensors[i]);
		doc->n_tensors = n0;
	}
	return st;
}

enum zm_status zm_profile_to_doc(const struct zm_profile *p,
                                 struct zm_doc *doc, struct zm_error *err)
{
	struct zm_tensor *ts;
	enum zm_status st;
	size_t n;

	st = build_tensors(p, &ts, &n, err);
	if (st != ZM_OK)
		return st;
	st = add_tensors(doc, ts, n, err);
	release_tensors(ts, n);
	return st;
}

static bool is_profile_name(const char *name)
{
	return strncmp(name, PREFIX, strlen(PREFIX)) == 0;
}

size_t zm_profile_remove_from_doc(struct zm_doc *doc)
{
	size_t i, kept = 0, removed;

	/* Compacts the array in place: no allocation, so it cannot fail. */
	for (i = 0; i < doc->n_tensors; i++) {
		if (is_profile_name(doc->tensors[i].name))
			zm_tensor_release(&doc->tensors[i]);
		else
			doc->tensors[kept++] = doc->tensors[i];
	}
	removed = doc->n_tensors - kept;
	doc->n_tensors = kept;
	return removed;
}

enum zm_status zm_profile_replace_in_doc(const struct zm_profile *p,
                                         struct zm_doc *doc,
                                         struct zm_error *err)
{
	struct zm_tensor *ts;
	enum zm_status st;
	size_t n;

	st = build_tensors(p, &ts, &n, err);
	if (st != ZM_OK)
		return st;
	zm_profile_remove_from_doc(doc);
	st = add_tensors(doc, ts, n, err);
	release_tensors(ts, n);
	return st;
}

/* ---- reading ---- */

static bool dtype_ok_size(const struct zm_tensor *t)
{
	size_t numel, bytes;

	return zm_shape_numel(t->ndim, t->shape, &numel) &&
	       zm_size_mul(numel, zm_dtype_size(t->dtype), &bytes) &&
	       bytes == t->nbytes && (t->data || bytes == 0);
}

/* Element i of a float tensor as a double, without losing F64 precision. */
static double load_float(const struct zm_tensor *t, size_t i)
{
	double d;
	float f;

	if (t->dtype == ZM_DTYPE_F64) {
		memcpy(&d, (const char *)t->data + i * 8, 8);
		return d;
	}
	zm_tensor_read_f32(t, i, 1, &f);
	return f;
}

/* Reads a one-element count tensor (float or integer) into *out. */
static enum zm_status read_count(const struct zm_tensor *t, double *out,
                                 struct zm_error *err)
{
	size_t numel;
	double v;

	if (!dtype_ok_size(t) || !zm_shape_numel(t->ndim, t->shape, &numel) ||
	    numel != 1 || t->ndim > 1)
		return zm_error_set(err, ZM_ERR_DATA,
		                    "%s: expected one value of shape [1]",
		                    t->name);
	if (t->dtype == ZM_DTYPE_I64) {
		int64_t i;
		memcpy(&i, t->data, sizeof(i));
		v = (double)i;
	} else if (zm_dtype_is_float(t->dtype)) {
		v = load_float(t, 0);
	} else {
		return zm_error_set(err, ZM_ERR_DATA,
		                    "%s: dtype %s, expected F64 or I64", t->name,
		                    zm_dtype_name(t->dtype));
	}
	if (!isfinite(v) || v < 0)
		return zm_error_set(err, ZM_ERR_DATA,
		                    "%s: count %g is not a finite non-negative "
		                    "number", t->name, v);
	*out = v;
	return ZM_OK;
}

/* Checks that t is a float vector; stores its length in *dim. */
static enum zm_status check_vector(const struct zm_tensor *t, size_t *dim,
                                   struct zm_error *err)
{
	if (!zm_dtype_is_float(t->dtype))
		return zm_error_set(err, ZM_ERR_DATA,
		                    "%s: dtype %s, expected F32", t->name,
		                    zm_dtype_name(t->dtype));
	if (t->ndim != 1 || t->shape[0] <= 0 || !dtype_ok_size(t))
		return zm_error_set(err, ZM_ERR_DATA,
		                    "%s: expected a non-empty vector [d]",
		                    t->name);
	*dim = (size_t)t->shape[0];
	return ZM_OK;
}

static enum zm_status read_labels(struct zm_profile *p,
                                  const struct zm_tensor *t,
                                  struct zm_error *err)
{
	size_t n, i;
	enum zm_status st;

	if (t->dtype != ZM_DTYPE_I64 || t->ndim != 1 || !dtype_ok_size(t))
		return zm_error_set(err, ZM_ERR_DATA,
		                    "%s: expected I64 [classes]", t->name);
	n = (size_t)t->shape[0];
	if (n > ZM_PROFILE_MAX_CLASSES)
		return zm_error_set(err, ZM_ERR_DATA,
		                    "%s: %zu classes, at most %zu", t->name, n,
		                    ZM_PROFILE_MAX_CLASSES);
	st = zm_prof_grow_labels(p, n, err);
	if (st != ZM_OK)
		return st;
	memcpy(p->labels, t->data, n * sizeof(int64_t));
	for (i = 0; i < n; i++)
		if (p->labels[i] < 0)
			return zm_error_set(err, ZM_ERR_DATA,
			                    "%s: class %zu has negative count "
			                    "%lld", t->name, i,
			                    (long long)p->labels[i]);
	return ZM_OK;
}

/* Reads entry name (tensors mean and var, optional count tensor cnt). */
static enum zm_status read_entry(struct zm_profile *p, const char *name,
                                 const struct zm_tensor *mean,
                                 const struct zm_tensor *var,
                                 const struct zm_tensor *cnt, double count,
                                 struct zm_error *err)
{
	struct zm_profile_entry e;
	size_t dim, vdim, j;
	enum zm_status st;

	if ((st = check_vector(mean, &dim, err)) != ZM_OK ||
	    (st = check_vector(var, &vdim, err)) != ZM_OK)
		return st;
	if (vdim != dim)
		return zm_error_set(err, ZM_ERR_DATA,
		                    "%s: %zu values, but %s has %zu", var->name,
		                    vdim, mean->name, dim);
	if (cnt && (st = read_count(cnt, &count, err)) != ZM_OK)
		return st;
	if (zm_profile_find(p, name))
		return zm_error_set(err, ZM_ERR_DATA, "%s: duplicate entry",
		                    mean->name);
	if ((st = zm_prof_reserve_entries(p, p->n_entries + 1, err)) != ZM_OK ||
	    (st = zm_prof_entry_alloc(&e, name, dim, err)) != ZM_OK)
		return st;
	e.count = count;
	for (j = 0; j < dim; j++) {
		double m = load_float(mean, j), v = load_float(var, j);
		if (!isfinite(m) || !isfinite(v) || v < 0) {
			zm_prof_entry_release(&e);
			return zm_error_set(err, ZM_ERR_DATA,
			                    "%s: element %zu is %s", isfinite(m) ?
			                    var->name : mean->name, j,
			                    isfinite(m) && isfinite(v) ?
			                    "a negative variance" : "not finite");
		}
		e.mean[j] = m;
		e.m2[j] = v * count;
	}
	p->entries[p->n_entries++] = e;
	return ZM_OK;
}

/* Whether name is PREFIX + NAME + suffix with a non-empty NAME; stores
 * NAME's length in *len. */
static bool split_name(const char *name, const char *suffix, size_t *len)
{
	size_t n = strlen(name), plen = strlen(PREFIX), slen = strlen(suffix);

	if (!is_profile_name(name) || n <= plen + slen ||
	    strcmp(name + n - slen, suffix) != 0)
		return false;
	*len = n - plen - slen;
	return true;
}

/* The tensor PREFIX + the first len bytes of entry + suffix, or NULL;
 * *oom is set when the name could not be built. */
static const struct zm_tensor *find_part(const struct zm_doc *doc,
                                         const char *entry, size_t len,
                                         const char *suffix, bool *oom)
{
	const struct zm_tensor *t;
	char *part = zm_strndup(entry, len), *tn;

	tn = part ? tensor_name(part, suffix) : NULL;
	free(part);
	if (!tn) {
		*oom = true;
		return NULL;
	}
	t = zm_doc_find(doc, tn);
	free(tn);
	return t;
}

/*
 * The density of the PPCA tensors of doc (profile.input.pc, .pcvar,
 * .resvar) for an input entry of width dim with mean (F32 [dim]) and
 * count rows.  ZM_ERR_DATA naming the tensor when one is missing or
 * malformed.
 */
static enum zm_status ppca_tensors(const struct zm_doc *doc,
                                   const char *base,
                                   const float *mean, size_t dim,
                                   double count, struct zm_density *m,
                                   struct zm_error *err)
{
	char npc[96], npv[96], nrv[96];
	const struct zm_tensor *pc, *pv, *rv;
	double s2, *pcvar = NULL;
	float *dirs = NULL;
	enum zm_status st;
	size_t q, k;

	snprintf(npc, sizeof(npc), "%s.pc", base);
	snprintf(npv, sizeof(npv), "%s.pcvar", base);
	snprintf(nrv, sizeof(nrv), "%s.resvar", base);
	pc = zm_doc_find(doc, npc);
	pv = zm_doc_find(doc, npv);
	rv = zm_doc_find(doc, nrv);
	if (!pc || !pv || !rv)
		return zm_error_set(err, ZM_ERR_DATA, "%s.pc, .pcvar and "
		                    ".resvar go together", base);
	if (pc->dtype != ZM_DTYPE_F32 || pc->ndim != 2 || pc->shape[0] <= 0 ||
	    pc->shape[1] != (int64_t)dim || (size_t)pc->shape[0] >= dim ||
	    !dtype_ok_size(pc))
		return zm_error_set(err, ZM_ERR_DATA, "%s: expected F32 [q, %zu] "
		                    "with 0 < q < %zu", pc->name, dim, dim);
	q = (size_t)pc->shape[0];
	if ((st = check_vector(pv, &k, err)))
		return st;
	if (k != q)
		return zm_error_set(err, ZM_ERR_DATA, "%s: %zu values, but %s has "
		                    "%zu directions", pv->name, k, pc->name, q);
	if ((st = read_count(rv, &s2, err)))
		return st;
	if (!(pcvar = zm_malloc(q * sizeof(double))) ||
	    !(dirs = zm_malloc(q * dim * sizeof(float)))) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "profile: out of memory");
		goto out;
	}
	for (k = 0; k < q; k++)
		pcvar[k] = load_float(pv, k);
	memcpy(dirs, pc->data, q * dim * sizeof(float));
	for (k = 0; k < q * dim; k++)
		if (!isfinite(dirs[k])) {
			st = zm_error_set(err, ZM_ERR_DATA, "%s: element %zu is not "
			                  "finite", pc->name, k);
			goto out;
		}
	st = zm_density_ppca(m, mean, dirs, pcvar, q, dim, s2, count, err);
	if (st != ZM_OK)
		zm_error_prefix(err, "%s: ", pc->name);
out:
	free(pcvar);
	free(dirs);
	return st;
}


/*
 * The components stored with doc's input PPCA (PREFIX "input.cI", I from
 * 0 up while .center exists) as densities into *out [*n] (none: *n 0),
 * for an input of width dim and count rows.  ZM_ERR_DATA naming the
 * tensor for a malformed one, for one alone, or when their rows do not
 * add up to count.
 */
static enum zm_status doc_comps(const struct zm_doc *doc, size_t dim,
                                double count, struct zm_density **out,
                                size_t *n, struct zm_error *err)
{
	struct zm_density *d = NULL;
	enum zm_status st = ZM_OK;
	double total = 0;
	float *mean = NULL;
	size_t k = 0, i, len;

	*out = NULL;
	*n = 0;
	for (;;) {
		char base[64], name[96];
		const struct zm_tensor *ct, *rt;
		double rows;
		snprintf(base, sizeof(base), PREFIX "%s.c%zu", ZM_PROFILE_INPUT,
		         k);
		snprintf(name, sizeof(name), "%s.center", base);
		if (!(ct = zm_doc_find(doc, name)))
			break;
		if (k == ZM_DENSITY_MAX_COMPONENTS) {
			st = zm_error_set(err, ZM_ERR_DATA, "%s: more than %d "
			                  "components", name,
			                  ZM_DENSITY_MAX_COMPONENTS);
			goto out;
		}
		snprintf(name, sizeof(name), "%s.rows", base);
		if (!(rt = zm_doc_find(doc, name))) {
			st = zm_error_set(err, ZM_ERR_DATA, "%s.center without "
			                  "%s", base, name);
			goto out;
		}
		if ((st = check_vector(ct, &len, err)) ||
		    (st = read_count(rt, &rows, err)))
			goto out;
		if (len != dim || !(rows >= 1)) {
			st = zm_error_set(err, ZM_ERR_DATA, "%s: %zu features and "
			                  "%g rows, expected %zu features and at "
			                  "least one row", base, len, rows, dim);
			goto out;
		}
		if (!d && !(d = zm_calloc(ZM_DENSITY_MAX_COMPONENTS,
		                          sizeof(*d)))) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "profile: out of "
			                  "memory");
			goto out;
		}
		if (!mean && !(mean = zm_malloc(dim * sizeof(float)))) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "profile: out of "
			                  "memory");
			goto out;
		}
		zm_tensor_read_f32(ct, 0, dim, mean);
		for (i = 0; i < dim; i++)
			if (!isfinite(mean[i])) {
				st = zm_error_set(err, ZM_ERR_DATA, "%s.center: "
				                  "element %zu is not finite", base,
				                  i);
				goto out;
			}
		if ((st = ppca_tensors(doc, base, mean, dim, rows, &d[k], err)))
			goto out;
		total += rows;
		k++;
	}
	if (k == 1 || (k && fabs(total - count) > 1e-6 * count)) {
		st = zm_error_set(err, ZM_ERR_DATA, "%s%s.c*: %zu components of "
		                  "%g rows, the input has %g", PREFIX,
		                  ZM_PROFILE_INPUT, k, total, count);
		goto out;
	}
	*out = d;
	*n = k;
	d = NULL;
out:
	for (i = 0; d && i < ZM_DENSITY_MAX_COMPONENTS; i++)
		zm_density_release(&d[i]);
	free(d);
	free(mean);
	return st;
}

/* m (doc's input PPCA) with doc's stored components, if any. */
static enum zm_status doc_mixture(const struct zm_doc *doc, size_t dim,
                                  double count, struct zm_density *m,
                                  struct zm_error *err)
{
	struct zm_density *c;
	size_t n;
	enum zm_status st = doc_comps(doc, dim, count, &c, &n, err);

	if (st != ZM_OK || n == 0)
		return st;
	return zm_density_set_mixture(m, c, n, err);
}

/* p's component scatters rebuilt from doc's stored components (an
 * input entry and its scatter exist). */
static enum zm_status read_comps(struct zm_profile *p,
                                 const struct zm_doc *doc,
                                 struct zm_error *err)
{
	struct zm_density *c;
	struct zm_scatter *sc;
	size_t n, i, d = p->scatter.d;
	enum zm_status st = doc_comps(doc, d, p->scatter.count, &c, &n, err);

	if (st != ZM_OK || n == 0)
		return st;
	if (!(sc = zm_calloc(n, sizeof(*sc))))
		st = zm_error_set(err, ZM_ERR_NOMEM, "profile: out of memory");
	for (i = 0; st == ZM_OK && i < n; i++) {
		size_t j;
		sc[i].mean = zm_malloc(d * sizeof(double));
		sc[i].m2 = zm_calloc(d * d, sizeof(double));
		if (!sc[i].mean || !sc[i].m2) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "profile: out of "
			                  "memory");
			break;
		}
		sc[i].d = d;
		sc[i].count = c[i].count;
		for (j = 0; j < d; j++)
			sc[i].mean[j] = c[i].mean[j];
		zm_density_scatter(&c[i], c[i].count, sc[i].m2);
	}
	for (i = 0; i < n; i++)
		zm_density_release(&c[i]);
	free(c);
	if (st != ZM_OK) {
		zm_prof_comps_free(sc, n);
		return st;
	}
	zm_prof_comps_release(p);
	p->comp = sc;
	p->n_comp = n;
	return ZM_OK;
}

/* Rebuilds p's scatter from the PPCA doc stores for p's input entry
 * (with scatters false only checks the PPCA and its components). */
static enum zm_status read_ppca(struct zm_profile *p, const struct zm_doc *doc,
                                bool scatters, struct zm_error *err)
{
	const struct zm_profile_entry *in = zm_profile_find(p, ZM_PROFILE_INPUT);
	struct zm_density m;
	enum zm_status st;
	float *mf;
	size_t j, dd;

	if (!zm_doc_find(doc, PREFIX ZM_PROFILE_INPUT ".pc") &&
	    !zm_doc_find(doc, PREFIX ZM_PROFILE_INPUT ".pcvar") &&
	    !zm_doc_find(doc, PREFIX ZM_PROFILE_INPUT ".resvar"))
		return ZM_OK;
	if (!in)
		return zm_error_set(err, ZM_ERR_DATA, "%s%s.pc without %s%s.mean",
		                    PREFIX, ZM_PROFILE_INPUT, PREFIX,
		                    ZM_PROFILE_INPUT);
	if (in->dim > ZM_SCATTER_MAX_DIM)
		return zm_error_set(err, ZM_ERR_DATA, "%s%s.pc: %zu features, at "
		                    "most %d", PREFIX, ZM_PROFILE_INPUT, in->dim,
		                    ZM_SCATTER_MAX_DIM);
	if (!(mf = zm_malloc(in->dim * sizeof(float))))
		return zm_error_set(err, ZM_ERR_NOMEM, "profile: out of memory");
	for (j = 0; j < in->dim; j++)
		mf[j] = (float)in->mean[j];
	zm_density_init(&m);
	st = ppca_tensors(doc, PREFIX ZM_PROFILE_INPUT, mf, in->dim, in->count,
	                  &m, err);
	free(mf);
	if (st != ZM_OK)
		return st;
	if (!scatters) {
		struct zm_density *c;
		size_t n, i;
		zm_density_release(&m);
		st = doc_comps(doc, in->dim, in->count, &c, &n, err);
		for (i = 0; st == ZM_OK && i < n; i++)
			zm_density_release(&c[i]);
		if (st == ZM_OK)
			free(c);
		return st;
	}
	zm_scatter_release(&p->scatter);
	dd = in->dim * in->dim;
	p->scatter.mean = zm_malloc(in->dim * sizeof(double));
	p->scatter.m2 = zm_calloc(dd, sizeof(double));
	if (!p->scatter.mean || !p->scatter.m2) {
		zm_density_release(&m);
		zm_scatter_release(&p->scatter);
		return zm_error_set(err, ZM_ERR_NOMEM, "profile: out of memory");
	}
	p->scatter.d = in->dim;
	p->scatter.count = in->count;
	memcpy(p->scatter.mean, in->mean, in->dim * sizeof(double));
	zm_density_scatter(&m, in->count, p->scatter.m2);
	zm_density_release(&m);
	return read_comps(p, doc, err);
}

static enum zm_status profile_read(struct zm_profile *p,
                                   const struct zm_doc *doc, bool scatters,
                                   struct zm_error *err)
{
	const struct zm_tensor *t;
	enum zm_status st;
	double count;
	size_t i;

	zm_profile_release(p);
	t = zm_doc_find(doc, PREFIX "count");
	if (!t)
		return zm_error_set(err, ZM_ERR_NOTFOUND,
		                    "document holds no %scount", PREFIX);
	if ((st = read_count(t, &count, err)) != ZM_OK)
		goto fail;
	t = zm_doc_find(doc, PREFIX "labels");
	if (t && (st = read_labels(p, t, err)) != ZM_OK)
		goto fail;
	for (i = 0; i < doc->n_tensors; i++) {
		const char *name = doc->tensors[i].name;
		const char *entry = name + strlen(PREFIX);
		const struct zm_tensor *var, *cnt;
		bool oom = false;
		char *ename;
		size_t len;

		if (split_name(name, ".var", &len)) {
			if (!find_part(doc, entry, len, ".mean", &oom)) {
				st = oom ? zm_error_set(err, ZM_ERR_NOMEM,
				                        "profile: out of memory")
				         : zm_error_set(err, ZM_ERR_DATA,
				                        "%s has no matching .mean",
				                        name);
				goto fail;
			}
			continue;
		}
		if (!split_name(name, ".mean", &len))
			continue;
		var = find_part(doc, entry, len, ".var", &oom);
		cnt = find_part(doc, entry, len, ".count", &oom);
		ename = zm_strndup(entry, len);
		if (oom || !ename) {
			free(ename);
			st = zm_error_set(err, ZM_ERR_NOMEM,
			                  "profile: out of memory");
			goto fail;
		}
		if (!var)
			st = zm_error_set(err, ZM_ERR_DATA,
			                  "%s has no matching .var", name);
		else
			st = read_entry(p, ename, &doc->tensors[i], var, cnt,
			                count, err);
		free(ename);
		if (st != ZM_OK)
			goto fail;
	}
	if ((st = read_ppca(p, doc, scatters, err)) != ZM_OK)
		goto fail;
	return ZM_OK;
fail:
	zm_profile_release(p);
	return st;
}

enum zm_status zm_profile_from_doc(struct zm_profile *p,
                                   const struct zm_doc *doc,
                                   struct zm_error *err)
{
	return profile_read(p, doc, true, err);
}

enum zm_status zm_profile_moments_from_doc(struct zm_profile *p,
                                           const struct zm_doc *doc,
                                           struct zm_error *err)
{
	return profile_read(p, doc, false, err);
}

enum zm_status zm_profile_density_from_doc(const struct zm_doc *doc,
                                           struct zm_density *m,
                                           struct zm_error *err)
{
	const struct zm_tensor *mean = zm_doc_find(doc, PREFIX ZM_PROFILE_INPUT
	                                           ".mean");
	const struct zm_tensor *var = zm_doc_find(doc, PREFIX ZM_PROFILE_INPUT
	                                          ".var");
	const struct zm_tensor *pc = zm_doc_find(doc, PREFIX ZM_PROFILE_INPUT
	                                         ".pc");
	struct zm_profile p;
	enum zm_status st;

	if (!mean || !var)
		return zm_error_set(err, ZM_ERR_NOTFOUND, "no input profile");
	if (pc) {
		const struct zm_tensor *cnt;
		size_t dim;
		double count;
		float *mf;
		/* The stored PPCA as it is: no scatter, no refit. */
		if ((st = check_vector(mean, &dim, err)))
			return st;
		cnt = zm_doc_find(doc, PREFIX ZM_PROFILE_INPUT ".count");
		if (!cnt)
			cnt = zm_doc_find(doc, PREFIX "count");
		if (!cnt)
			return zm_error_set(err, ZM_ERR_NOTFOUND, "document holds "
			                    "no %scount", PREFIX);
		if ((st = read_count(cnt, &count, err)))
			return st;
		if (!(mf = zm_malloc(dim * sizeof(float))))
			return zm_error_set(err, ZM_ERR_NOMEM, "profile: out of "
			                    "memory");
		zm_tensor_read_f32(mean, 0, dim, mf);
		st = ppca_tensors(doc, PREFIX ZM_PROFILE_INPUT, mf, dim, count, m,
		                  err);
		free(mf);
		if (st == ZM_OK && (st = doc_mixture(doc, dim, count, m, err)))
			zm_density_release(m);
		return st;
	}
	zm_profile_init(&p);
	st = zm_profile_from_doc(&p, doc, err);
	if (st == ZM_OK)
		st = zm_profile_density(&p, m, err);
	zm_profile_release(&p);
	return st;
}
