/*
 * The assignment decision of assign(1): each model's input profile from
 * the zoo, each slice's profile from its slice file, and for every slice
 * the similarities to the comparable models turned into weights (a
 * threshold for a new model, temperature softmax, top-k, minimum weight),
 * recorded in a struct zm_assignment (assignment.h).  Models and slices
 * left out are flagged for the caller to report, not printed.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "assigner.h"
#include "mem.h"
#include "schema.h"
#include "slicer.h"
#include "stream.h"

enum zm_status zm_assign_load_models(const struct zm_zoo *zoo,
                                    struct zm_assign_model *mp,
                                    struct zm_error *err)
{
	struct zm_doc doc;
	enum zm_status st = ZM_OK;
	enum zm_role role;
	size_t i;

	zm_doc_init(&doc);
	for (i = 0; i < zoo->n_models; i++) {
		mp[i].name = zoo->models[i].name;
		if ((st = zm_zoo_read_model(zoo, &zoo->models[i], &doc, err)))
			break;
		/* Routers and bases are not experts of any slice. */
		if (!zm_role_of_doc(&doc, &role)) {
			st = zm_error_set(err, ZM_ERR_DATA, "model '%s': bad %s "
			                  "'%s'", mp[i].name, ZM_META_ROLE,
			                  zm_doc_meta(&doc, ZM_META_ROLE));
			break;
		}
		if (role != ZM_ROLE_EXPERT) {
			mp[i].note = ZM_ASSIGN_NOT_EXPERT;
			continue;
		}
		st = zm_profile_from_doc(&mp[i].prof, &doc, err);
		if (st == ZM_ERR_NOTFOUND) {
			mp[i].note = ZM_ASSIGN_NO_PROFILE;
			st = ZM_OK;
			continue;
		}
		if (st != ZM_OK) {
			zm_error_prefix(err, "model '%s': ", mp[i].name);
			break;
		}
		mp[i].input = zm_profile_find(&mp[i].prof, ZM_PROFILE_INPUT);
		if (!mp[i].input || !(mp[i].input->count > 0)) {
			mp[i].note = ZM_ASSIGN_EMPTY_PROFILE;
			mp[i].input = NULL;
		}
	}
	zm_doc_release(&doc);
	return st;
}

/* Scores one slice against the models, fills its assignment entry. */
enum zm_status zm_assign_slice(const struct zm_assignment *o,
                               struct zm_assign_model *mp, size_t k,
                               const struct zm_profile_entry *q,
                               struct zm_assignment_slice *s,
                               double *scores, double *w,
                               size_t *idx, struct zm_error *err)
{
	enum zm_status st;
	size_t i, j, n = 0;
	double best = -INFINITY;

	for (i = 0; i < k; i++)
		mp[i].other_width = false;
	for (i = 0; i < k; i++) {
		if (!mp[i].input)
			continue;
		if (mp[i].input->dim != q->dim) {
			mp[i].other_width = true;
			continue;
		}
		if ((st = zm_similarity_entries(o->metric, q, mp[i].input,
		                                ZM_SIM_FLOOR_AUTO, &scores[n],
		                                err)))
			return zm_error_prefix(err, "slice '%s', model '%s': ",
			                       s->slice, mp[i].name);
		if ((st = zm_assignment_add_score(s, mp[i].name, scores[n],
		                                  err)))
			return st;
		if (scores[n] > best)
			best = scores[n];
		idx[n++] = i;
	}
	if (n == 0 || (o->has_threshold && best < o->new_model_threshold)) {
		s->new_model = true;
		return ZM_OK;
	}
	if ((st = zm_weights_from_scores(scores, n, o->temperature,
	                                 o->top_k, o->min_weight, w,
	                                 err)))
		return st;
	/* Largest weight first; equal weights keep the zoo's order. */
	for (;;) {
		size_t pick = n;

		for (j = 0; j < n; j++)
			if (w[j] > 0 && (pick == n || w[j] > w[pick]))
				pick = j;
		if (pick == n)
			break;
		if ((st = zm_assignment_add_model(s, mp[idx[pick]].name,
		                                  w[pick], err)))
			return st;
		w[pick] = 0;
	}
	return ZM_OK;
}

