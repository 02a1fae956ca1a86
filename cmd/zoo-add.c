/*
 * zoo-add: puts a model into a zoo.  From an architecture (--arch) it
 * creates a model with seeded initial weights; from a model file it checks
 * the file is a valid zoomerge/PyTorch-layout model (a PyTorch state dict,
 * safetensors or numpy .npz, given --arch takes that architecture, its
 * tensor names matched by statedict.c) and adds it as the model's next
 * version.  A created model records its origin (the digest of its
 * initial weights); an imported one has unknown lineage unless --base
 * names the zoo model it was fine-tuned from.  --rollback points a model
 * back at the version its current one was made from, or --to another.
 * --profile recomputes a model's data profile from the rows it was
 * trained on, without training (an imported model, or a profile that
 * gained content since the model was trained).
 * Every change is one atomic update of the zoo's index.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json.h"
#include "lineage.h"
#include "model.h"
#include "schema.h"
#include "statedict.h"
#include "stream.h"
#include "zoo.h"
#include "zoomodel.h"
#include "zoostore.h"

static const char usage_str[] =
	"usage: zoo-add --zoo DIR --name NAME (--arch ARCH.yaml [--seed N] | [--arch ARCH.yaml] MODEL_FILE\n"
	"               [--base MODEL | --align-to MODEL]) [--role expert|router|base]\n"
	"               [--tag KEY=VALUE]...\n"
	"               [--hparam KEY=VALUE]... [--keep K]\n"
	"       zoo-add --zoo DIR --rollback NAME [--to VERSION]\n"
	"       zoo-add --zoo DIR --name NAME --profile DATA [--max-memory MIB]\n"
	"       zoo-add -h | --help | --version\n";

/* --help: every option with its default in brackets. */
static const char options_str[] =
	"\n"
	"Creates, versions and rolls back the models of a zoo.\n"
	"\n"
	"      --zoo DIR                 the zoo directory [required]\n"
	"      --name NAME               the model's name [required]\n"
	"      --arch ARCH.yaml          create a new model from this architecture,\n"
	"                                or with MODEL_FILE (a PyTorch state dict,\n"
	"                                safetensors or .npz) the file's [none]\n"
	"      --base MODEL              the zoo model MODEL_FILE was fine-tuned from\n"
	"                                [none: unknown lineage]\n"
	"      --align-to MODEL          realign MODEL_FILE's hidden units to the zoo\n"
	"                                model MODEL's and record it [none]\n"
	"      --seed N                  seed of the initial weights [0]\n"
	"      --tag KEY=VALUE           a tag of the index entry; repeatable [none]\n"
	"      --hparam KEY=VALUE        a hyper-parameter; repeatable [none]\n"
	"      --keep K                  versions kept of each model [0: all]\n"
	"      --role ROLE               expert, router or base\n"
	"                                [the file's or earlier version's, else expert]\n"
	"      --rollback NAME           point NAME back at the version its current\n"
	"                                one was made from [none]\n"
	"      --to VERSION              the retained version to roll back to\n"
	"                                [the current version's parent]\n"
	"      --profile DATA            store NAME's data profile computed from the\n"
	"                                rows of DATA (a data stream, - for stdin)\n"
	"                                as its next version, without training [none]\n"
	"      --max-memory MIB          with --profile: the most memory the rows may\n"
	"                                take [8192]\n"
	"  -h, --help                    print this help and exit\n"
	"      --version                 print the version and exit\n";

struct zoo_add_opts {
	const char *zoo_dir;
	const char *name;
	const char *arch_path;
	const char *model_path;
	const char *rollback;
	const char *role;          /* --role, or NULL */
	const char *base;          /* --base: lineage of an imported file */
	const char *align_to;      /* --align-to: realign the file's units */
	const char *profile;       /* --profile DATA */
	uint64_t max_memory;       /* --max-memory, bytes */
	bool max_memory_set;
	int64_t to;                /* --rollback --to; 0: the parent */
	uint64_t seed;
	bool seed_set;
	int64_t keep;              /* -1: leave the zoo's setting */
	struct zm_kv_list tags;
	struct zm_kv_list hparams;
};

