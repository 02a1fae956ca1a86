/*
 * Benchmark of dynamic inference: K = 4 models 784-256-128-10 merged layer
 * by layer with per-batch weights at batch 1024, as --merge outputs (one
 * GEMM over the stacked weights per layer) and --merge params, next to
 * PyTorch computing the same merged outputs (tests/bench/torch_merge.py,
 * interpreter ZM_PYTHON, default /usr/bin/python3, with
 * OMP_WAIT_POLICY=PASSIVE and the same threads; its fastest formulation),
 * and the peak memory after 20,480 and 204,800 rows.  Threads:
 * ZM_BENCH_THREADS (default 1); passes: ZM_BENCH_REPS (default 5), best
 * taken.  Our merge-outputs passes run both before and after torch's, and
 * the best counts, so that a load which comes and goes on a shared machine
 * favours neither side.  Torch's BLAS here is BLIS too (Debian's libblas
 * alternative); the child inherits the BLIS_ARCH_TYPE that zm_gemm_setup
 * exports, so both sides run the same (skx) GEMM kernels and differ only
 * in the rest.  With per-batch weights and merge point pre, outputs and
 * params compute the same function; the scores of both are compared
 * first, so the figures are of a pass that computes the right
 * thing.  ZM_BENCH_CLOCK=cpu times both sides by process CPU time
 * instead of wall time: steadier when another job shares the cores, and
 * meaningful at one thread only.
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "config.h"
#include "gemm.h"
#include "model.h"
#include "predict.h"
#include "random.h"

#define K 4
#define BATCH 1024
#define ROWS (BATCH * 20)

static const char arch_yaml[] =
	"input: [784]\nlayers:\n"
	"  - {name: fc1, units: 256, activation: relu}\n"
	"  - {name: fc2, units: 128, activation: relu}\n"
	"  - {name: out, units: 10}\n";

static clockid_t bench_clock = CLOCK_MONOTONIC;

static double now(void)
{
	struct timespec ts;

	clock_gettime(bench_clock, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static long peak_kib(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

static double run(struct zm_predictor *p, const float *x, float *sc,
                  size_t rows, int reps)
{
	struct zm_error err;
	double best = -1;
	int r;

	for (r = 0; r < reps; r++) {
		double t0 = now();
		size_t done;
		for (done = 0; done < rows; done += BATCH)
			if (zm_predict_run(p, x, BATCH, sc, NULL, &err) != ZM_OK) {
				fprintf(stderr, "bench_predict: %s\n", err.msg);
				exit(1);
			}
		t0 = now() - t0;
		if (best < 0 || t0 < best)
			best = t0;
	}
	return best;
}

int main(void)
{
	struct zm_node *root;
	struct zm_arch *arch;
	struct zm_model *ms[K];
	struct zm_predictor *po, *pp;
	struct zm_predict_options o;
	struct zm_error err;
	struct zm_rng rng;
	const char *src = getenv("ZM_SRCDIR"), *py = getenv("ZM_PYTHON");
	const char *th = getenv("ZM_BENCH_THREADS"), *rp = getenv("ZM_BENCH_REPS");
	int threads = th ? atoi(th) : 1, reps = rp ? atoi(rp) : 5, i;
	float *x, sc[BATCH * 10], sp[BATCH * 10];
	double maxdiff = 0, t2;
	double t_out, t_par, t_torch = -1;
	long kib_small, kib_large;
	char cmd[4096], line[256] = "", variant[32] = "?";
	FILE *f;

	const char *ck = getenv("ZM_BENCH_CLOCK");
	bool cpu = ck && strcmp(ck, "cpu") == 0;

	if (cpu)
		bench_clock = CLOCK_PROCESS_CPUTIME_ID;
	if (threads < 1)
		threads = 1;
	if (reps < 1)
		reps = 1;
	zm_gemm_setup(threads);
	if (zm_config_parse(arch_yaml, strlen(arch_yaml), "arch", &root, &err) ||
	    zm_arch_parse(root, &arch, &err))
		return fprintf(stderr, "bench_predict: %s\n", err.msg), 1;
	for (i = 0; i < K; i++)
		if (zm_model_new(arch, (uint64_t)i + 1, &ms[i], &err))
			return fprintf(stderr, "bench_predict: %s\n", err.msg), 1;
	x = malloc(sizeof(float) * BATCH * 784);
	zm_rng_seed(&rng, 5);
	for (i = 0; i < BATCH * 784; i++)
		x[i] = (float)zm_rng_uniform(&rng);
	zm_predict_options_init(&o);
	o.w.kind = ZM_WEIGHTING_UNIFORM;
	o.w.level = ZM_GRAN_LAYER;
	o.merge = ZM_MERGE_OUTPUTS;
	if (zm_predictor_new_opts((const struct zm_model *const *)ms, K, BATCH,
	                          &o, &po, &err))
		return fprintf(stderr, "bench_predict: %s\n", err.msg), 1;
	o.merge = ZM_MERGE_PARAMS;
	if (zm_predictor_new_opts((const struct zm_model *const *)ms, K, BATCH,
	                          &o, &pp, &err))
		return fprintf(stderr, "bench_predict: %s\n", err.msg), 1;
	if (zm_predict_run(po, x, BATCH, sc, NULL, &err) ||
	    zm_predict_run(pp, x, BATCH, sp, NULL, &err))
		return fprintf(stderr, "bench_predict: %s\n", err.msg), 1;
	for (i = 0; i < BATCH * 10; i++)
		if (!(fabs((double)sc[i] - sp[i]) <= maxdiff))
			maxdiff = fabs((double)sc[i] - sp[i]);
	if (!(maxdiff <= 1e-4))
		return fprintf(stderr, "bench_predict: merge outputs and params "
		               "disagree by %g\n", maxdiff), 1;
	run(po, x, sc, BATCH * 2, 1);
	t_out = run(po, x, sc, ROWS, reps);
	t_par = run(pp, x, sc, ROWS, reps);
	kib_small = peak_kib();
	run(po, x, sc, ROWS * 10, 1);
	kib_large = peak_kib();

	snprintf(cmd, sizeof(cmd), "OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=%d "
	         "'%s' '%s/tests/bench/torch_merge.py' %d %d %d %d %d %s 2>&1",
	         threads, py ? py : "/usr/bin/python3", src ? src : ".", K,
	         BATCH, ROWS, threads, reps, cpu ? "cpu" : "wall");
	if ((f = popen(cmd, "r"))) {
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "ok %lf %31s", &t_torch, variant) >= 1)
				break;
		pclose(f);
	}
	t2 = run(po, x, sc, ROWS, reps);
	if (t2 < t_out)
		t_out = t2;
	printf("bench: predict threads: %d, BLIS arch %s, clock %s\n", threads,
	       zm_gemm_arch(), cpu ? "cpu" : "wall");
	if (t_torch > 0)
		printf("bench: predict-merge-outputs-k4-b1024: %.0f rows/s "
		       "(torch %s: %.0f rows/s, ratio %.2f)\n", ROWS / t_out,
		       variant, ROWS / t_torch, t_torch / t_out);
	else
		printf("bench: predict-merge-outputs-k4-b1024: %.0f rows/s "
		       "(torch: skipped: %s)\n", ROWS / t_out,
		       line[0] ? strtok(line, "\n") : "no output");
	printf("bench: predict-merge-params-k4-b1024: %.0f rows/s (merge "
	       "outputs: %.0f rows/s, ratio %.2f)\n", ROWS / t_par, ROWS / t_out,
	       t_out / t_par);
	printf("bench: predict-peak-memory-204800-rows: %ld KiB (20480 rows: "
	       "%ld KiB, ratio %.2f)\n", kib_large, kib_small,
	       (double)kib_large / (double)kib_small);
	zm_predictor_free(po);
	zm_predictor_free(pp);
	for (i = 0; i < K; i++)
		zm_model_free(ms[i]);
	zm_arch_free(arch);
	zm_node_free(root);
	free(x);
	return 0;
}
