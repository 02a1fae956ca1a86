/*
 * Models into a zoo: the glue of zoo.h, model.h and lineage.h that stores
 * new versions -- created, imported (zoo-add) or trained (train-step
 * --apply) -- the counterpart of zoomodel.h.
 */
#ifndef ZM_ZOOSTORE_H
#define ZM_ZOOSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "layer.h"

struct zm_kv_list;
struct zm_model;
struct zm_zoo;

/* What zm_zoo_add_model adds. */
struct zm_zoo_add {
	const char *name;             /* the model's name */
	const char *arch_path;        /* architecture YAML, or NULL */
	const char *model_path;       /* a model file (zm_state_dict_load, with
	                               * arch_path when given); NULL: a new
	                               * model of arch_path, seeded by seed */
	const char *base;             /* the zoo model model_path was
	                               * fine-tuned from; NULL: unknown */
	const char *align_to;         /* the zoo model whose hidden units
	                               * model_path's are realigned to
	                               * (align.h), or NULL */
	const char *role;             /* NULL: the tags' role, else the
	                               * file's, else the earlier version's */
	uint64_t seed;
	const struct zm_kv_list *tags;    /* set on the index entry */
	const struct zm_kv_list *hparams; /* merged into zm.hparams */
};

/* What zm_zoo_add_model found worth saying about a --base claim. */
struct zm_zoo_add_notes {
	bool base_failed;             /* the error is about looking up base */
	bool needs_arch;              /* the error: model_path needs arch_path */
	bool base_unknown;            /* base's own lineage is unknown */
	bool base_unrelated;          /* the weights do not align with base's */
	double alignment;             /* when base_unrelated: the lowest
	                               * alignment and its layer */
	char worst_layer[ZM_LAYER_NAME_MAX + 1];
	/* align_to: "NAME@vN", the units moved, the lowest hidden-layer
	 * alignment before and after, and the verdict after. */
	char aligned_to[ZM_LAYER_NAME_MAX + 32];
	size_t align_moved;
	double align_before, align_after;
	bool align_related;
};

/*
 * Adds o->name to zoo (open for writing) as its next version, uncommitted:
 * a new model of o->arch_path (refused with ZM_ERR_USAGE when the name
 * exists already; its origin is the digest of its initial weights and its
 * hparams record the seed), or the model file o->model_path (its origin
 * unknown, or base's, which is recorded in zm.base as NAME@vN even when
 * the weights contradict it).  zm.hparams is the model's own merged with
 * o->hparams, zm.role as described for o->role (ZM_ERR_USAGE when not
 * expert, router or base); with o->align_to, the file's hidden units are
 * first realigned to that zoo model's (zm_align_model, recording
 * "NAME@vN" in zm.aligned; errors of it, prefixed "--align-to: "); the
 * index entry gets the parameter count,
 * o->tags and the role tag.  *version is the version written; *notes says
 * what the caller should report.
 */
enum zm_status zm_zoo_add_model(struct zm_zoo *zoo, const struct zm_zoo_add *o,
                                int64_t *version,
                                struct zm_zoo_add_notes *notes,
                                struct zm_error *err);

/* A trained model to store as the next version of name. */
struct zm_zoo_store_item {
	const char *name;             /* borrowed */
	const struct zm_model *model; /* borrowed */
	int64_t base_version;         /* the version training started from */
	int64_t version;              /* out: the version stored */
};

/*
 * Stores every item's model in the zoo at dir as its next version, with
 * its parameter count, metrics (zm.metrics) and role tag (zm.role), all in
 * one change of the zoo -- or none: when a model moved on from
 * base_version while it trained, nothing is stored, *moved is its index
 * and the status ZM_ERR_CONFLICT (otherwise *moved is n).
 */
enum zm_status zm_zoo_store_trained(const char *dir,
                                    struct zm_zoo_store_item *items,
                                    size_t n, size_t *moved,
                                    struct zm_error *err);

/*
 * zoo-add --profile: recomputes the profile of name's current version
 * from the rows of the data stream at data (the rows it was trained on),
 * as train-step --apply computes it after training (zm_trainset_profile:
 * every row, none held out, classes and columns matched to the model's
 * by name), replaces the stored one and stores the model as its next
 * version, uncommitted.  max_memory caps the data  Errors
 * name the data or the model.
 */
enum zm_status zm_zoo_profile_model(struct zm_zoo *zoo, const char *name,
                                    const char *data, uint64_t max_memory,
                                    int64_t *version, struct zm_error *err);

#endif
