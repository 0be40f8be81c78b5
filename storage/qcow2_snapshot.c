/* qcow2 internal snapshots: the snapshot table, and the refcount and
 * QCOW_OFLAG_COPIED bookkeeping of create, apply and delete.
 *
 * Each operation runs exclusively (no guest I/O in flight) and in this
 * order, so that a crash leaves leaks at worst, except where noted:
 *   create: flush; +1 on every cluster the active L1 reaches and COPIED
 *           cleared there (refcount blocks flushed before the L2 tables,
 *           invariant (1) of qcow2_refcount.c); L1 copy written; new
 *           snapshot table written; header switched; old table freed.
 *   apply:  flush; +1 on the snapshot's tree; its L1 (COPIED stripped)
 *           written over the active one; header (size); -1 on the old
 *           active tree; COPIED recomputed.
 *   delete: flush; table without the entry written; header switched;
 *           -1 on its tree and its L1 copy; COPIED recomputed.
 * The COPIED rewrite and the refcount change it follows cannot be one
 * atomic write: a crash between them leaves entries whose COPIED flag
 * disagrees with the refcount, which `check -r all` repairs (QEMU has the
 * same window). */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "qcow2.h"

#define SN_FIXED 40u

static uint32_t rd32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return be32toh(v);
}
static uint64_t rd64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return be64toh(v);
}
static uint16_t rd16(const uint8_t *p)
{
	uint16_t v;
	memcpy(&v, p, 2);
	return be16toh(v);
}
static void wr16(uint8_t *p, uint16_t v)
{
	v = htobe16(v);
	memcpy(p, &v, 2);
}
static void wr32(uint8_t *p, uint32_t v)
{
	v = htobe32(v);
	memcpy(p, &v, 4);
}
static void wr64(uint8_t *p, uint64_t v)
{
	v = htobe64(v);
	memcpy(p, &v, 8);
}

static void snapshot_clear(struct qcow2_snapshot *sn)
{
	free(sn->id);
	free(sn->name);
	free(sn->extra);
	memset(sn, 0, sizeof(*sn));
}

void qcow2_snapshots_free(struct qcow2 *s)
{
	if (!s->snaps)
		return;
	for (uint32_t i = 0; i < s->nb_snapshots; i++)
		snapshot_clear(&s->snaps[i]);
	free(s->snaps);
	s->snaps = NULL;
}

