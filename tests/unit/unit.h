/*
 * Shared declarations for the Check unit suites.  Each tests/unit/check_X.c
 * defines Suite *suite_X(void); the runner finds them by file name.
 */
#ifndef ZM_UNIT_H
#define ZM_UNIT_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

struct zm_arch;
struct zm_model;

#define ZM_SUITE(name) Suite *suite_##name(void);
#include "suites.h"
#undef ZM_SUITE

/* Path of a file under the source tree (ZM_SRCDIR), in a static buffer. */
const char *unit_srcpath(const char *rel);

/* A fresh temporary directory for the current test (removed by the runner
 * at exit only when all passed); returned path is static per call. */
const char *unit_tmpdir(void);

/* Number of entries in dir, "." and ".." aside (so a test can see that a
 * failed write left no temporary file behind). */
size_t unit_count_entries(const char *dir);

/* The whole content of a file, NUL-terminated, in new memory (free it);
 * NULL when it cannot be opened.  *len, when len is not NULL, is its
 * size. */
void *unit_slurp(const char *path, size_t *len);

/* The architecture in yaml; the test fails with the parser's message when
 * it does not parse.  Free with zm_arch_free. */
struct zm_arch *unit_arch(const char *yaml);

/* A model of the architecture in yaml, initialised from seed.  Free with
 * zm_model_free. */
struct zm_model *unit_model(const char *yaml, uint64_t seed);

/* Writes m as a model file at path; the test fails on an error. */
void unit_write_model(const struct zm_model *m, const char *path);

#endif
