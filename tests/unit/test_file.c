/* The "file" protocol driver (storage/file.c) on real files in a scratch
 * directory and, when this process may make one, on a loop block device:
 * reads past the end are zeroes, cache modes reach the open flags,
 * O_DIRECT takes unaligned requests byte-exactly and concurrent writers
 * never lose each other's bytes, discard and write_zeroes make holes, block
 * status follows the holes, and truncate/create preallocate as asked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "blk.h"
#include "blk_int.h"
#include "blk_testutil.h"
#include "util.h"

static struct blk *open_file(const char *path, enum blk_cache cache, bool ro)
{
	struct blk_open_opts o = { .format = "file", .cache = cache, .readonly = ro };
	struct blk *b = NULL;
	char err[256] = "";

	if (blk_open(&b, path, &o, err, sizeof(err)) < 0)
		fail_msg("opening %s: %s", path, err);
	assert_string_equal(blk_format(b), "file");
	return b;
}

static void test_open_missing_names_the_file(void **state)
{
	struct scratch *s = *state;
	struct blk_open_opts o = { .format = "file" };
	char path[PATH_MAX], err[256] = "";
	struct blk *b = NULL;

	scratch_path(s, "nope.img", path);
	assert_int_equal(blk_open(&b, path, &o, err, sizeof(err)), -ENOENT);
	assert_null(b);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, "No such file"));
}

static void test_open_directory_refused(void **state)
{
	struct scratch *s = *state;
	struct blk_open_opts o = { .format = "file", .readonly = true };
	char err[256] = "";
	struct blk *b = NULL;

	assert_true(blk_open(&b, s->dir, &o, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, s->dir));
}

static void check_reads_past_eof(const char *path, enum blk_cache cache)
{
	struct blk *b = open_file(path, cache, true);
	uint8_t buf[8192];

	assert_int_equal(blk_size(b), 1000);
	assert_int_equal(blk_pread(b, 0, buf, sizeof(buf)), 0);
	for (size_t i = 0; i < 1000; i++)
		assert_int_equal(buf[i], pattern_at(3, i));
	assert_true(all_bytes(buf + 1000, sizeof(buf) - 1000, 0));
	memset(buf, 0x55, sizeof(buf));
	assert_int_equal(blk_pread(b, 990, buf, 100), 0);
	for (size_t i = 0; i < 10; i++)
		assert_int_equal(buf[i], pattern_at(3, 990 + i));
	assert_true(all_bytes(buf + 10, 90, 0));
	memset(buf, 0x55, sizeof(buf));
	assert_int_equal(blk_pread(b, 1 * MiB, buf, 4096), 0);
	assert_true(all_bytes(buf, 4096, 0));
	blk_close(b);
}

static void test_reads_past_eof_are_zero(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX];

	scratch_path(s, "short.img", path);
	make_file(path, 1000, 3);
	check_reads_past_eof(path, BLK_CACHE_WRITEBACK);
	check_reads_past_eof(path, BLK_CACHE_NONE);
}

static void test_cache_modes_reach_open_flags(void **state)
{
	static const struct {
		enum blk_cache cache;
		bool direct, dsync;
	} cases[] = {
		{ BLK_CACHE_WRITEBACK, false, false },
		{ BLK_CACHE_NONE, true, false },
		{ BLK_CACHE_WRITETHROUGH, false, true },
		{ BLK_CACHE_DIRECTSYNC, true, true },
		{ BLK_CACHE_UNSAFE, false, false },
	};
	struct scratch *s = *state;
	char path[PATH_MAX];

	scratch_path(s, "modes.img", path);
	make_file(path, 64 * KiB, 1);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct blk *b = open_file(path, cases[i].cache, false);
		long fl = fd_flags_of(path);

		assert_true(fl >= 0);
		assert_int_equal(!!(fl & O_DIRECT), cases[i].direct);
		assert_int_equal(!!(fl & O_DSYNC), cases[i].dsync);
		assert_int_equal(blk_cache_mode(b), cases[i].cache);
		if (cases[i].direct)
			assert_true(blk_request_alignment(b) >= 512);
		else
			assert_int_equal(blk_request_alignment(b), 1);
		blk_close(b);
	}
}

/* Random unaligned reads and writes at unaligned addresses under O_DIRECT
 * against a copy kept in memory. */
