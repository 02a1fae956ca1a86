/*
 * What predict writes (predict.h): the weight trace, the running metrics,
 * the predictions as CSV or as a data stream one batch at a time, and the
 * loop over one data document.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "json.h"
#include "mem.h"
#include "granauto.h"
#include "metakeys.h"
#include "predict.h"
#include "schema.h"

/* ---- trace ---- */

enum zm_status zm_pred_trace_header(struct zm_outfile *f,
                                    struct zm_error *err)
{
	static const char h[] = "batch,rows,model,unit,weight,similarity,score\n";

	return zm_outfile_write(f, h, sizeof(h) - 1, err);
}

enum zm_status zm_pred_trace_write(struct zm_predictor *p,
                                   struct zm_outfile *f, uint64_t batch,
                                   size_t rows, struct zm_error *err)
{
	struct zm_weighter *w = p->wr;
	size_t K = p->n_models, u, i;
	double mx = -INFINITY, sum = 0;
	enum zm_status st = ZM_OK;

	if (K == 1) {
		return zm_outfile_printf(f, err, "%llu,%zu,%s,model,1,,1\n",
		                         (unsigned long long)batch, rows,
		                         p->models[0]->name ? p->models[0]->name
		                                            : "m0");
	}
	for (i = 0; i < K; i++)
		if (p->hedge.score[i] > mx)
			mx = p->hedge.score[i];
	for (i = 0; i < K; i++)
		sum += exp(p->hedge.score[i] - mx);
	for (u = 0; u < w->units.n_units && st == ZM_OK; u++) {
		if (w->unit_first[u] == SIZE_MAX)
			continue;
		if (p->o.merge == ZM_MERGE_ENSEMBLE && u > 0)
			break;
		for (i = 0; i < K && st == ZM_OK; i++) {
			char sim[40] = "";
			if (w->unit_has_sim[u])
				snprintf(sim, sizeof(sim), "%.9g",
				         w->unit_sim[u * K + i]);
			st = zm_outfile_printf(f, err, "%llu,%zu,%s,%s,%.9g,%s,%.9g%s\n",
			                       (unsigned long long)batch, rows,
			                       p->hedge.names[i], w->units.names[u],
			                       p->tw[u * K + i], sim,
			                       exp(p->hedge.score[i] - mx) / sum,
			                       p->trace_extra ? p->trace_extra : "");
		}
	}
	return st;
}

size_t zm_predict_argmax(const float *scores, size_t c)
{
	size_t j, best = 0;

	for (j = 1; j < c; j++)
		if (scores[j] > scores[best])
			best = j;
	return best;
}

/* ---- metrics ---- */

void zm_pred_metrics_init(struct zm_pred_metrics *m, enum zm_loss loss,
                          size_t outputs)
{
	memset(m, 0, sizeof(*m));
	m->loss = loss;
	m->outputs = outputs;
}

static enum zm_status metrics_class(struct zm_pred_metrics *m,
                                    const float *scores, const float *logp,
                                    const struct zm_tensor *y, size_t first,
                                    size_t n, struct zm_error *err)
{
	size_t c = m->outputs, i, correct = 0;
	double loss = 0;

	if (y->dtype != ZM_DTYPE_I64 || y->ndim != 1)
		return zm_error_set(err, ZM_ERR_DATA,
		                    "tensor 'y' is %s with %d dimensions; a "
		                    "classification model needs I64 class ids [n]",
		                    zm_dtype_name(y->dtype), y->ndim);
	ZM_ASSERT(logp != NULL);
	for (i = 0; i < n; i++) {
		int64_t label;

		memcpy(&label, (const char *)y->data +
		       (first + i) * sizeof(int64_t), sizeof(label));
		if (label < 0 || (uint64_t)label >= c)
			return zm_error_set(err, ZM_ERR_DATA,
			                    "row %zu: label %lld out of range "
			                    "[0, %zu)", first + i,
			                    (long long)label, c);
		if (zm_predict_argmax(scores + i * c, c) == (size_t)label)
			correct++;
		loss -= logp[i * c + (size_t)label];
	}
	m->correct += correct;
	m->loss_sum += loss;
	return ZM_OK;
}

static enum zm_status metrics_regression(struct zm_pred_metrics *m,
                                         const float *scores,
                                         const struct zm_tensor *y,
                                         size_t first, size_t n,
                                         struct zm_error *err)
{
	size_t t = m->outputs, i, j;
	size_t ty = y->ndim == 2 ? (size_t)y->shape[1] : 1;
	double loss = 0;

