/*
 * conv2d and maxpool2d: the forward pass against a naive 7-loop
 * convolution, im2col/col2im as adjoints, the conv backward pass against
 * central finite differences (exact for a linear map, up to rounding), max
 * pooling's gradient against finite differences on tie-free inputs, a whole
 * conv model's gradients against finite differences, and the arch parser.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "conv.h"
#include "json.h"
#include "model.h"
#include "random.h"
#include "unit.h"

static enum zm_status arch_error(const char *yaml, struct zm_error *err)
{
	struct zm_node *root;
	struct zm_arch *arch = NULL;
	enum zm_status st;

	ck_assert_int_eq(zm_config_parse(yaml, strlen(yaml), "arch.yaml", &root,
	                                 err), ZM_OK);
	st = zm_arch_parse(root, &arch, err);
	zm_node_free(root);
	zm_arch_free(arch);
	return st;
}

/* One geometry: c, h, w, oc, kh, kw, sh, sw, same. */
struct geom_case {
	int c, h, w, oc, kh, kw, sh, sw, same;
};

static const struct geom_case cases[] = {
	{ 1, 6, 6, 2, 3, 3, 1, 1, 1 },
	{ 1, 6, 6, 2, 3, 3, 1, 1, 0 },
	{ 3, 7, 5, 4, 3, 3, 2, 2, 1 },
	{ 3, 7, 5, 4, 3, 3, 2, 2, 0 },
	{ 2, 8, 9, 3, 2, 4, 1, 1, 1 },   /* even, non-square kernel */
	{ 2, 8, 9, 3, 5, 2, 2, 1, 0 },
	{ 4, 5, 5, 5, 1, 1, 1, 1, 0 },   /* 1x1 */
	{ 5, 9, 7, 6, 4, 3, 2, 3, 1 },
	{ 2, 28, 28, 3, 5, 5, 1, 1, 1 }, /* several images per chunk */
};

/* A conv2d spec built by the parser, so tests see the real geometry. */
static struct zm_arch *conv_arch(const struct geom_case *k)
{
	char yaml[512];

	snprintf(yaml, sizeof(yaml),
	         "input: [%d, %d, %d]\nloss: mse\nlayers:\n"
	         "  - {name: c, type: conv2d, filters: %d, kernel: [%d, %d], "
	         "stride: [%d, %d], padding: %s}\n",
	         k->c, k->h, k->w, k->oc, k->kh, k->kw, k->sh, k->sw,
	         k->same ? "same" : "valid");
	return unit_arch(yaml);
}

static void fill(struct zm_rng *r, float *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		v[i] = (float)(2.0 * zm_rng_uniform(r) - 1.0);
}

/* The definition, in double: y[b,o,i,j] = b[o] + sum_{c,u,v} w[o,c,u,v] *
 * x[b, c, i*sh + u - ph, j*sw + v - pw] (zero outside). */
static void naive_conv(const struct zm_conv_geom *g, const float *w,
                       const float *bias, const float *x, size_t n, double *y)
{
	size_t b, o, i, j, c, u, v;

	for (b = 0; b < n; b++)
	for (o = 0; o < g->oc; o++)
	for (i = 0; i < g->oh; i++)
	for (j = 0; j < g->ow; j++) {
		double s = bias[o];
		for (c = 0; c < g->c; c++)
		for (u = 0; u < g->kh; u++)
		for (v = 0; v < g->kw; v++) {
			long yy = (long)(i * g->sh + u) - (long)g->ph;
			long xx = (long)(j * g->sw + v) - (long)g->pw;
			if (yy < 0 || xx < 0 || yy >= (long)g->h ||
			    xx >= (long)g->w)
				continue;
			s += (double)w[((o * g->c + c) * g->kh + u) * g->kw + v] *
			     x[((b * g->c + c) * g->h + (size_t)yy) * g->w +
			       (size_t)xx];
		}
		y[((b * g->oc + o) * g->oh + i) * g->ow + j] = s;
	}
}

