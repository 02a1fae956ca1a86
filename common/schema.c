/*
 * Class and feature names of models and data, and the maps that match
 * labels and columns by name.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "dataset.h"
#include "json.h"
#include "mem.h"
#include "model.h"
#include "schema.h"

static const char *const role_names[] = {
	[ZM_ROLE_EXPERT] = "expert",
	[ZM_ROLE_ROUTER] = "router",
	[ZM_ROLE_BASE] = "base",
};

const char *zm_role_name(enum zm_role r)
{
	return role_names[r];
}

bool zm_role_parse(const char *s, enum zm_role *out)
{
	size_t i;

	for (i = 0; i < sizeof(role_names) / sizeof(role_names[0]); i++)
		if (strcmp(s, role_names[i]) == 0) {
			*out = (enum zm_role)i;
			return true;
		}
	return false;
}

bool zm_role_of_doc(const struct zm_doc *doc, enum zm_role *out)
{
	const char *v = zm_doc_meta(doc, ZM_META_ROLE);

	*out = ZM_ROLE_EXPERT;
	return !v || zm_role_parse(v, out);
}

/* ---- name lists ---- */

void zm_names_init(struct zm_names *s)
{
	memset(s, 0, sizeof(*s));
}

void zm_names_release(struct zm_names *s)
{
	zm_config_strings_free(s->v, s->n);
	zm_names_init(s);
}

enum zm_status zm_names_add(struct zm_names *s, const char *name,
                            struct zm_error *err)
{
	char **v;
	char *copy = zm_strdup(name);

	if (!copy || !(v = zm_realloc(s->v, (s->n + 1) * sizeof(*v)))) {
		free(copy);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	v[s->n++] = copy;
	s->v = v;
	s->known = true;
	return ZM_OK;
}

enum zm_status zm_names_copy(struct zm_names *dst, const struct zm_names *src,
                             struct zm_error *err)
{
	enum zm_status st = ZM_OK;
	size_t i;

	zm_names_release(dst);
	for (i = 0; st == ZM_OK && i < src->n; i++)
		st = zm_names_add(dst, src->v[i], err);
	dst->known = src->known;
	return st;
}

ptrdiff_t zm_names_find(const struct zm_names *s, const char *name)
{
	size_t i;

	for (i = 0; i < s->n; i++)
		if (strcmp(s->v[i], name) == 0)
			return (ptrdiff_t)i;
	return -1;
}

bool zm_names_equal(const struct zm_names *a, const struct zm_names *b)
{
	size_t i;

	if (!a->known || !b->known || a->n != b->n)
		return false;
	for (i = 0; i < a->n; i++)
		if (strcmp(a->v[i], b->v[i]) != 0)
			return false;
	return true;
}

void zm_names_list(const struct zm_names *s, size_t max, char *buf,
                   size_t size)
{
	size_t i, len = strlen(buf);

	for (i = 0; i < s->n && i < max && len < size; i++)
		len += (size_t)snprintf(buf + len, size - len, "%s%s",
		                        i ? ", " : "", s->v[i]);
	if (s->n > max && len < size)
		snprintf(buf + len, size - len, ", ...");
}

enum zm_status zm_names_from_meta(struct zm_names *s, const struct zm_doc *doc,
                                  const char *key, const char *where,
                                  struct zm_error *err)
{
	const char *json = zm_doc_meta(doc, key);
	size_t i;

	zm_names_release(s);
	if (!json)
		return ZM_OK;
	if (!zm_config_string_list(json, &s->v, &s->n))
		return zm_error_set(err, ZM_ERR_DATA, "%s: metadata %s is not a "
		                    "JSON list of names", where, key);
	s->known = true;
	/* A name twice would make matching by name ambiguous. */
	for (i = 0; i < s->n; i++)
		if (zm_names_find(s, s->v[i]) != (ptrdiff_t)i)
			return zm_error_set(err, ZM_ERR_DATA, "%s: metadata %s "
			                    "names '%s' twice", where, key,
			                    s->v[i]);
	return ZM_OK;
}

enum zm_status zm_names_to_meta(const struct zm_names *s, struct zm_doc *doc,
                                const char *key, struct zm_error *err)
{
	struct zm_buf b;
	enum zm_status st;
	size_t i;

	if (!s->known)
		return ZM_OK;
	zm_buf_init(&b);
	zm_buf_puts(&b, "[");
	for (i = 0; i < s->n; i++) {
		if (i)
			zm_buf_puts(&b, ",");
		zm_json_string(&b, s->v[i], strlen(s->v[i]));
	}
	zm_buf_puts(&b, "]");
	st = b.failed ? zm_error_set(err, ZM_ERR_NOMEM, "out of memory")
	              : zm_doc_set_meta(doc, key, b.data, err);
	zm_buf_release(&b);
	return st;
}

/* ---- schemas ---- */

void zm_schema_init(struct zm_schema *s)
{
	zm_names_init(&s->classes);
	zm_names_init(&s->features);
	s->arch = NULL;
}

void zm_schema_release(struct zm_schema *s)
{
	zm_names_release(&s->classes);
	zm_names_release(&s->features);
}

enum zm_status zm_schema_copy(struct zm_schema *dst,
                              const struct zm_schema *src,
                              struct zm_error *err)
{
	enum zm_status st = zm_names_copy(&dst->classes, &src->classes, err);

