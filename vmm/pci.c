/* PCI bus, host bridge and configuration mechanisms (see pci.h).
 *
 * Invariants:
 *  - cfg[] holds what the guest reads, except the status register's
 *    interrupt bit, which is computed at read time from the INTx level (the
 *    I/O thread that raises INTx never touches cfg[]);
 *  - a BAR's bar[].addr/mapped change only under the bus lock, through
 *    remap(), which calls bar_moved exactly when one of them changes. */
#include "pci.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/kvm.h>

#include "devices.h"
#include "layout.h"
#include "log.h"
#include "mmio.h"
#include "msix.h"
#include "pio.h"
#include "util.h"
#include "vm.h"

#define HOST_BRIDGE_VENDOR   0x1b36   /* Red Hat, Inc. (QEMU's devices) */
#define HOST_BRIDGE_DEVICE   0x0008   /* PCIe host bridge */
#define PCI_CLASS_HOST_BRIDGE 0x060000
#define CF8_ENABLE           0x80000000u

struct pci_bus {
	int vm_fd;
	pthread_mutex_t lock;
	struct pci_dev host;
	struct pci_dev *slot[PCI_MAX_SLOTS];
	uint32_t cf8;                   /* configuration address latch */
	uint64_t mmio32_next;           /* where the next BAR goes */
	uint64_t win64_base, win64_size;
	struct msi_router *router;
};

static bool ranges_overlap(unsigned a, unsigned alen, unsigned b, unsigned blen)
{
	return a < b + blen && b < a + alen;
}

uint64_t pci_mmio64_base(const struct guest_mem *gm)
{
	uint64_t end = HIGH_RAM_START;

	for (unsigned i = 0; i < gm->nregions; i++)
		if (gm->region[i].gpa + gm->region[i].size > end)
			end = gm->region[i].gpa + gm->region[i].size;
	end = ALIGN_UP(end, 1ULL << 30);
	return end > PCI_MMIO64_MIN_BASE ? end : PCI_MMIO64_MIN_BASE;
}

static bool in_window(const struct pci_bus *bus, uint64_t addr, uint64_t size)
{
	if (addr >= PCI_MMIO32_BASE && size <= PCI_MMIO32_SIZE &&
	    addr - PCI_MMIO32_BASE <= PCI_MMIO32_SIZE - size)
		return true;
	return addr >= bus->win64_base && size <= bus->win64_size &&
	       addr - bus->win64_base <= bus->win64_size - size;
}

static uint16_t cfg_command(const struct pci_dev *d)
{
	return pci_get16(d->cfg + PCI_COMMAND);
}

static uint64_t bar_cfg_addr(const struct pci_dev *d, unsigned i)
{
	uint64_t a = pci_get32(d->cfg + PCI_BASE_ADDRESS_0 + 4 * i) & ~0xfULL;

	if (d->bar[i].mem64)
		a |= (uint64_t)pci_get32(d->cfg + PCI_BASE_ADDRESS_0 + 4 * (i + 1)) << 32;
	return a;
}

/* Bus lock held. */
static void remap(struct pci_dev *d)
{
	bool decode = cfg_command(d) & PCI_COMMAND_MEMORY;

	for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
		struct pci_bar *b = &d->bar[i];
		uint64_t addr;
		bool mapped;

		if (!b->size)
			continue;
		addr = bar_cfg_addr(d, i);
		mapped = decode && addr && in_window(d->bus, addr, b->size);
		if (mapped == b->mapped && (!mapped || addr == b->addr))
			continue;
		b->addr = addr;
		b->mapped = mapped;
		log_debug("pci %s: BAR %u %s 0x%llx (%llu KiB)", d->name, i,
			  mapped ? "at" : "off, was set to", (unsigned long long)addr,
			  (unsigned long long)(b->size >> 10));
		if (d->ops && d->ops->bar_moved)
			d->ops->bar_moved(d, i, addr, mapped);
	}
}