int qcow2_snapshots_read(struct qcow2 *s, char *err, size_t errlen)
{
	uint64_t pos = s->snapshots_offset, end;
	uint8_t fixed[SN_FIXED];
	int ret;

	if (!s->nb_snapshots)
		return 0;
	s->snaps = calloc(s->nb_snapshots, sizeof(*s->snaps));
	if (!s->snaps)
		return -ENOMEM;
	end = s->snapshots_offset + QCOW2_MAX_SNAPTABLE;
	for (uint32_t i = 0; i < s->nb_snapshots; i++) {
		struct qcow2_snapshot *sn = &s->snaps[i];
		if (pos + SN_FIXED > s->file_size || pos + SN_FIXED > end)
			goto err_trunc;
		ret = blk_pread(s->file, pos, fixed, SN_FIXED);
		if (ret < 0)
			goto err_io;
		sn->l1_offset = rd64(fixed);
		sn->l1_size = rd32(fixed + 8);
		uint16_t id_len = rd16(fixed + 12), name_len = rd16(fixed + 14);
		sn->date_sec = rd32(fixed + 16);
		sn->date_nsec = rd32(fixed + 20);
		sn->vm_clock_nsec = rd64(fixed + 24);
		sn->vm_state_size = rd32(fixed + 32);
		sn->extra_len = rd32(fixed + 36);
		sn->icount = UINT64_MAX;
		sn->disk_size = s->size;
		pos += SN_FIXED;
		if (sn->extra_len > 1024) {
			qcow2_set_err(s, err, errlen, "snapshot table: entry %u has %u bytes of "
				      "extra data (at most 1024)", i, sn->extra_len);
			return -EINVAL;
		}
		uint64_t var = (uint64_t)sn->extra_len + id_len + name_len;
		if (pos + var > s->file_size || pos + var > end)
			goto err_trunc;
		uint8_t *v = malloc(var ? var : 1);
		if (!v)
			return -ENOMEM;
		ret = blk_pread(s->file, pos, v, var);
		if (ret < 0) {
			free(v);
			goto err_io;
		}
		sn->extra = malloc(sn->extra_len ? sn->extra_len : 1);
		sn->id = strndup((char *)v + sn->extra_len, id_len);
		sn->name = strndup((char *)v + sn->extra_len + id_len, name_len);
		if (!sn->extra || !sn->id || !sn->name) {
			free(v);
			return -ENOMEM;
		}
		memcpy(sn->extra, v, sn->extra_len);
		free(v);
		if (sn->extra_len >= 8)
			sn->vm_state_size = rd64(sn->extra);
		if (sn->extra_len >= 16)
			sn->disk_size = rd64(sn->extra + 8);
		if (sn->extra_len >= 24)
			sn->icount = rd64(sn->extra + 16);
		pos = qcow2_align_up(pos + var, 8);

		if (s->version >= 3 && sn->extra_len < 16) {
			qcow2_set_err(s, err, errlen, "snapshot table: entry %u lacks the extra "
				      "data version 3 requires", i);
			return -EINVAL;
		}
		if (sn->l1_size > QCOW2_MAX_L1_BYTES / 8 ||
		    qcow2_offset_into_cluster(s, sn->l1_offset) ||
		    (sn->l1_size && (sn->l1_offset == 0 ||
				     sn->l1_offset + (uint64_t)sn->l1_size * 8 > s->file_size))) {
			qcow2_set_err(s, err, errlen, "snapshot table: snapshot '%s' has an L1 "
				      "table (offset %#llx, %u entries) that is misplaced or too "
				      "large", sn->name, (unsigned long long)sn->l1_offset,
				      sn->l1_size);
			return -EINVAL;
		}
		if (sn->disk_size > INT64_MAX ||
		    qcow2_size_to_l1(s, sn->disk_size) > sn->l1_size) {
			qcow2_set_err(s, err, errlen, "snapshot table: snapshot '%s' has a disk "
				      "size of %llu its L1 table cannot map", sn->name,
				      (unsigned long long)sn->disk_size);
			return -EINVAL;
		}
	}
	return 0;

err_trunc:
	qcow2_set_err(s, err, errlen, "snapshot table: %u entries do not fit in the image "
		      "(or exceed %u bytes)", s->nb_snapshots, QCOW2_MAX_SNAPTABLE);
	return -EINVAL;
err_io:
	qcow2_set_err(s, err, errlen, "cannot read the snapshot table: %s", strerror(-ret));
	return ret;
}

