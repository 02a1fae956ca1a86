/*
 * Realignment of hidden units by weight matching (see align.h).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "align.h"
#include "gemm.h"
#include "lineage.h"
#include "mem.h"
#include "stream.h"

void zm_align_info_release(struct zm_align_info *info)
{
	size_t l;

	if (!info)
		return;
	for (l = 0; l < ZM_ARCH_MAX_LAYERS; l++) {
		free(info->perm[l]);
		info->perm[l] = NULL;
	}
}

/*
 * The Hungarian method in its shortest-augmenting-path form, minimising
 * cost = -score.  Rows are added one at a time; each addition grows a
 * tree of tight edges (reduced cost 0 under the potentials u of rows and
 * v of columns) from the new row until it reaches a free column, raising
 * the potentials by the smallest slack whenever the tree is stuck, and
 * then flips the path.  Column 0 is a sentinel that holds the row being
 * added, so indices below are 1-based: row i is score row i - 1.
 */
enum zm_status zm_align_assign(const double *score, size_t n, size_t *match,
                               struct zm_error *err)
{
	double *u = NULL, *v = NULL, *slack = NULL;
	size_t *owner = NULL, *from = NULL;
	unsigned char *done = NULL;
	enum zm_status st = ZM_OK;
	size_t i, j, k;

	for (k = 0; k < n * n; k++)
		if (!isfinite(score[k]))
			return zm_error_set(err, ZM_ERR_DATA, "similarity %zu, %zu "
			                    "is not finite", k / n, k % n);
	if (n == 0)
		return ZM_OK;
	u = zm_calloc(n + 1, sizeof(*u));
	v = zm_calloc(n + 1, sizeof(*v));
	slack = zm_malloc((n + 1) * sizeof(*slack));
	owner = zm_calloc(n + 1, sizeof(*owner));   /* column -> row, 0 free */
	from = zm_calloc(n + 1, sizeof(*from));     /* column -> previous */
	done = zm_malloc(n + 1);
	if (!u || !v || !slack || !owner || !from || !done) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory matching "
		                  "%zu units", n);
		goto out;
	}
	for (i = 1; i <= n; i++) {
		size_t col = 0, next = 0;

		owner[0] = i;
		for (j = 0; j <= n; j++) {
			slack[j] = INFINITY;
			done[j] = 0;
		}
		do {
			size_t row = owner[col];
			double delta = INFINITY;

			done[col] = 1;
			for (j = 1; j <= n; j++) {
				double red;
				if (done[j])
					continue;
				red = -score[(row - 1) * n + (j - 1)] - u[row] - v[j];
				if (red < slack[j]) {
					slack[j] = red;
					from[j] = col;
				}
				if (slack[j] < delta) {
					delta = slack[j];
					next = j;
				}
			}
			for (j = 0; j <= n; j++) {
				if (done[j]) {
					u[owner[j]] += delta;
					v[j] -= delta;
				} else {
					slack[j] -= delta;
				}
			}
			col = next;
		} while (owner[col] != 0);
		/* Flip the path back to the sentinel. */
		while (col != 0) {
			size_t prev = from[col];
			owner[col] = owner[prev];
			col = prev;
		}
	}
	for (j = 1; j <= n; j++)
		match[owner[j] - 1] = j - 1;
out:
	free(u);
	free(v);
	free(slack);
	free(owner);
	free(from);
	free(done);
	return st;
}

/*
 * Which layers are realigned: hidden[l] for a dense layer with a later
 * dense layer that its units reach through per-unit layers only.
 * Refuses what this file cannot realign.
 */
static enum zm_status plan(const struct zm_arch *a, bool *hidden,
                           struct zm_error *err)
{
	size_t l, k, last = SIZE_MAX;

	for (l = 0; l < a->n_layers; l++) {
		hidden[l] = false;
		if (a->layers[l].type == ZM_LAYER_CONV2D)
			return zm_error_set(err, ZM_ERR_DATA, "layer '%s' is "
			                    "conv2d: realigning channels is not "
			                    "implemented (models of dense layers "
			                    "only)", a->layers[l].name);
		if (a->layers[l].trainable)
			last = l;
	}
	for (l = 0; l < a->n_layers; l++) {
		const struct zm_layer_spec *s = &a->layers[l];
		if (s->type != ZM_LAYER_DENSE || l == last)
			continue;
		for (k = l + 1; k < a->n_layers; k++) {
			const struct zm_layer_spec *t = &a->layers[k];
			if (t->type == ZM_LAYER_DENSE)
				break;
			if (t->in_features != s->out_features ||
			    t->out_features != s->out_features ||
			    (t->type != ZM_LAYER_STANDARDIZE &&
			     t->type != ZM_LAYER_BATCHNORM &&
			     t->type != ZM_LAYER_CLIP &&
			     t->type != ZM_LAYER_DROPOUT))
				return zm_error_set(err, ZM_ERR_DATA, "layer '%s' "
				                    "(%s) after '%s': only per-unit "
				                    "layers may come between dense "
				                    "layers that are realigned",
				                    t->name,
				                    zm_layer_type_name(t->type),
				                    s->name);
		}
		hidden[l] = k < a->n_layers;
	}
	return ZM_OK;
}

