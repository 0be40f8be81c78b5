/* Bad qcow2 input: truncated and corrupted headers and tables, backing
 * loops, missing backing files, sizes past the limits, a read-only file
 * opened for writing. Each is refused with one clear error naming the
 * problem, or (damage found only on access) fails that access with -EIO;
 * nothing crashes (this file also runs under ASan with -DDROVER_SANITIZE). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "blk.h"
#include "blk_int.h"
#include "blk_testutil.h"
#include "util.h"

static const struct blk_driver *const qcow2_linked __attribute__((used)) = &blk_driver_qcow2;

#define IMG_SIZE (4 * MiB)

/* A valid image with data in its first clusters and one snapshot. */
static void make_good(const char *path)
{
	struct blk_create_opts o = { .format = "qcow2", .size = IMG_SIZE };
	struct blk_open_opts oo = { .format = "qcow2" };
	char err[512] = "";
	uint8_t buf[3 * 65536];
	struct blk *b;

	assert_int_equal(blk_create(path, &o, err, sizeof(err)), 0);
	assert_int_equal(blk_open(&b, path, &oo, err, sizeof(err)), 0);
	memset(buf, 0x5a, sizeof(buf));
	assert_int_equal(blk_pwrite(b, 0, buf, sizeof(buf), 0), 0);
	assert_int_equal(blk_pwrite_compressed(b, 3 * 65536, buf, 65536), 0);
	assert_int_equal(blk_snapshot_create(b, "snap", err, sizeof(err)), 0);
	blk_close(b);
}

static void put64(const char *path, off_t off, uint64_t v)
{
	int fd = open(path, O_WRONLY);
	v = htobe64(v);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, &v, 8, off), 8);
	close(fd);
}

static void put32(const char *path, off_t off, uint32_t v)
{
	int fd = open(path, O_WRONLY);
	v = htobe32(v);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, &v, 4, off), 4);
	close(fd);
}

static uint64_t get64(const char *path, off_t off)
{
	uint64_t v;
	slurp(path, &v, 8, off);
	return be64toh(v);
}

static int try_open(const char *path, bool ro, char *err, size_t errlen, struct blk **out)
{
	struct blk_open_opts o = { .format = "qcow2", .readonly = ro };
	struct blk *b = NULL;
	err[0] = 0;
	int r = blk_open(&b, path, &o, err, errlen);
	if (out)
		*out = r == 0 ? b : NULL;
	else if (r == 0)
		blk_close(b);
	return r;
}

enum field { F32, F64, TRUNC };
struct header_case {
	const char *what;
	enum field kind;
	off_t off;
	uint64_t value;
	const char *message;     /* expected in the error */
};

static const struct header_case header_cases[] = {
	{ "truncated to 50 bytes", TRUNC, 0, 50, "too short for a header" },
	{ "truncated to 90 bytes", TRUNC, 0, 90, "too short for a version 3 header" },
	{ "bad magic", F32, 0, 0x12345678, "bad magic" },
	{ "version 4", F32, 4, 4, "version 4 not supported" },
	{ "version 1", F32, 4, 1, "version 1 not supported" },
	{ "cluster_bits 40", F32, 20, 40, "cluster_bits 40 out of range" },
	{ "cluster_bits 8", F32, 20, 8, "cluster_bits 8 out of range" },
	{ "header_length 100", F32, 100, 100, "header_length 100 invalid" },
	{ "header_length 1M", F32, 100, 1 << 20, "header_length 1048576 invalid" },
	{ "refcount_order 7", F32, 96, 7, "refcount_order 7 out of range" },
	{ "encryption", F32, 32, 2, "encrypted images" },
	{ "huge size", F64, 24, 1ull << 62, "too large" },
	{ "size past the L1 table", F64, 24, 1ull << 40, "L1 table of" },
	{ "L1 outside the file", F64, 40, 1ull << 40, "L1 table (offset 0x10000000000" },
	{ "L1 unaligned", F64, 40, 0x30001, "L1 table offset 0x30001 is not cluster aligned" },
	{ "L1 size huge", F32, 36, 0x7fffffff, "exceeds" },
	{ "L1 over the header", F64, 40, 0, "L1 table at offset 0 overlaps the header" },
	{ "refcount table outside", F64, 48, 1ull << 44, "refcount table (offset" },
	{ "refcount table empty", F32, 56, 0, "refcount table of 0 clusters" },
	{ "refcount table huge", F32, 56, 1 << 20, "refcount table of 1048576 clusters" },
	{ "too many snapshots", F32, 60, 1 << 20, "1048576 snapshots" },
	{ "snapshot table outside", F64, 64, 1ull << 40, "snapshot table (offset" },
	{ "backing name too long", F32, 16, 5000, "backing file name" },
	{ "unknown incompatible bit", F64, 72, 1ull << 40, "unsupported incompatible feature" },
	{ "zstd without the type byte", F64, 72, 1ull << 3, "compression_type 0" },
};

