/*
 * The setup of a prediction run (predsetup.h): loading, deciding and
 * building before the batches, and saving the state after them.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dataset.h"
#include "mem.h"
#include "predsetup.h"
#include "zoo.h"
#include "zoomodel.h"

#define MAX_MODELS ZM_PREDSETUP_MAX_MODELS

void zm_predsetup_defaults(struct zm_predsetup_options *o)
{
	if (o->weights && !o->weighting_set)
		o->p.w.kind = ZM_WEIGHTING_STATIC;
	if (!o->weighting_set && !o->weights && !o->metric_set) {
		o->p.w.kind = ZM_WEIGHTING_DENSITY;
		o->p.w.lenient = true;
	}
	if (o->p.w.kind == ZM_WEIGHTING_DENSITY ||
	    o->p.w.kind == ZM_WEIGHTING_ROUTER ||
	    o->p.w.kind == ZM_WEIGHTING_ROUTER_SIMILARITY) {
		if (!o->per_set)
			o->p.w.per_row = true;
		if (!o->merge_set && !o->level_set &&
		    (!o->gran_from || o->gran_auto))
			o->p.merge = ZM_MERGE_ROUTE;
	}
}

void zm_predsetup_init(struct zm_predsetup *s)
{
	size_t i;

	memset(s, 0, sizeof(*s));
	for (i = 0; i < MAX_MODELS; i++)
		s->route_t[i] = NAN;
	zm_predict_options_init(&s->po);
	zm_assignment_init(&s->asg);
	zm_gran_decision_init(&s->dec);
	zm_hedge_init(&s->hedge);
	zm_schema_init(&s->schema);
	zm_gc_rules_init(&s->rules);
	zm_profile_cache_init(&s->pcache);
}

void zm_predsetup_release(struct zm_predsetup *s)
{
	size_t i;

	zm_predictor_free(s->pred);
	zm_predictor_free(s->lvl[ZM_GRAN_GROUP]);
	zm_predictor_free(s->lvl[ZM_GRAN_LAYER]);
	zm_profile_cache_release(&s->pcache);
	zm_granauto_ctl_release(&s->ctl);
	zm_gc_rules_release(&s->rules);
	for (i = 0; i < s->k; i++)
		zm_model_free(s->models[i]);
	zm_model_free(s->router);
	zm_assignment_release(&s->asg);
	zm_schema_release(&s->schema);
	zm_gran_decision_release(&s->dec);
	zm_hedge_release(&s->hedge);
	zm_node_free(s->wroot);
	free(s->stat);
	zm_predsetup_init(s);
}

static struct zm_predsetup_note *add_note(struct zm_predsetup *s,
                                          enum zm_predsetup_note_kind kind)
{
	struct zm_predsetup_note *n;

	if (s->n_notes == ZM_PREDSETUP_NOTES)
		return NULL;
	n = &s->notes[s->n_notes++];
	memset(n, 0, sizeof(*n));
	n->kind = kind;
	return n;
}

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

/* Reads the models of the run: the model files, the named models of the
 * zoo, or every expert of the zoo (not the router); the router too. */
static enum zm_status load_models(const struct zm_predsetup_options *o,
                                  struct zm_predsetup *s,
                                  struct zm_error *err)
{
	struct zm_zoo *zoo = NULL;
	enum zm_status st = ZM_OK;
	enum zm_role role;
	size_t i;

