/*
 * Test-time adaptation of the predictor's merge weights (predict.h): the
 * entropy of the merged outputs and its gradient wrt per-unit offsets,
 * and the descent that zm_predict_adapt runs on them.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "json.h"
#include "mem.h"
#include "predict.h"
#include "predpriv.h"

/*
 * The analytic gradient of the mean entropy wrt the per-unit offsets, for
 * the merged outputs of dense layers: the forward pass keeps every
 * layer's products and weights (the tape), the backward pass carries
 * dH/dh down the merged network.  With h_l = act(sum_i w_li z_li) (pre)
 * or sum_i w_li act(z_li) (post), and g_li = dH/dw_li = <dH/d(mix),
 * z_li (or act(z_li))>, the weights w_l = softmax(logits + a_u) give
 * dH/da_uj = sum over the unit's layers and the rows of w_lj (g_lj -
 * sum_i w_li g_li).  The similarity of later units to the merged h is
 * held fixed (it is measured, not differentiated), which only makes the
 * step a little less steep; the descent checks every step on the true
 * objective.
 */
struct adapt_tape {
	size_t n;
	float **z, **za, **pre, **post;   /* per layer, NULL without params */
	double **wl;                      /* per layer: [rows, K] */
	float *d, *dh, *dn;               /* backward scratch */
	float *arena;
	double *darena;
	float **ptrs;
	double **wlp;
};

static void tape_free(struct adapt_tape *t)
{
	free(t->arena);
	free(t->darena);
	free(t->ptrs);
	free(t->wlp);
	memset(t, 0, sizeof(*t));
}

/* Whether the analytic gradient applies: merged outputs of dense
 * layers, plain softmax weights (no top-k cut), classification. */
static bool tape_applies(const struct zm_predictor *p)
{
	const struct zm_arch *a = p->models[0]->arch;
	size_t l;

	if (p->o.merge != ZM_MERGE_OUTPUTS || p->loss != ZM_LOSS_CROSS_ENTROPY ||
	    p->wr->k_active != p->n_models || p->wr->probe_model != SIZE_MAX)
		return false;
	for (l = 0; l < a->n_layers; l++)
		if (a->layers[l].type != ZM_LAYER_DENSE &&
		    a->layers[l].type != ZM_LAYER_FLATTEN)
			return false;
	return true;
}

static bool tape_new(struct adapt_tape *t, const struct zm_predictor *p,
                     size_t n)
{
	const struct zm_arch *a = p->models[0]->arch;
	size_t K = p->n_models, L = a->n_layers, l, nf = 0, nd = 0, maxw = 1;
	size_t rows = p->wr->o.per_row ? n : 1, of;
	float *q;
	double *dq;

	memset(t, 0, sizeof(*t));
	t->n = n;
	for (l = 0; l < L; l++) {
		const struct zm_layer_spec *s = &a->layers[l];
		if (!s->has_params)
			continue;
		nf += n * s->out_features * (2 * K + 2);
		nd += rows * K;
		if (s->in_features > maxw)
			maxw = s->in_features;
		if (s->out_features * K > maxw)
			maxw = s->out_features * K;
	}
	nf += 3 * n * maxw;
	t->ptrs = zm_calloc(4 * L, sizeof(float *));
	t->wlp = zm_calloc(L, sizeof(double *));
	t->arena = zm_malloc(nf * sizeof(float));
	t->darena = zm_malloc((nd ? nd : 1) * sizeof(double));
	if (!t->ptrs || !t->wlp || !t->arena || !t->darena) {
		tape_free(t);
		return false;
	}
	t->z = t->ptrs;
	t->za = t->ptrs + L;
	t->pre = t->ptrs + 2 * L;
	t->post = t->ptrs + 3 * L;
	t->wl = t->wlp;
	q = t->arena;
	dq = t->darena;
	for (l = 0; l < L; l++) {
		const struct zm_layer_spec *s = &a->layers[l];
		if (!s->has_params)
			continue;
		of = n * s->out_features;
		t->z[l] = q;
		t->za[l] = q + of * K;
		t->pre[l] = q + 2 * of * K;
		t->post[l] = q + 2 * of * K + of;
		q += of * (2 * K + 2);
		t->wl[l] = dq;
		dq += rows * K;
	}
	t->d = q;
	t->dh = q + n * maxw;
	t->dn = q + 2 * n * maxw;
	return true;
}

