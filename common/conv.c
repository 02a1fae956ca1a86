/*
 * conv2d through im2col and chunked GEMMs, and max pooling.  See conv.h for
 * the layout; their YAML keys are parsed with the architecture (arch.c).
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-tree-loop-distribute-patterns")
#endif
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "conv.h"
#include "gemm.h"
#include "mem.h"

/*
 * Columns packed per GEMM: wide enough for BLIS to reach its speed (its
 * n blocking is a few thousand columns), small enough that the packed
 * matrix stays within a few MiB of cache-friendly memory.
 */
enum { CHUNK_COLS = 4096 };
#define CHUNK_FLOATS ((size_t)1 << 20)

void zm_conv_geom_of(const struct zm_layer_spec *s, struct zm_conv_geom *g)
{
	ZM_ASSERT(s->type == ZM_LAYER_CONV2D || s->type == ZM_LAYER_MAXPOOL2D);
	ZM_ASSERT(s->in_ndim == 3 && s->out_ndim == 3);
	g->c = (size_t)s->in_shape[0];
	g->h = (size_t)s->in_shape[1];
	g->w = (size_t)s->in_shape[2];
	g->oc = (size_t)s->out_shape[0];
	g->oh = (size_t)s->out_shape[1];
	g->ow = (size_t)s->out_shape[2];
	g->kh = (size_t)s->kernel[0];
	g->kw = (size_t)s->kernel[1];
	g->sh = (size_t)s->stride[0];
	g->sw = (size_t)s->stride[1];
	g->ph = (size_t)s->pad[0];
	g->pw = (size_t)s->pad[1];
}

size_t zm_conv_chunk(const struct zm_conv_geom *g, size_t n)
{
	size_t ohw = g->oh * g->ow, k = g->c * g->kh * g->kw;
	size_t nb = CHUNK_COLS / ohw;

	if (nb * ohw * k > CHUNK_FLOATS)
		nb = CHUNK_FLOATS / (ohw * k);
	if (nb < 1)
		nb = 1;
	return nb < n ? nb : (n ? n : 1);
}

size_t zm_conv_scratch_floats(const struct zm_conv_geom *g, size_t max_batch,
                              bool training)
{
	size_t nb = zm_conv_chunk(g, max_batch), cols, a, b, t;

	(void)training;   /* both passes use the same two buffers */
	if (!zm_size_mul(nb, g->oh * g->ow, &cols) ||
	    !zm_size_mul(cols, g->c * g->kh * g->kw, &a) ||
	    !zm_size_mul(cols, g->oc, &b) || (t = a + b) < a)
		return SIZE_MAX;   /* an allocation that must fail */
	return t;
}

/* The output columns [lo, hi) of a row whose input column
 * o*s + k - p falls inside [0, w). */
static void valid_range(size_t out, size_t w, size_t s, size_t k, size_t p,
                        size_t *lo, size_t *hi)
{
	/* o*s + k >= p and o*s + k - p <= w - 1 */
	size_t a = k >= p ? 0 : (p - k + s - 1) / s;
	size_t b = w - 1 + p >= k ? (w - 1 + p - k) / s + 1 : 0;

	if (b > out)
		b = out;
	if (a > b)
		a = b;
	*lo = a;
	*hi = b;
}

/* One output row of a column row: zeros where the window hangs over the
 * padding, a copy elsewhere (src is the input of column lo).  Rows are a
 * few dozen floats, too short for memset and memcpy calls to pay for
 * themselves (hence the pragma at the top, which stops GCC from turning
 * these loops back into such calls): the copy moves blocks of eight and
 * four floats with fixed-size memcpy, which compiles to plain loads and
 * stores. */
static void im2col_row(float *restrict dst, const float *restrict src,
                       size_t ow, size_t lo, size_t hi, size_t sw)
{
	size_t ox;

	for (ox = 0; ox < lo; ox++)
		dst[ox] = 0.0f;
	if (sw == 1) {
		float *d = dst + lo;
		size_t len = hi - lo, i = 0;
		for (; i + 8 <= len; i += 8)
			memcpy(d + i, src + i, 8 * sizeof(*d));
		if (i + 4 <= len) {
			memcpy(d + i, src + i, 4 * sizeof(*d));
			i += 4;
		}
		for (; i < len; i++)
			d[i] = src[i];
	} else {
		for (ox = lo; ox < hi; ox++)
			dst[ox] = src[(ox - lo) * sw];
	}
	for (ox = hi; ox < ow; ox++)
		dst[ox] = 0.0f;
}