static void test_bad_headers(void **state)
{
	struct scratch *s = *state;
	char good[PATH_MAX], bad[PATH_MAX], err[512];
	char cmd[2 * PATH_MAX + 16];

	scratch_path(s, "good.qcow2", good);
	scratch_path(s, "bad.qcow2", bad);
	make_good(good);
	for (size_t i = 0; i < ARRAY_SIZE(header_cases); i++) {
		const struct header_case *c = &header_cases[i];
		snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", good, bad);
		assert_int_equal(system(cmd), 0);
		if (c->kind == TRUNC)
			assert_int_equal(truncate(bad, (off_t)c->value), 0);
		else if (c->kind == F32)
			put32(bad, c->off, (uint32_t)c->value);
		else
			put64(bad, c->off, c->value);
		if (!strcmp(c->what, "backing name too long"))
			put64(bad, 8, 200);
		int r = try_open(bad, true, err, sizeof(err), NULL);
		if (r == 0)
			fail_msg("%s: opened", c->what);
		if (!strstr(err, c->message))
			fail_msg("%s: error '%s' does not say '%s'", c->what, err, c->message);
		if (!strstr(err, bad))
			fail_msg("%s: error '%s' does not name the file", c->what, err);
	}
}

/* zstd images written by QEMU: refused with the reason. */
static void test_zstd_refused(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX], cmd[PATH_MAX + 128], err[512];

	if (system("qemu-img --version >/dev/null 2>&1") != 0)
		skip();
	scratch_path(s, "z.qcow2", path);
	snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qcow2 -o compression_type=zstd '%s' 1M",
		 path);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(try_open(path, true, err, sizeof(err), NULL), -ENOTSUP);
	assert_non_null(strstr(err, "zstd"));
}

/* Damage in the tables below the header: found on access. */
static void test_bad_tables(void **state)
{
	struct scratch *s = *state;
	char good[PATH_MAX], bad[PATH_MAX], err[512], cmd[2 * PATH_MAX + 16];
	uint8_t buf[65536];
	struct blk *b;

	scratch_path(s, "good.qcow2", good);
	scratch_path(s, "bad.qcow2", bad);
	make_good(good);
	uint64_t l1 = get64(good, 40);
	uint64_t l2 = get64(good, (off_t)l1) & 0x00fffffffffffe00ull;

	const struct {
		const char *what;
		off_t off;
		uint64_t value;
		bool write;     /* the damage shows on a write, not a read */
	} cases[] = {
		{ "L2 table outside the file", (off_t)l1, (1ull << 40) | (1ull << 63), false },
		{ "L2 table unaligned", (off_t)l1, 0x30200 | (1ull << 63), false },
		{ "data cluster unaligned", (off_t)l2, 0x50200 | (1ull << 63), false },
		{ "compressed cluster outside", (off_t)(l2 + 3 * 8),
		  (1ull << 62) | (1ull << 45), false },
		{ "data cluster over the L1 table (write)", (off_t)(l2 + 8 * 8),
		  l1 | (1ull << 63), true },
		{ "refcount block outside (write)", 0, 0, true },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", good, bad);
		assert_int_equal(system(cmd), 0);
		if (!strcmp(cases[i].what, "refcount block outside (write)"))
			put64(bad, (off_t)get64(bad, 48), 1ull << 50);
		else
			put64(bad, cases[i].off, cases[i].value);
		assert_int_equal(try_open(bad, !cases[i].write, err, sizeof(err), &b), 0);
		if (!cases[i].write) {
			int r = blk_pread(b, 0, buf, sizeof(buf));
			if (!strcmp(cases[i].what, "compressed cluster outside"))
				r = blk_pread(b, 3 * 65536, buf, sizeof(buf));
			if (r != -EIO)
				fail_msg("%s: read returned %d", cases[i].what, r);
		} else {
			memset(buf, 1, sizeof(buf));
			int r = blk_pwrite(b, 8 * 65536, buf, 4096, 0);
			r = r ? r : blk_pwrite(b, 2 * MiB, buf, sizeof(buf), 0);
			r = r ? r : blk_flush(b);
			/* The header must be intact whatever happened. */
			uint8_t magic[4];
			slurp(bad, magic, 4, 0);
			assert_memory_equal(magic, "QFI\xfb", 4);
			if (r != -EIO)
				fail_msg("%s: write returned %d", cases[i].what, r);
		}
		struct blk_check_result res;
		assert_int_equal(blk_check(b, 0, &res), 0);
		if (!res.corruptions)
			fail_msg("%s: check found no corruption", cases[i].what);
		blk_check_result_free(&res);
		blk_close(b);
	}
}

