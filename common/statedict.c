/*
 * PyTorch state dicts (see statedict.h): names matched to an architecture
 * by map, by name or by nn.Sequential order, shapes checked with both
 * sides named, then the model built by zm_model_from_doc from a renamed
 * copy; and the way back, parameters under their module names.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "mem.h"
#include "metakeys.h"
#include "npz.h"
#include "statedict.h"

#define NAME_BUF (ZM_LAYER_NAME_MAX + 16)

static const char *module_of(const struct zm_layer_spec *l)
{
	return l->torch ? l->torch : l->name;
}

/* The name PyTorch gives the tensor in a layer's weight (bias) place:
 * BatchNorm1d keeps its running statistics as buffers. */
static const char *part_name(const struct zm_layer_spec *l, bool bias)
{
	if (l->type == ZM_LAYER_BATCHNORM)
		return bias ? "running_var" : "running_mean";
	return bias ? "bias" : "weight";
}

/* The shape zoomerge (and PyTorch) gives a layer's weight or bias. */
static int param_shape(const struct zm_layer_spec *l, bool bias,
                       int64_t shape[4])
{
	if (l->type == ZM_LAYER_STANDARDIZE || l->type == ZM_LAYER_BATCHNORM) {
		shape[0] = (int64_t)l->in_features;
		return 1;
	}
	if (bias) {
		shape[0] = l->type == ZM_LAYER_CONV2D ? l->units :
		           (int64_t)l->out_features;
		return 1;
	}
	if (l->type == ZM_LAYER_CONV2D) {
		shape[0] = l->units;
		shape[1] = l->in_shape[0];
		shape[2] = l->kernel[0];
		shape[3] = l->kernel[1];
		return 4;
	}
	shape[0] = (int64_t)l->out_features;
	shape[1] = (int64_t)l->in_features;
	return 2;
}

/* The module part of a parameter's name ("net.0" of "net.0.weight"), or
 * false when the name does not end in .weight or .bias (or a buffer of
 * BatchNorm1d). */
static bool split_param(const char *name, char *module, size_t size)
{
	const char *dot = strrchr(name, '.');
	size_t n;

	if (!dot || (strcmp(dot, ".weight") && strcmp(dot, ".bias") &&
	             strcmp(dot, ".running_mean") &&
	             strcmp(dot, ".running_var") &&
	             strcmp(dot, ".num_batches_tracked")))
		return false;
	n = (size_t)(dot - name);
	if (n == 0 || n >= size)
		return false;
	memcpy(module, name, n);
	module[n] = '\0';
	return true;
}

/* The index of a numbered module ("2", "net.2") and the length of its
 * stem ("net."), or -1. */
static long sequential_index(const char *module, size_t *stem)
{
	const char *dot = strrchr(module, '.');
	const char *num = dot ? dot + 1 : module;
	char *end;
	long v;

	if (*num < '0' || *num > '9')
		return -1;
	v = strtol(num, &end, 10);
	if (*end || v < 0 || (num[0] == '0' && num[1]))
		return -1;
	*stem = (size_t)(num - module);
	return v;
}

/* A short list of the file's tensor names for messages. */
static void list_names(const struct zm_doc *src, char *buf, size_t size)
{
	size_t i, used = 0;

	buf[0] = '\0';
	for (i = 0; i < src->n_tensors && used + 1 < size; i++) {
		int n = snprintf(buf + used, size - used, "%s%s", i ? ", " : "",
		                 i == 6 ? "..." : src->tensors[i].name);
		if (n < 0)
			break;
		used += (size_t)n;
		if (i == 6)
			break;
	}
	if (used >= size)
		buf[size - 1] = '\0';
}

/*
 * nn.Sequential: the numbered modules of src, in numeric order, become the
 * module names of arch's layers with parameters, in layer order.
 */
static enum zm_status match_by_order(const struct zm_doc *src,
                                     const char *source, struct zm_arch *arch,
                                     struct zm_error *err)
{
	char module[NAME_BUF], stem[NAME_BUF] = "", names[256];
	struct { long index; size_t t; } *mods = NULL;
	size_t i, j, n = 0, want = 0, stem_len = 0;
	enum zm_status st = ZM_OK;

