/*
 * Data sources as batches.  A dataset reader opens one source -- a CSV
 * file, a pair of IDX files (images and labels, as Fashion-MNIST ships
 * them) or a zoomerge data stream -- and yields it as batch documents in
 * the common data layout of zoomerge(5):
 *
 *   x   [n, ...]  F32, or U8 with metadata zm.scale
 *   y   [n] I64 class ids, or [n] / [n, t] F32 targets   (optional)
 *   id  [n] I64 row ids                                   (optional)
 *   column.NAME [n] I64 a string column: index into zm.levels.NAME
 *   __metadata__: zm.kind = data, zm.samples = n, and per source
 *   zm.scale, zm.columns, zm.label, zm.classes, zm.levels.NAME.
 *
 * A CSV column other than the label (and id) in which no value is a
 * number is a string column -- a data source, a site, a device -- kept
 * for slice rules and export rather than as a feature; a column with
 * numbers and other values is an error naming the first bad value.
 *
 * Memory is bounded by one batch, never by the number of rows: IDX files
 * are read incrementally, CSV files in two passes (the first validates
 * every row and learns the label's type and classes, so every batch of one
 * import has the same dtypes and class ids; standard input and pipes are
 * spooled to a temporary file for that).  Streams pass their documents
 * through as they are, after checking the layout.
 */
#ifndef ZM_DATASET_H
#define ZM_DATASET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "stream.h"
#include "tensor.h"

#define ZM_DATASET_BATCH_DEFAULT 4096
/* CSV label columns with more distinct string values are refused. */
#define ZM_DATASET_MAX_CLASSES 65536
/* CSV numbers (features and numeric labels) beyond this magnitude are
 * refused with their file:line:column: squares of larger values (sums of
 * squares, gradients of squared errors) overflow F32, so training on them
 * diverges.  sqrt(FLT_MAX) is 1.8e19. */
#define ZM_DATA_MAX_ABS 1e18

enum zm_dataset_kind {
	ZM_DATASET_CSV,
	ZM_DATASET_IDX,
	ZM_DATASET_STREAM
};

/*
 * What to open.  The strings are borrowed for the duration of
 * zm_dataset_open only (the reader copies what it keeps).  In-memory
 * inputs (data/len, images_data/labels_data) replace the paths when
 * non-NULL and must outlive the reader; the paths then only name them in
 * messages.  Files and memory may be gzip-compressed (each member checked
 * whole: truncation is an error, see zm_infile_read) or raw; "-" is
 * standard input.
 */
struct zm_dataset_options {
	enum zm_dataset_kind kind;
	const char *path;            /* csv, stream; NULL or "-": stdin */
	const void *data;            /* csv, stream: in-memory input */
	size_t len;
	const char *images;          /* idx: the image file (magic 0x803) */
	const void *images_data;
	size_t images_len;
	const char *labels;          /* idx: the label file (0x801); optional */
	const void *labels_data;
	size_t labels_len;
	const char *label;           /* csv: label column, name or 0-based index */
	size_t batch;                /* rows per batch (csv, idx) */
	bool image_shape;            /* idx: x as [n, 1, rows, cols], not [n, rows*cols] */
	bool prefetch;               /* read on a thread, one batch ahead */
};

/* Defaults: CSV from stdin, batches of ZM_DATASET_BATCH_DEFAULT rows,
 * read ahead on a thread of the reader's own (prefetch.h): batch n + 1 is
 * inflated and decoded while the caller computes on batch n, and errors
 * come in the same order, with the same messages, as without it. */
void zm_dataset_options_init(struct zm_dataset_options *o);

struct zm_dataset_reader;

/*
 * Opens a source.  On success *r is a new reader to be closed with
 * zm_dataset_close.  Fails with ZM_ERR_NOTFOUND / ZM_ERR_IO for files that
 * cannot be read, ZM_ERR_FORMAT for bad IDX headers, ZM_ERR_USAGE for
 * impossible options (no such --label column, batch 0).  A CSV source is
 * wholly validated here (first pass), so its data errors -- ragged rows,
 * "FILE:LINE:FIELD: column 'NAME': expected a number, got 'abc'", bad
 * quoting -- are reported before any batch is produced.
 */
enum zm_status zm_dataset_open(struct zm_dataset_reader **r,
                               const struct zm_dataset_options *o,
                               struct zm_error *err);

