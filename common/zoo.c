/*
 * The zoo directory: index parsing and rendering, locking, versioned
 * writes and retention.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "fileio.h"
#include "json.h"
#include "mem.h"
#include "metakeys.h"
#include "zoo.h"

#define ZM_PATH_MAX 4096

/* ---- key/value lists ---- */

/* Keys become implicit keys of YAML flow maps in zoo.yaml, which a YAML
 * reader takes only up to 1024 characters long: a longer key would be
 * written fine and then make the index unreadable.  Checked on the key as
 * written (quoted and escaped). */
#define KV_KEY_MAX_WRITTEN 1000

static bool kv_key_fits(const char *key)
{
	struct zm_buf b;
	bool fits;

	if (strlen(key) <= KV_KEY_MAX_WRITTEN / 6 - 2)
		return true;	/* even if every byte became "\u00XX" */
	zm_buf_init(&b);
	zm_yaml_scalar(&b, key, false);
	fits = !b.failed && b.len <= KV_KEY_MAX_WRITTEN;
	zm_buf_release(&b);
	return fits;
}

enum zm_status zm_kv_set(struct zm_kv_list *l, const char *key,
                         const char *value, struct zm_error *err)
{
	char *v, *k;
	struct zm_kv *items;
	size_t i;

	if (!kv_key_fits(key))
		return zm_error_set(err, ZM_ERR_FORMAT,
		                    "key '%.40s...' is too long (at most %d "
		                    "characters as written)", key,
		                    KV_KEY_MAX_WRITTEN);
	v = zm_strdup(value);
	if (!v)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (i = 0; i < l->count; i++) {
		if (!strcmp(l->items[i].key, key)) {
			free(l->items[i].value);
			l->items[i].value = v;
			return ZM_OK;
		}
	}
	k = zm_strdup(key);
	items = zm_realloc(l->items, (l->count + 1) * sizeof(*items));
	if (!k || !items) {
		free(k);
		free(v);
		if (items)
			l->items = items;
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	l->items = items;
	l->items[l->count].key = k;
	l->items[l->count].value = v;
	l->count++;
	return ZM_OK;
}

const char *zm_kv_get(const struct zm_kv_list *l, const char *key)
{
	size_t i;

	for (i = 0; i < l->count; i++)
		if (!strcmp(l->items[i].key, key))
			return l->items[i].value;
	return NULL;
}

void zm_kv_release(struct zm_kv_list *l)
{
	size_t i;

	for (i = 0; i < l->count; i++) {
		free(l->items[i].key);
		free(l->items[i].value);
	}
	free(l->items);
	l->items = NULL;
	l->count = 0;
}

enum zm_status zm_kv_parse_assignment(struct zm_kv_list *l, const char *text,
                                      struct zm_error *err)
{
	const char *eq = strchr(text, '=');
	char key[256];
	size_t klen;

	if (!eq || eq == text)
		return zm_error_set(err, ZM_ERR_USAGE,
		                    "'%s': expected KEY=VALUE", text);
	klen = (size_t)(eq - text);
	if (klen >= sizeof(key))
		return zm_error_set(err, ZM_ERR_USAGE, "'%s': key too long", text);
	memcpy(key, text, klen);
	key[klen] = '\0';
	return zm_kv_set(l, key, eq + 1, err);
}

enum zm_status zm_kv_from_json(struct zm_kv_list *l, const char *json,
                               const char *source, struct zm_error *err)
{
	struct zm_node *root = NULL;
	enum zm_status st;
	size_t i;

	st = zm_config_parse(json, strlen(json), source, &root, err);
	if (st == ZM_OK)
		st = zm_node_expect(root, ZM_NODE_MAP, "metadata", err);
	for (i = 0; st == ZM_OK && i < root->count; i++) {
		const char *v;
		st = zm_node_string(root->items[i], root->keys[i]->value, &v,
		                    err);
		if (st == ZM_OK)
			st = zm_kv_set(l, root->keys[i]->value, v, err);
	}
	zm_node_free(root);
	if (st == ZM_ERR_CONFIG)
		err->status = st = ZM_ERR_FORMAT;
	return st;
}

void zm_kv_to_json(const struct zm_kv_list *l, struct zm_buf *b)
{
	size_t i;

	zm_buf_puts(b, "{");
	for (i = 0; i < l->count; i++) {
		const char *v = l->items[i].value;
		zm_buf_puts(b, i ? "," : "");
		zm_json_string(b, l->items[i].key, strlen(l->items[i].key));
		zm_buf_puts(b, ":");
		if (zm_json_is_number(v))
			zm_buf_puts(b, v);
		else
			zm_json_string(b, v, strlen(v));
	}
	zm_buf_puts(b, "}");
}

/* ---- entries ---- */

static void entry_release(struct zm_zoo_entry *e)
{
	free(e->name);
	free(e->file);
	free(e->versions);
	zm_kv_release(&e->tags);
	zm_kv_release(&e->metrics);
	zm_kv_release(&e->hparams);
	free(e->origin);
	memset(e, 0, sizeof(*e));
}

bool zm_zoo_valid_name(const char *name)
{
	size_t i, n = strlen(name);

	if (n == 0 || n > 63)
		return false;
	for (i = 0; i < n; i++) {
		char c = name[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		             (c >= '0' && c <= '9');
		if (!alnum && (i == 0 || (c != '_' && c != '.' && c != '-')))
			return false;
	}
	return true;
}

struct zm_zoo_entry *zm_zoo_find(const struct zm_zoo *zoo, const char *name)
{
	size_t i;

	for (i = 0; i < zoo->n_models; i++)
		if (!strcmp(zoo->models[i].name, name))
			return &zoo->models[i];
	return NULL;
}

enum zm_status zm_zoo_get(const struct zm_zoo *zoo, const char *name,
                          struct zm_zoo_entry **entry, struct zm_error *err)
{
	*entry = zm_zoo_find(zoo, name);
	if (!*entry)
		return zm_error_set(err, ZM_ERR_NOTFOUND,
		                    "%s: no model named '%s' in the zoo",
		                    zoo->dir, name);
	return ZM_OK;
}

bool zm_zoo_path(const struct zm_zoo *zoo, const char *file, char *buf,
                 size_t size)
{
	int n = snprintf(buf, size, "%s/%s", zoo->dir, file);

	return n >= 0 && (size_t)n < size;
}

/* ---- index parsing ---- */

static enum zm_status parse_kv_map(const struct zm_node *node,
                                   const char *what, struct zm_kv_list *out,
                                   struct zm_error *err)
{
	enum zm_status st;
	size_t i;

	st = zm_node_expect(node, ZM_NODE_MAP, what, err);
	if (st != ZM_OK)
		return st;
	for (i = 0; i < node->count; i++) {
		const char *value;
		st = zm_node_string(node->items[i], node->keys[i]->value,
		                    &value, err);
		if (st == ZM_OK)
			st = zm_kv_set(out, node->keys[i]->value, value, err);
		if (st != ZM_OK)
			return st;
	}
	return ZM_OK;
}

/* A relative path inside the zoo: no leading '/', no ".." component. */
static bool safe_relative_path(const char *p)
{
	const char *c = p;

	if (!*p || *p == '/')
		return false;
	while (*c) {
		size_t n = strcspn(c, "/");
		if (n == 2 && c[0] == '.' && c[1] == '.')
			return false;
		c += n;
		if (*c == '/')
			c++;
	}
	return true;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

static enum zm_status parse_entry(const struct zm_node *node,
                                  struct zm_zoo_entry *e,
                                  struct zm_error *err)
{
	const struct zm_node *n;
	const char *s;
	enum zm_status st;
	size_t i;

	st = zm_node_expect(node, ZM_NODE_MAP, "model", err);
	if (st != ZM_OK)
		return st;
	n = zm_node_get(node, "name");
	if (!n)
		return zm_node_error(node, err, ZM_ERR_FORMAT,
		                     "model: missing 'name'");
	if ((st = zm_node_string(n, "name", &s, err)) != ZM_OK)
		return st;
	if (!zm_zoo_valid_name(s))
		return zm_node_error(n, err, ZM_ERR_FORMAT,
		                     "invalid model name '%s'", s);
	if (!(e->name = zm_strdup(s)))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	n = zm_node_get(node, "version");
	if (!n)
		return zm_node_error(node, err, ZM_ERR_FORMAT,
		                     "model '%s': missing 'version'", e->name);
	if ((st = zm_node_int(n, "version", 1, INT32_MAX, &e->version, err)))
		return st;
	n = zm_node_get(node, "file");
	if (!n)
		return zm_node_error(node, err, ZM_ERR_FORMAT,
		                     "model '%s': missing 'file'", e->name);
	if ((st = zm_node_string(n, "file", &s, err)) != ZM_OK)
		return st;
	if (!safe_relative_path(s))
		return zm_node_error(n, err, ZM_ERR_FORMAT,
		                     "file '%s' is not a path inside the zoo", s);
	if (!(e->file = zm_strdup(s)))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	n = zm_node_get(node, "versions");
	if (n) {
		if ((st = zm_node_expect(n, ZM_NODE_SEQ, "versions", err)))
			return st;
		e->versions = zm_calloc(n->count + 1, sizeof(*e->versions));
		if (!e->versions)
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		for (i = 0; i < n->count; i++) {
			st = zm_node_int(n->items[i], "versions", 1, INT32_MAX,
			                 &e->versions[i], err);
			if (st != ZM_OK)
				return st;
		}
		e->n_versions = n->count;
	} else {
		e->versions = zm_calloc(1, sizeof(*e->versions));
		if (!e->versions)
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	for (i = 0; i < e->n_versions; i++)
		if (e->versions[i] == e->version)
			break;
	if (i == e->n_versions)
		e->versions[e->n_versions++] = e->version;
	qsort(e->versions, e->n_versions, sizeof(*e->versions), cmp_i64);
	if ((n = zm_node_get(node, "params")) &&
	    (st = zm_node_int(n, "params", 0, INT64_MAX, &e->params, err)))
		return st;
	if ((n = zm_node_get(node, "tags")) &&
	    (st = parse_kv_map(n, "tags", &e->tags, err)))
		return st;
	if ((n = zm_node_get(node, "metrics")) &&
	    (st = parse_kv_map(n, "metrics", &e->metrics, err)))
		return st;
	if ((n = zm_node_get(node, "hparams")) &&
	    (st = parse_kv_map(n, "hparams", &e->hparams, err)))
		return st;
	if ((n = zm_node_get(node, "origin"))) {
		if ((st = zm_node_string(n, "origin", &s, err)) != ZM_OK)
			return st;
		if (!(e->origin = zm_strdup(s)))
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	return ZM_OK;
}

static enum zm_status parse_index(struct zm_zoo *zoo, const char *path,
                                  struct zm_error *err)
{
	struct zm_node *root = NULL;
	const struct zm_node *models, *keep;
	enum zm_status st;
	size_t i;

	st = zm_config_load(path, &root, err);
	if (st != ZM_OK) {
		if (st == ZM_ERR_CONFIG)
			err->status = st = ZM_ERR_FORMAT;
		return st;
	}
	st = zm_node_expect(root, ZM_NODE_MAP, "zoo index", err);
	if (st != ZM_OK)
		goto out;
	keep = zm_node_get(root, "keep");
	if (keep && (st = zm_node_int(keep, "keep", 0, INT32_MAX, &zoo->keep,
	                               err)))
		goto out;
	models = zm_node_get(root, "models");
	/* "models:" with nothing after it is an empty zoo. */
	if (models && models->type == ZM_NODE_SCALAR &&
	    !(models->plain && (!strcmp(models->value, "") ||
	                        !strcmp(models->value, "null") ||
	                        !strcmp(models->value, "~")))) {
		st = zm_node_error(models, err, ZM_ERR_FORMAT,
		                   "models: expected a list");
		goto out;
	}
	if (models && models->type != ZM_NODE_SCALAR) {
		st = zm_node_expect(models, ZM_NODE_SEQ, "models", err);
		if (st != ZM_OK)
			goto out;
		zoo->models = zm_calloc(models->count, sizeof(*zoo->models));
		if (!zoo->models) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
			goto out;
		}
		for (i = 0; i < models->count; i++) {
			st = parse_entry(models->items[i], &zoo->models[i], err);
			zoo->n_models = i + 1;
			if (st != ZM_OK)
				goto out;
			if (zm_zoo_find(zoo, zoo->models[i].name) !=
			    &zoo->models[i]) {
				st = zm_node_error(models->items[i], err,
				                   ZM_ERR_FORMAT,
				                   "model '%s' listed twice",
				                   zoo->models[i].name);
				goto out;
			}
		}
	}
out:
	if (st != ZM_OK && st != ZM_ERR_NOMEM)
		err->status = st = ZM_ERR_FORMAT;
	zm_node_free(root);
	return st;
}

/* ---- opening, locking ---- */

static enum zm_status take_lock(struct zm_zoo *zoo, bool exclusive,
                                struct zm_error *err)
{
	char path[ZM_PATH_MAX];
	const char *env = getenv("ZM_LOCK_TIMEOUT");
	double timeout = 300, waited = 0;
	long delay_ms = 1;

	if (env && *env) {
		char *end;
		double v = strtod(env, &end);
		if (*end == '\0' && v >= 0)
			timeout = v;
	}
	snprintf(path, sizeof(path), "%s/.lock", zoo->dir);
	zoo->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (zoo->lock_fd < 0 && !exclusive)
		zoo->lock_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (zoo->lock_fd < 0)
		return zm_error_errno(err, errno == ENOENT ? ZM_ERR_NOTFOUND :
		                      ZM_ERR_IO, "%s", path);
	/* Poll instead of blocking so that a stuck writer turns into a clear
	 * error after the timeout rather than a cron job that never ends. */
	for (;;) {
		struct timespec ts;
		if (flock(zoo->lock_fd, (exclusive ? LOCK_EX : LOCK_SH) |
		          LOCK_NB) == 0) {
			struct stat held, named;
			/* A failed first change removes the lock file it made
			 * (see zm_zoo_close); a lock on the removed file
			 * protects nothing, so start again. */
			if (fstat(zoo->lock_fd, &held) == 0 &&
			    stat(path, &named) == 0 &&
			    held.st_ino == named.st_ino &&
			    held.st_dev == named.st_dev)
				return ZM_OK;
			close(zoo->lock_fd);
			zoo->lock_fd = -1;
			return ZM_ERR_CONFLICT;
		}
		if (errno != EWOULDBLOCK && errno != EINTR)
			return zm_error_errno(err, ZM_ERR_IO, "%s: flock", path);
		if (waited >= timeout)
			return zm_error_set(err, ZM_ERR_IO,
			                    "%s: zoo is locked by another process "
			                    "(waited %.0f s; ZM_LOCK_TIMEOUT)",
			                    zoo->dir, waited);
		ts.tv_sec = delay_ms / 1000;
		ts.tv_nsec = (delay_ms % 1000) * 1000000L;
		nanosleep(&ts, NULL);
		waited += (double)delay_ms / 1000.0;
		if (delay_ms < 50)
			delay_ms *= 2;
	}
}

/* Removes temporary files (".NAME.tmp.XXXXXX") that a killed writer left
 * in dir.  Only called under the exclusive lock, when no writer runs. */
static void remove_stale_temps(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[ZM_PATH_MAX];

	if (!d)
		return;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.' && strstr(de->d_name, ".tmp.")) {
			snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
			unlink(path);
		}
	}
	closedir(d);
}

/* Removes stale temporaries in every DIR/models/NAME, indexed or not (a
 * writer killed while adding a new model leaves one in a directory the
 * index does not name yet), then that directory itself when it is empty
 * and unindexed.  Only called under the exclusive lock. */
static void remove_stale_model_temps(const struct zm_zoo *zoo)
{
	char models[ZM_PATH_MAX], path[ZM_PATH_MAX];
	struct dirent *de;
	DIR *d;

	snprintf(models, sizeof(models), "%s/models", zoo->dir);
	d = opendir(models);
	if (!d)
		return;
	while ((de = readdir(d)) != NULL) {
		if (!zm_zoo_valid_name(de->d_name))
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", models,
		             de->d_name) >= (int)sizeof(path))
			continue;
		remove_stale_temps(path);
		if (!zm_zoo_find(zoo, de->d_name))
			rmdir(path);	/* fails, harmlessly, unless empty */
	}
	closedir(d);
}

