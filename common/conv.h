/*
 * Convolution and pooling kernels for conv2d and maxpool2d layers.
 *
 * Activations are batch-major flat arrays [n, C*H*W] in NCHW order.  A
 * conv2d layer runs as im2col + one GEMM per chunk of images: the columns
 * of several images are packed side by side into one [C*kh*kw, nb*OH*OW]
 * matrix, so that BLIS sees one wide product W [OC, C*kh*kw] x col instead
 * of many thin ones; the [OC, nb*OH*OW] result is then scattered to the
 * images' NCHW rows, adding the bias on the way.  The backward pass packs
 * the same columns again (cheaper than keeping them for a whole batch) and
 * runs two GEMMs per chunk: dW += dY col^T and dcol = W^T dY, which col2im
 * adds back onto the input gradient.
 */
#ifndef ZM_CONV_H
#define ZM_CONV_H

#include <stdbool.h>
#include <stddef.h>

#include "layer.h"

/* The sizes of one conv2d or maxpool2d layer, per sample. */
struct zm_conv_geom {
	size_t c, h, w;        /* input channels, height, width */
	size_t oc, oh, ow;     /* output channels, height, width */
	size_t kh, kw, sh, sw; /* kernel (pool window) and stride */
	size_t ph, pw;         /* zero padding before row 0 and column 0 */
};

/* The geometry of a conv2d or maxpool2d spec. */
void zm_conv_geom_of(const struct zm_layer_spec *s, struct zm_conv_geom *g);

/* Images packed into one GEMM (at least 1, at most n). */
size_t zm_conv_chunk(const struct zm_conv_geom *g, size_t n);

/* Floats of scratch zm_conv_forward (training: zm_conv_backward too) needs
 * for batches of up to max_batch images; SIZE_MAX on overflow. */
size_t zm_conv_scratch_floats(const struct zm_conv_geom *g, size_t max_batch,
                              bool training);

/*
 * col [c*kh*kw, ld] (row r = (ci*kh + ki)*kw + kj), columns col0 ..
 * col0 + nb*oh*ow - 1, from nb images x [nb, c*h*w]; padding reads 0.
 * zm_col2im adds such columns back onto dx (which it does not clear).
 */
void zm_im2col(const struct zm_conv_geom *g, const float *x, size_t nb,
               float *col, size_t ld);
void zm_col2im(const struct zm_conv_geom *g, const float *col, size_t ld,
               size_t nb, float *dx);

/*
 * y = conv(x, w) + b: x [n, c*h*w], w [oc, c, kh, kw], b [oc], y [n,
 * oc*oh*ow] (pre-activation).  scratch as zm_conv_scratch_floats(g, n,
 * false) says.
 */
void zm_conv_forward(const struct zm_conv_geom *g, const float *w,
                     const float *b, const float *x, size_t n, float *y,
                     float *scratch);

/* y = act(conv(x, w) + b), the activation applied while the output is
 * written, for activations that need no pre-activation kept
 * (zm_activation_needs_pre false). */
void zm_conv_forward_act(const struct zm_conv_geom *g, const float *w,
                         const float *b, const float *x, size_t n,
                         enum zm_activation act, float *y, float *scratch);

/*
 * Gradients of a conv2d layer from dy [n, oc*oh*ow] (wrt its
 * pre-activation): dw [oc, c*kh*kw] and db [oc] are overwritten (beta 0)
 * or added to (beta 1), dx [n, c*h*w] is overwritten; any may be NULL.
 */
void zm_conv_backward(const struct zm_conv_geom *g, const float *w,
                      const float *x, size_t n, const float *dy, float *dw,
                      float *db, float beta, float *dx, float *scratch);

/* Max pooling without padding: y [n, c*oh*ow] from x [n, c*h*w]. */
void zm_maxpool_forward(const struct zm_conv_geom *g, const float *x,
                        size_t n, float *y);

/* dx (overwritten) from dy: each window's gradient goes to the first
 * element of the window that equals its maximum (PyTorch's choice). */
void zm_maxpool_backward(const struct zm_conv_geom *g, const float *x,
                         size_t n, const float *dy, float *dx);

/*
 * Profiles of a layer whose input is [C, H, W] hold one mean and variance
 * per channel, over the batch and the H*W positions: the features that
 * matter to a convolution, and C numbers instead of C*H*W.  The profile
 * dimension of a layer: C for such inputs, else in_features.
 */
size_t zm_layer_profile_dim(const struct zm_layer_spec *s);

/* out [n*hw, c] = h [n, c, hw] transposed per sample, so that statistics
 * over out's rows are per channel over batch and space. */
void zm_channel_rows(const float *h, size_t n, size_t c, size_t hw,
                     float *out);

#endif
