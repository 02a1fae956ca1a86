/*
 * Optimizers and the training step.  The update loops run over every
 * parameter on every step, so they are written to vectorize at -O2: plain
 * blocked loops for SGD, and SSE for Adam, whose square root GCC will not
 * vectorize while sqrtf may set errno.
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#include "gemm.h"
#include "mem.h"
#include "train.h"

enum { LANES = 8 };

void zm_optim_config_default(struct zm_optim_config *cfg,
                             enum zm_optim_kind kind)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->kind = kind;
	cfg->lr = kind == ZM_OPTIM_ADAM ? 1e-3 : 1e-2;
	cfg->momentum = 0.9;
	cfg->beta1 = 0.9;
	cfg->beta2 = 0.999;
	cfg->eps = 1e-8;
	cfg->weight_decay = 0.0;
	cfg->schedule = ZM_LR_CONSTANT;
	cfg->gamma = 0.1;
}

static const char *const kind_names[] = { "sgd", "adam" };
static const char *const schedule_names[] = { "constant", "step", "cosine" };

bool zm_optim_kind_parse(const char *s, enum zm_optim_kind *out)
{
	int i;

	for (i = 0; i < 2; i++)
		if (!strcmp(s, kind_names[i])) {
			*out = (enum zm_optim_kind)i;
			return true;
		}
	return false;
}

bool zm_lr_schedule_parse(const char *s, enum zm_lr_schedule *out)
{
	int i;

	for (i = 0; i < 3; i++)
		if (!strcmp(s, schedule_names[i])) {
			*out = (enum zm_lr_schedule)i;
			return true;
		}
	return false;
}

const char *zm_optim_kind_name(enum zm_optim_kind kind)
{
	ZM_ASSERT((unsigned)kind < 2);
	return kind_names[kind];
}

const char *zm_lr_schedule_name(enum zm_lr_schedule s)
{
	ZM_ASSERT((unsigned)s < 3);
	return schedule_names[s];
}

void zm_optim_free(struct zm_optim *opt)
{
	size_t i;

	if (!opt)
		return;
	for (i = 0; i < opt->n_layers; i++) {
		if (opt->m_w) {
			free(opt->m_w[i]);
			free(opt->m_b[i]);
		}
		if (opt->v_w) {
			free(opt->v_w[i]);
			free(opt->v_b[i]);
		}
	}
	free(opt->m_w);
	free(opt->m_b);
	free(opt->v_w);
	free(opt->v_b);
	free(opt);
}

static enum zm_status check_config(const struct zm_optim_config *c,
                                   struct zm_error *err)
{
	if (!(c->lr > 0 && isfinite(c->lr)))
		return zm_error_set(err, ZM_ERR_USAGE,
		                    "learning rate must be positive, got %g",
		                    c->lr);
	if (!(c->weight_decay >= 0 && isfinite(c->weight_decay)))
		return zm_error_set(err, ZM_ERR_USAGE,
		                    "weight decay must be >= 0, got %g",
		                    c->weight_decay);
	if (c->kind == ZM_OPTIM_SGD && !(c->momentum >= 0 && c->momentum < 1))
		return zm_error_set(err, ZM_ERR_USAGE,
		                    "momentum must be in [0, 1), got %g",
		                    c->momentum);
	if (c->kind == ZM_OPTIM_ADAM &&
	    !(c->beta1 >= 0 && c->beta1 < 1 && c->beta2 >= 0 &&
	      c->beta2 < 1 && c->eps > 0))
		return zm_error_set(err, ZM_ERR_USAGE,
		                    "Adam needs betas in [0, 1) and eps > 0");
	if (c->schedule == ZM_LR_STEP && !(c->gamma > 0 && c->gamma <= 1))
		return zm_error_set(err, ZM_ERR_USAGE,
		                    "step decay gamma must be in (0, 1], got %g",
		                    c->gamma);
	if (c->schedule == ZM_LR_COSINE &&
	    !(c->min_lr >= 0 && c->min_lr <= c->lr))
		return zm_error_set(err, ZM_ERR_USAGE,
		                    "cosine min_lr must be in [0, lr]");
	return ZM_OK;
}

enum zm_status zm_optim_new(const struct zm_arch *arch,
                            const struct zm_optim_config *cfg,
                            struct zm_optim **out, struct zm_error *err)
{
	struct zm_optim *o;
	enum zm_status st;
	size_t i, L = arch->n_layers;
	bool adam = cfg->kind == ZM_OPTIM_ADAM;

	*out = NULL;
	st = check_config(cfg, err);
	if (st != ZM_OK)
		return st;
	o = zm_calloc(1, sizeof(*o));
	if (!o)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	o->cfg = *cfg;
	o->n_layers = L;
	o->m_w = zm_calloc(L, sizeof(*o->m_w));
	o->m_b = zm_calloc(L, sizeof(*o->m_b));
	if (!o->m_w || !o->m_b)
		goto fail;
	if (adam) {
		o->v_w = zm_calloc(L, sizeof(*o->v_w));
		o->v_b = zm_calloc(L, sizeof(*o->v_b));
		if (!o->v_w || !o->v_b)
			goto fail;
	}
	for (i = 0; i < L; i++) {
		const struct zm_layer_spec *s = &arch->layers[i];
		size_t nw = s->n_weight;
		if (!s->trainable)
			continue;
		/* The parser bounds nw, so these products cannot overflow. */
		o->m_w[i] = zm_calloc(nw, sizeof(float));
		o->m_b[i] = zm_calloc(s->n_bias, sizeof(float));
		if (!o->m_w[i] || !o->m_b[i])
			goto fail;
		if (adam) {
			o->v_w[i] = zm_calloc(nw, sizeof(float));
			o->v_b[i] = zm_calloc(s->n_bias, sizeof(float));
			if (!o->v_w[i] || !o->v_b[i])
				goto fail;
		}
	}
	*out = o;
	return ZM_OK;
