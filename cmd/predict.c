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
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "datain.h"
#include "dataset.h"
#include "assignment.h"
#include "config.h"
#include "constants.h"
#include "fileio.h"
#include "gemm.h"
#include "granauto.h"
#include "granctl.h"
#include "granularity.h"
#include "lineage.h"
#include "mem.h"
#include "model.h"
#include "predict.h"
#include "schema.h"
#include "stream.h"
#include "weighting.h"
#include "zoo.h"
#include "zoomodel.h"

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

#define MAX_MODELS ZM_WEIGHTER_MAX_MODELS

struct predict_opts {
	const char *zoo_dir;
	const char *model[MAX_MODELS];
	size_t n_models;            /* --model given this many times */
	const char *model_file[MAX_MODELS];
	size_t n_files;
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
	/* dynamic inference */
	struct zm_predict_options p;
	bool have_level;
	bool gran_auto;             /* --granularity auto */
	const char *gran_rules;     /* --granularity-rules */
	const char *gran_from;
	const char *router;
	const char *assignment;
	const char *weights;
	const char *state;
	const char *trace;
	bool weighting_set;         /* --weighting given */
	uint64_t min_rows;          /* --min-rows: fewer is an error */
	bool merge_set, per_set, metric_set, temperature_set;
	bool explain;
};

enum {
	OPT_GRAN = 1000, OPT_WEIGHTING, OPT_ROUTER, OPT_ASSIGNMENT, OPT_PER,
	OPT_TOPK, OPT_TEMP, OPT_MERGE, OPT_POINT, OPT_STATE, OPT_GRAN_FROM,
	OPT_WEIGHTS, OPT_ADAPT, OPT_TRACE, OPT_FEEDBACK, OPT_METRIC,
	OPT_BUDGET, OPT_ETA, OPT_PRIOR, OPT_ADAPT_STEPS, OPT_SHARE, OPT_PROBE,
	OPT_ADAPT_REG, OPT_ADAPT_TRUST, OPT_MIN_ROWS, OPT_THRESHOLD,
	OPT_EXPLAIN, OPT_GRAN_RULES
};

static double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Reads the models of the run: --model-file files, the --model names of
 * the zoo, or every expert of the zoo (not the router); the router too. */
/* The routing temperature assign --calibrate stored for the model
 * called name in the open zoo, or NAN. */
static double route_temperature(const struct zm_zoo *zoo, const char *name)
{
	const struct zm_zoo_entry *e = zm_zoo_find(zoo, name);
	const char *v = e ? zm_kv_get(&e->metrics, "route_temperature") : NULL;
	char *end;
	double t;

	if (!v)
		return NAN;
	t = strtod(v, &end);
	return *end == '\0' && t > 0 && isfinite(t) ? t : NAN;
}

static enum zm_status load_models(const struct predict_opts *o,
                                  struct zm_model **models, size_t *k,
                                  struct zm_model **router, double *route_t,
                                  struct zm_error *err)
{
	struct zm_zoo *zoo = NULL;
	enum zm_status st = ZM_OK;
	enum zm_role role;
	size_t i;

	*k = 0;
	if (o->n_files) {
		for (i = 0; i < o->n_files && st == ZM_OK; i++) {
			st = zm_model_load(o->model_file[i], &models[i], err);
			if (st == ZM_OK)
				(*k)++;
		}
		return st;
	}
	if (o->n_models == 1 && !o->router) {
		st = zm_zoo_load_model_at(o->zoo_dir, o->model[0], &models[0], err);
		if (st == ZM_OK)
			*k = 1;
		return st;
	}
	st = zm_zoo_open(&zoo, o->zoo_dir, ZM_ZOO_READ, err);
	if (st != ZM_OK)
		return st;
	if (o->n_models == 0) {
		for (i = 0; i < zoo->n_models && st == ZM_OK; i++) {
			const char *name = zoo->models[i].name;
			if (o->router && strcmp(name, o->router) == 0)
				continue;
			if (*k == MAX_MODELS) {
				st = zm_error_set(err, ZM_ERR_USAGE, "%s: more than "
				                  "%d models; choose with --model",
				                  o->zoo_dir, MAX_MODELS);
				break;
			}
			st = zm_zoo_load_model_at(o->zoo_dir, name, &models[*k], err);
			if (st != ZM_OK)
				break;
			/* The whole zoo means its experts: routers and bases
			 * predict nothing of the data's classes. */
			if (zm_role_of_doc(&models[*k]->extra, &role) &&
			    role != ZM_ROLE_EXPERT) {
				zm_model_free(models[*k]);
				models[*k] = NULL;
				continue;
			}
			route_t[(*k)++] = route_temperature(zoo, name);
		}
		if (st == ZM_OK && *k == 0)
			st = zm_error_set(err, ZM_ERR_DATA, "%s: no models to "
			                  "predict with", o->zoo_dir);
	} else {
		for (i = 0; i < o->n_models && st == ZM_OK; i++) {
			st = zm_zoo_load_model_at(o->zoo_dir, o->model[i], &models[i], err);
			if (st == ZM_OK)
				route_t[(*k)++] = route_temperature(zoo,
				                                    o->model[i]);
		}
	}
	zm_zoo_close(zoo);
	if (st == ZM_OK && o->router)
		st = zm_zoo_load_model_at(o->zoo_dir, o->router, router, err);
	return st;
}

