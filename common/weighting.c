/*
 * The dynamic weighting function: similarity, router, uniform and static
 * weights combined in log space, top-k under a latency budget, and the
 * Hedge scores with their state file.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conv.h"
#include "fileio.h"
#include "json.h"
#include "mem.h"
#include "schema.h"
#include "weighting.h"
#include "zoo.h"

#define STATE_MAGIC "zoomerge-predict-state 1"
#define STATE_MAX_BYTES (16u << 20)

static const char *const kind_names[] = {
	[ZM_WEIGHTING_SIMILARITY] = "similarity",
	[ZM_WEIGHTING_ROUTER] = "router",
	[ZM_WEIGHTING_UNIFORM] = "uniform",
	[ZM_WEIGHTING_STATIC] = "static",
	[ZM_WEIGHTING_ROUTER_SIMILARITY] = "router+similarity",
	[ZM_WEIGHTING_DENSITY] = "density",
};

const char *zm_weighting_name(enum zm_weighting w)
{
	return kind_names[w];
}

bool zm_weighting_parse(const char *s, enum zm_weighting *out)
{
	size_t i;

	for (i = 0; i < sizeof(kind_names) / sizeof(kind_names[0]); i++)
		if (strcmp(s, kind_names[i]) == 0) {
			*out = (enum zm_weighting)i;
			return true;
		}
	/* The product is symmetric; accept both spellings. */
	if (strcmp(s, "similarity+router") == 0) {
		*out = ZM_WEIGHTING_ROUTER_SIMILARITY;
		return true;
	}
	return false;
}

void zm_weights_softmax_topk(const double *logits, size_t k, size_t top_k,
                             double *w)
{
	double mx = -INFINITY, sum = 0;
	size_t i, j;

	for (i = 0; i < k; i++)
		if (logits[i] > mx)
			mx = logits[i];
	if (!(mx > -INFINITY)) {
		/* Nothing has any weight (a router that knows none of the
		 * models): fall back to uniform rather than divide by 0. */
		for (i = 0; i < k; i++)
			w[i] = 1.0 / (double)k;
		mx = 0;
	} else {
		for (i = 0; i < k; i++)
			w[i] = exp(logits[i] - mx);
	}
	if (top_k > 0 && top_k < k) {
		/* Rank of i = models strictly better, or equal with a lower
		 * index; keep ranks below top_k.  K is small: O(K^2). */
		double kw[ZM_WEIGHTER_MAX_MODELS];
		ZM_ASSERT(k <= ZM_WEIGHTER_MAX_MODELS);
		for (i = 0; i < k; i++) {
			size_t rank = 0;
			for (j = 0; j < k; j++)
				if (w[j] > w[i] || (w[j] == w[i] && j < i))
					rank++;
			kw[i] = rank < top_k ? w[i] : 0;
		}
		for (i = 0; i < k; i++)
			w[i] = kw[i];
	}
	for (i = 0; i < k; i++)
		sum += w[i];
	for (i = 0; i < k; i++)
		w[i] /= sum;
}

/* ---- Hedge ---- */

void zm_hedge_init(struct zm_hedge *h)
{
	memset(h, 0, sizeof(*h));
}

void zm_hedge_release(struct zm_hedge *h)
{
	size_t i;

	if (h->names)
		for (i = 0; i < h->k; i++)
			free(h->names[i]);
	free(h->names);
	free(h->score);
	zm_hedge_init(h);
}

static enum zm_status hedge_alloc(struct zm_hedge *h, size_t k,
                                  struct zm_error *err)
{
	zm_hedge_release(h);
	h->names = zm_calloc(k ? k : 1, sizeof(*h->names));
	h->score = zm_calloc(k ? k : 1, sizeof(*h->score));
	if (!h->names || !h->score) {
		zm_hedge_release(h);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	return ZM_OK;
}

enum zm_status zm_hedge_reset(struct zm_hedge *h, const char *const *names,
                              size_t k, struct zm_error *err)
{
	enum zm_status st = hedge_alloc(h, k, err);
	size_t i;

	if (st != ZM_OK)
		return st;
	for (i = 0; i < k; i++) {
		if (!(h->names[i] = zm_strdup(names[i]))) {
			h->k = i;
			zm_hedge_release(h);
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		}
	}
	h->k = k;
	return ZM_OK;
}

/* Appends one score; the arrays grow by doubling. */
static bool hedge_push(struct zm_hedge *h, size_t *cap, const char *name,
                       size_t len, double v)
{
	if (h->k == *cap) {
		size_t nc = *cap ? *cap * 2 : 8, bytes;
		char **nn;
		double *ns;

		if (!zm_size_mul(nc, sizeof(double), &bytes) ||
		    !zm_size_mul(nc, sizeof(char *), &bytes))
			return false;
		nn = zm_realloc(h->names, nc * sizeof(*nn));
		if (!nn)
			return false;
		h->names = nn;
		ns = zm_realloc(h->score, nc * sizeof(*ns));
		if (!ns)
			return false;
		h->score = ns;
		*cap = nc;
	}
	if (!(h->names[h->k] = zm_strndup(name, len)))
		return false;
	h->score[h->k++] = v;
	return true;
}

enum zm_status zm_hedge_parse(const char *bytes, size_t len,
                              const char *source, struct zm_hedge *h,
                              struct zm_error *err)
{
	size_t pos = 0, cap = 0, lineno = 0, i;
	bool magic = false;
	enum zm_status st = ZM_OK;

