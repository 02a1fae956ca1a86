/*
 * granctl: comparisons and rules (table-driven), rules errors at line and
 * column, the log's loss slope against a closed form, agreement against a
 * naive weighted mean of pairwise cosines, delta norms, drift, the
 * automatic policy on crafted update streams, and the budget rule.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "granctl.h"
#include "lineage.h"
#include "model.h"
#include "stream.h"
#include "unit.h"

/* ---- comparisons ---- */

static const struct {
	double a;
	const char *op;
	double b;
	bool want;
} cmp_cases[] = {
	{ 1, ">", 0, true }, { 0, ">", 0, false }, { -1, ">", 0, false },
	{ 1, ">=", 1, true }, { 0.5, ">=", 1, false },
	{ -1, "<", 0, true }, { 0, "<", 0, false },
	{ 0, "<=", 0, true }, { 1, "<=", 0, false },
	{ 2, "==", 2, true }, { 2, "==", 3, false },
	{ 2, "!=", 3, true }, { 2, "!=", 2, false },
	{ NAN, ">", 0, false }, { NAN, "!=", 0, false }, { NAN, "<", 0, false },
	{ 0, "==", NAN, false },
};

START_TEST(test_compare)
{
	enum zm_gc_op op;

	ck_assert(zm_gc_op_parse(cmp_cases[_i].op, &op));
	ck_assert_str_eq(zm_gc_op_name(op), cmp_cases[_i].op);
	ck_assert_int_eq(zm_gc_compare(cmp_cases[_i].a, op, cmp_cases[_i].b),
	                 cmp_cases[_i].want);
}
END_TEST

START_TEST(test_names)
{
	enum zm_gc_metric m;
	enum zm_gc_op op;
	int i;

	for (i = 0; i < ZM_GC_N_METRICS; i++) {
		ck_assert(zm_gc_metric_parse(zm_gc_metric_name(i), &m));
		ck_assert_int_eq(m, i);
	}
	ck_assert(!zm_gc_metric_parse("speed", &m));
	ck_assert(!zm_gc_op_parse("=>", &op));
	ck_assert(!zm_gc_op_parse("=", &op));
}
END_TEST

/* ---- rules ---- */

static enum zm_status parse_rules(const char *text, struct zm_gc_rules *r,
                                  struct zm_error *err)
{
	struct zm_node *root = NULL;
	enum zm_status st;

	st = zm_config_parse(text, strlen(text), "r.yaml", &root, err);
	if (st == ZM_OK)
		st = zm_gc_rules_parse(root, r, err);
	zm_node_free(root);
	return st;
}

static const char rules_text[] =
	"rules:\n"
	"  - {when: {metric: latency_ms, op: \">\", value: 20}, level: full}\n"
	"  - {when: {all: [{metric: drift, op: \">\", value: 0.5},\n"
	"                  {metric: epochs, op: \">=\", value: 2}]}, level: layer}\n"
	"  - {when: {any: [{metric: val_gap, op: \">\", value: 1},\n"
	"                  {metric: loss_slope, op: \"<\", value: -0.01}]}, level: group}\n"
	"default: layer\n"
	"share: {metric: agreement, op: \">=\", value: 0.8}\n";

/* Metric values -> the index of the matching rule (-1: none). */
static const struct {
	double latency, drift, epochs, gap, slope;
	int want;
} rule_cases[] = {
	{ 25, 0.9, 5, 0, 0, 0 },         /* first match wins */
	{ 20, 0.9, 5, 0, 0, 1 },         /* > is strict */
	{ NAN, 0.9, 2, 0, 0, 1 },        /* unknown latency never matches */
	{ NAN, 0.9, 1, 0, 0, -1 },       /* all: needs both */
	{ NAN, 0.9, NAN, 2, 0, 2 },      /* any: one suffices */
	{ NAN, 0.1, 9, 0, -0.02, 2 },
	{ NAN, NAN, NAN, NAN, NAN, -1 },
};

START_TEST(test_rules_eval)
{
	struct zm_gc_rules r;
	struct zm_gc_values v;
	struct zm_error err;
	int match = -1;
	size_t i;

	zm_gc_rules_init(&r);
	ck_assert_int_eq(parse_rules(rules_text, &r, &err), ZM_OK);
	ck_assert_uint_eq(r.n_rules, 3);
	ck_assert(r.has_default && r.dflt == ZM_GRAN_LAYER);
	ck_assert(r.has_share);
	zm_gc_values_init(&v);
	v.v[ZM_GC_LATENCY_MS] = rule_cases[_i].latency;
	v.v[ZM_GC_DRIFT] = rule_cases[_i].drift;
	v.v[ZM_GC_EPOCHS] = rule_cases[_i].epochs;
	v.v[ZM_GC_VAL_GAP] = rule_cases[_i].gap;
	v.v[ZM_GC_LOSS_SLOPE] = rule_cases[_i].slope;
	for (i = 0; i < r.n_rules && match < 0; i++)
		if (zm_gc_cond_eval(&r.rules[i].when, &v))
			match = (int)i;
	ck_assert_int_eq(match, rule_cases[_i].want);
	v.v[ZM_GC_AGREEMENT] = 0.8;
	ck_assert(zm_gc_cond_eval(&r.share, &v));
	v.v[ZM_GC_AGREEMENT] = 0.79;
	ck_assert(!zm_gc_cond_eval(&r.share, &v));
	zm_gc_rules_release(&r);
}
END_TEST

