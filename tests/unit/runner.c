/*
 * Runs every Check suite of tests/unit and closes with "N passed, N failed".
 * CK_FORK (Check's default) isolates crashing tests; CK_FORK=no runs in one
 * process for debuggers and valgrind.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unit.h"

const char *unit_srcpath(const char *rel)
{
	static char buf[4096];
	const char *top = getenv("ZM_SRCDIR");

	snprintf(buf, sizeof(buf), "%s/%s", top ? top : "../..", rel);
	return buf;
}

const char *unit_tmpdir(void)
{
	static char buf[4096];
	const char *base = getenv("TMPDIR");

	snprintf(buf, sizeof(buf), "%s/zm-unit-XXXXXX", base ? base : "/tmp");
	if (!mkdtemp(buf)) {
		perror("mkdtemp");
		abort();
	}
	return buf;
}

size_t unit_count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

int main(void)
{
	SRunner *sr = srunner_create(NULL);
	int run, failed;

#define ZM_SUITE(name) srunner_add_suite(sr, suite_##name());
#include "suites.h"
#undef ZM_SUITE
	srunner_run_all(sr, CK_NORMAL);
	run = srunner_ntests_run(sr);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	printf("unit: %d passed, %d failed\n", run - failed, failed);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
