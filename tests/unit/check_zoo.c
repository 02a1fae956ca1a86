/*
 * The zoo: creating and opening, versioned writes and what they put in the
 * index and on disk, rollback, retention deleting only after a commit,
 * changes that are never committed (or whose commit fails) leaving nothing
 * behind, the lock timeout, the zoo.yaml round trip with awkward values,
 * hostile indexes rejected at the right line and column, the key/value
 * JSON helpers, and the model-name rule.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "json.h"
#include "mem.h"
#include "stream.h"
#include "unit.h"
#include "zoo.h"

static const char *path_in(const char *dir, const char *rel)
{
	static char buf[4][8192];
	static int next;
	char *p = buf[next++ % 4];

	ck_assert_uint_lt(strlen(dir) + strlen(rel) + 2, sizeof(buf[0]));
	snprintf(p, sizeof(buf[0]), "%s/%s", dir, rel);
	return p;
}

static bool exists(const char *dir, const char *rel)
{
	struct stat sb;

	return stat(path_in(dir, rel), &sb) == 0;
}

static void spit(const char *path, const char *text)
{
	FILE *f = fopen(path, "wb");

	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fputs(text, f) >= 0, 1);
	ck_assert_int_eq(fclose(f), 0);
}

/* Number of directory entries other than "." and "..", recursively, and
 * whether any is a temporary file. */
static size_t count_tree(const char *dir, bool *temp)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0;

	if (!d)
		return 0;
	while ((de = readdir(d)) != NULL) {
		char sub[4096];
		struct stat sb;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (strstr(de->d_name, ".tmp."))
			*temp = true;
		n++;
		snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name);
		if (stat(sub, &sb) == 0 && S_ISDIR(sb.st_mode))
			n += count_tree(sub, temp);
	}
	closedir(d);
	return n;
}

/* A tiny document whose one tensor holds value, so files can be told
 * apart after they were written. */
static void make_doc(struct zm_doc *doc, float value)
{
	struct zm_tensor t;
	struct zm_error err;
	int64_t shape[1] = { 3 };
	int i;

	zm_doc_init(doc);
	zm_tensor_init(&t);
	ck_assert_int_eq(zm_tensor_alloc(&t, "w", ZM_DTYPE_F32, 1, shape, &err),
	                 ZM_OK);
	for (i = 0; i < 3; i++)
		((float *)t.data)[i] = value + (float)i;
	ck_assert_int_eq(zm_doc_add(doc, &t, &err), ZM_OK);
}

static int64_t put(struct zm_zoo *zoo, const char *name, float value)
{
	struct zm_doc doc;
	struct zm_error err;
	int64_t v = -1;

	make_doc(&doc, value);
	if (zm_zoo_put_model(zoo, name, &doc, &v, &err) != ZM_OK)
		ck_abort_msg("put_model %s: %s", name, err.msg);
	zm_doc_release(&doc);
	return v;
}

static void commit(struct zm_zoo *zoo)
{
	struct zm_error err;

	if (zm_zoo_commit(zoo, &err) != ZM_OK)
		ck_abort_msg("commit: %s", err.msg);
}

static struct zm_zoo *open_zoo(const char *dir, int flags)
{
	struct zm_zoo *zoo = NULL;
	struct zm_error err;

	if (zm_zoo_open(&zoo, dir, flags, &err) != ZM_OK)
		ck_abort_msg("open %s: %s", dir, err.msg);
	return zoo;
}

/* The first tensor value of the current version of name, read back. */
static float stored_value(const struct zm_zoo *zoo, const char *name,
                          struct zm_doc *doc)
{
	struct zm_zoo_entry *e;
	struct zm_error err;
	struct zm_tensor *t;

	ck_assert_int_eq(zm_zoo_get(zoo, name, &e, &err), ZM_OK);
	zm_doc_init(doc);
	if (zm_zoo_read_model(zoo, e, doc, &err) != ZM_OK)
		ck_abort_msg("read %s: %s", name, err.msg);
	t = zm_doc_find(doc, "w");
	ck_assert_ptr_nonnull(t);
	return ((const float *)t->data)[0];
}

START_TEST(test_open_create)
{
	char dir[4096];
	struct zm_zoo *zoo = NULL;
	struct zm_error err;
	char *text;

	snprintf(dir, sizeof(dir), "%s/zoo", unit_tmpdir());
	ck_assert_int_eq(zm_zoo_open(&zoo, dir, ZM_ZOO_READ, &err),
	                 ZM_ERR_NOTFOUND);
	ck_assert_ptr_null(zoo);
	ck_assert_ptr_nonnull(strstr(err.msg, dir));
	ck_assert_int_eq(zm_zoo_open(&zoo, dir, ZM_ZOO_WRITE, &err),
	                 ZM_ERR_NOTFOUND);
	ck_assert(!exists(dir, ""));

	zoo = open_zoo(dir, ZM_ZOO_WRITE | ZM_ZOO_CREATE);
	ck_assert(zoo->writable);
	ck_assert_uint_eq(zoo->n_models, 0);
	ck_assert(exists(dir, ".lock"));
	/* Created but not committed: there is no index yet. */
	ck_assert(!exists(dir, "zoo.yaml"));
	commit(zoo);
	zm_zoo_close(zoo);

	text = unit_slurp(path_in(dir, "zoo.yaml"), NULL);
	ck_assert_ptr_nonnull(text);
	ck_assert_ptr_nonnull(strstr(text, "models: []"));
	free(text);
	zoo = open_zoo(dir, ZM_ZOO_READ);
	ck_assert(!zoo->writable);
	ck_assert_uint_eq(zoo->n_models, 0);
	ck_assert_ptr_null(zm_zoo_find(zoo, "m"));
	{
		struct zm_zoo_entry *e = (void *)1;
		ck_assert_int_eq(zm_zoo_get(zoo, "m", &e, &err),
		                 ZM_ERR_NOTFOUND);
		ck_assert_ptr_null(e);
		ck_assert_ptr_nonnull(strstr(err.msg, "'m'"));
	}
	zm_zoo_close(zoo);

	/* A file is not a zoo directory. */
	spit(path_in(dir, "plain"), "x");
	ck_assert_int_eq(zm_zoo_open(&zoo, path_in(dir, "plain"),
	                             ZM_ZOO_WRITE | ZM_ZOO_CREATE, &err),
	                 ZM_ERR_USAGE);
}
END_TEST

