/*
 * Memory: overflow-checked size arithmetic and the allocator every library
 * allocation goes through, so that sizes read from files are validated in
 * one place and a test can make the N-th allocation fail.
 */
#ifndef ZM_MEM_H
#define ZM_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Elements of an array (not a pointer). */
#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

/* Stores a*b (a+b) in *out and returns true, or returns false on overflow. */
bool zm_size_mul(size_t a, size_t b, size_t *out);
bool zm_size_add(size_t a, size_t b, size_t *out);

/* malloc/calloc/realloc that fail (return NULL) when the fault injector
 * says so (see zm_fault_hit) or for a zero-byte request rounded up to one.
 * Free with free(). */
void *zm_malloc(size_t n);
void *zm_calloc(size_t count, size_t size);
void *zm_realloc(void *p, size_t n);
/* Duplicates s into zm_malloc'd memory; NULL on failure. */
char *zm_strdup(const char *s);
char *zm_strndup(const char *s, size_t n);
/* The strings up to a NULL argument joined, in zm_malloc'd memory; NULL on
 * failure. */
char *zm_strconcat(const char *first, ...) __attribute__((sentinel));

/*
 * Test-only fault injection.  ZM_FAULT="KIND:N" (KIND one of alloc, write,
 * fsync, rename, open) makes the N-th call of that kind fail, counting from
 * 1 (with "KIND:N:kill" the process kills itself with SIGKILL there
 * instead: a crash at a known point); ZM_FAULT_COUNT=FILE makes the
 * process append its call counts to FILE at exit so a test can sweep N
 * over every call.  Returns true when the
 * current call of kind must fail.
 */
bool zm_fault_hit(const char *kind);

/* Test-only: forgets the cached ZM_FAULT setting and zeroes the call
 * counts, so a unit test can setenv("ZM_FAULT") and have it take effect. */
void zm_fault_reset(void);

#endif
