/*
 * The passes: one layer forward or backward, the workspaces that hold a
 * batch's activations and gradients, and the whole model forward and
 * backward (model.h).
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "conv.h"
#include "gemm.h"
#include "kernel.h"
#include "mem.h"
#include "model.h"
#include "random.h"
#include "vec.h"

static enum zm_status nomem(struct zm_error *err)
{
	return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
}

/* ---- layers ---- */

/* The element-wise layers at inference (dropout is the identity there);
 * in and out may be equal. */
static void elementwise_forward(const struct zm_layer *layer, const float *in,
                                size_t n, float *out)
{
	const struct zm_layer_spec *s = layer->spec;
	size_t f = s->in_features, i, j;

	switch (s->type) {
	case ZM_LAYER_STANDARDIZE: {
		const float *mean = layer->weight.data;
		const float *inv = layer->bias.data;
		for (i = 0; i < n; i++)
			for (j = 0; j < f; j++)
				out[i * f + j] = (in[i * f + j] - mean[j]) * inv[j];
		break;
	}
	case ZM_LAYER_BATCHNORM: {
		const float *rm = layer->weight.data, *rv = layer->bias.data;
		for (j = 0; j < f; j++) {
			float inv = 1.0f / sqrtf(rv[j] + (float)s->eps);
			for (i = 0; i < n; i++)
				out[i * f + j] = (in[i * f + j] - rm[j]) * inv;
		}
		break;
	}
	case ZM_LAYER_CLIP: {
		float lo = (float)s->lo, hi = (float)s->hi;
		for (i = 0; i < n * f; i++) {
			float v = in[i];
			out[i] = v < lo ? lo : v > hi ? hi : v;
		}
		break;
	}
	default:
		if (out != in)
			memmove(out, in, n * f * sizeof(*in));
		break;
	}
}

static bool is_elementwise(enum zm_layer_type t)
{
	return t == ZM_LAYER_STANDARDIZE || t == ZM_LAYER_CLIP ||
	       t == ZM_LAYER_DROPOUT || t == ZM_LAYER_BATCHNORM;
}

/*
 * batchnorm in training: y = (x - mean) / sqrt(var + eps) with the batch's
 * mean and biased variance (in double), which go to stats[0..f) and
 * stats[f..2f) for the backward pass and the running update.
 */
static void batchnorm_train_forward(const struct zm_layer_spec *s,
                                    const float *in, size_t n, float *out,
                                    float *stats)
{
	size_t f = s->in_features, i, j;

	for (j = 0; j < f; j++) {
		double mu = 0, var = 0, inv;
		for (i = 0; i < n; i++)
			mu += in[i * f + j];
		mu /= (double)n;
		for (i = 0; i < n; i++)
			var += (in[i * f + j] - mu) * (in[i * f + j] - mu);
		var /= (double)n;
		inv = 1.0 / sqrt(var + s->eps);
		for (i = 0; i < n; i++)
			out[i * f + j] = (float)((in[i * f + j] - mu) * inv);
		stats[j] = (float)mu;
		stats[f + j] = (float)var;
	}
}

/*
 * Its input gradient given dy and y (the normalised values):
 * dx = inv / n (n dy - sum dy - y sum(dy y)), per feature over the batch.
 */
static void batchnorm_train_backward(const struct zm_layer_spec *s,
                                     const float *y, const float *stats,
                                     size_t n, const float *dy, float *dx)
{
	size_t f = s->in_features, i, j;

	for (j = 0; j < f; j++) {
		double sg = 0, sgy = 0, inv = 1.0 / sqrt(stats[f + j] + s->eps);
		for (i = 0; i < n; i++) {
			sg += dy[i * f + j];
			sgy += (double)dy[i * f + j] * y[i * f + j];
		}
		for (i = 0; i < n; i++)
			dx[i * f + j] = (float)(inv / (double)n *
			                        ((double)n * dy[i * f + j] - sg -
			                         y[i * f + j] * sgy));
	}
}