START_TEST(test_versions)
{
	const char *dir = unit_tmpdir();
	struct zm_zoo *zoo = open_zoo(dir, ZM_ZOO_WRITE | ZM_ZOO_CREATE);
	struct zm_zoo_entry *e;
	struct zm_doc doc;
	char *text;

	ck_assert_int_eq(put(zoo, "m", 10), 1);
	ck_assert_int_eq(put(zoo, "m", 20), 2);
	ck_assert_int_eq(put(zoo, "other", 30), 1);
	commit(zoo);
	zm_zoo_close(zoo);

	ck_assert(exists(dir, "models/m/v1.safetensors.gz"));
	ck_assert(exists(dir, "models/m/v2.safetensors.gz"));
	ck_assert(exists(dir, "models/other/v1.safetensors.gz"));
	text = unit_slurp(path_in(dir, "zoo.yaml"), NULL);
	ck_assert_ptr_nonnull(strstr(text, "file: models/m/v2.safetensors.gz"));
	ck_assert_ptr_nonnull(strstr(text, "versions: [1, 2]"));
	free(text);

	zoo = open_zoo(dir, ZM_ZOO_READ);
	ck_assert_uint_eq(zoo->n_models, 2);
	e = zm_zoo_find(zoo, "m");
	ck_assert_ptr_nonnull(e);
	ck_assert_int_eq(e->version, 2);
	ck_assert_str_eq(e->file, "models/m/v2.safetensors.gz");
	ck_assert_uint_eq(e->n_versions, 2);
	ck_assert_int_eq(e->versions[0], 1);
	ck_assert_int_eq(e->versions[1], 2);
	ck_assert_float_eq(stored_value(zoo, "m", &doc), 20);
	/* put_model records the model's identity and lineage. */
	ck_assert_str_eq(zm_doc_meta(&doc, "zm.kind"), "model");
	ck_assert_str_eq(zm_doc_meta(&doc, "zm.name"), "m");
	ck_assert_str_eq(zm_doc_meta(&doc, "zm.version"), "2");
	ck_assert_str_eq(zm_doc_meta(&doc, "zm.parent"), "1");
	zm_doc_release(&doc);
	ck_assert_float_eq(stored_value(zoo, "other", &doc), 30);
	ck_assert_str_eq(zm_doc_meta(&doc, "zm.version"), "1");
	ck_assert_ptr_null(zm_doc_meta(&doc, "zm.parent"));
	zm_doc_release(&doc);
	zm_zoo_close(zoo);
}
END_TEST

/* A version whose metadata names its own metrics, hparams and origin,
 * all derived from value. */
static int64_t put_described(struct zm_zoo *zoo, const char *name,
                             float value)
{
	struct zm_doc doc;
	struct zm_error err;
	char text[128];
	int64_t v = -1;

	make_doc(&doc, value);
	snprintf(text, sizeof(text), "{\"accuracy\":%g}", value / 10);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.metrics", text, &err), ZM_OK);
	snprintf(text, sizeof(text), "{\"lr\":%g}", value / 1000);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.hparams", text, &err), ZM_OK);
	snprintf(text, sizeof(text), "init:%g", value);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.origin", text, &err), ZM_OK);
	if (zm_zoo_put_model(zoo, name, &doc, &v, &err) != ZM_OK)
		ck_abort_msg("put_model %s: %s", name, err.msg);
	zm_doc_release(&doc);
	return v;
}

/* The entry says what its current version's file says. */
static void assert_described(const struct zm_zoo *zoo, const char *name,
                             int64_t version, float value)
{
	struct zm_zoo_entry *e = zm_zoo_find(zoo, name);
	char text[64];

	ck_assert_ptr_nonnull(e);
	ck_assert_int_eq(e->version, version);
	snprintf(text, sizeof(text), "%g", value / 10);
	ck_assert_str_eq(zm_kv_get(&e->metrics, "accuracy"), text);
	snprintf(text, sizeof(text), "%g", value / 1000);
	ck_assert_str_eq(zm_kv_get(&e->hparams, "lr"), text);
	ck_assert_uint_eq(e->hparams.count, 1);
	snprintf(text, sizeof(text), "init:%g", value);
	ck_assert_str_eq(e->origin, text);
}

/* Rollback goes to the current version's parent, restores that version's
 * own metrics, hparams and origin, and --to picks any retained one. */