fail:
	zm_optim_free(o);
	return zm_error_set(err, ZM_ERR_NOMEM,
	                    "out of memory for the optimizer state");
}

double zm_optim_lr(const struct zm_optim *opt)
{
	const struct zm_optim_config *c = &opt->cfg;
	double t = (double)opt->steps;

	switch (c->schedule) {
	case ZM_LR_CONSTANT:
		break;
	case ZM_LR_STEP:
		if (c->step_size > 0)
			return c->lr * pow(c->gamma,
			                   floor(t / (double)c->step_size));
		break;
	case ZM_LR_COSINE:
		if (c->total_steps > 0) {
			const double pi = 3.14159265358979323846;
			double T = (double)c->total_steps;
			double tt = t < T ? t : T;
			return c->min_lr + (c->lr - c->min_lr) *
			       (1.0 + cos(pi * tt / T)) / 2.0;
		}
		break;
	}
	return c->lr;
}

/*
 * SGD with momentum mu and coupled weight decay wd, as torch.optim.SGD:
 * g' = g + wd w;  buf = mu buf + g';  w -= step buf.
 */
static void sgd_update(float *restrict w, const float *restrict g,
                       float *restrict buf, size_t n, float step, float mu,
                       float wd)
{
	size_t i = 0, j;

	for (; i + LANES <= n; i += LANES)
		for (j = 0; j < LANES; j++) {
			float b = mu * buf[i + j] + g[i + j] + wd * w[i + j];
			buf[i + j] = b;
			w[i + j] -= step * b;
		}
	for (; i < n; i++) {
		float b = mu * buf[i] + g[i] + wd * w[i];
		buf[i] = b;
		w[i] -= step * b;
	}
}

/*
 * Adam with decoupled weight decay (AdamW): m = b1 m + (1-b1) g,
 * v = b2 v + (1-b2) g^2, w -= step (wd w + c1 m / (c2 sqrt(v) + eps)),
 * where c1 = 1 / (1 - b1^t) and c2 = 1 / sqrt(1 - b2^t) correct the bias of
 * the zero-initialised moments.
 */
