/*
 * The driver of predict --granularity auto (granauto.h): one predictor per
 * level over the same models; before each batch the layer level's weights
 * are measured on a sample of the batch, zm_granauto_decide picks the
 * level, and the batch runs with that level's predictor.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "granauto.h"
#include "json.h"
#include "mem.h"
#include "predict.h"

bool zm_granauto_units_same(const struct zm_predict_options *po)
{
	/* Similarity (each layer's input against its profile) and static
	 * tables by layer differ by unit. */
	return !po->adapt && (po->w.kind == ZM_WEIGHTING_DENSITY ||
	                      po->w.kind == ZM_WEIGHTING_ROUTER ||
	                      po->w.kind == ZM_WEIGHTING_UNIFORM);
}

enum zm_status zm_granauto_ctl_init(struct zm_granauto_ctl *ctl,
                                    struct zm_predictor *const *pred,
                                    double budget_ms, bool use_loadavg,
                                    const struct zm_gc_rules *rules,
                                    bool has_prior, enum zm_gran_level prior,
                                    struct zm_error *err)
{
	struct zm_predictor *pl = pred[ZM_GRAN_LAYER];
	struct zm_gran_units gu;
	enum zm_status st;
	size_t l, u, n = 0;

	memset(ctl, 0, sizeof(*ctl));
	ZM_ASSERT(pred[ZM_GRAN_FULL] != NULL);
	memcpy(ctl->pred, pred, sizeof(ctl->pred));
	zm_granauto_init(&ctl->g);
	zm_granauto_input_init(&ctl->in);
	ctl->in.budget_ms = budget_ms;
	ctl->in.rules = rules;
	ctl->in.has_prior = has_prior;
	ctl->in.prior = prior;
	for (l = 0; l < ZM_GRANAUTO_LEVELS; l++)
		ctl->in.allowed[l] = pred[l] != NULL;
	ctl->use_loadavg = use_loadavg;
	ctl->last_ms = NAN;
	/* The full level loses nothing there, and nothing needs
	 * measuring. */
	ctl->in.units_same = zm_granauto_units_same(&pred[ZM_GRAN_FULL]->o);
	if (!pl)
		return ZM_OK;
	/* The layer units that carry weights (parameterless layers have
	 * none), each with its layer group. */
	st = zm_gran_units_init(&gu, ZM_GRAN_GROUP, pl->models[0]->arch, err);
	if (st != ZM_OK)
		return st;
	ctl->unit_group = zm_calloc(pl->wr->units.n_units + 1, sizeof(size_t));
	ctl->in.unit_w = NULL;
	ctl->sample = zm_calloc(ZM_GRANAUTO_SAMPLE_ROWS *
	                        (pl->out_features + pl->in_features),
	                        sizeof(float));
	if (!ctl->unit_group || !ctl->sample) {
		zm_gran_units_release(&gu);
		zm_granauto_ctl_release(ctl);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	for (u = 0; u < pl->wr->units.n_units; u++) {
		l = pl->wr->unit_first[u];
		if (l == SIZE_MAX)
			continue;
		ctl->unit_group[n++] = gu.layer_unit[l];
	}
	zm_gran_units_release(&gu);
	ctl->in.n_units = n;
	ctl->in.k = pl->n_models;
	ctl->in.unit_group = ctl->unit_group;
	return ZM_OK;
}

void zm_granauto_ctl_release(struct zm_granauto_ctl *ctl)
{
	free(ctl->unit_group);
	free(ctl->sample);
	free(ctl->state_keep);
	free((void *)ctl->in.unit_w);
	ctl->state_keep = NULL;
	ctl->unit_group = NULL;
	ctl->sample = NULL;
	ctl->in.unit_w = NULL;
}

/* The layer level's mean weights per unit on a sample of the batch: rows
 * spread evenly over it, so a batch that mixes kinds shows its mix. */
static enum zm_status sample_weights(struct zm_granauto_ctl *ctl,
                                     const float *x, size_t n,
                                     struct zm_error *err)
{
	struct zm_predictor *pl = ctl->pred[ZM_GRAN_LAYER];
	size_t K = pl->n_models, d = pl->in_features, s, r, u, m = 0, k_keep;
	float *xs = ctl->sample, *sc = ctl->sample + ZM_GRANAUTO_SAMPLE_ROWS * d;
	double *uw = (double *)ctl->in.unit_w, t0;
	enum zm_status st;

