/*
 * Models out of a zoo (zoomodel.h).
 */
#include <stdlib.h>
#include <unistd.h>

#include "mem.h"
#include "model.h"
#include "stream.h"
#include "zoo.h"
#include "zoomodel.h"

enum zm_status zm_zoo_load_entry(const struct zm_zoo *zoo,
                                 const struct zm_zoo_entry *e,
                                 struct zm_model **out, struct zm_error *err)
{
	struct zm_doc doc;
	enum zm_status st;

	zm_doc_init(&doc);
	st = zm_zoo_read_model(zoo, e, &doc, err);
	if (st == ZM_OK &&
	    (st = zm_model_from_doc(&doc, NULL, out, err)))
		zm_error_prefix(err, "%s/%s: ", zoo->dir, e->file);
	zm_doc_release(&doc);
	return st;
}

enum zm_status zm_zoo_load_model(const struct zm_zoo *zoo, const char *name,
                                 struct zm_model **out, int64_t *version,
                                 struct zm_error *err)
{
	struct zm_zoo_entry *e;
	enum zm_status st;

	if ((st = zm_zoo_get(zoo, name, &e, err)))
		return st;
	if (version)
		*version = e->version;
	return zm_zoo_load_entry(zoo, e, out, err);
}

enum zm_status zm_zoo_load_model_at(const char *dir, const char *name,
                                    struct zm_model **out,
                                    struct zm_error *err)
{
	struct zm_zoo *zoo = NULL;
	enum zm_status st;

	st = zm_zoo_open(&zoo, dir, ZM_ZOO_READ, err);
	if (st == ZM_OK)
		st = zm_zoo_load_model(zoo, name, out, NULL, err);
	zm_zoo_close(zoo);
	return st;
}

enum zm_status zm_zoo_load_all(const struct zm_zoo *zoo,
                               struct zm_model ***out, struct zm_error *err)
{
	struct zm_model **ms;
	enum zm_status st = ZM_OK;
	size_t i;

	*out = NULL;
	if (!(ms = zm_calloc(zoo->n_models + 1, sizeof(*ms))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (i = 0; i < zoo->n_models && st == ZM_OK; i++)
		st = zm_zoo_load_entry(zoo, &zoo->models[i], &ms[i], err);
	if (st != ZM_OK) {
		zm_zoo_models_free(ms);
		return st;
	}
	*out = ms;
	return ZM_OK;
}

void zm_zoo_models_free(struct zm_model **ms)
{
	size_t i;

	for (i = 0; ms && ms[i]; i++)
		zm_model_free(ms[i]);
	free(ms);
}

enum zm_status zm_zoo_model_file(const struct zm_zoo *zoo, const char *arg,
                                 char **path, struct zm_error *err)
{
	struct zm_zoo_entry *e = zoo ? zm_zoo_find(zoo, arg) : NULL;
	char buf[4096];

	if (e) {
		if (!zm_zoo_path(zoo, e->file, buf, sizeof(buf)))
			return zm_error_set(err, ZM_ERR_USAGE, "path too long");
		*path = zm_strdup(buf);
	} else {
		if (zoo && access(arg, F_OK) != 0)
			return zm_error_set(err, ZM_ERR_NOTFOUND, "%s: no such "
			                    "model in %s, nor a file", arg,
			                    zoo->dir);
		*path = zm_strdup(arg);
	}
	return *path ? ZM_OK : zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
}
