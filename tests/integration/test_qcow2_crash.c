/* Crash safety of the qcow2 driver: a child process writes to an image
 * through drover (allocating writes, zero writes, discards, flushes) and
 * logs each request before it starts and each flush after it completes;
 * the parent kills it with SIGKILL at a random moment, many times over,
 * and then requires that
 *  - `qemu-img check` finds no corruption (leaked clusters are allowed;
 *    images with lazy refcounts are first opened writable by drover, which
 *    repairs them as QEMU does, and must then check clean);
 *  - every write that completed before the last completed flush reads
 *    back, byte for byte (bytes a later, unflushed request touched may hold
 *    either version).
 * Half the rounds kill at a random time; the other half run the writer
 * under strace's fault injection, which kills it right before its Nth
 * write or fdatasync system call (N random), so that kills land between
 * any two metadata writes, not just where the writer spends its time.
 * Rounds: QCOW2_CRASH_ROUNDS per configuration (default 12). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <time.h>

#include "blk.h"
#include "qcow2-testutil.h"

#define MiB (1024ull * 1024)
#define IMG_SIZE (32 * MiB)

enum op { OP_WRITE = 'W', OP_ZERO = 'Z', OP_DISCARD = 'D', OP_FLUSH = 'F' };

struct rec {
	char op;
	uint64_t seq, off, len;
};

/* Deterministic contents of write seq. */
static void fill_seq(uint8_t *buf, uint64_t len, uint64_t seq)
{
	uint64_t s = seq * 0x9e3779b97f4a7c15ull + 1;
	qt_fill(buf, len, &s, seq % 3 == 0);
}

static void log_rec(int fd, char op, uint64_t seq, uint64_t off, uint64_t len)
{
	char line[96];
	int n = snprintf(line, sizeof(line), "%c %llu %llu %llu\n", op, (unsigned long long)seq,
			 (unsigned long long)off, (unsigned long long)len);
	if (write(fd, line, (size_t)n) != n)
		_exit(3);
}

#define CHILD_MAX_OPS 3000

static char self_exe[PATH_MAX];

static void child(const char *img, const char *logpath, uint64_t first_seq, uint64_t seed,
		  enum blk_cache cache)
{
	struct blk_open_opts o = { .format = "qcow2", .cache = cache };
	struct blk *b;
	char err[512];
	int logfd = open(logpath, O_WRONLY | O_APPEND);
	uint8_t *buf = malloc(4 * MiB);

	if (logfd < 0 || !buf || blk_open(&b, img, &o, err, sizeof(err)) < 0) {
		fprintf(stderr, "crash child: %s\n", err);
		_exit(2);
	}
	uint32_t cs = blk_cluster_size(b);
	for (uint64_t seq = first_seq; seq < first_seq + CHILD_MAX_OPS; seq++) {
		uint64_t r = qt_rand(&seed) % 100;
		uint64_t off = qt_rand(&seed) % IMG_SIZE;
		uint64_t len = 1 + qt_rand(&seed) % (r < 10 ? 4 * MiB : 4 * (uint64_t)cs + 3000);
		if (off + len > IMG_SIZE)
			len = IMG_SIZE - off;
		if (r < 70) {
			fill_seq(buf, len, seq);
			log_rec(logfd, OP_WRITE, seq, off, len);
			if (blk_pwrite(b, off, buf, len, 0) < 0)
				_exit(4);
		} else if (r < 78) {
			log_rec(logfd, OP_ZERO, seq, off, len);
			if (blk_write_zeroes(b, off, len, r & 1 ? BLK_ZERO_MAY_UNMAP : 0) < 0)
				_exit(5);
		} else if (r < 85) {
			log_rec(logfd, OP_DISCARD, seq, off, len);
			if (blk_discard(b, off, len) < 0)
				_exit(6);
		} else {
			if (blk_flush(b) < 0)
				_exit(7);
			log_rec(logfd, OP_FLUSH, seq, 0, 0);
		}
	}
	_exit(0);   /* without closing: a crash after the last request */
}