static void test_direct_unaligned_io_byte_exact(void **state)
{
	struct scratch *s = *state;
	const size_t size = 256 * KiB;
	uint8_t *shadow = malloc(size), *buf = malloc(70000 + 16), *disk = malloc(size);
	char path[PATH_MAX];
	struct blk *b;
	unsigned seed = 12345;

	scratch_path(s, "direct.img", path);
	make_file(path, size, 9);
	for (size_t i = 0; i < size; i++)
		shadow[i] = pattern_at(9, i);
	b = open_file(path, BLK_CACHE_NONE, false);
	for (int iter = 0; iter < 300; iter++) {
		size_t len = 1 + rand_r(&seed) % 70000;
		size_t off = rand_r(&seed) % (size - len);
		uint8_t *p = buf + rand_r(&seed) % 16;

		if (iter % 2) {
			for (size_t i = 0; i < len; i++)
				p[i] = (uint8_t)rand_r(&seed);
			assert_int_equal(blk_pwrite(b, off, p, len, 0), 0);
			memcpy(shadow + off, p, len);
		} else {
			assert_int_equal(blk_pread(b, off, p, len), 0);
			assert_memory_equal(p, shadow + off, len);
		}
	}
	/* a scattered request: odd lengths across several iovecs */
	{
		struct iovec v[3] = { { buf + 1, 3 }, { buf + 100, 511 }, { buf + 2000, 1025 } };

		assert_int_equal(blk_preadv(b, 77, v, 3), 0);
		assert_memory_equal(buf + 1, shadow + 77, 3);
		assert_memory_equal(buf + 100, shadow + 80, 511);
		assert_memory_equal(buf + 2000, shadow + 591, 1025);
		memset(buf + 1, 0xa1, 3);
		memset(buf + 100, 0xa2, 511);
		memset(buf + 2000, 0xa3, 1025);
		assert_int_equal(blk_pwritev(b, 1001, v, 3, BLK_WRITE_FUA), 0);
		memset(shadow + 1001, 0xa1, 3);
		memset(shadow + 1004, 0xa2, 511);
		memset(shadow + 1515, 0xa3, 1025);
	}
	assert_int_equal(blk_flush(b), 0);
	blk_close(b);
	slurp(path, disk, size, 0);
	assert_memory_equal(disk, shadow, size);
	assert_int_equal(file_size_of(path), size);
	free(shadow);
	free(buf);
	free(disk);
}

struct writer {
	struct blk *b;
	uint64_t off;
	size_t len;
	int id;
	int iterations;
	int failures;
};

/* Each writer owns a few unaligned bytes inside blocks that the others
 * also write: a read-modify-write that is not exclusive loses them. */
static void *disjoint_writer(void *arg)
{
	struct writer *w = arg;
	uint8_t data[200], back[200];

	for (int i = 0; i < w->iterations; i++) {
		memset(data, (uint8_t)(w->id * 40 + i), w->len);
		if (blk_pwrite(w->b, w->off, data, w->len, 0) < 0 ||
		    blk_pread(w->b, w->off, back, w->len) < 0 || memcmp(data, back, w->len))
			w->failures++;
	}
	return NULL;
}

static void test_direct_rmw_never_loses_a_neighbour(void **state)
{
	struct scratch *s = *state;
	struct writer w[4];
	pthread_t t[4];
	char path[PATH_MAX];
	struct blk *b;

	scratch_path(s, "rmw.img", path);
	make_file(path, 64 * KiB, 0);
	b = open_file(path, BLK_CACHE_NONE, false);
	for (int i = 0; i < 4; i++) {
		/* four 100-byte ranges sharing block 0, the last one crossing into block 1 */
		w[i] = (struct writer){ .b = b, .off = 30 + 120 * i, .len = 100, .id = i,
					.iterations = 400 };
		assert_int_equal(pthread_create(&t[i], NULL, disjoint_writer, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].failures, 0);
	}
	for (int i = 0; i < 4; i++) {
		uint8_t back[100];

		assert_int_equal(blk_pread(b, w[i].off, back, 100), 0);
		assert_true(all_bytes(back, 100, (uint8_t)(i * 40 + 399)));
	}
	blk_close(b);
}

