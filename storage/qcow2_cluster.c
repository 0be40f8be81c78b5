/* Guest I/O through the L1/L2 tables: reads (backing chain, zero and
 * compressed clusters), writes (in place when QCOW_OFLAG_COPIED says the
 * cluster is ours alone, else a new cluster with copy on write), write
 * zeroes, discard, block status, compressed writes, preallocation.
 *
 * Concurrency: the mapping is looked up and changed under s->lock; guest
 * data moves outside it. Writes that allocate serialize per guest cluster
 * (alloc_busy): the second writer waits and then sees the first one's
 * mapping. When the protocol node would read-modify-write below its
 * alignment and clusters are smaller than that, data writes stay under the
 * lock too (two writes into one host block would otherwise race). The
 * write ordering rules are in qcow2_refcount.c. */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "log.h"
#include "qcow2.h"

#define IOV_STACK 64

/* ---- iovec helpers ---- */

int qcow2_iov_slice(const struct iovec *iov, int iovcnt, size_t skip, size_t len,
		    struct iovec *out)
{
	int n = 0;
	for (int i = 0; i < iovcnt && len; i++) {
		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		size_t take = iov[i].iov_len - skip;
		if (take > len)
			take = len;
		out[n].iov_base = (uint8_t *)iov[i].iov_base + skip;
		out[n].iov_len = take;
		n++;
		len -= take;
		skip = 0;
	}
	return n;
}

static void iov_memset(const struct iovec *iov, int iovcnt, size_t skip, size_t len)
{
	for (int i = 0; i < iovcnt && len; i++) {
		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		size_t take = iov[i].iov_len - skip;
		if (take > len)
			take = len;
		memset((uint8_t *)iov[i].iov_base + skip, 0, take);
		len -= take;
		skip = 0;
	}
}

static void iov_copy(const struct iovec *iov, int iovcnt, size_t skip, uint8_t *buf, size_t len,
		     bool to_iov)
{
	for (int i = 0; i < iovcnt && len; i++) {
		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		size_t take = iov[i].iov_len - skip;
		if (take > len)
			take = len;
		uint8_t *p = (uint8_t *)iov[i].iov_base + skip;
		if (to_iov)
			memcpy(p, buf, take);
		else
			memcpy(buf, p, take);
		buf += take;
		len -= take;
		skip = 0;
	}
}

/* ---- L1/L2 entries ---- */

uint64_t qcow2_l2_get(const struct qcow2 *s, const uint8_t *l2, uint32_t i)
{
	uint64_t v;
	memcpy(&v, l2 + (size_t)i * s->l2_entry_size, 8);
	return be64toh(v);
}

uint64_t qcow2_l2_bitmap(const struct qcow2 *s, const uint8_t *l2, uint32_t i)
{
	uint64_t v;
	if (!s->ext_l2)
		return 0;
	memcpy(&v, l2 + (size_t)i * 16 + 8, 8);
	return be64toh(v);
}

void qcow2_l2_set(const struct qcow2 *s, uint8_t *l2, uint32_t i, uint64_t entry,
		  uint64_t bitmap)
{
	uint64_t v = htobe64(entry);
	memcpy(l2 + (size_t)i * s->l2_entry_size, &v, 8);
	if (s->ext_l2) {
		v = htobe64(bitmap);
		memcpy(l2 + (size_t)i * 16 + 8, &v, 8);
	}
}

int qcow2_l1_set(struct qcow2 *s, uint32_t i, uint64_t entry)
{
	s->l1[i] = entry;
	if (s->l1_dirty_lo == s->l1_dirty_hi) {
		s->l1_dirty_lo = i;
		s->l1_dirty_hi = i + 1;
	} else {
		if (i < s->l1_dirty_lo)
			s->l1_dirty_lo = i;
		if (i + 1 > s->l1_dirty_hi)
			s->l1_dirty_hi = i + 1;
	}
	return 0;
}

int qcow2_l1_write(struct qcow2 *s)
{
	uint32_t lo = s->l1_dirty_lo, hi = s->l1_dirty_hi;
	uint64_t *buf;
	int ret;

	if (lo >= hi)
		return 0;
	buf = malloc((size_t)(hi - lo) * 8);
	if (!buf)
		return -ENOMEM;
	for (uint32_t i = lo; i < hi; i++)
		buf[i - lo] = htobe64(s->l1[i]);
	ret = blk_pwrite(s->file, s->l1_offset + (uint64_t)lo * 8, buf, (size_t)(hi - lo) * 8, 0);
	free(buf);
	if (ret == 0)
		s->l1_dirty_lo = s->l1_dirty_hi = 0;
	return ret;
}

enum qcow2_ctype qcow2_classify(const struct qcow2 *s, uint64_t entry)
{
	uint64_t off = entry & QCOW2_OFFSET_MASK;

	if (entry & QCOW2_OFLAG_COMPRESSED)
		return QCOW2_COMPRESSED;
	if (!s->ext_l2 && (entry & QCOW2_OFLAG_ZERO))
		return off ? QCOW2_ZERO_ALLOC : QCOW2_ZERO_PLAIN;
	return off ? QCOW2_NORMAL : QCOW2_UNALLOCATED;
}

/* Type of subcluster sc (0 without extended L2). */
static enum qcow2_ctype unit_type(const struct qcow2 *s, uint64_t entry, uint64_t bitmap,
				  unsigned sc)
{
	if (!s->ext_l2 || (entry & QCOW2_OFLAG_COMPRESSED))
		return qcow2_classify(s, entry);
	if ((bitmap >> sc) & 1)
		return QCOW2_NORMAL;
	if ((bitmap >> (32 + sc)) & 1)
		return (entry & QCOW2_OFFSET_MASK) ? QCOW2_ZERO_ALLOC : QCOW2_ZERO_PLAIN;
	return QCOW2_UNALLOCATED;
}