enum zm_status zm_zoo_open(struct zm_zoo **out, const char *dir, int flags,
                           struct zm_error *err)
{
	struct zm_zoo *zoo;
	char path[ZM_PATH_MAX];
	struct stat sb;
	enum zm_status st;
	size_t i;

	*out = NULL;
	if (strlen(dir) > ZM_PATH_MAX - 128)
		return zm_error_set(err, ZM_ERR_USAGE, "%s: path too long", dir);
	zoo = zm_calloc(1, sizeof(*zoo));
	if (!zoo)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	zoo->lock_fd = -1;
	zoo->writable = (flags & ZM_ZOO_WRITE) != 0;
	zoo->dir = zm_strdup(dir);
	if (!zoo->dir) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		goto fail;
	}
	/* Retried while a concurrent first change that failed removes the
	 * directory and lock file it had made under us. */
	for (i = 0; i < 1000; i++) {
		if (stat(dir, &sb) != 0) {
			if (errno != ENOENT || !(flags & ZM_ZOO_CREATE)) {
				st = zm_error_errno(err, errno == ENOENT ?
				                    ZM_ERR_NOTFOUND : ZM_ERR_IO,
				                    "zoo %s", dir);
				goto fail;
			}
			if (mkdir(dir, 0755) == 0)
				zoo->made_dir = true;
			else if (errno != EEXIST) {
				st = zm_error_errno(err, ZM_ERR_IO, "mkdir %s", dir);
				goto fail;
			}
		} else if (!S_ISDIR(sb.st_mode)) {
			st = zm_error_set(err, ZM_ERR_USAGE,
			                  "zoo %s: not a directory", dir);
			goto fail;
		}
		st = take_lock(zoo, zoo->writable, err);
		if (st != ZM_ERR_CONFLICT &&
		    !(st == ZM_ERR_NOTFOUND && (flags & ZM_ZOO_CREATE)))
			break;
	}
	if (st != ZM_OK)
		goto fail;
	snprintf(path, sizeof(path), "%s/zoo.yaml", dir);
	if (access(path, F_OK) == 0) {
		st = parse_index(zoo, path, err);
		if (st != ZM_OK)
			goto fail;
	} else if (!(flags & ZM_ZOO_CREATE)) {
		st = zm_error_set(err, ZM_ERR_NOTFOUND,
		                  "%s: not a zoo (no zoo.yaml)", dir);
		goto fail;
	}
	if (zoo->writable) {
		remove_stale_temps(dir);
		remove_stale_model_temps(zoo);
	}
	*out = zoo;
	return ZM_OK;
