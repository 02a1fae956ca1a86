/*
 * assign: compares the profile of each slice file (the last document that
 * slice(1) writes) with the profile of each model in a zoo, by one of the
 * metrics of similarity.h, and turns each slice's row of similarities into
 * model weights (temperature softmax, top-k, minimum weight).  Writes the
 * assignment YAML (zoomerge-assignment(5)) that train-step reads.  A slice
 * no model matches well enough is marked as needing a new model; with
 * --create that model is added to the zoo, cloned from --base.
 */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assignment.h"
#include "cli.h"
#include "fileio.h"
#include "mem.h"
#include "profile.h"
#include "similarity.h"
#include "stream.h"
#include "zoo.h"

static const char usage_str[] =
	"usage: assign --zoo DIR [--metric cosine|kl|mahalanobis] [--top-k K]\n"
	"              [--temperature T] [--min-weight W] [--new-model-threshold S]\n"
	"              [--create --base NAME] [-o FILE] SLICE...\n"
	"       assign -h | --help | --version\n";

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
	char **slices;
	int n_slices;
};

struct model_prof {
	const char *name;          /* borrowed from the zoo */
	struct zm_profile prof;
	const struct zm_profile_entry *input;   /* NULL: not comparable */
};

/* Reads the last document of a slice file that holds a profile, reading
 * only the headers of the data documents before it. */
static enum zm_status read_slice_profile(const char *path,
                                         struct zm_profile *p,
                                         char **slice_name,
                                         struct zm_error *err)
{
	struct zm_reader *r = NULL;
	struct zm_doc doc;
	enum zm_status st;
	bool eof = false, found = false;
	size_t i;

	zm_doc_init(&doc);
	if ((st = zm_reader_open(&r, path, err)))
		return st;
	for (;;) {
		bool has = false;
		const char *name;

		if ((st = zm_reader_next_header(r, &doc, &eof, err)) || eof)
			break;
		for (i = 0; i < doc.n_tensors && !has; i++)
			has = strncmp(doc.tensors[i].name, "profile.", 8) == 0;
		if (!has)
			continue;
		for (i = 0; i < doc.n_tensors; i++) {
			struct zm_tensor *t = &doc.tensors[i];

			if (!(t->data = zm_malloc(t->nbytes ? t->nbytes : 1))) {
				st = zm_error_set(err, ZM_ERR_NOMEM,
				                  "out of memory");
				goto out;
			}
			t->owns_data = true;
			if ((st = zm_reader_read_data(r, i, t->data, err)))
				goto out;
		}
		if ((st = zm_profile_from_doc(p, &doc, err))) {
			zm_error_prefix(err, "%s: ", path);
			goto out;
		}
		found = true;
		name = zm_doc_meta(&doc, "zm.slice");
		free(*slice_name);
		*slice_name = name ? zm_strdup(name) : NULL;
	}
	if (st == ZM_OK && !found)
		st = zm_error_set(err, ZM_ERR_DATA, "%s: no profile (expected "
		                  "a slice file written by slice)", path);
out:
	zm_doc_release(&doc);
	zm_reader_close(r);
	return st;
}

/* The slice name when the file does not say: its base name without
 * the .safetensors.gz extension. */
static char *name_from_path(const char *path)
{
	const char *b = strrchr(path, '/');
	const char *ext[] = { ".safetensors.gz", ".safetensors" };
	size_t len, i;

	b = b ? b + 1 : path;
	len = strlen(b);
	for (i = 0; i < 2; i++) {
		size_t e = strlen(ext[i]);
		if (len > e && strcmp(b + len - e, ext[i]) == 0) {
			len -= e;
			break;
		}
	}
	return zm_strndup(b, len);
}

static enum zm_status load_models(const struct zm_zoo *zoo,
                                  struct model_prof *mp,
                                  struct zm_error *err)
{
	struct zm_doc doc;
	enum zm_status st = ZM_OK;
	size_t i;

