/* PCI configuration space and resource assignment for the test guests.
 *
 * ECAM comes from the ACPI MCFG table, else from the host bridge's _CBA in
 * the DSDT (QEMU 7.2's microvm has no MCFG), else configuration mechanism
 * #1 serves (ports 0xCF8/0xCFC, 256 bytes per function).
 *
 * No firmware runs before a PVH guest, so nobody has numbered the buses
 * behind bridges or placed the BARs: pci_scan() does what a PC's firmware
 * would, in two passes.
 *   1. Walk bus 0 depth first; every bridge gets the next bus number as its
 *      secondary bus and the last number used below it as its subordinate
 *      bus. Every BAR is sized (with decoding off, so that the all-ones
 *      probe never decodes).
 *   2. Place every memory BAR left at 0 inside the 32-bit window, naturally
 *      aligned, clear of BARs something else already placed; behind a
 *      bridge, inside a 1 MiB aligned memory window programmed into it.
 * I/O BARs are sized but never placed: neither QEMU's microvm nor drover
 * has an I/O window, and modern virtio needs none. */
#include "guest.h"

#define MCFG_ENTRIES_OFF 44
#define MCFG_ENTRY_SIZE  16

#define CF8_ADDR 0xcf8
#define CF8_DATA 0xcfc

/* Type 1 (bridge) header */
#define PCI_PRIMARY_BUS      0x18
#define PCI_SECONDARY_BUS    0x19
#define PCI_SUBORDINATE_BUS  0x1a
#define PCI_IO_BASE          0x1c
#define PCI_IO_LIMIT         0x1d
#define PCI_MEMORY_BASE      0x20
#define PCI_MEMORY_LIMIT     0x22
#define PCI_PREF_BASE        0x24
#define PCI_PREF_LIMIT       0x26
#define PCI_PREF_BASE_HI     0x28
#define PCI_PREF_LIMIT_HI    0x2c

#define BRIDGE_WINDOW_ALIGN  0x100000ULL
#define MAPPED_LIMIT         0x100000000ULL
#define UNCACHED_BASE        0xc0000000ULL   /* head.S maps 3-4 GiB uncached */

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

#define pci_fail(p, ...) snprintf((p)->error, sizeof((p)->error), __VA_ARGS__)

const char *pci_access_name(enum pci_access a)
{
	switch (a) {
	case PCI_ACCESS_ECAM:
		return "ecam";
	case PCI_ACCESS_CF8:
		return "cf8";
	case PCI_ACCESS_NONE:
		break;
	}
	return "none";
}

/* ---- configuration space access ---- */

static uint64_t ecam_addr(const struct pci *p, uint8_t bus, uint8_t dev, uint8_t fn, unsigned off)
{
	return p->ecam_base + ((uint64_t)bus << 20 | (uint64_t)dev << 15 |
			       (uint64_t)fn << 12 | (off & 0xfff));
}

static void cf8_select(uint8_t bus, uint8_t dev, uint8_t fn, unsigned off)
{
	outl(CF8_ADDR, 0x80000000u | (uint32_t)bus << 16 | (uint32_t)dev << 11 |
			       (uint32_t)fn << 8 | (off & 0xfc));
}

/* Functions addressed by number, for the scan (no pci_dev exists yet). */
static uint32_t cfg_read(const struct pci *p, uint8_t bus, uint8_t dev, uint8_t fn,
			 unsigned off, unsigned width)
{
	if (p->access == PCI_ACCESS_ECAM) {
		if (bus < p->bus_first || bus > p->bus_last || off >= 4096)
			return 0xffffffff;
		uint64_t a = ecam_addr(p, bus, dev, fn, off);
		return width == 1 ? mmio_read8(a) : width == 2 ? mmio_read16(a) : mmio_read32(a);
	}
	if (p->access != PCI_ACCESS_CF8 || off >= 256)
		return 0xffffffff;
	cf8_select(bus, dev, fn, off);
	uint16_t port = (uint16_t)(CF8_DATA + (off & 3));
	return width == 1 ? inb(port) : width == 2 ? inw(port) : inl(CF8_DATA);
}

