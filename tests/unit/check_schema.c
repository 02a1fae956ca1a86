/*
 * Schemas: name lists through metadata, the class map (by name, by
 * position for unknown targets, numbers as names, extension), label
 * mapping with its error naming the label, the feature map (reorder,
 * missing, extra), conforming a data document, adoption from updates,
 * and roles.
 */
#include <stdlib.h>
#include <string.h>

#include "schema.h"
#include "stream.h"
#include "tensor.h"
#include "unit.h"

/* names from a NULL-terminated list; NULL first: unknown. */
static void names(struct zm_names *s, const char *const *v)
{
	struct zm_error err;

	zm_names_init(s);
	for (; v && *v; v++)
		ck_assert_int_eq(zm_names_add(s, *v, &err), ZM_OK);
	if (v)
		s->known = true;
}

static const char *const HLM[] = { "high", "low", "mid", NULL };
static const char *const LM[] = { "low", "mid", NULL };

START_TEST(meta_round_trip)
{
	struct zm_names a, b;
	struct zm_doc doc;
	struct zm_error err;
	static const char *const odd[] = { "a \"quoted\"", "b,c", "", NULL };

	names(&a, odd);
	zm_names_init(&b);
	zm_doc_init(&doc);
	ck_assert_int_eq(zm_names_to_meta(&a, &doc, ZM_META_CLASSES, &err), ZM_OK);
	ck_assert_int_eq(zm_names_from_meta(&b, &doc, ZM_META_CLASSES, "d", &err),
	                 ZM_OK);
	ck_assert(zm_names_equal(&a, &b));
	ck_assert_int_eq(zm_names_from_meta(&b, &doc, ZM_META_FEATURES, "d", &err),
	                 ZM_OK);
	ck_assert(!b.known);
	zm_doc_set_meta(&doc, ZM_META_CLASSES, "[\"x\",\"y\",\"x\"]", &err);
	ck_assert_int_eq(zm_names_from_meta(&b, &doc, ZM_META_CLASSES, "d", &err),
	                 ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "names 'x' twice"));
	zm_doc_set_meta(&doc, ZM_META_CLASSES, "{\"x\": 1}", &err);
	ck_assert_int_eq(zm_names_from_meta(&b, &doc, ZM_META_CLASSES, "d", &err),
	                 ZM_ERR_DATA);
	zm_names_release(&a);
	zm_names_release(&b);
	zm_doc_release(&doc);
}
END_TEST

/* The class maps of issue 16, item 1: a file without class high. */
START_TEST(class_map_by_name)
{
	struct zm_names data, target;
	struct zm_error err;
	int64_t *map, y[] = { 0, 1, 1, 0 };
	size_t n;

	names(&data, LM);
	names(&target, HLM);
	ck_assert_int_eq(zm_schema_class_map(&data, &target, 1, false, &map, &n,
	                                     "d", &err), ZM_OK);
	ck_assert_uint_eq(n, 2);
	ck_assert_int_eq(map[0], 1);             /* low */
	ck_assert_int_eq(map[1], 2);             /* mid */
	ck_assert_int_eq(zm_schema_map_labels(y, 4, map, n, &data, &target, "d",
	                                      "model 'm'", &err), ZM_OK);
	ck_assert_int_eq(y[0], 1);
	ck_assert_int_eq(y[1], 2);
	ck_assert_int_eq(y[2], 2);
	ck_assert_int_eq(y[3], 1);
	free(map);
	zm_names_release(&data);
	zm_names_release(&target);
}
END_TEST

START_TEST(class_map_unknown_label)
{
	struct zm_names data, target;
	struct zm_error err;
	static const char *const LX[] = { "low", "extreme", NULL };
	int64_t *map, y[] = { 0, 1 };
	size_t n;

	names(&data, LX);
	names(&target, HLM);
	ck_assert_int_eq(zm_schema_class_map(&data, &target, 1, false, &map, &n,
	                                     "f.csv", &err), ZM_OK);
	ck_assert_int_eq(map[1], -1);
	ck_assert_int_eq(zm_schema_map_labels(y, 2, map, n, &data, &target,
	                                      "f.csv", "model 'm'", &err),
	                 ZM_ERR_DATA);
	ck_assert_str_eq(err.msg, "f.csv: row 1: label 'extreme' is not a class "
	                 "of model 'm' (classes: high, low, mid)");
	free(map);
	zm_names_release(&data);
	zm_names_release(&target);
}
END_TEST