static void intx_update_locked(struct pci_dev *d, bool disabled)
{
	bool want = d->intx_level && !disabled;
	struct kvm_irq_level l = { .irq = d->intx_gsi, .level = want };

	if (want == d->intx_raised || !d->bus)
		return;
	d->intx_raised = want;
	if (ioctl(d->bus->vm_fd, KVM_IRQ_LINE, &l) < 0)
		log_warn("pci %s: INTx on GSI %u: %s", d->name, d->intx_gsi, strerror(errno));
}

/* The command register's INTx disable bit, as the last write left it. */
static void intx_command_changed(struct pci_dev *d)
{
	pthread_mutex_lock(&d->intx_lock);
	intx_update_locked(d, cfg_command(d) & PCI_COMMAND_INTX_DISABLE);
	pthread_mutex_unlock(&d->intx_lock);
}

void pci_dev_set_irq(struct pci_dev *d, bool level)
{
	if (!d->cfg[PCI_INTERRUPT_PIN])
		return;
	pthread_mutex_lock(&d->intx_lock);
	d->intx_level = level;
	/* The command byte may be rewritten meanwhile on a vCPU: the write
	 * path calls intx_command_changed afterwards, which settles the pin. */
	intx_update_locked(d, __atomic_load_n(&d->cfg[PCI_COMMAND + 1], __ATOMIC_RELAXED) &
			   (PCI_COMMAND_INTX_DISABLE >> 8));
	pthread_mutex_unlock(&d->intx_lock);
}

/* ---- configuration accesses of one function (bus lock held) ---- */

static uint32_t dev_cfg_read(struct pci_dev *d, unsigned reg, unsigned len)
{
	uint32_t v = 0;

	if (d->ops && d->ops->cfg_read)
		d->ops->cfg_read(d, reg, len);
	for (unsigned i = 0; i < len; i++) {
		unsigned b = reg + i;
		uint8_t byte = b < PCI_CFG_SIZE ? d->cfg[b] : 0xff;

		if (b == PCI_STATUS) {
			pthread_mutex_lock(&d->intx_lock);
			if (d->intx_level)
				byte |= PCI_STATUS_INTERRUPT;
			pthread_mutex_unlock(&d->intx_lock);
		}
		v |= (uint32_t)byte << (8 * i);
	}
	return v;
}

static void dev_cfg_write(struct pci_dev *d, unsigned reg, unsigned len, uint32_t val)
{
	for (unsigned i = 0; i < len && reg + i < PCI_CFG_SIZE; i++) {
		unsigned b = reg + i;
		uint8_t m = d->wmask[b];

		d->cfg[b] = (uint8_t)((d->cfg[b] & ~m) | ((val >> (8 * i)) & m));
	}
	if (ranges_overlap(reg, len, PCI_COMMAND, 2))
		intx_command_changed(d);
	if (ranges_overlap(reg, len, PCI_COMMAND, 2) ||
	    ranges_overlap(reg, len, PCI_BASE_ADDRESS_0, 4 * PCI_NUM_BARS))
		remap(d);
	if (d->ops && d->ops->cfg_write)
		d->ops->cfg_write(d, reg, len);
}

static struct pci_dev *find_dev(struct pci_bus *bus, unsigned busnr, unsigned slot, unsigned fn)
{
	if (busnr != 0 || fn != 0 || slot >= PCI_MAX_SLOTS)
		return NULL;
	return slot == 0 ? &bus->host : bus->slot[slot];
}

uint32_t pci_cfg_read(struct pci_bus *bus, unsigned busnr, unsigned slot, unsigned fn,
		      unsigned reg, unsigned len)
{
	struct pci_dev *d;
	uint32_t v = len == 4 ? 0xffffffffu : (1u << (8 * len)) - 1;

	pthread_mutex_lock(&bus->lock);
	d = find_dev(bus, busnr, slot, fn);
	if (d && reg < PCI_CFG_SIZE)
		v = dev_cfg_read(d, reg, len);
	pthread_mutex_unlock(&bus->lock);
	return v;
}

void pci_cfg_write(struct pci_bus *bus, unsigned busnr, unsigned slot, unsigned fn,
		   unsigned reg, unsigned len, uint32_t val)
{
	struct pci_dev *d;

	pthread_mutex_lock(&bus->lock);
	d = find_dev(bus, busnr, slot, fn);
	if (d && reg < PCI_CFG_SIZE)
		dev_cfg_write(d, reg, len, val);
	pthread_mutex_unlock(&bus->lock);
}