/* The merged forward pass with the tape kept, then the gradient of the
 * mean entropy into grad[n_units * K]; returns the mean entropy. */
static enum zm_status tape_entropy_grad(struct zm_predictor *p,
                                        struct adapt_tape *t, const float *x,
                                        double *grad, double *value,
                                        struct zm_error *err)
{
	const struct zm_arch *a = p->models[0]->arch;
	struct zm_weighter *w = p->wr;
	size_t K = p->n_models, n = t->n, c = p->out_features, L = a->n_layers;
	size_t l, r, i, j, last = SIZE_MAX, first = SIZE_MAX;
	bool per_row = w->o.per_row, post = p->o.point == ZM_MERGE_POST;
	const float *h = x;
	float *delta;
	double H = 0;
	enum zm_status st;

	zm_weighter_begin(w, x, n);
	for (l = 0; l < L; l++) {
		const struct zm_layer_spec *s = &a->layers[l];
		size_t in = s->in_features, out = s->out_features, ko = K * out;
		float *z = t->z[l], *za = t->za[l], *m = t->pre[l];

		if (!s->has_params)
			continue;
		if (first == SIZE_MAX)
			first = l;
		last = l;
		st = zm_weighter_layer(w, l, h, n, t->wl[l], err);
		if (st != ZM_OK)
			return st;
		for (r = 0; r < n; r++)
			memcpy(z + r * ko, p->bcat[l], ko * sizeof(float));
		zm_gemm(false, true, n, ko, in, 1.0f, h, in, p->wcat[l], in, 1.0f,
		        z, ko);
		if (post)
			zm_activation_apply(s->act, z, za, n * ko);
		for (r = 0; r < n; r++) {
			const double *wr = t->wl[l] + (per_row ? r * K : 0);
			const float *src = (post ? za : z) + r * ko;
			for (j = 0; j < out; j++) {
				double v = 0;
				for (i = 0; i < K; i++)
					v += wr[i] * src[i * out + j];
				m[r * out + j] = (float)v;
			}
		}
		if (post)
			memcpy(t->post[l], m, n * out * sizeof(float));
		else
			zm_activation_apply(s->act, m, t->post[l], n * out);
		h = t->post[l];
	}
	ZM_ASSERT(last != SIZE_MAX);
	/* dH/dlogits of the mean entropy: -p_c (log p_c + H_r) / n. */
	delta = t->dh;
	for (r = 0; r < n; r++) {
		const float *zr = h + r * c;
		double mx = zr[0], se = 0, Hr = 0, lse;
		for (j = 1; j < c; j++)
			if (zr[j] > mx)
				mx = zr[j];
		for (j = 0; j < c; j++)
			se += exp((double)zr[j] - mx);
		lse = mx + log(se);
		for (j = 0; j < c; j++) {
			double lp = (double)zr[j] - lse;
			Hr -= exp(lp) * lp;
		}
		for (j = 0; j < c; j++) {
			double lp = (double)zr[j] - lse;
			delta[r * c + j] = (float)(-exp(lp) * (lp + Hr) / (double)n);
		}
		H += Hr;
	}
	*value = H / (double)n;
	memset(grad, 0, w->units.n_units * K * sizeof(double));
	for (l = last + 1; l-- > first; ) {
		const struct zm_layer_spec *s = &a->layers[l];
		size_t in = s->in_features, out = s->out_features, ko = K * out;
		size_t u = w->units.layer_unit[l];
		const float *z = t->z[l], *src = post ? t->za[l] : t->z[l];
		float *D = t->d;
		double gsum[ZM_WEIGHTER_MAX_MODELS];

		if (!s->has_params)
			continue;
		if (!post)
			zm_activation_backward(s->act, t->pre[l], t->post[l], delta,
			                       n * out);
		memset(gsum, 0, K * sizeof(double));
		for (r = 0; r < n; r++) {
			const double *wr = t->wl[l] + (per_row ? r * K : 0);
			const float *dr = delta + r * out;
			double gr[ZM_WEIGHTER_MAX_MODELS], mean = 0;
			for (i = 0; i < K; i++) {
				const float *zi = src + r * ko + i * out;
				double v = 0;
				for (j = 0; j < out; j++)
					v += (double)dr[j] * zi[j];
				gr[i] = v;
				mean += wr[i] * v;
				for (j = 0; j < out; j++)
					D[r * ko + i * out + j] = (float)wr[i] * dr[j];
			}
			if (per_row)
				for (i = 0; i < K; i++)
					grad[u * K + i] += wr[i] * (gr[i] - mean);
			else
				for (i = 0; i < K; i++)
					gsum[i] += gr[i];
		}
		if (!per_row) {
			const double *wr = t->wl[l];
			double mean = 0;
			for (i = 0; i < K; i++)
				mean += wr[i] * gsum[i];
			for (i = 0; i < K; i++)
				grad[u * K + i] += wr[i] * (gsum[i] - mean);
		}
		if (l == first)
			break;
		if (post)
			zm_activation_backward(s->act, z, t->za[l], D, n * ko);
		/* dH/dh_{l-1} = D [K*out, in]-stacked weights. */
		zm_gemm(false, false, n, in, ko, 1.0f, D, ko, p->wcat[l], in, 0.0f,
		        t->dn, in);
		{
			float *tmp = t->dn;
			t->dn = delta;
			delta = tmp;
		}
	}
	return ZM_OK;
}

