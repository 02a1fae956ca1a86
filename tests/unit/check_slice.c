/*
 * Slicing rules: config errors with exact line:col, every criterion on
 * hand-made rows, partition vs overlapping, hash splits (reproducible, near
 * the fraction), binding of names, and k-means on three well-separated
 * Gaussian clusters against the generating labels.
 */
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "random.h"
#include "slice.h"
#include "stream.h"
#include "unit.h"

static enum zm_status parse(const char *text, struct zm_slice_rules *r,
                            struct zm_error *err)
{
	zm_slice_rules_init(r);
	return zm_slice_rules_parse_text(text, strlen(text), "r.yaml", r, err);
}

/* Table of bad rules files and the "line:col" their error must name. */
static const struct {
	const char *text;
	const char *where;
	const char *what;
} bad_rules[] = {
	{ "slices:\n  - {name: a, where: {stat: mean, min: 1}}\n"
	  "  - {name: b, wher: {label: 1}}\n", "r.yaml:3:15:", "wher" },
	{ "slices:\n  - {name: a, where: {stat: median, min: 1}}\n",
	  "r.yaml:2:29:", "median" },
	{ "mode: both\nslices:\n  - {name: a, default: true}\n",
	  "r.yaml:1:7:", "partition or overlapping" },
	{ "slices:\n  - {name: a, where: {feature: 3, min: 2, max: 1}}\n",
	  "r.yaml:2:48:", "empty range" },
	{ "slices:\n  - {name: a, where: {hash: 1.5}}\n",
	  "r.yaml:2:29:", "hash" },
	{ "slices:\n  - {name: a, where: {label: 1, hash: 0.5}}\n",
	  "r.yaml:2:22:", "exactly one" },
	{ "slices:\n  - {name: a, default: true}\n  - {name: a, default: true}\n",
	  "r.yaml:3:12:", "duplicate" },
	{ "slices:\n  - {name: ../x, default: true}\n",
	  "r.yaml:2:12:", "valid slice name" },
	{ "slices:\n  - {name: a, where: {stat: mean, max: 0.5}}\n"
	  "  - {name: b, where: {stat: mean, min: 0.4}}\n",
	  "r.yaml:3:5:", "overlaps slice 'a'" },
	{ "slices:\n  - {name: a, where: {cluster: 0}}\n",
	  "r.yaml:2:32:", "clusters" },
	{ "clusters: {k: 2}\nslices:\n  - {name: a, where: {cluster: 2}}\n",
	  "r.yaml:3:32:", "cluster" },
	{ "slices:\n  - {name: a, where: {column: 0}}\n",
	  "r.yaml:2:22:", "equals or in" },
	{ "slices: [\n", "r.yaml:", "" },
	{ "clusters: {k: 0}\n", "r.yaml:1:15:", "k" },
	{ "slices: []\n", "r.yaml:1:9:", "at least one" },
};

START_TEST(test_rule_errors)
{
	struct zm_slice_rules r;
	struct zm_error err;
	enum zm_status st;

	st = parse(bad_rules[_i].text, &r, &err);
	ck_assert_int_eq(st, ZM_ERR_CONFIG);
	ck_assert_msg(strstr(err.msg, bad_rules[_i].where) == err.msg,
	              "case %d: '%s' does not start with %s", _i, err.msg,
	              bad_rules[_i].where);
	ck_assert_msg(strstr(err.msg, bad_rules[_i].what), "case %d: '%s' "
	              "lacks '%s'", _i, err.msg, bad_rules[_i].what);
	ck_assert_int_eq(r.n_rules, 0);
	zm_slice_rules_release(&r);
}
END_TEST