START_TEST(test_rollback_parent_and_to)
{
	const char *dir = unit_tmpdir();
	struct zm_zoo *zoo = open_zoo(dir, ZM_ZOO_WRITE | ZM_ZOO_CREATE);
	struct zm_error err;

	put_described(zoo, "m", 1);
	put_described(zoo, "m", 2);
	put_described(zoo, "m", 3);
	assert_described(zoo, "m", 3, 3);
	ck_assert_int_eq(zm_zoo_rollback(zoo, "m", &err), ZM_OK);
	assert_described(zoo, "m", 2, 2);
	/* v4 is made from v2; rolling back returns to v2, not to v3. */
	ck_assert_int_eq(put_described(zoo, "m", 4), 4);
	commit(zoo);
	zm_zoo_close(zoo);
	zoo = open_zoo(dir, ZM_ZOO_WRITE);
	assert_described(zoo, "m", 4, 4);
	ck_assert_int_eq(zm_zoo_rollback(zoo, "m", &err), ZM_OK);
	assert_described(zoo, "m", 2, 2);
	ck_assert_int_eq(zm_zoo_rollback_to(zoo, "m", 3, &err), ZM_OK);
	assert_described(zoo, "m", 3, 3);
	ck_assert_int_eq(zm_zoo_rollback_to(zoo, "m", 7, &err),
	                 ZM_ERR_NOTFOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "retained: v1, v2, v3, v4"));
	assert_described(zoo, "m", 3, 3);
	commit(zoo);
	zm_zoo_close(zoo);
	/* What was committed reads back the same. */
	zoo = open_zoo(dir, ZM_ZOO_READ);
	assert_described(zoo, "m", 3, 3);
	zm_zoo_close(zoo);
}
END_TEST

START_TEST(test_rollback)
{
	const char *dir = unit_tmpdir();
	struct zm_zoo *zoo = open_zoo(dir, ZM_ZOO_WRITE | ZM_ZOO_CREATE);
	struct zm_zoo_entry *e;
	struct zm_error err;
	struct zm_doc doc;

	put(zoo, "m", 1);
	put(zoo, "m", 2);
	commit(zoo);
	zm_zoo_close(zoo);

	zoo = open_zoo(dir, ZM_ZOO_WRITE);
	ck_assert_int_eq(zm_zoo_rollback(zoo, "m", &err), ZM_OK);
	commit(zoo);
	zm_zoo_close(zoo);
	zoo = open_zoo(dir, ZM_ZOO_WRITE);
	e = zm_zoo_find(zoo, "m");
	ck_assert_int_eq(e->version, 1);
	ck_assert_str_eq(e->file, "models/m/v1.safetensors.gz");
	ck_assert_float_eq(stored_value(zoo, "m", &doc), 1);
	zm_doc_release(&doc);
	/* Rolled-back versions stay on disk and in the list... */
	ck_assert_uint_eq(e->n_versions, 2);
	ck_assert(exists(dir, "models/m/v2.safetensors.gz"));
	/* ...so the next write is max + 1, whose parent is the current one. */
	ck_assert_int_eq(put(zoo, "m", 3), 3);
	commit(zoo);
	ck_assert_float_eq(stored_value(zoo, "m", &doc), 3);
	ck_assert_str_eq(zm_doc_meta(&doc, "zm.parent"), "1");
	zm_doc_release(&doc);

	/* A version whose file is gone is skipped: 3 -> 1. */
	ck_assert_int_eq(unlink(path_in(dir, "models/m/v2.safetensors.gz")), 0);
	ck_assert_int_eq(zm_zoo_rollback(zoo, "m", &err), ZM_OK);
	ck_assert_int_eq(zm_zoo_find(zoo, "m")->version, 1);
	/* Nothing before v1. */
	ck_assert_int_eq(zm_zoo_rollback(zoo, "m", &err), ZM_ERR_NOTFOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "v1"));
	ck_assert_int_eq(zm_zoo_find(zoo, "m")->version, 1);
	ck_assert_int_eq(zm_zoo_rollback(zoo, "nosuch", &err),
	                 ZM_ERR_NOTFOUND);
	zm_zoo_close(zoo);
	/* The uncommitted rollbacks are gone with the close. */
	zoo = open_zoo(dir, ZM_ZOO_READ);
	ck_assert_int_eq(zm_zoo_find(zoo, "m")->version, 3);
	zm_zoo_close(zoo);
}
END_TEST

START_TEST(test_keep)
{
	const char *dir = unit_tmpdir();
	struct zm_zoo *zoo = open_zoo(dir, ZM_ZOO_WRITE | ZM_ZOO_CREATE);
	struct zm_zoo_entry *e;
	char *text;

	put(zoo, "m", 1);
	put(zoo, "m", 2);
	commit(zoo);
	zm_zoo_close(zoo);

	zoo = open_zoo(dir, ZM_ZOO_WRITE);
	zoo->keep = 2;
	ck_assert_int_eq(put(zoo, "m", 3), 3);
	e = zm_zoo_find(zoo, "m");
	ck_assert_uint_eq(e->n_versions, 2);
	ck_assert_int_eq(e->versions[0], 2);
	/* v1 leaves the index at once but the disk only after the commit,
	 * so a reader of the old index can still open it. */
	ck_assert(exists(dir, "models/m/v1.safetensors.gz"));
	commit(zoo);
	ck_assert(!exists(dir, "models/m/v1.safetensors.gz"));
	ck_assert(exists(dir, "models/m/v2.safetensors.gz"));
	ck_assert(exists(dir, "models/m/v3.safetensors.gz"));
	zm_zoo_close(zoo);
	text = unit_slurp(path_in(dir, "zoo.yaml"), NULL);
	ck_assert_ptr_nonnull(strstr(text, "keep: 2\n"));
	ck_assert_ptr_nonnull(strstr(text, "versions: [2, 3]"));
	free(text);

	/* The setting persists; a change that is not committed deletes
	 * nothing. */
	zoo = open_zoo(dir, ZM_ZOO_WRITE);
	ck_assert_int_eq(zoo->keep, 2);
	ck_assert_int_eq(put(zoo, "m", 4), 4);
	zm_zoo_close(zoo);
	ck_assert(exists(dir, "models/m/v2.safetensors.gz"));
	ck_assert(exists(dir, "models/m/v3.safetensors.gz"));
	ck_assert(!exists(dir, "models/m/v4.safetensors.gz"));

	/* keep 1 keeps only the current version. */
	zoo = open_zoo(dir, ZM_ZOO_WRITE);
	zoo->keep = 1;
	ck_assert_int_eq(put(zoo, "m", 4), 4);
	commit(zoo);
	zm_zoo_close(zoo);
	ck_assert(!exists(dir, "models/m/v2.safetensors.gz"));
	ck_assert(!exists(dir, "models/m/v3.safetensors.gz"));
	ck_assert(exists(dir, "models/m/v4.safetensors.gz"));
}
END_TEST

