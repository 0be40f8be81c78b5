/* qcow2's asynchronous fast path (storage/qcow2_aio.c) through
 * blk_aio_submit: reads and in-place writes move on the ring without a
 * worker thread; requests over several host extents, unaligned and
 * multi-segment buffers, and everything that falls back to the workers
 * (allocating writes, zero and unallocated clusters, discard, zeroes,
 * flush) give the same bytes as the synchronous verbs. The stress test
 * keeps many requests in flight while other threads discard, flush,
 * allocate the freed clusters again and take snapshots, and checks every
 * byte against a model: a cluster freed and handed to someone else while
 * an asynchronous write to it was still in flight shows up as another
 * region's data (or a lost write) there, and the image stays consistent
 * (no leaks once closed).
 *
 * Data is written in 512-byte stamped sectors (magic, guest offset,
 * sequence number, a fill derived from them), so a read tells what it
 * found: zeroes, the expected write, or something from elsewhere. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "blk.h"
#include "blk_int.h"
#include "blk_testutil.h"
#include "util.h"

/* Links the driver in (nothing else in the static library names it). */
static const struct blk_driver *const qcow2_linked __attribute__((used)) = &blk_driver_qcow2;

#define SECTOR 512u
#define BLOCK 4096u                    /* request granularity (O_DIRECT-safe) */
#define MAGIC_OWN 0x4f574e21u          /* the async owner's exact region */
#define MAGIC_VICTIM 0x56494354u       /* the region other threads discard */
#define MAGIC_ALLOC 0x414c4f43u        /* the allocating thread's region */

/* ---- stamped sectors ---- */

static uint8_t fill_byte(uint64_t off, uint32_t seq, unsigned i)
{
	return (uint8_t)(seq * 131u + (off >> 9) * 7u + i);
}

static void stamp(uint8_t *p, uint32_t magic, uint64_t off, uint32_t seq)
{
	memcpy(p, &magic, 4);
	memcpy(p + 4, &seq, 4);
	memcpy(p + 8, &off, 8);
	for (unsigned i = 16; i < SECTOR; i++)
		p[i] = fill_byte(off, seq, i);
}

static void stamp_range(uint8_t *buf, uint64_t off, uint64_t len, uint32_t magic, uint32_t seq)
{
	for (uint64_t i = 0; i < len; i += SECTOR)
		stamp(buf + i, magic, off + i, seq);
}

/* What a sector holds: 0 for zeroes, else its seq (magic and offset must
 * match); -1 for anything else, with a description in why. */
static int64_t sector_seq(const uint8_t *p, uint32_t magic, uint64_t off, char *why,
			  size_t whylen)
{
	uint32_t m, seq;
	uint64_t o;

	if (all_bytes(p, SECTOR, 0))
		return 0;
	memcpy(&m, p, 4);
	memcpy(&seq, p + 4, 4);
	memcpy(&o, p + 8, 8);
	if (m != magic || o != off) {
		snprintf(why, whylen, "sector at %#llx holds magic %#x offset %#llx seq %u "
			 "(expected magic %#x)", (unsigned long long)off, m,
			 (unsigned long long)o, seq, magic);
		return -1;
	}
	for (unsigned i = 16; i < SECTOR; i++)
		if (p[i] != fill_byte(off, seq, i)) {
			snprintf(why, whylen, "sector at %#llx (seq %u) torn at byte %u",
				 (unsigned long long)off, seq, i);
			return -1;
		}
	return seq;
}

/* Checks buf (read at off) against model[] (seq per sector, 0: zeroes). */
static bool matches_model(const uint8_t *buf, uint64_t off, uint64_t len, uint32_t magic,
			  const uint32_t *model, uint64_t base, char *why, size_t whylen)
{
	for (uint64_t i = 0; i < len; i += SECTOR) {
		uint64_t so = off + i;
		int64_t got = sector_seq(buf + i, magic, so, why, whylen);
		uint32_t want = model[(so - base) / SECTOR];
		if (got < 0)
			return false;
		if (got != want) {
			snprintf(why, whylen, "sector at %#llx holds seq %lld, expected %u",
				 (unsigned long long)so, (long long)got, want);
			return false;
		}
	}
	return true;
}

/* ---- images ---- */

static void create_qcow2(const char *path, uint64_t size, uint32_t cluster, bool ext_l2)
{
	struct blk_create_opts o = { .format = "qcow2", .size = size, .cluster_size = cluster,
				     .extended_l2 = ext_l2 };
	char err[512] = "";

	if (blk_create(path, &o, err, sizeof(err)) < 0)
		fail_msg("create %s: %s", path, err);
}

static struct blk *open_qcow2(const char *path, enum blk_cache cache)
{
	struct blk_open_opts o = { .format = "qcow2", .cache = cache };
	struct blk *b = NULL;
	char err[512] = "";

	if (blk_open(&b, path, &o, err, sizeof(err)) < 0)
		fail_msg("opening %s: %s", path, err);
	return b;
}

static struct blk_aio *ring_ctx(unsigned depth)
{
	struct blk_aio *a = NULL;
	char err[256] = "";

	if (blk_aio_new(&a, depth, err, sizeof(err)) < 0)
		fail_msg("aio context: %s", err);
	return a;
}

static void *abuf(size_t len)
{
	void *p = aligned_alloc(BLOCK, ALIGN_UP(len, BLOCK));
	assert_non_null(p);
	return p;
}

static void expect_check_clean(struct blk *b)
{
	struct blk_check_result r;

	assert_int_equal(blk_check(b, 0, &r), 0);
	if (r.corruptions || r.leaks)
		fail_msg("check: %llu corruptions, %llu leaks: %s",
			 (unsigned long long)r.corruptions, (unsigned long long)r.leaks,
			 r.report ? r.report : "");
	blk_check_result_free(&r);
}

/* ---- one request, waited for ---- */

struct waited {
	struct blk_req req;
	int ret;
	bool done;
};

static void waited_done(struct blk_req *req, int ret)
{
	struct waited *w = req->opaque;

	w->ret = ret;
	w->done = true;
}

