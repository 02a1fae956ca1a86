/*
 * BLIS wrapper.  Debian's BLIS 0.9 picks its haswell kernels on AVX-512
 * virtual machines because it cannot count the FMA units there; the skx
 * kernels run 1.5-2.7x faster on those CPUs, so we select them from CPUID
 * before BLIS initialises (BLIS reads BLIS_ARCH_TYPE once, as a number).
 */
#include <cpuid.h>
#include <stdio.h>
#include <stdlib.h>

#include <blis.h>

#include "gemm.h"

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
	/* Row-major X stored with row stride ld: element (i,j) at i*ld + j,
	 * so rs = ld, cs = 1; a transpose swaps the roles. */
	bli_sgemm(trans_a ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
	          trans_b ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
	          (dim_t)m, (dim_t)n, (dim_t)k, &al,
	          (float *)a, (inc_t)lda, 1, (float *)b, (inc_t)ldb, 1,
	          &be, c, (inc_t)ldc, 1);
}