START_TEST(test_uncommitted_leaves_nothing)
{
	const char *dir = unit_tmpdir();
	struct zm_zoo *zoo;
	bool temp = false;
	size_t before;
	char *index;

	/* A fresh zoo: models/ itself is new and must go too. */
	zoo = open_zoo(dir, ZM_ZOO_WRITE | ZM_ZOO_CREATE);
	put(zoo, "a", 1);
	put(zoo, "a", 2);
	zm_zoo_close(zoo);
	ck_assert(!exists(dir, "models"));
	ck_assert(!exists(dir, "zoo.yaml"));

	zoo = open_zoo(dir, ZM_ZOO_WRITE | ZM_ZOO_CREATE);
	put(zoo, "a", 1);
	commit(zoo);
	zm_zoo_close(zoo);
	index = unit_slurp(path_in(dir, "zoo.yaml"), NULL);
	before = count_tree(dir, &temp);

	zoo = open_zoo(dir, ZM_ZOO_WRITE);
	put(zoo, "a", 2);
	put(zoo, "b", 3);
	ck_assert(exists(dir, "models/b/v1.safetensors.gz"));
	zm_zoo_close(zoo);
	ck_assert_uint_eq(count_tree(dir, &temp), before);
	ck_assert(!temp);
	ck_assert(!exists(dir, "models/b"));
	ck_assert(!exists(dir, "models/a/v2.safetensors.gz"));
	{
		char *now = unit_slurp(path_in(dir, "zoo.yaml"), NULL);
		ck_assert_str_eq(now, index);
		free(now);
	}

	/* A commit that fails (the rename of the new index) leaves the
	 * old index and, after the close, no new files. */
	zoo = open_zoo(dir, ZM_ZOO_WRITE);
	put(zoo, "a", 2);
	put(zoo, "c", 4);
	setenv("ZM_FAULT", "rename:1", 1);
	zm_fault_reset();
	{
		struct zm_error err;
		ck_assert_int_ne(zm_zoo_commit(zoo, &err), ZM_OK);
	}
	unsetenv("ZM_FAULT");
	zm_fault_reset();
	zm_zoo_close(zoo);
	ck_assert_uint_eq(count_tree(dir, &temp), before);
	ck_assert(!temp);
	{
		char *now = unit_slurp(path_in(dir, "zoo.yaml"), NULL);
		ck_assert_str_eq(now, index);
		free(now);
	}
	free(index);
}
END_TEST

START_TEST(test_lock_timeout)
{
	const char *dir = unit_tmpdir();
	struct zm_zoo *writer = open_zoo(dir, ZM_ZOO_WRITE | ZM_ZOO_CREATE);
	struct zm_zoo *other = NULL;
	struct zm_error err;

	commit(writer);
	/* flock locks belong to the open file description, so a second
	 * open in this process contends like another process would. */
	setenv("ZM_LOCK_TIMEOUT", "0", 1);
	ck_assert_int_eq(zm_zoo_open(&other, dir, ZM_ZOO_WRITE, &err),
	                 ZM_ERR_IO);
	ck_assert_ptr_nonnull(strstr(err.msg, "locked"));
	ck_assert_int_eq(zm_zoo_open(&other, dir, ZM_ZOO_READ, &err),
	                 ZM_ERR_IO);
	zm_zoo_close(writer);
	other = open_zoo(dir, ZM_ZOO_READ);
	/* Readers share. */
	writer = open_zoo(dir, ZM_ZOO_READ);
	zm_zoo_close(writer);
	ck_assert_int_eq(zm_zoo_open(&writer, dir, ZM_ZOO_WRITE, &err),
	                 ZM_ERR_IO);
	zm_zoo_close(other);
	unsetenv("ZM_LOCK_TIMEOUT");
}
END_TEST

/* Values that YAML would turn into something else if written plainly. */
static const char *const awkward[][2] = {
	{ "source", "a" },
	{ "with space", "two words" },
	{ "quote", "say \"hi\" and 'bye'" },
	{ "yes", "yes" },
	{ "bool", "false" },
	{ "nul", "null" },
	{ "tilde", "~" },
	{ "empty", "" },
	{ "colon", "a: b" },
	{ "hash", "x #not a comment" },
	{ "dash", "-" },
	{ "list", "[1, 2]" },
	{ "map", "{a: 1}" },
	{ "star", "*ref" },
	{ "octal", "007" },
	{ "backslash", "C:\\dir\\" },
	{ "newline", "line1\nline2" },
	{ "tab", "a\tb" },
	{ "utf8", "caf\xc3\xa9" },
	/* Characters YAML refuses (DEL, C1) or reads as line breaks (NEL,
	 * LS): a tag holding one made the index unreadable. */
	{ "del", "a\x7f" "b" },
	{ "c1", "a\xc2\x81" "b" },
	{ "nel", "a\xc2\x85" "b" },
	{ "ls", "a\xe2\x80\xa8" "b" },
	{ "bom", "\xef\xbb\xbf" "x" },
	{ "int", "15000" },
	{ "float", "0.871" },
	{ "exp", "-1.5e-07" },
	{ "hex", "0x10" },
	{ "trail", "1 " },
	{ "inf", "inf" },
	/* strtod skips the blank: a writer that trusted it lost it. */
	{ "lead", " 1" },
};

