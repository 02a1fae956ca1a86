/*
 * The plain-checkpoint merges that read a tensor more than once
 * (mergeplain.c calls them through mergeplainpriv.h): TIES and
 * breadcrumbs over a tensor larger than a chunk, whose thresholds come
 * from histogram passes, and SLERP, model_stock and nuslerp, whose first
 * pass sums dot products and norms.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "merge.h"
#include "mergeplainpriv.h"

/*
 * TIES on a tensor larger than a chunk, read three times at most and held
 * a chunk at a time.  The trimming threshold of each task vector is its
 * k-th largest magnitude, found exactly from the bit patterns of the
 * magnitudes (for non-negative floats their order is the order of the
 * patterns as integers).  Pass 1 counts the patterns' top 16 bits (the
 * exponent and 7 bits of the mantissa: bins of relative width 2^-7 at
 * most) over the whole tensor, which names the bin that holds the k-th
 * largest and its rank there.  Within that bin the low 16 bits decide:
 * they are counted during pass 1 too, for a window of WIN bins around the
 * bin that the first chunk predicts; when the boundary falls outside the
 * window (the tensor's first chunk is not like the rest), one more pass
 * counts the low bits of the boundary bin alone.  Either way the
 * threshold is the exact k-th largest magnitude, the one zm_merge_acc's
 * TIES finds in memory.  The last pass reads the inputs again, trims,
 * elects and writes: the same sums in the same order as zm_merge_acc.
 * Memory: per model a histogram of 2^16 counts and up to two windows of
 * WIN * 2^16 (lower and, for breadcrumbs, upper cut), and a chunk.
 */
#define TOP_BINS ((size_t)1 << 16)
#define LOW_BINS ((size_t)1 << 16)
#define WIN 3

/* One cut: the k-th largest magnitude of a model's task vector. */
struct cut {
	size_t k;                /* rank sought, then rank within the bin */
	uint32_t lo;             /* first bin of the window counted */
	uint32_t bin;            /* the boundary bin, once known */
	uint64_t *low;           /* owned, WIN * LOW_BINS counts */
	bool done;
	float th;
};

/* The TIES merge of tensor h (n elements) in chunks of c: ins and wts as
 * in zm_merge_plain, ref the base; res receives each merged chunk, which
 * emit converts and writes. */
struct ties_stream {
	struct pin *ins;
	const bool *cached;
	const double *wts;
	const double *dens;      /* per model kept fraction */
	const double *gamma;     /* breadcrumbs: per model top fraction
	                          * dropped, or NULL */
	size_t n_models, ref, c;
	const struct zm_merge_params *params;
	float *x, *bx, *res, *sum[4];
	void *raw;
	size_t raw_cap;
	/* Filled by ties_stream: the top-bit histogram of each model, and
	 * its lower cut, then (breadcrumbs) its upper one. */
	uint64_t **top;
	struct cut *cut;
};

/* zm_plain_peek with zm_plain_read_finite's check. */
static enum zm_status peek_finite(struct ties_stream *ts, int lane, size_t i,
                                  const char *name, size_t off, size_t m,
                                  float *dst, struct zm_error *err)
{
	enum zm_status st;
	size_t bad;

	st = zm_plain_peek(&ts->ins[i], lane, name, ts->cached[i], off, m, dst,
	                   ts->raw, ts->raw_cap, err);
	if (st == ZM_OK && (bad = zm_first_nonfinite(dst, m)) < m)
		st = zm_error_set(err, ZM_ERR_DATA, "%s: tensor %s element %zu "
		                  "is not finite", ts->ins[i].label, name,
		                  off + bad);
	return st;
}

static inline uint32_t mag_u32(float v)
{
	uint32_t u;

	memcpy(&u, &v, sizeof(u));
	return u & 0x7fffffffu;
}

/* Counts the low 16 bits of the entries of the task vector x[0..m) -
 * base whose top bits fall in c's window. */
static void cut_count_low(struct cut *c, const float *x, const float *base,
                          size_t m)
{
	size_t j;

	for (j = 0; j < m; j++) {
		uint32_t u = mag_u32(x[j] - base[j]), d = (u >> 16) - c->lo;
		if (d < WIN)
			c->low[(size_t)d * LOW_BINS + (u & 0xffffu)]++;
	}
}

/* The top-bit histogram of the task vector x[0..m) - base, and the
 * windows of the cuts lc and uc (NULL when done), in one loop. */