	s->k = 0;
	if (o->n_files) {
		for (i = 0; i < o->n_files && st == ZM_OK; i++) {
			st = zm_model_load(o->model_file[i], &s->models[i], err);
			if (st == ZM_OK)
				s->k++;
		}
		return st;
	}
	if (o->n_models == 1 && !o->router) {
		st = zm_zoo_load_model_at(o->zoo_dir, o->model[0],
		                          &s->models[0], err);
		if (st == ZM_OK)
			s->k = 1;
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
			if (s->k == MAX_MODELS) {
				st = zm_error_set(err, ZM_ERR_USAGE, "%s: more than "
				                  "%d models; choose with --model",
				                  o->zoo_dir, MAX_MODELS);
				break;
			}
			st = zm_zoo_load_model_at(o->zoo_dir, name,
			                          &s->models[s->k], err);
			if (st != ZM_OK)
				break;
			/* The whole zoo means its experts: routers and bases
			 * predict nothing of the data's classes. */
			if (zm_role_of_doc(&s->models[s->k]->extra, &role) &&
			    role != ZM_ROLE_EXPERT) {
				zm_model_free(s->models[s->k]);
				s->models[s->k] = NULL;
				continue;
			}
			s->route_t[s->k++] = route_temperature(zoo, name);
		}
		if (st == ZM_OK && s->k == 0)
			st = zm_error_set(err, ZM_ERR_DATA, "%s: no models to "
			                  "predict with", o->zoo_dir);
	} else {
		for (i = 0; i < o->n_models && st == ZM_OK; i++) {
			st = zm_zoo_load_model_at(o->zoo_dir, o->model[i],
			                          &s->models[i], err);
			if (st == ZM_OK)
				s->route_t[s->k++] = route_temperature(zoo,
				                                       o->model[i]);
		}
	}
	zm_zoo_close(zoo);
	if (st == ZM_OK && o->router)
		st = zm_zoo_load_model_at(o->zoo_dir, o->router, &s->router,
		                          err);
	return st;
}

double zm_predsetup_temperature(const double *route_t, size_t k,
                                size_t features, bool *calibrated)
{
	double t = 0;
	size_t i;

	for (i = 0; i < k && t >= 0; i++)
		t = isfinite(route_t[i]) && route_t[i] > t ? route_t[i] :
		    isfinite(route_t[i]) ? t : -1;
	*calibrated = t > 0;
	if (t > 0)
		return t;
	t = ZM_DENSITY_T_PER_FEATURE * (double)features;
	return t > 1 ? t : 1;
}

enum zm_merge_mode zm_predsetup_unrelated_merge(enum zm_weighting kind)
{
	return kind == ZM_WEIGHTING_DENSITY || kind == ZM_WEIGHTING_ROUTER ||
	       kind == ZM_WEIGHTING_ROUTER_SIMILARITY ? ZM_MERGE_ROUTE :
	       ZM_MERGE_ENSEMBLE;
}

/* The models and everything their weighting reads, before any data. */
static enum zm_status prepare(const struct zm_predsetup_options *o,
                              struct zm_predsetup *s, struct zm_error *err)
{
	enum zm_status st;
	size_t i;

	st = load_models(o, s, err);
	if (st != ZM_OK)
		return st;
	/* The calibrated temperature of density weighting, when every model
	 * has one, unless the caller set one; else the default for the
	 * width. */
	if (s->po.w.kind == ZM_WEIGHTING_DENSITY && !o->temperature_set &&
	    s->k > 1) {
		bool cal;
		s->po.w.temperature = zm_predsetup_temperature(s->route_t,
		        s->k, s->models[0]->arch->input_features, &cal);
		s->po.w.temperature_origin = cal ?
		        "calibrated by assign --calibrate" :
		        "uncalibrated: the default for the input width "
		        "(assign --calibrate fits one)";
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
		    !(s->stat = zm_calloc(cells ? cells : 1, sizeof(double))))
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
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
static enum zm_status models_schema(struct zm_predsetup *s,
                                    struct zm_error *err)
{
	struct zm_schema other, *schema = &s->schema;
	enum zm_status st;
	size_t i;
	char what[128];

