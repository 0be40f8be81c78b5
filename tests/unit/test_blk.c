/* The block layer's core (storage/blk.c): names of cache and
 * preallocation modes, backing paths, image locking between writers and
 * readers (in this process and another), backing chains (relative names,
 * loops, depth), what cache modes mean for flushes and FUA, NULL verbs,
 * block status through a chain, snapshot=on, and info's backing fields.
 * Where a real file cannot show what the layer did, a fake driver records
 * what reached it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

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

#define CLUSTER (64 * KiB)

/* ---- a fake driver that records what reaches it ---- */

struct fake {
	unsigned flushes, writes, preads;
	unsigned last_flags;
	uint64_t last_off, last_len;
	bool all_zero;                 /* the last write carried only zeroes */
	char log[64];                  /* one letter per flush: its node's tag */
	char tag;
	uint64_t allocated;            /* block_status: bit n = cluster n is here */
	struct fake *shared_log;       /* where flush letters go */
};

static int fake_pwritev(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
			unsigned flags)
{
	struct fake *f = b->opaque;

	f->writes++;
	f->last_flags = flags;
	f->last_off = off;
	f->last_len = blk_iov_size(iov, iovcnt);
	f->all_zero = true;
	for (int i = 0; i < iovcnt; i++)
		if (!all_bytes(iov[i].iov_base, iov[i].iov_len, 0))
			f->all_zero = false;
	return 0;
}

static int fake_preadv(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt)
{
	struct fake *f = b->opaque;

	f->preads++;
	for (int i = 0; i < iovcnt; i++)
		memset(iov[i].iov_base, 0x5a, iov[i].iov_len);
	return 0;
}

static int fake_flush(struct blk *b)
{
	struct fake *f = b->opaque;
	struct fake *log = f->shared_log ? f->shared_log : f;
	size_t n = strlen(log->log);

	f->flushes++;
	if (n + 1 < sizeof(log->log))
		log->log[n] = f->tag;
	return 0;
}

static int fake_block_status(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum,
			     unsigned *status, uint64_t *map, struct blk **map_node)
{
	struct fake *f = b->opaque;
	uint64_t c = off / CLUSTER;
	bool here = f->allocated >> c & 1;
	uint64_t end = off;

	while (end < off + len && (bool)(f->allocated >> (end / CLUSTER) & 1) == here)
		end = (end / CLUSTER + 1) * CLUSTER;
	*pnum = (end < off + len ? end : off + len) - off;
	*status = here ? BLK_STATUS_DATA | BLK_STATUS_ALLOCATED : 0;
	return 0;
}

static const struct blk_driver fake_format = {
	.name = "fakefmt",
	.preadv = fake_preadv,
	.pwritev = fake_pwritev,
	.flush = fake_flush,
	.block_status = fake_block_status,
};

static const struct blk_driver fake_protocol = {
	.name = "fakeproto",
	.protocol = true,
	.preadv = fake_preadv,
	.pwritev = fake_pwritev,
	.flush = fake_flush,
};

static struct blk *fake_node(const struct blk_driver *drv, struct fake *f, uint64_t size,
			     enum blk_cache cache, bool ro)
{
	struct blk *b = calloc(1, sizeof(*b));

	assert_non_null(b);
	b->drv = drv;
	b->opaque = f;
	b->filename = strdup(drv->name);
	b->size = size;
	b->cache = cache;
	b->readonly = ro;
	b->request_alignment = 1;
	return b;
}

/* ---- names ---- */

static void test_cache_and_prealloc_names(void **state)
{
	static const struct { const char *name; enum blk_cache c; } caches[] = {
		{ "writeback", BLK_CACHE_WRITEBACK }, { "none", BLK_CACHE_NONE },
		{ "writethrough", BLK_CACHE_WRITETHROUGH },
		{ "directsync", BLK_CACHE_DIRECTSYNC }, { "unsafe", BLK_CACHE_UNSAFE },
	};
	static const struct { const char *name; enum blk_prealloc p; } preallocs[] = {
		{ "off", BLK_PREALLOC_OFF }, { "metadata", BLK_PREALLOC_METADATA },
		{ "falloc", BLK_PREALLOC_FALLOC }, { "full", BLK_PREALLOC_FULL },
	};
	enum blk_cache c = BLK_CACHE_UNSAFE;
	enum blk_prealloc p = BLK_PREALLOC_FULL;

	for (size_t i = 0; i < ARRAY_SIZE(caches); i++) {
		assert_int_equal(blk_cache_parse(caches[i].name, &c), 0);
		assert_int_equal(c, caches[i].c);
		assert_string_equal(blk_cache_name(c), caches[i].name);
	}
	for (size_t i = 0; i < ARRAY_SIZE(preallocs); i++) {
		assert_int_equal(blk_prealloc_parse(preallocs[i].name, &p), 0);
		assert_int_equal(p, preallocs[i].p);
		assert_string_equal(blk_prealloc_name(p), preallocs[i].name);
	}
	c = BLK_CACHE_NONE;
	assert_int_equal(blk_cache_parse("None", &c), -EINVAL);
	assert_int_equal(blk_cache_parse("", &c), -EINVAL);
	assert_int_equal(blk_cache_parse(NULL, &c), -EINVAL);
	assert_int_equal(c, BLK_CACHE_NONE);
	assert_int_equal(blk_prealloc_parse("fallocate", &p), -EINVAL);
}