static void reap_until(struct blk_aio *a, const bool *done)
{
	for (int spins = 0; !*done; spins++) {
		struct pollfd p = { .fd = blk_aio_fd(a), .events = POLLIN };

		if (spins > 1000)
			fail_msg("request not completed after 10 s");
		poll(&p, 1, 10);
		blk_aio_reap(a);
	}
}

static int aio_rw(struct blk *b, struct blk_aio *a, enum blk_op op, uint64_t off,
		  struct iovec *iov, int iovcnt)
{
	struct waited w = { .req = { .op = op, .offset = off, .iov = iov, .iovcnt = iovcnt,
				     .done = waited_done } };
	int r;

	w.req.opaque = &w;
	r = blk_aio_submit(b, a, &w.req);
	if (r < 0)
		return r;
	reap_until(a, &w.done);
	return w.ret;
}

/* Threads of this process, without the kernel's io_uring workers
 * (iou-wrk-*, iou-sqp-*): those are not the block layer's. */
static unsigned threads_now(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	unsigned n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d))) {
		char p[300], comm[64] = "";
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "/proc/self/task/%s/comm", e->d_name);
		f = fopen(p, "r");
		if (f) {
			if (!fgets(comm, sizeof(comm), f))
				comm[0] = 0;
			fclose(f);
		}
		if (strncmp(comm, "iou-", 4) != 0)
			n++;
	}
	closedir(d);
	return n;
}

/* ---- the fast path needs no worker ---- */

/* In a child process that has one thread (this test runs first, before any
 * test started workers): once the L2 table is cached, 2048 reads and
 * in-place writes, 32 in flight, complete without a worker thread; the
 * first allocating write starts one.
 * Exit status: 0, or the failed step. */
static int fast_path_child(const char *path)
{
	enum { QD = 32, N = 2048, SPAN = 2 << 20 };
	struct blk *b;
	struct blk_aio *a;
	struct waited w[QD];
	struct iovec iov[QD];
	uint8_t *buf = aligned_alloc(BLOCK, (size_t)QD * BLOCK);
	uint32_t *model = calloc(SPAN / SECTOR, sizeof(*model));
	char err[256] = "", why[256];
	unsigned submitted = 0, completed = 0, seq = 1000;
	uint64_t offs[QD];
	bool used[QD] = { false }, write[QD];

	if (threads_now() != 1) {
		fprintf(stderr, "fast path: %u threads before the test\n", threads_now());
		return 2;
	}
	struct blk_open_opts o = { .format = "qcow2", .cache = BLK_CACHE_WRITEBACK };
	if (!buf || !model || blk_open(&b, path, &o, err, sizeof(err)) < 0 ||
	    blk_aio_new(&a, QD, err, sizeof(err)) < 0) {
		fprintf(stderr, "fast path: setup: %s\n", err);
		return 3;
	}
	if (!blk_aio_ring(a)) {
		fprintf(stderr, "fast path: no io_uring on this host\n");
		return 0;
	}
	/* the L2 table into the cache (a miss is the workers' business) */
	if (blk_pread(b, 0, buf, BLOCK) < 0)
		return 3;
	for (uint64_t i = 0; i < SPAN / SECTOR; i++)
		model[i] = 1;               /* the parent stamped everything seq 1 */
	srand(7);
	while (completed < N) {
		for (unsigned k = 0; k < QD && submitted < N; k++) {
			if (used[k])
				continue;
			uint64_t off = (uint64_t)(rand() % (SPAN / BLOCK)) * BLOCK;
			bool busy = false;
			for (unsigned j = 0; j < QD; j++)
				if (used[j] && offs[j] == off)
					busy = true;
			if (busy)
				continue;
			offs[k] = off;
			write[k] = rand() % 2;
			iov[k] = (struct iovec){ buf + k * BLOCK, BLOCK };
			if (write[k])
				stamp_range(buf + k * BLOCK, off, BLOCK, MAGIC_OWN, ++seq);
			w[k] = (struct waited){ .req = { .op = write[k] ? BLK_OP_WRITE : BLK_OP_READ,
							 .offset = off, .iov = &iov[k], .iovcnt = 1,
							 .done = waited_done, .opaque = &w[k] } };
			if (blk_aio_submit(b, a, &w[k].req) < 0)
				return 4;
			used[k] = true;
			submitted++;
		}
		struct pollfd p = { .fd = blk_aio_fd(a), .events = POLLIN };
		poll(&p, 1, 1000);
		blk_aio_reap(a);
		for (unsigned k = 0; k < QD; k++) {
			if (!used[k] || !w[k].done)
				continue;
			if (w[k].ret)
				return 5;
			if (write[k]) {
				uint32_t s;
				memcpy(&s, buf + k * BLOCK + 4, 4);
				for (unsigned i = 0; i < BLOCK / SECTOR; i++)
					model[offs[k] / SECTOR + i] = s;
			} else if (!matches_model(buf + k * BLOCK, offs[k], BLOCK, MAGIC_OWN, model,
						  0, why, sizeof(why))) {
				fprintf(stderr, "fast path: %s\n", why);
				return 6;
			}
			used[k] = false;
			completed++;
		}
	}
	if (threads_now() != 1) {
		fprintf(stderr, "fast path: %u threads after %u requests: some went to a "
			"worker\n", threads_now(), N);
		return 7;
	}
	/* An allocating write is the workers' business: the count is telling. */
	stamp_range(buf, SPAN, BLOCK, MAGIC_OWN, ++seq);
	iov[0] = (struct iovec){ buf, BLOCK };
	if (aio_rw(b, a, BLK_OP_WRITE, SPAN, iov, 1) != 0)
		return 8;
	if (threads_now() < 2) {
		fprintf(stderr, "fast path: an allocating write ran without a worker\n");
		return 9;
	}
	blk_aio_free(a);
	blk_close(b);
	return 0;
}

