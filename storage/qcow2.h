/* qcow2 format driver: internal interface between its files.
 *
 *   qcow2.c           open/close, header and extensions, info, driver table
 *   qcow2_cache.c     L2 table and refcount block caches
 *   qcow2_refcount.c  refcounts, cluster allocation, metadata flush order
 *                     (the crash-safety invariants are written at its top)
 *   qcow2_cluster.c   guest reads/writes through L1/L2, zeroes, discard,
 *                     block status, compressed clusters
 *   qcow2_snapshot.c  internal snapshots
 *   qcow2_check.c     consistency check and repair
 *   qcow2_create.c    create, truncate, preallocation
 *
 *   qcow2_aio.c       the asynchronous fast path (reads, in-place writes)
 *
 * Locking: struct qcow2's lock covers every field below and both caches.
 * Guest data moves to and from b->file outside it, between qcow2_io_begin()
 * and qcow2_io_end(); operations that rewrite whole tables (snapshots,
 * check, truncate, header changes) run between qcow2_excl_begin() and
 * qcow2_excl_end(), when no data I/O is in flight. An asynchronous request
 * counts in s->aio_busy (qcow2_aio_begin) from its submission until its
 * completion runs; qcow2_excl_begin waits for those too.
 *
 * Data I/O in flight: every transfer of guest data to or from a host
 * cluster of this image that runs without the lock (synchronous or on the
 * ring) is listed in s->inflight from the moment it was mapped, under the
 * lock, until it has finished. Host clusters it touches are not freed
 * meanwhile (qcow2_refcount.c, invariant (9)).
 *
 * s->track_lock guards s->inflight and s->aio_busy. It is a leaf: held for
 * no I/O and no other lock, taken after s->lock when both are. The thread
 * that owns an aio context completes requests with it alone and never
 * waits for s->lock (it try-locks at submission): a holder of s->lock may
 * wait for ring I/O that only that thread reaps (the file's write lock, an
 * excl operation), so the reaper must not wait for such a holder. */
#ifndef DROVER_QCOW2_H
#define DROVER_QCOW2_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "blk_int.h"

#define QCOW2_MAGIC              0x514649fbu     /* "QFI\xfb" */
#define QCOW2_V2_HEADER_LEN      72u
#define QCOW2_V3_HEADER_LEN      104u
#define QCOW2_HEADER_LEN_WRITTEN 112u            /* with compression_type, padded */
#define QCOW2_MIN_CLUSTER_BITS   9u
#define QCOW2_MAX_CLUSTER_BITS   21u
#define QCOW2_MAX_L1_BYTES       (32u << 20)     /* QEMU's limits, so images stay portable */
#define QCOW2_MAX_REFTABLE_BYTES (8u << 20)
#define QCOW2_MAX_SNAPSHOTS      65536u
#define QCOW2_MAX_SNAPTABLE      (64u << 20)
#define QCOW2_MAX_BACKING_NAME   1023u

/* Feature bits. */
#define QCOW2_INCOMPAT_DIRTY       (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT     (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE   (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2       (1ull << 4)
#define QCOW2_INCOMPAT_KNOWN       0x1full
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)

/* Header extensions. */
#define QCOW2_EXT_END            0x00000000u
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE  0x6803f857u
#define QCOW2_EXT_BITMAPS        0x23852875u
#define QCOW2_EXT_CRYPTO         0x0537be77u
#define QCOW2_EXT_DATA_FILE      0x44415441u

/* L1/L2 entries. */
#define QCOW2_OFLAG_COPIED     (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED (1ull << 62)
#define QCOW2_OFLAG_ZERO       (1ull << 0)
#define QCOW2_OFFSET_MASK      0x00fffffffffffe00ull     /* bits 9..55 */
#define QCOW2_L1_RESERVED      0x7f000000000001ffull
#define QCOW2_L2_RESERVED      0x3f000000000001feull      /* standard clusters */
#define QCOW2_REFT_RESERVED    0x00000000000001ffull

/* What a guest cluster (or subcluster) is. */
enum qcow2_ctype {
	QCOW2_UNALLOCATED,     /* backing file, or zeroes */
	QCOW2_ZERO_PLAIN,      /* zeroes, no host cluster */
	QCOW2_ZERO_ALLOC,      /* zeroes, host cluster kept (preallocated) */
	QCOW2_NORMAL,          /* data at host offset */
	QCOW2_COMPRESSED,
};

struct qcow2_cache_entry {
	uint64_t offset;               /* host offset of the table; 0: slot free */
	uint8_t *data;
	uint64_t lru;
	unsigned pins;
	bool dirty;
};