static const struct {
	const char *text;
	const char *msg;
} bad_rules[] = {
	{ "rules:\n  - {when: {metric: speed, op: \">\", value: 1}, level: full}\n",
	  "r.yaml:2:21: unknown metric 'speed'" },
	{ "rules:\n  - {when: {metric: drift, op: \"=>\", value: 1}, level: full}\n",
	  "r.yaml:2:32: unknown op '=>'" },
	{ "rules:\n  - {when: {metric: drift, op: \">\", value: 1}, level: fine}\n",
	  "r.yaml:2:55: unknown level 'fine'" },
	{ "default: medium\n", "r.yaml:1:10: unknown level 'medium'" },
	{ "defaults: layer\n", "r.yaml:1:1:" },
	{ "rules:\n  - {when: {metric: drift, op: \">\", value: high}, level: full}\n",
	  "r.yaml:2:" },
	{ "rules:\n  - {when: {metric: drift, op: \">\"}, level: full}\n",
	  "needs metric, op and value" },
	{ "rules:\n  - {level: full}\n", "r.yaml:2:5: a rule needs when and level" },
	{ "rules:\n  - {when: {all: {metric: drift}}, level: full}\n", "r.yaml:2:" },
	{ "share: {metric: agreement, op: \">=\", value: 0.8, unit: x}\n",
	  "r.yaml:1:" },
	{ "rules: 3\n", "r.yaml:1:8:" },
};

START_TEST(test_rules_errors)
{
	struct zm_gc_rules r;
	struct zm_error err;

	zm_gc_rules_init(&r);
	ck_assert_int_eq(parse_rules(bad_rules[_i].text, &r, &err),
	                 ZM_ERR_CONFIG);
	ck_assert_msg(strstr(err.msg, bad_rules[_i].msg) != NULL,
	              "case %d: got '%s', want '%s'", _i, err.msg,
	              bad_rules[_i].msg);
	ck_assert_uint_eq(r.n_rules, 0);
	zm_gc_rules_release(&r);
}
END_TEST

/* ---- a tiny arch and crafted updates ---- */

static const char arch_json[] =
	"{\"input\":[3],\"layers\":["
	"{\"name\":\"fc1\",\"type\":\"dense\",\"units\":4,\"activation\":\"relu\","
	"\"group\":\"features\"},"
	"{\"name\":\"fc2\",\"type\":\"dense\",\"units\":2,\"group\":\"head\"}]}";

static struct zm_model *make_model(const char *name, uint64_t seed)
{
	struct zm_model *m = unit_model(arch_json, seed);   /* JSON is YAML */
	struct zm_error err;

	ck_assert_int_eq(zm_model_set_string(&m->name, name, &err), ZM_OK);
	/* One origin: related models, whose units may be shared. */
	ck_assert_int_eq(zm_lineage_set_origin(m, "init:test", &err), ZM_OK);
	return m;
}

/* An update document of model with deltas from fill(layer, index). */
static void make_update(struct zm_doc *doc, const struct zm_model *m,
                        const char *slice, double weight, double samples,
                        float (*fill)(size_t layer, size_t i, void *),
                        void *ctx)
{
	struct zm_error err;
	char num[32];
	size_t l, i, k;

	zm_doc_init(doc);
	for (l = 0; l < m->arch->n_layers; l++) {
		const struct zm_tensor *src[2] = { &m->layers[l].weight,
		                                   &m->layers[l].bias };
		size_t off = 0;
		for (k = 0; k < 2; k++) {
			struct zm_tensor t;
			zm_tensor_init(&t);
			ck_assert_int_eq(zm_tensor_alloc(&t, src[k]->name,
			                                 ZM_DTYPE_F32, src[k]->ndim,
			                                 src[k]->shape, &err), ZM_OK);
			for (i = 0; i < zm_tensor_numel(&t); i++)
				((float *)t.data)[i] = fill(l, off + i, ctx);
			off += zm_tensor_numel(&t);
			ck_assert_int_eq(zm_doc_add(doc, &t, &err), ZM_OK);
		}
	}
	ck_assert_int_eq(zm_doc_set_meta(doc, "zm.kind", "update", &err), ZM_OK);
	ck_assert_int_eq(zm_doc_set_meta(doc, "zm.name", m->name, &err), ZM_OK);
	if (slice)
		ck_assert_int_eq(zm_doc_set_meta(doc, "zm.slice", slice, &err),
		                 ZM_OK);
	snprintf(num, sizeof(num), "%.17g", weight);
	ck_assert_int_eq(zm_doc_set_meta(doc, "zm.weight", num, &err), ZM_OK);
	snprintf(num, sizeof(num), "%.17g", samples);
	ck_assert_int_eq(zm_doc_set_meta(doc, "zm.samples", num, &err), ZM_OK);
}

