/*
 * npz and statedict: archives built here byte by byte (local headers,
 * central directory, end record, CRCs from zlib), .npy headers as numpy
 * writes them and as it never does, every truncation of a valid archive,
 * and the matching of state dicts to an architecture by name, order and
 * map, with the errors naming both sides.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "mem.h"
#include "npz.h"
#include "statedict.h"
#include "unit.h"

struct zip {
	unsigned char local[8192], central[4096];
	size_t nl, nc, count;
};

static void put16(unsigned char *p, unsigned v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *p, uint32_t v)
{
	put16(p, v & 0xffff);
	put16(p + 2, v >> 16);
}

/* Adds a member, stored (method 0) or raw-deflated (method 8). */
static void zip_add(struct zip *z, const char *name, const void *data,
                    size_t n, int method)
{
	unsigned char buf[4096], *h = z->local + z->nl, *c = z->central + z->nc;
	const unsigned char *body = data;
	size_t nn = strlen(name), cn = n;
	uint32_t crc = (uint32_t)crc32(0, data, (uInt)n);

	if (method == 8) {
		z_stream s;
		memset(&s, 0, sizeof(s));
		ck_assert_int_eq(deflateInit2(&s, 9, Z_DEFLATED, -15, 8,
		                              Z_DEFAULT_STRATEGY), Z_OK);
		s.next_in = (Bytef *)(uintptr_t)data;
		s.avail_in = (uInt)n;
		s.next_out = buf;
		s.avail_out = sizeof(buf);
		ck_assert_int_eq(deflate(&s, Z_FINISH), Z_STREAM_END);
		cn = sizeof(buf) - s.avail_out;
		deflateEnd(&s);
		body = buf;
	}
	memset(h, 0, 30);
	put32(h, 0x04034b50);
	put16(h + 8, (unsigned)method);
	put32(h + 14, crc);
	put32(h + 18, (uint32_t)cn);
	put32(h + 22, (uint32_t)n);
	put16(h + 26, (unsigned)nn);
	memcpy(h + 30, name, nn);
	memcpy(h + 30 + nn, body, cn);
	memset(c, 0, 46);
	put32(c, 0x02014b50);
	put16(c + 10, (unsigned)method);
	put32(c + 16, crc);
	put32(c + 20, (uint32_t)cn);
	put32(c + 24, (uint32_t)n);
	put16(c + 28, (unsigned)nn);
	put32(c + 42, (uint32_t)z->nl);
	memcpy(c + 46, name, nn);
	z->nl += 30 + nn + cn;
	z->nc += 46 + nn;
	z->count++;
}

/* The archive's bytes in new memory (free them). */
static unsigned char *zip_finish(const struct zip *z, size_t *len)
{
	unsigned char *p = malloc(z->nl + z->nc + 22), *e;

	ck_assert_ptr_nonnull(p);
	memcpy(p, z->local, z->nl);
	memcpy(p + z->nl, z->central, z->nc);
	e = p + z->nl + z->nc;
	memset(e, 0, 22);
	put32(e, 0x06054b50);
	put16(e + 8, (unsigned)z->count);
	put16(e + 10, (unsigned)z->count);
	put32(e + 12, (uint32_t)z->nc);
	put32(e + 16, (uint32_t)z->nl);
	*len = z->nl + z->nc + 22;
	return p;
}

/* A .npy v1 array with the given header dict and data. */
static size_t npy(unsigned char *out, const char *dict, const void *data,
                  size_t n)
{
	size_t hl = strlen(dict);

	memcpy(out, "\x93NUMPY\x01\x00", 8);
	put16(out + 8, (unsigned)hl);
	memcpy(out + 10, dict, hl);
	memcpy(out + 10 + hl, data, n);
	return 10 + hl + n;
}

/* Parses an archive of one array; returns the status, doc filled. */
static enum zm_status one(const char *dict, const void *data, size_t n,
                          int method, struct zm_doc *doc,
                          struct zm_error *err)
{
	struct zip z = { .nl = 0 };
	unsigned char arr[2048], *bytes;
	size_t len;
	enum zm_status st;

	zip_add(&z, "a.npy", arr, npy(arr, dict, data, n), method);
	bytes = zip_finish(&z, &len);
	st = zm_npz_parse(bytes, len, "t.npz", doc, err);
	free(bytes);
	return st;
}

static const float six[6] = { 1, -2, 3.5f, 0.25f, 1e-3f, -7 };