/* Aligned and unaligned writers over the same blocks, each writing one
 * byte value over its whole range: afterwards every 512-byte block that
 * only full-block writers cover holds one writer's value. */
static void *same_range_writer(void *arg)
{
	struct writer *w = arg;
	uint8_t *data = aligned_alloc(4096, 8192);

	for (int i = 0; i < w->iterations; i++) {
		memset(data, w->id + 1, w->len);
		if (blk_pwrite(w->b, w->off, data, w->len, 0) < 0)
			w->failures++;
	}
	free(data);
	return NULL;
}

static void test_direct_concurrent_block_writers_never_mix(void **state)
{
	struct scratch *s = *state;
	struct writer w[4];
	pthread_t t[4];
	char path[PATH_MAX];
	uint8_t back[8192];
	struct blk *b;

	scratch_path(s, "mix.img", path);
	make_file(path, 64 * KiB, 0);
	b = open_file(path, BLK_CACHE_NONE, false);
	for (int i = 0; i < 4; i++) {
		/* two aligned writers of [0, 8192); two unaligned ones of [1, 8191) */
		w[i] = (struct writer){ .b = b, .off = i < 2 ? 0 : 1, .len = i < 2 ? 8192 : 8190,
					.id = i, .iterations = 300 };
		assert_int_equal(pthread_create(&t[i], NULL, same_range_writer, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].failures, 0);
	}
	assert_int_equal(blk_pread(b, 0, back, sizeof(back)), 0);
	/* inner blocks: one writer each; the edges: an unaligned writer's value
	 * except for the first and last byte, which only aligned writers reach */
	for (size_t blk0 = 512; blk0 < 8192 - 512; blk0 += 512)
		assert_true(all_bytes(back + blk0, 512, back[blk0]));
	assert_true(all_bytes(back + 1, 511, back[1]));
	assert_true(all_bytes(back + 8192 - 512, 511, back[8192 - 512]));
	for (size_t i = 0; i < sizeof(back); i++)
		assert_true(back[i] >= 1 && back[i] <= 4);
	blk_close(b);
}

static void check_holes(const char *path, enum blk_cache cache)
{
	const size_t size = 4 * MiB;
	uint8_t *buf = malloc(MiB);
	uint64_t before, after;
	struct blk *b;

	make_file(path, size, 5);
	b = open_file(path, cache, false);
	assert_true(blk_can_discard(b));
	before = file_blocks_bytes(path);
	assert_true(before >= size);

	assert_int_equal(blk_discard(b, 1 * MiB, 1 * MiB), 0);
	after = file_blocks_bytes(path);
	assert_true(after <= before - 1 * MiB);

	assert_int_equal(blk_write_zeroes(b, 2 * MiB, 1 * MiB, BLK_ZERO_MAY_UNMAP), 0);
	assert_true(file_blocks_bytes(path) <= after - 1 * MiB);
	assert_int_equal(blk_pread(b, 2 * MiB, buf, MiB), 0);
	assert_true(all_bytes(buf, MiB, 0));

	/* without unmap: zeroes all the same, and the size stays */
	assert_int_equal(blk_write_zeroes(b, 3 * MiB + 100, 5000, 0), 0);
	assert_int_equal(blk_pread(b, 3 * MiB, buf, 8192), 0);
	for (size_t i = 0; i < 100; i++)
		assert_int_equal(buf[i], pattern_at(5, 3 * MiB + i));
	assert_true(all_bytes(buf + 100, 5000, 0));
	assert_int_equal(buf[5100], pattern_at(5, 3 * MiB + 5100));
	assert_int_equal(file_size_of(path), size);

	/* zeroes past the end grow the file */
	assert_int_equal(blk_write_zeroes(b, size, 64 * KiB, BLK_ZERO_MAY_UNMAP), 0);
	assert_int_equal(file_size_of(path), size + 64 * KiB);
	assert_int_equal(blk_size(b), size + 64 * KiB);
	blk_close(b);

	slurp(path, buf, 4096, 0);
	for (size_t i = 0; i < 4096; i++)
		assert_int_equal(buf[i], pattern_at(5, i));
	free(buf);
}