/* Labels without names are their numbers: matched to "0".."9". */
START_TEST(class_map_numbers)
{
	struct zm_names data, target;
	struct zm_error err;
	static const char *const T[] = { "2", "0", "1", NULL };
	int64_t *map, y[] = { 2, 0, 5 };
	size_t n;

	names(&data, NULL);
	names(&target, T);
	ck_assert_int_eq(zm_schema_class_map(&data, &target, 5, false, &map, &n,
	                                     "d", &err), ZM_OK);
	ck_assert_uint_eq(n, 6);
	ck_assert_int_eq(map[2], 0);
	ck_assert_int_eq(map[0], 1);
	ck_assert_int_eq(map[5], -1);
	ck_assert_int_eq(zm_schema_map_labels(y, 3, map, n, &data, &target, "d",
	                                      "m", &err), ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "label '5' is not a class"));
	free(map);
	/* Huge labels are refused before a map is built for them. */
	ck_assert_int_eq(zm_schema_class_map(&data, &target, INT64_MAX / 2,
	                                     false, &map, &n, "d", &err),
	                 ZM_ERR_DATA);
	free(map);
	zm_names_release(&data);
	zm_names_release(&target);
}
END_TEST

/* An unknown target: position; with extend it takes the data's names. */
START_TEST(class_map_unknown_target)
{
	struct zm_names data, target;
	struct zm_error err;
	int64_t *map;
	size_t n;

	names(&data, LM);
	names(&target, NULL);
	ck_assert_int_eq(zm_schema_class_map(&data, &target, 1, false, &map, &n,
	                                     "d", &err), ZM_OK);
	ck_assert_int_eq(map[0], 0);
	ck_assert_int_eq(map[1], 1);
	ck_assert(!target.known);
	free(map);
	ck_assert_int_eq(zm_schema_class_map(&data, &target, 1, true, &map, &n,
	                                     "d", &err), ZM_OK);
	ck_assert(target.known);
	ck_assert(zm_names_equal(&data, &target));
	free(map);
	/* Extending a known target appends what it lacks. */
	zm_names_release(&data);
	names(&data, HLM);
	ck_assert_int_eq(zm_schema_class_map(&data, &target, 2, true, &map, &n,
	                                     "d", &err), ZM_OK);
	ck_assert_uint_eq(target.n, 3);
	ck_assert_str_eq(target.v[2], "high");
	ck_assert_int_eq(map[0], 2);
	ck_assert_int_eq(map[1], 0);
	ck_assert_int_eq(map[2], 1);
	free(map);
	zm_names_release(&data);
	zm_names_release(&target);
}
END_TEST

static const struct {
	const char *const data[5];
	const char *const target[4];
	size_t perm[3];
	bool identity;
	size_t extra;
	const char *first_extra;
	const char *error;
} feature_cases[] = {
	{ { "a", "b", "c", NULL }, { "a", "b", "c", NULL }, { 0, 1, 2 }, true,
	  0, NULL, NULL },
	{ { "c", "a", "b", NULL }, { "a", "b", "c", NULL }, { 1, 2, 0 }, false,
	  0, NULL, NULL },
	{ { "x", "a", "b", "c", NULL }, { "a", "b", "c", NULL }, { 1, 2, 3 },
	  false, 1, "x", NULL },
	{ { "a", "c", NULL }, { "a", "b", "c", NULL }, { 0 }, false, 0, NULL,
	  "d: no column 'b' (model 'm' takes 3 named features)" },
};

START_TEST(feature_map)
{
	struct zm_names data, target;
	struct zm_error err;
	const char *first;
	size_t *perm, extra, j;
	bool identity;
	enum zm_status st;

	names(&data, feature_cases[_i].data);
	names(&target, feature_cases[_i].target);
	st = zm_schema_feature_map(&data, &target, &perm, &identity, &extra,
	                           &first, "d", "model 'm'", &err);
	if (feature_cases[_i].error) {
		ck_assert_int_eq(st, ZM_ERR_DATA);
		ck_assert_str_eq(err.msg, feature_cases[_i].error);
		ck_assert_ptr_null(perm);
	} else {
		ck_assert_int_eq(st, ZM_OK);
		for (j = 0; j < target.n; j++)
			ck_assert_uint_eq(perm[j], feature_cases[_i].perm[j]);
		ck_assert_int_eq(identity, feature_cases[_i].identity);
		ck_assert_uint_eq(extra, feature_cases[_i].extra);
		if (feature_cases[_i].first_extra)
			ck_assert_str_eq(first, feature_cases[_i].first_extra);
		else
			ck_assert_ptr_null(first);
	}
	free(perm);
	zm_names_release(&data);
	zm_names_release(&target);
}
END_TEST

