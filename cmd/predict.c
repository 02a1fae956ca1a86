/*
 * predict: the inference phase.  Reads inputs -- a zoomerge data stream
 * (default), a CSV file or IDX files -- one batch at a time, runs them
 * through a zoo model (or a model file), and writes one prediction per row:
 * CSV (id,pred,p_0,...,p_{C-1} for classification, id,y_0,... for
 * regression) or a data stream.  With --metrics it also writes the rows
 * seen and, when the inputs carry labels, accuracy and mean loss as YAML.
 *
 * With several models (several --model, or a whole --zoo) it is the
 * dynamic inference of DESIGN.md section 5: per batch, the weighting
 * function (similarity to each model's profile, a router model through an
 * assignment, uniform or static weights, Hedge scores from feedback,
 * top-k under a latency budget) gives each model a weight per unit of the
 * granularity, and the models are merged layer by layer (outputs), by
 * parameters (params) or at their outputs (ensemble).  --trace writes the
 * weights of every batch, --state keeps the Hedge scores between runs.
 *
 * Without weighting flags it routes (route.h): each row's posterior over
 * the models' data (density weighting: the PPCA of each model's profile)
 * sends it to one model when sure, mixes the models' outputs when not,
 * and falls back to uniform weights when the models' data cannot be told
 * apart.  --explain says what was chosen and why.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "clock.h"
#include "datain.h"
#include "dataset.h"
#include "constants.h"
#include "fileio.h"
#include "gemm.h"
#include "granularity.h"
#include "lineage.h"
#include "model.h"
#include "predict.h"
#include "predsetup.h"
#include "schema.h"
#include "stream.h"
#include "weighting.h"

static const char usage_str[] =
	"usage: predict (--zoo DIR [--model NAME]... | --model-file FILE...)\n"
	"               [--granularity full|group|layer|auto]\n"
	"               [--granularity-from FILE] [--granularity-rules FILE]\n"
	"               [--weighting density|similarity|router|uniform|static|\n"
	"                            router+similarity]\n"
	"               [--router NAME] [--assignment FILE] [--weights FILE]\n"
	"               [--metric cosine|kl|mahalanobis] [--per row|batch]\n"
	"               [--top-k K] [--temperature T] [--latency-budget-ms MS]\n"
	"               [--merge route|outputs|params|ensemble] [--threshold P]\n"
	"               [--route-mix auto|final|layers]\n"
	"               [--merge-point pre|post] [--explain]\n"
	"               [--prior metrics] [--feedback] [--eta ETA] [--share ALPHA]\n"
	"               [--probe P] [--state FILE]\n"
	"               [--adapt entropy] [--adapt-steps N] [--adapt-reg R]\n"
	"               [--adapt-trust D] [--trace FILE]\n"
	"               [--batch-size N] [--threads N] [--metrics FILE]\n"
	"               [--output csv|stream] [--compress LEVEL] [-o OUT]\n"
	"               [--from stream|csv|idx] [--label COLUMN]\n"
	"               [--images IDX [--labels IDX]] [--min-rows N] [--quiet|--progress]\n"
	"               [FILE]\n"
	"       predict -h | --help | --version\n";

/* --help: every option with its default in brackets. */
static const char options_str[] =
	"\n"
	"Predicts with one model or a weighted merge of several, row by row.\n"
	"\n"
	"      --zoo DIR                 the model zoo [required, or --model-file]\n"
	"      --model NAME              a zoo model; repeatable [all of the zoo]\n"
	"      --model-file FILE         a model file instead of a zoo; repeatable\n"
	"                                [none]\n"
	"      --granularity LEVEL       full, group, layer, or auto: per batch\n"
	"                                from the input and the machine [full]\n"
	"      --granularity-from FILE   the level of a granctl decision; with\n"
	"                                auto, its prior [none]\n"
	"      --granularity-rules FILE  auto: rules evaluated per batch [none]\n"
	"      --weighting KIND          density, similarity, router,\n"
	"                                router+similarity, uniform or static\n"
	"                                [density; similarity with --metric;\n"
	"                                static with --weights]\n"
	"      --router NAME             the zoo model that tells slices apart [none]\n"
	"      --assignment FILE         the assignment of slices to models [none]\n"
	"      --weights FILE            static weights [none]\n"
	"      --metric KIND             cosine, kl or mahalanobis [kl]\n"
	"      --per row|batch           weights per row or per batch [density:\n"
	"                                per row where rows disagree; else batch]\n"
	"      --top-k K                 models per unit and row [0: all]\n"
	"      --temperature T           divides the similarities or log densities\n"
	"                                [density: the zoo's calibration, else\n"
	"                                features/8; 1 otherwise]\n"
	"      --latency-budget-ms MS    time a batch may take [none]\n"
	"      --merge HOW               route, outputs, params or ensemble\n"
	"                                [route for density and router weighting\n"
	"                                at full granularity; outputs otherwise]\n"
	"      --threshold P             a row whose top weight reaches P is\n"
	"                                computed by that model alone [0.99]\n"
	"      --route-mix HOW           how route mixes the rows no model is sure\n"
	"                                of: final outputs or layers [auto: final]\n"
	"      --explain                 say what was chosen and why [off]\n"
	"      --merge-point pre|post    mix before or after the activation [pre]\n"
	"      --prior metrics           add log zoo accuracy to the logits [off]\n"
	"      --feedback                Hedge scores from labelled batches [off]\n"
	"      --eta ETA                 Hedge learning rate [0.5]\n"
	"      --share ALPHA             fixed share [0.1]\n"
	"      --probe P                 share moved to a model to score it [0.1]\n"
	"      --state FILE              keep the Hedge scores (auto: the costs of\n"
	"                                each level) between runs [none]\n"
	"      --adapt entropy           entropy adaptation [off]\n"
	"      --adapt-steps N           descent steps [3]\n"
	"      --adapt-reg R             penalty toward the weights [0.1]\n"
	"      --adapt-trust D           largest change in a step [0.5]\n"
	"      --trace FILE              the weights of every batch [none]\n"
	"      --batch-size N            rows per forward pass [1024]\n"
	"      --threads N               BLIS threads [BLIS_NUM_THREADS, else 1]\n"
	"      --metrics FILE            accuracy and loss as YAML [none]\n"
	"      --output csv|stream       the output format [csv]\n"
	"      --compress LEVEL          gzip level 0..9 [ZM_COMPRESS, else per payload]\n"
	"  -o OUT                        where the predictions go [standard output]\n"
	"      --from stream|csv|idx     the input format [stream]\n"
	"      --label COLUMN            CSV label column, name or index [none]\n"
	"      --images IDX              IDX images for --from idx [none]\n"
	"      --labels IDX              IDX labels for --from idx [none]\n"
	"      --min-rows N              fewer input rows is an error [0]\n"
	"      --quiet, --progress       rows done on standard error\n"
	"                                [only when it is a terminal]\n"
	"  -h, --help                    print this help and exit\n"
	"      --version                 print the version and exit\n";

