/*
 * Slicing rules: parsing, binding names to indexes, row matching, and the
 * k-means used by cluster rules.  See slice.h.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "dataset.h"
#include "gemm.h"
#include "mem.h"
#include "metakeys.h"
#include "random.h"
#include "slice.h"
#include "stream.h"
#include "zoo.h"

/* Rows per block of the k-means distance products: bounds scratch memory
 * to KM_BLOCK * k floats whatever n is. */
#define KM_BLOCK 1024
#define MAX_CLUSTERS 4096

void zm_slice_rules_init(struct zm_slice_rules *r)
{
	memset(r, 0, sizeof(*r));
}

static void rule_release(struct zm_slice_rule *u)
{
	size_t i;

	free(u->name);
	free(u->column);
	free(u->values);
	if (u->strings)
		for (i = 0; i < u->n_values; i++)
			free(u->strings[i]);
	free(u->strings);
	free(u->labels);
	free(u->level_hit);
}

void zm_slice_rules_release(struct zm_slice_rules *r)
{
	size_t i;

	for (i = 0; i < r->n_rules; i++)
		rule_release(&r->rules[i]);
	free(r->rules);
	zm_slice_rules_init(r);
}

/* ---- parsing ---- */

static const char *const stat_names[] = { "mean", "std", "min", "max", "l2" };

static enum zm_status nomem(struct zm_error *err)
{
	return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
}

/* A feature or column given as a non-negative index or a name. */
static enum zm_status parse_column(const struct zm_node *n, const char *what,
                                   struct zm_slice_rule *u,
                                   struct zm_error *err)
{
	int64_t v;

	if (n->type != ZM_NODE_SCALAR || n->len == 0)
		return zm_node_error(n, err, ZM_ERR_CONFIG,
		                     "%s: expected a column index or name", what);
	if (n->plain && zm_parse_int64(n->value, &v)) {
		if (v < 0)
			return zm_node_error(n, err, ZM_ERR_CONFIG,
			                     "%s: index %lld is negative", what,
			                     (long long)v);
		u->index = v;
		return ZM_OK;
	}
	u->index = -1;
	u->column = zm_strdup(n->value);
	return u->column ? ZM_OK : nomem(err);
}

static enum zm_status parse_range(const struct zm_node *where,
                                  struct zm_slice_rule *u,
                                  struct zm_error *err)
{
	const struct zm_node *lo = zm_node_get(where, "min");
	const struct zm_node *hi = zm_node_get(where, "max");
	enum zm_status st;

	u->lo = -INFINITY;
	u->hi = INFINITY;
	if (!lo && !hi)
		return zm_node_error(where, err, ZM_ERR_CONFIG,
		                     "a range needs min, max or both");
	if (lo && (st = zm_node_double(lo, "min", -DBL_MAX, DBL_MAX, &u->lo,
	                               err)))
		return st;
	if (hi && (st = zm_node_double(hi, "max", -DBL_MAX, DBL_MAX, &u->hi,
	                               err)))
		return st;
	if (!(u->lo < u->hi))
		return zm_node_error(hi ? hi : lo, err, ZM_ERR_CONFIG,
		                     "empty range: min %g is not below max %g",
		                     u->lo, u->hi);
	return ZM_OK;
}

/* Values of a column rule: equals: v or in: [v, ...], numbers or names. */
static enum zm_status parse_values(const struct zm_node *n, bool list,
                                   struct zm_slice_rule *u,
                                   struct zm_error *err)
{
	size_t count = list ? n->count : 1, i;
	enum zm_status st;

	if (list && (st = zm_node_expect(n, ZM_NODE_SEQ, "in", err)))
		return st;
	if (list && count == 0)
		return zm_node_error(n, err, ZM_ERR_CONFIG,
		                     "in: expected at least one value");
	u->values = zm_calloc(count, sizeof(*u->values));
	u->strings = zm_calloc(count, sizeof(*u->strings));
	if (!u->values || !u->strings)
		return nomem(err);
	u->n_values = count;
	for (i = 0; i < count; i++) {
		const struct zm_node *v = list ? n->items[i] : n;
		const char *s;

		if ((st = zm_node_string(v, list ? "in" : "equals", &s, err)))
			return st;
		if (v->plain && zm_parse_double(s, &u->values[i]))
			continue;
		u->values[i] = NAN;
		if (!(u->strings[i] = zm_strdup(s)))
			return nomem(err);
	}
	return ZM_OK;
}

static enum zm_status parse_labels(const struct zm_node *n,
                                   struct zm_slice_rule *u,
                                   struct zm_error *err)
{
	size_t count = n->type == ZM_NODE_SEQ ? n->count : 1, i;
	enum zm_status st;

