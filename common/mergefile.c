/*
 * The streamed static merge of model files (zm_merge_static, merge.h):
 * reads every input tensor by tensor, with a prefetch thread, merges each
 * through the accumulator and writes the merged model with its profile.
 *
 * The pragma as in merge.c: it changes no result.
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "merge.h"
#include "metakeys.h"
#include "profile.h"
#include "schema.h"

/* ---- static merges ---- */

/* One input of a streamed merge. */
struct input {
	const char *path, *label;
	struct zm_reader *r;
	struct zm_doc hdr;       /* the header: tensors without data */
	size_t next;             /* index of the next tensor to read */
	struct zm_doc ahead;     /* parameters read ahead (other order) */
	struct zm_doc prof;      /* profile tensors */
	struct zm_arch *arch;
};

static bool is_profile(const char *name)
{
	return strncmp(name, "profile.", 8) == 0;
}

/* The parameter tensor names of arch, in layer order (weight, bias). */
static bool is_param(const struct zm_arch *arch, const char *name)
{
	const char *dot = strrchr(name, '.');
	ptrdiff_t l;
	char layer[ZM_LAYER_NAME_MAX + 1];
	size_t len;

	if (!dot || (strcmp(dot, ".weight") != 0 && strcmp(dot, ".bias") != 0))
		return false;
	len = (size_t)(dot - name);
	if (len > ZM_LAYER_NAME_MAX)
		return false;
	memcpy(layer, name, len);
	layer[len] = '\0';
	l = zm_arch_find_layer(arch, layer);
	return l >= 0 && arch->layers[l].has_params;
}

/* Reads the next tensor of in's header into a new owned tensor. */
static enum zm_status read_owned(struct input *in, struct zm_tensor *t,
                                 struct zm_error *err)
{
	const struct zm_tensor *h = &in->hdr.tensors[in->next];
	enum zm_status st;

	zm_tensor_init(t);
	if ((st = zm_tensor_alloc(t, h->name, h->dtype, h->ndim, h->shape, err)))
		return st;
	if ((st = zm_reader_read_data(in->r, in->next, t->data, err))) {
		zm_tensor_release(t);
		return st;
	}
	in->next++;
	return ZM_OK;
}

/* Keeps a tensor just read: profile tensors and read-ahead parameters. */
static enum zm_status keep_tensor(struct input *in, const struct zm_arch *arch,
                                  struct zm_tensor *t, struct zm_error *err)
{
	enum zm_status st = ZM_OK;

	if (is_profile(t->name))
		st = zm_doc_add(&in->prof, t, err);
	else if (is_param(arch, t->name))
		st = zm_doc_add(&in->ahead, t, err);
	zm_tensor_release(t);
	return st;
}

/* Copies tensor t (any float dtype) into dst as n F32 values. */
static void to_f32(const struct zm_tensor *t, float *dst, size_t n)
{
	if (t->dtype == ZM_DTYPE_F32)
		memcpy(dst, t->data, n * sizeof(float));
	else
		zm_tensor_read_f32(t, 0, n, dst);
}

/*
 * Fetches parameter name of input in as F32 into dst (n elements): from
 * the read-ahead cache, or by reading forward, keeping profile tensors
 * and parameters that come first.  F32 data is read straight into dst.
 */
static enum zm_status fetch(struct input *in, const struct zm_arch *arch,
                            const char *name, float *dst, size_t n,
                            struct zm_error *err)
{
	struct zm_tensor *c = zm_doc_find(&in->ahead, name), t;
	enum zm_status st;

	if (c) {
		to_f32(c, dst, n);
		zm_doc_remove(&in->ahead, name);
		return ZM_OK;
	}
	while (in->next < in->hdr.n_tensors) {
		const struct zm_tensor *h = &in->hdr.tensors[in->next];
		if (strcmp(h->name, name) == 0 && h->dtype == ZM_DTYPE_F32) {
			st = zm_reader_read_data(in->r, in->next, dst, err);
			in->next++;
			return st;
		}
		if ((st = read_owned(in, &t, err)))
			return st;
		if (strcmp(t.name, name) == 0) {
			to_f32(&t, dst, n);
			zm_tensor_release(&t);
			return ZM_OK;
		}
		if ((st = keep_tensor(in, arch, &t, err)))
			return st;
	}
	return zm_error_set(err, ZM_ERR_FORMAT, "%s: tensor %s missing",
	                    in->label, name);
}

