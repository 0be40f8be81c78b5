/* qcow2 format driver: opening (header, extensions, validation), closing,
 * header rewrites, info, the driver table. Byte-compatible with QEMU's
 * qcow2 (docs/interop/qcow2.txt), versions 2 and 3. */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "qcow2.h"

void qcow2_set_err(struct qcow2 *s, char *err, size_t errlen, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(err, errlen, "%s: %s", s->b && s->b->filename ? s->b->filename : "qcow2", msg);
}

/* ---- request tracking ---- */

void qcow2_io_begin(struct qcow2 *s)
{
	while (s->excl)
		pthread_cond_wait(&s->cond, &s->lock);
	s->io_busy++;
}

void qcow2_io_end(struct qcow2 *s)
{
	s->io_busy--;
	pthread_cond_broadcast(&s->cond);
}

void qcow2_excl_begin(struct qcow2 *s)
{
	while (s->excl)
		pthread_cond_wait(&s->cond, &s->lock);
	s->excl = true;
	while (s->io_busy)
		pthread_cond_wait(&s->cond, &s->lock);
	/* Asynchronous requests end without the lock; it is let go anyway
	 * while they do, because ending one may need a worker thread (the file
	 * finishing a short read) and workers may be queueing for the lock.
	 * Nothing new starts meanwhile: excl is set. */
	pthread_mutex_lock(&s->track_lock);
	if (s->aio_busy) {
		pthread_mutex_unlock(&s->lock);
		s->track_waiters++;
		while (s->aio_busy)
			pthread_cond_wait(&s->track_cond, &s->track_lock);
		s->track_waiters--;
		pthread_mutex_unlock(&s->track_lock);
		pthread_mutex_lock(&s->lock);
	} else {
		pthread_mutex_unlock(&s->track_lock);
	}
}

void qcow2_excl_end(struct qcow2 *s)
{
	s->excl = false;
	pthread_cond_broadcast(&s->cond);
}

void qcow2_aio_begin(struct qcow2 *s)
{
	pthread_mutex_lock(&s->track_lock);
	s->aio_busy++;
	pthread_mutex_unlock(&s->track_lock);
}

void qcow2_aio_end(struct qcow2 *s)
{
	pthread_mutex_lock(&s->track_lock);
	s->aio_busy--;
	if (s->track_waiters)
		pthread_cond_broadcast(&s->track_cond);
	pthread_mutex_unlock(&s->track_lock);
}

void qcow2_inflight_add(struct qcow2 *s, struct qcow2_inflight *t, uint64_t host,
			uint64_t len, bool write)
{
	t->host = host;
	t->len = len;
	t->write = write;
	t->prev = NULL;
	pthread_mutex_lock(&s->track_lock);
	t->next = s->inflight;
	if (s->inflight)
		s->inflight->prev = t;
	s->inflight = t;
	pthread_mutex_unlock(&s->track_lock);
}

void qcow2_inflight_del(struct qcow2 *s, struct qcow2_inflight *t)
{
	pthread_mutex_lock(&s->track_lock);
	if (t->prev)
		t->prev->next = t->next;
	else
		s->inflight = t->next;
	if (t->next)
		t->next->prev = t->prev;
	t->prev = t->next = NULL;
	if (s->track_waiters)
		pthread_cond_broadcast(&s->track_cond);
	pthread_mutex_unlock(&s->track_lock);
}

/* track_lock held. Cluster granularity: refcounts are per cluster, and
 * compressed clusters share host clusters byte-wise. */
static bool inflight_busy_locked(const struct qcow2 *s, uint64_t off, uint64_t len,
				 bool writes_only)
{
	uint64_t first = off >> s->cluster_bits;
	uint64_t last = (off + (len ? len : 1) - 1) >> s->cluster_bits;

	for (const struct qcow2_inflight *t = s->inflight; t; t = t->next) {
		if (writes_only && !t->write)
			continue;
		uint64_t tf = t->host >> s->cluster_bits;
		uint64_t tl = (t->host + (t->len ? t->len : 1) - 1) >> s->cluster_bits;
		if (tf <= last && first <= tl)
			return true;
	}
	return false;
}

bool qcow2_inflight_busy(struct qcow2 *s, uint64_t off, uint64_t len, bool writes_only)
{
	bool busy;

	pthread_mutex_lock(&s->track_lock);
	busy = inflight_busy_locked(s, off, len, writes_only);
	pthread_mutex_unlock(&s->track_lock);
	return busy;
}

/* The lock is let go while waiting: a synchronous writer we wait for takes
 * it again when done. No new write to the range can start meanwhile (the
 * callers hold the guest cluster in alloc_busy). */
void qcow2_inflight_wait(struct qcow2 *s, uint64_t off, uint64_t len)
{
	pthread_mutex_lock(&s->track_lock);
	if (!inflight_busy_locked(s, off, len, true)) {
		pthread_mutex_unlock(&s->track_lock);
		return;
	}
	pthread_mutex_unlock(&s->lock);
	s->track_waiters++;
	while (inflight_busy_locked(s, off, len, true))
		pthread_cond_wait(&s->track_cond, &s->track_lock);
	s->track_waiters--;
	pthread_mutex_unlock(&s->track_lock);
	pthread_mutex_lock(&s->lock);
}