/* The merge options together, in their words (the predictor checks the
 * same); the level may come from --granularity-from, so this runs once it
 * is known. */
static enum zm_status check_merge(const struct zm_predict_options *po,
                                  struct zm_error *err)
{
	if (po->merge == ZM_MERGE_PARAMS && po->w.per_row)
		return zm_error_set(err, ZM_ERR_USAGE, "--merge params needs "
		                    "per-batch weights (--per batch): one set of "
		                    "merged parameters serves the whole batch");
	if (po->merge == ZM_MERGE_PARAMS && po->point == ZM_MERGE_POST)
		return zm_error_set(err, ZM_ERR_USAGE, "--merge params merges "
		                    "before the activation; --merge-point post "
		                    "needs --merge outputs");
	if ((po->merge == ZM_MERGE_ENSEMBLE || po->merge == ZM_MERGE_ROUTE) &&
	    po->w.level != ZM_GRAN_FULL)
		return zm_error_set(err, ZM_ERR_USAGE, "--merge %s mixes only "
		                    "the final outputs: it needs --granularity "
		                    "full", po->merge == ZM_MERGE_ROUTE ? "route" :
		                    "ensemble");
	return ZM_OK;
}

/* What a run holds besides the data: the models, their names, and the
 * inputs of their weighting. */
struct predict_run {
	struct zm_model *models[MAX_MODELS];
	const char *names[MAX_MODELS];
	char fallback[MAX_MODELS][24];
	const char *model_name;      /* in outputs, when there is one model */
	struct zm_model *router;
	size_t k;
	double route_t[MAX_MODELS];  /* assign --calibrate's, or NAN */
	struct zm_predict_options po;
	struct zm_assignment asg;
	struct zm_gran_decision dec;
	struct zm_hedge hedge;
	struct zm_node *wroot;
	double *stat;
	bool unrelated;              /* check_lineage mixes final outputs */
};

/*
 * Merging layers (hidden activations or parameters) means something only
 * when the models' units correspond (lineage.h).  For models that are
 * unrelated a merge that predict chose itself becomes a mix of the final
 * outputs at the full level (routing where the weighting judges rows);
 * one the user asked for with --merge goes ahead after one warning.
 */
static enum zm_status check_lineage(const struct predict_opts *o,
                                    struct predict_run *s,
                                    struct zm_error *err)
{
	struct zm_lineage_info info;
	enum zm_status st;
	size_t a, b;
	bool all;

