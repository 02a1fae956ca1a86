/*
 * The decision of predict --granularity auto (granauto.h): pure functions
 * of the batch's per-unit weights, the running cost estimates, the budget
 * and the prior.  The driver that feeds them is predauto.c.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "granauto.h"
#include "fileio.h"
#include "json.h"

void zm_granauto_init(struct zm_granauto *g)
{
	size_t l;

	memset(g, 0, sizeof(*g));
	for (l = 0; l < ZM_GRANAUTO_LEVELS; l++)
		g->ms_per_row[l] = NAN;
	g->sample_per_row = NAN;
}

void zm_granauto_input_init(struct zm_granauto_input *in)
{
	memset(in, 0, sizeof(*in));
	in->sample_ms_per_row = NAN;
	in->last_ms = NAN;
	in->allowed[ZM_GRAN_FULL] = true;
}

/* Total variation distance of two weight vectors of k models. */
static double tv(const double *a, const double *b, size_t k)
{
	double s = 0;
	size_t i;

	for (i = 0; i < k; i++)
		s += fabs(a[i] - b[i]);
	return s / 2;
}

/* Index of the largest of k weights and whether it leads the runner-up
 * by more than a tie. */
static size_t top(const double *w, size_t k, bool *clear)
{
	size_t i, best = 0;
	double second = -1;

	for (i = 1; i < k; i++)
		if (w[i] > w[best])
			best = i;
	for (i = 0; i < k; i++)
		if (i != best && w[i] > second)
			second = w[i];
	*clear = k < 2 || w[best] - second > ZM_GRANAUTO_TIE;
	return best;
}

/* Whether unit weights differ from a reference in their clear leader. */
static bool ranks_differ(const double *w, const double *ref, size_t k)
{
	bool cw, cr;
	size_t a = top(w, k, &cw), b = top(ref, k, &cr);

	return a != b && cw && cr;
}

double zm_granauto_estimate(const struct zm_granauto *g,
                            enum zm_gran_level level, size_t rows,
                            double sample_ms_per_row)
{
	double r = g->ms_per_row[level];

	if (isnan(sample_ms_per_row))
		sample_ms_per_row = g->sample_per_row;
	else if (!isnan(g->sample_per_row))
		sample_ms_per_row = (1 - ZM_GRANAUTO_EMA) * g->sample_per_row +
		                    ZM_GRANAUTO_EMA * sample_ms_per_row;
	if (isnan(r) && level == ZM_GRAN_LAYER)
		r = sample_ms_per_row;
	if (isnan(r) && level == ZM_GRAN_GROUP) {
		/* Between the two it lies: its weighting works on fewer
		 * units than the layer level's. */
		double f = g->ms_per_row[ZM_GRAN_FULL];
		double l = !isnan(g->ms_per_row[ZM_GRAN_LAYER]) ?
		           g->ms_per_row[ZM_GRAN_LAYER] : sample_ms_per_row;
		r = !isnan(f) && !isnan(l) ? (f + l) / 2 : l;
	}
	return isnan(r) ? NAN : r * (double)rows;
}

/* zm_granauto_upper, with the level's own spread or (own false) the
 * machine's. */
static double upper(const struct zm_granauto *g, enum zm_gran_level level,
                    size_t rows, double sample_ms_per_row, bool own)
{
	double m = zm_granauto_estimate(g, level, rows, sample_ms_per_row);
	double cv = ZM_GRANAUTO_SPREAD_UNKNOWN, sd;
	uint64_t most = 1;
	size_t l;

	if (own && g->measured[level] >= 2) {
		sd = sqrt(g->var_per_row[level]) * (double)rows;
	} else {
		/* The machine's noise, as the level timed most often saw
		 * it. */
		for (l = 0; l < ZM_GRANAUTO_LEVELS; l++)
			if (g->measured[l] > most && g->ms_per_row[l] > 0) {
				most = g->measured[l];
				cv = sqrt(g->var_per_row[l]) / g->ms_per_row[l];
			}
		sd = cv * m;
	}
	return m + ZM_GRANAUTO_SPREAD_Z * sd;
}