START_TEST(test_conv_forward_naive)
{
	const struct geom_case *k = &cases[_i];
	struct zm_arch *a = conv_arch(k);
	const struct zm_layer_spec *s = &a->layers[0];
	struct zm_conv_geom g;
	struct zm_rng r;
	size_t n = 7, nx, ny, nw, i;
	float *x, *w, *b, *y, *scr;
	double *ref;

	zm_conv_geom_of(s, &g);
	/* Output sizes as PyTorch computes them. */
	if (k->same) {
		ck_assert_uint_eq(g.oh, (size_t)(k->h + k->sh - 1) / k->sh);
		ck_assert_uint_eq(g.ow, (size_t)(k->w + k->sw - 1) / k->sw);
	} else {
		ck_assert_uint_eq(g.oh, (size_t)(k->h - k->kh) / k->sh + 1);
		ck_assert_uint_eq(g.ow, (size_t)(k->w - k->kw) / k->sw + 1);
	}
	nx = n * s->in_features;
	ny = n * s->out_features;
	nw = s->n_weight;
	ck_assert_uint_eq(nw, (size_t)(k->oc * k->c * k->kh * k->kw));
	x = malloc(nx * sizeof(*x));
	w = malloc(nw * sizeof(*w));
	b = malloc(g.oc * sizeof(*b));
	y = malloc(ny * sizeof(*y));
	ref = malloc(ny * sizeof(*ref));
	scr = malloc(zm_conv_scratch_floats(&g, n, false) * sizeof(float));
	zm_rng_seed(&r, 11 + (uint64_t)_i);
	fill(&r, x, nx);
	fill(&r, w, nw);
	fill(&r, b, g.oc);
	zm_conv_forward(&g, w, b, x, n, y, scr);
	naive_conv(&g, w, b, x, n, ref);
	for (i = 0; i < ny; i++)
		ck_assert_msg(fabs(y[i] - ref[i]) < 1e-4 * (1 + fabs(ref[i])),
		              "case %d elem %zu: %g vs %g", _i, i, y[i], ref[i]);
	free(x); free(w); free(b); free(y); free(ref); free(scr);
	zm_arch_free(a);
}
END_TEST

/* <im2col(x), c> = <x, col2im(c)>: col2im is im2col's adjoint. */
START_TEST(test_im2col_adjoint)
{
	const struct geom_case *k = &cases[_i];
	struct zm_arch *a = conv_arch(k);
	struct zm_conv_geom g;
	struct zm_rng r;
	size_t n = 3, nx, nc, i, K;
	float *x, *col, *c2, *dx;
	double lhs = 0, rhs = 0;

	zm_conv_geom_of(&a->layers[0], &g);
	K = g.c * g.kh * g.kw;
	nx = n * g.c * g.h * g.w;
	nc = K * n * g.oh * g.ow;
	x = malloc(nx * sizeof(*x));
	dx = calloc(nx, sizeof(*dx));
	col = malloc(nc * sizeof(*col));
	c2 = malloc(nc * sizeof(*c2));
	zm_rng_seed(&r, 5);
	fill(&r, x, nx);
	fill(&r, c2, nc);
	zm_im2col(&g, x, n, col, n * g.oh * g.ow);
	zm_col2im(&g, c2, n * g.oh * g.ow, n, dx);
	for (i = 0; i < nc; i++)
		lhs += (double)col[i] * c2[i];
	for (i = 0; i < nx; i++)
		rhs += (double)x[i] * dx[i];
	ck_assert_msg(fabs(lhs - rhs) < 1e-4 * (1 + fabs(lhs)),
	              "case %d: %g vs %g", _i, lhs, rhs);
	free(x); free(dx); free(col); free(c2);
	zm_arch_free(a);
}
END_TEST

/*
 * L = sum(gy * conv(x, w, b)) is linear in each of x, w, b, so central
 * differences are exact up to rounding; compare every gradient element.
 */