/* ---- big-endian fields ---- */

static uint32_t get_be32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return be32toh(v);
}
static uint64_t get_be64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return be64toh(v);
}
static void put_be32(uint8_t *p, uint32_t v)
{
	v = htobe32(v);
	memcpy(p, &v, 4);
}
static void put_be64(uint8_t *p, uint64_t v)
{
	v = htobe64(v);
	memcpy(p, &v, 8);
}

/* ---- header writes ---- */

struct feature_name {
	uint8_t type, bit;
	const char *name;
};
static const struct feature_name feature_names[] = {
	{ 0, 0, "dirty bit" },
	{ 0, 1, "corrupt bit" },
	{ 0, 2, "external data file" },
	{ 0, 3, "compression type" },
	{ 0, 4, "extended L2 entries" },
	{ 1, 0, "lazy refcounts" },
	{ 2, 0, "bitmaps" },
	{ 2, 1, "raw external data" },
};

static size_t put_ext(uint8_t *buf, size_t pos, size_t cap, uint32_t type, const void *data,
		      uint32_t len)
{
	size_t need = 8 + qcow2_align_up(len, 8);
	if (pos + need > cap)
		return 0;
	put_be32(buf + pos, type);
	put_be32(buf + pos + 4, len);
	memcpy(buf + pos + 8, data, len);
	memset(buf + pos + 8 + len, 0, need - 8 - len);
	return pos + need;
}

/* Rewrites the whole first cluster's header area from the in-memory state:
 * fields, extensions (backing format, feature names, the ones we keep
 * unread), backing file name. */
int qcow2_header_write(struct qcow2 *s)
{
	size_t cap = s->cluster_size, pos;
	uint8_t *buf = calloc(1, cap);
	uint8_t ft[sizeof(feature_names) / sizeof(feature_names[0])][48];
	int ret;

	if (!buf)
		return -ENOMEM;
	put_be32(buf, QCOW2_MAGIC);
	put_be32(buf + 4, s->version);
	put_be32(buf + 20, s->cluster_bits);
	put_be64(buf + 24, s->size);
	put_be32(buf + 32, 0);
	put_be32(buf + 36, s->l1_size);
	put_be64(buf + 40, s->l1_offset);
	put_be64(buf + 48, s->reftable_offset);
	put_be32(buf + 56, s->reftable_clusters);
	put_be32(buf + 60, s->nb_snapshots);
	put_be64(buf + 64, s->snapshots_offset);
	if (s->version >= 3) {
		uint32_t hlen = QCOW2_HEADER_LEN_WRITTEN;
		if (QCOW2_V3_HEADER_LEN + s->header_tail_len > hlen)
			hlen = QCOW2_V3_HEADER_LEN + s->header_tail_len;
		put_be64(buf + 72, s->incompat);
		put_be64(buf + 80, s->compat);
		put_be64(buf + 88, s->autoclear);
		put_be32(buf + 96, s->refcount_order);
		put_be32(buf + 100, hlen);
		if (s->header_tail_len)
			memcpy(buf + QCOW2_V3_HEADER_LEN, s->header_tail, s->header_tail_len);
		buf[104] = s->compression_type;
		pos = hlen;
	} else {
		pos = QCOW2_V2_HEADER_LEN;
	}

	if (s->backing_format) {
		pos = put_ext(buf, pos, cap, QCOW2_EXT_BACKING_FORMAT, s->backing_format,
			      (uint32_t)strlen(s->backing_format));
		if (!pos)
			goto err_nospace;
	}
	if (s->version >= 3) {
		memset(ft, 0, sizeof(ft));
		for (size_t i = 0; i < sizeof(feature_names) / sizeof(feature_names[0]); i++) {
			ft[i][0] = feature_names[i].type;
			ft[i][1] = feature_names[i].bit;
			strncpy((char *)ft[i] + 2, feature_names[i].name, 46);
		}
		pos = put_ext(buf, pos, cap, QCOW2_EXT_FEATURE_TABLE, ft, sizeof(ft));
		if (!pos)
			goto err_nospace;
	}
	for (unsigned i = 0; i < s->nexts; i++) {
		pos = put_ext(buf, pos, cap, s->exts[i].type, s->exts[i].data, s->exts[i].len);
		if (!pos)
			goto err_nospace;
	}
	if (pos + 8 > cap)
		goto err_nospace;
	pos += 8;   /* end of extensions: zeroes */
	if (s->backing_file) {
		size_t n = strlen(s->backing_file);
		if (pos + n > cap)
			goto err_nospace;
		memcpy(buf + pos, s->backing_file, n);
		put_be64(buf + 8, pos);
		put_be32(buf + 16, (uint32_t)n);
		pos += n;
	}
	ret = blk_pwrite(s->file, 0, buf, pos, 0);
	free(buf);
	return ret;

err_nospace:
	free(buf);
	return -ENOSPC;
}

