/*
 * Assignments (assign(1), zoomerge-assignment(5)): for every slice, the
 * models that train on it with their weights, and the similarity of the
 * slice to every model that was compared, plus the metric and the
 * parameters that turned similarities into weights.  assign writes it;
 * train-step and predict read it through this module.
 */
#ifndef ZM_ASSIGNMENT_H
#define ZM_ASSIGNMENT_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"
#include "json.h"
#include "similarity.h"

/* Weights of a slice must sum to 1 within this tolerance. */
#define ZM_ASSIGNMENT_SUM_TOL 1e-6

struct zm_assignment_weight {
	char *model;      /* owned */
	double weight;    /* finite, >= 0 */
};

struct zm_assignment_score {
	char *model;      /* owned */
	double value;     /* finite similarity */
};

struct zm_assignment_slice {
	char *slice;                         /* owned name */
	char *file;                          /* owned path, NULL when absent */
	struct zm_assignment_weight *models; /* owned [n_models] */
	size_t n_models;
	struct zm_assignment_score *similarity;  /* owned [n_similarity] */
	size_t n_similarity;
	bool new_model;    /* no model was similar enough (see assign(1)) */
};

struct zm_assignment {
	enum zm_metric metric;
	double temperature;          /* > 0 */
	size_t top_k;                /* 0: all */
	double min_weight;           /* >= 0 */
	bool has_threshold;
	double new_model_threshold;  /* valid when has_threshold */
	struct zm_assignment_slice *slices;  /* owned [n_slices] */
	size_t n_slices;
};

/* An empty assignment (cosine, temperature 1) that owns nothing. */
void zm_assignment_init(struct zm_assignment *a);
/* Frees everything a owns and re-initialises it. */
void zm_assignment_release(struct zm_assignment *a);

/*
 * Appends a slice called name (copied) with file (copied; may be NULL)
 * and returns it in *out (valid until the next append).  Its models and
 * similarity are added with the two functions below.
 */
enum zm_status zm_assignment_add_slice(struct zm_assignment *a,
                                       const char *name, const char *file,
                                       struct zm_assignment_slice **out,
                                       struct zm_error *err);
enum zm_status zm_assignment_add_model(struct zm_assignment_slice *s,
                                       const char *model, double weight,
                                       struct zm_error *err);
enum zm_status zm_assignment_add_score(struct zm_assignment_slice *s,
                                       const char *model, double value,
                                       struct zm_error *err);

/* The slice called name, or NULL. */
const struct zm_assignment_slice *
zm_assignment_find(const struct zm_assignment *a, const char *name);

/*
 * Checks the invariants: a known metric, a positive finite temperature,
 * unique slice names, per slice unique model names, weights finite and
 * >= 0 summing to 1 within ZM_ASSIGNMENT_SUM_TOL (a slice may have no
 * models only when new_model is set), finite similarities.  Errors are
 * ZM_ERR_DATA naming the slice and model.
 */
enum zm_status zm_assignment_validate(const struct zm_assignment *a,
                                      struct zm_error *err);

/*
 * Parses YAML bytes into a (released first; on failure a is empty).
 * source names the input in messages.  Errors are ZM_ERR_CONFIG with
 * "SOURCE:LINE:COL: ..." for syntax, unknown keys, wrong types, unknown
 * metrics, and every invariant of zm_assignment_validate.
 */
enum zm_status zm_assignment_parse(const char *bytes, size_t len,
                                   const char *source,
                                   struct zm_assignment *a,
                                   struct zm_error *err);
/* Reads path ("-": stdin) and parses it; plus ZM_ERR_IO/NOTFOUND. */
enum zm_status zm_assignment_load(const char *path, struct zm_assignment *a,
                                  struct zm_error *err);

/* Appends a as YAML (the zoomerge-assignment(5) format, numbers with
 * round-trip precision) to b; check b->failed afterwards. */
void zm_assignment_to_yaml(const struct zm_assignment *a, struct zm_buf *b);

/* Validates a and writes it atomically to path ("-": stdout). */
enum zm_status zm_assignment_save(const struct zm_assignment *a,
                                  const char *path, struct zm_error *err);

#endif
