/*
 * Inference over data documents: forward passes in batches with buffers
 * allocated once, softmax in double precision, feedback.  Memory is
 * bounded by one input document plus one batch, never by the rows.  The
 * test-time adaptation of the weights is predadapt.c's; the trace,
 * metrics, prediction writers and the per-document loop predout.c's.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "dataset.h"
#include "gemm.h"
#include "json.h"
#include "mem.h"
#include "predict.h"
#include "predpriv.h"
#include "vec.h"

/* ---- the predictor ---- */

bool zm_merge_mode_parse(const char *s, enum zm_merge_mode *out)
{
	if (strcmp(s, "outputs") == 0)
		*out = ZM_MERGE_OUTPUTS;
	else if (strcmp(s, "params") == 0)
		*out = ZM_MERGE_PARAMS;
	else if (strcmp(s, "ensemble") == 0)
		*out = ZM_MERGE_ENSEMBLE;
	else if (strcmp(s, "route") == 0)
		*out = ZM_MERGE_ROUTE;
	else
		return false;
	return true;
}

const char *zm_merge_mode_name(enum zm_merge_mode m)
{
	static const char *const names[] = {
		[ZM_MERGE_OUTPUTS] = "outputs", [ZM_MERGE_PARAMS] = "params",
		[ZM_MERGE_ENSEMBLE] = "ensemble", [ZM_MERGE_ROUTE] = "route",
	};

	return names[m];
}

bool zm_route_mix_parse(const char *s, enum zm_route_mix *out)
{
	if (strcmp(s, "auto") == 0)
		*out = ZM_ROUTE_MIX_AUTO;
	else if (strcmp(s, "final") == 0)
		*out = ZM_ROUTE_MIX_FINAL;
	else if (strcmp(s, "layers") == 0)
		*out = ZM_ROUTE_MIX_LAYERS;
	else
		return false;
	return true;
}

bool zm_merge_point_parse(const char *s, enum zm_merge_point *out)
{
	if (strcmp(s, "pre") == 0)
		*out = ZM_MERGE_PRE;
	else if (strcmp(s, "post") == 0)
		*out = ZM_MERGE_POST;
	else
		return false;
	return true;
}

void zm_predict_options_init(struct zm_predict_options *o)
{
	memset(o, 0, sizeof(*o));
	o->merge = ZM_MERGE_OUTPUTS;
	o->point = ZM_MERGE_PRE;
	zm_weighter_options_init(&o->w);
	o->w.kind = ZM_WEIGHTING_UNIFORM;
	o->eta = ZM_PREDICT_ETA_DEFAULT;
	o->share = ZM_HEDGE_SHARE_DEFAULT;
	o->probe = ZM_PREDICT_PROBE_DEFAULT;
	zm_adapt_options_init(&o->adapt_o);
	o->adapt_rows = 256;
	o->threshold = ZM_ROUTE_THRESHOLD_DEFAULT;
}

enum zm_status zm_predictor_new(const struct zm_model *const *models,
                                size_t k, size_t max_batch,
                                struct zm_predictor **out,
                                struct zm_error *err)
{
	struct zm_predict_options o;

	zm_predict_options_init(&o);
	return zm_predictor_new_opts(models, k, max_batch, &o, out, err);
}

/* Checks that the K models can be merged as o asks. */
static enum zm_status check_models(const struct zm_model *const *models,
                                   size_t k, const char *const *names,
                                   const struct zm_predict_options *o,
                                   struct zm_error *err)
{
	const struct zm_arch *a0 = models[0]->arch;
	size_t i;

	for (i = 1; i < k; i++) {
		const struct zm_arch *a = models[i]->arch;
		if (o->merge == ZM_MERGE_ENSEMBLE || o->merge == ZM_MERGE_ROUTE) {
			if (a->input_features != a0->input_features ||
			    a->output_features != a0->output_features ||
			    a->loss != a0->loss)
				return zm_error_set(err, ZM_ERR_DATA, "models '%s' "
				                    "and '%s' differ (inputs %zu vs "
				                    "%zu, outputs %zu vs %zu, loss %s "
				                    "vs %s): they cannot predict "
				                    "together", names[0], names[i],
				                    a0->input_features,
				                    a->input_features,
				                    a0->output_features,
				                    a->output_features,
				                    zm_loss_name(a0->loss),
				                    zm_loss_name(a->loss));
			continue;
		}
		if (zm_model_same_arch(a0, a, err) != ZM_OK)
			return zm_error_prefix(err, "models '%s' and '%s' have "
			                       "different architectures (use "
			                       "--merge ensemble to mix only their "
			                       "outputs): ", names[0], names[i]);
	}
	if (o->merge == ZM_MERGE_PARAMS && o->w.per_row)
		return zm_error_set(err, ZM_ERR_USAGE, "merging parameters needs "
		                    "per-batch weights: one set of merged "
		                    "parameters serves the whole batch");
	if (o->merge == ZM_MERGE_PARAMS && o->point == ZM_MERGE_POST)
		return zm_error_set(err, ZM_ERR_USAGE, "merging parameters "
		                    "merges before the activation; merging after "
		                    "it needs merged outputs");
	if ((o->merge == ZM_MERGE_ENSEMBLE || o->merge == ZM_MERGE_ROUTE) &&
	    o->w.level != ZM_GRAN_FULL)
		return zm_error_set(err, ZM_ERR_USAGE, "%s mixes only the final "
		                    "outputs: it needs the full granularity",
		                    o->merge == ZM_MERGE_ROUTE ? "routing" :
		                    "an ensemble");
	return ZM_OK;
}

