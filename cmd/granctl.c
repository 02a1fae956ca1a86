/*
 * granctl: the granularity controller.  Reads the zoo, train-step update
 * streams (--updates), train-step logs (--log), a data sample (--data) and,
 * with --measure, the cost of running predict at each level; computes the
 * metrics of granctl.h and writes a granularity decision (level, shared
 * units, reasons) as YAML for merge --granularity-from and predict
 * --granularity-from, chosen by the rules of --rules or by the automatic
 * policy.  --explain prints the metrics and the decision as a table.
 */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "granctl.h"
#include "granularity.h"

static const char usage_str[] =
	"usage: granctl --zoo DIR [--rules RULES.yaml] [--updates FILE]... [--log FILE]...\n"
	"               [--explain] [--data FILE] [--measure] [--latency-budget-ms MS]\n"
	"               [--memory-budget MIB] [--metric cosine|kl|mahalanobis]\n"
	"               [--share-threshold A] [--drift-threshold D] [--default-level LEVEL]\n"
	"               [--window N] [--model NAME]... [--predict PROGRAM] [-o FILE]\n"
	"       granctl -h | --help | --version\n";

/* --help: every option with its default in brackets. */
static const char options_str[] =
	"\n"
	"Decides the merge granularity (full, group or layer) and what is shared.\n"
	"\n"
	"      --zoo DIR                 the model zoo [required]\n"
	"      --rules FILE              granularity rules (YAML) [built in]\n"
	"      --updates FILE            a train-step update stream; repeatable [none]\n"
	"      --log FILE                a train-step --log file; repeatable [none]\n"
	"      --explain                 print the metrics and units as a table [off]\n"
	"      --data FILE               data sample for drift, --measure [none]\n"
	"      --measure                 measure predict at every level on --data [off]\n"
	"      --latency-budget-ms MS    budget of the chosen level [none]\n"
	"      --memory-budget MIB       budget of the chosen level [none]\n"
	"      --metric KIND             cosine, kl or mahalanobis [cosine]\n"
	"      --share-threshold A       agreement from which a unit is shared [0.5]\n"
	"      --drift-threshold D       drift that goes to the layer level\n"
	"                                [0.1 cosine, 1 kl, 0.5 mahalanobis]\n"
	"      --default-level LEVEL     the level without evidence [group]\n"
	"      --window N                log points of the loss slope [20]\n"
	"      --model NAME              consider this zoo model; repeatable\n"
	"                                [the updates' models, else all]\n"
	"      --predict PROGRAM         predict program for --measure\n"
	"                                [predict beside granctl, else from PATH]\n"
	"  -o, --output FILE             where the decision goes [standard output]\n"
	"  -h, --help                    print this help and exit\n"
	"      --version                 print the version and exit\n";

/* The most rows of --data that enter its profile and the measured run. */
#define DATA_MAX_ROWS 65536

struct granctl_opts {
	const char *zoo_dir;
	const char *rules;
	const char **updates, **logs, **models;
	size_t n_updates, n_logs, n_models;
	const char *data;
	const char *predict;        /* NULL: next to granctl, else PATH */
	const char *output;         /* "-" */
	bool explain, measure;
	struct zm_gc_opts gc;
};

/* --measure: predict's cost at each level on --data. */
static enum zm_status measure(const struct granctl_opts *o,
                              struct zm_gc_inputs *in, struct zm_error *err)
{
	char prog[PATH_MAX], beside[PATH_MAX];
	const char *predict;
	enum zm_status st;

	beside[0] = '\0';
	predict = o->predict ? o->predict
	                     : zm_gc_predict_program("granctl", prog,
	                                             sizeof(prog), beside,
	                                             sizeof(beside));
	if (*beside)
		zm_cli_warn("--measure: no %s beside granctl; running %s from "
		            "PATH", beside, predict);
	st = zm_gc_measure(in, predict, o->zoo_dir, o->data, err);
	if (st != ZM_OK && *beside)
		zm_error_suffix(err, " (there is no %.300s beside granctl; "
		                "give --predict PROGRAM)", beside);
	if (st != ZM_OK)
		zm_error_prefix(err, "--measure ");
	return st;
}

