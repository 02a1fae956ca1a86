/*
 * Lineage: the correlation and the alignment score against closed forms
 * (rows built from a Hadamard matrix, whose rows past the first have mean
 * zero and are orthogonal, so every correlation is known exactly), the
 * verdicts of related, unrelated and permuted-unit models, origins
 * deciding over alignment, and the digest.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "lineage.h"
#include "model.h"
#include "unit.h"

static const char arch_yaml[] =
	"input: [8]\n"
	"layers:\n"
	"  - {name: hidden, units: 3, activation: tanh}\n"
	"  - {name: out, units: 2}\n";

/* Row r of the 8 x 8 Sylvester-Hadamard matrix: (-1)^popcount(r & j). */
static float hadamard(int r, int j)
{
	int x = r & j, bits = 0;

	while (x) {
		bits += x & 1;
		x >>= 1;
	}
	return bits % 2 ? -1.0f : 1.0f;
}

/*
 * A model whose hidden row u is H[1 + u] + c H[4 + u] (orthogonal, equal
 * norms, mean zero: its correlation with H[1 + u] is 1 / sqrt(1 + c^2)),
 * with hidden units permuted by perm (NULL: identity) and the output
 * layer's columns permuted alike, so that the function stays the same.
 */
static struct zm_model *hadamard_model(double c, const int *perm)
{
	struct zm_model *m = unit_model(arch_yaml, 1);
	float *w = m->layers[0].weight.data, *b = m->layers[0].bias.data;
	float *ow = m->layers[1].weight.data;
	float out[2][3];
	int u, j, k;

	for (k = 0; k < 2; k++)
		for (u = 0; u < 3; u++)
			out[k][u] = (float)(0.1 * (k + 1) + 0.3 * u);
	for (u = 0; u < 3; u++) {
		int src = perm ? perm[u] : u;
		for (j = 0; j < 8; j++)
			w[u * 8 + j] = hadamard(1 + src, j) +
			               (float)c * hadamard(4 + src, j);
		b[u] = 0.01f * (float)src;
		for (k = 0; k < 2; k++)
			ow[k * 3 + u] = out[k][src];
	}
	return m;
}

START_TEST(test_correlation_closed_forms)
{
	const float a[4] = { 1, 2, 3, 4 }, b[4] = { 7, 9, 11, 13 };
	const float neg[4] = { -1, -2, -3, -4 };
	const float flat[4] = { 2, 2, 2, 2 }, flat2[4] = { 3, 3, 3, 3 };
	float h1[8], h2[8], mix[8];
	int j;

	ck_assert_double_eq_tol(zm_lineage_correlation(a, b, 4), 1, 1e-12);
	ck_assert_double_eq_tol(zm_lineage_correlation(a, neg, 4), -1, 1e-12);
	/* No variance: 1 with an equal row, 0 with another. */
	ck_assert_double_eq(zm_lineage_correlation(flat, flat, 4), 1);
	ck_assert_double_eq(zm_lineage_correlation(flat, flat2, 4), 0);
	ck_assert_double_eq(zm_lineage_correlation(flat, a, 4), 0);
	for (j = 0; j < 8; j++) {
		h1[j] = hadamard(1, j);
		h2[j] = hadamard(2, j);
		mix[j] = h1[j] + 3 * h2[j];
	}
	ck_assert_double_eq_tol(zm_lineage_correlation(h1, h2, 8), 0, 1e-12);
	ck_assert_double_eq_tol(zm_lineage_correlation(h1, mix, 8),
	                        1 / sqrt(10.0), 1e-7);
}
END_TEST

/* Alignment 1 / sqrt(1 + c^2) per hidden layer; the threshold 0.5 lies
 * between c = 1 (0.707) and c = 2 (0.447). */
static const double mix_c[] = { 0, 0.5, 1, 2, 4 };

