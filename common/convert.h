/*
 * Whole-file conversions of tensor import and export: data sets into data
 * streams, NumPy archives into one document, models into PyTorch state
 * dicts.  (A data stream into CSV is csv.h's zm_csv_export.)  Each works
 * one document or batch at a time and writes output ("-": standard
 * output) through a temporary file that replaces it only when complete.
 */
#ifndef ZM_CONVERT_H
#define ZM_CONVERT_H

#include "dataset.h"
#include "error.h"

/* The batches of the data set d (zm_dataset_open) as a data stream at
 * output, gzip level compress (ZM_COMPRESS_AUTO: per payload). */
enum zm_status zm_convert_import(const struct zm_dataset_options *d,
                                 const char *output, int compress,
                                 struct zm_error *err);

/* The arrays of the .npz archive at path ("-": standard input) as one
 * document (zm_npz_load) at output. */
enum zm_status zm_convert_npz(const char *path, const char *output,
                              int compress, struct zm_error *err);

/* The parameters of the model at path as a plain (uncompressed)
 * safetensors file at output, which is what safetensors.torch.load_file
 * reads (zm_state_dict_export). */
enum zm_status zm_convert_state_dict(const char *path, const char *output,
                                     struct zm_error *err);

#endif
