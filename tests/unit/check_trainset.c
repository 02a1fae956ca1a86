/*
 * Training sets: loading streams written here (U8 with zm.scale and F32,
 * several documents) and gathering rows against the values written; the
 * hashed held-out split (determinism, seeds, fraction within 3 sigma,
 * independence from row order); width mismatches and the memory cap;
 * zm_fit lowering an independently computed loss; and the profile of the
 * training rows against two-pass statistics and a naive forward pass.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "model.h"
#include "profile.h"
#include "stream.h"
#include "trainset.h"
#include "unit.h"

/* xorshift64*, so the data needs no libc RNG state. */
static uint64_t rng_state = 88172645463325252ULL;

static double urand(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (double)((rng_state * 2685821657736338717ULL) >> 11) /
	       9007199254740992.0;
}

/* One data document: x U8 (when u8) or F32 [n, d], y I64 [n], and id I64
 * [n] when ids is not NULL; scale goes to zm.scale when not NULL. */
struct batch {
	size_t n, d;
	bool u8;
	const uint8_t *xu;
	const float *xf;
	const int64_t *y;
	const int64_t *ids;
	const char *scale;
	const char *slice;
};

static void add_batch(struct zm_writer *w, const struct batch *b)
{
	struct zm_doc doc;
	struct zm_tensor t;
	struct zm_error err;
	int64_t shape[2] = { (int64_t)b->n, (int64_t)b->d };

	zm_doc_init(&doc);
	zm_tensor_init(&t);
	ck_assert_int_eq(zm_tensor_alloc(&t, "x", b->u8 ? ZM_DTYPE_U8 :
	                                 ZM_DTYPE_F32, 2, shape, &err), ZM_OK);
	memcpy(t.data, b->u8 ? (const void *)b->xu : (const void *)b->xf,
	       t.nbytes);
	ck_assert_int_eq(zm_doc_add(&doc, &t, &err), ZM_OK);
	ck_assert_int_eq(zm_tensor_alloc(&t, "y", ZM_DTYPE_I64, 1, shape, &err),
	                 ZM_OK);
	memcpy(t.data, b->y, t.nbytes);
	ck_assert_int_eq(zm_doc_add(&doc, &t, &err), ZM_OK);
	if (b->ids) {
		ck_assert_int_eq(zm_tensor_alloc(&t, "id", ZM_DTYPE_I64, 1,
		                                 shape, &err), ZM_OK);
		memcpy(t.data, b->ids, t.nbytes);
		ck_assert_int_eq(zm_doc_add(&doc, &t, &err), ZM_OK);
	}
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.kind", "data", &err), ZM_OK);
	if (b->scale)
		ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.scale", b->scale,
		                                 &err), ZM_OK);
	if (b->slice)
		ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.slice", b->slice,
		                                 &err), ZM_OK);
	if (zm_writer_write_doc(w, &doc, &err) != ZM_OK)
		ck_abort_msg("write: %s", err.msg);
	zm_doc_release(&doc);
}

/* Writes the batches as one stream file in a fresh directory; returns
 * its path (static). */
static const char *write_stream(const struct batch *b, size_t count)
{
	static char path[4096];
	struct zm_writer *w;
	struct zm_error err;
	size_t i;

	snprintf(path, sizeof(path), "%s/data.safetensors.gz", unit_tmpdir());
	ck_assert_int_eq(zm_writer_open(&w, path, 1, &err), ZM_OK);
	for (i = 0; i < count; i++)
		add_batch(w, &b[i]);
	ck_assert_int_eq(zm_writer_commit(w, &err), ZM_OK);
	return path;
}

static void load(struct zm_trainset *ts, const char *path, uint64_t cap)
{
	struct zm_error err;

	zm_trainset_init(ts, cap);
	if (zm_trainset_load(ts, path, &err) != ZM_OK)
		ck_abort_msg("load: %s", err.msg);
}

static size_t *iota(size_t n)
{
	size_t *idx = malloc(n * sizeof(*idx) + 1), i;

	ck_assert_ptr_nonnull(idx);
	for (i = 0; i < n; i++)
		idx[i] = i;
	return idx;
}