	if (ty != t)
		return zm_error_set(err, ZM_ERR_DATA,
		                    "tensor 'y' has %zu targets per row, the "
		                    "model has %zu outputs", ty, t);
	for (i = 0; i < n; i++) {
		double row = 0;
		float target[1];

		for (j = 0; j < t; j++) {
			double d;

			zm_tensor_read_f32(y, (first + i) * t + j, 1, target);
			if (!isfinite(target[0]))
				return zm_error_set(err, ZM_ERR_DATA,
				                    "row %zu: target %zu is not "
				                    "finite", first + i, j);
			d = (double)scores[i * t + j] - target[0];
			row += d * d;
		}
		loss += row / (double)t;
	}
	m->loss_sum += loss;
	return ZM_OK;
}

enum zm_status zm_pred_metrics_add(struct zm_pred_metrics *m,
                                   const float *scores, const float *logp,
                                   const struct zm_tensor *y, size_t first,
                                   size_t n, struct zm_error *err)
{
	enum zm_status st;

	if (y) {
		ZM_ASSERT(y->ndim >= 1 && (uint64_t)y->shape[0] >= first + n);
		if (m->loss == ZM_LOSS_CROSS_ENTROPY)
			st = metrics_class(m, scores, logp, y, first, n, err);
		else
			st = metrics_regression(m, scores, y, first, n, err);
		if (st != ZM_OK)
			return st;
		m->labelled += n;
	}
	m->rows += n;
	return ZM_OK;
}

double zm_pred_metrics_accuracy(const struct zm_pred_metrics *m)
{
	if (m->loss != ZM_LOSS_CROSS_ENTROPY || m->labelled == 0)
		return NAN;
	return (double)m->correct / (double)m->labelled;
}

double zm_pred_metrics_loss(const struct zm_pred_metrics *m)
{
	if (m->labelled == 0)
		return NAN;
	return m->loss_sum / (double)m->labelled;
}

enum zm_status zm_pred_metrics_write(const struct zm_pred_metrics *m,
                                     const char *model, const char *path,
                                     struct zm_error *err)
{
	struct zm_outfile f;
	struct zm_buf b;
	enum zm_status st;

	/* Built in memory first: the file is a few lines. */
	zm_buf_init(&b);
	if (model) {
		zm_buf_puts(&b, "model: ");
		zm_json_string(&b, model, strlen(model));
		zm_buf_puts(&b, "\n");
	}
	zm_buf_printf(&b, "rows: %llu\n", (unsigned long long)m->rows);
	if (m->labelled > 0) {
		zm_buf_printf(&b, "labelled: %llu\n",
		              (unsigned long long)m->labelled);
		if (m->loss == ZM_LOSS_CROSS_ENTROPY)
			zm_buf_printf(&b, "correct: %llu\naccuracy: %.9g\n",
			              (unsigned long long)m->correct,
			              zm_pred_metrics_accuracy(m));
		zm_buf_printf(&b, "loss: %.9g\n", zm_pred_metrics_loss(m));
	}
	if (b.failed) {
		zm_buf_release(&b);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	st = zm_outfile_open(&f, path, false, err);
	if (st != ZM_OK) {
		zm_buf_release(&b);
		return st;
	}
	st = zm_outfile_write(&f, b.data, b.len, err);
	zm_buf_release(&b);
	if (st != ZM_OK) {
		zm_outfile_abort(&f);
		return st;
	}
	return zm_outfile_commit(&f, err);
}

/* ---- output ---- */

struct zm_pred_writer {
	enum zm_pred_format format;
	enum zm_loss loss;
	size_t outputs;
	uint64_t row;               /* running index for rows without ids */
	struct zm_outfile csv;      /* ZM_PRED_CSV */
	struct zm_writer *stream;   /* ZM_PRED_STREAM */
	char *model;                /* owned copy, may be NULL */
	char *line;                 /* CSV line buffer, owned */
	size_t line_cap;
	char **pred;                /* owned: each class's pred CSV field */
	struct zm_names classes;    /* the model's class names, or unknown */
};

/* A class's name as a CSV field (quoted when it must be), prefixed;
 * its id where the model names no such class. */
static char *class_field(const struct zm_names *classes, size_t j,
                         const char *prefix)
{
	struct zm_buf b;
	const char *name, *p;
	char num[32];

	snprintf(num, sizeof(num), "%zu", j);
	name = j < classes->n ? classes->v[j] : num;
	zm_buf_init(&b);
	if (strpbrk(name, ",\"\r\n") || strpbrk(prefix, ",\"")) {
		zm_buf_puts(&b, "\"");
		zm_buf_puts(&b, prefix);
		for (p = name; *p; p++)
			zm_buf_puts(&b, *p == '"' ? "\"\"" : (char[]){ *p, 0 });
		zm_buf_puts(&b, "\"");
	} else {
		zm_buf_puts(&b, prefix);
		zm_buf_puts(&b, name);
	}
	if (b.failed) {
		zm_buf_release(&b);
		return NULL;
	}
	return b.data ? b.data : zm_strdup("");
}

bool zm_pred_format_parse(const char *s, enum zm_pred_format *out)
{
	if (strcmp(s, "csv") == 0)
		*out = ZM_PRED_CSV;
	else if (strcmp(s, "stream") == 0)
		*out = ZM_PRED_STREAM;
	else
		return false;
	return true;
}

static enum zm_status csv_header(struct zm_pred_writer *w,
                                 struct zm_error *err)
{
	enum zm_status st;
	size_t j;

