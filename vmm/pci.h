/* The PCI bus of a drover VM: one PCIe host bridge (1b36:0008, as QEMU's
 * microvm and gpex) at 00:00.0 and conventional PCI functions on bus 0 from
 * slot 1, function 0 each.
 *
 * Configuration space is reached two ways, both decoding to the same bytes:
 * the PC's mechanism #1 (address at port 0xcf8, data at 0xcfc-0xcff; the
 * first 256 bytes only) and ECAM (PCI_ECAM_BASE, 4 KiB per function, bus 0
 * at the base; ACPI's MCFG table describes it).
 *
 * Guest-physical layout (the same as QEMU microvm's, see qemu-peer.md):
 *   0xc000_0000 - 0xdfff_ffff  32-bit MMIO window (BARs)
 *   0xe000_0000 - 0xefff_ffff  ECAM, buses 0..255 (only bus 0 exists)
 *   pci_mmio64_base() ...      64-bit window, above the end of RAM
 * The bus claims both windows on the MMIO bus and decodes its BARs itself,
 * since guests move BARs at run time.
 *
 * BARs: the VMM assigns every memory BAR inside the 32-bit window and turns
 * memory decoding on, as firmware would; a guest may size and move them
 * (write all ones, read back the size mask, write a new base). A BAR decodes
 * only while the command register's memory bit is set and the BAR lies
 * entirely inside one window; whenever that changes, the function's
 * bar_moved hook hears of it (ioeventfds follow their BAR).
 *
 * INTx: function in slot s raises pin p (0 = INTA) on I/O APIC pin
 * PCI_INTX_GSI_BASE + (s + p) % 4, level-triggered, as the DSDT's _PRT says.
 *
 * Locking: one bus mutex serialises configuration accesses, BAR mapping
 * changes and the hooks they call (cfg_read, cfg_write, bar_moved). BAR
 * accesses look the BAR up under it and call bar_read/bar_write without it;
 * the function then locks its own state. Lock order: bus, then function. */
#ifndef DROVER_PCI_H
#define DROVER_PCI_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "guest_mem.h"

#define PCI_ECAM_BASE          0xe0000000ULL
#define PCI_ECAM_SIZE          0x10000000ULL        /* 256 buses x 1 MiB */
#define PCI_MMIO32_BASE        0xc0000000ULL
#define PCI_MMIO32_SIZE        0x20000000ULL
#define PCI_MMIO64_SIZE        (64ULL << 30)
#define PCI_MMIO64_MIN_BASE    (64ULL << 30)
#define PCI_CONFIG_ADDR_PORT   0xcf8
#define PCI_CONFIG_DATA_PORT   0xcfc
#define PCI_INTX_GSI_BASE      16
#define PCI_MAX_SLOTS          32
#define PCI_CFG_SIZE           4096                 /* PCIe extended space */
#define PCI_CFG_LEGACY_SIZE    256
#define PCI_NUM_BARS           6

/* Configuration space registers and bits used by the VMM. */
#define PCI_VENDOR_ID          0x00
#define PCI_DEVICE_ID          0x02
#define PCI_COMMAND            0x04
#define  PCI_COMMAND_IO        0x0001
#define  PCI_COMMAND_MEMORY    0x0002
#define  PCI_COMMAND_MASTER    0x0004
#define  PCI_COMMAND_PARITY    0x0040
#define  PCI_COMMAND_SERR      0x0100
#define  PCI_COMMAND_INTX_DISABLE 0x0400
#define PCI_STATUS             0x06
#define  PCI_STATUS_INTERRUPT  0x0008
#define  PCI_STATUS_CAP_LIST   0x0010
#define PCI_REVISION_ID        0x08
#define PCI_CLASS_PROG         0x09
#define PCI_CLASS_DEVICE       0x0a
#define PCI_CACHE_LINE_SIZE    0x0c
#define PCI_LATENCY_TIMER      0x0d
#define PCI_HEADER_TYPE        0x0e
#define PCI_BASE_ADDRESS_0     0x10
#define  PCI_BAR_MEM_TYPE_64   0x04
#define  PCI_BAR_MEM_PREFETCH  0x08
#define PCI_SUBSYSTEM_VENDOR_ID 0x2c
#define PCI_SUBSYSTEM_ID       0x2e
#define PCI_ROM_ADDRESS        0x30
#define PCI_CAPABILITY_LIST    0x34
#define PCI_INTERRUPT_LINE     0x3c
#define PCI_INTERRUPT_PIN      0x3d
#define PCI_CAP_START          0x40

#define PCI_CAP_ID_VNDR        0x09
#define PCI_CAP_ID_MSIX        0x11

struct pci_bus;
struct pci_dev;
struct mmio_bus;
struct pio_bus;
struct msi_router;

/* What a function does beyond its configuration bytes. Every hook is
 * optional. */
struct pci_dev_ops {
	/* An access of len (1..8) bytes at off inside BAR bar. */
	void (*bar_read)(struct pci_dev *d, unsigned bar, uint64_t off, uint8_t *data,
			 unsigned len);
	void (*bar_write)(struct pci_dev *d, unsigned bar, uint64_t off, const uint8_t *data,
			  unsigned len);
	/* BAR bar now decodes at addr (mapped) or not at all (bus lock held). */
	void (*bar_moved)(struct pci_dev *d, unsigned bar, uint64_t addr, bool mapped);
	/* Before the bytes [off, off+len) of configuration space are read:
	 * a chance to refresh them (bus lock held). */
	void (*cfg_read)(struct pci_dev *d, unsigned off, unsigned len);
	/* After a write to [off, off+len) went through the write mask (bus
	 * lock held). */
	void (*cfg_write)(struct pci_dev *d, unsigned off, unsigned len);
};