/*
 * Two U8 documents with the same zm.scale stay one byte a value; a third,
 * F32, document widens the set.  Either way gather returns x * scale for
 * U8 rows and x for F32 rows, in the order asked, with their labels.
 */
START_TEST(test_load_gather)
{
	enum { D = 5, N1 = 7, N2 = 4, N3 = 6, N = N1 + N2 + N3 };
	uint8_t xu1[N1 * D], xu2[N2 * D];
	float xf3[N3 * D], want[N * D], got[N * D];
	int64_t y[N], ids1[N1], ygot[N];
	const float scale = 1.0f / 255.0f;
	struct zm_trainset ts;
	size_t i, j, order[N];
	const char *path;

	for (i = 0; i < N1 * D; i++)
		xu1[i] = (uint8_t)(urand() * 256);
	for (i = 0; i < N2 * D; i++)
		xu2[i] = (uint8_t)(urand() * 256);
	for (i = 0; i < N3 * D; i++)
		xf3[i] = (float)(urand() * 4 - 2);
	for (i = 0; i < N; i++)
		y[i] = (int64_t)(i % 3);
	for (i = 0; i < N1; i++)
		ids1[i] = 1000 + (int64_t)i * 7;
	/* What each row must read as, computed from what was written. */
	for (i = 0; i < N1 * D; i++)
		want[i] = (float)xu1[i] * scale;
	for (i = 0; i < N2 * D; i++)
		want[N1 * D + i] = (float)xu2[i] * scale;
	for (i = 0; i < N3 * D; i++)
		want[(N1 + N2) * D + i] = xf3[i];

	{
		struct batch b[2] = {
			{ N1, D, true, xu1, NULL, y, ids1, "0.00392156886", "s1" },
			{ N2, D, true, xu2, NULL, y + N1, NULL, "0.00392156886",
			  "other" },
		};
		path = write_stream(b, 2);
	}
	load(&ts, path, 1 << 20);
	ck_assert_uint_eq(ts.rows, N1 + N2);
	ck_assert_uint_eq(ts.features, D);
	ck_assert(ts.x_u8);                 /* stored one byte a value */
	ck_assert_ptr_nonnull(ts.labels);
	ck_assert_ptr_null(ts.targets);
	ck_assert_str_eq(ts.slice, "s1");   /* the first document's */
	/* Ids from the id tensor; rows without one get their position. */
	for (i = 0; i < N1; i++)
		ck_assert_int_eq(ts.ids[i], ids1[i]);
	for (i = N1; i < N1 + N2; i++)
		ck_assert_int_eq(ts.ids[i], (int64_t)i);
	for (i = 0; i < N1 + N2; i++)
		order[i] = N1 + N2 - 1 - i;
	zm_trainset_gather(&ts, order, N1 + N2, got, ygot);
	for (i = 0; i < N1 + N2; i++) {
		ck_assert_int_eq(ygot[i], y[order[i]]);
		for (j = 0; j < D; j++)
			ck_assert_float_eq_tol(got[i * D + j],
			                       want[order[i] * D + j], 1e-7);
	}
	zm_trainset_release(&ts);

	{
		struct batch b[3] = {
			{ N1, D, true, xu1, NULL, y, ids1, "0.00392156886", NULL },
			{ N2, D, true, xu2, NULL, y + N1, NULL, "0.00392156886",
			  NULL },
			{ N3, D, false, NULL, xf3, y + N1 + N2, NULL, NULL, NULL },
		};
		path = write_stream(b, 3);
	}
	load(&ts, path, 1 << 20);
	ck_assert_uint_eq(ts.rows, N);
	ck_assert(!ts.x_u8);
	ck_assert_ptr_null(ts.slice);
	for (i = 0; i < N; i++)
		order[i] = (i * 5) % N;     /* a permutation: gcd(5, 17) = 1 */
	zm_trainset_gather(&ts, order, N, got, ygot);
	for (i = 0; i < N; i++) {
		ck_assert_int_eq(ygot[i], y[order[i]]);
		for (j = 0; j < D; j++)
			ck_assert_float_eq_tol(got[i * D + j],
			                       want[order[i] * D + j], 1e-7);
	}
	/* y may be NULL. */
	memset(got, 0, sizeof(got));
	zm_trainset_gather(&ts, order, 3, got, NULL);
	ck_assert_float_eq_tol(got[D + 1], want[order[1] * D + 1], 1e-7);
	zm_trainset_release(&ts);
}
END_TEST

