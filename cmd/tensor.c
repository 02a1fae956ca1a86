/*
 * tensor: inspect and convert zoomerge streams.  `info` lists the
 * documents, metadata and tensors of streams; `import` turns CSV files or
 * IDX files (Fashion-MNIST) into a data stream of batch documents; `export`
 * writes the rows of a data stream as CSV, with zm.scale applied.  All three
 * work one document or one batch at a time, so memory does not grow with
 * the number of rows.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"
#include "dataset.h"
#include "fileio.h"
#include "mem.h"
#include "stream.h"

static const char usage_str[] =
	"usage: tensor info [FILE...]\n"
	"       tensor import --from csv [--label COLUMN] [--batch N] [-o OUT] [FILE]\n"
	"       tensor import --from idx --images IDX [--labels IDX] [--batch N]\n"
	"                     [--shape flat|image] [-o OUT]\n"
	"       tensor export --to csv [-o OUT] [FILE]\n"
	"options: --compress 0..9, -h/--help, --version\n";

enum command { CMD_NONE, CMD_INFO, CMD_IMPORT, CMD_EXPORT };

struct tensor_opts {
	enum command cmd;
	const char *from;            /* csv | idx */
	const char *to;              /* csv */
	const char *label;
	const char *images, *labels;
	const char *output;
	int64_t batch;
	bool image_shape;
	int compress;
	char **files;
	int nfiles;
};

static const struct tensor_opts opts_default = {
	.cmd = CMD_NONE,
	.output = "-",
	.batch = ZM_DATASET_BATCH_DEFAULT,
	.compress = ZM_COMPRESS_AUTO,
};

/*
 * An output that names an existing device, FIFO or socket (/dev/stdout,
 * /dev/null, /dev/full, a named pipe) is written in place, like standard
 * output: renaming a temporary file over it would replace the device.
 * Returns the path to hand to the writer, or NULL after a message.
 */
static const char *direct_output(const char *path)
{
	struct stat sb;
	int fd;

	if (strcmp(path, "-") == 0 || stat(path, &sb) != 0 ||
	    S_ISREG(sb.st_mode) || S_ISDIR(sb.st_mode))
		return path;
	fd = open(path, O_WRONLY);
	if (fd < 0) {
		zm_cli_warn("%s: %s", path, strerror(errno));
		return NULL;
	}
	if (fd != STDOUT_FILENO) {
		if (dup2(fd, STDOUT_FILENO) < 0) {
			zm_cli_warn("%s: %s", path, strerror(errno));
			close(fd);
			return NULL;
		}
		close(fd);
	}
	return "-";
}

/* ---- info ---- */

static void print_value(const char *s)
{
	/* Control characters would break the one-line-per-entry layout. */
	for (; *s; s++)
		putchar((unsigned char)*s < 0x20 ? '?' : *s);
}

static enum zm_status info_file(const char *path, struct zm_error *err)
{
	struct zm_reader *r = NULL;
	struct zm_doc doc;
	enum zm_status st;
	size_t docs = 0, tensors = 0, i;
	unsigned long long bytes = 0, rows = 0;
	bool eof;
	char shape[256];

	zm_doc_init(&doc);
	st = zm_reader_open(&r, path, err);
	if (st != ZM_OK)
		goto out;
	for (;;) {
		const char *kind;

		st = zm_reader_next_header(r, &doc, &eof, err);
		if (st != ZM_OK || eof)
			break;
		docs++;
		kind = zm_doc_meta(&doc, "zm.kind");
		printf("%s: document %zu: %s\n", zm_reader_name(r), docs,
		       kind ? kind : "-");
		for (i = 0; i < doc.n_meta; i++) {
			printf("  %s = ", doc.meta[i].key);
			print_value(doc.meta[i].value);
			putchar('\n');
		}
		for (i = 0; i < doc.n_tensors; i++) {
			const struct zm_tensor *t = &doc.tensors[i];

			zm_shape_format(t->ndim, t->shape, shape, sizeof(shape));
			printf("  %s %s %s\n", t->name, zm_dtype_name(t->dtype),
			       shape);
			bytes += t->nbytes;
			if (kind && strcmp(kind, "data") == 0 &&
			    strcmp(t->name, "x") == 0 && t->ndim > 0)
				rows += (unsigned long long)t->shape[0];
		}
		tensors += doc.n_tensors;
	}
	if (st == ZM_OK)
		printf("%s: %zu document%s, %llu rows, %zu tensors, %llu bytes\n",
		       zm_reader_name(r), docs, docs == 1 ? "" : "s", rows,
		       tensors, bytes);
out:
	zm_doc_release(&doc);
	zm_reader_close(r);
	return st;
}