/* A CSV-like batch: x [2, 3] in columns c, a, b with labels mid, low. */
START_TEST(conform_doc)
{
	struct zm_schema target;
	struct zm_schema_note note;
	struct zm_doc doc;
	struct zm_tensor x, y;
	struct zm_error err;
	int64_t xs[2] = { 2, 3 }, ys[1] = { 2 };
	const float xv[6] = { 3, 1, 2, 30, 10, 20 };
	const int64_t yv[2] = { 1, 0 };
	const float *nx;
	const int64_t *ny;
	size_t i;

	zm_doc_init(&doc);
	zm_tensor_init(&x);
	zm_tensor_init(&y);
	ck_assert_int_eq(zm_tensor_alloc(&x, "x", ZM_DTYPE_F32, 2, xs, &err), ZM_OK);
	memcpy(x.data, xv, sizeof(xv));
	ck_assert_int_eq(zm_tensor_alloc(&y, "y", ZM_DTYPE_I64, 1, ys, &err), ZM_OK);
	memcpy(y.data, yv, sizeof(yv));
	ck_assert_int_eq(zm_doc_add(&doc, &x, &err), ZM_OK);
	ck_assert_int_eq(zm_doc_add(&doc, &y, &err), ZM_OK);
	zm_doc_set_meta(&doc, ZM_META_COLUMNS, "[\"c\",\"a\",\"b\"]", &err);
	zm_doc_set_meta(&doc, ZM_META_CLASSES, "[\"low\",\"mid\"]", &err);
	zm_schema_init(&target);
	names(&target.classes, HLM);
	{
		static const char *const ABC[] = { "a", "b", "c", NULL };
		zm_names_release(&target.features);
		names(&target.features, ABC);
	}
	memset(&note, 0, sizeof(note));
	ck_assert_int_eq(zm_schema_conform_doc(&target, false, &doc, 2, "d",
	                                       "model 'm'", &note, &err), ZM_OK);
	ck_assert(note.reordered);
	ck_assert(!note.by_position);
	nx = zm_doc_find(&doc, "x")->data;
	for (i = 0; i < 3; i++) {
		ck_assert_float_eq(nx[i], (float)(i + 1));
		ck_assert_float_eq(nx[3 + i], (float)(10 * (i + 1)));
	}
	ny = zm_doc_find(&doc, "y")->data;
	ck_assert_int_eq(ny[0], 2);      /* mid */
	ck_assert_int_eq(ny[1], 1);      /* low */
	ck_assert_str_eq(zm_doc_meta(&doc, ZM_META_COLUMNS), "[\"a\",\"b\",\"c\"]");
	ck_assert_str_eq(zm_doc_meta(&doc, ZM_META_CLASSES),
	                 "[\"high\",\"low\",\"mid\"]");
	/* Conforming again changes nothing. */
	ck_assert_int_eq(zm_schema_conform_doc(&target, false, &doc, 2, "d",
	                                       "model 'm'", &note, &err), ZM_OK);
	ck_assert_int_eq(((const int64_t *)zm_doc_find(&doc, "y")->data)[0], 2);
	zm_schema_release(&target);
	zm_doc_release(&doc);
}
END_TEST

START_TEST(adopt_from_update)
{
	struct zm_doc model, upd;
	struct zm_error err;

	zm_doc_init(&model);
	zm_doc_init(&upd);
	zm_doc_set_meta(&upd, ZM_META_CLASSES, "[\"a\",\"b\"]", &err);
	zm_doc_set_meta(&upd, ZM_META_ROLE, "router", &err);
	ck_assert_int_eq(zm_schema_adopt(&model, &upd, "update 1", &err), ZM_OK);
	ck_assert_str_eq(zm_doc_meta(&model, ZM_META_CLASSES), "[\"a\",\"b\"]");
	ck_assert_str_eq(zm_doc_meta(&model, ZM_META_ROLE), "router");
	ck_assert_int_eq(zm_schema_adopt(&model, &upd, "update 2", &err), ZM_OK);
	zm_doc_set_meta(&upd, ZM_META_CLASSES, "[\"b\",\"a\"]", &err);
	ck_assert_int_eq(zm_schema_adopt(&model, &upd, "update 3", &err),
	                 ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "update 3: zm.classes"));
	zm_doc_release(&model);
	zm_doc_release(&upd);
}
END_TEST

START_TEST(roles)
{
	struct zm_doc doc;
	struct zm_error err;
	enum zm_role r;

	zm_doc_init(&doc);
	ck_assert(zm_role_of_doc(&doc, &r));
	ck_assert_int_eq(r, ZM_ROLE_EXPERT);
	zm_doc_set_meta(&doc, ZM_META_ROLE, "router", &err);
	ck_assert(zm_role_of_doc(&doc, &r));
	ck_assert_int_eq(r, ZM_ROLE_ROUTER);
	ck_assert_str_eq(zm_role_name(ZM_ROLE_BASE), "base");
	zm_doc_set_meta(&doc, ZM_META_ROLE, "boss", &err);
	ck_assert(!zm_role_of_doc(&doc, &r));
	zm_doc_release(&doc);
}
END_TEST

Suite *suite_schema(void)
{
	Suite *s = suite_create("schema");
	TCase *tc = tcase_create("schema");

	tcase_add_test(tc, meta_round_trip);
	tcase_add_test(tc, class_map_by_name);
	tcase_add_test(tc, class_map_unknown_label);
	tcase_add_test(tc, class_map_numbers);
	tcase_add_test(tc, class_map_unknown_target);
	tcase_add_loop_test(tc, feature_map, 0,
	                    (int)(sizeof(feature_cases) / sizeof(feature_cases[0])));
	tcase_add_test(tc, conform_doc);
	tcase_add_test(tc, adopt_from_update);
	tcase_add_test(tc, roles);
	suite_add_tcase(s, tc);
	return s;
}