/* U8 documents with different scales cannot share one byte storage: the
 * set widens, and each row keeps its own document's scale. */
START_TEST(test_load_mixed_scales)
{
	enum { D = 3, N1 = 4, N2 = 5 };
	uint8_t xu1[N1 * D], xu2[N2 * D];
	int64_t y[N1 + N2] = { 0 };
	float got[(N1 + N2) * D];
	struct zm_trainset ts;
	size_t *idx = iota(N1 + N2), i;
	struct batch b[2] = {
		{ N1, D, true, xu1, NULL, y, NULL, "0.5", NULL },
		{ N2, D, true, xu2, NULL, y + N1, NULL, "0.25", NULL },
	};

	for (i = 0; i < N1 * D; i++)
		xu1[i] = (uint8_t)(i * 11 + 3);
	for (i = 0; i < N2 * D; i++)
		xu2[i] = (uint8_t)(250 - i * 13);
	load(&ts, write_stream(b, 2), 1 << 20);
	zm_trainset_gather(&ts, idx, N1 + N2, got, NULL);
	for (i = 0; i < N1 * D; i++)
		ck_assert_float_eq(got[i], (float)xu1[i] * 0.5f);
	for (i = 0; i < N2 * D; i++)
		ck_assert_float_eq(got[N1 * D + i], (float)xu2[i] * 0.25f);
	zm_trainset_release(&ts);
	free(idx);
}
END_TEST

START_TEST(test_width_mismatch)
{
	float x1[2 * 3] = { 0 }, x2[2 * 4] = { 0 };
	int64_t y[2] = { 0, 1 };
	struct batch b[3] = {
		{ 2, 3, false, NULL, x1, y, NULL, NULL, NULL },
		{ 2, 3, false, NULL, x1, y, NULL, NULL, NULL },
		{ 2, 4, false, NULL, x2, y, NULL, NULL, NULL },
	};
	const char *path = write_stream(b, 3);
	struct zm_trainset ts;
	struct zm_error err;

	zm_trainset_init(&ts, 1 << 20);
	ck_assert_int_eq(zm_trainset_load(&ts, path, &err), ZM_ERR_DATA);
	ck_assert_msg(strstr(err.msg, "document 3") != NULL, "%s", err.msg);
	ck_assert_msg(strstr(err.msg, path) != NULL, "%s", err.msg);
	ck_assert_msg(strstr(err.msg, "4 features") != NULL, "%s", err.msg);
	zm_trainset_release(&ts);
}
END_TEST

START_TEST(test_bad_data)
{
	float x[2 * 2] = { 1, 2, NAN, 4 };
	int64_t y[2] = { 0, 1 }, yneg[2] = { 0, -1 };
	struct zm_trainset ts;
	struct zm_error err;
	const char *path;

	{
		struct batch b[2] = {
			{ 1, 2, false, NULL, x, y, NULL, NULL, NULL },
			{ 2, 2, false, NULL, x, y, NULL, NULL, NULL },
		};
		path = write_stream(b, 2);
	}
	zm_trainset_init(&ts, 1 << 20);
	ck_assert_int_eq(zm_trainset_load(&ts, path, &err), ZM_ERR_DATA);
	ck_assert_msg(strstr(err.msg, "document 2") != NULL, "%s", err.msg);
	zm_trainset_release(&ts);

	x[2] = 3;
	{
		struct batch b[1] = {
			{ 2, 2, false, NULL, x, yneg, NULL, NULL, NULL },
		};
		path = write_stream(b, 1);
	}
	zm_trainset_init(&ts, 1 << 20);
	ck_assert_int_eq(zm_trainset_load(&ts, path, &err), ZM_ERR_DATA);
	ck_assert_msg(strstr(err.msg, "negative") != NULL, "%s", err.msg);
	zm_trainset_release(&ts);

	/* An empty stream has no rows to train on. */
	path = write_stream(NULL, 0);
	zm_trainset_init(&ts, 1 << 20);
	ck_assert_int_eq(zm_trainset_load(&ts, path, &err), ZM_ERR_DATA);
	ck_assert_msg(strstr(err.msg, "no rows") != NULL, "%s", err.msg);
	zm_trainset_release(&ts);
}
END_TEST