void qcow2_compressed_range(const struct qcow2 *s, uint64_t entry, uint64_t *off, uint64_t *len)
{
	uint64_t coff = entry & s->coffset_mask;
	uint64_t nsec = ((entry >> s->csize_shift) & s->csize_mask) + 1;
	*off = coff;
	*len = nsec * 512 - (coff & 511);
}

/* 0, or -EIO for an entry no correct image has (the caller names it). */
int qcow2_l2_entry_valid(const struct qcow2 *s, uint64_t entry, uint64_t bitmap)
{
	uint64_t off = entry & QCOW2_OFFSET_MASK;

	if (entry & QCOW2_OFLAG_COMPRESSED)
		return (s->ext_l2 && bitmap) ? -EIO : 0;
	if (qcow2_offset_into_cluster(s, off))
		return -EIO;
	if (s->ext_l2) {
		uint32_t alloc = (uint32_t)bitmap, zero = (uint32_t)(bitmap >> 32);
		if ((alloc & zero) || (alloc && !off) || (entry & QCOW2_OFLAG_ZERO))
			return -EIO;
	}
	return 0;
}

/* The L2 table of guest cluster gc, pinned, or *l2 NULL when the L1 entry
 * is empty. */
static int l2_load(struct qcow2 *s, uint64_t gc, uint8_t **l2)
{
	uint64_t l1i = gc >> s->l2_bits, off;

	*l2 = NULL;
	if (l1i >= s->l1_size)
		return 0;
	off = s->l1[l1i] & QCOW2_OFFSET_MASK;
	if (!off)
		return 0;
	if (qcow2_offset_into_cluster(s, off) || off + s->cluster_size > s->file_size) {
		qcow2_mark_corrupt(s, "L1 entry %llu points to an L2 table at %#llx, %s",
				   (unsigned long long)l1i, (unsigned long long)off,
				   qcow2_offset_into_cluster(s, off) ? "not cluster aligned"
								     : "outside the image");
		return -EIO;
	}
	return qcow2_cache_get(s, &s->l2_cache, off, false, l2);
}

static int entry_get(struct qcow2 *s, uint64_t gc, uint64_t *entry, uint64_t *bitmap)
{
	uint8_t *l2;
	int ret = l2_load(s, gc, &l2);

	*entry = *bitmap = 0;
	if (ret < 0 || !l2)
		return ret;
	uint32_t i = (uint32_t)(gc & (s->l2_entries - 1));
	*entry = qcow2_l2_get(s, l2, i);
	*bitmap = qcow2_l2_bitmap(s, l2, i);
	qcow2_cache_put(&s->l2_cache, l2);
	if (qcow2_l2_entry_valid(s, *entry, *bitmap) < 0) {
		qcow2_mark_corrupt(s, "L2 entry of guest offset %#llx is invalid (%#llx)",
				   (unsigned long long)(gc << s->cluster_bits),
				   (unsigned long long)*entry);
		return -EIO;
	}
	return 0;
}

/* The L2 table of gc made writable by us alone (invariants (3), (7)): a
 * fresh table, or a copy of a shared one; pinned. */
static int l2_writable(struct qcow2 *s, uint64_t gc, uint8_t **l2)
{
	uint32_t l1i = (uint32_t)(gc >> s->l2_bits);
	uint64_t l1e = s->l1[l1i], old = l1e & QCOW2_OFFSET_MASK;
	uint8_t *src = NULL, *dst;
	int64_t nw;
	int ret;

	if (old && (l1e & QCOW2_OFLAG_COPIED)) {
		ret = l2_load(s, gc, l2);
		return ret;
	}
	if (old) {
		ret = l2_load(s, gc, &src);
		if (ret < 0)
			return ret;
	}
	nw = qcow2_alloc_clusters(s, 1);
	if (nw < 0) {
		ret = (int)nw;
		goto out;
	}
	ret = qcow2_cache_get(s, &s->l2_cache, (uint64_t)nw, true, &dst);
	if (ret < 0) {
		qcow2_refcount_set(s, (uint64_t)nw >> s->cluster_bits, 0);
		goto out;
	}
	if (src)
		memcpy(dst, src, s->cluster_size);
	qcow2_cache_mark_dirty(&s->l2_cache, dst);
	qcow2_l1_set(s, l1i, (uint64_t)nw | QCOW2_OFLAG_COPIED);
	if (old)
		ret = qcow2_free_later(s, old, s->cluster_size);
	*l2 = dst;
out:
	if (src)
		qcow2_cache_put(&s->l2_cache, src);
	return ret;
}

/* Queues the host space an entry used to hold for freeing. */
static int free_entry_later(struct qcow2 *s, uint64_t entry)
{
	enum qcow2_ctype t = qcow2_classify(s, entry);
	uint64_t off, len;

	if (t == QCOW2_COMPRESSED) {
		qcow2_compressed_range(s, entry, &off, &len);
		return qcow2_free_later(s, off & ~511ull, qcow2_align_up((off & 511) + len, 512));
	}
	off = entry & QCOW2_OFFSET_MASK;
	if (!off)
		return 0;
	return qcow2_free_later(s, off, s->cluster_size);
}

/* ---- allocation serialization ---- */

static bool alloc_is_busy(const struct qcow2 *s, uint64_t gc)
{
	for (unsigned i = 0; i < s->nalloc_busy; i++)
		if (s->alloc_busy[i] == gc)
			return true;
	return false;
}

static void alloc_wait(struct qcow2 *s, uint64_t gc)
{
	while (alloc_is_busy(s, gc))
		pthread_cond_wait(&s->cond, &s->lock);
}

