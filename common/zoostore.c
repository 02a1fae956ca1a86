/*
 * Trained models into a zoo; see zoostore.h.
 */
#include <inttypes.h>

#include "model.h"
#include "schema.h"
#include "zoo.h"
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
			                     "zm.metrics", err);
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