enum zm_status zm_predict_entropy_grad(struct zm_predictor *p,
                                       const float *x, size_t n,
                                       double *grad, double *value,
                                       bool *analytic, struct zm_error *err)
{
	struct adapt_tape t;
	enum zm_status st;

	ZM_ASSERT(p->n_models > 1 && n > 0 && p->loss == ZM_LOSS_CROSS_ENTROPY);
	*analytic = tape_applies(p);
	if (!*analytic)
		return ZM_OK;
	if (!tape_new(&t, p, n))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	st = tape_entropy_grad(p, &t, x, grad, value, err);
	tape_free(&t);
	return st;
}

struct adapt_ctx {
	struct zm_predictor *p;
	const float *x;
	size_t n;
	struct adapt_tape *tape;          /* NULL: no analytic gradient */
	bool failed;
	struct zm_error *err;
};

static double adapt_objective(void *vctx, const double *a, double *grad)
{
	struct adapt_ctx *c = vctx;
	struct zm_weighter *w = c->p->wr;
	size_t m = w->units.n_units * w->k, j;
	double v;

	memcpy(w->alpha, a, m * sizeof(double));
	if (grad && c->tape) {
		if (tape_entropy_grad(c->p, c->tape, c->x, grad, &v, c->err) !=
		    ZM_OK) {
			c->failed = true;
			return INFINITY;
		}
		return v;
	}
	if (grad)
		for (j = 0; j < m; j++)
			grad[j] = NAN;
	if (zm_predict_pass(c->p, c->x, c->n, c->p->ascores, NULL, c->err) !=
	    ZM_OK) {
		c->failed = true;
		return INFINITY;
	}
	return zm_entropy_mean(c->p->ascores, c->n, c->p->out_features);
}

enum zm_status zm_predict_adapt(struct zm_predictor *p, const float *x,
                                size_t n, double *before, double *after,
                                struct zm_error *err)
{
	struct adapt_ctx c = { p, x, n, NULL, false, err };
	struct adapt_tape tape;
	struct zm_adapt_result res;
	struct zm_weighter *w;
	size_t m;
	double *a;

	if (p->n_models == 1 || n == 0 || p->loss != ZM_LOSS_CROSS_ENTROPY)
		return ZM_OK;
	w = p->wr;
	m = w->units.n_units * w->k;
	if (c.n > p->o.adapt_rows)
		c.n = p->o.adapt_rows;
	if (tape_applies(p)) {
		if (!tape_new(&tape, p, c.n))
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		c.tape = &tape;
	}
	a = zm_calloc(m, sizeof(double));
	if (!a) {
		if (c.tape)
			tape_free(&tape);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	/* Every batch starts from the weighting's own weights (a = 0): the
	 * regulariser anchors there, so the entropy never ends above the
	 * unadapted one and no drift accumulates over the stream. */
	zm_adapt_minimise(a, m, adapt_objective, &c, &p->o.adapt_o,
	                  p->adapt_scratch, &res);
	memcpy(w->alpha, a, m * sizeof(double));
	free(a);
	if (c.tape)
		tape_free(&tape);
	if (c.failed)
		return ZM_ERR_NOMEM;
	if (before)
		*before = res.f0;
	if (after)
		*after = res.f1;
	return ZM_OK;
}
