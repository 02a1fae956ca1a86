/*
 * Plain-checkpoint merges (mergeplain.c): the F32 to F16/BF16 conversion
 * against a naive nearest-even rounding computed in double, and the
 * chunked stream of linear and task arithmetic against the whole-tensor
 * merge and a naive loop.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "merge.h"
#include "mergekit.h"
#include "random.h"
#include "stream.h"
#include "unit.h"

/*
 * The nearest value of a binary format with p significand bits (the
 * implicit one included), minimum normal exponent emin and largest finite
 * value max, ties to even, by plain arithmetic: q is the spacing at |x|,
 * x / q rounded to the even integer on a tie.  Infinity beyond max + q/2
 * (and at it, when max's last bit is odd, which it always is).
 */
static double naive_round(double x, int p, int emin, double max)
{
	double a = fabs(x), q, r, f;
	int e;

	if (isnan(x) || isinf(x) || a == 0)
		return x;
	e = ilogb(a);
	if (e < emin)
		e = emin;
	q = ldexp(1, e - (p - 1));
	r = a / q;
	f = floor(r);
	if (r - f > 0.5 || (r - f == 0.5 && fmod(f, 2) != 0))
		f += 1;
	a = f * q;
	if (a > max)
		a = INFINITY;
	return x < 0 ? -a : a;
}

static float decode(enum zm_dtype d, const void *p)
{
	uint16_t h;

	memcpy(&h, p, 2);
	return d == ZM_DTYPE_F16 ? zm_f16_to_f32(h) : zm_bf16_to_f32(h);
}

/* Random bit patterns over every exponent, plus the edge cases: halfway
 * points, subnormals of both formats, the largest finite values, inf and
 * NaN. */
START_TEST(test_convert_vs_naive)
{
	static const enum zm_dtype dt[2] = { ZM_DTYPE_F16, ZM_DTYPE_BF16 };
	enum zm_dtype d = dt[_i];
	int p = d == ZM_DTYPE_F16 ? 11 : 8, emin = d == ZM_DTYPE_F16 ? -14 : -126;
	double max = d == ZM_DTYPE_F16 ? 65504.0
	             : (2 - ldexp(1, -7)) * ldexp(1, 127);
	float edge[] = {
		0.0f, -0.0f, 1.0f, 1.0f + 0x1p-8f, 1.0f + 0x1p-11f,
		1.0f + 3 * 0x1p-11f, 1.0f + 3 * 0x1p-8f, 65504.0f, 65519.0f,
		65520.0f, 65536.0f, 0x1p-24f, 0x1p-25f, 0x1.8p-25f, 0x1p-26f,
		0x1p-14f, 0x1.ff8p-15f, 0x1p-126f, 0x1p-133f, 0x1p-134f,
		0x1.8p-134f, 0x1p-149f, 0x1.fffffep127f, 0x1.fep127f,
		0x1.ffp127f, INFINITY, -INFINITY, -0x1p-20f, -3.14159f
	};
	struct zm_rng rng;
	unsigned char out[2];
	size_t i;

	zm_rng_seed(&rng, 7);
	for (i = 0; i < sizeof(edge) / sizeof(edge[0]) + 200000; i++) {
		float f, got;
		double want;
		if (i < sizeof(edge) / sizeof(edge[0])) {
			f = edge[i];
		} else {
			uint32_t u = (uint32_t)zm_rng_next(&rng);
			memcpy(&f, &u, 4);
			if (isnan(f))
				continue;
		}
		zm_merge_f32_to_dtype(&f, 1, d, out);
		got = decode(d, out);
		want = naive_round(f, p, emin, max);
		ck_assert_msg((double)got == want && !signbit(got) == !signbit(want),
		              "%s(%a) = %a, want %a", zm_dtype_name(d), (double)f,
		              (double)got, want);
	}
	{
		float nan = NAN;
		zm_merge_f32_to_dtype(&nan, 1, d, out);
		ck_assert(isnan(decode(d, out)));
	}
}
END_TEST

/* Writes a plain checkpoint: a BF16 matrix of 1000 x 3, an F32 vector of
 * 13 and an I64 vector, values from seed, metadata format=pt. */
