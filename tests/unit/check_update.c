/*
 * The update writer (update.h): the delta is trained minus base element
 * by element, the profile is the data's and not the model's, and the
 * metadata that merge --apply and granctl read is there.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "model.h"
#include "profile.h"
#include "stream.h"
#include "update.h"

static const char arch[] =
	"input: [3]\nlayers:\n  - {name: h, units: 4, activation: relu}\n"
	"  - {name: out, units: 2}\n";

START_TEST(test_update_doc)
{
	struct zm_model *base = unit_model(arch, 1);
	struct zm_model *trained = unit_model(arch, 2);
	struct zm_model *delta = NULL;
	struct zm_profile prof, got;
	struct zm_update_info u = {
		.name = "m", .slice = "low", .parent = 7, .samples = 12,
		.weight = 0.25f, .profile = &prof,
	};
	struct zm_doc doc;
	struct zm_error err;
	const float rows[2] = { 1.0f, 3.0f };
	size_t l, i;

	zm_profile_init(&prof);
	zm_profile_init(&got);
	zm_doc_init(&doc);
	ck_assert_int_eq(zm_profile_add_batch(&prof, ZM_PROFILE_INPUT, rows,
	                                      2, 1, &err), ZM_OK);
	ck_assert_msg(zm_update_to_doc(trained, base, &u, &doc, &err) == ZM_OK,
	              "%s", err.msg);
	ck_assert_str_eq(zm_doc_meta(&doc, "zm.kind"), "update");
	ck_assert_str_eq(zm_doc_meta(&doc, "zm.name"), "m");
	ck_assert_str_eq(zm_doc_meta(&doc, "zm.parent"), "7");
	ck_assert_str_eq(zm_doc_meta(&doc, "zm.samples"), "12");
	ck_assert_str_eq(zm_doc_meta(&doc, "zm.weight"), "0.25");
	ck_assert_str_eq(zm_doc_meta(&doc, "zm.slice"), "low");
	ck_assert_int_eq(zm_profile_from_doc(&got, &doc, &err), ZM_OK);
	ck_assert_double_eq(zm_profile_find(&got, ZM_PROFILE_INPUT)->count, 2);
	ck_assert_double_eq_tol(zm_profile_find(&got, ZM_PROFILE_INPUT)->mean[0],
	                        2.0, 1e-12);
	/* The delta in the model layout: read it back as a model. */
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.kind", "model", &err),
	                 ZM_OK);
	ck_assert_msg(zm_model_from_doc(&doc, NULL, &delta, &err) == ZM_OK,
	              "%s", err.msg);
	for (l = 0; l < base->arch->n_layers; l++) {
		const float *t = trained->layers[l].weight.data;
		const float *b = base->layers[l].weight.data;
		const float *d = delta->layers[l].weight.data;

		if (!base->layers[l].spec->has_params)
			continue;
		for (i = 0; i < zm_tensor_numel(&base->layers[l].weight); i++)
			ck_assert_float_eq(d[i], t[i] - b[i]);
	}
	zm_model_free(delta);
	zm_model_free(base);
	zm_model_free(trained);
	zm_profile_release(&prof);
	zm_profile_release(&got);
	zm_doc_release(&doc);
}
END_TEST

/* A stream of n one-tensor documents whose metadata "i" counts from
 * first. */
static void write_docs(const char *path, int first, int n)
{
	struct zm_writer *w = NULL;
	struct zm_error err;
	int i;

	ck_assert_int_eq(zm_writer_open(&w, path, 1, &err), ZM_OK);
	for (i = 0; i < n; i++) {
		struct zm_doc doc;
		struct zm_tensor t;
		int64_t sh[1] = { 1 };
		char num[16];

		zm_doc_init(&doc);
		ck_assert_int_eq(zm_tensor_alloc(&t, "t", ZM_DTYPE_F32, 1, sh,
		                                 &err), ZM_OK);
		ck_assert_int_eq(zm_doc_add(&doc, &t, &err), ZM_OK);
		snprintf(num, sizeof(num), "%d", first + i);
		ck_assert_int_eq(zm_doc_set_meta(&doc, "i", num, &err), ZM_OK);
		ck_assert_int_eq(zm_writer_write_doc(w, &doc, &err), ZM_OK);
		zm_doc_release(&doc);
	}
	ck_assert_int_eq(zm_writer_commit(w, &err), ZM_OK);
}

START_TEST(test_read_all)
{
	const char *dir = unit_tmpdir();
	char a[512], b[512], none[512];
	const char *paths[3] = { a, b, none };
	struct zm_doc *docs = NULL;
	struct zm_error err;
	size_t n = 0, i;

	snprintf(a, sizeof(a), "%s/a.gz", dir);
	snprintf(b, sizeof(b), "%s/b.gz", dir);
	snprintf(none, sizeof(none), "%s/none.gz", dir);
	write_docs(a, 0, 2);
	write_docs(b, 2, 3);
	ck_assert_msg(zm_update_read_all(paths, 2, &docs, &n, &err) == ZM_OK,
	              "%s", err.msg);
	ck_assert_uint_eq(n, 5);
	for (i = 0; i < n; i++) {
		char num[32];

		snprintf(num, sizeof(num), "%zu", i);
		ck_assert_str_eq(zm_doc_meta(&docs[i], "i"), num);
		zm_doc_release(&docs[i]);
	}
	free(docs);
	docs = NULL;
	ck_assert_int_ne(zm_update_read_all(paths, 3, &docs, &n, &err), ZM_OK);
	ck_assert_ptr_nonnull(strstr(err.msg, "none.gz"));
}
END_TEST

Suite *suite_update(void)
{
	Suite *s = suite_create("update");
	TCase *tc = tcase_create("update");

	tcase_add_test(tc, test_update_doc);
	tcase_add_test(tc, test_read_all);
	suite_add_tcase(s, tc);
	return s;
}