	if (n->type == ZM_NODE_MAP)
		return zm_node_error(n, err, ZM_ERR_CONFIG,
		                     "label: expected a class or a list of classes");
	if (count == 0)
		return zm_node_error(n, err, ZM_ERR_CONFIG,
		                     "label: expected at least one class");
	/* Class names are kept as strings and become ids at binding. */
	u->labels = zm_calloc(count, sizeof(*u->labels));
	u->strings = zm_calloc(count, sizeof(*u->strings));
	if (!u->labels || !u->strings)
		return nomem(err);
	u->n_labels = u->n_values = count;
	for (i = 0; i < count; i++) {
		const struct zm_node *v = n->type == ZM_NODE_SEQ ? n->items[i] : n;
		const char *s;

		if ((st = zm_node_string(v, "label", &s, err)))
			return st;
		if (v->plain && zm_parse_int64(s, &u->labels[i])) {
			if (u->labels[i] < 0)
				return zm_node_error(v, err, ZM_ERR_CONFIG,
				                     "label: class id %lld is "
				                     "negative",
				                     (long long)u->labels[i]);
			continue;
		}
		u->labels[i] = -1;
		if (!(u->strings[i] = zm_strdup(s)))
			return nomem(err);
	}
	return ZM_OK;
}

static enum zm_status parse_where(const struct zm_node *where,
                                  const struct zm_slice_rules *r,
                                  struct zm_slice_rule *u,
                                  struct zm_error *err)
{
	static const char *const keys[] = { "column", "equals", "in",
		"feature", "stat", "min", "max", "label", "hash", "seed",
		"cluster", NULL };
	static const char *const crit[] = { "column", "feature", "stat",
		"label", "hash", "cluster" };
	const struct zm_node *n = NULL;
	enum zm_status st;
	size_t i, found = 0, which = 0;
	int64_t v;

	if ((st = zm_node_expect(where, ZM_NODE_MAP, "where", err)) ||
	    (st = zm_node_check_keys(where, keys, "where", err)))
		return st;
	for (i = 0; i < sizeof(crit) / sizeof(*crit); i++)
		if (zm_node_get(where, crit[i])) {
			found++;
			which = i;
		}
	if (found != 1)
		return zm_node_error(where, err, ZM_ERR_CONFIG,
		                     "where: expected exactly one of column, "
		                     "feature, stat, label, hash, cluster");
	n = zm_node_get(where, crit[which]);
	switch (which) {
	case 0: {
		const struct zm_node *eq = zm_node_get(where, "equals");
		const struct zm_node *in = zm_node_get(where, "in");

		u->kind = ZM_SLICE_COLUMN;
		if ((st = parse_column(n, "column", u, err)))
			return st;
		if (!eq == !in)
			return zm_node_error(where, err, ZM_ERR_CONFIG,
			                     "column: expected equals or in");
		return parse_values(eq ? eq : in, in != NULL, u, err);
	}
	case 1:
		u->kind = ZM_SLICE_FEATURE;
		if ((st = parse_column(n, "feature", u, err)))
			return st;
		return parse_range(where, u, err);
	case 2: {
		const char *s;

		u->kind = ZM_SLICE_STAT;
		if ((st = zm_node_string(n, "stat", &s, err)))
			return st;
		for (i = 0; i < 5; i++)
			if (strcmp(s, stat_names[i]) == 0)
				break;
		if (i == 5)
			return zm_node_error(n, err, ZM_ERR_CONFIG,
			                     "stat: expected mean, std, min, "
			                     "max or l2, got '%s'", s);
		u->stat = (enum zm_slice_stat)i;
		return parse_range(where, u, err);
	}
	case 3:
		u->kind = ZM_SLICE_LABEL;
		return parse_labels(n, u, err);
	case 4: {
		const struct zm_node *seed = zm_node_get(where, "seed");

		u->kind = ZM_SLICE_HASH;
		if ((st = zm_node_double(n, "hash", 0, 1, &u->fraction, err)))
			return st;
		if (!(u->fraction > 0))
			return zm_node_error(n, err, ZM_ERR_CONFIG,
			                     "hash: expected a fraction in (0, 1]");
		if (seed && (st = zm_node_int(seed, "seed", 0, INT64_MAX, &v,
		                              err)))
			return st;
		u->seed = seed ? (uint64_t)v : 0;
		return ZM_OK;
	}
	default:
		u->kind = ZM_SLICE_CLUSTER;
		if (r->k == 0)
			return zm_node_error(n, err, ZM_ERR_CONFIG,
			                     "cluster: needs a clusters: section");
		if ((st = zm_node_int(n, "cluster", 0, (int64_t)r->k - 1, &v,
		                      err)))
			return st;
		u->cluster = (size_t)v;
		return ZM_OK;
	}
}

static enum zm_status parse_clusters(const struct zm_node *n,
                                     struct zm_slice_rules *r,
                                     struct zm_error *err)
{
	static const char *const keys[] = { "k", "seed", "iterations",
		"sample", NULL };
	const struct zm_node *v;
	enum zm_status st;
	int64_t x;

