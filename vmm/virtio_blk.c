/* virtio-blk devices, one per configured disk (see virtio_blk.h).
 *
 * The I/O thread of a disk and the vCPUs meet in three places only:
 *  - the kick eventfds (vCPU/KVM -> thread);
 *  - the run control (d->lock, d->cond): start() and stop() post a new
 *    wanted state and bump d->gen; the thread applies it, and acknowledges
 *    generation g (d->acked_gen = g) once it runs as asked and, when asked to
 *    stop, nothing is in flight. stop() waits for that acknowledgement;
 *  - the device configuration's writeback byte (an atomic).
 * Everything else (request slots, in-flight count, the live virtqueues
 * while running) belongs to the thread.
 *
 * Request slots: each queue has as many slots as its largest size; a
 * popped chain occupies a slot until it is pushed back. A queue with no
 * free slot stops popping ("starved") and resumes when a completion frees
 * one.
 *
 * Polling: after the thread has done something it keeps spinning on the
 * rings (avail rings and completions) for POLL_NS instead of sleeping, with
 * guest notifications left off, so a busy guest neither exits on a kick
 * per request nor waits for the thread to be woken. It does not spin while
 * a request that keeps the host's CPU busy is in flight (a write into the
 * page cache is a copy done by a kernel worker, which a spinning thread
 * would starve on a small host); nor once start/stop posted something.
 * Notifications go back on when polling ends, and the ring is checked again
 * after that, so a chain made available meanwhile is never missed.
 *
 * Merging: reads (or writes with the same flags) popped in one pass whose
 * sectors continue one another go to the block layer as one request (as
 * QEMU's virtio-blk does), up to MERGE_MAX_BYTES and MERGE_MAX_IOV buffers:
 * a guest streaming at queue depth 4 costs the host one system call and one
 * large transfer instead of four. Each request completes on its own when
 * the merged one does, with its error if it failed. Nothing is held back:
 * the batch is submitted when the pass ends, before any other request
 * type, and when a request does not continue it. */
#include "virtio_blk.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "blk.h"
#include "config.h"
#include "devices.h"
#include "evloop.h"
#include "log.h"
#include "util.h"
#include "virtio_pci.h"
#include "vm.h"

#define VIRTIO_ID_BLOCK          2
#define PCI_CLASS_STORAGE_SCSI   0x010000

#define VIRTIO_BLK_F_SEG_MAX     2
#define VIRTIO_BLK_F_RO          5
#define VIRTIO_BLK_F_BLK_SIZE    6
#define VIRTIO_BLK_F_FLUSH       9
#define VIRTIO_BLK_F_CONFIG_WCE  11
#define VIRTIO_BLK_F_MQ          12
#define VIRTIO_BLK_F_DISCARD     13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

#define VIRTIO_BLK_T_IN          0
#define VIRTIO_BLK_T_OUT         1
#define VIRTIO_BLK_T_FLUSH       4
#define VIRTIO_BLK_T_GET_ID      8
#define VIRTIO_BLK_T_DISCARD     11
#define VIRTIO_BLK_T_WRITE_ZEROES 13

#define VIRTIO_BLK_S_OK          0
#define VIRTIO_BLK_S_IOERR       1
#define VIRTIO_BLK_S_UNSUPP      2

#define VIRTIO_BLK_WZ_UNMAP      1
#define VIRTIO_BLK_ID_BYTES      20

/* Device configuration layout (5.2.4) */
#define CFG_CAPACITY             0
#define CFG_SEG_MAX              12
#define CFG_BLK_SIZE             20
#define CFG_MIN_IO_SIZE          26
#define CFG_WRITEBACK            32
#define CFG_NUM_QUEUES           34
#define CFG_MAX_DISCARD_SECTORS  36
#define CFG_MAX_DISCARD_SEG      40
#define CFG_DISCARD_ALIGN        44
#define CFG_MAX_WZ_SECTORS       48
#define CFG_MAX_WZ_SEG           52
#define CFG_WZ_MAY_UNMAP         56
#define CFG_LEN                  60

#define SECTOR                   512
#define QUEUE_SIZE               256
/* A chain: header, up to SEG_MAX data buffers, status. */
#define SEG_MAX                  (QUEUE_SIZE - 2)
#define CHAIN_MAX                (SEG_MAX + 2)
#define MAX_DISCARD_SECTORS      (1u << 22)   /* 2 GiB per request */
#define EV_CTL                   0xffffu
#define EV_AIO                   0xfffeu
#define IO_ERRORS_QUEUED         16
#define IO_ERRORS_LOGGED         8
#define POLL_NS                  50000
#define BLK_HDR_LEN              16
#define MERGE_MAX_BYTES          (32u << 20)
#define MERGE_MAX_IOV            IOV_MAX
#define POLL_PREEMPTED_NS        20000

struct vblk;
struct vblk_queue;

struct vblk_req {
	struct blk_req br;
	struct vblk_queue *q;
	struct virtq_elem elem;
	uint8_t *status;
	uint32_t type;
	uint32_t used_len;           /* bytes written to the guest, on success */
	bool cpu_bound;              /* counted in vblk.cpu_bound */
	struct vblk_req *next_free;
	struct vblk_req *next_merged; /* the next request of its merged batch */
};

/* Reads or writes popped together that continue one another, submitted as
 * one request (see "Merging" at the top). */
struct vblk_batch {
	struct vblk_req *first, *last;
	unsigned n;
	enum blk_op op;
	unsigned flags;
	uint64_t offset, len;
	int iovcnt;
};

/* A submitted batch of more than one request. */
struct vblk_merged {
	struct blk_req br;
	struct vblk_req *first;
	struct iovec iov[];
};

struct vblk_queue {
	struct vblk *d;
	unsigned index;
	struct vblk_req *slots;
	struct iovec *iovs;          /* CHAIN_MAX per slot */
	struct vblk_req *free;
	bool starved;
	bool pushed;                 /* used entries since the last interrupt check */
	struct vblk_batch batch;     /* staged, not submitted yet */
};