fail:
	zm_zoo_close(zoo);
	return st;
}

static void free_list(char **list, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(list[i]);
	free(list);
}

void zm_zoo_close(struct zm_zoo *zoo)
{
	size_t i;

	if (!zoo)
		return;
	/* Version files written but never indexed are garbage. */
	for (i = 0; i < zoo->n_pending; i++)
		unlink(zoo->pending[i]);
	for (i = zoo->n_new_dirs; i-- > 0;)
		rmdir(zoo->new_dirs[i]);
	/* A zoo this open created and never committed to is removed again,
	 * lock file first (waiters notice, see take_lock), so a failed first
	 * change leaves nothing behind. */
	if (zoo->made_dir) {
		char path[ZM_PATH_MAX];
		snprintf(path, sizeof(path), "%s/.lock", zoo->dir);
		unlink(path);
		rmdir(zoo->dir);
	}
	free_list(zoo->pending, zoo->n_pending);
	free_list(zoo->new_dirs, zoo->n_new_dirs);
	free_list(zoo->doomed, zoo->n_doomed);
	for (i = 0; i < zoo->n_models; i++)
		entry_release(&zoo->models[i]);
	free(zoo->models);
	if (zoo->lock_fd >= 0)
		close(zoo->lock_fd);
	free(zoo->dir);
	free(zoo);
}

