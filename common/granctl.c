/*
 * The granularity controller's library part: metrics from logs, updates,
 * profiles and measurements; rules; the automatic policy; the explain
 * table; measuring a child process.  See granctl.h for the definitions.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dataset.h"
#include "granctl.h"
#include "lineage.h"
#include "mem.h"

extern char **environ;

static const char *const metric_names[ZM_GC_N_METRICS] = {
	[ZM_GC_LOSS_SLOPE] = "loss_slope",
	[ZM_GC_VAL_GAP] = "val_gap",
	[ZM_GC_EPOCHS] = "epochs",
	[ZM_GC_LOSS] = "loss",
	[ZM_GC_VAL_ACC] = "val_acc",
	[ZM_GC_DRIFT] = "drift",
	[ZM_GC_SLICE_DRIFT] = "slice_drift",
	[ZM_GC_MODEL_DRIFT] = "model_drift",
	[ZM_GC_DATA_DRIFT] = "data_drift",
	[ZM_GC_AGREEMENT] = "agreement",
	[ZM_GC_AGREEMENT_MIN] = "agreement_min",
	[ZM_GC_AGREEMENT_MAX] = "agreement_max",
	[ZM_GC_AGREEMENT_SPREAD] = "agreement_spread",
	[ZM_GC_DELTA_NORM] = "delta_norm",
	[ZM_GC_LATENCY_MS] = "latency_ms",
	[ZM_GC_MEMORY_MIB] = "memory_mib",
	[ZM_GC_LATENCY_FULL_MS] = "latency_full_ms",
	[ZM_GC_LATENCY_GROUP_MS] = "latency_group_ms",
	[ZM_GC_LATENCY_LAYER_MS] = "latency_layer_ms",
	[ZM_GC_MEMORY_FULL_MIB] = "memory_full_mib",
	[ZM_GC_MEMORY_GROUP_MIB] = "memory_group_mib",
	[ZM_GC_MEMORY_LAYER_MIB] = "memory_layer_mib",
	[ZM_GC_MODELS] = "models",
	[ZM_GC_UPDATES] = "updates",
	[ZM_GC_SLICES] = "slices",
};

const char *zm_gc_metric_name(enum zm_gc_metric m)
{
	ZM_ASSERT((unsigned)m < ZM_GC_N_METRICS);
	return metric_names[m];
}

bool zm_gc_metric_parse(const char *s, enum zm_gc_metric *out)
{
	int i;

	for (i = 0; i < ZM_GC_N_METRICS; i++)
		if (strcmp(s, metric_names[i]) == 0) {
			*out = (enum zm_gc_metric)i;
			return true;
		}
	return false;
}

void zm_gc_values_init(struct zm_gc_values *vals)
{
	int i;

	for (i = 0; i < ZM_GC_N_METRICS; i++)
		vals->v[i] = NAN;
}

static const char *const op_names[] = { ">", ">=", "<", "<=", "==", "!=" };

const char *zm_gc_op_name(enum zm_gc_op op)
{
	ZM_ASSERT((unsigned)op <= ZM_GC_NE);
	return op_names[op];
}

bool zm_gc_op_parse(const char *s, enum zm_gc_op *out)
{
	int i;

	for (i = 0; i <= ZM_GC_NE; i++)
		if (strcmp(s, op_names[i]) == 0) {
			*out = (enum zm_gc_op)i;
			return true;
		}
	return false;
}

bool zm_gc_compare(double a, enum zm_gc_op op, double b)
{
	if (isnan(a) || isnan(b))
		return false;
	switch (op) {
	case ZM_GC_GT: return a > b;
	case ZM_GC_GE: return a >= b;
	case ZM_GC_LT: return a < b;
	case ZM_GC_LE: return a <= b;
	case ZM_GC_EQ: return a == b;
	case ZM_GC_NE: return a != b;
	}
	ZM_ASSERT(!"bad op");
	return false;
}

/* ---- rules ---- */

static void cond_release(struct zm_gc_cond *c)
{
	size_t i;

	for (i = 0; i < c->n_items; i++)
		cond_release(&c->items[i]);
	free(c->items);
	memset(c, 0, sizeof(*c));
}

bool zm_gc_cond_eval(const struct zm_gc_cond *cond,
                     const struct zm_gc_values *vals)
{
	size_t i;

	switch (cond->kind) {
	case ZM_GC_COND_CMP:
		return zm_gc_compare(vals->v[cond->metric], cond->op,
		                     cond->value);
	case ZM_GC_COND_ALL:
		for (i = 0; i < cond->n_items; i++)
			if (!zm_gc_cond_eval(&cond->items[i], vals))
				return false;
		return true;
	case ZM_GC_COND_ANY:
		for (i = 0; i < cond->n_items; i++)
			if (zm_gc_cond_eval(&cond->items[i], vals))
				return true;
		return false;
	}
	return false;
}

void zm_gc_cond_format(const struct zm_gc_cond *cond, struct zm_buf *b)
{
	size_t i;

	if (cond->kind == ZM_GC_COND_CMP) {
		zm_buf_printf(b, "%s %s %.9g", zm_gc_metric_name(cond->metric),
		              zm_gc_op_name(cond->op), cond->value);
		return;
	}
	zm_buf_puts(b, cond->kind == ZM_GC_COND_ALL ? "all(" : "any(");
	for (i = 0; i < cond->n_items; i++) {
		if (i)
			zm_buf_puts(b, ", ");
		zm_gc_cond_format(&cond->items[i], b);
	}
	zm_buf_puts(b, ")");
}

/* Nesting limit of all/any, so a hostile file cannot blow the stack
 * (config.c limits the tree's depth too; this is the rules' own bound). */
#define COND_MAX_DEPTH 16

static enum zm_status cond_parse(const struct zm_node *n, int depth,
                                 struct zm_gc_cond *c, struct zm_error *err)
{
	static const char *const cmp_keys[] = { "metric", "op", "value", NULL };
	static const char *const all_keys[] = { "all", NULL };
	static const char *const any_keys[] = { "any", NULL };
	const struct zm_node *all, *any, *list;
	enum zm_status st;
	const char *s;
	size_t i;

