/*
 * The slicer behind slice(1): reads a data source in batches, matches
 * every row against the slicing rules (slice.h) and writes one data
 * stream per slice, each closed by its profile document, plus the
 * optional membership stream and the fitted k-means centroids: the
 * writers and readers of the slice files (their closing profile document:
 * zm_slice_profile_read) and of the centroids, and the writer of the
 * membership stream, a data stream that any data reader (dataset.c)
 * reads.  The profile entries inside a document are profdoc.c's.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "dataset.h"
#include "fileio.h"
#include "json.h"
#include "mem.h"
#include "metakeys.h"
#include "slicer.h"
#include "stream.h"

static enum zm_status nomem(struct zm_error *err)
{
	return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
}

static enum zm_status add_strings(struct zm_doc *out, const struct zm_doc *src,
                                  const size_t *sel, size_t m, size_t n,
                                  struct zm_error *err);

static void dataset_options(const struct zm_slicer_options *o, const char *path,
                            struct zm_dataset_options *d)
{
	zm_dataset_options_init(d);
	d->kind = o->from;
	d->path = path;
	d->images = o->images;
	d->labels = o->labels;
	d->label = o->label;
	d->batch = o->batch;
}

/* Copies standard input to a temporary file so that it can be read twice
 * (k-means fits on a sample of the whole input, then slices it). */
static enum zm_status spool_stdin(struct zm_slicer *s, struct zm_error *err)
{
	const char *tmp = getenv("TMPDIR");
	char buf[65536];
	size_t n, len;
	int fd;

	len = strlen(tmp && *tmp ? tmp : "/tmp") + 32;
	if (!(s->spool = zm_malloc(len)))
		return nomem(err);
	snprintf(s->spool, len, "%s/zm-slice.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if ((fd = mkstemp(s->spool)) < 0) {
		free(s->spool);
		s->spool = NULL;
		return zm_error_errno(err, ZM_ERR_IO, "cannot create a "
		                      "temporary file");
	}
	while ((n = fread(buf, 1, sizeof(buf), stdin)) > 0)
		if (!zm_write_all(fd, buf, n)) {
			close(fd);
			return zm_error_errno(err, ZM_ERR_IO, "%s", s->spool);
		}
	if (ferror(stdin)) {
		close(fd);
		return zm_error_errno(err, ZM_ERR_IO, "standard input");
	}
	if (close(fd) != 0)
		return zm_error_errno(err, ZM_ERR_IO, "%s", s->spool);
	return ZM_OK;
}

/* Reads a centroids file: tensor "centroids" F32 [k, d]. */
static enum zm_status load_centroids(struct zm_slicer *s, size_t d,
                                     struct zm_error *err)
{
	struct zm_reader *r = NULL;
	struct zm_doc doc;
	struct zm_tensor *c, f;
	enum zm_status st;
	bool eof = false;

	zm_doc_init(&doc);
	zm_tensor_init(&f);
	st = zm_reader_open(&r, s->o->centroids, err);
	if (st == ZM_OK)
		st = zm_reader_next(r, &doc, &eof, err);
	if (st == ZM_OK && eof)
		st = zm_error_set(err, ZM_ERR_FORMAT, "%s: no document",
		                  s->o->centroids);
	if (st != ZM_OK)
		goto out;
	c = zm_doc_find(&doc, "centroids");
	if (!c || c->ndim != 2 || c->shape[0] != (int64_t)s->rules.k ||
	    c->shape[1] != (int64_t)d || !zm_dtype_is_float(c->dtype)) {
		st = zm_error_set(err, ZM_ERR_DATA, "%s: expected a float "
		                  "tensor 'centroids' of shape [%zu, %zu] (k "
		                  "of the rules, features of the data)",
		                  s->o->centroids, s->rules.k, d);
		goto out;
	}
	if ((st = zm_tensor_to_f32(&f, c, 1.0f, err)) ||
	    (st = zm_tensor_check_finite(&f, err)))
		goto out;
	memcpy(s->centroids, f.data, s->rules.k * d * sizeof(float));
out:
	zm_tensor_release(&f);
	zm_doc_release(&doc);
	zm_reader_close(r);
	return st;
}

