/*
 * mergekit configs (mergekit.h): parsed into a tree once, checked key by
 * key against what each method takes, and evaluated per tensor while the
 * merge streams.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "mergekit.h"

static const struct {
	const char *name;
	enum zm_mergekit_method method;
	bool normalize;           /* mergekit's default */
	const char *const *params;
} methods[] = {
#define P(...) (const char *const[]){ __VA_ARGS__, NULL }
	{ "linear", ZM_MK_LINEAR, true, P("weight", "normalize") },
	{ "task_arithmetic", ZM_MK_TASK_ARITHMETIC, false,
	  P("weight", "lambda", "normalize", "int8_mask") },
	{ "ties", ZM_MK_TIES, true,
	  P("weight", "density", "lambda", "normalize", "int8_mask") },
	{ "dare_ties", ZM_MK_DARE_TIES, false,
	  P("weight", "density", "lambda", "normalize", "int8_mask",
	    "rescale") },
	{ "dare_linear", ZM_MK_DARE_LINEAR, false,
	  P("weight", "density", "lambda", "normalize", "int8_mask",
	    "rescale") },
	{ "slerp", ZM_MK_SLERP, false, P("t") },
	{ "breadcrumbs", ZM_MK_BREADCRUMBS, false,
	  P("weight", "density", "gamma", "lambda", "normalize",
	    "int8_mask") },
	{ "breadcrumbs_ties", ZM_MK_BREADCRUMBS_TIES, false,
	  P("weight", "density", "gamma", "lambda", "normalize",
	    "int8_mask") },
	{ "model_stock", ZM_MK_MODEL_STOCK, false, P("filter_wise") },
	{ "nuslerp", ZM_MK_NUSLERP, false,
	  P("weight", "nuslerp_flatten", "nuslerp_row_wise") },
#undef P
};

/* mergekit methods zoomerge does not have (yet): named as such rather
 * than as unknown. */
static const char *const unsupported[] = {
	"passthrough", "della", "della_linear", "multislerp", "karcher", "sce",
	"nearswap", "arcee_fusion", NULL
};

/* Parameters that take a number per tensor (possibly a gradient or a
 * filter list) rather than one scalar for the whole merge. */
static bool per_tensor(const char *key)
{
	return strcmp(key, "weight") == 0 || strcmp(key, "density") == 0 ||
	       strcmp(key, "t") == 0 || strcmp(key, "gamma") == 0;
}

void zm_mergekit_init(struct zm_mergekit *mk)
{
	memset(mk, 0, sizeof(*mk));
	mk->lambda = 1.0;
	mk->flatten = true;
}

void zm_mergekit_release(struct zm_mergekit *mk)
{
	zm_node_free(mk->root);
	free(mk->models);
	zm_mergekit_init(mk);
}

bool zm_mergekit_needs_base(const struct zm_mergekit *mk)
{
	return mk->method != ZM_MK_LINEAR && mk->method != ZM_MK_SLERP &&
	       mk->method != ZM_MK_NUSLERP;
}

static void warn(struct zm_mergekit *mk, const struct zm_node *n,
                 const char *what)
{
	if (mk->n_warnings < ZM_MERGEKIT_WARNINGS)
		snprintf(mk->warnings[mk->n_warnings++],
		         sizeof(mk->warnings[0]), "%s:%d:%d: %s", n->source,
		         n->line, n->col, what);
}

/* The range of a number for key under mk's method. */
static void value_range(const struct zm_mergekit *mk, const char *key,
                        double *lo, double *hi)
{
	*lo = 0;
	*hi = 1;
	if (strcmp(key, "weight") == 0) {
		/* Task arithmetic subtracts a task with a negative weight. */
		*lo = mk->method == ZM_MK_TASK_ARITHMETIC ||
		      mk->method == ZM_MK_DARE_LINEAR ? -1e6 : 0;
		*hi = 1e6;
	}
}