static void ties_count(uint64_t *top, struct cut *lc, struct cut *uc,
                       const float *x, const float *base, size_t m)
{
	size_t j;

	if (!lc && !uc) {
		for (j = 0; j < m; j++)
			top[mag_u32(x[j] - base[j]) >> 16]++;
		return;
	}
	for (j = 0; j < m; j++) {
		uint32_t u = mag_u32(x[j] - base[j]), b = u >> 16;
		top[b]++;
		if (lc && b - lc->lo < WIN)
			lc->low[(size_t)(b - lc->lo) * LOW_BINS + (u & 0xffffu)]++;
		if (uc && b - uc->lo < WIN)
			uc->low[(size_t)(b - uc->lo) * LOW_BINS + (u & 0xffffu)]++;
	}
}

/* The bin (from the top) of cnt[0..bins) where the k-th largest falls;
 * *k becomes its rank within the bin. */
static uint32_t bins_find(const uint64_t *cnt, size_t bins, size_t *k)
{
	size_t b = bins;

	while (b-- > 0) {
		if (*k <= cnt[b])
			return (uint32_t)b;
		*k -= cnt[b];
	}
	ZM_ASSERT(!"rank beyond the histogram");
	return 0;
}

/* After the first chunk (m of n elements, counted in top): centres c's
 * window on the bin where its rank, scaled to the chunk, falls. */
static void cut_guess(struct cut *c, const uint64_t *top, size_t m, size_t n)
{
	size_t k = (size_t)((double)c->k * (double)m / (double)n + 0.5);
	uint32_t b;

	if (k < 1)
		k = 1;
	if (k > m)
		k = m;
	b = bins_find(top, TOP_BINS, &k);
	c->lo = b > 0 ? b - 1 : 0;
	if (c->lo > TOP_BINS - WIN)
		c->lo = (uint32_t)(TOP_BINS - WIN);
}

/* After pass 1: the boundary bin; the threshold when the window holds it. */
static void cut_resolve(struct cut *c, const uint64_t *top)
{
	size_t k = c->k;
	uint32_t low;

	c->bin = bins_find(top, TOP_BINS, &k);
	c->k = k;
	if (c->bin - c->lo >= WIN)
		return;
	low = bins_find(c->low + (size_t)(c->bin - c->lo) * LOW_BINS,
	                LOW_BINS, &k);
	low |= c->bin << 16;
	memcpy(&c->th, &low, sizeof(c->th));
	c->done = true;
}

/* Pass 1 (lane 0): every model's histogram and windows. */
static enum zm_status ties_pass1(struct ties_stream *ts,
                                 const struct zm_tensor *h, size_t n,
                                 struct zm_error *err)
{
	size_t nm = ts->n_models, i, off, m;
	enum zm_status st = ZM_OK;

	for (off = 0; off < n && st == ZM_OK; off += m) {
		m = n - off < ts->c ? n - off : ts->c;
		st = peek_finite(ts, 0, ts->ref, h->name, off, m, ts->bx, err);
		for (i = 0; i < nm && st == ZM_OK; i++) {
			struct cut *lc = &ts->cut[i], *uc = &ts->cut[nm + i];
			lc = lc->done ? NULL : lc;
			uc = uc->done ? NULL : uc;
			if (!lc && !uc)
				continue;
			if ((st = peek_finite(ts, 0, i, h->name, off, m, ts->x,
			                      err)))
				break;
			if (off > 0) {
				ties_count(ts->top[i], lc, uc, ts->x, ts->bx, m);
				continue;
			}
			ties_count(ts->top[i], NULL, NULL, ts->x, ts->bx, m);
			if (lc) {
				cut_guess(lc, ts->top[i], m, n);
				cut_count_low(lc, ts->x, ts->bx, m);
			}
			if (uc) {
				cut_guess(uc, ts->top[i], m, n);
				cut_count_low(uc, ts->x, ts->bx, m);
			}
		}
	}
	for (i = 0; i < 2 * nm && st == ZM_OK; i++)
		if (!ts->cut[i].done)
			cut_resolve(&ts->cut[i], ts->top[i % nm]);
	return st;
}

/* The pass for the cuts whose boundary bin fell outside their window
 * (lane 1): the low bits of that bin alone. */
static enum zm_status ties_refine(struct ties_stream *ts,
                                  const struct zm_tensor *h, size_t n,
                                  struct zm_error *err)
{
	size_t nm = ts->n_models, i, q, off, m;
	enum zm_status st = ZM_OK;

