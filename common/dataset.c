/*
 * Dataset readers: CSV, IDX and data streams as batch documents.  The
 * layout of a data document (x, y, id, string columns, zm.scale) is
 * data.c's.
 */
#include <errno.h>
#include <float.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "constants.h"
#include "dataset.h"
#include "fileio.h"
#include "json.h"
#include "mem.h"
#include "prefetch.h"
#include "metakeys.h"

/* A CSV record longer than this is refused rather than buffered. */
#define CSV_MAX_RECORD ((size_t)64 << 20)
#define CSV_MAX_FIELDS ((size_t)1 << 20)
/* IDX images larger than this are surely not images. */
#define IDX_MAX_IMAGE ((uint64_t)1 << 24)
/* A batch of huge images holds fewer rows, to keep memory bounded. */
#define IDX_MAX_BATCH_BYTES ((size_t)256 << 20)

/* ---- byte sources: the input files of fileio.h ---- */

struct src {
	char *name;                  /* owned, for messages */
	struct zm_infile *in;
};

static void src_close(struct src *s)
{
	zm_infile_close(s->in);
	free(s->name);
	memset(s, 0, sizeof(*s));
}

/*
 * Opens path ("-" or NULL: stdin) or the memory mem/len.  With rewindable,
 * anything that is not a regular file is spooled first.  gzip input is
 * inflated and each member checked whole (truncation is an error), anything
 * else is read as it is.
 */
static enum zm_status src_open(struct src *s, const char *path,
                               const void *mem, size_t len, bool rewindable,
                               struct zm_error *err)
{
	bool is_stdin = !path || strcmp(path, "-") == 0;

	memset(s, 0, sizeof(*s));
	s->name = zm_strdup(mem && path ? path : is_stdin ? "<stdin>" : path);
	if (!s->name)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	if (mem)
		return zm_infile_open_mem(&s->in, mem, len, s->name, err);
	return zm_infile_open(&s->in, is_stdin ? "-" : path,
	                      rewindable ? ZM_INFILE_REWINDABLE : 0, err);
}

/* Reads up to n bytes; *got < n only at the end of the input. */
static enum zm_status src_read(struct src *s, void *dst, size_t n,
                               size_t *got, struct zm_error *err)
{
	unsigned char *p = dst;
	size_t done = 0;

	while (done < n) {
		size_t one;
		enum zm_status st = zm_infile_read(s->in, p + done, n - done,
		                                   &one, err);

		if (st != ZM_OK)
			return st;
		if (one == 0)
			break;
		done += one;
	}
	*got = done;
	return ZM_OK;
}

static enum zm_status src_rewind(struct src *s, struct zm_error *err)
{
	return zm_infile_rewind(s->in, err);
}

/* ---- CSV records (RFC 4180) ---- */

struct csv {
	struct src src;
	unsigned char buf[1 << 16];
	size_t pos, len;
	bool at_eof;
	unsigned long line;          /* physical line of the next character */
	/* The current record: NUL-terminated fields packed in text. */
	char *text;
	size_t text_len, text_cap;
	size_t *starts;
	size_t nfields, fields_cap;
	unsigned long rec_line;      /* line where the record started */
	bool rec_cut;                /* it ended at the end of input, no newline */
};

static void csv_reset(struct csv *c)
{
	c->pos = c->len = 0;
	c->at_eof = false;
	c->line = 1;
}

/* The next byte, or -1 at the end; errors come back through *st. */
static int csv_getc(struct csv *c, enum zm_status *st, struct zm_error *err)
{
	size_t got;

	if (c->pos == c->len) {
		if (c->at_eof)
			return -1;
		*st = src_read(&c->src, c->buf, sizeof(c->buf), &got, err);
		if (*st != ZM_OK)
			return -1;
		c->pos = 0;
		c->len = got;
		if (got < sizeof(c->buf))
			c->at_eof = true;
		if (got == 0)
			return -1;
	}
	return c->buf[c->pos++];
}

static int csv_peek(struct csv *c, enum zm_status *st, struct zm_error *err)
{
	int ch = csv_getc(c, st, err);

	if (ch >= 0)
		c->pos--;
	return ch;
}

static bool csv_putc(struct csv *c, char ch)
{
	if (c->text_len == c->text_cap) {
		size_t cap = c->text_cap ? c->text_cap * 2 : 256;
		char *p;

		if (cap > CSV_MAX_RECORD)
			return false;
		p = zm_realloc(c->text, cap);
		if (!p)
			return false;
		c->text = p;
		c->text_cap = cap;
	}
	c->text[c->text_len++] = ch;
	return true;
}

static bool csv_new_field(struct csv *c)
{
	if (c->nfields == c->fields_cap) {
		size_t cap = c->fields_cap ? c->fields_cap * 2 : 16;
		size_t *p;

		if (cap > CSV_MAX_FIELDS)
			return false;
		p = zm_realloc(c->starts, cap * sizeof(*p));
		if (!p)
			return false;
		c->starts = p;
		c->fields_cap = cap;
	}
	c->starts[c->nfields++] = c->text_len;
	return true;
}

static const char *csv_field(const struct csv *c, size_t i)
{
	return c->text + c->starts[i];
}

/*
 * Reads one record into c->text/starts.  Empty lines are skipped; a final
 * line without a newline is a record.  *eof is set at the end of input.
 */
static enum zm_status csv_record(struct csv *c, bool *eof,
                                 struct zm_error *err)
{
	enum zm_status st = ZM_OK;
	bool quoted = false, in_quotes = false, field_start = true;
	int ch;

