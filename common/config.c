/*
 * libyaml event stream -> node tree with positions.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "config.h"
#include "mem.h"

enum { MAX_DEPTH = 64 };

static void node_free_one(struct zm_node *n)
{
	size_t i;

	if (!n)
		return;
	for (i = 0; i < n->count; i++) {
		node_free_one(n->items[i]);
		if (n->keys)
			node_free_one(n->keys[i]);
	}
	free(n->items);
	free(n->keys);
	free(n->value);
	free(n);
}

void zm_node_free(struct zm_node *root)
{
	char *source;

	if (!root)
		return;
	source = (char *)root->source;
	node_free_one(root);
	free(source);
}

static struct zm_node *node_new(enum zm_node_type type, const yaml_mark_t *m,
                                const char *source)
{
	struct zm_node *n = zm_calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->type = type;
	n->line = (int)m->line + 1;
	n->col = (int)m->column + 1;
	n->source = source;
	return n;
}

/* Appends child to a sequence, or as key or value of a map. */
static bool node_append(struct zm_node *parent, struct zm_node *child,
                        bool as_key)
{
	if (parent->type == ZM_NODE_MAP && !as_key) {
		parent->items[parent->count - 1] = child;
		return true;
	}
	if ((parent->count & (parent->count - 1)) == 0) {
		size_t cap = parent->count ? parent->count * 2 : 4;
		struct zm_node **items, **keys = NULL;
		if (cap > SIZE_MAX / sizeof(*items))
			return false;
		items = zm_realloc(parent->items, cap * sizeof(*items));
		if (!items)
			return false;
		parent->items = items;
		if (parent->type == ZM_NODE_MAP) {
			keys = zm_realloc(parent->keys, cap * sizeof(*keys));
			if (!keys)
				return false;
			parent->keys = keys;
		}
	}
	if (parent->type == ZM_NODE_MAP) {
		parent->keys[parent->count] = child;
		parent->items[parent->count] = NULL;
	} else {
		parent->items[parent->count] = child;
	}
	parent->count++;
	return true;
}

