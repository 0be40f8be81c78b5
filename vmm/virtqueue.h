/* Split virtqueues (virtio 1.2, 2.7), the device side.
 *
 * The guest owns the rings, so nothing it writes there is trusted: every
 * descriptor index, chain length, indirect table and buffer address and
 * length is checked against the queue size and guest RAM before use. A
 * malformed ring makes virtq_pop fail with -EINVAL and a sentence in
 * vq->err; the transport then sets DEVICE_NEEDS_RESET and the queue is not
 * touched again until the driver resets the device.
 *
 * Memory ordering (2.7.13): the device reads avail->idx, then the ring
 * entries it covers (acquire); it writes used ring entries, then used->idx
 * (release); with VIRTIO_F_EVENT_IDX it publishes avail_event and re-reads
 * avail->idx with a full barrier in between, and reads used_event only
 * after used->idx is visible (full barrier), so no notification is lost in
 * either direction.
 *
 * One thread uses a queue at a time (the device's I/O thread while the
 * device runs; the transport while it is stopped). */
#ifndef DROVER_VIRTQUEUE_H
#define DROVER_VIRTQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "guest_mem.h"

#define VIRTQ_DESC_F_NEXT       1
#define VIRTQ_DESC_F_WRITE      2
#define VIRTQ_DESC_F_INDIRECT   4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY  1

#define VIRTQ_MAX_SIZE          32768
/* An indirect table may hold at most this many descriptors. */
#define VIRTQ_MAX_INDIRECT      1024

struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
} __attribute__((packed));

/* One popped chain: its readable buffers first (out), then its writable
 * ones (in), as host pointers into guest RAM. */
struct virtq_elem {
	uint16_t head;
	unsigned nout, nin;
	uint64_t out_len, in_len;      /* bytes */
	unsigned cap;                  /* room in iov */
	struct iovec *iov;
};

struct virtq {
	const struct guest_mem *mem;
	uint16_t size;
	bool event_idx;                /* VIRTIO_F_EVENT_IDX negotiated */
	bool indirect;                 /* VIRTIO_F_INDIRECT_DESC negotiated */
	uint64_t desc_gpa, avail_gpa, used_gpa;
	struct virtq_desc *desc;       /* host pointers, checked at init */
	uint8_t *avail;                /* flags, idx, ring[size], used_event */
	uint8_t *used;                 /* flags, idx, ring[size], avail_event */
	uint16_t last_avail;           /* next avail entry to take */
	uint16_t used_idx;             /* next used entry to fill */
	uint16_t signalled_used;       /* used_idx at the last interrupt check */
	bool broken;
	char err[160];
};

/* Checks the three areas (alignment, size a power of two up to
 * VIRTQ_MAX_SIZE, inside guest RAM) and sets the queue up with indices 0.
 * 0 or -EINVAL with err set. */
int virtq_init(struct virtq *vq, const struct guest_mem *mem, unsigned size, uint64_t desc,
	       uint64_t avail, uint64_t used, bool event_idx, bool indirect, char *err,
	       size_t errlen);

/* Takes the next available chain: 1 with elem filled, 0 when none is
 * waiting, -EINVAL when the ring is malformed (vq->err says how; the queue
 * is then broken), -ENOSPC when the chain has more buffers than elem->cap
 * (also malformed: the queue is broken). */
int virtq_pop(struct virtq *vq, struct virtq_elem *elem);
/* Whether the driver has made chains available that were not popped. */
bool virtq_has_avail(struct virtq *vq);
/* Returns chain head to the driver with len bytes written. */
void virtq_push(struct virtq *vq, uint16_t head, uint32_t len);
/* The same in two steps: virtq_fill writes the used element, virtq_flush
 * shows the driver every element filled so far (used->idx). A device that
 * completes several chains at once fills each and flushes once, so that
 * the driver sees them together (and resubmits them together). */
void virtq_fill(struct virtq *vq, uint16_t head, uint32_t len);
void virtq_flush(struct virtq *vq);
/* After one or more pushes: whether the driver wants an interrupt now
 * (VIRTQ_AVAIL_F_NO_INTERRUPT, or used_event with EVENT_IDX). Flushes
 * first. */
bool virtq_should_notify(struct virtq *vq);
/* Asks the driver not to notify (false) or to notify (true) about new
 * chains; after enabling, call virtq_has_avail again, since chains may have
 * arrived while notifications were off. */
void virtq_set_notify(struct virtq *vq, bool enable);

/* Copies len bytes at offset off of the chain's readable (out) or writable
 * (in) part to or from buf; false when the part is shorter. */
bool virtq_elem_read(const struct virtq_elem *e, uint64_t off, void *buf, size_t len);
bool virtq_elem_write(const struct virtq_elem *e, uint64_t off, const void *buf, size_t len);
/* The iovec covering [off, off+len) of the readable (out) or writable part
 * into dst (at most max entries); returns the number of entries, or -1 when
 * the part is too short or max too small. */
int virtq_elem_slice(const struct virtq_elem *e, bool writable, uint64_t off, uint64_t len,
		     struct iovec *dst, int max);

#endif
