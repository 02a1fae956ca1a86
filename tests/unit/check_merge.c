/*
 * Merging: TIES trimming, DARE drops, SLERP and the accumulators against
 * hand-computed examples; per-layer weights from configs; streamed static
 * merges of model files (identity, normalisation, naive reference,
 * mismatched architectures); and applying updates to a zoo (FedAvg when
 * everything is shared, own deltas when nothing is, a partial decision,
 * stale bases, and faults that must leave every model at its old version).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "lineage.h"
#include "mem.h"
#include "merge.h"
#include "model.h"
#include "profile.h"
#include "random.h"
#include "stream.h"
#include "unit.h"
#include "zoo.h"

static const char arch_yaml[] =
	"input: [3]\n"
	"layers:\n"
	"  - {name: fc1, units: 4, activation: relu, group: features}\n"
	"  - {name: fc2, units: 3, activation: tanh, group: features}\n"
	"  - {name: out, units: 2, group: head}\n";

/* ---- kernels ---- */

START_TEST(test_ties_trim)
{
	float tau[5] = { 0.5f, -3.0f, 1.0f, -0.2f, 2.0f }, s[5];
	float t2[4] = { -3.0f, 1.0f, 1.0f, 0.2f };

	ck_assert_uint_eq(zm_merge_ties_trim(tau, 5, 0.4, s), 2);
	ck_assert(tau[0] == 0 && tau[1] == -3.0f && tau[2] == 0 &&
	          tau[3] == 0 && tau[4] == 2.0f);
	/* Ties at the threshold are kept. */
	ck_assert_uint_eq(zm_merge_ties_trim(t2, 4, 0.5, s), 3);
	ck_assert(t2[0] == -3.0f && t2[1] == 1.0f && t2[2] == 1.0f &&
	          t2[3] == 0);
	/* Density 1 keeps everything; a tiny density keeps one. */
	ck_assert_uint_eq(zm_merge_ties_trim(t2, 4, 1.0, s), 4);
	ck_assert_uint_eq(zm_merge_ties_trim(t2, 4, 1e-6, s), 1);
	ck_assert(t2[0] == -3.0f && t2[1] == 0 && t2[2] == 0);
}
END_TEST

/* Quickselect against sorting, on random data with many duplicates. */
START_TEST(test_ties_trim_vs_sort)
{
	struct zm_rng rng;
	float x[300], y[300], s[300], sorted[300];
	size_t n = 1 + (size_t)_i * 23 % 300, i, kept, k;
	double density = 0.05 + 0.9 * (_i % 7) / 6.0;
	float th;

	zm_rng_seed(&rng, (uint64_t)_i);
	for (i = 0; i < n; i++) {
		x[i] = (float)((int)zm_rng_below(&rng, 41) - 20) / 4.0f;
		y[i] = x[i];
		sorted[i] = fabsf(x[i]);
	}
	/* Insertion sort, descending. */
	for (i = 1; i < n; i++) {
		float v = sorted[i];
		size_t j = i;
		while (j > 0 && sorted[j - 1] < v) {
			sorted[j] = sorted[j - 1];
			j--;
		}
		sorted[j] = v;
	}
	k = (size_t)floor(density * (double)n + 0.5);
	if (k < 1)
		k = 1;
	th = sorted[(k < n ? k : n) - 1];
	kept = zm_merge_ties_trim(y, n, density, s);
	for (i = 0; i < n; i++)
		ck_assert(y[i] == (k >= n || fabsf(x[i]) >= th ? x[i] : 0.0f));
	ck_assert_uint_ge(kept, k < n ? k : n);
}
END_TEST

START_TEST(test_dare_drop)
{
	struct zm_rng a, b;
	float x[1000];
	size_t i, dropped = 0;

	for (i = 0; i < 1000; i++)
		x[i] = (float)i + 1;
	zm_rng_seed(&a, 42);
	zm_rng_seed(&b, 42);
	zm_merge_dare_drop(x, 1000, 0.75, &a);
	for (i = 0; i < 1000; i++) {
		double u = zm_rng_uniform(&b);
		if (u < 0.75) {
			ck_assert(x[i] == 0);
			dropped++;
		} else {
			ck_assert_float_eq_tol(x[i], ((float)i + 1) * 4.0f, 1e-3);
		}
	}
	ck_assert(dropped > 650 && dropped < 850);
	/* p = 0 changes nothing. */
	x[0] = 3;
	zm_merge_dare_drop(x, 1, 0.0, &a);
	ck_assert(x[0] == 3);
}
END_TEST

START_TEST(test_slerp)
{
	const float a[2] = { 1, 0 }, b[2] = { 0, 1 };
	const float c[2] = { 1, 2 }, d[2] = { 2, 4 };
	const float e[3] = { 1, 2, 3 }, f[3] = { -1, 0.5f, 2 };
	float out[3];
	double na, nf, ne, dot, w, t = 0.3;
	size_t i;

	ck_assert(!zm_merge_slerp(a, b, 2, 0.5, out));
	ck_assert_float_eq_tol(out[0], (float)sqrt(0.5), 1e-6);
	ck_assert_float_eq_tol(out[1], (float)sqrt(0.5), 1e-6);
	/* Endpoints. */
	zm_merge_slerp(e, f, 3, 0.0, out);
	for (i = 0; i < 3; i++)
		ck_assert_float_eq_tol(out[i], e[i], 1e-6);
	zm_merge_slerp(e, f, 3, 1.0, out);
	for (i = 0; i < 3; i++)
		ck_assert_float_eq_tol(out[i], f[i], 1e-6);
	/* The closed form at t = 0.3. */
	dot = 1 * -1 + 2 * 0.5 + 3 * 2;
	ne = sqrt(14);
	nf = sqrt(1 + 0.25 + 4);
	w = acos(dot / (ne * nf));
	zm_merge_slerp(e, f, 3, t, out);
	for (i = 0; i < 3; i++) {
		na = (sin((1 - t) * w) * e[i] + sin(t * w) * f[i]) / sin(w);
		ck_assert_float_eq_tol(out[i], na, 1e-5);
	}
	/* Colinear: linear interpolation. */
	ck_assert(zm_merge_slerp(c, d, 2, 0.25, out));
	ck_assert_float_eq_tol(out[0], 1.25f, 1e-6);
	ck_assert_float_eq_tol(out[1], 2.5f, 1e-6);
}
END_TEST

