/*
 * YAML/JSON trees: positions in error messages, typed getters, refusal of
 * aliases, duplicate keys and deep nesting.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "unit.h"

static struct zm_node *parse_ok(const char *text)
{
	struct zm_node *root = NULL;
	struct zm_error err;

	zm_error_clear(&err);
	ck_assert_msg(zm_config_parse(text, strlen(text), "t.yaml", &root,
	                              &err) == ZM_OK, "%s", err.msg);
	return root;
}

static const struct {
	const char *text;
	const char *prefix;	/* expected start of the message */
} bad_docs[] = {
	{ "a: 1\nb: [1, 2\n", "t.yaml:3:1: " },
	{ "a: 1\na: 2\n", "t.yaml:2:1: duplicate key 'a'" },
	{ "base: &x {a: 1}\nother: *x\n", "t.yaml:2:8: aliases" },
	{ "a:\n  - b\n c: 1\n", "t.yaml:3:" },
	{ "{\"a\": 1,, }", "t.yaml:1:" },
	{ "a: 1\n---\nb: 2\n", "t.yaml:2:1: expected a single document" },
	{ "? [1, 2]\n: x\n", "t.yaml:1:3: expected a scalar key" },
};

START_TEST(test_error_positions)
{
	struct zm_node *root = NULL;
	struct zm_error err;
	const char *text = bad_docs[_i].text;

	zm_error_clear(&err);
	ck_assert_int_eq(zm_config_parse(text, strlen(text), "t.yaml", &root,
	                                 &err), ZM_ERR_CONFIG);
	ck_assert_ptr_null(root);
	ck_assert_msg(strncmp(err.msg, bad_docs[_i].prefix,
	                      strlen(bad_docs[_i].prefix)) == 0,
	              "case %d: got '%s', want prefix '%s'", _i, err.msg,
	              bad_docs[_i].prefix);
}
END_TEST

START_TEST(test_json_header)
{
	/* Compact JSON as the reference safetensors writer emits it. */
	struct zm_node *root = parse_ok(
		"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],"
		"\"data_offsets\":[0,24]},\"__metadata__\":{\"k\":\"a\\\"b\\/c\\u00e9\"}}");
	const struct zm_node *w = zm_node_get(root, "w");
	const struct zm_node *shape, *meta;
	int64_t v;
	struct zm_error err;

	ck_assert_ptr_nonnull(w);
	shape = zm_node_get(w, "shape");
	ck_assert_int_eq(shape->type, ZM_NODE_SEQ);
	ck_assert_uint_eq(shape->count, 2);
	ck_assert_int_eq(zm_node_int(shape->items[1], "dim", 0, 100, &v, &err),
	                 ZM_OK);
	ck_assert_int_eq(v, 3);
	meta = zm_node_get(root, "__metadata__");
	ck_assert_str_eq(zm_node_get(meta, "k")->value, "a\"b/c\xc3\xa9");
	ck_assert_ptr_null(zm_node_get(root, "missing"));
	zm_node_free(root);
}
END_TEST

START_TEST(test_getters)
{
	struct zm_node *root = parse_ok(
		"n: 12\nx: 0.25\nb: true\ns: hello\nbig: 99999999999999999999\n"
		"neg: -3\nl: [1]\nq: \"12\"\n");
	struct zm_error err;
	int64_t i;
	double d;
	bool b;
	const char *s;

	ck_assert_int_eq(zm_node_int(zm_node_get(root, "n"), "n", 0, 100, &i,
	                             &err), ZM_OK);
	ck_assert_int_eq(i, 12);
	ck_assert_int_eq(zm_node_int(zm_node_get(root, "n"), "n", 0, 10, &i,
	                             &err), ZM_ERR_CONFIG);
	ck_assert_msg(strstr(err.msg, "t.yaml:1:4: n: expected an integer in [0, 10]"),
	              "%s", err.msg);
	ck_assert_int_eq(zm_node_int(zm_node_get(root, "big"), "big", 0,
	                             INT64_MAX, &i, &err), ZM_ERR_CONFIG);
	ck_assert_int_eq(zm_node_int(zm_node_get(root, "x"), "x", 0, 10, &i,
	                             &err), ZM_ERR_CONFIG);
	ck_assert_int_eq(zm_node_double(zm_node_get(root, "x"), "x", 0, 1, &d,
	                                &err), ZM_OK);
	ck_assert(d == 0.25);
	ck_assert_int_eq(zm_node_double(zm_node_get(root, "neg"), "neg", 0, 1,
	                                &d, &err), ZM_ERR_CONFIG);
	ck_assert_int_eq(zm_node_bool(zm_node_get(root, "b"), "b", &b, &err),
	                 ZM_OK);
	ck_assert(b);
	ck_assert_int_eq(zm_node_bool(zm_node_get(root, "s"), "s", &b, &err),
	                 ZM_ERR_CONFIG);
	ck_assert_int_eq(zm_node_string(zm_node_get(root, "s"), "s", &s, &err),
	                 ZM_OK);
	ck_assert_str_eq(s, "hello");
	ck_assert_int_eq(zm_node_string(zm_node_get(root, "l"), "l", &s, &err),
	                 ZM_ERR_CONFIG);
	ck_assert_msg(strstr(err.msg, "t.yaml:7:4:"), "%s", err.msg);
	ck_assert(zm_node_get(root, "q")->plain == false);
	ck_assert(zm_node_get(root, "n")->plain == true);
	zm_node_free(root);
}
END_TEST

