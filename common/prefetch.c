/*
 * The reader thread of prefetch.h: one mutex and one condition variable
 * over two sequence numbers, the pieces read and the pieces handed back.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "prefetch.h"

struct zm_prefetch {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	zm_prefetch_fn fn;
	void *ctx;
	size_t slots;
	size_t produced;        /* pieces read */
	size_t taken;           /* pieces taken by the consumer */
	size_t returned;        /* pieces whose place was handed back */
	bool finished;          /* the end or an error follows `produced` */
	bool stop;
	enum zm_status st;      /* ZM_OK at the end, else the error */
	struct zm_error err;
};

static void *prefetch_main(void *arg)
{
	struct zm_prefetch *p = arg;
	size_t seq = 0;

	for (;;) {
		struct zm_error err;
		enum zm_status st;
		bool eof = false;

		pthread_mutex_lock(&p->mu);
		while (!p->stop && seq >= p->returned + p->slots)
			pthread_cond_wait(&p->cv, &p->mu);
		pthread_mutex_unlock(&p->mu);
		if (p->stop)
			break;
		zm_error_clear(&err);
		st = p->fn(p->ctx, seq % p->slots, &eof, &err);
		pthread_mutex_lock(&p->mu);
		if (st != ZM_OK || eof) {
			p->finished = true;
			p->st = st;
			p->err = err;
		} else {
			p->produced = ++seq;
		}
		pthread_cond_broadcast(&p->cv);
		pthread_mutex_unlock(&p->mu);
		if (st != ZM_OK || eof)
			break;
	}
	return NULL;
}

enum zm_status zm_prefetch_start(struct zm_prefetch **out, size_t slots,
                                 zm_prefetch_fn fn, void *ctx,
                                 struct zm_error *err)
{
	struct zm_prefetch *p;

	*out = NULL;
	ZM_ASSERT(slots > 0 && fn != NULL);
	if (!(p = zm_calloc(1, sizeof(*p))))
		return zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
	p->fn = fn;
	p->ctx = ctx;
	p->slots = slots;
	if (pthread_mutex_init(&p->mu, NULL) != 0) {
		free(p);
		return zm_error_set(err, ZM_ERR_NOMEM, "cannot start the reader "
		                    "thread");
	}
	if (pthread_cond_init(&p->cv, NULL) != 0) {
		pthread_mutex_destroy(&p->mu);
		free(p);
		return zm_error_set(err, ZM_ERR_NOMEM, "cannot start the reader "
		                    "thread");
	}
	if (pthread_create(&p->thread, NULL, prefetch_main, p) != 0) {
		pthread_cond_destroy(&p->cv);
		pthread_mutex_destroy(&p->mu);
		free(p);
		return zm_error_set(err, ZM_ERR_NOMEM, "cannot start the reader "
		                    "thread");
	}
	*out = p;
	return ZM_OK;
}

enum zm_status zm_prefetch_take(struct zm_prefetch *p, size_t *slot,
                                bool *eof, struct zm_error *err)
{
	enum zm_status st = ZM_OK;

	*eof = false;
	pthread_mutex_lock(&p->mu);
	ZM_ASSERT(p->returned == p->taken);
	while (p->produced <= p->taken && !p->finished)
		pthread_cond_wait(&p->cv, &p->mu);
	if (p->produced > p->taken) {
		*slot = p->taken % p->slots;
		p->taken++;
	} else if (p->st != ZM_OK) {
		st = p->st;
		if (err)
			*err = p->err;
	} else {
		*eof = true;
	}
	pthread_mutex_unlock(&p->mu);
	return st;
}

void zm_prefetch_done(struct zm_prefetch *p)
{
	pthread_mutex_lock(&p->mu);
	p->returned = p->taken;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

void zm_prefetch_free(struct zm_prefetch *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	pthread_join(p->thread, NULL);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p);
}
