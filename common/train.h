/*
 * Single-model training: optimizers (SGD with momentum, Adam), learning
 * rate schedules, one training step over a batch, evaluation, and helpers
 * to shuffle and gather mini-batches.
 *
 * A step runs the forward pass, the loss and its gradient, the backward
 * pass (dW = dY^T X through zm_gemm) and the update, all in buffers
 * allocated once (the workspace and the optimizer state), so the per-step
 * cost is the GEMMs plus a few vectorized elementwise passes.
 */
#ifndef ZM_TRAIN_H
#define ZM_TRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "model.h"

enum zm_optim_kind {
	ZM_OPTIM_SGD,
	ZM_OPTIM_ADAM
};

enum zm_lr_schedule {
	ZM_LR_CONSTANT,
	ZM_LR_STEP,      /* lr * gamma^floor(t / step_size) */
	ZM_LR_COSINE     /* min_lr + (lr - min_lr)(1 + cos(pi min(t,T) / T)) / 2 */
};

/*
 * Optimizer settings.  Weight decay follows PyTorch: for SGD it is an L2
 * term added to the gradient before momentum (torch.optim.SGD); for Adam it
 * is decoupled, w -= lr * wd * w (torch.optim.AdamW).  It applies to every
 * parameter, biases included.
 */
struct zm_optim_config {
	enum zm_optim_kind kind;
	double lr;                /* base learning rate */
	double momentum;          /* SGD; 0 gives plain SGD */
	double beta1, beta2, eps; /* Adam */
	double weight_decay;
	enum zm_lr_schedule schedule;
	uint64_t step_size;       /* ZM_LR_STEP: steps between decays */
	double gamma;             /* ZM_LR_STEP: decay factor */
	uint64_t total_steps;     /* ZM_LR_COSINE: T */
	double min_lr;            /* ZM_LR_COSINE: floor */
};

/* Defaults: SGD lr 0.01 momentum 0.9; Adam lr 0.001, betas 0.9 and 0.999,
 * eps 1e-8; no weight decay; constant schedule (gamma 0.1 when step). */
void zm_optim_config_default(struct zm_optim_config *cfg,
                             enum zm_optim_kind kind);

/* "sgd" | "adam"; "constant" | "step" | "cosine".  false when unknown. */
bool zm_optim_kind_parse(const char *s, enum zm_optim_kind *out);
bool zm_lr_schedule_parse(const char *s, enum zm_lr_schedule *out);
const char *zm_optim_kind_name(enum zm_optim_kind kind);
const char *zm_lr_schedule_name(enum zm_lr_schedule s);

/*
 * Optimizer state for one architecture: the step count and, per parameter
 * layer, the momentum buffer (SGD) or first and second moments (Adam), all
 * zero at the start.  Arrays have arch->n_layers entries, NULL for layers
 * without parameters.
 */
struct zm_optim {
	struct zm_optim_config cfg;
	uint64_t steps;           /* updates applied so far */
	size_t n_layers;
	float **m_w, **m_b;       /* momentum / first moment */
	float **v_w, **v_b;       /* Adam second moment (NULL for SGD) */
};

/* Allocates zeroed state for arch (copied config); *out is freed with
 * zm_optim_free.  ZM_ERR_USAGE for a config out of range (lr <= 0, betas
 * outside [0, 1), ...). */
enum zm_status zm_optim_new(const struct zm_arch *arch,
                            const struct zm_optim_config *cfg,
                            struct zm_optim **out, struct zm_error *err);
void zm_optim_free(struct zm_optim *opt);

/* The learning rate the next update will use (the schedule at opt->steps). */
double zm_optim_lr(const struct zm_optim *opt);

/*
 * Applies one update from the gradients in ws (after zm_model_backward)
 * to model's parameters and advances opt->steps.  step_scale multiplies the
 * step (it acts as a factor on the learning rate for this update), which is
 * how a model assigned to a slice with weight w takes a w-weighted step;
 * the optimizer state is updated from the unscaled gradients.
 */
void zm_optim_apply(struct zm_optim *opt, struct zm_model *model,
                    const struct zm_workspace *ws, float step_scale);

/* Running sums over batches; zero-initialise, then divide at the end:
 * mean loss = loss_sum / rows, accuracy = correct / rows. */
struct zm_batch_stats {
	double loss_sum;
	size_t correct;            /* cross-entropy only */
	size_t rows;
};

/*
 * One training step on a batch: x is n x input_features (n <= the
 * workspace's max_batch, ws a training workspace for model's arch); y is
 * const int64_t[n] class ids for cross-entropy, or const float[n * outputs]
 * targets for mse.  Adds the batch's loss (before the update) and correct
 * count to stats (may be NULL), then updates the model (see
 * zm_optim_apply).  A label out of range or a non-finite loss returns
 * ZM_ERR_DATA and leaves the model unchanged.  With SGD the backward pass
 * and the update are fused (the weight gradients go straight into the
 * momentum buffers), so ws->dw is not filled; ws->db is.
 */
enum zm_status zm_train_step(struct zm_model *model, struct zm_optim *opt,
                             struct zm_workspace *ws, const float *x,
                             const void *y, size_t n, float step_scale,
                             struct zm_batch_stats *stats,
                             struct zm_error *err);

/* Forward pass and loss only (ws may be an inference workspace); adds to
 * stats as zm_train_step does. */
enum zm_status zm_model_evaluate(const struct zm_model *model,
                                 struct zm_workspace *ws, const float *x,
                                 const void *y, size_t n,
                                 struct zm_batch_stats *stats,
                                 struct zm_error *err);

/* dst row i = src row idx[i] for n rows of cols floats (mini-batches from a
 * shuffled index; see zm_rng_permutation in random.h). */
void zm_gather_rows(const float *src, size_t cols, const size_t *idx,
                    size_t n, float *dst);
/* The same for one int64 per row (labels). */
void zm_gather_labels(const int64_t *src, const size_t *idx, size_t n,
                      int64_t *dst);

#endif
