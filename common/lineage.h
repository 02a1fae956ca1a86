/*
 * Lineage: whether two models' hidden units correspond, so that merging
 * them layer by layer (averaging parameters or hidden activations) means
 * something.  Units correspond when the models share an initialisation
 * (fine-tuned from one base, or trained from one seeded start); for
 * models initialised apart, unit 17 of one layer has nothing to do with
 * unit 17 of the other.
 *
 * Two sources of evidence:
 *
 * Origin.  A zoo model records in its metadata where its weights come
 * from, zm.origin = "init:" followed by 16 hex digits, the digest
 * (zm_lineage_digest_model) of the weights it was created with; every
 * version, copy (assign --create) and merge of it keeps that origin.  A
 * model whose origin is not recorded (imported, or written before origins
 * existed) has unknown lineage.
 *
 * Alignment.  Needs no records: for each layer with parameters, the mean
 * over its output units u of the Pearson correlation between unit u's
 * weight row in one model and unit u's weight row in the other (dense
 * [out, in]: row u; conv2d [out_c, in_c, kh, kw]: filter u).  Models
 * fine-tuned from one start keep correlations near 1; independently
 * initialised models, or a model whose hidden units were permuted, score
 * near 0 (independent rows of n entries: about +-1/sqrt(n)).  The models
 * are aligned when every hidden layer (each layer with parameters but the
 * last, whose output units are the model's outputs and correspond by
 * meaning) scores at least ZM_LINEAGE_THRESHOLD.  A row with no variance
 * correlates 1 with an equal row and 0 with any other.
 *
 * Verdict of zm_lineage_related: when both origins are known they decide
 * (equal: related, different: unrelated), unless one of the models was
 * realigned (its ZM_ALIGN_KEY is set, align.h); otherwise alignment
 * decides; unknown only when neither can (architectures that differ in a
 * shape).  Units are never realigned here: a permuted model stays
 * unrelated until zm_align_model realigns it.
 */
#ifndef ZM_LINEAGE_H
#define ZM_LINEAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "model.h"
#include "stream.h"

/* Hidden layers scoring below this are not aligned. */
#define ZM_LINEAGE_THRESHOLD 0.5

/* The metadata key of a model's origin. */
#define ZM_LINEAGE_ORIGIN_KEY "zm.origin"

/* Room for an origin or a digest as text, NUL included. */
#define ZM_LINEAGE_ID_MAX 32

enum zm_lineage_verdict {
	ZM_LINEAGE_UNKNOWN,
	ZM_LINEAGE_RELATED,
	ZM_LINEAGE_UNRELATED
};

enum zm_lineage_basis {
	ZM_LINEAGE_BY_NOTHING,       /* verdict unknown */
	ZM_LINEAGE_BY_ORIGIN,        /* both origins recorded */
	ZM_LINEAGE_BY_ALIGNMENT      /* at least one origin unknown */
};

struct zm_lineage_info {
	enum zm_lineage_verdict verdict;
	enum zm_lineage_basis basis;
	bool has_alignment;          /* false when the shapes differ */
	size_t n_layers;             /* the architecture's layer count */
	/* Per layer: the alignment score; NaN for layers without
	 * parameters. */
	double score[ZM_ARCH_MAX_LAYERS];
	/* The lowest score over the hidden layers, and its layer; 1 and
	 * SIZE_MAX when the model has no hidden layer with parameters. */
	double alignment;
	size_t worst_layer;
};

/* "related", "unrelated", "unknown" / "origin", "alignment", "nothing". */
const char *zm_lineage_verdict_name(enum zm_lineage_verdict v);
const char *zm_lineage_basis_name(enum zm_lineage_basis b);

/*
 * A 64-bit FNV-1a digest of a document's tensors (names, dtypes, shapes
 * and data bytes, in document order; metadata is left out, so it names
 * the numbers, not their labels), written as 16 lower-case hex digits
 * into out (at least ZM_LINEAGE_ID_MAX bytes).  It identifies, it does
 * not protect: not a cryptographic hash.
 */
