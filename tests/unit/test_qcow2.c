/* The qcow2 driver through the block layer, without QEMU: what a guest or
 * drover-img sees. Data round trips, concurrent allocating writes,
 * resizing, block status, zero clusters and discard, snapshots, check and
 * repair of damaged refcounts, header extensions and feature bits, the
 * corrupt bit. (Byte compatibility with qemu-img is in
 * tests/integration/test_qcow2_qemu.c.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blk.h"
#include "blk_int.h"
#include "blk_testutil.h"
#include "util.h"

/* Links the driver in (nothing else in the static library names it). */
static const struct blk_driver *const qcow2_linked __attribute__((used)) = &blk_driver_qcow2;

static void create(const char *path, const struct blk_create_opts *o)
{
	char err[512] = "";
	if (blk_create(path, o, err, sizeof(err)) < 0)
		fail_msg("create %s: %s", path, err);
}

static struct blk *open_img(const char *path, bool ro)
{
	struct blk_open_opts o = { .format = "qcow2", .readonly = ro };
	struct blk *b = NULL;
	char err[512] = "";
	if (blk_open(&b, path, &o, err, sizeof(err)) < 0)
		fail_msg("opening %s: %s", path, err);
	return b;
}

static void fill(uint8_t *buf, size_t len, uint8_t seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = pattern_at(seed, i);
}

static void expect_pattern(struct blk *b, uint64_t off, size_t len, uint8_t seed)
{
	uint8_t *buf = malloc(len);
	assert_non_null(buf);
	assert_int_equal(blk_pread(b, off, buf, len), 0);
	for (size_t i = 0; i < len; i++)
		if (buf[i] != pattern_at(seed, i))
			fail_msg("byte %llu reads %#x, expected %#x", (unsigned long long)(off + i),
				 buf[i], pattern_at(seed, i));
	free(buf);
}

static void expect_zero(struct blk *b, uint64_t off, size_t len)
{
	uint8_t *buf = malloc(len);
	assert_non_null(buf);
	assert_int_equal(blk_pread(b, off, buf, len), 0);
	assert_true(all_bytes(buf, len, 0));
	free(buf);
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

static void patch(const char *path, off_t off, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, data, len, off), (ssize_t)len);
	close(fd);
}

static uint64_t read_be64(const char *path, off_t off)
{
	uint64_t v;
	slurp(path, &v, 8, off);
	return be64toh(v);
}

static void test_data_round_trip(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX];
	const uint32_t sizes[] = { 512, 4096, 65536, 2 * MiB };
	uint8_t *buf = malloc(3 * MiB);

	assert_non_null(buf);
	scratch_path(s, "rt.qcow2", path);
	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
		struct blk_create_opts o = { .format = "qcow2", .size = 64 * MiB,
					     .cluster_size = sizes[i] };
		create(path, &o);
		struct blk *b = open_img(path, false);
		assert_int_equal(blk_size(b), 64 * MiB);
		assert_int_equal(blk_cluster_size(b), sizes[i]);
		expect_zero(b, 0, 1 * MiB);
		fill(buf, 3 * MiB, (uint8_t)i);
		assert_int_equal(blk_pwrite(b, 12345, buf, 3 * MiB, 0), 0);
		assert_int_equal(blk_pwrite(b, 64 * MiB - 700, buf, 700, 0), 0);
		expect_pattern(b, 12345, 3 * MiB, (uint8_t)i);
		blk_close(b);
		b = open_img(path, true);
		expect_pattern(b, 12345, 3 * MiB, (uint8_t)i);
		expect_pattern(b, 64 * MiB - 700, 700, (uint8_t)i);
		expect_zero(b, 0, 12345);
		expect_check_clean(b);
		blk_close(b);
	}
	free(buf);
}

/* Threads writing interleaved 512-byte sectors of the same clusters: the
 * allocating writes serialize, nothing is lost. */
struct writer {
	struct blk *b;
	unsigned id, nthreads;
	uint64_t size;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	uint8_t buf[512];
	for (uint64_t sec = w->id; sec * 512 < w->size; sec += w->nthreads) {
		memset(buf, (int)(sec * 31 + 7), sizeof(buf));
		if (blk_pwrite(w->b, sec * 512, buf, sizeof(buf), 0) < 0)
			return (void *)1;
		if (sec % 97 == 0)
			blk_flush(w->b);
	}
	return NULL;
}