static int run(const struct granctl_opts *o)
{
	struct zm_gc_inputs in;
	struct zm_gc_rules rules;
	struct zm_gc_analysis a;
	struct zm_gran_decision d;
	struct zm_error err;
	struct zm_buf b;
	enum zm_status st;
	size_t i;

	zm_error_clear(&err);
	zm_gc_inputs_init(&in);
	zm_gc_rules_init(&rules);
	zm_gc_analysis_init(&a);
	zm_gran_decision_init(&d);
	zm_buf_init(&b);
	if (o->rules && (st = zm_gc_rules_load(o->rules, &rules, &err)))
		goto out;
	if ((st = zm_gc_read_zoo(&in, o->zoo_dir, o->models, o->n_models,
	                         o->updates, o->n_updates, &err)))
		goto out;
	for (i = 0; i < o->n_logs; i++)
		if ((st = zm_gc_read_log(&in, o->logs[i], &err)))
			goto out;
	if (o->data && in.n_models &&
	    (st = zm_gc_read_data(&in, o->data, DATA_MAX_ROWS, &err)))
		goto out;
	if (o->measure && in.n_models && (st = measure(o, &in, &err)))
		goto out;
	if (!in.n_models || !in.arch) {
		st = zm_error_set(&err, ZM_ERR_USAGE, "no model to decide for "
		                  "(give --updates, or a zoo with models)");
		goto out;
	}
	if ((st = zm_gc_analyze(&in, &o->gc, &a, &err)) ||
	    (st = zm_gc_decide(&a, o->rules ? &rules : NULL, &o->gc, &d,
	                       &err)))
		goto out;
	if (o->explain) {
		zm_gc_explain(&a, &d, &b);
		if (b.failed) {
			st = zm_error_set(&err, ZM_ERR_NOMEM, "out of memory");
			goto out;
		}
	}
	/* The table goes to stderr when the decision takes stdout. */
	if (o->explain && strcmp(o->output, "-") == 0)
		fputs(b.data, stderr);
	if ((st = zm_gran_decision_write(&d, o->output, &err)))
		goto out;
	if (o->explain && strcmp(o->output, "-") != 0)
		fputs(b.data, stdout);
out:
	zm_buf_release(&b);
	zm_gran_decision_release(&d);
	zm_gc_analysis_release(&a);
	zm_gc_rules_release(&rules);
	zm_gc_inputs_release(&in);
	return st == ZM_OK ? ZM_EXIT_OK : zm_cli_report(&err);
}

/* Appends optarg to a list of strings; false when out of memory. */
static bool push(const char ***list, size_t *n, const char *s)
{
	const char **p = realloc(*list, (*n + 1) * sizeof(**list));

	if (!p)
		return false;
	p[(*n)++] = s;
	*list = p;
	return true;
}

enum { OPT_RULES = 256, OPT_UPDATES, OPT_LOG, OPT_EXPLAIN, OPT_DATA,
       OPT_MEASURE, OPT_LAT, OPT_MEM, OPT_METRIC, OPT_SHARE, OPT_DRIFT,
       OPT_DEFAULT, OPT_WINDOW, OPT_MODEL, OPT_PREDICT };

