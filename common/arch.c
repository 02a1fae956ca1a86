/*
 * Architectures: parsed from the arch YAML (or the JSON kept in a model
 * document's zm.arch, which is YAML too), written back as JSON, copied
 * and compared (model.h).  conv2d and maxpool2d keys are parsed here as
 * well, so conv.c only computes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "model.h"

/* ---- architecture parsing ---- */

static enum zm_status nomem(struct zm_error *err)
{
	return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
}

/* ---- conv2d and maxpool2d keys (conv.c only computes) ---- */

/* An int or a list of two ints in [lo, hi]. */
static enum zm_status pair(const struct zm_node *n, const char *what,
                           int64_t lo, int64_t hi, int64_t out[2],
                           struct zm_error *err)
{
	enum zm_status st;
	int i;

	if (n->type == ZM_NODE_SEQ) {
		if (n->count != 2)
			return zm_node_error(n, err, ZM_ERR_CONFIG,
			                     "%s: expected an integer or a "
			                     "list of two, [height, width]",
			                     what);
		for (i = 0; i < 2; i++)
			if ((st = zm_node_int(n->items[i], what, lo, hi,
			                      &out[i], err)) != ZM_OK)
				return st;
		return ZM_OK;
	}
	st = zm_node_int(n, what, lo, hi, &out[0], err);
	out[1] = out[0];
	return st;
}

static enum zm_status reject_key(const struct zm_node *item,
                                 const struct zm_layer_spec *spec,
                                 const char *key, struct zm_error *err)
{
	size_t k;

	for (k = 0; k < item->count; k++)
		if (!strcmp(item->keys[k]->value, key))
			return zm_node_error(item->keys[k], err, ZM_ERR_CONFIG,
			                     "layer '%s': %s takes no '%s'",
			                     spec->name,
			                     zm_layer_type_name(spec->type),
			                     key);
	return ZM_OK;
}

/*
 * Parses the conv2d or maxpool2d keys of the layer mapping item into spec
 * (whose name and type are set) given its input shape (spec->in_*):
 * conv2d {filters, kernel (int or [kh, kw]), stride (default 1), padding
 * (same | valid, default valid), activation}, maxpool2d {size, stride
 * (default size)}.  Fills units, act, kernel, stride, pad, same,
 * out_shape, out_features, has_params, n_weight and n_bias.  Errors are
 * ZM_ERR_CONFIG at the node at fault.
 */
static enum zm_status conv_parse_spec(const struct zm_node *item,
                                      struct zm_layer_spec *spec,
                                      struct zm_error *err)
{
	static const char *const conv_no[] = { "units", "size", NULL };
	static const char *const pool_no[] = {
		"units", "activation", "filters", "kernel", "padding", NULL
	};
	bool conv = spec->type == ZM_LAYER_CONV2D;
	const char *const *no = conv ? conv_no : pool_no;
	const struct zm_node *n;
	enum zm_status st;
	int64_t oc, oh, ow, h, w, feat;
	const char *s;
	int i;

	for (i = 0; no[i]; i++)
		if ((st = reject_key(item, spec, no[i], err)) != ZM_OK)
			return st;
	if (spec->in_ndim != 3)
		return zm_node_error(item, err, ZM_ERR_CONFIG,
		                     "layer '%s': %s needs an input of shape "
		                     "[channels, height, width] (e.g. input: "
		                     "[1, 28, 28]), got %d dimension%s",
		                     spec->name, zm_layer_type_name(spec->type),
		                     spec->in_ndim, spec->in_ndim == 1 ? "" : "s");
	h = spec->in_shape[1];
	w = spec->in_shape[2];
	spec->act = ZM_ACT_IDENTITY;

	n = zm_node_get(item, conv ? "kernel" : "size");
	if (!n)
		return zm_node_error(item, err, ZM_ERR_CONFIG,
		                     "layer '%s': missing '%s'", spec->name,
		                     conv ? "kernel" : "size");
	if ((st = pair(n, conv ? "kernel" : "size", 1, ZM_ARCH_MAX_KERNEL,
	               spec->kernel, err)) != ZM_OK)
		return st;
	spec->stride[0] = spec->kernel[0];
	spec->stride[1] = spec->kernel[1];
	if (conv)
		spec->stride[0] = spec->stride[1] = 1;
	n = zm_node_get(item, "stride");
	if (n && (st = pair(n, "stride", 1, ZM_ARCH_MAX_KERNEL, spec->stride,
	                    err)) != ZM_OK)
		return st;

	spec->same = false;
	if (conv && (n = zm_node_get(item, "padding"))) {
		if ((st = zm_node_string(n, "padding", &s, err)) != ZM_OK)
			return st;
		if (!strcmp(s, "same"))
			spec->same = true;
		else if (strcmp(s, "valid"))
			return zm_node_error(n, err, ZM_ERR_CONFIG,
			                     "layer '%s': padding '%s': expected "
			                     "same or valid", spec->name, s);
	}
	if (spec->same) {
		/* TensorFlow's rule, which is PyTorch's padding='same' at
		 * stride 1: the odd pixel of padding goes after. */
		int64_t th, tw;
		oh = (h + spec->stride[0] - 1) / spec->stride[0];
		ow = (w + spec->stride[1] - 1) / spec->stride[1];
		th = (oh - 1) * spec->stride[0] + spec->kernel[0] - h;
		tw = (ow - 1) * spec->stride[1] + spec->kernel[1] - w;
		spec->pad[0] = th > 0 ? th / 2 : 0;
		spec->pad[1] = tw > 0 ? tw / 2 : 0;
	} else {
		if (spec->kernel[0] > h || spec->kernel[1] > w)
			return zm_node_error(item, err, ZM_ERR_CONFIG,
			                     "layer '%s': window %lldx%lld is "
			                     "larger than its input %lldx%lld",
			                     spec->name,
			                     (long long)spec->kernel[0],
			                     (long long)spec->kernel[1],
			                     (long long)h, (long long)w);
		oh = (h - spec->kernel[0]) / spec->stride[0] + 1;
		ow = (w - spec->kernel[1]) / spec->stride[1] + 1;
		spec->pad[0] = spec->pad[1] = 0;
	}

