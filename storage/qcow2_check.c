/* qcow2 consistency check and repair, counting what `qemu-img check`
 * counts: every cluster the header, the L1 tables (active and snapshots),
 * their L2 tables, the snapshot table and the refcount structure refer to
 * is counted, and the counts compared with the stored refcounts. A stored
 * refcount above the count is a leak; below it, or any reference that
 * cannot be right (unaligned, outside the image), a corruption. The
 * QCOW_OFLAG_COPIED flags of the active tables must say refcount == 1.
 *
 * Repairs: leaks and refcounts too low are rewritten in place; L1/L2
 * entries pointing outside the image are cleared (reads as zeroes on v3,
 * unallocated on v2); a refcount structure that is itself broken is
 * replaced by a new one built from the counts (qcow2_refcount_rebuild). */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

struct chk {
	struct qcow2 *s;
	unsigned fix;
	struct blk_check_result *res;
	FILE *report;
	uint32_t *counts;       /* references found, per cluster of the file */
	uint64_t nclusters;
	uint64_t next_contiguous;
	bool rebuild;           /* the refcount structure itself is broken */
	bool l1_changed;
};

static void note(struct chk *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct chk *c, const char *fmt, ...)
{
	va_list ap;
	if (!c->report)
		return;
	va_start(ap, fmt);
	vfprintf(c->report, fmt, ap);
	va_end(ap);
	fputc('\n', c->report);
}

/* Counts a reference to every cluster [off, off+len) touches. */
static void count(struct chk *c, uint64_t off, uint64_t len)
{
	struct qcow2 *s = c->s;
	if (!len)
		return;
	uint64_t first = off >> s->cluster_bits, last = (off + len - 1) >> s->cluster_bits;
	for (uint64_t k = first; k <= last; k++) {
		if (k >= c->nclusters) {
			note(c, "ERROR: cluster %llu (offset %#llx) is referenced but lies past "
			     "the end of the image", (unsigned long long)k,
			     (unsigned long long)(k << s->cluster_bits));
			c->res->corruptions++;
			return;
		}
		if (c->counts[k] < UINT32_MAX)
			c->counts[k]++;
	}
}

static void uncount(struct chk *c, uint64_t off, uint64_t len)
{
	struct qcow2 *s = c->s;
	if (!len)
		return;
	uint64_t first = off >> s->cluster_bits, last = (off + len - 1) >> s->cluster_bits;
	for (uint64_t k = first; k <= last && k < c->nclusters; k++)
		if (c->counts[k])
			c->counts[k]--;
}

static bool in_image(const struct chk *c, uint64_t off, uint64_t len)
{
	return off + len >= off && off + len <= c->s->file_size;
}

static bool fixing(const struct chk *c)
{
	return (c->fix & BLK_CHECK_FIX_ERRORS) != 0;
}

