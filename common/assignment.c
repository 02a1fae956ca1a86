/*
 * The assignment file: reading (through config.h, so every error has a
 * line and column), validating and writing.  See assignment.h.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assignment.h"
#include "config.h"
#include "fileio.h"
#include "mem.h"

/* Assignment files are small; a larger one is refused before reading. */
#define MAX_ASSIGNMENT_BYTES ((size_t)64 << 20)

static enum zm_status nomem(struct zm_error *err)
{
	return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
}

void zm_assignment_init(struct zm_assignment *a)
{
	memset(a, 0, sizeof(*a));
	a->metric = ZM_METRIC_COSINE;
	a->temperature = 1.0;
}

static void slice_release(struct zm_assignment_slice *s)
{
	size_t i;

	free(s->slice);
	free(s->file);
	for (i = 0; i < s->n_models; i++)
		free(s->models[i].model);
	free(s->models);
	for (i = 0; i < s->n_similarity; i++)
		free(s->similarity[i].model);
	free(s->similarity);
}

void zm_assignment_release(struct zm_assignment *a)
{
	size_t i;

	for (i = 0; i < a->n_slices; i++)
		slice_release(&a->slices[i]);
	free(a->slices);
	zm_assignment_init(a);
}

/* Grows an array by one zeroed element; *arr may move. */
static void *grow(void *arr, size_t n, size_t size)
{
	size_t bytes;
	char *p;

	if (!zm_size_add(n, 1, &bytes) || !zm_size_mul(bytes, size, &bytes) ||
	    !(p = zm_realloc(arr, bytes)))
		return NULL;
	memset(p + n * size, 0, size);
	return p;
}

enum zm_status zm_assignment_add_slice(struct zm_assignment *a,
                                       const char *name, const char *file,
                                       struct zm_assignment_slice **out,
                                       struct zm_error *err)
{
	struct zm_assignment_slice *p = grow(a->slices, a->n_slices,
	                                     sizeof(*p));
	struct zm_assignment_slice *s;

	if (!p)
		return nomem(err);
	a->slices = p;
	s = &p[a->n_slices];
	if (!(s->slice = zm_strdup(name)) ||
	    (file && !(s->file = zm_strdup(file)))) {
		free(s->slice);
		s->slice = NULL;
		return nomem(err);
	}
	a->n_slices++;
	*out = s;
	return ZM_OK;
}

enum zm_status zm_assignment_add_model(struct zm_assignment_slice *s,
                                       const char *model, double weight,
                                       struct zm_error *err)
{
	struct zm_assignment_weight *p = grow(s->models, s->n_models,
	                                      sizeof(*p));

	if (!p)
		return nomem(err);
	s->models = p;
	if (!(p[s->n_models].model = zm_strdup(model)))
		return nomem(err);
	p[s->n_models++].weight = weight;
	return ZM_OK;
}

enum zm_status zm_assignment_add_score(struct zm_assignment_slice *s,
                                       const char *model, double value,
                                       struct zm_error *err)
{
	struct zm_assignment_score *p = grow(s->similarity, s->n_similarity,
	                                     sizeof(*p));

	if (!p)
		return nomem(err);
	s->similarity = p;
	if (!(p[s->n_similarity].model = zm_strdup(model)))
		return nomem(err);
	p[s->n_similarity++].value = value;
	return ZM_OK;
}

const struct zm_assignment_slice *
zm_assignment_find(const struct zm_assignment *a, const char *name)
{
	size_t i;

	for (i = 0; i < a->n_slices; i++)
		if (strcmp(a->slices[i].slice, name) == 0)
			return &a->slices[i];
	return NULL;
}

/* One slice's invariants; nodes (may be NULL) place the message. */
static enum zm_status check_slice(const struct zm_assignment *a, size_t idx,
                                  const struct zm_node *models_node,
                                  const struct zm_node *slice_node,
                                  struct zm_error *err)
{
	const struct zm_assignment_slice *s = &a->slices[idx];
	double sum = 0;
	size_t i, j;
	char msg[512];