START_TEST(test_yaml_round_trip)
{
	const char *dir = unit_tmpdir();
	struct zm_zoo *zoo = open_zoo(dir, ZM_ZOO_WRITE | ZM_ZOO_CREATE);
	struct zm_zoo_entry *e;
	struct zm_error err;
	struct zm_node *root;
	char *text, *again;
	size_t i, n = sizeof(awkward) / sizeof(awkward[0]);

	zoo->keep = 3;
	put(zoo, "m-0.x_y", 1);
	put(zoo, "m-0.x_y", 2);
	put(zoo, "plain", 3);
	e = zm_zoo_find(zoo, "m-0.x_y");
	e->params = 123456789012;
	for (i = 0; i < n; i++) {
		ck_assert_int_eq(zm_kv_set(&e->tags, awkward[i][0],
		                           awkward[i][1], &err), ZM_OK);
		ck_assert_int_eq(zm_kv_set(&e->metrics, awkward[i][0],
		                           awkward[i][1], &err), ZM_OK);
	}
	ck_assert_int_eq(zm_kv_set(&e->hparams, "lr", "0.1", &err), ZM_OK);
	ck_assert_int_eq(zm_zoo_to_yaml(zoo, &text, &err), ZM_OK);
	commit(zoo);
	zm_zoo_close(zoo);
	/* commit writes exactly what zm_zoo_to_yaml renders. */
	again = unit_slurp(path_in(dir, "zoo.yaml"), NULL);
	ck_assert_str_eq(again, text);
	free(again);

	/* An independent YAML reading of the text: every value is the
	 * string that was stored, whatever it looks like. */
	ck_assert_int_eq(zm_config_parse(text, strlen(text), "zoo.yaml", &root,
	                                 &err), ZM_OK);
	{
		const struct zm_node *models = zm_node_get(root, "models");
		const struct zm_node *m0, *tags, *metrics;
		ck_assert_ptr_nonnull(models);
		ck_assert_uint_eq(models->count, 2);
		m0 = models->items[0];
		tags = zm_node_get(m0, "tags");
		metrics = zm_node_get(m0, "metrics");
		ck_assert_ptr_nonnull(tags);
		ck_assert_ptr_nonnull(metrics);
		for (i = 0; i < n; i++) {
			const struct zm_node *v = zm_node_get(tags,
			                                      awkward[i][0]);
			ck_assert_msg(v != NULL, "tag %s missing", awkward[i][0]);
			ck_assert_str_eq(v->value, awkward[i][1]);
			v = zm_node_get(metrics, awkward[i][0]);
			ck_assert_ptr_nonnull(v);
			ck_assert_str_eq(v->value, awkward[i][1]);
		}
	}
	zm_node_free(root);
	/* Numbers stay numbers; words YAML 1.1 reads as booleans are
	 * quoted. */
	ck_assert_ptr_nonnull(strstr(text, "float: 0.871"));
	ck_assert_ptr_nonnull(strstr(text, "int: 15000"));
	ck_assert_ptr_null(strstr(text, ": yes"));
	ck_assert_ptr_null(strstr(text, ": null"));

	/* And through the zoo's own reader, which writes it back the same. */
	zoo = open_zoo(dir, ZM_ZOO_READ);
	ck_assert_int_eq(zoo->keep, 3);
	ck_assert_uint_eq(zoo->n_models, 2);
	e = zm_zoo_find(zoo, "m-0.x_y");
	ck_assert_int_eq(e->params, 123456789012);
	ck_assert_uint_eq(e->tags.count, n);
	ck_assert_uint_eq(e->metrics.count, n);
	for (i = 0; i < n; i++) {
		ck_assert_str_eq(zm_kv_get(&e->tags, awkward[i][0]),
		                 awkward[i][1]);
		ck_assert_str_eq(zm_kv_get(&e->metrics, awkward[i][0]),
		                 awkward[i][1]);
	}
	ck_assert_str_eq(zm_kv_get(&e->hparams, "lr"), "0.1");
	ck_assert_int_eq(zm_zoo_to_yaml(zoo, &again, &err), ZM_OK);
	ck_assert_str_eq(again, text);
	free(again);
	free(text);
	zm_zoo_close(zoo);
}
END_TEST

