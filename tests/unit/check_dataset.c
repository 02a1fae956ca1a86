/*
 * Dataset readers: IDX files written byte by byte here (good, bad magic,
 * truncated, count mismatch, trailing bytes), CSV parsing (quoting, ragged
 * rows, non-numbers, label types and class maps, empty and header-only
 * files), and the features helper against a naive loop.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "unit.h"

/* ---- IDX helpers ---- */

static size_t put_be32(unsigned char *p, unsigned v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
	return 4;
}

/* n images of rows x cols whose pixel (i, k) is (i * 7 + k) % 256. */
static size_t make_images(unsigned char *buf, unsigned magic, unsigned n,
                          unsigned rows, unsigned cols)
{
	size_t len = 0, i, k;

	len += put_be32(buf + len, magic);
	len += put_be32(buf + len, n);
	len += put_be32(buf + len, rows);
	len += put_be32(buf + len, cols);
	for (i = 0; i < n; i++)
		for (k = 0; k < (size_t)rows * cols; k++)
			buf[len++] = (unsigned char)((i * 7 + k) % 256);
	return len;
}

static size_t make_labels(unsigned char *buf, unsigned n)
{
	size_t len = 0, i;

	len += put_be32(buf + len, 0x801);
	len += put_be32(buf + len, n);
	for (i = 0; i < n; i++)
		buf[len++] = (unsigned char)(i % 10);
	return len;
}

static unsigned char img_buf[16 + 10 * 12 + 16];
static unsigned char lbl_buf[8 + 10 + 16];

static enum zm_status open_idx(struct zm_dataset_reader **r,
                               size_t img_len, size_t lbl_len, size_t batch,
                               bool image_shape, struct zm_error *err)
{
	struct zm_dataset_options o;

	zm_dataset_options_init(&o);
	o.kind = ZM_DATASET_IDX;
	o.images = "img.idx";
	o.images_data = img_buf;
	o.images_len = img_len;
	if (lbl_len) {
		o.labels = "lbl.idx";
		o.labels_data = lbl_buf;
		o.labels_len = lbl_len;
	}
	o.batch = batch;
	o.image_shape = image_shape;
	return zm_dataset_open(r, &o, err);
}

/* Reads the whole source, returning the status of the first failure. */
static enum zm_status drain(struct zm_dataset_reader *r, size_t *docs,
                            struct zm_error *err)
{
	struct zm_doc doc;
	enum zm_status st;
	bool eof = false;

	zm_doc_init(&doc);
	*docs = 0;
	for (;;) {
		st = zm_dataset_next(r, &doc, &eof, err);
		if (st != ZM_OK || eof)
			break;
		(*docs)++;
	}
	zm_doc_release(&doc);
	return st;
}

START_TEST(test_idx_good)
{
	struct zm_dataset_reader *r = NULL;
	struct zm_error err;
	struct zm_doc doc;
	size_t il = make_images(img_buf, 0x803, 10, 3, 4);
	size_t ll = make_labels(lbl_buf, 10);
	size_t docs = 0, row = 0, i, k;
	bool eof = false;

	zm_doc_init(&doc);
	ck_assert_int_eq(open_idx(&r, il, ll, 4, false, &err), ZM_OK);
	for (;;) {
		const struct zm_tensor *x, *y, *id;
		size_t n;

		ck_assert_int_eq(zm_dataset_next(r, &doc, &eof, &err), ZM_OK);
		if (eof)
			break;
		docs++;
		x = zm_doc_find(&doc, "x");
		y = zm_doc_find(&doc, "y");
		id = zm_doc_find(&doc, "id");
		ck_assert_ptr_nonnull(x);
		ck_assert_ptr_nonnull(y);
		ck_assert_ptr_nonnull(id);
		n = (size_t)x->shape[0];
		/* Batches of 4, 4 and 2 rows. */
		ck_assert_uint_eq(n, docs < 3 ? 4 : 2);
		ck_assert_int_eq(x->dtype, ZM_DTYPE_U8);
		ck_assert_int_eq(x->ndim, 2);
		ck_assert_int_eq(x->shape[1], 12);
		ck_assert_int_eq(y->dtype, ZM_DTYPE_I64);
		ck_assert_str_eq(zm_doc_meta(&doc, "zm.kind"), "data");
		ck_assert_str_eq(zm_doc_meta(&doc, "zm.scale"), "0.00392156886");
		ck_assert_int_eq(atoi(zm_doc_meta(&doc, "zm.samples")), (int)n);
		for (i = 0; i < n; i++, row++) {
			for (k = 0; k < 12; k++)
				ck_assert_uint_eq(((unsigned char *)x->data)[i * 12 + k],
				                  (row * 7 + k) % 256);
			ck_assert_int_eq(((int64_t *)y->data)[i], (int64_t)(row % 10));
			ck_assert_int_eq(((int64_t *)id->data)[i], (int64_t)row);
		}
	}
	ck_assert_uint_eq(docs, 3);
	ck_assert_uint_eq(row, 10);
	ck_assert_uint_eq(zm_dataset_rows(r), 10);
	zm_doc_release(&doc);
	zm_dataset_close(r);
}
END_TEST

