/* qcow2 byte compatibility with QEMU, both ways, with the real qemu-img
 * and qemu-io from Debian's qemu-utils:
 *  - images drover creates and writes (every create option that matters,
 *    random writes, zeroes, discards, compressed clusters, snapshots)
 *    pass `qemu-img check` and `qemu-img compare` against a raw model;
 *  - images qemu-img and qemu-io write (cluster sizes, compat levels,
 *    refcount widths, lazy refcounts, compression, backing chains of each
 *    format, internal snapshots) read back byte-exactly through drover,
 *    and stay consistent for qemu-img after drover writes to them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>

#include "blk.h"
#include "qcow2-testutil.h"

#define MiB (1024ull * 1024)

/* ---- random guest activity mirrored in the model ---- */

struct activity {
	unsigned ops;
	bool compressed;      /* include pwrite_compressed */
	bool discards;        /* discards and zero writes */
	uint64_t seed;
};

static void apply_activity(struct blk *b, struct qt_model *m, const struct activity *a)
{
	uint64_t seed = a->seed;
	uint32_t cs = blk_cluster_size(b);
	uint64_t size = m->size;
	uint8_t *buf = malloc(4 * cs + 65536);

	assert_non_null(buf);
	for (unsigned i = 0; i < a->ops; i++) {
		uint64_t r = qt_rand(&seed);
		unsigned kind = (unsigned)(r % 16);
		uint64_t off = qt_rand(&seed) % size;
		uint64_t len = 1 + qt_rand(&seed) % (3 * cs + 4096);
		if (off + len > size)
			len = size - off;
		if (kind < 9 || (!a->discards && !a->compressed)) {
			qt_fill(buf, len, &seed, kind & 1);
			assert_int_equal(blk_pwrite(b, off, buf, len, 0), 0);
			memcpy(m->data + off, buf, len);
		} else if (kind < 12 && a->discards) {
			unsigned flags = kind == 10 ? BLK_ZERO_MAY_UNMAP : 0;
			assert_int_equal(blk_write_zeroes(b, off, len, flags), 0);
			memset(m->data + off, 0, len);
		} else if (kind < 14 && a->discards) {
			/* Without a backing file discarded whole clusters read as zeroes. */
			assert_int_equal(blk_discard(b, off, len), 0);
			uint64_t first = (off + cs - 1) / cs * cs;
			uint64_t last = off + len >= size ? size : (off + len) / cs * cs;
			if (last > first)
				memset(m->data + first, 0, last - first);
		} else if (a->compressed) {
			uint64_t coff = off / cs * cs;
			uint64_t clen = size - coff < cs ? size - coff : cs;
			qt_fill(buf, clen, &seed, true);
			assert_int_equal(blk_pwrite_compressed(b, coff, buf, clen), 0);
			memcpy(m->data + coff, buf, clen);
		} else {
			assert_int_equal(blk_flush(b), 0);
		}
		if (i % 50 == 49)
			assert_int_equal(blk_flush(b), 0);
	}
	free(buf);
}

static void create_img(const char *path, const struct blk_create_opts *o)
{
	char err[512] = "";
	if (blk_create(path, o, err, sizeof(err)) < 0)
		fail_msg("create %s: %s", path, err);
}

/* ---- drover writes, qemu-img judges ---- */

struct create_case {
	uint32_t cluster_size;
	int compat;
	unsigned refcount_bits;
	bool lazy;
	bool extended_l2;
	enum blk_prealloc prealloc;
	uint64_t size;
	unsigned ops;
};

