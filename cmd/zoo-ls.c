/*
 * zoo-ls: prints a zoo's index — each model's name, current version,
 * retained versions, parameter count, metrics and tags — as a table for
 * people or as YAML (the zoo.yaml format) for programs.  It reads only the
 * index, under a shared lock, so it never sees a half-made change.  With
 * --related it reads the models too and prints, for every two of them,
 * whether their units correspond (lineage.h): by their recorded origins,
 * or by the alignment of their weights when an origin is unknown.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "lineage.h"
#include "model.h"
#include "schema.h"
#include "zoo.h"
#include "zoomodel.h"

static const char usage_str[] =
	"usage: zoo-ls --zoo DIR [--format table|yaml] [--related]\n"
	"       zoo-ls -h | --help | --version\n";

/* --help: every option with its default in brackets. */
static const char options_str[] =
	"\n"
	"Lists the models of a zoo.\n"
	"\n"
	"      --zoo DIR                 the zoo directory [required]\n"
	"      --format table|yaml       the output format [table]\n"
	"      --related                 whether every two models can be merged\n"
	"                                (origin, alignment) [off]\n"
	"  -h, --help                    print this help and exit\n"
	"      --version                 print the version and exit\n";

struct zoo_ls_opts {
	const char *zoo_dir;
	bool yaml;
	bool related;
};

static void print_kv(const struct zm_kv_list *l)
{
	size_t i;

	for (i = 0; i < l->count; i++)
		printf("%s%s=%s", i ? "," : "", l->items[i].key,
		       l->items[i].value);
	if (l->count == 0)
		fputs("-", stdout);
}

static const char *metric_or_dash(const struct zm_zoo_entry *e,
                                  const char *key)
{
	const char *v = zm_kv_get(&e->metrics, key);

	return v ? v : "-";
}

static void print_table(const struct zm_zoo *zoo)
{
	size_t i, w = 4;

	for (i = 0; i < zoo->n_models; i++)
		if (strlen(zoo->models[i].name) > w)
			w = strlen(zoo->models[i].name);
	printf("%-*s %7s %8s %10s %9s %9s %8s %-6s  %s\n", (int)w, "NAME",
	       "VERSION", "VERSIONS", "PARAMS", "ACCURACY", "LOSS",
	       "SAMPLES", "ROLE", "TAGS");
	for (i = 0; i < zoo->n_models; i++) {
		const struct zm_zoo_entry *e = &zoo->models[i];
		const char *role = zm_kv_get(&e->tags, ZM_ROLE_TAG);
		printf("%-*s %7" PRId64 " %8zu %10" PRId64 " %9s %9s %8s %-6s  ",
		       (int)w, e->name, e->version, e->n_versions, e->params,
		       metric_or_dash(e, "accuracy"), metric_or_dash(e, "loss"),
		       metric_or_dash(e, "samples"),
		       role ? role : zm_role_name(ZM_ROLE_EXPERT));
		print_kv(&e->tags);
		putchar('\n');
	}
}

/*
 * Prints one line per two models: their verdict, its basis and the
 * alignment of their weights (the lowest hidden layer's score, and the
 * layer).  Models that cannot be read are an error: a listing that leaves
 * pairs out would read as "unrelated".
 */
static enum zm_status print_related(const struct zm_zoo *zoo,
                                    struct zm_error *err)
{
	struct zm_model **ms;
	enum zm_status st;
	size_t i, j, w = 7;

	if ((st = zm_zoo_load_all(zoo, &ms, err)))
		return st;
	for (i = 0; i < zoo->n_models; i++)
		if (strlen(zoo->models[i].name) > w)
			w = strlen(zoo->models[i].name);
	printf("%-*s %-*s %-9s %-9s %9s  %s\n", (int)w, "MODEL_A", (int)w,
	       "MODEL_B", "VERDICT", "BASIS", "ALIGNMENT", "LAYER");
	for (i = 0; i < zoo->n_models && st == ZM_OK; i++) {
		for (j = i + 1; j < zoo->n_models && st == ZM_OK; j++) {
			struct zm_lineage_info info;
			if ((st = zm_lineage_related(ms[i], ms[j], &info, err)))
				break;
			printf("%-*s %-*s %-9s %-9s ", (int)w,
			       zoo->models[i].name, (int)w, zoo->models[j].name,
			       zm_lineage_verdict_name(info.verdict),
			       zm_lineage_basis_name(info.basis));
			if (!info.has_alignment)
				printf("%9s  -\n", "-");
			else if (info.worst_layer == SIZE_MAX)
				printf("%9.4f  -\n", info.alignment);
			else
				printf("%9.4f  %s\n", info.alignment,
				       ms[i]->arch->layers[info.worst_layer].name);
		}
	}
	zm_zoo_models_free(ms);
	return st;
}

static int run(const struct zoo_ls_opts *o)
{
	struct zm_error err;
	struct zm_zoo *zoo = NULL;
	char *text = NULL;
	int status = ZM_EXIT_OK;

	zm_error_clear(&err);
	if (zm_zoo_open(&zoo, o->zoo_dir, ZM_ZOO_READ, &err) != ZM_OK) {
		status = zm_cli_report(&err);
		goto out;
	}
	if (o->yaml) {
		if (zm_zoo_to_yaml(zoo, &text, &err) != ZM_OK) {
			status = zm_cli_report(&err);
			goto out;
		}
		fputs(text, stdout);
	} else if (o->related) {
		if (print_related(zoo, &err) != ZM_OK) {
			status = zm_cli_report(&err);
			goto out;
		}
	} else {
		print_table(zoo);
	}
out:
	free(text);
	zm_zoo_close(zoo);
	return status;
}

static const struct option longopts[] = {
	{ "zoo", required_argument, NULL, 'z' },
	{ "format", required_argument, NULL, 'f' },
	{ "related", no_argument, NULL, 'R' },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

static bool parse_option(void *ctx, int c, const char *arg)
{
	struct zoo_ls_opts *o = ctx;

	switch (c) {
	case 'z':
		o->zoo_dir = arg;
		return true;
	case 'f':
		if (strcmp(arg, "yaml") && strcmp(arg, "table")) {
			zm_cli_warn("--format: expected table or yaml, got '%s'",
			            arg);
			return false;
		}
		o->yaml = strcmp(arg, "yaml") == 0;
		return true;
	case 'R':
		o->related = true;
		return true;
	default:
		return false;
	}
}

int main(int argc, char **argv)
{
	struct zoo_ls_opts o = { .zoo_dir = NULL, .yaml = false };
	int status;

	zm_cli_init(argv[0]);
	zm_cli_options(options_str);
	status = zm_cli_getopt(argc, argv, "z:f:h", longopts, usage_str,
	                       parse_option, &o, NULL);
	if (status >= 0)
		return status;
	if (optind < argc)
		return zm_cli_usage_error(usage_str, "unexpected argument '%s'",
		                          argv[optind]);
	if (!o.zoo_dir)
		return zm_cli_usage_error(usage_str, "--zoo is required");
	if (o.related && o.yaml)
		return zm_cli_usage_error(usage_str, "--related prints a table; "
		                          "it does not go with --format yaml");
	return zm_cli_close_stdout(run(&o));
}