static void test_concurrent_allocating_writes(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX];
	const uint32_t sizes[] = { 4096, 65536 };

	scratch_path(s, "mt.qcow2", path);
	for (size_t k = 0; k < ARRAY_SIZE(sizes); k++) {
		struct blk_create_opts o = { .format = "qcow2", .size = 4 * MiB,
					     .cluster_size = sizes[k] };
		create(path, &o);
		struct blk *b = open_img(path, false);
		pthread_t th[8];
		struct writer w[8];
		for (unsigned i = 0; i < 8; i++) {
			w[i] = (struct writer){ b, i, 8, 4 * MiB };
			assert_int_equal(pthread_create(&th[i], NULL, writer_main, &w[i]), 0);
		}
		for (unsigned i = 0; i < 8; i++) {
			void *ret;
			pthread_join(th[i], &ret);
			assert_null(ret);
		}
		blk_close(b);
		b = open_img(path, true);
		uint8_t *buf = malloc(4 * MiB);
		assert_int_equal(blk_pread(b, 0, buf, 4 * MiB), 0);
		for (uint64_t sec = 0; sec < 4 * MiB / 512; sec++)
			if (!all_bytes(buf + sec * 512, 512, (uint8_t)(sec * 31 + 7)))
				fail_msg("sector %llu lost a concurrent write", (unsigned long long)sec);
		expect_check_clean(b);
		free(buf);
		blk_close(b);
	}
}

static void test_resize(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX], err[512] = "";
	uint8_t buf[4096];
	/* 512-byte clusters: 1 GiB needs an L1 table of several clusters. */
	struct blk_create_opts o = { .format = "qcow2", .size = 1 * MiB, .cluster_size = 512 };

	scratch_path(s, "rs.qcow2", path);
	create(path, &o);
	struct blk *b = open_img(path, false);
	fill(buf, sizeof(buf), 9);
	assert_int_equal(blk_pwrite(b, 1 * MiB - 4096, buf, 4096, 0), 0);
	assert_int_equal(blk_truncate(b, 1 * GiB, BLK_PREALLOC_OFF, err, sizeof(err)), 0);
	assert_int_equal(blk_size(b), 1 * GiB);
	expect_pattern(b, 1 * MiB - 4096, 4096, 9);
	expect_zero(b, 1 * MiB, 4096);
	assert_int_equal(blk_pwrite(b, 1 * GiB - 4096, buf, 4096, 0), 0);
	/* Shrinking over data is refused, with the reason. */
	assert_int_equal(blk_truncate(b, 2 * MiB, BLK_PREALLOC_OFF, err, sizeof(err)), -ENOTSUP);
	assert_non_null(strstr(err, "past the new end hold data"));
	assert_int_equal(blk_discard(b, 1 * GiB - 4096, 4096), 0);
	assert_int_equal(blk_truncate(b, 2 * MiB, BLK_PREALLOC_OFF, err, sizeof(err)), 0);
	assert_int_equal(blk_truncate(b, 2 * MiB + 100, BLK_PREALLOC_OFF, err, sizeof(err)),
			 -EINVAL);
	blk_close(b);
	b = open_img(path, false);
	assert_int_equal(blk_size(b), 2 * MiB);
	expect_pattern(b, 1 * MiB - 4096, 4096, 9);
	/* Growing with preallocation allocates the new clusters. */
	assert_int_equal(blk_truncate(b, 4 * MiB, BLK_PREALLOC_METADATA, err, sizeof(err)), 0);
	uint64_t pnum;
	unsigned st;
	assert_int_equal(blk_block_status(b, 3 * MiB, 512, &pnum, &st, NULL, NULL), 0);
	assert_true(st & BLK_STATUS_OFFSET_VALID);
	expect_zero(b, 2 * MiB, 2 * MiB);
	expect_check_clean(b);
	blk_close(b);
}