	zm_hedge_release(h);
	while (pos < len && st == ZM_OK) {
		const char *line = bytes + pos, *nl;
		size_t ll;
		char buf[160], word[16], name[80], tail[2];
		double v;
		unsigned long long nb;

		nl = memchr(line, '\n', len - pos);
		ll = nl ? (size_t)(nl - line) : len - pos;
		pos += ll + (nl ? 1 : 0);
		lineno++;
		if (memchr(line, '\0', ll) || ll >= sizeof(buf)) {
			st = zm_error_set(err, ZM_ERR_FORMAT, "%s:%zu: %s", source,
			                  lineno, ll >= sizeof(buf) ?
			                  "line too long" : "NUL byte");
			break;
		}
		memcpy(buf, line, ll);
		buf[ll] = '\0';
		if (!magic) {
			if (strcmp(buf, STATE_MAGIC) != 0)
				st = zm_error_set(err, ZM_ERR_FORMAT,
				                  "%s:1: not a predict state file "
				                  "(expected '%s')", source,
				                  STATE_MAGIC);
			magic = true;
			continue;
		}
		if (ll == 0 || buf[0] == '#')
			continue;
		if (sscanf(buf, "%15s", word) != 1) {
			st = zm_error_set(err, ZM_ERR_FORMAT, "%s:%zu: blank line "
			                  "with spaces", source, lineno);
		} else if (strcmp(word, "batches") == 0) {
			if (sscanf(buf, "batches %llu %1s", &nb, tail) != 1 ||
			    strchr(buf, '-'))
				st = zm_error_set(err, ZM_ERR_FORMAT, "%s:%zu: "
				                  "expected 'batches N'", source,
				                  lineno);
			else
				h->batches = nb;
		} else if (strcmp(word, "cost") == 0) {
			/* predict --granularity auto's (granauto.h) */
		} else if (strcmp(word, "score") == 0) {
			char num[64];

			if (sscanf(buf, "score %79s %63s %1s", name, num,
			           tail) != 2 || !zm_parse_double(num, &v) ||
			    !isfinite(v) || v > 0 || v < -1e6) {
				st = zm_error_set(err, ZM_ERR_FORMAT, "%s:%zu: "
				                  "expected 'score MODEL H' with H "
				                  "a number in [-1e6, 0]", source,
				                  lineno);
			} else if (!zm_zoo_valid_name(name)) {
				st = zm_error_set(err, ZM_ERR_FORMAT, "%s:%zu: '%s' "
				                  "is not a model name", source,
				                  lineno, name);
			} else {
				for (i = 0; i < h->k; i++)
					if (strcmp(h->names[i], name) == 0)
						break;
				if (i < h->k)
					st = zm_error_set(err, ZM_ERR_FORMAT,
					                  "%s:%zu: model '%s' twice",
					                  source, lineno, name);
				else if (!hedge_push(h, &cap, name, strlen(name), v))
					st = zm_error_set(err, ZM_ERR_NOMEM,
					                  "out of memory");
			}
		} else {
			st = zm_error_set(err, ZM_ERR_FORMAT, "%s:%zu: unknown key "
			                  "'%s'", source, lineno, word);
		}
	}
	if (st == ZM_OK && !magic)
		st = zm_error_set(err, ZM_ERR_FORMAT, "%s: empty state file",
		                  source);
	if (st == ZM_OK && h->k == 0)
		st = zm_error_set(err, ZM_ERR_FORMAT, "%s: no model scores",
		                  source);
	if (st != ZM_OK)
		zm_hedge_release(h);
	return st;
}

enum zm_status zm_hedge_match(struct zm_hedge *h, const char *const *names,
                              size_t k, const char *source,
                              struct zm_error *err)
{
	size_t i, j;
	double *ns;
	char **nn;

	for (i = 0; i < k; i++) {
		for (j = 0; j < h->k; j++)
			if (strcmp(h->names[j], names[i]) == 0)
				break;
		if (j == h->k)
			return zm_error_set(err, ZM_ERR_DATA, "%s: a state of "
			                    "other models: no score for model "
			                    "'%s'", source, names[i]);
	}
	if (h->k != k)
		return zm_error_set(err, ZM_ERR_DATA, "%s: a state of other "
		                    "models: %zu scores for %zu models", source,
		                    h->k, k);
	ns = zm_calloc(k, sizeof(*ns));
	nn = zm_calloc(k, sizeof(*nn));
	if (!ns || !nn) {
		free(ns);
		free(nn);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	for (i = 0; i < k; i++)
		for (j = 0; j < h->k; j++)
			if (h->names[j] && strcmp(h->names[j], names[i]) == 0) {
				nn[i] = h->names[j];
				ns[i] = h->score[j];
				h->names[j] = NULL;
				break;
			}
	free(h->names);
	free(h->score);
	h->names = nn;
	h->score = ns;
	return ZM_OK;
}

enum zm_status zm_hedge_load(struct zm_hedge *h, const char *path,
                             const char *const *names, size_t k,
                             struct zm_error *err)
{
	char *data = NULL;
	size_t len = 0;
	enum zm_status st;

	st = zm_read_file(path, STATE_MAX_BYTES, &data, &len, err);
	if (st == ZM_OK)
		st = zm_hedge_parse(data, len, path, h, err);
	if (st == ZM_OK)
		st = zm_hedge_match(h, names, k, path, err);
	free(data);
	return st;
}

enum zm_status zm_hedge_save(const struct zm_hedge *h, const char *path,
                             struct zm_error *err)
{
	struct zm_outfile f;
	struct zm_buf b;
	enum zm_status st;
	size_t i;

