/*
 * In-memory training sets, hashed held-out splits, the epoch loop and
 * the profile of what a model was trained on.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "conv.h"
#include "dataset.h"
#include "mem.h"
#include "random.h"
#include "trainset.h"

void zm_trainset_init(struct zm_trainset *ts, uint64_t max_bytes)
{
	memset(ts, 0, sizeof(*ts));
	zm_schema_init(&ts->schema);
	ts->scale = 1.0f;
	ts->max_bytes = max_bytes;
}

void zm_trainset_release(struct zm_trainset *ts)
{
	free(ts->x);
	free(ts->labels);
	free(ts->targets);
	free(ts->ids);
	free(ts->train_idx);
	free(ts->val_idx);
	free(ts->slice);
	free(ts->label);
	zm_schema_release(&ts->schema);
	for (size_t i = 0; i < ts->n_strings; i++) {
		free(ts->strings[i].name);
		zm_names_release(&ts->strings[i].levels);
		free(ts->strings[i].codes);
	}
	free(ts->strings);
	zm_names_release(&ts->units);
	zm_trainset_init(ts, ts->max_bytes);
}

static size_t x_elem_size(const struct zm_trainset *ts)
{
	return ts->x_u8 ? 1 : sizeof(float);
}

/* Makes room for rows more rows, doubling so loading is linear. */
static enum zm_status grow(struct zm_trainset *ts, size_t rows,
                           const char *name, struct zm_error *err)
{
	size_t need, cap, xbytes, total, per_row;
	void *x;

	if (!zm_size_add(ts->rows, rows, &need))
		return zm_error_set(err, ZM_ERR_NOMEM, "%s: too many rows", name);
	/* The cap is on the rows held, checked for every document, not only
	 * when the buffer grows. */
	per_row = ts->features * x_elem_size(ts) + sizeof(int64_t) * 2 +
	          ts->n_targets * sizeof(float) +
	          ts->n_strings * sizeof(int64_t);
	if (!zm_size_mul(need, per_row, &total) || total > ts->max_bytes) {
		ts->over_limit = true;
		return zm_error_set(err, ZM_ERR_NOMEM,
		                    "%s: data needs more than the %.0f MiB "
		                    "allowed", name,
		                    (double)ts->max_bytes / 1048576.0);
	}
	if (need <= ts->cap)
		return ZM_OK;
	cap = ts->cap ? ts->cap : 1024;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	if (!zm_size_mul(cap, ts->features * x_elem_size(ts), &xbytes))
		return zm_error_set(err, ZM_ERR_NOMEM, "%s: too large", name);
	x = zm_realloc(ts->x, xbytes);
	if (!x)
		return zm_error_set(err, ZM_ERR_NOMEM, "%s: out of memory", name);
	ts->x = x;
	{
		int64_t *ids = zm_realloc(ts->ids, cap * sizeof(*ids));
		if (!ids)
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		ts->ids = ids;
	}
	if (ts->labels || (!ts->targets && !ts->n_targets)) {
		int64_t *labels = zm_realloc(ts->labels, cap * sizeof(*labels));
		if (!labels)
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		ts->labels = labels;
	}
	if (ts->n_targets) {
		float *t = zm_realloc(ts->targets,
		                      cap * ts->n_targets * sizeof(*t));
		if (!t)
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		ts->targets = t;
	}
	for (size_t k = 0; k < ts->n_strings; k++) {
		int64_t *c = zm_realloc(ts->strings[k].codes,
		                        cap * sizeof(*c));
		if (!c)
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		ts->strings[k].codes = c;
	}
	ts->cap = cap;
	return ZM_OK;
}

/*
 * Keeps the string columns of a document of n rows (after grow): the
 * first document's columns are kept, later documents must have them;
 * each document's levels are mapped to the kept ones by name.
 */
