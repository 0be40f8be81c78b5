/* Asynchronous requests: a completion context per thread (an io_uring when
 * the host has one, an eventfd, a list of finished requests) and one worker
 * pool for the process that runs the synchronous verbs of drivers without a
 * native path.
 *
 * Invariants:
 *  (1) only the owning thread submits, reaps and touches the ring and
 *      in_flight; workers touch a context only through blk_aio_complete,
 *      under its lock;
 *  (2) a request is counted in in_flight from a successful submit until
 *      its done callback is about to run, and done runs only from
 *      blk_aio_reap (or drain) on the owning thread;
 *  (3) the eventfd is readable while a finished request waits: the ring
 *      signals it for every CQE, and blk_aio_complete writes it while
 *      holding the lock, so a context freed right after reaping is never
 *      written afterwards.
 *
 * Request fields: priv[0] is the context, priv[1] the ring hook or worker
 * function (aio.c's); priv[2] and priv[3] belong to the driver that put the
 * request on the ring. */
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "blk_int.h"
#include "log.h"
#include "util.h"

#define MAX_DEPTH 4096
#define POOL_MAX_THREADS 32
#define POOL_IDLE_SEC 10
#define PROBE_BYTES 512           /* blk.c's probed-raw guard covers these */

struct blk_aio {
	unsigned depth;
	unsigned in_flight;
	int efd;
	bool has_ring;
	struct io_uring ring;
	pthread_mutex_t lock;
	struct blk_req *done_head, *done_tail;   /* finished off the ring, under lock */
};

/* The worker pool is the one process-wide piece of state: threads are a
 * process resource, and a VMM with many disks and I/O threads should share
 * a few dozen rather than own a pool per context. */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t work;
	struct blk_req *head, *tail;
	unsigned queued, threads, idle;
} pool = { .lock = PTHREAD_MUTEX_INITIALIZER, .work = PTHREAD_COND_INITIALIZER };

union fn_ptr {
	void *p;
	blk_ring_hook *hook;
	blk_req_fn *fn;
};

/* ---- contexts ---- */

static int aio_new(struct blk_aio **out, unsigned depth, bool ring, char *err, size_t errlen)
{
	struct blk_aio *a;
	int r;

	if (!depth || depth > MAX_DEPTH) {
		errf(err, errlen, "aio depth %u out of range 1..%u", depth, MAX_DEPTH);
		return -EINVAL;
	}
	a = calloc(1, sizeof(*a));
	if (!a) {
		errf(err, errlen, "aio context: out of memory");
		return -ENOMEM;
	}
	a->depth = depth;
	a->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (a->efd < 0) {
		r = -errno;
		errf(err, errlen, "aio context: eventfd: %s", strerror(-r));
		free(a);
		return r;
	}
	pthread_mutex_init(&a->lock, NULL);
	if (ring) {
		r = io_uring_queue_init(depth, &a->ring, 0);
		if (r == 0) {
			r = io_uring_register_eventfd(&a->ring, a->efd);
			if (r < 0)
				io_uring_queue_exit(&a->ring);
		}
		if (r < 0)
			log_debug("no io_uring (%s): requests run on worker threads",
				  strerror(-r));
		a->has_ring = r == 0;
	}
	*out = a;
	return 0;
}

int blk_aio_new(struct blk_aio **out, unsigned depth, char *err, size_t errlen)
{
	return aio_new(out, depth, true, err, errlen);
}

int blk_aio_new_threads(struct blk_aio **out, unsigned depth, char *err, size_t errlen)
{
	return aio_new(out, depth, false, err, errlen);
}

void blk_aio_free(struct blk_aio *a)
{
	if (!a)
		return;
	if (a->in_flight) {
		log_warn("aio context freed with %u requests in flight: draining", a->in_flight);
		blk_aio_drain(a);
	}
	if (a->has_ring)
		io_uring_queue_exit(&a->ring);
	close(a->efd);
	pthread_mutex_destroy(&a->lock);
	free(a);
}

int blk_aio_fd(const struct blk_aio *a)
{
	return a->efd;
}

unsigned blk_aio_in_flight(const struct blk_aio *a)
{
	return a->in_flight;
}

struct io_uring *blk_aio_ring(struct blk_aio *a)
{
	return a->has_ring ? &a->ring : NULL;
}

/* ---- completion ---- */

