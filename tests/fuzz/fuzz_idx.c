/*
 * libFuzzer target for the IDX reader: the first two bytes (big-endian)
 * say how many of the following bytes are the image file; the rest is the
 * label file (absent when empty).  Every batch is read to the end.
 */
#include <stddef.h>
#include <stdint.h>

#include "dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct zm_dataset_options o;
	struct zm_dataset_reader *r = NULL;
	struct zm_error err;
	struct zm_doc doc;
	size_t split;
	bool eof = false;

	if (size < 2)
		return 0;
	split = (size_t)data[0] << 8 | data[1];
	data += 2;
	size -= 2;
	if (split > size)
		split = size;
	zm_dataset_options_init(&o);
	o.kind = ZM_DATASET_IDX;
	o.images = "images.idx";
	o.images_data = split ? (const void *)data : (const void *)"";
	o.images_len = split;
	if (size > split) {
		o.labels = "labels.idx";
		o.labels_data = data + split;
		o.labels_len = size - split;
	}
	o.batch = 2;
	o.image_shape = split & 1;
	if (zm_dataset_open(&r, &o, &err) != ZM_OK)
		return 0;
	zm_doc_init(&doc);
	while (zm_dataset_next(r, &doc, &eof, &err) == ZM_OK && !eof) {
		size_t n;

		if (zm_data_check(&doc, "images.idx", &n, &err) != ZM_OK)
			__builtin_trap();
	}
	zm_doc_release(&doc);
	zm_dataset_close(r);
	return 0;
}
