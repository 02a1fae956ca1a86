/*
 * Realignment of hidden units by weight matching (see align.h).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* The units of a layer with trainable parameters: a dense layer's
 * outputs, a conv2d layer's filters (output channels). */
static size_t units_of(const struct zm_layer_spec *s)
{
	return s->type == ZM_LAYER_CONV2D ? (size_t)s->units : s->out_features;
}

/*
 * Which layers are realigned: hidden[l] for a dense or conv2d layer with a
 * later one (next[l]) that its units reach through layers that keep them
 * apart (per-unit statistics, clip, dropout, max pooling and flatten,
 * which keep channels in blocks of the spatial positions).  Refuses what
 * this file cannot realign.
 */
static enum zm_status plan(const struct zm_arch *a, bool *hidden,
                           size_t *next, struct zm_error *err)
{
	size_t l, k, last = SIZE_MAX;

	for (l = 0; l < a->n_layers; l++) {
		hidden[l] = false;
		next[l] = SIZE_MAX;
		if (a->layers[l].trainable)
			last = l;
	}
	for (l = 0; l < a->n_layers; l++) {
		const struct zm_layer_spec *s = &a->layers[l];
		size_t units = units_of(s);
		if ((s->type != ZM_LAYER_DENSE && s->type != ZM_LAYER_CONV2D) ||
		    l == last)
			continue;
		for (k = l + 1; k < a->n_layers; k++) {
			const struct zm_layer_spec *t = &a->layers[k];
			if (t->type == ZM_LAYER_DENSE || t->type == ZM_LAYER_CONV2D)
				break;
			if (t->in_features % units != 0 ||
			    (t->type != ZM_LAYER_STANDARDIZE &&
			     t->type != ZM_LAYER_BATCHNORM &&
			     t->type != ZM_LAYER_CLIP &&
			     t->type != ZM_LAYER_DROPOUT &&
			     t->type != ZM_LAYER_MAXPOOL2D &&
			     t->type != ZM_LAYER_FLATTEN))
				return zm_error_set(err, ZM_ERR_DATA, "layer '%s' "
				                    "(%s) after '%s': only per-unit "
				                    "layers may come between layers "
				                    "that are realigned", t->name,
				                    zm_layer_type_name(t->type),
				                    s->name);
		}
		if (k == a->n_layers || a->layers[k].in_features % units != 0)
			return zm_error_set(err, ZM_ERR_DATA, "layer '%s': its "
			                    "units do not reach the next layer "
			                    "with parameters whole", s->name);
		hidden[l] = true;
		next[l] = k;
	}
	return ZM_OK;
}

/* x [n, w] (n units of w floats each): unit i = old unit p[i]. */
static void permute_rows(float *x, const size_t *p, size_t n, size_t w,
                         float *tmp)
{
	size_t i;

	memcpy(tmp, x, n * w * sizeof(float));
	for (i = 0; i < n; i++)
		memcpy(x + i * w, tmp + p[i] * w, w * sizeof(float));
}

/* The units of a tensor of numel values laid out [units, numel / units]
 * (a per-unit statistic, a profile entry: channels in blocks). */
static void permute_blocks(float *x, size_t numel, const size_t *p,
                           size_t units, float *tmp)
{
	permute_rows(x, p, units, numel / units, tmp);
}

/* The next layer's weights [rows, units, g]: the units of every row. */
static void permute_cols(float *x, const size_t *p, size_t rows,
                         size_t units, size_t g, float *tmp)
{
	size_t r;

	for (r = 0; r < rows; r++)
		permute_rows(x + r * units * g, p, units, g, tmp);
}

/* Applies p to the units of hidden layer l of m: its rows and biases,
 * the per-unit parameters after it, and next layer k's inputs. */
static void apply_perm(struct zm_model *m, size_t l, size_t k,
                       const size_t *p, float *tmp)
{
	const struct zm_arch *a = m->arch;
	const struct zm_layer_spec *s = &a->layers[l];
	size_t units = units_of(s), j;

	permute_rows(m->layers[l].weight.data, p, units, s->n_weight / units,
	             tmp);
	permute_rows(m->layers[l].bias.data, p, units, 1, tmp);
	for (j = l + 1; j < k; j++)
		if (a->layers[j].has_params) {
			permute_blocks(m->layers[j].weight.data,
			               a->layers[j].n_weight, p, units, tmp);
			permute_blocks(m->layers[j].bias.data,
			               a->layers[j].n_bias, p, units, tmp);
		}
	permute_cols(m->layers[k].weight.data, p, units_of(&a->layers[k]), units,
	             a->layers[k].n_weight / units_of(&a->layers[k]) / units,
	             tmp);
}