double zm_granauto_upper(const struct zm_granauto *g,
                         enum zm_gran_level level, size_t rows,
                         double sample_ms_per_row)
{
	return upper(g, level, rows, sample_ms_per_row, true);
}

/* Whether level fits the budget of in (see ZM_GRANAUTO_MARGIN): its
 * upper end, for a probe with the machine's spread rather than its own
 * (one slow batch may have raised that: it would never run again). */
static bool fits(const struct zm_granauto *g,
                 const struct zm_granauto_input *in, enum zm_gran_level level,
                 bool probe)
{
	double t = upper(g, level, in->rows, in->sample_ms_per_row, !probe);

	return !isnan(t) && t + in->sample_ms <=
	       ZM_GRANAUTO_MARGIN * in->budget_ms;
}

/* The measures of the batch's weights into c. */
static void measure(const struct zm_granauto *g,
                    const struct zm_granauto_input *in,
                    struct zm_granauto_choice *c, bool *rank_all,
                    bool *rank_within)
{
	size_t U = in->n_units, k = in->k, u, v, i, n;
	double mean[256], gm[256], h = 0;

	c->disagreement = c->within = c->heterogeneity = c->drift = NAN;
	*rank_all = *rank_within = false;
	if (!in->unit_w || U == 0 || k == 0 || k > 256)
		return;
	for (i = 0; i < k; i++) {
		double s = 0;
		for (u = 0; u < U; u++)
			s += in->unit_w[u * k + i];
		mean[i] = s / (double)U;
		if (mean[i] > 0)
			h -= mean[i] * log(mean[i]);
	}
	c->heterogeneity = k > 1 ? h / log((double)k) : 0;
	c->disagreement = c->within = 0;
	for (u = 0; u < U; u++) {
		const double *w = in->unit_w + u * k;
		double d = tv(w, mean, k);
		if (d > c->disagreement)
			c->disagreement = d;
		if (ranks_differ(w, mean, k))
			*rank_all = true;
		/* The mean of the unit's group. */
		for (i = 0; i < k; i++)
			gm[i] = 0;
		for (v = 0, n = 0; v < U; v++) {
			if (!in->unit_group ||
			    in->unit_group[v] != in->unit_group[u])
				continue;
			for (i = 0; i < k; i++)
				gm[i] += in->unit_w[v * k + i];
			n++;
		}
		for (i = 0; i < k && n; i++)
			gm[i] /= (double)n;
		if (!in->unit_group)
			memcpy(gm, w, k * sizeof(double));
		d = tv(w, gm, k);
		if (d > c->within)
			c->within = d;
		if (ranks_differ(w, gm, k))
			*rank_within = true;
	}
	if (g->prev_k == k)
		c->drift = tv(mean, g->prev_mean, k);
}

/* The rules of zoomerge-granularity-rules(5) on the batch's metrics. */
static bool by_rules(const struct zm_granauto *g,
                     const struct zm_granauto_input *in,
                     const struct zm_granauto_choice *c,
                     enum zm_gran_level *level, char *why, size_t nwhy)
{
	struct zm_gc_values v;
	struct zm_buf b;
	size_t r;