	if ((st = zm_node_expect(n, ZM_NODE_MAP, "clusters", err)) ||
	    (st = zm_node_check_keys(n, keys, "clusters", err)))
		return st;
	if (!(v = zm_node_get(n, "k")))
		return zm_node_error(n, err, ZM_ERR_CONFIG, "clusters: k is "
		                     "required");
	if ((st = zm_node_int(v, "k", 1, MAX_CLUSTERS, &x, err)))
		return st;
	r->k = (size_t)x;
	r->k_seed = 0;
	r->k_iterations = 20;
	r->k_sample = 20000;
	if ((v = zm_node_get(n, "seed"))) {
		if ((st = zm_node_int(v, "seed", 0, INT64_MAX, &x, err)))
			return st;
		r->k_seed = (uint64_t)x;
	}
	if ((v = zm_node_get(n, "iterations"))) {
		if ((st = zm_node_int(v, "iterations", 0, 100000, &x, err)))
			return st;
		r->k_iterations = (size_t)x;
	}
	if ((v = zm_node_get(n, "sample"))) {
		if ((st = zm_node_int(v, "sample", (int64_t)r->k, 10000000, &x,
		                      err)))
			return st;
		r->k_sample = (size_t)x;
	}
	if (r->k_sample < r->k)
		r->k_sample = r->k;
	return ZM_OK;
}

/* The range target of a rule, for the static overlap check: features by
 * index or name, statistics by kind. */
static bool same_target(const struct zm_slice_rule *a,
                        const struct zm_slice_rule *b)
{
	if (a->kind != b->kind)
		return false;
	if (a->kind == ZM_SLICE_STAT)
		return a->stat == b->stat;
	if (a->kind != ZM_SLICE_FEATURE)
		return false;
	if (a->column || b->column)
		return a->column && b->column &&
		       strcmp(a->column, b->column) == 0;
	return a->index == b->index;
}

static enum zm_status add_rule(struct zm_slice_rules *r,
                               struct zm_slice_rule **out,
                               struct zm_error *err)
{
	struct zm_slice_rule *p;
	size_t bytes;

	if (!zm_size_mul(r->n_rules + 1, sizeof(*p), &bytes) ||
	    !(p = zm_realloc(r->rules, bytes)))
		return nomem(err);
	r->rules = p;
	p += r->n_rules++;
	memset(p, 0, sizeof(*p));
	p->index = -1;
	*out = p;
	return ZM_OK;
}

/* One item of slices: its name, and default: true or where: (parsed by
 * parse_where); appended to r. */
static enum zm_status parse_rule(const struct zm_node *s,
                                 struct zm_slice_rules *r,
                                 struct zm_error *err)
{
	static const char *const rule_keys[] = { "name", "where", "default",
		NULL };
	const struct zm_node *n, *w, *d;
	enum zm_status st;
	size_t j;
	struct zm_slice_rule *u;
	const char *name;
	bool dflt = false;

	if ((st = zm_node_expect(s, ZM_NODE_MAP, "slice", err)) ||
	    (st = zm_node_check_keys(s, rule_keys, "slice", err)))
		return st;
	if (!(n = zm_node_get(s, "name"))) {
		st = zm_node_error(s, err, ZM_ERR_CONFIG,
		                   "slice: name is required");
		return st;
	}
	if ((st = zm_node_string(n, "name", &name, err)))
		return st;
	if (!zm_zoo_valid_name(name)) {
		st = zm_node_error(n, err, ZM_ERR_CONFIG, "name: '%s' is "
		                   "not a valid slice name (letters, "
		                   "digits, '_', '.', '-'; at most 63)",
		                   name);
		return st;
	}
	if (strcmp(name, "centroids") == 0) {
		/* slice(1) writes DIR/centroids.safetensors.gz. */
		st = zm_node_error(n, err, ZM_ERR_CONFIG, "name: "
		                   "'centroids' is reserved");
		return st;
	}
	for (j = 0; j < r->n_rules; j++)
		if (strcmp(r->rules[j].name, name) == 0) {
			st = zm_node_error(n, err, ZM_ERR_CONFIG,
			                   "name: duplicate slice '%s'",
			                   name);
			return st;
		}
	d = zm_node_get(s, "default");
	w = zm_node_get(s, "where");
	if (d && (st = zm_node_bool(d, "default", &dflt, err)))
		return st;
	if (dflt == !!w) {
		st = zm_node_error(s, err, ZM_ERR_CONFIG, "slice '%s': "
		                   "expected either where: or "
		                   "default: true", name);
		return st;
	}
	if (dflt && r->has_default) {
		st = zm_node_error(d, err, ZM_ERR_CONFIG,
		                   "default: only one slice may be "
		                   "the default");
		return st;
	}
	if ((st = add_rule(r, &u, err)))
		return st;
	u->line = s->line;
	u->col = s->col;
	if (!(u->name = zm_strdup(name))) {
		st = nomem(err);
		return st;
	}
	if (dflt) {
		u->kind = ZM_SLICE_DEFAULT;
		r->has_default = true;
	} else if ((st = parse_where(w, r, u, err))) {
		return st;
	}
	return ZM_OK;
}