/*
 * The cap: the set needs at least its bytes of x plus an id and a label
 * (8 bytes each) per row.  Below the x bytes alone it must refuse, naming
 * the file; with room for x, ids and labels it must load.  A cap between
 * the first document and both refuses in the second.
 */
START_TEST(test_max_bytes)
{
	enum { D = 10, N = 300 };
	uint8_t x[N * D];
	int64_t y[N] = { 0 };
	struct batch b[2] = {
		{ N, D, true, x, NULL, y, NULL, "1", NULL },
		{ N, D, true, x, NULL, y, NULL, "1", NULL },
	};
	const char *path;
	struct zm_trainset ts;
	struct zm_error err;

	memset(x, 7, sizeof(x));
	path = write_stream(b, 2);
	zm_trainset_init(&ts, (uint64_t)N * D - 1);
	ck_assert_int_eq(zm_trainset_load(&ts, path, &err), ZM_ERR_NOMEM);
	ck_assert_msg(strstr(err.msg, path) != NULL, "%s", err.msg);
	/* The library says which limit, the program names its option. */
	ck_assert(ts.over_limit);
	ck_assert_msg(strstr(err.msg, "MiB allowed") != NULL, "%s", err.msg);
	ck_assert_msg(strstr(err.msg, "--") == NULL, "%s", err.msg);
	zm_trainset_release(&ts);

	/* The first document makes room for 1024 rows; the cap must hold
	 * for the second one too, not only when the buffer grows. */
	zm_trainset_init(&ts, (uint64_t)N * (D + 16) + (uint64_t)N * D);
	ck_assert_int_eq(zm_trainset_load(&ts, path, &err), ZM_ERR_NOMEM);
	zm_trainset_release(&ts);

	load(&ts, path, (uint64_t)2 * N * (D + 16));
	ck_assert_uint_eq(ts.rows, 2 * N);
	zm_trainset_release(&ts);
}
END_TEST

/* A one-feature stream of n rows whose ids are ids[] (row order as
 * given). */
static const char *id_stream(const int64_t *ids, size_t n)
{
	float *x = malloc(n * sizeof(*x) + 1);
	int64_t *y = calloc(n + 1, sizeof(*y));
	struct batch b[2];
	const char *path;
	size_t half = n / 2, i;

	ck_assert_ptr_nonnull(x);
	ck_assert_ptr_nonnull(y);
	for (i = 0; i < n; i++)
		x[i] = (float)ids[i];
	b[0] = (struct batch){ half, 1, false, NULL, x, y, ids, NULL, NULL };
	b[1] = (struct batch){ n - half, 1, false, NULL, x + half, y + half,
	                       ids + half, NULL, NULL };
	path = write_stream(b, 2);
	free(x);
	free(y);
	return path;
}

/* held[id - base] = whether the row with that id is held out. */
static void held_out(const struct zm_trainset *ts, int64_t base, bool *held)
{
	size_t i;

	ck_assert_uint_eq(ts->n_train + ts->n_val, ts->rows);
	for (i = 0; i < ts->rows; i++)
		held[ts->ids[i] - base] = false;
	for (i = 0; i < ts->n_val; i++)
		held[ts->ids[ts->val_idx[i]] - base] = true;
}

