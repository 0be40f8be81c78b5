/* virtio-blk over PCI for the test guests (blkdev.h). */
#include "blkdev.h"

/* struct virtio_blk_config offsets (§5.2.4) */
#define CFG_CAPACITY      0
#define CFG_SIZE_MAX      8
#define CFG_SEG_MAX       12
#define CFG_BLK_SIZE      20
#define CFG_WRITEBACK     32
#define CFG_NUM_QUEUES    34
#define CFG_MAX_DISCARD_SECTORS 36
#define CFG_MAX_DISCARD_SEG     40
#define CFG_DISCARD_ALIGN       44
#define CFG_MAX_WZ_SECTORS      48
#define CFG_MAX_WZ_SEG          52
#define CFG_WZ_MAY_UNMAP        56
#define CFG_LEN_DISCARD_WZ      57

#define bfail(bd, ...) snprintf((bd)->error, sizeof((bd)->error), __VA_ARGS__)

int blk_type_reads_disk(uint32_t type)
{
	return type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID;
}

const char *blk_status_name(uint8_t status)
{
	switch (status) {
	case VIRTIO_BLK_S_OK:
		return "OK";
	case VIRTIO_BLK_S_IOERR:
		return "IOERR";
	case VIRTIO_BLK_S_UNSUPP:
		return "UNSUPP";
	case BLK_STATUS_UNSET:
		return "unset";
	}
	return "unknown";
}

static void read_config(struct blkdev *bd)
{
	const struct virtio_dev *vd = &bd->vd;
	struct blk_config *c = &bd->cfg;

	c->capacity = virtio_cfg_read64(vd, CFG_CAPACITY);
	if (virtio_has(vd, VIRTIO_BLK_F_SIZE_MAX))
		c->size_max = virtio_cfg_read32(vd, CFG_SIZE_MAX);
	if (virtio_has(vd, VIRTIO_BLK_F_SEG_MAX))
		c->seg_max = virtio_cfg_read32(vd, CFG_SEG_MAX);
	if (virtio_has(vd, VIRTIO_BLK_F_BLK_SIZE))
		c->blk_size = virtio_cfg_read32(vd, CFG_BLK_SIZE);
	if (virtio_has(vd, VIRTIO_BLK_F_CONFIG_WCE))
		c->writeback = virtio_cfg_read8(vd, CFG_WRITEBACK);
	c->num_queues = 1;
	if (virtio_has(vd, VIRTIO_BLK_F_MQ))
		c->num_queues = virtio_cfg_read16(vd, CFG_NUM_QUEUES);
	if (virtio_has(vd, VIRTIO_BLK_F_DISCARD)) {
		c->max_discard_sectors = virtio_cfg_read32(vd, CFG_MAX_DISCARD_SECTORS);
		c->max_discard_seg = virtio_cfg_read32(vd, CFG_MAX_DISCARD_SEG);
		c->discard_sector_alignment = virtio_cfg_read32(vd, CFG_DISCARD_ALIGN);
	}
	if (virtio_has(vd, VIRTIO_BLK_F_WRITE_ZEROES)) {
		c->max_write_zeroes_sectors = virtio_cfg_read32(vd, CFG_MAX_WZ_SECTORS);
		c->max_write_zeroes_seg = virtio_cfg_read32(vd, CFG_MAX_WZ_SEG);
		c->write_zeroes_may_unmap = virtio_cfg_read8(vd, CFG_WZ_MAY_UNMAP);
	}
}

/* The configuration fields the negotiated features promise must fit in the
 * device-specific structure the capability describes. */
static int config_fits(struct blkdev *bd)
{
	const struct virtio_dev *vd = &bd->vd;
	unsigned need = 8;

	if (virtio_has(vd, VIRTIO_BLK_F_MQ))
		need = CFG_NUM_QUEUES + 2;
	if (virtio_has(vd, VIRTIO_BLK_F_DISCARD) || virtio_has(vd, VIRTIO_BLK_F_WRITE_ZEROES))
		need = CFG_LEN_DISCARD_WZ;
	if (!vd->device_cfg || vd->device_cfg_len < need) {
		bfail(bd, "device configuration: %u bytes, the features need %u",
		      vd->device_cfg ? vd->device_cfg_len : 0, need);
		return -EINVAL;
	}
	return 0;
}

static int setup_queues(struct blkdev *bd, struct dma_pool *pool, unsigned max_queues,
			unsigned queue_size)
{
	unsigned nq = bd->cfg.num_queues;

	if (nq == 0) {
		bfail(bd, "num_queues is 0");
		return -EINVAL;
	}
	if (nq > max_queues)
		nq = max_queues;
	if (nq > BLK_MAX_QUEUES)
		nq = BLK_MAX_QUEUES;
	for (unsigned i = 0; i < nq; i++) {
		int err = virtq_init(&bd->vd, &bd->q[i], pool, (uint16_t)i, (uint16_t)queue_size);
		if (err) {
			bfail(bd, "%s", bd->vd.error);
			return err;
		}
	}
	bd->nq = nq;
	return 0;
}

