/*
 * The element-wise layers (standardize, batchnorm, clip, dropout): their
 * arch keys and errors, their forward passes against naive loops in
 * double, and the gradients of a network through them (batchnorm in
 * training mode) against central finite differences of an independent
 * double-precision reference.
 */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lineage.h"
#include "model.h"
#include "random.h"
#include "schema.h"
#include "train.h"
#include "unit.h"

static void fill(struct zm_rng *r, float *x, size_t n, double scale)
{
	size_t i;

	for (i = 0; i < n; i++)
		x[i] = (float)(scale * (2.0 * zm_rng_uniform(r) - 1.0));
}

static const char *const bad_archs[][2] = {
	{ "input: [3]\nlayers:\n  - {name: h, units: 2}\n"
	  "  - {name: s, type: standardize}\n  - {name: o, units: 2}\n",
	  "standardize must be the first layer" },
	{ "input: [3]\nlayers:\n  - {name: c, type: clip, min: 1, max: 1}\n"
	  "  - {name: o, units: 2}\n", "max 1 is not above min 1" },
	{ "input: [3]\nlayers:\n  - {name: c, type: clip, min: 1}\n"
	  "  - {name: o, units: 2}\n", "clip needs 'min' and 'max'" },
	{ "input: [3]\nlayers:\n  - {name: d, type: dropout, rate: 1}\n"
	  "  - {name: o, units: 2}\n", "rate" },
	{ "input: [3]\nlayers:\n  - {name: d, type: dropout, min: 0}\n"
	  "  - {name: o, units: 2}\n", "dropout takes no 'min'" },
	{ "input: [1, 4, 4]\nlayers:\n  - {name: b, type: batchnorm}\n"
	  "  - {name: o, units: 2}\n", "put a flatten before it" },
	{ "input: [3]\nlayers:\n  - {name: s, type: standardize, units: 3}\n"
	  "  - {name: o, units: 2}\n", "standardize takes no 'units'" },
	{ "input: [3]\nlayers:\n  - {name: s, type: standardize}\n",
	  "need at least one dense layer" },
	{ "input: [3]\nlayers:\n  - {name: s, type: one_hot, column: c}\n"
	  "  - {name: o, units: 2}\n", "one_hot needs 'column' and 'levels'" },
	{ "input: [3]\nlayers:\n  - {name: s, type: one_hot, column: c, "
	  "levels: [a, b, a]}\n  - {name: o, units: 2}\n",
	  "level 'a' given twice" },
	{ "input: [3]\nlayers:\n  - {name: h, units: 2}\n"
	  "  - {name: s, type: one_hot, column: c, levels: [a]}\n"
	  "  - {name: o, units: 2}\n", "one_hot must come before every layer" },
	{ "input: [1, 2, 2]\nlayers:\n"
	  "  - {name: s, type: one_hot, column: c, levels: [a]}\n"
	  "  - {name: o, units: 2}\n", "one_hot layers need a vector input" },
	{ "input: [3]\nlayers:\n  - {name: s, type: one_hot, column: c, "
	  "levels: [a], units: 2}\n  - {name: o, units: 2}\n",
	  "one_hot takes no 'units'" },
	{ "input: [3]\nlayers:\n  - {name: s, type: one_hot, column: c, "
	  "levels: []}\n  - {name: o, units: 2}\n", "levels: expected a list" },
};

/*
 * one_hot: its units join the input after the features (the arch's
 * input counts only those), standardize before it covers them, the JSON
 * reads back to the same arch, and other levels are a difference that
 * names the level.
 */
