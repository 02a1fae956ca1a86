/*
 * The granularity controller (granctl): turns what is known about training
 * -- progress logs, the data's drift, how much the models' updates agree,
 * and the measured cost of each level -- into a granularity decision
 * (granularity.h): the level and, for every unit of it, whether the models
 * that trained on a common slice share the averaged delta or keep their own.
 *
 * Metrics (zoomerge-granularity-rules(5) is the reference; NaN means "not
 * known", and a condition on an unknown metric is false):
 *   loss_slope     per model: slope of the least-squares line through the
 *                  last window (step, loss) points of its log, divided by
 *                  their mean loss (relative change per step); the mean over
 *                  models
 *   val_gap        val_loss - train_loss at a model's last epoch end; the
 *                  largest over models
 *   epochs         epoch ends seen; the smallest over models
 *   loss, val_acc  the last epoch end's train_loss / val_acc, mean over models
 *   slice_drift    mean over pairs of distinct slices of the drift between
 *                  their data profiles (the input entries of the update
 *                  documents)
 *   model_drift    mean over updates of the drift between the data profile
 *                  and the zoo model's profile
 *   data_drift     the drift of the --data batch to its nearest model
 *   drift          the largest of the three
 *     where the drift of a similarity s (similarity.h, the code of assign)
 *     is 1 - s for cosine and -s for kl and mahalanobis (0: identical;
 *     mahalanobis, which is not symmetric, is averaged over both orders
 *     between slices)
 *   agreement      per unit (see below); globally the full level's unit
 *   agreement_min, agreement_max
 *                  over the layer-level units that have parameters
 *   agreement_spread  agreement_max - agreement_min
 *   delta_norm     per unit: |delta| / |theta| (theta: the zoo model's
 *                  current parameters of the unit), mean over updates
 *                  weighted by weight x samples; globally the full level's
 *   latency_full_ms, latency_group_ms, latency_layer_ms, memory_full_mib,
 *   memory_group_mib, memory_layer_mib
 *                  measured cost of predict at each level
 *   latency_ms, memory_mib  the largest measured cost over the levels
 *   models, updates, slices  counts of the inputs
 *
 * Agreement of a unit.  When some slice was trained by two or more models,
 * the pairs are every two updates of one slice from different models,
 * weighted by sqrt(w_a n_a w_b n_b) (w: zm.weight, n: zm.samples); the
 * agreement is the weighted mean of the cosines of the pairs' deltas
 * restricted to the unit's parameters.  Otherwise (no shared slice) each
 * model's delta is the FedAvg average of its updates (weights w n, as merge
 * computes it) and the pairs are every two models, weighted by
 * sqrt(W_a W_b) with W the model's total w n.  A pair where either delta is
 * zero on the unit is left out; a unit without pairs has no agreement.
 */
#ifndef ZM_GRANCTL_H
#define ZM_GRANCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "error.h"
#include "granularity.h"
#include "json.h"
#include "model.h"
#include "profile.h"
#include "similarity.h"
#include "stream.h"

enum zm_gc_metric {
	ZM_GC_LOSS_SLOPE,
	ZM_GC_VAL_GAP,
	ZM_GC_EPOCHS,
	ZM_GC_LOSS,
	ZM_GC_VAL_ACC,
	ZM_GC_DRIFT,
	ZM_GC_SLICE_DRIFT,
	ZM_GC_MODEL_DRIFT,
	ZM_GC_DATA_DRIFT,
	ZM_GC_AGREEMENT,
	ZM_GC_AGREEMENT_MIN,
	ZM_GC_AGREEMENT_MAX,
	ZM_GC_AGREEMENT_SPREAD,
	ZM_GC_DELTA_NORM,
	ZM_GC_LATENCY_MS,
	ZM_GC_MEMORY_MIB,
	ZM_GC_LATENCY_FULL_MS,
	ZM_GC_LATENCY_GROUP_MS,
	ZM_GC_LATENCY_LAYER_MS,
	ZM_GC_MEMORY_FULL_MIB,
	ZM_GC_MEMORY_GROUP_MIB,
	ZM_GC_MEMORY_LAYER_MIB,
	ZM_GC_MODELS,
	ZM_GC_UPDATES,
	ZM_GC_SLICES,
	ZM_GC_N_METRICS
};