START_TEST(test_idx_image_shape)
{
	struct zm_dataset_reader *r = NULL;
	struct zm_error err;
	struct zm_doc doc;
	const struct zm_tensor *x;
	size_t il = make_images(img_buf, 0x803, 10, 3, 4);
	bool eof;

	zm_doc_init(&doc);
	ck_assert_int_eq(open_idx(&r, il, 0, 100, true, &err), ZM_OK);
	ck_assert_int_eq(zm_dataset_next(r, &doc, &eof, &err), ZM_OK);
	ck_assert(!eof);
	x = zm_doc_find(&doc, "x");
	ck_assert_int_eq(x->ndim, 4);
	ck_assert_int_eq(x->shape[0], 10);
	ck_assert_int_eq(x->shape[1], 1);
	ck_assert_int_eq(x->shape[2], 3);
	ck_assert_int_eq(x->shape[3], 4);
	ck_assert_ptr_null(zm_doc_find(&doc, "y"));
	ck_assert_int_eq(zm_dataset_next(r, &doc, &eof, &err), ZM_OK);
	ck_assert(eof);
	zm_doc_release(&doc);
	zm_dataset_close(r);
}
END_TEST

/* Bad IDX inputs: each case breaks one thing and names the culprit. */
static const struct {
	const char *what;
	unsigned img_magic;
	unsigned img_n, lbl_n;
	int img_cut, lbl_cut;        /* bytes removed from the end (<0: added) */
	bool at_open;                /* fails in open rather than next */
	const char *msg;
} idx_bad[] = {
	{ "bad magic", 0x12345678, 10, 10, 0, 0, true, "img.idx: not an IDX" },
	{ "labels magic for images", 0x801, 10, 10, 0, 0, true, "img.idx: IDX magic" },
	{ "count mismatch", 0x803, 10, 9, 0, 0, true, "lbl.idx: 9 labels for 10" },
	{ "truncated images", 0x803, 10, 10, 5, 0, false, "img.idx: truncated" },
	{ "truncated labels", 0x803, 10, 10, 0, 3, false, "lbl.idx: truncated" },
	{ "trailing bytes", 0x803, 10, 10, -2, 0, false, "img.idx: trailing" },
	{ "header cut", 0x803, 10, 10, 10 * 12 + 6, 0, true, "img.idx: truncated IDX header" },
};

START_TEST(test_idx_bad)
{
	struct zm_dataset_reader *r = NULL;
	struct zm_error err;
	enum zm_status st;
	size_t il = make_images(img_buf, idx_bad[_i].img_magic,
	                        idx_bad[_i].img_n, 3, 4);
	size_t ll = make_labels(lbl_buf, idx_bad[_i].lbl_n);
	size_t docs;

	zm_error_clear(&err);
	il = (size_t)((long)il - idx_bad[_i].img_cut);
	ll = (size_t)((long)ll - idx_bad[_i].lbl_cut);
	st = open_idx(&r, il, ll, 4, false, &err);
	if (idx_bad[_i].at_open) {
		ck_assert_msg(st == ZM_ERR_FORMAT, "%s: status %d",
		              idx_bad[_i].what, st);
		ck_assert_ptr_null(r);
	} else {
		ck_assert_int_eq(st, ZM_OK);
		st = drain(r, &docs, &err);
		ck_assert_msg(st == ZM_ERR_FORMAT, "%s: status %d",
		              idx_bad[_i].what, st);
		zm_dataset_close(r);
	}
	ck_assert_msg(strstr(err.msg, idx_bad[_i].msg) != NULL,
	              "%s: message '%s' lacks '%s'", idx_bad[_i].what,
	              err.msg, idx_bad[_i].msg);
}
END_TEST

