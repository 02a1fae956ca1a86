/*
 * Training: single optimizer steps against hand-computed updates, learning
 * rate schedules against their formulas, convergence of SGD and Adam on a
 * linearly separable problem, step scaling, and the batch helpers.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "model.h"
#include "random.h"
#include "train.h"
#include "unit.h"

/*
 * A 2-in 2-out linear model with mse: out = W x + b, loss = mean over the
 * n*2 elements of (out - t)^2, so dL/dW[j][k] = 2/(2n) sum_r e_rj x_rk and
 * dL/db[j] = 2/(2n) sum_r e_rj with e = out - t: computed here by hand.
 */
static void linear_grads(const float *w, const float *b, const float *x,
                         const float *t, size_t n, double gw[4], double gb[2])
{
	size_t r, j, k;

	memset(gw, 0, 4 * sizeof(double));
	memset(gb, 0, 2 * sizeof(double));
	for (r = 0; r < n; r++)
		for (j = 0; j < 2; j++) {
			double e = b[j] - t[r * 2 + j];
			for (k = 0; k < 2; k++)
				e += (double)w[j * 2 + k] * x[r * 2 + k];
			for (k = 0; k < 2; k++)
				gw[j * 2 + k] += e * x[r * 2 + k] / (double)n;
			gb[j] += e / (double)n;
		}
}

static const char linear_yaml[] =
	"input: [2]\nloss: mse\nlayers: [{name: l, units: 2}]\n";

START_TEST(test_sgd_closed_form)
{
	struct zm_model *m = unit_model(linear_yaml, 1);
	struct zm_optim_config cfg;
	struct zm_optim *opt;
	struct zm_workspace *ws;
	struct zm_error err;
	struct zm_batch_stats st = { 0, 0, 0 };
	float x[6] = { 1, 2, -1, 0.5f, 0.25f, -2 }, t[6] = { 1, 0, 0, 1, 2, -1 };
	float *w = m->layers[0].weight.data, *b = m->layers[0].bias.data;
	double gw[4], gb[2], buf_w[4], buf_b[2], want_w[4], want_b[2];
	const double lr = 0.1, mu = 0.9, wd = 0.01, scale = 0.5;
	int step, i;

	b[0] = 0.3f;
	b[1] = -0.2f;
	zm_optim_config_default(&cfg, ZM_OPTIM_SGD);
	cfg.lr = lr;
	cfg.weight_decay = wd;
	ck_assert_int_eq(zm_optim_new(m->arch, &cfg, &opt, &err), ZM_OK);
	ck_assert_int_eq(zm_workspace_new(m->arch, 3, true, &ws, &err), ZM_OK);
	memset(buf_w, 0, sizeof(buf_w));
	memset(buf_b, 0, sizeof(buf_b));
	for (step = 0; step < 2; step++) {
		linear_grads(w, b, x, t, 3, gw, gb);
		for (i = 0; i < 4; i++) {
			buf_w[i] = mu * buf_w[i] + gw[i] + wd * w[i];
			want_w[i] = w[i] - lr * scale * buf_w[i];
		}
		for (i = 0; i < 2; i++) {
			buf_b[i] = mu * buf_b[i] + gb[i] + wd * b[i];
			want_b[i] = b[i] - lr * scale * buf_b[i];
		}
		ck_assert_int_eq(zm_train_step(m, opt, ws, x, t, 3, (float)scale,
		                               &st, &err), ZM_OK);
		for (i = 0; i < 4; i++)
			ck_assert_double_eq_tol(w[i], want_w[i], 1e-6);
		for (i = 0; i < 2; i++)
			ck_assert_double_eq_tol(b[i], want_b[i], 1e-6);
	}
	ck_assert_uint_eq(opt->steps, 2);
	ck_assert_uint_eq(st.rows, 6);
	ck_assert(st.loss_sum > 0);
	zm_optim_free(opt);
	zm_workspace_free(ws);
	zm_model_free(m);
}
END_TEST

