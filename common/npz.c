/*
 * NumPy .npz archives (see npz.h): the ZIP container read through its
 * central directory, which zipfile always writes and which gives every
 * member's sizes even when the local headers defer them, and the .npy
 * arrays inside, whose header is a Python dict literal read by a small
 * parser that accepts what numpy writes and nothing that needs Python.
 * Every size and offset read from the archive is checked against the bytes
 * that are there before it is used.
 */
#include <limits.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "fileio.h"
#include "mem.h"
#include "npz.h"

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_END 0x06054b50u
#define SIG_END64 0x06064b50u
#define SIG_LOC64 0x07064b50u
#define NPZ_MAX_MEMBERS (1u << 20)
/* Deflate cannot expand data by more than about 1032:1; a member that
 * claims more is lying, and its size must not drive an allocation. */
#define DEFLATE_MAX_RATIO 1032u

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

bool zm_npz_is_zip(const void *data, size_t len)
{
	const uint8_t *p = data;

	return len >= 4 && (le32(p) == SIG_LOCAL || le32(p) == SIG_END);
}

/* One member as the central directory describes it. */
struct member {
	const uint8_t *name;
	size_t name_len;
	unsigned method;
	uint32_t crc;
	uint64_t csize, usize, local;
};

struct archive {
	const uint8_t *p;
	size_t len;
	const char *source;
};

static enum zm_status bad(const struct archive *a, struct zm_error *err,
                          const char *what)
{
	return zm_error_set(err, ZM_ERR_FORMAT, "%s: not a valid .npz (ZIP) "
	                    "archive: %s", a->source, what);
}

/* Finds the central directory: offset, size and member count. */
static enum zm_status find_directory(const struct archive *a, uint64_t *off,
                                     uint64_t *size, uint64_t *count,
                                     struct zm_error *err)
{
	const uint8_t *p = a->p;
	size_t end, lo, i;
	bool found = false;

	if (a->len < 22)
		return bad(a, err, "too short for an end record");
	/* The end record is 22 bytes plus a comment of at most 65535. */
	lo = a->len > 22 + 65535 ? a->len - 22 - 65535 : 0;
	for (i = a->len - 22 + 1; i-- > lo;)
		if (le32(p + i) == SIG_END && i + 22 + le16(p + i + 20) ==
		    a->len) {
			found = true;
			break;
		}
	if (!found)
		return bad(a, err, "no end of central directory record");
	end = i;
	if (le16(p + end + 4) || le16(p + end + 6))
		return bad(a, err, "a multi-volume archive");
	*count = le16(p + end + 10);
	*size = le32(p + end + 12);
	*off = le32(p + end + 16);
	if (*count == 0xffff || *size == 0xffffffffu || *off == 0xffffffffu) {
		/* ZIP64: a locator just before the end record points at the
		 * 64-bit end record. */
		uint64_t e64;
		if (end < 20 || le32(p + end - 20) != SIG_LOC64)
			return bad(a, err, "ZIP64 locator missing");
		e64 = le64(p + end - 20 + 8);
		if (e64 > a->len || a->len - e64 < 56 ||
		    le32(p + e64) != SIG_END64)
			return bad(a, err, "ZIP64 end record out of place");
		if (le32(p + e64 + 16) || le32(p + e64 + 20))
			return bad(a, err, "a multi-volume archive");
		*count = le64(p + e64 + 32);
		*size = le64(p + e64 + 40);
		*off = le64(p + e64 + 48);
	}
	if (*off > a->len || *size > a->len - *off)
		return bad(a, err, "central directory beyond the end of the "
		           "file (truncated?)");
	if (*count > NPZ_MAX_MEMBERS || *count > *size / 46)
		return bad(a, err, "member count does not fit the central "
		           "directory");
	return ZM_OK;
}

/* Reads the central directory entry at *pos into m and advances *pos. */
static enum zm_status read_entry(const struct archive *a, uint64_t *pos,
                                 uint64_t dir_end, struct member *m,
                                 struct zm_error *err)
{
	const uint8_t *e = a->p + *pos, *x, *xend;
	size_t name_len, extra_len, comment_len;
	bool want_u, want_c, want_l;