	zm_doc_init(&doc);
	for (i = 0; i < zoo->n_models; i++) {
		mp[i].name = zoo->models[i].name;
		if ((st = zm_zoo_read_model(zoo, &zoo->models[i], &doc, err)))
			break;
		st = zm_profile_from_doc(&mp[i].prof, &doc, err);
		if (st == ZM_ERR_NOTFOUND) {
			zm_cli_warn("model '%s' has no profile (not trained "
			            "yet); left out", mp[i].name);
			st = ZM_OK;
			continue;
		}
		if (st != ZM_OK) {
			zm_error_prefix(err, "model '%s': ", mp[i].name);
			break;
		}
		mp[i].input = zm_profile_find(&mp[i].prof, ZM_PROFILE_INPUT);
		if (!mp[i].input || !(mp[i].input->count > 0)) {
			zm_cli_warn("model '%s' has an empty input profile; "
			            "left out", mp[i].name);
			mp[i].input = NULL;
		}
	}
	zm_doc_release(&doc);
	return st;
}

/* Scores one slice against the models, fills its assignment entry. */
static enum zm_status assign_slice(const struct assign_opts *o,
                                   struct model_prof *mp, size_t k,
                                   const struct zm_profile_entry *q,
                                   struct zm_assignment_slice *s,
                                   double *scores, double *w,
                                   size_t *idx, struct zm_error *err)
{
	enum zm_status st;
	size_t i, j, n = 0;
	double best = -INFINITY;

	for (i = 0; i < k; i++) {
		if (!mp[i].input)
			continue;
		if (mp[i].input->dim != q->dim) {
			zm_cli_warn("slice '%s' has %zu features, model '%s' "
			            "%zu; model left out", s->slice, q->dim,
			            mp[i].name, mp[i].input->dim);
			continue;
		}
		if ((st = zm_similarity_entries(o->metric, q, mp[i].input,
		                                ZM_SIM_FLOOR_AUTO, &scores[n],
		                                err)))
			return zm_error_prefix(err, "slice '%s', model '%s': ",
			                       s->slice, mp[i].name);
		if ((st = zm_assignment_add_score(s, mp[i].name, scores[n],
		                                  err)))
			return st;
		if (scores[n] > best)
			best = scores[n];
		idx[n++] = i;
	}
	if (n == 0 || (o->has_threshold && best < o->threshold)) {
		s->new_model = true;
		return ZM_OK;
	}
	if ((st = zm_weights_from_scores(scores, n, o->temperature,
	                                 (size_t)o->top_k, o->min_weight, w,
	                                 err)))
		return st;
	/* Largest weight first; equal weights keep the zoo's order. */
	for (;;) {
		size_t pick = n;

		for (j = 0; j < n; j++)
			if (w[j] > 0 && (pick == n || w[j] > w[pick]))
				pick = j;
		if (pick == n)
			break;
		if ((st = zm_assignment_add_model(s, mp[idx[pick]].name,
		                                  w[pick], err)))
			return st;
		w[pick] = 0;
	}
	return ZM_OK;
}

/* Adds a model named after the slice, cloned from --base without its
 * profile (the new model has seen none of the slice yet). */
static enum zm_status create_model(struct zm_zoo *zoo, const char *base,
                                   struct zm_assignment_slice *s,
                                   struct zm_error *err)
{
	struct zm_zoo_entry *e;
	struct zm_doc doc;
	enum zm_status st;
	int64_t version, params = 0;

