/*
 * Architectures, models, forward and backward passes, losses.
 *
 * The elementwise loops (activations, bias, softmax) are written in blocks
 * of eight independent lanes so that GCC's -O2 vectorizer takes them; the
 * pragma below lets it if-convert the clamps in those blocks, which it
 * refuses to do while it must preserve floating-point traps (we never
 * enable traps).  The exponential is our own polynomial for the same
 * reason: libm's expf and tanhf are scalar calls that would cost as much as
 * the GEMMs for tanh, sigmoid and gelu layers.
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conv.h"
#include "gemm.h"
#include "mem.h"
#include "model.h"
#include "random.h"
#include "vec.h"

enum { LANES = 8 };

/* ---- names ---- */

static const char *const layer_type_names[] = {
	[ZM_LAYER_DENSE] = "dense",
	[ZM_LAYER_FLATTEN] = "flatten",
	[ZM_LAYER_CONV2D] = "conv2d",
	[ZM_LAYER_MAXPOOL2D] = "maxpool2d",
};

static const char *const activation_names[] = {
	[ZM_ACT_IDENTITY] = "identity",
	[ZM_ACT_RELU] = "relu",
	[ZM_ACT_TANH] = "tanh",
	[ZM_ACT_SIGMOID] = "sigmoid",
	[ZM_ACT_GELU] = "gelu",
};

static const char *const loss_names[] = {
	[ZM_LOSS_CROSS_ENTROPY] = "cross-entropy",
	[ZM_LOSS_MSE] = "mse",
};

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

const char *zm_layer_type_name(enum zm_layer_type t)
{
	ZM_ASSERT((size_t)t < COUNT_OF(layer_type_names));
	return layer_type_names[t];
}

const char *zm_activation_name(enum zm_activation a)
{
	ZM_ASSERT((size_t)a < COUNT_OF(activation_names));
	return activation_names[a];
}

const char *zm_loss_name(enum zm_loss l)
{
	ZM_ASSERT((size_t)l < COUNT_OF(loss_names));
	return loss_names[l];
}

static bool lookup(const char *const *names, size_t count, const char *s,
                   int *out)
{
	size_t i;

	for (i = 0; i < count; i++) {
		if (!strcmp(names[i], s)) {
			*out = (int)i;
			return true;
		}
	}
	return false;
}

bool zm_activation_parse(const char *s, enum zm_activation *out)
{
	int v;

	if (!lookup(activation_names, COUNT_OF(activation_names), s, &v))
		return false;
	*out = (enum zm_activation)v;
	return true;
}

bool zm_loss_parse(const char *s, enum zm_loss *out)
{
	int v;

	if (!lookup(loss_names, COUNT_OF(loss_names), s, &v))
		return false;
	*out = (enum zm_loss)v;
	return true;
}

/* ---- architecture parsing ---- */

static enum zm_status nomem(struct zm_error *err)
{
	return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
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
	"stride", "padding", "size", NULL
};

