/*
 * granctl's metric and operator names and its rules
 * (zoomerge-granularity-rules(5)): parsing, evaluating and printing the
 * conditions.  See granctl.h for the definitions.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "granctl.h"
#include "mem.h"

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