	oc = spec->in_shape[0];
	spec->units = 0;
	spec->has_params = false;
	spec->n_weight = spec->n_bias = 0;
	if (conv) {
		int64_t fan;
		n = zm_node_get(item, "filters");
		if (!n)
			return zm_node_error(item, err, ZM_ERR_CONFIG,
			                     "layer '%s': missing 'filters'",
			                     spec->name);
		if ((st = zm_node_int(n, "filters", 1, ZM_ARCH_MAX_UNITS, &oc,
		                      err)) != ZM_OK)
			return st;
		n = zm_node_get(item, "activation");
		if (n) {
			if ((st = zm_node_string(n, "activation", &s, err)))
				return st;
			if (!zm_activation_parse(s, &spec->act))
				return zm_node_error(n, err, ZM_ERR_CONFIG,
				                     "layer '%s': unknown "
				                     "activation '%s' (expected "
				                     "relu, tanh, sigmoid, gelu or "
				                     "identity)", spec->name, s);
		}
		fan = spec->in_shape[0] * spec->kernel[0] * spec->kernel[1];
		if (fan > ZM_ARCH_MAX_PARAMS / oc)
			return zm_node_error(item, err, ZM_ERR_CONFIG,
			                     "layer '%s': too many weights",
			                     spec->name);
		spec->units = oc;
		spec->has_params = true;
		spec->n_weight = (size_t)(oc * fan);
		spec->n_bias = (size_t)oc;
	}
	feat = oc * oh;
	if (feat > ZM_ARCH_MAX_FEATURES || feat * ow > ZM_ARCH_MAX_FEATURES)
		return zm_node_error(item, err, ZM_ERR_CONFIG,
		                     "layer '%s': more than %d output features",
		                     spec->name, ZM_ARCH_MAX_FEATURES);
	spec->out_ndim = 3;
	spec->out_shape[0] = oc;
	spec->out_shape[1] = oh;
	spec->out_shape[2] = ow;
	spec->out_features = (size_t)(feat * ow);
	return ZM_OK;
}

/* Layer names become tensor names (LAYER.weight) and YAML keys, so only a
 * safe alphabet is allowed. */
static bool valid_name(const struct zm_node *n)
{
	size_t i;

	if (n->len == 0 || n->len > ZM_LAYER_NAME_MAX ||
	    strlen(n->value) != n->len)
		return false;
	for (i = 0; i < n->len; i++) {
		char c = n->value[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == '-'))
			return false;
	}
	return true;
}

static enum zm_status parse_input(const struct zm_node *node,
                                  struct zm_arch *arch, struct zm_error *err)
{
	size_t i, count = node->type == ZM_NODE_SEQ ? node->count : 1;
	int64_t numel = 1;

	if (node->type == ZM_NODE_MAP || count == 0 ||
	    count > ZM_INPUT_MAX_DIMS)
		return zm_node_error(node, err, ZM_ERR_CONFIG,
		                     "input: expected a list of 1 to %d "
		                     "dimensions, e.g. [784] or [1, 28, 28]",
		                     ZM_INPUT_MAX_DIMS);
	for (i = 0; i < count; i++) {
		const struct zm_node *d = node->type == ZM_NODE_SEQ ?
		                          node->items[i] : node;
		int64_t v;
		enum zm_status st = zm_node_int(d, "input dimension", 1,
		                                ZM_ARCH_MAX_FEATURES, &v, err);
		if (st != ZM_OK)
			return st;
		numel *= v;
		if (numel > ZM_ARCH_MAX_FEATURES)
			return zm_node_error(d, err, ZM_ERR_CONFIG,
			                     "input: more than %d features",
			                     ZM_ARCH_MAX_FEATURES);
		arch->input_shape[i] = v;
	}
	arch->input_ndim = (int)count;
	arch->input_features = (size_t)numel;
	return ZM_OK;
}

static const char *const layer_keys[] = {
	"name", "type", "units", "activation", "group", "filters", "kernel",
	"stride", "padding", "size", "min", "max", "rate", "column", "levels",
	NULL
};

/* A string column's name: 1 to 256 bytes, no NUL. */
static bool valid_column(const struct zm_node *n)
{
	return n->type == ZM_NODE_SCALAR && n->len > 0 && n->len <= 256 &&
	       strlen(n->value) == n->len;
}

/*
 * one_hot {column, levels}: the levels are the names of the units in
 * order, each once.  The units were already counted into the input (see
 * count_one_hot), so the layer keeps its input's shape.
 */
static enum zm_status one_hot_parse_spec(const struct zm_node *item,
                                         struct zm_layer_spec *spec,
                                         struct zm_error *err)
{
	const struct zm_node *n, *lv;
	size_t k, i;

	for (k = 0; k < item->count; k++) {
		const char *key = item->keys[k]->value;
		if (strcmp(key, "name") && strcmp(key, "type") &&
		    strcmp(key, "group") && strcmp(key, "column") &&
		    strcmp(key, "levels"))
			return zm_node_error(item->keys[k], err, ZM_ERR_CONFIG,
			                     "layer '%s': one_hot takes no '%s'",
			                     spec->name, key);
	}
	n = zm_node_get(item, "column");
	lv = zm_node_get(item, "levels");
	if (!n || !lv)
		return zm_node_error(item, err, ZM_ERR_CONFIG, "layer '%s': "
		                     "one_hot needs 'column' and 'levels' (e.g. "
		                     "{type: one_hot, column: source, levels: "
		                     "[north, south, west]})", spec->name);
	if (!valid_column(n))
		return zm_node_error(n, err, ZM_ERR_CONFIG, "layer '%s': "
		                     "column: expected a column name of 1 to "
		                     "256 bytes", spec->name);
	if (lv->type != ZM_NODE_SEQ || lv->count == 0 ||
	    lv->count > ZM_ONE_HOT_MAX_LEVELS)
		return zm_node_error(lv, err, ZM_ERR_CONFIG, "layer '%s': "
		                     "levels: expected a list of 1 to %d "
		                     "values", spec->name, ZM_ONE_HOT_MAX_LEVELS);
	if (!(spec->column = zm_strdup(n->value)) ||
	    !(spec->levels = zm_calloc(lv->count, sizeof(*spec->levels))))
		return nomem(err);
	for (i = 0; i < lv->count; i++) {
		const struct zm_node *v = lv->items[i];
		if (!valid_column(v))
			return zm_node_error(v, err, ZM_ERR_CONFIG, "layer "
			                     "'%s': levels: expected a value of "
			                     "1 to 256 bytes", spec->name);
		for (k = 0; k < i; k++)
			if (!strcmp(spec->levels[k], v->value))
				return zm_node_error(v, err, ZM_ERR_CONFIG,
				                     "layer '%s': level '%s' "
				                     "given twice", spec->name,
				                     v->value);
		if (!(spec->levels[i] = zm_strdup(v->value)))
			return nomem(err);
		spec->n_levels = i + 1;
	}
	spec->out_ndim = spec->in_ndim;
	for (i = 0; i < (size_t)spec->in_ndim; i++)
		spec->out_shape[i] = spec->in_shape[i];
	spec->out_features = spec->in_features;
	return ZM_OK;
}