static void test_fast_path_needs_no_worker(void **state)
{
	struct scratch *sc = *state;
	char path[PATH_MAX];
	enum { SPAN = 2 << 20 };
	uint8_t *buf = abuf(SPAN);
	int status;

	scratch_path(sc, "fast.qcow2", path);
	create_qcow2(path, 8 << 20, 65536, false);
	struct blk *b = open_qcow2(path, BLK_CACHE_WRITEBACK);
	stamp_range(buf, 0, SPAN, MAGIC_OWN, 1);
	assert_int_equal(blk_pwrite(b, 0, buf, SPAN, 0), 0);
	blk_close(b);
	free(buf);
	if (threads_now() != 1)
		fail_msg("%u threads before forking: this test must run first", threads_now());
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(fast_path_child(path));
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status))
		fail_msg("fast path child failed at step %d", WEXITSTATUS(status));
}

/* ---- round trips ---- */

/* Writes clusters in reverse order so that host space is fragmented, then
 * reads and writes across cluster boundaries with several segments: every
 * request gives the same bytes as the model, through one extent or many. */
static void round_trip(const char *path, uint32_t cluster, bool ext_l2, enum blk_cache cache)
{
	const uint64_t size = 64ull * cluster;
	struct blk *b;
	struct blk_aio *a = ring_ctx(64);
	uint32_t *model = calloc(size / SECTOR, sizeof(*model));
	uint8_t *buf = abuf(16ull * cluster), *rd = abuf(16ull * cluster);
	char why[256];
	uint32_t seq = 10;

	assert_non_null(model);
	create_qcow2(path, size, cluster, ext_l2);
	b = open_qcow2(path, cache);
	/* clusters 0..47 allocated back to front; 48..63 left unallocated */
	for (int c = 47; c >= 0; c--) {
		uint64_t off = (uint64_t)c * cluster;
		stamp_range(buf, off, cluster, MAGIC_OWN, ++seq);
		for (uint64_t i = 0; i < cluster / SECTOR; i++)
			model[off / SECTOR + i] = seq;
		assert_int_equal(blk_pwrite(b, off, buf, cluster, 0), 0);
	}
	srand(cluster + ext_l2);
	for (int round = 0; round < 400; round++) {
		uint64_t blocks = size / BLOCK;
		uint64_t nblk = 1 + (uint64_t)rand() % (3 * cluster / BLOCK + 2);
		uint64_t start = (uint64_t)rand() % (blocks - nblk + 1);
		uint64_t off = start * BLOCK, len = nblk * BLOCK;
		bool write = rand() % 2;
		/* up to three segments, cut at block boundaries */
		struct iovec iov[3];
		uint8_t *p = write ? buf : rd;
		uint64_t cut1 = nblk > 2 ? (1 + (uint64_t)rand() % (nblk - 1)) * BLOCK : len;
		uint64_t cut2 = cut1 < len && nblk > 3 ? cut1 + BLOCK : len;
		int cnt = 0;

		iov[cnt++] = (struct iovec){ p, cut1 };
		if (cut1 < len)
			iov[cnt++] = (struct iovec){ p + cut1, cut2 - cut1 };
		if (cut2 < len)
			iov[cnt++] = (struct iovec){ p + cut2, len - cut2 };
		if (write) {
			stamp_range(buf, off, len, MAGIC_OWN, ++seq);
			assert_int_equal(aio_rw(b, a, BLK_OP_WRITE, off, iov, cnt), 0);
			for (uint64_t i = 0; i < len / SECTOR; i++)
				model[off / SECTOR + i] = seq;
		} else {
			memset(rd, 0xa5, len);
			assert_int_equal(aio_rw(b, a, BLK_OP_READ, off, iov, cnt), 0);
			if (!matches_model(rd, off, len, MAGIC_OWN, model, 0, why, sizeof(why)))
				fail_msg("cluster %u%s cache %s: async read: %s", cluster,
					 ext_l2 ? " extended L2" : "", blk_cache_name(cache), why);
		}
	}
	/* the synchronous path agrees, now and after reopening */
	for (int pass = 0; pass < 2; pass++) {
		for (uint64_t off = 0; off < size; off += 16ull * cluster) {
			assert_int_equal(blk_pread(b, off, rd, 16ull * cluster), 0);
			if (!matches_model(rd, off, 16ull * cluster, MAGIC_OWN, model, 0, why,
					   sizeof(why)))
				fail_msg("cluster %u: sync read after async writes: %s", cluster, why);
		}
		expect_check_clean(b);
		blk_close(b);
		b = open_qcow2(path, cache);
	}
	blk_aio_free(a);
	blk_close(b);
	free(model);
	free(buf);
	free(rd);
}

static void test_round_trips(void **state)
{
	struct scratch *sc = *state;
	char path[PATH_MAX];

	scratch_path(sc, "rt1.qcow2", path);
	round_trip(path, 65536, false, BLK_CACHE_WRITEBACK);
	scratch_path(sc, "rt2.qcow2", path);
	round_trip(path, 65536, false, BLK_CACHE_NONE);
	scratch_path(sc, "rt3.qcow2", path);
	round_trip(path, 4096, false, BLK_CACHE_NONE);
	scratch_path(sc, "rt4.qcow2", path);
	round_trip(path, 65536, true, BLK_CACHE_WRITEBACK);
}

/* Buffers the ring cannot take with O_DIRECT (512-byte aligned only) and
 * clusters smaller than the file's alignment still read and write right:
 * those requests take the synchronous path. */
static void test_unaligned_requests(void **state)
{
	struct scratch *sc = *state;
	char path[PATH_MAX];
	uint8_t *mem = abuf(3 * BLOCK), *rd = abuf(3 * BLOCK);
	uint8_t *odd = mem + SECTOR;          /* 512-aligned, not 4096-aligned */
	uint32_t model[2 * BLOCK / SECTOR];
	char why[256];

	scratch_path(sc, "unaligned.qcow2", path);
	create_qcow2(path, 1 << 20, 512, false);
	struct blk *b = open_qcow2(path, BLK_CACHE_NONE);
	struct blk_aio *a = ring_ctx(8);
	stamp_range(odd, 0, 2 * BLOCK, MAGIC_OWN, 5);
	assert_int_equal(blk_pwrite(b, 0, odd, 2 * BLOCK, 0), 0);   /* allocates */
	stamp_range(odd, SECTOR, BLOCK, MAGIC_OWN, 6);
	struct iovec iov = { odd, BLOCK };
	assert_int_equal(aio_rw(b, a, BLK_OP_WRITE, SECTOR, &iov, 1), 0);
	for (unsigned i = 0; i < 2 * BLOCK / SECTOR; i++)
		model[i] = i >= 1 && i < 1 + BLOCK / SECTOR ? 6 : 5;
	iov = (struct iovec){ odd, 2 * BLOCK };
	memset(odd, 0, 2 * BLOCK);
	assert_int_equal(aio_rw(b, a, BLK_OP_READ, 0, &iov, 1), 0);
	if (!matches_model(odd, 0, 2 * BLOCK, MAGIC_OWN, model, 0, why, sizeof(why)))
		fail_msg("512-byte clusters, cache=none: %s", why);
	iov = (struct iovec){ rd, 2 * BLOCK };
	assert_int_equal(aio_rw(b, a, BLK_OP_READ, 0, &iov, 1), 0);
	assert_memory_equal(rd, odd, 2 * BLOCK);
	blk_aio_free(a);
	expect_check_clean(b);
	blk_close(b);
	free(mem);
	free(rd);
}