	zm_schema_init(&other);
	snprintf(what, sizeof(what), "model '%s'", s->names[0]);
	st = zm_schema_of_model_doc(schema, &s->models[0]->extra, what, err);
	schema->arch = s->models[0]->arch;   /* its one_hot layers */
	for (i = 1; st == ZM_OK && i < s->k; i++) {
		snprintf(what, sizeof(what), "model '%s'", s->names[i]);
		if ((st = zm_arch_same_one_hot(s->models[0]->arch,
		                               s->models[i]->arch, err))) {
			zm_error_prefix(err, "models '%s' and '%s': ",
			                s->names[0], s->names[i]);
			break;
		}
		if ((st = zm_schema_of_model_doc(&other, &s->models[i]->extra,
		                                 what, err)))
			break;
		if ((other.classes.known && schema->classes.known &&
		     !zm_names_equal(&other.classes, &schema->classes)) ||
		    (other.features.known && schema->features.known &&
		     !zm_names_equal(&other.features, &schema->features)))
			st = zm_error_set(err, ZM_ERR_DATA, "models '%s' and '%s' "
			                  "name different %s: they cannot predict "
			                  "together", s->names[0], s->names[i],
			                  zm_names_equal(&other.classes,
			                                 &schema->classes) ?
			                  "features" : "classes");
		if (st == ZM_OK && !schema->classes.known)
			st = zm_names_copy(&schema->classes, &other.classes, err);
		if (st == ZM_OK && !schema->features.known)
			st = zm_names_copy(&schema->features, &other.features, err);
	}
	zm_schema_release(&other);
	if (s->k == 1)
		snprintf(s->what, sizeof(s->what), "model '%s'", s->names[0]);
	else
		snprintf(s->what, sizeof(s->what), "the models");
	return st;
}

/*
 * Merging layers (hidden activations or parameters) means something only
 * when the models' units correspond (lineage.h).  For models that are
 * unrelated a merge the setup chose itself becomes a mix of the final
 * outputs at the full level (routing where the weighting judges rows);
 * one the caller asked for goes ahead, with a note.
 */
static enum zm_status check_lineage(const struct zm_predsetup_options *o,
                                    struct zm_predsetup *s,
                                    struct zm_error *err)
{
	struct zm_lineage_info info;
	struct zm_predsetup_note *n;
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
	if (!o->merge_set) {
		s->po.merge = zm_predsetup_unrelated_merge(s->po.w.kind);
		s->po.w.level = ZM_GRAN_FULL;
		s->unrelated = true;
	}
	n = add_note(s, o->merge_set ? ZM_PREDSETUP_UNRELATED_KEPT :
	             ZM_PREDSETUP_UNRELATED_MIXED);
	if (n) {
		n->a = s->names[a];
		n->b = s->names[b];
		n->basis = info.basis;
		n->merge = s->po.merge;
	}
	return ZM_OK;
}

/* The merge options together, as the predictor checks them; the level
 * may come from a granctl decision, so this runs once it is known. */
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
		                    "full", zm_merge_mode_name(po->merge));
	/* A choice of how route mixes, with no routing to apply it to, is
	 * a mistake the user should hear about, not a silent no-op. */
	if (po->route_mix != ZM_ROUTE_MIX_AUTO && po->merge != ZM_MERGE_ROUTE)
		return zm_error_set(err, ZM_ERR_USAGE, "--route-mix says how "
		                    "route mixes the rows no model is sure of; "
		                    "the merge here is %s",
		                    zm_merge_mode_name(po->merge));
	return ZM_OK;
}

/*
 * Granularity auto: predictors at the group and layer levels next to the
 * full one, over the same models, and the controller that picks one per
 * batch.  A level the models cannot merge at (unrelated models, a
 * weighting that lacks a profile entry) is left out, with a note.  The
 * group and layer levels merge outputs where the full level routes or
 * mixes final outputs.
 */
static enum zm_status start_auto(const struct zm_predsetup_options *o,
                                 struct zm_predsetup *s,
                                 struct zm_error *err)
{
	enum zm_gran_level l;
	enum zm_status st;
	struct zm_error e2;
	struct zm_lineage_info info;
	struct zm_predsetup_note *n;
	bool all = true, unrelated = s->unrelated;
	/* Where every unit gets the same weights, only rules can ask for
	 * another level. */
	bool finer = o->gran_rules || !zm_granauto_units_same(&s->po);
	size_t a, b;