START_TEST(test_one_hot_arch)
{
	struct zm_arch *a = unit_arch(
		"input: [2]\nlayers:\n  - {name: s, type: standardize}\n"
		"  - {name: src, type: one_hot, column: source, "
		"levels: [west, north, south]}\n"
		"  - {name: o, units: 3}\n");
	struct zm_arch *b, *c = unit_arch(
		"input: [2]\nlayers:\n  - {name: s, type: standardize}\n"
		"  - {name: src, type: one_hot, column: source, "
		"levels: [west, east, south]}\n"
		"  - {name: o, units: 3}\n");
	struct zm_buf j;
	struct zm_error err;

	ck_assert_uint_eq(a->input_features, 5);
	ck_assert_uint_eq(zm_arch_one_hot_units(a), 3);
	ck_assert_uint_eq(a->layers[0].n_weight, 5);
	ck_assert_uint_eq(a->layers[1].in_features, 5);
	ck_assert_uint_eq(a->layers[1].out_features, 5);
	ck_assert(!a->layers[1].has_params);
	ck_assert_uint_eq(a->layers[2].n_weight, 15);
	zm_buf_init(&j);
	zm_arch_to_json(a, &j);
	ck_assert(!j.failed);
	ck_assert_msg(strstr(j.data, "{\"input\": [2],"), "%s", j.data);
	ck_assert_msg(strstr(j.data, "\"column\": \"source\", \"levels\": "
	                     "[\"west\", \"north\", \"south\"]"), "%s", j.data);
	ck_assert_int_eq(zm_arch_parse_json(j.data, j.len, "j", &b, &err),
	                 ZM_OK);
	ck_assert(zm_arch_equal(a, b));
	ck_assert_int_eq(zm_model_same_arch(a, b, &err), ZM_OK);
	ck_assert_int_eq(zm_arch_same_one_hot(a, b, &err), ZM_OK);
	ck_assert(!zm_arch_equal(a, c));
	ck_assert_int_eq(zm_model_same_arch(a, c, &err), ZM_ERR_DATA);
	ck_assert_msg(strstr(err.msg, "level 2 is 'north' vs 'east'"), "%s",
	              err.msg);
	ck_assert_int_eq(zm_arch_same_one_hot(c, a, &err), ZM_ERR_DATA);
	ck_assert_msg(strstr(err.msg, "'east' vs 'north'"), "%s", err.msg);
	zm_buf_release(&j);
	zm_arch_free(a);
	zm_arch_free(b);
	zm_arch_free(c);
}
END_TEST

/* The units by level name, whatever the data's codes; an unknown level
 * named with its row id and column. */
START_TEST(test_one_hot_fill)
{
	struct zm_arch *a = unit_arch(
		"input: [1]\nlayers:\n"
		"  - {name: src, type: one_hot, column: source, "
		"levels: [west, north, south]}\n"
		"  - {name: o, units: 2}\n");
	char *lv[] = { "north", "south", "west", "east" };
	const int64_t codes[] = { 2, 0, 1, 0 }, bad[] = { 1, 3 };
	const int64_t ids[] = { 40, 41 };
	const float want[4][3] = {
		{ 1, 0, 0 }, { 0, 1, 0 }, { 0, 0, 1 }, { 0, 1, 0 }
	};
	float out[4 * 4];
	struct zm_error err;
	size_t r, k;

	memset(out, 0x7f, sizeof(out));
	ck_assert_int_eq(zm_onehot_fill(&a->layers[0], lv, 3, codes, 4, NULL,
	                                out + 1, 4, "d", &err), ZM_OK);
	for (r = 0; r < 4; r++)
		for (k = 0; k < 3; k++)
			ck_assert(out[r * 4 + 1 + k] == want[r][k]);
	ck_assert_int_eq(zm_onehot_fill(&a->layers[0], lv, 4, bad, 2, ids,
	                                out, 3, "d", &err), ZM_ERR_DATA);
	ck_assert_msg(strstr(err.msg, "d: row 41, column 'source': level "
	                     "'east' is not one of the model's levels (west, "
	                     "north, south)"), "%s", err.msg);
	zm_arch_free(a);
}
END_TEST

/*
 * Gradients through standardize and one_hot: x (2 features and 2 units)
 * -> (x - mean) * inv -> dense (3, tanh) -> dense (2), against central
 * differences of a double-precision reference, the units' weights
 * included.
 */
