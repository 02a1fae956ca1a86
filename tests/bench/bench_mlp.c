/*
 * Single-model training and inference speed against PyTorch, measured side
 * by side in one run: the MLP 784-256-128-10 (relu) with softmax
 * cross-entropy, SGD with momentum 0.9 and lr 0.05, batches of 128 rows of
 * the real Fashion-MNIST training set, and forward passes in batches of
 * 1024 rows of its test set; at 1 and 2 threads.
 *
 * PyTorch runs tests/bench/torch_mlp.py as a co-process (found through
 * ZM_SRCDIR; interpreter ZM_PYTHON, default /usr/bin/python3, Debian's
 * python3-torch) and the two alternate rep by rep, so that the other load
 * on the machine hits both alike; each figure is the best of ZM_BENCH_REPS
 * reps after a warm-up.  The child inherits BLIS_ARCH_TYPE from our gemm
 * setup (its BLAS is the same BLIS), so it too gets the AVX-512 kernels:
 * the peer at its best.  A second co-process runs PyTorch as Debian ships
 * it (BLIS left to its own kernel choice, haswell on these VMs) for the
 * "-vs-shipped" lines.  Without torch the references are reported skipped.
 *
 * Environment: ZM_FASHION_MNIST (the IDX directory), ZM_BENCH_REPS,
 * ZM_BENCH_MLP_THREADS (default "1 2"), ZM_BENCH_MLP_SECONDS (time budget
 * per thread count after the first rep, default 30: on a busy 2-core
 * machine a 2-thread rep can take seconds, BLIS's barriers spinning on a
 * descheduled thread).
 *
 * Also reported: the GEMM rate of our training and inference loops (their
 * matrix FLOPs over their whole time) next to BLIS's own rate on the same
 * zm_gemm calls run back to back with nothing between them, which bounds
 * what the training loop could reach.  Inference multiplies with weights
 * packed once (zm_workspace_pack; at one thread), so it can pass that
 * rate: bli_sgemm repacks the weights on every call.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dataset.h"
#include "gemm.h"
#include "model.h"
#include "train.h"

enum { BATCH = 128, INFER_BATCH = 1024, INFER_ROWS = 8192 };

static const char arch_json[] =
	"{\"input\": [784], \"loss\": \"cross-entropy\", \"layers\": ["
	"{\"name\": \"fc1\", \"units\": 256, \"activation\": \"relu\"},"
	"{\"name\": \"fc2\", \"units\": 128, \"activation\": \"relu\"},"
	"{\"name\": \"out\", \"units\": 10}]}";

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void fail(const struct zm_error *err)
{
	fprintf(stderr, "bench_mlp: %s\n", err->msg);
	exit(1);
}

struct data {
	float *x;
	int64_t *y;
	size_t n, d;
};

/* Reads an IDX pair into one array of F32 features and one of labels. */
static void load(const char *dir, const char *images, const char *labels,
                 struct data *out)
{
	char ipath[4096], lpath[4096];
	struct zm_dataset_options o;
	struct zm_dataset_reader *r = NULL;
	struct zm_error err;
	struct zm_doc doc;
	struct zm_tensor f;
	bool eof = false;
	size_t cap = 0;

	snprintf(ipath, sizeof(ipath), "%s/%s", dir, images);
	snprintf(lpath, sizeof(lpath), "%s/%s", dir, labels);
	zm_doc_init(&doc);
	zm_tensor_init(&f);
	zm_dataset_options_init(&o);
	o.kind = ZM_DATASET_IDX;
	o.images = ipath;
	o.labels = lpath;
	memset(out, 0, sizeof(*out));
	if (zm_dataset_open(&r, &o, &err) != ZM_OK)
		fail(&err);
	for (;;) {
		const struct zm_tensor *y;
		size_t rows, i;

		if (zm_dataset_next(r, &doc, &eof, &err) != ZM_OK)
			fail(&err);
		if (eof)
			break;
		if (zm_data_features(&doc, &f, &err) != ZM_OK)
			fail(&err);
		y = zm_doc_find(&doc, "y");
		rows = (size_t)f.shape[0];
		out->d = (size_t)f.shape[1];
		if (!y || y->dtype != ZM_DTYPE_I64) {
			fprintf(stderr, "bench_mlp: %s: no I64 labels\n", lpath);
			exit(1);
		}
		if (out->n + rows > cap) {
			cap = 2 * (out->n + rows);
			out->x = realloc(out->x, cap * out->d * sizeof(float));
			out->y = realloc(out->y, cap * sizeof(int64_t));
			if (!out->x || !out->y) {
				fprintf(stderr, "bench_mlp: out of memory\n");
				exit(1);
			}
		}
		memcpy(out->x + out->n * out->d, f.data,
		       rows * out->d * sizeof(float));
		for (i = 0; i < rows; i++)
			out->y[out->n + i] = ((const int64_t *)y->data)[i];
		out->n += rows;
		zm_tensor_release(&f);
	}
	zm_doc_release(&doc);
	zm_dataset_close(r);
}

