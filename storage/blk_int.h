/* The driver side of the block layer: what a driver fills in, and the
 * helpers drivers share. Read blk.h first.
 *
 * Contract for every driver (a NULL verb means "not supported": the layer
 * returns -ENOTSUP, except where noted):
 *  - open: set b->size, b->request_alignment (default 1), and for a format
 *    driver open what it needs through b->file (already opened by the layer)
 *    and its backing chain with blk_open_backing(). A failed open frees
 *    everything it allocated and leaves b->opaque NULL.
 *  - preadv/pwritev/flush/discard/write_zeroes: thread-safe; the layer has
 *    checked bounds (off + len <= size) and read-only state before calling.
 *    preadv must fill the whole iovec (zeroes past the end of a protocol
 *    file). pwritev with BLK_WRITE_FUA is durable on return. NULL
 *    write_zeroes: the layer writes a zero buffer. NULL discard: no-op.
 *  - flush: make everything written so far durable (the layer skips it for
 *    cache=unsafe and calls the file's flush after a format's flush).
 *  - block_status: NULL means DATA|ALLOCATED for the whole range.
 *  - aio_submit: optional native asynchronous path; without it the layer
 *    runs the synchronous verb on a worker thread and completes the request
 *    on the context. A driver may forward a request to its child's
 *    aio_submit (raw does) after adjusting it.
 *  - create: make a new image at path (format drivers create the file
 *    through the protocol driver's create first); remove it again on error.
 *  - close: free everything; the layer then closes b->file and b->backing. */
#ifndef DROVER_BLK_INT_H
#define DROVER_BLK_INT_H

#include <sys/types.h>

#include "blk.h"

struct blk_driver {
	const char *name;
	bool protocol;                 /* reaches storage itself (file, nfs, ...) */
	/* Formats: 0..100, how sure the driver is that a file starting with buf
	 * is in its format (raw answers 1). */
	int (*probe)(const uint8_t *buf, size_t len);
	/* Protocols: whether this driver serves the name ("nfs://..."); the
	 * file driver serves what no other protocol claims. */
	bool (*handles)(const char *filename);

	int (*open)(struct blk *b, const struct blk_open_opts *o, char *err, size_t errlen);
	void (*close)(struct blk *b);
	int (*create)(const char *path, const struct blk_create_opts *o, char *err,
		      size_t errlen);

	int (*preadv)(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt);
	int (*pwritev)(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
		       unsigned flags);
	int (*flush)(struct blk *b);
	int (*discard)(struct blk *b, uint64_t off, uint64_t len);
	int (*write_zeroes)(struct blk *b, uint64_t off, uint64_t len, unsigned flags);
	int (*block_status)(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum,
			    unsigned *status, uint64_t *map, struct blk **map_node);
	int (*truncate)(struct blk *b, uint64_t size, enum blk_prealloc prealloc, char *err,
			size_t errlen);
	int (*pwrite_compressed)(struct blk *b, uint64_t off, const void *buf, size_t len);
	int64_t (*allocated_size)(struct blk *b);

	int (*snapshot_list)(struct blk *b, struct blk_snapshot_info **out, unsigned *n);
	int (*snapshot_create)(struct blk *b, const char *name, char *err, size_t errlen);
	int (*snapshot_apply)(struct blk *b, const char *name_or_id, char *err, size_t errlen);
	int (*snapshot_delete)(struct blk *b, const char *name_or_id, char *err,
			       size_t errlen);
	int (*check)(struct blk *b, unsigned fix, struct blk_check_result *res);
	int (*make_empty)(struct blk *b);
	int (*change_backing)(struct blk *b, const char *backing_file,
			      const char *backing_format, char *err, size_t errlen);
	/* Adds the driver's fields to the info object blk_info() built. */
	void (*info)(struct blk *b, json_t *info);
	uint32_t (*cluster_size)(const struct blk *b);

	int (*aio_submit)(struct blk *b, struct blk_aio *a, struct blk_req *req);
};

struct blk {
	const struct blk_driver *drv;
	void *opaque;                  /* the driver's state */
	char *filename;                /* as given (backing: as resolved) */
	struct blk *file;              /* format node: its protocol node */
	struct blk *backing;           /* format node: its backing node, or NULL */
	uint64_t size;
	uint32_t request_alignment;
	bool readonly;
	enum blk_cache cache;
	unsigned chain_depth;          /* 0 for the top image */
	bool delete_on_close;          /* snapshot=on overlays */
	dev_t dev;                     /* identity of the protocol file (loops) */
	ino_t ino;
	/* Added with the layer's core (storage/blk.c): */
	struct blk *overlay;           /* the node whose backing this is, or NULL */
	bool force_share;              /* opened without the image lock (and its chain) */
	bool probed_raw;               /* raw by probing, not by name: block-0 writes that
					* would make it probe as another format fail */
	char *backing_name;            /* backing file as the image records it, or NULL */
	char *backing_fmt;             /* its format as recorded, or NULL */
};

