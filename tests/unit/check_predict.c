/*
 * Inference: batch predictions of small models with hand-set weights
 * against a naive forward pass and softmax in double computed here, the
 * per-document driver (batch splitting, ids, width and NaN errors), the
 * CSV and stream writers read back, and the metrics against hand values.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fileio.h"
#include "model.h"
#include "predict.h"
#include "stream.h"
#include "unit.h"

/* Sets every parameter of layer l to a fixed pattern of small values with
 * both signs, so the reference below does not depend on the seed. */
static void set_params(struct zm_model *m, size_t l, double scale)
{
	float *w = m->layers[l].weight.data, *b = m->layers[l].bias.data;
	size_t i, nw = zm_tensor_numel(&m->layers[l].weight);
	size_t nb = zm_tensor_numel(&m->layers[l].bias);

	for (i = 0; i < nw; i++)
		w[i] = (float)(scale * (((double)((i * 7 + l * 3) % 11) - 5) / 5));
	for (i = 0; i < nb; i++)
		b[i] = (float)(0.1 * ((double)(i % 3) - 1));
}

static const char class_yaml[] =
	"input: [3]\nloss: cross-entropy\nlayers:\n"
	"  - {name: h, units: 4, activation: tanh}\n"
	"  - {name: out, units: 3}\n";
static const char reg_yaml[] =
	"input: [3]\nloss: mse\nlayers:\n"
	"  - {name: h, units: 4, activation: relu}\n"
	"  - {name: out, units: 2}\n";

/*
 * The naive forward pass in double: h = act(W1 x + b1), z = W2 h + b2,
 * then softmax (classification) or z itself (regression).
 */
static void naive(const struct zm_model *m, const float *x, double *out,
                  double *logp)
{
	const struct zm_layer *l1 = &m->layers[0], *l2 = &m->layers[1];
	const float *w1 = l1->weight.data, *b1 = l1->bias.data;
	const float *w2 = l2->weight.data, *b2 = l2->bias.data;
	size_t nh = (size_t)l1->weight.shape[0], ni = (size_t)l1->weight.shape[1];
	size_t no = (size_t)l2->weight.shape[0], i, j;
	double h[16], z[16], mx, sum = 0;

	for (j = 0; j < nh; j++) {
		double s = b1[j];
		for (i = 0; i < ni; i++)
			s += (double)w1[j * ni + i] * x[i];
		h[j] = l1->spec->act == ZM_ACT_TANH ? tanh(s) : (s > 0 ? s : 0);
	}
	for (j = 0; j < no; j++) {
		double s = b2[j];
		for (i = 0; i < nh; i++)
			s += (double)w2[j * nh + i] * h[i];
		z[j] = s;
	}
	if (m->arch->loss == ZM_LOSS_MSE) {
		for (j = 0; j < no; j++)
			out[j] = z[j];
		return;
	}
	mx = z[0];
	for (j = 1; j < no; j++)
		mx = z[j] > mx ? z[j] : mx;
	for (j = 0; j < no; j++)
		sum += exp(z[j] - mx);
	for (j = 0; j < no; j++) {
		out[j] = exp(z[j] - mx) / sum;
		logp[j] = z[j] - mx - log(sum);
	}
}

/* Deterministic inputs in [-2, 2). */
static void fill_inputs(float *x, size_t count, unsigned seed)
{
	size_t i;

	for (i = 0; i < count; i++)
		x[i] = (float)((double)((i * 37 + seed * 11) % 41) / 10.25 - 2.0);
}

START_TEST(test_batch_vs_naive)
{
	const char *yaml = _i == 0 ? class_yaml : reg_yaml;
	struct zm_model *m = unit_model(yaml, 1);
	const struct zm_model *ms[1] = { m };
	struct zm_predictor *p;
	struct zm_error err;
	float x[7 * 3], scores[7 * 3], logp[7 * 3];
	double ref[3], reflp[3];
	size_t r, j, c;

	set_params(m, 0, 0.8);
	set_params(m, 1, 1.5);
	fill_inputs(x, 21, 3);
	ck_assert_int_eq(zm_predictor_new(ms, 1, 7, &p, &err), ZM_OK);
	c = p->out_features;
	ck_assert_uint_eq(c, _i == 0 ? 3 : 2);
	ck_assert_uint_eq(p->in_features, 3);
	zm_predict_batch(p, x, 7, scores, logp);
	for (r = 0; r < 7; r++) {
		double sum = 0;

		naive(m, x + r * 3, ref, reflp);
		for (j = 0; j < c; j++) {
			ck_assert_double_eq_tol(scores[r * c + j], ref[j], 1e-6);
			if (_i == 0)
				ck_assert_double_eq_tol(logp[r * c + j], reflp[j],
				                        1e-5);
			sum += scores[r * c + j];
		}
		if (_i == 0)
			ck_assert_double_eq_tol(sum, 1.0, 1e-6);
	}
	zm_predictor_free(p);
	zm_model_free(m);
}
END_TEST

