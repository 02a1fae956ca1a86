/*
 * Lineage: origins recorded in model metadata, and the alignment of two
 * models' units measured from their weights (see lineage.h).
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "align.h"
#include "lineage.h"

#define FNV_OFFSET UINT64_C(0xcbf29ce484222325)
#define FNV_PRIME UINT64_C(0x100000001b3)

static uint64_t fnv(uint64_t h, const void *data, size_t n)
{
	const unsigned char *p = data;
	size_t i;

	for (i = 0; i < n; i++) {
		h ^= p[i];
		h *= FNV_PRIME;
	}
	return h;
}

/* Hashes one tensor: the name with its NUL, then dtype, shape and data,
 * the numbers as fixed-width little-endian bytes so that the digest is
 * the same on every machine. */
static uint64_t fnv_tensor(uint64_t h, const struct zm_tensor *t)
{
	unsigned char le[8];
	int64_t fields[ZM_MAX_DIMS + 2];
	int i, k, n = 0;

	h = fnv(h, t->name, strlen(t->name) + 1);
	fields[n++] = (int64_t)t->dtype;
	fields[n++] = t->ndim;
	for (i = 0; i < t->ndim; i++)
		fields[n++] = t->shape[i];
	for (i = 0; i < n; i++) {
		for (k = 0; k < 8; k++)
			le[k] = (unsigned char)((uint64_t)fields[i] >> (8 * k));
		h = fnv(h, le, sizeof(le));
	}
	return fnv(h, t->data, t->nbytes);
}

static void digest_text(uint64_t h, char *out)
{
	snprintf(out, ZM_LINEAGE_ID_MAX, "%016" PRIx64, h);
}

void zm_lineage_digest_doc(const struct zm_doc *doc, char *out)
{
	uint64_t h = FNV_OFFSET;
	size_t i;

	for (i = 0; i < doc->n_tensors; i++)
		h = fnv_tensor(h, &doc->tensors[i]);
	digest_text(h, out);
}

void zm_lineage_digest_model(const struct zm_model *m, char *out)
{
	uint64_t h = FNV_OFFSET;
	size_t l;

	for (l = 0; l < m->arch->n_layers; l++) {
		if (!m->layers[l].spec->has_params)
			continue;
		h = fnv_tensor(h, &m->layers[l].weight);
		h = fnv_tensor(h, &m->layers[l].bias);
	}
	digest_text(h, out);
}

const char *zm_lineage_verdict_name(enum zm_lineage_verdict v)
{
	switch (v) {
	case ZM_LINEAGE_RELATED: return "related";
	case ZM_LINEAGE_UNRELATED: return "unrelated";
	case ZM_LINEAGE_UNKNOWN: break;
	}
	return "unknown";
}

const char *zm_lineage_basis_name(enum zm_lineage_basis b)
{
	switch (b) {
	case ZM_LINEAGE_BY_ORIGIN: return "origin";
	case ZM_LINEAGE_BY_ALIGNMENT: return "alignment";
	case ZM_LINEAGE_BY_NOTHING: break;
	}
	return "nothing";
}

const char *zm_lineage_origin(const struct zm_model *m)
{
	const char *o = zm_doc_meta(&m->extra, ZM_LINEAGE_ORIGIN_KEY);

	return o && *o ? o : NULL;
}

/* The stream API has no removal of a metadata key. */
static void remove_meta(struct zm_doc *doc, const char *key)
{
	size_t i;

	for (i = 0; i < doc->n_meta; i++) {
		struct zm_meta_entry *e = &doc->meta[i];
		if (strcmp(e->key, key) == 0) {
			free(e->key);
			free(e->value);
			memmove(e, e + 1, (doc->n_meta - i - 1) * sizeof(*e));
			doc->n_meta--;
			return;
		}
	}
}

enum zm_status zm_lineage_set_origin(struct zm_model *m, const char *origin,
                                     struct zm_error *err)
{
	if (origin)
		return zm_doc_set_meta(&m->extra, ZM_LINEAGE_ORIGIN_KEY, origin,
		                       err);
	remove_meta(&m->extra, ZM_LINEAGE_ORIGIN_KEY);
	remove_meta(&m->extra, ZM_LINEAGE_BASE_KEY);
	return ZM_OK;
}

enum zm_status zm_lineage_set_initial(struct zm_model *m,
                                      struct zm_error *err)
{
	char digest[ZM_LINEAGE_ID_MAX], origin[ZM_LINEAGE_ID_MAX + 8];

