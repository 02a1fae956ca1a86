/*
 * The data document layout (dataset.h): x, y and id, the string columns
 * and their levels, zm.scale, and the features as F32.
 */
#include <math.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "dataset.h"
#include "json.h"
#include "mem.h"
#include "metakeys.h"

/* ---- the data layout ---- */

enum zm_status zm_stream_describe_next(struct zm_reader *r, struct zm_doc *doc,
                                       struct zm_stream_totals *t, bool *eof,
                                       struct zm_error *err)
{
	const char *kind;
	enum zm_status st;
	size_t i;

	st = zm_reader_next_header(r, doc, eof, err);
	if (st != ZM_OK || *eof)
		return st;
	t->docs++;
	kind = zm_doc_meta(doc, ZM_META_KIND);
	for (i = 0; i < doc->n_tensors; i++) {
		const struct zm_tensor *x = &doc->tensors[i];

		t->bytes += x->nbytes;
		if (kind && strcmp(kind, "data") == 0 &&
		    strcmp(x->name, "x") == 0 && x->ndim > 0)
			t->rows += (unsigned long long)x->shape[0];
	}
	t->tensors += doc->n_tensors;
	return ZM_OK;
}

enum zm_status zm_data_check(const struct zm_doc *doc, const char *name,
                             size_t *n, struct zm_error *err)
{
	const struct zm_tensor *x = zm_doc_find(doc, "x");
	const struct zm_tensor *y = zm_doc_find(doc, "y");
	const struct zm_tensor *id = zm_doc_find(doc, "id");

	if (!x)
		return zm_error_set(err, ZM_ERR_DATA, "%s: no tensor 'x'", name);
	if (x->ndim < 1)
		return zm_error_set(err, ZM_ERR_DATA,
		                    "%s: tensor 'x' is a scalar, expected [n, ...]",
		                    name);
	if (y && (y->ndim < 1 || y->ndim > 2 || y->shape[0] != x->shape[0]))
		return zm_error_set(err, ZM_ERR_DATA,
		                    "%s: tensor 'y' does not have one row per "
		                    "row of 'x' (%lld)", name,
		                    (long long)x->shape[0]);
	if (y && y->dtype != ZM_DTYPE_I64 && !zm_dtype_is_float(y->dtype))
		return zm_error_set(err, ZM_ERR_DATA,
		                    "%s: tensor 'y' is %s, expected I64 or a float",
		                    name, zm_dtype_name(y->dtype));
	if (y && y->dtype == ZM_DTYPE_I64 && y->ndim != 1)
		return zm_error_set(err, ZM_ERR_DATA,
		                    "%s: I64 tensor 'y' must be [n]", name);
	if (id && (id->ndim != 1 || id->shape[0] != x->shape[0] ||
	           id->dtype != ZM_DTYPE_I64))
		return zm_error_set(err, ZM_ERR_DATA,
		                    "%s: tensor 'id' must be I64 [%lld]", name,
		                    (long long)x->shape[0]);
	{
		/* Allocates nothing when there are no string columns. */
		struct zm_data_column *cols;
		size_t count;
		enum zm_status st = zm_data_columns(doc, (size_t)x->shape[0],
		                                    name, &cols, &count, err);
		if (st != ZM_OK)
			return st;
		zm_data_columns_free(cols, count);
	}
	*n = (size_t)x->shape[0];
	return ZM_OK;
}

const char *zm_data_levels_json(const struct zm_doc *doc, const char *name)
{
	const size_t plen = strlen(ZM_DATA_LEVELS_PREFIX);
	size_t i;

	/* Compared in place: column names have no length limit. */
	for (i = 0; i < doc->n_meta; i++) {
		const char *key = doc->meta[i].key;
		if (strncmp(key, ZM_DATA_LEVELS_PREFIX, plen) == 0 &&
		    strcmp(key + plen, name) == 0)
			return doc->meta[i].value;
	}
	return NULL;
}

void zm_data_columns_free(struct zm_data_column *c, size_t count)
{
	size_t i;

	for (i = 0; c && i < count; i++)
		zm_config_strings_free(c[i].levels, c[i].n_levels);
	free(c);
}

enum zm_status zm_data_columns(const struct zm_doc *doc, size_t n,
                               const char *where,
                               struct zm_data_column **out, size_t *count,
                               struct zm_error *err)
{
	const size_t plen = strlen(ZM_DATA_COLUMN_PREFIX);
	struct zm_data_column *c = NULL;
	size_t i, k = 0, r;
	enum zm_status st = ZM_OK;

