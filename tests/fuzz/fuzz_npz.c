/*
 * libFuzzer target for the .npz reader and the state-dict matcher: the
 * bytes are an archive; what parses is matched to a fixed two-layer
 * architecture as zoo-add --arch does.  A parse that succeeds must give
 * tensors whose data size is their shape's.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "npz.h"
#include "statedict.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char arch_json[] =
	"{\"input\": [4], \"layers\": [{\"name\": \"fc1\", \"units\": 8, "
	"\"activation\": \"relu\"}, {\"name\": \"out\", \"units\": 3}]}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct zm_arch *arch;
	struct zm_model *m = NULL;
	struct zm_error err;
	struct zm_doc doc;
	size_t i;

	if (!arch && zm_arch_parse_json(arch_json, strlen(arch_json), "arch",
	                                &arch, &err) != ZM_OK)
		abort();
	zm_doc_init(&doc);
	if (zm_npz_parse(data, size, "fuzz.npz", &doc, &err) == ZM_OK) {
		for (i = 0; i < doc.n_tensors; i++) {
			const struct zm_tensor *t = &doc.tensors[i];
			if (t->nbytes != zm_tensor_numel(t) *
			                 zm_dtype_size(t->dtype))
				abort();
		}
		if (zm_state_dict_import(&doc, "fuzz.npz", arch, &m, &err) ==
		    ZM_OK && !m)
			abort();
		zm_model_free(m);
	}
	zm_doc_release(&doc);
	return 0;
}