static double oh_loss(const double *w1, const double *b1, const double *w2,
                      const double *b2, const float *mean, const float *inv,
                      const float *x, size_t n, const int64_t *y)
{
	double total = 0;
	size_t r, i, j;

	for (r = 0; r < n; r++) {
		double h[3], z[2], mx, s = 0;
		for (j = 0; j < 3; j++) {
			h[j] = b1[j];
			for (i = 0; i < 4; i++)
				h[j] += w1[j * 4 + i] *
				        ((x[r * 4 + i] - mean[i]) * inv[i]);
			h[j] = tanh(h[j]);
		}
		for (j = 0; j < 2; j++) {
			z[j] = b2[j];
			for (i = 0; i < 3; i++)
				z[j] += w2[j * 3 + i] * h[i];
		}
		mx = z[0] > z[1] ? z[0] : z[1];
		for (j = 0; j < 2; j++)
			s += exp(z[j] - mx);
		total += mx + log(s) - z[y[r]];
	}
	return total / (double)n;
}

START_TEST(test_one_hot_gradient)
{
	struct zm_arch *a = unit_arch(
		"input: [2]\nlayers:\n  - {name: s, type: standardize}\n"
		"  - {name: src, type: one_hot, column: c, levels: [p, q]}\n"
		"  - {name: h, units: 3, activation: tanh}\n"
		"  - {name: o, units: 2}\n");
	struct zm_model *m;
	struct zm_workspace *ws;
	struct zm_error err;
	struct zm_rng r;
	float x[4 * 4];
	int64_t y[4] = { 0, 1, 1, 0 };
	double w1[12], b1[3], w2[6], b2[2], *pp[4] = { w1, b1, w2, b2 };
	size_t sz[4] = { 12, 3, 6, 2 }, i, t;
	float *mean, *inv;

	ck_assert_int_eq(zm_model_new(a, 7, &m, &err), ZM_OK);
	mean = m->layers[0].weight.data;
	inv = m->layers[0].bias.data;
	zm_rng_seed(&r, 3);
	for (i = 0; i < 4; i++) {
		mean[i] = (float)(zm_rng_uniform(&r) - 0.5);
		inv[i] = (float)(0.5 + zm_rng_uniform(&r));
	}
	for (i = 0; i < 4; i++) {
		x[i * 4] = (float)(3 * zm_rng_uniform(&r) - 1.5);
		x[i * 4 + 1] = (float)(3 * zm_rng_uniform(&r) - 1.5);
		x[i * 4 + 2] = i % 2 ? 1.0f : 0.0f;
		x[i * 4 + 3] = i % 2 ? 0.0f : 1.0f;
	}
	for (t = 0; t < 4; t++) {
		const float *src = t % 2 ? m->layers[2 + t / 2].bias.data
		                         : m->layers[2 + t / 2].weight.data;
		for (i = 0; i < sz[t]; i++)
			pp[t][i] = src[i];
	}
	ck_assert_int_eq(zm_workspace_new(a, 4, true, &ws, &err), ZM_OK);
	{
		const float *out = zm_model_forward(m, ws, x, 4);
		ck_assert_int_eq(zm_loss_cross_entropy(out, y, 4, 2, NULL, NULL,
		                                       ws->dlogits, &err), ZM_OK);
	}
	zm_model_backward(m, ws, x, 4, ws->dlogits);
	for (t = 0; t < 4; t++)
		for (i = 0; i < sz[t]; i++) {
			const double h = 1e-6;
			double save = pp[t][i], up, down, num, ana;
			pp[t][i] = save + h;
			up = oh_loss(w1, b1, w2, b2, mean, inv, x, 4, y);
			pp[t][i] = save - h;
			down = oh_loss(w1, b1, w2, b2, mean, inv, x, 4, y);
			pp[t][i] = save;
			num = (up - down) / (2 * h);
			ana = t % 2 ? ws->db[2 + t / 2][i] : ws->dw[2 + t / 2][i];
			ck_assert_msg(fabs(num - ana) <= 2e-5 + 1e-3 * fabs(num),
			              "param %zu %zu: analytic %.9g numeric %.9g",
			              t, i, ana, num);
		}
	zm_workspace_free(ws);
	zm_model_free(m);
	zm_arch_free(a);
}
END_TEST

