/*
 * Slicing rules (slice(1), zoomerge-slices(5)): which rows of a data
 * stream belong to which named slice.  A rules file is parsed into a
 * struct zm_slice_rules; its column and feature names are then bound to
 * indexes against the first batch (zm.columns, zm.label), and every batch
 * is matched row by row into a hit matrix.  k-means clusters are fitted on
 * a bounded sample of rows (k-means++ seeding, Lloyd iterations with the
 * distance products through zm_gemm) and rows are assigned to the nearest
 * centroid, so memory does not grow with the number of rows.
 */
#ifndef ZM_SLICE_H
#define ZM_SLICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "random.h"

struct zm_doc;
struct zm_node;

enum zm_slice_kind {
	ZM_SLICE_DEFAULT,     /* default: true -- every row (no criterion) */
	ZM_SLICE_COLUMN,      /* column: C, equals: v | in: [v...] */
	ZM_SLICE_FEATURE,     /* feature: F, min/max: one feature in [min, max) */
	ZM_SLICE_STAT,        /* stat: mean|std|min|max|l2, min/max */
	ZM_SLICE_LABEL,       /* label: [ids or class names] */
	ZM_SLICE_HASH,        /* hash: fraction, seed */
	ZM_SLICE_CLUSTER      /* cluster: i (with a clusters: section) */
};

enum zm_slice_stat {
	ZM_STAT_MEAN, ZM_STAT_STD, ZM_STAT_MIN, ZM_STAT_MAX, ZM_STAT_L2
};

struct zm_slice_rule {
	char *name;               /* owned */
	enum zm_slice_kind kind;
	int line, col;            /* of the rule, for messages */
	/* column and feature: by name (owned, NULL when by index) or index;
	 * bound by zm_slice_rules_bind.  A column that names the label column
	 * (zm.label) matches the label instead of a feature. */
	char *column;
	int64_t index;
	bool on_label;            /* bound: the column is the label */
	bool on_strings;          /* bound: a string column (dataset.h) */
	/* string columns, per batch (zm_slice_rules_use_batch): the rows'
	 * indexes into the batch's levels, borrowed from the batch, and
	 * which levels are among the rule's values */
	const int64_t *codes;
	uint8_t *level_hit;       /* owned [n_levels] */
	size_t n_levels;
	/* column values: numbers, or strings (class names of the label) */
	double *values;           /* owned [n_values] */
	char **strings;           /* owned [n_values], NULL entries for numbers */
	size_t n_values;
	/* feature / stat range [lo, hi) */
	enum zm_slice_stat stat;
	double lo, hi;
	/* labels: ids (after binding class names) */
	int64_t *labels;          /* owned [n_labels] */
	size_t n_labels;
	/* hash */
	double fraction;
	uint64_t seed;
	/* cluster */
	size_t cluster;
};

struct zm_slice_rules {
	bool overlapping;              /* mode: overlapping (else partition) */
	struct zm_slice_rule *rules;   /* owned, in file order */
	size_t n_rules;
	bool has_default;
	/* clusters: k > 0 when the rules use k-means */
	size_t k;
	uint64_t k_seed;
	size_t k_iterations;
	size_t k_sample;               /* rows kept for fitting (reservoir) */
};

void zm_slice_rules_init(struct zm_slice_rules *r);
void zm_slice_rules_release(struct zm_slice_rules *r);

/*
 * Parses a rules tree (see zoomerge-slices(5)) into r (released first).
 * Errors are ZM_ERR_CONFIG with "SOURCE:LINE:COL: ...": unknown keys,
 * missing or duplicate names, names unusable as file names, a rule with
 * no or two criteria, empty ranges, a hash fraction outside (0, 1], a
 * cluster index >= k, and, in partition mode without a default slice,
 * two ranges over the same feature or statistic that overlap.
 */
enum zm_status zm_slice_rules_parse(const struct zm_node *root,
                                    struct zm_slice_rules *r,
                                    struct zm_error *err);
/* Parses YAML bytes (source names them in messages); as above. */
enum zm_status zm_slice_rules_parse_text(const char *bytes, size_t len,
                                         const char *source,
                                         struct zm_slice_rules *r,
                                         struct zm_error *err);
