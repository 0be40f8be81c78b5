/* qcow2's asynchronous fast path: reads of data clusters and writes in
 * place into clusters this image owns alone (QCOW_OFLAG_COPIED) are mapped
 * under the lock, without I/O, and their data moves on b->file's ring, one
 * child request per contiguous host extent; the guest's request completes
 * when the last child does. Everything else returns -ENOTSUP and runs the
 * synchronous verbs on a worker: allocating writes and copy on write,
 * compressed, zero and unallocated (backing) clusters anywhere in the
 * request, L2 tables not in the cache, FUA writes (the metadata they rely
 * on must be flushed too), discard, write zeroes, flush.
 *
 * Why the data may move without the lock:
 *  (a) the request counts in s->aio_busy from submission until its
 *      completion runs, so operations that rewrite whole tables (snapshots,
 *      check, truncate: qcow2_excl_begin) wait for it;
 *  (b) its host extents are listed in s->inflight for as long: a discard,
 *      a zeroing or a copy on write that unmaps them meanwhile only queues
 *      the free, and the free waits (invariant (9) in qcow2_refcount.c), so
 *      the bytes never belong to anything else while the I/O runs;
 *  (c) a write in place changes no metadata, so invariants (1)-(8) do not
 *      concern it; it needs QCOW_OFLAG_COPIED (refcount 1, invariant (7)),
 *      which only excl operations take away, and a guest cluster no
 *      allocating write holds (alloc_busy); an allocating write that
 *      rewrites a whole cluster we write into waits for us
 *      (qcow2_inflight_wait);
 *  (d) the owning thread never waits here: it try-locks (a holder of the
 *      lock may wait for ring I/O that only this thread reaps: the file's
 *      write lock, qcow2_excl_begin), reads no table (qcow2_cache_peek),
 *      sends requests to a worker while an excl operation runs, and
 *      completes with s->track_lock alone; and the children are never
 *      left to the worker pool unless the ring refuses one after the
 *      first (which the checks before submitting rule out for the file
 *      driver) or comes back short (extents stop at the end of the file;
 *      a write the disk cuts short is an error case), so a pool full of
 *      threads waiting on (a) or (c) does not stall a child.
 */
#include <errno.h>
#include <limits.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "qcow2.h"

/* More fragments than this take the synchronous path. */
#define MAX_EXTENTS 16

struct aio_part {
	struct blk_req req;            /* the child on b->file */
	struct qcow2_inflight busy;
};

struct aio_req {
	struct qcow2 *s;
	struct blk_aio *a;
	struct blk_req *parent;
	unsigned n;
	unsigned left;                 /* children not completed yet */
	int ret;                       /* the first error */
	struct iovec *slices;          /* the parent's iovec cut per extent (n > 1) */
	struct aio_part part[];
};

static bool iov_aligned(const struct iovec *iov, int cnt, uint32_t align)
{
	if (align <= 1)
		return true;
	for (int i = 0; i < cnt; i++)
		if (((uintptr_t)iov[i].iov_base | iov[i].iov_len) & (align - 1))
			return false;
	return true;
}

/* Whether the protocol node will take every extent on its ring. Extents
 * after the first must not be refused (see (d)): O_DIRECT writes can be,
 * while a read-modify-write holds the file's write lock. */
static bool extents_fit(struct qcow2 *s, struct blk_aio *a, bool write,
			const struct qcow2_extent *ext, unsigned n)
{
	uint32_t align = blk_request_alignment(s->file);
	enum blk_cache c = blk_cache_mode(s->file);

	for (unsigned k = 0; k < n; k++)
		if (align > 1 && ((ext[k].host | ext[k].len) & (align - 1)))
			return false;
	if (n == 1)
		return true;
	if (write && (c == BLK_CACHE_NONE || c == BLK_CACHE_DIRECTSYNC))
		return false;
	return io_uring_sq_space_left(blk_aio_ring(a)) >= n;
}

static void untrack(struct aio_req *r)
{
	for (unsigned k = 0; k < r->n; k++)
		qcow2_inflight_del(r->s, &r->part[k].busy);
	qcow2_aio_end(r->s);
}

static void aio_req_free(struct aio_req *r)
{
	free(r->slices);
	free(r);
}