/* Logits 2000 apart: probabilities stay finite and exact, the log of the
 * vanishing one stays finite (so the loss of a wrong label is finite). */
START_TEST(test_extreme_logits)
{
	struct zm_model *m = unit_model(
		"input: [1]\nlayers: [{name: out, units: 2}]\n", 1);
	const struct zm_model *ms[1] = { m };
	struct zm_predictor *p;
	struct zm_error err;
	float *w = m->layers[0].weight.data, *b = m->layers[0].bias.data;
	float x[1] = { 1 }, s[2], lp[2];

	w[0] = 1000;
	w[1] = -1000;
	b[0] = b[1] = 0;
	ck_assert_int_eq(zm_predictor_new(ms, 1, 1, &p, &err), ZM_OK);
	zm_predict_batch(p, x, 1, s, lp);
	ck_assert(s[0] == 1.0f);
	ck_assert(s[1] == 0.0f);
	ck_assert(lp[0] == 0.0f);
	ck_assert_double_eq_tol(lp[1], -2000.0, 1e-3);
	zm_predictor_free(p);
	zm_model_free(m);
}
END_TEST

START_TEST(test_bad_predictor_args)
{
	struct zm_model *m = unit_model(class_yaml, 1);
	const struct zm_model *ms[2] = { m, m };
	struct zm_predictor *p = (void *)1;
	struct zm_error err;

	ck_assert_int_eq(zm_predictor_new(ms, 0, 4, &p, &err), ZM_ERR_USAGE);
	ck_assert_ptr_null(p);
	ck_assert_int_eq(zm_predictor_new(ms, 1, 0, &p, &err), ZM_ERR_USAGE);
	zm_model_free(m);
}
END_TEST

START_TEST(test_argmax)
{
	const float a[4] = { 0.1f, 0.4f, 0.4f, 0.1f };
	const float b[3] = { -1, -3, -2 };

	ck_assert_uint_eq(zm_predict_argmax(a, 4), 1);
	ck_assert_uint_eq(zm_predict_argmax(b, 3), 0);
}
END_TEST

/* ---- metrics ---- */

static void make_labels(struct zm_tensor *y, const int64_t *v, size_t n)
{
	struct zm_error err;
	int64_t shape[1] = { (int64_t)n };

	zm_tensor_init(y);
	ck_assert_int_eq(zm_tensor_alloc(y, "y", ZM_DTYPE_I64, 1, shape, &err),
	                 ZM_OK);
	memcpy(y->data, v, n * sizeof(int64_t));
}

