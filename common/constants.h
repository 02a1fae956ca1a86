/*
 * Constants shared by the library and the programs, in one place so that a
 * program's option range and the library's check agree.  (Not limits.h:
 * -Icommon would hide the system header of that name.)
 */
#ifndef ZM_CONSTANTS_H
#define ZM_CONSTANTS_H

#include <stddef.h>

/* Rows per batch read from a data source (tensor import --batch, the
 * dataset readers). */
#define ZM_DATA_BATCH_MAX ((size_t)1 << 30)

/* Rows per forward pass (predict and train-step --batch-size). */
#define ZM_MODEL_BATCH_MAX ((size_t)1 << 20)

/* A message prefix naming a place in an input: a path (PATH_MAX is 4096
 * on Linux) and "document N" or "line N". */
#define ZM_WHERE_MAX 4200

#endif