static int alloc_mark(struct qcow2 *s, uint64_t gc)
{
	if (s->nalloc_busy == s->alloc_busy_cap) {
		unsigned cap = s->alloc_busy_cap ? s->alloc_busy_cap * 2 : 16;
		uint64_t *p = realloc(s->alloc_busy, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		s->alloc_busy = p;
		s->alloc_busy_cap = cap;
	}
	s->alloc_busy[s->nalloc_busy++] = gc;
	return 0;
}

static void alloc_unmark(struct qcow2 *s, uint64_t gc)
{
	for (unsigned i = 0; i < s->nalloc_busy; i++)
		if (s->alloc_busy[i] == gc) {
			s->alloc_busy[i] = s->alloc_busy[--s->nalloc_busy];
			break;
		}
	pthread_cond_broadcast(&s->cond);
}

static bool serialize_data(const struct qcow2 *s)
{
	return blk_request_alignment(s->file) > s->cluster_size;
}

/* ---- reading ---- */

/* Host data, with zeroes for what a truncated file no longer has. */
static int file_readv(struct qcow2 *s, uint64_t host, const struct iovec *iov, int iovcnt,
		      size_t skip, size_t len, struct iovec *tmp)
{
	uint64_t fsize = __atomic_load_n(&s->file_size, __ATOMIC_ACQUIRE);
	size_t n = host >= fsize ? 0 : (fsize - host < len ? (size_t)(fsize - host) : len);
	int ret = 0;

	if (n) {
		int cnt = qcow2_iov_slice(iov, iovcnt, skip, n, tmp);
		ret = blk_preadv(s->file, host, tmp, cnt);
	}
	if (ret >= 0 && n < len)
		iov_memset(iov, iovcnt, skip + n, len - n);
	return ret < 0 ? ret : 0;
}

static int backing_readv(struct blk *b, uint64_t guest, const struct iovec *iov, int iovcnt,
			 size_t skip, size_t len, struct iovec *tmp)
{
	struct qcow2 *s = qcow2_state(b);
	uint64_t bsize;
	size_t n = 0;
	int ret = 0;

	if (!b->backing) {
		if (s->no_backing)
			return -EIO;
		iov_memset(iov, iovcnt, skip, len);
		return 0;
	}
	bsize = blk_size(b->backing);
	if (guest < bsize)
		n = bsize - guest < len ? (size_t)(bsize - guest) : len;
	if (n) {
		int cnt = qcow2_iov_slice(iov, iovcnt, skip, n, tmp);
		ret = blk_preadv(b->backing, guest, tmp, cnt);
	}
	if (ret >= 0 && n < len)
		iov_memset(iov, iovcnt, skip + n, len - n);
	return ret < 0 ? ret : 0;
}

static int decompress_cluster(struct qcow2 *s, uint64_t entry, uint8_t *out)
{
	uint64_t coff, clen;
	uint8_t *in;
	z_stream z;
	int ret, zr;

	qcow2_compressed_range(s, entry, &coff, &clen);
	uint64_t fsize = __atomic_load_n(&s->file_size, __ATOMIC_ACQUIRE);
	if (coff >= fsize) {
		log_error("%s: qcow2: compressed cluster at %#llx lies outside the image",
			  s->b->filename, (unsigned long long)coff);
		return -EIO;
	}
	if (clen > fsize - coff)
		clen = fsize - coff;
	in = malloc(clen);
	if (!in)
		return -ENOMEM;
	ret = blk_pread(s->file, coff, in, clen);
	if (ret < 0)
		goto out;
	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, -12) != Z_OK) {
		ret = -ENOMEM;
		goto out;
	}
	z.next_in = in;
	z.avail_in = (uInt)clen;
	z.next_out = out;
	z.avail_out = s->cluster_size;
	zr = inflate(&z, Z_FINISH);
	if ((zr != Z_STREAM_END && zr != Z_BUF_ERROR) || z.avail_out) {
		log_error("%s: qcow2: compressed cluster at %#llx does not inflate to a "
			  "cluster", s->b->filename, (unsigned long long)coff);
		ret = -EIO;
	}
	inflateEnd(&z);
out:
	free(in);
	return ret;
}

struct qcow2_map {
	enum qcow2_ctype type;
	uint64_t host;       /* host offset of the run's first byte (NORMAL, ZERO_ALLOC) */
	uint64_t len;
	uint64_t entry;      /* the entry of the run's first cluster */
};

/* Under the lock: the run of [guest, guest+maxlen) that shares one kind of
 * mapping (and for data, contiguous host space), within one L2 table. */
static int map_range(struct qcow2 *s, uint64_t guest, uint64_t maxlen, struct qcow2_map *m)
{
	const uint64_t unit = s->subcluster_size;
	uint64_t gc = guest >> s->cluster_bits;
	uint64_t span_end = ((gc >> s->l2_bits) + 1) << (s->l2_bits + s->cluster_bits);
	uint8_t *l2;
	int ret;

	if (span_end - guest < maxlen)
		maxlen = span_end - guest;
	ret = l2_load(s, gc, &l2);
	if (ret < 0)
		return ret;
	if (!l2) {
		*m = (struct qcow2_map){ QCOW2_UNALLOCATED, 0, maxlen, 0 };
		return 0;
	}
	uint64_t pos = guest, len = 0;
	ret = 0;
	while (len < maxlen) {
		uint64_t c = pos >> s->cluster_bits;
		uint32_t i = (uint32_t)(c & (s->l2_entries - 1));
		uint64_t entry = qcow2_l2_get(s, l2, i), bitmap = qcow2_l2_bitmap(s, l2, i);
		if (qcow2_l2_entry_valid(s, entry, bitmap) < 0) {
			if (len)
				break;
			qcow2_mark_corrupt(s, "L2 entry of guest offset %#llx is invalid (%#llx)",
					   (unsigned long long)(c << s->cluster_bits),
					   (unsigned long long)entry);
			ret = -EIO;
			break;
		}
		unsigned sc = (unsigned)(qcow2_offset_into_cluster(s, pos) / unit);
		enum qcow2_ctype t = unit_type(s, entry, bitmap, sc);
		uint64_t host = (entry & QCOW2_OFFSET_MASK) + qcow2_offset_into_cluster(s, pos);
		uint64_t step = unit - (pos % unit);
		if (t == QCOW2_COMPRESSED)
			step = s->cluster_size - qcow2_offset_into_cluster(s, pos);
		if (step > maxlen - len)
			step = maxlen - len;
		if (!len) {
			*m = (struct qcow2_map){ t, host, 0, entry };
		} else {
			if (t != m->type || t == QCOW2_COMPRESSED)
				break;
			if ((t == QCOW2_NORMAL || t == QCOW2_ZERO_ALLOC) && host != m->host + len)
				break;
		}
		len += step;
		pos += step;
	}
	m->len = len;
	qcow2_cache_put(&s->l2_cache, l2);
	return ret;
}