	st = zm_outfile_printf(&w->csv, err, "id%s",
	                       w->loss == ZM_LOSS_CROSS_ENTROPY ? ",pred" : "");
	for (j = 0; st == ZM_OK && j < w->outputs; j++) {
		char *f = class_field(&w->classes, j,
		                      w->loss == ZM_LOSS_CROSS_ENTROPY ? "p_" :
		                      "y_");
		if (!f)
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		st = zm_outfile_printf(&w->csv, err, ",%s", f);
		free(f);
	}
	if (st == ZM_OK)
		st = zm_outfile_write(&w->csv, "\n", 1, err);
	return st;
}

enum zm_status zm_pred_writer_open(struct zm_pred_writer **out,
                                   const char *path,
                                   enum zm_pred_format format,
                                   enum zm_loss loss, size_t outputs,
                                   int level, const char *model,
                                   const struct zm_names *classes,
                                   struct zm_error *err)
{
	struct zm_pred_writer *w;
	enum zm_status st;
	size_t j, longest = 0;

	*out = NULL;
	ZM_ASSERT(outputs > 0);
	w = zm_calloc(1, sizeof(*w));
	if (!w)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	w->format = format;
	w->loss = loss;
	w->outputs = outputs;
	zm_names_init(&w->classes);
	if ((model && !(w->model = zm_strdup(model))) ||
	    !(w->pred = zm_calloc(outputs, sizeof(*w->pred))) ||
	    (classes && zm_names_copy(&w->classes, classes, err))) {
		zm_pred_writer_abort(w);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	for (j = 0; j < outputs; j++) {
		if (!(w->pred[j] = class_field(&w->classes, j, ""))) {
			zm_pred_writer_abort(w);
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		}
		if (strlen(w->pred[j]) > longest)
			longest = strlen(w->pred[j]);
	}
	if (format == ZM_PRED_CSV) {
		/* id, pred (the longest class field), and up to 16
		 * characters per %.9g value, with room. */
		if (!zm_size_mul(outputs, 24, &w->line_cap) ||
		    !zm_size_add(w->line_cap, 64, &w->line_cap) ||
		    !zm_size_add(w->line_cap, longest, &w->line_cap) ||
		    !(w->line = zm_malloc(w->line_cap))) {
			zm_pred_writer_abort(w);
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		}
		st = zm_outfile_open(&w->csv, path, false, err);
		if (st == ZM_OK)
			st = csv_header(w, err);
	} else {
		st = zm_writer_open(&w->stream, path, level, err);
	}
	if (st != ZM_OK) {
		zm_pred_writer_abort(w);
		return st;
	}
	*out = w;
	return ZM_OK;
}

static enum zm_status write_csv(struct zm_pred_writer *w, const int64_t *ids,
                                const float *scores, size_t n,
                                struct zm_error *err)
{
	size_t c = w->outputs, i, j, len;
	enum zm_status st;