/* Adds the model and says what it noticed about --base. */
static enum zm_status add_model(const struct zoo_add_opts *o,
                                struct zm_zoo *zoo, int64_t *version,
                                struct zm_error *err)
{
	struct zm_zoo_add a = {
		.name = o->name, .arch_path = o->arch_path,
		.model_path = o->model_path, .base = o->base, .role = o->role,
		.align_to = o->align_to,
		.seed = o->seed, .tags = &o->tags, .hparams = &o->hparams,
	};
	struct zm_zoo_add_notes notes;
	enum zm_status st;

	st = zm_zoo_add_model(zoo, &a, version, &notes, err);
	if (notes.base_failed)
		zm_error_prefix(err, "--base: ");
	if (notes.needs_arch)
		zm_error_suffix(err, "; give it with --arch");
	if (notes.base_unknown)
		zm_cli_warn("--base %s: its own lineage is unknown, so is "
		            "%s's", o->base, o->name);
	if (notes.base_unrelated)
		zm_cli_warn("--base %s: the weights do not align with %s's "
		            "(%.3f < %.2f at layer '%s'); recorded as its "
		            "descendant anyway", o->base, o->base,
		            notes.alignment, ZM_LINEAGE_THRESHOLD,
		            notes.worst_layer);
	if (st == ZM_OK && o->align_to)
		zm_cli_warn("%s realigned to %s: %zu units moved, alignment "
		            "%.3f -> %.3f: %s", o->name, notes.aligned_to,
		            notes.align_moved, notes.align_before,
		            notes.align_after, notes.align_related ?
		            "related" : "still unrelated (below the threshold)");
	return st;
}

static int run(const struct zoo_add_opts *o)
{
	struct zm_error err;
	struct zm_zoo *zoo = NULL;
	enum zm_status st;
	int64_t version = 0;

	zm_error_clear(&err);
	st = zm_zoo_open(&zoo, o->zoo_dir, ZM_ZOO_WRITE |
	                 (o->rollback || o->profile ? 0 : ZM_ZOO_CREATE), &err);
	if (st != ZM_OK)
		goto out;
	if (o->keep >= 0)
		zoo->keep = o->keep;
	if (o->rollback) {
		struct zm_zoo_entry *e;
		struct zm_model *m = NULL;
		st = zm_zoo_rollback_to(zoo, o->rollback, o->to, &err);
		/* The parameter count of the version rolled back to. */
		if (st == ZM_OK) {
			e = zm_zoo_find(zoo, o->rollback);
			version = e->version;
			st = zm_zoo_load_entry(zoo, e, &m, &err);
		}
		if (st == ZM_OK)
			e->params = (int64_t)zm_arch_param_count(m->arch);
		zm_model_free(m);
	} else if (o->profile) {
		st = zm_zoo_profile_model(zoo, o->name, o->profile,
		                          o->max_memory, &version, &err);
	} else {
		st = add_model(o, zoo, &version, &err);
	}
	if (st == ZM_OK)
		st = zm_zoo_commit(zoo, &err);
	if (st == ZM_OK)
		fprintf(stderr, "%s: %s %s v%" PRId64 "\n", zm_cli_name(),
		        o->rollback ? o->rollback : o->name,
		        o->rollback ? "rolled back to" : "is now", version);
out:
	zm_zoo_close(zoo);
	return st == ZM_OK ? ZM_EXIT_OK : zm_cli_report(&err);
}

