/*
 * merge: two jobs.  Given update streams (train-step's output), it applies
 * them to the zoo: per model the weighted average of its updates, shared
 * across the models that trained on a common slice on the units a
 * granularity decision marks shared (FedAvg with partial sharing), every
 * affected model moving to its next version in one atomic commit.  Given
 * --method, it merges models statically into one model file (linear, task
 * arithmetic, TIES, DARE, SLERP), streaming tensor by tensor.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "align.h"
#include "cli.h"
#include "granularity.h"
#include "lineage.h"
#include "mem.h"
#include "merge.h"
#include "mergekit.h"
#include "stream.h"
#include "update.h"
#include "zoo.h"
#include "zoomodel.h"

static const char usage_str[] =
	"usage: merge --zoo DIR [--granularity full|group|layer [--share all|none|groups=G,...|layers=L,...]\n"
	"             | --granularity-from FILE] [--rebase] [--allow-unrelated] UPDATES...\n"
	"       merge --method linear|task-arithmetic|ties|dare|slerp [--weights W,...] [--config FILE]\n"
	"             [--granularity full|group|layer] [--base MODEL] [--zoo DIR]\n"
	"             [--missing error|copy-base] [--shard-size BYTES[K|M|G]] -o OUT MODEL...\n"
	"       merge --mergekit-config FILE [--seed N] [--zoo DIR] [--missing error|copy-base]\n"
	"             [--shard-size BYTES[K|M|G]] [--compress 0..9] -o OUT\n"
	"  static:  --density D  --lambda L  --drop P  --dare-ties  --seed N  --name NAME\n"
	"           --compress 0..9  --allow-unrelated  --align\n"
	"  output:  --quiet\n"
	"       merge -h | --help | --version\n";

/* --help: every option with its default in brackets. */
static const char options_str[] =
	"\n"
	"Applies update streams to the zoo, or merges models statically.\n"
	"\n"
	"      --zoo DIR                 the model zoo [required to apply]\n"
	"      --granularity LEVEL       full, group or layer\n"
	"                                [full when applying, layer when merging]\n"
	"      --share SPEC              all, none, groups=G,... or layers=L,... [all]\n"
	"      --granularity-from FILE   a granctl decision [none]\n"
	"      --rebase                  apply updates of a superseded version [off]\n"
	"      --allow-unrelated         merge or share units of unrelated models\n"
	"                                [off: refused]\n"
	"      --align                   realign every model's hidden units to the\n"
	"                                base's (else the first's) first [off]\n"
	"      --method METHOD           linear, task-arithmetic, ties, dare or slerp\n"
	"                                [none: apply updates]\n"
	"      --weights W,...           one weight per model [equal]\n"
	"      --config FILE             merge config (YAML) [none]\n"
	"      --mergekit-config FILE    a mergekit YAML config: method, models and\n"
	"                                parameters from it [none]\n"
	"      --base MODEL              base of the task-vector methods [none]\n"
	"      --density D               ties/dare density [0.2]\n"
	"      --lambda L                task-vector scale [1]\n"
	"      --drop P                  dare drop probability [0.9]\n"
	"      --dare-ties               dare with ties' sign election [off]\n"
	"      --seed N                  dare's seed [0]\n"
	"      --name NAME               zm.name of the merged model [none]\n"
	"      --compress LEVEL          gzip level 0..9 [ZM_COMPRESS, else per payload;\n"
	"                                plain safetensors for OUT *.safetensors]\n"
	"      --missing WHAT            plain checkpoints: a tensor some models lack is\n"
	"                                an error or copied from the base [error]\n"
	"      --shard-size BYTES        plain checkpoints: OUT is a directory of shards\n"
	"                                and model.safetensors.index.json [one file]\n"
	"  -o, --output OUT              the merged model file [required to merge]\n"
	"      --quiet                   no summary [off]\n"
	"  -h, --help                    print this help and exit\n"
	"      --version                 print the version and exit\n";