	dst->arch = src->arch;
	return st ? st : zm_names_copy(&dst->features, &src->features, err);
}

enum zm_status zm_schema_of_model_doc(struct zm_schema *s,
                                      const struct zm_doc *doc,
                                      const char *where,
                                      struct zm_error *err)
{
	enum zm_status st = zm_names_from_meta(&s->classes, doc,
	                                       ZM_META_CLASSES, where, err);

	return st ? st : zm_names_from_meta(&s->features, doc,
	                                    ZM_META_FEATURES, where, err);
}

enum zm_status zm_schema_of_data_doc(struct zm_schema *s,
                                     const struct zm_doc *doc,
                                     const char *where,
                                     struct zm_error *err)
{
	enum zm_status st = zm_names_from_meta(&s->classes, doc,
	                                       ZM_META_CLASSES, where, err);

	return st ? st : zm_names_from_meta(&s->features, doc,
	                                    ZM_META_COLUMNS, where, err);
}

enum zm_status zm_schema_to_model_doc(const struct zm_schema *s,
                                      struct zm_doc *doc,
                                      struct zm_error *err)
{
	enum zm_status st = zm_names_to_meta(&s->classes, doc,
	                                     ZM_META_CLASSES, err);

	return st ? st : zm_names_to_meta(&s->features, doc,
	                                  ZM_META_FEATURES, err);
}

enum zm_status zm_schema_adopt(struct zm_doc *model, const struct zm_doc *from,
                               const char *where, struct zm_error *err)
{
	static const char *const keys[] = { ZM_META_CLASSES, ZM_META_FEATURES,
	                                    ZM_META_ROLE };
	struct zm_names a, b;
	enum zm_status st = ZM_OK;
	size_t i;

	zm_names_init(&a);
	zm_names_init(&b);
	for (i = 0; st == ZM_OK && i < 3; i++) {
		const char *mine = zm_doc_meta(model, keys[i]);
		const char *theirs = zm_doc_meta(from, keys[i]);

		if (!theirs)
			continue;
		if (!mine) {
			st = zm_doc_set_meta(model, keys[i], theirs, err);
			continue;
		}
		if (i == 2) {
			if (strcmp(mine, theirs) != 0)
				st = zm_error_set(err, ZM_ERR_DATA, "%s: %s '%s', "
				                  "the model's '%s'", where,
				                  keys[i], theirs, mine);
			continue;
		}
		if ((st = zm_names_from_meta(&a, model, keys[i], "the model",
		                             err)) ||
		    (st = zm_names_from_meta(&b, from, keys[i], where, err)))
			break;
		if (!zm_names_equal(&a, &b))
			st = zm_error_set(err, ZM_ERR_DATA, "%s: %s %s differ from "
			                  "the model's (trained on other data)",
			                  where, keys[i], theirs);
	}
	zm_names_release(&a);
	zm_names_release(&b);
	return st;
}

/* ---- maps ---- */

/* The name of data label i: its entry in data, or the number itself. */
static const char *label_name(const struct zm_names *data, int64_t i,
                              char *buf, size_t size)
{
	if (data->known && i >= 0 && (size_t)i < data->n)
		return data->v[i];
	snprintf(buf, size, "%" PRId64, i);
	return buf;
}

enum zm_status zm_schema_class_map(const struct zm_names *data,
                                   struct zm_names *target, int64_t max_label,
                                   bool extend, int64_t **map, size_t *n,
                                   const char *where, struct zm_error *err)
{
	char buf[32];
	enum zm_status st;
	size_t i;

	*map = NULL;
	*n = 0;
	if (max_label >= ZM_SCHEMA_MAX_CLASSES)
		return zm_error_set(err, ZM_ERR_DATA, "%s: label %" PRId64 " is "
		                    "over the %d classes zoomerge allows", where,
		                    max_label, ZM_SCHEMA_MAX_CLASSES);
	*n = data->known ? data->n : (size_t)(max_label < 0 ? 0 : max_label + 1);
	if (!(*map = zm_calloc(*n ? *n : 1, sizeof(**map))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	if (!target->known && !(extend && data->known)) {
		/* Nothing names the target's classes: position it is. */
		for (i = 0; i < *n; i++)
			(*map)[i] = (int64_t)i;
		return ZM_OK;
	}
	for (i = 0; i < *n; i++) {
		const char *name = label_name(data, (int64_t)i, buf, sizeof(buf));
		ptrdiff_t t = zm_names_find(target, name);

		if (t < 0 && extend) {
			if ((st = zm_names_add(target, name, err)) != ZM_OK)
				return st;
			t = (ptrdiff_t)target->n - 1;
		}
		(*map)[i] = t;
	}
	return ZM_OK;
}

enum zm_status zm_schema_map_labels(int64_t *y, size_t count,
                                    const int64_t *map, size_t n,
                                    const struct zm_names *data,
                                    const struct zm_names *target,
                                    const char *where, const char *what,
                                    struct zm_error *err)
{
	char buf[32], classes[512];
	size_t i;

	for (i = 0; i < count; i++) {
		if (y[i] < 0)
			continue;
		if ((uint64_t)y[i] < n && map[y[i]] >= 0) {
			y[i] = map[y[i]];
			continue;
		}
		classes[0] = '\0';
		zm_names_list(target, 12, classes, sizeof(classes));
		return zm_error_set(err, ZM_ERR_DATA, "%s: row %zu: label '%s' "
		                    "is not a class of %s (classes: %s)", where,
		                    i, label_name(data, y[i], buf, sizeof(buf)),
		                    what, target->known ? classes : "unknown");
	}
	return ZM_OK;
}

enum zm_status zm_schema_feature_map(const struct zm_names *data,
                                     const struct zm_names *target,
                                     size_t **perm, bool *identity,
                                     size_t *extra, const char **first_extra,
                                     const char *where, const char *what,
                                     struct zm_error *err)
{
	size_t j, used = 0;

	*perm = NULL;
	*identity = true;
	*extra = 0;
	*first_extra = NULL;
	if (!data->known || !target->known)
		return ZM_OK;
	if (!(*perm = zm_calloc(target->n ? target->n : 1, sizeof(**perm))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (j = 0; j < target->n; j++) {
		ptrdiff_t c = zm_names_find(data, target->v[j]);
		if (c < 0) {
			free(*perm);
			*perm = NULL;
			return zm_error_set(err, ZM_ERR_DATA, "%s: no column '%s' "
			                    "(%s takes %zu named features)", where,
			                    target->v[j], what, target->n);
		}
		(*perm)[j] = (size_t)c;
		if ((size_t)c != j)
			*identity = false;
		used++;
	}
	if (data->n != target->n)
		*identity = false;
	*extra = data->n - used;
	for (j = 0; *extra && j < data->n; j++)
		if (zm_names_find(target, data->v[j]) < 0) {
			*first_extra = data->v[j];
			break;
		}
	return ZM_OK;
}

/* x becomes [n, target features] with columns picked by perm. */
static enum zm_status permute_x(struct zm_doc *doc, size_t n,
                                const size_t *perm, size_t m,
                                struct zm_error *err)
{
	struct zm_tensor *x = zm_doc_find(doc, "x"), nx;
	int64_t shape[2] = { (int64_t)n, (int64_t)m };
	size_t d, es, i, j;
	enum zm_status st;

	if (x->ndim != 2)
		return zm_error_set(err, ZM_ERR_DATA, "x has %d dimensions: "
		                    "named columns need [n, d]", x->ndim);
	d = (size_t)x->shape[1];
	es = zm_dtype_size(x->dtype);
	zm_tensor_init(&nx);
	if ((st = zm_tensor_alloc(&nx, "x", x->dtype, 2, shape, err)))
		return st;
	for (i = 0; i < n; i++) {
		const unsigned char *src = (const unsigned char *)x->data +
		                           i * d * es;
		unsigned char *dst = (unsigned char *)nx.data + i * m * es;
		for (j = 0; j < m; j++)
			memcpy(dst + j * es, src + perm[j] * es, es);
	}
	zm_doc_remove(doc, "x");
	return zm_doc_add(doc, &nx, err);
}

void zm_onehot_unit_name(const char *column, const char *level, char *buf,
                         size_t size)
{
	snprintf(buf, size, "%s=%s", column, level);
}

/* A level name and its unit, sorted by name for bsearch. */
struct level_ref {
	const char *name;
	size_t unit;
};

static int cmp_level_ref(const void *a, const void *b)
{
	return strcmp(((const struct level_ref *)a)->name,
	              ((const struct level_ref *)b)->name);
}

enum zm_status zm_onehot_fill(const struct zm_layer_spec *s,
                              char *const *levels, size_t n_levels,
                              const int64_t *codes, size_t n,
                              const int64_t *ids, float *out, size_t ld,
                              const char *where, struct zm_error *err)
{
	struct level_ref *sorted = zm_malloc((s->n_levels + 1) *
	                                     sizeof(*sorted));
	ptrdiff_t *unit = zm_malloc((n_levels + 1) * sizeof(*unit));
	enum zm_status st = ZM_OK;
	size_t i, r;

	if (!sorted || !unit) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < s->n_levels; i++) {
		sorted[i].name = s->levels[i];
		sorted[i].unit = i;
	}
	qsort(sorted, s->n_levels, sizeof(*sorted), cmp_level_ref);
	/* The data's levels by name onto the layer's units, once. */
	for (i = 0; i < n_levels; i++) {
		struct level_ref key = { levels[i], 0 }, *hit;
		hit = bsearch(&key, sorted, s->n_levels, sizeof(*sorted),
		              cmp_level_ref);
		unit[i] = hit ? (ptrdiff_t)hit->unit : -1;
	}
	for (r = 0; r < n; r++) {
		ptrdiff_t u = unit[codes[r]];
		if (u < 0) {
			char known[512];
			known[0] = 0;
			for (i = 0; i < s->n_levels && i < 8; i++)
				snprintf(known + strlen(known),
				         sizeof(known) - strlen(known), "%s%s",
				         i ? ", " : "", s->levels[i]);
			st = zm_error_set(err, ZM_ERR_DATA, "%s: row %lld, "
			                  "column '%s': level '%s' is not one "
			                  "of the model's levels (%s%s)", where,
			                  (long long)(ids ? ids[r] : (int64_t)r),
			                  s->column, levels[codes[r]], known,
			                  s->n_levels > 8 ? ", ..." : "");
			goto out;
		}
		memset(out + r * ld, 0, s->n_levels * sizeof(*out));
		out[r * ld + (size_t)u] = 1.0f;
	}
out:
	free(sorted);
	free(unit);
	return st;
}

/*
 * Appends the units of target->arch's one_hot layers to x of doc (n
 * rows, made F32) and their names to zm.columns (when it has them).
 */
static enum zm_status append_onehot(const struct zm_arch *arch,
                                    struct zm_doc *doc, size_t n,
                                    const char *where, struct zm_error *err)
{
	struct zm_data_column *cols = NULL;
	struct zm_tensor xf, nx;
	struct zm_names names;
	size_t ncols = 0, units = zm_arch_one_hot_units(arch), d, w, l, c, r;
	const struct zm_tensor *id = zm_doc_find(doc, "id");
	enum zm_status st;
	int64_t shape[2];

	zm_tensor_init(&xf);
	zm_tensor_init(&nx);
	zm_names_init(&names);
	if ((st = zm_data_columns(doc, n, where, &cols, &ncols, err)) ||
	    (st = zm_data_features(doc, &xf, err)) ||
	    (st = zm_names_from_meta(&names, doc, ZM_META_COLUMNS, where,
	                             err)))
		goto out;
	d = n ? zm_tensor_numel(&xf) / n : (size_t)xf.shape[1];
	w = d + units;
	shape[0] = (int64_t)n;
	shape[1] = (int64_t)w;
	if ((st = zm_tensor_alloc(&nx, "x", ZM_DTYPE_F32, 2, shape, err)))
		goto out;
	for (r = 0; r < n; r++)
		memcpy((float *)nx.data + r * w, (float *)xf.data + r * d,
		       d * sizeof(float));
	for (l = 0; l < arch->n_layers; l++) {
		const struct zm_layer_spec *s = &arch->layers[l];
		char unit[600];
		if (s->type != ZM_LAYER_ONE_HOT)
			continue;
		for (c = 0; c < ncols && strcmp(cols[c].name, s->column); c++)
			;
		if (c == ncols) {
			st = zm_error_set(err, ZM_ERR_DATA, "%s: no string "
			                  "column '%s' (one_hot layer '%s' makes "
			                  "its units from it)", where, s->column,
			                  s->name);
			goto out;
		}
		if ((st = zm_onehot_fill(s, cols[c].levels, cols[c].n_levels,
		                         cols[c].codes, n,
		                         id ? (const int64_t *)id->data : NULL,
		                         (float *)nx.data + d, w, where, err)))
			goto out;
		for (r = 0; names.known && r < s->n_levels; r++) {
			zm_onehot_unit_name(s->column, s->levels[r], unit,
			                    sizeof(unit));
			if ((st = zm_names_add(&names, unit, err)))
				goto out;
		}
		d += s->n_levels;
	}
	zm_doc_remove(doc, "x");
	if ((st = zm_doc_add(doc, &nx, err)) ||
	    (names.known &&
	     (st = zm_names_to_meta(&names, doc, ZM_META_COLUMNS, err))))
		goto out;
	/* x is F32 now: its scale was applied. */
	if (zm_doc_meta(doc, ZM_META_SCALE))
		st = zm_doc_set_meta(doc, ZM_META_SCALE, "1", err);
out:
	zm_data_columns_free(cols, ncols);
	zm_tensor_release(&xf);
	zm_tensor_release(&nx);
	zm_names_release(&names);
	return st;
}

/* y as a writable I64 array (copied first when borrowed). */
static enum zm_status own_labels(struct zm_doc *doc, int64_t **y,
                                 struct zm_error *err)
{
	struct zm_tensor *t = zm_doc_find(doc, "y"), c;
	enum zm_status st;

	*y = NULL;
	if (!t || t->dtype != ZM_DTYPE_I64)
		return ZM_OK;
	if (!t->owns_data) {
		zm_tensor_init(&c);
		if ((st = zm_tensor_copy(&c, t, err)))
			return st;
		zm_doc_remove(doc, "y");
		if ((st = zm_doc_add(doc, &c, err)))
			return st;
		t = zm_doc_find(doc, "y");
	}
	*y = t->data;
	return ZM_OK;
}

enum zm_status zm_schema_conform_doc(struct zm_schema *target, bool extend,
                                     struct zm_doc *doc, size_t n,
                                     const char *where, const char *what,
                                     struct zm_schema_note *note,
                                     struct zm_error *err)
{
	struct zm_schema data;
	int64_t *y = NULL, *map = NULL, max = -1;
	size_t *perm = NULL, nmap, extra, i;
	const char *first_extra;
	bool identity;
	enum zm_status st;

	zm_schema_init(&data);
	if (target->arch && zm_arch_one_hot_units(target->arch) &&
	    (st = append_onehot(target->arch, doc, n, where, err)))
		goto out;
	if ((st = zm_schema_of_data_doc(&data, doc, where, err)) ||
	    (st = own_labels(doc, &y, err)))
		goto out;
	if (y) {
		for (i = 0; i < n; i++)
			if (y[i] > max)
				max = y[i];
		if (!target->classes.known && data.classes.known && !extend)
			note->by_position = true;
		if ((st = zm_schema_class_map(&data.classes, &target->classes,
		                              max, extend, &map, &nmap, where,
		                              err)) ||
		    (st = zm_schema_map_labels(y, n, map, nmap, &data.classes,
		                               &target->classes, where, what,
		                               err)))
			goto out;
		if ((target->classes.known || data.classes.known) &&
		    (st = zm_names_to_meta(target->classes.known ?
		                           &target->classes : &data.classes,
		                           doc, ZM_META_CLASSES, err)))
			goto out;
	}
	if (!target->features.known && data.features.known) {
		if (extend)
			st = zm_names_copy(&target->features, &data.features, err);
		else
			note->by_position = true;
		goto out;
	}
	if ((st = zm_schema_feature_map(&data.features, &target->features,
	                                &perm, &identity, &extra, &first_extra,
	                                where, what, err)) || identity)
		goto out;
	if (extra && !note->extra_columns)
		snprintf(note->first_extra, sizeof(note->first_extra), "%s",
		         first_extra);
	note->extra_columns += extra;
	note->reordered = true;
	if ((st = permute_x(doc, n, perm, target->features.n, err)) == ZM_OK)
		st = zm_names_to_meta(&target->features, doc, ZM_META_COLUMNS,
		                      err);
	if (st != ZM_OK)
		zm_error_prefix(err, "%s: ", where);
out:
	free(map);
	free(perm);
	zm_schema_release(&data);
	return st;
}