	for (i = 0; i < arch->n_layers; i++)
		want += arch->layers[i].has_params;
	mods = zm_calloc(src->n_tensors ? src->n_tensors : 1, sizeof(*mods));
	if (!mods)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	list_names(src, names, sizeof(names));
	for (i = 0; i < src->n_tensors; i++) {
		const char *name = src->tensors[i].name;
		size_t sl;
		long idx;
		bool seen = false;
		if (!split_param(name, module, sizeof(module)) ||
		    (idx = sequential_index(module, &sl)) < 0) {
			st = zm_error_set(err, ZM_ERR_DATA, "%s: tensor '%s' "
			                  "is neither LAYER.weight/.bias of a "
			                  "layer of the architecture nor of a "
			                  "numbered nn.Sequential module; name the "
			                  "layers as in PyTorch or give a map:",
			                  source, name);
			goto out;
		}
		if (n == 0) {
			memcpy(stem, module, sl);
			stem[sl] = '\0';
			stem_len = sl;
		} else if (sl != stem_len || memcmp(stem, module, sl)) {
			st = zm_error_set(err, ZM_ERR_DATA, "%s: tensors '%s' "
			                  "and '%s' are in different nn.Sequential "
			                  "containers; give a map: to say which "
			                  "layer is which", source,
			                  src->tensors[mods[0].t].name, name);
			goto out;
		}
		for (j = 0; j < n; j++)
			if (mods[j].index == idx)
				seen = true;
		if (!seen) {
			mods[n].index = idx;
			mods[n++].t = i;
		}
	}
	/* Insertion sort: a state dict has few modules. */
	for (i = 1; i < n; i++)
		for (j = i; j > 0 && mods[j - 1].index > mods[j].index; j--) {
			long ti = mods[j].index;
			size_t tt = mods[j].t;
			mods[j] = mods[j - 1];
			mods[j - 1].index = ti;
			mods[j - 1].t = tt;
		}
	if (n != want) {
		st = zm_error_set(err, ZM_ERR_DATA, "%s has %zu numbered "
		                  "modules with parameters (%s) but the "
		                  "architecture has %zu layers with parameters",
		                  source, n, names, want);
		goto out;
	}
	for (i = 0, j = 0; i < arch->n_layers; i++) {
		struct zm_layer_spec *l = &arch->layers[i];
		if (!l->has_params)
			continue;
		split_param(src->tensors[mods[j++].t].name, module,
		            sizeof(module));
		free(l->torch);
		if (!(l->torch = zm_strdup(module))) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
			goto out;
		}
	}
out:
	free(mods);
	return st;
}

/* Checks one parameter of layer l and adds a copy named as zoomerge names
 * it to dst. */
static enum zm_status take_param(const struct zm_doc *src, const char *source,
                                 const struct zm_layer_spec *l, bool bias,
                                 struct zm_doc *dst, struct zm_error *err)
{
	const char *part = part_name(l, bias);
	char from[NAME_BUF * 2], to[NAME_BUF], want[64], got[64];
	const struct zm_tensor *t;
	struct zm_tensor c;
	int64_t shape[4];
	int ndim = param_shape(l, bias, shape), d;
	bool same;
	enum zm_status st;

