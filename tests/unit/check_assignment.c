/*
 * Assignment files: a round trip through YAML keeps every number exactly,
 * malformed files fail with the line and column of the fault, and the
 * validator catches what the writer must never write.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assignment.h"
#include "unit.h"

static const char good[] =
	"metric: kl\n"
	"temperature: 0.5\n"
	"top_k: 2\n"
	"slices:\n"
	"  - slice: dark\n"
	"    file: slices/dark.safetensors.gz\n"
	"    models: [{model: m0, weight: 0.7}, {model: m1, weight: 0.3}]\n"
	"    similarity: {m0: -0.12, m1: -0.85, m2: -3.1}\n"
	"  - slice: new\n"
	"    new_model: true\n"
	"    models: []\n";

START_TEST(test_parse_good)
{
	struct zm_assignment a;
	struct zm_error err;
	const struct zm_assignment_slice *s;

	zm_assignment_init(&a);
	ck_assert_msg(zm_assignment_parse(good, strlen(good), "a.yaml", &a,
	                                  &err) == ZM_OK, "%s", err.msg);
	ck_assert_int_eq(a.metric, ZM_METRIC_KL);
	ck_assert(a.temperature == 0.5);
	ck_assert_uint_eq(a.top_k, 2);
	ck_assert(!a.has_threshold);
	ck_assert_uint_eq(a.n_slices, 2);
	s = zm_assignment_find(&a, "dark");
	ck_assert_ptr_nonnull(s);
	ck_assert_str_eq(s->file, "slices/dark.safetensors.gz");
	ck_assert_uint_eq(s->n_models, 2);
	ck_assert_str_eq(s->models[1].model, "m1");
	ck_assert(s->models[1].weight == 0.3);
	ck_assert_uint_eq(s->n_similarity, 3);
	ck_assert_str_eq(s->similarity[2].model, "m2");
	ck_assert(s->similarity[2].value == -3.1);
	s = zm_assignment_find(&a, "new");
	ck_assert(s && s->new_model && s->n_models == 0 && !s->file);
	ck_assert_ptr_null(zm_assignment_find(&a, "nope"));
	zm_assignment_release(&a);
}
END_TEST

START_TEST(test_round_trip)
{
	struct zm_assignment a, b;
	struct zm_assignment_slice *s;
	struct zm_error err;
	struct zm_buf buf;
	char path[4096];
	/* Weights that need all 17 digits, summing to 1 within 1e-16. */
	double w0 = 1.0 / 3.0, w1 = 2.0 / 3.0;
	size_t i;

	zm_assignment_init(&a);
	zm_assignment_init(&b);
	a.metric = ZM_METRIC_MAHALANOBIS;
	a.temperature = 0.1 + 0.2;
	a.min_weight = 1e-3;
	a.has_threshold = true;
	a.new_model_threshold = -2.5;
	ck_assert_int_eq(zm_assignment_add_slice(&a, "s: odd, name", "a b/c#d",
	                                         &s, &err), ZM_OK);
	ck_assert_int_eq(zm_assignment_add_model(s, "m0", w0, &err), ZM_OK);
	ck_assert_int_eq(zm_assignment_add_model(s, "m1", w1, &err), ZM_OK);
	ck_assert_int_eq(zm_assignment_add_score(s, "m0", -1e-300, &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_assignment_add_score(s, "m1", -123456.789, &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_assignment_add_slice(&a, "true", NULL, &s, &err),
	                 ZM_OK);
	s->new_model = true;
	snprintf(path, sizeof(path), "%s/a.yaml", unit_tmpdir());
	ck_assert_msg(zm_assignment_save(&a, path, &err) == ZM_OK, "%s",
	              err.msg);
	ck_assert_msg(zm_assignment_load(path, &b, &err) == ZM_OK, "%s",
	              err.msg);
	ck_assert_int_eq(b.metric, a.metric);
	ck_assert(b.temperature == a.temperature);
	ck_assert(b.min_weight == a.min_weight);
	ck_assert(b.has_threshold && b.new_model_threshold == -2.5);
	ck_assert_uint_eq(b.n_slices, 2);
	ck_assert_str_eq(b.slices[0].slice, "s: odd, name");
	ck_assert_str_eq(b.slices[0].file, "a b/c#d");
	for (i = 0; i < 2; i++) {
		ck_assert_str_eq(b.slices[0].models[i].model,
		                 a.slices[0].models[i].model);
		ck_assert(b.slices[0].models[i].weight ==
		          a.slices[0].models[i].weight);
		ck_assert(b.slices[0].similarity[i].value ==
		          a.slices[0].similarity[i].value);
	}
	ck_assert_str_eq(b.slices[1].slice, "true");
	ck_assert(b.slices[1].new_model);
	/* Writing what was read gives the same text. */
	{
		struct zm_buf b2;
		zm_buf_init(&buf);
		zm_buf_init(&b2);
		zm_assignment_to_yaml(&a, &buf);
		zm_assignment_to_yaml(&b, &b2);
		ck_assert(!buf.failed && !b2.failed);
		ck_assert_str_eq(buf.data, b2.data);
		zm_buf_release(&buf);
		zm_buf_release(&b2);
	}
	zm_assignment_release(&a);
	zm_assignment_release(&b);
}
END_TEST

static const struct {
	const char *text;
	const char *where;
	const char *what;
} bad[] = {
	{ "metric: kl\nslices: []\nextra: 1\n", "a.yaml:3:1:", "extra" },
	{ "metric: euclid\nslices: []\n", "a.yaml:1:9:", "euclid" },
	{ "slices: []\n", "a.yaml:1:1:", "metric" },
	{ "metric: kl\ntemperature: 0\nslices: []\n", "a.yaml:2:14:",
	  "temperature" },
	{ "metric: kl\nslices:\n  - slice: a\n    models: [{model: m, "
	  "weight: 0.5}]\n", "a.yaml:4:13:", "sum to 0.5" },
	{ "metric: kl\nslices:\n  - slice: a\n    models: [{model: m, "
	  "weight: -1}, {model: n, weight: 2}]\n", "a.yaml:4:33:", "weight" },
	{ "metric: kl\nslices:\n  - slice: a\n    models: [{model: m, "
	  "weight: .nan}]\n", "a.yaml:4:33:", "weight" },
	{ "metric: kl\nslices:\n  - slice: a\n    models: [{model: m, "
	  "weight: 0.5}, {model: m, weight: 0.5}]\n", "a.yaml:4:13:",
	  "twice" },
	{ "metric: kl\nslices:\n  - slice: a\n    models: [{model: m}]\n",
	  "a.yaml:4:14:", "weight" },
	{ "metric: kl\nslices:\n  - slice: a\n    models: [{model: m, "
	  "weight: 1, w: 2}]\n", "a.yaml:4:36:", "w" },
	{ "metric: kl\nslices:\n  - slice: a\n    models: []\n",
	  "a.yaml:4:13:", "no models" },
	{ "metric: kl\nslices:\n  - slice: a\n    models: [{model: m, "
	  "weight: 1}]\n  - slice: a\n    models: [{model: m, weight: 1}]\n",
	  "a.yaml:6:13:", "duplicate" },
	{ "metric: kl\nslices:\n  - slice: a\n    models: [{model: m, "
	  "weight: 1}]\n    similarity: {m: x}\n", "a.yaml:5:21:", "number" },
	{ "metric: kl\nslices:\n  - file: x\n", "a.yaml:3:5:", "slice" },
	{ "metric: kl\nslices: {a: 1}\n", "a.yaml:2:9:", "slices" },
	{ "metric: [kl\n", "a.yaml:", "" },
};

START_TEST(test_malformed)
{
	struct zm_assignment a;
	struct zm_error err;
	enum zm_status st;

	zm_assignment_init(&a);
	st = zm_assignment_parse(bad[_i].text, strlen(bad[_i].text), "a.yaml",
	                         &a, &err);
	ck_assert_int_eq(st, ZM_ERR_CONFIG);
	ck_assert_msg(strncmp(err.msg, bad[_i].where, strlen(bad[_i].where))
	              == 0, "case %d: '%s' does not start with %s", _i,
	              err.msg, bad[_i].where);
	ck_assert_msg(strstr(err.msg, bad[_i].what), "case %d: '%s' lacks "
	              "'%s'", _i, err.msg, bad[_i].what);
	ck_assert_uint_eq(a.n_slices, 0);
	zm_assignment_release(&a);
}
END_TEST

START_TEST(test_validate)
{
	struct zm_assignment a;
	struct zm_assignment_slice *s;
	struct zm_error err;

	zm_assignment_init(&a);
	ck_assert_int_eq(zm_assignment_add_slice(&a, "x", NULL, &s, &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_assignment_add_model(s, "m", 0.5, &err), ZM_OK);
	ck_assert_int_eq(zm_assignment_add_model(s, "n", 0.5 + 2e-6, &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_assignment_validate(&a, &err), ZM_ERR_DATA);
	ck_assert(strstr(err.msg, "sum"));
	ck_assert_int_eq(zm_assignment_save(&a, "-", &err), ZM_ERR_DATA);
	s->models[1].weight = 0.5 + 5e-7;   /* within 1e-6 */
	ck_assert_int_eq(zm_assignment_validate(&a, &err), ZM_OK);
	a.temperature = NAN;
	ck_assert_int_eq(zm_assignment_validate(&a, &err), ZM_ERR_DATA);
	a.temperature = 1;
	ck_assert_int_eq(zm_assignment_add_score(s, "m", INFINITY, &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_assignment_validate(&a, &err), ZM_ERR_DATA);
	zm_assignment_release(&a);
}
END_TEST

Suite *suite_assignment(void)
{
	Suite *s = suite_create("assignment");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_parse_good);
	tcase_add_test(tc, test_round_trip);
	tcase_add_loop_test(tc, test_malformed, 0,
	                    (int)(sizeof(bad) / sizeof(*bad)));
	tcase_add_test(tc, test_validate);
	suite_add_tcase(s, tc);
	return s;
}