	memset(c, 0, sizeof(*c));
	c->line = n->line;
	c->col = n->col;
	if ((st = zm_node_expect(n, ZM_NODE_MAP, "condition", err)))
		return st;
	if (depth >= COND_MAX_DEPTH)
		return zm_node_error(n, err, ZM_ERR_CONFIG,
		                     "conditions nested too deeply");
	all = zm_node_get(n, "all");
	any = zm_node_get(n, "any");
	if (all || any) {
		c->kind = all ? ZM_GC_COND_ALL : ZM_GC_COND_ANY;
		if ((st = zm_node_check_keys(n, all ? all_keys : any_keys,
		                             "condition", err)))
			return st;
		list = all ? all : any;
		if ((st = zm_node_expect(list, ZM_NODE_SEQ,
		                         all ? "all" : "any", err)))
			return st;
		if (list->count &&
		    !(c->items = zm_calloc(list->count, sizeof(*c->items))))
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		for (i = 0; i < list->count; i++) {
			st = cond_parse(list->items[i], depth + 1,
			                &c->items[c->n_items], err);
			c->n_items++;
			if (st != ZM_OK)
				return st;
		}
		return ZM_OK;
	}
	c->kind = ZM_GC_COND_CMP;
	if ((st = zm_node_check_keys(n, cmp_keys, "condition", err)))
		return st;
	if (!zm_node_get(n, "metric") || !zm_node_get(n, "op") ||
	    !zm_node_get(n, "value"))
		return zm_node_error(n, err, ZM_ERR_CONFIG,
		                     "a condition needs metric, op and value "
		                     "(or all: / any:)");
	if ((st = zm_node_string(zm_node_get(n, "metric"), "metric", &s, err)))
		return st;
	if (!zm_gc_metric_parse(s, &c->metric)) {
		struct zm_buf b;
		int m;
		zm_buf_init(&b);
		for (m = 0; m < ZM_GC_N_METRICS; m++)
			zm_buf_printf(&b, "%s%s", m ? ", " : "", metric_names[m]);
		st = zm_node_error(zm_node_get(n, "metric"), err,
		                   ZM_ERR_CONFIG, "unknown metric '%s' "
		                   "(known: %s)", s,
		                   b.failed ? "?" : b.data);
		zm_buf_release(&b);
		return st;
	}
	if ((st = zm_node_string(zm_node_get(n, "op"), "op", &s, err)))
		return st;
	if (!zm_gc_op_parse(s, &c->op))
		return zm_node_error(zm_node_get(n, "op"), err, ZM_ERR_CONFIG,
		                     "unknown op '%s' (expected >, >=, <, <=, "
		                     "== or !=)", s);
	return zm_node_double(zm_node_get(n, "value"), "value", -HUGE_VAL,
	                      HUGE_VAL, &c->value, err);
}

static enum zm_status level_parse(const struct zm_node *n,
                                  enum zm_gran_level *out,
                                  struct zm_error *err)
{
	enum zm_status st;
	const char *s;

	if ((st = zm_node_string(n, "level", &s, err)))
		return st;
	if (!zm_gran_level_parse(s, out))
		return zm_node_error(n, err, ZM_ERR_CONFIG, "unknown level '%s' "
		                     "(expected full, group or layer)", s);
	return ZM_OK;
}

void zm_gc_rules_init(struct zm_gc_rules *r)
{
	memset(r, 0, sizeof(*r));
}

void zm_gc_rules_release(struct zm_gc_rules *r)
{
	size_t i;

	for (i = 0; i < r->n_rules; i++)
		cond_release(&r->rules[i].when);
	free(r->rules);
	cond_release(&r->share);
	zm_gc_rules_init(r);
}

enum zm_status zm_gc_rules_parse(const struct zm_node *root,
                                 struct zm_gc_rules *r, struct zm_error *err)
{
	static const char *const top_keys[] = { "rules", "default", "share",
	                                        NULL };
	static const char *const rule_keys[] = { "when", "level", NULL };
	const struct zm_node *list, *n;
	enum zm_status st;
	size_t i;

	zm_gc_rules_release(r);
	if ((st = zm_node_expect(root, ZM_NODE_MAP, "rules file", err)) ||
	    (st = zm_node_check_keys(root, top_keys, "rules file", err)))
		return st;
	if ((list = zm_node_get(root, "rules"))) {
		if ((st = zm_node_expect(list, ZM_NODE_SEQ, "rules", err)))
			goto fail;
		if (list->count &&
		    !(r->rules = zm_calloc(list->count, sizeof(*r->rules)))) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
			goto fail;
		}
		for (i = 0; i < list->count; i++) {
			struct zm_gc_rule *rule = &r->rules[i];
			n = list->items[i];
			rule->line = n->line;
			rule->col = n->col;
			if ((st = zm_node_expect(n, ZM_NODE_MAP, "rule", err)) ||
			    (st = zm_node_check_keys(n, rule_keys, "rule", err)))
				goto fail;
			if (!zm_node_get(n, "when") || !zm_node_get(n, "level")) {
				st = zm_node_error(n, err, ZM_ERR_CONFIG,
				                   "a rule needs when and level");
				goto fail;
			}
			st = cond_parse(zm_node_get(n, "when"), 0, &rule->when,
			                err);
			r->n_rules++;
			if (st != ZM_OK ||
			    (st = level_parse(zm_node_get(n, "level"),
			                      &rule->level, err)))
				goto fail;
		}
	}
	if ((n = zm_node_get(root, "default"))) {
		if ((st = level_parse(n, &r->dflt, err)))
			goto fail;
		r->has_default = true;
	}
	if ((n = zm_node_get(root, "share"))) {
		r->has_share = true;
		if ((st = cond_parse(n, 0, &r->share, err)))
			goto fail;
	}
	return ZM_OK;
fail:
	zm_gc_rules_release(r);
	return st;
}

enum zm_status zm_gc_rules_load(const char *path, struct zm_gc_rules *r,
                                struct zm_error *err)
{
	struct zm_node *root = NULL;
	enum zm_status st;

	zm_gc_rules_release(r);
	if ((st = zm_config_load(path, &root, err)))
		return st;
	st = zm_gc_rules_parse(root, r, err);
	zm_node_free(root);
	return st;
}

/* ---- inputs ---- */

void zm_gc_inputs_init(struct zm_gc_inputs *in)
{
	int l;

	memset(in, 0, sizeof(*in));
	zm_profile_init(&in->data);
	for (l = 0; l < 3; l++)
		in->latency_ms[l] = in->memory_mib[l] = NAN;
}

static void update_release(struct zm_gc_update *u, size_t n_layers)
{
	size_t l;

	free(u->model);
	free(u->slice);
	for (l = 0; u->delta && l < n_layers; l++)
		free(u->delta[l]);
	free(u->delta);
	zm_profile_release(&u->profile);
}

void zm_gc_inputs_release(struct zm_gc_inputs *in)
{
	size_t i;

	for (i = 0; i < in->n_models; i++) {
		free(in->models[i].name);
		zm_model_free(in->models[i].model);
		zm_profile_release(&in->models[i].profile);
	}
	free(in->models);
	for (i = 0; i < in->n_updates; i++)
		update_release(&in->updates[i], in->arch->n_layers);
	free(in->updates);
	for (i = 0; i < in->n_logs; i++) {
		free(in->logs[i].model);
		free(in->logs[i].step);
		free(in->logs[i].loss);
	}
	free(in->logs);
	zm_profile_release(&in->data);
	zm_arch_free(in->arch);
	zm_gc_inputs_init(in);
}

const struct zm_gc_model *zm_gc_find_model(const struct zm_gc_inputs *in,
                                           const char *name)
{
	size_t i;

	for (i = 0; i < in->n_models; i++)
		if (strcmp(in->models[i].name, name) == 0)
			return &in->models[i];
	return NULL;
}

/* Grows an array of elem-sized items to hold one more. */
static bool grow(void **arr, size_t n, size_t elem)
{
	size_t bytes;
	void *p;

	if (!zm_size_mul(n + 1, elem, &bytes) || !(p = zm_realloc(*arr, bytes)))
		return false;
	*arr = p;
	memset((char *)p + n * elem, 0, elem);
	return true;
}

enum zm_status zm_gc_add_model(struct zm_gc_inputs *in, const char *name,
                               const struct zm_model *model,
                               struct zm_error *err)
{
	struct zm_gc_model *m;
	enum zm_status st;
	struct zm_doc *extra;

