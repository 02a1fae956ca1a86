/*
 * The CSV writer of tensor export: the rows of a data stream as CSV, one
 * batch at a time, with zm.scale applied, zm.columns as the header, class
 * names for integer labels and string columns as text.  The CSV reader is
 * dataset.c's (zm_dataset_open with ZM_DATASET_CSV).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "csv.h"
#include "dataset.h"
#include "fileio.h"
#include "constants.h"
#include "mem.h"
#include "metakeys.h"
#include "stream.h"

/* The header and value formatting of one export, fixed by the first
 * document so that every row has the same columns. */
struct csv_out {
	struct zm_outfile f;
	bool open, started;
	bool has_id, y_int, has_y;
	size_t d, ny;                /* features, label columns */
	char *label_name;
	char **classes;
	size_t nclasses;
	char **columns;              /* zm.columns, or NULL */
	size_t ncolumns;
	char **strings;              /* names of the string columns */
	size_t nstrings;
	/* U8 features have 256 values: format each once. */
	char u8_text[256][24];
	float u8_scale;
	bool u8_ready;
	struct zm_buf line;
};

/* Appends s as a CSV field, quoted when it must be (RFC 4180). */
static void csv_field(struct zm_buf *b, const char *s)
{
	if (strpbrk(s, ",\"\r\n") == NULL && s[0] != ' ' &&
	    (s[0] == '\0' || s[strlen(s) - 1] != ' ')) {
		zm_buf_puts(b, s);
		return;
	}
	zm_buf_puts(b, "\"");
	for (; *s; s++) {
		if (*s == '"')
			zm_buf_puts(b, "\"");
		zm_buf_append(b, s, 1);
	}
	zm_buf_puts(b, "\"");
}

/* A JSON list of strings from metadata into (*out, *n); both empty when
 * the key is absent or its value malformed. */
static void meta_list(const struct zm_doc *doc, const char *key, char ***out,
                      size_t *n)
{
	const char *v = zm_doc_meta(doc, key);

	if (!v || !zm_config_string_list(v, out, n)) {
		*out = NULL;
		*n = 0;
	}
}