static void test_block_status_and_zeroes(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX];
	uint8_t *buf = malloc(65536);
	struct blk_create_opts o = { .format = "qcow2", .size = 16 * MiB };
	uint64_t pnum, map;
	unsigned st;
	struct blk *node;

	scratch_path(s, "bs.qcow2", path);
	create(path, &o);
	struct blk *b = open_img(path, false);
	fill(buf, 65536, 3);
	assert_int_equal(blk_pwrite(b, 0, buf, 65536, 0), 0);
	assert_int_equal(blk_pwrite(b, 65536, buf, 65536, 0), 0);
	assert_int_equal(blk_pwrite_compressed(b, 4 * 65536, buf, 65536), 0);

	assert_int_equal(blk_block_status(b, 0, 16 * MiB, &pnum, &st, &map, &node), 0);
	assert_int_equal(pnum, 2 * 65536);          /* contiguous on the host */
	assert_int_equal(st, BLK_STATUS_DATA | BLK_STATUS_ALLOCATED | BLK_STATUS_OFFSET_VALID);
	assert_ptr_equal(node, blk_file(b));
	uint8_t host[64];
	blk_flush(b);
	slurp(path, host, sizeof(host), (off_t)map);
	assert_memory_equal(host, buf, sizeof(host));
	assert_int_equal(blk_block_status(b, 2 * 65536, 16 * MiB - 2 * 65536, &pnum, &st, NULL,
					  NULL), 0);
	assert_int_equal(st, BLK_STATUS_ZERO);   /* unallocated, no backing */
	assert_int_equal(pnum, 2 * 65536);
	assert_int_equal(blk_block_status(b, 4 * 65536, 65536, &pnum, &st, NULL, NULL), 0);
	assert_int_equal(st, BLK_STATUS_DATA | BLK_STATUS_ALLOCATED | BLK_STATUS_COMPRESSED);
	expect_pattern(b, 4 * 65536, 65536, 3);

	/* v3 zeroes without unmap keep the cluster (zero flag over it). */
	assert_int_equal(blk_write_zeroes(b, 0, 65536, 0), 0);
	assert_int_equal(blk_block_status(b, 0, 65536, &pnum, &st, &map, NULL), 0);
	assert_int_equal(st, BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED | BLK_STATUS_OFFSET_VALID);
	expect_zero(b, 0, 65536);
	/* ... and with unmap free it. */
	assert_int_equal(blk_write_zeroes(b, 65536, 65536, BLK_ZERO_MAY_UNMAP), 0);
	assert_int_equal(blk_block_status(b, 65536, 65536, &pnum, &st, NULL, NULL), 0);
	assert_int_equal(st, BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED);
	/* Partial zeroes inside data write zero bytes. */
	assert_int_equal(blk_pwrite(b, 8 * 65536, buf, 65536, 0), 0);
	assert_int_equal(blk_write_zeroes(b, 8 * 65536 + 100, 200, 0), 0);
	assert_int_equal(blk_pread(b, 8 * 65536, buf, 65536), 0);
	assert_true(all_bytes(buf + 100, 200, 0));
	assert_int_equal(buf[99], pattern_at(3, 99));
	assert_int_equal(buf[300], pattern_at(3, 300));
	/* A written-over compressed cluster is freed with its neighbours intact. */
	fill(buf, 65536, 4);
	assert_int_equal(blk_pwrite(b, 4 * 65536 + 10, buf, 100, 0), 0);
	blk_close(b);
	b = open_img(path, true);
	expect_check_clean(b);
	blk_close(b);
	free(buf);
}

/* v2 has no zero flag: zeroes over nothing deallocate, otherwise write. */
static void test_v2_write_zeroes_and_discard(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX];
	uint8_t buf[65536];
	struct blk_create_opts o = { .format = "qcow2", .size = 4 * MiB, .compat = 2 };
	uint64_t pnum;
	unsigned st;

	scratch_path(s, "v2.qcow2", path);
	create(path, &o);
	struct blk *b = open_img(path, false);
	fill(buf, sizeof(buf), 5);
	assert_int_equal(blk_pwrite(b, 0, buf, sizeof(buf), 0), 0);
	assert_int_equal(blk_pwrite(b, 65536, buf, sizeof(buf), 0), 0);
	assert_int_equal(blk_write_zeroes(b, 0, 65536, BLK_ZERO_MAY_UNMAP), 0);
	assert_int_equal(blk_block_status(b, 0, 65536, &pnum, &st, NULL, NULL), 0);
	assert_int_equal(st, BLK_STATUS_ZERO);
	assert_int_equal(blk_discard(b, 65536, 65536), 0);
	expect_zero(b, 0, 2 * 65536);
	blk_close(b);
	b = open_img(path, true);
	expect_check_clean(b);
	json_t *info = blk_info(b);
	json_t *data = json_object_get(json_object_get(info, "format-specific"), "data");
	assert_string_equal(json_string_value(json_object_get(data, "compat")), "0.10");
	json_decref(info);
	blk_close(b);
}

