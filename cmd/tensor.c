/*
 * tensor: inspect and convert zoomerge streams.  `info` lists the
 * documents, metadata and tensors of streams; `import` turns CSV files or
 * IDX files (Fashion-MNIST) into a data stream of batch documents, and a
 * NumPy .npz archive into one document of its arrays (a PyTorch state dict
 * saved with numpy.savez becomes a plain safetensors file); `export` writes
 * the rows of a data stream as CSV, with zm.scale applied, or a model's
 * parameters as a PyTorch state dict.  All three
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
#include "datain.h"
#include "config.h"
#include "constants.h"
#include "convert.h"
#include "csv.h"
#include "dataset.h"
#include "fileio.h"
#include "mem.h"
#include "metakeys.h"
#include "model.h"
#include "stream.h"

static const char usage_str[] =
	"usage: tensor info [FILE...]\n"
	"       tensor import --from csv [--label COLUMN] [--batch N] [-o OUT] [FILE]\n"
	"       tensor import --from idx --images IDX [--labels IDX] [--batch N]\n"
	"                     [--shape flat|image] [-o OUT]\n"
	"       tensor import --from npz [-o OUT] [FILE]\n"
	"       tensor export --to csv [-o OUT] [FILE]\n"
	"       tensor export --state-dict [-o OUT] [MODEL]\n"
	"options: --compress 0..9, -h/--help, --version\n";

/* --help: every option with its default in brackets. */
static const char options_str[] =
	"\n"
	"Inspects streams, imports CSV, IDX and NumPy .npz, exports CSV and\n"
	"PyTorch state dicts.\n"
	"\n"
	"      --from csv|idx|npz        import: the input format [required]\n"
	"      --to csv                  export: the output format\n"
	"                                [required, or --state-dict]\n"
	"      --state-dict              export: a model's parameters as a plain\n"
	"                                safetensors PyTorch state dict [off]\n"
	"      --label COLUMN            CSV label column, name or index [none]\n"
	"      --images IDX              IDX image file [required with --from idx]\n"
	"      --labels IDX              IDX label file [none]\n"
	"      --batch N                 rows per document [4096]\n"
	"      --shape flat|image        imported image shape [flat]\n"
	"      --compress LEVEL          gzip level 0..9 [ZM_COMPRESS, else per payload]\n"
	"  -o, --output OUT              where to write [standard output]\n"
	"  -h, --help                    print this help and exit\n"
	"      --version                 print the version and exit\n";

enum command { CMD_NONE, CMD_INFO, CMD_IMPORT, CMD_EXPORT };

struct tensor_opts {
	enum command cmd;
	bool has_from;
	bool npz;                    /* --from npz */
	bool state_dict;             /* export --state-dict */
	enum zm_dataset_kind from;   /* csv | idx */
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
	struct zm_stream_totals tot = { 0, 0, 0, 0 };
	struct zm_doc doc;
	enum zm_status st;
	size_t i;
	bool eof;
	char shape[256];

	zm_doc_init(&doc);
	st = zm_reader_open(&r, path, err);
	while (st == ZM_OK && !(st = zm_stream_describe_next(r, &doc, &tot,
	                                                     &eof, err)) &&
	       !eof) {
		const char *kind = zm_doc_meta(&doc, ZM_META_KIND);

		printf("%s: document %zu: %s\n", zm_reader_name(r), tot.docs,
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
		}
	}
	if (st == ZM_OK)
		printf("%s: %zu document%s, %llu rows, %zu tensors, %llu bytes\n",
		       zm_reader_name(r), tot.docs, tot.docs == 1 ? "" : "s",
		       tot.rows, tot.tensors, tot.bytes);
	zm_doc_release(&doc);
	zm_reader_close(r);
	return st;
}

static int run(const struct tensor_opts *o)
{
	struct zm_dataset_options d;
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
		if (o->npz) {
			st = zm_convert_npz(o->nfiles ? o->files[0] : "-",
			                    o->output, o->compress, &err);
			break;
		}
		zm_dataset_options_init(&d);
		d.kind = o->from;
		d.path = o->nfiles ? o->files[0] : "-";
		d.images = o->images;
		d.labels = o->labels;
		d.label = o->label;
		d.batch = (size_t)o->batch;
		d.image_shape = o->image_shape;
		st = zm_convert_import(&d, o->output, o->compress, &err);
		break;
	case CMD_EXPORT:
		if (o->state_dict) {
			st = zm_convert_state_dict(o->nfiles ? o->files[0]
			                                     : "-", o->output,
			                           &err);
			break;
		}
		st = zm_csv_export(o->nfiles ? o->files[0] : "-", o->output,
		                   &err);
		break;
	default:
		ZM_ASSERT(!"no command");
	}
	return st == ZM_OK ? ZM_EXIT_OK : zm_cli_report(&err);
}