	if (s->k < 2 || (s->po.merge != ZM_MERGE_OUTPUTS &&
	                 s->po.merge != ZM_MERGE_PARAMS))
		return ZM_OK;
	st = zm_lineage_all_related((const struct zm_model *const *)s->models,
	                            s->k, &all, &a, &b, &info, err);
	if (st != ZM_OK || all || info.verdict != ZM_LINEAGE_UNRELATED)
		return st;
	if (o->merge_set) {
		zm_cli_warn("models '%s' and '%s' are unrelated (%s): merging "
		            "their layers mixes units that do not correspond; "
		            "going ahead as --merge %s asks", s->names[a],
		            s->names[b], zm_lineage_basis_name(info.basis),
		            s->po.merge == ZM_MERGE_PARAMS ? "params" : "outputs");
		return ZM_OK;
	}
	s->po.merge = s->po.w.kind == ZM_WEIGHTING_DENSITY ||
	              s->po.w.kind == ZM_WEIGHTING_ROUTER ||
	              s->po.w.kind == ZM_WEIGHTING_ROUTER_SIMILARITY ?
	              ZM_MERGE_ROUTE : ZM_MERGE_ENSEMBLE;
	s->po.w.level = ZM_GRAN_FULL;
	s->unrelated = true;
	if (o->explain || o->have_level || o->gran_from)
		zm_cli_warn("models '%s' and '%s' are unrelated (%s): their "
		            "final outputs are mixed (--merge %s) instead of "
		            "their layers", s->names[a], s->names[b],
		            zm_lineage_basis_name(info.basis),
		            s->po.merge == ZM_MERGE_ROUTE ? "route" : "ensemble");
	return ZM_OK;
}


/* The models and everything their weighting reads, before any data. */
static enum zm_status prepare(const struct predict_opts *o,
                              struct predict_run *s, struct zm_error *err)
{
	enum zm_status st;
	size_t i;

	for (i = 0; i < MAX_MODELS; i++)
		s->route_t[i] = NAN;
	st = load_models(o, s->models, &s->k, &s->router, s->route_t, err);
	if (st != ZM_OK)
		return st;
	/* The calibrated temperature of density weighting, when every model
	 * has one (assign --calibrate), unless --temperature says otherwise:
	 * the largest, the most cautious; else the default for the width. */
	if (s->po.w.kind == ZM_WEIGHTING_DENSITY && !o->temperature_set &&
	    s->k > 1) {
		double t = 0;
		for (i = 0; i < s->k && t >= 0; i++)
			t = isfinite(s->route_t[i]) && s->route_t[i] > t ?
			    s->route_t[i] : isfinite(s->route_t[i]) ? t : -1;
		if (t > 0) {
			s->po.w.temperature = t;
			s->po.w.temperature_origin = "calibrated by assign "
			                             "--calibrate";
		} else {
			t = ZM_DENSITY_T_PER_FEATURE *
			    (double)s->models[0]->arch->input_features;
			s->po.w.temperature = t > 1 ? t : 1;
			s->po.w.temperature_origin = "uncalibrated: the default "
			                             "for the input width (assign "
			                             "--calibrate fits one)";
		}
	} else if (o->temperature_set) {
		s->po.w.temperature_origin = "--temperature";
	}
	for (i = 0; i < s->k; i++) {
		if (s->models[i]->name) {
			s->names[i] = s->models[i]->name;
		} else {
			snprintf(s->fallback[i], sizeof(s->fallback[i]), "m%zu",
			         i);
			s->names[i] = s->fallback[i];
		}
	}
	s->model_name = s->k == 1 ? (o->n_files ? o->model_file[0] :
	                o->n_models ? o->model[0] : s->names[0]) : NULL;
	s->po.names = s->names;
	if (o->gran_from) {
		st = zm_gran_decision_load(o->gran_from, s->models[0]->arch,
		                           &s->dec, err);
		if (st != ZM_OK)
			return st;
		if (!o->gran_auto)
			s->po.w.level = s->dec.level;
	}
	if (o->assignment) {
		st = zm_assignment_load(o->assignment, &s->asg, err);
		if (st != ZM_OK)
			return st;
		s->po.assignment = &s->asg;
	}
	s->po.router = s->router;
	if (o->weights) {
		size_t cells;
		st = zm_config_load(o->weights, &s->wroot, err);
		if (st != ZM_OK)
			return st;
		if (!zm_size_mul(s->models[0]->arch->n_layers, s->k, &cells) ||
		    !(s->stat = zm_calloc(cells ? cells : 1, sizeof(double)))) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
			return st;
		}
		st = zm_static_weights(s->wroot, s->models[0]->arch, s->names,
		                       s->k, s->stat, err);
		if (st != ZM_OK)
			return st;
		s->po.stat = s->stat;
	}
	if (o->state && s->k > 1 && !o->gran_auto) {
		/* A missing state file is the first run; anything else that
		 * cannot be read or validated is an error, and the file stays
		 * as it is. */
		if (access(o->state, F_OK) == 0) {
			st = zm_hedge_load(&s->hedge, o->state, s->names, s->k,
			                   err);
			if (st != ZM_OK)
				return st;
			s->po.hedge = &s->hedge;
		}
	}
	return ZM_OK;
}