/* One L2 table. Returns whether it changed (repairs) in *changed. */
static int check_l2(struct chk *c, uint8_t *l2, uint64_t l2off, bool active, bool *changed)
{
	struct qcow2 *s = c->s;

	c->next_contiguous = 0;   /* qemu-img counts fragments within one L2 table */

	for (uint32_t j = 0; j < s->l2_entries; j++) {
		uint64_t e = qcow2_l2_get(s, l2, j), bm = qcow2_l2_bitmap(s, l2, j);
		enum qcow2_ctype t = qcow2_classify(s, e);
		uint64_t off, len;
		const char *bad = NULL;

		if (t == QCOW2_COMPRESSED) {
			qcow2_compressed_range(s, e, &off, &len);
			if (s->ext_l2 && bm)
				bad = "compressed cluster with a subcluster bitmap";
			else if (!in_image(c, off & ~511ull, 1)) {
				bad = "compressed cluster outside the image";
			} else {
				count(c, off & ~511ull, qcow2_align_up(len + (off & 511), 512));
				if (active) {
					c->res->allocated_clusters++;
					c->res->compressed_clusters++;
					c->res->fragmented_clusters++;
				}
				continue;
			}
		} else if (t == QCOW2_NORMAL || t == QCOW2_ZERO_ALLOC) {
			off = e & QCOW2_OFFSET_MASK;
			if (qcow2_offset_into_cluster(s, off))
				bad = "cluster is not properly aligned";
			else if (!in_image(c, off, s->cluster_size))
				bad = "data cluster lies outside the image";
			else if (s->ext_l2 && qcow2_l2_entry_valid(s, e, bm) < 0)
				bad = "invalid subcluster bitmap";
			else {
				count(c, off, s->cluster_size);
				if (active) {
					c->res->allocated_clusters++;
					if (c->next_contiguous && off != c->next_contiguous)
						c->res->fragmented_clusters++;
					c->next_contiguous = off + s->cluster_size;
				}
				continue;
			}
		} else {
			if (s->ext_l2 && qcow2_l2_entry_valid(s, e, bm) < 0)
				bad = "invalid subcluster bitmap";
			else
				continue;
		}
		note(c, "%s offset=%#llx: %s; L2 entry %u of the table at %#llx corrupted",
		     fixing(c) && active ? "Repairing" : "ERROR", (unsigned long long)e, bad, j,
		     (unsigned long long)l2off);
		if (fixing(c) && active) {
			uint64_t ne = s->version >= 3 && !s->ext_l2 ? QCOW2_OFLAG_ZERO : 0;
			qcow2_l2_set(s, l2, j, ne, s->ext_l2 ? 0xffffffffull << 32 : 0);
			*changed = true;
			c->res->corruptions_fixed++;
		} else {
			c->res->corruptions++;
		}
	}
	return 0;
}

/* An L1 table and everything below it. l1 is host order; for the active
 * table repairs change it in place. */
static int check_l1(struct chk *c, uint64_t *l1, uint32_t l1_size, bool active)
{
	struct qcow2 *s = c->s;
	uint8_t *l2 = malloc(s->cluster_size);
	int ret = 0;

	if (!l2)
		return -ENOMEM;
	for (uint32_t i = 0; i < l1_size; i++) {
		uint64_t l2off = l1[i] & QCOW2_OFFSET_MASK;
		const char *bad = NULL;
		if (!l2off)
			continue;
		if (qcow2_offset_into_cluster(s, l2off))
			bad = "L2 table is not cluster aligned";
		else if (!in_image(c, l2off, s->cluster_size))
			bad = "L2 table lies outside the image";
		if (bad) {
			note(c, "%s l2_offset=%#llx: %s; L1 entry %u corrupted",
			     fixing(c) && active ? "Repairing" : "ERROR",
			     (unsigned long long)l2off, bad, i);
			if (fixing(c) && active) {
				l1[i] = 0;
				qcow2_l1_set(s, i, 0);
				c->l1_changed = true;
				c->res->corruptions_fixed++;
			} else {
				c->res->corruptions++;
			}
			continue;
		}
		count(c, l2off, s->cluster_size);
		ret = blk_pread(s->file, l2off, l2, s->cluster_size);
		if (ret < 0) {
			note(c, "ERROR: cannot read the L2 table at %#llx: %s",
			     (unsigned long long)l2off, strerror(-ret));
			c->res->check_errors++;
			ret = 0;
			continue;
		}
		bool changed = false;
		check_l2(c, l2, l2off, active, &changed);
		if (changed) {
			ret = blk_pwrite(s->file, l2off, l2, s->cluster_size, 0);
			if (ret < 0)
				break;
		}
	}
	free(l2);
	return ret;
}