/* Stacks the K models' weights of every dense layer, [K*out, in], and
 * their biases, [K*out], so one GEMM computes all K outputs. */
static enum zm_status stack_layers(struct zm_predictor *p,
                                   struct zm_error *err)
{
	const struct zm_arch *a = p->models[0]->arch;
	size_t K = p->n_models, l, i;

	p->wcat = zm_calloc(a->n_layers, sizeof(*p->wcat));
	p->bcat = zm_calloc(a->n_layers, sizeof(*p->bcat));
	if (!p->wcat || !p->bcat)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (l = 0; l < a->n_layers; l++) {
		const struct zm_layer_spec *s = &a->layers[l];
		size_t wn, kw, kb;

		if (!s->has_params)
			continue;
		wn = s->n_weight;
		if (!zm_size_mul(wn, K, &kw) ||
		    !zm_size_mul(s->n_bias, K, &kb) ||
		    !(p->wcat[l] = zm_malloc(kw * sizeof(float))) ||
		    !(p->bcat[l] = zm_malloc(kb * sizeof(float))))
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory "
			                    "stacking layer '%s'", s->name);
		for (i = 0; i < K; i++) {
			memcpy(p->wcat[l] + i * wn, p->models[i]->layers[l].weight.data,
			       wn * sizeof(float));
			memcpy(p->bcat[l] + i * s->n_bias,
			       p->models[i]->layers[l].bias.data,
			       s->n_bias * sizeof(float));
		}
	}
	return ZM_OK;
}

/* The packed copies the dense layers of merged_forward multiply with:
 * the stack for the outputs merge, each model's weights (and room for
 * their combination) for the params merge. */
static enum zm_status pack_layers(struct zm_predictor *p, struct zm_error *err)
{
	const struct zm_arch *a = p->models[0]->arch;
	size_t K = p->n_models, L = a->n_layers, l, i;
	bool params = p->o.merge == ZM_MERGE_PARAMS;
	enum zm_status st;

	if (params) {
		p->pmodel = zm_calloc(L * K, sizeof(*p->pmodel));
		p->pmerged = zm_calloc(L, sizeof(*p->pmerged));
		p->coef = zm_calloc(K, sizeof(*p->coef));
		p->pcoef = zm_calloc(L * K, sizeof(*p->pcoef));
		if (!p->pmodel || !p->pmerged || !p->coef || !p->pcoef)
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		for (i = 0; i < L * K; i++)
			p->pcoef[i] = NAN;   /* nothing combined yet */
	} else if (!(p->pstack = zm_calloc(L, sizeof(*p->pstack)))) {
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	for (l = 0; l < L; l++) {
		const struct zm_layer_spec *s = &a->layers[l];
		size_t in = s->in_features, out = s->out_features;
		if (s->type != ZM_LAYER_DENSE)
			continue;
		if (!params) {
			st = zm_gemm_pack(&p->pstack[l], p->wcat[l], K * out, in, in,
			                  p->max_batch, err);
			if (st != ZM_OK)
				return st;
			continue;
		}
		for (i = 0; i < K; i++) {
			st = zm_gemm_pack(&p->pmodel[l * K + i],
			                  p->wcat[l] + i * out * in, out, in, in,
			                  p->max_batch, err);
			if (st != ZM_OK)
				return st;
		}
		st = zm_gemm_pack(&p->pmerged[l], p->wcat[l], out, in, in,
		                  p->max_batch, err);
		if (st != ZM_OK)
			return st;
	}
	return ZM_OK;
}

/* The buffers of the merged passes, sized by the widest layer. */
static enum zm_status alloc_buffers(struct zm_predictor *p,
                                    const struct zm_predict_options *o,
                                    size_t nk, size_t nlogp,
                                    struct zm_error *err)
{
	const struct zm_arch *arch = p->models[0]->arch;
	const size_t max_batch = p->max_batch, k = p->n_models;
	size_t hw, zw, maxw = 0, maxout = 0, l, maxsc = 0;
	enum zm_status st;

