/* The "raw" format driver (storage/raw.c) over the file driver: what a
 * guest disk or drover-img sees of a raw image. Create with each
 * preallocation, probing and its block-0 guard, bounds and read-only,
 * resize, block status and info through the format node. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blk.h"
#include "blk_int.h"
#include "blk_testutil.h"
#include "util.h"

static struct blk *open_img(const char *path, const char *fmt, bool ro)
{
	struct blk_open_opts o = { .format = fmt, .readonly = ro };
	struct blk *b = NULL;
	char err[256] = "";

	if (blk_open(&b, path, &o, err, sizeof(err)) < 0)
		fail_msg("opening %s: %s", path, err);
	return b;
}

static void test_create_with_each_preallocation(void **state)
{
	static const struct {
		enum blk_prealloc prealloc;
		bool allocated;
	} cases[] = {
		{ BLK_PREALLOC_OFF, false },
		{ BLK_PREALLOC_METADATA, false },
		{ BLK_PREALLOC_FALLOC, true },
		{ BLK_PREALLOC_FULL, true },
	};
	struct scratch *s = *state;
	char path[PATH_MAX], err[256] = "";
	uint8_t buf[4096];

	scratch_path(s, "new.raw", path);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct blk_create_opts o = { .format = "raw", .size = 6 * MiB + 512,
					     .prealloc = cases[i].prealloc };
		struct blk *b;

		assert_int_equal(blk_create(path, &o, err, sizeof(err)), 0);
		assert_int_equal(file_size_of(path), 6 * MiB + 512);
		if (cases[i].allocated)
			assert_true(file_blocks_bytes(path) >= 6 * MiB);
		else
			assert_true(file_blocks_bytes(path) < 1 * MiB);
		b = open_img(path, "raw", true);
		assert_string_equal(blk_format(b), "raw");
		assert_int_equal(blk_size(b), 6 * MiB + 512);
		assert_int_equal(blk_pread(b, 6 * MiB - 4096, buf, sizeof(buf)), 0);
		assert_true(all_bytes(buf, sizeof(buf), 0));
		blk_close(b);
	}
}

static void test_create_refuses_backing_and_unknown_format(void **state)
{
	struct scratch *s = *state;
	struct blk_create_opts o = { .format = "raw", .size = MiB, .backing_file = "base.img" };
	char path[PATH_MAX], err[256] = "";

	scratch_path(s, "b.raw", path);
	assert_int_equal(blk_create(path, &o, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "backing"));
	assert_int_equal(access(path, F_OK), -1);
	o.backing_file = NULL;
	o.format = "vmdk";
	assert_int_equal(blk_create(path, &o, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "vmdk"));
	o.format = NULL;
	assert_int_equal(blk_create(path, &o, err, sizeof(err)), -EINVAL);
	assert_int_equal(access(path, F_OK), -1);
}

static void test_probe_finds_raw_and_names_unknown_formats(void **state)
{
	struct scratch *s = *state;
	struct blk_open_opts o = { .format = "nosuch" };
	char path[PATH_MAX], err[256] = "";
	struct blk *b = NULL;

	scratch_path(s, "p.raw", path);
	make_file(path, 64 * KiB, 1);
	b = open_img(path, NULL, true);
	assert_string_equal(blk_format(b), "raw");
	assert_string_equal(blk_format(blk_file(b)), "file");
	assert_null(blk_backing(b));
	blk_close(b);

	assert_int_equal(blk_open(&b, path, &o, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "nosuch"));
	assert_non_null(strstr(err, path));
}

/* What qcow2's probe recognises: its magic and a version. */
static const uint8_t qcow2_head[] = { 'Q', 'F', 'I', 0xfb, 0, 0, 0, 3 };

static void test_probed_raw_keeps_looking_raw(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX];
	uint8_t buf[600];
	struct blk *b;
	bool have_qcow2 = blk_driver_by_name("qcow2") != NULL;

	scratch_path(s, "guard.raw", path);
	make_file(path, 64 * KiB, 1);
	b = open_img(path, NULL, false);
	assert_true(b->probed_raw);
	memset(buf, 0, sizeof(buf));
	memcpy(buf + 100, qcow2_head, sizeof(qcow2_head));
	/* the header lands at 0 only when written from 100 bytes earlier */
	assert_int_equal(blk_pwrite(b, 0, buf + 100, 200, 0), have_qcow2 ? -EPERM : 0);
	assert_int_equal(blk_pwrite(b, 512, buf + 100, 200, 0), 0);
	assert_int_equal(blk_pwrite(b, 0, buf, 600, 0), 0);
	blk_close(b);

	/* given as raw, the guest owns all of it */
	b = open_img(path, "raw", false);
	assert_false(b->probed_raw);
	assert_int_equal(blk_pwrite(b, 0, buf + 100, 200, 0), 0);
	assert_int_equal(blk_pread(b, 0, buf, 8), 0);
	assert_memory_equal(buf, qcow2_head, sizeof(qcow2_head));
	blk_close(b);
}

