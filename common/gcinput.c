/*
 * granctl's inputs: the zoo models, update documents, training logs and
 * data batches it weighs, and the measured cost of a child process.  See
 * granctl.h for the definitions.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "dataset.h"
#include "fileio.h"
#include "granctl.h"
#include "granularity.h"
#include "mem.h"
#include "metakeys.h"
#include "model.h"
#include "schema.h"
#include "stream.h"
#include "zoo.h"
#include "zoomodel.h"

extern char **environ;

/* ---- inputs ---- */

void zm_gc_inputs_init(struct zm_gc_inputs *in)
{
	int l;

	memset(in, 0, sizeof(*in));
	zm_profile_init(&in->data);
	for (l = 0; l < 3; l++)
		in->latency_ms[l] = in->memory_mib[l] = NAN;
}

static void update_release(struct zm_gc_update *u, size_t n_layers)
{
	size_t l;

	free(u->model);
	free(u->slice);
	for (l = 0; u->delta && l < n_layers; l++)
		free(u->delta[l]);
	free(u->delta);
	zm_profile_release(&u->profile);
}

void zm_gc_inputs_release(struct zm_gc_inputs *in)
{
	size_t i;

	for (i = 0; i < in->n_models; i++) {
		free(in->models[i].name);
		zm_model_free(in->models[i].model);
		zm_profile_release(&in->models[i].profile);
	}
	free(in->models);
	for (i = 0; i < in->n_updates; i++)
		update_release(&in->updates[i], in->arch->n_layers);
	free(in->updates);
	for (i = 0; i < in->n_logs; i++) {
		free(in->logs[i].model);
		free(in->logs[i].step);
		free(in->logs[i].loss);
	}
	free(in->logs);
	zm_profile_release(&in->data);
	zm_arch_free(in->arch);
	zm_gc_inputs_init(in);
}

const struct zm_gc_model *zm_gc_find_model(const struct zm_gc_inputs *in,
                                           const char *name)
{
	size_t i;

	for (i = 0; i < in->n_models; i++)
		if (strcmp(in->models[i].name, name) == 0)
			return &in->models[i];
	return NULL;
}

/* Grows an array of elem-sized items to hold one more. */
static bool grow(void **arr, size_t n, size_t elem)
{
	size_t bytes;
	void *p;

	if (!zm_size_mul(n + 1, elem, &bytes) || !(p = zm_realloc(*arr, bytes)))
		return false;
	*arr = p;
	memset((char *)p + n * elem, 0, elem);
	return true;
}

enum zm_status zm_gc_add_model(struct zm_gc_inputs *in, const char *name,
                               const struct zm_model *model,
                               struct zm_error *err)
{
	struct zm_gc_model *m;
	enum zm_status st;
	struct zm_doc *extra;

	if (!name)
		name = model->name;
	ZM_ASSERT(name != NULL);
	if (zm_gc_find_model(in, name))
		return ZM_OK;
	if (in->arch) {
		if ((st = zm_model_same_arch(in->arch, model->arch, err)))
			return zm_error_prefix(err, "model '%s': ", name);
	} else if ((st = zm_arch_copy(model->arch, &in->arch, err))) {
		return st;
	}
	if (!grow((void **)&in->models, in->n_models, sizeof(*in->models)))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	m = &in->models[in->n_models];
	zm_profile_init(&m->profile);
	if (!(m->name = zm_strdup(name)))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	if ((st = zm_model_copy(model, &m->model, err))) {
		free(m->name);
		return st;
	}
	extra = &m->model->extra;
	if (zm_doc_find(extra, "profile.count")) {
		st = zm_profile_from_doc(&m->profile, extra, err);
		if (st != ZM_OK) {
			free(m->name);
			zm_model_free(m->model);
			return zm_error_prefix(err, "model '%s': ", name);
		}
	}
	in->n_models++;
	return ZM_OK;
}