START_TEST(test_split)
{
	enum { N = 10000 };
	const double f = 0.2;
	const int64_t base = 5000;
	int64_t *ids = malloc(N * sizeof(*ids)), *shuffled;
	bool *h1 = malloc(N), *h1b = malloc(N), *h2 = malloc(N), *hs = malloc(N);
	struct zm_trainset ts, tp;
	struct zm_error err;
	size_t i, n_val1, both = 0, differ = 0;
	double sigma = sqrt(N * f * (1 - f));

	ck_assert(ids && h1 && h1b && h2 && hs);
	for (i = 0; i < N; i++)
		ids[i] = base + (int64_t)i;
	load(&ts, id_stream(ids, N), 1 << 24);

	ck_assert_int_eq(zm_trainset_split(&ts, f, 1, &err), ZM_OK);
	held_out(&ts, base, h1);
	n_val1 = ts.n_val;
	/* Each index appears once, in ascending order, on its side. */
	for (i = 1; i < ts.n_val; i++)
		ck_assert_uint_lt(ts.val_idx[i - 1], ts.val_idx[i]);
	for (i = 1; i < ts.n_train; i++)
		ck_assert_uint_lt(ts.train_idx[i - 1], ts.train_idx[i]);
	/* Binomial(N, f): within 3 sigma. */
	ck_assert_msg(fabs((double)n_val1 - N * f) < 3 * sigma,
	              "%zu held out of %d, expected %.0f +- %.0f", n_val1, N,
	              N * f, 3 * sigma);

	/* Deterministic: the same seed again (replacing the split). */
	ck_assert_int_eq(zm_trainset_split(&ts, f, 1, &err), ZM_OK);
	held_out(&ts, base, h1b);
	ck_assert_uint_eq(ts.n_val, n_val1);
	ck_assert_int_eq(memcmp(h1, h1b, N), 0);

	/* Another seed: another split, about independent of the first (the
	 * overlap is Binomial(N, f^2) when it is). */
	ck_assert_int_eq(zm_trainset_split(&ts, f, 2, &err), ZM_OK);
	held_out(&ts, base, h2);
	for (i = 0; i < N; i++) {
		both += h1[i] && h2[i];
		differ += h1[i] != h2[i];
	}
	ck_assert_uint_gt(differ, 0);
	ck_assert_msg(fabs((double)both - N * f * f) <
	              4 * sqrt(N * f * f * (1 - f * f)),
	              "overlap %zu, expected %.0f", both, N * f * f);

	/* Another row order, the same ids on the same side. */
	shuffled = malloc(N * sizeof(*shuffled));
	ck_assert_ptr_nonnull(shuffled);
	for (i = 0; i < N; i++)
		shuffled[i] = ids[(i * 7919) % N];   /* 7919 is prime */
	load(&tp, id_stream(shuffled, N), 1 << 24);
	ck_assert_int_eq(zm_trainset_split(&tp, f, 1, &err), ZM_OK);
	held_out(&tp, base, hs);
	ck_assert_int_eq(memcmp(h1, hs, N), 0);
	zm_trainset_release(&tp);

	/* 0 holds out nothing; holding out everything is an error. */
	ck_assert_int_eq(zm_trainset_split(&ts, 0, 1, &err), ZM_OK);
	ck_assert_uint_eq(ts.n_val, 0);
	ck_assert_uint_eq(ts.n_train, N);
	ck_assert_int_eq(zm_trainset_split(&ts, 1.0, 1, &err), ZM_ERR_DATA);
	zm_trainset_release(&ts);
	free(shuffled);
	free(ids);
	free(h1);
	free(h1b);
	free(h2);
	free(hs);
}
END_TEST

/* Mean softmax cross-entropy and accuracy of a one-layer linear model
 * over rows, computed in double straight from the weights. */
static void naive_loss(const struct zm_model *m, const float *x,
                       const int64_t *y, size_t n, size_t d, size_t c,
                       double *loss, double *acc)
{
	const float *w = m->layers[0].weight.data, *b = m->layers[0].bias.data;
	double total = 0, z[8], mx, s;
	size_t i, j, k, best, right = 0;

	ck_assert_uint_le(c, 8);
	for (i = 0; i < n; i++) {
		mx = -INFINITY;
		best = 0;
		for (j = 0; j < c; j++) {
			z[j] = b[j];
			for (k = 0; k < d; k++)
				z[j] += (double)w[j * d + k] * x[i * d + k];
			if (z[j] > mx) {
				mx = z[j];
				best = j;
			}
		}
		s = 0;
		for (j = 0; j < c; j++)
			s += exp(z[j] - mx);
		total += mx + log(s) - z[y[i]];
		right += (int64_t)best == y[i];
	}
	*loss = total / (double)n;
	*acc = (double)right / (double)n;
}

struct fit_log {
	size_t epoch_ends, steps_seen;
	double first, last;
	size_t val_rows;
};

