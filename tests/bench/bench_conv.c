/*
 * The TensorFlow tutorial CNN (examples/cnn.yaml) against PyTorch, in one
 * run on the same machine and threads: training samples/s (Adam, batch
 * 128) and inference rows/s (batch 128), the GFLOP/s they reach next to
 * BLIS's sgemm on the conv2 GEMM shape, and the PyTorch peer's figures
 * (tests/bench/torch_conv.py under /usr/bin/python3 or ZM_PYTHON, with
 * OMP_WAIT_POLICY=PASSIVE; reported as skipped without torch).
 * ZM_BENCH_CONV_THREADS (default 1) and ZM_BENCH_CONV_SECONDS (default 3).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conv.h"
#include "gemm.h"
#include "model.h"
#include "random.h"
#include "train.h"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Forward FLOPs per sample: 2 * MACs of conv and dense layers. */
static double fwd_flops(const struct zm_arch *a)
{
	double f = 0;
	size_t l;

	for (l = 0; l < a->n_layers; l++) {
		const struct zm_layer_spec *s = &a->layers[l];
		if (s->type == ZM_LAYER_DENSE)
			f += 2.0 * (double)s->n_weight;
		else if (s->type == ZM_LAYER_CONV2D)
			f += 2.0 * (double)s->n_weight *
			     (double)(s->out_shape[1] * s->out_shape[2]);
	}
	return f;
}

int main(void)
{
	const char *ts = getenv("ZM_BENCH_CONV_THREADS");
	const char *ss = getenv("ZM_BENCH_CONV_SECONDS");
	const char *src = getenv("ZM_SRCDIR");
	const char *py = getenv("ZM_PYTHON");
	int threads = ts ? atoi(ts) : 1;
	double secs = ss ? strtod(ss, NULL) : 3.0, best, t0, t, f;
	char path[4096], cmd[8192], line[256];
	struct zm_arch *arch;
	struct zm_model *m;
	struct zm_workspace *tws, *iws;
	struct zm_optim *opt;
	struct zm_optim_config cfg;
	struct zm_error err;
	struct zm_rng r;
	size_t B = 128, i, reps;
	float *x, *A, *Bm, *C;
	int64_t y[128];
	double train_sps, infer_rps, gemm_gf, torch_train = 0, torch_infer = 0;
	FILE *pp;

	if (threads < 1)
		threads = 1;
	zm_gemm_setup(threads);
	snprintf(path, sizeof(path), "%s/examples/cnn.yaml", src ? src : ".");
	if (zm_arch_load(path, &arch, &err) || zm_model_new(arch, 1, &m, &err) ||
	    zm_workspace_new(arch, B, true, &tws, &err) ||
	    zm_workspace_new(arch, B, false, &iws, &err)) {
		fprintf(stderr, "bench_conv: %s\n", err.msg);
		return 1;
	}
	zm_optim_config_default(&cfg, ZM_OPTIM_ADAM);
	if (zm_optim_new(arch, &cfg, &opt, &err)) {
		fprintf(stderr, "bench_conv: %s\n", err.msg);
		return 1;
	}
	x = malloc(B * arch->input_features * sizeof(*x));
	zm_rng_seed(&r, 1);
	for (i = 0; i < B * arch->input_features; i++)
		x[i] = (float)zm_rng_uniform(&r);
	for (i = 0; i < B; i++)
		y[i] = (int64_t)(i % 10);
	f = fwd_flops(arch);

	best = 1e30;
	zm_train_step(m, opt, tws, x, y, B, 1.0f, NULL, &err);
	for (t0 = now(); now() - t0 < secs;) {
		double a = now();
		zm_train_step(m, opt, tws, x, y, B, 1.0f, NULL, &err);
		if ((t = now() - a) < best)
			best = t;
	}
	train_sps = (double)B / best;
	/* Inference as predict runs it: the dense head's weights packed. */
	if (zm_workspace_pack(iws, m, &err)) {
		fprintf(stderr, "bench_conv: %s\n", err.msg);
		return 1;
	}
	best = 1e30;
	for (t0 = now(); now() - t0 < secs;) {
		double a = now();
		zm_model_forward(m, iws, x, B);
		if ((t = now() - a) < best)
			best = t;
	}
	infer_rps = (double)B / best;

	/* BLIS on conv2's forward GEMM: [64, 800] x [800, cols]. */
	{
		struct zm_conv_geom g;
		size_t K, N;
		zm_conv_geom_of(&arch->layers[2], &g);
		K = g.c * g.kh * g.kw;
		N = zm_conv_chunk(&g, B) * g.oh * g.ow;
		A = calloc(g.oc * K, sizeof(float));
		Bm = calloc(K * N, sizeof(float));
		C = calloc(g.oc * N, sizeof(float));
		best = 1e30;
		for (reps = 0, t0 = now(); now() - t0 < secs / 2; reps++) {
			double a = now();
			zm_gemm(false, false, g.oc, N, K, 1.0f, A, K, Bm, N,
			        0.0f, C, N);
			if ((t = now() - a) < best)
				best = t;
		}
		gemm_gf = 2.0 * (double)(g.oc * K * N) / best / 1e9;
		free(A); free(Bm); free(C);
	}

	snprintf(path, sizeof(path), "%s/tests/bench/torch_conv.py",
	         src ? src : ".");
	snprintf(cmd, sizeof(cmd), "OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=%d "
	         "'%s' '%s' %d %g 2>/dev/null", threads,
	         py ? py : "/usr/bin/python3", path, threads, secs);
	if ((pp = popen(cmd, "r"))) {
		while (fgets(line, sizeof(line), pp)) {
			sscanf(line, "train %lf", &torch_train);
			sscanf(line, "infer %lf", &torch_infer);
		}
		pclose(pp);
	}
	printf("# conv: TF tutorial CNN, %.1f MFLOP forward per sample, "
	       "%d thread(s), BLIS %s; BLIS sgemm on conv2's GEMM "
	       "shape: %.1f GFLOP/s\n", f / 1e6, threads, zm_gemm_arch(),
	       gemm_gf);
	if (torch_train > 0 && torch_infer > 0) {
		printf("bench: conv-train-samples-per-s: %.1f samples/s "
		       "(PyTorch: %.1f samples/s, ratio %.2f); %.1f GFLOP/s "
		       "(BLIS sgemm %.1f)\n", train_sps, torch_train,
		       train_sps / torch_train, train_sps * 3 * f / 1e9,
		       gemm_gf);
		printf("bench: conv-infer-rows-per-s: %.1f rows/s (PyTorch: "
		       "%.1f rows/s, ratio %.2f); %.1f GFLOP/s (BLIS sgemm "
		       "%.1f)\n", infer_rps, torch_infer,
		       infer_rps / torch_infer, infer_rps * f / 1e9, gemm_gf);
	} else {
		printf("bench: conv-train-samples-per-s: %.1f samples/s "
		       "(PyTorch: skipped, no torch)\n", train_sps);
		printf("bench: conv-infer-rows-per-s: %.1f rows/s (PyTorch: "
		       "skipped, no torch)\n", infer_rps);
	}
	free(x);
	zm_optim_free(opt);
	zm_workspace_free(tws);
	zm_workspace_free(iws);
	zm_model_free(m);
	zm_arch_free(arch);
	return 0;
}
