/* qcow2 refcounts, host cluster allocation and the order in which metadata
 * reaches the disk.
 *
 * Crash safety. A kill -9 (or power loss, given the flushes of b->file) at
 * any instant must leave an image that `qemu-img check` finds consistent:
 * leaked clusters (refcount higher than the references) are allowed,
 * anything else is not. Every write of metadata keeps these invariants:
 *
 * (1) A cluster's refcount is raised, and the refcount block holding it
 *     written, before any table that refers to the cluster (L1, L2,
 *     refcount table, snapshot table, header) is written; b->file is
 *     flushed between the two. [qcow2_meta_flush phase 1 before phase 2;
 *     qcow2_l2_writeback; the fresh tables of reftable_grow,
 *     qcow2_grow_l1 and the snapshot code are written after their
 *     refcounts]
 * (2) Guest data reaches its host cluster before the L2 entry that maps
 *     it: an L2 entry changes (in the cache) only after the data write has
 *     completed, and dirty L2 tables are written only after a flush of
 *     b->file. [qcow2_pwritev; qcow2_meta_flush phase 2; qcow2_l2_writeback]
 * (3) A new L2 table (fresh or a copy of a shared one) is written, and
 *     b->file flushed, before the L1 entry pointing at it. [phase 3 after
 *     phase 2]
 * (4) A refcount block is written, and b->file flushed, before the refcount
 *     table entry pointing at it. [refblock_create, reftable_grow]
 * (5) Freeing is the reverse of (1): a cluster's refcount drops only after
 *     every table that referred to it has been rewritten and flushed.
 *     Guest-path frees are queued (qcow2_free_later) and applied by
 *     qcow2_meta_flush after phase 3 and one more flush; tables the header
 *     points to are freed after the new header is flushed.
 * (6) Tables the header points to (L1, refcount table, snapshot table) are
 *     never rewritten in place when they move: the new copy is written
 *     and flushed, then the header, then the old copy freed (5).
 * (7) A host cluster with refcount > 1 is never written in place; writes to
 *     it allocate a new cluster (copy on write). QCOW_OFLAG_COPIED in the
 *     active L1/L2 tables says refcount == 1 and is what the write path
 *     trusts.
 * (8) With lazy refcounts, (1), (4) and (5) are relaxed: the dirty bit is
 *     written and flushed before the first metadata write of the session,
 *     refcount blocks are written when convenient, and the bit is cleared
 *     only after all of them have been written and flushed (close). An
 *     image found dirty is repaired by a full check on open. (2) and (3)
 *     still hold so that no flushed data can be lost.
 * (9) A host cluster is not freed while guest data I/O mapped to it is in
 *     flight (s->inflight, qcow2.h): such I/O was mapped before the entry
 *     changed and would otherwise land in, or read, whatever the cluster
 *     is reallocated to (a table, another guest cluster). A queued free
 *     that touches a cluster busy that way stays queued for the next
 *     qcow2_meta_flush; excl operations wait for all data I/O, so the
 *     refcount changes they make need no such check. [apply_pending;
 *     qcow2_aio.c's requests stay listed until their completion runs]
 *
 * A missing refcount block goes to the first free cluster that is not part
 * of the run being allocated (qcow2_alloc_clusters sets s->avoid_*): if that
 * cluster lies in the region the block describes, the block counts itself;
 * if it lies in another region without a block, that region's block is
 * made first, the same way. */
#include <errno.h>
#include <endian.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "qcow2.h"

/* ---- refcount block entries (any width from 1 to 64 bits) ---- */