static enum zm_status keep_strings(struct zm_trainset *ts,
                                   const struct zm_doc *doc, size_t n,
                                   const char *where, struct zm_error *err)
{
	struct zm_data_column *cols = NULL;
	size_t ncols = 0, k, c, i, r;
	int64_t *map = NULL;
	enum zm_status st;

	if ((st = zm_data_columns(doc, n, where, &cols, &ncols, err)))
		return st;
	if (!ts->strings_seen) {
		ts->strings_seen = true;
		if (ncols && !(ts->strings = zm_calloc(ncols,
		                                       sizeof(*ts->strings)))) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
			goto out;
		}
		for (c = 0; c < ncols; c++) {
			struct zm_trainset_strings *t = &ts->strings[c];
			zm_names_init(&t->levels);
			ts->n_strings = c + 1;
			if (!(t->name = zm_strdup(cols[c].name)) ||
			    !(t->codes = zm_malloc(ts->cap * sizeof(int64_t)))) {
				st = zm_error_set(err, ZM_ERR_NOMEM,
				                  "out of memory");
				goto out;
			}
		}
	}
	for (k = 0; k < ts->n_strings; k++) {
		struct zm_trainset_strings *t = &ts->strings[k];
		bool same;
		for (c = 0; c < ncols && strcmp(cols[c].name, t->name); c++)
			;
		if (c == ncols) {
			st = zm_error_set(err, ZM_ERR_DATA, "%s: no string "
			                  "column '%s', which the first "
			                  "document has", where, t->name);
			goto out;
		}
		/* CSV imports give every document the same levels. */
		same = t->levels.n == cols[c].n_levels;
		for (i = 0; same && i < t->levels.n; i++)
			same = !strcmp(t->levels.v[i], cols[c].levels[i]);
		if (same) {
			memcpy(t->codes + ts->rows, cols[c].codes,
			       n * sizeof(int64_t));
			continue;
		}
		free(map);
		if (!(map = zm_malloc((cols[c].n_levels + 1) * sizeof(*map)))) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
			goto out;
		}
		for (i = 0; i < cols[c].n_levels; i++) {
			ptrdiff_t at = zm_names_find(&t->levels,
			                             cols[c].levels[i]);
			if (at < 0) {
				at = (ptrdiff_t)t->levels.n;
				if ((st = zm_names_add(&t->levels,
				                       cols[c].levels[i], err)))
					goto out;
			}
			map[i] = at;
		}
		for (r = 0; r < n; r++)
			t->codes[ts->rows + r] = map[cols[c].codes[r]];
	}
out:
	free(map);
	zm_data_columns_free(cols, ncols);
	return st;
}

/* Converts U8 storage to F32 when a later document brings other data. */
static enum zm_status widen_to_f32(struct zm_trainset *ts,
                                   struct zm_error *err)
{
	size_t n = ts->cap * ts->features, i;
	float *x = zm_malloc(n * sizeof(float));
	const uint8_t *src = ts->x;

	if (!x)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (i = 0; i < ts->rows * ts->features; i++)
		x[i] = (float)src[i] * ts->scale;
	free(ts->x);
	ts->x = x;
	ts->x_u8 = false;
	ts->scale = 1.0f;
	return ZM_OK;
}

static enum zm_status add_doc(struct zm_trainset *ts, struct zm_doc *doc,
                              const char *path, size_t docno,
                              struct zm_error *err)
{
	struct zm_schema_note note;
	char where[1100];
	const struct zm_tensor *x = zm_doc_find(doc, "x");
	const struct zm_tensor *y = zm_doc_find(doc, "y");
	const struct zm_tensor *id = zm_doc_find(doc, "id");
	struct zm_tensor xf;
	enum zm_status st;
	size_t n, d, i;
	float scale;
	bool u8;

	zm_tensor_init(&xf);
	st = zm_data_check(doc, path, &n, err);
	if (st != ZM_OK)
		return st;
	if (n == 0)
		return ZM_OK;
	/* Every document's classes and columns by name onto the first's. */
	memset(&note, 0, sizeof(note));
	snprintf(where, sizeof(where), "%s: document %zu", path, docno);
	st = zm_schema_conform_doc(&ts->schema, true, doc, n, where,
	                           "the data's first document", &note, err);
	if (st != ZM_OK)
		return st;
	x = zm_doc_find(doc, "x");
	y = zm_doc_find(doc, "y");
	d = zm_tensor_numel(x) / n;
	if (!zm_data_scale(doc, &scale))
		return zm_error_set(err, ZM_ERR_DATA, "%s: document %zu: bad "
		                    "zm.scale", path, docno);
	if (!y)
		return zm_error_set(err, ZM_ERR_DATA, "%s: document %zu: no "
		                    "labels or targets (tensor 'y')", path, docno);
	u8 = x->dtype == ZM_DTYPE_U8;
	if (ts->rows == 0 && ts->cap == 0) {
		ts->features = d;
		ts->x_u8 = u8;
		ts->scale = u8 ? scale : 1.0f;
		if (y->dtype != ZM_DTYPE_I64)
			ts->n_targets = y->ndim > 1 ? zm_tensor_numel(y) / n : 1;
	} else {
		if (d != ts->features)
			return zm_error_set(err, ZM_ERR_DATA,
			                    "%s: document %zu: rows have %zu "
			                    "features, earlier rows %zu", path,
			                    docno, d, ts->features);
		if ((y->dtype == ZM_DTYPE_I64) != (ts->n_targets == 0) ||
		    (ts->n_targets && zm_tensor_numel(y) / n != ts->n_targets))
			return zm_error_set(err, ZM_ERR_DATA,
			                    "%s: document %zu: labels differ in "
			                    "kind from earlier documents", path,
			                    docno);
		if (ts->x_u8 && (!u8 || scale != ts->scale) &&
		    (st = widen_to_f32(ts, err)) != ZM_OK)
			return st;
	}
	if ((st = grow(ts, n, path, err)) != ZM_OK)
		return st;
	if (ts->x_u8) {
		memcpy((uint8_t *)ts->x + ts->rows * d, x->data, n * d);
	} else {
		st = zm_data_features(doc, &xf, err);
		if (st != ZM_OK)
			return st;
		st = zm_tensor_check_finite(&xf, err);
		if (st != ZM_OK) {
			zm_tensor_release(&xf);
			return zm_error_prefix(err, "%s: document %zu: ", path,
			                       docno);
		}
		memcpy((float *)ts->x + ts->rows * d, xf.data,
		       n * d * sizeof(float));
		zm_tensor_release(&xf);
	}
	if (ts->n_targets) {
		float *dst = ts->targets + ts->rows * ts->n_targets;
		zm_tensor_read_f32(y, 0, n * ts->n_targets, dst);
		for (i = 0; i < n * ts->n_targets; i++)
			if (!isfinite(dst[i]))
				return zm_error_set(err, ZM_ERR_DATA,
				                    "%s: document %zu: non-finite "
				                    "target in row %zu", path,
				                    docno, i / ts->n_targets);
	} else {
		memcpy(ts->labels + ts->rows, y->data, n * sizeof(int64_t));
		for (i = 0; i < n; i++)
			if (ts->labels[ts->rows + i] < 0)
				return zm_error_set(err, ZM_ERR_DATA,
				                    "%s: document %zu: negative "
				                    "label in row %zu", path, docno,
				                    i);
	}
	for (i = 0; i < n; i++)
		ts->ids[ts->rows + i] = id ? ((const int64_t *)id->data)[i] :
		                        (int64_t)(ts->rows + i);
	if ((st = keep_strings(ts, doc, n, where, err)))
		return st;
	ts->rows += n;
	return ZM_OK;
}