static void test_snapshots(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX], err[512] = "";
	uint8_t buf[8192];
	struct blk_create_opts o = { .format = "qcow2", .size = 8 * MiB, .cluster_size = 4096 };

	scratch_path(s, "sn.qcow2", path);
	create(path, &o);
	struct blk *b = open_img(path, false);
	fill(buf, sizeof(buf), 1);
	assert_int_equal(blk_pwrite(b, 0, buf, sizeof(buf), 0), 0);
	assert_int_equal(blk_snapshot_create(b, "first", err, sizeof(err)), 0);
	assert_int_equal(blk_snapshot_create(b, "first", err, sizeof(err)), -EEXIST);
	assert_non_null(strstr(err, "already exists"));
	fill(buf, sizeof(buf), 2);
	assert_int_equal(blk_pwrite(b, 4096, buf, sizeof(buf), 0), 0);   /* COW of shared */
	expect_check_clean(b);
	assert_int_equal(blk_snapshot_create(b, "second", err, sizeof(err)), 0);
	assert_int_equal(blk_snapshot_apply(b, "first", err, sizeof(err)), 0);
	expect_pattern(b, 0, 8192, 1);
	expect_zero(b, 8192, 4096);
	expect_check_clean(b);
	assert_int_equal(blk_snapshot_apply(b, "second", err, sizeof(err)), 0);
	expect_pattern(b, 4096, 8192, 2);
	assert_int_equal(blk_snapshot_delete(b, "first", err, sizeof(err)), 0);
	assert_int_equal(blk_snapshot_delete(b, "first", err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "no snapshot 'first'"));
	expect_check_clean(b);
	struct blk_snapshot_info *list;
	unsigned n;
	assert_int_equal(blk_snapshot_list(b, &list, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(list[0].name, "second");
	assert_string_equal(list[0].id, "2");
	assert_int_equal(list[0].disk_size, 8 * MiB);
	free(list);
	blk_close(b);

	/* 1-bit refcounts cannot count a second reference. */
	o.refcount_bits = 1;
	create(path, &o);
	b = open_img(path, false);
	assert_int_equal(blk_pwrite(b, 0, buf, sizeof(buf), 0), 0);
	assert_int_equal(blk_snapshot_create(b, "x", err, sizeof(err)), -ERANGE);
	assert_non_null(strstr(err, "refcount_bits 1"));
	expect_check_clean(b);
	blk_close(b);
}

/* Damage the refcounts behind the driver's back; check finds and fixes. */
static void test_check_repairs(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX];
	uint8_t buf[65536];
	struct blk_create_opts o = { .format = "qcow2", .size = 8 * MiB };
	struct blk_check_result r;

	scratch_path(s, "ck.qcow2", path);
	create(path, &o);
	struct blk *b = open_img(path, false);
	fill(buf, sizeof(buf), 7);
	for (int i = 0; i < 4; i++)
		assert_int_equal(blk_pwrite(b, (uint64_t)i * MiB, buf, sizeof(buf), 0), 0);
	blk_close(b);

	/* The refcount block: first entry of the refcount table. */
	uint64_t reftable = read_be64(path, 48);
	uint64_t rb = read_be64(path, (off_t)reftable);
	uint64_t l1 = read_be64(path, 40);
	uint64_t l2 = read_be64(path, (off_t)l1) & 0x00fffffffffffe00ull;
	uint64_t data = read_be64(path, (off_t)l2) & 0x00fffffffffffe00ull;
	uint64_t last = read_be64(path, (off_t)(l2 + 8 * 48)) & 0x00fffffffffffe00ull;
	uint16_t one = htobe16(1), zero = 0;
	/* A leak: a freed cluster still counted once. */
	b = open_img(path, false);
	assert_int_equal(blk_discard(b, 3 * MiB, 65536), 0);
	blk_close(b);
	patch(path, (off_t)(rb + 2 * (last / 65536)), &one, 2);
	/* A corruption: a used data cluster counted zero times. */
	patch(path, (off_t)(rb + 2 * (data / 65536)), &zero, 2);

	b = open_img(path, true);
	assert_int_equal(blk_check(b, 0, &r), 0);
	assert_int_equal(r.leaks, 1);
	assert_int_equal(r.corruptions, 2);   /* the refcount and its COPIED flag */
	assert_non_null(r.report);
	assert_non_null(strstr(r.report, "Leaked cluster"));
	assert_non_null(strstr(r.report, "ERROR cluster"));
	assert_int_equal(r.allocated_clusters, 3);
	assert_int_equal(r.total_clusters, 128);
	blk_check_result_free(&r);
	assert_int_equal(blk_check(b, BLK_CHECK_FIX_LEAKS, &r), -EROFS);
	blk_close(b);

	b = open_img(path, false);
	assert_int_equal(blk_check(b, BLK_CHECK_FIX_LEAKS | BLK_CHECK_FIX_ERRORS, &r), 0);
	assert_int_equal(r.leaks_fixed, 1);
	assert_true(r.corruptions_fixed >= 1);
	assert_int_equal(r.corruptions, 0);
	blk_check_result_free(&r);
	expect_check_clean(b);
	for (int i = 0; i < 3; i++)
		expect_pattern(b, (uint64_t)i * MiB, sizeof(buf), 7);
	blk_close(b);

	/* A refcount table entry pointing outside the image: rebuilt. */
	uint64_t bad = htobe64(1ull << 40);
	patch(path, (off_t)reftable, &bad, 8);
	b = open_img(path, false);
	assert_int_equal(blk_pwrite(b, 6 * MiB, buf, 4096, 0), -EIO);   /* marked corrupt */
	assert_int_equal(blk_check(b, BLK_CHECK_FIX_LEAKS | BLK_CHECK_FIX_ERRORS, &r), 0);
	assert_int_equal(r.corruptions, 0);
	assert_true(r.corruptions_fixed >= 1);
	blk_check_result_free(&r);
	expect_check_clean(b);
	assert_int_equal(blk_pwrite(b, 6 * MiB, buf, 4096, 0), 0);   /* writable again */
	blk_close(b);
	b = open_img(path, true);
	expect_check_clean(b);
	expect_pattern(b, 6 * MiB, 4096, 7);
	json_t *info = blk_info(b);
	json_t *d = json_object_get(json_object_get(info, "format-specific"), "data");
	assert_true(json_is_false(json_object_get(d, "corrupt")));
	json_decref(info);
	blk_close(b);
}