	*eof = false;
	c->text_len = 0;
	c->nfields = 0;
	/* Skip blank lines (LF or CRLF). */
	for (;;) {
		ch = csv_peek(c, &st, err);
		if (st != ZM_OK)
			return st;
		if (ch == '\n') {
			csv_getc(c, &st, err);
			c->line++;
		} else if (ch == '\r') {
			csv_getc(c, &st, err);
		} else {
			break;
		}
	}
	if (ch < 0) {
		*eof = true;
		return ZM_OK;
	}
	c->rec_line = c->line;
	c->rec_cut = false;
	if (!csv_new_field(c))
		goto toolong;
	for (;;) {
		ch = csv_getc(c, &st, err);
		if (st != ZM_OK)
			return st;
		if (ch == 0)
			return zm_error_set(err, ZM_ERR_FORMAT,
			                    "%s:%lu: NUL byte in a CSV file",
			                    c->src.name, c->line);
		if (in_quotes) {
			if (ch < 0)
				return zm_error_set(err, ZM_ERR_FORMAT,
				                    "%s:%lu: truncated (a quoted field "
				                    "is open at the end of the input)",
				                    c->src.name, c->rec_line);
			if (ch == '"') {
				int next = csv_peek(c, &st, err);

				if (st != ZM_OK)
					return st;
				if (next == '"') {
					csv_getc(c, &st, err);
					if (!csv_putc(c, '"'))
						goto toolong;
				} else {
					in_quotes = false;
				}
				continue;
			}
			if (ch == '\n')
				c->line++;
			if (!csv_putc(c, (char)ch))
				goto toolong;
			continue;
		}
		if (ch == '"' && field_start) {
			in_quotes = quoted = true;
			field_start = false;
			continue;
		}
		if (ch < 0 || ch == '\n' || ch == ',' || ch == '\r') {
			if (ch == '\r') {
				int next = csv_peek(c, &st, err);

				if (st != ZM_OK)
					return st;
				if (next == '\n')
					csv_getc(c, &st, err);
				ch = '\n';
			}
			if (!csv_putc(c, '\0'))
				goto toolong;
			if (ch == ',') {
				if (!csv_new_field(c))
					goto toolong;
				field_start = true;
				quoted = false;
				continue;
			}
			if (ch == '\n')
				c->line++;
			c->rec_cut = ch < 0;
			return ZM_OK;
		}
		if (quoted)
			return zm_error_set(err, ZM_ERR_FORMAT,
			                    "%s:%lu: field %zu: unexpected '%c' after "
			                    "a closing quote", c->src.name, c->line,
			                    c->nfields, ch);
		field_start = false;
		if (!csv_putc(c, (char)ch))
			goto toolong;
	}
toolong:
	return zm_error_set(err, ZM_ERR_NOMEM,
	                    "%s:%lu: record too long or out of memory",
	                    c->src.name, c->rec_line);
}

/* Copies a CSV field without the blanks around it into tmp; false when it
 * is empty or does not fit. */
static bool csv_trim(const char *text, char *tmp, size_t size)
{
	size_t n;

	while (*text == ' ' || *text == '\t')
		text++;
	n = strlen(text);
	while (n > 0 && (text[n - 1] == ' ' || text[n - 1] == '\t'))
		n--;
	if (n == 0 || n >= size)
		return false;
	memcpy(tmp, text, n);
	tmp[n] = '\0';
	return true;
}

/* Parses a CSV number, allowing spaces around it. */
static bool csv_number(const char *text, double *out)
{
	char tmp[128];

	return csv_trim(text, tmp, sizeof(tmp)) && zm_parse_double(tmp, out);
}

static bool csv_integer(const char *text, int64_t *out)
{
	char tmp[64];

	return csv_trim(text, tmp, sizeof(tmp)) && zm_parse_int64(tmp, out);
}

/* ---- the reader ---- */

enum label_kind { LABEL_NONE, LABEL_INT, LABEL_FLOAT, LABEL_CLASS };

struct zm_dataset_reader {
	enum zm_dataset_kind kind;
	size_t batch;
	uint64_t rows;               /* produced so far */
	bool done;
	/* idx */
	struct src images, labels;
	bool has_labels, image_shape;
	uint64_t idx_count, idx_rows, idx_cols;
	/* csv */
	struct csv *csv;
	size_t ncols;
	size_t *feature_cols;        /* indices of the feature columns */
	size_t nfeatures;
	long label_col, id_col;      /* -1: none */
	enum label_kind label_kind;
	char **classes;              /* sorted, owned */
	size_t nclasses;
	/* string columns: CSV column, name, sorted levels and their JSON */
	size_t nstrings;
	struct csv_strings {
		size_t col;
		char *tensor_name;           /* "column.NAME" */
		char *meta_key;              /* "zm.levels.NAME" */
		char **levels;
		size_t nlevels;
		char *levels_json;
	} *strings;
	char *columns_json;          /* zm.columns */
	char *classes_json;          /* zm.classes */
	char *label_name;
	uint64_t csv_rows;           /* from the first pass */
	bool emitted_empty;
	/* stream */
	struct zm_reader *stream;
	/* The reader thread (prefetch.h), one document ahead: it reads into
	 * slot and leaves the rows read with it in slot_rows; the consumer
	 * moves the document out and counts rows_taken. */
	struct zm_prefetch *pf;
	struct zm_doc slot;
	uint64_t slot_rows, rows_taken;
};

void zm_dataset_options_init(struct zm_dataset_options *o)
{
	memset(o, 0, sizeof(*o));
	o->kind = ZM_DATASET_CSV;
	o->batch = ZM_DATASET_BATCH_DEFAULT;
	o->prefetch = true;
}

