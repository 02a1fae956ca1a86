/*
 * Static merges of plain safetensors checkpoints (zm_merge_plain, merge.h):
 * files without zm.arch, such as Hugging Face models, merged tensor by
 * tensor by name.  Every input's header is read first and the tensor
 * names and shapes are checked against the reference (the base for the
 * task-vector methods, else the first model), so nothing is written for
 * mismatched inputs.  Float tensors are converted to F32 for the maths and
 * back to the reference's dtype (round to nearest even); other tensors are
 * copied from the reference.
 *
 * Linear and task arithmetic merge element by element, so they stream each
 * tensor in chunks from every input and memory is bounded by the chunk,
 * not by the largest tensor.  TIES, DARE and SLERP need a whole tensor per
 * input (a per-tensor threshold, the drop sequence, the angle) and hold
 * one tensor at a time.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "merge.h"

/* One input: its reader, its header, and tensors read ahead of their turn
 * when its data order differs from the reference's. */
struct pin {
	const char *path, *label;
	struct zm_reader *r;
	struct zm_doc hdr;       /* tensors without data, in data order */
	size_t next;             /* the reader's next tensor (index in hdr) */
	struct zm_doc ahead;     /* owned copies read ahead (other order) */
};

/* The index of name in doc, or (size_t)-1. */
static size_t doc_index(const struct zm_doc *doc, const char *name)
{
	const struct zm_tensor *t = zm_doc_find(doc, name);

	return t ? (size_t)(t - doc->tensors) : (size_t)-1;
}

static enum zm_status pin_open(struct pin *in, struct zm_error *err)
{
	enum zm_status st;
	bool eof;

	if ((st = zm_reader_open(&in->r, in->path, err)) ||
	    (st = zm_reader_next_header(in->r, &in->hdr, &eof, err)))
		return st;
	if (eof)
		return zm_error_set(err, ZM_ERR_FORMAT, "%s: empty file",
		                    in->label);
	if (zm_doc_meta(&in->hdr, "zm.arch"))
		return zm_error_set(err, ZM_ERR_DATA, "%s is a zoomerge model "
		                    "and the others are plain checkpoints: "
		                    "merge models of one kind", in->label);
	return ZM_OK;
}

static void pin_close(struct pin *in)
{
	zm_reader_close(in->r);
	zm_doc_release(&in->hdr);
	zm_doc_release(&in->ahead);
}

/*
 * Positions in so that tensor name can be read with pin_read: when it is
 * stored later than the reader's position, the tensors before it are read
 * whole into in->ahead.  *cached tells whether it is in in->ahead.
 */
static enum zm_status pin_seek(struct pin *in, const char *name, bool *cached,
                               struct zm_error *err)
{
	size_t k = doc_index(&in->hdr, name);
	enum zm_status st;

	ZM_ASSERT(k != (size_t)-1);
	*cached = zm_doc_find(&in->ahead, name) != NULL;
	if (*cached)
		return ZM_OK;
	/* Every tensor is read once: one before the reader's position is
	 * in in->ahead. */
	ZM_ASSERT(k >= in->next);
	while (in->next < k) {
		const struct zm_tensor *h = &in->hdr.tensors[in->next];
		struct zm_tensor t;
		zm_tensor_init(&t);
		if ((st = zm_tensor_alloc(&t, h->name, h->dtype, h->ndim,
		                          h->shape, err)))
			return st;
		if ((st = zm_reader_read_data(in->r, in->next, t.data, err)) ||
		    (st = zm_doc_add(&in->ahead, &t, err))) {
			zm_tensor_release(&t);
			return st;
		}
		in->next++;
	}
	return ZM_OK;
}

/*
 * Reads elements [off, off + m) of tensor name of in (positioned by
 * pin_seek; chunks in increasing order) as F32 into dst; raw is scratch of
 * m * 8 bytes.  The tensor counts as read after its last chunk.
 */
