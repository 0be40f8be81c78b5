/* virtio over PCI, modern interface only (virtio 1.2 §4.1), with split
 * virtqueues (§2.7) whose completions the guest polls.
 *
 * Ring invariants the code below keeps:
 *   - a descriptor is on the free list or in exactly one chain the device
 *     owns; a chain goes back to the free list only once its head came
 *     back in the used ring, so completions may come in any order;
 *   - descriptors and the avail ring entry are written before avail->idx,
 *     and avail->idx before the doorbell (mb() between them), so the
 *     device never sees an index ahead of what it points to;
 *   - the used ring is read only up to the used->idx read before it.
 * All MMIO accesses have the width of the field (§4.1.3.1). */
#include "guest.h"

/* struct virtio_pci_cap (§4.1.4) */
#define CAP_CFG_TYPE   3
#define CAP_BAR        4
#define CAP_OFFSET     8
#define CAP_LENGTH     12
#define CAP_NOTIFY_MULT 16

#define CFG_COMMON     1
#define CFG_NOTIFY     2
#define CFG_ISR        3
#define CFG_DEVICE     4

/* struct virtio_pci_common_cfg (§4.1.4.3) */
#define COMMON_DFSELECT      0x00
#define COMMON_DF            0x04
#define COMMON_GFSELECT      0x08
#define COMMON_GF            0x0c
#define COMMON_MSIX          0x10
#define COMMON_NUMQ          0x12
#define COMMON_STATUS        0x14
#define COMMON_CFGGENERATION 0x15
#define COMMON_Q_SELECT      0x16
#define COMMON_Q_SIZE        0x18
#define COMMON_Q_MSIX        0x1a
#define COMMON_Q_ENABLE      0x1c
#define COMMON_Q_NOFF        0x1e
#define COMMON_Q_DESCLO      0x20
#define COMMON_Q_DESCHI      0x24
#define COMMON_Q_AVAILLO     0x28
#define COMMON_Q_AVAILHI     0x2c
#define COMMON_Q_USEDLO      0x30
#define COMMON_Q_USEDHI      0x34
#define COMMON_LEN           0x38

#define VIRTIO_MSI_NO_VECTOR 0xffff
#define RESET_TIMEOUT_NS     1000000000ULL

#define vfail(vd, ...) snprintf((vd)->error, sizeof((vd)->error), __VA_ARGS__)

/* ---- memory for rings and buffers ---- */

int dma_pool_init(struct dma_pool *pool)
{
	uint64_t img_end = (uintptr_t)_image_end, best_lo = 0, best_hi = 0;

	for (unsigned i = 0; i < bootinfo.nmap; i++) {
		const struct memmap_entry *e = &bootinfo.map[i];
		if (e->type != E820_RAM)
			continue;
		uint64_t lo = e->addr > img_end ? e->addr : img_end;
		uint64_t hi = e->addr + e->size;
		if (hi > 0xc0000000ULL)
			hi = 0xc0000000ULL;    /* identity mapped, cached */
		lo = (lo + 4095) & ~4095ULL;
		if (lo < hi && hi - lo > best_hi - best_lo) {
			best_lo = lo;
			best_hi = hi;
		}
	}
	pool->next = best_lo;
	pool->end = best_hi;
	return best_lo < best_hi ? 0 : -ENOMEM;
}

void *dma_alloc(struct dma_pool *pool, uint64_t size, uint64_t align)
{
	uint64_t a = (pool->next + align - 1) & ~(align - 1);

	if (a > pool->end || size > pool->end - a)
		return NULL;
	pool->next = a + size;
	memset(phys(a), 0, size);
	return phys(a);
}

/* ---- registers ---- */

static uint8_t common_read8(const struct virtio_dev *vd, unsigned off)
{
	return mmio_read8(vd->common + off);
}

static uint16_t common_read16(const struct virtio_dev *vd, unsigned off)
{
	return mmio_read16(vd->common + off);
}

static uint32_t common_read32(const struct virtio_dev *vd, unsigned off)
{
	return mmio_read32(vd->common + off);
}

static void common_write8(struct virtio_dev *vd, unsigned off, uint8_t v)
{
	mmio_write8(vd->common + off, v);
}

static void common_write16(struct virtio_dev *vd, unsigned off, uint16_t v)
{
	mmio_write16(vd->common + off, v);
}

static void common_write32(struct virtio_dev *vd, unsigned off, uint32_t v)
{
	mmio_write32(vd->common + off, v);
}

static void common_write64(struct virtio_dev *vd, unsigned off, uint64_t v)
{
	common_write32(vd, off, (uint32_t)v);
	common_write32(vd, off + 4, (uint32_t)(v >> 32));
}

