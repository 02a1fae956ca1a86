/*
 * Update documents (zoomerge(5)): the writer (what train-step emits) and
 * their application to a zoo (zm_merge_apply_updates, merge.h: merge
 * --apply), which reads them.  granctl reads them too (zm_gc_add_update,
 * granctl.c) to measure before deciding.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lineage.h"
#include "mem.h"
#include "merge.h"
#include "metakeys.h"
#include "model.h"
#include "profile.h"
#include "schema.h"
#include "stream.h"
#include "update.h"
#include "zoomodel.h"

/* The update document: trained minus base parameters, the profile of the
 * data trained on, and the run's metrics. */
enum zm_status zm_update_to_doc(const struct zm_model *trained,
                                const struct zm_model *base,
                                const struct zm_update_info *u,
                                struct zm_doc *doc, struct zm_error *err)
{
	struct zm_model *delta = NULL;
	enum zm_status st;
	char num[64], id[ZM_LINEAGE_ID_MAX];
	size_t l, i;

	st = zm_model_copy(trained, &delta, err);
	if (st != ZM_OK)
		return st;
	for (l = 0; l < delta->arch->n_layers; l++) {
		struct zm_layer *d = &delta->layers[l];
		const struct zm_layer *b = &base->layers[l];
		float *w = d->weight.data, *bias = d->bias.data;
		const float *bw = b->weight.data, *bb = b->bias.data;
		if (!d->spec->has_params)
			continue;
		for (i = 0; i < zm_tensor_numel(&d->weight); i++)
			w[i] -= bw[i];
		for (i = 0; i < zm_tensor_numel(&d->bias); i++)
			bias[i] -= bb[i];
	}
	st = zm_model_to_doc(delta, doc, err);
	zm_model_free(delta);
	if (st != ZM_OK)
		return st;
	zm_profile_remove_from_doc(doc);
	if ((st = zm_profile_to_doc(u->profile, doc, err)))
		return st;
	snprintf(num, sizeof(num), "%" PRId64, u->parent);
	if ((st = zm_doc_set_meta(doc, ZM_META_KIND, "update", err)) ||
	    (st = zm_doc_set_meta(doc, ZM_META_NAME, u->name, err)) ||
	    (st = zm_doc_set_meta(doc, ZM_META_PARENT, num, err)))
		return st;
	snprintf(num, sizeof(num), "%zu", u->samples);
	if ((st = zm_doc_set_meta(doc, ZM_META_SAMPLES, num, err)))
		return st;
	snprintf(num, sizeof(num), "%.9g", (double)u->weight);
	if ((st = zm_doc_set_meta(doc, ZM_META_WEIGHT, num, err)))
		return st;
	if (u->slice && (st = zm_doc_set_meta(doc, ZM_META_SLICE, u->slice, err)))
		return st;
	/* The id merge records in the versions it makes from this update. */
	zm_lineage_digest_doc(doc, id);
	return zm_doc_set_meta(doc, ZM_META_ID, id, err);
}

/* Reads every document of every update stream into *docs. */
enum zm_status zm_update_read_all(const char *const *paths, size_t n,
                                  struct zm_doc **docs, size_t *n_docs,
                                  struct zm_error *err)
{
	struct zm_doc *d = NULL;
	size_t count = 0, cap = 0, i;
	enum zm_status st = ZM_OK;

	for (i = 0; i < n && st == ZM_OK; i++) {
		struct zm_reader *r = NULL;
		bool eof = false;
		if ((st = zm_reader_open(&r, paths[i], err)))
			break;
		while (st == ZM_OK) {
			if (count == cap) {
				size_t nc = cap ? cap * 2 : 8;
				struct zm_doc *g = zm_realloc(d, nc * sizeof(*g));
				if (!g) {
					st = zm_error_set(err, ZM_ERR_NOMEM,
					                  "out of memory");
					break;
				}
				d = g;
				cap = nc;
			}
			zm_doc_init(&d[count]);
			st = zm_reader_next(r, &d[count], &eof, err);
			if (st != ZM_OK || eof)
				break;
			count++;
		}
		if (st == ZM_OK || eof)
			zm_doc_release(&d[count]);
		zm_reader_close(r);
	}
	if (st != ZM_OK) {
		for (i = 0; i <= count && i < cap; i++)
			zm_doc_release(&d[i]);
		free(d);
		return st;
	}
	*docs = d;
	*n_docs = count;
	return ZM_OK;
}