static const struct create_case create_cases[] = {
	{ 65536, 3, 16, false, false, BLK_PREALLOC_OFF, 64 * MiB, 400 },
	{ 65536, 2, 16, false, false, BLK_PREALLOC_OFF, 64 * MiB, 400 },
	{ 512, 3, 16, false, false, BLK_PREALLOC_OFF, 8 * MiB, 400 },
	{ 512, 3, 64, false, false, BLK_PREALLOC_OFF, 4 * MiB, 300 },
	{ 512, 2, 16, false, false, BLK_PREALLOC_OFF, 4 * MiB, 300 },
	{ 4096, 3, 1, false, false, BLK_PREALLOC_OFF, 16 * MiB, 300 },
	{ 4096, 3, 2, false, false, BLK_PREALLOC_OFF, 16 * MiB, 300 },
	{ 4096, 3, 4, false, false, BLK_PREALLOC_OFF, 16 * MiB, 300 },
	{ 4096, 3, 8, false, false, BLK_PREALLOC_OFF, 16 * MiB, 300 },
	{ 4096, 3, 32, false, false, BLK_PREALLOC_OFF, 16 * MiB, 300 },
	{ 2 * MiB, 3, 16, false, false, BLK_PREALLOC_OFF, 96 * MiB, 120 },
	{ 65536, 3, 16, true, false, BLK_PREALLOC_OFF, 64 * MiB, 400 },
	{ 65536, 3, 16, false, true, BLK_PREALLOC_OFF, 64 * MiB, 300 },
	{ 65536, 3, 16, false, false, BLK_PREALLOC_METADATA, 32 * MiB, 200 },
	{ 65536, 3, 16, false, false, BLK_PREALLOC_FALLOC, 32 * MiB, 200 },
	{ 65536, 2, 16, false, false, BLK_PREALLOC_FULL, 16 * MiB, 200 },
	{ 65536, 3, 16, false, false, BLK_PREALLOC_OFF, 64 * MiB + 512, 300 },
};

static void test_drover_images_pass_qemu_check(void **state)
{
	struct qt *t = *state;
	char img[PATH_MAX], raw[PATH_MAX];

	qt_path(t, "d.qcow2", img);
	qt_path(t, "d.raw", raw);
	for (size_t i = 0; i < sizeof(create_cases) / sizeof(create_cases[0]); i++) {
		const struct create_case *c = &create_cases[i];
		struct blk_create_opts o = {
			.format = "qcow2", .size = c->size, .cluster_size = c->cluster_size,
			.compat = c->compat, .refcount_bits = c->refcount_bits,
			.lazy_refcounts = c->lazy, .extended_l2 = c->extended_l2,
			.prealloc = c->prealloc,
		};
		struct qt_model m = { calloc(1, c->size), c->size };
		struct activity a = { c->ops, true, true, 0x1234567 + i };

		assert_non_null(m.data);
		create_img(img, &o);
		qt_qemu_check(t, img);
		struct blk *b = qt_open(img, "qcow2", false);
		apply_activity(b, &m, &a);
		blk_close(b);
		qt_qemu_check(t, img);
		qt_model_save(&m, raw);
		qt_qemu_compare(t, raw, img);

		/* What qemu-img says the image is, in its own words. */
		qt_must(t, "qemu-img info --output=json '%s'", img);
		json_t *info = json_loads(t->out, 0, NULL);
		assert_non_null(info);
		assert_int_equal(json_integer_value(json_object_get(info, "cluster-size")),
				 c->cluster_size);
		json_t *data = json_object_get(json_object_get(info, "format-specific"), "data");
		assert_string_equal(json_string_value(json_object_get(data, "compat")),
				    c->compat == 2 ? "0.10" : "1.1");
		assert_int_equal(json_integer_value(json_object_get(data, "refcount-bits")),
				 c->refcount_bits);
		if (c->compat == 3) {
			assert_int_equal(json_is_true(json_object_get(data, "lazy-refcounts")),
					 c->lazy);
			assert_int_equal(json_is_true(json_object_get(data, "extended-l2")),
					 c->extended_l2);
		}
		json_decref(info);

		b = qt_open(img, "qcow2", true);
		qt_expect_contents(b, &m);
		blk_close(b);
		free(m.data);
	}
}

