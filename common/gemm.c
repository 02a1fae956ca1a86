/*
 * BLIS wrapper.  Debian's BLIS 0.9 picks its haswell kernels on AVX-512
 * virtual machines because it cannot count the FMA units there; the skx
 * kernels run 1.5-2.7x faster on those CPUs, so we select them from CPUID
 * before BLIS initialises (BLIS reads BLIS_ARCH_TYPE once, as a number).
 */
#include <cpuid.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <blis.h>

#include "gemm.h"
#include "mem.h"
#include "vec.h"

static bool setup_done;
static int gemm_threads = 1;

/* True when the CPU and the OS support the AVX-512 F/DQ/CD/BW/VL subset
 * that BLIS's skx kernels use. */
static bool cpu_has_avx512_skx(void)
{
	unsigned a, b, c, d;
	unsigned long long xcr0;
	unsigned lo, hi;
	const unsigned need = (1u << 16) | (1u << 17) | (1u << 28) |
	                      (1u << 30) | (1u << 31);

	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27)))
		return false;	/* no OSXSAVE */
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	xcr0 = ((unsigned long long)hi << 32) | lo;
	if ((xcr0 & 0xe6) != 0xe6)
		return false;	/* OS does not save ZMM state */
	if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
		return false;
	return (b & need) == need;
}

void zm_gemm_setup(int threads)
{
	if (!setup_done) {
		const char *env = getenv("BLIS_ARCH_TYPE");
		if ((!env || !*env) && cpu_has_avx512_skx()) {
			char num[16];
			snprintf(num, sizeof(num), "%d", (int)BLIS_ARCH_SKX);
			setenv("BLIS_ARCH_TYPE", num, 1);
		}
		if (threads <= 0) {
			const char *t = getenv("BLIS_NUM_THREADS");
			long v = t ? strtol(t, NULL, 10) : 0;
			threads = v > 0 && v < 1024 ? (int)v : 1;
		}
		setup_done = true;
	}
	if (threads > 0) {
		gemm_threads = threads;
		bli_thread_set_num_threads(threads);
	}
}

const char *zm_gemm_arch(void)
{
	if (!setup_done)
		zm_gemm_setup(0);
	return bli_arch_string(bli_arch_query_id());
}

int zm_gemm_threads(void)
{
	return gemm_threads;
}

void zm_gemm(bool trans_a, bool trans_b, size_t m, size_t n, size_t k,
             float alpha, const float *a, size_t lda,
             const float *b, size_t ldb, float beta, float *c, size_t ldc)
{
	float al = alpha, be = beta;

	if (!setup_done)
		zm_gemm_setup(0);
	if (m == 0 || n == 0)
		return;
	/* BLIS 0.9's small/unpacked ("sup") kernels for Haswell, when they
	 * accumulate into C (beta != 0), read one float past the end of a
	 * row-stored C for some edge shapes (e.g. m = 16, n = 3: the
	 * momentum GEMM of a 3-input layer); valgrind sees it, and a C that
	 * ends at a page boundary would fault.  The conventional path packs
	 * and reads C only within bounds, so accumulating calls take it;
	 * beta == 0 calls (most of them) keep the sup kernels. */
	rntm_t rntm;
	rntm_t *rp = NULL;
	if (beta != 0.0f) {
		bli_rntm_init_from_global(&rntm);
		bli_rntm_disable_l3_sup(&rntm);
		rp = &rntm;
	}
	/* Row-major X stored with row stride ld: element (i,j) at i*ld + j,
	 * so rs = ld, cs = 1; a transpose swaps the roles. */
	bli_sgemm_ex(trans_a ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
	             trans_b ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
	             (dim_t)m, (dim_t)n, (dim_t)k, &al,
	             (float *)a, (inc_t)lda, 1, (float *)b, (inc_t)ldb, 1,
	             &be, c, (inc_t)ldc, 1, NULL, rp);
}