	msg[0] = 0;
	for (j = 0; j < idx && !msg[0]; j++)
		if (strcmp(a->slices[j].slice, s->slice) == 0)
			snprintf(msg, sizeof(msg), "duplicate slice '%s'",
			         s->slice);
	for (i = 0; i < s->n_models && !msg[0]; i++) {
		double w = s->models[i].weight;

		if (!isfinite(w) || w < 0)
			snprintf(msg, sizeof(msg), "slice '%s': model '%s' has "
			         "weight %g, expected a finite number >= 0",
			         s->slice, s->models[i].model, w);
		for (j = 0; j < i && !msg[0]; j++)
			if (strcmp(s->models[j].model, s->models[i].model) == 0)
				snprintf(msg, sizeof(msg), "slice '%s': model "
				         "'%s' listed twice", s->slice,
				         s->models[i].model);
		sum += w;
	}
	if (!msg[0] && s->n_models == 0 && !s->new_model)
		snprintf(msg, sizeof(msg), "slice '%s': no models (and not "
		         "marked new_model)", s->slice);
	if (!msg[0] && s->n_models > 0 &&
	    !(fabs(sum - 1.0) <= ZM_ASSIGNMENT_SUM_TOL))
		snprintf(msg, sizeof(msg), "slice '%s': weights sum to %.9g, "
		         "expected 1", s->slice, sum);
	for (i = 0; i < s->n_similarity && !msg[0]; i++) {
		if (!isfinite(s->similarity[i].value))
			snprintf(msg, sizeof(msg), "slice '%s': similarity to "
			         "'%s' is not finite", s->slice,
			         s->similarity[i].model);
		for (j = 0; j < i && !msg[0]; j++)
			if (strcmp(s->similarity[j].model,
			           s->similarity[i].model) == 0)
				snprintf(msg, sizeof(msg), "slice '%s': "
				         "similarity to '%s' given twice",
				         s->slice, s->similarity[i].model);
	}
	if (!msg[0])
		return ZM_OK;
	if (models_node || slice_node)
		return zm_node_error(models_node ? models_node : slice_node,
		                     err, ZM_ERR_CONFIG, "%s", msg);
	return zm_error_set(err, ZM_ERR_DATA, "assignment: %s", msg);
}

static enum zm_status check_head(const struct zm_assignment *a,
                                 struct zm_error *err)
{
	if ((unsigned)a->metric >= ZM_METRIC_COUNT)
		return zm_error_set(err, ZM_ERR_DATA, "assignment: bad metric");
	if (!isfinite(a->temperature) || !(a->temperature > 0))
		return zm_error_set(err, ZM_ERR_DATA, "assignment: temperature "
		                    "%g is not a positive number",
		                    a->temperature);
	if (!isfinite(a->min_weight) || a->min_weight < 0)
		return zm_error_set(err, ZM_ERR_DATA, "assignment: min_weight "
		                    "%g is not a number >= 0", a->min_weight);
	return ZM_OK;
}

enum zm_status zm_assignment_validate(const struct zm_assignment *a,
                                      struct zm_error *err)
{
	enum zm_status st = check_head(a, err);
	size_t i;

	for (i = 0; st == ZM_OK && i < a->n_slices; i++)
		st = check_slice(a, i, NULL, NULL, err);
	return st;
}

/* ---- reading ---- */

static enum zm_status parse_slice(const struct zm_node *n,
                                  struct zm_assignment *a,
                                  struct zm_error *err)
{
	static const char *const keys[] = { "slice", "file", "models",
		"similarity", "new_model", NULL };
	static const char *const mkeys[] = { "model", "weight", NULL };
	const struct zm_node *v, *models;
	struct zm_assignment_slice *s;
	const char *name, *file = NULL;
	enum zm_status st;
	size_t i;