static void test_backing_paths(void **state)
{
	static const struct { const char *image, *backing, *want; } cases[] = {
		{ "/a/b/top.qcow2", "base.img", "/a/b/base.img" },
		{ "/a/b/top.qcow2", "../c/base.img", "/a/b/../c/base.img" },
		{ "/a/b/top.qcow2", "/abs/base.img", "/abs/base.img" },
		{ "top.qcow2", "base.img", "base.img" },
		{ "dir/top.qcow2", "base.img", "dir/base.img" },
		{ "/top.qcow2", "base.img", "/base.img" },
		{ "nfs://host/export/top.qcow2", "base.img", "nfs://host/export/base.img" },
		{ "/a/top.qcow2", "nfs://host/export/base.img", "nfs://host/export/base.img" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char *p = blk_backing_path(cases[i].image, cases[i].backing);

		assert_non_null(p);
		assert_string_equal(p, cases[i].want);
		free(p);
	}
	assert_null(blk_backing_path("/a/top", NULL));
}

static void test_iov_size(void **state)
{
	char x[10];
	struct iovec v[3] = { { x, 3 }, { x, 0 }, { x, 7 } };

	assert_int_equal(blk_iov_size(v, 3), 10);
	assert_int_equal(blk_iov_size(v, 0), 0);
}

/* ---- locking ---- */

static int try_open(const char *path, bool ro, bool force_share, char *err, size_t errlen,
		    struct blk **out)
{
	struct blk_open_opts o = { .format = "raw", .readonly = ro, .force_share = force_share };

	*out = NULL;
	return blk_open(out, path, &o, err, errlen);
}

static void test_second_writer_is_refused(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX], err[256] = "";
	struct blk *w, *w2, *r1, *r2;

	scratch_path(s, "locked.raw", path);
	make_file(path, 64 * KiB, 1);
	assert_int_equal(try_open(path, false, false, err, sizeof(err), &w), 0);

	assert_int_equal(try_open(path, false, false, err, sizeof(err), &w2), -EBUSY);
	assert_null(w2);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, "is in use by another process"));

	/* a reader wants a consistent image: refused too, unless it shares */
	err[0] = 0;
	assert_int_equal(try_open(path, true, false, err, sizeof(err), &r1), -EBUSY);
	assert_non_null(strstr(err, "is in use by another process"));
	assert_int_equal(try_open(path, true, true, err, sizeof(err), &r1), 0);
	blk_close(r1);

	/* creating over it would destroy it */
	{
		struct blk_create_opts c = { .format = "raw", .size = MiB };

		assert_int_equal(blk_create(path, &c, err, sizeof(err)), -EBUSY);
		assert_int_equal(file_size_of(path), 64 * KiB);
	}
	blk_close(w);

	assert_int_equal(try_open(path, true, false, err, sizeof(err), &r1), 0);
	assert_int_equal(try_open(path, true, false, err, sizeof(err), &r2), 0);
	assert_int_equal(try_open(path, false, false, err, sizeof(err), &w), -EBUSY);
	blk_close(r1);
	blk_close(r2);
	assert_int_equal(try_open(path, false, false, err, sizeof(err), &w), 0);
	blk_close(w);
}

