/*
 * The data schema a model carries and data streams carry: the names of
 * the classes in id order and the names of the feature columns, so that
 * labels and columns are matched by name, never by position.
 *
 * A data document names its classes in zm.classes (a CSV with string
 * labels); without it its I64 labels are their own names ("0", "1", ...:
 * IDX imports and CSV files with integer labels).  Its columns are named
 * by zm.columns.  A model names its classes in zm.classes and its
 * features in zm.features, taken from the data it was first trained on;
 * a model without them (created from an architecture and not yet
 * trained, or written before zoomerge kept them) has an unknown schema
 * and is matched by position.
 *
 * A model also has a role (zm.role): an expert (the default) predicts the
 * data's classes; a router's classes are slice names (what it learned
 * from slice --membership); a base is a starting point that is neither.
 */
#ifndef ZM_SCHEMA_H
#define ZM_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "metakeys.h"   /* ZM_META_CLASSES, _FEATURES, _COLUMNS, _LABEL, _ROLE */
#include "stream.h"

/* The zoo.yaml tag that mirrors a model's role, so the index shows it. */
#define ZM_ROLE_TAG "role"
/* The zm.label of slice --membership data: its classes are slices. */
#define ZM_MEMBERSHIP_LABEL "slice"
/* Labels above this are refused before a map is built for them. */
#define ZM_SCHEMA_MAX_CLASSES 65536

enum zm_role {
	ZM_ROLE_EXPERT,
	ZM_ROLE_ROUTER,
	ZM_ROLE_BASE
};

/* "expert", "router", "base". */
const char *zm_role_name(enum zm_role r);
/* Parses those names; false when unknown. */
bool zm_role_parse(const char *s, enum zm_role *out);
/* The role in a model document's metadata (expert when absent); false
 * when the value is not a role. */
bool zm_role_of_doc(const struct zm_doc *doc, enum zm_role *out);

/* A list of names; known is false when the source names nothing. */
struct zm_names {
	char **v;                   /* owned, n strings */
	size_t n;
	bool known;
};

void zm_names_init(struct zm_names *s);
void zm_names_release(struct zm_names *s);
/* Replaces dst with a copy of src. */
enum zm_status zm_names_copy(struct zm_names *dst, const struct zm_names *src,
                             struct zm_error *err);
/* Appends a copy of name (making s known). */
enum zm_status zm_names_add(struct zm_names *s, const char *name,
                            struct zm_error *err);
/* Index of name in s, or -1. */
ptrdiff_t zm_names_find(const struct zm_names *s, const char *name);
/* True when both are known with the same names in the same order. */
bool zm_names_equal(const struct zm_names *a, const struct zm_names *b);
/* Appends "a, b, c" (at most max names, then ", ...") to buf of size. */
void zm_names_list(const struct zm_names *s, size_t max, char *buf,
                   size_t size);

/*
 * Reads the JSON list of metadata key from doc into s (released first):
 * absent leaves s unknown; a value that is not a list of strings, or has
 * a name twice, is ZM_ERR_DATA naming where and the key.
 */
enum zm_status zm_names_from_meta(struct zm_names *s, const struct zm_doc *doc,
                                  const char *key, const char *where,
                                  struct zm_error *err);
/* Sets key in doc's metadata to s as a JSON list (removes nothing when
 * s is unknown). */
enum zm_status zm_names_to_meta(const struct zm_names *s, struct zm_doc *doc,
                                const char *key, struct zm_error *err);

struct zm_arch;
struct zm_layer_spec;

/* What a model or a data stream says about its data. */
struct zm_schema {
	struct zm_names classes;    /* by class id */
	struct zm_names features;   /* by input column */
	/* Borrowed, or NULL: the model's arch, when it has one_hot layers
	 * whose units zm_schema_conform_doc makes from the data's string
	 * columns (set by the caller: a model document's metadata does not
	 * carry the arch apart from zm.arch). */
	const struct zm_arch *arch;
};

void zm_schema_init(struct zm_schema *s);
void zm_schema_release(struct zm_schema *s);
enum zm_status zm_schema_copy(struct zm_schema *dst,
                              const struct zm_schema *src,
                              struct zm_error *err);
/* A model document's schema (zm.classes, zm.features); where names it. */
enum zm_status zm_schema_of_model_doc(struct zm_schema *s,
                                      const struct zm_doc *doc,
                                      const char *where,
                                      struct zm_error *err);
/* A data document's schema (zm.classes, zm.columns). */
enum zm_status zm_schema_of_data_doc(struct zm_schema *s,
                                     const struct zm_doc *doc,
                                     const char *where,
                                     struct zm_error *err);
/* Writes a model's schema into doc's metadata (the known parts). */
enum zm_status zm_schema_to_model_doc(const struct zm_schema *s,
                                      struct zm_doc *doc,
                                      struct zm_error *err);