START_TEST(test_f4_stored_and_deflated)
{
	struct zm_doc doc;
	struct zm_error err;
	const struct zm_tensor *t;

	zm_doc_init(&doc);
	ck_assert_int_eq(one("{'descr': '<f4', 'fortran_order': False, "
	                     "'shape': (2, 3), }        \n", six, sizeof(six),
	                     _i ? 8 : 0, &doc, &err), ZM_OK);
	ck_assert_uint_eq(doc.n_tensors, 1);
	t = &doc.tensors[0];
	ck_assert_str_eq(t->name, "a");
	ck_assert_int_eq(t->dtype, ZM_DTYPE_F32);
	ck_assert_int_eq(t->ndim, 2);
	ck_assert_int_eq(t->shape[0], 2);
	ck_assert_int_eq(t->shape[1], 3);
	ck_assert_mem_eq(t->data, six, sizeof(six));
	ck_assert_uint_eq(doc.n_meta, 0);
	zm_doc_release(&doc);
}
END_TEST

/* Headers numpy writes: scalars, 1-D, f8, f2, u1, a 1-D array marked
 * Fortran (the same bytes as C order). */
START_TEST(test_header_forms)
{
	static const struct {
		const char *dict;
		enum zm_dtype dtype;
		int ndim;
		size_t bytes;
	} cases[] = {
		{ "{'descr': '<f8', 'fortran_order': False, 'shape': (), }",
		  ZM_DTYPE_F64, 0, 8 },
		{ "{'descr': '<f2', 'fortran_order': False, 'shape': (3,), }",
		  ZM_DTYPE_F16, 1, 6 },
		{ "{\"descr\": \"|u1\", \"fortran_order\": True, \"shape\": (4,)}",
		  ZM_DTYPE_U8, 1, 4 },
		{ "{'shape': (1, 1), 'fortran_order': False, 'descr': '<i8'}",
		  ZM_DTYPE_I64, 2, 8 },
		{ "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3), }",
		  ZM_DTYPE_F32, 2, 0 },
	};
	unsigned char data[16] = { 0 };
	struct zm_doc doc;
	struct zm_error err;

	zm_doc_init(&doc);
	ck_assert_msg(one(cases[_i].dict, data, cases[_i].bytes, 0, &doc,
	                  &err) == ZM_OK, "%s", err.msg);
	ck_assert_int_eq(doc.tensors[0].dtype, cases[_i].dtype);
	ck_assert_int_eq(doc.tensors[0].ndim, cases[_i].ndim);
	ck_assert_uint_eq(doc.tensors[0].nbytes, cases[_i].bytes);
	zm_doc_release(&doc);
}
END_TEST

/* What zoomerge refuses, with the status and a word of the message. */
START_TEST(test_refusals)
{
	static const struct {
		const char *dict;
		size_t bytes;
		enum zm_status st;
		const char *says;
	} cases[] = {
		{ "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
		  24, ZM_ERR_DATA, "Fortran order" },
		{ "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }",
		  16, ZM_ERR_DATA, "pickle" },
		{ "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }",
		  8, ZM_ERR_DATA, "big-endian" },
		{ "{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }",
		  16, ZM_ERR_DATA, "not supported" },
		{ "{'descr': [('a', '<f4')], 'fortran_order': False, "
		  "'shape': (2,), }", 8, ZM_ERR_DATA, "structured" },
		{ "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
		  20, ZM_ERR_FORMAT, "do not match" },
		{ "{'descr': '<f4', 'fortran_order': False}", 4, ZM_ERR_FORMAT,
		  "header" },
		{ "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), "
		  "'x': 1}", 8, ZM_ERR_FORMAT, "header" },
		{ "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }",
		  8, ZM_ERR_FORMAT, "header" },
		{ "{'descr': '<f4', 'fortran_order': False, 'shape': "
		  "(99999999999, 99999999999, 99999999999), }", 8,
		  ZM_ERR_FORMAT, "do not match" },
	};
	unsigned char data[32] = { 0 };
	struct zm_doc doc;
	struct zm_error err;

	zm_doc_init(&doc);
	ck_assert_int_eq(one(cases[_i].dict, data, cases[_i].bytes, 0, &doc,
	                     &err), cases[_i].st);
	ck_assert_msg(strstr(err.msg, cases[_i].says), "%s", err.msg);
	ck_assert_msg(strstr(err.msg, "t.npz: member 'a.npy'"), "%s",
	              err.msg);
	ck_assert_uint_eq(doc.n_tensors, 0);
}
END_TEST

/* Every prefix and every single-byte change of a two-member archive fails
 * cleanly or parses to arrays of consistent sizes. */
