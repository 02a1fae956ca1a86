/*
 * Runs every Check suite of tests/unit and closes with "N passed, N failed".
 * CK_FORK (Check's default) isolates crashing tests; CK_FORK=no runs in one
 * process for debuggers and valgrind.  Check's per-test timeouts are off
 * (see main).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "model.h"
#include "stream.h"
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

void *unit_slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *text;
	long n;

	if (!f)
		return NULL;
	ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	ck_assert_int_ge(n, 0);
	rewind(f);
	text = malloc((size_t)n + 1);
	ck_assert_ptr_nonnull(text);
	ck_assert_uint_eq(fread(text, 1, (size_t)n, f), (size_t)n);
	text[n] = '\0';
	fclose(f);
	if (len)
		*len = (size_t)n;
	return text;
}

struct zm_arch *unit_arch(const char *yaml)
{
	struct zm_node *root;
	struct zm_arch *arch;
	struct zm_error err;

	if (zm_config_parse(yaml, strlen(yaml), "arch.yaml", &root, &err) != ZM_OK)
		ck_abort_msg("arch: %s", err.msg);
	if (zm_arch_parse(root, &arch, &err) != ZM_OK)
		ck_abort_msg("arch: %s", err.msg);
	zm_node_free(root);
	return arch;
}

struct zm_model *unit_model(const char *yaml, uint64_t seed)
{
	struct zm_arch *arch = unit_arch(yaml);
	struct zm_model *m;
	struct zm_error err;

	if (zm_model_new(arch, seed, &m, &err) != ZM_OK)
		ck_abort_msg("model: %s", err.msg);
	zm_arch_free(arch);
	return m;
}

void unit_write_model(const struct zm_model *m, const char *path)
{
	struct zm_writer *w;
	struct zm_doc doc;
	struct zm_error err;

	zm_doc_init(&doc);
	if (zm_model_to_doc(m, &doc, &err) != ZM_OK ||
	    zm_writer_open(&w, path, 1, &err) != ZM_OK)
		ck_abort_msg("%s: %s", path, err.msg);
	if (zm_writer_write_doc(w, &doc, &err) != ZM_OK ||
	    zm_writer_commit(w, &err) != ZM_OK)
		ck_abort_msg("%s: %s", path, err.msg);
	zm_doc_release(&doc);
}

int main(void)
{
	SRunner *sr;
	int run, failed;

	/* A test must not fail because the machine is slow or loaded (speed is
	 * for the benchmarks), so Check's timeouts are off: Check multiplies
	 * every test case's timeout, its default and tcase_set_timeout's
	 * alike, by CK_TIMEOUT_MULTIPLIER when the test case is made, and a
	 * zero timeout arms no timer.  Set before the suites are built; a
	 * value in the environment (say 1, for Check's own) wins. */
	setenv("CK_TIMEOUT_MULTIPLIER", "0", 0);
	sr = srunner_create(NULL);
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
