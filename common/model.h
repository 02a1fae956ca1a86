/*
 * Models: the architecture (parsed from the arch YAML, or from the JSON kept
 * in a model document's zm.arch), the parameters in PyTorch layout (dense
 * weight [out, in], bias [out], F32), the model's identity metadata, and the
 * forward and backward passes.
 *
 * Activations are batch-major: a batch of n samples with f features is an
 * n x f row-major float array.  Every matrix product goes through zm_gemm.
 * Layer-level functions are public because predict merges models layer by
 * layer (h_l = sum_i w_i f_i,l(h_{l-1})) and must run one layer of one model
 * at a time, before or after its activation.
 *
 * Layer types: dense; flatten (a reshape, which costs nothing since
 * activations are always stored flat); conv2d and maxpool2d on per-sample
 * shapes [C, H, W], stored flat in C-major (NCHW) order, so that a flatten
 * or dense layer after them sees PyTorch's nn.Flatten order.  conv2d
 * weights are [out_c, in_c, kh, kw] as in PyTorch (common/conv.h holds the
 * im2col kernels).
 *
 * The layer types and activations are layer.h's; the implementation is
 * split by phase: arch.c (architectures), model.c (models and their
 * documents), compute.c (layers, workspaces, passes), loss.c (losses).
 */
#ifndef ZM_MODEL_H
#define ZM_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "error.h"
#include "gemm.h"
#include "json.h"
#include "layer.h"
#include "random.h"
#include "stream.h"
#include "tensor.h"

struct zm_arch {
	int input_ndim;
	int64_t input_shape[ZM_INPUT_MAX_DIMS];
	size_t input_features;        /* numel of input_shape */
	enum zm_loss loss;
	size_t n_layers;
	struct zm_layer_spec *layers; /* owned array */
	size_t output_features;       /* the last layer's out_features */
	size_t max_features;          /* the widest input/output of any layer */
};

/*
 * Builds an architecture from a parsed YAML or JSON tree (see DESIGN.md
 * section 3): input (a list of 1 to 4 positive dimensions, or one integer),
 * loss (default cross-entropy), optional classes (must equal the last
 * layer's units), and layers, each {name, type (default dense), units,
 * activation (default identity), group (default the layer kind)}.
 * On success *out is a new arch freed with zm_arch_free; on failure *out is
 * NULL and err reads "SOURCE:LINE:COL: ..." (ZM_ERR_CONFIG) at the node at
 * fault, or ZM_ERR_NOMEM.
 */
enum zm_status zm_arch_parse(const struct zm_node *root, struct zm_arch **out,
                             struct zm_error *err);

/* Loads and parses an arch YAML file ("-" for stdin); errors as above plus
 * those of zm_config_load. */
enum zm_status zm_arch_load(const char *path, struct zm_arch **out,
                            struct zm_error *err);

/* Parses an arch from JSON text (a model's zm.arch); source names it in
 * messages (e.g. "m0.safetensors.gz: zm.arch"). */
enum zm_status zm_arch_parse_json(const char *json, size_t len,
                                  const char *source, struct zm_arch **out,
                                  struct zm_error *err);

/*
 * Appends the arch as one line of JSON to b, in a form zm_arch_parse_json
 * reads back to an equal arch.  Allocation failures set b->failed.
 */
void zm_arch_to_json(const struct zm_arch *arch, struct zm_buf *b);

/* Deep copy: *out is a new arch (ZM_ERR_NOMEM on failure). */
enum zm_status zm_arch_copy(const struct zm_arch *src, struct zm_arch **out,
                            struct zm_error *err);

/* Frees an arch; NULL is fine. */
void zm_arch_free(struct zm_arch *arch);

/* True when a and b are identical, groups included. */
bool zm_arch_equal(const struct zm_arch *a, const struct zm_arch *b);

/* Number of trainable parameters (weights and biases). */
size_t zm_arch_param_count(const struct zm_arch *arch);

/* The units of its one_hot layers (their levels), which the input counts
 * after the arch's own input features (layer.h). */
