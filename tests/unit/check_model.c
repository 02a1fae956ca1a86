/*
 * Models: arch parsing and its positioned errors, JSON round trip, seeded
 * initialisation, layer GEMMs against naive loops, gradients against
 * central finite differences of an independent double-precision reference,
 * losses against closed forms, and the document round trip.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "json.h"
#include "model.h"
#include "random.h"
#include "stream.h"
#include "unit.h"

/* ---- parsing ---- */

START_TEST(test_arch_parse)
{
	struct zm_arch *a = unit_arch(
		"input: [1, 28, 28]\n"
		"loss: cross-entropy\n"
		"layers:\n"
		"  - {name: flat, type: flatten}\n"
		"  - {name: fc1, type: dense, units: 32, activation: relu, group: features}\n"
		"  - {name: out, units: 10}\n");

	ck_assert_int_eq(a->input_ndim, 3);
	ck_assert_uint_eq(a->input_features, 784);
	ck_assert_uint_eq(a->n_layers, 3);
	ck_assert_int_eq(a->layers[0].type, ZM_LAYER_FLATTEN);
	ck_assert_uint_eq(a->layers[0].out_features, 784);
	ck_assert_str_eq(a->layers[0].group, "flatten");
	ck_assert_uint_eq(a->layers[1].in_features, 784);
	ck_assert_int_eq(a->layers[1].act, ZM_ACT_RELU);
	ck_assert_str_eq(a->layers[1].group, "features");
	ck_assert_int_eq(a->layers[2].act, ZM_ACT_IDENTITY);
	ck_assert_str_eq(a->layers[2].group, "dense");
	ck_assert_uint_eq(a->output_features, 10);
	ck_assert_uint_eq(a->max_features, 784);
	ck_assert_uint_eq(zm_arch_param_count(a), 784 * 32 + 32 + 32 * 10 + 10);
	ck_assert_int_eq(zm_arch_find_layer(a, "out"), 2);
	ck_assert_int_eq(zm_arch_find_layer(a, "nope"), -1);
	zm_arch_free(a);

	/* A dense layer on a multi-dimensional input flattens it. */
	a = unit_arch("input: [2, 3]\nloss: mse\nlayers: [{name: o, units: 1}]\n");
	ck_assert_uint_eq(a->layers[0].in_features, 6);
	ck_assert_int_eq(a->loss, ZM_LOSS_MSE);
	zm_arch_free(a);
}
END_TEST

static const struct {
	const char *yaml;
	const char *prefix;    /* exact "file:LINE:COL:" */
	const char *says;      /* part of the message */
} bad_archs[] = {
	{ "input: [4]\nlayers:\n  - name: a\n    units: 3\n    activation: swish\n",
	  "arch.yaml:5:17: ", "unknown activation 'swish'" },
	{ "input: [4]\nlayers:\n  - name: a\n    units: 0\n",
	  "arch.yaml:4:12: ", "units" },
	{ "input: [4]\nlayers:\n  - name: a\n    units: 99999999\n",
	  "arch.yaml:4:12: ", "units" },
	{ "input: [4]\nlayers:\n  - name: a\n    units: 3\n  - name: a\n    units: 2\n",
	  "arch.yaml:5:11: ", "duplicate layer name 'a'" },
	{ "input: [4]\nlayers:\n  - name: a\n    unit: 3\n",
	  "arch.yaml:4:5: ", "unknown key 'unit'" },
	{ "input: [4]\nlayer:\n  - name: a\n",
	  "arch.yaml:2:1: ", "unknown key 'layer'" },
	{ "layers:\n  - {name: a, units: 3}\n",
	  "arch.yaml:1:1: ", "missing 'input'" },
	{ "input: [4]\nlayers:\n  - name: c1\n    type: conv2d\n",
	  "arch.yaml:3:5: ", "conv2d needs an input of shape" },
	{ "input: [4]\nlayers:\n  - name: c1\n    type: lstm\n",
	  "arch.yaml:4:11: ", "unknown type 'lstm'" },
	{ "input: [4]\nlayers:\n  - name: fc.1\n    units: 3\n",
	  "arch.yaml:3:11: ", "[A-Za-z0-9_-]" },
	{ "input: [4]\nloss: hinge\nlayers:\n  - {name: a, units: 3}\n",
	  "arch.yaml:2:7: ", "unknown loss 'hinge'" },
	{ "input: [4]\nlayers:\n  - name: a\n    units: 1\n",
	  "arch.yaml:4:12: ", "at least 2 output" },
	/* A conv2d last layer has filters, not units (a fuzzer found the
	 * message pointing at a missing node). */
	{ "input: [1, 6, 6]\nlayers:\n  - {name: c, type: conv2d, filters: 1, "
	  "kernel: 6}\n", "arch.yaml:3:38: ", "at least 2 output" },
	{ "input: [4]\nclasses: 5\nlayers:\n  - {name: a, units: 3}\n",
	  "arch.yaml:2:10: ", "last layer has 3 units" },
	{ "input: [0]\nlayers:\n  - {name: a, units: 3}\n",
	  "arch.yaml:1:9: ", "input dimension" },
	{ "input: [4]\nlayers:\n  - {name: f, type: flatten, units: 3}\n",
	  "arch.yaml:3:30: ", "flatten takes no 'units'" },
	{ "input: [4]\nlayers:\n  - {name: f, type: flatten}\n",
	  "arch.yaml:3:3: ", "at least one dense layer" },
	{ "input: [4]\nlayers:\n  - {units: 3}\n",
	  "arch.yaml:3:5: ", "missing 'name'" },
	{ "input: [100000, 100000]\nlayers:\n  - {name: a, units: 3}\n",
	  "arch.yaml:1:17: ", "features" },
};