int qcow2_preadv(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt)
{
	struct qcow2 *s = qcow2_state(b);
	size_t total = blk_iov_size(iov, iovcnt), done = 0;
	struct iovec stack[IOV_STACK], *tmp = stack;
	uint8_t *cbuf = NULL;
	int ret = 0;

	if (iovcnt > IOV_STACK && !(tmp = malloc(sizeof(*tmp) * (size_t)iovcnt)))
		return -ENOMEM;
	pthread_mutex_lock(&s->lock);
	qcow2_io_begin(s);
	while (done < total) {
		struct qcow2_map m;
		struct qcow2_inflight busy;
		uint64_t coff, clen;
		ret = map_range(s, off + done, total - done, &m);
		if (ret < 0)
			break;
		/* Invariant (9): the host bytes stay ours until we have read them. */
		if (m.type == QCOW2_NORMAL) {
			qcow2_inflight_add(s, &busy, m.host, m.len, false);
		} else if (m.type == QCOW2_COMPRESSED) {
			qcow2_compressed_range(s, m.entry, &coff, &clen);
			qcow2_inflight_add(s, &busy, coff, clen, false);
		}
		pthread_mutex_unlock(&s->lock);
		switch (m.type) {
		case QCOW2_NORMAL:
			ret = file_readv(s, m.host, iov, iovcnt, done, m.len, tmp);
			break;
		case QCOW2_ZERO_PLAIN:
		case QCOW2_ZERO_ALLOC:
			iov_memset(iov, iovcnt, done, m.len);
			break;
		case QCOW2_UNALLOCATED:
			ret = backing_readv(b, off + done, iov, iovcnt, done, m.len, tmp);
			break;
		case QCOW2_COMPRESSED:
			if (!cbuf && !(cbuf = malloc(s->cluster_size))) {
				ret = -ENOMEM;
				break;
			}
			ret = decompress_cluster(s, m.entry, cbuf);
			if (ret == 0)
				iov_copy(iov, iovcnt, done,
					 cbuf + qcow2_offset_into_cluster(s, off + done), m.len, true);
			break;
		}
		if (m.type == QCOW2_NORMAL || m.type == QCOW2_COMPRESSED)
			qcow2_inflight_del(s, &busy);
		pthread_mutex_lock(&s->lock);
		if (ret < 0)
			break;
		done += m.len;
	}
	qcow2_io_end(s);
	pthread_mutex_unlock(&s->lock);
	free(cbuf);
	if (tmp != stack)
		free(tmp);
	return ret;
}

/* The current contents of guest cluster gc (mapped by entry/bitmap), for
 * copy on write; the lock is not held. */
static int read_cluster(struct blk *b, uint64_t gc, uint64_t entry, uint64_t bitmap,
			uint8_t *buf)
{
	struct qcow2 *s = qcow2_state(b);
	struct iovec v = { buf, s->cluster_size }, tmp[1];
	uint64_t base = gc << s->cluster_bits;

	if (qcow2_classify(s, entry) == QCOW2_COMPRESSED)
		return decompress_cluster(s, entry, buf);
	for (uint64_t pos = 0; pos < s->cluster_size;) {
		unsigned sc = (unsigned)(pos / s->subcluster_size);
		enum qcow2_ctype t = unit_type(s, entry, bitmap, sc);
		uint64_t len = s->subcluster_size;
		/* Merge subclusters of one kind into one I/O. */
		while (pos + len < s->cluster_size &&
		       unit_type(s, entry, bitmap, (unsigned)((pos + len) / s->subcluster_size)) == t)
			len += s->subcluster_size;
		int ret = 0;
		switch (t) {
		case QCOW2_NORMAL:
			ret = file_readv(s, (entry & QCOW2_OFFSET_MASK) + pos, &v, 1, pos, len, tmp);
			break;
		case QCOW2_UNALLOCATED:
			ret = backing_readv(b, base + pos, &v, 1, pos, len, tmp);
			break;
		default:
			memset(buf + pos, 0, len);
			break;
		}
		if (ret < 0)
			return ret;
		pos += len;
	}
	return 0;
}

/* ---- writing ---- */

/* Whether the write [intra, intra+n) of a cluster mapped by entry/bitmap
 * may go straight to its host cluster. */
static bool write_in_place(const struct qcow2 *s, uint64_t entry, uint64_t bitmap,
			   uint64_t intra, uint64_t n)
{
	if (!(entry & QCOW2_OFLAG_COPIED) || qcow2_classify(s, entry) != QCOW2_NORMAL)
		return false;
	if (!s->ext_l2)
		return true;
	unsigned first = (unsigned)(intra / s->subcluster_size);
	unsigned last = (unsigned)((intra + n - 1) / s->subcluster_size);
	for (unsigned sc = first; sc <= last; sc++)
		if (!((bitmap >> sc) & 1))
			return false;
	return true;
}

static int set_entry(struct qcow2 *s, uint64_t gc, uint64_t entry, uint64_t bitmap)
{
	uint8_t *l2;
	int ret = l2_writable(s, gc, &l2);
	if (ret < 0)
		return ret;
	qcow2_l2_set(s, l2, (uint32_t)(gc & (s->l2_entries - 1)), entry, bitmap);
	qcow2_cache_mark_dirty(&s->l2_cache, l2);
	qcow2_cache_put(&s->l2_cache, l2);
	return 0;
}