uint64_t zm_dataset_rows(const struct zm_dataset_reader *r)
{
	return r->pf ? r->rows_taken : r->rows;
}

void zm_dataset_close(struct zm_dataset_reader *r)
{
	size_t i;

	if (!r)
		return;
	zm_prefetch_free(r->pf);
	zm_doc_release(&r->slot);
	src_close(&r->images);
	src_close(&r->labels);
	if (r->csv) {
		src_close(&r->csv->src);
		free(r->csv->text);
		free(r->csv->starts);
		free(r->csv);
	}
	free(r->feature_cols);
	for (i = 0; i < r->nclasses; i++)
		free(r->classes[i]);
	free(r->classes);
	free(r->columns_json);
	free(r->classes_json);
	free(r->label_name);
	for (i = 0; r->strings && i < r->nstrings; i++) {
		struct csv_strings *sc = &r->strings[i];
		free(sc->tensor_name);
		free(sc->meta_key);
		zm_config_strings_free(sc->levels, sc->nlevels);
		free(sc->levels_json);
	}
	free(r->strings);
	if (r->stream)
		zm_reader_close(r->stream);
	free(r);
}

/* ---- IDX ---- */

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Reads an IDX header of u8 data with ndims dimensions into dims. */
static enum zm_status idx_header(struct src *s, uint32_t magic, int ndims,
                                 uint32_t *dims, struct zm_error *err)
{
	unsigned char h[16];
	size_t want = 4 + 4 * (size_t)ndims, got;
	enum zm_status st;
	uint32_t m;
	int i;

	st = src_read(s, h, want, &got, err);
	if (st != ZM_OK)
		return st;
	if (got < 4)
		return zm_error_set(err, ZM_ERR_FORMAT,
		                    "%s: truncated IDX header (%zu bytes)",
		                    s->name, got);
	m = be32(h);
	if (m != magic) {
		if ((m >> 16) == 0 && (m & 0xff) >= 1 && (m & 0xff) <= 4)
			return zm_error_set(err, ZM_ERR_FORMAT,
			                    "%s: IDX magic 0x%08x: expected 0x%08x "
			                    "(unsigned bytes, %d dimension%s)",
			                    s->name, (unsigned)m, (unsigned)magic,
			                    ndims, ndims == 1 ? "" : "s");
		return zm_error_set(err, ZM_ERR_FORMAT,
		                    "%s: not an IDX file (magic 0x%08x, expected "
		                    "0x%08x)", s->name, (unsigned)m,
		                    (unsigned)magic);
	}
	if (got < want)
		return zm_error_set(err, ZM_ERR_FORMAT,
		                    "%s: truncated IDX header (%zu of %zu bytes)",
		                    s->name, got, want);
	for (i = 0; i < ndims; i++)
		dims[i] = be32(h + 4 + 4 * i);
	return ZM_OK;
}

static enum zm_status idx_open(struct zm_dataset_reader *r,
                               const struct zm_dataset_options *o,
                               struct zm_error *err)
{
	uint32_t idims[3], ldims[1];
	enum zm_status st;

	if (!o->images && !o->images_data)
		return zm_error_set(err, ZM_ERR_USAGE,
		                    "an IDX import needs an image file");
	st = src_open(&r->images, o->images, o->images_data, o->images_len,
	              false, err);
	if (st != ZM_OK)
		return st;
	st = idx_header(&r->images, 0x00000803, 3, idims, err);
	if (st != ZM_OK)
		return st;
	if (idims[1] == 0 || idims[2] == 0 ||
	    (uint64_t)idims[1] * idims[2] > IDX_MAX_IMAGE)
		return zm_error_set(err, ZM_ERR_FORMAT,
		                    "%s: bad image size %" PRIu32 "x%" PRIu32,
		                    r->images.name, idims[1], idims[2]);
	r->idx_count = idims[0];
	r->idx_rows = idims[1];
	r->idx_cols = idims[2];
	r->image_shape = o->image_shape;
	if (o->labels || o->labels_data) {
		r->has_labels = true;
		st = src_open(&r->labels, o->labels, o->labels_data,
		              o->labels_len, false, err);
		if (st != ZM_OK)
			return st;
		st = idx_header(&r->labels, 0x00000801, 1, ldims, err);
		if (st != ZM_OK)
			return st;
		if (ldims[0] != idims[0])
			return zm_error_set(err, ZM_ERR_FORMAT,
			                    "%s: %" PRIu32 " labels for %" PRIu32
			                    " images in %s", r->labels.name,
			                    ldims[0], idims[0], r->images.name);
	}
	return ZM_OK;
}

/* At the end of an IDX file nothing may follow. */
static enum zm_status idx_expect_end(struct src *s, struct zm_error *err)
{
	unsigned char b;
	size_t got;
	enum zm_status st = src_read(s, &b, 1, &got, err);

	if (st != ZM_OK)
		return st;
	if (got != 0)
		return zm_error_set(err, ZM_ERR_FORMAT,
		                    "%s: trailing bytes after the last item",
		                    s->name);
	return ZM_OK;
}

static enum zm_status set_common_meta(struct zm_doc *doc, size_t n,
                                      struct zm_error *err)
{
	char num[32];
	enum zm_status st;

	st = zm_doc_set_meta(doc, ZM_META_KIND, "data", err);
	if (st != ZM_OK)
		return st;
	snprintf(num, sizeof(num), "%zu", n);
	return zm_doc_set_meta(doc, ZM_META_SAMPLES, num, err);
}

static enum zm_status add_ids(struct zm_doc *doc, uint64_t first, size_t n,
                              struct zm_error *err)
{
	struct zm_tensor t;
	int64_t shape[1] = { (int64_t)n };
	enum zm_status st;
	size_t i;

