/*
 * Realignment: the assignment solver against brute force over every
 * permutation, a planted assignment recovered at a size brute force
 * cannot reach, a copy whose hidden units (and the statistics and profile
 * entries that follow them) were permuted by the test recovered exactly,
 * independent initialisations brought closer, a conv net's channels
 * recovered alike, the refusal of another architecture, and models
 * realigned into a temporary directory (zm_align_to_temp) and removed.
 */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "align.h"
#include "lineage.h"
#include "model.h"
#include "stream.h"
#include "unit.h"

/* A small deterministic generator of the test's own (xorshift64*). */
static double uniform(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return (double)((*s * UINT64_C(2685821657736338717)) >> 11) /
	       9007199254740992.0;
}

/* A random permutation of n (Fisher-Yates). */
static void shuffle(size_t *p, size_t n, uint64_t *s)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = i;
	for (i = n; i > 1; i--) {
		size_t j = (size_t)(uniform(s) * (double)i), t;
		if (j >= i)
			j = i - 1;
		t = p[i - 1];
		p[i - 1] = p[j];
		p[j] = t;
	}
}

/* The best sum over all permutations of n (n <= 7), by recursion over
 * the column chosen for each row. */
static double brute(const double *score, size_t n, size_t row,
                    unsigned used)
{
	double best = -INFINITY;
	size_t j;

	if (row == n)
		return 0;
	for (j = 0; j < n; j++) {
		double v;
		if (used & (1u << j))
			continue;
		v = score[row * n + j] + brute(score, n, row + 1, used | 1u << j);
		if (v > best)
			best = v;
	}
	return best;
}

static bool is_permutation(const size_t *p, size_t n)
{
	unsigned char seen[64] = { 0 };
	size_t i;

	for (i = 0; i < n; i++) {
		if (p[i] >= n || seen[p[i]])
			return false;
		seen[p[i]] = 1;
	}
	return true;
}

START_TEST(test_assign_brute_force)
{
	uint64_t s = 0x9e3779b97f4a7c15u + (uint64_t)_i;
	double score[49];
	size_t match[7], n, i, trial;
	struct zm_error err;

	for (trial = 0; trial < 40; trial++) {
		double sum = 0;
		n = 1 + trial % 7;
		for (i = 0; i < n * n; i++)
			/* Integers in half the trials: many ties. */
			score[i] = trial % 2 ? floor(uniform(&s) * 4) :
			           uniform(&s) * 20 - 10;
		ck_assert_int_eq(zm_align_assign(score, n, match, &err), ZM_OK);
		ck_assert(is_permutation(match, n));
		for (i = 0; i < n; i++)
			sum += score[i * n + match[i]];
		ck_assert_double_eq_tol(sum, brute(score, n, 0, 0), 1e-9);
	}
}
END_TEST

START_TEST(test_assign_planted)
{
	enum { N = 200 };
	uint64_t s = 42;
	double *score = malloc(N * N * sizeof(double));
	size_t q[N], match[N], i, j;
	struct zm_error err;

	ck_assert_ptr_nonnull(score);
	shuffle(q, N, &s);
	/* Row i's own column q[i] beats every other by more than all the
	 * noise of a whole assignment: the optimum is q. */
	for (i = 0; i < N; i++)
		for (j = 0; j < N; j++)
			score[i * N + j] = uniform(&s) + (j == q[i] ? 2.0 * N : 0);
	ck_assert_int_eq(zm_align_assign(score, N, match, &err), ZM_OK);
	for (i = 0; i < N; i++)
		ck_assert_uint_eq(match[i], q[i]);
	score[7] = NAN;
	ck_assert_int_eq(zm_align_assign(score, N, match, &err), ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "not finite"));
	free(score);
}
END_TEST

static const char mlp_yaml[] =
	"input: [6]\n"
	"layers:\n"
	"  - {name: h1, units: 5, activation: relu}\n"
	"  - {name: bn, type: batchnorm}\n"
	"  - {name: drop, type: dropout, rate: 0.1}\n"
	"  - {name: h2, units: 4, activation: tanh}\n"
	"  - {name: out, units: 3}\n";