START_TEST(test_arch_errors)
{
	struct zm_node *root;
	static struct zm_arch dummy;
	struct zm_arch *arch = &dummy;
	struct zm_error err;
	const char *yaml = bad_archs[_i].yaml;

	ck_assert_int_eq(zm_config_parse(yaml, strlen(yaml), "arch.yaml", &root,
	                                 &err), ZM_OK);
	ck_assert_int_eq(zm_arch_parse(root, &arch, &err), ZM_ERR_CONFIG);
	ck_assert_ptr_null(arch);
	ck_assert_msg(!strncmp(err.msg, bad_archs[_i].prefix,
	                       strlen(bad_archs[_i].prefix)),
	              "case %d: want prefix '%s', got '%s'", _i,
	              bad_archs[_i].prefix, err.msg);
	ck_assert_msg(strstr(err.msg, bad_archs[_i].says),
	              "case %d: '%s' does not say '%s'", _i, err.msg,
	              bad_archs[_i].says);
	zm_node_free(root);
}
END_TEST

START_TEST(test_arch_load_file)
{
	char path[4200];
	struct zm_arch *arch;
	struct zm_error err;
	FILE *f;

	snprintf(path, sizeof(path), "%s/a.yaml", unit_tmpdir());
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs("input: [3]\nlayers:\n  - {name: a, units: 2, activation: tanhh}\n", f);
	fclose(f);
	ck_assert_int_eq(zm_arch_load(path, &arch, &err), ZM_ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(err.msg, ":3:37: "));
	ck_assert_ptr_nonnull(strstr(err.msg, path));
}
END_TEST

START_TEST(test_arch_json_round_trip)
{
	struct zm_arch *a = unit_arch(
		"input: [1, 4, 4]\n"
		"loss: mse\n"
		"layers:\n"
		"  - {name: flat, type: flatten, group: pre}\n"
		"  - {name: fc-1, units: 5, activation: gelu, group: features}\n"
		"  - {name: fc_2, units: 4, activation: sigmoid}\n"
		"  - {name: h3, units: 3, activation: tanh}\n"
		"  - {name: \"7\", units: 2, activation: relu, group: head}\n");
	struct zm_arch *b, *c;
	struct zm_buf buf;
	struct zm_error err;

	zm_buf_init(&buf);
	zm_arch_to_json(a, &buf);
	ck_assert(!buf.failed);
	ck_assert_int_eq(zm_arch_parse_json(buf.data, buf.len, "zm.arch", &b,
	                                    &err), ZM_OK);
	ck_assert(zm_arch_equal(a, b));
	ck_assert_uint_eq(b->output_features, 2);
	ck_assert_int_eq(zm_model_same_arch(a, b, &err), ZM_OK);
	ck_assert_int_eq(zm_arch_copy(a, &c, &err), ZM_OK);
	ck_assert(zm_arch_equal(a, c));
	/* Changing one field breaks equality and same_arch names it. */
	c->layers[3].units = 7;
	ck_assert(!zm_arch_equal(a, c));
	ck_assert_int_eq(zm_model_same_arch(a, c, &err), ZM_ERR_DATA);
	ck_assert_str_eq(err.msg, "layer 4 'h3': units 3 vs 7");
	c->layers[3].units = 3;
	free(c->layers[1].group);
	c->layers[1].group = strdup("other");
	ck_assert(!zm_arch_equal(a, c));
	ck_assert_int_eq(zm_model_same_arch(a, c, &err), ZM_OK);
	zm_buf_release(&buf);
	zm_arch_free(a);
	zm_arch_free(b);
	zm_arch_free(c);
}
END_TEST

/* ---- initialisation ---- */

