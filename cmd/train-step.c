/*
 * train-step: trains models of a zoo on a data stream.  With --model it
 * trains that model; with --assignment it trains every model the
 * assignment gives the data's slice, each step scaled by the model's
 * weight there, so a slice's update is shared among its models in
 * proportion to their weights.  Each model starts from its current
 * version, trains for some epochs with SGD or Adam on shuffled
 * mini-batches, is measured before and after on a hashed held-out part of
 * the data, and has its profile updated with the statistics of the rows it
 * trained on.  It writes an update stream, one document per model (the
 * parameter deltas, the data's profile, metrics), to stdout or -o; with
 * --apply it also stores the trained models as their next versions, all
 * in one atomic change of the zoo.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assignment.h"
#include "cli.h"
#include "constants.h"
#include "fileio.h"
#include "gemm.h"
#include "json.h"
#include "model.h"
#include "profile.h"
#include "schema.h"
#include "stream.h"
#include "trainset.h"
#include "trainstep.h"
#include "update.h"
#include "zoo.h"
#include "zoomodel.h"
#include "zoostore.h"

static const char usage_str[] =
	"usage: train-step --zoo DIR (--model NAME | --assignment FILE [--slice NAME])\n"
	"                  [--epochs E|auto] [--batch-size B] [--lr LR] [--optimizer sgd|adam]\n"
	"                  [--seed N] [--apply] [--log FILE] [-o UPDATES] [DATA]\n"
	"  training:   --momentum M  --weight-decay W  --schedule constant|step|cosine\n"
	"              --step-size N  --gamma G  --min-lr LR  --step-scale W\n"
	"  data:       --val-fraction F (default 0.1)  --max-memory MIB  --min-rows N\n"
	"  output:     --log-every N  --compress 0..9  --threads N  --progress  --quiet\n"
	"       train-step -h | --help | --version\n";

/* --help: every option with its default in brackets. */
static const char options_str[] =
	"\n"
	"Trains zoo models on data; writes update streams or applies them.\n"
	"\n"
	"      --zoo DIR                 the model zoo [required]\n"
	"      --model NAME              the model to train [or --assignment]\n"
	"      --assignment FILE         train the slice's models with their weights\n"
	"                                [or --model]\n"
	"      --slice NAME              the slice to look up [the data's zm.slice]\n"
	"      --epochs E|auto           passes over the training rows [auto:\n"
	"                                until the held-out loss stops falling]\n"
	"      --batch-size B            rows per step [128]\n"
	"      --lr LR                   learning rate [0.01 sgd, 0.001 adam]\n"
	"      --optimizer sgd|adam      the optimizer [sgd]\n"
	"      --seed N                  shuffling and held-out split [0]\n"
	"      --apply                   store the trained model in the zoo [off]\n"
	"      --log FILE                JSON lines of the losses [none]\n"
	"  -o, --output UPDATES          the update stream\n"
	"                                [standard output; none with --apply]\n"
	"      --momentum M              SGD momentum [0.9]\n"
	"      --weight-decay W          decay of every parameter [0]\n"
	"      --schedule KIND           constant, step or cosine [constant]\n"
	"      --step-size N             steps between decays of step [required by it]\n"
	"      --gamma G                 decay factor of step [0.1]\n"
	"      --min-lr LR               floor of cosine [0]\n"
	"      --step-scale W            multiplies every step [1]\n"
	"      --val-fraction F          fraction of rows held out [0.1]\n"
	"      --max-memory MIB          refuse larger data [8192]\n"
	"      --min-rows N              fewer input rows is an error [1]\n"
	"      --log-every N             steps between reports [50]\n"
	"      --compress LEVEL          gzip level 0..9 [ZM_COMPRESS, else per payload]\n"
	"      --threads N               BLIS threads [BLIS_NUM_THREADS, else 1]\n"
	"      --progress, --quiet       one line per epoch on standard error\n"
	"                                [only when it is a terminal]\n"
	"  -h, --help                    print this help and exit\n"
	"      --version                 print the version and exit\n";