START_TEST(test_check_keys)
{
	static const char *const allowed[] = { "name", "units", NULL };
	struct zm_node *root = parse_ok("name: a\nunits: 3\nunit: 4\n");
	struct zm_error err;

	ck_assert_int_eq(zm_node_check_keys(root, allowed, "layer", &err),
	                 ZM_ERR_CONFIG);
	ck_assert_str_eq(err.msg, "t.yaml:3:1: layer: unknown key 'unit'");
	zm_node_free(root);
}
END_TEST

START_TEST(test_deep_nesting_refused)
{
	char text[400];
	struct zm_node *root = NULL;
	struct zm_error err;
	int i;

	for (i = 0; i < 150; i++)
		text[i] = '[';
	for (i = 150; i < 300; i++)
		text[i] = ']';
	text[300] = '\0';
	ck_assert_int_eq(zm_config_parse(text, 300, "deep", &root, &err),
	                 ZM_ERR_CONFIG);
	ck_assert_msg(strstr(err.msg, "nesting"), "%s", err.msg);
}
END_TEST

START_TEST(test_empty_document)
{
	struct zm_node *root = parse_ok("");

	ck_assert_int_eq(root->type, ZM_NODE_MAP);
	ck_assert_uint_eq(root->count, 0);
	zm_node_free(root);
}
END_TEST

START_TEST(test_yaml_scalar_round_trip)
{
	static const char *const values[] = {
		"plain", "with space", "yes", "null", "1.5", "", "a: b",
		"-dash", "quote\"d", "tab\there", "line\nbreak", "models/m0/v1",
	};
	size_t i;

	for (i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
		struct zm_buf b;
		struct zm_node *root;
		zm_buf_init(&b);
		zm_buf_puts(&b, "k: ");
		zm_yaml_scalar(&b, values[i], false);
		zm_buf_puts(&b, "\n");
		ck_assert(!b.failed);
		root = parse_ok(b.data);
		ck_assert_str_eq(zm_node_get(root, "k")->value, values[i]);
		zm_node_free(root);
		zm_buf_release(&b);
	}
}
END_TEST

/* Sizes with a binary suffix, against the products written out. */
START_TEST(test_parse_size)
{
	uint64_t v;

	ck_assert(zm_parse_size("100", &v) && v == 100);
	ck_assert(zm_parse_size("3K", &v) && v == 3 * 1024);
	ck_assert(zm_parse_size("5M", &v) && v == 5 * 1024 * 1024);
	ck_assert(zm_parse_size("2G", &v) && v == 2ull * 1024 * 1024 * 1024);
	ck_assert(zm_parse_size("18446744073709551615", &v) &&
	          v == UINT64_MAX);
	ck_assert(zm_parse_size("17179869183G", &v) &&
	          v == 17179869183ull << 30);
	ck_assert(!zm_parse_size("17179869184G", &v));	/* 2^64 */
	ck_assert(!zm_parse_size("18446744073709551616", &v));
	ck_assert(!zm_parse_size("0", &v));
	ck_assert(!zm_parse_size("0K", &v));
	ck_assert(!zm_parse_size("", &v));
	ck_assert(!zm_parse_size("-1", &v));
	ck_assert(!zm_parse_size("+1", &v));
	ck_assert(!zm_parse_size(" 1", &v));
	ck_assert(!zm_parse_size("1k", &v));
	ck_assert(!zm_parse_size("1KB", &v));
	ck_assert(!zm_parse_size("K", &v));
}
END_TEST

/* Weights: the count must match, each item is checked and a bad one is
 * pointed at. */
START_TEST(test_parse_weights)
{
	double w[3];
	const char *bad, *text;
	size_t len;

	ck_assert(zm_parse_weights("1,0.5,2e3", 3, w, &bad, &len));
	ck_assert(w[0] == 1.0 && w[1] == 0.5 && w[2] == 2000.0);
	ck_assert(zm_parse_weights("0", 1, w, &bad, &len) && w[0] == 0.0);
	ck_assert(!zm_parse_weights("1,2", 3, w, &bad, &len));
	ck_assert_ptr_null(bad);
	ck_assert(!zm_parse_weights("1,2,3,4", 3, w, &bad, &len));
	ck_assert_ptr_null(bad);
	text = "1,x7,2";
	ck_assert(!zm_parse_weights(text, 3, w, &bad, &len));
	ck_assert_ptr_eq(bad, text + 2);
	ck_assert_uint_eq(len, 2);
	text = "1,-1,2";
	ck_assert(!zm_parse_weights(text, 3, w, &bad, &len));
	ck_assert_ptr_eq(bad, text + 2);
	ck_assert(!zm_parse_weights("1,2e6,2", 3, w, &bad, &len));
	ck_assert_uint_eq(len, 3);
	ck_assert(!zm_parse_weights("1,,2", 3, w, &bad, &len));
	ck_assert_uint_eq(len, 0);
	ck_assert(!zm_parse_weights("1,nan,2", 3, w, &bad, &len));
	ck_assert_uint_eq(len, 3);
}
END_TEST

Suite *suite_config(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("core");

	tcase_add_loop_test(tc, test_error_positions, 0,
	                    (int)(sizeof(bad_docs) / sizeof(bad_docs[0])));
	tcase_add_test(tc, test_json_header);
	tcase_add_test(tc, test_getters);
	tcase_add_test(tc, test_check_keys);
	tcase_add_test(tc, test_deep_nesting_refused);
	tcase_add_test(tc, test_empty_document);
	tcase_add_test(tc, test_yaml_scalar_round_trip);
	tcase_add_test(tc, test_parse_size);
	tcase_add_test(tc, test_parse_weights);
	suite_add_tcase(s, tc);
	return s;
}
