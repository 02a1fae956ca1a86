/*
 * The granularity controller of inference (predict --granularity auto):
 * before each batch it picks the level at which the models are merged --
 * full, group or layer -- from three things (predict(1) documents the
 * rule and its constants):
 *
 *   the input     the weights every layer unit of the batch gets (measured
 *                 on a sample of the batch at the layer level): when every
 *                 unit puts the same model first and no unit's weights lie
 *                 farther than tau (total variation) from the mean over
 *                 units, one weight per model loses nothing: full; when
 *                 units differ only between layer groups: group; else
 *                 layer.  tau shrinks on heterogeneous batches (the
 *                 normalised entropy of the batch's mean weights), where
 *                 per-unit weights matter most;
 *   the machine   a running estimate of the cost per row of each level
 *                 and of its spread, refreshed by probing a level not run
 *                 for a while; under a latency budget the finest level
 *                 whose upper end (mean + 2 deviations) fits wins, a level
 *                 without an estimate never does, and a saturated machine
 *                 (load average >= CPUs) takes one level coarser;
 *   a prior       the level of a granctl decision, used while the input
 *                 says nothing, and the rules of
 *                 zoomerge-granularity-rules(5) evaluated per batch on the
 *                 batch's metrics (agreement, drift, latency_ms, ...): a
 *                 rule that holds decides.
 *
 * zm_granauto_decide is pure (unit-tested); zm_granauto_ctl (predauto.c)
 * drives it from predict's batch loop.
 */
#ifndef ZM_GRANAUTO_H
#define ZM_GRANAUTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "granctl.h"
#include "granularity.h"

/* Units agree when no unit's weights lie farther than this (total
 * variation distance, in [0, 1]) from the mean over units. */
#define ZM_GRANAUTO_TAU 0.15
/* A batch whose mean weights are spread evenly (heterogeneity 1) lowers
 * tau by this fraction. */
#define ZM_GRANAUTO_HET_WEIGHT 0.25
/* A unit ranks a model first only when it leads the runner-up by more
 * than this: near-even weights rank nothing. */
#define ZM_GRANAUTO_TIE 0.10
/* Weight of the newest batch in the running cost per row. */
#define ZM_GRANAUTO_EMA 0.25
/* A level not measured for this many batches is run once (a probe). */
#define ZM_GRANAUTO_PROBE_EVERY 32
/* Under a budget a level fits when the upper end of its batch time, its
 * running mean plus this many running standard deviations (the newest
 * batch weighing ZM_GRANAUTO_EMA), and the sample's time, are at most
 * ZM_GRANAUTO_MARGIN of the budget.  A level with fewer than two batches
 * timed in this run has no spread of its own: it takes the relative
 * spread (deviation over mean) of the level timed most often, the
 * machine's noise, or this share of its mean before any.  A level with
 * no estimate at all never fits (full, the cheapest, is the floor). */
#define ZM_GRANAUTO_MARGIN 0.9
#define ZM_GRANAUTO_SPREAD_Z 2.0
#define ZM_GRANAUTO_SPREAD_UNKNOWN 0.5
/* Rows of the batch the layer-level weights are measured on: a
 * sixteenth of it, at least 16 and at most 64. */
#define ZM_GRANAUTO_SAMPLE_ROWS 64
#define ZM_GRANAUTO_SAMPLE_MIN 16
#define ZM_GRANAUTO_SAMPLE_SHARE 16

#define ZM_GRANAUTO_LEVELS 3

/* What the controller has learnt over the batches. */
struct zm_granauto {
	double ms_per_row[ZM_GRANAUTO_LEVELS];  /* NaN: not measured */
	double var_per_row[ZM_GRANAUTO_LEVELS]; /* running variance of it */
	uint64_t measured[ZM_GRANAUTO_LEVELS];  /* batches timed this run */
	double sample_per_row;                  /* running cost per row of
	                                         * the samples; NaN none */
	uint64_t last_run[ZM_GRANAUTO_LEVELS];  /* batch last run, 0: never */
	uint64_t used[ZM_GRANAUTO_LEVELS];      /* batches per level */
	uint64_t batches, probes, over_budget, switches;
	bool has_last;
	enum zm_gran_level last;
	double prev_mean[256];                  /* last batch's mean weights */
	size_t prev_k;                          /* 0: none yet */
};

void zm_granauto_init(struct zm_granauto *g);

/* One batch's inputs to the decision (all borrowed). */
struct zm_granauto_input {
	const double *unit_w;      /* [n_units, k] mean weights per layer unit,
	                            * or NULL: no evidence */
	size_t n_units, k;         /* k <= 256 */
	const size_t *unit_group;  /* [n_units] layer group of each unit */
	size_t rows;               /* rows of the batch */
	double sample_ms_per_row;  /* the layer level on the sample; NaN none */
	double sample_ms;          /* what measuring the sample took */
	double budget_ms;          /* 0: none */
	bool saturated;            /* load average >= online CPUs */
	double last_ms;            /* the previous batch's time, NaN none */
	bool units_same;           /* the weighting gives every unit the same
	                            * weights (it reads only the input) */
	const struct zm_gc_rules *rules;  /* NULL: none */
	bool has_prior;
	enum zm_gran_level prior;
	bool allowed[ZM_GRANAUTO_LEVELS]; /* levels the run can merge at */
};

void zm_granauto_input_init(struct zm_granauto_input *in);

/* The decision and what it was made from. */
struct zm_granauto_choice {
	enum zm_gran_level level;
	double disagreement;   /* max over units of TV to the mean; NaN none */
	double within;         /* max over units of TV to their group's mean */
	double heterogeneity;  /* normalised entropy of the mean weights */
	double drift;          /* TV of the mean weights to the last batch's */
	double estimate_ms;    /* the level's expected batch time, NaN unknown */
	bool probe;
	char why[320];
};