struct adam_k {
	float b1, b2, c1, c2, eps, step, wd;
};

static inline void adam1(float *w, float g, float *m, float *v,
                         const struct adam_k *k)
{
	float mi = k->b1 * *m + (1.0f - k->b1) * g;
	float vi = k->b2 * *v + (1.0f - k->b2) * g * g;

	*m = mi;
	*v = vi;
	*w -= k->step * (k->wd * *w + k->c1 * mi /
	                 (k->c2 * sqrtf(vi) + k->eps));
}

static void adam_update(float *restrict w, const float *restrict g,
                        float *restrict m, float *restrict v, size_t n,
                        const struct adam_k *k)
{
	size_t i = 0;

#if defined(__SSE__)
	const __m128 b1 = _mm_set1_ps(k->b1), b2 = _mm_set1_ps(k->b2);
	const __m128 a1 = _mm_set1_ps(1.0f - k->b1);
	const __m128 a2 = _mm_set1_ps(1.0f - k->b2);
	const __m128 c1 = _mm_set1_ps(k->c1), c2 = _mm_set1_ps(k->c2);
	const __m128 eps = _mm_set1_ps(k->eps), step = _mm_set1_ps(k->step);
	const __m128 wd = _mm_set1_ps(k->wd);

	for (; i + 4 <= n; i += 4) {
		__m128 gi = _mm_loadu_ps(g + i);
		__m128 wi = _mm_loadu_ps(w + i);
		__m128 mi = _mm_add_ps(_mm_mul_ps(b1, _mm_loadu_ps(m + i)),
		                       _mm_mul_ps(a1, gi));
		__m128 vi = _mm_add_ps(_mm_mul_ps(b2, _mm_loadu_ps(v + i)),
		                       _mm_mul_ps(a2, _mm_mul_ps(gi, gi)));
		__m128 den = _mm_add_ps(_mm_mul_ps(c2, _mm_sqrt_ps(vi)), eps);
		__m128 upd = _mm_add_ps(_mm_mul_ps(wd, wi),
		                        _mm_div_ps(_mm_mul_ps(c1, mi), den));
		_mm_storeu_ps(m + i, mi);
		_mm_storeu_ps(v + i, vi);
		_mm_storeu_ps(w + i, _mm_sub_ps(wi, _mm_mul_ps(step, upd)));
	}
#endif
	for (; i < n; i++)
		adam1(w + i, g[i], m + i, v + i, k);
}

void zm_optim_apply(struct zm_optim *opt, struct zm_model *model,
                    const struct zm_workspace *ws, float step_scale)
{
	const struct zm_optim_config *c = &opt->cfg;
	float step = (float)(zm_optim_lr(opt) * step_scale);
	struct adam_k k;
	size_t l;
#if defined(__SSE__)
	unsigned csr;
#endif

	ZM_ASSERT(ws->training && opt->n_layers == model->arch->n_layers);
#if defined(__SSE__)
	/* Momentum buffers of parameters whose gradient stays zero (dead
	 * relu units) decay geometrically into subnormal numbers, which the
	 * CPU handles tens of times slower; flush them to zero here, and only
	 * here, as they no longer matter at that size. */
	csr = _mm_getcsr();
	_mm_setcsr(csr | 0x8040u);   /* FTZ and DAZ */
#endif
	opt->steps++;
	if (c->kind == ZM_OPTIM_ADAM) {
		double t = (double)opt->steps;
		k.b1 = (float)c->beta1;
		k.b2 = (float)c->beta2;
		k.c1 = (float)(1.0 / (1.0 - pow(c->beta1, t)));
		k.c2 = (float)(1.0 / sqrt(1.0 - pow(c->beta2, t)));
		k.eps = (float)c->eps;
		k.step = step;
		k.wd = (float)c->weight_decay;
	}
	for (l = 0; l < model->arch->n_layers; l++) {
		struct zm_layer *layer = &model->layers[l];
		size_t nw = zm_tensor_numel(&layer->weight);
		size_t nb = zm_tensor_numel(&layer->bias);
		if (!layer->spec->trainable)
			continue;
		if (c->kind == ZM_OPTIM_ADAM) {
			adam_update(layer->weight.data, ws->dw[l], opt->m_w[l],
			            opt->v_w[l], nw, &k);
			adam_update(layer->bias.data, ws->db[l], opt->m_b[l],
			            opt->v_b[l], nb, &k);
		} else {
			float mu = (float)c->momentum;
			float wd = (float)c->weight_decay;
			sgd_update(layer->weight.data, ws->dw[l], opt->m_w[l],
			           nw, step, mu, wd);
			sgd_update(layer->bias.data, ws->db[l], opt->m_b[l],
			           nb, step, mu, wd);
		}
	}
#if defined(__SSE__)
	_mm_setcsr(csr);
#endif
}