/* Reads what is left of in's document up to its last profile tensor,
 * keeping the profile tensors; the rest is skipped with the document. */
static enum zm_status drain(struct input *in, const struct zm_arch *arch,
                            struct zm_error *err)
{
	struct zm_tensor t;
	enum zm_status st;
	size_t last = 0, i;

	for (i = in->next; i < in->hdr.n_tensors; i++)
		if (is_profile(in->hdr.tensors[i].name))
			last = i + 1;
	while (in->next < last) {
		if ((st = read_owned(in, &t, err)) ||
		    (st = keep_tensor(in, arch, &t, err)))
			return st;
	}
	return ZM_OK;
}

static enum zm_status open_input(struct input *in, struct zm_error *err)
{
	enum zm_status st;
	const char *arch;
	bool eof;

	if ((st = zm_reader_open(&in->r, in->path, err)))
		return st;
	if ((st = zm_reader_next_header(in->r, &in->hdr, &eof, err)))
		return st;
	if (eof)
		return zm_error_set(err, ZM_ERR_FORMAT, "%s: empty stream",
		                    in->label);
	if (!(arch = zm_doc_meta(&in->hdr, ZM_META_ARCH)))
		return zm_error_set(err, ZM_ERR_FORMAT, "%s: no zm.arch metadata "
		                    "(not a zoomerge model)", in->label);
	return zm_arch_parse_json(arch, strlen(arch), in->label, &in->arch,
	                          err);
}

static void close_input(struct input *in)
{
	zm_reader_close(in->r);
	zm_doc_release(&in->hdr);
	zm_doc_release(&in->ahead);
	zm_doc_release(&in->prof);
	zm_arch_free(in->arch);
}

/* Compares b's parameter tensors with a's, naming the first difference,
 * then the rest of the architecture. */
static enum zm_status same_params(const struct input *a, const struct input *b,
                                  struct zm_error *err)
{
	size_t l, k;
	char sa[96], sb[96], name[ZM_LAYER_NAME_MAX + 8];
	enum zm_status st;

	for (l = 0; l < a->arch->n_layers; l++) {
		if (!a->arch->layers[l].has_params)
			continue;
		for (k = 0; k < 2; k++) {
			const struct zm_tensor *ta, *tb;
			snprintf(name, sizeof(name), "%s.%s",
			         a->arch->layers[l].name, k ? "bias" : "weight");
			ta = zm_doc_find(&a->hdr, name);
			tb = zm_doc_find(&b->hdr, name);
			if (!ta)
				return zm_error_set(err, ZM_ERR_FORMAT,
				                    "%s: tensor %s missing",
				                    a->label, name);
			if (!tb)
				return zm_error_set(err, ZM_ERR_DATA,
				                    "%s has no tensor %s (%s has)",
				                    b->label, name, a->label);
			if (!zm_dtype_is_float(tb->dtype))
				return zm_error_set(err, ZM_ERR_FORMAT,
				                    "%s: tensor %s is %s, not a "
				                    "float", b->label, name,
				                    zm_dtype_name(tb->dtype));
			if (ta->ndim == tb->ndim &&
			    memcmp(ta->shape, tb->shape,
			           (size_t)ta->ndim * sizeof(int64_t)) == 0)
				continue;
			zm_shape_format(ta->ndim, ta->shape, sa, sizeof(sa));
			zm_shape_format(tb->ndim, tb->shape, sb, sizeof(sb));
			return zm_error_set(err, ZM_ERR_DATA,
			                    "architectures differ: tensor %s is "
			                    "%s in %s but %s in %s", name, sb,
			                    b->label, sa, a->label);
		}
	}
	if ((st = zm_model_same_arch(a->arch, b->arch, err)))
		return zm_error_prefix(err, "architectures of %s and %s "
		                       "differ: ", a->label, b->label);
	return ZM_OK;
}

/* Adds a header-only tensor (no data) to doc. */
static enum zm_status add_header_tensor(struct zm_doc *doc, const char *name,
                                        enum zm_dtype dtype, int ndim,
                                        const int64_t *shape,
                                        struct zm_error *err)
{
	struct zm_tensor t;
	size_t numel;

