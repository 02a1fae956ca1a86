/*
 * The metadata keys of zoomerge documents (man/zoomerge.5), named once so
 * that a writer and its readers cannot drift apart by a typo.  (lineage.h
 * still names zm.origin and zm.base ZM_LINEAGE_ORIGIN_KEY and
 * ZM_LINEAGE_BASE_KEY; the prefix of merged levels, zm.levels., is
 * dataset.h's ZM_DATA_LEVELS_PREFIX.)
 */
#ifndef ZM_METAKEYS_H
#define ZM_METAKEYS_H

/* Every document */
#define ZM_META_KIND "zm.kind"        /* data, model, update, ... */

/* Models and updates */
#define ZM_META_NAME "zm.name"        /* the zoo model's name */
#define ZM_META_ARCH "zm.arch"        /* JSON architecture */
#define ZM_META_VERSION "zm.version"  /* the zoo version */
#define ZM_META_PARENT "zm.parent"    /* the version it was made from */
#define ZM_META_TAGS "zm.tags"
#define ZM_META_METRICS "zm.metrics"  /* JSON object */
#define ZM_META_HPARAMS "zm.hparams"  /* JSON object */
#define ZM_META_MODEL "zm.model"      /* which model wrote an output */
#define ZM_META_ORIGIN "zm.origin"    /* lineage: the digest of the start */
#define ZM_META_BASE "zm.base"        /* lineage: NAME@vN fine-tuned from */

/* Updates */
#define ZM_META_ID "zm.id"            /* the update's identity */
#define ZM_META_WEIGHT "zm.weight"    /* its weight in a merge */
#define ZM_META_SAMPLES "zm.samples"  /* rows trained on */

/* Class and column names, roles (their rules: schema.h) */
#define ZM_META_CLASSES "zm.classes"    /* JSON list: class names by id */
#define ZM_META_FEATURES "zm.features"  /* model: JSON list of input names */
#define ZM_META_COLUMNS "zm.columns"    /* data: JSON list of x's columns */
#define ZM_META_LABEL "zm.label"        /* data: the label column's name */
#define ZM_META_ROLE "zm.role"          /* model: expert, router or base */

/* Data, slices, profiles */
#define ZM_META_SLICE "zm.slice"      /* the slice a data stream is */
#define ZM_META_SCALE "zm.scale"      /* multiplies x */
#define ZM_META_PROFILE "zm.profile"  /* marks a profile document */
#define ZM_META_SEED "zm.seed"        /* k-means seed of centroids */

#endif