START_TEST(test_seeded_init)
{
	struct zm_arch *a = unit_arch(
		"input: [400]\nlayers:\n"
		"  - {name: h, units: 300, activation: relu}\n"
		"  - {name: o, units: 200, activation: tanh}\n");
	struct zm_model *m1, *m2, *m3;
	struct zm_error err;
	const float *w;
	double s = 0, s2 = 0, lim = sqrt(6.0 / 500.0), mx = 0;
	size_t i, n;

	ck_assert_int_eq(zm_model_new(a, 42, &m1, &err), ZM_OK);
	ck_assert_int_eq(zm_model_new(a, 42, &m2, &err), ZM_OK);
	ck_assert_int_eq(zm_model_new(a, 43, &m3, &err), ZM_OK);
	for (i = 0; i < 2; i++) {
		ck_assert_str_eq(m1->layers[i].weight.name,
		                 i ? "o.weight" : "h.weight");
		ck_assert(!memcmp(m1->layers[i].weight.data,
		                  m2->layers[i].weight.data,
		                  m1->layers[i].weight.nbytes));
		ck_assert(memcmp(m1->layers[i].weight.data,
		                 m3->layers[i].weight.data,
		                 m1->layers[i].weight.nbytes));
	}
	ck_assert_int_eq(m1->layers[0].weight.shape[0], 300);
	ck_assert_int_eq(m1->layers[0].weight.shape[1], 400);
	/* He-normal: mean 0, std sqrt(2/400). */
	w = m1->layers[0].weight.data;
	n = 300 * 400;
	for (i = 0; i < n; i++) {
		s += w[i];
		s2 += (double)w[i] * w[i];
	}
	ck_assert_double_eq_tol(s / n, 0.0, 0.002);
	ck_assert_double_eq_tol(sqrt(s2 / n), sqrt(2.0 / 400), 0.002);
	/* Glorot-uniform: bounded by sqrt(6/(in+out)), std lim/sqrt(3). */
	w = m1->layers[1].weight.data;
	n = 200 * 300;
	s2 = 0;
	for (i = 0; i < n; i++) {
		s2 += (double)w[i] * w[i];
		if (fabs(w[i]) > mx)
			mx = fabs(w[i]);
	}
	ck_assert(mx <= lim);
	ck_assert(mx > 0.99 * lim);
	ck_assert_double_eq_tol(sqrt(s2 / n), lim / sqrt(3.0), 0.002);
	for (i = 0; i < 200; i++)
		ck_assert(((float *)m1->layers[1].bias.data)[i] == 0.0f);
	zm_model_free(m1);
	zm_model_free(m2);
	zm_model_free(m3);
	zm_arch_free(a);
}
END_TEST

START_TEST(test_rng_reference)
{
	/* Published splitmix64 outputs for state 0 (Vigna's splitmix64.c). */
	uint64_t st = 0;
	struct zm_rng r1, r2;
	size_t idx[50], seen[50] = { 0 }, i;

	ck_assert_uint_eq(zm_splitmix64(&st), UINT64_C(0xe220a8397b1dcdaf));
	ck_assert_uint_eq(zm_splitmix64(&st), UINT64_C(0x6e789e6aa1b965f4));
	zm_rng_seed(&r1, 7);
	zm_rng_seed(&r2, 7);
	for (i = 0; i < 100; i++) {
		double u = zm_rng_uniform(&r1);
		ck_assert(u >= 0 && u < 1);
		ck_assert(zm_rng_below(&r1, 3) < 3);
	}
	zm_rng_permutation(&r2, idx, 50);
	for (i = 0; i < 50; i++)
		seen[idx[i]]++;
	for (i = 0; i < 50; i++)
		ck_assert_uint_eq(seen[i], 1);
}
END_TEST

/* ---- layers against naive loops ---- */

static const size_t dims[] = { 1, 3, 17, 64 };

static void fill(struct zm_rng *r, float *x, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		x[i] = (float)(2.0 * zm_rng_uniform(r) - 1.0);
}

START_TEST(test_layer_vs_naive)
{
	size_t rows = dims[_i % 4], nin = dims[(_i / 4) % 4];
	size_t nout = dims[_i / 16];
	char yaml[200];
	struct zm_arch *a;
	struct zm_model *m;
	struct zm_error err;
	struct zm_rng r;
	float *x, *y, *dy, *dw, *db, *dx, *dw0, db0[64];
	const float *w, *b;
	size_t i, j, k;

	snprintf(yaml, sizeof(yaml),
	         "input: [%zu]\nloss: mse\nlayers: [{name: l, units: %zu}]\n",
	         nin, nout);
	a = unit_arch(yaml);
	ck_assert_int_eq(zm_model_new(a, (uint64_t)_i, &m, &err), ZM_OK);
	zm_rng_seed(&r, 100 + (uint64_t)_i);
	fill(&r, m->layers[0].bias.data, nout);
	w = m->layers[0].weight.data;
	b = m->layers[0].bias.data;
	x = malloc(rows * nin * sizeof(float));
	y = malloc(rows * nout * sizeof(float));
	dy = malloc(rows * nout * sizeof(float));
	dw = malloc(nout * nin * sizeof(float));
	db = malloc(nout * sizeof(float));
	dx = malloc(rows * nin * sizeof(float));
	fill(&r, x, rows * nin);
	fill(&r, dy, rows * nout);
	zm_layer_linear(&m->layers[0], x, rows, y);
	for (i = 0; i < rows; i++)
		for (j = 0; j < nout; j++) {
			double s = b[j];
			for (k = 0; k < nin; k++)
				s += (double)x[i * nin + k] * w[j * nin + k];
			ck_assert_double_eq_tol(y[i * nout + j], s, 1e-5);
		}
	zm_layer_backward(&m->layers[0], x, rows, dy, dw, db, 0.0f, dx);
	for (j = 0; j < nout; j++) {
		double sb = 0;
		for (k = 0; k < nin; k++) {
			double s = 0;
			for (i = 0; i < rows; i++)
				s += (double)dy[i * nout + j] * x[i * nin + k];
			ck_assert_double_eq_tol(dw[j * nin + k], s, 1e-5);
		}
		for (i = 0; i < rows; i++)
			sb += dy[i * nout + j];
		ck_assert_double_eq_tol(db[j], sb, 1e-5);
	}
	for (i = 0; i < rows; i++)
		for (k = 0; k < nin; k++) {
			double s = 0;
			for (j = 0; j < nout; j++)
				s += (double)dy[i * nout + j] * w[j * nin + k];
			ck_assert_double_eq_tol(dx[i * nin + k], s, 1e-5);
		}
	/* beta 1 accumulates into dw and db. */
	dw0 = malloc(nout * nin * sizeof(float));
	memcpy(dw0, dw, nout * nin * sizeof(float));
	memcpy(db0, db, nout * sizeof(float));
	zm_layer_backward(&m->layers[0], x, rows, dy, dw, db, 1.0f, NULL);
	for (j = 0; j < nout * nin; j++)
		ck_assert_float_eq_tol(dw[j], 2 * dw0[j], 1e-5);
	for (j = 0; j < nout; j++)
		ck_assert_float_eq_tol(db[j], 2 * db0[j], 1e-5);
	free(dw0);
	free(x);
	free(y);
	free(dy);
	free(dw);
	free(db);
	free(dx);
	zm_model_free(m);
	zm_arch_free(a);
}
END_TEST