/* ---- mechanism #1: ports 0xcf8-0xcff ---- */

static uint32_t le_value(const uint8_t *data, unsigned len)
{
	uint32_t v = 0;

	for (unsigned i = 0; i < len && i < 4; i++)
		v |= (uint32_t)data[i] << (8 * i);
	return v;
}

static void le_store(uint8_t *data, unsigned len, uint64_t v)
{
	for (unsigned i = 0; i < len; i++)
		data[i] = (uint8_t)(v >> (8 * i));
}

/* The register a data-port access at port reaches: -1 when the latch is
 * off. Only registers 0..255 are reachable this way. */
static int cf8_target(struct pci_bus *bus, uint16_t port, unsigned len, unsigned *busnr,
		      unsigned *slot, unsigned *fn)
{
	uint32_t a = bus->cf8;
	unsigned reg = (a & 0xfc) | (port & 3);

	if (!(a & CF8_ENABLE) || (port & 3) + len > 4)
		return -1;
	*busnr = (a >> 16) & 0xff;
	*slot = (a >> 11) & 0x1f;
	*fn = (a >> 8) & 7;
	return (int)reg;
}

static void cfport_read(void *opaque, uint16_t port, uint8_t *data, unsigned size)
{
	struct pci_bus *bus = opaque;
	unsigned busnr, slot, fn;
	int reg;

	if (port < PCI_CONFIG_DATA_PORT) {
		/* The address latch answers dword accesses only, as on a PC;
		 * narrower ones reach other chipset registers (none here). */
		if (port == PCI_CONFIG_ADDR_PORT && size == 4) {
			pthread_mutex_lock(&bus->lock);
			le_store(data, 4, bus->cf8);
			pthread_mutex_unlock(&bus->lock);
		} else {
			memset(data, 0xff, size);
		}
		return;
	}
	pthread_mutex_lock(&bus->lock);
	reg = cf8_target(bus, port, size, &busnr, &slot, &fn);
	pthread_mutex_unlock(&bus->lock);
	if (reg < 0)
		memset(data, 0xff, size);
	else
		le_store(data, size, pci_cfg_read(bus, busnr, slot, fn, (unsigned)reg, size));
}

static void cfport_write(void *opaque, uint16_t port, const uint8_t *data, unsigned size)
{
	struct pci_bus *bus = opaque;
	unsigned busnr, slot, fn;
	int reg;

	if (port < PCI_CONFIG_DATA_PORT) {
		if (port == PCI_CONFIG_ADDR_PORT && size == 4) {
			pthread_mutex_lock(&bus->lock);
			bus->cf8 = le_value(data, 4) & 0x80fffffcu;
			pthread_mutex_unlock(&bus->lock);
		}
		return;
	}
	pthread_mutex_lock(&bus->lock);
	reg = cf8_target(bus, port, size, &busnr, &slot, &fn);
	pthread_mutex_unlock(&bus->lock);
	if (reg >= 0)
		pci_cfg_write(bus, busnr, slot, fn, (unsigned)reg, size, le_value(data, size));
}

/* ---- ECAM ---- */

static void ecam_access(struct pci_bus *bus, uint64_t off, bool is_write, uint8_t *data,
			unsigned len)
{
	unsigned busnr = (unsigned)(off >> 20), slot = (off >> 15) & 0x1f, fn = (off >> 12) & 7;
	unsigned reg = off & 0xfff;

	/* A qword access is two dword accesses; anything that crosses a
	 * dword boundary otherwise is not a valid configuration access. */
	if (len == 8 && !(reg & 7)) {
		ecam_access(bus, off, is_write, data, 4);
		ecam_access(bus, off + 4, is_write, data + 4, 4);
		return;
	}
	if ((reg & 3) + len > 4) {
		if (!is_write)
			memset(data, 0xff, len);
		return;
	}
	if (is_write)
		pci_cfg_write(bus, busnr, slot, fn, reg, len, le_value(data, len));
	else
		le_store(data, len, pci_cfg_read(bus, busnr, slot, fn, reg, len));
}