START_TEST(test_alignment_closed_form)
{
	struct zm_model *a = hadamard_model(0, NULL);
	struct zm_model *b = hadamard_model(mix_c[_i], NULL);
	struct zm_lineage_info info;
	struct zm_error err;
	double want = 1 / sqrt(1 + mix_c[_i] * mix_c[_i]);

	ck_assert_int_eq(zm_lineage_related(a, b, &info, &err), ZM_OK);
	ck_assert(info.has_alignment);
	ck_assert_int_eq(info.basis, ZM_LINEAGE_BY_ALIGNMENT);
	ck_assert_double_eq_tol(info.score[0], want, 1e-6);
	ck_assert_double_eq_tol(info.alignment, want, 1e-6);
	ck_assert_uint_eq(info.worst_layer, 0);
	/* The output layer is scored and reported, but its units are the
	 * outputs: it does not decide. */
	ck_assert(!isnan(info.score[1]));
	ck_assert_int_eq(info.verdict, want >= ZM_LINEAGE_THRESHOLD ?
	                 ZM_LINEAGE_RELATED : ZM_LINEAGE_UNRELATED);
	zm_model_free(a);
	zm_model_free(b);
}
END_TEST

/* Permuting hidden units keeps the function and breaks the alignment:
 * the permuted model is unrelated to its original by correlation (no
 * realignment is attempted). */
START_TEST(test_permuted_units_unrelated)
{
	static const int perm[3] = { 1, 2, 0 };
	struct zm_model *a = hadamard_model(0, NULL);
	struct zm_model *p = hadamard_model(0, perm);
	struct zm_workspace *wa, *wp;
	struct zm_lineage_info info;
	struct zm_error err;
	float x[8];
	const float *ya, *yp;
	int j;

	for (j = 0; j < 8; j++)
		x[j] = 0.1f * (float)j - 0.3f;
	ck_assert_int_eq(zm_workspace_new(a->arch, 1, false, &wa, &err), ZM_OK);
	ck_assert_int_eq(zm_workspace_new(p->arch, 1, false, &wp, &err), ZM_OK);
	ya = zm_model_forward(a, wa, x, 1);
	yp = zm_model_forward(p, wp, x, 1);
	for (j = 0; j < 2; j++)
		ck_assert_float_eq_tol(ya[j], yp[j], 1e-5);
	ck_assert_int_eq(zm_lineage_related(a, p, &info, &err), ZM_OK);
	/* Distinct Hadamard rows: every matched pair correlates 0. */
	ck_assert_double_eq_tol(info.score[0], 0, 1e-6);
	ck_assert_int_eq(info.verdict, ZM_LINEAGE_UNRELATED);
	ck_assert_int_eq(info.basis, ZM_LINEAGE_BY_ALIGNMENT);
	ck_assert_int_eq(zm_lineage_require_related(a, "orig", p, "perm",
	                                            "way out", &err),
	                 ZM_ERR_USAGE);
	ck_assert_ptr_nonnull(strstr(err.msg, "'orig' and 'perm'"));
	ck_assert_ptr_nonnull(strstr(err.msg, "layer 'hidden'"));
	ck_assert_ptr_nonnull(strstr(err.msg, "way out"));
	zm_workspace_free(wa);
	zm_workspace_free(wp);
	zm_model_free(a);
	zm_model_free(p);
}
END_TEST

/* Independently initialised wide layers: about 1/sqrt(fan_in units)
 * from 0, far below the threshold. */
