/* Asynchronous requests (storage/aio.c with file.c's io_uring path):
 * many requests in flight through the ring and through the worker pool,
 * callbacks only from blk_aio_reap on the submitting thread, the eventfd
 * readable exactly when completions wait, the depth limit, drain, requests
 * finishing out of order, errors at submit and at completion, short reads
 * at the end of a file, O_DIRECT requests that need a bounce, discard and
 * zeroes, and callbacks that submit again. A fake driver without a native
 * path stands for the drivers that run on workers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "blk.h"
#include "blk_int.h"
#include "blk_testutil.h"
#include "util.h"

struct tracked {
	struct blk_req req;
	struct iovec iov;
	uint8_t *buf;
	int ret;
	int order;                     /* completion rank, -1 until done */
	pthread_t thread;              /* where done ran */
	int *counter;
};

static void tracked_done(struct blk_req *req, int ret)
{
	struct tracked *t = req->opaque;

	t->ret = ret;
	t->order = (*t->counter)++;
	t->thread = pthread_self();
}

static void tracked_init(struct tracked *t, int *counter, enum blk_op op, uint64_t off,
			 uint8_t *buf, size_t len)
{
	memset(t, 0, sizeof(*t));
	t->buf = buf;
	t->iov = (struct iovec){ buf, len };
	t->req.op = op;
	t->req.offset = off;
	t->req.len = len;
	t->req.iov = &t->iov;
	t->req.iovcnt = buf ? 1 : 0;
	t->req.done = tracked_done;
	t->req.opaque = t;
	t->ret = 1;
	t->order = -1;
	t->counter = counter;
}

static struct blk_aio *new_ctx(bool ring, unsigned depth)
{
	struct blk_aio *a = NULL;
	char err[256] = "";

	if ((ring ? blk_aio_new : blk_aio_new_threads)(&a, depth, err, sizeof(err)) < 0)
		fail_msg("aio context: %s", err);
	return a;
}

static struct blk *open_img(const char *path, const char *fmt, enum blk_cache cache, bool ro)
{
	struct blk_open_opts o = { .format = fmt, .cache = cache, .readonly = ro };
	struct blk *b = NULL;
	char err[256] = "";

	if (blk_open(&b, path, &o, err, sizeof(err)) < 0)
		fail_msg("opening %s: %s", path, err);
	return b;
}

static bool fd_readable(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

/* 128 writes then 128 reads in flight at once, checked byte for byte. */
static void many_in_flight(const char *path, bool ring, enum blk_cache cache)
{
	enum { N = 128, LEN = 4096 };
	struct blk *b = open_img(path, "raw", cache, false);
	struct blk_aio *a = new_ctx(ring, N);
	struct tracked *t = calloc(N, sizeof(*t));
	uint8_t *bufs = aligned_alloc(4096, N * LEN);
	int done = 0;

	assert_int_equal(blk_aio_ring(a) != NULL, ring);
	for (int i = 0; i < N; i++) {
		memset(bufs + i * LEN, i + 1, LEN);
		tracked_init(&t[i], &done, BLK_OP_WRITE, (uint64_t)(N - 1 - i) * LEN,
			     bufs + i * LEN, LEN);
		assert_int_equal(blk_aio_submit(b, a, &t[i].req), 0);
	}
	assert_int_equal(blk_aio_in_flight(a), N);
	blk_aio_drain(a);
	assert_int_equal(blk_aio_in_flight(a), 0);
	assert_int_equal(done, N);
	for (int i = 0; i < N; i++) {
		assert_int_equal(t[i].ret, 0);
		assert_true(pthread_equal(t[i].thread, pthread_self()));
	}
	memset(bufs, 0, N * LEN);
	done = 0;
	for (int i = 0; i < N; i++) {
		tracked_init(&t[i], &done, BLK_OP_READ, (uint64_t)i * LEN, bufs + i * LEN, LEN);
		assert_int_equal(blk_aio_submit(b, a, &t[i].req), 0);
	}
	blk_aio_drain(a);
	for (int i = 0; i < N; i++) {
		assert_int_equal(t[i].ret, 0);
		assert_true(all_bytes(bufs + i * LEN, LEN, (uint8_t)(N - i)));
	}
	blk_aio_free(a);
	blk_close(b);
	free(t);
	free(bufs);
}

static void test_many_in_flight_on_the_ring(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX];

	scratch_path(s, "ring.raw", path);
	make_file(path, 1 * MiB, 0);
	many_in_flight(path, true, BLK_CACHE_WRITEBACK);
	many_in_flight(path, true, BLK_CACHE_NONE);
	many_in_flight(path, true, BLK_CACHE_DIRECTSYNC);
}

