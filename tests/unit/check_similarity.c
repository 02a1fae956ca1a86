/*
 * Similarity metrics against closed forms worked out here by hand, the
 * GEMM per-row path against the scalar function on random data, and the
 * softmax / top-k / minimum-weight rule.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "profile.h"
#include "similarity.h"
#include "unit.h"

static uint64_t rng_state;

static double urand(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (double)((rng_state * 2685821657736338717ULL) >> 11) /
	       9007199254740992.0;
}

#define ASSERT_NEAR(got, want, tol)                                        \
	ck_assert_msg(fabs((got) - (want)) <= (tol),                       \
	              "%s = %.17g, want %.17g", #got, (double)(got),        \
	              (double)(want))

/* KL(N(a, s) || N(b, t)) for one feature, the textbook formula with its
 * log term (the implementation uses the cancelled symmetric form). */
static double kl1(double a, double s, double b, double t)
{
	return 0.5 * (log(t / s) + (s + (a - b) * (a - b)) / t - 1);
}

START_TEST(test_metric_names)
{
	enum zm_metric m;
	int i;

	for (i = 0; i < ZM_METRIC_COUNT; i++) {
		ck_assert(zm_metric_parse(zm_metric_name((enum zm_metric)i),
		                          &m));
		ck_assert_int_eq(m, i);
	}
	ck_assert(zm_metric_parse("mahalanobis", &m));
	ck_assert_int_eq(m, ZM_METRIC_MAHALANOBIS);
	ck_assert(!zm_metric_parse("KL", &m));
	ck_assert(!zm_metric_parse("", &m));
}
END_TEST

START_TEST(test_cosine)
{
	const double a[3] = { 1, 2, 3 }, par[3] = { 2, 4, 6 };
	const double opp[3] = { -0.5, -1, -1.5 }, orth[3] = { 3, 0, -1 };
	const double b[3] = { 4, 5, 6 }, zero[3] = { 0, 0, 0 };
	double want = 32 / (sqrt(14.0) * sqrt(77.0));

	ASSERT_NEAR(zm_similarity(ZM_METRIC_COSINE, a, NULL, par, NULL, 3,
	                          ZM_SIM_FLOOR_AUTO), 1.0, 1e-15);
	ASSERT_NEAR(zm_similarity(ZM_METRIC_COSINE, a, NULL, opp, NULL, 3,
	                          ZM_SIM_FLOOR_AUTO), -1.0, 1e-15);
	ASSERT_NEAR(zm_similarity(ZM_METRIC_COSINE, a, NULL, orth, NULL, 3,
	                          ZM_SIM_FLOOR_AUTO), 0.0, 1e-15);
	ASSERT_NEAR(zm_similarity(ZM_METRIC_COSINE, a, NULL, b, NULL, 3,
	                          ZM_SIM_FLOOR_AUTO), want, 1e-15);
	ck_assert(zm_similarity(ZM_METRIC_COSINE, zero, NULL, b, NULL, 3,
	                        ZM_SIM_FLOOR_AUTO) == 0);
	ck_assert(zm_similarity(ZM_METRIC_COSINE, a, NULL, zero, NULL, 3,
	                        ZM_SIM_FLOOR_AUTO) == 0);
}
END_TEST

START_TEST(test_kl_closed_form)
{
	/* Feature 1: N(0, 1) against N(1, 2); feature 2: N(3, 0.5) against
	 * N(3, 0.5), which contributes nothing. */
	const double pm[2] = { 0, 3 }, pv[2] = { 1, 0.5 };
	const double qm[2] = { 1, 3 }, qv[2] = { 2, 0.5 };
	double sym = kl1(0, 1, 1, 2) + kl1(1, 2, 0, 1);
	double got;

	/* By hand: 0.5 ln 2 + 0.5 (2 - ln 2) = 1. */
	ASSERT_NEAR(sym, 1.0, 1e-15);
	got = zm_similarity(ZM_METRIC_KL, pm, pv, qm, qv, 2, 1e-12);
	ASSERT_NEAR(got, -sym / 2, 1e-14);
	/* The automatic floor, 1e-2 * (1.5/2 + 2.5/2) / 2 = 0.01, is below
	 * every variance here and changes nothing. */
	ASSERT_NEAR(zm_similarity(ZM_METRIC_KL, pm, pv, qm, qv, 2,
	                          ZM_SIM_FLOOR_AUTO), -0.5, 1e-14);
	/* Identical distributions are at distance 0. */
	ck_assert(zm_similarity(ZM_METRIC_KL, pm, pv, pm, pv, 2, 1e-12) == 0);
}
END_TEST