struct io_error {
	const char *operation;
	int err;
};

/* query-blockstats, named as QEMU names them (write-zeroes counts as a
 * write there too). Written by the I/O thread, read by the main loop:
 * relaxed atomics, each counter on its own. */
enum vblk_stat {
	ST_RD_BYTES, ST_WR_BYTES, ST_RD_OPS, ST_WR_OPS, ST_FLUSH_OPS, ST_DISCARD_OPS,
	ST_RD_MERGED, ST_WR_MERGED, ST_FAILED_RD, ST_FAILED_WR, ST_FAILED_FLUSH,
	ST_FAILED_DISCARD, ST_COUNT
};

static const char *const stat_names[ST_COUNT] = {
	[ST_RD_BYTES] = "rd_bytes", [ST_WR_BYTES] = "wr_bytes",
	[ST_RD_OPS] = "rd_operations", [ST_WR_OPS] = "wr_operations",
	[ST_FLUSH_OPS] = "flush_operations", [ST_DISCARD_OPS] = "unmap_operations",
	[ST_RD_MERGED] = "rd_merged", [ST_WR_MERGED] = "wr_merged",
	[ST_FAILED_RD] = "failed_rd_operations", [ST_FAILED_WR] = "failed_wr_operations",
	[ST_FAILED_FLUSH] = "failed_flush_operations",
	[ST_FAILED_DISCARD] = "failed_unmap_operations",
};

struct vblk {
	struct vm *vm;
	const struct vmm_disk *cfg;
	struct virtio_pci vp;
	struct blk *blk;
	struct blk_aio *aio;
	uint64_t capacity;           /* sectors */
	bool readonly;
	bool direct;                 /* cache=none: data moves by DMA, not by host copies */
	uint8_t config[CFG_LEN];     /* writeback byte: atomic */
	unsigned nqueues;
	struct vblk_queue q[VMM_MAX_DISK_QUEUES];

	pthread_t thread;
	bool thread_started;
	int epfd, ctl_fd;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool want_run, want_exit;    /* posted by start/stop/destroy */
	unsigned gen, acked_gen;

	/* the thread's own */
	bool running, exiting;
	unsigned applied_gen;
	unsigned inflight;
	unsigned cpu_bound;          /* in flight and keeping a host CPU busy */
	uint64_t stats[ST_COUNT];
	bool polling;                /* drained queues keep notifications off */

	/* BLOCK_IO_ERROR events, passed to the main loop */
	int err_fd;
	pthread_mutex_t err_lock;
	unsigned nerrors, dropped;
	struct io_error errors[IO_ERRORS_QUEUED];
	unsigned logged;             /* the I/O thread's */
};

struct vblk_set {
	struct vm *vm;
	unsigned n;
	struct vblk *disk[VMM_MAX_DISKS];
};

static const enum blk_cache blk_cache_of[] = {
	[DISK_CACHE_WRITEBACK] = BLK_CACHE_WRITEBACK,
	[DISK_CACHE_NONE] = BLK_CACHE_NONE,
	[DISK_CACHE_WRITETHROUGH] = BLK_CACHE_WRITETHROUGH,
	[DISK_CACHE_UNSAFE] = BLK_CACHE_UNSAFE,
};

/* ---- I/O errors: logged here, an event on the main loop ---- */

static const char *op_name(uint32_t type)
{
	switch (type) {
	case VIRTIO_BLK_T_IN: return "read";
	case VIRTIO_BLK_T_OUT: return "write";
	case VIRTIO_BLK_T_FLUSH: return "flush";
	case VIRTIO_BLK_T_DISCARD: return "discard";
	case VIRTIO_BLK_T_WRITE_ZEROES: return "write-zeroes";
	}
	return "unknown";
}

static void report_io_error(struct vblk *d, uint32_t type, uint64_t sector, int err)
{
	uint64_t one = 1;

	/* A failing disk fails every request: the log gets the first few, the
	 * control socket every one (coalesced below). */
	if (d->logged < IO_ERRORS_LOGGED)
		log_warn("disk '%s': %s at sector %llu: %s%s", d->cfg->id, op_name(type),
			 (unsigned long long)sector, strerror(-err),
			 ++d->logged == IO_ERRORS_LOGGED ? " (further I/O errors not logged)" : "");
	pthread_mutex_lock(&d->err_lock);
	if (d->nerrors < IO_ERRORS_QUEUED)
		d->errors[d->nerrors++] = (struct io_error){ op_name(type), err };
	else
		d->dropped++;
	pthread_mutex_unlock(&d->err_lock);
	if (write(d->err_fd, &one, sizeof(one)) < 0) {
		/* the counter cannot overflow in practice */
	}
}

static void emit_io_errors(void *opaque, int fd, uint32_t events)
{
	struct vblk *d = opaque;
	struct io_error errs[IO_ERRORS_QUEUED];
	unsigned n, dropped;
	uint64_t cnt;

	if (read(fd, &cnt, sizeof(cnt)) < 0) {
		/* spurious wake-up */
	}
	pthread_mutex_lock(&d->err_lock);
	n = d->nerrors;
	dropped = d->dropped;
	memcpy(errs, d->errors, n * sizeof(errs[0]));
	d->nerrors = d->dropped = 0;
	pthread_mutex_unlock(&d->err_lock);
	if (dropped)
		log_warn("disk '%s': %u more I/O errors not reported as events", d->cfg->id,
			 dropped);
	for (unsigned i = 0; i < n && d->vm->emit_event; i++) {
		/* QEMU's BLOCK_IO_ERROR with werror/rerror=report: the guest
		 * got an error status and runs on. */
		json_t *data = json_pack("{s:s, s:s, s:s, s:s, s:b, s:s}", "device", d->cfg->id,
					 "node-name", d->cfg->id, "operation", errs[i].operation,
					 "action", "report", "nospace", errs[i].err == -ENOSPC,
					 "reason", strerror(-errs[i].err));

		d->vm->emit_event(d->vm->emit_opaque, "BLOCK_IO_ERROR", data);
	}
}

/* ---- completing requests (I/O thread) ---- */

