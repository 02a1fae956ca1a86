/*
 * The dynamic weighting function of predict (DESIGN.md section 5, step 2):
 * for every batch, and for every unit of the granularity (the whole model,
 * a layer group, a layer), the weight w_i of each of the K models, per
 * batch or per row, summing to 1.
 *
 * Sources, combined in log space so one rule covers them all:
 *   similarity   s_i = similarity (zm_similarity, --metric) of the input
 *                the unit's first layer sees (the raw input at the full
 *                level, the merged h_{l-1} at the group and layer levels)
 *                to model i's profile entry for that layer;
 *                logit_i = s_i / T
 *   uniform      logit_i = 0
 *   router       r_i = sum_s p_s A[s, i], with p the router model's
 *                softmax over slices (its class j is slice j of the
 *                assignment, in file order) and A the assignment's
 *                weights; logit_i = log r_i
 *   router+similarity  logit_i = log r_i + s_i / T: the product of the
 *                two weightings, renormalised
 *   static       logit_i = log v_i, v from a weights file (merge's
 *                config format), resolved per layer
 *   density      logit_i = log p_i(x) / T: the log-likelihood of the row
 *                under model i's density of its training inputs (the PPCA
 *                of its profile, else a diagonal Gaussian; density.h), so
 *                that with T = 1 the weights are the Bayes posterior of
 *                "x comes from model i's data" under equal priors.  Per
 *                batch, the mean log-likelihood over the rows.  When no
 *                pair of models is distinguishable (every symmetric KL
 *                between their densities below ZM_DENSITY_KL_MIN plus what
 *                sampling noise alone gives: models of the same data), or
 *                a model has no profile and the weighting was not asked
 *                for explicitly, the log-likelihoods are 0: uniform
 *                weights, the static merge.
 * to each logit are added the model's prior (log of its zoo accuracy,
 * opt-in), its online Hedge score h_i (feedback; see below) and the
 * adaptation offset a_{u,i} of the unit (entropy adaptation).  The
 * weights are softmax(logits), cut to the top k (the rest zeroed and the
 * kept ones renormalised).  Models with weight 0 everywhere in a batch
 * are not evaluated where the weights are per batch.
 *
 * System load.  k starts at --top-k (0: all K).  With a latency budget B
 * (ms per batch), after every batch the measured cost per evaluated model
 * c = batch time / models evaluated sets k = max(1, floor(B / c)) for
 * the next batch; when the 1-minute load average is at least the number
 * of online CPUs (getloadavg), k is halved again (at least 1).
 *
 * Hedge.  After a labelled batch, h_i <- h_i - eta * loss_i, where loss_i
 * is the mean loss of the prediction with a share (the probe) of every
 * unit's weight moved to model i (zm_weighter_probe; predict.h), then
 * fixed share mixes a fraction of the weight uniformly back in
 * (zm_hedge_update), so the scores forget and stay bounded.  The state
 * file keeps h across runs (see zm_hedge_parse).
 */
#ifndef ZM_WEIGHTING_H
#define ZM_WEIGHTING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "assignment.h"
#include "config.h"
#include "error.h"
#include "granularity.h"
#include "model.h"
#include "profcache.h"
#include "profile.h"
#include "similarity.h"

enum zm_weighting {
	ZM_WEIGHTING_SIMILARITY,
	ZM_WEIGHTING_ROUTER,
	ZM_WEIGHTING_UNIFORM,
	ZM_WEIGHTING_STATIC,
	ZM_WEIGHTING_ROUTER_SIMILARITY,
	ZM_WEIGHTING_DENSITY
};

/* "similarity", "router", "uniform", "static", "router+similarity",
 * "density". */
const char *zm_weighting_name(enum zm_weighting w);
bool zm_weighting_parse(const char *s, enum zm_weighting *out);

/* ---- Hedge state ---- */

/*
 * The online scores of the models, by name.  In a file:
 *   zoomerge-predict-state 1
 *   batches N
 *   score NAME H
 * one score line per model (H finite, <= 0 after the shift), nothing
 * else; '#' lines are comments.
 */
struct zm_hedge {
	size_t k;
	char **names;        /* owned [k] owned names */
	double *score;       /* owned [k] log-weights h_i */
	uint64_t batches;    /* labelled batches seen */
};

void zm_hedge_init(struct zm_hedge *h);
void zm_hedge_release(struct zm_hedge *h);

/* Sets h to k models called names (copied) with scores 0. */
enum zm_status zm_hedge_reset(struct zm_hedge *h, const char *const *names,
                              size_t k, struct zm_error *err);