START_TEST(test_kl_zero_variance_floor)
{
	/* One row x = 1 (variance 0) against N(0, 1) with floor 0.01: the
	 * row becomes N(1, 0.01), so the score is -(KL + KL reversed). */
	const double x[1] = { 1 }, m[1] = { 0 }, v[1] = { 1 };
	double want = -(kl1(1, 0.01, 0, 1) + kl1(0, 1, 1, 0.01));
	double f;

	ASSERT_NEAR(zm_similarity(ZM_METRIC_KL, x, NULL, m, v, 1, 0.01),
	            want, 1e-12);
	/* By hand: 0.5 (0.01 + 100 - 2 + 1 * (100 + 1)) = 99.505. */
	ASSERT_NEAR(want, -99.505, 1e-12);
	/* Automatic floor: 1e-2 * (0 + 1) / 2 = 0.005. */
	f = 0.005;
	ASSERT_NEAR(zm_similarity(ZM_METRIC_KL, x, NULL, m, v, 1,
	                          ZM_SIM_FLOOR_AUTO),
	            -(kl1(1, f, 0, 1) + kl1(0, 1, 1, f)), 1e-9);
}
END_TEST

START_TEST(test_kl_symmetric)
{
	double am[5], av[5], bm[5], bv[5], ab, ba;
	int i, trial;

	rng_state = 11;
	for (trial = 0; trial < 20; trial++) {
		for (i = 0; i < 5; i++) {
			am[i] = 4 * urand() - 2;
			bm[i] = 4 * urand() - 2;
			av[i] = i == 3 ? 0 : 3 * urand();
			bv[i] = 3 * urand();
		}
		ab = zm_similarity(ZM_METRIC_KL, am, av, bm, bv, 5,
		                   ZM_SIM_FLOOR_AUTO);
		ba = zm_similarity(ZM_METRIC_KL, bm, bv, am, av, 5,
		                   ZM_SIM_FLOOR_AUTO);
		ck_assert(ab < 0);
		ASSERT_NEAR(ab, ba, 1e-12 * fabs(ab));
	}
}
END_TEST

START_TEST(test_mahalanobis)
{
	const double q[3] = { 1, 2, 0 }, m[3] = { 0, 0, 0 };
	const double v[3] = { 1, 4, 9 };
	const double q2[2] = { 0, 0.1 }, m2[2] = { 0, 0 }, v2[2] = { 1, 0 };
	const double qv[3] = { 100, 100, 100 };

	/* (1/1 + 4/4 + 0/9) / 3 = 2/3. */
	ASSERT_NEAR(zm_similarity(ZM_METRIC_MAHALANOBIS, q, NULL, m, v, 3,
	                          ZM_SIM_FLOOR_AUTO), -sqrt(2.0 / 3), 1e-15);
	/* The query's variance plays no part. */
	ASSERT_NEAR(zm_similarity(ZM_METRIC_MAHALANOBIS, q, qv, m, v, 3,
	                          ZM_SIM_FLOOR_AUTO), -sqrt(2.0 / 3), 1e-15);
	/* A zero model variance is floored: (0 + 0.01 / 0.01) / 2. */
	ASSERT_NEAR(zm_similarity(ZM_METRIC_MAHALANOBIS, q2, NULL, m2, v2, 2,
	                          0.01), -sqrt(0.5), 1e-15);
	/* Automatic floor 1e-2 * mean(1, 0) = 0.005: (0.01 / 0.005) / 2. */
	ASSERT_NEAR(zm_similarity(ZM_METRIC_MAHALANOBIS, q2, NULL, m2, v2, 2,
	                          ZM_SIM_FLOOR_AUTO), -1.0, 1e-12);
}
END_TEST