	if (dir_end - *pos < 46 || le32(e) != SIG_CENTRAL)
		return bad(a, err, "broken central directory entry");
	name_len = le16(e + 28);
	extra_len = le16(e + 30);
	comment_len = le16(e + 32);
	if (dir_end - *pos - 46 < name_len + extra_len + comment_len)
		return bad(a, err, "central directory entry runs past its end");
	if (le16(e + 8) & 1)
		return zm_error_set(err, ZM_ERR_DATA, "%s: encrypted members "
		                    "are not supported", a->source);
	m->method = le16(e + 10);
	m->crc = le32(e + 16);
	m->csize = le32(e + 20);
	m->usize = le32(e + 24);
	m->local = le32(e + 42);
	m->name = e + 46;
	m->name_len = name_len;
	want_u = m->usize == 0xffffffffu;
	want_c = m->csize == 0xffffffffu;
	want_l = m->local == 0xffffffffu;
	/* The ZIP64 extra field holds the 64-bit values of the fields that
	 * are 0xffffffff, in this order. */
	x = e + 46 + name_len;
	xend = x + extra_len;
	while (xend - x >= 4) {
		unsigned id = le16(x), n = le16(x + 2);
		const uint8_t *v = x + 4;
		if ((size_t)(xend - v) < n)
			return bad(a, err, "extra field runs past its entry");
		if (id == 1) {
			const uint8_t *vend = v + n;
			if (want_u && vend - v >= 8) {
				m->usize = le64(v);
				v += 8;
				want_u = false;
			}
			if (want_c && vend - v >= 8) {
				m->csize = le64(v);
				v += 8;
				want_c = false;
			}
			if (want_l && vend - v >= 8) {
				m->local = le64(v);
				want_l = false;
			}
		}
		x += 4 + n;
	}
	if (want_u || want_c || want_l)
		return bad(a, err, "ZIP64 sizes missing");
	*pos += 46 + name_len + extra_len + comment_len;
	return ZM_OK;
}

/* Points *data at the member's compressed bytes after checking its local
 * header. */
static enum zm_status member_data(const struct archive *a,
                                  const struct member *m, const char *name,
                                  const uint8_t **data, struct zm_error *err)
{
	uint64_t start;

	if (m->local > a->len || a->len - m->local < 30 ||
	    le32(a->p + m->local) != SIG_LOCAL)
		return zm_error_set(err, ZM_ERR_FORMAT, "%s: member '%s': "
		                    "local header missing (truncated?)",
		                    a->source, name);
	start = m->local + 30 + le16(a->p + m->local + 26) +
	        le16(a->p + m->local + 28);
	if (start > a->len || m->csize > a->len - start)
		return zm_error_set(err, ZM_ERR_FORMAT, "%s: member '%s': "
		                    "%llu bytes of data run past the end of the "
		                    "file (truncated?)", a->source, name,
		                    (unsigned long long)m->csize);
	*data = a->p + start;
	return ZM_OK;
}

static uint32_t crc_of(const uint8_t *p, size_t n)
{
	uLong crc = crc32(0L, Z_NULL, 0);

	while (n > 0) {
		uInt chunk = n > UINT_MAX ? UINT_MAX : (uInt)n;
		crc = crc32(crc, p, chunk);
		p += chunk;
		n -= chunk;
	}
	return (uint32_t)crc;
}

/* Inflates a raw deflate stream of exactly usize bytes into out. */
static enum zm_status inflate_member(const uint8_t *in, size_t csize,
                                     uint8_t *out, size_t usize,
                                     const char *source, const char *name,
                                     struct zm_error *err)
{
	z_stream z;
	int zr = Z_OK;

	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, -15) != Z_OK)
		return zm_error_set(err, ZM_ERR_NOMEM, "cannot start inflate");
	z.next_in = (Bytef *)(uintptr_t)in;
	z.next_out = out;
	while (zr == Z_OK) {
		if (z.avail_in == 0 && csize > 0) {
			z.avail_in = csize > UINT_MAX ? UINT_MAX : (uInt)csize;
			csize -= z.avail_in;
		}
		if (z.avail_out == 0 && usize > 0) {
			z.avail_out = usize > UINT_MAX ? UINT_MAX : (uInt)usize;
			usize -= z.avail_out;
		}
		zr = inflate(&z, Z_NO_FLUSH);
		if (zr == Z_BUF_ERROR && (z.avail_in || csize) &&
		    (z.avail_out || usize))
			zr = Z_OK;
	}
	usize += z.avail_out;
	inflateEnd(&z);
	if (zr != Z_STREAM_END || usize != 0)
		return zm_error_set(err, ZM_ERR_FORMAT, "%s: member '%s': "
		                    "deflate data %s", source, name,
		                    zr == Z_STREAM_END ? "shorter than its stated "
		                    "size" : "corrupt or longer than its stated "
		                    "size");
	return ZM_OK;
}