	zm_buf_init(&b);
	zm_buf_printf(&b, "%s\nbatches %llu\n", STATE_MAGIC,
	              (unsigned long long)h->batches);
	for (i = 0; i < h->k; i++)
		zm_buf_printf(&b, "score %s %.17g\n", h->names[i], h->score[i]);
	if (b.failed) {
		zm_buf_release(&b);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	st = zm_outfile_open(&f, path, false, err);
	if (st == ZM_OK) {
		st = zm_outfile_write(&f, b.data, b.len, err);
		if (st == ZM_OK)
			st = zm_outfile_commit(&f, err);
		else
			zm_outfile_abort(&f);
	}
	zm_buf_release(&b);
	return st;
}

void zm_hedge_update(struct zm_hedge *h, const double *loss, double eta,
                     double share)
{
	double mx = -INFINITY, sum = 0, floor_h = -ZM_HEDGE_SCORE_MIN;
	size_t i;

	ZM_ASSERT(share >= 0 && share < 1);
	for (i = 0; i < h->k; i++) {
		h->score[i] -= eta * loss[i];
		if (h->score[i] > mx)
			mx = h->score[i];
	}
	/* Only differences matter; shifting keeps the numbers bounded. */
	for (i = 0; i < h->k; i++) {
		h->score[i] -= mx;
		sum += exp(h->score[i]);
	}
	/* Fixed share (Herbster and Warmuth): a fraction share of the total
	 * weight is spread uniformly, v_i <- (1 - share) v_i + share / k, so
	 * no model's weight falls below share / k of the total and a model
	 * that becomes the best after a shift catches up within about
	 * log(k / share) / (eta * loss gap) rounds, however long it lost
	 * before.  Then shifted again so that max h_i = 0. */
	if (share > 0 && h->k > 0) {
		mx = -INFINITY;
		for (i = 0; i < h->k; i++) {
			double v = exp(h->score[i]) / sum;
			h->score[i] = log((1 - share) * v + share / (double)h->k);
			if (h->score[i] > mx)
				mx = h->score[i];
		}
		for (i = 0; i < h->k; i++)
			h->score[i] -= mx;
	}
	for (i = 0; i < h->k; i++)
		if (h->score[i] < floor_h)
			h->score[i] = floor_h;
	h->batches++;
}

/* ---- static weights ---- */

static ptrdiff_t name_index(const char *const *names, size_t k,
                            const char *s)
{
	size_t i;

	for (i = 0; i < k; i++)
		if (strcmp(names[i], s) == 0)
			return (ptrdiff_t)i;
	return -1;
}

static enum zm_status weight_value(const struct zm_node *n, double *v,
                                   struct zm_error *err)
{
	return zm_node_double(n, "weight", 0, 1e30, v, err);
}

enum zm_status zm_static_weights(const struct zm_node *root,
                                 const struct zm_arch *arch,
                                 const char *const *names, size_t k,
                                 double *out, struct zm_error *err)
{
	const struct zm_node *models;
	size_t L = arch->n_layers, P = 0, l, i, j, p;
	enum zm_status st;

	for (l = 0; l < L; l++)
		P += arch->layers[l].has_params;
	memset(out, 0, L * k * sizeof(*out));
	st = zm_node_expect(root, ZM_NODE_MAP, "weights file", err);
	if (st != ZM_OK)
		return st;
	models = zm_node_get(root, "models");
	if (!models)
		return zm_node_error(root, err, ZM_ERR_CONFIG,
		                     "expected a 'models' list");
	st = zm_node_expect(models, ZM_NODE_SEQ, "models", err);
	if (st != ZM_OK)
		return st;
	for (j = 0; j < models->count; j++) {
		static const char *const keys[] = { "model", "weight", NULL };
		const struct zm_node *it = models->items[j], *mn, *wn;
		const char *name;
		ptrdiff_t m;

		if ((st = zm_node_expect(it, ZM_NODE_MAP, "models entry", err)) ||
		    (st = zm_node_check_keys(it, keys, "models entry", err)))
			return st;
		mn = zm_node_get(it, "model");
		wn = zm_node_get(it, "weight");
		if (!mn || !wn)
			return zm_node_error(it, err, ZM_ERR_CONFIG,
			                     "expected {model: NAME, weight: W}");
		if ((st = zm_node_string(mn, "model", &name, err)))
			return st;
		m = name_index(names, k, name);
		if (m < 0)
			return zm_node_error(mn, err, ZM_ERR_CONFIG, "model '%s' "
			                     "is not one of the models predicting",
			                     name);
		if (wn->type == ZM_NODE_SCALAR) {
			double v;
			if ((st = weight_value(wn, &v, err)))
				return st;
			for (l = 0; l < L; l++)
				out[l * k + (size_t)m] = v;
		} else if (wn->type == ZM_NODE_SEQ) {
			double vals[256];
			if (wn->count == 0 || wn->count > 256)
				return zm_node_error(wn, err, ZM_ERR_CONFIG,
				                     "expected 1 to 256 weights");
			for (i = 0; i < wn->count; i++)
				if ((st = weight_value(wn->items[i], &vals[i], err)))
					return st;
			/* Interpolated over the parameter layers; layers
			 * without parameters take the next one's value. */
			for (l = 0, p = 0; l < L; l++) {
				double t, v;
				size_t a;
				t = P > 1 ? (double)p / (double)(P - 1) *
				            (double)(wn->count - 1) : 0;
				a = (size_t)t;
				if (a + 1 < wn->count)
					v = vals[a] + (t - (double)a) *
					    (vals[a + 1] - vals[a]);
				else
					v = vals[wn->count - 1];
				out[l * k + (size_t)m] = v;
				if (arch->layers[l].has_params && p + 1 < P)
					p++;
			}
		} else {
			for (l = 0; l < L; l++) {
				const struct zm_node *e =
					zm_node_get(wn, arch->layers[l].name);
				double v;
				if (!e)
					e = zm_node_get(wn, arch->layers[l].group);
				if (!e) {
					if (!arch->layers[l].has_params)
						continue;
					return zm_node_error(wn, err, ZM_ERR_CONFIG,
					                     "no weight for layer '%s' "
					                     "(or its group '%s')",
					                     arch->layers[l].name,
					                     arch->layers[l].group);
				}
				if ((st = weight_value(e, &v, err)))
					return st;
				out[l * k + (size_t)m] = v;
			}
			for (i = 0; i < wn->count; i++) {
				const char *key = wn->keys[i]->value;
				bool known = false;
				for (l = 0; l < L && !known; l++)
					known = strcmp(arch->layers[l].name, key) == 0 ||
					        strcmp(arch->layers[l].group, key) == 0;
				if (!known)
					return zm_node_error(wn->keys[i], err,
					                     ZM_ERR_CONFIG, "'%s' is no "
					                     "layer or group", key);
			}
		}
	}
	for (l = 0; l < L; l++) {
		double sum = 0;
		if (!arch->layers[l].has_params)
			continue;
		for (i = 0; i < k; i++)
			sum += out[l * k + i];
		if (!(sum > 0))
			return zm_node_error(models, err, ZM_ERR_CONFIG, "the "
			                     "weights of layer '%s' are all 0",
			                     arch->layers[l].name);
		for (i = 0; i < k; i++)
			out[l * k + i] /= sum;
	}
	return ZM_OK;
}

/* ---- the weighter ---- */

void zm_weighter_options_init(struct zm_weighter_options *o)
{
	memset(o, 0, sizeof(*o));
	o->kind = ZM_WEIGHTING_SIMILARITY;
	o->metric = ZM_METRIC_KL;
	o->temperature = 1.0;
	o->level = ZM_GRAN_FULL;
	o->use_loadavg = true;
}

static bool uses_similarity(enum zm_weighting k)
{
	return k == ZM_WEIGHTING_SIMILARITY ||
	       k == ZM_WEIGHTING_ROUTER_SIMILARITY;
}

static bool uses_router(enum zm_weighting k)
{
	return k == ZM_WEIGHTING_ROUTER || k == ZM_WEIGHTING_ROUTER_SIMILARITY;
}

void zm_weighter_free(struct zm_weighter *w)
{
	size_t l;

	if (!w)
		return;
	for (l = 0; l < w->n_layers; l++) {
		if (w->pm) free(w->pm[l]);
		if (w->pv) free(w->pv[l]);
		if (w->dm) free(w->dm[l]);
		if (w->dv) free(w->dv[l]);
	}
	free(w->pm);
	free(w->pv);
	free(w->dm);
	free(w->dv);
	zm_gran_units_release(&w->units);
	free(w->unit_first);
	free(w->stat);
	free(w->prior);
	free(w->alpha);
	zm_workspace_free(w->rws);
	free(w->route);
	free(w->router_w);
	free(w->scores);
	free(w->qm);
	free(w->qv);
	free(w->unit_sim);
	free(w->unit_has_sim);
	if (w->own_cache) {
		zm_profile_cache_release(w->own_cache);
		free(w->own_cache);
	}
	free(w->ll);
	free(w);
}

/* The densities of set (not ready) and the verdict on them, for
 * load_densities; *whole is false when a lenient weighter gave up on a
 * model without a profile (a strict one would fail: not to be shared). */
static enum zm_status make_densities(const struct zm_weighter *w,
                                     struct zm_density_set *set,
                                     const struct zm_model *const *models,
                                     const char *const *names, bool *whole,
                                     struct zm_error *err)
{
	size_t k = w->k, i, j;
	struct zm_density *dens = set->dens;
	enum zm_status st;