/* Deltas: +1 pattern on fc1 for both; on fc2 sign from ctx. */
static float fill_sign(size_t layer, size_t i, void *ctx)
{
	float s = *(float *)ctx;
	float base = (float)((i % 5) + 1) * 0.01f;

	return layer == 0 ? base : s * base;
}

/* Writes the documents with zm_writer to a file and reads them back into
 * the inputs, as granctl does with --updates. */
static void add_through_stream(struct zm_gc_inputs *in, struct zm_doc *docs,
                               size_t n)
{
	char path[512];
	struct zm_writer *w = NULL;
	struct zm_reader *r = NULL;
	struct zm_error err;
	struct zm_doc doc;
	bool eof = false;
	size_t i;

	snprintf(path, sizeof(path), "%s/u.safetensors.gz", unit_tmpdir());
	ck_assert_int_eq(zm_writer_open(&w, path, ZM_COMPRESS_AUTO, &err), ZM_OK);
	for (i = 0; i < n; i++)
		ck_assert_int_eq(zm_writer_write_doc(w, &docs[i], &err), ZM_OK);
	ck_assert_int_eq(zm_writer_commit(w, &err), ZM_OK);
	ck_assert_int_eq(zm_reader_open(&r, path, &err), ZM_OK);
	zm_doc_init(&doc);
	for (i = 0;; i++) {
		ck_assert_int_eq(zm_reader_next(r, &doc, &eof, &err), ZM_OK);
		if (eof)
			break;
		ck_assert_msg(zm_gc_add_update(in, &doc, "u", &err) == ZM_OK,
		              "%s", err.msg);
	}
	ck_assert_uint_eq(i, n);
	zm_doc_release(&doc);
	zm_reader_close(r);
}

START_TEST(test_auto_identical_and_opposite)
{
	struct zm_model *m1 = make_model("m1", 1), *m2 = make_model("m2", 2);
	struct zm_gc_inputs in;
	struct zm_gc_analysis a;
	struct zm_gran_decision d;
	struct zm_gc_opts o;
	struct zm_error err;
	struct zm_doc docs[2];
	float plus = 1, minus = -1;

	zm_gc_inputs_init(&in);
	zm_gc_analysis_init(&a);
	zm_gran_decision_init(&d);
	zm_gc_opts_init(&o);
	ck_assert_int_eq(zm_gc_add_model(&in, NULL, m1, &err), ZM_OK);
	ck_assert_int_eq(zm_gc_add_model(&in, NULL, m2, &err), ZM_OK);
	make_update(&docs[0], m1, "s", 0.5, 100, fill_sign, &plus);
	make_update(&docs[1], m2, "s", 0.5, 100, fill_sign, &minus);
	add_through_stream(&in, docs, 2);
	ck_assert_int_eq(zm_gc_analyze(&in, &o, &a, &err), ZM_OK);
	ck_assert(a.slice_pairs);
	ck_assert_double_eq_tol(a.level[ZM_GRAN_LAYER].agreement[0], 1, 1e-6);
	ck_assert_double_eq_tol(a.level[ZM_GRAN_LAYER].agreement[1], -1, 1e-6);
	ck_assert_uint_eq(a.level[ZM_GRAN_LAYER].pairs[0], 1);
	ck_assert_int_eq(zm_gc_decide(&a, NULL, &o, &d, &err), ZM_OK);
	/* One layer per group, so the group level expresses it too: the
	 * policy picks the coarser of the two equivalent levels. */
	ck_assert_int_eq(d.level, ZM_GRAN_GROUP);
	ck_assert_uint_eq(d.n_units, 2);
	ck_assert_str_eq(d.units[0].unit, "features");
	ck_assert(d.units[0].shared);
	ck_assert_str_eq(d.units[1].unit, "head");
	ck_assert(!d.units[1].shared);
	ck_assert(strstr(d.units[1].reason, "conflict") != NULL);
	ck_assert(d.reason && strstr(d.reason, "between groups") != NULL);
	/* Both layers in one group: only the layer level separates them. */
	zm_doc_release(&docs[0]);
	zm_doc_release(&docs[1]);
	zm_gran_decision_release(&d);
	zm_gc_analysis_release(&a);
	zm_gc_inputs_release(&in);
	zm_model_free(m1);
	zm_model_free(m2);
}
END_TEST

static const char arch_one_group[] =
	"{\"input\":[3],\"layers\":["
	"{\"name\":\"fc1\",\"type\":\"dense\",\"units\":4,\"activation\":\"relu\"},"
	"{\"name\":\"fc2\",\"type\":\"dense\",\"units\":2}]}";

