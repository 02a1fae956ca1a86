/*
 * Stream reader and writer: round trips of every dtype through gzip and
 * raw bytes, documents crafted byte by byte from the safetensors spec,
 * every malformed input the reader must refuse, the streaming API and the
 * compression policy.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "mem.h"
#include "stream.h"
#include "unit.h"

/* ---- helpers ---- */

static uint32_t lcg(uint32_t *s)
{
	*s = *s * 1664525u + 1013904223u;
	return *s >> 8;
}

static void fill_bytes(void *p, size_t n, uint32_t seed)
{
	unsigned char *b = p;
	size_t i;

	for (i = 0; i < n; i++)
		b[i] = (unsigned char)lcg(&seed);
}

static void add_tensor(struct zm_doc *doc, const char *name,
                       enum zm_dtype dt, int ndim, const int64_t *shape,
                       uint32_t seed)
{
	struct zm_tensor t;
	struct zm_error err;

	ck_assert_int_eq(zm_tensor_alloc(&t, name, dt, ndim, shape, &err), ZM_OK);
	fill_bytes(t.data, t.nbytes, seed);
	ck_assert_int_eq(zm_doc_add(doc, &t, &err), ZM_OK);
}

/* A document with one tensor of every dtype, a scalar, an empty tensor
 * and metadata; seed varies the contents. */
static void make_doc(struct zm_doc *doc, uint32_t seed)
{
	static const int64_t s2[] = { 3, 5 }, s1[] = { 7 }, s3[] = { 2, 3, 4 };
	static const int64_t empty[] = { 0, 3 };
	struct zm_error err;
	char name[32];
	int d;

	zm_doc_init(doc);
	for (d = 0; d < ZM_DTYPE_COUNT; d++) {
		snprintf(name, sizeof(name), "t%d.%s", d,
		         zm_dtype_name((enum zm_dtype)d));
		add_tensor(doc, name, (enum zm_dtype)d, d % 3 + 1,
		           d % 3 == 0 ? s1 : d % 3 == 1 ? s2 : s3, seed + (uint32_t)d);
	}
	add_tensor(doc, "scalar", ZM_DTYPE_F32, 0, NULL, seed + 100);
	add_tensor(doc, "empty", ZM_DTYPE_I64, 2, empty, seed + 101);
	ck_assert_int_eq(zm_doc_set_meta(doc, "zm.kind", "model", &err), ZM_OK);
	ck_assert_int_eq(zm_doc_set_meta(doc, "quote\"\n", "v\\al\x01ue", &err),
	                 ZM_OK);
}

static void assert_doc_eq(const struct zm_doc *a, const struct zm_doc *b)
{
	size_t i;

	ck_assert_uint_eq(a->n_tensors, b->n_tensors);
	for (i = 0; i < a->n_tensors; i++) {
		const struct zm_tensor *x = &a->tensors[i], *y = &b->tensors[i];
		ck_assert_str_eq(x->name, y->name);
		ck_assert_int_eq(x->dtype, y->dtype);
		ck_assert_int_eq(x->ndim, y->ndim);
		ck_assert_mem_eq(x->shape, y->shape,
		                 (size_t)x->ndim * sizeof(int64_t));
		ck_assert_uint_eq(x->nbytes, y->nbytes);
		if (x->nbytes)
			ck_assert(memcmp(x->data, y->data, x->nbytes) == 0);
	}
	ck_assert_uint_eq(a->n_meta, b->n_meta);
	for (i = 0; i < a->n_meta; i++) {
		const char *v = zm_doc_meta(b, a->meta[i].key);
		ck_assert_ptr_nonnull(v);
		ck_assert_str_eq(v, a->meta[i].value);
	}
}

/* gzip with zlib directly (an independent encoder for the reader). */
static void *gzip_bytes(const void *data, size_t n, size_t *outlen)
{
	z_stream z;
	size_t cap = n + n / 100 + 1024;
	unsigned char *out = malloc(cap);

	memset(&z, 0, sizeof(z));
	ck_assert_int_eq(deflateInit2(&z, 6, Z_DEFLATED, 31, 8,
	                              Z_DEFAULT_STRATEGY), Z_OK);
	z.next_in = (unsigned char *)data;
	z.avail_in = (uInt)n;
	z.next_out = out;
	z.avail_out = (uInt)cap;
	ck_assert_int_eq(deflate(&z, Z_FINISH), Z_STREAM_END);
	*outlen = cap - z.avail_out;
	deflateEnd(&z);
	return out;
}

static void write_file(const char *path, const struct zm_doc *docs,
                       size_t ndocs, int level)
{
	struct zm_writer *w;
	struct zm_error err;
	size_t i;

	ck_assert_int_eq(zm_writer_open(&w, path, level, &err), ZM_OK);
	for (i = 0; i < ndocs; i++)
		ck_assert_msg(zm_writer_write_doc(w, &docs[i], &err) == ZM_OK,
		              "%s", err.msg);
	ck_assert_msg(zm_writer_commit(w, &err) == ZM_OK, "%s", err.msg);
}

/* Reads every document of a memory stream into docs (at most max). */
static size_t read_all_mem(const void *data, size_t len, struct zm_doc *docs,
                           size_t max)
{
	struct zm_reader *r;
	struct zm_error err;
	size_t n = 0;
	bool eof = false;

	ck_assert_int_eq(zm_reader_open_mem(&r, data, len, "mem", &err), ZM_OK);
	for (;;) {
		struct zm_doc d;
		zm_doc_init(&d);
		ck_assert_msg(zm_reader_next(r, &d, &eof, &err) == ZM_OK, "%s",
		              err.msg);
		if (eof)
			break;
		ck_assert_uint_lt(n, max);
		docs[n++] = d;
	}
	zm_reader_close(r);
	return n;
}

static const int levels[] = { ZM_COMPRESS_AUTO, 0, 1, 6, 9 };

/* ---- round trips ---- */