	zm_tensor_init(&t);
	st = zm_tensor_alloc(&t, "id", ZM_DTYPE_I64, 1, shape, err);
	if (st != ZM_OK)
		return st;
	for (i = 0; i < n; i++)
		((int64_t *)t.data)[i] = (int64_t)(first + i);
	st = zm_doc_add(doc, &t, err);
	zm_tensor_release(&t);
	return st;
}

static enum zm_status idx_next(struct zm_dataset_reader *r,
                               struct zm_doc *doc, bool *eof,
                               struct zm_error *err)
{
	struct zm_tensor x, y;
	uint64_t left = r->idx_count - r->rows;
	size_t n, per = (size_t)(r->idx_rows * r->idx_cols), bytes, got, i;
	enum zm_status st;
	char scale[32];

	if (left == 0) {
		st = idx_expect_end(&r->images, err);
		if (st == ZM_OK && r->has_labels)
			st = idx_expect_end(&r->labels, err);
		if (st == ZM_OK)
			*eof = true;
		return st;
	}
	n = left < r->batch ? (size_t)left : r->batch;
	if (n > 1 && n > IDX_MAX_BATCH_BYTES / per)
		n = IDX_MAX_BATCH_BYTES / per > 0 ? IDX_MAX_BATCH_BYTES / per : 1;
	zm_tensor_init(&x);
	zm_tensor_init(&y);
	if (r->image_shape) {
		int64_t shape[4] = { (int64_t)n, 1, (int64_t)r->idx_rows,
		                     (int64_t)r->idx_cols };
		st = zm_tensor_alloc(&x, "x", ZM_DTYPE_U8, 4, shape, err);
	} else {
		int64_t shape[2] = { (int64_t)n, (int64_t)per };
		st = zm_tensor_alloc(&x, "x", ZM_DTYPE_U8, 2, shape, err);
	}
	if (st != ZM_OK)
		goto out;
	bytes = x.nbytes;
	st = src_read(&r->images, x.data, bytes, &got, err);
	if (st != ZM_OK)
		goto out;
	if (got < bytes) {
		st = zm_error_set(err, ZM_ERR_FORMAT,
		                  "%s: truncated: header says %" PRIu64
		                  " images, data ends in image %" PRIu64,
		                  r->images.name, r->idx_count,
		                  r->rows + got / per + 1);
		goto out;
	}
	st = zm_doc_add(doc, &x, err);
	if (st != ZM_OK)
		goto out;
	if (r->has_labels) {
		int64_t shape[1] = { (int64_t)n };
		unsigned char *raw;

		st = zm_tensor_alloc(&y, "y", ZM_DTYPE_I64, 1, shape, err);
		if (st != ZM_OK)
			goto out;
		/* Read the bytes into the tail of the I64 buffer, then widen
		 * from the front: no second buffer needed. */
		raw = (unsigned char *)y.data + y.nbytes - n;
		st = src_read(&r->labels, raw, n, &got, err);
		if (st != ZM_OK)
			goto out;
		if (got < n) {
			st = zm_error_set(err, ZM_ERR_FORMAT,
			                  "%s: truncated: header says %" PRIu64
			                  " labels, data ends after %" PRIu64,
			                  r->labels.name, r->idx_count,
			                  r->rows + got);
			goto out;
		}
		for (i = 0; i < n; i++)
			((int64_t *)y.data)[i] = raw[i];
		st = zm_doc_add(doc, &y, err);
		if (st != ZM_OK)
			goto out;
	}
	st = add_ids(doc, r->rows, n, err);
	if (st != ZM_OK)
		goto out;
	st = set_common_meta(doc, n, err);
	if (st != ZM_OK)
		goto out;
	snprintf(scale, sizeof(scale), "%.9g", 1.0f / 255.0f);
	st = zm_doc_set_meta(doc, ZM_META_SCALE, scale, err);
	if (st != ZM_OK)
		goto out;
	r->rows += n;
out:
	zm_tensor_release(&x);
	zm_tensor_release(&y);
	return st;
}

/* ---- CSV ---- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds s to the sorted set (*set, *n) -- the label's classes or a string
 * column's levels (what names it in the message) -- unless present. */
static enum zm_status set_add(const struct zm_dataset_reader *r, char ***set,
                              size_t *n, const char *s, const char *what,
                              struct zm_error *err)
{
	size_t lo = 0, hi = *n;
	char **p;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp((*set)[mid], s);

		if (c == 0)
			return ZM_OK;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (*n >= ZM_DATASET_MAX_CLASSES)
		return zm_error_set(err, ZM_ERR_DATA,
		                    "%s:%lu: more than %d distinct %s",
		                    r->csv->src.name, r->csv->rec_line,
		                    ZM_DATASET_MAX_CLASSES, what);
	p = zm_realloc(*set, (*n + 1) * sizeof(*p));
	if (!p)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	*set = p;
	memmove(p + lo + 1, p + lo, (*n - lo) * sizeof(*p));
	p[lo] = zm_strdup(s);
	if (!p[lo]) {
		memmove(p + lo, p + lo + 1, (*n - lo) * sizeof(*p));
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	(*n)++;
	return ZM_OK;
}

static enum zm_status json_list(char **out, char *const *items, size_t n,
                                struct zm_error *err)
{
	struct zm_buf b;
	size_t i;