static void write_plain(const char *path, uint64_t seed)
{
	static const int64_t s0[2] = { 1000, 3 }, s1[1] = { 13 }, s2[1] = { 2 };
	struct zm_doc doc;
	struct zm_tensor t;
	struct zm_writer *w;
	struct zm_error err;
	struct zm_rng rng;
	size_t i;

	zm_doc_init(&doc);
	zm_rng_seed(&rng, seed);
	zm_tensor_init(&t);
	ck_assert_int_eq(zm_tensor_alloc(&t, "model.w", ZM_DTYPE_BF16, 2, s0,
	                                 &err), ZM_OK);
	for (i = 0; i < 3000; i++) {
		uint16_t h = zm_f32_to_bf16((float)zm_rng_normal(&rng));
		memcpy((char *)t.data + 2 * i, &h, 2);
	}
	ck_assert_int_eq(zm_doc_add(&doc, &t, &err), ZM_OK);
	ck_assert_int_eq(zm_tensor_alloc(&t, "model.b", ZM_DTYPE_F32, 1, s1,
	                                 &err), ZM_OK);
	for (i = 0; i < 13; i++)
		((float *)t.data)[i] = (float)zm_rng_normal(&rng);
	ck_assert_int_eq(zm_doc_add(&doc, &t, &err), ZM_OK);
	ck_assert_int_eq(zm_tensor_alloc(&t, "ids", ZM_DTYPE_I64, 1, s2, &err),
	                 ZM_OK);
	((int64_t *)t.data)[0] = 5;
	((int64_t *)t.data)[1] = 9;
	ck_assert_int_eq(zm_doc_add(&doc, &t, &err), ZM_OK);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "format", "pt", &err), ZM_OK);
	ck_assert_int_eq(zm_writer_open(&w, path, ZM_COMPRESS_NONE, &err), ZM_OK);
	ck_assert_int_eq(zm_writer_write_doc(w, &doc, &err), ZM_OK);
	ck_assert_int_eq(zm_writer_commit(w, &err), ZM_OK);
	zm_doc_release(&doc);
}

static void read_doc(const char *path, struct zm_doc *doc)
{
	struct zm_reader *r;
	struct zm_error err;
	bool eof;

	ck_assert_int_eq(zm_reader_open(&r, path, &err), ZM_OK);
	ck_assert_int_eq(zm_reader_next(r, doc, &eof, &err), ZM_OK);
	ck_assert(!eof);
	zm_reader_close(r);
}

/* Chunks of 7 elements (not dividing any tensor) give the same bytes as
 * whole tensors, and linear and task arithmetic match a naive loop
 * rounded to the dtype.  TIES with density 0.3 streams its threshold
 * selection from a histogram over the chunks, reading them twice. */
/* Per-model densities as a mergekit config gives them: 0.05 keeps none
 * of the small tensors (floor(0.05 n) = 0). */
static enum zm_status mk_params(void *ctx, const struct zm_doc *ref,
                                const char *tensor, double *w,
                                double *density, double *gamma,
                                struct zm_error *err)
{
	static const double d[3] = { 0.3, 0.55, 0.05 };
	size_t i;

	(void)ctx;
	(void)ref;
	(void)tensor;
	(void)err;
	for (i = 0; i < 3; i++) {
		w[i] = 1.0 + (double)i;
		density[i] = d[i];
		gamma[i] = 0;
	}
	return ZM_OK;
}

