/*
 * Profiles: streaming mean/variance against a two-pass reference in
 * double, merges against the profile of the union, stability on data with
 * a large offset, histograms, failure atomicity (with injected allocation
 * faults), and the round trip through a document and a serialised stream.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "profile.h"
#include "stream.h"
#include "unit.h"

/* A small deterministic generator (xorshift64*), so tests need no libc
 * RNG state. */
static uint64_t rng_state;

static double urand(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (double)((rng_state * 2685821657736338717ULL) >> 11) /
	       9007199254740992.0;
}

static float *random_rows(size_t n, size_t d, double offset, double scale)
{
	float *x = malloc(n * d * sizeof(*x) + 1);
	size_t i;

	ck_assert_ptr_nonnull(x);
	for (i = 0; i < n * d; i++)
		x[i] = (float)(offset + scale * (urand() - 0.5) +
		               (double)(i % d));
	return x;
}

/* Two-pass population mean and variance of column j, in double. */
static void two_pass(const float *x, size_t n, size_t d, size_t j,
                     double *mean, double *var)
{
	double s = 0, ss = 0;
	size_t i;

	for (i = 0; i < n; i++)
		s += x[i * d + j];
	*mean = s / (double)n;
	for (i = 0; i < n; i++) {
		double dev = x[i * d + j] - *mean;
		ss += dev * dev;
	}
	*var = ss / (double)n;
}

static void assert_close(double got, double want, double rel)
{
	double tol = rel * (fabs(want) > 1e-300 ? fabs(want) : 1.0);

	ck_assert_msg(fabs(got - want) <= tol, "got %.17g, want %.17g",
	              got, want);
}

/* Asserts that entry e describes the n rows of x. */
static void assert_entry_matches(const struct zm_profile_entry *e,
                                 const float *x, size_t n, size_t d,
                                 double rel)
{
	size_t j;

	ck_assert_ptr_nonnull(e);
	ck_assert_uint_eq(e->dim, d);
	ck_assert(e->count == (double)n);
	for (j = 0; j < d; j++) {
		double mean, var;
		two_pass(x, n, d, j, &mean, &var);
		assert_close(e->mean[j], mean, rel);
		assert_close(zm_profile_entry_var(e, j), var, rel);
	}
}

START_TEST(test_streaming_uneven_batches)
{
	const size_t sizes[] = { 1, 5, 40, 1, 56, 0, 3 };
	const size_t d = 7;
	struct zm_profile p;
	struct zm_error err;
	size_t i, n = 0, at = 0;
	float *x;

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		n += sizes[i];
	rng_state = 0x1234567;
	x = random_rows(n, d, -3.0, 10.0);
	zm_profile_init(&p);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		ck_assert_int_eq(zm_profile_add_batch(&p, ZM_PROFILE_INPUT,
		                                      x + at * d, sizes[i], d,
		                                      &err), ZM_OK);
		at += sizes[i];
	}
	assert_entry_matches(zm_profile_find(&p, "input"), x, n, d, 1e-12);
	ck_assert(zm_profile_count(&p) == (double)n);
	zm_profile_release(&p);
	free(x);
}
END_TEST

/* One row at a time, and one whole batch, both equal the reference. */
START_TEST(test_single_rows_and_one_batch)
{
	const size_t n = 50, d = 3;
	struct zm_profile a, b;
	float *x;
	size_t i;

	rng_state = 99;
	x = random_rows(n, d, 5.0, 2.0);
	zm_profile_init(&a);
	zm_profile_init(&b);
	for (i = 0; i < n; i++)
		ck_assert_int_eq(zm_profile_add_batch(&a, "fc1", x + i * d, 1,
		                                      d, NULL), ZM_OK);
	ck_assert_int_eq(zm_profile_add_batch(&b, "fc1", x, n, d, NULL),
	                 ZM_OK);
	assert_entry_matches(zm_profile_find(&a, "fc1"), x, n, d, 1e-12);
	assert_entry_matches(zm_profile_find(&b, "fc1"), x, n, d, 1e-12);
	/* Without an "input" entry the count is the largest entry count. */
	ck_assert(zm_profile_count(&a) == (double)n);
	zm_profile_release(&a);
	zm_profile_release(&b);
	free(x);
}
END_TEST

