/* virtio-blk (virtio 1.2, 5.2) over the PCI transport, one PCI function per
 * --disk, the disk behind it opened through the block layer (blk.h).
 *
 * Each disk has one I/O thread with its own blk_aio context. The thread
 * watches the queues' kick eventfds (signalled by KVM on the guest's
 * notify writes), pops requests, submits them, and completes them in
 * whatever order the block layer finishes them: status byte, used ring,
 * interrupt (MSI-X irqfd, or INTx). A vCPU never waits for a disk, except
 * when the device is reset, paused or destroyed: then stop() waits until
 * every request in flight has completed.
 *
 * Offered: SEG_MAX, BLK_SIZE (512), FLUSH, CONFIG_WCE, MQ, DISCARD and
 * WRITE_ZEROES (one segment each) unless read-only, RO for read-only disks;
 * requests IN, OUT, FLUSH, GET_ID, DISCARD, WRITE_ZEROES (others: UNSUPP).
 * A request that breaks the framing (no 16-byte header, no status byte) or
 * a malformed ring sets DEVICE_NEEDS_RESET. */
#ifndef DROVER_VIRTIO_BLK_H
#define DROVER_VIRTIO_BLK_H

#include <jansson.h>

struct vm;

/* query-block: one object per disk, in QEMU's shape ("device", "inserted":
 * {"file", "drv", "ro", "cache", ...}). A new reference. */
json_t *virtio_blk_query(struct vm *vm);
/* query-blockstats: {"device", "qdev", "stats": {"rd_bytes", "wr_bytes",
 * "rd_operations", "wr_operations", "flush_operations", "unmap_operations",
 * "rd_merged", "wr_merged", "failed_*_operations"}} per disk, counted when
 * requests complete. A new reference. */
json_t *virtio_blk_query_stats(struct vm *vm);

#endif