/*
 * The keys of the element-wise kinds: standardize and batchnorm (none),
 * clip {min, max} and dropout {rate}.  Their output has their input's shape.
 */
static enum zm_status elementwise_parse_spec(const struct zm_node *item,
                                             struct zm_layer_spec *spec,
                                             struct zm_error *err)
{
	static const char *const own[] = { "min", "max", "rate" };
	const struct zm_node *n;
	enum zm_status st;
	size_t k, i;

	for (k = 0; k < item->count; k++) {
		const char *key = item->keys[k]->value;
		bool ok = !strcmp(key, "name") || !strcmp(key, "type") ||
		          !strcmp(key, "group");
		for (i = 0; i < 3; i++)
			if (!strcmp(key, own[i]))
				ok = (spec->type == ZM_LAYER_CLIP && i < 2) ||
				     (spec->type == ZM_LAYER_DROPOUT && i == 2);
		if (!ok)
			return zm_node_error(item->keys[k], err, ZM_ERR_CONFIG,
			                     "layer '%s': %s takes no '%s'",
			                     spec->name,
			                     zm_layer_type_name(spec->type), key);
	}
	spec->out_ndim = spec->in_ndim;
	for (i = 0; i < (size_t)spec->in_ndim; i++)
		spec->out_shape[i] = spec->in_shape[i];
	spec->out_features = spec->in_features;
	if (spec->type == ZM_LAYER_STANDARDIZE ||
	    spec->type == ZM_LAYER_BATCHNORM) {
		if (spec->type == ZM_LAYER_BATCHNORM && spec->in_ndim != 1)
			return zm_node_error(item, err, ZM_ERR_CONFIG,
			                     "layer '%s': batchnorm normalises "
			                     "vectors: put a flatten before it",
			                     spec->name);
		spec->has_params = true;
		spec->n_weight = spec->n_bias = spec->in_features;
		spec->momentum = 0.1;
		spec->eps = 1e-5;
	} else if (spec->type == ZM_LAYER_CLIP) {
		const char *key[2] = { "min", "max" };
		double *v[2] = { &spec->lo, &spec->hi };
		for (i = 0; i < 2; i++) {
			if (!(n = zm_node_get(item, key[i])))
				return zm_node_error(item, err, ZM_ERR_CONFIG,
				                     "layer '%s': clip needs 'min' "
				                     "and 'max' (e.g. {type: clip, "
				                     "min: -5, max: 5})", spec->name);
			if ((st = zm_node_double(n, key[i], -ZM_CLIP_MAX_ABS,
			                         ZM_CLIP_MAX_ABS, v[i], err)))
				return st;
		}
		if (!(spec->lo < spec->hi))
			return zm_node_error(zm_node_get(item, "max"), err,
			                     ZM_ERR_CONFIG, "layer '%s': clip: "
			                     "max %g is not above min %g",
			                     spec->name, spec->hi, spec->lo);
	} else {
		spec->rate = 0.5;
		if ((n = zm_node_get(item, "rate")) &&
		    (st = zm_node_double(n, "rate", 0, 0.99, &spec->rate, err)))
			return st;
	}
	return ZM_OK;
}

/*
 * Parses layers->items[idx] into arch->layers[idx], given the per-sample
 * shape its input has (the previous layer's output).  The type and name
 * are read first so that later messages can name the layer.
 */
/* The keys of one layer kind (dense, flatten; conv2d and maxpool2d in
 * conv_parse_spec), once its name, type, group and input are known. */
static enum zm_status parse_layer_kind(const struct zm_node *item,
                                       struct zm_layer_spec *spec,
                                       struct zm_error *err)
{
	const int64_t in_features = (int64_t)spec->in_features;
	const struct zm_node *n;
	const char *s;
	enum zm_status st;
	int i;

	spec->act = ZM_ACT_IDENTITY;
	if (spec->type == ZM_LAYER_CONV2D || spec->type == ZM_LAYER_MAXPOOL2D)
		return conv_parse_spec(item, spec, err);
	if (spec->type == ZM_LAYER_STANDARDIZE || spec->type == ZM_LAYER_CLIP ||
	    spec->type == ZM_LAYER_DROPOUT || spec->type == ZM_LAYER_BATCHNORM)
		return elementwise_parse_spec(item, spec, err);
	if (spec->type == ZM_LAYER_ONE_HOT)
		return one_hot_parse_spec(item, spec, err);
	if (spec->type != ZM_LAYER_FLATTEN) {
		static const char *const spatial[] = {
			"filters", "kernel", "stride", "padding", "size"
		};
		for (i = 0; i < 5; i++) {
			size_t k;
			for (k = 0; k < item->count; k++)
				if (!strcmp(item->keys[k]->value, spatial[i]))
					return zm_node_error(item->keys[k], err,
					        ZM_ERR_CONFIG,
					        "layer '%s': dense takes no '%s'",
					        spec->name, spatial[i]);
		}
	}
	if (spec->type == ZM_LAYER_FLATTEN) {
		static const char *const unused[] = {
			"units", "activation", "filters", "kernel", "stride",
			"padding", "size"
		};
		for (i = 0; i < 7; i++) {
			size_t k;
			for (k = 0; k < item->count; k++)
				if (!strcmp(item->keys[k]->value, unused[i]))
					return zm_node_error(item->keys[k], err,
					        ZM_ERR_CONFIG,
					        "layer '%s': flatten takes no '%s'",
					        spec->name, unused[i]);
		}
		spec->out_ndim = 1;
		spec->out_shape[0] = in_features;
		spec->out_features = (size_t)in_features;
		return ZM_OK;
	}

