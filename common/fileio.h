/*
 * Output files that appear whole or not at all.  A named output is written
 * to a temporary file in the same directory, fsynced, renamed over the
 * target and the directory fsynced, so a crash, a full disk or a kill
 * leaves either the old file or the new one.  "-" means standard output,
 * written directly, as is an existing target that is not a regular file
 * (/dev/null, /dev/full, a FIFO): renaming over it would replace it.
 *
 * Every write, fsync, rename and open goes through the fault injector of
 * mem.h, so tests can make each of them fail in turn.
 */
#ifndef ZM_FILEIO_H
#define ZM_FILEIO_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

struct zm_outfile {
	int fd;
	char *path;          /* target name, owned ("-" for stdout) */
	char *tmp;           /* temporary name, owned; NULL for stdout */
	bool is_stdout;
	bool direct;         /* an existing device or FIFO, written in place */
	bool prepared;       /* zm_outfile_prepare succeeded */
	char *buf;           /* write buffer, owned */
	size_t len, cap;
};

/*
 * Opens path for writing ("-": stdout).  With refuse_tty, binary output to
 * a terminal is refused with ZM_ERR_USAGE (as gzip does).  f is filled
 * and must be finished with zm_outfile_commit or zm_outfile_abort.
 */
enum zm_status zm_outfile_open(struct zm_outfile *f, const char *path,
                               bool refuse_tty, struct zm_error *err);

/* Buffers and writes n bytes; errors name the file (ENOSPC, EFBIG, EIO). */
enum zm_status zm_outfile_write(struct zm_outfile *f, const void *data,
                                size_t n, struct zm_error *err);

/* printf into the file (C locale formatting is the caller's job). */
enum zm_status zm_outfile_printf(struct zm_outfile *f, struct zm_error *err,
                                 const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * The first half of a commit: flushes and fsyncs the temporary file, so
 * that everything that can fail for want of space or of a working disk
 * has happened while the target is untouched.  A program that changes two
 * things (train-step --apply: the zoo and its outputs) prepares its
 * outputs, makes the other change, then commits them (only the rename is
 * left).  On failure f still needs zm_outfile_abort.
 */
enum zm_status zm_outfile_prepare(struct zm_outfile *f, struct zm_error *err);

/* Flushes, fsyncs, renames into place and fsyncs the directory; releases
 * f whatever happens.  On failure the temporary file is removed and the
 * target is untouched.  Once the rename succeeded the commit succeeds: a
 * failed directory fsync after it is not reported (see fileio.c). */
enum zm_status zm_outfile_commit(struct zm_outfile *f, struct zm_error *err);

/* Removes the temporary file and releases f; safe after a failed commit
 * and on a zeroed struct. */
void zm_outfile_abort(struct zm_outfile *f);

/* Writes a whole small file atomically (open, write, commit): the file
 * has the new contents or, on any failure, its old ones. */
enum zm_status zm_write_file_atomic(const char *path, const void *data,
                                    size_t len, struct zm_error *err);

/* Writes all of data to fd, retrying short writes and EINTR; counts as one
 * "write" for the fault injector.  Returns false with errno set. */
bool zm_write_all(int fd, const void *data, size_t n);

/* fsyncs the directory that holds path (for renames to be durable). */
enum zm_status zm_fsync_dir_of(const char *path, struct zm_error *err);

/* Reads a whole file ("-": stdin) into a new NUL-terminated buffer the
 * caller frees; refuses files over max bytes. */
enum zm_status zm_read_file(const char *path, size_t max, char **data,
                            size_t *len, struct zm_error *err);

/*
 * Input files: a path ("-": standard input), or bytes in memory, read as
 * they are or, when they begin with the gzip magic, inflated member by
 * member (any number of members, one after the other).  This is the one
 * place zoomerge reads compressed bytes, so every reader -- streams, CSV,
 * IDX -- refuses the same damage: each member must end with its trailer
 * and the trailer's CRC-32 and length must match, or the read fails with
 * ZM_ERR_FORMAT "NAME: truncated (gzip stream ends inside member N)" or
 * "NAME: corrupt gzip data in member N (...)"; bytes after a member that
 * do not start another one are "trailing garbage".  A cut pipe is as
 * truncated as a cut file: the end of input is the end either way.
 */
struct zm_infile;

/* With ZM_INFILE_REWINDABLE, input that is not a regular file (a pipe,
 * a terminal) is first copied to an anonymous temporary file, so that
 * zm_infile_rewind works on anything. */
#define ZM_INFILE_REWINDABLE 1u

/* Opens path ("-": standard input, left open at close).  *f is new, to be
 * closed with zm_infile_close.  ZM_ERR_NOTFOUND for a missing file,
 * ZM_ERR_IO for one that cannot be read or is a directory. */
enum zm_status zm_infile_open(struct zm_infile **f, const char *path,
                              unsigned flags, struct zm_error *err);

/* Reads the len bytes at data, which must outlive *f; name is used in
 * messages. */
enum zm_status zm_infile_open_mem(struct zm_infile **f, const void *data,
                                  size_t len, const char *name,
                                  struct zm_error *err);

/* Closes the file (not standard input) and frees f; NULL is fine. */
void zm_infile_close(struct zm_infile *f);

/* The name used in messages ("<stdin>" for standard input). */
const char *zm_infile_name(const struct zm_infile *f);

/*
 * Reads up to cap bytes (decompressed) into dst.  *got may be short of cap
 * but is 0 only at the clean end of the input: after the last member's
 * verified trailer, or at the end of uncompressed input.  Errors name the
 * file: truncation, corrupt data, trailing garbage, read errors.
 */
enum zm_status zm_infile_read(struct zm_infile *f, void *dst, size_t cap,
                              size_t *got, struct zm_error *err);

/*
 * Verifies the trailer of the current gzip member when the member ends at
 * the position read so far, without reading past it; does nothing when
 * more of the member follows or the input is not gzip.  Readers call it
 * after the last byte they need (the end of a document), so that a file
 * cut in its trailer is refused even by a reader that stops there.
 */
enum zm_status zm_infile_settle(struct zm_infile *f, struct zm_error *err);

/* Starts reading again from the beginning (see ZM_INFILE_REWINDABLE). */
enum zm_status zm_infile_rewind(struct zm_infile *f, struct zm_error *err);

/* Points zlib's allocator of z at zm_malloc and free (opaque Z_NULL), so
 * that its memory counts like the rest (ZM_FAULT=alloc:N reaches it).
 * For every inflater and deflater of the library. */
struct z_stream_s;
void zm_zstream_alloc(struct z_stream_s *z);

#endif