/* Hostile or broken indexes and where the error must point. */
static const struct {
	const char *yaml;
	const char *where;        /* "zoo.yaml:LINE:COL:" */
	const char *says;
} bad_index[] = {
	{ "models:\n  - {name: m0, version: 1, file: ../../etc/passwd}\n",
	  "zoo.yaml:2:34:", "not a path inside" },
	{ "models:\n  - {name: m0, version: 1, file: models/../../x}\n",
	  "zoo.yaml:2:34:", "not a path inside" },
	{ "models:\n  - {name: m0, version: 1, file: /etc/passwd}\n",
	  "zoo.yaml:2:34:", "not a path inside" },
	{ "models:\n  - {name: m0, version: 1, file: ..}\n",
	  "zoo.yaml:2:34:", "not a path inside" },
	{ "models:\n  - name: m0\n    version: 1\n    file: a\n"
	  "  - name: m0\n    version: 2\n    file: b\n",
	  "zoo.yaml:5:5:", "listed twice" },
	{ "models:\n  - {name: m0, version: 0, file: a}\n",
	  "zoo.yaml:2:25:", "version" },
	{ "models:\n  - {name: m0, version: -3, file: a}\n",
	  "zoo.yaml:2:25:", "version" },
	{ "models:\n  - {name: m0, version: two, file: a}\n",
	  "zoo.yaml:2:25:", "version" },
	{ "models:\n  - {name: m0, version: 1.5, file: a}\n",
	  "zoo.yaml:2:25:", "version" },
	{ "models:\n  - {name: m0, file: a}\n",
	  "zoo.yaml:2:5:", "missing 'version'" },
	{ "models:\n  - {name: m0, version: 1}\n",
	  "zoo.yaml:2:5:", "missing 'file'" },
	{ "models:\n  - {name: ../m0, version: 1, file: a}\n",
	  "zoo.yaml:2:12:", "invalid model name" },
	{ "models:\n  - {name: m0, version: 1, file: a, versions: [1, x]}\n",
	  "zoo.yaml:2:51:", "versions" },
	{ "models:\n  - {name: m0, version: 1, file: a, tags: [a]}\n",
	  "zoo.yaml:2:43:", "tags" },
	{ "keep: -1\nmodels: []\n", "zoo.yaml:1:7:", "keep" },
	{ "models: 3\n", "zoo.yaml:1:9:", "expected a list" },
	{ "models:\n  - name: m0\n    version: [\n", "zoo.yaml:", "" },
};

START_TEST(test_bad_index)
{
	const char *dir = unit_tmpdir();
	struct zm_zoo *zoo = (void *)1;
	struct zm_error err;

	spit(path_in(dir, "zoo.yaml"), bad_index[_i].yaml);
	ck_assert_int_eq(zm_zoo_open(&zoo, dir, ZM_ZOO_READ, &err),
	                 ZM_ERR_FORMAT);
	ck_assert_ptr_null(zoo);
	ck_assert_msg(strstr(err.msg, bad_index[_i].where) != NULL,
	              "case %d: '%s' lacks '%s'", _i, err.msg,
	              bad_index[_i].where);
	ck_assert_msg(strstr(err.msg, bad_index[_i].says) != NULL,
	              "case %d: '%s' lacks '%s'", _i, err.msg,
	              bad_index[_i].says);
	/* A writer refuses it just the same and changes nothing. */
	ck_assert_int_eq(zm_zoo_open(&zoo, dir, ZM_ZOO_WRITE, &err),
	                 ZM_ERR_FORMAT);
	{
		char *now = unit_slurp(path_in(dir, "zoo.yaml"), NULL);
		ck_assert_str_eq(now, bad_index[_i].yaml);
		free(now);
	}
}
END_TEST

/* The JSON number grammar (RFC 8259), written out by hand. */
static const char *json_number_end(const char *s)
{
	if (*s == '-')
		s++;
	if (*s == '0')
		s++;
	else if (*s >= '1' && *s <= '9')
		while (*s >= '0' && *s <= '9')
			s++;
	else
		return NULL;
	if (*s == '.') {
		s++;
		if (!(*s >= '0' && *s <= '9'))
			return NULL;
		while (*s >= '0' && *s <= '9')
			s++;
	}
	if (*s == 'e' || *s == 'E') {
		s++;
		if (*s == '+' || *s == '-')
			s++;
		if (!(*s >= '0' && *s <= '9'))
			return NULL;
		while (*s >= '0' && *s <= '9')
			s++;
	}
	return s;
}