/* ---- applying updates ---- */

void zm_apply_result_release(struct zm_apply_result *r)
{
	size_t i;

	for (i = 0; i < r->n_models; i++)
		free(r->models[i].name);
	free(r->models);
	memset(r, 0, sizeof(*r));
}

struct upd {
	const struct zm_doc *doc;
	size_t index;            /* 1-based document number */
	const char *slice;
	double weight, samples;
	size_t model;
};

struct mstate {
	const char *name;        /* points into an update's metadata */
	struct zm_model *model;
	struct zm_model *delta;  /* own weighted average delta */
	double c;                /* sum of w x samples */
	size_t comp;
	int64_t old_version;
	size_t n_updates;
	double samples;
};

static size_t uf_find(size_t *parent, size_t i)
{
	while (parent[i] != i)
		i = parent[i] = parent[parent[i]];
	return i;
}

static enum zm_status meta_double(const struct zm_doc *d, size_t index,
                                  const char *key, double dflt, double *out,
                                  struct zm_error *err)
{
	const char *v = zm_doc_meta(d, key);

	*out = dflt;
	if (!v)
		return ZM_OK;
	if (!zm_parse_double(v, out) || *out < 0)
		return zm_error_set(err, ZM_ERR_FORMAT, "update %zu: %s is '%s', "
		                    "expected a number >= 0", index, key, v);
	return ZM_OK;
}

/* Adds c times the update's delta to the model's delta. */
static enum zm_status add_delta(struct mstate *m, const struct upd *u,
                                double c, struct zm_error *err)
{
	const char *js = zm_doc_meta(u->doc, ZM_META_ARCH);
	size_t l, k, i;

	/* Tensors of the same shapes may still mean other things (one_hot
	 * levels): the update's arch must be the model's. */
	if (js) {
		struct zm_arch *ua = NULL;
		enum zm_status st = zm_arch_parse_json(js, strlen(js),
		                                       "zm.arch", &ua, err);
		if (st == ZM_OK)
			st = zm_model_same_arch(m->model->arch, ua, err);
		zm_arch_free(ua);
		if (st != ZM_OK)
			return zm_error_prefix(err, "update %zu (model '%s'): "
			                       "not the model's architecture: ",
			                       u->index, m->name);
	}
	for (l = 0; l < m->model->arch->n_layers; l++) {
		struct zm_layer *dl = &m->delta->layers[l];
		if (!dl->spec->has_params)
			continue;
		for (k = 0; k < 2; k++) {
			struct zm_tensor *dst = k ? &dl->bias : &dl->weight;
			const struct zm_tensor *src;
			enum zm_status st;
			size_t n = zm_tensor_numel(dst);
			float *d = dst->data, buf[256];
			src = zm_doc_find(u->doc, dst->name);
			if (!src)
				return zm_error_set(err, ZM_ERR_FORMAT, "update %zu "
				                    "(model '%s'): tensor %s "
				                    "missing", u->index, m->name,
				                    dst->name);
			if (!zm_dtype_is_float(src->dtype) ||
			    src->ndim != dst->ndim ||
			    memcmp(src->shape, dst->shape,
			           (size_t)dst->ndim * sizeof(int64_t)) != 0) {
				char a[96], b[96];
				zm_shape_format(src->ndim, src->shape, a, sizeof(a));
				zm_shape_format(dst->ndim, dst->shape, b, sizeof(b));
				return zm_error_set(err, ZM_ERR_DATA, "update %zu "
				                    "(model '%s'): tensor %s is %s %s,"
				                    " the model's is F32 %s", u->index,
				                    m->name, dst->name,
				                    zm_dtype_name(src->dtype), a, b);
			}
			if ((st = zm_tensor_check_finite(src, err)))
				return zm_error_prefix(err, "update %zu: ",
				                       u->index);
			for (i = 0; i < n; i += 256) {
				size_t j, cnt = n - i < 256 ? n - i : 256;
				zm_tensor_read_f32(src, i, cnt, buf);
				for (j = 0; j < cnt; j++)
					d[i + j] += (float)(c * buf[j]);
			}
		}
	}
	return ZM_OK;
}