/* Adds profile.NAME.mean [n] = values to m. */
static void add_profile(struct zm_model *m, const char *name,
                        const float *values, size_t n)
{
	struct zm_tensor t;
	struct zm_error err;
	int64_t shape[1] = { (int64_t)n };
	char key[64];

	snprintf(key, sizeof(key), "profile.%s.mean", name);
	ck_assert_int_eq(zm_tensor_alloc(&t, key, ZM_DTYPE_F32, 1, shape, &err),
	                 ZM_OK);
	memcpy(t.data, values, n * sizeof(float));
	ck_assert_int_eq(zm_doc_add(&m->extra, &t, &err), ZM_OK);
}

static const float *layer_w(const struct zm_model *m, size_t l)
{
	return m->layers[l].weight.data;
}

static const float *layer_b(const struct zm_model *m, size_t l)
{
	return m->layers[l].bias.data;
}

/* The outputs of m for rows x [n, in] into y [n, out]. */
static void outputs(const struct zm_model *m, const float *x, size_t n,
                    float *y)
{
	struct zm_workspace *ws;
	struct zm_error err;

	ck_assert_int_eq(zm_workspace_new(m->arch, n, false, &ws, &err), ZM_OK);
	memcpy(y, zm_model_forward(m, ws, x, n),
	       n * m->arch->output_features * sizeof(float));
	zm_workspace_free(ws);
}

/*
 * p made a copy of a (both of mlp_yaml) with the hidden units permuted:
 * p's unit j of h1 is a's unit q1[j], of h2 a's q2[j] (something moves),
 * a's batchnorm statistics and profile.h2.mean (prof [5]) made to differ
 * per unit first, so that permuting them matters.
 */
static void permuted_copy(struct zm_model *a, struct zm_model *p,
                          uint64_t *s, size_t q1[5], size_t q2[4],
                          float prof[5])
{
	float pprof[5];
	float *bnw, *bnb;
	size_t i, j, k;

	bnw = a->layers[1].weight.data;
	bnb = a->layers[1].bias.data;
	for (i = 0; i < 5; i++) {
		bnw[i] = (float)(0.1 * (double)i - 0.2);        /* running mean */
		bnb[i] = (float)(0.5 + 0.3 * (double)i);        /* running var */
		prof[i] = (float)i * 1.5f;
	}
	add_profile(a, "h2", prof, 5);
	shuffle(q1, 5, s);
	shuffle(q2, 4, s);
	if (q1[0] == 0 && q1[1] == 1)   /* make sure something moves */
		q1[0] = 1, q1[1] = 0;
	for (j = 0; j < 5; j++) {
		for (k = 0; k < 6; k++)
			((float *)p->layers[0].weight.data)[j * 6 + k] =
				layer_w(a, 0)[q1[j] * 6 + k];
		((float *)p->layers[0].bias.data)[j] = layer_b(a, 0)[q1[j]];
		((float *)p->layers[1].weight.data)[j] = bnw[q1[j]];
		((float *)p->layers[1].bias.data)[j] = bnb[q1[j]];
		pprof[j] = prof[q1[j]];
	}
	for (j = 0; j < 4; j++) {
		for (k = 0; k < 5; k++)
			((float *)p->layers[3].weight.data)[j * 5 + k] =
				layer_w(a, 3)[q2[j] * 5 + q1[k]];
		((float *)p->layers[3].bias.data)[j] = layer_b(a, 3)[q2[j]];
	}
	for (i = 0; i < 3; i++) {
		for (k = 0; k < 4; k++)
			((float *)p->layers[4].weight.data)[i * 4 + k] =
				layer_w(a, 4)[i * 4 + q2[k]];
		((float *)p->layers[4].bias.data)[i] = layer_b(a, 4)[i];
	}
	add_profile(p, "h2", pprof, 5);
}