START_TEST(roundtrip_levels)
{
	char path[4096];
	struct zm_doc docs[2], back[3];
	struct zm_reader *r;
	struct zm_error err;
	unsigned char *bytes;
	size_t len, n, i;
	bool eof;

	make_doc(&docs[0], 1);
	make_doc(&docs[1], 2);
	snprintf(path, sizeof(path), "%s/out.safetensors.gz", unit_tmpdir());
	write_file(path, docs, 2, levels[_i]);
	bytes = unit_slurp(path, &len);
	ck_assert_ptr_nonnull(bytes);
	ck_assert_uint_ge(len, 2);
	ck_assert_int_eq(bytes[0], 0x1f);
	ck_assert_int_eq(bytes[1], 0x8b);
	n = read_all_mem(bytes, len, back, 3);
	ck_assert_uint_eq(n, 2);
	for (i = 0; i < 2; i++) {
		assert_doc_eq(&docs[i], &back[i]);
		zm_doc_release(&back[i]);
	}
	/* The same through a file descriptor. */
	ck_assert_int_eq(zm_reader_open(&r, path, &err), ZM_OK);
	for (i = 0; i < 2; i++) {
		ck_assert_int_eq(zm_reader_next(r, &back[0], &eof, &err), ZM_OK);
		ck_assert(!eof);
		ck_assert_uint_eq(zm_reader_doc_number(r), i + 1);
		assert_doc_eq(&docs[i], &back[0]);
	}
	ck_assert_int_eq(zm_reader_next(r, &back[0], &eof, &err), ZM_OK);
	ck_assert(eof);
	ck_assert_uint_eq(back[0].n_tensors, 0);
	zm_reader_close(r);
	free(bytes);
	zm_doc_release(&docs[0]);
	zm_doc_release(&docs[1]);
}
END_TEST

/* Tensors of several MiB go through the unbuffered inflate path. */
START_TEST(roundtrip_large)
{
	char path[4096];
	struct zm_doc doc, back;
	struct zm_reader *r;
	struct zm_error err;
	const int64_t shape[] = { 1000, 1001 };
	bool eof;

	zm_doc_init(&doc);
	add_tensor(&doc, "a", ZM_DTYPE_F32, 2, shape, 5);
	add_tensor(&doc, "b", ZM_DTYPE_U8, 2, shape, 6);
	add_tensor(&doc, "c", ZM_DTYPE_F16, 1, shape, 7);
	snprintf(path, sizeof(path), "%s/big.gz", unit_tmpdir());
	write_file(path, &doc, 1, levels[_i]);
	ck_assert_int_eq(zm_reader_open(&r, path, &err), ZM_OK);
	zm_doc_init(&back);
	ck_assert_msg(zm_reader_next(r, &back, &eof, &err) == ZM_OK, "%s",
	              err.msg);
	assert_doc_eq(&doc, &back);
	ck_assert_int_eq(zm_reader_next(r, &back, &eof, &err), ZM_OK);
	ck_assert(eof);
	zm_reader_close(r);
	zm_doc_release(&doc);
}
END_TEST

START_TEST(concatenated_members)
{
	const char *dir = unit_tmpdir();
	char pa[4096], pb[4096];
	struct zm_doc docs[3], back[4];
	unsigned char *a, *b, *cat;
	size_t la, lb, n, i;

	for (i = 0; i < 3; i++)
		make_doc(&docs[i], 10 + (uint32_t)i);
	snprintf(pa, sizeof(pa), "%s/a.gz", dir);
	snprintf(pb, sizeof(pb), "%s/b.gz", dir);
	write_file(pa, docs, 2, ZM_COMPRESS_AUTO);
	write_file(pb, docs + 2, 1, 0);
	a = unit_slurp(pa, &la);
	ck_assert_ptr_nonnull(a);
	b = unit_slurp(pb, &lb);
	ck_assert_ptr_nonnull(b);
	cat = malloc(la + lb);
	memcpy(cat, a, la);
	memcpy(cat + la, b, lb);
	n = read_all_mem(cat, la + lb, back, 4);
	ck_assert_uint_eq(n, 3);
	for (i = 0; i < 3; i++) {
		assert_doc_eq(&docs[i], &back[i]);
		zm_doc_release(&back[i]);
		zm_doc_release(&docs[i]);
	}
	free(a);
	free(b);
	free(cat);
}
END_TEST

/* Raw safetensors (no gzip): zm_doc_serialize output, and that output
 * gzipped by zlib directly (one member holding two documents). */
START_TEST(uncompressed_and_foreign_gzip)
{
	struct zm_doc docs[2], back[3];
	struct zm_error err;
	void *b0, *b1;
	unsigned char *cat, *gz;
	size_t l0, l1, n, i, lgz;
	uint64_t hlen = 0;

	make_doc(&docs[0], 20);
	make_doc(&docs[1], 21);
	ck_assert_int_eq(zm_doc_serialize(&docs[0], &b0, &l0, &err), ZM_OK);
	ck_assert_int_eq(zm_doc_serialize(&docs[1], &b1, &l1, &err), ZM_OK);
	/* Reference layout: header padded to 8, "__metadata__" first. */
	for (i = 0; i < 8; i++)
		hlen |= (uint64_t)((unsigned char *)b0)[i] << (8 * i);
	ck_assert_uint_eq(hlen % 8, 0);
	ck_assert(memcmp((char *)b0 + 8, "{\"__metadata__\":", 16) == 0);
	{
		/* Only spaces pad the JSON, and fewer than 8 of them. */
		const char *h = (const char *)b0 + 8;
		size_t end = (size_t)hlen;
		while (end > 0 && h[end - 1] == ' ')
			end--;
		ck_assert_uint_gt(end, 0);
		ck_assert_int_eq(h[end - 1], '}');
		ck_assert_uint_lt((size_t)hlen - end, 8);
	}
	cat = malloc(l0 + l1);
	memcpy(cat, b0, l0);
	memcpy(cat + l0, b1, l1);
	n = read_all_mem(cat, l0 + l1, back, 3);
	ck_assert_uint_eq(n, 2);
	for (i = 0; i < 2; i++) {
		assert_doc_eq(&docs[i], &back[i]);
		zm_doc_release(&back[i]);
	}
	gz = gzip_bytes(cat, l0 + l1, &lgz);
	n = read_all_mem(gz, lgz, back, 3);
	ck_assert_uint_eq(n, 2);
	for (i = 0; i < 2; i++) {
		assert_doc_eq(&docs[i], &back[i]);
		zm_doc_release(&back[i]);
		zm_doc_release(&docs[i]);
	}
	free(gz);
	free(cat);
	free(b0);
	free(b1);
}
END_TEST