struct merge_opts {
	const char *zoo_dir;
	const char *level_text;
	const char *share;
	const char *decision_path;
	bool rebase;
	bool quiet;
	bool allow_unrelated;
	bool align;
	const char *method_text;
	const char *weights_text;
	const char *config_path;
	const char *mergekit_path;
	const char *base;
	const char *out;
	const char *name;
	int compress;
	bool set_compress;
	bool copy_missing;
	uint64_t shard_size;
	struct zm_merge_params params;
	bool set_density, set_lambda, set_drop, set_seed, set_dare_ties;
	char **args;
	size_t n_args;
};

/* --share before any update is read, in the words of the options (the
 * library checks the same and more, against each model). */
static enum zm_status check_share(const char *share, enum zm_gran_level level,
                                  struct zm_error *err)
{
	const char *p;
	bool groups = strncmp(share, "groups=", 7) == 0;

	if (strcmp(share, "all") == 0 || strcmp(share, "none") == 0)
		return ZM_OK;
	if (!groups && strncmp(share, "layers=", 7) != 0)
		return zm_error_set(err, ZM_ERR_USAGE, "--share: expected all, "
		                    "none, groups=G,... or layers=L,..., not '%s'",
		                    share);
	if (groups && level == ZM_GRAN_FULL)
		return zm_error_set(err, ZM_ERR_USAGE, "--share groups=... "
		                    "needs --granularity group or layer");
	if (!groups && level != ZM_GRAN_LAYER)
		return zm_error_set(err, ZM_ERR_USAGE, "--share layers=... "
		                    "needs --granularity layer");
	for (p = share + 7;; p += strcspn(p, ",") + 1) {
		size_t len = strcspn(p, ",");

		if (len == 0 || len > ZM_LAYER_NAME_MAX)
			return zm_error_set(err, ZM_ERR_USAGE, "--share: expected "
			                    "NAME,... in '%s'", share + 7);
		if (p[len] == '\0')
			return ZM_OK;
	}
}

static int run_apply(const struct merge_opts *o)
{
	struct zm_error err;
	struct zm_zoo *zoo = NULL;
	struct zm_doc *docs = NULL;
	struct zm_gran_decision dec;
	struct zm_apply_opts ao;
	struct zm_apply_result res;
	enum zm_status st;
	size_t n_docs = 0, i;

	zm_error_clear(&err);
	zm_gran_decision_init(&dec);
	memset(&res, 0, sizeof(res));
	memset(&ao, 0, sizeof(ao));
	ao.rebase = o->rebase;
	ao.allow_unrelated = o->allow_unrelated;
	ao.share = o->share;
	if (o->level_text)
		zm_gran_level_parse(o->level_text, &ao.level);
	if (o->share && (st = check_share(o->share, ao.level, &err)))
		goto out;
	/* The decision is checked against each model's arch when applied. */
	if (o->decision_path &&
	    (st = zm_gran_decision_load(o->decision_path, NULL, &dec, &err)))
		goto out;
	if (o->decision_path)
		ao.decision = &dec;
	if ((st = zm_update_read_all((const char *const *)o->args, o->n_args,
	                              &docs, &n_docs, &err)))
		goto out;
	if (n_docs == 0) {
		st = zm_error_set(&err, ZM_ERR_DATA, "no update documents in "
		                  "the input");
		goto out;
	}
	if ((st = zm_zoo_open(&zoo, o->zoo_dir, ZM_ZOO_WRITE, &err)))
		goto out;
	if ((st = zm_merge_apply_updates(zoo, docs, n_docs, &ao, &res, &err)))
		goto out;
	for (i = 0; !o->quiet && i < res.n_models; i++)
		printf("%s: v%" PRId64 " -> v%" PRId64 " (%zu update%s, %.0f "
		       "samples)\n", res.models[i].name, res.models[i].old_version,
		       res.models[i].new_version, res.models[i].n_updates,
		       res.models[i].n_updates == 1 ? "" : "s",
		       res.models[i].samples);
out:
	zm_zoo_close(zoo);
	for (i = 0; i < n_docs; i++)
		zm_doc_release(&docs[i]);
	free(docs);
	zm_gran_decision_release(&dec);
	zm_apply_result_release(&res);
	return st == ZM_OK ? ZM_EXIT_OK : zm_cli_report(&err);
}

