/*
 * What a layer is, independent of any model: its type, activation and the
 * loss at the end, their names in the arch, the per-sample shape limits,
 * struct zm_layer_spec, and the activations over arrays.  conv.h and
 * model.h both sit on this header; neither needs the other's.
 */
#ifndef ZM_LAYER_H
#define ZM_LAYER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum zm_layer_type {
	ZM_LAYER_DENSE,
	ZM_LAYER_FLATTEN,
	ZM_LAYER_CONV2D,
	ZM_LAYER_MAXPOOL2D,
	ZM_LAYER_STANDARDIZE,
	ZM_LAYER_CLIP,
	ZM_LAYER_DROPOUT,
	ZM_LAYER_BATCHNORM,
	ZM_LAYER_ONE_HOT
};

/*
 * GELU is the tanh approximation, 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715
 * x^3))), PyTorch's gelu(approximate='tanh'); its gradient is the exact
 * derivative of that formula.
 */
enum zm_activation {
	ZM_ACT_IDENTITY,
	ZM_ACT_RELU,
	ZM_ACT_TANH,
	ZM_ACT_SIGMOID,
	ZM_ACT_GELU
};

enum zm_loss {
	ZM_LOSS_CROSS_ENTROPY,    /* softmax + negative log-likelihood */
	ZM_LOSS_MSE               /* mean over all n x t elements */
};

/* Limits that keep sizes sane before anything is allocated. */
#define ZM_ARCH_MAX_LAYERS 256
#define ZM_ARCH_MAX_UNITS 1048576          /* per layer */
#define ZM_ARCH_MAX_FEATURES 16777216      /* per sample, at any layer */
#define ZM_ARCH_MAX_PARAMS ((int64_t)1 << 32) /* per layer, elements */
#define ZM_LAYER_NAME_MAX 64
#define ZM_INPUT_MAX_DIMS 4

#define ZM_ARCH_MAX_KERNEL 1024         /* conv/pool kernel and stride */

/*
 * One layer of an architecture.  Shapes are per sample (no batch dim).
 * Default groups: "dense" for dense, "conv" for conv2d; the other types
 * join the group of the layer before them (they belong to that stage),
 * or are named by their type ("standardize", "flatten") when they come
 * first.
 *
 * Element-wise layers keep the shape of their input:
 *  - standardize: y = (x - mean) * inv_std per feature.  Its two tensors
 *    take the places of weight and bias, so that every program that
 *    stores, averages or merges parameters treats them alike: "LAYER.weight"
 *    is the mean and "LAYER.bias" the inverse standard deviation, both F32
 *    [features].  They are not trained (trainable is false): training
 *    fits them from its rows when inv_std is all zero (a new model), and
 *    leaves them alone otherwise.  Only the first layer (after flatten)
 *    may be one, as it is fitted to the input data.
 *  - batchnorm: PyTorch's BatchNorm1d(affine=False) on a vector input
 *    (the dense layer after it scales and shifts): in training y = (x -
 *    mean) / sqrt(var + eps) with the batch's mean and biased variance,
 *    and the running statistics move by momentum towards them (the
 *    variance unbiased); at inference the running statistics are used.
 *    "LAYER.weight" is the running mean (0 in a new model) and
 *    "LAYER.bias" the running variance (1), F32 [features], not trained
 *    by the optimizer, and averaged like parameters when models merge.
 *  - clip: y = min(max(x, lo), hi); the gradient passes where lo < x < hi.
 *  - dropout: in training each value is zeroed with probability rate and
 *    the others scaled by 1 / (1 - rate) (PyTorch's nn.Dropout); at
 *    inference, in merging and in evaluation it is the identity.
 *  - one_hot: a string column of the data (column, levels) as one unit
 *    per level, 1 for the row's level and 0 for the others.  The units
 *    are made where data meets the model (schema.h, zm_onehot_fill),
 *    matched by level name, and appended to the model's input after the
 *    numeric features, in layer order: the arch's input counts the
 *    numeric features, input_features counts the units too.  In the
 *    network the layer is the identity and has no parameters; only
 *    standardize and one_hot layers may come before it, and a
 *    standardize layer is fitted to its units like to the features.
 */
struct zm_layer_spec {
	char *name;                   /* owned; [A-Za-z0-9_-]+ */
	char *group;                  /* owned; default: see above */
	enum zm_layer_type type;
	enum zm_activation act;       /* dense, conv2d; else identity */
	int64_t units;                /* dense: outputs; conv2d: filters */
	int in_ndim, out_ndim;
	int64_t in_shape[ZM_INPUT_MAX_DIMS], out_shape[ZM_INPUT_MAX_DIMS];
	size_t in_features, out_features;   /* numel of in_shape, out_shape */
	bool has_params;              /* dense, conv2d, standardize, batchnorm */
	bool trainable;               /* has_params, and the optimizer
	                                 updates them (not standardize,
	                                 batchnorm) */
	/* conv2d and maxpool2d: kernel (pool window) [kh, kw], stride
	 * [sh, sw], and conv2d's zero padding before the first row and
	 * column [top, left] (the padding after follows from out_shape). */
	int64_t kernel[2], stride[2], pad[2];
	bool same;                    /* conv2d: padding 'same', else 'valid' */
	double lo, hi;                /* clip: bounds, lo < hi */
	double rate;                  /* dropout: in [0, 1) */
	double momentum, eps;         /* batchnorm: 0.1 and 1e-5 */
	char *column;                 /* one_hot: owned, the string column */
	char **levels;                /* one_hot: owned, n_levels names */
	size_t n_levels;
	size_t n_weight, n_bias;      /* parameter counts; 0 without params */
	/* Owned; the module name its parameters have in a PyTorch state
	 * dict (the arch's map:, or set when a state dict was matched by
	 * order), NULL when it is the layer's own name. */
	char *torch;
};

/* Most levels of one one_hot layer. */
#define ZM_ONE_HOT_MAX_LEVELS 65536

/* Largest |bound| of a clip layer: as CSV data (ZM_DATA_MAX_ABS). */
#define ZM_CLIP_MAX_ABS 1e18

/* Names of the enums as written in the arch ("cross-entropy", "gelu"). */
const char *zm_layer_type_name(enum zm_layer_type t);
const char *zm_activation_name(enum zm_activation a);
const char *zm_loss_name(enum zm_loss l);
/* Parse those names; false when unknown. */
bool zm_layer_type_parse(const char *s, enum zm_layer_type *out);
bool zm_activation_parse(const char *s, enum zm_activation *out);
bool zm_loss_parse(const char *s, enum zm_loss *out);

/* out[i] = act(pre[i]) for count values; pre == out is allowed. */
void zm_activation_apply(enum zm_activation act, const float *pre,
                         float *out, size_t count);

/*
 * grad[i] *= act'(pre[i]) for count values: turns the gradient wrt a
 * layer's output into the gradient wrt its pre-activation.  relu, tanh and
 * sigmoid read post (the activation's output), gelu reads pre; the other
 * pointer may be NULL.  zm_activation_needs_pre says which.
 */
void zm_activation_backward(enum zm_activation act, const float *pre,
                            const float *post, float *grad, size_t count);
bool zm_activation_needs_pre(enum zm_activation act);

#endif