struct train_step_opts {
	const char *zoo_dir;
	const char *model;
	const char *assignment;
	const char *slice;         /* slice to look up in the assignment */
	const char *data;
	const char *out;           /* update stream; NULL: stdout unless --apply */
	const char *log;
	bool apply;
	bool progress, quiet;
	int threads;
	int compress;
	double val_fraction;
	uint64_t max_memory;
	uint64_t min_rows;         /* --min-rows: fewer is an error */
	struct zm_fit_config fit;
	/* the optimizer's options, applied by validate */
	struct {
		enum zm_optim_kind kind;
		double momentum, wd, gamma, min_lr, lr;   /* < 0: default */
		enum zm_lr_schedule schedule;
		int64_t step_size;
	} opt;
};

/* Progress on stderr and JSON lines for the log, as training goes. */
struct reporter {
	const struct train_step_opts *o;
	const char *model;         /* the model being trained */
	bool progress;
	struct zm_buf log;
};

static void report(const struct zm_fit_report *r, void *ctx)
{
	struct reporter *rep = ctx;
	struct zm_buf *b = &rep->log;

	zm_train_log_line(b, rep->model, r);
	if (!rep->progress || !r->epoch_end)
		return;
	fprintf(stderr, "%s: %s epoch %zu/%zu: loss %.4f", zm_cli_name(),
	        rep->model, r->epoch, r->max_epochs, r->train_loss);
	if (r->classification)
		fprintf(stderr, " acc %.4f", r->train_accuracy);
	if (r->val_rows) {
		fprintf(stderr, ", held-out loss %.4f", r->val_loss);
		if (r->classification)
			fprintf(stderr, " acc %.4f", r->val_accuracy);
	}
	fprintf(stderr, " (%.0f samples/s)\n", r->samples_per_s);
}

/* Stores the trained models as their next versions in one change, unless
 * one of them moved on while we trained (then the caller should re-run or
 * merge the updates instead). */
static enum zm_status apply_to_zoo(const struct train_step_opts *o,
                                   struct zm_train_job *jobs, size_t n,
                                   struct zm_error *err)
{
	struct zm_zoo_store_item *items;
	enum zm_status st;
	size_t i, moved;