/* ---- packed weights ---- */

/* The micro-kernel and its block sizes, read from BLIS's context once. */
static struct {
	bool ready, usable;
	cntx_t *cntx;
	sgemm_ukr_ft ukr;
	size_t mr, nr, kc_max, mc, nc;
} uk;

static void ukernel_query(void)
{
	if (uk.ready)
		return;
	if (!setup_done)
		zm_gemm_setup(0);
	uk.cntx = bli_gks_query_cntx();
	uk.ukr = (sgemm_ukr_ft)bli_cntx_get_l3_nat_ukr_dt(BLIS_FLOAT,
	                                                  BLIS_GEMM_UKR, uk.cntx);
	uk.mr = (size_t)bli_cntx_get_blksz_def_dt(BLIS_FLOAT, BLIS_MR, uk.cntx);
	uk.nr = (size_t)bli_cntx_get_blksz_def_dt(BLIS_FLOAT, BLIS_NR, uk.cntx);
	uk.kc_max = (size_t)bli_cntx_get_blksz_max_dt(BLIS_FLOAT, BLIS_KC,
	                                              uk.cntx);
	uk.mc = (size_t)bli_cntx_get_blksz_def_dt(BLIS_FLOAT, BLIS_MC, uk.cntx);
	uk.nc = (size_t)bli_cntx_get_blksz_def_dt(BLIS_FLOAT, BLIS_NC, uk.cntx);
	/* W is the micro-kernel's A operand (outputs down a tile's rows) and
	 * our row-major Y is the tile stored by columns: right for kernels
	 * that prefer column storage. */
	uk.usable = uk.ukr && uk.mr > 0 && uk.nr > 0 && uk.kc_max > 0 &&
	            uk.mc >= uk.mr && uk.nc >= uk.nr &&
	            !bli_cntx_l3_nat_ukr_prefers_rows_dt(BLIS_FLOAT,
	                                                 BLIS_GEMM_UKR, uk.cntx);
	uk.mc -= uk.mc % uk.mr;
	uk.nc -= uk.nc % uk.nr;
	uk.ready = true;
}

/* Floats of one panel of `width` lines and depth kc, rounded up so that
 * every panel starts 64-byte aligned. */
static size_t panel_floats(size_t width, size_t kc)
{
	return (width * kc + 15) & ~(size_t)15;
}

static void *alloc_aligned(size_t floats, void **mem)
{
	size_t bytes;
	uintptr_t a;

	if (!zm_size_mul(floats, sizeof(float), &bytes) ||
	    !zm_size_add(bytes, 64, &bytes) || !(*mem = zm_malloc(bytes)))
		return NULL;
	a = ((uintptr_t)*mem + 63) & ~(uintptr_t)63;
	return (void *)a;
}

/*
 * One panel: dst[p * width + j] = src[j * ld + p] for p < kc and j < lines,
 * zero for lines <= j < width (the micro-kernel always reads full panels).
 * Four lines by four depths at a time through a 4x4 transpose.
 */
static void pack_panel(float *restrict dst, const float *restrict src,
                       size_t ld, size_t lines, size_t width, size_t kc)
{
	size_t p = 0, j;

	if (lines == width && width % 4 == 0) {
		for (; p + 4 <= kc; p += 4) {
			for (j = 0; j < width; j += 4) {
				const float *s = src + j * ld + p;
				zm_v4f r0 = zm_load4(s), r1 = zm_load4(s + ld);
				zm_v4f r2 = zm_load4(s + 2 * ld);
				zm_v4f r3 = zm_load4(s + 3 * ld);
				zm_v4f a, b, c, d;
				a = __builtin_shufflevector(r0, r1, 0, 4, 1, 5);
				b = __builtin_shufflevector(r2, r3, 0, 4, 1, 5);
				c = __builtin_shufflevector(r0, r1, 2, 6, 3, 7);
				d = __builtin_shufflevector(r2, r3, 2, 6, 3, 7);
				zm_store4(dst + p * width + j,
				          __builtin_shufflevector(a, b, 0, 1, 4, 5));
				zm_store4(dst + (p + 1) * width + j,
				          __builtin_shufflevector(a, b, 2, 3, 6, 7));
				zm_store4(dst + (p + 2) * width + j,
				          __builtin_shufflevector(c, d, 0, 1, 4, 5));
				zm_store4(dst + (p + 3) * width + j,
				          __builtin_shufflevector(c, d, 2, 3, 6, 7));
			}
		}
	}
	for (; p < kc; p++) {
		for (j = 0; j < lines; j++)
			dst[p * width + j] = src[j * ld + p];
		for (; j < width; j++)
			dst[p * width + j] = 0;
	}
}