	for (q = 0; q < 2 * nm; q++) {
		struct cut *c = &ts->cut[q];
		if (c->done)
			continue;
		c->lo = c->bin;
		memset(c->low, 0, WIN * LOW_BINS * sizeof(*c->low));
	}
	for (off = 0; off < n && st == ZM_OK; off += m) {
		m = n - off < ts->c ? n - off : ts->c;
		st = peek_finite(ts, 1, ts->ref, h->name, off, m, ts->bx, err);
		for (i = 0; i < nm && st == ZM_OK; i++) {
			struct cut *lc = &ts->cut[i], *uc = &ts->cut[nm + i];
			if (lc->done && uc->done)
				continue;
			if ((st = peek_finite(ts, 1, i, h->name, off, m, ts->x,
			                      err)))
				break;
			if (!lc->done)
				cut_count_low(lc, ts->x, ts->bx, m);
			if (!uc->done)
				cut_count_low(uc, ts->x, ts->bx, m);
		}
	}
	for (q = 0; q < 2 * nm && st == ZM_OK; q++) {
		struct cut *c = &ts->cut[q];
		uint32_t low;
		size_t k = c->k;
		if (c->done)
			continue;
		low = bins_find(c->low, LOW_BINS, &k) | c->bin << 16;
		memcpy(&c->th, &low, sizeof(c->th));
		c->done = true;
	}
	return st;
}

/* The last pass (the main readers): the sums of zm_merge_acc's TIES,
 * chunk by chunk in the same order, elected and handed to emit. */
static enum zm_status ties_combine(struct ties_stream *ts,
                                   const struct zm_tensor *h, size_t n,
                                   enum zm_status (*emit)(void *, size_t,
                                                          size_t,
                                                          struct zm_error *),
                                   void *ctx, struct zm_error *err)
{
	size_t nm = ts->n_models, i, j, off, m;
	enum zm_status st = ZM_OK;

	for (off = 0; off < n && st == ZM_OK; off += m) {
		m = n - off < ts->c ? n - off : ts->c;
		for (j = 0; j < 4; j++)
			memset(ts->sum[j], 0, m * sizeof(float));
		st = zm_plain_read_finite(&ts->ins[ts->ref], h->name,
		                          ts->cached[ts->ref], off, m, ts->bx,
		                          ts->raw, err);
		for (i = 0; i < nm && st == ZM_OK; i++) {
			if ((st = zm_plain_read_finite(&ts->ins[i], h->name,
			                               ts->cached[i], off, m,
			                               ts->x, ts->raw, err)))
				break;
			zm_merge_ties_add_cut(ts->x, ts->bx, m, ts->cut[i].th,
			                      ts->cut[nm + i].th,
			                      (float)ts->wts[i], ts->sum);
		}
		if (st == ZM_OK) {
			zm_merge_ties_finish(ts->params,
			                     (const float *const *)ts->sum, ts->bx,
			                     m, ts->res);
			st = emit(ctx, off, m, err);
		}
	}
	return st;
}

static enum zm_status ties_stream(struct ties_stream *ts,
                                  const struct zm_tensor *h, size_t n,
                                  enum zm_status (*emit)(void *, size_t,
                                                         size_t,
                                                         struct zm_error *),
                                  void *ctx, struct zm_error *err)
{
	size_t nm = ts->n_models, i, q, kk;
	enum zm_status st = ZM_OK;
	bool refine = false;

	if (!(ts->top = zm_calloc(nm, sizeof(*ts->top))) ||
	    !(ts->cut = zm_calloc(2 * nm, sizeof(*ts->cut)))) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "merge: out of memory");
		goto out;
	}
	/* k = round(density n), at least 1; mergekit: floor, maybe 0. */
	for (i = 0; i < nm; i++) {
		kk = ts->params->mergekit
		     ? (size_t)floor(ts->dens[i] * (double)n)
		     : (size_t)floor(ts->dens[i] * (double)n + 0.5);
		if (kk < 1 && !ts->params->mergekit)
			kk = 1;
		ts->cut[i].k = kk;
		/* Breadcrumbs: the top floor(gamma n) dropped, the next
		 * floor(density n) kept. */
		if (ts->gamma) {
			ts->cut[nm + i].k = (size_t)floor(ts->gamma[i] *
			                                  (double)n);
			if (kk == 0)
				ts->cut[nm + i].k = 0;
			ts->cut[i].k += ts->cut[nm + i].k;
		}
	}
	/* Lower cuts keep |x| >= th, upper ones |x| < th. */
	for (q = 0; q < 2 * nm && st == ZM_OK; q++) {
		struct cut *c = &ts->cut[q];
		if (c->k >= n || c->k == 0) {
			/* Every entry above the cut, or none. */
			c->th = c->k ? 0.0f : INFINITY;
			c->done = true;
			continue;
		}
		if (!ts->top[q % nm] &&
		    !(ts->top[q % nm] = zm_calloc(TOP_BINS, sizeof(uint64_t))))
			st = zm_error_set(err, ZM_ERR_NOMEM, "merge: out of "
			                  "memory");
		else if (!(c->low = zm_calloc(WIN * LOW_BINS, sizeof(uint64_t))))
			st = zm_error_set(err, ZM_ERR_NOMEM, "merge: out of "
			                  "memory");
	}
	if (st == ZM_OK)
		st = ties_pass1(ts, h, n, err);
	for (q = 0; q < 2 * nm; q++)
		refine |= !ts->cut[q].done;
	if (st == ZM_OK && refine)
		st = ties_refine(ts, h, n, err);
	if (st == ZM_OK)
		st = ties_combine(ts, h, n, emit, ctx, err);