static void slot_free(struct vblk_queue *q, struct vblk_req *r)
{
	if (r->cpu_bound) {
		r->cpu_bound = false;
		q->d->cpu_bound--;
	}
	r->next_free = q->free;
	q->free = r;
	q->d->inflight--;
}

static void stat_add(struct vblk *d, enum vblk_stat st, uint64_t n)
{
	__atomic_fetch_add(&d->stats[st], n, __ATOMIC_RELAXED);
}

static void count_request(struct vblk *d, const struct vblk_req *r, bool ok)
{
	switch (r->type) {
	case VIRTIO_BLK_T_IN:
		stat_add(d, ok ? ST_RD_OPS : ST_FAILED_RD, 1);
		if (ok)
			stat_add(d, ST_RD_BYTES, r->used_len - 1);
		break;
	case VIRTIO_BLK_T_OUT:
		stat_add(d, ok ? ST_WR_OPS : ST_FAILED_WR, 1);
		if (ok)
			stat_add(d, ST_WR_BYTES, r->elem.out_len - BLK_HDR_LEN);
		break;
	case VIRTIO_BLK_T_FLUSH:
		stat_add(d, ok ? ST_FLUSH_OPS : ST_FAILED_FLUSH, 1);
		break;
	case VIRTIO_BLK_T_DISCARD:
		stat_add(d, ok ? ST_DISCARD_OPS : ST_FAILED_DISCARD, 1);
		break;
	case VIRTIO_BLK_T_WRITE_ZEROES:
		stat_add(d, ok ? ST_WR_OPS : ST_FAILED_WR, 1);
		break;
	}
}

static void complete(struct vblk_req *r, uint8_t status)
{
	struct vblk_queue *q = r->q;
	struct virtq *vq = virtio_pci_queue(&q->d->vp, q->index);

	count_request(q->d, r, status == VIRTIO_BLK_S_OK);
	*r->status = status;
	if (vq)
		virtq_fill(vq, r->elem.head, status == VIRTIO_BLK_S_OK ? r->used_len : 1);
	q->pushed = true;
	slot_free(q, r);
}

static void req_done(struct blk_req *br, int ret)
{
	struct vblk_req *r = br->opaque;

	/* Discard is advisory (5.2.6.2): a layer that cannot, did nothing. */
	if (ret == -ENOTSUP && r->type == VIRTIO_BLK_T_DISCARD)
		ret = 0;
	if (ret < 0)
		report_io_error(r->q->d, r->type, br->offset / SECTOR, ret);
	complete(r, ret < 0 ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK);
}

/* Reads wait for the device (or hit the page cache at once); so do O_DIRECT
 * writes. The rest the host's CPU works on. */
static void count_cpu_bound(struct vblk *d, struct vblk_req *r, enum blk_op op)
{
	r->cpu_bound = op != BLK_OP_READ && !(op == BLK_OP_WRITE && d->direct);
	d->cpu_bound += r->cpu_bound;
}

static void submit(struct vblk *d, struct vblk_req *r, enum blk_op op, uint64_t off,
		   uint64_t len, struct iovec *iov, int iovcnt, unsigned flags)
{
	int ret;

	r->br = (struct blk_req){
		.op = op, .offset = off, .len = len, .iov = iov, .iovcnt = iovcnt,
		.flags = flags, .done = req_done, .opaque = r,
	};
	count_cpu_bound(d, r, op);
	ret = blk_aio_submit(d->blk, d->aio, &r->br);
	if (ret < 0) {
		report_io_error(d, r->type, off / SECTOR, ret);
		complete(r, VIRTIO_BLK_S_IOERR);
	}
}

/* ---- merging (I/O thread) ---- */

static void merged_done(struct blk_req *br, int ret)
{
	struct vblk_merged *m = br->opaque;
	struct vblk_req *r = m->first;

	while (r) {
		struct vblk_req *next = r->next_merged;

		r->next_merged = NULL;
		if (ret < 0)
			report_io_error(r->q->d, r->type, r->br.offset / SECTOR, ret);
		complete(r, ret < 0 ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK);
		r = next;
	}
	free(m);
}

static void batch_fail(struct vblk *d, struct vblk_req *r, int err)
{
	while (r) {
		struct vblk_req *next = r->next_merged;

		r->next_merged = NULL;
		report_io_error(d, r->type, r->br.offset / SECTOR, err);
		complete(r, VIRTIO_BLK_S_IOERR);
		r = next;
	}
}

/* Submits what q has staged. */
static void batch_submit(struct vblk *d, struct vblk_queue *q)
{
	struct vblk_batch *b = &q->batch;
	struct vblk_req *first = b->first;
	int iovcnt = b->iovcnt, k = 0, ret;
	unsigned n = b->n;
	struct vblk_merged *m;

	if (!b->n)
		return;
	*b = (struct vblk_batch){ 0 };
	if (!first->next_merged) {
		submit(d, first, first->br.op, first->br.offset, first->br.len, first->br.iov,
		       first->br.iovcnt, first->br.flags);
		return;
	}
	m = malloc(sizeof(*m) + sizeof(m->iov[0]) * (size_t)iovcnt);
	if (!m) {
		for (struct vblk_req *r = first; r; r = r->next_merged)
			count_cpu_bound(d, r, r->br.op);
		batch_fail(d, first, -ENOMEM);
		return;
	}
	m->first = first;
	stat_add(d, first->br.op == BLK_OP_READ ? ST_RD_MERGED : ST_WR_MERGED, n - 1);
	for (struct vblk_req *r = first; r; r = r->next_merged) {
		memcpy(&m->iov[k], r->br.iov, sizeof(m->iov[0]) * (size_t)r->br.iovcnt);
		k += r->br.iovcnt;
		count_cpu_bound(d, r, r->br.op);
	}
	m->br = (struct blk_req){
		.op = first->br.op, .offset = first->br.offset, .len = 0, .iov = m->iov,
		.iovcnt = k, .flags = first->br.flags, .done = merged_done, .opaque = m,
	};
	for (struct vblk_req *r = first; r; r = r->next_merged)
		m->br.len += r->br.len;
	ret = blk_aio_submit(d->blk, d->aio, &m->br);
	if (ret < 0) {
		free(m);
		batch_fail(d, first, ret);
	}
}