START_TEST(test_auto_layer_level)
{
	struct zm_arch *arch = NULL;
	struct zm_model *m1 = NULL, *m2 = NULL;
	struct zm_gc_inputs in;
	struct zm_gc_analysis a;
	struct zm_gran_decision d;
	struct zm_gc_opts o;
	struct zm_error err;
	struct zm_doc docs[2];
	float plus = 1, minus = -1;

	ck_assert_int_eq(zm_arch_parse_json(arch_one_group,
	                                    strlen(arch_one_group), "t", &arch,
	                                    &err), ZM_OK);
	/* One initialisation: related models (lineage.h), so their units
	 * may be shared. */
	ck_assert_int_eq(zm_model_new(arch, 1, &m1, &err), ZM_OK);
	ck_assert_int_eq(zm_model_new(arch, 1, &m2, &err), ZM_OK);
	zm_gc_inputs_init(&in);
	zm_gc_analysis_init(&a);
	zm_gran_decision_init(&d);
	zm_gc_opts_init(&o);
	ck_assert_int_eq(zm_gc_add_model(&in, "m1", m1, &err), ZM_OK);
	ck_assert_int_eq(zm_gc_add_model(&in, "m2", m2, &err), ZM_OK);
	ck_assert_int_eq(zm_model_set_string(&m1->name, "m1", &err), ZM_OK);
	ck_assert_int_eq(zm_model_set_string(&m2->name, "m2", &err), ZM_OK);
	make_update(&docs[0], m1, "s", 1, 10, fill_sign, &plus);
	make_update(&docs[1], m2, "s", 1, 10, fill_sign, &minus);
	add_through_stream(&in, docs, 2);
	ck_assert_int_eq(zm_gc_analyze(&in, &o, &a, &err), ZM_OK);
	ck_assert_int_eq(zm_gc_decide(&a, NULL, &o, &d, &err), ZM_OK);
	ck_assert_int_eq(d.level, ZM_GRAN_LAYER);
	ck_assert_uint_eq(d.n_units, 2);
	ck_assert_str_eq(d.units[0].unit, "fc1");
	ck_assert(d.units[0].shared);
	ck_assert(d.units[0].has_agreement);
	ck_assert_str_eq(d.units[1].unit, "fc2");
	ck_assert(!d.units[1].shared);
	ck_assert_double_eq_tol(a.values.v[ZM_GC_AGREEMENT_SPREAD], 2, 1e-6);

	/* The budget rule: the layer level is too slow, group fits. */
	in.latency_ms[ZM_GRAN_FULL] = 1;
	in.latency_ms[ZM_GRAN_GROUP] = 5;
	in.latency_ms[ZM_GRAN_LAYER] = 50;
	o.latency_budget_ms = 10;
	ck_assert_int_eq(zm_gc_analyze(&in, &o, &a, &err), ZM_OK);
	ck_assert_double_eq(a.values.v[ZM_GC_LATENCY_MS], 50);
	ck_assert_int_eq(zm_gc_decide(&a, NULL, &o, &d, &err), ZM_OK);
	ck_assert_int_eq(d.level, ZM_GRAN_GROUP);
	ck_assert(strstr(d.reason, "latency budget") != NULL);
	/* Nothing fits: full. */
	o.latency_budget_ms = 0.5;
	ck_assert_int_eq(zm_gc_decide(&a, NULL, &o, &d, &err), ZM_OK);
	ck_assert_int_eq(d.level, ZM_GRAN_FULL);
	/* Memory too. */
	o.latency_budget_ms = NAN;
	in.memory_mib[ZM_GRAN_LAYER] = 900;
	in.memory_mib[ZM_GRAN_GROUP] = 100;
	o.memory_budget_mib = 512;
	ck_assert_int_eq(zm_gc_analyze(&in, &o, &a, &err), ZM_OK);
	ck_assert_int_eq(zm_gc_decide(&a, NULL, &o, &d, &err), ZM_OK);
	ck_assert_int_eq(d.level, ZM_GRAN_GROUP);
	ck_assert(strstr(d.reason, "memory budget") != NULL);

	zm_doc_release(&docs[0]);
	zm_doc_release(&docs[1]);
	zm_gran_decision_release(&d);
	zm_gc_analysis_release(&a);
	zm_gc_inputs_release(&in);
	zm_model_free(m1);
	zm_model_free(m2);
	zm_arch_free(arch);
}
END_TEST

/* Pseudo-random deltas from a seed in ctx. */
static float fill_rand(size_t layer, size_t i, void *ctx)
{
	unsigned s = *(unsigned *)ctx * 7919u + (unsigned)layer * 104729u +
	             (unsigned)i * 2654435761u;
	s ^= s >> 13;
	s *= 0x5bd1e995u;
	s ^= s >> 15;
	return (float)((int)(s % 2001u) - 1000) / 1000.0f;
}

/* Naive cosine of two models' delta documents over the given layers. */
static double naive_cos(const struct zm_doc *a, const struct zm_doc *b,
                        const char *const *names, size_t n)
{
	double ab = 0, aa = 0, bb = 0;
	size_t k, i;

	for (k = 0; k < n; k++) {
		const struct zm_tensor *x = zm_doc_find(a, names[k]);
		const struct zm_tensor *y = zm_doc_find(b, names[k]);
		for (i = 0; i < zm_tensor_numel(x); i++) {
			double p = ((float *)x->data)[i], q = ((float *)y->data)[i];
			ab += p * q;
			aa += p * p;
			bb += q * q;
		}
	}
	return ab / sqrt(aa * bb);
}