int qcow2_header_update_incompat(struct qcow2 *s, uint64_t incompat)
{
	uint8_t be[8];
	int ret;

	if (s->version < 3)
		return 0;
	put_be64(be, incompat);
	ret = blk_pwrite(s->file, 72, be, 8, 0);
	if (ret < 0)
		return ret;
	s->incompat = incompat;
	return qcow2_file_flush(s);
}

/* Invariant (8) of qcow2_refcount.c: dirty before the first lazy update. */
int qcow2_mark_dirty(struct qcow2 *s)
{
	int ret;

	if (s->dirty_set)
		return 0;
	ret = qcow2_file_flush(s);
	if (ret < 0)
		return ret;
	ret = qcow2_header_update_incompat(s, s->incompat | QCOW2_INCOMPAT_DIRTY);
	if (ret < 0)
		return ret;
	s->dirty_set = true;
	return 0;
}

static int mark_clean(struct qcow2 *s)
{
	int ret;

	if (!(s->incompat & QCOW2_INCOMPAT_DIRTY))
		return 0;
	ret = qcow2_cache_write_all(s, &s->rb_cache);
	if (ret < 0)
		return ret;
	ret = qcow2_file_flush(s);
	if (ret < 0)
		return ret;
	ret = qcow2_header_update_incompat(s, s->incompat & ~QCOW2_INCOMPAT_DIRTY);
	if (ret < 0)
		return ret;
	s->dirty_set = false;
	return 0;
}

int qcow2_mark_corrupt(struct qcow2 *s, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_error("%s: qcow2 image is corrupt: %s%s", s->b->filename, msg,
		  s->b->readonly ? "" : "; further writes are refused");
	if (s->b->readonly || s->corrupt)
		return 0;
	s->corrupt = true;
	return qcow2_header_update_incompat(s, s->incompat | QCOW2_INCOMPAT_CORRUPT);
}

/* ---- opening ---- */

static const char *feature_name_of(const uint8_t *table, uint32_t len, int type, int bit,
				   char *out, size_t outlen)
{
	for (uint32_t i = 0; i + 48 <= len; i += 48) {
		if (table[i] == type && table[i + 1] == bit) {
			snprintf(out, outlen, "%.46s", (const char *)table + i + 2);
			return out;
		}
	}
	for (size_t i = 0; i < sizeof(feature_names) / sizeof(feature_names[0]); i++)
		if (feature_names[i].type == type && feature_names[i].bit == bit)
			return feature_names[i].name;
	snprintf(out, outlen, "bit %d", bit);
	return out;
}

static int keep_ext(struct qcow2 *s, uint32_t type, const uint8_t *data, uint32_t len)
{
	struct qcow2_ext *e = realloc(s->exts, (s->nexts + 1) * sizeof(*e));
	if (!e)
		return -ENOMEM;
	s->exts = e;
	e = &s->exts[s->nexts];
	e->data = malloc(len ? len : 1);
	if (!e->data)
		return -ENOMEM;
	memcpy(e->data, data, len);
	e->type = type;
	e->len = len;
	s->nexts++;
	return 0;
}

/* Extensions between the header and the end of the area (the backing file
 * name, or the cluster's end). */
static int read_extensions(struct qcow2 *s, const uint8_t *buf, size_t start, size_t end,
			   const uint8_t **ftable, uint32_t *ftable_len, char *err, size_t errlen)
{
	size_t pos = start;

	while (pos + 8 <= end) {
		uint32_t type = get_be32(buf + pos), len = get_be32(buf + pos + 4);
		if (type == QCOW2_EXT_END)
			return 0;
		if (len > end - pos - 8) {
			qcow2_set_err(s, err, errlen, "qcow2 header: extension %#x at offset %zu "
				      "is %u bytes long, past the header area", type, pos, len);
			return -EINVAL;
		}
		const uint8_t *data = buf + pos + 8;
		switch (type) {
		case QCOW2_EXT_BACKING_FORMAT:
			if (len == 0 || len > 64 || memchr(data, 0, len)) {
				qcow2_set_err(s, err, errlen, "qcow2 header: invalid backing "
					      "format extension (%u bytes)", len);
				return -EINVAL;
			}
			free(s->backing_format);
			s->backing_format = strndup((const char *)data, len);
			if (!s->backing_format)
				return -ENOMEM;
			break;
		case QCOW2_EXT_FEATURE_TABLE:
			*ftable = data;
			*ftable_len = len;
			break;
		case QCOW2_EXT_CRYPTO:
			break;   /* only with crypt_method, which is refused */
		default: {
			int ret = keep_ext(s, type, data, len);
			if (ret < 0)
				return ret;
			break;
		}
		}
		pos += 8 + qcow2_align_up(len, 8);
	}
	return 0;
}