/*
 * Mean 1e4, variance 1e-2, added one row at a time: E[x^2] - E[x]^2 would
 * subtract two numbers near 1e8 to get 1e-2, keeping about 6 of double's
 * 16 digits (and none in F32).  The streaming update must keep 1e-9.
 */
START_TEST(test_large_offset_stability)
{
	const size_t n = 20000, d = 2;
	struct zm_profile p;
	float *x = malloc(n * d * sizeof(*x));
	size_t i, j;

	ck_assert_ptr_nonnull(x);
	rng_state = 42;
	for (i = 0; i < n * d; i++)
		/* Uniform of width sqrt(12 * 1e-2) has variance 1e-2. */
		x[i] = (float)(1e4 + sqrt(0.12) * (urand() - 0.5));
	zm_profile_init(&p);
	for (i = 0; i < n; i += 7)
		ck_assert_int_eq(zm_profile_add_batch(&p, "input", x + i * d,
		                                      n - i < 7 ? n - i : 7,
		                                      d, NULL), ZM_OK);
	assert_entry_matches(zm_profile_find(&p, "input"), x, n, d, 1e-9);
	for (j = 0; j < d; j++) {
		double v = zm_profile_entry_var(zm_profile_find(&p, "input"),
		                                j);
		/* The data really has the variance the test claims. */
		ck_assert(v > 0.009 && v < 0.011);
	}
	zm_profile_release(&p);
	free(x);
}
END_TEST

START_TEST(test_merge_equals_union)
{
	const size_t na = 37, nb = 1, nc = 64, d = 5;
	struct zm_profile a, b, u;
	const int64_t la[] = { 0, 2, 2 }, lb[] = { 5, 0 };
	float *x;
	struct zm_profile_entry *e;

	rng_state = 7;
	x = random_rows(na + nb + nc, d, 100.0, 3.0);
	zm_profile_init(&a);
	zm_profile_init(&b);
	zm_profile_init(&u);
	ck_assert_int_eq(zm_profile_add_batch(&a, "input", x, na, d, NULL),
	                 ZM_OK);
	ck_assert_int_eq(zm_profile_add_batch(&b, "input", x + na * d, nb, d,
	                                      NULL), ZM_OK);
	ck_assert_int_eq(zm_profile_add_batch(&b, "input", x + (na + nb) * d,
	                                      nc, d, NULL), ZM_OK);
	/* An entry only b has is copied into a. */
	ck_assert_int_eq(zm_profile_add_batch(&b, "fc2", x, 4, 2, NULL),
	                 ZM_OK);
	ck_assert_int_eq(zm_profile_add_labels(&a, la, 3, NULL), ZM_OK);
	ck_assert_int_eq(zm_profile_add_labels(&b, lb, 2, NULL), ZM_OK);
	ck_assert_int_eq(zm_profile_merge(&a, &b, NULL), ZM_OK);
	assert_entry_matches(zm_profile_find(&a, "input"), x, na + nb + nc,
	                     d, 1e-12);
	e = zm_profile_find(&a, "fc2");
	ck_assert_ptr_nonnull(e);
	ck_assert(e->count == 4);
	ck_assert_uint_eq(a.n_classes, 6);
	ck_assert_int_eq(a.labels[0], 2);
	ck_assert_int_eq(a.labels[1], 0);
	ck_assert_int_eq(a.labels[2], 2);
	ck_assert_int_eq(a.labels[5], 1);
	/* Merging into an empty profile is a copy. */
	ck_assert_int_eq(zm_profile_merge(&u, &a, NULL), ZM_OK);
	assert_entry_matches(zm_profile_find(&u, "input"), x, na + nb + nc,
	                     d, 1e-12);
	ck_assert_uint_eq(u.n_entries, 2);
	zm_profile_release(&a);
	zm_profile_release(&b);
	zm_profile_release(&u);
	free(x);
}
END_TEST