static void on_report(const struct zm_fit_report *r, void *ctx)
{
	struct fit_log *log = ctx;

	if (!r->epoch_end) {
		log->steps_seen++;
		return;
	}
	if (log->epoch_ends++ == 0)
		log->first = r->train_loss;
	log->last = r->train_loss;
	log->val_rows = r->val_rows;
	ck_assert_uint_eq(r->epoch, log->epoch_ends);
}

START_TEST(test_fit_separable)
{
	enum { N = 400, D = 2, C = 2 };
	float x[N * D];
	int64_t y[N];
	struct zm_model *m = unit_model("input: [2]\nlayers:\n"
	                                "  - {name: out, units: 2}\n", 5);
	struct batch b[1] = { { N, D, false, NULL, x, y, NULL, NULL, NULL } };
	struct zm_trainset ts;
	struct zm_fit_config cfg;
	struct zm_fit_report last;
	struct fit_log log = { 0, 0, 0, 0, 0 };
	struct zm_error err;
	double before, after, acc0, acc;
	size_t i;

	/* Class 1 when x0 > x1, with a margin. */
	for (i = 0; i < N; i++) {
		double a = urand() * 2 - 1, c = urand() * 2 - 1;
		y[i] = (int64_t)(i % 2);
		if ((a > c) != (y[i] == 1)) {
			double t = a;
			a = c;
			c = t;
		}
		a += y[i] ? 0.2 : -0.2;
		x[i * D] = (float)a;
		x[i * D + 1] = (float)c;
	}
	load(&ts, write_stream(b, 1), 1 << 20);
	ck_assert_int_eq(zm_trainset_split(&ts, 0.25, 3, &err), ZM_OK);
	naive_loss(m, x, y, N, D, C, &before, &acc0);

	zm_fit_config_default(&cfg);
	cfg.epochs = 15;
	cfg.batch_size = 16;
	cfg.optim.lr = 0.5;
	cfg.seed = 9;
	cfg.log_every = 10;
	if (zm_fit(m, &ts, &cfg, on_report, &log, &last, &err) != ZM_OK)
		ck_abort_msg("fit: %s", err.msg);
	naive_loss(m, x, y, N, D, C, &after, &acc);
	ck_assert_msg(after < 0.5 * before, "loss %g -> %g", before, after);
	ck_assert_msg(acc > 0.95, "accuracy %g (was %g)", acc, acc0);
	ck_assert_uint_eq(log.epoch_ends, 15);
	ck_assert_double_lt(log.last, log.first);
	ck_assert_uint_eq(log.val_rows, ts.n_val);
	ck_assert_uint_eq(log.steps_seen,
	                  15 * ((ts.n_train + 15) / 16) / 10);
	ck_assert(last.epoch_end);
	ck_assert_uint_eq(last.epoch, 15);
	ck_assert_uint_eq(last.train_rows, ts.n_train);
	ck_assert(last.classification);
	ck_assert_double_gt(last.val_accuracy, 0.9);

	/* zm_trainset_evaluate: the held-out rows only, against the naive
	 * loss over those rows. */
	{
		struct zm_batch_stats vs;
		float *xv = malloc(ts.n_val * D * sizeof(*xv) + 1);
		int64_t *yv = malloc(ts.n_val * sizeof(*yv) + 1);
		double vloss, vacc;
		ck_assert(xv && yv);
		for (i = 0; i < ts.n_val; i++) {
			size_t r = ts.val_idx[i];
			xv[i * D] = x[r * D];
			xv[i * D + 1] = x[r * D + 1];
			yv[i] = y[r];
		}
		naive_loss(m, xv, yv, ts.n_val, D, C, &vloss, &vacc);
		ck_assert_int_eq(zm_trainset_evaluate(m, &ts, &vs, &err), ZM_OK);
		ck_assert_uint_eq(vs.rows, ts.n_val);
		ck_assert_double_eq_tol(vs.loss_sum / (double)vs.rows, vloss,
		                        1e-5);
		ck_assert_double_eq_tol((double)vs.correct / (double)vs.rows,
		                        vacc, 1e-12);
		ck_assert_double_eq_tol(last.val_loss, vloss, 1e-5);
		free(xv);
		free(yv);
	}

	/* A step scale of 0 (an assignment weight of 0) changes nothing. */
	{
		struct zm_model *m0 = unit_model("input: [2]\nlayers:\n"
		                                 "  - {name: out, units: 2}\n", 5);
		float w[4];
		memcpy(w, m0->layers[0].weight.data, sizeof(w));
		cfg.step_scale = 0;
		cfg.epochs = 2;
		ck_assert_int_eq(zm_fit(m0, &ts, &cfg, NULL, NULL, NULL, &err),
		                 ZM_OK);
		ck_assert_int_eq(memcmp(w, m0->layers[0].weight.data,
		                        sizeof(w)), 0);
		zm_model_free(m0);
	}

	/* Data of the wrong width is refused before any step. */
	{
		struct zm_model *m3 = unit_model("input: [3]\nlayers:\n"
		                                 "  - {name: out, units: 2}\n", 5);
		ck_assert_int_eq(zm_fit(m3, &ts, &cfg, NULL, NULL, NULL, &err),
		                 ZM_ERR_DATA);
		ck_assert_ptr_nonnull(strstr(err.msg, "expects 3"));
		zm_model_free(m3);
	}
	zm_trainset_release(&ts);
	zm_model_free(m);
}
END_TEST