/* ---- the guards, one at a time ---- */

/* A request on the fast path counts as in flight until its completion has
 * run, which blk_aio_reap does on this thread: so the guards below can be
 * held open for as long as a test likes by not reaping. */

static uint64_t host_of(struct blk *b, uint64_t off)
{
	uint64_t pnum, map = 0;
	unsigned status;

	assert_int_equal(blk_block_status(b, off, 1, &pnum, &status, &map, NULL), 0);
	assert_true(status & BLK_STATUS_OFFSET_VALID);
	return map;
}

struct side_call {
	struct blk *b;
	uint64_t off;
	uint8_t *buf;
	atomic_bool finished;
	int ret;
};

static void *side_snapshot(void *arg)
{
	struct side_call *c = arg;
	char err[256] = "";

	c->ret = blk_snapshot_create(c->b, "guard", err, sizeof(err));
	atomic_store(&c->finished, true);
	return NULL;
}

static void *side_write(void *arg)
{
	struct side_call *c = arg;

	c->ret = blk_pwrite(c->b, c->off, c->buf, BLOCK, 0);
	atomic_store(&c->finished, true);
	return NULL;
}

static void sleep_ms(long ms)
{
	struct timespec t = { ms / 1000, (ms % 1000) * 1000000 };
	nanosleep(&t, NULL);
}

/* Starts fn on another thread and checks that it cannot finish while the
 * request w is unreaped, then reaps it and lets fn finish. */
static void blocked_until_reaped(struct blk_aio *a, struct waited *w, void *(*fn)(void *),
				 struct side_call *c, const char *what)
{
	pthread_t th;

	assert_int_equal(pthread_create(&th, NULL, fn, c), 0);
	sleep_ms(200);
	if (atomic_load(&c->finished))
		fail_msg("%s finished while an asynchronous request on its clusters was "
			 "still in flight", what);
	assert_false(w->done);
	reap_until(a, &w->done);
	assert_int_equal(w->ret, 0);
	pthread_join(th, NULL);
	assert_int_equal(c->ret, 0);
}

/* Snapshots (excl operations) wait for asynchronous requests: a write in
 * place landing after the snapshot took the cluster would change it. */
static void test_snapshot_waits_for_requests(void **state)
{
	struct scratch *sc = *state;
	char path[PATH_MAX];
	uint8_t *buf = abuf(65536);
	struct blk_snapshot_info *snaps = NULL;
	unsigned nsnaps = 0;

	scratch_path(sc, "excl.qcow2", path);
	create_qcow2(path, 1 << 20, 65536, false);
	struct blk *b = open_qcow2(path, BLK_CACHE_WRITEBACK);
	struct blk_aio *a = ring_ctx(4);
	stamp_range(buf, 0, 65536, MAGIC_OWN, 1);
	assert_int_equal(blk_pwrite(b, 0, buf, 65536, 0), 0);
	stamp_range(buf, 0, BLOCK, MAGIC_OWN, 2);
	struct iovec iov = { buf, BLOCK };
	struct waited w = { .req = { .op = BLK_OP_WRITE, .iov = &iov, .iovcnt = 1,
				     .done = waited_done, .opaque = &w } };
	assert_int_equal(blk_aio_submit(b, a, &w.req), 0);
	struct side_call c = { .b = b };
	blocked_until_reaped(a, &w, side_snapshot, &c, "snapshot create");
	assert_int_equal(blk_snapshot_list(b, &snaps, &nsnaps), 0);
	assert_int_equal(nsnaps, 1);
	free(snaps);
	expect_check_clean(b);
	blk_aio_free(a);
	blk_close(b);
	free(buf);
}

/* A cluster discarded (and the discard flushed) while an asynchronous
 * write to it is in flight is not handed to the next allocation; once the
 * write's completion has run, the next flush frees it for good. */