static enum zm_status number(const struct zm_mergekit *mk,
                             const struct zm_node *n, const char *key,
                             double *out, struct zm_error *err)
{
	double lo, hi;
	enum zm_status st;

	value_range(mk, key, &lo, &hi);
	if ((st = zm_node_double(n, key, lo, hi, out, err)))
		return st;
	/* DARE rescales the kept entries by 1 / density. */
	if (strcmp(key, "density") == 0 && *out == 0 &&
	    (mk->method == ZM_MK_DARE_TIES || mk->method == ZM_MK_DARE_LINEAR))
		return zm_node_error(n, err, ZM_ERR_CONFIG, "density: expected "
		                     "a number in (0, 1] for %s",
		                     mk->method_name);
	return ZM_OK;
}

/* A number or a non-empty list of numbers (a gradient). */
static enum zm_status check_gradient(const struct zm_mergekit *mk,
                                     const struct zm_node *n,
                                     const char *key, struct zm_error *err)
{
	enum zm_status st;
	double v;
	size_t i;

	if (n->type == ZM_NODE_SCALAR)
		return number(mk, n, key, &v, err);
	if (n->type != ZM_NODE_SEQ || n->count == 0)
		return zm_node_error(n, err, ZM_ERR_CONFIG, "%s: expected a "
		                     "number or a list of numbers", key);
	for (i = 0; i < n->count; i++)
		if ((st = number(mk, n->items[i], key, &v, err)))
			return st;
	return ZM_OK;
}

/* A per-tensor value: a number, a gradient, or a list of {filter, value}
 * entries (at most one without filter, which is the fallback). */
static enum zm_status check_value(const struct zm_mergekit *mk,
                                  const struct zm_node *n, const char *key,
                                  struct zm_error *err)
{
	static const char *const keys[] = { "filter", "value", NULL };
	enum zm_status st;
	const char *s;
	size_t i;

	if (n->type != ZM_NODE_SEQ || n->count == 0 ||
	    n->items[0]->type != ZM_NODE_MAP)
		return check_gradient(mk, n, key, err);
	for (i = 0; i < n->count; i++) {
		const struct zm_node *e = n->items[i], *f, *v;
		if ((st = zm_node_expect(e, ZM_NODE_MAP, key, err)) ||
		    (st = zm_node_check_keys(e, keys, key, err)))
			return st;
		if (!(v = zm_node_get(e, "value")))
			return zm_node_error(e, err, ZM_ERR_CONFIG, "%s: entry "
			                     "without value", key);
		if ((st = check_gradient(mk, v, key, err)))
			return st;
		if ((f = zm_node_get(e, "filter"))) {
			if ((st = zm_node_string(f, "filter", &s, err)))
				return st;
			if (!*s)
				return zm_node_error(f, err, ZM_ERR_CONFIG,
				                     "filter: expected a part of "
				                     "a tensor name");
		}
	}
	return ZM_OK;
}

/* A parameters map: keys the method takes, values of their kind; global
 * ones (normalize, lambda, ...) only when global. */
static enum zm_status parse_params(struct zm_mergekit *mk,
                                   const struct zm_node *n,
                                   const char *const *allowed, bool global,
                                   struct zm_error *err)
{
	enum zm_status st;
	size_t i, j;
	bool b;