/* ---- reading and writing models ---- */

enum zm_status zm_zoo_read_model(const struct zm_zoo *zoo,
                                 const struct zm_zoo_entry *entry,
                                 struct zm_doc *doc, struct zm_error *err)
{
	char path[ZM_PATH_MAX];
	struct zm_reader *r = NULL;
	enum zm_status st;
	bool eof = false;

	if (!zm_zoo_path(zoo, entry->file, path, sizeof(path)))
		return zm_error_set(err, ZM_ERR_FORMAT, "%s: model file name "
		                    "of '%s' too long", zoo->dir, entry->name);
	st = zm_reader_open(&r, path, err);
	if (st != ZM_OK)
		return st;
	st = zm_reader_next(r, doc, &eof, err);
	if (st == ZM_OK && eof)
		st = zm_error_set(err, ZM_ERR_FORMAT,
		                  "%s: empty model file", path);
	zm_reader_close(r);
	return st;
}

static enum zm_status push_path(char ***list, size_t *n, const char *path,
                                struct zm_error *err)
{
	char **grown = zm_realloc(*list, (*n + 1) * sizeof(**list));
	char *copy;

	if (!grown)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	*list = grown;
	copy = zm_strdup(path);
	if (!copy)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	(*list)[(*n)++] = copy;
	return ZM_OK;
}