out:
	for (i = 0; ts->top && i < nm; i++)
		free(ts->top[i]);
	for (q = 0; ts->cut && q < 2 * nm; q++)
		free(ts->cut[q].low);
	free(ts->top);
	free(ts->cut);
	ts->top = NULL;
	ts->cut = NULL;
	return st;
}

/* TIES over a tensor larger than a chunk (or breadcrumbs): ties_stream. */
enum zm_status zm_plain_ties_stream(struct plain_run *r,
                                    const struct zm_tensor *h,
                                    size_t n, bool *cch,
                                    struct zm_error *err)
{
	struct ties_stream ts;

	memset(&ts, 0, sizeof(ts));
	ts.ins = r->ins;
	ts.cached = cch;
	ts.wts = r->wts;
	ts.dens = r->dens;
	ts.gamma = r->o->params.breadcrumbs ? r->gam : NULL;
	ts.n_models = r->o->n_models;
	ts.ref = r->ref;
	ts.c = r->chunk;
	ts.params = &r->o->params;
	ts.x = r->x;
	ts.bx = r->bx;
	ts.res = r->res;
	memcpy(ts.sum, r->acc.sum, sizeof(ts.sum));
	ts.raw = r->raw;
	ts.raw_cap = r->raw_cap;
	return ties_stream(&ts, h, n, zm_plain_emit_chunk, &r->ec, err);
}

/*
 * SLERP, model_stock and nuslerp, in two passes over the chunks: the first (an
 * earlier lane) sums the dot products and squared norms of each vector
 * of the tensor (params.vectors: the whole tensor, its rows or its
 * columns), the second combines with the coefficients they give.  Memory:
 * a chunk per model and the sums, a few doubles per vector.
 */
struct angles {
	size_t nv;               /* vectors */
	size_t row;              /* ROWS: elements per vector */
	size_t stride;           /* COLS: vectors (the elements apart) */
	int kind;
	size_t ns;               /* sums per vector */
	double *sums;            /* owned, nv * ns */
	float **buf;             /* owned, n_models chunks */
};

static size_t vec_of(const struct angles *a, size_t j)
{
	return a->kind == ZM_MERGE_VEC_ROWS ? j / a->row
	       : a->kind == ZM_MERGE_VEC_COLS ? j % a->stride : 0;
}

/* Reads chunk [off, off + m) of every model into a->buf (task vectors
 * when there is a base, read into r->bx) through lane (-1: the main
 * readers). */
static enum zm_status angles_read(struct plain_run *r, struct angles *a,
                                  const struct zm_tensor *h, int lane,
                                  size_t off, size_t m, const bool *cch,
                                  bool tau, struct zm_error *err)
{
	const struct zm_merge_static_opts *o = r->o;
	enum zm_status st = ZM_OK;
	size_t i, j, bad;

	for (i = 0; i < r->n_in && st == ZM_OK; i++) {
		float *dst = i == r->ref && r->base ? r->bx : a->buf[i];
		if (lane < 0)
			st = zm_plain_read_finite(&r->ins[i], h->name, cch[i],
			                          off, m, dst, r->raw, err);
		else if ((st = zm_plain_peek(&r->ins[i], lane, h->name, cch[i],
		                             off, m, dst, r->raw, r->raw_cap,
		                             err)) ==
		         ZM_OK && (bad = zm_first_nonfinite(dst, m)) < m)
			st = zm_error_set(err, ZM_ERR_DATA, "%s: tensor %s "
			                  "element %zu is not finite",
			                  r->ins[i].label, h->name, off + bad);
	}
	for (i = 0; tau && r->base && i < o->n_models && st == ZM_OK; i++)
		for (j = 0; j < m; j++)
			a->buf[i][j] -= r->bx[j];
	return st;
}