/* ---- import ---- */

static enum zm_status import(const struct tensor_opts *o,
                             struct zm_error *err)
{
	struct zm_dataset_options d;
	struct zm_dataset_reader *r = NULL;
	struct zm_writer *w = NULL;
	struct zm_doc doc;
	enum zm_status st;
	bool eof;

	zm_doc_init(&doc);
	zm_dataset_options_init(&d);
	d.kind = strcmp(o->from, "idx") == 0 ? ZM_DATASET_IDX : ZM_DATASET_CSV;
	d.path = o->nfiles ? o->files[0] : "-";
	d.images = o->images;
	d.labels = o->labels;
	d.label = o->label;
	d.batch = (size_t)o->batch;
	d.image_shape = o->image_shape;
	st = zm_dataset_open(&r, &d, err);
	if (st != ZM_OK)
		goto out;
	st = zm_writer_open(&w, o->output, o->compress, err);
	if (st != ZM_OK)
		goto out;
	for (;;) {
		st = zm_dataset_next(r, &doc, &eof, err);
		if (st != ZM_OK || eof)
			break;
		st = zm_writer_write_doc(w, &doc, err);
		if (st != ZM_OK)
			break;
	}
	if (st == ZM_OK) {
		st = zm_writer_commit(w, err);
		w = NULL;
	}
out:
	zm_writer_abort(w);
	zm_doc_release(&doc);
	zm_dataset_close(r);
	return st;
}

/* ---- export ---- */

/* The header and value formatting of one export, fixed by the first
 * document so that every row has the same columns. */
struct csv_out {
	struct zm_outfile f;
	bool open, started;
	bool has_id, y_int, has_y;
	size_t d, ny;                /* features, label columns */
	char *label_name;
	char **classes;
	size_t nclasses;
	char **columns;              /* zm.columns, or NULL */
	size_t ncolumns;
	char **strings;              /* names of the string columns */
	size_t nstrings;
	/* U8 features have 256 values: format each once. */
	char u8_text[256][24];
	float u8_scale;
	bool u8_ready;
	struct zm_buf line;
};

/* Appends s as a CSV field, quoted when it must be (RFC 4180). */
static void csv_field(struct zm_buf *b, const char *s)
{
	if (strpbrk(s, ",\"\r\n") == NULL && s[0] != ' ' &&
	    (s[0] == '\0' || s[strlen(s) - 1] != ' ')) {
		zm_buf_puts(b, s);
		return;
	}
	zm_buf_puts(b, "\"");
	for (; *s; s++) {
		if (*s == '"')
			zm_buf_puts(b, "\"");
		zm_buf_append(b, s, 1);
	}
	zm_buf_puts(b, "\"");
}

/* A JSON list of strings from metadata into (*out, *n); both empty when
 * the key is absent or its value malformed. */
static void meta_list(const struct zm_doc *doc, const char *key, char ***out,
                      size_t *n)
{
	const char *v = zm_doc_meta(doc, key);

	if (!v || !zm_config_string_list(v, out, n)) {
		*out = NULL;
		*n = 0;
	}
}