/* A metadata number, dflt when absent; false when malformed. */
static bool meta_number(const struct zm_doc *doc, const char *key,
                        double dflt, double *out)
{
	const char *s = zm_doc_meta(doc, key);

	*out = dflt;
	return !s || zm_parse_double(s, out);
}

/* Reads one parameter delta into dst (count floats) after checking its
 * shape against the model's tensor. */
static enum zm_status read_delta(const struct zm_doc *doc, const char *source,
                                 const struct zm_tensor *ref,
                                 float *dst, struct zm_error *err)
{
	const struct zm_tensor *t = zm_doc_find(doc, ref->name);
	size_t i, n = zm_tensor_numel(ref);
	char a[64], b[64];

	if (!t)
		return zm_error_set(err, ZM_ERR_FORMAT, "%s: no delta '%s'",
		                    source, ref->name);
	if (!zm_dtype_is_float(t->dtype) || t->ndim != ref->ndim ||
	    memcmp(t->shape, ref->shape, sizeof(int64_t) * (size_t)t->ndim)) {
		zm_shape_format(t->ndim, t->shape, a, sizeof(a));
		zm_shape_format(ref->ndim, ref->shape, b, sizeof(b));
		return zm_error_set(err, ZM_ERR_FORMAT, "%s: delta '%s' is %s "
		                    "%s, the model's is F32 %s", source,
		                    t->name, zm_dtype_name(t->dtype), a, b);
	}
	zm_tensor_read_f32(t, 0, n, dst);
	for (i = 0; i < n; i++)
		if (!isfinite(dst[i]))
			return zm_error_set(err, ZM_ERR_DATA, "%s: delta '%s' "
			                    "element %zu is not finite", source,
			                    t->name, i);
	return ZM_OK;
}

enum zm_status zm_gc_add_update(struct zm_gc_inputs *in,
                                const struct zm_doc *doc, const char *source,
                                struct zm_error *err)
{
	const struct zm_gc_model *m;
	struct zm_gc_update *u;
	const char *kind = zm_doc_meta(doc, ZM_META_KIND);
	const char *name = zm_doc_meta(doc, ZM_META_NAME);
	const char *slice = zm_doc_meta(doc, ZM_META_SLICE);
	enum zm_status st;
	size_t l, nl;

	if (!kind || strcmp(kind, "update") != 0)
		return zm_error_set(err, ZM_ERR_FORMAT, "%s: not an update "
		                    "document (zm.kind is %s)", source,
		                    kind ? kind : "missing");
	if (!name)
		return zm_error_set(err, ZM_ERR_FORMAT, "%s: update without "
		                    ZM_META_NAME, source);
	if (!(m = zm_gc_find_model(in, name)))
		return zm_error_set(err, ZM_ERR_NOTFOUND, "%s: model '%s' is "
		                    "not in the zoo", source, name);
	if (!grow((void **)&in->updates, in->n_updates, sizeof(*in->updates)))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	u = &in->updates[in->n_updates];
	zm_profile_init(&u->profile);
	nl = in->arch->n_layers;
	if (!meta_number(doc, ZM_META_WEIGHT, 1, &u->weight) ||
	    !meta_number(doc, ZM_META_SAMPLES, 1, &u->samples) ||
	    !(u->weight >= 0) || !(u->samples >= 0)) {
		st = zm_error_set(err, ZM_ERR_DATA, "%s: zm.weight and "
		                  "zm.samples must be non-negative numbers",
		                  source);
		goto fail;
	}
	if (!(u->model = zm_strdup(name)) ||
	    (slice && !(u->slice = zm_strdup(slice))) ||
	    !(u->delta = zm_calloc(nl, sizeof(*u->delta))))
		goto nomem;
	for (l = 0; l < nl; l++) {
		const struct zm_layer *ly = &m->model->layers[l];
		size_t nw, nb, total;
		if (!ly->spec->has_params)
			continue;
		nw = zm_tensor_numel(&ly->weight);
		nb = zm_tensor_numel(&ly->bias);
		if (!zm_size_add(nw, nb, &total) ||
		    !(u->delta[l] = zm_calloc(total, sizeof(float))))
			goto nomem;
		if ((st = read_delta(doc, source, &ly->weight, u->delta[l],
		                     err)) ||
		    (st = read_delta(doc, source, &ly->bias, u->delta[l] + nw,
		                     err)))
			goto fail;
	}
	if (zm_doc_find(doc, "profile.count") &&
	    (st = zm_profile_from_doc(&u->profile, doc, err))) {
		zm_error_prefix(err, "%s: ", source);
		goto fail;
	}
	in->n_updates++;
	return ZM_OK;
nomem:
	st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
fail:
	update_release(u, nl);
	memset(u, 0, sizeof(*u));
	return st;
}

