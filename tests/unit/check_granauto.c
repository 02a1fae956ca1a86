/*
 * predict --granularity auto's decision (granauto.h): a batch whose units
 * agree gets full, one whose layer groups disagree gets group, one whose
 * layers disagree within a group gets layer; a latency budget, a loaded
 * machine, probes, rules and the prior move the choice as documented; the
 * running cost and the state file's cost lines.  The distances are checked
 * against sums worked out by hand here.
 */
#include <math.h>
#include <string.h>

#include "granauto.h"
#include "random.h"
#include "unit.h"

/* Three layer units of two models: units 0 and 1 in group 0, unit 2 in
 * group 1. */
static const size_t groups3[3] = { 0, 0, 1 };

static void input3(struct zm_granauto_input *in, const double *w)
{
	zm_granauto_input_init(in);
	in->unit_w = w;
	in->n_units = 3;
	in->k = 2;
	in->unit_group = groups3;
	in->rows = 1000;
	in->allowed[ZM_GRAN_GROUP] = in->allowed[ZM_GRAN_LAYER] = true;
}

/* One kind of input: every unit puts model 0 first by the same margin. */
static const double homog[6] = { 0.9, 0.1, 0.9, 0.1, 0.9, 0.1 };
/* A mix: the head (group 1) prefers model 1, the features model 0. */
static const double groupmix[6] = { 0.9, 0.1, 0.9, 0.1, 0.1, 0.9 };
/* Layers of one group disagree. */
static const double layermix[6] = { 0.9, 0.1, 0.1, 0.9, 0.5, 0.5 };

START_TEST(test_kinds_of_batch)
{
	struct zm_granauto g;
	struct zm_granauto_input in;
	struct zm_granauto_choice c;

	zm_granauto_init(&g);
	input3(&in, homog);
	zm_granauto_decide(&g, &in, &c);
	ck_assert_int_eq(c.level, ZM_GRAN_FULL);
	ck_assert_double_eq_tol(c.disagreement, 0, 1e-12);
	ck_assert_ptr_nonnull(strstr(c.why, "agree"));
	/* Entropy of (0.9, 0.1) over log 2. */
	ck_assert_double_eq_tol(c.heterogeneity,
	                        -(0.9 * log(0.9) + 0.1 * log(0.1)) / log(2),
	                        1e-12);

	input3(&in, groupmix);
	zm_granauto_decide(&g, &in, &c);
	ck_assert_int_eq(c.level, ZM_GRAN_GROUP);
	/* mean = (1.9/3, 1.1/3); unit 2 lies |0.1 - 1.9/3| from it. */
	ck_assert_double_eq_tol(c.disagreement, 1.9 / 3 - 0.1, 1e-12);
	ck_assert_double_eq_tol(c.within, 0, 1e-12);

	input3(&in, layermix);
	zm_granauto_decide(&g, &in, &c);
	ck_assert_int_eq(c.level, ZM_GRAN_LAYER);
	/* Group 0's mean is (0.5, 0.5): units 0 and 1 lie 0.4 from it. */
	ck_assert_double_eq_tol(c.within, 0.4, 1e-12);

	/* A weighting that reads only the input: full, whatever the sample
	 * would say. */
	in.units_same = true;
	zm_granauto_decide(&g, &in, &c);
	ck_assert_int_eq(c.level, ZM_GRAN_FULL);
	ck_assert_ptr_nonnull(strstr(c.why, "same weights"));
	in.units_same = false;

	/* No layer level in this run: the finest allowed. */
	in.allowed[ZM_GRAN_LAYER] = false;
	zm_granauto_decide(&g, &in, &c);
	ck_assert_int_eq(c.level, ZM_GRAN_GROUP);
	in.allowed[ZM_GRAN_GROUP] = false;
	zm_granauto_decide(&g, &in, &c);
	ck_assert_int_eq(c.level, ZM_GRAN_FULL);
}
END_TEST

/* A small disagreement passes on a one-kind batch and not on a spread
 * one: tau shrinks with heterogeneity. */