START_TEST(test_truncated_and_flipped)
{
	static const char dict[] =
		"{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }";
	struct zip z = { .nl = 0 };
	unsigned char arr[256], *bytes;
	struct zm_doc doc;
	struct zm_error err;
	size_t len, n, i;

	n = npy(arr, dict, six, sizeof(six));
	zip_add(&z, "w.npy", arr, n, 0);
	zip_add(&z, "b.npy", arr, n, 8);
	bytes = zip_finish(&z, &len);
	zm_doc_init(&doc);
	ck_assert_int_eq(zm_npz_parse(bytes, len, "t.npz", &doc, &err), ZM_OK);
	ck_assert_uint_eq(doc.n_tensors, 2);
	ck_assert_mem_eq(doc.tensors[1].data, six, sizeof(six));
	for (i = 0; i < len; i++)
		ck_assert_int_ne(zm_npz_parse(bytes, i, "t.npz", &doc, &err),
		                 ZM_OK);
	for (i = 0; i < len; i++) {
		bytes[i] ^= 0x5a;
		if (zm_npz_parse(bytes, len, "t.npz", &doc, &err) == ZM_OK)
			for (n = 0; n < doc.n_tensors; n++)
				ck_assert_uint_eq(doc.tensors[n].nbytes,
				                  zm_tensor_numel(&doc.tensors[n]) *
				                  zm_dtype_size(doc.tensors[n].dtype));
		bytes[i] ^= 0x5a;
	}
	zm_doc_release(&doc);
	free(bytes);
}
END_TEST

START_TEST(test_members)
{
	static const char dict[] =
		"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }";
	struct zip z = { .nl = 0 };
	unsigned char arr[256], *bytes;
	struct zm_doc doc;
	struct zm_error err;
	size_t len, n;

	n = npy(arr, dict, six, 4);
	zip_add(&z, "x.npy", arr, n, 0);
	zip_add(&z, _i ? "x.npy" : "notes.txt", arr, n, 0);
	bytes = zip_finish(&z, &len);
	zm_doc_init(&doc);
	ck_assert_int_ne(zm_npz_parse(bytes, len, "t.npz", &doc, &err), ZM_OK);
	ck_assert_msg(strstr(err.msg, _i ? "a second array called 'x'" :
	                     "not an array (NAME.npy)"), "%s", err.msg);
	ck_assert_uint_eq(doc.n_tensors, 0);
	free(bytes);
}
END_TEST

/* ---- state dicts ---- */

static const char mlp[] =
	"input: [3]\n"
	"layers:\n"
	"  - {name: fc1, units: 2, activation: relu}\n"
	"  - {name: out, units: 2}\n";

/* A state dict of the mlp's shapes under names w1/b1/w2/b2, values
 * 1, 2, 3, ... in order. */
static void state_dict(struct zm_doc *doc, const char *const names[4],
                       bool transpose_first)
{
	const int64_t shapes[4][2] = { { 2, 3 }, { 2, 0 }, { 2, 2 }, { 2, 0 } };
	float v = 1;
	int k;
	size_t i;

	zm_doc_init(doc);
	for (k = 0; k < 4; k++) {
		struct zm_tensor t;
		struct zm_error err;
		int64_t s[2] = { shapes[k][0], shapes[k][1] };
		if (k == 0 && transpose_first) {
			s[0] = 3;
			s[1] = 2;
		}
		zm_tensor_init(&t);
		ck_assert_int_eq(zm_tensor_alloc(&t, names[k], ZM_DTYPE_F32,
		                                 s[1] ? 2 : 1, s, &err), ZM_OK);
		for (i = 0; i < zm_tensor_numel(&t); i++)
			((float *)t.data)[i] = v++;
		ck_assert_int_eq(zm_doc_add(doc, &t, &err), ZM_OK);
	}
}

START_TEST(test_state_dict_match)
{
	static const char *const names[3][4] = {
		{ "fc1.weight", "fc1.bias", "out.weight", "out.bias" },
		{ "0.weight", "0.bias", "2.weight", "2.bias" },
		{ "net.2.weight", "net.2.bias", "net.10.weight", "net.10.bias" },
	};
	struct zm_arch *a = unit_arch(mlp);
	struct zm_model *m = NULL;
	struct zm_doc sd, back;
	struct zm_error err;
	int k;

	state_dict(&sd, names[_i], false);
	ck_assert_msg(zm_state_dict_import(&sd, "sd", a, &m, &err) == ZM_OK,
	              "%s", err.msg);
	/* Values land in the layer they were written for (10 is net.10, not
	 * net.1x by string order). */
	ck_assert_float_eq(((float *)m->layers[0].weight.data)[0], 1);
	ck_assert_float_eq(((float *)m->layers[0].bias.data)[1], 8);
	ck_assert_float_eq(((float *)m->layers[1].weight.data)[3], 12);
	ck_assert_float_eq(((float *)m->layers[1].bias.data)[0], 13);
	zm_doc_init(&back);
	ck_assert_int_eq(zm_state_dict_export(m, &back, &err), ZM_OK);
	ck_assert_uint_eq(back.n_tensors, 4);
	for (k = 0; k < 4; k++) {
		ck_assert_str_eq(back.tensors[k].name, names[_i][k]);
		ck_assert_mem_eq(back.tensors[k].data, sd.tensors[k].data,
		                 sd.tensors[k].nbytes);
	}
	ck_assert_uint_eq(back.n_meta, 0);
	zm_doc_release(&back);
	zm_doc_release(&sd);
	zm_model_free(m);
	zm_arch_free(a);
}
END_TEST

