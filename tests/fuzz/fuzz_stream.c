/*
 * libFuzzer target for the stream reader.  Every input is read twice:
 * whole documents with zm_reader_next, then headers with partial data
 * reads (the rest skipped).  Each document read whole is serialised and
 * read back, which must give the same tensors.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "stream.h"

/* Keeps hostile sizes cheap: the limit is checked before allocating. */
#define FUZZ_LIMIT ((uint64_t)1 << 20)

static void check_roundtrip(const struct zm_doc *doc)
{
	struct zm_reader *r;
	struct zm_doc back;
	struct zm_error err;
	void *bytes;
	size_t len, i;
	bool eof;

	if (zm_doc_serialize(doc, &bytes, &len, &err) != ZM_OK)
		return;
	if (zm_reader_open_mem(&r, bytes, len, "roundtrip", &err) != ZM_OK) {
		free(bytes);
		return;
	}
	zm_doc_init(&back);
	if (zm_reader_next(r, &back, &eof, &err) != ZM_OK || eof ||
	    back.n_tensors != doc->n_tensors || back.n_meta != doc->n_meta)
		abort();
	for (i = 0; i < doc->n_meta; i++) {
		const char *v = zm_doc_meta(&back, doc->meta[i].key);
		if (!v || strcmp(v, doc->meta[i].value) != 0)
			abort();
	}
	for (i = 0; i < doc->n_tensors; i++) {
		const struct zm_tensor *a = &doc->tensors[i], *b = &back.tensors[i];
		if (strcmp(a->name, b->name) != 0 ||
		    a->dtype != b->dtype || a->ndim != b->ndim ||
		    a->nbytes != b->nbytes ||
		    memcmp(a->data, b->data, a->nbytes) != 0)
			abort();
	}
	zm_doc_release(&back);
	zm_reader_close(r);
	free(bytes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct zm_reader *r;
	struct zm_doc doc;
	struct zm_error err;
	bool eof = false;
	unsigned char *scratch = NULL;
	int pass;

	for (pass = 0; pass < 2; pass++) {
		if (zm_reader_open_mem(&r, data, size, "fuzz", &err) != ZM_OK)
			return 0;
		zm_reader_set_limit(r, FUZZ_LIMIT);
		zm_doc_init(&doc);
		for (;;) {
			size_t i;
			if (pass == 0) {
				if (zm_reader_next(r, &doc, &eof, &err) != ZM_OK || eof)
					break;
				check_roundtrip(&doc);
				continue;
			}
			if (zm_reader_next_header(r, &doc, &eof, &err) != ZM_OK ||
			    eof)
				break;
			/* Read every other document's first half only. */
			for (i = 0; i < doc.n_tensors; i++) {
				if ((zm_reader_doc_number(r) & 1) &&
				    i >= doc.n_tensors / 2)
					break;
				free(scratch);
				scratch = malloc(doc.tensors[i].nbytes + 1);
				if (!scratch ||
				    zm_reader_read_data(r, i, scratch, &err) != ZM_OK)
					break;
			}
		}
		zm_doc_release(&doc);
		zm_reader_close(r);
	}
	free(scratch);
	return 0;
}