/* Appends a u64 little-endian length and the header text. */
static size_t put_header(unsigned char *p, const char *json)
{
	size_t n = strlen(json), i;

	for (i = 0; i < 8; i++)
		p[i] = (unsigned char)((uint64_t)n >> (8 * i));
	memcpy(p + 8, json, n);
	return 8 + n;
}

/* A document written by hand from the safetensors spec: no padding, keys
 * out of data order, metadata in the middle, spaces in the JSON. */
START_TEST(crafted_document)
{
	static const char json[] =
		"{\"b\": {\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[8,16]},"
		"\"__metadata__\":{\"k\":\"v\",\"n\":\"1\"},"
		" \"a\":{\"data_offsets\":[0,8],\"shape\":[1, 2],\"dtype\":\"F32\"},"
		"\"z\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[16,17]}}";
	/* 1.5f = 0x3fc00000, -2.0f = 0xc0000000, then int32 7 and -1, then 9. */
	static const unsigned char data[17] = {
		0x00, 0x00, 0xc0, 0x3f, 0x00, 0x00, 0x00, 0xc0,
		0x07, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x09,
	};
	unsigned char buf[512];
	struct zm_doc back[2];
	size_t n, ndocs, lgz;
	float f[2];
	int32_t iv[2];
	void *gz;
	int pass;

	ck_assert_uint_ne(strlen(json) % 8, 0);
	n = put_header(buf, json);
	memcpy(buf + n, data, sizeof(data));
	n += sizeof(data);
	gz = gzip_bytes(buf, n, &lgz);
	for (pass = 0; pass < 2; pass++) {
		ndocs = pass == 0 ? read_all_mem(buf, n, back, 2) :
		        read_all_mem(gz, lgz, back, 2);
		ck_assert_uint_eq(ndocs, 1);
		ck_assert_uint_eq(back[0].n_tensors, 3);
		ck_assert_str_eq(back[0].tensors[0].name, "a");
		ck_assert_str_eq(back[0].tensors[1].name, "b");
		ck_assert_str_eq(back[0].tensors[2].name, "z");
		ck_assert_int_eq(back[0].tensors[0].dtype, ZM_DTYPE_F32);
		ck_assert_int_eq(back[0].tensors[0].ndim, 2);
		ck_assert_int_eq(back[0].tensors[0].shape[0], 1);
		ck_assert_int_eq(back[0].tensors[0].shape[1], 2);
		memcpy(f, back[0].tensors[0].data, sizeof(f));
		ck_assert(f[0] == 1.5f && f[1] == -2.0f);
		ck_assert_int_eq(back[0].tensors[1].dtype, ZM_DTYPE_I32);
		memcpy(iv, back[0].tensors[1].data, sizeof(iv));
		ck_assert_int_eq(iv[0], 7);
		ck_assert_int_eq(iv[1], -1);
		ck_assert_int_eq(back[0].tensors[2].ndim, 0);
		ck_assert_int_eq(*(unsigned char *)back[0].tensors[2].data, 9);
		ck_assert_str_eq(zm_doc_meta(&back[0], "k"), "v");
		ck_assert_str_eq(zm_doc_meta(&back[0], "n"), "1");
		/* Tensor data is aligned for direct use as floats. */
		ck_assert_uint_eq((uintptr_t)back[0].tensors[0].data %
		                  _Alignof(double), 0);
		zm_doc_release(&back[0]);
	}
	free(gz);
}
END_TEST

/* ---- malformed input ---- */

enum wrap { RAW, GZIP, GZIP_BAD_CRC, GZIP_CUT, GZIP_THEN_JUNK };

struct bad_case {
	const char *json;       /* header of document 2 (NULL: see raw) */
	int64_t hlen;           /* -1: strlen(json) */
	size_t data;            /* data bytes following the header */
	const char *raw;        /* bytes after document 1 instead of a doc */
	size_t raw_len;
	enum wrap wrap;
	int docno;              /* document the error must name (0: none) */
	const char *want1, *want2;
};

#define T1 "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}"

static const struct bad_case bad_cases[] = {
	{ "{}", 0, 0, NULL, 0, RAW, 2, "header length 0", NULL },
	{ "{}", (int64_t)ZM_MAX_HEADER_BYTES + 1, 0, NULL, 0, RAW, 2,
	  "header length", NULL },
	{ "[1, 2]", -1, 0, NULL, 0, RAW, 2, "not a JSON object", NULL },
	{ "\"x\"", -1, 0, NULL, 0, RAW, 2, "not a JSON object", NULL },
	{ "a: {b: 1}", -1, 0, NULL, 0, RAW, 2, "not a JSON object", NULL },
	{ "{\"w\": ", -1, 0, NULL, 0, RAW, 2, "invalid JSON", NULL },
	{ "{\"w\":{\"dtype\":\"F8\",\"shape\":[2],\"data_offsets\":[0,2]}}",
	  -1, 2, NULL, 0, RAW, 2, "'w'", "unknown dtype" },
	{ "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
	  -1, 4, NULL, 0, RAW, 2, "'w'", "-1" },
	{ "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}",
	  -1, 4, NULL, 0, RAW, 2, "'w'", "1.5" },
	{ "{\"w\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}",
	  -1, 8, NULL, 0, RAW, 2, "'w'", "shape dimension" },
	{ "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
	  "\"data_offsets\":[0,1]}}", -1, 1, NULL, 0, RAW, 2, "'w'",
	  "9 dimensions" },
	{ "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4,8]}}",
	  -1, 8, NULL, 0, RAW, 2, "'w'", "data_offsets" },
	{ "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}",
	  -1, 8, NULL, 0, RAW, 2, "'w'", "data_offsets" },
	{ "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}",
	  -1, 8, NULL, 0, RAW, 2, "'w'", "12 bytes" },
	{ "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
	  "\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
	  -1, 12, NULL, 0, RAW, 2, "'v'", "overlap" },
	{ "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
	  "\"v\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
	  -1, 12, NULL, 0, RAW, 2, "'v'", "gap" },
	{ "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
	  -1, 8, NULL, 0, RAW, 2, "'w'", "gap" },
	{ "{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", -1, 0, NULL, 0, RAW, 2,
	  "'w'", "missing data_offsets" },
	{ "{\"w\":[1,2]}", -1, 0, NULL, 0, RAW, 2, "'w'", "object" },
	{ "{\"__metadata__\":[\"a\"]}", -1, 0, NULL, 0, RAW, 2, "__metadata__",
	  NULL },
	{ "{\"__metadata__\":{\"k\":{\"x\":\"y\"}}}", -1, 0, NULL, 0, RAW, 2,
	  "__metadata__ 'k'", NULL },
	{ "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
	  "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
	  -1, 16, NULL, 0, RAW, 2, "duplicate", NULL },
	/* Truncation: header length larger than what follows, data short. */
	{ "{\"w\":{}}", 100, 0, NULL, 0, RAW, 2, "truncated header", NULL },
	{ T1, -1, 4, NULL, 0, RAW, 2, "'w'", "truncated" },
	/* Trailing garbage: a partial length after the last document. */
	{ NULL, 0, 0, "\x01\x02\x03", 3, RAW, 2, "trailing garbage", NULL },
	{ NULL, 0, 0, "\x10\0\0\0\0\0\0\0{", 9, RAW, 2, "truncated", NULL },
	/* gzip damage: checked on a stream of documents 1 and 2 (valid), one
	 * member; the message names the member instead of a document. */
	{ T1, -1, 8, NULL, 0, GZIP_BAD_CRC, 0, "corrupt gzip data in member 1",
	  NULL },
	{ T1, -1, 8, NULL, 0, GZIP_CUT, 0,
	  "truncated (gzip stream ends inside member 1)", NULL },
	{ T1, -1, 8, NULL, 0, GZIP_THEN_JUNK, 0,
	  "trailing garbage after gzip member 1", NULL },
	{ "{\"w\":{\"dtype\":\"BAD\",\"shape\":[2],\"data_offsets\":[0,8]}}",
	  -1, 8, NULL, 0, GZIP, 2, "'w'", "unknown dtype" },
};

