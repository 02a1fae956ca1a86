/*
 * Checked sizes, the library allocator and the fault injector behind it.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mem.h"

bool zm_size_mul(size_t a, size_t b, size_t *out)
{
	if (b != 0 && a > SIZE_MAX / b)
		return false;
	*out = a * b;
	return true;
}

bool zm_size_add(size_t a, size_t b, size_t *out)
{
	if (a > SIZE_MAX - b)
		return false;
	*out = a + b;
	return true;
}

enum { FAULT_KINDS = 5 };
static const char *const fault_names[FAULT_KINDS] = {
	"alloc", "write", "fsync", "rename", "open",
};
static unsigned long fault_counts[FAULT_KINDS];
static int fault_kind = -2;	/* -2: not read yet, -1: off */
static unsigned long fault_at;
static bool fault_kill;		/* KIND:N:kill: SIGKILL instead of failing */
static const char *fault_count_file;

static void fault_report(void)
{
	char buf[FAULT_KINDS * 40];
	size_t len = 0;
	int i, fd;

	/* One write of the whole report, appended (the tests' processes
	 * share the file). */
	for (i = 0; i < FAULT_KINDS; i++)
		len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s %lu\n",
		                        fault_names[i], fault_counts[i]);
	fd = open(fault_count_file, O_WRONLY | O_APPEND | O_CREAT, 0666);
	if (fd < 0)
		return;
	(void)!write(fd, buf, len);
	close(fd);
}

static void fault_setup(void)
{
	static bool reported;	/* atexit once, however often we reset */
	const char *spec = getenv("ZM_FAULT");
	int i;

	fault_kind = -1;
	fault_count_file = getenv("ZM_FAULT_COUNT");
	if (fault_count_file && *fault_count_file) {
		if (!reported)
			atexit(fault_report);
		reported = true;
	} else {
		fault_count_file = NULL;
	}
	if (!spec || !*spec)
		return;
	for (i = 0; i < FAULT_KINDS; i++) {
		size_t len = strlen(fault_names[i]);
		if (strncmp(spec, fault_names[i], len) == 0 && spec[len] == ':') {
			char *end;
			errno = 0;
			fault_at = strtoul(spec + len + 1, &end, 10);
			fault_kill = strcmp(end, ":kill") == 0;
			if (errno == 0 && (*end == '\0' || fault_kill) &&
			    fault_at > 0)
				fault_kind = i;
			return;
		}
	}
}

bool zm_fault_hit(const char *kind)
{
	int i;

	if (fault_kind == -2)
		fault_setup();
	if (fault_kind == -1 && !fault_count_file)
		return false;
	for (i = 0; i < FAULT_KINDS; i++) {
		if (strcmp(kind, fault_names[i]) == 0) {
			/* Atomic: reader threads (prefetch.h) allocate too. */
			unsigned long nth = __atomic_add_fetch(&fault_counts[i], 1,
			                                       __ATOMIC_RELAXED);
			if (i != fault_kind || nth != fault_at)
				return false;
			/* A kill at this exact point simulates a crash or an
			 * OOM kill between two steps of a change. */
			if (fault_kill)
				raise(SIGKILL);
			return true;
		}
	}
	return false;
}

void zm_fault_reset(void)
{
	int i;

	for (i = 0; i < FAULT_KINDS; i++)
		fault_counts[i] = 0;
	fault_kind = -2;
}

void *zm_malloc(size_t n)
{
	if (zm_fault_hit("alloc")) {
		errno = ENOMEM;
		return NULL;
	}
	return malloc(n ? n : 1);
}

void *zm_calloc(size_t count, size_t size)
{
	if (zm_fault_hit("alloc")) {
		errno = ENOMEM;
		return NULL;
	}
	if (count == 0 || size == 0)
		count = size = 1;
	return calloc(count, size);
}

void *zm_realloc(void *p, size_t n)
{
	if (zm_fault_hit("alloc")) {
		errno = ENOMEM;
		return NULL;
	}
	return realloc(p, n ? n : 1);
}

char *zm_strndup(const char *s, size_t n)
{
	char *d = zm_malloc(n + 1);

	if (!d)
		return NULL;
	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

char *zm_strdup(const char *s)
{
	return zm_strndup(s, strlen(s));
}

char *zm_strconcat(const char *first, ...)
{
	va_list ap;
	const char *p;
	size_t len = 0, n;
	char *d, *o;

	va_start(ap, first);
	for (p = first; p; p = va_arg(ap, const char *))
		if (!zm_size_add(len, strlen(p), &len)) {
			va_end(ap);
			return NULL;
		}
	va_end(ap);
	if (!zm_size_add(len, 1, &len) || !(d = zm_malloc(len)))
		return NULL;
	o = d;
	va_start(ap, first);
	for (p = first; p; p = va_arg(ap, const char *)) {
		n = strlen(p);
		memcpy(o, p, n);
		o += n;
	}
	va_end(ap);
	*o = '\0';
	return d;
}
