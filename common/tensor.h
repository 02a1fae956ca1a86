/*
 * Tensors: a name, a dtype, a shape and contiguous row-major data.
 * Computation is always in F32; the other dtypes exist so that files from
 * PyTorch (F16, BF16, F64) and compact data (U8, I64 labels) can be read
 * and written as they are.
 */
#ifndef ZM_TENSOR_H
#define ZM_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

enum zm_dtype {
	ZM_DTYPE_F32,
	ZM_DTYPE_F16,
	ZM_DTYPE_BF16,
	ZM_DTYPE_F64,
	ZM_DTYPE_U8,
	ZM_DTYPE_I8,
	ZM_DTYPE_I32,
	ZM_DTYPE_I64,
	ZM_DTYPE_COUNT
};

#define ZM_MAX_DIMS 8

struct zm_tensor {
	char *name;              /* owned, NUL-terminated */
	enum zm_dtype dtype;
	int ndim;                /* 0 for a scalar */
	int64_t shape[ZM_MAX_DIMS];
	void *data;              /* nbytes of row-major data */
	size_t nbytes;
	bool owns_data;          /* false: data is borrowed, not freed */
};

/* Bytes per element of dtype. */
size_t zm_dtype_size(enum zm_dtype dtype);
/* The safetensors name ("F32"); never NULL for a valid dtype. */
const char *zm_dtype_name(enum zm_dtype dtype);
/* Parses a safetensors dtype name; returns false when unknown. */
bool zm_dtype_parse(const char *name, enum zm_dtype *out);
/* True for F32, F16, BF16 and F64. */
bool zm_dtype_is_float(enum zm_dtype dtype);

/* Sets t to an empty tensor that owns nothing. */
void zm_tensor_init(struct zm_tensor *t);
/* Frees what t owns and re-initialises it. */
void zm_tensor_release(struct zm_tensor *t);

/* Number of elements of a shape, or false when it overflows or a dimension
 * is negative. */
bool zm_shape_numel(int ndim, const int64_t *shape, size_t *out);
/* Number of elements of t (valid tensors only). */
size_t zm_tensor_numel(const struct zm_tensor *t);

/*
 * Allocates a zero-filled tensor owning its data; name is copied.
 * Fails with ZM_ERR_NOMEM on overflow or allocation failure, leaving t
 * initialised and empty.
 */
enum zm_status zm_tensor_alloc(struct zm_tensor *t, const char *name,
                               enum zm_dtype dtype, int ndim,
                               const int64_t *shape, struct zm_error *err);

/* Makes dst an owning deep copy of src (dst must be initialised or empty). */
enum zm_status zm_tensor_copy(struct zm_tensor *dst,
                              const struct zm_tensor *src,
                              struct zm_error *err);

/* Replaces t's name with a copy of name. */
enum zm_status zm_tensor_rename(struct zm_tensor *t, const char *name,
                                struct zm_error *err);

/*
 * Converts count elements of src, starting at element first, to F32 in out.
 * Integers convert exactly where F32 can hold them; F64 rounds.
 */
void zm_tensor_read_f32(const struct zm_tensor *src, size_t first,
                        size_t count, float *out);

/*
 * Makes dst an owning F32 tensor with src's name and shape, converting the
 * data; scale multiplies every value (1 for none, 1/255 for U8 images).
 */
enum zm_status zm_tensor_to_f32(struct zm_tensor *dst,
                                const struct zm_tensor *src, float scale,
                                struct zm_error *err);

/* The index of the first element of x[0..n) that is not finite (NaN or
 * infinite), or n when all are: the one scan behind every refusal of
 * non-finite input, SSE2 where available. */
size_t zm_first_nonfinite(const float *x, size_t n);

/* Returns ZM_OK when every value of a float tensor is finite, else
 * ZM_ERR_DATA naming the tensor and the first bad element.  Integer
 * tensors are always finite. */
enum zm_status zm_tensor_check_finite(const struct zm_tensor *t,
                                      struct zm_error *err);

/* Half-precision conversions (round to nearest even). */
float zm_f16_to_f32(uint16_t h);
uint16_t zm_f32_to_f16(float f);
float zm_bf16_to_f32(uint16_t h);
uint16_t zm_f32_to_bf16(float f);

/* Formats a shape as "[2, 3]" into buf (always NUL-terminated). */
void zm_shape_format(int ndim, const int64_t *shape, char *buf, size_t size);

#endif