	for (l = 0; l < arch->n_layers; l++) {
		const struct zm_layer_spec *s = &arch->layers[l];
		size_t wn = s->n_weight;
		size_t sc = zm_layer_scratch_floats(s, max_batch, false);
		if (s->out_features > maxout)
			maxout = s->out_features;
		if (s->has_params && wn > maxw)
			maxw = wn;
		if (sc > maxsc)
			maxsc = sc;
	}
	if (!zm_size_mul(max_batch, arch->max_features, &hw) ||
	    !zm_size_mul(nk, maxout, &zw)) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "batch size too large");
		return st;
	}
	p->ha = zm_malloc(hw * sizeof(float));
	p->hb = zm_malloc(hw * sizeof(float));
	p->z = zm_malloc((o->merge == ZM_MERGE_OUTPUTS || p->pstack ? zw :
	                  nlogp) * sizeof(float));
	p->wm = zm_malloc((maxw ? maxw : 1) * sizeof(float));
	p->bm = zm_malloc((maxout ? maxout : 1) * sizeof(float));
	p->wl = zm_malloc(nk * sizeof(double));
	if (maxsc && !(p->scratch = zm_malloc(maxsc < SIZE_MAX / sizeof(float) ?
	                                      maxsc * sizeof(float) : SIZE_MAX))) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		return st;
	}
	p->ascores = zm_malloc(nlogp * sizeof(float));
	p->adapt_scratch = zm_malloc(3 * p->wr->units.n_units * k *
	                             sizeof(double));
	p->targets = zm_malloc(nlogp * sizeof(float));
	p->tw = zm_calloc(p->wr->units.n_units * k, sizeof(double));
	if (!p->ha || !p->hb || !p->z || !p->wm || !p->bm || !p->wl ||
	    !p->ascores || !p->adapt_scratch || !p->targets || !p->tw) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		return st;
	}
	return ZM_OK;
}

enum zm_status zm_predictor_new_opts(const struct zm_model *const *models,
                                     size_t k, size_t max_batch,
                                     const struct zm_predict_options *o,
                                     struct zm_predictor **out,
                                     struct zm_error *err)
{
	struct zm_predictor *p;
	const struct zm_arch *arch;
	enum zm_status st;
	size_t nlogp, i, nk, nx;
	char **auto_names = NULL;
	const char *const *names;

	*out = NULL;
	ZM_ASSERT(models != NULL);
	if (k == 0)
		return zm_error_set(err, ZM_ERR_USAGE, "no model to predict with");
	if (max_batch == 0)
		return zm_error_set(err, ZM_ERR_USAGE, "batch size must be positive");
	arch = models[0]->arch;
	if (!zm_size_mul(max_batch, arch->output_features, &nlogp) ||
	    !zm_size_mul(max_batch, k, &nk) ||
	    !zm_size_mul(max_batch, arch->input_features, &nx) ||
	    !zm_size_mul(nx, sizeof(float), &nx))
		return zm_error_set(err, ZM_ERR_NOMEM, "batch size %zu too large",
		                    max_batch);
	p = zm_calloc(1, sizeof(*p));
	if (!p)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	p->o = *o;
	p->o.names = NULL;
	p->o.hedge = NULL;
	zm_hedge_init(&p->hedge);
	p->n_models = k;
	p->max_batch = max_batch;
	p->in_features = arch->input_features;
	p->out_features = arch->output_features;
	p->loss = arch->loss;
	p->models = zm_calloc(k, sizeof(*p->models));
	p->ws = zm_calloc(k, sizeof(*p->ws));
	p->logp = zm_calloc(nlogp, sizeof(float));
	p->scores = zm_calloc(nlogp, sizeof(float));
	p->ids = zm_calloc(max_batch, sizeof(int64_t));
	p->xin = zm_malloc(nx);
	if (!p->models || !p->ws || !p->logp || !p->scores || !p->ids ||
	    !p->xin) {
		zm_predictor_free(p);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	for (i = 0; i < k; i++)
		p->models[i] = models[i];
	if (k == 1) {
		/* The plain forward pass, through packed weights. */
		st = zm_workspace_new(arch, max_batch, false, &p->ws[0], err);
		if (st == ZM_OK)
			st = zm_workspace_pack(p->ws[0], models[0], err);
		if (st != ZM_OK) {
			zm_predictor_free(p);
			return st;
		}
		*out = p;
		return ZM_OK;
	}
	names = o->names;
	if (!names) {
		auto_names = zm_calloc(k, sizeof(*auto_names));
		for (i = 0; auto_names && i < k; i++) {
			char b[32];
			snprintf(b, sizeof(b), "m%zu", i);
			if (!(auto_names[i] = zm_strdup(b)))
				break;
		}
		if (!auto_names || i < k) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
			goto fail;
		}
		names = (const char *const *)auto_names;
	}
	st = check_models(models, k, names, o, err);
	if (st != ZM_OK)
		goto fail;
	st = zm_weighter_new(&o->w, models, names, k, max_batch, o->stat,
	                     o->router, o->assignment, &p->wr, err);
	if (st != ZM_OK)
		goto fail;
	if (o->use_metrics)
		zm_weighter_use_metrics(p->wr, models);
	if (o->hedge)
		st = zm_hedge_reset(&p->hedge, (const char *const *)o->hedge->names,
		                    k, err);
	else
		st = zm_hedge_reset(&p->hedge, names, k, err);
	if (st != ZM_OK)
		goto fail;
	if (o->hedge) {
		memcpy(p->hedge.score, o->hedge->score, k * sizeof(double));
		p->hedge.batches = o->hedge->batches;
	}
	p->wr->hedge = &p->hedge;
	/* Workspaces of the models alone: the ensemble runs them, feedback
	 * measures each model's own loss. */
	if (o->merge == ZM_MERGE_ENSEMBLE || o->merge == ZM_MERGE_ROUTE ||
	    o->feedback)
		for (i = 0; i < k; i++) {
			st = zm_workspace_new(models[i]->arch, max_batch, false,
			                      &p->ws[i], err);
			if (st == ZM_OK)
				st = zm_workspace_pack(p->ws[i], models[i], err);
			if (st != ZM_OK)
				goto fail;
		}
	if (o->merge == ZM_MERGE_ROUTE &&
	    (st = zm_route_state_new(p, names, &p->route, err)) != ZM_OK)
		goto fail;
	/* Routing that mixes layers runs the outputs merge on its
	 * uncertain rows. */
	if ((o->merge != ZM_MERGE_ENSEMBLE && o->merge != ZM_MERGE_ROUTE) ||
	    (p->route && zm_route_mixes_layers(p->route))) {
		st = stack_layers(p, err);
		if (st == ZM_OK)
			st = pack_layers(p, err);
		if (st != ZM_OK)
			goto fail;
	}
	if ((st = alloc_buffers(p, o, nk, nlogp, err)))
		goto fail;
	if (auto_names) {
		for (i = 0; i < k; i++)
			free(auto_names[i]);
		free(auto_names);
	}
	*out = p;
	return ZM_OK;
fail:
	if (auto_names) {
		for (i = 0; i < k; i++)
			free(auto_names[i]);
		free(auto_names);
	}
	zm_predictor_free(p);
	return st;
}

