/*
 * Inference: batches of inputs through zoo models, the predictions written
 * as CSV or as a data stream, and metrics (accuracy, loss) accumulated when
 * the inputs carry labels.
 *
 * The predictor runs K models.  K == 1 is the plain forward pass.  For
 * K > 1 (DESIGN.md section 5) the weights come from a zm_weighter
 * (weighting.h), per batch or per row, per unit of the granularity, and
 * the models are merged layer by layer:
 *   outputs   h_l = sum_i w_il f_il(h_{l-1}), mixing the pre-activations
 *             (merge point pre: h_l = act(sum_i w_il z_il)) or the
 *             activations (post: h_l = sum_i w_il act(z_il)); the K
 *             models' products of a layer are ONE zm_gemm over their
 *             weights stacked [K*out, in] at load time;
 *   params    the parameters merged once per batch, W_l = sum_i w_il
 *             W_il, b_l likewise, and one network run: with per-batch
 *             weights this equals outputs with merge point pre, for 1/K
 *             of the products;
 *   ensemble  each model alone, the final probabilities (regression
 *             outputs) mixed; architectures may differ;
 *   route     (route.h) a row whose largest weight reaches o.threshold is
 *             computed by that model alone, rows going to the same model
 *             as one pass; the other rows as the ensemble (architectures
 *             may differ) or, for related models, as outputs.
 * With feedback, each model's loss where it is used (the batch predicted
 * again with a share of the weight moved to it) updates its fixed-share
 * Hedge score after the batch is predicted; with entropy adaptation the
 * per-unit coefficients are tuned on the batch before it is predicted.
 *
 * Outputs of a batch are "scores", n x C floats: softmax probabilities for
 * cross-entropy (classification) models, the raw outputs for mse
 * (regression) models.  The log-probabilities are kept next to them so
 * that the loss of a confident wrong prediction stays finite.
 */
#ifndef ZM_PREDICT_H
#define ZM_PREDICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "fileio.h"
#include "model.h"
#include "schema.h"
#include "stream.h"
#include "tensor.h"
#include "weighting.h"
#include "adapt.h"

struct zm_granauto_ctl;
struct zm_route_state;

#define ZM_PREDICT_BATCH_DEFAULT 1024
/* Defaults of --eta and --probe (zm_predict_feedback). */
#define ZM_PREDICT_ETA_DEFAULT 0.5
#define ZM_PREDICT_PROBE_DEFAULT 0.1
/* The default threshold for a model to compute a row alone (route.h). */
#define ZM_ROUTE_THRESHOLD_DEFAULT 0.99

enum zm_merge_mode { ZM_MERGE_OUTPUTS, ZM_MERGE_PARAMS, ZM_MERGE_ENSEMBLE,
                     ZM_MERGE_ROUTE };
enum zm_merge_point { ZM_MERGE_PRE, ZM_MERGE_POST };

/* "outputs", "params", "ensemble", "route" / "pre", "post"; false when
 * unknown. */
bool zm_merge_mode_parse(const char *s, enum zm_merge_mode *out);
bool zm_merge_point_parse(const char *s, enum zm_merge_point *out);
/* The name zm_merge_mode_parse reads. */
const char *zm_merge_mode_name(enum zm_merge_mode m);

/* How routing mixes the rows no model is sure of (route.h). */
enum zm_route_mix {
	ZM_ROUTE_MIX_AUTO,      /* the default: final (route.c says why) */
	ZM_ROUTE_MIX_FINAL,     /* the final outputs */
	ZM_ROUTE_MIX_LAYERS     /* layer by layer */
};
/* "auto", "final", "layers"; false when unknown. */
bool zm_route_mix_parse(const char *s, enum zm_route_mix *out);

/* How K > 1 models predict together. */
struct zm_predict_options {
	enum zm_merge_mode merge;
	enum zm_merge_point point;
	struct zm_weighter_options w;
	const char *const *names;        /* [K] model names; NULL: m0, m1, ... */
	const double *stat;              /* static table [n_layers, K] or NULL */
	const struct zm_model *router;   /* borrowed, router weighting */
	const struct zm_assignment *assignment;  /* borrowed */
	bool use_metrics;                /* zoo accuracy as a prior */
	bool feedback;                   /* Hedge from labelled batches */
	double eta;                      /* Hedge learning rate */
	double share;                    /* fixed-share rate in [0, 1) */
	double probe;                    /* share moved to a model, (0, 1] */
	struct zm_hedge *hedge;          /* borrowed start state, or NULL */
	bool adapt;                      /* entropy adaptation */
	struct zm_adapt_options adapt_o;
	size_t adapt_rows;               /* rows adapted on (default 256) */
	double threshold;                /* route: a model alone from this
	                                  * weight (ZM_ROUTE_THRESHOLD_DEFAULT) */
	enum zm_route_mix route_mix;     /* route: how uncertain rows mix */
};