START_TEST(test_state_dict_errors)
{
	static const struct {
		const char *names[4];
		bool transpose;
		const char *says;
	} cases[] = {
		{ { "fc1.weight", "fc1.bias", "out.weight", "head.bias" }, false,
		  "no tensor 'out.bias' for layer 'out'" },
		{ { "0.weight", "0.bias", "2.weight", "4.bias" }, false,
		  "3 numbered modules" },
		{ { "0.weight", "0.bias", "2.weight", "2.bias" }, true,
		  "tensor '0.weight' has shape [3, 2], layer 'fc1' needs [2, 3] "
		  "(transposed?" },
		{ { "a.0.weight", "a.0.bias", "b.1.weight", "b.1.bias" }, false,
		  "different nn.Sequential containers" },
		{ { "fc1.weight", "fc1.bias", "x.weight", "x.bias" }, false,
		  "tensor 'fc1.weight' is neither" },
	};
	struct zm_arch *a = unit_arch(mlp);
	struct zm_model *m = NULL;
	struct zm_doc sd;
	struct zm_error err;

	state_dict(&sd, cases[_i].names, cases[_i].transpose);
	ck_assert_int_eq(zm_state_dict_import(&sd, "sd", a, &m, &err),
	                 ZM_ERR_DATA);
	ck_assert_msg(strstr(err.msg, cases[_i].says), "%s", err.msg);
	ck_assert_ptr_null(m);
	zm_doc_release(&sd);
	zm_arch_free(a);
}
END_TEST

/* map: wins over the names, is written to zm.arch and read back. */
START_TEST(test_state_dict_map)
{
	static const char *const names[4] = {
		"enc.lin.weight", "enc.lin.bias", "head.weight", "head.bias"
	};
	struct zm_arch *a = unit_arch(
		"input: [3]\n"
		"layers:\n"
		"  - {name: fc1, units: 2, activation: relu}\n"
		"  - {name: out, units: 2}\n"
		"map: {fc1: enc.lin, out: head}\n");
	struct zm_arch *back = NULL, *plain;
	struct zm_model *m = NULL;
	struct zm_doc sd;
	struct zm_error err;
	struct zm_buf b;

	state_dict(&sd, names, false);
	ck_assert_msg(zm_state_dict_import(&sd, "sd", a, &m, &err) == ZM_OK,
	              "%s", err.msg);
	ck_assert_float_eq(((float *)m->layers[1].bias.data)[1], 14);
	zm_buf_init(&b);
	zm_arch_to_json(m->arch, &b);
	ck_assert_ptr_nonnull(strstr(b.data, "\"map\": {\"fc1\": \"enc.lin\", "
	                             "\"out\": \"head\"}"));
	ck_assert_int_eq(zm_arch_parse_json(b.data, b.len, "j", &back, &err),
	                 ZM_OK);
	ck_assert(zm_arch_equal(back, a));
	/* The map does not change the computation: models merge as usual. */
	plain = unit_arch(mlp);
	ck_assert_int_eq(zm_model_same_arch(back, plain, &err), ZM_OK);
	ck_assert(!zm_arch_equal(back, plain));
	zm_arch_free(plain);
	zm_buf_release(&b);
	zm_arch_free(back);
	zm_doc_release(&sd);
	zm_model_free(m);
	zm_arch_free(a);
}
END_TEST

Suite *suite_npz(void)
{
	Suite *s = suite_create("npz");
	TCase *tc = tcase_create("npz");

	tcase_add_loop_test(tc, test_f4_stored_and_deflated, 0, 2);
	tcase_add_loop_test(tc, test_header_forms, 0, 5);
	tcase_add_loop_test(tc, test_refusals, 0, 10);
	tcase_add_test(tc, test_truncated_and_flipped);
	tcase_add_loop_test(tc, test_members, 0, 2);
	tcase_add_loop_test(tc, test_state_dict_match, 0, 3);
	tcase_add_loop_test(tc, test_state_dict_errors, 0, 5);
	tcase_add_test(tc, test_state_dict_map);
	suite_add_tcase(s, tc);
	return s;
}
