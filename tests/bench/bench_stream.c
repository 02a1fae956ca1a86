/*
 * Stream reading speed: reads the data stream named by ZM_BENCH_TRAIN (the
 * 60000-row Fashion-MNIST import that tests/bench/run.sh makes) with
 * zm_reader_next, and through the dataset reader with the features
 * converted to F32, and compares both with plain inflation of the same
 * file by zlib (what zcat does), best of ZM_BENCH_REPS runs each.  The
 * parsing and validation on top of inflate should cost under 25 %.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "dataset.h"
#include "stream.h"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Inflates the whole file into a reused buffer; returns the bytes. */
static double inflate_only(const char *path, double *bytes)
{
	static char buf[1 << 17];
	gzFile gz = gzopen(path, "rb");
	double t0 = now(), total = 0;
	int n;

	if (!gz) {
		fprintf(stderr, "bench_stream: %s: cannot open\n", path);
		exit(1);
	}
	gzbuffer(gz, 1 << 17);
	while ((n = gzread(gz, buf, sizeof(buf))) > 0)
		total += n;
	if (n < 0) {
		fprintf(stderr, "bench_stream: %s: inflate failed\n", path);
		exit(1);
	}
	gzclose(gz);
	*bytes = total;
	return now() - t0;
}

static void fail(const struct zm_error *err)
{
	fprintf(stderr, "bench_stream: %s\n", err->msg);
	exit(1);
}

/* zm_reader_next over every document; counts the rows as a check. */
static double read_stream(const char *path, size_t *rows)
{
	struct zm_reader *r = NULL;
	struct zm_error err;
	struct zm_doc doc;
	double t0 = now();
	bool eof = false;

	zm_doc_init(&doc);
	*rows = 0;
	if (zm_reader_open(&r, path, &err) != ZM_OK)
		fail(&err);
	for (;;) {
		const struct zm_tensor *x;

		if (zm_reader_next(r, &doc, &eof, &err) != ZM_OK)
			fail(&err);
		if (eof)
			break;
		x = zm_doc_find(&doc, "x");
		if (x)
			*rows += (size_t)x->shape[0];
	}
	zm_doc_release(&doc);
	zm_reader_close(r);
	return now() - t0;
}

/* The data path of the programs: dataset reader, then F32 features. */
static double read_features(const char *path, double *checksum)
{
	struct zm_dataset_options o;
	struct zm_dataset_reader *r = NULL;
	struct zm_error err;
	struct zm_doc doc;
	struct zm_tensor f;
	double t0 = now();
	bool eof = false;

	zm_doc_init(&doc);
	zm_tensor_init(&f);
	zm_dataset_options_init(&o);
	o.kind = ZM_DATASET_STREAM;
	o.path = path;
	*checksum = 0;
	if (zm_dataset_open(&r, &o, &err) != ZM_OK)
		fail(&err);
	for (;;) {
		if (zm_dataset_next(r, &doc, &eof, &err) != ZM_OK)
			fail(&err);
		if (eof)
			break;
		if (zm_data_features(&doc, &f, &err) != ZM_OK)
			fail(&err);
		*checksum += ((float *)f.data)[zm_tensor_numel(&f) / 2];
		zm_tensor_release(&f);
	}
	zm_doc_release(&doc);
	zm_dataset_close(r);
	return now() - t0;
}

int main(void)
{
	const char *path = getenv("ZM_BENCH_TRAIN");
	const char *reps_s = getenv("ZM_BENCH_REPS");
	int reps = reps_s ? atoi(reps_s) : 5, i;
	double best_inf = 1e30, best_read = 1e30, best_feat = 1e30;
	double bytes = 0, sum = 0, t;
	size_t rows = 0;

	if (!path) {
		fprintf(stderr, "bench_stream: ZM_BENCH_TRAIN names no stream\n");
		return 1;
	}
	if (reps < 1)
		reps = 1;
	/* Interleaved, so that a slow moment of the machine hits all three. */
	for (i = 0; i < reps; i++) {
		t = inflate_only(path, &bytes);
		if (t < best_inf)
			best_inf = t;
		t = read_stream(path, &rows);
		if (t < best_read)
			best_read = t;
		t = read_features(path, &sum);
		if (t < best_feat)
			best_feat = t;
	}
	printf("# stream: %zu rows, %.1f MB decompressed\n", rows, bytes / 1e6);
	printf("bench: stream-read: %.3f s (inflate only: %.3f s, "
	       "ratio %.2f)\n", best_read, best_inf, best_read / best_inf);
	printf("bench: stream-read-rate: %.1f MB/s (inflate only: "
	       "%.1f MB/s, ratio %.2f)\n", bytes / 1e6 / best_read,
	       bytes / 1e6 / best_inf, best_inf / best_read);
	printf("bench: stream-features-f32: %.3f s (inflate only: %.3f s, "
	       "ratio %.2f)\n", best_feat, best_inf, best_feat / best_inf);
	(void)sum;
	return 0;
}