enum zm_status zm_trainset_load(struct zm_trainset *ts, const char *path,
                                struct zm_error *err)
{
	struct zm_dataset_options o;
	struct zm_dataset_reader *r = NULL;
	struct zm_doc doc;
	enum zm_status st;
	size_t docno = 0;
	bool eof = false;

	zm_doc_init(&doc);
	zm_dataset_options_init(&o);
	o.kind = ZM_DATASET_STREAM;
	o.path = path;
	st = zm_dataset_open(&r, &o, err);
	while (st == ZM_OK) {
		st = zm_dataset_next(r, &doc, &eof, err);
		if (st != ZM_OK || eof)
			break;
		docno++;
		if (!ts->slice && zm_doc_meta(&doc, "zm.slice") &&
		    !(ts->slice = zm_strdup(zm_doc_meta(&doc, "zm.slice"))))
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		if (st == ZM_OK && !ts->label && zm_doc_meta(&doc, ZM_META_LABEL) &&
		    !(ts->label = zm_strdup(zm_doc_meta(&doc, ZM_META_LABEL))))
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		if (st == ZM_OK)
			st = add_doc(ts, &doc, path, docno, err);
	}
	if (st == ZM_OK && ts->rows == 0)
		st = zm_error_set(err, ZM_ERR_DATA, "%s: no rows", path);
	zm_doc_release(&doc);
	zm_dataset_close(r);
	return st;
}

enum zm_status zm_trainset_split(struct zm_trainset *ts, double val_fraction,
                                 uint64_t seed, struct zm_error *err)
{
	size_t i;

	free(ts->train_idx);
	free(ts->val_idx);
	ts->n_train = ts->n_val = 0;
	ts->train_idx = zm_calloc(ts->rows, sizeof(size_t));
	ts->val_idx = zm_calloc(ts->rows, sizeof(size_t));
	if (!ts->train_idx || !ts->val_idx)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (i = 0; i < ts->rows; i++) {
		uint64_t h = (uint64_t)ts->ids[i] ^ (seed * 0x9e3779b97f4a7c15u);
		double u = (double)(zm_splitmix64(&h) >> 11) * 0x1.0p-53;
		if (u < val_fraction)
			ts->val_idx[ts->n_val++] = i;
		else
			ts->train_idx[ts->n_train++] = i;
	}
	if (ts->n_train == 0)
		return zm_error_set(err, ZM_ERR_DATA, "no rows left for "
		                    "training after holding out %.3g",
		                    val_fraction);
	return ZM_OK;
}

void zm_trainset_gather(const struct zm_trainset *ts, const size_t *idx,
                        size_t n, float *x, void *y)
{
	size_t d = ts->features, i, j;

	if (ts->x_u8) {
		const uint8_t *src = ts->x;
		for (i = 0; i < n; i++) {
			const uint8_t *row = src + idx[i] * d;
			float *out = x + i * d;
			for (j = 0; j < d; j++)
				out[j] = (float)row[j] * ts->scale;
		}
	} else {
		zm_gather_rows(ts->x, d, idx, n, x);
	}
	if (!y)
		return;
	if (ts->n_targets) {
		float *t = y;
		for (i = 0; i < n; i++)
			memcpy(t + i * ts->n_targets,
			       ts->targets + idx[i] * ts->n_targets,
			       ts->n_targets * sizeof(float));
	} else {
		zm_gather_labels(ts->labels, idx, n, y);
	}
}