START_TEST(test_permuted_copy_recovered)
{
	struct zm_model *a = unit_model(mlp_yaml, 3), *p = unit_model(mlp_yaml, 9);
	struct zm_align_info info;
	struct zm_lineage_info li;
	struct zm_error err;
	uint64_t s = 7;
	size_t q1[5], q2[4], i, moved = 0;
	float x[8 * 6], ya[8 * 3], yp[8 * 3], yr[8 * 3], prof[5];
	const struct zm_tensor *t;

	permuted_copy(a, p, &s, q1, q2, prof);
	for (i = 0; i < 8 * 6; i++)
		x[i] = (float)(uniform(&s) * 4 - 2);
	outputs(a, x, 8, ya);
	outputs(p, x, 8, yp);
	for (i = 0; i < 8 * 3; i++)   /* the test's permutation is right */
		ck_assert_float_eq_tol(yp[i], ya[i], 1e-5);

	ck_assert_int_eq(zm_align_model(a, "a@v1", p, &info, &err), ZM_OK);
	/* The permutation found is the inverse of the one applied. */
	ck_assert_ptr_nonnull(info.perm[0]);
	ck_assert_ptr_nonnull(info.perm[3]);
	ck_assert_ptr_null(info.perm[4]);
	for (i = 0; i < 5; i++)
		ck_assert_uint_eq(q1[info.perm[0][i]], i);
	for (i = 0; i < 4; i++)
		ck_assert_uint_eq(q2[info.perm[3][i]], i);
	for (i = 0; i < 5; i++)
		moved += q1[i] != i;
	for (i = 0; i < 4; i++)
		moved += q2[i] != i;
	ck_assert_uint_eq(info.moved, moved);
	/* Every parameter and statistic is a's again, exactly. */
	for (i = 0; i < 5; i++)
		if (a->layers[i].spec->has_params) {
			ck_assert_mem_eq(p->layers[i].weight.data,
			                 a->layers[i].weight.data,
			                 a->layers[i].weight.nbytes);
			ck_assert_mem_eq(p->layers[i].bias.data,
			                 a->layers[i].bias.data,
			                 a->layers[i].bias.nbytes);
		}
	t = zm_doc_find(&p->extra, "profile.h2.mean");
	ck_assert_ptr_nonnull(t);
	ck_assert_mem_eq(t->data, prof, sizeof(prof));
	outputs(p, x, 8, yr);
	for (i = 0; i < 8 * 3; i++)
		ck_assert_float_eq_tol(yr[i], yp[i], 1e-6);
	ck_assert_double_eq(info.after, 1);
	ck_assert_str_eq(zm_doc_meta(&p->extra, ZM_ALIGN_KEY), "a@v1");
	ck_assert_int_eq(zm_lineage_related(a, p, &li, &err), ZM_OK);
	ck_assert_int_eq(li.verdict, ZM_LINEAGE_RELATED);
	zm_align_info_release(&info);
	zm_model_free(a);
	zm_model_free(p);
}
END_TEST

static const char wide_yaml[] =
	"input: [32]\n"
	"layers:\n"
	"  - {name: h1, units: 64, activation: relu}\n"
	"  - {name: h2, units: 48, activation: relu}\n"
	"  - {name: out, units: 4}\n";

/* Independent initialisations: realignment cannot make them one, but it
 * must bring their units closer than the order they were drawn in, and
 * leave the candidate's function as it was. */
START_TEST(test_seeds_brought_closer)
{
	struct zm_model *a = unit_model(wide_yaml, 1), *b = unit_model(wide_yaml, 2);
	struct zm_align_info info;
	struct zm_error err;
	uint64_t s = 5;
	float x[16 * 32], y0[16 * 4], y1[16 * 4];
	size_t i;

	for (i = 0; i < 16 * 32; i++)
		x[i] = (float)(uniform(&s) * 2 - 1);
	outputs(b, x, 16, y0);
	ck_assert_int_eq(zm_align_model(a, NULL, b, &info, &err), ZM_OK);
	ck_assert(info.after > info.before + 0.05);
	ck_assert(info.sweeps >= 2);
	ck_assert_uint_gt(info.moved, 0);
	ck_assert_ptr_null(zm_doc_meta(&b->extra, ZM_ALIGN_KEY));
	outputs(b, x, 16, y1);
	for (i = 0; i < 16 * 4; i++)
		ck_assert_float_eq_tol(y1[i], y0[i], 1e-5);
	zm_align_info_release(&info);
	zm_model_free(a);
	zm_model_free(b);
}
END_TEST