static void test_many_in_flight_on_workers(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX];

	scratch_path(s, "threads.raw", path);
	make_file(path, 1 * MiB, 0);
	many_in_flight(path, false, BLK_CACHE_WRITEBACK);
	many_in_flight(path, false, BLK_CACHE_NONE);
}

/* Nothing runs behind the owner's back: the eventfd says a completion
 * waits, the callback runs at reap, and the eventfd is quiet again. */
static void completions_wait_for_reap(const char *path, bool ring)
{
	struct blk *b = open_img(path, "raw", BLK_CACHE_WRITEBACK, false);
	struct blk_aio *a = new_ctx(ring, 4);
	uint8_t buf[512];
	struct tracked t;
	int done = 0;

	assert_false(fd_readable(blk_aio_fd(a), 0));
	tracked_init(&t, &done, BLK_OP_READ, 512, buf, sizeof(buf));
	assert_int_equal(blk_aio_submit(b, a, &t.req), 0);
	assert_true(fd_readable(blk_aio_fd(a), 5000));
	usleep(20000);
	assert_int_equal(done, 0);
	assert_int_equal(t.ret, 1);
	assert_int_equal(blk_aio_in_flight(a), 1);
	assert_int_equal(blk_aio_reap(a), 1);
	assert_int_equal(done, 1);
	assert_int_equal(t.ret, 0);
	assert_int_equal(buf[0], pattern_at(6, 512));
	assert_false(fd_readable(blk_aio_fd(a), 0));
	assert_int_equal(blk_aio_reap(a), 0);
	blk_aio_free(a);
	blk_close(b);
}

static void test_completions_wait_for_reap(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX];

	scratch_path(s, "reap.raw", path);
	make_file(path, 64 * KiB, 6);
	completions_wait_for_reap(path, true);
	completions_wait_for_reap(path, false);
}

static void test_depth_limit(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX], err[256] = "";
	struct blk *b;
	struct blk_aio *a;
	struct tracked t[5];
	uint8_t buf[5][512];
	int done = 0;

	scratch_path(s, "depth.raw", path);
	make_file(path, 64 * KiB, 6);
	b = open_img(path, "raw", BLK_CACHE_WRITEBACK, true);
	a = new_ctx(true, 4);
	for (int i = 0; i < 5; i++)
		tracked_init(&t[i], &done, BLK_OP_READ, i * 512, buf[i], 512);
	for (int i = 0; i < 4; i++)
		assert_int_equal(blk_aio_submit(b, a, &t[i].req), 0);
	assert_int_equal(blk_aio_submit(b, a, &t[4].req), -EAGAIN);
	blk_aio_drain(a);
	assert_int_equal(done, 4);
	assert_int_equal(t[4].order, -1);
	assert_int_equal(blk_aio_submit(b, a, &t[4].req), 0);
	blk_aio_drain(a);
	assert_int_equal(t[4].ret, 0);
	assert_int_equal(buf[4][0], pattern_at(6, 4 * 512));
	blk_aio_free(a);
	blk_close(b);

	assert_int_equal(blk_aio_new(&a, 0, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "depth"));
}

/* ---- a driver that runs on workers ---- */

struct slow {
	int fail_at;                   /* offset / 512 that fails with -EIO, or -1 */
	int concurrent, max_concurrent;
	pthread_mutex_t lock;
};

static int slow_preadv(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt)
{
	struct slow *s = b->opaque;
	int idx = (int)(off / 512);

	pthread_mutex_lock(&s->lock);
	if (++s->concurrent > s->max_concurrent)
		s->max_concurrent = s->concurrent;
	pthread_mutex_unlock(&s->lock);
	/* the first requests take longest */
	usleep((useconds_t)(idx < 8 ? (8 - idx) * 30000 : 20000));
	for (int i = 0; i < iovcnt; i++)
		memset(iov[i].iov_base, idx, iov[i].iov_len);
	pthread_mutex_lock(&s->lock);
	s->concurrent--;
	pthread_mutex_unlock(&s->lock);
	return idx == s->fail_at ? -EIO : 0;
}

