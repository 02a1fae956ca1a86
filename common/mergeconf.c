/*
 * Merge configs (merge.h, zoomerge-merge(5)): the YAML that names the
 * models, weights and method of a static merge, and the per-layer weights
 * (a number, a list per layer, or a map by layer or group).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "merge.h"

/* ---- weights ---- */

static enum zm_status weight_value(const struct zm_node *n, double *out,
                                   struct zm_error *err)
{
	return zm_node_double(n, "weight", 0, 1e6, out, err);
}

enum zm_status zm_merge_layer_weights(const struct zm_node *spec,
                                      double dflt,
                                      const struct zm_arch *arch,
                                      enum zm_gran_level level, double *w,
                                      struct zm_error *err)
{
	struct zm_gran_units u;
	enum zm_status st = ZM_OK;
	double v;
	size_t l, i;

	for (l = 0; l < arch->n_layers; l++)
		w[l] = dflt;
	if (!spec)
		return ZM_OK;
	if (spec->type == ZM_NODE_SCALAR) {
		if ((st = weight_value(spec, &v, err)))
			return st;
		for (l = 0; l < arch->n_layers; l++)
			w[l] = v;
		return ZM_OK;
	}
	if (level == ZM_GRAN_FULL)
		return zm_node_error(spec, err, ZM_ERR_CONFIG, "a weight %s "
		                     "needs the group or layer granularity, "
		                     "not full",
		                     spec->type == ZM_NODE_SEQ ? "list" : "map");
	if ((st = zm_gran_units_init(&u, level, arch, err)))
		return st;
	if (spec->type == ZM_NODE_SEQ) {
		/* Interpolates the list over the units that have parameters,
		 * first to last, like mergekit's gradient lists. */
		size_t k = spec->count, p = 0, j = 0, unit;
		double *vals = zm_calloc(k ? k : 1, sizeof(double));
		bool *has = zm_calloc(u.n_units, sizeof(bool));
		if (!vals || !has) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		} else if (k == 0) {
			st = zm_node_error(spec, err, ZM_ERR_CONFIG,
			                   "expected a non-empty weight list");
		}
		for (i = 0; i < k && st == ZM_OK; i++)
			st = weight_value(spec->items[i], &vals[i], err);
		for (l = 0; l < arch->n_layers && st == ZM_OK; l++)
			if (arch->layers[l].has_params)
				has[u.layer_unit[l]] = true;
		for (unit = 0; unit < u.n_units && st == ZM_OK; unit++)
			p += has[unit];
		for (unit = 0; unit < u.n_units && st == ZM_OK; unit++) {
			double pos, f, val;
			size_t lo;
			if (!has[unit])
				continue;
			pos = p > 1 ? (double)j * (double)(k - 1) / (double)(p - 1)
			            : 0.0;
			lo = (size_t)floor(pos);
			if (lo >= k - 1)
				lo = k - 1;
			f = pos - (double)lo;
			val = vals[lo] * (1 - f) +
			      (lo + 1 < k ? vals[lo + 1] : vals[lo]) * f;
			for (l = 0; l < arch->n_layers; l++)
				if (u.layer_unit[l] == unit)
					w[l] = val;
			j++;
		}
		free(vals);
		free(has);
	} else {
		/* A map from unit name (or, per layer, group name) to weight. */
		for (i = 0; i < spec->count && st == ZM_OK; i++) {
			const struct zm_node *key = spec->keys[i];
			bool known = zm_gran_units_find(&u, key->value) >= 0;
			for (l = 0; l < arch->n_layers && !known; l++)
				known = level == ZM_GRAN_LAYER &&
				        strcmp(arch->layers[l].group,
				               key->value) == 0;
			if (!known)
				st = zm_node_error(key, err, ZM_ERR_CONFIG,
				                   "'%s' is no %s of the model",
				                   key->value,
				                   level == ZM_GRAN_GROUP
				                   ? "layer group"
				                   : "layer or layer group");
		}
		for (l = 0; l < arch->n_layers && st == ZM_OK; l++) {
			const struct zm_layer_spec *ls = &arch->layers[l];
			const struct zm_node *n;
			n = zm_node_get(spec, u.names[u.layer_unit[l]]);
			if (!n && level == ZM_GRAN_LAYER)
				n = zm_node_get(spec, ls->group);
			if (!n) {
				if (ls->has_params)
					st = zm_node_error(spec, err,
					                   ZM_ERR_CONFIG,
					                   "no weight for layer "
					                   "'%s' (group '%s')",
					                   ls->name, ls->group);
				continue;
			}
			st = weight_value(n, &w[l], err);
		}
	}
	zm_gran_units_release(&u);
	return st;
}