static int check_table(struct qcow2 *s, const char *what, uint64_t off, uint64_t len,
		       char *err, size_t errlen)
{
	if (qcow2_offset_into_cluster(s, off)) {
		qcow2_set_err(s, err, errlen, "qcow2 header: %s offset %#llx is not "
			      "cluster aligned", what, (unsigned long long)off);
		return -EINVAL;
	}
	if (len && off == 0) {
		qcow2_set_err(s, err, errlen, "qcow2 header: the %s at offset 0 overlaps the "
			      "header", what);
		return -EINVAL;
	}
	if (len && (off + len < off || off + len > s->file_size)) {
		qcow2_set_err(s, err, errlen, "qcow2 header: %s (offset %#llx, %llu bytes) "
			      "lies outside the image file (%llu bytes)", what,
			      (unsigned long long)off, (unsigned long long)len,
			      (unsigned long long)s->file_size);
		return -EINVAL;
	}
	return 0;
}

int qcow2_derive_layout(struct qcow2 *s, char *err, size_t errlen)
{
	s->cluster_size = 1u << s->cluster_bits;
	s->ext_l2 = (s->incompat & QCOW2_INCOMPAT_EXTL2) != 0;
	s->l2_entry_size = s->ext_l2 ? 16 : 8;
	s->l2_bits = s->cluster_bits - (s->ext_l2 ? 4 : 3);
	s->l2_entries = 1u << s->l2_bits;
	s->subcluster_size = s->ext_l2 ? s->cluster_size / 32 : s->cluster_size;
	s->refblock_bits = s->cluster_bits + 3 - s->refcount_order;
	s->refcount_max = s->refcount_order == 6 ? UINT64_MAX
						 : (1ull << (1u << s->refcount_order)) - 1;
	s->csize_shift = 62 - (s->cluster_bits - 8);
	s->csize_mask = (1ull << (s->cluster_bits - 8)) - 1;
	s->coffset_mask = (1ull << s->csize_shift) - 1;
	return 0;
}