/* The metric's name as written in rules; never NULL for a valid metric. */
const char *zm_gc_metric_name(enum zm_gc_metric m);
bool zm_gc_metric_parse(const char *s, enum zm_gc_metric *out);

/* Metric values; NaN when unknown. */
struct zm_gc_values {
	double v[ZM_GC_N_METRICS];
};

/* Sets every value to NaN. */
void zm_gc_values_init(struct zm_gc_values *vals);

enum zm_gc_op { ZM_GC_GT, ZM_GC_GE, ZM_GC_LT, ZM_GC_LE, ZM_GC_EQ, ZM_GC_NE };

/* ">", ">=", "<", "<=", "==", "!=". */
const char *zm_gc_op_name(enum zm_gc_op op);
bool zm_gc_op_parse(const char *s, enum zm_gc_op *out);
/* a OP b; false whenever a or b is NaN (an unknown metric never matches,
 * not even with !=). */
bool zm_gc_compare(double a, enum zm_gc_op op, double b);

/* ---- rules ---- */

enum zm_gc_cond_kind { ZM_GC_COND_CMP, ZM_GC_COND_ALL, ZM_GC_COND_ANY };

/* A condition: {metric, op, value}, {all: [...]} or {any: [...]}. */
struct zm_gc_cond {
	enum zm_gc_cond_kind kind;
	enum zm_gc_metric metric;
	enum zm_gc_op op;
	double value;
	struct zm_gc_cond *items;    /* owned [n_items], all/any */
	size_t n_items;
	int line, col;
};

/* True when cond holds for vals; all of nothing is true, any of nothing
 * false. */
bool zm_gc_cond_eval(const struct zm_gc_cond *cond,
                     const struct zm_gc_values *vals);

/* Appends cond as text ("drift > 0.5", "all(a > 1, b < 2)"). */
void zm_gc_cond_format(const struct zm_gc_cond *cond, struct zm_buf *b);

struct zm_gc_rule {
	struct zm_gc_cond when;
	enum zm_gran_level level;
	int line, col;
};

/* The rules file (zoomerge-granularity-rules(5)). */
struct zm_gc_rules {
	struct zm_gc_rule *rules;     /* owned [n_rules], first match wins */
	size_t n_rules;
	bool has_default;
	enum zm_gran_level dflt;
	bool has_share;
	struct zm_gc_cond share;      /* per-unit sharing rule */
};

void zm_gc_rules_init(struct zm_gc_rules *r);
void zm_gc_rules_release(struct zm_gc_rules *r);

/*
 * Reads rules from a parsed tree into r (released first).  Unknown keys,
 * metrics, operators or levels, a value that is no number, a rule without
 * when or level, and all/any that are no list give ZM_ERR_CONFIG with
 * "SOURCE:LINE:COL: ...".  On failure r is left empty.
 */
enum zm_status zm_gc_rules_parse(const struct zm_node *root,
                                 struct zm_gc_rules *r, struct zm_error *err);
/* Loads path ("-": stdin) and parses it; errors as above and as
 * zm_config_load. */
enum zm_status zm_gc_rules_load(const char *path, struct zm_gc_rules *r,
                                struct zm_error *err);

/* ---- inputs ---- */

/* One model's training log. */
struct zm_gc_log {
	char *model;                 /* owned */
	double *step, *loss;         /* owned [n_points] */
	size_t n_points, cap;
	size_t epochs;               /* epoch_end lines seen */
	double train_loss, val_loss, val_acc;   /* last epoch end; NaN unknown */
};

/* One update document, reduced to what the controller uses. */
struct zm_gc_update {
	char *model, *slice;         /* owned; slice NULL when absent */
	double weight, samples;
	float **delta;               /* owned [n_layers]: weight then bias
	                                (NULL for parameterless layers) */
	struct zm_profile profile;   /* data trained on; empty when absent */
};

/* A zoo model the updates or the data refer to. */
struct zm_gc_model {
	char *name;                  /* owned */
	struct zm_model *model;      /* owned */
	struct zm_profile profile;   /* empty when the model has none */
};

