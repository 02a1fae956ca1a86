/*
 * Matrix products.  This is the only file that calls BLIS: every matrix
 * product in zoomerge goes through zm_gemm, so that kernel selection,
 * threading and the reference check live in one place.
 */
#ifndef ZM_GEMM_H
#define ZM_GEMM_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

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
 * Fixed weights for inference.  bli_sgemm packs both operands into the
 * panel layout of its micro-kernel on every call; a dense layer's weights
 * do not change between batches, so zm_gemm_pack copies them into that
 * layout once and zm_gemm_packed_run only packs the input, calls BLIS's
 * micro-kernel for each block, and hands every finished block of the
 * output to a callback while it is still in cache (bias and activation in
 * one pass instead of two).  Where that path does not apply (a micro-kernel
 * that prefers row storage, or more than one thread, where bli_sgemm
 * parallelises the loops) the weights are kept as a plain row-major copy
 * and the run is a zm_gemm followed by the callback over the whole output,
 * with the same result up to rounding.  The layout is chosen when packing:
 * call zm_gemm_setup first.
 */
struct zm_gemm_packed {
	size_t n, k;        /* W is n x k: n outputs of k inputs */
	bool panels;        /* true: micro-kernel layout; false: row-major */
	size_t kc;          /* depth of one block of k (panels) */
	size_t mr, nr;      /* micro-tile: mr outputs x nr input rows */
	size_t mc, rows_max;/* outputs per block; input rows per x panel block */
	size_t floats;      /* length of data */
	float *data;        /* owned, 64-byte aligned, in data_mem */
	float *xbuf;        /* owned scratch: packed input panels */
	void *data_mem, *xbuf_mem;
};

/*
 * Called once for each block of Y once it holds its final X W^T values:
 * rows [row, row + rows) and columns [col, col + cols) of Y, y pointing at
 * element (row, col), ldy Y's row stride.  It may change the block in place.
 */
typedef void (*zm_gemm_block_fn)(void *ctx, float *y, size_t ldy, size_t row,
                                 size_t rows, size_t col, size_t cols);

/*
 * Copies W (n x k, row-major, row stride ldw) into *p, which the caller
 * frees with zm_gemm_packed_free (also after a failure; *p is zeroed
 * first).  max_rows sizes the input scratch: runs with more rows work in
 * blocks.  Errors: ZM_ERR_NOMEM.
 */
enum zm_status zm_gemm_pack(struct zm_gemm_packed *p, const float *w,
                            size_t n, size_t k, size_t ldw, size_t max_rows,
                            struct zm_error *err);
void zm_gemm_packed_free(struct zm_gemm_packed *p);

/*
 * Y = X W^T for X (m x k, row stride ldx) and Y (m x n, row stride ldy),
 * then fn(ctx, ...) on every block of Y (fn may be NULL).  Y must not
 * overlap X.  Not for concurrent use of one p (it packs into p->xbuf).
 */
void zm_gemm_packed_run(struct zm_gemm_packed *p, size_t m, const float *x,
                        size_t ldx, float *y, size_t ldy, zm_gemm_block_fn fn,
                        void *ctx);

/*
 * dst = sum over i < count of coef[i] * src[i] (an array of count packed
 * matrices), elementwise over the packed data: the linear combination of
 * weight matrices, formed in the packed layout (parameter merging per
 * batch without repacking).  All must have been packed with the same n, k
 * and layout; zero coefficients are skipped; count 0 zeroes dst.
 */
void zm_gemm_packed_combine(struct zm_gemm_packed *dst,
                            const struct zm_gemm_packed *src,
                            const float *coef, size_t count);

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
