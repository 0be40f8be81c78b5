/* The PCI bus (vmm/pci.c) and MSI-X (vmm/msix.c) on a real KVM VM without
 * vCPUs: configuration space through ports 0xcf8/0xcfc and through ECAM,
 * exactly as vCPU exits reach them; BAR sizing and moving; the capability
 * list; MSI-X table, masking and pending bits; INTx on the I/O APIC. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mmio.h"
#include "msix.h"
#include "pci.h"
#include "pio.h"
#include "vmfixture.h"

#define RAM (64u << 20)

/* A test function: BAR 0 32-bit 16 KiB with MSI-X in it, BAR 2 64-bit
 * prefetchable 1 MiB; it records BAR accesses. */
struct testdev {
	struct pci_dev pci;
	struct msix msix;
	unsigned nreads, nwrites;
	unsigned last_bar;
	uint64_t last_off;
	uint32_t last_val;
	unsigned moves;
};

struct fix {
	struct vmfix *f;
	struct testdev td;
};

static void td_bar_read(struct pci_dev *d, unsigned bar, uint64_t off, uint8_t *data,
			unsigned len)
{
	struct testdev *td = d->opaque;

	if (msix_bar_access(&td->msix, bar, off, false, data, len))
		return;
	td->nreads++;
	td->last_bar = bar;
	td->last_off = off;
	memset(data, 0x5a, len);
}

static void td_bar_write(struct pci_dev *d, unsigned bar, uint64_t off, const uint8_t *data,
			 unsigned len)
{
	struct testdev *td = d->opaque;
	uint8_t copy[8];

	memcpy(copy, data, len);
	if (msix_bar_access(&td->msix, bar, off, true, copy, len))
		return;
	td->nwrites++;
	td->last_bar = bar;
	td->last_off = off;
	td->last_val = 0;
	memcpy(&td->last_val, data, len < 4 ? len : 4);
}

static void td_bar_moved(struct pci_dev *d, unsigned bar, uint64_t addr, bool mapped)
{
	((struct testdev *)d->opaque)->moves++;
}

static void td_cfg_write(struct pci_dev *d, unsigned off, unsigned len)
{
	msix_cfg_write(&((struct testdev *)d->opaque)->msix, off, len);
}

static const struct pci_dev_ops td_ops = {
	.bar_read = td_bar_read, .bar_write = td_bar_write, .bar_moved = td_bar_moved,
	.cfg_write = td_cfg_write,
};