START_TEST(malformed)
{
	const struct bad_case *c = &bad_cases[_i];
	unsigned char *buf, *stream;
	size_t n = 0, len, i, hl = c->json ? strlen(c->json) : 0;
	uint64_t hlen = c->hlen < 0 ? hl : (uint64_t)c->hlen;
	struct zm_reader *r;
	struct zm_doc doc;
	struct zm_error err;
	enum zm_status st = ZM_OK;
	bool eof = false;
	int got_docs = 0;
	char want_doc[32];

	buf = calloc(1, 1024 + hl + c->data + c->raw_len);
	n = put_header(buf, T1);
	memset(buf + n, 0x41, 8);
	n += 8;
	if (c->raw) {
		memcpy(buf + n, c->raw, c->raw_len);
		n += c->raw_len;
	} else {
		for (i = 0; i < 8; i++)
			buf[n + i] = (unsigned char)(hlen >> (8 * i));
		memcpy(buf + n + 8, c->json, hl);
		n += 8 + hl;
		memset(buf + n, 0x42, c->data);
		n += c->data;
	}
	stream = buf;
	len = n;
	if (c->wrap != RAW) {
		stream = gzip_bytes(buf, n, &len);
		stream = realloc(stream, len + 16);
		if (c->wrap == GZIP_BAD_CRC)
			stream[len - 8] ^= 0xff;	/* CRC32 of the trailer */
		else if (c->wrap == GZIP_CUT)
			len -= 3;
		else if (c->wrap == GZIP_THEN_JUNK) {
			memcpy(stream + len, "junk", 4);
			len += 4;
		}
	}
	ck_assert_int_eq(zm_reader_open_mem(&r, stream, len, "case.st", &err),
	                 ZM_OK);
	zm_doc_init(&doc);
	for (;;) {
		zm_error_clear(&err);
		st = zm_reader_next(r, &doc, &eof, &err);
		if (st != ZM_OK || eof)
			break;
		got_docs++;
	}
	ck_assert_msg(st == ZM_ERR_FORMAT, "case %d: status %d after %d docs",
	              _i, st, got_docs);
	ck_assert_uint_eq(doc.n_tensors, 0);
	ck_assert_msg(strstr(err.msg, "case.st") != NULL, "%s", err.msg);
	if (c->docno > 0) {
		snprintf(want_doc, sizeof(want_doc), "document %d:", c->docno);
		ck_assert_msg(strstr(err.msg, want_doc) != NULL, "%s", err.msg);
		ck_assert_int_eq(got_docs, c->docno - 1);
	}
	ck_assert_msg(strstr(err.msg, c->want1) != NULL, "case %d: %s", _i,
	              err.msg);
	if (c->want2)
		ck_assert_msg(strstr(err.msg, c->want2) != NULL, "case %d: %s", _i,
		              err.msg);
	/* A failed reader keeps failing. */
	ck_assert_int_eq(zm_reader_next(r, &doc, &eof, &err), ZM_ERR_FORMAT);
	zm_reader_close(r);
	if (stream != buf)
		free(stream);
	free(buf);
}
END_TEST

START_TEST(empty_input)
{
	struct zm_reader *r;
	struct zm_doc doc;
	struct zm_error err;
	bool eof = false;

	ck_assert_int_eq(zm_reader_open_mem(&r, "", 0, "e", &err), ZM_OK);
	zm_doc_init(&doc);
	ck_assert_int_eq(zm_reader_next(r, &doc, &eof, &err), ZM_OK);
	ck_assert(eof);
	ck_assert_uint_eq(zm_reader_doc_number(r), 0);
	ck_assert_str_eq(zm_reader_name(r), "e");
	zm_reader_close(r);
}
END_TEST

/*
 * A gzip member cut anywhere in its 8-byte trailer (CRC-32, length) is
 * truncated even for a reader that stops after its one document, as
 * zm_model_load does: the document is all there, the member is not.  The
 * whole member reads, as does the member followed by the start of a
 * second one only when the reader does not go on to it.
 */
