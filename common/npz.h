/*
 * NumPy archives: the .npz files numpy.savez and numpy.savez_compressed
 * write (a ZIP archive, members stored or deflated, ZIP64 records as
 * numpy's zipfile writes them), each member NAME.npy one array in the .npy
 * format (versions 1 to 3: magic, header length, a Python dict literal with
 * descr, fortran_order and shape, then the raw data).  This is the format
 * any Python user can write with numpy alone, so a PyTorch state dict can
 * come in as np.savez("m.npz", **{k: v.numpy() for k, v in sd.items()}).
 *
 * Accepted dtypes: little-endian '<f4' '<f8' '<f2' '<i4' '<i8' and '|u1'
 * '|i1' (F32 F64 F16 I32 I64 U8 I8), in C order.  Fortran order, object
 * arrays (pickles), structured and big-endian dtypes are refused with a
 * message saying what to do in numpy instead.
 */
#ifndef ZM_NPZ_H
#define ZM_NPZ_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"
#include "stream.h"

/* Archives larger than this are refused before they are read. */
#define ZM_NPZ_MAX_BYTES ((size_t)1 << 34)

/* True when the bytes begin as a ZIP archive (a local file header, or the
 * end record of an empty archive). */
bool zm_npz_is_zip(const void *data, size_t len);

/*
 * Parses an archive held in memory into doc (released first, then owned by
 * the caller): one tensor per member NAME.npy, named NAME, in the order of
 * the archive's central directory, no metadata.  source names the archive
 * in messages ("m.npz: member 'fc1.weight.npy': ...").  Errors: ZM_ERR_FORMAT
 * for bytes that are not a valid archive or array (bad CRC, truncation,
 * unknown compression, duplicate names), ZM_ERR_DATA for valid arrays of a
 * kind zoomerge does not take, ZM_ERR_NOMEM.  doc is empty on failure.
 */
enum zm_status zm_npz_parse(const void *data, size_t len, const char *source,
                            struct zm_doc *doc, struct zm_error *err);

/* Reads path ("-": standard input) and parses it as zm_npz_parse does. */
enum zm_status zm_npz_load(const char *path, struct zm_doc *doc,
                           struct zm_error *err);

#endif