enum zm_status zm_plain_angles(struct plain_run *r,
                               const struct zm_tensor *h, size_t n,
                               const bool *cch, struct zm_error *err)
{
	const struct zm_merge_static_opts *o = r->o;
	bool stock = o->method == ZM_MERGE_MODEL_STOCK;
	bool sl = o->method == ZM_MERGE_SLERP;
	size_t nm = o->n_models, i, j, q, v, off, m;
	enum zm_status st = ZM_OK;
	struct angles a;

	memset(&a, 0, sizeof(a));
	a.kind = o->params.vectors;
	a.nv = 1;
	if (a.kind == ZM_MERGE_VEC_ROWS && h->ndim > 0 && n > 0) {
		a.row = (size_t)h->shape[h->ndim - 1];
		a.nv = n / a.row;
	} else if (a.kind == ZM_MERGE_VEC_COLS && h->ndim > 1 && n > 0) {
		a.stride = n / (size_t)h->shape[0];
		a.nv = a.stride;
	} else {
		a.kind = ZM_MERGE_VEC_TENSOR;
	}
	a.ns = stock ? nm + nm * (nm - 1) / 2 : 3;
	if (sl && r->wts[0] + r->wts[1] == 0)
		return zm_error_set(err, ZM_ERR_DATA, "%s: the merge weights "
		                    "sum to zero", h->name);
	if (!(a.sums = zm_calloc(a.nv * a.ns, sizeof(double))) ||
	    !(a.buf = zm_calloc(nm, sizeof(*a.buf)))) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "merge: out of memory");
		goto out;
	}
	for (i = 0; i < nm && st == ZM_OK; i++)
		if (!(a.buf[i] = zm_malloc((r->chunk ? r->chunk : 1) *
		                           sizeof(float))))
			st = zm_error_set(err, ZM_ERR_NOMEM, "merge: out of "
			                  "memory");
	/* Pass 1: the sums. */
	for (off = 0; off < n && st == ZM_OK; off += m) {
		m = n - off < r->chunk ? n - off : r->chunk;
		if ((st = angles_read(r, &a, h, 0, off, m, cch, true, err)))
			break;
		for (j = 0; j < m; j++) {
			double *s = a.sums + vec_of(&a, off + j) * a.ns;
			if (!stock) {
				double x0 = a.buf[0][j], x1 = a.buf[1][j];
				s[0] += x0 * x1;
				s[1] += x0 * x0;
				s[2] += x1 * x1;
				continue;
			}
			for (i = 0, q = nm; i < nm; i++) {
				double xi = a.buf[i][j];
				s[i] += xi * xi;
				for (v = i + 1; v < nm; v++)
					s[q++] += xi * a.buf[v][j];
			}
		}
	}
	/* The coefficients, in place: nuslerp's c0 and c1, model_stock's
	 * t. */
	for (v = 0; v < a.nv && st == ZM_OK; v++) {
		double *s = a.sums + v * a.ns, c0, c1;
		if (stock) {
			s[0] = zm_merge_model_stock_t(nm, s);
			continue;
		}
		if (sl)
			zm_merge_slerp_coef(r->wts[1] / (r->wts[0] + r->wts[1]),
			                    s[0], s[1], s[2], o->params.mergekit,
			                    &c0, &c1);
		else
			zm_merge_nuslerp_coef(r->wts[0], r->wts[1], s[0], s[1],
			                      s[2], &c0, &c1);
		s[0] = c0;
		s[1] = c1;
	}
	/* Pass 2: the merge. */
	for (off = 0; off < n && st == ZM_OK; off += m) {
		m = n - off < r->chunk ? n - off : r->chunk;
		if ((st = angles_read(r, &a, h, -1, off, m, cch, !stock, err)))
			break;
		for (j = 0; j < m; j++) {
			const double *s = a.sums + vec_of(&a, off + j) * a.ns;
			double b = r->base ? r->bx[j] : 0, x = 0;
			if (stock) {
				for (i = 0; i < nm; i++)
					x += a.buf[i][j];
				r->res[j] = (float)(s[0] * (x / (double)nm) +
				                    (1 - s[0]) * b);
			} else if (r->base) {
				r->res[j] = (float)(b + s[0] * a.buf[0][j] +
				                    s[1] * a.buf[1][j]);
			} else {
				r->res[j] = (float)(s[0] * a.buf[0][j] +
				                    s[1] * a.buf[1][j]);
			}
		}
		st = zm_plain_emit_chunk(&r->ec, off, m, err);
	}
out:
	for (i = 0; a.buf && i < nm; i++)
		free(a.buf[i]);
	free(a.buf);
	free(a.sums);
	return st;
}