static const struct blk_driver slow_driver = {
	.name = "slow",
	.preadv = slow_preadv,
};

static struct blk *slow_node(struct slow *s)
{
	struct blk *b = calloc(1, sizeof(*b));

	assert_non_null(b);
	pthread_mutex_init(&s->lock, NULL);
	b->drv = &slow_driver;
	b->opaque = s;
	b->filename = strdup("slow");
	b->size = 1 * MiB;
	b->readonly = true;
	return b;
}

static void test_workers_finish_out_of_order_with_errors(void **state)
{
	struct slow s = { .fail_at = 5 };
	struct blk *b = slow_node(&s);
	struct blk_aio *a = new_ctx(true, 8);   /* no native path: workers anyway */
	struct tracked t[8];
	uint8_t buf[8][512];
	int done = 0;

	for (int i = 0; i < 8; i++) {
		tracked_init(&t[i], &done, BLK_OP_READ, i * 512, buf[i], 512);
		assert_int_equal(blk_aio_submit(b, a, &t[i].req), 0);
	}
	blk_aio_drain(a);
	assert_int_equal(done, 8);
	/* the last submitted was quickest, the first slowest */
	assert_true(t[7].order < t[0].order);
	assert_int_equal(t[0].order, 7);
	for (int i = 0; i < 8; i++) {
		assert_int_equal(t[i].ret, i == 5 ? -EIO : 0);
		assert_int_equal(buf[i][0], i);
	}
	assert_true(s.max_concurrent > 1);
	blk_aio_free(a);
	blk_close(b);
}

static void test_worker_pool_is_bounded(void **state)
{
	enum { N = 200 };
	struct slow s = { .fail_at = -1 };
	struct blk *b = slow_node(&s);
	struct blk_aio *a = new_ctx(false, N);
	struct tracked *t = calloc(N, sizeof(*t));
	uint8_t *buf = malloc(N * 512);
	int done = 0;

	for (int i = 0; i < N; i++) {
		tracked_init(&t[i], &done, BLK_OP_READ, 4096 * 8 + (uint64_t)i * 512,
			     buf + i * 512, 512);
		assert_int_equal(blk_aio_submit(b, a, &t[i].req), 0);
	}
	blk_aio_drain(a);
	assert_int_equal(done, N);
	for (int i = 0; i < N; i++)
		assert_int_equal(t[i].ret, 0);
	assert_true(s.max_concurrent >= 8);
	assert_true(s.max_concurrent <= 64);
	blk_aio_free(a);
	blk_close(b);
	free(t);
	free(buf);
}

static void test_submit_errors_never_call_back(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX];
	struct blk *ro, *rw;
	struct blk_aio *a;
	struct tracked t;
	uint8_t buf[512] = { 0 };
	int done = 0;

	scratch_path(s, "errs.raw", path);
	make_file(path, 64 * KiB, 6);
	ro = open_img(path, "raw", BLK_CACHE_WRITEBACK, true);
	a = new_ctx(true, 4);
	tracked_init(&t, &done, BLK_OP_WRITE, 0, buf, 512);
	assert_int_equal(blk_aio_submit(ro, a, &t.req), -EROFS);
	tracked_init(&t, &done, BLK_OP_WRITE_ZEROES, 0, NULL, 512);
	assert_int_equal(blk_aio_submit(ro, a, &t.req), -EROFS);
	tracked_init(&t, &done, BLK_OP_READ, 64 * KiB - 256, buf, 512);
	assert_int_equal(blk_aio_submit(ro, a, &t.req), -EINVAL);
	t.req.op = (enum blk_op)42;
	assert_int_equal(blk_aio_submit(ro, a, &t.req), -EINVAL);
	blk_close(ro);
	assert_int_equal(blk_aio_in_flight(a), 0);
	assert_int_equal(blk_aio_reap(a), 0);
	assert_int_equal(done, 0);

	/* a write the kernel refuses (past the file size limit) fails at reap */
	{
		struct rlimit old, small;

		rw = open_img(path, "file", BLK_CACHE_WRITEBACK, false);
		signal(SIGXFSZ, SIG_IGN);
		assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
		small = (struct rlimit){ 128 * KiB, old.rlim_max };
		assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
		tracked_init(&t, &done, BLK_OP_WRITE, 1 * MiB, buf, 512);
		assert_int_equal(blk_aio_submit(rw, a, &t.req), 0);
		blk_aio_drain(a);
		assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
		assert_int_equal(done, 1);
		assert_int_equal(t.ret, -EFBIG);
		blk_close(rw);
	}
	blk_aio_free(a);
}

