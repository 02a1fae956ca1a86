/*
 * A small JSON writer with correct escaping.  Parsing JSON goes through
 * config.h (libyaml reads JSON), so the library has one parser.
 */
#ifndef ZM_JSON_H
#define ZM_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* A growable text buffer.  Any failed append sets failed; check it once
 * at the end instead of after every call. */
struct zm_buf {
	char *data;          /* owned, NUL-terminated when len > 0 */
	size_t len, cap;
	bool failed;         /* an allocation failed */
};

void zm_buf_init(struct zm_buf *b);
void zm_buf_release(struct zm_buf *b);
void zm_buf_append(struct zm_buf *b, const void *data, size_t n);
void zm_buf_puts(struct zm_buf *b, const char *s);
void zm_buf_printf(struct zm_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Appends s (n bytes, may contain NUL) as a quoted JSON string, escaping
 * quotes, backslashes and control characters; invalid UTF-8 bytes are
 * written as U+FFFD so the output is always valid JSON. */
void zm_json_string(struct zm_buf *b, const char *s, size_t n);
/* Appends a float with round-trip precision ("%.9g"), or null when it is
 * not finite. */
void zm_json_float(struct zm_buf *b, double v);
void zm_json_double(struct zm_buf *b, double v);   /* "%.17g" */

/* True when s is exactly a JSON number (RFC 8259 grammar: no leading
 * zeros, '+', spaces, hex, "inf" or trailing dot), so it can be written
 * unquoted and reads back as the same text. */
bool zm_json_is_number(const char *s);

#endif