static int header_read(struct qcow2 *s, char *err, size_t errlen)
{
	uint8_t fixed[QCOW2_V3_HEADER_LEN];
	uint8_t *buf = NULL;
	const uint8_t *ftable = NULL;
	uint32_t ftable_len = 0;
	char name[64];
	int ret;

	if (s->file_size < QCOW2_V2_HEADER_LEN) {
		qcow2_set_err(s, err, errlen, "qcow2 header: file is %llu bytes, too short "
			      "for a header", (unsigned long long)s->file_size);
		return -EINVAL;
	}
	memset(fixed, 0, sizeof(fixed));
	ret = blk_pread(s->file, 0, fixed, s->file_size < sizeof(fixed) ? s->file_size
									 : sizeof(fixed));
	if (ret < 0) {
		qcow2_set_err(s, err, errlen, "cannot read the qcow2 header: %s", strerror(-ret));
		return ret;
	}
	if (get_be32(fixed) != QCOW2_MAGIC) {
		qcow2_set_err(s, err, errlen, "qcow2 header: bad magic (not a qcow2 image)");
		return -EINVAL;
	}
	s->version = get_be32(fixed + 4);
	if (s->version != 2 && s->version != 3) {
		qcow2_set_err(s, err, errlen, "qcow2 header: version %u not supported "
			      "(2 and 3 are)", s->version);
		return -ENOTSUP;
	}
	uint64_t backing_off = get_be64(fixed + 8);
	uint32_t backing_len = get_be32(fixed + 16);
	s->cluster_bits = get_be32(fixed + 20);
	s->size = get_be64(fixed + 24);
	uint32_t crypt = get_be32(fixed + 32);
	s->l1_size = get_be32(fixed + 36);
	s->l1_offset = get_be64(fixed + 40);
	s->reftable_offset = get_be64(fixed + 48);
	s->reftable_clusters = get_be32(fixed + 56);
	s->nb_snapshots = get_be32(fixed + 60);
	s->snapshots_offset = get_be64(fixed + 64);

	if (s->cluster_bits < QCOW2_MIN_CLUSTER_BITS || s->cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
		qcow2_set_err(s, err, errlen, "qcow2 header: cluster_bits %u out of range "
			      "(%u..%u)", s->cluster_bits, QCOW2_MIN_CLUSTER_BITS,
			      QCOW2_MAX_CLUSTER_BITS);
		return -EINVAL;
	}
	s->cluster_size = 1u << s->cluster_bits;
	if (s->version == 2) {
		s->header_length = QCOW2_V2_HEADER_LEN;
		s->refcount_order = 4;
	} else {
		if (s->file_size < QCOW2_V3_HEADER_LEN) {
			qcow2_set_err(s, err, errlen, "qcow2 header: file is %llu bytes, too "
				      "short for a version 3 header",
				      (unsigned long long)s->file_size);
			return -EINVAL;
		}
		s->incompat = get_be64(fixed + 72);
		s->compat = get_be64(fixed + 80);
		s->autoclear = get_be64(fixed + 88);
		s->refcount_order = get_be32(fixed + 96);
		s->header_length = get_be32(fixed + 100);
		if (s->header_length < QCOW2_V3_HEADER_LEN || s->header_length % 8 ||
		    s->header_length > s->cluster_size || s->header_length > s->file_size) {
			qcow2_set_err(s, err, errlen, "qcow2 header: header_length %u invalid "
				      "(at least 104, a multiple of 8, within the first cluster "
				      "and the file)", s->header_length);
			return -EINVAL;
		}
		if (s->refcount_order > 6) {
			qcow2_set_err(s, err, errlen, "qcow2 header: refcount_order %u out of "
				      "range (0..6)", s->refcount_order);
			return -EINVAL;
		}
	}
	if (crypt) {
		qcow2_set_err(s, err, errlen, "qcow2 header: encrypted images (crypt_method %u) "
			      "are not supported", crypt);
		return -ENOTSUP;
	}

	/* The first cluster: extensions and the backing file name. */
	size_t area = s->cluster_size < s->file_size ? s->cluster_size : s->file_size;
	buf = calloc(1, s->cluster_size);
	if (!buf)
		return -ENOMEM;
	ret = blk_pread(s->file, 0, buf, area);
	if (ret < 0)
		goto out;
	if (s->header_length > QCOW2_V3_HEADER_LEN) {
		s->header_tail_len = s->header_length - QCOW2_V3_HEADER_LEN;
		s->header_tail = malloc(s->header_tail_len);
		if (!s->header_tail) {
			ret = -ENOMEM;
			goto out;
		}
		memcpy(s->header_tail, buf + QCOW2_V3_HEADER_LEN, s->header_tail_len);
		s->compression_type = buf[104];
	}
	size_t ext_end = area;
	if (backing_off) {
		if (backing_len > QCOW2_MAX_BACKING_NAME || backing_len == 0 ||
		    backing_off < s->header_length || backing_off + backing_len > area) {
			qcow2_set_err(s, err, errlen, "qcow2 header: backing file name (offset "
				      "%llu, %u bytes) outside the first cluster or too long",
				      (unsigned long long)backing_off, backing_len);
			ret = -EINVAL;
			goto out;
		}
		if (memchr(buf + backing_off, 0, backing_len)) {
			qcow2_set_err(s, err, errlen, "qcow2 header: backing file name contains "
				      "a NUL byte");
			ret = -EINVAL;
			goto out;
		}
		s->backing_file = strndup((const char *)buf + backing_off, backing_len);
		if (!s->backing_file) {
			ret = -ENOMEM;
			goto out;
		}
		ext_end = backing_off;
	}
	ret = read_extensions(s, buf, s->header_length, ext_end, &ftable, &ftable_len, err,
			      errlen);
	if (ret < 0)
		goto out;

	uint64_t unknown = s->incompat & ~QCOW2_INCOMPAT_KNOWN;
	if (unknown) {
		int bit = __builtin_ctzll(unknown);
		qcow2_set_err(s, err, errlen, "qcow2 header: unsupported incompatible feature "
			      "'%s' (bit %d)", feature_name_of(ftable, ftable_len, 0, bit, name,
							       sizeof(name)), bit);
		ret = -ENOTSUP;
		goto out;
	}
	if (s->incompat & QCOW2_INCOMPAT_DATA_FILE) {
		qcow2_set_err(s, err, errlen, "qcow2 header: images with an external data file "
			      "are not supported");
		ret = -ENOTSUP;
		goto out;
	}
	if (s->incompat & QCOW2_INCOMPAT_COMPRESSION) {
		if (s->compression_type == 1)
			qcow2_set_err(s, err, errlen, "qcow2 header: zstd compression "
				      "(compression_type 1) is not supported; convert the image "
				      "with zlib compression or none");
		else
			qcow2_set_err(s, err, errlen, "qcow2 header: compression_type %u is "
				      "not supported", s->compression_type);
		ret = -ENOTSUP;
		goto out;
	}
	if (s->compression_type) {
		qcow2_set_err(s, err, errlen, "qcow2 header: compression_type %u set without "
			      "the compression type feature bit", s->compression_type);
		ret = -EINVAL;
		goto out;
	}
	if ((s->incompat & QCOW2_INCOMPAT_EXTL2) && s->cluster_bits < 14) {
		qcow2_set_err(s, err, errlen, "qcow2 header: extended L2 entries need clusters "
			      "of at least 16 KiB (cluster_bits %u)", s->cluster_bits);
		ret = -EINVAL;
		goto out;
	}
	ret = 0;
out:
	free(buf);
	return ret;
}

