/*
 * Shared between the parts of the plain-checkpoint merges (mergeplain.c:
 * inputs, output and the one-pass methods; mergepass.c: the methods that
 * read a tensor more than once); not for callers outside the library.
 */
#ifndef ZM_MERGEPLAINPRIV_H
#define ZM_MERGEPLAINPRIV_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"
#include "merge.h"
#include "stream.h"

/* One file of an input: its reader and header, and the reader's next
 * tensor. */
struct shard {
	char *path;              /* owned */
	struct zm_reader *r;
	struct zm_doc hdr;       /* tensors without data, in data order */
	size_t next;             /* index in hdr */
	/* Readers of the earlier passes over a tensor that is read more
	 * than once (TIES' threshold), opened on first use: each moves
	 * forward only, reading past the tensors it is not asked for. */
	struct zm_reader *lane[2];
	size_t lnext[2];
};

/* One input (a file, or the shards of an index), and tensors read ahead
 * of their turn when its data order differs from the reference's. */
struct pin {
	const char *path, *label;
	struct shard *sh;        /* owned, n_sh */
	size_t n_sh;
	struct zm_doc hdr;       /* every shard's tensors, no data */
	struct zm_doc ahead;     /* owned copies read ahead (other order) */
};

/* Writes merged chunk res[0..m) (elements off.. of tensor h) in h's
 * dtype, refusing non-finite values and F16 overflow. */
struct emit_ctx {
	const struct zm_tensor *h;
	const float *res;
	void *obuf;
	struct zm_writer *w;
};

/* One merge of plain checkpoints: its inputs and its buffers. */
struct plain_run {
	const struct zm_merge_static_opts *o;
	struct pin *ins;                    /* models, then the base */
	size_t n_in, ref, chunk;
	bool base, chunked;
	double *wts, *dens, *gam;           /* per model, per tensor */
	float *x, *bx, *res;                /* chunk-sized */
	void *raw, *obuf;                   /* chunk-sized, 8 bytes each */
	size_t raw_cap;                     /* bytes of raw */
	struct zm_merge_acc acc;
	struct emit_ctx ec;
};

/* mergeplain.c: the readers and the writer. */

/*
 * pin_read for an earlier pass over tensor name (lane 0 or 1): the same
 * elements from a second reader of the same file (the page cache serves
 * it), or from in->ahead without consuming them; raw is scratch of
 * raw_cap >= m * 8 bytes.  The main reader must not have passed the
 * tensor yet (pin_seek positioned it).
 */
enum zm_status zm_plain_peek(struct pin *in, int lane, const char *name,
                             bool cached, size_t off, size_t m, float *dst,
                             void *raw, size_t raw_cap,
                             struct zm_error *err);
/* pin_read, refusing a non-finite element with its input and index. */
enum zm_status zm_plain_read_finite(struct pin *in, const char *name,
                                    bool cached, size_t off, size_t m,
                                    float *dst, void *raw,
                                    struct zm_error *err);
/* Writes merged chunk res[0..m) of ctx (a struct emit_ctx), elements
 * off.. of its tensor (see struct emit_ctx). */
enum zm_status zm_plain_emit_chunk(void *ctx, size_t off, size_t m,
                                   struct zm_error *err);

/* mergepass.c: the methods of more than one pass. */

/* TIES over a tensor larger than a chunk (or breadcrumbs), positioned
 * inputs cch cached as pin_seek said: ties_stream. */
enum zm_status zm_plain_ties_stream(struct plain_run *r,
                                    const struct zm_tensor *h,
                                    size_t n, bool *cch,
                                    struct zm_error *err);
/* SLERP, model_stock and nuslerp over tensor h (n elements), in two
 * passes over the chunks. */
enum zm_status zm_plain_angles(struct plain_run *r,
                               const struct zm_tensor *h, size_t n,
                               const bool *cch, struct zm_error *err);

#endif
