/*
 * Routing rows to models: hard where one model is sure, the models'
 * outputs mixed where none is (see route.h).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lineage.h"
#include "mem.h"
#include "predict.h"
#include "predpriv.h"
#include "route.h"

struct zm_route_state {
	struct zm_route_stats stats;
	size_t *group;      /* [max_batch] model of each row, SIZE_MAX mixed */
	size_t *rows;       /* [max_batch] row indices of one group */
	float *xg;          /* [max_batch, in] gathered rows */
	float *sg, *lg;     /* [max_batch, C] their scores, log-probabilities */
	double *mix;        /* [max_batch, C] mixed probabilities */
	double *prior;      /* [K, C] class prior of each model (see below) */
	bool layers;        /* mixed rows layer by layer */
	bool same_arch;     /* the models share an architecture */
	char why[256];      /* else: which differ, for --explain */
};

bool zm_route_mixes_layers(const struct zm_route_state *s)
{
	return s->layers;
}

/*
 * Decides how the uncertain rows mix: as asked, final outputs for models
 * of other architectures, and for auto final outputs for every zoo.  For
 * unrelated models because their hidden units do not correspond; for
 * related ones because mixing their layers was measured no more accurate
 * and clearly worse in log-loss on the rows routing is unsure of
 * (predict(1), "Mixing the rows routing is unsure of": the benchmark
 * zoos of tests/bench/adaptive.sh, finetuned 0.7606 / 1.078 final vs
 * 0.7636 / 1.467 layers, seeded 0.7440 / 1.172 vs 0.7435 / 2.348,
 * oneinit 0.7966 / 0.575 vs 0.7975 / 0.604 in accuracy / log-loss over
 * 10,000 rows).  The lineage only explains the choice, so it is looked at
 * by the explanation, not here.
 */
static enum zm_status choose_mix(const struct zm_predictor *p,
                                 const char *const *names,
                                 struct zm_route_state *s,
                                 struct zm_error *err)
{
	const struct zm_model *const *m = p->models;
	struct zm_error e2;
	size_t K = p->n_models, i;

	for (i = 1; i < K; i++) {
		zm_error_clear(&e2);
		if (zm_model_same_arch(m[0]->arch, m[i]->arch, &e2) == ZM_OK)
			continue;
		if (p->o.route_mix == ZM_ROUTE_MIX_LAYERS)
			return zm_error_set(err, ZM_ERR_DATA, "models '%s' and "
			                    "'%s' have different architectures: "
			                    "their layers cannot be mixed (%s)",
			                    names[0], names[i], e2.msg);
		snprintf(s->why, sizeof(s->why), "models '%s' and '%s' have "
		         "different architectures", names[0], names[i]);
		return ZM_OK;
	}
	s->same_arch = true;
	s->layers = p->o.route_mix == ZM_ROUTE_MIX_LAYERS;
	return ZM_OK;
}

/* Why the uncertain rows mix as they do, appended to b (--explain). */
static void explain_mix(const struct zm_predictor *p,
                        const char *const *names, struct zm_buf *b)
{
	const struct zm_route_state *s = p->route;
	struct zm_lineage_info info;
	struct zm_error e2;
	size_t a = 0, c = 0;
	bool all = true;

	if (!s->same_arch) {
		zm_buf_puts(b, s->why);
		return;
	}
	if (p->o.route_mix != ZM_ROUTE_MIX_AUTO)
		zm_buf_printf(b, "as asked (--route-mix %s); ",
		              s->layers ? "layers" : "final");
	zm_error_clear(&e2);
	if (zm_lineage_all_related(p->models, p->n_models, &all, &a, &c, &info,
	                           &e2) != ZM_OK) {
		zm_buf_printf(b, "lineage not known: %s", e2.msg);
		return;
	}
	if (all)
		zm_buf_puts(b, "the models are related (their hidden units "
		            "correspond)");
	else
		zm_buf_printf(b, "models '%s' and '%s' are %s (by %s): their "
		              "hidden units do not correspond", names[a],
		              names[c], zm_lineage_verdict_name(info.verdict),
		              zm_lineage_basis_name(info.basis));
	if (all && p->o.route_mix == ZM_ROUTE_MIX_AUTO)
		zm_buf_puts(b, ", but mixing their layers was measured no more "
		            "accurate and worse in log-loss (predict(1); "
		            "--route-mix layers asks for it)");
}