START_TEST(test_agreement_weighted_pairs)
{
	struct zm_model *m[3] = { make_model("a", 1), make_model("b", 2),
	                          make_model("c", 3) };
	static const char *const full[] = { "fc1.weight", "fc1.bias",
	                                    "fc2.weight", "fc2.bias" };
	static const char *const fc2[] = { "fc2.weight", "fc2.bias" };
	const double w[4] = { 0.2, 0.8, 0.5, 1.0 }, n[4] = { 10, 30, 7, 50 };
	const char *slice[4] = { "s", "s", "s", "t" };
	const int model[4] = { 0, 1, 2, 0 };
	unsigned seeds[4] = { 11, 12, 13, 14 };
	struct zm_gc_inputs in;
	struct zm_gc_analysis a;
	struct zm_gc_opts o;
	struct zm_error err;
	struct zm_doc docs[4];
	double num = 0, den = 0, num2 = 0, dnum = 0, dden = 0;
	size_t i, j, k;

	zm_gc_inputs_init(&in);
	zm_gc_analysis_init(&a);
	zm_gc_opts_init(&o);
	for (i = 0; i < 3; i++)
		ck_assert_int_eq(zm_gc_add_model(&in, NULL, m[i], &err), ZM_OK);
	for (i = 0; i < 4; i++)
		make_update(&docs[i], m[model[i]], slice[i], w[i], n[i],
		            fill_rand, &seeds[i]);
	add_through_stream(&in, docs, 4);
	ck_assert_int_eq(zm_gc_analyze(&in, &o, &a, &err), ZM_OK);
	ck_assert(a.slice_pairs);
	/* Pairs: the three updates of slice s (update 3 is alone on t). */
	for (i = 0; i < 3; i++)
		for (j = 0; j < i; j++) {
			double pw = sqrt(w[i] * n[i] * w[j] * n[j]);
			num += pw * naive_cos(&docs[i], &docs[j], full, 4);
			num2 += pw * naive_cos(&docs[i], &docs[j], fc2, 2);
			den += pw;
		}
	ck_assert_double_eq_tol(a.values.v[ZM_GC_AGREEMENT], num / den, 1e-6);
	ck_assert_uint_eq(a.level[ZM_GRAN_FULL].pairs[0], 3);
	ck_assert_double_eq_tol(a.level[ZM_GRAN_LAYER].agreement[1],
	                        num2 / den, 1e-6);
	ck_assert_double_eq(a.values.v[ZM_GC_SLICES], 2);
	ck_assert_double_eq(a.values.v[ZM_GC_UPDATES], 4);
	/* delta_norm of the whole model: sum_u w n |d_u|/|theta| / sum w n. */
	for (i = 0; i < 4; i++) {
		double dd = 0, tt = 0;
		const struct zm_model *mm = m[model[i]];
		for (k = 0; k < 4; k++) {
			const struct zm_tensor *x = zm_doc_find(&docs[i], full[k]);
			const struct zm_layer *ly = &mm->layers[k / 2];
			const struct zm_tensor *t = k % 2 ? &ly->bias : &ly->weight;
			size_t e;
			for (e = 0; e < zm_tensor_numel(x); e++) {
				double p = ((float *)x->data)[e];
				double q = ((float *)t->data)[e];
				dd += p * p;
				tt += q * q;
			}
		}
		dnum += w[i] * n[i] * sqrt(dd / tt);
		dden += w[i] * n[i];
	}
	ck_assert_double_eq_tol(a.values.v[ZM_GC_DELTA_NORM], dnum / dden, 1e-6);
	for (i = 0; i < 4; i++)
		zm_doc_release(&docs[i]);
	zm_gc_analysis_release(&a);
	zm_gc_inputs_release(&in);
	for (i = 0; i < 3; i++)
		zm_model_free(m[i]);
}
END_TEST

