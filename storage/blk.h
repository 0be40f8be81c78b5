/* drover's block layer: one small table of verbs per driver, as kvmtool's
 * disk_image_operations and QEMU's BlockDriver, so that the VMM's virtio-blk
 * and drover-img never know what is behind a disk.
 *
 * A disk is a chain of nodes (struct blk):
 *
 *     qcow2 (format) --file--> file (protocol)        the image
 *       \--backing--> qcow2 --file--> file            its backing chain
 *                        \--backing--> raw --file--> file
 *
 * Format drivers (raw, qcow2) sit on a protocol node (b->file); protocol
 * drivers (file today; nfs, iscsi, lvmap later) reach the storage. New
 * drivers slot in beside file without touching qcow2 or virtio-blk.
 *
 * Two ways in:
 *  - synchronous verbs (blk_preadv, blk_pwritev, blk_flush, ...), callable
 *    from several threads at once; drover-img and format drivers use them;
 *  - asynchronous requests (blk_aio_submit) completed on a context that one
 *    thread owns (struct blk_aio: io_uring for the file driver; a worker pool
 *    running the synchronous verbs for drivers without a native submit);
 *    the VMM's I/O threads use them, so no vCPU ever blocks on a disk.
 *
 * Conventions: offsets and lengths in bytes; every call returns 0 (or a
 * count) or a negative errno; calls that can fail on user input take
 * (char *err, size_t errlen) and write one sentence naming the file and the
 * problem ("disk.qcow2: qcow2 header: cluster_bits 40 out of range"). */
#ifndef DROVER_BLK_H
#define DROVER_BLK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <jansson.h>

struct blk;
struct blk_aio;
struct blk_driver;

/* ---- cache modes, with QEMU's meaning ---- */
enum blk_cache {
	BLK_CACHE_WRITEBACK,     /* host page cache; guest flushes reach the disk */
	BLK_CACHE_NONE,          /* O_DIRECT; guest flushes reach the disk */
	BLK_CACHE_WRITETHROUGH,  /* every write durable before it completes */
	BLK_CACHE_DIRECTSYNC,    /* O_DIRECT and writethrough */
	BLK_CACHE_UNSAFE,        /* flushes ignored */
};

/* Parses "none", "writeback", "writethrough", "directsync", "unsafe". */
int blk_cache_parse(const char *s, enum blk_cache *out);
const char *blk_cache_name(enum blk_cache c);

enum blk_prealloc {
	BLK_PREALLOC_OFF,
	BLK_PREALLOC_METADATA,   /* qcow2: all metadata allocated up front */
	BLK_PREALLOC_FALLOC,     /* fallocate() the space */
	BLK_PREALLOC_FULL,       /* write zeroes over it */
};
int blk_prealloc_parse(const char *s, enum blk_prealloc *out);
const char *blk_prealloc_name(enum blk_prealloc p);

/* ---- opening ---- */
struct blk_open_opts {
	const char *format;      /* "raw", "qcow2", or NULL: probe the contents */
	enum blk_cache cache;
	bool readonly;
	bool snapshot;           /* writes go to a temporary qcow2 overlay that is
				  * deleted at close; the image is opened read-only */
	bool no_backing;         /* open a qcow2 without its backing chain (info,
				  * rebase -u); reads of unallocated clusters fail */
	bool force_share;        /* do not take the image lock (info on a busy image) */
};

/* Opens path with a format driver on top of the protocol driver for it.
 * Backing files are opened read-only, relative names taken relative to the
 * image's directory; loops and chains deeper than BLK_MAX_CHAIN are errors.
 * Writable images are locked (fcntl OFD lock) against a second writer. */
#define BLK_MAX_CHAIN 1024
int blk_open(struct blk **out, const char *path, const struct blk_open_opts *o,
	     char *err, size_t errlen);
void blk_close(struct blk *b);

/* ---- what a node is ---- */
uint64_t blk_size(const struct blk *b);              /* virtual size in bytes */
const char *blk_filename(const struct blk *b);
const char *blk_format(const struct blk *b);          /* driver name: "qcow2", "raw", "file" */
bool blk_readonly(const struct blk *b);
enum blk_cache blk_cache_mode(const struct blk *b);
struct blk *blk_file(const struct blk *b);            /* protocol child, or NULL */
struct blk *blk_backing(const struct blk *b);         /* backing node, or NULL */
/* Smallest I/O the node takes without a read-modify-write (512 or 4096 with
 * cache=none); offsets, lengths and buffer addresses of that alignment go
 * straight through. */