size_t zm_route_assign(const double *w, size_t n, size_t k,
                       double threshold, size_t *group)
{
	size_t r, i, mixed = 0;

	for (r = 0; r < n; r++) {
		const double *wr = w + r * k;
		size_t best = 0;
		for (i = 1; i < k; i++)
			if (wr[i] > wr[best])
				best = i;
		for (i = 0; i < k; i++)
			if (i != best && wr[i] == wr[best])
				break;
		/* A tie is no decision: uniform weights (models that cannot
		 * be told apart) under a low --threshold are mixed, not all
		 * sent to the first model. */
		if (wr[best] >= threshold && i == k) {
			group[r] = best;
		} else {
			group[r] = SIZE_MAX;
			mixed++;
		}
	}
	return mixed;
}

bool zm_route_rows_disagree(const double *w, size_t n, size_t k)
{
	size_t r, i, first = 0;

	for (r = 0; r < n; r++) {
		const double *wr = w + r * k;
		size_t best = 0;
		for (i = 1; i < k; i++)
			if (wr[i] > wr[best])
				best = i;
		if (r == 0)
			first = best;
		else if (best != first)
			return true;
	}
	return false;
}

/*
 * The class prior of each model, [K, C]: its profile's label histogram
 * with one added to every class (Laplace), uniform without one.  A model
 * that is not evaluated for a row still owns its weight there; its prior
 * stands in for its prediction, so a row routed to the wrong specialist
 * keeps the residual posterior mass on the classes the others know.
 */
static void class_priors(const struct zm_predictor *p, double *prior)
{
	size_t K = p->n_models, C = p->out_features, i, c;

	for (i = 0; i < K; i++) {
		const struct zm_tensor *t = zm_doc_find(&p->models[i]->extra,
		                                        "profile.labels");
		double *pr = prior + i * C, tot = 0;
		for (c = 0; c < C; c++)
			pr[c] = 1;
		if (p->loss == ZM_LOSS_CROSS_ENTROPY && t &&
		    t->dtype == ZM_DTYPE_I64 && t->ndim == 1 && t->data &&
		    t->shape[0] > 0 && t->nbytes == (size_t)t->shape[0] * 8)
			for (c = 0; c < C && c < (size_t)t->shape[0]; c++) {
				int64_t v;
				memcpy(&v, (const char *)t->data + c * 8, 8);
				pr[c] += v > 0 ? (double)v : 0;
			}
		for (c = 0; c < C; c++)
			tot += pr[c];
		for (c = 0; c < C; c++)
			pr[c] /= tot;
	}
}

void zm_route_state_free(struct zm_route_state *s)
{
	if (!s)
		return;
	free(s->stats.rows_model);
	free(s->group);
	free(s->rows);
	free(s->xg);
	free(s->sg);
	free(s->lg);
	free(s->mix);
	free(s->prior);
	free(s);
}

enum zm_status zm_route_state_new(const struct zm_predictor *p,
                                  const char *const *names,
                                  struct zm_route_state **out,
                                  struct zm_error *err)
{
	struct zm_route_state *s;
	enum zm_status st;
	size_t xn, cn;