void zm_predictor_free(struct zm_predictor *p)
{
	size_t i;

	if (!p)
		return;
	if (p->ws)
		for (i = 0; i < p->n_models; i++)
			zm_workspace_free(p->ws[i]);
	if (p->wcat)
		for (i = 0; i < p->models[0]->arch->n_layers; i++) {
			free(p->wcat[i]);
			free(p->bcat[i]);
		}
	free(p->wcat);
	free(p->bcat);
	for (i = 0; p->pstack && i < p->models[0]->arch->n_layers; i++)
		zm_gemm_packed_free(&p->pstack[i]);
	for (i = 0; p->pmerged && i < p->models[0]->arch->n_layers; i++)
		zm_gemm_packed_free(&p->pmerged[i]);
	for (i = 0; p->pmodel && i < p->models[0]->arch->n_layers * p->n_models;
	     i++)
		zm_gemm_packed_free(&p->pmodel[i]);
	free(p->pstack);
	free(p->pmerged);
	free(p->pmodel);
	free(p->coef);
	free(p->pcoef);
	zm_weighter_free(p->wr);
	zm_hedge_release(&p->hedge);
	free(p->ws);
	free(p->models);
	free(p->logp);
	free(p->scores);
	free(p->ids);
	free(p->xin);
	free(p->ha);
	free(p->hb);
	free(p->z);
	free(p->wm);
	free(p->scratch);
	free(p->bm);
	free(p->wl);
	free(p->ascores);
	free(p->adapt_scratch);
	free(p->targets);
	free(p->tw);
	zm_route_state_free(p->route);
	free(p);
}

/*
 * Softmax of one row in double precision after subtracting the maximum,
 * so that neither exp overflows nor the largest probability underflows;
 * the log-probabilities come from the same sums.
 */
static void softmax_row(const float *z, size_t c, float *prob, float *logp)
{
	double mx = z[0], sum = 0, lse;
	size_t j;

	for (j = 1; j < c; j++)
		if (z[j] > mx)
			mx = z[j];
	for (j = 0; j < c; j++)
		sum += exp((double)z[j] - mx);
	lse = log(sum);
	for (j = 0; j < c; j++) {
		double lp = (double)z[j] - mx - lse;
		prob[j] = (float)exp(lp);
		if (logp)
			logp[j] = (float)lp;
	}
}

void zm_predict_finish(const struct zm_predictor *p, const float *outp,
                       size_t n, float *scores, float *logp)
{
	size_t c = p->out_features, i;

	if (p->loss == ZM_LOSS_MSE) {
		memcpy(scores, outp, n * c * sizeof(float));
		return;
	}
	for (i = 0; i < n; i++)
		softmax_row(outp + i * c, c, scores + i * c,
		            logp ? logp + i * c : NULL);
}