START_TEST(test_agreement_without_common_slice)
{
	struct zm_model *m[2] = { make_model("a", 1), make_model("b", 2) };
	static const char *const full[] = { "fc1.weight", "fc1.bias",
	                                    "fc2.weight", "fc2.bias" };
	unsigned seeds[3] = { 21, 22, 23 };
	struct zm_gc_inputs in;
	struct zm_gc_analysis a;
	struct zm_gc_opts o;
	struct zm_error err;
	struct zm_doc docs[3], avg;
	size_t i, k, e;

	zm_gc_inputs_init(&in);
	zm_gc_analysis_init(&a);
	zm_gc_opts_init(&o);
	for (i = 0; i < 2; i++)
		ck_assert_int_eq(zm_gc_add_model(&in, NULL, m[i], &err), ZM_OK);
	/* Model a trains on slices x (w n = 1 x 10) and y (2 x 20), b on z. */
	make_update(&docs[0], m[0], "x", 1, 10, fill_rand, &seeds[0]);
	make_update(&docs[1], m[0], "y", 2, 20, fill_rand, &seeds[1]);
	make_update(&docs[2], m[1], "z", 1, 5, fill_rand, &seeds[2]);
	add_through_stream(&in, docs, 3);
	ck_assert_int_eq(zm_gc_analyze(&in, &o, &a, &err), ZM_OK);
	ck_assert(!a.slice_pairs);
	/* Reference: a's FedAvg delta (10 d0 + 40 d1) / 50 against b's. */
	make_update(&avg, m[0], "x", 1, 1, fill_rand, &seeds[0]);
	for (k = 0; k < 4; k++) {
		struct zm_tensor *t = zm_doc_find(&avg, full[k]);
		const struct zm_tensor *x = zm_doc_find(&docs[1], full[k]);
		for (e = 0; e < zm_tensor_numel(t); e++)
			((float *)t->data)[e] = (10 * ((float *)t->data)[e] +
			                         40 * ((float *)x->data)[e]) / 50;
	}
	ck_assert_double_eq_tol(a.values.v[ZM_GC_AGREEMENT],
	                        naive_cos(&avg, &docs[2], full, 4), 1e-5);
	ck_assert_uint_eq(a.level[ZM_GRAN_FULL].pairs[0], 1);
	for (i = 0; i < 3; i++)
		zm_doc_release(&docs[i]);
	zm_doc_release(&avg);
	zm_gc_analysis_release(&a);
	zm_gc_inputs_release(&in);
	for (i = 0; i < 2; i++)
		zm_model_free(m[i]);
}
END_TEST

START_TEST(test_update_errors)
{
	struct zm_model *m1 = make_model("m1", 1);
	struct zm_gc_inputs in;
	struct zm_error err;
	struct zm_doc doc;
	float plus = 1;

	zm_gc_inputs_init(&in);
	ck_assert_int_eq(zm_gc_add_model(&in, NULL, m1, &err), ZM_OK);
	make_update(&doc, m1, NULL, 1, 1, fill_sign, &plus);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.name", "other", &err), ZM_OK);
	ck_assert_int_eq(zm_gc_add_update(&in, &doc, "u", &err), ZM_ERR_NOTFOUND);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.name", "m1", &err), ZM_OK);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.kind", "model", &err), ZM_OK);
	ck_assert_int_eq(zm_gc_add_update(&in, &doc, "u", &err), ZM_ERR_FORMAT);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.kind", "update", &err), ZM_OK);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.weight", "-1", &err), ZM_OK);
	ck_assert_int_eq(zm_gc_add_update(&in, &doc, "u", &err), ZM_ERR_DATA);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.weight", "1", &err), ZM_OK);
	((float *)zm_doc_find(&doc, "fc2.bias")->data)[1] = NAN;
	ck_assert_int_eq(zm_gc_add_update(&in, &doc, "u", &err), ZM_ERR_DATA);
	ck_assert(strstr(err.msg, "fc2.bias") != NULL);
	ck_assert(zm_doc_remove(&doc, "fc1.weight"));
	ck_assert_int_eq(zm_gc_add_update(&in, &doc, "u", &err), ZM_ERR_FORMAT);
	ck_assert(strstr(err.msg, "fc1.weight") != NULL);
	ck_assert_uint_eq(in.n_updates, 0);
	zm_doc_release(&doc);
	zm_gc_inputs_release(&in);
	zm_model_free(m1);
}
END_TEST

/* ---- logs ---- */