void zm_model_update_running(struct zm_model *model,
                             const struct zm_workspace *ws, size_t n)
{
	size_t l, j;

	ZM_ASSERT(ws->training);
	for (l = 0; n > 0 && l < model->arch->n_layers; l++) {
		const struct zm_layer_spec *s = model->layers[l].spec;
		float *rm = model->layers[l].weight.data;
		float *rv = model->layers[l].bias.data;
		const float *st = ws->pre[l];
		size_t f = s->in_features;
		double m = s->momentum, unb = n > 1 ? (double)n / (double)(n - 1)
		                                    : 1.0;
		if (s->type != ZM_LAYER_BATCHNORM)
			continue;
		for (j = 0; j < f; j++) {
			rm[j] = (float)((1 - m) * rm[j] + m * st[j]);
			rv[j] = (float)((1 - m) * rv[j] + m * st[f + j] * unb);
		}
	}
}

void zm_layer_linear(const struct zm_layer *layer, const float *in, size_t n,
                     float *out_pre)
{
	const struct zm_layer_spec *s = layer->spec;
	size_t i, nin = s->in_features, nout = s->out_features;
	const float *bias;

	if (s->type == ZM_LAYER_FLATTEN || s->type == ZM_LAYER_ONE_HOT) {
		if (out_pre != in)
			memmove(out_pre, in, n * nin * sizeof(*in));
		return;
	}
	if (s->type == ZM_LAYER_MAXPOOL2D) {
		struct zm_conv_geom g;
		zm_conv_geom_of(s, &g);
		zm_maxpool_forward(&g, in, n, out_pre);
		return;
	}
	if (is_elementwise(s->type)) {
		elementwise_forward(layer, in, n, out_pre);
		return;
	}
	ZM_ASSERT(s->type == ZM_LAYER_DENSE);
	/* Seed each row with the bias and let the GEMM accumulate onto it:
	 * one pass over the output instead of two. */
	bias = layer->bias.data;
	for (i = 0; i < n; i++)
		memcpy(out_pre + i * nout, bias, nout * sizeof(*bias));
	zm_gemm(false, true, n, nout, nin, 1.0f, in, nin, layer->weight.data,
	        nin, 1.0f, out_pre, nout);
}

void zm_layer_forward(const struct zm_layer *layer, const float *in, size_t n,
                      float *out_pre, float *scratch)
{
	const struct zm_layer_spec *s = layer->spec;
	struct zm_conv_geom g;

	if (s->type != ZM_LAYER_CONV2D) {
		zm_layer_linear(layer, in, n, out_pre);
		return;
	}
	ZM_ASSERT(scratch != NULL);
	zm_conv_geom_of(s, &g);
	zm_conv_forward(&g, layer->weight.data, layer->bias.data, in, n,
	                out_pre, scratch);
}

size_t zm_layer_scratch_floats(const struct zm_layer_spec *s,
                               size_t max_batch, bool training)
{
	struct zm_conv_geom g;

	if (s->type != ZM_LAYER_CONV2D)
		return 0;
	zm_conv_geom_of(s, &g);
	return zm_conv_scratch_floats(&g, max_batch, training);
}

