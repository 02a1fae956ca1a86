/*
 * A train-step run's pieces (trainstep.h): the jobs an assignment gives a
 * data file, and the log lines it writes as granctl reads them back.
 */
#include <math.h>
#include <string.h>

#include "unit.h"
#include "assignment.h"
#include "granctl.h"
#include "json.h"
#include "trainstep.h"

START_TEST(test_plan)
{
	struct zm_assignment a;
	struct zm_assignment_slice *s;
	struct zm_trainset ts;
	struct zm_train_job *jobs = NULL;
	struct zm_error err;
	size_t n = 9;

	zm_assignment_init(&a);
	zm_trainset_init(&ts, 0);
	ck_assert_int_eq(zm_assignment_add_slice(&a, "s1", "dir/s1.zm", &s,
	                                         &err), ZM_OK);
	ck_assert_int_eq(zm_assignment_add_model(s, "a", 0.75, &err), ZM_OK);
	ck_assert_int_eq(zm_assignment_add_model(s, "b", 0, &err), ZM_OK);
	ck_assert_int_eq(zm_assignment_add_model(s, "c", 0.25, &err), ZM_OK);
	ck_assert_int_eq(zm_assignment_add_slice(&a, "s2", NULL, &s, &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_assignment_add_model(s, "a", 0, &err), ZM_OK);

	/* By the data file's base name; weight 0 is no job. */
	ck_assert_msg(zm_train_plan(&a, "A.yaml", NULL, NULL, "elsewhere/s1.zm",
	                            &ts, 2, &jobs, &n, &err) == ZM_OK, "%s",
	              err.msg);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(jobs[0].name, "a");
	ck_assert_str_eq(jobs[1].name, "c");
	ck_assert_str_eq(jobs[0].slice, "s1");
	ck_assert_float_eq(jobs[0].weight, 1.5f);
	ck_assert_float_eq(jobs[1].weight, 0.5f);
	zm_train_jobs_free(jobs, n);

	ck_assert_int_eq(zm_train_plan(&a, "A.yaml", NULL, "s2", "x", &ts, 1,
	                               &jobs, &n, &err), ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "slice 's2' has no model"));
	zm_train_jobs_free(jobs, n);
	ck_assert_int_eq(zm_train_plan(&a, "A.yaml", NULL, "s3", "x", &ts, 1,
	                               &jobs, &n, &err), ZM_ERR_NOTFOUND);
	ck_assert_str_eq(err.msg, "x: no slice 's3' in the assignment A.yaml");
	ck_assert_ptr_null(jobs);

	/* Without an assignment: the one model, with the step scale. */
	ck_assert_int_eq(zm_train_plan(NULL, NULL, "m", NULL, "x", &ts, 0.5f,
	                               &jobs, &n, &err), ZM_OK);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(jobs[0].name, "m");
	ck_assert_float_eq(jobs[0].weight, 0.5f);
	zm_train_jobs_free(jobs, n);
	zm_trainset_release(&ts);
	zm_assignment_release(&a);
}
END_TEST

START_TEST(test_log_round_trip)
{
	struct zm_fit_report r = {
		.epoch = 2, .step = 40, .lr = 0.01, .loss = 0.75,
		.train_rows = 100, .val_rows = 10, .classification = true,
	};
	struct zm_gc_inputs in;
	struct zm_error err;
	struct zm_buf b;

	zm_buf_init(&b);
	zm_gc_inputs_init(&in);
	zm_train_log_line(&b, "m\"1", &r);
	r.step = 50;
	r.loss = 0.5;
	r.epoch_end = true;
	r.train_loss = 0.625;
	r.val_loss = 0.875;
	r.val_accuracy = 0.8;
	zm_train_log_line(&b, "m\"1", &r);
	ck_assert(!b.failed);
	ck_assert_msg(zm_gc_add_log(&in, b.data, b.len, "log", &err) == ZM_OK,
	              "%s", err.msg);
	ck_assert_uint_eq(in.n_logs, 1);
	ck_assert_str_eq(in.logs[0].model, "m\"1");
	ck_assert_uint_eq(in.logs[0].n_points, 2);
	ck_assert_double_eq(in.logs[0].step[1], 50);
	ck_assert_double_eq(in.logs[0].loss[0], 0.75);
	ck_assert_uint_eq(in.logs[0].epochs, 1);
	ck_assert_double_eq(in.logs[0].train_loss, 0.625);
	ck_assert_double_eq(in.logs[0].val_loss, 0.875);
	ck_assert_double_eq_tol(in.logs[0].val_acc, 0.8, 1e-12);
	zm_gc_inputs_release(&in);
	zm_buf_release(&b);
}
END_TEST

Suite *suite_trainstep(void)
{
	Suite *s = suite_create("trainstep");
	TCase *tc = tcase_create("trainstep");

	tcase_add_test(tc, test_plan);
	tcase_add_test(tc, test_log_round_trip);
	suite_add_tcase(s, tc);
	return s;
}