static struct zm_gc_log *find_log(struct zm_gc_inputs *in, const char *model)
{
	size_t i;

	for (i = 0; i < in->n_logs; i++)
		if (strcmp(in->logs[i].model, model) == 0)
			return &in->logs[i];
	if (!grow((void **)&in->logs, in->n_logs, sizeof(*in->logs)))
		return NULL;
	if (!(in->logs[in->n_logs].model = zm_strdup(model)))
		return NULL;
	in->logs[in->n_logs].train_loss = NAN;
	in->logs[in->n_logs].val_loss = NAN;
	in->logs[in->n_logs].val_acc = NAN;
	return &in->logs[in->n_logs++];
}

/* A number field of a log line; NaN when absent, false when not a number
 * (zm_json_float writes null for non-finite values, which reads as NaN). */
static bool log_number(const struct zm_node *obj, const char *key,
                       double *out)
{
	const struct zm_node *n = zm_node_get(obj, key);

	*out = NAN;
	if (!n)
		return true;
	if (n->type != ZM_NODE_SCALAR)
		return false;
	if (n->plain && strcmp(n->value, "null") == 0)
		return true;
	return n->plain && zm_parse_double(n->value, out);
}

enum zm_status zm_gc_add_log(struct zm_gc_inputs *in, const char *bytes,
                             size_t len, const char *source,
                             struct zm_error *err)
{
	size_t pos = 0, line = 0;
	enum zm_status st = ZM_OK;

	while (pos < len && st == ZM_OK) {
		const char *s = bytes + pos, *nl = memchr(s, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - s) : len - pos;
		struct zm_node *root = NULL;
		const struct zm_node *model, *end;
		struct zm_gc_log *lg;
		double step, loss, v;
		size_t k;

		pos += n + (nl != NULL);
		line++;
		for (k = 0; k < n && (s[k] == ' ' || s[k] == '\t' ||
		                      s[k] == '\r'); k++)
			;
		if (k == n)
			continue;
		if (s[k] != '{') {
			st = zm_error_set(err, ZM_ERR_FORMAT, "%s:%zu: expected "
			                  "a JSON object", source, line);
			break;
		}
		if ((st = zm_config_parse(s, n, source, &root, err))) {
			if (st == ZM_ERR_CONFIG)
				st = zm_error_set(err, ZM_ERR_FORMAT, "%s:%zu: "
				                  "invalid JSON", source, line);
			break;
		}
		model = zm_node_get(root, "model");
		if (root->type != ZM_NODE_MAP || !model ||
		    model->type != ZM_NODE_SCALAR || !zm_node_get(root, "loss")) {
			st = zm_error_set(err, ZM_ERR_FORMAT, "%s:%zu: expected "
			                  "\"model\" and \"loss\"", source, line);
			zm_node_free(root);
			break;
		}
		if (!log_number(root, "step", &step) ||
		    !log_number(root, "loss", &loss)) {
			st = zm_error_set(err, ZM_ERR_FORMAT, "%s:%zu: step and "
			                  "loss must be numbers", source, line);
			zm_node_free(root);
			break;
		}
		if (!(lg = find_log(in, model->value)) ||
		    !grow((void **)&lg->step, lg->n_points, sizeof(double)) ||
		    !grow((void **)&lg->loss, lg->n_points, sizeof(double))) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
			zm_node_free(root);
			break;
		}
		if (isnan(step))
			step = (double)lg->n_points;
		lg->step[lg->n_points] = step;
		lg->loss[lg->n_points++] = loss;
		end = zm_node_get(root, "epoch_end");
		if (end && end->type == ZM_NODE_SCALAR &&
		    strcmp(end->value, "true") == 0) {
			lg->epochs++;
			if (log_number(root, "train_loss", &v) && !isnan(v))
				lg->train_loss = v;
			if (log_number(root, "val_loss", &v))
				lg->val_loss = v;
			if (log_number(root, "val_acc", &v))
				lg->val_acc = v;
		}
		zm_node_free(root);
	}
	return st;
}