	zm_buf_init(&b);
	zm_buf_puts(&b, "[");
	for (i = 0; i < n; i++) {
		if (i)
			zm_buf_puts(&b, ",");
		zm_json_string(&b, items[i], strlen(items[i]));
	}
	zm_buf_puts(&b, "]");
	if (b.failed) {
		zm_buf_release(&b);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	*out = b.data;
	return ZM_OK;
}

/* Where the first pass saw the first bad value of a column. */
struct bad_value {
	unsigned long line;
	size_t field;
	char text[48];
};

static void remember_bad(struct bad_value *b, unsigned long line,
                         size_t field, const char *text)
{
	if (b->line)
		return;
	b->line = line;
	b->field = field;
	snprintf(b->text, sizeof(b->text), "%s", text);
}

static enum zm_status not_a_number(const struct zm_dataset_reader *r,
                                   const struct bad_value *b,
                                   const char *column, struct zm_error *err)
{
	return zm_error_set(err, ZM_ERR_DATA,
	                    "%s:%lu:%zu: column '%s': expected a number, got '%s'",
	                    r->csv->src.name, b->line, b->field, column,
	                    b->text);
}

static enum zm_status not_f32(const struct csv *c, size_t field,
                              const char *column, const char *text,
                              struct zm_error *err)
{
	return zm_error_set(err, ZM_ERR_DATA,
	                    "%s:%lu:%zu: column '%s': %s is beyond +-%g, more "
	                    "than F32 training can take (its square overflows)",
	                    c->src.name, c->rec_line, field, column, text,
	                    ZM_DATA_MAX_ABS);
}

/* Finds the label column by name, else as a 0-based index. */
static enum zm_status find_label(struct zm_dataset_reader *r,
                                 char **names, const char *label,
                                 struct zm_error *err)
{
	int64_t idx;
	size_t i;

	for (i = 0; i < r->ncols; i++) {
		if (strcmp(names[i], label) == 0) {
			r->label_col = (long)i;
			return ZM_OK;
		}
	}
	if (zm_parse_int64(label, &idx) && idx >= 0 &&
	    (uint64_t)idx < r->ncols) {
		r->label_col = (long)idx;
		return ZM_OK;
	}
	return zm_error_set(err, ZM_ERR_USAGE,
	                    "%s: no column '%s' for the label (%zu columns)",
	                    r->csv->src.name, label, r->ncols);
}

/*
 * First pass: the header, then every record, checking shape and numbers
 * and learning the label's type and classes and whether id is integer.
 */
/* The header's column names into names[0..r->ncols) (owned by the
 * caller), each once; the label column (o->label) and an id column. */
static enum zm_status csv_header(struct zm_dataset_reader *r,
                                 const struct zm_dataset_options *o,
                                 char **names, struct zm_error *err)
{
	struct csv *c = r->csv;
	enum zm_status st;
	size_t i, j;

	for (i = 0; i < r->ncols; i++) {
		names[i] = zm_strdup(csv_field(c, i));
		if (!names[i]) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
			return st;
		}
		for (j = 0; j < i; j++) {
			if (strcmp(names[i], names[j]) == 0) {
				st = zm_error_set(err, ZM_ERR_DATA,
				                  "%s:%lu: column '%s' appears twice",
				                  c->src.name, c->rec_line, names[i]);
				return st;
			}
		}
	}
	r->label_col = r->id_col = -1;
	if (o->label) {
		st = find_label(r, names, o->label, err);
		if (st != ZM_OK)
			return st;
		r->label_name = zm_strdup(names[r->label_col]);
		if (!r->label_name) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
			return st;
		}
	}
	for (i = 0; i < r->ncols; i++)
		if (strcmp(names[i], "id") == 0 && (long)i != r->label_col)
			r->id_col = (long)i;
	return ZM_OK;
}

/* Class names and string levels need a pass of their own: only once the
 * first pass is done is it known which columns hold them. */
static enum zm_status csv_levels(struct zm_dataset_reader *r,
                                 struct zm_error *err)
{
	struct csv *c = r->csv;
	enum zm_status st;
	bool eof;
	size_t j;

	st = src_rewind(&c->src, err);
	if (st != ZM_OK)
		return st;
	csv_reset(c);
	st = csv_record(c, &eof, err);        /* header */
	while (st == ZM_OK) {
		st = csv_record(c, &eof, err);
		if (st != ZM_OK || eof)
			break;
		if (r->label_kind == LABEL_CLASS)
			st = set_add(r, &r->classes, &r->nclasses,
			             csv_field(c, (size_t)r->label_col),
			             "labels", err);
		for (j = 0; st == ZM_OK && j < r->nstrings; j++) {
			struct csv_strings *sc = &r->strings[j];
			st = set_add(r, &sc->levels, &sc->nlevels,
			             csv_field(c, sc->col), "values in a "
			             "string column", err);
		}
	}
	if (st == ZM_OK && r->label_kind == LABEL_CLASS)
		st = json_list(&r->classes_json, r->classes,
		               r->nclasses, err);
	for (j = 0; st == ZM_OK && j < r->nstrings; j++)
		st = json_list(&r->strings[j].levels_json,
		               r->strings[j].levels,
		               r->strings[j].nlevels, err);
	return st;
}

/* zm.columns: the names of the feature columns as a JSON list. */
static enum zm_status csv_columns_json(struct zm_dataset_reader *r,
                                       char *const *names,
                                       struct zm_error *err)
{
	char **fnames = zm_calloc(r->nfeatures, sizeof(*fnames));
	enum zm_status st;
	size_t i;

	if (!fnames)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (i = 0; i < r->nfeatures; i++)
		fnames[i] = names[r->feature_cols[i]];
	st = json_list(&r->columns_json, fnames, r->nfeatures, err);
	free(fnames);
	return st;
}