/* ---- activations and losses against libm ---- */

static double ref_act(enum zm_activation act, double x)
{
	switch (act) {
	case ZM_ACT_IDENTITY: return x;
	case ZM_ACT_RELU: return x > 0 ? x : 0;
	case ZM_ACT_TANH: return tanh(x);
	case ZM_ACT_SIGMOID: return 1 / (1 + exp(-x));
	case ZM_ACT_GELU:
		return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) *
		                           (x + 0.044715 * x * x * x)));
	}
	return NAN;
}

START_TEST(test_activation_accuracy)
{
	enum zm_activation act = (enum zm_activation)_i;
	enum { N = 20001 };
	static float pre[N], out[N];
	size_t i;

	for (i = 0; i < N; i++)
		pre[i] = -100.0f + 0.01f * (float)i;
	zm_activation_apply(act, pre, out, N);
	for (i = 0; i < N; i++) {
		double want = ref_act(act, pre[i]);
		ck_assert_msg(fabs(out[i] - want) <= 1e-6 * fmax(1, fabs(want)),
		              "%s(%g) = %.9g, want %.9g",
		              zm_activation_name(act), pre[i], out[i], want);
	}
	/* In place gives the same values. */
	zm_activation_apply(act, pre, pre, N);
	ck_assert(!memcmp(pre, out, sizeof(out)));
	/* NaN propagates through every activation. */
	pre[0] = NAN;
	zm_activation_apply(act, pre, out, 1);
	ck_assert(isnan(out[0]));
}
END_TEST

START_TEST(test_cross_entropy_closed_form)
{
	/* Huge logits must not overflow: log-sum-exp keeps them finite. */
	float z[6] = { 1000.0f, -1000.0f, 0.0f, 1.0f, 2.0f, 3.0f };
	float g[6];
	int64_t y[2] = { 1, 2 };
	double loss = 0, lse;
	size_t correct = 0;
	struct zm_error err;

	ck_assert_int_eq(zm_loss_cross_entropy(z, y, 2, 3, &loss, &correct, g,
	                                       &err), ZM_OK);
	lse = 3 + log(exp(-2.0) + exp(-1.0) + 1.0);
	ck_assert_double_eq_tol(loss, 2000.0 + (lse - 3.0), 1e-3);
	ck_assert_uint_eq(correct, 1);
	ck_assert_float_eq_tol(g[0], 0.5f, 1e-6);
	ck_assert_float_eq_tol(g[1], -0.5f, 1e-6);
	ck_assert_float_eq_tol(g[2], 0.0f, 1e-6);
	ck_assert_float_eq_tol(g[3], exp(1.0 - lse) / 2, 1e-6);
	ck_assert_float_eq_tol(g[4], exp(2.0 - lse) / 2, 1e-6);
	ck_assert_float_eq_tol(g[5], (exp(3.0 - lse) - 1) / 2, 1e-6);
	y[1] = 3;
	ck_assert_int_eq(zm_loss_cross_entropy(z, y, 2, 3, NULL, NULL, NULL,
	                                       &err), ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "row 1: label 3"));
	y[1] = -1;
	ck_assert_int_eq(zm_loss_cross_entropy(z, y, 2, 3, NULL, NULL, NULL,
	                                       &err), ZM_ERR_DATA);
}
END_TEST

START_TEST(test_mse_closed_form)
{
	float out[4] = { 1, 2, 3, 4 }, t[4] = { 0, 2, 5, 4 }, g[4];
	double loss = 0;

	zm_loss_mse(out, t, 2, 2, &loss, g);
	/* rows: (1 + 0)/2 and (4 + 0)/2; sum 2.5 -> mean over 2 rows 1.25,
	 * PyTorch's MSELoss over 4 elements: 5/4. */
	ck_assert_double_eq_tol(loss, 2.5, 1e-12);
	ck_assert_float_eq_tol(g[0], 0.5f, 1e-7);
	ck_assert_float_eq_tol(g[1], 0.0f, 1e-7);
	ck_assert_float_eq_tol(g[2], -1.0f, 1e-7);
}
END_TEST

/* ---- gradients against finite differences ---- */

/*
 * An independent double-precision forward pass and loss, reading the
 * model's parameters through dp (one double per parameter, in layer order,
 * weight then bias), so that finite differences can perturb them.
 */