struct zm_gc_inputs {
	struct zm_arch *arch;        /* owned: the first model's */
	struct zm_gc_model *models;  /* owned [n_models] */
	size_t n_models;
	struct zm_gc_update *updates;/* owned [n_updates] */
	size_t n_updates;
	struct zm_gc_log *logs;      /* owned [n_logs] */
	size_t n_logs;
	bool has_data;
	struct zm_profile data;      /* the --data sample's profile */
	/* Measured costs per level (index enum zm_gran_level); NaN unknown. */
	double latency_ms[3], memory_mib[3];
};

void zm_gc_inputs_init(struct zm_gc_inputs *in);
void zm_gc_inputs_release(struct zm_gc_inputs *in);

/*
 * Adds a model (copied; name may differ from model->name when NULL there)
 * unless one of that name is already in.  Its arch must match the first
 * model's (zm_model_same_arch: ZM_ERR_DATA).  The profile is read from
 * model->extra when present.
 */
enum zm_status zm_gc_add_model(struct zm_gc_inputs *in, const char *name,
                               const struct zm_model *model,
                               struct zm_error *err);
/* The model called name, or NULL. */
const struct zm_gc_model *zm_gc_find_model(const struct zm_gc_inputs *in,
                                           const char *name);

/*
 * Adds an update document (zm.kind=update) of a model already added:
 * ZM_ERR_FORMAT naming source when zm.kind or zm.name is missing or wrong,
 * or a parameter delta is missing or has the wrong shape; ZM_ERR_NOTFOUND
 * for an unknown model; ZM_ERR_DATA for a non-finite delta or a negative
 * weight or sample count.  zm.weight and zm.samples default to 1.
 */
enum zm_status zm_gc_add_update(struct zm_gc_inputs *in,
                                const struct zm_doc *doc, const char *source,
                                struct zm_error *err);

/*
 * Adds the JSON lines of a train-step log (bytes, len; source names it in
 * messages).  Lines with a "model" and "loss" are points; those with
 * "epoch_end": true also carry the epoch's summary.  Empty lines are
 * skipped; a line that is not a JSON object, lacks model or loss, or has
 * a non-numeric value is ZM_ERR_FORMAT "SOURCE:LINE: ...".
 */
enum zm_status zm_gc_add_log(struct zm_gc_inputs *in, const char *bytes,
                             size_t len, const char *source,
                             struct zm_error *err);

/*
 * Adds the rows of a data document (zm_data_features: zm.scale applied)
 * to the --data profile.  Width mismatches with the models' input are
 * ZM_ERR_DATA.
 */
enum zm_status zm_gc_add_data(struct zm_gc_inputs *in,
                              const struct zm_doc *doc, const char *source,
                              struct zm_error *err);

/* ---- analysis and decision ---- */

struct zm_gc_opts {
	enum zm_metric metric;       /* drift metric; default cosine */
	size_t window;               /* loss_slope points; default 20 */
	double share_threshold;      /* share when agreement >= it; 0.5 */
	double drift_threshold;      /* finer above it; NaN: per metric
	                                (cosine 0.1, kl 1, mahalanobis 0.5) */
	enum zm_gran_level dflt;     /* level without evidence; group */
	double latency_budget_ms;    /* NaN: none */
	double memory_budget_mib;    /* NaN: none */
};

void zm_gc_opts_init(struct zm_gc_opts *o);
/* The drift threshold in effect for o (its default for the metric when
 * o->drift_threshold is NaN). */
double zm_gc_drift_threshold(const struct zm_gc_opts *o);

/* Per-unit metrics at one level. */
struct zm_gc_level_stats {
	struct zm_gran_units units;
	double *agreement;           /* owned [n_units]; NaN unknown */
	double *delta_norm;          /* owned [n_units]; NaN unknown */
	size_t *pairs;               /* owned [n_units]: pairs that entered */
};

struct zm_gc_analysis {
	struct zm_gc_values values;
	bool slice_pairs;            /* agreement from common-slice pairs */
	struct zm_gc_level_stats level[3];   /* by enum zm_gran_level */
	/* Lineage (lineage.h) of every two models, one line each; and the
	 * first pair that is not related ("" when all are): then no unit
	 * is shared, whatever the rules say. */
	struct zm_buf lineage;
	char unrelated[256];
};

