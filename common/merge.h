/*
 * Merging: weight-space merges of several models into one (linear, task
 * arithmetic, TIES, DARE, SLERP), streamed tensor by tensor, and the
 * application of train-step update streams to a zoo under a granularity
 * decision (FedAvg with partial sharing, as in FedPer and LG-FedAvg).
 *
 * Maths, for task vectors tau_i = theta_i - base and weights w_i of one
 * unit (see zoomerge-merge(5)):
 *   linear           sum_i w_i theta_i / sum_i w_i
 *   task-arithmetic  base + lambda sum_i w_i tau_i
 *   ties             trim each tau_i to its top density fraction by
 *                    magnitude, elect the sign of sum_i w_i tau_i per entry,
 *                    then base + lambda (sum over agreeing i of w_i tau_i) /
 *                    (sum over agreeing i of w_i)
 *   dare             drop each entry of tau_i with probability p, scale the
 *                    rest by 1/(1-p); then task arithmetic, or the TIES sign
 *                    election and disjoint mean (params.dare_ties)
 *   slerp            two models, t = w_2 / (w_1 + w_2), per tensor:
 *                    sin((1-t) W)/sin W a + sin(t W)/sin W b, with W the
 *                    angle between a and b; linear when they are nearly
 *                    colinear.
 * TIES keeps its four per-entry sums (positive and negative mass, and the
 * weight behind each) instead of every task vector, so one pass over the
 * inputs suffices and memory does not grow with the number of models.
 */
#ifndef ZM_MERGE_H
#define ZM_MERGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "error.h"
#include "granularity.h"
#include "model.h"
#include "random.h"
#include "stream.h"
#include "zoo.h"

enum zm_merge_method {
	ZM_MERGE_LINEAR,
	ZM_MERGE_TASK_ARITHMETIC,
	ZM_MERGE_TIES,
	ZM_MERGE_DARE,
	ZM_MERGE_SLERP,
	/* Plain checkpoints only (mergekit configs; merge(1)): */
	ZM_MERGE_MODEL_STOCK,    /* base + t (mean of models - base) */
	ZM_MERGE_NUSLERP         /* slerp of two models or task vectors */
};

/* "linear", "task-arithmetic", "ties", "dare", "slerp". */
const char *zm_merge_method_name(enum zm_merge_method m);
bool zm_merge_method_parse(const char *s, enum zm_merge_method *out);
/* True for the methods that work on task vectors (need a base). */
bool zm_merge_method_needs_base(enum zm_merge_method m);

struct zm_merge_params {
	double density;      /* ties: fraction kept, (0, 1]; default 0.2 */
	double lambda;       /* scale of the merged task vector; default 1 */
	double drop;         /* dare: drop probability, [0, 1); default 0.9 */
	bool dare_ties;      /* dare: TIES sign election after dropping */
	uint64_t seed;       /* dare: seed of the drops; default 0 */
	/* mergekit's conventions (merge(1)): TIES keeps floor(density n)
	 * entries (none when that is 0), the sign election counts a zero
	 * sum as positive, and SLERP treats a zero tensor as orthogonal. */
	bool mergekit;
	/* ties, dare_ties: the sum of the agreeing task vectors instead of
	 * their weighted mean (mergekit's normalize: false). */
	bool disjoint_sum;
	/* ties: no sign election, every kept entry summed (mergekit's
	 * breadcrumbs without _ties). */
	bool no_election;
	/* ties, zm_merge_plain only: each model also drops its top gamma
	 * fraction by magnitude (from tensor_params; mergekit's
	 * breadcrumbs). */
	bool breadcrumbs;
	/* model_stock, nuslerp: the vectors whose angles are measured
	 * (ZM_MERGE_VEC_*): the whole tensor, each run of its last
	 * dimension (a row), or each slice along its first (a column). */
	int vectors;
};

enum { ZM_MERGE_VEC_TENSOR, ZM_MERGE_VEC_ROWS, ZM_MERGE_VEC_COLS };

void zm_merge_params_init(struct zm_merge_params *p);

/* ---- kernels (public for tests) ---- */

/*
 * Zeroes every entry of tau[0..n) whose magnitude is below the k-th
 * largest, k = round(density n) (at least 1); ties at the threshold are
 * kept.  scratch holds n floats.  Returns the number of entries kept.
 */
size_t zm_merge_ties_trim(float *tau, size_t n, double density,
                          float *scratch);

/* Drops each entry of tau with probability p (drawn from rng in order)
 * and multiplies the others by 1 / (1 - p). */
void zm_merge_dare_drop(float *tau, size_t n, double p, struct zm_rng *rng);