static void cfg_write(const struct pci *p, uint8_t bus, uint8_t dev, uint8_t fn,
		      unsigned off, unsigned width, uint32_t v)
{
	if (p->access == PCI_ACCESS_ECAM) {
		if (bus < p->bus_first || bus > p->bus_last || off >= 4096)
			return;
		uint64_t a = ecam_addr(p, bus, dev, fn, off);
		if (width == 1)
			mmio_write8(a, (uint8_t)v);
		else if (width == 2)
			mmio_write16(a, (uint16_t)v);
		else
			mmio_write32(a, v);
		return;
	}
	if (p->access != PCI_ACCESS_CF8 || off >= 256)
		return;
	cf8_select(bus, dev, fn, off);
	uint16_t port = (uint16_t)(CF8_DATA + (off & 3));
	if (width == 1)
		outb(port, (uint8_t)v);
	else if (width == 2)
		outw(port, (uint16_t)v);
	else
		outl(CF8_DATA, v);
}

uint8_t pci_read8(const struct pci *p, const struct pci_dev *d, unsigned off)
{
	return (uint8_t)cfg_read(p, d->bus, d->dev, d->fn, off, 1);
}

uint16_t pci_read16(const struct pci *p, const struct pci_dev *d, unsigned off)
{
	return (uint16_t)cfg_read(p, d->bus, d->dev, d->fn, off, 2);
}

uint32_t pci_read32(const struct pci *p, const struct pci_dev *d, unsigned off)
{
	return cfg_read(p, d->bus, d->dev, d->fn, off, 4);
}

void pci_write8(const struct pci *p, const struct pci_dev *d, unsigned off, uint8_t v)
{
	cfg_write(p, d->bus, d->dev, d->fn, off, 1, v);
}

void pci_write16(const struct pci *p, const struct pci_dev *d, unsigned off, uint16_t v)
{
	cfg_write(p, d->bus, d->dev, d->fn, off, 2, v);
}

void pci_write32(const struct pci *p, const struct pci_dev *d, unsigned off, uint32_t v)
{
	cfg_write(p, d->bus, d->dev, d->fn, off, 4, v);
}

/* ---- finding configuration space ---- */

static int ecam_from_mcfg(struct pci *p)
{
	const struct acpi_header *mcfg = acpi_find_table("MCFG", 0);

	if (!mcfg)
		return -ENOENT;
	const uint8_t *t = (const uint8_t *)mcfg;
	for (unsigned off = MCFG_ENTRIES_OFF; off + MCFG_ENTRY_SIZE <= mcfg->length;
	     off += MCFG_ENTRY_SIZE) {
		uint64_t base = *(const uint64_t *)(t + off);
		uint16_t segment = *(const uint16_t *)(t + off + 8);
		uint8_t first = t[off + 10], last = t[off + 11];
		if (segment != 0)
			continue;
		uint64_t end = base + ((uint64_t)last + 1) * (1 << 20);
		if (base < UNCACHED_BASE || end > MAPPED_LIMIT || first > last) {
			pci_fail(p, "MCFG: ECAM at 0x%lx for buses %u-%u lies outside 3-4 GiB",
				 base, first, last);
			return -ERANGE;
		}
		p->ecam_base = base;
		p->bus_first = first;
		p->bus_last = last;
		p->ecam_source = "mcfg";
		return 0;
	}
	pci_fail(p, "MCFG has no entry for segment 0");
	return -ENOENT;
}

/* An AML integer constant at p (ZeroOp, OneOp, Byte/Word/DWord/QWord
 * prefix); -1 when p holds something else. */
