/*
 * Models out of a zoo: the glue of zoo.h (which version, which file, the
 * lock) and model.h (a model from its document) that predict, train-step,
 * granctl and merge share.
 */
#ifndef ZM_ZOOMODEL_H
#define ZM_ZOOMODEL_H

#include <stdint.h>

#include "error.h"

struct zm_model;
struct zm_zoo;
struct zm_zoo_entry;

/* Reads the current version of entry e of zoo and builds its model into
 * *out (new; free with zm_model_free).  Errors of the document are
 * prefixed "ZOO/FILE: ". */
enum zm_status zm_zoo_load_entry(const struct zm_zoo *zoo,
                                 const struct zm_zoo_entry *e,
                                 struct zm_model **out, struct zm_error *err);

/* zm_zoo_load_entry for the model called name (ZM_ERR_NOTFOUND when the
 * zoo has none); *version, when version is not NULL, is the version
 * read. */
enum zm_status zm_zoo_load_model(const struct zm_zoo *zoo, const char *name,
                                 struct zm_model **out, int64_t *version,
                                 struct zm_error *err);

/* Opens the zoo at dir for reading, loads name and closes it again, so
 * that the zoo's shared lock is held only while the file is read. */
enum zm_status zm_zoo_load_model_at(const char *dir, const char *name,
                                    struct zm_model **out,
                                    struct zm_error *err);

/* Every model of zoo, in the zoo's order, into *out (new, NULL-terminated;
 * free with zm_zoo_models_free); an error names the model's file, and
 * then *out is NULL. */
enum zm_status zm_zoo_load_all(const struct zm_zoo *zoo,
                               struct zm_model ***out, struct zm_error *err);
void zm_zoo_models_free(struct zm_model **ms);

/*
 * The file of a model named on a command line: arg's current file when zoo
 * (may be NULL) has a model called arg, else arg itself as a path, into
 * *path (new; free with free()).  With a zoo, an arg that is neither a
 * model of it nor an existing file is ZM_ERR_NOTFOUND.
 */
enum zm_status zm_zoo_model_file(const struct zm_zoo *zoo, const char *arg,
                                 char **path, struct zm_error *err);

#endif