/* Stages a read or write: it joins the batch if it continues it, else the
 * batch goes and a new one starts with it. */
static void stage(struct vblk *d, struct vblk_queue *q, struct vblk_req *r, enum blk_op op,
		  uint64_t off, uint64_t len, struct iovec *iov, int iovcnt, unsigned flags)
{
	struct vblk_batch *b = &q->batch;

	r->br = (struct blk_req){
		.op = op, .offset = off, .len = len, .iov = iov, .iovcnt = iovcnt,
		.flags = flags, .done = req_done, .opaque = r,
	};
	r->next_merged = NULL;
	if (b->n && (b->op != op || b->flags != flags || b->offset + b->len != off ||
		     b->len + len > MERGE_MAX_BYTES || b->iovcnt + iovcnt > MERGE_MAX_IOV))
		batch_submit(d, q);
	if (!b->n) {
		*b = (struct vblk_batch){ .first = r, .last = r, .n = 1, .op = op, .flags = flags,
					  .offset = off, .len = len, .iovcnt = iovcnt };
		return;
	}
	b->last->next_merged = r;
	b->last = r;
	b->n++;
	b->len += len;
	b->iovcnt += iovcnt;
}

/* ---- requests (I/O thread) ---- */

static bool in_range(struct vblk *d, uint64_t sector, uint64_t bytes)
{
	return sector <= d->capacity && bytes / SECTOR <= d->capacity - sector;
}

/* The readable part after the header, in place: elem.iov[*first...]. */
static struct iovec *out_data(struct vblk_req *r, uint64_t skip, int *count)
{
	struct virtq_elem *e = &r->elem;
	unsigned k = 0;

	while (k < e->nout && skip >= e->iov[k].iov_len)
		skip -= e->iov[k++].iov_len;
	if (k < e->nout) {
		e->iov[k].iov_base = (uint8_t *)e->iov[k].iov_base + skip;
		e->iov[k].iov_len -= skip;
	}
	*count = (int)(e->nout - k);
	return &e->iov[k];
}

/* The writable part without its last byte (the status), in place. */
static struct iovec *in_data(struct vblk_req *r, int *count)
{
	struct virtq_elem *e = &r->elem;
	struct iovec *last = &e->iov[e->nout + e->nin - 1];

	last->iov_len--;
	*count = (int)e->nin - (last->iov_len == 0);
	return &e->iov[e->nout];
}

static void do_get_id(struct vblk *d, struct vblk_req *r)
{
	char id[VIRTIO_BLK_ID_BYTES] = { 0 };
	uint64_t room = r->elem.in_len - 1;
	size_t n = room < sizeof(id) ? (size_t)room : sizeof(id);

	if (d->cfg->serial)
		memcpy(id, d->cfg->serial, strnlen(d->cfg->serial, sizeof(id)));
	virtq_elem_write(&r->elem, 0, id, n);
	r->used_len = (uint32_t)n + 1;
	complete(r, VIRTIO_BLK_S_OK);
}

static void do_discard_zeroes(struct vblk *d, struct vblk_req *r, uint64_t data_len)
{
	struct { uint64_t sector; uint32_t num_sectors; uint32_t flags; } seg;
	bool zeroes = r->type == VIRTIO_BLK_T_WRITE_ZEROES;
	uint32_t allowed = zeroes ? VIRTIO_BLK_WZ_UNMAP : 0;

	_Static_assert(sizeof(seg) == 16, "discard/write-zeroes segment is 16 bytes");
	if (!virtio_pci_has_feature(&d->vp, zeroes ? VIRTIO_BLK_F_WRITE_ZEROES :
				    VIRTIO_BLK_F_DISCARD) || d->readonly) {
		complete(r, d->readonly ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_UNSUPP);
		return;
	}
	/* One segment (max_*_seg is 1). */
	if (data_len != sizeof(seg) || !virtq_elem_read(&r->elem, 16, &seg, sizeof(seg))) {
		complete(r, data_len > sizeof(seg) ? VIRTIO_BLK_S_UNSUPP : VIRTIO_BLK_S_IOERR);
		return;
	}
	if (seg.flags & ~allowed) {
		complete(r, VIRTIO_BLK_S_UNSUPP);
		return;
	}
	if (seg.num_sectors > MAX_DISCARD_SECTORS ||
	    !in_range(d, seg.sector, (uint64_t)seg.num_sectors * SECTOR)) {
		complete(r, VIRTIO_BLK_S_IOERR);
		return;
	}
	r->used_len = 1;
	if (!seg.num_sectors) {
		complete(r, VIRTIO_BLK_S_OK);
		return;
	}
	submit(d, r, zeroes ? BLK_OP_WRITE_ZEROES : BLK_OP_DISCARD, seg.sector * SECTOR,
	       (uint64_t)seg.num_sectors * SECTOR, NULL, 0,
	       (seg.flags & VIRTIO_BLK_WZ_UNMAP) ? BLK_ZERO_MAY_UNMAP : 0);
}

