/*
 * Status codes and error messages.  The library never prints and never
 * exits on bad input: every fallible function returns an enum zm_status and
 * fills a caller-owned struct zm_error whose message names the file,
 * document, tensor or line at fault.  Only cmd/ prints it.
 */
#ifndef ZM_ERROR_H
#define ZM_ERROR_H

#include <stdarg.h>

enum zm_status {
	ZM_OK = 0,
	ZM_ERR_IO,        /* a read, write, open, rename or fsync failed */
	ZM_ERR_FORMAT,    /* bytes that are not what the format says */
	ZM_ERR_NOMEM,     /* an allocation failed or a size limit was hit */
	ZM_ERR_DATA,      /* well-formed input with unusable values (NaN, shape) */
	ZM_ERR_CONFIG,    /* a configuration file is wrong (exit 2) */
	ZM_ERR_USAGE,     /* the caller asked for something impossible (exit 2) */
	ZM_ERR_NOTFOUND,  /* a named model, file or tensor does not exist */
	ZM_ERR_CONFLICT   /* the zoo changed under us (stale base version) */
};

#define ZM_ERROR_MAX 1024

struct zm_error {
	enum zm_status status;
	char msg[ZM_ERROR_MAX];
};

/* Clears err so that it reports success. */
void zm_error_clear(struct zm_error *err);

/* Sets status and a printf-style message; returns status for tail calls.
 * err may be NULL, in which case only the status is returned. */
enum zm_status zm_error_set(struct zm_error *err, enum zm_status status,
                            const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Like zm_error_set with the message of errno appended ("...: No such file"). */
enum zm_status zm_error_errno(struct zm_error *err, enum zm_status status,
                              const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Prepends context ("FILE: ") to an already set message; returns its status. */
enum zm_status zm_error_prefix(struct zm_error *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Appends context (" (--flag)") to an already set message; returns its
 * status.  What does not fit is cut. */
enum zm_status zm_error_suffix(struct zm_error *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* The exit status a program should use for a status: 0, 1, or 2 for usage
 * and configuration errors. */
int zm_status_exit_code(enum zm_status status);

/* Short name of a status, for logs. */
const char *zm_status_name(enum zm_status status);

/* Programmer errors (never bad input) abort with file and line. */
#define ZM_ASSERT(cond) \
	((cond) ? (void)0 : zm_assert_fail(#cond, __FILE__, __LINE__))
void zm_assert_fail(const char *expr, const char *file, int line)
	__attribute__((noreturn));

#endif