/* In partition mode without a default slice, two range rules on the same
 * target must not overlap. */
static enum zm_status check_overlaps(const struct zm_node *slices,
                                     const struct zm_slice_rules *r,
                                     struct zm_error *err)
{
	enum zm_status st;
	size_t i, j;

	for (i = 0; i < r->n_rules; i++)
		for (j = 0; j < i; j++) {
			const struct zm_slice_rule *a = &r->rules[j];
			const struct zm_slice_rule *b = &r->rules[i];

			if (!same_target(a, b) || !(a->lo < b->hi) ||
			    !(b->lo < a->hi))
				continue;
			st = zm_node_error(slices->items[i], err,
			                   ZM_ERR_CONFIG, "slice '%s': "
			                   "range [%g, %g) overlaps slice "
			                   "'%s' [%g, %g) in partition mode "
			                   "without a default slice",
			                   b->name, b->lo, b->hi, a->name,
			                   a->lo, a->hi);
			return st;
		}
	return ZM_OK;
}

enum zm_status zm_slice_rules_parse(const struct zm_node *root,
                                    struct zm_slice_rules *r,
                                    struct zm_error *err)
{
	static const char *const top[] = { "mode", "slices", "clusters", NULL };
	const struct zm_node *mode, *slices, *clusters;
	enum zm_status st;
	size_t i;

	zm_slice_rules_release(r);
	if ((st = zm_node_expect(root, ZM_NODE_MAP, "slice rules", err)) ||
	    (st = zm_node_check_keys(root, top, "slice rules", err)))
		return st;
	mode = zm_node_get(root, "mode");
	slices = zm_node_get(root, "slices");
	clusters = zm_node_get(root, "clusters");
	if (mode) {
		const char *s;

		if ((st = zm_node_string(mode, "mode", &s, err)))
			goto fail;
		if (strcmp(s, "overlapping") == 0)
			r->overlapping = true;
		else if (strcmp(s, "partition") != 0) {
			st = zm_node_error(mode, err, ZM_ERR_CONFIG, "mode: "
			                   "expected partition or overlapping, "
			                   "got '%s'", s);
			goto fail;
		}
	}
	if (clusters && (st = parse_clusters(clusters, r, err)))
		goto fail;
	if (!slices && !clusters) {
		st = zm_node_error(root, err, ZM_ERR_CONFIG,
		                   "expected slices: or clusters:");
		goto fail;
	}
	if (!slices) {
		/* clusters alone: one slice per cluster. */
		for (i = 0; i < r->k; i++) {
			struct zm_slice_rule *u;
			char name[32];

			if ((st = add_rule(r, &u, err)))
				goto fail;
			snprintf(name, sizeof(name), "cluster-%zu", i);
			u->kind = ZM_SLICE_CLUSTER;
			u->cluster = i;
			u->line = clusters->line;
			u->col = clusters->col;
			if (!(u->name = zm_strdup(name))) {
				st = nomem(err);
				goto fail;
			}
		}
		return ZM_OK;
	}
	if ((st = zm_node_expect(slices, ZM_NODE_SEQ, "slices", err)))
		goto fail;
	if (slices->count == 0) {
		st = zm_node_error(slices, err, ZM_ERR_CONFIG,
		                   "slices: expected at least one slice");
		goto fail;
	}
	for (i = 0; i < slices->count; i++)
		if ((st = parse_rule(slices->items[i], r, err)))
			goto fail;
	if (!r->overlapping && !r->has_default &&
	    (st = check_overlaps(slices, r, err)))
		goto fail;
	return ZM_OK;
fail:
	zm_slice_rules_release(r);
	return st;
}

enum zm_status zm_slice_rules_parse_text(const char *bytes, size_t len,
                                         const char *source,
                                         struct zm_slice_rules *r,
                                         struct zm_error *err)
{
	struct zm_node *root = NULL;
	enum zm_status st;

	st = zm_config_parse(bytes, len, source, &root, err);
	if (st == ZM_OK)
		st = zm_slice_rules_parse(root, r, err);
	zm_node_free(root);
	return st;
}

enum zm_status zm_slice_rules_load(const char *path, struct zm_slice_rules *r,
                                   struct zm_error *err)
{
	struct zm_node *root = NULL;
	enum zm_status st;

	st = zm_config_load(path, &root, err);
	if (st == ZM_OK)
		st = zm_slice_rules_parse(root, r, err);
	zm_node_free(root);
	return st;
}