enum zm_status zm_predict_weigh_whole(struct zm_predictor *p, const float *x,
                                      size_t n, struct zm_error *err)
{
	size_t l0 = p->wr->unit_first[0];
	enum zm_status st;

	zm_weighter_begin(p->wr, x, n);
	ZM_ASSERT(l0 != SIZE_MAX);
	if ((st = zm_weighter_layer(p->wr, l0, x, n, p->wl, err)))
		return st;
	zm_predict_record(p, l0, p->wr->o.per_row ? n : 1);
	return ZM_OK;
}

void zm_predict_record(struct zm_predictor *p, size_t l, size_t rows)
{
	struct zm_weighter *w = p->wr;
	size_t K = p->n_models, u = w->units.layer_unit[l], r, i;

	if (!p->recording || w->unit_first[u] != l)
		return;
	for (i = 0; i < K; i++) {
		double s = 0;
		for (r = 0; r < rows; r++)
			s += p->wl[r * K + i];
		p->tw[u * K + i] = s / (double)rows;
	}
}

/*
 * A conv2d layer of the merged pass: merged parameters, or the K models'
 * feature maps (each [n, out]) mixed per row before or after the
 * activation.  Returns the number of models evaluated.
 */
static size_t conv_merged(struct zm_predictor *p, size_t l, const float *h,
                          size_t n, float *dst)
{
	const struct zm_layer_spec *s = &p->models[0]->arch->layers[l];
	size_t K = p->n_models, out = s->out_features, i, j, r, active = 0;
	bool per_row = p->wr->o.per_row;

	if (p->o.merge == ZM_MERGE_PARAMS) {
		struct zm_layer merged = p->models[0]->layers[l];
		bool first = true;
		for (i = 0; i < K; i++) {
			const struct zm_layer *li = &p->models[i]->layers[l];
			float wi = (float)p->wl[i];
			if (wi == 0)
				continue;
			active++;
			for (j = 0; j < s->n_weight; j++)
				p->wm[j] = (first ? 0.0f : p->wm[j]) +
				           wi * ((const float *)li->weight.data)[j];
			for (j = 0; j < s->n_bias; j++)
				p->bm[j] = (first ? 0.0f : p->bm[j]) +
				           wi * ((const float *)li->bias.data)[j];
			first = false;
		}
		if (first) {
			memset(p->wm, 0, s->n_weight * sizeof(float));
			memset(p->bm, 0, s->n_bias * sizeof(float));
		}
		merged.weight.data = p->wm;
		merged.bias.data = p->bm;
		zm_layer_forward(&merged, h, n, dst, p->scratch);
		zm_activation_apply(s->act, dst, dst, n * out);
		return active;
	}
	for (i = 0; i < K; i++) {
		float *zi = p->z + i * n * out;
		if (!per_row && p->wl[i] == 0)
			continue;
		active++;
		zm_layer_forward(&p->models[i]->layers[l], h, n, zi,
		                 p->scratch);
		if (p->o.point == ZM_MERGE_POST)
			zm_activation_apply(s->act, zi, zi, n * out);
	}
	for (r = 0; r < n; r++) {
		const double *wr = p->wl + (per_row ? r * K : 0);
		float *d = dst + r * out;
		memset(d, 0, out * sizeof(float));
		for (i = 0; i < K; i++) {
			const float *zi = p->z + (i * n + r) * out;
			float wi = (float)wr[i];
			if (wi == 0)
				continue;
			for (j = 0; j < out; j++)
				d[j] += wi * zi[j];
		}
	}
	if (p->o.point == ZM_MERGE_PRE)
		zm_activation_apply(s->act, dst, dst, n * out);
	return active;
}

/* Four four-float vectors (vec.h) make a block of the mixing pass. */
enum { MIX_VEC = 4, MIX_LANES = 4 * MIX_VEC };

/*
 * One block of `len` <= MIX_LANES columns of a row of the outputs merge:
 * d = act(sum_i w_i (z_i + b_i)) (merge point pre) or sum_i w_i
 * act(z_i + b_i) (post), over the models whose weight is not 0 (their
 * products may not have been computed).  z_i and b_i lie `out` floats
 * apart.  relu on full blocks, the common case, stays in registers; the
 * other activations and the tail go through a small array.
 */
