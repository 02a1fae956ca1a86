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
 * Linear, task arithmetic and DARE merge element by element, so they
 * stream each tensor in chunks from every input and memory is bounded by
 * the chunk, not by the largest tensor.  TIES, breadcrumbs, SLERP,
 * model_stock and nuslerp need something of the whole tensor first
 * (thresholds, dot products and norms): they read each tensor twice, the
 * first time through a second reader of each file (zm_plain_peek), and hold
 * chunks too.  Those passes are in mergepass.c; this file opens the
 * inputs, writes the output and runs the one-pass methods.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "json.h"
#include "mem.h"
#include "merge.h"
#include "mergeplainpriv.h"

/* The index of name in doc, or (size_t)-1. */
static size_t doc_index(const struct zm_doc *doc, const char *name)
{
	const struct zm_tensor *t = zm_doc_find(doc, name);

	return t ? (size_t)(t - doc->tensors) : (size_t)-1;
}

/* The shard holding tensor name and its index there (it must exist). */
static struct shard *pin_shard(struct pin *in, const char *name, size_t *k)
{
	size_t s;

	for (s = 0; s < in->n_sh; s++)
		if ((*k = doc_index(&in->sh[s].hdr, name)) != (size_t)-1)
			return &in->sh[s];
	ZM_ASSERT(!"tensor in no shard");
	return NULL;
}

/* Opens shard s of in at path (taken) and appends its tensors to in's
 * header, refusing zoomerge models and names in two shards. */
static enum zm_status shard_open(struct pin *in, size_t s, char *path,
                                 struct zm_error *err)
{
	struct shard *sh = &in->sh[s];
	enum zm_status st;
	bool eof;
	size_t t;

	sh->path = path;
	if ((st = zm_reader_open(&sh->r, path, err)) ||
	    (st = zm_reader_next_header(sh->r, &sh->hdr, &eof, err)))
		return st;
	if (eof)
		return zm_error_set(err, ZM_ERR_FORMAT, "%s: empty file", path);
	if (zm_doc_meta(&sh->hdr, "zm.arch"))
		return zm_error_set(err, ZM_ERR_DATA, "%s is a zoomerge model "
		                    "and the others are plain checkpoints: "
		                    "merge models of one kind", in->label);
	for (t = 0; t < sh->hdr.n_tensors; t++) {
		struct zm_tensor c = sh->hdr.tensors[t];
		if (zm_doc_find(&in->hdr, c.name))
			return zm_error_set(err, ZM_ERR_FORMAT, "%s: tensor %s "
			                    "is in two shards", in->label, c.name);
		c.data = NULL;
		c.owns_data = false;
		if (!(c.name = zm_strdup(c.name)))
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		if ((st = zm_doc_add(&in->hdr, &c, err)))
			return st;
	}
	for (t = 0; s == 0 && t < sh->hdr.n_meta; t++)
		if ((st = zm_doc_set_meta(&in->hdr, sh->hdr.meta[t].key,
		                          sh->hdr.meta[t].value, err)))
			return st;
	return ZM_OK;
}

static bool ends_with(const char *s, const char *tail)
{
	size_t a = strlen(s), b = strlen(tail);

	return a >= b && strcmp(s + a - b, tail) == 0;
}