/* ---- binding ---- */

static ptrdiff_t find_string(char **list, size_t n, const char *s)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(list[i], s) == 0)
			return (ptrdiff_t)i;
	return -1;
}

static const struct zm_data_column *find_column(
	const struct zm_data_column *c, size_t n, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(c[i].name, name) == 0)
			return &c[i];
	return NULL;
}

/* A column rule on string column c: every value must be one of its
 * strings (none of which is a number, or the column would be numeric). */
static enum zm_status bind_strings(struct zm_slice_rule *u,
                                   const struct zm_data_column *c,
                                   const char *source, struct zm_error *err)
{
	size_t j;

	for (j = 0; j < u->n_values; j++) {
		if (!u->strings[j])
			return zm_error_set(err, ZM_ERR_CONFIG, "%s:%d:%d: slice "
			                    "'%s': column '%s' holds strings, got "
			                    "the number %g", source, u->line,
			                    u->col, u->name, u->column,
			                    u->values[j]);
		if (find_string(c->levels, c->n_levels, u->strings[j]) < 0)
			return zm_error_set(err, ZM_ERR_CONFIG, "%s:%d:%d: slice "
			                    "'%s': no value '%s' in column '%s'",
			                    source, u->line, u->col, u->name,
			                    u->strings[j], u->column);
	}
	u->on_strings = true;
	return ZM_OK;
}

enum zm_status zm_slice_rules_use_batch(struct zm_slice_rules *r,
                                        const struct zm_doc *doc, size_t n,
                                        const char *where,
                                        struct zm_error *err)
{
	struct zm_data_column *sc = NULL;
	size_t n_sc = 0, i, j, k;
	enum zm_status st = ZM_OK;
	bool any = false;

	for (i = 0; i < r->n_rules; i++)
		any |= r->rules[i].on_strings;
	if (!any)
		return ZM_OK;
	if ((st = zm_data_columns(doc, n, where, &sc, &n_sc, err)))
		return st;
	for (i = 0; st == ZM_OK && i < r->n_rules; i++) {
		struct zm_slice_rule *u = &r->rules[i];
		const struct zm_data_column *c;
		uint8_t *hit;

		if (!u->on_strings)
			continue;
		if (!(c = find_column(sc, n_sc, u->column))) {
			st = zm_error_set(err, ZM_ERR_DATA, "%s: no string column "
			                  "'%s' (slice '%s')", where, u->column,
			                  u->name);
			break;
		}
		if (!(hit = zm_calloc(c->n_levels ? c->n_levels : 1, 1))) {
			st = nomem(err);
			break;
		}
		for (k = 0; k < c->n_levels; k++)
			for (j = 0; j < u->n_values; j++)
				if (strcmp(c->levels[k], u->strings[j]) == 0)
					hit[k] = 1;
		free(u->level_hit);
		u->level_hit = hit;
		u->n_levels = c->n_levels;
		u->codes = c->codes;
	}
	zm_data_columns_free(sc, n_sc);
	return st;
}