#define MAX_MODELS ZM_PREDSETUP_MAX_MODELS

struct predict_opts {
	struct zm_predsetup_options set;  /* what the library sets up */
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
	const char *trace;
	uint64_t min_rows;          /* --min-rows: fewer is an error */
	bool explain;
};

enum {
	OPT_GRAN = 1000, OPT_WEIGHTING, OPT_ROUTER, OPT_ASSIGNMENT, OPT_PER,
	OPT_TOPK, OPT_TEMP, OPT_MERGE, OPT_POINT, OPT_STATE, OPT_GRAN_FROM,
	OPT_WEIGHTS, OPT_ADAPT, OPT_TRACE, OPT_FEEDBACK, OPT_METRIC,
	OPT_BUDGET, OPT_ETA, OPT_PRIOR, OPT_ADAPT_STEPS, OPT_SHARE, OPT_PROBE,
	OPT_ADAPT_REG, OPT_ADAPT_TRUST, OPT_MIN_ROWS, OPT_THRESHOLD,
	OPT_EXPLAIN, OPT_GRAN_RULES, OPT_ROUTE_MIX
};

/* What the setup decided on its own: a layer merge of unrelated models
 * always, the rest when the user chose the level or asked. */
static void say_notes(const struct predict_opts *o,
                      const struct zm_predsetup *s)
{
	const struct zm_predsetup_note *n;
	size_t i;

	for (i = 0; i < s->n_notes; i++) {
		n = &s->notes[i];
		switch (n->kind) {
		case ZM_PREDSETUP_UNRELATED_KEPT:
			zm_cli_warn("models '%s' and '%s' are unrelated (%s): "
			            "merging their layers mixes units that do not "
			            "correspond; going ahead as --merge %s asks",
			            n->a, n->b, zm_lineage_basis_name(n->basis),
			            zm_merge_mode_name(n->merge));
			break;
		case ZM_PREDSETUP_UNRELATED_MIXED:
			if (o->explain || o->set.level_set || o->set.gran_from)
				zm_cli_warn("models '%s' and '%s' are unrelated "
				            "(%s): their final outputs are mixed "
				            "(--merge %s) instead of their layers",
				            n->a, n->b,
				            zm_lineage_basis_name(n->basis),
				            zm_merge_mode_name(n->merge));
			break;
		case ZM_PREDSETUP_AUTO_FULL_ONLY:
			if (o->explain)
				zm_cli_warn("granularity auto: models '%s' and "
				            "'%s' are unrelated (%s): the full "
				            "level only", n->a, n->b,
				            zm_lineage_basis_name(n->basis));
			break;
		case ZM_PREDSETUP_AUTO_NO_LEVEL:
			if (o->explain)
				zm_cli_warn("granularity auto: no %s level: %s",
				            zm_gran_level_name(n->level), n->msg);
			break;
		case ZM_PREDSETUP_AUTO_SAME_WEIGHTS:
			if (o->explain)
				zm_cli_warn("granularity auto: %s weighting gives "
				            "every unit the same weights: the full "
				            "level only",
				            zm_weighting_name(s->po.w.kind));
			break;
		}
	}
}