static const char conv_yaml[] =
	"input: [2, 8, 8]\n"
	"layers:\n"
	"  - {name: c1, type: conv2d, filters: 4, kernel: 3, activation: relu}\n"
	"  - {name: p1, type: maxpool2d, size: 2}\n"
	"  - {name: c2, type: conv2d, filters: 3, kernel: 2, activation: tanh}\n"
	"  - {name: f, type: flatten}\n"
	"  - {name: h, units: 5, activation: relu}\n"
	"  - {name: o, units: 2}\n";

/* A conv net: channels are units, a filter [in_c, kh, kw] their row, the
 * next conv's filters and the dense layer after flatten (channel-major,
 * 2 x 2 positions per channel) take them in blocks. */
START_TEST(test_permuted_conv_recovered)
{
	struct zm_model *a = unit_model(conv_yaml, 4), *p = unit_model(conv_yaml, 8);
	struct zm_align_info info;
	struct zm_error err;
	uint64_t s = 11;
	size_t q1[4], q2[3], q3[5], i, j, r, t;
	float x[3 * 128], yp[3 * 2], yr[3 * 2];
	float *w;

	shuffle(q1, 4, &s);
	shuffle(q2, 3, &s);
	shuffle(q3, 5, &s);
	if (q1[0] == 0 && q1[1] == 1)
		q1[0] = 1, q1[1] = 0;
	w = p->layers[0].weight.data;                    /* [4, 2, 3, 3] */
	for (j = 0; j < 4; j++) {
		for (t = 0; t < 18; t++)
			w[j * 18 + t] = layer_w(a, 0)[q1[j] * 18 + t];
		((float *)p->layers[0].bias.data)[j] = layer_b(a, 0)[q1[j]];
	}
	w = p->layers[2].weight.data;                    /* [3, 4, 2, 2] */
	for (r = 0; r < 3; r++) {
		for (j = 0; j < 4; j++)
			for (t = 0; t < 4; t++)
				w[(r * 4 + j) * 4 + t] =
					layer_w(a, 2)[(q2[r] * 4 + q1[j]) * 4 + t];
		((float *)p->layers[2].bias.data)[r] = layer_b(a, 2)[q2[r]];
	}
	w = p->layers[4].weight.data;                    /* [5, 3 * 2 * 2] */
	for (r = 0; r < 5; r++) {
		for (j = 0; j < 3; j++)
			for (t = 0; t < 4; t++)
				w[r * 12 + j * 4 + t] =
					layer_w(a, 4)[q3[r] * 12 + q2[j] * 4 + t];
		((float *)p->layers[4].bias.data)[r] = layer_b(a, 4)[q3[r]];
	}
	w = p->layers[5].weight.data;                    /* [2, 5] */
	for (i = 0; i < 2; i++) {
		for (j = 0; j < 5; j++)
			w[i * 5 + j] = layer_w(a, 5)[i * 5 + q3[j]];
		((float *)p->layers[5].bias.data)[i] = layer_b(a, 5)[i];
	}
	for (i = 0; i < 3 * 128; i++)
		x[i] = (float)(uniform(&s) * 2 - 1);
	outputs(p, x, 3, yp);
	outputs(a, x, 3, yr);
	for (i = 0; i < 3 * 2; i++)   /* the test's permutation is right */
		ck_assert_float_eq_tol(yp[i], yr[i], 1e-5);
	ck_assert_int_eq(zm_align_model(a, "a", p, &info, &err), ZM_OK);
	for (i = 0; i < 4; i++)
		ck_assert_uint_eq(q1[info.perm[0][i]], i);
	for (i = 0; i < 3; i++)
		ck_assert_uint_eq(q2[info.perm[2][i]], i);
	for (i = 0; i < 5; i++)
		ck_assert_uint_eq(q3[info.perm[4][i]], i);
	ck_assert_ptr_null(info.perm[5]);
	for (i = 0; i < 6; i++)
		if (a->layers[i].spec->has_params) {
			ck_assert_mem_eq(p->layers[i].weight.data,
			                 a->layers[i].weight.data,
			                 a->layers[i].weight.nbytes);
			ck_assert_mem_eq(p->layers[i].bias.data,
			                 a->layers[i].bias.data,
			                 a->layers[i].bias.nbytes);
		}
	outputs(p, x, 3, yr);
	for (i = 0; i < 3 * 2; i++)
		ck_assert_float_eq_tol(yr[i], yp[i], 1e-6);
	ck_assert_double_eq(info.after, 1);
	zm_align_info_release(&info);
	zm_model_free(a);
	zm_model_free(p);
}
END_TEST

