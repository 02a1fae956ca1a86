/*
 * mergekit's merge configs (merge(1) "mergekit configs"): the YAML that
 * mergekit-yaml reads, for the methods zoomerge has, turned into a static
 * merge of plain checkpoints (model_stock and nuslerp among them).
 * Parameters (weight, density, t, ...) may be
 * numbers, gradients (lists interpolated over the layer index) or lists of
 * {filter, value} entries matched against tensor names; a model's own
 * parameters win over the global ones.
 */
#ifndef ZM_MERGEKIT_H
#define ZM_MERGEKIT_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "error.h"
#include "merge.h"
#include "tensor.h"

enum zm_mergekit_method {
	ZM_MK_LINEAR,
	ZM_MK_TASK_ARITHMETIC,
	ZM_MK_TIES,
	ZM_MK_DARE_TIES,
	ZM_MK_DARE_LINEAR,
	ZM_MK_SLERP,
	ZM_MK_BREADCRUMBS,
	ZM_MK_BREADCRUMBS_TIES,
	ZM_MK_MODEL_STOCK,
	ZM_MK_NUSLERP
};

struct zm_mergekit_model {
	const char *model;               /* points into root */
	const struct zm_node *params;    /* its parameters map, or NULL */
};

#define ZM_MERGEKIT_WARNINGS 8

struct zm_mergekit {
	struct zm_node *root;            /* owned tree */
	enum zm_mergekit_method method;
	const char *method_name;         /* as written, into root */
	const char *base;                /* NULL when absent; into root */
	struct zm_mergekit_model *models; /* owned array, in order */
	size_t n_models;
	const struct zm_node *params;    /* global parameters, or NULL */
	bool normalize;                  /* the method's default when absent */
	double lambda;
	bool set_dtype;                  /* out_dtype, else dtype, was given */
	enum zm_dtype dtype;
	size_t n_layers;                 /* slices' layer_range end, 0: none */
	/* model_stock's filter_wise, nuslerp's nuslerp_flatten and
	 * nuslerp_row_wise: ZM_MERGE_VEC_* of merge.h. */
	int vectors;
	bool flatten, row_wise;
	/* Keys accepted and ignored, each a sentence for the caller to
	 * print. */
	char warnings[ZM_MERGEKIT_WARNINGS][160];
	size_t n_warnings;
};

void zm_mergekit_init(struct zm_mergekit *mk);
void zm_mergekit_release(struct zm_mergekit *mk);

/* Parses mergekit YAML bytes (source names them in messages) into mk
 * (released first).  Unknown keys, methods and parameters, and values out
 * of range, are ZM_ERR_CONFIG with line and column. */
enum zm_status zm_mergekit_parse(const char *bytes, size_t len,
                                 const char *source, struct zm_mergekit *mk,
                                 struct zm_error *err);
enum zm_status zm_mergekit_load(const char *path, struct zm_mergekit *mk,
                                struct zm_error *err);

/* True for the methods that merge task vectors against base_model. */
bool zm_mergekit_needs_base(const struct zm_mergekit *mk);

/*
 * Parameter key of model m (an index into mk->models) for tensor name of
 * a checkpoint of n_layers layers: the model's own value, else the global
 * one, else dflt.  A gradient is evaluated at the tensor's position
 * (layer i of n at i / (n - 1); embeddings before the layers at 0, other
 * tensors outside them at 1); a filter list takes its first entry whose
 * filter is a substring of name, else its entry without filter.  A filter
 * list that matches nothing is ZM_ERR_CONFIG.
 */
enum zm_status zm_mergekit_value(const struct zm_mergekit *mk, size_t m,
                                 const char *key, const char *name,
                                 size_t n_layers, double dflt, double *out,
                                 struct zm_error *err);

/* The layer index in a tensor name ("...layers.N." or "...h.N."), or -1. */
long zm_mergekit_layer_index(const char *name);

/*
 * How mk runs as zm_merge_plain: the method and parameters (seed left to
 * the caller), the models in merge order (labels, names into mk's tree:
 * for slerp base_model first; for the task-vector methods without
 * base_model, which is base), and zm_mergekit_tensor_params as the
 * per-tensor callback with the plan as its context.  mk must outlive p.
 */
struct zm_mergekit_plan {
	const struct zm_mergekit *mk;
	enum zm_merge_method method;
	struct zm_merge_params params;
	const char **labels;          /* owned array of n */
	size_t *index;                /* owned: each label's mk->models index */
	size_t n;
	const char *base;             /* NULL for linear and slerp */
	size_t n_layers;              /* found on the first tensor */
};

enum zm_status zm_mergekit_plan_init(struct zm_mergekit_plan *p,
                                     const struct zm_mergekit *mk,
                                     struct zm_error *err);
void zm_mergekit_plan_release(struct zm_mergekit_plan *p);
/* zm_merge_static_opts.tensor_params for a plan (ctx). */
enum zm_status zm_mergekit_tensor_params(void *ctx, const struct zm_doc *ref,
                                         const char *tensor, double *w,
                                         double *density, double *gamma,
                                         struct zm_error *err);

#endif
