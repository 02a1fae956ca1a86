/*
 * assign: compares the profile of each slice file (the last document that
 * slice(1) writes) with the profile of each model in a zoo, by one of the
 * metrics of similarity.h, and turns each slice's row of similarities into
 * model weights (temperature softmax, top-k, minimum weight).  Writes the
 * assignment YAML (zoomerge-assignment(5)) that train-step reads.  A slice
 * no model matches well enough is marked as needing a new model; with
 * --create that model is added to the zoo, cloned from --base.  With
 * --calibrate it also fits the temperature of predict's routing posterior
 * (calibrate.h) on the slices' own rows, each slice's source being its
 * most weighted model, reports the routing accuracy, and stores both in
 * the zoo as the models' route_temperature and route_accuracy metrics.
 */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assigner.h"
#include "assignment.h"
#include "calibrate.h"
#include "cli.h"
#include "zoo.h"

static const char usage_str[] =
	"usage: assign --zoo DIR [--metric cosine|kl|mahalanobis] [--top-k K]\n"
	"              [--temperature T] [--min-weight W] [--new-model-threshold S]\n"
	"              [--create --base NAME] [--calibrate [--calibrate-rows N]]\n"
	"              [-o FILE] SLICE...\n"
	"       assign -h | --help | --version\n";

/* --help: every option with its default in brackets. */
static const char options_str[] =
	"\n"
	"Weighs the zoo's models for each slice by similarity of their profiles.\n"
	"\n"
	"      --zoo DIR                 the model zoo [required]\n"
	"      --metric KIND             cosine, kl or mahalanobis [cosine]\n"
	"      --top-k K                 keep the K most similar models [0: all]\n"
	"      --temperature T           softmax temperature [1]\n"
	"      --min-weight W            drop weights below W [0]\n"
	"      --new-model-threshold S   similarity a slice needs with some model\n"
	"                                not to ask for a new one [none]\n"
	"      --create --base NAME      add the new models, cloned from NAME [off]\n"
	"      --calibrate               fit predict's routing temperature on the\n"
	"                                slices' rows and store it in the zoo [off]\n"
	"      --calibrate-rows N        rows per slice for --calibrate [2000]\n"
	"  -o, --output FILE             where the assignment goes [standard output]\n"
	"  -h, --help                    print this help and exit\n"
	"      --version                 print the version and exit\n";

struct assign_opts {
	const char *zoo_dir;
	enum zm_metric metric;
	int64_t top_k;
	double temperature;
	double min_weight;
	bool has_threshold;
	double threshold;
	bool create;
	const char *base;
	const char *output;
	bool calibrate;
	int64_t calibrate_rows;
	char **slices;
	int n_slices;
};

/* What the library left out, in the words of the program. */
static void warn_models(const struct zm_assign_model *mp, size_t k)
{
	size_t i;

	for (i = 0; i < k; i++)
		if (mp[i].note == ZM_ASSIGN_NO_PROFILE)
			zm_cli_warn("model '%s' has no profile (not trained "
			            "yet); left out", mp[i].name);
		else if (mp[i].note == ZM_ASSIGN_EMPTY_PROFILE)
			zm_cli_warn("model '%s' has an empty input profile; "
			            "left out", mp[i].name);
}

static void warn_widths(const struct zm_assign_run *r,
                        const struct zm_assignment_slice *s)
{
	size_t i;

	for (i = 0; i < r->k; i++)
		if (r->mp[i].other_width)
			zm_cli_warn("slice '%s' has %zu features, model '%s' "
			            "%zu; model left out", s->slice, r->dim,
			            r->mp[i].name, r->mp[i].input->dim);
}