/* Stored refcount of cluster k, without side effects on broken tables. */
static int stored_refcount(struct chk *c, uint64_t k, uint64_t *rc, bool *has_block)
{
	struct qcow2 *s = c->s;
	uint64_t ti = k >> s->refblock_bits, off;
	uint8_t *rb;
	int ret;

	*rc = 0;
	*has_block = false;
	if (ti >= s->reftable_entries)
		return 0;
	off = s->reftable[ti] & ~QCOW2_REFT_RESERVED;
	if (!off || qcow2_offset_into_cluster(s, off) || !in_image(c, off, s->cluster_size))
		return 0;
	*has_block = true;
	ret = qcow2_cache_get(s, &s->rb_cache, off, false, &rb);
	if (ret < 0)
		return ret;
	*rc = qcow2_rb_entry_get(s, rb, k & ((1ull << s->refblock_bits) - 1));
	qcow2_cache_put(&s->rb_cache, rb);
	return 0;
}

static int check_refcount_structure(struct chk *c)
{
	struct qcow2 *s = c->s;

	count(c, s->reftable_offset, (uint64_t)s->reftable_clusters * s->cluster_size);
	for (uint64_t i = 0; i < s->reftable_entries; i++) {
		uint64_t off = s->reftable[i] & ~QCOW2_REFT_RESERVED;
		if (!off)
			continue;
		if (qcow2_offset_into_cluster(s, off)) {
			note(c, "ERROR refcount block %llu is not cluster aligned; refcount table "
			     "entry corrupted", (unsigned long long)i);
			c->res->corruptions++;
			c->rebuild = true;
			continue;
		}
		if (!in_image(c, off, s->cluster_size)) {
			note(c, "ERROR refcount block %llu is outside image", (unsigned long long)i);
			c->res->corruptions++;
			c->rebuild = true;
			continue;
		}
		count(c, off, s->cluster_size);
	}
	return 0;
}

static int compare_refcounts(struct chk *c)
{
	struct qcow2 *s = c->s;
	int ret;

	for (uint64_t k = 0; k < c->nclusters; k++) {
		uint64_t rc;
		bool has_block;
		ret = stored_refcount(c, k, &rc, &has_block);
		if (ret < 0) {
			c->res->check_errors++;
			continue;
		}
		uint64_t want = c->counts[k];
		if (rc == want)
			continue;
		bool leak = rc > want;
		bool fix = (c->fix & (leak ? BLK_CHECK_FIX_LEAKS : BLK_CHECK_FIX_ERRORS)) != 0;
		note(c, "%s cluster %llu refcount=%llu reference=%llu",
		     fix ? "Repairing" : (leak ? "Leaked" : "ERROR"), (unsigned long long)k,
		     (unsigned long long)rc, (unsigned long long)want);
		if (fix && (!has_block || want > s->refcount_max)) {
			/* A block would have to be created where data may sit. */
			c->rebuild = true;
		} else if (fix) {
			ret = qcow2_refcount_set(s, k, want);
			if (ret < 0)
				return ret;
			if (leak)
				c->res->leaks_fixed++;
			else
				c->res->corruptions_fixed++;
			continue;
		}
		if (leak)
			c->res->leaks++;
		else
			c->res->corruptions++;
	}
	return 0;
}