static void test_free_waits_for_requests(void **state)
{
	struct scratch *sc = *state;
	const uint32_t cs = 65536;
	char path[PATH_MAX], why[256];
	uint8_t *buf = abuf(4 * cs), *rd = abuf(cs);
	uint32_t model[65536 / SECTOR];

	scratch_path(sc, "free.qcow2", path);
	create_qcow2(path, 1 << 20, cs, false);
	struct blk *b = open_qcow2(path, BLK_CACHE_WRITEBACK);
	struct blk_aio *a = ring_ctx(4);
	stamp_range(buf, 0, 4 * cs, MAGIC_OWN, 1);
	assert_int_equal(blk_pwrite(b, 0, buf, 4 * cs, 0), 0);
	uint64_t old = host_of(b, cs);
	stamp_range(buf, cs, BLOCK, MAGIC_OWN, 2);
	struct iovec iov = { buf, BLOCK };
	struct waited w = { .req = { .op = BLK_OP_WRITE, .offset = cs, .iov = &iov, .iovcnt = 1,
				     .done = waited_done, .opaque = &w } };
	assert_int_equal(blk_aio_submit(b, a, &w.req), 0);
	assert_int_equal(blk_discard(b, cs, cs), 0);
	assert_int_equal(blk_flush(b), 0);
	stamp_range(buf, 5 * cs, cs, MAGIC_OWN, 3);
	assert_int_equal(blk_pwrite(b, 5 * cs, buf, cs, 0), 0);
	if (host_of(b, 5 * cs) == old)
		fail_msg("the discarded cluster (host %#llx) was reallocated while a write to "
			 "it was in flight", (unsigned long long)old);
	reap_until(a, &w.done);
	assert_int_equal(w.ret, 0);
	assert_int_equal(blk_flush(b), 0);
	stamp_range(buf, 6 * cs, cs, MAGIC_OWN, 4);
	assert_int_equal(blk_pwrite(b, 6 * cs, buf, cs, 0), 0);
	assert_int_equal((long long)host_of(b, 6 * cs), (long long)old);
	for (int c = 5; c <= 6; c++) {
		for (unsigned i = 0; i < cs / SECTOR; i++)
			model[i] = (uint32_t)c - 2;
		assert_int_equal(blk_pread(b, (uint64_t)c * cs, rd, cs), 0);
		if (!matches_model(rd, (uint64_t)c * cs, cs, MAGIC_OWN, model, (uint64_t)c * cs,
				   why, sizeof(why)))
			fail_msg("cluster %d: %s", c, why);
	}
	assert_int_equal(blk_pread(b, cs, rd, cs), 0);
	assert_true(all_bytes(rd, cs, 0));
	blk_aio_free(a);
	expect_check_clean(b);
	blk_close(b);
	b = open_qcow2(path, BLK_CACHE_WRITEBACK);
	expect_check_clean(b);
	blk_close(b);
	free(buf);
	free(rd);
}

static uint64_t get_be64_at(const char *path, uint64_t off)
{
	uint64_t v;
	slurp(path, &v, 8, (off_t)off);
	return be64toh(v);
}

/* Extended L2: a write into an unallocated subcluster rewrites the whole
 * cluster (read, merge, write); it waits for an asynchronous write in place
 * into another subcluster, which would otherwise be lost under it. QEMU
 * allocates subclusters one by one, so such clusters are common in images
 * it wrote; here the bitmap is patched to make one. */
static void test_subcluster_rewrite_waits(void **state)
{
	struct scratch *sc = *state;
	const uint32_t cs = 65536, sub = cs / 32;
	char path[PATH_MAX], why[256];
	uint8_t *buf = abuf(cs), *wbuf = abuf(BLOCK), *sbuf = abuf(BLOCK);
	uint32_t model[65536 / SECTOR];

	scratch_path(sc, "extl2.qcow2", path);
	create_qcow2(path, 1 << 20, cs, true);
	struct blk *b = open_qcow2(path, BLK_CACHE_WRITEBACK);
	stamp_range(buf, 0, cs, MAGIC_OWN, 1);
	assert_int_equal(blk_pwrite(b, 0, buf, cs, 0), 0);
	blk_close(b);
	/* subclusters 16..31 unallocated (they read as zeroes) */
	uint64_t l2 = get_be64_at(path, get_be64_at(path, 40)) & 0x00fffffffffffe00ull;
	uint64_t bitmap = htobe64(0xffffull);
	int fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, &bitmap, 8, (off_t)(l2 + 8)), 8);
	close(fd);
	for (unsigned i = 0; i < cs / SECTOR; i++)
		model[i] = i * SECTOR < 16 * sub ? 1 : 0;

	b = open_qcow2(path, BLK_CACHE_WRITEBACK);
	struct blk_aio *a = ring_ctx(4);
	assert_int_equal(blk_pread(b, 0, buf, BLOCK), 0);    /* the L2 table cached */
	stamp_range(wbuf, 0, BLOCK, MAGIC_OWN, 2);
	struct iovec iov = { wbuf, BLOCK };
	struct waited w = { .req = { .op = BLK_OP_WRITE, .iov = &iov, .iovcnt = 1,
				     .done = waited_done, .opaque = &w } };
	assert_int_equal(blk_aio_submit(b, a, &w.req), 0);
	stamp_range(sbuf, 20 * sub, BLOCK, MAGIC_OWN, 3);
	struct side_call c = { .b = b, .off = 20 * sub, .buf = sbuf };
	blocked_until_reaped(a, &w, side_write, &c, "a write into an unallocated subcluster");
	for (unsigned i = 0; i < BLOCK / SECTOR; i++) {
		model[i] = 2;
		model[(20 * sub) / SECTOR + i] = 3;
	}
	assert_int_equal(blk_pread(b, 0, buf, cs), 0);
	if (!matches_model(buf, 0, cs, MAGIC_OWN, model, 0, why, sizeof(why)))
		fail_msg("extended L2 cluster: %s", why);
	blk_aio_free(a);
	expect_check_clean(b);
	blk_close(b);
	free(buf);
	free(wbuf);
	free(sbuf);
}

/* ---- the stress test ---- */

enum kind { OWN_WRITE, OWN_READ, OWN_ZERO, OWN_DISCARD, VIC_WRITE, VIC_READ, FLUSH, NKINDS };

struct stress_cfg {
	const char *name;
	uint32_t cluster;
	bool ext_l2;
	enum blk_cache cache;
	bool snapshots;
	unsigned ops;                  /* owner requests to complete */
};

struct world {
	const struct stress_cfg *cfg;
	struct blk *b;
	uint64_t own_off, own_len;     /* [own): the owner's, exact model */
	uint64_t vic_off, vic_len;     /* [vic): owner writes, the discarder unmaps */
	uint64_t alc_off, alc_len;     /* [alc): the allocator's, exact model */
	uint32_t *own_model, *alc_model;
	uint8_t *busy;                 /* per BLOCK of own and vic: owner request on it */
	atomic_bool stop;
	atomic_uint seq;
	pthread_mutex_t err_lock;
	char err[512];
	atomic_bool failed;
	unsigned long counts[NKINDS], discards, allocs, snaps;
};

static void world_fail(struct world *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void world_fail(struct world *w, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&w->err_lock);
	if (!w->failed) {
		va_start(ap, fmt);
		vsnprintf(w->err, sizeof(w->err), fmt, ap);
		va_end(ap);
		atomic_store(&w->failed, true);
	}
	pthread_mutex_unlock(&w->err_lock);
}

