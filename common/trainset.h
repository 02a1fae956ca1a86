/*
 * Training sets and the training loop.  A training set is a data stream
 * held in memory in its stored precision (U8 images stay one byte a
 * value: Fashion-MNIST's 60,000 images take 47 MB), split into a training
 * part and a held-out part by a seeded hash of each row's id, so the same
 * rows are held out in every epoch, every run and every process that sees
 * the same data.  zm_fit runs epochs of shuffled mini-batches over it.
 */
#ifndef ZM_TRAINSET_H
#define ZM_TRAINSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "model.h"
#include "profile.h"
#include "schema.h"
#include "train.h"

/* A string column of the data (dataset.h), kept for one_hot layers. */
struct zm_trainset_strings {
	char *name;                 /* owned */
	struct zm_names levels;     /* the documents' levels, merged by name */
	int64_t *codes;             /* owned, cap entries: index in levels */
};

struct zm_trainset {
	size_t rows;                /* rows loaded */
	size_t features;            /* values per row of x */
	bool x_u8;                  /* x stored as U8 (times scale), else F32 */
	float scale;                /* U8 scale (zm.scale), 1 for F32 */
	void *x;                    /* owned, rows x features */
	int64_t *labels;            /* owned, class ids, or NULL */
	float *targets;             /* owned, rows x n_targets, or NULL */
	size_t n_targets;
	int64_t *ids;               /* owned, row ids */
	size_t *train_idx, n_train; /* owned, rows used for training */
	size_t *val_idx, n_val;     /* owned, held-out rows */
	size_t cap;                 /* allocated rows */
	uint64_t max_bytes;         /* refuse data beyond this */
	bool over_limit;            /* a load failed on max_bytes */
	char *slice;                /* owned zm.slice of the data, or NULL */
	char *label;                /* owned zm.label of the data, or NULL */
	/* The data's class names (labels are ids into them; unknown: the
	 * labels are their own names) and column names, as the documents
	 * named them: each document's labels and columns are matched to the
	 * first's by name, new classes appended. */
	struct zm_schema schema;
	/* The first document's string columns (later documents must have
	 * them too), and the names of the one_hot units that
	 * zm_trainset_conform appended to x from them. */
	struct zm_trainset_strings *strings;
	size_t n_strings;
	bool strings_seen;
	struct zm_names units;
};

/* Initialises ts empty; max_bytes caps the memory the data may take. */
void zm_trainset_init(struct zm_trainset *ts, uint64_t max_bytes);
void zm_trainset_release(struct zm_trainset *ts);

/*
 * Reads every document of the data stream at path ("-": stdin) into ts.
 * Documents must agree on the width of x and the kind of y.  Rows without
 * an id tensor get their position in the stream.  Errors name the file
 * and document: ZM_ERR_DATA for NaN/Inf in x or targets, width changes,
 * missing labels; ZM_ERR_NOMEM when the data passes max_bytes.
 */
enum zm_status zm_trainset_load(struct zm_trainset *ts, const char *path,
                                struct zm_error *err);

/*
 * Splits the rows: a row is held out when a hash of (its id, seed) falls
 * below val_fraction (0 holds out nothing).  Replaces an earlier split.
 */
enum zm_status zm_trainset_split(struct zm_trainset *ts, double val_fraction,
                                 uint64_t seed, struct zm_error *err);

/*
 * Copies rows idx[0..n) into x (n x features F32, scale applied) and their
 * labels or targets into y (int64_t[n] or float[n x n_targets]); y may be
 * NULL.
 */
void zm_trainset_gather(const struct zm_trainset *ts, const size_t *idx,
                        size_t n, float *x, void *y);

/*
 * Brings ts to a model's schema so that label i and column j mean what
 * they mean to the model: labels are mapped to the model's classes by
 * name, and when both name their columns x is reordered (extra columns
 * dropped).  A model whose classes or features are unknown adopts ts's
 * (labels that are their own names give it "0" .. outputs-1), and
 * *adopted says so.  Errors (ZM_ERR_DATA): a label the model does not
 * know, a column it needs that the data lacks, more classes than the
 * model has outputs; where names the data, what the model.  note
 * reports dropped
 * columns and position matching.  When model->arch has one_hot layers,
 * their units are appended to x from the kept string columns first (as
 * zm_schema_conform_doc does for a document), and a model that names no
 * features takes the data's numeric columns and its own units.
 */