/* Makes a directory, remembering it so that a failed change removes it. */
static enum zm_status ensure_dir(struct zm_zoo *zoo, const char *path,
                                 struct zm_error *err)
{
	enum zm_status st;

	if (mkdir(path, 0755) == 0) {
		st = push_path(&zoo->new_dirs, &zoo->n_new_dirs, path, err);
		if (st != ZM_OK)
			rmdir(path);
		return st;
	}
	if (errno == EEXIST)
		return ZM_OK;
	return zm_error_errno(err, ZM_ERR_IO, "mkdir %s", path);
}

/*
 * Sets the entry's metrics, hparams and origin from a version's document
 * (source names it in messages), replacing what it held: the index says
 * what the version file says, whichever version is current.  (params
 * needs the architecture, a layer above this one: callers set it.)
 */
static enum zm_status entry_from_doc(struct zm_zoo_entry *e,
                                     const struct zm_doc *doc,
                                     const char *source,
                                     struct zm_error *err)
{
	const char *metrics = zm_doc_meta(doc, ZM_META_METRICS);
	const char *hparams = zm_doc_meta(doc, ZM_META_HPARAMS);
	const char *origin = zm_doc_meta(doc, ZM_META_ORIGIN);
	struct zm_kv_list m = { NULL, 0 }, h = { NULL, 0 };
	char *o = NULL;
	enum zm_status st = ZM_OK;