uint64_t qcow2_rb_entry_get(const struct qcow2 *s, const uint8_t *rb, uint64_t i)
{
	uint32_t bits = 1u << s->refcount_order;
	uint16_t v16;
	uint32_t v32;
	uint64_t v64;

	switch (bits) {
	case 8:
		return rb[i];
	case 16:
		memcpy(&v16, rb + i * 2, 2);
		return be16toh(v16);
	case 32:
		memcpy(&v32, rb + i * 4, 4);
		return be32toh(v32);
	case 64:
		memcpy(&v64, rb + i * 8, 8);
		return be64toh(v64);
	default: {
		uint64_t bit = i * bits;
		return (rb[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
	}
	}
}

void qcow2_rb_entry_set(const struct qcow2 *s, uint8_t *rb, uint64_t i, uint64_t v)
{
	uint32_t bits = 1u << s->refcount_order;
	uint16_t v16;
	uint32_t v32;
	uint64_t v64;

	switch (bits) {
	case 8:
		rb[i] = (uint8_t)v;
		break;
	case 16:
		v16 = htobe16((uint16_t)v);
		memcpy(rb + i * 2, &v16, 2);
		break;
	case 32:
		v32 = htobe32((uint32_t)v);
		memcpy(rb + i * 4, &v32, 4);
		break;
	case 64:
		v64 = htobe64(v);
		memcpy(rb + i * 8, &v64, 8);
		break;
	default: {
		uint64_t bit = i * bits;
		uint8_t mask = (uint8_t)(((1u << bits) - 1) << (bit % 8));
		rb[bit / 8] = (uint8_t)((rb[bit / 8] & ~mask) | ((v << (bit % 8)) & mask));
		break;
	}
	}
}

/* ---- flushing and file size ---- */

int qcow2_file_flush(struct qcow2 *s)
{
	return blk_flush(s->file);
}

int qcow2_ensure_file_size(struct qcow2 *s, uint64_t end)
{
	char err[256];
	int ret;

	if (end <= s->file_size)
		return 0;
	ret = blk_truncate(s->file, end, s->grow_mode, err, sizeof(err));
	if (ret < 0) {
		log_error("%s: qcow2: cannot grow the image file to %llu bytes: %s",
			  s->b->filename, (unsigned long long)end, err);
		return ret;
	}
	s->file_size = end;
	return 0;
}

static int cache_write_one(struct qcow2 *s, struct qcow2_cache *c, struct qcow2_cache_entry *e)
{
	int ret = blk_pwrite(s->file, e->offset, e->data, c->table_size, 0);
	if (ret < 0)
		return ret;
	e->dirty = false;
	c->ndirty--;
	return 0;
}

/* Invariants (1) and (2) for one L2 table evicted from the cache. */
int qcow2_l2_writeback(struct qcow2 *s, struct qcow2_cache_entry *e)
{
	int ret;

	if (!s->lazy) {
		ret = qcow2_cache_write_all(s, &s->rb_cache);
		if (ret < 0)
			return ret;
	}
	ret = qcow2_file_flush(s);
	if (ret < 0)
		return ret;
	return cache_write_one(s, &s->l2_cache, e);
}

/* Refcount blocks may always be written: they only ever run ahead. */
int qcow2_rb_writeback(struct qcow2 *s, struct qcow2_cache_entry *e)
{
	return cache_write_one(s, &s->rb_cache, e);
}

int qcow2_reftable_write_entry(struct qcow2 *s, uint64_t i)
{
	uint64_t be = htobe64(s->reftable[i]);
	return blk_pwrite(s->file, s->reftable_offset + i * 8, &be, 8, 0);
}

/* ---- refcount lookup ---- */

/* Offset of the refcount block for region ti, 0 if none; -EIO if the table
 * entry cannot be right. */
static int64_t refblock_offset(struct qcow2 *s, uint64_t ti)
{
	uint64_t off;

	if (ti >= s->reftable_entries)
		return 0;
	off = s->reftable[ti] & ~QCOW2_REFT_RESERVED;
	if (!off)
		return 0;
	if (qcow2_offset_into_cluster(s, off) || off + s->cluster_size > s->file_size) {
		qcow2_mark_corrupt(s, "refcount block %llu at offset %#llx is %s",
				   (unsigned long long)ti, (unsigned long long)off,
				   qcow2_offset_into_cluster(s, off) ? "not cluster aligned"
								     : "outside the image");
		return -EIO;
	}
	return (int64_t)off;
}

int qcow2_refcount_get(struct qcow2 *s, uint64_t cluster, uint64_t *rc)
{
	uint64_t ti = cluster >> s->refblock_bits;
	int64_t off = refblock_offset(s, ti);
	uint8_t *rb;
	int ret;

	if (off <= 0) {
		*rc = 0;
		return (int)off;
	}
	ret = qcow2_cache_get(s, &s->rb_cache, (uint64_t)off, false, &rb);
	if (ret < 0)
		return ret;
	*rc = qcow2_rb_entry_get(s, rb, cluster & ((1ull << s->refblock_bits) - 1));
	qcow2_cache_put(&s->rb_cache, rb);
	return 0;
}

/* Whether [off, off+len) overlaps the header or a table the header points
 * to: such clusters must never be handed out, whatever refcounts say. */
bool qcow2_overlaps_metadata(const struct qcow2 *s, uint64_t off, uint64_t len)
{
	struct { uint64_t off, len; } m[4] = {
		{ 0, s->cluster_size },
		{ s->l1_offset, (uint64_t)s->l1_size * 8 },
		{ s->reftable_offset, (uint64_t)s->reftable_clusters * s->cluster_size },
		{ s->snapshots_offset, s->nb_snapshots ? s->cluster_size : 0 },
	};
	for (unsigned i = 0; i < 4; i++)
		if (m[i].len && off < m[i].off + m[i].len && m[i].off < off + len)
			return true;
	return false;
}

static int reftable_grow(struct qcow2 *s, uint64_t need_entries);
static int find_free(struct qcow2 *s, uint64_t from, uint64_t n, uint64_t *start_out,
		     uint64_t *first_free);
static int refcount_set_in(struct qcow2 *s, uint64_t cluster, uint64_t rc);

/* First free cluster at or after the hint, outside the run being allocated. */
static int find_free_one(struct qcow2 *s, uint64_t *c)
{
	uint64_t first;
	int ret = find_free(s, s->free_hint, 1, c, &first);
	if (ret == 0 && *c >= s->avoid_lo && *c < s->avoid_hi)
		ret = find_free(s, s->avoid_hi, 1, c, &first);
	return ret;
}

/* Creates the block for region ti (see the top of the file); invariant (4). */
static int refblock_create(struct qcow2 *s, uint64_t ti, unsigned depth)
{
	const uint64_t E = 1ull << s->refblock_bits;
	uint64_t c, off;
	uint8_t *rb;
	int ret;

	if (depth > 8)
		return -EIO;
	for (;;) {
		ret = find_free_one(s, &c);
		if (ret < 0)
			return ret;
		uint64_t tc = c / E;
		if (tc >= s->reftable_entries) {
			ret = qcow2_ensure_file_size(s, (c + 1) << s->cluster_bits);
			if (ret == 0)
				ret = reftable_grow(s, tc + 1);
			if (ret < 0)
				return ret;
			continue;
		}
		if (tc != ti && !s->reftable[tc]) {
			ret = refblock_create(s, tc, depth + 1);
			if (ret < 0)
				return ret;
			continue;
		}
		break;
	}
	off = c << s->cluster_bits;
	if (off == 0 || qcow2_overlaps_metadata(s, off, s->cluster_size)) {
		qcow2_mark_corrupt(s, "free cluster %llu for a refcount block holds metadata",
				   (unsigned long long)c);
		return -EIO;
	}
	ret = qcow2_ensure_file_size(s, off + s->cluster_size);
	if (ret < 0)
		return ret;
	if (c / E != ti) {
		ret = refcount_set_in(s, c, 1);   /* its region has a block */
		if (ret < 0)
			return ret;
	}
	ret = qcow2_cache_get(s, &s->rb_cache, off, true, &rb);
	if (ret < 0)
		return ret;
	if (c / E == ti)
		qcow2_rb_entry_set(s, rb, c % E, 1);
	ret = blk_pwrite(s->file, off, rb, s->cluster_size, 0);
	qcow2_cache_put(&s->rb_cache, rb);
	if (ret == 0 && c / E != ti)
		ret = qcow2_cache_write_all(s, &s->rb_cache);
	if (ret == 0)
		ret = qcow2_file_flush(s);
	if (ret < 0)
		goto err_forget;
	s->reftable[ti] = off;
	ret = qcow2_reftable_write_entry(s, ti);
	if (ret < 0) {
		s->reftable[ti] = 0;
		goto err_forget;
	}
	return 0;

err_forget:
	qcow2_cache_discard(&s->rb_cache, off);
	return ret;
}

/* Replaces the refcount table by a bigger one covering need_entries regions
 * (invariants (1), (4), (6)). The new table and the blocks describing it
 * go past everything in use: [blocks][table] starting at the first cluster
 * of region R, where neither the old table reaches nor the file. */
static int reftable_grow(struct qcow2 *s, uint64_t need_entries)
{
	const uint64_t E = 1ull << s->refblock_bits;
	const uint64_t cs = s->cluster_size;
	uint64_t file_regions = (qcow2_size_to_clusters(s, s->file_size) + E - 1) / E;
	uint64_t R = s->reftable_entries > file_regions ? s->reftable_entries : file_regions;
	uint64_t area = R * E;             /* first cluster of the new area */
	uint64_t entries = s->reftable_entries * 2, tclusters = 0, nblocks = 1;
	uint8_t *blocks = NULL;
	uint64_t *table = NULL;
	int ret;

	if (entries < need_entries)
		entries = need_entries;
	for (int round = 0; round < 64; round++) {
		if (entries < R + nblocks)
			entries = R + nblocks;
		entries = qcow2_align_up(entries, cs / 8);
		tclusters = entries * 8 / cs;
		uint64_t nb = (nblocks + tclusters + E - 1) / E;
		if (nb == nblocks && entries >= R + nblocks)
			break;
		nblocks = nb;
	}
	if (tclusters * cs > QCOW2_MAX_REFTABLE_BYTES) {
		log_error("%s: qcow2: the refcount table would exceed %u bytes", s->b->filename,
			  QCOW2_MAX_REFTABLE_BYTES);
		return -EFBIG;
	}

	blocks = calloc(nblocks, cs);
	table = calloc(entries, 8);
	if (!blocks || !table) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint64_t c = area; c < area + nblocks + tclusters; c++) {
		uint64_t j = c / E - R;
		qcow2_rb_entry_set(s, blocks + j * cs, c % E, 1);
	}
	for (uint64_t i = 0; i < s->reftable_entries; i++)
		table[i] = htobe64(s->reftable[i]);
	for (uint64_t j = 0; j < nblocks; j++)
		table[R + j] = htobe64((area + j) * cs);

	ret = qcow2_ensure_file_size(s, (area + nblocks + tclusters) * cs);
	if (ret < 0)
		goto out;
	ret = blk_pwrite(s->file, area * cs, blocks, nblocks * cs, 0);
	if (ret < 0)
		goto out;
	ret = blk_pwrite(s->file, (area + nblocks) * cs, table, tclusters * cs, 0);
	if (ret < 0)
		goto out;
	ret = qcow2_file_flush(s);
	if (ret < 0)
		goto out;

	/* The switch: offset (bytes 48-55) and clusters (56-59) in one write. */
	uint8_t hdr[12];
	uint64_t new_off = (area + nblocks) * cs;
	uint64_t be_off = htobe64(new_off);
	uint32_t be_cl = htobe32((uint32_t)tclusters);
	memcpy(hdr, &be_off, 8);
	memcpy(hdr + 8, &be_cl, 4);
	ret = blk_pwrite(s->file, 48, hdr, sizeof(hdr), 0);
	if (ret < 0)
		goto out;
	ret = qcow2_file_flush(s);
	if (ret < 0)
		goto out;

	uint64_t old_off = s->reftable_offset, old_len = (uint64_t)s->reftable_clusters * cs;
	uint64_t *mem = malloc(entries * 8);
	if (!mem) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint64_t i = 0; i < entries; i++)
		mem[i] = be64toh(table[i]);
	free(s->reftable);
	s->reftable = mem;
	s->reftable_entries = entries;
	s->reftable_offset = new_off;
	s->reftable_clusters = (uint32_t)tclusters;
	ret = qcow2_refcount_update(s, old_off, old_len, -1);
out:
	free(blocks);
	free(table);
	return ret;
}