	*out = NULL;
	if (!zm_size_mul(p->max_batch, p->in_features, &xn) ||
	    !zm_size_mul(p->max_batch, p->out_features, &cn))
		return zm_error_set(err, ZM_ERR_NOMEM, "batch too large");
	s = zm_calloc(1, sizeof(*s));
	if (!s)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	s->stats.k = p->n_models;
	s->stats.rows_model = zm_calloc(p->n_models, sizeof(uint64_t));
	s->group = zm_malloc(p->max_batch * sizeof(size_t));
	s->rows = zm_malloc(p->max_batch * sizeof(size_t));
	s->xg = zm_malloc(xn * sizeof(float));
	s->sg = zm_malloc(cn * sizeof(float));
	s->lg = zm_malloc(cn * sizeof(float));
	s->mix = zm_malloc(cn * sizeof(double));
	s->prior = zm_malloc(p->n_models * p->out_features * sizeof(double));
	if (!s->stats.rows_model || !s->group || !s->rows || !s->xg ||
	    !s->sg || !s->lg || !s->mix || !s->prior) {
		zm_route_state_free(s);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	class_priors(p, s->prior);
	if ((st = choose_mix(p, names, s, err)) != ZM_OK) {
		zm_route_state_free(s);
		return st;
	}
	*out = s;
	return ZM_OK;
}

const struct zm_route_stats *zm_route_stats(const struct zm_route_state *s)
{
	return &s->stats;
}

/* Copies the m rows idx of x (width d) into dst. */
static void gather(const float *x, size_t d, const size_t *idx, size_t m,
                   float *dst)
{
	size_t r;

	for (r = 0; r < m; r++)
		memcpy(dst + r * d, x + idx[r] * d, d * sizeof(float));
}

/*
 * The m gathered mixed rows (s->xg, indices s->rows) through the outputs
 * merge with their own weights: p->wl is compacted to the gathered rows
 * (row r's weights move to position r <= s->rows[r], so in place), the
 * hard rows being done with it.
 */
static enum zm_status mix_layers(struct zm_predictor *p, size_t m,
                                 float *scores, float *logp,
                                 struct zm_error *err)
{
	struct zm_route_state *s = p->route;
	size_t K = p->n_models, C = p->out_features, r;
	size_t hard = p->evaluated;
	const float *outp;
	enum zm_status st;

	if (p->wr->o.per_row)
		for (r = 0; r < m; r++)
			memmove(p->wl + r * K, p->wl + s->rows[r] * K,
			        K * sizeof(double));
	if ((st = zm_predict_merged_rows(p, s->xg, m, &outp, err)))
		return st;
	if (hard > p->evaluated)
		p->evaluated = hard;
	zm_predict_finish(p, outp, m, s->sg, s->lg);
	for (r = 0; r < m; r++) {
		memcpy(scores + s->rows[r] * C, s->sg + r * C,
		       C * sizeof(float));
		if (logp && p->loss == ZM_LOSS_CROSS_ENTROPY)
			memcpy(logp + s->rows[r] * C, s->lg + r * C,
			       C * sizeof(float));
	}
	return ZM_OK;
}

enum zm_status zm_route_forward(struct zm_predictor *p, const float *x,
                                size_t n, float *scores, float *logp,
                                struct zm_error *err)
{
	struct zm_route_state *s = p->route;
	size_t K = p->n_models, C = p->out_features, d = p->in_features;
	size_t r, i, j, m, mixed, used;
	bool per_row = p->wr->o.per_row, ce = p->loss == ZM_LOSS_CROSS_ENTROPY;
	const double *wl = p->wl;
	double wbatch[ZM_WEIGHTER_MAX_MODELS];
	bool ev[ZM_WEIGHTER_MAX_MODELS];
	enum zm_status st;