/*
 * The schema the inputs are matched to: models[0]'s.  Models predicting
 * together must name the same classes and features in the same order
 * (their outputs are merged unit by unit); models that name none are
 * taken to agree by position.
 */
static enum zm_status models_schema(struct zm_model *const *models,
                                    const char *const *names, size_t k,
                                    struct zm_schema *schema,
                                    struct zm_error *err)
{
	struct zm_schema other;
	enum zm_status st;
	size_t i;
	char what[128];

	zm_schema_init(&other);
	snprintf(what, sizeof(what), "model '%s'", names[0]);
	st = zm_schema_of_model_doc(schema, &models[0]->extra, what, err);
	for (i = 1; st == ZM_OK && i < k; i++) {
		snprintf(what, sizeof(what), "model '%s'", names[i]);
		if ((st = zm_schema_of_model_doc(&other, &models[i]->extra, what,
		                                 err)))
			break;
		if ((other.classes.known && schema->classes.known &&
		     !zm_names_equal(&other.classes, &schema->classes)) ||
		    (other.features.known && schema->features.known &&
		     !zm_names_equal(&other.features, &schema->features)))
			st = zm_error_set(err, ZM_ERR_DATA, "models '%s' and '%s' "
			                  "name different %s: they cannot predict "
			                  "together", names[0], names[i],
			                  zm_names_equal(&other.classes,
			                                 &schema->classes) ?
			                  "features" : "classes");
		if (st == ZM_OK && !schema->classes.known)
			st = zm_names_copy(&schema->classes, &other.classes, err);
		if (st == ZM_OK && !schema->features.known)
			st = zm_names_copy(&schema->features, &other.features, err);
	}
	zm_schema_release(&other);
	return st;
}

/*
 * Brings one input document to the models' classes and columns by name;
 * says once when they name none (position matching) and, with
 * --progress, which columns they ignore.
 */
static enum zm_status conform(const struct predict_opts *o,
                              struct zm_schema *schema, const char *model,
                              struct zm_doc *doc, const char *where,
                              struct zm_schema_note *note, bool *warned,
                              struct zm_error *err)
{
	char what[128];
	size_t n, extra = note->extra_columns;
	enum zm_status st;

	if (model)
		snprintf(what, sizeof(what), "model '%s'", model);
	else
		snprintf(what, sizeof(what), "the models");
	if ((st = zm_data_check(doc, where, &n, err)) ||
	    (st = zm_schema_conform_doc(schema, false, doc, n, where, what,
	                                note, err)))
		return st;
	if (note->by_position && !*warned && !o->quiet) {
		zm_cli_warn("warning: %s records no class or column names "
		            "(written before zoomerge kept them): the input is "
		            "matched by position", what);
		*warned = true;
	}
	if (note->extra_columns && !extra && o->progress)
		zm_cli_warn("%s: %zu column(s) %s does not use, such as '%s', "
		            "ignored", where, note->extra_columns, what,
		            note->first_extra);
	return ZM_OK;
}

/*
 * --granularity auto: predictors at the group and layer levels next to
 * the full one (pred), over the same models, and the controller that
 * picks one per batch.  A level the models cannot merge at (unrelated
 * models, a weighting that lacks a profile entry) is left out, said with
 * --explain.  The group and layer levels merge outputs where the full
 * level routes or mixes final outputs.
 */
static enum zm_status start_auto(const struct predict_opts *o,
                                 const struct predict_run *s,
                                 struct zm_predictor *pred,
                                 struct zm_predictor **lvl,
                                 struct zm_gc_rules *rules,
                                 struct zm_granauto_ctl *ctl,
                                 struct zm_error *err)
{
	enum zm_gran_level l;
	enum zm_status st;
	struct zm_error e2;
	struct zm_lineage_info info;
	bool all = true, unrelated = s->unrelated;
	size_t a, b;