/* Runs the writer under strace, killed before its nth syscall of `which`. */
static void child_under_strace(const char *img, const char *logpath, uint64_t first_seq,
			       uint64_t seed, enum blk_cache cache, const char *which,
			       unsigned nth)
{
	char a_seq[32], a_seed[32], a_cache[16], inject[128];
	snprintf(a_seq, sizeof(a_seq), "%llu", (unsigned long long)first_seq);
	snprintf(a_seed, sizeof(a_seed), "%llu", (unsigned long long)seed);
	snprintf(a_cache, sizeof(a_cache), "%d", (int)cache);
	snprintf(inject, sizeof(inject), "inject=%s:signal=KILL:when=%u", which, nth);
	int devnull = open("/dev/null", O_WRONLY);
	if (devnull >= 0) {
		dup2(devnull, 1);
		dup2(devnull, 2);
	}
	execlp("strace", "strace", "-f", "-qq", "-o", "/dev/null", "-e", which, "-e", inject,
	       self_exe, "--child", img, logpath, a_seq, a_seed, a_cache, (char *)NULL);
	_exit(127);
}

static bool have_strace(void)
{
	return system("strace -V >/dev/null 2>&1") == 0;
}

struct round_state {
	struct qt_model m;       /* what the image holds after the last verified round */
	uint64_t next_seq;
};

/* Replays the log onto the model up to the last flush; marks in `maybe`
 * the bytes later requests may have touched. */
static void replay(const char *logpath, struct round_state *rs, uint8_t *maybe, uint32_t cs)
{
	FILE *f = fopen(logpath, "r");
	struct rec *recs = NULL;
	size_t n = 0, cap = 0, last_flush = 0;
	char op;
	unsigned long long seq, off, len;

	assert_non_null(f);
	while (fscanf(f, " %c %llu %llu %llu", &op, &seq, &off, &len) == 4) {
		if (n == cap) {
			cap = cap ? cap * 2 : 256;
			recs = realloc(recs, cap * sizeof(*recs));
			assert_non_null(recs);
		}
		recs[n++] = (struct rec){ op, seq, off, len };
		if (op == OP_FLUSH)
			last_flush = n;
		if (seq >= rs->next_seq)
			rs->next_seq = seq + 1;
	}
	fclose(f);
	uint8_t *buf = malloc(4 * MiB);
	assert_non_null(buf);
	memset(maybe, 0, IMG_SIZE);
	for (size_t i = 0; i < n; i++) {
		struct rec *r = &recs[i];
		uint64_t lo = r->off, hi = r->off + r->len;
		if (r->op == OP_DISCARD) {
			lo = (r->off + cs - 1) / cs * cs;
			hi = hi >= IMG_SIZE ? IMG_SIZE : hi / cs * cs;
			if (hi <= lo)
				continue;
		}
		if (r->op == OP_FLUSH)
			continue;
		if (i >= last_flush) {
			memset(maybe + lo, 1, hi - lo);
			continue;
		}
		if (r->op == OP_WRITE) {
			fill_seq(buf, r->len, r->seq);
			memcpy(rs->m.data + r->off, buf, r->len);
		} else {
			memset(rs->m.data + lo, 0, hi - lo);
		}
	}
	free(buf);
	free(recs);
}

struct crash_case {
	const char *name;
	struct blk_create_opts o;
	enum blk_cache cache;
};