static void test_lock_holds_against_another_process(void **state)
{
	struct scratch *s = *state;
	char path[PATH_MAX], err[256] = "";
	struct blk *w;
	pid_t pid;
	int status;

	scratch_path(s, "proc.raw", path);
	make_file(path, 64 * KiB, 1);
	assert_int_equal(try_open(path, false, false, err, sizeof(err), &w), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct blk *b;
		int r = try_open(path, false, false, err, sizeof(err), &b);

		_exit(r == -EBUSY && strstr(err, "in use by another process") ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	blk_close(w);
}

/* ---- backing chains ---- */

static void test_backing_open_resolves_and_records(void **state)
{
	struct scratch *s = *state;
	struct blk_open_opts o = { .format = "raw", .cache = BLK_CACHE_NONE };
	char top[PATH_MAX], base[PATH_MAX], err[256] = "";
	struct blk *t, *bk;
	json_t *info;

	scratch_path(s, "top.raw", top);
	scratch_path(s, "base.raw", base);
	make_file(top, 64 * KiB, 1);
	make_file(base, 128 * KiB, 2);
	assert_int_equal(blk_open(&t, top, &o, err, sizeof(err)), 0);
	assert_int_equal(blk_open_backing(t, "base.raw", "raw", &bk, err, sizeof(err)), 0);
	assert_string_equal(blk_filename(bk), base);
	assert_true(blk_readonly(bk));
	assert_int_equal(blk_cache_mode(bk), BLK_CACHE_NONE);
	assert_int_equal(bk->chain_depth, 1);
	assert_int_equal(blk_size(bk), 128 * KiB);
	t->backing = bk;
	assert_ptr_equal(blk_backing(t), bk);

	info = blk_info(t);
	assert_string_equal(json_string_value(json_object_get(info, "backing-filename")),
			    "base.raw");
	assert_string_equal(json_string_value(json_object_get(info, "full-backing-filename")),
			    base);
	assert_string_equal(json_string_value(json_object_get(info, "backing-filename-format")),
			    "raw");
	json_decref(info);
	/* read-only backing files share their lock: a second chain opens too */
	{
		struct blk *bk2;

		assert_int_equal(blk_open_backing(t, "base.raw", NULL, &bk2, err, sizeof(err)), 0);
		assert_string_equal(blk_format(bk2), "raw");
		blk_close(bk2);
	}
	blk_close(t);    /* closes bk as well */
}

static void test_backing_loops_and_depth(void **state)
{
	struct scratch *s = *state;
	struct blk_open_opts o = { .format = "raw" };
	char top[PATH_MAX], base[PATH_MAX], link[PATH_MAX], err[256] = "";
	struct blk *t, *bk, *x = NULL;

	scratch_path(s, "a.raw", top);
	scratch_path(s, "b.raw", base);
	scratch_path(s, "alias.raw", link);
	make_file(top, 64 * KiB, 1);
	make_file(base, 64 * KiB, 2);
	assert_int_equal(symlink(top, link), 0);
	assert_int_equal(blk_open(&t, top, &o, err, sizeof(err)), 0);

	/* an image as its own backing, by name and by another name */
	assert_int_equal(blk_open_backing(t, "a.raw", "raw", &x, err, sizeof(err)), -ELOOP);
	assert_non_null(strstr(err, "loop"));
	assert_int_equal(blk_open_backing(t, "alias.raw", "raw", &x, err, sizeof(err)), -ELOOP);
	assert_null(x);

	/* a -> b -> a */
	assert_int_equal(blk_open_backing(t, "b.raw", "raw", &bk, err, sizeof(err)), 0);
	t->backing = bk;
	assert_int_equal(blk_open_backing(bk, "./a.raw", "raw", &x, err, sizeof(err)), -ELOOP);
	assert_non_null(strstr(err, top));

	/* depth */
	bk->chain_depth = BLK_MAX_CHAIN;
	err[0] = 0;
	assert_int_equal(blk_open_backing(bk, "c.raw", "raw", &x, err, sizeof(err)), -ELOOP);
	assert_non_null(strstr(err, "1024"));
	blk_close(t);
}

/* ---- cache modes as drivers see them ---- */

static void test_cache_modes_flush_and_fua(void **state)
{
	static const struct {
		enum blk_cache cache;
		bool flushes, fua_always, fua_kept;
	} cases[] = {
		{ BLK_CACHE_WRITEBACK, true, false, true },
		{ BLK_CACHE_NONE, true, false, true },
		{ BLK_CACHE_WRITETHROUGH, true, true, true },
		{ BLK_CACHE_DIRECTSYNC, true, true, true },
		{ BLK_CACHE_UNSAFE, false, false, false },
	};
	uint8_t buf[512] = { 1 };

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct fake ff = { .tag = 'F' }, pf = { .tag = 'P', .shared_log = &ff };
		struct blk *fmt = fake_node(&fake_format, &ff, MiB, cases[i].cache, false);
		struct blk *proto = fake_node(&fake_protocol, &pf, MiB, cases[i].cache, false);

		fmt->file = proto;
		assert_int_equal(blk_flush(fmt), 0);
		/* the format's own flush first, then its file's */
		assert_string_equal(ff.log, cases[i].flushes ? "FP" : "");

		assert_int_equal(blk_pwrite(fmt, 0, buf, sizeof(buf), 0), 0);
		assert_int_equal(!!(ff.last_flags & BLK_WRITE_FUA), cases[i].fua_always);
		assert_int_equal(blk_pwrite(fmt, 0, buf, sizeof(buf), BLK_WRITE_FUA), 0);
		assert_int_equal(!!(ff.last_flags & BLK_WRITE_FUA), cases[i].fua_kept);

		/* zeroes through the layer's fallback; durable when writethrough */
		memset(ff.log, 0, sizeof(ff.log));
		assert_int_equal(blk_write_zeroes(fmt, 4096, 3 * MiB / 4, BLK_ZERO_MAY_UNMAP), 0);
		assert_true(ff.all_zero);
		assert_int_equal(ff.last_off + ff.last_len, 4096 + 3 * MiB / 4);
		assert_string_equal(ff.log, cases[i].fua_always ? "FP" : "");
		blk_close(fmt);
	}
}

static void test_read_only_flush_is_a_no_op(void **state)
{
	struct fake f = { .tag = 'F' };
	struct blk *b = fake_node(&fake_format, &f, MiB, BLK_CACHE_WRITEBACK, true);

	assert_int_equal(blk_flush(b), 0);
	assert_int_equal(f.flushes, 0);
	blk_close(b);
}

static void test_null_verbs(void **state)
{
	struct fake f = { 0 };
	struct blk *b = fake_node(&fake_format, &f, MiB, BLK_CACHE_WRITEBACK, false);
	char err[256] = "";
	uint8_t buf[16] = { 0 };
	json_t *info;

	/* no discard: advisory, nothing happens */
	assert_int_equal(blk_discard(b, 0, 4096), 0);
	assert_int_equal(f.writes, 0);
	assert_false(blk_can_discard(b));
	assert_int_equal(blk_truncate(b, 2 * MiB, BLK_PREALLOC_OFF, err, sizeof(err)), -ENOTSUP);
	assert_non_null(strstr(err, "fakefmt"));
	assert_int_equal(blk_size(b), MiB);
	assert_int_equal(blk_pwrite_compressed(b, 0, buf, sizeof(buf)), -ENOTSUP);
	assert_int_equal(blk_allocated_size(b), -ENOTSUP);
	info = blk_info(b);
	assert_null(json_object_get(info, "actual-size"));
	assert_string_equal(json_string_value(json_object_get(info, "format")), "fakefmt");
	json_decref(info);
	/* empty requests reach nobody */
	assert_int_equal(blk_pwrite(b, 0, buf, 0, 0), 0);
	assert_int_equal(blk_pread(b, 0, buf, 0), 0);
	assert_int_equal(f.writes + f.preads, 0);
	assert_int_equal(blk_preadv(b, 0, NULL, -1), -EINVAL);
	blk_close(b);
}

/* ---- block status through a chain ---- */

static void test_block_status_above(void **state)
{
	/* clusters:   0    1    2    3    4    5
	 * top         x
	 * mid              x    x
	 * base                  x    x              (base is 4 clusters long) */
	struct fake ft = { .allocated = 0x1 }, fm = { .allocated = 0x6 },
		    fb = { .allocated = 0xc };
	struct blk *top = fake_node(&fake_format, &ft, 6 * CLUSTER, BLK_CACHE_WRITEBACK, false);
	struct blk *mid = fake_node(&fake_format, &fm, 6 * CLUSTER, BLK_CACHE_WRITEBACK, true);
	struct blk *base = fake_node(&fake_format, &fb, 4 * CLUSTER, BLK_CACHE_WRITEBACK, true);
	const struct {
		uint64_t off;
		struct blk **base;     /* NULL: whole chain */
		uint64_t pnum;
		unsigned status;
		int depth;
	} cases[] = {
		{ 0, NULL, CLUSTER, BLK_STATUS_DATA | BLK_STATUS_ALLOCATED, 0 },
		{ 1 * CLUSTER, NULL, 2 * CLUSTER, BLK_STATUS_DATA | BLK_STATUS_ALLOCATED, 1 },
		{ 3 * CLUSTER, NULL, CLUSTER, BLK_STATUS_DATA | BLK_STATUS_ALLOCATED, 2 },
		{ 4 * CLUSTER, NULL, 2 * CLUSTER, BLK_STATUS_ZERO, 2 },
		{ 3 * CLUSTER + 100, NULL, CLUSTER - 100, BLK_STATUS_DATA | BLK_STATUS_ALLOCATED, 2 },
		/* above base: what only base has is not allocated */
		{ 3 * CLUSTER, &base, 3 * CLUSTER, 0, 2 },
		{ 1 * CLUSTER, &mid, 5 * CLUSTER, 0, 1 },
	};

	top->backing = mid;
	mid->backing = base;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		uint64_t pnum = 0;
		unsigned st = 99;
		int depth = -1;

		assert_int_equal(blk_block_status_above(top, cases[i].base ? *cases[i].base : NULL,
							cases[i].off, 6 * CLUSTER - cases[i].off,
							&pnum, &st, &depth), 0);
		assert_int_equal(pnum, cases[i].pnum);
		assert_int_equal(st, cases[i].status);
		assert_int_equal(depth, cases[i].depth);
	}
	assert_int_equal(blk_block_status_above(top, NULL, 6 * CLUSTER, 1, &(uint64_t){ 0 },
						&(unsigned){ 0 }, NULL), -EINVAL);
	blk_close(top);
}

