/*
 * Clock: the one reading of elapsed time, for progress lines, throughput
 * figures and the latency budgets of predict.  Monotonic, so a change of
 * the wall clock never makes an interval negative.
 */
#ifndef ZM_CLOCK_H
#define ZM_CLOCK_H

/* Seconds on CLOCK_MONOTONIC from an unspecified origin; only differences
 * of two readings mean anything. */
double zm_clock_seconds(void);

#endif