	if (metrics)
		st = zm_kv_from_json(&m, metrics, ZM_META_METRICS, err);
	if (st == ZM_OK && hparams)
		st = zm_kv_from_json(&h, hparams, ZM_META_HPARAMS, err);
	if (st == ZM_OK && origin && *origin && !(o = zm_strdup(origin)))
		st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	if (st != ZM_OK) {
		zm_error_prefix(err, "%s: ", source);
		zm_kv_release(&m);
		zm_kv_release(&h);
		free(o);
		return st;
	}
	zm_kv_release(&e->metrics);
	zm_kv_release(&e->hparams);
	e->metrics = m;
	e->hparams = h;
	free(e->origin);
	e->origin = o;
	return ZM_OK;
}

enum zm_status zm_zoo_put_model(struct zm_zoo *zoo, const char *name,
                                struct zm_doc *doc, int64_t *version,
                                struct zm_error *err)
{
	struct zm_zoo_entry *e;
	char path[ZM_PATH_MAX], rel[ZM_PATH_MAX], num[32];
	struct zm_writer *w = NULL;
	enum zm_status st;
	int64_t v, parent = 0, *versions;
	int level = ZM_COMPRESS_AUTO;

	ZM_ASSERT(zoo->writable);
	if (!zm_zoo_valid_name(name))
		return zm_error_set(err, ZM_ERR_USAGE,
		                    "invalid model name '%s' (letters, digits, "
		                    "'_', '.', '-'; at most 63)", name);
	e = zm_zoo_find(zoo, name);
	v = 1;
	if (e) {
		v = e->versions[e->n_versions - 1] + 1;
		parent = e->version;
	}
	snprintf(rel, sizeof(rel), "models/%s/v%" PRId64 ".safetensors.gz",
	         name, v);
	snprintf(path, sizeof(path), "%s/models", zoo->dir);
	if ((st = ensure_dir(zoo, path, err)) != ZM_OK)
		return st;
	snprintf(path, sizeof(path), "%s/models/%s", zoo->dir, name);
	if ((st = ensure_dir(zoo, path, err)) != ZM_OK)
		return st;
	if ((st = zm_doc_set_meta(doc, ZM_META_KIND, "model", err)) ||
	    (st = zm_doc_set_meta(doc, ZM_META_NAME, name, err)))
		return st;
	snprintf(num, sizeof(num), "%" PRId64, v);
	if ((st = zm_doc_set_meta(doc, ZM_META_VERSION, num, err)))
		return st;
	if (parent) {
		snprintf(num, sizeof(num), "%" PRId64, parent);
		st = zm_doc_set_meta(doc, ZM_META_PARENT, num, err);
		if (st != ZM_OK)
			return st;
	}
	zm_compress_from_env(&level);
	ZM_ASSERT(zm_zoo_path(zoo, rel, path, sizeof(path)));
	if ((st = zm_writer_open(&w, path, level, err)) != ZM_OK)
		return st;
	st = zm_writer_write_doc(w, doc, err);
	if (st != ZM_OK) {
		zm_writer_abort(w);
		return st;
	}
	/* Register the file as pending before it appears, so a failure later
	 * in this transaction removes it. */
	if ((st = push_path(&zoo->pending, &zoo->n_pending, path, err))) {
		zm_writer_abort(w);
		return st;
	}
	if ((st = zm_writer_commit(w, err)) != ZM_OK)
		return st;
	if (e && (st = entry_from_doc(e, doc, rel, err)) != ZM_OK)
		return st;
	if (!e) {
		struct zm_zoo_entry *grown = zm_realloc(zoo->models,
			(zoo->n_models + 1) * sizeof(*grown));
		if (!grown)
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		zoo->models = grown;
		e = &zoo->models[zoo->n_models];
		memset(e, 0, sizeof(*e));
		if (!(e->name = zm_strdup(name)))
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		zoo->n_models++;
		if ((st = entry_from_doc(e, doc, rel, err)) != ZM_OK)
			return st;
	}
	versions = zm_realloc(e->versions, (e->n_versions + 1) *
	                      sizeof(*versions));
	if (!versions)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	e->versions = versions;
	e->versions[e->n_versions++] = v;
	free(e->file);
	if (!(e->file = zm_strdup(rel)))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	e->version = v;
	/* Retention: drop the oldest versions beyond keep, never the current. */
	while (zoo->keep > 0 && e->n_versions > (size_t)zoo->keep) {
		snprintf(rel, sizeof(rel), "models/%s/v%" PRId64
		         ".safetensors.gz", name, e->versions[0]);
		ZM_ASSERT(zm_zoo_path(zoo, rel, path, sizeof(path)));
		if ((st = push_path(&zoo->doomed, &zoo->n_doomed, path, err)))
			return st;
		memmove(e->versions, e->versions + 1,
		        (e->n_versions - 1) * sizeof(*e->versions));
		e->n_versions--;
	}
	*version = v;
	return ZM_OK;
}