/* A protocol node reads zeroes past the end of its file: the ring returns
 * a short read and the rest is finished elsewhere. */
static void test_short_read_at_end_of_file(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX];
	enum blk_cache caches[] = { BLK_CACHE_WRITEBACK, BLK_CACHE_NONE };

	scratch_path(s, "short.img", path);
	make_file(path, 1000, 8);
	for (size_t c = 0; c < ARRAY_SIZE(caches); c++) {
		struct blk *b = open_img(path, "file", caches[c], true);
		struct blk_aio *a = new_ctx(true, 4);
		uint8_t *buf = aligned_alloc(4096, 8192);
		struct tracked t;
		int done = 0;

		memset(buf, 0xee, 8192);
		tracked_init(&t, &done, BLK_OP_READ, 0, buf, 8192);
		assert_int_equal(blk_aio_submit(b, a, &t.req), 0);
		blk_aio_drain(a);
		assert_int_equal(t.ret, 0);
		for (size_t i = 0; i < 1000; i++)
			assert_int_equal(buf[i], pattern_at(8, i));
		assert_true(all_bytes(buf + 1000, 8192 - 1000, 0));
		free(buf);
		blk_aio_free(a);
		blk_close(b);
	}
}

/* Unaligned requests under O_DIRECT (a bounce on a worker) mixed with
 * aligned ones (the ring), against a copy in memory. */
static void test_direct_mixed_alignment(void **state)
{
	enum { N = 64, SIZE = 512 * 1024 };
	struct scratch *s = *state;
	char path[PATH_MAX];
	uint8_t *shadow = malloc(SIZE), *disk = malloc(SIZE);
	uint8_t *bufs = aligned_alloc(4096, N * 8192 + 4096);
	struct tracked t[N];
	struct blk *b;
	struct blk_aio *a;
	unsigned seed = 7;
	int done = 0;

	scratch_path(s, "mixed.raw", path);
	make_file(path, SIZE, 1);
	for (size_t i = 0; i < SIZE; i++)
		shadow[i] = pattern_at(1, i);
	b = open_img(path, "raw", BLK_CACHE_NONE, false);
	a = new_ctx(true, N);
	/* disjoint slots so that the order among them does not matter */
	for (int i = 0; i < N; i++) {
		bool aligned = i % 2;
		size_t len = aligned ? 4096 : 1 + rand_r(&seed) % 4000;
		uint64_t off = (uint64_t)i * 8192 + (aligned ? 0 : 1 + rand_r(&seed) % 100);
		uint8_t *p = bufs + i * 8192 + (aligned ? 0 : 3);

		memset(p, 0x80 + i, len);
		memset(shadow + off, 0x80 + i, len);
		tracked_init(&t[i], &done, BLK_OP_WRITE, off, p, len);
		assert_int_equal(blk_aio_submit(b, a, &t[i].req), 0);
	}
	blk_aio_drain(a);
	for (int i = 0; i < N; i++)
		assert_int_equal(t[i].ret, 0);
	blk_aio_free(a);
	blk_close(b);
	slurp(path, disk, SIZE, 0);
	assert_memory_equal(disk, shadow, SIZE);
	free(shadow);
	free(disk);
	free(bufs);
}