enum { OPT_FROM = 256, OPT_TO, OPT_LABEL, OPT_IMAGES, OPT_LABELS,
       OPT_BATCH, OPT_SHAPE, OPT_COMPRESS, OPT_STATE_DICT };

static const struct option longopts[] = {
	{ "from", required_argument, NULL, OPT_FROM },
	{ "to", required_argument, NULL, OPT_TO },
	{ "label", required_argument, NULL, OPT_LABEL },
	{ "images", required_argument, NULL, OPT_IMAGES },
	{ "labels", required_argument, NULL, OPT_LABELS },
	{ "batch", required_argument, NULL, OPT_BATCH },
	{ "shape", required_argument, NULL, OPT_SHAPE },
	{ "compress", required_argument, NULL, OPT_COMPRESS },
	{ "state-dict", no_argument, NULL, OPT_STATE_DICT },
	{ "output", required_argument, NULL, 'o' },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

static bool parse_option(void *ctx, int c, const char *arg)
{
	struct tensor_opts *o = ctx;
	int64_t v;

	switch (c) {
	case OPT_FROM:
		o->has_from = true;
		/* Arrays, not rows: none of the data options apply. */
		o->npz = strcmp(arg, "npz") == 0;
		return o->npz || zm_cli_data_from(arg, false, &o->from);
	case OPT_TO:
		if (strcmp(arg, "csv")) {
			zm_cli_warn("--to: expected csv, got '%s'", arg);
			return false;
		}
		o->to = arg;
		return true;
	case OPT_STATE_DICT:
		o->state_dict = true;
		return true;
	case OPT_LABEL:
		o->label = arg;
		return true;
	case OPT_IMAGES:
		o->images = arg;
		return true;
	case OPT_LABELS:
		o->labels = arg;
		return true;
	case OPT_BATCH:
		return zm_cli_int("--batch", arg, 1, ZM_DATA_BATCH_MAX,
		                  &o->batch);
	case OPT_SHAPE:
		if (strcmp(arg, "flat") && strcmp(arg, "image")) {
			zm_cli_warn("--shape: expected flat or image, got '%s'",
			            arg);
			return false;
		}
		o->image_shape = strcmp(arg, "image") == 0;
		return true;
	case OPT_COMPRESS:
		if (!zm_cli_int("--compress", arg, 0, 9, &v))
			return false;
		o->compress = (int)v;
		return true;
	case 'o':
		o->output = arg;
		return true;
	default:
		return false;
	}
}

/* The combinations of options each command takes; prints what is wrong. */
static bool validate(const struct tensor_opts *o, const char *cmd)
{
	switch (o->cmd) {
	case CMD_NONE:
		if (cmd && *cmd != '-')
			zm_cli_warn("unknown command '%s'", cmd);
		else
			zm_cli_warn("missing command");
		return false;
	case CMD_INFO:
		if (o->has_from || o->to || o->label || o->images ||
		    o->labels || o->state_dict) {
			zm_cli_warn("info takes only file names");
			return false;
		}
		return true;
	case CMD_IMPORT:
		if (!o->has_from)
			zm_cli_warn("import needs --from csv, idx or npz");
		else if (o->to || o->state_dict)
			zm_cli_warn("--to and --state-dict go with export");
		else if (o->npz && (o->label || o->images || o->labels ||
		                    o->image_shape ||
		                    o->batch != opts_default.batch))
			zm_cli_warn("--from npz takes no --label, --images, "
			            "--labels, --shape or --batch");
		else if (!o->npz && !zm_cli_data_check(o->from, o->images,
		                                       o->labels, o->label,
		                                       o->nfiles > 0))
			return false;
		else if (!o->npz && o->from != ZM_DATASET_IDX &&
		         o->image_shape)
			zm_cli_warn("--shape needs --from idx");
		else if (o->nfiles > 1)
			zm_cli_warn("import reads one file");
		else
			return true;
		return false;
	case CMD_EXPORT:
		if (!o->to == !o->state_dict)
			zm_cli_warn("export needs --to csv or --state-dict");
		else if (o->nfiles > 1)
			zm_cli_warn("export reads one file");
		else
			return true;
		return false;
	}
	return false;
}

int main(int argc, char **argv)
{
	struct tensor_opts o = opts_default;
	const char *cmd;
	int status;

	zm_cli_init(argv[0]);
	zm_cli_options(options_str);
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
	status = zm_cli_getopt(argc, argv, "ho:", longopts, usage_str,
	                       parse_option, &o, NULL);
	if (status >= 0)
		return status;
	o.files = argv + optind;
	o.nfiles = argc - optind;
	if (!validate(&o, cmd))
		return zm_cli_usage_error(usage_str, NULL);
	if (o.cmd != CMD_INFO && !(o.output = direct_output(o.output)))
		return ZM_EXIT_FAILURE;
	status = run(&o);
	return zm_cli_close_stdout(status);
}