uint32_t blk_request_alignment(const struct blk *b);
/* Whether the node can discard / write zeroes efficiently. */
bool blk_can_discard(const struct blk *b);

/* ---- synchronous verbs (thread-safe) ---- */
int blk_preadv(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt);
int blk_pwritev(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
		unsigned flags);
int blk_pread(struct blk *b, uint64_t off, void *buf, size_t len);
int blk_pwrite(struct blk *b, uint64_t off, const void *buf, size_t len, unsigned flags);
#define BLK_WRITE_FUA        0x1   /* durable before returning (writethrough) */
int blk_flush(struct blk *b);
/* Discard is advisory: data may read back as before, zero, or anything. */
int blk_discard(struct blk *b, uint64_t off, uint64_t len);
/* Reads back as zeroes afterwards. BLK_ZERO_MAY_UNMAP lets the driver free
 * the space (qcow2 zero clusters, holes in a file). */
#define BLK_ZERO_MAY_UNMAP   0x2
int blk_write_zeroes(struct blk *b, uint64_t off, uint64_t len, unsigned flags);

/* Where the data of [off, off+len) is: returns 0 and sets *pnum (> 0, at most
 * len) to the length of the run starting at off that shares *status; *map
 * and *map_node (when BLK_STATUS_OFFSET_VALID) say where the data sits in a
 * protocol node. A node without the information reports DATA|ALLOCATED. */
#define BLK_STATUS_DATA          0x01  /* reads return data (maybe zeroes) */
#define BLK_STATUS_ZERO          0x02  /* reads return zeroes */
#define BLK_STATUS_ALLOCATED     0x04  /* this node (not its backing) decides */
#define BLK_STATUS_OFFSET_VALID  0x08
#define BLK_STATUS_COMPRESSED    0x10
int blk_block_status(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum,
		     unsigned *status, uint64_t *map, struct blk **map_node);
/* The same through the backing chain: ALLOCATED means somewhere in the chain
 * above (and including) `base`' child; base NULL means the whole chain. */
int blk_block_status_above(struct blk *b, struct blk *base, uint64_t off, uint64_t len,
			   uint64_t *pnum, unsigned *status, int *depth);

/* Grows or shrinks the virtual size (shrinking a qcow2 needs the tail to be
 * unused). */
int blk_truncate(struct blk *b, uint64_t size, enum blk_prealloc prealloc, char *err,
		 size_t errlen);
/* Writes one whole cluster compressed (qcow2; -ENOTSUP elsewhere). len is the
 * cluster size, or less for the last cluster of the image. */
int blk_pwrite_compressed(struct blk *b, uint64_t off, const void *buf, size_t len);
/* Cluster size of a format node (qcow2), or 0. */
uint32_t blk_cluster_size(const struct blk *b);

/* ---- creating images ---- */
struct blk_create_opts {
	const char *format;            /* "raw" or "qcow2" (required) */
	uint64_t size;                 /* virtual size; 0 with a backing file: its size */
	const char *backing_file;      /* qcow2 */
	const char *backing_format;    /* qcow2: recorded in the header extension */
	uint32_t cluster_size;         /* qcow2: 512..2M, power of two; 0: 64 KiB */
	enum blk_prealloc prealloc;
	int compat;                    /* qcow2: 2 (0.10) or 3 (1.1); 0: 3 */
	bool lazy_refcounts;           /* qcow2 v3 */
	unsigned refcount_bits;        /* qcow2: 1..64, power of two; 0: 16 */
	bool extended_l2;              /* qcow2 v3 subclusters (optional support) */
};
/* Creates (or truncates) path. On error nothing is left behind that the call
 * created. */
int blk_create(const char *path, const struct blk_create_opts *o, char *err, size_t errlen);