static void mix_block(float *restrict d, const float *restrict z,
                      const float *restrict b, const float *w, size_t K,
                      size_t out, size_t len, enum zm_activation act,
                      bool post)
{
	float acc[MIX_LANES] = {0}, t[MIX_LANES];
	size_t i, j;

	if (len == MIX_LANES && act == ZM_ACT_RELU) {
		zm_v4f a0 = {0, 0, 0, 0}, a1 = a0, a2 = a0, a3 = a0;
		for (i = 0; i < K; i++) {
			const float *zi = z + i * out, *bi = b + i * out;
			zm_v4f t0, t1, t2, t3;
			float wi = w[i];
			if (wi == 0)
				continue;
			t0 = zm_load4(zi) + zm_load4(bi);
			t1 = zm_load4(zi + 4) + zm_load4(bi + 4);
			t2 = zm_load4(zi + 8) + zm_load4(bi + 8);
			t3 = zm_load4(zi + 12) + zm_load4(bi + 12);
			if (post) {
				t0 = zm_relu4(t0);
				t1 = zm_relu4(t1);
				t2 = zm_relu4(t2);
				t3 = zm_relu4(t3);
			}
			a0 += wi * t0;
			a1 += wi * t1;
			a2 += wi * t2;
			a3 += wi * t3;
		}
		if (!post) {
			a0 = zm_relu4(a0);
			a1 = zm_relu4(a1);
			a2 = zm_relu4(a2);
			a3 = zm_relu4(a3);
		}
		zm_store4(d, a0);
		zm_store4(d + 4, a1);
		zm_store4(d + 8, a2);
		zm_store4(d + 12, a3);
		return;
	}
	for (i = 0; i < K; i++) {
		const float *zi = z + i * out, *bi = b + i * out;
		float wi = w[i];
		if (wi == 0)
			continue;
		for (j = 0; j < len; j++)
			t[j] = zi[j] + bi[j];
		if (post)
			zm_activation_apply(act, t, t, len);
		for (j = 0; j < len; j++)
			acc[j] += wi * t[j];
	}
	if (!post)
		zm_activation_apply(act, acc, acc, len);
	memcpy(d, acc, len * sizeof(float));
}

/*
 * The mixing pass of --merge outputs for a dense layer: p->z holds the
 * rows' K stacked products [n, K*out] without biases (bcat, K*out), dst
 * receives the merged activations [n, out] under p->wl.
 */
static void mix_outputs(const struct zm_predictor *p, enum zm_activation act,
                        const float *bcat, size_t n, size_t out, float *dst)
{
	size_t K = p->n_models, ko = K * out, r, i, j;
	bool per_row = p->wr->o.per_row, post = p->o.point == ZM_MERGE_POST;
	float w[ZM_WEIGHTER_MAX_MODELS];

	ZM_ASSERT(K <= ZM_WEIGHTER_MAX_MODELS);
	for (r = 0; r < n; r++) {
		const float *zr = p->z + r * ko;
		if (r == 0 || per_row)
			for (i = 0; i < K; i++)
				w[i] = (float)p->wl[(per_row ? r * K : 0) + i];
		for (j = 0; j < out; j += MIX_LANES)
			mix_block(dst + r * out + j, zr + j, bcat + j, w, K, out,
			          out - j < MIX_LANES ? out - j : MIX_LANES, act,
			          post);
	}
}

/* The merged forward pass (outputs or params) of n rows; returns the
 * final outputs (n x C, in p->ha or p->hb). */
static enum zm_status merged_forward(struct zm_predictor *p, const float *x,
                                     size_t n, bool fixed,
                                     const float **result,
                                     struct zm_error *err)
{
	const struct zm_arch *a = p->models[0]->arch;
	size_t K = p->n_models, l, i, j, rows;
	const float *h = x;
	float *dst = p->ha;
	enum zm_status st;
	bool per_row = p->wr->o.per_row;
	size_t evaluated = 0;

