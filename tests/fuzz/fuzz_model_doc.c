/*
 * libFuzzer target for model documents: every document of a stream is
 * turned into a model with zm_model_from_doc (the arch from zm.arch, the
 * parameters checked against it).  A model that loads is written back with
 * zm_model_to_doc and must load again with the same arch and the same
 * parameter bytes.  The schema metadata (zm.classes, zm.features,
 * zm.role) is read too: names that load must write back to the same list.
 * Every document's profile is also read, with its routing density (the
 * stored PPCA, or the one rebuilt from it).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "density.h"
#include "model.h"
#include "profile.h"
#include "schema.h"
#include "stream.h"

/* Keeps hostile sizes cheap: the limit is checked before allocating. */
#define FUZZ_LIMIT ((uint64_t)1 << 20)

static bool same_tensor(const struct zm_tensor *a, const struct zm_tensor *b)
{
	return a->dtype == b->dtype && a->nbytes == b->nbytes &&
	       (a->nbytes == 0 || memcmp(a->data, b->data, a->nbytes) == 0);
}

static void check_roundtrip(const struct zm_model *m)
{
	struct zm_doc doc;
	struct zm_model *back = NULL;
	struct zm_error err;
	size_t i;

	zm_doc_init(&doc);
	if (zm_model_to_doc(m, &doc, &err) != ZM_OK) {
		if (err.status != ZM_ERR_NOMEM)
			abort();
		zm_doc_release(&doc);
		return;
	}
	if (zm_model_from_doc(&doc, NULL, &back, &err) != ZM_OK) {
		if (err.status != ZM_ERR_NOMEM)
			abort();
		zm_doc_release(&doc);
		return;
	}
	if (!zm_arch_equal(m->arch, back->arch))
		abort();
	for (i = 0; i < m->arch->n_layers; i++) {
		if (!same_tensor(&m->layers[i].weight, &back->layers[i].weight) ||
		    !same_tensor(&m->layers[i].bias, &back->layers[i].bias))
			abort();
	}
	zm_model_free(back);
	zm_doc_release(&doc);
}

static void check_schema(const struct zm_doc *doc)
{
	struct zm_schema s, back;
	struct zm_doc out;
	struct zm_error err;
	enum zm_role role;

	zm_schema_init(&s);
	zm_schema_init(&back);
	zm_doc_init(&out);
	(void)zm_role_of_doc(doc, &role);
	if (zm_schema_of_model_doc(&s, doc, "fuzz", &err) == ZM_OK &&
	    zm_schema_to_model_doc(&s, &out, &err) == ZM_OK) {
		if (zm_schema_of_model_doc(&back, &out, "back", &err) != ZM_OK ||
		    s.classes.known != back.classes.known ||
		    (s.classes.known && !zm_names_equal(&s.classes,
		                                        &back.classes)) ||
		    (s.features.known && !zm_names_equal(&s.features,
		                                         &back.features)))
			abort();
	}
	zm_schema_release(&s);
	zm_schema_release(&back);
	zm_doc_release(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct zm_reader *r;
	struct zm_doc doc;
	struct zm_error err;
	bool eof = false;

	if (zm_reader_open_mem(&r, data, size, "fuzz", &err) != ZM_OK)
		return 0;
	zm_reader_set_limit(r, FUZZ_LIMIT);
	zm_doc_init(&doc);
	while (zm_reader_next(r, &doc, &eof, &err) == ZM_OK && !eof) {
		struct zm_model *m = NULL;
		struct zm_profile p;
		struct zm_density dm;

		check_schema(&doc);
		zm_profile_init(&p);
		zm_density_init(&dm);
		if (zm_profile_from_doc(&p, &doc, &err) == ZM_OK)
			(void)zm_profile_density(&p, &dm, &err);
		zm_density_release(&dm);
		(void)zm_profile_density_from_doc(&doc, &dm, &err);
		zm_density_release(&dm);
		zm_profile_release(&p);
		if (zm_model_from_doc(&doc, NULL, &m, &err) == ZM_OK) {
			check_roundtrip(m);
			zm_model_free(m);
		}
	}
	zm_doc_release(&doc);
	zm_reader_close(r);
	return 0;
}