START_TEST(test_conv_backward_fd)
{
	const struct geom_case *k = &cases[_i];
	struct zm_arch *a = conv_arch(k);
	const struct zm_layer_spec *s = &a->layers[0];
	struct zm_conv_geom g;
	struct zm_rng r;
	size_t n = 3, nx, ny, nw, i, j;
	float *x, *w, *b, *y, *gy, *dw, *db, *dx, *scr;
	const float eps = 0.5f;

	zm_conv_geom_of(s, &g);
	nx = n * s->in_features;
	ny = n * s->out_features;
	nw = s->n_weight;
	x = malloc(nx * sizeof(*x));
	w = malloc(nw * sizeof(*w));
	b = malloc(g.oc * sizeof(*b));
	y = malloc(ny * sizeof(*y));
	gy = malloc(ny * sizeof(*gy));
	dw = malloc(nw * sizeof(*dw));
	db = malloc(g.oc * sizeof(*db));
	dx = malloc(nx * sizeof(*dx));
	scr = malloc(zm_conv_scratch_floats(&g, n, true) * sizeof(float));
	zm_rng_seed(&r, 3 + (uint64_t)_i);
	fill(&r, x, nx);
	fill(&r, w, nw);
	fill(&r, b, g.oc);
	fill(&r, gy, ny);
	zm_conv_backward(&g, w, x, n, gy, dw, db, 0.0f, dx, scr);

#define LOSS(out) do {                                                  \
		double s_ = 0;                                            \
		zm_conv_forward(&g, w, b, x, n, y, scr);                  \
		for (j = 0; j < ny; j++)                                  \
			s_ += (double)gy[j] * y[j];                       \
		(out) = s_;                                               \
	} while (0)
#define CHECK_FD(arr, cnt, grad, what) do {                             \
		for (i = 0; i < (cnt); i++) {                             \
			float keep = (arr)[i];                            \
			double lp, lm, fd;                                \
			(arr)[i] = keep + eps;                            \
			LOSS(lp);                                         \
			(arr)[i] = keep - eps;                            \
			LOSS(lm);                                         \
			(arr)[i] = keep;                                  \
			fd = (lp - lm) / (2.0 * eps);                     \
			ck_assert_msg(fabs(fd - (grad)[i]) <              \
			              2e-3 * (1 + fabs(fd)),              \
			              "case %d %s[%zu]: %g vs fd %g", _i, \
			              what, i, (grad)[i], fd);            \
		}                                                         \
	} while (0)
	CHECK_FD(w, nw, dw, "dw");
	CHECK_FD(b, g.oc, db, "db");
	CHECK_FD(x, nx, dx, "dx");

	/* beta 1 accumulates: a second call doubles dw and db. */
	{
		float *dw2 = malloc(nw * sizeof(*dw2)), db2[16];
		memcpy(dw2, dw, nw * sizeof(*dw2));
		memcpy(db2, db, g.oc * sizeof(*db2));
		zm_conv_backward(&g, w, x, n, gy, dw2, db2, 1.0f, NULL, scr);
		for (i = 0; i < nw; i++)
			ck_assert(fabsf(dw2[i] - 2 * dw[i]) <
			          1e-4f * (1 + fabsf(dw[i])));
		for (i = 0; i < g.oc; i++)
			ck_assert(fabsf(db2[i] - 2 * db[i]) <
			          1e-4f * (1 + fabsf(db[i])));
		free(dw2);
	}
	free(x); free(w); free(b); free(y); free(gy); free(dw); free(db);
	free(dx); free(scr);
	zm_arch_free(a);
}
END_TEST

/* Pool windows: size, stride over a [c, h, w] input. */
static const int pool_cases[][5] = {
	{ 2, 6, 6, 2, 2 },
	{ 3, 7, 5, 2, 2 },   /* odd sizes drop the last row/column */
	{ 1, 7, 7, 3, 2 },   /* overlapping windows */
	{ 2, 8, 6, 2, 3 },   /* gaps between windows */
	{ 2, 28, 28, 2, 2 }, /* the 2x2 stride-2 kernel's 4-wide path */
	{ 3, 13, 17, 2, 2 }, /* and its tails */
};