	for (i = 0; i < n; i++) {
		const float *s = scores + i * c;
		long long id = ids ? (long long)ids[i] : (long long)(w->row + i);

		len = (size_t)snprintf(w->line, w->line_cap, "%lld", id);
		if (w->loss == ZM_LOSS_CROSS_ENTROPY)
			len += (size_t)snprintf(w->line + len, w->line_cap - len,
			                        ",%s",
			                        w->pred[zm_predict_argmax(s, c)]);
		for (j = 0; j < c; j++)
			len += (size_t)snprintf(w->line + len, w->line_cap - len,
			                        ",%.9g", (double)s[j]);
		ZM_ASSERT(len + 1 < w->line_cap);
		w->line[len++] = '\n';
		st = zm_outfile_write(&w->csv, w->line, len, err);
		if (st != ZM_OK)
			return st;
	}
	return ZM_OK;
}

static enum zm_status write_stream(struct zm_pred_writer *w,
                                   const int64_t *ids, const float *scores,
                                   size_t n, struct zm_error *err)
{
	struct zm_doc doc;
	struct zm_tensor t;
	enum zm_status st;
	int64_t shape[2] = { (int64_t)n, (int64_t)w->outputs };
	char samples[32];
	size_t c = w->outputs, i;
	bool cls = w->loss == ZM_LOSS_CROSS_ENTROPY;

	zm_doc_init(&doc);
	zm_tensor_init(&t);
	st = zm_tensor_alloc(&t, "id", ZM_DTYPE_I64, 1, shape, err);
	if (st == ZM_OK) {
		int64_t *d = t.data;
		for (i = 0; i < n; i++)
			d[i] = ids ? ids[i] : (int64_t)(w->row + i);
		st = zm_doc_add(&doc, &t, err);
	}
	if (st == ZM_OK && cls) {
		st = zm_tensor_alloc(&t, "pred", ZM_DTYPE_I64, 1, shape, err);
		if (st == ZM_OK) {
			int64_t *d = t.data;
			for (i = 0; i < n; i++)
				d[i] = (int64_t)zm_predict_argmax(scores + i * c, c);
			st = zm_doc_add(&doc, &t, err);
		}
	}
	if (st == ZM_OK)
		st = zm_tensor_alloc(&t, cls ? "p" : "y", ZM_DTYPE_F32, 2, shape,
		                     err);
	if (st == ZM_OK) {
		if (n)
			memcpy(t.data, scores, n * c * sizeof(float));
		st = zm_doc_add(&doc, &t, err);
	}
	snprintf(samples, sizeof(samples), "%zu", n);
	if (st == ZM_OK)
		st = zm_doc_set_meta(&doc, ZM_META_KIND, "data", err);
	if (st == ZM_OK)
		st = zm_doc_set_meta(&doc, ZM_META_SAMPLES, samples, err);
	if (st == ZM_OK && w->model)
		st = zm_doc_set_meta(&doc, ZM_META_MODEL, w->model, err);
	/* pred holds class ids; zm.classes names them. */
	if (st == ZM_OK && cls)
		st = zm_names_to_meta(&w->classes, &doc, ZM_META_CLASSES, err);
	if (st == ZM_OK)
		st = zm_writer_write_doc(w->stream, &doc, err);
	zm_tensor_release(&t);
	zm_doc_release(&doc);
	return st;
}

enum zm_status zm_pred_writer_write(struct zm_pred_writer *w,
                                    const int64_t *ids, const float *scores,
                                    size_t n, struct zm_error *err)
{
	enum zm_status st;

	if (w->format == ZM_PRED_CSV)
		st = write_csv(w, ids, scores, n, err);
	else
		st = write_stream(w, ids, scores, n, err);
	if (st == ZM_OK)
		w->row += n;
	return st;
}

static void writer_free(struct zm_pred_writer *w)
{
	size_t j;

	for (j = 0; w->pred && j < w->outputs; j++)
		free(w->pred[j]);
	free(w->pred);
	zm_names_release(&w->classes);
	free(w->model);
	free(w->line);
	free(w);
}

enum zm_status zm_pred_writer_commit(struct zm_pred_writer *w,
                                     struct zm_error *err)
{
	enum zm_status st;

	if (w->format == ZM_PRED_CSV)
		st = zm_outfile_commit(&w->csv, err);
	else
		st = zm_writer_commit(w->stream, err);
	writer_free(w);
	return st;
}

void zm_pred_writer_abort(struct zm_pred_writer *w)
{
	if (!w)
		return;
	/* The outfile is zeroed when never opened, which abort allows. */
	if (w->format == ZM_PRED_CSV) {
		zm_outfile_abort(&w->csv);
	} else {
		zm_writer_abort(w->stream);
	}
	writer_free(w);
}

/* ---- one data document ---- */

enum zm_status zm_predict_doc(struct zm_predictor *p,
                              const struct zm_doc *doc, const char *name,
                              uint64_t *row, struct zm_pred_writer *w,
                              struct zm_pred_metrics *m,
                              struct zm_error *err)
{
	const struct zm_tensor *y, *idt;
	enum zm_status st;
	size_t n, d, done, bad_row, bad_col, held = SIZE_MAX;
	float *scores = p->scores, scale;
	int64_t *ids = p->ids;