START_TEST(test_layer_arch_errors)
{
	struct zm_node *root;
	struct zm_arch *a;
	struct zm_error err;
	const char *y = bad_archs[_i][0];

	ck_assert_int_eq(zm_config_parse(y, strlen(y), "t.yaml", &root, &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_arch_parse(root, &a, &err), ZM_ERR_CONFIG);
	ck_assert_ptr_null(a);
	ck_assert_msg(strstr(err.msg, bad_archs[_i][1]), "%s", err.msg);
	zm_node_free(root);
}
END_TEST

static const char arch_all[] =
	"input: [2, 3]\nlayers:\n"
	"  - {name: f, type: flatten}\n"
	"  - {name: s, type: standardize}\n"
	"  - {name: h, units: 5, activation: tanh}\n"
	"  - {name: bn, type: batchnorm}\n"
	"  - {name: d, type: dropout, rate: 0.25}\n"
	"  - {name: c, type: clip, min: -0.8, max: 0.7}\n"
	"  - {name: o, units: 3}\n";

START_TEST(test_layer_arch_round_trip)
{
	struct zm_arch *a = unit_arch(arch_all), *b;
	struct zm_buf j;
	struct zm_error err;

	ck_assert_int_eq(a->layers[1].type, ZM_LAYER_STANDARDIZE);
	ck_assert(a->layers[1].has_params && !a->layers[1].trainable);
	ck_assert(a->layers[3].has_params && !a->layers[3].trainable);
	ck_assert(a->layers[2].trainable && !a->layers[4].has_params);
	ck_assert_uint_eq(a->layers[1].n_weight, 6);
	ck_assert_uint_eq(a->layers[3].out_features, 5);
	ck_assert_double_eq(a->layers[4].rate, 0.25);
	ck_assert_double_eq(a->layers[5].lo, -0.8);
	ck_assert_double_eq(a->layers[5].hi, 0.7);
	/* They join the group before them; first, their type's name. */
	ck_assert_str_eq(a->layers[1].group, "flatten");
	ck_assert_str_eq(a->layers[3].group, "dense");
	zm_buf_init(&j);
	zm_arch_to_json(a, &j);
	ck_assert(!j.failed);
	ck_assert_msg(strstr(j.data, "\"rate\": 0.25,"), "%s", j.data);
	ck_assert_msg(strstr(j.data, "\"min\": -0.8, \"max\": 0.7"), "%s",
	              j.data);
	ck_assert_int_eq(zm_arch_parse_json(j.data, j.len, "j", &b, &err),
	                 ZM_OK);
	ck_assert(zm_arch_equal(a, b));
	zm_buf_release(&j);
	zm_arch_free(b);
	zm_arch_free(a);
}
END_TEST

/*
 * The double-precision reference of arch_all: x (n x 6) through
 * standardize (mean, inv), dense h (w1, b1, tanh), batchnorm (batch
 * statistics when train, else running rm, rv), dropout (identity, or the
 * given mask), clip, dense o (w2, b2); returns the mean cross-entropy
 * against labels and the logits in out.
 */
struct ref {
	double mean[6], inv[6];
	double w1[5 * 6], b1[5];
	double rm[5], rv[5];
	double w2[3 * 5], b2[3];
	const float *mask;       /* n x 5, or NULL */
	double lo, hi;
};

static double ref_loss(const struct ref *p, const float *x, size_t n,
                       const int64_t *labels, bool train, double *out)
{
	double h[8][5], mu[5] = { 0 }, var[5] = { 0 }, total = 0;
	size_t r, i, j;

	ck_assert_uint_le(n, 8);
	for (r = 0; r < n; r++)
		for (j = 0; j < 5; j++) {
			double v = p->b1[j];
			for (i = 0; i < 6; i++)
				v += p->w1[j * 6 + i] *
				     ((x[r * 6 + i] - p->mean[i]) * p->inv[i]);
			h[r][j] = tanh(v);
		}
	for (j = 0; j < 5; j++) {
		if (train) {
			for (r = 0; r < n; r++)
				mu[j] += h[r][j] / (double)n;
			for (r = 0; r < n; r++)
				var[j] += (h[r][j] - mu[j]) * (h[r][j] - mu[j]) /
				          (double)n;
		} else {
			mu[j] = p->rm[j];
			var[j] = p->rv[j];
		}
		for (r = 0; r < n; r++) {
			double v = (h[r][j] - mu[j]) / sqrt(var[j] + 1e-5);
			if (p->mask)
				v *= p->mask[r * 5 + j];
			h[r][j] = v < p->lo ? p->lo : v > p->hi ? p->hi : v;
		}
	}
	for (r = 0; r < n; r++) {
		double z[3], mx = -INFINITY, s = 0;
		for (j = 0; j < 3; j++) {
			z[j] = p->b2[j];
			for (i = 0; i < 5; i++)
				z[j] += p->w2[j * 5 + i] * h[r][i];
			mx = fmax(mx, z[j]);
			if (out)
				out[r * 3 + j] = z[j];
		}
		for (j = 0; j < 3; j++)
			s += exp(z[j] - mx);
		total += mx + log(s) - z[labels[r]];
	}
	return total / (double)n;
}

static void to_double(const struct zm_tensor *t, double *d)
{
	size_t i;

	for (i = 0; i < zm_tensor_numel(t); i++)
		d[i] = ((const float *)t->data)[i];
}

/* A model of arch_all with every tensor random (inv_std, running
 * variance positive) and the reference holding the same values. */
static struct zm_model *random_model(uint64_t seed, struct ref *p)
{
	struct zm_model *m = unit_model(arch_all, seed);
	struct zm_rng r;
	size_t i;

	zm_rng_seed(&r, seed + 100);
	fill(&r, m->layers[1].weight.data, 6, 2.0);
	fill(&r, m->layers[1].bias.data, 6, 1.0);
	fill(&r, m->layers[2].bias.data, 5, 0.3);
	fill(&r, m->layers[3].weight.data, 5, 0.5);
	fill(&r, m->layers[3].bias.data, 5, 1.0);
	fill(&r, m->layers[6].bias.data, 3, 0.3);
	for (i = 0; i < 6; i++) {
		float *inv = m->layers[1].bias.data;
		inv[i] = 0.5f + fabsf(inv[i]);
	}
	for (i = 0; i < 5; i++) {
		float *rv = m->layers[3].bias.data;
		rv[i] = 0.05f + fabsf(rv[i]);
	}
	to_double(&m->layers[1].weight, p->mean);
	to_double(&m->layers[1].bias, p->inv);
	to_double(&m->layers[2].weight, p->w1);
	to_double(&m->layers[2].bias, p->b1);
	to_double(&m->layers[3].weight, p->rm);
	to_double(&m->layers[3].bias, p->rv);
	to_double(&m->layers[6].weight, p->w2);
	to_double(&m->layers[6].bias, p->b2);
	p->mask = NULL;
	p->lo = -0.8;
	p->hi = 0.7;
	return m;
}

/* Inference: every layer against the naive loops, dropout the identity. */
START_TEST(test_layer_forward_vs_naive)
{
	struct ref p;
	struct zm_model *m = random_model(7 + (uint64_t)_i, &p);
	struct zm_workspace *ws;
	struct zm_error err;
	struct zm_rng r;
	float x[8 * 6];
	int64_t labels[8] = { 0 };
	double ref[8 * 3];
	const float *out;
	size_t n = 1 + (size_t)_i * 7 / 3, i, clipped = 0;

	zm_rng_seed(&r, 3 + (uint64_t)_i);
	fill(&r, x, n * 6, 3.0);
	ck_assert_int_eq(zm_workspace_new(m->arch, 8, false, &ws, &err), ZM_OK);
	out = zm_model_forward(m, ws, x, n);
	ref_loss(&p, x, n, labels, false, ref);
	for (i = 0; i < n * 3; i++)
		ck_assert_msg(fabs(out[i] - ref[i]) <= 1e-5 * (1 + fabs(ref[i])),
		              "logit %zu: %.9g vs %.9g", i, out[i], ref[i]);
	/* The clip layer's output is inside its bounds, and bites. */
	for (i = 0; i < n * 5; i++) {
		ck_assert(ws->out[5][i] >= -0.8f && ws->out[5][i] <= 0.7f);
		clipped += ws->out[5][i] == -0.8f || ws->out[5][i] == 0.7f;
	}
	if (n >= 4)
		ck_assert_uint_gt(clipped, 0);
	zm_workspace_free(ws);
	zm_model_free(m);
}
END_TEST

/*
 * Training: batchnorm on batch statistics and dropout with its mask; the
 * gradients of both dense layers (h's reach it through clip, dropout and
 * batchnorm) against central differences of ref_loss.
 */
START_TEST(test_layer_gradient_check)
{
	struct ref p;
	struct zm_model *m = random_model(11 + (uint64_t)_i, &p);
	struct zm_workspace *ws;
	struct zm_error err;
	struct zm_rng r;
	float x[8 * 6], mask[8 * 5];
	int64_t labels[8];
	double ref[8 * 3], *params[2][2];
	size_t sizes[2][2] = { { 30, 5 }, { 15, 3 } }, layer[2] = { 2, 6 };
	const float *out;
	size_t n = 2 + (size_t)_i, i, k, t;

	zm_rng_seed(&r, 5 + (uint64_t)_i);
	fill(&r, x, n * 6, 3.0);
	for (i = 0; i < n; i++)
		labels[i] = (int64_t)zm_rng_below(&r, 3);
	ck_assert_int_eq(zm_workspace_new(m->arch, 8, true, &ws, &err), ZM_OK);
	zm_rng_seed(&ws->rng, 99 + (uint64_t)_i);
	out = zm_model_forward(m, ws, x, n);
	/* The mask the pass drew: 0 or 1 / (1 - 0.25). */
	for (i = 0; i < n * 5; i++) {
		mask[i] = ws->pre[4][i];
		ck_assert(mask[i] == 0.0f || fabsf(mask[i] - 4.0f / 3) < 1e-6);
	}
	p.mask = mask;
	ref_loss(&p, x, n, labels, true, ref);
	for (i = 0; i < n * 3; i++)
		ck_assert_msg(fabs(out[i] - ref[i]) <= 1e-5 * (1 + fabs(ref[i])),
		              "train logit %zu: %.9g vs %.9g", i, out[i], ref[i]);
	ck_assert_int_eq(zm_loss_cross_entropy(out, labels, n, 3, NULL, NULL,
	                                       ws->dlogits, &err), ZM_OK);
	zm_model_backward(m, ws, x, n, ws->dlogits);

	params[0][0] = p.w1;
	params[0][1] = p.b1;
	params[1][0] = p.w2;
	params[1][1] = p.b2;
	for (t = 0; t < 2; t++)
		for (k = 0; k < 2; k++)
			for (i = 0; i < sizes[t][k]; i++) {
				const double h = 1e-6;
				double *v = &params[t][k][i], save = *v, num, ana;
				double up, down;
				*v = save + h;
				up = ref_loss(&p, x, n, labels, true, NULL);
				*v = save - h;
				down = ref_loss(&p, x, n, labels, true, NULL);
				*v = save;
				num = (up - down) / (2 * h);
				ana = k ? ws->db[layer[t]][i] : ws->dw[layer[t]][i];
				ck_assert_msg(fabs(num - ana) <= 2e-5 + 1e-3 * fabs(num),
				              "n=%zu layer %zu %s %zu: analytic "
				              "%.9g numeric %.9g", n, layer[t],
				              k ? "bias" : "weight", i, ana, num);
			}
	/* Fitted and running statistics have no gradient. */
	for (i = 0; i < 6; i++)
		ck_assert(ws->dw[1][i] == 0.0f && ws->db[1][i] == 0.0f);
	for (i = 0; i < 5; i++)
		ck_assert(ws->dw[3][i] == 0.0f && ws->db[3][i] == 0.0f);
	zm_workspace_free(ws);
	zm_model_free(m);
}
END_TEST

/*
 * A training step moves batchnorm's running statistics by momentum 0.1
 * towards the batch's mean and unbiased variance (PyTorch's rule), leaves
 * standardize's alone, and trains the dense layers.
 */
START_TEST(test_layer_train_step)
{
	struct ref p;
	struct zm_model *m = random_model(23, &p), *before;
	struct zm_workspace *ws;
	struct zm_optim_config cfg;
	struct zm_optim *opt;
	struct zm_error err;
	struct zm_rng r;
	float x[8 * 6], h[8 * 5];
	int64_t labels[8];
	size_t n = 8, i, j;

	zm_rng_seed(&r, 17);
	fill(&r, x, n * 6, 3.0);
	for (i = 0; i < n; i++)
		labels[i] = (int64_t)(i % 3);
	ck_assert_int_eq(zm_model_copy(m, &before, &err), ZM_OK);
	ck_assert_int_eq(zm_workspace_new(m->arch, 8, true, &ws, &err), ZM_OK);
	zm_optim_config_default(&cfg, ZM_OPTIM_ADAM);
	ck_assert_int_eq(zm_optim_new(m->arch, &cfg, &opt, &err), ZM_OK);
	/* h, the batchnorm input, as the reference computes it. */
	for (i = 0; i < n; i++)
		for (j = 0; j < 5; j++) {
			double v = p.b1[j];
			size_t k;
			for (k = 0; k < 6; k++)
				v += p.w1[j * 6 + k] *
				     ((x[i * 6 + k] - p.mean[k]) * p.inv[k]);
			h[i * 5 + j] = (float)tanh(v);
		}
	ck_assert_int_eq(zm_train_step(m, opt, ws, x, labels, n, 1.0f, NULL,
	                               &err), ZM_OK);
	for (j = 0; j < 5; j++) {
		double mu = 0, var = 0;
		for (i = 0; i < n; i++)
			mu += h[i * 5 + j] / (double)n;
		for (i = 0; i < n; i++)
			var += (h[i * 5 + j] - mu) * (h[i * 5 + j] - mu) /
			       (double)(n - 1);
		ck_assert_double_eq_tol(((float *)m->layers[3].weight.data)[j],
		                        0.9 * p.rm[j] + 0.1 * mu, 1e-6);
		ck_assert_double_eq_tol(((float *)m->layers[3].bias.data)[j],
		                        0.9 * p.rv[j] + 0.1 * var, 1e-6);
	}
	ck_assert(!memcmp(m->layers[1].weight.data,
	                  before->layers[1].weight.data, 6 * sizeof(float)));
	ck_assert(!memcmp(m->layers[1].bias.data, before->layers[1].bias.data,
	                  6 * sizeof(float)));
	ck_assert(memcmp(m->layers[2].weight.data,
	                 before->layers[2].weight.data, 30 * sizeof(float)));
	zm_optim_free(opt);
	zm_workspace_free(ws);
	zm_model_free(before);
	zm_model_free(m);
}
END_TEST

/* Dropout: about rate of the values dropped, the rest scaled; the same
 * seed gives the same mask; a new model's statistics are PyTorch's. */
START_TEST(test_layer_dropout_and_init)
{
	struct zm_model *m = unit_model("input: [64]\nlayers:\n"
	                                "  - {name: s, type: standardize}\n"
	                                "  - {name: b, type: batchnorm}\n"
	                                "  - {name: d, type: dropout, rate: 0.3}\n"
	                                "  - {name: o, units: 2}\n", 1);
	struct zm_workspace *ws, *ws2;
	struct zm_error err;
	float x[32 * 64];
	size_t i, zeros = 0;

	for (i = 0; i < 64; i++) {
		ck_assert(((float *)m->layers[0].weight.data)[i] == 0.0f);
		ck_assert(((float *)m->layers[0].bias.data)[i] == 0.0f);
		ck_assert(((float *)m->layers[1].weight.data)[i] == 0.0f);
		ck_assert(((float *)m->layers[1].bias.data)[i] == 1.0f);
		((float *)m->layers[0].bias.data)[i] = 1.0f;
	}
	for (i = 0; i < 32 * 64; i++)
		x[i] = (float)(i % 7) - 3.0f;
	ck_assert_int_eq(zm_workspace_new(m->arch, 32, true, &ws, &err), ZM_OK);
	ck_assert_int_eq(zm_workspace_new(m->arch, 32, true, &ws2, &err), ZM_OK);
	zm_rng_seed(&ws->rng, 5);
	zm_rng_seed(&ws2->rng, 5);
	zm_model_forward(m, ws, x, 32);
	zm_model_forward(m, ws2, x, 32);
	for (i = 0; i < 32 * 64; i++) {
		float in = ws->out[1][i], o = ws->out[2][i];
		ck_assert(o == 0.0f || fabsf(o - in / 0.7f) <= 1e-5f * fabsf(o));
		zeros += ws->pre[2][i] == 0.0f;
		ck_assert(ws->pre[2][i] == ws2->pre[2][i]);
	}
	/* 2048 draws at 0.3: 614 expected, sd 21. */
	ck_assert_uint_gt(zeros, 614 - 105);
	ck_assert_uint_lt(zeros, 614 + 105);
	zm_workspace_free(ws);
	zm_workspace_free(ws2);
	zm_model_free(m);
}
END_TEST

/* Two copies of one initialisation whose standardize and batchnorm
 * statistics differ (fitted to other data) are still related by their
 * units' alignment: statistics are not trained from the start. */
START_TEST(test_layer_lineage)
{
	struct ref p;
	struct zm_model *a = random_model(31, &p), *b;
	struct zm_lineage_info info;
	struct zm_error err;
	size_t i;

	ck_assert_int_eq(zm_model_copy(a, &b, &err), ZM_OK);
	for (i = 0; i < 6; i++)
		((float *)b->layers[1].weight.data)[i] += (float)i;
	for (i = 0; i < 5; i++)
		((float *)b->layers[3].bias.data)[i] *= 3.0f + (float)i;
	ck_assert_int_eq(zm_lineage_related(a, b, &info, &err), ZM_OK);
	ck_assert_int_eq(info.basis, ZM_LINEAGE_BY_ALIGNMENT);
	ck_assert_int_eq(info.verdict, ZM_LINEAGE_RELATED);
	ck_assert(isnan(info.score[1]) && isnan(info.score[3]));
	ck_assert_double_eq_tol(info.score[2], 1.0, 1e-12);
	zm_model_free(b);
	zm_model_free(a);
}
END_TEST

Suite *suite_layers(void)
{
	Suite *s = suite_create("layers");
	TCase *tc = tcase_create("core");

	tcase_add_loop_test(tc, test_layer_arch_errors, 0,
	                    (int)(sizeof(bad_archs) / sizeof(bad_archs[0])));
	tcase_add_test(tc, test_layer_arch_round_trip);
	tcase_add_test(tc, test_one_hot_arch);
	tcase_add_test(tc, test_one_hot_fill);
	tcase_add_test(tc, test_one_hot_gradient);
	tcase_add_loop_test(tc, test_layer_forward_vs_naive, 0, 4);
	tcase_add_loop_test(tc, test_layer_gradient_check, 0, 6);
	tcase_add_test(tc, test_layer_train_step);
	tcase_add_test(tc, test_layer_dropout_and_init);
	tcase_add_test(tc, test_layer_lineage);
	suite_add_tcase(s, tc);
	return s;
}
