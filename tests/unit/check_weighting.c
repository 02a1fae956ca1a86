/*
 * Dynamic inference: the weighting function (softmax/top-k, similarity
 * against direct zm_similarity, latency budget, static weights files,
 * Hedge state files) and the merged forward passes against a naive
 * layer-wise merge in double computed here: one model is the plain
 * forward pass, identical models give it for any weights, params equals
 * outputs with pre-activation merging, Hedge moves weight to the better
 * model, entropy adaptation lowers the entropy.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "adapt.h"
#include "config.h"
#include "conv.h"
#include "model.h"
#include "predict.h"
#include "profile.h"
#include "random.h"
#include "stream.h"
#include "unit.h"
#include "weighting.h"

static const char arch_yaml[] =
	"input: [5]\nloss: cross-entropy\nlayers:\n"
	"  - {name: h1, units: 6, activation: tanh, group: features}\n"
	"  - {name: h2, units: 4, activation: relu, group: features}\n"
	"  - {name: out, units: 3, group: head}\n";

/* Layers wider than the mixing pass's 16-float blocks and than one
 * micro-tile of the packed products, with ragged ends. */
static const char wide_yaml[] =
	"input: [5]\nloss: cross-entropy\nlayers:\n"
	"  - {name: h1, units: 37, activation: tanh, group: features}\n"
	"  - {name: h2, units: 20, activation: relu, group: features}\n"
	"  - {name: out, units: 3, group: head}\n";

/* A model of the arch in yaml with seeded weights and biases, no profile. */
static struct zm_model *make_bare(uint64_t seed, const char *yaml)
{
	struct zm_model *m = unit_model(yaml, seed);
	struct zm_rng rng;
	size_t i, l;

	/* Biases too, so that they are merged and checked. */
	zm_rng_seed(&rng, seed + 100);
	for (l = 0; l < m->arch->n_layers; l++) {
		float *b = m->layers[l].bias.data;
		for (i = 0; i < m->arch->layers[l].out_features; i++)
			b[i] = (float)(0.3 * zm_rng_normal(&rng));
	}
	return m;
}

/* A model with seeded weights and, unless bare, a profile of rows drawn
 * around centre (the input and every layer's input). */
static struct zm_model *make_model(uint64_t seed, double centre, bool bare)
{
	struct zm_model *m = make_bare(seed, arch_yaml);
	struct zm_error err;
	struct zm_workspace *ws;
	struct zm_profile p;
	struct zm_rng rng;
	float x[64 * 5];
	size_t i;