int qcow2_snapshot_list(struct blk *b, struct blk_snapshot_info **out, unsigned *n)
{
	struct qcow2 *s = qcow2_state(b);
	struct blk_snapshot_info *v;

	pthread_mutex_lock(&s->lock);
	v = calloc(s->nb_snapshots ? s->nb_snapshots : 1, sizeof(*v));
	if (!v) {
		pthread_mutex_unlock(&s->lock);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < s->nb_snapshots; i++) {
		const struct qcow2_snapshot *sn = &s->snaps[i];
		snprintf(v[i].id, sizeof(v[i].id), "%s", sn->id);
		snprintf(v[i].name, sizeof(v[i].name), "%s", sn->name);
		v[i].vm_state_size = sn->vm_state_size;
		v[i].date_sec = sn->date_sec;
		v[i].date_nsec = sn->date_nsec;
		v[i].vm_clock_nsec = sn->vm_clock_nsec;
		v[i].disk_size = sn->disk_size;
		v[i].icount = sn->icount;
	}
	*out = v;
	*n = s->nb_snapshots;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* ---- tree walks ---- */

/* Refcount addend on every cluster the L1 table reaches: L2 tables, data
 * clusters, the host clusters of compressed ones. With dry_run, only
 * checks that no refcount would leave its range. */
static int tree_walk(struct qcow2 *s, const uint64_t *l1, uint32_t l1_size, int addend,
		     bool dry_run)
{
	for (uint32_t i = 0; i < l1_size; i++) {
		uint64_t l2off = l1[i] & QCOW2_OFFSET_MASK;
		uint8_t *l2;
		int ret;

		if (!l2off)
			continue;
		if (qcow2_offset_into_cluster(s, l2off) || l2off + s->cluster_size > s->file_size) {
			qcow2_mark_corrupt(s, "L2 table offset %#llx is invalid",
					   (unsigned long long)l2off);
			return -EIO;
		}
		ret = qcow2_cache_get(s, &s->l2_cache, l2off, false, &l2);
		if (ret < 0)
			return ret;
		for (uint32_t j = 0; j < s->l2_entries && ret == 0; j++) {
			uint64_t e = qcow2_l2_get(s, l2, j), off, len;
			enum qcow2_ctype t = qcow2_classify(s, e);
			if (t == QCOW2_COMPRESSED) {
				qcow2_compressed_range(s, e, &off, &len);
				off &= ~511ull;
				len = qcow2_align_up(len + ((e & s->coffset_mask) & 511), 512);
			} else if (t == QCOW2_NORMAL || t == QCOW2_ZERO_ALLOC) {
				off = e & QCOW2_OFFSET_MASK;
				len = s->cluster_size;
			} else {
				continue;
			}
			if (dry_run) {
				uint64_t rc;
				ret = qcow2_refcount_get(s, off >> s->cluster_bits, &rc);
				if (ret == 0 && addend > 0 && rc + (uint64_t)addend > s->refcount_max)
					ret = -ERANGE;
			} else {
				ret = qcow2_refcount_update(s, off, len, addend);
			}
		}
		qcow2_cache_put(&s->l2_cache, l2);
		if (ret < 0)
			return ret;
		if (dry_run) {
			uint64_t rc;
			ret = qcow2_refcount_get(s, l2off >> s->cluster_bits, &rc);
			if (ret == 0 && addend > 0 && rc + (uint64_t)addend > s->refcount_max)
				ret = -ERANGE;
		} else {
			ret = qcow2_refcount_update(s, l2off, s->cluster_size, addend);
		}
		if (ret < 0)
			return ret;
	}
	return 0;
}

int qcow2_tree_refcount_update(struct qcow2 *s, const uint64_t *l1, uint32_t l1_size,
			       int addend)
{
	int ret;
	if (addend > 0) {
		ret = tree_walk(s, l1, l1_size, addend, true);
		if (ret < 0)
			return ret;
	}
	return tree_walk(s, l1, l1_size, addend, false);
}

int qcow2_fix_copied_flags(struct qcow2 *s)
{
	for (uint32_t i = 0; i < s->l1_size; i++) {
		uint64_t l1e = s->l1[i], l2off = l1e & QCOW2_OFFSET_MASK, rc;
		uint8_t *l2;
		bool dirty = false;
		int ret;

		if (!l2off)
			continue;
		ret = qcow2_refcount_get(s, l2off >> s->cluster_bits, &rc);
		if (ret < 0)
			return ret;
		uint64_t want = rc == 1 ? (l1e | QCOW2_OFLAG_COPIED) : (l1e & ~QCOW2_OFLAG_COPIED);
		if (want != l1e)
			qcow2_l1_set(s, i, want);
		ret = qcow2_cache_get(s, &s->l2_cache, l2off, false, &l2);
		if (ret < 0)
			return ret;
		for (uint32_t j = 0; j < s->l2_entries; j++) {
			uint64_t e = qcow2_l2_get(s, l2, j), ne;
			enum qcow2_ctype t = qcow2_classify(s, e);
			if (t != QCOW2_NORMAL && t != QCOW2_ZERO_ALLOC) {
				ne = e & ~QCOW2_OFLAG_COPIED;
			} else {
				ret = qcow2_refcount_get(s, (e & QCOW2_OFFSET_MASK) >> s->cluster_bits,
							 &rc);
				if (ret < 0)
					break;
				ne = rc == 1 ? (e | QCOW2_OFLAG_COPIED) : (e & ~QCOW2_OFLAG_COPIED);
			}
			if (ne != e) {
				qcow2_l2_set(s, l2, j, ne, qcow2_l2_bitmap(s, l2, j));
				dirty = true;
			}
		}
		/* A shared L2 table is rewritten only if it holds stale flags,
		 * which only matters for the active view anyway. */
		if (dirty)
			qcow2_cache_mark_dirty(&s->l2_cache, l2);
		qcow2_cache_put(&s->l2_cache, l2);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Everything written, every queued free applied and written. */
static int flush_all(struct qcow2 *s)
{
	int ret = qcow2_meta_flush(s);
	if (ret == 0)
		ret = qcow2_meta_flush(s);
	if (ret == 0)
		ret = qcow2_cache_write_all(s, &s->rb_cache);
	if (ret == 0)
		ret = qcow2_file_flush(s);
	return ret;
}

/* ---- the snapshot table ---- */

static size_t entry_size(const struct qcow2_snapshot *sn)
{
	return qcow2_align_up(SN_FIXED + sn->extra_len + strlen(sn->id) + strlen(sn->name), 8);
}

/* Writes snaps[0..n) as a new table and switches the header to it
 * (invariant (6)); frees the old table. */
static int table_replace(struct qcow2 *s, struct qcow2_snapshot *snaps, uint32_t n)
{
	uint64_t size = 0, old_off = s->snapshots_offset, old_size = 0;
	int64_t off = 0;
	uint8_t *buf = NULL;
	int ret;

	for (uint32_t i = 0; i < s->nb_snapshots; i++)
		old_size += entry_size(&s->snaps[i]);
	for (uint32_t i = 0; i < n; i++)
		size += entry_size(&snaps[i]);
	if (size > QCOW2_MAX_SNAPTABLE)
		return -EFBIG;
	if (n) {
		buf = calloc(1, size);
		if (!buf)
			return -ENOMEM;
		uint8_t *p = buf;
		for (uint32_t i = 0; i < n; i++) {
			const struct qcow2_snapshot *sn = &snaps[i];
			size_t il = strlen(sn->id), nl = strlen(sn->name);
			wr64(p, sn->l1_offset);
			wr32(p + 8, sn->l1_size);
			wr16(p + 12, (uint16_t)il);
			wr16(p + 14, (uint16_t)nl);
			wr32(p + 16, sn->date_sec);
			wr32(p + 20, sn->date_nsec);
			wr64(p + 24, sn->vm_clock_nsec);
			wr32(p + 32, sn->vm_state_size > UINT32_MAX ? 0 : (uint32_t)sn->vm_state_size);
			wr32(p + 36, sn->extra_len);
			memcpy(p + SN_FIXED, sn->extra, sn->extra_len);
			memcpy(p + SN_FIXED + sn->extra_len, sn->id, il);
			memcpy(p + SN_FIXED + sn->extra_len + il, sn->name, nl);
			p += entry_size(sn);
		}
		off = qcow2_alloc_clusters(s, qcow2_size_to_clusters(s, size));
		if (off < 0) {
			free(buf);
			return (int)off;
		}
		ret = qcow2_cache_write_all(s, &s->rb_cache);
		if (ret == 0)
			ret = blk_pwrite(s->file, (uint64_t)off, buf, size, 0);
		free(buf);
		if (ret == 0)
			ret = qcow2_file_flush(s);
		if (ret < 0)
			goto err_free_new;
	}
	uint8_t hdr[12];
	wr32(hdr, n);
	wr64(hdr + 4, (uint64_t)off);
	ret = blk_pwrite(s->file, 60, hdr, 12, 0);
	if (ret == 0)
		ret = qcow2_file_flush(s);
	if (ret < 0)
		goto err_free_new;
	s->snapshots_offset = (uint64_t)off;
	if (old_size)
		ret = qcow2_refcount_update(s, old_off, old_size, -1);
	return ret;

err_free_new:
	if (n)
		qcow2_refcount_update(s, (uint64_t)off, size, -1);
	return ret;
}

static int find_snapshot(struct qcow2 *s, const char *name_or_id)
{
	for (uint32_t i = 0; i < s->nb_snapshots; i++)
		if (!strcmp(s->snaps[i].id, name_or_id))
			return (int)i;
	for (uint32_t i = 0; i < s->nb_snapshots; i++)
		if (!strcmp(s->snaps[i].name, name_or_id))
			return (int)i;
	return -1;
}

static int refuse_ro(struct qcow2 *s, char *err, size_t errlen)
{
	if (s->b->readonly) {
		qcow2_set_err(s, err, errlen, "image is opened read-only");
		return -EROFS;
	}
	if (s->corrupt) {
		qcow2_set_err(s, err, errlen, "image is marked corrupt; repair it first");
		return -EIO;
	}
	return 0;
}

static void l1_to_be(uint64_t *dst, const uint64_t *src, uint32_t n, bool strip_copied)
{
	for (uint32_t i = 0; i < n; i++)
		dst[i] = htobe64(strip_copied ? src[i] & ~QCOW2_OFLAG_COPIED : src[i]);
}

int qcow2_snapshot_create(struct blk *b, const char *name, char *err, size_t errlen)
{
	struct qcow2 *s = qcow2_state(b);
	struct qcow2_snapshot *snaps = NULL, sn;
	uint64_t *l1be = NULL;
	int64_t l1off = -1;
	uint64_t l1_bytes;
	int ret;

	memset(&sn, 0, sizeof(sn));
	if (!name || !*name || strlen(name) > 255) {
		qcow2_set_err(s, err, errlen, "snapshot name must be 1..255 bytes");
		return -EINVAL;
	}
	pthread_mutex_lock(&s->lock);
	qcow2_excl_begin(s);
	ret = refuse_ro(s, err, errlen);
	if (ret < 0)
		goto out;
	if (find_snapshot(s, name) >= 0) {
		qcow2_set_err(s, err, errlen, "a snapshot named '%s' already exists", name);
		ret = -EEXIST;
		goto out;
	}
	if (s->nb_snapshots >= QCOW2_MAX_SNAPSHOTS) {
		qcow2_set_err(s, err, errlen, "too many snapshots (%u)", s->nb_snapshots);
		ret = -EFBIG;
		goto out;
	}
	ret = flush_all(s);
	if (ret < 0)
		goto err_io;

	/* Fields of the new entry: id is one more than the largest numeric id. */
	unsigned long max_id = 0;
	for (uint32_t i = 0; i < s->nb_snapshots; i++) {
		unsigned long v = strtoul(s->snaps[i].id, NULL, 10);
		if (v > max_id)
			max_id = v;
	}
	char idbuf[32];
	snprintf(idbuf, sizeof(idbuf), "%lu", max_id + 1);
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	sn.id = strdup(idbuf);
	sn.name = strdup(name);
	sn.extra_len = 24;
	sn.extra = calloc(1, 24);
	if (!sn.id || !sn.name || !sn.extra) {
		ret = -ENOMEM;
		goto err_io;
	}
	sn.date_sec = (uint32_t)now.tv_sec;
	sn.date_nsec = (uint32_t)now.tv_nsec;
	sn.disk_size = s->size;
	sn.icount = UINT64_MAX;
	sn.l1_size = s->l1_size;
	wr64(sn.extra, 0);
	wr64(sn.extra + 8, s->size);
	wr64(sn.extra + 16, UINT64_MAX);

	/* Refcounts first (dry run inside: a 1-bit refcount image fails here
	 * with nothing changed). */
	ret = qcow2_tree_refcount_update(s, s->l1, s->l1_size, 1);
	if (ret < 0) {
		if (ret == -ERANGE)
			qcow2_set_err(s, err, errlen, "refcount_bits %u cannot count a snapshot's "
				      "references", 1u << s->refcount_order);
		goto out_flush;
	}
	ret = qcow2_fix_copied_flags(s);
	if (ret == 0)
		ret = flush_all(s);
	if (ret < 0)
		goto err_io;

	l1_bytes = (uint64_t)s->l1_size * 8;
	if (l1_bytes) {
		l1off = qcow2_alloc_clusters(s, qcow2_size_to_clusters(s, l1_bytes));
		if (l1off < 0) {
			ret = (int)l1off;
			goto err_io;
		}
		l1be = malloc(l1_bytes);
		if (!l1be) {
			ret = -ENOMEM;
			goto err_io;
		}
		l1_to_be(l1be, s->l1, s->l1_size, true);
		ret = qcow2_cache_write_all(s, &s->rb_cache);
		if (ret == 0)
			ret = blk_pwrite(s->file, (uint64_t)l1off, l1be, l1_bytes, 0);
		if (ret == 0)
			ret = qcow2_file_flush(s);
		if (ret < 0)
			goto err_io;
		sn.l1_offset = (uint64_t)l1off;
	}

	snaps = calloc(s->nb_snapshots + 1, sizeof(*snaps));
	if (!snaps) {
		ret = -ENOMEM;
		goto err_io;
	}
	if (s->nb_snapshots)
		memcpy(snaps, s->snaps, s->nb_snapshots * sizeof(*snaps));
	snaps[s->nb_snapshots] = sn;
	ret = table_replace(s, snaps, s->nb_snapshots + 1);
	if (ret < 0) {
		free(snaps);
		goto err_io;
	}
	free(s->snaps);
	s->snaps = snaps;
	s->nb_snapshots++;
	memset(&sn, 0, sizeof(sn));
	ret = flush_all(s);
	if (ret < 0)
		goto err_io;
	goto out;

err_io:
	qcow2_set_err(s, err, errlen, "cannot create snapshot '%s': %s", name, strerror(-ret));
out_flush:
	flush_all(s);
out:
	snapshot_clear(&sn);
	free(l1be);
	qcow2_excl_end(s);
	pthread_mutex_unlock(&s->lock);
	return ret;
}

static int read_l1(struct qcow2 *s, uint64_t off, uint32_t n, uint64_t **out)
{
	uint64_t *l1 = malloc(n ? (size_t)n * 8 : 8);
	int ret = 0;

	if (!l1)
		return -ENOMEM;
	if (n)
		ret = blk_pread(s->file, off, l1, (size_t)n * 8);
	if (ret < 0) {
		free(l1);
		return ret;
	}
	for (uint32_t i = 0; i < n; i++)
		l1[i] = be64toh(l1[i]);
	*out = l1;
	return 0;
}

int qcow2_snapshot_apply(struct blk *b, const char *name_or_id, char *err, size_t errlen)
{
	struct qcow2 *s = qcow2_state(b);
	uint64_t *snl1 = NULL, *old = NULL, *be = NULL;
	int idx, ret;

	pthread_mutex_lock(&s->lock);
	qcow2_excl_begin(s);
	ret = refuse_ro(s, err, errlen);
	if (ret < 0)
		goto out;
	idx = find_snapshot(s, name_or_id);
	if (idx < 0) {
		qcow2_set_err(s, err, errlen, "no snapshot '%s'", name_or_id);
		ret = -ENOENT;
		goto out;
	}
	struct qcow2_snapshot *sn = &s->snaps[idx];
	if (sn->vm_state_size) {
		/* The disk part is all drover restores; VM state stays unused. */
		log_warn("%s: snapshot '%s' has %llu bytes of VM state, which is ignored",
			 b->filename, sn->name, (unsigned long long)sn->vm_state_size);
	}
	ret = flush_all(s);
	if (ret < 0)
		goto err_io;
	ret = read_l1(s, sn->l1_offset, sn->l1_size, &snl1);
	if (ret < 0)
		goto err_io;
	if (sn->l1_size > s->l1_size) {
		ret = qcow2_grow_l1(s, sn->l1_size);
		if (ret < 0)
			goto err_io;
	}
	ret = qcow2_tree_refcount_update(s, snl1, sn->l1_size, 1);
	if (ret == 0)
		ret = flush_all(s);
	if (ret < 0)
		goto err_io;

	old = malloc((size_t)s->l1_size * 8 + 8);
	be = calloc((size_t)s->l1_size + 1, 8);
	if (!old || !be) {
		ret = -ENOMEM;
		goto err_io;
	}
	memcpy(old, s->l1, (size_t)s->l1_size * 8);
	l1_to_be(be, snl1, sn->l1_size, true);
	ret = blk_pwrite(s->file, s->l1_offset, be, (size_t)s->l1_size * 8, 0);
	if (ret == 0)
		ret = qcow2_file_flush(s);
	if (ret < 0)
		goto err_io;
	for (uint32_t i = 0; i < s->l1_size; i++)
		s->l1[i] = be64toh(be[i]);
	if (sn->disk_size != s->size) {
		uint8_t sz[8];
		wr64(sz, sn->disk_size);
		ret = blk_pwrite(s->file, 24, sz, 8, 0);
		if (ret == 0)
			ret = qcow2_file_flush(s);
		if (ret < 0)
			goto err_io;
		s->size = sn->disk_size;
		b->size = s->size;
	}
	ret = qcow2_tree_refcount_update(s, old, s->l1_size, -1);
	if (ret == 0)
		ret = qcow2_fix_copied_flags(s);
	if (ret == 0)
		ret = flush_all(s);
	if (ret < 0)
		goto err_io;
	goto out;

err_io:
	qcow2_set_err(s, err, errlen, "cannot apply snapshot '%s': %s", name_or_id,
		      strerror(-ret));
	flush_all(s);
out:
	free(snl1);
	free(old);
	free(be);
	qcow2_excl_end(s);
	pthread_mutex_unlock(&s->lock);
	return ret;
}

int qcow2_snapshot_delete(struct blk *b, const char *name_or_id, char *err, size_t errlen)
{
	struct qcow2 *s = qcow2_state(b);
	struct qcow2_snapshot *snaps = NULL, gone;
	uint64_t *snl1 = NULL;
	int idx, ret;

	pthread_mutex_lock(&s->lock);
	qcow2_excl_begin(s);
	ret = refuse_ro(s, err, errlen);
	if (ret < 0)
		goto out;
	idx = find_snapshot(s, name_or_id);
	if (idx < 0) {
		qcow2_set_err(s, err, errlen, "no snapshot '%s'", name_or_id);
		ret = -ENOENT;
		goto out;
	}
	ret = flush_all(s);
	if (ret < 0)
		goto err_io;
	gone = s->snaps[idx];
	ret = read_l1(s, gone.l1_offset, gone.l1_size, &snl1);
	if (ret < 0)
		goto err_io;
	snaps = calloc(s->nb_snapshots, sizeof(*snaps));
	if (!snaps) {
		ret = -ENOMEM;
		goto err_io;
	}
	uint32_t n = 0;
	for (uint32_t i = 0; i < s->nb_snapshots; i++)
		if ((int)i != idx)
			snaps[n++] = s->snaps[i];
	ret = table_replace(s, snaps, n);
	if (ret < 0) {
		free(snaps);
		goto err_io;
	}
	free(s->snaps);
	s->snaps = snaps;
	s->nb_snapshots = n;
	ret = qcow2_tree_refcount_update(s, snl1, gone.l1_size, -1);
	if (ret == 0 && gone.l1_size)
		ret = qcow2_refcount_update(s, gone.l1_offset, (uint64_t)gone.l1_size * 8, -1);
	snapshot_clear(&gone);
	if (ret == 0)
		ret = qcow2_fix_copied_flags(s);
	if (ret == 0)
		ret = flush_all(s);
	if (ret < 0)
		goto err_io;
	goto out;

err_io:
	qcow2_set_err(s, err, errlen, "cannot delete snapshot '%s': %s", name_or_id,
		      strerror(-ret));
	flush_all(s);
out:
	free(snl1);
	qcow2_excl_end(s);
	pthread_mutex_unlock(&s->lock);
	return ret;
}