/* First pass: a reservoir sample of the features, then k-means on it. */
static enum zm_status fit_centroids(struct zm_slicer *s, const char *path,
                                    struct zm_error *err)
{
	struct zm_dataset_options dopt;
	struct zm_dataset_reader *r = NULL;
	struct zm_reservoir res;
	struct zm_doc doc;
	struct zm_tensor xf;
	enum zm_status st;
	bool eof = false;
	size_t d = 0;

	memset(&res, 0, sizeof(res));
	zm_doc_init(&doc);
	zm_tensor_init(&xf);
	dataset_options(s->o, path, &dopt);
	if ((st = zm_dataset_open(&r, &dopt, err)))
		goto out;
	for (;;) {
		size_t n;

		if ((st = zm_dataset_next(r, &doc, &eof, err)) || eof)
			break;
		zm_tensor_release(&xf);
		if ((st = zm_data_features(&doc, &xf, err)))
			break;
		n = (size_t)xf.shape[0];
		if (!res.rows) {
			d = (size_t)xf.shape[1];
			if ((st = zm_reservoir_init(&res, s->rules.k_sample, d,
			                            s->rules.k_seed, err)))
				break;
		} else if ((size_t)xf.shape[1] != d) {
			st = zm_error_set(err, ZM_ERR_DATA, "batches differ "
			                  "in width (%zu, then %lld)", d,
			                  (long long)xf.shape[1]);
			break;
		}
		if ((st = zm_tensor_check_finite(&xf, err)))
			break;
		zm_reservoir_add(&res, xf.data, n);
	}
	if (st != ZM_OK)
		goto out;
	if (res.n == 0) {
		st = zm_error_set(err, ZM_ERR_DATA, "%s: no data rows",
		                  s->o->input && strcmp(s->o->input, "-") ?
		                  s->o->input : "<stdin>");
		goto out;
	}
	if (res.n < s->rules.k) {
		st = zm_error_set(err, ZM_ERR_DATA, "k-means: %zu rows for %zu "
		                  "clusters", res.n, s->rules.k);
		goto out;
	}
	if (!(s->centroids = zm_calloc(s->rules.k * d, sizeof(float)))) {
		st = nomem(err);
		goto out;
	}
	s->d = d;
	st = zm_kmeans_fit(res.rows, res.n, d, s->rules.k, s->rules.k_seed,
	                   s->rules.k_iterations, s->centroids, err);
out:
	zm_reservoir_release(&res);
	zm_tensor_release(&xf);
	zm_doc_release(&doc);
	zm_dataset_close(r);
	return st;
}

static char *join_path(const char *dir, const char *name, const char *ext)
{
	return zm_strconcat(dir, "/", name, ext, NULL);
}

/* Metadata of the input worth keeping on every output document. */
static enum zm_status keep_meta(struct zm_slicer *s, const struct zm_doc *doc,
                                struct zm_error *err)
{
	static const char *const keys[] = { ZM_META_SCALE, ZM_META_COLUMNS,
		ZM_META_LABEL, ZM_META_CLASSES };
	enum zm_status st = ZM_OK;
	size_t i;

	for (i = 0; st == ZM_OK && i < sizeof(keys) / sizeof(*keys); i++) {
		const char *v = zm_doc_meta(doc, keys[i]);
		if (v)
			st = zm_doc_set_meta(&s->meta, keys[i], v, err);
	}
	return st;
}