START_TEST(test_maxpool_fd)
{
	const int *k = pool_cases[_i];
	char yaml[256];
	struct zm_arch *a;
	struct zm_conv_geom g;
	struct zm_rng r;
	size_t n = 2, nx, ny, i, j, q;
	float *x, *y, *gy, *dx;
	const float eps = 1e-3f;

	snprintf(yaml, sizeof(yaml),
	         "input: [%d, %d, %d]\nlayers:\n"
	         "  - {name: p, type: maxpool2d, size: %d, stride: %d}\n"
	         "  - {name: o, units: 2}\n", k[0], k[1], k[2], k[3], k[4]);
	a = unit_arch(yaml);
	zm_conv_geom_of(&a->layers[0], &g);
	ck_assert_uint_eq(g.oh, (size_t)(k[1] - k[3]) / k[4] + 1);
	ck_assert_str_eq(a->layers[0].group, "maxpool2d");
	nx = n * a->layers[0].in_features;
	ny = n * a->layers[0].out_features;
	x = malloc(nx * sizeof(*x));
	y = malloc(ny * sizeof(*y));
	gy = malloc(ny * sizeof(*gy));
	dx = malloc(nx * sizeof(*dx));
	/* No ties: a shuffled ramp with gaps of 0.01, far above eps. */
	zm_rng_seed(&r, 9);
	for (i = 0; i < nx; i++)
		x[i] = 0.01f * (float)i;
	for (i = nx; i-- > 1;) {
		float t;
		q = (size_t)(zm_rng_uniform(&r) * (double)(i + 1));
		if (q > i)
			q = i;
		t = x[i]; x[i] = x[q]; x[q] = t;
	}
	fill(&r, gy, ny);
	zm_maxpool_forward(&g, x, n, y);
	/* The max against a direct scan of each window. */
	for (i = 0; i < n * g.c; i++)
		for (q = 0; q < g.oh * g.ow; q++) {
			size_t oy = q / g.ow, ox = q % g.ow, u, v;
			float m = -1e30f;
			for (u = 0; u < g.kh; u++)
				for (v = 0; v < g.kw; v++) {
					float e = x[i * g.h * g.w +
					            (oy * g.sh + u) * g.w +
					            ox * g.sw + v];
					if (e > m)
						m = e;
				}
			ck_assert(y[i * g.oh * g.ow + q] == m);
		}
	zm_maxpool_backward(&g, x, n, gy, dx);
	for (i = 0; i < nx; i++) {
		float keep = x[i];
		double lp = 0, lm = 0, fd;
		x[i] = keep + eps;
		zm_maxpool_forward(&g, x, n, y);
		for (j = 0; j < ny; j++)
			lp += (double)gy[j] * y[j];
		x[i] = keep - eps;
		zm_maxpool_forward(&g, x, n, y);
		for (j = 0; j < ny; j++)
			lm += (double)gy[j] * y[j];
		x[i] = keep;
		fd = (lp - lm) / (2.0 * eps);
		ck_assert_msg(fabs(fd - dx[i]) < 1e-2 * (1 + fabs(fd)),
		              "case %d dx[%zu]: %g vs fd %g", _i, i, dx[i], fd);
	}
	free(x); free(y); free(gy); free(dx);
	zm_arch_free(a);
}
END_TEST

/*
 * A whole model (conv tanh, maxpool, conv stride 2 sigmoid, flatten,
 * dense) through zm_model_backward, each parameter's gradient against
 * central differences of the mean cross-entropy.
 */