/* For every metric the nearer of two models scores higher. */
START_TEST(test_higher_is_nearer)
{
	const double q[2] = { 1, 1 }, qv[2] = { 0.5, 0.5 };
	const double near[2] = { 1.1, 0.9 }, far[2] = { -1, 3 };
	const double v[2] = { 1, 1 };
	int i;

	for (i = 0; i < ZM_METRIC_COUNT; i++)
		ck_assert_msg(zm_similarity((enum zm_metric)i, q, qv, near, v,
		                            2, ZM_SIM_FLOOR_AUTO) >
		              zm_similarity((enum zm_metric)i, q, qv, far, v,
		                            2, ZM_SIM_FLOOR_AUTO),
		              "metric %s", zm_metric_name((enum zm_metric)i));
}
END_TEST

START_TEST(test_entries)
{
	const float x[6] = { 0, 1, 2, 3, 4, 8 }, y[4] = { 1, 1, 3, 5 };
	double qm[2], qv[2], mm[2], mv[2], got;
	struct zm_profile a, b;
	struct zm_error err;
	int i;

	zm_profile_init(&a);
	zm_profile_init(&b);
	ck_assert_int_eq(zm_profile_add_batch(&a, "input", x, 3, 2, NULL),
	                 ZM_OK);
	ck_assert_int_eq(zm_profile_add_batch(&b, "input", y, 2, 2, NULL),
	                 ZM_OK);
	ck_assert_int_eq(zm_profile_add_batch(&b, "fc1", y, 4, 1, NULL),
	                 ZM_OK);
	zm_profile_entry_moments(zm_profile_find(&a, "input"), qm, qv);
	zm_profile_entry_moments(zm_profile_find(&b, "input"), mm, mv);
	/* Column 0 of x is 0, 2, 4: mean 2, variance 8/3. */
	ck_assert(qm[0] == 2);
	ASSERT_NEAR(qv[0], 8.0 / 3, 1e-15);
	for (i = 0; i < ZM_METRIC_COUNT; i++) {
		ck_assert_int_eq(zm_similarity_entries(
			(enum zm_metric)i, zm_profile_find(&a, "input"),
			zm_profile_find(&b, "input"), ZM_SIM_FLOOR_AUTO, &got,
			&err), ZM_OK);
		ASSERT_NEAR(got, zm_similarity((enum zm_metric)i, qm, qv, mm,
		                               mv, 2, ZM_SIM_FLOOR_AUTO),
		            1e-12);
	}
	ck_assert_int_eq(zm_similarity_entries(ZM_METRIC_KL,
	                                       zm_profile_find(&a, "input"),
	                                       zm_profile_find(&b, "fc1"),
	                                       ZM_SIM_FLOOR_AUTO, &got, &err),
	                 ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "fc1"));
	zm_profile_release(&a);
	zm_profile_release(&b);
}
END_TEST

/*
 * The GEMM path against the scalar function row by row, for every metric,
 * an explicit and the automatic floor, a small and a large common offset,
 * and n crossing the row block.  Some model variances are 0 (floored), one
 * row and one model mean are zero vectors (cosine's special case).
 */
static void check_rows(enum zm_metric metric, double offset, double floor)
{
	const size_t n = 300, d = 37, k = 5;
	float *x = malloc(n * d * sizeof(*x));
	float *mm = malloc(k * d * sizeof(*mm)), *mv = malloc(k * d * 4);
	double *s = malloc(n * k * sizeof(*s));
	double xr[37], mr[37], vr[37], want;
	size_t i, j, c;

	ck_assert(x && mm && mv && s);
	for (i = 0; i < n * d; i++)
		x[i] = (float)(offset + 2 * urand() - 1);
	for (c = 0; c < k; c++)
		for (j = 0; j < d; j++) {
			mm[c * d + j] = (float)(offset + 0.3 * c + urand() - 0.5);
			mv[c * d + j] = j % 9 == 4 ? 0.0f
			                           : (float)(0.05 + urand());
		}
	if (offset == 0) {
		memset(x + 7 * d, 0, d * sizeof(*x));
		memset(mm + 2 * d, 0, d * sizeof(*mm));
	}
	ck_assert_int_eq(zm_similarity_rows(metric, x, n, d, mm, mv, k, floor,
	                                    s, NULL), ZM_OK);
	for (i = 0; i < n; i++) {
		for (j = 0; j < d; j++)
			xr[j] = x[i * d + j];
		for (c = 0; c < k; c++) {
			double err, got;
			for (j = 0; j < d; j++) {
				mr[j] = mm[c * d + j];
				vr[j] = mv[c * d + j];
			}
			want = zm_similarity(metric, xr, NULL, mr, vr, d,
			                     floor);
			got = s[i * k + c];
			/* Mahalanobis is the square root of what the GEMM
			 * computes, which turns an F32 rounding of 1e-6
			 * near a distance of 0 into 1e-3: compare squares. */
			if (metric == ZM_METRIC_MAHALANOBIS) {
				got *= got;
				want *= want;
			}
			err = fabs(got - want) / (1 + fabs(want));
			ck_assert_msg(err < 1e-5, "%s offset %g row %zu model "
			              "%zu: %.9g, want %.9g",
			              zm_metric_name(metric), offset, i, c,
			              got, want);
		}
	}
	if (offset == 0 && metric == ZM_METRIC_COSINE)
		ck_assert(s[7 * k + 0] == 0 && s[0 * k + 2] == 0);
	free(x);
	free(mm);
	free(mv);
	free(s);
}

