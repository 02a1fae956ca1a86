/*
 * The slicer (slicer.h) end to end on a small CSV: rows land in the slice
 * their rule picks (counted independently here), unmatched rows are
 * counted and not refused, nothing is visible before the commit, and each
 * slice file ends with a profile document holding its row count.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unit.h"
#include "dataset.h"
#include "json.h"
#include "profile.h"
#include "slicer.h"
#include "stream.h"

static const char *write_file(const char *dir, const char *name,
                              const char *text)
{
	static char path[4][512];
	static int next;
	char *p = path[next++ % 4];
	FILE *f;

	snprintf(p, sizeof(path[0]), "%s/%s", dir, name);
	ck_assert_ptr_nonnull(f = fopen(p, "w"));
	ck_assert_int_eq(fputs(text, f) >= 0, 1);
	ck_assert_int_eq(fclose(f), 0);
	return p;
}

/* 40 rows, x0 = i, x1 = i % 3, label i % 2. */
static const char *write_csv(const char *dir)
{
	static char text[4096];
	size_t len = 0;
	int i;

	len += (size_t)snprintf(text + len, sizeof(text) - len, "x0,x1,y\n");
	for (i = 0; i < 40; i++)
		len += (size_t)snprintf(text + len, sizeof(text) - len,
		                        "%d,%d,%d\n", i, i % 3, i % 2);
	return write_file(dir, "d.csv", text);
}

/* Rows and the profile's row count in one slice file. */
static void count_file(const char *path, uint64_t *rows, double *prof_rows)
{
	struct zm_reader *r = NULL;
	struct zm_doc doc;
	struct zm_error err;
	bool eof = false;

	*rows = 0;
	*prof_rows = -1;
	zm_doc_init(&doc);
	ck_assert_int_eq(zm_reader_open(&r, path, &err), ZM_OK);
	for (;;) {
		const struct zm_tensor *x;

		ck_assert_int_eq(zm_reader_next(r, &doc, &eof, &err), ZM_OK);
		if (eof)
			break;
		x = zm_doc_find(&doc, "x");
		ck_assert_ptr_nonnull(x);
		*rows += (uint64_t)x->shape[0];
		if (zm_doc_meta(&doc, "zm.profile")) {
			struct zm_profile p;
			const struct zm_profile_entry *e;

			zm_profile_init(&p);
			ck_assert_int_eq(zm_profile_from_doc(&p, &doc, &err),
			                 ZM_OK);
			e = zm_profile_find(&p, ZM_PROFILE_INPUT);
			ck_assert_ptr_nonnull(e);
			*prof_rows = (double)e->count;
			zm_profile_release(&p);
		}
	}
	zm_doc_release(&doc);
	zm_reader_close(r);
}

START_TEST(test_slices_and_profiles)
{
	const char *dir = unit_tmpdir();
	char out_dir[512], low[600];
	struct zm_slicer_options o;
	struct zm_slicer s;
	struct zm_error err;
	struct zm_buf b;
	uint64_t rows;
	double prof_rows;

	memset(&o, 0, sizeof(o));
	o.input = write_csv(dir);
	o.rules_path = write_file(dir, "r.yaml", "slices:\n"
		"  - {name: low, where: {feature: x0, max: 10}}\n"
		"  - {name: zeros, where: {feature: x1, max: 0.5}}\n");
	snprintf(out_dir, sizeof(out_dir), "%s/out", dir);
	o.out_dir = out_dir;
	o.from = ZM_DATASET_CSV;
	o.label = "y";
	o.batch = 7;
	o.compress = 1;
	zm_slicer_init(&s, &o);
	ck_assert_msg(zm_slicer_read(&s, &err) == ZM_OK, "%s", err.msg);
	/* first match wins: low = x0 < 10; zeros = x0 >= 10 with
	 * x0 % 3 == 0 (12, 15, ..., 39: 10 rows); the other 20 match none */
	ck_assert_uint_eq(s.rows, 40);
	ck_assert_uint_eq(s.out[0].rows, 10);
	ck_assert_uint_eq(s.out[1].rows, 10);
	ck_assert_uint_eq(s.unmatched, 20);
	snprintf(low, sizeof(low), "%s/low.safetensors.gz", out_dir);
	ck_assert_int_ne(access(low, F_OK), 0);
	ck_assert_msg(zm_slicer_commit(&s, &err) == ZM_OK, "%s", err.msg);
	count_file(low, &rows, &prof_rows);
	ck_assert_uint_eq(rows, 10);
	ck_assert_double_eq(prof_rows, 10.0);
	/* the reader of slice files finds the same profile and the name */
	{
		struct zm_profile p;
		char *name = NULL;

		zm_profile_init(&p);
		ck_assert_msg(zm_slice_profile_read(low, &p, &name, &err) ==
		              ZM_OK, "%s", err.msg);
		ck_assert_str_eq(name, "low");
		ck_assert_double_eq(zm_profile_find(&p, ZM_PROFILE_INPUT)->count,
		                    10.0);
		free(name);
		zm_profile_release(&p);
	}
	zm_buf_init(&b);
	zm_slicer_summary(&s, &b);
	ck_assert(!b.failed);
	ck_assert_ptr_nonnull(strstr(b.data, "rows: 40\nunmatched: 20\n"));
	ck_assert_ptr_nonnull(strstr(b.data, "  - name: zeros\n"));
	zm_buf_release(&b);
	zm_slicer_release(&s);
}
END_TEST

START_TEST(test_errors_leave_nothing)
{
	const char *dir = unit_tmpdir();
	char out_dir[512];
	struct zm_slicer_options o;
	struct zm_slicer s;
	struct zm_error err;

	memset(&o, 0, sizeof(o));
	o.input = write_file(dir, "e.csv", "x0,x1\n");
	o.rules_path = write_file(dir, "r.yaml", "slices:\n"
		"  - {name: all, default: true}\n");
	snprintf(out_dir, sizeof(out_dir), "%s/out", dir);
	o.out_dir = out_dir;
	o.from = ZM_DATASET_CSV;
	o.batch = 4;
	o.compress = 1;
	zm_slicer_init(&s, &o);
	/* A header and no rows is an error naming the data (issue 16), not
	 * slices of nothing or a rule that matches no class. */
	ck_assert_int_eq(zm_slicer_read(&s, &err), ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "e.csv: no data rows"));
	zm_slicer_release(&s);
	ck_assert_uint_eq(unit_count_entries(out_dir), 0);

	o.input = write_file(dir, "bad.csv", "x0,x1\n1,2\n3\n");
	zm_slicer_init(&s, &o);
	ck_assert_int_eq(zm_slicer_read(&s, &err), ZM_ERR_DATA);
	zm_slicer_release(&s);
	ck_assert_uint_eq(unit_count_entries(out_dir), 0);
}
END_TEST

Suite *suite_slicer(void)
{
	Suite *s = suite_create("slicer");
	TCase *tc = tcase_create("slicer");

	tcase_add_test(tc, test_slices_and_profiles);
	tcase_add_test(tc, test_errors_leave_nothing);
	suite_add_tcase(s, tc);
	return s;
}