void zm_predict_options_init(struct zm_predict_options *o);

struct zm_predictor {
	size_t n_models;                    /* K */
	const struct zm_model **models;     /* owned array of borrowed models */
	struct zm_workspace **ws;           /* owned, one per model (or NULL) */
	size_t max_batch;
	size_t in_features;                 /* per row */
	size_t out_features;                /* C: classes or targets */
	enum zm_loss loss;                  /* shared by all models */
	float *logp;                        /* owned, max_batch x C; cross-entropy */
	float *scores;                      /* owned, max_batch x C; zm_predict_doc */
	int64_t *ids;                       /* owned, max_batch; zm_predict_doc */
	float *xin;                         /* owned, max_batch x in_features:
	                                     * zm_predict_doc's input rows */
	/* K > 1 (all owned unless said otherwise) */
	struct zm_predict_options o;
	struct zm_weighter *wr;
	struct zm_hedge hedge;              /* the scores used and updated */
	float **wcat, **bcat;               /* per layer: [K*out, in], [K*out] */
	float *ha, *hb;                     /* max_batch x max_features */
	float *z;                           /* max_batch x K x widest out */
	float *wm, *bm;                     /* merged params of one layer */
	/* Dense layers' weights packed once (gemm.h), per layer: outputs
	 * merge, wcat's stack; params merge, [l * K + i] model i's weights
	 * and pmerged[l] their combination of the batch.  Zeroed where a
	 * layer has none or the mode does not use them. */
	struct zm_gemm_packed *pstack, *pmodel, *pmerged;
	float *coef;                        /* [K] params merge coefficients */
	float *pcoef;                       /* [L * K] the coefficients that
	                                     * pmerged[l] holds (NAN: none) */
	float *scratch;                     /* conv2d im2col; NULL without */
	double *wl;                         /* [max_batch, K] one layer's weights */
	float *ascores;                     /* adaptation scratch scores */
	double *adapt_scratch;
	float *targets;                     /* feedback: regression targets */
	double *tw;                         /* trace: [n_units, K] mean weights */
	size_t evaluated;                   /* models evaluated, last batch */
	bool recording;                     /* the pass records the trace */
	uint64_t batch_no;
	struct zm_outfile *trace;           /* borrowed, open trace file */
	struct zm_route_state *route;       /* owned; merge route only */
	/* --granularity auto (granauto.h): the controller that picks, per
	 * batch, the predictor of a level (borrowed, or NULL), and the
	 * columns it appends to this predictor's trace lines. */
	struct zm_granauto_ctl *gauto;
	const char *trace_extra;            /* borrowed, or NULL */
};

/*
 * Makes a predictor over models[0..k) (borrowed: they must outlive it) for
 * batches of up to max_batch rows, allocating every buffer once.  For
 * k > 1 it uses the defaults of zm_predict_options_init with uniform
 * weighting.  *out is freed with zm_predictor_free.
 */
enum zm_status zm_predictor_new(const struct zm_model *const *models,
                                size_t k, size_t max_batch,
                                struct zm_predictor **out,
                                struct zm_error *err);

/*
 * The same with options.  Errors: models of different architectures
 * with merge outputs or params (ZM_ERR_DATA naming the first differing
 * layer and suggesting ensemble), models whose input widths or output
 * counts differ (ensemble), params with per-row weights or merge point
 * post, ensemble at the group or layer level (ZM_ERR_USAGE), and those of
 * zm_weighter_new.  o->hedge, when given, is copied (zm_hedge_match'ed by
 * the caller).
 */
enum zm_status zm_predictor_new_opts(const struct zm_model *const *models,
                                     size_t k, size_t max_batch,
                                     const struct zm_predict_options *o,
                                     struct zm_predictor **out,
                                     struct zm_error *err);

/*
 * Predicts n rows like zm_predict_batch for any K, recording the batch's
 * weights for the trace.  Fails only with ZM_ERR_NOMEM.
 */
enum zm_status zm_predict_run(struct zm_predictor *p, const float *x,
                              size_t n, float *scores, float *logp,
                              struct zm_error *err);

/*
 * Feedback after a batch was predicted: for each model i, the mean loss
 * per row of the n rows of x against rows [first, first + n) of y (I64
 * class ids or regression targets), predicted with the current weights
 * moved a share o.probe toward model i (zm_weighter_probe; probe 1 is
 * model i alone), into loss[K]; then the fixed-share Hedge update with
 * o.eta and o.share (zm_hedge_update).  K merged passes.  Errors as
 * zm_pred_metrics_add.
 */