	s = n / ZM_GRANAUTO_SAMPLE_SHARE;
	s = s < ZM_GRANAUTO_SAMPLE_MIN ? ZM_GRANAUTO_SAMPLE_MIN :
	    s > ZM_GRANAUTO_SAMPLE_ROWS ? ZM_GRANAUTO_SAMPLE_ROWS : s;
	if (s > n)
		s = n;
	if (!uw) {
		uw = zm_calloc(ctl->in.n_units ? ctl->in.n_units * K : 1,
		               sizeof(double));
		if (!uw)
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		ctl->in.unit_w = uw;
	}
	t0 = 1e3 * zm_clock_seconds();
	for (r = 0; r < s; r++)
		memcpy(xs + r * d, x + (r * n / s) * d, d * sizeof(float));
	/* The weights before any top-k cut: a cut of the budget would make
	 * every unit agree on the one model it keeps.  The level's own k
	 * (set by its batches' times, not by this small pass) comes back. */
	k_keep = pl->wr->k_active;
	pl->wr->k_active = pl->wr->o.top_k > 0 && pl->wr->o.top_k < K ?
	                   pl->wr->o.top_k : K;
	st = zm_predict_run(pl, xs, s, sc, NULL, err);
	pl->wr->k_active = k_keep;
	if (st != ZM_OK)
		return st;
	for (u = 0; u < pl->wr->units.n_units; u++)
		if (pl->wr->unit_first[u] != SIZE_MAX)
			memcpy(uw + (m++) * K, pl->tw + u * K, K * sizeof(double));
	ctl->sample_ms = 1e3 * zm_clock_seconds() - t0;
	ctl->in.sample_ms = ctl->sample_ms;
	ctl->in.sample_ms_per_row = ctl->sample_ms / (double)s;
	return ZM_OK;
}

enum zm_status zm_granauto_ctl_begin(struct zm_granauto_ctl *ctl,
                                     const float *x, size_t n,
                                     struct zm_predictor **use,
                                     struct zm_error *err)
{
	enum zm_status st;
	double load[1];

	ctl->in.rows = n;
	ctl->in.last_ms = ctl->last_ms;
	ctl->in.saturated = false;
	if (ctl->use_loadavg && ctl->in.budget_ms > 0 &&
	    getloadavg(load, 1) == 1) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);
		ctl->in.saturated = cpus > 0 && load[0] >= (double)cpus;
	}
	ctl->in.sample_ms = 0;
	ctl->in.sample_ms_per_row = NAN;
	if (ctl->pred[ZM_GRAN_LAYER] && n > 0 && !ctl->in.units_same &&
	    (st = sample_weights(ctl, x, n, err)) != ZM_OK)
		return st;
	zm_granauto_decide(&ctl->g, &ctl->in, &ctl->c);
	*use = ctl->pred[ctl->c.level];
	ctl->t0 = 1e3 * zm_clock_seconds();
	return ZM_OK;
}

void zm_granauto_ctl_end(struct zm_granauto_ctl *ctl, size_t n)
{
	double ms = 1e3 * zm_clock_seconds() - ctl->t0;
	size_t i;
	char why[sizeof(ctl->c.why)];

	zm_granauto_observe(&ctl->g, &ctl->in, &ctl->c, n, ms);
	ctl->last_ms = ms + ctl->in.sample_ms;
	if (ctl->in.budget_ms > 0 && ctl->last_ms <= ctl->in.budget_ms)
		ctl->n_within++;
	/* The reason is one quoted CSV field. */
	for (i = 0; i < sizeof(why) - 1 && ctl->c.why[i]; i++)
		why[i] = ctl->c.why[i] == '"' ? '\'' : ctl->c.why[i];
	why[i] = '\0';
	snprintf(ctl->extra, sizeof(ctl->extra), ",%s,%.3f,\"%s\"",
	         zm_gran_level_name(ctl->c.level), ctl->last_ms, why);
	for (i = 0; i < ZM_GRANAUTO_LEVELS; i++)
		if (ctl->pred[i])
			ctl->pred[i]->trace_extra = ctl->extra;
}

void zm_granauto_ctl_explain(const struct zm_granauto_ctl *ctl,
                             struct zm_buf *b)
{
	const struct zm_granauto *g = &ctl->g;
	uint64_t n = g->batches ? g->batches : 1;
	size_t l;

	zm_buf_printf(b, "granularity: auto, per batch (predict(1)): ");
	for (l = 0; l < ZM_GRANAUTO_LEVELS; l++)
		zm_buf_printf(b, "%s %llu batches (%.1f%%)%s",
		              zm_gran_level_name((enum zm_gran_level)l),
		              (unsigned long long)g->used[l],
		              100.0 * (double)g->used[l] / (double)n,
		              l + 1 < ZM_GRANAUTO_LEVELS ? ", " : "\n");
	zm_buf_printf(b, "  %llu level switches, %llu probes; cost per row:",
	              (unsigned long long)g->switches,
	              (unsigned long long)g->probes);
	for (l = 0; l < ZM_GRANAUTO_LEVELS; l++) {
		if (!ctl->pred[l])
			zm_buf_printf(b, " %s unavailable",
			              zm_gran_level_name((enum zm_gran_level)l));
		else if (isnan(g->ms_per_row[l]))
			zm_buf_printf(b, " %s not measured",
			              zm_gran_level_name((enum zm_gran_level)l));
		else
			zm_buf_printf(b, " %s %.4f ms",
			              zm_gran_level_name((enum zm_gran_level)l),
			              g->ms_per_row[l]);
	}
	zm_buf_puts(b, "\n");
	if (ctl->in.budget_ms > 0)
		zm_buf_printf(b, "  latency budget %.6g ms: %llu of %llu batches "
		              "within it\n", ctl->in.budget_ms,
		              (unsigned long long)ctl->n_within,
		              (unsigned long long)g->batches);
}