/*
 * Parses a state file's bytes into h (released first; empty on failure).
 * ZM_ERR_FORMAT "SOURCE:LINE: ..." for a wrong first line, an unknown
 * key, a malformed or non-finite number, a duplicate model, a name that
 * is no valid model name, or no score at all.
 */
enum zm_status zm_hedge_parse(const char *bytes, size_t len,
                              const char *source, struct zm_hedge *h,
                              struct zm_error *err);

/*
 * Reorders h to the models names[0..k): the same set of names, or
 * ZM_ERR_DATA ("state of other models": a foreign state file) naming the
 * first model that is missing or extra.  h is unchanged on failure.
 */
enum zm_status zm_hedge_match(struct zm_hedge *h, const char *const *names,
                              size_t k, const char *source,
                              struct zm_error *err);

/* Loads and validates path (zm_hedge_parse, then zm_hedge_match). */
enum zm_status zm_hedge_load(struct zm_hedge *h, const char *path,
                             const char *const *names, size_t k,
                             struct zm_error *err);

/* Writes h to path atomically (temporary file and rename). */
enum zm_status zm_hedge_save(const struct zm_hedge *h, const char *path,
                             struct zm_error *err);

/* Scores never fall below -ZM_HEDGE_SCORE_MIN (a weight ratio of e^-30:
 * negligible, yet a model can recover in a bounded number of rounds). */
#define ZM_HEDGE_SCORE_MIN 30.0

/* The default fixed-share rate of --feedback. */
#define ZM_HEDGE_SHARE_DEFAULT 0.1

/*
 * One round of fixed-share Hedge: h_i -= eta * loss[i]; then, with share
 * in [0, 1), the weights v = softmax(h) become (1 - share) v + share / k
 * (share 0: plain Hedge, which never forgets); then h is shifted so that
 * max h_i = 0 and clamped to >= -ZM_HEDGE_SCORE_MIN; batches++.
 */
void zm_hedge_update(struct zm_hedge *h, const double *loss, double eta,
                     double share);

/* ---- static weights ---- */

/*
 * Resolves a weights file (merge's config: models: [{model, weight}],
 * weight a number, a list interpolated linearly across the parameter
 * layers first to last, or a map of group or layer names, a layer name
 * winning over its group) into out [n_layers, k]: the weight of model i
 * at layer l, normalised over the models per layer.  Models of the run
 * that the file does not list get 0.  Other top-level keys (method,
 * base, parameters) are ignored.  ZM_ERR_CONFIG at line:col for a model
 * that is not in the run, a negative or non-finite weight, a map without
 * a weight for some layer, or a layer whose weights are all 0.
 */
enum zm_status zm_static_weights(const struct zm_node *root,
                                 const struct zm_arch *arch,
                                 const char *const *names, size_t k,
                                 double *out, struct zm_error *err);

/* ---- the weighter ---- */

/* Models that may predict together. */
#define ZM_WEIGHTER_MAX_MODELS 256

struct zm_weighter_options {
	enum zm_weighting kind;
	enum zm_metric metric;
	bool per_row;
	double temperature;          /* > 0 */
	size_t top_k;                /* 0: all */
	double latency_budget_ms;    /* 0: none */
	bool use_loadavg;            /* halve k when the machine is saturated */
	enum zm_gran_level level;
	/* density: a model without a profile gives uniform weights instead
	 * of an error (the weighting was chosen by default, not asked for). */
	bool lenient;
	const char *temperature_origin;  /* for --explain; borrowed or NULL */
	/* The profiles and densities the run's weighters share (borrowed;
	 * NULL: the weighter keeps its own), profcache.h. */
	struct zm_profile_cache *cache;
};

/* Symmetric KL (nats) below which two densities are the same data. */
#define ZM_DENSITY_KL_MIN 4.0
/* The temperature of density weighting where the zoo has no calibration
 * (assign --calibrate): d times this, at least 1.  Features of real data
 * are correlated, so a row's log-likelihood ratios grow with d much as if
 * only some of the d features were independent; on images the calibrated
 * temperature is near d / 8. */
#define ZM_DENSITY_T_PER_FEATURE 0.125

void zm_weighter_options_init(struct zm_weighter_options *o);