static void ecam_read(void *opaque, uint64_t addr, uint8_t *data, unsigned len)
{
	ecam_access(opaque, addr - PCI_ECAM_BASE, false, data, len);
}

static void ecam_write(void *opaque, uint64_t addr, const uint8_t *data, unsigned len)
{
	uint8_t copy[8];

	memcpy(copy, data, len);
	ecam_access(opaque, addr - PCI_ECAM_BASE, true, copy, len);
}

/* ---- the windows: BAR accesses ---- */

static struct pci_dev *bar_lookup(struct pci_bus *bus, uint64_t addr, unsigned len,
				  unsigned *bar, uint64_t *off)
{
	struct pci_dev *found = NULL;

	pthread_mutex_lock(&bus->lock);
	for (unsigned s = 1; s < PCI_MAX_SLOTS && !found; s++) {
		struct pci_dev *d = bus->slot[s];

		for (unsigned i = 0; d && i < PCI_NUM_BARS; i++) {
			const struct pci_bar *b = &d->bar[i];

			if (b->mapped && addr >= b->addr && addr - b->addr < b->size &&
			    len <= b->size - (addr - b->addr)) {
				found = d;
				*bar = i;
				*off = addr - b->addr;
				break;
			}
		}
	}
	pthread_mutex_unlock(&bus->lock);
	return found;
}

static void window_read(void *opaque, uint64_t addr, uint8_t *data, unsigned len)
{
	unsigned bar;
	uint64_t off;
	struct pci_dev *d = bar_lookup(opaque, addr, len, &bar, &off);

	if (d && d->ops && d->ops->bar_read)
		d->ops->bar_read(d, bar, off, data, len);
	else
		memset(data, 0xff, len);
}

static void window_write(void *opaque, uint64_t addr, const uint8_t *data, unsigned len)
{
	unsigned bar;
	uint64_t off;
	struct pci_dev *d = bar_lookup(opaque, addr, len, &bar, &off);

	if (d && d->ops && d->ops->bar_write)
		d->ops->bar_write(d, bar, off, data, len);
}

/* ---- functions ---- */

void pci_dev_init(struct pci_dev *d, const char *name, uint16_t vendor, uint16_t device,
		  uint8_t revision, uint32_t class_code, uint16_t subsys_vendor,
		  uint16_t subsys_id, unsigned intx_pin, const struct pci_dev_ops *ops,
		  void *opaque)
{
	memset(d, 0, sizeof(*d));
	snprintf(d->name, sizeof(d->name), "%s", name);
	d->ops = ops;
	d->opaque = opaque;
	pthread_mutex_init(&d->intx_lock, NULL);
	pci_put16(d->cfg + PCI_VENDOR_ID, vendor);
	pci_put16(d->cfg + PCI_DEVICE_ID, device);
	d->cfg[PCI_REVISION_ID] = revision;
	d->cfg[PCI_CLASS_PROG] = (uint8_t)class_code;
	pci_put16(d->cfg + PCI_CLASS_DEVICE, (uint16_t)(class_code >> 8));
	d->cfg[PCI_HEADER_TYPE] = 0;
	pci_put16(d->cfg + PCI_SUBSYSTEM_VENDOR_ID, subsys_vendor);
	pci_put16(d->cfg + PCI_SUBSYSTEM_ID, subsys_id);
	d->cfg[PCI_INTERRUPT_PIN] = (uint8_t)intx_pin;
	pci_put16(d->wmask + PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER |
		  PCI_COMMAND_PARITY | PCI_COMMAND_SERR |
		  (intx_pin ? PCI_COMMAND_INTX_DISABLE : 0));
	d->wmask[PCI_CACHE_LINE_SIZE] = 0xff;
	d->wmask[PCI_LATENCY_TIMER] = 0xff;
	d->wmask[PCI_INTERRUPT_LINE] = 0xff;
	d->cap_end = PCI_CAP_START;
}

