/*
 * Inference: batches of inputs through zoo models, the predictions written
 * as CSV or as a data stream, and metrics (accuracy, loss) accumulated when
 * the inputs carry labels.
 *
 * The predictor is built around a list of K models so that the dynamic
 * multi-model inference of DESIGN.md section 5 (per-batch or per-row
 * weights from similarity to the models' profiles, layer-wise merging,
 * feedback) extends it: that will add a weights argument ([K] or [n, K])
 * to the batch call and per-layer mixing inside it, while the writers, the
 * metrics and the per-document driver stay as they are.  Today K must be 1.
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
#include "stream.h"
#include "tensor.h"

#define ZM_PREDICT_BATCH_DEFAULT 1024

struct zm_predictor {
	size_t n_models;                    /* K; 1 for now */
	const struct zm_model **models;     /* owned array of borrowed models */
	struct zm_workspace **ws;           /* owned, one per model */
	size_t max_batch;
	size_t in_features;                 /* per row */
	size_t out_features;                /* C: classes or targets */
	enum zm_loss loss;                  /* shared by all models */
	float *logp;                        /* owned, max_batch x C; cross-entropy */
	float *scores;                      /* owned, max_batch x C; zm_predict_doc */
	int64_t *ids;                       /* owned, max_batch; zm_predict_doc */
};

/*
 * Makes a predictor over models[0..k) (borrowed: they must outlive it) for
 * batches of up to max_batch rows, allocating every buffer once.  Several
 * models are ZM_ERR_USAGE ("not implemented yet") until dynamic weighting
 * exists.  *out is freed with zm_predictor_free.
 */
enum zm_status zm_predictor_new(const struct zm_model *const *models,
                                size_t k, size_t max_batch,
                                struct zm_predictor **out,
                                struct zm_error *err);

/* Frees the predictor and its buffers (not the models); NULL is fine. */
void zm_predictor_free(struct zm_predictor *p);

/*
 * Predicts n rows (n <= max_batch) of x (n x in_features, finite) into
 * scores (n x C, caller-owned): softmax probabilities or regression
 * outputs.  For classification, when logp is not NULL it receives the
 * log-probabilities (n x C).  Cannot fail for valid arguments.
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
 * NULL, goes to the stream's zm.model metadata.
 */
enum zm_status zm_pred_writer_open(struct zm_pred_writer **w,
                                   const char *path,
                                   enum zm_pred_format format,
                                   enum zm_loss loss, size_t outputs,
                                   int level, const char *model,
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
 * zm_pred_metrics_add; plus the writer's.
 */
enum zm_status zm_predict_doc(struct zm_predictor *p,
                              const struct zm_doc *doc, const char *name,
                              uint64_t *row, struct zm_pred_writer *w,
                              struct zm_pred_metrics *m,
                              struct zm_error *err);

#endif