START_TEST(test_chunked_vs_whole)
{
	/* The fourth: TIES with mergekit's conventions and per-model
	 * densities, whole (zm_merge_acc) against streamed. */
	static const enum zm_merge_method methods[4] = {
		ZM_MERGE_LINEAR, ZM_MERGE_TASK_ARITHMETIC, ZM_MERGE_TIES,
		ZM_MERGE_TIES
	};
	enum zm_merge_method method = methods[_i];
	char path[4][512], out[3][512];
	const char *paths[3], *labels[3] = { "m0", "m1", "m2" };
	double w[3] = { 1, 2, 0.5 };
	struct zm_merge_static_opts o;
	struct zm_doc in[4], res[3];
	struct zm_error err;
	size_t i, k, j;

	for (i = 0; i < 4; i++) {
		snprintf(path[i], sizeof(path[i]), "%s/p%zu.safetensors",
		         unit_tmpdir(), i);
		write_plain(path[i], 10 + i);
		zm_doc_init(&in[i]);
		read_doc(path[i], &in[i]);
		if (i < 3)
			paths[i] = path[i];
	}
	memset(&o, 0, sizeof(o));
	zm_merge_params_init(&o.params);
	o.params.lambda = 0.7;
	o.params.density = 0.3;
	o.method = method;
	o.level = ZM_GRAN_LAYER;
	o.n_models = 3;
	o.paths = paths;
	o.labels = labels;
	o.weights = w;
	o.base_path = path[3];
	o.compress = ZM_COMPRESS_NONE;
	if (_i == 3) {
		o.params.mergekit = true;
		o.params.disjoint_sum = true;
		o.tensor_params = mk_params;
	}
	/* Whole tensors; chunks of 7, where TIES refines its threshold
	 * over the spilled file; chunks of 1000, where the candidates of
	 * the top bits fit in a chunk and are refined in memory. */
	for (k = 0; k < 3; k++) {
		static const size_t chunks[3] = { 0, 7, 1000 };
		snprintf(out[k], sizeof(out[k]), "%s/out%zu.safetensors",
		         unit_tmpdir(), k);
		o.out = out[k];
		o.chunk = chunks[k];
		ck_assert_msg(zm_merge_static(&o, &err) == ZM_OK, "%s", err.msg);
		zm_doc_init(&res[k]);
		read_doc(out[k], &res[k]);
	}
	ck_assert_uint_eq(res[0].n_tensors, 3);
	ck_assert_str_eq(zm_doc_meta(&res[0], "format"), "pt");
	for (k = 0; k < res[0].n_tensors; k++) {
		const struct zm_tensor *a = &res[0].tensors[k];
		const struct zm_tensor *b = &res[1].tensors[k];
		const struct zm_tensor *c = &res[2].tensors[k];
		const struct zm_tensor *ref = zm_doc_find(&in[0], a->name);
		size_t n = zm_tensor_numel(a);
		ck_assert_str_eq(a->name, b->name);
		ck_assert_int_eq(a->dtype, ref->dtype);
		ck_assert_uint_eq(a->nbytes, b->nbytes);
		ck_assert(memcmp(a->data, b->data, a->nbytes) == 0);
		ck_assert_uint_eq(a->nbytes, c->nbytes);
		ck_assert(memcmp(a->data, c->data, a->nbytes) == 0);
		if (a->dtype == ZM_DTYPE_I64) {
			ck_assert(memcmp(a->data, ref->data, a->nbytes) == 0);
			continue;
		}
		/* TIES: the streamed threshold selection and sums must give
		 * the whole-tensor bytes (checked above); the whole-tensor
		 * TIES is checked against naive loops in check_merge.c and
		 * 061-merge-plain.sh. */
		if (method == ZM_MERGE_TIES)
			continue;
		for (j = 0; j < n; j++) {
			double want = 0, base, got_v, tol;
			float g;
			zm_tensor_read_f32(zm_doc_find(&in[3], a->name), j, 1, &g);
			base = g;
			for (i = 0; i < 3; i++) {
				zm_tensor_read_f32(zm_doc_find(&in[i], a->name), j,
				                   1, &g);
				want += method == ZM_MERGE_LINEAR ? w[i] / 3.5 * g
				        : 0.7 * w[i] * (g - base);
			}
			if (method != ZM_MERGE_LINEAR)
				want += base;
			zm_tensor_read_f32(a, j, 1, &g);
			got_v = g;
			/* One unit in the last place of the output dtype. */
			tol = (a->dtype == ZM_DTYPE_BF16 ? 0x1p-7 : 0x1p-21) *
			      fmax(fabs(want), 1e-3);
			ck_assert_msg(fabs(got_v - want) <= tol, "%s[%zu]: %g, "
			              "want %g", a->name, j, got_v, want);
		}
	}
	for (i = 0; i < 4; i++)
		zm_doc_release(&in[i]);
	for (k = 0; k < 3; k++)
		zm_doc_release(&res[k]);
}
END_TEST

/* Writes an F32 vector "w" of n to path. */
static void write_vec(const char *path, const float *v, size_t n)
{
	int64_t shape[1];
	struct zm_doc doc;
	struct zm_tensor t;
	struct zm_writer *w;
	struct zm_error err;

	shape[0] = (int64_t)n;
	zm_doc_init(&doc);
	zm_tensor_init(&t);
	ck_assert_int_eq(zm_tensor_alloc(&t, "w", ZM_DTYPE_F32, 1, shape, &err),
	                 ZM_OK);
	memcpy(t.data, v, n * sizeof(float));
	ck_assert_int_eq(zm_doc_add(&doc, &t, &err), ZM_OK);
	ck_assert_int_eq(zm_writer_open(&w, path, ZM_COMPRESS_NONE, &err), ZM_OK);
	ck_assert_int_eq(zm_writer_write_doc(w, &doc, &err), ZM_OK);
	ck_assert_int_eq(zm_writer_commit(w, &err), ZM_OK);
	zm_doc_release(&doc);
}