enum zm_status zm_gc_add_data(struct zm_gc_inputs *in,
                              const struct zm_doc *doc, const char *source,
                              struct zm_error *err)
{
	struct zm_tensor x;
	enum zm_status st;
	size_t n, d;

	zm_tensor_init(&x);
	if ((st = zm_data_check(doc, source, &n, err)) ||
	    (st = zm_data_features(doc, &x, err)))
		goto out;
	d = n ? zm_tensor_numel(&x) / n : 0;
	if (in->arch && n && d != in->arch->input_features) {
		st = zm_error_set(err, ZM_ERR_DATA, "%s: %zu features, the "
		                  "models expect %zu", source, d,
		                  in->arch->input_features);
		goto out;
	}
	if (n && (st = zm_profile_add_batch(&in->data, ZM_PROFILE_INPUT,
	                                    x.data, n, d, err)))
		zm_error_prefix(err, "%s: ", source);
	else
		in->has_data = true;
out:
	zm_tensor_release(&x);
	return st;
}
/* ---- the predict program ---- */

const char *zm_gc_predict_program(const char *self, char *buf, size_t size,
                                  char *beside, size_t beside_size)
{
	ssize_t n = readlink("/proc/self/exe", buf, size - 1);
	const char *base;
	char *slash;
	size_t plen = 0;

	beside[0] = '\0';
	if (n <= 0 || size <= 16 || (size_t)n >= size - 16) {
		snprintf(buf, size, "predict");
		return buf;
	}
	buf[n] = '\0';
	slash = strrchr(buf, '/');
	base = slash ? slash + 1 : buf;
	if (strlen(base) >= strlen(self) &&
	    strcmp(base + strlen(base) - strlen(self), self) == 0)
		plen = strlen(base) - strlen(self);
	if (slash && plen + sizeof("predict") <= size - (size_t)(slash + 1 - buf)) {
		memmove(slash + 1, base, plen);
		memcpy(slash + 1 + plen, "predict", sizeof("predict"));
		if (access(buf, X_OK) == 0)
			return buf;
		snprintf(beside, beside_size, "%s", buf);
		memmove(buf, slash + 1, plen + sizeof("predict"));
		return buf;
	}
	snprintf(buf, size, "predict");
	return buf;
}

/* ---- measuring a child ---- */

