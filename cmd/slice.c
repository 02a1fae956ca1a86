/*
 * slice: splits a data source (a data stream, CSV or IDX files) into named
 * slices by the rules of a YAML file (zoomerge-slices(5)) and writes one
 * data stream per slice, DIR/NAME.safetensors.gz, whose last document
 * holds the slice's profile (row count, per-feature mean and variance,
 * label histogram).  A summary in YAML goes to stdout; --membership also
 * writes every row labelled with its slice index.  Memory is bounded by a
 * batch (and, for k-means rules, a fixed-size sample of rows): inputs of
 * any length are sliced in one pass, or two when centroids must be fitted.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "datain.h"
#include "dataset.h"
#include "gemm.h"
#include "json.h"
#include "slicer.h"
#include "stream.h"

static const char usage_str[] =
	"usage: slice --rules RULES.yaml --out-dir DIR [--membership FILE] [FILE]\n"
	"       slice --rules RULES.yaml --out-dir DIR --from idx --images IDX\n"
	"             [--labels IDX]\n"
	"options: --from stream|csv|idx  --label COLUMN  --batch N\n"
	"         --centroids FILE  --unmatched fail|drop  --compress 0..9\n"
	"         --threads N  -h/--help  --version\n";

/* --help: every option with its default in brackets. */
static const char options_str[] =
	"\n"
	"Splits data by rules into one stream per slice, each with its profile.\n"
	"\n"
	"      --rules FILE              the slice rules (YAML) [required]\n"
	"      --out-dir DIR             where the slice files go [required]\n"
	"      --membership FILE         also write a router's training set [none]\n"
	"      --from stream|csv|idx     the input format [stream]\n"
	"      --label COLUMN            CSV label column, name or index [none]\n"
	"      --images IDX              IDX images for --from idx [none]\n"
	"      --labels IDX              IDX labels for --from idx [none]\n"
	"      --batch N                 rows per batch of CSV and IDX input [4096]\n"
	"      --centroids FILE          k-means centroids to use [fit new ones]\n"
	"      --unmatched fail|drop     rows that match no slice [fail]\n"
	"      --compress LEVEL          gzip level 0..9 [ZM_COMPRESS, else per payload]\n"
	"      --threads N               BLIS threads [BLIS_NUM_THREADS, else 1]\n"
	"  -h, --help                    print this help and exit\n"
	"      --version                 print the version and exit\n";

struct slice_opts {
	struct zm_slicer_options s;
	bool drop_unmatched;
	int threads;
};

static int run(const struct slice_opts *o)
{
	struct zm_slicer s;
	struct zm_error err;
	struct zm_buf b;
	enum zm_status st;
	size_t i;

	zm_error_clear(&err);
	zm_buf_init(&b);
	zm_slicer_init(&s, &o->s);
	if ((st = zm_slicer_read(&s, &err)))
		goto out;
	if (s.unmatched > 0 && !o->drop_unmatched) {
		st = zm_error_set(&err, ZM_ERR_DATA, "%" PRIu64 " of %" PRIu64
		                  " rows match no slice (add a slice with "
		                  "default: true, or --unmatched drop)",
		                  s.unmatched, s.rows);
		goto out;
	}
	if ((st = zm_slicer_commit(&s, &err)))
		goto out;
	for (i = 0; i < s.rules.n_rules; i++)
		if (s.out[i].rows == 0)
			zm_cli_warn("slice '%s' is empty",
			            s.rules.rules[i].name);
	if (s.unmatched > 0)
		zm_cli_warn("%" PRIu64 " rows matched no slice and were "
		            "dropped", s.unmatched);
	zm_slicer_summary(&s, &b);
	if (!b.failed)
		fputs(b.data, stdout);
out:
	zm_buf_release(&b);
	zm_slicer_release(&s);
	return st == ZM_OK ? ZM_EXIT_OK : zm_cli_report(&err);
}

enum { OPT_FROM = 256, OPT_IMAGES, OPT_LABELS, OPT_LABEL, OPT_BATCH,
       OPT_CENTROIDS, OPT_UNMATCHED, OPT_COMPRESS, OPT_THREADS,
       OPT_MEMBERSHIP, OPT_OUTDIR };

static const struct option longopts[] = {
	{ "rules", required_argument, NULL, 'r' },
	{ "out-dir", required_argument, NULL, OPT_OUTDIR },
	{ "membership", required_argument, NULL, OPT_MEMBERSHIP },
	{ "from", required_argument, NULL, OPT_FROM },
	{ "images", required_argument, NULL, OPT_IMAGES },
	{ "labels", required_argument, NULL, OPT_LABELS },
	{ "label", required_argument, NULL, OPT_LABEL },
	{ "batch", required_argument, NULL, OPT_BATCH },
	{ "centroids", required_argument, NULL, OPT_CENTROIDS },
	{ "unmatched", required_argument, NULL, OPT_UNMATCHED },
	{ "compress", required_argument, NULL, OPT_COMPRESS },
	{ "threads", required_argument, NULL, OPT_THREADS },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

static bool parse_option(void *ctx, int c, const char *arg)
{
	struct slice_opts *o = ctx;
	int64_t v;

	switch (c) {
	case 'r': o->s.rules_path = arg; break;
	case OPT_OUTDIR: o->s.out_dir = arg; break;
	case OPT_MEMBERSHIP: o->s.membership = arg; break;
	case OPT_IMAGES: o->s.images = arg; break;
	case OPT_LABELS: o->s.labels = arg; break;
	case OPT_LABEL: o->s.label = arg; break;
	case OPT_CENTROIDS: o->s.centroids = arg; break;
	case OPT_FROM:
		return zm_cli_data_from(arg, true, &o->s.from);
	case OPT_UNMATCHED:
		if (strcmp(arg, "drop") && strcmp(arg, "fail")) {
			zm_cli_warn("--unmatched: expected fail or drop, got "
			            "'%s'", arg);
			return false;
		}
		o->drop_unmatched = strcmp(arg, "drop") == 0;
		break;
	case OPT_BATCH:
		if (!zm_cli_int("--batch", arg, 1, 1 << 24, &v))
			return false;
		o->s.batch = (size_t)v;
		break;
	case OPT_COMPRESS:
		if (!zm_cli_int("--compress", arg, 0, 9, &v))
			return false;
		o->s.compress = (int)v;
		break;
	case OPT_THREADS:
		if (!zm_cli_int("--threads", arg, 1, 1024, &v))
			return false;
		o->threads = (int)v;
		break;
	default:
		return false;
	}
	return true;
}

int main(int argc, char **argv)
{
	struct slice_opts o = { .s = {
		.from = ZM_DATASET_STREAM,
		.batch = ZM_DATASET_BATCH_DEFAULT,
		.compress = ZM_COMPRESS_AUTO,
	} };
	int status;

	zm_cli_init(argv[0]);
	zm_cli_options(options_str);
	if (!zm_compress_from_env(&o.s.compress))
		return zm_cli_usage_error(usage_str, "ZM_COMPRESS: expected "
		                          "0..9");
	status = zm_cli_getopt(argc, argv, "r:h", longopts, usage_str,
	                       parse_option, &o, &o.s.input);
	if (status >= 0)
		return status;
	if (!o.s.rules_path || !o.s.out_dir)
		return zm_cli_usage_error(usage_str, "--rules and --out-dir "
		                          "are required");
	if (!zm_cli_data_check(o.s.from, o.s.images, o.s.labels, o.s.label,
	                       o.s.input != NULL))
		return zm_cli_usage_error(usage_str, NULL);
	zm_gemm_setup(o.threads);
	return zm_cli_close_stdout(run(&o));
}