void zm_lineage_digest_doc(const struct zm_doc *doc, char *out);
/* As zm_lineage_digest_doc over the model's parameter tensors only, in
 * layer order. */
void zm_lineage_digest_model(const struct zm_model *m, char *out);

/* The metadata key of the zoo model an imported file was declared
 * fine-tuned from ("NAME@vN"; zoo-add --base). */
#define ZM_LINEAGE_BASE_KEY "zm.base"

/* The model's recorded origin, or NULL when unknown. */
const char *zm_lineage_origin(const struct zm_model *m);
/* Records origin (NULL: removes it and zm.base, the lineage becomes
 * unknown). */
enum zm_status zm_lineage_set_origin(struct zm_model *m, const char *origin,
                                     struct zm_error *err);
/* Records "init:DIGEST" of the model's current weights as its origin:
 * for a model just created. */
enum zm_status zm_lineage_set_initial(struct zm_model *m,
                                      struct zm_error *err);

/*
 * Pearson correlation of a and b (n values each), as defined above for a
 * row without variance.  Exposed for tests.
 */
double zm_lineage_correlation(const float *a, const float *b, size_t n);

/* Alignment score of one layer of two models (the same spec shapes):
 * the mean over output units of the correlation of their weight rows;
 * NaN for a layer without parameters. */
double zm_lineage_layer_alignment(const struct zm_layer *a,
                                  const struct zm_layer *b);

/*
 * Compares a and b as described above and fills *info (no allocation;
 * info needs no release).  Architectures with other shapes give verdict
 * unknown unless both origins are known.  Returns ZM_OK; err is kept for
 * future checks that can fail.
 */
enum zm_status zm_lineage_related(const struct zm_model *a,
                                  const struct zm_model *b,
                                  struct zm_lineage_info *info,
                                  struct zm_error *err);

/*
 * Whether every two of models[0..n) are related (true for n < 2): for a
 * predictor deciding between merging layers and combining outputs.  When
 * not, *a < *b index the first pair (in order 01, 02, ..., 12, ...) that
 * is not, and *info describes it (a, b and info may be NULL).
 */
enum zm_status zm_lineage_all_related(const struct zm_model *const *models,
                                      size_t n, bool *all, size_t *a,
                                      size_t *b, struct zm_lineage_info *info,
                                      struct zm_error *err);

/*
 * ZM_OK when a and b are related, or their parameter shapes differ (a
 * merge refuses them anyway, with a message naming the tensor);
 * otherwise ZM_ERR_USAGE with a message
 * naming the pair (label_a, label_b), the evidence ("origins init:... and
 * init:..." or "alignment 0.03 < 0.5 at layer 'fc1'") and the way out
 * (what, e.g. "--allow-unrelated").  For programs that refuse to merge the
 * layers of unrelated models.
 */
enum zm_status zm_lineage_require_related(const struct zm_model *a,
                                          const char *label_a,
                                          const struct zm_model *b,
                                          const char *label_b,
                                          const char *way_out,
                                          struct zm_error *err);

/*
 * For a merge of the model files paths[0..n) (labels name them in
 * messages): loads them one after another, two in memory at a time, and
 * compares each with the first.  With refuse, a model unrelated to the
 * first is the error of zm_lineage_require_related.  origin (at least
 * ZM_LINEAGE_ID_MAX + 8 bytes) receives the origin all n share, or ""
 * when they do not all share one known origin.  Errors of zm_model_load.
 */
enum zm_status zm_lineage_check_files(const char *const *paths,
                                      const char *const *labels, size_t n,
                                      bool refuse, const char *way_out,
                                      char *origin, struct zm_error *err);

/* Appends one line describing info ("related by origin; alignment per
 * layer: fc1 0.98, out 0.95") to b, layer names from arch. */
void zm_lineage_describe(const struct zm_lineage_info *info,
                         const struct zm_arch *arch, struct zm_buf *b);

#endif