/* Keeps columns perm[0..m) of every row of x, in that order. */
static enum zm_status permute_columns(struct zm_trainset *ts,
                                      const size_t *perm, size_t m,
                                      struct zm_error *err)
{
	size_t es = x_elem_size(ts), d = ts->features, bytes, i, j;
	unsigned char *nx;
	const unsigned char *src = ts->x;

	if (!zm_size_mul(ts->cap ? ts->cap : 1, m * es, &bytes) ||
	    !(nx = zm_malloc(bytes ? bytes : 1)))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (i = 0; i < ts->rows; i++)
		for (j = 0; j < m; j++)
			memcpy(nx + (i * m + j) * es, src + (i * d + perm[j]) * es,
			       es);
	free(ts->x);
	ts->x = nx;
	ts->features = m;
	return ZM_OK;
}

/*
 * Appends to x the units of model->arch's one_hot layers that it lacks
 * (by name: another model may have added them), from the kept string
 * columns; checks every row's level against each layer.  A model that
 * names no features gets the data's other columns and its own units.
 */
static enum zm_status conform_onehot(struct zm_trainset *ts,
                                     struct zm_schema *model, bool *adopted,
                                     const char *where, struct zm_error *err)
{
	const struct zm_arch *a = model->arch;
	struct zm_names mine;
	float *units = NULL, *nx = NULL;
	size_t l, k, c, r, u, d;
	char name[600];
	enum zm_status st = ZM_OK;

	zm_names_init(&mine);
	if (!ts->schema.features.known)
		return zm_error_set(err, ZM_ERR_DATA, "%s: one_hot layers "
		                    "need named columns (zm.columns)", where);
	for (l = 0; l < a->n_layers; l++) {
		const struct zm_layer_spec *s = &a->layers[l];
		if (s->type != ZM_LAYER_ONE_HOT)
			continue;
		for (c = 0; c < ts->n_strings &&
		            strcmp(ts->strings[c].name, s->column); c++)
			;
		if (c == ts->n_strings) {
			st = zm_error_set(err, ZM_ERR_DATA, "%s: no string "
			                  "column '%s' (one_hot layer '%s' makes "
			                  "its units from it)", where, s->column,
			                  s->name);
			goto out;
		}
		free(units);
		if (!(units = zm_malloc((ts->rows * s->n_levels + 1) *
		                        sizeof(float)))) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
			goto out;
		}
		if ((st = zm_onehot_fill(s, ts->strings[c].levels.v,
		                         ts->strings[c].levels.n,
		                         ts->strings[c].codes, ts->rows,
		                         ts->ids, units, s->n_levels, where,
		                         err)))
			goto out;
		for (k = 0; k < s->n_levels; k++) {
			zm_onehot_unit_name(s->column, s->levels[k], name,
			                    sizeof(name));
			if ((st = zm_names_add(&mine, name, err)))
				goto out;
			if (zm_names_find(&ts->schema.features, name) >= 0)
				continue;
			/* A new column: widen x by one, filled from units. */
			if (ts->x_u8 && (st = widen_to_f32(ts, err)))
				goto out;
			d = ts->features;
			if (!(nx = zm_malloc((ts->cap ? ts->cap : 1) * (d + 1) *
			                     sizeof(float)))) {
				st = zm_error_set(err, ZM_ERR_NOMEM,
				                  "out of memory");
				goto out;
			}
			for (r = 0; r < ts->rows; r++) {
				memcpy(nx + r * (d + 1), (float *)ts->x + r * d,
				       d * sizeof(float));
				nx[r * (d + 1) + d] = units[r * s->n_levels + k];
			}
			free(ts->x);
			ts->x = nx;
			nx = NULL;
			ts->features = d + 1;
			if ((st = zm_names_add(&ts->schema.features, name, err)) ||
			    (st = zm_names_add(&ts->units, name, err)))
				goto out;
		}
	}
	if (!model->features.known) {
		/* The data's columns but units, then this model's units. */
		for (u = 0; u < ts->schema.features.n; u++) {
			const char *f = ts->schema.features.v[u];
			if (zm_names_find(&ts->units, f) < 0 &&
			    (st = zm_names_add(&model->features, f, err)))
				goto out;
		}
		for (u = 0; u < mine.n; u++)
			if ((st = zm_names_add(&model->features, mine.v[u], err)))
				goto out;
		*adopted = true;
	}
out:
	free(units);
	free(nx);
	zm_names_release(&mine);
	return st;
}

enum zm_status zm_trainset_conform(struct zm_trainset *ts,
                                   struct zm_schema *model, size_t outputs,
                                   const char *where, const char *what,
                                   bool *adopted,
                                   struct zm_schema_note *note,
                                   struct zm_error *err)
{
	int64_t *map = NULL, max = -1;
	size_t *perm = NULL, nmap, extra, i;
	const char *first_extra;
	bool identity;
	enum zm_status st = ZM_OK;