START_TEST(test_log_slope)
{
	struct zm_model *m1 = make_model("m1", 1);
	struct zm_gc_inputs in;
	struct zm_gc_analysis a;
	struct zm_gc_opts o;
	struct zm_error err;
	struct zm_buf b;
	size_t s;

	zm_gc_inputs_init(&in);
	zm_gc_analysis_init(&a);
	zm_gc_opts_init(&o);
	o.window = 5;
	zm_buf_init(&b);
	/* Steps 0..9: the loss is 9 (noise) for the first five, then exactly
	 * 3 - 0.1 s: the last 5 points fit a line of slope -0.1 whose mean
	 * loss is 3 - 0.1 * 7 = 2.3. */
	for (s = 0; s < 10; s++)
		zm_buf_printf(&b, "{\"model\":\"m1\",\"epoch\":1,\"step\":%zu,"
		              "\"lr\":0.1,\"loss\":%.17g}\n", s,
		              s < 5 ? 9.0 : 3 - 0.1 * (double)s);
	zm_buf_puts(&b, "\n{\"model\":\"m1\",\"epoch\":1,\"step\":9,\"loss\":2.1,"
	            "\"epoch_end\":true,\"train_loss\":2.0,\"val_loss\":2.5,"
	            "\"val_acc\":0.75}\n");
	zm_buf_puts(&b, "{\"model\":\"m2\",\"epoch\":1,\"step\":1,\"loss\":1,"
	            "\"epoch_end\":true,\"train_loss\":1.0,\"val_loss\":1.25}\n");
	ck_assert(!b.failed);
	ck_assert_int_eq(zm_gc_add_log(&in, b.data, b.len, "l", &err), ZM_OK);
	ck_assert_uint_eq(in.n_logs, 2);
	ck_assert_int_eq(zm_gc_add_model(&in, NULL, m1, &err), ZM_OK);
	ck_assert_int_eq(zm_gc_analyze(&in, &o, &a, &err), ZM_OK);
	/* The window holds steps 6..9 and the epoch-end point (9, 2.1):
	 * x = 6,7,8,9,9; y = 2.4,2.3,2.2,2.1,2.1. */
	{
		double x[5] = { 6, 7, 8, 9, 9 }, y[5] = { 2.4, 2.3, 2.2, 2.1, 2.1 };
		double mx = 7.8, my = 0, sxy = 0, sxx = 0;
		int i;
		for (i = 0; i < 5; i++)
			my += y[i] / 5;
		for (i = 0; i < 5; i++) {
			sxy += (x[i] - mx) * (y[i] - my);
			sxx += (x[i] - mx) * (x[i] - mx);
		}
		/* m2 has a single point: no slope, so the mean is m1's. */
		ck_assert_double_eq_tol(a.values.v[ZM_GC_LOSS_SLOPE],
		                        sxy / sxx / my, 1e-12);
		ck_assert_double_eq_tol(sxy / sxx, -0.1, 1e-12);
	}
	ck_assert_double_eq_tol(a.values.v[ZM_GC_VAL_GAP], 0.5, 1e-12);
	ck_assert_double_eq(a.values.v[ZM_GC_EPOCHS], 1);
	ck_assert_double_eq_tol(a.values.v[ZM_GC_LOSS], 1.5, 1e-12);
	ck_assert_double_eq_tol(a.values.v[ZM_GC_VAL_ACC], 0.75, 1e-12);
	zm_buf_release(&b);
	zm_gc_analysis_release(&a);
	zm_gc_inputs_release(&in);
	zm_model_free(m1);
}
END_TEST

static const struct {
	const char *text;
	const char *msg;
} bad_logs[] = {
	{ "{\"model\":\"m\",\"loss\":1}\nnot json\n", "l:2: expected a JSON object" },
	{ "{\"loss\":1}\n", "l:1: expected \"model\" and \"loss\"" },
	{ "{\"model\":\"m\"}\n", "l:1: expected \"model\" and \"loss\"" },
	{ "{\"model\":\"m\",\"loss\":\"low\"}\n", "l:1: step and loss must be numbers" },
	{ "\n\n{\"model\":\"m\",\"loss\":[1,\n", "l:3: invalid JSON" },
};

START_TEST(test_log_errors)
{
	struct zm_gc_inputs in;
	struct zm_error err;

	zm_gc_inputs_init(&in);
	ck_assert_int_eq(zm_gc_add_log(&in, bad_logs[_i].text,
	                               strlen(bad_logs[_i].text), "l", &err),
	                 ZM_ERR_FORMAT);
	ck_assert_msg(strstr(err.msg, bad_logs[_i].msg) != NULL, "got '%s'",
	              err.msg);
	zm_gc_inputs_release(&in);
}
END_TEST

/* ---- drift ---- */

START_TEST(test_drift)
{
	struct zm_model *m1 = make_model("m1", 1), *m2 = make_model("m2", 2);
	struct zm_gc_inputs in;
	struct zm_gc_analysis a;
	struct zm_gc_opts o;
	struct zm_error err;
	struct zm_doc docs[2];
	struct zm_profile p;
	const float xa[3] = { 1, 0, 0 }, xb[3] = { 1, 1, 0 };
	const float xm[6] = { 0, 0, 1, 0, 0, 1 };
	float plus = 1;
	int i;

	zm_gc_inputs_init(&in);
	zm_gc_analysis_init(&a);
	zm_gc_opts_init(&o);
	/* Model m1's profile: mean (0, 0, 1). */
	zm_profile_init(&p);
	ck_assert_int_eq(zm_profile_add_batch(&p, "input", xm, 2, 3, &err), ZM_OK);
	ck_assert_int_eq(zm_profile_to_doc(&p, &m1->extra, &err), ZM_OK);
	zm_profile_release(&p);
	ck_assert_int_eq(zm_gc_add_model(&in, NULL, m1, &err), ZM_OK);
	ck_assert_int_eq(zm_gc_add_model(&in, NULL, m2, &err), ZM_OK);
	/* Slices a (mean (1,0,0)) and b (mean (1,1,0)). */
	for (i = 0; i < 2; i++) {
		make_update(&docs[i], i ? m2 : m1, i ? "b" : "a", 1, 1, fill_sign,
		            &plus);
		zm_profile_init(&p);
		ck_assert_int_eq(zm_profile_add_batch(&p, "input", i ? xb : xa, 1,
		                                      3, &err), ZM_OK);
		ck_assert_int_eq(zm_profile_to_doc(&p, &docs[i], &err), ZM_OK);
		zm_profile_release(&p);
	}
	add_through_stream(&in, docs, 2);
	ck_assert_int_eq(zm_gc_analyze(&in, &o, &a, &err), ZM_OK);
	/* cosine: 1 - cos((1,0,0), (1,1,0)) = 1 - 1/sqrt 2. */
	ck_assert_double_eq_tol(a.values.v[ZM_GC_SLICE_DRIFT],
	                        1 - 1 / sqrt(2), 1e-9);
	/* Only update a's model has a profile: 1 - cos((1,0,0),(0,0,1)) = 1. */
	ck_assert_double_eq_tol(a.values.v[ZM_GC_MODEL_DRIFT], 1, 1e-9);
	ck_assert_double_eq_tol(a.values.v[ZM_GC_DRIFT], 1, 1e-9);
	ck_assert(isnan(a.values.v[ZM_GC_DATA_DRIFT]));
	ck_assert_double_eq(zm_gc_drift_threshold(&o), 0.1);
	for (i = 0; i < 2; i++)
		zm_doc_release(&docs[i]);
	zm_gc_analysis_release(&a);
	zm_gc_inputs_release(&in);
	zm_model_free(m1);
	zm_model_free(m2);
}
END_TEST