/*
 * Decides the level of one batch (pure: g is not changed).  Never picks
 * a level that in->allowed excludes; full is always allowed.
 */
void zm_granauto_decide(const struct zm_granauto *g,
                        const struct zm_granauto_input *in,
                        struct zm_granauto_choice *c);

/* Records that the batch ran at c->level in ms milliseconds over rows
 * rows (the running cost, counts, the mean weights for drift). */
void zm_granauto_observe(struct zm_granauto *g,
                         const struct zm_granauto_input *in,
                         const struct zm_granauto_choice *c, size_t rows,
                         double ms);

/* The expected time of a batch of rows at level (NaN unknown) from the
 * running estimates and the sample's cost (this batch's, weighing
 * ZM_GRANAUTO_EMA against the earlier samples': one sample is small and
 * noisy). */
double zm_granauto_estimate(const struct zm_granauto *g,
                            enum zm_gran_level level, size_t rows,
                            double sample_ms_per_row);

/* The upper end of it that a budget is held against (the mean plus
 * ZM_GRANAUTO_SPREAD_Z standard deviations, see above); NaN unknown. */
double zm_granauto_upper(const struct zm_granauto *g,
                         enum zm_gran_level level, size_t rows,
                         double sample_ms_per_row);

/* ---- the state file ---- */

/*
 * The cost lines kept in predict's --state file next to the Hedge
 * scores: "cost LEVEL MS_PER_ROW" per measured level.  zm_granauto_parse_line
 * returns true and sets the estimate when line (NUL-free, without its
 * newline) is one, false when it is not a cost line at all; a cost line
 * that is malformed gives ZM_ERR_FORMAT in *st.
 */
bool zm_granauto_parse_line(struct zm_granauto *g, const char *line,
                            size_t len, enum zm_status *st,
                            struct zm_error *err);

/* Appends the cost lines of g (nothing for unmeasured levels). */
void zm_granauto_format(const struct zm_granauto *g, struct zm_buf *b);

/*
 * Reads the cost lines of predict's state file at path into g; the other
 * lines but the first (the Hedge scores of a --feedback run) go to *keep
 * (new memory the caller frees, NULL when none) so that
 * zm_granauto_state_save writes them back.  ZM_ERR_FORMAT "PATH:LINE: ..."
 * for a file that is not a state file or a malformed cost line; the
 * errors of zm_read_file.
 */
enum zm_status zm_granauto_state_load(struct zm_granauto *g, const char *path,
                                      char **keep, struct zm_error *err);
/* The same for the file's bytes (path names it in messages); on failure
 * *keep is NULL and g may hold some of the estimates. */
enum zm_status zm_granauto_state_parse(struct zm_granauto *g,
                                       const char *data, size_t len,
                                       const char *path, char **keep,
                                       struct zm_error *err);

/* Writes the state file atomically: its first line, keep (may be NULL),
 * the cost lines of g. */
enum zm_status zm_granauto_state_save(const struct zm_granauto *g,
                                      const char *path, const char *keep,
                                      struct zm_error *err);

/* ---- the driver ---- */

struct zm_predictor;
struct zm_predict_options;

/*
 * Whether predictions with options po give every layer unit the same
 * weights: weights from the input alone (density, router, uniform) and
 * the Hedge scores, without the adaptation's per-unit offsets.  Then
 * every level merges alike, auto runs the full level and measures
 * nothing, and (without rules, which may ask for another level) needs no
 * predictor at the other levels.
 */
bool zm_granauto_units_same(const struct zm_predict_options *po);

/* The controller inside predict's batch loop: one predictor per level
 * (borrowed; NULL where the run cannot merge at that level). */
struct zm_granauto_ctl {
	struct zm_predictor *pred[ZM_GRANAUTO_LEVELS];
	struct zm_granauto g;
	struct zm_granauto_input in;
	struct zm_granauto_choice c;
	size_t *unit_group;        /* owned [n_units of the layer level] */
	float *sample;             /* owned sample scores */
	double t0, sample_ms;
	double last_ms;
	bool use_loadavg;
	char extra[400];           /* the trace columns of the last batch */
	uint64_t n_within;         /* batches within the budget */
	char *state_keep;          /* owned: the state file's other lines */
};

/*
 * Sets up ctl over the predictors (pred[ZM_GRAN_FULL] required; the
 * other two may be NULL); rules and prior as in zm_granauto_input.
 * Release with zm_granauto_ctl_release.
 */
enum zm_status zm_granauto_ctl_init(struct zm_granauto_ctl *ctl,
                                    struct zm_predictor *const *pred,
                                    double budget_ms, bool use_loadavg,
                                    const struct zm_gc_rules *rules,
                                    bool has_prior, enum zm_gran_level prior,
                                    struct zm_error *err);
void zm_granauto_ctl_release(struct zm_granauto_ctl *ctl);

/*
 * Before a batch of n rows of x: measures the sample, decides, and
 * returns the predictor to run the batch with in *use.  Fails only with
 * ZM_ERR_NOMEM.
 */
enum zm_status zm_granauto_ctl_begin(struct zm_granauto_ctl *ctl,
                                     const float *x, size_t n,
                                     struct zm_predictor **use,
                                     struct zm_error *err);

/* After the batch: its time goes into the estimates, and the trace
 * columns (level, ms, why) into ctl->extra. */
void zm_granauto_ctl_end(struct zm_granauto_ctl *ctl, size_t n);

/* Appends the summary of --explain: batches per level, probes, switches,
 * the cost estimates, batches over the budget. */
void zm_granauto_ctl_explain(const struct zm_granauto_ctl *ctl,
                             struct zm_buf *b);

#endif