/* false: the chain breaks the request framing (the device needs a reset). */
static bool handle_request(struct vblk *d, struct vblk_req *r)
{
	struct { uint32_t type; uint32_t reserved; uint64_t sector; } hdr;
	struct virtq_elem *e = &r->elem;
	struct iovec *last, *iov;
	uint64_t len;
	int n;

	_Static_assert(sizeof(hdr) == BLK_HDR_LEN, "virtio-blk request header is 16 bytes");
	if (!virtq_elem_read(e, 0, &hdr, sizeof(hdr))) {
		virtio_pci_error(&d->vp, "queue %u: request %u has no 16-byte header in "
				 "device-readable buffers", r->q->index, e->head);
		return false;
	}
	if (e->in_len < 1) {
		virtio_pci_error(&d->vp, "queue %u: request %u has no writable status byte",
				 r->q->index, e->head);
		return false;
	}
	last = &e->iov[e->nout + e->nin - 1];
	r->status = (uint8_t *)last->iov_base + last->iov_len - 1;
	r->type = hdr.type;
	r->used_len = 1;
	/* A flush covers the writes completed before it, and whatever else
	 * comes is no read or write to merge: what is staged goes first. */
	if (hdr.type != VIRTIO_BLK_T_IN && hdr.type != VIRTIO_BLK_T_OUT)
		batch_submit(d, r->q);
	switch (hdr.type) {
	case VIRTIO_BLK_T_IN:
		len = e->in_len - 1;
		if (len % SECTOR || !in_range(d, hdr.sector, len)) {
			complete(r, VIRTIO_BLK_S_IOERR);
			break;
		}
		r->used_len = (uint32_t)(len + 1);
		iov = in_data(r, &n);
		if (!len)
			complete(r, VIRTIO_BLK_S_OK);
		else
			stage(d, r->q, r, BLK_OP_READ, hdr.sector * SECTOR, len, iov, n, 0);
		break;
	case VIRTIO_BLK_T_OUT:
		len = e->out_len - sizeof(hdr);
		if (d->readonly || len % SECTOR || !in_range(d, hdr.sector, len)) {
			complete(r, VIRTIO_BLK_S_IOERR);
			break;
		}
		iov = out_data(r, sizeof(hdr), &n);
		if (!len)
			complete(r, VIRTIO_BLK_S_OK);
		else
			stage(d, r->q, r, BLK_OP_WRITE, hdr.sector * SECTOR, len, iov, n,
			      __atomic_load_n(&d->config[CFG_WRITEBACK], __ATOMIC_RELAXED) ?
			      0 : BLK_WRITE_FUA);
		break;
	case VIRTIO_BLK_T_FLUSH:
		submit(d, r, BLK_OP_FLUSH, 0, 0, NULL, 0, 0);
		break;
	case VIRTIO_BLK_T_GET_ID:
		do_get_id(d, r);
		break;
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES:
		do_discard_zeroes(d, r, e->out_len - sizeof(hdr));
		break;
	default:
		complete(r, VIRTIO_BLK_S_UNSUPP);
		break;
	}
	return true;
}

static void process_queue(struct vblk *d, struct vblk_queue *q)
{
	struct virtq *vq = virtio_pci_queue(&d->vp, q->index);
	int ret;

	if (!d->running || !vq || vq->broken)
		return;
	for (;;) {
		virtq_set_notify(vq, false);
		while (q->free) {
			struct vblk_req *r = q->free;

			ret = virtq_pop(vq, &r->elem);
			if (ret == 0)
				break;
			if (ret < 0) {
				batch_submit(d, q);
				virtio_pci_error(&d->vp, "queue %u: %s", q->index, vq->err);
				return;
			}
			q->free = r->next_free;
			d->inflight++;
			if (!handle_request(d, r)) {
				batch_submit(d, q);
				slot_free(q, r);
				vq->broken = true;
				return;
			}
		}
		batch_submit(d, q);
		if (!q->free) {
			/* Notifications stay off: a completion resumes us. */
			q->starved = true;
			return;
		}
		q->starved = false;
		if (d->polling)
			return;
		virtq_set_notify(vq, true);
		if (!virtq_has_avail(vq))
			return;
	}
}

static void send_interrupts(struct vblk *d)
{
	for (unsigned i = 0; i < d->nqueues; i++) {
		struct vblk_queue *q = &d->q[i];
		struct virtq *vq;

		if (!q->pushed)
			continue;
		q->pushed = false;
		vq = virtio_pci_queue(&d->vp, i);
		if (vq && virtq_should_notify(vq))
			virtio_pci_notify_queue(&d->vp, i);
	}
}

/* ---- the I/O thread ---- */

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static bool control_posted(struct vblk *d)
{
	return __atomic_load_n(&d->gen, __ATOMIC_ACQUIRE) != d->applied_gen;
}

static bool poll_once(struct vblk *d)
{
	bool progress = blk_aio_reap(d->aio) > 0;

	for (unsigned i = 0; i < d->nqueues; i++) {
		struct vblk_queue *q = &d->q[i];
		struct virtq *vq = virtio_pci_queue(&d->vp, i);

		if (q->free && vq && virtq_has_avail(vq)) {
			process_queue(d, q);
			progress = true;
		}
	}
	return progress;
}

/* See "Polling" at the top. */
static void poll_rings(struct vblk *d)
{
	uint64_t idle_since = now_ns(), last = idle_since, now;

	d->polling = true;
	while (!d->cpu_bound && !control_posted(d)) {
		bool progress = poll_once(d);

		now = now_ns();
		if (progress) {
			send_interrupts(d);
			idle_since = now;
		} else if (now - last >= POLL_PREEMPTED_NS) {
			/* An empty round this long: the thread was descheduled.
			 * The CPU is wanted elsewhere, and spinning would only
			 * delay the vCPU and the kernel's workers. */
			break;
		}
		if (now - idle_since >= POLL_NS)
			break;
		last = now;
	}
	d->polling = false;
	for (unsigned i = 0; i < d->nqueues; i++)
		if (!d->q[i].starved)
			process_queue(d, &d->q[i]);
	send_interrupts(d);
}

static void apply_control(struct vblk *d)
{
	uint64_t cnt;

	if (read(d->ctl_fd, &cnt, sizeof(cnt)) < 0) {
		/* spurious wake-up */
	}
	pthread_mutex_lock(&d->lock);
	d->running = d->want_run;
	d->exiting = d->want_exit;
	d->applied_gen = d->gen;
	pthread_mutex_unlock(&d->lock);
	if (!d->running)
		return;
	/* Kicks that came while stopped were not acted on. */
	for (unsigned i = 0; i < d->nqueues; i++)
		process_queue(d, &d->q[i]);
}

static void maybe_ack(struct vblk *d)
{
	if (d->acked_gen == d->applied_gen || (!d->running && d->inflight))
		return;
	pthread_mutex_lock(&d->lock);
	d->acked_gen = d->applied_gen;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
}