/* out = slerp(a, b, t) as above; out may alias neither input.  Returns
 * true when it fell back to linear interpolation. */
bool zm_merge_slerp(const float *a, const float *b, size_t n, double t,
                    float *out);

/* SLERP's coefficients of a and b (out = ca a + cb b) from their dot
 * product and squared norms: 1 - t and t (returning true) when they are
 * nearly colinear, or a norm is zero and not zero_orthogonal. */
bool zm_merge_slerp_coef(double t, double dot, double na, double nb,
                         bool zero_orthogonal, double *ca, double *cb);

/* The merged task-vector entry from TIES' sums (positive and negative
 * mass, the weight behind each): the elected sign's mean, or sum with
 * p->disjoint_sum; 0 when no entry has the elected sign; pos + neg with
 * p->no_election. */
float zm_merge_ties_elect(const struct zm_merge_params *p, float pos,
                          float neg, float wpos, float wneg);

/* nuslerp's coefficients of v0 and v1 (mergekit's): t = w1 / (w0 + w1)
 * (0.5 when |w0 + w1| < 1e-6), the angle W between v0 and v1 from their
 * dot product and squared norms (each norm at least 1e-7), then
 * sin((1-t) W) / sin W and sin(t W) / sin W, or 1 - t and t when
 * |sin W| < 1e-8. */
void zm_merge_nuslerp_coef(double w0, double w1, double dot, double n0sq,
                           double n1sq, double *c0, double *c1);

/* model_stock's interpolation ratio t = N c / (1 + (N - 1) c) for n >= 2
 * task vectors, c the mean over pairs i < j of their cosine
 * dot_ij / max(|i| |j|, 1e-6) clamped to [-1, 1]; sums holds the n
 * squared norms, then the dot products of the pairs in order (0,1),
 * (0,2), ..., (1,2), ... */
double zm_merge_model_stock_t(size_t n, const double *sums);

/* Adds w tau[i] to TIES' sums (sum[0..3]: positive mass, negative mass,
 * and the weight behind each) for every entry with lo <= |tau[i]| < hi
 * (hi infinite: no upper bound), tau = x - base, or x when base is NULL. */
void zm_merge_ties_add_cut(const float *x, const float *base, size_t n,
                           float lo, float hi, float w, float *const sum[4]);

/* out[i] = base[i] + lambda zm_merge_ties_elect(sums at i), i < n. */
void zm_merge_ties_finish(const struct zm_merge_params *p,
                          const float *const sum[4], const float *base,
                          size_t n, float *out);

/*
 * Accumulates the inputs of one tensor, one model at a time, so that a
 * streamed merge holds a handful of tensors whatever the number of models.
 */
struct zm_merge_acc {
	enum zm_merge_method method;
	struct zm_merge_params params;
	struct zm_rng rng;       /* dare drops, advanced across tensors */
	size_t cap, n;           /* capacity and current tensor size */
	size_t added;
	double wsum, w_first;
	float *sum[4];           /* owned accumulators (method-dependent) */
	float *scratch;          /* owned, ties trimming */
};

/* Allocates buffers for tensors of up to cap elements; release with
 * zm_merge_acc_release. */
enum zm_status zm_merge_acc_init(struct zm_merge_acc *acc,
                                 enum zm_merge_method method,
                                 const struct zm_merge_params *params,
                                 size_t cap, struct zm_error *err);
void zm_merge_acc_release(struct zm_merge_acc *acc);

/* Starts a tensor of n <= cap elements. */
void zm_merge_acc_begin(struct zm_merge_acc *acc, size_t n);

/* Adds one model's tensor x with weight w; x is clobbered (it becomes the
 * task vector).  base is the base model's tensor for the task-vector
 * methods, else ignored (may be NULL). */
void zm_merge_acc_add(struct zm_merge_acc *acc, float *x, const float *base,
                      double w);

/* Writes the merged tensor to out (n floats).  ZM_ERR_DATA when the
 * weights of a linear or slerp merge sum to zero, or slerp did not get
 * exactly two models. */
enum zm_status zm_merge_acc_finish(struct zm_merge_acc *acc,
                                   const float *base, float *out,
                                   struct zm_error *err);

/* ---- weights ---- */

/*
 * Per-layer weights of one model from a weight node of the merge config
 * (a number, a list interpolated across the units that have parameters,
 * first to last, or a map from unit name to number; at the layer level a
 * layer missing from the map takes its group's entry).  spec NULL means
 * the number dflt.  w receives arch->n_layers values.  Errors are
 * ZM_ERR_CONFIG with the node's line and column.
 */