	*adopted = false;
	if (ts->labels && !model->classes.known) {
		/* First training: the model takes the data's class names. */
		if (ts->schema.classes.known) {
			if (ts->schema.classes.n > outputs)
				return zm_error_set(err, ZM_ERR_DATA, "%s: the data "
				                    "has %zu classes, %s has %zu "
				                    "outputs", where,
				                    ts->schema.classes.n, what,
				                    outputs);
			st = zm_names_copy(&model->classes, &ts->schema.classes,
			                   err);
		} else {
			char num[32];
			for (i = 0; st == ZM_OK && i < outputs; i++) {
				snprintf(num, sizeof(num), "%zu", i);
				st = zm_names_add(&model->classes, num, err);
			}
		}
		*adopted = true;
	} else if (ts->labels) {
		for (i = 0; i < ts->rows; i++)
			if (ts->labels[i] > max)
				max = ts->labels[i];
		st = zm_schema_class_map(&ts->schema.classes, &model->classes,
		                         max, false, &map, &nmap, where,
		                         err);
		if (st == ZM_OK)
			st = zm_schema_map_labels(ts->labels, ts->rows, map, nmap,
			                          &ts->schema.classes,
			                          &model->classes, where,
			                          what, err);
	}
	if (st == ZM_OK && ts->labels)
		st = zm_names_copy(&ts->schema.classes, &model->classes, err);
	if (st == ZM_OK && model->arch && zm_arch_one_hot_units(model->arch))
		st = conform_onehot(ts, model, adopted, where, err);
	if (st != ZM_OK)
		goto out;
	if (!model->features.known) {
		if (ts->schema.features.known) {
			st = zm_names_copy(&model->features, &ts->schema.features,
			                   err);
			*adopted = true;
		}
		goto out;
	}
	if (!ts->schema.features.known) {
		note->by_position = true;
		goto out;
	}
	st = zm_schema_feature_map(&ts->schema.features, &model->features,
	                           &perm, &identity, &extra, &first_extra,
	                           where, what, err);
	if (st != ZM_OK || identity)
		goto out;
	if (extra)
		snprintf(note->first_extra, sizeof(note->first_extra), "%s",
		         first_extra);
	note->extra_columns = extra;
	note->reordered = true;
	if ((st = permute_columns(ts, perm, model->features.n, err)) == ZM_OK)
		st = zm_names_copy(&ts->schema.features, &model->features, err);
out:
	free(map);
	free(perm);
	return st;
}

void zm_fit_config_default(struct zm_fit_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	zm_optim_config_default(&cfg->optim, ZM_OPTIM_SGD);
	cfg->epochs = 0;            /* the stopping rule */
	cfg->batch_size = 128;
	cfg->step_scale = 1.0f;
	cfg->log_every = 50;
}

/* Loss and accuracy of model over rows idx[0..n) in batches. */
static enum zm_status evaluate_rows(const struct zm_model *model,
                                    struct zm_workspace *ws,
                                    const struct zm_trainset *ts,
                                    const size_t *idx, size_t n, float *xb,
                                    void *yb, struct zm_batch_stats *stats,
                                    struct zm_error *err)
{
	size_t i, b = ws->max_batch;
	enum zm_status st;

	memset(stats, 0, sizeof(*stats));
	for (i = 0; i < n; i += b) {
		size_t m = n - i < b ? n - i : b;
		zm_trainset_gather(ts, idx + i, m, xb, yb);
		st = zm_model_evaluate(model, ws, xb, yb, m, stats, err);
		if (st != ZM_OK)
			return st;
	}
	return ZM_OK;
}

static enum zm_status check_labels(const struct zm_model *model,
                                   const struct zm_trainset *ts,
                                   struct zm_error *err)
{
	const struct zm_arch *a = model->arch;
	size_t i;

	if (ts->features != a->input_features)
		return zm_error_set(err, ZM_ERR_DATA, "the data has %zu "
		                    "features per row, the model expects %zu",
		                    ts->features, a->input_features);
	if (a->loss == ZM_LOSS_CROSS_ENTROPY) {
		if (!ts->labels)
			return zm_error_set(err, ZM_ERR_DATA, "the model is a "
			                    "classifier, the data has targets, "
			                    "not class ids");
		for (i = 0; i < ts->rows; i++)
			if (ts->labels[i] >= (int64_t)a->output_features)
				return zm_error_set(err, ZM_ERR_DATA,
				                    "row %zu: label %lld out of "
				                    "range for %zu classes", i,
				                    (long long)ts->labels[i],
				                    a->output_features);
	} else if (ts->n_targets != a->output_features) {
		return zm_error_set(err, ZM_ERR_DATA, "the model has %zu "
		                    "outputs, the data %zu targets per row",
		                    a->output_features, ts->n_targets);
	}
	return ZM_OK;
}

/*
 * Fits every standardize layer of model whose inv_std is all zero (a new
 * model: zoomerge-arch(5)) to the training rows of ts: the mean and the
 * population standard deviation of each feature, in two passes in double;
 * a feature with no spread gets inv_std 1.  Fitted layers stay as they are.
 */