START_TEST(test_idx_missing_file)
{
	struct zm_dataset_options o;
	struct zm_dataset_reader *r = NULL;
	struct zm_error err;

	zm_dataset_options_init(&o);
	o.kind = ZM_DATASET_IDX;
	o.images = "/nonexistent/images.idx";
	ck_assert_int_eq(zm_dataset_open(&r, &o, &err), ZM_ERR_NOTFOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent/images.idx"));
}
END_TEST

/* ---- CSV ---- */

static enum zm_status open_csv(struct zm_dataset_reader **r, const char *text,
                               const char *label, size_t batch,
                               struct zm_error *err)
{
	struct zm_dataset_options o;

	zm_dataset_options_init(&o);
	o.kind = ZM_DATASET_CSV;
	o.path = "t.csv";
	o.data = text;
	o.len = strlen(text);
	o.label = label;
	o.batch = batch;
	zm_error_clear(err);
	return zm_dataset_open(r, &o, err);
}

START_TEST(test_csv_quoted)
{
	/* Quoted fields with commas, doubled quotes, a newline inside quotes,
	 * CRLF line ends, spaces around numbers and a blank line. */
	const char *text =
		"\"a,1\",\"b \"\"q\"\"\",c\r\n"
		"1,\"2\", 3 \r\n"
		"\r\n"
		"\"4.5\",-6e1,7\n";
	struct zm_dataset_reader *r = NULL;
	struct zm_error err;
	struct zm_doc doc;
	const struct zm_tensor *x;
	const float want[] = { 1, 2, 3, 4.5f, -60, 7 };
	bool eof;
	size_t i;

	zm_doc_init(&doc);
	ck_assert_int_eq(open_csv(&r, text, NULL, 10, &err), ZM_OK);
	ck_assert_int_eq(zm_dataset_next(r, &doc, &eof, &err), ZM_OK);
	ck_assert(!eof);
	x = zm_doc_find(&doc, "x");
	ck_assert_int_eq(x->dtype, ZM_DTYPE_F32);
	ck_assert_int_eq(x->shape[0], 2);
	ck_assert_int_eq(x->shape[1], 3);
	for (i = 0; i < 6; i++)
		ck_assert_float_eq(((float *)x->data)[i], want[i]);
	ck_assert_str_eq(zm_doc_meta(&doc, "zm.columns"),
	                 "[\"a,1\",\"b \\\"q\\\"\",\"c\"]");
	ck_assert_ptr_null(zm_doc_find(&doc, "y"));
	ck_assert_int_eq(zm_dataset_next(r, &doc, &eof, &err), ZM_OK);
	ck_assert(eof);
	zm_doc_release(&doc);
	zm_dataset_close(r);
}
END_TEST

START_TEST(test_csv_multiline_line_numbers)
{
	/* The quoted newline on line 2 moves the bad value to line 4. */
	const char *text = "a,b\n\"x\ny\",1\n2,3\n4,oops\n";
	struct zm_dataset_reader *r = NULL;
	struct zm_error err;

	/* Column a holds "x\ny": the first bad value is at line 2. */
	ck_assert_int_eq(open_csv(&r, text, NULL, 10, &err), ZM_ERR_DATA);
	ck_assert_str_eq(err.msg,
	                 "t.csv:2:1: column 'a': expected a number, got 'x\ny'");
	/* With a as the label, b's bad value is reported on line 5. */
	ck_assert_int_eq(open_csv(&r, text, "a", 10, &err), ZM_ERR_DATA);
	ck_assert_str_eq(err.msg,
	                 "t.csv:5:2: column 'b': expected a number, got 'oops'");
}
END_TEST

static const struct {
	const char *text;
	const char *label;
	enum zm_status status;
	const char *msg;
} csv_bad[] = {
	{ "", NULL, ZM_ERR_DATA, "t.csv: empty file, expected a header row" },
	{ "\n\n", NULL, ZM_ERR_DATA, "t.csv: empty file" },
	{ "a,b\n1,2\n3,4,5\n", NULL, ZM_ERR_DATA,
	  "t.csv:3: 3 fields, expected 2 as in the header" },
	{ "a,b\n1,2\n3\n", NULL, ZM_ERR_DATA,
	  "t.csv:3: 1 fields, expected 2" },
	{ "a,b\n1,2\n3,abc\n", NULL, ZM_ERR_DATA,
	  "t.csv:3:2: column 'b': expected a number, got 'abc'" },
	{ "a,b\n1,\n", NULL, ZM_ERR_DATA,
	  "t.csv:2:2: column 'b': expected a number, got ''" },
	{ "a,b\n1,\"2\n", NULL, ZM_ERR_FORMAT,
	  "t.csv:2: truncated (a quoted field is open at the end of the input)" },
	/* A short last row without a newline is a cut file; with its
	 * newline it is a ragged row. */
	{ "a,b,c\n1,2,3\n4,5", NULL, ZM_ERR_FORMAT,
	  "t.csv:3: truncated (the last row has 2 of 3 fields and no newline)" },
	{ "a,b,c\n1,2,3\n4,5\n", NULL, ZM_ERR_DATA,
	  "t.csv:3: 2 fields, expected 3 as in the header" },
	/* Numbers that parse but are too large for F32 training, like
	 * NaN: beyond ZM_DATA_MAX_ABS, and just inside it. */
	{ "a,b\n1,2\n3,1e39\n", NULL, ZM_ERR_DATA,
	  "t.csv:3:2: column 'b': 1e39 is beyond +-1e+18" },
	{ "a,b\n1,2\n3,1e30\n", NULL, ZM_ERR_DATA,
	  "t.csv:3:2: column 'b': 1e30 is beyond +-1e+18" },
	{ "a,b\n1,2\n3,-1.1e18\n", NULL, ZM_ERR_DATA,
	  "t.csv:3:2: column 'b': -1.1e18 is beyond +-1e+18" },
	{ "a,y\n1,0.5\n2,-4e38\n", "y", ZM_ERR_DATA,
	  "t.csv:3:2: column 'y': -4e38 is beyond +-1e+18" },
	{ "a,b\n1,\"2\"x\n", NULL, ZM_ERR_FORMAT,
	  "t.csv:2: field 2: unexpected 'x' after a closing quote" },
	{ "a,b\n1,2\n", "c", ZM_ERR_USAGE, "t.csv: no column 'c'" },
	{ "a,b\n1,2\n", "2", ZM_ERR_USAGE, "no column '2'" },
	{ "a,a\n1,2\n", NULL, ZM_ERR_DATA, "column 'a' appears twice" },
	{ "y\n1\n", "y", ZM_ERR_DATA, "no feature columns" },
	{ "a,y\n1,\n", "y", ZM_ERR_DATA, "t.csv:2:2: empty label" },
	{ "id,a\n1,2\nx,3\n", NULL, ZM_ERR_DATA,
	  "t.csv:3:1: column 'id': expected a number, got 'x'" },
	/* A column of text with one number in it is a typo, not strings;
	 * one of empty fields only is missing numbers. */
	{ "s,a\nsiteA,1\n7,2\n", NULL, ZM_ERR_DATA,
	  "t.csv:2:1: column 's': expected a number, got 'siteA'" },
	{ "s,a\n,1\n ,2\n", NULL, ZM_ERR_DATA,
	  "t.csv:2:1: column 's': expected a number, got ''" },
	{ "s,y\nA,1\n", "y", ZM_ERR_DATA, "no feature columns" },
};

START_TEST(test_csv_bad)
{
	struct zm_dataset_reader *r = NULL;
	enum zm_status st;
	struct zm_error err;

	st = open_csv(&r, csv_bad[_i].text, csv_bad[_i].label, 10, &err);
	ck_assert_msg(st == csv_bad[_i].status, "case %d: status %d, msg %s",
	              _i, st, err.msg);
	ck_assert_ptr_null(r);
	ck_assert_msg(strstr(err.msg, csv_bad[_i].msg) != NULL,
	              "case %d: '%s' lacks '%s'", _i, err.msg,
	              csv_bad[_i].msg);
}
END_TEST

START_TEST(test_csv_label_classes)
{
	/* String labels map to ids in sorted order, consistently across
	 * batches (bird appears only in the last batch). */
	const char *text = "f,kind\n1,dog\n2,cat\n3,dog\n4,bird\n";
	const int64_t want[] = { 2, 1, 2, 0 };
	struct zm_dataset_reader *r = NULL;
	struct zm_error err;
	struct zm_doc doc;
	size_t row = 0, i;
	bool eof;

	zm_doc_init(&doc);
	ck_assert_int_eq(open_csv(&r, text, "kind", 3, &err), ZM_OK);
	for (;;) {
		const struct zm_tensor *y;

		ck_assert_int_eq(zm_dataset_next(r, &doc, &eof, &err), ZM_OK);
		if (eof)
			break;
		y = zm_doc_find(&doc, "y");
		ck_assert_int_eq(y->dtype, ZM_DTYPE_I64);
		ck_assert_str_eq(zm_doc_meta(&doc, "zm.classes"),
		                 "[\"bird\",\"cat\",\"dog\"]");
		ck_assert_str_eq(zm_doc_meta(&doc, "zm.label"), "kind");
		ck_assert_str_eq(zm_doc_meta(&doc, "zm.columns"), "[\"f\"]");
		for (i = 0; i < (size_t)y->shape[0]; i++, row++)
			ck_assert_int_eq(((int64_t *)y->data)[i], want[row]);
	}
	ck_assert_uint_eq(row, 4);
	zm_doc_release(&doc);
	zm_dataset_close(r);
}
END_TEST

START_TEST(test_csv_string_columns)
{
	/* Columns without a number are string columns: sorted levels,
	 * consistent across batches (C appears only in the second), empty
	 * fields a level of their own; the features are the rest. */
	const char *text = "site,f,kind,dev\nB,1,dog,x\nA,2,cat,\n"
	                   "B,3,dog,y\nC,4,bird,x\n";
	const int64_t want_site[] = { 1, 0, 1, 2 }, want_dev[] = { 1, 0, 2, 1 };
	struct zm_dataset_reader *r = NULL;
	struct zm_data_column *cols;
	struct zm_error err;
	struct zm_doc doc;
	size_t row = 0, i, n, count;
	bool eof;

	zm_doc_init(&doc);
	ck_assert_int_eq(open_csv(&r, text, "kind", 3, &err), ZM_OK);
	for (;;) {
		const struct zm_tensor *x, *site, *dev;

		ck_assert_int_eq(zm_dataset_next(r, &doc, &eof, &err), ZM_OK);
		if (eof)
			break;
		ck_assert_int_eq(zm_data_check(&doc, "t", &n, &err), ZM_OK);
		x = zm_doc_find(&doc, "x");
		ck_assert_int_eq(x->shape[1], 1);
		ck_assert_str_eq(zm_doc_meta(&doc, "zm.columns"), "[\"f\"]");
		ck_assert_str_eq(zm_doc_meta(&doc, "zm.levels.site"),
		                 "[\"A\",\"B\",\"C\"]");
		ck_assert_str_eq(zm_doc_meta(&doc, "zm.levels.dev"),
		                 "[\"\",\"x\",\"y\"]");
		site = zm_doc_find(&doc, "column.site");
		dev = zm_doc_find(&doc, "column.dev");
		ck_assert(site && dev && site->dtype == ZM_DTYPE_I64);
		ck_assert_int_eq(zm_data_columns(&doc, n, "t", &cols, &count,
		                                 &err), ZM_OK);
		ck_assert_uint_eq(count, 2);
		ck_assert_str_eq(cols[0].name, "site");
		ck_assert_str_eq(cols[1].name, "dev");
		for (i = 0; i < n; i++, row++) {
			ck_assert_int_eq(((int64_t *)site->data)[i], want_site[row]);
			ck_assert_int_eq(((int64_t *)dev->data)[i], want_dev[row]);
			ck_assert_float_eq(((float *)x->data)[i], (float)(row + 1));
		}
		ck_assert_str_eq(cols[0].levels[cols[0].codes[0]],
		                 row == 3 ? "B" : "C");
		zm_data_columns_free(cols, count);
	}
	ck_assert_uint_eq(row, 4);
	zm_doc_release(&doc);
	zm_dataset_close(r);
}
END_TEST

START_TEST(test_csv_label_types)
{
	struct zm_dataset_reader *r = NULL;
	struct zm_error err;
	struct zm_doc doc;
	const struct zm_tensor *y, *id, *x;
	bool eof;

	zm_doc_init(&doc);
	/* Integer labels by index, an integer id column. */
	ck_assert_int_eq(open_csv(&r, "id,a,b\n10,1.5,3\n11,2.5,-4\n", "2",
	                          10, &err), ZM_OK);
	ck_assert_int_eq(zm_dataset_next(r, &doc, &eof, &err), ZM_OK);
	y = zm_doc_find(&doc, "y");
	id = zm_doc_find(&doc, "id");
	x = zm_doc_find(&doc, "x");
	ck_assert_int_eq(y->dtype, ZM_DTYPE_I64);
	ck_assert_int_eq(((int64_t *)y->data)[1], -4);
	ck_assert_int_eq(id->dtype, ZM_DTYPE_I64);
	ck_assert_int_eq(((int64_t *)id->data)[0], 10);
	ck_assert_int_eq(((int64_t *)id->data)[1], 11);
	ck_assert_int_eq(x->shape[1], 1);
	ck_assert_float_eq(((float *)x->data)[1], 2.5f);
	ck_assert_ptr_null(zm_doc_meta(&doc, "zm.classes"));
	zm_dataset_close(r);

	/* A fractional value makes the label a regression target, and an id
	 * column with fractions is an ordinary feature. */
	ck_assert_int_eq(open_csv(&r, "id,t\n0.5,1\n2,2.25\n", "t", 10, &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_dataset_next(r, &doc, &eof, &err), ZM_OK);
	y = zm_doc_find(&doc, "y");
	ck_assert_int_eq(y->dtype, ZM_DTYPE_F32);
	ck_assert_float_eq(((float *)y->data)[0], 1.0f);
	ck_assert_float_eq(((float *)y->data)[1], 2.25f);
	ck_assert_ptr_null(zm_doc_find(&doc, "id"));
	ck_assert_int_eq(zm_doc_find(&doc, "x")->shape[1], 1);
	ck_assert_str_eq(zm_doc_meta(&doc, "zm.columns"), "[\"id\"]");
	zm_dataset_close(r);
	zm_doc_release(&doc);
}
END_TEST

START_TEST(test_csv_header_only)
{
	struct zm_dataset_reader *r = NULL;
	struct zm_error err;
	struct zm_doc doc;
	const struct zm_tensor *x;
	bool eof;

	zm_doc_init(&doc);
	ck_assert_int_eq(open_csv(&r, "a,b,c\n", NULL, 10, &err), ZM_OK);
	ck_assert_int_eq(zm_dataset_next(r, &doc, &eof, &err), ZM_OK);
	ck_assert(!eof);
	x = zm_doc_find(&doc, "x");
	ck_assert_int_eq(x->shape[0], 0);
	ck_assert_int_eq(x->shape[1], 3);
	ck_assert_str_eq(zm_doc_meta(&doc, "zm.samples"), "0");
	ck_assert_int_eq(zm_dataset_next(r, &doc, &eof, &err), ZM_OK);
	ck_assert(eof);
	zm_doc_release(&doc);
	zm_dataset_close(r);
}
END_TEST

START_TEST(test_csv_file_and_batches)
{
	/* A real file, read twice (two passes), in batches of 7 over 50 rows;
	 * the values are checked against the formula that wrote them. */
	char path[4200];
	struct zm_dataset_options o;
	struct zm_dataset_reader *r = NULL;
	struct zm_error err;
	struct zm_doc doc;
	size_t row = 0, docs = 0, i;
	bool eof;
	FILE *f;

	snprintf(path, sizeof(path), "%s/d.csv", unit_tmpdir());
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "u,v,label\n");
	for (i = 0; i < 50; i++)
		fprintf(f, "%zu,%g,%zu\n", i, (double)i * 0.25 - 3, i % 3);
	fclose(f);
	zm_doc_init(&doc);
	zm_dataset_options_init(&o);
	o.path = path;
	o.label = "label";
	o.batch = 7;
	ck_assert_int_eq(zm_dataset_open(&r, &o, &err), ZM_OK);
	for (;;) {
		const struct zm_tensor *x, *y;

		ck_assert_int_eq(zm_dataset_next(r, &doc, &eof, &err), ZM_OK);
		if (eof)
			break;
		docs++;
		x = zm_doc_find(&doc, "x");
		y = zm_doc_find(&doc, "y");
		for (i = 0; i < (size_t)x->shape[0]; i++, row++) {
			ck_assert_float_eq(((float *)x->data)[2 * i], (float)row);
			ck_assert_float_eq(((float *)x->data)[2 * i + 1],
			                   (float)((double)row * 0.25 - 3));
			ck_assert_int_eq(((int64_t *)y->data)[i],
			                 (int64_t)(row % 3));
		}
	}
	ck_assert_uint_eq(row, 50);
	ck_assert_uint_eq(docs, 8);
	zm_doc_release(&doc);
	zm_dataset_close(r);
}
END_TEST

START_TEST(test_features_scale)
{
	struct zm_doc doc;
	struct zm_tensor t, f;
	struct zm_error err;
	int64_t shape[3] = { 2, 2, 3 };
	size_t i;

	zm_doc_init(&doc);
	zm_tensor_init(&t);
	zm_tensor_init(&f);
	ck_assert_int_eq(zm_tensor_alloc(&t, "x", ZM_DTYPE_U8, 3, shape, &err),
	                 ZM_OK);
	for (i = 0; i < 12; i++)
		((unsigned char *)t.data)[i] = (unsigned char)(i * 20);
	ck_assert_int_eq(zm_doc_add(&doc, &t, &err), ZM_OK);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.scale", "0.5", &err), ZM_OK);
	ck_assert_int_eq(zm_data_features(&doc, &f, &err), ZM_OK);
	ck_assert_int_eq(f.ndim, 2);
	ck_assert_int_eq(f.shape[0], 2);
	ck_assert_int_eq(f.shape[1], 6);
	for (i = 0; i < 12; i++)
		ck_assert_float_eq(((float *)f.data)[i], (float)(i * 20) * 0.5f);
	zm_tensor_release(&f);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.scale", "-1", &err), ZM_OK);
	ck_assert_int_eq(zm_data_features(&doc, &f, &err), ZM_ERR_DATA);
	zm_doc_release(&doc);
}
END_TEST

/* A batch of rows at a time (the vector path and its tail) against the
 * naive loop, every byte value. */
START_TEST(test_features_rows)
{
	struct zm_doc doc;
	struct zm_tensor t;
	struct zm_error err;
	int64_t shape[2] = { 9, 37 };
	float out[7 * 37], scale;
	size_t i, d;

	zm_doc_init(&doc);
	zm_tensor_init(&t);
	ck_assert_int_eq(zm_tensor_alloc(&t, "x", ZM_DTYPE_U8, 2, shape, &err),
	                 ZM_OK);
	for (i = 0; i < 9 * 37; i++)
		((unsigned char *)t.data)[i] = (unsigned char)((i * 97 + 255) % 256);
	ck_assert_int_eq(zm_doc_add(&doc, &t, &err), ZM_OK);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.scale", "0.00392156886",
	                                 &err), ZM_OK);
	ck_assert_int_eq(zm_data_features_width(&doc, &d, &scale, &err), ZM_OK);
	ck_assert_uint_eq(d, 37);
	zm_data_features_rows(&doc, d, scale, 2, 7, out);
	for (i = 0; i < 7 * 37; i++)
		ck_assert_float_eq(out[i], (float)((((2 * 37 + i) * 97 + 255) % 256))
		                   * 0.00392156886f);
	zm_doc_release(&doc);
}
END_TEST