static void test_discard_and_write_zeroes_make_holes(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX];

	scratch_path(s, "holes.img", path);
	check_holes(path, BLK_CACHE_WRITEBACK);
	check_holes(path, BLK_CACHE_NONE);
}

static void test_block_status_follows_holes(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX];
	uint8_t data[512 * 1024];
	struct blk *b, *mapnode;
	uint64_t pnum, map;
	unsigned st;
	int fd;

	scratch_path(s, "sparse.img", path);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 4 * MiB), 0);
	memset(data, 0x77, sizeof(data));
	assert_int_equal(pwrite(fd, data, sizeof(data), 1 * MiB), (ssize_t)sizeof(data));
	assert_int_equal(fsync(fd), 0);
	close(fd);

	b = open_file(path, BLK_CACHE_WRITEBACK, true);
	assert_int_equal(blk_block_status(b, 0, 4 * MiB, &pnum, &st, &map, &mapnode), 0);
	assert_int_equal(pnum, 1 * MiB);
	assert_true(st & BLK_STATUS_ZERO);
	assert_false(st & BLK_STATUS_DATA);
	assert_true(st & BLK_STATUS_OFFSET_VALID);
	assert_true(st & BLK_STATUS_ALLOCATED);
	assert_int_equal(map, 0);
	assert_ptr_equal(mapnode, b);

	assert_int_equal(blk_block_status(b, 1 * MiB, 3 * MiB, &pnum, &st, &map, &mapnode), 0);
	assert_int_equal(pnum, sizeof(data));
	assert_true(st & BLK_STATUS_DATA);
	assert_false(st & BLK_STATUS_ZERO);
	assert_int_equal(map, 1 * MiB);

	/* a run is cut at len */
	assert_int_equal(blk_block_status(b, 1 * MiB + 4096, 8192, &pnum, &st, NULL, NULL), 0);
	assert_int_equal(pnum, 8192);
	assert_true(st & BLK_STATUS_DATA);

	assert_int_equal(blk_block_status(b, 2 * MiB, 2 * MiB, &pnum, &st, NULL, NULL), 0);
	assert_int_equal(pnum, 2 * MiB);
	assert_true(st & BLK_STATUS_ZERO);
	blk_close(b);
}

static void test_truncate_preallocation(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX], err[256] = "";
	uint8_t buf[4096];
	struct blk *b;

	scratch_path(s, "grow.img", path);
	make_file(path, 4096, 1);
	b = open_file(path, BLK_CACHE_WRITEBACK, false);

	assert_int_equal(blk_truncate(b, 8 * MiB, BLK_PREALLOC_OFF, err, sizeof(err)), 0);
	assert_int_equal(file_size_of(path), 8 * MiB);
	assert_int_equal(blk_size(b), 8 * MiB);
	assert_true(file_blocks_bytes(path) < 1 * MiB);

	assert_int_equal(blk_truncate(b, 16 * MiB, BLK_PREALLOC_FALLOC, err, sizeof(err)), 0);
	assert_int_equal(file_size_of(path), 16 * MiB);
	assert_true(file_blocks_bytes(path) >= 8 * MiB);

	assert_int_equal(blk_truncate(b, 24 * MiB, BLK_PREALLOC_FULL, err, sizeof(err)), 0);
	assert_int_equal(file_size_of(path), 24 * MiB);
	assert_true(file_blocks_bytes(path) >= 16 * MiB);
	assert_int_equal(blk_pread(b, 20 * MiB, buf, sizeof(buf)), 0);
	assert_true(all_bytes(buf, sizeof(buf), 0));

	/* metadata means nothing to a plain file: like off */
	assert_int_equal(blk_truncate(b, 32 * MiB, BLK_PREALLOC_METADATA, err, sizeof(err)), 0);
	assert_int_equal(file_size_of(path), 32 * MiB);
	assert_true(file_blocks_bytes(path) < 25 * MiB);

	assert_int_equal(blk_truncate(b, 2048, BLK_PREALLOC_FULL, err, sizeof(err)), 0);
	assert_int_equal(file_size_of(path), 2048);
	assert_int_equal(blk_pread(b, 0, buf, 2048), 0);
	for (size_t i = 0; i < 2048; i++)
		assert_int_equal(buf[i], pattern_at(1, i));
	blk_close(b);

	/* the same under O_DIRECT, from an unaligned size */
	b = open_file(path, BLK_CACHE_NONE, false);
	assert_int_equal(blk_truncate(b, 1 * MiB + 512, BLK_PREALLOC_FULL, err, sizeof(err)), 0);
	assert_int_equal(file_size_of(path), 1 * MiB + 512);
	assert_true(file_blocks_bytes(path) >= 1 * MiB);
	blk_close(b);
	b = open_file(path, BLK_CACHE_WRITEBACK, true);
	assert_int_equal(blk_truncate(b, 4096, BLK_PREALLOC_OFF, err, sizeof(err)), -EROFS);
	assert_non_null(strstr(err, path));
	blk_close(b);
}

