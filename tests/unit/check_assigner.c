/*
 * The assignment decision (assigner.h): a slice scored against models of
 * its width only, the weights of zm_weights_from_scores in descending
 * order, models of another width flagged, the threshold turning a slice
 * into one that needs a new model, and slice names from paths.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "assigner.h"
#include "slicer.h"

/* n rows of width d around centre c (a fixed spread). */
static void add_rows(struct zm_profile *p, size_t d, float c)
{
	float x[4 * 3];
	struct zm_error err;
	size_t i, j;

	for (i = 0; i < 4; i++)
		for (j = 0; j < d; j++)
			x[i * d + j] = c + (float)((i + j) % 3) - 1.0f;
	ck_assert_int_eq(zm_profile_add_batch(p, ZM_PROFILE_INPUT, x, 4, d,
	                                      &err), ZM_OK);
}

START_TEST(test_scores_and_weights)
{
	struct zm_assign_model mp[3];
	struct zm_profile q;
	struct zm_assignment a;
	struct zm_assignment_slice *s;
	struct zm_error err;
	double scores[3], w[3], want[2], sim[2];
	size_t idx[3], i;
	const char *names[3] = { "near", "wide", "far" };
	const float centre[3] = { 1.0f, 1.0f, 5.0f };
	const size_t width[3] = { 2, 3, 2 };

	zm_profile_init(&q);
	add_rows(&q, 2, 1.2f);
	for (i = 0; i < 3; i++) {
		memset(&mp[i], 0, sizeof(mp[i]));
		mp[i].name = names[i];
		zm_profile_init(&mp[i].prof);
		add_rows(&mp[i].prof, width[i], centre[i]);
		mp[i].input = zm_profile_find(&mp[i].prof, ZM_PROFILE_INPUT);
	}
	zm_assignment_init(&a);
	a.metric = ZM_METRIC_KL;
	a.temperature = 0.5;
	ck_assert_int_eq(zm_assignment_add_slice(&a, "s", NULL, &s, &err),
	                 ZM_OK);
	ck_assert_msg(zm_assign_slice(&a, mp, 3,
	                              zm_profile_find(&q, ZM_PROFILE_INPUT),
	                              s, scores, w, idx, &err) == ZM_OK,
	              "%s", err.msg);
	ck_assert(!mp[0].other_width && mp[1].other_width &&
	          !mp[2].other_width);
	ck_assert(!s->new_model);
	ck_assert_uint_eq(s->n_similarity, 2);
	/* the reference: the same metric and weighting, directly */
	for (i = 0; i < 2; i++)
		ck_assert_int_eq(zm_similarity_entries(ZM_METRIC_KL,
		        zm_profile_find(&q, ZM_PROFILE_INPUT), mp[2 * i].input,
		        ZM_SIM_FLOOR_AUTO, &sim[i], &err), ZM_OK);
	ck_assert_int_eq(zm_weights_from_scores(sim, 2, 0.5, 0, 0, want,
	                                        &err), ZM_OK);
	ck_assert_uint_eq(s->n_models, 2);
	ck_assert_str_eq(s->models[0].model, "near");
	ck_assert_double_eq_tol(s->models[0].weight, want[0], 1e-12);
	ck_assert_str_eq(s->models[1].model, "far");
	ck_assert_double_eq_tol(s->models[1].weight, want[1], 1e-12);

	/* a threshold above the best score: a new model, no weights */
	a.has_threshold = true;
	a.new_model_threshold = fmax(sim[0], sim[1]) + 1.0;
	ck_assert_int_eq(zm_assignment_add_slice(&a, "t", NULL, &s, &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_assign_slice(&a, mp, 3,
	                                 zm_profile_find(&q, ZM_PROFILE_INPUT),
	                                 s, scores, w, idx, &err), ZM_OK);
	ck_assert(s->new_model);
	ck_assert_uint_eq(s->n_models, 0);
	for (i = 0; i < 3; i++)
		zm_profile_release(&mp[i].prof);
	zm_profile_release(&q);
	zm_assignment_release(&a);
}
END_TEST

START_TEST(test_name_from_path)
{
	static const char *const cases[][2] = {
		{ "dir/low.safetensors.gz", "low" },
		{ "low.safetensors", "low" },
		{ "/a/b/x.csv", "x.csv" },
		{ ".safetensors.gz", ".safetensors.gz" },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		char *n = zm_slice_name_from_path(cases[i][0]);
		ck_assert_str_eq(n, cases[i][1]);
		free(n);
	}
}
END_TEST

Suite *suite_assigner(void)
{
	Suite *s = suite_create("assigner");
	TCase *tc = tcase_create("assigner");

	tcase_add_test(tc, test_scores_and_weights);
	tcase_add_test(tc, test_name_from_path);
	suite_add_tcase(s, tc);
	return s;
}
