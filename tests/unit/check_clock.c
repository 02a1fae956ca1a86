/*
 * clock.h: zm_clock_seconds reads CLOCK_MONOTONIC, checked against readings
 * of that clock taken directly around it, and never goes back.
 */
#include <time.h>

#include "clock.h"
#include "unit.h"

static double direct_seconds(void)
{
	struct timespec ts;

	ck_assert_int_eq(clock_gettime(CLOCK_MONOTONIC, &ts), 0);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

START_TEST(test_clock_monotonic)
{
	double before, t, after, prev;
	int i;

	before = direct_seconds();
	t = zm_clock_seconds();
	after = direct_seconds();
	/* Within the readings around it (a double of a few days of uptime
	 * resolves well under a microsecond). */
	ck_assert(t >= before - 1e-6 && t <= after + 1e-6);
	prev = t;
	for (i = 0; i < 1000; i++) {
		t = zm_clock_seconds();
		ck_assert(t >= prev);
		prev = t;
	}
}
END_TEST

Suite *suite_clock(void)
{
	Suite *s = suite_create("clock");
	TCase *tc = tcase_create("clock");

	tcase_add_test(tc, test_clock_monotonic);
	suite_add_tcase(s, tc);
	return s;
}
