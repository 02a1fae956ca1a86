/*
 * Merge maths, merge configs, streamed static merges and the application
 * of update streams to a zoo (see merge.h).
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
	       m == ZM_MERGE_DARE;
}

void zm_merge_params_init(struct zm_merge_params *p)
{
	p->density = 0.2;      /* the TIES paper's k = 20 % */
	p->lambda = 1.0;
	p->drop = 0.9;         /* the DARE paper's usual rate */
	p->dare_ties = false;
	p->seed = 0;
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

bool zm_merge_slerp(const float *a, const float *b, size_t n, double t,
                    float *out)
{
	double dot = 0, na = 0, nb = 0, c, w, s, ca, cb;
	size_t i;

	for (i = 0; i < n; i++) {
		dot += (double)a[i] * b[i];
		na += (double)a[i] * a[i];
		nb += (double)b[i] * b[i];
	}
	c = na > 0 && nb > 0 ? dot / (sqrt(na) * sqrt(nb)) : 1.0;
	if (fabs(c) > SLERP_COLINEAR) {
		for (i = 0; i < n; i++)
			out[i] = (float)((1 - t) * a[i] + t * b[i]);
		return true;
	}
	w = acos(c);
	s = sin(w);
	ca = sin((1 - t) * w) / s;
	cb = sin(t * w) / s;
	for (i = 0; i < n; i++)
		out[i] = (float)(ca * a[i] + cb * b[i]);
	return false;
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
	float *restrict pos = acc->sum[0], *restrict neg = acc->sum[1];
	float *restrict wpos = acc->sum[2], *restrict wneg = acc->sum[3];
	struct ties_hist h;
	size_t i, n = acc->n, k = ties_keep(n, acc->params.density);
	float th = 0.0f;   /* keeps all: |x| >= 0 */

	i = 0;
#ifdef __SSE2__
	for (; i + 4 <= n; i += 4)
		_mm_storeu_ps(x + i, _mm_sub_ps(_mm_loadu_ps(x + i),
		                                _mm_loadu_ps(base + i)));
#endif
	for (; i < n; i++)
		x[i] -= base[i];
	if (k) {
		hist_top(&h, x, n);
		th = ties_threshold(&h, x, n, k, acc->scratch);
	}
	i = 0;
#ifdef __SSE2__
	{
		__m128 vt = _mm_set1_ps(th), vw = _mm_set1_ps(w);
		__m128 zero = _mm_setzero_ps();
		__m128 mag = _mm_castsi128_ps(_mm_set1_epi32((int)MAG_BITS));
		for (; i + 4 <= n; i += 4) {
			__m128 v = _mm_loadu_ps(x + i);
			__m128 keep = _mm_cmpge_ps(_mm_and_ps(v, mag), vt);
			__m128 mp = _mm_and_ps(keep, _mm_cmpgt_ps(v, zero));
			__m128 mn = _mm_and_ps(keep, _mm_cmplt_ps(v, zero));
			/* w * 0 = +-0 for the others: no change, see above. */
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
		float v = x[i], keep = fabsf(v) >= th ? v : 0.0f;
		if (keep > 0) {
			pos[i] += w * keep;
			wpos[i] += w;
		} else if (keep < 0) {
			neg[i] += w * keep;
			wneg[i] += w;
		}
	}
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
	case ZM_MERGE_SLERP:
		if (acc->added == 0) {
			memcpy(acc->sum[0], x, n * sizeof(float));
			acc->w_first = w;
		} else if (acc->added == 1 && acc->w_first + w != 0) {
			zm_merge_slerp(acc->sum[0], x, n,
			               w / (acc->w_first + w), acc->sum[1]);
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
		const float *pos = acc->sum[0], *neg = acc->sum[1];
		const float *wpos = acc->sum[2], *wneg = acc->sum[3];
		for (i = 0; i < n; i++) {
			float mass = pos[i] + neg[i], m = 0.0f;
			if (mass > 0 && wpos[i] != 0)
				m = pos[i] / wpos[i];
			else if (mass < 0 && wneg[i] != 0)
				m = neg[i] / wneg[i];
			out[i] = base[i] + lambda * m;
		}
	} else {
		for (i = 0; i < n; i++)
			out[i] = base[i] + lambda * s[i];
	}
	return ZM_OK;
}

/* ---- weights ---- */

static enum zm_status weight_value(const struct zm_node *n, double *out,
                                   struct zm_error *err)
{
	return zm_node_double(n, "weight", -1e6, 1e6, out, err);
}

enum zm_status zm_merge_layer_weights(const struct zm_node *spec,
                                      double dflt,
                                      const struct zm_arch *arch,
                                      enum zm_gran_level level, double *w,
                                      struct zm_error *err)
{
	struct zm_gran_units u;
	enum zm_status st = ZM_OK;
	double v;
	size_t l, i;

	for (l = 0; l < arch->n_layers; l++)
		w[l] = dflt;
	if (!spec)
		return ZM_OK;
	if (spec->type == ZM_NODE_SCALAR) {
		if ((st = weight_value(spec, &v, err)))
			return st;
		for (l = 0; l < arch->n_layers; l++)
			w[l] = v;
		return ZM_OK;
	}
	if (level == ZM_GRAN_FULL)
		return zm_node_error(spec, err, ZM_ERR_CONFIG, "a weight %s "
		                     "needs --granularity group or layer",
		                     spec->type == ZM_NODE_SEQ ? "list" : "map");
	if ((st = zm_gran_units_init(&u, level, arch, err)))
		return st;
	if (spec->type == ZM_NODE_SEQ) {
		/* Interpolates the list over the units that have parameters,
		 * first to last, like mergekit's gradient lists. */
		size_t k = spec->count, p = 0, j = 0, unit;
		double *vals = zm_calloc(k ? k : 1, sizeof(double));
		bool *has = zm_calloc(u.n_units, sizeof(bool));
		if (!vals || !has) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		} else if (k == 0) {
			st = zm_node_error(spec, err, ZM_ERR_CONFIG,
			                   "expected a non-empty weight list");
		}
		for (i = 0; i < k && st == ZM_OK; i++)
			st = weight_value(spec->items[i], &vals[i], err);
		for (l = 0; l < arch->n_layers && st == ZM_OK; l++)
			if (arch->layers[l].has_params)
				has[u.layer_unit[l]] = true;
		for (unit = 0; unit < u.n_units && st == ZM_OK; unit++)
			p += has[unit];
		for (unit = 0; unit < u.n_units && st == ZM_OK; unit++) {
			double pos, f, val;
			size_t lo;
			if (!has[unit])
				continue;
			pos = p > 1 ? (double)j * (double)(k - 1) / (double)(p - 1)
			            : 0.0;
			lo = (size_t)floor(pos);
			if (lo >= k - 1)
				lo = k - 1;
			f = pos - (double)lo;
			val = vals[lo] * (1 - f) +
			      (lo + 1 < k ? vals[lo + 1] : vals[lo]) * f;
			for (l = 0; l < arch->n_layers; l++)
				if (u.layer_unit[l] == unit)
					w[l] = val;
			j++;
		}
		free(vals);
		free(has);
	} else {
		/* A map from unit name (or, per layer, group name) to weight. */
		for (i = 0; i < spec->count && st == ZM_OK; i++) {
			const struct zm_node *key = spec->keys[i];
			bool known = zm_gran_units_find(&u, key->value) >= 0;
			for (l = 0; l < arch->n_layers && !known; l++)
				known = level == ZM_GRAN_LAYER &&
				        strcmp(arch->layers[l].group,
				               key->value) == 0;
			if (!known)
				st = zm_node_error(key, err, ZM_ERR_CONFIG,
				                   "'%s' is no %s of the model",
				                   key->value,
				                   level == ZM_GRAN_GROUP
				                   ? "layer group"
				                   : "layer or layer group");
		}
		for (l = 0; l < arch->n_layers && st == ZM_OK; l++) {
			const struct zm_layer_spec *ls = &arch->layers[l];
			const struct zm_node *n;
			n = zm_node_get(spec, u.names[u.layer_unit[l]]);
			if (!n && level == ZM_GRAN_LAYER)
				n = zm_node_get(spec, ls->group);
			if (!n) {
				if (ls->has_params)
					st = zm_node_error(spec, err,
					                   ZM_ERR_CONFIG,
					                   "no weight for layer "
					                   "'%s' (group '%s')",
					                   ls->name, ls->group);
				continue;
			}
			st = weight_value(n, &w[l], err);
		}
	}
	zm_gran_units_release(&u);
	return st;
}

