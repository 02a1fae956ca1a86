/*
 * The reader thread (prefetch.h): pieces arrive in order, a place is
 * never written while the consumer holds it, an error comes after every
 * piece read before it with the producer's message, and freeing stops a
 * thread that is waiting for a place.  Then a dataset read with and
 * without the thread: the same batches, the same error after the same
 * number of batches.
 */
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "prefetch.h"
#include "unit.h"

enum { SLOTS = 2, LEN = 64 };

/* Piece k is LEN copies of k; piece `fail_at` fails instead. */
struct counter {
	int slot[SLOTS][LEN];
	int next, count, fail_at;
};

static enum zm_status count_fn(void *ctx, size_t slot, bool *eof,
                               struct zm_error *err)
{
	struct counter *c = ctx;
	int k;

	if (c->next == c->fail_at)
		return zm_error_set(err, ZM_ERR_FORMAT, "piece %d: broken",
		                    c->next);
	if (c->next == c->count) {
		*eof = true;
		return ZM_OK;
	}
	for (k = 0; k < LEN; k++)
		c->slot[slot][k] = c->next;
	c->next++;
	return ZM_OK;
}

/* Takes every piece, checking each stays intact while held; returns
 * the status that ended it and the pieces seen. */
static enum zm_status take_all(struct counter *c, int *seen,
                               struct zm_error *err)
{
	struct zm_prefetch *p = NULL;
	enum zm_status st;
	size_t slot;
	bool eof;
	int k, spin;

	ck_assert_int_eq(zm_prefetch_start(&p, SLOTS, count_fn, c, err), ZM_OK);
	*seen = 0;
	for (;;) {
		st = zm_prefetch_take(p, &slot, &eof, err);
		if (st != ZM_OK || eof)
			break;
		/* Work while holding the place: the thread may fill the
		 * others meanwhile, never this one. */
		for (spin = 0; spin < 3; spin++)
			for (k = 0; k < LEN; k++)
				ck_assert_int_eq(c->slot[slot][k], *seen);
		(*seen)++;
		zm_prefetch_done(p);
	}
	if (st != ZM_OK) {
		/* The error stays. */
		struct zm_error again;
		ck_assert_int_eq(zm_prefetch_take(p, &slot, &eof, &again), st);
		ck_assert_str_eq(again.msg, err->msg);
	}
	zm_prefetch_free(p);
	return st;
}

START_TEST(test_prefetch_order)
{
	struct counter c = { .count = 1000, .fail_at = -1 };
	struct zm_error err;
	int seen;

	ck_assert_int_eq(take_all(&c, &seen, &err), ZM_OK);
	ck_assert_int_eq(seen, 1000);
}
END_TEST

START_TEST(test_prefetch_error_in_order)
{
	struct counter c = { .count = 1000, .fail_at = 37 };
	struct zm_error err;
	int seen;

	zm_error_clear(&err);
	ck_assert_int_eq(take_all(&c, &seen, &err), ZM_ERR_FORMAT);
	ck_assert_int_eq(seen, 37);
	ck_assert_str_eq(err.msg, "piece 37: broken");
}
END_TEST

START_TEST(test_prefetch_empty)
{
	struct counter c = { .count = 0, .fail_at = -1 };
	struct zm_error err;
	int seen;

	ck_assert_int_eq(take_all(&c, &seen, &err), ZM_OK);
	ck_assert_int_eq(seen, 0);
}
END_TEST

/* A consumer that stops early (its own error) frees a thread that waits
 * for a place to read into. */
START_TEST(test_prefetch_stop_early)
{
	struct counter c = { .count = 1000000, .fail_at = -1 };
	struct zm_prefetch *p = NULL;
	struct zm_error err;
	size_t slot;
	bool eof;

	ck_assert_int_eq(zm_prefetch_start(&p, SLOTS, count_fn, &c, &err), ZM_OK);
	ck_assert_int_eq(zm_prefetch_take(p, &slot, &eof, &err), ZM_OK);
	ck_assert(!eof);
	ck_assert_int_eq(c.slot[slot][0], 0);
	zm_prefetch_free(p);
	/* Stopped: at most the places it had, plus the one it was on. */
	ck_assert_int_le(c.next, SLOTS + 2);
}
END_TEST

/* ---- datasets with and without the thread ---- */

/* n images of 2 x 3 bytes, (i * 5 + k) % 256, and n labels; cut bytes
 * off the end of the images. */