enum zm_status zm_predict_feedback(struct zm_predictor *p, const float *x,
                                   size_t n, const struct zm_tensor *y,
                                   size_t first, double *loss,
                                   struct zm_error *err);

/*
 * Entropy adaptation on the first rows of x (up to o.adapt_rows): from
 * the weighting's own weights (the weighter's per-unit offsets reset to
 * 0), a few regularised trust-region steps on the offsets lower the mean
 * prediction entropy (zm_adapt_minimise with o.adapt_o); the offsets
 * found stay set for the batch's prediction.  The gradient is analytic
 * (zm_predict_entropy_grad) for merged outputs of dense layers without a
 * top-k cut, else by central differences.  Returns the entropy before
 * and after in *before and *after (either may be NULL); after <= before.
 */
enum zm_status zm_predict_adapt(struct zm_predictor *p, const float *x,
                                size_t n, double *before, double *after,
                                struct zm_error *err);

/*
 * The mean entropy of the merged prediction of n rows (n <= max_batch)
 * with the weighter's current offsets into *value and its gradient wrt
 * the offsets into grad [n_units * K], back-propagated through the merged
 * network (the similarity of later units to the merged h held fixed).
 * *analytic is false, and nothing computed, where that does not apply:
 * merge params or ensemble, layers other than dense, a top-k cut.
 */
enum zm_status zm_predict_entropy_grad(struct zm_predictor *p,
                                       const float *x, size_t n,
                                       double *grad, double *value,
                                       bool *analytic, struct zm_error *err);

/* ---- trace ---- */

/* Writes the trace header "batch,rows,model,unit,weight,similarity,score"
 * to f. */
enum zm_status zm_pred_trace_header(struct zm_outfile *f,
                                    struct zm_error *err);

/*
 * Writes one line per model and unit for the last batch predicted by
 * zm_predict_run: weight (mean over rows), similarity (mean over rows;
 * empty when not measured), score (the model's Hedge weight, exp(h_i) /
 * sum_j exp(h_j)).
 */
enum zm_status zm_pred_trace_write(struct zm_predictor *p,
                                   struct zm_outfile *f, uint64_t batch,
                                   size_t rows, struct zm_error *err);

/* Scores of final outputs outp [n, C] into scores (softmax for
 * classification, a copy for regression) and logp (classification, may
 * be NULL). */
void zm_predict_finish(const struct zm_predictor *p, const float *outp,
                       size_t n, float *scores, float *logp);

/* Where the models' outputs are mixed whole (ensemble, routing): their
 * weights for x [n, in] from the first unit's layer into p->wl (rows x K
 * per row, else one row), recorded for the trace. */
enum zm_status zm_predict_weigh_whole(struct zm_predictor *p, const float *x,
                                      size_t n, struct zm_error *err);

/* Keeps the mean over rows of the weights p->wl of layer l (rows x K)
 * for the trace, when l begins its unit and the pass records. */
void zm_predict_record(struct zm_predictor *p, size_t l, size_t rows);

/* Frees the predictor and its buffers (not the models); NULL is fine. */
void zm_predictor_free(struct zm_predictor *p);

/*
 * Predicts n rows (n <= max_batch) of x (n x in_features, finite) into
 * scores (n x C, caller-owned): softmax probabilities or regression
 * outputs.  For classification, when logp is not NULL it receives the
 * log-probabilities (n x C).  Cannot fail for valid arguments with K ==
 * 1; for K > 1 use zm_predict_run, which reports running out of memory.
 */
void zm_predict_batch(struct zm_predictor *p, const float *x, size_t n,
                      float *scores, float *logp);

/* Index of the largest of c scores (the first one on ties). */
size_t zm_predict_argmax(const float *scores, size_t c);

/* ---- metrics ---- */

/*
 * Running metrics over all predicted rows.  Classification: correct
 * arg-max predictions and the summed cross-entropy -log p(label).
 * Regression: the summed per-row mean squared error (so loss_sum /
 * labelled is PyTorch's MSELoss).  Rows without labels count only in rows.
 */
struct zm_pred_metrics {
	enum zm_loss loss;
	size_t outputs;              /* C */
	uint64_t rows;               /* all predicted rows */
	uint64_t labelled;           /* rows that had a label */
	uint64_t correct;            /* classification only */
	double loss_sum;
};

void zm_pred_metrics_init(struct zm_pred_metrics *m, enum zm_loss loss,
                          size_t outputs);

