/*
 * Merge maths (TIES, DARE, SLERP) and the accumulator that merges one tensor
 * of several models (see merge.h).  The merge config and per-layer weights
 * are mergeconf.c's, the streamed static merge mergefile.c's, the
 * application of updates update.c's.
 *
 * The pragma lets GCC's -O2 vectorizer if-convert the selects of the
 * TIES sums, which it refuses while it must preserve floating-point traps
 * (we never enable traps); it changes no result.
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "mem.h"
#include "merge.h"
#include "profile.h"
#include "zoomodel.h"

/* Cosine above which two tensors count as colinear for SLERP: the angle
 * is then too small for sin(W) to be divided by safely (mergekit uses the
 * same threshold). */
#define SLERP_COLINEAR 0.9995

const char *zm_merge_method_name(enum zm_merge_method m)
{
	switch (m) {
	case ZM_MERGE_LINEAR: return "linear";
	case ZM_MERGE_TASK_ARITHMETIC: return "task-arithmetic";
	case ZM_MERGE_TIES: return "ties";
	case ZM_MERGE_DARE: return "dare";
	case ZM_MERGE_SLERP: return "slerp";
	case ZM_MERGE_MODEL_STOCK: return "model-stock";
	case ZM_MERGE_NUSLERP: return "nuslerp";
	}
	return "?";
}