/*
 * Reads the next batch into doc (released first; the caller owns what is
 * in doc afterwards).  At the end returns ZM_OK with *eof true and doc
 * empty.  A CSV with a header and no rows yields one batch of 0 rows, so
 * its column names still reach the output.  Errors name the file (IDX:
 * truncation, trailing bytes, corrupt gzip; CSV: a truncated last row;
 * stream: the reader's errors and documents that are not data).
 */
enum zm_status zm_dataset_next(struct zm_dataset_reader *r,
                               struct zm_doc *doc, bool *eof,
                               struct zm_error *err);

/* Rows produced so far. */
uint64_t zm_dataset_rows(const struct zm_dataset_reader *r);

/* Closes the reader and its files; NULL is fine. */
void zm_dataset_close(struct zm_dataset_reader *r);

/*
 * Checks that doc has the data layout: an x with at least one dimension,
 * and y / id (when present) with the same first dimension, y of I64 or a
 * float dtype, id of I64, string columns as zm_data_columns wants them.
 * On success *n is the number of rows.  Errors are ZM_ERR_DATA naming the
 * tensor; name names the input in messages.
 */
enum zm_status zm_data_check(const struct zm_doc *doc, const char *name,
                             size_t *n, struct zm_error *err);

/* What a stream holds (tensor info): its documents, their tensors and
 * payload bytes, and the rows of its data documents. */
struct zm_stream_totals {
	size_t docs, tensors;
	unsigned long long bytes, rows;
};

/*
 * Reads the next document's header from r into doc (released first: the
 * metadata and the tensors' names, dtypes and shapes, no payload) and
 * adds it to t, which starts zeroed; *eof at the end of the stream.
 * Errors of zm_reader_next_header.
 */
enum zm_status zm_stream_describe_next(struct zm_reader *r, struct zm_doc *doc,
                                       struct zm_stream_totals *t, bool *eof,
                                       struct zm_error *err);

/*
 * The features of a data document as a new F32 tensor "x" of shape [n, d]
 * (x flattened after its first dimension) with zm.scale applied when
 * present.  out must be initialised; the caller releases it.  A zm.scale
 * that is not a finite positive number is ZM_ERR_DATA.
 */
enum zm_status zm_data_features(const struct zm_doc *doc,
                                struct zm_tensor *out, struct zm_error *err);

/*
 * The same in pieces, for a caller that converts a batch at a time into
 * a buffer of its own instead of the whole document at once (no large
 * allocation, rows still in cache when used): the width d of a row and
 * the scale, with zm_data_features's errors; then rows [first, first +
 * n) of x, scaled, into dst (n x d floats).  doc must have passed
 * zm_data_check.
 */
enum zm_status zm_data_features_width(const struct zm_doc *doc, size_t *d,
                                      float *scale, struct zm_error *err);
void zm_data_features_rows(const struct zm_doc *doc, size_t d, float scale,
                           size_t first, size_t n, float *dst);

/* The tensor name prefix and metadata key prefix of string columns. */
#define ZM_DATA_COLUMN_PREFIX "column."
#define ZM_DATA_LEVELS_PREFIX "zm.levels."

/* One string column of a data document. */
struct zm_data_column {
	const char *name;              /* after the prefix; borrowed from doc */
	const int64_t *codes;          /* [n], borrowed from doc */
	char **levels;                 /* owned, n_levels values */
	size_t n_levels;
};

/* The levels (metadata zm.levels.NAME, a JSON list) of string column
 * name in doc, or NULL; borrowed from doc. */
const char *zm_data_levels_json(const struct zm_doc *doc, const char *name);

/*
 * The string columns of data document doc of n rows, in tensor order, as
 * a new array *out of *count (NULL and 0 when there are none; free with
 * zm_data_columns_free).  Errors (ZM_ERR_DATA, where names doc): a
 * column tensor that is not I64 [n], missing or malformed levels, an
 * index outside them.
 */
enum zm_status zm_data_columns(const struct zm_doc *doc, size_t n,
                               const char *where,
                               struct zm_data_column **out, size_t *count,
                               struct zm_error *err);
void zm_data_columns_free(struct zm_data_column *c, size_t count);

/* The value of zm.scale (1 when absent); false when it is malformed. */
bool zm_data_scale(const struct zm_doc *doc, float *scale);

#endif
