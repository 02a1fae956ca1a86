/*
 * Documents in memory (stream.h): tensors and metadata in order, found by
 * name; what the stream reader fills and the writer serializes.
 */
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "stream.h"

/* ---- documents ---- */

void zm_doc_init(struct zm_doc *doc)
{
	doc->tensors = NULL;
	doc->n_tensors = 0;
	doc->meta = NULL;
	doc->n_meta = 0;
}

void zm_doc_release(struct zm_doc *doc)
{
	size_t i;

	if (!doc)
		return;
	for (i = 0; i < doc->n_tensors; i++)
		zm_tensor_release(&doc->tensors[i]);
	free(doc->tensors);
	for (i = 0; i < doc->n_meta; i++) {
		free(doc->meta[i].key);
		free(doc->meta[i].value);
	}
	free(doc->meta);
	zm_doc_init(doc);
}

struct zm_tensor *zm_doc_find(const struct zm_doc *doc, const char *name)
{
	size_t i;

	for (i = 0; i < doc->n_tensors; i++)
		if (doc->tensors[i].name && strcmp(doc->tensors[i].name, name) == 0)
			return &doc->tensors[i];
	return NULL;
}

/* Capacity grows in powers of two, so the arrays need no capacity field. */
static bool grow_pow2(void **arr, size_t count, size_t elem)
{
	size_t cap, bytes;
	void *n;

	if (count != 0 && (count & (count - 1)) != 0)
		return true;
	cap = count ? count * 2 : 4;
	if (!zm_size_mul(cap, elem, &bytes))
		return false;
	n = zm_realloc(*arr, bytes);
	if (!n)
		return false;
	*arr = n;
	return true;
}

enum zm_status zm_doc_add(struct zm_doc *doc, struct zm_tensor *t,
                          struct zm_error *err)
{
	ZM_ASSERT(t->name != NULL);
	if (zm_doc_find(doc, t->name))
		return zm_error_set(err, ZM_ERR_USAGE, "duplicate tensor '%s'",
		                    t->name);
	if (!grow_pow2((void **)&doc->tensors, doc->n_tensors,
	               sizeof(*doc->tensors)))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	doc->tensors[doc->n_tensors++] = *t;
	zm_tensor_init(t);
	return ZM_OK;
}

bool zm_doc_remove(struct zm_doc *doc, const char *name)
{
	struct zm_tensor *t = zm_doc_find(doc, name);
	size_t i;

	if (!t)
		return false;
	i = (size_t)(t - doc->tensors);
	zm_tensor_release(t);
	memmove(&doc->tensors[i], &doc->tensors[i + 1],
	        (doc->n_tensors - i - 1) * sizeof(*doc->tensors));
	doc->n_tensors--;
	return true;
}

const char *zm_doc_meta(const struct zm_doc *doc, const char *key)
{
	size_t i;

	for (i = 0; i < doc->n_meta; i++)
		if (strcmp(doc->meta[i].key, key) == 0)
			return doc->meta[i].value;
	return NULL;
}

enum zm_status zm_doc_set_meta(struct zm_doc *doc, const char *key,
                               const char *value, struct zm_error *err)
{
	char *v = zm_strdup(value);
	char *k;
	size_t i;

	if (!v)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (i = 0; i < doc->n_meta; i++) {
		if (strcmp(doc->meta[i].key, key) == 0) {
			free(doc->meta[i].value);
			doc->meta[i].value = v;
			return ZM_OK;
		}
	}
	k = zm_strdup(key);
	if (!k || !grow_pow2((void **)&doc->meta, doc->n_meta,
	                     sizeof(*doc->meta))) {
		free(k);
		free(v);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	doc->meta[doc->n_meta].key = k;
	doc->meta[doc->n_meta].value = v;
	doc->n_meta++;
	return ZM_OK;
}