START_TEST(test_bad_batches_leave_profile_unchanged)
{
	float x[6] = { 1, 2, 3, 4, 5, 6 };
	struct zm_profile p;
	struct zm_error err;
	struct zm_profile_entry *e;

	zm_profile_init(&p);
	ck_assert_int_eq(zm_profile_add_batch(&p, "input", x, 2, 3, &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_profile_add_batch(&p, "input", x, 3, 2, &err),
	                 ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "input"));
	x[4] = NAN;
	ck_assert_int_eq(zm_profile_add_batch(&p, "input", x, 2, 3, &err),
	                 ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "row 1 column 1"));
	/* A new entry whose first batch is bad is not created. */
	ck_assert_int_eq(zm_profile_add_batch(&p, "fc1", x, 2, 3, &err),
	                 ZM_ERR_DATA);
	ck_assert_ptr_null(zm_profile_find(&p, "fc1"));
	e = zm_profile_find(&p, "input");
	ck_assert(e->count == 2);
	ck_assert(e->mean[1] == 3.5);
	ck_assert(zm_profile_entry_var(e, 1) == 2.25);
	ck_assert_int_eq(zm_profile_add_batch(&p, "", x, 1, 3, &err),
	                 ZM_ERR_USAGE);
	zm_profile_release(&p);
}
END_TEST

START_TEST(test_labels)
{
	const int64_t l1[] = { 3, 0, 3 }, bad[] = { 1, -1 };
	const int64_t huge[] = { (int64_t)ZM_PROFILE_MAX_CLASSES };
	struct zm_profile p;
	struct zm_error err;

	zm_profile_init(&p);
	ck_assert_int_eq(zm_profile_add_labels(&p, l1, 3, &err), ZM_OK);
	ck_assert_uint_eq(p.n_classes, 4);
	ck_assert_int_eq(p.labels[3], 2);
	ck_assert_int_eq(p.labels[1], 0);
	ck_assert_int_eq(zm_profile_add_labels(&p, bad, 2, &err),
	                 ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "label 1"));
	ck_assert_int_eq(zm_profile_add_labels(&p, huge, 1, &err),
	                 ZM_ERR_DATA);
	ck_assert_int_eq(p.labels[1], 0);	/* unchanged */
	ck_assert_uint_eq(p.n_classes, 4);
	/* With no entries the count is the histogram total. */
	ck_assert(zm_profile_count(&p) == 3);
	zm_profile_release(&p);
}
END_TEST

START_TEST(test_merge_mismatch)
{
	float x[6] = { 1, 2, 3, 4, 5, 6 };
	struct zm_profile a, b;
	struct zm_error err;

	zm_profile_init(&a);
	zm_profile_init(&b);
	ck_assert_int_eq(zm_profile_add_batch(&a, "fc2", x, 2, 3, NULL),
	                 ZM_OK);
	ck_assert_int_eq(zm_profile_add_batch(&b, "new", x, 1, 1, NULL),
	                 ZM_OK);
	ck_assert_int_eq(zm_profile_add_batch(&b, "fc2", x, 3, 2, NULL),
	                 ZM_OK);
	ck_assert_int_eq(zm_profile_merge(&a, &b, &err), ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "fc2"));
	ck_assert_uint_eq(a.n_entries, 1);
	ck_assert(zm_profile_find(&a, "fc2")->count == 2);
	zm_profile_release(&a);
	zm_profile_release(&b);
}
END_TEST

/* Every allocation of a merge, failed in turn: the merge either succeeds
 * or leaves dst exactly as it was. */