/*
 * Parses layers->items[idx] into arch->layers[idx], given the per-sample
 * shape its input has (the previous layer's output).  The type and name
 * are read first so that later messages can name the layer.
 */
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
		int t;
		st = zm_node_string(n, "type", &s, err);
		if (st != ZM_OK)
			return st;
		if (!lookup(layer_type_names, COUNT_OF(layer_type_names), s, &t))
			return zm_node_error(n, err, ZM_ERR_CONFIG,
			                     "layer '%s': unknown type '%s' "
			                     "(expected dense, conv2d, maxpool2d "
			                     "or flatten)", spec->name, s);
		spec->type = (enum zm_layer_type)t;
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

	spec->act = ZM_ACT_IDENTITY;
	if (spec->type == ZM_LAYER_CONV2D || spec->type == ZM_LAYER_MAXPOOL2D)
		return zm_conv_parse_spec(item, spec, err);
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
	"input", "loss", "classes", "layers", NULL
};

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
		any_params |= arch->layers[i].has_params;
		/* Where to point an error about the output width: the last
		 * layer's units (dense) or filters (conv2d), else the layer. */
		if (arch->layers[i].has_params) {
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

void zm_arch_to_json(const struct zm_arch *arch, struct zm_buf *b)
{
	size_t i;
	int d;

	zm_buf_puts(b, "{\"input\": [");
	for (d = 0; d < arch->input_ndim; d++)
		zm_buf_printf(b, "%s%lld", d ? ", " : "",
		              (long long)arch->input_shape[d]);
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
	zm_buf_puts(b, "]}");
}

void zm_arch_free(struct zm_arch *arch)
{
	size_t i;

	if (!arch)
		return;
	for (i = 0; i < arch->n_layers; i++) {
		free(arch->layers[i].name);
		free(arch->layers[i].group);
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
		a->n_layers = i + 1;
		if (!a->layers[i].name || !a->layers[i].group)
			goto fail;
	}
	*out = a;
	return ZM_OK;
fail:
	zm_arch_free(a);
	return nomem(err);
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
	else if (a->same != b->same)
		snprintf(buf, size, "padding %s vs %s",
		         a->same ? "same" : "valid", b->same ? "same" : "valid");
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
	for (i = 0; i < a->n_layers; i++)
		if (spec_diff(&a->layers[i], &b->layers[i], true, buf,
		              sizeof(buf)))
			return false;
	return true;
}

enum zm_status zm_model_same_arch(const struct zm_arch *a,
                                  const struct zm_arch *b,
                                  struct zm_error *err)
{
	char buf[256], sa[128], sb[128];
	size_t i;

	if (!same_input(a, b)) {
		zm_shape_format(a->input_ndim, a->input_shape, sa, sizeof(sa));
		zm_shape_format(b->input_ndim, b->input_shape, sb, sizeof(sb));
		return zm_error_set(err, ZM_ERR_DATA, "input %s vs %s", sa, sb);
	}
	if (a->loss != b->loss)
		return zm_error_set(err, ZM_ERR_DATA, "loss %s vs %s",
		                    zm_loss_name(a->loss), zm_loss_name(b->loss));
	for (i = 0; i < a->n_layers && i < b->n_layers; i++)
		if (spec_diff(&a->layers[i], &b->layers[i], false, buf,
		              sizeof(buf)))
			return zm_error_set(err, ZM_ERR_DATA,
			                    "layer %zu '%s': %s", i + 1,
			                    a->layers[i].name, buf);
	if (a->n_layers != b->n_layers)
		return zm_error_set(err, ZM_ERR_DATA, "%zu layers vs %zu",
		                    a->n_layers, b->n_layers);
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
		if (l->spec->type == ZM_LAYER_CONV2D) {
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
		if (!l->spec->has_params)
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

/* ---- elementwise kernels ---- */

/*
 * exp(x) to about 2.5e-7 relative error: x = k ln2 + r with |r| <= ln2/2
 * (ln2 split in two for an exact product), a degree-6 Taylor polynomial for
 * exp(r), and 2^k built in the exponent bits.  Arguments are clamped to
 * [-87, 88] so 2^k stays a normal float; NaN propagates.  Branch-free so
 * that the blocked loops calling it vectorize.
 */
static inline float exp_approx(float x)
{
	float xc = x > -87.0f ? x : -87.0f;
	float k, r, p, s, y;
	int32_t ki;
	uint32_t bits;

	xc = xc < 88.0f ? xc : 88.0f;
	/* Adding and subtracting 1.5 * 2^23 rounds to the nearest integer. */
	k = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
	r = xc - k * 0.693145751953125f;
	r = r - k * 1.428606765330187045e-06f;
	p = 1.0f / 720;
	p = p * r + 1.0f / 120;
	p = p * r + 1.0f / 24;
	p = p * r + 1.0f / 6;
	p = p * r + 0.5f;
	p = p * r + 1.0f;
	p = p * r + 1.0f;
	ki = (int32_t)k;
	bits = (uint32_t)(ki + 127) << 23;
	memcpy(&s, &bits, sizeof(s));
	y = p * s;
	return x == x ? y : x;
}

static inline float sigmoid1(float x)
{
	return 1.0f / (1.0f + exp_approx(-x));
}

/* tanh(x) = 1 - 2 / (1 + e^{2x}); exact at both saturations, absolute
 * error about 1e-7 near zero. */
static inline float tanh1(float x)
{
	return 1.0f - 2.0f / (1.0f + exp_approx(2.0f * x));
}

#define GELU_C 0.7978845608028654f   /* sqrt(2 / pi) */
#define GELU_A 0.044715f

static inline float gelu1(float x)
{
	float t = tanh1(GELU_C * (x + GELU_A * x * x * x));
	return 0.5f * x * (1.0f + t);
}

static inline float gelu_grad1(float x)
{
	float t = tanh1(GELU_C * (x + GELU_A * x * x * x));
	return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * GELU_C *
	       (1.0f + 3.0f * GELU_A * x * x);
}

static inline float relu1(float x)
{
	/* NaN is kept (a comparison with NaN is false), as PyTorch does. */
	return x < 0.0f ? 0.0f : x;
}

/*
 * Applies OP to count values of in, writing out (which may equal in), in
 * blocks of LANES so that the body vectorizes: each block is computed into
 * a local array first, so the compiler need not fear that a store to out
 * changes a later load from in.
 */
#define MAP_LOOP(OP, in, out, count)                                      \
	do {                                                              \
		size_t i_ = 0, j_;                                        \
		float t_[LANES];                                          \
		for (; i_ + LANES <= (count); i_ += LANES) {              \
			for (j_ = 0; j_ < LANES; j_++)                    \
				t_[j_] = OP((in)[i_ + j_]);               \
			memcpy((out) + i_, t_, sizeof(t_));               \
		}                                                         \
		for (; i_ < (count); i_++)                                \
			(out)[i_] = OP((in)[i_]);                         \
	} while (0)

void zm_activation_apply(enum zm_activation act, const float *pre,
                         float *out, size_t count)
{
	switch (act) {
	case ZM_ACT_IDENTITY:
		if (out != pre)
			memmove(out, pre, count * sizeof(*out));
		break;
	case ZM_ACT_RELU:
		MAP_LOOP(relu1, pre, out, count);
		break;
	case ZM_ACT_TANH:
		MAP_LOOP(tanh1, pre, out, count);
		break;
	case ZM_ACT_SIGMOID:
		MAP_LOOP(sigmoid1, pre, out, count);
		break;
	case ZM_ACT_GELU:
		MAP_LOOP(gelu1, pre, out, count);
		break;
	}
}

bool zm_activation_needs_pre(enum zm_activation act)
{
	return act == ZM_ACT_GELU;
}

/* grad[i] = grad[i] * D(src[i]) in blocks, as MAP_LOOP. */
#define SCALE_LOOP(D, src, grad, count)                                   \
	do {                                                              \
		size_t i_ = 0, j_;                                        \
		float t_[LANES];                                          \
		for (; i_ + LANES <= (count); i_ += LANES) {              \
			for (j_ = 0; j_ < LANES; j_++)                    \
				t_[j_] = (grad)[i_ + j_] *                \
				         D((src)[i_ + j_]);               \
			memcpy((grad) + i_, t_, sizeof(t_));              \
		}                                                         \
		for (; i_ < (count); i_++)                                \
			(grad)[i_] *= D((src)[i_]);                       \
	} while (0)

static inline float relu_d(float y)
{
	return y > 0.0f ? 1.0f : 0.0f;
}

static inline float tanh_d(float y)
{
	return 1.0f - y * y;
}

static inline float sigmoid_d(float y)
{
	return y * (1.0f - y);
}

void zm_activation_backward(enum zm_activation act, const float *pre,
                            const float *post, float *grad, size_t count)
{
	switch (act) {
	case ZM_ACT_IDENTITY:
		break;
	case ZM_ACT_RELU:
		ZM_ASSERT(post);
		SCALE_LOOP(relu_d, post, grad, count);
		break;
	case ZM_ACT_TANH:
		ZM_ASSERT(post);
		SCALE_LOOP(tanh_d, post, grad, count);
		break;
	case ZM_ACT_SIGMOID:
		ZM_ASSERT(post);
		SCALE_LOOP(sigmoid_d, post, grad, count);
		break;
	case ZM_ACT_GELU:
		ZM_ASSERT(pre);
		SCALE_LOOP(gelu_grad1, pre, grad, count);
		break;
	}
}

/* ---- layers ---- */

void zm_layer_linear(const struct zm_layer *layer, const float *in, size_t n,
                     float *out_pre)
{
	const struct zm_layer_spec *s = layer->spec;
	size_t i, nin = s->in_features, nout = s->out_features;
	const float *bias;

	if (s->type == ZM_LAYER_FLATTEN) {
		if (out_pre != in)
			memmove(out_pre, in, n * nin * sizeof(*in));
		return;
	}
	if (s->type == ZM_LAYER_MAXPOOL2D) {
		struct zm_conv_geom g;
		zm_conv_geom_of(s, &g);
		zm_maxpool_forward(&g, in, n, out_pre);
		return;
	}
	ZM_ASSERT(s->type == ZM_LAYER_DENSE);
	/* Seed each row with the bias and let the GEMM accumulate onto it:
	 * one pass over the output instead of two. */
	bias = layer->bias.data;
	for (i = 0; i < n; i++)
		memcpy(out_pre + i * nout, bias, nout * sizeof(*bias));
	zm_gemm(false, true, n, nout, nin, 1.0f, in, nin, layer->weight.data,
	        nin, 1.0f, out_pre, nout);
}

void zm_layer_forward(const struct zm_layer *layer, const float *in, size_t n,
                      float *out_pre, float *scratch)
{
	const struct zm_layer_spec *s = layer->spec;
	struct zm_conv_geom g;

	if (s->type != ZM_LAYER_CONV2D) {
		zm_layer_linear(layer, in, n, out_pre);
		return;
	}
	ZM_ASSERT(scratch != NULL);
	zm_conv_geom_of(s, &g);
	zm_conv_forward(&g, layer->weight.data, layer->bias.data, in, n,
	                out_pre, scratch);
}

size_t zm_layer_scratch_floats(const struct zm_layer_spec *s,
                               size_t max_batch, bool training)
{
	struct zm_conv_geom g;

	if (s->type != ZM_LAYER_CONV2D)
		return 0;
	zm_conv_geom_of(s, &g);
	return zm_conv_scratch_floats(&g, max_batch, training);
}

void zm_layer_backward_any(const struct zm_layer *layer, const float *in,
                           const float *out_pre, size_t n, const float *dpre,
                           float *dw, float *db, float beta_dw, float *dx,
                           float *scratch)
{
	const struct zm_layer_spec *s = layer->spec;
	struct zm_conv_geom g;

	(void)out_pre;   /* maxpool finds each window's maximum again */
	switch (s->type) {
	case ZM_LAYER_DENSE:
		zm_layer_backward(layer, in, n, dpre, dw, db, beta_dw, dx);
		break;
	case ZM_LAYER_CONV2D:
		ZM_ASSERT(scratch != NULL);
		zm_conv_geom_of(s, &g);
		zm_conv_backward(&g, layer->weight.data, in, n, dpre, dw, db,
		                 beta_dw, dx, scratch);
		break;
	case ZM_LAYER_MAXPOOL2D:
		zm_conv_geom_of(s, &g);
		if (dx)
			zm_maxpool_backward(&g, in, n, dpre, dx);
		break;
	case ZM_LAYER_FLATTEN:
		if (dx && dx != dpre)
			memmove(dx, dpre, n * s->in_features * sizeof(*dx));
		break;
	}
}

/* db (+)= column sums of the n x cols matrix g. */
static void column_sums(const float *restrict g, size_t n, size_t cols,
                        float *restrict db, bool accumulate)
{
	size_t i, j, k;

	if (!accumulate)
		memset(db, 0, cols * sizeof(*db));
	for (i = 0; i < n; i++) {
		const float *row = g + i * cols;
		for (j = 0; j + LANES <= cols; j += LANES)
			for (k = 0; k < LANES; k++)
				db[j + k] += row[j + k];
		for (; j < cols; j++)
			db[j] += row[j];
	}
}

void zm_layer_backward(const struct zm_layer *layer, const float *in,
                       size_t n, const float *dpre, float *dw, float *db,
                       float beta_dw, float *dx)
{
	const struct zm_layer_spec *s = layer->spec;
	size_t nin = s->in_features, nout = s->out_features;

	ZM_ASSERT(s->type == ZM_LAYER_DENSE);
	if (dw)
		zm_gemm(true, false, nout, nin, n, 1.0f, dpre, nout, in, nin,
		        beta_dw, dw, nin);
	if (db)
		column_sums(dpre, n, nout, db, beta_dw != 0.0f);
	if (dx)
		zm_gemm(false, false, n, nin, nout, 1.0f, dpre, nout,
		        layer->weight.data, nin, 0.0f, dx, nin);
}

/* ---- workspaces and whole-model passes ---- */

void zm_workspace_free(struct zm_workspace *ws)
{
	size_t i;

	if (!ws)
		return;
	for (i = 0; ws->buf && i < ws->arch->n_layers; i++) {
		free(ws->buf[i]);
		if (ws->pre)
			free(ws->pre[i]);
		if (ws->dw)
			free(ws->dw[i]);
		if (ws->db)
			free(ws->db[i]);
	}
	free(ws->out);
	free(ws->pre);
	free(ws->buf);
	free(ws->dw);
	free(ws->db);
	free(ws->grad_a);
	free(ws->grad_b);
	free(ws->dlogits);
	free(ws->scratch);
	for (i = 0; ws->packed && i < ws->arch->n_layers; i++)
		zm_gemm_packed_free(&ws->packed[i]);
	free(ws->packed);
	free(ws);
}

enum zm_status zm_workspace_pack(struct zm_workspace *ws,
                                 const struct zm_model *model,
                                 struct zm_error *err)
{
	size_t l, L = model->arch->n_layers;
	struct zm_gemm_packed *packed;
	enum zm_status st;

	if (ws->training)
		return zm_error_set(err, ZM_ERR_USAGE,
		                    "a training workspace cannot hold packed weights");
	ZM_ASSERT(ws->arch->n_layers == L);
	if (!(packed = zm_calloc(L, sizeof(*packed))))
		return nomem(err);
	for (l = 0; l < L; l++) {
		const struct zm_layer *layer = &model->layers[l];
		const struct zm_layer_spec *s = layer->spec;
		if (s->type != ZM_LAYER_DENSE)
			continue;
		st = zm_gemm_pack(&packed[l], layer->weight.data, s->out_features,
		                  s->in_features, s->in_features, ws->max_batch,
		                  err);
		if (st != ZM_OK) {
			while (l-- > 0)
				zm_gemm_packed_free(&packed[l]);
			free(packed);
			return st;
		}
	}
	for (l = 0; ws->packed && l < L; l++)
		zm_gemm_packed_free(&ws->packed[l]);
	free(ws->packed);
	ws->packed = packed;
	ws->packed_from = model;
	return ZM_OK;
}

void zm_dense_epilogue_block(void *ctx, float *y, size_t ldy, size_t row,
                             size_t rows, size_t col, size_t cols)
{
	const struct zm_dense_epilogue *e = ctx;
	const float *b = e->bias + col;
	bool relu = e->act == ZM_ACT_RELU;
	size_t i, j;

	(void)row;
	for (i = 0; i < rows; i++) {
		float *r = y + i * ldy;
		for (j = 0; j + 4 <= cols; j += 4) {
			zm_v4f v = zm_load4(r + j) + zm_load4(b + j);
			zm_store4(r + j, relu ? zm_relu4(v) : v);
		}
		for (; j < cols; j++)
			r[j] = relu ? relu1(r[j] + b[j]) : r[j] + b[j];
		if (!relu && e->act != ZM_ACT_IDENTITY)
			zm_activation_apply(e->act, r, r, cols);
	}
}

/* zm_malloc of a rows x cols float array, overflow-checked. */
static float *alloc_floats(size_t rows, size_t cols)
{
	size_t n;

	if (!zm_size_mul(rows, cols, &n) || !zm_size_mul(n, sizeof(float), &n))
		return NULL;
	return zm_malloc(n);
}

enum zm_status zm_workspace_new(const struct zm_arch *arch, size_t max_batch,
                                bool training, struct zm_workspace **out,
                                struct zm_error *err)
{
	struct zm_workspace *ws = zm_calloc(1, sizeof(*ws));
	size_t i, L = arch->n_layers, scratch = 0;

	*out = NULL;
	ZM_ASSERT(max_batch > 0);
	if (!ws)
		return nomem(err);
	ws->arch = arch;
	ws->max_batch = max_batch;
	ws->training = training;
	ws->out = zm_calloc(L, sizeof(*ws->out));
	ws->pre = zm_calloc(L, sizeof(*ws->pre));
	ws->buf = zm_calloc(L, sizeof(*ws->buf));
	if (!ws->out || !ws->pre || !ws->buf)
		goto fail;
	if (training) {
		ws->dw = zm_calloc(L, sizeof(*ws->dw));
		ws->db = zm_calloc(L, sizeof(*ws->db));
		ws->grad_a = alloc_floats(max_batch, arch->max_features);
		ws->grad_b = alloc_floats(max_batch, arch->max_features);
		ws->dlogits = alloc_floats(max_batch, arch->output_features);
		if (!ws->dw || !ws->db || !ws->grad_a || !ws->grad_b ||
		    !ws->dlogits)
			goto fail;
	}
	for (i = 0; i < L; i++) {
		const struct zm_layer_spec *s = &arch->layers[i];
		size_t sc = zm_layer_scratch_floats(s, max_batch, training);
		if (sc > scratch)
			scratch = sc;
		if (s->type == ZM_LAYER_MAXPOOL2D) {
			ws->buf[i] = alloc_floats(max_batch, s->out_features);
			if (!ws->buf[i])
				goto fail;
		}
		if (!s->has_params)
			continue;
		ws->buf[i] = alloc_floats(max_batch, s->out_features);
		if (!ws->buf[i])
			goto fail;
		if (zm_activation_needs_pre(s->act)) {
			ws->pre[i] = alloc_floats(max_batch, s->out_features);
			if (!ws->pre[i])
				goto fail;
		}
		if (training) {
			ws->dw[i] = alloc_floats(1, s->n_weight);
			ws->db[i] = alloc_floats(1, s->n_bias);
			if (!ws->dw[i] || !ws->db[i])
				goto fail;
		}
	}
	if (scratch && !(ws->scratch = alloc_floats(1, scratch)))
		goto fail;
	*out = ws;
	return ZM_OK;
fail:
	zm_workspace_free(ws);
	return zm_error_set(err, ZM_ERR_NOMEM,
	                    "out of memory for a batch of %zu rows", max_batch);
}

const float *zm_model_forward(const struct zm_model *model,
                              struct zm_workspace *ws, const float *x,
                              size_t n)
{
	const float *in = x;
	size_t l;

	ZM_ASSERT(n <= ws->max_batch);
	ZM_ASSERT(ws->arch->n_layers == model->arch->n_layers);
	for (l = 0; l < model->arch->n_layers; l++) {
		const struct zm_layer *layer = &model->layers[l];
		const struct zm_layer_spec *s = layer->spec;
		size_t count = n * s->out_features;
		float *dst = ws->buf[l];
		if (s->type == ZM_LAYER_FLATTEN) {
			/* flatten: activations are stored flat already. */
			ws->out[l] = in;
			continue;
		}
		if (s->type == ZM_LAYER_CONV2D && !ws->pre[l]) {
			/* The activation is applied while the GEMM's output
			 * is scattered to NCHW: one pass over it, not two. */
			struct zm_conv_geom g;
			zm_conv_geom_of(s, &g);
			zm_conv_forward_act(&g, layer->weight.data,
			                    layer->bias.data, in, n, s->act, dst,
			                    ws->scratch);
			ws->out[l] = dst;
			in = dst;
			continue;
		}
		if (s->type != ZM_LAYER_DENSE) {
			/* conv2d, maxpool2d: see conv.h. */
			float *p = ws->pre[l] ? ws->pre[l] : dst;
			zm_layer_forward(layer, in, n, p, ws->scratch);
			zm_activation_apply(s->act, p, dst, n * s->out_features);
			ws->out[l] = dst;
			in = dst;
			continue;
		}
		if (ws->packed_from == model && ws->packed[l].data &&
		    !ws->pre[l]) {
			struct zm_dense_epilogue e = { layer->bias.data, s->act };
			zm_gemm_packed_run(&ws->packed[l], n, in, s->in_features,
			                   dst, s->out_features,
			                   zm_dense_epilogue_block, &e);
		} else if (ws->pre[l]) {
			zm_layer_linear(layer, in, n, ws->pre[l]);
			zm_activation_apply(s->act, ws->pre[l], dst, count);
		} else {
			zm_layer_linear(layer, in, n, dst);
			zm_activation_apply(s->act, dst, dst, count);
		}
		ws->out[l] = dst;
		in = dst;
	}
	return in;
}

void zm_model_backward(const struct zm_model *model, struct zm_workspace *ws,
                       const float *x, size_t n, float *dout)
{
	float *g = dout;
	size_t l, first = 0;

	ZM_ASSERT(ws->training && n <= ws->max_batch);
	/* No input gradient is needed below the first parameter layer. */
	while (!model->arch->layers[first].has_params)
		first++;
	for (l = model->arch->n_layers; l-- > first;) {
		const struct zm_layer *layer = &model->layers[l];
		const struct zm_layer_spec *s = layer->spec;
		const float *in = l ? ws->out[l - 1] : x;
		float *dx = NULL;
		if (s->type == ZM_LAYER_FLATTEN)
			continue;   /* flatten: the gradient keeps its layout */
		if (s->type != ZM_LAYER_DENSE) {
			zm_activation_backward(s->act, ws->pre[l], ws->out[l],
			                       g, n * s->out_features);
			if (l > first)
				dx = g == ws->grad_a ? ws->grad_b : ws->grad_a;
			zm_layer_backward_any(layer, in, ws->out[l], n, g,
			                      ws->dw[l], ws->db[l], 0.0f, dx,
			                      ws->scratch);
			g = dx;
			continue;
		}
		zm_activation_backward(s->act, ws->pre[l], ws->out[l], g,
		                       n * s->out_features);
		if (l > first)
			dx = g == ws->grad_a ? ws->grad_b : ws->grad_a;
		zm_layer_backward(layer, in, n, g, ws->dw[l], ws->db[l], 0.0f,
		                  dx);
		g = dx;
	}
}

/* ---- losses ---- */

enum zm_status zm_loss_cross_entropy(const float *logits,
                                     const int64_t *labels, size_t n,
                                     size_t classes, double *loss_sum,
                                     size_t *correct, float *grad,
                                     struct zm_error *err)
{
	double total = 0;
	size_t i, j, right = 0;
	float inv_n = n ? 1.0f / (float)n : 0.0f;

	for (i = 0; i < n; i++)
		if (labels[i] < 0 || (uint64_t)labels[i] >= classes)
			return zm_error_set(err, ZM_ERR_DATA,
			                    "row %zu: label %lld is not a class "
			                    "id in [0, %zu)", i,
			                    (long long)labels[i], classes);
	for (i = 0; i < n; i++) {
		const float *z = logits + i * classes;
		size_t y = (size_t)labels[i], arg = 0;
		float mx = z[0], sum = 0.0f, lse;
		for (j = 1; j < classes; j++)
			if (z[j] > mx) {
				mx = z[j];
				arg = j;
			}
		for (j = 0; j < classes; j++)
			sum += exp_approx(z[j] - mx);
		lse = mx + logf(sum);
		total += (double)lse - (double)z[y];
		right += arg == y;
		if (grad) {
			float *g = grad + i * classes;
			for (j = 0; j < classes; j++)
				g[j] = exp_approx(z[j] - lse) * inv_n;
			g[y] -= inv_n;
		}
	}
	if (loss_sum)
		*loss_sum += total;
	if (correct)
		*correct += right;
	return ZM_OK;
}

void zm_loss_mse(const float *out, const float *targets, size_t n, size_t t,
                 double *loss_sum, float *grad)
{
	double total = 0;
	size_t i, j;
	float scale = n && t ? 2.0f / ((float)n * (float)t) : 0.0f;

	for (i = 0; i < n; i++) {
		double row = 0;
		for (j = 0; j < t; j++) {
			float d = out[i * t + j] - targets[i * t + j];
			row += (double)d * d;
			if (grad)
				grad[i * t + j] = scale * d;
		}
		total += row / (double)t;
	}
	if (loss_sum)
		*loss_sum += total;
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