/* Writes [guest, guest+n) within one cluster from iov at skip. Called and
 * returns with the lock held, inside qcow2_io_begin. */
static int write_cluster(struct blk *b, uint64_t guest, const struct iovec *iov, int iovcnt,
			 size_t skip, uint64_t n, struct iovec *tmp)
{
	struct qcow2 *s = qcow2_state(b);
	uint64_t gc = guest >> s->cluster_bits, intra = qcow2_offset_into_cluster(s, guest);
	uint64_t entry, bitmap, host;
	bool serial = serialize_data(s), reuse;
	uint8_t *buf = NULL;
	int ret;

	alloc_wait(s, gc);
	ret = entry_get(s, gc, &entry, &bitmap);
	if (ret < 0)
		return ret;
	if ((entry & QCOW2_OFFSET_MASK) &&
	    qcow2_overlaps_metadata(s, entry & QCOW2_OFFSET_MASK, s->cluster_size)) {
		qcow2_mark_corrupt(s, "L2 entry of guest offset %#llx maps onto metadata (%#llx)",
				   (unsigned long long)(gc << s->cluster_bits),
				   (unsigned long long)entry);
		return -EIO;
	}
	if (write_in_place(s, entry, bitmap, intra, n)) {
		struct qcow2_inflight busy;
		host = (entry & QCOW2_OFFSET_MASK) + intra;
		int cnt = qcow2_iov_slice(iov, iovcnt, skip, n, tmp);
		if (!serial) {
			qcow2_inflight_add(s, &busy, host, n, true);
			pthread_mutex_unlock(&s->lock);
		}
		ret = blk_pwritev(s->file, host, tmp, cnt, 0);
		if (!serial) {
			qcow2_inflight_del(s, &busy);
			pthread_mutex_lock(&s->lock);
		}
		return ret;
	}

	/* Allocating write: the cluster is ours until alloc_unmark. */
	ret = alloc_mark(s, gc);
	if (ret < 0)
		return ret;
	enum qcow2_ctype t = qcow2_classify(s, entry);
	reuse = (entry & QCOW2_OFLAG_COPIED) && (t == QCOW2_ZERO_ALLOC || t == QCOW2_NORMAL);
	if (reuse) {
		host = entry & QCOW2_OFFSET_MASK;
		/* The whole cluster is rewritten below: a write in place into
		 * another of its subclusters must not land in between our read
		 * and our write (it would be lost). Later ones wait in
		 * alloc_wait or take the synchronous path (alloc_is_busy). */
		qcow2_inflight_wait(s, host, s->cluster_size);
	} else {
		/* The L2 table first, so that sequential data stays contiguous. */
		uint8_t *l2;
		ret = l2_writable(s, gc, &l2);
		if (ret < 0)
			goto out_unmark;
		qcow2_cache_put(&s->l2_cache, l2);
		int64_t h = qcow2_alloc_clusters(s, 1);
		if (h < 0) {
			ret = (int)h;
			goto out_unmark;
		}
		host = (uint64_t)h;
	}
	if (!serial)
		pthread_mutex_unlock(&s->lock);
	if (n == s->cluster_size) {
		int cnt = qcow2_iov_slice(iov, iovcnt, skip, n, tmp);
		ret = blk_pwritev(s->file, host, tmp, cnt, 0);
	} else if (!(buf = malloc(s->cluster_size))) {
		ret = -ENOMEM;
	} else {
		ret = read_cluster(b, gc, entry, bitmap, buf);
		if (ret == 0) {
			iov_copy(iov, iovcnt, skip, buf + intra, n, false);
			ret = blk_pwrite(s->file, host, buf, s->cluster_size, 0);
		}
	}
	if (!serial)
		pthread_mutex_lock(&s->lock);
	if (ret == 0)
		ret = set_entry(s, gc, host | QCOW2_OFLAG_COPIED, s->ext_l2 ? 0xffffffffull : 0);
	if (ret == 0 && !reuse)
		ret = free_entry_later(s, entry);
	else if (ret < 0 && !reuse)
		qcow2_refcount_set(s, host >> s->cluster_bits, 0);   /* never referenced */
out_unmark:
	alloc_unmark(s, gc);
	free(buf);
	return ret;
}

/* ---- mapping for the asynchronous path ---- */

/* Whether every subcluster of [intra, intra+n) in a data cluster holds data. */
static bool all_data(const struct qcow2 *s, uint64_t entry, uint64_t bitmap, uint64_t intra,
		     uint64_t n)
{
	if (qcow2_classify(s, entry) != QCOW2_NORMAL)
		return false;
	if (!s->ext_l2)
		return true;
	unsigned first = (unsigned)(intra / s->subcluster_size);
	unsigned last = (unsigned)((intra + n - 1) / s->subcluster_size);
	for (unsigned sc = first; sc <= last; sc++)
		if (!((bitmap >> sc) & 1))
			return false;
	return true;
}

/* The clusters of [*pos, end) that one L2 table maps, while they qualify;
 * advances *pos past them. */