size_t zm_arch_one_hot_units(const struct zm_arch *arch);

/* ZM_OK when a and b have the same one_hot layers (column, levels in
 * order), which models that read the same rows need; else ZM_ERR_DATA
 * naming the first level that differs. */
enum zm_status zm_arch_same_one_hot(const struct zm_arch *a,
                                    const struct zm_arch *b,
                                    struct zm_error *err);

/* Index of the layer called name, or -1. */
ptrdiff_t zm_arch_find_layer(const struct zm_arch *arch, const char *name);

/* ---- models ---- */

/* A layer's parameters.  Layers without parameters have empty tensors. */
struct zm_layer {
	const struct zm_layer_spec *spec;   /* points into the model's arch */
	struct zm_tensor weight;            /* "LAYER.weight" F32 [out, in],
	                                       conv2d [out_c, in_c, kh, kw] */
	struct zm_tensor bias;              /* "LAYER.bias"   F32 [out] */
};

/*
 * A model.  The string fields are owned (zm_malloc'd), NULL when unset, and
 * map to metadata keys: name zm.name, version zm.version, parent
 * zm.parent, tags zm.tags (JSON map), metrics zm.metrics (JSON),
 * hparams zm.hparams (JSON).  extra keeps every other tensor and metadata
 * entry of the model's document (profile.* tensors, unknown keys) so that
 * loading and saving loses nothing.
 */
struct zm_model {
	struct zm_arch *arch;         /* owned */
	struct zm_layer *layers;      /* owned, arch->n_layers entries */
	char *name, *version, *parent, *tags, *metrics, *hparams;
	struct zm_doc extra;
};

/*
 * Creates a model with a copy of arch and seeded random weights: He-normal
 * (std sqrt(2 / fan_in)) before relu and gelu, Glorot-uniform
 * (+-sqrt(6 / (fan_in + fan_out))) otherwise, zero biases, drawn layer by
 * layer in row-major order from zm_rng seeded with seed.  *out is freed
 * with zm_model_free.
 */
enum zm_status zm_model_new(const struct zm_arch *arch, uint64_t seed,
                            struct zm_model **out, struct zm_error *err);

/* Frees a model and everything it owns; NULL is fine. */
void zm_model_free(struct zm_model *model);

/* Deep copy of a model, extra included. */
enum zm_status zm_model_copy(const struct zm_model *src,
                             struct zm_model **out, struct zm_error *err);

/* Replaces one of the model's string fields (e.g. &m->name) with a copy of
 * value (NULL clears it). */
enum zm_status zm_model_set_string(char **field, const char *value,
                                   struct zm_error *err);

/*
 * Builds a model from a document (copying; doc is not changed).  The arch
 * comes from arch when not NULL (importing a plain PyTorch state dict),
 * else from the zm.arch metadata.  Checks: zm.kind, when present, is
 * "model" (ZM_ERR_FORMAT); every LAYER.weight and LAYER.bias is present
 * with the arch's shape and a float dtype (ZM_ERR_FORMAT naming the
 * tensor; F16, BF16 and F64 are converted to F32) and holds only finite
 * values (ZM_ERR_DATA naming the tensor and element).  Other tensors and
 * metadata go to extra.
 */
enum zm_status zm_model_from_doc(const struct zm_doc *doc,
                                 const struct zm_arch *arch,
                                 struct zm_model **out, struct zm_error *err);

/* Reads the first document of a model file (path, "-": stdin) and builds
 * the model from it as zm_model_from_doc does; errors name the file. */
enum zm_status zm_model_load(const char *path, struct zm_model **out,
                             struct zm_error *err);

/*
 * Writes the model into doc (released first, then owned by the caller):
 * parameters in layer order, then extra's tensors; metadata zm.kind=model,
 * zm.arch and every set string field, then extra's metadata.
 */
enum zm_status zm_model_to_doc(const struct zm_model *model,
                               struct zm_doc *doc, struct zm_error *err);

