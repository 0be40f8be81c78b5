/* blkcrash: the guest side of the crash-safety test. It writes records of
 * the plain pattern of a seed (blkpattern.h) from the start of the disk
 * onwards, BATCH writes in flight at a time, then a flush, and after each
 * flush completes prints how many bytes from the start are durable:
 *
 *     blkcrash: durable 1114112
 *
 * The host kills the VMM (SIGKILL) at a moment of its choosing, then checks
 * that the image is consistent and that at least the last announced number
 * of bytes holds the pattern. Records are 68 KiB, so that they straddle
 * qcow2 cluster boundaries; when the disk is full the guest exits 0.
 *
 * Options: blkcrash.seed=N. */
#include "blkdev.h"
#include "blkpattern.h"

#define RECORD_BYTES (68 * 1024)
#define BATCH        8

struct crash {
	struct blkdev bd;
	struct pci pci;
	struct dma_pool pool;
	struct blk_req req[BATCH];
	uint8_t *buf[BATCH];
	uint64_t seed;
};

static int setup(struct crash *c)
{
	int err = pci_init(&c->pci, PCI_ACCESS_NONE, 0xc0000000ULL, 0xe0000000ULL);
	if (!err)
		err = pci_scan(&c->pci);
	if (err) {
		printf("blkcrash: FAIL pci: %s (%d)\n", c->pci.error, err);
		return err;
	}
	if (dma_pool_init(&c->pool)) {
		printf("blkcrash: FAIL no usable RAM for rings and buffers\n");
		return -ENOMEM;
	}
	uint64_t wanted = 1ULL << VIRTIO_BLK_F_SIZE_MAX | 1ULL << VIRTIO_BLK_F_SEG_MAX |
			  1ULL << VIRTIO_BLK_F_BLK_SIZE | 1ULL << VIRTIO_BLK_F_FLUSH |
			  1ULL << VIRTIO_F_ACCESS_PLATFORM;
	err = blkdev_open(&c->bd, &c->pci, &c->pool, 0, wanted, 1, VIRTQ_MAX_SIZE);
	if (err) {
		printf("blkcrash: FAIL virtio-blk: %s (%d)\n", c->bd.error, err);
		return err;
	}
	if (!virtio_has(&c->bd.vd, VIRTIO_BLK_F_FLUSH)) {
		printf("blkcrash: FAIL the device offers no flush\n");
		return -EINVAL;
	}
	for (unsigned i = 0; i < BATCH; i++) {
		c->buf[i] = dma_alloc(&c->pool, RECORD_BYTES, 4096);
		if (!c->buf[i]) {
			printf("blkcrash: FAIL out of guest memory\n");
			return -ENOMEM;
		}
	}
	return 0;
}

/* Writes records [first, first + n) in flight together; 0 when all were OK. */
static int write_batch(struct crash *c, uint64_t first, unsigned n)
{
	unsigned done = 0;

	for (unsigned i = 0; i < n; i++) {
		struct blk_req *r = &c->req[i];
		uint64_t off = (first + i) * RECORD_BYTES;

		blkpat_fill(c->buf[i], c->seed, off, RECORD_BYTES);
		memset(r, 0, sizeof(*r));
		r->hdr.type = VIRTIO_BLK_T_OUT;
		r->hdr.sector = off / BLK_SECTOR;
		r->status = BLK_STATUS_UNSET;
		r->nseg = 1;
		r->seg[0].addr = (uint64_t)(uintptr_t)c->buf[i];
		r->seg[0].len = RECORD_BYTES;
		if (blkdev_submit(&c->bd, 0, r)) {
			printf("blkcrash: FAIL the queue has no room for %u requests\n", n);
			return -ENOSPC;
		}
	}
	blkdev_kick(&c->bd, 0);
	while (done < n) {
		struct blk_req *r = blkdev_poll(&c->bd, 0);

		if (!r) {
			cpu_relax();
			continue;
		}
		if (r->status != VIRTIO_BLK_S_OK) {
			printf("blkcrash: FAIL write at sector %lu: %s\n", r->hdr.sector,
			       blk_status_name(r->status));
			return -EIO;
		}
		done++;
	}
	return 0;
}

static int flush(struct crash *c)
{
	struct blk_req *r = &c->req[0];

	memset(r, 0, sizeof(*r));
	r->hdr.type = VIRTIO_BLK_T_FLUSH;
	r->status = BLK_STATUS_UNSET;
	if (blkdev_run(&c->bd, 0, r, 60000) || r->status != VIRTIO_BLK_S_OK) {
		printf("blkcrash: FAIL flush: %s\n", blk_status_name(r->status));
		return -EIO;
	}
	return 0;
}

int main(void)
{
	static struct crash c;
	uint64_t records, next = 0;

	if (cmdline_get_u64(bootinfo.cmdline, "blkcrash.seed", &c.seed) == -EINVAL) {
		printf("blkcrash: FAIL blkcrash.seed takes a number\n");
		return GUEST_EXIT_FAIL;
	}
	if (setup(&c))
		return GUEST_EXIT_FAIL;
	records = c.bd.cfg.capacity * BLK_SECTOR / RECORD_BYTES;
	printf("blkcrash: writing %lu records of %u bytes, seed %lu\n", records,
	       (unsigned)RECORD_BYTES, c.seed);
	while (next < records) {
		unsigned n = records - next < BATCH ? (unsigned)(records - next) : BATCH;

		if (write_batch(&c, next, n) || flush(&c))
			return GUEST_EXIT_FAIL;
		next += n;
		printf("blkcrash: durable %lu\n", next * RECORD_BYTES);
	}
	printf("blkcrash: disk full\n");
	return 0;
}