static int aml_integer(const uint8_t *p, const uint8_t *end, uint64_t *v)
{
	static const unsigned widths[] = { 1, 2, 4, 0, 8 };   /* prefixes 0x0a-0x0e */

	if (p >= end)
		return -1;
	if (*p == 0x00 || *p == 0x01) {
		*v = *p;
		return 0;
	}
	if (*p < 0x0a || *p > 0x0e || *p == 0x0d)
		return -1;
	unsigned w = widths[*p - 0x0a];
	if (p + 1 + w > end)
		return -1;
	*v = 0;
	for (unsigned i = 0; i < w; i++)
		*v |= (uint64_t)p[1 + i] << (8 * i);
	return 0;
}

/* The host bridge's _CBA (configuration base address) in the DSDT, as
 * QEMU's microvm gives it instead of an MCFG: "Name (_CBA, value)" or a
 * method that only returns a constant ("Method (_CBA) { Return (value) }":
 * MethodOp, PkgLength, the name, flags, ReturnOp, value). */
static int ecam_from_dsdt(struct pci *p)
{
	const struct acpi_header *dsdt = acpi_find_table("DSDT", 0);

	if (!dsdt)
		return -ENOENT;
	const uint8_t *aml = (const uint8_t *)dsdt, *end = aml + dsdt->length;
	for (const uint8_t *n = aml + sizeof(*dsdt) + 2; n + 4 < end; n++) {
		if (memcmp(n, "_CBA", 4) != 0)
			continue;
		uint64_t base;
		int found = n[-1] == 0x08 ? aml_integer(n + 4, end, &base) :
			    n + 5 < end && n[5] == 0xa4 ? aml_integer(n + 6, end, &base) : -1;
		if (found)
			continue;
		/* 256 buses unless 4 GiB comes first: only numbered buses are
		 * ever read. */
		uint64_t buses = base < MAPPED_LIMIT ? (MAPPED_LIMIT - base) >> 20 : 0;
		if (base < UNCACHED_BASE || buses == 0) {
			pci_fail(p, "DSDT: _CBA 0x%lx lies outside 3-4 GiB", base);
			return -ERANGE;
		}
		p->ecam_base = base;
		p->bus_first = 0;
		p->bus_last = (uint8_t)(buses > 256 ? 255 : buses - 1);
		p->ecam_source = "dsdt _CBA";
		return 0;
	}
	return -ENOENT;
}

static int cf8_present(void)
{
	outl(CF8_ADDR, 0x80000000u);
	return inl(CF8_ADDR) == 0x80000000u;
}

int pci_init(struct pci *p, enum pci_access access, uint64_t win_base, uint64_t win_end)
{
	memset(p, 0, sizeof(*p));
	if (win_base < UNCACHED_BASE || win_end > MAPPED_LIMIT || win_base >= win_end) {
		pci_fail(p, "memory window 0x%lx-0x%lx lies outside 3-4 GiB", win_base, win_end);
		return -ERANGE;
	}
	p->win_base = p->win_next = win_base;
	p->win_end = win_end;

	if (access != PCI_ACCESS_CF8) {
		int err = ecam_from_mcfg(p);
		if (err == -ENOENT)
			err = ecam_from_dsdt(p);
		if (err == 0) {
			p->access = PCI_ACCESS_ECAM;
			return 0;
		}
		if (err == -ENOENT)
			pci_fail(p, "neither an MCFG table nor a _CBA in the DSDT describes ECAM");
		if (access == PCI_ACCESS_ECAM)
			return err;
	}
	/* Without usable ECAM, p->error already says why; keep it if the
	 * ports are missing too. */
	if (!cf8_present()) {
		if (access == PCI_ACCESS_CF8)
			pci_fail(p, "no configuration ports at 0xcf8");
		return -ENODEV;
	}
	p->error[0] = '\0';
	p->access = PCI_ACCESS_CF8;
	p->ecam_source = "ports 0xcf8/0xcfc";
	p->bus_first = 0;
	p->bus_last = 255;
	return 0;
}