/*
 * ZM_OK when a and b have the same input, loss, and layers with the same
 * names, types, units and activations (so their parameters can be merged
 * tensor by tensor; groups may differ).  Otherwise ZM_ERR_DATA with a
 * message naming the first difference ("layer 2 'fc2': units 128 vs 64").
 */
enum zm_status zm_model_same_arch(const struct zm_arch *a,
                                  const struct zm_arch *b,
                                  struct zm_error *err);

/* ---- layer-level computation ---- */

/*
 * out_pre = in * W^T + b for a dense layer (in is n x in_features, out_pre
 * n x out_features; in and out_pre must not overlap); a plain copy for
 * flatten (pointers may be equal, then nothing happens); the max for
 * maxpool2d.  conv2d layers need scratch memory: use zm_layer_forward.
 */
void zm_layer_linear(const struct zm_layer *layer, const float *in, size_t n,
                     float *out_pre);

/*
 * As zm_layer_linear for every layer type; scratch holds
 * zm_layer_scratch_floats(spec, n, false) floats (NULL when that is 0).
 */
void zm_layer_forward(const struct zm_layer *layer, const float *in, size_t n,
                      float *out_pre, float *scratch);

/* Floats of scratch a layer's forward pass (backward too, with training)
 * of up to max_batch rows needs; 0 for layers other than conv2d. */
size_t zm_layer_scratch_floats(const struct zm_layer_spec *s,
                               size_t max_batch, bool training);

/*
 * Backward pass of a dense layer given dpre (n x out, the gradient wrt the
 * pre-activation): dw = dpre^T * in (out x in), db = column sums of dpre
 * (out), dx = dpre * W (n x in).  Each output may be NULL to skip it;
 * beta_dw 0 overwrites dw and db, 1 accumulates into them.
 */
void zm_layer_backward(const struct zm_layer *layer, const float *in,
                       size_t n, const float *dpre, float *dw, float *db,
                       float beta_dw, float *dx);

/*
 * As zm_layer_backward for every layer type: standardize (dx = dpre *
 * inv_std; dw and db, when given, are zeroed: it is fitted, not trained),
 * clip (dx = dpre where lo < in < hi, else 0), dropout (dx = dpre, its
 * inference form: zm_model_backward applies the training mask), conv2d (dw [out_c, in_c, kh,
 * kw], db [out_c]; scratch of zm_layer_scratch_floats(spec, n, true)
 * floats), maxpool2d (dx only: each window's gradient goes to its first
 * maximum of in; out_pre is the layer's output; dx is overwritten) and
 * flatten (dx = dpre).  out_pre is only read by maxpool2d.
 */
void zm_layer_backward_any(const struct zm_layer *layer, const float *in,
                           const float *out_pre, size_t n, const float *dpre,
                           float *dw, float *db, float beta_dw, float *dx,
                           float *scratch);

/* ---- model-level computation ---- */

/*
 * Buffers for forward (and, with training, backward) passes of batches of
 * up to max_batch rows of one architecture, allocated once.  After
 * zm_model_forward, out[l] is the output (post-activation) of layer l for
 * the batch (flatten layers alias their input), and pre[l] the
 * pre-activation for gelu layers (NULL otherwise; for other activations the
 * pre-activation is not kept).  dw[l], db[l] hold the parameter gradients
 * after zm_model_backward (NULL for layers without parameters).
 */
struct zm_workspace {
	const struct zm_arch *arch;   /* borrowed; must outlive ws */
	size_t max_batch;
	bool training;
	const float **out;            /* n_layers pointers into buffers */
	float **pre;                  /* n_layers, gelu layers only */
	float **buf;                  /* owned output buffers per layer */
	float **dw, **db;             /* training: gradients per layer */
	float *grad_a, *grad_b;       /* training: max_batch x max_features */
	float *dlogits;               /* training: max_batch x output */
	float *scratch;               /* conv2d im2col; NULL without conv */
	/* After zm_workspace_pack: packed[l] holds dense layer l's weights
	 * (other layers zeroed), used for packed_from only. */
	struct zm_gemm_packed *packed;
	const struct zm_model *packed_from;
	/* Training: draws the dropout masks; seeded 0 by zm_workspace_new,
	 * reseed it (zm_rng_seed) for another sequence. */
	struct zm_rng rng;
};

