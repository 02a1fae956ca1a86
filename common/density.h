/*
 * Densities of the data a model was trained on, for routing rows to the
 * models whose data they resemble (predict's default weighting; DESIGN.md
 * section 5).  A row's log-likelihood under each model's density gives,
 * through Bayes' rule, a posterior over the models (route.h).
 *
 * Two forms, both Gaussians with proper normalising terms:
 *   ppca   probabilistic PCA (Tipping and Bishop): the mean, the q leading
 *          principal directions u_k of the covariance with their variances
 *          lambda_k, and one isotropic residual variance s2 (the mean of
 *          the other d - q eigenvalues).  Covariance
 *            C = sum_k lambda_k u_k u_k' + s2 (I - sum_k u_k u_k'),
 *          log p(x) = -1/2 [d log 2pi + sum_k log lambda_k + (d-q) log s2
 *                           + |r|^2 / s2 + sum_k p_k^2 / lambda_k]
 *          with p_k = u_k . (x - mu) and r the residual of x - mu after
 *          its projection onto the u_k: the distance of the row from the
 *          model's data subspace (as SiM and MASS route) plus its
 *          Mahalanobis distance inside it, each with its log-determinant.
 *   diag   a diagonal Gaussian from a profile entry's per-feature mean and
 *          variance (profiles written before the scatter was kept).
 * Every variance is floored at ZM_DENSITY_FLOOR_REL times the mean
 * variance per feature (at least 1e-12), so that a pixel that never varies
 * in a slice does not make any other value impossible.
 *
 * The PPCA is fitted from a scatter (struct zm_scatter: the count, mean
 * and the full d x d matrix of sums of centred cross-products, combined
 * across batches as Chan et al. combine variances).  The leading
 * eigenvectors come from subspace iteration with Rayleigh-Ritz: the
 * products with the covariance go through zm_gemm, the small projected
 * eigenproblem is solved by cyclic Jacobi rotations (zm_sym_eigen).
 */
#ifndef ZM_DENSITY_H
#define ZM_DENSITY_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

/* The number of principal directions a PPCA keeps at most. */
#define ZM_DENSITY_RANK 32
/* Variance floor relative to the mean variance per feature. */
#define ZM_DENSITY_FLOOR_REL 1e-3
/* Widest input whose scatter is kept (d x d doubles: 32 MiB at 2048). */
#define ZM_SCATTER_MAX_DIM 2048
/* Components of a mixture at most, and the principal directions each
 * keeps (fewer than the single PPCA: each describes a part of the data). */
#define ZM_DENSITY_MAX_COMPONENTS 8
#define ZM_DENSITY_COMPONENT_RANK 16

/* ---- scatter ---- */

struct zm_scatter {
	size_t d;          /* features; 0: empty, owns nothing */
	double count;      /* rows added */
	double *mean;      /* owned [d] */
	double *m2;        /* owned [d * d], symmetric, row-major */
};

void zm_scatter_init(struct zm_scatter *s);
void zm_scatter_release(struct zm_scatter *s);

/*
 * Adds n rows of x (row-major F32 [n, d], finite) to s, which must be
 * empty or of width d (ZM_ERR_DATA otherwise).  The batch is centred on
 * its own mean, its cross-products formed by zm_gemm and combined with
 * the running sums in double.  ZM_ERR_NOMEM leaves s unchanged.
 */
enum zm_status zm_scatter_add(struct zm_scatter *s, const float *x,
                              size_t n, size_t d, struct zm_error *err);

/* dst += src as if dst had seen src's rows; widths must agree
 * (ZM_ERR_DATA).  An empty src is a no-op; an empty dst becomes a copy. */
enum zm_status zm_scatter_merge(struct zm_scatter *dst,
                                const struct zm_scatter *src,
                                struct zm_error *err);

/* dst (released first) becomes a deep copy of src. */
enum zm_status zm_scatter_copy(struct zm_scatter *dst,
                               const struct zm_scatter *src,
                               struct zm_error *err);

/* ---- symmetric eigenproblem ---- */

/*
 * All eigenvalues and eigenvectors of the symmetric n x n matrix a
 * (row-major, destroyed) by cyclic Jacobi: values[n] in decreasing order,
 * vectors [n, n] row i the eigenvector of values[i].  For small n (the
 * projected problems of the subspace iteration, the tests' references).
 */
void zm_sym_eigen(double *a, size_t n, double *values, double *vectors);

/* ---- densities ---- */