/* Adds a zeroed tensor of dtype dt and shape [a, b] (b 0: [a]) to doc. */
static void describe_add(struct zm_doc *doc, const char *name,
                         enum zm_dtype dt, int64_t a, int64_t b)
{
	int64_t shape[2] = { a, b };
	struct zm_tensor t;
	struct zm_error err;

	zm_tensor_init(&t);
	ck_assert_int_eq(zm_tensor_alloc(&t, name, dt, b ? 2 : 1, shape, &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_doc_add(doc, &t, &err), ZM_OK);
}

/* tensor info's totals: rows only from the x of data documents, bytes
 * and tensors from every document. */
START_TEST(test_stream_describe)
{
	char path[512];
	struct zm_writer *w;
	struct zm_reader *r;
	struct zm_doc doc;
	struct zm_stream_totals tot = { 0, 0, 0, 0 };
	struct zm_error err;
	bool eof;

	snprintf(path, sizeof(path), "%s/d.st.gz", unit_tmpdir());
	ck_assert_int_eq(zm_writer_open(&w, path, 1, &err), ZM_OK);
	zm_doc_init(&doc);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.kind", "data", &err), ZM_OK);
	describe_add(&doc, "x", ZM_DTYPE_F32, 5, 3);     /* 60 bytes */
	describe_add(&doc, "y", ZM_DTYPE_I64, 5, 0);     /* 40 bytes */
	ck_assert_int_eq(zm_writer_write_doc(w, &doc, &err), ZM_OK);
	zm_doc_release(&doc);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.kind", "model", &err), ZM_OK);
	describe_add(&doc, "x", ZM_DTYPE_F32, 7, 2);     /* 56 bytes, no rows */
	ck_assert_int_eq(zm_writer_write_doc(w, &doc, &err), ZM_OK);
	zm_doc_release(&doc);
	ck_assert_int_eq(zm_writer_commit(w, &err), ZM_OK);

	ck_assert_int_eq(zm_reader_open(&r, path, &err), ZM_OK);
	ck_assert_int_eq(zm_stream_describe_next(r, &doc, &tot, &eof, &err),
	                 ZM_OK);
	ck_assert(!eof);
	ck_assert_uint_eq(doc.n_tensors, 2);
	ck_assert_uint_eq(tot.rows, 5);
	ck_assert_int_eq(zm_stream_describe_next(r, &doc, &tot, &eof, &err),
	                 ZM_OK);
	ck_assert(!eof);
	ck_assert_int_eq(zm_stream_describe_next(r, &doc, &tot, &eof, &err),
	                 ZM_OK);
	ck_assert(eof);
	ck_assert_uint_eq(tot.docs, 2);
	ck_assert_uint_eq(tot.tensors, 3);
	ck_assert_uint_eq(tot.rows, 5);
	ck_assert_uint_eq(tot.bytes, 60 + 40 + 56);
	zm_reader_close(r);
	zm_doc_release(&doc);
}
END_TEST

START_TEST(test_data_check)
{
	struct zm_doc doc;
	struct zm_tensor t;
	struct zm_error err;
	int64_t xs[2] = { 3, 2 }, ys[1] = { 4 };
	size_t n;

	zm_doc_init(&doc);
	zm_tensor_init(&t);
	ck_assert_int_eq(zm_data_check(&doc, "d", &n, &err), ZM_ERR_DATA);
	zm_tensor_alloc(&t, "x", ZM_DTYPE_F32, 2, xs, &err);
	zm_doc_add(&doc, &t, &err);
	ck_assert_int_eq(zm_data_check(&doc, "d", &n, &err), ZM_OK);
	ck_assert_uint_eq(n, 3);
	zm_tensor_alloc(&t, "y", ZM_DTYPE_I64, 1, ys, &err);
	zm_doc_add(&doc, &t, &err);
	ck_assert_int_eq(zm_data_check(&doc, "d", &n, &err), ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "'y'"));
	zm_doc_release(&doc);

