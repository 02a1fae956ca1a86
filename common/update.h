/*
 * Update documents (zoomerge(5)): a model's parameter delta against the
 * version it was trained from, the profile of the data it was trained on,
 * and zm.kind update, zm.name, zm.parent, zm.samples, zm.weight and
 * zm.slice.  train-step writes them; merge --apply and granctl read them.
 */
#ifndef ZM_UPDATE_H
#define ZM_UPDATE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct zm_doc;
struct zm_model;
struct zm_profile;

/* What an update says besides its delta; everything borrowed. */
struct zm_update_info {
	const char *name;                /* the model in the zoo */
	const char *slice;               /* NULL: none */
	int64_t parent;                  /* the version trained from */
	size_t samples;                  /* rows trained on */
	float weight;                    /* the assignment's weight */
	const struct zm_profile *profile;  /* of the data trained on */
};

/* Appends to doc (the caller's, usually empty) the update of trained over
 * base (same architecture): trained minus base parameters, u's profile
 * instead of the model's, and u's metadata. */
enum zm_status zm_update_to_doc(const struct zm_model *trained,
                                const struct zm_model *base,
                                const struct zm_update_info *u,
                                struct zm_doc *doc, struct zm_error *err);

/*
 * Reads every document of the streams paths[0..n) ("-": stdin), in order,
 * into *docs (new array of *n_docs documents, each to be released with
 * zm_doc_release, the array freed); errors name the stream.  Used for
 * update streams, which merge --apply takes as a whole.
 */
enum zm_status zm_update_read_all(const char *const *paths, size_t n,
                                  struct zm_doc **docs, size_t *n_docs,
                                  struct zm_error *err);

#endif