START_TEST(test_heterogeneity)
{
	struct zm_granauto g;
	struct zm_granauto_input in;
	struct zm_granauto_choice c;
	/* Units 0.125 from their mean both times; the mean (0.85, 0.15) is
	 * mostly one kind of input (heterogeneity 0.61, tau 0.15 (1 - 0.25 *
	 * 0.61) = 0.127), (0.55, 0.45) a mix (tau near 0.113). */
	static const double narrow[6] = { 0.975, 0.025, 0.725, 0.275, 0.85, 0.15 };
	static const double spread[6] = { 0.675, 0.325, 0.425, 0.575, 0.55, 0.45 };

	zm_granauto_init(&g);
	input3(&in, narrow);
	zm_granauto_decide(&g, &in, &c);
	ck_assert_double_eq_tol(c.disagreement, 0.125, 1e-12);
	ck_assert_int_eq(c.level, ZM_GRAN_FULL);
	input3(&in, spread);
	zm_granauto_decide(&g, &in, &c);
	ck_assert_double_eq_tol(c.disagreement, 0.125, 1e-12);
	ck_assert_int_ne(c.level, ZM_GRAN_FULL);
}
END_TEST

START_TEST(test_budget)
{
	struct zm_granauto g;
	struct zm_granauto_input in;
	struct zm_granauto_choice c;

	zm_granauto_init(&g);
	g.ms_per_row[ZM_GRAN_FULL] = 0.001;
	g.ms_per_row[ZM_GRAN_GROUP] = 0.002;
	g.ms_per_row[ZM_GRAN_LAYER] = 0.010;
	/* Measured without spread: the upper end is the mean. */
	g.measured[ZM_GRAN_FULL] = g.measured[ZM_GRAN_GROUP] = 2;
	g.measured[ZM_GRAN_LAYER] = 2;
	input3(&in, layermix);
	/* 1000 rows: full 1 ms, group 2 ms, layer 10 ms. */
	in.budget_ms = 20;
	zm_granauto_decide(&g, &in, &c);
	ck_assert_int_eq(c.level, ZM_GRAN_LAYER);
	ck_assert_double_eq_tol(c.estimate_ms, 10, 1e-9);
	in.budget_ms = 5;
	zm_granauto_decide(&g, &in, &c);
	ck_assert_int_eq(c.level, ZM_GRAN_GROUP);
	ck_assert_ptr_nonnull(strstr(c.why, "budget"));
	/* 2 ms is over 0.9 * 2.1 ms: full. */
	in.budget_ms = 2.1;
	zm_granauto_decide(&g, &in, &c);
	ck_assert_int_eq(c.level, ZM_GRAN_FULL);
	/* The sample's own time counts against the budget. */
	in.budget_ms = 5;
	in.sample_ms = 3;
	zm_granauto_decide(&g, &in, &c);
	ck_assert_int_eq(c.level, ZM_GRAN_FULL);
	/* The spread counts: layer 10 ms with a standard deviation of
	 * 2 ms per batch is held at 10 + 2 * 2 = 14 ms. */
	in.sample_ms = 0;
	g.var_per_row[ZM_GRAN_LAYER] = 0.002 * 0.002;
	ck_assert_double_eq_tol(zm_granauto_upper(&g, ZM_GRAN_LAYER, 1000, NAN),
	                        14, 1e-9);
	in.budget_ms = 15;       /* 13.5 */
	zm_granauto_decide(&g, &in, &c);
	ck_assert_int_eq(c.level, ZM_GRAN_GROUP);
	in.budget_ms = 16;       /* 14.4 */
	zm_granauto_decide(&g, &in, &c);
	ck_assert_int_eq(c.level, ZM_GRAN_LAYER);
	/* Levels never measured: the layer level's estimate is the
	 * sample's cost per row (4 ms), the group's halfway from full
	 * ((0.001 + 0.004) / 2 * 1000 = 2.5 ms); with no level timed twice
	 * each is held at twice its estimate. */
	g.ms_per_row[ZM_GRAN_LAYER] = NAN;
	g.ms_per_row[ZM_GRAN_GROUP] = NAN;
	g.measured[ZM_GRAN_LAYER] = g.measured[ZM_GRAN_GROUP] = 0;
	g.measured[ZM_GRAN_FULL] = 1;
	in.sample_ms_per_row = 0.004;
	in.budget_ms = 4;
	zm_granauto_decide(&g, &in, &c);
	ck_assert_int_eq(c.level, ZM_GRAN_FULL);
	in.budget_ms = 6;        /* 5.4: group's 5 fits, layer's 8 not */
	zm_granauto_decide(&g, &in, &c);
	ck_assert_int_eq(c.level, ZM_GRAN_GROUP);
	ck_assert_double_eq_tol(c.estimate_ms, 2.5, 1e-9);
	/* Full timed 3 times with a deviation of a tenth of its mean:
	 * the others take that relative spread, layer 4 (1 + 2 * 0.1). */
	g.measured[ZM_GRAN_FULL] = 3;
	g.var_per_row[ZM_GRAN_FULL] = 0.0001 * 0.0001;
	ck_assert_double_eq_tol(zm_granauto_upper(&g, ZM_GRAN_LAYER, 1000,
	                                          0.004), 4.8, 1e-9);
	in.budget_ms = 5.4;      /* 4.86 */
	zm_granauto_decide(&g, &in, &c);
	ck_assert_int_eq(c.level, ZM_GRAN_LAYER);
	/* Nothing known of the finer levels (no sample): full. */
	in.sample_ms_per_row = NAN;
	in.budget_ms = 1000;
	zm_granauto_decide(&g, &in, &c);
	ck_assert_int_eq(c.level, ZM_GRAN_FULL);
	in.sample_ms_per_row = 0.004;
	/* Under a budget no probe runs a level finer than the input asks
	 * for; without one, a level not run for a while is probed. */
	{
		struct zm_granauto h;
		struct zm_granauto_input hin;

		zm_granauto_init(&h);
		h.ms_per_row[ZM_GRAN_FULL] = h.ms_per_row[ZM_GRAN_GROUP] =
			h.ms_per_row[ZM_GRAN_LAYER] = 0.001;
		h.measured[ZM_GRAN_FULL] = 100;
		h.batches = 100;
		h.last_run[ZM_GRAN_FULL] = 100;
		input3(&hin, homog);
		hin.budget_ms = 1000;
		zm_granauto_decide(&h, &hin, &c);
		ck_assert_int_eq(c.level, ZM_GRAN_FULL);
		ck_assert(!c.probe);
		hin.budget_ms = 0;
		zm_granauto_decide(&h, &hin, &c);
		ck_assert(c.probe);
		ck_assert_int_eq(c.level, ZM_GRAN_GROUP);
	}
	/* A saturated machine takes one level coarser. */
	in.budget_ms = 100;
	in.saturated = true;
	zm_granauto_decide(&g, &in, &c);
	ck_assert_int_eq(c.level, ZM_GRAN_GROUP);
	ck_assert_ptr_nonnull(strstr(c.why, "saturated"));
}
END_TEST