static enum zm_status mark_error(struct zm_error *err, const char *source,
                                 const yaml_mark_t *m, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static enum zm_status mark_error(struct zm_error *err, const char *source,
                                 const yaml_mark_t *m, const char *fmt, ...)
{
	char msg[ZM_ERROR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return zm_error_set(err, ZM_ERR_CONFIG, "%s:%zu:%zu: %s", source,
	                    (size_t)m->line + 1, (size_t)m->column + 1, msg);
}

static bool map_has_key(const struct zm_node *map, const char *key,
                        size_t len)
{
	size_t i;

	for (i = 0; i < map->count; i++) {
		const struct zm_node *k = map->keys[i];
		if (k->type == ZM_NODE_SCALAR && k->len == len &&
		    memcmp(k->value, key, len) == 0)
			return true;
	}
	return false;
}

/* The tree being built from the parser's events. */
struct builder {
	struct zm_node *stack[MAX_DEPTH + 1];
	bool key_next[MAX_DEPTH + 1];	/* map at this depth expects a key */
	int depth;
	struct zm_node *top;
	char *src;
};

/* The node a scalar, sequence-start or mapping-start event makes; NULL
 * when out of memory. */
static struct zm_node *node_from_event(const yaml_event_t *event,
                                       const char *src)
{
	struct zm_node *n = NULL;

	switch (event->type) {
	case YAML_SCALAR_EVENT:
		n = node_new(ZM_NODE_SCALAR, &event->start_mark, src);
		if (n) {
			n->value = zm_strndup((const char *)event->data.scalar.value,
			                      event->data.scalar.length);
			n->len = event->data.scalar.length;
			n->plain = event->data.scalar.style ==
			           YAML_PLAIN_SCALAR_STYLE;
			if (!n->value) {
				free(n);
				n = NULL;
			}
		}
		break;
	case YAML_SEQUENCE_START_EVENT:
		n = node_new(ZM_NODE_SEQ, &event->start_mark, src);
		break;
	case YAML_MAPPING_START_EVENT:
		n = node_new(ZM_NODE_MAP, &event->start_mark, src);
		break;
	default:
		break;
	}
	return n;
}

/* Hangs the new node n (NULL: out of memory) into the tree: as the root,
 * or as the next key or value of the open collection, which it then
 * opens itself when it is one.  Errors set *done. */
static enum zm_status attach(struct builder *b, struct zm_node *n,
                             const yaml_event_t *event, bool *done,
                             struct zm_error *err)
{
	enum zm_status st = ZM_OK;
	bool as_key = false;
	const char *src = b->src;

	if (!n) {
		*done = true;
		return zm_error_set(err, ZM_ERR_NOMEM, "%s: out of memory", src);
	} else if (b->depth == 0) {
		b->top = n;
	} else {
		struct zm_node *parent = b->stack[b->depth - 1];
		if (parent->type == ZM_NODE_MAP) {
			as_key = b->key_next[b->depth - 1];
			b->key_next[b->depth - 1] = !as_key;
			if (as_key && n->type != ZM_NODE_SCALAR) {
				st = mark_error(err, src, &event->start_mark,
				                "expected a scalar key");
				node_free_one(n);
				n = NULL;
				*done = true;
			} else if (as_key &&
			           map_has_key(parent, n->value, n->len)) {
				st = mark_error(err, src, &event->start_mark,
				                "duplicate key '%s'", n->value);
				node_free_one(n);
				n = NULL;
				*done = true;
			}
		}
		if (n && !node_append(parent, n, as_key)) {
			node_free_one(n);
			n = NULL;
			st = zm_error_set(err, ZM_ERR_NOMEM,
			                  "%s: out of memory", src);
			*done = true;
		}
	}
	if (n && n->type != ZM_NODE_SCALAR) {
		if (b->depth >= MAX_DEPTH) {
			st = mark_error(err, src, &event->start_mark,
			                "nesting deeper than %d levels",
			                MAX_DEPTH);
			if (b->depth == 0)
				node_free_one(n);
			*done = true;
		} else {
			b->stack[b->depth] = n;
			b->key_next[b->depth] = true;
			b->depth++;
		}
	}
	return st;
}

enum zm_status zm_config_parse(const char *bytes, size_t len,
                               const char *source, struct zm_node **root,
                               struct zm_error *err)
{
	yaml_parser_t parser;
	yaml_event_t event;
	struct builder b;
	char *src;
	enum zm_status st = ZM_OK;
	bool done = false, seen_doc = false;

	*root = NULL;
	src = zm_strdup(source ? source : "-");
	if (!src)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	if (!yaml_parser_initialize(&parser)) {
		free(src);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)bytes, len);
	memset(&b, 0, sizeof(b));
	b.src = src;

	while (!done) {
		if (!yaml_parser_parse(&parser, &event)) {
			const yaml_mark_t *m = parser.problem_mark.line ||
			                       parser.problem_mark.column ?
			                       &parser.problem_mark :
			                       &parser.context_mark;
			if (parser.error == YAML_MEMORY_ERROR)
				st = zm_error_set(err, ZM_ERR_NOMEM,
				                  "%s: out of memory", src);
			else
				st = mark_error(err, src, m, "%s%s%s",
				                parser.problem ? parser.problem :
				                "syntax error",
				                parser.context ? " " : "",
				                parser.context ? parser.context : "");
			break;
		}
		switch (event.type) {
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		case YAML_DOCUMENT_START_EVENT:
			if (seen_doc) {
				st = mark_error(err, src, &event.start_mark,
				                "expected a single document");
				done = true;
			}
			seen_doc = true;
			break;
		case YAML_ALIAS_EVENT:
			st = mark_error(err, src, &event.start_mark,
			                "aliases are not supported");
			done = true;
			break;
		case YAML_SCALAR_EVENT:
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT:
			st = attach(&b, node_from_event(&event, src), &event,
			            &done, err);
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			b.depth--;
			break;
		default:
			break;
		}
		yaml_event_delete(&event);
	}
	yaml_parser_delete(&parser);
	/* A map with a dangling key (only possible after an error) is fixed up
	 * so the tree can be freed. */
	if (st != ZM_OK) {
		if (b.top)
			node_free_one(b.top);
		free(src);
		return st;
	}
	if (!b.top) {
		yaml_mark_t m = { 0, 0, 0 };
		b.top = node_new(ZM_NODE_MAP, &m, src);
		if (!b.top) {
			free(src);
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		}
	}
	*root = b.top;
	return ZM_OK;
}

enum zm_status zm_config_load(const char *path, struct zm_node **root,
                              struct zm_error *err)
{
	FILE *f;
	char *buf = NULL;
	size_t len = 0, cap = 0;
	enum zm_status st;
	bool is_stdin = strcmp(path, "-") == 0;

	*root = NULL;
	f = is_stdin ? stdin : fopen(path, "rb");
	if (!f)
		return zm_error_errno(err, errno == ENOENT ? ZM_ERR_NOTFOUND :
		                      ZM_ERR_IO, "%s", path);
	for (;;) {
		size_t got;
		if (len == cap) {
			char *nb;
			if (cap >= ((size_t)64 << 20)) {
				st = zm_error_set(err, ZM_ERR_CONFIG,
				                  "%s: larger than 64 MiB", path);
				goto out;
			}
			cap = cap ? cap * 2 : 4096;
			nb = zm_realloc(buf, cap);
			if (!nb) {
				st = zm_error_set(err, ZM_ERR_NOMEM,
				                  "%s: out of memory", path);
				goto out;
			}
			buf = nb;
		}
		got = fread(buf + len, 1, cap - len, f);
		len += got;
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		st = zm_error_errno(err, ZM_ERR_IO, "%s: read error", path);
		goto out;
	}
	st = zm_config_parse(buf, len, is_stdin ? "<stdin>" : path, root, err);
out:
	if (!is_stdin)
		fclose(f);
	free(buf);
	return st;
}

const struct zm_node *zm_node_get(const struct zm_node *map, const char *key)
{
	size_t i, len = strlen(key);

	if (!map || map->type != ZM_NODE_MAP)
		return NULL;
	for (i = 0; i < map->count; i++) {
		const struct zm_node *k = map->keys[i];
		if (k->len == len && memcmp(k->value, key, len) == 0)
			return map->items[i];
	}
	return NULL;
}

enum zm_status zm_node_error(const struct zm_node *node, struct zm_error *err,
                             enum zm_status status, const char *fmt, ...)
{
	char msg[ZM_ERROR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return zm_error_set(err, status, "%s:%d:%d: %s", node->source,
	                    node->line, node->col, msg);
}

static const char *type_name(enum zm_node_type t)
{
	return t == ZM_NODE_MAP ? "a mapping" :
	       t == ZM_NODE_SEQ ? "a list" : "a scalar";
}

enum zm_status zm_node_expect(const struct zm_node *node,
                              enum zm_node_type type, const char *what,
                              struct zm_error *err)
{
	if (node->type == type)
		return ZM_OK;
	return zm_node_error(node, err, ZM_ERR_CONFIG, "%s: expected %s, got %s",
	                     what, type_name(type), type_name(node->type));
}

bool zm_parse_int64(const char *text, int64_t *out)
{
	char *end;
	long long v;

	if (!*text)
		return false;
	errno = 0;
	v = strtoll(text, &end, 10);
	if (errno || *end || end == text)
		return false;
	*out = v;
	return true;
}

bool zm_parse_double(const char *text, double *out)
{
	char *end;
	double v;
	const char *p;

	if (!*text)
		return false;
	/* strtod honours the locale's decimal point; files always use '.'. */
	for (p = text; *p; p++)
		if (*p == ',')
			return false;
	errno = 0;
	v = strtod(text, &end);
	if (errno == ERANGE && fabs(v) > 1.0)
		return false;
	if (*end || end == text || !isfinite(v))
		return false;
	*out = v;
	return true;
}

/* "W,W,..." (config.h). */
bool zm_parse_weights(const char *text, size_t n, double *w,
                      const char **bad, size_t *bad_len)
{
	const char *p = text;
	size_t i;

	*bad = NULL;
	*bad_len = 0;
	for (i = 0; i < n; i++) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		char item[64];
		if ((comma != NULL) != (i + 1 < n))
			return false;
		if (len >= sizeof(item) || (memcpy(item, p, len),
		                            item[len] = '\0',
		                            !zm_parse_double(item, &w[i])) ||
		    w[i] < 0 || w[i] > 1e6) {
			*bad = p;
			*bad_len = len;
			return false;
		}
		p = comma ? comma + 1 : p + len;
	}
	return true;
}

/* "N[K|M|G]" (config.h). */
bool zm_parse_size(const char *text, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	errno = 0;
	if (!(*text >= '0' && *text <= '9'))
		return false;
	v = strtoull(text, &end, 10);
	if (errno)
		return false;
	switch (*end) {
	case 'K': shift = 10; end++; break;
	case 'M': shift = 20; end++; break;
	case 'G': shift = 30; end++; break;
	default: break;
	}
	if (*end || v == 0 || v > (UINT64_MAX >> shift))
		return false;
	*out = (uint64_t)v << shift;
	return true;
}

enum zm_status zm_node_int(const struct zm_node *node, const char *what,
                           int64_t min, int64_t max, int64_t *out,
                           struct zm_error *err)
{
	int64_t v;

	if (node->type != ZM_NODE_SCALAR || !zm_parse_int64(node->value, &v))
		return zm_node_error(node, err, ZM_ERR_CONFIG,
		                     "%s: expected an integer", what);
	if (v < min || v > max)
		return zm_node_error(node, err, ZM_ERR_CONFIG,
		                     "%s: expected an integer in [%lld, %lld], got %lld",
		                     what, (long long)min, (long long)max,
		                     (long long)v);
	*out = v;
	return ZM_OK;
}

enum zm_status zm_node_double(const struct zm_node *node, const char *what,
                              double min, double max, double *out,
                              struct zm_error *err)
{
	double v;

	if (node->type != ZM_NODE_SCALAR || !zm_parse_double(node->value, &v))
		return zm_node_error(node, err, ZM_ERR_CONFIG,
		                     "%s: expected a number", what);
	if (v < min || v > max)
		return zm_node_error(node, err, ZM_ERR_CONFIG,
		                     "%s: expected a number in [%g, %g], got %g",
		                     what, min, max, v);
	*out = v;
	return ZM_OK;
}

enum zm_status zm_node_bool(const struct zm_node *node, const char *what,
                            bool *out, struct zm_error *err)
{
	if (node->type == ZM_NODE_SCALAR) {
		if (!strcmp(node->value, "true") || !strcmp(node->value, "yes")) {
			*out = true;
			return ZM_OK;
		}
		if (!strcmp(node->value, "false") || !strcmp(node->value, "no")) {
			*out = false;
			return ZM_OK;
		}
	}
	return zm_node_error(node, err, ZM_ERR_CONFIG,
	                     "%s: expected true or false", what);
}

enum zm_status zm_node_string(const struct zm_node *node, const char *what,
                              const char **out, struct zm_error *err)
{
	if (node->type != ZM_NODE_SCALAR)
		return zm_node_error(node, err, ZM_ERR_CONFIG,
		                     "%s: expected a string, got %s", what,
		                     type_name(node->type));
	*out = node->value;
	return ZM_OK;
}

enum zm_status zm_node_check_keys(const struct zm_node *map,
                                  const char *const *allowed, const char *what,
                                  struct zm_error *err)
{
	size_t i;

	if (map->type != ZM_NODE_MAP)
		return zm_node_expect(map, ZM_NODE_MAP, what, err);
	for (i = 0; i < map->count; i++) {
		const char *const *a;
		for (a = allowed; *a; a++)
			if (!strcmp(map->keys[i]->value, *a))
				break;
		if (!*a)
			return zm_node_error(map->keys[i], err, ZM_ERR_CONFIG,
			                     "%s: unknown key '%s'", what,
			                     map->keys[i]->value);
	}
	return ZM_OK;
}

/* Plain scalars that YAML 1.1 would read as something other than a string. */
static bool yaml_plain_is_special(const char *s)
{
	static const char *const words[] = {
		"null", "Null", "NULL", "~", "true", "True", "TRUE", "false",
		"False", "FALSE", "yes", "Yes", "YES", "no", "No", "NO", "on",
		"On", "ON", "off", "Off", "OFF", "y", "Y", "n", "N", NULL,
	};
	const char *const *w;
	double d;

	for (w = words; *w; w++)
		if (!strcmp(s, *w))
			return true;
	return zm_parse_double(s, &d) || !strcmp(s, ".inf") ||
	       !strcmp(s, ".nan") || !strcmp(s, "-.inf");
}

void zm_yaml_scalar(struct zm_buf *b, const char *s, bool numeric)
{
	const char *p;

	if (numeric && zm_json_is_number(s)) {
		zm_buf_puts(b, s);
		return;
	}
	if (*s && !yaml_plain_is_special(s)) {
		for (p = s; *p; p++)
			if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			      (*p >= '0' && *p <= '9') || *p == '_' || *p == '.' ||
			      *p == '/' || (*p == '-' && p != s)))
				break;
		if (!*p) {
			zm_buf_puts(b, s);
			return;
		}
	}
	zm_json_string(b, s, strlen(s));
}

void zm_config_strings_free(char **s, size_t n)
{
	size_t i;

	if (!s)
		return;
	for (i = 0; i < n; i++)
		free(s[i]);
	free(s);
}

bool zm_config_string_list(const char *json, char ***out, size_t *n)
{
	struct zm_node *root = NULL;
	struct zm_error err;
	char **s = NULL;
	size_t i;
	bool ok = false;

	*out = NULL;
	*n = 0;
	if (zm_config_parse(json, strlen(json), "metadata", &root, &err) ||
	    root->type != ZM_NODE_SEQ)
		goto out;
	if (root->count && !(s = zm_calloc(root->count, sizeof(*s))))
		goto out;
	for (i = 0; i < root->count; i++) {
		if (root->items[i]->type != ZM_NODE_SCALAR ||
		    !(s[i] = zm_strdup(root->items[i]->value))) {
			zm_config_strings_free(s, root->count);
			goto out;
		}
	}
	*out = s;
	*n = root->count;
	ok = true;
out:
	zm_node_free(root);
	return ok;
}