struct qcow2;
struct qcow2_cache {
	const char *what;              /* "L2 table", "refcount block" for errors */
	unsigned n;
	uint32_t table_size;
	uint64_t tick;
	unsigned ndirty;
	struct qcow2_cache_entry *e;
	uint8_t *mem;
	/* Writes one dirty table back; knows what must be durable first. */
	int (*writeback)(struct qcow2 *s, struct qcow2_cache_entry *e);
};

struct qcow2_ext {                     /* header extension kept as found */
	uint32_t type;
	uint32_t len;
	uint8_t *data;
};

struct qcow2_snapshot {
	uint64_t l1_offset;
	uint32_t l1_size;
	char *id, *name;
	uint32_t date_sec, date_nsec;
	uint64_t vm_clock_nsec;
	uint64_t vm_state_size;
	uint64_t disk_size;
	uint64_t icount;               /* UINT64_MAX: none */
	uint32_t extra_len;            /* extra data as found, kept on rewrite */
	uint8_t *extra;
};

struct qcow2_range {                   /* host clusters waiting to be freed */
	uint64_t offset;
	uint64_t len;
};

/* A data transfer between the guest and host bytes [host, host+len) that
 * runs without the lock (see the top of the file). */
struct qcow2_inflight {
	uint64_t host;
	uint64_t len;
	bool write;
	struct qcow2_inflight *prev, *next;
};

struct qcow2 {
	struct blk *b;
	struct blk *file;
	pthread_mutex_t lock;
	pthread_cond_t cond;

	/* header, as on disk (host byte order) */
	uint32_t version;
	uint32_t cluster_bits;
	uint32_t cluster_size;
	uint64_t size;
	uint32_t l1_size;
	uint64_t l1_offset;
	uint64_t reftable_offset;
	uint32_t reftable_clusters;
	uint32_t nb_snapshots;
	uint64_t snapshots_offset;
	uint64_t incompat, compat, autoclear;
	uint32_t refcount_order;
	uint32_t header_length;
	uint8_t compression_type;
	uint8_t *header_tail;          /* v3 header bytes past those we know */
	uint32_t header_tail_len;
	char *backing_file;
	char *backing_format;
	struct qcow2_ext *exts;        /* extensions we do not interpret */
	unsigned nexts;

	/* derived */
	bool ext_l2;
	uint32_t l2_entry_size;        /* 8, or 16 with extended L2 */
	uint32_t l2_bits;              /* log2 of entries per L2 table */
	uint32_t l2_entries;
	uint32_t subcluster_size;      /* extended L2: cluster_size / 32 */
	uint32_t refblock_bits;        /* log2 of entries per refcount block */
	uint64_t refcount_max;
	uint32_t csize_shift;          /* compressed descriptor layout */
	uint64_t csize_mask;
	uint64_t coffset_mask;

	/* live state */
	uint64_t *l1;                  /* l1_size entries, host order */
	uint32_t l1_dirty_lo, l1_dirty_hi;   /* [lo, hi) entries to write; lo==hi: clean */
	uint64_t *reftable;            /* reftable_entries, host order */
	uint64_t reftable_entries;
	struct qcow2_cache l2_cache;
	struct qcow2_cache rb_cache;
	uint64_t free_hint;            /* no free cluster below this index */
	uint64_t avoid_lo, avoid_hi;   /* clusters being allocated: no refcount block there */
	uint64_t file_size;            /* protocol file length as we grew it */
	enum blk_prealloc grow_mode;   /* how the file grows (preallocation) */
	uint64_t compressed_next;      /* byte offset for the next compressed cluster, 0: none */
	struct qcow2_range *pending;   /* freed, applied after the next L2/L1 write */
	unsigned npending, pending_cap;
	struct qcow2_snapshot *snaps;

	/* request tracking (see qcow2_io_begin) */
	unsigned io_busy;
	bool excl;
	/* under track_lock (see the top of the file) */
	pthread_mutex_t track_lock;
	pthread_cond_t track_cond;
	unsigned aio_busy;                   /* asynchronous requests in flight */
	struct qcow2_inflight *inflight;     /* data I/O running without the lock */
	unsigned track_waiters;              /* threads waiting on track_cond */
	uint64_t *alloc_busy;          /* guest clusters being allocated */
	unsigned nalloc_busy, alloc_busy_cap;

	bool lazy;                     /* lazy refcounts in use */
	bool dirty_set;                /* dirty bit written to disk by us */
	bool corrupt;                  /* writes refused */
	bool no_backing;               /* opened without its chain */
};

