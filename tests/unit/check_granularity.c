/*
 * Granularity: units of an arch at each level and the layer-to-unit map,
 * decision files parsed with positioned errors and validated against an
 * arch, the YAML round trip, and --share specs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "granularity.h"
#include "model.h"
#include "unit.h"

static const char arch_yaml[] =
	"input: [6]\n"
	"layers:\n"
	"  - {name: fc1, units: 5, activation: relu, group: features}\n"
	"  - {name: fc2, units: 4, activation: relu, group: features}\n"
	"  - {name: mid, units: 4, activation: tanh, group: neck}\n"
	"  - {name: out, units: 3, group: head}\n";

static enum zm_status parse_text(const char *text, const struct zm_arch *arch,
                                 struct zm_gran_decision *d,
                                 struct zm_error *err)
{
	struct zm_node *root = NULL;
	enum zm_status st;

	st = zm_config_parse(text, strlen(text), "g.yaml", &root, err);
	if (st == ZM_OK)
		st = zm_gran_decision_parse(root, arch, d, err);
	zm_node_free(root);
	return st;
}

START_TEST(test_units)
{
	struct zm_arch *a = unit_arch(arch_yaml);
	struct zm_gran_units u;
	struct zm_error err;
	static const size_t group_of[4] = { 0, 0, 1, 2 };
	size_t l;

	ck_assert_int_eq(zm_gran_units_init(&u, ZM_GRAN_FULL, a, &err), ZM_OK);
	ck_assert_uint_eq(u.n_units, 1);
	ck_assert_str_eq(u.names[0], "model");
	for (l = 0; l < 4; l++)
		ck_assert_uint_eq(u.layer_unit[l], 0);
	zm_gran_units_release(&u);

	ck_assert_int_eq(zm_gran_units_init(&u, ZM_GRAN_GROUP, a, &err), ZM_OK);
	ck_assert_uint_eq(u.n_units, 3);
	ck_assert_str_eq(u.names[0], "features");
	ck_assert_str_eq(u.names[1], "neck");
	ck_assert_str_eq(u.names[2], "head");
	for (l = 0; l < 4; l++)
		ck_assert_uint_eq(u.layer_unit[l], group_of[l]);
	ck_assert_int_eq(zm_gran_units_find(&u, "neck"), 1);
	ck_assert_int_eq(zm_gran_units_find(&u, "fc1"), -1);
	zm_gran_units_release(&u);

	ck_assert_int_eq(zm_gran_units_init(&u, ZM_GRAN_LAYER, a, &err), ZM_OK);
	ck_assert_uint_eq(u.n_units, 4);
	for (l = 0; l < 4; l++) {
		ck_assert_uint_eq(u.layer_unit[l], l);
		ck_assert_str_eq(u.names[l], a->layers[l].name);
	}
	zm_gran_units_release(&u);
	zm_arch_free(a);
}
END_TEST

START_TEST(test_levels)
{
	enum zm_gran_level l;

	ck_assert(zm_gran_level_parse("full", &l) && l == ZM_GRAN_FULL);
	ck_assert(zm_gran_level_parse("group", &l) && l == ZM_GRAN_GROUP);
	ck_assert(zm_gran_level_parse("layer", &l) && l == ZM_GRAN_LAYER);
	ck_assert(!zm_gran_level_parse("layers", &l));
	ck_assert_str_eq(zm_gran_level_name(ZM_GRAN_GROUP), "group");
}
END_TEST

START_TEST(test_parse_and_mask)
{
	struct zm_arch *a = unit_arch(arch_yaml);
	struct zm_gran_decision d;
	struct zm_error err;
	bool mask[4];

	zm_gran_decision_init(&d);
	ck_assert_int_eq(parse_text(
		"level: group\n"
		"units:\n"
		"  - {unit: features, shared: true, agreement: 0.93, reason: \"agree\"}\n"
		"  - {unit: head, shared: false, agreement: -0.2}\n"
		"reason: \"differs by group\"\n", a, &d, &err), ZM_OK);
	ck_assert_int_eq(d.level, ZM_GRAN_GROUP);
	ck_assert_uint_eq(d.n_units, 2);
	ck_assert(d.units[0].shared && d.units[0].has_agreement);
	ck_assert_double_eq_tol(d.units[0].agreement, 0.93, 1e-12);
	ck_assert_str_eq(d.units[0].reason, "agree");
	ck_assert(!d.units[1].shared && d.units[1].reason == NULL);
	ck_assert_str_eq(d.reason, "differs by group");
	ck_assert_int_eq(d.units[1].line, 4);
	/* neck is not listed: independent. */
	ck_assert_int_eq(zm_gran_decision_layer_mask(&d, a, mask, &err), ZM_OK);
	ck_assert(mask[0] && mask[1] && !mask[2] && !mask[3]);
	zm_gran_decision_release(&d);
	zm_arch_free(a);
}
END_TEST