	/* Dense: inputs of any shape are flattened. */
	n = zm_node_get(item, "activation");
	if (n) {
		st = zm_node_string(n, "activation", &s, err);
		if (st != ZM_OK)
			return st;
		if (!zm_activation_parse(s, &spec->act))
			return zm_node_error(n, err, ZM_ERR_CONFIG,
			                     "layer '%s': unknown activation '%s' "
			                     "(expected relu, tanh, sigmoid, gelu "
			                     "or identity)", spec->name, s);
	}
	n = zm_node_get(item, "units");
	if (!n)
		return zm_node_error(item, err, ZM_ERR_CONFIG,
		                     "layer '%s': missing 'units'", spec->name);
	st = zm_node_int(n, "units", 1, ZM_ARCH_MAX_UNITS, &spec->units, err);
	if (st != ZM_OK)
		return st;
	if (spec->units > ZM_ARCH_MAX_PARAMS / in_features)
		return zm_node_error(n, err, ZM_ERR_CONFIG,
		                     "layer '%s': %lld x %lld weights is too many",
		                     spec->name, (long long)spec->units,
		                     (long long)in_features);
	spec->out_ndim = 1;
	spec->out_shape[0] = spec->units;
	spec->out_features = (size_t)spec->units;
	spec->has_params = true;
	spec->n_weight = (size_t)spec->units * (size_t)in_features;
	spec->n_bias = (size_t)spec->units;
	return ZM_OK;
}

static enum zm_status parse_layer(const struct zm_node *item,
                                  struct zm_arch *arch, size_t idx,
                                  struct zm_error *err)
{
	struct zm_layer_spec *spec = &arch->layers[idx];
	const struct zm_node *n;
	const char *s;
	enum zm_status st;
	int in_ndim;
	const int64_t *in_shape;
	int64_t in_features = 1;
	int i;

	if (item->type != ZM_NODE_MAP)
		return zm_node_error(item, err, ZM_ERR_CONFIG,
		                     "layers: each layer must be a mapping such "
		                     "as {name: fc1, type: dense, units: 10}");
	st = zm_node_check_keys(item, layer_keys, "layer", err);
	if (st != ZM_OK)
		return st;

	n = zm_node_get(item, "name");
	if (!n)
		return zm_node_error(item, err, ZM_ERR_CONFIG,
		                     "layer %zu: missing 'name'", idx + 1);
	if (n->type != ZM_NODE_SCALAR || !valid_name(n))
		return zm_node_error(n, err, ZM_ERR_CONFIG,
		                     "name: expected 1 to %d characters from "
		                     "[A-Za-z0-9_-]", ZM_LAYER_NAME_MAX);
	for (i = 0; (size_t)i < idx; i++)
		if (!strcmp(arch->layers[i].name, n->value))
			return zm_node_error(n, err, ZM_ERR_CONFIG,
			                     "duplicate layer name '%s'",
			                     n->value);
	spec->name = zm_strdup(n->value);
	if (!spec->name)
		return nomem(err);

	spec->type = ZM_LAYER_DENSE;
	n = zm_node_get(item, "type");
	if (n) {
		enum zm_layer_type t;
		st = zm_node_string(n, "type", &s, err);
		if (st != ZM_OK)
			return st;
		if (!zm_layer_type_parse(s, &t))
			return zm_node_error(n, err, ZM_ERR_CONFIG,
			                     "layer '%s': unknown type '%s' "
			                     "(expected dense, conv2d, maxpool2d, "
			                     "flatten, standardize, batchnorm, "
			                     "clip, dropout or one_hot)",
			                     spec->name, s);
		spec->type = t;
	}

	n = zm_node_get(item, "group");
	if (n) {
		st = zm_node_string(n, "group", &s, err);
		if (st != ZM_OK)
			return st;
		if (!valid_name(n))
			return zm_node_error(n, err, ZM_ERR_CONFIG,
			                     "group: expected 1 to %d characters "
			                     "from [A-Za-z0-9_-]",
			                     ZM_LAYER_NAME_MAX);
	} else if (spec->type == ZM_LAYER_DENSE) {
		s = "dense";
	} else if (spec->type == ZM_LAYER_CONV2D) {
		s = "conv";
	} else {
		/* Pooling and reshaping belong to the stage before them. */
		s = idx ? arch->layers[idx - 1].group :
		    zm_layer_type_name(spec->type);
	}
	spec->group = zm_strdup(s);
	if (!spec->group)
		return nomem(err);

	if (idx == 0) {
		in_ndim = arch->input_ndim;
		in_shape = arch->input_shape;
	} else {
		in_ndim = arch->layers[idx - 1].out_ndim;
		in_shape = arch->layers[idx - 1].out_shape;
	}
	spec->in_ndim = in_ndim;
	for (i = 0; i < in_ndim; i++) {
		spec->in_shape[i] = in_shape[i];
		in_features *= in_shape[i];
	}
	spec->in_features = (size_t)in_features;