/* Runs an accumulator over k inputs of n values. */
static void acc_run(enum zm_merge_method m, const struct zm_merge_params *p,
                    const float *in, size_t k, size_t n, const double *w,
                    const float *base, float *out)
{
	struct zm_merge_acc acc;
	struct zm_error err;
	float x[16];
	size_t i;

	ck_assert_int_eq(zm_merge_acc_init(&acc, m, p, n, &err), ZM_OK);
	zm_merge_acc_begin(&acc, n);
	for (i = 0; i < k; i++) {
		memcpy(x, in + i * n, n * sizeof(float));
		zm_merge_acc_add(&acc, x, base, w[i]);
	}
	ck_assert_int_eq(zm_merge_acc_finish(&acc, base, out, &err), ZM_OK);
	zm_merge_acc_release(&acc);
}

START_TEST(test_acc_methods)
{
	struct zm_merge_params p;
	const float base[4] = { 0.5f, 0.5f, 0.5f, 0.5f };
	/* tau1 = {1, -2, 3, 0.1}, tau2 = {-3, 1, 1, 0.2} over base 0.5. */
	const float in[8] = { 1.5f, -1.5f, 3.5f, 0.6f, -2.5f, 1.5f, 1.5f, 0.7f };
	const double ones[2] = { 1, 1 }, w26[2] = { 2, 6 };
	float out[4];
	size_t i;

	zm_merge_params_init(&p);
	/* Linear: weights are normalised. */
	acc_run(ZM_MERGE_LINEAR, &p, in, 2, 4, w26, NULL, out);
	for (i = 0; i < 4; i++)
		ck_assert_float_eq_tol(out[i], 0.25 * in[i] + 0.75 * in[4 + i],
		                       1e-6);
	/* Identical inputs give the input back. */
	{
		float same[8];
		memcpy(same, in, 4 * sizeof(float));
		memcpy(same + 4, in, 4 * sizeof(float));
		acc_run(ZM_MERGE_LINEAR, &p, same, 2, 4, w26, NULL, out);
		for (i = 0; i < 4; i++)
			ck_assert_float_eq_tol(out[i], in[i], 1e-6);
	}
	/* Task arithmetic: base + lambda sum w tau. */
	p.lambda = 0.5;
	acc_run(ZM_MERGE_TASK_ARITHMETIC, &p, in, 2, 4, w26, base, out);
	for (i = 0; i < 4; i++)
		ck_assert_float_eq_tol(out[i], 0.5 + 0.5 * (2 * (in[i] - 0.5) +
		                       6 * (in[4 + i] - 0.5)), 1e-5);
	/* TIES without trimming: elected signs -, -, +, + and disjoint
	 * means -3, -2, (3 + 1) / 2, (0.1 + 0.2) / 2, times lambda 2. */
	p.lambda = 2;
	p.density = 1;
	acc_run(ZM_MERGE_TIES, &p, in, 2, 4, ones, base, out);
	ck_assert_float_eq_tol(out[0], 0.5 - 6, 1e-5);
	ck_assert_float_eq_tol(out[1], 0.5 - 4, 1e-5);
	ck_assert_float_eq_tol(out[2], 0.5 + 4, 1e-5);
	ck_assert_float_eq_tol(out[3], 0.5 + 0.3, 1e-5);
	/* With density 0.5: tau1 -> {0, -2, 3, 0}, tau2 -> {-3, 1, 1, 0}. */
	p.lambda = 1;
	p.density = 0.5;
	acc_run(ZM_MERGE_TIES, &p, in, 2, 4, ones, base, out);
	ck_assert_float_eq_tol(out[0], 0.5 - 3, 1e-5);
	ck_assert_float_eq_tol(out[1], 0.5 - 2, 1e-5);
	ck_assert_float_eq_tol(out[2], 0.5 + 2, 1e-5);
	ck_assert_float_eq_tol(out[3], 0.5, 1e-6);
	/* Weighted election: weight 6 on tau2 flips entry 1's sign to +. */
	p.density = 1;
	acc_run(ZM_MERGE_TIES, &p, in, 2, 4, w26, base, out);
	ck_assert_float_eq_tol(out[1], 0.5 + 1, 1e-5);
	ck_assert_float_eq_tol(out[0], 0.5 - 3, 1e-5);
	/* DARE with p = 0 is task arithmetic; with the seed it matches a
	 * hand replay of the drops. */
	p.drop = 0;
	acc_run(ZM_MERGE_DARE, &p, in, 2, 4, ones, base, out);
	for (i = 0; i < 4; i++)
		ck_assert_float_eq_tol(out[i], 0.5 + (in[i] - 0.5) +
		                       (in[4 + i] - 0.5), 1e-5);
	{
		struct zm_rng r;
		float want[4] = { 0.5f, 0.5f, 0.5f, 0.5f };
		size_t k;
		p.drop = 0.5;
		p.seed = 9;
		zm_rng_seed(&r, 9);
		for (k = 0; k < 2; k++)
			for (i = 0; i < 4; i++)
				if (zm_rng_uniform(&r) >= 0.5)
					want[i] += 2 * (in[4 * k + i] - 0.5f);
		acc_run(ZM_MERGE_DARE, &p, in, 2, 4, ones, base, out);
		for (i = 0; i < 4; i++)
			ck_assert_float_eq_tol(out[i], want[i], 1e-5);
	}
	/* DARE + TIES with no drops equals TIES at density 1. */
	p.drop = 0;
	p.dare_ties = true;
	acc_run(ZM_MERGE_DARE, &p, in, 2, 4, ones, base, out);
	ck_assert_float_eq_tol(out[0], 0.5 - 3, 1e-5);
	ck_assert_float_eq_tol(out[2], 0.5 + 2, 1e-5);
	/* SLERP weights give t = 6 / 8. */
	{
		float want[4];
		zm_merge_slerp(in, in + 4, 4, 0.75, want);
		acc_run(ZM_MERGE_SLERP, &p, in, 2, 4, w26, NULL, out);
		for (i = 0; i < 4; i++)
			ck_assert_float_eq_tol(out[i], want[i], 1e-6);
	}
}
END_TEST

