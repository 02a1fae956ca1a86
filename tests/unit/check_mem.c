/*
 * mem.h: checked size arithmetic at the edges of size_t, string joining,
 * and the allocation fault injector failing a join.
 */
#include <stdint.h>
#include <stdlib.h>

#include "mem.h"
#include "unit.h"

START_TEST(test_size_checks)
{
	size_t out;

	ck_assert(zm_size_mul(SIZE_MAX / 2, 2, &out) && out == SIZE_MAX - 1);
	ck_assert(!zm_size_mul(SIZE_MAX / 2 + 1, 2, &out));
	ck_assert(zm_size_add(SIZE_MAX - 1, 1, &out) && out == SIZE_MAX);
	ck_assert(!zm_size_add(SIZE_MAX, 1, &out));
}
END_TEST

START_TEST(test_strconcat)
{
	char *s = zm_strconcat("dir", "/", "name", ".safetensors.gz", NULL);

	ck_assert_str_eq(s, "dir/name.safetensors.gz");
	free(s);
	s = zm_strconcat("", NULL);
	ck_assert_str_eq(s, "");
	free(s);
	s = zm_strconcat("column.", "", NULL);
	ck_assert_str_eq(s, "column.");
	free(s);
	setenv("ZM_FAULT", "alloc:1", 1);
	zm_fault_reset();
	ck_assert_ptr_null(zm_strconcat("a", "b", NULL));
	unsetenv("ZM_FAULT");
	zm_fault_reset();
}
END_TEST

Suite *suite_mem(void)
{
	Suite *s = suite_create("mem");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_size_checks);
	tcase_add_test(tc, test_strconcat);
	suite_add_tcase(s, tc);
	return s;
}