enum zm_status zm_gc_measure_child(char *const *argv, double *ms,
                                   double *mib, struct zm_error *err)
{
	const char *tmpdir = getenv("TMPDIR");
	char tmpl[4096];
	posix_spawn_file_actions_t fa;
	double t0;
	struct rusage ru;
	char buf[512], *line;
	int fd, status, rc;
	ssize_t got;
	pid_t pid;

	/* The child's stderr goes to a file under TMPDIR, as for mktemp. */
	if (!tmpdir || !*tmpdir)
		tmpdir = "/tmp";
	if (snprintf(tmpl, sizeof(tmpl), "%s/zm-granctl.XXXXXX", tmpdir) >=
	    (int)sizeof(tmpl))
		return zm_error_set(err, ZM_ERR_IO, "TMPDIR is too long");
	if ((fd = mkstemp(tmpl)) < 0)
		return zm_error_errno(err, ZM_ERR_IO, "temporary file %s "
		                      "(TMPDIR)", tmpl);
	unlink(tmpl);
	if ((rc = posix_spawn_file_actions_init(&fa))) {
		close(fd);
		errno = rc;
		return zm_error_errno(err, ZM_ERR_IO, "posix_spawn");
	}
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, fd, 2);
	t0 = zm_clock_seconds();
	rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc) {
		close(fd);
		errno = rc;
		return zm_error_errno(err, ZM_ERR_IO, "cannot run %s", argv[0]);
	}
	while (wait4(pid, &status, 0, &ru) < 0) {
		if (errno != EINTR) {
			close(fd);
			return zm_error_errno(err, ZM_ERR_IO, "wait4");
		}
	}
	*ms = (zm_clock_seconds() - t0) * 1e3;
	/* Linux reports ru_maxrss in KiB. */
	*mib = (double)ru.ru_maxrss / 1024.0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		close(fd);
		return ZM_OK;
	}
	/* The last line of the child's stderr says why. */
	buf[0] = '\0';
	if (lseek(fd, 0, SEEK_END) > 0) {
		off_t end = lseek(fd, 0, SEEK_END);
		off_t start = end > (off_t)sizeof(buf) - 1 ?
		              end - (off_t)sizeof(buf) + 1 : 0;
		got = pread(fd, buf, sizeof(buf) - 1, start);
		buf[got > 0 ? got : 0] = '\0';
	}
	close(fd);
	while (*buf && buf[strlen(buf) - 1] == '\n')
		buf[strlen(buf) - 1] = '\0';
	line = strrchr(buf, '\n');
	line = line ? line + 1 : buf;
	if (WIFSIGNALED(status))
		return zm_error_set(err, ZM_ERR_IO, "%s killed by signal %d%s%s",
		                    argv[0], WTERMSIG(status), *line ? ": " : "",
		                    line);
	return zm_error_set(err, ZM_ERR_IO, "%s exited with %d%s%s", argv[0],
	                    WEXITSTATUS(status), *line ? ": " : "", line);
}

/* ---- from files and a zoo ---- */

/* Loads model name from the zoo into the inputs, once; with
 * experts_only, routers and bases are passed over. */
static enum zm_status add_zoo_model(struct zm_gc_inputs *in,
                                    const struct zm_zoo *zoo,
                                    const char *name, bool experts_only,
                                    struct zm_error *err)
{
	struct zm_model *m = NULL;
	enum zm_status st;
	enum zm_role role;

	if (zm_gc_find_model(in, name))
		return ZM_OK;
	if (!(st = zm_zoo_load_model(zoo, name, &m, NULL, err)) &&
	    !(experts_only && zm_role_of_doc(&m->extra, &role) &&
	      role != ZM_ROLE_EXPERT))
		st = zm_gc_add_model(in, name, m, err);
	zm_model_free(m);
	return st;
}

static enum zm_status read_updates(struct zm_gc_inputs *in,
                                   const struct zm_zoo *zoo, const char *path,
                                   struct zm_error *err)
{
	struct zm_reader *r = NULL;
	struct zm_doc doc;
	enum zm_status st;
	bool eof = false;
	char src[PATH_MAX + 64];

	zm_doc_init(&doc);
	st = zm_reader_open(&r, path, err);
	while (st == ZM_OK && !(st = zm_reader_next(r, &doc, &eof, err)) &&
	       !eof) {
		const char *name = zm_doc_meta(&doc, ZM_META_NAME);
		snprintf(src, sizeof(src), "%s: document %zu", path,
		         zm_reader_doc_number(r));
		if (name && (st = add_zoo_model(in, zoo, name, false, err)))
			zm_error_prefix(err, "%s: ", src);
		else
			st = zm_gc_add_update(in, &doc, src, err);
	}
	if (st == ZM_OK && zm_reader_doc_number(r) == 0)
		st = zm_error_set(err, ZM_ERR_DATA, "%s: no update documents",
		                  zm_reader_name(r));
	zm_reader_close(r);
	zm_doc_release(&doc);
	return st;
}

