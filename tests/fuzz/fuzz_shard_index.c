/*
 * libFuzzer target for Hugging Face shard indexes
 * (model.safetensors.index.json): the input is parsed as an index and
 * every tensor of its weight_map is looked up again, so the file-name
 * checks and the lookup see untrusted bytes.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "merge.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct zm_shard_index ix;
	struct zm_error err;
	size_t i, found = 0;

	zm_shard_index_init(&ix);
	if (zm_shard_index_parse((const char *)data, size, "fuzz.json", &ix,
	                         &err) == ZM_OK) {
		for (i = 0; i < ix.map->count; i++)
			if (zm_shard_index_file(&ix, ix.map->keys[i]->value))
				found++;
		ZM_ASSERT(found == ix.map->count && ix.n_files >= 1 &&
		          ix.n_files <= ix.map->count);
		for (i = 0; i < ix.n_files; i++)
			ZM_ASSERT(strchr(ix.files[i], '/') == NULL);
	}
	zm_shard_index_release(&ix);
	return 0;
}