bool zm_merge_method_parse(const char *s, enum zm_merge_method *out)
{
	static const enum zm_merge_method all[] = {
		ZM_MERGE_LINEAR, ZM_MERGE_TASK_ARITHMETIC, ZM_MERGE_TIES,
		ZM_MERGE_DARE, ZM_MERGE_SLERP
	};
	size_t i;

	for (i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (strcmp(s, zm_merge_method_name(all[i])) == 0) {
			*out = all[i];
			return true;
		}
	return false;
}

bool zm_merge_method_needs_base(enum zm_merge_method m)
{
	return m == ZM_MERGE_TASK_ARITHMETIC || m == ZM_MERGE_TIES ||
	       m == ZM_MERGE_DARE || m == ZM_MERGE_MODEL_STOCK;
}

void zm_merge_params_init(struct zm_merge_params *p)
{
	p->density = 0.2;      /* the TIES paper's k = 20 % */
	p->lambda = 1.0;
	p->drop = 0.9;         /* the DARE paper's usual rate */
	p->dare_ties = false;
	p->seed = 0;
	p->mergekit = false;
	p->disjoint_sum = false;
	p->no_election = false;
	p->breadcrumbs = false;
	p->vectors = ZM_MERGE_VEC_TENSOR;
}

/* ---- kernels ---- */

/*
 * The trimming threshold, the k-th largest magnitude, by a radix select
 * on the bits of |x|: for finite and infinite floats, the order of the
 * magnitudes is the order of their bit patterns as unsigned integers.  A
 * histogram of the top RADIX1 bits (sign excluded) over all n values
 * finds the bucket that holds the k-th largest; its members are gathered
 * into a small candidate set, which two more histograms of RADIX2 bits
 * each narrow to the exact bit pattern.  Two sequential passes over x, no
 * sorting, no data-dependent swaps: what quickselect cost was mostly its
 * copies and mispredicted branches.
 */
enum { RADIX1 = 11, RADIX2 = 10, LOW_BITS = 31 - RADIX1 };
#define MAG_BITS 0x7fffffffu

struct ties_hist {
	/* Four copies so that runs of equal buckets, which Gaussian-like
	 * weights are full of, do not serialize on one counter; 32-bit
	 * counts, so that the four fit in L1 (hist_top flushes them into
	 * total before they can overflow). */
	uint32_t top[4][1u << RADIX1];
	size_t total[1u << RADIX1];
	size_t sub[1u << RADIX2];
};

static inline uint32_t mag_bits(float v)
{
	uint32_t u;

	memcpy(&u, &v, sizeof(u));
	return u & MAG_BITS;
}

static inline float bits_float(uint32_t u)
{
	float v;

	memcpy(&v, &u, sizeof(v));
	return v;
}

/* h->total (which it zeroes first) counts x[i] (i < n) by the top bits
 * of their magnitude. */
static void hist_top(struct ties_hist *h, const float *x, size_t n)
{
	size_t i = 0, end, b;

	memset(h->total, 0, sizeof(h->total));
	while (i < n) {
		end = n - i > ((size_t)1 << 30) ? i + ((size_t)1 << 30) : n;
		memset(h->top, 0, sizeof(h->top));
		for (; i + 4 <= end; i += 4) {
			h->top[0][mag_bits(x[i]) >> LOW_BITS]++;
			h->top[1][mag_bits(x[i + 1]) >> LOW_BITS]++;
			h->top[2][mag_bits(x[i + 2]) >> LOW_BITS]++;
			h->top[3][mag_bits(x[i + 3]) >> LOW_BITS]++;
		}
		for (; i < end; i++)
			h->top[0][mag_bits(x[i]) >> LOW_BITS]++;
		for (b = 0; b < (1u << RADIX1); b++)
			h->total[b] += (size_t)h->top[0][b] + h->top[1][b] +
			               h->top[2][b] + h->top[3][b];
	}
}

/* The bucket (from the top) where the k-th largest falls; *k becomes its
 * rank within the bucket. */
static uint32_t hist_find(const size_t *cnt, uint32_t buckets, size_t *k)
{
	uint32_t b = buckets;

	while (b-- > 0) {
		if (*k <= cnt[b])
			return b;
		*k -= cnt[b];
	}
	ZM_ASSERT(!"rank beyond the histogram");
	return 0;
}

/*
 * The k-th largest |x[i]| (1 <= k <= n) given h->total filled by hist_top
 * over the same x; cand holds n floats (any contents).
 */
static float ties_threshold(struct ties_hist *h, const float *x, size_t n,
                            size_t k, float *cand)
{
	uint32_t top, prefix, b, shift = LOW_BITS - RADIX2;
	size_t i, c = 0, j;

	top = hist_find(h->total, 1u << RADIX1, &k);
	/* Members are a few per cent of x: four at a time are tested at
	 * once, and only groups with a member are gathered, branch-free. */
	i = 0;
#ifdef __SSE2__
	{
		__m128i want = _mm_set1_epi32((int)top);
		__m128i mag = _mm_set1_epi32((int)MAG_BITS);
		for (; i + 4 <= n; i += 4) {
			__m128i u = _mm_and_si128(
				_mm_castps_si128(_mm_loadu_ps(x + i)), mag);
			__m128i hit = _mm_cmpeq_epi32(
				_mm_srli_epi32(u, LOW_BITS), want);
			if (!_mm_movemask_epi8(hit))
				continue;
			for (j = i; j < i + 4; j++) {
				float a = fabsf(x[j]);
				cand[c] = a;
				c += mag_bits(a) >> LOW_BITS == top;
			}
		}
	}
#endif
	for (; i < n; i++) {
		float a = fabsf(x[i]);
		cand[c] = a;
		c += mag_bits(a) >> LOW_BITS == top;
	}
	prefix = top;
	/* Two rounds of RADIX2 bits: 20 = 31 - RADIX1 bits in all. */
	for (;;) {
		uint32_t mask = (1u << RADIX2) - 1;
		memset(h->sub, 0, sizeof(h->sub));
		for (i = 0; i < c; i++)
			h->sub[(mag_bits(cand[i]) >> shift) & mask]++;
		b = hist_find(h->sub, 1u << RADIX2, &k);
		prefix = prefix << RADIX2 | b;
		if (shift == 0)
			return bits_float(prefix);
		for (i = j = 0; i < c; i++) {
			cand[j] = cand[i];
			j += ((mag_bits(cand[i]) >> shift) & mask) == b;
		}
		c = j;
		shift -= RADIX2;
	}
}

/* k = round(density n), at least 1; 0 when every entry is kept. */
static size_t ties_keep(size_t n, double density)
{
	size_t k = (size_t)floor(density * (double)n + 0.5);

	if (k < 1)
		k = 1;
	return k >= n ? 0 : k;
}

size_t zm_merge_ties_trim(float *tau, size_t n, double density,
                          float *scratch)
{
	struct ties_hist h;
	size_t k, i, kept = 0;
	float th;

	if (n == 0)
		return 0;
	if (!(k = ties_keep(n, density)))
		return n;
	hist_top(&h, tau, n);
	th = ties_threshold(&h, tau, n, k, scratch);
	for (i = 0; i < n; i++) {
		if (fabsf(tau[i]) >= th)
			kept++;
		else
			tau[i] = 0.0f;
	}
	return kept;
}

void zm_merge_dare_drop(float *tau, size_t n, double p, struct zm_rng *rng)
{
	float scale = (float)(1.0 / (1.0 - p));
	size_t i;

	for (i = 0; i < n; i++)
		tau[i] = zm_rng_uniform(rng) < p ? 0.0f : tau[i] * scale;
}

bool zm_merge_slerp_coef(double t, double dot, double na, double nb,
                         bool zero_orthogonal, double *ca, double *cb)
{
	double c = na > 0 && nb > 0 ? dot / (sqrt(na) * sqrt(nb))
	                            : zero_orthogonal ? 0.0 : 1.0, w, s;

	if (fabs(c) > SLERP_COLINEAR) {
		*ca = 1 - t;
		*cb = t;
		return true;
	}
	w = acos(c);
	s = sin(w);
	*ca = sin((1 - t) * w) / s;
	*cb = sin(t * w) / s;
	return false;
}

static bool slerp(const float *a, const float *b, size_t n, double t,
                  float *out, bool zero_orthogonal)
{
	double dot = 0, na = 0, nb = 0, ca, cb;
	size_t i;
	bool lin;

	for (i = 0; i < n; i++) {
		dot += (double)a[i] * b[i];
		na += (double)a[i] * a[i];
		nb += (double)b[i] * b[i];
	}
	lin = zm_merge_slerp_coef(t, dot, na, nb, zero_orthogonal, &ca, &cb);
	for (i = 0; i < n; i++)
		out[i] = (float)(ca * a[i] + cb * b[i]);
	return lin;
}

bool zm_merge_slerp(const float *a, const float *b, size_t n, double t,
                    float *out)
{
	return slerp(a, b, n, t, out, false);
}

float zm_merge_ties_elect(const struct zm_merge_params *p, float pos,
                          float neg, float wpos, float wneg)
{
	float mass = pos + neg;
	bool up = p->mergekit ? mass >= 0 : mass > 0;

	if (p->no_election)
		return mass;
	if (up && wpos != 0)
		return p->disjoint_sum ? pos : pos / wpos;
	if (mass < 0 && wneg != 0)
		return p->disjoint_sum ? neg : neg / wneg;
	return 0.0f;
}

void zm_merge_nuslerp_coef(double w0, double w1, double dot, double n0sq,
                           double n1sq, double *c0, double *c1)
{
	double t = fabs(w0 + w1) < 1e-6 ? 0.5 : w1 / (w0 + w1);
	double c = dot / (fmax(sqrt(n0sq), 1e-7) * fmax(sqrt(n1sq), 1e-7));
	double th = acos(fmin(fmax(c, -1.0), 1.0)), s = sin(th);

	if (fabs(s) < 1e-8) {
		*c0 = 1 - t;
		*c1 = t;
		return;
	}
	*c0 = sin((1 - t) * th) / s;
	*c1 = sin(t * th) / s;
}

double zm_merge_model_stock_t(size_t n, const double *sums)
{
	const double *dot = sums + n;
	double c = 0;
	size_t i, j, pairs = 0;

	for (i = 0; i < n; i++)
		for (j = i + 1; j < n; j++, pairs++) {
			double d = fmax(sqrt(sums[i]) * sqrt(sums[j]), 1e-6);
			c += fmin(fmax(dot[pairs] / d, -1.0), 1.0);
		}
	c /= (double)pairs;
	return (double)n * c / (1 + (double)(n - 1) * c);
}

void zm_merge_ties_add_cut(const float *restrict x,
                           const float *restrict base, size_t n, float lo,
                           float hi, float w, float *const sum[4])
{
	float *restrict pos = sum[0], *restrict neg = sum[1];
	float *restrict wpos = sum[2], *restrict wneg = sum[3];
	bool upper = !isinf(hi);
	size_t i = 0;

#ifdef __SSE2__
	{
		__m128 vlo = _mm_set1_ps(lo), vhi = _mm_set1_ps(hi);
		__m128 vw = _mm_set1_ps(w), zero = _mm_setzero_ps();
		__m128 mag = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
		for (; i + 4 <= n; i += 4) {
			__m128 v = _mm_loadu_ps(x + i), a;
			if (base)
				v = _mm_sub_ps(v, _mm_loadu_ps(base + i));
			a = _mm_and_ps(v, mag);
			__m128 keep = _mm_cmpge_ps(a, vlo);
			__m128 mp, mn;
			if (upper)
				keep = _mm_and_ps(keep, _mm_cmplt_ps(a, vhi));
			mp = _mm_and_ps(keep, _mm_cmpgt_ps(v, zero));
			mn = _mm_and_ps(keep, _mm_cmplt_ps(v, zero));
			/* w * 0 = +-0 for the others: no change, as a sum
			 * is never -0 (it starts at +0, and x + y is -0
			 * only when both are). */
			_mm_storeu_ps(pos + i, _mm_add_ps(_mm_loadu_ps(pos + i),
			              _mm_mul_ps(vw, _mm_and_ps(mp, v))));
			_mm_storeu_ps(wpos + i, _mm_add_ps(
			              _mm_loadu_ps(wpos + i), _mm_and_ps(mp, vw)));
			_mm_storeu_ps(neg + i, _mm_add_ps(_mm_loadu_ps(neg + i),
			              _mm_mul_ps(vw, _mm_and_ps(mn, v))));
			_mm_storeu_ps(wneg + i, _mm_add_ps(
			              _mm_loadu_ps(wneg + i), _mm_and_ps(mn, vw)));
		}
	}
#endif
	for (; i < n; i++) {
		float v = base ? x[i] - base[i] : x[i], a = fabsf(v);
		if (a < lo || (upper && !(a < hi)))
			continue;
		if (v > 0) {
			pos[i] += w * v;
			wpos[i] += w;
		} else if (v < 0) {
			neg[i] += w * v;
			wneg[i] += w;
		}
	}
}

void zm_merge_ties_finish(const struct zm_merge_params *p,
                          const float *const sum[4], const float *base,
                          size_t n, float *out)
{
	const float *pos = sum[0], *neg = sum[1], *wpos = sum[2];
	const float *wneg = sum[3];
	float lambda = (float)p->lambda;
	size_t i = 0;

#ifdef __SSE2__
	{
		__m128 zero = _mm_setzero_ps(), vl = _mm_set1_ps(lambda);
		for (; i + 4 <= n; i += 4) {
			__m128 ps = _mm_loadu_ps(pos + i), ng = _mm_loadu_ps(neg + i);
			__m128 wp = _mm_loadu_ps(wpos + i);
			__m128 wn = _mm_loadu_ps(wneg + i);
			__m128 mass = _mm_add_ps(ps, ng), r, up, a, b;
			if (p->no_election) {
				r = mass;
			} else {
				up = p->mergekit ? _mm_cmpge_ps(mass, zero)
				                 : _mm_cmpgt_ps(mass, zero);
				up = _mm_and_ps(up, _mm_cmpneq_ps(wp, zero));
				/* The quotients of the lanes not chosen may be
				 * NaN; they are masked out. */
				a = p->disjoint_sum ? ps : _mm_div_ps(ps, wp);
				b = p->disjoint_sum ? ng : _mm_div_ps(ng, wn);
				b = _mm_and_ps(b, _mm_and_ps(
				        _mm_cmplt_ps(mass, zero),
				        _mm_cmpneq_ps(wn, zero)));
				r = _mm_or_ps(_mm_and_ps(up, a),
				              _mm_andnot_ps(up, b));
			}
			_mm_storeu_ps(out + i, _mm_add_ps(_mm_loadu_ps(base + i),
			              _mm_mul_ps(vl, r)));
		}
	}
#endif
	for (; i < n; i++)
		out[i] = base[i] + lambda * zm_merge_ties_elect(p, pos[i], neg[i],
		                                                wpos[i], wneg[i]);
}

/* ---- accumulator ---- */

static size_t acc_buffers(const struct zm_merge_acc *acc)
{
	switch (acc->method) {
	case ZM_MERGE_LINEAR:
	case ZM_MERGE_TASK_ARITHMETIC:
		return 1;
	case ZM_MERGE_SLERP:
		return 2;
	case ZM_MERGE_TIES:
		return 4;
	case ZM_MERGE_DARE:
		return acc->params.dare_ties ? 4 : 1;
	case ZM_MERGE_MODEL_STOCK:
	case ZM_MERGE_NUSLERP:
		return 1;
	}
	return 4;
}

enum zm_status zm_merge_acc_init(struct zm_merge_acc *acc,
                                 enum zm_merge_method method,
                                 const struct zm_merge_params *params,
                                 size_t cap, struct zm_error *err)
{
	size_t i, bytes;

	memset(acc, 0, sizeof(*acc));
	acc->method = method;
	acc->params = *params;
	acc->cap = cap;
	zm_rng_seed(&acc->rng, params->seed);
	if (!zm_size_mul(cap ? cap : 1, sizeof(float), &bytes))
		return zm_error_set(err, ZM_ERR_NOMEM, "merge: tensor too large");
	for (i = 0; i < acc_buffers(acc); i++)
		if (!(acc->sum[i] = zm_malloc(bytes)))
			goto nomem;
	if (method == ZM_MERGE_TIES && !(acc->scratch = zm_malloc(bytes)))
		goto nomem;
	return ZM_OK;
nomem:
	zm_merge_acc_release(acc);
	return zm_error_set(err, ZM_ERR_NOMEM, "merge: out of memory");
}

void zm_merge_acc_release(struct zm_merge_acc *acc)
{
	size_t i;

	for (i = 0; i < 4; i++)
		free(acc->sum[i]);
	free(acc->scratch);
	memset(acc, 0, sizeof(*acc));
}

void zm_merge_acc_begin(struct zm_merge_acc *acc, size_t n)
{
	size_t i;

	ZM_ASSERT(n <= acc->cap);
	acc->n = n;
	acc->added = 0;
	acc->wsum = 0;
	acc->w_first = 0;
	for (i = 0; i < acc_buffers(acc); i++)
		if (acc->method != ZM_MERGE_SLERP)
			memset(acc->sum[i], 0, n * sizeof(float));
}

/* Adds a task vector to the sign-election sums: positive and negative
 * mass and the weight behind each. */
static void ties_add(struct zm_merge_acc *acc, const float *tau, float w)
{
	float *pos = acc->sum[0], *neg = acc->sum[1];
	float *wpos = acc->sum[2], *wneg = acc->sum[3];
	size_t i;

	for (i = 0; i < acc->n; i++) {
		if (tau[i] > 0) {
			pos[i] += w * tau[i];
			wpos[i] += w;
		} else if (tau[i] < 0) {
			neg[i] += w * tau[i];
			wneg[i] += w;
		}
	}
}

/*
 * TIES for one model in three passes over x: the task vector with the
 * histogram of its magnitudes, the gather of the threshold's bucket, and
 * the trim fused with the sign-election sums (x is not written back
 * trimmed: entries below the threshold simply add nothing).  Sums get the
 * same additions in the same order as trimming then ties_add, adding +-0
 * for the dropped entries, which leaves every sum unchanged: a sum is
 * never -0, as it starts at +0 and x + y is -0 only when both are.
 */
static void ties_add_trimmed(struct zm_merge_acc *acc, float *restrict x,
                             const float *restrict base, float w)
{
	struct ties_hist h;
	size_t i, n = acc->n, k = ties_keep(n, acc->params.density);
	float th = 0.0f;   /* keeps all: |x| >= 0 */
	bool none = false;

	/* mergekit keeps floor(density n), which may be none at all. */
	if (acc->params.mergekit) {
		size_t kf = (size_t)floor(acc->params.density * (double)n);
		k = kf >= n ? 0 : kf;
		none = kf == 0;
	}

	i = 0;
#ifdef __SSE2__
	for (; i + 4 <= n; i += 4)
		_mm_storeu_ps(x + i, _mm_sub_ps(_mm_loadu_ps(x + i),
		                                _mm_loadu_ps(base + i)));
#endif
	for (; i < n; i++)
		x[i] -= base[i];
	if (none) {
		th = INFINITY;
	} else if (k) {
		hist_top(&h, x, n);
		th = ties_threshold(&h, x, n, k, acc->scratch);
	}
	zm_merge_ties_add_cut(x, NULL, n, th, INFINITY, w, acc->sum);
}

void zm_merge_acc_add(struct zm_merge_acc *acc, float *x, const float *base,
                      double w)
{
	float fw = (float)w, *s = acc->sum[0];
	size_t i, n = acc->n;

	if (acc->method == ZM_MERGE_TIES) {
		ZM_ASSERT(base != NULL);
		ties_add_trimmed(acc, x, base, fw);
		acc->wsum += w;
		acc->added++;
		return;
	}
	if (zm_merge_method_needs_base(acc->method)) {
		ZM_ASSERT(base != NULL);
		for (i = 0; i < n; i++)
			x[i] -= base[i];
	}
	switch (acc->method) {
	case ZM_MERGE_LINEAR:
	case ZM_MERGE_TASK_ARITHMETIC:
		for (i = 0; i < n; i++)
			s[i] += fw * x[i];
		break;
	case ZM_MERGE_TIES:
		break;   /* ties_add_trimmed, above */
	case ZM_MERGE_DARE:
		zm_merge_dare_drop(x, n, acc->params.drop, &acc->rng);
		if (acc->params.dare_ties)
			ties_add(acc, x, fw);
		else
			for (i = 0; i < n; i++)
				s[i] += fw * x[i];
		break;
	case ZM_MERGE_MODEL_STOCK:
	case ZM_MERGE_NUSLERP:
		ZM_ASSERT(!"model_stock and nuslerp stream in mergeplain.c");
		break;
	case ZM_MERGE_SLERP:
		if (acc->added == 0) {
			memcpy(acc->sum[0], x, n * sizeof(float));
			acc->w_first = w;
		} else if (acc->added == 1 && acc->w_first + w != 0) {
			slerp(acc->sum[0], x, n, w / (acc->w_first + w),
			      acc->sum[1], acc->params.mergekit);
		}
		break;
	}
	acc->wsum += w;
	acc->added++;
}

enum zm_status zm_merge_acc_finish(struct zm_merge_acc *acc,
                                   const float *base, float *out,
                                   struct zm_error *err)
{
	float lambda = (float)acc->params.lambda, *s = acc->sum[0];
	size_t i, n = acc->n;
	bool ties = acc->method == ZM_MERGE_TIES ||
	            (acc->method == ZM_MERGE_DARE && acc->params.dare_ties);

	if (acc->method == ZM_MERGE_SLERP && acc->added != 2)
		return zm_error_set(err, ZM_ERR_USAGE, "slerp merges exactly "
		                    "two models, not %zu", acc->added);
	if ((acc->method == ZM_MERGE_LINEAR ||
	     acc->method == ZM_MERGE_SLERP) && acc->wsum == 0)
		return zm_error_set(err, ZM_ERR_DATA,
		                    "the merge weights sum to zero");
	if (acc->method == ZM_MERGE_LINEAR) {
		float inv = (float)(1.0 / acc->wsum);
		for (i = 0; i < n; i++)
			out[i] = s[i] * inv;
	} else if (acc->method == ZM_MERGE_SLERP) {
		memcpy(out, acc->sum[1], n * sizeof(float));
	} else if (ties) {
		zm_merge_ties_finish(&acc->params,
		                     (const float *const *)acc->sum, base, n,
		                     out);
	} else {
		for (i = 0; i < n; i++)
			out[i] = base[i] + lambda * s[i];
	}
	return ZM_OK;
}