	if (!name)
		name = model->name;
	ZM_ASSERT(name != NULL);
	if (zm_gc_find_model(in, name))
		return ZM_OK;
	if (in->arch) {
		if ((st = zm_model_same_arch(in->arch, model->arch, err)))
			return zm_error_prefix(err, "model '%s': ", name);
	} else if ((st = zm_arch_copy(model->arch, &in->arch, err))) {
		return st;
	}
	if (!grow((void **)&in->models, in->n_models, sizeof(*in->models)))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	m = &in->models[in->n_models];
	zm_profile_init(&m->profile);
	if (!(m->name = zm_strdup(name)))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	if ((st = zm_model_copy(model, &m->model, err))) {
		free(m->name);
		return st;
	}
	extra = &m->model->extra;
	if (zm_doc_find(extra, "profile.count")) {
		st = zm_profile_from_doc(&m->profile, extra, err);
		if (st != ZM_OK) {
			free(m->name);
			zm_model_free(m->model);
			return zm_error_prefix(err, "model '%s': ", name);
		}
	}
	in->n_models++;
	return ZM_OK;
}

/* A metadata number, dflt when absent; false when malformed. */
static bool meta_number(const struct zm_doc *doc, const char *key,
                        double dflt, double *out)
{
	const char *s = zm_doc_meta(doc, key);

	*out = dflt;
	return !s || zm_parse_double(s, out);
}

/* Reads one parameter delta into dst (count floats) after checking its
 * shape against the model's tensor. */
static enum zm_status read_delta(const struct zm_doc *doc, const char *source,
                                 const struct zm_tensor *ref,
                                 float *dst, struct zm_error *err)
{
	const struct zm_tensor *t = zm_doc_find(doc, ref->name);
	size_t i, n = zm_tensor_numel(ref);
	char a[64], b[64];

	if (!t)
		return zm_error_set(err, ZM_ERR_FORMAT, "%s: no delta '%s'",
		                    source, ref->name);
	if (!zm_dtype_is_float(t->dtype) || t->ndim != ref->ndim ||
	    memcmp(t->shape, ref->shape, sizeof(int64_t) * (size_t)t->ndim)) {
		zm_shape_format(t->ndim, t->shape, a, sizeof(a));
		zm_shape_format(ref->ndim, ref->shape, b, sizeof(b));
		return zm_error_set(err, ZM_ERR_FORMAT, "%s: delta '%s' is %s "
		                    "%s, the model's is F32 %s", source,
		                    t->name, zm_dtype_name(t->dtype), a, b);
	}
	zm_tensor_read_f32(t, 0, n, dst);
	for (i = 0; i < n; i++)
		if (!isfinite(dst[i]))
			return zm_error_set(err, ZM_ERR_DATA, "%s: delta '%s' "
			                    "element %zu is not finite", source,
			                    t->name, i);
	return ZM_OK;
}

enum zm_status zm_gc_add_update(struct zm_gc_inputs *in,
                                const struct zm_doc *doc, const char *source,
                                struct zm_error *err)
{
	const struct zm_gc_model *m;
	struct zm_gc_update *u;
	const char *kind = zm_doc_meta(doc, "zm.kind");
	const char *name = zm_doc_meta(doc, "zm.name");
	const char *slice = zm_doc_meta(doc, "zm.slice");
	enum zm_status st;
	size_t l, nl;

	if (!kind || strcmp(kind, "update") != 0)
		return zm_error_set(err, ZM_ERR_FORMAT, "%s: not an update "
		                    "document (zm.kind is %s)", source,
		                    kind ? kind : "missing");
	if (!name)
		return zm_error_set(err, ZM_ERR_FORMAT, "%s: update without "
		                    "zm.name", source);
	if (!(m = zm_gc_find_model(in, name)))
		return zm_error_set(err, ZM_ERR_NOTFOUND, "%s: model '%s' is "
		                    "not in the zoo", source, name);
	if (!grow((void **)&in->updates, in->n_updates, sizeof(*in->updates)))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	u = &in->updates[in->n_updates];
	zm_profile_init(&u->profile);
	nl = in->arch->n_layers;
	if (!meta_number(doc, "zm.weight", 1, &u->weight) ||
	    !meta_number(doc, "zm.samples", 1, &u->samples) ||
	    !(u->weight >= 0) || !(u->samples >= 0)) {
		st = zm_error_set(err, ZM_ERR_DATA, "%s: zm.weight and "
		                  "zm.samples must be non-negative numbers",
		                  source);
		goto fail;
	}
	if (!(u->model = zm_strdup(name)) ||
	    (slice && !(u->slice = zm_strdup(slice))) ||
	    !(u->delta = zm_calloc(nl, sizeof(*u->delta))))
		goto nomem;
	for (l = 0; l < nl; l++) {
		const struct zm_layer *ly = &m->model->layers[l];
		size_t nw, nb, total;
		if (!ly->spec->has_params)
			continue;
		nw = zm_tensor_numel(&ly->weight);
		nb = zm_tensor_numel(&ly->bias);
		if (!zm_size_add(nw, nb, &total) ||
		    !(u->delta[l] = zm_calloc(total, sizeof(float))))
			goto nomem;
		if ((st = read_delta(doc, source, &ly->weight, u->delta[l],
		                     err)) ||
		    (st = read_delta(doc, source, &ly->bias, u->delta[l] + nw,
		                     err)))
			goto fail;
	}
	if (zm_doc_find(doc, "profile.count") &&
	    (st = zm_profile_from_doc(&u->profile, doc, err))) {
		zm_error_prefix(err, "%s: ", source);
		goto fail;
	}
	in->n_updates++;
	return ZM_OK;
nomem:
	st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
fail:
	update_release(u, nl);
	memset(u, 0, sizeof(*u));
	return st;
}

static struct zm_gc_log *find_log(struct zm_gc_inputs *in, const char *model)
{
	size_t i;

	for (i = 0; i < in->n_logs; i++)
		if (strcmp(in->logs[i].model, model) == 0)
			return &in->logs[i];
	if (!grow((void **)&in->logs, in->n_logs, sizeof(*in->logs)))
		return NULL;
	if (!(in->logs[in->n_logs].model = zm_strdup(model)))
		return NULL;
	in->logs[in->n_logs].train_loss = NAN;
	in->logs[in->n_logs].val_loss = NAN;
	in->logs[in->n_logs].val_acc = NAN;
	return &in->logs[in->n_logs++];
}

/* A number field of a log line; NaN when absent, false when not a number
 * (zm_json_float writes null for non-finite values, which reads as NaN). */
static bool log_number(const struct zm_node *obj, const char *key,
                       double *out)
{
	const struct zm_node *n = zm_node_get(obj, key);

	*out = NAN;
	if (!n)
		return true;
	if (n->type != ZM_NODE_SCALAR)
		return false;
	if (n->plain && strcmp(n->value, "null") == 0)
		return true;
	return n->plain && zm_parse_double(n->value, out);
}

enum zm_status zm_gc_add_log(struct zm_gc_inputs *in, const char *bytes,
                             size_t len, const char *source,
                             struct zm_error *err)
{
	size_t pos = 0, line = 0;
	enum zm_status st = ZM_OK;