static double ref_loss(const struct zm_arch *a, const double *dp,
                       const float *x, const void *yv, size_t n,
                       double *logits_out)
{
	double h[2][64], total = 0;
	size_t r, l, i, j;

	for (r = 0; r < n; r++) {
		const double *p = dp;
		size_t width = a->input_features, cur = 0;
		for (i = 0; i < width; i++)
			h[0][i] = x[r * width + i];
		for (l = 0; l < a->n_layers; l++) {
			const struct zm_layer_spec *s = &a->layers[l];
			size_t o = s->out_features;
			if (!s->has_params)
				continue;
			for (j = 0; j < o; j++) {
				double v = p[o * width + j];
				for (i = 0; i < width; i++)
					v += p[j * width + i] * h[cur][i];
				h[1 - cur][j] = ref_act(s->act, v);
			}
			p += o * width + o;
			width = o;
			cur = 1 - cur;
		}
		if (logits_out)
			memcpy(logits_out + r * width, h[cur],
			       width * sizeof(double));
		if (a->loss == ZM_LOSS_CROSS_ENTROPY) {
			const int64_t *y = yv;
			double mx = h[cur][0], s = 0;
			for (i = 1; i < width; i++)
				mx = fmax(mx, h[cur][i]);
			for (i = 0; i < width; i++)
				s += exp(h[cur][i] - mx);
			total += mx + log(s) - h[cur][y[r]];
		} else {
			const float *t = yv;
			for (i = 0; i < width; i++) {
				double d = h[cur][i] - t[r * width + i];
				total += d * d / (double)(n * width);
			}
		}
	}
	return a->loss == ZM_LOSS_CROSS_ENTROPY ? total / (double)n : total;
}

START_TEST(test_gradient_check)
{
	enum zm_activation act = (enum zm_activation)(_i % 5);
	enum zm_loss loss = (_i / 5) % 2 ? ZM_LOSS_MSE : ZM_LOSS_CROSS_ENTROPY;
	size_t n = (_i / 10) ? 3 : 1;
	char yaml[400];
	struct zm_arch *a;
	struct zm_model *m;
	struct zm_workspace *ws;
	struct zm_error err;
	struct zm_rng r;
	float x[3 * 6], t[3 * 3], *dout;
	int64_t labels[3];
	const void *y;
	double *dp, logits[3 * 3];
	const float *out;
	size_t np, i, l, off, nout;

	/* Input [2, 3] through flatten, two hidden layers with act, 3 out. */
	snprintf(yaml, sizeof(yaml),
	         "input: [2, 3]\nloss: %s\nlayers:\n"
	         "  - {name: f, type: flatten}\n"
	         "  - {name: h1, units: 7, activation: %s}\n"
	         "  - {name: h2, units: 5, activation: %s}\n"
	         "  - {name: o, units: 3, activation: %s}\n",
	         zm_loss_name(loss), zm_activation_name(act),
	         zm_activation_name(act),
	         loss == ZM_LOSS_MSE ? zm_activation_name(act) : "identity");
	a = unit_arch(yaml);
	nout = a->output_features;
	ck_assert_int_eq(zm_model_new(a, 5 + (uint64_t)_i, &m, &err), ZM_OK);
	ck_assert_int_eq(zm_workspace_new(m->arch, 4, true, &ws, &err), ZM_OK);
	zm_rng_seed(&r, 77 + (uint64_t)_i);
	fill(&r, x, n * 6);
	fill(&r, t, n * nout);
	for (i = 0; i < n; i++)
		labels[i] = (int64_t)zm_rng_below(&r, nout);
	y = loss == ZM_LOSS_MSE ? (const void *)t : (const void *)labels;
	for (l = 1; l < 4; l++) {
		/* Non-zero biases exercise the bias path too. */
		float *b = m->layers[l].bias.data;
		fill(&r, b, m->arch->layers[l].out_features);
		for (i = 0; i < m->arch->layers[l].out_features; i++)
			b[i] *= 0.3f;
	}
	np = zm_arch_param_count(a);
	dp = malloc(np * sizeof(double));
	for (l = 1, off = 0; l < 4; l++) {
		const struct zm_layer *ly = &m->layers[l];
		size_t nw = zm_tensor_numel(&ly->weight), k;
		for (k = 0; k < nw; k++)
			dp[off++] = ((float *)ly->weight.data)[k];
		for (k = 0; k < zm_tensor_numel(&ly->bias); k++)
			dp[off++] = ((float *)ly->bias.data)[k];
	}
	ck_assert_uint_eq(off, np);

	out = zm_model_forward(m, ws, x, n);
	ref_loss(a, dp, x, y, n, logits);
	for (i = 0; i < n * nout; i++)
		ck_assert_double_eq_tol(out[i], logits[i], 1e-5);
	dout = ws->dlogits;
	if (loss == ZM_LOSS_MSE)
		zm_loss_mse(out, t, n, nout, NULL, dout);
	else
		ck_assert_int_eq(zm_loss_cross_entropy(out, labels, n, nout,
		                                       NULL, NULL, dout, &err),
		                 ZM_OK);
	zm_model_backward(m, ws, x, n, dout);

	for (l = 1, off = 0; l < 4; l++) {
		size_t nw = zm_tensor_numel(&m->layers[l].weight);
		size_t nb = zm_tensor_numel(&m->layers[l].bias), k;
		for (k = 0; k < nw + nb; k++, off++) {
			const double h = 1e-6;
			double save = dp[off], up, down, num, ana;
			dp[off] = save + h;
			up = ref_loss(a, dp, x, y, n, NULL);
			dp[off] = save - h;
			down = ref_loss(a, dp, x, y, n, NULL);
			dp[off] = save;
			num = (up - down) / (2 * h);
			ana = k < nw ? ws->dw[l][k] : ws->db[l][k - nw];
			ck_assert_msg(fabs(num - ana) <= 2e-5 + 1e-3 * fabs(num),
			              "%s %s n=%zu layer %zu param %zu: "
			              "analytic %.9g numeric %.9g",
			              zm_activation_name(act), zm_loss_name(loss),
			              n, l, k, ana, num);
		}
	}
	free(dp);
	zm_workspace_free(ws);
	zm_model_free(m);
	zm_arch_free(a);
}
END_TEST