START_TEST(trailer_cut)
{
	unsigned char buf[256];
	unsigned char *gz;
	struct zm_reader *r;
	struct zm_doc doc;
	struct zm_error err;
	size_t n, lgz;
	bool eof = false;
	int cut = _i;                /* bytes removed from the end: 0..8 */

	n = put_header(buf, T1);
	memset(buf + n, 0x41, 8);
	n += 8;
	gz = gzip_bytes(buf, n, &lgz);
	zm_doc_init(&doc);
	ck_assert_int_eq(zm_reader_open_mem(&r, gz, lgz - (size_t)cut, "cut.gz",
	                                    &err), ZM_OK);
	if (cut == 0) {
		ck_assert_int_eq(zm_reader_next(r, &doc, &eof, &err), ZM_OK);
		ck_assert(!eof);
		ck_assert_int_eq(zm_reader_next(r, &doc, &eof, &err), ZM_OK);
		ck_assert(eof);
	} else {
		ck_assert_int_eq(zm_reader_next(r, &doc, &eof, &err),
		                 ZM_ERR_FORMAT);
		ck_assert_str_eq(err.msg, "cut.gz: truncated (gzip stream ends "
		                 "inside member 1)");
		ck_assert_uint_eq(doc.n_tensors, 0);
	}
	zm_doc_release(&doc);
	zm_reader_close(r);
	free(gz);
}
END_TEST

/* A stream of two members cut after the second one's gzip header: the
 * first document reads, the cut names member 2. */