uint8_t virtio_status(const struct virtio_dev *vd)
{
	return common_read8(vd, COMMON_STATUS);
}

static void status_set(struct virtio_dev *vd, uint8_t bits)
{
	common_write8(vd, COMMON_STATUS, (uint8_t)(virtio_status(vd) | bits));
}

uint8_t virtio_cfg_read8(const struct virtio_dev *vd, unsigned off)
{
	return mmio_read8(vd->device_cfg + off);
}

uint16_t virtio_cfg_read16(const struct virtio_dev *vd, unsigned off)
{
	return mmio_read16(vd->device_cfg + off);
}

uint32_t virtio_cfg_read32(const struct virtio_dev *vd, unsigned off)
{
	return mmio_read32(vd->device_cfg + off);
}

/* §4.1.3.1: two 32-bit reads, and §2.5.1: the generation tells whether the
 * device changed the field between them. */
uint64_t virtio_cfg_read64(const struct virtio_dev *vd, unsigned off)
{
	uint8_t gen;
	uint64_t v;

	do {
		gen = common_read8(vd, COMMON_CFGGENERATION);
		v = mmio_read32(vd->device_cfg + off) |
		    (uint64_t)mmio_read32(vd->device_cfg + off + 4) << 32;
	} while (gen != common_read8(vd, COMMON_CFGGENERATION));
	return v;
}

/* ---- discovery and initialisation ---- */

/* The address of the structure a virtio capability describes, checking
 * that it lies inside a memory BAR the scan placed or found. */
static int cap_addr(struct virtio_dev *vd, unsigned cap, uint32_t min_len, uint64_t *addr,
		    uint32_t *len)
{
	const struct pci *p = vd->pci;
	const struct pci_dev *d = vd->pdev;
	uint8_t bar = pci_read8(p, d, cap + CAP_BAR);
	uint32_t off = pci_read32(p, d, cap + CAP_OFFSET);
	uint32_t length = pci_read32(p, d, cap + CAP_LENGTH);
	uint8_t type = pci_read8(p, d, cap + CAP_CFG_TYPE);

	if (bar >= PCI_NUM_BARS || !d->bar[bar].size || d->bar[bar].is_io || !d->bar[bar].addr) {
		vfail(vd, "capability type %u at 0x%x: BAR%u is no placed memory BAR", type, cap, bar);
		return -EINVAL;
	}
	if (length < min_len || (uint64_t)off + length > d->bar[bar].size) {
		vfail(vd, "capability type %u: 0x%x bytes at 0x%x do not fit BAR%u (0x%lx bytes)",
		      type, length, off, bar, d->bar[bar].size);
		return -EINVAL;
	}
	*addr = d->bar[bar].addr + off;
	*len = length;
	return 0;
}

/* §4.1.4: the first capability of each type that the driver can use. */
static int find_structures(struct virtio_dev *vd)
{
	const struct pci *p = vd->pci;
	const struct pci_dev *d = vd->pdev;
	int have_common = 0, have_notify = 0, have_isr = 0;
	uint32_t len;

	for (unsigned cap = pci_find_cap(p, d, PCI_CAP_ID_VNDR, 0); cap;
	     cap = pci_find_cap(p, d, PCI_CAP_ID_VNDR, cap)) {
		uint8_t type = pci_read8(p, d, cap + CAP_CFG_TYPE);
		uint8_t bar = pci_read8(p, d, cap + CAP_BAR);
		if (bar >= PCI_NUM_BARS)
			continue;            /* reserved BAR value: ignore */
		int err = 0;
		if (type == CFG_COMMON && !have_common) {
			err = cap_addr(vd, cap, COMMON_LEN, &vd->common, &len);
			have_common = !err;
		} else if (type == CFG_NOTIFY && !have_notify) {
			err = cap_addr(vd, cap, 2, &vd->notify_base, &vd->notify_len);
			vd->notify_mult = pci_read32(p, d, cap + CAP_NOTIFY_MULT);
			have_notify = !err;
		} else if (type == CFG_ISR && !have_isr) {
			err = cap_addr(vd, cap, 1, &vd->isr, &len);
			have_isr = !err;
		} else if (type == CFG_DEVICE && !vd->device_cfg) {
			err = cap_addr(vd, cap, 1, &vd->device_cfg, &vd->device_cfg_len);
		}
		if (err)
			return err;
	}
	if (!have_common || !have_notify || !have_isr) {
		vfail(vd, "missing virtio capabilities:%s%s%s", have_common ? "" : " common",
		      have_notify ? "" : " notify", have_isr ? "" : " isr");
		return -ENODEV;
	}
	return 0;
}

void virtio_reset(struct virtio_dev *vd)
{
	common_write8(vd, COMMON_STATUS, 0);
}