int blkdev_open(struct blkdev *bd, struct pci *p, struct dma_pool *pool, unsigned index,
		uint64_t wanted, unsigned max_queues, unsigned queue_size)
{
	memset(bd, 0, sizeof(*bd));
	const struct pci_dev *d = pci_find(p, VIRTIO_VENDOR_ID, VIRTIO_PCI_DEVICE_ID(VIRTIO_BLK_ID),
					   index);
	if (!d) {
		bfail(bd, "no virtio-blk PCI function (1af4:%04x) number %u", VIRTIO_PCI_DEVICE_ID(VIRTIO_BLK_ID),
		      index);
		return -ENODEV;
	}
	int err = virtio_pci_open(&bd->vd, p, d);
	if (!err)
		err = virtio_negotiate(&bd->vd, wanted, 0);
	if (err) {
		bfail(bd, "%s", bd->vd.error);
		return err;
	}
	err = config_fits(bd);
	if (err)
		goto err_failed;
	read_config(bd);
	err = setup_queues(bd, pool, max_queues, queue_size);
	if (err)
		goto err_failed;
	virtio_driver_ok(&bd->vd);
	if (virtio_status(&bd->vd) & (VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED)) {
		bfail(bd, "device status 0x%x after DRIVER_OK", virtio_status(&bd->vd));
		return -EIO;
	}
	return 0;

err_failed:
	virtio_set_failed(&bd->vd);
	return err;
}

unsigned blkdev_max_segs(const struct blkdev *bd, unsigned qi)
{
	/* Without SEG_MAX the spec names no limit; one segment is safe. */
	unsigned n = bd->cfg.seg_max ? bd->cfg.seg_max : 1;
	unsigned ring = (unsigned)bd->q[qi].size - 2;   /* header and status */

	if (n > ring)
		n = ring;
	return n < BLK_MAX_SEGS ? n : BLK_MAX_SEGS;
}

int blkdev_submit(struct blkdev *bd, unsigned qi, struct blk_req *r)
{
	struct virtq_buf bufs[BLK_MAX_SEGS + 2];
	int dev_writes = blk_type_reads_disk(r->hdr.type);
	unsigned n = 0;

	if (r->nseg > BLK_MAX_SEGS)
		return -EINVAL;
	bufs[n++] = (struct virtq_buf){ (uintptr_t)&r->hdr, sizeof(r->hdr), 0 };
	r->data_len = 0;
	for (unsigned i = 0; i < r->nseg; i++) {
		bufs[n++] = (struct virtq_buf){ r->seg[i].addr, r->seg[i].len, dev_writes };
		r->data_len += r->seg[i].len;
	}
	bufs[n++] = (struct virtq_buf){ (uintptr_t)&r->status, 1, 1 };
	r->status = BLK_STATUS_UNSET;
	r->queue = (uint16_t)qi;
	r->used_len = 0;
	int err = virtq_add(&bd->q[qi], bufs, n, r);
	if (err)
		return err;
	struct blk_queue_stats *st = &bd->st[qi];
	r->seq = st->next_seq++;
	st->submitted++;
	if (virtq_in_flight(&bd->q[qi]) > st->max_in_flight)
		st->max_in_flight = virtq_in_flight(&bd->q[qi]);
	return 0;
}

void blkdev_kick(struct blkdev *bd, unsigned qi)
{
	virtq_kick(&bd->q[qi]);
}

struct blk_req *blkdev_poll(struct blkdev *bd, unsigned qi)
{
	void *token;
	uint32_t len;

	for (;;) {
		int got = virtq_poll(&bd->q[qi], &token, &len);
		if (got == 0)
			return NULL;
		if (got < 0) {
			bd->bad_used++;
			continue;
		}
		struct blk_req *r = token;
		struct blk_queue_stats *st = &bd->st[qi];
		r->used_len = len;
		st->completed++;
		st->bytes += r->data_len;
		if (st->completed > 1 && r->seq < st->last_done_seq)
			st->overtaken++;
		else
			st->last_done_seq = r->seq;
		return r;
	}
}

int blkdev_run(struct blkdev *bd, unsigned qi, struct blk_req *r, unsigned timeout_ms)
{
	int err = blkdev_submit(bd, qi, r);
	if (err)
		return err;
	blkdev_kick(bd, qi);
	uint64_t deadline = time_ns() + (uint64_t)timeout_ms * 1000000;
	for (;;) {
		struct blk_req *done = blkdev_poll(bd, qi);
		if (done == r)
			return 0;
		if (!done && time_ns() > deadline)
			return -ETIMEDOUT;
		if (!done)
			cpu_relax();
	}
}