static void test_flush_discard_and_zeroes(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX];
	enum blk_cache caches[] = { BLK_CACHE_WRITEBACK, BLK_CACHE_WRITETHROUGH,
				    BLK_CACHE_UNSAFE, BLK_CACHE_NONE };

	scratch_path(s, "zero.raw", path);
	for (size_t c = 0; c < ARRAY_SIZE(caches); c++) {
		uint8_t *buf = aligned_alloc(4096, MiB);
		struct tracked t[4];
		struct blk *b;
		struct blk_aio *a;
		uint64_t before;
		int done = 0;

		make_file(path, 4 * MiB, 3);
		before = file_blocks_bytes(path);
		b = open_img(path, "raw", caches[c], false);
		a = new_ctx(true, 8);
		tracked_init(&t[0], &done, BLK_OP_DISCARD, 0, NULL, MiB);
		tracked_init(&t[1], &done, BLK_OP_WRITE_ZEROES, MiB, NULL, MiB);
		t[1].req.flags = BLK_ZERO_MAY_UNMAP;
		tracked_init(&t[2], &done, BLK_OP_WRITE_ZEROES, 2 * MiB + 10, NULL, 1000);
		tracked_init(&t[3], &done, BLK_OP_FLUSH, 0, NULL, 0);
		for (int i = 0; i < 4; i++)
			assert_int_equal(blk_aio_submit(b, a, &t[i].req), 0);
		blk_aio_drain(a);
		for (int i = 0; i < 4; i++)
			assert_int_equal(t[i].ret, 0);
		assert_true(file_blocks_bytes(path) <= before - 2 * MiB);
		assert_int_equal(blk_pread(b, MiB, buf, MiB), 0);
		assert_true(all_bytes(buf, MiB, 0));
		assert_int_equal(blk_pread(b, 2 * MiB, buf, 4096), 0);
		assert_int_equal(buf[9], pattern_at(3, 2 * MiB + 9));
		assert_true(all_bytes(buf + 10, 1000, 0));
		assert_int_equal(buf[1010], pattern_at(3, 2 * MiB + 1010));
		blk_aio_free(a);
		blk_close(b);
		free(buf);
	}
}

/* A callback that submits the next request: drain waits for the chain. */
struct chain {
	struct blk *b;
	struct blk_aio *a;
	struct blk_req req;
	struct iovec iov;
	uint8_t buf[512];
	int step, steps, err;
};

static void chain_done(struct blk_req *req, int ret)
{
	struct chain *c = req->opaque;

	if (ret < 0)
		c->err = ret;
	if (++c->step == c->steps)
		return;
	memset(c->buf, c->step, sizeof(c->buf));
	req->offset = (uint64_t)c->step * 512;
	if (blk_aio_submit(c->b, c->a, req) < 0)
		c->err = -EIO;
}

static void test_callbacks_may_submit(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX];
	struct chain c = { .steps = 20 };
	uint8_t back[20 * 512];

	scratch_path(s, "chain.raw", path);
	make_file(path, 64 * KiB, 0);
	c.b = open_img(path, "raw", BLK_CACHE_WRITEBACK, false);
	c.a = new_ctx(true, 1);
	c.iov = (struct iovec){ c.buf, sizeof(c.buf) };
	c.req = (struct blk_req){ .op = BLK_OP_WRITE, .iov = &c.iov, .iovcnt = 1,
				  .done = chain_done, .opaque = &c };
	assert_int_equal(blk_aio_submit(c.b, c.a, &c.req), 0);
	blk_aio_drain(c.a);
	assert_int_equal(c.err, 0);
	assert_int_equal(c.step, 20);
	assert_int_equal(blk_pread(c.b, 0, back, sizeof(back)), 0);
	for (int i = 0; i < 20; i++)
		assert_true(all_bytes(back + i * 512, 512, (uint8_t)i));
	blk_aio_free(c.a);
	blk_close(c.b);
}

#define T(f) cmocka_unit_test_setup_teardown(f, scratch_setup, scratch_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_many_in_flight_on_the_ring),
		T(test_many_in_flight_on_workers),
		T(test_completions_wait_for_reap),
		T(test_depth_limit),
		cmocka_unit_test(test_workers_finish_out_of_order_with_errors),
		cmocka_unit_test(test_worker_pool_is_bounded),
		T(test_submit_errors_never_call_back),
		T(test_short_read_at_end_of_file),
		T(test_direct_mixed_alignment),
		T(test_flush_discard_and_zeroes),
		T(test_callbacks_may_submit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