static uint32_t next_seq(struct world *w)
{
	return atomic_fetch_add(&w->seq, 1) + 1;
}

static uint64_t rnd(unsigned *st, uint64_t n)
{
	return n ? (uint64_t)rand_r(st) % n : 0;
}

/* The discarder: unmaps clusters of the victim region and flushes, so that
 * their host clusters are freed while the owner's requests may be on them. */
static void *discarder(void *arg)
{
	struct world *w = arg;
	uint32_t cs = w->cfg->cluster;
	unsigned st = 11;

	while (!atomic_load(&w->stop) && !atomic_load(&w->failed)) {
		uint64_t nc = 1 + rnd(&st, 2), clusters = w->vic_len / cs;
		uint64_t c = rnd(&st, clusters - nc + 1);
		int r = blk_discard(w->b, w->vic_off + c * cs, nc * cs);
		/* the flush applies the frees: the allocator gets them next */
		if (r == 0)
			r = blk_flush(w->b);
		if (r < 0)
			world_fail(w, "discarder: %s", strerror(-r));
		w->discards++;
	}
	return NULL;
}

/* The allocator: writes its own region (allocating the clusters just freed),
 * reads it back, discards some and flushes; anything in its region that it
 * did not write is someone's stray write. */
static void *allocator(void *arg)
{
	struct world *w = arg;
	uint32_t cs = w->cfg->cluster;
	uint64_t max = 2ull * cs;
	uint8_t *buf = aligned_alloc(BLOCK, max);
	unsigned st = 23;
	char why[256];

	if (!buf) {
		world_fail(w, "allocator: out of memory");
		return NULL;
	}
	while (!atomic_load(&w->stop) && !atomic_load(&w->failed)) {
		uint64_t nblk = 1 + rnd(&st, max / BLOCK);
		uint64_t off = w->alc_off + rnd(&st, w->alc_len / BLOCK - nblk + 1) * BLOCK;
		uint64_t len = nblk * BLOCK;
		unsigned op = (unsigned)rnd(&st, 10);
		int r;

		if (op < 5) {
			uint32_t seq = next_seq(w);
			stamp_range(buf, off, len, MAGIC_ALLOC, seq);
			r = blk_pwrite(w->b, off, buf, len, 0);
			for (uint64_t i = 0; r == 0 && i < len; i += SECTOR)
				w->alc_model[(off + i - w->alc_off) / SECTOR] = seq;
		} else if (op < 8) {
			r = blk_pread(w->b, off, buf, len);
			if (r == 0 && !matches_model(buf, off, len, MAGIC_ALLOC, w->alc_model,
						     w->alc_off, why, sizeof(why)))
				world_fail(w, "allocator's region: %s", why);
		} else {
			uint64_t first = ALIGN_UP(off, (uint64_t)cs), end = ALIGN_DOWN(off + len, (uint64_t)cs);
			r = blk_discard(w->b, off, len);
			for (uint64_t o = first; r == 0 && o < end; o += SECTOR)
				w->alc_model[(o - w->alc_off) / SECTOR] = 0;
			if (r == 0)
				r = blk_flush(w->b);
		}
		if (r < 0)
			world_fail(w, "allocator: %s", strerror(-r));
		w->allocs++;
	}
	free(buf);
	return NULL;
}

/* Snapshots: take every cluster's QCOW_OFLAG_COPIED away and give it back,
 * while requests are in flight (they must wait, and writes then copy). */
static void *snapshotter(void *arg)
{
	struct world *w = arg;
	char err[256];

	while (!atomic_load(&w->stop) && !atomic_load(&w->failed)) {
		struct timespec t = { 0, 20 * 1000 * 1000 };
		if (blk_snapshot_create(w->b, "stress", err, sizeof(err)) < 0) {
			world_fail(w, "snapshot create: %s", err);
			break;
		}
		nanosleep(&t, NULL);
		if (blk_snapshot_delete(w->b, "stress", err, sizeof(err)) < 0) {
			world_fail(w, "snapshot delete: %s", err);
			break;
		}
		w->snaps++;
		nanosleep(&t, NULL);
	}
	return NULL;
}

struct oreq {
	struct blk_req req;
	struct world *w;
	enum kind kind;
	bool in_flight;
	uint64_t off, len;
	uint32_t seq;
	struct iovec iov[3];
	uint8_t *buf;
};

static void set_busy(struct world *w, uint64_t off, uint64_t len, bool v)
{
	for (uint64_t o = off; o < off + len; o += BLOCK)
		w->busy[(o - w->own_off) / BLOCK] = v;
}

static bool any_busy(struct world *w, uint64_t off, uint64_t len)
{
	for (uint64_t o = off; o < off + len; o += BLOCK)
		if (w->busy[(o - w->own_off) / BLOCK])
			return true;
	return false;
}

static void oreq_done(struct blk_req *req, int ret)
{
	struct oreq *q = req->opaque;
	struct world *w = q->w;
	uint32_t cs = w->cfg->cluster;
	char why[256];

	q->in_flight = false;
	w->counts[q->kind]++;
	if (ret < 0) {
		world_fail(w, "owner request %d at %#llx+%llu: %s", q->kind,
			   (unsigned long long)q->off, (unsigned long long)q->len, strerror(-ret));
		return;
	}
	switch (q->kind) {
	case OWN_WRITE:
		for (uint64_t i = 0; i < q->len; i += SECTOR)
			w->own_model[(q->off + i - w->own_off) / SECTOR] = q->seq;
		break;
	case OWN_READ:
		if (!matches_model(q->buf, q->off, q->len, MAGIC_OWN, w->own_model, w->own_off,
				   why, sizeof(why)))
			world_fail(w, "owner's region, async read: %s", why);
		break;
	case OWN_ZERO:
		for (uint64_t i = 0; i < q->len; i += SECTOR)
			w->own_model[(q->off + i - w->own_off) / SECTOR] = 0;
		break;
	case OWN_DISCARD: {
		uint64_t first = ALIGN_UP(q->off, (uint64_t)cs);
		uint64_t end = ALIGN_DOWN(q->off + q->len, (uint64_t)cs);
		for (uint64_t o = first; o < end; o += SECTOR)
			w->own_model[(o - w->own_off) / SECTOR] = 0;
		break;
	}
	case VIC_READ:
		for (uint64_t i = 0; i < q->len; i += SECTOR)
			if (sector_seq(q->buf + i, MAGIC_VICTIM, q->off + i, why, sizeof(why)) < 0) {
				world_fail(w, "victim region, async read: %s", why);
				break;
			}
		break;
	case VIC_WRITE:
	case FLUSH:
	case NKINDS:
		break;
	}
	if (q->kind != FLUSH)
		set_busy(w, q->off, q->len, false);
}