enum zm_status zm_slice_rules_bind(struct zm_slice_rules *r,
                                   const struct zm_doc *doc, size_t d,
                                   const char *source, struct zm_error *err)
{
	const char *label = zm_doc_meta(doc, ZM_META_LABEL);
	const char *cj = zm_doc_meta(doc, ZM_META_COLUMNS);
	const char *kj = zm_doc_meta(doc, ZM_META_CLASSES);
	bool has_y = zm_doc_find(doc, "y") != NULL;
	const struct zm_tensor *x = zm_doc_find(doc, "x");
	char **cols = NULL, **classes = NULL;
	struct zm_data_column *sc = NULL;
	size_t n_cols = 0, n_classes = 0, n_sc = 0, i, j;
	enum zm_status st = ZM_OK;

	if (x && x->ndim >= 1 &&
	    (st = zm_data_columns(doc, (size_t)x->shape[0], "the data", &sc,
	                          &n_sc, err)))
		return st;
	if (cj && !zm_config_string_list(cj, &cols, &n_cols)) {
		st = zm_error_set(err, ZM_ERR_DATA, "metadata zm.columns is "
		                  "not a JSON list of names");
		goto out;
	}
	if (kj && !zm_config_string_list(kj, &classes, &n_classes)) {
		st = zm_error_set(err, ZM_ERR_DATA, "metadata zm.classes is "
		                  "not a JSON list of names");
		goto out;
	}
	for (i = 0; i < r->n_rules && st == ZM_OK; i++) {
		struct zm_slice_rule *u = &r->rules[i];
		bool label_rule = u->kind == ZM_SLICE_LABEL;

		if (u->kind == ZM_SLICE_COLUMN || u->kind == ZM_SLICE_FEATURE) {
			u->on_label = false;
			u->on_strings = false;
			if (u->column) {
				ptrdiff_t at = find_string(cols, n_cols,
				                           u->column);
				if (at < 0 && u->kind == ZM_SLICE_COLUMN &&
				    label && has_y &&
				    strcmp(label, u->column) == 0) {
					u->on_label = true;
				} else if (at < 0 && u->kind == ZM_SLICE_COLUMN &&
				           find_column(sc, n_sc, u->column)) {
					st = bind_strings(u, find_column(sc, n_sc,
					                  u->column), source, err);
					if (st != ZM_OK)
						break;
					continue;
				} else if (at < 0) {
					st = zm_error_set(err, ZM_ERR_CONFIG,
					        "%s:%d:%d: slice '%s': no column "
					        "'%s' in the data%s", source,
					        u->line, u->col, u->name,
					        u->column, cols ? "" :
					        " (it has no column names)");
					break;
				} else {
					u->index = at;
				}
			} else if ((uint64_t)u->index >= d) {
				st = zm_error_set(err, ZM_ERR_CONFIG,
				        "%s:%d:%d: slice '%s': feature %lld out "
				        "of range (the data has %zu)", source,
				        u->line, u->col, u->name,
				        (long long)u->index, d);
				break;
			}
			if (u->kind == ZM_SLICE_COLUMN && !u->on_label)
				for (j = 0; j < u->n_values; j++)
					if (u->strings[j]) {
						st = zm_error_set(err,
						  ZM_ERR_CONFIG, "%s:%d:%d: "
						  "slice '%s': column '%s' is "
						  "numeric, got '%s'", source,
						  u->line, u->col, u->name,
						  u->column ? u->column : "?",
						  u->strings[j]);
						break;
					}
			if (u->on_label) {
				/* The column is the label: match class ids;
				 * names through zm.classes. */
				label_rule = true;
			}
		}
		if (!label_rule)
			continue;
		if (!has_y) {
			st = zm_error_set(err, ZM_ERR_CONFIG, "%s:%d:%d: slice "
			                  "'%s': the data has no labels", source,
			                  u->line, u->col, u->name);
			break;
		}
		if (u->kind == ZM_SLICE_COLUMN && !u->labels) {
			u->labels = zm_calloc(u->n_values, sizeof(*u->labels));
			if (!u->labels) {
				st = nomem(err);
				break;
			}
			u->n_labels = u->n_values;
			for (j = 0; j < u->n_values; j++)
				u->labels[j] = u->strings[j] ? -1 :
				               (int64_t)u->values[j];
		}
		for (j = 0; j < u->n_labels; j++) {
			ptrdiff_t at;

			if (!u->strings[j])
				continue;
			at = find_string(classes, n_classes, u->strings[j]);
			if (at < 0) {
				st = zm_error_set(err, ZM_ERR_CONFIG,
				        "%s:%d:%d: slice '%s': no class '%s' "
				        "in the data's labels", source, u->line,
				        u->col, u->name, u->strings[j]);
				break;
			}
			u->labels[j] = at;
		}
	}
out:
	zm_config_strings_free(cols, n_cols);
	zm_config_strings_free(classes, n_classes);
	zm_data_columns_free(sc, n_sc);
	return st;
}

/* ---- matching ---- */

double zm_slice_row_stat(enum zm_slice_stat stat, const float *row, size_t d)
{
	double s = 0, s2 = 0, lo = INFINITY, hi = -INFINITY, m;
	size_t j;

	if (d == 0)
		return 0;
	switch (stat) {
	case ZM_STAT_MEAN:
		for (j = 0; j < d; j++)
			s += row[j];
		return s / (double)d;
	case ZM_STAT_STD:
		for (j = 0; j < d; j++)
			s += row[j];
		m = s / (double)d;
		for (j = 0; j < d; j++)
			s2 += (row[j] - m) * (row[j] - m);
		return sqrt(s2 / (double)d);
	case ZM_STAT_MIN:
		for (j = 0; j < d; j++)
			if (row[j] < lo)
				lo = row[j];
		return lo;
	case ZM_STAT_MAX:
		for (j = 0; j < d; j++)
			if (row[j] > hi)
				hi = row[j];
		return hi;
	case ZM_STAT_L2:
		for (j = 0; j < d; j++)
			s2 += (double)row[j] * row[j];
		return sqrt(s2);
	}
	return 0;
}

bool zm_slice_hash_in(uint64_t id, double fraction, uint64_t seed)
{
	uint64_t state = seed ^ (id * 0x9e3779b97f4a7c15ull);
	uint64_t h = zm_splitmix64(&state);

	return (double)(h >> 11) * 0x1p-53 < fraction;
}

