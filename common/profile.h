/*
 * Profiles: statistics of the data a model or a slice has seen (DESIGN.md
 * sections 2 and 5).  A profile holds named entries, each the per-feature
 * mean and variance of some input: "input" for the model's input features,
 * and one entry per layer for the input that layer sees (so "fc2" holds
 * the statistics of fc1's output).  It also holds a class histogram.
 *
 * Means and sums of squared deviations (M2) are accumulated in double with
 * the parallel update of Chan, Golub and LeVeque: every batch gets its own
 * two-pass mean and M2, which are then combined with the running values.
 * This stays accurate on data with a large offset (mean 1e4, variance 1e-2),
 * where the textbook E[x^2] - E[x]^2 loses every significant digit.
 *
 * In a document (a model file or a slice file) a profile is stored as
 *   profile.count        F64 [1]  rows seen; F64 holds counts exactly up to
 *                                 2^53 and reads back in PyTorch as a float
 *   profile.labels       I64 [C]  class histogram (absent when empty)
 *   profile.NAME.mean    F32 [d]  per entry NAME ("input", a layer name)
 *   profile.NAME.var     F32 [d]  population variance M2 / count
 *   profile.NAME.count   F64 [1]  only when NAME saw a different number of
 *                                 rows than profile.count
 * The variance, not M2, is stored so that the file is directly useful;
 * the reader rebuilds M2 = var * count.
 *
 * The input entry also keeps its full scatter (density.h) when it has at
 * most ZM_SCATTER_MAX_DIM features, and a document then stores the PPCA
 * fitted from it (predict's routing density):
 *   profile.input.pc     F32 [q, d]  orthonormal principal directions
 *   profile.input.pcvar  F32 [q]     the variance along each, decreasing
 *   profile.input.resvar F64 [1]     the residual variance per feature
 * The reader rebuilds the scatter from them (exact for the fitted model),
 * so merging profiles refits the PPCA.  A profile without them (older
 * files, wider inputs) routes by a diagonal Gaussian of mean and var.
 *
 * The data a model was trained on is usually several clusters (a
 * specialist's classes, a source's modes), which one Gaussian blurs into
 * one ellipsoid.  So the input rows are also split into components
 * (zm_profile_cluster: k-means on the rows, before they are added), each
 * with its own scatter, and a document then also stores a PPCA of each
 * component I = 0, 1, ... (at most ZM_DENSITY_MAX_COMPONENTS, each of at
 * least 2 ZM_DENSITY_COMPONENT_RANK + 1 rows: smaller ones are merged
 * into others first):
 *   profile.input.cI.center F32 [d]     the component's mean
 *   profile.input.cI.pc     F32 [q, d]  as profile.input.pc
 *   profile.input.cI.pcvar  F32 [q]
 *   profile.input.cI.resvar F64 [1]
 *   profile.input.cI.rows   F64 [1]     its rows (they add up to the
 *                                       input's count)
 * The routing density is then the mixture sum_I (rows_I / count) p_I(x).
 * Merging two profiles with components unites them (exact: a mixture of
 * the two mixtures), merging the two smallest while more than
 * ZM_DENSITY_MAX_COMPONENTS are left; rows added without centres (after
 * reading a profile) drop them.  Older readers ignore these tensors.
 */
#ifndef ZM_PROFILE_H
#define ZM_PROFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "density.h"
#include "error.h"

struct zm_doc;

/* The name of the entry for a model's input features. */
#define ZM_PROFILE_INPUT "input"

/* Largest class id + 1 a histogram may hold; larger ids are bad data,
 * not a reason to allocate gigabytes. */
#define ZM_PROFILE_MAX_CLASSES ((size_t)1 << 24)

struct zm_profile_entry {
	char *name;        /* owned: "input" or a layer name */
	size_t dim;        /* number of features, > 0 */
	double count;      /* rows added to this entry */
	/* mean, m2 and scratch share one allocation, owned through mean. */
	double *mean;      /* [dim] */
	double *m2;        /* [dim]: sum of squared deviations from mean */
	double *scratch;   /* [2*dim]: per-batch work space */
};

struct zm_profile {
	struct zm_profile_entry *entries;  /* owned array, in insertion order */
	size_t n_entries;
	int64_t *labels;                   /* owned [n_classes] histogram */
	size_t n_classes;
	/* The scatter of the input entry; valid only while its count equals
	 * that entry's (rows added to the entry without it, as after reading
	 * a profile stored without a PPCA, make it stale: it is dropped). */
	struct zm_scatter scatter;
	/* Components of the input (see above): their scatters, valid only
	 * while their counts add up to the valid scatter's, and the centres
	 * rows are assigned to (NULL after reading: adding rows then drops
	 * the components). */
	size_t n_comp;
	struct zm_scatter *comp;           /* owned [n_comp] */
	float *centres;                    /* owned [n_comp, d] or NULL */
};

/* Widest input that is split into components (n_comp d x d doubles). */
#define ZM_PROFILE_COMPONENT_MAX_DIM 1024

/* Sets p to an empty profile that owns nothing. */
void zm_profile_init(struct zm_profile *p);
/* Frees everything p owns and re-initialises it. */
void zm_profile_release(struct zm_profile *p);

/* The entry called name, or NULL. */
struct zm_profile_entry *zm_profile_find(const struct zm_profile *p,
                                         const char *name);

/*
 * The number of rows the profile describes: the count of the "input" entry
 * when there is one, else the largest entry count, else the total of the
 * label histogram.
 */
double zm_profile_count(const struct zm_profile *p);