	if ((st = zm_node_expect(n, ZM_NODE_MAP, "parameters", err)))
		return st;
	for (i = 0; i < n->count; i++) {
		const struct zm_node *k = n->keys[i], *v = n->items[i];
		for (j = 0; allowed[j]; j++)
			if (strcmp(allowed[j], k->value) == 0)
				break;
		if (!allowed[j] || (!global && !per_tensor(k->value)))
			return zm_node_error(k, err, ZM_ERR_CONFIG, "%s "
			                     "parameter '%s' is not one %s takes",
			                     global ? "merge" : "model", k->value,
			                     mk->method_name);
		if (per_tensor(k->value)) {
			if ((st = check_value(mk, v, k->value, err)))
				return st;
		} else if (strcmp(k->value, "lambda") == 0) {
			if ((st = zm_node_double(v, "lambda", -1e6, 1e6,
			                         &mk->lambda, err)))
				return st;
		} else {
			if ((st = zm_node_bool(v, k->value, &b, err)))
				return st;
			if (strcmp(k->value, "normalize") == 0) {
				mk->normalize = b;
				if (!b && mk->method == ZM_MK_LINEAR)
					return zm_node_error(v, err,
					        ZM_ERR_CONFIG, "normalize: "
					        "false is not supported for "
					        "linear (use task_arithmetic "
					        "with a zero base)");
			} else if (strcmp(k->value, "filter_wise") == 0) {
				mk->vectors = b ? ZM_MERGE_VEC_ROWS
				                : ZM_MERGE_VEC_TENSOR;
			} else if (strcmp(k->value, "nuslerp_flatten") == 0) {
				mk->flatten = b;
			} else if (strcmp(k->value, "nuslerp_row_wise") == 0) {
				mk->row_wise = b;
			} else if (strcmp(k->value, "int8_mask") == 0 && b) {
				warn(mk, k, "int8_mask: ignored (the masks "
				     "are exact; merging computes in F32)");
			} else if (strcmp(k->value, "rescale") == 0 && !b) {
				return zm_node_error(v, err, ZM_ERR_CONFIG,
				                     "rescale: false is not "
				                     "supported (DARE rescales "
				                     "by 1 / density)");
			}
		}
	}
	return ZM_OK;
}

/* A model reference: a name, or {model: NAME} or {model: {path: NAME}}. */
static enum zm_status model_ref(const struct zm_node *n, const char *what,
                                const char **out, struct zm_error *err)
{
	static const char *const ref_keys[] = { "model", NULL };
	static const char *const path_keys[] = { "path", NULL };
	const struct zm_node *m;
	enum zm_status st;

	if (n->type == ZM_NODE_MAP) {
		if ((st = zm_node_check_keys(n, ref_keys, what, err)))
			return st;
		if (!(m = zm_node_get(n, "model")))
			return zm_node_error(n, err, ZM_ERR_CONFIG, "%s: "
			                     "expected model:", what);
		if (m->type == ZM_NODE_MAP) {
			if ((st = zm_node_check_keys(m, path_keys, what, err)))
				return st;
			if (!(n = zm_node_get(m, "path")))
				return zm_node_error(m, err, ZM_ERR_CONFIG,
				                     "%s: expected path:", what);
		} else {
			n = m;
		}
	}
	if ((st = zm_node_string(n, what, out, err)))
		return st;
	if (!**out || strlen(*out) != n->len)
		return zm_node_error(n, err, ZM_ERR_CONFIG, "%s: expected a "
		                     "model path", what);
	return ZM_OK;
}

static enum zm_status add_model(struct zm_mergekit *mk,
                                const struct zm_node *e,
                                const char *const *allowed,
                                const char *const *keys, const char *what,
                                struct zm_error *err)
{
	struct zm_mergekit_model *m = &mk->models[mk->n_models];
	const struct zm_node *k;
	enum zm_status st;
	size_t j;

	if ((st = zm_node_expect(e, ZM_NODE_MAP, what, err)) ||
	    (st = zm_node_check_keys(e, keys, what, err)))
		return st;
	if (!(k = zm_node_get(e, "model")))
		return zm_node_error(e, err, ZM_ERR_CONFIG, "%s without model:",
		                     what);
	if ((st = model_ref(k, "model", &m->model, err)))
		return st;
	for (j = 0; j < mk->n_models; j++)
		if (strcmp(mk->models[j].model, m->model) == 0)
			return zm_node_error(k, err, ZM_ERR_CONFIG, "model '%s' "
			                     "listed twice", m->model);
	if ((m->params = zm_node_get(e, "parameters")) &&
	    (st = parse_params(mk, m->params, allowed, false, err)))
		return st;
	mk->n_models++;
	return ZM_OK;
}