/* The profile statistics of the inputs of layers l+1 .. k: the units of
 * l in the candidate's order, permuted like them. */
static void permute_profile(struct zm_model *m, size_t l, size_t k,
                            const size_t *p, float *tmp)
{
	const struct zm_arch *a = m->arch;
	size_t units = units_of(&a->layers[l]), j, s;
	static const char *const stat[] = { "mean", "var" };

	for (j = l + 1; j <= k; j++) {
		for (s = 0; s < 2; s++) {
			char name[ZM_LAYER_NAME_MAX + 32];
			struct zm_tensor *t;
			snprintf(name, sizeof(name), "profile.%s.%s",
			         a->layers[j].name, stat[s]);
			t = zm_doc_find(&m->extra, name);
			if (t && t->dtype == ZM_DTYPE_F32 && t->data &&
			    zm_tensor_numel(t) == a->layers[j].in_features)
				permute_blocks(t->data, zm_tensor_numel(t), p,
				               units, tmp);
		}
	}
}

/* x [rows, units, g] as [units, rows * g] into dst. */
static void unit_major(const float *x, size_t rows, size_t units, size_t g,
                       float *dst)
{
	size_t r, i;

	for (r = 0; r < rows; r++)
		for (i = 0; i < units; i++)
			memcpy(dst + i * rows * g + r * g, x + (r * units + i) * g,
			       g * sizeof(float));
}

/*
 * The similarity of the reference's units (rows) to the candidate's
 * (columns) of hidden layer l, [units, units], into sim; with next, the
 * inputs of next layer k too (through ta and tc, each the size of k's
 * weights).
 */