static const struct option longopts[] = {
	{ "zoo", required_argument, NULL, 'z' },
	{ "rules", required_argument, NULL, OPT_RULES },
	{ "updates", required_argument, NULL, OPT_UPDATES },
	{ "log", required_argument, NULL, OPT_LOG },
	{ "explain", no_argument, NULL, OPT_EXPLAIN },
	{ "data", required_argument, NULL, OPT_DATA },
	{ "measure", no_argument, NULL, OPT_MEASURE },
	{ "latency-budget-ms", required_argument, NULL, OPT_LAT },
	{ "memory-budget", required_argument, NULL, OPT_MEM },
	{ "metric", required_argument, NULL, OPT_METRIC },
	{ "share-threshold", required_argument, NULL, OPT_SHARE },
	{ "drift-threshold", required_argument, NULL, OPT_DRIFT },
	{ "default-level", required_argument, NULL, OPT_DEFAULT },
	{ "window", required_argument, NULL, OPT_WINDOW },
	{ "model", required_argument, NULL, OPT_MODEL },
	{ "predict", required_argument, NULL, OPT_PREDICT },
	{ "output", required_argument, NULL, 'o' },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

static bool parse_option(void *ctx, int c, const char *arg)
{
	struct granctl_opts *o = ctx;
	int64_t iv;
	bool ok = true;

	switch (c) {
	case 'z': o->zoo_dir = arg; break;
	case 'o': o->output = arg; break;
	case OPT_RULES: o->rules = arg; break;
	case OPT_UPDATES: ok = push(&o->updates, &o->n_updates, arg); break;
	case OPT_LOG: ok = push(&o->logs, &o->n_logs, arg); break;
	case OPT_MODEL: ok = push(&o->models, &o->n_models, arg); break;
	case OPT_EXPLAIN: o->explain = true; break;
	case OPT_DATA: o->data = arg; break;
	case OPT_MEASURE: o->measure = true; break;
	case OPT_PREDICT: o->predict = arg; break;
	case OPT_LAT:
		return zm_cli_double("--latency-budget-ms", arg, 0, 1e12,
		                     &o->gc.latency_budget_ms);
	case OPT_MEM:
		return zm_cli_double("--memory-budget", arg, 0, 1e12,
		                     &o->gc.memory_budget_mib);
	case OPT_SHARE:
		return zm_cli_double("--share-threshold", arg, -1, 1,
		                     &o->gc.share_threshold);
	case OPT_DRIFT:
		return zm_cli_double("--drift-threshold", arg, 0, 1e300,
		                     &o->gc.drift_threshold);
	case OPT_WINDOW:
		if (!zm_cli_int("--window", arg, 2, INT32_MAX, &iv))
			return false;
		o->gc.window = (size_t)iv;
		break;
	case OPT_METRIC:
		if (!zm_metric_parse(arg, &o->gc.metric)) {
			zm_cli_warn("--metric: expected cosine, kl or "
			            "mahalanobis, got '%s'", arg);
			return false;
		}
		break;
	case OPT_DEFAULT:
		if (!zm_gran_level_parse(arg, &o->gc.dflt)) {
			zm_cli_warn("--default-level: expected full, group or "
			            "layer, got '%s'", arg);
			return false;
		}
		break;
	default:
		return false;
	}
	if (!ok) {
		/* Not a usage error. */
		zm_cli_warn("out of memory");
		exit(ZM_EXIT_FAILURE);
	}
	return true;
}

int main(int argc, char **argv)
{
	/* Static, so that the option lists stay reachable when a usage
	 * error returns before they are freed (git's UNLEAK, by storage). */
	static struct granctl_opts o = { .output = "-" };
	int status;

	zm_cli_init(argv[0]);
	zm_cli_options(options_str);
	zm_gc_opts_init(&o.gc);
	status = zm_cli_getopt(argc, argv, "z:o:h", longopts, usage_str,
	                       parse_option, &o, NULL);
	if (status >= 0)
		return status;
	if (!o.zoo_dir)
		return zm_cli_usage_error(usage_str, "--zoo is required");
	if (optind < argc)
		return zm_cli_usage_error(usage_str, "unexpected argument '%s'",
		                          argv[optind]);
	if (o.measure && !o.data)
		return zm_cli_usage_error(usage_str, "--measure needs --data");
	status = run(&o);
	free(o.updates);
	free(o.logs);
	free(o.models);
	return zm_cli_close_stdout(status);
}