/* Everything that needs the first batch: binding, layout, writers. */
static enum zm_status start(struct zm_slicer *s, const struct zm_doc *doc,
                            size_t d, struct zm_error *err)
{
	const struct zm_tensor *x = zm_doc_find(doc, "x");
	const struct zm_tensor *y = zm_doc_find(doc, "y");
	enum zm_status st;
	struct zm_buf b;
	size_t i;

	if ((st = zm_slice_rules_bind(&s->rules, doc, d, s->o->rules_path,
	                              err)))
		return st;
	if (s->rules.k > 0 && !s->centroids) {
		if (!(s->centroids = zm_calloc(s->rules.k * d, sizeof(float))))
			return nomem(err);
		if ((st = load_centroids(s, d, err)))
			return st;
	} else if (s->rules.k > 0 && s->d != d) {
		return zm_error_set(err, ZM_ERR_DATA, "the data changed width "
		                    "between passes");
	}
	s->d = d;
	s->x_dtype = x->dtype;
	s->x_ndim = x->ndim;
	memcpy(s->x_shape, x->shape, sizeof(s->x_shape));
	s->has_y = y != NULL;
	if (y) {
		s->y_dtype = y->dtype;
		s->y_ndim = y->ndim;
		memcpy(s->y_shape, y->shape, sizeof(s->y_shape));
	}
	if ((st = keep_meta(s, doc, err)) ||
	    (st = add_strings(&s->strcols, doc, NULL, 0, 0, err)))
		return st;
	for (i = 0; i < s->rules.n_rules; i++) {
		struct zm_slice_out *so = &s->out[i];

		if (!(so->path = join_path(s->o->out_dir, s->rules.rules[i].name,
		                           ".safetensors.gz")))
			return nomem(err);
		if ((st = zm_writer_open(&so->w, so->path, s->o->compress,
		                         err)))
			return st;
		/* An empty slice still gets a profile entry of the right
		 * width, so its file says how many features it would have. */
		if ((st = zm_profile_add_batch(&so->prof, ZM_PROFILE_INPUT,
		                               NULL, 0, d, err)))
			return st;
	}
	zm_buf_init(&b);
	zm_buf_puts(&b, "[");
	for (i = 0; i < s->rules.n_rules; i++) {
		if (i)
			zm_buf_puts(&b, ",");
		zm_json_string(&b, s->rules.rules[i].name,
		               strlen(s->rules.rules[i].name));
	}
	zm_buf_puts(&b, "]");
	if (b.failed) {
		zm_buf_release(&b);
		return nomem(err);
	}
	s->classes_json = b.data;
	if (s->o->membership)
		return zm_writer_open(&s->member, s->o->membership,
		                      s->o->compress, err);
	return ZM_OK;
}

/* Copies the rows of src picked by sel[0..m) into a new tensor dst. */
static enum zm_status gather(struct zm_tensor *dst, const char *name,
                             enum zm_dtype dtype, int ndim,
                             const int64_t *shape, const void *src,
                             size_t row_bytes, const size_t *sel, size_t m,
                             struct zm_error *err)
{
	int64_t sh[ZM_MAX_DIMS];
	enum zm_status st;
	size_t i;

	memcpy(sh, shape, sizeof(sh));
	sh[0] = (int64_t)m;
	if ((st = zm_tensor_alloc(dst, name, dtype, ndim, sh, err)))
		return st;
	for (i = 0; i < m; i++)
		memcpy((char *)dst->data + i * row_bytes,
		       (const char *)src + sel[i] * row_bytes, row_bytes);
	return ZM_OK;
}

/* Adds the string columns of src (dataset.h) with rows sel[0..m) of its
 * n, and their levels, to out. */
static enum zm_status add_strings(struct zm_doc *out, const struct zm_doc *src,
                                  const size_t *sel, size_t m, size_t n,
                                  struct zm_error *err)
{
	const size_t plen = strlen(ZM_DATA_COLUMN_PREFIX);
	enum zm_status st = ZM_OK;
	struct zm_tensor t;
	size_t i, j;

	zm_tensor_init(&t);
	for (i = 0; st == ZM_OK && i < src->n_tensors; i++) {
		const struct zm_tensor *c = &src->tensors[i];
		int64_t sh[ZM_MAX_DIMS] = { (int64_t)n };

		if (strncmp(c->name, ZM_DATA_COLUMN_PREFIX, plen) != 0)
			continue;
		st = gather(&t, c->name, ZM_DTYPE_I64, 1, sh, c->data,
		            sizeof(int64_t), sel, m, err);
		if (st == ZM_OK)
			st = zm_doc_add(out, &t, err);
	}
	zm_tensor_release(&t);
	/* Their levels: zm_data_check made sure every column has them. */
	for (j = 0; st == ZM_OK && j < src->n_meta; j++)
		if (strncmp(src->meta[j].key, ZM_DATA_LEVELS_PREFIX,
		            strlen(ZM_DATA_LEVELS_PREFIX)) == 0)
			st = zm_doc_set_meta(out, src->meta[j].key,
			                     src->meta[j].value, err);
	return st;
}