static int setup(void **state)
{
	static const struct device_type *const types[] = { &pci_device, NULL };
	struct fix *x = calloc(1, sizeof(*x));
	char err[256];

	assert_non_null(x);
	if (vmfix_create(&x->f, RAM, NULL, types, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	pci_dev_init(&x->td.pci, "test", 0x1234, 0x5678, 3, 0x018000, 0x1234, 0x4321, 1,
		     &td_ops, &x->td);
	assert_int_equal(pci_dev_add_bar(&x->td.pci, 0, 0x4000, false, false), 0);
	assert_int_equal(pci_dev_add_bar(&x->td.pci, 2, 1 << 20, true, true), 0);
	assert_int_equal(pci_dev_add_bar(&x->td.pci, 3, 4096, false, false), -EINVAL);
	assert_int_equal(pci_dev_add_bar(&x->td.pci, 4, 1000, false, false), -EINVAL);
	assert_int_equal(pci_dev_add_cap(&x->td.pci, PCI_CAP_ID_VNDR, 8), 0x40);
	if (msix_init(&x->td.msix, &x->td.pci, x->f->vm->fd, pci_bus_router(x->f->vm->pci), 3, 0,
		      0x2000, 0x3000, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	if (pci_bus_add(x->f->vm->pci, &x->td.pci, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct fix *x = *state;

	msix_destroy(&x->td.msix);
	vmfix_destroy(x->f);
	free(x);
	return 0;
}

/* ---- the two mechanisms ---- */

static uint32_t port_in(struct vmfix *f, uint16_t port, unsigned len)
{
	uint8_t b[4] = { 0 };
	uint32_t v = 0;

	assert_true(pio_access(&f->vm->pio, port, false, b, len));
	for (unsigned i = 0; i < len; i++)
		v |= (uint32_t)b[i] << (8 * i);
	return v;
}

static void port_out(struct vmfix *f, uint16_t port, uint32_t v, unsigned len)
{
	uint8_t b[4];

	for (unsigned i = 0; i < 4; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	assert_true(pio_access(&f->vm->pio, port, true, b, len));
}

static uint32_t cf8_read(struct vmfix *f, unsigned bus, unsigned slot, unsigned reg, unsigned len)
{
	port_out(f, 0xcf8, 0x80000000u | bus << 16 | slot << 11 | (reg & 0xfc), 4);
	return port_in(f, (uint16_t)(0xcfc + (reg & 3)), len);
}

static void cf8_write(struct vmfix *f, unsigned slot, unsigned reg, uint32_t v, unsigned len)
{
	port_out(f, 0xcf8, 0x80000000u | slot << 11 | (reg & 0xfc), 4);
	port_out(f, (uint16_t)(0xcfc + (reg & 3)), v, len);
}

static uint64_t mem_read(struct vmfix *f, uint64_t addr, unsigned len)
{
	uint8_t b[8] = { 0 };
	uint64_t v = 0;

	mmio_access(&f->vm->mmio, addr, false, b, len);
	for (unsigned i = 0; i < len; i++)
		v |= (uint64_t)b[i] << (8 * i);
	return v;
}

static void mem_write(struct vmfix *f, uint64_t addr, uint64_t v, unsigned len)
{
	uint8_t b[8];

	for (unsigned i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	mmio_access(&f->vm->mmio, addr, true, b, len);
}

static uint64_t ecam(unsigned bus, unsigned slot, unsigned reg)
{
	return PCI_ECAM_BASE + ((uint64_t)bus << 20) + ((uint64_t)slot << 15) + reg;
}

static void test_host_bridge(void **state)
{
	struct fix *x = *state;
	struct vmfix *f = x->f;

	assert_int_equal(cf8_read(f, 0, 0, 0, 4), 0x00081b36);
	assert_int_equal(mem_read(f, ecam(0, 0, 0), 4), 0x00081b36);
	assert_int_equal(cf8_read(f, 0, 0, 0x08, 4) >> 8, 0x060000);   /* host bridge class */
	assert_int_equal(mem_read(f, ecam(0, 0, 0x0e), 1), 0);           /* header type 0 */
	/* The address latch reads back what was written, bits 1:0 as 0. */
	port_out(f, 0xcf8, 0x8000f8ff, 4);
	assert_int_equal(port_in(f, 0xcf8, 4), 0x8000f8fc);
	/* With the enable bit clear, the data port reads all ones. */
	port_out(f, 0xcf8, 0x00000000, 4);
	assert_int_equal(port_in(f, 0xcfc, 4), 0xffffffff);
	/* Nothing in slot 5, on bus 1, or in function 1. */
	assert_int_equal(cf8_read(f, 0, 5, 0, 4), 0xffffffff);
	assert_int_equal(cf8_read(f, 1, 0, 0, 4), 0xffffffff);
	assert_int_equal(mem_read(f, ecam(0, 1, 0) + 0x100 * 16, 4), 0xffffffff);
	assert_int_equal(mem_read(f, ecam(3, 1, 0), 4), 0xffffffff);
	assert_int_equal(mem_read(f, ecam(0, 5, 0), 2), 0xffff);
}

/* Every register reads the same through both mechanisms, and a write
 * through one is seen through the other. */
static void test_both_mechanisms(void **state)
{
	struct fix *x = *state;
	struct vmfix *f = x->f;

	assert_int_equal(cf8_read(f, 0, 1, 0, 4), 0x56781234);
	for (unsigned reg = 0; reg < 256; reg += 4)
		assert_int_equal(cf8_read(f, 0, 1, reg, 4), mem_read(f, ecam(0, 1, reg), 4));
	/* Byte and word accesses at every offset of a dword. */
	assert_int_equal(cf8_read(f, 0, 1, 2, 2), 0x5678);
	assert_int_equal(cf8_read(f, 0, 1, 3, 1), 0x56);
	assert_int_equal(mem_read(f, ecam(0, 1, 0x2e), 2), 0x4321);
	cf8_write(f, 1, 0x3c, 0x0b, 1);                     /* interrupt line */
	assert_int_equal(mem_read(f, ecam(0, 1, 0x3c), 1), 0x0b);
	assert_int_equal(mem_read(f, ecam(0, 1, 0x3d), 1), 1);    /* INTA */
	mem_write(f, ecam(0, 1, 0x3c), 0x0e, 1);
	assert_int_equal(cf8_read(f, 0, 1, 0x3c, 1), 0x0e);
	/* Read-only registers stay as they are. */
	cf8_write(f, 1, 0x00, 0xdeadbeef, 4);
	mem_write(f, ecam(0, 1, 0x08), 0xffffffff, 4);
	assert_int_equal(cf8_read(f, 0, 1, 0, 4), 0x56781234);
	assert_int_equal(mem_read(f, ecam(0, 1, 0x08), 4), 0x01800003);
	/* The extended space exists (ECAM only) and holds nothing. */
	assert_int_equal(mem_read(f, ecam(0, 1, 0x100), 4), 0);
	/* A qword ECAM access is two dword accesses. */
	assert_int_equal(mem_read(f, ecam(0, 1, 0), 8),
			 (uint64_t)cf8_read(f, 0, 1, 4, 4) << 32 | 0x56781234);
}

/* ---- BARs ---- */

static void test_bar_sizing(void **state)
{
	struct fix *x = *state;
	struct vmfix *f = x->f;
	uint32_t bar0 = cf8_read(f, 0, 1, 0x10, 4), lo, hi;

	/* The VMM placed them in the 32-bit window, memory decoding on. */
	assert_int_equal(bar0, 0xc0000000);
	assert_int_equal(cf8_read(f, 0, 1, 0x18, 4) & 0xf, 0xc);      /* 64-bit, prefetchable */
	assert_int_equal(cf8_read(f, 0, 1, 0x18, 4) & ~0xfu, 0xc0100000);
	assert_int_equal(cf8_read(f, 0, 1, 0x1c, 4), 0);
	assert_true(cf8_read(f, 0, 1, 0x04, 2) & PCI_COMMAND_MEMORY);
	/* Sizing: all ones in, the size mask and the type bits out. */
	cf8_write(f, 1, 0x04, 0, 2);
	cf8_write(f, 1, 0x10, 0xffffffff, 4);
	assert_int_equal(cf8_read(f, 0, 1, 0x10, 4), 0xffffc000);
	mem_write(f, ecam(0, 1, 0x18), 0xffffffff, 4);
	mem_write(f, ecam(0, 1, 0x1c), 0xffffffff, 4);
	lo = (uint32_t)mem_read(f, ecam(0, 1, 0x18), 4);
	hi = (uint32_t)mem_read(f, ecam(0, 1, 0x1c), 4);
	assert_int_equal(lo, 0xfff0000c);
	assert_int_equal(hi, 0xffffffff);
	/* Unused BARs and the expansion ROM size to zero. */
	cf8_write(f, 1, 0x14, 0xffffffff, 4);
	assert_int_equal(cf8_read(f, 0, 1, 0x14, 4), 0);
	cf8_write(f, 1, 0x30, 0xffffffff, 4);
	assert_int_equal(cf8_read(f, 0, 1, 0x30, 4), 0);
	/* Put back, decoding on. */
	cf8_write(f, 1, 0x10, bar0, 4);
	cf8_write(f, 1, 0x18, 0xc0100000, 4);
	cf8_write(f, 1, 0x1c, 0, 4);
	cf8_write(f, 1, 0x04, PCI_COMMAND_MEMORY, 2);
	assert_int_equal(mem_read(f, 0xc0000010, 4), 0x5a5a5a5a);
	assert_int_equal(x->td.last_off, 0x10);
}

static void test_bar_move(void **state)
{
	struct fix *x = *state;
	struct vmfix *f = x->f;
	struct pci_bus *bus = f->vm->pci;
	uint64_t hi64 = pci_mmio64_base(&f->vm->mem);
	unsigned moves = x->td.moves;

	mem_write(f, 0xc0000100, 0x1234, 2);
	assert_int_equal(x->td.nwrites, 1);
	assert_int_equal(x->td.last_val, 0x1234);
	/* Move BAR 0 within the window: the old address goes dead. */
	cf8_write(f, 1, 0x10, 0xd0000000, 4);
	assert_true(x->td.moves > moves);
	mem_write(f, 0xc0000100, 0x1, 2);
	assert_int_equal(x->td.nwrites, 1);
	assert_int_equal(mem_read(f, 0xc0000100, 4), 0xffffffff);
	mem_write(f, 0xd0000104, 0x77, 1);
	assert_int_equal(x->td.nwrites, 2);
	assert_int_equal(x->td.last_off, 0x104);
	/* Memory decoding off: nothing decodes. */
	cf8_write(f, 1, 0x04, 0, 2);
	assert_int_equal(mem_read(f, 0xd0000104, 4), 0xffffffff);
	assert_false(x->td.pci.bar[0].mapped);
	cf8_write(f, 1, 0x04, PCI_COMMAND_MEMORY, 2);
	assert_true(x->td.pci.bar[0].mapped);
	/* The 64-bit BAR into the 64-bit window above RAM. */
	cf8_write(f, 1, 0x18, (uint32_t)hi64 | 0xc, 4);
	cf8_write(f, 1, 0x1c, (uint32_t)(hi64 >> 32), 4);
	assert_int_equal(mem_read(f, hi64 + 0x20, 2), 0x5a5a);
	assert_int_equal(x->td.last_bar, 2);
	assert_int_equal(x->td.last_off, 0x20);
	/* Outside both windows (over RAM): not decoded. */
	cf8_write(f, 1, 0x1c, 0, 4);
	cf8_write(f, 1, 0x18, 0x00100000, 4);
	assert_false(x->td.pci.bar[2].mapped);
	/* Reset: back where the VMM put them. */
	pci_dev_reset(&x->td.pci);
	assert_int_equal(cf8_read(f, 0, 1, 0x10, 4), 0xc0000000);
	assert_true(x->td.pci.bar[0].mapped && x->td.pci.bar[2].mapped);
	assert_ptr_equal(pci_bus_dev(bus, 1), &x->td.pci);
}

/* ---- capabilities ---- */

static void test_capabilities(void **state)
{
	struct fix *x = *state;
	struct vmfix *f = x->f;
	unsigned ids[8], n = 0, ptr;

	assert_true(cf8_read(f, 0, 1, 0x06, 2) & PCI_STATUS_CAP_LIST);
	for (ptr = cf8_read(f, 0, 1, 0x34, 1); ptr && n < 8; n++) {
		assert_true(ptr >= 0x40 && ptr < 0x100 && !(ptr & 3));
		ids[n] = cf8_read(f, 0, 1, ptr, 1);
		ptr = (unsigned)mem_read(f, ecam(0, 1, ptr + 1), 1);
	}
	assert_int_equal(n, 2);
	assert_int_equal(ids[0], PCI_CAP_ID_VNDR);
	assert_int_equal(ids[1], PCI_CAP_ID_MSIX);
	/* MSI-X: 3 vectors (N-1 = 2), table at 0x2000 and PBA at 0x3000 of BAR 0. */
	assert_int_equal(cf8_read(f, 0, 1, 0x48 + 2, 2), 2);
	assert_int_equal(cf8_read(f, 0, 1, 0x48 + 4, 4), 0x2000);
	assert_int_equal(cf8_read(f, 0, 1, 0x48 + 8, 4), 0x3000);
	/* Only enable and function mask are writable in the control word. */
	cf8_write(f, 1, 0x48 + 2, 0xffff, 2);
	assert_int_equal(cf8_read(f, 0, 1, 0x48 + 2, 2), 0xc002);
	cf8_write(f, 1, 0x48 + 2, 0, 2);
}

/* ---- MSI-X ---- */

static uint32_t pba(struct vmfix *f)
{
	return (uint32_t)mem_read(f, 0xc0003000, 4);
}

static void test_msix(void **state)
{
	struct fix *x = *state;
	struct vmfix *f = x->f;
	struct msix *m = &x->td.msix;
	const uint64_t table = 0xc0002000;

	/* Every vector starts masked, with an empty message. */
	for (unsigned v = 0; v < 3; v++) {
		assert_int_equal(mem_read(f, table + 16 * v, 8), 0);
		assert_int_equal(mem_read(f, table + 16 * v + 12, 4), 1);
	}
	/* Off: the caller falls back to INTx. */
	assert_int_equal(msix_notify(m, 0), -EPERM);
	cf8_write(f, 1, 0x4a, 0x8000, 2);                       /* enable */
	assert_true(msix_enabled(m));
	assert_int_equal(msix_notify(m, 7), -ENOENT);
	/* Program vector 1 (qword and dword writes); only bit 0 of the
	 * control word sticks. */
	mem_write(f, table + 16, 0xfee00000, 8);
	mem_write(f, table + 24, 0x4041, 4);
	mem_write(f, table + 28, 0xfffffffe, 4);
	assert_int_equal(mem_read(f, table + 28, 4), 0);
	assert_int_equal(mem_read(f, table + 16, 8), 0xfee00000);
	assert_int_equal(mem_read(f, table + 24, 4), 0x4041);
	/* Unmasked: delivered at once, nothing pending. */
	assert_int_equal(msix_notify(m, 1), 0);
	assert_int_equal(pba(f), 0);
	assert_true(m->vec[1].routed);
	assert_int_equal(m->vec[1].route_data, 0x4041);
	/* Masked: the pending bit; unmasking delivers and clears it. */
	mem_write(f, table + 28, 1, 4);
	assert_int_equal(msix_notify(m, 1), 0);
	assert_int_equal(msix_notify(m, 0), 0);
	assert_int_equal(pba(f), 0x3);
	mem_write(f, table + 28, 0, 4);
	assert_int_equal(pba(f), 0x1);
	/* The function mask holds everything back, then lets it go. */
	cf8_write(f, 1, 0x4a, 0xc000, 2);
	assert_int_equal(msix_notify(m, 1), 0);
	assert_int_equal(pba(f), 0x3);
	cf8_write(f, 1, 0x4a, 0x8000, 2);
	assert_int_equal(pba(f), 0x1);
	/* The PBA is read-only; a new message while unmasked is routed. */
	mem_write(f, 0xc0003000, 0, 4);
	assert_int_equal(pba(f), 0x1);
	mem_write(f, table + 24, 0x4042, 4);
	assert_int_equal(m->vec[1].route_data, 0x4042);
	/* Saved state round-trips; bad state is refused whole. */
	{
		json_t *saved = msix_save(m), *bad = json_deep_copy(saved);
		char err[256];

		json_object_set_new(json_array_get(json_object_get(bad, "vectors"), 2), "data",
				    json_string("x"));
		assert_int_equal(msix_load(m, bad, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "'vectors'[2]"));
		msix_reset(m);
		assert_int_equal(mem_read(f, table + 24, 4), 0);
		assert_int_equal(msix_load(m, saved, err, sizeof(err)), 0);
		assert_int_equal(mem_read(f, table + 24, 4), 0x4042);
		assert_int_equal(pba(f), 0x1);
		json_decref(saved);
		json_decref(bad);
	}
}

/* ---- INTx ---- */

static void test_intx(void **state)
{
	struct fix *x = *state;
	struct vmfix *f = x->f;
	unsigned gsi = PCI_INTX_GSI_BASE + 1;                  /* slot 1, INTA */

	assert_int_equal(x->td.pci.intx_gsi, gsi);
	assert_int_equal(vmfix_irq_level(f, gsi), 0);
	pci_dev_set_irq(&x->td.pci, true);
	assert_int_equal(vmfix_irq_level(f, gsi), 1);
	assert_true(cf8_read(f, 0, 1, 0x06, 2) & PCI_STATUS_INTERRUPT);
	/* INTx disable lowers the pin; the status bit still tells. */
	cf8_write(f, 1, 0x04, PCI_COMMAND_MEMORY | PCI_COMMAND_INTX_DISABLE, 2);
	assert_int_equal(vmfix_irq_level(f, gsi), 0);
	assert_true(cf8_read(f, 0, 1, 0x06, 2) & PCI_STATUS_INTERRUPT);
	cf8_write(f, 1, 0x04, PCI_COMMAND_MEMORY, 2);
	assert_int_equal(vmfix_irq_level(f, gsi), 1);
	pci_dev_set_irq(&x->td.pci, false);
	assert_int_equal(vmfix_irq_level(f, gsi), 0);
	assert_false(cf8_read(f, 0, 1, 0x06, 2) & PCI_STATUS_INTERRUPT);
}

/* ---- saved state ---- */

static void test_save_load(void **state)
{
	struct fix *x = *state;
	struct vmfix *f = x->f;
	json_t *saved, *bad;
	char err[256], *hex;

	cf8_write(f, 1, 0x10, 0xd0000000, 4);
	cf8_write(f, 1, 0x3c, 0x0a, 1);
	saved = pci_dev_save(&x->td.pci);
	pci_dev_reset(&x->td.pci);
	assert_int_equal(cf8_read(f, 0, 1, 0x10, 4), 0xc0000000);
	assert_int_equal(pci_dev_load(&x->td.pci, saved, err, sizeof(err)), 0);
	assert_int_equal(cf8_read(f, 0, 1, 0x10, 4), 0xd0000000);
	assert_int_equal(cf8_read(f, 0, 1, 0x3c, 1), 0x0a);
	assert_int_equal(mem_read(f, 0xd0000000, 1), 0x5a);
	/* Another device's identity is refused. */
	bad = json_deep_copy(saved);
	hex = strdup(json_string_value(json_object_get(bad, "config")));
	hex[0] = '9';
	json_object_set_new(bad, "config", json_string(hex));
	assert_int_equal(pci_dev_load(&x->td.pci, bad, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "byte 0x00 is 0x94"));
	hex[0] = 'g';
	json_object_set_new(bad, "config", json_string(hex));
	assert_int_equal(pci_dev_load(&x->td.pci, bad, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not hex"));
	free(hex);
	json_decref(bad);
	json_decref(saved);
	/* The bus: the latch and the host bridge. */
	port_out(f, 0xcf8, 0x80000810, 4);
	saved = pci_bus_save(f->vm->pci);
	pci_bus_reset(f->vm->pci);
	assert_int_equal(port_in(f, 0xcf8, 4), 0);
	assert_int_equal(pci_bus_load(f->vm->pci, saved, err, sizeof(err)), 0);
	assert_int_equal(port_in(f, 0xcf8, 4), 0x80000810);
	json_object_set_new(saved, "config-address", json_integer(3));
	assert_int_equal(pci_bus_load(f->vm->pci, saved, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "reserved bits"));
	json_decref(saved);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_host_bridge, setup, teardown),
		cmocka_unit_test_setup_teardown(test_both_mechanisms, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bar_sizing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bar_move, setup, teardown),
		cmocka_unit_test_setup_teardown(test_capabilities, setup, teardown),
		cmocka_unit_test_setup_teardown(test_msix, setup, teardown),
		cmocka_unit_test_setup_teardown(test_intx, setup, teardown),
		cmocka_unit_test_setup_teardown(test_save_load, setup, teardown),
	};

	log_init("test_pci", LOG_ERROR);
	if (!vmfix_kvm_usable("test_pci"))
		return VMFIX_SKIP;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