	snprintf(from, sizeof(from), "%s.%s", module_of(l), part);
	snprintf(to, sizeof(to), "%s.%s", l->name, bias ? "bias" : "weight");
	if (!(t = zm_doc_find(src, from)))
		return zm_error_set(err, ZM_ERR_DATA, "%s: no tensor '%s' for "
		                    "layer '%s'", source, from, l->name);
	same = t->ndim == ndim;
	for (d = 0; same && d < ndim; d++)
		same = t->shape[d] == shape[d];
	if (!same) {
		bool transposed = ndim == 2 && t->ndim == 2 &&
		                  t->shape[0] == shape[1] &&
		                  t->shape[1] == shape[0];
		zm_shape_format(ndim, shape, want, sizeof(want));
		zm_shape_format(t->ndim, t->shape, got, sizeof(got));
		return zm_error_set(err, ZM_ERR_DATA, "%s: tensor '%s' has "
		                    "shape %s, layer '%s' needs %s%s", source,
		                    from, got, l->name, want, transposed ?
		                    " (transposed? nn.Linear(in, out).weight is "
		                    "[out, in])" : "");
	}
	zm_tensor_init(&c);
	st = zm_tensor_copy(&c, t, err);
	if (st == ZM_OK)
		st = zm_tensor_rename(&c, to, err);
	if (st == ZM_OK)
		st = zm_doc_add(dst, &c, err);
	zm_tensor_release(&c);
	return st;
}

enum zm_status zm_state_dict_import(const struct zm_doc *src,
                                    const char *source,
                                    const struct zm_arch *arch,
                                    struct zm_model **out,
                                    struct zm_error *err)
{
	struct zm_arch *a = NULL;
	struct zm_doc named;
	char module[NAME_BUF];
	enum zm_status st;
	size_t i, j;
	bool mapped = false, by_name = true;

	*out = NULL;
	zm_doc_init(&named);
	if ((st = zm_arch_copy(arch, &a, err)) != ZM_OK)
		return st;
	for (i = 0; i < a->n_layers; i++) {
		char w[NAME_BUF];
		if (!a->layers[i].has_params)
			continue;
		mapped |= a->layers[i].torch != NULL;
		snprintf(w, sizeof(w), "%s.%s", a->layers[i].name,
		         part_name(&a->layers[i], false));
		by_name &= zm_doc_find(src, w) != NULL;
	}
	if (!mapped && !by_name &&
	    (st = match_by_order(src, source, a, err)) != ZM_OK)
		goto out;
	for (i = 0; st == ZM_OK && i < a->n_layers; i++)
		if (a->layers[i].has_params &&
		    (st = take_param(src, source, &a->layers[i], false, &named,
		                     err)) == ZM_OK)
			st = take_param(src, source, &a->layers[i], true,
			                &named, err);
	if (st != ZM_OK)
		goto out;
	/* A tensor no layer took is a layer the architecture lacks; only a
	 * zoomerge data profile (a model file stripped of its metadata) is
	 * kept beside the parameters. */
	for (i = 0; i < src->n_tensors; i++) {
		const char *name = src->tensors[i].name;
		bool used = false;
		if (!strncmp(name, "profile.", 8)) {
			struct zm_tensor c;
			zm_tensor_init(&c);
			st = zm_tensor_copy(&c, &src->tensors[i], err);
			if (st == ZM_OK)
				st = zm_doc_add(&named, &c, err);
			zm_tensor_release(&c);
			if (st != ZM_OK)
				goto out;
			continue;
		}
		if (split_param(name, module, sizeof(module)))
			for (j = 0; j < a->n_layers && !used; j++)
				used = a->layers[j].has_params &&
				       !strcmp(module_of(&a->layers[j]), module);
		if (!used) {
			st = zm_error_set(err, ZM_ERR_DATA, "%s: tensor '%s' "
			                  "belongs to no layer of the "
			                  "architecture", source, name);
			goto out;
		}
	}
	st = zm_model_from_doc(&named, a, out, err);
	if (st != ZM_OK)
		zm_error_prefix(err, "%s: ", source);
out:
	zm_doc_release(&named);
	zm_arch_free(a);
	return st;
}

/* True when the file begins as a ZIP archive; false also when it cannot be
 * read (the stream reader then reports why). */
static bool looks_like_zip(const char *path)
{
	unsigned char head[4];
	FILE *f = fopen(path, "rb");
	bool zip;

	if (!f)
		return false;
	zip = fread(head, 1, sizeof(head), f) == sizeof(head) &&
	      zm_npz_is_zip(head, sizeof(head));
	fclose(f);
	return zip;
}

