/*
 * The setup of a prediction run: the defaults that follow from what was
 * asked, the temperature of density weighting against hand values, the merge that replaces a layer merge of
 * unrelated models, and zm_predsetup_open on model files -- unrelated
 * models (different recorded origins) get a final-output mix and a note,
 * or keep a merge asked for with another note; related ones keep the
 * layer merge silently; merge options that do not fit are refused.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "lineage.h"
#include "model.h"
#include "predsetup.h"
#include "unit.h"

static const char arch_yaml[] =
	"input: [3]\nloss: cross-entropy\nlayers:\n"
	"  - {name: h, units: 4, activation: tanh}\n"
	"  - {name: out, units: 3}\n";

START_TEST(test_temperature)
{
	double both[2] = { 2.0, 3.5 }, one[2] = { 2.0, NAN };
	double small[3] = { 0.5, 0.25, 0.125 };
	bool cal;

	/* every model calibrated: the largest, whatever the width */
	ck_assert_double_eq(zm_predsetup_temperature(both, 2, 784, &cal), 3.5);
	ck_assert(cal);
	/* a calibrated value below 1 is kept as it is */
	ck_assert_double_eq(zm_predsetup_temperature(small, 3, 784, &cal), 0.5);
	ck_assert(cal);
	/* one model without: features / 8, at least 1 */
	ck_assert_double_eq(zm_predsetup_temperature(one, 2, 64, &cal), 8.0);
	ck_assert(!cal);
	ck_assert_double_eq(zm_predsetup_temperature(one, 2, 4, &cal), 1.0);
	ck_assert(!cal);
	/* a NaN first stops the search as well */
	one[0] = NAN;
	one[1] = 9;
	ck_assert_double_eq(zm_predsetup_temperature(one, 2, 80, &cal), 10.0);
	ck_assert(!cal);
}
END_TEST

START_TEST(test_unrelated_merge)
{
	ck_assert_int_eq(zm_predsetup_unrelated_merge(ZM_WEIGHTING_DENSITY),
	                 ZM_MERGE_ROUTE);
	ck_assert_int_eq(zm_predsetup_unrelated_merge(ZM_WEIGHTING_ROUTER),
	                 ZM_MERGE_ROUTE);
	ck_assert_int_eq(zm_predsetup_unrelated_merge(
	                 ZM_WEIGHTING_ROUTER_SIMILARITY), ZM_MERGE_ROUTE);
	ck_assert_int_eq(zm_predsetup_unrelated_merge(ZM_WEIGHTING_UNIFORM),
	                 ZM_MERGE_ENSEMBLE);
	ck_assert_int_eq(zm_predsetup_unrelated_merge(ZM_WEIGHTING_SIMILARITY),
	                 ZM_MERGE_ENSEMBLE);
	ck_assert_int_eq(zm_predsetup_unrelated_merge(ZM_WEIGHTING_STATIC),
	                 ZM_MERGE_ENSEMBLE);
}
END_TEST

/* Options as predict(1) starts them: similarity weighting, the
 * predictor's defaults. */
static void fresh(struct zm_predsetup_options *o)
{
	memset(o, 0, sizeof(*o));
	zm_predict_options_init(&o->p);
	o->p.w.kind = ZM_WEIGHTING_SIMILARITY;
}

START_TEST(test_defaults)
{
	struct zm_predsetup_options o;

	/* nothing asked: density, lenient, per row, routed */
	fresh(&o);
	zm_predsetup_defaults(&o);
	ck_assert_int_eq(o.p.w.kind, ZM_WEIGHTING_DENSITY);
	ck_assert(o.p.w.lenient);
	ck_assert(o.p.w.per_row);
	ck_assert_int_eq(o.p.merge, ZM_MERGE_ROUTE);
	/* a weights file alone: static, per batch, outputs */
	fresh(&o);
	o.weights = "w.yaml";
	zm_predsetup_defaults(&o);
	ck_assert_int_eq(o.p.w.kind, ZM_WEIGHTING_STATIC);
	ck_assert(!o.p.w.lenient);
	ck_assert(!o.p.w.per_row);
	ck_assert_int_eq(o.p.merge, ZM_MERGE_OUTPUTS);
	/* a metric alone keeps similarity */
	fresh(&o);
	o.metric_set = true;
	zm_predsetup_defaults(&o);
	ck_assert_int_eq(o.p.w.kind, ZM_WEIGHTING_SIMILARITY);
	ck_assert(!o.p.w.per_row);
	/* router weighting at a level asked for: per row, not routed */
	fresh(&o);
	o.p.w.kind = ZM_WEIGHTING_ROUTER;
	o.weighting_set = o.level_set = true;
	zm_predsetup_defaults(&o);
	ck_assert(o.p.w.per_row);
	ck_assert_int_eq(o.p.merge, ZM_MERGE_OUTPUTS);
	/* a decision's level counts as asked, but not under auto; per batch
	 * asked for stays */
	fresh(&o);
	o.gran_from = "decision.yaml";
	o.per_set = true;
	zm_predsetup_defaults(&o);
	ck_assert(!o.p.w.per_row);
	ck_assert_int_eq(o.p.merge, ZM_MERGE_OUTPUTS);
	o.gran_auto = true;
	zm_predsetup_defaults(&o);
	ck_assert_int_eq(o.p.merge, ZM_MERGE_ROUTE);
}
END_TEST

/* Two model files whose recorded origins are o1 and o2; o is set up for
 * them with uniform weights. */
static void two_models(const char *o1, const char *o2,
                       struct zm_predsetup_options *o)
{
	const char *origin[2] = { o1, o2 };
	static char path[2][512];
	struct zm_error err;
	size_t i;