/* ---- .npy ---- */

struct npy_header {
	char descr[16];
	bool has_descr, has_fortran, has_shape, fortran;
	int ndim;
	int64_t shape[ZM_MAX_DIMS];
};

struct lexer {
	const char *s, *end;
};

static void skip_ws(struct lexer *l)
{
	while (l->s < l->end && (*l->s == ' ' || *l->s == '\t' ||
	                         *l->s == '\n' || *l->s == '\r'))
		l->s++;
}

static bool eat(struct lexer *l, char c)
{
	skip_ws(l);
	if (l->s < l->end && *l->s == c) {
		l->s++;
		return true;
	}
	return false;
}

/* A quoted Python string without escapes into buf (false when too long). */
static bool lex_string(struct lexer *l, char *buf, size_t size)
{
	char q;
	size_t n = 0;

	skip_ws(l);
	if (l->s >= l->end || (*l->s != '\'' && *l->s != '"'))
		return false;
	q = *l->s++;
	while (l->s < l->end && *l->s != q) {
		if (*l->s == '\\' || n + 1 >= size)
			return false;
		buf[n++] = *l->s++;
	}
	if (l->s >= l->end)
		return false;
	l->s++;
	buf[n] = '\0';
	return true;
}

static bool lex_word(struct lexer *l, const char *w)
{
	size_t n = strlen(w);

	skip_ws(l);
	if ((size_t)(l->end - l->s) < n || memcmp(l->s, w, n))
		return false;
	l->s += n;
	return true;
}

/* A tuple of non-negative integers: (), (3,), (3, 4). */
static bool lex_shape(struct lexer *l, struct npy_header *h)
{
	if (!eat(l, '('))
		return false;
	h->ndim = 0;
	for (;;) {
		int64_t v = 0;
		bool digits = false;
		if (eat(l, ')'))
			return true;
		skip_ws(l);
		while (l->s < l->end && *l->s >= '0' && *l->s <= '9') {
			if (v > (INT64_MAX - 9) / 10)
				return false;
			v = v * 10 + (*l->s++ - '0');
			digits = true;
		}
		if (l->s < l->end && *l->s == 'L')   /* Python 2's longs */
			l->s++;
		if (!digits || h->ndim == ZM_MAX_DIMS)
			return false;
		h->shape[h->ndim++] = v;
		if (!eat(l, ',')) {
			return eat(l, ')');
		}
	}
}

static enum zm_status parse_dict(const char *text, size_t n,
                                 struct npy_header *h, const char *where,
                                 struct zm_error *err)
{
	struct lexer l = { text, text + n };
	char key[32];

	memset(h, 0, sizeof(*h));
	if (!eat(&l, '{'))
		goto syntax;
	while (!eat(&l, '}')) {
		if (!lex_string(&l, key, sizeof(key)) || !eat(&l, ':'))
			goto syntax;
		if (!strcmp(key, "descr") && !h->has_descr) {
			skip_ws(&l);
			if (l.s < l.end && *l.s == '[')
				return zm_error_set(err, ZM_ERR_DATA, "%s: a "
				                    "structured dtype; save plain "
				                    "numeric arrays", where);
			if (!lex_string(&l, h->descr, sizeof(h->descr)))
				goto syntax;
			h->has_descr = true;
		} else if (!strcmp(key, "fortran_order") && !h->has_fortran) {
			if (lex_word(&l, "True"))
				h->fortran = true;
			else if (!lex_word(&l, "False"))
				goto syntax;
			h->has_fortran = true;
		} else if (!strcmp(key, "shape") && !h->has_shape) {
			if (!lex_shape(&l, h))
				goto syntax;
			h->has_shape = true;
		} else {
			goto syntax;
		}
		if (!eat(&l, ',')) {
			if (!eat(&l, '}'))
				goto syntax;
			break;
		}
	}
	skip_ws(&l);
	if (l.s != l.end || !h->has_descr || !h->has_fortran || !h->has_shape)
		goto syntax;
	return ZM_OK;
syntax:
	return zm_error_set(err, ZM_ERR_FORMAT, "%s: .npy header is not a "
	                    "dict of descr, fortran_order and shape", where);
}