	zm_gc_values_init(&v);
	if (!isnan(c->disagreement)) {
		v.v[ZM_GC_AGREEMENT] = 1 - c->disagreement;
		v.v[ZM_GC_AGREEMENT_MIN] = 1 - c->disagreement;
		v.v[ZM_GC_AGREEMENT_MAX] = 1 - c->within;
		v.v[ZM_GC_AGREEMENT_SPREAD] = c->disagreement - c->within > 0 ?
		                              c->disagreement - c->within : 0;
	}
	v.v[ZM_GC_DRIFT] = c->drift;
	v.v[ZM_GC_DATA_DRIFT] = c->drift;
	v.v[ZM_GC_LATENCY_MS] = in->last_ms;
	v.v[ZM_GC_LATENCY_FULL_MS] = zm_granauto_estimate(g, ZM_GRAN_FULL,
	                             in->rows, in->sample_ms_per_row);
	v.v[ZM_GC_LATENCY_GROUP_MS] = zm_granauto_estimate(g, ZM_GRAN_GROUP,
	                              in->rows, in->sample_ms_per_row);
	v.v[ZM_GC_LATENCY_LAYER_MS] = zm_granauto_estimate(g, ZM_GRAN_LAYER,
	                              in->rows, in->sample_ms_per_row);
	v.v[ZM_GC_MODELS] = (double)in->k;
	for (r = 0; r < in->rules->n_rules; r++) {
		if (!zm_gc_cond_eval(&in->rules->rules[r].when, &v))
			continue;
		*level = in->rules->rules[r].level;
		zm_buf_init(&b);
		zm_gc_cond_format(&in->rules->rules[r].when, &b);
		snprintf(why, nwhy, "rule %zu: %s", r + 1,
		         b.failed || !b.data ? "?" : b.data);
		zm_buf_release(&b);
		return true;
	}
	if (in->rules->has_default) {
		*level = in->rules->dflt;
		snprintf(why, nwhy, "rules: no rule holds, default");
		return true;
	}
	return false;
}

void zm_granauto_decide(const struct zm_granauto *g,
                        const struct zm_granauto_input *in,
                        struct zm_granauto_choice *c)
{
	enum zm_gran_level want = ZM_GRAN_FULL, l;
	bool rank_all, rank_within;
	double tau;
	char why[160];
	const char *sys = "";
	size_t i;

	memset(c, 0, sizeof(*c));
	measure(g, in, c, &rank_all, &rank_within);
	tau = ZM_GRANAUTO_TAU;
	if (!isnan(c->heterogeneity))
		tau *= 1 - ZM_GRANAUTO_HET_WEIGHT * c->heterogeneity;
	if (in->rules && by_rules(g, in, c, &want, why, sizeof(why))) {
		;
	} else if (in->units_same) {
		want = ZM_GRAN_FULL;
		snprintf(why, sizeof(why), "the weighting gives every unit the "
		         "same weights");
	} else if (isnan(c->disagreement)) {
		want = in->has_prior ? in->prior : ZM_GRAN_FULL;
		snprintf(why, sizeof(why), "%s", in->has_prior ?
		         "no weights measured: the prior" :
		         "no weights measured");
	} else if (!rank_all && c->disagreement <= tau) {
		want = ZM_GRAN_FULL;
		snprintf(why, sizeof(why), "units agree (%.3f <= %.3f)",
		         c->disagreement, tau);
	} else if (!rank_within && c->within <= tau) {
		want = ZM_GRAN_GROUP;
		snprintf(why, sizeof(why), "groups disagree (%.3f), layers "
		         "within agree (%.3f <= %.3f)", c->disagreement,
		         c->within, tau);
	} else {
		want = ZM_GRAN_LAYER;
		snprintf(why, sizeof(why), "layers disagree (%.3f > %.3f%s)",
		         c->within, tau, rank_within ? ", ranks differ" : "");
	}
	/* The finest allowed level not finer than the wish. */
	while (want > ZM_GRAN_FULL && !in->allowed[want])
		want--;
	if (in->saturated && want > ZM_GRAN_FULL) {
		want--;
		sys = "; machine saturated: one level coarser";
	}
	l = want;
	if (in->budget_ms > 0) {
		/* A level not yet measured does not fit: the first batches
		 * run at the cheapest level until the sample or a probe
		 * gives an estimate. */
		while (l > ZM_GRAN_FULL && !fits(g, in, l, false))
			l--;
		if (l != want)
			sys = "; over the budget: coarser";
	}
	c->level = l;
	/* A level not measured for a while runs once, where it fits the
	 * budget; not where the weights make every level the same.  Under
	 * a budget not a level finer than the input asks for: its cost
	 * would change nothing now, and the probe would risk the budget. */
	if (g->batches > 0 && !in->units_same)
		for (i = 0; i < ZM_GRANAUTO_LEVELS; i++) {
			if (i == (size_t)l || !in->allowed[i] ||
			    g->batches + 1 - g->last_run[i] <
			    ZM_GRANAUTO_PROBE_EVERY)
				continue;
			if (in->budget_ms > 0 && i != ZM_GRAN_FULL &&
			    (i > (size_t)want ||
			     !fits(g, in, (enum zm_gran_level)i, true)))
				continue;
			c->level = (enum zm_gran_level)i;
			c->probe = true;
			break;
		}
	c->estimate_ms = zm_granauto_estimate(g, c->level, in->rows,
	                                      in->sample_ms_per_row);
	if (c->probe)
		snprintf(c->why, sizeof(c->why), "probe: cost of %s not "
		         "measured for %d batches (wanted %s: %s%s)",
		         zm_gran_level_name(c->level), ZM_GRANAUTO_PROBE_EVERY,
		         zm_gran_level_name(l), why, sys);
	else
		snprintf(c->why, sizeof(c->why), "%s%s", why, sys);
}

