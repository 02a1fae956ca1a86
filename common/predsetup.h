/*
 * The setup of a prediction run (predict(1)), before any data: the
 * models (model files, named zoo models, or the zoo's experts) and the
 * router, the routing temperature, a granctl decision, the assignment,
 * static weights and the Hedge scores; the schema the inputs are matched
 * to; the merge that fits the models' lineage; the predictor and, for
 * granularity auto, the predictors of the finer levels and their
 * controller.  After the batches it saves the state.
 *
 * The program parses its options into struct zm_predsetup_options and
 * words what the setup says in its notes; nothing here prints or knows
 * the command line's spelling beyond the messages predict(1) has always
 * given.
 */
#ifndef ZM_PREDSETUP_H
#define ZM_PREDSETUP_H

#include <stdbool.h>
#include <stddef.h>

#include "assignment.h"
#include "config.h"
#include "error.h"
#include "granauto.h"
#include "granctl.h"
#include "granularity.h"
#include "lineage.h"
#include "model.h"
#include "predict.h"
#include "profcache.h"
#include "route.h"
#include "schema.h"
#include "weighting.h"

#define ZM_PREDSETUP_MAX_MODELS ZM_WEIGHTER_MAX_MODELS

/* What the run is asked for.  Every string is borrowed and must outlive
 * the struct zm_predsetup opened from it. */
struct zm_predsetup_options {
	const char *zoo_dir;        /* the zoo, or NULL with model files */
	const char *model[ZM_PREDSETUP_MAX_MODELS];  /* zoo model names */
	size_t n_models;            /* 0 with a zoo: its experts */
	const char *model_file[ZM_PREDSETUP_MAX_MODELS];
	size_t n_files;             /* > 0: model files instead of a zoo */
	const char *router;         /* zoo model name, or NULL */
	const char *assignment;     /* file, or NULL */
	const char *weights;        /* static weights file, or NULL */
	const char *state;          /* Hedge scores or auto's costs, or NULL */
	const char *gran_from;      /* granctl decision file, or NULL */
	const char *gran_rules;     /* granularity rules (auto), or NULL */
	size_t batch;               /* rows per forward pass */
	bool gran_auto;             /* the level is chosen per batch */
	/* what was asked for rather than left to the defaults */
	bool merge_set;             /* p.merge */
	bool temperature_set;       /* p.w.temperature */
	bool weighting_set;         /* p.w.kind */
	bool metric_set;            /* p.w.metric */
	bool per_set;               /* p.w.per_row */
	bool level_set;             /* p.w.level (not auto) */
	struct zm_predict_options p;  /* the predictor's, before the setup */
};

/* What the setup decided on its own that the program may say. */
enum zm_predsetup_note_kind {
	/* models a and b are unrelated; the layer merge asked for is kept */
	ZM_PREDSETUP_UNRELATED_KEPT,
	/* models a and b are unrelated; merge became route or ensemble at
	 * the full level (said when the level or the merge was a choice the
	 * user made, or on request) */
	ZM_PREDSETUP_UNRELATED_MIXED,
	/* auto: models a and b are unrelated: the full level only */
	ZM_PREDSETUP_AUTO_FULL_ONLY,
	/* auto: no predictor at level; msg says why */
	ZM_PREDSETUP_AUTO_NO_LEVEL,
	/* auto: the weighting gives every unit the same weights and no
	 * rules could ask for another level: the full level only */
	ZM_PREDSETUP_AUTO_SAME_WEIGHTS,
};

struct zm_predsetup_note {
	enum zm_predsetup_note_kind kind;
	const char *a, *b;             /* model names (borrowed from the setup) */
	enum zm_lineage_basis basis;   /* how a and b were found unrelated */
	enum zm_merge_mode merge;      /* the merge kept or chosen */
	enum zm_gran_level level;      /* AUTO_NO_LEVEL */
	char msg[ZM_ERROR_MAX];        /* AUTO_NO_LEVEL */
};

#define ZM_PREDSETUP_NOTES 4

/*
 * A run's setup.  Everything is owned by it unless said otherwise and
 * freed by zm_predsetup_release.  Pointers lead into the struct itself
 * (names, po, the controller): it must not be copied or moved once
 * opened.
 */