/* x[i] = old x[p[i]] for n values of width w floats, through tmp. */
static void permute_rows(float *x, const size_t *p, size_t n, size_t w,
                         float *tmp)
{
	size_t i;

	memcpy(tmp, x, n * w * sizeof(float));
	for (i = 0; i < n; i++)
		memcpy(x + i * w, tmp + p[i] * w, w * sizeof(float));
}

/* Columns: x [rows, n], x[r][i] = old x[r][p[i]]; tmp holds n floats. */
static void permute_cols(float *x, const size_t *p, size_t rows, size_t n,
                         float *tmp)
{
	size_t r, i;

	for (r = 0; r < rows; r++) {
		float *xr = x + r * n;
		memcpy(tmp, xr, n * sizeof(float));
		for (i = 0; i < n; i++)
			xr[i] = tmp[p[i]];
	}
}

/* Applies p to the units of hidden layer l of m: its rows and biases,
 * the per-unit layers after it, and the next dense layer's columns. */
static void apply_perm(struct zm_model *m, size_t l, const size_t *p,
                       float *tmp)
{
	const struct zm_arch *a = m->arch;
	size_t units = a->layers[l].out_features, in = a->layers[l].in_features;
	size_t k;

	permute_rows(m->layers[l].weight.data, p, units, in, tmp);
	permute_rows(m->layers[l].bias.data, p, units, 1, tmp);
	for (k = l + 1; k < a->n_layers; k++) {
		struct zm_layer *y = &m->layers[k];
		if (a->layers[k].type == ZM_LAYER_DENSE) {
			permute_cols(y->weight.data, p, a->layers[k].out_features,
			             units, tmp);
			break;
		}
		if (!a->layers[k].has_params)
			continue;
		permute_rows(y->weight.data, p, units, 1, tmp);
		permute_rows(y->bias.data, p, units, 1, tmp);
	}
}

/* The profile statistics of the inputs of layers l+1 .. the next dense
 * one: the units of l in the candidate's order, permuted like them. */
static void permute_profile(struct zm_model *m, size_t l, const size_t *p,
                            float *tmp)
{
	const struct zm_arch *a = m->arch;
	size_t units = a->layers[l].out_features, k, s;
	static const char *const stat[] = { "mean", "var" };

	for (k = l + 1; k < a->n_layers; k++) {
		for (s = 0; s < 2; s++) {
			char name[ZM_LAYER_NAME_MAX + 32];
			struct zm_tensor *t;
			snprintf(name, sizeof(name), "profile.%s.%s",
			         a->layers[k].name, stat[s]);
			t = zm_doc_find(&m->extra, name);
			if (t && t->dtype == ZM_DTYPE_F32 && t->data &&
			    zm_tensor_numel(t) == units)
				permute_rows(t->data, p, units, 1, tmp);
		}
		if (a->layers[k].type == ZM_LAYER_DENSE)
			break;
	}
}

/*
 * The similarity of the reference's units (rows) to the candidate's
 * (columns) of hidden layer l, [units, units], into sim; with next, the
 * next dense layer's columns too.
 */
static void similarity(const struct zm_model *ref, const struct zm_model *c,
                       size_t l, bool next, float *sim)
{
	const struct zm_arch *a = ref->arch;
	size_t units = a->layers[l].out_features, in = a->layers[l].in_features;
	const float *ab = ref->layers[l].bias.data, *cb = c->layers[l].bias.data;
	size_t i, j, k;

	zm_gemm(false, true, units, units, in, 1.0f, ref->layers[l].weight.data,
	        in, c->layers[l].weight.data, in, 0.0f, sim, units);
	for (i = 0; i < units; i++)
		for (j = 0; j < units; j++)
			sim[i * units + j] += ab[i] * cb[j];
	if (!next)
		return;
	for (k = l + 1; a->layers[k].type != ZM_LAYER_DENSE; k++)
		;
	zm_gemm(true, false, units, units, a->layers[k].out_features, 1.0f,
	        ref->layers[k].weight.data, units, c->layers[k].weight.data,
	        units, 1.0f, sim, units);
}

/* The lowest hidden-layer alignment of a and b (lineage.h). */
static double alignment(const struct zm_model *a, const struct zm_model *b)
{
	struct zm_lineage_info info;
	struct zm_error e;

	zm_error_clear(&e);
	if (zm_lineage_related(a, b, &info, &e) != ZM_OK || !info.has_alignment)
		return NAN;
	return info.alignment;
}

enum zm_status zm_align_model(const struct zm_model *ref,
                              const char *ref_label, struct zm_model *m,
                              struct zm_align_info *info,
                              struct zm_error *err)
{
	const struct zm_arch *a = ref->arch;
	bool hidden[ZM_ARCH_MAX_LAYERS];
	struct zm_model *c = NULL;
	float *sim = NULL, *tmp = NULL;
	double *score = NULL;
	size_t *step = NULL, *total = NULL;
	size_t l, i, maxu = 0, maxw = 0, sweep;
	enum zm_status st;