	if (bare)
		return m;
	zm_rng_seed(&rng, seed + 200);
	for (i = 0; i < 64 * 5; i++)
		x[i] = (float)(centre + zm_rng_normal(&rng));
	zm_profile_init(&p);
	ck_assert_int_eq(zm_workspace_new(m->arch, 64, false, &ws, &err), ZM_OK);
	zm_model_forward(m, ws, x, 64);
	ck_assert_int_eq(zm_profile_add_batch(&p, "input", x, 64, 5, &err), ZM_OK);
	ck_assert_int_eq(zm_profile_add_batch(&p, "h1", x, 64, 5, &err), ZM_OK);
	ck_assert_int_eq(zm_profile_add_batch(&p, "h2", ws->out[0], 64, 6, &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_profile_add_batch(&p, "out", ws->out[1], 64, 4, &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_profile_to_doc(&p, &m->extra, &err), ZM_OK);
	zm_profile_release(&p);
	zm_workspace_free(ws);
	return m;
}

static void rand_input(float *x, size_t n, uint64_t seed, double centre)
{
	struct zm_rng rng;
	size_t i;

	zm_rng_seed(&rng, seed);
	for (i = 0; i < n * 5; i++)
		x[i] = (float)(centre + zm_rng_normal(&rng));
}

static double act_d(enum zm_activation a, double v)
{
	switch (a) {
	case ZM_ACT_TANH: return tanh(v);
	case ZM_ACT_RELU: return v > 0 ? v : 0;
	default: return v;
	}
}

/*
 * The naive layer-wise merge in double, per batch weights wl[l][i]:
 * pre: h_l = act(sum_i w z_i), post: h_l = sum_i w act(z_i); then
 * softmax.  probs is n x 3.
 */
static void naive_merge(struct zm_model *const *ms, size_t k, const double *wl,
                        bool post, const float *x, size_t n, double *probs)
{
	const struct zm_arch *a = ms[0]->arch;
	double h[64], nh[64];
	size_t r, l, i, o, j;

	ck_assert(a->max_features <= 64);

	for (r = 0; r < n; r++) {
		size_t d = 5;
		for (j = 0; j < d; j++)
			h[j] = x[r * 5 + j];
		for (l = 0; l < a->n_layers; l++) {
			size_t out = a->layers[l].out_features;
			for (o = 0; o < out; o++) {
				double acc = 0;
				for (i = 0; i < k; i++) {
					const float *W = ms[i]->layers[l].weight.data;
					const float *B = ms[i]->layers[l].bias.data;
					double z = B[o];
					for (j = 0; j < d; j++)
						z += (double)W[o * d + j] * h[j];
					acc += wl[l * k + i] *
					       (post ? act_d(a->layers[l].act, z) : z);
				}
				nh[o] = post ? acc : act_d(a->layers[l].act, acc);
			}
			d = out;
			memcpy(h, nh, d * sizeof(double));
		}
		{
			double mx = h[0], s = 0;
			for (j = 1; j < 3; j++)
				if (h[j] > mx)
					mx = h[j];
			for (j = 0; j < 3; j++)
				s += exp(h[j] - mx);
			for (j = 0; j < 3; j++)
				probs[r * 3 + j] = exp(h[j] - mx) / s;
		}
	}
}

static const char *const names3[] = { "a", "b", "c" };

/* A predictor with uniform weighting at level whose weights come from the
 * adaptation offsets set here: w_{u,i} = softmax(alpha_u). */
static struct zm_predictor *make_pred(struct zm_model *const *ms, size_t k,
                                      enum zm_merge_mode mode,
                                      enum zm_merge_point point,
                                      enum zm_gran_level level,
                                      const double *alpha)
{
	struct zm_predict_options o;
	struct zm_predictor *p;
	struct zm_error err;

	zm_predict_options_init(&o);
	o.merge = mode;
	o.point = point;
	o.w.level = level;
	o.names = names3;
	ck_assert_int_eq(zm_predictor_new_opts((const struct zm_model *const *)ms,
	                                       k, 32, &o, &p, &err), ZM_OK);
	if (alpha)
		memcpy(p->wr->alpha, alpha, p->wr->units.n_units * k *
		       sizeof(double));
	return p;
}

/* Per-layer weights [3 layers, k] implied by the offsets alpha per unit. */
static void layer_weights(const struct zm_predictor *p, const double *alpha,
                          size_t k, double *wl)
{
	size_t l;

	for (l = 0; l < 3; l++) {
		size_t u = p->wr->units.layer_unit[l];
		zm_weights_softmax_topk(alpha + u * k, k, 0, wl + l * k);
	}
}

START_TEST(test_softmax_topk)
{
	const double lg[4] = { 0.5, -1.0, 2.0, 0.5 };
	double w[4], ref[4], s = 0;
	size_t i;

	zm_weights_softmax_topk(lg, 4, 0, w);
	for (i = 0; i < 4; i++)
		s += exp(lg[i]);
	for (i = 0; i < 4; i++)
		ck_assert_double_eq_tol(w[i], exp(lg[i]) / s, 1e-12);
	/* top 2: index 2, then the tie 0/3 goes to 0. */
	zm_weights_softmax_topk(lg, 4, 2, w);
	ref[0] = exp(0.5) / (exp(0.5) + exp(2.0));
	ref[2] = exp(2.0) / (exp(0.5) + exp(2.0));
	ck_assert_double_eq_tol(w[0], ref[0], 1e-12);
	ck_assert_double_eq_tol(w[2], ref[2], 1e-12);
	ck_assert(w[1] == 0 && w[3] == 0);
	/* Nothing possible: uniform, not NaN. */
	{
		const double none[3] = { -INFINITY, -INFINITY, -INFINITY };
		zm_weights_softmax_topk(none, 3, 0, w);
		for (i = 0; i < 3; i++)
			ck_assert_double_eq_tol(w[i], 1.0 / 3, 1e-15);
	}
}
END_TEST

/* K identical models give the plain forward pass for any weights, in
 * every merge mode and point; one model gives it bit for bit. */
START_TEST(test_identical_models)
{
	struct zm_model *m = make_model(3, 0, false);
	struct zm_model *ms[3] = { m, m, m };
	struct zm_workspace *ws;
	struct zm_error err;
	struct zm_predictor *p;
	float x[20 * 5], ref[20 * 3], got[20 * 3], lp[20 * 3];
	const float *z;
	double alpha[9];
	size_t i, mode, c;

	rand_input(x, 20, 7, 0);
	ck_assert_int_eq(zm_workspace_new(m->arch, 32, false, &ws, &err), ZM_OK);
	z = zm_model_forward(m, ws, x, 20);
	for (i = 0; i < 20; i++) {
		double mx = z[i * 3], s = 0;
		for (c = 1; c < 3; c++)
			if (z[i * 3 + c] > mx) mx = z[i * 3 + c];
		for (c = 0; c < 3; c++)
			s += exp((double)z[i * 3 + c] - mx);
		for (c = 0; c < 3; c++)
			ref[i * 3 + c] = (float)(exp((double)z[i * 3 + c] - mx) / s);
	}
	p = make_pred(ms, 1, ZM_MERGE_OUTPUTS, ZM_MERGE_PRE, ZM_GRAN_FULL, NULL);
	ck_assert_int_eq(zm_predict_run(p, x, 20, got, lp, &err), ZM_OK);
	ck_assert(memcmp(got, ref, sizeof(got)) == 0);
	zm_predictor_free(p);
	for (i = 0; i < 9; i++)
		alpha[i] = sin((double)i * 1.7) * 2;
	for (mode = 0; mode < 4; mode++) {
		enum zm_merge_mode mm = mode == 1 ? ZM_MERGE_PARAMS :
		                        mode == 3 ? ZM_MERGE_ENSEMBLE
		                                  : ZM_MERGE_OUTPUTS;
		p = make_pred(ms, 3, mm, mode == 2 ? ZM_MERGE_POST : ZM_MERGE_PRE,
		              mode == 3 ? ZM_GRAN_FULL : ZM_GRAN_LAYER, alpha);
		ck_assert_int_eq(zm_predict_run(p, x, 20, got, lp, &err), ZM_OK);
		for (i = 0; i < 60; i++)
			ck_assert_float_eq_tol(got[i], ref[i], 2e-5);
		zm_predictor_free(p);
	}
	zm_workspace_free(ws);
	zm_model_free(m);
}
END_TEST

/* Different models: outputs (pre and post, full/group/layer) against the
 * naive merge; params equals outputs-pre with per-batch weights. */
static void merge_vs_naive(struct zm_model *const *ms, enum zm_gran_level lv,
                           int seed)
{
	struct zm_predictor *p;
	struct zm_error err;
	float x[24 * 5], got[24 * 3], par[24 * 3];
	double alpha[9], wl[9], ref[24 * 3];
	size_t i, post;

	rand_input(x, 24, 11 + (uint64_t)seed, 0.5);
	for (i = 0; i < 9; i++)
		alpha[i] = cos((double)i * 2.3 + (double)seed);
	for (post = 0; post < 2; post++) {
		p = make_pred(ms, 3, ZM_MERGE_OUTPUTS,
		              post ? ZM_MERGE_POST : ZM_MERGE_PRE, lv, alpha);
		layer_weights(p, alpha, 3, wl);
		ck_assert_int_eq(zm_predict_run(p, x, 24, got, NULL, &err), ZM_OK);
		naive_merge(ms, 3, wl, post, x, 24, ref);
		for (i = 0; i < 72; i++)
			ck_assert_double_eq_tol(got[i], ref[i], 1e-5);
		zm_predictor_free(p);
	}
	p = make_pred(ms, 3, ZM_MERGE_PARAMS, ZM_MERGE_PRE, lv, alpha);
	ck_assert_int_eq(zm_predict_run(p, x, 24, par, NULL, &err), ZM_OK);
	naive_merge(ms, 3, wl, false, x, 24, ref);
	for (i = 0; i < 72; i++)
		ck_assert_double_eq_tol(par[i], ref[i], 1e-5);
	zm_predictor_free(p);
}

START_TEST(test_merge_vs_naive)
{
	struct zm_model *ms[3] = { make_model(1, 0, false), make_model(2, 1, false),
	                           make_model(9, -1, false) };
	size_t i;

	merge_vs_naive(ms, (enum zm_gran_level)_i, _i);
	for (i = 0; i < 3; i++)
		zm_model_free(ms[i]);
}
END_TEST

START_TEST(test_merge_vs_naive_wide)
{
	struct zm_model *ms[3] = { make_bare(4, wide_yaml), make_bare(5, wide_yaml),
	                           make_bare(6, wide_yaml) };
	size_t i;

	merge_vs_naive(ms, (enum zm_gran_level)_i, _i + 5);
	for (i = 0; i < 3; i++)
		zm_model_free(ms[i]);
}
END_TEST

/* Similarity weights: per batch they are softmax(sim / T) of the direct
 * zm_similarity of the batch moments; per row every row sums to 1 with
 * at most top-k non-zero; the latency budget lowers k. */
START_TEST(test_similarity_weights)
{
	struct zm_model *ms[3] = { make_model(1, -2, false), make_model(2, 0, false),
	                           make_model(3, 2, false) };
	struct zm_weighter_options o;
	struct zm_weighter *w;
	struct zm_error err;
	struct zm_profile pr;
	float x[40 * 5];
	double out[40 * 3], qm[5] = { 0 }, qv[5] = { 0 }, sims[3], ref[3];
	size_t i, r, j, nz;

	rand_input(x, 40, 5, 1.8);
	zm_weighter_options_init(&o);
	o.metric = ZM_METRIC_KL;
	o.temperature = 0.5;
	o.use_loadavg = false;
	ck_assert_int_eq(zm_weighter_new(&o, (const struct zm_model *const *)ms,
	                                 names3, 3, 40, NULL, NULL, NULL, &w,
	                                 &err), ZM_OK);
	zm_weighter_begin(w, x, 40);
	ck_assert_int_eq(zm_weighter_layer(w, 0, x, 40, out, &err), ZM_OK);
	for (r = 0; r < 40; r++)
		for (j = 0; j < 5; j++)
			qm[j] += x[r * 5 + j] / 40.0;
	for (r = 0; r < 40; r++)
		for (j = 0; j < 5; j++)
			qv[j] += pow(x[r * 5 + j] - qm[j], 2) / 40.0;
	for (i = 0; i < 3; i++) {
		double mm[5], mv[5];
		zm_profile_init(&pr);
		ck_assert_int_eq(zm_profile_from_doc(&pr, &ms[i]->extra, &err), ZM_OK);
		zm_profile_entry_moments(zm_profile_find(&pr, "input"), mm, mv);
		sims[i] = zm_similarity(ZM_METRIC_KL, qm, qv, mm, mv, 5,
		                        ZM_SIM_FLOOR_AUTO) / 0.5;
		zm_profile_release(&pr);
	}
	zm_weights_softmax_topk(sims, 3, 0, ref);
	for (i = 0; i < 3; i++)
		ck_assert_double_eq_tol(out[i], ref[i], 1e-9);
	ck_assert(out[2] > out[1] && out[1] > out[0]);   /* nearest centre */
	zm_weighter_free(w);

	o.per_row = true;
	o.top_k = 2;
	o.level = ZM_GRAN_LAYER;
	o.latency_budget_ms = 10;
	ck_assert_int_eq(zm_weighter_new(&o, (const struct zm_model *const *)ms,
	                                 names3, 3, 40, NULL, NULL, NULL, &w,
	                                 &err), ZM_OK);
	zm_weighter_begin(w, x, 40);
	for (i = 0; i < 2; i++) {
		if (i == 1)
			zm_weighter_adjust(w, 0.006);   /* 6 ms a model: k = 1 */
		ck_assert_int_eq(zm_weighter_layer(w, 0, x, 40, out, &err), ZM_OK);
		for (r = 0; r < 40; r++) {
			double s = 0;
			for (j = 0, nz = 0; j < 3; j++) {
				s += out[r * 3 + j];
				nz += out[r * 3 + j] > 0;
			}
			ck_assert_double_eq_tol(s, 1, 1e-12);
			ck_assert_uint_le(nz, i == 0 ? 2 : 1);
		}
	}
	zm_weighter_adjust(w, 0.001);              /* fits: back to top-k */
	ck_assert_uint_eq(w->k_active, 2);
	zm_weighter_free(w);
	for (i = 0; i < 3; i++)
		zm_model_free(ms[i]);
}
END_TEST

/*
 * Weighters that share a profile cache (predict --granularity auto holds
 * one per level) parse each model's profile once and borrow one set of
 * routing densities, and weigh exactly as weighters that parse their
 * own: the same profile moments, the same log-likelihoods.
 */
START_TEST(test_shared_cache)
{
	struct zm_model *ms[3] = { make_model(1, -2, false), make_model(2, 0, false),
	                           make_model(3, 2, false) };
	const struct zm_model *const *cm = (const struct zm_model *const *)ms;
	struct zm_weighter_options o;
	struct zm_weighter *a, *b, *own;
	struct zm_profile_cache c;
	struct zm_error err;
	float x[40 * 5];
	size_t l, i;

	rand_input(x, 40, 7, 0.5);
	zm_profile_cache_init(&c);
	zm_weighter_options_init(&o);
	o.use_loadavg = false;
	o.level = ZM_GRAN_LAYER;
	o.cache = &c;
	ck_assert_int_eq(zm_weighter_new(&o, cm, names3, 3, 40, NULL, NULL, NULL,
	                                 &a, &err), ZM_OK);
	o.level = ZM_GRAN_GROUP;
	ck_assert_int_eq(zm_weighter_new(&o, cm, names3, 3, 40, NULL, NULL, NULL,
	                                 &b, &err), ZM_OK);
	ck_assert_uint_eq(c.n_models, 3);
	ck_assert_ptr_null(a->own_cache);
	o.level = ZM_GRAN_LAYER;
	o.cache = NULL;
	ck_assert_int_eq(zm_weighter_new(&o, cm, names3, 3, 40, NULL, NULL, NULL,
	                                 &own, &err), ZM_OK);
	ck_assert_ptr_nonnull(own->own_cache);
	for (l = 0; l < 3; l++) {
		if (!own->pm[l]) {
			ck_assert_ptr_null(a->pm[l]);
			continue;
		}
		ck_assert_ptr_nonnull(a->pm[l]);
		for (i = 0; i < 3 * zm_layer_profile_dim(&own->arch->layers[l]); i++) {
			ck_assert(a->pm[l][i] == own->pm[l][i]);
			ck_assert(a->pv[l][i] == own->pv[l][i]);
		}
	}
	zm_weighter_free(a);
	zm_weighter_free(b);
	zm_weighter_free(own);

	o.kind = ZM_WEIGHTING_DENSITY;
	o.temperature = 1;
	o.per_row = true;
	o.level = ZM_GRAN_FULL;
	o.cache = &c;
	ck_assert_int_eq(zm_weighter_new(&o, cm, names3, 3, 40, NULL, NULL, NULL,
	                                 &a, &err), ZM_OK);
	o.level = ZM_GRAN_LAYER;
	ck_assert_int_eq(zm_weighter_new(&o, cm, names3, 3, 40, NULL, NULL, NULL,
	                                 &b, &err), ZM_OK);
	ck_assert_uint_eq(c.n_sets, 1);
	ck_assert_ptr_eq(a->dens, b->dens);
	ck_assert(a->separable && b->separable);
	ck_assert_double_eq(a->sep_kl, b->sep_kl);
	o.cache = NULL;
	ck_assert_int_eq(zm_weighter_new(&o, cm, names3, 3, 40, NULL, NULL, NULL,
	                                 &own, &err), ZM_OK);
	ck_assert_ptr_ne(own->dens, a->dens);
	ck_assert_double_eq(own->sep_kl, a->sep_kl);
	zm_weighter_begin(b, x, 40);
	zm_weighter_begin(own, x, 40);
	ck_assert_int_eq(b->pending, ZM_OK);
	for (i = 0; i < 40 * 3; i++)
		ck_assert(b->ll[i] == own->ll[i] && isfinite(b->ll[i]));
	/* A weighter freed leaves the densities to the others. */
	zm_weighter_free(a);
	zm_weighter_begin(b, x, 40);
	for (i = 0; i < 40 * 3; i++)
		ck_assert(b->ll[i] == own->ll[i]);
	zm_weighter_free(b);
	zm_weighter_free(own);
	zm_profile_cache_release(&c);
	for (i = 0; i < 3; i++)
		zm_model_free(ms[i]);
}
END_TEST

START_TEST(test_no_profile)
{
	struct zm_model *ms[2] = { make_model(1, 0, false), make_model(2, 0, true) };
	struct zm_weighter_options o;
	struct zm_weighter *w = NULL;
	struct zm_error err;

	zm_weighter_options_init(&o);
	ck_assert_int_eq(zm_weighter_new(&o, (const struct zm_model *const *)ms,
	                                 names3, 2, 8, NULL, NULL, NULL, &w,
	                                 &err), ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "'b' has no profile"));
	ck_assert_ptr_nonnull(strstr(err.msg, "uniform or static"));
	o.kind = ZM_WEIGHTING_UNIFORM;
	ck_assert_int_eq(zm_weighter_new(&o, (const struct zm_model *const *)ms,
	                                 names3, 2, 8, NULL, NULL, NULL, &w,
	                                 &err), ZM_OK);
	zm_weighter_free(w);
	zm_model_free(ms[0]);
	zm_model_free(ms[1]);
}
END_TEST

/* Hedge on a synthetic stream: model b is a's output layer negated plus
 * noise, so it is wrong where a is right; labels are a's predictions. */
START_TEST(test_hedge_moves_weight)
{
	struct zm_model *a = make_model(1, 0, true), *b;
	struct zm_model *ms[2];
	struct zm_predict_options o;
	struct zm_predictor *p;
	struct zm_error err;
	struct zm_tensor y;
	float x[32 * 5], sc[32 * 3];
	double loss[2], w[2];
	int64_t shape[1] = { 32 };
	size_t i, batch;

	ck_assert_int_eq(zm_model_copy(a, &b, &err), ZM_OK);
	{
		float *W = b->layers[2].weight.data;
		for (i = 0; i < 12; i++)
			W[i] = -W[i];
	}
	ms[0] = b;
	ms[1] = a;
	zm_predict_options_init(&o);
	o.names = names3;
	o.feedback = true;
	/* The probe's loss gaps are a tenth of the models' alone. */
	o.eta = 20;
	ck_assert_int_eq(zm_predictor_new_opts((const struct zm_model *const *)ms,
	                                       2, 32, &o, &p, &err), ZM_OK);
	zm_tensor_init(&y);
	ck_assert_int_eq(zm_tensor_alloc(&y, "y", ZM_DTYPE_I64, 1, shape, &err),
	                 ZM_OK);
	for (batch = 0; batch < 30; batch++) {
		struct zm_workspace *ws = p->ws[1];
		const float *z;
		rand_input(x, 32, 40 + batch, 0);
		z = zm_model_forward(a, ws, x, 32);
		for (i = 0; i < 32; i++)
			((int64_t *)y.data)[i] = (int64_t)zm_predict_argmax(z + i * 3, 3);
		ck_assert_int_eq(zm_predict_run(p, x, 32, sc, NULL, &err), ZM_OK);
		ck_assert_int_eq(zm_predict_feedback(p, x, 32, &y, 0, loss, &err),
		                 ZM_OK);
		ck_assert(loss[1] < loss[0]);
	}
	ck_assert_uint_eq(p->hedge.batches, 30);
	/* Fixed share keeps b's weight at share / 2 of the total at least:
	 * h_b >= log((share / 2) / (1 - share / 2)). */
	ck_assert(p->hedge.score[1] == 0 && p->hedge.score[0] < -1);
	ck_assert(p->hedge.score[0] >= log(o.share / 2 / (1 - o.share / 2)) -
	          1e-9);
	ck_assert_int_eq(zm_weighter_layer(p->wr, 0, x, 32, w, &err), ZM_OK);
	ck_assert(w[1] > 0.75 && w[1] <= 1 - o.share / 2 + 1e-9);
	/* Probe 1 measures each model alone: its cross-entropy, computed
	 * here from its own forward pass. */
	p->o.probe = 1;
	ck_assert_int_eq(zm_predict_feedback(p, x, 32, &y, 0, loss, &err),
	                 ZM_OK);
	for (batch = 0; batch < 2; batch++) {
		struct zm_workspace *ws;
		const float *z;
		double ref = 0;
		ck_assert_int_eq(zm_workspace_new(ms[batch]->arch, 32, false, &ws,
		                                  &err), ZM_OK);
		z = zm_model_forward(ms[batch], ws, x, 32);
		for (i = 0; i < 32; i++) {
			const float *zr = z + i * 3;
			double mx = fmax(zr[0], fmax(zr[1], zr[2])), se = 0;
			size_t c;
			for (c = 0; c < 3; c++)
				se += exp(zr[c] - mx);
			ref -= zr[((int64_t *)y.data)[i]] - mx - log(se);
		}
		ck_assert_double_eq_tol(loss[batch], ref / 32, 1e-4);
		zm_workspace_free(ws);
	}
	zm_tensor_release(&y);
	zm_predictor_free(p);
	zm_model_free(a);
	zm_model_free(b);
}
END_TEST

/* One fixed-share round against the closed form. */
START_TEST(test_fixed_share_step)
{
	struct zm_hedge h;
	struct zm_error err;
	double loss[2] = { 1, 0 }, v0, v1;

	zm_hedge_init(&h);
	ck_assert_int_eq(zm_hedge_reset(&h, names3, 2, &err), ZM_OK);
	zm_hedge_update(&h, loss, 1.0, 0.2);
	/* v = softmax(-1, 0), v' = 0.8 v + 0.1. */
	v0 = 0.8 * exp(-1) / (1 + exp(-1)) + 0.1;
	v1 = 0.8 * 1 / (1 + exp(-1)) + 0.1;
	ck_assert_double_eq_tol(h.score[0], log(v0 / v1), 1e-12);
	ck_assert(h.score[1] == 0);
	ck_assert_uint_eq(h.batches, 1);
	/* share 0 is plain Hedge. */
	zm_hedge_update(&h, loss, 2.0, 0);
	ck_assert_double_eq_tol(h.score[0], log(v0 / v1) - 2, 1e-12);
	zm_hedge_release(&h);
}
END_TEST

/* Rounds after a switch until the new best model (1) weighs more than
 * the old one, after T rounds where model 0 was the better by a loss
 * gap of 1. */
static size_t rounds_to_recover(double eta, double share, size_t T)
{
	struct zm_hedge h;
	struct zm_error err;
	double before[2] = { 0, 1 }, after[2] = { 1, 0 };
	size_t t;

	zm_hedge_init(&h);
	ck_assert_int_eq(zm_hedge_reset(&h, names3, 2, &err), ZM_OK);
	for (t = 0; t < T; t++)
		zm_hedge_update(&h, before, eta, share);
	for (t = 0; h.score[1] < h.score[0]; t++) {
		ck_assert_uint_lt(t, 100000);
		zm_hedge_update(&h, after, eta, share);
	}
	zm_hedge_release(&h);
	return t + 1;
}

/*
 * Fixed share forgets: before the switch model 1's weight is at least
 * share / 2, so its log-odds are >= -log((1 - share / 2) / (share / 2))
 * and each round after the switch adds eta to them; it leads within
 * ceil(that / eta) + 1 rounds however long the first phase was.  Plain
 * Hedge needs about as many rounds as the first phase lasted (up to the
 * score floor, ZM_HEDGE_SCORE_MIN / eta).
 */
START_TEST(test_fixed_share_recovers)
{
	double eta = 0.5, share = 0.1;
	size_t bound = (size_t)ceil(log((1 - share / 2) / (share / 2)) / eta) + 1;

	ck_assert_uint_le(rounds_to_recover(eta, share, 1000), bound);
	ck_assert_uint_le(rounds_to_recover(eta, share, 20), bound);
	ck_assert_uint_le(rounds_to_recover(eta, share, 10000), bound);
	ck_assert_uint_ge(rounds_to_recover(eta, 0, 20), 20);
	ck_assert_uint_ge(rounds_to_recover(eta, 0, 1000),
	                  (size_t)(ZM_HEDGE_SCORE_MIN / eta));
	ck_assert_uint_gt(rounds_to_recover(eta, 0, 1000), 4 * bound);
}
END_TEST

/* The probe moves a share of the weight to one model: uniform weights
 * of 3 models become (1 - s) / 3 + s e_i. */
START_TEST(test_probe_weights)
{
	struct zm_model *ms[3] = { make_model(1, 0, true), make_model(2, 0, true),
	                           make_model(3, 0, true) };
	struct zm_weighter_options o;
	struct zm_weighter *w;
	struct zm_error err;
	double wt[3];
	float x[4 * 5];
	size_t i;

	zm_weighter_options_init(&o);
	o.kind = ZM_WEIGHTING_UNIFORM;
	ck_assert_int_eq(zm_weighter_new(&o, (const struct zm_model *const *)ms,
	                                 names3, 3, 4, NULL, NULL, NULL, &w,
	                                 &err), ZM_OK);
	rand_input(x, 4, 1, 0);
	zm_weighter_begin(w, x, 4);
	zm_weighter_probe(w, 2, 0.25);
	ck_assert_int_eq(zm_weighter_layer(w, 0, x, 4, wt, &err), ZM_OK);
	for (i = 0; i < 3; i++)
		ck_assert_double_eq_tol(wt[i], 0.75 / 3 + (i == 2 ? 0.25 : 0),
		                        1e-12);
	zm_weighter_probe(w, SIZE_MAX, 0);
	ck_assert_int_eq(zm_weighter_layer(w, 0, x, 4, wt, &err), ZM_OK);
	for (i = 0; i < 3; i++)
		ck_assert_double_eq_tol(wt[i], 1.0 / 3, 1e-12);
	zm_weighter_free(w);
	for (i = 0; i < 3; i++)
		zm_model_free(ms[i]);
}
END_TEST

/* (a0 - 1)^2 + 2 (a1 + 0.5)^2; the gradient when ctx is not NULL, else
 * NaN (central differences). */
static double quad(void *ctx, const double *a, double *grad)
{
	if (grad) {
		grad[0] = ctx ? 2 * (a[0] - 1) : NAN;
		grad[1] = ctx ? 4 * (a[1] + 0.5) : NAN;
	}
	return pow(a[0] - 1, 2) + 2 * pow(a[1] + 0.5, 2);
}

/*
 * The descent on a quadratic: without the penalty it finds the minimum;
 * with reg it finds the closed-form minimum of f + reg / 2 |a|^2,
 * a0 = 2 / (2 + reg), a1 = -2 / (4 + reg); one step never leaves the
 * trust region; J never rises.
 */
START_TEST(test_adapt_minimise)
{
	struct zm_adapt_options ao;
	struct zm_adapt_result res;
	double a[2], scratch[6], f;
	int analytic;

	for (analytic = 0; analytic < 2; analytic++) {
		void *ctx = analytic ? (void *)&ao : NULL;
		zm_adapt_options_init(&ao);
		ao.steps = 60;
		ao.lr = 0.2;
		ao.reg = 0;
		ao.tol = 0;
		a[0] = a[1] = 0;
		f = zm_adapt_minimise(a, 2, quad, ctx, &ao, scratch, &res);
		ck_assert_double_eq_tol(a[0], 1, 1e-4);
		ck_assert_double_eq_tol(a[1], -0.5, 1e-4);
		ck_assert(f < 1e-8 && res.f1 == f && res.f0 == 1.5);
		ao.reg = 0.5;
		a[0] = a[1] = 0;
		zm_adapt_minimise(a, 2, quad, ctx, &ao, scratch, &res);
		ck_assert_double_eq_tol(a[0], 2 / 2.5, 1e-4);
		ck_assert_double_eq_tol(a[1], -2 / 4.5, 1e-4);
		ck_assert(res.j1 <= res.j0 && res.f1 <= res.f0);
		/* One step: within max_step of the start. */
		ao.steps = 1;
		ao.lr = 10;
		ao.max_step = 0.1;
		a[0] = a[1] = 0;
		zm_adapt_minimise(a, 2, quad, ctx, &ao, scratch, &res);
		ck_assert(fabs(a[0]) <= 0.1 + 1e-15 && fabs(a[1]) <= 0.1 + 1e-15);
		ck_assert(a[0] > 0 && a[1] < 0);
		ck_assert_uint_eq(res.steps, 1);
	}
}
END_TEST

/* Two models with different confidence; b's output layer sharpened. */
static void adapt_models(struct zm_model **ms)
{
	size_t i;

	ms[0] = make_model(1, 0, true);
	ms[1] = make_model(5, 0, true);
	for (i = 0; i < 12; i++)
		((float *)ms[1]->layers[2].weight.data)[i] *= 4;
}

/* The mean entropy of the ordinary prediction with offsets a. */
static double entropy_at(struct zm_predictor *p, const float *x, size_t n,
                         const double *a)
{
	struct zm_error err;
	float sc[32 * 3];

	memcpy(p->wr->alpha, a, p->wr->units.n_units * p->n_models *
	       sizeof(double));
	ck_assert_int_eq(zm_predict_run(p, x, n, sc, NULL, &err), ZM_OK);
	return zm_entropy_mean(sc, n, 3);
}

/*
 * The back-propagated gradient of the entropy wrt the per-unit offsets
 * against central differences of the ordinary forward pass, per batch
 * and per row, merge point pre and post, every granularity.
 */
START_TEST(test_entropy_grad)
{
	static const enum zm_gran_level lv[3] = { ZM_GRAN_FULL, ZM_GRAN_GROUP,
	                                          ZM_GRAN_LAYER };
	struct zm_model *ms[2];
	struct zm_predictor *p;
	struct zm_error err;
	double a[6], g[6], v, h = 1e-3;
	float x[32 * 5];
	bool analytic;
	size_t m, j;
	int point = _i % 2, per_row = (_i / 2) % 2;

	adapt_models(ms);
	rand_input(x, 32, 9, 0.3);
	p = make_pred(ms, 2, ZM_MERGE_OUTPUTS, point ? ZM_MERGE_POST :
	              ZM_MERGE_PRE, lv[_i / 4], NULL);
	p->wr->o.per_row = per_row;
	m = p->wr->units.n_units * 2;
	for (j = 0; j < m; j++)
		a[j] = 0.3 * (double)j - 0.4;
	memcpy(p->wr->alpha, a, m * sizeof(double));
	ck_assert_int_eq(zm_predict_entropy_grad(p, x, 32, g, &v, &analytic,
	                                         &err), ZM_OK);
	ck_assert(analytic);
	ck_assert_double_eq_tol(v, entropy_at(p, x, 32, a), 1e-5);
	for (j = 0; j < m; j++) {
		double keep = a[j], fp, fm;
		a[j] = keep + h;
		fp = entropy_at(p, x, 32, a);
		a[j] = keep - h;
		fm = entropy_at(p, x, 32, a);
		a[j] = keep;
		ck_assert_double_eq_tol(g[j], (fp - fm) / (2 * h), 2e-4);
	}
	/* Merge params has no tape. */
	zm_predictor_free(p);
	p = make_pred(ms, 2, ZM_MERGE_PARAMS, ZM_MERGE_PRE, ZM_GRAN_FULL, NULL);
	ck_assert_int_eq(zm_predict_entropy_grad(p, x, 32, g, &v, &analytic,
	                                         &err), ZM_OK);
	ck_assert(!analytic);
	zm_predictor_free(p);
	zm_model_free(ms[0]);
	zm_model_free(ms[1]);
}
END_TEST

/*
 * Adaptation on a batch never raises its entropy (checked on the
 * ordinary prediction afterwards), and each offset stays within steps *
 * max_step of 0, with the analytic gradient (outputs) and with central
 * differences (params).
 */
START_TEST(test_adapt)
{
	struct zm_model *ms[2];
	struct zm_predictor *p;
	struct zm_error err;
	double before, after;
	float x[32 * 5], sc[32 * 3];
	size_t i, j, m;
	enum zm_merge_mode mode = _i < 2 ? ZM_MERGE_OUTPUTS : ZM_MERGE_PARAMS;

	adapt_models(ms);
	p = make_pred(ms, 2, mode, ZM_MERGE_PRE, _i % 2 ? ZM_GRAN_LAYER :
	              ZM_GRAN_FULL, NULL);
	p->o.adapt_o.steps = 3;
	p->o.adapt_o.max_step = 0.25;
	m = p->wr->units.n_units * 2;
	for (i = 0; i < 4; i++) {
		rand_input(x, 32, 3 + i, 0.5 * (double)i);
		ck_assert_int_eq(zm_predict_adapt(p, x, 32, &before, &after, &err),
		                 ZM_OK);
		ck_assert(after <= before);
		ck_assert_int_eq(zm_predict_run(p, x, 32, sc, NULL, &err), ZM_OK);
		ck_assert_double_eq_tol(zm_entropy_mean(sc, 32, 3), after, 1e-5);
		for (j = 0; j < m; j++)
			ck_assert(fabs(p->wr->alpha[j]) <= 3 * 0.25 + 1e-12);
		if (i == 0)
			ck_assert(after < before - 1e-3);
	}
	/* The penalty pulls the offsets in: a strong one keeps them small. */
	p->o.adapt_o.reg = 1e3;
	ck_assert_int_eq(zm_predict_adapt(p, x, 32, &before, &after, &err), ZM_OK);
	ck_assert(after <= before);
	for (j = 0; j < m; j++)
		ck_assert(fabs(p->wr->alpha[j]) < 0.01);
	zm_predictor_free(p);
	zm_model_free(ms[0]);
	zm_model_free(ms[1]);
}
END_TEST

START_TEST(test_hedge_state)
{
	static const char good[] =
		"zoomerge-predict-state 1\n# c\nbatches 3\nscore b -0.5\nscore a 0\n";
	static const char *const bad[] = {
		"", "zoomerge-predict-state 2\nscore a 0\n",
		"zoomerge-predict-state 1\n", "zoomerge-predict-state 1\nscore a nan\n",
		"zoomerge-predict-state 1\nscore a 0.5\n",
		"zoomerge-predict-state 1\nscore a 0\nscore a -1\n",
		"zoomerge-predict-state 1\nscore ../x -1\n",
		"zoomerge-predict-state 1\nbatches -1\nscore a 0\n",
		"zoomerge-predict-state 1\nweights a 0\n",
		"zoomerge-predict-state 1\nscore a -1 extra\n",
	};
	struct zm_hedge h;
	struct zm_error err;
	char path[] = "/tmp/zm-hedge-XXXXXX";
	size_t i;
	int fd;

	zm_hedge_init(&h);
	ck_assert_int_eq(zm_hedge_parse(good, strlen(good), "s", &h, &err), ZM_OK);
	ck_assert_uint_eq(h.k, 2);
	ck_assert_uint_eq(h.batches, 3);
	ck_assert_int_eq(zm_hedge_match(&h, names3, 2, "s", &err), ZM_OK);
	ck_assert_str_eq(h.names[0], "a");
	ck_assert(h.score[0] == 0 && h.score[1] == -0.5);
	ck_assert_int_eq(zm_hedge_match(&h, names3 + 1, 2, "s", &err),
	                 ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "other models"));
	ck_assert_str_eq(h.names[0], "a");
	fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(zm_hedge_save(&h, path, &err), ZM_OK);
	zm_hedge_release(&h);
	ck_assert_int_eq(zm_hedge_load(&h, path, names3, 2, &err), ZM_OK);
	ck_assert(h.score[1] == -0.5 && h.batches == 3);
	unlink(path);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_int_eq(zm_hedge_parse(bad[i], strlen(bad[i]), "s", &h,
		                                &err), ZM_ERR_FORMAT);
		ck_assert_uint_eq(h.k, 0);
	}
	zm_hedge_release(&h);
}
END_TEST