enum zm_status zm_gc_read_zoo(struct zm_gc_inputs *in, const char *zoo_dir,
                              const char *const *models, size_t n_models,
                              const char *const *updates, size_t n_updates,
                              struct zm_error *err)
{
	struct zm_zoo *zoo = NULL;
	enum zm_status st;
	size_t i;

	st = zm_zoo_open(&zoo, zoo_dir, ZM_ZOO_READ, err);
	for (i = 0; st == ZM_OK && i < n_models; i++)
		st = add_zoo_model(in, zoo, models[i], false, err);
	for (i = 0; st == ZM_OK && i < n_updates; i++)
		st = read_updates(in, zoo, updates[i], err);
	for (i = 0; st == ZM_OK && !n_models && !n_updates &&
	            i < zoo->n_models; i++)
		st = add_zoo_model(in, zoo, zoo->models[i].name, true, err);
	zm_zoo_close(zoo);
	return st;
}

enum zm_status zm_gc_read_log(struct zm_gc_inputs *in, const char *path,
                              struct zm_error *err)
{
	enum zm_status st;
	char *text = NULL;
	size_t len = 0;

	if ((st = zm_read_file(path, (size_t)1 << 30, &text, &len, err)))
		return st;
	st = zm_gc_add_log(in, text, len, path, err);
	free(text);
	return st;
}

enum zm_status zm_gc_read_data(struct zm_gc_inputs *in, const char *path,
                               uint64_t max_rows, struct zm_error *err)
{
	struct zm_reader *r = NULL;
	struct zm_doc doc;
	enum zm_status st;
	bool eof = false;
	char src[PATH_MAX + 64];

	zm_doc_init(&doc);
	st = zm_reader_open(&r, path, err);
	while (st == ZM_OK && zm_profile_count(&in->data) < max_rows &&
	       !(st = zm_reader_next(r, &doc, &eof, err)) && !eof) {
		snprintf(src, sizeof(src), "%s: document %zu", path,
		         zm_reader_doc_number(r));
		st = zm_gc_add_data(in, &doc, src, err);
	}
	zm_reader_close(r);
	zm_doc_release(&doc);
	return st;
}

/*
 * Runs predict as a child process: the multi-model predictor is not a
 * library call yet, and a child's ru_maxrss is its whole peak memory,
 * which an in-process run could not separate from ours.
 */
enum zm_status zm_gc_measure(struct zm_gc_inputs *in, const char *predict,
                             const char *zoo_dir, const char *data,
                             struct zm_error *err)
{
	const char **argv;
	enum zm_status st = ZM_OK;
	size_t i, n = 0, cap = 2 * in->n_models + 16;
	int lv;

	if (!(argv = zm_calloc(cap, sizeof(*argv))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	argv[n++] = predict;
	argv[n++] = "--zoo";
	argv[n++] = zoo_dir;
	for (i = 0; i < in->n_models; i++) {
		argv[n++] = "--model";
		argv[n++] = in->models[i].name;
	}
	argv[n++] = "--granularity";
	n++;                        /* the level, below */
	argv[n++] = "--quiet";
	argv[n++] = "-o";
	argv[n++] = "/dev/null";
	argv[n++] = data;
	argv[n] = NULL;
	for (lv = ZM_GRAN_FULL; lv <= ZM_GRAN_LAYER && st == ZM_OK; lv++) {
		argv[2 * in->n_models + 4] =
			zm_gran_level_name((enum zm_gran_level)lv);
		st = zm_gc_measure_child((char *const *)argv,
		                         &in->latency_ms[lv],
		                         &in->memory_mib[lv], err);
		if (st != ZM_OK)
			zm_error_prefix(err, "at the %s level: ",
			                zm_gran_level_name((enum zm_gran_level)lv));
	}
	free(argv);
	return st;
}