static int validate_tables(struct qcow2 *s, char *err, size_t errlen)
{
	uint64_t l1_bytes = (uint64_t)s->l1_size * 8;
	uint64_t rt_bytes = (uint64_t)s->reftable_clusters * s->cluster_size;
	uint64_t max_l1_entries = QCOW2_MAX_L1_BYTES / 8;
	int ret;

	if (s->size > INT64_MAX ||
	    qcow2_size_to_l1(s, s->size) > max_l1_entries) {
		qcow2_set_err(s, err, errlen, "qcow2 header: virtual size %llu too large for "
			      "%u-byte clusters", (unsigned long long)s->size, s->cluster_size);
		return -EFBIG;
	}
	if (s->l1_size > max_l1_entries) {
		qcow2_set_err(s, err, errlen, "qcow2 header: L1 table of %u entries exceeds "
			      "%u", s->l1_size, QCOW2_MAX_L1_BYTES / 8);
		return -EFBIG;
	}
	if (s->l1_size < qcow2_size_to_l1(s, s->size)) {
		qcow2_set_err(s, err, errlen, "qcow2 header: L1 table of %u entries too small "
			      "for the virtual size %llu", s->l1_size,
			      (unsigned long long)s->size);
		return -EINVAL;
	}
	ret = check_table(s, "L1 table", s->l1_offset, l1_bytes, err, errlen);
	if (ret < 0)
		return ret;
	if (s->reftable_clusters == 0 || rt_bytes > QCOW2_MAX_REFTABLE_BYTES) {
		qcow2_set_err(s, err, errlen, "qcow2 header: refcount table of %u clusters "
			      "(must be 1..%u)", s->reftable_clusters,
			      QCOW2_MAX_REFTABLE_BYTES / s->cluster_size);
		return -EINVAL;
	}
	ret = check_table(s, "refcount table", s->reftable_offset, rt_bytes, err, errlen);
	if (ret < 0)
		return ret;
	if (s->nb_snapshots > QCOW2_MAX_SNAPSHOTS) {
		qcow2_set_err(s, err, errlen, "qcow2 header: %u snapshots (at most %u)",
			      s->nb_snapshots, QCOW2_MAX_SNAPSHOTS);
		return -EINVAL;
	}
	if (s->nb_snapshots) {
		ret = check_table(s, "snapshot table", s->snapshots_offset, 40, err, errlen);
		if (ret < 0)
			return ret;
	}

	struct { const char *what; uint64_t off, len; } t[] = {
		{ "header", 0, s->cluster_size },
		{ "L1 table", s->l1_offset, qcow2_align_up(l1_bytes, s->cluster_size) },
		{ "refcount table", s->reftable_offset, rt_bytes },
		{ "snapshot table", s->snapshots_offset, s->nb_snapshots ? s->cluster_size : 0 },
	};
	for (unsigned i = 0; i < 4; i++)
		for (unsigned j = i + 1; j < 4; j++)
			if (t[i].len && t[j].len && t[i].off < t[j].off + t[j].len &&
			    t[j].off < t[i].off + t[i].len) {
				qcow2_set_err(s, err, errlen, "qcow2 header: the %s overlaps "
					      "the %s", t[j].what, t[i].what);
				return -EINVAL;
			}
	return 0;
}

static int l1_read(struct qcow2 *s, char *err, size_t errlen)
{
	uint64_t bytes = (uint64_t)s->l1_size * 8;
	int ret;

	s->l1 = malloc(bytes ? bytes : 8);
	if (!s->l1)
		return -ENOMEM;
	if (!bytes)
		return 0;
	ret = blk_pread(s->file, s->l1_offset, s->l1, bytes);
	if (ret < 0) {
		qcow2_set_err(s, err, errlen, "cannot read the L1 table: %s", strerror(-ret));
		return ret;
	}
	for (uint32_t i = 0; i < s->l1_size; i++)
		s->l1[i] = be64toh(s->l1[i]);
	return 0;
}

static void qcow2_free_state(struct qcow2 *s)
{
	if (!s)
		return;
	qcow2_cache_destroy(&s->l2_cache);
	qcow2_cache_destroy(&s->rb_cache);
	qcow2_snapshots_free(s);
	free(s->l1);
	free(s->reftable);
	free(s->pending);
	free(s->alloc_busy);
	free(s->header_tail);
	free(s->backing_file);
	free(s->backing_format);
	for (unsigned i = 0; i < s->nexts; i++)
		free(s->exts[i].data);
	free(s->exts);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->track_lock);
	pthread_cond_destroy(&s->track_cond);
	free(s);
}

/* Writable open: what QEMU does before the first write (autoclear bits,
 * dirty-image repair). */
static int open_writable(struct qcow2 *s, char *err, size_t errlen)
{
	int ret;

	if (s->incompat & QCOW2_INCOMPAT_CORRUPT) {
		s->corrupt = true;
		log_warn("%s: qcow2 image is marked corrupt: writes are refused until "
			 "`drover-img check -r all` repairs it", s->b->filename);
	}
	if (s->autoclear) {
		s->autoclear = 0;
		ret = qcow2_header_write(s);
		if (ret < 0) {
			qcow2_set_err(s, err, errlen, "cannot clear autoclear feature bits: %s",
				      strerror(-ret));
			return ret;
		}
	}
	if (s->incompat & QCOW2_INCOMPAT_DIRTY) {
		struct blk_check_result res;
		memset(&res, 0, sizeof(res));
		ret = qcow2_check_locked(s, BLK_CHECK_FIX_LEAKS | BLK_CHECK_FIX_ERRORS, &res);
		uint64_t left = res.corruptions;
		blk_check_result_free(&res);
		if (ret < 0 || left) {
			qcow2_set_err(s, err, errlen, "image was not closed cleanly and could "
				      "not be repaired (%s)", ret < 0 ? strerror(-ret)
								      : "corruptions remain");
			return ret < 0 ? ret : -EIO;
		}
		ret = mark_clean(s);
		if (ret < 0)
			return ret;
	}
	s->lazy = s->version >= 3 && (s->compat & QCOW2_COMPAT_LAZY_REFCOUNTS);
	return 0;
}

