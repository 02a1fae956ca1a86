/*
 * The granularity controller's analysis and decision: metrics from logs,
 * updates, profiles and measurements; the automatic policy; the explain
 * table.  Its rules are in gcrules.c, its inputs in gcinput.c; see
 * granctl.h for the definitions.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "granctl.h"
#include "lineage.h"
#include "mem.h"

/* ---- analysis ---- */

void zm_gc_opts_init(struct zm_gc_opts *o)
{
	o->metric = ZM_METRIC_COSINE;
	o->window = 20;
	o->share_threshold = 0.5;
	o->drift_threshold = NAN;
	o->dflt = ZM_GRAN_GROUP;
	o->latency_budget_ms = NAN;
	o->memory_budget_mib = NAN;
}

double zm_gc_drift_threshold(const struct zm_gc_opts *o)
{
	if (!isnan(o->drift_threshold))
		return o->drift_threshold;
	switch (o->metric) {
	case ZM_METRIC_KL: return 1.0;
	case ZM_METRIC_MAHALANOBIS: return 0.5;
	default: return 0.1;
	}
}

void zm_gc_analysis_init(struct zm_gc_analysis *a)
{
	memset(a, 0, sizeof(*a));
	zm_gc_values_init(&a->values);
}

void zm_gc_analysis_release(struct zm_gc_analysis *a)
{
	int l;

	for (l = 0; l < 3; l++) {
		zm_gran_units_release(&a->level[l].units);
		free(a->level[l].agreement);
		free(a->level[l].delta_norm);
		free(a->level[l].pairs);
	}
	zm_buf_release(&a->lineage);
	zm_gc_analysis_init(a);
}

/* Least-squares slope of the last window points, over their mean. */
static double log_slope(const struct zm_gc_log *lg, size_t window)
{
	size_t i, n = lg->n_points < window ? lg->n_points : window;
	size_t first = lg->n_points - n;
	double mx = 0, my = 0, sxy = 0, sxx = 0;

	if (n < 2)
		return NAN;
	for (i = first; i < lg->n_points; i++) {
		mx += lg->step[i];
		my += lg->loss[i];
	}
	mx /= (double)n;
	my /= (double)n;
	for (i = first; i < lg->n_points; i++) {
		sxy += (lg->step[i] - mx) * (lg->loss[i] - my);
		sxx += (lg->step[i] - mx) * (lg->step[i] - mx);
	}
	if (sxx == 0 || my == 0 || !isfinite(sxy))
		return NAN;
	return sxy / sxx / my;
}

static void log_metrics(const struct zm_gc_inputs *in,
                        const struct zm_gc_opts *o, struct zm_gc_values *v)
{
	double slope = 0, loss = 0, acc = 0, gap = NAN, epochs = NAN;
	size_t i, ns = 0, nl = 0, na = 0;

	for (i = 0; i < in->n_logs; i++) {
		const struct zm_gc_log *lg = &in->logs[i];
		double s = log_slope(lg, o->window);
		if (!isnan(s)) {
			slope += s;
			ns++;
		}
		if (lg->epochs && (isnan(epochs) || lg->epochs < epochs))
			epochs = (double)lg->epochs;
		if (!isnan(lg->train_loss)) {
			loss += lg->train_loss;
			nl++;
			if (!isnan(lg->val_loss) &&
			    (isnan(gap) || lg->val_loss - lg->train_loss > gap))
				gap = lg->val_loss - lg->train_loss;
		}
		if (!isnan(lg->val_acc)) {
			acc += lg->val_acc;
			na++;
		}
	}
	v->v[ZM_GC_LOSS_SLOPE] = ns ? slope / (double)ns : NAN;
	v->v[ZM_GC_LOSS] = nl ? loss / (double)nl : NAN;
	v->v[ZM_GC_VAL_ACC] = na ? acc / (double)na : NAN;
	v->v[ZM_GC_VAL_GAP] = gap;
	v->v[ZM_GC_EPOCHS] = epochs;
}

/* Drift of query q from model m as defined in granctl.h. */
static enum zm_status drift_of(enum zm_metric metric,
                               const struct zm_profile_entry *q,
                               const struct zm_profile_entry *m,
                               double *out, struct zm_error *err)
{
	enum zm_status st;
	double s;

	if ((st = zm_similarity_entries(metric, q, m, ZM_SIM_FLOOR_AUTO, &s,
	                                err)))
		return st;
	*out = metric == ZM_METRIC_COSINE ? 1 - s : -s;
	return ZM_OK;
}

