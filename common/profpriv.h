/*
 * Shared between the parts of the profiles (profile.c: statistics in
 * memory and their mixture components; profdoc.c: the profile.* tensors
 * of a document); not for callers outside the library.
 */
#ifndef ZM_PROFPRIV_H
#define ZM_PROFPRIV_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

struct zm_profile;
struct zm_profile_entry;
struct zm_scatter;

/* Makes e an empty entry of width dim with a copy of name. */
enum zm_status zm_prof_entry_alloc(struct zm_profile_entry *e,
                                   const char *name, size_t dim,
                                   struct zm_error *err);
/* Frees e's name and moments and zeroes it. */
void zm_prof_entry_release(struct zm_profile_entry *e);
/* Grows the entries array to hold at least want entries. */
enum zm_status zm_prof_reserve_entries(struct zm_profile *p, size_t want,
                                       struct zm_error *err);
/* Grows the histogram to n classes, zero-filling the new ones. */
enum zm_status zm_prof_grow_labels(struct zm_profile *p, size_t n,
                                   struct zm_error *err);
/* Whether p's scatter describes the same rows as its input entry (an
 * empty scatter does for a profile without input rows). */
bool zm_prof_scatter_valid(const struct zm_profile *p);

/* Releases the n scatters of c and frees c (NULL is fine). */
void zm_prof_comps_free(struct zm_scatter *c, size_t n);
/* Drops p's components and centres. */
void zm_prof_comps_release(struct zm_profile *p);
/* A deep copy of p's valid components into *out [*n], reduced to what
 * is written; *n < 2: none (*out NULL). */
enum zm_status zm_prof_comps_settled(const struct zm_profile *p,
                                     struct zm_scatter **out, size_t *n,
                                     struct zm_error *err);

#endif