static int qcow2_open(struct blk *b, const struct blk_open_opts *o, char *err, size_t errlen)
{
	struct qcow2 *s = calloc(1, sizeof(*s));
	int ret;

	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	pthread_mutex_init(&s->track_lock, NULL);
	pthread_cond_init(&s->track_cond, NULL);
	s->b = b;
	s->file = b->file;
	s->file_size = blk_size(b->file);

	ret = header_read(s, err, errlen);
	if (ret < 0)
		goto err_free;
	qcow2_derive_layout(s, err, errlen);
	ret = validate_tables(s, err, errlen);
	if (ret < 0)
		goto err_free;
	ret = l1_read(s, err, errlen);
	if (ret < 0)
		goto err_free;
	ret = qcow2_refcount_init(s, err, errlen);
	if (ret < 0)
		goto err_free;
	uint64_t l2_n = (4u << 20) / s->cluster_size;
	if (l2_n > s->l1_size)
		l2_n = s->l1_size;
	if (l2_n < 8)
		l2_n = 8;
	if (l2_n > 1024)
		l2_n = 1024;
	ret = qcow2_cache_init(&s->l2_cache, "L2 table", (unsigned)l2_n, s->cluster_size,
			       qcow2_l2_writeback);
	if (ret < 0)
		goto err_free;
	ret = qcow2_snapshots_read(s, err, errlen);
	if (ret < 0)
		goto err_free;

	b->opaque = s;
	b->size = s->size;
	b->request_alignment = 1;
	if (!b->readonly) {
		ret = open_writable(s, err, errlen);
		if (ret < 0)
			goto err_detach;
	}
	if (s->backing_file) {
		if (o && o->no_backing) {
			s->no_backing = true;
			ret = blk_set_backing_name(b, s->backing_file, s->backing_format);
			if (ret < 0)
				goto err_detach;
		} else {
			ret = blk_open_backing(b, s->backing_file, s->backing_format, &b->backing,
					       err, errlen);
			if (ret < 0)
				goto err_detach;
		}
	}
	return 0;

err_detach:
	b->opaque = NULL;
err_free:
	if (ret == -ENOMEM && err && errlen && !err[0])
		qcow2_set_err(s, err, errlen, "out of memory opening the qcow2 image");
	qcow2_free_state(s);
	return ret;
}

static int qcow2_flush(struct blk *b)
{
	struct qcow2 *s = qcow2_state(b);
	int ret;

	pthread_mutex_lock(&s->lock);
	ret = qcow2_meta_flush(s);
	pthread_mutex_unlock(&s->lock);
	return ret;
}

static void qcow2_close(struct blk *b)
{
	struct qcow2 *s = qcow2_state(b);

	if (!s)
		return;
	if (!b->readonly) {
		pthread_mutex_lock(&s->lock);
		/* Twice: the first may queue refcount writes of freed clusters. */
		int ret = qcow2_meta_flush(s);
		if (ret == 0)
			ret = qcow2_meta_flush(s);
		if (ret == 0)
			ret = qcow2_cache_write_all(s, &s->rb_cache);
		if (ret == 0)
			ret = qcow2_file_flush(s);
		if (ret == 0 && s->dirty_set)
			ret = mark_clean(s);
		if (ret < 0)
			log_error("%s: qcow2: metadata not fully written at close: %s",
				  b->filename, strerror(-ret));
		pthread_mutex_unlock(&s->lock);
	}
	qcow2_free_state(s);
	b->opaque = NULL;
}

static int qcow2_probe(const uint8_t *buf, size_t len)
{
	if (len >= 4 && buf[0] == 'Q' && buf[1] == 'F' && buf[2] == 'I' && buf[3] == 0xfb)
		return 100;
	return 0;
}

static int qcow2_change_backing(struct blk *b, const char *backing_file,
				const char *backing_format, char *err, size_t errlen)
{
	struct qcow2 *s = qcow2_state(b);
	char *old_file, *old_fmt, *new_file = NULL, *new_fmt = NULL;
	int ret;

	if (backing_file && strlen(backing_file) > QCOW2_MAX_BACKING_NAME) {
		qcow2_set_err(s, err, errlen, "backing file name longer than %u bytes",
			      QCOW2_MAX_BACKING_NAME);
		return -ENAMETOOLONG;
	}
	if (backing_file && *backing_file && !(new_file = strdup(backing_file)))
		return -ENOMEM;
	if (new_file && backing_format && !(new_fmt = strdup(backing_format))) {
		free(new_file);
		return -ENOMEM;
	}
	pthread_mutex_lock(&s->lock);
	qcow2_excl_begin(s);
	old_file = s->backing_file;
	old_fmt = s->backing_format;
	s->backing_file = new_file;
	s->backing_format = new_fmt;
	ret = qcow2_meta_flush(s);
	if (ret == 0)
		ret = qcow2_header_write(s);
	if (ret == 0)
		ret = qcow2_file_flush(s);
	if (ret < 0) {
		s->backing_file = old_file;
		s->backing_format = old_fmt;
		old_file = new_file;
		old_fmt = new_fmt;
		qcow2_set_err(s, err, errlen, "cannot record the backing file: %s",
			      ret == -ENOSPC ? "the header cluster has no room for it"
					     : strerror(-ret));
	}
	free(old_file);
	free(old_fmt);
	qcow2_excl_end(s);
	pthread_mutex_unlock(&s->lock);
	return ret;
}