	memset(info, 0, sizeof(*info));
	info->n_layers = a->n_layers;
	if ((st = zm_model_same_arch(a, m->arch, err)) != ZM_OK)
		return zm_error_prefix(err, "cannot realign: ");
	if ((st = plan(a, hidden, err)) != ZM_OK)
		return st;
	for (l = 0; l < a->n_layers; l++) {
		size_t w = a->layers[l].n_weight;
		if (w > maxw)
			maxw = w;
		if (hidden[l] && a->layers[l].out_features > maxu)
			maxu = a->layers[l].out_features;
	}
	info->before = alignment(ref, m);
	/* The work happens on a copy, so that m is unchanged on error. */
	if ((st = zm_model_copy(m, &c, err)) != ZM_OK)
		return st;
	for (l = 0; l < a->n_layers; l++)
		if (hidden[l] && !(info->perm[l] = zm_malloc(
		        a->layers[l].out_features * sizeof(size_t))))
			goto nomem;
	if (maxu && (!(sim = zm_malloc(maxu * maxu * sizeof(float))) ||
	             !(score = zm_malloc(maxu * maxu * sizeof(double))) ||
	             !(step = zm_malloc(maxu * sizeof(size_t))) ||
	             !(total = zm_malloc(maxu * sizeof(size_t)))))
		goto nomem;
	if (!(tmp = zm_malloc((maxw > maxu ? maxw : maxu) * sizeof(float) + 1)))
		goto nomem;
	for (l = 0; l < a->n_layers; l++)
		for (i = 0; hidden[l] && i < a->layers[l].out_features; i++)
			info->perm[l][i] = i;
	for (sweep = 0; maxu && sweep < ZM_ALIGN_MAX_SWEEPS; sweep++) {
		bool changed = false;
		for (l = 0; l < a->n_layers; l++) {
			size_t n = a->layers[l].out_features, k;
			double gain = 0, keep = 0;
			if (!hidden[l])
				continue;
			similarity(ref, c, l, sweep > 0, sim);
			for (k = 0; k < n * n; k++)
				score[k] = sim[k];
			if ((st = zm_align_assign(score, n, step, err)) != ZM_OK) {
				zm_error_prefix(err, "layer '%s': ",
				                a->layers[l].name);
				goto out;
			}
			for (i = 0; i < n; i++) {
				gain += score[i * n + step[i]];
				keep += score[i * n + i];
			}
			/* Another optimum as good as the order there is (ties)
			 * is no reason to move units. */
			if (gain - keep <= 1e-9 * (fabs(keep) + 1))
				continue;
			changed = true;
			apply_perm(c, l, step, tmp);
			for (i = 0; i < n; i++)
				total[i] = info->perm[l][step[i]];
			memcpy(info->perm[l], total, n * sizeof(size_t));
		}
		info->sweeps = sweep + 1;
		if (!changed && sweep > 0)
			break;
	}
	/* Done: the weights back into m, and its profile alike. */
	for (l = 0; l < a->n_layers; l++) {
		if (!a->layers[l].has_params)
			continue;
		memcpy(m->layers[l].weight.data, c->layers[l].weight.data,
		       m->layers[l].weight.nbytes);
		memcpy(m->layers[l].bias.data, c->layers[l].bias.data,
		       m->layers[l].bias.nbytes);
	}
	for (l = 0; l < a->n_layers; l++) {
		if (!hidden[l])
			continue;
		permute_profile(m, l, info->perm[l], tmp);
		for (i = 0; i < a->layers[l].out_features; i++)
			info->moved += info->perm[l][i] != i;
	}
	info->after = alignment(ref, m);
	if (ref_label)
		st = zm_doc_set_meta(&m->extra, ZM_ALIGN_KEY, ref_label, err);
	goto out;
nomem:
	st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory realigning");
out:
	zm_model_free(c);
	free(sim);
	free(score);
	free(step);
	free(total);
	free(tmp);
	return st;
}

enum zm_status zm_align_file(const struct zm_model *ref,
                             const char *ref_label, const char *path,
                             const char *out, struct zm_align_info *info,
                             struct zm_error *err)
{
	struct zm_model *m = NULL;
	struct zm_writer *w = NULL;
	struct zm_doc doc;
	enum zm_status st;

	memset(info, 0, sizeof(*info));
	zm_doc_init(&doc);
	if ((st = zm_model_load(path, &m, err)) != ZM_OK)
		return st;
	if ((st = zm_align_model(ref, ref_label, m, info, err)) != ZM_OK) {
		zm_error_prefix(err, "%s: ", path);
		goto out;
	}
	if ((st = zm_model_to_doc(m, &doc, err)) ||
	    (st = zm_writer_open(&w, out, ZM_COMPRESS_AUTO, err)) ||
	    (st = zm_writer_write_doc(w, &doc, err)))
		goto out;
	st = zm_writer_commit(w, err);
	w = NULL;
out:
	zm_writer_abort(w);
	zm_doc_release(&doc);
	zm_model_free(m);
	return st;
}