/* ---- pass 1: enumeration and BAR sizing ---- */

/* Sizes BAR i (and i+1 for a 64-bit one); returns how many BAR slots it
 * took. Decoding must be off. */
static unsigned bar_probe(const struct pci *p, struct pci_dev *d, unsigned i)
{
	unsigned off = PCI_BAR0 + 4 * i;
	uint32_t lo = pci_read32(p, d, off);
	struct pci_bar *b = &d->bar[i];

	if (lo & 1) {
		pci_write32(p, d, off, 0xffffffff);
		uint32_t m = pci_read32(p, d, off) & ~3u;
		pci_write32(p, d, off, lo);
		if (!m)
			return 1;
		if (!(m & 0xffff0000))
			m |= 0xffff0000;      /* 16-bit I/O decoders */
		b->is_io = 1;
		b->addr = lo & ~3u;
		b->size = (uint32_t)(~m + 1);
		return 1;
	}
	int is64 = ((lo >> 1) & 3) == 2;
	uint32_t hi = is64 ? pci_read32(p, d, off + 4) : 0;
	pci_write32(p, d, off, 0xffffffff);
	if (is64)
		pci_write32(p, d, off + 4, 0xffffffff);
	uint64_t m = pci_read32(p, d, off) & ~0xfULL;
	m |= is64 ? (uint64_t)pci_read32(p, d, off + 4) << 32 : 0xffffffff00000000ULL;
	pci_write32(p, d, off, lo);
	if (is64)
		pci_write32(p, d, off + 4, hi);
	if (m == 0xffffffff00000000ULL || m == 0)
		return is64 ? 2 : 1;
	b->is_64 = (uint8_t)is64;
	b->prefetch = (lo & 8) != 0;
	b->addr = (lo & ~0xfULL) | (uint64_t)hi << 32;
	b->size = ~m + 1;
	return is64 ? 2 : 1;
}

static void probe_bars(const struct pci *p, struct pci_dev *d)
{
	unsigned nbars = d->header_type == 0 ? 6 : d->header_type == 1 ? 2 : 0;
	uint16_t cmd = pci_read16(p, d, PCI_COMMAND);

	pci_write16(p, d, PCI_COMMAND, cmd & ~(PCI_COMMAND_IO | PCI_COMMAND_MEMORY));
	for (unsigned i = 0; i < nbars;)
		i += bar_probe(p, d, i);
	pci_write16(p, d, PCI_COMMAND, cmd);
}

static int scan_bus(struct pci *p, uint8_t bus, unsigned depth);

static int add_function(struct pci *p, uint8_t bus, uint8_t dev, uint8_t fn, unsigned depth)
{
	if (p->ndevs == PCI_MAX_DEVS) {
		pci_fail(p, "more than %d PCI functions", PCI_MAX_DEVS);
		return -ENOSPC;
	}
	struct pci_dev *d = &p->devs[p->ndevs++];
	uint32_t id = cfg_read(p, bus, dev, fn, PCI_VENDOR_ID, 4);
	d->bus = bus;
	d->dev = dev;
	d->fn = fn;
	d->vendor = (uint16_t)id;
	d->device = (uint16_t)(id >> 16);
	d->class_rev = pci_read32(p, d, PCI_CLASS_REV);
	d->header_type = pci_read8(p, d, PCI_HEADER_TYPE) & 0x7f;
	probe_bars(p, d);
	if (d->header_type != 1)
		return 0;

	/* A bridge: number the bus behind it, then walk that bus. */
	if (p->next_bus >= p->bus_last) {
		pci_fail(p, "bridge %02x:%02x.%x: no bus number left (last %u)",
			 bus, dev, fn, p->bus_last);
		return -ENOSPC;
	}
	uint8_t secondary = ++p->next_bus;
	p->nbridges++;
	pci_write8(p, d, PCI_PRIMARY_BUS, bus);
	pci_write8(p, d, PCI_SECONDARY_BUS, secondary);
	pci_write8(p, d, PCI_SUBORDINATE_BUS, p->bus_last);
	int err = scan_bus(p, secondary, depth + 1);
	pci_write8(p, d, PCI_SUBORDINATE_BUS, p->next_bus);
	return err;
}