void zm_im2col(const struct zm_conv_geom *g, const float *x, size_t nb,
               float *col, size_t ld)
{
	size_t chw = g->c * g->h * g->w, ohw = g->oh * g->ow;
	size_t ci, ki, kj, b, oy;

	for (ci = 0; ci < g->c; ci++)
	for (ki = 0; ki < g->kh; ki++)
	for (kj = 0; kj < g->kw; kj++) {
		size_t r = (ci * g->kh + ki) * g->kw + kj, lo, hi;
		float *row = col + r * ld;
		valid_range(g->ow, g->w, g->sw, kj, g->pw, &lo, &hi);
		for (b = 0; b < nb; b++) {
			const float *img = x + b * chw + ci * g->h * g->w;
			float *dst = row + b * ohw;
			for (oy = 0; oy < g->oh; oy++, dst += g->ow) {
				size_t iy = oy * g->sh + ki;
				if (iy < g->ph || iy - g->ph >= g->h) {
					im2col_row(dst, NULL, g->ow, g->ow,
					           g->ow, 1);
					continue;
				}
				/* ox >= lo keeps ox*sw + kj - pw >= 0. */
				im2col_row(dst, hi > lo ? img + (iy - g->ph) *
				           g->w + lo * g->sw + kj - g->pw : NULL,
				           g->ow, lo, hi, g->sw);
			}
		}
	}
}

void zm_col2im(const struct zm_conv_geom *g, const float *col, size_t ld,
               size_t nb, float *dx)
{
	size_t chw = g->c * g->h * g->w, ohw = g->oh * g->ow;
	size_t ci, ki, kj, b, oy, ox;

	for (ci = 0; ci < g->c; ci++)
	for (ki = 0; ki < g->kh; ki++)
	for (kj = 0; kj < g->kw; kj++) {
		size_t r = (ci * g->kh + ki) * g->kw + kj, lo, hi;
		const float *row = col + r * ld;
		valid_range(g->ow, g->w, g->sw, kj, g->pw, &lo, &hi);
		for (b = 0; b < nb; b++) {
			float *img = dx + b * chw + ci * g->h * g->w;
			const float *src = row + b * ohw;
			for (oy = 0; oy < g->oh; oy++, src += g->ow) {
				size_t iy = oy * g->sh + ki;
				float *dst;
				if (iy < g->ph || iy - g->ph >= g->h)
					continue;
				/* ox >= lo keeps ox*sw + kj - pw >= 0. */
				dst = img + (iy - g->ph) * g->w;
				if (g->sw == 1 && hi > lo) {
					float *d1 = dst + lo + kj - g->pw;
					for (ox = 0; ox < hi - lo; ox++)
						d1[ox] += src[lo + ox];
				} else {
					for (ox = lo; ox < hi; ox++)
						dst[ox * g->sw + kj - g->pw] +=
							src[ox];
				}
			}
		}
	}
}

/*
 * dst[p] = act(src[p] + bias) for one output plane, in blocks of eight
 * lanes that GCC's -O2 vectorizer takes.  ReLU is done in the same pass
 * (the common case); other activations get a second pass over the plane,
 * which is still in cache.  dst may equal src: each block is computed
 * into t before it is stored.
 */
static void bias_act(float *dst, const float *src,
                     size_t count, float bias, enum zm_activation act)
{
	enum { LANES = 8 };
	float t[LANES];
	size_t i = 0, j;

	if (act == ZM_ACT_RELU) {
		for (; i + LANES <= count; i += LANES) {
			for (j = 0; j < LANES; j++) {
				float v = src[i + j] + bias;
				/* NaN is kept, as relu does elsewhere. */
				t[j] = v < 0.0f ? 0.0f : v;
			}
			memcpy(dst + i, t, sizeof(t));
		}
		for (; i < count; i++) {
			float v = src[i] + bias;
			dst[i] = v < 0.0f ? 0.0f : v;
		}
		return;
	}
	for (; i + LANES <= count; i += LANES) {
		for (j = 0; j < LANES; j++)
			t[j] = src[i + j] + bias;
		memcpy(dst + i, t, sizeof(t));
	}
	for (; i < count; i++)
		dst[i] = src[i] + bias;
	if (act != ZM_ACT_IDENTITY)
		zm_activation_apply(act, dst, dst, count);
}

