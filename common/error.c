/*
 * Error reporting helpers: formatted messages in a fixed buffer, so that
 * reporting an out-of-memory condition never needs memory.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"

void zm_error_clear(struct zm_error *err)
{
	if (err) {
		err->status = ZM_OK;
		err->msg[0] = '\0';
	}
}

static void set_va(struct zm_error *err, enum zm_status status,
                   const char *fmt, va_list ap)
{
	err->status = status;
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
}

enum zm_status zm_error_set(struct zm_error *err, enum zm_status status,
                            const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return status;
	va_start(ap, fmt);
	set_va(err, status, fmt, ap);
	va_end(ap);
	return status;
}

enum zm_status zm_error_errno(struct zm_error *err, enum zm_status status,
                              const char *fmt, ...)
{
	int saved = errno;
	va_list ap;
	size_t len;

	if (!err)
		return status;
	va_start(ap, fmt);
	set_va(err, status, fmt, ap);
	va_end(ap);
	len = strlen(err->msg);
	snprintf(err->msg + len, sizeof(err->msg) - len, ": %s", strerror(saved));
	return status;
}

enum zm_status zm_error_prefix(struct zm_error *err, const char *fmt, ...)
{
	char prefix[ZM_ERROR_MAX];
	char old[ZM_ERROR_MAX];
	size_t plen, olen;
	va_list ap;

	if (!err)
		return ZM_ERR_IO;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix) / 2, fmt, ap);
	va_end(ap);
	memcpy(old, err->msg, sizeof(old));
	plen = strlen(prefix);
	olen = strnlen(old, sizeof(old) - 1);
	if (olen > sizeof(err->msg) - 1 - plen)
		olen = sizeof(err->msg) - 1 - plen;
	memcpy(err->msg, prefix, plen);
	memcpy(err->msg + plen, old, olen);
	err->msg[plen + olen] = '\0';
	return err->status;
}

enum zm_status zm_error_suffix(struct zm_error *err, const char *fmt, ...)
{
	size_t len;
	va_list ap;

	if (!err)
		return ZM_ERR_IO;
	len = strnlen(err->msg, sizeof(err->msg) - 1);
	va_start(ap, fmt);
	vsnprintf(err->msg + len, sizeof(err->msg) - len, fmt, ap);
	va_end(ap);
	return err->status;
}

int zm_status_exit_code(enum zm_status status)
{
	switch (status) {
	case ZM_OK:
		return 0;
	case ZM_ERR_USAGE:
	case ZM_ERR_CONFIG:
		return 2;
	default:
		return 1;
	}
}

const char *zm_status_name(enum zm_status status)
{
	static const char *const names[] = {
		"ok", "io", "format", "nomem", "data", "config", "usage",
		"notfound", "conflict",
	};
	if ((unsigned)status < sizeof(names) / sizeof(names[0]))
		return names[status];
	return "unknown";
}

void zm_assert_fail(const char *expr, const char *file, int line)
{
	char msg[1024];
	int n;

	/* Straight to the descriptor: the library has no stdio output, and
	 * a bug must be seen even when stderr's buffer is in a bad state. */
	n = snprintf(msg, sizeof(msg), "zoomerge: BUG: %s:%d: assertion "
	             "failed: %s\n", file, line, expr);
	if (n > 0)
		(void)!write(2, msg, (size_t)n < sizeof(msg) ? (size_t)n :
		             sizeof(msg) - 1);
	abort();
}