static int scan_bus(struct pci *p, uint8_t bus, unsigned depth)
{
	if (depth > 16) {
		pci_fail(p, "bridges nested deeper than 16 at bus %u", bus);
		return -ERANGE;
	}
	for (uint8_t dev = 0; dev < 32; dev++) {
		if ((uint16_t)cfg_read(p, bus, dev, 0, PCI_VENDOR_ID, 2) == 0xffff)
			continue;
		int multi = cfg_read(p, bus, dev, 0, PCI_HEADER_TYPE, 1) & 0x80;
		for (uint8_t fn = 0; fn < (multi ? 8 : 1); fn++) {
			if ((uint16_t)cfg_read(p, bus, dev, fn, PCI_VENDOR_ID, 2) == 0xffff)
				continue;
			int err = add_function(p, bus, dev, fn, depth);
			if (err)
				return err;
		}
	}
	return 0;
}

/* ---- pass 2: placing memory BARs ---- */

static int overlaps_placed(const struct pci *p, const struct pci_dev *self, unsigned self_bar,
			   uint64_t lo, uint64_t size, uint64_t *end)
{
	for (unsigned k = 0; k < p->ndevs; k++)
		for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
			const struct pci_bar *b = &p->devs[k].bar[i];
			if (&p->devs[k] == self && i == self_bar)
				continue;
			if (!b->size || b->is_io || !b->addr)
				continue;
			if (b->addr < lo + size && lo < b->addr + b->size) {
				*end = b->addr + b->size;
				return 1;
			}
		}
	return 0;
}

static int place_bar(struct pci *p, struct pci_dev *d, unsigned i)
{
	struct pci_bar *b = &d->bar[i];
	uint64_t a = align_up(p->win_next, b->size), end;

	while (a + b->size <= p->win_end && overlaps_placed(p, d, i, a, b->size, &end))
		a = align_up(end, b->size);
	if (b->size > p->win_end - p->win_base || a + b->size > p->win_end) {
		pci_fail(p, "%02x:%02x.%x BAR%u: 0x%lx bytes do not fit in 0x%lx-0x%lx",
			 d->bus, d->dev, d->fn, i, b->size, p->win_base, p->win_end - 1);
		return -ENOSPC;
	}
	b->addr = a;
	b->placed = 1;
	p->win_next = a + b->size;
	unsigned off = PCI_BAR0 + 4 * i;
	uint32_t flags = pci_read32(p, d, off) & 0xf;
	pci_write32(p, d, off, (uint32_t)a | flags);
	if (b->is_64)
		pci_write32(p, d, off + 4, (uint32_t)(a >> 32));
	return 0;
}

static int place_bus(struct pci *p, uint8_t bus);