static void test_create_and_its_failures(void **state)
{
	struct scratch *s = *state;
	struct blk_create_opts o = { .format = "file", .size = 3 * MiB,
				     .prealloc = BLK_PREALLOC_FALLOC };
	struct rlimit old, small;
	char path[PATH_MAX], bad[PATH_MAX], err[256] = "";

	scratch_path(s, "new.img", path);
	assert_int_equal(blk_create(path, &o, err, sizeof(err)), 0);
	assert_int_equal(file_size_of(path), 3 * MiB);
	assert_true(file_blocks_bytes(path) >= 3 * MiB);

	/* an existing file is truncated to the new size */
	make_file(path, 5 * MiB, 1);
	o.prealloc = BLK_PREALLOC_OFF;
	assert_int_equal(blk_create(path, &o, err, sizeof(err)), 0);
	assert_int_equal(file_size_of(path), 3 * MiB);
	assert_true(file_blocks_bytes(path) < 1 * MiB);

	scratch_path(s, "no/such/dir.img", bad);
	assert_true(blk_create(bad, &o, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, bad));

	/* a failure after creating the file leaves nothing behind */
	scratch_path(s, "toobig.img", bad);
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	small = (struct rlimit){ 1 * MiB, old.rlim_max };
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
	o.prealloc = BLK_PREALLOC_FULL;
	assert_int_equal(blk_create(bad, &o, err, sizeof(err)), -EFBIG);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	assert_non_null(strstr(err, bad));
	assert_int_equal(access(bad, F_OK), -1);
}

static void test_allocated_size_and_info(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX];
	struct blk *b;
	json_t *info;

	scratch_path(s, "info.img", path);
	make_file(path, 1 * MiB, 1);
	b = open_file(path, BLK_CACHE_WRITEBACK, true);
	assert_int_equal(blk_allocated_size(b), (int64_t)file_blocks_bytes(path));
	info = blk_info(b);
	assert_non_null(info);
	assert_string_equal(json_string_value(json_object_get(info, "format")), "file");
	assert_int_equal(json_integer_value(json_object_get(info, "virtual-size")), 1 * MiB);
	assert_int_equal(json_integer_value(json_object_get(info, "actual-size")),
			 (json_int_t)file_blocks_bytes(path));
	assert_null(json_object_get(info, "cluster-size"));
	json_decref(info);
	blk_close(b);
}

/* ---- a real block device ---- */

static bool can_make_loop(const char **why)
{
	if (geteuid() != 0) {
		*why = "not root";
		return false;
	}
	if (access("/dev/loop-control", F_OK) != 0) {
		*why = "no /dev/loop-control";
		return false;
	}
	if (system("command -v losetup >/dev/null 2>&1") != 0) {
		*why = "no losetup (Debian package mount)";
		return false;
	}
	return true;
}

static bool loop_attach(const char *file, char *dev, size_t len)
{
	char cmd[PATH_MAX + 64];
	FILE *p;
	bool ok;

	snprintf(cmd, sizeof(cmd), "losetup --find --show '%s' 2>/dev/null", file);
	p = popen(cmd, "r");
	if (!p)
		return false;
	ok = fgets(dev, (int)len, p) != NULL;
	pclose(p);
	if (ok)
		dev[strcspn(dev, "\n")] = 0;
	return ok && strncmp(dev, "/dev/loop", 9) == 0;
}