static enum zm_status parse_descr(const char *d, enum zm_dtype *out,
                                  const char *where, struct zm_error *err)
{
	static const struct {
		const char *name;
		enum zm_dtype dtype;
	} known[] = {
		{ "<f4", ZM_DTYPE_F32 }, { "<f8", ZM_DTYPE_F64 },
		{ "<f2", ZM_DTYPE_F16 }, { "<i4", ZM_DTYPE_I32 },
		{ "<i8", ZM_DTYPE_I64 }, { "|u1", ZM_DTYPE_U8 },
		{ "|i1", ZM_DTYPE_I8 }, { "<u1", ZM_DTYPE_U8 },
		{ "<i1", ZM_DTYPE_I8 },
	};
	size_t i;

	for (i = 0; i < COUNT_OF(known); i++)
		if (!strcmp(d, known[i].name)) {
			*out = known[i].dtype;
			return ZM_OK;
		}
	if (d[0] && d[1] == 'O')
		return zm_error_set(err, ZM_ERR_DATA, "%s: an object array, "
		                    "which numpy stores as a pickle; zoomerge "
		                    "does not run pickles: save numeric arrays "
		                    "(np.asarray(a, dtype=np.float32))", where);
	if (d[0] == '>')
		return zm_error_set(err, ZM_ERR_DATA, "%s: big-endian dtype "
		                    "'%s'; save a.astype('<%s')", where, d, d + 1);
	return zm_error_set(err, ZM_ERR_DATA, "%s: dtype '%s' is not "
	                    "supported (expected <f4, <f8, <f2, <i4, <i8, |u1 "
	                    "or |i1)", where, d);
}

/* Parses one .npy array of n bytes into a tensor called name added to
 * doc. */
static enum zm_status parse_npy(const uint8_t *p, size_t n, const char *name,
                                const char *where, struct zm_doc *doc,
                                struct zm_error *err)
{
	struct npy_header h;
	struct zm_tensor t;
	enum zm_dtype dtype = ZM_DTYPE_F32;
	size_t start, hlen, numel, bytes;
	enum zm_status st;

	if (n < 10 || memcmp(p, "\x93NUMPY", 6))
		return zm_error_set(err, ZM_ERR_FORMAT, "%s: not a .npy array "
		                    "(no \\x93NUMPY magic)", where);
	if (p[6] == 1) {
		hlen = le16(p + 8);
		start = 10;
	} else if ((p[6] == 2 || p[6] == 3) && n >= 12) {
		hlen = le32(p + 8);
		start = 12;
	} else {
		return zm_error_set(err, ZM_ERR_FORMAT, "%s: .npy version %u "
		                    "is not supported (1 to 3)", where, p[6]);
	}
	if (hlen > n - start)
		return zm_error_set(err, ZM_ERR_FORMAT, "%s: .npy header runs "
		                    "past the array", where);
	st = parse_dict((const char *)p + start, hlen, &h, where, err);
	if (st != ZM_OK)
		return st;
	if ((st = parse_descr(h.descr, &dtype, where, err)) != ZM_OK)
		return st;
	if (h.fortran && h.ndim > 1)
		return zm_error_set(err, ZM_ERR_DATA, "%s: an array in Fortran "
		                    "order; save np.ascontiguousarray(a)", where);
	if (!zm_shape_numel(h.ndim, h.shape, &numel) ||
	    !zm_size_mul(numel, zm_dtype_size(dtype), &bytes) ||
	    bytes != n - start - hlen)
		return zm_error_set(err, ZM_ERR_FORMAT, "%s: %zu data bytes do "
		                    "not match its shape and dtype %s", where,
		                    n - start - hlen, h.descr);
	zm_tensor_init(&t);
	st = zm_tensor_alloc(&t, name, dtype, h.ndim, h.shape, err);
	if (st != ZM_OK)
		return st;
	if (bytes)
		memcpy(t.data, p + start + hlen, bytes);
	st = zm_doc_add(doc, &t, err);
	zm_tensor_release(&t);
	return st;
}

