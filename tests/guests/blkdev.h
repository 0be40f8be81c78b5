/* A virtio-blk driver for the test guests (virtio 1.2 §5.2) over lib/pci.c
 * and lib/virtio.c: blkcheck and blkbench share it. Requests are built by
 * the caller (type, sector, data segments) and completed by polling; any
 * number may be in flight on every queue, and they may complete in any
 * order. */
#ifndef BLKDEV_H
#define BLKDEV_H

#include "lib/guest.h"

#define VIRTIO_BLK_ID             2

#define VIRTIO_BLK_F_SIZE_MAX     1
#define VIRTIO_BLK_F_SEG_MAX      2
#define VIRTIO_BLK_F_GEOMETRY     4
#define VIRTIO_BLK_F_RO           5
#define VIRTIO_BLK_F_BLK_SIZE     6
#define VIRTIO_BLK_F_FLUSH        9
#define VIRTIO_BLK_F_TOPOLOGY     10
#define VIRTIO_BLK_F_CONFIG_WCE   11
#define VIRTIO_BLK_F_MQ           12
#define VIRTIO_BLK_F_DISCARD      13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

#define VIRTIO_BLK_T_IN           0
#define VIRTIO_BLK_T_OUT          1
#define VIRTIO_BLK_T_FLUSH        4
#define VIRTIO_BLK_T_GET_ID       8
#define VIRTIO_BLK_T_DISCARD      11
#define VIRTIO_BLK_T_WRITE_ZEROES 13

#define VIRTIO_BLK_S_OK           0
#define VIRTIO_BLK_S_IOERR        1
#define VIRTIO_BLK_S_UNSUPP       2

#define VIRTIO_BLK_ID_BYTES       20
#ifndef BLK_SECTOR
#define BLK_SECTOR                ((uint64_t)512)   /* the protocol's unit */
#endif
#define BLK_MAX_QUEUES            16
#define BLK_MAX_SEGS              256
#define BLK_STATUS_UNSET          0xee   /* what status holds until the device writes it */

/* struct virtio_blk_config, as far as the driver reads it. */
struct blk_config {
	uint64_t capacity;
	uint32_t size_max, seg_max, blk_size;
	uint16_t num_queues;
	uint8_t writeback;
	uint32_t max_discard_sectors, max_discard_seg, discard_sector_alignment;
	uint32_t max_write_zeroes_sectors, max_write_zeroes_seg;
	uint8_t write_zeroes_may_unmap;
};

/* struct virtio_blk_discard_write_zeroes */
struct blk_dwz_seg {
	uint64_t sector;
	uint32_t num_sectors;
	uint32_t flags;             /* bit 0: unmap */
} __attribute__((packed));

/* One request. hdr and status are what the device reads and writes: the
 * struct lives in guest RAM (identity mapped) like everything else. */
struct blk_req {
	struct {
		uint32_t type, reserved;
		uint64_t sector;
	} __attribute__((packed)) hdr;
	volatile uint8_t status;
	unsigned nseg;
	struct virtq_buf seg[BLK_MAX_SEGS];   /* the data; direction from the type */
	/* driver side */
	uint16_t queue;
	uint64_t seq;               /* submission order on its queue */
	uint32_t used_len;          /* what the device put in the used ring */
	uint64_t data_len;
	void *owner;                /* for the caller */
};

struct blk_queue_stats {
	uint64_t submitted, completed, bytes;
	unsigned max_in_flight;
	uint64_t overtaken;         /* completed before a request submitted earlier */
	uint64_t last_done_seq, next_seq;
};

struct blkdev {
	struct virtio_dev vd;
	struct blk_config cfg;
	unsigned nq;
	struct virtq q[BLK_MAX_QUEUES];
	struct blk_queue_stats st[BLK_MAX_QUEUES];
	uint64_t bad_used;          /* used ring entries naming no request */
	char error[160];
};

/* Finds the index-th virtio-blk function, negotiates VERSION_1 and
 * `wanted`, reads the configuration and sets up min(num_queues,
 * max_queues) queues of at most queue_size entries, then DRIVER_OK. */
int blkdev_open(struct blkdev *bd, struct pci *p, struct dma_pool *pool, unsigned index,
		uint64_t wanted, unsigned max_queues, unsigned queue_size);
/* The data segments a request may have on queue qi (seg_max and the ring). */
unsigned blkdev_max_segs(const struct blkdev *bd, unsigned qi);
/* Queues r (r->hdr, r->seg, r->nseg filled in) on queue qi without
 * notifying. -ENOSPC: the ring is full, try again after completions. */
int blkdev_submit(struct blkdev *bd, unsigned qi, struct blk_req *r);
void blkdev_kick(struct blkdev *bd, unsigned qi);
/* A completed request of queue qi, or NULL. */
struct blk_req *blkdev_poll(struct blkdev *bd, unsigned qi);
/* Submits r alone and waits up to timeout_ms for it; -ETIMEDOUT. */
int blkdev_run(struct blkdev *bd, unsigned qi, struct blk_req *r, unsigned timeout_ms);
/* Whether the device writes the data of a request of this type. */
int blk_type_reads_disk(uint32_t type);
const char *blk_status_name(uint8_t status);

#endif