START_TEST(test_static_weights)
{
	static const char yaml[] =
		"method: linear\nmodels:\n"
		"  - {model: a, weight: [1, 3]}\n"
		"  - {model: b, weight: {features: 1, out: 2}}\n"
		"  - {model: c, weight: 1}\n";
	struct zm_model *m = make_model(1, 0, true);
	struct zm_node *root;
	struct zm_error err;
	double w[9];
	/* a: 1, 2, 3 across the three layers; b: 1, 1, 2; c: 1. */
	const double ref[9] = { 1.0 / 3, 1.0 / 3, 1.0 / 3, 2.0 / 4, 1.0 / 4,
	                        1.0 / 4, 3.0 / 6, 2.0 / 6, 1.0 / 6 };
	size_t i;

	ck_assert_int_eq(zm_config_parse(yaml, strlen(yaml), "w.yaml", &root,
	                                 &err), ZM_OK);
	ck_assert_int_eq(zm_static_weights(root, m->arch, names3, 3, w, &err),
	                 ZM_OK);
	for (i = 0; i < 9; i++)
		ck_assert_double_eq_tol(w[i], ref[i], 1e-12);
	zm_node_free(root);
	ck_assert_int_eq(zm_config_parse("models: [{model: z, weight: 1}]", 31,
	                                 "w.yaml", &root, &err), ZM_OK);
	ck_assert_int_eq(zm_static_weights(root, m->arch, names3, 3, w, &err),
	                 ZM_ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(err.msg, "w.yaml:1:"));
	zm_node_free(root);
	zm_model_free(m);
}
END_TEST

Suite *suite_weighting(void)
{
	Suite *s = suite_create("weighting");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_softmax_topk);
	tcase_add_test(tc, test_identical_models);
	tcase_add_loop_test(tc, test_merge_vs_naive, 0, 3);
	tcase_add_loop_test(tc, test_merge_vs_naive_wide, 0, 3);
	tcase_add_test(tc, test_similarity_weights);
	tcase_add_test(tc, test_no_profile);
	tcase_add_test(tc, test_hedge_moves_weight);
	tcase_add_test(tc, test_fixed_share_step);
	tcase_add_test(tc, test_fixed_share_recovers);
	tcase_add_test(tc, test_probe_weights);
	tcase_add_test(tc, test_adapt_minimise);
	tcase_add_loop_test(tc, test_entropy_grad, 0, 12);
	tcase_add_loop_test(tc, test_adapt, 0, 4);
	tcase_add_test(tc, test_hedge_state);
	tcase_add_test(tc, test_static_weights);
	tcase_add_test(tc, test_shared_cache);
	suite_add_tcase(s, tc);
	return s;
}
