/* The monotonic clock (clock.h). */
#include <time.h>

#include "clock.h"

double zm_clock_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
