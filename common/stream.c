/*
 * gzip safetensors streams: the reader (gzip members or raw bytes, one
 * document at a time) and the writer (one gzip member per document,
 * compression chosen per payload).  Documents in memory are doc.c's.
 *
 * Reading is layered: an input file of fileio.h (fd or memory) that turns
 * the input into decompressed bytes (inflate, or a plain copy) and checks
 * every gzip member, and a buffered byte reader on top that the document
 * parser uses.  Large reads
 * bypass the buffer and inflate straight into the tensor's memory, so a
 * document costs little more than inflating it.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "config.h"
#include "fileio.h"
#include "json.h"
#include "mem.h"
#include "stream.h"

enum {
	OUT_BUF = 256 * 1024,
	ZBUF = 256 * 1024
};

#define DEFAULT_LIMIT ((uint64_t)16 << 30)

/* ---- reading ---- */

struct zm_reader {
	char *name;                 /* for messages, owned */
	struct zm_infile *in;       /* the bytes, inflated and checked */
	/* Decompressed bytes produced but not yet consumed. */
	unsigned char *out;         /* owned */
	size_t out_pos, out_len;
	uint64_t limit;
	size_t doc_no;              /* 1-based number of the current document */
	bool any_bytes;             /* some byte has been read */
	/* The current document while its data is being read. */
	bool in_doc;
	size_t n_tensors, next_index;
	uint64_t *sizes;            /* owned, per tensor in data order */
	char **names;               /* owned, per tensor */
	uint64_t data_left;
	uint64_t part;              /* bytes of tensor next_index read so far */
	/* A reader that failed keeps failing with the same message. */
	bool failed;
	struct zm_error fail;
};

/* The limit from ZM_MAX_MEMORY (default when unset); false when the
 * variable is set but malformed: a safety limit the user mistyped must
 * not silently turn into the default. */
static bool limit_from_env(uint64_t *limit)
{
	const char *s = getenv("ZM_MAX_MEMORY");
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	*limit = DEFAULT_LIMIT;
	if (!s || !*s)
		return true;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *s == '-')
		return false;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	default: break;
	}
	if (*end == 'i' || *end == 'B')
		end++;
	if (*end == 'B')
		end++;
	if (*end || v > (UINT64_MAX >> shift))
		return false;
	*limit = (uint64_t)v << shift;
	return true;
}

static enum zm_status reader_new(struct zm_reader **rp, const char *name,
                                 struct zm_error *err)
{
	struct zm_reader *r = zm_calloc(1, sizeof(*r));

	*rp = NULL;
	if (!r)
		return zm_error_set(err, ZM_ERR_NOMEM, "%s: out of memory", name);
	r->name = zm_strdup(name);
	r->out = zm_malloc(OUT_BUF);
	if (!r->name || !r->out) {
		zm_reader_close(r);
		return zm_error_set(err, ZM_ERR_NOMEM, "%s: out of memory", name);
	}
	if (!limit_from_env(&r->limit)) {
		zm_reader_close(r);
		return zm_error_set(err, ZM_ERR_USAGE,
		                    "ZM_MAX_MEMORY: expected a size in bytes with "
		                    "an optional K, M, G or T suffix, got '%s'",
		                    getenv("ZM_MAX_MEMORY"));
	}
	*rp = r;
	return ZM_OK;
}

enum zm_status zm_reader_open(struct zm_reader **rp, const char *path,
                              struct zm_error *err)
{
	bool is_stdin = strcmp(path, "-") == 0;
	struct zm_reader *r;
	enum zm_status st;

	st = reader_new(&r, is_stdin ? "<stdin>" : path, err);
	if (st != ZM_OK)
		return st;
	st = zm_infile_open(&r->in, path, 0, err);
	if (st != ZM_OK) {
		zm_reader_close(r);
		return st;
	}
	*rp = r;
	return ZM_OK;
}

enum zm_status zm_reader_open_mem(struct zm_reader **rp, const void *data,
                                  size_t len, const char *name,
                                  struct zm_error *err)
{
	struct zm_reader *r;
	enum zm_status st;

	st = reader_new(&r, name ? name : "<memory>", err);
	if (st != ZM_OK)
		return st;
	st = zm_infile_open_mem(&r->in, data, len, r->name, err);
	if (st != ZM_OK) {
		zm_reader_close(r);
		return st;
	}
	*rp = r;
	return ZM_OK;
}

static void reader_forget_doc(struct zm_reader *r)
{
	size_t i;

	for (i = 0; i < r->n_tensors; i++)
		free(r->names[i]);
	free(r->names);
	free(r->sizes);
	r->names = NULL;
	r->sizes = NULL;
	r->n_tensors = 0;
	r->next_index = 0;
	r->data_left = 0;
	r->part = 0;
	r->in_doc = false;
}

void zm_reader_close(struct zm_reader *r)
{
	if (!r)
		return;
	zm_infile_close(r->in);
	reader_forget_doc(r);
	free(r->out);
	free(r->name);
	free(r);
}

void zm_reader_set_limit(struct zm_reader *r, uint64_t max_doc_bytes)
{
	r->limit = max_doc_bytes;
}

const char *zm_reader_name(const struct zm_reader *r)
{
	return r->name;
}

size_t zm_reader_doc_number(const struct zm_reader *r)
{
	return r->doc_no;
}

/* Sets err to "NAME: document K: message", remembers it and returns
 * status. */