/* m written to path. */
static void save_model(const struct zm_model *m, const char *path)
{
	struct zm_writer *w = NULL;
	struct zm_doc doc;
	struct zm_error err;

	zm_doc_init(&doc);
	ck_assert_int_eq(zm_model_to_doc(m, &doc, &err), ZM_OK);
	ck_assert_int_eq(zm_writer_open(&w, path, ZM_COMPRESS_AUTO, &err), ZM_OK);
	ck_assert_int_eq(zm_writer_write_doc(w, &doc, &err), ZM_OK);
	ck_assert_int_eq(zm_writer_commit(w, &err), ZM_OK);
	zm_doc_release(&doc);
}

/* Every parameter of m is a's, exactly. */
static void assert_params_eq(const struct zm_model *m, const struct zm_model *a)
{
	size_t l;

	ck_assert_uint_eq(m->arch->n_layers, a->arch->n_layers);
	for (l = 0; l < a->arch->n_layers; l++)
		if (a->layers[l].spec->has_params) {
			ck_assert_uint_eq(m->layers[l].weight.nbytes,
			                  a->layers[l].weight.nbytes);
			ck_assert_mem_eq(m->layers[l].weight.data,
			                 a->layers[l].weight.data,
			                 a->layers[l].weight.nbytes);
			ck_assert_mem_eq(m->layers[l].bias.data,
			                 a->layers[l].bias.data,
			                 a->layers[l].bias.nbytes);
		}
}