enum zm_status zm_merge_layer_weights(const struct zm_node *spec,
                                      double dflt,
                                      const struct zm_arch *arch,
                                      enum zm_gran_level level, double *w,
                                      struct zm_error *err);

/* The merge config (DESIGN.md section 8, zoomerge-merge(5)). */
struct zm_merge_model_spec {
	const char *model;            /* points into root */
	const struct zm_node *weight; /* NULL when absent */
};

struct zm_merge_config {
	struct zm_node *root;         /* owned tree */
	bool has_method;
	enum zm_merge_method method;
	const char *base;             /* NULL when absent; points into root */
	struct zm_merge_params params;
	bool has_density, has_lambda, has_drop, has_seed, has_dare_ties;
	struct zm_merge_model_spec *models;   /* owned array */
	size_t n_models;
};

void zm_merge_config_init(struct zm_merge_config *c);
void zm_merge_config_release(struct zm_merge_config *c);

/* Parses a config from YAML bytes (source names it in messages) into c
 * (released first; it takes the tree).  Errors carry line and column. */
enum zm_status zm_merge_config_parse(const char *bytes, size_t len,
                                     const char *source,
                                     struct zm_merge_config *c,
                                     struct zm_error *err);
enum zm_status zm_merge_config_load(const char *path,
                                    struct zm_merge_config *c,
                                    struct zm_error *err);

/*
 * The n models of a static merge: labels[i] is args[i] when args is not
 * NULL, else c's i-th model; specs[i] is c's weight spec of the model
 * labelled so (NULL when c names no models or gives it no weight) and
 * weights[i] is 1.  The arrays are the caller's, n long; labels and specs
 * point into args and c.  When c names models, a label it does not name is
 * ZM_ERR_CONFIG, its message prefixed "SOURCE: ".
 */
enum zm_status zm_merge_config_models(const struct zm_merge_config *c,
                                      const char *source,
                                      const char *const *args, size_t n,
                                      const char **labels,
                                      const struct zm_node **specs,
                                      double *weights, struct zm_error *err);

/* ---- static merges ---- */

struct zm_merge_static_opts {
	enum zm_merge_method method;
	struct zm_merge_params params;
	enum zm_gran_level level;
	size_t n_models;
	const char *const *paths;     /* model files, n_models */
	const char *const *labels;    /* names for messages and hparams */
	const struct zm_node *const *weight_specs; /* per model, may be NULL */
	const double *weights;        /* per model, NULL: 1 each */
	const char *base_path;        /* task-vector methods */
	const char *base_label;
	const char *out;              /* output file ("-": stdout) */
	const char *name;             /* zm.name of the result, or NULL */
	const char *origin;           /* zm.origin of the result (the one
	                                 the inputs share), or NULL */
	int compress;                 /* 0-9, ZM_COMPRESS_AUTO or _NONE */
	/* Plain checkpoints: a tensor some models lack is copied from the
	 * base (else the first model) instead of refused. */
	bool copy_missing;
	size_t chunk;                 /* plain: elements per chunk, 0: 1 Mi */
	/* Plain: when not 0, out is a directory that receives shards of at
	 * most this many bytes of data and model.safetensors.index.json. */
	uint64_t shard_size;
	/* Plain: when set, called for each float tensor before it is
	 * merged, with the reference's header; fills w (n_models weights),
	 * density (n_models: TIES' kept fraction, DARE's keep probability)
	 * and gamma (n_models: the top fraction breadcrumbs drops) for that
	 * tensor. */
	enum zm_status (*tensor_params)(void *ctx, const struct zm_doc *ref,
	                                const char *tensor, double *w,
	                                double *density, double *gamma,
	                                struct zm_error *err);
	void *tensor_ctx;
	/* Plain: float tensors written in out_dtype (F32, F16 or BF16)
	 * instead of the reference's dtype. */
	bool set_dtype;
	enum zm_dtype out_dtype;
};

/*
 * Merges the models into one model document written to o->out, streaming:
 * every input's header is read first (architectures and tensor shapes are
 * compared, naming the first differing tensor), the output header is
 * written, then each parameter tensor is read from all inputs in turn and
 * merged, so memory holds a few tensors (more only when an input stores
 * its tensors in a different order).  The result carries the Chan merge
 * of the models' profiles, zm.arch and zm.hparams describing the merge.
 * On failure nothing appears at o->out.
 */
enum zm_status zm_merge_static(const struct zm_merge_static_opts *o,
                               struct zm_error *err);

/*
 * A Hugging Face shard index (model.safetensors.index.json): the shard
 * files of a checkpoint and which tensor each holds, from "weight_map"
 * ("metadata" and other keys are ignored).  Shard names must be plain
 * file names (no '/', not "." or ".."), as they are opened next to the
 * index.
 */