/* ---- snapshot=on ---- */

static void test_snapshot_on(void **state)
{
	struct scratch *s = *state;
	struct blk_open_opts o = { .format = "raw", .snapshot = true };
	char path[PATH_MAX], err[256] = "";
	uint8_t buf[4096];
	struct blk *b = NULL;
	const char *old_tmp = getenv("TMPDIR");
	char *saved = old_tmp ? strdup(old_tmp) : NULL;
	char overlay[PATH_MAX];
	int r;

	scratch_path(s, "snap.raw", path);
	make_file(path, 1 * MiB, 4);
	setenv("TMPDIR", s->dir, 1);
	r = blk_open(&b, path, &o, err, sizeof(err));
	if (!blk_driver_by_name("qcow2")) {
		assert_int_equal(r, -ENOTSUP);
		assert_non_null(strstr(err, "qcow2"));
		assert_null(b);
	} else {
		assert_int_equal(r, 0);
		assert_string_equal(blk_format(b), "qcow2");
		assert_false(blk_readonly(b));
		assert_int_equal(blk_size(b), 1 * MiB);
		snprintf(overlay, sizeof(overlay), "%s", blk_filename(b));
		assert_int_equal(strncmp(overlay, s->dir, strlen(s->dir)), 0);
		memset(buf, 0xcc, sizeof(buf));
		assert_int_equal(blk_pwrite(b, 8192, buf, sizeof(buf), 0), 0);
		assert_int_equal(blk_pread(b, 0, buf, sizeof(buf)), 0);
		for (size_t i = 0; i < sizeof(buf); i++)
			assert_int_equal(buf[i], pattern_at(4, i));
		blk_close(b);
		assert_int_equal(access(overlay, F_OK), -1);
	}
	slurp(path, buf, sizeof(buf), 8192);
	for (size_t i = 0; i < sizeof(buf); i++)
		assert_int_equal(buf[i], pattern_at(4, 8192 + i));
	if (saved)
		setenv("TMPDIR", saved, 1);
	else
		unsetenv("TMPDIR");
	free(saved);
}