void zm_conv_forward_act(const struct zm_conv_geom *g, const float *w,
                         const float *b, const float *x, size_t n,
                         enum zm_activation act, float *y, float *scratch)
{
	size_t k = g->c * g->kh * g->kw, ohw = g->oh * g->ow;
	size_t chw = g->c * g->h * g->w, ochw = g->oc * ohw;
	size_t nb = zm_conv_chunk(g, n), i0, bi, co;

	ZM_ASSERT(!zm_activation_needs_pre(act));
	for (i0 = 0; i0 < n; i0 += nb) {
		size_t m = n - i0 < nb ? n - i0 : nb, cols = m * ohw;
		float *col = scratch, *yb = scratch + nb * ohw * k;
		zm_im2col(g, x + i0 * chw, m, col, cols);
		/* One image: the product is already in NCHW order, and the
		 * bias and activation are applied in place. */
		if (m == 1)
			yb = y + i0 * ochw;
		zm_gemm(false, false, g->oc, cols, k, 1.0f, w, k, col, cols,
		        0.0f, yb, cols);
		for (bi = 0; bi < m; bi++)
			for (co = 0; co < g->oc; co++)
				bias_act(y + (i0 + bi) * ochw + co * ohw,
				         yb + co * cols + bi * ohw, ohw, b[co],
				         act);
	}
}

void zm_conv_forward(const struct zm_conv_geom *g, const float *w,
                     const float *b, const float *x, size_t n, float *y,
                     float *scratch)
{
	zm_conv_forward_act(g, w, b, x, n, ZM_ACT_IDENTITY, y, scratch);
}

void zm_conv_backward(const struct zm_conv_geom *g, const float *w,
                      const float *x, size_t n, const float *dy, float *dw,
                      float *db, float beta, float *dx, float *scratch)
{
	size_t k = g->c * g->kh * g->kw, ohw = g->oh * g->ow;
	size_t chw = g->c * g->h * g->w, ochw = g->oc * ohw;
	size_t nb = zm_conv_chunk(g, n), i0, bi, co, p;
	float bw = beta;

	if (db && beta == 0.0f)
		memset(db, 0, g->oc * sizeof(*db));
	if (dw && beta == 0.0f && n == 0)
		memset(dw, 0, g->oc * k * sizeof(*dw));
	for (i0 = 0; i0 < n; i0 += nb) {
		size_t m = n - i0 < nb ? n - i0 : nb, cols = m * ohw;
		float *col = scratch, *dyb = scratch + nb * ohw * k;
		for (bi = 0; bi < m; bi++)
			for (co = 0; co < g->oc; co++)
				memcpy(dyb + co * cols + bi * ohw,
				       dy + (i0 + bi) * ochw + co * ohw,
				       ohw * sizeof(*dyb));
		if (db)
			for (co = 0; co < g->oc; co++) {
				const float *r = dyb + co * cols;
				float s = 0.0f;
				for (p = 0; p < cols; p++)
					s += r[p];
				db[co] += s;
			}
		if (dw) {
			zm_im2col(g, x + i0 * chw, m, col, cols);
			zm_gemm(false, true, g->oc, k, cols, 1.0f, dyb, cols,
			        col, cols, bw, dw, k);
			bw = 1.0f;
		}
		if (dx) {
			float *d = dx + i0 * chw;
			zm_gemm(true, false, k, cols, g->oc, 1.0f, w, k, dyb,
			        cols, 0.0f, col, cols);
			memset(d, 0, m * chw * sizeof(*d));
			zm_col2im(g, col, cols, m, d);
		}
	}
}

/* The window maximum's fold step: v replaces m when larger or NaN (NaN
 * wins, as in PyTorch). */
static inline float pool_pick(float m, float v)
{
	return v > m || v != v ? v : m;
}

#ifdef __SSE2__
static inline __m128 pool_pick4(__m128 m, __m128 v)
{
	__m128 t = _mm_or_ps(_mm_cmpgt_ps(v, m), _mm_cmpunord_ps(v, v));

	return _mm_or_ps(_mm_and_ps(t, v), _mm_andnot_ps(t, m));
}
#endif

/*
 * 2x2 windows at stride 2, the pooling of nearly every CNN: one output row
 * from input rows r0 and r1, folding each window in the generic loop's
 * order (top left, top right, bottom left, bottom right), so that the
 * result is the same to the bit, NaN and signed zeros included.
 */
