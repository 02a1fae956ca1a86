/*
 * Models: creation with seeded weights, copies, and the model document
 * (parameters, zm.arch and the identity metadata, everything else kept in
 * extra) in both directions.  The architecture is arch.c's, the passes
 * compute.c's, the losses loss.c's.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "model.h"
#include "random.h"

static enum zm_status nomem(struct zm_error *err)
{
	return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
}

/* ---- models ---- */

void zm_model_free(struct zm_model *model)
{
	size_t i;

	if (!model)
		return;
	if (model->layers) {
		for (i = 0; i < model->arch->n_layers; i++) {
			zm_tensor_release(&model->layers[i].weight);
			zm_tensor_release(&model->layers[i].bias);
		}
	}
	free(model->layers);
	zm_arch_free(model->arch);
	free(model->name);
	free(model->version);
	free(model->parent);
	free(model->tags);
	free(model->metrics);
	free(model->hparams);
	zm_doc_release(&model->extra);
	free(model);
}

/* A model with a copy of arch and zero-filled parameters. */
static enum zm_status model_alloc(const struct zm_arch *arch,
                                  struct zm_model **out, struct zm_error *err)
{
	struct zm_model *m = zm_calloc(1, sizeof(*m));
	enum zm_status st;
	size_t i;

	*out = NULL;
	if (!m)
		return nomem(err);
	zm_doc_init(&m->extra);
	st = zm_arch_copy(arch, &m->arch, err);
	if (st != ZM_OK) {
		free(m);
		return st;
	}
	m->layers = zm_calloc(arch->n_layers, sizeof(*m->layers));
	if (!m->layers) {
		zm_model_free(m);
		return nomem(err);
	}
	for (i = 0; i < arch->n_layers; i++) {
		struct zm_layer *l = &m->layers[i];
		zm_tensor_init(&l->weight);
		zm_tensor_init(&l->bias);
		l->spec = &m->arch->layers[i];
	}
	for (i = 0; i < arch->n_layers; i++) {
		struct zm_layer *l = &m->layers[i];
		char name[ZM_LAYER_NAME_MAX + 16];
		int64_t shape[4];
		int ndim = 2;
		if (!l->spec->has_params)
			continue;
		shape[0] = (int64_t)l->spec->out_features;
		shape[1] = (int64_t)l->spec->in_features;
		if (l->spec->type == ZM_LAYER_STANDARDIZE ||
		    l->spec->type == ZM_LAYER_BATCHNORM) {
			ndim = 1;
			shape[0] = (int64_t)l->spec->in_features;
		} else if (l->spec->type == ZM_LAYER_CONV2D) {
			ndim = 4;
			shape[0] = l->spec->units;
			shape[1] = l->spec->in_shape[0];
			shape[2] = l->spec->kernel[0];
			shape[3] = l->spec->kernel[1];
		}
		snprintf(name, sizeof(name), "%s.weight", l->spec->name);
		st = zm_tensor_alloc(&l->weight, name, ZM_DTYPE_F32, ndim,
		                     shape, err);
		if (st != ZM_OK)
			goto fail;
		snprintf(name, sizeof(name), "%s.bias", l->spec->name);
		st = zm_tensor_alloc(&l->bias, name, ZM_DTYPE_F32, 1, shape,
		                     err);
		if (st != ZM_OK)
			goto fail;
	}
	*out = m;
	return ZM_OK;
fail:
	zm_model_free(m);
	return st;
}

enum zm_status zm_model_new(const struct zm_arch *arch, uint64_t seed,
                            struct zm_model **out, struct zm_error *err)
{
	struct zm_rng rng;
	enum zm_status st;
	size_t i, j;

	st = model_alloc(arch, out, err);
	if (st != ZM_OK)
		return st;
	zm_rng_seed(&rng, seed);
	for (i = 0; i < arch->n_layers; i++) {
		struct zm_layer *l = &(*out)->layers[i];
		size_t fan_in = l->spec->in_features;
		size_t fan_out = l->spec->out_features;
		size_t count = fan_in * fan_out;
		float *w = l->weight.data;
		/* standardize starts unfitted: mean 0, inv_std 0;
		 * batchnorm as in PyTorch: running mean 0, variance 1. */
		if (l->spec->type == ZM_LAYER_BATCHNORM)
			for (j = 0; j < fan_in; j++)
				((float *)l->bias.data)[j] = 1.0f;
		if (!l->spec->trainable)
			continue;
		if (l->spec->type == ZM_LAYER_CONV2D) {
			/* Fans of one output pixel, as PyTorch counts them. */
			size_t k = (size_t)(l->spec->kernel[0] *
			                    l->spec->kernel[1]);
			fan_in = (size_t)l->spec->in_shape[0] * k;
			fan_out = (size_t)l->spec->units * k;
			count = l->spec->n_weight;
		}
		if (l->spec->act == ZM_ACT_RELU || l->spec->act == ZM_ACT_GELU) {
			double std = sqrt(2.0 / (double)fan_in);
			for (j = 0; j < count; j++)
				w[j] = (float)(std * zm_rng_normal(&rng));
		} else {
			double a = sqrt(6.0 / (double)(fan_in + fan_out));
			for (j = 0; j < count; j++)
				w[j] = (float)(a * (2.0 * zm_rng_uniform(&rng) -
				                    1.0));
		}
	}
	return ZM_OK;
}