	*whole = true;
	set->separable = false;
	set->why[0] = '\0';
	for (i = 0; i < k; i++) {
		zm_density_release(&dens[i]);
		st = zm_profile_density_from_doc(&models[i]->extra, &dens[i],
		                                 err);
		if (st == ZM_OK && dens[i].d != w->arch->input_features)
			st = zm_error_set(err, ZM_ERR_DATA, "its input profile has "
			                  "%zu features, the model %zu",
			                  dens[i].d, w->arch->input_features);
		if (st == ZM_ERR_NOTFOUND && w->o.lenient) {
			snprintf(set->why, sizeof(set->why), "model '%s' has no "
			         "profile of its inputs", names[i]);
			*whole = false;
			return ZM_OK;
		}
		if (st == ZM_ERR_NOTFOUND)
			return zm_error_set(err, ZM_ERR_DATA, "model '%s' has no "
			                    "profile: density weighting needs one "
			                    "(train it with train-step); use "
			                    "--weighting uniform or static",
			                    names[i]);
		if (st != ZM_OK)
			return zm_error_prefix(err, "model '%s': ", names[i]);
	}
	set->sep_kl = -1;
	for (i = 0; i < k; i++)
		for (j = i + 1; j < k; j++) {
			const struct zm_density *a = &dens[i], *b = &dens[j];
			double skl = 0.5 * (zm_density_kl(a, b) +
			                    zm_density_kl(b, a));
			double params = (double)a->d * (double)(a->q + b->q + 2);
			double need = ZM_DENSITY_KL_MIN + 4 * 0.5 * params *
			              (1 / (a->count > 1 ? a->count : 1) +
			               1 / (b->count > 1 ? b->count : 1));
			if (!isfinite(skl))
				continue;
			if (skl - need > set->sep_kl - set->sep_need ||
			    set->sep_kl < 0) {
				set->sep_kl = skl;
				set->sep_need = need;
				set->sep_a = i;
				set->sep_b = j;
			}
		}
	set->separable = set->sep_kl >= set->sep_need && set->sep_kl >= 0;
	if (!set->separable) {
		snprintf(set->why, sizeof(set->why), "the models' input "
		         "densities are indistinguishable (symmetric KL %.3g "
		         "between '%s' and '%s', below %.3g)", set->sep_kl,
		         names[set->sep_a], names[set->sep_b], set->sep_need);
		return ZM_OK;
	}
	/* Routing compares the models' residuals on one scale (density.h);
	 * separability was judged on the densities as fitted. */
	{
		struct zm_density *dp[ZM_WEIGHTER_MAX_MODELS];
		for (i = 0; i < k; i++)
			dp[i] = &dens[i];
		zm_density_tie_residual(dp, k);
	}
	return ZM_OK;
}

/*
 * Loads every model's density and decides whether they can be told apart:
 * the largest symmetric KL over pairs against ZM_DENSITY_KL_MIN plus four
 * times what estimation noise alone gives two fits of the same data,
 * about (parameters) (1/n_a + 1/n_b) / 2 nats.  The densities and the
 * verdict are made once per cache (the run's weighters share them) and
 * borrowed by every weighter of the same models.
 */
static enum zm_status load_densities(struct zm_weighter *w,
                                     struct zm_profile_cache *pc,
                                     const struct zm_model *const *models,
                                     const char *const *names,
                                     struct zm_error *err)
{
	size_t k = w->k, nk;
	struct zm_density_set *set;
	enum zm_status st;
	bool whole;