static void expect_info_matches_qemu(struct qt *t, const char *img)
{
	struct blk *b = qt_open(img, "qcow2", true);
	json_t *mine = blk_info(b);
	qt_must(t, "qemu-img info --output=json '%s'", img);
	json_t *theirs = json_loads(t->out, 0, NULL);
	assert_non_null(mine);
	assert_non_null(theirs);
	const char *keys[] = { "compat", "lazy-refcounts", "refcount-bits", "corrupt",
			       "extended-l2", "compression-type" };
	json_t *md = json_object_get(json_object_get(mine, "format-specific"), "data");
	json_t *td = json_object_get(json_object_get(theirs, "format-specific"), "data");
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		json_t *x = json_object_get(md, keys[i]), *y = json_object_get(td, keys[i]);
		if ((x || y) && !json_equal(x, y))
			fail_msg("%s: format-specific %s differs from qemu-img's", img, keys[i]);
	}
	assert_int_equal(json_integer_value(json_object_get(mine, "virtual-size")),
			 json_integer_value(json_object_get(theirs, "virtual-size")));
	assert_int_equal(json_integer_value(json_object_get(mine, "cluster-size")),
			 json_integer_value(json_object_get(theirs, "cluster-size")));
	assert_true(json_equal(json_object_get(mine, "dirty-flag"),
			       json_object_get(theirs, "dirty-flag")));
	json_decref(mine);
	json_decref(theirs);
	blk_close(b);
}

/* ---- qemu-img writes, drover reads ---- */

struct qemu_case {
	const char *opts;     /* qemu-img convert -o */
	bool compress;
};

static const struct qemu_case qemu_cases[] = {
	{ "cluster_size=512,compat=1.1", false },
	{ "cluster_size=4096,compat=1.1", false },
	{ "cluster_size=65536,compat=1.1", false },
	{ "cluster_size=2M,compat=1.1", false },
	{ "cluster_size=65536,compat=0.10", false },
	{ "cluster_size=4096,compat=0.10", false },
	{ "refcount_bits=1", false },
	{ "refcount_bits=2", false },
	{ "refcount_bits=4", false },
	{ "refcount_bits=8", false },
	{ "refcount_bits=32", false },
	{ "refcount_bits=64", false },
	{ "lazy_refcounts=on", false },
	{ "extended_l2=on,cluster_size=65536", false },
	{ "extended_l2=on,cluster_size=2M", false },
	{ "preallocation=metadata", false },
	{ "cluster_size=65536", true },
	{ "cluster_size=4096", true },
	{ "cluster_size=512", true },
	{ "cluster_size=2M", true },
	{ "compat=0.10", true },
};

/* A raw file with data, zero runs and holes. */
static void make_source(struct qt_model *m, uint64_t size, uint64_t seed)
{
	m->size = size;
	m->data = calloc(1, size);
	assert_non_null(m->data);
	for (uint64_t off = 0; off < size;) {
		uint64_t len = 1 + qt_rand(&seed) % (300 * 1024);
		if (off + len > size)
			len = size - off;
		unsigned k = (unsigned)(qt_rand(&seed) % 4);
		if (k == 0)
			qt_fill(m->data + off, len, &seed, false);
		else if (k == 1)
			qt_fill(m->data + off, len, &seed, true);
		off += len;
	}
}

static void test_qemu_images_read_back(void **state)
{
	struct qt *t = *state;
	char img[PATH_MAX], raw[PATH_MAX], raw2[PATH_MAX];
	struct qt_model m = { 0 };

	qt_path(t, "q.qcow2", img);
	qt_path(t, "q.raw", raw);
	qt_path(t, "q2.raw", raw2);
	make_source(&m, 24 * MiB + 3 * 512, 99);
	qt_model_save(&m, raw);
	for (size_t i = 0; i < sizeof(qemu_cases) / sizeof(qemu_cases[0]); i++) {
		const struct qemu_case *c = &qemu_cases[i];
		unlink(img);
		qt_must(t, "qemu-img convert -f raw -O qcow2 %s -o %s '%s' '%s'",
			c->compress ? "-c" : "", c->opts, raw, img);
		struct blk *b = qt_open(img, NULL, true);
		assert_string_equal(blk_format(b), "qcow2");
		qt_expect_contents(b, &m);
		blk_close(b);
		expect_info_matches_qemu(t, img);

		/* drover writes on top; qemu-img must still find it sound. */
		struct qt_model m2 = { malloc(m.size), m.size };
		memcpy(m2.data, m.data, m.size);
		b = qt_open(img, "qcow2", false);
		struct activity a = { 150, !strstr(c->opts, "extended"), true, 7 + i };
		apply_activity(b, &m2, &a);
		blk_close(b);
		qt_qemu_check(t, img);
		qt_model_save(&m2, raw2);
		qt_qemu_compare(t, raw2, img);
		free(m2.data);
	}
	free(m.data);
}