void zm_granauto_observe(struct zm_granauto *g,
                         const struct zm_granauto_input *in,
                         const struct zm_granauto_choice *c, size_t rows,
                         double ms)
{
	double r, d, *e = &g->ms_per_row[c->level];
	double *v = &g->var_per_row[c->level];
	size_t i, u;

	g->batches++;
	g->used[c->level]++;
	if (c->probe)
		g->probes++;
	if (g->has_last && g->last != c->level)
		g->switches++;
	g->has_last = true;
	g->last = c->level;
	g->last_run[c->level] = g->batches;
	if (in->budget_ms > 0 && ms + in->sample_ms > in->budget_ms)
		g->over_budget++;
	if (rows > 0 && ms >= 0 && isfinite(ms)) {
		r = ms / (double)rows;
		/* The exponentially weighted mean and variance; the first
		 * batch of a run (or one after the state file's mean)
		 * starts the variance. */
		if (isnan(*e)) {
			*e = r;
			*v = 0;
		} else {
			d = r - *e;
			if (g->measured[c->level] == 0)
				*v = d * d;
			else
				*v = (1 - ZM_GRANAUTO_EMA) *
				     (*v + ZM_GRANAUTO_EMA * d * d);
			*e += ZM_GRANAUTO_EMA * d;
		}
		g->measured[c->level]++;
	}
	if (isfinite(in->sample_ms_per_row) && in->sample_ms_per_row >= 0)
		g->sample_per_row = isnan(g->sample_per_row) ?
		                    in->sample_ms_per_row :
		                    (1 - ZM_GRANAUTO_EMA) * g->sample_per_row +
		                    ZM_GRANAUTO_EMA * in->sample_ms_per_row;
	if (in->unit_w && in->n_units && in->k && in->k <= 256) {
		for (i = 0; i < in->k; i++) {
			double s = 0;
			for (u = 0; u < in->n_units; u++)
				s += in->unit_w[u * in->k + i];
			g->prev_mean[i] = s / (double)in->n_units;
		}
		g->prev_k = in->k;
	}
}

bool zm_granauto_parse_line(struct zm_granauto *g, const char *line,
                            size_t len, enum zm_status *st,
                            struct zm_error *err)
{
	char buf[96], name[16], *end;
	enum zm_gran_level l;
	double v;
	int off = 0;

	*st = ZM_OK;
	if (len < 5 || strncmp(line, "cost ", 5) != 0)
		return false;
	if (len < sizeof(buf)) {
		memcpy(buf, line, len);
		buf[len] = '\0';
	}
	if (len >= sizeof(buf) ||
	    sscanf(buf, "cost %15s %n", name, &off) != 1 || off == 0 ||
	    !zm_gran_level_parse(name, &l)) {
		*st = zm_error_set(err, ZM_ERR_FORMAT, "malformed cost line "
		                   "(expected 'cost full|group|layer "
		                   "MS_PER_ROW')");
		return true;
	}
	v = strtod(buf + off, &end);
	if (end == buf + off || *end != '\0' || !isfinite(v) || v < 0) {
		*st = zm_error_set(err, ZM_ERR_FORMAT, "cost of %s: expected a "
		                   "finite number >= 0, got '%s'", name,
		                   buf + off);
		return true;
	}
	g->ms_per_row[l] = v;
	return true;
}

