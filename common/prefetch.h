/*
 * A reader thread that runs ahead of its consumer.  A program that reads
 * its input in pieces (batch documents, tensors) and computes on each
 * spends inflate + compute when both run on one thread; with the reading
 * on a thread of its own, piece n + 1 is read while piece n is computed
 * and the run takes max(inflate, compute).
 *
 * The caller owns `slots` places to read into (an array of documents, of
 * buffers) and a function that reads the next piece into place i.  The
 * thread calls it for pieces 0, 1, 2, ... into places 0, 1, ..., slots-1,
 * 0, ..., never into a place the consumer has not handed back.  The
 * consumer takes the pieces in order; the end of the input, or the
 * function's error, comes to it at the position where it happened, after
 * every piece read before it, with the function's own status and message:
 * a program reports a truncated stream exactly as it would without the
 * thread.  After an error or the end the thread reads nothing more.
 *
 * The function runs on the thread and must not touch what the consumer
 * uses meanwhile (other places, shared counters).
 */
#ifndef ZM_PREFETCH_H
#define ZM_PREFETCH_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

/*
 * Reads the next piece into place `slot`.  *eof true (and ZM_OK) at the
 * end of the input, when nothing was read.
 */
typedef enum zm_status (*zm_prefetch_fn)(void *ctx, size_t slot, bool *eof,
                                         struct zm_error *err);

struct zm_prefetch;

/*
 * Starts the thread over slots >= 1 places.  *out is freed with
 * zm_prefetch_free.  Errors: ZM_ERR_NOMEM, also when no thread can be
 * started (the caller may then read without one).
 */
enum zm_status zm_prefetch_start(struct zm_prefetch **out, size_t slots,
                                 zm_prefetch_fn fn, void *ctx,
                                 struct zm_error *err);

/*
 * Waits for the next piece and returns its place in *slot; the consumer
 * owns that place until zm_prefetch_done.  At the end of the input *eof
 * is true; an error of the function is returned with its message (and
 * again on later calls).  Call zm_prefetch_done before taking the next
 * piece.
 */
enum zm_status zm_prefetch_take(struct zm_prefetch *p, size_t *slot,
                                bool *eof, struct zm_error *err);

/* Hands the place of the last piece taken back to the thread. */
void zm_prefetch_done(struct zm_prefetch *p);

/*
 * Stops the thread (it finishes the piece it is reading, then reads no
 * more) and frees p; the places stay the caller's.  NULL is fine.
 */
void zm_prefetch_free(struct zm_prefetch *p);

#endif