	if (!fixed)
		zm_weighter_begin(p->wr, x, n);
	for (l = 0; l < a->n_layers; l++) {
		const struct zm_layer_spec *s = &a->layers[l];
		size_t in = s->in_features, out = s->out_features, ko = K * out;
		size_t active = 0;
		bool all;

		if (s->type == ZM_LAYER_FLATTEN)
			continue;   /* flatten: activations are stored flat */
		if (!s->has_params) {
			/* No parameters (maxpool2d, clip, dropout): every
			 * model computes alike. */
			zm_layer_linear(&p->models[0]->layers[l], h, n, dst);
			h = dst;
			dst = dst == p->ha ? p->hb : p->ha;
			continue;
		}
		if (!fixed) {
			st = zm_weighter_layer(p->wr, l, h, n, p->wl, err);
			if (st != ZM_OK)
				return st;
			rows = per_row ? n : 1;
			zm_predict_record(p, l, rows);
		}
		if (s->type != ZM_LAYER_DENSE) {
			/* conv2d, standardize: the generic layer pass. */
			active = conv_merged(p, l, h, n, dst);
		} else if (p->o.merge == ZM_MERGE_PARAMS) {
			/* The weights combine in the packed layout, so the
			 * one product of the batch repacks nothing; the bias
			 * and activation follow block by block. */
			struct zm_dense_epilogue e = { p->bm, s->act };
			bool first = true;
			for (i = 0; i < K; i++) {
				float wi = (float)p->wl[i];
				const float *B = p->bcat[l] + i * out;
				p->coef[i] = wi;
				if (wi == 0)
					continue;
				active++;
				for (j = 0; j < out; j++)
					p->bm[j] = (first ? 0.0f : p->bm[j]) + wi * B[j];
				first = false;
			}
			/* Static and uniform weights give every batch the
			 * same coefficients: the layer is combined once per
			 * run, not once per batch. */
			if (memcmp(p->pcoef + l * K, p->coef,
			           K * sizeof(float)) != 0) {
				zm_gemm_packed_combine(&p->pmerged[l],
				                       p->pmodel + l * K, p->coef,
				                       K);
				memcpy(p->pcoef + l * K, p->coef, K * sizeof(float));
			}
			zm_gemm_packed_run(&p->pmerged[l], n, h, in, dst, out,
			                   zm_dense_epilogue_block, &e);
		} else {
			/* Per-batch weights skip the models that weigh 0;
			 * otherwise one GEMM over the stacked weights.  The
			 * products land in z without their biases (beta 0, so
			 * BLIS neither reads z nor needs it filled), and one
			 * fused pass per row adds the biases, mixes and applies
			 * the activation while the row is in cache. */
			for (i = 0; i < K; i++)
				if (per_row || p->wl[i] != 0)
					active++;
			all = active == K;
			if (all) {
				zm_gemm_packed_run(&p->pstack[l], n, h, in, p->z,
				                   ko, NULL, NULL);
			} else {
				for (i = 0; i < K; i++)
					if (p->wl[i] != 0)
						zm_gemm(false, true, n, out, in, 1.0f, h,
						        in, p->wcat[l] + i * out * in, in,
						        0.0f, p->z + i * out, ko);
			}
			mix_outputs(p, s->act, p->bcat[l], n, out, dst);
		}
		if (active > evaluated)
			evaluated = active;
		h = dst;
		dst = dst == p->ha ? p->hb : p->ha;
	}
	p->evaluated = evaluated ? evaluated : K;
	*result = h;
	return ZM_OK;
}

enum zm_status zm_predict_merged_rows(struct zm_predictor *p, const float *x,
                                      size_t n, const float **result,
                                      struct zm_error *err)
{
	ZM_ASSERT(p->pstack != NULL);
	return merged_forward(p, x, n, true, result, err);
}

/* The ensemble: every model with weight alone, the final scores mixed. */
static enum zm_status ensemble_forward(struct zm_predictor *p, const float *x,
                                       size_t n, float *scores, float *logp,
                                       struct zm_error *err)
{
	size_t K = p->n_models, c = p->out_features, i, r, j;
	bool per_row = p->wr->o.per_row;
	enum zm_status st;

	if ((st = zm_predict_weigh_whole(p, x, n, err)))
		return st;
	memset(scores, 0, n * c * sizeof(float));
	p->evaluated = 0;
	for (i = 0; i < K; i++) {
		const float *z;
		bool any = false;

		for (r = 0; r < (per_row ? n : 1) && !any; r++)
			any = p->wl[r * K + i] != 0;
		if (!any)
			continue;
		p->evaluated++;
		z = zm_model_forward(p->models[i], p->ws[i], x, n);
		zm_predict_finish(p, z, n, p->z, NULL);
		for (r = 0; r < n; r++) {
			float wi = (float)p->wl[(per_row ? r * K : 0) + i];
			for (j = 0; j < c; j++)
				scores[r * c + j] += wi * p->z[r * c + j];
		}
	}
	if (logp && p->loss == ZM_LOSS_CROSS_ENTROPY)
		for (j = 0; j < n * c; j++)
			logp[j] = scores[j] > 0 ? logf(scores[j]) : -INFINITY;
	return ZM_OK;
}

/* One pass without timing or the latency adjustment (predpriv.h). */
enum zm_status zm_predict_pass(struct zm_predictor *p, const float *x,
                               size_t n, float *scores, float *logp,
                               struct zm_error *err)
{
	const float *outp;
	enum zm_status st;

	if (p->o.merge == ZM_MERGE_ENSEMBLE)
		return ensemble_forward(p, x, n, scores, logp, err);
	if (p->o.merge == ZM_MERGE_ROUTE)
		return zm_route_forward(p, x, n, scores, logp, err);
	st = merged_forward(p, x, n, false, &outp, err);
	if (st == ZM_OK)
		zm_predict_finish(p, outp, n, scores, logp);
	return st;
}

enum zm_status zm_predict_run(struct zm_predictor *p, const float *x,
                              size_t n, float *scores, float *logp,
                              struct zm_error *err)
{
	enum zm_status st;
	double t0;

	ZM_ASSERT(n <= p->max_batch);
	if (n == 0)
		return ZM_OK;
	if (p->n_models == 1) {
		zm_predict_finish(p, zm_model_forward(p->models[0], p->ws[0], x, n),
		              n, scores, logp);
		return ZM_OK;
	}
	t0 = zm_clock_seconds();
	p->recording = true;
	st = zm_predict_pass(p, x, n, scores, logp, err);
	p->recording = false;
	if (st == ZM_OK)
		zm_weighter_adjust(p->wr, (zm_clock_seconds() - t0) /
		                   (double)(p->evaluated ? p->evaluated : 1));
	return st;
}