/* Two-pass population mean and variance of column j of the rows idx. */
static void two_pass(const double *x, size_t d, const size_t *idx, size_t n,
                     size_t j, double *mean, double *var)
{
	double s = 0, ss = 0;
	size_t i;

	for (i = 0; i < n; i++)
		s += x[idx[i] * d + j];
	*mean = s / (double)n;
	for (i = 0; i < n; i++) {
		double dev = x[idx[i] * d + j] - *mean;
		ss += dev * dev;
	}
	*var = ss / (double)n;
}

static void assert_close(double got, double want, double tol, const char *what,
                         size_t j)
{
	ck_assert_msg(fabs(got - want) <= tol * (1 + fabs(want)),
	              "%s[%zu]: %.9g, want %.9g", what, j, got, want);
}

START_TEST(test_profile)
{
	enum { N1 = 300, N2 = 200, N = N1 + N2, D = 3, H = 4, C = 3 };
	uint8_t xu[N1 * D];
	float xf[N2 * D];
	double xd[N * D], hd[N * H];
	int64_t y[N], hist[C] = { 0 };
	struct batch b[2] = {
		{ N1, D, true, xu, NULL, y, NULL, "0.00392156886", NULL },
		{ N2, D, false, NULL, xf, y + N1, NULL, NULL, NULL },
	};
	struct zm_model *m = unit_model(
		"input: [3]\nlayers:\n"
		"  - {name: hidden, units: 4, activation: relu}\n"
		"  - {name: out, units: 3}\n", 11);
	const float *w = m->layers[0].weight.data, *bias = m->layers[0].bias.data;
	const float scale = 0.00392156886f;
	struct zm_trainset ts;
	struct zm_profile p;
	struct zm_profile_entry *e;
	struct zm_error err;
	size_t i, j, k;

	for (i = 0; i < N1 * D; i++) {
		xu[i] = (uint8_t)(urand() * 256);
		xd[i] = (double)((float)xu[i] * scale);
	}
	for (i = 0; i < N2 * D; i++) {
		xf[i] = (float)(urand() * 3 + 10);   /* an offset on purpose */
		xd[N1 * D + i] = xf[i];
	}
	for (i = 0; i < N; i++)
		y[i] = (int64_t)((i + i / 7) % C);
	/* The hidden layer's output, naively, is what "out" sees. */
	for (i = 0; i < N; i++)
		for (j = 0; j < H; j++) {
			double s = bias[j];
			for (k = 0; k < D; k++)
				s += (double)w[j * D + k] * xd[i * D + k];
			hd[i * H + j] = s > 0 ? s : 0;
		}

	load(&ts, write_stream(b, 2), 1 << 20);
	ck_assert_int_eq(zm_trainset_split(&ts, 0.3, 4, &err), ZM_OK);
	ck_assert_uint_gt(ts.n_val, 0);
	zm_profile_init(&p);
	if (zm_trainset_profile(&ts, m, &p, &err) != ZM_OK)
		ck_abort_msg("profile: %s", err.msg);

	/* Only the training rows count. */
	ck_assert_double_eq(zm_profile_count(&p), (double)ts.n_train);
	e = zm_profile_find(&p, ZM_PROFILE_INPUT);
	ck_assert_ptr_nonnull(e);
	ck_assert_uint_eq(e->dim, D);
	ck_assert_double_eq(e->count, (double)ts.n_train);
	for (j = 0; j < D; j++) {
		double mean, var;
		two_pass(xd, D, ts.train_idx, ts.n_train, j, &mean, &var);
		assert_close(e->mean[j], mean, 1e-9, "input mean", j);
		assert_close(zm_profile_entry_var(e, j), var, 1e-7,
		             "input var", j);
	}
	/* The first layer sees the input, so it has no entry of its own;
	 * "out" has the statistics of hidden's output. */
	ck_assert_ptr_null(zm_profile_find(&p, "hidden"));
	e = zm_profile_find(&p, "out");
	ck_assert_ptr_nonnull(e);
	ck_assert_uint_eq(e->dim, H);
	for (j = 0; j < H; j++) {
		double mean, var;
		two_pass(hd, H, ts.train_idx, ts.n_train, j, &mean, &var);
		assert_close(e->mean[j], mean, 1e-5, "out mean", j);
		assert_close(zm_profile_entry_var(e, j), var, 1e-4,
		             "out var", j);
	}
	ck_assert_uint_eq(p.n_entries, 2);
	/* The label histogram of the training rows. */
	for (i = 0; i < ts.n_train; i++)
		hist[y[ts.train_idx[i]]]++;
	ck_assert_uint_eq(p.n_classes, C);
	for (j = 0; j < C; j++)
		ck_assert_int_eq(p.labels[j], hist[j]);
	zm_profile_release(&p);
	zm_trainset_release(&ts);
	zm_model_free(m);
}
END_TEST