/*
 * A stream under a budget that the layer level exceeds and the full level
 * meets, with noisy batch times (a fake cost sequence: each level's cost
 * per row times 1 + 0.15 N(0, 1), and one batch in 25 slowed by half
 * again): the controller starts at full, learns the costs from the
 * sample and its probes, and keeps at least 99 % of the batches within
 * the budget, never running the layer level; with a budget that the
 * group level fits, it runs there.
 */
static double noisy(struct zm_rng *rng, double ms)
{
	double f = 1 + 0.15 * zm_rng_normal(rng);

	if (zm_rng_uniform(rng) < 0.04)
		f *= 1.5;
	return ms * (f > 0.2 ? f : 0.2);
}

static void run_budget(double budget, uint64_t *within, uint64_t *used)
{
	/* ms per row: full 0.01, group 0.02, layer 0.04 (256 rows:
	 * 2.56, 5.12, 10.24 ms); the sample: 16 rows at the layer level. */
	static const double cost[3] = { 0.01, 0.02, 0.04 };
	struct zm_granauto g;
	struct zm_granauto_input in;
	struct zm_granauto_choice c;
	struct zm_rng rng;
	double ms;
	int b;

	zm_rng_seed(&rng, 42);
	zm_granauto_init(&g);
	*within = 0;
	for (b = 0; b < 2000; b++) {
		input3(&in, layermix);
		in.rows = 256;
		in.budget_ms = budget;
		in.sample_ms = noisy(&rng, 16 * cost[ZM_GRAN_LAYER]);
		in.sample_ms_per_row = in.sample_ms / 16;
		zm_granauto_decide(&g, &in, &c);
		ms = noisy(&rng, 256 * cost[c.level]);
		zm_granauto_observe(&g, &in, &c, 256, ms);
		*within += ms + in.sample_ms <= budget;
	}
	memcpy(used, g.used, sizeof(g.used));
	ck_assert_uint_eq(g.batches - g.over_budget, *within);
}