int pci_dev_add_bar(struct pci_dev *d, unsigned bar, uint64_t size, bool mem64, bool prefetch)
{
	uint8_t *c = d->cfg + PCI_BASE_ADDRESS_0 + 4 * bar;
	uint8_t *m = d->wmask + PCI_BASE_ADDRESS_0 + 4 * bar;
	uint64_t mask = ~(size - 1);

	if (bar >= PCI_NUM_BARS || (mem64 && bar + 1 >= PCI_NUM_BARS) || size < 4096 ||
	    (size & (size - 1)) || (!mem64 && size > (1ULL << 31)) || d->bar[bar].size ||
	    (mem64 && d->bar[bar + 1].size) || (bar > 0 && d->bar[bar - 1].mem64))
		return -EINVAL;
	d->bar[bar] = (struct pci_bar){ .size = size, .mem64 = mem64, .prefetch = prefetch };
	pci_put32(c, (mem64 ? PCI_BAR_MEM_TYPE_64 : 0) | (prefetch ? PCI_BAR_MEM_PREFETCH : 0));
	pci_put32(m, (uint32_t)mask & ~0xfu);
	if (mem64)
		pci_put32(m + 4, (uint32_t)(mask >> 32));
	return 0;
}

int pci_dev_add_cap(struct pci_dev *d, uint8_t id, unsigned len)
{
	unsigned off = d->cap_end;

	if (len < 2 || off + len > PCI_CFG_LEGACY_SIZE)
		return -ENOSPC;
	d->cfg[off] = id;
	d->cfg[off + 1] = 0;
	if (d->cap_last)
		d->cfg[d->cap_last + 1] = (uint8_t)off;
	else
		d->cfg[PCI_CAPABILITY_LIST] = (uint8_t)off;
	pci_put16(d->cfg + PCI_STATUS, pci_get16(d->cfg + PCI_STATUS) | PCI_STATUS_CAP_LIST);
	d->cap_last = (uint8_t)off;
	d->cap_end = (uint8_t)ALIGN_UP(off + len, 4);
	return (int)off;
}

int pci_bus_add(struct pci_bus *bus, struct pci_dev *d, char *err, size_t errlen)
{
	unsigned slot;
	uint64_t next;

	pthread_mutex_lock(&bus->lock);
	for (slot = 1; slot < PCI_MAX_SLOTS && bus->slot[slot]; slot++)
		;
	if (slot == PCI_MAX_SLOTS) {
		pthread_mutex_unlock(&bus->lock);
		snprintf(err, errlen, "pci %s: every slot of bus 0 is taken", d->name);
		return -ENOSPC;
	}
	next = bus->mmio32_next;
	for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
		uint64_t size = d->bar[i].size;
		uint8_t *c = d->cfg + PCI_BASE_ADDRESS_0 + 4 * i;
		uint64_t at;

		if (!size)
			continue;
		at = ALIGN_UP(next, size);
		if (at + size > PCI_MMIO32_BASE + PCI_MMIO32_SIZE) {
			pthread_mutex_unlock(&bus->lock);
			snprintf(err, errlen, "pci %s: BAR %u (%llu KiB) does not fit the 32-bit "
				 "window", d->name, i, (unsigned long long)(size >> 10));
			return -ENOSPC;
		}
		pci_put32(c, (pci_get32(c) & 0xf) | (uint32_t)at);
		if (d->bar[i].mem64)
			pci_put32(c + 4, (uint32_t)(at >> 32));
		next = at + size;
	}
	bus->mmio32_next = next;
	d->bus = bus;
	d->slot = slot;
	d->intx_gsi = PCI_INTX_GSI_BASE +
		      (d->cfg[PCI_INTERRUPT_PIN] ? (slot + d->cfg[PCI_INTERRUPT_PIN] - 1) % 4 : 0);
	pci_put16(d->cfg + PCI_COMMAND, PCI_COMMAND_MEMORY);
	memcpy(d->cfg0, d->cfg, sizeof(d->cfg));
	bus->slot[slot] = d;
	remap(d);
	pthread_mutex_unlock(&bus->lock);
	return 0;
}

void pci_dev_reset(struct pci_dev *d)
{
	pthread_mutex_lock(&d->bus->lock);
	memcpy(d->cfg, d->cfg0, sizeof(d->cfg));
	pthread_mutex_lock(&d->intx_lock);
	d->intx_level = false;
	intx_update_locked(d, false);
	pthread_mutex_unlock(&d->intx_lock);
	remap(d);
	pthread_mutex_unlock(&d->bus->lock);
}