	zm_lineage_digest_model(m, digest);
	snprintf(origin, sizeof(origin), "init:%s", digest);
	return zm_lineage_set_origin(m, origin, err);
}

double zm_lineage_correlation(const float *a, const float *b, size_t n)
{
	double ma = 0, mb = 0, sab = 0, saa = 0, sbb = 0;
	size_t i;

	if (n == 0)
		return 1;
	for (i = 0; i < n; i++) {
		ma += a[i];
		mb += b[i];
	}
	ma /= (double)n;
	mb /= (double)n;
	for (i = 0; i < n; i++) {
		double da = a[i] - ma, db = b[i] - mb;
		sab += da * db;
		saa += da * da;
		sbb += db * db;
	}
	if (saa == 0 || sbb == 0)
		return memcmp(a, b, n * sizeof(*a)) == 0 ? 1 : 0;
	return sab / sqrt(saa * sbb);
}

double zm_lineage_layer_alignment(const struct zm_layer *a,
                                  const struct zm_layer *b)
{
	size_t units, row, u;
	double sum = 0;

	/* Statistics (standardize, batchnorm) are fitted to each model's
	 * data, not trained from a shared start: they say nothing of it. */
	if (!a->spec->trainable)
		return NAN;
	units = (size_t)a->weight.shape[0];
	if (units == 0)
		return NAN;
	row = zm_tensor_numel(&a->weight) / units;
	for (u = 0; u < units; u++)
		sum += zm_lineage_correlation((const float *)a->weight.data +
		                              u * row,
		                              (const float *)b->weight.data +
		                              u * row, row);
	return sum / (double)units;
}

/* Same parameter shapes layer by layer (groups and names may differ). */
static bool same_shapes(const struct zm_model *a, const struct zm_model *b)
{
	size_t l;
	int d;

	if (a->arch->n_layers != b->arch->n_layers)
		return false;
	for (l = 0; l < a->arch->n_layers; l++) {
		const struct zm_layer *x = &a->layers[l], *y = &b->layers[l];
		if (x->spec->has_params != y->spec->has_params)
			return false;
		if (!x->spec->has_params)
			continue;
		if (x->weight.ndim != y->weight.ndim)
			return false;
		for (d = 0; d < x->weight.ndim; d++)
			if (x->weight.shape[d] != y->weight.shape[d])
				return false;
	}
	return true;
}

enum zm_status zm_lineage_related(const struct zm_model *a,
                                  const struct zm_model *b,
                                  struct zm_lineage_info *info,
                                  struct zm_error *err)
{
	const char *oa = zm_lineage_origin(a), *ob = zm_lineage_origin(b);
	size_t l, last = SIZE_MAX;

	(void)err;
	memset(info, 0, sizeof(*info));
	info->verdict = ZM_LINEAGE_UNKNOWN;
	info->basis = ZM_LINEAGE_BY_NOTHING;
	info->alignment = 1;
	info->worst_layer = SIZE_MAX;
	info->n_layers = a->arch->n_layers;
	for (l = 0; l < info->n_layers && l < ZM_ARCH_MAX_LAYERS; l++)
		info->score[l] = NAN;
	if (same_shapes(a, b)) {
		info->has_alignment = true;
		for (l = 0; l < info->n_layers; l++) {
			info->score[l] = zm_lineage_layer_alignment(&a->layers[l],
			                                            &b->layers[l]);
			if (!isnan(info->score[l]))
				last = l;
		}
		for (l = 0; last != SIZE_MAX && l < last; l++) {
			if (isnan(info->score[l]))
				continue;
			if (info->worst_layer == SIZE_MAX ||
			    info->score[l] < info->alignment) {
				info->alignment = info->score[l];
				info->worst_layer = l;
			}
		}
	}
	/* A realigned model's units were moved to match another's: whatever
	 * its origin, only their alignment says whether they now
	 * correspond (align.h). */
	if (oa && ob && !zm_doc_meta(&a->extra, ZM_ALIGN_KEY) &&
	    !zm_doc_meta(&b->extra, ZM_ALIGN_KEY)) {
		info->basis = ZM_LINEAGE_BY_ORIGIN;
		info->verdict = strcmp(oa, ob) == 0 ? ZM_LINEAGE_RELATED :
		                ZM_LINEAGE_UNRELATED;
	} else if (info->has_alignment) {
		info->basis = ZM_LINEAGE_BY_ALIGNMENT;
		info->verdict = info->alignment >= ZM_LINEAGE_THRESHOLD ?
		                ZM_LINEAGE_RELATED : ZM_LINEAGE_UNRELATED;
	}
	return ZM_OK;
}