static void test_backing_and_change_backing(void **state)
{
	struct scratch *s = *state;
	char base[PATH_MAX], top[PATH_MAX], other[PATH_MAX], err[512] = "";
	uint8_t buf[4096];

	scratch_path(s, "base.raw", base);
	scratch_path(s, "top.qcow2", top);
	scratch_path(s, "other.raw", other);
	make_file(base, 1 * MiB, 0x40);           /* shorter than the overlay */
	make_file(other, 1 * MiB, 0x50);
	struct blk_create_opts o = { .format = "qcow2", .size = 2 * MiB,
				     .backing_file = "base.raw", .backing_format = "raw" };
	create(top, &o);
	struct blk *b = open_img(top, false);
	assert_non_null(blk_backing(b));
	expect_pattern(b, 0, 4096, 0x40);
	expect_zero(b, 1 * MiB, 1 * MiB);         /* past the backing file's end */
	/* A partial write copies the rest of the cluster from below. */
	memset(buf, 0xaa, 100);
	assert_int_equal(blk_pwrite(b, 70000, buf, 100, 0), 0);
	uint8_t got[65536];
	assert_int_equal(blk_pread(b, 65536, got, sizeof(got)), 0);
	for (size_t i = 0; i < sizeof(got); i++) {
		uint8_t want = (i >= 70000 - 65536 && i < 70100 - 65536) ? 0xaa
							: pattern_at(0x40, 65536 + i);
		if (got[i] != want)
			fail_msg("byte %zu of the copied cluster: %#x, expected %#x", i, got[i], want);
	}
	/* Shrunk and grown again over the longer backing file: the new tail
	 * reads as zeroes, as it would in QEMU. */
	assert_int_equal(blk_truncate(b, 512 * 1024, BLK_PREALLOC_OFF, err, sizeof(err)), 0);
	assert_int_equal(blk_truncate(b, 2 * MiB, BLK_PREALLOC_OFF, err, sizeof(err)), 0);
	expect_zero(b, 512 * 1024, 512 * 1024);
	expect_pattern(b, 0, 4096, 0x40);
	/* Discard on v3 over a backing file reads as zeroes, not the backing. */
	assert_int_equal(blk_discard(b, 4 * 65536, 65536), 0);
	expect_zero(b, 4 * 65536, 65536);
	assert_int_equal(blk_change_backing(b, "other.raw", "raw", err, sizeof(err)), 0);
	blk_close(b);
	b = open_img(top, true);
	expect_pattern(b, 6 * 65536, 4096, (uint8_t)(0x50 + 6 * 65536 * 7));
	json_t *info = blk_info(b);
	assert_string_equal(json_string_value(json_object_get(info, "backing-filename")),
			    "other.raw");
	assert_string_equal(json_string_value(json_object_get(info, "backing-filename-format")),
			    "raw");
	json_decref(info);
	expect_check_clean(b);
	blk_close(b);
	/* Removing the backing file: unallocated clusters read as zeroes. */
	b = open_img(top, false);
	assert_int_equal(blk_change_backing(b, NULL, NULL, err, sizeof(err)), 0);
	blk_close(b);
	b = open_img(top, true);
	assert_null(blk_backing(b));
	expect_zero(b, 6 * 65536, 4096);
	blk_close(b);
}

