/*
 * The assignment decision of assign(1): which models of a zoo train on
 * which slice, and with what weights.  The caller fills the parameters of
 * a struct zm_assignment (metric, temperature, top_k, min_weight,
 * has_threshold, new_model_threshold), loads the models' profiles once,
 * then scores every slice.  Nothing here prints: models and slices left
 * out are flagged in struct zm_assign_model for the caller to word.
 */
#ifndef ZM_ASSIGNER_H
#define ZM_ASSIGNER_H

#include <stdbool.h>
#include <stddef.h>

#include "assignment.h"
#include "error.h"
#include "profile.h"
#include "zoo.h"

/* Why a model takes no part in any slice's scores. */
enum zm_assign_note {
	ZM_ASSIGN_COMPARABLE,      /* it does */
	ZM_ASSIGN_NO_PROFILE,      /* not trained yet */
	ZM_ASSIGN_EMPTY_PROFILE,   /* an input profile of no rows */
	ZM_ASSIGN_NOT_EXPERT       /* a router or a base (zm.role) */
};

/* One model of the zoo; zm_profile_init prof before loading, release it
 * after. */
struct zm_assign_model {
	const char *name;          /* borrowed from the zoo */
	struct zm_profile prof;
	const struct zm_profile_entry *input;   /* NULL: not comparable */
	enum zm_assign_note note;
	bool other_width;          /* left out of the last zm_assign_slice:
	                              its features differ from the slice's */
};

/* Loads the profile of every model of zoo into mp[0..zoo->n_models), in
 * the zoo's order; models without a usable profile, and routers and bases
 * (not experts of any slice), get a note and input NULL.  Errors
 * (unreadable model, corrupt profile, a bad zm.role) name the model. */
enum zm_status zm_assign_load_models(const struct zm_zoo *zoo,
                                    struct zm_assign_model *mp,
                                    struct zm_error *err);

/*
 * Scores the slice profile q against the k models with a->metric and
 * fills s: a similarity per comparable model, then either new_model (no
 * model comparable, or the best below the threshold) or the weights,
 * largest first (equal weights keep the zoo's order).  scores, w and idx
 * are caller scratch of k elements.
 */
enum zm_status zm_assign_slice(const struct zm_assignment *a,
                               struct zm_assign_model *mp, size_t k,
                               const struct zm_profile_entry *q,
                               struct zm_assignment_slice *s,
                               double *scores, double *w,
                               size_t *idx, struct zm_error *err);

/*
 * Adds to zoo (uncommitted) a model named after the slice, cloned from
 * base without its profile and tagged slice=NAME, and gives it the whole
 * weight of s.  ZM_ERR_USAGE when the slice name is not a valid model
 * name or already a model.
 */
enum zm_status zm_assign_create_model(struct zm_zoo *zoo, const char *base,
                                     struct zm_assignment_slice *s,
                                     struct zm_error *err);

/* One assign run: the zoo's models and the scratch of scoring them. */
struct zm_assign_run {
	struct zm_assign_model *mp;  /* owned [k] */
	size_t k;
	double *scores, *w;          /* owned scratch [k] */
	size_t *idx;                 /* owned scratch [k] */
	struct zm_profile sp;        /* the last slice file's profile */
	char *name;                  /* owned: the last slice's name */
	size_t dim;                  /* the last slice's feature count */
};

void zm_assign_run_init(struct zm_assign_run *r);
void zm_assign_run_release(struct zm_assign_run *r);
/* Loads the profiles of the zoo's models (zm_assign_load_models) into
 * r->mp; their notes are set even when an error follows. */
enum zm_status zm_assign_run_load(struct zm_assign_run *r,
                                  const struct zm_zoo *zoo,
                                  struct zm_error *err);
/*
 * Reads the slice file at path (its profile, and its name, else one made
 * from path: zm_slice_profile_read), adds it to a and scores it
 * (zm_assign_slice) into *s, which stays NULL when the slice was not
 * added.  A name already in a is ZM_ERR_USAGE, a slice without rows
 * ZM_ERR_DATA, both naming path.
 */
enum zm_status zm_assign_slice_file(struct zm_assign_run *r,
                                    struct zm_assignment *a, const char *path,
                                    struct zm_assignment_slice **s,
                                    struct zm_error *err);

#endif
