/*
 * Layer types, activations and losses by name, and the activations and
 * their gradients over arrays (layer.h).  conv.c and the model's passes
 * both sit on this unit.
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include <string.h>

#include "error.h"
#include "kernel.h"
#include "layer.h"
#include "mem.h"

/* ---- names ---- */

static const char *const layer_type_names[] = {
	[ZM_LAYER_DENSE] = "dense",
	[ZM_LAYER_FLATTEN] = "flatten",
	[ZM_LAYER_CONV2D] = "conv2d",
	[ZM_LAYER_MAXPOOL2D] = "maxpool2d",
	[ZM_LAYER_STANDARDIZE] = "standardize",
	[ZM_LAYER_CLIP] = "clip",
	[ZM_LAYER_DROPOUT] = "dropout",
	[ZM_LAYER_BATCHNORM] = "batchnorm",
	[ZM_LAYER_ONE_HOT] = "one_hot",
};

static const char *const activation_names[] = {
	[ZM_ACT_IDENTITY] = "identity",
	[ZM_ACT_RELU] = "relu",
	[ZM_ACT_TANH] = "tanh",
	[ZM_ACT_SIGMOID] = "sigmoid",
	[ZM_ACT_GELU] = "gelu",
};

static const char *const loss_names[] = {
	[ZM_LOSS_CROSS_ENTROPY] = "cross-entropy",
	[ZM_LOSS_MSE] = "mse",
};

const char *zm_layer_type_name(enum zm_layer_type t)
{
	ZM_ASSERT((size_t)t < COUNT_OF(layer_type_names));
	return layer_type_names[t];
}

const char *zm_activation_name(enum zm_activation a)
{
	ZM_ASSERT((size_t)a < COUNT_OF(activation_names));
	return activation_names[a];
}

const char *zm_loss_name(enum zm_loss l)
{
	ZM_ASSERT((size_t)l < COUNT_OF(loss_names));
	return loss_names[l];
}

static bool lookup(const char *const *names, size_t count, const char *s,
                   int *out)
{
	size_t i;

	for (i = 0; i < count; i++) {
		if (!strcmp(names[i], s)) {
			*out = (int)i;
			return true;
		}
	}
	return false;
}

bool zm_layer_type_parse(const char *s, enum zm_layer_type *out)
{
	int v;

	if (!lookup(layer_type_names, COUNT_OF(layer_type_names), s, &v))
		return false;
	*out = (enum zm_layer_type)v;
	return true;
}

bool zm_activation_parse(const char *s, enum zm_activation *out)
{
	int v;

	if (!lookup(activation_names, COUNT_OF(activation_names), s, &v))
		return false;
	*out = (enum zm_activation)v;
	return true;
}

bool zm_loss_parse(const char *s, enum zm_loss *out)
{
	int v;

	if (!lookup(loss_names, COUNT_OF(loss_names), s, &v))
		return false;
	*out = (enum zm_loss)v;
	return true;
}

/*
 * Applies OP to count values of in, writing out (which may equal in), in
 * blocks of LANES so that the body vectorizes: each block is computed into
 * a local array first, so the compiler need not fear that a store to out
 * changes a later load from in.
 */
#define MAP_LOOP(OP, in, out, count)                                      \
	do {                                                              \
		size_t i_ = 0, j_;                                        \
		float t_[LANES];                                          \
		for (; i_ + LANES <= (count); i_ += LANES) {              \
			for (j_ = 0; j_ < LANES; j_++)                    \
				t_[j_] = OP((in)[i_ + j_]);               \
			memcpy((out) + i_, t_, sizeof(t_));               \
		}                                                         \
		for (; i_ < (count); i_++)                                \
			(out)[i_] = OP((in)[i_]);                         \
	} while (0)

void zm_activation_apply(enum zm_activation act, const float *pre,
                         float *out, size_t count)
{
	switch (act) {
	case ZM_ACT_IDENTITY:
		if (out != pre)
			memmove(out, pre, count * sizeof(*out));
		break;
	case ZM_ACT_RELU:
		MAP_LOOP(relu1, pre, out, count);
		break;
	case ZM_ACT_TANH:
		MAP_LOOP(tanh1, pre, out, count);
		break;
	case ZM_ACT_SIGMOID:
		MAP_LOOP(sigmoid1, pre, out, count);
		break;
	case ZM_ACT_GELU:
		MAP_LOOP(gelu1, pre, out, count);
		break;
	}
}

bool zm_activation_needs_pre(enum zm_activation act)
{
	return act == ZM_ACT_GELU;
}

/* grad[i] = grad[i] * D(src[i]) in blocks, as MAP_LOOP. */
#define SCALE_LOOP(D, src, grad, count)                                   \
	do {                                                              \
		size_t i_ = 0, j_;                                        \
		float t_[LANES];                                          \
		for (; i_ + LANES <= (count); i_ += LANES) {              \
			for (j_ = 0; j_ < LANES; j_++)                    \
				t_[j_] = (grad)[i_ + j_] *                \
				         D((src)[i_ + j_]);               \
			memcpy((grad) + i_, t_, sizeof(t_));              \
		}                                                         \
		for (; i_ < (count); i_++)                                \
			(grad)[i_] *= D((src)[i_]);                       \
	} while (0)

static inline float relu_d(float y)
{
	return y > 0.0f ? 1.0f : 0.0f;
}

static inline float tanh_d(float y)
{
	return 1.0f - y * y;
}

static inline float sigmoid_d(float y)
{
	return y * (1.0f - y);
}

void zm_activation_backward(enum zm_activation act, const float *pre,
                            const float *post, float *grad, size_t count)
{
	switch (act) {
	case ZM_ACT_IDENTITY:
		break;
	case ZM_ACT_RELU:
		ZM_ASSERT(post);
		SCALE_LOOP(relu_d, post, grad, count);
		break;
	case ZM_ACT_TANH:
		ZM_ASSERT(post);
		SCALE_LOOP(tanh_d, post, grad, count);
		break;
	case ZM_ACT_SIGMOID:
		ZM_ASSERT(post);
		SCALE_LOOP(sigmoid_d, post, grad, count);
		break;
	case ZM_ACT_GELU:
		ZM_ASSERT(pre);
		SCALE_LOOP(gelu_grad1, pre, grad, count);
		break;
	}
}