/* The method and its parameters: the options over the config's. */
static enum zm_status static_method(const struct merge_opts *o,
                                    const struct zm_merge_config *cfg,
                                    struct zm_merge_static_opts *so,
                                    struct zm_error *err)
{
	so->params = cfg->params;
	if (o->set_density) so->params.density = o->params.density;
	if (o->set_lambda) so->params.lambda = o->params.lambda;
	if (o->set_drop) so->params.drop = o->params.drop;
	if (o->set_seed) so->params.seed = o->params.seed;
	if (o->set_dare_ties) so->params.dare_ties = o->params.dare_ties;
	if (o->method_text)
		zm_merge_method_parse(o->method_text, &so->method);
	else if (cfg->has_method)
		so->method = cfg->method;
	else
		return zm_error_set(err, ZM_ERR_USAGE, "no --method (and no "
		                    "method: in the config)");
	so->level = ZM_GRAN_LAYER;
	if (o->level_text)
		zm_gran_level_parse(o->level_text, &so->level);
	return ZM_OK;
}

/* The n models' labels and the config's weight spec of each, and
 * --weights, which overrides them. */
static enum zm_status static_models(const struct merge_opts *o,
                                    const struct zm_merge_config *cfg,
                                    size_t n, const char **labels,
                                    const struct zm_node **specs,
                                    double *weights, struct zm_error *err)
{
	const char *bad;
	size_t i, bad_len;
	enum zm_status st;

	if ((st = zm_merge_config_models(cfg, o->config_path,
	                                 o->n_args ? (const char *const *)o->args
	                                           : NULL,
	                                 n, labels, specs, weights, err)))
		return st;
	if (!o->weights_text)
		return ZM_OK;
	if (!zm_parse_weights(o->weights_text, n, weights, &bad, &bad_len)) {
		if (bad)
			return zm_error_set(err, ZM_ERR_USAGE, "--weights: "
			                    "'%.*s' is not a finite number in "
			                    "[0, 1e6]", (int)bad_len, bad);
		return zm_error_set(err, ZM_ERR_USAGE, "--weights: expected "
		                    "%zu numbers separated by commas", n);
	}
	for (i = 0; i < n; i++)
		specs[i] = NULL;
	return ZM_OK;
}

/*
 * --align: each model but the reference (the base, else the first)
 * realigned to it into a temporary directory (*t, removed by
 * zm_align_temp_remove), paths[i] then naming its file.
 */
static enum zm_status align_models(const struct merge_opts *o, char **paths,
                                   const char **labels, size_t n,
                                   const char *base_path,
                                   const char *base_label,
                                   struct zm_align_temp *t,
                                   struct zm_error *err)
{
	const char *ref_path = base_path ? base_path : paths[0];
	const char *ref_label = base_path ? base_label : labels[0];
	enum zm_status st;
	size_t i;

	st = zm_align_to_temp(NULL, ref_path, ref_label,
	                      (const char *const *)paths, n, base_path ? 0 : 1,
	                      t, err);
	for (i = 0; i < n; i++) {
		if (!t->paths || !t->paths[i])
			continue;
		if (!o->quiet)
			fprintf(stderr, "%s: %s realigned to %s: %zu units moved, "
			        "alignment %.3f -> %.3f\n", zm_cli_name(),
			        labels[i], ref_label, t->info[i].moved,
			        t->info[i].before, t->info[i].after);
		free(paths[i]);
		paths[i] = t->paths[i];
		t->paths[i] = NULL;
	}
	if (st != ZM_OK)
		zm_error_prefix(err, "--align: ");
	return st;
}