struct zm_density {
	size_t d, q;       /* features; principal directions (0: diag) */
	double count;      /* rows the density was fitted on */
	float *mean;       /* owned [d] */
	float *pc;         /* owned [q, d] orthonormal rows u_k, or NULL */
	double *pcvar;     /* owned [q] lambda_k, decreasing, >= s2 (but see
	                    * zm_density_tie_residual) */
	double s2;         /* ppca: residual variance */
	float *ivar;       /* owned [d]: 1 / variance (ppca: all 1 / s2) */
	double *var;       /* owned [d]: the variance of the diagonal part */
	double *coef;      /* owned [q]: 1 / s2 - 1 / lambda_k */
	double logdet;     /* log det C */
	/* A mixture: the row's density is log sum_c w_c p_c(x) over these
	 * components (each a PPCA or diagonal Gaussian without components
	 * of its own), the fields above then the single Gaussian of the
	 * same mean and covariance (for zm_density_kl).  0: none. */
	size_t n_comp;
	struct zm_density *comp;   /* owned [n_comp] */
	double *logw;              /* owned [n_comp]: log w_c, sum w_c = 1 */
};

void zm_density_init(struct zm_density *m);
void zm_density_release(struct zm_density *m);

/*
 * Fits a PPCA with q = min(max_rank, d - 1, (count - 1) / 2) directions
 * to the scatter s (count > 1; fewer rows give a diagonal Gaussian, q =
 * 0, from the scatter's diagonal).  m is released first.  Deterministic:
 * the start of the iteration is a fixed pseudo-random matrix.
 */
enum zm_status zm_density_fit(struct zm_density *m,
                              const struct zm_scatter *s, size_t max_rank,
                              struct zm_error *err);

/* A diagonal Gaussian from per-feature means and variances [d]. */
enum zm_status zm_density_diag(struct zm_density *m, const double *mean,
                               const double *var, size_t d, double count,
                               struct zm_error *err);

/*
 * A PPCA from its parameters (as stored in a profile): mean [d], the rows
 * pc [q, d] (normalised here; they must be close to orthonormal, checked
 * to 1e-3, else ZM_ERR_DATA), pcvar [q] and s2 > 0.  Floors as a fit.
 */
enum zm_status zm_density_ppca(struct zm_density *m, const float *mean,
                               const float *pc, const double *pcvar,
                               size_t q, size_t d, double s2, double count,
                               struct zm_error *err);

/*
 * Ties the residual variance of k PPCAs of one width (routing between
 * them): every s2 becomes the geometric mean of their s2, the rest of
 * each density (mean, directions, their variances) unchanged, its
 * normalising terms recomputed.  A no-op unless k >= 2 and every density
 * is a PPCA (q > 0) of the same width.
 *
 * Why: s2 stands for the d - q directions a model's subspace leaves out,
 * and on real data their variances are far from equal (images: most
 * pixels of a slice barely vary), so the isotropic s2 is misfitted, and
 * differently for each model; comparing a row's residual r (its distance
 * from each model's subspace, as MASS and SiM route) on each model's own
 * misfitted scale then decides more than the data do.  On one shared
 * scale, |r|^2 / s2 compares the distances themselves, while the
 * directions keep their own variances and log-determinants.  Measured
 * (tests/bench/adaptive.sh): the top model is the right one for 0.926 of
 * the label-group specialists' routing rows with their own s2, 0.952
 * tied; accuracy 0.797 -> 0.814 (fine-tuned), 0.776 -> 0.794 (seeded).
 * Afterwards a pcvar may lie below s2 (C stays positive definite).
 * Mixtures: their components are tied with one another and with the
 * other densities' (one s2 for every Gaussian a row is scored under),
 * and the single Gaussians of the mixtures among themselves.
 */
void zm_density_tie_residual(struct zm_density *const *m, size_t k);

/*
 * Makes m (a fitted density) a mixture of the n >= 2 components comp
 * (taken: on every return m owns them, or they are released), each of m's
 * width and without components, weighted by their counts.  ZM_ERR_DATA
 * when a width differs or a count is not positive; m is then unchanged.
 */
enum zm_status zm_density_set_mixture(struct zm_density *m,
                                      struct zm_density *comp, size_t n,
                                      struct zm_error *err);

/* The covariance C of m times count added into m2 [d, d] (to rebuild a
 * scatter from a stored PPCA). */
void zm_density_scatter(const struct zm_density *m, double count,
                        double *m2);

/*
 * out[r * k + i] = log p_i(row r) for the n rows of x (F32 [n, d]) under
 * k densities of width d (a mixture: the log-sum-exp over its
 * components of log w_c + log p_c(row)).  The projections onto each model's directions
 * are one zm_gemm per model and block of rows; scratch is bounded by the
 * block, not n.  ZM_ERR_NOMEM only.
 */
enum zm_status zm_density_loglik(const struct zm_density *const *m,
                                 size_t k, const float *x, size_t n,
                                 double *out, struct zm_error *err);

/* KL(a || b) between the two Gaussians (closed form, O(d (qa + qb) +
 * qa qb d)); a and b have the same width. */
double zm_density_kl(const struct zm_density *a, const struct zm_density *b);

#endif