	if ((st = zm_node_expect(n, ZM_NODE_MAP, "slice entry", err)) ||
	    (st = zm_node_check_keys(n, keys, "slice entry", err)))
		return st;
	if (!(v = zm_node_get(n, "slice")))
		return zm_node_error(n, err, ZM_ERR_CONFIG,
		                     "slice entry: 'slice' is required");
	if ((st = zm_node_string(v, "slice", &name, err)))
		return st;
	if (name[0] == 0)
		return zm_node_error(v, err, ZM_ERR_CONFIG,
		                     "slice: expected a name");
	if ((v = zm_node_get(n, "file")) &&
	    (st = zm_node_string(v, "file", &file, err)))
		return st;
	if ((st = zm_assignment_add_slice(a, name, file, &s, err)))
		return st;
	if ((v = zm_node_get(n, "new_model")) &&
	    (st = zm_node_bool(v, "new_model", &s->new_model, err)))
		return st;
	models = zm_node_get(n, "models");
	if (models) {
		if ((st = zm_node_expect(models, ZM_NODE_SEQ, "models", err)))
			return st;
		for (i = 0; i < models->count; i++) {
			const struct zm_node *m = models->items[i], *w;
			const char *mn;
			double wt;

			if ((st = zm_node_expect(m, ZM_NODE_MAP, "model entry",
			                         err)) ||
			    (st = zm_node_check_keys(m, mkeys, "model entry",
			                             err)))
				return st;
			if (!(v = zm_node_get(m, "model")) ||
			    !(w = zm_node_get(m, "weight")))
				return zm_node_error(m, err, ZM_ERR_CONFIG,
				                     "model entry: expected "
				                     "model and weight");
			if ((st = zm_node_string(v, "model", &mn, err)) ||
			    (st = zm_node_double(w, "weight", 0, 1e300, &wt,
			                         err)))
				return st;
			if ((st = zm_assignment_add_model(s, mn, wt, err)))
				return st;
		}
	}
	if ((v = zm_node_get(n, "similarity"))) {
		if ((st = zm_node_expect(v, ZM_NODE_MAP, "similarity", err)))
			return st;
		for (i = 0; i < v->count; i++) {
			const char *mn;
			double x;

			if ((st = zm_node_string(v->keys[i], "model name", &mn,
			                         err)) ||
			    (st = zm_node_double(v->items[i], "similarity",
			                         -1e300, 1e300, &x, err)))
				return st;
			if ((st = zm_assignment_add_score(s, mn, x, err)))
				return st;
		}
	}
	return check_slice(a, a->n_slices - 1, models, n, err);
}

enum zm_status zm_assignment_parse(const char *bytes, size_t len,
                                   const char *source,
                                   struct zm_assignment *a,
                                   struct zm_error *err)
{
	static const char *const keys[] = { "metric", "temperature", "top_k",
		"min_weight", "new_model_threshold", "slices", NULL };
	struct zm_node *root = NULL;
	const struct zm_node *v;
	enum zm_status st;
	const char *s;
	int64_t k;
	size_t i;

	zm_assignment_release(a);
	if ((st = zm_config_parse(bytes, len, source, &root, err)))
		return st;
	if ((st = zm_node_expect(root, ZM_NODE_MAP, "assignment", err)) ||
	    (st = zm_node_check_keys(root, keys, "assignment", err)))
		goto out;
	if (!(v = zm_node_get(root, "metric"))) {
		st = zm_node_error(root, err, ZM_ERR_CONFIG,
		                   "assignment: 'metric' is required");
		goto out;
	}
	if ((st = zm_node_string(v, "metric", &s, err)))
		goto out;
	if (!zm_metric_parse(s, &a->metric)) {
		st = zm_node_error(v, err, ZM_ERR_CONFIG, "metric: expected "
		                   "cosine, kl or mahalanobis, got '%s'", s);
		goto out;
	}
	if ((v = zm_node_get(root, "temperature"))) {
		if ((st = zm_node_double(v, "temperature", 0, 1e300,
		                         &a->temperature, err)))
			goto out;
		if (!(a->temperature > 0)) {
			st = zm_node_error(v, err, ZM_ERR_CONFIG, "temperature: "
			                   "expected a number > 0");
			goto out;
		}
	}
	if ((v = zm_node_get(root, "top_k"))) {
		if ((st = zm_node_int(v, "top_k", 0, INT32_MAX, &k, err)))
			goto out;
		a->top_k = (size_t)k;
	}
	if ((v = zm_node_get(root, "min_weight")) &&
	    (st = zm_node_double(v, "min_weight", 0, 1, &a->min_weight, err)))
		goto out;
	if ((v = zm_node_get(root, "new_model_threshold"))) {
		if ((st = zm_node_double(v, "new_model_threshold", -1e300,
		                         1e300, &a->new_model_threshold, err)))
			goto out;
		a->has_threshold = true;
	}
	if (!(v = zm_node_get(root, "slices"))) {
		st = zm_node_error(root, err, ZM_ERR_CONFIG,
		                   "assignment: 'slices' is required");
		goto out;
	}
	if ((st = zm_node_expect(v, ZM_NODE_SEQ, "slices", err)))
		goto out;
	for (i = 0; i < v->count; i++)
		if ((st = parse_slice(v->items[i], a, err)))
			goto out;
out:
	zm_node_free(root);
	if (st != ZM_OK)
		zm_assignment_release(a);
	return st;
}

