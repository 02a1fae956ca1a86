/*
 * CSV export (csv.h): a data stream with scaled U8 features, column names
 * and class names becomes the CSV text written out by hand below, and
 * dataset.c's CSV reader reads it back to the same values.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "csv.h"
#include "dataset.h"
#include "stream.h"

static void write_stream(const char *path)
{
	struct zm_writer *w = NULL;
	struct zm_doc doc;
	struct zm_tensor x, y;
	struct zm_error err;
	int64_t xs[2] = { 2, 2 }, ys[1] = { 2 };
	const uint8_t xv[4] = { 0, 2, 4, 255 };
	const int64_t yv[2] = { 1, 0 };

	zm_doc_init(&doc);
	zm_tensor_init(&x);
	zm_tensor_init(&y);
	ck_assert_int_eq(zm_tensor_alloc(&x, "x", ZM_DTYPE_U8, 2, xs, &err),
	                 ZM_OK);
	memcpy(x.data, xv, sizeof(xv));
	ck_assert_int_eq(zm_tensor_alloc(&y, "y", ZM_DTYPE_I64, 1, ys, &err),
	                 ZM_OK);
	memcpy(y.data, yv, sizeof(yv));
	ck_assert_int_eq(zm_doc_add(&doc, &x, &err), ZM_OK);
	ck_assert_int_eq(zm_doc_add(&doc, &y, &err), ZM_OK);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.kind", "data", &err), ZM_OK);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.scale", "0.5", &err), ZM_OK);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.columns",
	                                 "[\"a\",\"b,c\"]", &err), ZM_OK);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.label", "kind", &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.classes",
	                                 "[\"cat\",\"dog\"]", &err), ZM_OK);
	ck_assert_int_eq(zm_writer_open(&w, path, 1, &err), ZM_OK);
	ck_assert_int_eq(zm_writer_write_doc(w, &doc, &err), ZM_OK);
	ck_assert_int_eq(zm_writer_commit(w, &err), ZM_OK);
	zm_tensor_release(&x);
	zm_tensor_release(&y);
	zm_doc_release(&doc);
}

START_TEST(test_export_and_read_back)
{
	const char *dir = unit_tmpdir();
	char in[512], out[512], *text;
	struct zm_dataset_options o;
	struct zm_dataset_reader *r = NULL;
	struct zm_doc doc;
	struct zm_tensor xf;
	struct zm_error err;
	bool eof = false;

	snprintf(in, sizeof(in), "%s/d.st.gz", dir);
	snprintf(out, sizeof(out), "%s/d.csv", dir);
	write_stream(in);
	ck_assert_msg(zm_csv_export(in, out, &err) == ZM_OK, "%s", err.msg);
	text = unit_slurp(out, NULL);
	ck_assert_ptr_nonnull(text);
	ck_assert_str_eq(text, "a,\"b,c\",kind\n0,1,dog\n2,127.5,cat\n");
	free(text);

	zm_doc_init(&doc);
	zm_tensor_init(&xf);
	zm_dataset_options_init(&o);
	o.kind = ZM_DATASET_CSV;
	o.path = out;
	o.label = "kind";
	ck_assert_msg(zm_dataset_open(&r, &o, &err) == ZM_OK, "%s", err.msg);
	ck_assert_int_eq(zm_dataset_next(r, &doc, &eof, &err), ZM_OK);
	ck_assert(!eof);
	ck_assert_int_eq(zm_data_features(&doc, &xf, &err), ZM_OK);
	ck_assert_int_eq(xf.shape[0], 2);
	ck_assert_float_eq(((float *)xf.data)[1], 1.0f);
	ck_assert_float_eq(((float *)xf.data)[3], 127.5f);
	zm_tensor_release(&xf);
	zm_doc_release(&doc);
	zm_dataset_close(r);

	/* A missing input leaves no output behind. */
	snprintf(in, sizeof(in), "%s/none.st.gz", dir);
	snprintf(out, sizeof(out), "%s/e.csv", dir);
	ck_assert_int_ne(zm_csv_export(in, out, &err), ZM_OK);
	ck_assert_ptr_null(unit_slurp(out, NULL));
}
END_TEST

Suite *suite_csv(void)
{
	Suite *s = suite_create("csv");
	TCase *tc = tcase_create("csv");

	tcase_add_test(tc, test_export_and_read_back);
	suite_add_tcase(s, tc);
	return s;
}