static inline uint64_t qcow2_align_up(uint64_t x, uint64_t a)
{
	return (x + a - 1) / a * a;
}
static inline struct qcow2 *qcow2_state(const struct blk *b)
{
	return b->opaque;
}
static inline uint64_t qcow2_offset_into_cluster(const struct qcow2 *s, uint64_t off)
{
	return off & (s->cluster_size - 1);
}
static inline uint64_t qcow2_size_to_clusters(const struct qcow2 *s, uint64_t size)
{
	return (size + s->cluster_size - 1) >> s->cluster_bits;
}
/* L1 entries needed for a virtual size. */
static inline uint64_t qcow2_size_to_l1(const struct qcow2 *s, uint64_t size)
{
	uint32_t shift = s->cluster_bits + s->l2_bits;
	return (size + (1ull << shift) - 1) >> shift;
}
static inline uint64_t qcow2_l1_bytes_max_clusters(const struct qcow2 *s, uint64_t l1_size)
{
	return qcow2_size_to_clusters(s, l1_size * 8);
}

/* qcow2.c */
void qcow2_set_err(struct qcow2 *s, char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
int qcow2_header_write(struct qcow2 *s);
int qcow2_header_update_incompat(struct qcow2 *s, uint64_t incompat);
int qcow2_mark_dirty(struct qcow2 *s);
int qcow2_mark_corrupt(struct qcow2 *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int qcow2_derive_layout(struct qcow2 *s, char *err, size_t errlen);
void qcow2_io_begin(struct qcow2 *s);
void qcow2_io_end(struct qcow2 *s);
void qcow2_excl_begin(struct qcow2 *s);
void qcow2_excl_end(struct qcow2 *s);
/* An asynchronous request enters (lock held, no excl operation running)
 * and leaves (lock not needed). */
void qcow2_aio_begin(struct qcow2 *s);
void qcow2_aio_end(struct qcow2 *s);
/* Lists t (caller's memory, until qcow2_inflight_del) as data I/O to
 * [host, host+len) in flight: lock held, so that the mapping it was read
 * from is still current. Deleting does not need the lock. */
void qcow2_inflight_add(struct qcow2 *s, struct qcow2_inflight *t, uint64_t host,
			uint64_t len, bool write);
void qcow2_inflight_del(struct qcow2 *s, struct qcow2_inflight *t);
/* Whether data I/O in flight (only writes: writes_only) touches a host
 * cluster of [off, off+len). */
bool qcow2_inflight_busy(struct qcow2 *s, uint64_t off, uint64_t len, bool writes_only);
/* Waits (lock held, released meanwhile) until no write in flight touches a
 * host cluster of [off, off+len). */
void qcow2_inflight_wait(struct qcow2 *s, uint64_t off, uint64_t len);

/* qcow2_cache.c */
int qcow2_cache_init(struct qcow2_cache *c, const char *what, unsigned n, uint32_t table_size,
		     int (*writeback)(struct qcow2 *, struct qcow2_cache_entry *));
void qcow2_cache_destroy(struct qcow2_cache *c);
/* Pins the table at offset in the cache (read from disk unless fresh: then
 * it is zero-filled) and returns its bytes; qcow2_cache_put unpins. */
int qcow2_cache_get(struct qcow2 *s, struct qcow2_cache *c, uint64_t offset, bool fresh,
		    uint8_t **table);
void qcow2_cache_put(struct qcow2_cache *c, uint8_t *table);
/* The table at offset pinned if the cache holds it; -ENOENT if not (no I/O:
 * the asynchronous path must not block on the disk). */
int qcow2_cache_peek(struct qcow2_cache *c, uint64_t offset, uint8_t **table);
void qcow2_cache_mark_dirty(struct qcow2_cache *c, uint8_t *table);
/* Writes every dirty table (writeback order is the caller's business). */
int qcow2_cache_write_all(struct qcow2 *s, struct qcow2_cache *c);
/* Forgets the table at offset (freed cluster) without writing it. */
void qcow2_cache_discard(struct qcow2_cache *c, uint64_t offset);
/* Forgets everything (after check rewrote tables behind the cache). */
int qcow2_cache_reset(struct qcow2 *s, struct qcow2_cache *c);

/* qcow2_refcount.c */
int qcow2_refcount_init(struct qcow2 *s, char *err, size_t errlen);
int qcow2_refcount_get(struct qcow2 *s, uint64_t cluster, uint64_t *rc);
int qcow2_refcount_set(struct qcow2 *s, uint64_t cluster, uint64_t rc);
int qcow2_refcount_update(struct qcow2 *s, uint64_t offset, uint64_t len, int64_t addend);
int64_t qcow2_alloc_clusters(struct qcow2 *s, uint64_t n);
/* Whether host bytes [off, off+len) hold the header or a table it points to. */
bool qcow2_overlaps_metadata(const struct qcow2 *s, uint64_t off, uint64_t len);
int64_t qcow2_alloc_bytes(struct qcow2 *s, uint32_t len);
int qcow2_free_later(struct qcow2 *s, uint64_t offset, uint64_t len);
int qcow2_meta_flush(struct qcow2 *s);
int qcow2_file_flush(struct qcow2 *s);
int qcow2_ensure_file_size(struct qcow2 *s, uint64_t end);
int qcow2_l2_writeback(struct qcow2 *s, struct qcow2_cache_entry *e);
int qcow2_rb_writeback(struct qcow2 *s, struct qcow2_cache_entry *e);
uint64_t qcow2_rb_entry_get(const struct qcow2 *s, const uint8_t *rb, uint64_t i);
void qcow2_rb_entry_set(const struct qcow2 *s, uint8_t *rb, uint64_t i, uint64_t v);
int qcow2_reftable_write_entry(struct qcow2 *s, uint64_t i);
/* Builds a fresh refcount table and blocks from counts[0..nclusters) (check
 * repair) and switches the header to them. */
int qcow2_refcount_rebuild(struct qcow2 *s, uint64_t *counts, uint64_t nclusters);

/* qcow2_cluster.c */
int qcow2_preadv(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt);
int qcow2_pwritev(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
		  unsigned flags);
int qcow2_discard(struct blk *b, uint64_t off, uint64_t len);
int qcow2_make_empty(struct blk *b);
int qcow2_write_zeroes(struct blk *b, uint64_t off, uint64_t len, unsigned flags);
int qcow2_block_status(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum,
		       unsigned *status, uint64_t *map, struct blk **map_node);
int qcow2_pwrite_compressed(struct blk *b, uint64_t off, const void *buf, size_t len);
enum qcow2_ctype qcow2_classify(const struct qcow2 *s, uint64_t entry);
int qcow2_l2_entry_valid(const struct qcow2 *s, uint64_t entry, uint64_t bitmap);
void qcow2_compressed_range(const struct qcow2 *s, uint64_t entry, uint64_t *off,
			    uint64_t *len);
uint64_t qcow2_l2_get(const struct qcow2 *s, const uint8_t *l2, uint32_t i);
uint64_t qcow2_l2_bitmap(const struct qcow2 *s, const uint8_t *l2, uint32_t i);
void qcow2_l2_set(const struct qcow2 *s, uint8_t *l2, uint32_t i, uint64_t entry,
		  uint64_t bitmap);
int qcow2_l1_set(struct qcow2 *s, uint32_t i, uint64_t entry);
int qcow2_l1_write(struct qcow2 *s);
/* Allocates the host clusters of [off, off+len) without writing data
 * (preallocation=metadata and up). */
int qcow2_preallocate(struct qcow2 *s, uint64_t off, uint64_t len);
/* One run of guest bytes stored contiguously on the host. */
struct qcow2_extent {
	uint64_t host;
	uint64_t len;
	uint64_t skip;                 /* its first byte's offset in the request */
};
/* Under the lock, without I/O: maps [off, off+len) to at most max host
 * extents if the fast path may move its data (a read of data clusters, or
 * a write in place into clusters we own alone) with every L2 table it
 * needs in the cache; -ENOTSUP otherwise (the synchronous path decides). */
int qcow2_map_fast(struct qcow2 *s, bool write, uint64_t off, uint64_t len,
		   struct qcow2_extent *ext, unsigned max, unsigned *n);
int qcow2_iov_slice(const struct iovec *iov, int iovcnt, size_t skip, size_t len,
		    struct iovec *out);

/* qcow2_aio.c */
int qcow2_aio_submit(struct blk *b, struct blk_aio *a, struct blk_req *req);

/* qcow2_snapshot.c */
int qcow2_snapshots_read(struct qcow2 *s, char *err, size_t errlen);
void qcow2_snapshots_free(struct qcow2 *s);
int qcow2_snapshot_list(struct blk *b, struct blk_snapshot_info **out, unsigned *n);
int qcow2_snapshot_create(struct blk *b, const char *name, char *err, size_t errlen);
int qcow2_snapshot_apply(struct blk *b, const char *name_or_id, char *err, size_t errlen);
int qcow2_snapshot_delete(struct blk *b, const char *name_or_id, char *err, size_t errlen);
/* Adds addend to the refcount of every cluster an L1 table reaches. */
int qcow2_tree_refcount_update(struct qcow2 *s, const uint64_t *l1, uint32_t l1_size,
			       int addend);
/* Sets QCOW_OFLAG_COPIED in the active tables exactly where refcount == 1. */
int qcow2_fix_copied_flags(struct qcow2 *s);

/* qcow2_check.c */
int qcow2_check(struct blk *b, unsigned fix, struct blk_check_result *res);
int qcow2_check_locked(struct qcow2 *s, unsigned fix, struct blk_check_result *res);

/* qcow2_create.c */
int qcow2_create(const char *path, const struct blk_create_opts *o, char *err, size_t errlen);
int qcow2_truncate(struct blk *b, uint64_t size, enum blk_prealloc prealloc, char *err,
		   size_t errlen);
int qcow2_grow_l1(struct qcow2 *s, uint64_t min_size);

#endif