	if (!zm_size_mul(w->max_batch, k, &nk) ||
	    !(w->ll = zm_calloc(nk, sizeof(double))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	if ((st = zm_profile_cache_densities(pc, models, k, &set, err)))
		return st;
	w->dens = set->dens;
	if (!set->ready) {
		if ((st = make_densities(w, set, models, names, &whole, err)))
			return st;
		set->ready = whole;
	}
	w->separable = set->separable;
	w->sep_kl = set->sep_kl;
	w->sep_need = set->sep_need;
	w->sep_a = set->sep_a;
	w->sep_b = set->sep_b;
	memcpy(w->why, set->why, sizeof(w->why));
	return ZM_OK;
}

/*
 * A per-feature profile entry of a [C, H, W] input (the model input's)
 * reduced to the per-channel moments conv layers compare (conv.h): the
 * channel mean is the mean of its positions' means, its variance the mean
 * of (var + mean^2) over positions less the channel mean squared.
 */
static enum zm_status channel_moments(const struct zm_profile_entry *e,
                                      size_t c, double *dm, double *dv,
                                      float *pm, float *pv,
                                      struct zm_error *err)
{
	size_t hw = e->dim / c, ci, q;
	double *m = zm_malloc(e->dim * 2 * sizeof(double)), *v;

	if (!m)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	v = m + e->dim;
	zm_profile_entry_moments(e, m, v);
	for (ci = 0; ci < c; ci++) {
		double sm = 0, s2 = 0;
		for (q = 0; q < hw; q++) {
			double a = m[ci * hw + q];
			sm += a;
			s2 += v[ci * hw + q] + a * a;
		}
		sm /= (double)hw;
		s2 = s2 / (double)hw - sm * sm;
		dm[ci] = sm;
		dv[ci] = s2 > 0 ? s2 : 0;
		pm[ci] = (float)dm[ci];
		pv[ci] = (float)dv[ci];
	}
	free(m);
	return ZM_OK;
}

/* Loads the profile entries that layer l's similarity needs for every
 * model into w->pm/pv/dm/dv[l]. */
static enum zm_status load_layer_profiles(struct zm_weighter *w, size_t l,
                                          const struct zm_model *const *models,
                                          const char *const *names,
                                          const struct zm_profile *const *profs,
                                          struct zm_error *err)
{
	const struct zm_layer_spec *s = &w->arch->layers[l];
	size_t d = zm_layer_profile_dim(s), i, j, kd;
	bool first_param = true;
	enum zm_status st;

	for (j = 0; j < l; j++)
		if (w->arch->layers[j].has_params)
			first_param = false;
	if (!zm_size_mul(w->k, d, &kd))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	w->pm[l] = zm_malloc(kd * sizeof(float));
	w->pv[l] = zm_malloc(kd * sizeof(float));
	w->dm[l] = zm_malloc(kd * sizeof(double));
	w->dv[l] = zm_malloc(kd * sizeof(double));
	if (!w->pm[l] || !w->pv[l] || !w->dm[l] || !w->dv[l])
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	for (i = 0; i < w->k; i++) {
		const struct zm_profile_entry *e;
		const char *ename = s->name;

		e = w->o.level == ZM_GRAN_FULL ? NULL :
		    zm_profile_find(profs[i], s->name);
		if (!e && first_param &&
		    s->in_features == models[i]->arch->input_features) {
			ename = ZM_PROFILE_INPUT;
			e = zm_profile_find(profs[i], ZM_PROFILE_INPUT);
		}
		if (!e)
			return zm_error_set(err, ZM_ERR_DATA, "model '%s' has no "
			                    "profile entry '%s' (the input of "
			                    "layer '%s'): similarity weighting at "
			                    "the %s level needs it; use --weighting "
			                    "uniform or static, or a coarser "
			                    "--granularity", names[i], ename,
			                    s->name,
			                    zm_gran_level_name(w->o.level));
		if (e->dim != d && e->dim == s->in_features && d < e->dim &&
		    e->count > 0) {
			st = channel_moments(e, d, w->dm[l] + i * d,
			                     w->dv[l] + i * d, w->pm[l] + i * d,
			                     w->pv[l] + i * d, err);
			if (st != ZM_OK)
				return st;
			continue;
		}
		if (e->dim != d || !(e->count > 0))
			return zm_error_set(err, ZM_ERR_DATA, "model '%s': profile "
			                    "entry '%s' has %zu features after %g "
			                    "rows, layer '%s' takes %zu", names[i],
			                    ename, e->dim, e->count, s->name, d);
		zm_profile_entry_moments(e, w->dm[l] + i * d, w->dv[l] + i * d);
		zm_profile_entry_moments_f32(e, w->pm[l] + i * d,
		                             w->pv[l] + i * d);
	}
	return ZM_OK;
}

/* Does model i's arch describe a classifier whose zoo accuracy we can use?
 * Parses "accuracy" out of the zm.metrics JSON text without a JSON
 * library: the key, a colon, a number. */
static double metric_accuracy(const struct zm_model *m)
{
	const char *p;
	double v;

	if (!m->metrics || !(p = strstr(m->metrics, "\"accuracy\"")))
		return NAN;
	p = strchr(p, ':');
	if (!p)
		return NAN;
	v = strtod(p + 1, NULL);
	return v > 0 && v <= 1 ? v : NAN;
}

/*
 * slice_of[c]: the assignment slice of router class c, by name (the
 * router's zm.classes are the slices it learned from slice --membership).
 * A router that names no classes was written before zoomerge kept them:
 * class c is slice c.  The counts are equal (checked by the caller).
 */
static enum zm_status router_slices(const struct zm_model *router,
                                    const struct zm_assignment *a,
                                    size_t *slice_of, struct zm_error *err)
{
	struct zm_names rc;
	enum zm_status st;
	size_t c, s;

	zm_names_init(&rc);
	st = zm_names_from_meta(&rc, &router->extra, ZM_META_CLASSES,
	                        "the router", err);
	for (c = 0; st == ZM_OK && c < a->n_slices; c++) {
		slice_of[c] = c;
		if (!rc.known)
			continue;
		for (s = 0; s < a->n_slices; s++)
			if (strcmp(a->slices[s].slice, rc.v[c]) == 0)
				break;
		if (c >= rc.n || s == a->n_slices)
			st = zm_error_set(err, ZM_ERR_DATA, "router class '%s' is "
			                  "not a slice of the assignment: the "
			                  "router was trained on other slices",
			                  c < rc.n ? rc.v[c] : "?");
		else
			slice_of[c] = s;
	}
	zm_names_release(&rc);
	return st;
}

/* Router weighting: the router's workspace and, per slice of the
 * assignment (router class j is the slice of its name), its models'
 * weights. */
static enum zm_status setup_router(struct zm_weighter *w,
                                   const char *const *names,
                                   const struct zm_model *router,
                                   const struct zm_assignment *assignment,
                                   size_t nk, struct zm_error *err)
{
	const struct zm_arch *ra = router->arch;
	const size_t k = w->k, max_batch = w->max_batch;
	size_t *slice_of = NULL;      /* router class -> assignment slice */
	enum zm_status st;
	size_t s, i;

	if (ra->input_features != w->arch->input_features ||
	    ra->loss != ZM_LOSS_CROSS_ENTROPY) {
		st = zm_error_set(err, ZM_ERR_DATA, "the router takes %zu "
		                  "features (%s), the models %zu: it must "
		                  "be a classifier of the same inputs",
		                  ra->input_features, zm_loss_name(ra->loss),
		                  w->arch->input_features);
		return st;
	}
	if (ra->output_features != assignment->n_slices) {
		st = zm_error_set(err, ZM_ERR_DATA, "the router has %zu "
		                  "classes, the assignment %zu slices: "
		                  "each router class must be a slice",
		                  ra->output_features, assignment->n_slices);
		return st;
	}
	if (!(slice_of = zm_calloc(assignment->n_slices, sizeof(*slice_of))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	if ((st = router_slices(router, assignment, slice_of, err))) {
		free(slice_of);
		return st;
	}
	w->router = router;
	w->n_route = assignment->n_slices;
	w->route = zm_calloc(w->n_route * k, sizeof(double));
	w->router_w = zm_calloc(nk, sizeof(double));
	if (!w->route || !w->router_w) {
		free(slice_of);
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	}
	st = zm_workspace_new(ra, max_batch, false, &w->rws, err);
	if (st == ZM_OK)
		st = zm_workspace_pack(w->rws, router, err);
	if (st != ZM_OK) {
		free(slice_of);
		return st;
	}
	/* Models of the assignment that are not predicting are left
	 * out; the weights are renormalised per row anyway. */
	for (s = 0; s < w->n_route; s++) {
		const struct zm_assignment_slice *sl =
			&assignment->slices[slice_of[s]];
		for (i = 0; i < sl->n_models; i++) {
			ptrdiff_t m = name_index(names, k, sl->models[i].model);
			if (m >= 0)
				w->route[s * k + (size_t)m] +=
					sl->models[i].weight;
		}
	}
	free(slice_of);
	return ZM_OK;
}

enum zm_status zm_weighter_new(const struct zm_weighter_options *o,
                               const struct zm_model *const *models,
                               const char *const *names, size_t k,
                               size_t max_batch, const double *stat,
                               const struct zm_model *router,
                               const struct zm_assignment *assignment,
                               struct zm_weighter **out,
                               struct zm_error *err)
{
	struct zm_weighter *w;
	const struct zm_profile *profs[ZM_WEIGHTER_MAX_MODELS];
	struct zm_profile_cache *pc;
	enum zm_status st = ZM_OK;
	size_t l, i, u, L, nk;

	*out = NULL;
	ZM_ASSERT(k > 0 && max_batch > 0);
	if (k > ZM_WEIGHTER_MAX_MODELS)
		return zm_error_set(err, ZM_ERR_USAGE, "%zu models: at most %d "
		                    "predict together", k, ZM_WEIGHTER_MAX_MODELS);
	if (!(o->temperature > 0) || !isfinite(o->temperature))
		return zm_error_set(err, ZM_ERR_USAGE, "the temperature must be "
		                    "a positive number");
	if (uses_router(o->kind) && (!router || !assignment))
		return zm_error_set(err, ZM_ERR_USAGE, "%s weighting needs a "
		                    "router model and an assignment",
		                    zm_weighting_name(o->kind));
	if (o->kind == ZM_WEIGHTING_STATIC && !stat)
		return zm_error_set(err, ZM_ERR_USAGE, "static weighting needs "
		                    "the static weights");
	if (!zm_size_mul(max_batch, k, &nk))
		return zm_error_set(err, ZM_ERR_NOMEM, "batch too large");
	w = zm_calloc(1, sizeof(*w));
	if (!w)
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	w->o = *o;
	w->k = k;
	w->max_batch = max_batch;
	w->arch = models[0]->arch;
	L = w->n_layers = w->arch->n_layers;
	w->k_active = o->top_k > 0 && o->top_k < k ? o->top_k : k;
	w->probe_model = SIZE_MAX;
	w->o.cache = NULL;
	if (!(pc = o->cache)) {
		if (!(pc = w->own_cache = zm_malloc(sizeof(*pc)))) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
			goto fail;
		}
		zm_profile_cache_init(pc);
	}
	st = zm_gran_units_init(&w->units, o->level, w->arch, err);
	if (st != ZM_OK)
		goto fail;
	w->unit_first = zm_calloc(w->units.n_units, sizeof(size_t));
	w->pm = zm_calloc(L, sizeof(*w->pm));
	w->pv = zm_calloc(L, sizeof(*w->pv));
	w->dm = zm_calloc(L, sizeof(*w->dm));
	w->dv = zm_calloc(L, sizeof(*w->dv));
	w->prior = zm_calloc(k, sizeof(double));
	w->alpha = zm_calloc(w->units.n_units * k, sizeof(double));
	w->scores = zm_calloc(nk, sizeof(double));
	w->qm = zm_calloc(w->arch->max_features + 1, sizeof(double));
	w->qv = zm_calloc(w->arch->max_features + 1, sizeof(double));
	w->unit_sim = zm_calloc(w->units.n_units * k, sizeof(double));
	w->unit_has_sim = zm_calloc(w->units.n_units, sizeof(bool));
	if (!w->unit_first || !w->pm || !w->pv || !w->dm || !w->dv ||
	    !w->prior || !w->alpha || !w->scores || !w->qm || !w->qv ||
	    !w->unit_sim || !w->unit_has_sim) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		goto fail;
	}
	/* The first parameter layer of each unit is where its weights are
	 * decided (and its similarity measured). */
	for (u = 0; u < w->units.n_units; u++)
		w->unit_first[u] = SIZE_MAX;
	for (l = 0; l < L; l++) {
		u = w->units.layer_unit[l];
		if (w->arch->layers[l].has_params && w->unit_first[u] == SIZE_MAX)
			w->unit_first[u] = l;
	}
	if (stat) {
		if (!(w->stat = zm_malloc(L * k * sizeof(double)))) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
			goto fail;
		}
		memcpy(w->stat, stat, L * k * sizeof(double));
	}
	if (uses_similarity(o->kind)) {
		for (i = 0; i < k; i++) {
			st = zm_profile_cache_profile(pc, models[i], &profs[i],
			                              err);
			if (st == ZM_ERR_NOTFOUND) {
				st = zm_error_set(err, ZM_ERR_DATA, "model '%s' has no "
				                  "profile: similarity weighting needs "
				                  "one (train it with train-step); use "
				                  "--weighting uniform or static",
				                  names[i]);
			} else if (st != ZM_OK) {
				zm_error_prefix(err, "model '%s': ", names[i]);
			}
			if (st != ZM_OK)
				goto fail;
		}
		for (u = 0; u < w->units.n_units; u++) {
			l = w->unit_first[u];
			if (l == SIZE_MAX)
				continue;
			st = load_layer_profiles(w, l, models, names, profs, err);
			if (st != ZM_OK)
				goto fail;
		}
	}
	if (o->kind == ZM_WEIGHTING_DENSITY &&
	    (st = load_densities(w, pc, models, names, err)) != ZM_OK)
		goto fail;
	if (uses_router(o->kind) &&
	    (st = setup_router(w, names, router, assignment, nk, err)))
		goto fail;
	*out = w;
	return ZM_OK;
fail:
	zm_weighter_free(w);
	return st;
}

void zm_weighter_use_metrics(struct zm_weighter *w,
                             const struct zm_model *const *models)
{
	size_t i;

	for (i = 0; i < w->k; i++) {
		double a = metric_accuracy(models[i]);
		w->prior[i] = isfinite(a) ? log(a) : 0;
	}
}

void zm_weighter_begin(struct zm_weighter *w, const float *x, size_t n)
{
	size_t u;

	for (u = 0; u < w->units.n_units; u++)
		w->unit_has_sim[u] = false;
	w->pending = ZM_OK;
	if (w->o.kind == ZM_WEIGHTING_DENSITY && n > 0) {
		if (w->separable) {
			const struct zm_density *dp[ZM_WEIGHTER_MAX_MODELS];
			for (u = 0; u < w->k; u++)
				dp[u] = &w->dens[u];
			w->pending = zm_density_loglik(dp, w->k, x, n, w->ll,
			                               &w->pending_err);
		} else {
			memset(w->ll, 0, n * w->k * sizeof(double));
		}
	}
	if (w->router && n > 0) {
		const float *z = zm_model_forward(w->router, w->rws, x, n);
		size_t S = w->n_route, k = w->k, r, s, i;

		for (r = 0; r < n; r++) {
			const float *zr = z + r * S;
			double mx = zr[0], sum = 0, *rw = w->router_w + r * k;
			for (s = 1; s < S; s++)
				if (zr[s] > mx)
					mx = zr[s];
			for (s = 0; s < S; s++)
				sum += exp((double)zr[s] - mx);
			for (i = 0; i < k; i++)
				rw[i] = 0;
			for (s = 0; s < S; s++) {
				double p = exp((double)zr[s] - mx) / sum;
				for (i = 0; i < k; i++)
					rw[i] += p * w->route[s * k + i];
			}
		}
	}
}

/* Batch mean and population variance of h (n x d) in double, two-pass. */
static void batch_moments(const float *h, size_t n, size_t d, double *mean,
                          double *var)
{
	size_t r, j;

	for (j = 0; j < d; j++)
		mean[j] = var[j] = 0;
	for (r = 0; r < n; r++)
		for (j = 0; j < d; j++)
			mean[j] += h[r * d + j];
	for (j = 0; j < d; j++)
		mean[j] /= (double)n;
	for (r = 0; r < n; r++)
		for (j = 0; j < d; j++) {
			double e = h[r * d + j] - mean[j];
			var[j] += e * e;
		}
	for (j = 0; j < d; j++)
		var[j] /= (double)n;
}

/*
 * Similarity scores for a layer whose input h is [n, C, H*W]: per channel
 * over space (and the batch, with per-batch weights), as its profile.
 */
static enum zm_status spatial_scores(struct zm_weighter *w, size_t l,
                                     const float *h, size_t n,
                                     struct zm_error *err)
{
	const struct zm_layer_spec *s = &w->arch->layers[l];
	size_t c = zm_layer_profile_dim(s), hw = s->in_features / c, k = w->k;
	size_t r, ci, q, i;
	enum zm_status st = ZM_OK;