static int cmp_desc(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return x < y ? 1 : x > y ? -1 : 0;
}

/* The k-th largest |t| by sorting (k >= 1). */
static float naive_kth(const float *t, size_t n, size_t k)
{
	float *s = malloc(n * sizeof(float)), v;
	size_t i;

	ck_assert(s != NULL);
	for (i = 0; i < n; i++)
		s[i] = fabsf(t[i]);
	qsort(s, n, sizeof(float), cmp_desc);
	v = s[k - 1];
	free(s);
	return v;
}

static const double naive_gamma = 0.05;

/* Weights 1, 2, 3, densities 0.3, 0.55, 0.1, and gamma *ctx. */
static enum zm_status bc_params(void *ctx, const struct zm_doc *ref,
                                const char *tensor, double *w,
                                double *density, double *gamma,
                                struct zm_error *err)
{
	static const double d[3] = { 0.3, 0.55, 0.1 };
	size_t i;

	(void)ref;
	(void)tensor;
	(void)err;
	for (i = 0; i < 3; i++) {
		w[i] = 1.0 + (double)i;
		density[i] = d[i];
		gamma[i] = *(const double *)ctx;
	}
	return ZM_OK;
}

/*
 * The streamed TIES (histogram threshold) against a naive whole-tensor
 * TIES (a sort for each threshold, branchy loops), bit for bit, on task
 * vectors full of ties (a few distinct values) and with a boundary bin of
 * the histogram that holds most values (1 + j 2^-20 share their top 16
 * bits), whose first chunk is unlike the rest (so the window predicted
 * from it misses and the boundary bin is counted again).  _i: 0
 * zoomerge's TIES, 1 mergekit's (floor, per-model density), 2 mergekit's
 * breadcrumbs_ties (the top gamma dropped too).
 */