/* A data document from the selected rows of x, y and ids, and of src's
 * string columns when src is given. */
static enum zm_status make_doc(struct zm_slicer *s, struct zm_doc *out,
                               const struct zm_doc *src,
                               const struct zm_tensor *x,
                               const struct zm_tensor *y,
                               const int64_t *ids, const size_t *sel,
                               size_t m, size_t n, struct zm_error *err)
{
	struct zm_tensor t;
	enum zm_status st = ZM_OK;
	size_t i;
	char num[32];

	zm_tensor_init(&t);
	st = gather(&t, "x", x->dtype, x->ndim, x->shape, x->data,
	            n ? x->nbytes / n : 0, sel, m, err);
	if (st == ZM_OK)
		st = zm_doc_add(out, &t, err);
	if (st == ZM_OK && y)
		st = gather(&t, "y", y->dtype, y->ndim, y->shape, y->data,
		            n ? y->nbytes / n : 0, sel, m, err);
	if (st == ZM_OK && y)
		st = zm_doc_add(out, &t, err);
	if (st == ZM_OK) {
		int64_t sh[ZM_MAX_DIMS] = { (int64_t)n };
		st = gather(&t, "id", ZM_DTYPE_I64, 1, sh, ids,
		            sizeof(int64_t), sel, m, err);
	}
	if (st == ZM_OK)
		st = zm_doc_add(out, &t, err);
	zm_tensor_release(&t);
	if (st == ZM_OK && src)
		st = add_strings(out, src, sel, m, n, err);
	for (i = 0; st == ZM_OK && i < s->meta.n_meta; i++)
		st = zm_doc_set_meta(out, s->meta.meta[i].key,
		                     s->meta.meta[i].value, err);
	snprintf(num, sizeof(num), "%zu", m);
	if (st == ZM_OK)
		st = zm_doc_set_meta(out, ZM_META_KIND, "data", err);
	if (st == ZM_OK)
		st = zm_doc_set_meta(out, ZM_META_SAMPLES, num, err);
	return st;
}

/* Slices one batch: match, then one document per non-empty slice. */
static enum zm_status slice_batch(struct zm_slicer *s, const struct zm_doc *doc,
                                  const struct zm_tensor *xf,
                                  struct zm_error *err)
{
	const struct zm_tensor *x = zm_doc_find(doc, "x");
	const struct zm_tensor *y = zm_doc_find(doc, "y");
	const struct zm_tensor *idt = zm_doc_find(doc, "id");
	const int64_t *yl = y && y->dtype == ZM_DTYPE_I64 ? y->data : NULL;
	size_t n = (size_t)xf->shape[0], d = s->d, R = s->rules.n_rules;
	size_t i, j, m;
	int64_t *ids = NULL, *member_y = NULL;
	int32_t *cl = NULL;
	uint8_t *hits = NULL;
	size_t *sel = NULL;
	float *rows;
	struct zm_doc out;
	enum zm_status st = ZM_OK;
	size_t bytes;