START_TEST(test_budget_noise)
{
	uint64_t within, used[ZM_GRANAUTO_LEVELS];

	/* 5 ms: full (2.56 + the sample's 0.64 ms) meets it, group
	 * (5.12 ms) and layer exceed it. */
	run_budget(5, &within, used);
	ck_assert_uint_ge(within, 1980);
	ck_assert_uint_eq(used[ZM_GRAN_LAYER], 0);
	ck_assert_uint_eq(used[ZM_GRAN_FULL], 2000 - used[ZM_GRAN_GROUP]);
	/* 10 ms: group fits with room for its noise, layer does not.  A
	 * slow group batch widens its spread and sends the batches to full
	 * until the next probe: group runs a good share, not all. */
	run_budget(10, &within, used);
	ck_assert_uint_ge(within, 1980);
	ck_assert_uint_eq(used[ZM_GRAN_LAYER], 0);
	ck_assert_uint_gt(used[ZM_GRAN_GROUP], 500);
	/* No budget worth the name: the layer level the weights ask for. */
	run_budget(100, &within, used);
	ck_assert_uint_eq(within, 2000);
	ck_assert_uint_gt(used[ZM_GRAN_LAYER], 1800);   /* less the probes */
}
END_TEST

START_TEST(test_observe_and_probe)
{
	struct zm_granauto g;
	struct zm_granauto_input in;
	struct zm_granauto_choice c;
	int b;

	zm_granauto_init(&g);
	input3(&in, homog);
	zm_granauto_decide(&g, &in, &c);
	zm_granauto_observe(&g, &in, &c, 1000, 2.0);
	ck_assert_double_eq_tol(g.ms_per_row[ZM_GRAN_FULL], 0.002, 1e-15);
	zm_granauto_observe(&g, &in, &c, 1000, 4.0);
	ck_assert_double_eq_tol(g.ms_per_row[ZM_GRAN_FULL],
	                        (1 - ZM_GRANAUTO_EMA) * 0.002 +
	                        ZM_GRANAUTO_EMA * 0.004, 1e-15);
	ck_assert_uint_eq(g.used[ZM_GRAN_FULL], 2);
	/* Drift: this batch against the last one's mean weights. */
	input3(&in, groupmix);
	zm_granauto_decide(&g, &in, &c);
	ck_assert_double_eq_tol(c.drift, 0.9 - 1.9 / 3, 1e-12);
	/* Full every batch: group is probed once PROBE_EVERY batches went
	 * by without it, then not again at once. */
	input3(&in, homog);
	for (b = 2; b < ZM_GRANAUTO_PROBE_EVERY - 1; b++) {
		zm_granauto_decide(&g, &in, &c);
		ck_assert(!c.probe);
		zm_granauto_observe(&g, &in, &c, 1000, 2.0);
	}
	zm_granauto_decide(&g, &in, &c);
	ck_assert(c.probe);
	ck_assert_int_eq(c.level, ZM_GRAN_GROUP);
	ck_assert_ptr_nonnull(strstr(c.why, "probe"));
	zm_granauto_observe(&g, &in, &c, 1000, 3.0);
	ck_assert_uint_eq(g.probes, 1);
	ck_assert_uint_eq(g.switches, 1);
	zm_granauto_decide(&g, &in, &c);
	ck_assert(c.probe);
	ck_assert_int_eq(c.level, ZM_GRAN_LAYER);
	zm_granauto_observe(&g, &in, &c, 1000, 3.0);
	zm_granauto_decide(&g, &in, &c);
	ck_assert(!c.probe);
	ck_assert_int_eq(c.level, ZM_GRAN_FULL);
}
END_TEST