	lvl[ZM_GRAN_FULL] = pred;
	if (o->gran_rules &&
	    (st = zm_gc_rules_load(o->gran_rules, rules, err)) != ZM_OK)
		return st;
	/* The full level may route without merging layers (check_lineage
	 * then did not look); the finer ones merge them, which unrelated
	 * models cannot. */
	if (!unrelated && !o->merge_set &&
	    (s->po.merge == ZM_MERGE_ROUTE || s->po.merge == ZM_MERGE_ENSEMBLE)) {
		st = zm_lineage_all_related((const struct zm_model *const *)
		                            s->models, s->k, &all, &a, &b,
		                            &info, err);
		if (st != ZM_OK)
			return st;
		unrelated = !all && info.verdict == ZM_LINEAGE_UNRELATED;
		if (unrelated && o->explain)
			zm_cli_warn("granularity auto: models '%s' and '%s' are "
			            "unrelated (%s): the full level only",
			            s->names[a], s->names[b],
			            zm_lineage_basis_name(info.basis));
	}
	for (l = ZM_GRAN_GROUP; !unrelated && l <= ZM_GRAN_LAYER; l++) {
		struct zm_predict_options po = s->po;
		if (po.merge == ZM_MERGE_ROUTE || po.merge == ZM_MERGE_ENSEMBLE) {
			/* Unrelated models mix only final outputs, and a
			 * --merge route or ensemble asked for is kept. */
			if (o->merge_set)
				break;
			po.merge = ZM_MERGE_OUTPUTS;
		}
		po.w.level = l;
		zm_error_clear(&e2);
		st = zm_predictor_new_opts((const struct zm_model *const *)
		                           s->models, s->k, o->batch, &po,
		                           &lvl[l], &e2);
		if (st == ZM_ERR_NOMEM)
			return zm_error_set(err, st, "%s", e2.msg);
		if (st != ZM_OK && o->explain)
			zm_cli_warn("granularity auto: no %s level: %s",
			            zm_gran_level_name(l), e2.msg);
	}
	st = zm_granauto_ctl_init(ctl, lvl, s->po.w.latency_budget_ms,
	                          s->po.w.use_loadavg,
	                          o->gran_rules ? rules : NULL,
	                          o->gran_from != NULL, s->dec.level, err);
	if (st != ZM_OK)
		return st;
	pred->gauto = ctl;
	/* The cost estimates of the last run (a missing file is the first
	 * run). */
	if (o->state && access(o->state, F_OK) == 0)
		st = zm_granauto_state_load(&ctl->g, o->state, &ctl->state_keep,
		                            err);
	return st;
}

/* The trace's header; with auto each line also says the batch's level,
 * its time and why that level. */
static enum zm_status trace_header(const struct zm_predictor *pred,
                                   struct zm_outfile *trace,
                                   struct zm_error *err)
{
	if (pred->gauto)
		return zm_outfile_printf(trace, err, "batch,rows,model,unit,"
		                         "weight,similarity,score,level,ms,"
		                         "why\n");
	return zm_pred_trace_header(trace, err);
}

/* --explain: what the weighting (and auto) chose and why, on stderr when
 * the predictions go to stdout. */
static enum zm_status explain(const struct predict_opts *o,
                              const struct predict_run *s,
                              const struct zm_predictor *pred,
                              const struct zm_granauto_ctl *ctl,
                              struct zm_error *err)
{
	bool to_err = !o->output || strcmp(o->output, "-") == 0;
	struct zm_buf b;

