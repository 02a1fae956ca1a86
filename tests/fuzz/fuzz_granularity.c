/*
 * libFuzzer target for granularity decision files: parsed and validated
 * against a fixed arch; a decision that parses is written back as YAML and
 * must parse again to the same units.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "granularity.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char arch_yaml[] =
	"input: [3]\n"
	"layers:\n"
	"  - {name: fc1, units: 4, activation: relu, group: features}\n"
	"  - {name: fc2, units: 4, activation: relu, group: features}\n"
	"  - {name: out, units: 2, group: head}\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct zm_arch *arch;
	struct zm_gran_decision d, e;
	struct zm_node *root = NULL, *again = NULL;
	struct zm_error err;
	struct zm_buf b;
	bool mask[3];

	if (!arch) {
		if (zm_config_parse(arch_yaml, strlen(arch_yaml), "arch", &root,
		                    &err) || zm_arch_parse(root, &arch, &err))
			return 0;
		zm_node_free(root);
		root = NULL;
	}
	zm_gran_decision_init(&d);
	zm_gran_decision_init(&e);
	zm_buf_init(&b);
	if (zm_config_parse((const char *)data, size, "fuzz.yaml", &root,
	                    &err) == ZM_OK &&
	    zm_gran_decision_parse(root, arch, &d, &err) == ZM_OK) {
		zm_gran_decision_layer_mask(&d, arch, mask, &err);
		zm_gran_decision_to_yaml(&d, &b);
		if (!b.failed &&
		    zm_config_parse(b.data, b.len, "again", &again, &err) == ZM_OK) {
			if (zm_gran_decision_parse(again, arch, &e, &err) != ZM_OK ||
			    e.n_units != d.n_units || e.level != d.level)
				abort();
		} else if (!b.failed) {
			abort();
		}
	}
	zm_node_free(root);
	zm_node_free(again);
	zm_buf_release(&b);
	zm_gran_decision_release(&d);
	zm_gran_decision_release(&e);
	return 0;
}