START_TEST(test_model_fd)
{
	struct zm_arch *a = unit_arch(
		"input: [2, 9, 8]\n"
		"layers:\n"
		"  - {name: c1, type: conv2d, filters: 3, kernel: 3, "
		"padding: same, activation: tanh}\n"
		"  - {name: p1, type: maxpool2d, size: 2}\n"
		"  - {name: c2, type: conv2d, filters: 4, kernel: [2, 3], "
		"stride: 2, activation: sigmoid}\n"
		"  - {name: f, type: flatten}\n"
		"  - {name: o, units: 3}\n");
	struct zm_model *m;
	struct zm_workspace *ws;
	struct zm_error err;
	struct zm_rng r;
	size_t n = 4, i, l;
	float *x, *d;
	int64_t y[4] = { 0, 2, 1, 2 };
	const float eps = 2e-3f;

	ck_assert_int_eq(zm_model_new(a, 7, &m, &err), ZM_OK);
	ck_assert_int_eq(zm_workspace_new(a, n, true, &ws, &err), ZM_OK);
	ck_assert_str_eq(a->layers[1].group, "conv");
	ck_assert_str_eq(a->layers[3].group, "conv");
	ck_assert_int_eq(m->layers[2].weight.ndim, 4);
	ck_assert_int_eq(m->layers[2].weight.shape[2], 2);
	x = malloc(n * a->input_features * sizeof(*x));
	d = malloc(n * 3 * sizeof(*d));
	zm_rng_seed(&r, 1);
	fill(&r, x, n * a->input_features);
	for (l = 0; l < a->n_layers; l++)
		if (a->layers[l].has_params)
			fill(&r, m->layers[l].bias.data, a->layers[l].n_bias);
	ck_assert_int_eq(zm_loss_cross_entropy(zm_model_forward(m, ws, x, n),
	                 y, n, 3, NULL, NULL, d, &err), ZM_OK);
	zm_model_backward(m, ws, x, n, d);
	for (l = 0; l < a->n_layers; l++) {
		struct zm_layer *ly = &m->layers[l];
		int part;
		if (!ly->spec->has_params)
			continue;
		for (part = 0; part < 2; part++) {
			float *p = part ? ly->bias.data : ly->weight.data;
			const float *gr = part ? ws->db[l] : ws->dw[l];
			size_t cnt = part ? ly->spec->n_bias : ly->spec->n_weight;
			for (i = 0; i < cnt; i++) {
				float keep = p[i];
				double lp = 0, lm = 0, fd;
				p[i] = keep + eps;
				zm_loss_cross_entropy(zm_model_forward(m, ws, x, n),
				                      y, n, 3, &lp, NULL, NULL, &err);
				p[i] = keep - eps;
				zm_loss_cross_entropy(zm_model_forward(m, ws, x, n),
				                      y, n, 3, &lm, NULL, NULL, &err);
				p[i] = keep;
				fd = (lp - lm) / (2.0 * eps * (double)n);
				ck_assert_msg(fabs(fd - gr[i]) <
				              2e-3 + 2e-2 * fabs(fd),
				              "%s %s[%zu]: %g vs fd %g",
				              ly->spec->name, part ? "b" : "w", i,
				              gr[i], fd);
			}
		}
	}
	free(x); free(d);
	zm_workspace_free(ws);
	zm_model_free(m);
	zm_arch_free(a);
}
END_TEST

START_TEST(test_parse_tf_net)
{
	struct zm_arch *a = unit_arch(
		"input: [1, 28, 28]\n"
		"layers:\n"
		"  - {name: conv1, type: conv2d, filters: 32, kernel: 5, "
		"padding: same, activation: relu}\n"
		"  - {name: pool1, type: maxpool2d, size: 2}\n"
		"  - {name: conv2, type: conv2d, filters: 64, kernel: 5, "
		"padding: same, activation: relu}\n"
		"  - {name: pool2, type: maxpool2d, size: 2}\n"
		"  - {name: flat, type: flatten}\n"
		"  - {name: fc1, units: 1024, activation: relu}\n"
		"  - {name: out, units: 10}\n");
	struct zm_arch *b;
	struct zm_buf buf;
	struct zm_error err;
	struct zm_model *m;

	ck_assert_int_eq(a->layers[0].out_shape[0], 32);
	ck_assert_int_eq(a->layers[0].out_shape[1], 28);
	ck_assert_int_eq(a->layers[0].pad[0], 2);
	ck_assert_uint_eq(a->layers[1].out_features, 32 * 14 * 14);
	ck_assert_uint_eq(a->layers[3].out_features, 64 * 7 * 7);
	ck_assert_uint_eq(a->layers[5].in_features, 3136);
	ck_assert_str_eq(a->layers[0].group, "conv");
	ck_assert_str_eq(a->layers[1].group, "conv");
	ck_assert_str_eq(a->layers[4].group, "conv");
	ck_assert_str_eq(a->layers[5].group, "dense");
	ck_assert_uint_eq(zm_arch_param_count(a),
	                  32 * 25 + 32 + 64 * 32 * 25 + 64 + 3136 * 1024 +
	                  1024 + 10240 + 10);
	zm_buf_init(&buf);
	zm_arch_to_json(a, &buf);
	ck_assert(!buf.failed);
	ck_assert_int_eq(zm_arch_parse_json(buf.data, buf.len, "j", &b, &err),
	                 ZM_OK);
	ck_assert(zm_arch_equal(a, b));
	zm_buf_release(&buf);
	ck_assert_int_eq(zm_model_new(a, 1, &m, &err), ZM_OK);
	ck_assert_int_eq(m->layers[2].weight.ndim, 4);
	ck_assert_int_eq(m->layers[2].weight.shape[0], 64);
	ck_assert_int_eq(m->layers[2].weight.shape[1], 32);
	ck_assert_int_eq(m->layers[2].bias.shape[0], 64);
	zm_model_free(m);
	/* A different stride is a different architecture. */
	b->layers[2].stride[0] = 2;
	ck_assert(!zm_arch_equal(a, b));
	ck_assert_int_eq(zm_model_same_arch(a, b, &err), ZM_ERR_DATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "stride"));
	zm_arch_free(b);
	zm_arch_free(a);
}
END_TEST