	zm_tensor_init(&t);
	if (!zm_shape_numel(ndim, shape, &numel) ||
	    !zm_size_mul(numel, zm_dtype_size(dtype), &t.nbytes))
		return zm_error_set(err, ZM_ERR_NOMEM, "tensor %s too large",
		                    name);
	if (!(t.name = zm_strdup(name)))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	t.dtype = dtype;
	t.ndim = ndim;
	memcpy(t.shape, shape, (size_t)ndim * sizeof(int64_t));
	return zm_doc_add(doc, &t, err);
}

/*
 * Announces the merged profile's tensors from the inputs' headers (the
 * profile tensors come last in the data, after the header must have been
 * written): profile.count, the widest label histogram, and for each entry
 * in order of first appearance its mean, variance, and count when some
 * input has a count of its own for it or lacks it.
 */
static enum zm_status announce_profile(struct input *ins, size_t n,
                                       struct zm_doc *out,
                                       struct zm_error *err)
{
	static const int64_t one[1] = { 1 };
	int64_t labels = 0;
	size_t i, j, k;
	enum zm_status st;
	bool any = false;
	char name[300];

	for (i = 0; i < n; i++) {
		const struct zm_tensor *t;
		if (!zm_doc_find(&ins[i].hdr, "profile.count"))
			continue;
		any = true;
		t = zm_doc_find(&ins[i].hdr, "profile.labels");
		if (t && t->ndim == 1 && t->shape[0] > labels)
			labels = t->shape[0];
	}
	if (!any)
		return ZM_OK;
	if ((st = add_header_tensor(out, "profile.count", ZM_DTYPE_F64, 1, one,
	                            err)))
		return st;
	if (labels > 0 && (st = add_header_tensor(out, "profile.labels",
	                                          ZM_DTYPE_I64, 1, &labels,
	                                          err)))
		return st;
	for (i = 0; i < n; i++) {
		if (!zm_doc_find(&ins[i].hdr, "profile.count"))
			continue;
		for (j = 0; j < ins[i].hdr.n_tensors; j++) {
			const struct zm_tensor *t = &ins[i].hdr.tensors[j];
			size_t len = strlen(t->name);
			bool need_count = false;
			if (!is_profile(t->name) || len < 13 ||
			    strcmp(t->name + len - 5, ".mean") != 0 ||
			    t->ndim != 1 || len - 5 >= sizeof(name) - 8)
				continue;
			memcpy(name, t->name, len - 5);
			name[len - 5] = '\0';
			strcat(name, ".mean");
			if (zm_doc_find(out, name))
				continue;
			for (k = 0; k < n; k++) {
				char cn[sizeof(name)];
				if (!zm_doc_find(&ins[k].hdr, "profile.count"))
					continue;
				snprintf(cn, sizeof(cn), "%.*s.count",
				         (int)(len - 5), t->name);
				if (zm_doc_find(&ins[k].hdr, cn) ||
				    !zm_doc_find(&ins[k].hdr, t->name))
					need_count = true;
			}
			if ((st = add_header_tensor(out, name, ZM_DTYPE_F32, 1,
			                            t->shape, err)))
				return st;
			name[len - 5] = '\0';
			strcat(name, ".var");
			if ((st = add_header_tensor(out, name, ZM_DTYPE_F32, 1,
			                            t->shape, err)))
				return st;
			name[len - 5] = '\0';
			strcat(name, ".count");
			if (need_count &&
			    (st = add_header_tensor(out, name, ZM_DTYPE_F64, 1,
			                            one, err)))
				return st;
		}
	}
	return ZM_OK;
}

/* Writes the data of the announced profile tensors hdr[first..] from the
 * merged profile p. */
static enum zm_status write_profile(struct zm_writer *w,
                                    const struct zm_doc *hdr, size_t first,
                                    const struct zm_profile *p,
                                    struct zm_error *err)
{
	struct zm_doc built;
	enum zm_status st = ZM_OK;
	size_t i;