/* Adds a model named after the slice, cloned from --base without its
 * profile (the new model has seen none of the slice yet). */
enum zm_status zm_assign_create_model(struct zm_zoo *zoo, const char *base,
                                     struct zm_assignment_slice *s,
                                     struct zm_error *err)
{
	struct zm_zoo_entry *e;
	struct zm_doc doc;
	enum zm_status st;
	int64_t version, params = 0;

	if (!zm_zoo_valid_name(s->slice))
		return zm_error_set(err, ZM_ERR_USAGE, "slice '%s' is not a "
		                    "valid model name", s->slice);
	if (zm_zoo_find(zoo, s->slice))
		return zm_error_set(err, ZM_ERR_USAGE, "slice '%s' needs a new "
		                    "model, but the zoo already has a model of "
		                    "that name", s->slice);
	zm_doc_init(&doc);
	st = zm_zoo_get(zoo, base, &e, err);
	if (st == ZM_OK) {
		params = e->params;   /* e moves when the index grows */
		st = zm_zoo_read_model(zoo, e, &doc, err);
	}
	if (st == ZM_OK) {
		zm_profile_remove_from_doc(&doc);
		st = zm_doc_set_meta(&doc, "zm.cloned-from", base, err);
	}
	if (st == ZM_OK)
		st = zm_zoo_put_model(zoo, s->slice, &doc, &version, err);
	if (st == ZM_OK) {
		struct zm_zoo_entry *ne = zm_zoo_find(zoo, s->slice);

		ne->params = params;
		st = zm_kv_set(&ne->tags, "slice", s->slice, err);
	}
	if (st == ZM_OK)
		st = zm_assignment_add_model(s, s->slice, 1.0, err);
	zm_doc_release(&doc);
	return st;
}

void zm_assign_run_init(struct zm_assign_run *r)
{
	memset(r, 0, sizeof(*r));
	zm_profile_init(&r->sp);
}

void zm_assign_run_release(struct zm_assign_run *r)
{
	size_t i;

	for (i = 0; r->mp && i < r->k; i++)
		zm_profile_release(&r->mp[i].prof);
	free(r->mp);
	free(r->scores);
	free(r->w);
	free(r->idx);
	free(r->name);
	zm_profile_release(&r->sp);
	zm_assign_run_init(r);
}

enum zm_status zm_assign_run_load(struct zm_assign_run *r,
                                  const struct zm_zoo *zoo,
                                  struct zm_error *err)
{
	size_t k = zoo->n_models, i;

	if (!(r->mp = zm_calloc(k ? k : 1, sizeof(*r->mp))) ||
	    !(r->scores = zm_calloc(k ? k : 1, sizeof(*r->scores))) ||
	    !(r->w = zm_calloc(k ? k : 1, sizeof(*r->w))) ||
	    !(r->idx = zm_calloc(k ? k : 1, sizeof(*r->idx))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	r->k = k;
	for (i = 0; i < k; i++)
		zm_profile_init(&r->mp[i].prof);
	return zm_assign_load_models(zoo, r->mp, err);
}

enum zm_status zm_assign_slice_file(struct zm_assign_run *r,
                                    struct zm_assignment *a, const char *path,
                                    struct zm_assignment_slice **s,
                                    struct zm_error *err)
{
	const struct zm_profile_entry *q;
	enum zm_status st;

	*s = NULL;
	free(r->name);
	r->name = NULL;
	if ((st = zm_slice_profile_read(path, &r->sp, &r->name, err)))
		return st;
	if (!r->name && !(r->name = zm_slice_name_from_path(path)))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	if (zm_assignment_find(a, r->name))
		return zm_error_set(err, ZM_ERR_USAGE, "%s: slice '%s' given "
		                    "twice", path, r->name);
	q = zm_profile_find(&r->sp, ZM_PROFILE_INPUT);
	if (!q || !(q->count > 0))
		return zm_error_set(err, ZM_ERR_DATA, "%s: slice '%s' is empty; "
		                    "nothing to assign", path, r->name);
	r->dim = q->dim;
	if ((st = zm_assignment_add_slice(a, r->name, path, s, err)))
		return st;
	return zm_assign_slice(a, r->mp, r->k, q, *s, r->scores, r->w, r->idx,
	                       err);
}
