/*
 * libFuzzer target for assignment files: whatever parses must be valid,
 * and its YAML rendering must parse again to the same text.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "assignment.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct zm_assignment a, b;
	struct zm_error err;
	struct zm_buf t1, t2;

	zm_assignment_init(&a);
	zm_assignment_init(&b);
	zm_buf_init(&t1);
	zm_buf_init(&t2);
	if (zm_assignment_parse((const char *)data, size, "fuzz.yaml", &a,
	                        &err) != ZM_OK)
		goto out;
	if (zm_assignment_validate(&a, &err) != ZM_OK)
		abort();
	zm_assignment_to_yaml(&a, &t1);
	if (t1.failed)
		goto out;
	if (zm_assignment_parse(t1.data, t1.len, "again", &b, &err) != ZM_OK)
		abort();
	zm_assignment_to_yaml(&b, &t2);
	if (!t2.failed && (t1.len != t2.len || memcmp(t1.data, t2.data, t1.len)))
		abort();
out:
	zm_buf_release(&t1);
	zm_buf_release(&t2);
	zm_assignment_release(&a);
	zm_assignment_release(&b);
	return 0;
}