void blk_aio_complete(struct blk_aio *a, struct blk_req *req, int ret)
{
	uint64_t one = 1;

	req->ret = ret;
	req->next = NULL;
	pthread_mutex_lock(&a->lock);
	if (a->done_tail)
		a->done_tail->next = req;
	else
		a->done_head = req;
	a->done_tail = req;
	/* invariant (3): the write happens before the owner can see req */
	if (write(a->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_warn("aio context: eventfd write: %s", strerror(errno));
	pthread_mutex_unlock(&a->lock);
}

static void ring_submit(struct blk_aio *a)
{
	for (int tries = 0; io_uring_sq_ready(&a->ring) && tries < 3; tries++) {
		int r = io_uring_submit(&a->ring);

		/* what stays queued goes with the next submit or reap */
		if (r >= 0 || (r != -EINTR && r != -EAGAIN && r != -EBUSY))
			break;
	}
}

void blk_aio_ring_added_hook(struct blk_aio *a, struct blk_req *req, blk_ring_hook *hook)
{
	req->priv[0] = a;
	req->priv[1] = (union fn_ptr){ .hook = hook }.p;
	ring_submit(a);
}

void blk_aio_ring_added(struct blk_aio *a, struct blk_req *req)
{
	blk_aio_ring_added_hook(a, req, NULL);
}

/* Collects the ring's finished requests onto *tail, without running their
 * callbacks: a hook may pass a request on instead. */
static struct blk_req **ring_collect(struct blk_aio *a, struct blk_req **tail)
{
	struct io_uring_cqe *cqe;
	unsigned head, seen = 0;

	io_uring_for_each_cqe(&a->ring, head, cqe) {
		struct blk_req *req = io_uring_cqe_get_data(cqe);
		union fn_ptr f = { .p = req->priv[1] };
		int ret = cqe->res;

		seen++;
		if (f.hook) {
			ret = f.hook(a, req, ret);
			if (ret == BLK_AIO_HANDED_ON)
				continue;
		}
		req->ret = ret > 0 ? 0 : ret;
		req->next = NULL;
		*tail = req;
		tail = &req->next;
	}
	io_uring_cq_advance(&a->ring, seen);
	return tail;
}

unsigned blk_aio_reap(struct blk_aio *a)
{
	struct blk_req *list = NULL, **tail = &list, *req, *next;
	uint64_t v;
	unsigned n = 0;

	/* cleared first: whatever finishes from here on sets it again */
	while (read(a->efd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
	if (a->has_ring) {
		ring_submit(a);
		tail = ring_collect(a, tail);
	}
	pthread_mutex_lock(&a->lock);
	*tail = a->done_head;
	a->done_head = a->done_tail = NULL;
	pthread_mutex_unlock(&a->lock);
	for (req = list; req; req = next) {
		next = req->next;
		a->in_flight--;
		n++;
		req->done(req, req->ret);
	}
	return n;
}

void blk_aio_drain(struct blk_aio *a)
{
	while (a->in_flight) {
		struct pollfd p = { .fd = a->efd, .events = POLLIN };

		if (blk_aio_reap(a))
			continue;
		if (poll(&p, 1, -1) < 0 && errno != EINTR) {
			log_error("aio context: poll: %s", strerror(errno));
			return;
		}
	}
}

/* ---- the worker pool ---- */

/* The synchronous verb for a request (it checks again what submit did). */
static int run_sync(struct blk_req *req)
{
	struct blk *b = req->node;

	switch (req->op) {
	case BLK_OP_READ:
		return blk_preadv(b, req->offset, req->iov, req->iovcnt);
	case BLK_OP_WRITE:
		return blk_pwritev(b, req->offset, req->iov, req->iovcnt, req->flags);
	case BLK_OP_FLUSH:
		return blk_flush(b);
	case BLK_OP_DISCARD:
		return blk_discard(b, req->offset, req->len);
	case BLK_OP_WRITE_ZEROES:
		return blk_write_zeroes(b, req->offset, req->len, req->flags);
	}
	return -EINVAL;
}

static void *worker_main(void *unused)
{
	pthread_mutex_lock(&pool.lock);
	for (;;) {
		struct blk_req *req;
		union fn_ptr f;
		int ret;

		while (!pool.head) {
			struct timespec until;
			int r;

			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_sec += POOL_IDLE_SEC;
			pool.idle++;
			r = pthread_cond_timedwait(&pool.work, &pool.lock, &until);
			pool.idle--;
			if (r == ETIMEDOUT && !pool.head) {
				pool.threads--;
				pthread_mutex_unlock(&pool.lock);
				return NULL;
			}
		}
		req = pool.head;
		pool.head = req->next;
		if (!pool.head)
			pool.tail = NULL;
		pool.queued--;
		pthread_mutex_unlock(&pool.lock);

		f.p = req->priv[1];
		ret = f.fn ? f.fn(req) : run_sync(req);
		blk_aio_complete(req->priv[0], req, ret);
		pthread_mutex_lock(&pool.lock);
	}
}

/* Called with pool.lock held. Workers block every signal: the program's
 * signals belong to its own threads. */
static int worker_start(void)
{
	pthread_attr_t attr;
	sigset_t all, old;
	pthread_t t;
	int r;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&t, &attr, worker_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (r == 0)
		pool.threads++;
	return -r;
}

int blk_aio_offload(struct blk_aio *a, struct blk_req *req, blk_req_fn *fn)
{
	int r = 0;

	req->priv[0] = a;
	req->priv[1] = (union fn_ptr){ .fn = fn }.p;
	req->next = NULL;
	pthread_mutex_lock(&pool.lock);
	if (pool.queued + 1 > pool.idle && pool.threads < POOL_MAX_THREADS) {
		r = worker_start();
		if (r < 0 && pool.threads) {
			log_debug("aio: starting a worker: %s; queueing", strerror(-r));
			r = 0;
		}
	}
	if (r == 0) {
		if (pool.tail)
			pool.tail->next = req;
		else
			pool.head = req;
		pool.tail = req;
		pool.queued++;
		pthread_cond_signal(&pool.work);
	}
	pthread_mutex_unlock(&pool.lock);
	return r;
}

/* ---- submission ---- */

static bool is_write(enum blk_op op)
{
	return op == BLK_OP_WRITE || op == BLK_OP_DISCARD || op == BLK_OP_WRITE_ZEROES;
}

/* What blk.c's synchronous wrappers check, done before accepting the
 * request so that a bad one fails at submit. */
static int check_req(struct blk *b, struct blk_req *req)
{
	switch (req->op) {
	case BLK_OP_READ:
	case BLK_OP_WRITE:
		if (req->iovcnt < 0 || (req->iovcnt && !req->iov))
			return -EINVAL;
		req->len = blk_iov_size(req->iov, req->iovcnt);
		break;
	case BLK_OP_FLUSH:
		return 0;
	case BLK_OP_DISCARD:
	case BLK_OP_WRITE_ZEROES:
		break;
	default:
		return -EINVAL;
	}
	if (is_write(req->op) && b->readonly)
		return -EROFS;
	if (req->offset > INT64_MAX || req->len > INT64_MAX - req->offset)
		return -EINVAL;
	if (!b->drv->protocol && req->offset + req->len > blk_size(b))
		return -EINVAL;
	return 0;
}

/* Requests whose synchronous verb does more than the native path would. */
static bool needs_sync_path(const struct blk *b, const struct blk_req *req)
{
	bool writethrough = b->cache == BLK_CACHE_WRITETHROUGH ||
			    b->cache == BLK_CACHE_DIRECTSYNC;

	if (req->op == BLK_OP_WRITE && b->probed_raw && req->offset < PROBE_BYTES)
		return true;        /* the probed-raw guard on block 0 */
	if (req->op == BLK_OP_WRITE_ZEROES && writethrough)
		return true;        /* flushed after zeroing */
	return false;
}

int blk_aio_submit(struct blk *b, struct blk_aio *a, struct blk_req *req)
{
	int r;

	if (a->in_flight >= a->depth)
		return -EAGAIN;
	if (!req->done)
		return -EINVAL;
	r = check_req(b, req);
	if (r < 0)
		return r;
	req->node = b;
	req->ret = 0;
	req->next = NULL;
	if (b->cache == BLK_CACHE_UNSAFE)
		req->flags &= ~BLK_WRITE_FUA;
	else if (req->op == BLK_OP_WRITE && (b->cache == BLK_CACHE_WRITETHROUGH ||
					     b->cache == BLK_CACHE_DIRECTSYNC))
		req->flags |= BLK_WRITE_FUA;
	if ((req->op == BLK_OP_FLUSH && (b->cache == BLK_CACHE_UNSAFE || b->readonly)) ||
	    (req->op != BLK_OP_FLUSH && req->len == 0)) {
		a->in_flight++;
		blk_aio_complete(a, req, 0);
		return 0;
	}
	r = -ENOTSUP;
	if (b->drv->aio_submit && !needs_sync_path(b, req))
		r = b->drv->aio_submit(b, a, req);
	if (r == -ENOTSUP)
		r = blk_aio_offload(a, req, NULL);
	if (r == 0)
		a->in_flight++;
	return r;
}

/* ---- requests a driver splits ---- */

void blk_aio_count_child(struct blk_aio *a)
{
	a->in_flight++;
}

void blk_aio_complete_parent(struct blk_aio *a, struct blk_req *req, int ret)
{
	/* invariant (2): we run inside blk_aio_reap, in the done callback of
	 * the last child, whose reaping ended the parent's count */
	(void)a;
	req->ret = ret;
	req->done(req, ret);
}
