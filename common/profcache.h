/*
 * What the weighters of one run share (weighting.h): each model's parsed
 * profile and the routing densities of a list of models, made once per
 * process instead of once per weighter.  predict --granularity auto holds
 * a weighter per level over the same models; each used to parse every
 * model's profile again (which rebuilds its d x d scatter from the stored
 * PPCA: 80 % of the instructions of a one-batch run with similarity
 * weighting) and to load and compare the densities again.
 *
 * Entries are keyed by the model's address: the models must outlive the
 * cache, and their documents must not change while it holds them.  What
 * the cache hands out is borrowed until zm_profile_cache_release.  Not
 * thread-safe.
 */
#ifndef ZM_PROFCACHE_H
#define ZM_PROFCACHE_H

#include <stdbool.h>
#include <stddef.h>

#include "density.h"
#include "error.h"
#include "model.h"
#include "profile.h"

/* One model's parsed profile. */
struct zm_profile_cache_model {
	const struct zm_model *model;  /* borrowed: the key */
	struct zm_profile profile;     /* owned, without its scatter */
};

/*
 * The routing densities of a list of models (density weighting), as the
 * weighter that made them left them (weighting.c: loaded, compared,
 * their residual variances tied), and its verdict on them.
 */
struct zm_density_set {
	const struct zm_model **models;  /* owned array of borrowed: the key */
	size_t k;
	bool ready;                      /* false: to be made (again) */
	struct zm_density *dens;         /* owned [k] */
	bool separable;                  /* some pair of models differs */
	double sep_kl, sep_need;         /* weighting.h's */
	size_t sep_a, sep_b;
	char why[160];                   /* why no routing, when not */
};

struct zm_profile_cache {
	/* Each entry its own allocation, so that what was handed out stays
	 * where it is as the arrays grow. */
	struct zm_profile_cache_model **models;  /* owned [n_models] */
	size_t n_models;
	struct zm_density_set **sets;            /* owned [n_sets] */
	size_t n_sets;
};

void zm_profile_cache_init(struct zm_profile_cache *c);
/* Frees everything c owns and re-initialises it. */
void zm_profile_cache_release(struct zm_profile_cache *c);

/*
 * Model m's profile (zm_profile_from_doc of m->extra), parsed on the
 * first call.  The cached profile drops the scatter the reader rebuilds
 * from a stored PPCA (d x d doubles): the densities come from
 * zm_profile_cache_densities, which reads the PPCA as stored.  Errors
 * are zm_profile_from_doc's (ZM_ERR_NOTFOUND: no profile) and are not
 * kept: a later call parses again.
 */
enum zm_status zm_profile_cache_profile(struct zm_profile_cache *c,
                                        const struct zm_model *m,
                                        const struct zm_profile **out,
                                        struct zm_error *err);

/*
 * The density set of models[0..k) in that order: the one made before,
 * or a new one that is not ready (its k densities zm_density_init'ed),
 * which the caller fills and marks ready.  A set left not ready (its
 * maker failed) comes back not ready, its densities as that maker left
 * them.  ZM_ERR_NOMEM only.
 */
enum zm_status zm_profile_cache_densities(struct zm_profile_cache *c,
                                          const struct zm_model *const *models,
                                          size_t k,
                                          struct zm_density_set **out,
                                          struct zm_error *err);

#endif