/*
 * The class map from data labels to a target's class ids: map[i] is the
 * target id of data label i for i < n (the number of data classes, or
 * max_label + 1 when the data's labels are their own names), -1 when
 * the target does not know it.  data names the data's classes (unknown:
 * labels are their names).  target unknown: the identity (position).
 * With extend, names the target lacks are appended to it instead.
 * *map is new (free()); errors: ZM_ERR_DATA for max_label over
 * ZM_SCHEMA_MAX_CLASSES or a label beyond the data's names, ZM_ERR_NOMEM.
 */
enum zm_status zm_schema_class_map(const struct zm_names *data,
                                   struct zm_names *target, int64_t max_label,
                                   bool extend, int64_t **map, size_t *n,
                                   const char *where, struct zm_error *err);

/*
 * Maps labels y[0..count) in place through a class map of n entries.  A
 * label outside the map or mapped to -1 is ZM_ERR_DATA: "WHERE: label
 * 'NAME' is not a class of WHAT (classes: ...)", NAME from data (or the
 * number), the classes from target.  Negative labels are left to the
 * caller's checks.
 */
enum zm_status zm_schema_map_labels(int64_t *y, size_t count,
                                    const int64_t *map, size_t n,
                                    const struct zm_names *data,
                                    const struct zm_names *target,
                                    const char *where, const char *what,
                                    struct zm_error *err);

/*
 * The column map from data columns to target features: perm[j] is the
 * data column of target feature j (j < target->n).  Only when both are
 * known; a feature the data lacks is ZM_ERR_DATA naming it ("WHERE: no
 * column 'NAME' (WHAT was trained on ...)").  *extra counts data columns
 * the target does not use, *first_extra names the first (borrowed from
 * data) or is NULL.  *identity is true when perm is 0..n-1 over the same
 * number of columns (nothing to do).  *perm is new (free()).
 */
enum zm_status zm_schema_feature_map(const struct zm_names *data,
                                     const struct zm_names *target,
                                     size_t **perm, bool *identity,
                                     size_t *extra, const char **first_extra,
                                     const char *where, const char *what,
                                     struct zm_error *err);

/*
 * Gives a model document (model, its metadata changed in place) the
 * classes, features and role of a document derived from it (an update)
 * where the model names none; where both name them and they differ,
 * ZM_ERR_DATA naming where (the derived one was trained on other data).
 */
enum zm_status zm_schema_adopt(struct zm_doc *model, const struct zm_doc *from,
                               const char *where, struct zm_error *err);

/*
 * one_hot units (layer.h) have the feature names "COLUMN=LEVEL" in the
 * layer's level order; zm_onehot_unit_name writes one into buf of size
 * (truncated names are refused by the caller's lookups failing).
 */
void zm_onehot_unit_name(const char *column, const char *level, char *buf,
                         size_t size);

/*
 * The units of one_hot layer s for n rows whose values are codes[r] into
 * levels[0..n_levels) (a data document's zm.levels.COLUMN): out[r * ld +
 * k] is 1 where the row's level is s->levels[k] by name, else 0.  A row
 * whose level s does not know is ZM_ERR_DATA: "WHERE: row R, column 'C':
 * level 'L' is not one of the model's levels (a, b, c)", R being ids[r]
 * (the data's row id) or, without ids, r.  Codes must be in range
 * (zm_data_columns checks them).
 */
enum zm_status zm_onehot_fill(const struct zm_layer_spec *s,
                              char *const *levels, size_t n_levels,
                              const int64_t *codes, size_t n,
                              const int64_t *ids, float *out, size_t ld,
                              const char *where, struct zm_error *err);

/* What zm_schema_conform_doc did that a program may want to say. */
struct zm_schema_note {
	size_t extra_columns;       /* data columns the target ignores */
	char first_extra[128];      /* the first of them */
	bool reordered;             /* columns were reordered */
	bool by_position;           /* labels or columns matched by position
	                               because the target's names are unknown */
};

/*
 * Brings data document doc (zm_data_check'ed, n rows) to target's schema:
 * I64 labels y are mapped to the target's class ids by name, and when
 * both name their columns x becomes [n, target features] in the target's
 * order (U8 stays U8).  Metadata zm.classes and zm.columns then describe
 * the new layout.  With extend, an unknown target adopts the document's
 * names and unknown labels are appended to its classes (a training set
 * built from several documents); otherwise unknown labels are errors as
 * in zm_schema_map_labels.  what names the target in messages.
 * When target->arch has one_hot layers, their units are first appended
 * to x (as F32) from the document's string columns, named as
 * zm_onehot_unit_name says, so that they are matched by name like the
 * other columns; a missing string column or a level the layer does not
 * know is ZM_ERR_DATA naming it.
 */
enum zm_status zm_schema_conform_doc(struct zm_schema *target, bool extend,
                                     struct zm_doc *doc, size_t n,
                                     const char *where, const char *what,
                                     struct zm_schema_note *note,
                                     struct zm_error *err);

#endif
