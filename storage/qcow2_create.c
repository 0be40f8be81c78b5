/* Creating qcow2 images, growing and shrinking them, growing the L1 table.
 *
 * An image is born small (header, refcount table, one refcount block, no
 * L1 table, size 0) and then grown to its size by the same truncate path
 * an open image uses, so that the L1 table, refcount growth and
 * preallocation have one implementation. */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "qcow2.h"

static void set_err(char *err, size_t errlen, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void set_err(char *err, size_t errlen, const char *path, const char *fmt, ...)
{
	char msg[400];
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(err, errlen, "%s: %s", path, msg);
}

/* Replaces the L1 table by one of at least min_size entries (invariants
 * (1), (3), (6) of qcow2_refcount.c). Lock held, exclusive. */
int qcow2_grow_l1(struct qcow2 *s, uint64_t min_size)
{
	uint64_t old_off = s->l1_offset, old_size = s->l1_size;
	uint64_t bytes, *be, *mem;
	int64_t off;
	int ret;

	if (min_size <= s->l1_size)
		return 0;
	if (min_size > QCOW2_MAX_L1_BYTES / 8)
		return -EFBIG;
	/* Dirty entries may point at L2 tables not yet written (3). */
	ret = qcow2_meta_flush(s);
	if (ret < 0)
		return ret;
	bytes = min_size * 8;
	off = qcow2_alloc_clusters(s, qcow2_size_to_clusters(s, bytes));
	if (off < 0)
		return (int)off;
	be = calloc(1, qcow2_align_up(bytes, s->cluster_size));
	mem = calloc(min_size, 8);
	if (!be || !mem) {
		ret = -ENOMEM;
		goto err_free;
	}
	for (uint32_t i = 0; i < s->l1_size; i++) {
		be[i] = htobe64(s->l1[i]);
		mem[i] = s->l1[i];
	}
	ret = qcow2_cache_write_all(s, &s->rb_cache);
	if (ret == 0)
		ret = blk_pwrite(s->file, (uint64_t)off, be, qcow2_align_up(bytes, s->cluster_size), 0);
	if (ret == 0)
		ret = qcow2_file_flush(s);
	if (ret < 0)
		goto err_free;

	uint8_t hdr[12];
	uint32_t be_size = htobe32((uint32_t)min_size);
	uint64_t be_off = htobe64((uint64_t)off);
	memcpy(hdr, &be_size, 4);
	memcpy(hdr + 4, &be_off, 8);
	ret = blk_pwrite(s->file, 36, hdr, sizeof(hdr), 0);
	if (ret == 0)
		ret = qcow2_file_flush(s);
	if (ret < 0)
		goto err_free;

	free(s->l1);
	s->l1 = mem;
	s->l1_size = (uint32_t)min_size;
	s->l1_offset = (uint64_t)off;
	s->l1_dirty_lo = s->l1_dirty_hi = 0;
	free(be);
	if (old_size)
		return qcow2_refcount_update(s, old_off, old_size * 8, -1);
	return 0;

err_free:
	free(be);
	free(mem);
	qcow2_refcount_update(s, (uint64_t)off, bytes, -1);
	return ret;
}

/* Whether any guest cluster from `first` on holds host space. */
static int tail_in_use(struct qcow2 *s, uint64_t first, bool *used)
{
	uint8_t *l2;
	*used = false;
	for (uint64_t l1i = first >> s->l2_bits; l1i < s->l1_size; l1i++) {
		uint64_t off = s->l1[l1i] & QCOW2_OFFSET_MASK;
		if (!off)
			continue;
		int ret = qcow2_cache_get(s, &s->l2_cache, off, false, &l2);
		if (ret < 0)
			return ret;
		uint32_t j = l1i == first >> s->l2_bits ? (uint32_t)(first & (s->l2_entries - 1)) : 0;
		for (; j < s->l2_entries; j++) {
			uint64_t e = qcow2_l2_get(s, l2, j), bm = qcow2_l2_bitmap(s, l2, j);
			if ((e & (QCOW2_OFFSET_MASK | QCOW2_OFLAG_COMPRESSED)) || (uint32_t)bm) {
				*used = true;
				break;
			}
		}
		qcow2_cache_put(&s->l2_cache, l2);
		if (*used)
			return 0;
	}
	return 0;
}

static int write_size(struct qcow2 *s, uint64_t size)
{
	uint64_t be = htobe64(size);
	int ret = blk_pwrite(s->file, 24, &be, 8, 0);
	if (ret == 0)
		ret = qcow2_file_flush(s);
	if (ret == 0) {
		s->size = size;
		s->b->size = size;
	}
	return ret;
}

static int truncate_locked(struct qcow2 *s, uint64_t size, enum blk_prealloc prealloc, char *err,
			   size_t errlen)
{
	int ret;

	if (size % 512) {
		qcow2_set_err(s, err, errlen, "new size %llu is not a multiple of 512",
			      (unsigned long long)size);
		return -EINVAL;
	}
	if (size > INT64_MAX || qcow2_size_to_l1(s, size) > QCOW2_MAX_L1_BYTES / 8) {
		qcow2_set_err(s, err, errlen, "size %llu too large for %u-byte clusters",
			      (unsigned long long)size, s->cluster_size);
		return -EFBIG;
	}
	if (s->corrupt) {
		qcow2_set_err(s, err, errlen, "image is marked corrupt; repair it first");
		return -EIO;
	}
	if (size < s->size) {
		bool used;
		if (prealloc != BLK_PREALLOC_OFF) {
			qcow2_set_err(s, err, errlen, "preallocation makes no sense when shrinking");
			return -EINVAL;
		}
		ret = qcow2_meta_flush(s);
		if (ret == 0)
			ret = tail_in_use(s, qcow2_size_to_clusters(s, size), &used);
		if (ret < 0)
			goto err_io;
		if (used) {
			qcow2_set_err(s, err, errlen, "cannot shrink to %llu bytes: clusters past "
				      "the new end hold data (discard them first)",
				      (unsigned long long)size);
			return -ENOTSUP;
		}
		ret = write_size(s, size);
		if (ret < 0)
			goto err_io;
		return 0;
	}
	ret = qcow2_grow_l1(s, qcow2_size_to_l1(s, size));
	if (ret < 0)
		goto err_io;
	if (prealloc != BLK_PREALLOC_OFF) {
		s->grow_mode = prealloc;
		ret = qcow2_preallocate(s, s->size, size - s->size);
		s->grow_mode = BLK_PREALLOC_OFF;
		if (ret == 0)
			ret = qcow2_meta_flush(s);
		if (ret < 0)
			goto err_io;
	}
	ret = write_size(s, size);
	if (ret < 0)
		goto err_io;
	return 0;

err_io:
	qcow2_set_err(s, err, errlen, "cannot resize to %llu bytes: %s", (unsigned long long)size,
		      strerror(-ret));
	return ret;
}

int qcow2_truncate(struct blk *b, uint64_t size, enum blk_prealloc prealloc, char *err,
		   size_t errlen)
{
	struct qcow2 *s = qcow2_state(b);
	int ret;

	pthread_mutex_lock(&s->lock);
	qcow2_excl_begin(s);
	uint64_t old = s->size;
	ret = truncate_locked(s, size, prealloc, err, errlen);
	qcow2_excl_end(s);
	pthread_mutex_unlock(&s->lock);
	/* A longer backing file must not show through the new tail (QEMU
	 * zeroes it too). */
	if (ret == 0 && size > old && b->backing && blk_size(b->backing) > old) {
		uint64_t end = blk_size(b->backing) < size ? blk_size(b->backing) : size;
		ret = qcow2_write_zeroes(b, old, end - old, 0);
		if (ret < 0)
			qcow2_set_err(s, err, errlen, "cannot zero the grown tail: %s",
				      strerror(-ret));
	}
	return ret;
}

/* ---- create ---- */

static int validate_opts(const char *path, const struct blk_create_opts *o, uint32_t *cs,
			 int *compat, unsigned *rbits, char *err, size_t errlen)
{
	*cs = o->cluster_size ? o->cluster_size : 65536;
	*compat = o->compat ? o->compat : 3;
	*rbits = o->refcount_bits ? o->refcount_bits : 16;

	if (*cs < 512 || *cs > (2u << 20) || (*cs & (*cs - 1))) {
		set_err(err, errlen, path, "cluster size %u must be a power of two between 512 "
			"and 2M", *cs);
		return -EINVAL;
	}
	if (*compat != 2 && *compat != 3) {
		set_err(err, errlen, path, "qcow2 compat level %d unknown (2 for 0.10, 3 for 1.1)",
			*compat);
		return -EINVAL;
	}
	if (*rbits > 64 || (*rbits & (*rbits - 1))) {
		set_err(err, errlen, path, "refcount bits %u must be a power of two up to 64",
			*rbits);
		return -EINVAL;
	}
	if (*compat == 2 && *rbits != 16) {
		set_err(err, errlen, path, "compat=0.10 images only support 16-bit refcounts");
		return -EINVAL;
	}
	if (*compat == 2 && o->lazy_refcounts) {
		set_err(err, errlen, path, "lazy refcounts need compat=1.1");
		return -EINVAL;
	}
	if (o->extended_l2 && (*compat == 2 || *cs < 16384)) {
		set_err(err, errlen, path, "extended L2 entries need compat=1.1 and clusters of "
			"at least 16K");
		return -EINVAL;
	}
	if (o->prealloc != BLK_PREALLOC_OFF && o->backing_file) {
		set_err(err, errlen, path, "preallocation and a backing file cannot be combined");
		return -EINVAL;
	}
	if (o->backing_format && !o->backing_file) {
		set_err(err, errlen, path, "a backing format needs a backing file");
		return -EINVAL;
	}
	if (o->backing_file && (!*o->backing_file ||
				strlen(o->backing_file) > QCOW2_MAX_BACKING_NAME)) {
		set_err(err, errlen, path, "backing file name must be 1..%u bytes",
			QCOW2_MAX_BACKING_NAME);
		return -EINVAL;
	}
	if (o->backing_format && strlen(o->backing_format) > 64) {
		set_err(err, errlen, path, "backing format name too long");
		return -EINVAL;
	}
	return 0;
}

static int backing_size(const char *path, const struct blk_create_opts *o, uint64_t *size,
			char *err, size_t errlen)
{
	char *full = blk_backing_path(path, o->backing_file);
	struct blk_open_opts bo = { .format = o->backing_format, .readonly = true,
				    .force_share = true };
	struct blk *bb;
	int ret;

	if (!full)
		return -ENOMEM;
	ret = blk_open(&bb, full, &bo, err, errlen);
	free(full);
	if (ret < 0)
		return ret;
	*size = qcow2_align_up(blk_size(bb), 512);
	blk_close(bb);
	return 0;
}

/* Header, refcount table and the first refcount block (clusters 0..2). */
static int write_skeleton(struct blk *f, const struct blk_create_opts *o, uint32_t cs,
			  int compat, unsigned rbits, const char *path, char *err, size_t errlen)
{
	struct blk fake_b = { .filename = (char *)path };
	struct qcow2 s;
	uint8_t *buf = NULL;
	int ret;

	memset(&s, 0, sizeof(s));
	s.b = &fake_b;
	s.file = f;
	s.version = (uint32_t)compat;
	s.cluster_bits = (uint32_t)__builtin_ctz(cs);
	s.cluster_size = cs;
	s.refcount_order = (uint32_t)__builtin_ctz(rbits);
	s.reftable_offset = cs;
	s.reftable_clusters = 1;
	s.incompat = o->extended_l2 ? QCOW2_INCOMPAT_EXTL2 : 0;
	s.compat = o->lazy_refcounts ? QCOW2_COMPAT_LAZY_REFCOUNTS : 0;
	s.header_length = compat >= 3 ? QCOW2_HEADER_LEN_WRITTEN : QCOW2_V2_HEADER_LEN;
	s.backing_file = (char *)o->backing_file;
	s.backing_format = (char *)o->backing_format;
	qcow2_derive_layout(&s, NULL, 0);

	ret = qcow2_header_write(&s);
	if (ret < 0) {
		set_err(err, errlen, path, ret == -ENOSPC ? "backing file name does not fit in "
			"the header cluster" : "cannot write the qcow2 header: %s", strerror(-ret));
		return ret;
	}
	buf = calloc(2, cs);
	if (!buf)
		return -ENOMEM;
	uint64_t rb0 = htobe64(2ull * cs);
	memcpy(buf, &rb0, 8);
	for (int i = 0; i < 3; i++)
		qcow2_rb_entry_set(&s, buf + cs, (uint64_t)i, 1);
	ret = blk_pwrite(f, cs, buf, 2ull * cs, 0);
	if (ret == 0)
		ret = blk_flush(f);
	free(buf);
	if (ret < 0)
		set_err(err, errlen, path, "cannot write the refcount table: %s", strerror(-ret));
	return ret;
}

int qcow2_create(const char *path, const struct blk_create_opts *o, char *err, size_t errlen)
{
	const struct blk_driver *proto = blk_protocol_for(path);
	struct blk_create_opts fo;
	struct blk_open_opts oo;
	struct blk *f = NULL, *img = NULL;
	uint64_t size = o->size;
	uint32_t cs;
	int compat, ret;
	unsigned rbits;

	ret = validate_opts(path, o, &cs, &compat, &rbits, err, errlen);
	if (ret < 0)
		return ret;
	if (!size && o->backing_file) {
		ret = backing_size(path, o, &size, err, errlen);
		if (ret < 0)
			return ret;
	}
	if (size % 512) {
		set_err(err, errlen, path, "image size %llu is not a multiple of 512",
			(unsigned long long)size);
		return -EINVAL;
	}
	uint64_t l2_bits = __builtin_ctz(cs) - (o->extended_l2 ? 4 : 3);
	uint64_t span = 1ull << (__builtin_ctz(cs) + l2_bits);
	if (size > INT64_MAX || (size + span - 1) / span > QCOW2_MAX_L1_BYTES / 8) {
		set_err(err, errlen, path, "image size %llu too large for %u-byte clusters",
			(unsigned long long)size, cs);
		return -EFBIG;
	}
	if (!proto || !proto->create) {
		set_err(err, errlen, path, "no storage driver can create this file");
		return -ENOTSUP;
	}

	memset(&fo, 0, sizeof(fo));
	fo.format = proto->name;
	ret = proto->create(path, &fo, err, errlen);
	if (ret < 0)
		return ret;
	memset(&oo, 0, sizeof(oo));
	oo.format = proto->name;
	ret = blk_open(&f, path, &oo, err, errlen);
	if (ret < 0)
		goto err_unlink;
	ret = write_skeleton(f, o, cs, compat, rbits, path, err, errlen);
	blk_close(f);
	if (ret < 0)
		goto err_unlink;

	oo.format = "qcow2";
	oo.no_backing = true;
	ret = blk_open(&img, path, &oo, err, errlen);
	if (ret < 0)
		goto err_unlink;
	ret = blk_truncate(img, size, o->prealloc, err, errlen);
	blk_close(img);
	if (ret < 0)
		goto err_unlink;
	return 0;

err_unlink:
	if (proto == &blk_driver_file)
		unlink(path);
	return ret;
}