void zm_layer_backward_any(const struct zm_layer *layer, const float *in,
                           const float *out_pre, size_t n, const float *dpre,
                           float *dw, float *db, float beta_dw, float *dx,
                           float *scratch)
{
	const struct zm_layer_spec *s = layer->spec;
	struct zm_conv_geom g;

	(void)out_pre;   /* maxpool finds each window's maximum again */
	switch (s->type) {
	case ZM_LAYER_DENSE:
		zm_layer_backward(layer, in, n, dpre, dw, db, beta_dw, dx);
		break;
	case ZM_LAYER_CONV2D:
		ZM_ASSERT(scratch != NULL);
		zm_conv_geom_of(s, &g);
		zm_conv_backward(&g, layer->weight.data, in, n, dpre, dw, db,
		                 beta_dw, dx, scratch);
		break;
	case ZM_LAYER_MAXPOOL2D:
		zm_conv_geom_of(s, &g);
		if (dx)
			zm_maxpool_backward(&g, in, n, dpre, dx);
		break;
	case ZM_LAYER_FLATTEN:
	case ZM_LAYER_ONE_HOT:    /* its units are made with the input */
	case ZM_LAYER_DROPOUT:    /* as at inference; see model.h */
		if (dx && dx != dpre)
			memmove(dx, dpre, n * s->in_features * sizeof(*dx));
		break;
	case ZM_LAYER_STANDARDIZE:
	case ZM_LAYER_BATCHNORM: {
		/* Fitted, not trained: no parameter gradient. */
		const float *inv = layer->bias.data;
		size_t f = s->in_features, i, j;
		if (dw && beta_dw == 0.0f) {
			memset(dw, 0, s->n_weight * sizeof(*dw));
			memset(db, 0, s->n_bias * sizeof(*db));
		}
		for (i = 0; dx && i < n; i++)
			for (j = 0; j < f; j++)
				dx[i * f + j] = dpre[i * f + j] *
				        (s->type == ZM_LAYER_STANDARDIZE ? inv[j] :
				         1.0f / sqrtf(inv[j] + (float)s->eps));
		break;
	}
	case ZM_LAYER_CLIP: {
		float lo = (float)s->lo, hi = (float)s->hi;
		size_t i;
		for (i = 0; dx && i < n * s->in_features; i++)
			dx[i] = in[i] > lo && in[i] < hi ? dpre[i] : 0.0f;
		break;
	}
	}
}

/* db (+)= column sums of the n x cols matrix g. */
static void column_sums(const float *restrict g, size_t n, size_t cols,
                        float *restrict db, bool accumulate)
{
	size_t i, j, k;

	if (!accumulate)
		memset(db, 0, cols * sizeof(*db));
	for (i = 0; i < n; i++) {
		const float *row = g + i * cols;
		for (j = 0; j + LANES <= cols; j += LANES)
			for (k = 0; k < LANES; k++)
				db[j + k] += row[j + k];
		for (; j < cols; j++)
			db[j] += row[j];
	}
}

void zm_layer_backward(const struct zm_layer *layer, const float *in,
                       size_t n, const float *dpre, float *dw, float *db,
                       float beta_dw, float *dx)
{
	const struct zm_layer_spec *s = layer->spec;
	size_t nin = s->in_features, nout = s->out_features;

	ZM_ASSERT(s->type == ZM_LAYER_DENSE);
	if (dw)
		zm_gemm(true, false, nout, nin, n, 1.0f, dpre, nout, in, nin,
		        beta_dw, dw, nin);
	if (db)
		column_sums(dpre, n, nout, db, beta_dw != 0.0f);
	if (dx)
		zm_gemm(false, false, n, nin, nout, 1.0f, dpre, nout,
		        layer->weight.data, nin, 0.0f, dx, nin);
}

/* ---- workspaces and whole-model passes ---- */

void zm_workspace_free(struct zm_workspace *ws)
{
	size_t i;

	if (!ws)
		return;
	for (i = 0; ws->buf && i < ws->arch->n_layers; i++) {
		free(ws->buf[i]);
		if (ws->pre)
			free(ws->pre[i]);
		if (ws->dw)
			free(ws->dw[i]);
		if (ws->db)
			free(ws->db[i]);
	}
	free(ws->out);
	free(ws->pre);
	free(ws->buf);
	free(ws->dw);
	free(ws->db);
	free(ws->grad_a);
	free(ws->grad_b);
	free(ws->dlogits);
	free(ws->scratch);
	for (i = 0; ws->packed && i < ws->arch->n_layers; i++)
		zm_gemm_packed_free(&ws->packed[i]);
	free(ws->packed);
	free(ws);
}