static int refcount_set_in(struct qcow2 *s, uint64_t cluster, uint64_t rc)
{
	uint64_t ti = cluster >> s->refblock_bits;
	int64_t off;
	uint8_t *rb;
	int ret;

	if (ti >= s->reftable_entries) {
		if (!rc)
			return 0;
		ret = reftable_grow(s, ti + 1);
		if (ret < 0)
			return ret;
	}
	off = refblock_offset(s, ti);
	if (off < 0)
		return (int)off;
	if (!off) {
		if (!rc)
			return 0;
		ret = refblock_create(s, ti, 0);
		if (ret < 0)
			return ret;
		off = (int64_t)s->reftable[ti];
	}
	ret = qcow2_cache_get(s, &s->rb_cache, (uint64_t)off, false, &rb);
	if (ret < 0)
		return ret;
	qcow2_rb_entry_set(s, rb, cluster & ((1ull << s->refblock_bits) - 1), rc);
	qcow2_cache_mark_dirty(&s->rb_cache, rb);
	qcow2_cache_put(&s->rb_cache, rb);
	return 0;
}

int qcow2_refcount_set(struct qcow2 *s, uint64_t cluster, uint64_t rc)
{
	int ret;

	if (rc > s->refcount_max)
		return -ERANGE;
	/* Decrements too: a free whose refcount block is written lazily would
	 * otherwise leave a leak that nothing repairs. */
	if (!s->dirty_set && s->lazy) {
		ret = qcow2_mark_dirty(s);
		if (ret < 0)
			return ret;
	}
	ret = refcount_set_in(s, cluster, rc);
	if (ret < 0)
		return ret;
	if (!rc) {
		uint64_t off = cluster << s->cluster_bits;
		if (cluster < s->free_hint)
			s->free_hint = cluster;
		qcow2_cache_discard(&s->l2_cache, off);
		if (s->compressed_next >> s->cluster_bits == cluster)
			s->compressed_next = 0;
	}
	return 0;
}

