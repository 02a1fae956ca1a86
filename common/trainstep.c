/*
 * One train-step run of a zoo; see trainstep.h.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assignment.h"
#include "constants.h"
#include "json.h"
#include "model.h"
#include "trainstep.h"
#include "zoo.h"
#include "zoomodel.h"

/* A job array of n entries (at least one), each ready to release. */
static struct zm_train_job *jobs_new(size_t n)
{
	struct zm_train_job *jobs = calloc(n ? n : 1, sizeof(*jobs));
	size_t i;

	for (i = 0; jobs && i < (n ? n : 1); i++) {
		zm_profile_init(&jobs[i].data_profile);
		zm_schema_init(&jobs[i].schema);
	}
	return jobs;
}

void zm_train_jobs_free(struct zm_train_job *jobs, size_t n)
{
	size_t i;

	if (!jobs)
		return;
	for (i = 0; i < (n ? n : 1); i++) {
		zm_profile_release(&jobs[i].data_profile);
		zm_schema_release(&jobs[i].schema);
		zm_model_free(jobs[i].base);
		zm_model_free(jobs[i].trained);
	}
	free(jobs);
}

/* The assignment's slice for a data file: by name, else by its file. */
static const struct zm_assignment_slice *
plan_slice(const struct zm_assignment *a, const char *name, const char *data)
{
	const char *dbase = strrchr(data, '/');
	size_t i;

	if (name)
		return zm_assignment_find(a, name);
	for (i = 0; i < a->n_slices; i++) {
		const char *f = a->slices[i].file;
		const char *base = f ? strrchr(f, '/') : NULL;
		if (f && (!strcmp(f, data) ||
		          !strcmp(base ? base + 1 : f, dbase ? dbase + 1 : data)))
			return &a->slices[i];
	}
	return NULL;
}

enum zm_status zm_train_plan(const struct zm_assignment *a,
                             const char *assignment_path, const char *model,
                             const char *slice, const char *data,
                             const struct zm_trainset *ts, float step_scale,
                             struct zm_train_job **jobs, size_t *n,
                             struct zm_error *err)
{
	const struct zm_assignment_slice *s;
	const char *name = slice ? slice : ts->slice;
	size_t i, cap;

	*n = 0;
	*jobs = NULL;
	cap = a ? 0 : 1;
	s = a ? plan_slice(a, name, data) : NULL;
	if (a && !s)
		return zm_error_set(err, ZM_ERR_NOTFOUND, "%s: no slice %s%s%s "
		                    "in the assignment %s", data,
		                    name ? "'" : "for this file",
		                    name ? name : "", name ? "'" : "",
		                    assignment_path);
	if (s)
		cap = s->n_models;
	if (!(*jobs = jobs_new(cap)))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	if (!a) {
		(*jobs)[0].name = model;
		(*jobs)[0].slice = ts->slice;
		(*jobs)[0].weight = step_scale;
		*n = 1;
		return ZM_OK;
	}
	for (i = 0; i < s->n_models; i++) {
		if (s->models[i].weight <= 0)
			continue;
		(*jobs)[*n].name = s->models[i].model;
		(*jobs)[*n].slice = s->slice;
		(*jobs)[*n].weight = (float)s->models[i].weight * step_scale;
		(*n)++;
	}
	if (*n == 0)
		return zm_error_set(err, ZM_ERR_DATA, "slice '%s' has no model "
		                    "with a positive weight in %s (assign "
		                    "--create makes one)", s->slice,
		                    assignment_path);
	return ZM_OK;
}

enum zm_status zm_train_load_bases(const char *dir, struct zm_train_job *jobs,
                                   size_t n, struct zm_error *err)
{
	struct zm_zoo *zoo = NULL;
	enum zm_status st;
	size_t i;

	st = zm_zoo_open(&zoo, dir, ZM_ZOO_READ, err);
	for (i = 0; st == ZM_OK && i < n; i++)
		st = zm_zoo_load_model(zoo, jobs[i].name, &jobs[i].base,
		                       &jobs[i].version, err);
	zm_zoo_close(zoo);
	return st;
}