static int run(const struct assign_opts *o)
{
	struct zm_assignment a;
	struct zm_error err;
	struct zm_zoo *zoo = NULL;
	struct zm_zoo_entry *base;
	struct zm_assign_run r;
	size_t i;
	enum zm_status st;

	zm_assignment_init(&a);
	zm_assign_run_init(&r);
	zm_error_clear(&err);
	a.metric = o->metric;
	a.temperature = o->temperature;
	a.top_k = (size_t)o->top_k;
	a.min_weight = o->min_weight;
	a.has_threshold = o->has_threshold;
	a.new_model_threshold = o->threshold;
	st = zm_zoo_open(&zoo, o->zoo_dir, o->create || o->calibrate ?
	                 ZM_ZOO_WRITE : ZM_ZOO_READ, &err);
	if (st != ZM_OK)
		goto out;
	if (o->create && (st = zm_zoo_get(zoo, o->base, &base, &err)))
		goto out;
	st = zm_assign_run_load(&r, zoo, &err);
	warn_models(r.mp, r.k);
	if (st != ZM_OK)
		goto out;
	for (i = 0; i < (size_t)o->n_slices; i++) {
		struct zm_assignment_slice *s;

		st = zm_assign_slice_file(&r, &a, o->slices[i], &s, &err);
		if (s)
			warn_widths(&r, s);
		if (st != ZM_OK)
			goto out;
		if (!s->new_model)
			continue;
		if (o->create) {
			if ((st = zm_assign_create_model(zoo, o->base, s, &err)))
				goto out;
			zm_cli_warn("slice '%s': no model similar enough; "
			            "created model '%s' from '%s'", s->slice,
			            s->slice, o->base);
		} else {
			zm_cli_warn("slice '%s': no model similar enough; it "
			            "needs a new model (--create --base NAME)",
			            s->slice);
		}
	}
	if ((st = zm_assignment_validate(&a, &err)))
		goto out;
	if (o->calibrate) {
		struct zm_calibration c;
		bool done;
		if ((st = zm_calibrate_slices(zoo, r.mp, r.k, &a,
		                              (size_t)o->calibrate_rows, &c,
		                              &done, &err)))
			goto out;
		if (done)
			fprintf(stderr, "%s: routing calibration on %zu rows of "
			        "%zu slices: temperature %.4g; the top model is the "
			        "slice's own on %.4f of the rows (mean -log "
			        "posterior %.4g; %.4g at temperature 1)\n",
			        zm_cli_name(), c.rows, c.sources, c.temperature,
			        c.accuracy, c.nll, c.nll_t1);
		else
			zm_cli_warn("--calibrate: needs rows of slices of at "
			            "least two models with profiles; nothing "
			            "calibrated");
	}
	/* The assignment is committed before the zoo: an output that cannot
	 * be written (a full disk, /dev/full) then leaves the zoo as it was.
	 * The zoo's commit is one rename; should it fail after the
	 * assignment is in place, train-step reports the missing model. */
	if ((st = zm_assignment_save(&a, o->output ? o->output : "-", &err)))
		goto out;
	if (o->create || o->calibrate)
		st = zm_zoo_commit(zoo, &err);
out:
	zm_assign_run_release(&r);
	zm_assignment_release(&a);
	zm_zoo_close(zoo);
	return st == ZM_OK ? ZM_EXIT_OK : zm_cli_report(&err);
}

enum { OPT_METRIC = 256, OPT_TOPK, OPT_TEMP, OPT_MINW, OPT_THRESH,
       OPT_CREATE, OPT_BASE, OPT_CALIBRATE, OPT_CALIBRATE_ROWS };

static const struct option longopts[] = {
	{ "zoo", required_argument, NULL, 'z' },
	{ "metric", required_argument, NULL, OPT_METRIC },
	{ "top-k", required_argument, NULL, OPT_TOPK },
	{ "temperature", required_argument, NULL, OPT_TEMP },
	{ "min-weight", required_argument, NULL, OPT_MINW },
	{ "new-model-threshold", required_argument, NULL, OPT_THRESH },
	{ "create", no_argument, NULL, OPT_CREATE },
	{ "base", required_argument, NULL, OPT_BASE },
	{ "calibrate", no_argument, NULL, OPT_CALIBRATE },
	{ "calibrate-rows", required_argument, NULL, OPT_CALIBRATE_ROWS },
	{ "output", required_argument, NULL, 'o' },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

static bool parse_option(void *ctx, int c, const char *arg)
{
	struct assign_opts *o = ctx;

	switch (c) {
	case 'z': o->zoo_dir = arg; return true;
	case 'o': o->output = arg; return true;
	case OPT_BASE: o->base = arg; return true;
	case OPT_CREATE: o->create = true; return true;
	case OPT_CALIBRATE: o->calibrate = true; return true;
	case OPT_CALIBRATE_ROWS:
		return zm_cli_int("--calibrate-rows", arg, 1, 1 << 24,
		                  &o->calibrate_rows);
	case OPT_METRIC:
		if (!zm_metric_parse(arg, &o->metric)) {
			zm_cli_warn("--metric: expected cosine, kl or "
			            "mahalanobis, got '%s'", arg);
			return false;
		}
		return true;
	case OPT_TOPK:
		return zm_cli_int("--top-k", arg, 0, INT32_MAX, &o->top_k);
	case OPT_TEMP:
		return zm_cli_double("--temperature", arg, 1e-30, 1e30,
		                     &o->temperature);
	case OPT_MINW:
		return zm_cli_double("--min-weight", arg, 0, 1, &o->min_weight);
	case OPT_THRESH:
		o->has_threshold = true;
		return zm_cli_double("--new-model-threshold", arg, -1e300,
		                     1e300, &o->threshold);
	default:
		return false;
	}
}

int main(int argc, char **argv)
{
	struct assign_opts o = {
		.metric = ZM_METRIC_COSINE,
		.temperature = 1.0,
		.calibrate_rows = 2000,
	};
	int status;

	zm_cli_init(argv[0]);
	zm_cli_options(options_str);
	status = zm_cli_getopt(argc, argv, "z:o:h", longopts, usage_str,
	                       parse_option, &o, NULL);
	if (status >= 0)
		return status;
	if (!o.zoo_dir)
		return zm_cli_usage_error(usage_str, "--zoo is required");
	if (optind >= argc)
		return zm_cli_usage_error(usage_str, "no slice files given");
	if (o.create != !!o.base)
		return zm_cli_usage_error(usage_str, "--create and --base go "
		                          "together");
	o.slices = argv + optind;
	o.n_slices = argc - optind;
	return zm_cli_close_stdout(run(&o));
}