static bool rule_matches(const struct zm_slice_rule *u, size_t i,
                         const float *row, size_t d, const int64_t *y,
                         uint64_t id, int32_t cluster)
{
	double v;
	size_t j;

	switch (u->kind) {
	case ZM_SLICE_DEFAULT:
		return false;
	case ZM_SLICE_COLUMN:
		if (u->on_strings)
			return u->codes && u->level_hit[u->codes[i]];
		if (u->on_label) {
			if (!y)
				return false;
			for (j = 0; j < u->n_labels; j++)
				if (*y == u->labels[j])
					return true;
			return false;
		}
		for (j = 0; j < u->n_values; j++)
			if (row[u->index] == (float)u->values[j])
				return true;
		return false;
	case ZM_SLICE_FEATURE:
		v = row[u->index];
		return v >= u->lo && v < u->hi;
	case ZM_SLICE_STAT:
		v = zm_slice_row_stat(u->stat, row, d);
		return v >= u->lo && v < u->hi;
	case ZM_SLICE_LABEL:
		if (!y)
			return false;
		for (j = 0; j < u->n_labels; j++)
			if (*y == u->labels[j])
				return true;
		return false;
	case ZM_SLICE_HASH:
		return zm_slice_hash_in(id, u->fraction, u->seed);
	case ZM_SLICE_CLUSTER:
		return cluster >= 0 && (size_t)cluster == u->cluster;
	}
	return false;
}

void zm_slice_match(const struct zm_slice_rules *r, const float *x,
                    const int64_t *y, const int64_t *ids,
                    const int32_t *cluster, size_t n, size_t d,
                    uint8_t *hits)
{
	size_t i, j, R = r->n_rules;

	memset(hits, 0, n * R);
	for (i = 0; i < n; i++) {
		uint8_t *h = hits + i * R;
		const float *row = x + i * d;
		bool any = false;

		for (j = 0; j < R; j++) {
			if (!rule_matches(&r->rules[j], i, row, d,
			                  y ? y + i : NULL,
			                  ids ? (uint64_t)ids[i] : i,
			                  cluster ? cluster[i] : -1))
				continue;
			h[j] = 1;
			any = true;
			if (!r->overlapping)
				break;
		}
		if (!any && r->has_default)
			for (j = 0; j < R; j++)
				if (r->rules[j].kind == ZM_SLICE_DEFAULT)
					h[j] = 1;
	}
}

/* ---- k-means ---- */

static double sqdist(const float *a, const float *b, size_t d)
{
	double s = 0;
	size_t j;

	for (j = 0; j < d; j++) {
		double t = (double)a[j] - b[j];
		s += t * t;
	}
	return s;
}

/*
 * Nearest centroid per row with ||x||^2 - 2 x.c + ||c||^2; only the last
 * two terms decide the argmin, so x.c comes from one GEMM per block.
 * dist (optional) receives the squared distances, clamped at 0.
 */
static enum zm_status nearest(const float *x, size_t n, size_t d,
                              const float *c, size_t k, int32_t *out,
                              double *dist, struct zm_error *err)
{
	float *prod = NULL, *cn = NULL;
	size_t i, j, b, bytes;

	if (!zm_size_mul(KM_BLOCK, k, &bytes) ||
	    !zm_size_mul(bytes, sizeof(float), &bytes) ||
	    !(prod = zm_malloc(bytes)) ||
	    !(cn = zm_malloc(k * sizeof(float)))) {
		free(prod);
		return nomem(err);
	}
	for (j = 0; j < k; j++) {
		double s = 0;
		size_t t;

		for (t = 0; t < d; t++)
			s += (double)c[j * d + t] * c[j * d + t];
		cn[j] = (float)s;
	}
	for (b = 0; b < n; b += KM_BLOCK) {
		size_t m = n - b < KM_BLOCK ? n - b : KM_BLOCK;

		zm_gemm(false, true, m, k, d, 1.0f, x + b * d, d, c, d, 0.0f,
		        prod, k);
		for (i = 0; i < m; i++) {
			const float *p = prod + i * k;
			float best = cn[0] - 2 * p[0];
			int32_t arg = 0;

			for (j = 1; j < k; j++) {
				float v = cn[j] - 2 * p[j];
				if (v < best) {
					best = v;
					arg = (int32_t)j;
				}
			}
			out[b + i] = arg;
			if (dist) {
				double s = 0;
				const float *row = x + (b + i) * d;
				size_t t;

				for (t = 0; t < d; t++)
					s += (double)row[t] * row[t];
				s += best;
				dist[b + i] = s > 0 ? s : 0;
			}
		}
	}
	free(prod);
	free(cn);
	return ZM_OK;
}

enum zm_status zm_kmeans_assign(const float *x, size_t n, size_t d,
                                const float *centroids, size_t k,
                                int32_t *out, struct zm_error *err)
{
	ZM_ASSERT(k > 0);
	return nearest(x, n, d, centroids, k, out, NULL, err);
}