/* Reads one member into doc. */
static enum zm_status read_member(const struct archive *a,
                                  const struct member *m, struct zm_doc *doc,
                                  struct zm_error *err)
{
	char name[256], where[512];
	const uint8_t *data = NULL;
	uint8_t *buf = NULL;
	size_t n;
	enum zm_status st;

	if (m->name_len >= sizeof(name) || memchr(m->name, 0, m->name_len))
		return bad(a, err, "a member name longer than 255 bytes or "
		           "with a NUL");
	memcpy(name, m->name, m->name_len);
	name[m->name_len] = '\0';
	snprintf(where, sizeof(where), "%s: member '%s'", a->source, name);
	if (m->name_len <= 4 || strcmp(name + m->name_len - 4, ".npy"))
		return zm_error_set(err, ZM_ERR_DATA, "%s: not an array "
		                    "(NAME.npy); write the archive with "
		                    "numpy.savez", where);
	name[m->name_len - 4] = '\0';
	if (zm_doc_find(doc, name))
		return zm_error_set(err, ZM_ERR_FORMAT, "%s: a second array "
		                    "called '%s'", where, name);
	st = member_data(a, m, name, &data, err);
	if (st != ZM_OK)
		return st;
	if (m->method == 0) {
		if (m->usize != m->csize)
			return zm_error_set(err, ZM_ERR_FORMAT, "%s: stored "
			                    "with two different sizes", where);
		n = (size_t)m->csize;
	} else if (m->method == 8) {
		if (m->usize > ZM_NPZ_MAX_BYTES ||
		    m->usize / DEFLATE_MAX_RATIO > m->csize + 1)
			return zm_error_set(err, ZM_ERR_FORMAT, "%s: states "
			                    "%llu bytes, more than %llu deflated "
			                    "bytes can hold", where,
			                    (unsigned long long)m->usize,
			                    (unsigned long long)m->csize);
		n = (size_t)m->usize;
		buf = zm_malloc(n ? n : 1);
		if (!buf)
			return zm_error_set(err, ZM_ERR_NOMEM, "%s: out of "
			                    "memory for %zu bytes", where, n);
		st = inflate_member(data, (size_t)m->csize, buf, n, a->source,
		                    name, err);
		if (st != ZM_OK)
			goto out;
		data = buf;
	} else {
		return zm_error_set(err, ZM_ERR_DATA, "%s: compression method "
		                    "%u is not supported (stored or deflate, as "
		                    "numpy.savez and savez_compressed write)",
		                    where, m->method);
	}
	if (crc_of(data, n) != m->crc) {
		st = zm_error_set(err, ZM_ERR_FORMAT, "%s: CRC mismatch "
		                  "(corrupt archive)", where);
		goto out;
	}
	st = parse_npy(data, n, name, where, doc, err);
out:
	free(buf);
	return st;
}

enum zm_status zm_npz_parse(const void *data, size_t len, const char *source,
                            struct zm_doc *doc, struct zm_error *err)
{
	struct archive a = { data, len, source };
	uint64_t off = 0, size = 0, count = 0, pos, i;
	enum zm_status st;

	zm_doc_release(doc);
	st = find_directory(&a, &off, &size, &count, err);
	for (pos = off, i = 0; st == ZM_OK && i < count; i++) {
		struct member m = { NULL, 0, 0, 0, 0, 0, 0 };
		st = read_entry(&a, &pos, off + size, &m, err);
		if (st == ZM_OK)
			st = read_member(&a, &m, doc, err);
	}
	if (st != ZM_OK)
		zm_doc_release(doc);
	return st;
}

enum zm_status zm_npz_load(const char *path, struct zm_doc *doc,
                           struct zm_error *err)
{
	char *data = NULL;
	size_t len = 0;
	enum zm_status st;

	st = zm_read_file(path, ZM_NPZ_MAX_BYTES, &data, &len, err);
	if (st == ZM_OK)
		st = zm_npz_parse(data, len, strcmp(path, "-") ? path :
		                  "standard input", doc, err);
	free(data);
	return st;
}
