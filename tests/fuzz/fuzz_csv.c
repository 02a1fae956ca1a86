/*
 * libFuzzer target for the CSV reader: the input is a CSV file; its first
 * byte, when it is a digit, chooses the label column, so label typing and
 * class maps are exercised too.  Every batch is read to the end.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct zm_dataset_options o;
	struct zm_dataset_reader *r = NULL;
	struct zm_error err;
	struct zm_doc doc;
	char label[2] = { 0, 0 };
	bool eof = false;

	zm_dataset_options_init(&o);
	o.kind = ZM_DATASET_CSV;
	o.path = "fuzz.csv";
	if (size > 0 && data[0] >= '0' && data[0] <= '9') {
		label[0] = (char)data[0];
		o.label = label;
		data++;
		size--;
	}
	/* An empty buffer still needs a non-NULL pointer to count as memory. */
	o.data = size ? (const void *)data : (const void *)"";
	o.len = size;
	o.batch = 3;
	if (zm_dataset_open(&r, &o, &err) != ZM_OK)
		return 0;
	zm_doc_init(&doc);
	while (zm_dataset_next(r, &doc, &eof, &err) == ZM_OK && !eof) {
		size_t n;

		if (zm_data_check(&doc, "fuzz.csv", &n, &err) != ZM_OK)
			__builtin_trap();      /* the reader broke its own layout */
	}
	zm_doc_release(&doc);
	zm_dataset_close(r);
	return 0;
}