START_TEST(test_overlap_allowed_with_default_or_overlapping)
{
	struct zm_slice_rules r;
	struct zm_error err;

	ck_assert_int_eq(parse("slices:\n  - {name: a, where: {stat: mean, "
	                       "max: 0.5}}\n  - {name: b, where: {stat: mean, "
	                       "min: 0.4}}\n  - {name: c, default: true}\n",
	                       &r, &err), ZM_OK);
	zm_slice_rules_release(&r);
	ck_assert_int_eq(parse("mode: overlapping\nslices:\n  - {name: a, "
	                       "where: {stat: mean, max: 0.5}}\n  - {name: b, "
	                       "where: {stat: mean, min: 0.4}}\n", &r, &err),
	                 ZM_OK);
	ck_assert(r.overlapping);
	zm_slice_rules_release(&r);
	/* Ranges that only touch ([0, 0.5) and [0.5, 1)) do not overlap. */
	ck_assert_int_eq(parse("slices:\n  - {name: a, where: {feature: 1, "
	                       "max: 0.5}}\n  - {name: b, where: {feature: 1, "
	                       "min: 0.5}}\n", &r, &err), ZM_OK);
	zm_slice_rules_release(&r);
}
END_TEST

/* Rows with known statistics: d = 4. */
static const float rows[5][4] = {
	{ 0, 0, 0, 0 },          /* mean 0, std 0, l2 0 */
	{ 1, 1, 1, 1 },          /* mean 1, std 0, l2 2 */
	{ 4, 0, 0, 0 },          /* mean 1, std sqrt(3), max 4, l2 4 */
	{ -2, 2, -2, 2 },        /* mean 0, std 2, min -2, l2 4 */
	{ 0.5, 9, 3, 7 },        /* mean 4.875 */
};
static const int64_t labels[5] = { 0, 1, 2, 1, 3 };

static void match(const char *text, uint8_t *hits, struct zm_slice_rules *r)
{
	struct zm_error err;
	struct zm_doc doc;
	struct zm_tensor y;
	int64_t shape[1] = { 5 };

	ck_assert_msg(parse(text, r, &err) == ZM_OK, "%s", err.msg);
	zm_doc_init(&doc);
	zm_tensor_init(&y);
	/* Binding only looks at names and metadata; y must exist. */
	ck_assert_int_eq(zm_tensor_alloc(&y, "y", ZM_DTYPE_I64, 1, shape,
	                                 &err), ZM_OK);
	ck_assert_int_eq(zm_doc_add(&doc, &y, &err), ZM_OK);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.columns",
	                                 "[\"a\",\"b\",\"c\",\"d\"]", &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.label", "kind", &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.classes",
	                 "[\"shirt\",\"shoe\",\"bag\",\"coat\"]", &err), ZM_OK);
	ck_assert_msg(zm_slice_rules_bind(r, &doc, 4, "r.yaml", &err) == ZM_OK,
	              "%s", err.msg);
	zm_doc_release(&doc);
	zm_slice_match(r, &rows[0][0], labels, NULL, NULL, 5, 4, hits);
}

/* Which rule each row hit (partition: at most one), -1 for none. */
static void expect_rows(const uint8_t *hits, size_t R, const int *want)
{
	size_t i, j;

	for (i = 0; i < 5; i++) {
		int got = -1;
		for (j = 0; j < R; j++)
			if (hits[i * R + j]) {
				ck_assert_msg(got < 0, "row %zu hit twice", i);
				got = (int)j;
			}
		ck_assert_msg(got == want[i], "row %zu: rule %d, want %d", i,
		              got, want[i]);
	}
}