/*
 * The second half of SGD once the momentum buffer already holds
 * mu buf + g: adds the weight decay term and takes the step.  Without
 * weight decay the buffer is only read.
 */
static void sgd_finish(float *restrict w, float *restrict buf, size_t n,
                       float step, float wd)
{
	size_t i = 0, j;

	if (wd == 0.0f) {
		for (; i + LANES <= n; i += LANES)
			for (j = 0; j < LANES; j++)
				w[i + j] -= step * buf[i + j];
		for (; i < n; i++)
			w[i] -= step * buf[i];
		return;
	}
	for (; i + LANES <= n; i += LANES)
		for (j = 0; j < LANES; j++) {
			float b = buf[i + j] + wd * w[i + j];
			buf[i + j] = b;
			w[i + j] -= step * b;
		}
	for (; i < n; i++) {
		float b = buf[i] + wd * w[i];
		buf[i] = b;
		w[i] -= step * b;
	}
}

/*
 * Backward pass and SGD update in one sweep from the top layer down, for
 * zm_train_step.  Two things make it cheaper than zm_model_backward then
 * zm_optim_apply (the same update, to rounding):
 *  - the weight gradient GEMM accumulates straight into the momentum
 *    buffer with beta = mu (buf = mu buf + dpre^T in), so the gradient is
 *    never stored and read back;
 *  - each layer is updated right after its gradients are made, while its
 *    buffers are still in cache (its input gradient is computed first,
 *    from the old weights, as the layers below need).
 * ws->dw is left untouched; ws->db holds the bias gradients.
 */
static void sgd_backward_update(struct zm_optim *opt, struct zm_model *model,
                                struct zm_workspace *ws, const float *x,
                                size_t n, float *g, float step_scale)
{
	const struct zm_optim_config *c = &opt->cfg;
	const struct zm_arch *arch = model->arch;
	float step = (float)(zm_optim_lr(opt) * step_scale);
	float mu = (float)c->momentum, wd = (float)c->weight_decay;
	size_t l, first = 0;
#if defined(__SSE__)
	unsigned csr = _mm_getcsr();

	/* As in zm_optim_apply: momentum of dead units decays into
	 * subnormals, which the GEMM reading the buffer would then crawl
	 * through; flush them (for the GEMM work of this thread). */
	_mm_setcsr(csr | 0x8040u);
#endif
	ZM_ASSERT(ws->training && n <= ws->max_batch);
	ZM_ASSERT(opt->n_layers == arch->n_layers);
	opt->steps++;
	while (!arch->layers[first].has_params)
		first++;
	for (l = arch->n_layers; l-- > first;) {
		struct zm_layer *layer = &model->layers[l];
		const struct zm_layer_spec *s = layer->spec;
		const float *in = l ? ws->out[l - 1] : x;
		size_t nin = s->in_features, nout = s->out_features, i;
		float *dx = NULL, *mb = opt->m_b[l], *db = ws->db[l];
		if (!s->has_params)
			continue;   /* flatten: the gradient keeps its layout */
		zm_activation_backward(s->act, ws->pre[l], ws->out[l], g,
		                       n * nout);
		zm_gemm(true, false, nout, nin, n, 1.0f, g, nout, in, nin, mu,
		        opt->m_w[l], nin);
		if (l > first)
			dx = g == ws->grad_a ? ws->grad_b : ws->grad_a;
		zm_layer_backward(layer, in, n, g, NULL, db, 0.0f, dx);
		for (i = 0; i < nout; i++)
			mb[i] = mu * mb[i] + db[i];
		sgd_finish(layer->weight.data, opt->m_w[l], nout * nin, step,
		           wd);
		sgd_finish(layer->bias.data, mb, nout, step, wd);
		g = dx;
	}
#if defined(__SSE__)
	_mm_setcsr(csr);
#endif
}