/* ---- format-specific verbs, reached through the driver table ---- */
struct blk_snapshot_info {
	char id[32];
	char name[256];
	uint64_t vm_state_size;
	uint64_t date_sec, date_nsec;
	uint64_t vm_clock_nsec;
	uint64_t disk_size;
	uint64_t icount;               /* UINT64_MAX: none */
};
/* -ENOTSUP for formats without internal snapshots. list: *out is malloc'd. */
int blk_snapshot_list(struct blk *b, struct blk_snapshot_info **out, unsigned *n);
int blk_snapshot_create(struct blk *b, const char *name, char *err, size_t errlen);
int blk_snapshot_apply(struct blk *b, const char *name_or_id, char *err, size_t errlen);
int blk_snapshot_delete(struct blk *b, const char *name_or_id, char *err, size_t errlen);

struct blk_check_result {
	uint64_t corruptions, leaks, check_errors;
	uint64_t corruptions_fixed, leaks_fixed;
	uint64_t allocated_clusters, total_clusters, fragmented_clusters, compressed_clusters;
	uint64_t image_end_offset;
	char *report;                  /* malloc'd human-readable findings, or NULL */
};
#define BLK_CHECK_FIX_LEAKS  0x1
#define BLK_CHECK_FIX_ERRORS 0x2
/* -ENOTSUP for formats with nothing to check (raw). */
int blk_check(struct blk *b, unsigned fix, struct blk_check_result *res);
void blk_check_result_free(struct blk_check_result *res);

/* Makes every cluster of a format node unallocated again, so that reads
 * fall through to its backing file (commit empties the top image this way;
 * internal snapshots keep their clusters). -ENOTSUP for formats that cannot
 * (raw). */
int blk_make_empty(struct blk *b);

/* Changes the backing file recorded in the image (rebase -u, commit). */
int blk_change_backing(struct blk *b, const char *backing_file, const char *backing_format,
		       char *err, size_t errlen);
/* What drover-img info shows, in qemu-img's JSON names ("format",
 * "virtual-size", "actual-size", "cluster-size", "backing-filename",
 * "format-specific": {...}, "snapshots": [...], "dirty-flag"). New reference. */
json_t *blk_info(struct blk *b);
/* Bytes the node uses on the host (allocated blocks of the file). */
int64_t blk_allocated_size(struct blk *b);

/* ---- asynchronous requests ---- */
enum blk_op { BLK_OP_READ, BLK_OP_WRITE, BLK_OP_FLUSH, BLK_OP_DISCARD, BLK_OP_WRITE_ZEROES };

struct blk_req {
	enum blk_op op;
	uint64_t offset;
	uint64_t len;                  /* DISCARD, WRITE_ZEROES; READ/WRITE: sum of iov */
	struct iovec *iov;             /* READ, WRITE: caller's, untouched until done */
	int iovcnt;
	unsigned flags;                /* BLK_WRITE_FUA, BLK_ZERO_MAY_UNMAP */
	/* Runs on the thread that calls blk_aio_reap; ret is 0 or -errno. */
	void (*done)(struct blk_req *req, int ret);
	void *opaque;
	/* private to the block layer */
	struct blk *node;
	struct blk_req *next;
	int ret;
	void *priv[4];
};

/* A completion context owned by one thread: it submits there and reaps
 * there. depth bounds the requests in flight (further submits get -EAGAIN). */
int blk_aio_new(struct blk_aio **out, unsigned depth, char *err, size_t errlen);
/* The same without io_uring: every request runs on the worker threads
 * (QEMU's aio=threads). */
int blk_aio_new_threads(struct blk_aio **out, unsigned depth, char *err, size_t errlen);
void blk_aio_free(struct blk_aio *a);      /* after blk_aio_drain */
/* Readable (POLLIN) when completions are waiting: watch it, then reap. */
int blk_aio_fd(const struct blk_aio *a);
/* Runs the done callbacks of finished requests; returns how many. */
unsigned blk_aio_reap(struct blk_aio *a);
/* 0: done will be called exactly once, later, from blk_aio_reap. -errno: it
 * will not. */
int blk_aio_submit(struct blk *b, struct blk_aio *a, struct blk_req *req);
/* Waits for every request submitted on a (running their callbacks). */
void blk_aio_drain(struct blk_aio *a);
unsigned blk_aio_in_flight(const struct blk_aio *a);

#endif