START_TEST(test_adam_closed_form)
{
	struct zm_model *m = unit_model(linear_yaml, 2);
	struct zm_optim_config cfg;
	struct zm_optim *opt;
	struct zm_workspace *ws;
	struct zm_error err;
	float x[4] = { 1, 2, -1, 0.5f }, t[4] = { 1, 0, 0, 1 };
	float *w = m->layers[0].weight.data, *b = m->layers[0].bias.data;
	double gw[4], gb[2], mw[4] = { 0 }, vw[4] = { 0 }, mb[2] = { 0 };
	double vb[2] = { 0 }, want_w[4], want_b[2];
	const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1;
	const double scale = 0.7;
	int step, i;

	zm_optim_config_default(&cfg, ZM_OPTIM_ADAM);
	ck_assert_double_eq(cfg.beta1, b1);
	ck_assert_double_eq(cfg.beta2, b2);
	ck_assert_double_eq(cfg.eps, eps);
	cfg.lr = lr;
	cfg.weight_decay = wd;
	ck_assert_int_eq(zm_optim_new(m->arch, &cfg, &opt, &err), ZM_OK);
	ck_assert_int_eq(zm_workspace_new(m->arch, 2, true, &ws, &err), ZM_OK);
	for (step = 1; step <= 3; step++) {
		double c1 = 1 - pow(b1, step), c2 = 1 - pow(b2, step);
		linear_grads(w, b, x, t, 2, gw, gb);
		for (i = 0; i < 6; i++) {
			double *mm = i < 4 ? &mw[i] : &mb[i - 4];
			double *vv = i < 4 ? &vw[i] : &vb[i - 4];
			double g = i < 4 ? gw[i] : gb[i - 4];
			double p = i < 4 ? w[i] : b[i - 4];
			*mm = b1 * *mm + (1 - b1) * g;
			*vv = b2 * *vv + (1 - b2) * g * g;
			/* AdamW: decay decoupled from the adaptive step. */
			p -= lr * scale * (wd * p + (*mm / c1) /
			                   (sqrt(*vv / c2) + eps));
			if (i < 4)
				want_w[i] = p;
			else
				want_b[i - 4] = p;
		}
		ck_assert_int_eq(zm_train_step(m, opt, ws, x, t, 2, (float)scale,
		                               NULL, &err), ZM_OK);
		for (i = 0; i < 4; i++)
			ck_assert_double_eq_tol(w[i], want_w[i], 1e-6);
		for (i = 0; i < 2; i++)
			ck_assert_double_eq_tol(b[i], want_b[i], 1e-6);
	}
	zm_optim_free(opt);
	zm_workspace_free(ws);
	zm_model_free(m);
}
END_TEST

START_TEST(test_lr_schedules)
{
	struct zm_model *m = unit_model(linear_yaml, 3);
	struct zm_optim_config cfg;
	struct zm_optim *opt;
	struct zm_error err;

	zm_optim_config_default(&cfg, ZM_OPTIM_SGD);
	cfg.lr = 0.5;
	cfg.schedule = ZM_LR_STEP;
	cfg.step_size = 10;
	cfg.gamma = 0.5;
	ck_assert_int_eq(zm_optim_new(m->arch, &cfg, &opt, &err), ZM_OK);
	ck_assert_double_eq_tol(zm_optim_lr(opt), 0.5, 1e-15);
	opt->steps = 9;
	ck_assert_double_eq_tol(zm_optim_lr(opt), 0.5, 1e-15);
	opt->steps = 10;
	ck_assert_double_eq_tol(zm_optim_lr(opt), 0.25, 1e-15);
	opt->steps = 35;
	ck_assert_double_eq_tol(zm_optim_lr(opt), 0.0625, 1e-15);
	zm_optim_free(opt);

	cfg.schedule = ZM_LR_COSINE;
	cfg.total_steps = 100;
	cfg.min_lr = 0.1;
	ck_assert_int_eq(zm_optim_new(m->arch, &cfg, &opt, &err), ZM_OK);
	ck_assert_double_eq_tol(zm_optim_lr(opt), 0.5, 1e-15);
	opt->steps = 50;
	ck_assert_double_eq_tol(zm_optim_lr(opt), 0.3, 1e-12);
	opt->steps = 25;
	ck_assert_double_eq_tol(zm_optim_lr(opt),
	                        0.1 + 0.4 * (1 + sqrt(0.5)) / 2, 1e-12);
	opt->steps = 100;
	ck_assert_double_eq_tol(zm_optim_lr(opt), 0.1, 1e-15);
	opt->steps = 1000;
	ck_assert_double_eq_tol(zm_optim_lr(opt), 0.1, 1e-15);
	zm_optim_free(opt);

	cfg.lr = -1;
	ck_assert_int_eq(zm_optim_new(m->arch, &cfg, &opt, &err), ZM_ERR_USAGE);
	ck_assert_ptr_null(opt);
	zm_model_free(m);
}
END_TEST