	if (w->o.per_row) {
		float *cm = zm_malloc(n * c * sizeof(float));
		if (!cm)
			return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
		for (r = 0; r < n; r++)
			for (ci = 0; ci < c; ci++) {
				const float *src = h + (r * c + ci) * hw;
				double sm = 0;
				for (q = 0; q < hw; q++)
					sm += src[q];
				cm[r * c + ci] = (float)(sm / (double)hw);
			}
		st = zm_similarity_rows(w->o.metric, cm, n, c, w->pm[l],
		                        w->o.metric == ZM_METRIC_COSINE ? NULL :
		                        w->pv[l], k, ZM_SIM_FLOOR_AUTO,
		                        w->scores, err);
		free(cm);
		return st;
	}
	for (ci = 0; ci < c; ci++) {
		double sm = 0, s2 = 0, cnt = (double)(n * hw);
		for (r = 0; r < n; r++) {
			const float *src = h + (r * c + ci) * hw;
			for (q = 0; q < hw; q++)
				sm += src[q];
		}
		sm /= cnt;
		for (r = 0; r < n; r++) {
			const float *src = h + (r * c + ci) * hw;
			for (q = 0; q < hw; q++)
				s2 += (src[q] - sm) * (src[q] - sm);
		}
		w->qm[ci] = sm;
		w->qv[ci] = s2 / cnt;
	}
	for (i = 0; i < k; i++)
		w->scores[i] = zm_similarity(w->o.metric, w->qm, w->qv,
		                             w->dm[l] + i * c, w->dv[l] + i * c,
		                             c, ZM_SIM_FLOOR_AUTO);
	return st;
}

enum zm_status zm_weighter_layer(struct zm_weighter *w, size_t l,
                                 const float *h, size_t n, double *out,
                                 struct zm_error *err)
{
	size_t k = w->k, u = w->units.layer_unit[l], L = w->unit_first[u];
	size_t rows = w->o.per_row ? n : 1, r, i, d;
	double T = w->o.temperature, logits[ZM_WEIGHTER_MAX_MODELS], *lg;
	double *sim = NULL;
	const double *hs = w->hedge ? w->hedge->score : NULL;
	bool sim_on = uses_similarity(w->o.kind);
	enum zm_status st;