/* Reads the header of version v of model name into doc. */
static enum zm_status read_version_header(const struct zm_zoo *zoo,
                                          const char *rel,
                                          struct zm_doc *doc,
                                          struct zm_error *err)
{
	char path[ZM_PATH_MAX];
	struct zm_reader *r = NULL;
	enum zm_status st;
	bool eof = false;

	ZM_ASSERT(zm_zoo_path(zoo, rel, path, sizeof(path)));
	if ((st = zm_reader_open(&r, path, err)) != ZM_OK)
		return st;
	st = zm_reader_next_header(r, doc, &eof, err);
	if (st == ZM_OK && eof)
		st = zm_error_set(err, ZM_ERR_FORMAT, "%s: empty model file",
		                  path);
	zm_reader_close(r);
	return st;
}

static bool retained(const struct zm_zoo_entry *e, int64_t v)
{
	size_t i;

	for (i = 0; i < e->n_versions; i++)
		if (e->versions[i] == v)
			return true;
	return false;
}

enum zm_status zm_zoo_rollback_to(struct zm_zoo *zoo, const char *name,
                                  int64_t to, struct zm_error *err)
{
	struct zm_zoo_entry *e;
	char rel[ZM_PATH_MAX], path[ZM_PATH_MAX];
	struct zm_doc doc;
	enum zm_status st;
	size_t i;

	ZM_ASSERT(zoo->writable);
	if ((st = zm_zoo_get(zoo, name, &e, err)) != ZM_OK)
		return st;
	zm_doc_init(&doc);
	if (to == 0) {
		const char *p;
		int64_t parent = 0;
		/* The version the current one was made from, when kept. */
		if (read_version_header(zoo, e->file, &doc, err) == ZM_OK &&
		    (p = zm_doc_meta(&doc, ZM_META_PARENT)))
			parent = strtoll(p, NULL, 10);
		zm_doc_release(&doc);
		if (parent > 0 && parent < e->version && retained(e, parent))
			to = parent;
		for (i = e->n_versions; to == 0 && i-- > 0;)
			if (e->versions[i] < e->version)
				to = e->versions[i];
		if (to == 0)
			return zm_error_set(err, ZM_ERR_NOTFOUND,
			                    "model '%s': no version before v%"
			                    PRId64 " is retained", name,
			                    e->version);
	}
	snprintf(rel, sizeof(rel), "models/%s/v%" PRId64 ".safetensors.gz",
	         name, to);
	ZM_ASSERT(zm_zoo_path(zoo, rel, path, sizeof(path)));
	if (!retained(e, to) || access(path, R_OK) != 0) {
		struct zm_buf b;
		zm_buf_init(&b);
		for (i = 0; i < e->n_versions; i++)
			zm_buf_printf(&b, "%sv%" PRId64, i ? ", " : "",
			              e->versions[i]);
		st = zm_error_set(err, ZM_ERR_NOTFOUND, "model '%s': v%" PRId64
		                  " is not retained (retained: %s)", name, to,
		                  b.failed || !b.data ? "?" : b.data);
		zm_buf_release(&b);
		return st;
	}
	if ((st = read_version_header(zoo, rel, &doc, err)) == ZM_OK)
		st = entry_from_doc(e, &doc, rel, err);
	zm_doc_release(&doc);
	if (st != ZM_OK)
		return st;
	free(e->file);
	if (!(e->file = zm_strdup(rel)))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	e->version = to;
	return ZM_OK;
}