	st = zm_data_check(doc, name, &n, err);
	if (st != ZM_OK)
		return st;
	st = zm_data_features_width(doc, &d, &scale, err);
	if (st != ZM_OK)
		return zm_error_prefix(err, "%s: ", name);
	if (d != p->in_features)
		return zm_error_set(err, ZM_ERR_DATA,
		                    "%s: the input has %zu features per row, the "
		                    "model expects %zu", name, d, p->in_features);
	/* Every row is checked before any is predicted, so that a bad
	 * row leaves the metrics and the output without its document.
	 * Integers scaled by a finite scale stay finite: only float inputs
	 * are scanned, a batch at a time through the buffer; the batch
	 * still held there (a document of one batch) is not converted
	 * again. */
	if (zm_dtype_is_float(zm_doc_find(doc, "x")->dtype))
		for (done = 0; done < n; done += p->max_batch) {
			size_t b = n - done < p->max_batch ? n - done
			                                   : p->max_batch;
			const float *xb = p->xin;
			zm_data_features_rows(doc, d, scale, done, b, p->xin);
			held = done;
			size_t bad = zm_first_nonfinite(xb, b * d);
			if (bad < b * d) {
				float v = xb[bad];
				bad_row = done + bad / d;
				bad_col = bad % d;
				return zm_error_set(err, ZM_ERR_DATA,
				                    "%s: row %zu (input row %llu), "
				                    "feature %zu: %s input", name,
				                    bad_row, (unsigned long long)
				                    (*row + bad_row), bad_col,
				                    isnan(v) ? "NaN" : "infinite");
			}
		}
	y = zm_doc_find(doc, "y");
	idt = zm_doc_find(doc, "id");
	for (done = 0; done < n; ) {
		size_t b = n - done < p->max_batch ? n - done : p->max_batch;
		size_t i;
		const float *xb = p->xin;

		/* --granularity auto: the batch runs at the level its
		 * controller picks (granauto.h). */
		struct zm_predictor *q = p;

		/* A batch at a time into the predictor's buffer: no copy of
		 * the whole document, and the rows are in cache when the
		 * first layer reads them. */
		if (held != done)
			zm_data_features_rows(doc, d, scale, done, b, p->xin);
		held = SIZE_MAX;
		if (p->gauto &&
		    (st = zm_granauto_ctl_begin(p->gauto, xb, b, &q, err)))
			return st;
		if (q->n_models > 1 && q->o.adapt) {
			st = zm_predict_adapt(q, xb, b, NULL, NULL, err);
			if (st != ZM_OK)
				return st;
		}
		st = zm_predict_run(q, xb, b, scores, p->loss ==
		                    ZM_LOSS_CROSS_ENTROPY ? p->logp : NULL, err);
		if (st != ZM_OK)
			return st;
		if (p->gauto)
			zm_granauto_ctl_end(p->gauto, b);
		p->batch_no++;
		if (p->trace) {
			st = zm_pred_trace_write(q, p->trace, p->batch_no, b, err);
			if (st != ZM_OK)
				return st;
		}
		if (idt)
			memcpy(ids, (const char *)idt->data +
			       done * sizeof(int64_t), b * sizeof(int64_t));
		else
			for (i = 0; i < b; i++)
				ids[i] = (int64_t)(*row + done + i);
		if (m) {
			st = zm_pred_metrics_add(m, scores, p->logp, y, done, b,
			                         err);
			if (st != ZM_OK) {
				zm_error_prefix(err, "%s: ", name);
				return st;
			}
		}
		if (w) {
			st = zm_pred_writer_write(w, ids, scores, b, err);
			if (st != ZM_OK)
				return st;
		}
		if (q->n_models > 1 && q->o.feedback && y) {
			double loss[ZM_WEIGHTER_MAX_MODELS];
			st = zm_predict_feedback(q, xb, b, y, done, loss, err);
			if (st != ZM_OK) {
				zm_error_prefix(err, "%s: ", name);
				return st;
			}
		}
		done += b;
	}
	*row += n;
	return ZM_OK;
}
