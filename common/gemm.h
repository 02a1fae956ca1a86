/*
 * Matrix products.  This is the only file that calls BLIS: every matrix
 * product in zoomerge goes through zm_gemm, so that kernel selection,
 * threading and the reference check live in one place.
 */
#ifndef ZM_GEMM_H
#define ZM_GEMM_H

#include <stdbool.h>
#include <stddef.h>

/*
 * C = alpha * op(A) * op(B) + beta * C, row-major, where op(X) is X or its
 * transpose.  op(A) is m x k, op(B) is k x n, C is m x n; lda, ldb and ldc
 * are the row strides of A, B and C as stored.  beta == 0 ignores C's
 * previous contents (NaN included).
 */
void zm_gemm(bool trans_a, bool trans_b, size_t m, size_t n, size_t k,
             float alpha, const float *a, size_t lda,
             const float *b, size_t ldb, float beta, float *c, size_t ldc);

/*
 * Chooses the best BLIS kernel set the CPU supports (unless the user set
 * BLIS_ARCH_TYPE) and the thread count (threads > 0; 0 keeps BLIS's
 * default from BLIS_NUM_THREADS or 1).  Call before the first zm_gemm;
 * later calls only change the thread count.
 */
void zm_gemm_setup(int threads);

/* The name of the kernel set BLIS runs ("skx", "haswell", ...). */
const char *zm_gemm_arch(void);

/* Number of threads zm_gemm uses. */
int zm_gemm_threads(void);

#endif
