/*
 * The profiles and routing densities a run's weighters share
 * (profcache.h).  A handful of models per run: the look-ups are linear.
 */
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "profcache.h"

void zm_profile_cache_init(struct zm_profile_cache *c)
{
	memset(c, 0, sizeof(*c));
}

static void set_free(struct zm_density_set *s)
{
	size_t i;

	if (!s)
		return;
	if (s->dens)
		for (i = 0; i < s->k; i++)
			zm_density_release(&s->dens[i]);
	free(s->dens);
	free(s->models);
	free(s);
}

void zm_profile_cache_release(struct zm_profile_cache *c)
{
	size_t i;

	for (i = 0; i < c->n_models; i++) {
		zm_profile_release(&c->models[i]->profile);
		free(c->models[i]);
	}
	free(c->models);
	for (i = 0; i < c->n_sets; i++)
		set_free(c->sets[i]);
	free(c->sets);
	zm_profile_cache_init(c);
}

enum zm_status zm_profile_cache_profile(struct zm_profile_cache *c,
                                        const struct zm_model *m,
                                        const struct zm_profile **out,
                                        struct zm_error *err)
{
	struct zm_profile_cache_model *e, **v;
	enum zm_status st;
	size_t i;

	*out = NULL;
	for (i = 0; i < c->n_models; i++)
		if (c->models[i]->model == m) {
			*out = &c->models[i]->profile;
			return ZM_OK;
		}
	if (!(e = zm_calloc(1, sizeof(*e))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	e->model = m;
	zm_profile_init(&e->profile);
	/* Without the scatters: nothing that reads the cache uses them. */
	st = zm_profile_moments_from_doc(&e->profile, &m->extra, err);
	if (st != ZM_OK) {
		free(e);
		return st;
	}
	v = zm_realloc(c->models, (c->n_models + 1) * sizeof(*v));
	if (!v) {
		zm_profile_release(&e->profile);
		free(e);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	v[c->n_models++] = e;
	c->models = v;
	*out = &e->profile;
	return ZM_OK;
}

enum zm_status zm_profile_cache_densities(struct zm_profile_cache *c,
                                          const struct zm_model *const *models,
                                          size_t k,
                                          struct zm_density_set **out,
                                          struct zm_error *err)
{
	struct zm_density_set *s, **v;
	size_t i;

	*out = NULL;
	for (i = 0; i < c->n_sets; i++) {
		s = c->sets[i];
		if (s->k == k && memcmp(s->models, models,
		                        k * sizeof(*models)) == 0) {
			*out = s;
			return ZM_OK;
		}
	}
	s = zm_calloc(1, sizeof(*s));
	if (s) {
		s->k = k;
		s->models = zm_calloc(k, sizeof(*s->models));
		s->dens = zm_calloc(k, sizeof(*s->dens));
	}
	if (!s || !s->models || !s->dens) {
		if (s)
			s->k = 0;
		set_free(s);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	memcpy(s->models, models, k * sizeof(*models));
	for (i = 0; i < k; i++)
		zm_density_init(&s->dens[i]);
	v = zm_realloc(c->sets, (c->n_sets + 1) * sizeof(*v));
	if (!v) {
		set_free(s);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	v[c->n_sets++] = s;
	c->sets = v;
	*out = s;
	return ZM_OK;
}