static int place_bridge_window(struct pci *p, struct pci_dev *br)
{
	uint8_t secondary = pci_read8(p, br, PCI_SECONDARY_BUS);
	uint64_t start = align_up(p->win_next, BRIDGE_WINDOW_ALIGN);

	p->win_next = start;
	int err = place_bus(p, secondary);
	if (err)
		return err;
	uint64_t end = align_up(p->win_next, BRIDGE_WINDOW_ALIGN);
	if (end > p->win_end) {
		pci_fail(p, "bridge %02x:%02x.%x: window ends beyond 0x%lx",
			 br->bus, br->dev, br->fn, p->win_end - 1);
		return -ENOSPC;
	}
	p->win_next = end;
	if (end > start) {
		pci_write16(p, br, PCI_MEMORY_BASE, (uint16_t)(start >> 16));
		pci_write16(p, br, PCI_MEMORY_LIMIT, (uint16_t)((end - 1) >> 16));
	} else {
		pci_write16(p, br, PCI_MEMORY_BASE, 0xfff0);     /* base > limit: closed */
		pci_write16(p, br, PCI_MEMORY_LIMIT, 0);
	}
	/* Everything sits in the non-prefetchable window (below 4 GiB a
	 * prefetchable BAR may); close the prefetchable and I/O windows. */
	pci_write16(p, br, PCI_PREF_BASE, 0xfff0);
	pci_write16(p, br, PCI_PREF_LIMIT, 0);
	pci_write32(p, br, PCI_PREF_BASE_HI, 0);
	pci_write32(p, br, PCI_PREF_LIMIT_HI, 0);
	pci_write8(p, br, PCI_IO_BASE, 0xf0);
	pci_write8(p, br, PCI_IO_LIMIT, 0);
	pci_write16(p, br, PCI_COMMAND, pci_read16(p, br, PCI_COMMAND) |
					PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
	return 0;
}

static int place_bus(struct pci *p, uint8_t bus)
{
	for (unsigned k = 0; k < p->ndevs; k++) {
		struct pci_dev *d = &p->devs[k];
		if (d->bus != bus)
			continue;
		for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
			struct pci_bar *b = &d->bar[i];
			if (!b->size || b->is_io || b->addr)
				continue;
			int err = place_bar(p, d, i);
			if (err)
				return err;
		}
	}
	for (unsigned k = 0; k < p->ndevs; k++) {
		struct pci_dev *d = &p->devs[k];
		if (d->bus != bus || d->header_type != 1)
			continue;
		int err = place_bridge_window(p, d);
		if (err)
			return err;
	}
	return 0;
}

int pci_scan(struct pci *p)
{
	p->ndevs = 0;
	p->nbridges = 0;
	p->next_bus = p->bus_first;
	int err = scan_bus(p, p->bus_first, 0);
	if (err)
		return err;
	/* A BAR somebody else placed must be reachable from ring 3 too. */
	for (unsigned k = 0; k < p->ndevs; k++)
		for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
			const struct pci_bar *b = &p->devs[k].bar[i];
			if (b->size && !b->is_io && b->addr &&
			    (b->addr < UNCACHED_BASE || b->addr + b->size > MAPPED_LIMIT)) {
				pci_fail(p, "%02x:%02x.%x BAR%u at 0x%lx lies outside 3-4 GiB",
					 p->devs[k].bus, p->devs[k].dev, p->devs[k].fn, i, b->addr);
				return -ERANGE;
			}
		}
	return place_bus(p, p->bus_first);
}

/* ---- device helpers ---- */

unsigned pci_find_cap(const struct pci *p, const struct pci_dev *d, uint8_t id, unsigned after)
{
	if (!(pci_read16(p, d, PCI_STATUS) & PCI_STATUS_CAP_LIST))
		return 0;
	unsigned off = after ? pci_read8(p, d, after + 1) : pci_read8(p, d, PCI_CAP_PTR);
	/* 48 capabilities at most fit in 256 bytes: a loop ends there. */
	for (unsigned n = 0; off >= 0x40 && n < 48; n++) {
		off &= 0xfc;
		if (pci_read8(p, d, off) == id)
			return off;
		off = pci_read8(p, d, off + 1);
	}
	return 0;
}

void pci_enable(const struct pci *p, const struct pci_dev *d)
{
	uint16_t cmd = pci_read16(p, d, PCI_COMMAND);

	cmd |= PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE;
	pci_write16(p, d, PCI_COMMAND, cmd);
}

struct pci_dev *pci_find(struct pci *p, uint16_t vendor, uint16_t device, unsigned index)
{
	for (unsigned k = 0; k < p->ndevs; k++)
		if (p->devs[k].vendor == vendor && p->devs[k].device == device && index-- == 0)
			return &p->devs[k];
	return NULL;
}