struct zm_weighter {
	struct zm_weighter_options o;
	size_t k, n_layers, max_batch;
	const struct zm_arch *arch;        /* borrowed: models[0]'s */
	struct zm_gran_units units;
	size_t *unit_first;                /* [n_units]: first layer of unit */
	/* Profiles per layer: mean/var of the input of layer l for each
	 * model, F32 [k, d_l] (NULL where unused) and double copies for the
	 * per-batch path. */
	float **pm, **pv;
	double **dm, **dv;
	double *stat;                      /* [n_layers, k] static or NULL */
	double *prior;                     /* [k] log prior, 0 by default */
	double *alpha;                     /* [n_units, k] adaptation offsets */
	size_t probe_model;                /* SIZE_MAX: none (zm_weighter_probe) */
	double probe_share;
	struct zm_hedge *hedge;            /* borrowed, may be NULL */
	/* router */
	const struct zm_model *router;     /* borrowed, may be NULL */
	struct zm_workspace *rws;
	double *route;                     /* [S, k] assignment weights */
	size_t n_route;                    /* S */
	double *router_w;                  /* [max_batch, k] this batch */
	/* per batch */
	size_t k_active;                   /* k after the budget and load */
	double *scores;                    /* [max_batch, k] scratch */
	double *qm, *qv;                   /* [max_features] batch moments */
	double *unit_sim;                  /* [n_units, k]: mean similarity */
	bool *unit_has_sim;                /* [n_units] */
	struct zm_profile_cache *own_cache; /* when o.cache is NULL */
	/* density */
	struct zm_density *dens;           /* [k], the cache's, or NULL (no
	                                    * routing) */
	double *ll;                        /* [max_batch, k] log p_i(row) */
	bool separable;                    /* some pair of models differs */
	double sep_kl, sep_need;           /* largest pair's symmetric KL and
	                                    * the level it had to reach */
	size_t sep_a, sep_b;               /* that pair */
	char why[160];                     /* why no routing, when not */
	enum zm_status pending;            /* a failure of zm_weighter_begin */
	struct zm_error pending_err;
};

/*
 * Builds a weighter for models[0..k) (same architecture unless the level
 * is full and the weighting uses only the input) for batches of up to
 * max_batch rows.  Similarity weighting needs each model's profile
 * (profile.input and, at the group and layer levels, profile.LAYER):
 * ZM_ERR_DATA naming the model and the entry, suggesting uniform or
 * static weighting.  router and assignment are needed for the router
 * kinds (ZM_ERR_USAGE otherwise): the router's input width must be the
 * models', its classes the assignment's slices, and every model of the
 * assignment must be one of names (ZM_ERR_DATA).  stat is the resolved
 * static table [n_layers, k] (copied) for ZM_WEIGHTING_STATIC.  Free with
 * zm_weighter_free.
 */
enum zm_status zm_weighter_new(const struct zm_weighter_options *o,
                               const struct zm_model *const *models,
                               const char *const *names, size_t k,
                               size_t max_batch, const double *stat,
                               const struct zm_model *router,
                               const struct zm_assignment *assignment,
                               struct zm_weighter **out,
                               struct zm_error *err);
void zm_weighter_free(struct zm_weighter *w);

/*
 * Starts a batch of the input x (n x input features): runs the router
 * when there is one, the densities' log-likelihoods (w->ll) for density
 * weighting, and clears the per-unit similarities.  Running out of memory
 * here is reported by the next zm_weighter_layer.
 */
void zm_weighter_begin(struct zm_weighter *w, const float *x, size_t n);

/*
 * The weights of layer l for the batch: h is that layer's input (n x
 * d_l, the merged h_{l-1}).  out receives [n, k] weights when per_row,
 * else [k].  Every row sums to 1 (within rounding) and has at most
 * k_active non-zero weights.  The unit's mean similarity is kept for the
 * trace.  Cannot fail after zm_weighter_new (ZM_ERR_NOMEM aside).
 */
enum zm_status zm_weighter_layer(struct zm_weighter *w, size_t l,
                                 const float *h, size_t n, double *out,
                                 struct zm_error *err);

/*
 * Until called again with model SIZE_MAX, every weight vector the
 * weighter gives is moved a share in (0, 1] toward model (w <- (1 -
 * share) w + share e_model), so the merged prediction "with more of model
 * i" can be measured.  share 1 is the model alone; for small shares the
 * change of the loss is share * (g_i - sum_j w_j g_j) with g = dL/dw, so
 * Hedge on these losses is the exponentiated-gradient method.
 */
void zm_weighter_probe(struct zm_weighter *w, size_t model, double share);

/* Uses each model's zoo accuracy (zm.metrics "accuracy") as a prior
 * log-weight, log(accuracy); models without one get 0. */
void zm_weighter_use_metrics(struct zm_weighter *w,
                             const struct zm_model *const *models);

/* Sets k_active from the measured cost of the last batch (seconds per
 * evaluated model); see the top of this file. */
void zm_weighter_adjust(struct zm_weighter *w, double seconds_per_model);

/* The per-layer weighting of logits: softmax of logits[0..k) into w,
 * then keep the top_k largest (0: all; ties to the lower index) and
 * renormalise. */
void zm_weights_softmax_topk(const double *logits, size_t k, size_t top_k,
                             double *w);

#endif
