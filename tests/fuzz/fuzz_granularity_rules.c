/*
 * libFuzzer target for the granctl rules reader: the input is a rules
 * YAML file; whatever parses is evaluated against metric values with
 * unknowns, so conditions, nesting and formatting are exercised too.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "granctl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct zm_node *root = NULL;
	struct zm_gc_rules r;
	struct zm_gc_values v;
	struct zm_error err;
	struct zm_buf b;
	size_t i;
	int m;

	if (zm_config_parse((const char *)data, size, "fuzz.yaml", &root,
	                    &err) != ZM_OK)
		return 0;
	zm_gc_rules_init(&r);
	if (zm_gc_rules_parse(root, &r, &err) == ZM_OK) {
		zm_gc_values_init(&v);
		for (m = 0; m < ZM_GC_N_METRICS; m += 2)
			v.v[m] = (double)m * 0.25 - 1;
		zm_buf_init(&b);
		for (i = 0; i < r.n_rules; i++) {
			(void)zm_gc_cond_eval(&r.rules[i].when, &v);
			zm_gc_cond_format(&r.rules[i].when, &b);
		}
		if (r.has_share)
			(void)zm_gc_cond_eval(&r.share, &v);
		zm_buf_release(&b);
	}
	zm_gc_rules_release(&r);
	zm_node_free(root);
	return 0;
}