enum zm_status zm_kmeans_fit(const float *x, size_t n, size_t d, size_t k,
                             uint64_t seed, size_t iterations,
                             float *centroids, struct zm_error *err)
{
	struct zm_rng rng;
	double *dist = NULL, *sum = NULL, total;
	int32_t *lab = NULL;
	size_t *cnt = NULL, i, j, t, it, bytes;
	enum zm_status st = ZM_OK;

	if (k == 0 || n < k)
		return zm_error_set(err, ZM_ERR_DATA, "k-means: %zu rows for "
		                    "%zu clusters", n, k);
	if (!zm_size_mul(k, d, &bytes) ||
	    !zm_size_mul(bytes, sizeof(double), &bytes) ||
	    !(sum = zm_malloc(bytes)) ||
	    !(dist = zm_malloc(n * sizeof(double))) ||
	    !(lab = zm_malloc(n * sizeof(int32_t))) ||
	    !(cnt = zm_malloc(k * sizeof(size_t)))) {
		st = nomem(err);
		goto out;
	}
	/* k-means++: each next centre is a row drawn with probability
	 * proportional to its squared distance to the nearest centre. */
	zm_rng_seed(&rng, seed);
	i = (size_t)zm_rng_below(&rng, n);
	memcpy(centroids, x + i * d, d * sizeof(float));
	for (i = 0; i < n; i++)
		dist[i] = sqdist(x + i * d, centroids, d);
	for (j = 1; j < k; j++) {
		double u;
		size_t pick = n - 1;

		total = 0;
		for (i = 0; i < n; i++)
			total += dist[i];
		u = zm_rng_uniform(&rng) * total;
		if (total > 0) {
			for (i = 0; i < n; i++) {
				if (u < dist[i]) {
					pick = i;
					break;
				}
				u -= dist[i];
			}
		} else {
			pick = (size_t)zm_rng_below(&rng, n);
		}
		memcpy(centroids + j * d, x + pick * d, d * sizeof(float));
		for (i = 0; i < n; i++) {
			double v = sqdist(x + i * d, centroids + j * d, d);
			if (v < dist[i])
				dist[i] = v;
		}
	}
	for (i = 0; i < n; i++)
		lab[i] = -1;
	for (it = 0; it < iterations; it++) {
		bool changed = false;
		for (i = 0; i < n; i += KM_BLOCK) {
			size_t m = n - i < KM_BLOCK ? n - i : KM_BLOCK;
			int32_t tmp[KM_BLOCK];

			if ((st = nearest(x + i * d, m, d, centroids, k, tmp,
			                  dist + i, err)))
				goto out;
			for (t = 0; t < m; t++) {
				if (lab[i + t] != tmp[t])
					changed = true;
				lab[i + t] = tmp[t];
			}
		}
		if (!changed)
			break;
		memset(sum, 0, k * d * sizeof(double));
		memset(cnt, 0, k * sizeof(size_t));
		for (i = 0; i < n; i++) {
			double *s = sum + (size_t)lab[i] * d;
			for (t = 0; t < d; t++)
				s[t] += x[i * d + t];
			cnt[lab[i]]++;
		}
		for (j = 0; j < k; j++) {
			if (cnt[j] == 0) {
				/* Re-seed an empty cluster at the row farthest
				 * from its centre. */
				size_t far = 0;
				for (i = 1; i < n; i++)
					if (dist[i] > dist[far])
						far = i;
				memcpy(centroids + j * d, x + far * d,
				       d * sizeof(float));
				dist[far] = 0;
				continue;
			}
			for (t = 0; t < d; t++)
				centroids[j * d + t] =
					(float)(sum[j * d + t] / (double)cnt[j]);
		}
	}
out:
	free(sum);
	free(dist);
	free(lab);
	free(cnt);
	return st;
}

/* ---- reservoir ---- */

enum zm_status zm_reservoir_init(struct zm_reservoir *s, size_t cap, size_t d,
                                 uint64_t seed, struct zm_error *err)
{
	size_t bytes;

	memset(s, 0, sizeof(*s));
	if (!zm_size_mul(cap, d, &bytes) ||
	    !zm_size_mul(bytes, sizeof(float), &bytes) ||
	    !(s->rows = zm_malloc(bytes ? bytes : 1)))
		return nomem(err);
	s->cap = cap;
	s->d = d;
	zm_rng_seed(&s->rng, seed);
	return ZM_OK;
}

void zm_reservoir_add(struct zm_reservoir *s, const float *x, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		uint64_t slot;

		s->seen++;
		if (s->n < s->cap) {
			slot = s->n++;
		} else {
			slot = zm_rng_below(&s->rng, s->seen);
			if (slot >= s->cap)
				continue;
		}
		memcpy(s->rows + slot * s->d, x + i * s->d,
		       s->d * sizeof(float));
	}
}

void zm_reservoir_release(struct zm_reservoir *s)
{
	free(s->rows);
	memset(s, 0, sizeof(*s));
}
