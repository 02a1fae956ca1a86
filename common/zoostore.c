/*
 * Trained models into a zoo; see zoostore.h.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "align.h"
#include "lineage.h"
#include "metakeys.h"
#include "model.h"
#include "profile.h"
#include "schema.h"
#include "statedict.h"
#include "trainset.h"
#include "zoo.h"
#include "zoomodel.h"
#include "zoostore.h"

enum zm_status zm_zoo_store_trained(const char *dir,
                                    struct zm_zoo_store_item *items,
                                    size_t n, size_t *moved,
                                    struct zm_error *err)
{
	struct zm_zoo *zoo = NULL;
	struct zm_zoo_entry *e;
	struct zm_doc doc;
	enum zm_status st;
	size_t i;

	*moved = n;
	zm_doc_init(&doc);
	st = zm_zoo_open(&zoo, dir, ZM_ZOO_WRITE, err);
	for (i = 0; st == ZM_OK && i < n; i++) {
		const struct zm_model *m = items[i].model;
		const char *role = zm_doc_meta(&m->extra, ZM_META_ROLE);

		st = zm_zoo_get(zoo, items[i].name, &e, err);
		if (st == ZM_OK && e->version != items[i].base_version) {
			*moved = i;
			st = zm_error_set(err, ZM_ERR_CONFLICT,
			                  "model '%s' moved from v%" PRId64 " to v%"
			                  PRId64 " while training; nothing was "
			                  "applied", items[i].name,
			                  items[i].base_version, e->version);
		}
		if (st == ZM_OK)
			st = zm_model_to_doc(m, &doc, err);
		if (st == ZM_OK)
			st = zm_zoo_put_model(zoo, items[i].name, &doc,
			                      &items[i].version, err);
		if (st == ZM_OK) {
			e = zm_zoo_find(zoo, items[i].name);
			e->params = (int64_t)zm_arch_param_count(m->arch);
			zm_kv_release(&e->metrics);
			st = zm_kv_from_json(&e->metrics, m->metrics,
			                     ZM_META_METRICS, err);
		}
		if (st == ZM_OK && role)
			st = zm_kv_set(&e->tags, ZM_ROLE_TAG, role, err);
	}
	if (st == ZM_OK)
		st = zm_zoo_commit(zoo, err);
	zm_doc_release(&doc);
	zm_zoo_close(zoo);
	return st;
}

/* Merges the model's own hparams JSON with extra into merged and sets it
 * as the model's zm.hparams (unless both are empty). */
static enum zm_status set_model_hparams(struct zm_model *m,
                                        const struct zm_kv_list *extra,
                                        struct zm_kv_list *merged,
                                        struct zm_error *err)
{
	struct zm_buf b;
	enum zm_status st = ZM_OK;
	size_t i;

	if (m->hparams)
		st = zm_kv_from_json(merged, m->hparams, ZM_META_HPARAMS, err);
	for (i = 0; st == ZM_OK && extra && i < extra->count; i++)
		st = zm_kv_set(merged, extra->items[i].key, extra->items[i].value,
		               err);
	if (st != ZM_OK || merged->count == 0)
		return st;
	zm_buf_init(&b);
	zm_kv_to_json(merged, &b);
	if (b.failed)
		st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	else
		st = zm_model_set_string(&m->hparams, b.data, err);
	zm_buf_release(&b);
	return st;
}

/* The model's role (zm.role, mirrored in the index's role tag): o->role,
 * else a tag role=..., else what the file says, else what the model's
 * earlier versions were. */
static enum zm_status set_role(const struct zm_zoo_add *o,
                               const struct zm_zoo *zoo, struct zm_model *m,
                               struct zm_error *err)
{
	const struct zm_zoo_entry *e = zm_zoo_find(zoo, o->name);
	const char *role = o->role;
	enum zm_role r;

	if (!role && o->tags)
		role = zm_kv_get(o->tags, ZM_ROLE_TAG);
	if (!role && !zm_doc_meta(&m->extra, ZM_META_ROLE) && e)
		role = zm_kv_get(&e->tags, ZM_ROLE_TAG);
	if (!role)
		return ZM_OK;
	if (!zm_role_parse(role, &r))
		return zm_error_set(err, ZM_ERR_USAGE, "role '%s': expected "
		                    "expert, router or base", role);
	return zm_doc_set_meta(&m->extra, ZM_META_ROLE, role, err);
}

