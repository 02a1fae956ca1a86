/*
 * libFuzzer target for the predict --state reader: the bytes are a state
 * file, parsed and then matched against two fixed model names, as
 * predict does before it trusts the scores.  A parse that succeeds must
 * hold finite scores in [-1e6, 0] and at least one model.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "weighting.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const names[] = { "m0", "m1" };
	struct zm_hedge h;
	struct zm_error err;
	size_t i;

	zm_hedge_init(&h);
	if (zm_hedge_parse((const char *)data, size, "state", &h, &err) ==
	    ZM_OK) {
		if (h.k == 0)
			abort();
		for (i = 0; i < h.k; i++)
			if (!isfinite(h.score[i]) || h.score[i] > 0 ||
			    h.score[i] < -1e6)
				abort();
		(void)zm_hedge_match(&h, names, 2, "state", &err);
	}
	zm_hedge_release(&h);
	return 0;
}