static enum zm_status fit_standardize(struct zm_model *model,
                                      const struct zm_trainset *ts,
                                      struct zm_error *err)
{
	size_t l, d = ts->features, i, j, b = 512, pass;
	double *mean = NULL, *m2 = NULL;
	float *xb = NULL;
	enum zm_status st = ZM_OK;

	for (l = 0; l < model->arch->n_layers; l++) {
		struct zm_layer *ly = &model->layers[l];
		float *mu = ly->weight.data, *inv = ly->bias.data;
		bool unfitted = true;
		if (ly->spec->type != ZM_LAYER_STANDARDIZE)
			continue;
		for (j = 0; j < d && unfitted; j++)
			unfitted = inv[j] == 0.0f;
		if (!unfitted || ts->n_train == 0)
			continue;
		ZM_ASSERT(ly->spec->in_features == d);
		if (!mean && (!(mean = zm_calloc(d, sizeof(*mean))) ||
		              !(m2 = zm_calloc(d, sizeof(*m2))) ||
		              !(xb = zm_malloc(b * d * sizeof(*xb))))) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
			goto out;
		}
		memset(mean, 0, d * sizeof(*mean));
		memset(m2, 0, d * sizeof(*m2));
		for (pass = 0; pass < 2; pass++) {
			for (i = 0; i < ts->n_train; i += b) {
				size_t m = ts->n_train - i < b ? ts->n_train - i : b, r;
				zm_trainset_gather(ts, ts->train_idx + i, m, xb, NULL);
				for (r = 0; r < m; r++)
					for (j = 0; j < d; j++) {
						double v = xb[r * d + j];
						if (pass == 0)
							mean[j] += v;
						else
							m2[j] += (v - mean[j]) *
							         (v - mean[j]);
					}
			}
			for (j = 0; pass == 0 && j < d; j++)
				mean[j] /= (double)ts->n_train;
		}
		for (j = 0; j < d; j++) {
			double sd = sqrt(m2[j] / (double)ts->n_train);
			double iv = sd > 0 ? 1.0 / sd : 1.0;
			mu[j] = (float)mean[j];
			inv[j] = isfinite((float)iv) && iv > 0 ? (float)iv : 1.0f;
		}
	}
out:
	free(mean);
	free(m2);
	free(xb);
	return st;
}

/* Floats of the parameters (running statistics included) of model. */
static size_t param_floats(const struct zm_model *model)
{
	size_t l, n = 0;

	for (l = 0; l < model->arch->n_layers; l++)
		n += model->arch->layers[l].n_weight +
		     model->arch->layers[l].n_bias;
	return n;
}

/* Copies model's parameters into buf (to_model false) or back. */
static void params_copy(struct zm_model *model, float *buf, bool to_model)
{
	size_t l, k, off = 0;

	for (l = 0; l < model->arch->n_layers; l++) {
		struct zm_tensor *t[2] = { &model->layers[l].weight,
		                           &model->layers[l].bias };
		const struct zm_layer_spec *s = model->layers[l].spec;
		for (k = 0; k < 2; k++) {
			size_t n = k ? s->n_bias : s->n_weight;
			if (!n)
				continue;
			if (to_model)
				memcpy(t[k]->data, buf + off, n * sizeof(float));
			else
				memcpy(buf + off, t[k]->data, n * sizeof(float));
			off += n;
		}
	}
}

/* The epochs of a run: cfg's, or the cap of the stopping rule. */
static size_t max_epochs(const struct zm_fit_config *cfg,
                         const struct zm_trainset *ts)
{
	size_t e;

	if (cfg->epochs)
		return cfg->epochs;
	if (ts->n_val == 0)
		return 1;
	e = ZM_FIT_AUTO_ROWS / ts->n_train;
	return e < 1 ? 1 : e > ZM_FIT_AUTO_MAX_EPOCHS ? ZM_FIT_AUTO_MAX_EPOCHS
	                                               : e;
}

enum zm_status zm_fit(struct zm_model *model, const struct zm_trainset *ts,
                      const struct zm_fit_config *cfg, zm_fit_callback cb,
                      void *ctx, struct zm_fit_report *last,
                      struct zm_error *err)
{
	struct zm_workspace *ws = NULL, *eval_ws = NULL;
	struct zm_optim *opt = NULL;
	struct zm_optim_config ocfg = cfg->optim;
	struct zm_rng rng;
	size_t *order = NULL, b = cfg->batch_size, ydim, epoch;
	size_t eval_batch = 1024;
	float *xb = NULL;
	void *yb = NULL;
	enum zm_status st;
	bool classification = model->arch->loss == ZM_LOSS_CROSS_ENTROPY;
	struct zm_fit_report rep, best_rep;
	/* The stopping rule keeps the best epoch's parameters in best. */
	bool stopping = cfg->epochs == 0 && ts->n_val > 0;
	float *best = NULL;
	size_t n_epochs = max_epochs(cfg, ts);

