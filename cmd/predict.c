/*
 * predict: the inference phase.  Reads inputs -- a zoomerge data stream
 * (default), a CSV file or IDX files -- one batch at a time, runs them
 * through a zoo model (or a model file), and writes one prediction per row:
 * CSV (id,pred,p_0,...,p_{C-1} for classification, id,y_0,... for
 * regression) or a data stream.  With --metrics it also writes the rows
 * seen and, when the inputs carry labels, accuracy and mean loss as YAML.
 *
 * Only single-model inference exists so far; the options of the dynamic
 * multi-model inference (DESIGN.md section 5) are recognised and refused
 * as not implemented yet.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "dataset.h"
#include "gemm.h"
#include "model.h"
#include "predict.h"
#include "stream.h"
#include "zoo.h"

static const char usage_str[] =
	"usage: predict (--zoo DIR --model NAME | --model-file FILE) [--batch-size N]\n"
	"               [--threads N] [--metrics FILE] [--output csv|stream]\n"
	"               [--compress LEVEL] [-o OUT] [--from stream|csv|idx]\n"
	"               [--label COLUMN] [--images IDX [--labels IDX]]\n"
	"               [--quiet|--progress] [FILE]\n"
	"       predict -h | --help | --version\n";

struct predict_opts {
	const char *zoo_dir;
	const char *model;
	const char *model_file;
	size_t n_models;            /* --model given this many times */
	size_t batch;
	int threads;                /* 0: BLIS's default */
	const char *metrics;
	enum zm_pred_format format;
	int compress;
	const char *output;
	enum zm_dataset_kind from;
	const char *label;
	const char *images;
	const char *labels;
	const char *input;          /* NULL or "-": stdin */
	bool quiet, progress;
};

/* Options of the dynamic multi-model inference, refused until it exists.
 * Their getopt values start here. */
enum { OPT_FUTURE = 1000 };
static const char *const future_opts[] = {
	"granularity", "weighting", "router", "assignment", "per", "top-k",
	"temperature", "merge", "merge-point", "state", "granularity-from",
	"weights", "adapt", "trace",
};
#define N_FUTURE (sizeof(future_opts) / sizeof(future_opts[0]))
enum { OPT_FEEDBACK = OPT_FUTURE + (int)N_FUTURE };

/* Reads the first document of a model file. */
static enum zm_status load_model_file(const char *path, struct zm_model **m,
                                      struct zm_error *err)
{
	struct zm_reader *r = NULL;
	struct zm_doc doc;
	enum zm_status st;
	bool eof = false;

	zm_doc_init(&doc);
	st = zm_reader_open(&r, path, err);
	if (st == ZM_OK)
		st = zm_reader_next(r, &doc, &eof, err);
	if (st == ZM_OK && eof)
		st = zm_error_set(err, ZM_ERR_FORMAT, "%s: no document", path);
	if (st == ZM_OK) {
		st = zm_model_from_doc(&doc, NULL, m, err);
		if (st != ZM_OK)
			zm_error_prefix(err, "%s: ", path);
	}
	zm_doc_release(&doc);
	zm_reader_close(r);
	return st;
}

/* Reads the current version of a zoo model; the zoo's shared lock is held
 * only while the file is read. */
static enum zm_status load_zoo_model(const char *dir, const char *name,
                                     struct zm_model **m,
                                     struct zm_error *err)
{
	struct zm_zoo *zoo = NULL;
	struct zm_zoo_entry *e;
	struct zm_doc doc;
	enum zm_status st;

	zm_doc_init(&doc);
	st = zm_zoo_open(&zoo, dir, ZM_ZOO_READ, err);
	if (st == ZM_OK)
		st = zm_zoo_get(zoo, name, &e, err);
	if (st == ZM_OK)
		st = zm_zoo_read_model(zoo, e, &doc, err);
	if (st == ZM_OK) {
		st = zm_model_from_doc(&doc, NULL, m, err);
		if (st != ZM_OK)
			zm_error_prefix(err, "%s: model '%s' v%" PRId64 ": ", dir,
			                name, e->version);
	}
	zm_doc_release(&doc);
	zm_zoo_close(zoo);
	return st;
}