/* Picks and submits one request for slot q; false if its range is busy. */
static bool owner_submit(struct world *w, struct blk_aio *a, struct oreq *q, unsigned *st)
{
	uint32_t cs = w->cfg->cluster;
	unsigned pick = (unsigned)rnd(st, 100);
	enum kind k = pick < 30 ? OWN_WRITE : pick < 52 ? OWN_READ : pick < 56 ? OWN_ZERO :
		      pick < 58 ? OWN_DISCARD : pick < 88 ? VIC_WRITE : pick < 99 ? VIC_READ :
		      FLUSH;
	bool own = k <= OWN_DISCARD;
	uint64_t base = own ? w->own_off : w->vic_off, span = own ? w->own_len : w->vic_len;
	uint64_t nblk = 1 + rnd(st, rnd(st, 4) ? cs / BLOCK + 1 : 3 * cs / BLOCK);
	uint64_t off = base + rnd(st, span / BLOCK - nblk + 1) * BLOCK, len = nblk * BLOCK;

	memset(&q->req, 0, sizeof(q->req));
	q->kind = k;
	q->off = off;
	q->len = len;
	q->req.offset = off;
	q->req.done = oreq_done;
	q->req.opaque = q;
	if (k == FLUSH) {
		q->req.op = BLK_OP_FLUSH;
	} else {
		if (any_busy(w, off, len))
			return false;
		set_busy(w, off, len, true);
		if (k == OWN_ZERO || k == OWN_DISCARD) {
			q->req.op = k == OWN_ZERO ? BLK_OP_WRITE_ZEROES : BLK_OP_DISCARD;
			q->req.len = len;
			q->req.flags = k == OWN_ZERO && rnd(st, 2) ? BLK_ZERO_MAY_UNMAP : 0;
		} else {
			bool write = k == OWN_WRITE || k == VIC_WRITE;
			uint64_t cut = nblk > 1 ? (1 + rnd(st, nblk - 1)) * BLOCK : len;
			q->req.op = write ? BLK_OP_WRITE : BLK_OP_READ;
			q->iov[0] = (struct iovec){ q->buf, cut };
			q->iov[1] = (struct iovec){ q->buf + cut, len - cut };
			q->req.iov = q->iov;
			q->req.iovcnt = cut < len ? 2 : 1;
			if (write) {
				q->seq = next_seq(w);
				stamp_range(q->buf, off, len, own ? MAGIC_OWN : MAGIC_VICTIM, q->seq);
			} else {
				memset(q->buf, 0xa5, len);
			}
		}
	}
	int r = blk_aio_submit(w->b, a, &q->req);
	if (r < 0) {
		if (k != FLUSH)
			set_busy(w, off, len, false);
		if (r != -EAGAIN)
			world_fail(w, "submit: %s", strerror(-r));
		return false;
	}
	q->in_flight = true;
	return true;
}

static void verify_final(struct world *w, const char *when)
{
	uint64_t chunk = 16ull * w->cfg->cluster;
	uint8_t *buf = abuf(chunk);
	char why[256];

	for (uint64_t o = w->own_off; o < w->own_off + w->own_len; o += chunk) {
		assert_int_equal(blk_pread(w->b, o, buf, chunk), 0);
		if (!matches_model(buf, o, chunk, MAGIC_OWN, w->own_model, w->own_off, why,
				   sizeof(why)))
			fail_msg("%s, %s: owner's region: %s", w->cfg->name, when, why);
	}
	for (uint64_t o = w->alc_off; o < w->alc_off + w->alc_len; o += chunk) {
		assert_int_equal(blk_pread(w->b, o, buf, chunk), 0);
		if (!matches_model(buf, o, chunk, MAGIC_ALLOC, w->alc_model, w->alc_off, why,
				   sizeof(why)))
			fail_msg("%s, %s: allocator's region: %s", w->cfg->name, when, why);
	}
	for (uint64_t o = w->vic_off; o < w->vic_off + w->vic_len; o += chunk) {
		uint64_t n = w->vic_off + w->vic_len - o < chunk ? w->vic_off + w->vic_len - o : chunk;
		assert_int_equal(blk_pread(w->b, o, buf, n), 0);
		for (uint64_t i = 0; i < n; i += SECTOR)
			if (sector_seq(buf + i, MAGIC_VICTIM, o + i, why, sizeof(why)) < 0)
				fail_msg("%s, %s: victim region: %s", w->cfg->name, when, why);
	}
	free(buf);
}