enum zm_status zm_assignment_load(const char *path, struct zm_assignment *a,
                                  struct zm_error *err)
{
	char *data = NULL;
	size_t len = 0;
	enum zm_status st;

	st = zm_read_file(path, MAX_ASSIGNMENT_BYTES, &data, &len, err);
	if (st == ZM_OK)
		st = zm_assignment_parse(data, len, path, a, err);
	free(data);
	return st;
}

/* ---- writing ---- */

void zm_assignment_to_yaml(const struct zm_assignment *a, struct zm_buf *b)
{
	size_t i, j;

	zm_buf_printf(b, "metric: %s\ntemperature: ", zm_metric_name(a->metric));
	zm_json_double(b, a->temperature);
	zm_buf_printf(b, "\ntop_k: %zu\nmin_weight: ", a->top_k);
	zm_json_double(b, a->min_weight);
	if (a->has_threshold) {
		zm_buf_puts(b, "\nnew_model_threshold: ");
		zm_json_double(b, a->new_model_threshold);
	}
	zm_buf_puts(b, a->n_slices ? "\nslices:\n" : "\nslices: []\n");
	for (i = 0; i < a->n_slices; i++) {
		const struct zm_assignment_slice *s = &a->slices[i];

		zm_buf_puts(b, "  - slice: ");
		zm_yaml_scalar(b, s->slice, false);
		if (s->file) {
			zm_buf_puts(b, "\n    file: ");
			zm_yaml_scalar(b, s->file, false);
		}
		if (s->new_model)
			zm_buf_puts(b, "\n    new_model: true");
		zm_buf_puts(b, "\n    models: [");
		for (j = 0; j < s->n_models; j++) {
			zm_buf_puts(b, j ? ", {model: " : "{model: ");
			zm_yaml_scalar(b, s->models[j].model, false);
			zm_buf_puts(b, ", weight: ");
			zm_json_double(b, s->models[j].weight);
			zm_buf_puts(b, "}");
		}
		zm_buf_puts(b, "]\n    similarity: {");
		for (j = 0; j < s->n_similarity; j++) {
			zm_buf_puts(b, j ? ", " : "");
			zm_yaml_scalar(b, s->similarity[j].model, false);
			zm_buf_puts(b, ": ");
			zm_json_double(b, s->similarity[j].value);
		}
		zm_buf_puts(b, "}\n");
	}
}

enum zm_status zm_assignment_save(const struct zm_assignment *a,
                                  const char *path, struct zm_error *err)
{
	struct zm_buf b;
	enum zm_status st;

	if ((st = zm_assignment_validate(a, err)))
		return st;
	zm_buf_init(&b);
	zm_assignment_to_yaml(a, &b);
	if (b.failed) {
		zm_buf_release(&b);
		return nomem(err);
	}
	st = zm_write_file_atomic(path, b.data, b.len, err);
	zm_buf_release(&b);
	return st;
}