START_TEST(test_measure_child)
{
	char *ok_argv[] = { "sh", "-c", "exit 0", NULL };
	char *bad_argv[] = { "sh", "-c", "echo first >&2; echo 'the reason' >&2; exit 3",
	                     NULL };
	char *none_argv[] = { "/nonexistent/predict", NULL };
	struct zm_error err;
	double ms = -1, mib = -1;

	ck_assert_int_eq(zm_gc_measure_child(ok_argv, &ms, &mib, &err), ZM_OK);
	ck_assert(ms >= 0 && ms < 60000);
	ck_assert(mib > 0);
	ck_assert_int_eq(zm_gc_measure_child(bad_argv, &ms, &mib, &err),
	                 ZM_ERR_IO);
	ck_assert_msg(strstr(err.msg, "sh exited with 3: the reason") != NULL,
	              "%s", err.msg);
	ck_assert_int_eq(zm_gc_measure_child(none_argv, &ms, &mib, &err),
	                 ZM_ERR_IO);
	ck_assert(strstr(err.msg, "/nonexistent/predict") != NULL);
}
END_TEST

/* The predict beside the running program (this runner): its directory
 * and the prefix of its name before self, else a PATH search naming
 * where it looked; the expectation comes from readlink and access. */
START_TEST(test_predict_program)
{
	char exe[4096], want[4096 + 16], buf[4096], beside[4096];
	const char *base, *got;
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	size_t dir_len, k;

	ck_assert(n > 0);
	exe[n] = '\0';
	base = strrchr(exe, '/') + 1;
	dir_len = (size_t)(base - exe);
	/* self the whole name (no prefix), then its last three letters (the
	 * rest a prefix, as zm- of zm-granctl). */
	for (k = 0; k < 2; k++) {
		const char *self = k == 0 ? base : base + strlen(base) - 3;
		size_t plen = (size_t)(self - base);

		snprintf(want, sizeof(want), "%.*s%.*spredict", (int)dir_len,
		         exe, (int)plen, base);
		got = zm_gc_predict_program(self, buf, sizeof(buf), beside,
		                            sizeof(beside));
		ck_assert_ptr_eq(got, buf);
		if (access(want, X_OK) == 0) {
			ck_assert_str_eq(got, want);
			ck_assert_str_eq(beside, "");
		} else {
			ck_assert_str_eq(beside, want);
			ck_assert_str_eq(got, want + dir_len);
		}
	}
	/* A buffer too small for the directory: plain "predict". */
	got = zm_gc_predict_program(base, buf, 8, beside, sizeof(beside));
	ck_assert_str_eq(got, "predict");
	ck_assert_str_eq(beside, "");
}
END_TEST

Suite *suite_granctl(void)
{
	Suite *s = suite_create("granctl");
	TCase *tc = tcase_create("core");

	tcase_add_loop_test(tc, test_compare, 0,
	                    (int)(sizeof(cmp_cases) / sizeof(cmp_cases[0])));
	tcase_add_test(tc, test_names);
	tcase_add_loop_test(tc, test_rules_eval, 0,
	                    (int)(sizeof(rule_cases) / sizeof(rule_cases[0])));
	tcase_add_loop_test(tc, test_rules_errors, 0,
	                    (int)(sizeof(bad_rules) / sizeof(bad_rules[0])));
	tcase_add_test(tc, test_auto_identical_and_opposite);
	tcase_add_test(tc, test_auto_layer_level);
	tcase_add_test(tc, test_agreement_weighted_pairs);
	tcase_add_test(tc, test_agreement_without_common_slice);
	tcase_add_test(tc, test_update_errors);
	tcase_add_test(tc, test_log_slope);
	tcase_add_loop_test(tc, test_log_errors, 0,
	                    (int)(sizeof(bad_logs) / sizeof(bad_logs[0])));
	tcase_add_test(tc, test_drift);
	tcase_add_test(tc, test_measure_child);
	tcase_add_test(tc, test_predict_program);
	suite_add_tcase(s, tc);
	return s;
}