static enum zm_status rerr(struct zm_reader *r, struct zm_error *err,
                           enum zm_status status, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static enum zm_status rerr(struct zm_reader *r, struct zm_error *err,
                           enum zm_status status, const char *fmt, ...)
{
	char msg[ZM_ERROR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	r->failed = true;
	zm_error_set(&r->fail, status, "%s: document %zu: %s", r->name,
	             r->doc_no ? r->doc_no : 1, msg);
	if (err)
		*err = r->fail;
	return status;
}

/* Remembers an error of the input file (which names the file and says
 * what is wrong with its bytes: truncation, corrupt gzip) as it is. */
static enum zm_status in_failed(struct zm_reader *r, struct zm_error *err,
                                enum zm_status st)
{
	r->failed = true;
	if (err)
		*err = r->fail;
	return st;
}

/* Decompressed bytes from the input: up to cap, 0 only at its clean end. */
static enum zm_status produce(struct zm_reader *r, unsigned char *dst,
                              size_t cap, size_t *got, struct zm_error *err)
{
	enum zm_status st = zm_infile_read(r->in, dst, cap, got, &r->fail);

	if (st != ZM_OK)
		return in_failed(r, err, st);
	if (*got)
		r->any_bytes = true;
	return ZM_OK;
}

/* At the end of a document: the gzip member that ends there must end
 * whole (see zm_infile_settle). */
static enum zm_status settle(struct zm_reader *r, struct zm_error *err)
{
	enum zm_status st;

	if (r->out_pos < r->out_len)
		return ZM_OK;           /* more was inflated: no member end here */
	st = zm_infile_settle(r->in, &r->fail);
	return st == ZM_OK ? ZM_OK : in_failed(r, err, st);
}

/* Reads up to n bytes; *got < n only at the end of the input. */
static enum zm_status read_bytes(struct zm_reader *r, void *dst, size_t n,
                                 size_t *got, struct zm_error *err)
{
	unsigned char *d = dst;
	size_t done = 0;

	while (done < n) {
		size_t have = r->out_len - r->out_pos, take, p;
		enum zm_status st;

		if (have) {
			take = have < n - done ? have : n - done;
			memcpy(d + done, r->out + r->out_pos, take);
			r->out_pos += take;
			done += take;
			continue;
		}
		if (n - done >= OUT_BUF / 4) {
			st = produce(r, d + done, n - done, &p, err);
			if (st != ZM_OK)
				return st;
			if (p == 0)
				break;
			done += p;
			continue;
		}
		r->out_pos = r->out_len = 0;
		st = produce(r, r->out, OUT_BUF, &p, err);
		if (st != ZM_OK)
			return st;
		if (p == 0)
			break;
		r->out_len = p;
	}
	*got = done;
	return ZM_OK;
}

/* Discards n bytes; *got < n only at the end of the input. */
static enum zm_status skip_bytes(struct zm_reader *r, uint64_t n,
                                 uint64_t *got, struct zm_error *err)
{
	uint64_t done = 0;

	while (done < n) {
		size_t have = r->out_len - r->out_pos, p;
		enum zm_status st;

		if (have) {
			size_t take = have < n - done ? have : (size_t)(n - done);
			r->out_pos += take;
			done += take;
			continue;
		}
		r->out_pos = r->out_len = 0;
		st = produce(r, r->out, OUT_BUF, &p, err);
		if (st != ZM_OK)
			return st;
		if (p == 0)
			break;
		r->out_len = p;
	}
	*got = done;
	return ZM_OK;
}

/* A JSON non-negative integer: digits only, no sign, no fraction, no
 * leading zeros (plain, i.e. unquoted, in the source). */
static bool json_uint(const struct zm_node *n, uint64_t *out)
{
	const char *p;
	uint64_t v = 0;

	if (n->type != ZM_NODE_SCALAR || !n->plain || n->len == 0)
		return false;
	if (n->value[0] == '0' && n->len > 1)
		return false;
	for (p = n->value; *p; p++) {
		unsigned d;
		if (*p < '0' || *p > '9')
			return false;
		d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	if ((size_t)(p - n->value) != n->len)
		return false;
	*out = v;
	return true;
}

struct hdr_entry {
	size_t order;               /* position in the header */
	uint64_t begin, end;
	struct zm_tensor t;
};

static int hdr_cmp(const void *a, const void *b)
{
	const struct hdr_entry *x = a, *y = b;

	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return x->order < y->order ? -1 : x->order > y->order;
}

/* Reads a tensor entry of the header into e (name already set). */
static enum zm_status parse_tensor(struct zm_reader *r, const char *name,
                                   const struct zm_node *v,
                                   struct hdr_entry *e, struct zm_error *err)
{
	const struct zm_node *dt, *shape, *offs;
	size_t i, numel, nbytes;
	uint64_t u;

	if (v->type != ZM_NODE_MAP)
		return rerr(r, err, ZM_ERR_FORMAT,
		            "tensor '%s': expected an object", name);
	dt = zm_node_get(v, "dtype");
	shape = zm_node_get(v, "shape");
	offs = zm_node_get(v, "data_offsets");
	if (!dt || !shape || !offs)
		return rerr(r, err, ZM_ERR_FORMAT, "tensor '%s': missing %s",
		            name, !dt ? "dtype" : !shape ? "shape" : "data_offsets");
	if (dt->type != ZM_NODE_SCALAR || !zm_dtype_parse(dt->value,
	                                                  &e->t.dtype))
		return rerr(r, err, ZM_ERR_FORMAT, "tensor '%s': unknown dtype '%s'",
		            name, dt->type == ZM_NODE_SCALAR ? dt->value : "?");
	if (shape->type != ZM_NODE_SEQ)
		return rerr(r, err, ZM_ERR_FORMAT,
		            "tensor '%s': shape is not a list", name);
	if (shape->count > ZM_MAX_DIMS)
		return rerr(r, err, ZM_ERR_FORMAT,
		            "tensor '%s': shape has %zu dimensions (at most %d)",
		            name, shape->count, ZM_MAX_DIMS);
	for (i = 0; i < shape->count; i++) {
		const struct zm_node *d = shape->items[i];
		if (!json_uint(d, &u) || u > INT64_MAX)
			return rerr(r, err, ZM_ERR_FORMAT,
			            "tensor '%s': shape dimension %zu is not a"
			            " non-negative integer ('%s')", name, i,
			            d->type == ZM_NODE_SCALAR ? d->value : "?");
		e->t.shape[i] = (int64_t)u;
	}
	e->t.ndim = (int)shape->count;
	if (offs->type != ZM_NODE_SEQ || offs->count != 2 ||
	    !json_uint(offs->items[0], &e->begin) ||
	    !json_uint(offs->items[1], &e->end))
		return rerr(r, err, ZM_ERR_FORMAT,
		            "tensor '%s': data_offsets is not two integers", name);
	if (e->begin > e->end)
		return rerr(r, err, ZM_ERR_FORMAT,
		            "tensor '%s': data_offsets [%llu, %llu] end before"
		            " they begin", name, (unsigned long long)e->begin,
		            (unsigned long long)e->end);
	if (!zm_shape_numel(e->t.ndim, e->t.shape, &numel) ||
	    !zm_size_mul(numel, zm_dtype_size(e->t.dtype), &nbytes))
		return rerr(r, err, ZM_ERR_FORMAT, "tensor '%s': shape too large",
		            name);
	if ((uint64_t)nbytes != e->end - e->begin) {
		char sh[128];
		zm_shape_format(e->t.ndim, e->t.shape, sh, sizeof(sh));
		return rerr(r, err, ZM_ERR_FORMAT,
		            "tensor '%s': %s %s needs %zu bytes but data_offsets"
		            " [%llu, %llu] hold %llu", name,
		            zm_dtype_name(e->t.dtype), sh, nbytes,
		            (unsigned long long)e->begin,
		            (unsigned long long)e->end,
		            (unsigned long long)(e->end - e->begin));
	}
	e->t.nbytes = nbytes;
	return ZM_OK;
}

static enum zm_status parse_meta(struct zm_reader *r, const struct zm_node *m,
                                 struct zm_doc *doc, struct zm_error *err)
{
	size_t i;

	if (m->type != ZM_NODE_MAP)
		return rerr(r, err, ZM_ERR_FORMAT, "__metadata__ is not an object");
	for (i = 0; i < m->count; i++) {
		const struct zm_node *v = m->items[i];
		if (v->type != ZM_NODE_SCALAR)
			return rerr(r, err, ZM_ERR_FORMAT,
			            "__metadata__ '%s': value is not a string",
			            m->keys[i]->value);
		/* Keys and values are C strings for the callers. */
		if (strlen(m->keys[i]->value) != m->keys[i]->len ||
		    strlen(v->value) != v->len)
			return rerr(r, err, ZM_ERR_FORMAT,
			            "__metadata__ '%s': contains a NUL character",
			            m->keys[i]->value);
		if (zm_doc_set_meta(doc, m->keys[i]->value, v->value, err) != ZM_OK)
			return rerr(r, err, ZM_ERR_NOMEM, "out of memory");
	}
	return ZM_OK;
}

/* Turns the parsed header into doc (tensors in data order, no data) and
 * the reader's per-tensor sizes. */
static enum zm_status parse_header(struct zm_reader *r,
                                   const struct zm_node *root,
                                   struct zm_doc *doc, struct zm_error *err)
{
	struct hdr_entry *ents = NULL;
	size_t i, n = 0;
	uint64_t expect = 0;
	enum zm_status st = ZM_OK;

	if (root->type != ZM_NODE_MAP)
		return rerr(r, err, ZM_ERR_FORMAT, "header is not a JSON object");
	ents = zm_calloc(root->count ? root->count : 1, sizeof(*ents));
	if (!ents)
		return rerr(r, err, ZM_ERR_NOMEM, "out of memory");
	for (i = 0; i < root->count; i++) {
		const char *key = root->keys[i]->value;
		struct hdr_entry *e = &ents[n];

		if (strlen(key) != root->keys[i]->len) {
			st = rerr(r, err, ZM_ERR_FORMAT,
			          "tensor name '%s...' contains a NUL character", key);
			goto out;
		}
		if (strcmp(key, "__metadata__") == 0) {
			st = parse_meta(r, root->items[i], doc, err);
			if (st != ZM_OK)
				goto out;
			continue;
		}
		zm_tensor_init(&e->t);
		e->order = i;
		st = parse_tensor(r, key, root->items[i], e, err);
		if (st != ZM_OK)
			goto out;
		n++;
	}
	qsort(ents, n, sizeof(*ents), hdr_cmp);
	/* The tensors must tile [0, total) exactly, as safetensors demands. */
	for (i = 0; i < n; i++) {
		const char *key = root->keys[ents[i].order]->value;
		if (ents[i].begin != expect) {
			st = rerr(r, err, ZM_ERR_FORMAT,
			          "tensor '%s': data_offsets [%llu, %llu] %s (expected"
			          " it to begin at %llu)", key,
			          (unsigned long long)ents[i].begin,
			          (unsigned long long)ents[i].end,
			          ents[i].begin < expect ? "overlap another tensor" :
			          "leave a gap", (unsigned long long)expect);
			goto out;
		}
		expect = ents[i].end;
	}
	if (expect > r->limit) {
		st = rerr(r, err, ZM_ERR_FORMAT,
		          "data section of %llu bytes exceeds the limit of %llu"
		          " bytes (ZM_MAX_MEMORY)", (unsigned long long)expect,
		          (unsigned long long)r->limit);
		goto out;
	}
	doc->tensors = zm_calloc(n ? n : 1, sizeof(*doc->tensors));
	r->sizes = zm_calloc(n ? n : 1, sizeof(*r->sizes));
	r->names = zm_calloc(n ? n : 1, sizeof(*r->names));
	if (!doc->tensors || !r->sizes || !r->names) {
		st = rerr(r, err, ZM_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < n; i++) {
		const char *key = root->keys[ents[i].order]->value;
		struct zm_tensor *t = &doc->tensors[i];

		*t = ents[i].t;
		t->name = zm_strdup(key);
		r->names[i] = zm_strdup(key);
		r->sizes[i] = ents[i].t.nbytes;
		doc->n_tensors = i + 1;
		r->n_tensors = i + 1;
		if (!t->name || !r->names[i]) {
			st = rerr(r, err, ZM_ERR_NOMEM, "out of memory");
			goto out;
		}
	}
	r->data_left = expect;
out:
	free(ents);
	return st;
}

/*
 * The first bytes of the input are not the length of a safetensors
 * header: say what the input looks like instead, since the usual cause is
 * a CSV or IDX file given where a stream was expected.
 */
static enum zm_status not_a_stream(struct zm_reader *r,
                                   const unsigned char *p, size_t n,
                                   struct zm_error *err)
{
	const char *what = "not a zoomerge stream, gzip or CSV";
	bool text = n > 0, idx;
	size_t i = 0;

	/* Plain ASCII text, after a UTF-8 byte order mark: random bytes
	 * pass this less than once in 2,000 tries. */
	if (n >= 3 && p[0] == 0xef && p[1] == 0xbb && p[2] == 0xbf)
		i = 3;
	for (; i < n; i++)
		if ((p[i] < 0x20 || p[i] > 0x7e) && p[i] != '\t' &&
		    p[i] != '\n' && p[i] != '\r')
			text = false;
	idx = n >= 4 && p[0] == 0 && p[1] == 0 && p[2] == 8 &&
	      (p[3] == 1 || p[3] == 3);
	if (idx)
		what = "looks like IDX, not a zoomerge stream (read it with "
		       "--from idx --images FILE, or convert it with "
		       "tensor import --from idx)";
	else if (text)
		what = "looks like CSV, not a zoomerge stream (read it with "
		       "--from csv, or convert it with tensor import "
		       "--from csv)";
	r->failed = true;
	/* Neither: the header length it would have is all there is to say. */
	if (!text && !idx && n == 8) {
		uint64_t hlen = 0;
		int k;

		for (k = 7; k >= 0; k--)
			hlen = (hlen << 8) | p[k];
		zm_error_set(&r->fail, ZM_ERR_FORMAT, "%s: %s (bad header "
		             "length %llu)", r->name, what,
		             (unsigned long long)hlen);
	} else {
		zm_error_set(&r->fail, ZM_ERR_FORMAT, "%s: %s", r->name, what);
	}
	if (err)
		*err = r->fail;
	return ZM_ERR_FORMAT;
}

enum zm_status zm_reader_next_header(struct zm_reader *r, struct zm_doc *doc,
                                     bool *eof, struct zm_error *err)
{
	unsigned char lenbuf[8];
	size_t got, cap, have;
	uint64_t hlen, skipped;
	char *hdr = NULL;
	struct zm_error perr;
	struct zm_node *root = NULL;
	enum zm_status st;
	int i;

	zm_doc_release(doc);
	*eof = false;
	if (r->failed) {
		if (err)
			*err = r->fail;
		return r->fail.status;
	}
	if (r->in_doc) {
		st = skip_bytes(r, r->data_left, &skipped, err);
		if (st != ZM_OK)
			return st;
		if (skipped < r->data_left)
			return rerr(r, err, ZM_ERR_FORMAT, "truncated data section"
			            " (%llu bytes missing)",
			            (unsigned long long)(r->data_left - skipped));
	}
	reader_forget_doc(r);
	r->doc_no++;
	st = read_bytes(r, lenbuf, sizeof(lenbuf), &got, err);
	if (st != ZM_OK)
		return st;
	if (got == 0) {
		r->doc_no--;
		*eof = true;
		return ZM_OK;
	}
	if (got < sizeof(lenbuf) && r->doc_no == 1)
		return not_a_stream(r, lenbuf, got, err);
	if (got < sizeof(lenbuf))
		return rerr(r, err, ZM_ERR_FORMAT, "trailing garbage (%zu bytes"
		            " after the last document)", got);
	hlen = 0;
	for (i = 7; i >= 0; i--)
		hlen = (hlen << 8) | lenbuf[i];
	if ((hlen == 0 || hlen > ZM_MAX_HEADER_BYTES) && r->doc_no == 1)
		return not_a_stream(r, lenbuf, got, err);
	if (hlen == 0 || hlen > ZM_MAX_HEADER_BYTES)
		return rerr(r, err, ZM_ERR_FORMAT, "bad header length %llu (must"
		            " be 1 to %llu bytes; trailing garbage?)",
		            (unsigned long long)hlen,
		            (unsigned long long)ZM_MAX_HEADER_BYTES);
	/* The header buffer grows as bytes arrive, so a hostile length costs
	 * no more memory than the bytes actually sent. */
	cap = hlen < 65536 ? (size_t)hlen : 65536;
	have = 0;
	hdr = zm_malloc(cap + 1);
	if (!hdr)
		return rerr(r, err, ZM_ERR_NOMEM, "out of memory");
	while (have < hlen) {
		if (have == cap) {
			size_t ncap = cap * 2 < hlen ? cap * 2 : (size_t)hlen;
			char *nh = zm_realloc(hdr, ncap + 1);
			if (!nh) {
				st = rerr(r, err, ZM_ERR_NOMEM, "out of memory");
				goto out;
			}
			hdr = nh;
			cap = ncap;
		}
		st = read_bytes(r, hdr + have, cap - have, &got, err);
		if (st != ZM_OK)
			goto out;
		have += got;
		if (have < cap)
			break;
	}
	if (have < hlen) {
		st = rerr(r, err, ZM_ERR_FORMAT, "truncated header (%zu of %llu"
		          " bytes)", have, (unsigned long long)hlen);
		goto out;
	}
	hdr[have] = '\0';
	{
		/* JSON only: YAML would accept "a: b" and other non-JSON. */
		size_t k = 0;
		while (k < have && (hdr[k] == ' ' || hdr[k] == '\t' ||
		                    hdr[k] == '\n' || hdr[k] == '\r'))
			k++;
		if (k == have || hdr[k] != '{') {
			st = rerr(r, err, ZM_ERR_FORMAT,
			          "header is not a JSON object");
			goto out;
		}
	}
	st = zm_config_parse(hdr, have, "header", &root, &perr);
	if (st != ZM_OK) {
		st = rerr(r, err, st == ZM_ERR_NOMEM ? ZM_ERR_NOMEM : ZM_ERR_FORMAT,
		          "invalid JSON in %s", perr.msg);
		goto out;
	}
	free(hdr);
	hdr = NULL;
	st = parse_header(r, root, doc, err);
	if (st != ZM_OK)
		goto out;
	r->in_doc = true;
	if (r->data_left == 0)
		st = settle(r, err);
out:
	zm_node_free(root);
	free(hdr);
	if (st != ZM_OK) {
		zm_doc_release(doc);
		reader_forget_doc(r);
	}
	return st;
}

enum zm_status zm_reader_read_data(struct zm_reader *r, size_t index,
                                   void *dst, struct zm_error *err)
{
	size_t got, n;
	enum zm_status st;

	if (r->failed) {
		if (err)
			*err = r->fail;
		return r->fail.status;
	}
	if (!r->in_doc || index != r->next_index || index >= r->n_tensors)
		return zm_error_set(err, ZM_ERR_USAGE,
		                    "%s: document %zu: tensor %zu read out of order",
		                    r->name, r->doc_no, index);
	if (r->part != 0)
		return zm_error_set(err, ZM_ERR_USAGE,
		                    "%s: document %zu: tensor %zu partly read",
		                    r->name, r->doc_no, index);
	n = (size_t)r->sizes[index];
	st = read_bytes(r, dst, n, &got, err);
	if (st != ZM_OK)
		return st;
	if (got < n)
		return rerr(r, err, ZM_ERR_FORMAT, "tensor '%s': truncated data"
		            " (%zu of %zu bytes)", r->names[index], got, n);
	r->data_left -= n;
	r->next_index++;
	return r->data_left == 0 ? settle(r, err) : ZM_OK;
}

enum zm_status zm_reader_read_part(struct zm_reader *r, size_t index,
                                   void *dst, size_t n, struct zm_error *err)
{
	size_t got;
	enum zm_status st;

	if (r->failed) {
		if (err)
			*err = r->fail;
		return r->fail.status;
	}
	if (!r->in_doc || index != r->next_index || index >= r->n_tensors ||
	    n > r->sizes[index] - r->part)
		return zm_error_set(err, ZM_ERR_USAGE,
		                    "%s: document %zu: tensor %zu read out of order",
		                    r->name, r->doc_no, index);
	st = read_bytes(r, dst, n, &got, err);
	if (st != ZM_OK)
		return st;
	if (got < n)
		return rerr(r, err, ZM_ERR_FORMAT, "tensor '%s': truncated data",
		            r->names[index]);
	r->data_left -= n;
	r->part += n;
	if (r->part == r->sizes[index]) {
		r->part = 0;
		r->next_index++;
	}
	return ZM_OK;
}

enum zm_status zm_reader_next(struct zm_reader *r, struct zm_doc *doc,
                              bool *eof, struct zm_error *err)
{
	enum zm_status st;
	size_t i;

	st = zm_reader_next_header(r, doc, eof, err);
	if (st != ZM_OK || *eof)
		return st;
	for (i = 0; i < doc->n_tensors; i++) {
		struct zm_tensor *t = &doc->tensors[i];
		t->data = zm_malloc(t->nbytes);
		if (!t->data) {
			st = rerr(r, err, ZM_ERR_NOMEM, "tensor '%s': out of memory"
			          " (%zu bytes)", t->name, t->nbytes);
			break;
		}
		t->owns_data = true;
		st = zm_reader_read_data(r, i, t->data, err);
		if (st != ZM_OK)
			break;
	}
	if (st != ZM_OK)
		zm_doc_release(doc);
	return st;
}

/* ---- writing ---- */

bool zm_compress_from_env(int *level)
{
	const char *s = getenv("ZM_COMPRESS");

	if (!s || !*s || strcmp(s, "auto") == 0) {
		*level = ZM_COMPRESS_AUTO;
		return true;
	}
	if (s[0] >= '0' && s[0] <= '9' && s[1] == '\0') {
		*level = s[0] - '0';
		return true;
	}
	return false;
}

int zm_compress_for_path(const char *path, int level)
{
	size_t n = strlen(path);

	return n >= 12 && strcmp(path + n - 12, ".safetensors") == 0
	       ? ZM_COMPRESS_NONE : level;
}

/* Checks that doc can be written: consistent sizes, data present, no
 * reserved or repeated names. */
static enum zm_status doc_check(const struct zm_doc *doc, bool need_data,
                                struct zm_error *err)
{
	size_t i, j, numel, nbytes;

	for (i = 0; i < doc->n_tensors; i++) {
		const struct zm_tensor *t = &doc->tensors[i];
		if (!t->name || strcmp(t->name, "__metadata__") == 0)
			return zm_error_set(err, ZM_ERR_USAGE,
			                    "tensor %zu: missing or reserved name", i);
		if ((unsigned)t->dtype >= ZM_DTYPE_COUNT || t->ndim < 0 ||
		    t->ndim > ZM_MAX_DIMS ||
		    !zm_shape_numel(t->ndim, t->shape, &numel) ||
		    !zm_size_mul(numel, zm_dtype_size(t->dtype), &nbytes) ||
		    nbytes != t->nbytes)
			return zm_error_set(err, ZM_ERR_USAGE,
			                    "tensor '%s': size does not match dtype"
			                    " and shape", t->name);
		if (need_data && t->nbytes && !t->data)
			return zm_error_set(err, ZM_ERR_USAGE,
			                    "tensor '%s': no data", t->name);
		for (j = 0; j < i; j++)
			if (strcmp(doc->tensors[j].name, t->name) == 0)
				return zm_error_set(err, ZM_ERR_USAGE,
				                    "duplicate tensor '%s'", t->name);
	}
	return ZM_OK;
}

/* Longest key (metadata key or tensor name, as escaped JSON) written:
 * YAML, which our reader parses JSON as, limits implicit keys to 1024
 * characters, so a longer one would make a stream nobody can read. */
#define ZM_MAX_KEY_BYTES 1000

/* Appends key as a JSON string; false when it comes out too long. */
static bool put_key(struct zm_buf *b, const char *key)
{
	size_t before = b->len;

	zm_json_string(b, key, strlen(key));
	return b->failed || b->len - before <= ZM_MAX_KEY_BYTES;
}

static enum zm_status key_too_long(struct zm_buf *b, const char *what,
                                   const char *key, struct zm_error *err)
{
	zm_buf_release(b);
	return zm_error_set(err, ZM_ERR_DATA, "%s '%.40s...' is longer than "
	                    "%d bytes", what, key, ZM_MAX_KEY_BYTES);
}

/* The 8-byte length and the JSON header, padded with spaces to a multiple
 * of 8 bytes as the reference writer does (so the data is aligned). */
static enum zm_status build_header(const struct zm_doc *doc, struct zm_buf *b,
                                   uint64_t *total, struct zm_error *err)
{
	uint64_t off = 0, hlen;
	size_t i;
	int d;

	zm_buf_init(b);
	zm_buf_append(b, "\0\0\0\0\0\0\0\0", 8);
	zm_buf_puts(b, "{");
	if (doc->n_meta) {
		zm_buf_puts(b, "\"__metadata__\":{");
		for (i = 0; i < doc->n_meta; i++) {
			if (i)
				zm_buf_puts(b, ",");
			if (!put_key(b, doc->meta[i].key))
				return key_too_long(b, "metadata key",
				                    doc->meta[i].key, err);
			zm_buf_puts(b, ":");
			zm_json_string(b, doc->meta[i].value,
			               strlen(doc->meta[i].value));
		}
		zm_buf_puts(b, "}");
	}
	for (i = 0; i < doc->n_tensors; i++) {
		const struct zm_tensor *t = &doc->tensors[i];
		if (i || doc->n_meta)
			zm_buf_puts(b, ",");
		if (!put_key(b, t->name))
			return key_too_long(b, "tensor name", t->name, err);
		zm_buf_printf(b, ":{\"dtype\":\"%s\",\"shape\":[",
		              zm_dtype_name(t->dtype));
		for (d = 0; d < t->ndim; d++)
			zm_buf_printf(b, "%s%lld", d ? "," : "",
			              (long long)t->shape[d]);
		zm_buf_printf(b, "],\"data_offsets\":[%llu,%llu]}",
		              (unsigned long long)off,
		              (unsigned long long)(off + t->nbytes));
		off += t->nbytes;
	}
	zm_buf_puts(b, "}");
	while (!b->failed && b->len % 8 != 0)
		zm_buf_puts(b, " ");
	if (b->failed) {
		zm_buf_release(b);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	hlen = b->len - 8;
	if (hlen > ZM_MAX_HEADER_BYTES) {
		zm_buf_release(b);
		return zm_error_set(err, ZM_ERR_USAGE,
		                    "header of %llu bytes is too large",
		                    (unsigned long long)hlen);
	}
	for (i = 0; i < 8; i++)
		b->data[i] = (char)(unsigned char)(hlen >> (8 * i));
	*total = off;
	return ZM_OK;
}

enum zm_status zm_doc_serialize(const struct zm_doc *doc, void **bytes,
                                size_t *len, struct zm_error *err)
{
	struct zm_buf b;
	uint64_t total;
	size_t n, i;
	enum zm_status st;
	char *out;

	*bytes = NULL;
	*len = 0;
	st = doc_check(doc, true, err);
	if (st != ZM_OK)
		return st;
	st = build_header(doc, &b, &total, err);
	if (st != ZM_OK)
		return st;
	if (total > SIZE_MAX || !zm_size_add(b.len, (size_t)total, &n) ||
	    !(out = zm_malloc(n))) {
		zm_buf_release(&b);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	memcpy(out, b.data, b.len);
	n = b.len;
	for (i = 0; i < doc->n_tensors; i++) {
		if (doc->tensors[i].nbytes)
			memcpy(out + n, doc->tensors[i].data,
			       doc->tensors[i].nbytes);
		n += doc->tensors[i].nbytes;
	}
	zm_buf_release(&b);
	*bytes = out;
	*len = n;
	return ZM_OK;
}

struct zm_writer {
	struct zm_outfile out;
	int level;                  /* 0-9 or ZM_COMPRESS_AUTO */
	z_stream z;
	bool z_ready;
	unsigned char *zbuf;        /* deflate output, owned */
	int cur_level, cur_strategy;
	bool failed;
	struct zm_error fail;
	/* The document being written. */
	bool in_doc;
	size_t n_tensors, index;
	uint64_t *sizes;            /* owned, bytes per tensor */
	bool *is_float;             /* owned */
	uint64_t left;              /* bytes still due for tensor index */
};

static enum zm_status wfail(struct zm_writer *w, struct zm_error *err,
                            enum zm_status st)
{
	w->failed = true;
	if (err)
		w->fail = *err;
	else
		zm_error_set(&w->fail, st, "%s: write failed", w->out.path);
	return st;
}

enum zm_status zm_writer_open(struct zm_writer **wp, const char *path,
                              int level, struct zm_error *err)
{
	struct zm_writer *w;
	enum zm_status st;
	int zr;

	*wp = NULL;
	if (level != ZM_COMPRESS_AUTO && level != ZM_COMPRESS_NONE &&
	    (level < 0 || level > 9))
		return zm_error_set(err, ZM_ERR_USAGE,
		                    "compression level %d is not 0-9", level);
	w = zm_calloc(1, sizeof(*w));
	if (!w)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	w->level = level;
	w->zbuf = zm_malloc(ZBUF);
	if (!w->zbuf) {
		free(w);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	w->cur_level = level < 0 ? 6 : level;
	w->cur_strategy = Z_DEFAULT_STRATEGY;
	if (level == ZM_COMPRESS_NONE)
		goto open_file;
	zm_zstream_alloc(&w->z);
	/* 15 + 16: gzip wrapper, 32 KiB window. */
	zr = deflateInit2(&w->z, w->cur_level, Z_DEFLATED, 15 + 16, 8,
	                  w->cur_strategy);
	if (zr != Z_OK) {
		free(w->zbuf);
		free(w);
		return zm_error_set(err, ZM_ERR_NOMEM, "cannot start deflate");
	}
	w->z_ready = true;
open_file:
	st = zm_outfile_open(&w->out, path, true, err);
	if (st != ZM_OK) {
		if (w->z_ready)
			deflateEnd(&w->z);
		free(w->zbuf);
		free(w);
		return st;
	}
	*wp = w;
	return ZM_OK;
}

/* Deflates avail_in with flush, writing every full output buffer. */
static enum zm_status deflate_run(struct zm_writer *w, int flush,
                                  struct zm_error *err)
{
	for (;;) {
		int zr;
		size_t n;

		w->z.next_out = w->zbuf;
		w->z.avail_out = ZBUF;
		zr = deflate(&w->z, flush);
		if (zr == Z_STREAM_ERROR)
			return zm_error_set(err, ZM_ERR_IO, "%s: deflate failed",
			                    w->out.path);
		n = ZBUF - w->z.avail_out;
		if (n && zm_outfile_write(&w->out, w->zbuf, n, err) != ZM_OK)
			return err ? err->status : ZM_ERR_IO;
		if (zr == Z_STREAM_END)
			return ZM_OK;
		/* Output space left means deflate has done all it can. */
		if (w->z.avail_out != 0 && w->z.avail_in == 0)
			return ZM_OK;
	}
}

/* Switches level and strategy between payloads.  deflateParams flushes
 * the pending block first and may need several rounds of output space. */
static enum zm_status set_params(struct zm_writer *w, int level,
                                 int strategy, struct zm_error *err)
{
	int tries;

	if (level == w->cur_level && strategy == w->cur_strategy)
		return ZM_OK;
	for (tries = 0; tries < 1000; tries++) {
		int zr;
		size_t n;

		w->z.next_out = w->zbuf;
		w->z.avail_out = ZBUF;
		zr = deflateParams(&w->z, level, strategy);
		n = ZBUF - w->z.avail_out;
		if (n && zm_outfile_write(&w->out, w->zbuf, n, err) != ZM_OK)
			return err ? err->status : ZM_ERR_IO;
		if (zr == Z_OK) {
			w->cur_level = level;
			w->cur_strategy = strategy;
			return ZM_OK;
		}
		if (zr != Z_BUF_ERROR)
			break;
	}
	return zm_error_set(err, ZM_ERR_IO, "%s: deflateParams failed",
	                    w->out.path);
}

static enum zm_status params_for(struct zm_writer *w, bool is_float,
                                 struct zm_error *err)
{
	if (w->level != ZM_COMPRESS_AUTO)
		return ZM_OK;   /* a fixed level, or no deflate at all */
	/* Float mantissas barely compress: Huffman-only gets the same ratio
	 * at several times the speed (DESIGN.md section 2). */
	return set_params(w, 6, is_float ? Z_HUFFMAN_ONLY : Z_DEFAULT_STRATEGY,
	                  err);
}

static enum zm_status deflate_bytes(struct zm_writer *w, const void *data,
                                    size_t n, struct zm_error *err)
{
	const unsigned char *p = data;

	if (w->level == ZM_COMPRESS_NONE)
		return n ? zm_outfile_write(&w->out, data, n, err) : ZM_OK;
	while (n > 0) {
		size_t chunk = n > UINT_MAX ? UINT_MAX : n;
		enum zm_status st;

		w->z.next_in = (unsigned char *)p;
		w->z.avail_in = (uInt)chunk;
		st = deflate_run(w, Z_NO_FLUSH, err);
		if (st != ZM_OK)
			return st;
		p += chunk;
		n -= chunk;
	}
	return ZM_OK;
}

/* Ends the current gzip member once every tensor byte has arrived. */
static enum zm_status finish_if_done(struct zm_writer *w, struct zm_error *err)
{
	enum zm_status st;

	while (w->index < w->n_tensors && w->left == 0) {
		w->index++;
		if (w->index < w->n_tensors) {
			w->left = w->sizes[w->index];
			st = params_for(w, w->is_float[w->index], err);
			if (st != ZM_OK)
				return st;
		}
	}
	if (w->index < w->n_tensors)
		return ZM_OK;
	if (w->level != ZM_COMPRESS_NONE) {
		w->z.next_in = Z_NULL;
		w->z.avail_in = 0;
		st = deflate_run(w, Z_FINISH, err);
		if (st != ZM_OK)
			return st;
	}
	w->in_doc = false;
	free(w->sizes);
	free(w->is_float);
	w->sizes = NULL;
	w->is_float = NULL;
	return ZM_OK;
}

enum zm_status zm_writer_begin_doc(struct zm_writer *w,
                                   const struct zm_doc *doc,
                                   struct zm_error *err)
{
	struct zm_buf b;
	uint64_t total;
	enum zm_status st;
	size_t i;

	if (w->failed)
		return zm_error_set(err, w->fail.status, "%s", w->fail.msg);
	if (w->in_doc)
		return zm_error_set(err, ZM_ERR_USAGE,
		                    "%s: previous document incomplete", w->out.path);
	st = doc_check(doc, false, err);
	if (st != ZM_OK)
		return st;
	st = build_header(doc, &b, &total, err);
	if (st != ZM_OK)
		return st;
	w->n_tensors = doc->n_tensors;
	w->sizes = zm_calloc(w->n_tensors ? w->n_tensors : 1, sizeof(*w->sizes));
	w->is_float = zm_calloc(w->n_tensors ? w->n_tensors : 1,
	                        sizeof(*w->is_float));
	if (!w->sizes || !w->is_float) {
		zm_buf_release(&b);
		zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		return wfail(w, err, ZM_ERR_NOMEM);
	}
	for (i = 0; i < doc->n_tensors; i++) {
		w->sizes[i] = doc->tensors[i].nbytes;
		w->is_float[i] = zm_dtype_is_float(doc->tensors[i].dtype);
	}
	w->in_doc = true;
	w->index = 0;
	w->left = w->n_tensors ? w->sizes[0] : 0;
	/* Every document is a gzip member of its own. */
	if (w->level != ZM_COMPRESS_NONE)
		deflateReset(&w->z);
	st = params_for(w, false, err);
	if (st == ZM_OK)
		st = deflate_bytes(w, b.data, b.len, err);
	if (st == ZM_OK && w->n_tensors)
		st = params_for(w, w->is_float[0], err);
	if (st == ZM_OK)
		st = finish_if_done(w, err);
	zm_buf_release(&b);
	if (st != ZM_OK)
		return wfail(w, err, st);
	return ZM_OK;
}

enum zm_status zm_writer_write_data(struct zm_writer *w, const void *data,
                                    size_t n, struct zm_error *err)
{
	const unsigned char *p = data;
	enum zm_status st;

	if (w->failed)
		return zm_error_set(err, w->fail.status, "%s", w->fail.msg);
	if (n == 0)
		return ZM_OK;
	if (!w->in_doc)
		return zm_error_set(err, ZM_ERR_USAGE,
		                    "%s: data written outside a document",
		                    w->out.path);
	while (n > 0) {
		size_t take;
		if (w->index >= w->n_tensors)
			return zm_error_set(err, ZM_ERR_USAGE,
			                    "%s: more data than the header declares",
			                    w->out.path);
		take = w->left < n ? (size_t)w->left : n;
		st = deflate_bytes(w, p, take, err);
		if (st == ZM_OK) {
			w->left -= take;
			p += take;
			n -= take;
			st = finish_if_done(w, err);
		}
		if (st != ZM_OK)
			return wfail(w, err, st);
		if (!w->in_doc && n > 0)
			return zm_error_set(err, ZM_ERR_USAGE,
			                    "%s: more data than the header declares",
			                    w->out.path);
	}
	return ZM_OK;
}

enum zm_status zm_writer_write_doc(struct zm_writer *w,
                                   const struct zm_doc *doc,
                                   struct zm_error *err)
{
	enum zm_status st;
	size_t i;

	st = doc_check(doc, true, err);
	if (st != ZM_OK)
		return st;
	st = zm_writer_begin_doc(w, doc, err);
	for (i = 0; st == ZM_OK && i < doc->n_tensors; i++)
		st = zm_writer_write_data(w, doc->tensors[i].data,
		                          doc->tensors[i].nbytes, err);
	return st;
}

static void writer_free(struct zm_writer *w)
{
	if (w->z_ready)
		deflateEnd(&w->z);
	free(w->zbuf);
	free(w->sizes);
	free(w->is_float);
	free(w);
}

/* Why w cannot be committed, or ZM_OK. */
static enum zm_status writer_unfinished(const struct zm_writer *w,
                                        struct zm_error *err)
{
	if (w->failed)
		return zm_error_set(err, w->fail.status, "%s", w->fail.msg);
	if (w->in_doc)
		return zm_error_set(err, ZM_ERR_USAGE,
		                    "%s: document incomplete (tensor data missing)",
		                    w->out.path);
	return ZM_OK;
}

enum zm_status zm_writer_prepare(struct zm_writer *w, struct zm_error *err)
{
	enum zm_status st = writer_unfinished(w, err);

	return st != ZM_OK ? st : zm_outfile_prepare(&w->out, err);
}

enum zm_status zm_writer_commit(struct zm_writer *w, struct zm_error *err)
{
	enum zm_status st = writer_unfinished(w, err);

	if (st != ZM_OK) {
		zm_writer_abort(w);
		return st;
	}
	st = zm_outfile_commit(&w->out, err);
	writer_free(w);
	return st;
}

void zm_writer_abort(struct zm_writer *w)
{
	if (!w)
		return;
	zm_outfile_abort(&w->out);
	writer_free(w);
}