START_TEST(test_ties_stream_vs_naive)
{
	enum { N = 4000 };
	static const double zero = 0;
	static const double dens[3] = { 0.3, 0.55, 0.1 };
	const char *paths[3], *labels[3] = { "m0", "m1", "m2" };
	char path[4][512], out[512];
	double w[3] = { 1, 2, 3 };
	float *x[4], want[N];
	struct zm_merge_static_opts o;
	struct zm_rng rng;
	struct zm_error err;
	size_t i, j, k;

	zm_rng_seed(&rng, 99);
	for (i = 0; i < 4; i++) {
		x[i] = malloc(N * sizeof(float));
		ck_assert(x[i] != NULL);
		for (j = 0; j < N; j++) {
			uint64_t r = zm_rng_next(&rng);
			float v;
			if (i == 3)
				v = 0;   /* the base: tau = x */
			else if (j < 100)
				v = (float)(r % 7) * 1e-6f;   /* unlike the rest */
			else if (r % 3 == 0)
				v = (float)((int)(r >> 8) % 5 - 2) * 0.25f;
			else
				v = 1.0f + (float)((r >> 16) % 50) * 0x1p-20f;
			if ((r >> 40) & 1)
				v = -v;
			x[i][j] = v;
		}
		snprintf(path[i], sizeof(path[i]), "%s/nv%zu.safetensors",
		         unit_tmpdir(), i);
		write_vec(path[i], x[i], N);
		if (i < 3)
			paths[i] = path[i];
	}
	/* The naive TIES. */
	{
		float pos[N], neg[N], wpos[N], wneg[N];
		struct zm_merge_params p;
		memset(pos, 0, sizeof(pos));
		memset(neg, 0, sizeof(neg));
		memset(wpos, 0, sizeof(wpos));
		memset(wneg, 0, sizeof(wneg));
		zm_merge_params_init(&p);
		p.mergekit = _i > 0;
		p.disjoint_sum = _i > 0;
		for (i = 0; i < 3; i++) {
			double d = _i == 0 ? 0.3 : dens[i];
			size_t kk = _i == 0 ? (size_t)floor(d * N + 0.5)
			            : (size_t)floor(d * N);
			size_t ku = _i == 2 ? (size_t)floor(naive_gamma * N) : 0;
			float lo = kk ? naive_kth(x[i], N, kk + ku) : INFINITY;
			float hi = ku ? naive_kth(x[i], N, ku) : INFINITY;
			for (j = 0; j < N; j++) {
				float v = x[i][j];
				if (!(fabsf(v) >= lo) || (ku && !(fabsf(v) < hi)))
					continue;
				if (v > 0) {
					pos[j] += (float)w[i] * v;
					wpos[j] += (float)w[i];
				} else if (v < 0) {
					neg[j] += (float)w[i] * v;
					wneg[j] += (float)w[i];
				}
			}
		}
		for (j = 0; j < N; j++) {
			float mass = pos[j] + neg[j], e = 0;
			bool up = _i > 0 ? mass >= 0 : mass > 0;
			if (up && wpos[j] != 0)
				e = _i > 0 ? pos[j] : pos[j] / wpos[j];
			else if (mass < 0 && wneg[j] != 0)
				e = _i > 0 ? neg[j] : neg[j] / wneg[j];
			want[j] = 0.0f + 0.7f * e;
		}
	}
	memset(&o, 0, sizeof(o));
	zm_merge_params_init(&o.params);
	o.params.lambda = 0.7;
	o.params.density = 0.3;
	o.method = ZM_MERGE_TIES;
	o.level = ZM_GRAN_LAYER;
	o.n_models = 3;
	o.paths = paths;
	o.labels = labels;
	o.weights = w;
	o.base_path = path[3];
	o.compress = ZM_COMPRESS_NONE;
	if (_i > 0) {
		o.params.mergekit = true;
		o.params.disjoint_sum = true;
		o.tensor_params = bc_params;
		o.tensor_ctx = (void *)(_i == 2 ? &naive_gamma : &zero);
		o.params.breadcrumbs = _i == 2;
	}
	snprintf(out, sizeof(out), "%s/nvout.safetensors", unit_tmpdir());
	o.out = out;
	for (k = 0; k < 3; k++) {
		static const size_t chunks[3] = { 64, 1000, 0 };
		struct zm_doc res;
		const struct zm_tensor *t;
		o.chunk = chunks[k];
		/* Whole tensors take zm_merge_acc's TIES, but breadcrumbs
		 * always streams. */
		ck_assert_msg(zm_merge_static(&o, &err) == ZM_OK, "%s", err.msg);
		zm_doc_init(&res);
		read_doc(out, &res);
		t = zm_doc_find(&res, "w");
		ck_assert(t != NULL && t->dtype == ZM_DTYPE_F32);
		for (j = 0; j < N; j++) {
			float g;
			memcpy(&g, (const char *)t->data + 4 * j, 4);
			ck_assert_msg(memcmp(&g, &want[j], 4) == 0, "chunk %zu: "
			              "[%zu] = %a, want %a", chunks[k], j,
			              (double)g, (double)want[j]);
		}
		zm_doc_release(&res);
	}
	for (i = 0; i < 4; i++)
		free(x[i]);
}
END_TEST

/*
 * SLERP streamed in two passes over chunks of 7, 1000 and the default
 * against zm_merge_slerp on the whole tensors, bit for bit (the same
 * sums in the same order), for two random models, for a model and its
 * multiple (colinear: linear interpolation) and for a zero model.
 */