	/* String columns: I64 [n], levels present, indexes inside them. */
	zm_doc_init(&doc);
	zm_tensor_alloc(&t, "x", ZM_DTYPE_F32, 2, xs, &err);
	zm_doc_add(&doc, &t, &err);
	zm_tensor_alloc(&t, "column.site", ZM_DTYPE_F32, 1, xs, &err);
	zm_doc_add(&doc, &t, &err);
	ck_assert_int_eq(zm_data_check(&doc, "d", &n, &err), ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "must be I64 [3]"));
	zm_doc_release(&doc);
	zm_doc_init(&doc);
	zm_tensor_alloc(&t, "x", ZM_DTYPE_F32, 2, xs, &err);
	zm_doc_add(&doc, &t, &err);
	zm_tensor_alloc(&t, "column.site", ZM_DTYPE_I64, 1, xs, &err);
	((int64_t *)t.data)[0] = 0;
	((int64_t *)t.data)[1] = 1;
	((int64_t *)t.data)[2] = 2;
	zm_doc_add(&doc, &t, &err);
	ck_assert_int_eq(zm_data_check(&doc, "d", &n, &err), ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "needs metadata zm.levels.site"));
	zm_doc_set_meta(&doc, "zm.levels.site", "[\"a\",\"b\"]", &err);
	ck_assert_int_eq(zm_data_check(&doc, "d", &n, &err), ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "row 2: value 2 outside its 2 levels"));
	zm_doc_set_meta(&doc, "zm.levels.site", "[\"a\",\"b\",\"c\"]", &err);
	ck_assert_int_eq(zm_data_check(&doc, "d", &n, &err), ZM_OK);
	zm_doc_release(&doc);
}
END_TEST