START_TEST(test_independent_inits_unrelated)
{
	static const char wide[] =
		"input: [64]\n"
		"layers:\n"
		"  - {name: h, units: 32, activation: relu}\n"
		"  - {name: o, units: 4}\n";
	struct zm_model *a = unit_model(wide, 1), *b = unit_model(wide, 2);
	struct zm_model *c = unit_model(wide, 1);
	struct zm_lineage_info info;
	struct zm_error err;

	ck_assert_int_eq(zm_lineage_related(a, b, &info, &err), ZM_OK);
	ck_assert_double_lt(fabs(info.alignment), 0.2);
	ck_assert_int_eq(info.verdict, ZM_LINEAGE_UNRELATED);
	ck_assert_int_eq(zm_lineage_related(a, c, &info, &err), ZM_OK);
	ck_assert_double_eq_tol(info.alignment, 1, 1e-12);
	ck_assert_int_eq(info.verdict, ZM_LINEAGE_RELATED);
	zm_model_free(a);
	zm_model_free(b);
	zm_model_free(c);
}
END_TEST

/* Recorded origins decide when both are known, whatever the weights. */
START_TEST(test_origin_decides)
{
	struct zm_model *a = hadamard_model(0, NULL);
	struct zm_model *b = hadamard_model(0, NULL);
	struct zm_model *far = hadamard_model(4, NULL);
	struct zm_lineage_info info;
	struct zm_error err;

	ck_assert_int_eq(zm_lineage_set_origin(a, "init:1", &err), ZM_OK);
	ck_assert_int_eq(zm_lineage_set_origin(b, "init:2", &err), ZM_OK);
	ck_assert_int_eq(zm_lineage_set_origin(far, "init:1", &err), ZM_OK);
	ck_assert_int_eq(zm_lineage_related(a, b, &info, &err), ZM_OK);
	ck_assert_int_eq(info.verdict, ZM_LINEAGE_UNRELATED);
	ck_assert_int_eq(info.basis, ZM_LINEAGE_BY_ORIGIN);
	ck_assert_double_eq_tol(info.alignment, 1, 1e-12);
	ck_assert_int_eq(zm_lineage_related(a, far, &info, &err), ZM_OK);
	ck_assert_int_eq(info.verdict, ZM_LINEAGE_RELATED);
	ck_assert_int_eq(info.basis, ZM_LINEAGE_BY_ORIGIN);
	/* Removing an origin leaves the alignment to decide. */
	ck_assert_int_eq(zm_lineage_set_origin(b, NULL, &err), ZM_OK);
	ck_assert_ptr_null(zm_lineage_origin(b));
	ck_assert_int_eq(zm_lineage_related(a, b, &info, &err), ZM_OK);
	ck_assert_int_eq(info.verdict, ZM_LINEAGE_RELATED);
	ck_assert_int_eq(info.basis, ZM_LINEAGE_BY_ALIGNMENT);
	zm_model_free(a);
	zm_model_free(b);
	zm_model_free(far);
}
END_TEST

/* Other shapes and no origins: unknown.  One layer only: no hidden units,
 * so nothing can fail to correspond. */