/* Unknown extensions survive header rewrites; autoclear bits are cleared
 * by a writable open; unknown incompatible bits are refused by name. */
static void test_header_extensions_and_features(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX], err[512] = "";
	struct blk_create_opts o = { .format = "qcow2", .size = 1 * MiB };
	struct blk_open_opts ro = { .format = "qcow2", .readonly = true };
	struct blk *b;

	scratch_path(s, "ext.qcow2", path);
	create(path, &o);
	/* Header: 112 bytes; extensions follow. Put an unknown one first. */
	uint8_t hdr[4096];
	slurp(path, hdr, sizeof(hdr), 0);
	uint8_t ext[16] = { 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o' };
	memmove(hdr + 112 + 16, hdr + 112, 4096 - 112 - 16);
	memcpy(hdr + 112, ext, sizeof(ext));
	uint64_t autoclear = htobe64(1ull << 5);
	memcpy(hdr + 88, &autoclear, 8);
	patch(path, 0, hdr, sizeof(hdr));

	b = open_img(path, true);
	blk_close(b);
	assert_int_equal(read_be64(path, 88), 1ull << 5);    /* read-only leaves it */
	b = open_img(path, false);
	assert_int_equal(blk_change_backing(b, "x.raw", "raw", err, sizeof(err)), 0);
	blk_close(b);
	assert_int_equal(read_be64(path, 88), 0);
	slurp(path, hdr, sizeof(hdr), 0);
	bool found = false;
	for (size_t i = 0; i + 13 < sizeof(hdr); i += 8)
		if (!memcmp(hdr + i, ext, 13))
			found = true;
	assert_true(found);

	/* An incompatible feature drover does not know. */
	create(path, &o);
	uint64_t incompat = htobe64(1ull << 9);
	patch(path, 72, &incompat, 8);
	assert_int_equal(blk_open(&b, path, &ro, err, sizeof(err)), -ENOTSUP);
	assert_non_null(strstr(err, "unsupported incompatible feature"));
	assert_non_null(strstr(err, "bit 9"));
	/* External data files are refused by name too. */
	incompat = htobe64(1ull << 2);
	patch(path, 72, &incompat, 8);
	assert_int_equal(blk_open(&b, path, &ro, err, sizeof(err)), -ENOTSUP);
	assert_non_null(strstr(err, "external data file"));
}

/* A missing backing file fails the open unless the chain is not wanted. */
static void test_missing_backing(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX], base[PATH_MAX], err[512] = "";
	struct blk *b;

	scratch_path(s, "mb.qcow2", path);
	scratch_path(s, "gone.raw", base);
	make_file(base, 65536, 1);
	struct blk_create_opts o = { .format = "qcow2", .size = 65536, .backing_file = "gone.raw",
				     .backing_format = "raw" };
	create(path, &o);
	unlink(base);
	struct blk_open_opts oo = { .format = "qcow2", .readonly = true };
	assert_true(blk_open(&b, path, &oo, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "gone.raw"));
	oo.no_backing = true;
	assert_int_equal(blk_open(&b, path, &oo, err, sizeof(err)), 0);
	uint8_t buf[512];
	assert_int_equal(blk_pread(b, 0, buf, sizeof(buf)), -EIO);
	json_t *info = blk_info(b);
	assert_string_equal(json_string_value(json_object_get(info, "backing-filename")),
			    "gone.raw");
	json_decref(info);
	blk_close(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_data_round_trip, scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_allocating_writes, scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_resize, scratch_setup, scratch_teardown),
		cmocka_unit_test_setup_teardown(test_block_status_and_zeroes, scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_v2_write_zeroes_and_discard, scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_snapshots, scratch_setup, scratch_teardown),
		cmocka_unit_test_setup_teardown(test_check_repairs, scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_backing_and_change_backing, scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_header_extensions_and_features,
						scratch_setup, scratch_teardown),
		cmocka_unit_test_setup_teardown(test_missing_backing, scratch_setup,
						scratch_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
