/*
 * Whole-process speed as a user times it (issue 18): each command below
 * run as a process -- start, inflate the input, load the models, compute,
 * write -- on the 10,000 Fashion-MNIST test rows (train-step: the 60,000
 * training rows), MLP 784-256-128-10, --threads 1, next to its floor:
 * zcat of the same input plus the command's matrix FLOPs at the rate BLIS
 * reaches on the same shapes, both measured in this run.  The commands
 * and their zcat alternate rep by rep (best of ZM_BENCH_REPS), so other
 * load on the machine hits all alike.  A ratio below 1 means the command
 * beat zcat and the FLOPs done one after the other: reading overlapped
 * with computing.
 *
 * Then predict with the defaults (no weighting flags) over K = 4, 16 and
 * 64 models, each trained one epoch on one k-means cluster of the
 * training set: rows per second and peak RSS, against K = 4.
 *
 * PyTorch runs the same work in process on tensors in memory
 * (tests/bench/torch_e2e.py, one run per rep between ours; interpreter
 * ZM_PYTHON, default /usr/bin/python3, Debian's python3-torch); without
 * torch the reference is reported skipped.  Environment: ZM_BIN, ZM_SRCDIR,
 * ZM_FASHION_MNIST, ZM_BENCH_TRAIN (the 60k training stream; imported
 * here when unset), ZM_BENCH_REPS, ZM_PYTHON.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gemm.h"
#include "mem.h"

enum { MAX_ARGS = 160, ROWS_TEST = 10000, ROWS_TRAIN = 60000 };

static const char *bin, *dir;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Runs argv (argv[0] a program of ZM_BIN, or "zcat" or "sh"), stdout to out (NULL: /dev/null), stderr to
 * /dev/null; its wall time and peak RSS (KiB).  Returns its exit status,
 * -1 when it did not exit. */