static int check_copied(struct chk *c)
{
	struct qcow2 *s = c->s;
	uint8_t *l2 = malloc(s->cluster_size);
	int ret = 0;

	if (!l2)
		return -ENOMEM;
	for (uint32_t i = 0; i < s->l1_size; i++) {
		uint64_t l1e = s->l1[i], l2off = l1e & QCOW2_OFFSET_MASK, rc;
		bool has_block, changed = false;
		if (!l2off || qcow2_offset_into_cluster(s, l2off) ||
		    !in_image(c, l2off, s->cluster_size))
			continue;
		ret = stored_refcount(c, l2off >> s->cluster_bits, &rc, &has_block);
		if (ret < 0)
			break;
		if ((rc == 1) != !!(l1e & QCOW2_OFLAG_COPIED)) {
			note(c, "%s OFLAG_COPIED L2 cluster: l1_index=%u l1_entry=%llx "
			     "refcount=%llu", fixing(c) ? "Repairing" : "ERROR", i,
			     (unsigned long long)l1e, (unsigned long long)rc);
			if (fixing(c)) {
				qcow2_l1_set(s, i, rc == 1 ? l1e | QCOW2_OFLAG_COPIED
							    : l1e & ~QCOW2_OFLAG_COPIED);
				c->l1_changed = true;
				c->res->corruptions_fixed++;
			} else {
				c->res->corruptions++;
			}
		}
		ret = blk_pread(s->file, l2off, l2, s->cluster_size);
		if (ret < 0)
			break;
		for (uint32_t j = 0; j < s->l2_entries; j++) {
			uint64_t e = qcow2_l2_get(s, l2, j);
			enum qcow2_ctype t = qcow2_classify(s, e);
			if (t != QCOW2_NORMAL && t != QCOW2_ZERO_ALLOC)
				continue;
			uint64_t off = e & QCOW2_OFFSET_MASK;
			if (qcow2_offset_into_cluster(s, off) || !in_image(c, off, s->cluster_size))
				continue;
			ret = stored_refcount(c, off >> s->cluster_bits, &rc, &has_block);
			if (ret < 0)
				break;
			if ((rc == 1) == !!(e & QCOW2_OFLAG_COPIED))
				continue;
			note(c, "%s OFLAG_COPIED data cluster: l2_entry=%llx refcount=%llu",
			     fixing(c) ? "Repairing" : "ERROR", (unsigned long long)e,
			     (unsigned long long)rc);
			if (fixing(c)) {
				uint64_t ne = rc == 1 ? e | QCOW2_OFLAG_COPIED : e & ~QCOW2_OFLAG_COPIED;
				qcow2_l2_set(s, l2, j, ne, qcow2_l2_bitmap(s, l2, j));
				changed = true;
				c->res->corruptions_fixed++;
			} else {
				c->res->corruptions++;
			}
		}
		if (ret < 0)
			break;
		if (changed) {
			ret = blk_pwrite(s->file, l2off, l2, s->cluster_size, 0);
			if (ret < 0)
				break;
		}
	}
	free(l2);
	return ret;
}

/* The check itself; the caller made the caches clean and holds the lock
 * exclusively (or is opening the image). */
