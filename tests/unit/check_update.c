/*
 * The update writer (update.h): the delta is trained minus base element
 * by element, the profile is the data's and not the model's, and the
 * metadata that merge --apply and granctl read is there.
 */
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

Suite *suite_update(void)
{
	Suite *s = suite_create("update");
	TCase *tc = tcase_create("update");

	tcase_add_test(tc, test_update_doc);
	suite_add_tcase(s, tc);
	return s;
}
