/*
 * libFuzzer target for the architecture parsers: the input is read both as
 * an arch YAML file (zm_config_parse then zm_arch_parse) and as the JSON a
 * model keeps in zm.arch (zm_arch_parse_json).  Every arch that parses is
 * written back as JSON, which must read back to an equal arch, and its
 * sizes must respect the limits the parser promises.
 */
#include <stdint.h>
#include <stdlib.h>

#include "config.h"
#include "model.h"

static void check_arch(const struct zm_arch *arch)
{
	struct zm_buf b;
	struct zm_arch *back = NULL;
	struct zm_error err;
	size_t i;

	if (arch->n_layers == 0 || arch->n_layers > ZM_ARCH_MAX_LAYERS ||
	    arch->input_features == 0 ||
	    arch->input_features > ZM_ARCH_MAX_FEATURES ||
	    arch->output_features != arch->layers[arch->n_layers - 1].out_features)
		abort();
	for (i = 0; i < arch->n_layers; i++) {
		const struct zm_layer_spec *l = &arch->layers[i];
		if (l->in_features > arch->max_features ||
		    l->out_features > arch->max_features ||
		    (i > 0 && l->in_features != arch->layers[i - 1].out_features))
			abort();
	}
	zm_buf_init(&b);
	zm_arch_to_json(arch, &b);
	if (b.failed) {
		zm_buf_release(&b);
		return;
	}
	if (zm_arch_parse_json(b.data, b.len, "roundtrip", &back, &err) != ZM_OK) {
		/* Out of memory is the only excuse. */
		if (err.status != ZM_ERR_NOMEM)
			abort();
	} else if (!zm_arch_equal(arch, back)) {
		abort();
	}
	zm_arch_free(back);
	zm_buf_release(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct zm_node *root = NULL;
	struct zm_arch *arch = NULL;
	struct zm_error err;

	if (zm_config_parse((const char *)data, size, "fuzz.yaml", &root,
	                    &err) == ZM_OK &&
	    zm_arch_parse(root, &arch, &err) == ZM_OK) {
		check_arch(arch);
		zm_arch_free(arch);
	}
	zm_node_free(root);
	arch = NULL;
	if (zm_arch_parse_json((const char *)data, size, "fuzz: zm.arch", &arch,
	                       &err) == ZM_OK) {
		check_arch(arch);
		zm_arch_free(arch);
	}
	return 0;
}