struct zm_shard_index {
	struct zm_node *root;         /* owned tree */
	const struct zm_node *map;    /* the weight_map node, in root */
	const char **files;           /* owned array of names into root, in
	                               * order of first appearance */
	size_t n_files;
};

void zm_shard_index_init(struct zm_shard_index *ix);
void zm_shard_index_release(struct zm_shard_index *ix);
/* Parses index bytes (source names them in messages) into ix (released
 * first).  Errors are ZM_ERR_CONFIG with line and column. */
enum zm_status zm_shard_index_parse(const char *bytes, size_t len,
                                    const char *source,
                                    struct zm_shard_index *ix,
                                    struct zm_error *err);
/* The shard file of tensor name, or NULL when the index lacks it. */
const char *zm_shard_index_file(const struct zm_shard_index *ix,
                                const char *name);

/*
 * The same for plain safetensors checkpoints (no zm.arch, such as Hugging
 * Face models): tensors are matched by name against the reference (the
 * base for the task-vector methods, else the first model), with their
 * shapes; a tensor of a model that the reference lacks is an error, one
 * the reference has and a model lacks too unless o->copy_missing (then
 * it is copied from the reference).  Float tensors (F32, F16, BF16, F64)
 * are merged in F32 and written in the reference's dtype, rounded to
 * nearest even; other tensors are copied from the reference, and so is
 * the metadata outside zm.*.  Non-finite inputs or results, and F16
 * overflow, are ZM_ERR_DATA naming the tensor and element.  Linear and
 * task arithmetic stream each tensor in chunks of o->chunk elements;
 * TIES, breadcrumbs, SLERP, model_stock and nuslerp read each tensor
 * twice in chunks (thresholds or dot products first).  Per-model weights must
 * be numbers (ZM_ERR_CONFIG for lists and maps).  On failure nothing
 * appears at o->out.  zm_merge_static calls it when the first model is a
 * plain checkpoint.  A model path may also be a shard index
 * (*.index.json) or a directory holding model.safetensors.index.json or
 * model.safetensors; the shards' tensors must be exactly those the index
 * assigns to them.
 */
enum zm_status zm_merge_plain(const struct zm_merge_static_opts *o,
                              struct zm_error *err);

/* *plain becomes true when path holds a safetensors document without
 * zm.arch, or is a directory or a *.index.json (false for "-", which
 * cannot be read twice).  Errors are the reader's. */
enum zm_status zm_merge_probe_plain(const char *path, bool *plain,
                                    struct zm_error *err);

/* Converts n F32 values to dtype (F32, F64, F16 or BF16; the half types
 * round to nearest even, NaN stays NaN, overflow gives infinity) into dst,
 * n * zm_dtype_size(dtype) bytes, any alignment. */
void zm_merge_f32_to_dtype(const float *src, size_t n, enum zm_dtype dtype,
                           void *dst);

/* ---- applying updates ---- */

struct zm_apply_opts {
	/* The decision; NULL means level with share ("all" when NULL). */
	const struct zm_gran_decision *decision;
	enum zm_gran_level level;
	const char *share;
	bool rebase;        /* apply updates whose base is no longer current */
	bool allow_unrelated; /* share units between models that are not
	                         related (lineage.h); else ZM_ERR_USAGE */
};

struct zm_apply_model {
	char *name;                /* owned */
	int64_t old_version, new_version;
	size_t n_updates;
	double samples;
};

struct zm_apply_result {
	struct zm_apply_model *models;   /* owned */
	size_t n_models;
};

void zm_apply_result_release(struct zm_apply_result *r);

/*
 * Applies update documents (zm.kind=update; tensors: parameter deltas and
 * the profile of the data trained on; metadata zm.name, zm.parent,
 * zm.samples, zm.weight, zm.slice, zm.metrics) to zoo, which must be open
 * for writing.  Per model the deltas of its updates are averaged with
 * weights w x samples; models connected by common slices form a group, and
 * on each shared unit of the decision every model of a group gets the
 * group's weighted average delta, on independent units its own.  Profiles
 * are merged with the updates' profiles and metrics combined.  Every
 * affected model gets its next version and the index moves in one commit:
 * on any failure (a stale base without rebase is ZM_ERR_CONFLICT) the zoo
 * is left as it was.  res (released first) lists what happened.
 */
enum zm_status zm_merge_apply_updates(struct zm_zoo *zoo,
                                      const struct zm_doc *updates,
                                      size_t n_updates,
                                      const struct zm_apply_opts *o,
                                      struct zm_apply_result *res,
                                      struct zm_error *err);

#endif