static const struct option longopts[] = {
	{ "zoo", required_argument, NULL, 'z' },
	{ "name", required_argument, NULL, 'n' },
	{ "arch", required_argument, NULL, 'a' },
	{ "seed", required_argument, NULL, 's' },
	{ "tag", required_argument, NULL, 't' },
	{ "hparam", required_argument, NULL, 'p' },
	{ "keep", required_argument, NULL, 'k' },
	{ "rollback", required_argument, NULL, 'r' },
	{ "role", required_argument, NULL, 'R' },
	{ "to", required_argument, NULL, 'T' },
	{ "base", required_argument, NULL, 'b' },
	{ "align-to", required_argument, NULL, 'A' },
	{ "profile", required_argument, NULL, 'P' },
	{ "max-memory", required_argument, NULL, 'M' },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

static bool parse_option(void *ctx, int c, const char *arg)
{
	struct zoo_add_opts *o = ctx;
	struct zm_error err;
	enum zm_role role;
	int64_t v;

	switch (c) {
	case 'z': o->zoo_dir = arg; return true;
	case 'n': o->name = arg; return true;
	case 'a': o->arch_path = arg; return true;
	case 'r': o->rollback = arg; return true;
	case 'b': o->base = arg; return true;
	case 'A': o->align_to = arg; return true;
	case 'P': o->profile = arg; return true;
	case 'M':
		if (!zm_cli_int("--max-memory", arg, 1, INT32_MAX, &v))
			return false;
		o->max_memory = (uint64_t)v << 20;
		o->max_memory_set = true;
		return true;
	case 'R':
		if (!zm_role_parse(arg, &role)) {
			zm_cli_warn("--role: expected expert, router or base, "
			            "got '%s'", arg);
			return false;
		}
		o->role = arg;
		return true;
	case 'T':
		return zm_cli_int("--to", arg, 1, INT32_MAX, &o->to);
	case 's':
		if (!zm_cli_int("--seed", arg, 0, INT64_MAX, &v))
			return false;
		o->seed = (uint64_t)v;
		o->seed_set = true;
		return true;
	case 'k':
		if (!zm_cli_int("--keep", arg, 0, INT32_MAX, &v))
			return false;
		o->keep = v;
		return true;
	case 't':
	case 'p':
		zm_error_clear(&err);
		if (zm_kv_parse_assignment(c == 't' ? &o->tags : &o->hparams,
		                           arg, &err) != ZM_OK) {
			zm_cli_report(&err);
			return false;
		}
		return true;
	default:
		return false;
	}
}

/* The combinations of options; prints what is wrong. */
static bool validate(const struct zoo_add_opts *o)
{
	if (!o->zoo_dir)
		zm_cli_warn("--zoo is required");
	else if (o->rollback && (o->name || o->arch_path || o->model_path ||
	                         o->base || o->role || o->align_to ||
	                         o->profile))
		zm_cli_warn("--rollback takes no --name, --arch, --base, "
		            "--align-to, --role, --profile or model file");
	else if (o->rollback)
		return true;
	else if (o->profile && (o->arch_path || o->model_path || o->base ||
	                        o->align_to || o->role || o->tags.count ||
	                        o->hparams.count || o->keep >= 0 ||
	                        o->seed_set))
		zm_cli_warn("--profile takes only --zoo, --name and "
		            "--max-memory");
	else if (o->max_memory_set && !o->profile)
		zm_cli_warn("--max-memory goes with --profile");
	else if (!o->name)
		zm_cli_warn("--name is required");
	else if (!zm_zoo_valid_name(o->name))
		zm_cli_warn("--name: '%s' is not a valid model name (letters, "
		            "digits, '_', '.', '-'; at most 63)", o->name);
	else if (o->profile)
		return true;
	else if (!o->arch_path && !o->model_path)
		zm_cli_warn("give --arch, a model file, or both");
	else if (o->to)
		zm_cli_warn("--to goes with --rollback");
	else if (o->align_to && !o->model_path)
		zm_cli_warn("--align-to goes with a model file");
	else if (o->align_to && o->base)
		zm_cli_warn("--align-to does not go with --base (a model "
		            "fine-tuned from a base shares its units already)");
	else if (o->base && !o->model_path)
		zm_cli_warn("--base goes with a model file (a model created "
		            "from --arch has its own origin)");
	else
		return true;
	return false;
}

int main(int argc, char **argv)
{
	struct zoo_add_opts o = { .seed = 0, .keep = -1,
	                          .max_memory = (uint64_t)8 << 30 };
	int status;

	zm_cli_init(argv[0]);
	zm_cli_options(options_str);
	status = zm_cli_getopt(argc, argv, "z:n:a:s:t:p:k:r:h", longopts,
	                       usage_str, parse_option, &o, &o.model_path);
	if (status < 0 && !validate(&o))
		status = zm_cli_usage_error(usage_str, NULL);
	if (status < 0)
		status = zm_cli_close_stdout(run(&o));
	zm_kv_release(&o.tags);
	zm_kv_release(&o.hparams);
	return status;
}