/* ---- packed inference ---- */

/* The forward pass in double, straight from the weights. */
static void ref_forward(const struct zm_model *m, const float *x, size_t n,
                        double *out)
{
	const struct zm_arch *a = m->arch;
	size_t l, r, i, j, width = a->input_features;
	double *h = malloc(n * a->max_features * sizeof(double));
	double *g = malloc(n * a->max_features * sizeof(double));

	ck_assert(h && g);
	for (i = 0; i < n * width; i++)
		h[i] = x[i];
	for (l = 0; l < a->n_layers; l++) {
		const struct zm_layer_spec *s = &a->layers[l];
			const float *W = m->layers[l].weight.data;
		const float *B = m->layers[l].bias.data;
		double *t;
		for (r = 0; r < n; r++)
			for (j = 0; j < s->out_features; j++) {
				double v = B[j];
				for (i = 0; i < s->in_features; i++)
					v += (double)W[j * s->in_features + i] *
					     h[r * s->in_features + i];
				g[r * s->out_features + j] = ref_act(s->act, v);
			}
		t = h;
		h = g;
		g = t;
		width = s->out_features;
	}
	memcpy(out, h, n * width * sizeof(double));
	free(h);
	free(g);
}

static const char *const act_names[] = { "identity", "relu", "tanh", "sigmoid", "gelu" };

START_TEST(test_packed_forward)
{
	char yaml[300];
	struct zm_arch *a;
	struct zm_model *m, *other;
	struct zm_workspace *ws, *plain, *tws;
	struct zm_error err;
	struct zm_rng rng;
	const size_t rows[] = { 1, 13, 50 };
	float *x = malloc(50 * 40 * sizeof(float));
	double *want = malloc(50 * 5 * sizeof(double));
	size_t t, i;

	snprintf(yaml, sizeof(yaml),
	         "input: [40]\nlayers:\n"
	         "  - {name: a, units: 37, activation: %s}\n"
	         "  - {name: b, units: 70, activation: relu}\n"
	         "  - {name: c, units: 5}\n", act_names[_i]);
	a = unit_arch(yaml);
	ck_assert(x && want);
	ck_assert_int_eq(zm_model_new(a, 7, &m, &err), ZM_OK);
	ck_assert_int_eq(zm_model_new(a, 8, &other, &err), ZM_OK);
	ck_assert_int_eq(zm_workspace_new(a, 50, false, &ws, &err), ZM_OK);
	ck_assert_int_eq(zm_workspace_new(a, 50, false, &plain, &err), ZM_OK);
	ck_assert_int_eq(zm_workspace_new(a, 50, true, &tws, &err), ZM_OK);
	ck_assert_int_eq(zm_workspace_pack(tws, m, &err), ZM_ERR_USAGE);
	zm_rng_seed(&rng, 3);
	/* Biases start at 0: give them values so that their addition shows. */
	for (i = 0; i < a->n_layers; i++) {
		fill(&rng, m->layers[i].bias.data, a->layers[i].out_features);
		fill(&rng, other->layers[i].bias.data, a->layers[i].out_features);
	}
	ck_assert_int_eq(zm_workspace_pack(ws, m, &err), ZM_OK);
	fill(&rng, x, 50 * 40);
	for (t = 0; t < 3; t++) {
		const float *got = zm_model_forward(m, ws, x, rows[t]);
		const float *ref = zm_model_forward(m, plain, x, rows[t]);
		ref_forward(m, x, rows[t], want);
		for (i = 0; i < rows[t] * 5; i++) {
			ck_assert_msg(fabs(got[i] - want[i]) <= 1e-4 * (1 + fabs(want[i])),
			              "%s rows %zu [%zu]: %g vs %g", act_names[_i],
			              rows[t], i, (double)got[i], want[i]);
			ck_assert(fabs(got[i] - ref[i]) <= 1e-5 * (1 + fabs(ref[i])));
		}
	}
	/* Another model through the packed workspace: its own weights. */
	{
		const float *got = zm_model_forward(other, ws, x, 13);
		ref_forward(other, x, 13, want);
		for (i = 0; i < 13 * 5; i++)
			ck_assert(fabs(got[i] - want[i]) <= 1e-4 * (1 + fabs(want[i])));
	}
	/* Changed weights count once packed again. */
	for (i = 0; i < 5 * 70; i++)
		((float *)m->layers[2].weight.data)[i] *= -2.0f;
	ck_assert_int_eq(zm_workspace_pack(ws, m, &err), ZM_OK);
	{
		const float *got = zm_model_forward(m, ws, x, 50);
		ref_forward(m, x, 50, want);
		for (i = 0; i < 50 * 5; i++)
			ck_assert(fabs(got[i] - want[i]) <= 1e-4 * (1 + fabs(want[i])));
	}
	zm_workspace_free(ws);
	zm_workspace_free(plain);
	zm_workspace_free(tws);
	zm_model_free(m);
	zm_model_free(other);
	zm_arch_free(a);
	free(x);
	free(want);
}
END_TEST