enum zm_status zm_gemm_pack(struct zm_gemm_packed *p, const float *w,
                            size_t n, size_t k, size_t ldw, size_t max_rows,
                            struct zm_error *err)
{
	size_t blocks, pc, g, panels, xfloats;
	float *o;

	memset(p, 0, sizeof(*p));
	ukernel_query();
	p->n = n;
	p->k = k;
	p->panels = uk.usable && gemm_threads == 1 && n > 0 && k > 0;
	if (!p->panels) {
		if (!zm_size_mul(n, k, &p->floats) ||
		    !(p->data = alloc_aligned(p->floats, &p->data_mem)))
			return zm_error_set(err, ZM_ERR_NOMEM,
			                    "out of memory for %zu x %zu weights",
			                    n, k);
		for (g = 0; g < n; g++)
			memcpy(p->data + g * k, w + g * ldw, k * sizeof(float));
		return ZM_OK;
	}
	p->mr = uk.mr;
	p->nr = uk.nr;
	p->mc = uk.mc;
	/* Equal blocks of k no deeper than BLIS allows: 784 inputs make two
	 * blocks of 392, not 384 + 384 + 16 (a thin last pass). */
	blocks = (k + uk.kc_max - 1) / uk.kc_max;
	p->kc = (k + blocks - 1) / blocks;
	panels = (n + p->mr - 1) / p->mr;
	p->rows_max = max_rows < uk.nc ? max_rows : uk.nc;
	if (p->rows_max < 1)
		p->rows_max = 1;
	p->rows_max = (p->rows_max + p->nr - 1) / p->nr * p->nr;
	/* Per block of k: every panel of W; the last block may be shallower,
	 * so the total is bounded by blocks full-depth blocks. */
	if (!zm_size_mul(panels, panel_floats(p->mr, p->kc), &p->floats) ||
	    !zm_size_mul(p->floats, blocks, &p->floats) ||
	    !zm_size_mul(p->rows_max / p->nr, panel_floats(p->nr, p->kc),
	                 &xfloats) ||
	    !(p->data = alloc_aligned(p->floats, &p->data_mem)) ||
	    !(p->xbuf = alloc_aligned(xfloats, &p->xbuf_mem))) {
		zm_gemm_packed_free(p);
		return zm_error_set(err, ZM_ERR_NOMEM,
		                    "out of memory packing %zu x %zu weights", n, k);
	}
	memset(p->data, 0, p->floats * sizeof(float));
	o = p->data;
	for (pc = 0; pc < k; pc += p->kc) {
		size_t kc = k - pc < p->kc ? k - pc : p->kc;
		size_t ps = panel_floats(p->mr, kc);
		for (g = 0; g < panels; g++) {
			size_t lines = n - g * p->mr < p->mr ? n - g * p->mr : p->mr;
			pack_panel(o + g * ps, w + g * p->mr * ldw + pc, ldw, lines,
			           p->mr, kc);
		}
		o += panels * ps;
	}
	return ZM_OK;
}

void zm_gemm_packed_free(struct zm_gemm_packed *p)
{
	if (!p)
		return;
	free(p->data_mem);
	free(p->xbuf_mem);
	memset(p, 0, sizeof(*p));
}