START_TEST(test_kv_json)
{
	struct zm_kv_list l = { NULL, 0 }, back = { NULL, 0 };
	struct zm_error err;
	struct zm_buf b;
	size_t i;

	ck_assert_int_eq(zm_kv_from_json(&l, "{\"accuracy\": 0.871, "
	                                 "\"samples\": 15000, \"name\": \"a b\", "
	                                 "\"q\": \"say \\\"hi\\\"\", "
	                                 "\"e\": 1.5e-3, \"neg\": -2}",
	                                 "zm.metrics", &err), ZM_OK);
	ck_assert_uint_eq(l.count, 6);
	ck_assert_str_eq(zm_kv_get(&l, "accuracy"), "0.871");
	ck_assert_str_eq(zm_kv_get(&l, "samples"), "15000");
	ck_assert_str_eq(zm_kv_get(&l, "name"), "a b");
	ck_assert_str_eq(zm_kv_get(&l, "q"), "say \"hi\"");
	ck_assert_str_eq(zm_kv_get(&l, "e"), "1.5e-3");
	ck_assert_str_eq(zm_kv_get(&l, "neg"), "-2");
	ck_assert_ptr_null(zm_kv_get(&l, "missing"));

	/* Numbers go out as numbers, everything else as strings. */
	zm_buf_init(&b);
	zm_kv_to_json(&l, &b);
	ck_assert(!b.failed);
	zm_buf_puts(&b, "");
	ck_assert_str_eq(b.data, "{\"accuracy\":0.871,\"samples\":15000,"
	                 "\"name\":\"a b\",\"q\":\"say \\\"hi\\\"\","
	                 "\"e\":1.5e-3,\"neg\":-2}");
	ck_assert_int_eq(zm_kv_from_json(&back, b.data, "again", &err), ZM_OK);
	ck_assert_uint_eq(back.count, l.count);
	for (i = 0; i < l.count; i++)
		ck_assert_str_eq(zm_kv_get(&back, l.items[i].key),
		                 l.items[i].value);
	zm_buf_release(&b);
	zm_kv_release(&back);

	/* zm_kv_set replaces; an empty list is {}. */
	ck_assert_int_eq(zm_kv_set(&l, "samples", "7", &err), ZM_OK);
	ck_assert_uint_eq(l.count, 6);
	ck_assert_str_eq(zm_kv_get(&l, "samples"), "7");
	zm_kv_release(&l);
	ck_assert_uint_eq(l.count, 0);
	zm_buf_init(&b);
	zm_kv_to_json(&l, &b);
	ck_assert_str_eq(b.data, "{}");
	zm_buf_release(&b);

	/* Not flat, not an object, not JSON: ZM_ERR_FORMAT naming the
	 * source. */
	ck_assert_int_eq(zm_kv_from_json(&l, "{\"a\": [1, 2]}", "zm.metrics",
	                                 &err), ZM_ERR_FORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "zm.metrics"));
	zm_kv_release(&l);
	ck_assert_int_eq(zm_kv_from_json(&l, "{\"a\": {\"b\": 1}}", "src",
	                                 &err), ZM_ERR_FORMAT);
	zm_kv_release(&l);
	ck_assert_int_eq(zm_kv_from_json(&l, "[1, 2]", "src", &err),
	                 ZM_ERR_FORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "src"));
	zm_kv_release(&l);
	ck_assert_int_eq(zm_kv_from_json(&l, "{\"a\": ", "src", &err),
	                 ZM_ERR_FORMAT);
	zm_kv_release(&l);

	/* --tag syntax. */
	ck_assert_int_eq(zm_kv_parse_assignment(&l, "source=a=b", &err), ZM_OK);
	ck_assert_str_eq(zm_kv_get(&l, "source"), "a=b");
	ck_assert_int_eq(zm_kv_parse_assignment(&l, "empty=", &err), ZM_OK);
	ck_assert_str_eq(zm_kv_get(&l, "empty"), "");
	ck_assert_int_eq(zm_kv_parse_assignment(&l, "=v", &err), ZM_ERR_USAGE);
	ck_assert_int_eq(zm_kv_parse_assignment(&l, "novalue", &err),
	                 ZM_ERR_USAGE);
	ck_assert_uint_eq(l.count, 2);
	zm_kv_release(&l);
}
END_TEST

/* Whatever text a value holds (it comes from --tag and --hparam), the
 * JSON written for it is valid JSON that reads back to the same text. */
static const char *const kv_values[] = {
	"0", "12", "-2", "0.5", "1e5", "-1.5E-3", "abc", "", "0x10", "inf",
	"nan", "+1", ".5", "1e", "- 1", " 1", "1 ", "true", "null", "\"",
	"\\", "a\nb",
	/* strtod reads these, JSON does not: they must be quoted. */
	"1.", "01", "-.5", "1.e5",
};

START_TEST(test_kv_json_values)
{
	struct zm_kv_list l = { NULL, 0 }, back = { NULL, 0 };
	struct zm_error err;
	struct zm_buf b;
	const char *v = kv_values[_i], *p, *end;

	ck_assert_int_eq(zm_kv_set(&l, "k", v, &err), ZM_OK);
	zm_buf_init(&b);
	zm_kv_to_json(&l, &b);
	ck_assert(!b.failed);
	ck_assert(!strncmp(b.data, "{\"k\":", 5));
	p = b.data + 5;
	if (*p != '"') {
		end = json_number_end(p);
		ck_assert_msg(end != NULL && !strcmp(end, "}"),
		              "'%s' gives invalid JSON %s", v, b.data);
	}
	ck_assert_int_eq(zm_kv_from_json(&back, b.data, "t", &err), ZM_OK);
	ck_assert_str_eq(zm_kv_get(&back, "k"), v);
	zm_buf_release(&b);
	zm_kv_release(&back);
	zm_kv_release(&l);
}
END_TEST

static const struct {
	const char *name;
	bool ok;
} names[] = {
	{ "m0", true }, { "a", true }, { "0", true }, { "A-b_c.d", true },
	{ "fashion-mnist.v2", true }, { "a..b", true }, { "a-", true },
	{ "", false }, { "-a", false }, { "_a", false }, { ".a", false },
	{ ".", false }, { "..", false }, { "a/b", false }, { "a b", false },
	{ "a\n", false }, { "a:b", false }, { "caf\xc3\xa9", false },
	{ "a*", false },
	{ "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij123",
	  true },
	{ "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij1234",
	  false },
};

START_TEST(test_valid_name)
{
	ck_assert_msg(zm_zoo_valid_name(names[_i].name) == names[_i].ok,
	              "'%s' should be %s", names[_i].name,
	              names[_i].ok ? "valid" : "invalid");
}
END_TEST

START_TEST(test_put_refuses_bad_name)
{
	const char *dir = unit_tmpdir();
	struct zm_zoo *zoo = open_zoo(dir, ZM_ZOO_WRITE | ZM_ZOO_CREATE);
	struct zm_error err;
	struct zm_doc doc;
	int64_t v;

	make_doc(&doc, 1);
	ck_assert_int_eq(zm_zoo_put_model(zoo, "../evil", &doc, &v, &err),
	                 ZM_ERR_USAGE);
	zm_doc_release(&doc);
	zm_zoo_close(zoo);
	ck_assert(!exists(dir, "models"));
	ck_assert(!exists(dir, "../evil"));
}
END_TEST

