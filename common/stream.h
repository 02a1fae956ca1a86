/*
 * zoomerge streams: gzip-compressed (any number of members) or raw bytes
 * holding one or more concatenated safetensors documents
 *   u64 little-endian N | N bytes of JSON header | tensor data
 * (see zoomerge(5) and DESIGN.md section 2).
 *
 * The reader holds one document at a time, so memory is bounded by the
 * largest document, not by the stream.  The writer compresses per payload:
 * Huffman-only for float tensor data, a normal level for headers and
 * integer data, or one fixed level (0-9) when asked.
 */
#ifndef ZM_STREAM_H
#define ZM_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "tensor.h"

#define ZM_MAX_HEADER_BYTES ((uint64_t)100 << 20)

struct zm_meta_entry {
	char *key;           /* owned */
	char *value;         /* owned */
};

/* One safetensors document: tensors in data order, plus __metadata__. */
struct zm_doc {
	struct zm_tensor *tensors;   /* owned array of owned tensors */
	size_t n_tensors;
	struct zm_meta_entry *meta;  /* owned */
	size_t n_meta;
};

void zm_doc_init(struct zm_doc *doc);
/* Frees everything doc owns and re-initialises it. */
void zm_doc_release(struct zm_doc *doc);

/* The tensor called name, or NULL. */
struct zm_tensor *zm_doc_find(const struct zm_doc *doc, const char *name);

/* Appends *t, taking ownership of its name and data (t is re-initialised).
 * Refuses a duplicate name with ZM_ERR_USAGE. */
enum zm_status zm_doc_add(struct zm_doc *doc, struct zm_tensor *t,
                          struct zm_error *err);

/* Removes and frees the tensor called name; false when absent. */
bool zm_doc_remove(struct zm_doc *doc, const char *name);

/* The metadata value of key, or NULL. */
const char *zm_doc_meta(const struct zm_doc *doc, const char *key);
/* Sets (adds or replaces) a metadata entry; both strings are copied. */
enum zm_status zm_doc_set_meta(struct zm_doc *doc, const char *key,
                               const char *value, struct zm_error *err);

/* ---- reading ---- */

struct zm_reader;

/* Opens path ("-": standard input) for reading.  *r is a new reader to be
 * closed with zm_reader_close.  Missing files give ZM_ERR_NOTFOUND. */
enum zm_status zm_reader_open(struct zm_reader **r, const char *path,
                              struct zm_error *err);
/* Reads from an in-memory buffer that must outlive the reader; name is
 * used in messages. */
enum zm_status zm_reader_open_mem(struct zm_reader **r, const void *data,
                                  size_t len, const char *name,
                                  struct zm_error *err);
void zm_reader_close(struct zm_reader *r);

/* Refuses documents whose data section exceeds max bytes (default: 16 GiB
 * or ZM_MAX_MEMORY, in bytes with an optional K, M, G or T suffix) with
 * ZM_ERR_FORMAT, checked before allocating. */
void zm_reader_set_limit(struct zm_reader *r, uint64_t max_doc_bytes);

/*
 * Reads the next whole document into doc (released first).  At a clean end
 * of stream returns ZM_OK with *eof true.  Errors (ZM_ERR_FORMAT, ZM_ERR_IO,
 * ZM_ERR_NOMEM) name the file and the 1-based document number: bad header
 * length, invalid JSON, unknown dtype, offsets out of range, overlapping or
 * not covering the data, shape/size mismatch, truncation, corrupt gzip,
 * trailing garbage.
 */
enum zm_status zm_reader_next(struct zm_reader *r, struct zm_doc *doc,
                              bool *eof, struct zm_error *err);

/*
 * Streaming variant for large documents: reads only the header of the next
 * document into doc (tensors with name, dtype and shape, data NULL, in data
 * order).  Then call zm_reader_read_data for each tensor in that order; a
 * later zm_reader_next_header skips whatever was not read.
 */
enum zm_status zm_reader_next_header(struct zm_reader *r, struct zm_doc *doc,
                                     bool *eof, struct zm_error *err);
/* Reads the data of doc->tensors[index] of the current header into dst
 * (t->nbytes bytes); index must be the next one in order. */
/* Reads the next n bytes of doc->tensors[index] into dst, so that a large
 * tensor can be streamed in chunks; index must be the next one in order
 * and n at most what is left of it.  The tensor counts as read once all
 * its bytes are (a zero-size tensor: after one call with n = 0). */
enum zm_status zm_reader_read_part(struct zm_reader *r, size_t index,
                                   void *dst, size_t n, struct zm_error *err);

enum zm_status zm_reader_read_data(struct zm_reader *r, size_t index,
                                   void *dst, struct zm_error *err);

/* The reader's input name and the 1-based number of the current document. */
const char *zm_reader_name(const struct zm_reader *r);
size_t zm_reader_doc_number(const struct zm_reader *r);

/* ---- writing ---- */

/* Compression choice: ZM_COMPRESS_AUTO picks per payload (see above);
 * ZM_COMPRESS_NONE writes plain safetensors bytes, no gzip wrapper. */
#define ZM_COMPRESS_AUTO (-1)
#define ZM_COMPRESS_NONE (-2)

/* The level from the environment variable ZM_COMPRESS (0-9), or
 * ZM_COMPRESS_AUTO when unset.  Returns false for a bad value. */
bool zm_compress_from_env(int *level);
/* The level to write path with when no level was asked for on the command
 * line: ZM_COMPRESS_NONE when the name says plain safetensors (it ends in
 * ".safetensors"), else level (from zm_compress_from_env). */
int zm_compress_for_path(const char *path, int level);

struct zm_writer;

/*
 * Opens a writer to path ("-": standard output, refused on a terminal with
 * ZM_ERR_USAGE).  Named files are written under a temporary name and only
 * appear at zm_writer_commit.  level is 0-9, ZM_COMPRESS_AUTO or
 * ZM_COMPRESS_NONE.
 */
enum zm_status zm_writer_open(struct zm_writer **w, const char *path,
                              int level, struct zm_error *err);

/* Appends one whole document (each document is its own gzip member). */
enum zm_status zm_writer_write_doc(struct zm_writer *w,
                                   const struct zm_doc *doc,
                                   struct zm_error *err);

/*
 * Streaming variant: writes the header for doc's tensors (their dtype and
 * shape; data is ignored), then zm_writer_write_data must supply every
 * tensor's bytes in order; the document ends after the last byte.
 */
enum zm_status zm_writer_begin_doc(struct zm_writer *w,
                                   const struct zm_doc *doc,
                                   struct zm_error *err);
enum zm_status zm_writer_write_data(struct zm_writer *w, const void *data,
                                    size_t n, struct zm_error *err);

/* Writes out and fsyncs everything written so far (zm_outfile_prepare):
 * after it, zm_writer_commit only renames.  On failure w still needs
 * zm_writer_abort. */
enum zm_status zm_writer_prepare(struct zm_writer *w, struct zm_error *err);
/* Finishes the stream and makes it visible (rename for named files);
 * frees w whatever happens. */
enum zm_status zm_writer_commit(struct zm_writer *w, struct zm_error *err);
/* Discards a stream (the target is left as it was) and frees w; NULL ok. */
void zm_writer_abort(struct zm_writer *w);

/* Serialises a document to raw (uncompressed) safetensors bytes in a new
 * buffer the caller frees; used by tests and by tools that embed models. */
enum zm_status zm_doc_serialize(const struct zm_doc *doc, void **bytes,
                                size_t *len, struct zm_error *err);

#endif