	while (pos < len && st == ZM_OK) {
		const char *s = bytes + pos, *nl = memchr(s, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - s) : len - pos;
		struct zm_node *root = NULL;
		const struct zm_node *model, *end;
		struct zm_gc_log *lg;
		double step, loss, v;
		size_t k;

		pos += n + (nl != NULL);
		line++;
		for (k = 0; k < n && (s[k] == ' ' || s[k] == '\t' ||
		                      s[k] == '\r'); k++)
			;
		if (k == n)
			continue;
		if (s[k] != '{') {
			st = zm_error_set(err, ZM_ERR_FORMAT, "%s:%zu: expected "
			                  "a JSON object", source, line);
			break;
		}
		if ((st = zm_config_parse(s, n, source, &root, err))) {
			if (st == ZM_ERR_CONFIG)
				st = zm_error_set(err, ZM_ERR_FORMAT, "%s:%zu: "
				                  "invalid JSON", source, line);
			break;
		}
		model = zm_node_get(root, "model");
		if (root->type != ZM_NODE_MAP || !model ||
		    model->type != ZM_NODE_SCALAR || !zm_node_get(root, "loss")) {
			st = zm_error_set(err, ZM_ERR_FORMAT, "%s:%zu: expected "
			                  "\"model\" and \"loss\"", source, line);
			zm_node_free(root);
			break;
		}
		if (!log_number(root, "step", &step) ||
		    !log_number(root, "loss", &loss)) {
			st = zm_error_set(err, ZM_ERR_FORMAT, "%s:%zu: step and "
			                  "loss must be numbers", source, line);
			zm_node_free(root);
			break;
		}
		if (!(lg = find_log(in, model->value)) ||
		    !grow((void **)&lg->step, lg->n_points, sizeof(double)) ||
		    !grow((void **)&lg->loss, lg->n_points, sizeof(double))) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
			zm_node_free(root);
			break;
		}
		if (isnan(step))
			step = (double)lg->n_points;
		lg->step[lg->n_points] = step;
		lg->loss[lg->n_points++] = loss;
		end = zm_node_get(root, "epoch_end");
		if (end && end->type == ZM_NODE_SCALAR &&
		    strcmp(end->value, "true") == 0) {
			lg->epochs++;
			if (log_number(root, "train_loss", &v) && !isnan(v))
				lg->train_loss = v;
			if (log_number(root, "val_loss", &v))
				lg->val_loss = v;
			if (log_number(root, "val_acc", &v))
				lg->val_acc = v;
		}
		zm_node_free(root);
	}
	return st;
}

enum zm_status zm_gc_add_data(struct zm_gc_inputs *in,
                              const struct zm_doc *doc, const char *source,
                              struct zm_error *err)
{
	struct zm_tensor x;
	enum zm_status st;
	size_t n, d;

	zm_tensor_init(&x);
	if ((st = zm_data_check(doc, source, &n, err)) ||
	    (st = zm_data_features(doc, &x, err)))
		goto out;
	d = n ? zm_tensor_numel(&x) / n : 0;
	if (in->arch && n && d != in->arch->input_features) {
		st = zm_error_set(err, ZM_ERR_DATA, "%s: %zu features, the "
		                  "models expect %zu", source, d,
		                  in->arch->input_features);
		goto out;
	}
	if (n && (st = zm_profile_add_batch(&in->data, ZM_PROFILE_INPUT,
	                                    x.data, n, d, err)))
		zm_error_prefix(err, "%s: ", source);
	else
		in->has_data = true;
out:
	zm_tensor_release(&x);
	return st;
}

/* ---- analysis ---- */

void zm_gc_opts_init(struct zm_gc_opts *o)
{
	o->metric = ZM_METRIC_COSINE;
	o->window = 20;
	o->share_threshold = 0.5;
	o->drift_threshold = NAN;
	o->dflt = ZM_GRAN_GROUP;
	o->latency_budget_ms = NAN;
	o->memory_budget_mib = NAN;
}

double zm_gc_drift_threshold(const struct zm_gc_opts *o)
{
	if (!isnan(o->drift_threshold))
		return o->drift_threshold;
	switch (o->metric) {
	case ZM_METRIC_KL: return 1.0;
	case ZM_METRIC_MAHALANOBIS: return 0.5;
	default: return 0.1;
	}
}

void zm_gc_analysis_init(struct zm_gc_analysis *a)
{
	memset(a, 0, sizeof(*a));
	zm_gc_values_init(&a->values);
}

void zm_gc_analysis_release(struct zm_gc_analysis *a)
{
	int l;

	for (l = 0; l < 3; l++) {
		zm_gran_units_release(&a->level[l].units);
		free(a->level[l].agreement);
		free(a->level[l].delta_norm);
		free(a->level[l].pairs);
	}
	zm_buf_release(&a->lineage);
	zm_gc_analysis_init(a);
}

/* Least-squares slope of the last window points, over their mean. */
static double log_slope(const struct zm_gc_log *lg, size_t window)
{
	size_t i, n = lg->n_points < window ? lg->n_points : window;
	size_t first = lg->n_points - n;
	double mx = 0, my = 0, sxy = 0, sxx = 0;

	if (n < 2)
		return NAN;
	for (i = first; i < lg->n_points; i++) {
		mx += lg->step[i];
		my += lg->loss[i];
	}
	mx /= (double)n;
	my /= (double)n;
	for (i = first; i < lg->n_points; i++) {
		sxy += (lg->step[i] - mx) * (lg->loss[i] - my);
		sxx += (lg->step[i] - mx) * (lg->step[i] - mx);
	}
	if (sxx == 0 || my == 0 || !isfinite(sxy))
		return NAN;
	return sxy / sxx / my;
}

static void log_metrics(const struct zm_gc_inputs *in,
                        const struct zm_gc_opts *o, struct zm_gc_values *v)
{
	double slope = 0, loss = 0, acc = 0, gap = NAN, epochs = NAN;
	size_t i, ns = 0, nl = 0, na = 0;

	for (i = 0; i < in->n_logs; i++) {
		const struct zm_gc_log *lg = &in->logs[i];
		double s = log_slope(lg, o->window);
		if (!isnan(s)) {
			slope += s;
			ns++;
		}
		if (lg->epochs && (isnan(epochs) || lg->epochs < epochs))
			epochs = (double)lg->epochs;
		if (!isnan(lg->train_loss)) {
			loss += lg->train_loss;
			nl++;
			if (!isnan(lg->val_loss) &&
			    (isnan(gap) || lg->val_loss - lg->train_loss > gap))
				gap = lg->val_loss - lg->train_loss;
		}
		if (!isnan(lg->val_acc)) {
			acc += lg->val_acc;
			na++;
		}
	}
	v->v[ZM_GC_LOSS_SLOPE] = ns ? slope / (double)ns : NAN;
	v->v[ZM_GC_LOSS] = nl ? loss / (double)nl : NAN;
	v->v[ZM_GC_VAL_ACC] = na ? acc / (double)na : NAN;
	v->v[ZM_GC_VAL_GAP] = gap;
	v->v[ZM_GC_EPOCHS] = epochs;
}