/* ---- config ---- */

void zm_merge_config_init(struct zm_merge_config *c)
{
	memset(c, 0, sizeof(*c));
	zm_merge_params_init(&c->params);
}

void zm_merge_config_release(struct zm_merge_config *c)
{
	zm_node_free(c->root);
	free(c->models);
	zm_merge_config_init(c);
}

static enum zm_status parse_params(struct zm_merge_config *c,
                                   const struct zm_node *n,
                                   struct zm_error *err)
{
	static const char *const keys[] = { "density", "lambda", "drop",
	                                    "seed", "dare_ties", NULL };
	const struct zm_node *k;
	enum zm_status st;
	int64_t seed;

	if ((st = zm_node_expect(n, ZM_NODE_MAP, "parameters", err)) ||
	    (st = zm_node_check_keys(n, keys, "parameters", err)))
		return st;
	if ((k = zm_node_get(n, "density"))) {
		if ((st = zm_node_double(k, "density", 0, 1, &c->params.density,
		                         err)))
			return st;
		if (c->params.density <= 0)
			return zm_node_error(k, err, ZM_ERR_CONFIG,
			                     "expected density in (0, 1]");
		c->has_density = true;
	}
	if ((k = zm_node_get(n, "lambda"))) {
		if ((st = zm_node_double(k, "lambda", -1e6, 1e6,
		                         &c->params.lambda, err)))
			return st;
		c->has_lambda = true;
	}
	if ((k = zm_node_get(n, "drop"))) {
		if ((st = zm_node_double(k, "drop", 0, 1, &c->params.drop, err)))
			return st;
		if (c->params.drop >= 1)
			return zm_node_error(k, err, ZM_ERR_CONFIG,
			                     "expected drop in [0, 1)");
		c->has_drop = true;
	}
	if ((k = zm_node_get(n, "seed"))) {
		if ((st = zm_node_int(k, "seed", 0, INT64_MAX, &seed, err)))
			return st;
		c->params.seed = (uint64_t)seed;
		c->has_seed = true;
	}
	if ((k = zm_node_get(n, "dare_ties"))) {
		if ((st = zm_node_bool(k, "dare_ties", &c->params.dare_ties,
		                       err)))
			return st;
		c->has_dare_ties = true;
	}
	return ZM_OK;
}

static enum zm_status parse_models(struct zm_merge_config *c,
                                   const struct zm_node *n,
                                   struct zm_error *err)
{
	static const char *const keys[] = { "model", "weight", NULL };
	enum zm_status st;
	size_t i, j;