/* Adds addend to the refcount of every cluster [off, off+len) touches. */
int qcow2_refcount_update(struct qcow2 *s, uint64_t off, uint64_t len, int64_t addend)
{
	if (!len)
		return 0;
	uint64_t first = off >> s->cluster_bits;
	uint64_t last = (off + len - 1) >> s->cluster_bits;

	for (uint64_t c = first; c <= last; c++) {
		uint64_t rc;
		int ret = qcow2_refcount_get(s, c, &rc);
		if (ret < 0)
			return ret;
		if (addend < 0 && rc < (uint64_t)-addend) {
			qcow2_mark_corrupt(s, "refcount of cluster %llu would drop below zero",
					   (unsigned long long)c);
			return -EIO;
		}
		if (addend > 0 && rc + (uint64_t)addend > s->refcount_max) {
			log_error("%s: qcow2: refcount of cluster %llu would exceed %llu "
				  "(refcount_bits %u)", s->b->filename, (unsigned long long)c,
				  (unsigned long long)s->refcount_max, 1u << s->refcount_order);
			return -ERANGE;
		}
		ret = qcow2_refcount_set(s, c, rc + (uint64_t)addend);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* ---- allocation ---- */

/* First run of n free clusters at or after `from`. */
static int find_free(struct qcow2 *s, uint64_t from, uint64_t n, uint64_t *start_out,
		     uint64_t *first_free)
{
	const uint64_t E = 1ull << s->refblock_bits;
	uint64_t c = from, start = 0, run = 0;
	bool seen_free = false;

	while (run < n) {
		uint64_t ti = c / E, end = (ti + 1) * E;
		int64_t off = refblock_offset(s, ti);
		if (off < 0)
			return (int)off;
		if (!off) {
			if (!run)
				start = c;
			if (!seen_free) {
				*first_free = c;
				seen_free = true;
			}
			uint64_t take = end - c < n - run ? end - c : n - run;
			run += take;
			c += take;
			continue;
		}
		uint8_t *rb;
		int ret = qcow2_cache_get(s, &s->rb_cache, (uint64_t)off, false, &rb);
		if (ret < 0)
			return ret;
		for (; c < end && run < n; c++) {
			if (qcow2_rb_entry_get(s, rb, c % E)) {
				run = 0;
				continue;
			}
			if (!seen_free) {
				*first_free = c;
				seen_free = true;
			}
			if (!run)
				start = c;
			run++;
		}
		qcow2_cache_put(&s->rb_cache, rb);
	}
	*start_out = start;
	return 0;
}

int64_t qcow2_alloc_clusters(struct qcow2 *s, uint64_t n)
{
	const uint64_t E = 1ull << s->refblock_bits;
	uint64_t start = 0, first_free = 0;
	int ret;

	if (!n)
		return -EINVAL;
	for (int tries = 0;; tries++) {
		ret = find_free(s, s->free_hint, n, &start, &first_free);
		if (ret < 0)
			return ret;
		uint64_t last_region = (start + n - 1) / E;
		if (last_region < s->reftable_entries)
			break;
		if (tries > 4)
			return -EIO;
		/* Grow first: the new table lands past everything, maybe on start. */
		ret = reftable_grow(s, last_region + 1);
		if (ret < 0)
			return ret;
	}
	if ((start + n) << s->cluster_bits >> s->cluster_bits != start + n ||
	    ((start + n) << s->cluster_bits) > (1ull << 56)) {
		log_error("%s: qcow2: image file would grow past 64 PiB", s->b->filename);
		return -EFBIG;
	}
	if (qcow2_overlaps_metadata(s, start << s->cluster_bits, n << s->cluster_bits)) {
		qcow2_mark_corrupt(s, "free clusters %llu+%llu overlap the header or its tables",
				   (unsigned long long)start, (unsigned long long)n);
		return -EIO;
	}
	/* The file covers the run first, so that a refcount table growing
	 * under the refcount updates lands past it. */
	ret = qcow2_ensure_file_size(s, (start + n) << s->cluster_bits);
	if (ret < 0)
		return ret;
	s->avoid_lo = start;
	s->avoid_hi = start + n;
	for (uint64_t c = start; c < start + n; c++) {
		ret = qcow2_refcount_set(s, c, 1);
		if (ret < 0) {
			/* Undo what was taken; a failure here only leaks. */
			for (uint64_t u = start; u < c; u++)
				qcow2_refcount_set(s, u, 0);
			break;
		}
	}
	s->avoid_lo = s->avoid_hi = 0;
	if (ret < 0)
		return ret;
	if (first_free == start)
		s->free_hint = start + n;
	else if (first_free > s->free_hint)
		s->free_hint = first_free;
	return (int64_t)(start << s->cluster_bits);
}

/* Byte-granular space for compressed clusters: consecutive compressed
 * clusters share host clusters, each reference counted once per
 * compressed cluster that touches it (as qemu-img check counts them). */
int64_t qcow2_alloc_bytes(struct qcow2 *s, uint32_t len)
{
	uint64_t next = s->compressed_next;
	int ret;

	if (next && qcow2_offset_into_cluster(s, next)) {
		uint64_t room = s->cluster_size - qcow2_offset_into_cluster(s, next);
		uint64_t rc;
		ret = qcow2_refcount_get(s, next >> s->cluster_bits, &rc);
		if (ret < 0)
			return ret;
		if (len <= room && rc > 0 && rc < s->refcount_max) {
			ret = qcow2_refcount_update(s, next, 1, 1);
			if (ret < 0)
				return ret;
			s->compressed_next = next + len;
			return (int64_t)next;
		}
	}
	int64_t off = qcow2_alloc_clusters(s, qcow2_size_to_clusters(s, len));
	if (off < 0)
		return off;
	s->compressed_next = (uint64_t)off + len;
	if (!qcow2_offset_into_cluster(s, s->compressed_next))
		s->compressed_next = 0;
	return off;
}

int qcow2_free_later(struct qcow2 *s, uint64_t offset, uint64_t len)
{
	if (s->npending == s->pending_cap) {
		unsigned cap = s->pending_cap ? s->pending_cap * 2 : 64;
		struct qcow2_range *p = realloc(s->pending, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		s->pending = p;
		s->pending_cap = cap;
	}
	s->pending[s->npending++] = (struct qcow2_range){ offset, len };
	return 0;
}

/* Invariant (9): frees of clusters with data I/O in flight wait for the
 * next round. */
static int apply_pending(struct qcow2 *s)
{
	unsigned kept = 0;
	int ret = 0;

	for (unsigned i = 0; i < s->npending; i++) {
		struct qcow2_range r = s->pending[i];
		/* r is unmapped: I/O mapped after this check cannot reach
		 * what r frees. */
		if (qcow2_inflight_busy(s, r.offset, r.len, false)) {
			s->pending[kept++] = r;
			continue;
		}
		int e = qcow2_refcount_update(s, r.offset, r.len, -1);
		if (e < 0 && !ret)
			ret = e;   /* keep going: the rest only leaks if skipped */
	}
	s->npending = kept;
	return ret;
}

/* Makes everything in the caches durable in the order the invariants at the
 * top of the file demand; the caller's flush of b->file follows. */
int qcow2_meta_flush(struct qcow2 *s)
{
	bool l1_dirty = s->l1_dirty_lo < s->l1_dirty_hi;
	int ret;

	if (!s->lazy) {
		ret = qcow2_cache_write_all(s, &s->rb_cache);     /* phase 1 */
		if (ret < 0)
			return ret;
	}
	if (!s->l2_cache.ndirty && !l1_dirty && !s->npending)
		return 0;
	ret = qcow2_file_flush(s);
	if (ret < 0)
		return ret;
	if (s->l2_cache.ndirty) {                                 /* phase 2 */
		ret = qcow2_cache_write_all(s, &s->l2_cache);
		if (ret < 0)
			return ret;
		if (l1_dirty || s->npending) {
			ret = qcow2_file_flush(s);
			if (ret < 0)
				return ret;
		}
	}
	if (l1_dirty) {                                           /* phase 3 */
		ret = qcow2_l1_write(s);
		if (ret < 0)
			return ret;
		if (s->npending) {
			ret = qcow2_file_flush(s);
			if (ret < 0)
				return ret;
		}
	}
	if (s->npending) {                                        /* frees, (5) */
		ret = apply_pending(s);
		if (ret < 0)
			return ret;
		if (!s->lazy) {
			ret = qcow2_cache_write_all(s, &s->rb_cache);
			if (ret < 0)
				return ret;
		}
	}
	return 0;
}

int qcow2_refcount_init(struct qcow2 *s, char *err, size_t errlen)
{
	uint64_t bytes = (uint64_t)s->reftable_clusters * s->cluster_size;
	uint64_t rb_n = (1u << 20) / s->cluster_size;
	int ret;

	s->reftable_entries = bytes / 8;
	s->reftable = malloc(bytes ? bytes : 8);
	if (!s->reftable)
		return -ENOMEM;
	ret = blk_pread(s->file, s->reftable_offset, s->reftable, bytes);
	if (ret < 0) {
		qcow2_set_err(s, err, errlen, "cannot read the refcount table: %s",
			      strerror(-ret));
		return ret;
	}
	for (uint64_t i = 0; i < s->reftable_entries; i++)
		s->reftable[i] = be64toh(s->reftable[i]);
	if (rb_n < 4)
		rb_n = 4;
	if (rb_n > 256)
		rb_n = 256;
	ret = qcow2_cache_init(&s->rb_cache, "refcount block", (unsigned)rb_n, s->cluster_size,
			       qcow2_rb_writeback);
	if (ret < 0)
		return ret;
	s->free_hint = 0;
	return 0;
}

/* Check's repair of a broken refcount structure: new table and blocks past
 * the end of everything counted, written and flushed before the header
 * switches to them (6); the old ones simply stop being counted. counts
 * must already include every reference except the new structure's own. */
int qcow2_refcount_rebuild(struct qcow2 *s, uint64_t *counts, uint64_t nclusters)
{
	const uint64_t E = 1ull << s->refblock_bits;
	const uint64_t cs = s->cluster_size;
	uint64_t end = 0;
	int ret;

	for (uint64_t c = 0; c < nclusters; c++)
		if (counts[c])
			end = c + 1;
	if (end < qcow2_size_to_clusters(s, s->file_size))
		end = qcow2_size_to_clusters(s, s->file_size);
	/* [blocks][table] at `end`; blocks cover everything up to the area's end. */
	uint64_t nblocks = 1, tclusters = 1, entries = 0;
	for (int round = 0; round < 64; round++) {
		uint64_t total = end + tclusters + nblocks;
		uint64_t nb = (total + E - 1) / E;
		entries = qcow2_align_up(nb, cs / 8);
		uint64_t tc = entries * 8 / cs;
		if (nb == nblocks && tc == tclusters)
			break;
		nblocks = nb;
		tclusters = tc;
	}
	if (tclusters * cs > QCOW2_MAX_REFTABLE_BYTES)
		return -EFBIG;
	uint64_t total = end + nblocks + tclusters;
	uint8_t *blocks = calloc(nblocks, cs);
	uint64_t *table = calloc(entries, 8);
	if (!blocks || !table) {
		free(blocks);
		free(table);
		return -ENOMEM;
	}
	for (uint64_t c = 0; c < total; c++) {
		uint64_t v = c < nclusters ? counts[c] : 0;
		if (c >= end)
			v = 1;
		if (v > s->refcount_max)
			v = s->refcount_max;
		if (v)
			qcow2_rb_entry_set(s, blocks + (c / E) * cs, c % E, v);
	}
	for (uint64_t j = 0; j < nblocks; j++)
		table[j] = htobe64((end + j) * cs);

	ret = qcow2_ensure_file_size(s, total * cs);
	if (ret < 0)
		goto out;
	ret = blk_pwrite(s->file, end * cs, blocks, nblocks * cs, 0);
	if (ret < 0)
		goto out;
	ret = blk_pwrite(s->file, (end + nblocks) * cs, table, tclusters * cs, 0);
	if (ret < 0)
		goto out;
	ret = qcow2_file_flush(s);
	if (ret < 0)
		goto out;
	uint8_t hdr[12];
	uint64_t be_off = htobe64((end + nblocks) * cs);
	uint32_t be_cl = htobe32((uint32_t)tclusters);
	memcpy(hdr, &be_off, 8);
	memcpy(hdr + 8, &be_cl, 4);
	ret = blk_pwrite(s->file, 48, hdr, sizeof(hdr), 0);
	if (ret < 0)
		goto out;
	ret = qcow2_file_flush(s);
	if (ret < 0)
		goto out;

	/* The cache holds blocks of the old structure: forget them. */
	for (unsigned i = 0; i < s->rb_cache.n; i++) {
		s->rb_cache.e[i].offset = 0;
		s->rb_cache.e[i].dirty = false;
	}
	s->rb_cache.ndirty = 0;
	uint64_t *mem = malloc(entries * 8);
	if (!mem) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint64_t i = 0; i < entries; i++)
		mem[i] = be64toh(table[i]);
	free(s->reftable);
	s->reftable = mem;
	s->reftable_entries = entries;
	s->reftable_offset = (end + nblocks) * cs;
	s->reftable_clusters = (uint32_t)tclusters;
	s->free_hint = 0;
	s->compressed_next = 0;
out:
	free(blocks);
	free(table);
	return ret;
}