enum zm_status zm_workspace_pack(struct zm_workspace *ws,
                                 const struct zm_model *model,
                                 struct zm_error *err)
{
	size_t l, L = model->arch->n_layers;
	struct zm_gemm_packed *packed;
	enum zm_status st;

	if (ws->training)
		return zm_error_set(err, ZM_ERR_USAGE,
		                    "a training workspace cannot hold packed weights");
	ZM_ASSERT(ws->arch->n_layers == L);
	if (!(packed = zm_calloc(L, sizeof(*packed))))
		return nomem(err);
	for (l = 0; l < L; l++) {
		const struct zm_layer *layer = &model->layers[l];
		const struct zm_layer_spec *s = layer->spec;
		if (s->type != ZM_LAYER_DENSE)
			continue;
		st = zm_gemm_pack(&packed[l], layer->weight.data, s->out_features,
		                  s->in_features, s->in_features, ws->max_batch,
		                  err);
		if (st != ZM_OK) {
			while (l-- > 0)
				zm_gemm_packed_free(&packed[l]);
			free(packed);
			return st;
		}
	}
	for (l = 0; ws->packed && l < L; l++)
		zm_gemm_packed_free(&ws->packed[l]);
	free(ws->packed);
	ws->packed = packed;
	ws->packed_from = model;
	return ZM_OK;
}

void zm_dense_epilogue_block(void *ctx, float *y, size_t ldy, size_t row,
                             size_t rows, size_t col, size_t cols)
{
	const struct zm_dense_epilogue *e = ctx;
	const float *b = e->bias + col;
	bool relu = e->act == ZM_ACT_RELU;
	size_t i, j;

	(void)row;
	for (i = 0; i < rows; i++) {
		float *r = y + i * ldy;
		for (j = 0; j + 4 <= cols; j += 4) {
			zm_v4f v = zm_load4(r + j) + zm_load4(b + j);
			zm_store4(r + j, relu ? zm_relu4(v) : v);
		}
		for (; j < cols; j++)
			r[j] = relu ? relu1(r[j] + b[j]) : r[j] + b[j];
		if (!relu && e->act != ZM_ACT_IDENTITY)
			zm_activation_apply(e->act, r, r, cols);
	}
}

/* zm_malloc of a rows x cols float array, overflow-checked. */
static float *alloc_floats(size_t rows, size_t cols)
{
	size_t n;

	if (!zm_size_mul(rows, cols, &n) || !zm_size_mul(n, sizeof(float), &n))
		return NULL;
	return zm_malloc(n);
}

enum zm_status zm_workspace_new(const struct zm_arch *arch, size_t max_batch,
                                bool training, struct zm_workspace **out,
                                struct zm_error *err)
{
	struct zm_workspace *ws = zm_calloc(1, sizeof(*ws));
	size_t i, L = arch->n_layers, scratch = 0;