START_TEST(test_metrics_classification)
{
	/* Four rows of 3 classes; arg-max is 0, 1, 2, 0. */
	const float s[12] = { 0.5f, 0.3f, 0.2f,  0.1f, 0.8f, 0.1f,
	                      0.25f, 0.25f, 0.5f,  0.7f, 0.2f, 0.1f };
	const int64_t lab[4] = { 0, 2, 2, 1 };
	const int64_t bad[4] = { 0, 1, 3, 0 };
	float lp[12];
	struct zm_pred_metrics m;
	struct zm_tensor y, yb;
	struct zm_error err;
	double want;
	size_t i;

	for (i = 0; i < 12; i++)
		lp[i] = logf(s[i]);
	make_labels(&y, lab, 4);
	make_labels(&yb, bad, 4);
	zm_pred_metrics_init(&m, ZM_LOSS_CROSS_ENTROPY, 3);
	/* Rows 0-1 then 2-3, as two batches of the same tensor. */
	ck_assert_int_eq(zm_pred_metrics_add(&m, s, lp, &y, 0, 2, &err), ZM_OK);
	ck_assert_int_eq(zm_pred_metrics_add(&m, s + 6, lp + 6, &y, 2, 2, &err),
	                 ZM_OK);
	/* An unlabelled batch counts in rows only. */
	ck_assert_int_eq(zm_pred_metrics_add(&m, s, lp, NULL, 0, 3, &err), ZM_OK);
	ck_assert_uint_eq(m.rows, 7);
	ck_assert_uint_eq(m.labelled, 4);
	ck_assert_uint_eq(m.correct, 2);   /* rows 0 and 2 */
	want = -(log(0.5) + log(0.1) + log(0.5) + log(0.2)) / 4;
	ck_assert_double_eq_tol(zm_pred_metrics_loss(&m), want, 1e-6);
	ck_assert_double_eq_tol(zm_pred_metrics_accuracy(&m), 0.5, 1e-12);

	/* A label out of range names its row and changes nothing. */
	ck_assert_int_eq(zm_pred_metrics_add(&m, s, lp, &yb, 0, 4, &err),
	                 ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "row 2: label 3 out of range"));
	ck_assert_uint_eq(m.rows, 7);
	ck_assert_uint_eq(m.labelled, 4);
	ck_assert_uint_eq(m.correct, 2);
	ck_assert_double_eq_tol(zm_pred_metrics_loss(&m), want, 1e-6);
	zm_tensor_release(&y);
	zm_tensor_release(&yb);
}
END_TEST

