/*
 * Trained models into a zoo: the glue of zoo.h and model.h that stores
 * new versions (train-step --apply), the counterpart of zoomodel.h.
 */
#ifndef ZM_ZOOSTORE_H
#define ZM_ZOOSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct zm_model;

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

#endif