/* ---- config ---- */

void zm_merge_config_init(struct zm_merge_config *c)
{
	memset(c, 0, sizeof(*c));
	zm_merge_params_init(&c->params);
}

void zm_merge_config_release(struct zm_merge_config *c)
{
	zm_node_free(c->root);
	free(c->models);
	zm_merge_config_init(c);
}

static enum zm_status parse_params(struct zm_merge_config *c,
                                   const struct zm_node *n,
                                   struct zm_error *err)
{
	static const char *const keys[] = { "density", "lambda", "drop",
	                                    "seed", "dare_ties", NULL };
	const struct zm_node *k;
	enum zm_status st;
	int64_t seed;

	if ((st = zm_node_expect(n, ZM_NODE_MAP, "parameters", err)) ||
	    (st = zm_node_check_keys(n, keys, "parameters", err)))
		return st;
	if ((k = zm_node_get(n, "density"))) {
		if ((st = zm_node_double(k, "density", 0, 1, &c->params.density,
		                         err)))
			return st;
		if (c->params.density <= 0)
			return zm_node_error(k, err, ZM_ERR_CONFIG,
			                     "expected density in (0, 1]");
		c->has_density = true;
	}
	if ((k = zm_node_get(n, "lambda"))) {
		if ((st = zm_node_double(k, "lambda", -1e6, 1e6,
		                         &c->params.lambda, err)))
			return st;
		c->has_lambda = true;
	}
	if ((k = zm_node_get(n, "drop"))) {
		if ((st = zm_node_double(k, "drop", 0, 1, &c->params.drop, err)))
			return st;
		if (c->params.drop >= 1)
			return zm_node_error(k, err, ZM_ERR_CONFIG,
			                     "expected drop in [0, 1)");
		c->has_drop = true;
	}
	if ((k = zm_node_get(n, "seed"))) {
		if ((st = zm_node_int(k, "seed", 0, INT64_MAX, &seed, err)))
			return st;
		c->params.seed = (uint64_t)seed;
		c->has_seed = true;
	}
	if ((k = zm_node_get(n, "dare_ties"))) {
		if ((st = zm_node_bool(k, "dare_ties", &c->params.dare_ties,
		                       err)))
			return st;
		c->has_dare_ties = true;
	}
	return ZM_OK;
}

static enum zm_status parse_models(struct zm_merge_config *c,
                                   const struct zm_node *n,
                                   struct zm_error *err)
{
	static const char *const keys[] = { "model", "weight", NULL };
	enum zm_status st;
	size_t i, j;

