/*
 * Static merge speed and memory: writes 8 models of about 25 M parameters
 * each (6 dense layers of 2048 x 2048), then runs `merge --method linear`
 * and `merge --method ties` over them as child processes, measuring wall
 * time and peak RSS (wait4).  The reference, measured in the same run with
 * the same compression policy (ZM_COMPRESS, default auto: Huffman-only for
 * floats), is the floor of any streamed merge: reading every tensor of the
 * 8 inputs with zm_reader plus writing one model of the same size with
 * zm_writer.  Targets: peak RSS under 300 MiB, time at most 1.3x the
 * reference.  ZM_BENCH_MERGE_MODELS and ZM_BENCH_MERGE_LAYERS shrink it.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "mem.h"
#include "model.h"
#include "stream.h"

#define WIDTH 2048

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void fail(const struct zm_error *err)
{
	fprintf(stderr, "bench_merge: %s\n", err->msg);
	exit(1);
}

static int env_int(const char *name, int dflt)
{
	const char *v = getenv(name);
	int64_t x;

	return v && zm_parse_int64(v, &x) && x > 0 && x < 1000 ? (int)x : dflt;
}

/* Reads every tensor of path; returns the bytes read. */
static double read_all(const char *path, void *buf)
{
	struct zm_reader *r;
	struct zm_doc doc;
	struct zm_error err;
	double bytes = 0;
	bool eof;
	size_t i;

	zm_doc_init(&doc);
	if (zm_reader_open(&r, path, &err) ||
	    zm_reader_next_header(r, &doc, &eof, &err))
		fail(&err);
	for (i = 0; i < doc.n_tensors; i++) {
		if (zm_reader_read_data(r, i, buf, &err))
			fail(&err);
		bytes += (double)doc.tensors[i].nbytes;
	}
	zm_doc_release(&doc);
	zm_reader_close(r);
	return bytes;
}

/* Runs argv as a child; returns its wall time, *rss_mib its peak RSS. */
static double run_child(char *const *argv, double *rss_mib)
{
	struct rusage ru;
	double t0 = now();
	int status;
	pid_t pid = fork();

	if (pid < 0) {
		perror("bench_merge: fork");
		exit(1);
	}
	if (pid == 0) {
		execv(argv[0], argv);
		perror("bench_merge: exec");
		_exit(127);
	}
	if (wait4(pid, &status, 0, &ru) < 0 || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0) {
		fprintf(stderr, "bench_merge: %s failed\n", argv[0]);
		exit(1);
	}
	*rss_mib = (double)ru.ru_maxrss / 1024.0;
	return now() - t0;
}