	zm_doc_init(&built);
	if (first < hdr->n_tensors && (st = zm_profile_to_doc(p, &built, err)))
		return st;
	for (i = first; i < hdr->n_tensors && st == ZM_OK; i++) {
		const struct zm_tensor *h = &hdr->tensors[i];
		const struct zm_tensor *b = zm_doc_find(&built, h->name);
		size_t len = strlen(h->name);
		if (b && b->nbytes == h->nbytes) {
			st = zm_writer_write_data(w, b->data, b->nbytes, err);
		} else if (b && strcmp(h->name, "profile.labels") == 0 &&
		           b->nbytes < h->nbytes) {
			/* The histogram padded to the announced classes. */
			int64_t zero = 0;
			size_t k;
			st = zm_writer_write_data(w, b->data, b->nbytes, err);
			for (k = b->nbytes; k < h->nbytes && st == ZM_OK;
			     k += sizeof(zero))
				st = zm_writer_write_data(w, &zero, sizeof(zero),
				                          err);
		} else if (!b && len > 6 &&
		           strcmp(h->name + len - 6, ".count") == 0) {
			char entry[300];
			const struct zm_profile_entry *e;
			double c = 0;
			snprintf(entry, sizeof(entry), "%.*s", (int)(len - 14),
			         h->name + 8);
			e = zm_profile_find(p, entry);
			if (e)
				c = e->count;
			st = zm_writer_write_data(w, &c, sizeof(c), err);
		} else {
			st = zm_error_set(err, ZM_ERR_DATA, "merged profile: "
			                  "tensor %s does not match the inputs' "
			                  "headers", h->name);
		}
	}
	zm_doc_release(&built);
	return st;
}

static void hparams_json(const struct zm_merge_static_opts *o,
                         struct zm_buf *b)
{
	size_t i;

	zm_buf_puts(b, "{\"merge\":");
	zm_json_string(b, zm_merge_method_name(o->method),
	               strlen(zm_merge_method_name(o->method)));
	/* A flat map (zoo-add keeps hparams as key=value tags): the models
	 * are one comma-separated string. */
	zm_buf_puts(b, ",\"models\":");
	{
		struct zm_buf names;
		zm_buf_init(&names);
		for (i = 0; i < o->n_models; i++)
			zm_buf_printf(&names, "%s%s", i ? "," : "", o->labels[i]);
		if (names.failed)
			b->failed = true;
		else
			zm_json_string(b, names.data, names.len);
		zm_buf_release(&names);
	}
	if (zm_merge_method_needs_base(o->method) && o->base_label) {
		zm_buf_puts(b, ",\"base\":");
		zm_json_string(b, o->base_label, strlen(o->base_label));
	}
	zm_buf_printf(b, ",\"granularity\":\"%s\"", zm_gran_level_name(o->level));
	if (o->method == ZM_MERGE_TIES) {
		zm_buf_puts(b, ",\"density\":");
		zm_json_double(b, o->params.density);
	}
	if (o->method == ZM_MERGE_DARE) {
		zm_buf_puts(b, ",\"drop\":");
		zm_json_double(b, o->params.drop);
		zm_buf_printf(b, ",\"seed\":%" PRIu64 ",\"dare_ties\":%s",
		              o->params.seed, o->params.dare_ties ? "true"
		                                                  : "false");
	}
	if (zm_merge_method_needs_base(o->method)) {
		zm_buf_puts(b, ",\"lambda\":");
		zm_json_double(b, o->params.lambda);
	}
	zm_buf_puts(b, "}");
}


static enum zm_status check_finite(const float *x, size_t n,
                                   const char *label, const char *name,
                                   struct zm_error *err)
{
	size_t i = zm_first_nonfinite(x, n);

	if (i < n)
		return zm_error_set(err, ZM_ERR_DATA, "%s: tensor %s element "
		                    "%zu is not finite", label, name, i);
	return ZM_OK;
}

/*
 * The parameter phase runs two threads: a reader that inflates the next
 * input tensor (base first, then each model, tensor after tensor) into
 * one of two slots, and the merging thread, which accumulates the other
 * slot and deflates the output.  Inflate and the merge maths then overlap
 * on two cores, and memory holds two input tensors instead of one.
 */
struct prefetch {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct input *ins;
	size_t n_models, n_params;
	bool base;
	const struct zm_doc *out;   /* header: tensor names and sizes */
	const struct zm_arch *arch;
	float *slot[2];
	size_t produced, consumed;  /* sequence numbers */
	bool failed, stop;
	enum zm_status st;
	struct zm_error err;
};