	/* standardize is fitted to the model's input: nothing may change
	 * the features before it but a reshape (or one_hot, the identity). */
	for (i = 0; spec->type == ZM_LAYER_STANDARDIZE && (size_t)i < idx; i++)
		if (arch->layers[i].type != ZM_LAYER_FLATTEN &&
		    arch->layers[i].type != ZM_LAYER_ONE_HOT)
			return zm_node_error(item, err, ZM_ERR_CONFIG,
			                     "layer '%s': standardize must be the "
			                     "first layer (after flatten): it is "
			                     "fitted to the input data", spec->name);
	/* one_hot's units are part of the input: only layers that leave
	 * them as they are may come before it. */
	for (i = 0; spec->type == ZM_LAYER_ONE_HOT && (size_t)i < idx; i++)
		if (arch->layers[i].type != ZM_LAYER_STANDARDIZE &&
		    arch->layers[i].type != ZM_LAYER_ONE_HOT)
			return zm_node_error(item, err, ZM_ERR_CONFIG,
			                     "layer '%s': one_hot must come "
			                     "before every layer but standardize",
			                     spec->name);
	st = parse_layer_kind(item, spec, err);
	spec->trainable = spec->has_params &&
	                  spec->type != ZM_LAYER_STANDARDIZE &&
	                  spec->type != ZM_LAYER_BATCHNORM;
	return st;
}

/* Derived sizes every consumer wants, computed once. */
static void arch_finish(struct zm_arch *arch)
{
	size_t i, widest = arch->input_features;

	for (i = 0; i < arch->n_layers; i++)
		if (arch->layers[i].out_features > widest)
			widest = arch->layers[i].out_features;
	arch->max_features = widest;
	arch->output_features = arch->n_layers ?
		arch->layers[arch->n_layers - 1].out_features :
		arch->input_features;
}

static const char *const arch_keys[] = {
	"input", "loss", "classes", "layers", "map", NULL
};

/* A PyTorch module path: names joined by dots ("0", "net.fc1"). */
static bool valid_torch_name(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > ZM_LAYER_NAME_MAX || strlen(s) != len ||
	    s[0] == '.' || s[len - 1] == '.')
		return false;
	for (i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == '-' ||
		      (c == '.' && s[i + 1] != '.')))
			return false;
	}
	return true;
}

/* map: {LAYER: TORCH_NAME, ...}: the state-dict names of layers with
 * parameters, each used once. */
static enum zm_status parse_map(const struct zm_node *n, struct zm_arch *arch,
                                struct zm_error *err)
{
	enum zm_status st = zm_node_expect(n, ZM_NODE_MAP, "map", err);
	size_t i, j;

	for (i = 0; st == ZM_OK && i < n->count; i++) {
		const struct zm_node *k = n->keys[i], *v = n->items[i];
		ptrdiff_t l = zm_arch_find_layer(arch, k->value);
		const char *s;
		if (l < 0 || !arch->layers[l].has_params)
			return zm_node_error(k, err, ZM_ERR_CONFIG, "map: '%s' "
			                     "is not a layer with parameters",
			                     k->value);
		if ((st = zm_node_string(v, "map value", &s, err)))
			return st;
		if (!valid_torch_name(s, v->len))
			return zm_node_error(v, err, ZM_ERR_CONFIG, "map: '%s' "
			                     "is not a PyTorch module name "
			                     "(e.g. 0 or net.fc1)", s);
		for (j = 0; j < arch->n_layers; j++)
			if (arch->layers[j].torch &&
			    !strcmp(arch->layers[j].torch, s))
				return zm_node_error(v, err, ZM_ERR_CONFIG,
				                     "map: '%s' given twice", s);
		if (arch->layers[l].torch)
			return zm_node_error(k, err, ZM_ERR_CONFIG, "map: "
			                     "layer '%s' mapped twice", k->value);
		if (!(arch->layers[l].torch = zm_strdup(s)))
			return nomem(err);
	}
	return st;
}

/*
 * The one_hot layers' units join the input after its features: counted
 * here, before any layer is parsed, so that every layer sees them.  A
 * malformed levels list counts 0 and one_hot_parse_spec reports it.
 */
static enum zm_status count_one_hot(const struct zm_node *layers,
                                    const struct zm_node *input,
                                    struct zm_arch *arch, struct zm_error *err)
{
	size_t i, units = 0;

	for (i = 0; i < layers->count; i++) {
		const struct zm_node *it = layers->items[i], *t, *lv;
		if (it->type != ZM_NODE_MAP || !(t = zm_node_get(it, "type")) ||
		    t->type != ZM_NODE_SCALAR || strcmp(t->value, "one_hot"))
			continue;
		lv = zm_node_get(it, "levels");
		if (lv && lv->type == ZM_NODE_SEQ &&
		    lv->count <= ZM_ONE_HOT_MAX_LEVELS)
			units += lv->count;
	}
	if (!units)
		return ZM_OK;
	if (arch->input_ndim != 1)
		return zm_node_error(input, err, ZM_ERR_CONFIG, "input: one_hot "
		                     "layers need a vector input, e.g. [20]");
	if (units > ZM_ARCH_MAX_FEATURES - arch->input_features)
		return zm_node_error(input, err, ZM_ERR_CONFIG, "input: more "
		                     "than %d features with the one_hot units",
		                     ZM_ARCH_MAX_FEATURES);
	arch->input_features += units;
	arch->input_shape[0] += (int64_t)units;
	return ZM_OK;
}

size_t zm_arch_one_hot_units(const struct zm_arch *arch)
{
	size_t i, units = 0;

	for (i = 0; i < arch->n_layers; i++)
		if (arch->layers[i].type == ZM_LAYER_ONE_HOT)
			units += arch->layers[i].n_levels;
	return units;
}

enum zm_status zm_arch_parse(const struct zm_node *root, struct zm_arch **out,
                             struct zm_error *err)
{
	struct zm_arch *arch;
	const struct zm_node *n, *layers, *last_units = NULL;
	enum zm_status st;
	const char *s;
	size_t i;
	bool any_params = false;

	*out = NULL;
	st = zm_node_check_keys(root, arch_keys, "arch", err);
	if (st != ZM_OK)
		return st;
	arch = zm_calloc(1, sizeof(*arch));
	if (!arch)
		return nomem(err);