static int run(char *const argv[], const char *out, double *wall,
               long *rss)
{
	struct rusage ru;
	double t0 = now();
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return -1;
	if (pid == 0) {
		int fo = open(out ? out : "/dev/null",
		              O_WRONLY | O_CREAT | O_TRUNC, 0644);
		int fe = open("/dev/null", O_WRONLY);
		char path[PATH_MAX];
		if (fo < 0 || fe < 0)
			_exit(127);
		dup2(fo, 1);
		dup2(fe, 2);
		if (strcmp(argv[0], "zcat") == 0 || strcmp(argv[0], "sh") == 0) {
			execvp(argv[0], argv);
		} else {
			snprintf(path, sizeof(path), "%s/%s", bin, argv[0]);
			execv(path, argv);
		}
		_exit(127);
	}
	if (wait4(pid, &status, 0, &ru) < 0)
		return -1;
	if (wall)
		*wall = now() - t0;
	if (rss)
		*rss = ru.ru_maxrss;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* A command line split at spaces into argv (no quoting: the paths here
 * are of our own temporary directory). */
struct cmd {
	const char *name;
	char line[4096];
	char *argv[MAX_ARGS];
	const char *input;      /* what zcat reads for the floor */
	double flops;
	double best, zbest;
	long rss;
};

static void cmd_set(struct cmd *c, const char *name, const char *input,
                    double flops, const char *fmt, ...)
{
	va_list ap;
	char *p, *save = NULL;
	int n = 0;

	memset(c, 0, sizeof(*c));
	c->name = name;
	c->input = input;
	c->flops = flops;
	va_start(ap, fmt);
	vsnprintf(c->line, sizeof(c->line), fmt, ap);
	va_end(ap);
	for (p = strtok_r(c->line, " ", &save); p && n < MAX_ARGS - 1;
	     p = strtok_r(NULL, " ", &save))
		c->argv[n++] = p;
	c->argv[n] = NULL;
}

/* Runs a set-up command line; false (after saying which) when it fails. */
static bool setup(const char *fmt, ...)
{
	struct cmd c;
	va_list ap;
	char line[4096];

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	cmd_set(&c, "setup", NULL, 0, "%s", line);
	if (run(c.argv, NULL, NULL, NULL) != 0) {
		printf("bench: e2e: set-up failed: %s\n", line);
		return false;
	}
	return true;
}

/* BLIS's single-thread rate on the MLP's products (forward shapes, batch
 * 1024), best of a few: FLOP/s. */
static double blis_rate(void)
{
	static const size_t shape[3][2] = { { 256, 784 }, { 128, 256 },
	                                    { 10, 128 } };
	enum { M = 1024 };
	float *x = zm_calloc(M * 784, sizeof(float));
	float *w = zm_calloc(256 * 784, sizeof(float));
	float *y = zm_calloc(M * 256, sizeof(float));
	double best = 0, flops = 0;
	size_t i, l, rep;

	if (!x || !w || !y)
		return 0;
	for (i = 0; i < M * 784; i++)
		x[i] = (float)(i % 13) * 0.01f;
	for (i = 0; i < 256 * 784; i++)
		w[i] = (float)(i % 7) * 0.01f;
	for (l = 0; l < 3; l++)
		flops += 2.0 * M * (double)shape[l][0] * (double)shape[l][1];
	for (rep = 0; rep < 30; rep++) {
		double t0 = now(), t;
		for (l = 0; l < 3; l++)
			zm_gemm(false, true, M, shape[l][0], shape[l][1], 1.0f, x,
			        shape[l][1], w, shape[l][1], 0.0f, y, shape[l][0]);
		t = now() - t0;
		if (t > 0 && flops / t > best)
			best = flops / t;
	}
	free(x);
	free(w);
	free(y);
	return best;
}

/* One run of tests/bench/torch_e2e.py: its four figures (seconds) into
 * t[] where better than before; false, with why, when torch is absent or
 * the script failed. */
static bool torch_rep(const char *src, double t[4], char *why, size_t len)
{
	static const char *const names[4] = { "predict-1-model",
	                                      "predict-4-outputs",
	                                      "predict-4-params",
	                                      "train-1-epoch" };
	const char *py = getenv("ZM_PYTHON");
	char script[PATH_MAX], out[PATH_MAX], line[256], name[64];
	char *argv[] = { "sh", "-c", NULL, NULL };
	char cmdline[2 * PATH_MAX + 16];
	double v;
	FILE *f;
	int i, got = 0;

	snprintf(script, sizeof(script), "%s/tests/bench/torch_e2e.py", src);
	snprintf(out, sizeof(out), "%s/torch.out", dir);
	snprintf(cmdline, sizeof(cmdline), "'%s' '%s'",
	         py && *py ? py : "/usr/bin/python3", script);
	argv[2] = cmdline;
	if (run(argv, out, NULL, NULL) != 0 || !(f = fopen(out, "r"))) {
		snprintf(why, len, "%.200s failed", script);
		return false;
	}
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "skip ", 5) == 0) {
			line[strcspn(line, "\n")] = '\0';
			snprintf(why, len, "%s", line + 5);
			fclose(f);
			return false;
		}
		if (sscanf(line, "%63s %lf", name, &v) != 2)
			continue;
		for (i = 0; i < 4; i++)
			if (strcmp(name, names[i]) == 0) {
				if (t[i] <= 0 || v < t[i])
					t[i] = v;
				got++;
			}
	}
	fclose(f);
	if (got < 4)
		snprintf(why, len, "%.200s printed %d of 4 figures", script, got);
	return got == 4;
}

/* K models, each trained one epoch on one of K k-means clusters of the
 * training set, in zoo dir/zK. */