	memset(&rep, 0, sizeof(rep));
	memset(&best_rep, 0, sizeof(best_rep));
	if ((st = check_labels(model, ts, err)) != ZM_OK)
		return st;
	if (b == 0 || ts->n_train == 0)
		return zm_error_set(err, ZM_ERR_USAGE, "nothing to train on");
	if (ocfg.schedule == ZM_LR_COSINE && ocfg.total_steps == 0)
		ocfg.total_steps = n_epochs * ((ts->n_train + b - 1) / b);
	if ((st = fit_standardize(model, ts, err)) != ZM_OK)
		return st;
	ydim = classification ? sizeof(int64_t) : ts->n_targets * sizeof(float);
	if (eval_batch < b)
		eval_batch = b;
	if ((st = zm_workspace_new(model->arch, b, true, &ws, err)) ||
	    (st = zm_workspace_new(model->arch, eval_batch, false, &eval_ws,
	                           err)) ||
	    (st = zm_optim_new(model->arch, &ocfg, &opt, err)))
		goto out;
	order = zm_malloc(ts->n_train * sizeof(*order));
	xb = zm_malloc(eval_batch * ts->features * sizeof(float));
	yb = zm_malloc(eval_batch * ydim);
	if (stopping)
		best = zm_malloc((param_floats(model) + 1) * sizeof(float));
	if (!order || !xb || !yb || (stopping && !best)) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		goto out;
	}
	memcpy(order, ts->train_idx, ts->n_train * sizeof(*order));
	zm_rng_seed(&rng, cfg->seed);
	/* Dropout masks: their own stream, from the same seed. */
	zm_rng_seed(&ws->rng, cfg->seed ^ 0x64726f706f7574ull);
	rep.classification = classification;
	rep.train_rows = ts->n_train;
	rep.val_rows = ts->n_val;
	rep.max_epochs = n_epochs;
	for (epoch = 1; epoch <= n_epochs; epoch++) {
		struct zm_batch_stats es = { 0, 0, 0 }, ls = { 0, 0, 0 };
		double t0 = zm_clock_seconds();
		size_t i;

		zm_rng_shuffle(&rng, order, ts->n_train);
		for (i = 0; i < ts->n_train; i += b) {
			size_t m = ts->n_train - i < b ? ts->n_train - i : b;
			struct zm_batch_stats bs = { 0, 0, 0 };
			zm_trainset_gather(ts, order + i, m, xb, yb);
			st = zm_train_step(model, opt, ws, xb, yb, m,
			                   cfg->step_scale, &bs, err);
			if (st != ZM_OK) {
				zm_error_prefix(err, "epoch %zu, step %zu: ",
				                epoch, rep.step + 1);
				goto out;
			}
			es.loss_sum += bs.loss_sum;
			es.correct += bs.correct;
			es.rows += bs.rows;
			ls.loss_sum += bs.loss_sum;
			ls.rows += bs.rows;
			rep.step++;
			if (cb && cfg->log_every && rep.step % cfg->log_every == 0) {
				rep.epoch_end = false;
				rep.epoch = epoch;
				rep.lr = zm_optim_lr(opt);
				rep.loss = ls.loss_sum / (double)ls.rows;
				cb(&rep, ctx);
				memset(&ls, 0, sizeof(ls));
			}
		}
		rep.samples_per_s = (double)es.rows / (zm_clock_seconds() - t0);
		rep.epoch_end = true;
		rep.epoch = epoch;
		rep.lr = zm_optim_lr(opt);
		rep.train_loss = es.loss_sum / (double)es.rows;
		rep.train_accuracy = (double)es.correct / (double)es.rows;
		rep.loss = rep.train_loss;
		if (ts->n_val) {
			struct zm_batch_stats vs;
			st = evaluate_rows(model, eval_ws, ts, ts->val_idx,
			                   ts->n_val, xb, yb, &vs, err);
			if (st != ZM_OK)
				goto out;
			rep.val_loss = vs.loss_sum / (double)vs.rows;
			rep.val_accuracy = (double)vs.correct / (double)vs.rows;
		}
		if (cb)
			cb(&rep, ctx);
		rep.epochs_run = epoch;
		if (!stopping)
			continue;
		if (best_rep.epoch == 0 ||
		    rep.val_loss < best_rep.val_loss * (1.0 - 1e-4)) {
			best_rep = rep;
			params_copy(model, best, false);
		} else if (epoch - best_rep.epoch >= ZM_FIT_AUTO_PATIENCE) {
			break;
		}
	}
	if (stopping && best_rep.epoch != rep.epochs_run) {
		params_copy(model, best, true);
		best_rep.epochs_run = rep.epochs_run;
		rep = best_rep;
	}
	if (last)
		*last = rep;
out:
	free(best);
	free(order);
	free(xb);
	free(yb);
	zm_optim_free(opt);
	zm_workspace_free(ws);
	zm_workspace_free(eval_ws);
	return st;
}