	if ((st = zm_node_expect(n, ZM_NODE_SEQ, "models", err)))
		return st;
	if (!(c->models = zm_calloc(n->count ? n->count : 1,
	                            sizeof(*c->models))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (i = 0; i < n->count; i++) {
		const struct zm_node *m = n->items[i], *k, *w;
		if ((st = zm_node_expect(m, ZM_NODE_MAP, "model entry", err)) ||
		    (st = zm_node_check_keys(m, keys, "model entry", err)))
			return st;
		if (!(k = zm_node_get(m, "model")))
			return zm_node_error(m, err, ZM_ERR_CONFIG,
			                     "model entry without 'model'");
		if ((st = zm_node_string(k, "model", &c->models[i].model, err)))
			return st;
		if (c->models[i].model[0] == '\0')
			return zm_node_error(k, err, ZM_ERR_CONFIG,
			                     "expected a model name");
		for (j = 0; j < i; j++)
			if (strcmp(c->models[j].model, c->models[i].model) == 0)
				return zm_node_error(k, err, ZM_ERR_CONFIG,
				                     "model '%s' listed twice",
				                     c->models[i].model);
		if ((w = zm_node_get(m, "weight"))) {
			/* Check the shape of the weight now; names are
			 * checked against the arch once it is known. */
			double v;
			size_t e;
			if (w->type == ZM_NODE_SCALAR &&
			    (st = weight_value(w, &v, err)))
				return st;
			for (e = 0; w->type != ZM_NODE_SCALAR && e < w->count;
			     e++)
				if ((st = weight_value(w->items[e], &v, err)))
					return st;
			if (w->type != ZM_NODE_SCALAR && w->count == 0)
				return zm_node_error(w, err, ZM_ERR_CONFIG,
				                     "expected a weight, not "
				                     "an empty %s",
				                     w->type == ZM_NODE_SEQ
				                     ? "list" : "map");
		}
		c->models[i].weight = w;
		c->n_models++;
	}
	return ZM_OK;
}

static enum zm_status config_from_tree(struct zm_merge_config *c,
                                       struct zm_error *err)
{
	static const char *const keys[] = { "method", "base", "parameters",
	                                    "models", NULL };
	const struct zm_node *root = c->root, *n;
	const char *s;
	enum zm_status st;

	if ((st = zm_node_expect(root, ZM_NODE_MAP, "merge config", err)) ||
	    (st = zm_node_check_keys(root, keys, "merge config", err)))
		return st;
	if ((n = zm_node_get(root, "method"))) {
		if ((st = zm_node_string(n, "method", &s, err)))
			return st;
		if (!zm_merge_method_parse(s, &c->method))
			return zm_node_error(n, err, ZM_ERR_CONFIG, "unknown "
			                     "method '%s' (linear, "
			                     "task-arithmetic, ties, dare, slerp)",
			                     s);
		c->has_method = true;
	}
	if ((n = zm_node_get(root, "base"))) {
		if ((st = zm_node_string(n, "base", &c->base, err)))
			return st;
		if (c->base[0] == '\0')
			return zm_node_error(n, err, ZM_ERR_CONFIG,
			                     "expected a base model name");
	}
	if ((n = zm_node_get(root, "parameters")) &&
	    (st = parse_params(c, n, err)))
		return st;
	if ((n = zm_node_get(root, "models")) && (st = parse_models(c, n, err)))
		return st;
	return ZM_OK;
}

enum zm_status zm_merge_config_parse(const char *bytes, size_t len,
                                     const char *source,
                                     struct zm_merge_config *c,
                                     struct zm_error *err)
{
	enum zm_status st;

	zm_merge_config_release(c);
	if ((st = zm_config_parse(bytes, len, source, &c->root, err)))
		return st;
	if ((st = config_from_tree(c, err)))
		zm_merge_config_release(c);
	return st;
}

enum zm_status zm_merge_config_load(const char *path,
                                    struct zm_merge_config *c,
                                    struct zm_error *err)
{
	enum zm_status st;

	zm_merge_config_release(c);
	if ((st = zm_config_load(path, &c->root, err)))
		return st;
	if ((st = config_from_tree(c, err)))
		zm_merge_config_release(c);
	return st;
}

enum zm_status zm_merge_config_models(const struct zm_merge_config *c,
                                      const char *source,
                                      const char *const *args, size_t n,
                                      const char **labels,
                                      const struct zm_node **specs,
                                      double *weights, struct zm_error *err)
{
	size_t i, j;

	for (i = 0; i < n; i++) {
		labels[i] = args ? args[i] : c->models[i].model;
		specs[i] = NULL;
		weights[i] = 1.0;
		for (j = 0; j < c->n_models; j++)
			if (strcmp(c->models[j].model, labels[i]) == 0)
				break;
		if (j < c->n_models)
			specs[i] = c->models[j].weight;
		else if (c->n_models)
			return zm_error_set(err, ZM_ERR_CONFIG, "%s: model '%s' "
			                    "is not in the config's models",
			                    source, labels[i]);
	}
	return ZM_OK;
}