START_TEST(test_rows_match_scalar)
{
	const double offsets[2] = { 0, 1000 }, floors[2] = { ZM_SIM_FLOOR_AUTO,
	                                                       0.02 };
	int m, o, f;

	rng_state = 77;
	for (m = 0; m < ZM_METRIC_COUNT; m++)
		for (o = 0; o < 2; o++)
			for (f = 0; f < 2; f++)
				check_rows((enum zm_metric)m, offsets[o],
				           floors[f]);
}
END_TEST

START_TEST(test_weights_softmax)
{
	const double s[3] = { 1, 2, 3 };
	double w[3], z = exp(1) + exp(2) + exp(3);
	int i;

	ck_assert_int_eq(zm_weights_from_scores(s, 3, 1.0, 0, 0, w, NULL),
	                 ZM_OK);
	for (i = 0; i < 3; i++)
		ASSERT_NEAR(w[i], exp(s[i]) / z, 1e-15);
	/* Temperature 2 halves the scores. */
	z = exp(0.5) + exp(1) + exp(1.5);
	ck_assert_int_eq(zm_weights_from_scores(s, 3, 2.0, 0, 0, w, NULL),
	                 ZM_OK);
	for (i = 0; i < 3; i++)
		ASSERT_NEAR(w[i], exp(s[i] / 2) / z, 1e-15);
}
END_TEST

START_TEST(test_weights_extremes)
{
	/* Scores far apart: a naive exp(s) would overflow. */
	const double s[4] = { 800, 805, 803, -1e6 };
	double w[4], sum = 0;
	int i;

	ck_assert_int_eq(zm_weights_from_scores(s, 4, 1.0, 0, 0, w, NULL),
	                 ZM_OK);
	for (i = 0; i < 4; i++) {
		ck_assert(isfinite(w[i]) && w[i] >= 0);
		sum += w[i];
	}
	ASSERT_NEAR(sum, 1.0, 1e-15);
	/* A tiny temperature picks the argmax. */
	ck_assert_int_eq(zm_weights_from_scores(s, 4, 1e-6, 0, 0, w, NULL),
	                 ZM_OK);
	ck_assert(w[1] == 1 && w[0] == 0 && w[2] == 0 && w[3] == 0);
}
END_TEST

START_TEST(test_weights_top_k)
{
	const double s[5] = { 0.1, 0.9, 0.5, 0.7, 0.2 };
	const double ties[4] = { 1, 1, 1, 1 };
	double w[5], z = exp(0.9) + exp(0.7);
	int i, nonzero = 0;

	ck_assert_int_eq(zm_weights_from_scores(s, 5, 1.0, 2, 0, w, NULL),
	                 ZM_OK);
	for (i = 0; i < 5; i++)
		nonzero += w[i] != 0;
	ck_assert_int_eq(nonzero, 2);
	ASSERT_NEAR(w[1], exp(0.9) / z, 1e-15);
	ASSERT_NEAR(w[3], exp(0.7) / z, 1e-15);
	/* Ties go to the lower index. */
	ck_assert_int_eq(zm_weights_from_scores(ties, 4, 1.0, 3, 0, w, NULL),
	                 ZM_OK);
	for (i = 0; i < 3; i++)
		ASSERT_NEAR(w[i], 1.0 / 3, 1e-15);
	ck_assert(w[3] == 0);
	/* top_k >= k keeps all. */
	ck_assert_int_eq(zm_weights_from_scores(s, 5, 1.0, 9, 0, w, NULL),
	                 ZM_OK);
	for (i = 0; i < 5; i++)
		ck_assert(w[i] > 0);
}
END_TEST