START_TEST(test_acc_errors)
{
	struct zm_merge_params p;
	struct zm_merge_acc acc;
	struct zm_error err;
	float x[2] = { 1, 2 }, out[2];

	zm_merge_params_init(&p);
	ck_assert_int_eq(zm_merge_acc_init(&acc, ZM_MERGE_LINEAR, &p, 2, &err),
	                 ZM_OK);
	zm_merge_acc_begin(&acc, 2);
	zm_merge_acc_add(&acc, x, NULL, 0.0);
	ck_assert_int_eq(zm_merge_acc_finish(&acc, NULL, out, &err),
	                 ZM_ERR_DATA);
	zm_merge_acc_release(&acc);
	ck_assert_int_eq(zm_merge_acc_init(&acc, ZM_MERGE_SLERP, &p, 2, &err),
	                 ZM_OK);
	zm_merge_acc_begin(&acc, 2);
	zm_merge_acc_add(&acc, x, NULL, 1.0);
	ck_assert_int_eq(zm_merge_acc_finish(&acc, NULL, out, &err),
	                 ZM_ERR_USAGE);
	zm_merge_acc_release(&acc);
}
END_TEST

/* ---- weights and configs ---- */

static struct zm_node *yaml(const char *text)
{
	struct zm_node *root;
	struct zm_error err;

	ck_assert_int_eq(zm_config_parse(text, strlen(text), "w.yaml", &root,
	                                 &err), ZM_OK);
	return root;
}

START_TEST(test_layer_weights)
{
	struct zm_arch *a = unit_arch(arch_yaml);
	struct zm_node *n;
	struct zm_error err;
	double w[3];

	n = yaml("[0.0, 1.0]");
	ck_assert_int_eq(zm_merge_layer_weights(n, 1, a, ZM_GRAN_LAYER, w, &err),
	                 ZM_OK);
	ck_assert(w[0] == 0 && w[1] == 0.5 && w[2] == 1);
	/* Across the two groups. */
	ck_assert_int_eq(zm_merge_layer_weights(n, 1, a, ZM_GRAN_GROUP, w, &err),
	                 ZM_OK);
	ck_assert(w[0] == 0 && w[1] == 0 && w[2] == 1);
	ck_assert_int_eq(zm_merge_layer_weights(n, 1, a, ZM_GRAN_FULL, w, &err),
	                 ZM_ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(err.msg, "w.yaml:1:1"));
	zm_node_free(n);
	n = yaml("[1, 2, 4, 8, 16]");
	ck_assert_int_eq(zm_merge_layer_weights(n, 1, a, ZM_GRAN_LAYER, w, &err),
	                 ZM_OK);
	ck_assert(w[0] == 1 && w[1] == 4 && w[2] == 16);
	zm_node_free(n);
	n = yaml("{features: 0.3, out: 0.9}");
	ck_assert_int_eq(zm_merge_layer_weights(n, 1, a, ZM_GRAN_LAYER, w, &err),
	                 ZM_OK);
	ck_assert(w[0] == 0.3 && w[1] == 0.3 && w[2] == 0.9);
	ck_assert_int_eq(zm_merge_layer_weights(n, 1, a, ZM_GRAN_GROUP, w, &err),
	                 ZM_ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(err.msg, "w.yaml:1:17"));
	ck_assert_ptr_nonnull(strstr(err.msg, "'out'"));
	zm_node_free(n);
	n = yaml("{features: 0.3}");
	ck_assert_int_eq(zm_merge_layer_weights(n, 1, a, ZM_GRAN_GROUP, w, &err),
	                 ZM_ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(err.msg, "no weight for layer 'out'"));
	zm_node_free(n);
	n = yaml("0.25");
	ck_assert_int_eq(zm_merge_layer_weights(n, 1, a, ZM_GRAN_FULL, w, &err),
	                 ZM_OK);
	ck_assert(w[0] == 0.25 && w[2] == 0.25);
	zm_node_free(n);
	ck_assert_int_eq(zm_merge_layer_weights(NULL, 3, a, ZM_GRAN_FULL, w,
	                                        &err), ZM_OK);
	ck_assert(w[0] == 3 && w[1] == 3 && w[2] == 3);
	zm_arch_free(a);
}
END_TEST

/* The models of a static merge: the arguments over the config's list,
 * each with its config weight, and a model the config does not name. */