static const struct zm_profile_entry *input_entry(const struct zm_profile *p)
{
	const struct zm_profile_entry *e = zm_profile_find(p, ZM_PROFILE_INPUT);

	return e && e->count > 0 ? e : NULL;
}

static enum zm_status drift_metrics(const struct zm_gc_inputs *in,
                                    const struct zm_gc_opts *o,
                                    struct zm_gc_values *v, size_t *n_slices,
                                    struct zm_error *err)
{
	const struct zm_profile_entry **sl = NULL, *q, *me;
	double sum = 0, d, d2, best = NAN;
	size_t i, j, ns = 0, np = 0;
	enum zm_status st = ZM_OK;

	/* One profile per distinct slice (an update without a slice is its
	 * own); the first update of a slice stands for it, since every
	 * model of a slice trained on the same rows. */
	if (in->n_updates &&
	    !(sl = zm_calloc(in->n_updates, sizeof(*sl))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (i = 0; i < in->n_updates; i++) {
		const struct zm_gc_update *u = &in->updates[i];
		bool seen = false;
		for (j = 0; j < i && u->slice; j++)
			seen |= in->updates[j].slice &&
			        strcmp(in->updates[j].slice, u->slice) == 0;
		if (seen)
			continue;
		if ((q = input_entry(&u->profile)))
			sl[ns] = q;
		(*n_slices)++;
		ns += q != NULL;
	}
	for (i = 0; i < ns && st == ZM_OK; i++)
		for (j = i + 1; j < ns && st == ZM_OK; j++) {
			if ((st = drift_of(o->metric, sl[i], sl[j], &d, err)) ||
			    (st = drift_of(o->metric, sl[j], sl[i], &d2, err)))
				break;
			sum += (d + d2) / 2;
			np++;
		}
	free(sl);
	if (st != ZM_OK)
		return st;
	v->v[ZM_GC_SLICE_DRIFT] = np ? sum / (double)np : NAN;
	sum = 0;
	np = 0;
	for (i = 0; i < in->n_updates; i++) {
		const struct zm_gc_model *m = zm_gc_find_model(in,
		                                               in->updates[i].model);
		q = input_entry(&in->updates[i].profile);
		me = m ? input_entry(&m->profile) : NULL;
		if (!q || !me)
			continue;
		if ((st = drift_of(o->metric, q, me, &d, err)))
			return st;
		sum += d;
		np++;
	}
	v->v[ZM_GC_MODEL_DRIFT] = np ? sum / (double)np : NAN;
	if (in->has_data && (q = input_entry(&in->data))) {
		for (i = 0; i < in->n_models; i++) {
			if (!(me = input_entry(&in->models[i].profile)))
				continue;
			if ((st = drift_of(o->metric, q, me, &d, err)))
				return st;
			if (isnan(best) || d < best)
				best = d;
		}
	}
	v->v[ZM_GC_DATA_DRIFT] = best;
	d = NAN;
	for (i = ZM_GC_SLICE_DRIFT; i <= ZM_GC_DATA_DRIFT; i++)
		if (!isnan(v->v[i]) && (isnan(d) || v->v[i] > d))
			d = v->v[i];
	v->v[ZM_GC_DRIFT] = d;
	return ZM_OK;
}

/* A delta over all layers, and a pair of them with its weight. */
struct vec {
	const float *const *delta;   /* [n_layers], NULL entries: no params */
};

struct pair {
	size_t a, b;
	double w;
};

static size_t layer_len(const struct zm_gc_inputs *in, size_t l)
{
	const struct zm_layer *ly = &in->models[0].model->layers[l];

	if (!ly->spec->has_params)
		return 0;
	return zm_tensor_numel(&ly->weight) + zm_tensor_numel(&ly->bias);
}

static double dot(const float *x, const float *y, size_t n)
{
	double s = 0;
	size_t i;

	for (i = 0; i < n; i++)
		s += (double)x[i] * (double)y[i];
	return s;
}

/* Agreement and pairs of every unit of every level from per-layer dot
 * products of the pairs and per-layer squared norms of the vectors. */
static enum zm_status agreement(const struct zm_gc_inputs *in,
                                struct zm_gc_analysis *a,
                                const struct vec *vecs, size_t n_vecs,
                                const struct pair *pairs, size_t n_pairs,
                                struct zm_error *err)
{
	size_t nl = in->arch->n_layers, p, l, u, lv;
	double *dots = NULL, *sq = NULL;
	size_t cells;

	if (!zm_size_mul(n_pairs ? n_pairs : 1, nl, &cells) ||
	    !(dots = zm_calloc(cells, sizeof(double))) ||
	    !zm_size_mul(n_vecs ? n_vecs : 1, nl, &cells) ||
	    !(sq = zm_calloc(cells, sizeof(double)))) {
		free(dots);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	for (p = 0; p < n_vecs; p++)
		for (l = 0; vecs[p].delta && l < nl; l++)
			if (vecs[p].delta[l])
				sq[p * nl + l] = dot(vecs[p].delta[l],
				                     vecs[p].delta[l],
				                     layer_len(in, l));
	for (p = 0; p < n_pairs; p++)
		for (l = 0; l < nl; l++)
			if (vecs[pairs[p].a].delta[l] && vecs[pairs[p].b].delta[l])
				dots[p * nl + l] = dot(vecs[pairs[p].a].delta[l],
				                       vecs[pairs[p].b].delta[l],
				                       layer_len(in, l));
	for (lv = 0; lv < 3; lv++) {
		struct zm_gc_level_stats *s = &a->level[lv];
		for (u = 0; u < s->units.n_units; u++) {
			double num = 0, den = 0;
			for (p = 0; p < n_pairs; p++) {
				double d = 0, na = 0, nb = 0;
				for (l = 0; l < nl; l++) {
					if (s->units.layer_unit[l] != u)
						continue;
					d += dots[p * nl + l];
					na += sq[pairs[p].a * nl + l];
					nb += sq[pairs[p].b * nl + l];
				}
				if (na <= 0 || nb <= 0)
					continue;
				num += pairs[p].w * d / sqrt(na * nb);
				den += pairs[p].w;
				s->pairs[u]++;
			}
			s->agreement[u] = den > 0 ? num / den : NAN;
		}
	}
	free(dots);
	free(sq);
	return ZM_OK;
}

/* |delta_u| / |theta_u| per unit, mean over updates weighted by w n. */
static void delta_norms(const struct zm_gc_inputs *in,
                        struct zm_gc_analysis *a)
{
	size_t nl = in->arch->n_layers, i, l, u, lv;

	for (lv = 0; lv < 3; lv++) {
		struct zm_gc_level_stats *s = &a->level[lv];
		for (u = 0; u < s->units.n_units; u++) {
			double num = 0, den = 0;
			for (i = 0; i < in->n_updates; i++) {
				const struct zm_gc_update *up = &in->updates[i];
				const struct zm_gc_model *m =
					zm_gc_find_model(in, up->model);
				double dd = 0, tt = 0, w = up->weight * up->samples;
				for (l = 0; l < nl; l++) {
					const struct zm_layer *ly;
					size_t nw;
					if (s->units.layer_unit[l] != u ||
					    !up->delta[l])
						continue;
					ly = &m->model->layers[l];
					nw = zm_tensor_numel(&ly->weight);
					dd += dot(up->delta[l], up->delta[l],
					          layer_len(in, l));
					tt += dot(ly->weight.data,
					          ly->weight.data, nw) +
					      dot(ly->bias.data, ly->bias.data,
					          zm_tensor_numel(&ly->bias));
				}
				if (tt <= 0 || w <= 0)
					continue;
				num += w * sqrt(dd / tt);
				den += w;
			}
			s->delta_norm[u] = den > 0 ? num / den : NAN;
		}
	}
}

/* Builds the pairs (see granctl.h) and computes the agreement. */
static enum zm_status update_metrics(const struct zm_gc_inputs *in,
                                     struct zm_gc_analysis *a,
                                     struct zm_error *err)
{
	size_t nu = in->n_updates, nm = in->n_models, nl = in->arch->n_layers;
	struct vec *vecs = NULL;
	struct pair *pairs = NULL;
	float **avg = NULL;          /* [nm * nl] per-model FedAvg deltas */
	double *mw = NULL;
	size_t i, j, l, np = 0, cap;
	enum zm_status st = ZM_OK;

	if (!zm_size_mul(nu > nm ? nu : nm, nu > nm ? nu : nm, &cap) ||
	    !(pairs = zm_calloc(cap ? cap : 1, sizeof(*pairs))) ||
	    !(vecs = zm_calloc(nu + nm + 1, sizeof(*vecs))))
		goto nomem;
	for (i = 0; i < nu; i++) {
		const struct zm_gc_update *x = &in->updates[i];
		vecs[i].delta = (const float *const *)x->delta;
		for (j = 0; j < i; j++) {
			const struct zm_gc_update *y = &in->updates[j];
			if (!x->slice || !y->slice || strcmp(x->slice, y->slice) ||
			    strcmp(x->model, y->model) == 0)
				continue;
			pairs[np].a = j;
			pairs[np].b = i;
			pairs[np++].w = sqrt(x->weight * x->samples *
			                     y->weight * y->samples);
		}
	}
	a->slice_pairs = np > 0;
	if (np == 0 && nm > 1) {
		/* No common slice: each model's FedAvg delta, all pairs. */
		if (!zm_size_mul(nm, nl, &cap) ||
		    !(avg = zm_calloc(cap, sizeof(*avg))) ||
		    !(mw = zm_calloc(nm, sizeof(*mw))))
			goto nomem;
		for (i = 0; i < nu; i++) {
			const struct zm_gc_update *x = &in->updates[i];
			size_t m = (size_t)(zm_gc_find_model(in, x->model) -
			                    in->models);
			double w = x->weight * x->samples;
			mw[m] += w;
			for (l = 0; l < nl; l++) {
				size_t k, n = layer_len(in, l);
				if (!n)
					continue;
				if (!avg[m * nl + l] &&
				    !(avg[m * nl + l] = zm_calloc(n,
				                                  sizeof(float))))
					goto nomem;
				for (k = 0; k < n; k++)
					avg[m * nl + l][k] +=
						(float)(w * x->delta[l][k]);
			}
		}
		for (i = 0; i < nm; i++) {
			vecs[nu + i].delta = (const float *const *)&avg[i * nl];
			for (l = 0; l < nl && mw[i] > 0; l++) {
				size_t k, n = layer_len(in, l);
				for (k = 0; avg[i * nl + l] && k < n; k++)
					avg[i * nl + l][k] /= (float)mw[i];
			}
			for (j = 0; j < i; j++) {
				if (mw[i] <= 0 || mw[j] <= 0)
					continue;
				pairs[np].a = nu + j;
				pairs[np].b = nu + i;
				pairs[np++].w = sqrt(mw[i] * mw[j]);
			}
		}
	}
	st = agreement(in, a, vecs, nu + nm, pairs, np, err);
	goto out;
nomem:
	st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
out:
	for (i = 0; avg && i < nm * nl; i++)
		free(avg[i]);
	free(avg);
	free(mw);
	free(vecs);
	free(pairs);
	return st;
}

/* The lineage of every two models: shared units average deltas, which
 * means something only where the models' units correspond. */
static enum zm_status lineage_pairs(const struct zm_gc_inputs *in,
                                    struct zm_gc_analysis *a,
                                    struct zm_error *err)
{
	size_t i, j;
	enum zm_status st;

	for (i = 0; i < in->n_models; i++) {
		for (j = i + 1; j < in->n_models; j++) {
			const struct zm_gc_model *x = &in->models[i];
			const struct zm_gc_model *y = &in->models[j];
			struct zm_lineage_info info;
			if ((st = zm_lineage_related(x->model, y->model, &info,
			                             err)))
				return st;
			zm_buf_printf(&a->lineage, "%s %s: ", x->name, y->name);
			zm_lineage_describe(&info, x->model->arch, &a->lineage);
			zm_buf_puts(&a->lineage, "\n");
			if (info.verdict != ZM_LINEAGE_RELATED &&
			    !a->unrelated[0])
				snprintf(a->unrelated, sizeof(a->unrelated),
				         "models '%s' and '%s' are %s by %s",
				         x->name, y->name,
				         zm_lineage_verdict_name(info.verdict),
				         zm_lineage_basis_name(info.basis));
		}
	}
	if (a->lineage.failed)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	return ZM_OK;
}

enum zm_status zm_gc_analyze(const struct zm_gc_inputs *in,
                             const struct zm_gc_opts *o,
                             struct zm_gc_analysis *a, struct zm_error *err)
{
	struct zm_gc_values *v = &a->values;
	struct zm_gc_level_stats *ls;
	enum zm_status st;
	size_t lv, u, n_slices = 0;
	double lo = NAN, hi = NAN;

	zm_gc_analysis_release(a);
	if (!in->n_models || !in->arch)
		return zm_error_set(err, ZM_ERR_USAGE, "no model to decide "
		                    "for");
	for (lv = 0; lv < 3; lv++) {
		size_t n;
		ls = &a->level[lv];
		if ((st = zm_gran_units_init(&ls->units, (enum zm_gran_level)lv,
		                             in->arch, err)))
			goto fail;
		n = ls->units.n_units;
		if (!(ls->agreement = zm_calloc(n, sizeof(double))) ||
		    !(ls->delta_norm = zm_calloc(n, sizeof(double))) ||
		    !(ls->pairs = zm_calloc(n, sizeof(size_t)))) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
			goto fail;
		}
		for (u = 0; u < n; u++)
			ls->agreement[u] = ls->delta_norm[u] = NAN;
	}
	log_metrics(in, o, v);
	if ((st = drift_metrics(in, o, v, &n_slices, err)))
		goto fail;
	if ((st = update_metrics(in, a, err)))
		goto fail;
	delta_norms(in, a);
	v->v[ZM_GC_AGREEMENT] = a->level[ZM_GRAN_FULL].agreement[0];
	v->v[ZM_GC_DELTA_NORM] = a->level[ZM_GRAN_FULL].delta_norm[0];
	ls = &a->level[ZM_GRAN_LAYER];
	for (u = 0; u < ls->units.n_units; u++) {
		double x = ls->agreement[u];
		if (isnan(x))
			continue;
		if (isnan(lo) || x < lo)
			lo = x;
		if (isnan(hi) || x > hi)
			hi = x;
	}
	v->v[ZM_GC_AGREEMENT_MIN] = lo;
	v->v[ZM_GC_AGREEMENT_MAX] = hi;
	v->v[ZM_GC_AGREEMENT_SPREAD] = hi - lo;
	for (lv = 0; lv < 3; lv++) {
		v->v[ZM_GC_LATENCY_FULL_MS + lv] = in->latency_ms[lv];
		v->v[ZM_GC_MEMORY_FULL_MIB + lv] = in->memory_mib[lv];
		if (!isnan(in->latency_ms[lv]) &&
		    !(in->latency_ms[lv] <= v->v[ZM_GC_LATENCY_MS]))
			v->v[ZM_GC_LATENCY_MS] = in->latency_ms[lv];
		if (!isnan(in->memory_mib[lv]) &&
		    !(in->memory_mib[lv] <= v->v[ZM_GC_MEMORY_MIB]))
			v->v[ZM_GC_MEMORY_MIB] = in->memory_mib[lv];
	}
	v->v[ZM_GC_MODELS] = (double)in->n_models;
	v->v[ZM_GC_UPDATES] = (double)in->n_updates;
	v->v[ZM_GC_SLICES] = (double)n_slices;
	if ((st = lineage_pairs(in, a, err)))
		goto fail;
	return ZM_OK;
fail:
	zm_gc_analysis_release(a);
	return st;
}

/* ---- decision ---- */

/* Appends "name value" for a known metric. */
static void say_metric(struct zm_buf *b, const struct zm_gc_values *v,
                       enum zm_gc_metric m)
{
	if (!isnan(v->v[m]))
		zm_buf_printf(b, "; %s %.4g", zm_gc_metric_name(m), v->v[m]);
}

/* The automatic policy's level (see granctl(1)), with its reason. */
static enum zm_gran_level auto_level(const struct zm_gc_analysis *a,
                                     const struct zm_gc_opts *o,
                                     struct zm_buf *why)
{
	const struct zm_gc_values *v = &a->values;
	const struct zm_gc_level_stats *ls = &a->level[ZM_GRAN_LAYER];
	const struct zm_gc_level_stats *gs = &a->level[ZM_GRAN_GROUP];
	double thr = o->share_threshold, dthr = zm_gc_drift_threshold(o);
	size_t l, l2;
	bool mixed_group = false;

	if (zm_gc_compare(v->v[ZM_GC_DRIFT], ZM_GC_GT, dthr)) {
		zm_buf_printf(why, "auto: drift %.4g > %.4g: slices drift "
		              "apart, go finer", v->v[ZM_GC_DRIFT], dthr);
		return ZM_GRAN_LAYER;
	}
	if (isnan(v->v[ZM_GC_AGREEMENT_MIN])) {
		zm_buf_printf(why, "auto: no update agreement (no two models' "
		              "updates to compare): default level");
		return o->dflt;
	}
	if (v->v[ZM_GC_AGREEMENT_MIN] >= thr) {
		zm_buf_printf(why, "auto: every layer's updates agree "
		              "(agreement_min %.4g >= %.4g): go coarser",
		              v->v[ZM_GC_AGREEMENT_MIN], thr);
		return ZM_GRAN_FULL;
	}
	/* The group level can express the layer level's sharing exactly
	 * when every group's layers fall on the same side of the threshold
	 * (layers without agreement follow their group). */
	for (l = 0; l < ls->units.n_layers && !mixed_group; l++)
		for (l2 = 0; l2 < l && !mixed_group; l2++) {
			double x = ls->agreement[ls->units.layer_unit[l]];
			double y = ls->agreement[ls->units.layer_unit[l2]];
			if (gs->units.layer_unit[l] != gs->units.layer_unit[l2] ||
			    isnan(x) || isnan(y))
				continue;
			mixed_group = (x >= thr) != (y >= thr);
		}
	if (!mixed_group && gs->units.n_units > 1) {
		zm_buf_printf(why, "auto: agreement differs between groups, "
		              "not within them (agreement_min %.4g, "
		              "agreement_max %.4g, threshold %.4g)",
		              v->v[ZM_GC_AGREEMENT_MIN],
		              v->v[ZM_GC_AGREEMENT_MAX], thr);
		return ZM_GRAN_GROUP;
	}
	zm_buf_printf(why, "auto: agreement differs by layer (agreement_min "
	              "%.4g < %.4g <= agreement_max %.4g): go finer",
	              v->v[ZM_GC_AGREEMENT_MIN], thr,
	              v->v[ZM_GC_AGREEMENT_MAX]);
	return ZM_GRAN_LAYER;
}

/* The measured cost of a level that breaks a budget, or false. */
static bool over_budget(const struct zm_gc_values *v,
                        const struct zm_gc_opts *o, enum zm_gran_level lv,
                        struct zm_buf *why)
{
	double ms = v->v[ZM_GC_LATENCY_FULL_MS + lv];
	double mib = v->v[ZM_GC_MEMORY_FULL_MIB + lv];

	if (zm_gc_compare(ms, ZM_GC_GT, o->latency_budget_ms)) {
		zm_buf_printf(why, "; %s level takes %.4g ms > latency budget "
		              "%.4g ms", zm_gran_level_name(lv), ms,
		              o->latency_budget_ms);
		return true;
	}
	if (zm_gc_compare(mib, ZM_GC_GT, o->memory_budget_mib)) {
		zm_buf_printf(why, "; %s level needs %.4g MiB > memory budget "
		              "%.4g MiB", zm_gran_level_name(lv), mib,
		              o->memory_budget_mib);
		return true;
	}
	return false;
}

enum zm_status zm_gc_decide(const struct zm_gc_analysis *a,
                            const struct zm_gc_rules *rules,
                            const struct zm_gc_opts *o,
                            struct zm_gran_decision *d, struct zm_error *err)
{
	const struct zm_gc_level_stats *ls;
	enum zm_gran_level level;
	struct zm_buf why, uw;
	enum zm_status st = ZM_OK;
	size_t i, u;

	zm_gran_decision_release(d);
	zm_buf_init(&why);
	zm_buf_init(&uw);
	if (rules) {
		bool matched = false;
		level = rules->has_default ? rules->dflt : o->dflt;
		for (i = 0; i < rules->n_rules && !matched; i++) {
			if (!zm_gc_cond_eval(&rules->rules[i].when, &a->values))
				continue;
			matched = true;
			level = rules->rules[i].level;
			zm_buf_printf(&why, "rule %zu (line %d): ", i + 1,
			              rules->rules[i].line);
			zm_gc_cond_format(&rules->rules[i].when, &why);
		}
		if (!matched)
			zm_buf_printf(&why, "no rule matched: %s level",
			              rules->has_default ? "default" :
			              "built-in default");
	} else {
		level = auto_level(a, o, &why);
	}
	say_metric(&why, &a->values, ZM_GC_LOSS_SLOPE);
	say_metric(&why, &a->values, ZM_GC_VAL_GAP);
	while (level != ZM_GRAN_FULL && over_budget(&a->values, o, level, &why)) {
		level = (enum zm_gran_level)(level - 1);
		zm_buf_printf(&why, ": coarser, %s", zm_gran_level_name(level));
	}
	d->level = level;
	if (why.failed || !(d->reason = zm_strdup(why.data)))
		goto nomem;
	ls = &a->level[level];
	for (u = 0; u < ls->units.n_units; u++) {
		struct zm_gc_values uv = a->values;
		double ag = ls->agreement[u];
		bool shared;
		uv.v[ZM_GC_AGREEMENT] = ag;
		uv.v[ZM_GC_DELTA_NORM] = ls->delta_norm[u];
		uw.len = 0;
		if (uw.data)
			uw.data[0] = '\0';
		if (a->unrelated[0]) {
			shared = false;
			zm_buf_printf(&uw, "%s: never shared", a->unrelated);
		} else if (rules && rules->has_share) {
			shared = zm_gc_cond_eval(&rules->share, &uv);
			zm_buf_puts(&uw, shared ? "share rule holds: " :
			            "share rule fails: ");
			zm_gc_cond_format(&rules->share, &uw);
		} else if (isnan(ag)) {
			shared = false;
			zm_buf_puts(&uw, "no agreement measured: independent");
		} else {
			shared = ag >= o->share_threshold;
			zm_buf_printf(&uw, "updates %s (agreement %.4g %s %.4g)",
			              shared ? "agree" : "conflict", ag,
			              shared ? ">=" : "<", o->share_threshold);
		}
		if (!isnan(ls->delta_norm[u]))
			zm_buf_printf(&uw, "; delta_norm %.4g", ls->delta_norm[u]);
		zm_buf_printf(&uw, "; pairs %zu", ls->pairs[u]);
		if (uw.failed)
			goto nomem;
		if ((st = zm_gran_decision_add(d, ls->units.names[u], shared,
		                               !isnan(ag), isnan(ag) ? 0 : ag,
		                               uw.data, err)))
			goto out;
	}
	goto out;
nomem:
	st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
out:
	if (st != ZM_OK)
		zm_gran_decision_release(d);
	zm_buf_release(&why);
	zm_buf_release(&uw);
	return st;
}

void zm_gc_explain(const struct zm_gc_analysis *a,
                   const struct zm_gran_decision *d, struct zm_buf *b)
{
	const struct zm_gc_level_stats *ls = &a->level[d->level];
	int m;
	size_t u;

	zm_buf_puts(b, "metric                  value\n");
	for (m = 0; m < ZM_GC_N_METRICS; m++) {
		if (isnan(a->values.v[m]))
			zm_buf_printf(b, "%-22s  -\n", zm_gc_metric_name(m));
		else
			zm_buf_printf(b, "%-22s  %.6g\n", zm_gc_metric_name(m),
			              a->values.v[m]);
	}
	zm_buf_printf(b, "agreement pairs: %s\n", a->slice_pairs ?
	              "updates of a common slice" :
	              "models over all their slices");
	if (a->lineage.len)
		zm_buf_printf(b, "\nlineage (alignment threshold %.2g):\n%s",
		              ZM_LINEAGE_THRESHOLD, a->lineage.data);
	zm_buf_printf(b, "\nlevel: %s\nreason: %s\n\n",
	              zm_gran_level_name(d->level), d->reason ? d->reason : "");
	zm_buf_puts(b, "unit                  shared  agreement  delta_norm  "
	            "reason\n");
	for (u = 0; u < d->n_units; u++) {
		const struct zm_gran_unit *un = &d->units[u];
		ptrdiff_t k = zm_gran_units_find(&ls->units, un->unit);
		double dn = k >= 0 ? ls->delta_norm[k] : NAN;
		zm_buf_printf(b, "%-20s  %-6s  ", un->unit,
		              un->shared ? "yes" : "no");
		if (un->has_agreement)
			zm_buf_printf(b, "%9.4f  ", un->agreement);
		else
			zm_buf_puts(b, "        -  ");
		if (isnan(dn))
			zm_buf_puts(b, "         -  ");
		else
			zm_buf_printf(b, "%10.4g  ", dn);
		zm_buf_printf(b, "%s\n", un->reason ? un->reason : "");
	}
}
