/*
 * One train-step run of a zoo: which models train on a data file (the
 * jobs), their base versions out of the zoo, training one job, and the
 * JSON that a run writes -- the log lines (read back by granctl's
 * zm_gc_add_log), the models' zm.metrics and zm.hparams.  train-step is
 * the program; what it prints and which flags it names stay there.
 */
#ifndef ZM_TRAINSTEP_H
#define ZM_TRAINSTEP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "profile.h"
#include "schema.h"
#include "trainset.h"

struct zm_assignment;
struct zm_buf;
struct zm_model;

/* One model to train: its name, step scale and, once trained, results. */
struct zm_train_job {
	const char *name;          /* borrowed (the assignment or caller) */
	const char *slice;         /* borrowed: the assignment's slice, or
	                            * the data's zm.slice */
	float weight;              /* step scale of the job */
	struct zm_model *base;     /* owned: the version training starts from */
	struct zm_model *trained;  /* owned, once trained */
	int64_t version;           /* of base */
	struct zm_profile data_profile; /* the rows trained on */
	struct zm_schema schema;   /* the classes and columns trained with */
};

/*
 * The jobs of a run into *jobs (new, *n of them; free with
 * zm_train_jobs_free): without an assignment a, the one model called
 * model with step_scale; with it, the models of the data's slice (named
 * by slice, else by ts->slice, else the entry whose file is data or has
 * its base name) with weight > 0, each scaled by its weight times
 * step_scale.  assignment_path names a in messages.  No such slice is
 * ZM_ERR_NOTFOUND, a slice without a positive weight ZM_ERR_DATA.
 */
enum zm_status zm_train_plan(const struct zm_assignment *a,
                             const char *assignment_path, const char *model,
                             const char *slice, const char *data,
                             const struct zm_trainset *ts, float step_scale,
                             struct zm_train_job **jobs, size_t *n,
                             struct zm_error *err);
void zm_train_jobs_free(struct zm_train_job *jobs, size_t n);

/* Loads each job's current version from the zoo at dir under one shared
 * lock, released before training so that other jobs can use the zoo. */
enum zm_status zm_train_load_bases(const char *dir, struct zm_train_job *jobs,
                                   size_t n, struct zm_error *err);

/*
 * Brings ts to the job's model's classes and columns by name
 * (zm_trainset_conform; a model that names none takes the data's, which
 * the trained version then records).  *adopted says that happened, *note
 * what was matched by position or left out, for the caller to report.
 */
enum zm_status zm_train_conform(struct zm_train_job *j, struct zm_trainset *ts,
                                const char *data, bool *adopted,
                                struct zm_schema_note *note,
                                struct zm_error *err);

/*
 * Trains a copy of the job's base into j->trained (zm_fit with cfg, its
 * step scale j->weight; cb and ctx as for zm_fit), then records in it the
 * merged profile, zm.metrics (before and after, zm_train_metrics_json),
 * zm.hparams, the schema and, for a model trained on slice membership,
 * the router role.  Errors are prefixed "model 'NAME': "; a trained
 * parameter that is not finite sets *diverged and is returned unprefixed.
 */
enum zm_status zm_train_job_fit(struct zm_train_job *j,
                                const struct zm_trainset *ts,
                                const struct zm_fit_config *cfg,
                                zm_fit_callback cb, void *ctx,
                                bool *diverged, struct zm_error *err);

/* Appends the log line of report r of model (a JSON object and '\n'). */
void zm_train_log_line(struct zm_buf *b, const char *model,
                       const struct zm_fit_report *r);
/* The zm.metrics object of a run: held-out loss and accuracy after
 * training (the model's metrics) and before it (before). */
void zm_train_metrics_json(struct zm_buf *b, const struct zm_fit_report *r,
                           const struct zm_batch_stats *before);
/* The zm.hparams object of a run with cfg, step_scale and slice (NULL:
 * none). */
void zm_train_hparams_json(struct zm_buf *b, const struct zm_fit_config *cfg,
                           float step_scale, const char *slice);

#endif