	if ((st = zm_node_expect(n, ZM_NODE_SEQ, "models", err)))
		return st;
	if (!(c->models = zm_calloc(n->count ? n->count : 1,
	                            sizeof(*c->models))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (i = 0; i < n->count; i++) {
		const struct zm_node *m = n->items[i], *k, *w;
		if ((st = zm_node_expect(m, ZM_NODE_MAP, "model entry", err)) ||
		    (st = zm_node_check_keys(m, keys, "model entry", err)))
			return st;
		if (!(k = zm_node_get(m, "model")))
			return zm_node_error(m, err, ZM_ERR_CONFIG,
			                     "model entry without 'model'");
		if ((st = zm_node_string(k, "model", &c->models[i].model, err)))
			return st;
		if (c->models[i].model[0] == '\0')
			return zm_node_error(k, err, ZM_ERR_CONFIG,
			                     "expected a model name");
		for (j = 0; j < i; j++)
			if (strcmp(c->models[j].model, c->models[i].model) == 0)
				return zm_node_error(k, err, ZM_ERR_CONFIG,
				                     "model '%s' listed twice",
				                     c->models[i].model);
		if ((w = zm_node_get(m, "weight"))) {
			/* Check the shape of the weight now; names are
			 * checked against the arch once it is known. */
			double v;
			size_t e;
			if (w->type == ZM_NODE_SCALAR &&
			    (st = weight_value(w, &v, err)))
				return st;
			for (e = 0; w->type != ZM_NODE_SCALAR && e < w->count;
			     e++)
				if ((st = weight_value(w->items[e], &v, err)))
					return st;
			if (w->type != ZM_NODE_SCALAR && w->count == 0)
				return zm_node_error(w, err, ZM_ERR_CONFIG,
				                     "expected a weight, not "
				                     "an empty %s",
				                     w->type == ZM_NODE_SEQ
				                     ? "list" : "map");
		}
		c->models[i].weight = w;
		c->n_models++;
	}
	return ZM_OK;
}

static enum zm_status config_from_tree(struct zm_merge_config *c,
                                       struct zm_error *err)
{
	static const char *const keys[] = { "method", "base", "parameters",
	                                    "models", NULL };
	const struct zm_node *root = c->root, *n;
	const char *s;
	enum zm_status st;

	if ((st = zm_node_expect(root, ZM_NODE_MAP, "merge config", err)) ||
	    (st = zm_node_check_keys(root, keys, "merge config", err)))
		return st;
	if ((n = zm_node_get(root, "method"))) {
		if ((st = zm_node_string(n, "method", &s, err)))
			return st;
		if (!zm_merge_method_parse(s, &c->method))
			return zm_node_error(n, err, ZM_ERR_CONFIG, "unknown "
			                     "method '%s' (linear, "
			                     "task-arithmetic, ties, dare, slerp)",
			                     s);
		c->has_method = true;
	}
	if ((n = zm_node_get(root, "base"))) {
		if ((st = zm_node_string(n, "base", &c->base, err)))
			return st;
		if (c->base[0] == '\0')
			return zm_node_error(n, err, ZM_ERR_CONFIG,
			                     "expected a base model name");
	}
	if ((n = zm_node_get(root, "parameters")) &&
	    (st = parse_params(c, n, err)))
		return st;
	if ((n = zm_node_get(root, "models")) && (st = parse_models(c, n, err)))
		return st;
	return ZM_OK;
}

enum zm_status zm_merge_config_parse(const char *bytes, size_t len,
                                     const char *source,
                                     struct zm_merge_config *c,
                                     struct zm_error *err)
{
	enum zm_status st;

	zm_merge_config_release(c);
	if ((st = zm_config_parse(bytes, len, source, &c->root, err)))
		return st;
	if ((st = config_from_tree(c, err)))
		zm_merge_config_release(c);
	return st;
}

enum zm_status zm_merge_config_load(const char *path,
                                    struct zm_merge_config *c,
                                    struct zm_error *err)
{
	enum zm_status st;

	zm_merge_config_release(c);
	if ((st = zm_config_load(path, &c->root, err)))
		return st;
	if ((st = config_from_tree(c, err)))
		zm_merge_config_release(c);
	return st;
}

/* ---- static merges ---- */

/* One input of a streamed merge. */
struct input {
	const char *path, *label;
	struct zm_reader *r;
	struct zm_doc hdr;       /* the header: tensors without data */
	size_t next;             /* index of the next tensor to read */
	struct zm_doc ahead;     /* parameters read ahead (other order) */
	struct zm_doc prof;      /* profile tensors */
	struct zm_arch *arch;
};

static bool is_profile(const char *name)
{
	return strncmp(name, "profile.", 8) == 0;
}

/* The parameter tensor names of arch, in layer order (weight, bias). */
static bool is_param(const struct zm_arch *arch, const char *name)
{
	const char *dot = strrchr(name, '.');
	ptrdiff_t l;
	char layer[ZM_LAYER_NAME_MAX + 1];
	size_t len;

	if (!dot || (strcmp(dot, ".weight") != 0 && strcmp(dot, ".bias") != 0))
		return false;
	len = (size_t)(dot - name);
	if (len > ZM_LAYER_NAME_MAX)
		return false;
	memcpy(layer, name, len);
	layer[len] = '\0';
	l = zm_arch_find_layer(arch, layer);
	return l >= 0 && arch->layers[l].has_params;
}

/* Reads the next tensor of in's header into a new owned tensor. */
static enum zm_status read_owned(struct input *in, struct zm_tensor *t,
                                 struct zm_error *err)
{
	const struct zm_tensor *h = &in->hdr.tensors[in->next];
	enum zm_status st;

	zm_tensor_init(t);
	if ((st = zm_tensor_alloc(t, h->name, h->dtype, h->ndim, h->shape, err)))
		return st;
	if ((st = zm_reader_read_data(in->r, in->next, t->data, err))) {
		zm_tensor_release(t);
		return st;
	}
	in->next++;
	return ZM_OK;
}

/* Keeps a tensor just read: profile tensors and read-ahead parameters. */
static enum zm_status keep_tensor(struct input *in, const struct zm_arch *arch,
                                  struct zm_tensor *t, struct zm_error *err)
{
	enum zm_status st = ZM_OK;

	if (is_profile(t->name))
		st = zm_doc_add(&in->prof, t, err);
	else if (is_param(arch, t->name))
		st = zm_doc_add(&in->ahead, t, err);
	zm_tensor_release(t);
	return st;
}

/* Copies tensor t (any float dtype) into dst as n F32 values. */
static void to_f32(const struct zm_tensor *t, float *dst, size_t n)
{
	if (t->dtype == ZM_DTYPE_F32)
		memcpy(dst, t->data, n * sizeof(float));
	else
		zm_tensor_read_f32(t, 0, n, dst);
}

/*
 * Fetches parameter name of input in as F32 into dst (n elements): from
 * the read-ahead cache, or by reading forward, keeping profile tensors
 * and parameters that come first.  F32 data is read straight into dst.
 */
static enum zm_status fetch(struct input *in, const struct zm_arch *arch,
                            const char *name, float *dst, size_t n,
                            struct zm_error *err)
{
	struct zm_tensor *c = zm_doc_find(&in->ahead, name), t;
	enum zm_status st;

	if (c) {
		to_f32(c, dst, n);
		zm_doc_remove(&in->ahead, name);
		return ZM_OK;
	}
	while (in->next < in->hdr.n_tensors) {
		const struct zm_tensor *h = &in->hdr.tensors[in->next];
		if (strcmp(h->name, name) == 0 && h->dtype == ZM_DTYPE_F32) {
			st = zm_reader_read_data(in->r, in->next, dst, err);
			in->next++;
			return st;
		}
		if ((st = read_owned(in, &t, err)))
			return st;
		if (strcmp(t.name, name) == 0) {
			to_f32(&t, dst, n);
			zm_tensor_release(&t);
			return ZM_OK;
		}
		if ((st = keep_tensor(in, arch, &t, err)))
			return st;
	}
	return zm_error_set(err, ZM_ERR_FORMAT, "%s: tensor %s missing",
	                    in->label, name);
}

/* Reads what is left of in's document up to its last profile tensor,
 * keeping the profile tensors; the rest is skipped with the document. */
static enum zm_status drain(struct input *in, const struct zm_arch *arch,
                            struct zm_error *err)
{
	struct zm_tensor t;
	enum zm_status st;
	size_t last = 0, i;

	for (i = in->next; i < in->hdr.n_tensors; i++)
		if (is_profile(in->hdr.tensors[i].name))
			last = i + 1;
	while (in->next < last) {
		if ((st = read_owned(in, &t, err)) ||
		    (st = keep_tensor(in, arch, &t, err)))
			return st;
	}
	return ZM_OK;
}

static enum zm_status open_input(struct input *in, struct zm_error *err)
{
	enum zm_status st;
	const char *arch;
	bool eof;

	if ((st = zm_reader_open(&in->r, in->path, err)))
		return st;
	if ((st = zm_reader_next_header(in->r, &in->hdr, &eof, err)))
		return st;
	if (eof)
		return zm_error_set(err, ZM_ERR_FORMAT, "%s: empty stream",
		                    in->label);
	if (!(arch = zm_doc_meta(&in->hdr, "zm.arch")))
		return zm_error_set(err, ZM_ERR_FORMAT, "%s: no zm.arch metadata "
		                    "(not a zoomerge model)", in->label);
	return zm_arch_parse_json(arch, strlen(arch), in->label, &in->arch,
	                          err);
}

static void close_input(struct input *in)
{
	zm_reader_close(in->r);
	zm_doc_release(&in->hdr);
	zm_doc_release(&in->ahead);
	zm_doc_release(&in->prof);
	zm_arch_free(in->arch);
}

/* Compares b's parameter tensors with a's, naming the first difference,
 * then the rest of the architecture. */
static enum zm_status same_params(const struct input *a, const struct input *b,
                                  struct zm_error *err)
{
	size_t l, k;
	char sa[96], sb[96], name[ZM_LAYER_NAME_MAX + 8];
	enum zm_status st;

	for (l = 0; l < a->arch->n_layers; l++) {
		if (!a->arch->layers[l].has_params)
			continue;
		for (k = 0; k < 2; k++) {
			const struct zm_tensor *ta, *tb;
			snprintf(name, sizeof(name), "%s.%s",
			         a->arch->layers[l].name, k ? "bias" : "weight");
			ta = zm_doc_find(&a->hdr, name);
			tb = zm_doc_find(&b->hdr, name);
			if (!ta)
				return zm_error_set(err, ZM_ERR_FORMAT,
				                    "%s: tensor %s missing",
				                    a->label, name);
			if (!tb)
				return zm_error_set(err, ZM_ERR_DATA,
				                    "%s has no tensor %s (%s has)",
				                    b->label, name, a->label);
			if (!zm_dtype_is_float(tb->dtype))
				return zm_error_set(err, ZM_ERR_FORMAT,
				                    "%s: tensor %s is %s, not a "
				                    "float", b->label, name,
				                    zm_dtype_name(tb->dtype));
			if (ta->ndim == tb->ndim &&
			    memcmp(ta->shape, tb->shape,
			           (size_t)ta->ndim * sizeof(int64_t)) == 0)
				continue;
			zm_shape_format(ta->ndim, ta->shape, sa, sizeof(sa));
			zm_shape_format(tb->ndim, tb->shape, sb, sizeof(sb));
			return zm_error_set(err, ZM_ERR_DATA,
			                    "architectures differ: tensor %s is "
			                    "%s in %s but %s in %s", name, sb,
			                    b->label, sa, a->label);
		}
	}
	if ((st = zm_model_same_arch(a->arch, b->arch, err)))
		return zm_error_prefix(err, "architectures of %s and %s "
		                       "differ: ", a->label, b->label);
	return ZM_OK;
}

/* Adds a header-only tensor (no data) to doc. */
static enum zm_status add_header_tensor(struct zm_doc *doc, const char *name,
                                        enum zm_dtype dtype, int ndim,
                                        const int64_t *shape,
                                        struct zm_error *err)
{
	struct zm_tensor t;
	size_t numel;

	zm_tensor_init(&t);
	if (!zm_shape_numel(ndim, shape, &numel) ||
	    !zm_size_mul(numel, zm_dtype_size(dtype), &t.nbytes))
		return zm_error_set(err, ZM_ERR_NOMEM, "tensor %s too large",
		                    name);
	if (!(t.name = zm_strdup(name)))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	t.dtype = dtype;
	t.ndim = ndim;
	memcpy(t.shape, shape, (size_t)ndim * sizeof(int64_t));
	return zm_doc_add(doc, &t, err);
}

/*
 * Announces the merged profile's tensors from the inputs' headers (the
 * profile tensors come last in the data, after the header must have been
 * written): profile.count, the widest label histogram, and for each entry
 * in order of first appearance its mean, variance, and count when some
 * input has a count of its own for it or lacks it.
 */
static enum zm_status announce_profile(struct input *ins, size_t n,
                                       struct zm_doc *out,
                                       struct zm_error *err)
{
	static const int64_t one[1] = { 1 };
	int64_t labels = 0;
	size_t i, j, k;
	enum zm_status st;
	bool any = false;
	char name[300];

	for (i = 0; i < n; i++) {
		const struct zm_tensor *t;
		if (!zm_doc_find(&ins[i].hdr, "profile.count"))
			continue;
		any = true;
		t = zm_doc_find(&ins[i].hdr, "profile.labels");
		if (t && t->ndim == 1 && t->shape[0] > labels)
			labels = t->shape[0];
	}
	if (!any)
		return ZM_OK;
	if ((st = add_header_tensor(out, "profile.count", ZM_DTYPE_F64, 1, one,
	                            err)))
		return st;
	if (labels > 0 && (st = add_header_tensor(out, "profile.labels",
	                                          ZM_DTYPE_I64, 1, &labels,
	                                          err)))
		return st;
	for (i = 0; i < n; i++) {
		if (!zm_doc_find(&ins[i].hdr, "profile.count"))
			continue;
		for (j = 0; j < ins[i].hdr.n_tensors; j++) {
			const struct zm_tensor *t = &ins[i].hdr.tensors[j];
			size_t len = strlen(t->name);
			bool need_count = false;
			if (!is_profile(t->name) || len < 13 ||
			    strcmp(t->name + len - 5, ".mean") != 0 ||
			    t->ndim != 1 || len - 5 >= sizeof(name) - 8)
				continue;
			memcpy(name, t->name, len - 5);
			name[len - 5] = '\0';
			strcat(name, ".mean");
			if (zm_doc_find(out, name))
				continue;
			for (k = 0; k < n; k++) {
				char cn[sizeof(name)];
				if (!zm_doc_find(&ins[k].hdr, "profile.count"))
					continue;
				snprintf(cn, sizeof(cn), "%.*s.count",
				         (int)(len - 5), t->name);
				if (zm_doc_find(&ins[k].hdr, cn) ||
				    !zm_doc_find(&ins[k].hdr, t->name))
					need_count = true;
			}
			if ((st = add_header_tensor(out, name, ZM_DTYPE_F32, 1,
			                            t->shape, err)))
				return st;
			name[len - 5] = '\0';
			strcat(name, ".var");
			if ((st = add_header_tensor(out, name, ZM_DTYPE_F32, 1,
			                            t->shape, err)))
				return st;
			name[len - 5] = '\0';
			strcat(name, ".count");
			if (need_count &&
			    (st = add_header_tensor(out, name, ZM_DTYPE_F64, 1,
			                            one, err)))
				return st;
		}
	}
	return ZM_OK;
}

/* Writes the data of the announced profile tensors hdr[first..] from the
 * merged profile p. */
static enum zm_status write_profile(struct zm_writer *w,
                                    const struct zm_doc *hdr, size_t first,
                                    const struct zm_profile *p,
                                    struct zm_error *err)
{
	struct zm_doc built;
	enum zm_status st = ZM_OK;
	size_t i;

	zm_doc_init(&built);
	if (first < hdr->n_tensors && (st = zm_profile_to_doc(p, &built, err)))
		return st;
	for (i = first; i < hdr->n_tensors && st == ZM_OK; i++) {
		const struct zm_tensor *h = &hdr->tensors[i];
		const struct zm_tensor *b = zm_doc_find(&built, h->name);
		size_t len = strlen(h->name);
		if (b && b->nbytes == h->nbytes) {
			st = zm_writer_write_data(w, b->data, b->nbytes, err);
		} else if (b && strcmp(h->name, "profile.labels") == 0 &&
		           b->nbytes < h->nbytes) {
			/* The histogram padded to the announced classes. */
			int64_t zero = 0;
			size_t k;
			st = zm_writer_write_data(w, b->data, b->nbytes, err);
			for (k = b->nbytes; k < h->nbytes && st == ZM_OK;
			     k += sizeof(zero))
				st = zm_writer_write_data(w, &zero, sizeof(zero),
				                          err);
		} else if (!b && len > 6 &&
		           strcmp(h->name + len - 6, ".count") == 0) {
			char entry[300];
			const struct zm_profile_entry *e;
			double c = 0;
			snprintf(entry, sizeof(entry), "%.*s", (int)(len - 14),
			         h->name + 8);
			e = zm_profile_find(p, entry);
			if (e)
				c = e->count;
			st = zm_writer_write_data(w, &c, sizeof(c), err);
		} else {
			st = zm_error_set(err, ZM_ERR_DATA, "merged profile: "
			                  "tensor %s does not match the inputs' "
			                  "headers", h->name);
		}
	}
	zm_doc_release(&built);
	return st;
}

static void hparams_json(const struct zm_merge_static_opts *o,
                         struct zm_buf *b)
{
	size_t i;

	zm_buf_puts(b, "{\"merge\":");
	zm_json_string(b, zm_merge_method_name(o->method),
	               strlen(zm_merge_method_name(o->method)));
	/* A flat map (zoo-add keeps hparams as key=value tags): the models
	 * are one comma-separated string. */
	zm_buf_puts(b, ",\"models\":");
	{
		struct zm_buf names;
		zm_buf_init(&names);
		for (i = 0; i < o->n_models; i++)
			zm_buf_printf(&names, "%s%s", i ? "," : "", o->labels[i]);
		if (names.failed)
			b->failed = true;
		else
			zm_json_string(b, names.data, names.len);
		zm_buf_release(&names);
	}
	if (zm_merge_method_needs_base(o->method) && o->base_label) {
		zm_buf_puts(b, ",\"base\":");
		zm_json_string(b, o->base_label, strlen(o->base_label));
	}
	zm_buf_printf(b, ",\"granularity\":\"%s\"", zm_gran_level_name(o->level));
	if (o->method == ZM_MERGE_TIES) {
		zm_buf_puts(b, ",\"density\":");
		zm_json_double(b, o->params.density);
	}
	if (o->method == ZM_MERGE_DARE) {
		zm_buf_puts(b, ",\"drop\":");
		zm_json_double(b, o->params.drop);
		zm_buf_printf(b, ",\"seed\":%" PRIu64 ",\"dare_ties\":%s",
		              o->params.seed, o->params.dare_ties ? "true"
		                                                  : "false");
	}
	if (zm_merge_method_needs_base(o->method)) {
		zm_buf_puts(b, ",\"lambda\":");
		zm_json_double(b, o->params.lambda);
	}
	zm_buf_puts(b, "}");
}


static enum zm_status check_finite(const float *x, size_t n,
                                   const char *label, const char *name,
                                   struct zm_error *err)
{
	size_t i = 0;

#ifdef __SSE2__
	/* The prefetch thread, which runs this on every input, is the
	 * critical path of a streamed merge: blocks of 1024 are tested four
	 * at a time (all exponent bits set: inf or NaN), and only a block
	 * that fails is scanned again for the first culprit. */
	{
		__m128i ex = _mm_set1_epi32(0x7f800000);
		while (n - i >= 1024) {
			__m128i bad = _mm_setzero_si128();
			size_t j;
			for (j = i; j < i + 1024; j += 4) {
				__m128i e = _mm_and_si128(_mm_castps_si128(
					_mm_loadu_ps(x + j)), ex);
				bad = _mm_or_si128(bad, _mm_cmpeq_epi32(e, ex));
			}
			if (_mm_movemask_epi8(bad))
				break;
			i += 1024;
		}
	}
#endif
	for (; i < n; i++)
		if (!isfinite(x[i]))
			return zm_error_set(err, ZM_ERR_DATA, "%s: tensor %s "
			                    "element %zu is not finite", label,
			                    name, i);
	return ZM_OK;
}

/*
 * The parameter phase runs two threads: a reader that inflates the next
 * input tensor (base first, then each model, tensor after tensor) into
 * one of two slots, and the merging thread, which accumulates the other
 * slot and deflates the output.  Inflate and the merge maths then overlap
 * on two cores, and memory holds two input tensors instead of one.
 */
struct prefetch {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct input *ins;
	size_t n_models, n_params;
	bool base;
	const struct zm_doc *out;   /* header: tensor names and sizes */
	const struct zm_arch *arch;
	float *slot[2];
	size_t produced, consumed;  /* sequence numbers */
	bool failed, stop;
	enum zm_status st;
	struct zm_error err;
};

static void *prefetch_main(void *arg)
{
	struct prefetch *p = arg;
	size_t per = p->n_models + (p->base ? 1 : 0), seq = 0, t, j;
	enum zm_status st = ZM_OK;
	struct zm_error err;

	zm_error_clear(&err);
	for (t = 0; t < p->n_params && st == ZM_OK; t++) {
		const struct zm_tensor *h = &p->out->tensors[t];
		size_t n = h->nbytes / sizeof(float);
		for (j = 0; j < per && st == ZM_OK; j++, seq++) {
			/* The base is the last input but is read first. */
			struct input *in = p->base && j == 0 ? &p->ins[p->n_models]
			                 : &p->ins[j - (p->base ? 1 : 0)];
			float *dst = p->slot[seq % 2];
			pthread_mutex_lock(&p->mu);
			while (!p->stop && p->consumed + 2 <= seq)
				pthread_cond_wait(&p->cv, &p->mu);
			pthread_mutex_unlock(&p->mu);
			if (p->stop)
				return NULL;
			st = fetch(in, p->arch, h->name, dst, n, &err);
			if (st == ZM_OK)
				st = check_finite(dst, n, in->label, h->name, &err);
			pthread_mutex_lock(&p->mu);
			if (st != ZM_OK) {
				p->failed = true;
				p->st = st;
				p->err = err;
			} else {
				p->produced = seq + 1;
			}
			pthread_cond_broadcast(&p->cv);
			pthread_mutex_unlock(&p->mu);
		}
	}
	return NULL;
}

/* Waits for tensor number seq; NULL (with err set) when reading failed. */
static float *prefetch_take(struct prefetch *p, size_t seq,
                            struct zm_error *err)
{
	float *x = NULL;

	pthread_mutex_lock(&p->mu);
	while (p->produced <= seq && !p->failed)
		pthread_cond_wait(&p->cv, &p->mu);
	if (p->produced > seq)
		x = p->slot[seq % 2];
	else
		*err = p->err;
	pthread_mutex_unlock(&p->mu);
	return x;
}

/* Hands slot seq back to the reader. */
static void prefetch_done(struct prefetch *p, size_t seq)
{
	pthread_mutex_lock(&p->mu);
	p->consumed = seq + 1;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

static void prefetch_stop(struct prefetch *p)
{
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

enum zm_status zm_merge_static(const struct zm_merge_static_opts *o,
                               struct zm_error *err)
{
	bool base = zm_merge_method_needs_base(o->method);
	size_t n_in = o->n_models + (base ? 1 : 0), i, l, t, cap = 0, n_params;
	struct input *ins = NULL;
	struct zm_doc out;
	struct zm_merge_acc acc;
	struct zm_writer *w = NULL;
	struct zm_profile merged, one;
	struct zm_buf b;
	double *wts = NULL;
	float *x = NULL, *bx = NULL, *res = NULL, *res2 = NULL;
	const struct zm_arch *arch;
	struct prefetch pf;
	pthread_t thread;
	bool running = false;
	size_t seq = 0;
	enum zm_status st = ZM_OK;

	zm_doc_init(&out);
	zm_buf_init(&b);
	memset(&pf, 0, sizeof(pf));
	zm_profile_init(&merged);
	zm_profile_init(&one);
	memset(&acc, 0, sizeof(acc));
	if (o->n_models == 0)
		return zm_error_set(err, ZM_ERR_USAGE, "no models to merge");
	if (o->method == ZM_MERGE_SLERP && o->n_models != 2)
		return zm_error_set(err, ZM_ERR_USAGE, "slerp merges exactly "
		                    "two models, not %zu", o->n_models);
	if (base && !o->base_path)
		return zm_error_set(err, ZM_ERR_USAGE, "%s needs a base model "
		                    "(--base or base: in the config)",
		                    zm_merge_method_name(o->method));
	if (!(ins = zm_calloc(n_in, sizeof(*ins))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (i = 0; i < n_in; i++) {
		zm_doc_init(&ins[i].hdr);
		zm_doc_init(&ins[i].ahead);
		zm_doc_init(&ins[i].prof);
		ins[i].path = i < o->n_models ? o->paths[i] : o->base_path;
		ins[i].label = i < o->n_models ? o->labels[i]
		               : (o->base_label ? o->base_label : o->base_path);
	}
	/* Every header first: nothing is written for mismatched inputs. */
	for (i = 0; i < n_in && st == ZM_OK; i++)
		st = open_input(&ins[i], err);
	for (i = 1; i < n_in && st == ZM_OK; i++)
		st = same_params(&ins[0], &ins[i], err);
	if (st != ZM_OK)
		goto out;
	arch = ins[0].arch;
	/* The output header: parameters in the first model's order, then the
	 * merged profile. */
	for (t = 0; t < ins[0].hdr.n_tensors && st == ZM_OK; t++) {
		const struct zm_tensor *h = &ins[0].hdr.tensors[t];
		size_t numel;
		if (!is_param(arch, h->name))
			continue;
		zm_shape_numel(h->ndim, h->shape, &numel);
		if (numel > cap)
			cap = numel;
		st = add_header_tensor(&out, h->name, ZM_DTYPE_F32, h->ndim,
		                       h->shape, err);
	}
	n_params = out.n_tensors;
	if (st == ZM_OK)
		st = announce_profile(ins, o->n_models, &out, err);
	zm_arch_to_json(arch, &b);
	if (b.failed)
		st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	if (st == ZM_OK &&
	    ((st = zm_doc_set_meta(&out, "zm.kind", "model", err)) ||
	     (st = zm_doc_set_meta(&out, "zm.arch", b.data, err))))
		goto out;
	zm_buf_release(&b);
	zm_buf_init(&b);
	hparams_json(o, &b);
	if (b.failed)
		st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	if (st == ZM_OK &&
	    ((st = zm_doc_set_meta(&out, "zm.hparams", b.data, err)) ||
	     (o->name && (st = zm_doc_set_meta(&out, "zm.name", o->name, err)))))
		goto out;
	if (st != ZM_OK)
		goto out;
	/* Weights per model and layer. */
	if (!(wts = zm_calloc(o->n_models * arch->n_layers + 1, sizeof(double))))
		goto nomem;
	for (i = 0; i < o->n_models && st == ZM_OK; i++)
		st = zm_merge_layer_weights(o->weight_specs ? o->weight_specs[i]
		                                            : NULL,
		                            o->weights ? o->weights[i] : 1.0,
		                            arch, o->level,
		                            wts + i * arch->n_layers, err);
	if (st != ZM_OK)
		goto out;
	if ((st = zm_merge_acc_init(&acc, o->method, &o->params, cap, err)))
		goto out;
	if (!(x = zm_malloc((cap ? cap : 1) * sizeof(float))) ||
	    !(res = zm_malloc((cap ? cap : 1) * sizeof(float))) ||
	    !(res2 = zm_malloc((cap ? cap : 1) * sizeof(float))) ||
	    (base && !(bx = zm_malloc((cap ? cap : 1) * sizeof(float)))))
		goto nomem;
	if ((st = zm_writer_open(&w, o->out, o->compress, err)) ||
	    (st = zm_writer_begin_doc(w, &out, err)))
		goto out;
	memset(&pf, 0, sizeof(pf));
	pthread_mutex_init(&pf.mu, NULL);
	pthread_cond_init(&pf.cv, NULL);
	pf.ins = ins;
	pf.n_models = o->n_models;
	pf.n_params = n_params;
	pf.base = base;
	pf.out = &out;
	pf.arch = arch;
	pf.slot[0] = x;
	pf.slot[1] = res2;
	if (pthread_create(&thread, NULL, prefetch_main, &pf) != 0) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "merge: cannot start the "
		                  "reader thread");
		goto out;
	}
	running = true;
	for (t = 0; t < n_params; t++) {
		const struct zm_tensor *h = &out.tensors[t];
		size_t n = h->nbytes / sizeof(float), dot;
		char layer[ZM_LAYER_NAME_MAX + 1];
		float *in;
		dot = (size_t)(strrchr(h->name, '.') - h->name);
		memcpy(layer, h->name, dot);
		layer[dot] = '\0';
		l = (size_t)zm_arch_find_layer(arch, layer);
		zm_merge_acc_begin(&acc, n);
		if (base) {
			if (!(in = prefetch_take(&pf, seq, err))) {
				st = err->status;
				goto out;
			}
			memcpy(bx, in, n * sizeof(float));
			prefetch_done(&pf, seq++);
		}
		for (i = 0; i < o->n_models; i++) {
			if (!(in = prefetch_take(&pf, seq, err))) {
				st = err->status;
				goto out;
			}
			zm_merge_acc_add(&acc, in, bx, wts[i * arch->n_layers + l]);
			prefetch_done(&pf, seq++);
		}
		if ((st = zm_merge_acc_finish(&acc, bx, res, err))) {
			zm_error_prefix(err, "%s: ", h->name);
			goto out;
		}
		if ((st = check_finite(res, n, "merged model", h->name, err)) ||
		    (st = zm_writer_write_data(w, res, h->nbytes, err)))
			goto out;
	}
	pthread_join(thread, NULL);
	running = false;
	/* The profiles: merge of the models' (the base's is not counted). */
	for (i = 0; i < o->n_models; i++) {
		if ((st = drain(&ins[i], arch, err)))
			goto out;
		st = zm_profile_from_doc(&one, &ins[i].prof, err);
		if (st == ZM_ERR_NOTFOUND) {
			st = ZM_OK;
			continue;
		}
		if (st != ZM_OK || (st = zm_profile_merge(&merged, &one, err))) {
			zm_error_prefix(err, "%s: ", ins[i].label);
			goto out;
		}
	}
	if ((st = write_profile(w, &out, n_params, &merged, err)))
		goto out;
	st = zm_writer_commit(w, err);
	w = NULL;
	goto out;
nomem:
	st = zm_error_set(err, ZM_ERR_NOMEM, "merge: out of memory");
out:
	if (running) {
		prefetch_stop(&pf);
		pthread_join(thread, NULL);
	}
	if (pf.slot[0]) {
		pthread_mutex_destroy(&pf.mu);
		pthread_cond_destroy(&pf.cv);
	}
	zm_writer_abort(w);
	for (i = 0; i < n_in; i++)
		close_input(&ins[i]);
	free(ins);
	free(wts);
	free(x);
	free(bx);
	free(res);
	free(res2);
	zm_merge_acc_release(&acc);
	zm_profile_release(&merged);
	zm_profile_release(&one);
	zm_doc_release(&out);
	zm_buf_release(&b);
	return st;
}

/* ---- applying updates ---- */

void zm_apply_result_release(struct zm_apply_result *r)
{
	size_t i;

	for (i = 0; i < r->n_models; i++)
		free(r->models[i].name);
	free(r->models);
	memset(r, 0, sizeof(*r));
}

struct upd {
	const struct zm_doc *doc;
	size_t index;            /* 1-based document number */
	const char *slice;
	double weight, samples;
	size_t model;
};

struct mstate {
	const char *name;        /* points into an update's metadata */
	struct zm_model *model;
	struct zm_model *delta;  /* own weighted average delta */
	double c;                /* sum of w x samples */
	size_t comp;
	int64_t old_version;
	size_t n_updates;
	double samples;
};

static size_t uf_find(size_t *parent, size_t i)
{
	while (parent[i] != i)
		i = parent[i] = parent[parent[i]];
	return i;
}

static enum zm_status meta_double(const struct zm_doc *d, size_t index,
                                  const char *key, double dflt, double *out,
                                  struct zm_error *err)
{
	const char *v = zm_doc_meta(d, key);

	*out = dflt;
	if (!v)
		return ZM_OK;
	if (!zm_parse_double(v, out) || *out < 0)
		return zm_error_set(err, ZM_ERR_FORMAT, "update %zu: %s is '%s', "
		                    "expected a number >= 0", index, key, v);
	return ZM_OK;
}

/* Adds c times the update's delta to the model's delta. */
static enum zm_status add_delta(struct mstate *m, const struct upd *u,
                                double c, struct zm_error *err)
{
	size_t l, k, i;

	for (l = 0; l < m->model->arch->n_layers; l++) {
		struct zm_layer *dl = &m->delta->layers[l];
		if (!dl->spec->has_params)
			continue;
		for (k = 0; k < 2; k++) {
			struct zm_tensor *dst = k ? &dl->bias : &dl->weight;
			const struct zm_tensor *src;
			enum zm_status st;
			size_t n = zm_tensor_numel(dst);
			float *d = dst->data, buf[256];
			src = zm_doc_find(u->doc, dst->name);
			if (!src)
				return zm_error_set(err, ZM_ERR_FORMAT, "update %zu "
				                    "(model '%s'): tensor %s "
				                    "missing", u->index, m->name,
				                    dst->name);
			if (!zm_dtype_is_float(src->dtype) ||
			    src->ndim != dst->ndim ||
			    memcmp(src->shape, dst->shape,
			           (size_t)dst->ndim * sizeof(int64_t)) != 0) {
				char a[96], b[96];
				zm_shape_format(src->ndim, src->shape, a, sizeof(a));
				zm_shape_format(dst->ndim, dst->shape, b, sizeof(b));
				return zm_error_set(err, ZM_ERR_DATA, "update %zu "
				                    "(model '%s'): tensor %s is %s %s,"
				                    " the model's is F32 %s", u->index,
				                    m->name, dst->name,
				                    zm_dtype_name(src->dtype), a, b);
			}
			if ((st = zm_tensor_check_finite(src, err)))
				return zm_error_prefix(err, "update %zu: ",
				                       u->index);
			for (i = 0; i < n; i += 256) {
				size_t j, cnt = n - i < 256 ? n - i : 256;
				zm_tensor_read_f32(src, i, cnt, buf);
				for (j = 0; j < cnt; j++)
					d[i + j] += (float)(c * buf[j]);
			}
		}
	}
	return ZM_OK;
}

/* Scales every parameter of m by s. */
static void scale_params(struct zm_model *m, float s)
{
	size_t l, i;

	for (l = 0; l < m->arch->n_layers; l++) {
		struct zm_layer *x = &m->layers[l];
		float *wd = x->weight.data, *bd = x->bias.data;
		if (!x->spec->has_params)
			continue;
		for (i = 0; i < zm_tensor_numel(&x->weight); i++)
			wd[i] *= s;
		for (i = 0; i < zm_tensor_numel(&x->bias); i++)
			bd[i] *= s;
	}
}

/* Combines the updates' zm.metrics: sample counts add up, other numbers
 * are averaged weighted by each update's samples. */
static enum zm_status combine_metrics(const struct upd *us, size_t n_us,
                                      size_t model, struct zm_kv_list *out,
                                      struct zm_error *err)
{
	struct zm_kv_list one;
	double *sum = NULL, *wsum = NULL;
	size_t cap = 0, i, k;
	enum zm_status st = ZM_OK;
	char num[64];

	memset(&one, 0, sizeof(one));
	for (i = 0; i < n_us && st == ZM_OK; i++) {
		const char *js;
		if (us[i].model != model ||
		    !(js = zm_doc_meta(us[i].doc, "zm.metrics")))
			continue;
		zm_kv_release(&one);
		if ((st = zm_kv_from_json(&one, js, "zm.metrics", err)))
			break;
		for (k = 0; k < one.count && st == ZM_OK; k++) {
			const char *key = one.items[k].key;
			const char *v = one.items[k].value;
			bool add = strcmp(key, "samples") == 0 ||
			           strcmp(key, "val_samples") == 0;
			double x, wt = us[i].samples > 0 ? us[i].samples : 1;
			size_t j;
			if (!zm_parse_double(v, &x))
				continue;
			for (j = 0; j < out->count; j++)
				if (strcmp(out->items[j].key, key) == 0)
					break;
			if (j == out->count) {
				if ((st = zm_kv_set(out, key, "0", err)))
					break;
				if (out->count > cap) {
					size_t nc = out->count * 2;
					double *a = zm_realloc(sum, nc * sizeof(double));
					double *b2;
					if (!a) {
						st = zm_error_set(err, ZM_ERR_NOMEM,
						                  "out of memory");
						break;
					}
					sum = a;
					b2 = zm_realloc(wsum, nc * sizeof(double));
					if (!b2) {
						st = zm_error_set(err, ZM_ERR_NOMEM,
						                  "out of memory");
						break;
					}
					wsum = b2;
					cap = nc;
				}
				sum[j] = 0;
				wsum[j] = 0;
			}
			sum[j] += add ? x : wt * x;
			wsum[j] += add ? 0 : wt;
		}
	}
	for (k = 0; k < out->count && st == ZM_OK; k++) {
		double v = wsum[k] > 0 ? sum[k] / wsum[k] : sum[k];
		snprintf(num, sizeof(num), "%.9g", v);
		st = zm_kv_set(out, out->items[k].key, num, err);
	}
	zm_kv_release(&one);
	free(sum);
	free(wsum);
	return st;
}

static void free_states(struct mstate *ms, size_t n)
{
	size_t i;

	for (i = 0; ms && i < n; i++) {
		zm_model_free(ms[i].model);
		zm_model_free(ms[i].delta);
	}
	free(ms);
}

/* Loads the models the updates name and checks their base versions. */
static enum zm_status load_states(struct zm_zoo *zoo, struct upd *us,
                                  size_t n_us, bool rebase,
                                  struct mstate **out, size_t *n_out,
                                  struct zm_error *err)
{
	struct mstate *ms;
	size_t n = 0, i, j;
	enum zm_status st = ZM_OK;

	if (!(ms = zm_calloc(n_us, sizeof(*ms))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (i = 0; i < n_us && st == ZM_OK; i++) {
		const char *name = zm_doc_meta(us[i].doc, "zm.name");
		const char *parent = zm_doc_meta(us[i].doc, "zm.parent");
		struct zm_zoo_entry *e;
		int64_t pv;
		for (j = 0; j < n; j++)
			if (strcmp(ms[j].name, name) == 0)
				break;
		us[i].model = j;
		if ((st = zm_zoo_get(zoo, name, &e, err)))
			break;
		if (!zm_parse_int64(parent, &pv)) {
			st = zm_error_set(err, ZM_ERR_FORMAT, "update %zu: "
			                  "zm.parent is '%s', expected a version",
			                  us[i].index, parent);
			break;
		}
		if (pv != e->version && !rebase) {
			st = zm_error_set(err, ZM_ERR_CONFLICT, "update %zu for "
			                  "model '%s' is based on v%" PRId64
			                  " but the zoo holds v%" PRId64 "; "
			                  "nothing was applied (--rebase applies "
			                  "it to v%" PRId64 ")", us[i].index, name,
			                  pv, e->version, e->version);
			break;
		}
		if (j == n) {
			ms[n].name = name;
			ms[n].old_version = e->version;
			st = zm_zoo_load_entry(zoo, e, &ms[n].model, err);
			if (st == ZM_OK)
				st = zm_model_copy(ms[n].model, &ms[n].delta, err);
			n++;
			if (st == ZM_OK)
				scale_params(ms[n - 1].delta, 0.0f);
		}
		ms[j].n_updates++;
		ms[j].samples += us[i].samples;
	}
	if (st != ZM_OK) {
		free_states(ms, n);
		return st;
	}
	*out = ms;
	*n_out = n;
	return ZM_OK;
}

/* Replaces, on the shared layers, each member's delta of a group of
 * models by the group's weighted average delta. */
static enum zm_status share_group(struct mstate *ms, size_t n_ms, size_t comp,
                                  const bool *shared, struct zm_error *err)
{
	size_t first = SIZE_MAX, m, l, k, i;
	double c = 0;
	enum zm_status st;

	for (m = 0; m < n_ms; m++) {
		if (ms[m].comp != comp)
			continue;
		if (first == SIZE_MAX)
			first = m;
		else if ((st = zm_model_same_arch(ms[first].model->arch,
		                                  ms[m].model->arch, err)))
			return zm_error_prefix(err, "models '%s' and '%s' share a "
			                       "slice but cannot share "
			                       "parameters: ", ms[first].name,
			                       ms[m].name);
		c += ms[m].c;
	}
	if (first == SIZE_MAX || c <= 0)
		return ZM_OK;
	for (l = 0; l < ms[first].model->arch->n_layers; l++) {
		if (!shared[l] || !ms[first].model->arch->layers[l].has_params)
			continue;
		for (k = 0; k < 2; k++) {
			struct zm_tensor *ref = k ? &ms[first].delta->layers[l].bias
			                          : &ms[first].delta->layers[l].weight;
			size_t n = zm_tensor_numel(ref);
			float *avg = zm_calloc(n ? n : 1, sizeof(float));
			if (!avg)
				return zm_error_set(err, ZM_ERR_NOMEM,
				                    "out of memory");
			for (m = 0; m < n_ms; m++) {
				const struct zm_layer *dl;
				const float *d;
				float s = (float)(ms[m].c / c);
				if (ms[m].comp != comp)
					continue;
				dl = &ms[m].delta->layers[l];
				d = k ? dl->bias.data : dl->weight.data;
				for (i = 0; i < n; i++)
					avg[i] += s * d[i];
			}
			for (m = 0; m < n_ms; m++) {
				struct zm_layer *dl;
				if (ms[m].comp != comp)
					continue;
				dl = &ms[m].delta->layers[l];
				memcpy(k ? dl->bias.data : dl->weight.data, avg,
				       n * sizeof(float));
			}
			free(avg);
		}
	}
	return ZM_OK;
}

/* theta += delta, checking the result. */
static enum zm_status add_params(struct mstate *m, struct zm_error *err)
{
	size_t l, k, i;

	for (l = 0; l < m->model->arch->n_layers; l++) {
		struct zm_layer *x = &m->model->layers[l];
		const struct zm_layer *d = &m->delta->layers[l];
		if (!x->spec->has_params)
			continue;
		for (k = 0; k < 2; k++) {
			struct zm_tensor *t = k ? &x->bias : &x->weight;
			const float *dd = k ? d->bias.data : d->weight.data;
			float *p = t->data;
			for (i = 0; i < zm_tensor_numel(t); i++) {
				p[i] += dd[i];
				if (!isfinite(p[i]))
					return zm_error_set(err, ZM_ERR_DATA,
					                    "model '%s': tensor %s "
					                    "element %zu is not finite"
					                    " after the update",
					                    m->name, t->name, i);
			}
		}
	}
	return ZM_OK;
}

/* The model's profile merged with its updates' profiles. */
static enum zm_status update_profile(struct mstate *m, const struct upd *us,
                                     size_t n_us, size_t model,
                                     struct zm_error *err)
{
	struct zm_profile p, q;
	enum zm_status st;
	size_t i;
	bool any = false;

	zm_profile_init(&p);
	zm_profile_init(&q);
	st = zm_profile_from_doc(&p, &m->model->extra, err);
	if (st == ZM_ERR_NOTFOUND)
		st = ZM_OK;
	else if (st == ZM_OK)
		any = true;
	for (i = 0; i < n_us && st == ZM_OK; i++) {
		if (us[i].model != model)
			continue;
		st = zm_profile_from_doc(&q, us[i].doc, err);
		if (st == ZM_ERR_NOTFOUND) {
			st = ZM_OK;
			continue;
		}
		if (st == ZM_OK)
			st = zm_profile_merge(&p, &q, err);
		if (st != ZM_OK)
			zm_error_prefix(err, "update %zu: ", us[i].index);
		any = true;
	}
	if (st == ZM_OK && any)
		st = zm_profile_replace_in_doc(&p, &m->model->extra, err);
	zm_profile_release(&p);
	zm_profile_release(&q);
	return st;
}

enum zm_status zm_merge_apply_updates(struct zm_zoo *zoo,
                                      const struct zm_doc *updates,
                                      size_t n_updates,
                                      const struct zm_apply_opts *o,
                                      struct zm_apply_result *res,
                                      struct zm_error *err)
{
	struct upd *us = NULL;
	struct mstate *ms = NULL;
	struct zm_gran_decision own;
	const struct zm_gran_decision *dec = o->decision;
	size_t n_ms = 0, i, j, *parent = NULL;
	bool *mask = NULL;
	enum zm_status st = ZM_OK;
	struct zm_doc doc;

	zm_apply_result_release(res);
	zm_gran_decision_init(&own);
	zm_doc_init(&doc);
	if (n_updates == 0)
		return zm_error_set(err, ZM_ERR_USAGE, "no updates to apply");
	if (!(us = zm_calloc(n_updates, sizeof(*us))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (i = 0; i < n_updates && st == ZM_OK; i++) {
		const struct zm_doc *d = &updates[i];
		const char *kind = zm_doc_meta(d, "zm.kind");
		us[i].doc = d;
		us[i].index = i + 1;
		us[i].slice = zm_doc_meta(d, "zm.slice");
		if (!kind || strcmp(kind, "update") != 0)
			st = zm_error_set(err, ZM_ERR_FORMAT, "document %zu: "
			                  "zm.kind is '%s', expected update", i + 1,
			                  kind ? kind : "(none)");
		else if (!zm_doc_meta(d, "zm.name") ||
		         !zm_doc_meta(d, "zm.parent"))
			st = zm_error_set(err, ZM_ERR_FORMAT, "update %zu: needs "
			                  "zm.name and zm.parent", i + 1);
		else if (!(st = meta_double(d, i + 1, "zm.weight", 1.0,
		                            &us[i].weight, err)))
			st = meta_double(d, i + 1, "zm.samples", 1.0,
			                 &us[i].samples, err);
	}
	if (st != ZM_OK)
		goto out;
	if ((st = load_states(zoo, us, n_updates, o->rebase, &ms, &n_ms, err)))
		goto out;
	/* Each model's own delta: weighted by w x samples (FedAvg). */
	for (i = 0; i < n_updates && st == ZM_OK; i++) {
		double c = us[i].weight * us[i].samples;
		ms[us[i].model].c += c;
		st = add_delta(&ms[us[i].model], &us[i], c, err);
	}
	for (j = 0; j < n_ms && st == ZM_OK; j++)
		if (ms[j].c > 0)
			scale_params(ms[j].delta, (float)(1.0 / ms[j].c));
	if (st != ZM_OK)
		goto out;
	/* Groups: models connected by a common slice.  An update without
	 * a slice connects its model to nobody. */
	if (!(parent = zm_calloc(n_ms, sizeof(*parent))))
		goto nomem;
	for (j = 0; j < n_ms; j++)
		parent[j] = j;
	for (i = 0; i < n_updates; i++)
		for (j = 0; j < i && us[i].slice; j++)
			if (us[j].slice && strcmp(us[i].slice, us[j].slice) == 0)
				parent[uf_find(parent, us[i].model)] =
					uf_find(parent, us[j].model);
	for (j = 0; j < n_ms; j++)
		ms[j].comp = uf_find(parent, j);
	if (!dec) {
		st = zm_gran_decision_from_share(&own, o->level,
		                                 o->share ? o->share : "all",
		                                 ms[0].model->arch, err);
		if (st != ZM_OK)
			goto out;
		dec = &own;
	}
	for (j = 0; j < n_ms; j++) {
		size_t g, count = 0;
		if (ms[j].comp != j)
			continue;
		for (g = 0; g < n_ms; g++)
			count += ms[g].comp == j;
		if (count < 2)
			continue;
		free(mask);
		if (!(mask = zm_calloc(ms[j].model->arch->n_layers + 1,
		                       sizeof(bool))))
			goto nomem;
		if ((st = zm_gran_decision_validate(dec, ms[j].model->arch,
		                                    err)) ||
		    (st = zm_gran_decision_layer_mask(dec, ms[j].model->arch,
		                                      mask, err)) ||
		    (st = share_group(ms, n_ms, j, mask, err)))
			goto out;
	}
	if (!(res->models = zm_calloc(n_ms, sizeof(*res->models))))
		goto nomem;
	for (j = 0; j < n_ms; j++) {
		struct zm_zoo_entry *e;
		struct zm_kv_list metrics;
		struct zm_buf b;
		int64_t v;
		memset(&metrics, 0, sizeof(metrics));
		zm_buf_init(&b);
		if ((st = add_params(&ms[j], err)) ||
		    (st = update_profile(&ms[j], us, n_updates, j, err)) ||
		    (st = combine_metrics(us, n_updates, j, &metrics, err))) {
			zm_kv_release(&metrics);
			goto out;
		}
		if (metrics.count) {
			zm_kv_to_json(&metrics, &b);
			if (b.failed)
				st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
			else
				st = zm_model_set_string(&ms[j].model->metrics,
				                         b.data, err);
		}
		zm_buf_release(&b);
		if (st == ZM_OK)
			st = zm_model_to_doc(ms[j].model, &doc, err);
		if (st == ZM_OK)
			st = zm_zoo_put_model(zoo, ms[j].name, &doc, &v, err);
		if (st == ZM_OK && (e = zm_zoo_find(zoo, ms[j].name))) {
			e->params = (int64_t)zm_arch_param_count(ms[j].model->arch);
			if (metrics.count) {
				zm_kv_release(&e->metrics);
				e->metrics = metrics;
				memset(&metrics, 0, sizeof(metrics));
			}
		}
		zm_kv_release(&metrics);
		if (st != ZM_OK)
			goto out;
		if (!(res->models[j].name = zm_strdup(ms[j].name)))
			goto nomem;
		res->n_models++;
		res->models[j].old_version = ms[j].old_version;
		res->models[j].new_version = v;
		res->models[j].n_updates = ms[j].n_updates;
		res->models[j].samples = ms[j].samples;
	}
	st = zm_zoo_commit(zoo, err);
	goto out;
nomem:
	st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
out:
	if (st != ZM_OK)
		zm_apply_result_release(res);
	zm_doc_release(&doc);
	zm_gran_decision_release(&own);
	free_states(ms, n_ms);
	free(parent);
	free(mask);
	free(us);
	return st;
}