START_TEST(test_merge_alloc_faults)
{
	float x[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	const int64_t l[] = { 9 };
	struct zm_profile a, b;
	struct zm_error err;
	char spec[32];
	int n, failures = 0;

	zm_profile_init(&b);
	ck_assert_int_eq(zm_profile_add_batch(&b, "input", x, 2, 4, NULL),
	                 ZM_OK);
	ck_assert_int_eq(zm_profile_add_batch(&b, "fc1", x, 4, 2, NULL),
	                 ZM_OK);
	ck_assert_int_eq(zm_profile_add_labels(&b, l, 1, NULL), ZM_OK);
	for (n = 1; n < 40; n++) {
		enum zm_status st;
		zm_profile_init(&a);
		ck_assert_int_eq(zm_profile_add_batch(&a, "input", x + 4, 1,
		                                      4, NULL), ZM_OK);
		snprintf(spec, sizeof(spec), "alloc:%d", n);
		setenv("ZM_FAULT", spec, 1);
		zm_fault_reset();
		st = zm_profile_merge(&a, &b, &err);
		unsetenv("ZM_FAULT");
		zm_fault_reset();
		if (st == ZM_OK) {
			ck_assert(zm_profile_find(&a, "input")->count == 3);
			ck_assert_uint_eq(a.n_entries, 2);
			zm_profile_release(&a);
			break;
		}
		failures++;
		ck_assert_int_eq(st, ZM_ERR_NOMEM);
		ck_assert_uint_eq(a.n_entries, 1);
		ck_assert(zm_profile_find(&a, "input")->count == 1);
		ck_assert(zm_profile_find(&a, "input")->mean[0] == 5);
		ck_assert_uint_eq(a.n_classes, 0);
		zm_profile_release(&a);
	}
	ck_assert_int_gt(failures, 0);
	ck_assert_int_lt(n, 40);
	zm_profile_release(&b);
}
END_TEST

/* A profile with an "input" entry, a layer entry that saw fewer rows,
 * and a histogram. */
static void sample_profile(struct zm_profile *p, float **xout)
{
	const int64_t l[] = { 1, 1, 4, 0 };
	float *x;

	rng_state = 2024;
	x = random_rows(30, 3, 0.5, 1.0);
	zm_profile_init(p);
	ck_assert_int_eq(zm_profile_add_batch(p, "input", x, 30, 3, NULL),
	                 ZM_OK);
	ck_assert_int_eq(zm_profile_add_batch(p, "fc2", x, 12, 2, NULL),
	                 ZM_OK);
	ck_assert_int_eq(zm_profile_add_labels(p, l, 4, NULL), ZM_OK);
	*xout = x;
}

static void assert_profiles_close(const struct zm_profile *a,
                                  const struct zm_profile *b)
{
	size_t i, j;

	ck_assert_uint_eq(a->n_entries, b->n_entries);
	for (i = 0; i < a->n_entries; i++) {
		const struct zm_profile_entry *ea = &a->entries[i];
		const struct zm_profile_entry *eb = zm_profile_find(b, ea->name);
		ck_assert_ptr_nonnull(eb);
		ck_assert_uint_eq(ea->dim, eb->dim);
		ck_assert(ea->count == eb->count);
		/* Means and variances are stored as F32. */
		for (j = 0; j < ea->dim; j++) {
			assert_close(eb->mean[j], ea->mean[j], 1e-6);
			assert_close(zm_profile_entry_var(eb, j),
			             zm_profile_entry_var(ea, j), 1e-6);
		}
	}
	ck_assert_uint_eq(a->n_classes, b->n_classes);
	for (i = 0; i < a->n_classes; i++)
		ck_assert_int_eq(a->labels[i], b->labels[i]);
}

START_TEST(test_doc_round_trip)
{
	const int64_t wshape[2] = { 2, 3 };
	struct zm_profile p, q;
	struct zm_doc doc, back;
	struct zm_tensor w, *t;
	struct zm_reader *r;
	struct zm_error err;
	void *bytes;
	size_t len;
	bool eof;
	float *x;

	sample_profile(&p, &x);
	zm_profile_init(&q);
	zm_doc_init(&doc);
	zm_doc_init(&back);
	zm_tensor_init(&w);
	/* A model document already holds parameters. */
	ck_assert_int_eq(zm_tensor_alloc(&w, "fc1.weight", ZM_DTYPE_F32, 2,
	                                 wshape, &err), ZM_OK);
	ck_assert_int_eq(zm_doc_add(&doc, &w, &err), ZM_OK);
	ck_assert_int_eq(zm_profile_to_doc(&p, &doc, &err), ZM_OK);
	ck_assert_ptr_nonnull(zm_doc_find(&doc, "fc1.weight"));
	t = zm_doc_find(&doc, "profile.count");
	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(t->dtype, ZM_DTYPE_F64);
	ck_assert(((double *)t->data)[0] == 30);
	t = zm_doc_find(&doc, "profile.input.var");
	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(t->dtype, ZM_DTYPE_F32);
	ck_assert_int_eq(t->shape[0], 3);
	ck_assert_ptr_nonnull(zm_doc_find(&doc, "profile.fc2.count"));
	ck_assert_ptr_null(zm_doc_find(&doc, "profile.input.count"));
	t = zm_doc_find(&doc, "profile.labels");
	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(t->dtype, ZM_DTYPE_I64);
	ck_assert_int_eq(t->shape[0], 5);

	/* Through the bytes of a stream and back. */
	ck_assert_int_eq(zm_doc_serialize(&doc, &bytes, &len, &err), ZM_OK);
	ck_assert_int_eq(zm_reader_open_mem(&r, bytes, len, "mem", &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_reader_next(r, &back, &eof, &err), ZM_OK);
	ck_assert(!eof);
	ck_assert_int_eq(zm_profile_from_doc(&q, &back, &err), ZM_OK);
	assert_profiles_close(&p, &q);
	zm_reader_close(r);
	free(bytes);

	/* A second to_doc refuses; replace updates in place. */
	ck_assert_int_eq(zm_profile_to_doc(&p, &doc, &err), ZM_ERR_USAGE);
	ck_assert_ptr_nonnull(strstr(err.msg, "profile."));
	ck_assert_int_eq(zm_profile_add_batch(&p, "input", x, 10, 3, NULL),
	                 ZM_OK);
	ck_assert_int_eq(zm_profile_replace_in_doc(&p, &doc, &err), ZM_OK);
	ck_assert_int_eq(zm_profile_from_doc(&q, &doc, &err), ZM_OK);
	assert_profiles_close(&p, &q);
	ck_assert(zm_profile_count(&q) == 40);
	/* 7 moments and counts, 3 of the input's PPCA (pc, pcvar, resvar). */
	ck_assert_uint_eq(zm_profile_remove_from_doc(&doc), 10);
	ck_assert_uint_eq(doc.n_tensors, 1);
	ck_assert_str_eq(doc.tensors[0].name, "fc1.weight");
	ck_assert_int_eq(zm_profile_from_doc(&q, &doc, &err),
	                 ZM_ERR_NOTFOUND);

	zm_doc_release(&doc);
	zm_doc_release(&back);
	zm_profile_release(&p);
	zm_profile_release(&q);
	free(x);
}
END_TEST

/* Each to_doc allocation failed in turn leaves the document as it was. */
START_TEST(test_to_doc_alloc_faults)
{
	struct zm_profile p;
	struct zm_doc doc;
	struct zm_error err;
	char spec[32];
	float *x;
	int n, failures = 0;

	sample_profile(&p, &x);
	for (n = 1; n < 100; n++) {
		enum zm_status st;
		zm_doc_init(&doc);
		snprintf(spec, sizeof(spec), "alloc:%d", n);
		setenv("ZM_FAULT", spec, 1);
		zm_fault_reset();
		st = zm_profile_to_doc(&p, &doc, &err);
		unsetenv("ZM_FAULT");
		zm_fault_reset();
		if (st == ZM_OK) {
			ck_assert_uint_eq(doc.n_tensors, 10);
			zm_doc_release(&doc);
			break;
		}
		failures++;
		ck_assert_int_eq(st, ZM_ERR_NOMEM);
		ck_assert_uint_eq(doc.n_tensors, 0);
		zm_doc_release(&doc);
	}
	ck_assert_int_gt(failures, 5);
	ck_assert_int_lt(n, 100);
	zm_profile_release(&p);
	free(x);
}
END_TEST

/* Table of corruptions applied to a good profile document, each of which
 * must be refused naming the tensor at fault. */
struct corrupt_case {
	const char *tensor;     /* tensor to alter */
	int how;                /* see corrupt() */
	enum zm_status status;
	const char *names;      /* expected in the message */
};

static const struct corrupt_case corrupt_cases[] = {
	{ "profile.input.var", 0, ZM_ERR_DATA, "profile.input.var" },
	{ "profile.input.mean", 1, ZM_ERR_DATA, "profile.input.mean" },
	{ "profile.input.var", 2, ZM_ERR_DATA, "profile.input.mean" },
	{ "profile.fc2.mean", 2, ZM_ERR_DATA, "profile.fc2.var" },
	{ "profile.count", 3, ZM_ERR_DATA, "profile.count" },
	{ "profile.labels", 4, ZM_ERR_DATA, "profile.labels" },
	{ "profile.fc2.var", 5, ZM_ERR_DATA, "profile.fc2.var" },
	{ "profile.count", 2, ZM_ERR_NOTFOUND, "profile.count" },
	{ "profile.input.mean", 6, ZM_ERR_DATA, "profile.input.mean" },
};

/* Alters the tensor called name of doc: 0 negative variance, 1 NaN,
 * 2 removes it, 3 negative count, 4 negative label count, 5 shape [1],
 * 6 an integer dtype. */
static void corrupt(struct zm_doc *doc, const char *name, int how)
{
	struct zm_tensor *t = zm_doc_find(doc, name);
	const int64_t one[1] = { 1 };
	struct zm_tensor r;
	double neg = -1;

	ck_assert_ptr_nonnull(t);
	switch (how) {
	case 0:
		((float *)t->data)[1] = -0.5f;
		break;
	case 1:
		((float *)t->data)[2] = NAN;
		break;
	case 2:
		ck_assert(zm_doc_remove(doc, name));
		break;
	case 3:
		memcpy(t->data, &neg, sizeof(neg));
		break;
	case 4:
		((int64_t *)t->data)[2] = -3;
		break;
	case 5:
	case 6:
		zm_tensor_init(&r);
		ck_assert_int_eq(zm_tensor_alloc(&r, name, how == 5 ?
		                                 ZM_DTYPE_F32 : ZM_DTYPE_I32,
		                                 how == 5 ? 1 : t->ndim,
		                                 how == 5 ? one : t->shape,
		                                 NULL), ZM_OK);
		ck_assert(zm_doc_remove(doc, name));
		ck_assert_int_eq(zm_doc_add(doc, &r, NULL), ZM_OK);
		break;
	}
}

START_TEST(test_from_doc_rejects)
{
	const struct corrupt_case *c = &corrupt_cases[_i];
	struct zm_profile p, q;
	struct zm_doc doc;
	struct zm_error err;
	float *x;

	sample_profile(&p, &x);
	zm_profile_init(&q);
	zm_doc_init(&doc);
	ck_assert_int_eq(zm_profile_to_doc(&p, &doc, &err), ZM_OK);
	corrupt(&doc, c->tensor, c->how);
	zm_error_clear(&err);
	ck_assert_int_eq(zm_profile_from_doc(&q, &doc, &err), c->status);
	ck_assert_msg(strstr(err.msg, c->names) != NULL, "message: %s",
	              err.msg);
	ck_assert_uint_eq(q.n_entries, 0);
	zm_doc_release(&doc);
	zm_profile_release(&p);
	free(x);
}
END_TEST

/* F64 means, an I64 count and no histogram are read too. */
START_TEST(test_from_doc_other_dtypes)
{
	const int64_t shape[1] = { 2 }, one[1] = { 1 };
	const double mean[2] = { 1e4 + 0.125, -3 }, var[2] = { 0.5, 0 };
	const int64_t count = 8;
	struct zm_tensor t;
	struct zm_profile p;
	struct zm_doc doc;
	struct zm_error err;
	const struct zm_profile_entry *e;

	zm_doc_init(&doc);
	zm_profile_init(&p);
	zm_tensor_init(&t);
	ck_assert_int_eq(zm_tensor_alloc(&t, "profile.count", ZM_DTYPE_I64,
	                                 1, one, NULL), ZM_OK);
	memcpy(t.data, &count, sizeof(count));
	ck_assert_int_eq(zm_doc_add(&doc, &t, NULL), ZM_OK);
	ck_assert_int_eq(zm_tensor_alloc(&t, "profile.a.b.mean", ZM_DTYPE_F64,
	                                 1, shape, NULL), ZM_OK);
	memcpy(t.data, mean, sizeof(mean));
	ck_assert_int_eq(zm_doc_add(&doc, &t, NULL), ZM_OK);
	ck_assert_int_eq(zm_tensor_alloc(&t, "profile.a.b.var", ZM_DTYPE_F64,
	                                 1, shape, NULL), ZM_OK);
	memcpy(t.data, var, sizeof(var));
	ck_assert_int_eq(zm_doc_add(&doc, &t, NULL), ZM_OK);
	ck_assert_int_eq(zm_profile_from_doc(&p, &doc, &err), ZM_OK);
	e = zm_profile_find(&p, "a.b");
	ck_assert_ptr_nonnull(e);
	ck_assert(e->count == 8);
	ck_assert(e->mean[0] == 1e4 + 0.125);
	ck_assert(e->m2[0] == 4.0);	/* M2 = var * count */
	ck_assert(zm_profile_entry_var(e, 1) == 0);
	ck_assert_uint_eq(p.n_classes, 0);
	zm_profile_release(&p);
	zm_doc_release(&doc);
}
END_TEST

/* Data near 1e30 has a variance that is finite in double but not in F32:
 * writing it must fail rather than store an Inf in a model (train-step
 * --apply once saved such a model). */
START_TEST(test_to_doc_refuses_f32_overflow)
{
	const float x[4] = { 1e30f, -1e30f, 1e30f, -1e30f };
	struct zm_profile p;
	struct zm_doc doc;
	struct zm_error err;
	double var;

	zm_profile_init(&p);
	zm_doc_init(&doc);
	ck_assert_int_eq(zm_profile_add_batch(&p, "input", x, 4, 1, &err),
	                 ZM_OK);
	var = zm_profile_entry_var(zm_profile_find(&p, "input"), 0);
	ck_assert(isfinite(var) && var > 3.5e38);
	ck_assert_int_eq(zm_profile_to_doc(&p, &doc, &err), ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "input"));
	ck_assert_ptr_nonnull(strstr(err.msg, "variance"));
	ck_assert_uint_eq(doc.n_tensors, 0);
	ck_assert_int_eq(zm_profile_replace_in_doc(&p, &doc, &err),
	                 ZM_ERR_DATA);
	ck_assert_uint_eq(doc.n_tensors, 0);
	zm_doc_release(&doc);
	zm_profile_release(&p);
}
END_TEST

Suite *suite_profile(void)
{
	Suite *s = suite_create("profile");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_streaming_uneven_batches);
	tcase_add_test(tc, test_single_rows_and_one_batch);
	tcase_add_test(tc, test_large_offset_stability);
	tcase_add_test(tc, test_merge_equals_union);
	tcase_add_test(tc, test_bad_batches_leave_profile_unchanged);
	tcase_add_test(tc, test_labels);
	tcase_add_test(tc, test_merge_mismatch);
	tcase_add_test(tc, test_merge_alloc_faults);
	tcase_add_test(tc, test_doc_round_trip);
	tcase_add_test(tc, test_to_doc_alloc_faults);
	tcase_add_test(tc, test_to_doc_refuses_f32_overflow);
	tcase_add_loop_test(tc, test_from_doc_rejects, 0,
	                    (int)(sizeof(corrupt_cases) /
	                          sizeof(corrupt_cases[0])));
	tcase_add_test(tc, test_from_doc_other_dtypes);
	suite_add_tcase(s, tc);
	return s;
}