static enum zm_status export_header(struct csv_out *c,
                                    const struct zm_doc *doc,
                                    const struct zm_tensor *y,
                                    const struct zm_data_column *sc,
                                    size_t nsc, struct zm_error *err)
{
	const char *label = zm_doc_meta(doc, "zm.label");
	char name[64];
	size_t i;
	bool first = true;

	c->has_id = zm_doc_find(doc, "id") != NULL;
	c->has_y = y != NULL;
	c->y_int = y && y->dtype == ZM_DTYPE_I64;
	c->ny = !y ? 0 : y->ndim == 2 ? (size_t)y->shape[1] : 1;
	meta_list(doc, "zm.columns", &c->columns, &c->ncolumns);
	if (c->columns && c->ncolumns != c->d) {
		zm_config_strings_free(c->columns, c->ncolumns);
		c->columns = NULL;
	}
	c->label_name = zm_strdup(label && c->ny == 1 ? label : "y");
	if (!c->label_name)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	if (c->y_int)
		meta_list(doc, "zm.classes", &c->classes, &c->nclasses);
	if (nsc && !(c->strings = zm_calloc(nsc, sizeof(*c->strings))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (i = 0; i < nsc; i++)
		if (!(c->strings[c->nstrings++] = zm_strdup(sc[i].name)))
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	/* The string columns first, like the id: they name the row's
	 * source rather than measure it. */
	if (c->has_id) {
		zm_buf_puts(&c->line, "id");
		first = false;
	}
	for (i = 0; i < c->nstrings; i++, first = false) {
		if (!first)
			zm_buf_puts(&c->line, ",");
		csv_field(&c->line, c->strings[i]);
	}
	for (i = 0; i < c->d; i++, first = false) {
		if (!first)
			zm_buf_puts(&c->line, ",");
		if (c->columns) {
			csv_field(&c->line, c->columns[i]);
		} else {
			snprintf(name, sizeof(name), "x_%zu", i);
			zm_buf_puts(&c->line, name);
		}
	}
	for (i = 0; i < c->ny; i++) {
		zm_buf_puts(&c->line, ",");
		if (c->ny == 1) {
			csv_field(&c->line, c->label_name);
		} else {
			snprintf(name, sizeof(name), "y_%zu", i);
			zm_buf_puts(&c->line, name);
		}
	}
	zm_buf_puts(&c->line, "\n");
	return ZM_OK;
}

static enum zm_status export_doc(struct csv_out *c, const struct zm_doc *doc,
                                 const char *where, struct zm_error *err)
{
	const struct zm_tensor *x = zm_doc_find(doc, "x");
	const struct zm_tensor *y = zm_doc_find(doc, "y");
	const struct zm_tensor *id = zm_doc_find(doc, "id");
	size_t n = (size_t)x->shape[0], d = n ? zm_tensor_numel(x) / n : 1;
	enum zm_status st;
	char num[40];
	float scale;
	size_t i, k, nsc;
	float *row = NULL, yv;
	struct zm_data_column *sc;
	bool same = true;
	int j;

	if (n == 0) {
		d = 1;
		for (j = 1; j < x->ndim; j++)
			d *= (size_t)x->shape[j];
	}
	if (!zm_data_scale(doc, &scale))
		return zm_error_set(err, ZM_ERR_DATA, "%s: bad zm.scale '%s'",
		                    where, zm_doc_meta(doc, "zm.scale"));
	if ((st = zm_data_columns(doc, n, where, &sc, &nsc, err)))
		return st;
	if (!c->started) {
		c->d = d;
		st = export_header(c, doc, y, sc, nsc, err);
		if (st != ZM_OK) {
			zm_data_columns_free(sc, nsc);
			return st;
		}
		c->started = true;
	}
	same = nsc == c->nstrings;
	for (k = 0; same && k < nsc; k++)
		same = strcmp(sc[k].name, c->strings[k]) == 0;
	if (!same || d != c->d || (y != NULL) != c->has_y ||
	    (id != NULL) != c->has_id ||
	    (y && (y->dtype == ZM_DTYPE_I64) != c->y_int) ||
	    (y && (y->ndim == 2 ? (size_t)y->shape[1] : 1) != c->ny)) {
		zm_data_columns_free(sc, nsc);
		return zm_error_set(err, ZM_ERR_DATA,
		                    "%s: columns differ from the first document",
		                    where);
	}
	if (x->dtype == ZM_DTYPE_U8 && (!c->u8_ready || c->u8_scale != scale)) {
		for (k = 0; k < 256; k++)
			snprintf(c->u8_text[k], sizeof(c->u8_text[k]), "%.9g",
			         (double)((float)k * scale));
		c->u8_scale = scale;
		c->u8_ready = true;
	}
	row = zm_malloc((d ? d : 1) * sizeof(*row));
	if (!row) {
		zm_data_columns_free(sc, nsc);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	for (i = 0; i < n; i++) {
		bool lead = id || nsc;    /* a field before the features */
		if (id) {
			snprintf(num, sizeof(num), "%lld",
			         (long long)((const int64_t *)id->data)[i]);
			zm_buf_puts(&c->line, num);
		}
		for (k = 0; k < nsc; k++) {
			if (k || id)
				zm_buf_puts(&c->line, ",");
			csv_field(&c->line, sc[k].levels[sc[k].codes[i]]);
		}
		if (x->dtype == ZM_DTYPE_U8) {
			const unsigned char *p = (const unsigned char *)x->data +
			                         i * d;

			for (k = 0; k < d; k++) {
				if (k || lead)
					zm_buf_puts(&c->line, ",");
				zm_buf_puts(&c->line, c->u8_text[p[k]]);
			}
		} else {
			zm_tensor_read_f32(x, i * d, d, row);
			for (k = 0; k < d; k++) {
				snprintf(num, sizeof(num), "%s%.9g",
				         k || lead ? "," : "",
				         (double)(row[k] * scale));
				zm_buf_puts(&c->line, num);
			}
		}
		for (k = 0; k < c->ny; k++) {
			zm_buf_puts(&c->line, ",");
			if (c->y_int) {
				int64_t v = ((const int64_t *)y->data)[i];

				if (c->nclasses && v >= 0 &&
				    (uint64_t)v < c->nclasses && c->classes[v]) {
					csv_field(&c->line, c->classes[v]);
				} else {
					snprintf(num, sizeof(num), "%lld",
					         (long long)v);
					zm_buf_puts(&c->line, num);
				}
			} else {
				zm_tensor_read_f32(y, i * c->ny + k, 1, &yv);
				snprintf(num, sizeof(num), "%.9g", (double)yv);
				zm_buf_puts(&c->line, num);
			}
		}
		zm_buf_puts(&c->line, "\n");
		if (c->line.failed) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
			break;
		}
		if (c->line.len >= (1 << 16) || i + 1 == n) {
			st = zm_outfile_write(&c->f, c->line.data, c->line.len,
			                      err);
			c->line.len = 0;
			if (st != ZM_OK)
				break;
		}
	}
	free(row);
	zm_data_columns_free(sc, nsc);
	return st;
}

static enum zm_status export(const struct tensor_opts *o,
                             struct zm_error *err)
{
	struct zm_dataset_options d;
	struct zm_dataset_reader *r = NULL;
	struct csv_out *c;
	struct zm_doc doc;
	enum zm_status st;
	size_t docs = 0;
	char where[4200];
	bool eof;

	zm_doc_init(&doc);
	c = zm_calloc(1, sizeof(*c));
	if (!c)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	zm_buf_init(&c->line);
	zm_dataset_options_init(&d);
	d.kind = ZM_DATASET_STREAM;
	d.path = o->nfiles ? o->files[0] : "-";
	st = zm_dataset_open(&r, &d, err);
	if (st != ZM_OK)
		goto out;
	st = zm_outfile_open(&c->f, o->output, false, err);
	if (st != ZM_OK)
		goto out;
	c->open = true;
	for (;;) {
		st = zm_dataset_next(r, &doc, &eof, err);
		if (st != ZM_OK || eof)
			break;
		docs++;
		snprintf(where, sizeof(where), "%s: document %zu",
		         strcmp(d.path, "-") ? d.path : "<stdin>", docs);
		st = export_doc(c, &doc, where, err);
		if (st != ZM_OK)
			break;
	}
	if (st == ZM_OK && c->line.len)
		st = zm_outfile_write(&c->f, c->line.data, c->line.len, err);
	if (st == ZM_OK) {
		c->open = false;
		st = zm_outfile_commit(&c->f, err);
	}
out:
	if (c->open)
		zm_outfile_abort(&c->f);
	zm_buf_release(&c->line);
	zm_config_strings_free(c->columns, c->ncolumns);
	zm_config_strings_free(c->classes, c->nclasses);
	zm_config_strings_free(c->strings, c->nstrings);
	free(c->label_name);
	free(c);
	zm_doc_release(&doc);
	zm_dataset_close(r);
	return st;
}

static int run(const struct tensor_opts *o)
{
	struct zm_error err;
	enum zm_status st = ZM_OK;
	int i, status = ZM_EXIT_OK;

	zm_error_clear(&err);
	switch (o->cmd) {
	case CMD_INFO:
		if (o->nfiles == 0)
			return info_file("-", &err) == ZM_OK
			       ? ZM_EXIT_OK : zm_cli_report(&err);
		for (i = 0; i < o->nfiles; i++) {
			/* Like cat: report a bad file and go on. */
			if (info_file(o->files[i], &err) != ZM_OK)
				status = zm_cli_report(&err) == ZM_EXIT_USAGE
				         ? ZM_EXIT_USAGE : ZM_EXIT_FAILURE;
		}
		return status;
	case CMD_IMPORT:
		st = import(o, &err);
		break;
	case CMD_EXPORT:
		st = export(o, &err);
		break;
	default:
		ZM_ASSERT(!"no command");
	}
	return st == ZM_OK ? ZM_EXIT_OK : zm_cli_report(&err);
}

int main(int argc, char **argv)
{
	enum { OPT_FROM = 256, OPT_TO, OPT_LABEL, OPT_IMAGES, OPT_LABELS,
	       OPT_BATCH, OPT_SHAPE, OPT_COMPRESS, OPT_VERSION };
	static const struct option longopts[] = {
		{ "from", required_argument, NULL, OPT_FROM },
		{ "to", required_argument, NULL, OPT_TO },
		{ "label", required_argument, NULL, OPT_LABEL },
		{ "images", required_argument, NULL, OPT_IMAGES },
		{ "labels", required_argument, NULL, OPT_LABELS },
		{ "batch", required_argument, NULL, OPT_BATCH },
		{ "shape", required_argument, NULL, OPT_SHAPE },
		{ "compress", required_argument, NULL, OPT_COMPRESS },
		{ "output", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, OPT_VERSION },
		{ NULL, 0, NULL, 0 },
	};
	struct tensor_opts o = opts_default;
	const char *cmd;
	int64_t v;
	int c, status;

	zm_cli_init(argv[0]);
	if (!zm_compress_from_env(&o.compress))
		return zm_cli_usage_error(usage_str,
		                          "ZM_COMPRESS: expected 0..9, got '%s'",
		                          getenv("ZM_COMPRESS"));
	cmd = argc > 1 ? argv[1] : NULL;
	if (cmd && strcmp(cmd, "info") == 0)
		o.cmd = CMD_INFO;
	else if (cmd && strcmp(cmd, "import") == 0)
		o.cmd = CMD_IMPORT;
	else if (cmd && strcmp(cmd, "export") == 0)
		o.cmd = CMD_EXPORT;
	/* Without a command only -h and --version make sense; getopt then
	 * runs over the whole command line. */
	if (o.cmd != CMD_NONE) {
		argc--;
		argv++;
	}
	while ((c = getopt_long(argc, argv, "ho:", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_FROM:
			if (strcmp(optarg, "csv") && strcmp(optarg, "idx"))
				return zm_cli_usage_error(usage_str,
				        "--from: expected csv or idx, got '%s'",
				        optarg);
			o.from = optarg;
			break;
		case OPT_TO:
			if (strcmp(optarg, "csv"))
				return zm_cli_usage_error(usage_str,
				        "--to: expected csv, got '%s'", optarg);
			o.to = optarg;
			break;
		case OPT_LABEL:
			o.label = optarg;
			break;
		case OPT_IMAGES:
			o.images = optarg;
			break;
		case OPT_LABELS:
			o.labels = optarg;
			break;
		case OPT_BATCH:
			if (!zm_cli_int("--batch", optarg, 1, 1 << 30, &o.batch))
				return zm_cli_usage_error(usage_str, NULL);
			break;
		case OPT_SHAPE:
			if (strcmp(optarg, "flat") && strcmp(optarg, "image"))
				return zm_cli_usage_error(usage_str,
				        "--shape: expected flat or image, got '%s'",
				        optarg);
			o.image_shape = strcmp(optarg, "image") == 0;
			break;
		case OPT_COMPRESS:
			if (!zm_cli_int("--compress", optarg, 0, 9, &v))
				return zm_cli_usage_error(usage_str, NULL);
			o.compress = (int)v;
			break;
		case 'o':
			o.output = optarg;
			break;
		case 'h':
			return zm_cli_help(usage_str);
		case OPT_VERSION:
			return zm_cli_show_version();
		default:
			return zm_cli_usage_error(usage_str, NULL);
		}
	}
	o.files = argv + optind;
	o.nfiles = argc - optind;
	switch (o.cmd) {
	case CMD_NONE:
		if (cmd && *cmd != '-')
			return zm_cli_usage_error(usage_str,
			                          "unknown command '%s'", cmd);
		return zm_cli_usage_error(usage_str, "missing command");
	case CMD_INFO:
		if (o.from || o.to || o.label || o.images || o.labels)
			return zm_cli_usage_error(usage_str,
			        "info takes only file names");
		break;
	case CMD_IMPORT:
		if (!o.from)
			return zm_cli_usage_error(usage_str,
			        "import needs --from csv or --from idx");
		if (strcmp(o.from, "idx") == 0) {
			if (!o.images)
				return zm_cli_usage_error(usage_str,
				        "--from idx needs --images IDX");
			if (o.nfiles || o.label)
				return zm_cli_usage_error(usage_str,
				        "--from idx reads --images and --labels "
				        "only");
		} else {
			if (o.images || o.labels || o.image_shape)
				return zm_cli_usage_error(usage_str,
				        "--images, --labels and --shape are for "
				        "--from idx");
			if (o.nfiles > 1)
				return zm_cli_usage_error(usage_str,
				        "import reads one file");
		}
		break;
	case CMD_EXPORT:
		if (!o.to)
			return zm_cli_usage_error(usage_str,
			        "export needs --to csv");
		if (o.nfiles > 1)
			return zm_cli_usage_error(usage_str,
			        "export reads one file");
		break;
	}
	if (o.cmd != CMD_INFO && !(o.output = direct_output(o.output)))
		return ZM_EXIT_FAILURE;
	status = run(&o);
	return zm_cli_close_stdout(status);
}
