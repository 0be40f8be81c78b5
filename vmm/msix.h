/* MSI-X for PCI functions, delivered by KVM: each vector is a KVM GSI whose
 * route carries the vector's message (address, data), and an irqfd bound to
 * that GSI, so a device thread raises a vector by writing an eventfd.
 *
 * The table and the pending-bit array (PBA) live in one of the function's
 * BARs; the function forwards accesses there (msix_bar_access) and writes
 * to its capability (msix_cfg_write).
 *
 * A vector is masked when MSI-X is off, the function mask is set, or its own
 * mask bit is set. Raising a masked vector sets its pending bit; unmasking a
 * pending vector delivers it then. A vector's route is (re)written when it
 * becomes unmasked with a new message, and when its message changes while
 * unmasked, so the common sequence (mask, write the message, unmask) costs
 * one routing update.
 *
 * Locking: msix->lock guards the table, the flags and the routes; the MSI
 * router has its own lock, taken inside it. msix_notify may run on any
 * thread; the other calls run on vCPU threads under the PCI bus lock. */
#ifndef DROVER_MSIX_H
#define DROVER_MSIX_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pci_dev;

#define MSIX_MAX_VECTORS     64
#define MSIX_ENTRY_SIZE      16
#define MSIX_CAP_LEN         12
#define MSIX_CTRL_ENABLE     0x8000
#define MSIX_CTRL_MASKALL    0x4000
#define MSIX_ENTRY_MASKED    0x1

/* ---- the VM's GSI routing table (KVM_SET_GSI_ROUTING replaces it whole) ---- */
struct msi_router;

/* Keeps KVM's default routes for GSIs 0-23 (PIC and I/O APIC pins) and
 * hands out GSIs from 24 for MSI routes. 0 or -errno. */
int msi_router_new(struct msi_router **out, int vm_fd);
void msi_router_free(struct msi_router *r);
/* A new GSI with an MSI route (message 0 until msi_router_set). */
int msi_router_alloc(struct msi_router *r, unsigned *gsi);
int msi_router_set(struct msi_router *r, unsigned gsi, uint64_t addr, uint32_t data);

/* ---- one function's MSI-X ---- */
struct msix_vector {
	uint8_t entry[MSIX_ENTRY_SIZE];  /* as the guest reads it */
	bool pending;
	unsigned gsi;
	int efd;                          /* the irqfd */
	bool routed;                      /* the route holds route_addr/route_data */
	uint64_t route_addr;
	uint32_t route_data;
};

struct msix {
	struct pci_dev *dev;
	struct msi_router *router;
	int vm_fd;
	unsigned nvec;
	unsigned cap;                     /* capability offset in config space */
	unsigned bar;
	uint32_t table_off, pba_off;
	pthread_mutex_t lock;
	bool enabled, func_masked;        /* from the capability's control word */
	struct msix_vector vec[MSIX_MAX_VECTORS];
};

/* Adds the capability to dev (before pci_bus_add), table at table_off and
 * PBA at pba_off in BAR bar, and binds an irqfd per vector. 0 or -errno with
 * err set. */
int msix_init(struct msix *m, struct pci_dev *dev, int vm_fd, struct msi_router *router,
	      unsigned nvec, unsigned bar, uint32_t table_off, uint32_t pba_off, char *err,
	      size_t errlen);
void msix_destroy(struct msix *m);

/* Handles an access at off in BAR bar if it falls in the table or the PBA;
 * false when it does not (the caller decodes it). */
bool msix_bar_access(struct msix *m, unsigned bar, uint64_t off, bool is_write, uint8_t *data,
		     unsigned len);
/* The function's configuration space changed at [off, off+len). */
void msix_cfg_write(struct msix *m, unsigned off, unsigned len);

bool msix_enabled(struct msix *m);
/* Raises vector v: 0 (delivered or left pending), -EPERM when MSI-X is off
 * (the caller uses INTx), -ENOENT for a vector the function lacks. */
int msix_notify(struct msix *m, unsigned v);

/* Power-on state: every vector masked, nothing pending. The capability's
 * bytes are reset with the function's configuration space. */
void msix_reset(struct msix *m);
/* {"vectors": [{"address", "data", "masked", "pending"}, ...]}; load checks
 * everything first and takes the control word from configuration space,
 * which must be loaded before. */
json_t *msix_save(struct msix *m);
int msix_load(struct msix *m, json_t *saved, char *err, size_t errlen);

#endif