static const struct {
	const char *yaml, *msg;
} bad[] = {
	{ "input: [784]\nlayers:\n  - {name: c, type: conv2d, filters: 2, "
	  "kernel: 3}\n  - {name: o, units: 2}\n", "[channels, height, width]" },
	{ "input: [1, 4, 4]\nlayers:\n  - {name: c, type: conv2d, kernel: 3}\n"
	  "  - {name: o, units: 2}\n", "missing 'filters'" },
	{ "input: [1, 4, 4]\nlayers:\n  - {name: c, type: conv2d, filters: 2}\n"
	  "  - {name: o, units: 2}\n", "missing 'kernel'" },
	{ "input: [1, 4, 4]\nlayers:\n  - {name: c, type: conv2d, filters: 2, "
	  "kernel: 5}\n  - {name: o, units: 2}\n", "larger than its input" },
	{ "input: [1, 4, 4]\nlayers:\n  - {name: c, type: conv2d, filters: 2, "
	  "kernel: 3, padding: full}\n  - {name: o, units: 2}\n",
	  "expected same or valid" },
	{ "input: [1, 4, 4]\nlayers:\n  - {name: c, type: conv2d, filters: 2, "
	  "kernel: [1, 2, 3]}\n  - {name: o, units: 2}\n", "list of two" },
	{ "input: [1, 4, 4]\nlayers:\n  - {name: p, type: maxpool2d, size: 2, "
	  "activation: relu}\n  - {name: o, units: 2}\n",
	  "maxpool2d takes no 'activation'" },
	{ "input: [1, 4, 4]\nlayers:\n  - {name: o, units: 2, kernel: 3}\n",
	  "dense takes no 'kernel'" },
	{ "input: [1, 4, 4]\nlayers:\n  - {name: c, type: conv2d, filters: 0, "
	  "kernel: 3}\n  - {name: o, units: 2}\n", "filters" },
	{ "input: [1, 4, 4]\nlayers:\n  - {name: c, type: conv2d, filters: 2, "
	  "kernel: 3, stride: 0}\n  - {name: o, units: 2}\n", "stride" },
};

START_TEST(test_parse_errors)
{
	struct zm_error err;

	ck_assert_int_eq(arch_error(bad[_i].yaml, &err), ZM_ERR_CONFIG);
	ck_assert_msg(strstr(err.msg, bad[_i].msg) != NULL, "case %d: '%s'",
	              _i, err.msg);
	ck_assert_msg(strncmp(err.msg, "arch.yaml:", 10) == 0, "%s", err.msg);
}
END_TEST

Suite *suite_conv(void)
{
	Suite *s = suite_create("conv");
	TCase *tc = tcase_create("conv");
	int nc = (int)(sizeof(cases) / sizeof(cases[0]));

	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_conv_forward_naive, 0, nc);
	tcase_add_loop_test(tc, test_im2col_adjoint, 0, nc);
	tcase_add_loop_test(tc, test_conv_backward_fd, 0, nc - 1);
	tcase_add_loop_test(tc, test_maxpool_fd, 0,
	                    (int)(sizeof(pool_cases) / sizeof(pool_cases[0])));
	tcase_add_test(tc, test_model_fd);
	tcase_add_test(tc, test_parse_tf_net);
	tcase_add_loop_test(tc, test_parse_errors, 0,
	                    (int)(sizeof(bad) / sizeof(bad[0])));
	suite_add_tcase(s, tc);
	return s;
}