/* One input document brought to the models' schema; says once when they
 * name no classes or columns (position matching) and, with --progress,
 * which columns they ignore. */
static enum zm_status conform(const struct predict_opts *o,
                              struct zm_predsetup *s, struct zm_doc *doc,
                              const char *where, struct zm_schema_note *note,
                              bool *warned, struct zm_error *err)
{
	size_t extra = note->extra_columns;
	enum zm_status st;

	if ((st = zm_predsetup_conform(s, doc, where, note, err)))
		return st;
	if (note->by_position && !*warned && !o->quiet) {
		zm_cli_warn("warning: %s records no class or column names "
		            "(written before zoomerge kept them): the input is "
		            "matched by position", s->what);
		*warned = true;
	}
	if (note->extra_columns && !extra && o->progress)
		zm_cli_warn("%s: %zu column(s) %s does not use, such as '%s', "
		            "ignored", where, note->extra_columns, s->what,
		            note->first_extra);
	return ZM_OK;
}

/* --explain: what the weighting (and auto) chose and why, on stderr when
 * the predictions go to stdout. */
static enum zm_status explain(const struct predict_opts *o,
                              const struct zm_predsetup *s,
                              struct zm_error *err)
{
	bool to_err = !o->output || strcmp(o->output, "-") == 0;
	struct zm_buf b;