/* Scales every parameter of m by s. */
static void scale_params(struct zm_model *m, float s)
{
	size_t l, i;

	for (l = 0; l < m->arch->n_layers; l++) {
		struct zm_layer *x = &m->layers[l];
		float *wd = x->weight.data, *bd = x->bias.data;
		if (!x->spec->has_params)
			continue;
		for (i = 0; i < zm_tensor_numel(&x->weight); i++)
			wd[i] *= s;
		for (i = 0; i < zm_tensor_numel(&x->bias); i++)
			bd[i] *= s;
	}
}

/*
 * The training settings of a merged version: the zm.hparams of the
 * updates applied to model, a key's values joined by '|' where the
 * updates differ (in update order, each value once), and "updates", the
 * ids (zm_lineage_digest_doc) of those updates joined by ','.  The
 * model's old hparams are not carried: they describe how the version
 * before was made.
 */
static enum zm_status combine_hparams(const struct upd *us, size_t n_us,
                                      size_t model, struct zm_kv_list *out,
                                      struct zm_error *err)
{
	struct zm_kv_list one;
	struct zm_buf ids;
	char id[ZM_LINEAGE_ID_MAX];
	enum zm_status st = ZM_OK;
	size_t i, k;

	memset(&one, 0, sizeof(one));
	zm_buf_init(&ids);
	for (i = 0; i < n_us && st == ZM_OK; i++) {
		const char *js;
		if (us[i].model != model)
			continue;
		zm_lineage_digest_doc(us[i].doc, id);
		zm_buf_printf(&ids, "%s%s", ids.len ? "," : "", id);
		if (!(js = zm_doc_meta(us[i].doc, ZM_META_HPARAMS)))
			continue;
		zm_kv_release(&one);
		if ((st = zm_kv_from_json(&one, js, ZM_META_HPARAMS, err))) {
			zm_error_prefix(err, "update %zu: ", us[i].index);
			break;
		}
		for (k = 0; k < one.count && st == ZM_OK; k++) {
			const char *key = one.items[k].key;
			const char *v = one.items[k].value, *old;
			struct zm_buf b;
			size_t vl = strlen(v);
			bool seen = false;
			const char *p;
			if (!(old = zm_kv_get(out, key))) {
				st = zm_kv_set(out, key, v, err);
				continue;
			}
			/* Each value once: look for v between '|'s. */
			for (p = old; *p; p += strcspn(p, "|"), p += *p == '|') {
				if (strncmp(p, v, vl) == 0 &&
				    (p[vl] == '|' || p[vl] == '\0')) {
					seen = true;
					break;
				}
			}
			if (seen)
				continue;
			zm_buf_init(&b);
			zm_buf_printf(&b, "%s|%s", old, v);
			st = b.failed ? zm_error_set(err, ZM_ERR_NOMEM,
			                             "out of memory")
			              : zm_kv_set(out, key, b.data, err);
			zm_buf_release(&b);
		}
	}
	if (st == ZM_OK && ids.failed)
		st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	if (st == ZM_OK && ids.len)
		st = zm_kv_set(out, "updates", ids.data, err);
	zm_kv_release(&one);
	zm_buf_release(&ids);
	return st;
}

/* Combines the updates' zm.metrics: sample counts add up, other numbers
 * are averaged weighted by each update's samples. */
static enum zm_status combine_metrics(const struct upd *us, size_t n_us,
                                      size_t model, struct zm_kv_list *out,
                                      struct zm_error *err)
{
	struct zm_kv_list one;
	double *sum = NULL, *wsum = NULL;
	size_t cap = 0, i, k;
	enum zm_status st = ZM_OK;
	char num[64];