	zm_doc_init(&out);
	if (n == 0)
		return ZM_OK;
	if (!zm_size_mul(n, R, &bytes) || !(hits = zm_malloc(bytes)) ||
	    !(ids = zm_malloc(n * sizeof(*ids))) ||
	    !(sel = zm_malloc(n * sizeof(*sel))) ||
	    !(member_y = zm_malloc(n * sizeof(*member_y))) ||
	    !zm_size_mul(n, d, &bytes) ||
	    (s->rules.k && !(cl = zm_malloc(n * sizeof(*cl))))) {
		st = nomem(err);
		goto out;
	}
	if (bytes > s->rows_cap) {
		free(s->rows_buf);
		s->rows_cap = 0;
		if (!(s->rows_buf = zm_calloc(bytes, sizeof(float)))) {
			st = nomem(err);
			goto out;
		}
		s->rows_cap = bytes;
	}
	rows = s->rows_buf;
	for (i = 0; i < n; i++)
		ids[i] = idt ? ((const int64_t *)idt->data)[i] :
		               (int64_t)(s->rows + i);
	if ((st = zm_tensor_check_finite(xf, err)))
		goto out;
	if (s->rules.k &&
	    (st = zm_kmeans_assign(xf->data, n, d, s->centroids, s->rules.k,
	                           cl, err)))
		goto out;
	if ((st = zm_slice_rules_use_batch(&s->rules, doc, n,
	                                   s->o->input ? s->o->input : "<stdin>",
	                                   err)))
		goto out;
	zm_slice_match(&s->rules, xf->data, yl, ids, cl, n, d, hits);
	for (j = 0; j < R; j++) {
		struct zm_slice_out *so = &s->out[j];

		for (i = m = 0; i < n; i++)
			if (hits[i * R + j]) {
				sel[m] = i;
				memcpy(rows + m * d, (const float *)xf->data + i * d,
				       d * sizeof(float));
				m++;
			}
		if (m == 0)
			continue;
		if ((st = zm_profile_add_batch(&so->prof, ZM_PROFILE_INPUT,
		                               rows, m, d, err)))
			goto out;
		if (yl) {
			for (i = 0; i < m; i++)
				member_y[i] = yl[sel[i]];
			if ((st = zm_profile_add_labels(&so->prof, member_y, m,
			                                err)))
				goto out;
		}
		zm_doc_release(&out);
		if ((st = make_doc(s, &out, doc, x, y, ids, sel, m, n, err)) ||
		    (st = zm_doc_set_meta(&out, ZM_META_SLICE,
		                          s->rules.rules[j].name, err)) ||
		    (st = zm_writer_write_doc(so->w, &out, err)))
			goto out;
		so->rows += m;
	}
	/* Rows in no slice, and the membership labels (first slice). */
	for (i = m = 0; i < n; i++) {
		for (j = 0; j < R && !hits[i * R + j]; j++)
			;
		if (j == R) {
			s->unmatched++;
			continue;
		}
		member_y[m] = (int64_t)j;
		sel[m++] = i;
	}
	if (s->member && m > 0) {
		struct zm_tensor yt;
		int64_t sh[1] = { (int64_t)m };

		zm_tensor_init(&yt);
		zm_doc_release(&out);
		st = make_doc(s, &out, NULL, x, NULL, ids, sel, m, n, err);
		if (st == ZM_OK)
			st = zm_tensor_alloc(&yt, "y", ZM_DTYPE_I64, 1, sh, err);
		if (st == ZM_OK) {
			memcpy(yt.data, member_y, m * sizeof(int64_t));
			st = zm_doc_add(&out, &yt, err);
		}
		zm_tensor_release(&yt);
		if (st == ZM_OK)
			st = zm_doc_set_meta(&out, ZM_META_CLASSES,
			                     s->classes_json, err);
		if (st == ZM_OK)
			st = zm_doc_set_meta(&out, ZM_META_LABEL, "slice", err);
		if (st == ZM_OK)
			st = zm_writer_write_doc(s->member, &out, err);
	}
out:
	zm_doc_release(&out);
	free(hits);
	free(ids);
	free(sel);
	free(member_y);
	free(cl);
	return st;
}

/* The last document of a slice: zero rows in the data layout, with the
 * slice's profile tensors, so data readers pass over it and profile
 * readers find it. */
static enum zm_status write_profile(struct zm_slicer *s, size_t j,
                                    struct zm_error *err)
{
	struct zm_slice_out *so = &s->out[j];
	struct zm_doc doc;
	struct zm_tensor t;
	enum zm_status st;
	int64_t sh[ZM_MAX_DIMS];
	size_t i;