/* ---- the PyTorch co-process ---- */

struct peer {
	pid_t pid;
	FILE *to, *from;
	char why[256];          /* why it is skipped, when it is */
	char banner[256];
};

/* shipped: run it as Debian ships it, without the BLIS_ARCH_TYPE that our
 * gemm setup exported (so its BLIS picks its own kernels). */
static bool peer_start(struct peer *p, const char *fm, int threads,
                       bool shipped)
{
	const char *src = getenv("ZM_SRCDIR");
	const char *py = getenv("ZM_PYTHON");
	char script[4096], line[512], tnum[16];
	int to[2], from[2];

	memset(p, 0, sizeof(*p));
	p->pid = -1;
	snprintf(script, sizeof(script), "%s/tests/bench/torch_mlp.py",
	         src && *src ? src : ".");
	if (!py || !*py)
		py = "/usr/bin/python3";
	if (access(py, X_OK) != 0 || access(script, R_OK) != 0) {
		snprintf(p->why, sizeof(p->why), "no %.200s",
		         access(py, X_OK) != 0 ? py : script);
		return false;
	}
	if (pipe(to) != 0 || pipe(from) != 0) {
		snprintf(p->why, sizeof(p->why), "pipe: %s", strerror(errno));
		return false;
	}
	fflush(NULL);
	p->pid = fork();
	if (p->pid < 0) {
		snprintf(p->why, sizeof(p->why), "fork: %s", strerror(errno));
		return false;
	}
	if (p->pid == 0) {
		snprintf(tnum, sizeof(tnum), "%d", threads);
		dup2(to[0], 0);
		dup2(from[1], 1);
		close(to[0]);
		close(to[1]);
		close(from[0]);
		close(from[1]);
		/* PyTorch's OpenMP pool spins against BLIS's otherwise. */
		setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
		setenv("OMP_NUM_THREADS", tnum, 1);
		setenv("BLIS_NUM_THREADS", tnum, 1);
		if (shipped)
			unsetenv("BLIS_ARCH_TYPE");
		execl(py, py, script, fm, tnum, (char *)NULL);
		_exit(127);
	}
	close(to[0]);
	close(from[1]);
	p->to = fdopen(to[1], "w");
	p->from = fdopen(from[0], "r");
	if (!p->to || !p->from || !fgets(line, sizeof(line), p->from)) {
		snprintf(p->why, sizeof(p->why), "%.200s did not start", script);
		return false;
	}
	line[strcspn(line, "\n")] = 0;
	if (strncmp(line, "ready ", 6) != 0) {
		snprintf(p->why, sizeof(p->why), "%.200s",
		         strncmp(line, "skip ", 5) ? line : line + 5);
		return false;
	}
	snprintf(p->banner, sizeof(p->banner), "%.200s", line + 6);
	return true;
}

/* Sends one command; returns the seconds it reports (and its second
 * number in *aux), or -1 after marking the peer failed. */
static double peer_cmd(struct peer *p, const char *cmd, double *aux)
{
	char line[256];
	double t, a;

	if (p->why[0])
		return -1;
	if (fprintf(p->to, "%s\n", cmd) < 0 || fflush(p->to) != 0 ||
	    !fgets(line, sizeof(line), p->from) ||
	    sscanf(line, "ok %lf %lf", &t, &a) != 2) {
		snprintf(p->why, sizeof(p->why), "torch_mlp.py failed on '%s'",
		         cmd);
		return -1;
	}
	if (aux)
		*aux = a;
	return t;
}

static void peer_stop(struct peer *p)
{
	int st;

	if (p->to) {
		fprintf(p->to, "quit\n");
		fclose(p->to);
	}
	if (p->from)
		fclose(p->from);
	if (p->pid > 0)
		waitpid(p->pid, &st, 0);
}

/* ---- our side ---- */

struct run {
	struct zm_model *model;
	struct zm_optim *opt;
	struct zm_workspace *train_ws, *infer_ws;
	const struct data *train, *test;
	size_t nbatches;
	float *grad;            /* gemm_only's gradient: BATCH x 784 */
};