static void *prefetch_main(void *arg)
{
	struct prefetch *p = arg;
	size_t per = p->n_models + (p->base ? 1 : 0), seq = 0, t, j;
	enum zm_status st = ZM_OK;
	struct zm_error err;

	zm_error_clear(&err);
	for (t = 0; t < p->n_params && st == ZM_OK; t++) {
		const struct zm_tensor *h = &p->out->tensors[t];
		size_t n = h->nbytes / sizeof(float);
		for (j = 0; j < per && st == ZM_OK; j++, seq++) {
			/* The base is the last input but is read first. */
			struct input *in = p->base && j == 0 ? &p->ins[p->n_models]
			                 : &p->ins[j - (p->base ? 1 : 0)];
			float *dst = p->slot[seq % 2];
			pthread_mutex_lock(&p->mu);
			while (!p->stop && p->consumed + 2 <= seq)
				pthread_cond_wait(&p->cv, &p->mu);
			pthread_mutex_unlock(&p->mu);
			if (p->stop)
				return NULL;
			st = fetch(in, p->arch, h->name, dst, n, &err);
			if (st == ZM_OK)
				st = check_finite(dst, n, in->label, h->name, &err);
			pthread_mutex_lock(&p->mu);
			if (st != ZM_OK) {
				p->failed = true;
				p->st = st;
				p->err = err;
			} else {
				p->produced = seq + 1;
			}
			pthread_cond_broadcast(&p->cv);
			pthread_mutex_unlock(&p->mu);
		}
	}
	return NULL;
}

/* Waits for tensor number seq; NULL (with err set) when reading failed. */
static float *prefetch_take(struct prefetch *p, size_t seq,
                            struct zm_error *err)
{
	float *x = NULL;

	pthread_mutex_lock(&p->mu);
	while (p->produced <= seq && !p->failed)
		pthread_cond_wait(&p->cv, &p->mu);
	if (p->produced > seq)
		x = p->slot[seq % 2];
	else
		*err = p->err;
	pthread_mutex_unlock(&p->mu);
	return x;
}