enum zm_status zm_model_set_string(char **field, const char *value,
                                   struct zm_error *err)
{
	char *copy = NULL;

	if (value) {
		copy = zm_strdup(value);
		if (!copy)
			return nomem(err);
	}
	free(*field);
	*field = copy;
	return ZM_OK;
}

/* The metadata keys the model struct holds itself, in struct order. */
static const char *const meta_keys[] = {
	"zm.name", "zm.version", "zm.parent", "zm.tags", "zm.metrics",
	"zm.hparams"
};

static char **meta_field(struct zm_model *m, size_t i)
{
	char **fields[] = { &m->name, &m->version, &m->parent, &m->tags,
	                    &m->metrics, &m->hparams };
	return fields[i];
}

static const char *meta_value(const struct zm_model *m, size_t i)
{
	const char *values[] = { m->name, m->version, m->parent, m->tags,
	                         m->metrics, m->hparams };
	return values[i];
}

static bool is_model_meta(const char *key)
{
	size_t i;

	if (!strcmp(key, "zm.kind") || !strcmp(key, "zm.arch"))
		return true;
	for (i = 0; i < COUNT_OF(meta_keys); i++)
		if (!strcmp(key, meta_keys[i]))
			return true;
	return false;
}

static enum zm_status copy_extra(struct zm_doc *dst, const struct zm_doc *src,
                                 const struct zm_model *skip_params,
                                 struct zm_error *err)
{
	enum zm_status st;
	size_t i, j;

	for (i = 0; i < src->n_tensors; i++) {
		const struct zm_tensor *t = &src->tensors[i];
		struct zm_tensor c;
		bool param = false;
		if (skip_params)
			for (j = 0; j < skip_params->arch->n_layers; j++) {
				const struct zm_layer *l = &skip_params->layers[j];
				if (l->spec->has_params &&
				    (!strcmp(t->name, l->weight.name) ||
				     !strcmp(t->name, l->bias.name)))
					param = true;
			}
		if (param)
			continue;
		zm_tensor_init(&c);
		st = zm_tensor_copy(&c, t, err);
		if (st == ZM_OK)
			st = zm_doc_add(dst, &c, err);
		zm_tensor_release(&c);
		if (st != ZM_OK)
			return st;
	}
	for (i = 0; i < src->n_meta; i++) {
		if (skip_params && is_model_meta(src->meta[i].key))
			continue;
		st = zm_doc_set_meta(dst, src->meta[i].key, src->meta[i].value,
		                     err);
		if (st != ZM_OK)
			return st;
	}
	return ZM_OK;
}

/* Loads one parameter tensor from doc into dst (allocated, zero). */
static enum zm_status load_param(const struct zm_doc *doc,
                                 struct zm_tensor *dst, struct zm_error *err)
{
	const struct zm_tensor *src = zm_doc_find(doc, dst->name);
	char want[64], got[64];
	enum zm_status st;
	int d;
	bool same = true;

	if (!src)
		return zm_error_set(err, ZM_ERR_FORMAT,
		                    "tensor '%s' is missing", dst->name);
	if (!zm_dtype_is_float(src->dtype))
		return zm_error_set(err, ZM_ERR_FORMAT,
		                    "tensor '%s': dtype %s, expected a float "
		                    "type (F32, F16, BF16, F64)", dst->name,
		                    zm_dtype_name(src->dtype));
	if (src->ndim != dst->ndim)
		same = false;
	for (d = 0; same && d < dst->ndim; d++)
		if (src->shape[d] != dst->shape[d])
			same = false;
	if (!same) {
		zm_shape_format(dst->ndim, dst->shape, want, sizeof(want));
		zm_shape_format(src->ndim, src->shape, got, sizeof(got));
		return zm_error_set(err, ZM_ERR_FORMAT,
		                    "tensor '%s': shape %s, expected %s",
		                    dst->name, got, want);
	}
	if (src->nbytes != zm_tensor_numel(src) * zm_dtype_size(src->dtype))
		return zm_error_set(err, ZM_ERR_FORMAT,
		                    "tensor '%s': %zu data bytes do not match "
		                    "its shape", dst->name, src->nbytes);
	zm_tensor_read_f32(src, 0, zm_tensor_numel(dst), dst->data);
	st = zm_tensor_check_finite(dst, err);
	return st;
}

enum zm_status zm_model_from_doc(const struct zm_doc *doc,
                                 const struct zm_arch *arch,
                                 struct zm_model **out, struct zm_error *err)
{
	struct zm_arch *parsed = NULL;
	struct zm_model *m = NULL;
	const char *kind = zm_doc_meta(doc, "zm.kind");
	enum zm_status st;
	size_t i;