	memset(o, 0, sizeof(*o));
	for (i = 0; i < 2; i++) {
		struct zm_model *m = unit_model(arch_yaml, 11 + i);
		ck_assert_int_eq(zm_lineage_set_origin(m, origin[i], &err), ZM_OK);
		snprintf(path[i], sizeof(path[i]), "%s/m%zu.zm", unit_tmpdir(), i);
		unit_write_model(m, path[i]);
		zm_model_free(m);
		o->model_file[i] = path[i];
	}
	o->n_files = 2;
	o->batch = 16;
	zm_predict_options_init(&o->p);
}

START_TEST(test_open_unrelated_mixed)
{
	struct zm_predsetup_options o;
	struct zm_predsetup s;
	struct zm_error err;

	two_models("init:1", "init:2", &o);
	zm_predsetup_init(&s);
	ck_assert_msg(zm_predsetup_open(&s, &o, &err) == ZM_OK, "%s", err.msg);
	ck_assert_uint_eq(s.k, 2);
	ck_assert_ptr_nonnull(s.pred);
	ck_assert_int_eq(s.po.merge, ZM_MERGE_ENSEMBLE);
	ck_assert_int_eq(s.po.w.level, ZM_GRAN_FULL);
	ck_assert(s.unrelated);
	ck_assert_uint_eq(s.n_notes, 1);
	ck_assert_int_eq(s.notes[0].kind, ZM_PREDSETUP_UNRELATED_MIXED);
	ck_assert_str_eq(s.notes[0].a, "m0");
	ck_assert_str_eq(s.notes[0].b, "m1");
	ck_assert_int_eq(s.notes[0].basis, ZM_LINEAGE_BY_ORIGIN);
	ck_assert_int_eq(s.notes[0].merge, ZM_MERGE_ENSEMBLE);
	ck_assert_str_eq(s.what, "the models");
	ck_assert_ptr_null(s.model_name);
	zm_predsetup_release(&s);
	ck_assert_ptr_null(s.pred);
	ck_assert_uint_eq(s.k, 0);
}
END_TEST

START_TEST(test_open_unrelated_kept)
{
	struct zm_predsetup_options o;
	struct zm_predsetup s;
	struct zm_error err;

	two_models("init:1", "init:2", &o);
	o.merge_set = true;
	zm_predsetup_init(&s);
	ck_assert_msg(zm_predsetup_open(&s, &o, &err) == ZM_OK, "%s", err.msg);
	ck_assert_int_eq(s.po.merge, ZM_MERGE_OUTPUTS);
	ck_assert(!s.unrelated);
	ck_assert_uint_eq(s.n_notes, 1);
	ck_assert_int_eq(s.notes[0].kind, ZM_PREDSETUP_UNRELATED_KEPT);
	ck_assert_int_eq(s.notes[0].merge, ZM_MERGE_OUTPUTS);
	zm_predsetup_release(&s);
}
END_TEST

START_TEST(test_open_related)
{
	struct zm_predsetup_options o;
	struct zm_predsetup s;
	struct zm_error err;

	two_models("init:1", "init:1", &o);
	zm_predsetup_init(&s);
	ck_assert_msg(zm_predsetup_open(&s, &o, &err) == ZM_OK, "%s", err.msg);
	ck_assert_int_eq(s.po.merge, ZM_MERGE_OUTPUTS);
	ck_assert_uint_eq(s.n_notes, 0);
	zm_predsetup_release(&s);

	/* params with per-row weights do not fit together */
	o.p.merge = ZM_MERGE_PARAMS;
	o.p.w.per_row = true;
	zm_predsetup_init(&s);
	ck_assert_int_eq(zm_predsetup_open(&s, &o, &err), ZM_ERR_USAGE);
	ck_assert_ptr_nonnull(strstr(err.msg, "per-batch weights"));
	ck_assert_ptr_null(s.pred);
	zm_predsetup_release(&s);
}
END_TEST

/* Density weighting without calibrated models gets the width's default
 * (3 features / 8, raised to 1), unless the caller set one. */
START_TEST(test_open_density_temperature)
{
	struct zm_predsetup_options o;
	struct zm_predsetup s;
	struct zm_error err;

	two_models("init:1", "init:1", &o);
	o.p.w.kind = ZM_WEIGHTING_DENSITY;
	o.p.w.lenient = true;
	o.p.w.per_row = true;
	o.p.merge = ZM_MERGE_ROUTE;
	o.p.w.temperature = 123;
	zm_predsetup_init(&s);
	ck_assert_msg(zm_predsetup_open(&s, &o, &err) == ZM_OK, "%s", err.msg);
	ck_assert_double_eq(s.po.w.temperature, 1.0);
	ck_assert_ptr_nonnull(strstr(s.po.w.temperature_origin, "uncalibrated"));
	zm_predsetup_release(&s);

	o.temperature_set = true;
	zm_predsetup_init(&s);
	ck_assert_msg(zm_predsetup_open(&s, &o, &err) == ZM_OK, "%s", err.msg);
	ck_assert_double_eq(s.po.w.temperature, 123);
	zm_predsetup_release(&s);
}
END_TEST

Suite *suite_predsetup(void)
{
	Suite *s = suite_create("predsetup");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_temperature);
	tcase_add_test(tc, test_unrelated_merge);
	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_open_unrelated_mixed);
	tcase_add_test(tc, test_open_unrelated_kept);
	tcase_add_test(tc, test_open_related);
	tcase_add_test(tc, test_open_density_temperature);
	suite_add_tcase(s, tc);
	return s;
}