/* qemu-io writes of every kind, then drover must read what qemu reads. */
static void test_qemu_io_writes_read_back(void **state)
{
	struct qt *t = *state;
	char img[PATH_MAX], raw[PATH_MAX];
	const char *variants[] = { "compat=1.1", "compat=0.10", "cluster_size=4096",
				   "extended_l2=on" };

	qt_path(t, "io.qcow2", img);
	qt_path(t, "io.raw", raw);
	for (size_t v = 0; v < sizeof(variants) / sizeof(variants[0]); v++) {
		unlink(img);
		qt_must(t, "qemu-img create -q -f qcow2 -o %s '%s' 16M", variants[v], img);
		qt_must(t, "qemu-io -f qcow2 -c 'write -P 0xa1 0 100k' -c 'write -P 0xb2 1M 64k' "
			"-c 'write -P 0xc3 3000k 5000' -c 'write -z 1M 8k' -c 'discard 0 64k' "
			"-c 'write -P 0xd4 8M 1M' -c 'write -z -u 8M 128k' "
			"-c 'write -P 0xe5 15M 1M' '%s'", img);
		qt_must(t, "qemu-img convert -f qcow2 -O raw '%s' '%s'", img, raw);
		struct qt_model m = { 0 };
		qt_model_load(&m, raw);
		struct blk *b = qt_open(img, "qcow2", true);
		qt_expect_contents(b, &m);
		blk_close(b);
		free(m.data);
	}
}

/* Backing chains of depth 3+ with backing_fmt of each format. */
static void test_backing_chains(void **state)
{
	struct qt *t = *state;
	char base[PATH_MAX], mid[PATH_MAX], mid2[PATH_MAX], top[PATH_MAX], raw[PATH_MAX];
	char err[512];

	qt_path(t, "base.raw", base);
	qt_path(t, "mid.qcow2", mid);
	qt_path(t, "mid2.qcow2", mid2);
	qt_path(t, "top.qcow2", top);
	qt_path(t, "chain.raw", raw);

	/* raw base, shorter than the overlays: past its end reads zeroes. */
	qt_must(t, "qemu-img create -q -f raw '%s' 6M && qemu-io -f raw -c 'write -P 0x11 0 6M' "
		"'%s'", base, base);
	qt_must(t, "qemu-img create -q -f qcow2 -b base.raw -F raw '%s' 12M", mid);
	qt_must(t, "qemu-io -f qcow2 -c 'write -P 0x22 1M 1M' -c 'write -P 0x23 7M 100k' '%s'",
		mid);
	qt_must(t, "qemu-img create -q -f qcow2 -o compat=0.10 -b mid.qcow2 -F qcow2 '%s'", mid2);
	qt_must(t, "qemu-io -f qcow2 -c 'write -P 0x33 1536k 1M' -c 'write -z 100k 64k' '%s'",
		mid2);
	qt_must(t, "qemu-img create -q -f qcow2 -b '%s' -F qcow2 '%s'", mid2, top);
	qt_must(t, "qemu-io -f qcow2 -c 'write -P 0x44 5M 2M' -c 'discard 1M 64k' '%s'", top);
	qt_must(t, "qemu-img convert -f qcow2 -O raw '%s' '%s'", top, raw);

	struct qt_model m = { 0 };
	qt_model_load(&m, raw);
	struct blk *b = qt_open(top, NULL, true);
	assert_non_null(blk_backing(b));
	assert_non_null(blk_backing(blk_backing(b)));
	assert_non_null(blk_backing(blk_backing(blk_backing(b))));
	assert_string_equal(blk_format(blk_backing(blk_backing(blk_backing(b)))), "raw");
	qt_expect_contents(b, &m);

	/* Where the data sits in the chain. */
	uint64_t pnum;
	unsigned st;
	int depth;
	assert_int_equal(blk_block_status_above(b, NULL, 5 * MiB, MiB, &pnum, &st, &depth), 0);
	assert_int_equal(depth, 0);
	assert_true(st & BLK_STATUS_DATA);
	assert_int_equal(blk_block_status_above(b, NULL, 1536 * 1024, 64 * 1024, &pnum, &st,
						&depth), 0);
	assert_int_equal(depth, 1);
	assert_int_equal(blk_block_status_above(b, NULL, 3 * MiB, 64 * 1024, &pnum, &st,
						&depth), 0);
	assert_int_equal(depth, 3);
	blk_close(b);

	/* drover writes on top of qemu's chain (COW from each level). */
	b = qt_open(top, "qcow2", false);
	struct activity a = { 200, true, false, 31 };
	apply_activity(b, &m, &a);
	blk_close(b);
	qt_qemu_check(t, top);
	qt_model_save(&m, raw);
	qt_qemu_compare(t, raw, top);

	/* A drover-created overlay over the qemu chain, size from its backing. */
	char over[PATH_MAX];
	qt_path(t, "over.qcow2", over);
	struct blk_create_opts o = { .format = "qcow2", .backing_file = "top.qcow2",
				     .backing_format = "qcow2" };
	assert_int_equal(blk_create(over, &o, err, sizeof(err)), 0);
	qt_must(t, "qemu-img info '%s'", over);
	assert_non_null(strstr(t->out, "backing file format: qcow2"));
	b = qt_open(over, NULL, false);
	assert_int_equal(blk_size(b), 12 * MiB);
	qt_expect_contents(b, &m);
	a.seed = 32;
	a.discards = true;   /* v3 over a backing: discarded clusters read as zeroes */
	apply_activity(b, &m, &a);
	blk_close(b);
	qt_qemu_check(t, over);
	qt_model_save(&m, raw);
	qt_qemu_compare(t, raw, over);
	free(m.data);
}