START_TEST(test_config_models)
{
	static const char text[] =
		"models:\n"
		"  - {model: m0, weight: 0.5}\n"
		"  - {model: m1, weight: [0.2, 0.8]}\n"
		"  - {model: m2}\n";
	const char *args[] = { "m1", "m0" }, *stray[] = { "m0", "x" };
	const char *labels[3];
	const struct zm_node *specs[3];
	double w[3] = { 0, 0, 0 };
	struct zm_merge_config c;
	struct zm_error err;

	zm_merge_config_init(&c);
	ck_assert_int_eq(zm_merge_config_parse(text, strlen(text), "c.yaml", &c,
	                                       &err), ZM_OK);
	ck_assert_int_eq(zm_merge_config_models(&c, "c.yaml", NULL, 3, labels,
	                                        specs, w, &err), ZM_OK);
	ck_assert_str_eq(labels[0], "m0");
	ck_assert_str_eq(labels[2], "m2");
	ck_assert_ptr_eq(specs[0], c.models[0].weight);
	ck_assert_ptr_eq(specs[1], c.models[1].weight);
	ck_assert_ptr_null(specs[2]);
	ck_assert(w[0] == 1.0 && w[1] == 1.0 && w[2] == 1.0);
	ck_assert_int_eq(zm_merge_config_models(&c, "c.yaml", args, 2, labels,
	                                        specs, w, &err), ZM_OK);
	ck_assert_str_eq(labels[0], "m1");
	ck_assert_ptr_eq(specs[0], c.models[1].weight);
	ck_assert_ptr_eq(specs[1], c.models[0].weight);
	ck_assert_int_eq(zm_merge_config_models(&c, "c.yaml", stray, 2, labels,
	                                        specs, w, &err), ZM_ERR_CONFIG);
	ck_assert_str_eq(err.msg, "c.yaml: model 'x' is not in the config's "
	                 "models");
	/* A config without models weights every argument 1, no spec. */
	ck_assert_int_eq(zm_merge_config_parse("method: linear\n", 15,
	                                       "d.yaml", &c, &err), ZM_OK);
	specs[1] = c.root;
	ck_assert_int_eq(zm_merge_config_models(&c, "d.yaml", stray, 2, labels,
	                                        specs, w, &err), ZM_OK);
	ck_assert_str_eq(labels[1], "x");
	ck_assert_ptr_null(specs[1]);
	ck_assert(w[1] == 1.0);
	zm_merge_config_release(&c);
}
END_TEST

START_TEST(test_config)
{
	static const char good[] =
		"method: ties\n"
		"base: base\n"
		"parameters: {density: 0.5, lambda: 1.5, drop: 0.9, seed: 4}\n"
		"models:\n"
		"  - {model: m0, weight: 0.5}\n"
		"  - {model: m1, weight: [0.2, 0.8]}\n"
		"  - {model: m2, weight: {features: 0.3, head: 0.7}}\n"
		"  - {model: m3}\n";
	static const struct { const char *text, *where; } bad[] = {
		{ "method: soup\n", "c.yaml:1:9" },
		{ "methods: ties\n", "c.yaml:1:1" },
		{ "parameters: {density: 0}\n", "c.yaml:1:23" },
		{ "parameters: {drop: 1}\n", "c.yaml:1:20" },
		{ "parameters: {lamda: 1}\n", "c.yaml:1:14" },
		{ "models:\n  - {weight: 1}\n", "c.yaml:2:5" },
		{ "models:\n  - {model: a, weight: x}\n", "c.yaml:2:24" },
		{ "models:\n  - {model: a, weight: [1, no]}\n", "c.yaml:2:28" },
		{ "models:\n  - {model: a}\n  - {model: a}\n", "c.yaml:3:13" },
		{ "models:\n  - {model: a, weight: []}\n", "c.yaml:2:24" },
	};
	struct zm_merge_config c;
	struct zm_error err;
	size_t i;

	zm_merge_config_init(&c);
	ck_assert_int_eq(zm_merge_config_parse(good, strlen(good), "c.yaml", &c,
	                                       &err), ZM_OK);
	ck_assert(c.has_method && c.method == ZM_MERGE_TIES);
	ck_assert_str_eq(c.base, "base");
	ck_assert(c.params.density == 0.5 && c.params.lambda == 1.5 &&
	          c.params.drop == 0.9 && c.params.seed == 4);
	ck_assert_uint_eq(c.n_models, 4);
	ck_assert_str_eq(c.models[2].model, "m2");
	ck_assert_int_eq(c.models[1].weight->type, ZM_NODE_SEQ);
	ck_assert_ptr_null(c.models[3].weight);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_int_eq(zm_merge_config_parse(bad[i].text,
		                                       strlen(bad[i].text),
		                                       "c.yaml", &c, &err),
		                 ZM_ERR_CONFIG);
		if (!strstr(err.msg, bad[i].where))
			ck_abort_msg("case %zu: '%s' lacks %s", i, err.msg,
			             bad[i].where);
	}
	zm_merge_config_release(&c);
}
END_TEST

/* ---- static merges ---- */

static struct zm_model *read_model(const char *path)
{
	struct zm_reader *r;
	struct zm_doc doc;
	struct zm_error err;
	struct zm_model *m;
	bool eof;

	zm_doc_init(&doc);
	ck_assert_int_eq(zm_reader_open(&r, path, &err), ZM_OK);
	ck_assert_int_eq(zm_reader_next(r, &doc, &eof, &err), ZM_OK);
	if (zm_model_from_doc(&doc, NULL, &m, &err) != ZM_OK)
		ck_abort_msg("%s", err.msg);
	zm_doc_release(&doc);
	zm_reader_close(r);
	return m;
}