/* The snapshot table with garbage in it. */
static void test_bad_snapshot_table(void **state)
{
	struct scratch *s = *state;
	char good[PATH_MAX], bad[PATH_MAX], err[512], cmd[2 * PATH_MAX + 16];

	scratch_path(s, "good.qcow2", good);
	scratch_path(s, "bad.qcow2", bad);
	make_good(good);
	uint64_t st = get64(good, 64);
	const struct {
		const char *what;
		off_t off;
		int width;
		uint64_t value;
		const char *message;
	} cases[] = {
		{ "L1 of a snapshot outside", (off_t)st, 64, 1ull << 42, "misplaced" },
		{ "L1 of a snapshot huge", (off_t)st + 8, 32, 0x7fffffff, "too large" },
		{ "extra data huge", (off_t)st + 36, 32, 1 << 30, "extra data" },
		{ "entries past the end", 60, 32, 60000, "snapshot table" },
		{ "v3 entry without extra data", (off_t)st + 36, 32, 0, "lacks the extra data" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", good, bad);
		assert_int_equal(system(cmd), 0);
		if (cases[i].width == 64)
			put64(bad, cases[i].off, cases[i].value);
		else
			put32(bad, cases[i].off, (uint32_t)cases[i].value);
		assert_true(try_open(bad, true, err, sizeof(err), NULL) < 0);
		if (!strstr(err, cases[i].message))
			fail_msg("%s: error '%s' does not say '%s'", cases[i].what, err,
				 cases[i].message);
	}
}

static void test_backing_loops_and_missing(void **state)
{
	struct scratch *s = *state;
	char a[PATH_MAX], b2[PATH_MAX], self[PATH_MAX], err[512];
	struct blk_create_opts o = { .format = "qcow2", .size = IMG_SIZE };
	struct blk *b;

	scratch_path(s, "a.qcow2", a);
	scratch_path(s, "b.qcow2", b2);
	scratch_path(s, "self.qcow2", self);
	assert_int_equal(blk_create(a, &o, err, sizeof(err)), 0);
	o.backing_file = "a.qcow2";
	o.backing_format = "qcow2";
	assert_int_equal(blk_create(b2, &o, err, sizeof(err)), 0);
	/* Close the loop: a's backing is b. */
	assert_int_equal(try_open(a, false, err, sizeof(err), &b), 0);
	assert_int_equal(blk_change_backing(b, "b.qcow2", "qcow2", err, sizeof(err)), 0);
	blk_close(b);
	assert_int_equal(try_open(b2, true, err, sizeof(err), NULL), -ELOOP);
	assert_non_null(strstr(err, "loop"));
	/* An image that is its own backing file. */
	struct blk_create_opts so = { .format = "qcow2", .size = IMG_SIZE,
				      .backing_file = "self.qcow2" };
	assert_int_equal(blk_create(self, &so, err, sizeof(err)), 0);
	assert_int_equal(try_open(self, true, err, sizeof(err), NULL), -ELOOP);
	assert_non_null(strstr(err, "loop"));
	/* A missing backing file names it. */
	unlink(a);
	assert_true(try_open(b2, true, err, sizeof(err), NULL) < 0);
	assert_non_null(strstr(err, "a.qcow2"));
}

static void test_create_limits(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX], err[512];
	const struct {
		struct blk_create_opts o;
		const char *message;
	} cases[] = {
		{ { .format = "qcow2", .size = 1ull << 62 }, "too large" },
		{ { .format = "qcow2", .size = 1ull << 40, .cluster_size = 512 }, "too large" },
		{ { .format = "qcow2", .size = 1000 }, "multiple of 512" },
		{ { .format = "qcow2", .size = MiB, .cluster_size = 4 * MiB }, "cluster size" },
		{ { .format = "qcow2", .size = MiB, .cluster_size = 3000 }, "cluster size" },
		{ { .format = "qcow2", .size = MiB, .cluster_size = 256 }, "cluster size" },
		{ { .format = "qcow2", .size = MiB, .refcount_bits = 3 }, "refcount bits" },
		{ { .format = "qcow2", .size = MiB, .refcount_bits = 128 }, "refcount bits" },
		{ { .format = "qcow2", .size = MiB, .compat = 2, .refcount_bits = 8 }, "16-bit" },
		{ { .format = "qcow2", .size = MiB, .compat = 2, .lazy_refcounts = true }, "lazy" },
		{ { .format = "qcow2", .size = MiB, .compat = 4 }, "compat level 4" },
		{ { .format = "qcow2", .size = MiB, .extended_l2 = true, .cluster_size = 4096 },
		  "extended L2" },
		{ { .format = "qcow2", .size = MiB, .prealloc = BLK_PREALLOC_FULL,
		    .backing_file = "x" }, "preallocation and a backing file" },
		{ { .format = "qcow2", .size = MiB, .backing_format = "raw" }, "needs a backing" },
	};

	scratch_path(s, "lim.qcow2", path);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		err[0] = 0;
		assert_true(blk_create(path, &cases[i].o, err, sizeof(err)) < 0);
		if (!strstr(err, cases[i].message))
			fail_msg("case %zu: error '%s' does not say '%s'", i, err, cases[i].message);
		assert_int_equal(access(path, F_OK), -1);   /* nothing left behind */
	}
	/* Growing past the limits of the cluster size. */
	struct blk_create_opts o = { .format = "qcow2", .size = MiB, .cluster_size = 512 };
	struct blk *b;
	assert_int_equal(blk_create(path, &o, err, sizeof(err)), 0);
	assert_int_equal(try_open(path, false, err, sizeof(err), &b), 0);
	assert_int_equal(blk_truncate(b, 1ull << 40, BLK_PREALLOC_OFF, err, sizeof(err)), -EFBIG);
	assert_non_null(strstr(err, "too large"));
	blk_close(b);
}

