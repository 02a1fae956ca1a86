/*
 * The slicer behind slice(1): one pass (two when k-means centroids must
 * be fitted first) over a data source, writing DIR/NAME.safetensors.gz per
 * slice of the rules (slice.h), each ending in the slice's profile
 * document, the membership stream when asked, and DIR/centroids when the
 * rules fit clusters.  Memory is bounded by a batch and the k-means
 * sample.  Nothing becomes visible until zm_slicer_commit.
 */
#ifndef ZM_SLICER_H
#define ZM_SLICER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dataset.h"
#include "error.h"
#include "json.h"
#include "profile.h"
#include "slice.h"
#include "stream.h"

/* What to slice and where; the strings are borrowed for the slicer's
 * life. */
struct zm_slicer_options {
	const char *rules_path;
	const char *out_dir;
	const char *membership;      /* NULL: no membership stream */
	const char *input;           /* NULL: stdin */
	enum zm_dataset_kind from;
	const char *images, *labels, *label;
	size_t batch;
	const char *centroids;       /* reuse these instead of fitting */
	int compress;
};

/* Per-slice output state. */
struct zm_slice_out {
	char *path;                  /* DIR/NAME.safetensors.gz */
	struct zm_writer *w;
	struct zm_profile prof;
	uint64_t rows;
};

/* Caller-allocated; zm_slicer_init, then read, commit, release.  The
 * counters (rows, unmatched, out[i].rows) are for the caller to report. */
struct zm_slicer {
	const struct zm_slicer_options *o;
	struct zm_slice_rules rules;
	struct zm_slice_out *out;    /* [rules.n_rules] */
	struct zm_writer *member;
	float *centroids;            /* [k, d] when k > 0 */
	char *centroids_path;
	size_t d;
	/* the first batch's x layout, for the profile document */
	enum zm_dtype x_dtype;
	int x_ndim;
	int64_t x_shape[ZM_MAX_DIMS];
	bool has_y;
	enum zm_dtype y_dtype;
	int y_ndim;
	int64_t y_shape[ZM_MAX_DIMS];
	struct zm_doc meta;          /* metadata copied into every output */
	struct zm_doc strcols;       /* the first batch's string columns, no
	                                rows, and their levels: for the
	                                profile document */
	char *classes_json;          /* slice names, for the membership */
	uint64_t rows, unmatched;
	char *spool;                 /* temporary copy of stdin, unlinked */
	/* Scratch kept across batches: a fresh 12 MB buffer per batch costs
	 * its page faults every time. */
	float *rows_buf;
	size_t rows_cap;
};

/* Empties s; o is borrowed until zm_slicer_release. */
void zm_slicer_init(struct zm_slicer *s, const struct zm_slicer_options *o);

/* Loads the rules, creates the output directory, fits or loads the
 * centroids, and slices the whole input into the (uncommitted) outputs.
 * Rows in no slice are counted in s->unmatched, not refused: whether that
 * is an error is the caller's call, before zm_slicer_commit. */
enum zm_status zm_slicer_read(struct zm_slicer *s, struct zm_error *err);

/* Appends every slice's profile document, writes the centroids, then
 * commits the membership stream and the slice files. */
enum zm_status zm_slicer_commit(struct zm_slicer *s, struct zm_error *err);

/* Appends the YAML summary of slice(1) (mode, rows, slices with their
 * files, row counts and mean profile) to b. */
void zm_slicer_summary(const struct zm_slicer *s, struct zm_buf *b);

/*
 * Reads the profile of a slice file (the last document holding one, as
 * slice(1) writes it), reading only the headers of the data documents
 * before it, into p; *slice_name (freed and replaced; NULL when the file
 * has no zm.slice) is owned by the caller.  ZM_ERR_DATA when no document
 * holds a profile.
 */
enum zm_status zm_slice_profile_read(const char *path, struct zm_profile *p,
                                     char **slice_name, struct zm_error *err);

/* The slice name when a slice file does not say: its base name without
 * .safetensors.gz or .safetensors.  New memory, NULL when out of it. */
char *zm_slice_name_from_path(const char *path);

/* Aborts uncommitted outputs, removes the stdin spool, frees everything. */
void zm_slicer_release(struct zm_slicer *s);

#endif
