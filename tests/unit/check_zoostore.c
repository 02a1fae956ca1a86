/*
 * Models into a zoo (zoostore.h): a created model comes back with its
 * seed, role and tags; an import names its --base; a trained model
 * becomes the next version only while nobody else moved it, and a
 * conflict stores nothing.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "unit.h"
#include "model.h"
#include "zoo.h"
#include "zoomodel.h"
#include "zoostore.h"

static const char arch[] = "input: [2]\nlayers: [{name: out, units: 3}]\n";

/* Writes arch to DIR/arch.yaml and returns the path (static). */
static const char *arch_file(const char *dir)
{
	static char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/arch.yaml", dir);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(arch, f);
	fclose(f);
	return path;
}

START_TEST(test_add_created)
{
	const char *dir = unit_tmpdir();
	struct zm_kv_list tags = { NULL, 0 }, hp = { NULL, 0 };
	struct zm_zoo_add a = { .name = "m", .arch_path = arch_file(dir),
	                        .seed = 7, .tags = &tags, .hparams = &hp };
	struct zm_zoo_add_notes notes;
	struct zm_model *got = NULL, *ref = unit_model(arch, 7);
	struct zm_zoo *zoo = NULL;
	struct zm_error err;
	int64_t v = 0;
	size_t i;

	ck_assert_int_eq(zm_kv_set(&tags, "role", "router", &err), ZM_OK);
	ck_assert_int_eq(zm_kv_set(&hp, "lr", "0.5", &err), ZM_OK);
	ck_assert_int_eq(zm_zoo_open(&zoo, dir, ZM_ZOO_WRITE | ZM_ZOO_CREATE,
	                             &err), ZM_OK);
	ck_assert_msg(zm_zoo_add_model(zoo, &a, &v, &notes, &err) == ZM_OK,
	              "%s", err.msg);
	ck_assert_int_eq(v, 1);
	ck_assert(!notes.base_failed && !notes.base_unknown &&
	          !notes.base_unrelated);
	/* A second creation of the same name is refused. */
	ck_assert_int_eq(zm_zoo_add_model(zoo, &a, &v, &notes, &err),
	                 ZM_ERR_USAGE);
	ck_assert_ptr_nonnull(strstr(err.msg, "already exists"));
	ck_assert_int_eq(zm_zoo_commit(zoo, &err), ZM_OK);
	ck_assert_str_eq(zm_kv_get(&zoo->models[0].tags, "role"), "router");
	ck_assert_int_eq(zoo->models[0].params, 9);
	zm_zoo_close(zoo);

	ck_assert_int_eq(zm_zoo_load_model_at(dir, "m", &got, &err), ZM_OK);
	for (i = 0; i < 6; i++)
		ck_assert_float_eq(((float *)got->layers[0].weight.data)[i],
		                   ((float *)ref->layers[0].weight.data)[i]);
	ck_assert_str_eq(zm_doc_meta(&got->extra, "zm.role"), "router");
	/* The seed it was made with, then --hparam's settings. */
	ck_assert_str_eq(got->hparams, "{\"seed\":7,\"lr\":0.5}");
	zm_model_free(got);
	zm_model_free(ref);
	zm_kv_release(&tags);
	zm_kv_release(&hp);
}
END_TEST

START_TEST(test_store_trained)
{
	const char *dir = unit_tmpdir();
	struct zm_zoo_add a = { .name = "m", .arch_path = arch_file(dir) };
	struct zm_zoo_add_notes notes;
	struct zm_zoo_store_item item;
	struct zm_model *trained = unit_model(arch, 99), *got = NULL;
	struct zm_zoo *zoo = NULL;
	struct zm_error err;
	int64_t v = 0;
	size_t moved = 0;

	ck_assert_int_eq(zm_zoo_open(&zoo, dir, ZM_ZOO_WRITE | ZM_ZOO_CREATE,
	                             &err), ZM_OK);
	ck_assert_int_eq(zm_zoo_add_model(zoo, &a, &v, &notes, &err), ZM_OK);
	ck_assert_int_eq(zm_zoo_commit(zoo, &err), ZM_OK);
	zm_zoo_close(zoo);
	ck_assert_int_eq(zm_model_set_string(&trained->metrics,
	                                     "{\"loss\":0.25}", &err), ZM_OK);

	/* Trained from v0, but the zoo is at v1: nothing is stored. */
	item = (struct zm_zoo_store_item){ "m", trained, 0, -1 };
	ck_assert_int_eq(zm_zoo_store_trained(dir, &item, 1, &moved, &err),
	                 ZM_ERR_CONFLICT);
	ck_assert_uint_eq(moved, 0);
	ck_assert_ptr_nonnull(strstr(err.msg, "moved from v0 to v1"));
	ck_assert_int_eq(zm_zoo_load_model_at(dir, "m", &got, &err), ZM_OK);
	ck_assert_float_ne(((float *)got->layers[0].weight.data)[0],
	                   ((float *)trained->layers[0].weight.data)[0]);
	zm_model_free(got);
	got = NULL;

	item = (struct zm_zoo_store_item){ "m", trained, 1, -1 };
	ck_assert_msg(zm_zoo_store_trained(dir, &item, 1, &moved, &err) ==
	              ZM_OK, "%s", err.msg);
	ck_assert_uint_eq(moved, 1);
	ck_assert_int_eq(item.version, 2);
	ck_assert_int_eq(zm_zoo_open(&zoo, dir, ZM_ZOO_READ, &err), ZM_OK);
	ck_assert_int_eq(zoo->models[0].version, 2);
	ck_assert_str_eq(zm_kv_get(&zoo->models[0].metrics, "loss"), "0.25");
	ck_assert_int_eq(zm_zoo_load_model(zoo, "m", &got, NULL, &err), ZM_OK);
	ck_assert_float_eq(((float *)got->layers[0].weight.data)[0],
	                   ((float *)trained->layers[0].weight.data)[0]);
	zm_zoo_close(zoo);
	zm_model_free(got);
	zm_model_free(trained);
}
END_TEST

Suite *suite_zoostore(void)
{
	Suite *s = suite_create("zoostore");
	TCase *tc = tcase_create("zoostore");

	tcase_add_test(tc, test_add_created);
	tcase_add_test(tc, test_store_trained);
	suite_add_tcase(s, tc);
	return s;
}