static void test_open_errors(void **state)
{
	char err[256] = "";
	struct blk *b = NULL;
	struct blk_open_opts o = { .format = "raw" };

	assert_int_equal(blk_open(&b, "", &o, err, sizeof(err)), -EINVAL);
	assert_int_equal(blk_open(&b, NULL, NULL, err, sizeof(err)), -EINVAL);
	assert_null(b);
	assert_null(blk_driver_by_name("nosuch"));
	assert_ptr_equal(blk_driver_by_name("raw"), &blk_driver_raw);
	assert_ptr_equal(blk_protocol_for("/dev/null"), &blk_driver_file);
}

#define T(f) cmocka_unit_test_setup_teardown(f, scratch_setup, scratch_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cache_and_prealloc_names),
		cmocka_unit_test(test_backing_paths),
		cmocka_unit_test(test_iov_size),
		T(test_second_writer_is_refused),
		T(test_lock_holds_against_another_process),
		T(test_backing_open_resolves_and_records),
		T(test_backing_loops_and_depth),
		cmocka_unit_test(test_cache_modes_flush_and_fua),
		cmocka_unit_test(test_read_only_flush_is_a_no_op),
		cmocka_unit_test(test_null_verbs),
		cmocka_unit_test(test_block_status_above),
		T(test_snapshot_on),
		cmocka_unit_test(test_open_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