/* Drift of query q from model m as defined in granctl.h. */
static enum zm_status drift_of(enum zm_metric metric,
                               const struct zm_profile_entry *q,
                               const struct zm_profile_entry *m,
                               double *out, struct zm_error *err)
{
	enum zm_status st;
	double s;

	if ((st = zm_similarity_entries(metric, q, m, ZM_SIM_FLOOR_AUTO, &s,
	                                err)))
		return st;
	*out = metric == ZM_METRIC_COSINE ? 1 - s : -s;
	return ZM_OK;
}

static const struct zm_profile_entry *input_entry(const struct zm_profile *p)
{
	const struct zm_profile_entry *e = zm_profile_find(p, ZM_PROFILE_INPUT);

	return e && e->count > 0 ? e : NULL;
}

static enum zm_status drift_metrics(const struct zm_gc_inputs *in,
                                    const struct zm_gc_opts *o,
                                    struct zm_gc_values *v, size_t *n_slices,
                                    struct zm_error *err)
{
	const struct zm_profile_entry **sl = NULL, *q, *me;
	double sum = 0, d, d2, best = NAN;
	size_t i, j, ns = 0, np = 0;
	enum zm_status st = ZM_OK;

	/* One profile per distinct slice (an update without a slice is its
	 * own); the first update of a slice stands for it, since every
	 * model of a slice trained on the same rows. */
	if (in->n_updates &&
	    !(sl = zm_calloc(in->n_updates, sizeof(*sl))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (i = 0; i < in->n_updates; i++) {
		const struct zm_gc_update *u = &in->updates[i];
		bool seen = false;
		for (j = 0; j < i && u->slice; j++)
			seen |= in->updates[j].slice &&
			        strcmp(in->updates[j].slice, u->slice) == 0;
		if (seen)
			continue;
		if ((q = input_entry(&u->profile)))
			sl[ns] = q;
		(*n_slices)++;
		ns += q != NULL;
	}
	for (i = 0; i < ns && st == ZM_OK; i++)
		for (j = i + 1; j < ns && st == ZM_OK; j++) {
			if ((st = drift_of(o->metric, sl[i], sl[j], &d, err)) ||
			    (st = drift_of(o->metric, sl[j], sl[i], &d2, err)))
				break;
			sum += (d + d2) / 2;
			np++;
		}
	free(sl);
	if (st != ZM_OK)
		return st;
	v->v[ZM_GC_SLICE_DRIFT] = np ? sum / (double)np : NAN;
	sum = 0;
	np = 0;
	for (i = 0; i < in->n_updates; i++) {
		const struct zm_gc_model *m = zm_gc_find_model(in,
		                                               in->updates[i].model);
		q = input_entry(&in->updates[i].profile);
		me = m ? input_entry(&m->profile) : NULL;
		if (!q || !me)
			continue;
		if ((st = drift_of(o->metric, q, me, &d, err)))
			return st;
		sum += d;
		np++;
	}
	v->v[ZM_GC_MODEL_DRIFT] = np ? sum / (double)np : NAN;
	if (in->has_data && (q = input_entry(&in->data))) {
		for (i = 0; i < in->n_models; i++) {
			if (!(me = input_entry(&in->models[i].profile)))
				continue;
			if ((st = drift_of(o->metric, q, me, &d, err)))
				return st;
			if (isnan(best) || d < best)
				best = d;
		}
	}
	v->v[ZM_GC_DATA_DRIFT] = best;
	d = NAN;
	for (i = ZM_GC_SLICE_DRIFT; i <= ZM_GC_DATA_DRIFT; i++)
		if (!isnan(v->v[i]) && (isnan(d) || v->v[i] > d))
			d = v->v[i];
	v->v[ZM_GC_DRIFT] = d;
	return ZM_OK;
}

/* A delta over all layers, and a pair of them with its weight. */
struct vec {
	const float *const *delta;   /* [n_layers], NULL entries: no params */
};

struct pair {
	size_t a, b;
	double w;
};

static size_t layer_len(const struct zm_gc_inputs *in, size_t l)
{
	const struct zm_layer *ly = &in->models[0].model->layers[l];

	if (!ly->spec->has_params)
		return 0;
	return zm_tensor_numel(&ly->weight) + zm_tensor_numel(&ly->bias);
}

static double dot(const float *x, const float *y, size_t n)
{
	double s = 0;
	size_t i;

	for (i = 0; i < n; i++)
		s += (double)x[i] * (double)y[i];
	return s;
}

/* Agreement and pairs of every unit of every level from per-layer dot
 * products of the pairs and per-layer squared norms of the vectors. */
static enum zm_status agreement(const struct zm_gc_inputs *in,
                                struct zm_gc_analysis *a,
                                const struct vec *vecs, size_t n_vecs,
                                const struct pair *pairs, size_t n_pairs,
                                struct zm_error *err)
{
	size_t nl = in->arch->n_layers, p, l, u, lv;
	double *dots = NULL, *sq = NULL;
	size_t cells;

	if (!zm_size_mul(n_pairs ? n_pairs : 1, nl, &cells) ||
	    !(dots = zm_calloc(cells, sizeof(double))) ||
	    !zm_size_mul(n_vecs ? n_vecs : 1, nl, &cells) ||
	    !(sq = zm_calloc(cells, sizeof(double)))) {
		free(dots);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	for (p = 0; p < n_vecs; p++)
		for (l = 0; vecs[p].delta && l < nl; l++)
			if (vecs[p].delta[l])
				sq[p * nl + l] = dot(vecs[p].delta[l],
				                     vecs[p].delta[l],
				                     layer_len(in, l));
	for (p = 0; p < n_pairs; p++)
		for (l = 0; l < nl; l++)
			if (vecs[pairs[p].a].delta[l] && vecs[pairs[p].b].delta[l])
				dots[p * nl + l] = dot(vecs[pairs[p].a].delta[l],
				                       vecs[pairs[p].b].delta[l],
				                       layer_len(in, l));
	for (lv = 0; lv < 3; lv++) {
		struct zm_gc_level_stats *s = &a->level[lv];
		for (u = 0; u < s->units.n_units; u++) {
			double num = 0, den = 0;
			for (p = 0; p < n_pairs; p++) {
				double d = 0, na = 0, nb = 0;
				for (l = 0; l < nl; l++) {
					if (s->units.layer_unit[l] != u)
						continue;
					d += dots[p * nl + l];
					na += sq[pairs[p].a * nl + l];
					nb += sq[pairs[p].b * nl + l];
				}
				if (na <= 0 || nb <= 0)
					continue;
				num += pairs[p].w * d / sqrt(na * nb);
				den += pairs[p].w;
				s->pairs[u]++;
			}
			s->agreement[u] = den > 0 ? num / den : NAN;
		}
	}
	free(dots);
	free(sq);
	return ZM_OK;
}

/* |delta_u| / |theta_u| per unit, mean over updates weighted by w n. */
static void delta_norms(const struct zm_gc_inputs *in,
                        struct zm_gc_analysis *a)
{
	size_t nl = in->arch->n_layers, i, l, u, lv;

	for (lv = 0; lv < 3; lv++) {
		struct zm_gc_level_stats *s = &a->level[lv];
		for (u = 0; u < s->units.n_units; u++) {
			double num = 0, den = 0;
			for (i = 0; i < in->n_updates; i++) {
				const struct zm_gc_update *up = &in->updates[i];
				const struct zm_gc_model *m =
					zm_gc_find_model(in, up->model);
				double dd = 0, tt = 0, w = up->weight * up->samples;
				for (l = 0; l < nl; l++) {
					const struct zm_layer *ly;
					size_t nw;
					if (s->units.layer_unit[l] != u ||
					    !up->delta[l])
						continue;
					ly = &m->model->layers[l];
					nw = zm_tensor_numel(&ly->weight);
					dd += dot(up->delta[l], up->delta[l],
					          layer_len(in, l));
					tt += dot(ly->weight.data,
					          ly->weight.data, nw) +
					      dot(ly->bias.data, ly->bias.data,
					          zm_tensor_numel(&ly->bias));
				}
				if (tt <= 0 || w <= 0)
					continue;
				num += w * sqrt(dd / tt);
				den += w;
			}
			s->delta_norm[u] = den > 0 ? num / den : NAN;
		}
	}
}

/* Builds the pairs (see granctl.h) and computes the agreement. */
static enum zm_status update_metrics(const struct zm_gc_inputs *in,
                                     struct zm_gc_analysis *a,
                                     struct zm_error *err)
{
	size_t nu = in->n_updates, nm = in->n_models, nl = in->arch->n_layers;
	struct vec *vecs = NULL;
	struct pair *pairs = NULL;
	float **avg = NULL;          /* [nm * nl] per-model FedAvg deltas */
	double *mw = NULL;
	size_t i, j, l, np = 0, cap;
	enum zm_status st = ZM_OK;

	if (!zm_size_mul(nu > nm ? nu : nm, nu > nm ? nu : nm, &cap) ||
	    !(pairs = zm_calloc(cap ? cap : 1, sizeof(*pairs))) ||
	    !(vecs = zm_calloc(nu + nm + 1, sizeof(*vecs))))
		goto nomem;
	for (i = 0; i < nu; i++) {
		const struct zm_gc_update *x = &in->updates[i];
		vecs[i].delta = (const float *const *)x->delta;
		for (j = 0; j < i; j++) {
			const struct zm_gc_update *y = &in->updates[j];
			if (!x->slice || !y->slice || strcmp(x->slice, y->slice) ||
			    strcmp(x->model, y->model) == 0)
				continue;
			pairs[np].a = j;
			pairs[np].b = i;
			pairs[np++].w = sqrt(x->weight * x->samples *
			                     y->weight * y->samples);
		}
	}
	a->slice_pairs = np > 0;
	if (np == 0 && nm > 1) {
		/* No common slice: each model's FedAvg delta, all pairs. */
		if (!zm_size_mul(nm, nl, &cap) ||
		    !(avg = zm_calloc(cap, sizeof(*avg))) ||
		    !(mw = zm_calloc(nm, sizeof(*mw))))
			goto nomem;
		for (i = 0; i < nu; i++) {
			const struct zm_gc_update *x = &in->updates[i];
			size_t m = (size_t)(zm_gc_find_model(in, x->model) -
			                    in->models);
			double w = x->weight * x->samples;
			mw[m] += w;
			for (l = 0; l < nl; l++) {
				size_t k, n = layer_len(in, l);
				if (!n)
					continue;
				if (!avg[m * nl + l] &&
				    !(avg[m * nl + l] = zm_calloc(n,
				                                  sizeof(float))))
					goto nomem;
				for (k = 0; k < n; k++)
					avg[m * nl + l][k] +=
						(float)(w * x->delta[l][k]);
			}
		}
		for (i = 0; i < nm; i++) {
			vecs[nu + i].delta = (const float *const *)&avg[i * nl];
			for (l = 0; l < nl && mw[i] > 0; l++) {
				size_t k, n = layer_len(in, l);
				for (k = 0; avg[i * nl + l] && k < n; k++)
					avg[i * nl + l][k] /= (float)mw[i];
			}
			for (j = 0; j < i; j++) {
				if (mw[i] <= 0 || mw[j] <= 0)
					continue;
				pairs[np].a = nu + j;
				pairs[np].b = nu + i;
				pairs[np++].w = sqrt(mw[i] * mw[j]);
			}
		}
	}
	st = agreement(in, a, vecs, nu + nm, pairs, np, err);
	goto out;
nomem:
	st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
out:
	for (i = 0; avg && i < nm * nl; i++)
		free(avg[i]);
	free(avg);
	free(mw);
	free(vecs);
	free(pairs);
	return st;
}

/* The lineage of every two models: shared units average deltas, which
 * means something only where the models' units correspond. */
static enum zm_status lineage_pairs(const struct zm_gc_inputs *in,
                                    struct zm_gc_analysis *a,
                                    struct zm_error *err)
{
	size_t i, j;
	enum zm_status st;

	for (i = 0; i < in->n_models; i++) {
		for (j = i + 1; j < in->n_models; j++) {
			const struct zm_gc_model *x = &in->models[i];
			const struct zm_gc_model *y = &in->models[j];
			struct zm_lineage_info info;
			if ((st = zm_lineage_related(x->model, y->model, &info,
			                             err)))
				return st;
			zm_buf_printf(&a->lineage, "%s %s: ", x->name, y->name);
			zm_lineage_describe(&info, x->model->arch, &a->lineage);
			zm_buf_puts(&a->lineage, "\n");
			if (info.verdict != ZM_LINEAGE_RELATED &&
			    !a->unrelated[0])
				snprintf(a->unrelated, sizeof(a->unrelated),
				         "models '%s' and '%s' are %s by %s",
				         x->name, y->name,
				         zm_lineage_verdict_name(info.verdict),
				         zm_lineage_basis_name(info.basis));
		}
	}
	if (a->lineage.failed)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	return ZM_OK;
}

enum zm_status zm_gc_analyze(const struct zm_gc_inputs *in,
                             const struct zm_gc_opts *o,
                             struct zm_gc_analysis *a, struct zm_error *err)
{
	struct zm_gc_values *v = &a->values;
	struct zm_gc_level_stats *ls;
	enum zm_status st;
	size_t lv, u, n_slices = 0;
	double lo = NAN, hi = NAN;

	zm_gc_analysis_release(a);
	if (!in->n_models || !in->arch)
		return zm_error_set(err, ZM_ERR_USAGE, "no model to decide "
		                    "for");
	for (lv = 0; lv < 3; lv++) {
		size_t n;
		ls = &a->level[lv];
		if ((st = zm_gran_units_init(&ls->units, (enum zm_gran_level)lv,
		                             in->arch, err)))
			goto fail;
		n = ls->units.n_units;
		if (!(ls->agreement = zm_calloc(n, sizeof(double))) ||
		    !(ls->delta_norm = zm_calloc(n, sizeof(double))) ||
		    !(ls->pairs = zm_calloc(n, sizeof(size_t)))) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
			goto fail;
		}
		for (u = 0; u < n; u++)
			ls->agreement[u] = ls->delta_norm[u] = NAN;
	}
	log_metrics(in, o, v);
	if ((st = drift_metrics(in, o, v, &n_slices, err)))
		goto fail;
	if ((st = update_metrics(in, a, err)))
		goto fail;
	delta_norms(in, a);
	v->v[ZM_GC_AGREEMENT] = a->level[ZM_GRAN_FULL].agreement[0];
	v->v[ZM_GC_DELTA_NORM] = a->level[ZM_GRAN_FULL].delta_norm[0];
	ls = &a->level[ZM_GRAN_LAYER];
	for (u = 0; u < ls->units.n_units; u++) {
		double x = ls->agreement[u];
		if (isnan(x))
			continue;
		if (isnan(lo) || x < lo)
			lo = x;
		if (isnan(hi) || x > hi)
			hi = x;
	}
	v->v[ZM_GC_AGREEMENT_MIN] = lo;
	v->v[ZM_GC_AGREEMENT_MAX] = hi;
	v->v[ZM_GC_AGREEMENT_SPREAD] = hi - lo;
	for (lv = 0; lv < 3; lv++) {
		v->v[ZM_GC_LATENCY_FULL_MS + lv] = in->latency_ms[lv];
		v->v[ZM_GC_MEMORY_FULL_MIB + lv] = in->memory_mib[lv];
		if (!isnan(in->latency_ms[lv]) &&
		    !(in->latency_ms[lv] <= v->v[ZM_GC_LATENCY_MS]))
			v->v[ZM_GC_LATENCY_MS] = in->latency_ms[lv];
		if (!isnan(in->memory_mib[lv]) &&
		    !(in->memory_mib[lv] <= v->v[ZM_GC_MEMORY_MIB]))
			v->v[ZM_GC_MEMORY_MIB] = in->memory_mib[lv];
	}
	v->v[ZM_GC_MODELS] = (double)in->n_models;
	v->v[ZM_GC_UPDATES] = (double)in->n_updates;
	v->v[ZM_GC_SLICES] = (double)n_slices;
	if ((st = lineage_pairs(in, a, err)))
		goto fail;
	return ZM_OK;
fail:
	zm_gc_analysis_release(a);
	return st;
}

/* ---- decision ---- */

/* Appends "name value" for a known metric. */
static void say_metric(struct zm_buf *b, const struct zm_gc_values *v,
                       enum zm_gc_metric m)
{
	if (!isnan(v->v[m]))
		zm_buf_printf(b, "; %s %.4g", zm_gc_metric_name(m), v->v[m]);
}

/* The automatic policy's level (see granctl(1)), with its reason. */
static enum zm_gran_level auto_level(const struct zm_gc_analysis *a,
                                     const struct zm_gc_opts *o,
                                     struct zm_buf *why)
{
	const struct zm_gc_values *v = &a->values;
	const struct zm_gc_level_stats *ls = &a->level[ZM_GRAN_LAYER];
	const struct zm_gc_level_stats *gs = &a->level[ZM_GRAN_GROUP];
	double thr = o->share_threshold, dthr = zm_gc_drift_threshold(o);
	size_t l, l2;
	bool mixed_group = false;

	if (zm_gc_compare(v->v[ZM_GC_DRIFT], ZM_GC_GT, dthr)) {
		zm_buf_printf(why, "auto: drift %.4g > %.4g: slices drift "
		              "apart, go finer", v->v[ZM_GC_DRIFT], dthr);
		return ZM_GRAN_LAYER;
	}
	if (isnan(v->v[ZM_GC_AGREEMENT_MIN])) {
		zm_buf_printf(why, "auto: no update agreement (no two models' "
		              "updates to compare): default level");
		return o->dflt;
	}
	if (v->v[ZM_GC_AGREEMENT_MIN] >= thr) {
		zm_buf_printf(why, "auto: every layer's updates agree "
		              "(agreement_min %.4g >= %.4g): go coarser",
		              v->v[ZM_GC_AGREEMENT_MIN], thr);
		return ZM_GRAN_FULL;
	}
	/* The group level can express the layer level's sharing exactly
	 * when every group's layers fall on the same side of the threshold
	 * (layers without agreement follow their group). */
	for (l = 0; l < ls->units.n_layers && !mixed_group; l++)
		for (l2 = 0; l2 < l && !mixed_group; l2++) {
			double x = ls->agreement[ls->units.layer_unit[l]];
			double y = ls->agreement[ls->units.layer_unit[l2]];
			if (gs->units.layer_unit[l] != gs->units.layer_unit[l2] ||
			    isnan(x) || isnan(y))
				continue;
			mixed_group = (x >= thr) != (y >= thr);
		}
	if (!mixed_group && gs->units.n_units > 1) {
		zm_buf_printf(why, "auto: agreement differs between groups, "
		              "not within them (agreement_min %.4g, "
		              "agreement_max %.4g, threshold %.4g)",
		              v->v[ZM_GC_AGREEMENT_MIN],
		              v->v[ZM_GC_AGREEMENT_MAX], thr);
		return ZM_GRAN_GROUP;
	}
	zm_buf_printf(why, "auto: agreement differs by layer (agreement_min "
	              "%.4g < %.4g <= agreement_max %.4g): go finer",
	              v->v[ZM_GC_AGREEMENT_MIN], thr,
	              v->v[ZM_GC_AGREEMENT_MAX]);
	return ZM_GRAN_LAYER;
}

/* The measured cost of a level that breaks a budget, or false. */
static bool over_budget(const struct zm_gc_values *v,
                        const struct zm_gc_opts *o, enum zm_gran_level lv,
                        struct zm_buf *why)
{
	double ms = v->v[ZM_GC_LATENCY_FULL_MS + lv];
	double mib = v->v[ZM_GC_MEMORY_FULL_MIB + lv];

	if (zm_gc_compare(ms, ZM_GC_GT, o->latency_budget_ms)) {
		zm_buf_printf(why, "; %s level takes %.4g ms > latency budget "
		              "%.4g ms", zm_gran_level_name(lv), ms,
		              o->latency_budget_ms);
		return true;
	}
	if (zm_gc_compare(mib, ZM_GC_GT, o->memory_budget_mib)) {
		zm_buf_printf(why, "; %s level needs %.4g MiB > memory budget "
		              "%.4g MiB", zm_gran_level_name(lv), mib,
		              o->memory_budget_mib);
		return true;
	}
	return false;
}

enum zm_status zm_gc_decide(const struct zm_gc_analysis *a,
                            const struct zm_gc_rules *rules,
                            const struct zm_gc_opts *o,
                            struct zm_gran_decision *d, struct zm_error *err)
{
	const struct zm_gc_level_stats *ls;
	enum zm_gran_level level;
	struct zm_buf why, uw;
	enum zm_status st = ZM_OK;
	size_t i, u;

	zm_gran_decision_release(d);
	zm_buf_init(&why);
	zm_buf_init(&uw);
	if (rules) {
		bool matched = false;
		level = rules->has_default ? rules->dflt : o->dflt;
		for (i = 0; i < rules->n_rules && !matched; i++) {
			if (!zm_gc_cond_eval(&rules->rules[i].when, &a->values))
				continue;
			matched = true;
			level = rules->rules[i].level;
			zm_buf_printf(&why, "rule %zu (line %d): ", i + 1,
			              rules->rules[i].line);
			zm_gc_cond_format(&rules->rules[i].when, &why);
		}
		if (!matched)
			zm_buf_printf(&why, "no rule matched: %s level",
			              rules->has_default ? "default" :
			              "built-in default");
	} else {
		level = auto_level(a, o, &why);
	}
	say_metric(&why, &a->values, ZM_GC_LOSS_SLOPE);
	say_metric(&why, &a->values, ZM_GC_VAL_GAP);
	while (level != ZM_GRAN_FULL && over_budget(&a->values, o, level, &why)) {
		level = (enum zm_gran_level)(level - 1);
		zm_buf_printf(&why, ": coarser, %s", zm_gran_level_name(level));
	}
	d->level = level;
	if (why.failed || !(d->reason = zm_strdup(why.data)))
		goto nomem;
	ls = &a->level[level];
	for (u = 0; u < ls->units.n_units; u++) {
		struct zm_gc_values uv = a->values;
		double ag = ls->agreement[u];
		bool shared;
		uv.v[ZM_GC_AGREEMENT] = ag;
		uv.v[ZM_GC_DELTA_NORM] = ls->delta_norm[u];
		uw.len = 0;
		if (uw.data)
			uw.data[0] = '\0';
		if (a->unrelated[0]) {
			shared = false;
			zm_buf_printf(&uw, "%s: never shared", a->unrelated);
		} else if (rules && rules->has_share) {
			shared = zm_gc_cond_eval(&rules->share, &uv);
			zm_buf_puts(&uw, shared ? "share rule holds: " :
			            "share rule fails: ");
			zm_gc_cond_format(&rules->share, &uw);
		} else if (isnan(ag)) {
			shared = false;
			zm_buf_puts(&uw, "no agreement measured: independent");
		} else {
			shared = ag >= o->share_threshold;
			zm_buf_printf(&uw, "updates %s (agreement %.4g %s %.4g)",
			              shared ? "agree" : "conflict", ag,
			              shared ? ">=" : "<", o->share_threshold);
		}
		if (!isnan(ls->delta_norm[u]))
			zm_buf_printf(&uw, "; delta_norm %.4g", ls->delta_norm[u]);
		zm_buf_printf(&uw, "; pairs %zu", ls->pairs[u]);
		if (uw.failed)
			goto nomem;
		if ((st = zm_gran_decision_add(d, ls->units.names[u], shared,
		                               !isnan(ag), isnan(ag) ? 0 : ag,
		                               uw.data, err)))
			goto out;
	}
	goto out;
nomem:
	st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
out:
	if (st != ZM_OK)
		zm_gran_decision_release(d);
	zm_buf_release(&why);
	zm_buf_release(&uw);
	return st;
}

void zm_gc_explain(const struct zm_gc_analysis *a,
                   const struct zm_gran_decision *d, struct zm_buf *b)
{
	const struct zm_gc_level_stats *ls = &a->level[d->level];
	int m;
	size_t u;

	zm_buf_puts(b, "metric                  value\n");
	for (m = 0; m < ZM_GC_N_METRICS; m++) {
		if (isnan(a->values.v[m]))
			zm_buf_printf(b, "%-22s  -\n", zm_gc_metric_name(m));
		else
			zm_buf_printf(b, "%-22s  %.6g\n", zm_gc_metric_name(m),
			              a->values.v[m]);
	}
	zm_buf_printf(b, "agreement pairs: %s\n", a->slice_pairs ?
	              "updates of a common slice" :
	              "models over all their slices");
	if (a->lineage.len)
		zm_buf_printf(b, "\nlineage (alignment threshold %.2g):\n%s",
		              ZM_LINEAGE_THRESHOLD, a->lineage.data);
	zm_buf_printf(b, "\nlevel: %s\nreason: %s\n\n",
	              zm_gran_level_name(d->level), d->reason ? d->reason : "");
	zm_buf_puts(b, "unit                  shared  agreement  delta_norm  "
	            "reason\n");
	for (u = 0; u < d->n_units; u++) {
		const struct zm_gran_unit *un = &d->units[u];
		ptrdiff_t k = zm_gran_units_find(&ls->units, un->unit);
		double dn = k >= 0 ? ls->delta_norm[k] : NAN;
		zm_buf_printf(b, "%-20s  %-6s  ", un->unit,
		              un->shared ? "yes" : "no");
		if (un->has_agreement)
			zm_buf_printf(b, "%9.4f  ", un->agreement);
		else
			zm_buf_puts(b, "        -  ");
		if (isnan(dn))
			zm_buf_puts(b, "         -  ");
		else
			zm_buf_printf(b, "%10.4g  ", dn);
		zm_buf_printf(b, "%s\n", un->reason ? un->reason : "");
	}
}

/* ---- measuring a child ---- */

enum zm_status zm_gc_measure_child(char *const *argv, double *ms,
                                   double *mib, struct zm_error *err)
{
	const char *tmpdir = getenv("TMPDIR");
	char tmpl[4096];
	posix_spawn_file_actions_t fa;
	struct timespec t0, t1;
	struct rusage ru;
	char buf[512], *line;
	int fd, status, rc;
	ssize_t got;
	pid_t pid;

	/* The child's stderr goes to a file under TMPDIR, as for mktemp. */
	if (!tmpdir || !*tmpdir)
		tmpdir = "/tmp";
	if (snprintf(tmpl, sizeof(tmpl), "%s/zm-granctl.XXXXXX", tmpdir) >=
	    (int)sizeof(tmpl))
		return zm_error_set(err, ZM_ERR_IO, "TMPDIR is too long");
	if ((fd = mkstemp(tmpl)) < 0)
		return zm_error_errno(err, ZM_ERR_IO, "temporary file %s "
		                      "(TMPDIR)", tmpl);
	unlink(tmpl);
	if ((rc = posix_spawn_file_actions_init(&fa))) {
		close(fd);
		errno = rc;
		return zm_error_errno(err, ZM_ERR_IO, "posix_spawn");
	}
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, fd, 2);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc) {
		close(fd);
		errno = rc;
		return zm_error_errno(err, ZM_ERR_IO, "cannot run %s", argv[0]);
	}
	while (wait4(pid, &status, 0, &ru) < 0) {
		if (errno != EINTR) {
			close(fd);
			return zm_error_errno(err, ZM_ERR_IO, "wait4");
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	*ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 +
	      (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	/* Linux reports ru_maxrss in KiB. */
	*mib = (double)ru.ru_maxrss / 1024.0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		close(fd);
		return ZM_OK;
	}
	/* The last line of the child's stderr says why. */
	buf[0] = '\0';
	if (lseek(fd, 0, SEEK_END) > 0) {
		off_t end = lseek(fd, 0, SEEK_END);
		off_t start = end > (off_t)sizeof(buf) - 1 ?
		              end - (off_t)sizeof(buf) + 1 : 0;
		got = pread(fd, buf, sizeof(buf) - 1, start);
		buf[got > 0 ? got : 0] = '\0';
	}
	close(fd);
	while (*buf && buf[strlen(buf) - 1] == '\n')
		buf[strlen(buf) - 1] = '\0';
	line = strrchr(buf, '\n');
	line = line ? line + 1 : buf;
	if (WIFSIGNALED(status))
		return zm_error_set(err, ZM_ERR_IO, "%s killed by signal %d%s%s",
		                    argv[0], WTERMSIG(status), *line ? ": " : "",
		                    line);
	return zm_error_set(err, ZM_ERR_IO, "%s exited with %d%s%s", argv[0],
	                    WEXITSTATUS(status), *line ? ": " : "", line);
}
