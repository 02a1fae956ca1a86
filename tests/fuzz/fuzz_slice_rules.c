/*
 * libFuzzer target for slicing rules: the input is a rules file.  Rules
 * that parse are bound against a small document with column names and
 * classes, and matched against a few rows, so binding and every criterion
 * run on whatever the parser accepted.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "slice.h"
#include "stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const float x[3 * 4] = { 0, 1, 2, 3, -1, 0.5f, 9, 4, 0, 0, 0, 0 };
	static const int64_t y[3] = { 0, 1, 2 };
	static const int32_t cl[3] = { 0, 1, 0 };
	struct zm_slice_rules r;
	struct zm_error err;
	struct zm_doc doc;
	struct zm_tensor t;
	int64_t shape[1] = { 3 };
	uint8_t *hits;

	zm_slice_rules_init(&r);
	if (zm_slice_rules_parse_text((const char *)data, size, "fuzz.yaml", &r,
	                              &err) != ZM_OK)
		return 0;
	zm_doc_init(&doc);
	zm_tensor_init(&t);
	if (zm_tensor_alloc(&t, "y", ZM_DTYPE_I64, 1, shape, &err) == ZM_OK &&
	    zm_doc_add(&doc, &t, &err) == ZM_OK &&
	    zm_doc_set_meta(&doc, "zm.columns", "[\"a\",\"b\",\"c\",\"d\"]",
	                    &err) == ZM_OK &&
	    zm_doc_set_meta(&doc, "zm.label", "kind", &err) == ZM_OK &&
	    zm_doc_set_meta(&doc, "zm.classes", "[\"p\",\"q\",\"r\"]",
	                    &err) == ZM_OK &&
	    zm_slice_rules_bind(&r, &doc, 4, "fuzz.yaml", &err) == ZM_OK &&
	    (hits = malloc(3 * r.n_rules + 1)) != NULL) {
		zm_slice_match(&r, x, y, NULL, r.k ? cl : NULL, 3, 4, hits);
		free(hits);
	}
	zm_tensor_release(&t);
	zm_doc_release(&doc);
	zm_slice_rules_release(&r);
	return 0;
}
