/*
 * The model zoo: a directory with an index, zoo.yaml, and immutable model
 * files models/NAME/vN.safetensors.gz.  A change writes new version files,
 * then replaces the index in one atomic rename, all under an exclusive
 * flock on DIR/.lock; readers hold a shared lock while they read, so they
 * see the index before or after a change, never half of one, and retention
 * never deletes a file a reader is about to open.
 */
#ifndef ZM_ZOO_H
#define ZM_ZOO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "stream.h"

struct zm_kv {
	char *key;     /* owned */
	char *value;   /* owned; numbers are kept as their text */
};

struct zm_kv_list {
	struct zm_kv *items;
	size_t count;
};

/* Sets key to value (both copied), replacing an existing key.  A key too
 * long for a YAML implicit key once written (over 1000 characters quoted)
 * is ZM_ERR_FORMAT. */
enum zm_status zm_kv_set(struct zm_kv_list *l, const char *key,
                         const char *value, struct zm_error *err);
const char *zm_kv_get(const struct zm_kv_list *l, const char *key);
void zm_kv_release(struct zm_kv_list *l);
/* Parses "KEY=VALUE" (the --tag syntax) into l; ZM_ERR_USAGE if malformed. */
enum zm_status zm_kv_parse_assignment(struct zm_kv_list *l, const char *text,
                                      struct zm_error *err);

#include "json.h"

/* Adds the entries of a flat JSON object (as in zm.metrics) to l; a value
 * that is not a scalar is refused with ZM_ERR_FORMAT naming source. */
enum zm_status zm_kv_from_json(struct zm_kv_list *l, const char *json,
                               const char *source, struct zm_error *err);
/* Appends l as a flat JSON object; numeric-looking values stay numbers. */
void zm_kv_to_json(const struct zm_kv_list *l, struct zm_buf *b);

struct zm_zoo_entry {
	char *name;                 /* owned */
	int64_t version;            /* current version */
	char *file;                 /* owned, relative to the zoo directory */
	int64_t *versions;          /* owned, retained versions, ascending */
	size_t n_versions;
	int64_t params;             /* parameter count, 0 when unknown */
	struct zm_kv_list tags;     /* data source, etc. */
	struct zm_kv_list metrics;  /* accuracy, loss, samples, ... */
	struct zm_kv_list hparams;  /* training settings */
	char *origin;               /* owned: zm.origin of the current
	                               version (lineage.h); NULL unknown */
};

struct zm_zoo {
	char *dir;                  /* owned */
	int lock_fd;                /* flock'ed DIR/.lock, -1 if none */
	bool writable;              /* opened with ZM_ZOO_WRITE */
	bool made_dir;              /* this open created dir; undone unless
	                               a change is committed */
	int64_t keep;               /* versions to retain per model, 0 = all */
	struct zm_zoo_entry *models;
	size_t n_models;
	char **pending;             /* files written, not yet indexed */
	size_t n_pending;
	char **doomed;              /* files to delete after commit */
	size_t n_doomed;
	char **new_dirs;            /* directories made by this change */
	size_t n_new_dirs;
};

enum {
	ZM_ZOO_READ = 0,
	ZM_ZOO_WRITE = 1,           /* exclusive lock; allows changes */
	ZM_ZOO_CREATE = 2           /* create the directory when missing */
};

/*
 * Opens the zoo in dir under a shared (read) or exclusive (write) lock,
 * waiting up to ZM_LOCK_TIMEOUT seconds (default 300) for other writers.
 * A missing zoo is ZM_ERR_NOTFOUND unless ZM_ZOO_CREATE; a malformed
 * zoo.yaml is ZM_ERR_FORMAT with its line and column.  *zoo is freed with
 * zm_zoo_close, which releases the lock and discards uncommitted changes.
 */
enum zm_status zm_zoo_open(struct zm_zoo **zoo, const char *dir, int flags,
                           struct zm_error *err);
void zm_zoo_close(struct zm_zoo *zoo);

/* The entry called name, or NULL. */
struct zm_zoo_entry *zm_zoo_find(const struct zm_zoo *zoo, const char *name);
/* Like zm_zoo_find, but a missing model is ZM_ERR_NOTFOUND naming the zoo. */
enum zm_status zm_zoo_get(const struct zm_zoo *zoo, const char *name,
                          struct zm_zoo_entry **entry, struct zm_error *err);

/* True when name is usable as a model name: [A-Za-z0-9][A-Za-z0-9_.-]*,
 * at most 63 characters (it becomes a directory and a Kubernetes label). */
bool zm_zoo_valid_name(const char *name);

/* Full path of a file named in the index, into buf; false when it does
 * not fit. */
bool zm_zoo_path(const struct zm_zoo *zoo, const char *file, char *buf,
                 size_t size);

/* Reads the current version's model document of entry into doc. */
enum zm_status zm_zoo_read_model(const struct zm_zoo *zoo,
                                 const struct zm_zoo_entry *entry,
                                 struct zm_doc *doc, struct zm_error *err);

/*
 * Writes doc as the next version of model name (creating the entry when
 * new) and points the in-memory index at it; nothing is visible to others
 * until zm_zoo_commit.  Sets zm.name, zm.version and zm.parent in doc's
 * metadata.  The entry's metrics, hparams and origin are derived from
 * doc (zm.metrics, zm.hparams, zm.origin), never carried over from the
 * version before; its tags stay; its params, which need the architecture,
 * are the caller's to set.  *version receives the new version number.
 * Requires ZM_ZOO_WRITE.
 */
enum zm_status zm_zoo_put_model(struct zm_zoo *zoo, const char *name,
                                struct zm_doc *doc, int64_t *version,
                                struct zm_error *err);

/*
 * Points name back (in memory) at version to, or when to is 0 at the
 * version the current one was made from (its zm.parent) when that is
 * retained, else at the newest retained version before the current.  So
 * after a rollback and a new version, a rollback returns to the version
 * the new one started from, not to the abandoned one.  The entry's
 * metrics, hparams and origin are read from that version's file (its
 * params are the caller's to set, as for zm_zoo_put_model).
 * ZM_ERR_NOTFOUND when the version is not retained (the message lists
 * those that are) or there is none before the current.
 */
enum zm_status zm_zoo_rollback_to(struct zm_zoo *zoo, const char *name,
                                  int64_t to, struct zm_error *err);
/* zm_zoo_rollback_to(zoo, name, 0, err). */
enum zm_status zm_zoo_rollback(struct zm_zoo *zoo, const char *name,
                               struct zm_error *err);

/*
 * Atomically replaces zoo.yaml with the in-memory index, then deletes the
 * version files that retention (keep) no longer holds.  On failure the old
 * index stays in place and the new version files are removed.
 */
enum zm_status zm_zoo_commit(struct zm_zoo *zoo, struct zm_error *err);

/* Renders the index as YAML (the zoo.yaml format) into a new string. */
enum zm_status zm_zoo_to_yaml(const struct zm_zoo *zoo, char **text,
                              struct zm_error *err);

#endif