START_TEST(test_to_temp)
{
	struct zm_model *a = unit_model(mlp_yaml, 3), *p = unit_model(mlp_yaml, 9);
	struct zm_model *m;
	struct zm_align_temp t;
	struct zm_error err;
	const char *tmp = unit_tmpdir();
	char ap[512], pp[512], missing[512], prefix[512], *dir;
	const char *paths[3];
	uint64_t s = 11;
	size_t q1[5], q2[4], i, moved = 0;
	float prof[5];
	DIR *d;

	permuted_copy(a, p, &s, q1, q2, prof);
	for (i = 0; i < 5; i++)
		moved += q1[i] != i;
	for (i = 0; i < 4; i++)
		moved += q2[i] != i;
	snprintf(ap, sizeof(ap), "%s/a.safetensors.gz", tmp);
	snprintf(pp, sizeof(pp), "%s/p.safetensors.gz", tmp);
	snprintf(missing, sizeof(missing), "%s/none.safetensors.gz", tmp);
	snprintf(prefix, sizeof(prefix), "%s/zm-align.", tmp);
	save_model(a, ap);
	save_model(p, pp);
	paths[0] = ap;
	paths[1] = pp;

	/* The reference among the models (first 1): only p realigned. */
	ck_assert_int_eq(zm_align_to_temp(tmp, ap, "a@v1", paths, 2, 1, &t,
	                                  &err), ZM_OK);
	ck_assert_ptr_nonnull(t.dir);
	ck_assert_int_eq(strncmp(t.dir, prefix, strlen(prefix)), 0);
	ck_assert_uint_eq(t.n, 2);
	ck_assert_ptr_null(t.paths[0]);
	ck_assert_ptr_nonnull(t.paths[1]);
	ck_assert_int_eq(strncmp(t.paths[1], t.dir, strlen(t.dir)), 0);
	ck_assert_uint_eq(t.info[1].moved, moved);
	ck_assert_double_eq(t.info[1].after, 1);
	ck_assert_uint_eq(unit_count_entries(t.dir), 1);
	ck_assert_int_eq(zm_model_load(t.paths[1], &m, &err), ZM_OK);
	assert_params_eq(m, a);
	ck_assert_str_eq(zm_doc_meta(&m->extra, ZM_ALIGN_KEY), "a@v1");
	zm_model_free(m);
	dir = strdup(t.dir);
	ck_assert_ptr_nonnull(dir);
	zm_align_temp_remove(&t);
	ck_assert_ptr_null(t.dir);
	ck_assert_ptr_null(t.paths);
	ck_assert_ptr_null(d = opendir(dir));
	free(dir);

	/* A separate reference (first 0), a path taken over by the caller,
	 * the reference's own copy unmoved. */
	ck_assert_int_eq(zm_align_to_temp(tmp, ap, "a", paths, 2, 0, &t, &err),
	                 ZM_OK);
	ck_assert_ptr_nonnull(t.paths[0]);
	ck_assert_ptr_nonnull(t.paths[1]);
	ck_assert_uint_eq(t.info[0].moved, 0);
	ck_assert_uint_eq(t.info[1].moved, moved);
	ck_assert_uint_eq(unit_count_entries(t.dir), 2);
	ck_assert_int_eq(zm_model_load(t.paths[0], &m, &err), ZM_OK);
	assert_params_eq(m, a);
	zm_model_free(m);
	free(t.paths[1]);
	t.paths[1] = NULL;
	dir = strdup(t.dir);
	ck_assert_ptr_nonnull(dir);
	zm_align_temp_remove(&t);
	ck_assert_ptr_null(d = opendir(dir));
	free(dir);

	/* A model that cannot be loaded: the error, the one before it done,
	 * and removal still leaves nothing behind. */
	paths[0] = pp;
	paths[1] = missing;
	ck_assert_int_ne(zm_align_to_temp(tmp, ap, "a", paths, 2, 0, &t, &err),
	                 ZM_OK);
	ck_assert_ptr_nonnull(strstr(err.msg, "none.safetensors.gz"));
	ck_assert_ptr_nonnull(t.paths[0]);
	ck_assert_ptr_null(t.paths[1]);
	ck_assert_uint_eq(t.info[0].moved, moved);
	dir = strdup(t.dir);
	ck_assert_ptr_nonnull(dir);
	zm_align_temp_remove(&t);
	ck_assert_ptr_null(d = opendir(dir));
	free(dir);

	/* A reference that cannot be loaded. */
	ck_assert_int_ne(zm_align_to_temp(tmp, missing, "a", paths, 1, 0, &t,
	                                  &err), ZM_OK);
	ck_assert_ptr_null(t.paths[0]);
	dir = strdup(t.dir);
	ck_assert_ptr_nonnull(dir);
	zm_align_temp_remove(&t);
	ck_assert_ptr_null(d = opendir(dir));
	free(dir);
	/* The test's directory holds a's and p's files only. */
	ck_assert_uint_eq(unit_count_entries(tmp), 2);
	zm_model_free(a);
	zm_model_free(p);
}
END_TEST

START_TEST(test_refusals)
{
	struct zm_model *a = unit_model(wide_yaml, 1), *m = unit_model(mlp_yaml, 1);
	struct zm_align_info info;
	struct zm_error err;
	char before[ZM_LINEAGE_ID_MAX], after[ZM_LINEAGE_ID_MAX];

	zm_lineage_digest_model(m, before);
	ck_assert_int_eq(zm_align_model(a, "a", m, &info, &err), ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "cannot realign"));
	zm_align_info_release(&info);
	zm_lineage_digest_model(m, after);
	ck_assert_str_eq(before, after);
	ck_assert_ptr_null(zm_doc_meta(&m->extra, ZM_ALIGN_KEY));
	zm_model_free(a);
	zm_model_free(m);
}
END_TEST

Suite *suite_align(void)
{
	Suite *s = suite_create("align");
	TCase *tc = tcase_create("core");

	tcase_add_loop_test(tc, test_assign_brute_force, 0, 5);
	tcase_add_test(tc, test_assign_planted);
	tcase_add_test(tc, test_permuted_copy_recovered);
	tcase_add_test(tc, test_seeds_brought_closer);
	tcase_add_test(tc, test_permuted_conv_recovered);
	tcase_add_test(tc, test_to_temp);
	tcase_add_test(tc, test_refusals);
	suite_add_tcase(s, tc);
	return s;
}