static void stress(const char *path, const struct stress_cfg *cfg)
{
	enum { QD = 32 };
	uint32_t cs = cfg->cluster;
	struct world w = { .cfg = cfg };
	struct oreq q[QD];
	pthread_t th[3];
	unsigned nth = 0, st = cs ^ 0x5eed, done = 0, idle = 0;
	bool alive = true;

	w.own_off = 0;
	w.own_len = 48ull * cs;
	w.vic_off = w.own_len;
	w.vic_len = 4ull * cs;
	w.alc_off = w.vic_off + w.vic_len;
	w.alc_len = 32ull * cs;
	w.own_model = calloc(w.own_len / SECTOR, sizeof(uint32_t));
	w.alc_model = calloc(w.alc_len / SECTOR, sizeof(uint32_t));
	w.busy = calloc((w.own_len + w.vic_len) / BLOCK, 1);
	assert_true(w.own_model && w.alc_model && w.busy);
	pthread_mutex_init(&w.err_lock, NULL);
	create_qcow2(path, w.alc_off + w.alc_len, cs, cfg->ext_l2);
	w.b = open_qcow2(path, cfg->cache);
	struct blk_aio *a = ring_ctx(QD);
	for (unsigned i = 0; i < QD; i++) {
		q[i] = (struct oreq){ .w = &w, .buf = abuf(3ull * cs + BLOCK) };
	}
	/* half the owner's region starts allocated (in place from the start) */
	for (uint64_t o = w.own_off; o < w.own_off + w.own_len / 2; o += cs) {
		uint32_t seq = next_seq(&w);
		stamp_range(q[0].buf, o, cs, MAGIC_OWN, seq);
		assert_int_equal(blk_pwrite(w.b, o, q[0].buf, cs, 0), 0);
		for (uint64_t i = 0; i < cs; i += SECTOR)
			w.own_model[(o + i) / SECTOR] = seq;
	}
	assert_int_equal(pthread_create(&th[nth++], NULL, discarder, &w), 0);
	assert_int_equal(pthread_create(&th[nth++], NULL, allocator, &w), 0);
	if (cfg->snapshots)
		assert_int_equal(pthread_create(&th[nth++], NULL, snapshotter, &w), 0);

	while (alive) {
		unsigned inflight = 0;
		for (unsigned i = 0; i < QD; i++) {
			if (!q[i].in_flight && done < cfg->ops && !atomic_load(&w.failed))
				owner_submit(&w, a, &q[i], &st);
			inflight += q[i].in_flight;
		}
		if (!inflight && (done >= cfg->ops || atomic_load(&w.failed)))
			break;
		struct pollfd p = { .fd = blk_aio_fd(a), .events = POLLIN };
		if (poll(&p, 1, 100) == 0 && ++idle > 300) {
			world_fail(&w, "no completion for 30 s with %u requests in flight", inflight);
			alive = false;
		}
		unsigned n = blk_aio_reap(a);
		if (n)
			idle = 0;
		done = 0;
		for (unsigned k = 0; k < NKINDS; k++)
			done += (unsigned)w.counts[k];
	}
	atomic_store(&w.stop, true);
	for (unsigned i = 0; i < nth; i++)
		pthread_join(th[i], NULL);
	blk_aio_drain(a);
	blk_aio_free(a);
	if (atomic_load(&w.failed))
		fail_msg("%s: %s", cfg->name, w.err);
	print_message("%s: %lu writes, %lu reads in place or not, %lu victim writes, %lu victim "
		      "reads, %lu zeroes, %lu discards, %lu flushes; %lu discards, %lu allocator "
		      "steps, %lu snapshots beside\n", cfg->name, w.counts[OWN_WRITE],
		      w.counts[OWN_READ], w.counts[VIC_WRITE], w.counts[VIC_READ],
		      w.counts[OWN_ZERO], w.counts[OWN_DISCARD], w.counts[FLUSH], w.discards,
		      w.allocs, w.snaps);
	verify_final(&w, "after the run");
	blk_close(w.b);
	w.b = open_qcow2(path, cfg->cache);
	expect_check_clean(w.b);
	verify_final(&w, "after reopening");
	blk_close(w.b);
	for (unsigned i = 0; i < QD; i++)
		free(q[i].buf);
	free(w.own_model);
	free(w.alc_model);
	free(w.busy);
	pthread_mutex_destroy(&w.err_lock);
}

static const struct stress_cfg stress_cfgs[] = {
	{ "64k writeback", 65536, false, BLK_CACHE_WRITEBACK, false, 20000 },
	{ "64k none", 65536, false, BLK_CACHE_NONE, false, 12000 },
	{ "4k none", 4096, false, BLK_CACHE_NONE, false, 12000 },
	{ "64k extended L2 writeback", 65536, true, BLK_CACHE_WRITEBACK, false, 12000 },
	{ "64k writeback with snapshots", 65536, false, BLK_CACHE_WRITEBACK, true, 12000 },
};

/* The stress image lives in memory when it can (tmpfs takes O_DIRECT too):
 * with flushes that cost nothing, a cluster is freed and handed on while
 * the ring is still busy with it, far more often than on a disk, so a
 * broken in-flight guard fails here every run rather than now and then. */
struct stress_state {
	void *scratch;
	char dir[1024];
};

static int stress_setup(void **state)
{
	struct stress_state *st = calloc(1, sizeof(*st));

	assert_non_null(st);
	scratch_setup(&st->scratch);
	snprintf(st->dir, sizeof(st->dir), "/dev/shm/drover-qcow2aio-XXXXXX");
	if (!mkdtemp(st->dir))
		snprintf(st->dir, sizeof(st->dir), "%s", ((struct scratch *)st->scratch)->dir);
	*state = st;
	return 0;
}

static int stress_teardown(void **state)
{
	struct stress_state *st = *state;

	if (strcmp(st->dir, ((struct scratch *)st->scratch)->dir) != 0)
		nftw(st->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	scratch_teardown(&st->scratch);
	free(st);
	return 0;
}

static void test_stress(void **state, unsigned i)
{
	struct stress_state *st = *state;
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/stress.qcow2", st->dir);
	stress(path, &stress_cfgs[i]);
}

static void test_stress_writeback(void **state) { test_stress(state, 0); }
static void test_stress_none(void **state) { test_stress(state, 1); }
static void test_stress_small_clusters(void **state) { test_stress(state, 2); }
static void test_stress_extended_l2(void **state) { test_stress(state, 3); }
static void test_stress_snapshots(void **state) { test_stress(state, 4); }

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, scratch_setup, scratch_teardown)
#define S(f) cmocka_unit_test_setup_teardown(f, stress_setup, stress_teardown)
	const struct CMUnitTest tests[] = {
		T(test_fast_path_needs_no_worker),        /* first: counts threads */
		T(test_round_trips),
		T(test_unaligned_requests),
		T(test_snapshot_waits_for_requests),
		T(test_free_waits_for_requests),
		T(test_subcluster_rewrite_waits),
		S(test_stress_writeback),
		S(test_stress_none),
		S(test_stress_small_clusters),
		S(test_stress_extended_l2),
		S(test_stress_snapshots),
	};
#undef T
#undef S
	return cmocka_run_group_tests(tests, NULL, NULL);
}