static void similarity(const struct zm_model *ref, const struct zm_model *c,
                       size_t l, size_t k, bool next, float *ta, float *tc,
                       float *sim)
{
	const struct zm_arch *a = ref->arch;
	size_t units = units_of(&a->layers[l]);
	size_t row = a->layers[l].n_weight / units, rows, g;
	const float *ab = ref->layers[l].bias.data, *cb = c->layers[l].bias.data;
	size_t i, j;

	zm_gemm(false, true, units, units, row, 1.0f, ref->layers[l].weight.data,
	        row, c->layers[l].weight.data, row, 0.0f, sim, units);
	for (i = 0; i < units; i++)
		for (j = 0; j < units; j++)
			sim[i * units + j] += ab[i] * cb[j];
	if (!next)
		return;
	rows = units_of(&a->layers[k]);
	g = a->layers[k].n_weight / rows / units;
	unit_major(ref->layers[k].weight.data, rows, units, g, ta);
	unit_major(c->layers[k].weight.data, rows, units, g, tc);
	zm_gemm(false, true, units, units, rows * g, 1.0f, ta, rows * g, tc,
	        rows * g, 1.0f, sim, units);
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
	size_t next[ZM_ARCH_MAX_LAYERS];
	struct zm_model *c = NULL;
	float *sim = NULL, *tmp = NULL, *ta = NULL, *tc = NULL;
	double *score = NULL;
	size_t *step = NULL, *total = NULL;
	size_t l, i, maxu = 0, maxw = 0, sweep;
	enum zm_status st;

	memset(info, 0, sizeof(*info));
	info->n_layers = a->n_layers;
	if ((st = zm_model_same_arch(a, m->arch, err)) != ZM_OK)
		return zm_error_prefix(err, "cannot realign: ");
	if ((st = plan(a, hidden, next, err)) != ZM_OK)
		return st;
	for (l = 0; l < a->n_layers; l++) {
		size_t w = a->layers[l].n_weight;
		if (w > maxw)
			maxw = w;
		if (a->layers[l].in_features > maxw)
			maxw = a->layers[l].in_features;
		if (hidden[l] && units_of(&a->layers[l]) > maxu)
			maxu = units_of(&a->layers[l]);
	}
	info->before = alignment(ref, m);
	/* The work happens on a copy, so that m is unchanged on error. */
	if ((st = zm_model_copy(m, &c, err)) != ZM_OK)
		return st;
	for (l = 0; l < a->n_layers; l++)
		if (hidden[l] && !(info->perm[l] = zm_malloc(
		        units_of(&a->layers[l]) * sizeof(size_t))))
			goto nomem;
	if (maxu && (!(sim = zm_malloc(maxu * maxu * sizeof(float))) ||
	             !(score = zm_malloc(maxu * maxu * sizeof(double))) ||
	             !(step = zm_malloc(maxu * sizeof(size_t))) ||
	             !(total = zm_malloc(maxu * sizeof(size_t)))))
		goto nomem;
	if (!(tmp = zm_malloc((maxw > maxu ? maxw : maxu) * sizeof(float) + 1)) ||
	    !(ta = zm_malloc(maxw * sizeof(float) + 1)) ||
	    !(tc = zm_malloc(maxw * sizeof(float) + 1)))
		goto nomem;
	for (l = 0; l < a->n_layers; l++)
		for (i = 0; hidden[l] && i < units_of(&a->layers[l]); i++)
			info->perm[l][i] = i;
	for (sweep = 0; maxu && sweep < ZM_ALIGN_MAX_SWEEPS; sweep++) {
		bool changed = false;
		for (l = 0; l < a->n_layers; l++) {
			size_t n, k;
			double gain = 0, keep = 0;
			if (!hidden[l])
				continue;
			n = units_of(&a->layers[l]);
			similarity(ref, c, l, next[l], sweep > 0, ta, tc, sim);
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
			apply_perm(c, l, next[l], step, tmp);
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
		permute_profile(m, l, next[l], info->perm[l], tmp);
		for (i = 0; i < units_of(&a->layers[l]); i++)
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
	free(ta);
	free(tc);
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

/* DIR/i.safetensors.gz in zm_malloc'd memory; NULL on failure. */
static char *temp_name(const char *dir, size_t i)
{
	size_t len = strlen(dir) + 48;
	char *s = zm_malloc(len);

	if (s)
		snprintf(s, len, "%s/%zu.safetensors.gz", dir, i);
	return s;
}

enum zm_status zm_align_to_temp(const char *tmpdir, const char *ref_path,
                                const char *ref_label,
                                const char *const *paths, size_t n,
                                size_t first, struct zm_align_temp *out,
                                struct zm_error *err)
{
	struct zm_model *ref = NULL;
	enum zm_status st;
	size_t i, len;

	memset(out, 0, sizeof(*out));
	if (!tmpdir || !*tmpdir)
		tmpdir = getenv("TMPDIR");
	if (!tmpdir || !*tmpdir)
		tmpdir = "/tmp";
	out->n = n;
	len = strlen(tmpdir) + 32;
	out->paths = zm_calloc(n ? n : 1, sizeof(*out->paths));
	out->info = zm_calloc(n ? n : 1, sizeof(*out->info));
	if (!out->paths || !out->info || !(out->dir = zm_malloc(len)))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	snprintf(out->dir, len, "%s/zm-align.XXXXXX", tmpdir);
	if (!mkdtemp(out->dir)) {
		st = zm_error_set(err, ZM_ERR_IO, "cannot make a temporary "
		                  "directory %s: %s", out->dir, strerror(errno));
		free(out->dir);
		out->dir = NULL;
		return st;
	}
	if ((st = zm_model_load(ref_path, &ref, err)) != ZM_OK)
		return st;
	for (i = first; i < n && st == ZM_OK; i++) {
		char *name = temp_name(out->dir, i);

		if (!name) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
			break;
		}
		st = zm_align_file(ref, ref_label, paths[i], name,
		                   &out->info[i], err);
		if (st == ZM_OK)
			out->paths[i] = name;
		else {
			zm_align_info_release(&out->info[i]);
			free(name);
		}
	}
	zm_model_free(ref);
	return st;
}

void zm_align_temp_remove(struct zm_align_temp *t)
{
	size_t i;

	if (!t)
		return;
	for (i = 0; t->dir && i < t->n; i++) {
		char *name = temp_name(t->dir, i);

		/* Without memory for the name, the path given out if any. */
		if (name || (t->paths && t->paths[i]))
			unlink(name ? name : t->paths[i]);
		free(name);
	}
	if (t->dir)
		rmdir(t->dir);
	for (i = 0; i < t->n; i++) {
		if (t->paths)
			free(t->paths[i]);
		if (t->info)
			zm_align_info_release(&t->info[i]);
	}
	free(t->paths);
	free(t->info);
	free(t->dir);
	memset(t, 0, sizeof(*t));
}