START_TEST(test_unknown_and_no_hidden)
{
	static const char other[] =
		"input: [8]\n"
		"layers:\n"
		"  - {name: hidden, units: 5, activation: tanh}\n"
		"  - {name: out, units: 2}\n";
	static const char linear[] =
		"input: [8]\nlayers:\n  - {name: out, units: 2}\n";
	struct zm_model *a = hadamard_model(0, NULL), *o = unit_model(other, 1);
	struct zm_model *l1 = unit_model(linear, 1), *l2 = unit_model(linear, 2);
	struct zm_lineage_info info;
	struct zm_error err;

	ck_assert_int_eq(zm_lineage_related(a, o, &info, &err), ZM_OK);
	ck_assert(!info.has_alignment);
	ck_assert_int_eq(info.verdict, ZM_LINEAGE_UNKNOWN);
	ck_assert_int_eq(zm_lineage_require_related(a, "a", o, "o", "x", &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_lineage_related(l1, l2, &info, &err), ZM_OK);
	ck_assert_uint_eq(info.worst_layer, SIZE_MAX);
	ck_assert_int_eq(info.verdict, ZM_LINEAGE_RELATED);
	zm_model_free(a);
	zm_model_free(o);
	zm_model_free(l1);
	zm_model_free(l2);
}
END_TEST

/* A set is related when every two are: the first pair that is not is
 * named. */
START_TEST(test_all_related)
{
	static const int perm[3] = { 2, 0, 1 };
	struct zm_model *ms[3] = { hadamard_model(0, NULL),
	                           hadamard_model(1, NULL),
	                           hadamard_model(0, perm) };
	struct zm_lineage_info info;
	struct zm_error err;
	size_t a = 9, b = 9;
	bool all = false;

	ck_assert_int_eq(zm_lineage_all_related((const struct zm_model *const *)ms,
	                                        2, &all, &a, &b, &info, &err),
	                 ZM_OK);
	ck_assert(all);
	ck_assert_uint_eq(a, 9);
	ck_assert_int_eq(zm_lineage_all_related((const struct zm_model *const *)ms,
	                                        3, &all, &a, &b, &info, &err),
	                 ZM_OK);
	ck_assert(!all);
	ck_assert_uint_eq(a, 0);
	ck_assert_uint_eq(b, 2);
	ck_assert_int_eq(info.verdict, ZM_LINEAGE_UNRELATED);
	ck_assert_double_eq_tol(info.score[0], 0, 1e-6);
	ck_assert_int_eq(zm_lineage_all_related((const struct zm_model *const *)ms,
	                                        1, &all, NULL, NULL, NULL, &err),
	                 ZM_OK);
	ck_assert(all);
	zm_model_free(ms[0]);
	zm_model_free(ms[1]);
	zm_model_free(ms[2]);
}
END_TEST

/* The digest follows the numbers, not the metadata. */
START_TEST(test_digest)
{
	struct zm_model *a = unit_model(arch_yaml, 1), *b = unit_model(arch_yaml, 1);
	char da[ZM_LINEAGE_ID_MAX], db[ZM_LINEAGE_ID_MAX];
	struct zm_doc doc;
	struct zm_error err;
	const char *o;

	zm_lineage_digest_model(a, da);
	zm_lineage_digest_model(b, db);
	ck_assert_uint_eq(strlen(da), 16);
	ck_assert_str_eq(da, db);
	ck_assert_int_eq(zm_model_set_string(&b->name, "other", &err), ZM_OK);
	zm_lineage_digest_model(b, db);
	ck_assert_str_eq(da, db);
	((float *)b->layers[1].bias.data)[1] = 1e-6f;
	zm_lineage_digest_model(b, db);
	ck_assert_str_ne(da, db);
	ck_assert_int_eq(zm_lineage_set_initial(a, &err), ZM_OK);
	o = zm_lineage_origin(a);
	ck_assert_ptr_nonnull(o);
	ck_assert(strncmp(o, "init:", 5) == 0 && strcmp(o + 5, da) == 0);
	/* A document of the same tensors: same digest with other metadata. */
	zm_doc_init(&doc);
	ck_assert_int_eq(zm_model_to_doc(a, &doc, &err), ZM_OK);
	zm_lineage_digest_doc(&doc, da);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.name", "x", &err), ZM_OK);
	zm_lineage_digest_doc(&doc, db);
	ck_assert_str_eq(da, db);
	zm_doc_release(&doc);
	zm_model_free(a);
	zm_model_free(b);
}
END_TEST

Suite *suite_lineage(void)
{
	Suite *s = suite_create("lineage");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_correlation_closed_forms);
	tcase_add_loop_test(tc, test_alignment_closed_form, 0,
	                    (int)(sizeof(mix_c) / sizeof(mix_c[0])));
	tcase_add_test(tc, test_permuted_units_unrelated);
	tcase_add_test(tc, test_independent_inits_unrelated);
	tcase_add_test(tc, test_origin_decides);
	tcase_add_test(tc, test_unknown_and_no_hidden);
	tcase_add_test(tc, test_all_related);
	tcase_add_test(tc, test_digest);
	suite_add_tcase(s, tc);
	return s;
}