void pci_dev_address(const struct pci_dev *d, char *buf, size_t len)
{
	snprintf(buf, len, "00:%02x.0", d->slot);
}

static const char hexdig[] = "0123456789abcdef";

json_t *pci_dev_save(struct pci_dev *d)
{
	char hex[2 * PCI_CFG_LEGACY_SIZE + 1];

	pthread_mutex_lock(&d->bus->lock);
	for (unsigned i = 0; i < PCI_CFG_LEGACY_SIZE; i++) {
		hex[2 * i] = hexdig[d->cfg[i] >> 4];
		hex[2 * i + 1] = hexdig[d->cfg[i] & 15];
	}
	pthread_mutex_unlock(&d->bus->lock);
	hex[sizeof(hex) - 1] = '\0';
	return json_pack("{s:s}", "config", hex);
}

static int hexval(char c)
{
	const char *p = c ? strchr(hexdig, c) : NULL;

	return p ? (int)(p - hexdig) : -1;
}

int pci_dev_load(struct pci_dev *d, json_t *saved, char *err, size_t errlen)
{
	const char *hex = json_string_value(json_object_get(saved, "config"));
	uint8_t cfg[PCI_CFG_LEGACY_SIZE];

	if (!hex || strlen(hex) != 2 * PCI_CFG_LEGACY_SIZE) {
		snprintf(err, errlen, "'config' missing or not %d hex digits",
			 2 * PCI_CFG_LEGACY_SIZE);
		return -EINVAL;
	}
	for (unsigned i = 0; i < PCI_CFG_LEGACY_SIZE; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			snprintf(err, errlen, "'config' byte 0x%02x is not hex", i);
			return -EINVAL;
		}
		cfg[i] = (uint8_t)(hi << 4 | lo);
		if ((cfg[i] ^ d->cfg0[i]) & ~d->wmask[i]) {
			snprintf(err, errlen, "'config' byte 0x%02x is 0x%02x, but that register "
				 "holds 0x%02x here and is read-only", i, cfg[i], d->cfg0[i]);
			return -EINVAL;
		}
	}
	pthread_mutex_lock(&d->bus->lock);
	memcpy(d->cfg, cfg, sizeof(cfg));
	intx_command_changed(d);
	remap(d);
	pthread_mutex_unlock(&d->bus->lock);
	return 0;
}

/* ---- the bus ---- */

static const struct pci_dev_ops host_bridge_ops = { 0 };

int pci_bus_create(struct pci_bus **out, int vm_fd, const struct guest_mem *gm,
		   struct pio_bus *pio, struct mmio_bus *mmio, char *err, size_t errlen)
{
	struct pci_bus *bus = calloc(1, sizeof(*bus));
	int ret;

	if (!bus)
		return -ENOMEM;
	bus->vm_fd = vm_fd;
	pthread_mutex_init(&bus->lock, NULL);
	bus->mmio32_next = PCI_MMIO32_BASE;
	bus->win64_base = pci_mmio64_base(gm);
	bus->win64_size = PCI_MMIO64_SIZE;
	pci_dev_init(&bus->host, "host-bridge", HOST_BRIDGE_VENDOR, HOST_BRIDGE_DEVICE, 0,
		     PCI_CLASS_HOST_BRIDGE, HOST_BRIDGE_VENDOR, 0x1100, 0, &host_bridge_ops,
		     bus);
	bus->host.bus = bus;
	memcpy(bus->host.cfg0, bus->host.cfg, sizeof(bus->host.cfg));
	ret = msi_router_new(&bus->router, vm_fd);
	if (ret < 0) {
		snprintf(err, errlen, "setting up MSI routing with KVM: %s", strerror(-ret));
		goto err_free;
	}
	ret = pio_register(pio, PCI_CONFIG_ADDR_PORT, 8, "pci-config", cfport_read, cfport_write,
			   bus);
	if (ret < 0) {
		snprintf(err, errlen, "ports 0xcf8-0xcff: %s", strerror(-ret));
		goto err_router;
	}
	ret = mmio_register(mmio, PCI_ECAM_BASE, PCI_ECAM_SIZE, "pci-ecam", ecam_read,
			    ecam_write, bus);
	if (ret == 0)
		ret = mmio_register(mmio, PCI_MMIO32_BASE, PCI_MMIO32_SIZE, "pci-mmio32",
				    window_read, window_write, bus);
	if (ret == 0)
		ret = mmio_register(mmio, bus->win64_base, bus->win64_size, "pci-mmio64",
				    window_read, window_write, bus);
	if (ret < 0) {
		snprintf(err, errlen, "claiming the PCI windows: %s", strerror(-ret));
		goto err_router;
	}
	*out = bus;
	return 0;

err_router:
	msi_router_free(bus->router);
err_free:
	pthread_mutex_destroy(&bus->lock);
	free(bus);
	return ret;
}