	memset(&one, 0, sizeof(one));
	for (i = 0; i < n_us && st == ZM_OK; i++) {
		const char *js;
		if (us[i].model != model ||
		    !(js = zm_doc_meta(us[i].doc, ZM_META_METRICS)))
			continue;
		zm_kv_release(&one);
		if ((st = zm_kv_from_json(&one, js, ZM_META_METRICS, err)))
			break;
		for (k = 0; k < one.count && st == ZM_OK; k++) {
			const char *key = one.items[k].key;
			const char *v = one.items[k].value;
			bool add = strcmp(key, "samples") == 0 ||
			           strcmp(key, "val_samples") == 0;
			double x, wt = us[i].samples > 0 ? us[i].samples : 1;
			size_t j;
			if (!zm_parse_double(v, &x))
				continue;
			for (j = 0; j < out->count; j++)
				if (strcmp(out->items[j].key, key) == 0)
					break;
			if (j == out->count) {
				if ((st = zm_kv_set(out, key, "0", err)))
					break;
				if (out->count > cap) {
					size_t nc = out->count * 2;
					double *a = zm_realloc(sum, nc * sizeof(double));
					double *b2;
					if (!a) {
						st = zm_error_set(err, ZM_ERR_NOMEM,
						                  "out of memory");
						break;
					}
					sum = a;
					b2 = zm_realloc(wsum, nc * sizeof(double));
					if (!b2) {
						st = zm_error_set(err, ZM_ERR_NOMEM,
						                  "out of memory");
						break;
					}
					wsum = b2;
					cap = nc;
				}
				sum[j] = 0;
				wsum[j] = 0;
			}
			sum[j] += add ? x : wt * x;
			wsum[j] += add ? 0 : wt;
		}
	}
	for (k = 0; k < out->count && st == ZM_OK; k++) {
		double v = wsum[k] > 0 ? sum[k] / wsum[k] : sum[k];
		snprintf(num, sizeof(num), "%.9g", v);
		st = zm_kv_set(out, out->items[k].key, num, err);
	}
	zm_kv_release(&one);
	free(sum);
	free(wsum);
	return st;
}

static void free_states(struct mstate *ms, size_t n)
{
	size_t i;

	for (i = 0; ms && i < n; i++) {
		zm_model_free(ms[i].model);
		zm_model_free(ms[i].delta);
	}
	free(ms);
}

/* Loads the models the updates name and checks their base versions. */
static enum zm_status load_states(struct zm_zoo *zoo, struct upd *us,
                                  size_t n_us, bool rebase,
                                  struct mstate **out, size_t *n_out,
                                  struct zm_error *err)
{
	struct mstate *ms;
	size_t n = 0, i, j;
	enum zm_status st = ZM_OK;

