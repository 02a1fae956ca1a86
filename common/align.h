/*
 * Realignment of hidden units (weight matching, as in Git Re-Basin):
 * permuting the units of a hidden layer (its weight rows and biases, the
 * per-unit statistics after it, and the next layer's weight columns)
 * leaves the function a network computes unchanged, so two networks
 * trained from different initialisations may compute alike with their
 * units in another order.  Realigning a candidate to a reference finds,
 * for each hidden dense layer, the permutation of the candidate's units
 * that makes them most similar to the reference's, so that the lineage
 * alignment (lineage.h) and a layer-wise merge compare like with like.
 *
 * Similarity of reference unit i and candidate unit j of layer l: the
 * inner product of their weight rows (inputs already realigned), plus
 * the product of their biases, plus the inner product of their columns
 * in the next layer with parameters (its rows realigned to the
 * reference's).  The permutation maximising the summed similarity is an
 * assignment problem, solved exactly (zm_align_assign, the Hungarian
 * method, O(n^3)).  The layers depend on each other through the next
 * layer's rows, so the layers are solved in order in sweeps (coordinate
 * ascent, Re-Basin's weight matching): a first sweep by the rows alone
 * (exact for a permuted copy, whose rows match one to one once the
 * inputs are realigned), then sweeps with the next layer's columns until
 * a sweep changes nothing, at most ZM_ALIGN_MAX_SWEEPS.
 *
 * Dense and conv2d layers: a conv2d layer's units are its filters (output
 * channels), a filter [in_c, kh, kw] its row; the next layer takes each
 * channel as a block (a conv2d's kernel positions, or a dense layer's
 * columns of the channel's positions after flatten, channel-major), and
 * so do per-unit statistics and profile entries in between.  A hidden
 * layer followed by anything but per-unit layers (standardize,
 * batchnorm, clip, dropout, maxpool2d, flatten) before the next layer
 * with parameters is refused.
 */
#ifndef ZM_ALIGN_H
#define ZM_ALIGN_H

#include <stddef.h>

#include "error.h"
#include "model.h"

/* Sweeps of coordinate ascent at most (the first, by rows, included). */
#define ZM_ALIGN_MAX_SWEEPS 20

/* The metadata key recording the model a model was realigned to ("NAME"
 * or "NAME@vN"): such a model is related to others by the alignment of
 * its units, whatever its origin (lineage.h). */
#define ZM_ALIGN_KEY "zm.aligned"

/* What a realignment did.  Release with zm_align_info_release. */
struct zm_align_info {
	size_t n_layers;
	/* Owned; per hidden dense layer l, [units]: unit i of the realigned
	 * model is unit perm[l][i] of the candidate as given; NULL for the
	 * other layers. */
	size_t *perm[ZM_ARCH_MAX_LAYERS];
	size_t sweeps;               /* sweeps run */
	size_t moved;                /* units not left in place, all layers */
	/* The lowest hidden-layer alignment with the reference (lineage.h)
	 * before and after; 1 without hidden layers. */
	double before, after;
};

void zm_align_info_release(struct zm_align_info *info);

/*
 * The assignment of n rows to n columns maximising sum_i score[i * n +
 * match[i]] (score row-major, finite), into match [n] (a permutation):
 * the Hungarian method with potentials, O(n^3) time, O(n) memory besides
 * score.  Errors: ZM_ERR_DATA for a non-finite score, ZM_ERR_NOMEM.
 */
enum zm_status zm_align_assign(const double *score, size_t n, size_t *match,
                               struct zm_error *err);

/*
 * Realigns m's hidden units to ref's in place, as described above: m's
 * function is unchanged (up to float rounding of nothing: only copies).
 * Its profile entries of the permuted units (profile.LAYER.mean, .var,
 * LAYER the layers whose inputs they are) are permuted too.  When
 * ref_label is not NULL it is recorded as m's ZM_ALIGN_KEY.  *info
 * (zeroed first; release it, also after an error) says what moved.
 * Errors: ZM_ERR_DATA when the architectures differ (naming the layer)
 * or a layer cannot be realigned, ZM_ERR_NOMEM; m is then unchanged.
 */
enum zm_status zm_align_model(const struct zm_model *ref,
                              const char *ref_label, struct zm_model *m,
                              struct zm_align_info *info,
                              struct zm_error *err);

/*
 * Loads the model file path, realigns it to ref (recording ref_label)
 * and writes it to out (written under a temporary name, renamed at the
 * end; compressed at the default level).  Errors of zm_model_load,
 * zm_align_model and the writer.
 */
enum zm_status zm_align_file(const struct zm_model *ref,
                             const char *ref_label, const char *path,
                             const char *out, struct zm_align_info *info,
                             struct zm_error *err);


/*
 * Models realigned into a temporary directory (zm_align_to_temp).  All
 * owned by the struct; release it with zm_align_temp_remove, which also
 * deletes the files and the directory.
 */
struct zm_align_temp {
	char *dir;      /* the directory, NULL until made */
	size_t n;       /* the models given */
	/* [n]: paths[i] names model i's realigned copy (DIR/i.safetensors.gz)
	 * once it is written, NULL otherwise (the models before first, and
	 * from a failure on).  A caller may take a path over (free it, set
	 * paths[i] to NULL): zm_align_temp_remove deletes the file by name
	 * still. */
	char **paths;
	/* [n]: what realigning model i did, where paths[i] was set. */
	struct zm_align_info *info;
};

/*
 * Makes a new directory zm-align.XXXXXX under tmpdir (NULL or "": $TMPDIR,
 * else /tmp), loads the reference model ref_path and realigns each of
 * models paths[first .. n) to it (recording ref_label; zm_align_file)
 * into DIR/i.safetensors.gz, filling *out (zeroed first).  After an error
 * too, *out says what was done: the models realigned before it have
 * their paths and info; release it with zm_align_temp_remove.  Errors:
 * ZM_ERR_IO when the directory cannot be made, ZM_ERR_NOMEM, and those of
 * zm_model_load (the reference) and zm_align_file.
 */
enum zm_status zm_align_to_temp(const char *tmpdir, const char *ref_path,
                                const char *ref_label,
                                const char *const *paths, size_t n,
                                size_t first, struct zm_align_temp *out,
                                struct zm_error *err);

/* Deletes t's files and directory and frees what t owns, leaving it
 * zeroed; a zeroed t is fine. */
void zm_align_temp_remove(struct zm_align_temp *t);

#endif