enum zm_status zm_lineage_all_related(const struct zm_model *const *models,
                                      size_t n, bool *all, size_t *a,
                                      size_t *b, struct zm_lineage_info *info,
                                      struct zm_error *err)
{
	struct zm_lineage_info one;
	enum zm_status st;
	size_t i, j;

	*all = true;
	for (i = 0; i < n; i++) {
		for (j = i + 1; j < n; j++) {
			st = zm_lineage_related(models[i], models[j], &one, err);
			if (st != ZM_OK)
				return st;
			if (one.verdict == ZM_LINEAGE_RELATED)
				continue;
			*all = false;
			if (a)
				*a = i;
			if (b)
				*b = j;
			if (info)
				*info = one;
			return ZM_OK;
		}
	}
	return ZM_OK;
}

enum zm_status zm_lineage_require_related(const struct zm_model *a,
                                          const char *label_a,
                                          const struct zm_model *b,
                                          const char *label_b,
                                          const char *way_out,
                                          struct zm_error *err)
{
	struct zm_lineage_info info;
	char why[256];
	enum zm_status st;

	if ((st = zm_lineage_related(a, b, &info, err)) != ZM_OK)
		return st;
	/* Models of other shapes cannot be merged at all: the caller's shape
	 * check says so, naming the tensor. */
	if (info.verdict == ZM_LINEAGE_RELATED || !info.has_alignment)
		return ZM_OK;
	if (info.basis == ZM_LINEAGE_BY_ORIGIN)
		snprintf(why, sizeof(why), "origins %s and %s differ",
		         zm_lineage_origin(a), zm_lineage_origin(b));
	else if (info.basis == ZM_LINEAGE_BY_ALIGNMENT)
		snprintf(why, sizeof(why), "%s, and their units do "
		         "not align: %.3f < %.2f at layer '%s'",
		         zm_doc_meta(&a->extra, ZM_ALIGN_KEY) ||
		         zm_doc_meta(&b->extra, ZM_ALIGN_KEY) ? "realigned" :
		         "lineage unknown", info.alignment,
		         ZM_LINEAGE_THRESHOLD,
		         a->arch->layers[info.worst_layer].name);
	else
		snprintf(why, sizeof(why), "lineage unknown");
	return zm_error_set(err, ZM_ERR_USAGE, "models '%s' and '%s' are "
	                    "unrelated (%s): their hidden units do not "
	                    "correspond, so merging their layers mixes noise; "
	                    "%s", label_a, label_b, why, way_out);
}

enum zm_status zm_lineage_check_files(const char *const *paths,
                                      const char *const *labels, size_t n,
                                      bool refuse, const char *way_out,
                                      char *origin, struct zm_error *err)
{
	struct zm_model *first = NULL, *m = NULL;
	enum zm_status st = ZM_OK;
	bool common;
	size_t i;

	origin[0] = '\0';
	if (n == 0)
		return ZM_OK;
	if ((st = zm_model_load(paths[0], &first, err)) != ZM_OK)
		return st;
	common = zm_lineage_origin(first) != NULL;
	for (i = 1; i < n && st == ZM_OK; i++) {
		const char *o;
		if ((st = zm_model_load(paths[i], &m, err)) != ZM_OK)
			break;
		o = zm_lineage_origin(m);
		if (!o || !common || strcmp(o, zm_lineage_origin(first)))
			common = false;
		if (refuse)
			st = zm_lineage_require_related(first, labels[0], m,
			                                labels[i], way_out, err);
		zm_model_free(m);
		m = NULL;
	}
	if (st == ZM_OK && common)
		snprintf(origin, ZM_LINEAGE_ID_MAX + 8, "%s",
		         zm_lineage_origin(first));
	zm_model_free(first);
	return st;
}

void zm_lineage_describe(const struct zm_lineage_info *info,
                         const struct zm_arch *arch, struct zm_buf *b)
{
	size_t l;
	bool first = true;

	zm_buf_printf(b, "%s by %s", zm_lineage_verdict_name(info->verdict),
	              zm_lineage_basis_name(info->basis));
	if (!info->has_alignment) {
		zm_buf_puts(b, "; alignment: shapes differ");
		return;
	}
	zm_buf_puts(b, "; alignment per layer:");
	for (l = 0; l < info->n_layers && l < arch->n_layers; l++) {
		if (isnan(info->score[l]))
			continue;
		zm_buf_printf(b, "%s %s %.3f", first ? "" : ",",
		              arch->layers[l].name, info->score[l]);
		first = false;
	}
}
