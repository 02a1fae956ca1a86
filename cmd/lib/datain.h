/*
 * The data-input options that predict, slice and tensor import share:
 * --from stream|csv|idx, --images IDX, --labels IDX and --label COLUMN,
 * parsed and checked once so that every program says the same thing.
 * Like zm_cli_int, the functions print "PROGRAM: message" and return
 * false; the caller then prints its usage.
 */
#ifndef ZM_DATAIN_H
#define ZM_DATAIN_H

#include <stdbool.h>

#include "dataset.h"

/* --from's argument into *kind: stream (only when allow_stream), csv or
 * idx. */
bool zm_cli_data_from(const char *arg, bool allow_stream,
                      enum zm_dataset_kind *kind);

/*
 * The combination: --from idx reads --images (and --labels), neither a
 * FILE (has_file) nor --label; --images and --labels need --from idx;
 * --label needs --from csv.  images, labels and label are NULL when not
 * given.
 */
bool zm_cli_data_check(enum zm_dataset_kind from, const char *images,
                       const char *labels, const char *label,
                       bool has_file);

#endif