static double train_steps(struct run *r, size_t steps, size_t start,
                          double *loss)
{
	struct zm_batch_stats st = { 0, 0, 0 };
	struct zm_error err;
	double t0 = now();
	size_t s;

	for (s = 0; s < steps; s++) {
		size_t b = (start + s) % r->nbatches;
		if (zm_train_step(r->model, r->opt, r->train_ws,
		                  r->train->x + b * BATCH * r->train->d,
		                  r->train->y + b * BATCH, BATCH, 1.0f, &st,
		                  &err) != ZM_OK)
			fail(&err);
	}
	t0 = now() - t0;
	*loss = st.loss_sum;
	return t0;
}

/* Inference as predict runs it: the weights packed once (timed with the
 * passes, as predict packs once per run), then batches of rows. */
static double infer_passes(struct run *r, size_t passes)
{
	double t0 = now();
	struct zm_error err;
	size_t p, i;

	if (zm_workspace_pack(r->infer_ws, r->model, &err) != ZM_OK)
		fail(&err);
	for (p = 0; p < passes; p++)
		for (i = 0; i < INFER_ROWS; i += INFER_BATCH)
			zm_model_forward(r->model, r->infer_ws,
			                 r->test->x + i * r->test->d,
			                 INFER_BATCH);
	return now() - t0;
}

/* Matrix FLOPs of one forward pass and of one training step per row. */
static void flops_per_row(const struct zm_arch *a, double *fwd, double *trn)
{
	size_t l;
	bool first = true;

	*fwd = *trn = 0;
	for (l = 0; l < a->n_layers; l++) {
		const struct zm_layer_spec *s = &a->layers[l];
		double f = 2.0 * (double)s->in_features * (double)s->out_features;
		if (s->type != ZM_LAYER_DENSE)
			continue;
		*fwd += f;
		/* forward, dW, and dx except below the first layer */
		*trn += first ? 2 * f : 3 * f;
		first = false;
	}
}

/*
 * The zm_gemm calls of `steps` training steps (training: the batches from
 * start) or of `passes` inference passes, with the inputs, shapes and
 * transposes of the model code and nothing else: BLIS's rate on our work.
 */
static double gemm_only(const struct run *r, bool training, size_t count,
                        size_t start)
{
	const struct zm_arch *a = r->model->arch;
	struct zm_workspace *ws = training ? r->train_ws : r->infer_ws;
	size_t n = training ? BATCH : INFER_BATCH;
	size_t batches = training ? count : count * (INFER_ROWS / INFER_BATCH);
	double t0 = now();
	size_t k, l;

	for (k = 0; k < batches; k++) {
		const float *x = training ?
			r->train->x + ((start + k) % r->nbatches) * BATCH *
			r->train->d :
			r->test->x + (k % (INFER_ROWS / INFER_BATCH)) *
			INFER_BATCH * r->test->d;
		const float *in = x;
		for (l = 0; l < a->n_layers; l++) {
			const struct zm_layer_spec *s = &a->layers[l];
			zm_gemm(false, true, n, s->out_features, s->in_features,
			        1.0f, in, s->in_features,
			        r->model->layers[l].weight.data, s->in_features,
			        0.0f, ws->buf[l], s->out_features);
			in = ws->buf[l];
		}
		if (!training)
			continue;
		for (l = a->n_layers; l-- > 0;) {
			const struct zm_layer_spec *s = &a->layers[l];
			const float *lin = l ? ws->buf[l - 1] : x;
			zm_gemm(true, false, s->out_features, s->in_features, n,
			        1.0f, r->grad, s->out_features, lin,
			        s->in_features, 0.0f, ws->dw[l],
			        s->in_features);
			if (l > 0)
				zm_gemm(false, false, n, s->in_features,
				        s->out_features, 1.0f, r->grad,
				        s->out_features,
				        r->model->layers[l].weight.data,
				        s->in_features, 0.0f, ws->grad_b,
				        s->in_features);
		}
	}
	return now() - t0;
}

static void line(const char *name, double v, const char *unit,
                 const char *ref, double rv, const struct peer *p)
{
	if (p && p->why[0])
		printf("bench: %s: %.0f %s (%s: skipped: %s)\n", name, v, unit,
		       ref, p->why);
	else
		printf("bench: %s: %.*f %s (%s: %.*f %s, ratio %.2f)\n", name,
		       v >= 1000 ? 0 : 1, v, unit, ref, rv >= 1000 ? 0 : 1, rv,
		       unit, rv > 0 ? v / rv : 0);
}