	n = zm_node_get(root, "input");
	if (!n) {
		st = zm_node_error(root, err, ZM_ERR_CONFIG,
		                   "arch: missing 'input' (e.g. input: [784])");
		goto fail;
	}
	st = parse_input(n, arch, err);
	if (st != ZM_OK)
		goto fail;

	arch->loss = ZM_LOSS_CROSS_ENTROPY;
	n = zm_node_get(root, "loss");
	if (n) {
		st = zm_node_string(n, "loss", &s, err);
		if (st != ZM_OK)
			goto fail;
		if (!zm_loss_parse(s, &arch->loss)) {
			st = zm_node_error(n, err, ZM_ERR_CONFIG,
			                   "unknown loss '%s' (expected "
			                   "cross-entropy or mse)", s);
			goto fail;
		}
	}

	layers = zm_node_get(root, "layers");
	if (!layers) {
		st = zm_node_error(root, err, ZM_ERR_CONFIG,
		                   "arch: missing 'layers'");
		goto fail;
	}
	st = zm_node_expect(layers, ZM_NODE_SEQ, "layers", err);
	if (st != ZM_OK)
		goto fail;
	if (layers->count == 0 || layers->count > ZM_ARCH_MAX_LAYERS) {
		st = zm_node_error(layers, err, ZM_ERR_CONFIG,
		                   "layers: expected 1 to %d layers",
		                   ZM_ARCH_MAX_LAYERS);
		goto fail;
	}
	if ((st = count_one_hot(layers, zm_node_get(root, "input"), arch,
	                        err)) != ZM_OK)
		goto fail;
	arch->layers = zm_calloc(layers->count, sizeof(*arch->layers));
	if (!arch->layers) {
		st = nomem(err);
		goto fail;
	}
	for (i = 0; i < layers->count; i++) {
		arch->n_layers = i + 1;   /* so that zm_arch_free sees it */
		st = parse_layer(layers->items[i], arch, i, err);
		if (st != ZM_OK)
			goto fail;
		any_params |= arch->layers[i].trainable;
		/* Where to point an error about the output width: the last
		 * layer's units (dense) or filters (conv2d), else the layer. */
		if (arch->layers[i].trainable) {
			last_units = zm_node_get(layers->items[i], "units");
			if (!last_units)
				last_units = zm_node_get(layers->items[i], "filters");
			if (!last_units)
				last_units = layers->items[i];
		}
	}
	if (!any_params) {
		st = zm_node_error(layers, err, ZM_ERR_CONFIG,
		                   "layers: need at least one dense layer");
		goto fail;
	}
	arch_finish(arch);
	n = zm_node_get(root, "map");
	if (n && (st = parse_map(n, arch, err)) != ZM_OK)
		goto fail;

	if (arch->loss == ZM_LOSS_CROSS_ENTROPY && arch->output_features < 2) {
		st = zm_node_error(last_units, err, ZM_ERR_CONFIG,
		                   "cross-entropy needs at least 2 output "
		                   "units (one per class), got %zu",
		                   arch->output_features);
		goto fail;
	}
	n = zm_node_get(root, "classes");
	if (n) {
		int64_t classes;
		st = zm_node_int(n, "classes", 1, ZM_ARCH_MAX_UNITS, &classes,
		                 err);
		if (st != ZM_OK)
			goto fail;
		if ((size_t)classes != arch->output_features) {
			st = zm_node_error(n, err, ZM_ERR_CONFIG,
			                   "classes: %lld, but the last layer "
			                   "has %zu units", (long long)classes,
			                   arch->output_features);
			goto fail;
		}
	}
	*out = arch;
	return ZM_OK;
fail:
	zm_arch_free(arch);
	return st;
}

enum zm_status zm_arch_load(const char *path, struct zm_arch **out,
                            struct zm_error *err)
{
	struct zm_node *root;
	enum zm_status st;

	*out = NULL;
	st = zm_config_load(path, &root, err);
	if (st != ZM_OK)
		return st;
	st = zm_arch_parse(root, out, err);
	zm_node_free(root);
	return st;
}

enum zm_status zm_arch_parse_json(const char *json, size_t len,
                                  const char *source, struct zm_arch **out,
                                  struct zm_error *err)
{
	struct zm_node *root;
	enum zm_status st;

	*out = NULL;
	st = zm_config_parse(json, len, source, &root, err);
	if (st != ZM_OK)
		return st;
	st = zm_arch_parse(root, out, err);
	zm_node_free(root);
	return st;
}

/* The shortest of %.15g and %.17g that reads back as v (0.1, not
 * 0.10000000000000001). */
static void shortest(struct zm_buf *b, double v)
{
	char s[40];

	snprintf(s, sizeof(s), "%.15g", v);
	if (strtod(s, NULL) != v)
		snprintf(s, sizeof(s), "%.17g", v);
	zm_buf_puts(b, s);
}