void pci_bus_destroy(struct pci_bus *bus)
{
	if (!bus)
		return;
	msi_router_free(bus->router);
	pthread_mutex_destroy(&bus->lock);
	free(bus);
}

struct msi_router *pci_bus_router(struct pci_bus *bus)
{
	return bus->router;
}

struct pci_dev *pci_bus_dev(struct pci_bus *bus, unsigned slot)
{
	return slot < PCI_MAX_SLOTS ? find_dev(bus, 0, slot, 0) : NULL;
}

void pci_bus_reset(struct pci_bus *bus)
{
	pthread_mutex_lock(&bus->lock);
	memcpy(bus->host.cfg, bus->host.cfg0, sizeof(bus->host.cfg));
	bus->cf8 = 0;
	pthread_mutex_unlock(&bus->lock);
}

json_t *pci_bus_save(struct pci_bus *bus)
{
	json_t *host = pci_dev_save(&bus->host);
	json_t *o;

	pthread_mutex_lock(&bus->lock);
	o = json_pack("{s:I, s:o}", "config-address", (json_int_t)bus->cf8, "host-bridge", host);
	pthread_mutex_unlock(&bus->lock);
	return o;
}

int pci_bus_load(struct pci_bus *bus, json_t *saved, char *err, size_t errlen)
{
	json_t *host = json_object_get(saved, "host-bridge");
	char sub[200];
	uint64_t cf8;
	int ret;

	if (dev_json_uint(saved, "config-address", UINT32_MAX, &cf8, err, errlen) < 0)
		return -EINVAL;
	if (cf8 & ~0x80fffffcULL) {
		snprintf(err, errlen, "'config-address' 0x%llx has reserved bits set",
			 (unsigned long long)cf8);
		return -EINVAL;
	}
	if (!json_is_object(host)) {
		snprintf(err, errlen, "'host-bridge' missing or not an object");
		return -EINVAL;
	}
	ret = pci_dev_load(&bus->host, host, sub, sizeof(sub));
	if (ret < 0) {
		snprintf(err, errlen, "'host-bridge': %s", sub);
		return ret;
	}
	pthread_mutex_lock(&bus->lock);
	bus->cf8 = (uint32_t)cf8;
	pthread_mutex_unlock(&bus->lock);
	return 0;
}

/* ---- the bus as a platform device ---- */

static int pci_device_create(struct vm *vm, void **state, char *err, size_t errlen)
{
	int ret = pci_bus_create(&vm->pci, vm->fd, &vm->mem, &vm->pio, &vm->mmio, err, errlen);

	*state = vm->pci;
	return ret;
}

static void pci_device_reset(void *state)
{
	pci_bus_reset(state);
}

static json_t *pci_device_save(void *state)
{
	return pci_bus_save(state);
}

static int pci_device_load(void *state, json_t *saved, char *err, size_t errlen)
{
	return pci_bus_load(state, saved, err, errlen);
}

static void pci_device_destroy(void *state)
{
	pci_bus_destroy(state);
}

const struct device_type pci_device = {
	.name = "pci",
	.create = pci_device_create,
	.reset = pci_device_reset,
	.save = pci_device_save,
	.load = pci_device_load,
	.destroy = pci_device_destroy,
};