START_TEST(test_slerp_stream_vs_whole)
{
	enum { N = 3000 };
	const char *paths[2], *labels[2] = { "a", "b" };
	char path[2][512], out[512];
	double w[2] = { 0.7, 0.3 };
	float *x[2], want[N];
	struct zm_merge_static_opts o;
	struct zm_rng rng;
	struct zm_error err;
	size_t i, j, k;

	zm_rng_seed(&rng, 5);
	for (i = 0; i < 2; i++) {
		x[i] = malloc(N * sizeof(float));
		ck_assert(x[i] != NULL);
		for (j = 0; j < N; j++)
			x[i][j] = _i == 1 && i == 1 ? -2.5f * x[0][j]
			          : _i == 2 && i == 1 ? 0.0f
			          : (float)zm_rng_normal(&rng);
		snprintf(path[i], sizeof(path[i]), "%s/sl%zu.safetensors",
		         unit_tmpdir(), i);
		write_vec(path[i], x[i], N);
		paths[i] = path[i];
	}
	zm_merge_slerp(x[0], x[1], N, 0.3 / (0.7 + 0.3), want);
	memset(&o, 0, sizeof(o));
	zm_merge_params_init(&o.params);
	o.method = ZM_MERGE_SLERP;
	o.level = ZM_GRAN_LAYER;
	o.n_models = 2;
	o.paths = paths;
	o.labels = labels;
	o.weights = w;
	o.compress = ZM_COMPRESS_NONE;
	snprintf(out, sizeof(out), "%s/slout.safetensors", unit_tmpdir());
	o.out = out;
	for (k = 0; k < 3; k++) {
		static const size_t chunks[3] = { 7, 1000, 0 };
		struct zm_doc res;
		const struct zm_tensor *t;
		o.chunk = chunks[k];
		ck_assert_msg(zm_merge_static(&o, &err) == ZM_OK, "%s", err.msg);
		zm_doc_init(&res);
		read_doc(out, &res);
		t = zm_doc_find(&res, "w");
		ck_assert(t != NULL);
		ck_assert_msg(memcmp(t->data, want, sizeof(want)) == 0,
		              "chunk %zu differs", chunks[k]);
		zm_doc_release(&res);
	}
	for (i = 0; i < 2; i++)
		free(x[i]);
}
END_TEST

/* Gradients over the layers, filters, a model's own value over the
 * global one, and the layer index of Hugging Face names. */
START_TEST(test_mergekit_values)
{
	static const char yaml[] =
		"merge_method: ties\n"
		"base_model: b\n"
		"parameters:\n"
		"  density: [0, 1]\n"
		"  weight:\n"
		"    - {filter: mlp, value: [1, 3, 5]}\n"
		"    - value: 7\n"
		"models:\n"
		"  - {model: m0}\n"
		"  - {model: m1, parameters: {density: 0.25}}\n";
	static const struct {
		const char *name;
		size_t model;
		const char *key;
		double want;
	} cases[] = {
		{ "model.layers.0.mlp.up.weight", 0, "density", 0 },
		{ "model.layers.2.mlp.up.weight", 0, "density", 0.5 },
		{ "model.layers.4.mlp.up.weight", 0, "density", 1 },
		{ "model.layers.1.mlp.up.weight", 0, "weight", 2 },
		{ "model.layers.3.mlp.up.weight", 1, "weight", 4 },
		{ "model.layers.3.self_attn.q.weight", 0, "weight", 7 },
		{ "model.layers.3.mlp.up.weight", 1, "density", 0.25 },
		{ "model.embed_tokens.weight", 0, "density", 0 },
		{ "lm_head.weight", 0, "density", 1 },
		{ "model.layers.2.mlp.up.weight", 0, "gamma", 0.125 },
	};
	struct zm_mergekit mk;
	struct zm_error err;
	size_t i;
	double v;

	ck_assert_int_eq(zm_mergekit_layer_index("model.layers.12.mlp.w"), 12);
	ck_assert_int_eq(zm_mergekit_layer_index("transformer.h.3.attn.w"), 3);
	ck_assert_int_eq(zm_mergekit_layer_index("model.norm.weight"), -1);
	ck_assert_int_eq(zm_mergekit_layer_index("xlayers.2.w"), -1);
	zm_mergekit_init(&mk);
	ck_assert_msg(zm_mergekit_parse(yaml, strlen(yaml), "t.yml", &mk,
	                                &err) == ZM_OK, "%s", err.msg);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ck_assert(zm_mergekit_value(&mk, cases[i].model, cases[i].key,
		                            cases[i].name, 5, 0.125, &v,
		                            &err) == ZM_OK);
		ck_assert_msg(fabs(v - cases[i].want) < 1e-12, "%s %s: %g, "
		              "want %g", cases[i].name, cases[i].key, v,
		              cases[i].want);
	}
	zm_mergekit_release(&mk);
}
END_TEST

Suite *suite_mergeplain(void)
{
	Suite *s = suite_create("mergeplain");
	TCase *tc = tcase_create("mergeplain");

	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_convert_vs_naive, 0, 2);
	tcase_add_loop_test(tc, test_chunked_vs_whole, 0, 4);
	tcase_add_loop_test(tc, test_ties_stream_vs_naive, 0, 3);
	tcase_add_loop_test(tc, test_slerp_stream_vs_whole, 0, 3);
	tcase_add_test(tc, test_mergekit_values);
	suite_add_tcase(s, tc);
	return s;
}