/*
 * After csv_scan's pass: every column but the label and id is a feature
 * (only numbers), a string column (its own levels), or an error.
 */
static enum zm_status csv_classify(struct zm_dataset_reader *r, char **names,
                                   const struct bad_value *bad,
                                   const bool *numbers, const bool *text,
                                   struct zm_error *err)
{
	size_t i;

	for (i = 0; i < r->ncols; i++) {
		struct csv_strings *sc;

		if ((long)i == r->label_col || (long)i == r->id_col)
			continue;
		if (!bad[i].line) {
			r->feature_cols[r->nfeatures++] = i;
			continue;
		}
		/* Numbers and other values: a typo, not a string column;
		 * nothing but empty fields: missing numbers. */
		if (numbers[i] || !text[i])
			return not_a_number(r, &bad[i], names[i], err);
		sc = &r->strings[r->nstrings++];
		sc->col = i;
		sc->tensor_name = zm_strconcat(ZM_DATA_COLUMN_PREFIX, names[i],
		                               NULL);
		sc->meta_key = zm_strconcat(ZM_DATA_LEVELS_PREFIX, names[i], NULL);
		if (!sc->tensor_name || !sc->meta_key)
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	if (r->nfeatures == 0)
		return zm_error_set(err, ZM_ERR_DATA,
		                    "%s: no feature columns (only label and id)",
		                    r->csv->src.name);
	return ZM_OK;
}

static enum zm_status csv_scan(struct zm_dataset_reader *r,
                               const struct zm_dataset_options *o,
                               struct zm_error *err)
{
	struct csv *c = r->csv;
	char **names = NULL;
	struct bad_value *bad = NULL;
	bool *numbers = NULL;        /* per column: some value is a number */
	bool *text = NULL;           /* ... some other value is not empty */
	bool label_int = true, label_num = true, eof, id_int = true;
	enum zm_status st;
	size_t i;
	char *hdr;

	st = csv_record(c, &eof, err);
	if (st != ZM_OK)
		return st;
	if (eof)
		return zm_error_set(err, ZM_ERR_DATA,
		                    "%s: empty file, expected a header row",
		                    c->src.name);
	/* A UTF-8 byte order mark is not part of the first name. */
	hdr = c->text;
	if (c->nfields && strncmp(hdr, "\xef\xbb\xbf", 3) == 0)
		c->starts[0] += 3;
	r->ncols = c->nfields;
	names = zm_calloc(r->ncols, sizeof(*names));
	bad = zm_calloc(r->ncols, sizeof(*bad));
	numbers = zm_calloc(r->ncols, sizeof(*numbers));
	text = zm_calloc(r->ncols, sizeof(*text));
	r->feature_cols = zm_calloc(r->ncols, sizeof(*r->feature_cols));
	r->strings = zm_calloc(r->ncols, sizeof(*r->strings));
	if (!names || !bad || !numbers || !text || !r->feature_cols ||
	    !r->strings) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((st = csv_header(r, o, names, err)))
		goto out;

	for (;;) {
		st = csv_record(c, &eof, err);
		if (st != ZM_OK)
			goto out;
		if (eof)
			break;
		/* A short last row without its newline is a cut file, not a
		 * ragged one (a cut gzip file fails below the CSV layer). */
		if (c->nfields < r->ncols && c->rec_cut) {
			st = zm_error_set(err, ZM_ERR_FORMAT,
			                  "%s:%lu: truncated (the last row has %zu "
			                  "of %zu fields and no newline)",
			                  c->src.name, c->rec_line, c->nfields,
			                  r->ncols);
			goto out;
		}
		if (c->nfields != r->ncols) {
			st = zm_error_set(err, ZM_ERR_DATA,
			                  "%s:%lu: %zu fields, expected %zu as in "
			                  "the header", c->src.name, c->rec_line,
			                  c->nfields, r->ncols);
			goto out;
		}
		for (i = 0; i < r->ncols; i++) {
			const char *f = csv_field(c, i);
			double v;
			int64_t iv;

			if ((long)i == r->label_col) {
				if (*f == '\0') {
					st = zm_error_set(err, ZM_ERR_DATA,
					                  "%s:%lu:%zu: empty label",
					                  c->src.name, c->rec_line,
					                  i + 1);
					goto out;
				}
				if (label_int && !csv_integer(f, &iv))
					label_int = false;
				if (label_num && !csv_number(f, &v))
					label_num = false;
				if (label_num && !label_int &&
				    !(fabs(v) <= ZM_DATA_MAX_ABS)) {
					st = not_f32(c, i + 1, names[i], f, err);
					goto out;
				}
				continue;
			}
			if ((long)i == r->id_col && id_int &&
			    !csv_integer(f, &iv))
				id_int = false;
			if (csv_number(f, &v)) {
				/* Features are F32, and training squares
				 * them (variances, gradients): a value whose
				 * square is not finite would make it
				 * diverge (one 1e30 did), so it is refused
				 * here, with its place, not trained on. */
				if (!(fabs(v) <= ZM_DATA_MAX_ABS)) {
					st = not_f32(c, i + 1, names[i], f, err);
					goto out;
				}
				numbers[i] = true;
				continue;
			}
			remember_bad(&bad[i], c->rec_line, i + 1, f);
			if (f[strspn(f, " \t")] != '\0')
				text[i] = true;
		}
		r->csv_rows++;
	}
	if (r->id_col >= 0 && !id_int)
		r->id_col = -1;      /* not ids: an ordinary column */
	if ((st = csv_classify(r, names, bad, numbers, text, err)))
		goto out;
	if (r->label_col >= 0)
		r->label_kind = label_int ? LABEL_INT
		              : label_num ? LABEL_FLOAT : LABEL_CLASS;
	if ((r->label_kind == LABEL_CLASS || r->nstrings) &&
	    (st = csv_levels(r, err)))
		goto out;
	if ((st = csv_columns_json(r, names, err)))
		goto out;
	/* Position the second pass after the header. */
	st = src_rewind(&c->src, err);
	if (st != ZM_OK)
		goto out;
	csv_reset(c);
	st = csv_record(c, &eof, err);
out:
	if (names)
		for (i = 0; i < r->ncols; i++)
			free(names[i]);
	free(names);
	free(bad);
	free(numbers);
	free(text);
	return st;
}

static enum zm_status csv_open(struct zm_dataset_reader *r,
                               const struct zm_dataset_options *o,
                               struct zm_error *err)
{
	enum zm_status st;