static double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int run(const struct predict_opts *o)
{
	struct zm_error err;
	struct zm_model *model = NULL;
	struct zm_predictor *pred = NULL;
	struct zm_dataset_reader *r = NULL;
	struct zm_pred_writer *w = NULL;
	struct zm_dataset_options d;
	struct zm_pred_metrics metrics;
	struct zm_doc doc;
	enum zm_status st;
	const struct zm_model *models[1];
	const char *in_name, *model_name;
	char where[4200];
	uint64_t row = 0;
	size_t docno = 0;
	bool eof = false, progress;
	double last = 0;

	zm_error_clear(&err);
	zm_doc_init(&doc);
	zm_gemm_setup(o->threads);
	progress = zm_cli_progress_wanted(o->progress, o->quiet);
	if (o->model_file) {
		model_name = o->model_file;
		st = load_model_file(o->model_file, &model, &err);
	} else {
		model_name = o->model;
		st = load_zoo_model(o->zoo_dir, o->model, &model, &err);
	}
	if (st != ZM_OK)
		goto out;
	models[0] = model;
	st = zm_predictor_new(models, 1, o->batch, &pred, &err);
	if (st != ZM_OK)
		goto out;
	zm_pred_metrics_init(&metrics, pred->loss, pred->out_features);

	zm_dataset_options_init(&d);
	d.kind = o->from;
	d.path = o->input;
	d.images = o->images;
	d.labels = o->labels;
	d.label = o->label;
	d.batch = o->batch;
	st = zm_dataset_open(&r, &d, &err);
	if (st != ZM_OK)
		goto out;
	in_name = o->from == ZM_DATASET_IDX ? o->images :
	          !o->input || strcmp(o->input, "-") == 0 ? "<stdin>" : o->input;
	st = zm_pred_writer_open(&w, o->output, o->format, pred->loss,
	                         pred->out_features, o->compress, model_name,
	                         &err);
	if (st != ZM_OK)
		goto out;
	for (;;) {
		st = zm_dataset_next(r, &doc, &eof, &err);
		if (st != ZM_OK || eof)
			break;
		docno++;
		snprintf(where, sizeof(where), "%s: %s %zu", in_name,
		         o->from == ZM_DATASET_STREAM ? "document" : "batch",
		         docno);
		st = zm_predict_doc(pred, &doc, where, &row, w, &metrics, &err);
		if (st != ZM_OK)
			break;
		if (progress && now_seconds() - last >= 0.5) {
			last = now_seconds();
			fprintf(stderr, "\r%s: %" PRIu64 " rows", zm_cli_name(),
			        row);
		}
	}
	if (progress)
		fprintf(stderr, "\r%s: %" PRIu64 " rows%s\n", zm_cli_name(), row,
		        st == ZM_OK ? "" : " (failed)");
	if (st != ZM_OK)
		goto out;
	if (o->metrics) {
		st = zm_pred_metrics_write(&metrics, model_name, o->metrics,
		                           &err);
		if (st != ZM_OK)
			goto out;
	}
	st = zm_pred_writer_commit(w, &err);
	w = NULL;
out:
	zm_pred_writer_abort(w);
	zm_doc_release(&doc);
	zm_dataset_close(r);
	zm_predictor_free(pred);
	zm_model_free(model);
	return st == ZM_OK ? ZM_EXIT_OK : zm_cli_report(&err);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "zoo", required_argument, NULL, 'z' },
		{ "model", required_argument, NULL, 'm' },
		{ "model-file", required_argument, NULL, 'M' },
		{ "batch-size", required_argument, NULL, 'b' },
		{ "threads", required_argument, NULL, 'j' },
		{ "metrics", required_argument, NULL, 'x' },
		{ "output", required_argument, NULL, 'O' },
		{ "compress", required_argument, NULL, 'c' },
		{ "from", required_argument, NULL, 'f' },
		{ "label", required_argument, NULL, 'l' },
		{ "images", required_argument, NULL, 'i' },
		{ "labels", required_argument, NULL, 'L' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "progress", no_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ "granularity", required_argument, NULL, OPT_FUTURE + 0 },
		{ "weighting", required_argument, NULL, OPT_FUTURE + 1 },
		{ "router", required_argument, NULL, OPT_FUTURE + 2 },
		{ "assignment", required_argument, NULL, OPT_FUTURE + 3 },
		{ "per", required_argument, NULL, OPT_FUTURE + 4 },
		{ "top-k", required_argument, NULL, OPT_FUTURE + 5 },
		{ "temperature", required_argument, NULL, OPT_FUTURE + 6 },
		{ "merge", required_argument, NULL, OPT_FUTURE + 7 },
		{ "merge-point", required_argument, NULL, OPT_FUTURE + 8 },
		{ "state", required_argument, NULL, OPT_FUTURE + 9 },
		{ "granularity-from", required_argument, NULL, OPT_FUTURE + 10 },
		{ "weights", required_argument, NULL, OPT_FUTURE + 11 },
		{ "adapt", required_argument, NULL, OPT_FUTURE + 12 },
		{ "trace", required_argument, NULL, OPT_FUTURE + 13 },
		{ "feedback", no_argument, NULL, OPT_FEEDBACK },
		{ NULL, 0, NULL, 0 },
	};
	struct predict_opts o = {
		.batch = ZM_PREDICT_BATCH_DEFAULT,
		.format = ZM_PRED_CSV,
		.compress = ZM_COMPRESS_AUTO,
		.output = "-",
		.from = ZM_DATASET_STREAM,
	};
	int64_t v;
	int c;

	zm_cli_init(argv[0]);
	if (!zm_compress_from_env(&o.compress)) {
		zm_cli_warn("ZM_COMPRESS: expected a level from 0 to 9");
		return zm_cli_usage_error(usage_str, NULL);
	}
	while ((c = getopt_long(argc, argv, "o:qh", longopts, NULL)) != -1) {
		switch (c) {
		case 'z': o.zoo_dir = optarg; break;
		case 'm': o.model = optarg; o.n_models++; break;
		case 'M': o.model_file = optarg; break;
		case 'x': o.metrics = optarg; break;
		case 'o': o.output = optarg; break;
		case 'l': o.label = optarg; break;
		case 'i': o.images = optarg; break;
		case 'L': o.labels = optarg; break;
		case 'q': o.quiet = true; break;
		case 'P': o.progress = true; break;
		case 'b':
			if (!zm_cli_int("--batch-size", optarg, 1, 1 << 20, &v))
				goto usage;
			o.batch = (size_t)v;
			break;
		case 'j':
			if (!zm_cli_int("--threads", optarg, 1, 1024, &v))
				goto usage;
			o.threads = (int)v;
			break;
		case 'c':
			if (!zm_cli_int("--compress", optarg, 0, 9, &v))
				goto usage;
			o.compress = (int)v;
			break;
		case 'O':
			if (!zm_pred_format_parse(optarg, &o.format)) {
				zm_cli_warn("--output: expected csv or stream, got '%s'",
				            optarg);
				goto usage;
			}
			break;
		case 'f':
			if (strcmp(optarg, "stream") == 0)
				o.from = ZM_DATASET_STREAM;
			else if (strcmp(optarg, "csv") == 0)
				o.from = ZM_DATASET_CSV;
			else if (strcmp(optarg, "idx") == 0)
				o.from = ZM_DATASET_IDX;
			else {
				zm_cli_warn("--from: expected stream, csv or idx, "
				            "got '%s'", optarg);
				goto usage;
			}
			break;
		case 'h':
			fputs(usage_str, stdout);
			return zm_cli_close_stdout(ZM_EXIT_OK);
		case 'V':
			zm_cli_version();
			return zm_cli_close_stdout(ZM_EXIT_OK);
		case OPT_FEEDBACK:
			zm_cli_warn("--feedback is not implemented yet");
			goto usage;
		default:
			if (c >= OPT_FUTURE && c < OPT_FEEDBACK) {
				zm_cli_warn("--%s is not implemented yet (multi-model "
				            "inference)", future_opts[c - OPT_FUTURE]);
				goto usage;
			}
			goto usage;
		}
	}
	if (optind < argc)
		o.input = argv[optind++];
	if (optind < argc) {
		zm_cli_warn("unexpected argument '%s'", argv[optind]);
		goto usage;
	}
	if (o.model_file) {
		if (o.zoo_dir || o.n_models) {
			zm_cli_warn("--model-file takes no --zoo or --model");
			goto usage;
		}
	} else {
		if (!o.zoo_dir) {
			zm_cli_warn("--zoo (or --model-file) is required");
			goto usage;
		}
		if (o.n_models == 0) {
			zm_cli_warn("--model is required (inference with the "
			            "whole zoo is not implemented yet)");
			goto usage;
		}
		if (o.n_models > 1) {
			zm_cli_warn("several --model: multi-model inference is "
			            "not implemented yet");
			goto usage;
		}
	}
	if (o.from == ZM_DATASET_IDX) {
		if (!o.images || o.input) {
			zm_cli_warn("--from idx reads --images IDX (and --labels "
			            "IDX), not FILE");
			goto usage;
		}
	} else if (o.images || o.labels) {
		zm_cli_warn("--images and --labels need --from idx");
		goto usage;
	}
	if (o.label && o.from != ZM_DATASET_CSV) {
		zm_cli_warn("--label needs --from csv");
		goto usage;
	}
	return zm_cli_close_stdout(run(&o));
usage:
	return zm_cli_usage_error(usage_str, NULL);
}