static void *io_thread(void *arg)
{
	struct vblk *d = arg;
	struct epoll_event ev[32];
	char name[16];

	snprintf(name, sizeof(name), "io-%.12s", d->cfg->id);
	pthread_setname_np(pthread_self(), name);
	while (!d->exiting || d->inflight) {
		int n = epoll_wait(d->epfd, ev, ARRAY_SIZE(ev), -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_error("disk '%s': epoll_wait: %s", d->cfg->id, strerror(errno));
			break;
		}
		for (int i = 0; i < n; i++) {
			uint32_t tag = ev[i].data.u32;
			uint64_t cnt;

			if (tag == EV_CTL) {
				apply_control(d);
			} else if (tag == EV_AIO) {
				blk_aio_reap(d->aio);
			} else if (tag < d->nqueues) {
				if (read(virtio_pci_kick_fd(&d->vp, tag), &cnt, sizeof(cnt)) < 0) {
					/* EAGAIN: already drained */
				}
				process_queue(d, &d->q[tag]);
			}
		}
		for (unsigned i = 0; i < d->nqueues; i++)
			if (d->q[i].starved && d->q[i].free)
				process_queue(d, &d->q[i]);
		send_interrupts(d);
		maybe_ack(d);
		if (d->running && !d->cpu_bound)
			poll_rings(d);
	}
	return NULL;
}

/* Posts a new wanted state; with wait, returns once the thread acted on it
 * (and, when stopping, once nothing is in flight). */
static void post_control(struct vblk *d, bool run, bool exit, bool wait)
{
	uint64_t one = 1;
	unsigned g;

	pthread_mutex_lock(&d->lock);
	d->want_run = run;
	d->want_exit = exit;
	/* atomic: the polling thread peeks at it without the lock */
	g = __atomic_add_fetch(&d->gen, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&d->lock);
	if (write(d->ctl_fd, &one, sizeof(one)) < 0)
		log_error("disk '%s': waking the I/O thread: %s", d->cfg->id, strerror(errno));
	if (!wait || !d->thread_started)
		return;
	pthread_mutex_lock(&d->lock);
	while ((int)(d->acked_gen - g) < 0)
		pthread_cond_wait(&d->cond, &d->lock);
	pthread_mutex_unlock(&d->lock);
}

/* ---- transport hooks (vCPU or main thread, vp->lock held) ---- */

static void vblk_start(void *opaque)
{
	struct vblk *d = opaque;

	post_control(d, true, false, false);
}

static void vblk_stop(void *opaque)
{
	struct vblk *d = opaque;

	post_control(d, false, false, true);
}

static void vblk_config_read(void *opaque, unsigned off, uint8_t *data, unsigned len)
{
	struct vblk *d = opaque;

	for (unsigned i = 0; i < len; i++)
		data[i] = __atomic_load_n(&d->config[off + i], __ATOMIC_RELAXED);
}

static void vblk_config_write(void *opaque, unsigned off, const uint8_t *data, unsigned len)
{
	struct vblk *d = opaque;

	/* Only the cache mode is the driver's to change (CONFIG_WCE). */
	if (off <= CFG_WRITEBACK && off + len > CFG_WRITEBACK &&
	    virtio_pci_has_feature(&d->vp, VIRTIO_BLK_F_CONFIG_WCE))
		__atomic_store_n(&d->config[CFG_WRITEBACK], data[CFG_WRITEBACK - off] ? 1 : 0,
				 __ATOMIC_RELAXED);
}

static const struct virtio_dev_ops vblk_ops = {
	.config_read = vblk_config_read,
	.config_write = vblk_config_write,
	.start = vblk_start,
	.stop = vblk_stop,
};

/* ---- one disk ---- */

static void build_config(struct vblk *d)
{
	uint8_t *c = d->config;
	uint32_t align = blk_cluster_size(d->blk);

	memset(c, 0, sizeof(d->config));
	pci_put32(c + CFG_CAPACITY, (uint32_t)d->capacity);
	pci_put32(c + CFG_CAPACITY + 4, (uint32_t)(d->capacity >> 32));
	pci_put32(c + CFG_SEG_MAX, SEG_MAX);
	pci_put32(c + CFG_BLK_SIZE, SECTOR);
	pci_put16(c + CFG_MIN_IO_SIZE, 1);
	c[CFG_WRITEBACK] = d->cfg->cache != DISK_CACHE_WRITETHROUGH;
	pci_put16(c + CFG_NUM_QUEUES, (uint16_t)d->nqueues);
	pci_put32(c + CFG_MAX_DISCARD_SECTORS, MAX_DISCARD_SECTORS);
	pci_put32(c + CFG_MAX_DISCARD_SEG, 1);
	pci_put32(c + CFG_DISCARD_ALIGN, align >= SECTOR ? align / SECTOR : 8);
	pci_put32(c + CFG_MAX_WZ_SECTORS, MAX_DISCARD_SECTORS);
	pci_put32(c + CFG_MAX_WZ_SEG, 1);
	c[CFG_WZ_MAY_UNMAP] = 1;
}

static int alloc_queues(struct vblk *d)
{
	for (unsigned i = 0; i < d->nqueues; i++) {
		struct vblk_queue *q = &d->q[i];

		q->d = d;
		q->index = i;
		q->slots = calloc(QUEUE_SIZE, sizeof(*q->slots));
		q->iovs = calloc((size_t)QUEUE_SIZE * CHAIN_MAX, sizeof(*q->iovs));
		if (!q->slots || !q->iovs)
			return -ENOMEM;
		for (unsigned k = 0; k < QUEUE_SIZE; k++) {
			struct vblk_req *r = &q->slots[k];

			r->q = q;
			r->elem.iov = q->iovs + (size_t)k * CHAIN_MAX;
			r->elem.cap = CHAIN_MAX;
			r->next_free = q->free;
			q->free = r;
		}
	}
	return 0;
}