/* The one slice of the whole-model form: every source with the same
 * layer_range [0, N]. */
static enum zm_status parse_slices(struct zm_mergekit *mk,
                                   const struct zm_node *n,
                                   const char *const *allowed,
                                   struct zm_error *err)
{
	static const char *const slice_keys[] = { "sources", NULL };
	static const char *const src_keys[] = { "model", "layer_range",
	                                        "parameters", NULL };
	const struct zm_node *s, *src;
	enum zm_status st;
	int64_t lo, hi;
	size_t i;

	if ((st = zm_node_expect(n, ZM_NODE_SEQ, "slices", err)))
		return st;
	if (n->count != 1)
		return zm_node_error(n, err, ZM_ERR_CONFIG, "slices: only one "
		                     "slice over every layer is supported "
		                     "(mergekit's whole-model form), not %zu",
		                     n->count);
	s = n->items[0];
	if ((st = zm_node_expect(s, ZM_NODE_MAP, "slice", err)) ||
	    (st = zm_node_check_keys(s, slice_keys, "slice", err)))
		return st;
	if (!(src = zm_node_get(s, "sources")))
		return zm_node_error(s, err, ZM_ERR_CONFIG, "slice without "
		                     "sources:");
	if ((st = zm_node_expect(src, ZM_NODE_SEQ, "sources", err)))
		return st;
	if (!(mk->models = zm_calloc(src->count ? src->count : 1,
	                             sizeof(*mk->models))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (i = 0; i < src->count; i++) {
		const struct zm_node *e = src->items[i], *r;
		if ((st = add_model(mk, e, allowed, src_keys, "source", err)))
			return st;
		if (!(r = zm_node_get(e, "layer_range")))
			return zm_node_error(e, err, ZM_ERR_CONFIG, "source "
			                     "without layer_range:");
		if (r->type != ZM_NODE_SEQ || r->count != 2)
			return zm_node_error(r, err, ZM_ERR_CONFIG, "layer_range:"
			                     " expected [FIRST, END]");
		if ((st = zm_node_int(r->items[0], "layer_range", 0, 0, &lo,
		                      err)) ||
		    (st = zm_node_int(r->items[1], "layer_range", 1, 1000000,
		                      &hi, err)))
			return st;
		if (i > 0 && (size_t)hi != mk->n_layers)
			return zm_node_error(r, err, ZM_ERR_CONFIG, "layer_range:"
			                     " every source must cover the same "
			                     "layers [0, %zu]", mk->n_layers);
		mk->n_layers = (size_t)hi;
	}
	return ZM_OK;
}

static enum zm_status from_tree(struct zm_mergekit *mk, struct zm_error *err)
{
	static const char *const keys[] = {
		"merge_method", "base_model", "models", "slices", "parameters",
		"dtype", "out_dtype", "tokenizer_source", "tokenizer",
		"chat_template", NULL
	};
	const struct zm_node *root = mk->root, *n, *d;
	const char *const *allowed = NULL;
	enum zm_status st;
	const char *s;
	size_t i;

	if ((st = zm_node_expect(root, ZM_NODE_MAP, "mergekit config", err)) ||
	    (st = zm_node_check_keys(root, keys, "mergekit config", err)))
		return st;
	if (!(n = zm_node_get(root, "merge_method")))
		return zm_node_error(root, err, ZM_ERR_CONFIG, "no merge_method:");
	if ((st = zm_node_string(n, "merge_method", &mk->method_name, err)))
		return st;
	for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (strcmp(methods[i].name, mk->method_name) == 0) {
			mk->method = methods[i].method;
			mk->normalize = methods[i].normalize;
			allowed = methods[i].params;
		}
	for (i = 0; !allowed && unsupported[i]; i++)
		if (strcmp(unsupported[i], mk->method_name) == 0)
			return zm_node_error(n, err, ZM_ERR_CONFIG, "merge_method "
			                     "%s is not supported (linear, "
			                     "task_arithmetic, ties, dare_ties, "
			                     "dare_linear, breadcrumbs, "
			                     "breadcrumbs_ties, slerp, nuslerp, "
			                     "model_stock)",
			                     mk->method_name);
	if (!allowed)
		return zm_node_error(n, err, ZM_ERR_CONFIG, "unknown merge_method"
		                     " '%s' (linear, task_arithmetic, ties, "
		                     "dare_ties, dare_linear, breadcrumbs, "
		                     "breadcrumbs_ties, slerp, nuslerp, "
		                     "model_stock)",
		                     mk->method_name);
	if ((n = zm_node_get(root, "base_model")) &&
	    (st = model_ref(n, "base_model", &mk->base, err)))
		return st;
	/* Global parameters first: their flags (normalize) are needed
	 * nowhere else, but a model's parameters are checked the same way. */
	if ((mk->params = zm_node_get(root, "parameters")) &&
	    (st = parse_params(mk, mk->params, allowed, true, err)))
		return st;
	n = zm_node_get(root, "models");
	d = zm_node_get(root, "slices");
	if (n && d)
		return zm_node_error(d, err, ZM_ERR_CONFIG, "slices: and models:"
		                     " do not go together");
	if (d) {
		if ((st = parse_slices(mk, d, allowed, err)))
			return st;
	} else if (n) {
		static const char *const mkeys[] = { "model", "parameters",
		                                     NULL };
		if ((st = zm_node_expect(n, ZM_NODE_SEQ, "models", err)))
			return st;
		if (!(mk->models = zm_calloc(n->count ? n->count : 1,
		                             sizeof(*mk->models))))
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		for (i = 0; i < n->count; i++)
			if ((st = add_model(mk, n->items[i], allowed, mkeys,
			                    "model entry", err)))
				return st;
	} else {
		return zm_node_error(root, err, ZM_ERR_CONFIG, "no models: "
		                     "(or slices:)");
	}
	if (mk->method == ZM_MK_SLERP) {
		bool has_base = false;
		for (i = 0; i < mk->n_models && mk->base; i++)
			has_base |= strcmp(mk->models[i].model, mk->base) == 0;
		if (mk->n_models != 2 || !has_base)
			return zm_node_error(n ? n : d, err, ZM_ERR_CONFIG,
			                     "slerp: expected two models, one of "
			                     "them base_model");
	}
	if (mk->method == ZM_MK_SLERP &&
	    !(mk->params && zm_node_get(mk->params, "t")))
		return zm_node_error(root, err, ZM_ERR_CONFIG, "slerp needs "
		                     "parameters: t:");
	if (mk->method == ZM_MK_NUSLERP) {
		size_t others = 0;
		for (i = 0; i < mk->n_models; i++)
			if (!mk->base || strcmp(mk->models[i].model, mk->base))
				others++;
		if (others != 2 || others != mk->n_models)
			return zm_node_error(n ? n : d, err, ZM_ERR_CONFIG,
			                     "nuslerp: expected two models, "
			                     "neither of them base_model");
		if (!mk->flatten)
			mk->vectors = mk->row_wise ? ZM_MERGE_VEC_COLS
			                           : ZM_MERGE_VEC_ROWS;
	}
	if (mk->method == ZM_MK_MODEL_STOCK && mk->base) {
		size_t others = 0;
		for (i = 0; i < mk->n_models; i++)
			others += strcmp(mk->models[i].model, mk->base) != 0;
		if (others < 2)
			return zm_node_error(n ? n : d, err, ZM_ERR_CONFIG,
			                     "model_stock: expected two models "
			                     "or more besides base_model");
	}
	if (zm_mergekit_needs_base(mk) && !mk->base)
		return zm_node_error(root, err, ZM_ERR_CONFIG, "%s needs "
		                     "base_model:", mk->method_name);
	/* out_dtype, else dtype: the output's; merging computes in F32. */
	if ((d = zm_node_get(root, "out_dtype")) ||
	    (d = zm_node_get(root, "dtype"))) {
		if ((st = zm_node_string(d, "dtype", &s, err)))
			return st;
		if (strcmp(s, "float32") == 0)
			mk->dtype = ZM_DTYPE_F32;
		else if (strcmp(s, "float16") == 0)
			mk->dtype = ZM_DTYPE_F16;
		else if (strcmp(s, "bfloat16") == 0)
			mk->dtype = ZM_DTYPE_BF16;
		else
			return zm_node_error(d, err, ZM_ERR_CONFIG, "dtype: "
			                     "expected float32, float16 or "
			                     "bfloat16, not '%s'", s);
		mk->set_dtype = true;
	}
	if ((n = zm_node_get(root, "tokenizer_source")) ||
	    (n = zm_node_get(root, "tokenizer")))
		warn(mk, n, "tokenizer: ignored (merge writes the tensors "
		     "only; copy the base model's tokenizer files)");
	if ((n = zm_node_get(root, "chat_template")))
		warn(mk, n, "chat_template: ignored (merge writes the tensors "
		     "only)");
	return ZM_OK;
}

enum zm_status zm_mergekit_parse(const char *bytes, size_t len,
                                 const char *source, struct zm_mergekit *mk,
                                 struct zm_error *err)
{
	enum zm_status st;

	zm_mergekit_release(mk);
	if ((st = zm_config_parse(bytes, len, source, &mk->root, err)))
		return st;
	if ((st = from_tree(mk, err)))
		zm_mergekit_release(mk);
	return st;
}

enum zm_status zm_mergekit_load(const char *path, struct zm_mergekit *mk,
                                struct zm_error *err)
{
	enum zm_status st;

	zm_mergekit_release(mk);
	if ((st = zm_config_load(path, &mk->root, err)))
		return st;
	if ((st = from_tree(mk, err)))
		zm_mergekit_release(mk);
	return st;
}

long zm_mergekit_layer_index(const char *name)
{
	static const char *const marks[] = { "layers.", "h.", NULL };
	size_t i;

	for (i = 0; marks[i]; i++) {
		const char *p = name;
		size_t ml = strlen(marks[i]);
		while ((p = strstr(p, marks[i]))) {
			const char *q = p + ml;
			long v = 0;
			/* A whole component: "layers." at the start or after
			 * a dot, then digits, then a dot. */
			bool start = p == name || p[-1] == '.';
			while (*q >= '0' && *q <= '9' && v < 100000000)
				v = v * 10 + (*q++ - '0');
			if (start && q > p + ml && *q == '.')
				return v;
			p += ml;
		}
	}
	return -1;
}

/* A scalar checked by number(). */
static double num(const struct zm_node *n)
{
	double v = 0;

	zm_parse_double(n->value, &v);
	return v;
}

/* A gradient (or number) at position pos in [0, 1]. */
static double gradient_at(const struct zm_node *n, double pos)
{
	double a, b, f, x;
	size_t lo;

	if (n->type == ZM_NODE_SCALAR)
		return num(n);
	if (n->count == 1)
		return num(n->items[0]);
	x = pos * (double)(n->count - 1);
	lo = (size_t)floor(x);
	if (lo >= n->count - 1)
		lo = n->count - 2;
	f = x - (double)lo;
	a = num(n->items[lo]);
	b = num(n->items[lo + 1]);
	return a * (1 - f) + b * f;
}

/* Evaluates value node n for tensor name at pos; *found false when a
 * filter list has no entry for it. */
static double eval(const struct zm_node *n, const char *name, double pos,
                   bool *found)
{
	size_t i;

	*found = true;
	if (n->type != ZM_NODE_SEQ || n->items[0]->type != ZM_NODE_MAP)
		return gradient_at(n, pos);
	for (i = 0; i < n->count; i++) {
		const struct zm_node *f = zm_node_get(n->items[i], "filter");
		if (!f || strstr(name, f->value))
			return gradient_at(zm_node_get(n->items[i], "value"),
			                   pos);
	}
	*found = false;
	return 0;
}

enum zm_status zm_mergekit_value(const struct zm_mergekit *mk, size_t m,
                                 const char *key, const char *name,
                                 size_t n_layers, double dflt, double *out,
                                 struct zm_error *err)
{
	const struct zm_node *n = NULL;
	long layer = zm_mergekit_layer_index(name);
	double pos;
	bool found;

	if (layer >= 0)
		pos = n_layers > 1 ? (double)layer / (double)(n_layers - 1) : 0;
	else
		pos = strstr(name, "embed") ? 0.0 : 1.0;
	if (pos > 1)
		pos = 1;
	if (m < mk->n_models && mk->models[m].params)
		n = zm_node_get(mk->models[m].params, key);
	if (n) {
		*out = eval(n, name, pos, &found);
		if (found)
			return ZM_OK;
	}
	if (mk->params && (n = zm_node_get(mk->params, key))) {
		*out = eval(n, name, pos, &found);
		if (found)
			return ZM_OK;
		return zm_node_error(n, err, ZM_ERR_CONFIG, "%s: no entry "
		                     "matches tensor %s (add one without "
		                     "filter)", key, name);
	}
	*out = dflt;
	return ZM_OK;
}

/* ---- plans ---- */

void zm_mergekit_plan_release(struct zm_mergekit_plan *p)
{
	free(p->labels);
	free(p->index);
	memset(p, 0, sizeof(*p));
}

enum zm_status zm_mergekit_plan_init(struct zm_mergekit_plan *p,
                                     const struct zm_mergekit *mk,
                                     struct zm_error *err)
{
	bool tv = zm_mergekit_needs_base(mk);
	size_t i;

	memset(p, 0, sizeof(*p));
	p->mk = mk;
	zm_merge_params_init(&p->params);
	p->params.mergekit = true;
	p->params.lambda = mk->lambda;
	switch (mk->method) {
	case ZM_MK_LINEAR: p->method = ZM_MERGE_LINEAR; break;
	case ZM_MK_TASK_ARITHMETIC: p->method = ZM_MERGE_TASK_ARITHMETIC; break;
	case ZM_MK_TIES: p->method = ZM_MERGE_TIES; break;
	case ZM_MK_DARE_TIES:
	case ZM_MK_DARE_LINEAR: p->method = ZM_MERGE_DARE; break;
	case ZM_MK_SLERP: p->method = ZM_MERGE_SLERP; break;
	case ZM_MK_MODEL_STOCK: p->method = ZM_MERGE_MODEL_STOCK; break;
	case ZM_MK_NUSLERP: p->method = ZM_MERGE_NUSLERP; break;
	case ZM_MK_BREADCRUMBS:
	case ZM_MK_BREADCRUMBS_TIES:
		p->method = ZM_MERGE_TIES;
		p->params.breadcrumbs = true;
		break;
	}
	p->params.no_election = mk->method == ZM_MK_BREADCRUMBS;
	p->params.dare_ties = mk->method == ZM_MK_DARE_TIES;
	p->params.disjoint_sum = !mk->normalize;
	p->params.vectors = mk->vectors;
	if (!(p->labels = zm_calloc(mk->n_models + 1, sizeof(*p->labels))) ||
	    !(p->index = zm_calloc(mk->n_models + 1, sizeof(*p->index))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	/* SLERP goes from base_model (t = 0) to the other model; the
	 * task-vector methods leave base_model out of the task vectors. */
	for (i = 0; i < mk->n_models && mk->method == ZM_MK_SLERP; i++)
		if (strcmp(mk->models[i].model, mk->base) == 0) {
			p->labels[p->n] = mk->models[i].model;
			p->index[p->n++] = i;
		}
	for (i = 0; i < mk->n_models; i++) {
		if ((tv || mk->method == ZM_MK_SLERP) &&
		    strcmp(mk->models[i].model, mk->base) == 0)
			continue;
		p->labels[p->n] = mk->models[i].model;
		p->index[p->n++] = i;
	}
	p->base = tv || mk->method == ZM_MK_NUSLERP ? mk->base : NULL;
	if (p->n == 0)
		return zm_error_set(err, ZM_ERR_CONFIG, "%s: no models to "
		                    "merge besides base_model",
		                    mk->root->source);
	return ZM_OK;
}

enum zm_status zm_mergekit_tensor_params(void *ctx, const struct zm_doc *ref,
                                         const char *tensor, double *w,
                                         double *density, double *gamma,
                                         struct zm_error *err)
{
	struct zm_mergekit_plan *p = ctx;
	const struct zm_mergekit *mk = p->mk;
	enum zm_status st;
	double t, sum = 0;
	size_t i;

	if (!p->n_layers) {
		/* The checkpoint's layers, once: the largest index + 1. */
		for (i = 0; i < ref->n_tensors; i++) {
			long l = zm_mergekit_layer_index(ref->tensors[i].name);
			if (l >= 0 && (size_t)l + 1 > p->n_layers)
				p->n_layers = (size_t)l + 1;
		}
		if (mk->n_layers && mk->n_layers != p->n_layers)
			return zm_error_set(err, ZM_ERR_CONFIG, "%s: layer_range"
			                    " ends at %zu but the checkpoint has "
			                    "%zu layers (only the whole-model "
			                    "slice is supported)",
			                    mk->root->source, mk->n_layers,
			                    p->n_layers);
		if (!p->n_layers)
			p->n_layers = 1;
	}
	if (mk->method == ZM_MK_SLERP) {
		if ((st = zm_mergekit_value(mk, p->index[1], "t", tensor,
		                            p->n_layers, 0.5, &t, err)))
			return st;
		w[0] = 1 - t;
		w[1] = t;
		return ZM_OK;
	}
	if (mk->method == ZM_MK_MODEL_STOCK)
		return ZM_OK;   /* no per-model parameters */
	for (i = 0; i < p->n && mk->method == ZM_MK_NUSLERP; i++) {
		/* mergekit requires nuslerp's weights. */
		if ((st = zm_mergekit_value(mk, p->index[i], "weight", tensor,
		                            p->n_layers, NAN, &w[i], err)))
			return st;
		if (isnan(w[i]))
			return zm_error_set(err, ZM_ERR_CONFIG, "%s: nuslerp "
			                    "needs a weight for model %s",
			                    mk->root->source, p->labels[i]);
		if (i == 1)
			return ZM_OK;
	}
	for (i = 0; i < p->n; i++) {
		if ((st = zm_mergekit_value(mk, p->index[i], "weight", tensor,
		                            p->n_layers, 1.0, &w[i], err)) ||
		    (st = zm_mergekit_value(mk, p->index[i], "density", tensor,
		                            p->n_layers, 1.0, &density[i],
		                            err)) ||
		    (st = zm_mergekit_value(mk, p->index[i], "gamma", tensor,
		                            p->n_layers, 0.01, &gamma[i], err)))
			return st;
		sum += w[i];
	}
	/* Without a sign election, normalize divides by the weights' sum
	 * (linear always does, in zm_merge_acc). */
	if (mk->normalize && (mk->method == ZM_MK_TASK_ARITHMETIC ||
	                      mk->method == ZM_MK_DARE_LINEAR ||
	                      mk->method == ZM_MK_BREADCRUMBS) &&
	    fabs(sum) > 1e-8)
		for (i = 0; i < p->n; i++)
			w[i] /= sum;
	return ZM_OK;
}