/* ---- documents ---- */

static struct zm_model *small_model(uint64_t seed)
{
	struct zm_arch *a = unit_arch(
		"input: [5]\nlayers:\n"
		"  - {name: h, units: 4, activation: relu, group: features}\n"
		"  - {name: o, units: 3}\n");
	struct zm_model *m;
	struct zm_error err;

	ck_assert_int_eq(zm_model_new(a, seed, &m, &err), ZM_OK);
	zm_arch_free(a);
	return m;
}

START_TEST(test_doc_round_trip)
{
	struct zm_model *m = small_model(3), *back;
	struct zm_doc doc, doc2;
	struct zm_tensor t;
	struct zm_reader *rd;
	struct zm_error err;
	int64_t shape[1] = { 5 };
	void *bytes;
	size_t len, l;
	bool eof;

	struct zm_rng r;

	zm_rng_seed(&r, 1);
	fill(&r, m->layers[1].bias.data, 3);
	ck_assert_int_eq(zm_model_set_string(&m->name, "m0", &err), ZM_OK);
	ck_assert_int_eq(zm_model_set_string(&m->version, "3", &err), ZM_OK);
	ck_assert_int_eq(zm_model_set_string(&m->metrics,
	                 "{\"accuracy\": 0.5}", &err), ZM_OK);
	zm_tensor_init(&t);
	ck_assert_int_eq(zm_tensor_alloc(&t, "profile.input.mean", ZM_DTYPE_F32,
	                                 1, shape, &err), ZM_OK);
	((float *)t.data)[2] = 1.5f;
	ck_assert_int_eq(zm_doc_add(&m->extra, &t, &err), ZM_OK);
	ck_assert_int_eq(zm_doc_set_meta(&m->extra, "zm.profile.count", "17",
	                                 &err), ZM_OK);

	zm_doc_init(&doc);
	ck_assert_int_eq(zm_model_to_doc(m, &doc, &err), ZM_OK);
	ck_assert_str_eq(zm_doc_meta(&doc, "zm.kind"), "model");
	ck_assert_ptr_nonnull(zm_doc_find(&doc, "h.weight"));
	ck_assert_ptr_nonnull(zm_doc_find(&doc, "o.bias"));
	/* Through the serialised bytes and the reader, as a file would go. */
	ck_assert_int_eq(zm_doc_serialize(&doc, &bytes, &len, &err), ZM_OK);
	ck_assert_int_eq(zm_reader_open_mem(&rd, bytes, len, "mem", &err), ZM_OK);
	zm_doc_init(&doc2);
	ck_assert_int_eq(zm_reader_next(rd, &doc2, &eof, &err), ZM_OK);
	ck_assert(!eof);
	ck_assert_int_eq(zm_model_from_doc(&doc2, NULL, &back, &err), ZM_OK);
	ck_assert(zm_arch_equal(m->arch, back->arch));
	for (l = 0; l < 2; l++) {
		ck_assert(!memcmp(m->layers[l].weight.data,
		                  back->layers[l].weight.data,
		                  m->layers[l].weight.nbytes));
		ck_assert(!memcmp(m->layers[l].bias.data,
		                  back->layers[l].bias.data,
		                  m->layers[l].bias.nbytes));
	}
	ck_assert_str_eq(back->name, "m0");
	ck_assert_str_eq(back->version, "3");
	ck_assert_str_eq(back->metrics, "{\"accuracy\": 0.5}");
	ck_assert_ptr_null(back->parent);
	ck_assert_uint_eq(back->extra.n_tensors, 1);
	ck_assert_float_eq(((float *)zm_doc_find(&back->extra,
	                   "profile.input.mean")->data)[2], 1.5f);
	ck_assert_str_eq(zm_doc_meta(&back->extra, "zm.profile.count"), "17");
	ck_assert_ptr_null(zm_doc_meta(&back->extra, "zm.name"));
	zm_reader_close(rd);
	free(bytes);
	zm_doc_release(&doc);
	zm_doc_release(&doc2);
	zm_model_free(back);
	zm_model_free(m);
}
END_TEST