static int open_disk(struct vblk *d, char *err, size_t errlen)
{
	const struct vmm_disk *c = d->cfg;
	struct blk_open_opts o = {
		.format = c->format, .cache = blk_cache_of[c->cache], .readonly = c->readonly,
		.snapshot = c->snapshot,
	};
	char sub[512];
	int ret = blk_open(&d->blk, c->path, &o, sub, sizeof(sub));

	if (ret < 0) {
		snprintf(err, errlen, "disk '%s': %s", c->id, sub);
		return ret;
	}
	d->readonly = c->readonly || blk_readonly(d->blk);
	d->direct = c->cache == DISK_CACHE_NONE;
	d->capacity = blk_size(d->blk) / SECTOR;
	if (blk_size(d->blk) % SECTOR)
		log_warn("disk '%s': %s is %llu bytes, not a whole number of sectors: the guest "
			 "sees %llu sectors", c->id, c->path, (unsigned long long)blk_size(d->blk),
			 (unsigned long long)d->capacity);
	if (!c->format)
		log_info("disk '%s': no format given, %s probed as %s", c->id, c->path,
			 blk_format(d->blk));
	ret = blk_aio_new(&d->aio, QUEUE_SIZE * d->nqueues, sub, sizeof(sub));
	if (ret < 0) {
		snprintf(err, errlen, "disk '%s': %s", c->id, sub);
		return ret;
	}
	return 0;
}

static int epoll_watch(struct vblk *d, int fd, uint32_t tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = tag };

	return epoll_ctl(d->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static int start_thread(struct vblk *d, char *err, size_t errlen)
{
	int ret;

	d->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (d->epfd < 0) {
		ret = -errno;
		goto fail;
	}
	ret = epoll_watch(d, d->ctl_fd, EV_CTL);
	if (ret == 0)
		ret = epoll_watch(d, blk_aio_fd(d->aio), EV_AIO);
	for (unsigned i = 0; ret == 0 && i < d->nqueues; i++)
		ret = epoll_watch(d, virtio_pci_kick_fd(&d->vp, i), i);
	if (ret < 0)
		goto fail;
	ret = -pthread_create(&d->thread, NULL, io_thread, d);
	if (ret < 0)
		goto fail;
	d->thread_started = true;
	return 0;
fail:
	snprintf(err, errlen, "disk '%s': starting its I/O thread: %s", d->cfg->id,
		 strerror(-ret));
	return ret;
}

static void vblk_free(struct vblk *d);

static int vblk_create(struct vm *vm, const struct vmm_disk *cfg, struct vblk **out, char *err,
		       size_t errlen)
{
	struct vblk *d = calloc(1, sizeof(*d));
	uint64_t features;
	char name[48];
	int ret;

	if (!d)
		return -ENOMEM;
	d->vm = vm;
	d->cfg = cfg;
	d->nqueues = cfg->queues;
	d->epfd = d->ctl_fd = d->err_fd = -1;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
	pthread_mutex_init(&d->err_lock, NULL);
	d->ctl_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	d->err_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (d->ctl_fd < 0 || d->err_fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "disk '%s': eventfd: %s", cfg->id, strerror(-ret));
		goto err;
	}
	ret = alloc_queues(d);
	if (ret < 0) {
		snprintf(err, errlen, "disk '%s': out of memory", cfg->id);
		goto err;
	}
	ret = open_disk(d, err, errlen);
	if (ret < 0)
		goto err;
	build_config(d);
	features = 1ULL << VIRTIO_BLK_F_SEG_MAX | 1ULL << VIRTIO_BLK_F_BLK_SIZE |
		   1ULL << VIRTIO_BLK_F_FLUSH | 1ULL << VIRTIO_BLK_F_CONFIG_WCE |
		   1ULL << VIRTIO_BLK_F_MQ;
	if (d->readonly)
		features |= 1ULL << VIRTIO_BLK_F_RO;
	else
		features |= 1ULL << VIRTIO_BLK_F_DISCARD | 1ULL << VIRTIO_BLK_F_WRITE_ZEROES;
	snprintf(name, sizeof(name), "virtio-blk-%s", cfg->id);
	ret = virtio_pci_init(&d->vp, vm, name, VIRTIO_ID_BLOCK, PCI_CLASS_STORAGE_SCSI,
			      d->nqueues, QUEUE_SIZE, features, CFG_LEN, &vblk_ops, d, err, errlen);
	if (ret < 0)
		goto err;
	ret = start_thread(d, err, errlen);
	if (ret < 0) {
		virtio_pci_destroy(&d->vp);
		goto err;
	}
	*out = d;
	return 0;
err:
	vblk_free(d);
	return ret;
}

/* What vblk_create made, except the transport and the thread. */
static void vblk_free(struct vblk *d)
{
	if (d->aio) {
		blk_aio_drain(d->aio);
		blk_aio_free(d->aio);
	}
	if (d->blk)
		blk_close(d->blk);
	for (unsigned i = 0; i < d->nqueues; i++) {
		free(d->q[i].slots);
		free(d->q[i].iovs);
	}
	if (d->epfd >= 0)
		close(d->epfd);
	if (d->ctl_fd >= 0)
		close(d->ctl_fd);
	if (d->err_fd >= 0)
		close(d->err_fd);
	pthread_mutex_destroy(&d->lock);
	pthread_cond_destroy(&d->cond);
	pthread_mutex_destroy(&d->err_lock);
	free(d);
}

static void vblk_destroy(struct vblk *d)
{
	/* The transport stops the device (waiting for what is in flight);
	 * then the thread is told to end. */
	virtio_pci_destroy(&d->vp);
	post_control(d, false, true, false);
	pthread_join(d->thread, NULL);
	vblk_free(d);
}

/* ---- the set of disks as a platform device ---- */

static void set_destroy(void *state);

static int set_create(struct vm *vm, void **state, char *err, size_t errlen)
{
	struct vblk_set *s = calloc(1, sizeof(*s));
	int ret;

	if (!s)
		return -ENOMEM;
	s->vm = vm;
	*state = s;
	for (; s->n < vm->cfg->ndisks; s->n++) {
		ret = vblk_create(vm, &vm->cfg->disks[s->n], &s->disk[s->n], err, errlen);
		if (ret < 0) {
			set_destroy(s);
			*state = NULL;
			return ret;
		}
	}
	return 0;
}