	zm_doc_init(&doc);
	zm_tensor_init(&t);
	memcpy(sh, s->x_shape, sizeof(sh));
	sh[0] = 0;
	st = zm_tensor_alloc(&t, "x", s->x_dtype, s->x_ndim, sh, err);
	if (st == ZM_OK)
		st = zm_doc_add(&doc, &t, err);
	if (st == ZM_OK && s->has_y) {
		memcpy(sh, s->y_shape, sizeof(sh));
		sh[0] = 0;
		st = zm_tensor_alloc(&t, "y", s->y_dtype, s->y_ndim, sh, err);
		if (st == ZM_OK)
			st = zm_doc_add(&doc, &t, err);
	}
	if (st == ZM_OK) {
		sh[0] = 0;
		st = zm_tensor_alloc(&t, "id", ZM_DTYPE_I64, 1, sh, err);
		if (st == ZM_OK)
			st = zm_doc_add(&doc, &t, err);
	}
	for (i = 0; st == ZM_OK && i < s->strcols.n_tensors; i++) {
		sh[0] = 0;
		st = zm_tensor_alloc(&t, s->strcols.tensors[i].name,
		                     ZM_DTYPE_I64, 1, sh, err);
		if (st == ZM_OK)
			st = zm_doc_add(&doc, &t, err);
	}
	for (i = 0; st == ZM_OK && i < s->strcols.n_meta; i++)
		st = zm_doc_set_meta(&doc, s->strcols.meta[i].key,
		                     s->strcols.meta[i].value, err);
	zm_tensor_release(&t);
	if (st == ZM_OK)
		st = zm_profile_to_doc(&so->prof, &doc, err);
	for (i = 0; st == ZM_OK && i < s->meta.n_meta; i++)
		st = zm_doc_set_meta(&doc, s->meta.meta[i].key,
		                     s->meta.meta[i].value, err);
	if (st == ZM_OK)
		st = zm_doc_set_meta(&doc, ZM_META_KIND, "data", err);
	if (st == ZM_OK)
		st = zm_doc_set_meta(&doc, ZM_META_SAMPLES, "0", err);
	if (st == ZM_OK)
		st = zm_doc_set_meta(&doc, ZM_META_SLICE, s->rules.rules[j].name,
		                     err);
	if (st == ZM_OK)
		st = zm_doc_set_meta(&doc, ZM_META_PROFILE, "true", err);
	if (st == ZM_OK)
		st = zm_writer_write_doc(so->w, &doc, err);
	zm_doc_release(&doc);
	return st;
}

static enum zm_status write_centroids(struct zm_slicer *s, struct zm_error *err)
{
	struct zm_writer *w = NULL;
	struct zm_doc doc;
	struct zm_tensor t;
	int64_t sh[2] = { (int64_t)s->rules.k, (int64_t)s->d };
	enum zm_status st;
	char num[32];

	zm_doc_init(&doc);
	zm_tensor_init(&t);
	if (!(s->centroids_path = join_path(s->o->out_dir, "centroids",
	                                    ".safetensors.gz")))
		return nomem(err);
	st = zm_tensor_alloc(&t, "centroids", ZM_DTYPE_F32, 2, sh, err);
	if (st == ZM_OK) {
		memcpy(t.data, s->centroids, t.nbytes);
		st = zm_doc_add(&doc, &t, err);
	}
	zm_tensor_release(&t);
	snprintf(num, sizeof(num), "%" PRIu64, s->rules.k_seed);
	if (st == ZM_OK)
		st = zm_doc_set_meta(&doc, ZM_META_KIND, "centroids", err);
	if (st == ZM_OK)
		st = zm_doc_set_meta(&doc, ZM_META_SEED, num, err);
	if (st == ZM_OK)
		st = zm_writer_open(&w, s->centroids_path, ZM_COMPRESS_AUTO,
		                    err);
	if (st == ZM_OK)
		st = zm_writer_write_doc(w, &doc, err);
	if (st == ZM_OK)
		st = zm_writer_commit(w, err);
	else
		zm_writer_abort(w);
	zm_doc_release(&doc);
	return st;
}


void zm_slicer_init(struct zm_slicer *s, const struct zm_slicer_options *o)
{
	memset(s, 0, sizeof(*s));
	s->o = o;
	zm_slice_rules_init(&s->rules);
	zm_doc_init(&s->meta);
	zm_doc_init(&s->strcols);
}

enum zm_status zm_slicer_read(struct zm_slicer *s, struct zm_error *err)
{
	const struct zm_slicer_options *o = s->o;
	struct zm_dataset_options dopt;
	struct zm_dataset_reader *r = NULL;
	struct zm_doc doc;
	struct zm_tensor xf;
	enum zm_status st;
	const char *path = o->input;
	bool eof = false, started = false;
	size_t i;