START_TEST(test_names)
{
	enum zm_optim_kind k;
	enum zm_lr_schedule s;

	ck_assert(zm_optim_kind_parse("adam", &k) && k == ZM_OPTIM_ADAM);
	ck_assert(zm_optim_kind_parse("sgd", &k) && k == ZM_OPTIM_SGD);
	ck_assert(!zm_optim_kind_parse("rmsprop", &k));
	ck_assert(zm_lr_schedule_parse("cosine", &s) && s == ZM_LR_COSINE);
	ck_assert(!zm_lr_schedule_parse("linear", &s));
	ck_assert_str_eq(zm_lr_schedule_name(ZM_LR_STEP), "step");
	ck_assert_str_eq(zm_optim_kind_name(ZM_OPTIM_ADAM), "adam");
}
END_TEST

/*
 * Three classes in 4-D labelled by the arg-max of a fixed linear map, so a
 * linear classifier can separate them; points too close to a boundary are
 * dropped to give a margin.
 */
enum { N_TRAIN = 600, N_IN = 4, N_CLASSES = 3 };

static void make_separable(float *x, int64_t *y)
{
	static const double a[N_CLASSES][N_IN] = {
		{ 1, -1, 0.5, 0 }, { -0.5, 1, 1, -1 }, { 0, 0.3, -1, 1 }
	};
	struct zm_rng r;
	size_t n = 0, c, k;

	zm_rng_seed(&r, 2024);
	while (n < N_TRAIN) {
		double s[N_CLASSES], best = -1e9, second = -1e9;
		size_t arg = 0;
		float p[N_IN];
		for (k = 0; k < N_IN; k++)
			p[k] = (float)(2 * zm_rng_uniform(&r) - 1);
		for (c = 0; c < N_CLASSES; c++) {
			s[c] = 0;
			for (k = 0; k < N_IN; k++)
				s[c] += a[c][k] * p[k];
			if (s[c] > best) {
				second = best;
				best = s[c];
				arg = c;
			} else if (s[c] > second) {
				second = s[c];
			}
		}
		if (best - second < 0.1)
			continue;
		memcpy(x + n * N_IN, p, sizeof(p));
		y[n++] = (int64_t)arg;
	}
}