void zm_gc_analysis_init(struct zm_gc_analysis *a);
void zm_gc_analysis_release(struct zm_gc_analysis *a);

/*
 * Computes every metric from in into a (released first).  Needs at least
 * one model (ZM_ERR_USAGE otherwise).  Errors: ZM_ERR_NOMEM, and
 * ZM_ERR_DATA from the similarity code when profiles have other widths.
 */
enum zm_status zm_gc_analyze(const struct zm_gc_inputs *in,
                             const struct zm_gc_opts *o,
                             struct zm_gc_analysis *a, struct zm_error *err);

/*
 * Decides the level and the sharing of every unit into d (released first)
 * from a, by rules when not NULL, else by the automatic policy (see
 * granctl(1)); then, when a budget is set and the chosen level's measured
 * cost exceeds it, steps coarser until a level fits (or full).  Every unit
 * of the level gets a reason, and d->reason says why the level.
 */
enum zm_status zm_gc_decide(const struct zm_gc_analysis *a,
                            const struct zm_gc_rules *rules,
                            const struct zm_gc_opts *o,
                            struct zm_gran_decision *d, struct zm_error *err);

/* Appends a readable table of the metrics and the decision's units. */
void zm_gc_explain(const struct zm_gc_analysis *a,
                   const struct zm_gran_decision *d, struct zm_buf *b);

/* ---- measuring predict ---- */

/*
 * Runs argv (argv[0] a path, or a name searched in PATH) as a child process
 * with stdin from /dev/null, stdout to /dev/null and stderr to a temporary
 * file in TMPDIR (default /tmp; removed at once, so nothing is left
 * behind), and measures its wall time (CLOCK_MONOTONIC) and peak resident
 * memory (ru_maxrss from wait4).  A child that cannot start, or exits
 * non-zero or by a signal, is ZM_ERR_IO naming argv[0] and quoting the
 * last line of its stderr.
 */
enum zm_status zm_gc_measure_child(char *const *argv, double *ms,
                                   double *mib, struct zm_error *err);

/* ---- inputs from files and a zoo ---- */

struct zm_zoo;

/*
 * Fills in from the zoo at zoo_dir (opened for reading, closed before
 * returning): the models named in models[n_models], then every update
 * stream of updates[n_updates] with the zoo models its documents name
 * (an error there is prefixed "PATH: document N: "; a stream without
 * documents is ZM_ERR_DATA, a failed train-step upstream rather than
 * nothing to weigh); with neither, every expert of the zoo (routers and
 * bases are not merged with the experts).
 */
enum zm_status zm_gc_read_zoo(struct zm_gc_inputs *in, const char *zoo_dir,
                              const char *const *models, size_t n_models,
                              const char *const *updates, size_t n_updates,
                              struct zm_error *err);
/* Adds the train-step log at path (zm_gc_add_log). */
enum zm_status zm_gc_read_log(struct zm_gc_inputs *in, const char *path,
                              struct zm_error *err);
/* Adds the data documents at path (zm_gc_add_data) until the profile
 * holds max_rows rows or more. */
enum zm_status zm_gc_read_data(struct zm_gc_inputs *in, const char *path,
                               uint64_t max_rows, struct zm_error *err);
/*
 * The predict installed beside the running program (called self, as
 * "granctl"): the directory of /proc/self/exe and the prefix of its name
 * before self (make install PROGRAM_PREFIX=zm- installs zm-granctl beside
 * zm-predict), written into buf (size bytes) and returned when it is
 * executable.  Otherwise the same name for a PATH search, with beside
 * (beside_size bytes) naming where it looked, or "" when it could not.
 */
const char *zm_gc_predict_program(const char *self, char *buf, size_t size,
                                  char *beside, size_t beside_size);
/*
 * Runs predict (the program at predict) over data at each level with the
 * inputs' models of the zoo at zoo_dir and fills in in->latency_ms and
 * in->memory_mib (zm_gc_measure_child).  A failure is prefixed "at the
 * LEVEL level: ".
 */
enum zm_status zm_gc_measure(struct zm_gc_inputs *in, const char *predict,
                             const char *zoo_dir, const char *data,
                             struct zm_error *err);

#endif