/* Snapshots drover takes, judged by qemu-img; and the other way round. */
static void test_snapshots_both_ways(void **state)
{
	struct qt *t = *state;
	char img[PATH_MAX], raw[PATH_MAX], snapraw[PATH_MAX], err[512];
	struct qt_model m = { calloc(1, 16 * MiB), 16 * MiB }, saved[3];
	const uint32_t sizes[] = { 65536, 512 };

	qt_path(t, "s.qcow2", img);
	qt_path(t, "s.raw", raw);
	qt_path(t, "snap.raw", snapraw);
	for (size_t v = 0; v < 2; v++) {
		struct blk_create_opts o = { .format = "qcow2", .size = m.size,
					     .cluster_size = sizes[v], .compat = v ? 2 : 3 };
		memset(m.data, 0, m.size);
		create_img(img, &o);
		struct blk *b = qt_open(img, "qcow2", false);
		for (int k = 0; k < 3; k++) {
			struct activity a = { 120, true, true, 100 + k + 10 * v };
			apply_activity(b, &m, &a);
			char name[16];
			snprintf(name, sizeof(name), "snap%d", k);
			assert_int_equal(blk_snapshot_create(b, name, err, sizeof(err)), 0);
			saved[k].size = m.size;
			saved[k].data = malloc(m.size);
			memcpy(saved[k].data, m.data, m.size);
		}
		struct activity a = { 120, true, true, 200 + v };
		apply_activity(b, &m, &a);
		blk_close(b);
		qt_qemu_check(t, img);
		qt_model_save(&m, raw);
		qt_qemu_compare(t, raw, img);
		qt_must(t, "qemu-img snapshot -l '%s'", img);
		assert_non_null(strstr(t->out, "snap0"));
		assert_non_null(strstr(t->out, "snap2"));
		for (int k = 0; k < 3; k++) {
			qt_must(t, "qemu-img convert -f qcow2 -O raw -l snapshot.name=snap%d '%s' '%s'",
				k, img, snapraw);
			qt_model_save(&saved[k], raw);
			qt_must(t, "cmp '%s' '%s'", raw, snapraw);
		}

		/* Revert in drover, delete one, write again. */
		b = qt_open(img, "qcow2", false);
		assert_int_equal(blk_snapshot_apply(b, "snap1", err, sizeof(err)), 0);
		qt_expect_contents(b, &saved[1]);
		assert_int_equal(blk_snapshot_delete(b, "snap0", err, sizeof(err)), 0);
		assert_int_equal(blk_snapshot_apply(b, "snap0", err, sizeof(err)), -ENOENT);
		memcpy(m.data, saved[1].data, m.size);
		a.seed = 300 + v;
		apply_activity(b, &m, &a);
		blk_close(b);
		qt_qemu_check(t, img);
		qt_model_save(&m, raw);
		qt_qemu_compare(t, raw, img);

		/* qemu-img reverts to a drover snapshot. */
		qt_must(t, "qemu-img snapshot -a snap2 '%s'", img);
		qt_qemu_check(t, img);
		b = qt_open(img, "qcow2", false);
		qt_expect_contents(b, &saved[2]);
		assert_int_equal(blk_snapshot_delete(b, "snap2", err, sizeof(err)), 0);
		assert_int_equal(blk_snapshot_delete(b, "2", err, sizeof(err)), 0);  /* snap1 by id */
		struct blk_snapshot_info *list;
		unsigned n;
		assert_int_equal(blk_snapshot_list(b, &list, &n), 0);
		assert_int_equal(n, 0);
		free(list);
		blk_close(b);
		qt_qemu_check(t, img);
		for (int k = 0; k < 3; k++)
			free(saved[k].data);
	}

	/* Snapshots qemu-img takes, applied and deleted by drover. */
	unlink(img);
	qt_must(t, "qemu-img create -q -f qcow2 '%s' 8M", img);
	qt_must(t, "qemu-io -f qcow2 -c 'write -P 0x51 0 1M' '%s' && qemu-img snapshot -c one '%s'",
		img, img);
	qt_must(t, "qemu-io -f qcow2 -c 'write -P 0x52 512k 1M' '%s' && qemu-img snapshot -c two "
		"'%s'", img, img);
	qt_must(t, "qemu-io -f qcow2 -c 'write -P 0x53 0 4M' '%s'", img);
	qt_must(t, "qemu-img convert -f qcow2 -O raw -l snapshot.name=one '%s' '%s'", img, snapraw);
	struct qt_model one = { 0 };
	qt_model_load(&one, snapraw);
	struct blk *b = qt_open(img, "qcow2", false);
	struct blk_snapshot_info *list;
	unsigned n;
	assert_int_equal(blk_snapshot_list(b, &list, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(list[0].name, "one");
	assert_string_equal(list[1].name, "two");
	assert_int_equal(list[0].disk_size, 8 * MiB);
	free(list);
	assert_int_equal(blk_snapshot_apply(b, "one", err, sizeof(err)), 0);
	qt_expect_contents(b, &one);
	assert_int_equal(blk_snapshot_delete(b, "two", err, sizeof(err)), 0);
	assert_int_equal(blk_snapshot_create(b, "three", err, sizeof(err)), 0);
	blk_close(b);
	qt_qemu_check(t, img);
	qt_must(t, "qemu-img snapshot -l '%s'", img);
	assert_non_null(strstr(t->out, "three"));
	assert_null(strstr(t->out, "two"));
	free(one.data);
	free(m.data);
}

/* Lazy refcounts: the dirty bit while open, repair of a dirty image. */
static void test_lazy_refcounts_dirty_bit(void **state)
{
	struct qt *t = *state;
	char img[PATH_MAX], raw[PATH_MAX];
	struct qt_model m = { calloc(1, 16 * MiB), 16 * MiB };

	qt_path(t, "lazy.qcow2", img);
	qt_path(t, "lazy.raw", raw);
	qt_must(t, "qemu-img create -q -f qcow2 -o lazy_refcounts=on '%s' 16M", img);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* Writes, flushes, and dies without closing. */
		struct blk *b = qt_open(img, "qcow2", false);
		struct activity a = { 200, false, true, 55 };
		apply_activity(b, &m, &a);
		blk_flush(b);
		_exit(0);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	struct activity a = { 200, false, true, 55 };
	qt_must(t, "qemu-img info --output=json '%s'", img);
	assert_non_null(strstr(t->out, "\"dirty-flag\": true"));

	/* drover repairs it on a writable open, and closes it clean. */
	struct blk *b = qt_open(img, "qcow2", false);
	blk_close(b);
	qt_qemu_check(t, img);
	qt_must(t, "qemu-img info --output=json '%s'", img);
	assert_non_null(strstr(t->out, "\"dirty-flag\": false"));

	/* And the data written before the flush is all there: the parent
	 * replays the child's activity on a scratch image for its model. */
	struct blk *rb = qt_open(img, "qcow2", true);
	struct blk_create_opts o = { .format = "qcow2", .size = m.size };
	char ref[PATH_MAX];
	qt_path(t, "lazyref.qcow2", ref);
	create_img(ref, &o);
	struct blk *wb = qt_open(ref, "qcow2", false);
	apply_activity(wb, &m, &a);
	blk_close(wb);
	qt_expect_contents(rb, &m);
	blk_close(rb);
	free(m.data);
}

/* Images qemu-img makes with each compat and size check as drover sees them. */
static void test_check_agrees_with_qemu(void **state)
{
	struct qt *t = *state;
	char img[PATH_MAX];
	struct blk_check_result r;

	qt_path(t, "c.qcow2", img);
	qt_must(t, "qemu-img create -q -f qcow2 -o cluster_size=4096 '%s' 32M", img);
	qt_must(t, "qemu-io -f qcow2 -c 'write -P 1 0 3M' -c 'write -c -P 2 4M 64k' '%s'", img);
	qt_must(t, "qemu-img snapshot -c a '%s'", img);
	qt_must(t, "qemu-io -f qcow2 -c 'write -P 3 1M 1M' '%s'", img);
	qt_must(t, "qemu-img check --output=json '%s'", img);
	json_t *q = json_loads(t->out, 0, NULL);
	assert_non_null(q);
	struct blk *b = qt_open(img, "qcow2", true);
	assert_int_equal(blk_check(b, 0, &r), 0);
	assert_int_equal(r.corruptions, 0);
	assert_int_equal(r.leaks, 0);
	assert_int_equal(r.allocated_clusters,
			 json_integer_value(json_object_get(q, "allocated-clusters")));
	assert_int_equal(r.total_clusters, json_integer_value(json_object_get(q, "total-clusters")));
	assert_int_equal(r.compressed_clusters,
			 json_integer_value(json_object_get(q, "compressed-clusters")));
	assert_int_equal(r.fragmented_clusters,
			 json_integer_value(json_object_get(q, "fragmented-clusters")));
	assert_int_equal(r.image_end_offset,
			 json_integer_value(json_object_get(q, "image-end-offset")));
	blk_check_result_free(&r);
	blk_close(b);
	json_decref(q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_drover_images_pass_qemu_check, qt_setup,
						qt_teardown),
		cmocka_unit_test_setup_teardown(test_qemu_images_read_back, qt_setup, qt_teardown),
		cmocka_unit_test_setup_teardown(test_qemu_io_writes_read_back, qt_setup,
						qt_teardown),
		cmocka_unit_test_setup_teardown(test_backing_chains, qt_setup, qt_teardown),
		cmocka_unit_test_setup_teardown(test_snapshots_both_ways, qt_setup, qt_teardown),
		cmocka_unit_test_setup_teardown(test_lazy_refcounts_dirty_bit, qt_setup,
						qt_teardown),
		cmocka_unit_test_setup_teardown(test_check_agrees_with_qemu, qt_setup,
						qt_teardown),
	};
	if (system("qemu-img --version >/dev/null 2>&1") != 0) {
		fprintf(stderr, "qemu-img not found: install Debian's qemu-utils\n");
		return 77;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