/*
 * Adds n rows.  scores and logp as from zm_predict_batch (logp is needed
 * for classification with labels).  y is the input's label tensor or
 * NULL; rows [first, first + n) of it are used.  Classification needs I64
 * class ids in [0, C); regression needs [N] (C == 1) or [N, C] targets of
 * any numeric dtype.  Errors are ZM_ERR_DATA naming the row as
 * "row R" with R = first + i (the caller prefixes the input's name):
 * a label out of range, a non-finite target, or a y of the wrong kind.
 * On error m is unchanged.
 */
enum zm_status zm_pred_metrics_add(struct zm_pred_metrics *m,
                                   const float *scores, const float *logp,
                                   const struct zm_tensor *y, size_t first,
                                   size_t n, struct zm_error *err);

/* accuracy (classification, labelled > 0; else NAN) and mean loss
 * (labelled > 0; else NAN). */
double zm_pred_metrics_accuracy(const struct zm_pred_metrics *m);
double zm_pred_metrics_loss(const struct zm_pred_metrics *m);

/*
 * Writes the metrics as YAML to path atomically ("-": stdout):
 *   rows: N
 * and when labelled rows were seen:
 *   labelled: N, correct: N and accuracy: A (classification), loss: L.
 * model, when not NULL, is written first as "model: NAME".
 */
enum zm_status zm_pred_metrics_write(const struct zm_pred_metrics *m,
                                     const char *model, const char *path,
                                     struct zm_error *err);

/* ---- output ---- */

enum zm_pred_format {
	ZM_PRED_CSV,        /* id,pred,p_0,...  or  id,y_0,... */
	ZM_PRED_STREAM      /* data documents: id, pred, p  or  id, y */
};

/* Parses "csv" or "stream"; false when unknown. */
bool zm_pred_format_parse(const char *s, enum zm_pred_format *out);

struct zm_pred_writer;

/*
 * Opens an output of predictions to path ("-": stdout), written under a
 * temporary name and renamed at zm_pred_writer_commit.  The CSV header is
 * written here.  Stream output is refused on a terminal (ZM_ERR_USAGE)
 * and compressed at level (0-9 or ZM_COMPRESS_AUTO).  model, when not
 * NULL, goes to the stream's zm.model metadata.  classes (copied; NULL or
 * unknown: the ids) name the outputs: CSV pred values and p_NAME headers
 * (quoted when a name needs it), the stream's zm.classes.
 */
enum zm_status zm_pred_writer_open(struct zm_pred_writer **w,
                                   const char *path,
                                   enum zm_pred_format format,
                                   enum zm_loss loss, size_t outputs,
                                   int level, const char *model,
                                   const struct zm_names *classes,
                                   struct zm_error *err);

/*
 * Writes n predictions: ids (n values, or NULL for the running row index)
 * and scores (n x C).  CSV: one line per row, %.9g in the C locale.
 * Stream: one document with id I64 [n], and pred I64 [n] and p F32 [n, C]
 * for classification or y F32 [n, C] for regression; zm.kind=data.
 */
enum zm_status zm_pred_writer_write(struct zm_pred_writer *w,
                                    const int64_t *ids, const float *scores,
                                    size_t n, struct zm_error *err);

/* Finishes the output and makes it visible; frees w whatever happens. */
enum zm_status zm_pred_writer_commit(struct zm_pred_writer *w,
                                     struct zm_error *err);

/* Discards the output (a named target stays as it was) and frees w; NULL
 * is fine. */
void zm_pred_writer_abort(struct zm_pred_writer *w);

/* ---- one data document ---- */

/*
 * Predicts every row of one data document (the layout of zm_data_check)
 * in batches of the predictor's max_batch, writing to w (may be NULL) and
 * accumulating into m (may be NULL).  name names the document in errors
 * ("FILE: document 3").  *row is the running row index across documents
 * (used as id when the document has none, and in messages); it advances
 * by the rows of the document.  Errors (ZM_ERR_DATA): x's width differs
 * from the model's input features (both numbers named), a NaN or infinite
 * input (naming the row and feature), and the errors of
 * zm_pred_metrics_add; plus the writer's.  With K > 1 each batch is
 * adapted first (o.adapt), predicted, traced (p->trace), and fed back
 * (o.feedback, when the document has labels).
 */
enum zm_status zm_predict_doc(struct zm_predictor *p,
                              const struct zm_doc *doc, const char *name,
                              uint64_t *row, struct zm_pred_writer *w,
                              struct zm_pred_metrics *m,
                              struct zm_error *err);

#endif