	if (!(ms = zm_calloc(n_us, sizeof(*ms))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (i = 0; i < n_us && st == ZM_OK; i++) {
		const char *name = zm_doc_meta(us[i].doc, ZM_META_NAME);
		const char *parent = zm_doc_meta(us[i].doc, ZM_META_PARENT);
		struct zm_zoo_entry *e;
		int64_t pv;
		for (j = 0; j < n; j++)
			if (strcmp(ms[j].name, name) == 0)
				break;
		us[i].model = j;
		if ((st = zm_zoo_get(zoo, name, &e, err)))
			break;
		if (!zm_parse_int64(parent, &pv)) {
			st = zm_error_set(err, ZM_ERR_FORMAT, "update %zu: "
			                  "zm.parent is '%s', expected a version",
			                  us[i].index, parent);
			break;
		}
		if (pv != e->version && !rebase) {
			st = zm_error_set(err, ZM_ERR_CONFLICT, "update %zu for "
			                  "model '%s' is based on v%" PRId64
			                  " but the zoo holds v%" PRId64 "; "
			                  "nothing was applied (--rebase applies "
			                  "it to v%" PRId64 ")", us[i].index, name,
			                  pv, e->version, e->version);
			break;
		}
		if (j == n) {
			ms[n].name = name;
			ms[n].old_version = e->version;
			st = zm_zoo_load_entry(zoo, e, &ms[n].model, err);
			if (st == ZM_OK)
				st = zm_model_copy(ms[n].model, &ms[n].delta, err);
			n++;
			if (st == ZM_OK)
				scale_params(ms[n - 1].delta, 0.0f);
		}
		ms[j].n_updates++;
		ms[j].samples += us[i].samples;
	}
	if (st != ZM_OK) {
		free_states(ms, n);
		return st;
	}
	*out = ms;
	*n_out = n;
	return ZM_OK;
}

/* Replaces, on the shared layers, each member's delta of a group of
 * models by the group's weighted average delta. */
static enum zm_status share_group(struct mstate *ms, size_t n_ms, size_t comp,
                                  const bool *shared, bool allow_unrelated,
                                  struct zm_error *err)
{
	size_t first = SIZE_MAX, m, l, k, i;
	double c = 0;
	enum zm_status st;
	bool any = false;

	for (m = 0; m < n_ms; m++) {
		if (ms[m].comp != comp)
			continue;
		if (first == SIZE_MAX)
			first = m;
		else if ((st = zm_model_same_arch(ms[first].model->arch,
		                                  ms[m].model->arch, err)))
			return zm_error_prefix(err, "models '%s' and '%s' share a "
			                       "slice but cannot share "
			                       "parameters: ", ms[first].name,
			                       ms[m].name);
		c += ms[m].c;
	}
	if (first == SIZE_MAX || c <= 0)
		return ZM_OK;
	for (l = 0; l < ms[first].model->arch->n_layers; l++)
		any |= shared[l] && ms[first].model->arch->layers[l].has_params;
	/* An averaged delta means the same to every model only when their
	 * units correspond. */
	for (m = first + 1; any && !allow_unrelated && m < n_ms; m++)
		if (ms[m].comp == comp &&
		    (st = zm_lineage_require_related(ms[first].model,
		                                     ms[first].name,
		                                     ms[m].model, ms[m].name,
		                                     "nothing was applied (give "
		                                     "--allow-unrelated to share "
		                                     "units anyway, or --share "
		                                     "none)", err)))
			return st;
	for (l = 0; l < ms[first].model->arch->n_layers; l++) {
		if (!shared[l] || !ms[first].model->arch->layers[l].has_params)
			continue;
		for (k = 0; k < 2; k++) {
			struct zm_tensor *ref = k ? &ms[first].delta->layers[l].bias
			                          : &ms[first].delta->layers[l].weight;
			size_t n = zm_tensor_numel(ref);
			float *avg = zm_calloc(n ? n : 1, sizeof(float));
			if (!avg)
				return zm_error_set(err, ZM_ERR_NOMEM,
				                    "out of memory");
			for (m = 0; m < n_ms; m++) {
				const struct zm_layer *dl;
				const float *d;
				float s = (float)(ms[m].c / c);
				if (ms[m].comp != comp)
					continue;
				dl = &ms[m].delta->layers[l];
				d = k ? dl->bias.data : dl->weight.data;
				for (i = 0; i < n; i++)
					avg[i] += s * d[i];
			}
			for (m = 0; m < n_ms; m++) {
				struct zm_layer *dl;
				if (ms[m].comp != comp)
					continue;
				dl = &ms[m].delta->layers[l];
				memcpy(k ? dl->bias.data : dl->weight.data, avg,
				       n * sizeof(float));
			}
			free(avg);
		}
	}
	return ZM_OK;
}

/* theta += delta, checking the result. */
static enum zm_status add_params(struct mstate *m, struct zm_error *err)
{
	size_t l, k, i;

	for (l = 0; l < m->model->arch->n_layers; l++) {
		struct zm_layer *x = &m->model->layers[l];
		const struct zm_layer *d = &m->delta->layers[l];
		if (!x->spec->has_params)
			continue;
		for (k = 0; k < 2; k++) {
			struct zm_tensor *t = k ? &x->bias : &x->weight;
			const float *dd = k ? d->bias.data : d->weight.data;
			float *p = t->data;
			for (i = 0; i < zm_tensor_numel(t); i++) {
				p[i] += dd[i];
				if (!isfinite(p[i]))
					return zm_error_set(err, ZM_ERR_DATA,
					                    "model '%s': tensor %s "
					                    "element %zu is not finite"
					                    " after the update",
					                    m->name, t->name, i);
			}
		}
	}
	return ZM_OK;
}

/* The model's profile merged with its updates' profiles. */
static enum zm_status update_profile(struct mstate *m, const struct upd *us,
                                     size_t n_us, size_t model,
                                     struct zm_error *err)
{
	struct zm_profile p, q;
	enum zm_status st;
	size_t i;
	bool any = false;

	zm_profile_init(&p);
	zm_profile_init(&q);
	st = zm_profile_from_doc(&p, &m->model->extra, err);
	if (st == ZM_ERR_NOTFOUND)
		st = ZM_OK;
	else if (st == ZM_OK)
		any = true;
	for (i = 0; i < n_us && st == ZM_OK; i++) {
		if (us[i].model != model)
			continue;
		st = zm_profile_from_doc(&q, us[i].doc, err);
		if (st == ZM_ERR_NOTFOUND) {
			st = ZM_OK;
			continue;
		}
		if (st == ZM_OK)
			st = zm_profile_merge(&p, &q, err);
		if (st != ZM_OK)
			zm_error_prefix(err, "update %zu: ", us[i].index);
		any = true;
	}
	if (st == ZM_OK && any)
		st = zm_profile_replace_in_doc(&p, &m->model->extra, err);
	zm_profile_release(&p);
	zm_profile_release(&q);
	return st;
}

/* The classes and columns an update's training gave a model that named
 * none (its first training); updates that disagree with it are refused. */
static enum zm_status update_schema(struct mstate *m, const struct upd *us,
                                    size_t n_us, size_t model,
                                    struct zm_error *err)
{
	enum zm_status st = ZM_OK;
	char where[64];
	size_t i;

	for (i = 0; i < n_us && st == ZM_OK; i++) {
		if (us[i].model != model)
			continue;
		snprintf(where, sizeof(where), "update %zu", us[i].index);
		st = zm_schema_adopt(&m->model->extra, us[i].doc, where, err);
	}
	return st;
}

/* Model state j with its updates applied, stored in the zoo as the next
 * version (*v) with the updates' profile and metrics. */
static enum zm_status store_state(struct zm_zoo *zoo, struct mstate *m,
                                  const struct upd *us, size_t n_updates,
                                  size_t j, struct zm_doc *doc, int64_t *v,
                                  struct zm_error *err)
{
	struct zm_zoo_entry *e;
	struct zm_kv_list metrics, hparams;
	struct zm_buf b;
	enum zm_status st;

	memset(&metrics, 0, sizeof(metrics));
	memset(&hparams, 0, sizeof(hparams));
	zm_buf_init(&b);
	if ((st = add_params(m, err)) ||
	    (st = update_profile(m, us, n_updates, j, err)) ||
	    (st = update_schema(m, us, n_updates, j, err)) ||
	    (st = combine_metrics(us, n_updates, j, &metrics, err)) ||
	    (st = combine_hparams(us, n_updates, j, &hparams, err))) {
		zm_kv_release(&metrics);
		zm_kv_release(&hparams);
		return st;
	}
	zm_kv_to_json(&hparams, &b);
	zm_kv_release(&hparams);
	if (b.failed)
		st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	else
		st = zm_model_set_string(&m->model->hparams, b.data, err);
	zm_buf_release(&b);
	zm_buf_init(&b);
	if (st == ZM_OK && metrics.count) {
		zm_kv_to_json(&metrics, &b);
		if (b.failed)
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		else
			st = zm_model_set_string(&m->model->metrics,
			                         b.data, err);
	}
	zm_buf_release(&b);
	if (st == ZM_OK)
		st = zm_model_to_doc(m->model, doc, err);
	if (st == ZM_OK)
		st = zm_zoo_put_model(zoo, m->name, doc, v, err);
	if (st == ZM_OK && (e = zm_zoo_find(zoo, m->name))) {
		e->params = (int64_t)zm_arch_param_count(m->model->arch);
		if (metrics.count) {
			zm_kv_release(&e->metrics);
			e->metrics = metrics;
			memset(&metrics, 0, sizeof(metrics));
		}
	}
	zm_kv_release(&metrics);
	return st;
}

enum zm_status zm_merge_apply_updates(struct zm_zoo *zoo,
                                      const struct zm_doc *updates,
                                      size_t n_updates,
                                      const struct zm_apply_opts *o,
                                      struct zm_apply_result *res,
                                      struct zm_error *err)
{
	struct upd *us = NULL;
	struct mstate *ms = NULL;
	struct zm_gran_decision own;
	const struct zm_gran_decision *dec = o->decision;
	size_t n_ms = 0, i, j, *parent = NULL;
	bool *mask = NULL;
	enum zm_status st = ZM_OK;
	struct zm_doc doc;

	zm_apply_result_release(res);
	zm_gran_decision_init(&own);
	zm_doc_init(&doc);
	if (n_updates == 0)
		return zm_error_set(err, ZM_ERR_USAGE, "no updates to apply");
	if (!(us = zm_calloc(n_updates, sizeof(*us))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (i = 0; i < n_updates && st == ZM_OK; i++) {
		const struct zm_doc *d = &updates[i];
		const char *kind = zm_doc_meta(d, ZM_META_KIND);
		us[i].doc = d;
		us[i].index = i + 1;
		us[i].slice = zm_doc_meta(d, ZM_META_SLICE);
		if (!kind || strcmp(kind, "update") != 0)
			st = zm_error_set(err, ZM_ERR_FORMAT, "document %zu: "
			                  "zm.kind is '%s', expected update", i + 1,
			                  kind ? kind : "(none)");
		else if (!zm_doc_meta(d, ZM_META_NAME) ||
		         !zm_doc_meta(d, ZM_META_PARENT))
			st = zm_error_set(err, ZM_ERR_FORMAT, "update %zu: needs "
			                  "zm.name and zm.parent", i + 1);
		else if (!(st = meta_double(d, i + 1, ZM_META_WEIGHT, 1.0,
		                            &us[i].weight, err)))
			st = meta_double(d, i + 1, ZM_META_SAMPLES, 1.0,
			                 &us[i].samples, err);
	}
	if (st != ZM_OK)
		goto out;
	if ((st = load_states(zoo, us, n_updates, o->rebase, &ms, &n_ms, err)))
		goto out;
	/* Each model's own delta: weighted by w x samples (FedAvg). */
	for (i = 0; i < n_updates && st == ZM_OK; i++) {
		double c = us[i].weight * us[i].samples;
		ms[us[i].model].c += c;
		st = add_delta(&ms[us[i].model], &us[i], c, err);
	}
	for (j = 0; j < n_ms && st == ZM_OK; j++)
		if (ms[j].c > 0)
			scale_params(ms[j].delta, (float)(1.0 / ms[j].c));
	if (st != ZM_OK)
		goto out;
	/* Groups: models connected by a common slice.  An update without
	 * a slice connects its model to nobody. */
	if (!(parent = zm_calloc(n_ms, sizeof(*parent))))
		goto nomem;
	for (j = 0; j < n_ms; j++)
		parent[j] = j;
	for (i = 0; i < n_updates; i++)
		for (j = 0; j < i && us[i].slice; j++)
			if (us[j].slice && strcmp(us[i].slice, us[j].slice) == 0)
				parent[uf_find(parent, us[i].model)] =
					uf_find(parent, us[j].model);
	for (j = 0; j < n_ms; j++)
		ms[j].comp = uf_find(parent, j);
	if (!dec) {
		st = zm_gran_decision_from_share(&own, o->level,
		                                 o->share ? o->share : "all",
		                                 ms[0].model->arch, err);
		if (st != ZM_OK)
			goto out;
		dec = &own;
	}
	for (j = 0; j < n_ms; j++) {
		size_t g, count = 0;
		if (ms[j].comp != j)
			continue;
		for (g = 0; g < n_ms; g++)
			count += ms[g].comp == j;
		if (count < 2)
			continue;
		free(mask);
		if (!(mask = zm_calloc(ms[j].model->arch->n_layers + 1,
		                       sizeof(bool))))
			goto nomem;
		if ((st = zm_gran_decision_validate(dec, ms[j].model->arch,
		                                    err)) ||
		    (st = zm_gran_decision_layer_mask(dec, ms[j].model->arch,
		                                      mask, err)) ||
		    (st = share_group(ms, n_ms, j, mask, o->allow_unrelated,
		                      err)))
			goto out;
	}
	if (!(res->models = zm_calloc(n_ms, sizeof(*res->models))))
		goto nomem;
	for (j = 0; j < n_ms; j++) {
		int64_t v;

		if ((st = store_state(zoo, &ms[j], us, n_updates, j, &doc, &v,
		                      err)))
			goto out;
		if (!(res->models[j].name = zm_strdup(ms[j].name)))
			goto nomem;
		res->n_models++;
		res->models[j].old_version = ms[j].old_version;
		res->models[j].new_version = v;
		res->models[j].n_updates = ms[j].n_updates;
		res->models[j].samples = ms[j].samples;
	}
	st = zm_zoo_commit(zoo, err);
	goto out;
nomem:
	st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
out:
	if (st != ZM_OK)
		zm_apply_result_release(res);
	zm_doc_release(&doc);
	zm_gran_decision_release(&own);
	free_states(ms, n_ms);
	free(parent);
	free(mask);
	free(us);
	return st;
}