/* A file the caller may not write, opened for writing: refused (as an
 * unprivileged user, since root writes anything). */
static void test_readonly_file(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX], err[512];
	struct blk_create_opts o = { .format = "qcow2", .size = MiB };

	scratch_path(s, "ro.qcow2", path);
	assert_int_equal(blk_create(path, &o, err, sizeof(err)), 0);
	assert_int_equal(chmod(path, 0444), 0);
	assert_int_equal(chmod(s->dir, 0755), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (geteuid() == 0 && setuid(65534) < 0)
			_exit(77);
		int r = try_open(path, false, err, sizeof(err), NULL);
		if (r != -EACCES || !strstr(err, path))
			_exit(1);
		r = try_open(path, true, err, sizeof(err), NULL);   /* reading is fine */
		_exit(r == 0 ? 0 : 2);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	if (WEXITSTATUS(st) == 77)
		skip();
	assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_bad_headers, scratch_setup, scratch_teardown),
		cmocka_unit_test_setup_teardown(test_zstd_refused, scratch_setup, scratch_teardown),
		cmocka_unit_test_setup_teardown(test_bad_tables, scratch_setup, scratch_teardown),
		cmocka_unit_test_setup_teardown(test_bad_snapshot_table, scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_backing_loops_and_missing, scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_create_limits, scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_readonly_file, scratch_setup,
						scratch_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