enum zm_status zm_train_conform(struct zm_train_job *j, struct zm_trainset *ts,
                                const char *data, bool *adopted,
                                struct zm_schema_note *note,
                                struct zm_error *err)
{
	char what[128];
	enum zm_status st;

	memset(note, 0, sizeof(*note));
	*adopted = false;
	snprintf(what, sizeof(what), "model '%s'", j->name);
	if ((st = zm_schema_of_model_doc(&j->schema, &j->base->extra, what,
	                                 err)))
		return st;
	j->schema.arch = j->base->arch;   /* its one_hot layers */
	return zm_trainset_conform(ts, &j->schema,
	                           j->base->arch->output_features, data, what,
	                           adopted, note, err);
}

/* ZM_OK when every trained parameter is finite. */
static enum zm_status check_finite(const struct zm_model *m,
                                   struct zm_error *err)
{
	enum zm_status st = ZM_OK;
	size_t l;

	for (l = 0; st == ZM_OK && l < m->arch->n_layers; l++) {
		const struct zm_layer *layer = &m->layers[l];
		if (!layer->spec->has_params)
			continue;
		if (!(st = zm_tensor_check_finite(&layer->weight, err)))
			st = zm_tensor_check_finite(&layer->bias, err);
	}
	return st;
}

/* The trained model's profile: the data trained on (into
 * j->data_profile), merged into what the model saw before. */
static enum zm_status record_profile(struct zm_train_job *j,
                                     const struct zm_trainset *ts,
                                     struct zm_error *err)
{
	struct zm_profile merged;
	enum zm_status st;

	zm_profile_init(&merged);
	if ((st = zm_trainset_profile(ts, j->trained, &j->data_profile, err)))
		goto out;
	st = zm_profile_from_doc(&merged, &j->trained->extra, err);
	if (st == ZM_ERR_NOTFOUND)
		st = ZM_OK;
	if (st == ZM_OK && !(st = zm_profile_merge(&merged, &j->data_profile,
	                                           err)))
		st = zm_profile_replace_in_doc(&merged, &j->trained->extra, err);
out:
	zm_profile_release(&merged);
	return st;
}

enum zm_status zm_train_job_fit(struct zm_train_job *j,
                                const struct zm_trainset *ts,
                                const struct zm_fit_config *cfg,
                                zm_fit_callback cb, void *ctx,
                                bool *diverged, struct zm_error *err)
{
	struct zm_fit_config fit = *cfg;
	struct zm_fit_report last;
	struct zm_batch_stats before;
	struct zm_buf metrics, hparams;
	enum zm_status st;

	*diverged = false;
	zm_buf_init(&metrics);
	zm_buf_init(&hparams);
	fit.step_scale = j->weight;
	if ((st = zm_trainset_evaluate(j->base, ts, &before, err)) ||
	    (st = zm_model_copy(j->base, &j->trained, err)) ||
	    (st = zm_fit(j->trained, ts, &fit, cb, ctx, &last, err))) {
		zm_error_prefix(err, "model '%s': ", j->name);
		goto out;
	}
	if ((st = check_finite(j->trained, err))) {
		*diverged = true;
		goto out;
	}
	if ((st = record_profile(j, ts, err)))
		goto out;
	zm_train_metrics_json(&metrics, &last, &before);
	zm_train_hparams_json(&hparams, &fit, j->weight, ts->slice);
	if (metrics.failed || hparams.failed) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((st = zm_model_set_string(&j->trained->metrics, metrics.data, err)) ||
	    (st = zm_model_set_string(&j->trained->hparams, hparams.data, err)) ||
	    (st = zm_schema_to_model_doc(&j->schema, &j->trained->extra, err)))
		goto out;
	/* What slice --membership trains is a router: its classes are
	 * slices, and assign and granctl must not take it for an expert. */
	if (!zm_doc_meta(&j->trained->extra, ZM_META_ROLE) && ts->label &&
	    strcmp(ts->label, ZM_MEMBERSHIP_LABEL) == 0)
		st = zm_doc_set_meta(&j->trained->extra, ZM_META_ROLE,
		                     zm_role_name(ZM_ROLE_ROUTER), err);
out:
	zm_buf_release(&metrics);
	zm_buf_release(&hparams);
	return st;
}