int main(void)
{
	const char *bin = getenv("ZM_BIN"), *tmp = getenv("TMPDIR");
	int n_models = env_int("ZM_BENCH_MERGE_MODELS", 8);
	int n_layers = env_int("ZM_BENCH_MERGE_LAYERS", 6);
	int reps = env_int("ZM_BENCH_REPS", 2), level = ZM_COMPRESS_AUTO, i, k;
	char dir[4096], merge[4096], out[4200], yaml[4096];
	char paths[16][4200], *argv[40];
	struct zm_error err;
	struct zm_arch *arch;
	struct zm_node *root;
	struct zm_model *m;
	struct zm_doc doc;
	double t_ref = 1e30, t_extra = 1e30, t_lin = 1e30, t_ties = 1e30, rss_lin = 0;
	double rss_ties = 0, bytes = 0, rss;
	size_t params, len = 0;
	void *buf;

	/* A fixed mmap threshold, so freed tensors go back to the system
	 * and forked children do not start with this process's pages
	 * (wait4 counts them in the child's peak RSS). */
	mallopt(M_MMAP_THRESHOLD, 1 << 20);
	if (reps > 2)
		reps = 2;         /* each run moves gigabytes */
	if (n_models > 16)
		n_models = 16;
	if (!bin) {
		fprintf(stderr, "bench_merge: ZM_BIN must name the programs\n");
		return 1;
	}
	if (!zm_compress_from_env(&level)) {
		fprintf(stderr, "bench_merge: bad ZM_COMPRESS\n");
		return 1;
	}
	snprintf(merge, sizeof(merge), "%s/merge", bin);
	snprintf(dir, sizeof(dir), "%s/zm-bench-merge.XXXXXX", tmp ? tmp : "/tmp");
	if (!mkdtemp(dir)) {
		perror("bench_merge: mkdtemp");
		return 1;
	}
	len += (size_t)snprintf(yaml + len, sizeof(yaml) - len,
	                        "input: [%d]\nlayers:\n", WIDTH);
	for (k = 0; k < n_layers; k++)
		len += (size_t)snprintf(yaml + len, sizeof(yaml) - len,
		                        "  - {name: fc%d, units: %d, activation: "
		                        "relu, group: %s}\n", k, WIDTH,
		                        k < n_layers / 2 ? "lower" : "upper");
	if (zm_config_parse(yaml, strlen(yaml), "bench", &root, &err) ||
	    zm_arch_parse(root, &arch, &err))
		fail(&err);
	zm_node_free(root);
	params = zm_arch_param_count(arch);
	/* The inputs, written once with the writer's policy. */
	for (i = 0; i < n_models; i++) {
		struct zm_writer *w;
		snprintf(paths[i], sizeof(paths[i]), "%s/m%d.safetensors.gz", dir, i);
		zm_doc_init(&doc);
		if (zm_model_new(arch, (uint64_t)i + 1, &m, &err) ||
		    zm_model_to_doc(m, &doc, &err) ||
		    zm_writer_open(&w, paths[i], level, &err) ||
		    zm_writer_write_doc(w, &doc, &err) ||
		    zm_writer_commit(w, &err))
			fail(&err);
		zm_model_free(m);
		zm_doc_release(&doc);
	}
	if (!(buf = malloc((size_t)WIDTH * WIDTH * sizeof(float)))) {
		fprintf(stderr, "bench_merge: out of memory\n");
		return 1;
	}
	snprintf(out, sizeof(out), "%s/out.safetensors.gz", dir);
	for (k = 0; k < reps; k++) {
		struct zm_writer *w;
		struct zm_reader *r;
		double t0, t;
		bool eof;

		argv[0] = merge;
		argv[1] = "--method";
		argv[2] = "linear";
		argv[3] = "--quiet";
		argv[4] = "-o";
		argv[5] = out;
		for (i = 0; i < n_models; i++)
			argv[6 + i] = paths[i];
		argv[6 + n_models] = NULL;
		t = run_child(argv, &rss);
		if (t < t_lin) {
			t_lin = t;
			rss_lin = rss;
		}
		argv[2] = "ties";
		argv[6 + n_models] = "--base";
		argv[7 + n_models] = paths[0];
		argv[8 + n_models] = NULL;
		t = run_child(argv, &rss);
		if (t < t_ties) {
			t_ties = t;
			rss_ties = rss;
		}
		/* The reference, after the merges so that the children do
		 * not inherit this process's pages (a fork's peak RSS counts
		 * what it was forked with).  The model to write is loaded
		 * untimed. */
		zm_doc_init(&doc);
		if (zm_reader_open(&r, paths[n_models - 1], &err) ||
		    zm_reader_next(r, &doc, &eof, &err))
			fail(&err);
		zm_reader_close(r);
		t0 = now();
		bytes = 0;
		for (i = 0; i < n_models; i++)
			bytes += read_all(paths[i], buf);
		if (zm_writer_open(&w, out, level, &err) ||
		    zm_writer_write_doc(w, &doc, &err) ||
		    zm_writer_commit(w, &err))
			fail(&err);
		t = now() - t0;
		if (t < t_ref)
			t_ref = t;
		/* TIES also reads its base: one input more. */
		t0 = now();
		read_all(paths[0], buf);
		t = now() - t0;
		if (t < t_extra)
			t_extra = t;

		zm_doc_release(&doc);
	}
	printf("bench: merge-linear-%dx%.0fM: %.3f s (read %d inputs + write "
	       "1 output: %.3f s, ratio %.2f)\n", n_models, (double)params / 1e6,
	       t_lin, n_models, t_ref, t_lin / t_ref);
	printf("bench: merge-ties-%dx%.0fM: %.3f s (read %d inputs + write 1 "
	       "output: %.3f s, ratio %.2f)\n", n_models, (double)params / 1e6,
	       t_ties, n_models + 1, t_ref + t_extra,
	       t_ties / (t_ref + t_extra));
	printf("bench: merge-linear-peak-rss: %.1f MiB (sum of the inputs: "
	       "%.1f MiB, ratio %.3f)\n", rss_lin, bytes / 1048576.0,
	       rss_lin / (bytes / 1048576.0));
	printf("bench: merge-ties-peak-rss: %.1f MiB (sum of the inputs: "
	       "%.1f MiB, ratio %.3f)\n", rss_ties, bytes / 1048576.0,
	       rss_ties / (bytes / 1048576.0));
	for (i = 0; i < n_models; i++)
		unlink(paths[i]);
	unlink(out);
	rmdir(dir);
	free(buf);
	zm_arch_free(arch);
	return 0;
}