static int set_attach(void *state, struct evloop *loop, char *err, size_t errlen)
{
	struct vblk_set *s = state;

	for (unsigned i = 0; i < s->n; i++) {
		int ret = evloop_add(loop, s->disk[i]->err_fd, EPOLLIN, emit_io_errors, s->disk[i]);

		if (ret < 0) {
			snprintf(err, errlen, "disk '%s': %s", s->disk[i]->cfg->id, strerror(-ret));
			return ret;
		}
	}
	return 0;
}

static void set_reset(void *state)
{
	struct vblk_set *s = state;

	for (unsigned i = 0; i < s->n; i++) {
		virtio_pci_reset(&s->disk[i]->vp);
		s->disk[i]->config[CFG_WRITEBACK] = s->disk[i]->cfg->cache != DISK_CACHE_WRITETHROUGH;
	}
}

static void set_pause(void *state)
{
	struct vblk_set *s = state;

	for (unsigned i = 0; i < s->n; i++)
		virtio_pci_pause(&s->disk[i]->vp);
}

static void set_resume(void *state)
{
	struct vblk_set *s = state;

	for (unsigned i = 0; i < s->n; i++)
		virtio_pci_resume(&s->disk[i]->vp);
}

static json_t *set_save(void *state)
{
	struct vblk_set *s = state;
	json_t *all = json_object();

	for (unsigned i = 0; i < s->n; i++) {
		json_t *o = virtio_pci_save(&s->disk[i]->vp);

		json_object_set_new(o, "writeback",
				    json_boolean(s->disk[i]->config[CFG_WRITEBACK]));
		json_object_set_new(all, s->disk[i]->cfg->id, o);
	}
	return all;
}

static int set_load(void *state, json_t *saved, char *err, size_t errlen)
{
	struct vblk_set *s = state;
	const char *key;
	json_t *v;

	if (!json_is_object(saved)) {
		snprintf(err, errlen, "not an object");
		return -EINVAL;
	}
	json_object_foreach(saved, key, v) {
		bool known = false;

		for (unsigned i = 0; i < s->n; i++)
			known |= !strcmp(s->disk[i]->cfg->id, key);
		if (!known) {
			snprintf(err, errlen, "disk '%s' is not configured here", key);
			return -EINVAL;
		}
	}
	for (unsigned i = 0; i < s->n; i++) {
		struct vblk *d = s->disk[i];
		json_t *o = json_object_get(saved, d->cfg->id);
		json_t *wb = json_object_get(o, "writeback");
		char sub[256];
		int ret;

		if (!json_is_object(o) || !json_is_boolean(wb)) {
			snprintf(err, errlen, "disk '%s': missing, or without boolean 'writeback'",
				 d->cfg->id);
			return -EINVAL;
		}
		ret = virtio_pci_load(&d->vp, o, sub, sizeof(sub));
		if (ret < 0) {
			snprintf(err, errlen, "disk '%s': %s", d->cfg->id, sub);
			return ret;
		}
		__atomic_store_n(&d->config[CFG_WRITEBACK], json_is_true(wb), __ATOMIC_RELAXED);
	}
	return 0;
}

static void set_destroy(void *state)
{
	struct vblk_set *s = state;

	if (!s)
		return;
	while (s->n > 0) {
		s->n--;
		vblk_destroy(s->disk[s->n]);
	}
	free(s);
}

const struct device_type virtio_blk_device = {
	.name = "virtio-blk",
	.create = set_create,
	.attach = set_attach,
	.reset = set_reset,
	.pause = set_pause,
	.resume = set_resume,
	.save = set_save,
	.load = set_load,
	.destroy = set_destroy,
};

json_t *virtio_blk_query_stats(struct vm *vm)
{
	struct vblk_set *s = devices_state(vm, "virtio-blk");
	json_t *list = json_array();

	for (unsigned i = 0; s && i < s->n; i++) {
		struct vblk *d = s->disk[i];
		json_t *stats = json_object();

		for (unsigned k = 0; k < ST_COUNT; k++)
			json_object_set_new(stats, stat_names[k], json_integer((json_int_t)
					    __atomic_load_n(&d->stats[k], __ATOMIC_RELAXED)));
		json_array_append_new(list, json_pack("{s:s, s:s, s:o}", "device", d->cfg->id,
						      "qdev", d->vp.pci.name, "stats", stats));
	}
	return list;
}

json_t *virtio_blk_query(struct vm *vm)
{
	struct vblk_set *s = devices_state(vm, "virtio-blk");
	json_t *list = json_array();

	for (unsigned i = 0; s && i < s->n; i++) {
		const struct vblk *d = s->disk[i];
		const struct vmm_disk *c = d->cfg;
		char addr[16];

		pci_dev_address(&d->vp.pci, addr, sizeof(addr));
		json_array_append_new(list, json_pack(
			"{s:s, s:s, s:s, s:b, s:b, s:s, s:{s:s, s:s, s:b, s:s, s:b, s:s?, s:i, "
			"s:I, s:{s:b, s:b, s:b}}}",
			"device", c->id, "qdev", d->vp.pci.name, "type", "unknown",
			"removable", 0, "locked", 0, "io-status", "ok",
			"inserted", "file", c->path, "drv", blk_format(d->blk), "ro", d->readonly,
			"cache-mode", vmm_disk_cache_name(c->cache), "snapshot", c->snapshot,
			"serial", c->serial, "queues", (int)d->nqueues,
			"virtual-size", (json_int_t)blk_size(d->blk),
			"cache", "writeback", c->cache != DISK_CACHE_WRITETHROUGH,
			"direct", c->cache == DISK_CACHE_NONE, "no-flush", c->cache == DISK_CACHE_UNSAFE));
		json_object_set_new(json_object_get(json_array_get(list, i), "inserted"),
				    "pci-address", json_string(addr));
	}
	return list;
}