/* Bad decision files and the line:col their error must name. */
static const struct {
	const char *text;
	const char *where;
	const char *what;
} bad[] = {
	{ "units: []\n", "g.yaml:1:1", "level" },
	{ "level: medium\n", "g.yaml:1:8", "full, group or layer" },
	{ "level: layer\nunits:\n  - {unit: fc1, shared: maybe}\n",
	  "g.yaml:3:", "shared" },
	{ "level: layer\nunits:\n  - {unit: fc1, agreement: high}\n",
	  "g.yaml:3:", "agreement" },
	{ "level: layer\nunits:\n  - {shared: true}\n", "g.yaml:3:5", "unit" },
	{ "level: layer\nunits:\n  - {unit: fc1}\n  - {unit: fc1}\n",
	  "g.yaml:4:", "twice" },
	{ "level: layer\nunits:\n  - {unit: fc1}\n  - {unit: fc9, shared: true}\n",
	  "g.yaml:4:5", "unknown layer unit 'fc9'" },
	{ "level: group\nunits:\n  - {unit: fc1, shared: true}\n",
	  "g.yaml:3:5", "unknown group unit 'fc1'" },
	{ "level: full\nunits:\n  - {unit: features}\n", "g.yaml:3:5",
	  "unit 'features'" },
	{ "level: layer\nunit: []\n", "g.yaml:", "unit" },
	{ "level: layer\nunits: {fc1: true}\n", "g.yaml:2:", "units" },
	{ "level: layer\nunits:\n  - {unit: fc1, shared: true\n", "g.yaml:", "" },
};

START_TEST(test_errors)
{
	struct zm_arch *a = unit_arch(arch_yaml);
	struct zm_gran_decision d;
	struct zm_error err;

	zm_gran_decision_init(&d);
	ck_assert_int_eq(parse_text(bad[_i].text, a, &d, &err), ZM_ERR_CONFIG);
	if (!strstr(err.msg, bad[_i].where) || !strstr(err.msg, bad[_i].what))
		ck_abort_msg("case %d: '%s' lacks '%s' / '%s'", _i, err.msg,
		             bad[_i].where, bad[_i].what);
	ck_assert_uint_eq(d.n_units, 0);
	zm_gran_decision_release(&d);
	zm_arch_free(a);
}
END_TEST