static int64_t qcow2_allocated_size(struct blk *b)
{
	return blk_allocated_size(b->file);
}

static uint32_t qcow2_cluster_size_of(const struct blk *b)
{
	const struct qcow2 *s = qcow2_state(b);
	return s ? s->cluster_size : 0;
}

static void qcow2_info(struct blk *b, json_t *info)
{
	struct qcow2 *s = qcow2_state(b);
	json_t *data = json_object();
	json_t *fs = json_object();

	pthread_mutex_lock(&s->lock);
	json_object_set_new(info, "cluster-size", json_integer(s->cluster_size));
	json_object_set_new(info, "dirty-flag",
			    json_boolean((s->incompat & QCOW2_INCOMPAT_DIRTY) && !s->dirty_set));
	json_object_set_new(data, "compat", json_string(s->version >= 3 ? "1.1" : "0.10"));
	json_object_set_new(data, "compression-type", json_string("zlib"));
	if (s->version >= 3) {
		json_object_set_new(data, "lazy-refcounts",
				    json_boolean(s->compat & QCOW2_COMPAT_LAZY_REFCOUNTS));
	}
	json_object_set_new(data, "refcount-bits", json_integer(1 << s->refcount_order));
	if (s->version >= 3) {
		json_object_set_new(data, "corrupt",
				    json_boolean((s->incompat & QCOW2_INCOMPAT_CORRUPT) ||
						 s->corrupt));
		json_object_set_new(data, "extended-l2", json_boolean(s->ext_l2));
	}
	json_object_set_new(fs, "type", json_string("qcow2"));
	json_object_set_new(fs, "data", data);
	json_object_set_new(info, "format-specific", fs);
	if (s->backing_file) {
		json_object_set_new(info, "backing-filename", json_string(s->backing_file));
		char *full = blk_backing_path(b->filename, s->backing_file);
		if (full) {
			json_object_set_new(info, "full-backing-filename", json_string(full));
			free(full);
		}
		if (s->backing_format)
			json_object_set_new(info, "backing-filename-format",
					    json_string(s->backing_format));
	}
	if (s->nb_snapshots) {
		json_t *arr = json_array();
		for (uint32_t i = 0; i < s->nb_snapshots; i++) {
			const struct qcow2_snapshot *sn = &s->snaps[i];
			json_t *o = json_object();
			json_object_set_new(o, "id", json_string(sn->id));
			json_object_set_new(o, "name", json_string(sn->name));
			json_object_set_new(o, "vm-state-size", json_integer((json_int_t)sn->vm_state_size));
			json_object_set_new(o, "date-sec", json_integer(sn->date_sec));
			json_object_set_new(o, "date-nsec", json_integer(sn->date_nsec));
			json_object_set_new(o, "vm-clock-sec",
					    json_integer((json_int_t)(sn->vm_clock_nsec / 1000000000ull)));
			json_object_set_new(o, "vm-clock-nsec",
					    json_integer((json_int_t)(sn->vm_clock_nsec % 1000000000ull)));
			if (sn->icount != UINT64_MAX)
				json_object_set_new(o, "icount", json_integer((json_int_t)sn->icount));
			json_array_append_new(arr, o);
		}
		json_object_set_new(info, "snapshots", arr);
	}
	pthread_mutex_unlock(&s->lock);
}

const struct blk_driver blk_driver_qcow2 = {
	.name = "qcow2",
	.probe = qcow2_probe,
	.open = qcow2_open,
	.close = qcow2_close,
	.create = qcow2_create,
	.preadv = qcow2_preadv,
	.pwritev = qcow2_pwritev,
	.flush = qcow2_flush,
	.discard = qcow2_discard,
	.make_empty = qcow2_make_empty,
	.write_zeroes = qcow2_write_zeroes,
	.block_status = qcow2_block_status,
	.truncate = qcow2_truncate,
	.pwrite_compressed = qcow2_pwrite_compressed,
	.allocated_size = qcow2_allocated_size,
	.snapshot_list = qcow2_snapshot_list,
	.snapshot_create = qcow2_snapshot_create,
	.snapshot_apply = qcow2_snapshot_apply,
	.snapshot_delete = qcow2_snapshot_delete,
	.check = qcow2_check,
	.change_backing = qcow2_change_backing,
	.info = qcow2_info,
	.cluster_size = qcow2_cluster_size_of,
	.aio_submit = qcow2_aio_submit,
};