	*out = NULL;
	ZM_ASSERT(max_batch > 0);
	if (!ws)
		return nomem(err);
	ws->arch = arch;
	ws->max_batch = max_batch;
	ws->training = training;
	zm_rng_seed(&ws->rng, 0);
	ws->out = zm_calloc(L, sizeof(*ws->out));
	ws->pre = zm_calloc(L, sizeof(*ws->pre));
	ws->buf = zm_calloc(L, sizeof(*ws->buf));
	if (!ws->out || !ws->pre || !ws->buf)
		goto fail;
	if (training) {
		ws->dw = zm_calloc(L, sizeof(*ws->dw));
		ws->db = zm_calloc(L, sizeof(*ws->db));
		ws->grad_a = alloc_floats(max_batch, arch->max_features);
		ws->grad_b = alloc_floats(max_batch, arch->max_features);
		ws->dlogits = alloc_floats(max_batch, arch->output_features);
		if (!ws->dw || !ws->db || !ws->grad_a || !ws->grad_b ||
		    !ws->dlogits)
			goto fail;
	}
	for (i = 0; i < L; i++) {
		const struct zm_layer_spec *s = &arch->layers[i];
		size_t sc = zm_layer_scratch_floats(s, max_batch, training);
		if (sc > scratch)
			scratch = sc;
		if (s->type == ZM_LAYER_MAXPOOL2D || s->type == ZM_LAYER_CLIP ||
		    s->type == ZM_LAYER_DROPOUT) {
			ws->buf[i] = alloc_floats(max_batch, s->out_features);
			if (!ws->buf[i])
				goto fail;
		}
		/* Training dropout keeps its mask (0 or 1 / (1 - rate)),
		 * batchnorm the batch's mean and variance. */
		if (training && s->type == ZM_LAYER_DROPOUT &&
		    !(ws->pre[i] = alloc_floats(max_batch, s->out_features)))
			goto fail;
		if (training && s->type == ZM_LAYER_BATCHNORM &&
		    !(ws->pre[i] = alloc_floats(2, s->out_features)))
			goto fail;
		if (!s->has_params)
			continue;
		ws->buf[i] = alloc_floats(max_batch, s->out_features);
		if (!ws->buf[i])
			goto fail;
		if (zm_activation_needs_pre(s->act)) {
			ws->pre[i] = alloc_floats(max_batch, s->out_features);
			if (!ws->pre[i])
				goto fail;
		}
		if (training) {
			ws->dw[i] = alloc_floats(1, s->n_weight);
			ws->db[i] = alloc_floats(1, s->n_bias);
			if (!ws->dw[i] || !ws->db[i])
				goto fail;
		}
	}
	if (scratch && !(ws->scratch = alloc_floats(1, scratch)))
		goto fail;
	*out = ws;
	return ZM_OK;
fail:
	zm_workspace_free(ws);
	return zm_error_set(err, ZM_ERR_NOMEM,
	                    "out of memory for a batch of %zu rows", max_batch);
}

const float *zm_model_forward(const struct zm_model *model,
                              struct zm_workspace *ws, const float *x,
                              size_t n)
{
	const float *in = x;
	size_t l;

	ZM_ASSERT(n <= ws->max_batch);
	ZM_ASSERT(ws->arch->n_layers == model->arch->n_layers);
	for (l = 0; l < model->arch->n_layers; l++) {
		const struct zm_layer *layer = &model->layers[l];
		const struct zm_layer_spec *s = layer->spec;
		size_t count = n * s->out_features;
		float *dst = ws->buf[l];
		if (s->type == ZM_LAYER_FLATTEN || s->type == ZM_LAYER_ONE_HOT) {
			/* flatten: activations are stored flat already;
			 * one_hot: its units came with the input. */
			ws->out[l] = in;
			continue;
		}
		if (s->type == ZM_LAYER_CONV2D && !ws->pre[l]) {
			/* The activation is applied while the GEMM's output
			 * is scattered to NCHW: one pass over it, not two. */
			struct zm_conv_geom g;
			zm_conv_geom_of(s, &g);
			zm_conv_forward_act(&g, layer->weight.data,
			                    layer->bias.data, in, n, s->act, dst,
			                    ws->scratch);
			ws->out[l] = dst;
			in = dst;
			continue;
		}
		if (s->type == ZM_LAYER_DROPOUT && ws->training &&
		    s->rate > 0) {
			float keep = (float)(1.0 / (1.0 - s->rate)), *mask = ws->pre[l];
			size_t i;
			for (i = 0; i < count; i++) {
				mask[i] = zm_rng_uniform(&ws->rng) < s->rate ?
				          0.0f : keep;
				dst[i] = in[i] * mask[i];
			}
			ws->out[l] = dst;
			in = dst;
			continue;
		}
		if (s->type == ZM_LAYER_BATCHNORM && ws->training) {
			batchnorm_train_forward(s, in, n, dst, ws->pre[l]);
			ws->out[l] = dst;
			in = dst;
			continue;
		}
		if (s->type != ZM_LAYER_DENSE) {
			/* conv2d, maxpool2d, element-wise: see conv.h. */
			float *p = ws->pre[l] ? ws->pre[l] : dst;
			zm_layer_forward(layer, in, n, p, ws->scratch);
			zm_activation_apply(s->act, p, dst, n * s->out_features);
			ws->out[l] = dst;
			in = dst;
			continue;
		}
		if (ws->packed_from == model && ws->packed[l].data &&
		    !ws->pre[l]) {
			struct zm_dense_epilogue e = { layer->bias.data, s->act };
			zm_gemm_packed_run(&ws->packed[l], n, in, s->in_features,
			                   dst, s->out_features,
			                   zm_dense_epilogue_block, &e);
		} else if (ws->pre[l]) {
			zm_layer_linear(layer, in, n, ws->pre[l]);
			zm_activation_apply(s->act, ws->pre[l], dst, count);
		} else {
			zm_layer_linear(layer, in, n, dst);
			zm_activation_apply(s->act, dst, dst, count);
		}
		ws->out[l] = dst;
		in = dst;
	}
	return in;
}