/* Loads a rules file ("-": stdin); as above plus I/O errors. */
enum zm_status zm_slice_rules_load(const char *path, struct zm_slice_rules *r,
                                   struct zm_error *err);

/*
 * Resolves column, feature and label names against a data document's
 * metadata (zm.columns: JSON list of feature names; zm.label and
 * zm.classes; string columns and their zm.levels) for d features.  A
 * missing column, class or string value, a number for a string column, a
 * string for a numeric one, an index >= d, or a label rule on data
 * without labels is ZM_ERR_CONFIG naming the rule's line and column
 * (source names the rules file).
 */
enum zm_status zm_slice_rules_bind(struct zm_slice_rules *r,
                                   const struct zm_doc *doc, size_t d,
                                   const char *source, struct zm_error *err);

/*
 * Before zm_slice_match on a batch doc of n rows: points the rules on
 * string columns at the batch's values and levels (which may differ from
 * batch to batch in a joined stream).  The batch must outlive the match.
 * Errors: ZM_ERR_DATA when the batch lacks a bound string column or its
 * layout is wrong (where names the batch); ZM_ERR_NOMEM.
 */
enum zm_status zm_slice_rules_use_batch(struct zm_slice_rules *r,
                                        const struct zm_doc *doc, size_t n,
                                        const char *where,
                                        struct zm_error *err);


/*
 * Matches n rows: x row-major F32 [n, d] features (scaled), y class ids
 * or NULL, ids the row ids, cluster the nearest centroid of each row or
 * NULL (required when k > 0), string columns as zm_slice_rules_use_batch
 * left them.  hits[i * n_rules + j] is set to 1 when row
 * i belongs to rule j: in partition mode only the first matching rule
 * (the default slice, wherever it stands, only when nothing else
 * matched); in overlapping mode every matching rule, the default slice
 * only when nothing else matched.  Pure function.
 */
void zm_slice_match(const struct zm_slice_rules *r, const float *x,
                    const int64_t *y, const int64_t *ids,
                    const int32_t *cluster, size_t n, size_t d,
                    uint8_t *hits);

/* The row statistic of one row of d values (computed in double). */
double zm_slice_row_stat(enum zm_slice_stat stat, const float *row, size_t d);

/* Whether a row id falls in a hash split of fraction with seed: the top
 * 53 bits of splitmix64(seed ^ id-mixed) as a uniform number < fraction. */
bool zm_slice_hash_in(uint64_t id, double fraction, uint64_t seed);

/* ---- k-means ---- */

/*
 * Fits k centroids (row-major F32 [k, d], caller-allocated) to the n rows
 * of x: k-means++ seeding from rng seed, then up to iterations Lloyd steps
 * (stopping early when no row changes cluster).  An empty cluster is
 * re-seeded with the row farthest from its centroid.  Fails with
 * ZM_ERR_DATA when n < k, ZM_ERR_NOMEM when scratch cannot be allocated.
 */
enum zm_status zm_kmeans_fit(const float *x, size_t n, size_t d, size_t k,
                             uint64_t seed, size_t iterations,
                             float *centroids, struct zm_error *err);

/*
 * Nearest centroid of each of the n rows of x into out[n] (ties: the lower
 * index), with squared distances through zm_gemm in blocks so scratch is
 * bounded.  Fails only with ZM_ERR_NOMEM.
 */
enum zm_status zm_kmeans_assign(const float *x, size_t n, size_t d,
                                const float *centroids, size_t k,
                                int32_t *out, struct zm_error *err);

/*
 * A reservoir sample (Vitter's algorithm R) of at most cap rows of width
 * d: every row offered so far is kept with equal probability.
 */
struct zm_reservoir {
	float *rows;       /* owned [cap, d] */
	size_t cap, d, n;  /* n: rows held (<= cap) */
	uint64_t seen;
	struct zm_rng rng;
};
enum zm_status zm_reservoir_init(struct zm_reservoir *s, size_t cap, size_t d,
                                 uint64_t seed, struct zm_error *err);
void zm_reservoir_add(struct zm_reservoir *s, const float *x, size_t n);
void zm_reservoir_release(struct zm_reservoir *s);

#endif