	zm_buf_init(&b);
	zm_predict_explain(pred, s->names, &b);
	if (pred->gauto)
		zm_granauto_ctl_explain(ctl, &b);
	if (b.failed) {
		zm_buf_release(&b);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	fputs(b.len ? b.data : "", to_err ? stderr : stdout);
	zm_buf_release(&b);
	return ZM_OK;
}

/* --state: the Hedge scores of --feedback, or auto's cost estimates. */
static enum zm_status save_state(const struct predict_opts *o,
                                 const struct predict_run *s,
                                 const struct zm_predictor *pred,
                                 const struct zm_granauto_ctl *ctl,
                                 struct zm_error *err)
{
	if (o->state && s->k > 1 && s->po.feedback)
		return zm_hedge_save(&pred->hedge, o->state, err);
	if (o->state && pred->gauto)
		return zm_granauto_state_save(&ctl->g, o->state,
		                              ctl->state_keep, err);
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
	d.batch = o->batch;
	*name = o->from == ZM_DATASET_IDX ? o->images
	        : !o->input || strcmp(o->input, "-") == 0 ? "<stdin>"
	        : o->input;
	return zm_dataset_open(r, &d, err);
}

static int run(const struct predict_opts *o)
{
	struct zm_error err;
	struct predict_run s;
	struct zm_predictor *pred = NULL;
	struct zm_dataset_reader *r = NULL;
	struct zm_pred_writer *w = NULL;
	struct zm_pred_metrics metrics;
	struct zm_outfile trace;
	struct zm_schema schema;
	struct zm_schema_note note;
	bool trace_open = false, warned = false;
	struct zm_doc doc;
	enum zm_status st;
	const char *in_name;
	char where[ZM_WHERE_MAX];
	uint64_t row = 0;
	size_t docno = 0, i;
	bool eof = false, progress;
	double last = 0;
	struct zm_predictor *lvl[ZM_GRANAUTO_LEVELS] = { NULL, NULL, NULL };
	struct zm_granauto_ctl ctl;
	struct zm_gc_rules rules;

	zm_error_clear(&err);
	zm_doc_init(&doc);
	memset(&s, 0, sizeof(s));
	s.po = o->p;
	zm_assignment_init(&s.asg);
	zm_gran_decision_init(&s.dec);
	zm_hedge_init(&s.hedge);
	zm_schema_init(&schema);
	memset(&note, 0, sizeof(note));
	memset(&trace, 0, sizeof(trace));
	memset(&ctl, 0, sizeof(ctl));
	zm_gc_rules_init(&rules);
	zm_gemm_setup(o->threads);
	progress = zm_cli_progress_wanted(o->progress, o->quiet);
	st = prepare(o, &s, &err);
	if (st == ZM_OK)
		st = models_schema(s.models, s.names, s.k, &schema, &err);
	if (st != ZM_OK)
		goto out;
	if ((st = check_lineage(o, &s, &err)))
		goto out;
	if (s.k > 1 && (st = check_merge(&s.po, &err)))
		goto out;
	st = zm_predictor_new_opts((const struct zm_model *const *)s.models, s.k,
	                           o->batch, &s.po, &pred, &err);
	if (st != ZM_OK)
		goto out;
	if (o->gran_auto && s.k > 1 &&
	    (st = start_auto(o, &s, pred, lvl, &rules, &ctl, &err)))
		goto out;
	zm_pred_metrics_init(&metrics, pred->loss, pred->out_features);

	if ((st = open_input(o, &r, &in_name, &err)))
		goto out;
	if (o->trace) {
		if ((st = zm_outfile_open(&trace, o->trace, false, &err)))
			goto out;
		trace_open = true;
		if ((st = trace_header(pred, &trace, &err)))
			goto out;
		pred->trace = &trace;
	}
	st = zm_pred_writer_open(&w, o->output, o->format, pred->loss,
	                         pred->out_features, o->compress, s.model_name,
	                         pred->loss == ZM_LOSS_CROSS_ENTROPY ?
	                         &schema.classes : NULL, &err);
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
		st = conform(o, &schema, s.k == 1 ? s.names[0] : NULL, &doc,
		             where, &note, &warned, &err);
		if (st != ZM_OK)
			break;
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
	if (o->explain && (st = explain(o, &s, pred, &ctl, &err)))
		goto out;
	if (trace_open) {
		trace_open = false;
		if ((st = zm_outfile_commit(&trace, &err)))
			goto out;
	}
	if ((st = save_state(o, &s, pred, &ctl, &err)))
		goto out;
	st = zm_pred_writer_commit(w, &err);
	w = NULL;
out:
	if (trace_open)
		zm_outfile_abort(&trace);
	zm_pred_writer_abort(w);
	zm_doc_release(&doc);
	zm_dataset_close(r);
	zm_predictor_free(pred);
	zm_predictor_free(lvl[ZM_GRAN_GROUP]);
	zm_predictor_free(lvl[ZM_GRAN_LAYER]);
	zm_granauto_ctl_release(&ctl);
	zm_gc_rules_release(&rules);
	for (i = 0; i < s.k; i++)
		zm_model_free(s.models[i]);
	zm_model_free(s.router);
	zm_assignment_release(&s.asg);
	zm_schema_release(&schema);
	zm_gran_decision_release(&s.dec);
	zm_hedge_release(&s.hedge);
	zm_node_free(s.wroot);
	free(s.stat);
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

/* The options of dynamic inference (weighting, merging, adaptation). */
static bool parse_dynamic_option(struct predict_opts *o, int c,
                                 const char *arg)
{
	int64_t v;
	double dv;

	switch (c) {
	case OPT_GRAN:
		o->gran_auto = strcmp(arg, "auto") == 0;
		if (o->gran_auto) {
			o->p.w.level = ZM_GRAN_FULL;
			o->have_level = false;
			break;
		}
		if (!zm_gran_level_parse(arg, &o->p.w.level)) {
			zm_cli_warn("--granularity: expected full, group, layer "
			            "or auto, got '%s'", arg);
			return false;
		}
		o->have_level = true;
		break;
	case OPT_GRAN_FROM: o->gran_from = arg; break;
	case OPT_GRAN_RULES: o->gran_rules = arg; break;
	case OPT_WEIGHTING:
		if (!zm_weighting_parse(arg, &o->p.w.kind)) {
			zm_cli_warn("--weighting: expected density, similarity, "
			            "router, uniform, static or "
			            "router+similarity, got '%s'", arg);
			return false;
		}
		o->weighting_set = true;
		break;
	case OPT_ROUTER: o->router = arg; break;
	case OPT_ASSIGNMENT: o->assignment = arg; break;
	case OPT_WEIGHTS: o->weights = arg; break;
	case OPT_STATE: o->state = arg; break;
	case OPT_TRACE: o->trace = arg; break;
	case OPT_FEEDBACK: o->p.feedback = true; break;
	case OPT_THRESHOLD:
		if (!zm_cli_double("--threshold", arg, 0, 1, &dv))
			return false;
		o->p.threshold = dv;
		break;
	case OPT_EXPLAIN: o->explain = true; break;
	case OPT_PER:
		o->per_set = true;
		if (strcmp(arg, "row") == 0)
			o->p.w.per_row = true;
		else if (strcmp(arg, "batch") == 0)
			o->p.w.per_row = false;
		else {
			zm_cli_warn("--per: expected row or batch, got '%s'",
			            arg);
			return false;
		}
		break;
	case OPT_TOPK:
		if (!zm_cli_int("--top-k", arg, 0, MAX_MODELS, &v))
			return false;
		o->p.w.top_k = (size_t)v;
		break;
	case OPT_TEMP:
		if (!zm_cli_double("--temperature", arg, 1e-12, 1e12, &dv))
			return false;
		o->p.w.temperature = dv;
		o->temperature_set = true;
		break;
	case OPT_BUDGET:
		if (!zm_cli_double("--latency-budget-ms", arg, 0, 1e9, &dv))
			return false;
		o->p.w.latency_budget_ms = dv;
		break;
	case OPT_ETA:
		if (!zm_cli_double("--eta", arg, 0, 1e6, &dv))
			return false;
		o->p.eta = dv;
		break;
	case OPT_SHARE:
		if (!zm_cli_double("--share", arg, 0, 0.999, &dv))
			return false;
		o->p.share = dv;
		break;
	case OPT_PROBE:
		if (!zm_cli_double("--probe", arg, 1e-6, 1, &dv))
			return false;
		o->p.probe = dv;
		break;
	case OPT_ADAPT_REG:
		if (!zm_cli_double("--adapt-reg", arg, 0, 1e6, &dv))
			return false;
		o->p.adapt_o.reg = dv;
		break;
	case OPT_ADAPT_TRUST:
		if (!zm_cli_double("--adapt-trust", arg, 1e-6, 100, &dv))
			return false;
		o->p.adapt_o.max_step = dv;
		break;
	case OPT_METRIC:
		o->metric_set = true;
		if (!zm_metric_parse(arg, &o->p.w.metric)) {
			zm_cli_warn("--metric: expected cosine, kl or "
			            "mahalanobis, got '%s'", arg);
			return false;
		}
		break;
	case OPT_MERGE:
		o->merge_set = true;
		if (!zm_merge_mode_parse(arg, &o->p.merge)) {
			zm_cli_warn("--merge: expected route, outputs, params "
			            "or ensemble, got '%s'", arg);
			return false;
		}
		break;
	case OPT_POINT:
		if (!zm_merge_point_parse(arg, &o->p.point)) {
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
		o->p.adapt = true;
		break;
	case OPT_ADAPT_STEPS:
		if (!zm_cli_int("--adapt-steps", arg, 1, 100, &v))
			return false;
		o->p.adapt_o.steps = (size_t)v;
		break;
	case OPT_PRIOR:
		if (strcmp(arg, "metrics") != 0) {
			zm_cli_warn("--prior: expected metrics, got '%s'",
			            arg);
			return false;
		}
		o->p.use_metrics = true;
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
	case 'z': o->zoo_dir = arg; break;
	case 'm':
		if (o->n_models == MAX_MODELS) {
			zm_cli_warn("--model: at most %d", MAX_MODELS);
			return false;
		}
		o->model[o->n_models++] = arg;
		break;
	case 'M':
		if (o->n_files == MAX_MODELS) {
			zm_cli_warn("--model-file: at most %d", MAX_MODELS);
			return false;
		}
		o->model_file[o->n_files++] = arg;
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
		o->batch = (size_t)v;
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
	if (o->n_files) {
		if (o->zoo_dir || o->n_models || o->router) {
			zm_cli_warn("--model-file takes no --zoo, --model or "
			            "--router");
			return false;
		}
	} else if (!o->zoo_dir) {
		zm_cli_warn("--zoo (or --model-file) is required");
		return false;
	}
	if (o->have_level && o->gran_from) {
		zm_cli_warn("--granularity and --granularity-from exclude each "
		            "other (but for --granularity auto, whose prior it "
		            "is)");
		return false;
	}
	if (o->gran_rules && !o->gran_auto) {
		zm_cli_warn("--granularity-rules is for --granularity auto");
		return false;
	}
	if (o->gran_auto && o->p.feedback) {
		zm_cli_warn("--granularity auto does not take --feedback yet "
		            "(the Hedge scores would split between the levels)");
		return false;
	}
	if (o->weights && !o->weighting_set)
		o->p.w.kind = ZM_WEIGHTING_STATIC;
	/* The defaults decide: without weighting flags, the posterior of the
	 * models' data (density); a model without a profile then means
	 * uniform weights rather than an error.  --metric alone keeps the
	 * similarity weighting it belongs to. */
	if (!o->weighting_set && !o->weights && !o->metric_set) {
		o->p.w.kind = ZM_WEIGHTING_DENSITY;
		o->p.w.lenient = true;
	}
	/* Per-row weights, and routing on them, for the weightings that
	 * judge each row (density, router) unless asked otherwise. */
	if (o->p.w.kind == ZM_WEIGHTING_DENSITY ||
	    o->p.w.kind == ZM_WEIGHTING_ROUTER ||
	    o->p.w.kind == ZM_WEIGHTING_ROUTER_SIMILARITY) {
		if (!o->per_set)
			o->p.w.per_row = true;
		if (!o->merge_set && !o->have_level &&
		    (!o->gran_from || o->gran_auto))
			o->p.merge = ZM_MERGE_ROUTE;
	}
	if (o->p.w.kind == ZM_WEIGHTING_STATIC && !o->weights) {
		zm_cli_warn("--weighting static needs --weights FILE");
		return false;
	}
	if ((o->p.w.kind == ZM_WEIGHTING_ROUTER ||
	     o->p.w.kind == ZM_WEIGHTING_ROUTER_SIMILARITY) &&
	    (!o->router || !o->assignment)) {
		zm_cli_warn("--weighting %s needs --router NAME and --assignment "
		            "FILE", zm_weighting_name(o->p.w.kind));
		return false;
	}
	if (o->state && !o->p.feedback && !o->gran_auto) {
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
		.batch = ZM_PREDICT_BATCH_DEFAULT,
		.format = ZM_PRED_CSV,
		.compress = ZM_COMPRESS_AUTO,
		.output = "-",
		.from = ZM_DATASET_STREAM,
	};
	int status;

	zm_cli_init(argv[0]);
	zm_cli_options(options_str);
	zm_predict_options_init(&o.p);
	o.p.w.kind = ZM_WEIGHTING_SIMILARITY;
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