START_TEST(test_round_trip)
{
	struct zm_arch *a = unit_arch(arch_yaml);
	struct zm_gran_decision d, e;
	struct zm_error err;
	struct zm_buf b;
	char path[512];
	size_t i;

	zm_gran_decision_init(&d);
	zm_gran_decision_init(&e);
	d.level = ZM_GRAN_LAYER;
	ck_assert_int_eq(zm_gran_decision_add(&d, "fc1", true, true, 0.125,
	                                      "quote \" and: colon", &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_gran_decision_add(&d, "out", false, false, 0, NULL,
	                                      &err), ZM_OK);
	d.reason = strdup("why\nnot");
	zm_buf_init(&b);
	zm_gran_decision_to_yaml(&d, &b);
	ck_assert(!b.failed);
	ck_assert_int_eq(parse_text(b.data, a, &e, &err), ZM_OK);
	ck_assert_int_eq(e.level, d.level);
	ck_assert_uint_eq(e.n_units, d.n_units);
	for (i = 0; i < d.n_units; i++) {
		ck_assert_str_eq(e.units[i].unit, d.units[i].unit);
		ck_assert_int_eq(e.units[i].shared, d.units[i].shared);
		ck_assert_int_eq(e.units[i].has_agreement,
		                 d.units[i].has_agreement);
		ck_assert(e.units[i].agreement == d.units[i].agreement);
		ck_assert((e.units[i].reason == NULL) ==
		          (d.units[i].reason == NULL));
	}
	ck_assert_str_eq(e.units[0].reason, "quote \" and: colon");
	ck_assert_str_eq(e.reason, "why\nnot");

	/* Through a file. */
	snprintf(path, sizeof(path), "%s/g.yaml", unit_tmpdir());
	ck_assert_int_eq(zm_gran_decision_write(&d, path, &err), ZM_OK);
	ck_assert_int_eq(zm_gran_decision_load(path, a, &e, &err), ZM_OK);
	ck_assert_uint_eq(e.n_units, 2);
	ck_assert(zm_gran_decision_shared(&e, "fc1"));
	ck_assert(!zm_gran_decision_shared(&e, "out"));
	ck_assert(!zm_gran_decision_shared(&e, "fc2"));
	zm_buf_release(&b);
	zm_gran_decision_release(&d);
	zm_gran_decision_release(&e);
	zm_arch_free(a);
}
END_TEST

START_TEST(test_share_specs)
{
	struct zm_arch *a = unit_arch(arch_yaml);
	struct zm_gran_decision d;
	struct zm_error err;
	bool mask[4];

	zm_gran_decision_init(&d);
	ck_assert_int_eq(zm_gran_decision_from_share(&d, ZM_GRAN_FULL, "all", a,
	                                             &err), ZM_OK);
	ck_assert(zm_gran_decision_shared(&d, "model"));
	ck_assert_int_eq(zm_gran_decision_from_share(&d, ZM_GRAN_GROUP, "none",
	                                             a, &err), ZM_OK);
	ck_assert_uint_eq(d.n_units, 3);
	zm_gran_decision_layer_mask(&d, a, mask, &err);
	ck_assert(!mask[0] && !mask[1] && !mask[2] && !mask[3]);
	ck_assert_int_eq(zm_gran_decision_from_share(&d, ZM_GRAN_GROUP,
	                                             "groups=head,neck", a,
	                                             &err), ZM_OK);
	zm_gran_decision_layer_mask(&d, a, mask, &err);
	ck_assert(!mask[0] && !mask[1] && mask[2] && mask[3]);
	/* groups= at the layer level shares the layers of those groups. */
	ck_assert_int_eq(zm_gran_decision_from_share(&d, ZM_GRAN_LAYER,
	                                             "groups=features", a,
	                                             &err), ZM_OK);
	ck_assert(zm_gran_decision_shared(&d, "fc1"));
	ck_assert(zm_gran_decision_shared(&d, "fc2"));
	ck_assert(!zm_gran_decision_shared(&d, "mid"));
	ck_assert_int_eq(zm_gran_decision_from_share(&d, ZM_GRAN_LAYER,
	                                             "layers=mid", a, &err),
	                 ZM_OK);
	zm_gran_decision_layer_mask(&d, a, mask, &err);
	ck_assert(!mask[0] && !mask[1] && mask[2] && !mask[3]);

	ck_assert_int_eq(zm_gran_decision_from_share(&d, ZM_GRAN_LAYER,
	                                             "layers=nope", a, &err),
	                 ZM_ERR_USAGE);
	ck_assert_ptr_nonnull(strstr(err.msg, "nope"));
	ck_assert_int_eq(zm_gran_decision_from_share(&d, ZM_GRAN_GROUP,
	                                             "layers=fc1", a, &err),
	                 ZM_ERR_USAGE);
	ck_assert_int_eq(zm_gran_decision_from_share(&d, ZM_GRAN_FULL,
	                                             "groups=head", a, &err),
	                 ZM_ERR_USAGE);
	ck_assert_int_eq(zm_gran_decision_from_share(&d, ZM_GRAN_LAYER,
	                                             "layers=", a, &err),
	                 ZM_ERR_USAGE);
	ck_assert_int_eq(zm_gran_decision_from_share(&d, ZM_GRAN_LAYER, "some",
	                                             a, &err), ZM_ERR_USAGE);
	ck_assert_uint_eq(d.n_units, 0);
	zm_gran_decision_release(&d);
	zm_arch_free(a);
}
END_TEST

Suite *suite_granularity(void)
{
	Suite *s = suite_create("granularity");
	TCase *tc = tcase_create("granularity");

	tcase_add_test(tc, test_units);
	tcase_add_test(tc, test_levels);
	tcase_add_test(tc, test_parse_and_mask);
	tcase_add_loop_test(tc, test_errors, 0, (int)(sizeof(bad) / sizeof(bad[0])));
	tcase_add_test(tc, test_round_trip);
	tcase_add_test(tc, test_share_specs);
	suite_add_tcase(s, tc);
	return s;
}