START_TEST(test_metrics_regression)
{
	const float out[4] = { 1, 2,  0, -1 };
	const float tgt[4] = { 0, 4,  0.5f, -1 };
	int64_t shape[2] = { 2, 2 };
	struct zm_pred_metrics m;
	struct zm_tensor y, y1;
	struct zm_error err;

	zm_tensor_init(&y);
	ck_assert_int_eq(zm_tensor_alloc(&y, "y", ZM_DTYPE_F32, 2, shape, &err),
	                 ZM_OK);
	memcpy(y.data, tgt, sizeof(tgt));
	zm_pred_metrics_init(&m, ZM_LOSS_MSE, 2);
	ck_assert_int_eq(zm_pred_metrics_add(&m, out, NULL, &y, 0, 2, &err),
	                 ZM_OK);
	/* Row means of squared errors: (1 + 4) / 2 and (0.25 + 0) / 2. */
	ck_assert_double_eq_tol(zm_pred_metrics_loss(&m), (2.5 + 0.125) / 2,
	                        1e-12);
	ck_assert(isnan(zm_pred_metrics_accuracy(&m)));
	/* A [n] target for a 2-output model is refused. */
	zm_tensor_init(&y1);
	ck_assert_int_eq(zm_tensor_alloc(&y1, "y", ZM_DTYPE_F32, 1, shape, &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_pred_metrics_add(&m, out, NULL, &y1, 0, 2, &err),
	                 ZM_ERR_DATA);
	ck_assert_uint_eq(m.rows, 2);
	zm_tensor_release(&y);
	zm_tensor_release(&y1);
}
END_TEST

START_TEST(test_metrics_yaml)
{
	struct zm_pred_metrics m;
	struct zm_error err;
	char path[512], *text;

	snprintf(path, sizeof(path), "%s/m.yaml", unit_tmpdir());
	zm_pred_metrics_init(&m, ZM_LOSS_CROSS_ENTROPY, 3);
	m.rows = 10;
	ck_assert_int_eq(zm_pred_metrics_write(&m, NULL, path, &err), ZM_OK);
	text = unit_slurp(path, NULL);
	ck_assert_ptr_nonnull(text);
	ck_assert_str_eq(text, "rows: 10\n");
	free(text);
	m.labelled = 8;
	m.correct = 6;
	m.loss_sum = 2.0;
	ck_assert_int_eq(zm_pred_metrics_write(&m, "m\"0", path, &err), ZM_OK);
	text = unit_slurp(path, NULL);
	ck_assert_ptr_nonnull(text);
	ck_assert_str_eq(text, "model: \"m\\\"0\"\nrows: 10\nlabelled: 8\n"
	                 "correct: 6\naccuracy: 0.75\nloss: 0.25\n");
	free(text);
	/* A directory that does not exist: an error, no file. */
	snprintf(path, sizeof(path), "%s/no/such/m.yaml", unit_tmpdir());
	ck_assert_int_ne(zm_pred_metrics_write(&m, NULL, path, &err), ZM_OK);
}
END_TEST

/* ---- documents and writers ---- */

/* A data document of n rows of width d from fill_inputs, with labels
 * r % 3 and, when with_id, ids 100 + r. */
static void make_doc(struct zm_doc *doc, size_t n, size_t d, bool with_id,
                     unsigned seed)
{
	struct zm_tensor t;
	struct zm_error err;
	int64_t shape[2] = { (int64_t)n, (int64_t)d };
	size_t r;

	zm_doc_init(doc);
	ck_assert_int_eq(zm_tensor_alloc(&t, "x", ZM_DTYPE_F32, 2, shape, &err),
	                 ZM_OK);
	fill_inputs(t.data, n * d, seed);
	ck_assert_int_eq(zm_doc_add(doc, &t, &err), ZM_OK);
	ck_assert_int_eq(zm_tensor_alloc(&t, "y", ZM_DTYPE_I64, 1, shape, &err),
	                 ZM_OK);
	for (r = 0; r < n; r++)
		((int64_t *)t.data)[r] = (int64_t)(r % 3);
	ck_assert_int_eq(zm_doc_add(doc, &t, &err), ZM_OK);
	if (with_id) {
		ck_assert_int_eq(zm_tensor_alloc(&t, "id", ZM_DTYPE_I64, 1, shape,
		                                 &err), ZM_OK);
		for (r = 0; r < n; r++)
			((int64_t *)t.data)[r] = (int64_t)(100 + r);
		ck_assert_int_eq(zm_doc_add(doc, &t, &err), ZM_OK);
	}
}

/*
 * Two documents (10 rows with ids, then 5 without) through batches of 4:
 * the CSV must hold the header, the ids (given, then running indices
 * 10..14) and the naive probabilities, and the metrics must match
 * accuracy and loss recomputed from the naive reference.
 */
START_TEST(test_doc_csv)
{
	struct zm_model *m = unit_model(class_yaml, 1);
	const struct zm_model *ms[1] = { m };
	struct zm_predictor *p;
	struct zm_pred_writer *w;
	struct zm_pred_metrics met;
	struct zm_doc d1, d2;
	struct zm_error err;
	char path[512], line[512];
	uint64_t row = 0;
	size_t r, correct = 0;
	double loss = 0;
	FILE *f;

	set_params(m, 0, 0.8);
	set_params(m, 1, 1.5);
	make_doc(&d1, 10, 3, true, 1);
	make_doc(&d2, 5, 3, false, 2);
	snprintf(path, sizeof(path), "%s/p.csv", unit_tmpdir());
	ck_assert_int_eq(zm_predictor_new(ms, 1, 4, &p, &err), ZM_OK);
	zm_pred_metrics_init(&met, p->loss, p->out_features);
	ck_assert_int_eq(zm_pred_writer_open(&w, path, ZM_PRED_CSV, p->loss, 3,
	                                     ZM_COMPRESS_AUTO, "m", NULL, &err), ZM_OK);
	ck_assert_int_eq(zm_predict_doc(p, &d1, "d: document 1", &row, w, &met,
	                                &err), ZM_OK);
	ck_assert_uint_eq(row, 10);
	ck_assert_int_eq(zm_predict_doc(p, &d2, "d: document 2", &row, w, &met,
	                                &err), ZM_OK);
	ck_assert_uint_eq(row, 15);
	ck_assert_int_eq(zm_pred_writer_commit(w, &err), ZM_OK);

	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
	ck_assert_str_eq(line, "id,pred,p_0,p_1,p_2\n");
	for (r = 0; r < 15; r++) {
		const struct zm_doc *doc = r < 10 ? &d1 : &d2;
		size_t k = r < 10 ? r : r - 10, best = 0, j;
		double ref[3], reflp[3], p0, p1, p2;
		long long id, pr;

		naive(m, (const float *)zm_doc_find(doc, "x")->data + k * 3, ref,
		      reflp);
		for (j = 1; j < 3; j++)
			if (ref[j] > ref[best])
				best = j;
		ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
		ck_assert_int_eq(sscanf(line, "%lld,%lld,%lf,%lf,%lf", &id, &pr,
		                        &p0, &p1, &p2), 5);
		ck_assert_int_eq(id, r < 10 ? (long long)(100 + r) : (long long)r);
		ck_assert_int_eq(pr, (long long)best);
		ck_assert_double_eq_tol(p0, ref[0], 1e-6);
		ck_assert_double_eq_tol(p1, ref[1], 1e-6);
		ck_assert_double_eq_tol(p2, ref[2], 1e-6);
		if (best == k % 3)
			correct++;
		loss -= reflp[k % 3];
	}
	ck_assert_ptr_null(fgets(line, sizeof(line), f));
	fclose(f);
	ck_assert_uint_eq(met.rows, 15);
	ck_assert_uint_eq(met.labelled, 15);
	ck_assert_uint_eq(met.correct, correct);
	ck_assert_double_eq_tol(zm_pred_metrics_loss(&met), loss / 15, 1e-5);

	zm_doc_release(&d1);
	zm_doc_release(&d2);
	zm_predictor_free(p);
	zm_model_free(m);
}
END_TEST

/* The stream writer, read back: one document per batch with id, pred and
 * p; regression writes id and y. */
START_TEST(test_stream_writer)
{
	const float s[6] = { 0.2f, 0.7f, 0.1f,  0.6f, 0.3f, 0.1f };
	const int64_t ids[2] = { 42, -7 };
	struct zm_pred_writer *w;
	struct zm_reader *r;
	struct zm_doc doc;
	struct zm_error err;
	const struct zm_tensor *t;
	char path[512];
	bool eof;
	bool cls = _i == 0;

	snprintf(path, sizeof(path), "%s/p%d.safetensors.gz", unit_tmpdir(), _i);
	ck_assert_int_eq(zm_pred_writer_open(&w, path, ZM_PRED_STREAM,
	                                     cls ? ZM_LOSS_CROSS_ENTROPY :
	                                     ZM_LOSS_MSE, 3, 1, "mm", NULL, &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_pred_writer_write(w, ids, s, 2, &err), ZM_OK);
	ck_assert_int_eq(zm_pred_writer_write(w, NULL, s + 3, 1, &err), ZM_OK);
	ck_assert_int_eq(zm_pred_writer_commit(w, &err), ZM_OK);

	zm_doc_init(&doc);
	ck_assert_int_eq(zm_reader_open(&r, path, &err), ZM_OK);
	ck_assert_int_eq(zm_reader_next(r, &doc, &eof, &err), ZM_OK);
	ck_assert(!eof);
	ck_assert_str_eq(zm_doc_meta(&doc, "zm.kind"), "data");
	ck_assert_str_eq(zm_doc_meta(&doc, "zm.samples"), "2");
	ck_assert_str_eq(zm_doc_meta(&doc, "zm.model"), "mm");
	t = zm_doc_find(&doc, "id");
	ck_assert(t && t->dtype == ZM_DTYPE_I64 && t->shape[0] == 2);
	ck_assert_int_eq(((int64_t *)t->data)[0], 42);
	ck_assert_int_eq(((int64_t *)t->data)[1], -7);
	t = zm_doc_find(&doc, "pred");
	if (cls) {
		ck_assert(t && t->dtype == ZM_DTYPE_I64 && t->shape[0] == 2);
		ck_assert_int_eq(((int64_t *)t->data)[0], 1);
		ck_assert_int_eq(((int64_t *)t->data)[1], 0);
	} else {
		ck_assert_ptr_null(t);
	}
	t = zm_doc_find(&doc, cls ? "p" : "y");
	ck_assert(t && t->dtype == ZM_DTYPE_F32 && t->ndim == 2 &&
	          t->shape[0] == 2 && t->shape[1] == 3);
	ck_assert(memcmp(t->data, s, sizeof(s)) == 0);
	/* The second document continues the running index at 2. */
	ck_assert_int_eq(zm_reader_next(r, &doc, &eof, &err), ZM_OK);
	ck_assert(!eof);
	t = zm_doc_find(&doc, "id");
	ck_assert(t && t->shape[0] == 1);
	ck_assert_int_eq(((int64_t *)t->data)[0], 2);
	ck_assert_int_eq(zm_reader_next(r, &doc, &eof, &err), ZM_OK);
	ck_assert(eof);
	zm_reader_close(r);
	zm_doc_release(&doc);
}
END_TEST

/* An aborted writer leaves no file behind. */
START_TEST(test_writer_abort)
{
	const float s[3] = { 0.2f, 0.7f, 0.1f };
	struct zm_pred_writer *w;
	struct zm_error err;
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/aborted.csv", unit_tmpdir());
	ck_assert_int_eq(zm_pred_writer_open(&w, path, ZM_PRED_CSV,
	                                     ZM_LOSS_CROSS_ENTROPY, 3,
	                                     ZM_COMPRESS_AUTO, NULL, NULL, &err), ZM_OK);
	ck_assert_int_eq(zm_pred_writer_write(w, NULL, s, 1, &err), ZM_OK);
	zm_pred_writer_abort(w);
	f = fopen(path, "r");
	ck_assert_ptr_null(f);
}
END_TEST

START_TEST(test_doc_errors)
{
	struct zm_model *m = unit_model(class_yaml, 1);
	const struct zm_model *ms[1] = { m };
	struct zm_predictor *p;
	struct zm_pred_metrics met;
	struct zm_doc d;
	struct zm_error err;
	uint64_t row = 20;
	float *x;

	ck_assert_int_eq(zm_predictor_new(ms, 1, 4, &p, &err), ZM_OK);
	zm_pred_metrics_init(&met, p->loss, p->out_features);

	/* Width 5 for a 3-input model. */
	make_doc(&d, 2, 5, false, 1);
	ck_assert_int_eq(zm_predict_doc(p, &d, "in: document 4", &row, NULL,
	                                &met, &err), ZM_ERR_DATA);
	ck_assert_str_eq(err.msg, "in: document 4: the input has 5 features "
	                 "per row, the model expects 3");
	zm_doc_release(&d);

	/* A NaN in row 6, feature 1; then an infinity. */
	make_doc(&d, 8, 3, false, 1);
	x = zm_doc_find(&d, "x")->data;
	x[6 * 3 + 1] = NAN;
	ck_assert_int_eq(zm_predict_doc(p, &d, "in: document 2", &row, NULL,
	                                &met, &err), ZM_ERR_DATA);
	ck_assert_str_eq(err.msg, "in: document 2: row 6 (input row 26), "
	                 "feature 1: NaN input");
	x[6 * 3 + 1] = 0;
	x[3 * 3 + 2] = -INFINITY;
	ck_assert_int_eq(zm_predict_doc(p, &d, "in: document 2", &row, NULL,
	                                &met, &err), ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "row 3 (input row 23), feature "
	                             "2: infinite"));
	ck_assert_uint_eq(row, 20);
	ck_assert_uint_eq(met.rows, 0);

	/* A label out of range in the second batch names the row. */
	x[3 * 3 + 2] = 0;
	((int64_t *)zm_doc_find(&d, "y")->data)[5] = 3;
	ck_assert_int_eq(zm_predict_doc(p, &d, "in: document 2", &row, NULL,
	                                &met, &err), ZM_ERR_DATA);
	ck_assert_str_eq(err.msg, "in: document 2: row 5: label 3 out of range "
	                 "[0, 3)");
	zm_doc_release(&d);

	/* No x at all. */
	zm_doc_init(&d);
	ck_assert_int_eq(zm_predict_doc(p, &d, "in: document 1", &row, NULL,
	                                &met, &err), ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "in: document 1"));
	zm_doc_release(&d);
	zm_predictor_free(p);
	zm_model_free(m);
}
END_TEST

Suite *suite_predict(void)
{
	Suite *s = suite_create("predict");
	TCase *tc = tcase_create("predict");

	tcase_add_loop_test(tc, test_batch_vs_naive, 0, 2);
	tcase_add_test(tc, test_extreme_logits);
	tcase_add_test(tc, test_bad_predictor_args);
	tcase_add_test(tc, test_argmax);
	tcase_add_test(tc, test_metrics_classification);
	tcase_add_test(tc, test_metrics_regression);
	tcase_add_test(tc, test_metrics_yaml);
	tcase_add_test(tc, test_doc_csv);
	tcase_add_loop_test(tc, test_stream_writer, 0, 2);
	tcase_add_test(tc, test_writer_abort);
	tcase_add_test(tc, test_doc_errors);
	suite_add_tcase(s, tc);
	return s;
}