/* Drivers known to the layer (storage/drivers.c lists them). */
extern const struct blk_driver blk_driver_file;
extern const struct blk_driver blk_driver_raw;
extern const struct blk_driver blk_driver_qcow2;
const struct blk_driver *blk_driver_by_name(const char *name);
const struct blk_driver *blk_protocol_for(const char *filename);
/* The i-th linked driver (protocols first, then formats), NULL past the
 * end: probing walks it. */
const struct blk_driver *blk_driver_nth(size_t i);

/* Opens a format node's backing file: name as recorded in the image
 * (relative to the directory of `of`), fmt or NULL to probe, read-only,
 * with the cache mode of `of`; fails on loops and chains deeper than
 * BLK_MAX_CHAIN. */
int blk_open_backing(struct blk *of, const char *name, const char *fmt, struct blk **out,
		     char *err, size_t errlen);
/* Resolves a backing file name relative to the image that records it;
 * malloc'd. */
char *blk_backing_path(const char *image, const char *backing);

/* Asynchronous plumbing for drivers with a native path (file: io_uring). */
struct io_uring;
/* The context's ring, or NULL if this host has no io_uring (then the
 * driver falls back to the synchronous path: return -ENOTSUP from
 * aio_submit and the layer uses a worker). */
struct io_uring *blk_aio_ring(struct blk_aio *a);
/* Marks req in flight on the ring: the driver set req as the SQE's
 * user_data; the layer reaps the CQE and calls done. */
void blk_aio_ring_added(struct blk_aio *a, struct blk_req *req);
/* Completes a request from any thread (worker, driver callback). */
void blk_aio_complete(struct blk_aio *a, struct blk_req *req, int ret);

/* Sums an iovec. */
size_t blk_iov_size(const struct iovec *iov, int iovcnt);

/* ---- added with the layer's core ---- */

/* Records the backing file named in b's image (blk_info shows it).
 * blk_open_backing calls it; a driver opened with no_backing calls it
 * itself. 0 or -ENOMEM. */
int blk_set_backing_name(struct blk *b, const char *name, const char *fmt);
/* A protocol node's size follows its furthest write: drivers completing
 * writes outside the synchronous verbs (ring completions) call this. */
void blk_size_grow(struct blk *b, uint64_t end);

/* A driver that must see its ring completion before the caller does (to
 * finish a short transfer, to release a lock) puts the request on the ring
 * with a hook: it runs on the reaping thread with the CQE's result and
 * returns the request's result, or BLK_AIO_HANDED_ON after passing the
 * request on (blk_aio_offload, or the ring again). */
#define BLK_AIO_HANDED_ON 1
typedef int blk_ring_hook(struct blk_aio *a, struct blk_req *req, int res);
void blk_aio_ring_added_hook(struct blk_aio *a, struct blk_req *req, blk_ring_hook *hook);
/* Runs fn(req) on a worker thread (fn NULL: req's synchronous verb on
 * req->node) and completes req on a with its result. 0 or -errno.
 * Request fields: priv[0] and priv[1] belong to aio.c; priv[2] and priv[3]
 * to the driver that put the request on the ring. */
typedef int blk_req_fn(struct blk_req *req);
int blk_aio_offload(struct blk_aio *a, struct blk_req *req, blk_req_fn *fn);

/* A driver that splits an accepted request into n child requests of its
 * own on the same context (qcow2: one per host extent) puts each child on
 * its protocol node's native path (child->drv->aio_submit) or
 * blk_aio_offload. The parent's submission counted one request in flight;
 * the driver counts each further child with blk_aio_count_child (owning
 * thread; no depth bound: the parent was admitted). Children complete
 * through blk_aio_reap like any request; the last child's done callback
 * ends the parent with blk_aio_complete_parent, which runs the parent's
 * done at once (no second trip through the eventfd) and may only be called
 * from a child's done callback on the owning thread. */
void blk_aio_count_child(struct blk_aio *a);
void blk_aio_complete_parent(struct blk_aio *a, struct blk_req *req, int ret);

#endif