static void part_done(struct blk_req *child, int ret)
{
	struct aio_req *r = child->opaque;
	struct blk_req *parent = r->parent;
	struct blk_aio *a = r->a;

	if (ret < 0 && !r->ret)
		r->ret = ret;
	if (--r->left)
		return;
	untrack(r);
	ret = r->ret;
	aio_req_free(r);
	blk_aio_complete_parent(a, parent, ret);
}

/* Builds the children; n > 1 cuts the parent's iovec. */
static int make_children(struct aio_req *r, const struct qcow2_extent *ext)
{
	struct blk_req *req = r->parent;
	struct iovec *next;

	if (r->n > 1) {
		r->slices = malloc(sizeof(*r->slices) * ((size_t)req->iovcnt + r->n));
		if (!r->slices)
			return -ENOMEM;
	}
	next = r->slices;
	for (unsigned k = 0; k < r->n; k++) {
		struct blk_req *c = &r->part[k].req;

		*c = (struct blk_req){
			.op = req->op,
			.offset = ext[k].host,
			.len = ext[k].len,
			.iov = req->iov,
			.iovcnt = req->iovcnt,
			.done = part_done,
			.opaque = r,
			.node = r->s->file,
		};
		if (r->n > 1) {
			c->iov = next;
			c->iovcnt = qcow2_iov_slice(req->iov, req->iovcnt, ext[k].skip, ext[k].len,
						    next);
			next += c->iovcnt;
		}
	}
	return 0;
}

/* Maps req and lists its extents in flight; NULL: the synchronous path. */
static struct aio_req *map_and_track(struct qcow2 *s, struct blk_aio *a, struct blk_req *req)
{
	bool write = req->op == BLK_OP_WRITE;
	struct qcow2_extent ext[MAX_EXTENTS];
	struct aio_req *r = NULL;
	unsigned n;

	/* See qcow2.h: a holder of the lock may be waiting for us to reap. */
	if (pthread_mutex_trylock(&s->lock))
		return NULL;
	if (s->excl || (write && s->corrupt))
		goto out;
	if (qcow2_map_fast(s, write, req->offset, req->len, ext, MAX_EXTENTS, &n) < 0 ||
	    !extents_fit(s, a, write, ext, n))
		goto out;
	r = calloc(1, sizeof(*r) + n * sizeof(r->part[0]));
	if (!r)
		goto out;
	*r = (struct aio_req){ .s = s, .a = a, .parent = req, .n = n, .left = n };
	if (make_children(r, ext) < 0) {
		aio_req_free(r);
		r = NULL;
		goto out;
	}
	for (unsigned k = 0; k < n; k++)
		qcow2_inflight_add(s, &r->part[k].busy, ext[k].host, ext[k].len, write);
	qcow2_aio_begin(s);
out:
	pthread_mutex_unlock(&s->lock);
	return r;
}

int qcow2_aio_submit(struct blk *b, struct blk_aio *a, struct blk_req *req)
{
	struct qcow2 *s = qcow2_state(b);
	struct blk *f = s->file;
	bool write = req->op == BLK_OP_WRITE;
	struct aio_req *r;

	if ((req->op != BLK_OP_READ && !write) || (req->flags & BLK_WRITE_FUA))
		return -ENOTSUP;
	if (!blk_aio_ring(a) || !f->drv->aio_submit || req->iovcnt > IOV_MAX ||
	    !iov_aligned(req->iov, req->iovcnt, blk_request_alignment(f)))
		return -ENOTSUP;
	/* Host blocks shared by two clusters: writes stay under the lock. */
	if (write && blk_request_alignment(f) > s->cluster_size)
		return -ENOTSUP;
	r = map_and_track(s, a, req);
	if (!r)
		return -ENOTSUP;
	for (unsigned k = 0; k < r->n; k++) {
		struct blk_req *c = &r->part[k].req;
		int ret = f->drv->aio_submit(f, a, c);

		if (ret < 0 && k == 0) {
			/* nothing is on the ring yet: a worker does it all */
			untrack(r);
			aio_req_free(r);
			return -ENOTSUP;
		}
		if (ret < 0) {
			log_warn("%s: qcow2: the ring refused part of a request (%s); "
				 "a worker does the rest", b->filename, strerror(-ret));
			ret = blk_aio_offload(a, c, NULL);
		}
		if (ret < 0) {
			/* what was submitted completes the request with the error */
			r->ret = ret;
			r->left -= r->n - k;
			break;
		}
		if (k)
			blk_aio_count_child(a);
	}
	return 0;
}