/* Hands slot seq back to the reader. */
static void prefetch_done(struct prefetch *p, size_t seq)
{
	pthread_mutex_lock(&p->mu);
	p->consumed = seq + 1;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

static void prefetch_stop(struct prefetch *p)
{
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

/* The output document's header: the parameters in the first model's
 * order (F32), then the merged profile's tensors, and the metadata; *cap
 * is the largest parameter tensor, *n_params their count. */
static enum zm_status output_header(const struct zm_merge_static_opts *o,
                                    struct input *ins, struct zm_doc *out,
                                    size_t *cap, size_t *n_params,
                                    struct zm_error *err)
{
	const struct zm_arch *arch = ins[0].arch;
	enum zm_status st = ZM_OK;
	struct zm_buf b;
	size_t t;

	zm_buf_init(&b);
	/* The output header: parameters in the first model's order, then the
	 * merged profile. */
	for (t = 0; t < ins[0].hdr.n_tensors && st == ZM_OK; t++) {
		const struct zm_tensor *h = &ins[0].hdr.tensors[t];
		size_t numel;
		if (!is_param(arch, h->name))
			continue;
		zm_shape_numel(h->ndim, h->shape, &numel);
		if (numel > *cap)
			*cap = numel;
		st = add_header_tensor(out, h->name, ZM_DTYPE_F32, h->ndim,
		                       h->shape, err);
	}
	*n_params = out->n_tensors;
	if (st == ZM_OK)
		st = announce_profile(ins, o->n_models, out, err);
	zm_arch_to_json(arch, &b);
	if (b.failed)
		st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	if (st == ZM_OK &&
	    ((st = zm_doc_set_meta(out, ZM_META_KIND, "model", err)) ||
	     (st = zm_doc_set_meta(out, ZM_META_ARCH, b.data, err))))
		goto done;
	/* The merged model predicts the classes its inputs name, which
	 * must be the same ones. */
	for (t = 0; t < o->n_models && st == ZM_OK; t++)
		st = zm_schema_adopt(out, &ins[t].hdr, ins[t].label, err);
	if (st != ZM_OK)
		goto done;
	zm_buf_release(&b);
	zm_buf_init(&b);
	hparams_json(o, &b);
	if (b.failed)
		st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	if (st == ZM_OK &&
	    ((st = zm_doc_set_meta(out, ZM_META_HPARAMS, b.data, err)) ||
	     (o->name && (st = zm_doc_set_meta(out, ZM_META_NAME, o->name, err))) ||
	     (o->origin && (st = zm_doc_set_meta(out, ZM_META_ORIGIN, o->origin,
	                                         err)))))
		goto done;
done:
	zm_buf_release(&b);
	return st;
}

/* The merged model's profile: the merge of the models' (the base's is not
 * counted), read after their parameters. */
static enum zm_status merge_profiles(const struct zm_merge_static_opts *o,
                                     struct input *ins,
                                     const struct zm_arch *arch,
                                     struct zm_profile *merged,
                                     struct zm_error *err)
{
	struct zm_profile one;
	enum zm_status st = ZM_OK;
	size_t i;

	zm_profile_init(&one);
	for (i = 0; i < o->n_models; i++) {
		if ((st = drain(&ins[i], arch, err)))
			goto done;
		st = zm_profile_from_doc(&one, &ins[i].prof, err);
		if (st == ZM_ERR_NOTFOUND) {
			st = ZM_OK;
			continue;
		}
		if (st != ZM_OK || (st = zm_profile_merge(merged, &one, err))) {
			zm_error_prefix(err, "%s: ", ins[i].label);
			goto done;
		}
	}
done:
	zm_profile_release(&one);
	return st;
}

/* Input i: a model, or after the models the base. */
static void init_input(struct input *in, const struct zm_merge_static_opts *o,
                       size_t i)
{
	zm_doc_init(&in->hdr);
	zm_doc_init(&in->ahead);
	zm_doc_init(&in->prof);
	in->path = i < o->n_models ? o->paths[i] : o->base_path;
	in->label = i < o->n_models ? o->labels[i]
	            : (o->base_label ? o->base_label : o->base_path);
}

/* What the options must say before any input is opened. */
static enum zm_status check_opts(const struct zm_merge_static_opts *o,
                                 struct zm_error *err)
{
	bool base = zm_merge_method_needs_base(o->method);

	if (o->n_models == 0)
		return zm_error_set(err, ZM_ERR_USAGE, "no models to merge");
	if (o->method == ZM_MERGE_SLERP && o->n_models != 2)
		return zm_error_set(err, ZM_ERR_USAGE, "slerp merges exactly "
		                    "two models, not %zu", o->n_models);
	if (base && !o->base_path)
		return zm_error_set(err, ZM_ERR_USAGE, "%s needs a base model",
		                    zm_merge_method_name(o->method));
	return ZM_OK;
}

/*
 * One parameter tensor h from the reader thread: the base (when bx is
 * given) and each model in turn, weighted by lw[i * stride], merged into
 * res and checked to be finite.
 */
static enum zm_status merge_tensor(struct prefetch *pf, size_t *seq,
                                   const struct zm_tensor *h,
                                   size_t n_models, const double *lw,
                                   size_t stride, struct zm_merge_acc *acc,
                                   float *bx, float *res,
                                   struct zm_error *err)
{
	size_t n = h->nbytes / sizeof(float), i;
	enum zm_status st;
	float *in;

	zm_merge_acc_begin(acc, n);
	if (bx) {
		if (!(in = prefetch_take(pf, *seq, err)))
			return err->status;
		memcpy(bx, in, n * sizeof(float));
		prefetch_done(pf, (*seq)++);
	}
	for (i = 0; i < n_models; i++) {
		if (!(in = prefetch_take(pf, *seq, err)))
			return err->status;
		zm_merge_acc_add(acc, in, bx, lw[i * stride]);
		prefetch_done(pf, (*seq)++);
	}
	if ((st = zm_merge_acc_finish(acc, bx, res, err)))
		return zm_error_prefix(err, "%s: ", h->name);
	return check_finite(res, n, "merged model", h->name, err);
}

enum zm_status zm_merge_static(const struct zm_merge_static_opts *o,
                               struct zm_error *err)
{
	bool base = zm_merge_method_needs_base(o->method);
	size_t n_in = o->n_models + (base ? 1 : 0), i, t, cap = 0, n_params;
	struct input *ins = NULL;
	struct zm_doc out;
	struct zm_merge_acc acc;
	struct zm_writer *w = NULL;
	struct zm_profile merged;
	double *wts = NULL;
	float *x = NULL, *bx = NULL, *res = NULL, *res2 = NULL;
	const struct zm_arch *arch;
	struct prefetch pf;
	pthread_t thread;
	bool running = false;
	size_t seq = 0;
	enum zm_status st = ZM_OK;

	zm_doc_init(&out);
	memset(&pf, 0, sizeof(pf));
	zm_profile_init(&merged);
	memset(&acc, 0, sizeof(acc));
	if ((st = check_opts(o, err)))
		return st;
	{
		/* Checkpoints without zm.arch: merged by tensor name. */
		bool plain;
		if ((st = zm_merge_probe_plain(o->paths[0], &plain, err)))
			return st;
		if (plain)
			return zm_merge_plain(o, err);
		if (o->shard_size)
			return zm_error_set(err, ZM_ERR_USAGE, "--shard-size "
			                    "applies to plain checkpoints, not "
			                    "zoomerge models");
	}
	if (!(ins = zm_calloc(n_in, sizeof(*ins))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (i = 0; i < n_in; i++)
		init_input(&ins[i], o, i);
	/* Every header first: nothing is written for mismatched inputs. */
	for (i = 0; i < n_in && st == ZM_OK; i++)
		st = open_input(&ins[i], err);
	for (i = 1; i < n_in && st == ZM_OK; i++)
		st = same_params(&ins[0], &ins[i], err);
	if (st != ZM_OK)
		goto out;
	arch = ins[0].arch;
	if ((st = output_header(o, ins, &out, &cap, &n_params, err)))
		goto out;
	/* Weights per model and layer. */
	if (!(wts = zm_calloc(o->n_models * arch->n_layers + 1, sizeof(double))))
		goto nomem;
	for (i = 0; i < o->n_models && st == ZM_OK; i++)
		st = zm_merge_layer_weights(o->weight_specs ? o->weight_specs[i]
		                                            : NULL,
		                            o->weights ? o->weights[i] : 1.0,
		                            arch, o->level,
		                            wts + i * arch->n_layers, err);
	if (st != ZM_OK)
		goto out;
	if ((st = zm_merge_acc_init(&acc, o->method, &o->params, cap, err)))
		goto out;
	if (!(x = zm_malloc((cap ? cap : 1) * sizeof(float))) ||
	    !(res = zm_malloc((cap ? cap : 1) * sizeof(float))) ||
	    !(res2 = zm_malloc((cap ? cap : 1) * sizeof(float))) ||
	    (base && !(bx = zm_malloc((cap ? cap : 1) * sizeof(float)))))
		goto nomem;
	if ((st = zm_writer_open(&w, o->out, o->compress, err)) ||
	    (st = zm_writer_begin_doc(w, &out, err)))
		goto out;
	memset(&pf, 0, sizeof(pf));
	pthread_mutex_init(&pf.mu, NULL);
	pthread_cond_init(&pf.cv, NULL);
	pf.ins = ins;
	pf.n_models = o->n_models;
	pf.n_params = n_params;
	pf.base = base;
	pf.out = &out;
	pf.arch = arch;
	pf.slot[0] = x;
	pf.slot[1] = res2;
	if (pthread_create(&thread, NULL, prefetch_main, &pf) != 0) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "merge: cannot start the "
		                  "reader thread");
		goto out;
	}
	running = true;
	for (t = 0; t < n_params && st == ZM_OK; t++) {
		const struct zm_tensor *h = &out.tensors[t];
		const double *lw;
		size_t dot = (size_t)(strrchr(h->name, '.') - h->name);
		char layer[ZM_LAYER_NAME_MAX + 1];
		memcpy(layer, h->name, dot);
		layer[dot] = '\0';
		/* Model i's weight for this layer: lw[i * n_layers]. */
		lw = wts + zm_arch_find_layer(arch, layer);
		st = merge_tensor(&pf, &seq, h, o->n_models, lw, arch->n_layers,
		                  &acc, bx, res, err);
		if (st == ZM_OK)
			st = zm_writer_write_data(w, res, h->nbytes, err);
	}
	if (st != ZM_OK)
		goto out;
	pthread_join(thread, NULL);
	running = false;
	if ((st = merge_profiles(o, ins, arch, &merged, err)))
		goto out;
	if ((st = write_profile(w, &out, n_params, &merged, err)))
		goto out;
	st = zm_writer_commit(w, err);
	w = NULL;
	goto out;
nomem:
	st = zm_error_set(err, ZM_ERR_NOMEM, "merge: out of memory");
out:
	if (running) {
		prefetch_stop(&pf);
		pthread_join(thread, NULL);
	}
	if (pf.slot[0]) {
		pthread_mutex_destroy(&pf.mu);
		pthread_cond_destroy(&pf.cv);
	}
	zm_writer_abort(w);
	for (i = 0; i < n_in; i++)
		close_input(&ins[i]);
	free(ins);
	free(wts);
	free(x);
	free(bx);
	free(res);
	free(res2);
	zm_merge_acc_release(&acc);
	zm_profile_release(&merged);
	zm_doc_release(&out);
	return st;
}
