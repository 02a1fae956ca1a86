/*
 * Configuration trees: YAML (and JSON, which libyaml also parses) loaded
 * into plain nodes that remember their line and column, with typed getters
 * whose errors read "FILE:LINE:COLUMN: expected ...".
 *
 * Aliases are refused (they allow exponential documents) and nesting is
 * limited, so untrusted bytes cannot exhaust memory or the stack.
 */
#ifndef ZM_CONFIG_H
#define ZM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "json.h"

enum zm_node_type {
	ZM_NODE_SCALAR,
	ZM_NODE_SEQ,
	ZM_NODE_MAP
};

struct zm_node {
	enum zm_node_type type;
	int line, col;              /* 1-based position in the source */
	const char *source;         /* file name, owned by the root */
	/* Scalars: the text (NUL-terminated, may contain NUL when quoted). */
	char *value;
	size_t len;
	bool plain;                 /* unquoted scalar: may be a number/null */
	/* Sequences: items; maps: keys[i] -> items[i]. */
	size_t count;
	struct zm_node **items;
	struct zm_node **keys;
};

/*
 * Parses bytes as one YAML document (an empty document gives an empty map).
 * source names the input in messages.  On success *root is a new tree the
 * caller frees with zm_node_free; on failure *root is NULL and err says
 * "SOURCE:LINE:COLUMN: problem" (ZM_ERR_CONFIG, or ZM_ERR_NOMEM).
 */
enum zm_status zm_config_parse(const char *bytes, size_t len,
                               const char *source, struct zm_node **root,
                               struct zm_error *err);

/* Reads path ("-" for stdin) and parses it; errors as zm_config_parse,
 * plus ZM_ERR_IO / ZM_ERR_NOTFOUND for unreadable files. */
enum zm_status zm_config_load(const char *path, struct zm_node **root,
                              struct zm_error *err);

/* Frees a tree returned by zm_config_parse/zm_config_load; NULL is fine. */
void zm_node_free(struct zm_node *root);

/* The value of key in a map node, or NULL when absent or node is no map. */
const struct zm_node *zm_node_get(const struct zm_node *map, const char *key);

/* Sets err to "SOURCE:LINE:COL: message" for node and returns status. */
enum zm_status zm_node_error(const struct zm_node *node, struct zm_error *err,
                             enum zm_status status, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/*
 * Typed getters.  Each checks the node's type and range and on failure
 * returns ZM_ERR_CONFIG with "SOURCE:LINE:COL: expected ..." naming what.
 * what is the key or role of the node, used in the message.
 */
enum zm_status zm_node_expect(const struct zm_node *node,
                              enum zm_node_type type, const char *what,
                              struct zm_error *err);
enum zm_status zm_node_int(const struct zm_node *node, const char *what,
                           int64_t min, int64_t max, int64_t *out,
                           struct zm_error *err);
enum zm_status zm_node_double(const struct zm_node *node, const char *what,
                              double min, double max, double *out,
                              struct zm_error *err);
enum zm_status zm_node_bool(const struct zm_node *node, const char *what,
                            bool *out, struct zm_error *err);
/* *out points into the tree (valid while the tree lives). */
enum zm_status zm_node_string(const struct zm_node *node, const char *what,
                              const char **out, struct zm_error *err);

/*
 * Checks that every key of map is one of allowed (a NULL-terminated list),
 * so typos in configs are reported instead of silently ignored.
 */
enum zm_status zm_node_check_keys(const struct zm_node *map,
                                  const char *const *allowed, const char *what,
                                  struct zm_error *err);

/*
 * Appends s as a YAML scalar: plain when it reads back as the same string
 * (or, with numeric true, as the number it spells), else double-quoted
 * with JSON escapes (which YAML accepts).
 */
void zm_yaml_scalar(struct zm_buf *b, const char *s, bool numeric);

/* The strings of a JSON list (metadata such as zm.columns), as a new array
 * of n new strings (free with zm_config_strings_free); false when the text
 * is not a list of scalars or memory runs out. */
bool zm_config_string_list(const char *json, char ***out, size_t *n);
void zm_config_strings_free(char **s, size_t n);

/* Parses text as a whole number / finite double with nothing after it. */
bool zm_parse_int64(const char *text, int64_t *out);
bool zm_parse_double(const char *text, double *out);
/* Parses "N", "NK", "NM" or "NG" (powers of 1024) into *out > 0; false for
 * zero, a sign, another suffix or a value over UINT64_MAX. */
bool zm_parse_size(const char *text, uint64_t *out);
/*
 * Parses "W,W,..." into exactly n weights w[0..n), each a finite number in
 * [0, 1e6] (negating a model is a scale's job, not a weight's).  On failure
 * *bad points at the offending item in text and *bad_len is its length, or
 * *bad is NULL when the count of items is not n.
 */
bool zm_parse_weights(const char *text, size_t n, double *w,
                      const char **bad, size_t *bad_len);

#endif