	if (!(items = calloc(n ? n : 1, sizeof(*items))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (i = 0; i < n; i++) {
		items[i].name = jobs[i].name;
		items[i].model = jobs[i].trained;
		items[i].base_version = jobs[i].version;
	}
	st = zm_zoo_store_trained(o->zoo_dir, items, n, &moved, err);
	if (moved < n)
		zm_error_suffix(err, " (re-run, or write updates with -o and "
		                "merge them)");
	for (i = 0; st == ZM_OK && !o->quiet && i < n; i++)
		fprintf(stderr, "%s: %s is now v%" PRId64 "\n", zm_cli_name(),
		        jobs[i].name, items[i].version);
	free(items);
	return st;
}

/*
 * Trains one job: brings the data to its model's classes and columns by
 * name, saying what was matched by position, then trains.
 */
static enum zm_status train_one(const struct train_step_opts *o,
                                struct zm_train_job *j, struct zm_trainset *ts,
                                struct reporter *rep, struct zm_error *err)
{
	struct zm_schema_note note;
	enum zm_status st;
	bool adopted, diverged;

	rep->model = j->name;
	if ((st = zm_train_conform(j, ts, o->data, &adopted, &note, err)))
		return st;
	/* A model trained before it recorded names was trained by
	 * position; say once that the data's names are now taken as its. */
	if (adopted && j->base->metrics && !o->quiet) {
		char names[512] = "";
		zm_names_list(&j->schema.classes, 12, names, sizeof(names));
		zm_cli_warn("warning: model '%s' v%" PRId64 " records no class "
		            "or column names (written before zoomerge kept "
		            "them): matched by position, recording the data's "
		            "classes (%s)", j->name, j->version,
		            j->schema.classes.known ? names : "none");
	}
	if (note.by_position && !o->quiet)
		zm_cli_warn("warning: %s: the data names no columns: matched "
		            "to model '%s' by position", o->data, j->name);
	if (note.extra_columns && o->progress)
		zm_cli_warn("%s: %zu column(s) model '%s' does not use, such as "
		            "'%s', ignored", o->data, note.extra_columns, j->name,
		            note.first_extra);
	st = zm_train_job_fit(j, ts, &o->fit, report, rep, &diverged, err);
	if (diverged)
		zm_error_prefix(err, "model '%s': training diverged (lower "
		                "--lr?): ", j->name);
	return st;
}

static int run(struct train_step_opts *o)
{
	struct zm_error err;
	struct zm_trainset ts;
	struct zm_assignment assignment;
	struct reporter rep = { o, "", false, { NULL, 0, 0, false } };
	struct zm_writer *w = NULL;
	struct zm_outfile logf;
	bool log_open = false;
	struct zm_doc update;
	struct zm_train_job *jobs = NULL;
	size_t n_jobs = 0, i;
	enum zm_status st;
	const char *out = o->out ? o->out : (o->apply ? NULL : "-");

	zm_error_clear(&err);
	zm_trainset_init(&ts, o->max_memory);
	zm_assignment_init(&assignment);
	zm_buf_init(&rep.log);
	zm_doc_init(&update);
	rep.progress = zm_cli_progress_wanted(o->progress, o->quiet);
	zm_gemm_setup(o->threads);

	if (o->assignment &&
	    (st = zm_assignment_load(o->assignment, &assignment, &err)))
		goto out;
	/* Open the output before the long work: a bad path fails at once. */
	if (out && (st = zm_writer_open(&w, out, o->compress, &err)) != ZM_OK)
		goto out;
	if ((st = zm_trainset_load(&ts, o->data, &err)) == ZM_OK &&
	    ts.rows < o->min_rows)
		st = zm_error_set(&err, ZM_ERR_DATA, "%s: %zu rows, fewer than "
		                  "--min-rows %" PRIu64, strcmp(o->data, "-") ?
		                  o->data : "<stdin>", ts.rows, o->min_rows);
	if (st != ZM_OK ||
	    (st = zm_trainset_split(&ts, o->val_fraction, o->fit.seed, &err))) {
		if (ts.over_limit)
			zm_error_suffix(&err, " (--max-memory)");
		goto out;
	}
	if ((st = zm_train_plan(o->assignment ? &assignment : NULL,
	                        o->assignment, o->model, o->slice, o->data,
	                        &ts, o->fit.step_scale, &jobs, &n_jobs,
	                        &err)) ||
	    (st = zm_train_load_bases(o->zoo_dir, jobs, n_jobs, &err)))
		goto out;
	for (i = 0; i < n_jobs; i++) {
		if ((st = train_one(o, &jobs[i], &ts, &rep, &err)))
			goto out;
		if (!w)
			continue;
		struct zm_update_info u = {
			.name = jobs[i].name, .slice = jobs[i].slice,
			.parent = jobs[i].version, .samples = ts.n_train,
			.weight = jobs[i].weight,
			.profile = &jobs[i].data_profile,
		};

		if ((st = zm_update_to_doc(jobs[i].trained, jobs[i].base, &u,
		                           &update, &err)) ||
		    (st = zm_writer_write_doc(w, &update, &err)))
			goto out;
	}
	if (rep.log.failed) {
		st = zm_error_set(&err, ZM_ERR_NOMEM, "out of memory");
		goto out;
	}
	/* Everything that a full disk or a failing one can stop happens
	 * before the zoo changes: the update stream and the log are written
	 * out and fsynced first.  The zoo changes last, in one commit; after
	 * it only the outputs' renames are left. */
	if (w && (st = zm_writer_prepare(w, &err)) != ZM_OK)
		goto out;
	if (o->log && ((st = zm_outfile_open(&logf, o->log, false, &err)) ||
	               (log_open = true,
	                st = zm_outfile_write(&logf, rep.log.data, rep.log.len,
	                                      &err)) ||
	               (st = zm_outfile_prepare(&logf, &err))))
		goto out;
	if (o->apply && (st = apply_to_zoo(o, jobs, n_jobs, &err)) != ZM_OK)
		goto out;
	if (w) {
		st = zm_writer_commit(w, &err);
		w = NULL;
	}
	if (st == ZM_OK && o->log) {
		log_open = false;
		st = zm_outfile_commit(&logf, &err);
	}
	if (st != ZM_OK && o->apply)
		zm_error_prefix(&err, "the models were applied to the zoo, but ");
out:
	if (log_open)
		zm_outfile_abort(&logf);
	zm_writer_abort(w);
	zm_doc_release(&update);
	zm_buf_release(&rep.log);
	zm_train_jobs_free(jobs, n_jobs);
	zm_assignment_release(&assignment);
	zm_trainset_release(&ts);
	return st == ZM_OK ? ZM_EXIT_OK : zm_cli_report(&err);
}

enum {
	OPT_MOMENTUM = 256, OPT_WD, OPT_SCHEDULE, OPT_STEP_SIZE, OPT_GAMMA,
	OPT_MIN_LR, OPT_STEP_SCALE, OPT_VAL, OPT_MAXMEM, OPT_LOG_EVERY,
	OPT_COMPRESS, OPT_THREADS, OPT_PROGRESS, OPT_QUIET, OPT_ASSIGNMENT,
	OPT_SLICE, OPT_MIN_ROWS,
};

static const struct option longopts[] = {
	{ "zoo", required_argument, NULL, 'z' },
	{ "model", required_argument, NULL, 'm' },
	{ "assignment", required_argument, NULL, OPT_ASSIGNMENT },
	{ "slice", required_argument, NULL, OPT_SLICE },
	{ "epochs", required_argument, NULL, 'e' },
	{ "batch-size", required_argument, NULL, 'b' },
	{ "lr", required_argument, NULL, 'l' },
	{ "optimizer", required_argument, NULL, 'O' },
	{ "seed", required_argument, NULL, 's' },
	{ "apply", no_argument, NULL, 'a' },
	{ "log", required_argument, NULL, 'L' },
	{ "output", required_argument, NULL, 'o' },
	{ "momentum", required_argument, NULL, OPT_MOMENTUM },
	{ "weight-decay", required_argument, NULL, OPT_WD },
	{ "schedule", required_argument, NULL, OPT_SCHEDULE },
	{ "step-size", required_argument, NULL, OPT_STEP_SIZE },
	{ "gamma", required_argument, NULL, OPT_GAMMA },
	{ "min-lr", required_argument, NULL, OPT_MIN_LR },
	{ "step-scale", required_argument, NULL, OPT_STEP_SCALE },
	{ "val-fraction", required_argument, NULL, OPT_VAL },
	{ "max-memory", required_argument, NULL, OPT_MAXMEM },
	{ "min-rows", required_argument, NULL, OPT_MIN_ROWS },
	{ "log-every", required_argument, NULL, OPT_LOG_EVERY },
	{ "compress", required_argument, NULL, OPT_COMPRESS },
	{ "threads", required_argument, NULL, OPT_THREADS },
	{ "progress", no_argument, NULL, OPT_PROGRESS },
	{ "quiet", no_argument, NULL, OPT_QUIET },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

/* One option of the table: false after a message on a bad argument. */
static bool parse_option(void *ctx, int c, const char *arg)
{
	struct train_step_opts *o = ctx;
	int64_t v;
	double d;

	switch (c) {
	case 'z': o->zoo_dir = arg; break;
	case 'm': o->model = arg; break;
	case 'a': o->apply = true; break;
	case 'L': o->log = arg; break;
	case 'o': o->out = arg; break;
	case OPT_PROGRESS: o->progress = true; break;
	case OPT_QUIET: o->quiet = true; break;
	case OPT_ASSIGNMENT: o->assignment = arg; break;
	case OPT_SLICE: o->slice = arg; break;
	case 'e':
		if (!strcmp(arg, "auto")) {
			o->fit.epochs = 0;
			break;
		}
		if (!zm_cli_int("--epochs", arg, 1, 100000, &v))
			return false;
		o->fit.epochs = (size_t)v;
		break;
	case 'b':
		if (!zm_cli_int("--batch-size", arg, 1, ZM_MODEL_BATCH_MAX,
		                &v))
			return false;
		o->fit.batch_size = (size_t)v;
		break;
	case 'l':
		if (!zm_cli_double("--lr", arg, 1e-12, 1e3, &o->opt.lr))
			return false;
		break;
	case 'O':
		if (!zm_optim_kind_parse(arg, &o->opt.kind)) {
			zm_cli_warn("--optimizer: expected sgd or adam, got "
			            "'%s'", arg);
			return false;
		}
		break;
	case 's':
		if (!zm_cli_int("--seed", arg, 0, INT64_MAX, &v))
			return false;
		o->fit.seed = (uint64_t)v;
		break;
	case OPT_MOMENTUM:
		if (!zm_cli_double("--momentum", arg, 0, 0.9999,
		                   &o->opt.momentum))
			return false;
		break;
	case OPT_WD:
		if (!zm_cli_double("--weight-decay", arg, 0, 10, &o->opt.wd))
			return false;
		break;
	case OPT_SCHEDULE:
		if (!zm_lr_schedule_parse(arg, &o->opt.schedule)) {
			zm_cli_warn("--schedule: expected constant, step or "
			            "cosine, got '%s'", arg);
			return false;
		}
		break;
	case OPT_STEP_SIZE:
		if (!zm_cli_int("--step-size", arg, 1, INT64_MAX,
		                &o->opt.step_size))
			return false;
		break;
	case OPT_GAMMA:
		if (!zm_cli_double("--gamma", arg, 1e-9, 1, &o->opt.gamma))
			return false;
		break;
	case OPT_MIN_LR:
		if (!zm_cli_double("--min-lr", arg, 0, 1e3, &o->opt.min_lr))
			return false;
		break;
	case OPT_STEP_SCALE:
		if (!zm_cli_double("--step-scale", arg, 0, 1e3, &d))
			return false;
		o->fit.step_scale = (float)d;
		break;
	case OPT_VAL:
		if (!zm_cli_double("--val-fraction", arg, 0, 0.9,
		                   &o->val_fraction))
			return false;
		break;
	case OPT_MAXMEM:
		if (!zm_cli_int("--max-memory", arg, 1, INT64_C(1) << 30,
		                &v))
			return false;
		o->max_memory = (uint64_t)v << 20;
		break;
	case OPT_MIN_ROWS:
		if (!zm_cli_int("--min-rows", arg, 1, INT64_MAX, &v))
			return false;
		o->min_rows = (uint64_t)v;
		break;
	case OPT_LOG_EVERY:
		if (!zm_cli_int("--log-every", arg, 0, INT64_MAX, &v))
			return false;
		o->fit.log_every = (size_t)v;
		break;
	case OPT_COMPRESS:
		if (!zm_cli_int("--compress", arg, 0, 9, &v))
			return false;
		o->compress = (int)v;
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

/* The options together, and the optimizer they configure: false after
 * a message naming the conflict. */
static bool validate(struct train_step_opts *o)
{
	if (!o->zoo_dir || !o->model == !o->assignment) {
		zm_cli_warn("--zoo and either --model or --assignment are "
		            "required");
		return false;
	}
	if (o->slice && !o->assignment) {
		zm_cli_warn("--slice needs --assignment");
		return false;
	}
	zm_optim_config_default(&o->fit.optim, o->opt.kind);
	if (o->opt.lr > 0)
		o->fit.optim.lr = o->opt.lr;
	if (o->opt.momentum >= 0)
		o->fit.optim.momentum = o->opt.momentum;
	o->fit.optim.weight_decay = o->opt.wd;
	o->fit.optim.schedule = o->opt.schedule;
	o->fit.optim.gamma = o->opt.gamma;
	o->fit.optim.min_lr = o->opt.min_lr;
	o->fit.optim.step_size = (uint64_t)o->opt.step_size;
	if (o->opt.schedule == ZM_LR_STEP && o->opt.step_size == 0) {
		zm_cli_warn("--schedule step needs --step-size");
		return false;
	}
	return true;
}

int main(int argc, char **argv)
{
	struct train_step_opts o;
	int status;

	memset(&o, 0, sizeof(o));
	zm_fit_config_default(&o.fit);
	o.data = "-";
	o.val_fraction = 0.1;
	o.max_memory = (uint64_t)8 << 30;
	o.min_rows = 1;
	o.compress = ZM_COMPRESS_AUTO;
	o.opt.kind = ZM_OPTIM_SGD;
	o.opt.momentum = -1;
	o.opt.gamma = 0.1;
	o.opt.lr = -1;
	o.opt.schedule = ZM_LR_CONSTANT;
	zm_cli_init(argv[0]);
	zm_cli_options(options_str);
	if (!zm_compress_from_env(&o.compress))
		return zm_cli_usage_error(usage_str, "ZM_COMPRESS: expected 0..9");
	status = zm_cli_getopt(argc, argv, "z:m:e:b:l:O:s:aL:o:h", longopts,
	                       usage_str, parse_option, &o, &o.data);
	if (status >= 0)
		return status;
	if (!validate(&o))
		return zm_cli_usage_error(usage_str, NULL);
	return zm_cli_close_stdout(run(&o));
}