	zm_doc_init(&doc);
	zm_tensor_init(&xf);
	if ((st = zm_slice_rules_load(o->rules_path, &s->rules, err)))
		goto out;
	if (!(s->out = zm_calloc(s->rules.n_rules, sizeof(*s->out)))) {
		st = nomem(err);
		goto out;
	}
	for (i = 0; i < s->rules.n_rules; i++)
		zm_profile_init(&s->out[i].prof);
	if (mkdir(o->out_dir, 0777) != 0 && errno != EEXIST) {
		st = zm_error_errno(err, ZM_ERR_IO, "%s", o->out_dir);
		goto out;
	}
	if (s->rules.k > 0 && !o->centroids) {
		if (o->from != ZM_DATASET_IDX && (!path || !strcmp(path, "-"))) {
			if ((st = spool_stdin(s, err)))
				goto out;
			path = s->spool;
		}
		if ((st = fit_centroids(s, path, err)))
			goto out;
	}
	dataset_options(o, path, &dopt);
	if ((st = zm_dataset_open(&r, &dopt, err)))
		goto out;
	for (;;) {
		size_t d;

		if ((st = zm_dataset_next(r, &doc, &eof, err)) || eof)
			break;
		zm_tensor_release(&xf);
		if ((st = zm_data_features(&doc, &xf, err)))
			break;
		d = (size_t)xf.shape[1];
		/* An empty batch (a CSV with only its header) says nothing
		 * about the data; the rules are checked against a real one. */
		if (xf.shape[0] == 0)
			continue;
		if (!started) {
			if ((st = start(s, &doc, d, err)))
				break;
			started = true;
		} else if (d != s->d) {
			st = zm_error_set(err, ZM_ERR_DATA, "batch at row %"
			                  PRIu64 " has %zu features, the first "
			                  "had %zu", s->rows, d, s->d);
			break;
		}
		if ((st = slice_batch(s, &doc, &xf, err)))
			break;
		s->rows += (uint64_t)xf.shape[0];
	}
	if (st != ZM_OK)
		goto out;
	if (!started)
		st = zm_error_set(err, ZM_ERR_DATA, "%s: no data rows",
		                  s->o->input && strcmp(s->o->input, "-") ?
		                  s->o->input : "<stdin>");
out:
	zm_tensor_release(&xf);
	zm_doc_release(&doc);
	zm_dataset_close(r);
	return st;
}

enum zm_status zm_slicer_commit(struct zm_slicer *s, struct zm_error *err)
{
	enum zm_status st;
	size_t i;

	for (i = 0; i < s->rules.n_rules; i++)
		if ((st = write_profile(s, i, err)))
			return st;
	/* Everything is written; now make it visible. */
	if (s->rules.k > 0 && (st = write_centroids(s, err)))
		return st;
	/* The membership stream first: it may be a pipe or a device,
	 * written in place, where a late error cannot be undone. */
	if (s->member) {
		st = zm_writer_commit(s->member, err);
		s->member = NULL;
		if (st != ZM_OK)
			return st;
	}
	for (i = 0; i < s->rules.n_rules; i++) {
		st = zm_writer_commit(s->out[i].w, err);
		s->out[i].w = NULL;
		if (st != ZM_OK)
			return st;
	}
	return ZM_OK;
}

void zm_slicer_release(struct zm_slicer *s)
{
	size_t i;

	for (i = 0; s->out && i < s->rules.n_rules; i++) {
		zm_writer_abort(s->out[i].w);
		zm_profile_release(&s->out[i].prof);
		free(s->out[i].path);
	}
	zm_writer_abort(s->member);
	free(s->out);
	free(s->centroids);
	free(s->centroids_path);
	free(s->classes_json);
	free(s->rows_buf);
	zm_doc_release(&s->meta);
	zm_doc_release(&s->strcols);
	zm_slice_rules_release(&s->rules);
	if (s->spool) {
		unlink(s->spool);
		free(s->spool);
	}
	memset(s, 0, sizeof(*s));
}

/* Reads the last document of a slice file that holds a profile, reading
 * only the headers of the data documents before it. */