	if (!zm_zoo_valid_name(s->slice))
		return zm_error_set(err, ZM_ERR_USAGE, "slice '%s' is not a "
		                    "valid model name", s->slice);
	if (zm_zoo_find(zoo, s->slice))
		return zm_error_set(err, ZM_ERR_USAGE, "slice '%s' needs a new "
		                    "model, but the zoo already has a model of "
		                    "that name", s->slice);
	zm_doc_init(&doc);
	st = zm_zoo_get(zoo, base, &e, err);
	if (st == ZM_OK) {
		params = e->params;   /* e moves when the index grows */
		st = zm_zoo_read_model(zoo, e, &doc, err);
	}
	if (st == ZM_OK) {
		zm_profile_remove_from_doc(&doc);
		st = zm_doc_set_meta(&doc, "zm.cloned-from", base, err);
	}
	if (st == ZM_OK)
		st = zm_zoo_put_model(zoo, s->slice, &doc, &version, err);
	if (st == ZM_OK) {
		struct zm_zoo_entry *ne = zm_zoo_find(zoo, s->slice);

		ne->params = params;
		st = zm_kv_set(&ne->tags, "slice", s->slice, err);
	}
	if (st == ZM_OK)
		st = zm_assignment_add_model(s, s->slice, 1.0, err);
	zm_doc_release(&doc);
	return st;
}