static enum zm_status pin_read(struct pin *in, const char *name, bool cached,
                               size_t off, size_t m, float *dst, void *raw,
                               struct zm_error *err)
{
	size_t k = doc_index(&in->hdr, name);
	struct zm_tensor *h = &in->hdr.tensors[k], v;
	size_t es = zm_dtype_size(h->dtype), n = h->nbytes / es;
	enum zm_status st;

	if (cached) {
		struct zm_tensor *c = zm_doc_find(&in->ahead, name);
		zm_tensor_read_f32(c, off, m, dst);
		if (off + m == n)
			zm_doc_remove(&in->ahead, name);
		return ZM_OK;
	}
	if ((st = zm_reader_read_part(in->r, k, raw, m * es, err)))
		return st;
	v = *h;
	v.data = raw;
	v.nbytes = m * es;
	zm_tensor_read_f32(&v, 0, m, dst);
	if (off + m == n)
		in->next = k + 1;
	return ZM_OK;
}

/* Reads the raw bytes [off, off + len) of tensor name (non-float tensors,
 * copied as they are). */
static enum zm_status pin_read_raw(struct pin *in, const char *name,
                                   bool cached, size_t off, size_t len,
                                   void *dst, struct zm_error *err)
{
	size_t k = doc_index(&in->hdr, name);
	struct zm_tensor *h = &in->hdr.tensors[k];
	enum zm_status st;

	if (cached) {
		struct zm_tensor *c = zm_doc_find(&in->ahead, name);
		memcpy(dst, (const char *)c->data + off, len);
		if (off + len == h->nbytes)
			zm_doc_remove(&in->ahead, name);
		return ZM_OK;
	}
	if ((st = zm_reader_read_part(in->r, k, dst, len, err)))
		return st;
	if (off + len == h->nbytes)
		in->next = k + 1;
	return ZM_OK;
}

void zm_merge_f32_to_dtype(const float *src, size_t n, enum zm_dtype dtype,
                           void *dst)
{
	size_t i;

	switch (dtype) {
	case ZM_DTYPE_F32:
		memcpy(dst, src, n * sizeof(float));
		break;
	case ZM_DTYPE_F64:
		for (i = 0; i < n; i++) {
			double d = src[i];
			memcpy((char *)dst + i * sizeof(d), &d, sizeof(d));
		}
		break;
	case ZM_DTYPE_F16:
	case ZM_DTYPE_BF16:
		for (i = 0; i < n; i++) {
			uint16_t h = dtype == ZM_DTYPE_F16 ? zm_f32_to_f16(src[i])
			                                   : zm_f32_to_bf16(src[i]);
			memcpy((char *)dst + i * sizeof(h), &h, sizeof(h));
		}
		break;
	default:
		ZM_ASSERT(!"not a float dtype");
	}
}

/* The first element of x[0..n) that is not finite, or n. */
static size_t first_nonfinite(const float *x, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!isfinite(x[i]))
			return i;
	return n;
}

/* Per-model weight: the number of a scalar weight node, else w (per-layer
 * lists and maps need a zoomerge model's layers). */
static enum zm_status plain_weight(const struct zm_merge_static_opts *o,
                                   size_t i, double *w, struct zm_error *err)
{
	const struct zm_node *spec = o->weight_specs ? o->weight_specs[i]
	                                             : NULL;

	*w = o->weights ? o->weights[i] : 1.0;
	if (!spec)
		return ZM_OK;
	if (spec->type != ZM_NODE_SCALAR)
		return zm_node_error(spec, err, ZM_ERR_CONFIG, "per-layer "
		                     "weights need zoomerge models; %s is a "
		                     "plain checkpoint (give one number)",
		                     o->labels[i]);
	return zm_node_double(spec, "weight", 0, 1e6, w, err);
}

/*
 * Checks the inputs' tensors against the reference ref: every tensor of
 * every input is in ref with the same shape, float where ref's is, and
 * every float tensor of ref is in every model unless copy_missing.
 */