	if ((st = zm_predict_weigh_whole(p, x, n, err)))
		return st;
	if (!per_row) {
		/* One weight vector for the batch: every row shares it. */
		memcpy(wbatch, p->wl, K * sizeof(double));
		mixed = zm_route_assign(wbatch, 1, K, p->o.threshold, s->group);
		for (r = 1; r < n; r++)
			s->group[r] = s->group[0];
		mixed *= n;
	} else {
		mixed = zm_route_assign(wl, n, K, p->o.threshold, s->group);
	}
	p->evaluated = 0;
	/* Hard rows, model by model. */
	for (i = 0; i < K; i++) {
		const float *z, *xi = x;
		for (m = 0, r = 0; r < n; r++)
			if (s->group[r] == i)
				s->rows[m++] = r;
		if (m == 0)
			continue;
		p->evaluated++;
		if (p->recording)
			s->stats.rows_model[i] += m;
		if (m < n) {
			gather(x, d, s->rows, m, s->xg);
			xi = s->xg;
		}
		z = zm_model_forward(p->models[i], p->ws[i], xi, m);
		if (!ce) {
			/* Regression: the model's outputs as they are. */
			zm_predict_finish(p, z, m, s->sg, NULL);
			for (r = 0; r < m; r++)
				memcpy(scores + s->rows[r] * C, s->sg + r * C,
				       C * sizeof(float));
			continue;
		}
		zm_predict_finish(p, z, m, s->sg, s->lg);
		for (r = 0; r < m; r++) {
			const double *wr = per_row ? wl + s->rows[r] * K : wbatch;
			float *sc = scores + s->rows[r] * C;
			size_t q;
			for (j = 0; j < C; j++) {
				/* log(w_i p_ij + rest) from the model's own log p,
				 * so that a tiny p keeps its log. */
				double rest = 0, a, v;
				for (q = 0; q < K; q++)
					if (q != i)
						rest += wr[q] * s->prior[q * C + j];
				a = log(wr[i]) + s->lg[r * C + j];
				v = rest > 0 ? log(rest) : -INFINITY;
				if (a > v)
					v = a + log1p(exp(v - a));
				else if (a > -INFINITY)
					v = v + log1p(exp(a - v));
				sc[j] = (float)exp(v);
				if (logp)
					logp[s->rows[r] * C + j] = (float)v;
			}
		}
	}
	/* Counted for the predicted batch, not for feedback's probes. */
	if (p->recording) {
		s->stats.rows_hard += n - mixed;
		s->stats.rows_mixed += mixed;
		if (mixed == 0 && p->evaluated == 1)
			s->stats.batches_one++;
		else
			s->stats.batches_split++;
	}
	if (mixed == 0)
		return ZM_OK;
	/* Mixed rows: gathered once, every model that matters run on them,
	 * their outputs mixed with the renormalised weights. */
	for (m = 0, r = 0; r < n; r++)
		if (s->group[r] == SIZE_MAX)
			s->rows[m++] = r;
	gather(x, d, s->rows, m, s->xg);
	if (s->layers)
		return mix_layers(p, m, scores, logp, err);
	memset(s->mix, 0, m * C * sizeof(double));
	used = 0;
	for (i = 0; i < K; i++) {
		const float *z;
		bool any = false;
		for (r = 0; r < m && !any; r++)
			any = (per_row ? wl[s->rows[r] * K + i] : wbatch[i]) >=
			      ZM_ROUTE_MIN_WEIGHT;
		ev[i] = any;
		if (!any)
			continue;
		used++;
		z = zm_model_forward(p->models[i], p->ws[i], s->xg, m);
		zm_predict_finish(p, z, m, s->sg, NULL);
		for (r = 0; r < m; r++) {
			double wi = per_row ? wl[s->rows[r] * K + i] : wbatch[i];
			for (j = 0; j < C; j++)
				s->mix[r * C + j] += wi * s->sg[r * C + j];
		}
	}
	if (used > p->evaluated)
		p->evaluated = used;
	for (i = 0; i < K; i++) {
		if (ev[i] || !ce)
			continue;
		/* A model left out of every mixed row: its prior. */
		for (r = 0; r < m; r++) {
			double wi = per_row ? wl[s->rows[r] * K + i] : wbatch[i];
			for (j = 0; j < C; j++)
				s->mix[r * C + j] += wi * s->prior[i * C + j];
		}
	}
	for (r = 0; r < m; r++) {
		const double *wr = per_row ? wl + s->rows[r] * K : wbatch;
		double tot = 0;
		float *sc = scores + s->rows[r] * C;
		for (i = 0; i < K; i++)
			if (ce || ev[i])
				tot += wr[i];
		for (j = 0; j < C; j++) {
			sc[j] = (float)(s->mix[r * C + j] / tot);
			if (ce && logp)
				logp[s->rows[r] * C + j] = s->mix[r * C + j] > 0 ?
					(float)log(s->mix[r * C + j] / tot) :
					-INFINITY;
		}
	}
	return ZM_OK;
}

void zm_predict_explain(const struct zm_predictor *p,
                        const char *const *names, struct zm_buf *b)
{
	const struct zm_weighter *w = p->wr;
	size_t K = p->n_models, i;

	if (K == 1) {
		zm_buf_printf(b, "one model (%s): its own forward pass\n",
		              names[0]);
		return;
	}
	zm_buf_printf(b, "weighting: %s", zm_weighting_name(w->o.kind));
	if (w->o.kind == ZM_WEIGHTING_DENSITY) {
		if (w->separable) {
			zm_buf_printf(b, ", the posterior of each model's data "
			              "given the row at temperature %g%s%s%s (",
			              w->o.temperature,
			              w->o.temperature_origin ? " [" : "",
			              w->o.temperature_origin ?
			              w->o.temperature_origin : "",
			              w->o.temperature_origin ? "]" : "");
			for (i = 0; i < K; i++)
				if (w->dens[i].n_comp)
					zm_buf_printf(b, "%s%s: a mixture of %zu PPCAs",
					              i ? ", " : "", names[i],
					              w->dens[i].n_comp);
				else
					zm_buf_printf(b, "%s%s: %s", i ? ", " : "",
					              names[i], w->dens[i].q ? "PPCA" :
					              "diagonal");
			if (w->dens[0].q && !w->dens[0].n_comp)
				zm_buf_printf(b, " with %zu directions", w->dens[0].q);
			for (i = 0; i < K && w->dens[i].q; i++)
				;
			if (i == K)
				zm_buf_printf(b, ", one residual variance %.4g "
				              "for all", w->dens[0].n_comp ?
				              w->dens[0].comp[0].s2 : w->dens[0].s2);
			zm_buf_printf(b, "); the models' data differ: symmetric "
			              "KL %.4g between '%s' and '%s' (%.4g needed)\n",
			              w->sep_kl, names[w->sep_a], names[w->sep_b],
			              w->sep_need);
		} else {
			zm_buf_printf(b, ", but %s: uniform weights (the static "
			              "merge)\n", w->why);
		}
	} else {
		zm_buf_printf(b, ", %s\n", w->o.per_row ? "per row" :
		              "per batch");
	}
	if (p->o.merge == ZM_MERGE_ROUTE && p->route) {
		const struct zm_route_stats *s = zm_route_stats(p->route);
		zm_buf_printf(b, "merge: route, a model alone where its weight "
		              "is at least %g, else the models mixed %s: ",
		              p->o.threshold, p->route->layers ?
		              "layer by layer (their outputs at every layer, "
		              "as --merge outputs)" : "at their final outputs");
		explain_mix(p, names, b);
		zm_buf_puts(b, "\n");
		zm_buf_printf(b, "rows: %llu computed by one model alone (",
		              (unsigned long long)s->rows_hard);
		for (i = 0; i < K; i++)
			zm_buf_printf(b, "%s%s %llu", i ? ", " : "", names[i],
			              (unsigned long long)s->rows_model[i]);
		zm_buf_printf(b, "), %llu mixed %s\n",
		              (unsigned long long)s->rows_mixed,
		              p->route->layers ? "layer by layer" :
		              "at the final outputs");
		zm_buf_printf(b, "batches: %llu went to one model (per batch: "
		              "their rows agreed), %llu were split (per row)\n",
		              (unsigned long long)s->batches_one,
		              (unsigned long long)s->batches_split);
		return;
	}
	zm_buf_printf(b, "merge: %s\n", p->o.merge == ZM_MERGE_OUTPUTS ?
	              "outputs (layer by layer)" : p->o.merge == ZM_MERGE_PARAMS ?
	              "params" : "ensemble");
}