enum zm_status zm_trainset_conform(struct zm_trainset *ts,
                                   struct zm_schema *model, size_t outputs,
                                   const char *where, const char *what,
                                   bool *adopted,
                                   struct zm_schema_note *note,
                                   struct zm_error *err);

/*
 * The default number of epochs (epochs 0, "auto"): with held-out rows,
 * train until their loss has not improved (by a relative 1e-4) for
 * ZM_FIT_AUTO_PATIENCE epochs, at most ZM_FIT_AUTO_MAX_EPOCHS and at most
 * ZM_FIT_AUTO_ROWS training rows in all (at least one epoch), and keep
 * the parameters of the epoch with the lowest held-out loss -- what a
 * PyTorch user's early stopping does.  Without held-out rows it is one
 * epoch.
 */
#define ZM_FIT_AUTO_PATIENCE 10
#define ZM_FIT_AUTO_MAX_EPOCHS 200
#define ZM_FIT_AUTO_ROWS 1000000

/* Settings of one training run. */
struct zm_fit_config {
	struct zm_optim_config optim;
	size_t epochs;              /* 0: the stopping rule above */
	size_t batch_size;
	uint64_t seed;              /* shuffling */
	float step_scale;           /* assignment weight w: scales each step */
	size_t log_every;           /* report every N steps (0: epochs only) */
};

void zm_fit_config_default(struct zm_fit_config *cfg);

/* What zm_fit reports: after every log_every steps (epoch_end false) and
 * at the end of every epoch (epoch_end true, validation figures set). */
struct zm_fit_report {
	bool epoch_end;
	size_t epoch;               /* 1-based; in *last of zm_fit, the
	                               epoch whose parameters were kept */
	size_t max_epochs;          /* the most epochs this run trains */
	size_t epochs_run;          /* in *last: epochs trained */
	size_t step;                /* steps so far */
	double lr;
	double loss;                /* mean training loss since last report */
	double train_loss, train_accuracy;   /* epoch_end: over the epoch */
	double val_loss, val_accuracy;       /* epoch_end, when n_val > 0 */
	size_t train_rows, val_rows;
	double samples_per_s;       /* training throughput of the epoch */
	bool classification;
};

typedef void (*zm_fit_callback)(const struct zm_fit_report *report,
                                void *ctx);

/*
 * Trains model on ts's training rows for cfg->epochs epochs (SGD/Adam per
 * cfg->optim, each step scaled by cfg->step_scale; 0: the stopping rule
 * of ZM_FIT_AUTO_PATIENCE) and evaluates on the held-out rows after each
 * epoch.  cb (may be NULL) is called with progress.  *last receives the
 * report of the epoch whose parameters the model has at the end (the
 * last one, or under the stopping rule the best one).  On error the model
 * may be partly trained: callers keep the original until success.
 */
enum zm_status zm_fit(struct zm_model *model, const struct zm_trainset *ts,
                      const struct zm_fit_config *cfg, zm_fit_callback cb,
                      void *ctx, struct zm_fit_report *last,
                      struct zm_error *err);

/* Loss and accuracy of model over ts's held-out rows (stats zeroed first;
 * stats->rows is 0 when nothing is held out). */
enum zm_status zm_trainset_evaluate(const struct zm_model *model,
                                    const struct zm_trainset *ts,
                                    struct zm_batch_stats *stats,
                                    struct zm_error *err);

/*
 * Adds to p the statistics of the training rows of ts as the model sees
 * them: "input" (the features), and for every layer after the first the
 * input that layer receives, under the layer's name; plus the label
 * histogram.
 */
enum zm_status zm_trainset_profile(const struct zm_trainset *ts,
                                   const struct zm_model *model,
                                   struct zm_profile *p,
                                   struct zm_error *err);

#endif