/* A model with seeded weights and a profile of rows random rows. */
static struct zm_model *model_with_profile(const struct zm_arch *a,
                                           uint64_t seed, size_t rows)
{
	struct zm_model *m;
	struct zm_profile p;
	struct zm_error err;
	struct zm_rng rng;
	float x[3 * 8];
	int64_t y[8];
	size_t i;

	ck_assert_int_eq(zm_model_new(a, seed, &m, &err), ZM_OK);
	zm_profile_init(&p);
	zm_rng_seed(&rng, seed + 100);
	for (i = 0; i < 3 * rows; i++)
		x[i] = (float)zm_rng_normal(&rng);
	for (i = 0; i < rows; i++)
		y[i] = (int64_t)(i % 2);
	ck_assert_int_eq(zm_profile_add_batch(&p, "input", x, rows, 3, &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_profile_add_labels(&p, y, rows, &err), ZM_OK);
	ck_assert_int_eq(zm_profile_to_doc(&p, &m->extra, &err), ZM_OK);
	zm_profile_release(&p);
	return m;
}

static const float *param(const struct zm_model *m, size_t l, int bias)
{
	return bias ? m->layers[l].bias.data : m->layers[l].weight.data;
}

static size_t param_n(const struct zm_model *m, size_t l, int bias)
{
	return zm_tensor_numel(bias ? &m->layers[l].bias : &m->layers[l].weight);
}

START_TEST(test_static_merge)
{
	struct zm_arch *a = unit_arch(arch_yaml);
	struct zm_model *m[3], *r;
	struct zm_merge_static_opts o;
	struct zm_profile p;
	struct zm_error err;
	char path[3][512], out[512];
	const char *paths[3], *labels[3] = { "m0", "m1", "m2" };
	double w[3] = { 1, 2, 5 };
	size_t i, l, k, j;

	for (i = 0; i < 3; i++) {
		m[i] = model_with_profile(a, i + 1, 3 + i);
		snprintf(path[i], sizeof(path[i]), "%s/m%zu.st.gz",
		         unit_tmpdir(), i);
		unit_write_model(m[i], path[i]);
		paths[i] = path[i];
	}
	snprintf(out, sizeof(out), "%s/out.st.gz", unit_tmpdir());
	memset(&o, 0, sizeof(o));
	zm_merge_params_init(&o.params);
	o.method = ZM_MERGE_LINEAR;
	o.level = ZM_GRAN_LAYER;
	o.paths = paths;
	o.labels = labels;
	o.out = out;
	o.compress = ZM_COMPRESS_AUTO;

	/* Identical models: the model itself. */
	{
		const char *same[3] = { paths[0], paths[0], paths[0] };
		o.paths = same;
		o.n_models = 3;
		o.weights = w;
		ck_assert_int_eq(zm_merge_static(&o, &err), ZM_OK);
		r = read_model(out);
		for (l = 0; l < 3; l++)
			for (k = 0; k < 2; k++)
				for (j = 0; j < param_n(r, l, (int)k); j++)
					ck_assert_float_eq_tol(
						param(r, l, (int)k)[j],
						param(m[0], l, (int)k)[j], 1e-6);
		zm_model_free(r);
		o.paths = paths;
	}
	/* Weighted average against a naive loop, and the profile merge. */
	o.n_models = 3;
	ck_assert_int_eq(zm_merge_static(&o, &err), ZM_OK);
	r = read_model(out);
	for (l = 0; l < 3; l++)
		for (k = 0; k < 2; k++)
			for (j = 0; j < param_n(r, l, (int)k); j++) {
				double want = 0;
				for (i = 0; i < 3; i++)
					want += w[i] / 8.0 *
					        param(m[i], l, (int)k)[j];
				ck_assert_float_eq_tol(param(r, l, (int)k)[j],
				                       want, 1e-5);
			}
	zm_profile_init(&p);
	ck_assert_int_eq(zm_profile_from_doc(&p, &r->extra, &err), ZM_OK);
	ck_assert(zm_profile_count(&p) == 3 + 4 + 5);
	ck_assert_uint_eq(p.n_classes, 2);
	ck_assert_int_eq(p.labels[0] + p.labels[1], 12);
	ck_assert_ptr_nonnull(strstr(r->hparams, "\"linear\""));
	zm_profile_release(&p);
	zm_model_free(r);

	/* Per-layer weights from a config node: layer out takes only m2. */
	{
		struct zm_node *spec0 = yaml("{features: 1, head: 0}");
		struct zm_node *spec2 = yaml("{features: 1, head: 1}");
		const struct zm_node *specs[3] = { spec0, spec0, spec2 };
		o.weight_specs = specs;
		o.weights = NULL;
		ck_assert_int_eq(zm_merge_static(&o, &err), ZM_OK);
		r = read_model(out);
		for (j = 0; j < param_n(r, 2, 0); j++)
			ck_assert_float_eq_tol(param(r, 2, 0)[j],
			                       param(m[2], 2, 0)[j], 1e-6);
		for (j = 0; j < param_n(r, 0, 0); j++)
			ck_assert_float_eq_tol(param(r, 0, 0)[j],
			                       (param(m[0], 0, 0)[j] +
			                        param(m[1], 0, 0)[j] +
			                        param(m[2], 0, 0)[j]) / 3, 1e-5);
		zm_model_free(r);
		o.weight_specs = NULL;
		zm_node_free(spec0);
		zm_node_free(spec2);
	}
	/* Task arithmetic with m0 as base over m1, m2, lambda 0.5. */
	o.method = ZM_MERGE_TASK_ARITHMETIC;
	o.params.lambda = 0.5;
	o.paths = paths + 1;
	o.labels = labels + 1;
	o.n_models = 2;
	o.base_path = paths[0];
	o.base_label = "m0";
	ck_assert_int_eq(zm_merge_static(&o, &err), ZM_OK);
	r = read_model(out);
	for (j = 0; j < param_n(r, 1, 0); j++) {
		double b = param(m[0], 1, 0)[j];
		ck_assert_float_eq_tol(param(r, 1, 0)[j],
		                       b + 0.5 * ((param(m[1], 1, 0)[j] - b) +
		                                  (param(m[2], 1, 0)[j] - b)),
		                       1e-5);
	}
	zm_model_free(r);
	/* Without a base it is refused, and nothing appears. */
	o.base_path = NULL;
	remove(out);
	ck_assert_int_eq(zm_merge_static(&o, &err), ZM_ERR_USAGE);
	ck_assert_int_ne(access(out, F_OK), 0);
	for (i = 0; i < 3; i++)
		zm_model_free(m[i]);
	zm_arch_free(a);
}
END_TEST

START_TEST(test_static_mismatch)
{
	struct zm_arch *a = unit_arch(arch_yaml);
	struct zm_arch *b = unit_arch(
		"input: [3]\n"
		"layers:\n"
		"  - {name: fc1, units: 4, activation: relu, group: features}\n"
		"  - {name: fc2, units: 5, activation: tanh, group: features}\n"
		"  - {name: out, units: 2, group: head}\n");
	struct zm_arch *c = unit_arch(
		"input: [3]\n"
		"layers:\n"
		"  - {name: fc1, units: 4, activation: relu}\n"
		"  - {name: fc2, units: 3, activation: gelu}\n"
		"  - {name: out, units: 2}\n");
	struct zm_model *ma, *mb, *mc;
	struct zm_merge_static_opts o;
	struct zm_error err;
	char pa[512], pb[512], pc[512], out[512];
	const char *paths[2], *labels[2] = { "A", "B" };

	ck_assert_int_eq(zm_model_new(a, 1, &ma, &err), ZM_OK);
	ck_assert_int_eq(zm_model_new(b, 1, &mb, &err), ZM_OK);
	ck_assert_int_eq(zm_model_new(c, 1, &mc, &err), ZM_OK);
	snprintf(pa, sizeof(pa), "%s/a.st.gz", unit_tmpdir());
	snprintf(pb, sizeof(pb), "%s/b.st.gz", unit_tmpdir());
	snprintf(pc, sizeof(pc), "%s/c.st.gz", unit_tmpdir());
	snprintf(out, sizeof(out), "%s/o.st.gz", unit_tmpdir());
	unit_write_model(ma, pa);
	unit_write_model(mb, pb);
	unit_write_model(mc, pc);
	memset(&o, 0, sizeof(o));
	zm_merge_params_init(&o.params);
	o.method = ZM_MERGE_LINEAR;
	o.level = ZM_GRAN_FULL;
	o.n_models = 2;
	o.paths = paths;
	o.labels = labels;
	o.out = out;
	paths[0] = pa;
	paths[1] = pb;
	ck_assert_int_eq(zm_merge_static(&o, &err), ZM_ERR_DATA);
	ck_assert_msg(strstr(err.msg, "fc2.weight") &&
	              strstr(err.msg, "[5, 4]") && strstr(err.msg, "[3, 4]"),
	              "%s", err.msg);
	paths[1] = pc;
	ck_assert_int_eq(zm_merge_static(&o, &err), ZM_ERR_DATA);
	ck_assert_msg(strstr(err.msg, "fc2") && strstr(err.msg, "gelu"), "%s",
	              err.msg);
	ck_assert_int_ne(access(out, F_OK), 0);
	zm_model_free(ma);
	zm_model_free(mb);
	zm_model_free(mc);
	zm_arch_free(a);
	zm_arch_free(b);
	zm_arch_free(c);
}
END_TEST

/* ---- applying updates ---- */

#define N_MODELS 3

/* A zoo with models a, b, c (same arch, different seeds) at v1. */
static void make_zoo(const char *dir, struct zm_model **m)
{
	struct zm_arch *a = unit_arch(arch_yaml);
	struct zm_zoo *zoo;
	struct zm_error err;
	static const char *const names[N_MODELS] = { "a", "b", "c" };
	size_t i;
	int64_t v;

	ck_assert_int_eq(zm_zoo_open(&zoo, dir, ZM_ZOO_WRITE | ZM_ZOO_CREATE,
	                             &err), ZM_OK);
	for (i = 0; i < N_MODELS; i++) {
		struct zm_doc doc;
		m[i] = model_with_profile(a, 10 + i, 4);
		/* Models that share units must share an origin (lineage.h);
		 * their weights differ so that the sums below tell them
		 * apart. */
		ck_assert_int_eq(zm_lineage_set_origin(m[i], "init:test", &err),
		                 ZM_OK);
		zm_doc_init(&doc);
		ck_assert_int_eq(zm_model_to_doc(m[i], &doc, &err), ZM_OK);
		ck_assert_int_eq(zm_zoo_put_model(zoo, names[i], &doc, &v, &err),
		                 ZM_OK);
		zm_doc_release(&doc);
	}
	ck_assert_int_eq(zm_zoo_commit(zoo, &err), ZM_OK);
	zm_zoo_close(zoo);
	zm_arch_free(a);
}

/* An update for model name: deltas from seed, on slice, w, samples. */
static void make_update(struct zm_doc *doc, const char *name, int parent,
                        const char *slice, double w, double samples,
                        uint64_t seed, struct zm_model **delta)
{
	struct zm_arch *a = unit_arch(arch_yaml);
	struct zm_error err;
	char num[128];

	ck_assert_int_eq(zm_model_new(a, seed, delta, &err), ZM_OK);
	zm_doc_init(doc);
	ck_assert_int_eq(zm_model_to_doc(*delta, doc, &err), ZM_OK);
	zm_doc_set_meta(doc, "zm.kind", "update", &err);
	zm_doc_set_meta(doc, "zm.name", name, &err);
	snprintf(num, sizeof(num), "%d", parent);
	zm_doc_set_meta(doc, "zm.parent", num, &err);
	if (slice)
		zm_doc_set_meta(doc, "zm.slice", slice, &err);
	snprintf(num, sizeof(num), "%.17g", w);
	zm_doc_set_meta(doc, "zm.weight", num, &err);
	snprintf(num, sizeof(num), "%.17g", samples);
	zm_doc_set_meta(doc, "zm.samples", num, &err);
	snprintf(num, sizeof(num), "{\"accuracy\":%.3f,\"samples\":%.0f}",
	         0.5 + 0.1 * (double)(seed % 4), samples);
	zm_doc_set_meta(doc, "zm.metrics", num, &err);
	zm_arch_free(a);
}

static struct zm_model *zoo_model(const char *dir, const char *name,
                                  int64_t *version)
{
	struct zm_zoo *zoo;
	struct zm_zoo_entry *e;
	struct zm_doc doc;
	struct zm_error err;
	struct zm_model *m;

	ck_assert_int_eq(zm_zoo_open(&zoo, dir, ZM_ZOO_READ, &err), ZM_OK);
	ck_assert_int_eq(zm_zoo_get(zoo, name, &e, &err), ZM_OK);
	*version = e->version;
	zm_doc_init(&doc);
	ck_assert_int_eq(zm_zoo_read_model(zoo, e, &doc, &err), ZM_OK);
	ck_assert_int_eq(zm_model_from_doc(&doc, NULL, &m, &err), ZM_OK);
	zm_doc_release(&doc);
	zm_zoo_close(zoo);
	return m;
}

static enum zm_status apply(const char *dir, const struct zm_doc *u, size_t n,
                            const struct zm_apply_opts *o,
                            struct zm_error *err)
{
	struct zm_zoo *zoo;
	struct zm_apply_result res;
	enum zm_status st;

	memset(&res, 0, sizeof(res));
	st = zm_zoo_open(&zoo, dir, ZM_ZOO_WRITE, err);
	if (st == ZM_OK)
		st = zm_merge_apply_updates(zoo, u, n, o, &res, err);
	zm_zoo_close(zoo);
	zm_apply_result_release(&res);
	return st;
}

/*
 * The scenario: a and b trained on slice s1 (a with two updates, also on
 * s3), c alone on s2.  Case _i: 0 everything shared, 1 nothing shared,
 * 2 a layer decision sharing only fc2.
 */
START_TEST(test_apply_sharing)
{
	struct zm_model *m[N_MODELS], *d[4], *got;
	struct zm_doc u[4];
	struct zm_apply_opts o;
	struct zm_gran_decision dec;
	struct zm_error err;
	char dir[512];
	/* update k: model, slice, w, samples */
	static const size_t um[4] = { 0, 0, 1, 2 };
	static const char *const us[4] = { "s1", "s3", "s1", "s2" };
	static const double uw[4] = { 0.5, 1.0, 0.8, 1.0 };
	static const double un[4] = { 100, 50, 300, 70 };
	static const char *const names[N_MODELS] = { "a", "b", "c" };
	size_t k, i, l, b, j;
	int64_t v;

	snprintf(dir, sizeof(dir), "%s/zoo%d", unit_tmpdir(), _i);
	make_zoo(dir, m);
	for (k = 0; k < 4; k++)
		make_update(&u[k], names[um[k]], 1, us[k], uw[k], un[k],
		            50 + k, &d[k]);
	memset(&o, 0, sizeof(o));
	zm_gran_decision_init(&dec);
	if (_i == 0) {
		o.level = ZM_GRAN_FULL;
		o.share = "all";
	} else if (_i == 1) {
		o.level = ZM_GRAN_GROUP;
		o.share = "none";
	} else {
		dec.level = ZM_GRAN_LAYER;
		zm_gran_decision_add(&dec, "fc1", false, false, 0, NULL, &err);
		zm_gran_decision_add(&dec, "fc2", true, true, 0.9, "agree", &err);
		o.decision = &dec;
	}
	if (apply(dir, u, 4, &o, &err) != ZM_OK)
		ck_abort_msg("%s", err.msg);
	for (i = 0; i < N_MODELS; i++) {
		got = zoo_model(dir, names[i], &v);
		ck_assert_int_eq(v, 2);
		for (l = 0; l < 3; l++)
			for (b = 0; b < 2; b++)
				for (j = 0; j < param_n(got, l, (int)b); j++) {
					bool shared = _i == 0 || (_i == 2 && l == 1);
					double num = 0, den = 0;
					for (k = 0; k < 4; k++) {
						double c = uw[k] * un[k];
						bool in;
						/* a and b form one group. */
						in = shared && i < 2 ? um[k] < 2
						                     : um[k] == i;
						if (!in)
							continue;
						num += c * param(d[k], l, (int)b)[j];
						den += c;
					}
					ck_assert_float_eq_tol(
						param(got, l, (int)b)[j],
						param(m[i], l, (int)b)[j] +
						num / den, 1e-5);
				}
		/* The profile took the updates' (none here) and kept 4 rows;
		 * metrics were combined. */
		ck_assert_ptr_nonnull(got->metrics);
		ck_assert_ptr_nonnull(strstr(got->metrics, "samples"));
		zm_model_free(got);
	}
	for (k = 0; k < 4; k++) {
		zm_doc_release(&u[k]);
		zm_model_free(d[k]);
	}
	for (i = 0; i < N_MODELS; i++)
		zm_model_free(m[i]);
	zm_gran_decision_release(&dec);
}
END_TEST

START_TEST(test_apply_profile_metrics)
{
	struct zm_model *m[N_MODELS], *d, *got;
	struct zm_doc u[2];
	struct zm_apply_opts o;
	struct zm_profile p;
	struct zm_error err;
	char dir[512];
	float x[6] = { 1, 2, 3, 4, 5, 6 };
	int64_t v;

	snprintf(dir, sizeof(dir), "%s/zp", unit_tmpdir());
	make_zoo(dir, m);
	make_update(&u[0], "a", 1, "s1", 1, 30, 1, &d);
	zm_model_free(d);
	make_update(&u[1], "a", 1, "s2", 1, 10, 2, &d);
	zm_model_free(d);
	zm_profile_init(&p);
	ck_assert_int_eq(zm_profile_add_batch(&p, "input", x, 2, 3, &err), ZM_OK);
	ck_assert_int_eq(zm_profile_to_doc(&p, &u[0], &err), ZM_OK);
	zm_profile_release(&p);
	memset(&o, 0, sizeof(o));
	ck_assert_int_eq(apply(dir, u, 2, &o, &err), ZM_OK);
	got = zoo_model(dir, "a", &v);
	ck_assert_int_eq(v, 2);
	ck_assert_int_eq(zm_profile_from_doc(&p, &got->extra, &err), ZM_OK);
	ck_assert(zm_profile_count(&p) == 4 + 2);
	/* accuracy (0.6 x 30 + 0.7 x 10) / 40, samples 30 + 10 */
	ck_assert_msg(strstr(got->metrics, "\"accuracy\":0.625") &&
	              strstr(got->metrics, "\"samples\":40"), "%s",
	              got->metrics);
	zm_profile_release(&p);
	zm_model_free(got);
	zm_doc_release(&u[0]);
	zm_doc_release(&u[1]);
	for (v = 0; v < N_MODELS; v++)
		zm_model_free(m[v]);
}
END_TEST

/* Every model still at v1 with its old parameters. */
static void assert_unchanged(const char *dir, struct zm_model **m)
{
	static const char *const names[N_MODELS] = { "a", "b", "c" };
	struct zm_model *got;
	size_t i;
	int64_t v;

	for (i = 0; i < N_MODELS; i++) {
		got = zoo_model(dir, names[i], &v);
		ck_assert_int_eq(v, 1);
		ck_assert(memcmp(param(got, 0, 0), param(m[i], 0, 0),
		                 param_n(got, 0, 0) * sizeof(float)) == 0);
		zm_model_free(got);
	}
}

START_TEST(test_apply_stale_and_faults)
{
	struct zm_model *m[N_MODELS], *d[3], *got;
	struct zm_doc u[3];
	struct zm_apply_opts o;
	struct zm_error err;
	char dir[512];
	static const char *const kinds[] = { "rename:1", "rename:2", "rename:3",
	                                     "write:3", "alloc:40", "fsync:1",
	                                     "open:2" };
	size_t k;
	int64_t v;

	snprintf(dir, sizeof(dir), "%s/zs", unit_tmpdir());
	make_zoo(dir, m);
	make_update(&u[0], "a", 1, "s1", 1, 10, 1, &d[0]);
	make_update(&u[1], "b", 1, "s1", 1, 10, 2, &d[1]);
	make_update(&u[2], "c", 7, "s2", 1, 10, 3, &d[2]);
	memset(&o, 0, sizeof(o));
	/* A stale base refuses the whole batch. */
	ck_assert_int_eq(apply(dir, u, 3, &o, &err), ZM_ERR_CONFLICT);
	ck_assert_msg(strstr(err.msg, "'c'") && strstr(err.msg, "v7") &&
	              strstr(err.msg, "v1"), "%s", err.msg);
	assert_unchanged(dir, m);
	/* Faults in the middle of writing leave every model at v1. */
	for (k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		enum zm_status st;
		setenv("ZM_FAULT", kinds[k], 1);
		zm_fault_reset();
		st = apply(dir, u, 2, &o, &err);
		unsetenv("ZM_FAULT");
		zm_fault_reset();
		ck_assert_msg(st != ZM_OK, "%s did not fail", kinds[k]);
		assert_unchanged(dir, m);
	}
	/* --rebase applies it. */
	o.rebase = true;
	ck_assert_int_eq(apply(dir, u, 3, &o, &err), ZM_OK);
	got = zoo_model(dir, "c", &v);
	ck_assert_int_eq(v, 2);
	ck_assert_float_eq_tol(param(got, 0, 0)[0],
	                       param(m[2], 0, 0)[0] + param(d[2], 0, 0)[0], 1e-6);
	zm_model_free(got);
	/* A second run with the same (now stale) updates is refused. */
	o.rebase = false;
	ck_assert_int_eq(apply(dir, u, 2, &o, &err), ZM_ERR_CONFLICT);
	for (k = 0; k < 3; k++) {
		zm_doc_release(&u[k]);
		zm_model_free(d[k]);
	}
	for (k = 0; k < N_MODELS; k++)
		zm_model_free(m[k]);
}
END_TEST

START_TEST(test_apply_bad_updates)
{
	struct zm_model *m[N_MODELS], *d;
	struct zm_doc u[1];
	struct zm_apply_opts o;
	struct zm_error err;
	char dir[512];
	size_t k;

	snprintf(dir, sizeof(dir), "%s/zb", unit_tmpdir());
	make_zoo(dir, m);
	memset(&o, 0, sizeof(o));
	make_update(&u[0], "a", 1, "s1", 1, 10, 1, &d);
	zm_doc_set_meta(&u[0], "zm.kind", "model", &err);
	ck_assert_int_eq(apply(dir, u, 1, &o, &err), ZM_ERR_FORMAT);
	zm_doc_set_meta(&u[0], "zm.kind", "update", &err);
	zm_doc_remove(&u[0], "fc2.bias");
	ck_assert_int_eq(apply(dir, u, 1, &o, &err), ZM_ERR_FORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "fc2.bias"));
	zm_doc_release(&u[0]);
	zm_model_free(d);
	make_update(&u[0], "zz", 1, "s1", 1, 10, 1, &d);
	ck_assert_int_eq(apply(dir, u, 1, &o, &err), ZM_ERR_NOTFOUND);
	zm_doc_release(&u[0]);
	zm_model_free(d);
	make_update(&u[0], "a", 1, "s1", 1, 10, 1, &d);
	zm_doc_set_meta(&u[0], "zm.samples", "-3", &err);
	ck_assert_int_eq(apply(dir, u, 1, &o, &err), ZM_ERR_FORMAT);
	zm_doc_release(&u[0]);
	zm_model_free(d);
	assert_unchanged(dir, m);
	for (k = 0; k < N_MODELS; k++)
		zm_model_free(m[k]);
}
END_TEST

Suite *suite_merge(void)
{
	Suite *s = suite_create("merge");
	TCase *tc = tcase_create("merge");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_ties_trim);
	tcase_add_loop_test(tc, test_ties_trim_vs_sort, 0, 40);
	tcase_add_test(tc, test_dare_drop);
	tcase_add_test(tc, test_slerp);
	tcase_add_test(tc, test_acc_methods);
	tcase_add_test(tc, test_acc_errors);
	tcase_add_test(tc, test_layer_weights);
	tcase_add_test(tc, test_config);
	tcase_add_test(tc, test_config_models);
	tcase_add_test(tc, test_static_merge);
	tcase_add_test(tc, test_static_mismatch);
	tcase_add_loop_test(tc, test_apply_sharing, 0, 3);
	tcase_add_test(tc, test_apply_profile_metrics);
	tcase_add_test(tc, test_apply_stale_and_faults);
	tcase_add_test(tc, test_apply_bad_updates);
	suite_add_tcase(s, tc);
	return s;
}