START_TEST(second_member_cut)
{
	unsigned char buf[256], two[1024];
	unsigned char *gz;
	struct zm_reader *r;
	struct zm_doc doc;
	struct zm_error err;
	size_t n, lgz;
	bool eof = false;

	n = put_header(buf, T1);
	memset(buf + n, 0x41, 8);
	n += 8;
	gz = gzip_bytes(buf, n, &lgz);
	ck_assert_uint_lt(2 * lgz, sizeof(two));
	memcpy(two, gz, lgz);
	memcpy(two + lgz, gz, lgz);
	zm_doc_init(&doc);
	ck_assert_int_eq(zm_reader_open_mem(&r, two, lgz + 12, "two.gz", &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_reader_next(r, &doc, &eof, &err), ZM_OK);
	ck_assert(!eof);
	ck_assert_int_eq(zm_reader_next(r, &doc, &eof, &err), ZM_ERR_FORMAT);
	ck_assert_str_eq(err.msg, "two.gz: truncated (gzip stream ends inside "
	                 "member 2)");
	zm_doc_release(&doc);
	zm_reader_close(r);
	free(gz);
}
END_TEST

/* What the first bytes look like when they are not a stream. */
static const struct { const char *bytes; size_t n; const char *want; }
not_stream_cases[] = {
	{ "f0,f1,label\n1,2,3\n", 18, "x: looks like CSV, not a zoomerge stream (read it with --from csv, or convert it with tensor import --from csv)" },
	{ "\xef\xbb\xbf" "a,b\n1,2\n", 11, "x: looks like CSV, not a zoomerge stream (read it with --from csv, or convert it with tensor import --from csv)" },
	{ "\0\0\x08\x03\0\0\0\x01\0\0\0\x02", 12,
	  "x: looks like IDX, not a zoomerge stream (read it with --from idx --images FILE, or convert it with tensor import --from idx)" },
	{ "\x93\x01\xff\x7f\x10\x80\x02\x05\x11", 9,
	  "x: not a zoomerge stream, gzip or CSV (bad header length "
	  "360991728498311571)" },
	{ "abc", 3, "x: looks like CSV, not a zoomerge stream (read it with --from csv, or convert it with tensor import --from csv)" },
};

START_TEST(not_a_stream)
{
	struct zm_reader *r;
	struct zm_doc doc;
	struct zm_error err;
	bool eof = false;

	zm_doc_init(&doc);
	ck_assert_int_eq(zm_reader_open_mem(&r, not_stream_cases[_i].bytes,
	                                    not_stream_cases[_i].n, "x", &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_reader_next(r, &doc, &eof, &err), ZM_ERR_FORMAT);
	ck_assert_str_eq(err.msg, not_stream_cases[_i].want);
	zm_reader_close(r);
}
END_TEST

START_TEST(missing_file)
{
	struct zm_reader *r;
	struct zm_error err;
	char path[4096];

	snprintf(path, sizeof(path), "%s/nope.gz", unit_tmpdir());
	ck_assert_int_eq(zm_reader_open(&r, path, &err), ZM_ERR_NOTFOUND);
	ck_assert(strstr(err.msg, "nope.gz") != NULL);
}
END_TEST

/* A header that claims 16 TiB of data is refused from the header alone,
 * before any allocation or read of the data is attempted, and a small
 * limit refuses a document that is really there. */
START_TEST(limit_before_allocation)
{
	static const char json[] =
		"{\"w\":{\"dtype\":\"F32\",\"shape\":[4398046511104],"
		"\"data_offsets\":[0,17592186044416]}}";
	unsigned char buf[256];
	struct zm_reader *r;
	struct zm_doc doc, docs[1];
	struct zm_error err;
	void *bytes;
	size_t n, len;
	bool eof;

	n = put_header(buf, json);
	ck_assert_int_eq(zm_reader_open_mem(&r, buf, n, "huge", &err), ZM_OK);
	zm_doc_init(&doc);
	ck_assert_int_eq(zm_reader_next(r, &doc, &eof, &err), ZM_ERR_FORMAT);
	ck_assert_msg(strstr(err.msg, "limit") != NULL, "%s", err.msg);
	ck_assert_msg(strstr(err.msg, "document 1") != NULL, "%s", err.msg);
	zm_reader_close(r);

	make_doc(&docs[0], 3);
	ck_assert_int_eq(zm_doc_serialize(&docs[0], &bytes, &len, &err), ZM_OK);
	ck_assert_int_eq(zm_reader_open_mem(&r, bytes, len, "small", &err),
	                 ZM_OK);
	zm_reader_set_limit(r, 16);
	ck_assert_int_eq(zm_reader_next(r, &doc, &eof, &err), ZM_ERR_FORMAT);
	ck_assert_msg(strstr(err.msg, "limit") != NULL, "%s", err.msg);
	ck_assert_uint_eq(doc.n_tensors, 0);
	zm_reader_close(r);
	free(bytes);
	zm_doc_release(&docs[0]);
}
END_TEST

/* ZM_MAX_MEMORY with a suffix sets the limit; a malformed value is a
 * usage error naming the variable rather than a silent 16 GiB default. */
static const struct {
	const char *value;
	bool ok;
	uint64_t limit;
} env_limits[] = {
	{ "100", true, 100 }, { "1K", true, 1024 }, { "2MiB", true, 2 << 20 },
	{ "1kB", true, 1024 }, { "20T", true, (uint64_t)20 << 40 },
	{ "lots", false, 0 }, { "12Q", false, 0 }, { "-5", false, 0 },
	{ "99999999999999999999", false, 0 }, { "1K ", false, 0 },
};

START_TEST(limit_from_environment)
{
	struct zm_reader *r;
	struct zm_doc doc, src;
	struct zm_error err;
	uint64_t data = 0;
	void *bytes;
	size_t len, i;
	bool eof;
	enum zm_status st;

	make_doc(&src, 2);
	for (i = 0; i < src.n_tensors; i++)
		data += src.tensors[i].nbytes;
	ck_assert(data > 100 && data < 1024);
	ck_assert_int_eq(zm_doc_serialize(&src, &bytes, &len, &err), ZM_OK);
	setenv("ZM_MAX_MEMORY", env_limits[_i].value, 1);
	st = zm_reader_open_mem(&r, bytes, len, "env", &err);
	unsetenv("ZM_MAX_MEMORY");
	if (!env_limits[_i].ok) {
		ck_assert_int_eq(st, ZM_ERR_USAGE);
		ck_assert_msg(strstr(err.msg, "ZM_MAX_MEMORY") &&
		              strstr(err.msg, env_limits[_i].value), "%s",
		              err.msg);
	} else {
		ck_assert_int_eq(st, ZM_OK);
		zm_doc_init(&doc);
		st = zm_reader_next(r, &doc, &eof, &err);
		ck_assert_int_eq(st, data <= env_limits[_i].limit ?
		                 ZM_OK : ZM_ERR_FORMAT);
		zm_doc_release(&doc);
		zm_reader_close(r);
	}
	free(bytes);
	zm_doc_release(&src);
}
END_TEST

START_TEST(streaming_matches_whole)
{
	char path[4096];
	struct zm_doc docs[3], whole, hdr;
	struct zm_reader *r1, *r2;
	struct zm_error err;
	bool eof1, eof2;
	size_t i, d;

	for (i = 0; i < 3; i++)
		make_doc(&docs[i], 30 + (uint32_t)i);
	snprintf(path, sizeof(path), "%s/s.gz", unit_tmpdir());
	write_file(path, docs, 3, ZM_COMPRESS_AUTO);
	ck_assert_int_eq(zm_reader_open(&r1, path, &err), ZM_OK);
	ck_assert_int_eq(zm_reader_open(&r2, path, &err), ZM_OK);
	zm_doc_init(&whole);
	zm_doc_init(&hdr);
	for (d = 0;; d++) {
		ck_assert_int_eq(zm_reader_next(r1, &whole, &eof1, &err), ZM_OK);
		ck_assert_int_eq(zm_reader_next_header(r2, &hdr, &eof2, &err),
		                 ZM_OK);
		ck_assert_int_eq(eof1, eof2);
		if (eof1)
			break;
		ck_assert_uint_eq(whole.n_tensors, hdr.n_tensors);
		/* Document 2 is read only in part: the rest must be skipped. */
		for (i = 0; i < hdr.n_tensors && !(d == 1 && i == 3); i++) {
			struct zm_tensor *t = &hdr.tensors[i];
			void *buf = malloc(t->nbytes + 1);
			ck_assert_ptr_null(t->data);
			ck_assert_str_eq(t->name, whole.tensors[i].name);
			ck_assert_uint_eq(t->nbytes, whole.tensors[i].nbytes);
			ck_assert_int_eq(zm_reader_read_data(r2, i, buf, &err), ZM_OK);
			ck_assert(memcmp(buf, whole.tensors[i].data, t->nbytes) == 0);
			free(buf);
		}
		/* Out of order reads are refused. */
		if (hdr.n_tensors > 1)
			ck_assert_int_eq(zm_reader_read_data(r2, 0, NULL, &err),
			                 ZM_ERR_USAGE);
	}
	ck_assert_uint_eq(d, 3);
	zm_reader_close(r1);
	zm_reader_close(r2);
	zm_doc_release(&whole);
	zm_doc_release(&hdr);
	for (i = 0; i < 3; i++)
		zm_doc_release(&docs[i]);
}
END_TEST

/* The streaming writer with chunks that straddle tensor boundaries. */
START_TEST(streaming_writer)
{
	char path[4096];
	struct zm_doc doc, back[2];
	struct zm_writer *w;
	struct zm_error err;
	unsigned char *all;
	size_t total = 0, off = 0, i, chunk = (size_t)_i * 7 + 1;
	unsigned char *bytes;
	size_t len;

	make_doc(&doc, 40);
	for (i = 0; i < doc.n_tensors; i++)
		total += doc.tensors[i].nbytes;
	all = malloc(total);
	for (i = 0; i < doc.n_tensors; i++) {
		memcpy(all + off, doc.tensors[i].data, doc.tensors[i].nbytes);
		off += doc.tensors[i].nbytes;
	}
	snprintf(path, sizeof(path), "%s/w.gz", unit_tmpdir());
	ck_assert_int_eq(zm_writer_open(&w, path, ZM_COMPRESS_AUTO, &err), ZM_OK);
	ck_assert_int_eq(zm_writer_begin_doc(w, &doc, &err), ZM_OK);
	for (off = 0; off < total; off += chunk)
		ck_assert_int_eq(zm_writer_write_data(w, all + off,
		                 total - off < chunk ? total - off : chunk, &err),
		                 ZM_OK);
	ck_assert_int_eq(zm_writer_write_data(w, all, 1, &err), ZM_ERR_USAGE);
	ck_assert_int_eq(zm_writer_commit(w, &err), ZM_OK);
	bytes = unit_slurp(path, &len);
	ck_assert_ptr_nonnull(bytes);
	ck_assert_uint_eq(read_all_mem(bytes, len, back, 2), 1);
	assert_doc_eq(&doc, &back[0]);
	zm_doc_release(&back[0]);
	zm_doc_release(&doc);
	free(bytes);
	free(all);
}
END_TEST

START_TEST(writer_abort_and_incomplete)
{
	const char *dir = unit_tmpdir();
	char path[4096];
	struct zm_doc doc;
	struct zm_writer *w;
	struct zm_error err;
	FILE *f;
	char got[16] = { 0 };

	snprintf(path, sizeof(path), "%s/keep.gz", dir);
	f = fopen(path, "w");
	fputs("old", f);
	fclose(f);
	make_doc(&doc, 50);
	ck_assert_int_eq(zm_writer_open(&w, path, 6, &err), ZM_OK);
	ck_assert_int_eq(zm_writer_write_doc(w, &doc, &err), ZM_OK);
	zm_writer_abort(w);
	/* An incomplete document is refused at commit. */
	ck_assert_int_eq(zm_writer_open(&w, path, 6, &err), ZM_OK);
	ck_assert_int_eq(zm_writer_begin_doc(w, &doc, &err), ZM_OK);
	ck_assert_int_eq(zm_writer_commit(w, &err), ZM_ERR_USAGE);
	ck_assert(strstr(err.msg, "incomplete") != NULL);
	f = fopen(path, "r");
	ck_assert_uint_eq(fread(got, 1, sizeof(got) - 1, f), 3);
	fclose(f);
	ck_assert_str_eq(got, "old");
	ck_assert_uint_eq(unit_count_entries(dir), 1);
	/* Bad levels and inconsistent tensors are usage errors. */
	ck_assert_int_eq(zm_writer_open(&w, path, 10, &err), ZM_ERR_USAGE);
	doc.tensors[0].nbytes--;
	ck_assert_int_eq(zm_writer_open(&w, path, 1, &err), ZM_OK);
	ck_assert_int_eq(zm_writer_write_doc(w, &doc, &err), ZM_ERR_USAGE);
	zm_writer_abort(w);
	doc.tensors[0].nbytes++;
	zm_doc_release(&doc);
}
END_TEST

/* AUTO: float data Huffman-only (zeros cost at least a bit per byte),
 * integer data and explicit levels use LZ77 (zeros nearly vanish). */
START_TEST(compression_policy)
{
	static const struct { enum zm_dtype dt; int level; bool small; } cases[] = {
		{ ZM_DTYPE_F32, ZM_COMPRESS_AUTO, false },
		{ ZM_DTYPE_BF16, ZM_COMPRESS_AUTO, false },
		{ ZM_DTYPE_I32, ZM_COMPRESS_AUTO, true },
		{ ZM_DTYPE_U8, ZM_COMPRESS_AUTO, true },
		{ ZM_DTYPE_F32, 6, true },
		{ ZM_DTYPE_F32, 1, true },
	};
	const int64_t shape[] = { 1 << 20 };
	char path[4096];
	struct zm_doc doc;
	struct zm_tensor t;
	struct zm_error err;
	struct stat st;
	size_t bytes;

	zm_doc_init(&doc);
	ck_assert_int_eq(zm_tensor_alloc(&t, "z", cases[_i].dt, 1, shape, &err),
	                 ZM_OK);
	bytes = t.nbytes;
	ck_assert_int_eq(zm_doc_add(&doc, &t, &err), ZM_OK);
	snprintf(path, sizeof(path), "%s/c.gz", unit_tmpdir());
	write_file(path, &doc, 1, cases[_i].level);
	ck_assert_int_eq(stat(path, &st), 0);
	if (cases[_i].small)
		ck_assert_int_lt(st.st_size, 20000);
	else
		ck_assert_int_gt(st.st_size, (off_t)(bytes / 8));
	zm_doc_release(&doc);
}
END_TEST

START_TEST(level0_is_stored)
{
	const int64_t shape[] = { 100000 };
	char path[4096];
	struct zm_doc doc;
	struct zm_tensor t;
	struct zm_error err;
	struct stat st;

	zm_doc_init(&doc);
	ck_assert_int_eq(zm_tensor_alloc(&t, "z", ZM_DTYPE_U8, 1, shape, &err),
	                 ZM_OK);
	ck_assert_int_eq(zm_doc_add(&doc, &t, &err), ZM_OK);
	snprintf(path, sizeof(path), "%s/l0.gz", unit_tmpdir());
	write_file(path, &doc, 1, 0);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_gt(st.st_size, 100000);
	ck_assert_int_eq(st.st_mode & 0777, 0666 & ~(mode_t)umask(022));
	zm_doc_release(&doc);
}
END_TEST

static const struct { const char *val; bool ok; int level; } env_cases[] = {
	{ NULL, true, ZM_COMPRESS_AUTO }, { "", true, ZM_COMPRESS_AUTO },
	{ "auto", true, ZM_COMPRESS_AUTO }, { "0", true, 0 }, { "9", true, 9 },
	{ "10", false, 0 }, { "-1", false, 0 }, { "x", false, 0 },
};

START_TEST(compress_env)
{
	int level = 42;

	if (env_cases[_i].val)
		setenv("ZM_COMPRESS", env_cases[_i].val, 1);
	else
		unsetenv("ZM_COMPRESS");
	ck_assert_int_eq(zm_compress_from_env(&level), env_cases[_i].ok);
	if (env_cases[_i].ok)
		ck_assert_int_eq(level, env_cases[_i].level);
	unsetenv("ZM_COMPRESS");
}
END_TEST

/* The level a file's name asks for: plain for *.safetensors only. */
START_TEST(compress_for_path)
{
	ck_assert_int_eq(zm_compress_for_path("m.safetensors", 6),
	                 ZM_COMPRESS_NONE);
	ck_assert_int_eq(zm_compress_for_path("d/.safetensors",
	                                      ZM_COMPRESS_AUTO),
	                 ZM_COMPRESS_NONE);
	ck_assert_int_eq(zm_compress_for_path("m.safetensors.gz", 6), 6);
	ck_assert_int_eq(zm_compress_for_path("m.safetensors.gz",
	                                      ZM_COMPRESS_AUTO),
	                 ZM_COMPRESS_AUTO);
	ck_assert_int_eq(zm_compress_for_path("safetensors", 3), 3);
	ck_assert_int_eq(zm_compress_for_path("m.SAFETENSORS", 3), 3);
	ck_assert_int_eq(zm_compress_for_path("-", 3), 3);
	ck_assert_int_eq(zm_compress_for_path("", 3), 3);
}
END_TEST

/* Keys near the limit: a 990-byte tensor name and metadata key round trip
 * (the limit sits below what the reader's YAML parser accepts); 1001 bytes
 * are refused when writing, never written into an unreadable stream. */
START_TEST(long_keys)
{
	size_t lens[2] = { 990, 1001 }, k;

	for (k = 0; k < 2; k++) {
		char *name = malloc(lens[k] + 1);
		struct zm_doc doc, back;
		struct zm_tensor t;
		struct zm_error err;
		struct zm_reader *r;
		int64_t sh[1] = { 2 };
		void *bytes;
		size_t len;
		bool eof;

		ck_assert_ptr_nonnull(name);
		memset(name, 'k', lens[k]);
		name[lens[k]] = '\0';
		zm_doc_init(&doc);
		zm_tensor_init(&t);
		ck_assert_int_eq(zm_tensor_alloc(&t, name, ZM_DTYPE_F32, 1, sh,
		                                 &err), ZM_OK);
		ck_assert_int_eq(zm_doc_add(&doc, &t, &err), ZM_OK);
		ck_assert_int_eq(zm_doc_serialize(&doc, &bytes, &len, &err),
		                 k ? ZM_ERR_DATA : ZM_OK);
		if (k) {
			ck_assert_ptr_nonnull(strstr(err.msg, "tensor name"));
			ck_assert_ptr_nonnull(strstr(err.msg, "longer than 1000 bytes"));
		} else {
			free(bytes);
		}
		/* The same length as a metadata key. */
		zm_doc_release(&doc);
		zm_doc_init(&doc);
		ck_assert_int_eq(zm_tensor_alloc(&t, "x", ZM_DTYPE_F32, 1, sh,
		                                 &err), ZM_OK);
		ck_assert_int_eq(zm_doc_add(&doc, &t, &err), ZM_OK);
		ck_assert_int_eq(zm_doc_set_meta(&doc, name, "v", &err), ZM_OK);
		ck_assert_int_eq(zm_doc_serialize(&doc, &bytes, &len, &err),
		                 k ? ZM_ERR_DATA : ZM_OK);
		if (!k) {
			zm_doc_init(&back);
			ck_assert_int_eq(zm_reader_open_mem(&r, bytes, len, "mem",
			                                    &err), ZM_OK);
			ck_assert_msg(zm_reader_next(r, &back, &eof, &err) == ZM_OK,
			              "%s", err.msg);
			ck_assert(!eof);
			ck_assert_str_eq(zm_doc_meta(&back, name), "v");
			zm_reader_close(r);
			zm_doc_release(&back);
			free(bytes);
		}
		zm_doc_release(&doc);
		free(name);
	}
}
END_TEST

START_TEST(doc_operations)
{
	struct zm_doc doc;
	struct zm_tensor t;
	struct zm_error err;
	const int64_t s[] = { 2 };

	zm_doc_init(&doc);
	add_tensor(&doc, "a", ZM_DTYPE_F32, 1, s, 1);
	add_tensor(&doc, "b", ZM_DTYPE_F32, 1, s, 2);
	ck_assert_int_eq(zm_tensor_alloc(&t, "a", ZM_DTYPE_F32, 1, s, &err), ZM_OK);
	ck_assert_int_eq(zm_doc_add(&doc, &t, &err), ZM_ERR_USAGE);
	zm_tensor_release(&t);
	ck_assert_ptr_eq(zm_doc_find(&doc, "b"), &doc.tensors[1]);
	ck_assert(zm_doc_remove(&doc, "a"));
	ck_assert(!zm_doc_remove(&doc, "a"));
	ck_assert_uint_eq(doc.n_tensors, 1);
	ck_assert_str_eq(doc.tensors[0].name, "b");
	ck_assert_ptr_null(zm_doc_meta(&doc, "k"));
	ck_assert_int_eq(zm_doc_set_meta(&doc, "k", "1", &err), ZM_OK);
	ck_assert_int_eq(zm_doc_set_meta(&doc, "k", "2", &err), ZM_OK);
	ck_assert_uint_eq(doc.n_meta, 1);
	ck_assert_str_eq(zm_doc_meta(&doc, "k"), "2");
	zm_doc_release(&doc);
	ck_assert_uint_eq(doc.n_tensors, 0);
}
END_TEST

Suite *suite_stream(void)
{
	Suite *s = suite_create("stream");
	TCase *tc = tcase_create("stream");
	int nlev = (int)(sizeof(levels) / sizeof(levels[0]));

	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, roundtrip_levels, 0, nlev);
	tcase_add_loop_test(tc, roundtrip_large, 0, 3);
	tcase_add_test(tc, concatenated_members);
	tcase_add_test(tc, uncompressed_and_foreign_gzip);
	tcase_add_test(tc, crafted_document);
	tcase_add_loop_test(tc, malformed, 0,
	                    (int)(sizeof(bad_cases) / sizeof(bad_cases[0])));
	tcase_add_test(tc, empty_input);
	tcase_add_test(tc, missing_file);
	tcase_add_loop_test(tc, trailer_cut, 0, 9);
	tcase_add_test(tc, second_member_cut);
	tcase_add_loop_test(tc, not_a_stream, 0, (int)(sizeof(not_stream_cases) /
	                    sizeof(not_stream_cases[0])));
	tcase_add_test(tc, limit_before_allocation);
	tcase_add_loop_test(tc, limit_from_environment, 0,
	                    (int)(sizeof(env_limits) / sizeof(env_limits[0])));
	tcase_add_test(tc, streaming_matches_whole);
	tcase_add_loop_test(tc, streaming_writer, 0, 4);
	tcase_add_test(tc, writer_abort_and_incomplete);
	tcase_add_loop_test(tc, compression_policy, 0, 6);
	tcase_add_test(tc, level0_is_stored);
	tcase_add_loop_test(tc, compress_env, 0,
	                    (int)(sizeof(env_cases) / sizeof(env_cases[0])));
	tcase_add_test(tc, compress_for_path);
	tcase_add_test(tc, doc_operations);
	tcase_add_test(tc, long_keys);
	suite_add_tcase(s, tc);
	return s;
}