static enum zm_status check_names(struct pin *ins, size_t n_in, size_t ref,
                                  bool copy_missing, struct zm_error *err)
{
	const struct zm_doc *r = &ins[ref].hdr;
	char sa[96], sb[96];
	size_t i, t;

	for (i = 0; i < n_in; i++) {
		if (i == ref)
			continue;
		for (t = 0; t < ins[i].hdr.n_tensors; t++) {
			const struct zm_tensor *h = &ins[i].hdr.tensors[t];
			const struct zm_tensor *rh = zm_doc_find(r, h->name);
			if (!rh)
				return zm_error_set(err, ZM_ERR_DATA, "%s has "
				                    "tensor %s, which %s lacks",
				                    ins[i].label, h->name,
				                    ins[ref].label);
			if (h->ndim != rh->ndim ||
			    memcmp(h->shape, rh->shape,
			           (size_t)h->ndim * sizeof(int64_t)) != 0) {
				zm_shape_format(h->ndim, h->shape, sa, sizeof(sa));
				zm_shape_format(rh->ndim, rh->shape, sb,
				                sizeof(sb));
				return zm_error_set(err, ZM_ERR_DATA, "tensor %s "
				                    "is %s in %s but %s in %s",
				                    h->name, sa, ins[i].label, sb,
				                    ins[ref].label);
			}
			if (zm_dtype_is_float(rh->dtype) !=
			    zm_dtype_is_float(h->dtype))
				return zm_error_set(err, ZM_ERR_DATA, "tensor %s "
				                    "is %s in %s but %s in %s",
				                    h->name, zm_dtype_name(h->dtype),
				                    ins[i].label,
				                    zm_dtype_name(rh->dtype),
				                    ins[ref].label);
		}
		for (t = 0; t < r->n_tensors && !copy_missing; t++) {
			const struct zm_tensor *rh = &r->tensors[t];
			if (zm_dtype_is_float(rh->dtype) &&
			    !zm_doc_find(&ins[i].hdr, rh->name))
				return zm_error_set(err, ZM_ERR_DATA, "%s has no "
				                    "tensor %s (%s has; --missing "
				                    "copy-base copies it from the "
				                    "base)", ins[i].label, rh->name,
				                    ins[ref].label);
		}
	}
	return ZM_OK;
}

/* Elements per chunk of the streamed methods: 1 Mi (4 MiB of F32). */
#define PLAIN_CHUNK ((size_t)1 << 20)

enum zm_status zm_merge_plain(const struct zm_merge_static_opts *o,
                              struct zm_error *err)
{
	bool base = zm_merge_method_needs_base(o->method);
	bool chunked = o->method == ZM_MERGE_LINEAR ||
	               o->method == ZM_MERGE_TASK_ARITHMETIC;
	size_t n_in = o->n_models + (base ? 1 : 0), ref, i, t, cap = 0;
	size_t chunk = o->chunk ? o->chunk : PLAIN_CHUNK;
	struct pin *ins = NULL;
	struct zm_doc out;
	struct zm_merge_acc acc;
	struct zm_writer *w = NULL;
	double *wts = NULL;
	float *x = NULL, *bx = NULL, *res = NULL;
	void *raw = NULL, *obuf = NULL;
	enum zm_status st = ZM_OK;