int qcow2_check_locked(struct qcow2 *s, unsigned fix, struct blk_check_result *res)
{
	struct chk c = { .s = s, .fix = fix, .res = res };
	char *text = NULL;
	size_t textlen = 0;
	int ret = 0;

	c.nclusters = qcow2_size_to_clusters(s, s->file_size);
	c.counts = calloc(c.nclusters ? c.nclusters : 1, sizeof(*c.counts));
	c.report = open_memstream(&text, &textlen);
	if (!c.counts || !c.report) {
		ret = -ENOMEM;
		goto out;
	}

	count(&c, 0, s->cluster_size);
	count(&c, s->l1_offset, (uint64_t)s->l1_size * 8);
	ret = check_l1(&c, s->l1, s->l1_size, true);
	if (ret < 0)
		goto out;
	uint64_t snap_bytes = 0;
	for (uint32_t i = 0; i < s->nb_snapshots; i++) {
		struct qcow2_snapshot *sn = &s->snaps[i];
		snap_bytes += qcow2_align_up(40 + sn->extra_len + strlen(sn->id) +
					     strlen(sn->name), 8);
		count(&c, sn->l1_offset, (uint64_t)sn->l1_size * 8);
		uint64_t *l1 = malloc(sn->l1_size ? (size_t)sn->l1_size * 8 : 8);
		if (!l1) {
			ret = -ENOMEM;
			goto out;
		}
		ret = sn->l1_size ? blk_pread(s->file, sn->l1_offset, l1, (size_t)sn->l1_size * 8) : 0;
		if (ret < 0) {
			note(&c, "ERROR: cannot read the L1 table of snapshot '%s'", sn->name);
			c.res->check_errors++;
			free(l1);
			ret = 0;
			continue;
		}
		for (uint32_t j = 0; j < sn->l1_size; j++)
			l1[j] = be64toh(l1[j]);
		ret = check_l1(&c, l1, sn->l1_size, false);
		free(l1);
		if (ret < 0)
			goto out;
	}
	count(&c, s->snapshots_offset, s->nb_snapshots ? snap_bytes : 0);
	check_refcount_structure(&c);

	ret = compare_refcounts(&c);
	if (ret < 0)
		goto out;
	if (c.rebuild && (fix & BLK_CHECK_FIX_ERRORS)) {
		/* The new structure is counted by the rebuild itself. */
		uncount(&c, s->reftable_offset, (uint64_t)s->reftable_clusters * s->cluster_size);
		for (uint64_t i = 0; i < s->reftable_entries; i++) {
			uint64_t off = s->reftable[i] & ~QCOW2_REFT_RESERVED;
			if (off && !qcow2_offset_into_cluster(s, off) &&
			    in_image(&c, off, s->cluster_size))
				uncount(&c, off, s->cluster_size);
		}
		uint64_t *wide = malloc(c.nclusters * sizeof(*wide) + 8);
		if (!wide) {
			ret = -ENOMEM;
			goto out;
		}
		for (uint64_t k = 0; k < c.nclusters; k++)
			wide[k] = c.counts[k];
		note(&c, "Rebuilding refcount structure");
		ret = qcow2_refcount_rebuild(s, wide, c.nclusters);
		free(wide);
		if (ret < 0)
			goto out;
		/* Whatever was counted as wrong is now right. */
		res->corruptions_fixed += res->corruptions;
		res->leaks_fixed += res->leaks;
		res->corruptions = res->leaks = 0;
	}
	if (ret == 0)
		ret = qcow2_meta_flush(s);
	if (ret == 0)
		ret = qcow2_cache_write_all(s, &s->rb_cache);
	if (ret == 0)
		ret = check_copied(&c);
	if (ret == 0 && c.l1_changed)
		ret = qcow2_meta_flush(s);
	if (ret < 0)
		goto out;
	if (fix)
		ret = qcow2_file_flush(s);

	res->total_clusters = qcow2_size_to_clusters(s, s->size);
	uint64_t high = 0;
	for (uint64_t k = 0; k < c.nclusters; k++)
		if (c.counts[k])
			high = k + 1;
	res->image_end_offset = high << s->cluster_bits;
	if (fix && !res->corruptions && !s->b->readonly &&
	    ((s->incompat & QCOW2_INCOMPAT_CORRUPT) || s->corrupt)) {
		s->corrupt = false;
		ret = qcow2_header_update_incompat(s, s->incompat & ~QCOW2_INCOMPAT_CORRUPT);
	}
out:
	if (c.report)
		fclose(c.report);
	if (ret == 0 && text && textlen) {
		res->report = text;
	} else {
		free(text);
	}
	free(c.counts);
	return ret;
}

int qcow2_check(struct blk *b, unsigned fix, struct blk_check_result *res)
{
	struct qcow2 *s = qcow2_state(b);
	int ret;

	if (fix && b->readonly)
		return -EROFS;
	memset(res, 0, sizeof(*res));
	pthread_mutex_lock(&s->lock);
	qcow2_excl_begin(s);
	if (!b->readonly) {
		ret = qcow2_meta_flush(s);
		if (ret == 0)
			ret = qcow2_meta_flush(s);
		if (ret < 0)
			goto out;
	}
	ret = qcow2_cache_reset(s, &s->l2_cache);
	if (ret == 0)
		ret = qcow2_check_locked(s, fix, res);
	if (ret == 0)
		ret = qcow2_cache_reset(s, &s->l2_cache);
out:
	qcow2_excl_end(s);
	pthread_mutex_unlock(&s->lock);
	return ret;
}