START_TEST(test_criteria)
{
	static const struct {
		const char *where;
		int want[5];    /* 0: matches the rule, 1: falls to default */
	} cases[] = {
		{ "{stat: mean, min: 0.5, max: 2}", { 1, 0, 0, 1, 1 } },
		{ "{stat: std, min: 1}", { 1, 1, 0, 0, 0 } },
		{ "{stat: min, max: -1}", { 1, 1, 1, 0, 1 } },
		{ "{stat: max, min: 4}", { 1, 1, 0, 1, 0 } },
		{ "{stat: l2, min: 2, max: 4}", { 1, 0, 1, 1, 1 } },
		{ "{stat: l2, min: 4}", { 1, 1, 0, 0, 0 } },
		{ "{feature: 1, min: 1, max: 9}", { 1, 0, 1, 0, 1 } },
		{ "{feature: b, max: 1}", { 0, 1, 0, 1, 1 } },
		{ "{feature: 0, min: 0.5}", { 1, 0, 0, 1, 0 } },
		{ "{column: c, equals: 3}", { 1, 1, 1, 1, 0 } },
		{ "{column: 2, in: [0, -2]}", { 0, 1, 0, 0, 1 } },
		{ "{column: kind, in: [shoe, 3]}", { 1, 0, 1, 0, 0 } },
		{ "{label: [0, 2]}", { 0, 1, 0, 1, 1 } },
		{ "{label: bag}", { 1, 1, 0, 1, 1 } },
	};
	struct zm_slice_rules r;
	uint8_t hits[5 * 2];
	char text[256];
	size_t c;

	for (c = 0; c < sizeof(cases) / sizeof(*cases); c++) {
		snprintf(text, sizeof(text), "slices:\n  - {name: s, where: "
		         "%s}\n  - {name: rest, default: true}\n",
		         cases[c].where);
		match(text, hits, &r);
		{
			int want[5], i;
			for (i = 0; i < 5; i++)
				want[i] = cases[c].want[i];
			expect_rows(hits, 2, want);
		}
		zm_slice_rules_release(&r);
	}
}
END_TEST

START_TEST(test_partition_vs_overlapping)
{
	const char *rules = "slices:\n"
		"  - {name: hi, where: {stat: mean, min: 0.5}}\n"
		"  - {name: ones, where: {label: [1]}}\n"
		"  - {name: rest, default: true}\n";
	struct zm_slice_rules r;
	uint8_t hits[5 * 3];
	char text[256];
	static const uint8_t over[5][3] = {
		{ 0, 0, 1 }, { 1, 1, 0 }, { 1, 0, 0 }, { 0, 1, 0 }, { 1, 0, 0 },
	};
	int want[5] = { 2, 0, 0, 1, 0 };
	size_t i, j;

	match(rules, hits, &r);
	expect_rows(hits, 3, want);
	zm_slice_rules_release(&r);
	snprintf(text, sizeof(text), "mode: overlapping\n%s", rules);
	match(text, hits, &r);
	for (i = 0; i < 5; i++)
		for (j = 0; j < 3; j++)
			ck_assert_msg(hits[i * 3 + j] == over[i][j],
			              "row %zu rule %zu", i, j);
	zm_slice_rules_release(&r);
}
END_TEST

START_TEST(test_bind_errors)
{
	static const char *const cases[] = {
		"slices:\n  - {name: s, where: {feature: nope, min: 1}}\n",
		"slices:\n  - {name: s, where: {feature: 4, min: 1}}\n",
		"slices:\n  - {name: s, where: {label: [sock]}}\n",
		"slices:\n  - {name: s, where: {column: a, equals: x}}\n",
	};
	struct zm_slice_rules r;
	struct zm_error err;
	struct zm_doc doc;
	size_t c;

	zm_doc_init(&doc);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.columns",
	                                 "[\"a\",\"b\",\"c\",\"d\"]", &err),
	                 ZM_OK);
	for (c = 0; c < sizeof(cases) / sizeof(*cases); c++) {
		ck_assert_int_eq(parse(cases[c], &r, &err), ZM_OK);
		ck_assert_int_eq(zm_slice_rules_bind(&r, &doc, 4, "r.yaml",
		                                     &err), ZM_ERR_CONFIG);
		ck_assert_msg(strncmp(err.msg, "r.yaml:2:5:", 11) == 0,
		              "%s", err.msg);
		zm_slice_rules_release(&r);
	}
	zm_doc_release(&doc);
}
END_TEST