static int run_static(const struct merge_opts *o)
{
	struct zm_error err;
	struct zm_zoo *zoo = NULL;
	struct zm_merge_config cfg;
	struct zm_merge_static_opts so;
	const char **labels = NULL;
	char **paths = NULL, *base_path = NULL;
	struct zm_align_temp aligned;
	const struct zm_node **specs = NULL;
	double *weights = NULL;
	char origin[ZM_LINEAGE_ID_MAX + 8] = "";
	bool plain = false;
	enum zm_status st = ZM_OK;
	size_t n = 0, i;

	zm_error_clear(&err);
	zm_merge_config_init(&cfg);
	memset(&so, 0, sizeof(so));
	memset(&aligned, 0, sizeof(aligned));
	if (o->config_path &&
	    (st = zm_merge_config_load(o->config_path, &cfg, &err)))
		goto out;
	if ((st = static_method(o, &cfg, &so, &err)))
		goto out;
	n = o->n_args ? o->n_args : cfg.n_models;
	if (n == 0) {
		st = zm_error_set(&err, ZM_ERR_USAGE, "no models to merge");
		goto out;
	}
	/* One more label and path: the base, for the lineage check. */
	labels = zm_calloc(n + 1, sizeof(*labels));
	paths = zm_calloc(n + 1, sizeof(*paths));
	specs = zm_calloc(n, sizeof(*specs));
	weights = zm_calloc(n, sizeof(*weights));
	if (!labels || !paths || !specs || !weights) {
		st = zm_error_set(&err, ZM_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((st = static_models(o, &cfg, n, labels, specs, weights, &err)))
		goto out;
	if (o->zoo_dir && (st = zm_zoo_open(&zoo, o->zoo_dir, ZM_ZOO_READ, &err)))
		goto out;
	for (i = 0; i < n && st == ZM_OK; i++)
		st = zm_zoo_model_file(zoo, labels[i], &paths[i], &err);
	so.base_label = o->base ? o->base : cfg.base;
	if (st == ZM_OK && so.base_label)
		st = zm_zoo_model_file(zoo, so.base_label, &base_path, &err);
	if (st != ZM_OK)
		goto out;
	if (o->align && (st = align_models(o, paths, labels, n, base_path,
	                                   so.base_label, &aligned, &err)))
		goto out;
	/* Parameters average meaningfully only across models whose units
	 * correspond: the base and every model against the first.  Plain
	 * checkpoints (no zm.arch) carry no lineage: fine-tunes of one base,
	 * as mergekit users merge them, are not refused. */
	if (base_path) {
		paths[n] = base_path;
		labels[n] = so.base_label;
	}
	if ((st = zm_merge_probe_plain(paths[0], &plain, &err)) == ZM_OK &&
	    !plain)
		st = zm_lineage_check_files((const char *const *)paths, labels,
		                            n + (base_path != NULL),
		                            !o->allow_unrelated, "nothing was "
		                            "written (give --allow-unrelated to "
		                            "merge them anyway)", origin, &err);
	paths[n] = NULL;
	if (st != ZM_OK)
		goto out;
	if (*origin)
		so.origin = origin;
	so.n_models = n;
	so.paths = (const char *const *)paths;
	so.labels = labels;
	so.weight_specs = specs;
	so.weights = weights;
	so.base_path = base_path;
	so.out = o->out;
	so.name = o->name;
	so.compress = o->compress;
	if (n > 0 && zm_merge_method_needs_base(so.method) && !base_path) {
		st = zm_error_set(&err, ZM_ERR_USAGE, "%s needs a base model "
		                  "(--base or base: in the config)",
		                  zm_merge_method_name(so.method));
		goto out;
	}
	so.copy_missing = o->copy_missing;
	so.shard_size = o->shard_size;
	/* The name says what the file is: plain safetensors bytes for
	 * *.safetensors, gzip otherwise. */
	if (!o->set_compress)
		so.compress = zm_compress_for_path(o->out, so.compress);
	st = zm_merge_static(&so, &err);
	if (st == ZM_OK && !o->quiet && strcmp(o->out, "-") != 0)
		fprintf(stderr, "%s: %s merge of %zu models written to %s\n",
		        zm_cli_name(), zm_merge_method_name(so.method), n, o->out);
out:
	zm_zoo_close(zoo);
	zm_align_temp_remove(&aligned);
	for (i = 0; paths && i < n; i++)
		free(paths[i]);
	free(paths);
	free(base_path);
	free(labels);
	free(specs);
	free(weights);
	zm_merge_config_release(&cfg);
	return st == ZM_OK ? ZM_EXIT_OK : zm_cli_report(&err);
}

/* --mergekit-config: the plan of mergekit.h run as a plain merge. */
static int run_mergekit(const struct merge_opts *o)
{
	struct zm_error err;
	struct zm_zoo *zoo = NULL;
	struct zm_mergekit mk;
	struct zm_mergekit_plan plan;
	struct zm_merge_static_opts so;
	char **paths = NULL, *base_path = NULL;
	double *weights = NULL;
	enum zm_status st;
	size_t i;

	zm_error_clear(&err);
	zm_mergekit_init(&mk);
	memset(&plan, 0, sizeof(plan));
	memset(&so, 0, sizeof(so));
	if ((st = zm_mergekit_load(o->mergekit_path, &mk, &err)))
		goto out;
	for (i = 0; i < mk.n_warnings; i++)
		fprintf(stderr, "%s: warning: %s\n", zm_cli_name(),
		        mk.warnings[i]);
	if ((st = zm_mergekit_plan_init(&plan, &mk, &err)))
		goto out;
	if (!(paths = zm_calloc(plan.n, sizeof(*paths))) ||
	    !(weights = zm_calloc(plan.n, sizeof(*weights)))) {
		st = zm_error_set(&err, ZM_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (o->zoo_dir && (st = zm_zoo_open(&zoo, o->zoo_dir, ZM_ZOO_READ, &err)))
		goto out;
	for (i = 0; i < plan.n && st == ZM_OK; i++)
		st = zm_zoo_model_file(zoo, plan.labels[i], &paths[i], &err);
	if (st == ZM_OK && plan.base)
		st = zm_zoo_model_file(zoo, plan.base, &base_path, &err);
	if (st != ZM_OK)
		goto out;
	so.method = plan.method;
	so.params = plan.params;
	if (o->set_seed)
		so.params.seed = o->params.seed;
	so.n_models = plan.n;
	so.paths = (const char *const *)paths;
	so.labels = plan.labels;
	so.weights = weights;
	so.base_path = base_path;
	so.base_label = plan.base;
	so.out = o->out;
	so.compress = o->compress;
	so.copy_missing = o->copy_missing;
	so.shard_size = o->shard_size;
	so.tensor_params = zm_mergekit_tensor_params;
	so.tensor_ctx = &plan;
	so.set_dtype = mk.set_dtype;
	so.out_dtype = mk.dtype;
	if (!o->set_compress)
		so.compress = zm_compress_for_path(o->out, so.compress);
	st = zm_merge_plain(&so, &err);
	if (st == ZM_OK && !o->quiet && strcmp(o->out, "-") != 0)
		fprintf(stderr, "%s: mergekit %s merge of %zu models written to "
		        "%s\n", zm_cli_name(), mk.method_name, plan.n, o->out);
out:
	zm_zoo_close(zoo);
	for (i = 0; paths && i < plan.n; i++)
		free(paths[i]);
	free(paths);
	free(base_path);
	free(weights);
	zm_mergekit_plan_release(&plan);
	zm_mergekit_release(&mk);
	return st == ZM_OK ? ZM_EXIT_OK : zm_cli_report(&err);
}

enum {
	OPT_GRAN = 256, OPT_SHARE, OPT_GRAN_FROM, OPT_REBASE,
	OPT_METHOD, OPT_WEIGHTS, OPT_CONFIG, OPT_BASE, OPT_DENSITY, OPT_LAMBDA,
	OPT_DROP, OPT_DARE_TIES, OPT_SEED, OPT_NAME, OPT_COMPRESS, OPT_QUIET,
	OPT_ALLOW_UNRELATED, OPT_MISSING, OPT_SHARD_SIZE, OPT_MERGEKIT,
	OPT_ALIGN
};

static bool parse_option(void *ctx, int c, const char *arg)
{
	struct merge_opts *o = ctx;
	enum zm_gran_level level;
	enum zm_merge_method method;
	int64_t v;

	switch (c) {
	case 'z': o->zoo_dir = arg; break;
	case 'o': o->out = arg; break;
	case OPT_GRAN:
		if (!zm_gran_level_parse(arg, &level)) {
			zm_cli_warn("--granularity: expected full, group or "
			            "layer");
			return false;
		}
		o->level_text = arg;
		break;
	case OPT_SHARE: o->share = arg; break;
	case OPT_GRAN_FROM: o->decision_path = arg; break;
	case OPT_REBASE: o->rebase = true; break;
	case OPT_METHOD:
		if (!zm_merge_method_parse(arg, &method)) {
			zm_cli_warn("--method: expected linear, task-arithmetic, "
			            "ties, dare or slerp");
			return false;
		}
		o->method_text = arg;
		break;
	case OPT_WEIGHTS: o->weights_text = arg; break;
	case OPT_CONFIG: o->config_path = arg; break;
	case OPT_MERGEKIT: o->mergekit_path = arg; break;
	case OPT_BASE: o->base = arg; break;
	case OPT_DENSITY:
		o->set_density = true;
		return zm_cli_double("--density", arg, 1e-9, 1,
		                     &o->params.density);
	case OPT_LAMBDA:
		o->set_lambda = true;
		return zm_cli_double("--lambda", arg, -1e6, 1e6,
		                     &o->params.lambda);
	case OPT_DROP:
		o->set_drop = true;
		return zm_cli_double("--drop", arg, 0, 0.999999,
		                     &o->params.drop);
	case OPT_DARE_TIES:
		o->params.dare_ties = true;
		o->set_dare_ties = true;
		break;
	case OPT_SEED:
		if (!zm_cli_int("--seed", arg, 0, INT64_MAX, &v))
			return false;
		o->params.seed = (uint64_t)v;
		o->set_seed = true;
		break;
	case OPT_NAME: o->name = arg; break;
	case OPT_COMPRESS:
		if (!zm_cli_int("--compress", arg, 0, 9, &v))
			return false;
		o->compress = (int)v;
		o->set_compress = true;
		break;
	case OPT_SHARD_SIZE:
		if (!zm_parse_size(arg, &o->shard_size)) {
			zm_cli_warn("--shard-size: expected a positive number "
			            "of bytes with an optional K, M or G");
			return false;
		}
		break;
	case OPT_MISSING:
		if (strcmp(arg, "copy-base") != 0 && strcmp(arg, "error") != 0) {
			zm_cli_warn("--missing: expected error or copy-base");
			return false;
		}
		o->copy_missing = strcmp(arg, "copy-base") == 0;
		break;
	case OPT_QUIET: o->quiet = true; break;
	case OPT_ALLOW_UNRELATED: o->allow_unrelated = true; break;
	case OPT_ALIGN: o->align = true; break;
	default:
		return false;
	}
	return true;
}

/*
 * Which of the three merges the options ask for: 'k' a mergekit config,
 * 's' a static merge, 'a' applying updates; *msg says what is wrong when
 * the options do not go together, else NULL.
 */
static int merge_mode(struct merge_opts *o, const char **msg)
{
	static const char *apply_only = "--share, --granularity-from and "
	        "--rebase apply updates; they do not go with --method";

	*msg = NULL;
	if (o->align && (o->mergekit_path || !(o->method_text ||
	                                        o->config_path || o->out))) {
		*msg = "--align goes with --method or --config (a static merge "
		       "of zoomerge models)";
		return 's';
	}
	if (o->mergekit_path) {
		if (o->method_text || o->config_path || o->weights_text ||
		    o->base || o->level_text || o->set_density ||
		    o->set_lambda || o->set_drop || o->set_dare_ties ||
		    o->n_args)
			*msg = "--mergekit-config names the method, models and "
			       "parameters; it does not go with --method, "
			       "--config, --weights, --base, --granularity, "
			       "--density, --lambda, --drop, --dare-ties or "
			       "MODEL arguments";
		else if (o->share || o->decision_path || o->rebase)
			*msg = "--share, --granularity-from and --rebase apply "
			       "updates; they do not go with --mergekit-config";
		else if (!o->out)
			*msg = "-o OUT is required for a static merge";
		return 'k';
	}
	if (o->method_text || o->config_path || o->out) {
		if (o->share || o->decision_path || o->rebase)
			*msg = apply_only;
		else if (!o->out)
			*msg = "-o OUT is required for a static merge";
		return 's';
	}
	if (!o->zoo_dir)
		*msg = "--zoo is required to apply updates (or give --method "
		       "to merge models)";
	else if (o->decision_path && (o->level_text || o->share))
		*msg = "--granularity-from does not go with --granularity or "
		       "--share";
	else if (o->n_args == 0)
		*msg = "no update streams given";
	if (o->share && !o->level_text)
		o->level_text = strncmp(o->share, "groups=", 7) == 0 ? "group"
		              : strncmp(o->share, "layers=", 7) == 0 ? "layer"
		              : "full";
	return 'a';
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "zoo", required_argument, NULL, 'z' },
		{ "granularity", required_argument, NULL, OPT_GRAN },
		{ "share", required_argument, NULL, OPT_SHARE },
		{ "granularity-from", required_argument, NULL, OPT_GRAN_FROM },
		{ "rebase", no_argument, NULL, OPT_REBASE },
		{ "method", required_argument, NULL, OPT_METHOD },
		{ "weights", required_argument, NULL, OPT_WEIGHTS },
		{ "config", required_argument, NULL, OPT_CONFIG },
		{ "mergekit-config", required_argument, NULL, OPT_MERGEKIT },
		{ "base", required_argument, NULL, OPT_BASE },
		{ "density", required_argument, NULL, OPT_DENSITY },
		{ "lambda", required_argument, NULL, OPT_LAMBDA },
		{ "drop", required_argument, NULL, OPT_DROP },
		{ "dare-ties", no_argument, NULL, OPT_DARE_TIES },
		{ "seed", required_argument, NULL, OPT_SEED },
		{ "name", required_argument, NULL, OPT_NAME },
		{ "compress", required_argument, NULL, OPT_COMPRESS },
		{ "missing", required_argument, NULL, OPT_MISSING },
		{ "shard-size", required_argument, NULL, OPT_SHARD_SIZE },
		{ "output", required_argument, NULL, 'o' },
		{ "quiet", no_argument, NULL, OPT_QUIET },
		{ "allow-unrelated", no_argument, NULL, OPT_ALLOW_UNRELATED },
		{ "align", no_argument, NULL, OPT_ALIGN },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	struct merge_opts o;
	const char *msg;
	int status, mode;

	memset(&o, 0, sizeof(o));
	zm_merge_params_init(&o.params);
	o.compress = ZM_COMPRESS_AUTO;
	zm_cli_init(argv[0]);
	zm_cli_options(options_str);
	if (!zm_compress_from_env(&o.compress))
		return zm_cli_usage_error(usage_str, "ZM_COMPRESS: expected 0..9");
	status = zm_cli_getopt(argc, argv, "z:o:h", longopts, usage_str,
	                       parse_option, &o, NULL);
	if (status >= 0)
		return status;
	o.args = argv + optind;
	o.n_args = (size_t)(argc - optind);
	mode = merge_mode(&o, &msg);
	if (msg)
		return zm_cli_usage_error(usage_str, "%s", msg);
	return zm_cli_close_stdout(mode == 'k' ? run_mergekit(&o)
	                           : mode == 's' ? run_static(&o)
	                           : run_apply(&o));
}