static void run_case(struct qt *t, const struct crash_case *c, unsigned rounds, uint64_t seed)
{
	char img[PATH_MAX], logpath[PATH_MAX], err[512];
	struct round_state rs = { { calloc(1, IMG_SIZE), IMG_SIZE }, 1 };
	uint8_t *maybe = malloc(IMG_SIZE), *got = malloc(IMG_SIZE);

	assert_non_null(rs.m.data);
	assert_non_null(maybe);
	assert_non_null(got);
	qt_path(t, "crash.qcow2", img);
	qt_path(t, "crash.log", logpath);
	unlink(img);
	assert_int_equal(blk_create(img, &c->o, err, sizeof(err)), 0);
	bool strace_ok = have_strace();
	for (unsigned round = 0; round < rounds; round++) {
		int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		assert_true(fd >= 0);
		close(fd);
		bool traced = (round & 1) && strace_ok;
		const char *which = qt_rand(&seed) % 3 ? "pwritev2,pwritev,pwrite64"
						       : "fdatasync,fsync";
		unsigned nth = 1 + (unsigned)(qt_rand(&seed) % (which[0] == 'p' ? 600 : 60));
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0 && traced)
			child_under_strace(img, logpath, rs.next_seq, seed * 1000 + round, c->cache,
					   which, nth);
		else if (pid == 0)
			child(img, logpath, rs.next_seq, seed * 1000 + round, c->cache);
		int st;
		if (!traced) {
			struct timespec d = { 0, (long)(20 + qt_rand(&seed) % 400) * 1000000L };
			nanosleep(&d, NULL);
			kill(pid, SIGKILL);
			assert_int_equal(waitpid(pid, &st, 0), pid);
			if (!WIFSIGNALED(st))
				fail_msg("%s round %u: the writer exited on its own (status %d)",
					 c->name, round, WEXITSTATUS(st));
		} else {
			assert_int_equal(waitpid(pid, &st, 0), pid);
			if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
				fail_msg("%s round %u: strace could not run the writer", c->name,
					 round);
		}

		if (c->o.lazy_refcounts) {
			/* Dirty: drover repairs it on a writable open. */
			struct blk *b = qt_open(img, "qcow2", false);
			blk_close(b);
			if (qt_run(t, "qemu-img check -f qcow2 '%s'", img) != 0)
				fail_msg("%s round %u: after the repair on open, qemu-img check: %s",
					 c->name, round, t->out);
		} else {
			int rc = qt_run(t, "qemu-img check -f qcow2 '%s'", img);
			if ((rc != 0 && rc != 3) || strstr(t->out, "ERROR"))
				fail_msg("%s round %u: qemu-img check exit %d: %s", c->name, round,
					 rc, t->out);
		}

		replay(logpath, &rs, maybe, c->o.cluster_size ? c->o.cluster_size : 65536);
		struct blk *b = qt_open(img, "qcow2", true);
		assert_int_equal(blk_pread(b, 0, got, IMG_SIZE), 0);
		blk_close(b);
		for (uint64_t i = 0; i < IMG_SIZE; i++) {
			if (maybe[i])
				rs.m.data[i] = got[i];   /* either version; now known */
			else if (got[i] != rs.m.data[i])
				fail_msg("%s round %u: flushed byte %llu reads %#x, expected %#x",
					 c->name, round, (unsigned long long)i, got[i],
					 rs.m.data[i]);
		}
		if (round % 4 == 3 && !c->o.lazy_refcounts) {
			/* Leaks from earlier crashes: drover repairs, qemu-img agrees. */
			struct blk_check_result r;
			b = qt_open(img, "qcow2", false);
			assert_int_equal(blk_check(b, BLK_CHECK_FIX_LEAKS, &r), 0);
			assert_int_equal(r.corruptions, 0);
			assert_int_equal(r.leaks, 0);
			blk_check_result_free(&r);
			blk_close(b);
			if (qt_run(t, "qemu-img check -f qcow2 '%s'", img) != 0)
				fail_msg("%s round %u: after check -r leaks, qemu-img check: %s",
					 c->name, round, t->out);
		}
	}
	free(rs.m.data);
	free(maybe);
	free(got);
}

static unsigned rounds_wanted(void)
{
	const char *e = getenv("QCOW2_CRASH_ROUNDS");
	unsigned n = e ? (unsigned)atoi(e) : 12;
	return n ? n : 12;
}

static void test_kill_during_writes(void **state)
{
	static const struct crash_case cases[] = {
		{ "64k", { .format = "qcow2", .size = IMG_SIZE }, BLK_CACHE_WRITEBACK },
		{ "4k-v2", { .format = "qcow2", .size = IMG_SIZE, .cluster_size = 4096,
			     .compat = 2 }, BLK_CACHE_WRITEBACK },
		{ "512-none", { .format = "qcow2", .size = IMG_SIZE, .cluster_size = 512 },
		  BLK_CACHE_NONE },
		{ "4k-rc1", { .format = "qcow2", .size = IMG_SIZE, .cluster_size = 4096,
			      .refcount_bits = 1 }, BLK_CACHE_WRITEBACK },
		{ "lazy", { .format = "qcow2", .size = IMG_SIZE, .lazy_refcounts = true },
		  BLK_CACHE_WRITEBACK },
		{ "writethrough", { .format = "qcow2", .size = IMG_SIZE, .cluster_size = 16384 },
		  BLK_CACHE_WRITETHROUGH },
	};
	struct qt *t = *state;
	unsigned rounds = rounds_wanted();

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		run_case(t, &cases[i], rounds, 17 + i);
}

int main(int argc, char **argv)
{
	ssize_t n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
	if (n > 0)
		self_exe[n] = 0;
	if (argc == 7 && !strcmp(argv[1], "--child"))
		child(argv[2], argv[3], strtoull(argv[4], NULL, 10), strtoull(argv[5], NULL, 10),
		      (enum blk_cache)atoi(argv[6]));
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_kill_during_writes, qt_setup, qt_teardown),
	};
	if (system("qemu-img --version >/dev/null 2>&1") != 0) {
		fprintf(stderr, "qemu-img not found: install Debian's qemu-utils\n");
		return 77;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