enum zm_status zm_state_dict_load(const char *path,
                                  const struct zm_arch *arch,
                                  struct zm_model **out,
                                  struct zm_error *err)
{
	const char *source = strcmp(path, "-") ? path : "standard input";
	struct zm_reader *r = NULL;
	struct zm_model *own = NULL;
	struct zm_doc doc;
	char *data = NULL;
	size_t len = 0;
	enum zm_status st = ZM_OK;
	bool eof = false;

	*out = NULL;
	zm_doc_init(&doc);
	/* Standard input is read whole, so that it can be either format; a
	 * named stream file is streamed as usual. */
	if (!strcmp(path, "-") || looks_like_zip(path))
		st = zm_read_file(path, ZM_NPZ_MAX_BYTES, &data, &len, err);
	if (st != ZM_OK)
		goto out;
	if (data && zm_npz_is_zip(data, len)) {
		st = zm_npz_parse(data, len, source, &doc, err);
	} else {
		st = data ? zm_reader_open_mem(&r, data, len, source, err)
		          : zm_reader_open(&r, path, err);
		if (st == ZM_OK)
			st = zm_reader_next(r, &doc, &eof, err);
		if (st == ZM_OK && eof)
			st = zm_error_set(err, ZM_ERR_FORMAT, "%s: no document",
			                  source);
	}
	if (st == ZM_OK && !arch && zm_npz_is_zip(data, len))
		st = zm_error_set(err, ZM_ERR_USAGE, "%s: a NumPy archive "
		                  "holds no architecture", source);
	if (st != ZM_OK)
		goto out;
	if (arch && !zm_doc_meta(&doc, ZM_META_ARCH)) {
		st = zm_state_dict_import(&doc, source, arch, out, err);
		goto out;
	}
	/* A zoomerge model: its own architecture must be the one given. */
	st = zm_model_from_doc(&doc, NULL, &own, err);
	if (st == ZM_OK && arch &&
	    (st = zm_model_same_arch(own->arch, arch, err)))
		zm_error_prefix(err, "its zm.arch is not the architecture "
		                "given: ");
	if (st != ZM_OK) {
		zm_error_prefix(err, "%s: ", source);
		zm_model_free(own);
		goto out;
	}
	*out = own;
out:
	zm_reader_close(r);
	zm_doc_release(&doc);
	free(data);
	return st;
}

enum zm_status zm_state_dict_export(const struct zm_model *model,
                                    struct zm_doc *doc, struct zm_error *err)
{
	enum zm_status st = ZM_OK;
	size_t i;
	int k;

	zm_doc_release(doc);
	for (i = 0; st == ZM_OK && i < model->arch->n_layers; i++) {
		const struct zm_layer *l = &model->layers[i];
		if (!l->spec->has_params)
			continue;
		for (k = 0; st == ZM_OK && k < 2; k++) {
			char name[NAME_BUF * 2];
			struct zm_tensor c;
			snprintf(name, sizeof(name), "%s.%s",
			         module_of(l->spec), part_name(l->spec, k));
			zm_tensor_init(&c);
			st = zm_tensor_copy(&c, k ? &l->bias : &l->weight, err);
			if (st == ZM_OK)
				st = zm_tensor_rename(&c, name, err);
			if (st == ZM_OK)
				st = zm_doc_add(doc, &c, err);
			zm_tensor_release(&c);
		}
		/* BatchNorm1d's third buffer, which a strict load wants;
		 * with a momentum set PyTorch only counts with it. */
		if (st == ZM_OK && l->spec->type == ZM_LAYER_BATCHNORM) {
			char name[NAME_BUF * 2];
			struct zm_tensor c;
			snprintf(name, sizeof(name), "%s.num_batches_tracked",
			         module_of(l->spec));
			zm_tensor_init(&c);
			st = zm_tensor_alloc(&c, name, ZM_DTYPE_I64, 0, NULL, err);
			if (st == ZM_OK)
				st = zm_doc_add(doc, &c, err);
			zm_tensor_release(&c);
		}
	}
	if (st != ZM_OK)
		zm_doc_release(doc);
	return st;
}