static void pool22_row(const float *r0, const float *r1, float *out,
                       size_t ow)
{
	size_t ox = 0;

#ifdef __SSE2__
	for (; ox + 4 <= ow; ox += 4) {
		__m128 a0 = _mm_loadu_ps(r0 + 2 * ox);
		__m128 a1 = _mm_loadu_ps(r0 + 2 * ox + 4);
		__m128 b0 = _mm_loadu_ps(r1 + 2 * ox);
		__m128 b1 = _mm_loadu_ps(r1 + 2 * ox + 4);
		__m128 m = _mm_shuffle_ps(a0, a1, _MM_SHUFFLE(2, 0, 2, 0));
		m = pool_pick4(m, _mm_shuffle_ps(a0, a1,
		                                 _MM_SHUFFLE(3, 1, 3, 1)));
		m = pool_pick4(m, _mm_shuffle_ps(b0, b1,
		                                 _MM_SHUFFLE(2, 0, 2, 0)));
		m = pool_pick4(m, _mm_shuffle_ps(b0, b1,
		                                 _MM_SHUFFLE(3, 1, 3, 1)));
		_mm_storeu_ps(out + ox, m);
	}
#endif
	for (; ox < ow; ox++) {
		float m = r0[2 * ox];
		m = pool_pick(m, r0[2 * ox + 1]);
		m = pool_pick(m, r1[2 * ox]);
		out[ox] = pool_pick(m, r1[2 * ox + 1]);
	}
}

void zm_maxpool_forward(const struct zm_conv_geom *g, const float *x,
                        size_t n, float *y)
{
	size_t planes = n * g->c, pl, oy, ox, i, j;

	if (g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2) {
		for (pl = 0; pl < planes; pl++) {
			const float *img = x + pl * g->h * g->w;
			float *out = y + pl * g->oh * g->ow;
			for (oy = 0; oy < g->oh; oy++)
				pool22_row(img + 2 * oy * g->w,
				           img + (2 * oy + 1) * g->w,
				           out + oy * g->ow, g->ow);
		}
		return;
	}
	for (pl = 0; pl < planes; pl++) {
		const float *img = x + pl * g->h * g->w;
		float *out = y + pl * g->oh * g->ow;
		for (oy = 0; oy < g->oh; oy++)
			for (ox = 0; ox < g->ow; ox++) {
				const float *win = img + oy * g->sh * g->w +
				                   ox * g->sw;
				float mx = win[0];
				for (i = 0; i < g->kh; i++)
					for (j = 0; j < g->kw; j++)
						mx = pool_pick(mx,
						               win[i * g->w + j]);
				out[oy * g->ow + ox] = mx;
			}
	}
}

void zm_maxpool_backward(const struct zm_conv_geom *g, const float *x,
                         size_t n, const float *dy, float *dx)
{
	size_t planes = n * g->c, pl, oy, ox, i, j;

	memset(dx, 0, planes * g->h * g->w * sizeof(*dx));
	for (pl = 0; pl < planes; pl++) {
		const float *img = x + pl * g->h * g->w;
		const float *d = dy + pl * g->oh * g->ow;
		float *gi = dx + pl * g->h * g->w;
		for (oy = 0; oy < g->oh; oy++)
			for (ox = 0; ox < g->ow; ox++) {
				size_t base = oy * g->sh * g->w + ox * g->sw;
				size_t arg = base;
				float mx = img[base];
				for (i = 0; i < g->kh; i++)
					for (j = 0; j < g->kw; j++) {
						size_t at = base + i * g->w + j;
						if (img[at] > mx) {
							mx = img[at];
							arg = at;
						}
					}
				gi[arg] += d[oy * g->ow + ox];
			}
	}
}

size_t zm_layer_profile_dim(const struct zm_layer_spec *s)
{
	return s->in_ndim == 3 ? (size_t)s->in_shape[0] : s->in_features;
}

void zm_channel_rows(const float *h, size_t n, size_t c, size_t hw,
                     float *out)
{
	size_t b, ci, p;

	for (b = 0; b < n; b++)
		for (ci = 0; ci < c; ci++) {
			const float *src = h + (b * c + ci) * hw;
			float *dst = out + b * hw * c + ci;
			for (p = 0; p < hw; p++)
				dst[p * c] = src[p];
		}
}
