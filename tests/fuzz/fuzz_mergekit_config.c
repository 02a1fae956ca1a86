/*
 * libFuzzer target for mergekit configs: the input is parsed as one, and
 * when it parses, its plan is made and every parameter evaluated for a
 * few Hugging Face tensor names, so gradients and filter lists from
 * untrusted bytes are covered.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mergekit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const names[] = {
		"model.embed_tokens.weight",
		"model.layers.0.self_attn.q_proj.weight",
		"model.layers.3.mlp.up_proj.weight",
		"model.layers.99999999999.mlp.weight",
		"transformer.h.2.attn.c_attn.weight",
		"lm_head.weight",
	};
	static const char *const keys[] = { "weight", "density", "t",
	                                    "gamma" };
	struct zm_mergekit mk;
	struct zm_mergekit_plan plan;
	struct zm_error err;
	struct zm_doc ref;
	double w[64], d[64], g[64], v;
	size_t i, k, m;

	zm_mergekit_init(&mk);
	memset(&plan, 0, sizeof(plan));
	zm_doc_init(&ref);
	if (zm_mergekit_parse((const char *)data, size, "fuzz.yaml", &mk,
	                      &err) != ZM_OK)
		goto out;
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		for (k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
			for (m = 0; m <= mk.n_models; m++)
				zm_mergekit_value(&mk, m, keys[k], names[i], 4,
				                  1.0, &v, &err);
	if (zm_mergekit_plan_init(&plan, &mk, &err) != ZM_OK ||
	    plan.n > 64)
		goto out;
	plan.n_layers = 4;
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		zm_mergekit_tensor_params(&plan, &ref, names[i], w, d, g, &err);
out:
	zm_mergekit_plan_release(&plan);
	zm_mergekit_release(&mk);
	zm_doc_release(&ref);
	return 0;
}
