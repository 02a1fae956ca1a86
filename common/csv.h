/*
 * CSV export (tensor export --to csv): writes a data stream as CSV, the
 * format dataset.h imports, so that import and export round-trip.
 */
#ifndef ZM_CSV_H
#define ZM_CSV_H

#include "error.h"

/*
 * Writes the rows of the data stream input ("-": stdin) as CSV to output
 * ("-": stdout; a regular file is replaced atomically): a header of id,
 * the string columns, the features (zm.columns or x_I) and the label
 * (zm.label or y, or y_I for several), then one line per row, features
 * times zm.scale with round-trip precision, integer labels by class name
 * when zm.classes names them.  Every document must have the first one's
 * columns; errors name the input and document.  On failure a regular
 * output file is left as it was.
 */
enum zm_status zm_csv_export(const char *input, const char *output,
                             struct zm_error *err);

#endif