void zm_arch_to_json(const struct zm_arch *arch, struct zm_buf *b)
{
	size_t i, units = zm_arch_one_hot_units(arch);
	int d;

	/* As written: the one_hot units are counted when it is read. */
	zm_buf_puts(b, "{\"input\": [");
	for (d = 0; d < arch->input_ndim; d++)
		zm_buf_printf(b, "%s%lld", d ? ", " : "",
		              (long long)arch->input_shape[d] -
		              (d ? 0 : (long long)units));
	zm_buf_puts(b, "], \"loss\": ");
	zm_json_string(b, zm_loss_name(arch->loss),
	               strlen(zm_loss_name(arch->loss)));
	zm_buf_puts(b, ", \"layers\": [");
	for (i = 0; i < arch->n_layers; i++) {
		const struct zm_layer_spec *l = &arch->layers[i];
		const char *t = zm_layer_type_name(l->type);
		zm_buf_puts(b, i ? ", {\"name\": " : "{\"name\": ");
		zm_json_string(b, l->name, strlen(l->name));
		zm_buf_puts(b, ", \"type\": ");
		zm_json_string(b, t, strlen(t));
		if (l->type == ZM_LAYER_DENSE) {
			const char *a = zm_activation_name(l->act);
			zm_buf_printf(b, ", \"units\": %lld, \"activation\": ",
			              (long long)l->units);
			zm_json_string(b, a, strlen(a));
		} else if (l->type == ZM_LAYER_CONV2D) {
			const char *a = zm_activation_name(l->act);
			zm_buf_printf(b, ", \"filters\": %lld, \"kernel\": "
			              "[%lld, %lld], \"stride\": [%lld, %lld], "
			              "\"padding\": \"%s\", \"activation\": ",
			              (long long)l->units,
			              (long long)l->kernel[0],
			              (long long)l->kernel[1],
			              (long long)l->stride[0],
			              (long long)l->stride[1],
			              l->same ? "same" : "valid");
			zm_json_string(b, a, strlen(a));
		} else if (l->type == ZM_LAYER_CLIP) {
			zm_buf_puts(b, ", \"min\": ");
			shortest(b, l->lo);
			zm_buf_puts(b, ", \"max\": ");
			shortest(b, l->hi);
		} else if (l->type == ZM_LAYER_DROPOUT) {
			zm_buf_puts(b, ", \"rate\": ");
			shortest(b, l->rate);
		} else if (l->type == ZM_LAYER_ONE_HOT) {
			size_t k;
			zm_buf_puts(b, ", \"column\": ");
			zm_json_string(b, l->column, strlen(l->column));
			zm_buf_puts(b, ", \"levels\": [");
			for (k = 0; k < l->n_levels; k++) {
				if (k)
					zm_buf_puts(b, ", ");
				zm_json_string(b, l->levels[k],
				               strlen(l->levels[k]));
			}
			zm_buf_puts(b, "]");
		} else if (l->type == ZM_LAYER_MAXPOOL2D) {
			zm_buf_printf(b, ", \"size\": [%lld, %lld], "
			              "\"stride\": [%lld, %lld]",
			              (long long)l->kernel[0],
			              (long long)l->kernel[1],
			              (long long)l->stride[0],
			              (long long)l->stride[1]);
		}
		zm_buf_puts(b, ", \"group\": ");
		zm_json_string(b, l->group, strlen(l->group));
		zm_buf_puts(b, "}");
	}
	zm_buf_puts(b, "]");
	for (i = 0, d = 0; i < arch->n_layers; i++) {
		const struct zm_layer_spec *l = &arch->layers[i];
		if (!l->torch)
			continue;
		zm_buf_puts(b, d++ ? ", " : ", \"map\": {");
		zm_json_string(b, l->name, strlen(l->name));
		zm_buf_puts(b, ": ");
		zm_json_string(b, l->torch, strlen(l->torch));
	}
	zm_buf_puts(b, d ? "}}" : "}");
}

void zm_arch_free(struct zm_arch *arch)
{
	size_t i;

	if (!arch)
		return;
	for (i = 0; i < arch->n_layers; i++) {
		free(arch->layers[i].name);
		free(arch->layers[i].group);
		free(arch->layers[i].torch);
		free(arch->layers[i].column);
		zm_config_strings_free(arch->layers[i].levels,
		                       arch->layers[i].n_levels);
	}
	free(arch->layers);
	free(arch);
}

enum zm_status zm_arch_copy(const struct zm_arch *src, struct zm_arch **out,
                            struct zm_error *err)
{
	struct zm_arch *a = zm_calloc(1, sizeof(*a));
	size_t i;

	*out = NULL;
	if (!a)
		return nomem(err);
	*a = *src;
	a->n_layers = 0;
	a->layers = zm_calloc(src->n_layers ? src->n_layers : 1,
	                      sizeof(*a->layers));
	if (!a->layers)
		goto fail;
	for (i = 0; i < src->n_layers; i++) {
		a->layers[i] = src->layers[i];
		a->layers[i].name = zm_strdup(src->layers[i].name);
		a->layers[i].group = zm_strdup(src->layers[i].group);
		a->layers[i].torch = src->layers[i].torch ?
		                     zm_strdup(src->layers[i].torch) : NULL;
		a->layers[i].column = NULL;
		a->layers[i].levels = NULL;
		a->layers[i].n_levels = 0;
		a->n_layers = i + 1;
		if (!a->layers[i].name || !a->layers[i].group ||
		    (src->layers[i].torch && !a->layers[i].torch))
			goto fail;
		if (src->layers[i].column) {
			const struct zm_layer_spec *s = &src->layers[i];
			size_t k;
			if (!(a->layers[i].column = zm_strdup(s->column)) ||
			    !(a->layers[i].levels = zm_calloc(s->n_levels,
			                                      sizeof(char *))))
				goto fail;
			for (k = 0; k < s->n_levels; k++) {
				if (!(a->layers[i].levels[k] =
				      zm_strdup(s->levels[k])))
					goto fail;
				a->layers[i].n_levels = k + 1;
			}
		}
	}
	*out = a;
	return ZM_OK;
fail:
	zm_arch_free(a);
	return nomem(err);
}

/* one_hot: the column and the levels, unit by unit, named. */
static bool one_hot_diff(const struct zm_layer_spec *a,
                         const struct zm_layer_spec *b, char *buf,
                         size_t size)
{
	size_t k;

	if (a->type != ZM_LAYER_ONE_HOT)
		return false;
	if (strcmp(a->column, b->column)) {
		snprintf(buf, size, "one_hot column '%s' vs '%s'", a->column,
		         b->column);
		return true;
	}
	for (k = 0; k < a->n_levels && k < b->n_levels; k++)
		if (strcmp(a->levels[k], b->levels[k])) {
			snprintf(buf, size, "one_hot '%s': level %zu is '%s' vs "
			         "'%s'", a->column, k + 1, a->levels[k],
			         b->levels[k]);
			return true;
		}
	if (a->n_levels != b->n_levels) {
		snprintf(buf, size, "one_hot '%s': level '%s' only in one "
		         "model", a->column, a->n_levels > b->n_levels ?
		         a->levels[k] : b->levels[k]);
		return true;
	}
	return false;
}

