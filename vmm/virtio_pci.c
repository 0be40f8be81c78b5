/* The virtio 1.x PCI transport (see virtio_pci.h). */
#include "virtio_pci.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/kvm.h>

#include "devices.h"
#include "log.h"
#include "util.h"
#include "vm.h"

/* virtio_pci_cap.cfg_type */
#define CAP_COMMON_CFG  1
#define CAP_NOTIFY_CFG  2
#define CAP_ISR_CFG     3
#define CAP_DEVICE_CFG  4
#define CAP_PCI_CFG     5
#define CAP_LEN         16
#define CAP_NOTIFY_LEN  20
#define CAP_PCI_CFG_LEN 20

/* Common configuration registers (4.1.4.3) */
#define CC_DFSELECT     0x00
#define CC_DF           0x04
#define CC_GFSELECT     0x08
#define CC_GF           0x0c
#define CC_MSIX_CONFIG  0x10
#define CC_NUM_QUEUES   0x12
#define CC_STATUS       0x14
#define CC_CFG_GEN      0x15
#define CC_Q_SELECT     0x16
#define CC_Q_SIZE       0x18
#define CC_Q_MSIX       0x1a
#define CC_Q_ENABLE     0x1c
#define CC_Q_NOFF       0x1e
#define CC_Q_DESC       0x20
#define CC_Q_DRIVER     0x28
#define CC_Q_DEVICE     0x30
#define CC_Q_NDATA      0x38
#define CC_Q_RESET      0x3a

#define TRANSPORT_FEATURES ((1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_F_INDIRECT_DESC) | \
			    (1ULL << VIRTIO_F_EVENT_IDX))

static struct virtio_pci *vp_of(struct pci_dev *d)
{
	return d->opaque;
}

static uint8_t status_get(struct virtio_pci *vp)
{
	return __atomic_load_n(&vp->status, __ATOMIC_ACQUIRE);
}