	zm_buf_init(&b);
	zm_predsetup_explain(s, &b);
	if (b.failed) {
		zm_buf_release(&b);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	fputs(b.len ? b.data : "", to_err ? stderr : stdout);
	zm_buf_release(&b);
	return ZM_OK;
}

/* The input, and its name for messages. */
static enum zm_status open_input(const struct predict_opts *o,
                                 struct zm_dataset_reader **r,
                                 const char **name, struct zm_error *err)
{
	struct zm_dataset_options d;

	zm_dataset_options_init(&d);
	d.kind = o->from;
	d.path = o->input;
	d.images = o->images;
	d.labels = o->labels;
	d.label = o->label;
	d.batch = o->set.batch;
	*name = o->from == ZM_DATASET_IDX ? o->images
	        : !o->input || strcmp(o->input, "-") == 0 ? "<stdin>"
	        : o->input;
	return zm_dataset_open(r, &d, err);
}

static int run(const struct predict_opts *o)
{
	struct zm_error err;
	struct zm_predsetup s;
	struct zm_predictor *pred;
	struct zm_dataset_reader *r = NULL;
	struct zm_pred_writer *w = NULL;
	struct zm_pred_metrics metrics;
	struct zm_outfile trace;
	struct zm_schema_note note;
	bool trace_open = false, warned = false;
	struct zm_doc doc;
	enum zm_status st;
	const char *in_name;
	char where[ZM_WHERE_MAX];
	uint64_t row = 0;
	size_t docno = 0;
	bool eof = false, progress;
	double last = 0;

	zm_error_clear(&err);
	zm_doc_init(&doc);
	zm_predsetup_init(&s);
	memset(&note, 0, sizeof(note));
	memset(&trace, 0, sizeof(trace));
	zm_gemm_setup(o->threads);
	progress = zm_cli_progress_wanted(o->progress, o->quiet);
	st = zm_predsetup_open(&s, &o->set, &err);
	say_notes(o, &s);
	if (st != ZM_OK)
		goto out;
	pred = s.pred;
	zm_pred_metrics_init(&metrics, pred->loss, pred->out_features);

	if ((st = open_input(o, &r, &in_name, &err)))
		goto out;
	if (o->trace) {
		if ((st = zm_outfile_open(&trace, o->trace, false, &err)))
			goto out;
		trace_open = true;
		if ((st = zm_predsetup_trace_header(&s, &trace, &err)))
			goto out;
		pred->trace = &trace;
	}
	st = zm_pred_writer_open(&w, o->output, o->format, pred->loss,
	                         pred->out_features, o->compress, s.model_name,
	                         pred->loss == ZM_LOSS_CROSS_ENTROPY ?
	                         &s.schema.classes : NULL, &err);
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
		st = conform(o, &s, &doc, where, &note, &warned, &err);
		if (st != ZM_OK)
			break;
		st = zm_predict_doc(pred, &doc, where, &row, w, &metrics, &err);
		if (st != ZM_OK)
			break;
		if (progress && zm_clock_seconds() - last >= 0.5) {
			last = zm_clock_seconds();
			fprintf(stderr, "\r%s: %" PRIu64 " rows", zm_cli_name(),
			        row);
		}
	}
	if (progress)
		fprintf(stderr, "\r%s: %" PRIu64 " rows%s\n", zm_cli_name(), row,
		        st == ZM_OK ? "" : " (failed)");
	/* An empty input is not an error by itself (a quiet night); a cron
	 * job that expects data says how much with --min-rows. */
	if (st == ZM_OK && row < o->min_rows)
		st = zm_error_set(&err, ZM_ERR_DATA, "%s: %" PRIu64 " rows, "
		                  "fewer than --min-rows %" PRIu64, in_name, row,
		                  o->min_rows);
	if (st != ZM_OK)
		goto out;
	if (o->metrics && (st = zm_pred_metrics_write(&metrics, s.model_name,
	                                              o->metrics, &err)))
		goto out;
	if (o->explain && (st = explain(o, &s, &err)))
		goto out;
	if (trace_open) {
		trace_open = false;
		if ((st = zm_outfile_commit(&trace, &err)))
			goto out;
	}
	if ((st = zm_predsetup_save_state(&s, o->set.state, &err)))
		goto out;
	st = zm_pred_writer_commit(w, &err);
	w = NULL;
out:
	if (trace_open)
		zm_outfile_abort(&trace);
	zm_pred_writer_abort(w);
	zm_doc_release(&doc);
	zm_dataset_close(r);
	zm_predsetup_release(&s);
	return st == ZM_OK ? ZM_EXIT_OK : zm_cli_report(&err);
}
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
	{ "granularity", required_argument, NULL, OPT_GRAN },
	{ "threshold", required_argument, NULL, OPT_THRESHOLD },
	{ "route-mix", required_argument, NULL, OPT_ROUTE_MIX },
	{ "explain", no_argument, NULL, OPT_EXPLAIN },
	{ "weighting", required_argument, NULL, OPT_WEIGHTING },
	{ "router", required_argument, NULL, OPT_ROUTER },
	{ "assignment", required_argument, NULL, OPT_ASSIGNMENT },
	{ "per", required_argument, NULL, OPT_PER },
	{ "top-k", required_argument, NULL, OPT_TOPK },
	{ "temperature", required_argument, NULL, OPT_TEMP },
	{ "merge", required_argument, NULL, OPT_MERGE },
	{ "merge-point", required_argument, NULL, OPT_POINT },
	{ "state", required_argument, NULL, OPT_STATE },
	{ "granularity-from", required_argument, NULL, OPT_GRAN_FROM },
	{ "granularity-rules", required_argument, NULL, OPT_GRAN_RULES },
	{ "weights", required_argument, NULL, OPT_WEIGHTS },
	{ "adapt", required_argument, NULL, OPT_ADAPT },
	{ "adapt-steps", required_argument, NULL, OPT_ADAPT_STEPS },
	{ "trace", required_argument, NULL, OPT_TRACE },
	{ "feedback", no_argument, NULL, OPT_FEEDBACK },
	{ "metric", required_argument, NULL, OPT_METRIC },
	{ "latency-budget-ms", required_argument, NULL, OPT_BUDGET },
	{ "eta", required_argument, NULL, OPT_ETA },
	{ "share", required_argument, NULL, OPT_SHARE },
	{ "probe", required_argument, NULL, OPT_PROBE },
	{ "adapt-reg", required_argument, NULL, OPT_ADAPT_REG },
	{ "adapt-trust", required_argument, NULL, OPT_ADAPT_TRUST },
	{ "prior", required_argument, NULL, OPT_PRIOR },
	{ "min-rows", required_argument, NULL, OPT_MIN_ROWS },
	{ NULL, 0, NULL, 0 },
};