void zm_gemm_packed_run(struct zm_gemm_packed *p, size_t m, const float *x,
                        size_t ldx, float *y, size_t ldy, zm_gemm_block_fn fn,
                        void *ctx)
{
	size_t n = p->n, k = p->k, mr = p->mr, nr = p->nr;
	size_t panels, jc, pc, ic, q;
	float one = 1.0f, zero = 0.0f;
	auxinfo_t aux;

	if (m == 0 || n == 0)
		return;
	if (!p->panels) {
		zm_gemm(false, true, m, n, k, 1.0f, x, ldx, p->data, k, 0.0f, y,
		        ldy);
		if (fn)
			fn(ctx, y, ldy, 0, m, 0, n);
		return;
	}
	memset(&aux, 0, sizeof(aux));
	panels = (n + mr - 1) / mr;
	/* BLIS's loop order (blocks of rows, of depth, of outputs; then the
	 * micro-tiles), except that each panel of X is packed just before
	 * its first use, while the block of W it meets is in cache. */
	for (jc = 0; jc < m; jc += p->rows_max) {
		size_t rows = m - jc < p->rows_max ? m - jc : p->rows_max;
		size_t xpanels = (rows + nr - 1) / nr;
		const float *wblock = p->data;
		for (pc = 0; pc < k; pc += p->kc) {
			size_t kc = k - pc < p->kc ? k - pc : p->kc;
			size_t wps = panel_floats(mr, kc), xps = panel_floats(nr, kc);
			bool last = pc + kc >= k;
			float *beta = pc == 0 ? &zero : &one;
			for (ic = 0; ic < n; ic += p->mc) {
				size_t outs = n - ic < p->mc ? n - ic : p->mc;
				const float *wfirst = wblock + ic / mr * wps;
				for (q = 0; q < xpanels; q++) {
					size_t r0 = jc + q * nr;
					size_t nrows = rows - q * nr < nr ? rows - q * nr : nr;
					float *xp = p->xbuf + q * xps, *xnext;
					size_t ir;
					if (ic == 0)
						pack_panel(xp, x + r0 * ldx + pc, ldx,
						           nrows, nr, kc);
					xnext = q + 1 < xpanels ? xp + xps : p->xbuf;
					for (ir = 0; ir < outs; ir += mr) {
						size_t nouts = outs - ir < mr ? outs - ir : mr;
						const float *wp = wfirst + ir / mr * wps;
						float *c = y + r0 * ldy + ic + ir;
						bool more = ir + mr < outs;
						bli_auxinfo_set_next_a(
						    (void *)(more ? wp + wps : wfirst), &aux);
						bli_auxinfo_set_next_b(more ? xp : xnext,
						                       &aux);
						uk.ukr((dim_t)nouts, (dim_t)nrows, (dim_t)kc,
						       &one, (float *)wp, xp, beta, c, 1,
						       (inc_t)ldy, &aux, uk.cntx);
						if (last && fn)
							fn(ctx, c, ldy, r0, nrows, ic + ir,
							   nouts);
					}
				}
			}
			wblock += panels * wps;
		}
	}
}

void zm_gemm_packed_combine(struct zm_gemm_packed *dst,
                            const struct zm_gemm_packed *src,
                            const float *coef, size_t count)
{
	size_t i, j, len = dst->floats;
	float *d = dst->data;
	bool first = true;

	for (i = 0; i < count; i++) {
		const float *s = src[i].data;
		float c = coef[i];
		ZM_ASSERT(src[i].floats == len && src[i].panels == dst->panels);
		if (c == 0)
			continue;
		if (first)
			for (j = 0; j < len; j++)
				d[j] = c * s[j];
		else
			for (j = 0; j < len; j++)
				d[j] += c * s[j];
		first = false;
	}
	if (first)
		memset(d, 0, len * sizeof(float));
}