START_TEST(test_doc_validation)
{
	struct zm_model *m = small_model(9), *back;
	struct zm_doc doc;
	struct zm_tensor *t, h;
	struct zm_error err;
	size_t i;

	zm_doc_init(&doc);
	/* F16 weights are converted to F32. */
	ck_assert_int_eq(zm_model_to_doc(m, &doc, &err), ZM_OK);
	t = zm_doc_find(&doc, "h.weight");
	zm_tensor_init(&h);
	ck_assert_int_eq(zm_tensor_alloc(&h, "h.weight", ZM_DTYPE_F16, t->ndim,
	                                 t->shape, &err), ZM_OK);
	for (i = 0; i < 20; i++)
		((uint16_t *)h.data)[i] =
			zm_f32_to_f16(((float *)t->data)[i]);
	ck_assert(zm_doc_remove(&doc, "h.weight"));
	ck_assert_int_eq(zm_doc_add(&doc, &h, &err), ZM_OK);
	ck_assert_int_eq(zm_model_from_doc(&doc, NULL, &back, &err), ZM_OK);
	for (i = 0; i < 20; i++)
		ck_assert_float_eq_tol(((float *)back->layers[0].weight.data)[i],
		                       ((float *)m->layers[0].weight.data)[i],
		                       2e-3);
	ck_assert_int_eq(back->layers[0].weight.dtype, ZM_DTYPE_F32);
	zm_model_free(back);

	/* NaN: data error naming the tensor. */
	ck_assert_int_eq(zm_model_to_doc(m, &doc, &err), ZM_OK);
	((float *)zm_doc_find(&doc, "o.bias")->data)[1] = NAN;
	ck_assert_int_eq(zm_model_from_doc(&doc, NULL, &back, &err),
	                 ZM_ERR_DATA);
	ck_assert_ptr_null(back);
	ck_assert_ptr_nonnull(strstr(err.msg, "o.bias"));

	/* A missing tensor. */
	ck_assert_int_eq(zm_model_to_doc(m, &doc, &err), ZM_OK);
	ck_assert(zm_doc_remove(&doc, "o.weight"));
	ck_assert_int_eq(zm_model_from_doc(&doc, NULL, &back, &err),
	                 ZM_ERR_FORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "'o.weight' is missing"));

	/* A wrong shape. */
	ck_assert_int_eq(zm_model_to_doc(m, &doc, &err), ZM_OK);
	t = zm_doc_find(&doc, "h.bias");
	t->shape[0] = 2;
	t->nbytes = 8;
	ck_assert_int_eq(zm_model_from_doc(&doc, NULL, &back, &err),
	                 ZM_ERR_FORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "'h.bias': shape [2], expected [4]"));

	/* An integer dtype. */
	ck_assert_int_eq(zm_model_to_doc(m, &doc, &err), ZM_OK);
	zm_doc_find(&doc, "h.bias")->dtype = ZM_DTYPE_I32;
	ck_assert_int_eq(zm_model_from_doc(&doc, NULL, &back, &err),
	                 ZM_ERR_FORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "h.bias"));

	/* Not a model, and a model without arch. */
	ck_assert_int_eq(zm_model_to_doc(m, &doc, &err), ZM_OK);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.kind", "data", &err), ZM_OK);
	ck_assert_int_eq(zm_model_from_doc(&doc, NULL, &back, &err),
	                 ZM_ERR_FORMAT);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.kind", "model", &err), ZM_OK);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.arch", "{input: [5]}", &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_model_from_doc(&doc, NULL, &back, &err),
	                 ZM_ERR_FORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "zm.arch"));
	/* ... but an explicit arch overrides it (a PyTorch state dict). */
	ck_assert_int_eq(zm_model_from_doc(&doc, m->arch, &back, &err), ZM_OK);
	zm_model_free(back);

	zm_doc_release(&doc);
	zm_model_free(m);
}
END_TEST

START_TEST(test_model_copy)
{
	struct zm_model *m = small_model(11), *c;
	struct zm_error err;

	ck_assert_int_eq(zm_model_set_string(&m->tags, "{\"a\": \"b\"}", &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_model_copy(m, &c, &err), ZM_OK);
	ck_assert(!memcmp(m->layers[0].weight.data, c->layers[0].weight.data,
	                  m->layers[0].weight.nbytes));
	ck_assert_ptr_ne(m->layers[0].weight.data, c->layers[0].weight.data);
	ck_assert_str_eq(c->tags, "{\"a\": \"b\"}");
	ck_assert_ptr_eq(c->layers[1].spec, &c->arch->layers[1]);
	zm_model_free(c);
	zm_model_free(m);
	zm_model_free(NULL);
}
END_TEST

Suite *suite_model(void)
{
	Suite *s = suite_create("model");
	TCase *tc = tcase_create("model");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_arch_parse);
	tcase_add_loop_test(tc, test_arch_errors, 0,
	                    (int)(sizeof(bad_archs) / sizeof(bad_archs[0])));
	tcase_add_test(tc, test_arch_load_file);
	tcase_add_test(tc, test_arch_json_round_trip);
	tcase_add_test(tc, test_seeded_init);
	tcase_add_test(tc, test_rng_reference);
	tcase_add_loop_test(tc, test_layer_vs_naive, 0, 64);
	tcase_add_loop_test(tc, test_activation_accuracy, 0, 5);
	tcase_add_test(tc, test_cross_entropy_closed_form);
	tcase_add_test(tc, test_mse_closed_form);
	tcase_add_loop_test(tc, test_gradient_check, 0, 20);
	tcase_add_test(tc, test_doc_round_trip);
	tcase_add_test(tc, test_doc_validation);
	tcase_add_test(tc, test_model_copy);
	tcase_add_loop_test(tc, test_packed_forward, 0, 5);
	suite_add_tcase(s, tc);
	return s;
}