/* The options that take a real number: name, range and place. */
#define REAL(c, name, lo, hi, field) \
	{ c, name, lo, hi, offsetof(struct predict_opts, set.p.field) }
static const struct real_option {
	int c;
	const char *name;
	double lo, hi;
	size_t off;
} reals[] = {
	REAL(OPT_THRESHOLD, "--threshold", 0, 1, threshold),
	REAL(OPT_TEMP, "--temperature", 1e-12, 1e12, w.temperature),
	REAL(OPT_BUDGET, "--latency-budget-ms", 0, 1e9, w.latency_budget_ms),
	REAL(OPT_ETA, "--eta", 0, 1e6, eta),
	REAL(OPT_SHARE, "--share", 0, 0.999, share),
	REAL(OPT_PROBE, "--probe", 1e-6, 1, probe),
	REAL(OPT_ADAPT_REG, "--adapt-reg", 0, 1e6, adapt_o.reg),
	REAL(OPT_ADAPT_TRUST, "--adapt-trust", 1e-6, 100, adapt_o.max_step),
};

/* The options of dynamic inference (weighting, merging, adaptation). */
static bool parse_dynamic_option(struct predict_opts *o, int c,
                                 const char *arg)
{
	int64_t v;
	double dv;
	size_t i;

	for (i = 0; i < sizeof(reals) / sizeof(reals[0]); i++) {
		if (reals[i].c != c)
			continue;
		if (!zm_cli_double(reals[i].name, arg, reals[i].lo, reals[i].hi,
		                   &dv))
			return false;
		memcpy((char *)o + reals[i].off, &dv, sizeof(dv));
		o->set.temperature_set |= c == OPT_TEMP;
		return true;
	}
	switch (c) {
	case OPT_GRAN:
		o->set.gran_auto = strcmp(arg, "auto") == 0;
		if (o->set.gran_auto) {
			o->set.p.w.level = ZM_GRAN_FULL;
			o->set.level_set = false;
			break;
		}
		if (!zm_gran_level_parse(arg, &o->set.p.w.level)) {
			zm_cli_warn("--granularity: expected full, group, layer "
			            "or auto, got '%s'", arg);
			return false;
		}
		o->set.level_set = true;
		break;
	case OPT_GRAN_FROM: o->set.gran_from = arg; break;
	case OPT_GRAN_RULES: o->set.gran_rules = arg; break;
	case OPT_WEIGHTING:
		if (!zm_weighting_parse(arg, &o->set.p.w.kind)) {
			zm_cli_warn("--weighting: expected density, similarity, "
			            "router, uniform, static or "
			            "router+similarity, got '%s'", arg);
			return false;
		}
		o->set.weighting_set = true;
		break;
	case OPT_ROUTER: o->set.router = arg; break;
	case OPT_ASSIGNMENT: o->set.assignment = arg; break;
	case OPT_WEIGHTS: o->set.weights = arg; break;
	case OPT_STATE: o->set.state = arg; break;
	case OPT_TRACE: o->trace = arg; break;
	case OPT_FEEDBACK: o->set.p.feedback = true; break;
	case OPT_ROUTE_MIX:
		if (!zm_route_mix_parse(arg, &o->set.p.route_mix)) {
			zm_cli_warn("--route-mix: expected auto, final or layers, "
			            "got '%s'", arg);
			return false;
		}
		break;
	case OPT_EXPLAIN: o->explain = true; break;
	case OPT_PER:
		o->set.per_set = true;
		if (strcmp(arg, "row") == 0)
			o->set.p.w.per_row = true;
		else if (strcmp(arg, "batch") == 0)
			o->set.p.w.per_row = false;
		else {
			zm_cli_warn("--per: expected row or batch, got '%s'",
			            arg);
			return false;
		}
		break;
	case OPT_TOPK:
		if (!zm_cli_int("--top-k", arg, 0, MAX_MODELS, &v))
			return false;
		o->set.p.w.top_k = (size_t)v;
		break;
	case OPT_METRIC:
		o->set.metric_set = true;
		if (!zm_metric_parse(arg, &o->set.p.w.metric)) {
			zm_cli_warn("--metric: expected cosine, kl or "
			            "mahalanobis, got '%s'", arg);
			return false;
		}
		break;
	case OPT_MERGE:
		o->set.merge_set = true;
		if (!zm_merge_mode_parse(arg, &o->set.p.merge)) {
			zm_cli_warn("--merge: expected route, outputs, params "
			            "or ensemble, got '%s'", arg);
			return false;
		}
		break;
	case OPT_POINT:
		if (!zm_merge_point_parse(arg, &o->set.p.point)) {
			zm_cli_warn("--merge-point: expected pre or post, got "
			            "'%s'", arg);
			return false;
		}
		break;
	case OPT_ADAPT:
		if (strcmp(arg, "entropy") != 0) {
			zm_cli_warn("--adapt: expected entropy, got '%s'",
			            arg);
			return false;
		}
		o->set.p.adapt = true;
		break;
	case OPT_ADAPT_STEPS:
		if (!zm_cli_int("--adapt-steps", arg, 1, 100, &v))
			return false;
		o->set.p.adapt_o.steps = (size_t)v;
		break;
	case OPT_PRIOR:
		if (strcmp(arg, "metrics") != 0) {
			zm_cli_warn("--prior: expected metrics, got '%s'",
			            arg);
			return false;
		}
		o->set.p.use_metrics = true;
		break;
	default:
		return false;
	}
	return true;
}