static int run(const struct assign_opts *o)
{
	struct zm_assignment a;
	struct zm_error err;
	struct zm_zoo *zoo = NULL;
	struct zm_zoo_entry *base;
	struct model_prof *mp = NULL;
	struct zm_outfile out;
	struct zm_profile sp;
	struct zm_buf b;
	double *scores = NULL, *w = NULL;
	size_t *idx = NULL, k = 0, i;
	char *name = NULL;
	enum zm_status st;
	bool out_open = false;

	memset(&out, 0, sizeof(out));
	zm_assignment_init(&a);
	zm_profile_init(&sp);
	zm_buf_init(&b);
	zm_error_clear(&err);
	a.metric = o->metric;
	a.temperature = o->temperature;
	a.top_k = (size_t)o->top_k;
	a.min_weight = o->min_weight;
	a.has_threshold = o->has_threshold;
	a.new_model_threshold = o->threshold;
	st = zm_zoo_open(&zoo, o->zoo_dir, o->create ? ZM_ZOO_WRITE :
	                 ZM_ZOO_READ, &err);
	if (st != ZM_OK)
		goto out;
	if (o->create && (st = zm_zoo_get(zoo, o->base, &base, &err)))
		goto out;
	k = zoo->n_models;
	if (!(mp = zm_calloc(k ? k : 1, sizeof(*mp))) ||
	    !(scores = zm_calloc(k ? k : 1, sizeof(*scores))) ||
	    !(w = zm_calloc(k ? k : 1, sizeof(*w))) ||
	    !(idx = zm_calloc(k ? k : 1, sizeof(*idx)))) {
		st = zm_error_set(&err, ZM_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < k; i++)
		zm_profile_init(&mp[i].prof);
	if ((st = load_models(zoo, mp, &err)))
		goto out;
	for (i = 0; i < (size_t)o->n_slices; i++) {
		const char *path = o->slices[i];
		const struct zm_profile_entry *q;
		struct zm_assignment_slice *s;

		free(name);
		name = NULL;
		if ((st = read_slice_profile(path, &sp, &name, &err)))
			goto out;
		if (!name && !(name = name_from_path(path))) {
			st = zm_error_set(&err, ZM_ERR_NOMEM, "out of memory");
			goto out;
		}
		if (zm_assignment_find(&a, name)) {
			st = zm_error_set(&err, ZM_ERR_USAGE, "%s: slice '%s' "
			                  "given twice", path, name);
			goto out;
		}
		q = zm_profile_find(&sp, ZM_PROFILE_INPUT);
		if (!q || !(q->count > 0)) {
			st = zm_error_set(&err, ZM_ERR_DATA, "%s: slice '%s' "
			                  "is empty; nothing to assign", path,
			                  name);
			goto out;
		}
		if ((st = zm_assignment_add_slice(&a, name, path, &s, &err)) ||
		    (st = assign_slice(o, mp, k, q, s, scores, w, idx, &err)))
			goto out;
		if (!s->new_model)
			continue;
		if (o->create) {
			if ((st = create_model(zoo, o->base, s, &err)))
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
	zm_assignment_to_yaml(&a, &b);
	if (b.failed) {
		st = zm_error_set(&err, ZM_ERR_NOMEM, "out of memory");
		goto out;
	}
	/* The assignment is committed before the zoo: an output that cannot
	 * be written (a full disk, /dev/full) then leaves the zoo as it was.
	 * The zoo's commit is one rename; should it fail after the
	 * assignment is in place, train-step reports the missing model. */
	if ((st = zm_outfile_open(&out, o->output ? o->output : "-", false,
	                          &err)))
		goto out;
	out_open = true;
	if ((st = zm_outfile_write(&out, b.data, b.len, &err)))
		goto out;
	out_open = false;
	if ((st = zm_outfile_commit(&out, &err)))
		goto out;
	if (o->create)
		st = zm_zoo_commit(zoo, &err);
out:
	if (out_open)
		zm_outfile_abort(&out);
	for (i = 0; mp && i < k; i++)
		zm_profile_release(&mp[i].prof);
	free(mp);
	free(scores);
	free(w);
	free(idx);
	free(name);
	zm_buf_release(&b);
	zm_profile_release(&sp);
	zm_assignment_release(&a);
	zm_zoo_close(zoo);
	return st == ZM_OK ? ZM_EXIT_OK : zm_cli_report(&err);
}

int main(int argc, char **argv)
{
	enum { OPT_METRIC = 256, OPT_TOPK, OPT_TEMP, OPT_MINW, OPT_THRESH,
	       OPT_CREATE, OPT_BASE };
	static const struct option longopts[] = {
		{ "zoo", required_argument, NULL, 'z' },
		{ "metric", required_argument, NULL, OPT_METRIC },
		{ "top-k", required_argument, NULL, OPT_TOPK },
		{ "temperature", required_argument, NULL, OPT_TEMP },
		{ "min-weight", required_argument, NULL, OPT_MINW },
		{ "new-model-threshold", required_argument, NULL, OPT_THRESH },
		{ "create", no_argument, NULL, OPT_CREATE },
		{ "base", required_argument, NULL, OPT_BASE },
		{ "output", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct assign_opts o = {
		.metric = ZM_METRIC_COSINE,
		.temperature = 1.0,
	};
	int c;

	zm_cli_init(argv[0]);
	while ((c = getopt_long(argc, argv, "z:o:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'z': o.zoo_dir = optarg; break;
		case 'o': o.output = optarg; break;
		case OPT_BASE: o.base = optarg; break;
		case OPT_CREATE: o.create = true; break;
		case OPT_METRIC:
			if (!zm_metric_parse(optarg, &o.metric))
				return zm_cli_usage_error(usage_str, "--metric: "
				        "expected cosine, kl or mahalanobis, "
				        "got '%s'", optarg);
			break;
		case OPT_TOPK:
			if (!zm_cli_int("--top-k", optarg, 0, INT32_MAX,
			                &o.top_k))
				return zm_cli_usage_error(usage_str, NULL);
			break;
		case OPT_TEMP:
			if (!zm_cli_double("--temperature", optarg, 1e-30, 1e30,
			                   &o.temperature))
				return zm_cli_usage_error(usage_str, NULL);
			break;
		case OPT_MINW:
			if (!zm_cli_double("--min-weight", optarg, 0, 1,
			                   &o.min_weight))
				return zm_cli_usage_error(usage_str, NULL);
			break;
		case OPT_THRESH:
			if (!zm_cli_double("--new-model-threshold", optarg,
			                   -1e300, 1e300, &o.threshold))
				return zm_cli_usage_error(usage_str, NULL);
			o.has_threshold = true;
			break;
		case 'h':
			return zm_cli_help(usage_str);
		case 'V':
			return zm_cli_show_version();
		default:
			return zm_cli_usage_error(usage_str, NULL);
		}
	}
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