/* --align-to: m's hidden units realigned to the zoo model o->align_to's,
 * which is recorded; whether they are related then is for the alignment
 * to say (lineage.h). */
static enum zm_status align_import(const struct zm_zoo_add *o,
                                   struct zm_zoo *zoo, struct zm_model *m,
                                   struct zm_zoo_add_notes *notes,
                                   struct zm_error *err)
{
	struct zm_zoo_entry *r;
	struct zm_model *ref = NULL;
	struct zm_align_info info;
	struct zm_lineage_info li;
	enum zm_status st;

	if ((st = zm_zoo_get(zoo, o->align_to, &r, err)) != ZM_OK)
		return zm_error_prefix(err, "--align-to: ");
	snprintf(notes->aligned_to, sizeof(notes->aligned_to), "%s@v%" PRId64,
	         o->align_to, r->version);
	if ((st = zm_zoo_load_entry(zoo, r, &ref, err)) != ZM_OK)
		return st;
	st = zm_align_model(ref, notes->aligned_to, m, &info, err);
	if (st == ZM_OK) {
		notes->align_moved = info.moved;
		notes->align_before = info.before;
		notes->align_after = info.after;
		st = zm_lineage_related(ref, m, &li, err);
		notes->align_related = li.verdict == ZM_LINEAGE_RELATED;
	} else {
		zm_error_prefix(err, "--align-to %s: ", o->align_to);
	}
	zm_align_info_release(&info);
	zm_model_free(ref);
	return st;
}

/* The lineage of an imported model: unknown, or o->base's origin.  A
 * claim the weights contradict is kept (the user knows where the file
 * came from), and noted. */
static enum zm_status set_import_lineage(const struct zm_zoo_add *o,
                                         struct zm_zoo *zoo,
                                         struct zm_model *m,
                                         struct zm_zoo_add_notes *notes,
                                         struct zm_error *err)
{
	struct zm_zoo_entry *b;
	struct zm_model *base = NULL;
	struct zm_lineage_info info;
	char ref[128];
	enum zm_status st;

	if (!o->base)
		return zm_lineage_set_origin(m, NULL, err);
	if ((st = zm_zoo_get(zoo, o->base, &b, err)) != ZM_OK) {
		notes->base_failed = true;
		return st;
	}
	notes->base_unknown = !b->origin;
	st = zm_zoo_load_entry(zoo, b, &base, err);
	if (st == ZM_OK)
		st = zm_lineage_set_origin(base, NULL, err);
	if (st == ZM_OK && (st = zm_lineage_related(base, m, &info, err)) ==
	    ZM_OK && info.verdict == ZM_LINEAGE_UNRELATED) {
		notes->base_unrelated = true;
		notes->alignment = info.alignment;
		snprintf(notes->worst_layer, sizeof(notes->worst_layer), "%s",
		         base->arch->layers[info.worst_layer].name);
	}
	zm_model_free(base);
	if (st != ZM_OK)
		return st;
	snprintf(ref, sizeof(ref), "%s@v%" PRId64, o->base, b->version);
	if ((st = zm_lineage_set_origin(m, b->origin, err)))
		return st;
	return zm_doc_set_meta(&m->extra, ZM_LINEAGE_BASE_KEY, ref, err);
}

enum zm_status zm_zoo_add_model(struct zm_zoo *zoo, const struct zm_zoo_add *o,
                                int64_t *version,
                                struct zm_zoo_add_notes *notes,
                                struct zm_error *err)
{
	struct zm_arch *arch = NULL;
	struct zm_model *m = NULL;
	struct zm_zoo_entry *e;
	struct zm_kv_list hp = { NULL, 0 };
	struct zm_doc doc;
	enum zm_status st = ZM_OK;
	size_t i;