void zm_train_log_line(struct zm_buf *b, const char *model,
                       const struct zm_fit_report *r)
{
	zm_buf_puts(b, "{\"model\":");
	zm_json_string(b, model, strlen(model));
	zm_buf_printf(b, ",\"epoch\":%zu,\"step\":%zu,\"lr\":", r->epoch,
	              r->step);
	zm_json_float(b, r->lr);
	zm_buf_puts(b, ",\"loss\":");
	zm_json_float(b, r->loss);
	if (r->epoch_end) {
		zm_buf_puts(b, ",\"epoch_end\":true,\"train_loss\":");
		zm_json_float(b, r->train_loss);
		if (r->classification) {
			zm_buf_puts(b, ",\"train_acc\":");
			zm_json_float(b, r->train_accuracy);
		}
		if (r->val_rows) {
			zm_buf_puts(b, ",\"val_loss\":");
			zm_json_float(b, r->val_loss);
			if (r->classification) {
				zm_buf_puts(b, ",\"val_acc\":");
				zm_json_float(b, r->val_accuracy);
			}
		}
		zm_buf_printf(b, ",\"samples_per_s\":%.1f", r->samples_per_s);
	}
	zm_buf_puts(b, "}\n");
}

void zm_train_metrics_json(struct zm_buf *b, const struct zm_fit_report *r,
                           const struct zm_batch_stats *before)
{
	zm_buf_puts(b, "{");
	if (r->val_rows) {
		if (r->classification) {
			zm_buf_puts(b, "\"accuracy\":");
			zm_json_float(b, r->val_accuracy);
			zm_buf_puts(b, ",\"accuracy_before\":");
			zm_json_float(b, (double)before->correct /
			              (double)before->rows);
			zm_buf_puts(b, ",");
		}
		zm_buf_puts(b, "\"loss\":");
		zm_json_float(b, r->val_loss);
		zm_buf_puts(b, ",\"loss_before\":");
		zm_json_float(b, before->loss_sum / (double)before->rows);
		zm_buf_printf(b, ",\"val_samples\":%zu,", r->val_rows);
	}
	if (r->classification) {
		zm_buf_puts(b, "\"train_accuracy\":");
		zm_json_float(b, r->train_accuracy);
		zm_buf_puts(b, ",");
	}
	zm_buf_puts(b, "\"train_loss\":");
	zm_json_float(b, r->train_loss);
	zm_buf_printf(b, ",\"samples\":%zu,\"epochs\":%zu,\"epochs_run\":%zu}",
	              r->train_rows, r->epoch, r->epochs_run);
}

void zm_train_hparams_json(struct zm_buf *b, const struct zm_fit_config *cfg,
                           float step_scale, const char *slice)
{
	const struct zm_optim_config *c = &cfg->optim;

	zm_buf_printf(b, "{\"optimizer\":\"%s\",\"lr\":",
	              zm_optim_kind_name(c->kind));
	zm_json_float(b, c->lr);
	if (cfg->epochs)
		zm_buf_printf(b, ",\"epochs\":%zu", cfg->epochs);
	else
		zm_buf_puts(b, ",\"epochs\":\"auto\"");
	zm_buf_printf(b, ",\"batch_size\":%zu,\"seed\":%"
	              PRIu64 ",\"schedule\":\"%s\",\"step_scale\":",
	              cfg->batch_size, cfg->seed,
	              zm_lr_schedule_name(c->schedule));
	zm_json_float(b, step_scale);
	if (slice) {
		zm_buf_puts(b, ",\"slice\":");
		zm_json_string(b, slice, strlen(slice));
	}
	zm_buf_puts(b, "}");
}
