/*
 * JSON writer: escaping of every troublesome byte, replacement of invalid
 * UTF-8, float formatting that round-trips, and the growable buffer.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "mem.h"
#include "unit.h"

#define FFFD "\xef\xbf\xbd"

static const struct {
	const char *in;
	size_t len;
	const char *want;
} str_cases[] = {
	{ "plain", 5, "\"plain\"" },
	{ "", 0, "\"\"" },
	{ "a\"b", 3, "\"a\\\"b\"" },
	{ "back\\slash", 10, "\"back\\\\slash\"" },
	{ "l1\nl2\r\t", 7, "\"l1\\nl2\\r\\t\"" },
	{ "\b\f", 2, "\"\\b\\f\"" },
	{ "\x01\x1f", 2, "\"\\u0001\\u001f\"" },
	{ "a\0b", 3, "\"a\\u0000b\"" },
	/* Valid JSON raw, but the same text is written into YAML, whose
	 * readers refuse DEL and C1 controls and read NEL, LS and PS as line
	 * breaks (folded to a space): escaped.  Found by fuzz_zoo_index. */
	{ "\x7f", 1, "\"\\u007f\"" },
	{ "a\xc2\x80\xc2\x9f", 5, "\"a\\u0080\\u009f\"" },
	{ "\xc2\x85", 2, "\"\\u0085\"" },
	{ "\xc2\xa0", 2, "\"\xc2\xa0\"" },                  /* NBSP stays */
	{ "\xe2\x80\xa8\xe2\x80\xa9", 6, "\"\\u2028\\u2029\"" },
	{ "\xef\xbb\xbf", 3, "\"\\ufeff\"" },
	{ "\xef\xbf\xbe\xef\xbf\xbf", 6, "\"\\ufffe\\uffff\"" },
	{ "caf\xc3\xa9", 5, "\"caf\xc3\xa9\"" },            /* valid 2-byte */
	{ "\xe2\x82\xac", 3, "\"\xe2\x82\xac\"" },           /* euro sign */
	{ "\xf0\x9f\x98\x80", 4, "\"\xf0\x9f\x98\x80\"" },   /* 4-byte */
	{ "\xff", 1, "\"" FFFD "\"" },
	{ "x\xc3", 2, "\"x" FFFD "\"" },                      /* cut short */
	{ "\xc0\xaf", 2, "\"" FFFD FFFD "\"" },               /* overlong */
	{ "\xed\xa0\x80", 3, "\"" FFFD FFFD FFFD "\"" },      /* surrogate */
	{ "\xf4\x90\x80\x80", 4, "\"" FFFD FFFD FFFD FFFD "\"" }, /* > 10FFFF */
	{ "\xe2\x28\xa1", 3, "\"" FFFD "(" FFFD "\"" },
};

START_TEST(string_escaping)
{
	struct zm_buf b;

	zm_buf_init(&b);
	zm_json_string(&b, str_cases[_i].in, str_cases[_i].len);
	ck_assert(!b.failed);
	ck_assert_uint_eq(b.len, strlen(str_cases[_i].want));
	ck_assert_str_eq(b.data, str_cases[_i].want);
	zm_buf_release(&b);
}
END_TEST

/* Every float printed must read back (strtof) as the same bits. */
START_TEST(float_roundtrip)
{
	struct zm_buf b;
	uint32_t s = 12345;
	int i;

	for (i = 0; i < 20000; i++) {
		uint32_t bits;
		float f, back;
		s = s * 1664525u + 1013904223u;
		bits = s;
		memcpy(&f, &bits, sizeof(f));
		if (!isfinite(f))
			continue;
		zm_buf_init(&b);
		zm_json_float(&b, f);
		back = strtof(b.data, NULL);
		ck_assert_msg(memcmp(&back, &f, sizeof(f)) == 0 ||
		              (f == 0 && back == 0), "%s", b.data);
		ck_assert(strchr(b.data, ',') == NULL);
		zm_buf_release(&b);
	}
}
END_TEST

START_TEST(double_roundtrip)
{
	static const double v[] = { 0.1, 1.0 / 3.0, 1e-300, -2.5e300, 123456789.0 };
	struct zm_buf b;
	size_t i;

	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		zm_buf_init(&b);
		zm_json_double(&b, v[i]);
		ck_assert(strtod(b.data, NULL) == v[i]);
		zm_buf_release(&b);
	}
}
END_TEST

START_TEST(float_special)
{
	struct zm_buf b;

	zm_buf_init(&b);
	zm_json_float(&b, NAN);
	zm_buf_puts(&b, " ");
	zm_json_float(&b, INFINITY);
	zm_buf_puts(&b, " ");
	zm_json_double(&b, -INFINITY);
	zm_buf_puts(&b, " ");
	zm_json_float(&b, 0.5);
	zm_buf_puts(&b, " ");
	zm_json_float(&b, 0.1f);
	ck_assert_str_eq(b.data, "null null null 0.5 0.100000001");
	zm_buf_release(&b);
}
END_TEST

START_TEST(buf_growth)
{
	struct zm_buf b;
	char want[8192];
	size_t n = 0;
	int i;

	zm_buf_init(&b);
	for (i = 0; i < 300; i++) {
		zm_buf_printf(&b, "%d:%s;", i, i % 7 ? "x" :
		              "a-rather-long-string-to-force-the-second-vsnprintf-pass"
		              "-because-it-exceeds-sixty-four-bytes");
		n += (size_t)snprintf(want + n, sizeof(want) - n, "%d:%s;", i,
		                      i % 7 ? "x" :
		                      "a-rather-long-string-to-force-the-second-vsnprintf-pass"
		                      "-because-it-exceeds-sixty-four-bytes");
	}
	zm_buf_append(&b, "\0z", 2);
	ck_assert(!b.failed);
	ck_assert_uint_eq(b.len, n + 2);
	ck_assert(memcmp(b.data, want, n) == 0);
	ck_assert_int_eq(b.data[n], '\0');
	ck_assert_int_eq(b.data[n + 1], 'z');
	ck_assert_int_eq(b.data[n + 2], '\0');
	zm_buf_release(&b);
	ck_assert_ptr_null(b.data);
	ck_assert_uint_eq(b.len, 0);
}
END_TEST

/* A failed allocation sticks: later appends do nothing. */
START_TEST(buf_failure)
{
	struct zm_buf b;

	setenv("ZM_FAULT", "alloc:1", 1);
	zm_fault_reset();
	zm_buf_init(&b);
	zm_buf_puts(&b, "abc");
	ck_assert(b.failed);
	unsetenv("ZM_FAULT");
	zm_fault_reset();
	zm_buf_puts(&b, "def");
	zm_buf_printf(&b, "%d", 1);
	ck_assert(b.failed);
	ck_assert_uint_eq(b.len, 0);
	zm_buf_release(&b);
}
END_TEST

Suite *suite_json(void)
{
	Suite *s = suite_create("json");
	TCase *tc = tcase_create("json");

	tcase_add_loop_test(tc, string_escaping, 0,
	                    (int)(sizeof(str_cases) / sizeof(str_cases[0])));
	tcase_add_test(tc, float_roundtrip);
	tcase_add_test(tc, double_roundtrip);
	tcase_add_test(tc, float_special);
	tcase_add_test(tc, buf_growth);
	tcase_add_test(tc, buf_failure);
	suite_add_tcase(s, tc);
	return s;
}