/* A killed writer's temporaries are ignored by readers and removed by the
 * next writer, in the index's directory, in an indexed model's directory
 * and in the directory of a model that was being added (not indexed yet),
 * which goes too once empty; finished files and the index stay. */
START_TEST(test_stale_temps)
{
	char dir[4096];
	struct zm_zoo *zoo;
	struct zm_doc doc;
	char *before, *after;

	snprintf(dir, sizeof(dir), "%s/zoo", unit_tmpdir());
	zoo = open_zoo(dir, ZM_ZOO_WRITE | ZM_ZOO_CREATE);
	put(zoo, "m", 1);
	commit(zoo);
	zm_zoo_close(zoo);
	before = unit_slurp(path_in(dir, "zoo.yaml"), NULL);
	ck_assert_ptr_nonnull(before);
	ck_assert_int_eq(mkdir(path_in(dir, "models/fresh"), 0755), 0);
	ck_assert_int_eq(mkdir(path_in(dir, "models/orphan"), 0755), 0);
	spit(path_in(dir, ".zoo.yaml.tmp.AbC123"), "models: [");
	spit(path_in(dir, "models/m/.v2.safetensors.gz.tmp.XyZ789"), "half");
	spit(path_in(dir, "models/fresh/.v1.safetensors.gz.tmp.q1w2e3"), "h");
	spit(path_in(dir, "models/orphan/v1.safetensors.gz"), "renamed");

	zoo = open_zoo(dir, ZM_ZOO_READ);
	ck_assert_uint_eq(zoo->n_models, 1);
	ck_assert(stored_value(zoo, "m", &doc) == 1);
	zm_doc_release(&doc);
	zm_zoo_close(zoo);
	ck_assert(exists(dir, ".zoo.yaml.tmp.AbC123"));
	ck_assert(exists(dir, "models/fresh/.v1.safetensors.gz.tmp.q1w2e3"));

	zoo = open_zoo(dir, ZM_ZOO_WRITE);
	zm_zoo_close(zoo);
	ck_assert(!exists(dir, ".zoo.yaml.tmp.AbC123"));
	ck_assert(!exists(dir, "models/m/.v2.safetensors.gz.tmp.XyZ789"));
	ck_assert(!exists(dir, "models/fresh"));
	ck_assert(exists(dir, "models/m/v1.safetensors.gz"));
	ck_assert(exists(dir, "models/orphan/v1.safetensors.gz"));
	after = unit_slurp(path_in(dir, "zoo.yaml"), NULL);
	ck_assert_str_eq(after, before);
	free(before);
	free(after);
}
END_TEST

/* Keys are written as YAML implicit keys, which readers take only up to
 * 1024 characters: a longer one (here a multi-line flow key libyaml
 * accepts) is refused when read instead of being written into an index
 * no one can read again.  Found by fuzz_zoo_index. */
START_TEST(test_kv_long_keys)
{
	const char *dir = unit_tmpdir();
	struct zm_kv_list l = { NULL, 0 };
	struct zm_zoo *zoo = NULL;
	struct zm_error err;
	char key[1200], *text;
	size_t i;

	memset(key, 'k', sizeof(key) - 1);
	key[sizeof(key) - 1] = '\0';
	ck_assert_int_eq(zm_kv_set(&l, key, "v", &err), ZM_ERR_FORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "too long"));
	key[998] = '\0';
	ck_assert_int_eq(zm_kv_set(&l, key, "v", &err), ZM_OK);
	/* 200 control bytes are 1200 characters once escaped. */
	for (i = 0; i < 200; i++)
		key[i] = 1;
	key[200] = '\0';
	ck_assert_int_eq(zm_kv_set(&l, key, "v", &err), ZM_ERR_FORMAT);
	ck_assert_uint_eq(l.count, 1);
	zm_kv_release(&l);

	/* The index the fuzzer found, kept in its corpus. */
	text = unit_slurp(unit_srcpath("tests/fuzz/corpus/zoo_index/"
	                               "long-key.yaml"), NULL);
	ck_assert_ptr_nonnull(text);
	spit(path_in(dir, "zoo.yaml"), text);
	free(text);
	ck_assert_int_eq(zm_zoo_open(&zoo, dir, ZM_ZOO_READ, &err),
	                 ZM_ERR_FORMAT);
	ck_assert_ptr_null(zoo);
	ck_assert_msg(strstr(err.msg, "too long") != NULL, "%s", err.msg);
}
END_TEST

Suite *suite_zoo(void)
{
	Suite *s = suite_create("zoo");
	TCase *tc = tcase_create("zoo");

	tcase_add_test(tc, test_open_create);
	tcase_add_test(tc, test_versions);
	tcase_add_test(tc, test_rollback);
	tcase_add_test(tc, test_rollback_parent_and_to);
	tcase_add_test(tc, test_keep);
	tcase_add_test(tc, test_uncommitted_leaves_nothing);
	tcase_add_test(tc, test_lock_timeout);
	tcase_add_test(tc, test_yaml_round_trip);
	tcase_add_loop_test(tc, test_bad_index, 0,
	                    (int)(sizeof(bad_index) / sizeof(bad_index[0])));
	tcase_add_test(tc, test_kv_json);
	tcase_add_loop_test(tc, test_kv_json_values, 0,
	                    (int)(sizeof(kv_values) / sizeof(kv_values[0])));
	tcase_add_loop_test(tc, test_valid_name, 0,
	                    (int)(sizeof(names) / sizeof(names[0])));
	tcase_add_test(tc, test_put_refuses_bad_name);
	tcase_add_test(tc, test_stale_temps);
	tcase_add_test(tc, test_kv_long_keys);
	suite_add_tcase(s, tc);
	return s;
}