/* Allocates a workspace; *out is freed with zm_workspace_free. */
enum zm_status zm_workspace_new(const struct zm_arch *arch, size_t max_batch,
                                bool training, struct zm_workspace **out,
                                struct zm_error *err);
void zm_workspace_free(struct zm_workspace *ws);

/*
 * Inference: copies model's dense weights into ws in the layout of
 * zm_gemm_pack (gemm.h), so that zm_model_forward(model, ws, ...) stops
 * repacking them for every batch and adds the bias and applies the
 * activation block by block while the block is in cache.  The copies are
 * what later forward passes of this model with ws use: pack again after
 * changing the weights.  A pass with another model ignores them.  Errors:
 * ZM_ERR_NOMEM (ws is then as before), ZM_ERR_USAGE for a training ws.
 */
enum zm_status zm_workspace_pack(struct zm_workspace *ws,
                                 const struct zm_model *model,
                                 struct zm_error *err);

/*
 * The bias and the activation of a dense layer on one block of its
 * output, as a zm_gemm_block_fn: ctx is a struct zm_dense_epilogue, the
 * block y[i * ldy + j] (rows x cols) holds X W^T for columns col.. .
 * Computes exactly what zm_activation_apply does to the biased values.
 */
struct zm_dense_epilogue {
	const float *bias;
	enum zm_activation act;
};
void zm_dense_epilogue_block(void *ctx, float *y, size_t ldy, size_t row,
                             size_t rows, size_t col, size_t cols);

/*
 * Runs the model on x (n x input_features, n <= ws->max_batch) and returns
 * the n x output_features outputs (logits for cross-entropy), which live in
 * ws until its next use.  ws must have been made for model's arch.
 */
const float *zm_model_forward(const struct zm_model *model,
                              struct zm_workspace *ws, const float *x,
                              size_t n);

/*
 * Backward pass after zm_model_forward on the same x and n: dout (n x
 * output_features, the gradient of the loss wrt the outputs) is used as
 * scratch and clobbered.  Fills ws->dw and ws->db.  ws must be a training
 * workspace.
 */
void zm_model_backward(const struct zm_model *model, struct zm_workspace *ws,
                       const float *x, size_t n, float *dout);

/*
 * After a training zm_model_forward of n rows: moves the running mean and
 * variance of model's batchnorm layers towards the batch's (mean and
 * unbiased variance) by their momentum, as PyTorch's BatchNorm1d does.
 * zm_train_step calls it; the forward pass leaves the model const.
 */
void zm_model_update_running(struct zm_model *model,
                             const struct zm_workspace *ws, size_t n);

/* ---- losses ---- */

/*
 * Softmax cross-entropy of logits (n x classes) against labels (class ids)
 * with a stable log-sum-exp.  Adds the summed (not mean) loss to *loss_sum
 * and the number of rows whose arg-max equals the label to *correct (either
 * may be NULL).  When grad is not NULL it receives the gradient of the
 * *mean* loss wrt the logits, (softmax - onehot) / n; grad may equal
 * logits.  A label outside [0, classes) gives ZM_ERR_DATA naming the row.
 */
enum zm_status zm_loss_cross_entropy(const float *logits,
                                     const int64_t *labels, size_t n,
                                     size_t classes, double *loss_sum,
                                     size_t *correct, float *grad,
                                     struct zm_error *err);

/*
 * Mean squared error of out (n x t) against targets (n x t): adds the sum
 * over rows of the row means of squared errors to *loss_sum (so dividing
 * by the total rows gives PyTorch's MSELoss), and when grad is not NULL
 * stores the gradient of the mean loss, 2 (out - target) / (n t).
 */
void zm_loss_mse(const float *out, const float *targets, size_t n, size_t t,
                 double *loss_sum, float *grad);

#endif