enum zm_status zm_slice_profile_read(const char *path, struct zm_profile *p,
                                     char **slice_name, struct zm_error *err)
{
	struct zm_reader *r = NULL;
	struct zm_doc doc;
	enum zm_status st;
	bool eof = false, found = false;
	size_t i;

	zm_doc_init(&doc);
	if ((st = zm_reader_open(&r, path, err)))
		return st;
	for (;;) {
		bool has = false;
		const char *name;

		if ((st = zm_reader_next_header(r, &doc, &eof, err)) || eof)
			break;
		for (i = 0; i < doc.n_tensors && !has; i++)
			has = strncmp(doc.tensors[i].name, "profile.", 8) == 0;
		if (!has)
			continue;
		for (i = 0; i < doc.n_tensors; i++) {
			struct zm_tensor *t = &doc.tensors[i];

			if (!(t->data = zm_malloc(t->nbytes ? t->nbytes : 1))) {
				st = zm_error_set(err, ZM_ERR_NOMEM,
				                  "out of memory");
				goto out;
			}
			t->owns_data = true;
			if ((st = zm_reader_read_data(r, i, t->data, err)))
				goto out;
		}
		if ((st = zm_profile_from_doc(p, &doc, err))) {
			zm_error_prefix(err, "%s: ", path);
			goto out;
		}
		found = true;
		name = zm_doc_meta(&doc, ZM_META_SLICE);
		free(*slice_name);
		*slice_name = name ? zm_strdup(name) : NULL;
	}
	if (st == ZM_OK && !found)
		st = zm_error_set(err, ZM_ERR_DATA, "%s: no profile (expected "
		                  "a slice file written by slice)", path);
out:
	zm_doc_release(&doc);
	zm_reader_close(r);
	return st;
}

/* The slice name when the file does not say: its base name without
 * the .safetensors.gz extension. */
char *zm_slice_name_from_path(const char *path)
{
	const char *b = strrchr(path, '/');
	const char *ext[] = { ".safetensors.gz", ".safetensors" };
	size_t len, i;

	b = b ? b + 1 : path;
	len = strlen(b);
	for (i = 0; i < 2; i++) {
		size_t e = strlen(ext[i]);
		if (len > e && strcmp(b + len - e, ext[i]) == 0) {
			len -= e;
			break;
		}
	}
	return zm_strndup(b, len);
}

void zm_slicer_summary(const struct zm_slicer *s, struct zm_buf *b)
{
	size_t i, j;

	zm_buf_printf(b, "mode: %s\nrows: %" PRIu64 "\nunmatched: %" PRIu64
	              "\nfeatures: %zu\n", s->rules.overlapping ?
	              "overlapping" : "partition", s->rows, s->unmatched, s->d);
	if (s->centroids_path) {
		zm_buf_puts(b, "centroids: ");
		zm_yaml_scalar(b, s->centroids_path, false);
		zm_buf_puts(b, "\n");
	}
	zm_buf_puts(b, "slices:\n");
	for (i = 0; i < s->rules.n_rules; i++) {
		const struct zm_slice_out *so = &s->out[i];
		const struct zm_profile_entry *e =
			zm_profile_find(&so->prof, ZM_PROFILE_INPUT);
		double mean = 0, var = 0;

		zm_buf_puts(b, "  - name: ");
		zm_yaml_scalar(b, s->rules.rules[i].name, false);
		zm_buf_puts(b, "\n    file: ");
		zm_yaml_scalar(b, so->path, false);
		zm_buf_printf(b, "\n    rows: %" PRIu64 "\n", so->rows);
		if (e && e->count > 0) {
			for (j = 0; j < e->dim; j++) {
				mean += e->mean[j];
				var += zm_profile_entry_var(e, j);
			}
			mean /= (double)e->dim;
			var /= (double)e->dim;
		}
		zm_buf_puts(b, "    profile: {mean: ");
		zm_json_float(b, mean);
		zm_buf_puts(b, ", var: ");
		zm_json_float(b, var);
		zm_buf_puts(b, ", labels: [");
		for (j = 0; j < so->prof.n_classes; j++)
			zm_buf_printf(b, "%s%" PRId64, j ? ", " : "",
			              so->prof.labels[j]);
		zm_buf_puts(b, "]}\n");
	}
}