static int map_fast_table(struct qcow2 *s, bool write, uint64_t off, uint64_t *pos,
			  uint64_t end, struct qcow2_extent *ext, unsigned max, unsigned *n)
{
	uint64_t gc = *pos >> s->cluster_bits, l1i = gc >> s->l2_bits;
	uint64_t l2off;
	uint8_t *l2;

	if (l1i >= s->l1_size)
		return -ENOTSUP;
	l2off = s->l1[l1i] & QCOW2_OFFSET_MASK;
	if (!l2off || qcow2_offset_into_cluster(s, l2off) ||
	    qcow2_cache_peek(&s->l2_cache, l2off, &l2) < 0)
		return -ENOTSUP;
	int ret = 0;
	do {
		uint32_t i = (uint32_t)(gc & (s->l2_entries - 1));
		uint64_t entry = qcow2_l2_get(s, l2, i), bitmap = qcow2_l2_bitmap(s, l2, i);
		uint64_t intra = qcow2_offset_into_cluster(s, *pos);
		uint64_t len = s->cluster_size - intra;
		uint64_t cluster = entry & QCOW2_OFFSET_MASK;
		if (len > end - *pos)
			len = end - *pos;
		ret = -ENOTSUP;
		if (qcow2_l2_entry_valid(s, entry, bitmap) < 0)
			break;
		if (write ? !write_in_place(s, entry, bitmap, intra, len) || alloc_is_busy(s, gc) ||
			    qcow2_overlaps_metadata(s, cluster, s->cluster_size)
			  : !all_data(s, entry, bitmap, intra, len))
			break;
		uint64_t host = cluster + intra;
		/* Past the end of the file the ring would come back short and
		 * the file driver finish on a worker: no pool dependency here. */
		if (host + len > s->file_size)
			break;
		if (*n && ext[*n - 1].host + ext[*n - 1].len == host) {
			ext[*n - 1].len += len;
		} else {
			if (*n == max)
				break;
			ext[(*n)++] = (struct qcow2_extent){ host, len, *pos - off };
		}
		ret = 0;
		*pos += len;
		gc++;
	} while (*pos < end && (gc & (s->l2_entries - 1)));
	qcow2_cache_put(&s->l2_cache, l2);
	return ret;
}

int qcow2_map_fast(struct qcow2 *s, bool write, uint64_t off, uint64_t len,
		   struct qcow2_extent *ext, unsigned max, unsigned *n)
{
	uint64_t pos = off, end = off + len;

