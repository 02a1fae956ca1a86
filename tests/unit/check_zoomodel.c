/*
 * Models out of a zoo (zoomodel.h): the model put in comes back with the
 * same parameters and version, a missing name is ZM_ERR_NOTFOUND, and a
 * document that is no model names the zoo file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unit.h"
#include "model.h"
#include "stream.h"
#include "zoo.h"
#include "zoomodel.h"

static const char arch[] = "input: [2]\nlayers: [{name: out, units: 3}]\n";

/* Puts m into zoo as name; *v is its version. */
static void put(struct zm_zoo *zoo, const char *name,
                const struct zm_model *m, int64_t *v)
{
	struct zm_doc doc;
	struct zm_error err;

	zm_doc_init(&doc);
	ck_assert_int_eq(zm_model_to_doc(m, &doc, &err), ZM_OK);
	ck_assert_int_eq(zm_zoo_put_model(zoo, name, &doc, v, &err), ZM_OK);
	zm_doc_release(&doc);
}

START_TEST(test_load)
{
	const char *dir = unit_tmpdir();
	struct zm_model *m = unit_model(arch, 5), *got = NULL;
	struct zm_zoo *zoo = NULL;
	struct zm_doc doc;
	struct zm_error err;
	int64_t v = 0, v2 = 0;
	size_t i;

	zm_doc_init(&doc);
	ck_assert_int_eq(zm_zoo_open(&zoo, dir, ZM_ZOO_WRITE | ZM_ZOO_CREATE,
	                             &err), ZM_OK);
	put(zoo, "a", m, &v);
	/* a second model whose document is data, not a model */
	ck_assert_int_eq(zm_doc_set_meta(&doc, "zm.kind", "data", &err), ZM_OK);
	ck_assert_int_eq(zm_zoo_put_model(zoo, "b", &doc, &v2, &err), ZM_OK);
	zm_doc_release(&doc);
	ck_assert_int_eq(zm_zoo_commit(zoo, &err), ZM_OK);
	zm_zoo_close(zoo);

	ck_assert_msg(zm_zoo_load_model_at(dir, "a", &got, &err) == ZM_OK,
	              "%s", err.msg);
	for (i = 0; i < zm_tensor_numel(&m->layers[0].weight); i++)
		ck_assert_float_eq(((float *)got->layers[0].weight.data)[i],
		                   ((float *)m->layers[0].weight.data)[i]);
	zm_model_free(got);
	got = NULL;
	ck_assert_int_eq(zm_zoo_load_model_at(dir, "none", &got, &err),
	                 ZM_ERR_NOTFOUND);
	ck_assert_ptr_null(got);

	ck_assert_int_eq(zm_zoo_open(&zoo, dir, ZM_ZOO_READ, &err), ZM_OK);
	v2 = -1;
	ck_assert_int_eq(zm_zoo_load_model(zoo, "a", &got, &v2, &err), ZM_OK);
	ck_assert_int_eq(v2, v);
	zm_model_free(got);
	got = NULL;
	ck_assert_int_ne(zm_zoo_load_model(zoo, "b", &got, NULL, &err), ZM_OK);
	ck_assert_msg(strncmp(err.msg, dir, strlen(dir)) == 0, "%s", err.msg);
	zm_zoo_close(zoo);
	zm_model_free(m);
}
END_TEST

/* A model argument: a zoo model's current file, else an existing file,
 * else (with a zoo) not found; without a zoo any text is a path. */
START_TEST(test_model_file)
{
	const char *dir = unit_tmpdir();
	struct zm_model *m = unit_model(arch, 5);
	struct zm_zoo *zoo = NULL;
	struct zm_error err;
	char other[4096], *path = NULL;
	int64_t v = 0;
	FILE *f;

	ck_assert_int_eq(zm_zoo_open(&zoo, dir, ZM_ZOO_WRITE | ZM_ZOO_CREATE,
	                             &err), ZM_OK);
	put(zoo, "a", m, &v);
	ck_assert_int_eq(zm_zoo_commit(zoo, &err), ZM_OK);
	zm_zoo_close(zoo);
	snprintf(other, sizeof(other), "%s/other.gz", dir);
	ck_assert_ptr_nonnull(f = fopen(other, "w"));
	fclose(f);

	ck_assert_int_eq(zm_zoo_open(&zoo, dir, ZM_ZOO_READ, &err), ZM_OK);
	ck_assert_int_eq(zm_zoo_model_file(zoo, "a", &path, &err), ZM_OK);
	ck_assert_msg(strncmp(path, dir, strlen(dir)) == 0 &&
	              strcmp(path, "a") != 0, "%s", path);
	ck_assert_int_eq(access(path, R_OK), 0);
	free(path);
	path = NULL;
	ck_assert_int_eq(zm_zoo_model_file(zoo, other, &path, &err), ZM_OK);
	ck_assert_str_eq(path, other);
	free(path);
	path = NULL;
	ck_assert_int_eq(zm_zoo_model_file(zoo, "none", &path, &err),
	                 ZM_ERR_NOTFOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "none"));
	ck_assert_ptr_nonnull(strstr(err.msg, dir));
	zm_zoo_close(zoo);
	ck_assert_int_eq(zm_zoo_model_file(NULL, "none", &path, &err), ZM_OK);
	ck_assert_str_eq(path, "none");
	free(path);
	zm_model_free(m);
}
END_TEST

Suite *suite_zoomodel(void)
{
	Suite *s = suite_create("zoomodel");
	TCase *tc = tcase_create("zoomodel");

	tcase_add_test(tc, test_load);
	tcase_add_test(tc, test_model_file);
	suite_add_tcase(s, tc);
	return s;
}