	*out = NULL;
	if (kind && strcmp(kind, "model"))
		return zm_error_set(err, ZM_ERR_FORMAT,
		                    "document is of kind '%s', not a model",
		                    kind);
	if (!arch) {
		const char *json = zm_doc_meta(doc, "zm.arch");
		if (!json)
			return zm_error_set(err, ZM_ERR_FORMAT,
			                    "no zm.arch metadata: not a zoomerge "
			                    "model (give its architecture)");
		st = zm_arch_parse_json(json, strlen(json), "zm.arch", &parsed,
		                        err);
		if (st != ZM_OK) {
			/* A bad arch inside a file is bad data, not a
			 * configuration mistake of the user. */
			if (st == ZM_ERR_CONFIG)
				err->status = st = ZM_ERR_FORMAT;
			return st;
		}
		arch = parsed;
	}
	st = model_alloc(arch, &m, err);
	zm_arch_free(parsed);
	if (st != ZM_OK)
		return st;
	for (i = 0; i < m->arch->n_layers; i++) {
		struct zm_layer *l = &m->layers[i];
		if (!l->spec->has_params)
			continue;
		st = load_param(doc, &l->weight, err);
		if (st == ZM_OK)
			st = load_param(doc, &l->bias, err);
		if (st != ZM_OK)
			goto fail;
	}
	for (i = 0; i < COUNT_OF(meta_keys); i++) {
		const char *v = zm_doc_meta(doc, meta_keys[i]);
		if (v && (st = zm_model_set_string(meta_field(m, i), v, err)))
			goto fail;
	}
	st = copy_extra(&m->extra, doc, m, err);
	if (st != ZM_OK)
		goto fail;
	*out = m;
	return ZM_OK;
fail:
	zm_model_free(m);
	return st;
}

enum zm_status zm_model_to_doc(const struct zm_model *model,
                               struct zm_doc *doc, struct zm_error *err)
{
	struct zm_buf b;
	enum zm_status st;
	size_t i;

	zm_doc_release(doc);
	for (i = 0; i < model->arch->n_layers; i++) {
		const struct zm_layer *l = &model->layers[i];
		int k;
		if (!l->spec->has_params)
			continue;
		for (k = 0; k < 2; k++) {
			struct zm_tensor c;
			zm_tensor_init(&c);
			st = zm_tensor_copy(&c, k ? &l->bias : &l->weight, err);
			if (st == ZM_OK)
				st = zm_doc_add(doc, &c, err);
			zm_tensor_release(&c);
			if (st != ZM_OK)
				goto fail;
		}
	}
	st = zm_doc_set_meta(doc, "zm.kind", "model", err);
	if (st != ZM_OK)
		goto fail;
	zm_buf_init(&b);
	zm_arch_to_json(model->arch, &b);
	if (b.failed || !b.data) {
		zm_buf_release(&b);
		st = nomem(err);
		goto fail;
	}
	st = zm_doc_set_meta(doc, "zm.arch", b.data, err);
	zm_buf_release(&b);
	if (st != ZM_OK)
		goto fail;
	for (i = 0; i < COUNT_OF(meta_keys); i++) {
		const char *v = meta_value(model, i);
		if (v && (st = zm_doc_set_meta(doc, meta_keys[i], v, err)))
			goto fail;
	}
	st = copy_extra(doc, &model->extra, NULL, err);
	if (st != ZM_OK)
		goto fail;
	return ZM_OK;
fail:
	zm_doc_release(doc);
	return st;
}

enum zm_status zm_model_copy(const struct zm_model *src,
                             struct zm_model **out, struct zm_error *err)
{
	struct zm_model *m;
	enum zm_status st;
	size_t i;

	st = model_alloc(src->arch, &m, err);
	if (st != ZM_OK)
		return st;
	for (i = 0; i < src->arch->n_layers; i++) {
		const struct zm_layer *l = &src->layers[i];
		if (!l->spec->has_params)
			continue;
		memcpy(m->layers[i].weight.data, l->weight.data,
		       l->weight.nbytes);
		memcpy(m->layers[i].bias.data, l->bias.data, l->bias.nbytes);
	}
	for (i = 0; i < COUNT_OF(meta_keys); i++) {
		const char *v = meta_value(src, i);
		if (v && (st = zm_model_set_string(meta_field(m, i), v, err)))
			goto fail;
	}
	st = copy_extra(&m->extra, &src->extra, NULL, err);
	if (st != ZM_OK)
		goto fail;
	*out = m;
	return ZM_OK;
fail:
	zm_model_free(m);
	return st;
}

enum zm_status zm_model_load(const char *path, struct zm_model **out,
                             struct zm_error *err)
{
	struct zm_reader *r = NULL;
	struct zm_doc doc;
	enum zm_status st;
	bool eof = false;

	*out = NULL;
	zm_doc_init(&doc);
	st = zm_reader_open(&r, path, err);
	if (st == ZM_OK)
		st = zm_reader_next(r, &doc, &eof, err);
	if (st == ZM_OK && eof)
		st = zm_error_set(err, ZM_ERR_FORMAT, "%s: no document", path);
	if (st == ZM_OK && (st = zm_model_from_doc(&doc, NULL, out, err)))
		zm_error_prefix(err, "%s: ", path);
	zm_doc_release(&doc);
	zm_reader_close(r);
	return st;
}