START_TEST(test_prior_and_rules)
{
	struct zm_granauto g;
	struct zm_granauto_input in;
	struct zm_granauto_choice c;
	struct zm_gc_rule rule;
	struct zm_gc_rules rules;

	zm_granauto_init(&g);
	/* No evidence: the prior, else full. */
	input3(&in, NULL);
	zm_granauto_decide(&g, &in, &c);
	ck_assert_int_eq(c.level, ZM_GRAN_FULL);
	in.has_prior = true;
	in.prior = ZM_GRAN_LAYER;
	zm_granauto_decide(&g, &in, &c);
	ck_assert_int_eq(c.level, ZM_GRAN_LAYER);
	ck_assert_ptr_nonnull(strstr(c.why, "prior"));
	/* A rule on the batch's agreement decides. */
	memset(&rule, 0, sizeof(rule));
	memset(&rules, 0, sizeof(rules));
	rule.when.kind = ZM_GC_COND_CMP;
	rule.when.metric = ZM_GC_AGREEMENT;
	rule.when.op = ZM_GC_LT;
	rule.when.value = 0.95;
	rule.level = ZM_GRAN_LAYER;
	rules.rules = &rule;
	rules.n_rules = 1;
	input3(&in, groupmix);
	in.rules = &rules;
	zm_granauto_decide(&g, &in, &c);
	ck_assert_int_eq(c.level, ZM_GRAN_LAYER);
	ck_assert_ptr_nonnull(strstr(c.why, "rule 1"));
	/* It does not hold on one kind of input: the data decides. */
	input3(&in, homog);
	in.rules = &rules;
	zm_granauto_decide(&g, &in, &c);
	ck_assert_int_eq(c.level, ZM_GRAN_FULL);
	/* The rules' default when no rule holds. */
	rules.has_default = true;
	rules.dflt = ZM_GRAN_GROUP;
	zm_granauto_decide(&g, &in, &c);
	ck_assert_int_eq(c.level, ZM_GRAN_GROUP);
}
END_TEST

START_TEST(test_state_lines)
{
	struct zm_granauto g, h;
	struct zm_error err;
	enum zm_status st;
	struct zm_buf b;
	const char *p, *e;

	zm_granauto_init(&g);
	ck_assert(!zm_granauto_parse_line(&g, "score m0 -1", 11, &st, &err));
	ck_assert_int_eq(st, ZM_OK);
	ck_assert(zm_granauto_parse_line(&g, "cost layer 0.25", 15, &st, &err));
	ck_assert_int_eq(st, ZM_OK);
	ck_assert_double_eq(g.ms_per_row[ZM_GRAN_LAYER], 0.25);
	ck_assert(zm_granauto_parse_line(&g, "cost layer x", 12, &st, &err));
	ck_assert_int_eq(st, ZM_ERR_FORMAT);
	ck_assert(zm_granauto_parse_line(&g, "cost deep 1", 11, &st, &err));
	ck_assert_int_eq(st, ZM_ERR_FORMAT);
	ck_assert(zm_granauto_parse_line(&g, "cost full -1", 12, &st, &err));
	ck_assert_int_eq(st, ZM_ERR_FORMAT);
	/* Round trip. */
	g.ms_per_row[ZM_GRAN_FULL] = 0.125;
	zm_buf_init(&b);
	zm_granauto_format(&g, &b);
	ck_assert(!b.failed);
	zm_granauto_init(&h);
	for (p = b.data; p && *p; p = e + 1) {
		e = strchr(p, '\n');
		ck_assert_ptr_nonnull(e);
		ck_assert(zm_granauto_parse_line(&h, p, (size_t)(e - p), &st,
		                                 &err));
		ck_assert_int_eq(st, ZM_OK);
	}
	ck_assert_double_eq(h.ms_per_row[ZM_GRAN_FULL], 0.125);
	ck_assert_double_eq(h.ms_per_row[ZM_GRAN_LAYER], 0.25);
	ck_assert(isnan(h.ms_per_row[ZM_GRAN_GROUP]));
	zm_buf_release(&b);
}
END_TEST

Suite *suite_granauto(void)
{
	Suite *s = suite_create("granauto");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_kinds_of_batch);
	tcase_add_test(tc, test_heterogeneity);
	tcase_add_test(tc, test_budget);
	tcase_add_test(tc, test_budget_noise);
	tcase_add_test(tc, test_observe_and_probe);
	tcase_add_test(tc, test_prior_and_rules);
	tcase_add_test(tc, test_state_lines);
	suite_add_tcase(s, tc);
	return s;
}