/*
 * Adds n rows of x (row-major F32 [n, d]) to the entry called name,
 * creating it (with a copied name) when absent.  Fails with ZM_ERR_DATA
 * when the entry exists with another width or when x holds a non-finite
 * value (naming the entry, row and column), with ZM_ERR_NOMEM when the
 * entry cannot be allocated; on failure p is unchanged.  n == 0 is a no-op
 * (it still creates the entry).
 */
enum zm_status zm_profile_add_batch(struct zm_profile *p, const char *name,
                                    const float *x, size_t n, size_t d,
                                    struct zm_error *err);

/*
 * Splits the input of the empty profile p into components: k-means
 * (k-means++ seeding from a fixed seed, then Lloyd's iterations) on the n
 * rows of x (F32 [n, d]: the rows that will be added, or a sample of
 * them) with one cluster per 128 rows, at most ZM_DENSITY_MAX_COMPONENTS.
 * Rows later added to the input entry go to their nearest centre's
 * component.  Nothing happens when that gives fewer than two clusters or
 * d exceeds ZM_PROFILE_COMPONENT_MAX_DIM.  ZM_ERR_USAGE when p already
 * has input rows, ZM_ERR_NOMEM.
 */
enum zm_status zm_profile_cluster(struct zm_profile *p, const float *x,
                                  size_t n, size_t d, struct zm_error *err);

/*
 * Counts n class ids into the histogram, growing it as needed.  A negative
 * id or one of ZM_PROFILE_MAX_CLASSES or more fails with ZM_ERR_DATA and
 * leaves p unchanged.
 */
enum zm_status zm_profile_add_labels(struct zm_profile *p,
                                     const int64_t *labels, size_t n,
                                     struct zm_error *err);

/*
 * Merges src into dst as if dst had also seen src's rows: entries with the
 * same name are combined (Chan et al.), entries only in src are copied,
 * histograms are added.  An entry present in both with different widths
 * fails with ZM_ERR_DATA naming it; on any failure dst is unchanged.
 */
enum zm_status zm_profile_merge(struct zm_profile *dst,
                                const struct zm_profile *src,
                                struct zm_error *err);

/* Makes dst an owning deep copy of src (dst is released first). */
enum zm_status zm_profile_copy(struct zm_profile *dst,
                               const struct zm_profile *src,
                               struct zm_error *err);

/* Population variance M2 / count of feature j (0 when the entry is empty). */
double zm_profile_entry_var(const struct zm_profile_entry *e, size_t j);

/* Writes the entry's mean and population variance into caller-owned
 * arrays of e->dim elements (zeros for an empty entry). */
void zm_profile_entry_moments(const struct zm_profile_entry *e,
                              double *mean, double *var);
/* The same, rounded to F32 (for zm_similarity_rows and the GEMM paths). */
void zm_profile_entry_moments_f32(const struct zm_profile_entry *e,
                                  float *mean, float *var);

/*
 * The routing density of the profile's input: the PPCA of its scatter
 * when that is valid (fitted here, at most ZM_DENSITY_RANK directions),
 * made the mixture of its components' PPCAs when it has components,
 * else the diagonal Gaussian of the input entry.  ZM_ERR_NOTFOUND when
 * the profile has no input entry with rows.
 */
enum zm_status zm_profile_density(const struct zm_profile *p,
                                  struct zm_density *m,
                                  struct zm_error *err);

/*
 * The same straight from a document, without rebuilding the scatter: the
 * stored PPCA (with its stored components) when there is one, else the
 * diagonal Gaussian.
 * ZM_ERR_NOTFOUND when doc holds no input profile; ZM_ERR_DATA naming
 * the tensor for a malformed one.
 */
enum zm_status zm_profile_density_from_doc(const struct zm_doc *doc,
                                           struct zm_density *m,
                                           struct zm_error *err);

/*
 * Adds p's tensors (see the top of this file) to doc, which may already
 * hold other tensors (a model's parameters).  Fails with ZM_ERR_USAGE when
 * doc already holds one of those names (use zm_profile_replace_in_doc),
 * ZM_ERR_NOMEM on allocation failure; on failure doc is unchanged.
 */
enum zm_status zm_profile_to_doc(const struct zm_profile *p,
                                 struct zm_doc *doc, struct zm_error *err);

/* Removes every tensor of doc whose name begins with "profile."; returns
 * how many were removed. */
size_t zm_profile_remove_from_doc(struct zm_doc *doc);

/*
 * Replaces the profile stored in doc by p (for updating a model's profile
 * in place).  The new tensors are built before the old ones are removed,
 * so an allocation failure there leaves doc unchanged.
 */
enum zm_status zm_profile_replace_in_doc(const struct zm_profile *p,
                                         struct zm_doc *doc,
                                         struct zm_error *err);

/*
 * Reads the profile stored in doc into p (released first; p owns copies).
 * Returns ZM_ERR_NOTFOUND when doc holds no profile.count, and ZM_ERR_DATA
 * naming the tensor when one has the wrong dtype or shape, a mean or
 * variance is not finite, a variance or count is negative, a mean has no
 * variance (or the other way round), or a label count is negative.  Other
 * tensors under "profile." are ignored, leaving room for extensions.
 */
enum zm_status zm_profile_from_doc(struct zm_profile *p,
                                   const struct zm_doc *doc,
                                   struct zm_error *err);

/*
 * zm_profile_from_doc for readers of the moments (weighting): the same
 * checks, but p gets no scatter and no component scatters, which only
 * merging or refitting profiles needs (they are rebuilt from the stored
 * PPCAs: d x d doubles each, 4.7 MiB at 784 features, up to nine per
 * model).
 */
enum zm_status zm_profile_moments_from_doc(struct zm_profile *p,
                                           const struct zm_doc *doc,
                                           struct zm_error *err);

#endif