void zm_model_backward(const struct zm_model *model, struct zm_workspace *ws,
                       const float *x, size_t n, float *dout)
{
	float *g = dout;
	size_t l, first = 0;

	ZM_ASSERT(ws->training && n <= ws->max_batch);
	/* No input gradient is needed below the first parameter layer. */
	while (!model->arch->layers[first].has_params)
		first++;
	for (l = model->arch->n_layers; l-- > first;) {
		const struct zm_layer *layer = &model->layers[l];
		const struct zm_layer_spec *s = layer->spec;
		const float *in = l ? ws->out[l - 1] : x;
		float *dx = NULL;
		if (s->type == ZM_LAYER_FLATTEN || s->type == ZM_LAYER_ONE_HOT)
			continue;   /* flatten: the gradient keeps its layout */
		if (s->type == ZM_LAYER_BATCHNORM) {
			memset(ws->dw[l], 0, s->n_weight * sizeof(float));
			memset(ws->db[l], 0, s->n_bias * sizeof(float));
			if (l > first) {
				dx = g == ws->grad_a ? ws->grad_b : ws->grad_a;
				batchnorm_train_backward(s, ws->out[l],
				                         ws->pre[l], n, g, dx);
			}
			g = dx;
			continue;
		}
		if (s->type == ZM_LAYER_DROPOUT) {
			size_t i, count = n * s->out_features;
			if (l > first) {
				dx = g == ws->grad_a ? ws->grad_b : ws->grad_a;
				for (i = 0; i < count; i++)
					dx[i] = s->rate > 0 ? g[i] * ws->pre[l][i]
					                    : g[i];
			}
			g = dx;
			continue;
		}
		if (s->type != ZM_LAYER_DENSE) {
			zm_activation_backward(s->act, ws->pre[l], ws->out[l],
			                       g, n * s->out_features);
			if (l > first)
				dx = g == ws->grad_a ? ws->grad_b : ws->grad_a;
			zm_layer_backward_any(layer, in, ws->out[l], n, g,
			                      ws->dw[l], ws->db[l], 0.0f, dx,
			                      ws->scratch);
			g = dx;
			continue;
		}
		zm_activation_backward(s->act, ws->pre[l], ws->out[l], g,
		                       n * s->out_features);
		if (l > first)
			dx = g == ws->grad_a ? ws->grad_b : ws->grad_a;
		zm_layer_backward(layer, in, n, g, ws->dw[l], ws->db[l], 0.0f,
		                  dx);
		g = dx;
	}
}