void zm_granauto_format(const struct zm_granauto *g, struct zm_buf *b)
{
	size_t l;

	for (l = 0; l < ZM_GRANAUTO_LEVELS; l++)
		if (!isnan(g->ms_per_row[l]))
			zm_buf_printf(b, "cost %s %.9g\n",
			              zm_gran_level_name((enum zm_gran_level)l),
			              g->ms_per_row[l]);
}

/* The first line of predict's state file (weighting.h). */
#define STATE_MAGIC "zoomerge-predict-state 1"
#define STATE_MAX_BYTES (16u << 20)

enum zm_status zm_granauto_state_load(struct zm_granauto *g, const char *path,
                                      char **keep, struct zm_error *err)
{
	char *data = NULL;
	size_t len = 0;
	enum zm_status st;

	*keep = NULL;
	st = zm_read_file(path, STATE_MAX_BYTES, &data, &len, err);
	if (st == ZM_OK)
		st = zm_granauto_state_parse(g, data, len, path, keep, err);
	free(data);
	return st;
}

enum zm_status zm_granauto_state_parse(struct zm_granauto *g,
                                       const char *data, size_t len,
                                       const char *path, char **keep,
                                       struct zm_error *err)
{
	const char *line, *nl;
	size_t lineno = 0, ll;
	struct zm_buf b;
	enum zm_status st = ZM_OK;

	*keep = NULL;
	zm_buf_init(&b);
	for (line = data; st == ZM_OK && line < data + len; line += ll + 1) {
		nl = memchr(line, '\n', (size_t)(data + len - line));
		ll = nl ? (size_t)(nl - line) : (size_t)(data + len - line);
		lineno++;
		if (memchr(line, '\0', ll)) {
			st = zm_error_set(err, ZM_ERR_FORMAT, "%s:%zu: NUL byte",
			                  path, lineno);
		} else if (lineno == 1) {
			if (ll != strlen(STATE_MAGIC) ||
			    memcmp(line, STATE_MAGIC, ll) != 0)
				st = zm_error_set(err, ZM_ERR_FORMAT, "%s:1: not a "
				                  "predict state file (expected "
				                  "'%s')", path, STATE_MAGIC);
		} else if (zm_granauto_parse_line(g, line, ll, &st, err)) {
			if (st != ZM_OK)
				zm_error_prefix(err, "%s:%zu: ", path, lineno);
		} else if (ll > 0) {
			/* The Hedge scores, for a run with --feedback. */
			zm_buf_append(&b, line, ll);
			zm_buf_puts(&b, "\n");
		}
		if (!nl)
			break;
	}
	if (st == ZM_OK && lineno == 0)
		st = zm_error_set(err, ZM_ERR_FORMAT, "%s: empty state file",
		                  path);
	if (st == ZM_OK && b.failed)
		st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	if (st == ZM_OK && b.len) {
		*keep = b.data;
		return ZM_OK;
	}
	zm_buf_release(&b);
	return st;
}

enum zm_status zm_granauto_state_save(const struct zm_granauto *g,
                                      const char *path, const char *keep,
                                      struct zm_error *err)
{
	struct zm_buf b;
	enum zm_status st;

	zm_buf_init(&b);
	zm_buf_printf(&b, "%s\n", STATE_MAGIC);
	if (keep)
		zm_buf_puts(&b, keep);
	zm_granauto_format(g, &b);
	if (b.failed) {
		zm_buf_release(&b);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	st = zm_write_file_atomic(path, b.data, b.len, err);
	zm_buf_release(&b);
	return st;
}