struct pci_bar {
	uint64_t size;              /* power of two, >= 4 KiB; 0: unused */
	bool mem64;                 /* takes this BAR and the next */
	bool prefetch;
	uint64_t addr;              /* where it decodes, when mapped */
	bool mapped;
};

struct pci_dev {
	struct pci_bus *bus;
	unsigned slot;
	char name[32];
	const struct pci_dev_ops *ops;
	void *opaque;
	uint8_t cfg[PCI_CFG_SIZE];
	uint8_t wmask[PCI_CFG_SIZE];   /* bits the guest may change */
	uint8_t cfg0[PCI_CFG_SIZE];    /* power-on contents (pci_dev_reset) */
	uint8_t cap_end;               /* next free capability offset */
	uint8_t cap_last;              /* offset of the last capability, 0: none */
	struct pci_bar bar[PCI_NUM_BARS];
	unsigned intx_gsi;
	bool intx_level;               /* what the function asserts */
	bool intx_raised;              /* what the I/O APIC pin carries */
	pthread_mutex_t intx_lock;
};

/* ---- the bus ---- */

/* Builds the bus and its host bridge, claims ports 0xcf8-0xcff on pio and
 * the ECAM and both windows on mmio. vm_fd is the KVM VM (interrupts). The
 * 64-bit window starts above gm's RAM. 0 or -errno with err set. */
int pci_bus_create(struct pci_bus **out, int vm_fd, const struct guest_mem *gm,
		   struct pio_bus *pio, struct mmio_bus *mmio, char *err, size_t errlen);
void pci_bus_destroy(struct pci_bus *bus);
/* The MSI routing table of the VM (msix.h). */
struct msi_router *pci_bus_router(struct pci_bus *bus);
/* Host bridge and configuration address latch back to power-on. */
void pci_bus_reset(struct pci_bus *bus);
json_t *pci_bus_save(struct pci_bus *bus);
int pci_bus_load(struct pci_bus *bus, json_t *saved, char *err, size_t errlen);
/* The function in slot, or NULL. */
struct pci_dev *pci_bus_dev(struct pci_bus *bus, unsigned slot);

/* Where the 64-bit window starts for a VM with gm's RAM. */
uint64_t pci_mmio64_base(const struct guest_mem *gm);

/* ---- configuration space, as the two mechanisms reach it ---- */

/* One access of len (1, 2 or 4) bytes at register reg of bus/slot/function;
 * what does not exist reads as all ones and ignores writes. */
uint32_t pci_cfg_read(struct pci_bus *bus, unsigned busnr, unsigned slot, unsigned fn,
		      unsigned reg, unsigned len);
void pci_cfg_write(struct pci_bus *bus, unsigned busnr, unsigned slot, unsigned fn,
		   unsigned reg, unsigned len, uint32_t val);

/* ---- functions ---- */

/* Fills the header of d (type 0) with its identity; no BARs or
 * capabilities yet. class_code is class << 16 | subclass << 8 | prog-if;
 * intx_pin 0 (none) or 1 (INTA). */
void pci_dev_init(struct pci_dev *d, const char *name, uint16_t vendor, uint16_t device,
		  uint8_t revision, uint32_t class_code, uint16_t subsys_vendor,
		  uint16_t subsys_id, unsigned intx_pin, const struct pci_dev_ops *ops,
		  void *opaque);
/* Declares a memory BAR of size bytes (a power of two, at least 4 KiB). */
int pci_dev_add_bar(struct pci_dev *d, unsigned bar, uint64_t size, bool mem64, bool prefetch);
/* Appends a capability of len bytes with the given id; returns its offset in
 * configuration space, or -ENOSPC. The bytes after the two-byte header are
 * zero and read-only until the caller sets cfg[] and wmask[]. */
int pci_dev_add_cap(struct pci_dev *d, uint8_t id, unsigned len);
/* Puts d in the next free slot, assigns its BARs in the 32-bit window and
 * turns memory decoding on. d's contents at this point are its power-on
 * state. 0, -ENOSPC (no slot or no room in the window). */
int pci_bus_add(struct pci_bus *bus, struct pci_dev *d, char *err, size_t errlen);
/* Back to the power-on configuration; BARs decode where the VMM put them. */
void pci_dev_reset(struct pci_dev *d);
/* Level of the function's INTx pin (honours the command register's INTx
 * disable bit). Any thread. */
void pci_dev_set_irq(struct pci_dev *d, bool level);

/* Configuration space as saved state: {"config": "<hex of 256 bytes>"}
 * (the extended space holds nothing the guest can change). Loading checks
 * identity and read-only bytes, then remaps the BARs. */
json_t *pci_dev_save(struct pci_dev *d);
int pci_dev_load(struct pci_dev *d, json_t *saved, char *err, size_t errlen);

/* "00:01.0" */
void pci_dev_address(const struct pci_dev *d, char *buf, size_t len);

/* Little-endian helpers for configuration and register bytes. */
static inline void pci_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void pci_put32(uint8_t *p, uint32_t v)
{
	for (unsigned i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t pci_get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t pci_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

#endif