/* §4.1.4.3.2: after writing 0 the driver waits for status to read 0. */
static int reset_and_wait(struct virtio_dev *vd)
{
	uint64_t deadline = time_ns() + RESET_TIMEOUT_NS;

	virtio_reset(vd);
	while (virtio_status(vd) != 0) {
		if (time_ns() > deadline) {
			vfail(vd, "device status 0x%x still not 0 one second after a reset",
			      virtio_status(vd));
			return -ETIMEDOUT;
		}
		cpu_relax();
	}
	return 0;
}

int virtio_pci_open(struct virtio_dev *vd, const struct pci *p, const struct pci_dev *d)
{
	memset(vd, 0, sizeof(*vd));
	vd->pci = p;
	vd->pdev = d;
	int err = find_structures(vd);
	if (err)
		return err;
	pci_enable(p, d);
	err = reset_and_wait(vd);
	if (err)
		return err;
	status_set(vd, VIRTIO_STATUS_ACKNOWLEDGE);
	status_set(vd, VIRTIO_STATUS_DRIVER);
	vd->max_queues = common_read16(vd, COMMON_NUMQ);
	/* MSI-X stays disabled in the capability, where vectors do not
	 * count; say so to the device all the same. */
	common_write16(vd, COMMON_MSIX, VIRTIO_MSI_NO_VECTOR);
	return 0;
}

static uint64_t read_features(struct virtio_dev *vd, unsigned dselect, unsigned dreg)
{
	common_write32(vd, dselect, 0);
	uint64_t lo = common_read32(vd, dreg);
	common_write32(vd, dselect, 1);
	return lo | (uint64_t)common_read32(vd, dreg) << 32;
}

int virtio_negotiate(struct virtio_dev *vd, uint64_t wanted, uint64_t required)
{
	required |= 1ULL << VIRTIO_F_VERSION_1;
	wanted |= required;
	vd->offered = read_features(vd, COMMON_DFSELECT, COMMON_DF);
	if ((vd->offered & required) != required) {
		vfail(vd, "device offers features 0x%lx, lacking required 0x%lx", vd->offered,
		      required & ~vd->offered);
		status_set(vd, VIRTIO_STATUS_FAILED);
		return -ENOTSUP;
	}
	vd->features = vd->offered & wanted;
	common_write32(vd, COMMON_GFSELECT, 0);
	common_write32(vd, COMMON_GF, (uint32_t)vd->features);
	common_write32(vd, COMMON_GFSELECT, 1);
	common_write32(vd, COMMON_GF, (uint32_t)(vd->features >> 32));
	status_set(vd, VIRTIO_STATUS_FEATURES_OK);
	if (!(virtio_status(vd) & VIRTIO_STATUS_FEATURES_OK)) {
		vfail(vd, "device refused features 0x%lx (FEATURES_OK did not stick)", vd->features);
		status_set(vd, VIRTIO_STATUS_FAILED);
		return -ENOTSUP;
	}
	uint64_t back = read_features(vd, COMMON_GFSELECT, COMMON_GF);
	if (back != vd->features) {
		vfail(vd, "driver features read back 0x%lx, written 0x%lx", back, vd->features);
		status_set(vd, VIRTIO_STATUS_FAILED);
		return -EIO;
	}
	return 0;
}

int virtio_has(const struct virtio_dev *vd, unsigned bit)
{
	return (vd->features >> bit) & 1;
}

void virtio_driver_ok(struct virtio_dev *vd)
{
	status_set(vd, VIRTIO_STATUS_DRIVER_OK);
}

void virtio_set_failed(struct virtio_dev *vd)
{
	status_set(vd, VIRTIO_STATUS_FAILED);
}

/* ---- virtqueues ---- */