/* One option of the table: false after a message on a bad argument. */
static bool parse_option(void *ctx, int c, const char *arg)
{
	struct predict_opts *o = ctx;
	int64_t v;

	switch (c) {
	case 'z': o->set.zoo_dir = arg; break;
	case 'm':
		if (o->set.n_models == MAX_MODELS) {
			zm_cli_warn("--model: at most %d", MAX_MODELS);
			return false;
		}
		o->set.model[o->set.n_models++] = arg;
		break;
	case 'M':
		if (o->set.n_files == MAX_MODELS) {
			zm_cli_warn("--model-file: at most %d", MAX_MODELS);
			return false;
		}
		o->set.model_file[o->set.n_files++] = arg;
		break;
	case 'x': o->metrics = arg; break;
	case 'o': o->output = arg; break;
	case 'l': o->label = arg; break;
	case 'i': o->images = arg; break;
	case 'L': o->labels = arg; break;
	case 'q': o->quiet = true; break;
	case 'P': o->progress = true; break;
	case 'b':
		if (!zm_cli_int("--batch-size", arg, 1,
		                ZM_MODEL_BATCH_MAX, &v))
			return false;
		o->set.batch = (size_t)v;
		break;
	case 'j':
		if (!zm_cli_int("--threads", arg, 1, 1024, &v))
			return false;
		o->threads = (int)v;
		break;
	case OPT_MIN_ROWS:
		if (!zm_cli_int("--min-rows", arg, 0, INT64_MAX, &v))
			return false;
		o->min_rows = (uint64_t)v;
		break;
	case 'c':
		if (!zm_cli_int("--compress", arg, 0, 9, &v))
			return false;
		o->compress = (int)v;
		break;
	case 'O':
		if (!zm_pred_format_parse(arg, &o->format)) {
			zm_cli_warn("--output: expected csv or stream, got '%s'",
			            arg);
			return false;
		}
		break;
	case 'f':
		if (!zm_cli_data_from(arg, true, &o->from))
			return false;
		break;
	default:
		return c >= OPT_GRAN && parse_dynamic_option(o, c, arg);
	}
	return true;
}