	r->csv = zm_calloc(1, sizeof(*r->csv));
	if (!r->csv)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	csv_reset(r->csv);
	st = src_open(&r->csv->src, o->path, o->data, o->len, true, err);
	if (st != ZM_OK)
		return st;
	return csv_scan(r, o, err);
}

static enum zm_status csv_next(struct zm_dataset_reader *r,
                               struct zm_doc *doc, bool *eof,
                               struct zm_error *err)
{
	struct csv *c = r->csv;
	struct zm_tensor x, y, id, *cols = NULL;
	uint64_t left = r->csv_rows - r->rows;
	size_t n, i, k;
	enum zm_status st;
	bool end;

	if (left == 0 && (r->rows > 0 || r->emitted_empty)) {
		*eof = true;
		return ZM_OK;
	}
	n = left < r->batch ? (size_t)left : r->batch;
	zm_tensor_init(&x);
	zm_tensor_init(&y);
	zm_tensor_init(&id);
	if (r->nstrings &&
	    !(cols = zm_calloc(r->nstrings, sizeof(*cols))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (k = 0; k < r->nstrings; k++) {
		int64_t shape[1] = { (int64_t)n };

		zm_tensor_init(&cols[k]);
		st = zm_tensor_alloc(&cols[k], r->strings[k].tensor_name,
		                     ZM_DTYPE_I64, 1, shape, err);
		if (st != ZM_OK)
			goto out;
	}
	{
		int64_t shape[2] = { (int64_t)n, (int64_t)r->nfeatures };

		st = zm_tensor_alloc(&x, "x", ZM_DTYPE_F32, 2, shape, err);
		if (st != ZM_OK)
			goto out;
	}
	if (r->label_col >= 0) {
		int64_t shape[1] = { (int64_t)n };

		st = zm_tensor_alloc(&y, "y", r->label_kind == LABEL_FLOAT
		                     ? ZM_DTYPE_F32 : ZM_DTYPE_I64, 1, shape, err);
		if (st != ZM_OK)
			goto out;
	}
	if (r->id_col >= 0) {
		int64_t shape[1] = { (int64_t)n };

		st = zm_tensor_alloc(&id, "id", ZM_DTYPE_I64, 1, shape, err);
		if (st != ZM_OK)
			goto out;
	}
	for (i = 0; i < n; i++) {
		float *xr = (float *)x.data + i * r->nfeatures;
		double v;
		int64_t iv;

		st = csv_record(c, &end, err);
		if (st != ZM_OK)
			goto out;
		/* The file changed between the passes. */
		if (end || c->nfields != r->ncols) {
			st = zm_error_set(err, ZM_ERR_IO,
			                  "%s: changed while being read",
			                  c->src.name);
			goto out;
		}
		for (k = 0; k < r->nfeatures; k++) {
			if (!csv_number(csv_field(c, r->feature_cols[k]), &v))
				v = NAN;
			xr[k] = (float)v;
		}
		if (r->id_col >= 0) {
			if (!csv_integer(csv_field(c, (size_t)r->id_col), &iv))
				iv = -1;
			((int64_t *)id.data)[i] = iv;
		}
		for (k = 0; k < r->nstrings; k++) {
			const struct csv_strings *sc = &r->strings[k];
			const char *key = csv_field(c, sc->col);
			char **hit = bsearch(&key, sc->levels, sc->nlevels,
			                     sizeof(*sc->levels), cmp_str);

			if (!hit) {
				st = zm_error_set(err, ZM_ERR_IO,
				                  "%s: changed while being read",
				                  c->src.name);
				goto out;
			}
			((int64_t *)cols[k].data)[i] = hit - sc->levels;
		}
		if (r->label_col >= 0) {
			const char *f = csv_field(c, (size_t)r->label_col);

			if (r->label_kind == LABEL_INT) {
				if (!csv_integer(f, &iv))
					iv = -1;
				((int64_t *)y.data)[i] = iv;
			} else if (r->label_kind == LABEL_FLOAT) {
				if (!csv_number(f, &v))
					v = NAN;
				((float *)y.data)[i] = (float)v;
			} else {
				const char *key = f;
				char **hit = bsearch(&key, r->classes,
				                     r->nclasses,
				                     sizeof(*r->classes), cmp_str);

				((int64_t *)y.data)[i] =
					hit ? (int64_t)(hit - r->classes) : -1;
			}
		}
	}
	st = zm_doc_add(doc, &x, err);
	if (st == ZM_OK && r->label_col >= 0)
		st = zm_doc_add(doc, &y, err);
	if (st == ZM_OK && r->id_col >= 0)
		st = zm_doc_add(doc, &id, err);
	for (k = 0; st == ZM_OK && k < r->nstrings; k++) {
		st = zm_doc_add(doc, &cols[k], err);
		if (st == ZM_OK)
			st = zm_doc_set_meta(doc, r->strings[k].meta_key,
			                     r->strings[k].levels_json, err);
	}
	if (st == ZM_OK)
		st = set_common_meta(doc, n, err);
	if (st == ZM_OK)
		st = zm_doc_set_meta(doc, ZM_META_COLUMNS, r->columns_json, err);
	if (st == ZM_OK && r->label_name)
		st = zm_doc_set_meta(doc, ZM_META_LABEL, r->label_name, err);
	if (st == ZM_OK && r->classes_json)
		st = zm_doc_set_meta(doc, ZM_META_CLASSES, r->classes_json, err);
	if (st != ZM_OK)
		goto out;
	r->rows += n;
	if (n == 0)
		r->emitted_empty = true;
out:
	zm_tensor_release(&x);
	zm_tensor_release(&y);
	zm_tensor_release(&id);
	for (k = 0; cols && k < r->nstrings; k++)
		zm_tensor_release(&cols[k]);
	free(cols);
	return st;
}

/* ---- streams ---- */

static enum zm_status stream_next(struct zm_dataset_reader *r,
                                  struct zm_doc *doc, bool *eof,
                                  struct zm_error *err)
{
	enum zm_status st;
	const char *kind;
	size_t n;
	char where[ZM_WHERE_MAX];

	st = zm_reader_next(r->stream, doc, eof, err);
	if (st != ZM_OK || *eof)
		return st;
	snprintf(where, sizeof(where), "%s: document %zu",
	         zm_reader_name(r->stream), zm_reader_doc_number(r->stream));
	kind = zm_doc_meta(doc, ZM_META_KIND);
	if (kind && strcmp(kind, "data") != 0)
		return zm_error_set(err, ZM_ERR_DATA,
		                    "%s: a %s document, expected data", where, kind);
	st = zm_data_check(doc, where, &n, err);
	if (st != ZM_OK)
		return st;
	r->rows += n;
	return ZM_OK;
}

/* ---- public entry points ---- */

static enum zm_status prefetch_read(void *ctx, size_t slot, bool *eof,
                                    struct zm_error *err);

enum zm_status zm_dataset_open(struct zm_dataset_reader **out,
                               const struct zm_dataset_options *o,
                               struct zm_error *err)
{
	struct zm_dataset_reader *r;
	struct zm_error perr;
	enum zm_status st;

	*out = NULL;
	if (o->batch == 0 || o->batch > ZM_DATA_BATCH_MAX)
		return zm_error_set(err, ZM_ERR_USAGE,
		                    "batch size %zu out of range", o->batch);
	r = zm_calloc(1, sizeof(*r));
	if (!r)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	r->kind = o->kind;
	r->batch = o->batch;
	r->label_col = r->id_col = -1;
	switch (o->kind) {
	case ZM_DATASET_IDX:
		st = idx_open(r, o, err);
		break;
	case ZM_DATASET_CSV:
		st = csv_open(r, o, err);
		break;
	case ZM_DATASET_STREAM:
		if (o->data)
			st = zm_reader_open_mem(&r->stream, o->data, o->len,
			                        o->path ? o->path : "(memory)", err);
		else
			st = zm_reader_open(&r->stream, o->path ? o->path : "-",
			                    err);
		break;
	default:
		ZM_ASSERT(!"unknown dataset kind");
	}
	if (st != ZM_OK) {
		zm_dataset_close(r);
		return st;
	}
	/* Without a thread (none could be started) the batches are read
	 * on the caller's, as they would be without prefetch. */
	if (o->prefetch && zm_prefetch_start(&r->pf, 1, prefetch_read, r,
	                                     &perr) != ZM_OK)
		r->pf = NULL;
	*out = r;
	return ZM_OK;
}

/* The next batch, read on the calling thread. */
static enum zm_status dataset_read(struct zm_dataset_reader *r,
                                   struct zm_doc *doc, bool *eof,
                                   struct zm_error *err)
{
	enum zm_status st;

	zm_doc_release(doc);
	*eof = false;
	if (r->done) {
		*eof = true;
		return ZM_OK;
	}
	switch (r->kind) {
	case ZM_DATASET_IDX:
		st = idx_next(r, doc, eof, err);
		break;
	case ZM_DATASET_CSV:
		st = csv_next(r, doc, eof, err);
		break;
	default:
		st = stream_next(r, doc, eof, err);
		break;
	}
	if (st != ZM_OK || *eof)
		zm_doc_release(doc);
	if (st == ZM_OK && *eof)
		r->done = true;
	return st;
}

/* The reader thread's function: the next batch into r->slot. */
static enum zm_status prefetch_read(void *ctx, size_t slot, bool *eof,
                                    struct zm_error *err)
{
	struct zm_dataset_reader *r = ctx;
	enum zm_status st;

	(void)slot;
	st = dataset_read(r, &r->slot, eof, err);
	r->slot_rows = r->rows;
	return st;
}

enum zm_status zm_dataset_next(struct zm_dataset_reader *r,
                               struct zm_doc *doc, bool *eof,
                               struct zm_error *err)
{
	enum zm_status st;
	size_t slot;

	if (!r->pf)
		return dataset_read(r, doc, eof, err);
	zm_doc_release(doc);
	st = zm_prefetch_take(r->pf, &slot, eof, err);
	if (st != ZM_OK || *eof)
		return st;
	/* The document changes hands without a copy. */
	*doc = r->slot;
	zm_doc_init(&r->slot);
	r->rows_taken = r->slot_rows;
	zm_prefetch_done(r->pf);
	return ZM_OK;
}