Suite *suite_dataset(void)
{
	Suite *s = suite_create("dataset");
	TCase *tc = tcase_create("idx");

	tcase_add_test(tc, test_idx_good);
	tcase_add_test(tc, test_idx_image_shape);
	tcase_add_loop_test(tc, test_idx_bad, 0,
	                    (int)(sizeof(idx_bad) / sizeof(idx_bad[0])));
	tcase_add_test(tc, test_idx_missing_file);
	suite_add_tcase(s, tc);
	tc = tcase_create("csv");
	tcase_add_test(tc, test_csv_quoted);
	tcase_add_test(tc, test_csv_multiline_line_numbers);
	tcase_add_loop_test(tc, test_csv_bad, 0,
	                    (int)(sizeof(csv_bad) / sizeof(csv_bad[0])));
	tcase_add_test(tc, test_csv_label_classes);
	tcase_add_test(tc, test_csv_string_columns);
	tcase_add_test(tc, test_csv_label_types);
	tcase_add_test(tc, test_csv_header_only);
	tcase_add_test(tc, test_csv_file_and_batches);
	suite_add_tcase(s, tc);
	tc = tcase_create("layout");
	tcase_add_test(tc, test_features_scale);
	tcase_add_test(tc, test_features_rows);
	tcase_add_test(tc, test_data_check);
	tcase_add_test(tc, test_stream_describe);
	suite_add_tcase(s, tc);
	return s;
}