	memset(notes, 0, sizeof(*notes));
	zm_doc_init(&doc);
	if (o->arch_path && !o->model_path && zm_zoo_find(zoo, o->name)) {
		st = zm_error_set(err, ZM_ERR_USAGE,
		                  "model '%s' already exists in %s; add a "
		                  "model file to give it a new version",
		                  o->name, zoo->dir);
		goto out;
	}
	if (o->arch_path && (st = zm_arch_load(o->arch_path, &arch, err)))
		goto out;
	if (o->model_path) {
		st = zm_state_dict_load(o->model_path, arch, &m, err);
		notes->needs_arch = st == ZM_ERR_USAGE && !arch;
		if (st == ZM_OK)
			st = set_import_lineage(o, zoo, m, notes, err);
		if (st == ZM_OK && o->align_to)
			st = align_import(o, zoo, m, notes, err);
	} else {
		st = zm_model_new(arch, o->seed, &m, err);
		if (st == ZM_OK)
			st = zm_lineage_set_initial(m, err);
		if (st == ZM_OK) {
			char seed[32];
			snprintf(seed, sizeof(seed), "%" PRIu64, o->seed);
			st = zm_kv_set(&hp, "seed", seed, err);
		}
	}
	if (st == ZM_OK)
		st = set_model_hparams(m, o->hparams, &hp, err);
	if (st == ZM_OK)
		st = set_role(o, zoo, m, err);
	if (st == ZM_OK)
		st = zm_model_to_doc(m, &doc, err);
	if (st == ZM_OK)
		st = zm_zoo_put_model(zoo, o->name, &doc, version, err);
	if (st != ZM_OK)
		goto out;
	/* metrics and hparams come from the version file. */
	e = zm_zoo_find(zoo, o->name);
	e->params = (int64_t)zm_arch_param_count(m->arch);
	for (i = 0; st == ZM_OK && o->tags && i < o->tags->count; i++)
		st = zm_kv_set(&e->tags, o->tags->items[i].key,
		               o->tags->items[i].value, err);
	if (st == ZM_OK && zm_doc_meta(&m->extra, ZM_META_ROLE))
		st = zm_kv_set(&e->tags, ZM_ROLE_TAG,
		               zm_doc_meta(&m->extra, ZM_META_ROLE), err);
out:
	zm_kv_release(&hp);
	zm_doc_release(&doc);
	zm_model_free(m);
	zm_arch_free(arch);
	return st;
}

enum zm_status zm_zoo_profile_model(struct zm_zoo *zoo, const char *name,
                                    const char *data, uint64_t max_memory,
                                    int64_t *version, struct zm_error *err)
{
	struct zm_model *m = NULL;
	struct zm_trainset ts;
	struct zm_schema schema;
	struct zm_schema_note note;
	struct zm_profile p;
	struct zm_doc doc;
	struct zm_zoo_entry *e;
	char what[128];
	bool adopted = false;
	enum zm_status st;

	zm_trainset_init(&ts, max_memory);
	zm_schema_init(&schema);
	zm_profile_init(&p);
	zm_doc_init(&doc);
	snprintf(what, sizeof(what), "model '%s'", name);
	if ((st = zm_zoo_load_model(zoo, name, &m, NULL, err)) ||
	    (st = zm_schema_of_model_doc(&schema, &m->extra, what, err)) ||
	    (st = zm_trainset_load(&ts, data, err)))
		goto out;
	/* The rows as train-step sees them: classes and columns matched to
	 * the model's by name, none held out. */
	if ((st = zm_trainset_conform(&ts, &schema, m->arch->output_features,
	                              data, what, &adopted, &note, err)) ||
	    (st = zm_trainset_split(&ts, 0, 0, err)) ||
	    (st = zm_trainset_profile(&ts, m, &p, err)) ||
	    (st = zm_profile_replace_in_doc(&p, &m->extra, err)) ||
	    (adopted && (st = zm_schema_to_model_doc(&schema, &m->extra, err))) ||
	    (st = zm_model_to_doc(m, &doc, err)) ||
	    (st = zm_zoo_put_model(zoo, name, &doc, version, err)))
		goto out;
	e = zm_zoo_find(zoo, name);
	e->params = (int64_t)zm_arch_param_count(m->arch);
out:
	zm_doc_release(&doc);
	zm_profile_release(&p);
	zm_schema_release(&schema);
	zm_trainset_release(&ts);
	zm_model_free(m);
	return st;
}