	ZM_ASSERT(l < w->n_layers && w->arch->layers[l].has_params);
	ZM_ASSERT(k <= ZM_WEIGHTER_MAX_MODELS);
	lg = logits;
	if (n == 0)
		return ZM_OK;
	if (w->pending != ZM_OK) {
		*err = w->pending_err;
		return w->pending;
	}
	if (w->o.kind == ZM_WEIGHTING_DENSITY && l == L) {
		/* The trace's similarity: the mean log-likelihood. */
		for (i = 0; i < k; i++) {
			double s = 0;
			for (r = 0; r < n; r++)
				s += w->ll[r * k + i];
			w->unit_sim[u * k + i] = s / (double)n;
		}
		w->unit_has_sim[u] = true;
	}
	/* The similarity is measured where the unit begins (its first layer
	 * with parameters) and reused for its other layers; the predictor
	 * calls the layers in order, so that h is what that layer saw. */
	if (sim_on && l == L) {
		d = w->arch->layers[l].in_features;
		if (w->arch->layers[l].in_ndim == 3) {
			st = spatial_scores(w, l, h, n, err);
			if (st != ZM_OK)
				return st;
		} else if (w->o.per_row) {
			st = zm_similarity_rows(w->o.metric, h, n, d, w->pm[l],
			                        w->o.metric == ZM_METRIC_COSINE ?
			                        NULL : w->pv[l], k,
			                        ZM_SIM_FLOOR_AUTO, w->scores, err);
			if (st != ZM_OK)
				return st;
		} else {
			batch_moments(h, n, d, w->qm, w->qv);
			for (i = 0; i < k; i++)
				w->scores[i] = zm_similarity(w->o.metric, w->qm, w->qv,
				                             w->dm[l] + i * d,
				                             w->dv[l] + i * d, d,
				                             ZM_SIM_FLOOR_AUTO);
		}
		for (i = 0; i < k; i++) {
			double s = 0;
			for (r = 0; r < rows; r++)
				s += w->scores[r * k + i];
			w->unit_sim[u * k + i] = s / (double)rows;
		}
		w->unit_has_sim[u] = true;
	}
	if (sim_on)
		sim = w->scores;
	for (r = 0; r < rows; r++) {
		for (i = 0; i < k; i++) {
			double v = w->prior[i] + w->alpha[u * k + i];
			if (hs)
				v += hs[i];
			if (sim)
				v += sim[r * k + i] / T;
			switch (w->o.kind) {
			case ZM_WEIGHTING_ROUTER:
			case ZM_WEIGHTING_ROUTER_SIMILARITY: {
				double rw;
				if (w->o.per_row) {
					rw = w->router_w[r * k + i];
				} else {
					size_t q;
					rw = 0;
					for (q = 0; q < n; q++)
						rw += w->router_w[q * k + i];
					rw /= (double)n;
				}
				v += rw > 0 ? log(rw) : -INFINITY;
				break;
			}
			case ZM_WEIGHTING_STATIC: {
				double sw = w->stat[l * k + i];
				v += sw > 0 ? log(sw) : -INFINITY;
				break;
			}
			case ZM_WEIGHTING_DENSITY:
				v += (w->o.per_row ? w->ll[r * k + i] :
				      w->unit_sim[u * k + i]) / T;
				break;
			default:
				break;
			}
			lg[i] = v;
		}
		zm_weights_softmax_topk(lg, k, w->k_active, out + r * k);
		if (w->probe_model < k) {
			double *o = out + r * k, sh = w->probe_share;
			for (i = 0; i < k; i++)
				o[i] *= 1 - sh;
			o[w->probe_model] += sh;
		}
	}
	return ZM_OK;
}

void zm_weighter_probe(struct zm_weighter *w, size_t model, double share)
{
	ZM_ASSERT(model == SIZE_MAX || (model < w->k && share > 0 &&
	                                share <= 1));
	w->probe_model = model;
	w->probe_share = share;
}

void zm_weighter_adjust(struct zm_weighter *w, double seconds_per_model)
{
	size_t k = w->o.top_k > 0 && w->o.top_k < w->k ? w->o.top_k : w->k;
	double load[1];

	if (w->o.latency_budget_ms > 0 && seconds_per_model > 0) {
		double fit = floor(w->o.latency_budget_ms /
		                   (seconds_per_model * 1000.0));
		if (fit < (double)k)
			k = fit < 1 ? 1 : (size_t)fit;
	}
	if (w->o.use_loadavg && w->o.latency_budget_ms > 0 &&
	    getloadavg(load, 1) == 1) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);
		if (cpus > 0 && load[0] >= (double)cpus)
			k = k / 2 > 0 ? k / 2 : 1;
	}
	w->k_active = k;
}