/* A flatten layer's entry holds what the layer before it produced; the
 * layer right after a flatten would see the same values, so it gets no
 * entry of its own. */
START_TEST(test_profile_flatten)
{
	enum { N = 50, D = 4 };
	float x[N * D];
	int64_t y[N];
	struct batch b[1] = { { N, D, false, NULL, x, y, NULL, NULL, NULL } };
	struct zm_model *m = unit_model(
		"input: [4]\nlayers:\n"
		"  - {name: d1, units: 3, activation: tanh}\n"
		"  - {name: flat, type: flatten}\n"
		"  - {name: d2, units: 2}\n", 2);
	struct zm_trainset ts;
	struct zm_profile p;
	struct zm_error err;
	size_t i;

	for (i = 0; i < N * D; i++)
		x[i] = (float)urand();
	for (i = 0; i < N; i++)
		y[i] = (int64_t)(i % 2);
	load(&ts, write_stream(b, 1), 1 << 20);
	ck_assert_int_eq(zm_trainset_split(&ts, 0, 1, &err), ZM_OK);
	zm_profile_init(&p);
	ck_assert_int_eq(zm_trainset_profile(&ts, m, &p, &err), ZM_OK);
	ck_assert_ptr_nonnull(zm_profile_find(&p, ZM_PROFILE_INPUT));
	ck_assert_ptr_nonnull(zm_profile_find(&p, "flat"));
	ck_assert_uint_eq(zm_profile_find(&p, "flat")->dim, 3);
	ck_assert_ptr_null(zm_profile_find(&p, "d2"));
	ck_assert_double_eq(zm_profile_count(&p), N);
	zm_profile_release(&p);
	zm_trainset_release(&ts);
	zm_model_free(m);
}
END_TEST

Suite *suite_trainset(void)
{
	Suite *s = suite_create("trainset");
	TCase *tc = tcase_create("trainset");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_load_gather);
	tcase_add_test(tc, test_load_mixed_scales);
	tcase_add_test(tc, test_width_mismatch);
	tcase_add_test(tc, test_bad_data);
	tcase_add_test(tc, test_max_bytes);
	tcase_add_test(tc, test_split);
	tcase_add_test(tc, test_fit_separable);
	tcase_add_test(tc, test_profile);
	tcase_add_test(tc, test_profile_flatten);
	suite_add_tcase(s, tc);
	return s;
}