START_TEST(test_weights_min_weight)
{
	const double s[3] = { log(0.6), log(0.3), log(0.1) };
	double w[3];

	ck_assert_int_eq(zm_weights_from_scores(s, 3, 1.0, 0, 0.15, w, NULL),
	                 ZM_OK);
	ASSERT_NEAR(w[0], 0.6 / 0.9, 1e-15);
	ASSERT_NEAR(w[1], 0.3 / 0.9, 1e-15);
	ck_assert(w[2] == 0);
	/* Everything dropped: the best model alone. */
	ck_assert_int_eq(zm_weights_from_scores(s, 3, 1.0, 0, 0.99, w, NULL),
	                 ZM_OK);
	ck_assert(w[0] == 1 && w[1] == 0 && w[2] == 0);
	/* After top-2 the weights are 2/3 and 1/3, so 0.5 drops the second. */
	ck_assert_int_eq(zm_weights_from_scores(s, 3, 1.0, 2, 0.5, w, NULL),
	                 ZM_OK);
	ck_assert(w[0] == 1 && w[1] == 0 && w[2] == 0);
}
END_TEST

START_TEST(test_weights_errors_and_rows)
{
	const double s[6] = { 1, 2, 3, 3, 2, 1 };
	double bad[2] = { 1, NAN }, w[6], one[3];
	struct zm_error err;
	int r, i;

	ck_assert_int_eq(zm_weights_from_scores(s, 3, 0.0, 0, 0, w, &err),
	                 ZM_ERR_USAGE);
	ck_assert_int_eq(zm_weights_from_scores(s, 3, INFINITY, 0, 0, w,
	                                        &err), ZM_ERR_USAGE);
	ck_assert_int_eq(zm_weights_from_scores(s, 0, 1.0, 0, 0, w, &err),
	                 ZM_ERR_USAGE);
	ck_assert_int_eq(zm_weights_from_scores(bad, 2, 1.0, 0, 0, w, &err),
	                 ZM_ERR_DATA);
	ck_assert_int_eq(zm_weights_from_scores_rows(s, 2, 3, 0.5, 2, 0, w,
	                                             &err), ZM_OK);
	for (r = 0; r < 2; r++) {
		ck_assert_int_eq(zm_weights_from_scores(s + 3 * r, 3, 0.5, 2,
		                                        0, one, NULL), ZM_OK);
		for (i = 0; i < 3; i++)
			ck_assert(w[3 * r + i] == one[i]);
	}
	ck_assert(w[0] == 0 && w[5] == 0);
	memcpy(w, s, sizeof(s));
	w[4] = NAN;
	ck_assert_int_eq(zm_weights_from_scores_rows(w, 2, 3, 1.0, 0, 0, one,
	                                             &err), ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "row 1"));
}
END_TEST

Suite *suite_similarity(void)
{
	Suite *s = suite_create("similarity");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_metric_names);
	tcase_add_test(tc, test_cosine);
	tcase_add_test(tc, test_kl_closed_form);
	tcase_add_test(tc, test_kl_zero_variance_floor);
	tcase_add_test(tc, test_kl_symmetric);
	tcase_add_test(tc, test_mahalanobis);
	tcase_add_test(tc, test_higher_is_nearer);
	tcase_add_test(tc, test_entries);
	tcase_add_test(tc, test_rows_match_scalar);
	tcase_add_test(tc, test_weights_softmax);
	tcase_add_test(tc, test_weights_extremes);
	tcase_add_test(tc, test_weights_top_k);
	tcase_add_test(tc, test_weights_min_weight);
	tcase_add_test(tc, test_weights_errors_and_rows);
	suite_add_tcase(s, tc);
	return s;
}