struct zm_predsetup {
	struct zm_model *models[ZM_PREDSETUP_MAX_MODELS];  /* [k] */
	const char *names[ZM_PREDSETUP_MAX_MODELS];  /* borrowed: the models'
	                                              * names, or fallback */
	char fallback[ZM_PREDSETUP_MAX_MODELS][24];  /* "m0", ... */
	const char *model_name;    /* borrowed; the one model's, in outputs */
	struct zm_model *router;   /* or NULL */
	size_t k;
	double route_t[ZM_PREDSETUP_MAX_MODELS];  /* assign --calibrate's, or NAN */
	struct zm_predict_options po;  /* the predictor's, as decided */
	struct zm_assignment asg;
	struct zm_gran_decision dec;
	struct zm_hedge hedge;
	struct zm_node *wroot;     /* static weights document */
	double *stat;              /* static weights [n_layers, k] */
	bool unrelated;            /* models mix only final outputs */
	struct zm_schema schema;   /* what the inputs are matched to */
	char what[128];            /* the schema's owner in messages */
	/* the profiles and densities every weighter of the run shares */
	struct zm_profile_cache pcache;
	struct zm_predictor *pred; /* the full (or only) level */
	/* auto: pred, then the group and layer levels (owned, or NULL) */
	struct zm_predictor *lvl[ZM_GRANAUTO_LEVELS];
	struct zm_granauto_ctl ctl;
	struct zm_gc_rules rules;
	bool auto_on;              /* ctl is set up and drives pred */
	struct zm_predsetup_note notes[ZM_PREDSETUP_NOTES];
	size_t n_notes;
};

/*
 * The defaults that follow from what was asked (the product's defaults,
 * predict(1)): static weighting when a weights file is given without a
 * weighting; with no weighting, weights file or metric asked for, density
 * weighting, lenient (a model without a profile means uniform weights);
 * for the weightings that judge each row (density, router), per-row
 * weights unless asked otherwise, and routing unless a merge or a level
 * was asked for (a granctl decision's level counts, but for auto).
 */
void zm_predsetup_defaults(struct zm_predsetup_options *o);

/* An empty setup, safe to release. */
void zm_predsetup_init(struct zm_predsetup *s);

/*
 * Sets s (zm_predsetup_init'ed) up for o: loads the models and what
 * their weighting reads, decides the temperature and the merge, matches
 * the models' schemas and builds the predictor(s).  o's strings are
 * borrowed.  The notes hold what it decided on its own, also on failure
 * (they came first).  Errors of the loaders, ZM_ERR_USAGE for merge
 * options that do not fit together or more models than fit, ZM_ERR_DATA
 * for models that cannot predict together; release s in any case.
 */
enum zm_status zm_predsetup_open(struct zm_predsetup *s,
                                 const struct zm_predsetup_options *o,
                                 struct zm_error *err);

/* Frees everything s owns; s is then as after zm_predsetup_init. */
void zm_predsetup_release(struct zm_predsetup *s);

/*
 * The temperature of density weighting over k models whose calibrated
 * temperatures are route_t (NAN: none): the largest, the most cautious,
 * when every model has one (*calibrated true); else the default for
 * features input columns, at least 1.
 */
double zm_predsetup_temperature(const double *route_t, size_t k,
                                size_t features, bool *calibrated);

/* The merge of final outputs that replaces a layer merge for unrelated
 * models: route where the weighting judges rows, else ensemble. */
enum zm_merge_mode zm_predsetup_unrelated_merge(enum zm_weighting kind);

/*
 * Brings input document doc (rows described by where) to the models'
 * schema by name, as zm_schema_conform_doc, after zm_data_check; note
 * collects what it did.
 */
enum zm_status zm_predsetup_conform(struct zm_predsetup *s, struct zm_doc *doc,
                                    const char *where,
                                    struct zm_schema_note *note,
                                    struct zm_error *err);

/* The trace's header line; with auto each line also says the batch's
 * level, its time and why that level. */
enum zm_status zm_predsetup_trace_header(const struct zm_predsetup *s,
                                         struct zm_outfile *trace,
                                         struct zm_error *err);

/* What the weighting (and auto) chose and why, appended to b. */
void zm_predsetup_explain(const struct zm_predsetup *s, struct zm_buf *b);

/* After the batches: the Hedge scores of feedback, or auto's cost
 * estimates, into state (NULL: nothing). */
enum zm_status zm_predsetup_save_state(const struct zm_predsetup *s,
                                       const char *state,
                                       struct zm_error *err);

#endif