/* The options together: false after a message naming the conflict. */
static bool validate(struct predict_opts *o)
{
	if (o->set.n_files) {
		if (o->set.zoo_dir || o->set.n_models || o->set.router) {
			zm_cli_warn("--model-file takes no --zoo, --model or "
			            "--router");
			return false;
		}
	} else if (!o->set.zoo_dir) {
		zm_cli_warn("--zoo (or --model-file) is required");
		return false;
	}
	if (o->set.level_set && o->set.gran_from) {
		zm_cli_warn("--granularity and --granularity-from exclude each "
		            "other (but for --granularity auto, whose prior it "
		            "is)");
		return false;
	}
	if (o->set.gran_rules && !o->set.gran_auto) {
		zm_cli_warn("--granularity-rules is for --granularity auto");
		return false;
	}
	if (o->set.gran_auto && o->set.p.feedback) {
		zm_cli_warn("--granularity auto does not take --feedback yet "
		            "(the Hedge scores would split between the levels)");
		return false;
	}
	zm_predsetup_defaults(&o->set);
	if (o->set.p.w.kind == ZM_WEIGHTING_STATIC && !o->set.weights) {
		zm_cli_warn("--weighting static needs --weights FILE");
		return false;
	}
	if ((o->set.p.w.kind == ZM_WEIGHTING_ROUTER ||
	     o->set.p.w.kind == ZM_WEIGHTING_ROUTER_SIMILARITY) &&
	    (!o->set.router || !o->set.assignment)) {
		zm_cli_warn("--weighting %s needs --router NAME and --assignment "
		            "FILE", zm_weighting_name(o->set.p.w.kind));
		return false;
	}
	if (o->set.state && !o->set.p.feedback && !o->set.gran_auto) {
		zm_cli_warn("--state keeps the scores of --feedback (or the "
		            "costs of --granularity auto); add --feedback");
		return false;
	}
	if (!zm_cli_data_check(o->from, o->images, o->labels, o->label,
	                       o->input != NULL))
		return false;
	return true;
}

int main(int argc, char **argv)
{
	struct predict_opts o = {
		.set.batch = ZM_PREDICT_BATCH_DEFAULT,
		.format = ZM_PRED_CSV,
		.compress = ZM_COMPRESS_AUTO,
		.output = "-",
		.from = ZM_DATASET_STREAM,
	};
	int status;

	zm_cli_init(argv[0]);
	zm_cli_options(options_str);
	zm_predict_options_init(&o.set.p);
	o.set.p.w.kind = ZM_WEIGHTING_SIMILARITY;
	if (!zm_compress_from_env(&o.compress)) {
		zm_cli_warn("ZM_COMPRESS: expected a level from 0 to 9");
		return zm_cli_usage_error(usage_str, NULL);
	}
	status = zm_cli_getopt(argc, argv, "o:qh", longopts, usage_str,
	                       parse_option, &o, &o.input);
	if (status >= 0)
		return status;
	if (!validate(&o))
		return zm_cli_usage_error(usage_str, NULL);
	return zm_cli_close_stdout(run(&o));
}