/* A data document of 5 rows with string column src, values vals[i]
 * among levels (a JSON list). */
static void string_doc(struct zm_doc *doc, const int64_t *vals,
                       const char *levels)
{
	struct zm_error err;
	struct zm_tensor t;
	int64_t xs[2] = { 5, 4 }, cs[1] = { 5 };

	zm_doc_init(doc);
	zm_tensor_init(&t);
	ck_assert_int_eq(zm_tensor_alloc(&t, "x", ZM_DTYPE_F32, 2, xs, &err),
	                 ZM_OK);
	memcpy(t.data, rows, sizeof(rows));
	ck_assert_int_eq(zm_doc_add(doc, &t, &err), ZM_OK);
	ck_assert_int_eq(zm_tensor_alloc(&t, "column.src", ZM_DTYPE_I64, 1, cs,
	                                 &err), ZM_OK);
	memcpy(t.data, vals, 5 * sizeof(int64_t));
	ck_assert_int_eq(zm_doc_add(doc, &t, &err), ZM_OK);
	ck_assert_int_eq(zm_doc_set_meta(doc, "zm.columns",
	                                 "[\"a\",\"b\",\"c\",\"d\"]", &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_doc_set_meta(doc, "zm.levels.src", levels, &err),
	                 ZM_OK);
}

START_TEST(test_string_columns)
{
	/* Rows from sources north, south, east (levels sorted per batch);
	 * the second batch has other levels, so the same names are other
	 * indexes there. */
	const int64_t v1[5] = { 1, 2, 0, 1, 2 };      /* [east,north,south] */
	const int64_t v2[5] = { 0, 0, 1, 1, 0 };      /* [north,west] */
	const int want1[5] = { 0, 1, -1, 0, 1 }, want2[5] = { 0, 0, -1, -1, 0 };
	struct zm_slice_rules r;
	struct zm_error err;
	struct zm_doc doc;
	uint8_t hits[5 * 2];

	ck_assert_int_eq(parse("slices:\n"
	                       "  - {name: n, where: {column: src, equals: north}}\n"
	                       "  - {name: s, where: {column: src, in: [south, west]}}\n",
	                       &r, &err), ZM_OK);
	string_doc(&doc, v1, "[\"east\",\"north\",\"south\"]");
	/* west is not in the first batch's levels: the bind refuses it. */
	ck_assert_int_eq(zm_slice_rules_bind(&r, &doc, 4, "r.yaml", &err),
	                 ZM_ERR_CONFIG);
	ck_assert_msg(strstr(err.msg, "r.yaml:3:5: slice 's': no value 'west' "
	                     "in column 'src'") != NULL, "%s", err.msg);
	zm_slice_rules_release(&r);
	ck_assert_int_eq(parse("slices:\n"
	                       "  - {name: n, where: {column: src, equals: north}}\n"
	                       "  - {name: s, where: {column: src, in: [south]}}\n",
	                       &r, &err), ZM_OK);
	ck_assert_int_eq(zm_slice_rules_bind(&r, &doc, 4, "r.yaml", &err), ZM_OK);
	ck_assert_int_eq(zm_slice_rules_use_batch(&r, &doc, 5, "b1", &err), ZM_OK);
	zm_slice_match(&r, &rows[0][0], NULL, NULL, NULL, 5, 4, hits);
	expect_rows(hits, 2, want1);
	zm_doc_release(&doc);
	string_doc(&doc, v2, "[\"north\",\"west\"]");
	ck_assert_int_eq(zm_slice_rules_use_batch(&r, &doc, 5, "b2", &err), ZM_OK);
	zm_slice_match(&r, &rows[0][0], NULL, NULL, NULL, 5, 4, hits);
	expect_rows(hits, 2, want2);
	zm_doc_release(&doc);
	/* A batch without the column. */
	zm_doc_init(&doc);
	ck_assert_int_eq(zm_slice_rules_use_batch(&r, &doc, 5, "b3", &err),
	                 ZM_ERR_DATA);
	ck_assert_msg(strstr(err.msg, "b3: no string column 'src'") != NULL,
	              "%s", err.msg);
	zm_doc_release(&doc);
	zm_slice_rules_release(&r);
	/* A number for a string column. */
	ck_assert_int_eq(parse("slices:\n  - {name: n, where: {column: src, in: [3]}}\n",
	                       &r, &err), ZM_OK);
	string_doc(&doc, v1, "[\"east\",\"north\",\"south\"]");
	ck_assert_int_eq(zm_slice_rules_bind(&r, &doc, 4, "r.yaml", &err),
	                 ZM_ERR_CONFIG);
	ck_assert_msg(strstr(err.msg, "column 'src' holds strings, got the "
	                     "number 3") != NULL, "%s", err.msg);
	zm_doc_release(&doc);
	zm_slice_rules_release(&r);
}
END_TEST

START_TEST(test_hash_split)
{
	const size_t n = 100000;
	size_t i, in = 0, in2 = 0, same = 0;

	for (i = 0; i < n; i++) {
		bool a = zm_slice_hash_in(i, 0.1, 7);
		in += a;
		same += a == zm_slice_hash_in(i, 0.1, 7);
		in2 += zm_slice_hash_in(i, 0.1, 8) && a;
	}
	ck_assert_uint_eq(same, n);
	/* Binomial(1e5, 0.1): sd ~ 95; 5 sd. */
	ck_assert_msg(fabs((double)in - 1e4) < 475, "in = %zu", in);
	/* Another seed is an independent split: overlap ~ 0.01 n. */
	ck_assert_msg(fabs((double)in2 - 1e3) < 160, "overlap = %zu", in2);
	ck_assert(zm_slice_hash_in(12345, 1.0, 3));
}
END_TEST

/* n rows from three Gaussians (sd 0.3) around far-apart centres in d
 * dimensions; truth[i] is the generating centre. */
static float *gaussians(size_t n, size_t d, int *truth, uint64_t seed)
{
	float *x = malloc(n * d * sizeof(float));
	struct zm_rng rng;
	size_t i, j;

	ck_assert_ptr_nonnull(x);
	zm_rng_seed(&rng, seed);
	for (i = 0; i < n; i++) {
		int c = (int)zm_rng_below(&rng, 3);
		truth[i] = c;
		for (j = 0; j < d; j++)
			x[i * d + j] = (float)((j % 3 == (size_t)c ? 5.0 : 0.0) +
			                       0.3 * zm_rng_normal(&rng));
	}
	return x;
}

START_TEST(test_kmeans_recovers_clusters)
{
	const size_t n = 3000, d = 6, k = 3;
	int *truth = malloc(n * sizeof(int));
	int32_t *got = malloc(n * sizeof(int32_t));
	int32_t *again = malloc(n * sizeof(int32_t));
	float c[3 * 6], *x;
	int map[3] = { -1, -1, -1 };
	struct zm_error err;
	size_t i, j;

	x = gaussians(n, d, truth, 11);
	ck_assert_int_eq(zm_kmeans_fit(x, n, d, k, 5, 50, c, &err), ZM_OK);
	ck_assert_int_eq(zm_kmeans_assign(x, n, d, c, k, got, &err), ZM_OK);
	/* Each cluster maps to exactly one generating centre. */
	for (i = 0; i < n; i++) {
		if (map[got[i]] < 0)
			map[got[i]] = truth[i];
		ck_assert_int_eq(map[got[i]], truth[i]);
	}
	ck_assert(map[0] != map[1] && map[1] != map[2] && map[0] != map[2]);
	/* The centroids are the cluster means (Lloyd's fixed point): check
	 * against a naive mean per cluster. */
	for (j = 0; j < k; j++) {
		double s[6] = { 0 }, cnt = 0;
		size_t t;
		for (i = 0; i < n; i++)
			if ((size_t)got[i] == j) {
				for (t = 0; t < d; t++)
					s[t] += x[i * d + t];
				cnt++;
			}
		for (t = 0; t < d; t++)
			ck_assert_msg(fabs(s[t] / cnt - c[j * d + t]) < 1e-4,
			              "centroid %zu[%zu]", j, t);
	}
	/* Reusing the centroids on new data from the same centres gives
	 * the same mapping. */
	free(x);
	x = gaussians(n, d, truth, 99);
	ck_assert_int_eq(zm_kmeans_assign(x, n, d, c, k, again, &err), ZM_OK);
	for (i = 0; i < n; i++)
		ck_assert_int_eq(map[again[i]], truth[i]);
	/* Against a naive nearest-centroid loop. */
	for (i = 0; i < n; i++) {
		double best = INFINITY;
		int arg = -1;
		for (j = 0; j < k; j++) {
			double s = 0;
			size_t t;
			for (t = 0; t < d; t++) {
				double u = x[i * d + t] - c[j * d + t];
				s += u * u;
			}
			if (s < best) {
				best = s;
				arg = (int)j;
			}
		}
		ck_assert_int_eq(again[i], arg);
	}
	ck_assert_int_eq(zm_kmeans_fit(x, 2, d, 3, 5, 5, c, &err),
	                 ZM_ERR_DATA);
	free(x);
	free(truth);
	free(got);
	free(again);
}
END_TEST

START_TEST(test_reservoir_uniform)
{
	/* Each of 100 rows should be kept about cap/n of the time. */
	size_t counts[100] = { 0 }, trial, i;
	float x[100];
	struct zm_error err;

	for (i = 0; i < 100; i++)
		x[i] = (float)i;
	for (trial = 0; trial < 2000; trial++) {
		struct zm_reservoir s;
		ck_assert_int_eq(zm_reservoir_init(&s, 10, 1, trial, &err),
		                 ZM_OK);
		zm_reservoir_add(&s, x, 37);
		zm_reservoir_add(&s, x + 37, 63);
		ck_assert_uint_eq(s.n, 10);
		for (i = 0; i < 10; i++)
			counts[(size_t)s.rows[i]]++;
		zm_reservoir_release(&s);
	}
	/* Expected 200 each, sd ~ 13.4; 5 sd. */
	for (i = 0; i < 100; i++)
		ck_assert_msg(fabs((double)counts[i] - 200) < 67,
		              "row %zu kept %zu times", i, counts[i]);
}
END_TEST

START_TEST(test_clusters_section)
{
	struct zm_slice_rules r;
	struct zm_error err;

	ck_assert_int_eq(parse("clusters: {k: 4, seed: 1, iterations: 7}\n",
	                       &r, &err), ZM_OK);
	ck_assert_uint_eq(r.n_rules, 4);
	ck_assert_str_eq(r.rules[3].name, "cluster-3");
	ck_assert_uint_eq(r.k_iterations, 7);
	zm_slice_rules_release(&r);
}
END_TEST

Suite *suite_slice(void)
{
	Suite *s = suite_create("slice");
	TCase *tc = tcase_create("core");

	tcase_add_loop_test(tc, test_rule_errors, 0,
	                    (int)(sizeof(bad_rules) / sizeof(*bad_rules)));
	tcase_add_test(tc, test_overlap_allowed_with_default_or_overlapping);
	tcase_add_test(tc, test_criteria);
	tcase_add_test(tc, test_partition_vs_overlapping);
	tcase_add_test(tc, test_bind_errors);
	tcase_add_test(tc, test_string_columns);
	tcase_add_test(tc, test_hash_split);
	tcase_add_test(tc, test_kmeans_recovers_clusters);
	tcase_add_test(tc, test_reservoir_uniform);
	tcase_add_test(tc, test_clusters_section);
	suite_add_tcase(s, tc);
	return s;
}