START_TEST(test_convergence)
{
	enum zm_optim_kind kind = _i ? ZM_OPTIM_ADAM : ZM_OPTIM_SGD;
	struct zm_model *m = unit_model(
		"input: [4]\nlayers:\n"
		"  - {name: h, units: 16, activation: relu}\n"
		"  - {name: o, units: 3}\n", 5);
	static float x[N_TRAIN * N_IN], bx[32 * N_IN];
	static int64_t y[N_TRAIN], by[32];
	size_t idx[N_TRAIN], e, i;
	struct zm_optim_config cfg;
	struct zm_optim *opt;
	struct zm_workspace *ws;
	struct zm_error err;
	struct zm_batch_stats before = { 0, 0, 0 }, after = { 0, 0, 0 };
	struct zm_rng r;
	double l0, l1, acc;

	make_separable(x, y);
	zm_optim_config_default(&cfg, kind);
	cfg.lr = kind == ZM_OPTIM_ADAM ? 0.01 : 0.05;
	ck_assert_int_eq(zm_optim_new(m->arch, &cfg, &opt, &err), ZM_OK);
	ck_assert_int_eq(zm_workspace_new(m->arch, N_TRAIN, true, &ws, &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_model_evaluate(m, ws, x, y, N_TRAIN, &before, &err),
	                 ZM_OK);
	zm_rng_seed(&r, 9);
	for (e = 0; e < 30; e++) {
		zm_rng_permutation(&r, idx, N_TRAIN);
		for (i = 0; i + 32 <= N_TRAIN; i += 32) {
			zm_gather_rows(x, N_IN, idx + i, 32, bx);
			zm_gather_labels(y, idx + i, 32, by);
			ck_assert_int_eq(zm_train_step(m, opt, ws, bx, by, 32,
			                               1.0f, NULL, &err), ZM_OK);
		}
	}
	ck_assert_int_eq(zm_model_evaluate(m, ws, x, y, N_TRAIN, &after, &err),
	                 ZM_OK);
	l0 = before.loss_sum / (double)before.rows;
	l1 = after.loss_sum / (double)after.rows;
	acc = (double)after.correct / (double)after.rows;
	ck_assert_msg(l1 < 0.3 * l0, "%s: loss %g -> %g",
	              zm_optim_kind_name(kind), l0, l1);
	ck_assert_msg(acc > 0.95, "%s: accuracy %g", zm_optim_kind_name(kind),
	              acc);
	zm_optim_free(opt);
	zm_workspace_free(ws);
	zm_model_free(m);
}
END_TEST

START_TEST(test_step_scale_and_errors)
{
	struct zm_model *a = unit_model(
		"input: [3]\nlayers:\n"
		"  - {name: h, units: 5, activation: tanh}\n"
		"  - {name: o, units: 2}\n", 8), *b, *c;
	float x[6] = { 0.1f, -0.2f, 0.3f, 1, 0, -1 };
	int64_t y[2] = { 1, 0 }, bad[2] = { 1, 2 };
	struct zm_optim_config cfg;
	struct zm_optim *oa, *ob;
	struct zm_workspace *ws;
	struct zm_error err;
	const float *w0, *wa, *wb;
	size_t i;

	ck_assert_int_eq(zm_model_copy(a, &b, &err), ZM_OK);
	ck_assert_int_eq(zm_model_copy(a, &c, &err), ZM_OK);
	zm_optim_config_default(&cfg, ZM_OPTIM_SGD);
	cfg.momentum = 0;
	ck_assert_int_eq(zm_optim_new(a->arch, &cfg, &oa, &err), ZM_OK);
	ck_assert_int_eq(zm_optim_new(a->arch, &cfg, &ob, &err), ZM_OK);
	ck_assert_int_eq(zm_workspace_new(a->arch, 2, true, &ws, &err), ZM_OK);
	ck_assert_int_eq(zm_train_step(a, oa, ws, x, y, 2, 1.0f, NULL, &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_train_step(b, ob, ws, x, y, 2, 0.25f, NULL, &err),
	                 ZM_OK);
	/* Plain SGD: the scaled step moves a quarter as far. */
	w0 = c->layers[0].weight.data;
	wa = a->layers[0].weight.data;
	wb = b->layers[0].weight.data;
	for (i = 0; i < 15; i++)
		ck_assert_float_eq_tol(wb[i] - w0[i], 0.25f * (wa[i] - w0[i]),
		                       1e-7);
	ck_assert(memcmp(wa, w0, 15 * sizeof(float)));

	/* A bad label fails and leaves the model as it was. */
	memcpy(c->layers[0].weight.data, a->layers[0].weight.data, 60);
	ck_assert_int_eq(zm_train_step(a, oa, ws, x, bad, 2, 1.0f, NULL, &err),
	                 ZM_ERR_DATA);
	ck_assert(!memcmp(wa, c->layers[0].weight.data, 60));
	ck_assert_uint_eq(oa->steps, 1);
	zm_optim_free(oa);
	zm_optim_free(ob);
	zm_workspace_free(ws);
	zm_model_free(a);
	zm_model_free(b);
	zm_model_free(c);
}
END_TEST

START_TEST(test_gather)
{
	float src[8] = { 0, 1, 10, 11, 20, 21, 30, 31 }, dst[6];
	int64_t lab[4] = { 5, 6, 7, 8 }, out[3];
	size_t idx[3] = { 3, 0, 2 };

	zm_gather_rows(src, 2, idx, 3, dst);
	ck_assert_float_eq(dst[0], 30);
	ck_assert_float_eq(dst[1], 31);
	ck_assert_float_eq(dst[2], 0);
	ck_assert_float_eq(dst[5], 21);
	zm_gather_labels(lab, idx, 3, out);
	ck_assert_int_eq(out[0], 8);
	ck_assert_int_eq(out[1], 5);
	ck_assert_int_eq(out[2], 7);
}
END_TEST

/*
 * zm_train_step's SGD path fuses the backward pass with the update (the
 * weight gradient GEMM accumulates into the momentum buffer, each layer is
 * updated as soon as its gradients exist); it must take the same steps as
 * the separate passes zm_model_backward + zm_optim_apply, through flatten,
 * relu and gelu layers, with momentum, weight decay and a step scale.
 */
START_TEST(test_sgd_fused_matches_separate)
{
	struct zm_model *a = unit_model(
		"input: [1, 2, 3]\nlayers:\n"
		"  - {name: f, type: flatten}\n"
		"  - {name: h1, units: 7, activation: relu}\n"
		"  - {name: h2, units: 5, activation: gelu}\n"
		"  - {name: o, units: 3}\n", 11), *b;
	float x[4 * 6];
	int64_t y[4] = { 0, 2, 1, 2 };
	struct zm_optim_config cfg;
	struct zm_optim *oa, *ob;
	struct zm_workspace *wa, *wb;
	struct zm_error err;
	size_t i, l, step;
	float w0;

	for (i = 0; i < 4 * 6; i++)
		x[i] = (float)((int)(i * 7 % 11) - 5) * 0.3f;
	ck_assert_int_eq(zm_model_copy(a, &b, &err), ZM_OK);
	w0 = ((float *)a->layers[1].weight.data)[0];
	zm_optim_config_default(&cfg, ZM_OPTIM_SGD);
	cfg.lr = 0.2;
	cfg.weight_decay = 0.05;
	ck_assert_int_eq(zm_optim_new(a->arch, &cfg, &oa, &err), ZM_OK);
	ck_assert_int_eq(zm_optim_new(b->arch, &cfg, &ob, &err), ZM_OK);
	ck_assert_int_eq(zm_workspace_new(a->arch, 4, true, &wa, &err), ZM_OK);
	ck_assert_int_eq(zm_workspace_new(b->arch, 4, true, &wb, &err), ZM_OK);
	for (step = 0; step < 4; step++) {
		const float *out;
		ck_assert_int_eq(zm_train_step(a, oa, wa, x, y, 4, 0.5f, NULL,
		                               &err), ZM_OK);
		out = zm_model_forward(b, wb, x, 4);
		ck_assert_int_eq(zm_loss_cross_entropy(out, y, 4, 3, NULL, NULL,
		                                       wb->dlogits, &err), ZM_OK);
		zm_model_backward(b, wb, x, 4, wb->dlogits);
		zm_optim_apply(ob, b, wb, 0.5f);
	}
	ck_assert_uint_eq(oa->steps, ob->steps);
	for (l = 1; l < 4; l++) {
		const float *pa = a->layers[l].weight.data;
		const float *pb = b->layers[l].weight.data;
		size_t nw = zm_tensor_numel(&a->layers[l].weight);
		size_t nb = zm_tensor_numel(&a->layers[l].bias);
		for (i = 0; i < nw; i++)
			ck_assert_double_eq_tol(pa[i], pb[i], 1e-5);
		for (i = 0; i < nw; i++)
			ck_assert_double_eq_tol(oa->m_w[l][i], ob->m_w[l][i],
			                        1e-5);
		pa = a->layers[l].bias.data;
		pb = b->layers[l].bias.data;
		for (i = 0; i < nb; i++)
			ck_assert_double_eq_tol(pa[i], pb[i], 1e-5);
	}
	/* And the steps did move the weights. */
	ck_assert(fabsf(((float *)a->layers[1].weight.data)[0] - w0) > 1e-4f);
	zm_optim_free(oa);
	zm_optim_free(ob);
	zm_workspace_free(wa);
	zm_workspace_free(wb);
	zm_model_free(a);
	zm_model_free(b);
}
END_TEST

Suite *suite_train(void)
{
	Suite *s = suite_create("train");
	TCase *tc = tcase_create("train");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_sgd_closed_form);
	tcase_add_test(tc, test_adam_closed_form);
	tcase_add_test(tc, test_lr_schedules);
	tcase_add_test(tc, test_names);
	tcase_add_loop_test(tc, test_convergence, 0, 2);
	tcase_add_test(tc, test_step_scale_and_errors);
	tcase_add_test(tc, test_gather);
	tcase_add_test(tc, test_sgd_fused_matches_separate);
	suite_add_tcase(s, tc);
	return s;
}
