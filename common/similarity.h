/*
 * Similarity between data and what a model knows, and the weights derived
 * from it (DESIGN.md section 5: assign, predict, granctl).  Both sides are
 * diagonal Gaussians over d features, given as a mean and a variance per
 * feature: a query (a slice's profile entry, a batch's moments, or a single
 * row taken as a mean with zero variance) and a model's profile entry.
 *
 * Every metric is "higher is more similar", and the two distance-based
 * ones are averaged per feature so that one temperature means the same
 * thing for a 784-pixel input and a 128-unit hidden layer:
 *
 *   cosine       mu_q . mu_m / (|mu_q| |mu_m|); 0 when either mean is the
 *                zero vector.  Variances are not used.  Range [-1, 1].
 *   kl           -(1/d) sum_j [KL(q_j || m_j) + KL(m_j || q_j)], where for
 *                one feature the symmetric KL of N(a, s) and N(b, t) is
 *                  0.5 * (s/t + t/s - 2 + (a-b)^2 (1/s + 1/t))
 *                (the log terms cancel).  Range (-inf, 0].
 *   mahalanobis  -sqrt((1/d) sum_j (mu_q,j - mu_m,j)^2 / var_m,j): the
 *                root-mean-square z-score of the query mean under the
 *                model.  Range (-inf, 0].
 *
 * Variance floor.  A feature that never varies (a border pixel that is
 * always 0) has variance 0, and a single row has variance 0 everywhere;
 * both would divide by zero.  Every variance v used by kl and mahalanobis
 * is replaced by max(v, f).  The caller passes f > 0, or ZM_SIM_FLOOR_AUTO
 * for a floor relative to the data's own scale:
 *   kl:          f = max(1e-8, 1e-2 * (mean_j var_q,j + mean_j var_m,j) / 2)
 *   mahalanobis: f = max(1e-8, 1e-2 * mean_j var_m,j)
 * so scaling the features scales the floor with them, and kl stays
 * symmetric in its two arguments.  For a single row (zero variance) kl is
 * dominated by the term var_m/f, which is nearly the same for every model
 * (about 1/(1e-2/2) = 200 per feature with the automatic floor, because
 * f follows the model's mean variance); what differs between models is the
 * squared distance, so compare per-row kl scores with a temperature about
 * 100 times larger than for per-batch scores.
 */
#ifndef ZM_SIMILARITY_H
#define ZM_SIMILARITY_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

struct zm_profile_entry;

enum zm_metric {
	ZM_METRIC_COSINE,
	ZM_METRIC_KL,
	ZM_METRIC_MAHALANOBIS,
	ZM_METRIC_COUNT
};

/* Pass as floor to use the automatic, scale-relative variance floor. */
#define ZM_SIM_FLOOR_AUTO (-1.0)
/* The constants of the automatic floor (see above). */
#define ZM_SIM_FLOOR_REL 1e-2
#define ZM_SIM_FLOOR_MIN 1e-8

/* "cosine", "kl", "mahalanobis"; never NULL for a valid metric. */
const char *zm_metric_name(enum zm_metric metric);
/* Parses a metric name; returns false when unknown. */
bool zm_metric_parse(const char *name, enum zm_metric *out);

/*
 * The similarity of query (q_mean, q_var) to model (m_mean, m_var), all
 * arrays of d doubles.  q_var NULL means zero variance (one row); m_var
 * may be NULL only for cosine.  floor > 0 or ZM_SIM_FLOOR_AUTO.  Returns
 * 0 for d == 0.  Pure function: no errors, inputs are assumed finite.
 */
double zm_similarity(enum zm_metric metric, const double *q_mean,
                     const double *q_var, const double *m_mean,
                     const double *m_var, size_t d, double floor);

/*
 * The same between two profile entries (query q, model m) into *out.
 * Fails with ZM_ERR_DATA naming the entries when their widths differ or
 * either has seen no rows.  Allocates nothing.
 */
enum zm_status zm_similarity_entries(enum zm_metric metric,
                                     const struct zm_profile_entry *q,
                                     const struct zm_profile_entry *m,
                                     double floor, double *out,
                                     struct zm_error *err);

/*
 * Per-row similarities: scores[i*k + c] = zm_similarity(metric, row i of
 * x, NULL, model c) for the n rows of x (row-major F32 [n, d]) against k
 * models whose means and variances are the rows of m_mean and m_var
 * (F32 [k, d]; m_var may be NULL for cosine).  Computed through zm_gemm
 * in blocks of rows: for kl and mahalanobis the weighted squared distance
 * sum_j a_cj (x_j - mu_cj)^2 is expanded into x^2 . a_c - 2 x . (a_c mu_c)
 * + const on features centred on the models' average mean (so a large
 * common offset does not cancel away F32 digits); for cosine the rows are
 * normalised and multiplied by the normalised means.  Scratch memory is
 * bounded by the block size, not by n.  The F32 products agree with
 * zm_similarity to about 1e-6 relative (for mahalanobis, in the squared
 * distance: a row equal to a model mean scores about -1e-3, not 0, since
 * the square root magnifies rounding near zero).  Fails only with
 * ZM_ERR_NOMEM.
 */
enum zm_status zm_similarity_rows(enum zm_metric metric, const float *x,
                                  size_t n, size_t d, const float *m_mean,
                                  const float *m_var, size_t k, double floor,
                                  double *scores, struct zm_error *err);

/*
 * Turns k similarity scores into weights out_w[k] summing to 1:
 *  1. softmax(scores / temperature), computed stably (the best score is
 *     subtracted first, so a tiny temperature picks the argmax);
 *  2. top_k > 0 keeps the top_k highest scores (ties go to the lower
 *     index) and zeroes the rest; 0 keeps all;
 *  3. the kept weights are renormalised to sum 1, then weights below
 *     min_weight are zeroed and the rest renormalised again; if that
 *     drops everything, the best-scoring model alone gets weight 1.
 * Fails with ZM_ERR_USAGE for k == 0 or a temperature that is not a
 * positive finite number, ZM_ERR_DATA for a non-finite score.
 */
enum zm_status zm_weights_from_scores(const double *scores, size_t k,
                                      double temperature, size_t top_k,
                                      double min_weight, double *out_w,
                                      struct zm_error *err);

/* zm_weights_from_scores on each of the n rows of scores [n, k] into
 * out_w [n, k]; errors name the row. */
enum zm_status zm_weights_from_scores_rows(const double *scores, size_t n,
                                           size_t k, double temperature,
                                           size_t top_k, double min_weight,
                                           double *out_w,
                                           struct zm_error *err);

#endif