static void test_bounds_and_read_only(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX], err[256] = "";
	uint8_t buf[1024] = { 0 };
	struct blk *b;
	uint64_t pnum;
	unsigned st;

	scratch_path(s, "bounds.raw", path);
	make_file(path, 64 * KiB, 2);
	b = open_img(path, "raw", false);
	assert_int_equal(blk_pwrite(b, 64 * KiB - 512, buf, 512, 0), 0);
	assert_int_equal(blk_pwrite(b, 64 * KiB - 512, buf, 513, 0), -EINVAL);
	assert_int_equal(blk_pread(b, 64 * KiB, buf, 1), -EINVAL);
	assert_int_equal(blk_pread(b, UINT64_MAX - 10, buf, 100), -EINVAL);
	assert_int_equal(blk_write_zeroes(b, 60 * KiB, 8 * KiB, 0), -EINVAL);
	assert_int_equal(blk_discard(b, 60 * KiB, 8 * KiB), -EINVAL);
	assert_int_equal(blk_block_status(b, 64 * KiB, 1, &pnum, &st, NULL, NULL), -EINVAL);
	blk_close(b);
	assert_int_equal(file_size_of(path), 64 * KiB);

	b = open_img(path, "raw", true);
	assert_true(blk_readonly(b));
	assert_int_equal(blk_pwrite(b, 0, buf, 512, 0), -EROFS);
	assert_int_equal(blk_write_zeroes(b, 0, 512, 0), -EROFS);
	assert_int_equal(blk_discard(b, 0, 512), -EROFS);
	assert_int_equal(blk_truncate(b, 1 * MiB, BLK_PREALLOC_OFF, err, sizeof(err)), -EROFS);
	assert_int_equal(blk_flush(b), 0);
	assert_int_equal(blk_pread(b, 100, buf, 100), 0);
	assert_int_equal(buf[0], pattern_at(2, 100));
	blk_close(b);
}

static void test_resize_and_status_through_raw(void **state)
{
	struct scratch *s = *state;
	struct blk_create_opts o = { .format = "raw", .size = 1 * MiB };
	char path[PATH_MAX], err[256] = "";
	uint8_t buf[4096];
	struct blk *b, *mapnode;
	uint64_t pnum, map;
	unsigned st;

	scratch_path(s, "grow.raw", path);
	assert_int_equal(blk_create(path, &o, err, sizeof(err)), 0);
	b = open_img(path, "raw", false);
	assert_int_equal(blk_truncate(b, 4 * MiB, BLK_PREALLOC_FALLOC, err, sizeof(err)), 0);
	assert_int_equal(blk_size(b), 4 * MiB);
	assert_int_equal(file_size_of(path), 4 * MiB);
	memset(buf, 0x31, sizeof(buf));
	assert_int_equal(blk_pwrite(b, 4 * MiB - 4096, buf, 4096, 0), 0);

	assert_int_equal(blk_block_status(b, 0, 1 * MiB, &pnum, &st, &map, &mapnode), 0);
	assert_true(st & BLK_STATUS_ZERO);
	assert_true(st & BLK_STATUS_ALLOCATED);
	assert_int_equal(pnum, 1 * MiB);
	assert_ptr_equal(mapnode, blk_file(b));

	assert_int_equal(blk_truncate(b, 2 * MiB, BLK_PREALLOC_OFF, err, sizeof(err)), 0);
	assert_int_equal(blk_size(b), 2 * MiB);
	assert_int_equal(blk_pread(b, 2 * MiB - 4096, buf, 4096), -0);
	assert_int_equal(blk_pread(b, 2 * MiB, buf, 1), -EINVAL);
	blk_close(b);
	assert_int_equal(file_size_of(path), 2 * MiB);
}

static void test_info_has_qemu_img_fields(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX];
	struct blk *b;
	json_t *info;

	scratch_path(s, "info.raw", path);
	make_file(path, 3 * MiB, 1);
	b = open_img(path, NULL, true);
	info = blk_info(b);
	assert_non_null(info);
	assert_string_equal(json_string_value(json_object_get(info, "filename")), path);
	assert_string_equal(json_string_value(json_object_get(info, "format")), "raw");
	assert_int_equal(json_integer_value(json_object_get(info, "virtual-size")), 3 * MiB);
	assert_int_equal(json_integer_value(json_object_get(info, "actual-size")),
			 (json_int_t)file_blocks_bytes(path));
	assert_true(json_is_false(json_object_get(info, "dirty-flag")));
	assert_null(json_object_get(info, "cluster-size"));
	assert_null(json_object_get(info, "backing-filename"));
	assert_null(json_object_get(info, "snapshots"));
	assert_int_equal(blk_cluster_size(b), 0);
	json_decref(info);
	blk_close(b);
}

static void test_format_only_verbs_are_not_supported(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX], err[256] = "";
	struct blk_snapshot_info *snaps = (void *)1;
	struct blk_check_result res;
	uint8_t buf[512] = { 0 };
	unsigned n = 5;
	struct blk *b;

	scratch_path(s, "plain.raw", path);
	make_file(path, 64 * KiB, 1);
	b = open_img(path, "raw", false);
	assert_int_equal(blk_snapshot_list(b, &snaps, &n), -ENOTSUP);
	assert_null(snaps);
	assert_int_equal(n, 0);
	assert_int_equal(blk_snapshot_create(b, "s1", err, sizeof(err)), -ENOTSUP);
	assert_non_null(strstr(err, "raw"));
	assert_int_equal(blk_check(b, 0, &res), -ENOTSUP);
	assert_int_equal(blk_change_backing(b, "x", "raw", err, sizeof(err)), -ENOTSUP);
	assert_int_equal(blk_pwrite_compressed(b, 0, buf, 512), -ENOTSUP);
	blk_close(b);
}

#define T(f) cmocka_unit_test_setup_teardown(f, scratch_setup, scratch_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_create_with_each_preallocation),
		T(test_create_refuses_backing_and_unknown_format),
		T(test_probe_finds_raw_and_names_unknown_formats),
		T(test_probed_raw_keeps_looking_raw),
		T(test_bounds_and_read_only),
		T(test_resize_and_status_through_raw),
		T(test_info_has_qemu_img_fields),
		T(test_format_only_verbs_are_not_supported),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