/* Compares what determines the computation; groups only when asked. */
static const char *spec_diff(const struct zm_layer_spec *a,
                             const struct zm_layer_spec *b, bool groups,
                             char *buf, size_t size)
{
	if (strcmp(a->name, b->name))
		snprintf(buf, size, "name '%s' vs '%s'", a->name, b->name);
	else if (a->type != b->type)
		snprintf(buf, size, "type %s vs %s", zm_layer_type_name(a->type),
		         zm_layer_type_name(b->type));
	else if (a->units != b->units)
		snprintf(buf, size, "units %lld vs %lld", (long long)a->units,
		         (long long)b->units);
	else if (a->act != b->act)
		snprintf(buf, size, "activation %s vs %s",
		         zm_activation_name(a->act), zm_activation_name(b->act));
	else if (a->kernel[0] != b->kernel[0] || a->kernel[1] != b->kernel[1])
		snprintf(buf, size, "kernel %lldx%lld vs %lldx%lld",
		         (long long)a->kernel[0], (long long)a->kernel[1],
		         (long long)b->kernel[0], (long long)b->kernel[1]);
	else if (a->stride[0] != b->stride[0] || a->stride[1] != b->stride[1])
		snprintf(buf, size, "stride %lldx%lld vs %lldx%lld",
		         (long long)a->stride[0], (long long)a->stride[1],
		         (long long)b->stride[0], (long long)b->stride[1]);
	else if (a->lo != b->lo || a->hi != b->hi)
		snprintf(buf, size, "clip [%g, %g] vs [%g, %g]", a->lo, a->hi,
		         b->lo, b->hi);
	else if (a->rate != b->rate)
		snprintf(buf, size, "rate %g vs %g", a->rate, b->rate);
	else if (a->same != b->same)
		snprintf(buf, size, "padding %s vs %s",
		         a->same ? "same" : "valid", b->same ? "same" : "valid");
	else if (one_hot_diff(a, b, buf, size))
		;
	else if (groups && strcmp(a->group, b->group))
		snprintf(buf, size, "group '%s' vs '%s'", a->group, b->group);
	else
		return NULL;
	return buf;
}

static bool same_input(const struct zm_arch *a, const struct zm_arch *b)
{
	int d;

	if (a->input_ndim != b->input_ndim)
		return false;
	for (d = 0; d < a->input_ndim; d++)
		if (a->input_shape[d] != b->input_shape[d])
			return false;
	return true;
}

bool zm_arch_equal(const struct zm_arch *a, const struct zm_arch *b)
{
	char buf[256];
	size_t i;

	if (!same_input(a, b) || a->loss != b->loss ||
	    a->n_layers != b->n_layers)
		return false;
	for (i = 0; i < a->n_layers; i++) {
		const char *ta = a->layers[i].torch, *tb = b->layers[i].torch;
		if (spec_diff(&a->layers[i], &b->layers[i], true, buf,
		              sizeof(buf)))
			return false;
		if (!ta != !tb || (ta && strcmp(ta, tb)))
			return false;
	}
	return true;
}

enum zm_status zm_model_same_arch(const struct zm_arch *a,
                                  const struct zm_arch *b,
                                  struct zm_error *err)
{
	char buf[256], sa[128], sb[128];
	size_t i;

	/* Layers first: one_hot levels that differ also change the input,
	 * and the level is what to name. */
	for (i = 0; i < a->n_layers && i < b->n_layers; i++)
		if (spec_diff(&a->layers[i], &b->layers[i], false, buf,
		              sizeof(buf)))
			return zm_error_set(err, ZM_ERR_DATA,
			                    "layer %zu '%s': %s", i + 1,
			                    a->layers[i].name, buf);
	if (!same_input(a, b)) {
		zm_shape_format(a->input_ndim, a->input_shape, sa, sizeof(sa));
		zm_shape_format(b->input_ndim, b->input_shape, sb, sizeof(sb));
		return zm_error_set(err, ZM_ERR_DATA, "input %s vs %s", sa, sb);
	}
	if (a->loss != b->loss)
		return zm_error_set(err, ZM_ERR_DATA, "loss %s vs %s",
		                    zm_loss_name(a->loss), zm_loss_name(b->loss));
	if (a->n_layers != b->n_layers)
		return zm_error_set(err, ZM_ERR_DATA, "%zu layers vs %zu",
		                    a->n_layers, b->n_layers);
	return ZM_OK;
}

enum zm_status zm_arch_same_one_hot(const struct zm_arch *a,
                                    const struct zm_arch *b,
                                    struct zm_error *err)
{
	size_t i = 0, j = 0;
	char buf[256];

	for (;;) {
		while (i < a->n_layers && a->layers[i].type != ZM_LAYER_ONE_HOT)
			i++;
		while (j < b->n_layers && b->layers[j].type != ZM_LAYER_ONE_HOT)
			j++;
		if (i == a->n_layers || j == b->n_layers)
			break;
		if (one_hot_diff(&a->layers[i], &b->layers[j], buf,
		                 sizeof(buf)))
			return zm_error_set(err, ZM_ERR_DATA, "%s", buf);
		i++;
		j++;
	}
	if (i != a->n_layers || j != b->n_layers) {
		const struct zm_layer_spec *s = i < a->n_layers ?
		                                &a->layers[i] : &b->layers[j];
		return zm_error_set(err, ZM_ERR_DATA, "one_hot '%s' (levels "
		                    "%s, ...) only in one model", s->column,
		                    s->levels[0]);
	}
	return ZM_OK;
}

size_t zm_arch_param_count(const struct zm_arch *arch)
{
	size_t i, total = 0;

	/* The parser bounds each layer, so this cannot overflow size_t on
	 * 64-bit machines for ZM_ARCH_MAX_LAYERS layers. */
	for (i = 0; i < arch->n_layers; i++)
		total += arch->layers[i].n_weight + arch->layers[i].n_bias;
	return total;
}

ptrdiff_t zm_arch_find_layer(const struct zm_arch *arch, const char *name)
{
	size_t i;

	for (i = 0; i < arch->n_layers; i++)
		if (!strcmp(arch->layers[i].name, name))
			return (ptrdiff_t)i;
	return -1;
}
