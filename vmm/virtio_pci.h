/* The virtio 1.x PCI transport, modern only (virtio 1.2, 4.1): a device
 * (virtio_blk, ...) gets a PCI function 1af4:(1040 + device type) with
 *
 *   BAR 0 (32-bit memory, 32 KiB)
 *     0x0000  common configuration    (VIRTIO_PCI_CAP_COMMON_CFG)
 *     0x1000  ISR status              (VIRTIO_PCI_CAP_ISR_CFG)
 *     0x2000  device configuration    (VIRTIO_PCI_CAP_DEVICE_CFG)
 *     0x3000  notifications, 4 bytes per queue (VIRTIO_PCI_CAP_NOTIFY_CFG)
 *     0x4000  MSI-X table, 0x5000 its PBA
 *   plus the VIRTIO_PCI_CAP_PCI_CFG window into BAR 0 through config space.
 *
 * Notifications: each queue has an eventfd ("kick"); KVM signals it itself
 * on a 16-bit write to the queue's notify address (KVM_IOEVENTFD, moved
 * with the BAR), and a write that KVM does not catch signals it from the
 * MMIO exit. Interrupts: the queue's MSI-X vector (an irqfd), or with MSI-X
 * off the ISR bit and INTx.
 *
 * Life cycle, driven by the status register (2.1, 3.1): the device starts
 * (ops->start) when the driver sets DRIVER_OK, every enabled queue having
 * been checked against guest RAM; it stops (ops->stop) before a reset
 * (status 0, or a system reset), and while the VM is paused. After stop
 * returns no request is in flight and the device touches no queue.
 *
 * Threads and locks: vp->lock guards the registers; vCPU threads take it.
 * The device's own thread never takes it: the calls it makes
 * (virtio_pci_notify_queue, virtio_pci_error) use atomics, the MSI-X lock
 * and the INTx lock only, so ops->stop may wait for that thread while the
 * caller holds vp->lock. */
#ifndef DROVER_VIRTIO_PCI_H
#define DROVER_VIRTIO_PCI_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "msix.h"
#include "pci.h"
#include "virtqueue.h"

#define VIRTIO_PCI_VENDOR        0x1af4
#define VIRTIO_PCI_DEVICE_BASE   0x1040
#define VIRTIO_PCI_SUBSYS_ID     0x1100    /* >= 0x40: a non-transitional device */

#define VIRTIO_STATUS_ACKNOWLEDGE 0x01
#define VIRTIO_STATUS_DRIVER      0x02
#define VIRTIO_STATUS_DRIVER_OK   0x04
#define VIRTIO_STATUS_FEATURES_OK 0x08
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED      0x80

#define VIRTIO_F_INDIRECT_DESC   28
#define VIRTIO_F_EVENT_IDX       29
#define VIRTIO_F_VERSION_1       32
#define VIRTIO_MSI_NO_VECTOR     0xffff

#define VIRTIO_ISR_QUEUE         0x1
#define VIRTIO_ISR_CONFIG        0x2

/* BAR 0 layout */
#define VIRTIO_BAR_SIZE          0x8000
#define VIRTIO_COMMON_OFF        0x0000
#define VIRTIO_COMMON_LEN        0x3c      /* through queue_reset (1.2) */
#define VIRTIO_ISR_OFF           0x1000
#define VIRTIO_DEVCFG_OFF        0x2000
#define VIRTIO_DEVCFG_MAX        0x1000
#define VIRTIO_NOTIFY_OFF        0x3000
#define VIRTIO_NOTIFY_MULT       4
#define VIRTIO_MSIX_TABLE_OFF    0x4000
#define VIRTIO_MSIX_PBA_OFF      0x5000

#define VIRTIO_PCI_MAX_QUEUES    (MSIX_MAX_VECTORS - 1)

/* What the device does; every hook runs on a vCPU thread (or the main
 * thread) with vp->lock held. */
struct virtio_dev_ops {
	void (*config_read)(void *opaque, unsigned off, uint8_t *data, unsigned len);
	void (*config_write)(void *opaque, unsigned off, const uint8_t *data, unsigned len);
	/* Queues are live (virtio_pci_queue()); start serving them. */
	void (*start)(void *opaque);
	/* Stop serving the queues and wait for requests in flight. */
	void (*stop)(void *opaque);
};

struct virtio_pci_queue {
	struct virtq vq;               /* valid while live */
	bool live;
	uint16_t size, max_size;
	uint16_t msix_vector;          /* atomic: the device thread reads it */
	bool enabled;
	uint64_t desc, driver, device;
	int kick_fd;
	bool ioeventfd;                /* registered with KVM at ioeventfd_addr */
	uint64_t ioeventfd_addr;
};

struct virtio_pci {
	struct pci_dev pci;
	struct msix msix;
	const struct virtio_dev_ops *ops;
	void *opaque;
	const struct guest_mem *mem;
	int vm_fd;
	pthread_mutex_t lock;
	uint64_t host_features, guest_features;
	uint32_t dfselect, gfselect;
	uint16_t config_vector;        /* atomic */
	uint8_t status;                /* atomic: the device thread sets NEEDS_RESET */
	uint8_t config_generation;
	uint16_t queue_select;
	uint8_t isr;                   /* atomic */
	unsigned config_len;
	unsigned pcicfg_cap;
	bool running;                  /* ops->start called, ops->stop not since */
	bool paused;
	unsigned nqueues;
	struct virtio_pci_queue q[VIRTIO_PCI_MAX_QUEUES];
};

struct vm;

/* Builds the function of device type `type` (2: block) and puts it on the
 * VM's PCI bus. host_features are the device's own feature bits;
 * VERSION_1, INDIRECT_DESC and EVENT_IDX are added. 0 or -errno with err
 * set. */
int virtio_pci_init(struct virtio_pci *vp, struct vm *vm, const char *name, unsigned type,
		    uint32_t class_code, unsigned nqueues, unsigned max_queue_size,
		    uint64_t host_features, unsigned config_len,
		    const struct virtio_dev_ops *ops, void *opaque, char *err, size_t errlen);
void virtio_pci_destroy(struct virtio_pci *vp);

/* The live queue i, or NULL. */
struct virtq *virtio_pci_queue(struct virtio_pci *vp, unsigned i);
int virtio_pci_kick_fd(struct virtio_pci *vp, unsigned i);
bool virtio_pci_has_feature(struct virtio_pci *vp, unsigned bit);

/* From the device's thread: the used ring of queue i has news / the device
 * configuration changed / the device failed (sets DEVICE_NEEDS_RESET,
 * logs why and tells the driver). */
void virtio_pci_notify_queue(struct virtio_pci *vp, unsigned i);
void virtio_pci_notify_config(struct virtio_pci *vp);
void virtio_pci_error(struct virtio_pci *vp, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* System reset: stop, the transport and the PCI function to power-on. */
void virtio_pci_reset(struct virtio_pci *vp);
/* VM pause and resume: stop and restart the device if it was running. */
void virtio_pci_pause(struct virtio_pci *vp);
void virtio_pci_resume(struct virtio_pci *vp);

json_t *virtio_pci_save(struct virtio_pci *vp);
int virtio_pci_load(struct virtio_pci *vp, json_t *saved, char *err, size_t errlen);

#endif