static enum zm_status export_header(struct csv_out *c,
                                    const struct zm_doc *doc,
                                    const struct zm_tensor *y,
                                    const struct zm_data_column *sc,
                                    size_t nsc, struct zm_error *err)
{
	const char *label = zm_doc_meta(doc, ZM_META_LABEL);
	char name[64];
	size_t i;
	bool first = true;

	c->has_id = zm_doc_find(doc, "id") != NULL;
	c->has_y = y != NULL;
	c->y_int = y && y->dtype == ZM_DTYPE_I64;
	c->ny = !y ? 0 : y->ndim == 2 ? (size_t)y->shape[1] : 1;
	meta_list(doc, ZM_META_COLUMNS, &c->columns, &c->ncolumns);
	if (c->columns && c->ncolumns != c->d) {
		zm_config_strings_free(c->columns, c->ncolumns);
		c->columns = NULL;
	}
	c->label_name = zm_strdup(label && c->ny == 1 ? label : "y");
	if (!c->label_name)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	if (c->y_int)
		meta_list(doc, ZM_META_CLASSES, &c->classes, &c->nclasses);
	if (nsc && !(c->strings = zm_calloc(nsc, sizeof(*c->strings))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (i = 0; i < nsc; i++)
		if (!(c->strings[c->nstrings++] = zm_strdup(sc[i].name)))
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	/* The string columns first, like the id: they name the row's
	 * source rather than measure it. */
	if (c->has_id) {
		zm_buf_puts(&c->line, "id");
		first = false;
	}
	for (i = 0; i < c->nstrings; i++, first = false) {
		if (!first)
			zm_buf_puts(&c->line, ",");
		csv_field(&c->line, c->strings[i]);
	}
	for (i = 0; i < c->d; i++, first = false) {
		if (!first)
			zm_buf_puts(&c->line, ",");
		if (c->columns) {
			csv_field(&c->line, c->columns[i]);
		} else {
			snprintf(name, sizeof(name), "x_%zu", i);
			zm_buf_puts(&c->line, name);
		}
	}
	for (i = 0; i < c->ny; i++) {
		zm_buf_puts(&c->line, ",");
		if (c->ny == 1) {
			csv_field(&c->line, c->label_name);
		} else {
			snprintf(name, sizeof(name), "y_%zu", i);
			zm_buf_puts(&c->line, name);
		}
	}
	zm_buf_puts(&c->line, "\n");
	return ZM_OK;
}

static enum zm_status export_doc(struct csv_out *c, const struct zm_doc *doc,
                                 const char *where, struct zm_error *err)
{
	const struct zm_tensor *x = zm_doc_find(doc, "x");
	const struct zm_tensor *y = zm_doc_find(doc, "y");
	const struct zm_tensor *id = zm_doc_find(doc, "id");
	size_t n = (size_t)x->shape[0], d = n ? zm_tensor_numel(x) / n : 1;
	enum zm_status st;
	char num[40];
	float scale;
	size_t i, k, nsc;
	float *row = NULL, yv;
	struct zm_data_column *sc;
	bool same = true;
	int j;

	if (n == 0) {
		d = 1;
		for (j = 1; j < x->ndim; j++)
			d *= (size_t)x->shape[j];
	}
	if (!zm_data_scale(doc, &scale))
		return zm_error_set(err, ZM_ERR_DATA, "%s: bad zm.scale '%s'",
		                    where, zm_doc_meta(doc, ZM_META_SCALE));
	if ((st = zm_data_columns(doc, n, where, &sc, &nsc, err)))
		return st;
	if (!c->started) {
		c->d = d;
		st = export_header(c, doc, y, sc, nsc, err);
		if (st != ZM_OK) {
			zm_data_columns_free(sc, nsc);
			return st;
		}
		c->started = true;
	}
	same = nsc == c->nstrings;
	for (k = 0; same && k < nsc; k++)
		same = strcmp(sc[k].name, c->strings[k]) == 0;
	if (!same || d != c->d || (y != NULL) != c->has_y ||
	    (id != NULL) != c->has_id ||
	    (y && (y->dtype == ZM_DTYPE_I64) != c->y_int) ||
	    (y && (y->ndim == 2 ? (size_t)y->shape[1] : 1) != c->ny)) {
		zm_data_columns_free(sc, nsc);
		return zm_error_set(err, ZM_ERR_DATA,
		                    "%s: columns differ from the first document",
		                    where);
	}
	if (x->dtype == ZM_DTYPE_U8 && (!c->u8_ready || c->u8_scale != scale)) {
		for (k = 0; k < 256; k++)
			snprintf(c->u8_text[k], sizeof(c->u8_text[k]), "%.9g",
			         (double)((float)k * scale));
		c->u8_scale = scale;
		c->u8_ready = true;
	}
	row = zm_malloc((d ? d : 1) * sizeof(*row));
	if (!row) {
		zm_data_columns_free(sc, nsc);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	for (i = 0; i < n; i++) {
		bool lead = id || nsc;    /* a field before the features */
		if (id) {
			snprintf(num, sizeof(num), "%lld",
			         (long long)((const int64_t *)id->data)[i]);
			zm_buf_puts(&c->line, num);
		}
		for (k = 0; k < nsc; k++) {
			if (k || id)
				zm_buf_puts(&c->line, ",");
			csv_field(&c->line, sc[k].levels[sc[k].codes[i]]);
		}
		if (x->dtype == ZM_DTYPE_U8) {
			const unsigned char *p = (const unsigned char *)x->data +
			                         i * d;

			for (k = 0; k < d; k++) {
				if (k || lead)
					zm_buf_puts(&c->line, ",");
				zm_buf_puts(&c->line, c->u8_text[p[k]]);
			}
		} else {
			zm_tensor_read_f32(x, i * d, d, row);
			for (k = 0; k < d; k++) {
				snprintf(num, sizeof(num), "%s%.9g",
				         k || lead ? "," : "",
				         (double)(row[k] * scale));
				zm_buf_puts(&c->line, num);
			}
		}
		for (k = 0; k < c->ny; k++) {
			zm_buf_puts(&c->line, ",");
			if (c->y_int) {
				int64_t v = ((const int64_t *)y->data)[i];

				if (c->nclasses && v >= 0 &&
				    (uint64_t)v < c->nclasses && c->classes[v]) {
					csv_field(&c->line, c->classes[v]);
				} else {
					snprintf(num, sizeof(num), "%lld",
					         (long long)v);
					zm_buf_puts(&c->line, num);
				}
			} else {
				zm_tensor_read_f32(y, i * c->ny + k, 1, &yv);
				snprintf(num, sizeof(num), "%.9g", (double)yv);
				zm_buf_puts(&c->line, num);
			}
		}
		zm_buf_puts(&c->line, "\n");
		if (c->line.failed) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
			break;
		}
		if (c->line.len >= (1 << 16) || i + 1 == n) {
			st = zm_outfile_write(&c->f, c->line.data, c->line.len,
			                      err);
			c->line.len = 0;
			if (st != ZM_OK)
				break;
		}
	}
	free(row);
	zm_data_columns_free(sc, nsc);
	return st;
}

enum zm_status zm_csv_export(const char *input, const char *output,
                             struct zm_error *err)
{
	struct zm_dataset_options d;
	struct zm_dataset_reader *r = NULL;
	struct csv_out *c;
	struct zm_doc doc;
	enum zm_status st;
	size_t docs = 0;
	char where[ZM_WHERE_MAX];
	bool eof;

	zm_doc_init(&doc);
	c = zm_calloc(1, sizeof(*c));
	if (!c)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	zm_buf_init(&c->line);
	zm_dataset_options_init(&d);
	d.kind = ZM_DATASET_STREAM;
	d.path = input;
	st = zm_dataset_open(&r, &d, err);
	if (st != ZM_OK)
		goto out;
	st = zm_outfile_open(&c->f, output, false, err);
	if (st != ZM_OK)
		goto out;
	c->open = true;
	for (;;) {
		st = zm_dataset_next(r, &doc, &eof, err);
		if (st != ZM_OK || eof)
			break;
		docs++;
		snprintf(where, sizeof(where), "%s: document %zu",
		         strcmp(d.path, "-") ? d.path : "<stdin>", docs);
		st = export_doc(c, &doc, where, err);
		if (st != ZM_OK)
			break;
	}
	if (st == ZM_OK && c->line.len)
		st = zm_outfile_write(&c->f, c->line.data, c->line.len, err);
	if (st == ZM_OK) {
		c->open = false;
		st = zm_outfile_commit(&c->f, err);
	}
out:
	if (c->open)
		zm_outfile_abort(&c->f);
	zm_buf_release(&c->line);
	zm_config_strings_free(c->columns, c->ncolumns);
	zm_config_strings_free(c->classes, c->nclasses);
	zm_config_strings_free(c->strings, c->nstrings);
	free(c->label_name);
	free(c);
	zm_doc_release(&doc);
	zm_dataset_close(r);
	return st;
}