static double best(double a, double b)
{
	return b >= 0 && (a < 0 || b < a) ? b : a;
}

int main(void)
{
	const char *fm = getenv("ZM_FASHION_MNIST");
	const char *reps_s = getenv("ZM_BENCH_REPS");
	const char *tlist = getenv("ZM_BENCH_MLP_THREADS");
	char *tend;
	const char *budget_s = getenv("ZM_BENCH_MLP_SECONDS");
	double budget = 30;     /* per thread count, after the first rep */
	bool user_arch;
	int reps = reps_s ? atoi(reps_s) : 5, threads;
	const size_t steps = 120, passes = 4;
	struct data train, test;
	struct zm_arch *arch = NULL;
	struct zm_error err;
	struct zm_optim_config cfg;
	double fwd_flops, trn_flops;

	if (!fm || !*fm)
		fm = "/usr/share/datasets/fashion-mnist";
	if (reps < 1)
		reps = 1;
	if (!tlist)
		tlist = "1 2";
	user_arch = getenv("BLIS_ARCH_TYPE") && *getenv("BLIS_ARCH_TYPE");
	if (budget_s && atof(budget_s) > 0)
		budget = atof(budget_s);
	/* A peer that exits early must not kill us through its pipe. */
	signal(SIGPIPE, SIG_IGN);
	zm_gemm_setup(1);
	load(fm, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
	     &train);
	load(fm, "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
	     &test);
	if (train.d != 784 || test.n < INFER_ROWS || train.n < BATCH) {
		fprintf(stderr, "bench_mlp: unexpected Fashion-MNIST shape\n");
		return 1;
	}
	if (zm_arch_parse_json(arch_json, strlen(arch_json), "bench_mlp",
	                       &arch, &err) != ZM_OK)
		fail(&err);
	flops_per_row(arch, &fwd_flops, &trn_flops);
	zm_optim_config_default(&cfg, ZM_OPTIM_SGD);
	cfg.lr = 0.05;
	cfg.momentum = 0.9;
	printf("# mlp: 784-256-128-10 relu, SGD momentum 0.9 lr 0.05, batch "
	       "%d, Fashion-MNIST; inference batch %d; BLIS %s; best of %d\n",
	       BATCH, INFER_BATCH, zm_gemm_arch(), reps);

	for (; *tlist; tlist = tend) {
		struct run r;
		struct peer p, ps;
		double ours_t = -1, torch_t = -1, ours_i = -1, torch_i = -1;
		double gemm_t = -1, gemm_i = -1, loss = 0, tloss = 0;
		double ours_loss = 0, torch_loss = 0, ship_t = -1, ship_i = -1;
		char cmd[128], name[64];
		size_t start = 0;
		int k, done = 0;
		double t_end;

		threads = (int)strtol(tlist, &tend, 10);
		if (tend == tlist)
			break;
		if (threads < 1 || threads > 64)
			continue;

		zm_gemm_setup(threads);
		memset(&r, 0, sizeof(r));
		r.train = &train;
		r.test = &test;
		r.nbatches = train.n / BATCH;
		/* Gradient-sized values: uninitialised memory could hold
		 * subnormals, which would slow BLIS down and the reference
		 * with it. */
		r.grad = malloc(BATCH * train.d * sizeof(float));
		if (!r.grad) {
			fprintf(stderr, "bench_mlp: out of memory\n");
			return 1;
		}
		for (k = 0; k < (int)(BATCH * train.d); k++)
			r.grad[k] = 1e-3f * (float)(k % 13 - 6);
		if (zm_model_new(arch, 1, &r.model, &err) != ZM_OK ||
		    zm_optim_new(arch, &cfg, &r.opt, &err) != ZM_OK ||
		    zm_workspace_new(arch, BATCH, true, &r.train_ws,
		                     &err) != ZM_OK ||
		    zm_workspace_new(arch, INFER_BATCH, false, &r.infer_ws,
		                     &err) != ZM_OK)
			fail(&err);
		peer_start(&p, fm, threads, false);
		printf("# torch: %s%s\n", p.why[0] ? "skipped: " : "",
		       p.why[0] ? p.why : p.banner);
		memset(&ps, 0, sizeof(ps));
		if (user_arch)
			snprintf(ps.why, sizeof(ps.why), "BLIS_ARCH_TYPE set");
		else
			peer_start(&ps, fm, threads, true);

		/* Warm-up (k = -1) untimed, then reps in which every measure
		 * takes its turn, so that a busy moment of the machine hits
		 * them alike.  Both sides walk the same batches in order. */
		t_end = now() + budget;
		for (k = -1; k < reps && (k < 1 || now() < t_end); k++) {
			double t, tt, g, ti, tti, gi, st, sti;
			/* a short warm-up: on a busy machine a rep is slow */
			size_t ns = k < 0 ? steps / 6 : steps;
			size_t np = k < 0 ? 1 : passes;
			t = train_steps(&r, ns, start, &loss);
			snprintf(cmd, sizeof(cmd), "train %zu %zu", ns, start);
			tloss = 0;
			tt = peer_cmd(&p, cmd, &tloss);
			st = peer_cmd(&ps, cmd, NULL);
			g = gemm_only(&r, true, ns, start);
			start += ns;
			ti = infer_passes(&r, np);
			snprintf(cmd, sizeof(cmd), "infer %d %d %zu", INFER_ROWS,
			         INFER_BATCH, np);
			tti = peer_cmd(&p, cmd, NULL);
			sti = peer_cmd(&ps, cmd, NULL);
			gi = gemm_only(&r, false, np, 0);
			if (k < 0)
				continue;
			done++;
			ours_t = best(ours_t, t);
			torch_t = best(torch_t, tt);
			gemm_t = best(gemm_t, g);
			ours_i = best(ours_i, ti);
			torch_i = best(torch_i, tti);
			ship_t = best(ship_t, st);
			ship_i = best(ship_i, sti);
			gemm_i = best(gemm_i, gi);
			ours_loss += loss;
			torch_loss += tloss;
		}
		peer_stop(&p);
		peer_stop(&ps);

		if (done < reps)
			printf("# %dt: best of %d reps only: the time budget of "
			       "%.0f s ran out (busy machine?)\n", threads, done,
			       budget);
		if (!p.why[0])
			printf("# %dt: mean training loss over the timed steps: "
			       "ours %.4f, torch %.4f\n", threads,
			       ours_loss / ((double)done * steps * BATCH),
			       torch_loss / ((double)done * steps * BATCH));
		snprintf(name, sizeof(name), "mlp-train-%dt", threads);
		line(name, (double)(steps * BATCH) / ours_t, "samples/s",
		     "torch", torch_t > 0 ? (double)(steps * BATCH) / torch_t : 0,
		     &p);
		snprintf(name, sizeof(name), "mlp-infer-b%d-%dt", INFER_BATCH,
		         threads);
		line(name, (double)(passes * INFER_ROWS) / ours_i, "rows/s",
		     "torch",
		     torch_i > 0 ? (double)(passes * INFER_ROWS) / torch_i : 0,
		     &p);
		/* Debian's PyTorch as installed: its BLIS (the same library)
		 * left to pick its kernels, which on these VMs are the
		 * haswell ones. */
		snprintf(name, sizeof(name), "mlp-train-%dt-vs-shipped", threads);
		line(name, (double)(steps * BATCH) / ours_t, "samples/s",
		     "torch as shipped",
		     ship_t > 0 ? (double)(steps * BATCH) / ship_t : 0, &ps);
		snprintf(name, sizeof(name), "mlp-infer-b%d-%dt-vs-shipped",
		         INFER_BATCH, threads);
		line(name, (double)(passes * INFER_ROWS) / ours_i, "rows/s",
		     "torch as shipped",
		     ship_i > 0 ? (double)(passes * INFER_ROWS) / ship_i : 0,
		     &ps);
		snprintf(name, sizeof(name), "mlp-train-gemm-%dt", threads);
		line(name, trn_flops * steps * BATCH / ours_t / 1e9, "GFLOP/s",
		     "BLIS sgemm same shapes",
		     trn_flops * steps * BATCH / gemm_t / 1e9, NULL);
		snprintf(name, sizeof(name), "mlp-infer-gemm-%dt", threads);
		line(name, fwd_flops * passes * INFER_ROWS / ours_i / 1e9,
		     "GFLOP/s", "BLIS sgemm same shapes",
		     fwd_flops * passes * INFER_ROWS / gemm_i / 1e9, NULL);
		fflush(stdout);

		free(r.grad);
		zm_workspace_free(r.infer_ws);
		zm_workspace_free(r.train_ws);
		zm_optim_free(r.opt);
		zm_model_free(r.model);
	}
	zm_arch_free(arch);
	free(train.x);
	free(train.y);
	free(test.x);
	free(test.y);
	return 0;
}