static size_t idx_bytes(unsigned char *img, unsigned char *lbl, unsigned n,
                        size_t cut, size_t *lbl_len)
{
	size_t len = 0, i, k;
	const unsigned hdr[] = { 0x803, n, 2, 3 };

	for (i = 0; i < 4; i++, len += 4) {
		img[len] = (unsigned char)(hdr[i] >> 24);
		img[len + 1] = (unsigned char)(hdr[i] >> 16);
		img[len + 2] = (unsigned char)(hdr[i] >> 8);
		img[len + 3] = (unsigned char)hdr[i];
	}
	for (i = 0; i < n; i++)
		for (k = 0; k < 6; k++)
			img[len++] = (unsigned char)((i * 5 + k) % 256);
	memcpy(lbl, "\0\0\x08\x01", 4);
	lbl[4] = (unsigned char)(n >> 24);
	lbl[5] = (unsigned char)(n >> 16);
	lbl[6] = (unsigned char)(n >> 8);
	lbl[7] = (unsigned char)n;
	for (i = 0; i < n; i++)
		lbl[8 + i] = (unsigned char)(i % 10);
	*lbl_len = 8 + n;
	return len - cut;
}

/* Reads the whole source; the x bytes of every batch concatenated into
 * out, the batch count into *docs. */
static enum zm_status read_idx(bool prefetch, const unsigned char *img,
                               size_t il, const unsigned char *lbl,
                               size_t ll, unsigned char *out, size_t *docs,
                               struct zm_error *err)
{
	struct zm_dataset_options o;
	struct zm_dataset_reader *r = NULL;
	struct zm_doc doc;
	enum zm_status st;
	size_t used = 0;
	bool eof;

	zm_dataset_options_init(&o);
	ck_assert(o.prefetch);          /* the default */
	o.kind = ZM_DATASET_IDX;
	o.images = "img.idx";
	o.images_data = img;
	o.images_len = il;
	o.labels = "lbl.idx";
	o.labels_data = lbl;
	o.labels_len = ll;
	o.batch = 7;
	o.prefetch = prefetch;
	zm_doc_init(&doc);
	*docs = 0;
	if ((st = zm_dataset_open(&r, &o, err)))
		return st;
	for (;;) {
		const struct zm_tensor *x;
		st = zm_dataset_next(r, &doc, &eof, err);
		if (st != ZM_OK || eof)
			break;
		x = zm_doc_find(&doc, "x");
		memcpy(out + used, x->data, x->nbytes);
		used += x->nbytes;
		(*docs)++;
		ck_assert_uint_eq(zm_dataset_rows(r), used / 6);
	}
	zm_doc_release(&doc);
	zm_dataset_close(r);
	return st;
}

START_TEST(test_prefetch_dataset_same)
{
	static unsigned char img[16 + 100 * 6], lbl[8 + 100];
	static unsigned char a[100 * 6], b[100 * 6];
	/* Whole, then cut inside the 10th batch of 7 rows. */
	size_t cut = _i == 0 ? 0 : 100 * 6 - 9 * 7 * 6 - 4, ll, il, da, db;
	struct zm_error ea, eb;
	enum zm_status sa, sb;

	il = idx_bytes(img, lbl, 100, cut, &ll);
	zm_error_clear(&ea);
	zm_error_clear(&eb);
	sa = read_idx(false, img, il, lbl, ll, a, &da, &ea);
	sb = read_idx(true, img, il, lbl, ll, b, &db, &eb);
	ck_assert_int_eq(sa, sb);
	ck_assert_uint_eq(da, db);
	ck_assert_str_eq(ea.msg, eb.msg);
	ck_assert_mem_eq(a, b, _i == 0 ? 100 * 6 : da * 7 * 6);
	if (_i == 0) {
		ck_assert_int_eq(sa, ZM_OK);
		ck_assert_uint_eq(da, 15);
	} else {
		ck_assert_int_eq(sa, ZM_ERR_FORMAT);
		ck_assert_uint_eq(da, 9);
		ck_assert_ptr_nonnull(strstr(ea.msg, "img.idx: truncated"));
	}
}
END_TEST

Suite *suite_prefetch(void)
{
	Suite *s = suite_create("prefetch");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_prefetch_order);
	tcase_add_test(tc, test_prefetch_error_in_order);
	tcase_add_test(tc, test_prefetch_empty);
	tcase_add_test(tc, test_prefetch_stop_early);
	tcase_add_loop_test(tc, test_prefetch_dataset_same, 0, 2);
	suite_add_tcase(s, tc);
	return s;
}