	zm_doc_init(&out);
	memset(&acc, 0, sizeof(acc));
	if (o->n_models == 0)
		return zm_error_set(err, ZM_ERR_USAGE, "no models to merge");
	if (o->method == ZM_MERGE_SLERP && o->n_models != 2)
		return zm_error_set(err, ZM_ERR_USAGE, "slerp merges exactly "
		                    "two models, not %zu", o->n_models);
	if (base && !o->base_path)
		return zm_error_set(err, ZM_ERR_USAGE, "%s needs a base model "
		                    "(--base or base: in the config)",
		                    zm_merge_method_name(o->method));
	if (!(ins = zm_calloc(n_in, sizeof(*ins))) ||
	    !(wts = zm_calloc(o->n_models, sizeof(*wts))))
		goto nomem;
	for (i = 0; i < n_in; i++) {
		zm_doc_init(&ins[i].hdr);
		zm_doc_init(&ins[i].ahead);
		ins[i].path = i < o->n_models ? o->paths[i] : o->base_path;
		ins[i].label = i < o->n_models ? o->labels[i]
		               : (o->base_label ? o->base_label : o->base_path);
	}
	for (i = 0; i < o->n_models && st == ZM_OK; i++)
		st = plain_weight(o, i, &wts[i], err);
	for (i = 0; i < n_in && st == ZM_OK; i++)
		st = pin_open(&ins[i], err);
	ref = base ? o->n_models : 0;
	if (st == ZM_OK)
		st = check_names(ins, n_in, ref, o->copy_missing, err);
	if (st != ZM_OK)
		goto out;
	/* The output: the reference's tensors, dtypes and metadata (but
	 * none of zoomerge's own keys, which describe another model). */
	for (t = 0; t < ins[ref].hdr.n_tensors && st == ZM_OK; t++) {
		const struct zm_tensor *h = &ins[ref].hdr.tensors[t];
		struct zm_tensor c = *h;
		size_t numel = h->nbytes / zm_dtype_size(h->dtype);
		if (numel > cap)
			cap = numel;
		c.data = NULL;
		c.owns_data = false;
		if (!(c.name = zm_strdup(h->name)))
			goto nomem;
		st = zm_doc_add(&out, &c, err);
	}
	for (i = 0; i < ins[ref].hdr.n_meta && st == ZM_OK; i++) {
		const struct zm_meta_entry *e = &ins[ref].hdr.meta[i];
		if (strncmp(e->key, "zm.", 3) != 0)
			st = zm_doc_set_meta(&out, e->key, e->value, err);
	}
	if (st != ZM_OK)
		goto out;
	if (chunked && cap > chunk)
		cap = chunk;
	if ((st = zm_merge_acc_init(&acc, o->method, &o->params, cap, err)))
		goto out;
	if (!(x = zm_malloc((cap ? cap : 1) * sizeof(float))) ||
	    !(bx = zm_malloc((cap ? cap : 1) * sizeof(float))) ||
	    !(res = zm_malloc((cap ? cap : 1) * sizeof(float))) ||
	    !(raw = zm_malloc((cap ? cap : 1) * 8)) ||
	    !(obuf = zm_malloc((cap ? cap : 1) * 8)))
		goto nomem;
	if ((st = zm_writer_open(&w, o->out, o->compress, err)) ||
	    (st = zm_writer_begin_doc(w, &out, err)))
		goto out;
	for (t = 0; t < out.n_tensors; t++) {
		const struct zm_tensor *h = &out.tensors[t];
		size_t es = zm_dtype_size(h->dtype), n = h->nbytes / es;
		size_t step = chunked ? chunk : (n ? n : 1), off, m;
		bool have_all = true, *cch;
		if (!(cch = zm_calloc(n_in, sizeof(bool))))
			goto nomem;
		for (i = 0; i < n_in; i++)
			if (!zm_doc_find(&ins[i].hdr, h->name))
				have_all = false;
		/* Positions every input that has the tensor. */
		for (i = 0; i < n_in && st == ZM_OK; i++)
			if (zm_doc_find(&ins[i].hdr, h->name))
				st = pin_seek(&ins[i], h->name, &cch[i], err);
		if (st != ZM_OK) {
			free(cch);
			goto out;
		}
		if (!zm_dtype_is_float(h->dtype) || !have_all) {
			/* Copied from the reference; the others' copies are
			 * read past. */
			for (off = 0; off < h->nbytes || off == 0; off += m) {
				m = h->nbytes - off < chunk ? h->nbytes - off
				                            : chunk;
				for (i = 0; i < n_in && st == ZM_OK; i++) {
					if (!zm_doc_find(&ins[i].hdr, h->name))
						continue;
					st = pin_read_raw(&ins[i], h->name,
					                  cch[i], off, m,
					                  i == ref ? obuf : raw,
					                  err);
				}
				if (st == ZM_OK)
					st = zm_writer_write_data(w, obuf, m, err);
				if (st != ZM_OK || m == 0)
					break;
			}
			free(cch);
			if (st != ZM_OK)
				goto out;
			continue;
		}
		for (off = 0; off < n || off == 0; off += m) {
			size_t bad;
			m = n - off < step ? n - off : step;
			zm_merge_acc_begin(&acc, m);
			if (base) {
				st = pin_read(&ins[ref], h->name, cch[ref], off,
				              m, bx, raw, err);
				if (st == ZM_OK &&
				    (bad = first_nonfinite(bx, m)) < m)
					st = zm_error_set(err, ZM_ERR_DATA, "%s: "
					        "tensor %s element %zu is not "
					        "finite", ins[ref].label, h->name,
					        off + bad);
			}
			for (i = 0; i < o->n_models && st == ZM_OK; i++) {
				st = pin_read(&ins[i], h->name, cch[i], off, m,
				              x, raw, err);
				if (st == ZM_OK &&
				    (bad = first_nonfinite(x, m)) < m)
					st = zm_error_set(err, ZM_ERR_DATA, "%s: "
					        "tensor %s element %zu is not "
					        "finite", ins[i].label, h->name,
					        off + bad);
				if (st == ZM_OK)
					zm_merge_acc_add(&acc, x, bx, wts[i]);
			}
			if (st == ZM_OK &&
			    (st = zm_merge_acc_finish(&acc, bx, res, err)))
				zm_error_prefix(err, "%s: ", h->name);
			if (st == ZM_OK && (bad = first_nonfinite(res, m)) < m)
				st = zm_error_set(err, ZM_ERR_DATA, "merged "
				                  "tensor %s element %zu is not "
				                  "finite", h->name, off + bad);
			if (st == ZM_OK) {
				zm_merge_f32_to_dtype(res, m, h->dtype, obuf);
				if (h->dtype == ZM_DTYPE_F16) {
					/* Finite F32, but beyond F16's range. */
					for (bad = 0; bad < m; bad++)
						if ((((uint16_t *)obuf)[bad] &
						     0x7c00u) == 0x7c00u)
							break;
					if (bad < m)
						st = zm_error_set(err,
						        ZM_ERR_DATA, "merged "
						        "tensor %s element %zu "
						        "(%g) overflows F16",
						        h->name, off + bad,
						        (double)res[bad]);
				}
			}
			if (st == ZM_OK)
				st = zm_writer_write_data(w, obuf, m * es, err);
			if (st != ZM_OK || m == 0)
				break;
		}
		free(cch);
		if (st != ZM_OK)
			goto out;
	}
	st = zm_writer_commit(w, err);
	w = NULL;
	goto out;
nomem:
	st = zm_error_set(err, ZM_ERR_NOMEM, "merge: out of memory");
out:
	zm_writer_abort(w);
	for (i = 0; ins && i < n_in; i++)
		pin_close(&ins[i]);
	free(ins);
	free(wts);
	free(x);
	free(bx);
	free(res);
	free(raw);
	free(obuf);
	zm_merge_acc_release(&acc);
	zm_doc_release(&out);
	return st;
}

enum zm_status zm_merge_probe_plain(const char *path, bool *plain,
                                    struct zm_error *err)
{
	struct zm_reader *r = NULL;
	struct zm_doc hdr;
	enum zm_status st;
	bool eof = false;

	*plain = false;
	if (strcmp(path, "-") == 0)
		return ZM_OK;
	zm_doc_init(&hdr);
	st = zm_reader_open(&r, path, err);
	if (st == ZM_OK)
		st = zm_reader_next_header(r, &hdr, &eof, err);
	if (st == ZM_OK && !eof)
		*plain = zm_doc_meta(&hdr, "zm.arch") == NULL;
	zm_doc_release(&hdr);
	zm_reader_close(r);
	return st;
}