static bool make_zoo(const char *arch, const char *train, int k)
{
	char path[PATH_MAX];
	FILE *f;
	int i;

	snprintf(path, sizeof(path), "%s/k%d.yaml", dir, k);
	if (!(f = fopen(path, "w")))
		return false;
	fprintf(f, "clusters: {k: %d, seed: 1}\n", k);
	fclose(f);
	if (!setup("slice --rules %s --out-dir %s/s%d %s", path, dir, k, train))
		return false;
	for (i = 0; i < k; i++)
		if (!setup("zoo-add --zoo %s/z%d --name c%d --arch %s --seed 1",
		           dir, k, i, arch) ||
		    !setup("train-step --zoo %s/z%d --model c%d --epochs 1 "
		           "--val-fraction 0 --apply --quiet --threads 1 "
		           "%s/s%d/cluster-%d.safetensors.gz", dir, k, i, dir, k,
		           i))
			return false;
	return true;
}

int main(void)
{
	const char *fm = getenv("ZM_FASHION_MNIST");
	const char *src = getenv("ZM_SRCDIR");
	const char *train_env = getenv("ZM_BENCH_TRAIN");
	const char *reps_env = getenv("ZM_BENCH_REPS");
	char tmpl[] = "/tmp/zm-bench-e2e.XXXXXX";
	char test[PATH_MAX], train[PATH_MAX], arch[PATH_MAX], four[1024];
	struct cmd cmds[4], kc[3];
	/* Multiply-adds of one row through 784-256-128-10. */
	const double row_flops = 2.0 * (784 * 256 + 256 * 128 + 128 * 10);
	double rate, torch_t[4] = { 0, 0, 0, 0 };
	char why[256] = "";
	bool torch = true;
	int reps = reps_env ? atoi(reps_env) : 5, r, i, status = 0;
	static const int ks[3] = { 4, 16, 64 };

	setvbuf(stdout, NULL, _IOLBF, 0);
	bin = getenv("ZM_BIN");
	if (!bin || !src) {
		printf("bench: e2e: skipped: ZM_BIN and ZM_SRCDIR must be set\n");
		return 0;
	}
	if (!fm)
		fm = "/usr/share/datasets/fashion-mnist";
	if (reps < 1)
		reps = 1;
	if (!(dir = mkdtemp(tmpl))) {
		printf("bench: e2e: no temporary directory\n");
		return 1;
	}
	zm_gemm_setup(1);
	snprintf(test, sizeof(test), "%s/test.safetensors.gz", dir);
	snprintf(arch, sizeof(arch), "%s/examples/mlp.yaml", src);
	if (train_env && *train_env)
		snprintf(train, sizeof(train), "%s", train_env);
	else
		snprintf(train, sizeof(train), "%s/train.safetensors.gz", dir);
	if (!setup("tensor import --from idx --images %s/t10k-images-idx3-ubyte.gz "
	           "--labels %s/t10k-labels-idx1-ubyte.gz -o %s", fm, fm, test) ||
	    (!(train_env && *train_env) &&
	     !setup("tensor import --from idx --images "
	            "%s/train-images-idx3-ubyte.gz --labels "
	            "%s/train-labels-idx1-ubyte.gz -o %s", fm, fm, train))) {
		status = 1;
		goto out;
	}
	for (i = 0; i < 4; i++)
		if (!setup("zoo-add --zoo %s/z --name m%d --arch %s --seed %d",
		           dir, i, arch, i + 1)) {
			status = 1;
			goto out;
		}
	snprintf(four, sizeof(four), "--model m0 --model m1 --model m2 "
	         "--model m3 --weighting uniform");
	cmd_set(&cmds[0], "e2e-predict-1-model", test, ROWS_TEST * row_flops,
	        "predict --zoo %s/z --model m0 --threads 1 --output stream "
	        "-o /dev/null %s", dir, test);
	cmd_set(&cmds[1], "e2e-predict-4-uniform-outputs", test,
	        4 * ROWS_TEST * row_flops, "predict --zoo %s/z %s --merge "
	        "outputs --threads 1 --output stream -o /dev/null %s", dir, four,
	        test);
	cmd_set(&cmds[2], "e2e-predict-4-uniform-params", test,
	        ROWS_TEST * row_flops, "predict --zoo %s/z %s --merge params "
	        "--threads 1 --output stream -o /dev/null %s", dir, four, test);
	/* Forward, and backward's two products per layer: three times. */
	cmd_set(&cmds[3], "e2e-train-step-1-epoch", train,
	        3 * ROWS_TRAIN * row_flops, "train-step --zoo %s/z --model m0 "
	        "--epochs 1 --batch-size 128 --optimizer sgd --threads 1 "
	        "--quiet -o /dev/null %s", dir, train);
	rate = blis_rate();
	printf("# e2e: BLIS sgemm on the MLP's shapes, 1 thread: %.1f GFLOP/s\n",
	       rate * 1e-9);
	for (r = 0; r < reps; r++)
		for (i = 0; i < 4; i++) {
			struct cmd *c = &cmds[i];
			char *z[] = { "zcat", (char *)c->input, NULL };
			double t, tz;
			long rss;
			if (run(c->argv, NULL, &t, &rss) != 0) {
				printf("bench: e2e: %s failed\n", c->name);
				status = 1;
				goto out;
			}
			if (run(z, NULL, &tz, NULL) != 0) {
				printf("bench: e2e: zcat %s failed\n", c->input);
				status = 1;
				goto out;
			}
			if (r == 0 || t < c->best)
				c->best = t;
			if (r == 0 || tz < c->zbest)
				c->zbest = tz;
			if (rss > c->rss)
				c->rss = rss;
			if (i == 3 && torch)
				torch = torch_rep(src, torch_t, why, sizeof(why));
		}
	for (i = 0; i < 4; i++) {
		struct cmd *c = &cmds[i];
		double floor = c->zbest + (rate > 0 ? c->flops / rate : 0);
		printf("bench: %s: %.3f s (floor, zcat %.3f s + FLOPs at BLIS "
		       "speed: %.3f s, ratio %.2f)\n", c->name, c->best, c->zbest,
		       floor, floor > 0 ? c->best / floor : 0);
		if (torch)
			printf("bench: %s-vs-torch: %.3f s (PyTorch in process, "
			       "tensors in memory: %.3f s, ratio %.2f)\n", c->name,
			       c->best, torch_t[i], c->best / torch_t[i]);
		printf("# %s: peak RSS %.1f MiB\n", c->name, (double)c->rss / 1024);
	}
	if (!torch)
		printf("bench: e2e-torch: skipped: %s\n", why);

	/* K = 4, 16, 64 with the defaults. */
	for (i = 0; i < 3; i++) {
		if (!make_zoo(arch, train, ks[i])) {
			status = 1;
			goto out;
		}
		cmd_set(&kc[i], "predict-defaults", test, 0,
		        "predict --zoo %s/z%d --threads 1 --output stream "
		        "-o /dev/null %s", dir, ks[i], test);
	}
	for (r = 0; r < reps; r++)
		for (i = 0; i < 3; i++) {
			double t;
			long rss;
			if (run(kc[i].argv, NULL, &t, &rss) != 0) {
				printf("bench: e2e: predict over K=%d failed\n", ks[i]);
				status = 1;
				goto out;
			}
			if (r == 0 || t < kc[i].best)
				kc[i].best = t;
			kc[i].rss = rss > kc[i].rss ? rss : kc[i].rss;
		}
	for (i = 0; i < 3; i++)
		printf("bench: e2e-predict-defaults-K%d: %.0f rows/s, peak RSS "
		       "%.1f MiB (K=4: %.0f rows/s, ratio %.2f)\n", ks[i],
		       ROWS_TEST / kc[i].best, (double)kc[i].rss / 1024,
		       ROWS_TEST / kc[0].best, kc[0].best / kc[i].best);
out:
	{
		char *argv[] = { "sh", "-c", NULL, NULL };
		char line[PATH_MAX + 16];
		snprintf(line, sizeof(line), "rm -rf '%s'", dir);
		argv[2] = line;
		run(argv, NULL, NULL, NULL);
	}
	return status;
}