	s->lvl[ZM_GRAN_FULL] = s->pred;
	if (o->gran_rules &&
	    (st = zm_gc_rules_load(o->gran_rules, &s->rules, err)) != ZM_OK)
		return st;
	if (!finer)
		add_note(s, ZM_PREDSETUP_AUTO_SAME_WEIGHTS);
	/* The full level may route without merging layers (check_lineage
	 * then did not look); the finer ones merge them, which unrelated
	 * models cannot. */
	if (finer && !unrelated && !o->merge_set &&
	    (s->po.merge == ZM_MERGE_ROUTE || s->po.merge == ZM_MERGE_ENSEMBLE)) {
		st = zm_lineage_all_related((const struct zm_model *const *)
		                            s->models, s->k, &all, &a, &b,
		                            &info, err);
		if (st != ZM_OK)
			return st;
		unrelated = !all && info.verdict == ZM_LINEAGE_UNRELATED;
		if (unrelated && (n = add_note(s, ZM_PREDSETUP_AUTO_FULL_ONLY))) {
			n->a = s->names[a];
			n->b = s->names[b];
			n->basis = info.basis;
		}
	}
	for (l = ZM_GRAN_GROUP; finer && !unrelated && l <= ZM_GRAN_LAYER; l++) {
		struct zm_predict_options po = s->po;
		if (po.merge == ZM_MERGE_ROUTE || po.merge == ZM_MERGE_ENSEMBLE) {
			/* Unrelated models mix only final outputs, and a
			 * route or ensemble merge asked for is kept. */
			if (o->merge_set)
				break;
			po.merge = ZM_MERGE_OUTPUTS;
		}
		po.w.level = l;
		zm_error_clear(&e2);
		st = zm_predictor_new_opts((const struct zm_model *const *)
		                           s->models, s->k, o->batch, &po,
		                           &s->lvl[l], &e2);
		if (st == ZM_ERR_NOMEM)
			return zm_error_set(err, st, "%s", e2.msg);
		if (st != ZM_OK && (n = add_note(s, ZM_PREDSETUP_AUTO_NO_LEVEL))) {
			n->level = l;
			snprintf(n->msg, sizeof(n->msg), "%s", e2.msg);
		}
	}
	st = zm_granauto_ctl_init(&s->ctl, s->lvl, s->po.w.latency_budget_ms,
	                          s->po.w.use_loadavg,
	                          o->gran_rules ? &s->rules : NULL,
	                          o->gran_from != NULL, s->dec.level, err);
	if (st != ZM_OK)
		return st;
	s->auto_on = true;
	s->pred->gauto = &s->ctl;
	/* The cost estimates of the last run (a missing file is the first
	 * run). */
	if (o->state && access(o->state, F_OK) == 0)
		st = zm_granauto_state_load(&s->ctl.g, o->state,
		                            &s->ctl.state_keep, err);
	return st;
}

enum zm_status zm_predsetup_open(struct zm_predsetup *s,
                                 const struct zm_predsetup_options *o,
                                 struct zm_error *err)
{
	enum zm_status st;

	s->po = o->p;
	if ((st = prepare(o, s, err)) || (st = models_schema(s, err)) ||
	    (st = check_lineage(o, s, err)))
		return st;
	if (s->k > 1 && (st = check_merge(&s->po, err)))
		return st;
	/* Every level of auto parses the profiles once. */
	s->po.w.cache = &s->pcache;
	st = zm_predictor_new_opts((const struct zm_model *const *)s->models,
	                           s->k, o->batch, &s->po, &s->pred, err);
	if (st == ZM_OK && o->gran_auto && s->k > 1)
		st = start_auto(o, s, err);
	return st;
}

enum zm_status zm_predsetup_conform(struct zm_predsetup *s, struct zm_doc *doc,
                                    const char *where,
                                    struct zm_schema_note *note,
                                    struct zm_error *err)
{
	enum zm_status st;
	size_t n;

	if ((st = zm_data_check(doc, where, &n, err)))
		return st;
	return zm_schema_conform_doc(&s->schema, false, doc, n, where, s->what,
	                             note, err);
}

enum zm_status zm_predsetup_trace_header(const struct zm_predsetup *s,
                                         struct zm_outfile *trace,
                                         struct zm_error *err)
{
	if (s->pred->gauto)
		return zm_outfile_printf(trace, err, "batch,rows,model,unit,"
		                         "weight,similarity,score,level,ms,"
		                         "why\n");
	return zm_pred_trace_header(trace, err);
}

void zm_predsetup_explain(const struct zm_predsetup *s, struct zm_buf *b)
{
	zm_predict_explain(s->pred, s->names, b);
	if (s->pred->gauto)
		zm_granauto_ctl_explain(&s->ctl, b);
}

enum zm_status zm_predsetup_save_state(const struct zm_predsetup *s,
                                       const char *state,
                                       struct zm_error *err)
{
	if (state && s->k > 1 && s->po.feedback)
		return zm_hedge_save(&s->pred->hedge, state, err);
	if (state && s->pred->gauto)
		return zm_granauto_state_save(&s->ctl.g, state,
		                              s->ctl.state_keep, err);
	return ZM_OK;
}