static void test_block_device(void **state)
{
	struct scratch *s = *state;
	struct blk_open_opts o = { .format = "raw", .cache = BLK_CACHE_NONE };
	struct blk_create_opts c = { .format = "raw", .size = 8 * MiB };
	char path[PATH_MAX], *dev = s->loopdev, err[256] = "";
	const char *why;
	uint8_t *buf = malloc(64 * KiB);
	uint64_t pnum;
	unsigned st;
	struct blk *b;

	if (!can_make_loop(&why)) {
		print_message("skipping the block device case: %s\n", why);
		skip();
	}
	scratch_path(s, "loop.backing", path);
	make_file(path, 4 * MiB, 11);
	if (!loop_attach(path, dev, sizeof(s->loopdev))) {
		dev[0] = 0;
		print_message("skipping the block device case: losetup could not attach a device\n");
		skip();
	}
	if (blk_open(&b, dev, &o, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_int_equal(blk_size(b), 4 * MiB);
	assert_true(blk_request_alignment(b) >= 512);
	assert_int_equal(blk_pread(b, 1, buf, 1000), 0);
	for (size_t i = 0; i < 1000; i++)
		assert_int_equal(buf[i], pattern_at(11, 1 + i));
	memset(buf, 0x42, 3001);
	assert_int_equal(blk_pwrite(b, 4097, buf + 1, 3000, BLK_WRITE_FUA), 0);
	assert_int_equal(blk_pread(b, 4096, buf, 4096), 0);
	assert_int_equal(buf[0], pattern_at(11, 4096));
	assert_true(all_bytes(buf + 1, 3000, 0x42));
	assert_int_equal(buf[3001], pattern_at(11, 4096 + 3001));
	assert_int_equal(blk_write_zeroes(b, 64 * KiB, 64 * KiB, BLK_ZERO_MAY_UNMAP), 0);
	assert_int_equal(blk_write_zeroes(b, 200 * KiB + 3, 1000, 0), 0);
	assert_int_equal(blk_pread(b, 64 * KiB, buf, 64 * KiB), 0);
	assert_true(all_bytes(buf, 64 * KiB, 0));
	assert_int_equal(blk_pread(b, 200 * KiB, buf, 2048), 0);
	assert_int_equal(buf[2], pattern_at(11, 200 * KiB + 2));
	assert_true(all_bytes(buf + 3, 1000, 0));
	assert_int_equal(blk_discard(b, 1 * MiB, 1 * MiB), 0);
	assert_int_equal(blk_flush(b), 0);
	assert_int_equal(blk_block_status(b, 0, 4 * MiB, &pnum, &st, NULL, NULL), 0);
	assert_int_equal(pnum, 4 * MiB);
	assert_true(st & BLK_STATUS_DATA);
	assert_int_equal(blk_truncate(b, 8 * MiB, BLK_PREALLOC_OFF, err, sizeof(err)), -ENOTSUP);
	assert_non_null(strstr(err, "block device"));
	assert_int_equal(blk_write_zeroes(b, 4 * MiB - 512, 512, 0), 0);
	assert_int_equal(blk_pwrite(b, 4 * MiB - 1, buf, 2, 0), -EINVAL);
	blk_close(b);
	/* creating on a device checks its size and keeps it */
	assert_int_equal(blk_create(dev, &c, err, sizeof(err)), -ENOSPC);
	c.size = 2 * MiB;
	assert_int_equal(blk_create(dev, &c, err, sizeof(err)), 0);
	slurp(path, buf, 4096, 4096);
	assert_true(all_bytes(buf + 1, 3000, 0x42));
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_missing_names_the_file, scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_open_directory_refused, scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_reads_past_eof_are_zero, scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_cache_modes_reach_open_flags, scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_direct_unaligned_io_byte_exact, scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_direct_rmw_never_loses_a_neighbour,
						scratch_setup, scratch_teardown),
		cmocka_unit_test_setup_teardown(test_direct_concurrent_block_writers_never_mix,
						scratch_setup, scratch_teardown),
		cmocka_unit_test_setup_teardown(test_discard_and_write_zeroes_make_holes,
						scratch_setup, scratch_teardown),
		cmocka_unit_test_setup_teardown(test_block_status_follows_holes, scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_truncate_preallocation, scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_create_and_its_failures, scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_allocated_size_and_info, scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_block_device, scratch_setup, scratch_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