int virtq_init(struct virtio_dev *vd, struct virtq *q, struct dma_pool *pool,
	       uint16_t index, uint16_t max_size)
{
	memset(q, 0, sizeof(*q));
	if (index >= vd->max_queues) {
		vfail(vd, "queue %u: the device has %u", index, vd->max_queues);
		return -EINVAL;
	}
	common_write16(vd, COMMON_Q_SELECT, index);
	uint16_t size = common_read16(vd, COMMON_Q_SIZE);
	if (size == 0 || (size & (size - 1))) {
		vfail(vd, "queue %u: size %u (not a power of two, or unavailable)", index, size);
		return -EINVAL;
	}
	if (common_read16(vd, COMMON_Q_ENABLE)) {
		vfail(vd, "queue %u: enabled before the driver set it up", index);
		return -EIO;
	}
	if (max_size > VIRTQ_MAX_SIZE)
		max_size = VIRTQ_MAX_SIZE;
	while (size > max_size)
		size >>= 1;

	/* §2.7: descriptor table 16-byte aligned, available ring 2, used
	 * ring 4; a page each keeps them apart. */
	q->desc = dma_alloc(pool, 16ULL * size, 4096);
	q->avail = dma_alloc(pool, 6 + 2ULL * size, 4096);
	q->used = dma_alloc(pool, 6 + 8ULL * size, 4096);
	if (!q->desc || !q->avail || !q->used) {
		vfail(vd, "queue %u: out of guest memory for the rings", index);
		return -ENOMEM;
	}
	q->used_ring = (volatile struct virtq_used_elem *)(q->used + 2);
	q->index = index;
	q->size = size;
	q->num_free = size;
	for (uint16_t i = 0; i < size; i++)
		q->desc[i].next = (uint16_t)(i + 1);
	q->avail[0] = VIRTQ_AVAIL_F_NO_INTERRUPT;

	uint16_t noff = common_read16(vd, COMMON_Q_NOFF);
	uint64_t notify_off = (uint64_t)noff * vd->notify_mult;
	if (notify_off + 2 > vd->notify_len) {
		vfail(vd, "queue %u: doorbell at 0x%lx beyond the notify structure (0x%x bytes)",
		      index, notify_off, vd->notify_len);
		return -EINVAL;
	}
	q->notify = vd->notify_base + notify_off;
	common_write16(vd, COMMON_Q_SIZE, size);
	common_write16(vd, COMMON_Q_MSIX, VIRTIO_MSI_NO_VECTOR);
	common_write64(vd, COMMON_Q_DESCLO, (uintptr_t)q->desc);
	common_write64(vd, COMMON_Q_AVAILLO, (uintptr_t)q->avail);
	common_write64(vd, COMMON_Q_USEDLO, (uintptr_t)q->used);
	common_write16(vd, COMMON_Q_ENABLE, 1);
	return 0;
}

int virtq_add(struct virtq *q, const struct virtq_buf *bufs, unsigned n, void *token)
{
	if (n == 0 || n > q->size)
		return -EINVAL;
	for (unsigned i = 1; i < n; i++)
		if (bufs[i - 1].device_writes && !bufs[i].device_writes)
			return -EINVAL;
	if (n > q->num_free)
		return -ENOSPC;

	uint16_t head = q->free_head, d = head, last = head;
	for (unsigned i = 0; i < n; i++) {
		volatile struct virtq_desc *desc = &q->desc[d];
		desc->addr = bufs[i].addr;
		desc->len = bufs[i].len;
		desc->flags = (uint16_t)((bufs[i].device_writes ? VIRTQ_DESC_F_WRITE : 0) |
					 (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
		last = d;
		d = desc->next;
	}
	q->free_head = q->desc[last].next;
	q->num_free = (uint16_t)(q->num_free - n);
	q->token[head] = token;
	q->chain_len[head] = (uint16_t)n;

	q->avail[2 + (q->avail_idx & (q->size - 1))] = head;
	q->avail_idx++;
	q->pending++;
	q->in_flight++;
	return 0;
}

void virtq_kick(struct virtq *q)
{
	if (!q->pending)
		return;
	__asm__ volatile("" ::: "memory");
	q->avail[1] = q->avail_idx;
	q->pending = 0;
	mb();           /* avail->idx visible before used->flags is read */
	if (q->used[0] & VIRTQ_USED_F_NO_NOTIFY) {
		q->kicks_skipped++;
		return;
	}
	mmio_write16(q->notify, q->index);
	q->kicks++;
}

int virtq_poll(struct virtq *q, void **token, uint32_t *len)
{
	uint16_t used_idx = q->used[1];

	if (used_idx == q->last_used)
		return 0;
	__asm__ volatile("" ::: "memory");   /* the element after the index */
	volatile struct virtq_used_elem *e = &q->used_ring[q->last_used & (q->size - 1)];
	uint32_t head = e->id;
	*len = e->len;
	q->last_used++;
	if (head >= q->size || !q->chain_len[head]) {
		/* The device handed back something it did not own. */
		*token = NULL;
		return -EIO;
	}
	uint16_t n = q->chain_len[head], d = (uint16_t)head;
	for (uint16_t i = 1; i < n; i++)
		d = q->desc[d].next;
	q->desc[d].next = q->free_head;
	q->free_head = (uint16_t)head;
	q->num_free = (uint16_t)(q->num_free + n);
	q->chain_len[head] = 0;
	q->in_flight--;
	*token = q->token[head];
	q->token[head] = NULL;
	return 1;
}

unsigned virtq_in_flight(const struct virtq *q)
{
	return q->in_flight;
}
