/*
 * libFuzzer target for merge configs: the input is parsed as a config,
 * and every model's weight is resolved against a small fixed arch at each
 * granularity, so weight lists and maps from untrusted bytes are covered.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "merge.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char arch_yaml[] =
	"input: [3]\n"
	"layers:\n"
	"  - {name: fc1, units: 4, activation: relu, group: features}\n"
	"  - {name: flat, type: flatten}\n"
	"  - {name: out, units: 2, group: head}\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct zm_arch *arch;
	struct zm_merge_config c;
	struct zm_error err;
	double w[3];
	size_t i;
	int level;

	if (!arch) {
		struct zm_node *root;
		if (zm_config_parse(arch_yaml, strlen(arch_yaml), "arch", &root,
		                    &err) || zm_arch_parse(root, &arch, &err))
			return 0;
		zm_node_free(root);
	}
	zm_merge_config_init(&c);
	if (zm_merge_config_parse((const char *)data, size, "fuzz.yaml", &c,
	                          &err) == ZM_OK)
		for (i = 0; i < c.n_models; i++)
			for (level = 0; level < 3; level++)
				zm_merge_layer_weights(c.models[i].weight, 1.0,
				                       arch,
				                       (enum zm_gran_level)level, w,
				                       &err);
	zm_merge_config_release(&c);
	return 0;
}
