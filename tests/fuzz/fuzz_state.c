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

#include "granauto.h"
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
	/* predict --granularity auto's cost lines in the same file: the
	 * estimates it accepts are finite and >= 0 (or not set). */
	{
		struct zm_granauto g;
		char *keep = NULL;
		zm_granauto_init(&g);
		if (zm_granauto_state_parse(&g, (const char *)data, size,
		                            "state", &keep, &err) == ZM_OK)
			for (i = 0; i < ZM_GRANAUTO_LEVELS; i++)
				if (!isnan(g.ms_per_row[i]) &&
				    (!isfinite(g.ms_per_row[i]) ||
				     g.ms_per_row[i] < 0))
					abort();
		free(keep);
	}
	return 0;
}