static bool dense_only(const struct zm_arch *arch)
{
	size_t l;

	for (l = 0; l < arch->n_layers; l++)
		if (arch->layers[l].type != ZM_LAYER_DENSE &&
		    arch->layers[l].type != ZM_LAYER_FLATTEN)
			return false;
	return true;
}

/* Loss (and, with grad, its gradient) of the outputs against y. */
static enum zm_status batch_loss(const struct zm_arch *arch, const float *out,
                                 const void *y, size_t n,
                                 struct zm_batch_stats *stats, float *grad,
                                 struct zm_error *err)
{
	double loss = 0;
	size_t correct = 0;
	enum zm_status st = ZM_OK;

	if (arch->loss == ZM_LOSS_CROSS_ENTROPY)
		st = zm_loss_cross_entropy(out, y, n, arch->output_features,
		                           &loss, &correct, grad, err);
	else
		zm_loss_mse(out, y, n, arch->output_features, &loss, grad);
	if (st != ZM_OK)
		return st;
	if (!isfinite(loss))
		return zm_error_set(err, ZM_ERR_DATA,
		                    "the loss is not finite (diverged: lower "
		                    "the learning rate?)");
	if (stats) {
		stats->loss_sum += loss;
		stats->correct += correct;
		stats->rows += n;
	}
	return ZM_OK;
}

enum zm_status zm_train_step(struct zm_model *model, struct zm_optim *opt,
                             struct zm_workspace *ws, const float *x,
                             const void *y, size_t n, float step_scale,
                             struct zm_batch_stats *stats,
                             struct zm_error *err)
{
	const float *out;
	enum zm_status st;

	ZM_ASSERT(ws->training);
	if (n == 0)
		return ZM_OK;
	out = zm_model_forward(model, ws, x, n);
	st = batch_loss(model->arch, out, y, n, stats, ws->dlogits, err);
	if (st != ZM_OK)
		return st;
	zm_model_update_running(model, ws, n);
	/* The fused SGD pass knows dense layers only; conv models take the
	 * separate passes (the same update). */
	if (opt->cfg.kind == ZM_OPTIM_SGD && dense_only(model->arch)) {
		sgd_backward_update(opt, model, ws, x, n, ws->dlogits,
		                    step_scale);
		return ZM_OK;
	}
	zm_model_backward(model, ws, x, n, ws->dlogits);
	zm_optim_apply(opt, model, ws, step_scale);
	return ZM_OK;
}

enum zm_status zm_model_evaluate(const struct zm_model *model,
                                 struct zm_workspace *ws, const float *x,
                                 const void *y, size_t n,
                                 struct zm_batch_stats *stats,
                                 struct zm_error *err)
{
	const float *out;

	if (n == 0)
		return ZM_OK;
	out = zm_model_forward(model, ws, x, n);
	return batch_loss(model->arch, out, y, n, stats, NULL, err);
}

void zm_gather_rows(const float *src, size_t cols, const size_t *idx,
                    size_t n, float *dst)
{
	size_t i;

	for (i = 0; i < n; i++)
		memcpy(dst + i * cols, src + idx[i] * cols,
		       cols * sizeof(*src));
}

void zm_gather_labels(const int64_t *src, const size_t *idx, size_t n,
                      int64_t *dst)
{
	size_t i;

	for (i = 0; i < n; i++)
		dst[i] = src[idx[i]];
}
