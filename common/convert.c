/*
 * Whole-file conversions; see convert.h.
 */
#include <stdlib.h>

#include "convert.h"
#include "fileio.h"
#include "model.h"
#include "npz.h"
#include "statedict.h"
#include "stream.h"

/* Commits w when st is ZM_OK, else throws it away (w may be NULL then). */
static enum zm_status finish(struct zm_writer *w, enum zm_status st,
                             struct zm_error *err)
{
	if (st == ZM_OK)
		return zm_writer_commit(w, err);
	zm_writer_abort(w);
	return st;
}

enum zm_status zm_convert_import(const struct zm_dataset_options *d,
                                 const char *output, int compress,
                                 struct zm_error *err)
{
	struct zm_dataset_reader *r = NULL;
	struct zm_writer *w = NULL;
	struct zm_doc doc;
	enum zm_status st;
	bool eof;

	zm_doc_init(&doc);
	st = zm_dataset_open(&r, d, err);
	if (st != ZM_OK)
		goto out;
	st = zm_writer_open(&w, output, compress, err);
	while (st == ZM_OK) {
		st = zm_dataset_next(r, &doc, &eof, err);
		if (st != ZM_OK || eof)
			break;
		st = zm_writer_write_doc(w, &doc, err);
		if (st != ZM_OK)
			break;
	}
	st = finish(w, st, err);
out:
	zm_doc_release(&doc);
	zm_dataset_close(r);
	return st;
}

enum zm_status zm_convert_npz(const char *path, const char *output,
                              int compress, struct zm_error *err)
{
	struct zm_writer *w = NULL;
	struct zm_doc doc;
	enum zm_status st;

	zm_doc_init(&doc);
	st = zm_npz_load(path, &doc, err);
	if (st == ZM_OK)
		st = zm_writer_open(&w, output, compress, err);
	if (st == ZM_OK)
		st = zm_writer_write_doc(w, &doc, err);
	st = finish(w, st, err);
	zm_doc_release(&doc);
	return st;
}

enum zm_status zm_convert_state_dict(const char *path, const char *output,
                                     struct zm_error *err)
{
	struct zm_model *m = NULL;
	struct zm_outfile f;
	struct zm_doc doc;
	void *bytes = NULL;
	size_t len = 0;
	bool open = false;
	enum zm_status st;

	zm_doc_init(&doc);
	st = zm_model_load(path, &m, err);
	if (st == ZM_OK)
		st = zm_state_dict_export(m, &doc, err);
	if (st == ZM_OK)
		st = zm_doc_serialize(&doc, &bytes, &len, err);
	if (st == ZM_OK)
		open = (st = zm_outfile_open(&f, output, true, err)) == ZM_OK;
	if (st == ZM_OK)
		st = zm_outfile_write(&f, bytes, len, err);
	if (open) {
		if (st == ZM_OK)
			st = zm_outfile_commit(&f, err);
		else
			zm_outfile_abort(&f);
	}
	free(bytes);
	zm_doc_release(&doc);
	zm_model_free(m);
	return st;
}