	*n = 0;
	while (pos < end) {
		int ret = map_fast_table(s, write, off, &pos, end, ext, max, n);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int refuse_corrupt(struct qcow2 *s)
{
	if (s->corrupt) {
		log_error("%s: qcow2 image is marked corrupt; write refused",
			  s->b->filename);
		return -EIO;
	}
	return 0;
}

static int finish_fua(struct qcow2 *s, unsigned flags)
{
	int ret;

	if (!(flags & BLK_WRITE_FUA))
		return 0;
	ret = qcow2_meta_flush(s);
	if (ret == 0)
		ret = qcow2_file_flush(s);
	return ret;
}

int qcow2_pwritev(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
		  unsigned flags)
{
	struct qcow2 *s = qcow2_state(b);
	size_t total = blk_iov_size(iov, iovcnt), done = 0;
	struct iovec stack[IOV_STACK], *tmp = stack;
	int ret;

	if (iovcnt > IOV_STACK && !(tmp = malloc(sizeof(*tmp) * (size_t)iovcnt)))
		return -ENOMEM;
	pthread_mutex_lock(&s->lock);
	ret = refuse_corrupt(s);
	if (ret < 0)
		goto out;
	qcow2_io_begin(s);
	while (done < total) {
		uint64_t guest = off + done;
		uint64_t n = s->cluster_size - qcow2_offset_into_cluster(s, guest);
		if (n > total - done)
			n = total - done;
		ret = write_cluster(b, guest, iov, iovcnt, done, n, tmp);
		if (ret < 0)
			break;
		done += n;
	}
	if (ret == 0)
		ret = finish_fua(s, flags);
	qcow2_io_end(s);
out:
	pthread_mutex_unlock(&s->lock);
	if (tmp != stack)
		free(tmp);
	return ret;
}

/* ---- zeroes and discard ---- */

/* Whether an unallocated guest range reads as zeroes (nothing below it). */
static bool below_is_zero(struct blk *b, uint64_t guest)
{
	struct qcow2 *s = qcow2_state(b);
	if (s->no_backing)
		return false;
	return !b->backing || guest >= blk_size(b->backing);
}

/* Does guest cluster gc read as zeroes already? */
static bool cluster_reads_zero(struct blk *b, uint64_t gc, uint64_t entry, uint64_t bitmap)
{
	struct qcow2 *s = qcow2_state(b);
	if (s->ext_l2 && !(entry & QCOW2_OFLAG_COMPRESSED)) {
		uint32_t zero = (uint32_t)(bitmap >> 32), alloc = (uint32_t)bitmap;
		if (zero == 0xffffffffu)
			return true;
		return !alloc && !zero && below_is_zero(b, gc << s->cluster_bits);
	}
	enum qcow2_ctype t = qcow2_classify(s, entry);
	if (t == QCOW2_ZERO_PLAIN || t == QCOW2_ZERO_ALLOC)
		return true;
	return t == QCOW2_UNALLOCATED && below_is_zero(b, gc << s->cluster_bits);
}

/* Makes a whole guest cluster read as zeroes, freeing its host space when
 * unmap (or when it cannot be kept); lock held. */
static int zero_cluster(struct blk *b, uint64_t gc, bool unmap)
{
	struct qcow2 *s = qcow2_state(b);
	uint64_t entry, bitmap, nentry, nbitmap = 0;
	int ret;

	alloc_wait(s, gc);
	ret = entry_get(s, gc, &entry, &bitmap);
	if (ret < 0)
		return ret;
	if (cluster_reads_zero(b, gc, entry, bitmap) &&
	    (!unmap || !(entry & QCOW2_OFFSET_MASK)))
		return 0;
	enum qcow2_ctype t = qcow2_classify(s, entry);
	bool keep = !unmap && (entry & QCOW2_OFLAG_COPIED) &&
		    (t == QCOW2_NORMAL || t == QCOW2_ZERO_ALLOC);
	if (s->ext_l2) {
		nentry = keep ? (entry & (QCOW2_OFFSET_MASK | QCOW2_OFLAG_COPIED)) : 0;
		nbitmap = 0xffffffffull << 32;
	} else if (s->version >= 3) {
		nentry = keep ? (entry & (QCOW2_OFFSET_MASK | QCOW2_OFLAG_COPIED)) | QCOW2_OFLAG_ZERO
			      : QCOW2_OFLAG_ZERO;
	} else {
		/* v2 has no zero flag: only an unallocated cluster over nothing. */
		if (!below_is_zero(b, gc << s->cluster_bits))
			return -ENOTSUP;
		nentry = 0;
		keep = false;
	}
	ret = set_entry(s, gc, nentry, nbitmap);
	if (ret == 0 && !keep)
		ret = free_entry_later(s, entry);
	return ret;
}

/* Writes zero bytes over [guest, guest+n) within one cluster. */
static int write_zero_bytes(struct blk *b, uint64_t guest, uint64_t n, struct iovec *tmp)
{
	struct qcow2 *s = qcow2_state(b);
	uint8_t *z = calloc(1, n);
	if (!z)
		return -ENOMEM;
	struct iovec v = { z, n };
	int ret = write_cluster(b, guest, &v, 1, 0, n, tmp);
	(void)s;
	free(z);
	return ret;
}

int qcow2_write_zeroes(struct blk *b, uint64_t off, uint64_t len, unsigned flags)
{
	struct qcow2 *s = qcow2_state(b);
	uint64_t end = off + len;
	struct iovec tmp[1];
	int ret;

	pthread_mutex_lock(&s->lock);
	ret = refuse_corrupt(s);
	if (ret < 0)
		goto out;
	qcow2_io_begin(s);
	while (off < end) {
		uint64_t gc = off >> s->cluster_bits;
		uint64_t cstart = gc << s->cluster_bits, cend = cstart + s->cluster_size;
		uint64_t n = (cend < end ? cend : end) - off;
		/* The image's last cluster may be partial: covering up to the
		 * virtual end counts as the whole cluster. */
		bool whole = off == cstart && (off + n == cend || off + n >= s->size);
		ret = -ENOTSUP;
		if (whole)
			ret = zero_cluster(b, gc, flags & BLK_ZERO_MAY_UNMAP);
		if (ret == -ENOTSUP) {
			uint64_t entry, bitmap;
			alloc_wait(s, gc);
			ret = entry_get(s, gc, &entry, &bitmap);
			if (ret == 0 && !cluster_reads_zero(b, gc, entry, bitmap))
				ret = write_zero_bytes(b, off, n, tmp);
		}
		if (ret < 0)
			break;
		off += n;
	}
	if (ret == 0)
		ret = finish_fua(s, 0);
	qcow2_io_end(s);
out:
	pthread_mutex_unlock(&s->lock);
	return ret;
}

/* Frees the host space of the whole clusters in [off, off+len). hide: keep
 * the range from showing the backing file's data through (zero clusters
 * where the format has them, as QEMU's discard does); without it, the
 * clusters become unallocated and read from the backing file again. */
static int unmap_range(struct blk *b, uint64_t off, uint64_t len, bool hide)
{
	struct qcow2 *s = qcow2_state(b);
	uint64_t end = off + len;
	int ret;

	pthread_mutex_lock(&s->lock);
	ret = refuse_corrupt(s);
	if (ret < 0)
		goto out;
	qcow2_io_begin(s);
	/* Whole clusters only: discard is advisory. */
	uint64_t first = qcow2_align_up(off, s->cluster_size) >> s->cluster_bits;
	uint64_t last = end >= s->size ? qcow2_size_to_clusters(s, s->size)
				       : end >> s->cluster_bits;
	for (uint64_t gc = first; gc < last; gc++) {
		uint64_t entry, bitmap, nentry = 0, nbitmap = 0;
		alloc_wait(s, gc);
		ret = entry_get(s, gc, &entry, &bitmap);
		if (ret < 0)
			break;
		bool has_backing = b->backing || s->no_backing;
		/* Without a backing file, unallocated reads as zeroes anyway. */
		bool can_zero = hide && has_backing && (s->ext_l2 || s->version >= 3);
		if (can_zero) {
			if (s->ext_l2)
				nbitmap = 0xffffffffull << 32;
			else
				nentry = QCOW2_OFLAG_ZERO;
		}
		if (entry == nentry && (!s->ext_l2 || bitmap == nbitmap))
			continue;
		/* Discard: nothing to free and nothing to hide. */
		if (hide && !(entry & QCOW2_OFFSET_MASK) && !(entry & QCOW2_OFLAG_COMPRESSED) &&
		    !can_zero)
			continue;
		ret = set_entry(s, gc, nentry, nbitmap);
		if (ret == 0)
			ret = free_entry_later(s, entry);
		if (ret < 0)
			break;
	}
	qcow2_io_end(s);
out:
	pthread_mutex_unlock(&s->lock);
	return ret;
}

int qcow2_discard(struct blk *b, uint64_t off, uint64_t len)
{
	return unmap_range(b, off, len, true);
}

int qcow2_make_empty(struct blk *b)
{
	struct qcow2 *s = qcow2_state(b);
	int ret = unmap_range(b, 0, s->size, false);

	return ret < 0 ? ret : blk_flush(b->file);
}

/* ---- block status ---- */

int qcow2_block_status(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum,
		       unsigned *status, uint64_t *map, struct blk **map_node)
{
	struct qcow2 *s = qcow2_state(b);
	struct qcow2_map m;
	int ret;

	pthread_mutex_lock(&s->lock);
	ret = map_range(s, off, len, &m);
	pthread_mutex_unlock(&s->lock);
	if (ret < 0)
		return ret;
	*pnum = m.len;
	switch (m.type) {
	case QCOW2_UNALLOCATED:
		*status = (b->backing || s->no_backing) ? 0 : BLK_STATUS_ZERO;
		break;
	case QCOW2_ZERO_PLAIN:
		*status = BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED;
		break;
	case QCOW2_ZERO_ALLOC:
		*status = BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED | BLK_STATUS_OFFSET_VALID;
		break;
	case QCOW2_NORMAL:
		*status = BLK_STATUS_DATA | BLK_STATUS_ALLOCATED | BLK_STATUS_OFFSET_VALID;
		break;
	case QCOW2_COMPRESSED:
		*status = BLK_STATUS_DATA | BLK_STATUS_ALLOCATED | BLK_STATUS_COMPRESSED;
		break;
	}
	if (*status & BLK_STATUS_OFFSET_VALID) {
		if (map)
			*map = m.host;
		if (map_node)
			*map_node = s->file;
	}
	return 0;
}

/* ---- compressed writes ---- */

/* Raw deflate with a 4 KiB window, as QEMU writes compression type 0.
 * Returns the compressed length, or 0 when it would not save space. */
static size_t deflate_cluster(const uint8_t *in, size_t len, uint8_t *out, size_t cap)
{
	z_stream z;
	size_t n = 0;

	memset(&z, 0, sizeof(z));
	if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK)
		return 0;
	z.next_in = (Bytef *)in;
	z.avail_in = (uInt)len;
	z.next_out = out;
	z.avail_out = (uInt)cap;
	if (deflate(&z, Z_FINISH) == Z_STREAM_END)
		n = cap - z.avail_out;
	deflateEnd(&z);
	return n;
}

int qcow2_pwrite_compressed(struct blk *b, uint64_t off, const void *data, size_t len)
{
	struct qcow2 *s = qcow2_state(b);
	uint64_t gc = off >> s->cluster_bits;
	uint8_t *in = NULL, *out = NULL;
	size_t clen;
	int ret;

	if (qcow2_offset_into_cluster(s, off) || len > s->cluster_size ||
	    (len < s->cluster_size && off + len != s->size) || off + len > s->size)
		return -EINVAL;
	in = calloc(1, s->cluster_size);      /* a short last cluster is padded */
	out = malloc(s->cluster_size);
	if (!in || !out) {
		ret = -ENOMEM;
		goto out;
	}
	memcpy(in, data, len);
	clen = deflate_cluster(in, s->cluster_size, out, s->cluster_size - 1);
	if (!clen) {
		struct iovec v = { in, s->cluster_size };
		v.iov_len = len;
		ret = qcow2_pwritev(b, off, &v, 1, 0);
		goto out;
	}
	pthread_mutex_lock(&s->lock);
	ret = refuse_corrupt(s);
	if (ret < 0)
		goto out_unlock;
	qcow2_io_begin(s);
	alloc_wait(s, gc);
	uint64_t entry, bitmap;
	ret = entry_get(s, gc, &entry, &bitmap);
	if (ret < 0)
		goto out_io;
	/* Compressed data shares host sectors with its neighbours: it is
	 * written under the lock so no two writes interleave in one sector. */
	int64_t host = qcow2_alloc_bytes(s, (uint32_t)clen);
	if (host < 0) {
		ret = (int)host;
		goto out_io;
	}
	ret = blk_pwrite(s->file, (uint64_t)host, out, clen, 0);
	if (ret == 0) {
		uint64_t nsec = (((uint64_t)host + clen - 1) >> 9) - ((uint64_t)host >> 9);
		uint64_t nentry = QCOW2_OFLAG_COMPRESSED | (nsec << s->csize_shift) | (uint64_t)host;
		ret = set_entry(s, gc, nentry, 0);
		if (ret == 0)
			ret = free_entry_later(s, entry);
	}
	if (ret < 0)
		qcow2_refcount_update(s, (uint64_t)host, clen, -1);
out_io:
	qcow2_io_end(s);
out_unlock:
	pthread_mutex_unlock(&s->lock);
out:
	free(in);
	free(out);
	return ret;
}

/* ---- preallocation ---- */

int qcow2_preallocate(struct qcow2 *s, uint64_t off, uint64_t len)
{
	uint64_t gc = off >> s->cluster_bits;
	uint64_t end = qcow2_size_to_clusters(s, off + len);
	int ret = 0;

	while (gc < end) {
		/* Runs within one L2 table, allocated contiguously. */
		uint64_t span_end = ((gc >> s->l2_bits) + 1) << s->l2_bits;
		uint64_t stop = span_end < end ? span_end : end;
		uint8_t *l2;
		ret = l2_writable(s, gc, &l2);
		if (ret < 0)
			return ret;
		uint64_t want = 0;
		for (uint64_t c = gc; c < stop; c++)
			if (!(qcow2_l2_get(s, l2, (uint32_t)(c & (s->l2_entries - 1))) &
			      (QCOW2_OFFSET_MASK | QCOW2_OFLAG_COMPRESSED)))
				want++;
		int64_t host = 0;
		if (want) {
			uint64_t old_end = s->file_size;
			host = qcow2_alloc_clusters(s, want);
			if (host < 0) {
				qcow2_cache_put(&s->l2_cache, l2);
				return (int)host;
			}
			/* Reused free space holds old bytes; the file's new tail
			 * reads as zeroes already. */
			if ((uint64_t)host < old_end) {
				uint64_t zend = (uint64_t)host + want * s->cluster_size;
				if (zend > old_end)
					zend = old_end;
				ret = blk_write_zeroes(s->file, (uint64_t)host, zend - (uint64_t)host, 0);
				if (ret < 0) {
					qcow2_cache_put(&s->l2_cache, l2);
					return ret;
				}
			}
		}
		for (uint64_t c = gc; c < stop; c++) {
			uint32_t i = (uint32_t)(c & (s->l2_entries - 1));
			uint64_t e = qcow2_l2_get(s, l2, i);
			if (e & (QCOW2_OFFSET_MASK | QCOW2_OFLAG_COMPRESSED))
				continue;
			qcow2_l2_set(s, l2, i, (uint64_t)host | QCOW2_OFLAG_COPIED,
				     s->ext_l2 ? 0xffffffffull : 0);
			host += s->cluster_size;
		}
		qcow2_cache_mark_dirty(&s->l2_cache, l2);
		qcow2_cache_put(&s->l2_cache, l2);
		gc = stop;
	}
	return ret;
}