static void put64(uint8_t *p, uint64_t v)
{
	pci_put32(p, (uint32_t)v);
	pci_put32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t get64(const uint8_t *p)
{
	return pci_get32(p) | (uint64_t)pci_get32(p + 4) << 32;
}

static bool overlaps(unsigned off, unsigned len, unsigned reg, unsigned reglen)
{
	return off < reg + reglen && reg < off + len;
}

/* ---- ioeventfds follow BAR 0 ---- */

static void ioeventfd_set(struct virtio_pci *vp, struct virtio_pci_queue *q, uint64_t addr,
			  bool assign)
{
	struct kvm_ioeventfd io = {
		.addr = assign ? addr : q->ioeventfd_addr, .len = 2, .fd = q->kick_fd,
		.flags = assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN,
	};

	if (!assign && !q->ioeventfd)
		return;
	if (ioctl(vp->vm_fd, KVM_IOEVENTFD, &io) < 0) {
		/* Writes then exit to the VMM, which signals the kick itself. */
		log_debug("virtio %s: KVM_IOEVENTFD at 0x%llx: %s", vp->pci.name,
			  (unsigned long long)io.addr, strerror(errno));
		if (!assign)
			q->ioeventfd = false;
		return;
	}
	q->ioeventfd = assign;
	q->ioeventfd_addr = addr;
}

static void vp_bar_moved(struct pci_dev *d, unsigned bar, uint64_t addr, bool mapped)
{
	struct virtio_pci *vp = vp_of(d);

	if (bar != 0)
		return;
	pthread_mutex_lock(&vp->lock);
	for (unsigned i = 0; i < vp->nqueues; i++) {
		ioeventfd_set(vp, &vp->q[i], 0, false);
		if (mapped)
			ioeventfd_set(vp, &vp->q[i],
				      addr + VIRTIO_NOTIFY_OFF + VIRTIO_NOTIFY_MULT * i, true);
	}
	pthread_mutex_unlock(&vp->lock);
}

/* ---- interrupts and errors (any thread) ---- */

static void raise_intx(struct virtio_pci *vp, uint8_t why)
{
	__atomic_fetch_or(&vp->isr, why, __ATOMIC_ACQ_REL);
	pci_dev_set_irq(&vp->pci, true);
}

void virtio_pci_notify_queue(struct virtio_pci *vp, unsigned i)
{
	uint16_t vec = __atomic_load_n(&vp->q[i].msix_vector, __ATOMIC_ACQUIRE);

	if (msix_enabled(&vp->msix)) {
		if (vec != VIRTIO_MSI_NO_VECTOR && msix_notify(&vp->msix, vec) != -EPERM)
			return;
		if (vec == VIRTIO_MSI_NO_VECTOR)
			return;
	}
	raise_intx(vp, VIRTIO_ISR_QUEUE);
}

void virtio_pci_notify_config(struct virtio_pci *vp)
{
	uint16_t vec = __atomic_load_n(&vp->config_vector, __ATOMIC_ACQUIRE);

	if (msix_enabled(&vp->msix)) {
		if (vec != VIRTIO_MSI_NO_VECTOR && msix_notify(&vp->msix, vec) != -EPERM)
			return;
		if (vec == VIRTIO_MSI_NO_VECTOR)
			return;
	}
	raise_intx(vp, VIRTIO_ISR_CONFIG);
}

void virtio_pci_error(struct virtio_pci *vp, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	uint8_t old;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	old = __atomic_fetch_or(&vp->status, VIRTIO_STATUS_NEEDS_RESET, __ATOMIC_ACQ_REL);
	if (old & VIRTIO_STATUS_NEEDS_RESET)
		return;
	log_warn("virtio %s: %s; the device needs a reset", vp->pci.name, msg);
	if (old & VIRTIO_STATUS_DRIVER_OK)
		virtio_pci_notify_config(vp);
}

/* ---- start, stop, reset (vp->lock held) ---- */

static void stop_locked(struct virtio_pci *vp)
{
	if (!vp->running)
		return;
	vp->ops->stop(vp->opaque);
	vp->running = false;
}

static void start_locked(struct virtio_pci *vp)
{
	if (vp->running || vp->paused)
		return;
	if ((status_get(vp) & (VIRTIO_STATUS_DRIVER_OK | VIRTIO_STATUS_NEEDS_RESET)) !=
	    VIRTIO_STATUS_DRIVER_OK)
		return;
	vp->ops->start(vp->opaque);
	vp->running = true;
}

/* Checks the enabled queues against guest RAM; false (and NEEDS_RESET) if
 * one is unusable. */
static bool queues_go_live(struct virtio_pci *vp)
{
	bool event_idx = vp->guest_features & (1ULL << VIRTIO_F_EVENT_IDX);
	bool indirect = vp->guest_features & (1ULL << VIRTIO_F_INDIRECT_DESC);

	for (unsigned i = 0; i < vp->nqueues; i++) {
		struct virtio_pci_queue *q = &vp->q[i];
		char err[160];

		q->live = false;
		if (!q->enabled)
			continue;
		if (virtq_init(&q->vq, vp->mem, q->size, q->desc, q->driver, q->device, event_idx,
			       indirect, err, sizeof(err)) < 0) {
			virtio_pci_error(vp, "queue %u: %s", i, err);
			return false;
		}
		q->live = true;
	}
	return true;
}

static void drain_kick(int fd)
{
	uint64_t n;

	if (read(fd, &n, sizeof(n)) < 0) {
		/* EAGAIN: nothing pending */
	}
}

/* Device reset (status 0): everything but the PCI function's registers. */
static void transport_reset_locked(struct virtio_pci *vp)
{
	stop_locked(vp);
	vp->guest_features = 0;
	vp->dfselect = vp->gfselect = 0;
	__atomic_store_n(&vp->config_vector, VIRTIO_MSI_NO_VECTOR, __ATOMIC_RELEASE);
	__atomic_store_n(&vp->status, 0, __ATOMIC_RELEASE);
	vp->queue_select = 0;
	__atomic_store_n(&vp->isr, 0, __ATOMIC_RELEASE);
	for (unsigned i = 0; i < vp->nqueues; i++) {
		struct virtio_pci_queue *q = &vp->q[i];

		q->live = false;
		q->enabled = false;
		q->size = q->max_size;
		__atomic_store_n(&q->msix_vector, VIRTIO_MSI_NO_VECTOR, __ATOMIC_RELEASE);
		q->desc = q->driver = q->device = 0;
		drain_kick(q->kick_fd);
	}
	pci_dev_set_irq(&vp->pci, false);
}

static void status_write(struct virtio_pci *vp, uint8_t val)
{
	uint8_t old = status_get(vp);

	if (val == 0) {
		transport_reset_locked(vp);
		return;
	}
	if ((val & VIRTIO_STATUS_FEATURES_OK) && !(old & VIRTIO_STATUS_FEATURES_OK)) {
		/* 3.1.1: features the device did not offer, or a driver that is
		 * not a 1.x driver, leave FEATURES_OK clear. */
		if ((vp->guest_features & ~vp->host_features) ||
		    !(vp->guest_features & (1ULL << VIRTIO_F_VERSION_1))) {
			log_debug("virtio %s: driver features 0x%llx refused", vp->pci.name,
				  (unsigned long long)vp->guest_features);
			val &= (uint8_t)~VIRTIO_STATUS_FEATURES_OK;
		}
	}
	__atomic_store_n(&vp->status, (uint8_t)(val | (old & VIRTIO_STATUS_NEEDS_RESET)),
			 __ATOMIC_RELEASE);
	if ((val & VIRTIO_STATUS_DRIVER_OK) && !(old & VIRTIO_STATUS_DRIVER_OK) &&
	    !(old & VIRTIO_STATUS_NEEDS_RESET)) {
		if (!(val & VIRTIO_STATUS_FEATURES_OK)) {
			virtio_pci_error(vp, "DRIVER_OK without FEATURES_OK");
			return;
		}
		if (queues_go_live(vp))
			start_locked(vp);
	}
}

/* ---- the common configuration ---- */

static void common_image(struct virtio_pci *vp, uint8_t *img)
{
	const struct virtio_pci_queue *q = vp->queue_select < vp->nqueues ?
					   &vp->q[vp->queue_select] : NULL;

	memset(img, 0, VIRTIO_COMMON_LEN);
	pci_put32(img + CC_DFSELECT, vp->dfselect);
	pci_put32(img + CC_DF, vp->dfselect < 2 ?
		  (uint32_t)(vp->host_features >> (32 * vp->dfselect)) : 0);
	pci_put32(img + CC_GFSELECT, vp->gfselect);
	pci_put32(img + CC_GF, vp->gfselect < 2 ?
		  (uint32_t)(vp->guest_features >> (32 * vp->gfselect)) : 0);
	pci_put16(img + CC_MSIX_CONFIG, __atomic_load_n(&vp->config_vector, __ATOMIC_ACQUIRE));
	pci_put16(img + CC_NUM_QUEUES, (uint16_t)vp->nqueues);
	img[CC_STATUS] = status_get(vp);
	img[CC_CFG_GEN] = vp->config_generation;
	pci_put16(img + CC_Q_SELECT, vp->queue_select);
	if (!q)
		return;
	pci_put16(img + CC_Q_SIZE, q->size);
	pci_put16(img + CC_Q_MSIX, __atomic_load_n(&q->msix_vector, __ATOMIC_ACQUIRE));
	pci_put16(img + CC_Q_ENABLE, q->enabled);
	pci_put16(img + CC_Q_NOFF, vp->queue_select);
	put64(img + CC_Q_DESC, q->desc);
	put64(img + CC_Q_DRIVER, q->driver);
	put64(img + CC_Q_DEVICE, q->device);
	pci_put16(img + CC_Q_NDATA, vp->queue_select);
}

static uint16_t valid_vector(struct virtio_pci *vp, uint16_t v)
{
	return v < vp->msix.nvec ? v : VIRTIO_MSI_NO_VECTOR;
}

static void common_write(struct virtio_pci *vp, unsigned off, const uint8_t *data, unsigned len)
{
	struct virtio_pci_queue *q;
	uint8_t img[VIRTIO_COMMON_LEN];
	bool setup_open;

	if (off >= VIRTIO_COMMON_LEN)
		return;
	if (len > VIRTIO_COMMON_LEN - off)
		len = VIRTIO_COMMON_LEN - off;
	common_image(vp, img);
	memcpy(img + off, data, len);
	if (overlaps(off, len, CC_DFSELECT, 4))
		vp->dfselect = pci_get32(img + CC_DFSELECT);
	if (overlaps(off, len, CC_GFSELECT, 4))
		vp->gfselect = pci_get32(img + CC_GFSELECT);
	if (overlaps(off, len, CC_GF, 4) && vp->gfselect < 2 &&
	    !(status_get(vp) & VIRTIO_STATUS_FEATURES_OK)) {
		unsigned shift = 32 * vp->gfselect;

		vp->guest_features = (vp->guest_features & ~(0xffffffffULL << shift)) |
				     (uint64_t)pci_get32(img + CC_GF) << shift;
	}
	if (overlaps(off, len, CC_MSIX_CONFIG, 2))
		__atomic_store_n(&vp->config_vector,
				 valid_vector(vp, pci_get16(img + CC_MSIX_CONFIG)), __ATOMIC_RELEASE);
	if (overlaps(off, len, CC_Q_SELECT, 2))
		vp->queue_select = pci_get16(img + CC_Q_SELECT);
	if (overlaps(off, len, CC_STATUS, 1))
		status_write(vp, img[CC_STATUS]);
	q = vp->queue_select < vp->nqueues ? &vp->q[vp->queue_select] : NULL;
	if (!q || overlaps(off, len, CC_Q_SELECT, 2))
		return;
	if (overlaps(off, len, CC_Q_MSIX, 2))
		__atomic_store_n(&q->msix_vector, valid_vector(vp, pci_get16(img + CC_Q_MSIX)),
				 __ATOMIC_RELEASE);
	/* A queue's set-up is the driver's until it enables the queue and
	 * until DRIVER_OK. */
	setup_open = !q->enabled && !(status_get(vp) & VIRTIO_STATUS_DRIVER_OK);
	if (!setup_open)
		return;
	if (overlaps(off, len, CC_Q_SIZE, 2)) {
		uint16_t size = pci_get16(img + CC_Q_SIZE);

		q->size = size <= q->max_size ? size : q->max_size;
	}
	if (overlaps(off, len, CC_Q_DESC, 8))
		q->desc = get64(img + CC_Q_DESC);
	if (overlaps(off, len, CC_Q_DRIVER, 8))
		q->driver = get64(img + CC_Q_DRIVER);
	if (overlaps(off, len, CC_Q_DEVICE, 8))
		q->device = get64(img + CC_Q_DEVICE);
	if (overlaps(off, len, CC_Q_ENABLE, 2) && pci_get16(img + CC_Q_ENABLE) == 1)
		q->enabled = true;
}

/* ---- BAR 0 ---- */

static void vp_bar_read(struct pci_dev *d, unsigned bar, uint64_t off, uint8_t *data,
			unsigned len)
{
	struct virtio_pci *vp = vp_of(d);
	uint8_t img[VIRTIO_COMMON_LEN];

	memset(data, 0, len);
	if (bar != 0 || msix_bar_access(&vp->msix, bar, off, false, data, len))
		return;
	pthread_mutex_lock(&vp->lock);
	if (off < VIRTIO_COMMON_OFF + VIRTIO_COMMON_LEN) {
		common_image(vp, img);
		for (unsigned i = 0; i < len && off + i < VIRTIO_COMMON_LEN; i++)
			data[i] = img[off + i];
	} else if (off == VIRTIO_ISR_OFF) {
		/* Reading ISR status acknowledges the interrupt (4.1.4.5). */
		data[0] = __atomic_exchange_n(&vp->isr, 0, __ATOMIC_ACQ_REL);
		pci_dev_set_irq(&vp->pci, false);
	} else if (off >= VIRTIO_DEVCFG_OFF && off < VIRTIO_DEVCFG_OFF + vp->config_len) {
		unsigned o = (unsigned)(off - VIRTIO_DEVCFG_OFF);

		vp->ops->config_read(vp->opaque, o, data,
				     len < vp->config_len - o ? len : vp->config_len - o);
	}
	pthread_mutex_unlock(&vp->lock);
}

static void vp_bar_write(struct pci_dev *d, unsigned bar, uint64_t off, const uint8_t *data,
			 unsigned len)
{
	struct virtio_pci *vp = vp_of(d);
	uint8_t copy[8];

	memcpy(copy, data, len);
	if (bar != 0 || msix_bar_access(&vp->msix, bar, off, true, copy, len))
		return;
	if (off >= VIRTIO_NOTIFY_OFF && off < VIRTIO_NOTIFY_OFF + VIRTIO_NOTIFY_MULT * vp->nqueues) {
		/* A notification KVM did not catch (no ioeventfd, or a write of
		 * another width): signal the kick as KVM would have. */
		uint64_t one = 1;
		unsigned qi = (unsigned)(off - VIRTIO_NOTIFY_OFF) / VIRTIO_NOTIFY_MULT;

		if (write(vp->q[qi].kick_fd, &one, sizeof(one)) < 0)
			log_warn("virtio %s: kick of queue %u: %s", vp->pci.name, qi,
				 strerror(errno));
		return;
	}
	pthread_mutex_lock(&vp->lock);
	if (off < VIRTIO_COMMON_OFF + VIRTIO_COMMON_LEN) {
		common_write(vp, (unsigned)off, copy, len);
	} else if (off >= VIRTIO_DEVCFG_OFF && off < VIRTIO_DEVCFG_OFF + vp->config_len) {
		unsigned o = (unsigned)(off - VIRTIO_DEVCFG_OFF);

		vp->ops->config_write(vp->opaque, o, copy,
				      len < vp->config_len - o ? len : vp->config_len - o);
	}
	pthread_mutex_unlock(&vp->lock);
}

/* ---- configuration space: MSI-X and the PCI configuration access window ---- */

static bool pcicfg_window(struct virtio_pci *vp, unsigned *bar, uint32_t *off, uint32_t *len)
{
	const uint8_t *c = vp->pci.cfg + vp->pcicfg_cap;

	*bar = c[4];
	*off = pci_get32(c + 8);
	*len = pci_get32(c + 12);
	/* 4.1.4.9: an access of 1, 2 or 4 bytes, aligned, inside the BAR. */
	return *bar == 0 && (*len == 1 || *len == 2 || *len == 4) && !(*off % *len) &&
	       *off + *len <= VIRTIO_BAR_SIZE;
}

static void vp_cfg_read(struct pci_dev *d, unsigned off, unsigned len)
{
	struct virtio_pci *vp = vp_of(d);
	unsigned data = vp->pcicfg_cap + 16, bar;
	uint32_t boff, blen;

	if (!overlaps(off, len, data, 4) || !pcicfg_window(vp, &bar, &boff, &blen))
		return;
	memset(d->cfg + data, 0, 4);
	vp_bar_read(d, bar, boff, d->cfg + data, blen);
}

static void vp_cfg_write(struct pci_dev *d, unsigned off, unsigned len)
{
	struct virtio_pci *vp = vp_of(d);
	unsigned data = vp->pcicfg_cap + 16, bar;
	uint32_t boff, blen;

	msix_cfg_write(&vp->msix, off, len);
	if (overlaps(off, len, data, 4) && pcicfg_window(vp, &bar, &boff, &blen))
		vp_bar_write(d, bar, boff, d->cfg + data, blen);
}

static const struct pci_dev_ops virtio_pci_dev_ops = {
	.bar_read = vp_bar_read,
	.bar_write = vp_bar_write,
	.bar_moved = vp_bar_moved,
	.cfg_read = vp_cfg_read,
	.cfg_write = vp_cfg_write,
};

/* ---- set-up ---- */

static int add_virtio_cap(struct pci_dev *d, uint8_t type, unsigned len, uint32_t off,
			  uint32_t length)
{
	int cap = pci_dev_add_cap(d, PCI_CAP_ID_VNDR, len);

	if (cap < 0)
		return cap;
	d->cfg[cap + 2] = (uint8_t)len;
	d->cfg[cap + 3] = type;
	d->cfg[cap + 4] = 0;              /* BAR 0 */
	pci_put32(d->cfg + cap + 8, off);
	pci_put32(d->cfg + cap + 12, length);
	return cap;
}

static int add_caps(struct virtio_pci *vp)
{
	struct pci_dev *d = &vp->pci;
	int cap;

	if (add_virtio_cap(d, CAP_COMMON_CFG, CAP_LEN, VIRTIO_COMMON_OFF, VIRTIO_COMMON_LEN) < 0 ||
	    add_virtio_cap(d, CAP_ISR_CFG, CAP_LEN, VIRTIO_ISR_OFF, 1) < 0 ||
	    add_virtio_cap(d, CAP_DEVICE_CFG, CAP_LEN, VIRTIO_DEVCFG_OFF, vp->config_len) < 0)
		return -ENOSPC;
	cap = add_virtio_cap(d, CAP_NOTIFY_CFG, CAP_NOTIFY_LEN, VIRTIO_NOTIFY_OFF,
			     VIRTIO_NOTIFY_MULT * vp->nqueues);
	if (cap < 0)
		return cap;
	pci_put32(d->cfg + cap + 16, VIRTIO_NOTIFY_MULT);
	cap = add_virtio_cap(d, CAP_PCI_CFG, CAP_PCI_CFG_LEN, 0, 0);
	if (cap < 0)
		return cap;
	/* bar, offset, length and the data window are the driver's. */
	d->wmask[cap + 4] = 0xff;
	memset(d->wmask + cap + 8, 0xff, 12);
	vp->pcicfg_cap = (unsigned)cap;
	return 0;
}

int virtio_pci_init(struct virtio_pci *vp, struct vm *vm, const char *name, unsigned type,
		    uint32_t class_code, unsigned nqueues, unsigned max_queue_size,
		    uint64_t host_features, unsigned config_len,
		    const struct virtio_dev_ops *ops, void *opaque, char *err, size_t errlen)
{
	int ret;

	memset(vp, 0, sizeof(*vp));
	for (unsigned i = 0; i < VIRTIO_PCI_MAX_QUEUES; i++)
		vp->q[i].kick_fd = -1;
	if (nqueues == 0 || nqueues > VIRTIO_PCI_MAX_QUEUES || config_len > VIRTIO_DEVCFG_MAX) {
		snprintf(err, errlen, "virtio %s: %u queues (1..%d allowed)", name, nqueues,
			 VIRTIO_PCI_MAX_QUEUES);
		return -EINVAL;
	}
	vp->ops = ops;
	vp->opaque = opaque;
	vp->mem = &vm->mem;
	vp->vm_fd = vm->fd;
	vp->host_features = host_features | TRANSPORT_FEATURES;
	vp->config_len = config_len;
	vp->nqueues = nqueues;
	pthread_mutex_init(&vp->lock, NULL);
	pci_dev_init(&vp->pci, name, VIRTIO_PCI_VENDOR, (uint16_t)(VIRTIO_PCI_DEVICE_BASE + type), 1,
		     class_code, VIRTIO_PCI_VENDOR, VIRTIO_PCI_SUBSYS_ID, 1, &virtio_pci_dev_ops, vp);
	ret = pci_dev_add_bar(&vp->pci, 0, VIRTIO_BAR_SIZE, false, false);
	if (ret == 0)
		ret = add_caps(vp);
	if (ret < 0) {
		snprintf(err, errlen, "virtio %s: building configuration space: %s", name,
			 strerror(-ret));
		goto err;
	}
	for (unsigned i = 0; i < nqueues; i++) {
		vp->q[i].max_size = (uint16_t)max_queue_size;
		vp->q[i].kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (vp->q[i].kick_fd < 0) {
			ret = -errno;
			snprintf(err, errlen, "virtio %s: eventfd: %s", name, strerror(-ret));
			goto err;
		}
	}
	ret = msix_init(&vp->msix, &vp->pci, vm->fd, pci_bus_router(vm->pci), nqueues + 1, 0,
			VIRTIO_MSIX_TABLE_OFF, VIRTIO_MSIX_PBA_OFF, err, errlen);
	if (ret < 0)
		goto err;
	transport_reset_locked(vp);
	ret = pci_bus_add(vm->pci, &vp->pci, err, errlen);
	if (ret < 0)
		goto err_msix;
	return 0;

err_msix:
	msix_destroy(&vp->msix);
err:
	for (unsigned i = 0; i < VIRTIO_PCI_MAX_QUEUES; i++)
		if (vp->q[i].kick_fd >= 0)
			close(vp->q[i].kick_fd);
	pthread_mutex_destroy(&vp->lock);
	return ret;
}

void virtio_pci_destroy(struct virtio_pci *vp)
{
	pthread_mutex_lock(&vp->lock);
	stop_locked(vp);
	for (unsigned i = 0; i < vp->nqueues; i++) {
		ioeventfd_set(vp, &vp->q[i], 0, false);
		close(vp->q[i].kick_fd);
		vp->q[i].kick_fd = -1;
	}
	pthread_mutex_unlock(&vp->lock);
	msix_destroy(&vp->msix);
	pthread_mutex_destroy(&vp->lock);
}

struct virtq *virtio_pci_queue(struct virtio_pci *vp, unsigned i)
{
	return i < vp->nqueues && vp->q[i].live ? &vp->q[i].vq : NULL;
}

int virtio_pci_kick_fd(struct virtio_pci *vp, unsigned i)
{
	return i < vp->nqueues ? vp->q[i].kick_fd : -1;
}

bool virtio_pci_has_feature(struct virtio_pci *vp, unsigned bit)
{
	return vp->guest_features & (1ULL << bit);
}

void virtio_pci_reset(struct virtio_pci *vp)
{
	pthread_mutex_lock(&vp->lock);
	transport_reset_locked(vp);
	pthread_mutex_unlock(&vp->lock);
	msix_reset(&vp->msix);
	pci_dev_reset(&vp->pci);
}

void virtio_pci_pause(struct virtio_pci *vp)
{
	pthread_mutex_lock(&vp->lock);
	vp->paused = true;
	stop_locked(vp);
	pthread_mutex_unlock(&vp->lock);
}

void virtio_pci_resume(struct virtio_pci *vp)
{
	pthread_mutex_lock(&vp->lock);
	vp->paused = false;
	start_locked(vp);
	pthread_mutex_unlock(&vp->lock);
}

/* ---- saved state ---- */

json_t *virtio_pci_save(struct virtio_pci *vp)
{
	json_t *queues = json_array(), *o;

	pthread_mutex_lock(&vp->lock);
	/* Requests in flight would be lost: a device is saved stopped (the
	 * VM is paused first). */
	if (vp->running)
		log_warn("virtio %s: saved while running", vp->pci.name);
	for (unsigned i = 0; i < vp->nqueues; i++) {
		const struct virtio_pci_queue *q = &vp->q[i];

		json_array_append_new(queues, json_pack("{s:i, s:i, s:b, s:I, s:I, s:I, s:i, s:i}",
			"size", q->size, "vector", q->msix_vector, "enabled", q->enabled,
			"desc", (json_int_t)q->desc, "driver", (json_int_t)q->driver,
			"device", (json_int_t)q->device,
			"last-avail", q->live ? q->vq.last_avail : 0,
			"used-idx", q->live ? q->vq.used_idx : 0));
	}
	o = json_pack("{s:I, s:I, s:I, s:I, s:i, s:i, s:i, s:i, s:i, s:o}",
		"device-features", (json_int_t)vp->host_features,
		"driver-features", (json_int_t)vp->guest_features,
		"device-feature-select", (json_int_t)vp->dfselect,
		"driver-feature-select", (json_int_t)vp->gfselect,
		"config-vector", vp->config_vector, "status", vp->status,
		"queue-select", vp->queue_select, "isr", vp->isr,
		"config-generation", vp->config_generation, "queues", queues);
	pthread_mutex_unlock(&vp->lock);
	json_object_set_new(o, "pci", pci_dev_save(&vp->pci));
	json_object_set_new(o, "msix", msix_save(&vp->msix));
	return o;
}

struct saved_queue {
	uint64_t size, vector, desc, driver, device, last_avail, used_idx;
	bool enabled;
};

static int load_queue(struct virtio_pci *vp, unsigned i, json_t *j, struct saved_queue *q,
		      char *err, size_t errlen)
{
	char sub[160];
	json_t *en = json_object_get(j, "enabled");

	if (dev_json_uint(j, "size", vp->q[i].max_size, &q->size, sub, sizeof(sub)) < 0 ||
	    dev_json_uint(j, "vector", 0xffff, &q->vector, sub, sizeof(sub)) < 0 ||
	    dev_json_uint(j, "desc", UINT64_MAX >> 1, &q->desc, sub, sizeof(sub)) < 0 ||
	    dev_json_uint(j, "driver", UINT64_MAX >> 1, &q->driver, sub, sizeof(sub)) < 0 ||
	    dev_json_uint(j, "device", UINT64_MAX >> 1, &q->device, sub, sizeof(sub)) < 0 ||
	    dev_json_uint(j, "last-avail", 0xffff, &q->last_avail, sub, sizeof(sub)) < 0 ||
	    dev_json_uint(j, "used-idx", 0xffff, &q->used_idx, sub, sizeof(sub)) < 0) {
		snprintf(err, errlen, "'queues'[%u]: %s", i, sub);
		return -EINVAL;
	}
	if (!json_is_boolean(en)) {
		snprintf(err, errlen, "'queues'[%u]: 'enabled' missing or not a boolean", i);
		return -EINVAL;
	}
	q->enabled = json_is_true(en);
	if (q->vector != VIRTIO_MSI_NO_VECTOR && q->vector >= vp->msix.nvec) {
		snprintf(err, errlen, "'queues'[%u]: vector %llu: the device has %u", i,
			 (unsigned long long)q->vector, vp->msix.nvec);
		return -EINVAL;
	}
	return 0;
}

int virtio_pci_load(struct virtio_pci *vp, json_t *saved, char *err, size_t errlen)
{
	struct saved_queue sq[VIRTIO_PCI_MAX_QUEUES];
	uint64_t hf, gf, dfs, gfs, cvec, status, qsel, isr, gen;
	json_t *queues = json_object_get(saved, "queues"), *pci = json_object_get(saved, "pci");
	json_t *msix = json_object_get(saved, "msix");
	char sub[200];
	int ret;

	if (dev_json_uint(saved, "device-features", UINT64_MAX >> 1, &hf, err, errlen) < 0 ||
	    dev_json_uint(saved, "driver-features", UINT64_MAX >> 1, &gf, err, errlen) < 0 ||
	    dev_json_uint(saved, "device-feature-select", UINT32_MAX, &dfs, err, errlen) < 0 ||
	    dev_json_uint(saved, "driver-feature-select", UINT32_MAX, &gfs, err, errlen) < 0 ||
	    dev_json_uint(saved, "config-vector", 0xffff, &cvec, err, errlen) < 0 ||
	    dev_json_uint(saved, "status", 0xff, &status, err, errlen) < 0 ||
	    dev_json_uint(saved, "queue-select", 0xffff, &qsel, err, errlen) < 0 ||
	    dev_json_uint(saved, "isr", 3, &isr, err, errlen) < 0 ||
	    dev_json_uint(saved, "config-generation", 0xff, &gen, err, errlen) < 0)
		return -EINVAL;
	if (hf != vp->host_features) {
		snprintf(err, errlen, "'device-features' 0x%llx, but this device offers 0x%llx "
			 "(a different disk configuration?)", (unsigned long long)hf,
			 (unsigned long long)vp->host_features);
		return -EINVAL;
	}
	if (gf & ~hf) {
		snprintf(err, errlen, "'driver-features' 0x%llx has features not offered",
			 (unsigned long long)gf);
		return -EINVAL;
	}
	if (cvec != VIRTIO_MSI_NO_VECTOR && cvec >= vp->msix.nvec) {
		snprintf(err, errlen, "'config-vector' %llu: the device has %u vectors",
			 (unsigned long long)cvec, vp->msix.nvec);
		return -EINVAL;
	}
	if (!json_is_array(queues) || json_array_size(queues) != vp->nqueues) {
		snprintf(err, errlen, "'queues' missing or not an array of %u", vp->nqueues);
		return -EINVAL;
	}
	for (unsigned i = 0; i < vp->nqueues; i++) {
		ret = load_queue(vp, i, json_array_get(queues, i), &sq[i], err, errlen);
		if (ret < 0)
			return ret;
	}
	if (!json_is_object(pci) || !json_is_object(msix)) {
		snprintf(err, errlen, "'pci' or 'msix' missing");
		return -EINVAL;
	}

	/* The function's registers first (they move BAR 0, whose hook takes
	 * vp->lock), then the transport under its lock. */
	pthread_mutex_lock(&vp->lock);
	stop_locked(vp);
	pthread_mutex_unlock(&vp->lock);
	ret = pci_dev_load(&vp->pci, pci, sub, sizeof(sub));
	if (ret < 0) {
		snprintf(err, errlen, "'pci': %s", sub);
		goto out_restart;
	}
	ret = msix_load(&vp->msix, msix, sub, sizeof(sub));
	if (ret < 0) {
		snprintf(err, errlen, "'msix': %s", sub);
		goto out_restart;
	}
	pthread_mutex_lock(&vp->lock);
	vp->guest_features = gf;
	vp->dfselect = (uint32_t)dfs;
	vp->gfselect = (uint32_t)gfs;
	vp->config_vector = (uint16_t)cvec;
	vp->queue_select = (uint16_t)qsel;
	vp->isr = (uint8_t)isr;
	vp->config_generation = (uint8_t)gen;
	vp->status = (uint8_t)status;
	for (unsigned i = 0; i < vp->nqueues; i++) {
		struct virtio_pci_queue *q = &vp->q[i];

		q->size = (uint16_t)sq[i].size;
		q->msix_vector = (uint16_t)sq[i].vector;
		q->enabled = sq[i].enabled;
		q->desc = sq[i].desc;
		q->driver = sq[i].driver;
		q->device = sq[i].device;
		q->live = false;
	}
	if ((vp->status & VIRTIO_STATUS_DRIVER_OK) && !(vp->status & VIRTIO_STATUS_NEEDS_RESET) &&
	    queues_go_live(vp)) {
		for (unsigned i = 0; i < vp->nqueues; i++) {
			if (!vp->q[i].live)
				continue;
			vp->q[i].vq.last_avail = (uint16_t)sq[i].last_avail;
			vp->q[i].vq.used_idx = (uint16_t)sq[i].used_idx;
			vp->q[i].vq.signalled_used = (uint16_t)sq[i].used_idx;
		}
	}
	pci_dev_set_irq(&vp->pci, isr && !msix_enabled(&vp->msix));
	start_locked(vp);
	pthread_mutex_unlock(&vp->lock);
	return 0;

out_restart:
	pthread_mutex_lock(&vp->lock);
	start_locked(vp);
	pthread_mutex_unlock(&vp->lock);
	return ret;
}