static bool is_dir(const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* dir + "/" + name in new memory, or NULL. */
static char *join(const char *dir, size_t dir_len, const char *name)
{
	size_t n = dir_len + 1 + strlen(name) + 1;
	char *p = zm_malloc(n);

	if (p)
		snprintf(p, n, "%.*s/%s", (int)dir_len, dir, name);
	return p;
}

/* Index files above this size are refused (a 7B model's is 25 KiB). */
#define INDEX_MAX ((size_t)64 << 20)

static enum zm_status pin_open_index(struct pin *in, const char *ipath,
                                     struct zm_error *err)
{
	struct zm_shard_index ix;
	const char *slash = strrchr(ipath, '/');
	size_t dlen = slash ? (size_t)(slash - ipath) : 1, s, t;
	const char *dir = slash ? ipath : ".";
	char *bytes = NULL;
	size_t len;
	enum zm_status st;

	zm_shard_index_init(&ix);
	if ((st = zm_read_file(ipath, INDEX_MAX, &bytes, &len, err)) ||
	    (st = zm_shard_index_parse(bytes, len, ipath, &ix, err)))
		goto out;
	if (!(in->sh = zm_calloc(ix.n_files, sizeof(*in->sh)))) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (s = 0; s < ix.n_files && st == ZM_OK; s++) {
		char *p = join(dir, dlen, ix.files[s]);
		zm_doc_init(&in->sh[s].hdr);
		in->n_sh++;
		if (!p)
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		else
			st = shard_open(in, s, p, err);
		/* Each shard holds exactly what the index says. */
		for (t = 0; st == ZM_OK && t < in->sh[s].hdr.n_tensors; t++) {
			const char *name = in->sh[s].hdr.tensors[t].name;
			const char *f = zm_shard_index_file(&ix, name);
			if (!f || strcmp(f, ix.files[s]) != 0)
				st = zm_error_set(err, ZM_ERR_FORMAT, "%s: tensor "
				                  "%s is in %s, but the index says "
				                  "%s", ipath, name, ix.files[s],
				                  f ? f : "nothing");
		}
	}
	if (st == ZM_OK && in->hdr.n_tensors != ix.map->count) {
		for (t = 0; t < ix.map->count; t++)
			if (!zm_doc_find(&in->hdr, ix.map->keys[t]->value))
				break;
		st = zm_error_set(err, ZM_ERR_FORMAT, "%s: tensor %s is in no "
		                  "shard", ipath, t < ix.map->count
		                  ? ix.map->keys[t]->value : "?");
	}
out:
	free(bytes);
	zm_shard_index_release(&ix);
	return st;
}

/*
 * Opens an input: a safetensors file, a shard index (*.index.json), or a
 * directory holding model.safetensors.index.json or model.safetensors.
 */
static enum zm_status pin_open(struct pin *in, struct zm_error *err)
{
	enum zm_status st;
	char *p = NULL;

	if (is_dir(in->path)) {
		size_t dl = strlen(in->path);
		if (!(p = join(in->path, dl, "model.safetensors.index.json")))
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		if (access(p, F_OK) == 0) {
			st = pin_open_index(in, p, err);
			free(p);
			return st;
		}
		free(p);
		if (!(p = join(in->path, dl, "model.safetensors")))
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		if (access(p, F_OK) != 0) {
			st = zm_error_set(err, ZM_ERR_NOTFOUND, "%s: a directory "
			                  "without model.safetensors.index.json "
			                  "or model.safetensors", in->path);
			free(p);
			return st;
		}
	} else if (ends_with(in->path, ".index.json")) {
		return pin_open_index(in, in->path, err);
	} else if (!(p = zm_strdup(in->path))) {
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	if (!(in->sh = zm_calloc(1, sizeof(*in->sh)))) {
		free(p);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	zm_doc_init(&in->sh[0].hdr);
	in->n_sh = 1;
	return shard_open(in, 0, p, err);
}

static void pin_close(struct pin *in)
{
	size_t s;

	for (s = 0; s < in->n_sh; s++) {
		zm_reader_close(in->sh[s].r);
		zm_reader_close(in->sh[s].lane[0]);
		zm_reader_close(in->sh[s].lane[1]);
		zm_doc_release(&in->sh[s].hdr);
		free(in->sh[s].path);
	}
	free(in->sh);
	zm_doc_release(&in->hdr);
	zm_doc_release(&in->ahead);
}

/*
 * Positions in so that tensor name can be read with pin_read: when it is
 * stored later than its shard reader's position, the tensors before it
 * are read whole into in->ahead.  *cached tells whether it is there.
 */
static enum zm_status pin_seek(struct pin *in, const char *name, bool *cached,
                               struct zm_error *err)
{
	size_t k;
	struct shard *sh = pin_shard(in, name, &k);
	enum zm_status st;

	*cached = zm_doc_find(&in->ahead, name) != NULL;
	if (*cached)
		return ZM_OK;
	/* Every tensor is read once: one before the reader's position is
	 * in in->ahead. */
	ZM_ASSERT(k >= sh->next);
	while (sh->next < k) {
		const struct zm_tensor *h = &sh->hdr.tensors[sh->next];
		struct zm_tensor t;
		zm_tensor_init(&t);
		if ((st = zm_tensor_alloc(&t, h->name, h->dtype, h->ndim,
		                          h->shape, err)))
			return st;
		if ((st = zm_reader_read_data(sh->r, sh->next, t.data, err)) ||
		    (st = zm_doc_add(&in->ahead, &t, err))) {
			zm_tensor_release(&t);
			return st;
		}
		sh->next++;
	}
	return ZM_OK;
}

/* The next m elements of tensor k (header h) from r as F32 into dst,
 * through raw (m * element size bytes). */
static enum zm_status read_f32_part(struct zm_reader *r, size_t k,
                                    const struct zm_tensor *h, size_t m,
                                    void *raw, float *dst,
                                    struct zm_error *err)
{
	size_t es = zm_dtype_size(h->dtype);
	struct zm_tensor v;
	enum zm_status st;

	if ((st = zm_reader_read_part(r, k, raw, m * es, err)))
		return st;
	v = *h;
	v.data = raw;
	v.nbytes = m * es;
	zm_tensor_read_f32(&v, 0, m, dst);
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
	size_t k;
	struct shard *sh = pin_shard(in, name, &k);
	struct zm_tensor *h = &sh->hdr.tensors[k];
	size_t es = zm_dtype_size(h->dtype), n = h->nbytes / es;
	enum zm_status st;

	if (cached) {
		struct zm_tensor *c = zm_doc_find(&in->ahead, name);
		zm_tensor_read_f32(c, off, m, dst);
		if (off + m == n)
			zm_doc_remove(&in->ahead, name);
		return ZM_OK;
	}
	if ((st = read_f32_part(sh->r, k, h, m, raw, dst, err)))
		return st;
	if (off + m == n)
		sh->next = k + 1;
	return ZM_OK;
}

/*
 * pin_read for an earlier pass over tensor name (lane 0 or 1): the same
 * elements from a second reader of the same file (the page cache serves
 * it), or from in->ahead without consuming them; raw is scratch of
 * raw_cap >= m * 8 bytes.  The main reader must not have passed the
 * tensor yet (pin_seek positioned it).
 */
enum zm_status zm_plain_peek(struct pin *in, int lane, const char *name,
                             bool cached, size_t off, size_t m, float *dst,
                             void *raw, size_t raw_cap,
                             struct zm_error *err)
{
	size_t k;
	struct shard *sh = pin_shard(in, name, &k);
	struct zm_tensor *h = &sh->hdr.tensors[k];
	size_t es = zm_dtype_size(h->dtype), n = h->nbytes / es, t;
	enum zm_status st;

	if (cached) {
		zm_tensor_read_f32(zm_doc_find(&in->ahead, name), off, m, dst);
		return ZM_OK;
	}
	if (!sh->lane[lane]) {
		struct zm_doc d;
		bool eof;
		if (strcmp(sh->path, "-") == 0)
			return zm_error_set(err, ZM_ERR_USAGE, "%s: standard "
			                    "input cannot be read twice, as "
			                    "this method reads each tensor; "
			                    "give a file", in->label);
		zm_doc_init(&d);
		st = zm_reader_open(&sh->lane[lane], sh->path, err);
		if (st == ZM_OK)
			st = zm_reader_next_header(sh->lane[lane], &d, &eof, err);
		/* The file must not have changed since its header was read. */
		for (t = 0; st == ZM_OK && t < sh->hdr.n_tensors; t++)
			if (eof || d.n_tensors != sh->hdr.n_tensors ||
			    strcmp(d.tensors[t].name, sh->hdr.tensors[t].name) ||
			    d.tensors[t].nbytes != sh->hdr.tensors[t].nbytes)
				st = zm_error_set(err, ZM_ERR_IO, "%s changed "
				                  "while it was read", sh->path);
		zm_doc_release(&d);
		if (st != ZM_OK)
			return st;
		sh->lnext[lane] = 0;
	}
	ZM_ASSERT(k >= sh->lnext[lane]);
	for (; sh->lnext[lane] < k; sh->lnext[lane]++) {
		size_t left = sh->hdr.tensors[sh->lnext[lane]].nbytes, b;
		for (; left > 0; left -= b) {
			b = left < raw_cap ? left : raw_cap;
			if ((st = zm_reader_read_part(sh->lane[lane],
			                              sh->lnext[lane], raw, b,
			                              err)))
				return st;
		}
	}
	if ((st = read_f32_part(sh->lane[lane], k, h, m, raw, dst, err)))
		return st;
	if (off + m == n)
		sh->lnext[lane] = k + 1;
	return ZM_OK;
}

/* Reads the raw bytes [off, off + len) of tensor name (non-float tensors,
 * copied as they are). */
static enum zm_status pin_read_raw(struct pin *in, const char *name,
                                   bool cached, size_t off, size_t len,
                                   void *dst, struct zm_error *err)
{
	size_t k;
	struct shard *sh = pin_shard(in, name, &k);
	struct zm_tensor *h = &sh->hdr.tensors[k];
	enum zm_status st;

	if (cached) {
		struct zm_tensor *c = zm_doc_find(&in->ahead, name);
		memcpy(dst, (const char *)c->data + off, len);
		if (off + len == h->nbytes)
			zm_doc_remove(&in->ahead, name);
		return ZM_OK;
	}
	if ((st = zm_reader_read_part(sh->r, k, dst, len, err)))
		return st;
	if (off + len == h->nbytes)
		sh->next = k + 1;
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

/* pin_read, refusing a non-finite element with its input and index. */
enum zm_status zm_plain_read_finite(struct pin *in, const char *name,
                                    bool cached, size_t off, size_t m,
                                    float *dst, void *raw,
                                    struct zm_error *err)
{
	enum zm_status st;
	size_t bad;

	st = pin_read(in, name, cached, off, m, dst, raw, err);
	if (st == ZM_OK && (bad = zm_first_nonfinite(dst, m)) < m)
		st = zm_error_set(err, ZM_ERR_DATA, "%s: tensor %s element %zu "
		                  "is not finite", in->label, name, off + bad);
	return st;
}


enum zm_status zm_plain_emit_chunk(void *ctx, size_t off, size_t m,
                                   struct zm_error *err)
{
	struct emit_ctx *e = ctx;
	const struct zm_tensor *h = e->h;
	size_t bad;

	if ((bad = zm_first_nonfinite(e->res, m)) < m)
		return zm_error_set(err, ZM_ERR_DATA, "merged tensor %s element "
		                    "%zu is not finite", h->name, off + bad);
	zm_merge_f32_to_dtype(e->res, m, h->dtype, e->obuf);
	if (h->dtype == ZM_DTYPE_F16) {
		/* Finite in F32, but beyond F16's range. */
		for (bad = 0; bad < m; bad++) {
			uint16_t v;
			memcpy(&v, (char *)e->obuf + 2 * bad, sizeof(v));
			if ((v & 0x7c00u) == 0x7c00u)
				return zm_error_set(err, ZM_ERR_DATA, "merged "
				                    "tensor %s element %zu (%g) "
				                    "overflows F16", h->name,
				                    off + bad, (double)e->res[bad]);
		}
	}
	return zm_writer_write_data(e->w, e->obuf, m * zm_dtype_size(h->dtype),
	                            err);
}

/*
 * Sharded output (o->shard_size): out's tensors cut, in order, into files
 * of at most shard_size bytes of data (a larger tensor gets a file of its
 * own) named model-NNNNN-of-NNNNN.safetensors in the directory o->out,
 * and model.safetensors.index.json.  Every file is prepared (written and
 * synced) before any is renamed into place.
 */
struct outset {
	size_t n, cur;
	size_t *first;               /* n + 1 boundaries, owned */
	struct zm_writer **w;        /* owned, n */
	char **names;                /* owned, n */
	const char *dir;
};

static void outset_abort(struct outset *os)
{
	size_t s;

	for (s = 0; s < os->n; s++) {
		if (os->w)
			zm_writer_abort(os->w[s]);
		if (os->names)
			free(os->names[s]);
	}
	free(os->w);
	free(os->names);
	free(os->first);
	memset(os, 0, sizeof(*os));
}

static enum zm_status outset_plan(struct outset *os, const struct zm_doc *out,
                                  uint64_t size, const char *dir,
                                  struct zm_error *err)
{
	uint64_t fill = 0;
	size_t t, s;

	memset(os, 0, sizeof(*os));
	os->dir = dir;
	if (!(os->first = zm_calloc(out->n_tensors + 2, sizeof(size_t))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	os->n = 1;
	for (t = 0; t < out->n_tensors; t++) {
		uint64_t b = out->tensors[t].nbytes;
		if (fill > 0 && fill + b > size) {
			os->first[os->n++] = t;
			fill = 0;
		}
		fill += b;
	}
	os->first[os->n] = out->n_tensors;
	if (!(os->w = zm_calloc(os->n, sizeof(*os->w))) ||
	    !(os->names = zm_calloc(os->n, sizeof(*os->names))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (s = 0; s < os->n; s++) {
		char name[64];
		snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors",
		         s + 1, os->n);
		if (!(os->names[s] = zm_strdup(name)))
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	if (mkdir(dir, 0777) != 0 && errno != EEXIST)
		return zm_error_set(err, ZM_ERR_IO, "%s: %s", dir,
		                    strerror(errno));
	return ZM_OK;
}

/* Opens shard s: its header holds out's tensors of that shard. */
static enum zm_status outset_open(struct outset *os, size_t s,
                                  const struct zm_doc *out,
                                  struct zm_error *err)
{
	struct zm_doc sub;
	enum zm_status st = ZM_OK;
	size_t t;
	char *path = join(os->dir, strlen(os->dir), os->names[s]);

	zm_doc_init(&sub);
	if (!path)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (t = os->first[s]; t < os->first[s + 1] && st == ZM_OK; t++) {
		struct zm_tensor c = out->tensors[t];
		if (!(c.name = zm_strdup(c.name)))
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		else
			st = zm_doc_add(&sub, &c, err);
	}
	for (t = 0; t < out->n_meta && st == ZM_OK; t++)
		st = zm_doc_set_meta(&sub, out->meta[t].key, out->meta[t].value,
		                     err);
	if (st == ZM_OK &&
	    (st = zm_writer_open(&os->w[s], path, ZM_COMPRESS_NONE, err)) ==
	    ZM_OK)
		st = zm_writer_begin_doc(os->w[s], &sub, err);
	zm_doc_release(&sub);
	free(path);
	return st;
}

/* Prepares every shard, writes the index, then renames them all. */
static enum zm_status outset_commit(struct outset *os,
                                    const struct zm_doc *out,
                                    struct zm_error *err)
{
	struct zm_outfile f;
	struct zm_buf b;
	uint64_t total = 0;
	enum zm_status st = ZM_OK;
	size_t s, t;
	char *path;

	/* A checkpoint without tensors still gets its one (empty) shard. */
	for (s = 0; s < os->n && st == ZM_OK; s++)
		if (!os->w[s])
			st = outset_open(os, s, out, err);
	for (s = 0; s < os->n && st == ZM_OK; s++)
		st = zm_writer_prepare(os->w[s], err);
	if (st != ZM_OK)
		return st;
	zm_buf_init(&b);
	for (t = 0; t < out->n_tensors; t++)
		total += out->tensors[t].nbytes;
	zm_buf_printf(&b, "{\"metadata\": {\"total_size\": %llu}, "
	              "\"weight_map\": {", (unsigned long long)total);
	for (s = 0; s < os->n; s++)
		for (t = os->first[s]; t < os->first[s + 1]; t++) {
			const char *name = out->tensors[t].name;
			zm_buf_puts(&b, t ? ", " : "");
			zm_json_string(&b, name, strlen(name));
			zm_buf_puts(&b, ": ");
			zm_json_string(&b, os->names[s], strlen(os->names[s]));
		}
	zm_buf_puts(&b, "}}\n");
	if (b.failed || !(path = join(os->dir, strlen(os->dir),
	                              "model.safetensors.index.json"))) {
		zm_buf_release(&b);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	st = zm_outfile_open(&f, path, false, err);
	free(path);
	if (st == ZM_OK) {
		if ((st = zm_outfile_write(&f, b.data, b.len, err)) ||
		    (st = zm_outfile_prepare(&f, err)))
			zm_outfile_abort(&f);
	}
	zm_buf_release(&b);
	if (st != ZM_OK)
		return st;
	for (s = 0; s < os->n; s++) {
		enum zm_status cs = zm_writer_commit(os->w[s], err);
		os->w[s] = NULL;
		if (cs != ZM_OK && st == ZM_OK)
			st = cs;
	}
	if (st == ZM_OK)
		return zm_outfile_commit(&f, err);
	zm_outfile_abort(&f);
	return st;
}

/* Elements per chunk of the streamed methods: 1 Mi (4 MiB of F32). */
#define PLAIN_CHUNK ((size_t)1 << 20)


/*
 * The output's header: the reference's tensors, dtypes and metadata
 * (but none of zoomerge's own keys, which describe another model).
 * *cap is the largest tensor's element count.
 */
static enum zm_status plain_output_doc(const struct plain_run *r,
                                       struct zm_doc *out, size_t *cap,
                                       struct zm_error *err)
{
	const struct zm_doc *hdr = &r->ins[r->ref].hdr;
	const struct zm_merge_static_opts *o = r->o;
	enum zm_status st = ZM_OK;
	size_t t, i;

	*cap = 0;
	for (t = 0; t < hdr->n_tensors && st == ZM_OK; t++) {
		const struct zm_tensor *h = &hdr->tensors[t];
		struct zm_tensor c = *h;
		size_t numel = h->nbytes / zm_dtype_size(h->dtype);
		if (numel > *cap)
			*cap = numel;
		c.data = NULL;
		c.owns_data = false;
		if (o->set_dtype && zm_dtype_is_float(h->dtype)) {
			c.dtype = o->out_dtype;
			c.nbytes = numel * zm_dtype_size(c.dtype);
		}
		if (!(c.name = zm_strdup(h->name)))
			return zm_error_set(err, ZM_ERR_NOMEM,
			                    "merge: out of memory");
		st = zm_doc_add(out, &c, err);
	}
	for (i = 0; i < hdr->n_meta && st == ZM_OK; i++) {
		const struct zm_meta_entry *e = &hdr->meta[i];
		if (strncmp(e->key, "zm.", 3) != 0)
			st = zm_doc_set_meta(out, e->key, e->value, err);
	}
	return st;
}

/*
 * A float tensor some input lacks, copied from the reference into the
 * output's dtype; the others' copies are read past.
 */
static enum zm_status plain_copy_converted(struct plain_run *r,
                                           const struct zm_tensor *h,
                                           size_t n, const bool *cch,
                                           struct zm_error *err)
{
	enum zm_status st = ZM_OK;
	size_t off, m, i;

	r->ec.h = h;
	for (off = 0; off < n || off == 0; off += m) {
		m = n - off < r->chunk ? n - off : r->chunk;
		for (i = 0; i < r->n_in && st == ZM_OK; i++) {
			if (!zm_doc_find(&r->ins[i].hdr, h->name))
				continue;
			st = pin_read(&r->ins[i], h->name, cch[i], off, m,
			              i == r->ref ? r->res : r->x, r->raw, err);
		}
		if (st == ZM_OK)
			st = zm_plain_emit_chunk(&r->ec, off, m, err);
		if (st != ZM_OK || m == 0)
			break;
	}
	return st;
}

/*
 * A tensor copied byte for byte from the reference (integers, or one
 * some input lacks); the others' copies are read past.
 */
static enum zm_status plain_copy_raw(struct plain_run *r,
                                     const struct zm_tensor *h,
                                     const bool *cch, struct zm_error *err)
{
	enum zm_status st = ZM_OK;
	size_t off, m, i;

	for (off = 0; off < h->nbytes || off == 0; off += m) {
		m = h->nbytes - off < r->chunk ? h->nbytes - off : r->chunk;
		for (i = 0; i < r->n_in && st == ZM_OK; i++) {
			if (!zm_doc_find(&r->ins[i].hdr, h->name))
				continue;
			st = pin_read_raw(&r->ins[i], h->name, cch[i], off, m,
			                  i == r->ref ? r->obuf : r->raw, err);
		}
		if (st == ZM_OK)
			st = zm_writer_write_data(r->ec.w, r->obuf, m, err);
		if (st != ZM_OK || m == 0)
			break;
	}
	return st;
}


/* An elementwise method chunk by chunk (the whole tensor otherwise). */
static enum zm_status plain_merge_chunks(struct plain_run *r,
                                         const struct zm_tensor *h,
                                         size_t n, const bool *cch,
                                         struct zm_error *err)
{
	const struct zm_merge_static_opts *o = r->o;
	size_t step = r->chunked ? r->chunk : (n ? n : 1), off, m, i;
	enum zm_status st = ZM_OK;

	for (off = 0; off < n || off == 0; off += m) {
		m = n - off < step ? n - off : step;
		zm_merge_acc_begin(&r->acc, m);
		if (r->base)
			st = zm_plain_read_finite(&r->ins[r->ref], h->name,
			                          cch[r->ref], off, m, r->bx,
			                          r->raw, err);
		for (i = 0; i < o->n_models && st == ZM_OK; i++) {
			st = zm_plain_read_finite(&r->ins[i], h->name, cch[i],
			                          off, m, r->x, r->raw, err);
			/* Per-model density: TIES' kept fraction, DARE's
			 * keep probability. */
			if (o->method == ZM_MERGE_TIES)
				r->acc.params.density = r->dens[i];
			else if (o->method == ZM_MERGE_DARE && o->tensor_params)
				r->acc.params.drop = 1.0 - r->dens[i];
			if (st == ZM_OK)
				zm_merge_acc_add(&r->acc, r->x, r->bx, r->wts[i]);
		}
		if (st == ZM_OK &&
		    (st = zm_merge_acc_finish(&r->acc, r->bx, r->res, err)))
			zm_error_prefix(err, "%s: ", h->name);
		if (st == ZM_OK)
			st = zm_plain_emit_chunk(&r->ec, off, m, err);
		if (st != ZM_OK || m == 0)
			break;
	}
	return st;
}

/* One output tensor: positions the inputs, then copies or merges it. */
static enum zm_status plain_tensor(struct plain_run *r,
                                   const struct zm_tensor *h,
                                   struct zm_error *err)
{
	const struct zm_merge_static_opts *o = r->o;
	size_t n = h->nbytes / zm_dtype_size(h->dtype), i;
	bool have_all = true, *cch;
	enum zm_status st = ZM_OK;

	if (!(cch = zm_calloc(r->n_in, sizeof(bool))))
		return zm_error_set(err, ZM_ERR_NOMEM, "merge: out of memory");
	for (i = 0; i < r->n_in; i++)
		if (!zm_doc_find(&r->ins[i].hdr, h->name))
			have_all = false;
	/* Positions every input that has the tensor. */
	for (i = 0; i < r->n_in && st == ZM_OK; i++)
		if (zm_doc_find(&r->ins[i].hdr, h->name))
			st = pin_seek(&r->ins[i], h->name, &cch[i], err);
	if (st != ZM_OK)
		goto out;
	if (zm_dtype_is_float(h->dtype) && !have_all &&
	    zm_doc_find(&r->ins[r->ref].hdr, h->name)->dtype != h->dtype) {
		st = plain_copy_converted(r, h, n, cch, err);
		goto out;
	}
	if (!zm_dtype_is_float(h->dtype) || !have_all) {
		st = plain_copy_raw(r, h, cch, err);
		goto out;
	}
	r->ec.h = h;
	if (o->tensor_params &&
	    (st = o->tensor_params(o->tensor_ctx, &r->ins[r->ref].hdr, h->name,
	                           r->wts, r->dens, r->gam, err)))
		goto out;
	if (o->method == ZM_MERGE_TIES && (n > r->chunk || o->params.breadcrumbs))
		st = zm_plain_ties_stream(r, h, n, cch, err);
	else if (o->method == ZM_MERGE_MODEL_STOCK ||
	         o->method == ZM_MERGE_NUSLERP || o->method == ZM_MERGE_SLERP)
		st = zm_plain_angles(r, h, n, cch, err);
	else
		st = plain_merge_chunks(r, h, n, cch, err);
out:
	free(cch);
	return st;
}

/* Checks the options and opens the inputs; r->ins etc. are allocated. */
static enum zm_status plain_open(struct plain_run *r, struct zm_error *err)
{
	const struct zm_merge_static_opts *o = r->o;
	enum zm_status st = ZM_OK;
	size_t i;

	if (o->n_models == 0)
		return zm_error_set(err, ZM_ERR_USAGE, "no models to merge");
	if ((o->method == ZM_MERGE_SLERP || o->method == ZM_MERGE_NUSLERP) &&
	    o->n_models != 2)
		return zm_error_set(err, ZM_ERR_USAGE, "%s merges exactly "
		                    "two models, not %zu",
		                    zm_merge_method_name(o->method), o->n_models);
	if (o->method == ZM_MERGE_MODEL_STOCK && o->n_models < 2)
		return zm_error_set(err, ZM_ERR_USAGE, "model_stock needs two "
		                    "models or more besides the base, not %zu",
		                    o->n_models);
	if (r->base && !o->base_path)
		return zm_error_set(err, ZM_ERR_USAGE, "%s needs a base model "
		                    "(--base or base: in the config)",
		                    zm_merge_method_name(o->method));
	if (o->set_dtype && o->out_dtype != ZM_DTYPE_F32 &&
	    o->out_dtype != ZM_DTYPE_F16 && o->out_dtype != ZM_DTYPE_BF16)
		return zm_error_set(err, ZM_ERR_USAGE, "merge: output dtype %s: "
		                    "expected F32, F16 or BF16",
		                    zm_dtype_name(o->out_dtype));
	if (!(r->ins = zm_calloc(r->n_in, sizeof(*r->ins))) ||
	    !(r->wts = zm_calloc(o->n_models, sizeof(*r->wts))) ||
	    !(r->dens = zm_calloc(o->n_models, sizeof(*r->dens))) ||
	    !(r->gam = zm_calloc(o->n_models, sizeof(*r->gam))))
		return zm_error_set(err, ZM_ERR_NOMEM, "merge: out of memory");
	for (i = 0; i < r->n_in; i++) {
		zm_doc_init(&r->ins[i].hdr);
		zm_doc_init(&r->ins[i].ahead);
		r->ins[i].path = i < o->n_models ? o->paths[i] : o->base_path;
		r->ins[i].label = i < o->n_models ? o->labels[i]
		                  : (o->base_label ? o->base_label
		                                   : o->base_path);
	}
	for (i = 0; i < o->n_models && st == ZM_OK; i++) {
		st = plain_weight(o, i, &r->wts[i], err);
		r->dens[i] = o->method == ZM_MERGE_DARE ? 1.0 - o->params.drop
		                                        : o->params.density;
	}
	for (i = 0; i < r->n_in && st == ZM_OK; i++)
		st = pin_open(&r->ins[i], err);
	if (st == ZM_OK)
		st = check_names(r->ins, r->n_in, r->ref, o->copy_missing, err);
	return st;
}

enum zm_status zm_merge_plain(const struct zm_merge_static_opts *o,
                              struct zm_error *err)
{
	struct plain_run r;
	struct zm_doc out;
	struct zm_writer *w = NULL;
	struct outset os;
	enum zm_status st;
	size_t i, t, cap, c1;

	memset(&r, 0, sizeof(r));
	memset(&os, 0, sizeof(os));
	zm_doc_init(&out);
	r.o = o;
	r.base = zm_merge_method_needs_base(o->method) ||
	         (o->method == ZM_MERGE_NUSLERP && o->base_path);
	/* Every method but TIES (its cut) and SLERP (its angle) is
	 * elementwise: chunks of any size give the same result, except
	 * DARE's draws, which follow the chunk order (still seeded). */
	r.chunked = o->method == ZM_MERGE_LINEAR ||
	            o->method == ZM_MERGE_TASK_ARITHMETIC ||
	            o->method == ZM_MERGE_DARE;
	r.n_in = o->n_models + (r.base ? 1 : 0);
	r.ref = r.base ? o->n_models : 0;
	r.chunk = o->chunk ? o->chunk : PLAIN_CHUNK;
	if ((st = plain_open(&r, err)) ||
	    (st = plain_output_doc(&r, &out, &cap, err)))
		goto out;
	/* TIES streams the tensors larger than a chunk (ties_stream). */
	if ((r.chunked || o->method == ZM_MERGE_TIES ||
	     o->method == ZM_MERGE_MODEL_STOCK ||
	     o->method == ZM_MERGE_NUSLERP || o->method == ZM_MERGE_SLERP) &&
	    cap > r.chunk)
		cap = r.chunk;
	if ((st = zm_merge_acc_init(&r.acc, o->method, &o->params, cap, err)))
		goto out;
	c1 = cap ? cap : 1;
	if (!(r.x = zm_malloc(c1 * sizeof(float))) ||
	    !(r.bx = zm_malloc(c1 * sizeof(float))) ||
	    !(r.res = zm_malloc(c1 * sizeof(float))) ||
	    !(r.raw = zm_malloc(c1 * 8)) || !(r.obuf = zm_malloc(c1 * 8))) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "merge: out of memory");
		goto out;
	}
	r.raw_cap = c1 * 8;
	if (o->shard_size) {
		if ((st = outset_plan(&os, &out, o->shard_size, o->out, err)))
			goto out;
	} else if ((st = zm_writer_open(&w, o->out, o->compress, err)) ||
	           (st = zm_writer_begin_doc(w, &out, err))) {
		goto out;
	}
	r.ec.res = r.res;
	r.ec.obuf = r.obuf;
	r.ec.w = w;
	for (t = 0; t < out.n_tensors && st == ZM_OK; t++) {
		if (o->shard_size && t == os.first[os.cur]) {
			if ((st = outset_open(&os, os.cur, &out, err)))
				goto out;
			r.ec.w = os.w[os.cur++];
		}
		st = plain_tensor(&r, &out.tensors[t], err);
	}
	if (st != ZM_OK)
		goto out;
	if (o->shard_size) {
		st = outset_commit(&os, &out, err);
	} else {
		st = zm_writer_commit(w, err);
		w = NULL;
	}
out:
	zm_writer_abort(w);
	outset_abort(&os);
	for (i = 0; r.ins && i < r.n_in; i++)
		pin_close(&r.ins[i]);
	free(r.ins);
	free(r.wts);
	free(r.dens);
	free(r.gam);
	free(r.x);
	free(r.bx);
	free(r.res);
	free(r.raw);
	free(r.obuf);
	zm_merge_acc_release(&r.acc);
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
	if (is_dir(path) || ends_with(path, ".index.json")) {
		*plain = true;
		return ZM_OK;
	}
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

void zm_shard_index_init(struct zm_shard_index *ix)
{
	memset(ix, 0, sizeof(*ix));
}

void zm_shard_index_release(struct zm_shard_index *ix)
{
	zm_node_free(ix->root);
	free(ix->files);
	zm_shard_index_init(ix);
}

enum zm_status zm_shard_index_parse(const char *bytes, size_t len,
                                    const char *source,
                                    struct zm_shard_index *ix,
                                    struct zm_error *err)
{
	const struct zm_node *map;
	enum zm_status st;
	size_t i, j;

	zm_shard_index_release(ix);
	if ((st = zm_config_parse(bytes, len, source, &ix->root, err)))
		return st;
	if ((st = zm_node_expect(ix->root, ZM_NODE_MAP, "shard index", err)))
		goto fail;
	if (!(map = zm_node_get(ix->root, "weight_map"))) {
		st = zm_node_error(ix->root, err, ZM_ERR_CONFIG, "shard index "
		                   "without weight_map");
		goto fail;
	}
	if ((st = zm_node_expect(map, ZM_NODE_MAP, "weight_map", err)))
		goto fail;
	if (map->count == 0) {
		st = zm_node_error(map, err, ZM_ERR_CONFIG, "empty weight_map");
		goto fail;
	}
	ix->map = map;
	if (!(ix->files = zm_calloc(map->count, sizeof(*ix->files)))) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		goto fail;
	}
	for (i = 0; i < map->count; i++) {
		const struct zm_node *v = map->items[i];
		const struct zm_node *k = map->keys[i];
		const char *f;
		/* A name with a NUL byte would be found by no lookup. */
		if (k->len == 0 || strlen(k->value) != k->len) {
			st = zm_node_error(k, err, ZM_ERR_CONFIG, "'%s' is not "
			                   "a tensor name", k->value);
			goto fail;
		}
		if ((st = zm_node_string(v, "shard file", &f, err)))
			goto fail;
		if (f[0] == '\0' || strchr(f, '/') || strlen(f) != v->len ||
		    strcmp(f, ".") == 0 || strcmp(f, "..") == 0) {
			st = zm_node_error(v, err, ZM_ERR_CONFIG, "'%s' is not "
			                   "a file name next to the index", f);
			goto fail;
		}
		for (j = 0; j < ix->n_files; j++)
			if (strcmp(ix->files[j], f) == 0)
				break;
		if (j == ix->n_files)
			ix->files[ix->n_files++] = f;
	}
	return ZM_OK;
fail:
	zm_shard_index_release(ix);
	return st;
}

const char *zm_shard_index_file(const struct zm_shard_index *ix,
                                const char *name)
{
	const struct zm_node *v = ix->map ? zm_node_get(ix->map, name) : NULL;

	return v && v->type == ZM_NODE_SCALAR ? v->value : NULL;
}