void zm_predict_batch(struct zm_predictor *p, const float *x, size_t n,
                      float *scores, float *logp)
{
	struct zm_error err;
	enum zm_status st = zm_predict_run(p, x, n, scores, logp, &err);

	ZM_ASSERT(st == ZM_OK);
}

/*
 * Mean loss over n rows of the prediction with the weights the weighter
 * gives now (a probe may be set): labels (I64, validated) or the targets
 * already in p->targets.
 */
static enum zm_status mixture_loss(struct zm_predictor *p, const float *x,
                                   size_t n, const struct zm_tensor *y,
                                   size_t first, double *loss,
                                   struct zm_error *err)
{
	size_t c = p->out_features, r;
	const int64_t *lab = (const int64_t *)y->data + first;
	const float *outp;
	double sum = 0;
	enum zm_status st;

	if (p->o.merge != ZM_MERGE_ENSEMBLE && p->o.merge != ZM_MERGE_ROUTE) {
		st = merged_forward(p, x, n, false, &outp, err);
		if (st != ZM_OK)
			return st;
		if (p->loss == ZM_LOSS_CROSS_ENTROPY) {
			st = zm_loss_cross_entropy(outp, lab, n, c, &sum, NULL,
			                           NULL, err);
			if (st != ZM_OK)
				return st;
		} else {
			zm_loss_mse(outp, p->targets, n, c, &sum, NULL);
		}
		*loss = sum / (double)n;
		return ZM_OK;
	}
	st = zm_predict_pass(p, x, n, p->ascores, NULL, err);
	if (st != ZM_OK)
		return st;
	if (p->loss != ZM_LOSS_CROSS_ENTROPY) {
		zm_loss_mse(p->ascores, p->targets, n, c, &sum, NULL);
	} else {
		for (r = 0; r < n; r++) {
			double q;
			if (lab[r] < 0 || (uint64_t)lab[r] >= c)
				return zm_error_set(err, ZM_ERR_DATA, "row %zu: "
				                    "label %lld is not a class of "
				                    "the %zu-class model", first + r,
				                    (long long)lab[r], c);
			/* The mixed probability; a floor keeps the loss of
			 * a confident wrong mixture finite. */
			q = p->ascores[r * c + (size_t)lab[r]];
			sum -= log(q > 1e-30 ? q : 1e-30);
		}
	}
	*loss = sum / (double)n;
	return ZM_OK;
}

/*
 * The loss of model i is measured where it is used: the mean loss of the
 * merged prediction with a share o.probe of every unit's weight (every
 * row's, with per-row weights) moved to model i.  A model alone (probe 1)
 * says how good it is on the whole batch, which on batches that mix
 * kinds of inputs favours a generalist and overrides the routing; the
 * probe instead says whether more of model i would have helped the
 * prediction actually made, so feedback corrects the routing.  For small
 * probes these losses are the linearised losses of the exponentiated-
 * gradient method.
 */
enum zm_status zm_predict_feedback(struct zm_predictor *p, const float *x,
                                   size_t n, const struct zm_tensor *y,
                                   size_t first, double *loss,
                                   struct zm_error *err)
{
	size_t K = p->n_models, c = p->out_features, i, j;
	enum zm_status st = ZM_OK;

	ZM_ASSERT(p->n_models > 1 && p->ws[0] != NULL);
	if (n == 0)
		return ZM_OK;
	if (p->loss == ZM_LOSS_CROSS_ENTROPY) {
		if (y->dtype != ZM_DTYPE_I64 || y->ndim != 1)
			return zm_error_set(err, ZM_ERR_DATA, "tensor 'y' is %s "
			                    "with %d dimensions; feedback needs "
			                    "I64 class ids [n]",
			                    zm_dtype_name(y->dtype), y->ndim);
	} else {
		size_t ty = y->ndim == 2 ? (size_t)y->shape[1] : 1;
		if (ty != c)
			return zm_error_set(err, ZM_ERR_DATA, "tensor 'y' has %zu "
			                    "targets per row, the model has %zu "
			                    "outputs", ty, c);
		zm_tensor_read_f32(y, first * c, n * c, p->targets);
		for (j = 0; j < n * c; j++)
			if (!isfinite(p->targets[j]))
				return zm_error_set(err, ZM_ERR_DATA, "row %zu: "
				                    "target %zu is not finite",
				                    first + j / c, j % c);
	}
	for (i = 0; i < K && st == ZM_OK; i++) {
		zm_weighter_probe(p->wr, i, p->o.probe);
		st = mixture_loss(p, x, n, y, first, &loss[i], err);
	}
	zm_weighter_probe(p->wr, SIZE_MAX, 0);
	if (st != ZM_OK)
		return st;
	zm_hedge_update(&p->hedge, loss, p->o.eta, p->o.share);
	return ZM_OK;
}