	*out = NULL;
	*count = 0;
	for (i = 0; i < doc->n_tensors; i++) {
		const struct zm_tensor *t = &doc->tensors[i];
		struct zm_data_column *dc;
		const char *levels;

		if (strncmp(t->name, ZM_DATA_COLUMN_PREFIX, plen) != 0)
			continue;
		if (!c && !(c = zm_calloc(doc->n_tensors, sizeof(*c))))
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		dc = &c[k];
		dc->name = t->name + plen;
		if (t->dtype != ZM_DTYPE_I64 || t->ndim != 1 ||
		    (uint64_t)t->shape[0] != n) {
			st = zm_error_set(err, ZM_ERR_DATA, "%s: string column "
			                  "'%s' must be I64 [%zu]", where,
			                  t->name, n);
			break;
		}
		dc->codes = t->data;
		levels = zm_data_levels_json(doc, dc->name);
		if (!levels || !zm_config_string_list(levels, &dc->levels,
		                                      &dc->n_levels)) {
			st = zm_error_set(err, ZM_ERR_DATA, "%s: string column "
			                  "'%s' needs metadata %s%s, a JSON list "
			                  "of its values", where, dc->name,
			                  ZM_DATA_LEVELS_PREFIX, dc->name);
			break;
		}
		k++;
		for (r = 0; r < n; r++)
			if (dc->codes[r] < 0 ||
			    (uint64_t)dc->codes[r] >= dc->n_levels) {
				st = zm_error_set(err, ZM_ERR_DATA, "%s: string "
				                  "column '%s', row %zu: value "
				                  "%lld outside its %zu levels",
				                  where, dc->name, r,
				                  (long long)dc->codes[r],
				                  dc->n_levels);
				break;
			}
		if (st != ZM_OK)
			break;
	}
	if (st != ZM_OK) {
		zm_data_columns_free(c, k);
		return st;
	}
	*out = c;
	*count = k;
	return ZM_OK;
}

bool zm_data_scale(const struct zm_doc *doc, float *scale)
{
	const char *s = zm_doc_meta(doc, ZM_META_SCALE);
	double v;

	*scale = 1.0f;
	if (!s)
		return true;
	if (!zm_parse_double(s, &v) || !(v > 0) || v > 3.4e38)
		return false;
	*scale = (float)v;
	return true;
}

enum zm_status zm_data_features_width(const struct zm_doc *doc, size_t *d,
                                      float *scale, struct zm_error *err)
{
	const struct zm_tensor *x = zm_doc_find(doc, "x");
	int i;

	if (!x || x->ndim < 1)
		return zm_error_set(err, ZM_ERR_DATA,
		                    "no tensor 'x' of shape [n, ...]");
	if (!zm_data_scale(doc, scale))
		return zm_error_set(err, ZM_ERR_DATA,
		                    "zm.scale '%s' is not a positive number",
		                    zm_doc_meta(doc, ZM_META_SCALE));
	*d = 1;
	for (i = 1; i < x->ndim; i++)
		*d *= (size_t)x->shape[i];
	return ZM_OK;
}

void zm_data_features_rows(const struct zm_doc *doc, size_t d, float scale,
                           size_t first, size_t n, float *dst)
{
	const struct zm_tensor *x = zm_doc_find(doc, "x");
	size_t k, total = n * d;

	ZM_ASSERT(x != NULL);
	if (x->dtype == ZM_DTYPE_U8) {
		/* Images, the common case: one pass, sixteen at a time (-O2
		 * leaves the plain loop scalar). */
		const uint8_t *src = (const uint8_t *)x->data + first * d;
		k = 0;
#ifdef __SSE2__
		{
			const __m128i zero = _mm_setzero_si128();
			const __m128 sc = _mm_set1_ps(scale);
			for (; k + 16 <= total; k += 16) {
				__m128i b = _mm_loadu_si128((const __m128i *)(src + k));
				__m128i lo = _mm_unpacklo_epi8(b, zero);
				__m128i hi = _mm_unpackhi_epi8(b, zero);
				_mm_storeu_ps(dst + k, _mm_mul_ps(_mm_cvtepi32_ps(
					_mm_unpacklo_epi16(lo, zero)), sc));
				_mm_storeu_ps(dst + k + 4, _mm_mul_ps(_mm_cvtepi32_ps(
					_mm_unpackhi_epi16(lo, zero)), sc));
				_mm_storeu_ps(dst + k + 8, _mm_mul_ps(_mm_cvtepi32_ps(
					_mm_unpacklo_epi16(hi, zero)), sc));
				_mm_storeu_ps(dst + k + 12, _mm_mul_ps(_mm_cvtepi32_ps(
					_mm_unpackhi_epi16(hi, zero)), sc));
			}
		}
#endif
		for (; k < total; k++)
			dst[k] = (float)src[k] * scale;
		return;
	}
	zm_tensor_read_f32(x, first * d, total, dst);
	if (scale != 1.0f)
		for (k = 0; k < total; k++)
			dst[k] *= scale;
}

enum zm_status zm_data_features(const struct zm_doc *doc,
                                struct zm_tensor *out, struct zm_error *err)
{
	const struct zm_tensor *x = zm_doc_find(doc, "x");
	int64_t shape[2];
	enum zm_status st;
	size_t d;
	float scale;

	if ((st = zm_data_features_width(doc, &d, &scale, err)))
		return st;
	shape[0] = x->shape[0];
	shape[1] = (int64_t)d;
	st = zm_tensor_alloc(out, "x", ZM_DTYPE_F32, 2, shape, err);
	if (st != ZM_OK)
		return st;
	zm_data_features_rows(doc, d, scale, 0, (size_t)shape[0], out->data);
	return ZM_OK;
}