enum zm_status zm_trainset_evaluate(const struct zm_model *model,
                                    const struct zm_trainset *ts,
                                    struct zm_batch_stats *stats,
                                    struct zm_error *err)
{
	struct zm_workspace *ws = NULL;
	size_t b = 1024, ydim;
	float *xb = NULL;
	void *yb = NULL;
	enum zm_status st;

	memset(stats, 0, sizeof(*stats));
	if (ts->n_val == 0)
		return ZM_OK;
	if ((st = check_labels(model, ts, err)) != ZM_OK)
		return st;
	ydim = ts->n_targets ? ts->n_targets * sizeof(float) : sizeof(int64_t);
	if ((st = zm_workspace_new(model->arch, b, false, &ws, err)))
		return st;
	xb = zm_malloc(b * ts->features * sizeof(float));
	yb = zm_malloc(b * ydim);
	if (!xb || !yb)
		st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	else
		st = evaluate_rows(model, ws, ts, ts->val_idx, ts->n_val, xb,
		                   yb, stats, err);
	free(xb);
	free(yb);
	zm_workspace_free(ws);
	return st;
}

/* The input's components (zm_profile_cluster) from up to CLUSTER_SAMPLE
 * training rows spread evenly over them; a profile that already has
 * input rows keeps its own. */
#define CLUSTER_SAMPLE 8192
static enum zm_status cluster_rows(const struct zm_trainset *ts,
                                   struct zm_profile *p,
                                   struct zm_error *err)
{
	const struct zm_profile_entry *in = zm_profile_find(p, ZM_PROFILE_INPUT);
	size_t n = ts->n_train < CLUSTER_SAMPLE ? ts->n_train : CLUSTER_SAMPLE;
	size_t *idx, i;
	float *x;
	enum zm_status st;

	if ((in && in->count > 0) || n == 0 ||
	    ts->features > ZM_PROFILE_COMPONENT_MAX_DIM)
		return ZM_OK;
	idx = zm_malloc(n * sizeof(size_t));
	x = zm_malloc(n * ts->features * sizeof(float));
	if (!idx || !x) {
		free(idx);
		free(x);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	for (i = 0; i < n; i++)
		idx[i] = ts->train_idx[(size_t)((double)i * ts->n_train / n)];
	zm_trainset_gather(ts, idx, n, x, NULL);
	st = zm_profile_cluster(p, x, n, ts->features, err);
	free(idx);
	free(x);
	return st;
}

enum zm_status zm_trainset_profile(const struct zm_trainset *ts,
                                   const struct zm_model *model,
                                   struct zm_profile *p,
                                   struct zm_error *err)
{
	const struct zm_arch *a = model->arch;
	struct zm_workspace *ws = NULL;
	size_t b = 1024, i, l;
	float *xb = NULL, *tb = NULL;
	int64_t *yb = NULL;
	enum zm_status st;
	bool spatial = false;

	if ((st = zm_workspace_new(a, b, false, &ws, err)) != ZM_OK)
		return st;
	xb = zm_malloc(b * ts->features * sizeof(float));
	yb = zm_malloc(b * sizeof(int64_t));
	for (l = 1; l < a->n_layers; l++)
		if (a->layers[l].in_ndim == 3)
			spatial = true;
	if (spatial)
		tb = zm_malloc(b * a->max_features * sizeof(float));
	if (!xb || !yb || (spatial && !tb)) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((st = cluster_rows(ts, p, err)) != ZM_OK)
		goto out;
	for (i = 0; i < ts->n_train; i += b) {
		size_t m = ts->n_train - i < b ? ts->n_train - i : b;
		zm_trainset_gather(ts, ts->train_idx + i, m, xb, NULL);
		st = zm_profile_add_batch(p, ZM_PROFILE_INPUT, xb, m,
		                          ts->features, err);
		if (st != ZM_OK)
			goto out;
		zm_model_forward(model, ws, xb, m);
		for (l = 1; l < a->n_layers; l++) {
			const struct zm_layer_spec *s = &a->layers[l];
			if (a->layers[l - 1].type == ZM_LAYER_FLATTEN && l > 1 &&
			    a->layers[l - 1].in_ndim != 3)
				continue;	/* same values as the layer before */
			if (s->in_ndim == 3) {
				/* Per channel, over batch and space (conv.h). */
				size_t c = zm_layer_profile_dim(s);
				size_t hw = s->in_features / c;
				zm_channel_rows(ws->out[l - 1], m, c, hw, tb);
				st = zm_profile_add_batch(p, s->name, tb, m * hw,
				                          c, err);
			} else {
				st = zm_profile_add_batch(p, s->name,
				                          ws->out[l - 1], m,
				                          s->in_features, err);
			}
			if (st != ZM_OK)
				goto out;
		}
		if (ts->labels) {
			zm_gather_labels(ts->labels, ts->train_idx + i, m, yb);
			st = zm_profile_add_labels(p, yb, m, err);
			if (st != ZM_OK)
				goto out;
		}
	}
out:
	free(xb);
	free(yb);
	free(tb);
	zm_workspace_free(ws);
	return st;
}