enum zm_status zm_zoo_rollback(struct zm_zoo *zoo, const char *name,
                               struct zm_error *err)
{
	return zm_zoo_rollback_to(zoo, name, 0, err);
}

/* ---- rendering and committing ---- */

static void yaml_kv_map(struct zm_buf *b, const char *key,
                        const struct zm_kv_list *l)
{
	size_t i;

	if (l->count == 0)
		return;
	zm_buf_printf(b, "    %s: {", key);
	for (i = 0; i < l->count; i++) {
		zm_buf_puts(b, i ? ", " : "");
		zm_yaml_scalar(b, l->items[i].key, false);
		zm_buf_puts(b, ": ");
		zm_yaml_scalar(b, l->items[i].value, true);
	}
	zm_buf_puts(b, "}\n");
}

enum zm_status zm_zoo_to_yaml(const struct zm_zoo *zoo, char **text,
                              struct zm_error *err)
{
	struct zm_buf b;
	size_t i, j;

	zm_buf_init(&b);
	zm_buf_puts(&b, "# zoomerge zoo index; written by the zoomerge tools.\n");
	if (zoo->keep)
		zm_buf_printf(&b, "keep: %" PRId64 "\n", zoo->keep);
	zm_buf_puts(&b, zoo->n_models ? "models:\n" : "models: []\n");
	for (i = 0; i < zoo->n_models; i++) {
		const struct zm_zoo_entry *e = &zoo->models[i];
		zm_buf_puts(&b, "  - name: ");
		zm_yaml_scalar(&b, e->name, false);
		zm_buf_printf(&b, "\n    version: %" PRId64 "\n    file: ",
		              e->version);
		zm_yaml_scalar(&b, e->file, false);
		zm_buf_puts(&b, "\n    versions: [");
		for (j = 0; j < e->n_versions; j++)
			zm_buf_printf(&b, "%s%" PRId64, j ? ", " : "",
			              e->versions[j]);
		zm_buf_puts(&b, "]\n");
		if (e->params)
			zm_buf_printf(&b, "    params: %" PRId64 "\n", e->params);
		yaml_kv_map(&b, "tags", &e->tags);
		yaml_kv_map(&b, "metrics", &e->metrics);
		yaml_kv_map(&b, "hparams", &e->hparams);
		if (e->origin) {
			zm_buf_puts(&b, "    origin: ");
			zm_yaml_scalar(&b, e->origin, false);
			zm_buf_puts(&b, "\n");
		}
	}
	if (b.failed) {
		zm_buf_release(&b);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	*text = b.data;
	return ZM_OK;
}

enum zm_status zm_zoo_commit(struct zm_zoo *zoo, struct zm_error *err)
{
	char path[ZM_PATH_MAX];
	char *text = NULL;
	enum zm_status st;
	size_t i;

	ZM_ASSERT(zoo->writable);
	st = zm_zoo_to_yaml(zoo, &text, err);
	if (st != ZM_OK)
		return st;
	snprintf(path, sizeof(path), "%s/zoo.yaml", zoo->dir);
	st = zm_write_file_atomic(path, text, strlen(text), err);
	free(text);
	if (st != ZM_OK)
		return st;	/* zm_zoo_close removes the pending files */
	free_list(zoo->pending, zoo->n_pending);
	zoo->pending = NULL;
	zoo->n_pending = 0;
	free_list(zoo->new_dirs, zoo->n_new_dirs);
	zoo->new_dirs = NULL;
	zoo->n_new_dirs = 0;
	zoo->made_dir = false;
	for (i = 0; i < zoo->n_doomed; i++)
		unlink(zoo->doomed[i]);
	free_list(zoo->doomed, zoo->n_doomed);
	zoo->doomed = NULL;
	zoo->n_doomed = 0;
	return ZM_OK;
}
