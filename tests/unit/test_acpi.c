/* ACPI tables as a guest OS finds them: scan for the RSDP, follow XSDT and
 * RSDT, check every checksum and the fields Linux relies on to see every
 * vCPU, power off (\_S5 + sleep control register) and reboot (RESET_REG).
 * Then Debian's iasl (acpica-tools) disassembles every table.
 *
 * The expected values come from the ACPI 6.3 specification, written out
 * here independently of vmm/acpi.c's structures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "acpi.h"
#include "guest_mem.h"
#include "layout.h"
#include "platform.h"

#define TEST_RAM (16ULL << 20)
#define MAX_TABLES 16

#define FADT_HW_REDUCED_ACPI (1u << 20)
#define FADT_RESET_REG_SUP   (1u << 10)
#define FADT_PWR_BUTTON      (1u << 4)
#define BOOT_ARCH_8042       (1u << 1)
#define BOOT_ARCH_VGA_NOT_PRESENT (1u << 2)

struct table {
	uint64_t gpa;
	char sig[5];
	uint32_t len;
	const uint8_t *p;
};

/* What the guest found by walking from the RSDP. */
struct walk {
	uint64_t rsdp;
	unsigned ntables;
	struct table t[MAX_TABLES];  /* listed in the XSDT, in order */
	struct table dsdt;
};

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)rd16(p) | (uint32_t)rd16(p + 2) << 16; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static uint8_t sum8(const uint8_t *p, size_t len)
{
	uint8_t s = 0;

	while (len--)
		s += *p++;
	return s;
}

static void make_platform(struct platform_desc *pd, unsigned ncpus, unsigned apic_stride)
{
	memset(pd, 0, sizeof(*pd));
	pd->ncpus = ncpus;
	for (unsigned i = 0; i < ncpus; i++)
		pd->apic_id[i] = (uint8_t)(i * apic_stride);
	pd->ioapic_id = (uint8_t)(ncpus * apic_stride);  /* above every local APIC id */
	pd->ioapic_addr = IOAPIC_ADDR;
	pd->ioapic_pins = 24;
	pd->lapic_addr = LAPIC_ADDR;
	pd->sleep_ctl_port = PORT_ACPI_SLEEP_CTL;
	pd->sleep_sts_port = PORT_ACPI_SLEEP_STS;
	pd->reset_port = 0xcf9;
	pd->reset_value = 0x06;
	pd->com1_port = PORT_COM1;
	pd->com1_irq = IRQ_COM1;
}

/* A table header at gpa, checked for being wholly inside guest RAM and for
 * its checksum. */
static struct table load_table(const struct guest_mem *gm, uint64_t gpa)
{
	struct table t = { .gpa = gpa };
	const uint8_t *h = guest_mem_ptr(gm, gpa, 36);

	assert_non_null(h);
	memcpy(t.sig, h, 4);
	t.len = rd32(h + 4);
	assert_true(t.len >= 36);
	t.p = guest_mem_ptr(gm, gpa, t.len);
	assert_non_null(t.p);
	/* Every table lies in the reserved ACPI area. */
	assert_true(gpa >= ACPI_TABLES_ADDR && gpa + t.len <= ACPI_TABLES_ADDR + ACPI_TABLES_SIZE);
	if (sum8(t.p, t.len) != 0)
		fail_msg("table %s at %#llx: checksum does not sum to zero", t.sig,
			 (unsigned long long)gpa);
	assert_memory_equal(t.p + 10, "DROVER", 6);
	assert_memory_equal(t.p + 16, "DRVRVMM ", 8);
	return t;
}

/* The scan Linux does on a PC without EFI: 16-byte steps over
 * 0xe0000-0xfffff, the first "RSD PTR " whose ACPI 1.0 checksum holds. */
static uint64_t scan_rsdp(const struct guest_mem *gm)
{
	for (uint64_t gpa = 0xe0000; gpa < 0x100000; gpa += 16) {
		const uint8_t *p = guest_mem_ptr(gm, gpa, 20);

		if (p && !memcmp(p, "RSD PTR ", 8) && sum8(p, 20) == 0)
			return gpa;
	}
	return 0;
}

static void walk_tables(const struct guest_mem *gm, struct walk *w)
{
	const uint8_t *rsdp;
	struct table xsdt, rsdt;
	unsigned n;

	memset(w, 0, sizeof(*w));
	w->rsdp = scan_rsdp(gm);
	assert_int_not_equal(w->rsdp, 0);
	rsdp = guest_mem_ptr(gm, w->rsdp, 36);
	assert_int_equal(rsdp[15], 2);                 /* revision: ACPI 2.0+ */
	assert_int_equal(rd32(rsdp + 20), 36);          /* length */
	assert_int_equal(sum8(rsdp, 36), 0);            /* extended checksum */

	xsdt = load_table(gm, rd64(rsdp + 24));
	rsdt = load_table(gm, rd32(rsdp + 16));
	assert_string_equal(xsdt.sig, "XSDT");
	assert_string_equal(rsdt.sig, "RSDT");
	assert_int_equal((xsdt.len - 36) % 8, 0);
	assert_int_equal((rsdt.len - 36) % 4, 0);
	n = (xsdt.len - 36) / 8;
	assert_int_equal(n, (rsdt.len - 36) / 4);
	assert_true(n <= MAX_TABLES);
	for (unsigned i = 0; i < n; i++) {
		uint64_t x = rd64(xsdt.p + 36 + 8 * i);

		assert_int_equal(x, rd32(rsdt.p + 36 + 4 * i));
		w->t[i] = load_table(gm, x);
	}
	w->ntables = n;
}

static const struct table *find_table(const struct walk *w, const char *sig)
{
	const struct table *found = NULL;

	for (unsigned i = 0; i < w->ntables; i++) {
		if (!strcmp(w->t[i].sig, sig)) {
			assert_null(found);     /* each signature once */
			found = &w->t[i];
		}
	}
	return found;
}

/* A Generic Address Structure for an 8-bit System I/O register. */
static void check_gas_io8(const uint8_t *gas, uint16_t port)
{
	assert_int_equal(gas[0], 1);        /* System I/O */
	assert_int_equal(gas[1], 8);        /* bit width */
	assert_int_equal(gas[2], 0);        /* bit offset */
	assert_int_equal(gas[3], 1);        /* byte access */
	assert_int_equal(rd64(gas + 4), port);
}

static void check_fadt(const struct guest_mem *gm, const struct platform_desc *pd,
		       const struct walk *w, struct table *dsdt)
{
	const struct table *fadt = find_table(w, "FACP");
	const uint8_t *f;
	uint32_t flags;

	assert_non_null(fadt);
	f = fadt->p;
	assert_int_equal(fadt->len, 276);       /* ACPI 6.x FADT */
	assert_int_equal(f[8], 6);              /* major revision */
	flags = rd32(f + 112);
	assert_true(flags & FADT_HW_REDUCED_ACPI);
	assert_true(flags & FADT_RESET_REG_SUP);
	assert_true(flags & FADT_PWR_BUTTON);
	/* No 8042 keyboard controller (only its reset line), no VGA. */
	assert_false(rd16(f + 109) & BOOT_ARCH_8042);
	assert_true(rd16(f + 109) & BOOT_ARCH_VGA_NOT_PRESENT);
	check_gas_io8(f + 116, pd->reset_port);
	assert_int_equal(f[128], pd->reset_value);
	check_gas_io8(f + 244, pd->sleep_ctl_port);
	check_gas_io8(f + 256, pd->sleep_sts_port);
	assert_memory_equal(f + 268, "DROVER  ", 8);
	/* X_DSDT and the 32-bit DSDT agree. */
	assert_int_not_equal(rd64(f + 140), 0);
	assert_int_equal(rd64(f + 140), rd32(f + 40));
	*dsdt = load_table(gm, rd64(f + 140));
	assert_string_equal(dsdt->sig, "DSDT");
}

static void check_madt(const struct platform_desc *pd, const struct walk *w)
{
	const struct table *madt = find_table(w, "APIC");
	unsigned nlapic = 0, nioapic = 0, nnmi = 0;
	uint32_t off;

	assert_non_null(madt);
	assert_int_equal(rd32(madt->p + 36), pd->lapic_addr);
	assert_int_equal(rd32(madt->p + 40) & 1, 1);        /* PCAT_COMPAT */
	for (off = 44; off < madt->len; ) {
		const uint8_t *e = madt->p + off;

		assert_true(off + 2 <= madt->len && e[1] >= 2 && off + e[1] <= madt->len);
		switch (e[0]) {
		case 0:         /* Processor Local APIC */
			assert_int_equal(e[1], 8);
			assert_true(nlapic < pd->ncpus);
			assert_int_equal(e[2], nlapic);             /* processor uid */
			assert_int_equal(e[3], pd->apic_id[nlapic]);
			assert_int_equal(rd32(e + 4) & 1, 1);       /* enabled */
			nlapic++;
			break;
		case 1:         /* I/O APIC */
			assert_int_equal(e[1], 12);
			assert_int_equal(e[2], pd->ioapic_id);
			assert_int_equal(rd32(e + 4), pd->ioapic_addr);
			assert_int_equal(rd32(e + 8), 0);           /* GSI base */
			nioapic++;
			break;
		case 2:         /* Interrupt Source Override */
			fail_msg("MADT overrides ISA IRQ %u: routing is identity", e[3]);
			break;
		case 4:         /* Local APIC NMI */
			assert_int_equal(e[1], 6);
			assert_int_equal(e[2], 0xff);               /* all processors */
			assert_int_equal(e[5], 1);                  /* LINT1 */
			nnmi++;
			break;
		default:
			fail_msg("unexpected MADT entry type %u", e[0]);
		}
		off += e[1];
	}
	assert_int_equal(off, madt->len);
	assert_int_equal(nlapic, pd->ncpus);
	assert_int_equal(nioapic, 1);
	assert_int_equal(nnmi, 1);
}

/* One ECAM area: segment 0, buses 0-255 at 0xe0000000. */
static void check_mcfg(const struct walk *w)
{
	const struct table *mcfg = find_table(w, "MCFG");

	assert_non_null(mcfg);
	assert_int_equal(mcfg->len, 36 + 8 + 16);
	assert_int_equal(rd64(mcfg->p + 44), 0xe0000000);
	assert_int_equal(rd16(mcfg->p + 52), 0);       /* segment */
	assert_int_equal(mcfg->p[54], 0);              /* start bus */
	assert_int_equal(mcfg->p[55], 255);            /* end bus */
}

/* ---- a small AML reader ------------------------------------------------
 * Walks the DSDT's term list the way an interpreter's first pass does, for
 * the objects a drover DSDT holds (Scope, Device, Name with an integer,
 * string, Package or Buffer, Method), checking that every PkgLength stays
 * inside its parent and that the term lists fill their packages exactly.
 * A method's body is kept as bytes (ACPICA's acpiexec runs it, below). */

#define AML_MAX_NAMES 48

struct aml_name {
	char path[64];          /* "\\_SB_.COM1._HID" */
	uint8_t kind;           /* 'i' integer, 'p' package, 'b' buffer, 's' string,
				 * 'm' method (buf: its body, value: its flags) */
	uint64_t value;         /* integer */
	uint64_t elems[8];      /* package (integers only) */
	unsigned nelems;
	const uint8_t *buf;     /* buffer */
	size_t buflen;
};

struct aml_names {
	unsigned n;
	struct aml_name name[AML_MAX_NAMES];
};

/* PkgLength at p (at most `avail` bytes left); returns the bytes the
 * package spans from p, and the length of the encoding in *enc. */
static size_t aml_pkglen(const uint8_t *p, size_t avail, size_t *enc)
{
	unsigned follow = p[0] >> 6;
	size_t len;

	assert_true(avail >= 1 + follow);
	if (follow == 0) {
		len = p[0] & 0x3f;
	} else {
		assert_int_equal(p[0] & 0x30, 0);
		len = p[0] & 0x0f;
		for (unsigned i = 0; i < follow; i++)
			len |= (size_t)p[1 + i] << (4 + 8 * i);
	}
	*enc = 1 + follow;
	if (len < *enc || len > avail)
		fail_msg("AML PkgLength %zu with %zu bytes left", len, avail);
	return len;
}

/* A NameString; appends its path to scope into out. */
static size_t aml_namestring(const uint8_t *p, size_t avail, const char *scope, char *out,
			     size_t outlen)
{
	size_t used = 0;
	unsigned nsegs = 1;

	if (avail && p[0] == '\\') {
		scope = "\\";
		used++;
	}
	assert_true(used < avail);
	if (p[used] == 0x2e) {
		nsegs = 2;
		used++;
	} else if (p[used] == 0x2f) {
		nsegs = p[used + 1];
		used += 2;
	}
	snprintf(out, outlen, "%s", scope);
	for (unsigned i = 0; i < nsegs; i++) {
		size_t l = strlen(out);

		assert_true(used + 4 <= avail);
		for (unsigned j = 0; j < 4; j++) {
			uint8_t c = p[used + j];

			assert_true(c == '_' || (c >= 'A' && c <= 'Z') || (j && c >= '0' && c <= '9'));
		}
		snprintf(out + l, outlen - l, "%s%.4s", l > 1 ? "." : "", (const char *)p + used);
		used += 4;
	}
	return used;
}

static size_t aml_integer_at(const uint8_t *p, size_t avail, uint64_t *v)
{
	static const unsigned width[] = { [0x0a] = 1, [0x0b] = 2, [0x0c] = 4, [0x0e] = 8 };

	assert_true(avail >= 1);
	if (p[0] == 0x00 || p[0] == 0x01) {
		*v = p[0];
		return 1;
	}
	if (p[0] == 0xff) {
		*v = ~0ULL;
		return 1;
	}
	if (p[0] >= sizeof(width) / sizeof(width[0]) || !width[p[0]])
		fail_msg("AML opcode %#x where an integer belongs", p[0]);
	assert_true(avail >= 1 + width[p[0]]);
	*v = 0;
	for (unsigned i = 0; i < width[p[0]]; i++)
		*v |= (uint64_t)p[1 + i] << (8 * i);
	return 1 + width[p[0]];
}

static size_t aml_data_object(const uint8_t *p, size_t avail, struct aml_name *nm)
{
	size_t enc, len, off;
	uint64_t v;

	if (p[0] == 0x12) {                     /* Package */
		struct aml_name sub;
		unsigned n;

		len = aml_pkglen(p + 1, avail - 1, &enc);
		nm->kind = 'p';
		n = p[1 + enc];
		nm->nelems = n;
		nm->buf = p;                    /* the whole package, for nested ones */
		nm->buflen = 1 + len;
		off = 1 + enc + 1;
		for (unsigned i = 0; i < n; i++) {
			if (p[off] == 0x12) {   /* a package of packages (_PRT) */
				off += aml_data_object(p + off, 1 + len - off, &sub);
				nm->nelems = 0;
				continue;
			}
			assert_true(i < 8);
			off += aml_integer_at(p + off, 1 + len - off, &nm->elems[i]);
		}
		assert_int_equal(off, 1 + len);
		return 1 + len;
	}
	if (p[0] == 0x11) {                     /* Buffer */
		len = aml_pkglen(p + 1, avail - 1, &enc);
		off = 1 + enc;
		off += aml_integer_at(p + off, 1 + len - off, &v);
		assert_int_equal(v, 1 + len - off);     /* BufferSize = bytes given */
		nm->kind = 'b';
		nm->buf = p + off;
		nm->buflen = (size_t)v;
		return 1 + len;
	}
	if (p[0] == 0x0d) {                     /* String */
		const uint8_t *nul = memchr(p + 1, 0, avail - 1);

		assert_non_null(nul);
		nm->kind = 's';
		nm->buf = p + 1;
		nm->buflen = (size_t)(nul - (p + 1));
		return nm->buflen + 2;
	}
	nm->kind = 'i';
	return aml_integer_at(p, avail, &nm->value);
}

static void aml_walk(const uint8_t *p, size_t n, const char *scope, struct aml_names *out)
{
	size_t off = 0;

	while (off < n) {
		const uint8_t *t = p + off;
		size_t avail = n - off, enc, len, used;
		char path[64];

		if (t[0] == 0x10 || (t[0] == 0x5b && avail > 1 && t[1] == 0x82)) {
			size_t op = t[0] == 0x10 ? 1 : 2;   /* Scope, or Device */

			len = aml_pkglen(t + op, avail - op, &enc);
			used = op + enc;
			used += aml_namestring(t + used, op + len - used, scope, path, sizeof(path));
			aml_walk(t + used, op + len - used, path, out);
			off += op + len;
		} else if (t[0] == 0x14) {                  /* Method */
			struct aml_name *nm;

			assert_true(out->n < AML_MAX_NAMES);
			nm = &out->name[out->n++];
			len = aml_pkglen(t + 1, avail - 1, &enc);
			used = 1 + enc;
			used += aml_namestring(t + used, 1 + len - used, scope, nm->path,
					       sizeof(nm->path));
			nm->kind = 'm';
			nm->value = t[used++];
			nm->buf = t + used;
			nm->buflen = 1 + len - used;
			off += 1 + len;
		} else if (t[0] == 0x08) {                  /* Name */
			struct aml_name *nm;

			assert_true(out->n < AML_MAX_NAMES);
			nm = &out->name[out->n++];
			used = 1 + aml_namestring(t + 1, avail - 1, scope, nm->path, sizeof(nm->path));
			used += aml_data_object(t + used, avail - used, nm);
			off += used;
		} else {
			fail_msg("unexpected AML opcode %#x at %zu in %s", t[0], off, scope);
		}
	}
	assert_int_equal(off, n);
}

static const struct aml_name *aml_lookup(const struct aml_names *names, const char *path)
{
	for (unsigned i = 0; i < names->n; i++)
		if (!strcmp(names->name[i].path, path))
			return &names->name[i];
	fail_msg("no %s in the DSDT", path);
	return NULL;
}

/* _CRS of an ISA device: one fixed 16-bit-decoded I/O range, one IRQ, end. */
static void check_isa_crs(const struct aml_name *crs, uint16_t port, uint8_t len, uint8_t irq)
{
	const uint8_t want[] = {
		0x47, 0x01, (uint8_t)port, (uint8_t)(port >> 8), (uint8_t)port,
		(uint8_t)(port >> 8), 0x01, len,                   /* IO (Decode16, ...) */
		0x22, (uint8_t)(1u << irq), (uint8_t)((1u << irq) >> 8), /* IRQNoFlags */
		0x79, 0x00,                                         /* EndTag */
	};

	assert_int_equal(crs->kind, 'b');
	assert_int_equal(crs->buflen, sizeof(want));
	assert_memory_equal(crs->buf, want, sizeof(want));
}

/* The PCI host bridge: PNP0A08 (PCI Express) compatible with PNP0A03, its
 * windows in _CRS, and a _PRT entry per slot 1..31 and pin. */
static void check_pci0(const struct aml_names *names)
{
	const struct aml_name *crs = aml_lookup(names, "\\_SB_.PCI0._CRS");
	const struct aml_name *prt = aml_lookup(names, "\\_SB_.PCI0._PRT");
	static const uint8_t bus[] = { 0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00, 0, 0, 0, 0, 0xff, 0,
				       0, 0, 0x00, 0x01 };
	static const uint8_t io[] = { 0x47, 0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08 };

	assert_int_equal(aml_lookup(names, "\\_SB_.PCI0._HID")->value, 0x080ad041); /* PNP0A08 */
	assert_int_equal(aml_lookup(names, "\\_SB_.PCI0._CID")->value, 0x030ad041); /* PNP0A03 */
	assert_int_equal(aml_lookup(names, "\\_SB_.PCI0._SEG")->value, 0);
	assert_int_equal(aml_lookup(names, "\\_SB_.PCI0._BBN")->value, 0);
	assert_int_equal(crs->kind, 'b');
	assert_true(crs->buflen > sizeof(bus) + sizeof(io) + 26);
	assert_memory_equal(crs->buf, bus, sizeof(bus));
	assert_memory_equal(crs->buf + sizeof(bus), io, sizeof(io));
	/* DWordMemory 0xc0000000-0xdfffffff */
	assert_int_equal(crs->buf[sizeof(bus) + sizeof(io)], 0x87);
	assert_int_equal(rd32(crs->buf + sizeof(bus) + sizeof(io) + 10), 0xc0000000);
	assert_int_equal(rd32(crs->buf + sizeof(bus) + sizeof(io) + 14), 0xdfffffff);
	assert_int_equal(prt->kind, 'p');
	/* NumElements follows the PkgLength: 31 slots x 4 pins. */
	assert_int_equal(prt->buf[2 + (prt->buf[1] >> 6)], 31 * 4);
}

/* The power button: PNP0C0C, and a Generic Event Device (ACPI0013) on
 * GSI_POWER_BUTTON whose _EVT notifies it (what that does, acpiexec runs
 * below). */
static void check_power_button(const struct aml_names *names)
{
	const struct aml_name *hid = aml_lookup(names, "\\_SB_.GED0._HID");
	const struct aml_name *crs = aml_lookup(names, "\\_SB_.GED0._CRS");
	const struct aml_name *evt = aml_lookup(names, "\\_SB_.GED0._EVT");
	const uint8_t want_crs[] = {
		0x89, 0x06, 0x00, 0x03, 0x01, GSI_POWER_BUTTON, 0, 0, 0,  /* Interrupt (edge) */
		0x79, 0x00,
	};

	assert_int_equal(aml_lookup(names, "\\_SB_.PWRB._HID")->value, 0x0c0cd041); /* PNP0C0C */
	assert_int_equal(hid->kind, 's');
	assert_int_equal(hid->buflen, 8);
	assert_memory_equal(hid->buf, "ACPI0013", 8);
	assert_int_equal(crs->kind, 'b');
	assert_int_equal(crs->buflen, sizeof(want_crs));
	assert_memory_equal(crs->buf, want_crs, sizeof(want_crs));
	assert_int_equal(evt->kind, 'm');
	assert_int_equal(evt->value & 7, 1);    /* one argument: the GSI */
}

static void check_dsdt(const struct platform_desc *pd, const struct table *dsdt)
{
	struct aml_names names = { .n = 0 };
	const struct aml_name *s5;

	assert_int_equal(dsdt->p[8], 2);        /* 64-bit AML integers */
	aml_walk(dsdt->p + 36, dsdt->len - 36, "\\", &names);

	s5 = aml_lookup(&names, "\\_S5_");
	assert_int_equal(s5->kind, 'p');
	assert_int_equal(s5->nelems, 4);
	assert_int_equal(s5->elems[0], 5);      /* SLP_TYP that powers off */
	assert_int_equal(s5->elems[1], 5);
	assert_int_equal(s5->elems[2], 0);
	assert_int_equal(s5->elems[3], 0);

	assert_int_equal(aml_lookup(&names, "\\_SB_.COM1._HID")->value, 0x0105d041); /* PNP0501 */
	assert_int_equal(aml_lookup(&names, "\\_SB_.COM1._UID")->kind, 'i');
	check_isa_crs(aml_lookup(&names, "\\_SB_.COM1._CRS"), pd->com1_port, 8, pd->com1_irq);
	assert_int_equal(aml_lookup(&names, "\\_SB_.RTC_._HID")->value, 0x000bd041); /* PNP0B00 */
	check_isa_crs(aml_lookup(&names, "\\_SB_.RTC_._CRS"), 0x70, 2, 8);
	check_pci0(&names);
	check_power_button(&names);
}

static void build_and_check(unsigned ncpus, unsigned apic_stride)
{
	struct guest_mem gm;
	struct platform_desc pd;
	struct walk w;
	struct table dsdt;
	uint64_t rsdp = 0;

	make_platform(&pd, ncpus, apic_stride);
	assert_int_equal(guest_mem_init(&gm, TEST_RAM), 0);
	/* Whatever was in guest RAM before must not leak into the tables. */
	memset(guest_mem_ptr(&gm, ACPI_TABLES_ADDR, ACPI_TABLES_SIZE), 0xa5, ACPI_TABLES_SIZE);
	assert_int_equal(acpi_build(&gm, &pd, &rsdp), 0);

	walk_tables(&gm, &w);
	assert_int_equal(w.rsdp, rsdp);
	assert_int_equal(rsdp, ACPI_TABLES_ADDR);
	assert_int_equal(rsdp % 16, 0);
	assert_int_equal(w.ntables, 3);
	check_mcfg(&w);
	check_fadt(&gm, &pd, &w, &dsdt);
	check_madt(&pd, &w);
	check_dsdt(&pd, &dsdt);
	guest_mem_free(&gm);
}

static void test_one_cpu(void **state) { build_and_check(1, 1); }
static void test_two_cpus_sparse_apic_ids(void **state) { build_and_check(2, 2); }
static void test_max_cpus(void **state) { build_and_check(PLATFORM_MAX_CPUS, 1); }

/* Another serial port setting reaches the DSDT. */
static void test_com_port_follows_platform(void **state)
{
	struct guest_mem gm;
	struct platform_desc pd;
	struct walk w;
	struct table dsdt;
	uint64_t rsdp;

	make_platform(&pd, 4, 1);
	pd.com1_port = 0x2f8;
	pd.com1_irq = 3;
	assert_int_equal(guest_mem_init(&gm, TEST_RAM), 0);
	assert_int_equal(acpi_build(&gm, &pd, &rsdp), 0);
	walk_tables(&gm, &w);
	check_fadt(&gm, &pd, &w, &dsdt);
	check_dsdt(&pd, &dsdt);
	guest_mem_free(&gm);
}

static void test_bad_input(void **state)
{
	struct guest_mem gm, small;
	struct platform_desc pd;
	uint64_t rsdp;

	assert_int_equal(guest_mem_init(&gm, TEST_RAM), 0);
	make_platform(&pd, 0, 1);
	assert_int_equal(acpi_build(&gm, &pd, &rsdp), -EINVAL);
	make_platform(&pd, 1, 1);
	pd.ncpus = PLATFORM_MAX_CPUS + 1;
	assert_int_equal(acpi_build(&gm, &pd, &rsdp), -EINVAL);
	make_platform(&pd, 1, 1);
	pd.ioapic_addr = 1ULL << 32;
	assert_int_equal(acpi_build(&gm, &pd, &rsdp), -ERANGE);
	guest_mem_free(&gm);

	/* 512 KiB of RAM: the table area is not RAM. */
	assert_int_equal(guest_mem_init(&small, 512 << 10), 0);
	make_platform(&pd, 1, 1);
	assert_int_equal(acpi_build(&small, &pd, &rsdp), -EFAULT);
	guest_mem_free(&small);
}

static void test_checksum(void **state)
{
	uint8_t b[5] = { 1, 2, 3, 4, 0 };

	b[4] = acpi_checksum(b, 4);
	assert_int_equal(b[4], (uint8_t)-10);
	assert_int_equal(sum8(b, 5), 0);
	assert_int_equal(acpi_checksum(b, 0), 0);
}

/* ---- iasl ------------------------------------------------------------ */

static int find_in_path(const char *prog, char *out, size_t outlen)
{
	const char *path = getenv("PATH");
	char *copy, *save = NULL;
	int found = 0;

	if (!path)
		path = "/usr/bin:/bin";
	copy = strdup(path);
	for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		snprintf(out, outlen, "%s/%s", dir, prog);
		if (access(out, X_OK) == 0) {
			found = 1;
			break;
		}
	}
	free(copy);
	return found;
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = calloc(1, (size_t)n + 1);
	if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	return buf;
}

static void write_blob(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* Runs `iasl -d name.dat` in dir, returns the disassembly (malloc'd) after
 * checking that iasl succeeded and complained about nothing. */
static char *iasl_disassemble(const char *iasl, const char *dir, const char *name)
{
	char cmd[1024], path[512];
	char *log, *dsl;
	int status;

	snprintf(cmd, sizeof(cmd), "cd '%s' && '%s' -d %s.dat > %s.log 2>&1", dir, iasl, name, name);
	status = system(cmd);
	snprintf(path, sizeof(path), "%s/%s.log", dir, name);
	log = slurp(path);
	assert_non_null(log);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("iasl -d %s failed (status %#x):\n%s", name, status, log);
	if (strstr(log, "Error") || strstr(log, "Warning") || strstr(log, "Invalid"))
		fail_msg("iasl -d %s complained:\n%s", name, log);
	free(log);

	snprintf(path, sizeof(path), "%s/%s.dsl", dir, name);
	dsl = slurp(path);
	assert_non_null(dsl);
	/* Data-table disassembly notes its own findings inline. */
	if (strstr(dsl, "Incorrect") || strstr(dsl, "Invalid") || strstr(dsl, "Error") ||
	    strstr(dsl, "Unknown") || strstr(dsl, "****"))
		fail_msg("iasl disassembly of %s reports a problem:\n%s", name, dsl);
	return dsl;
}

static void dump_and_disassemble(const char *iasl, const char *dir, unsigned ncpus)
{
	struct guest_mem gm;
	struct platform_desc pd;
	struct walk w;
	struct table dsdt;
	uint64_t rsdp;
	char path[512], name[16], *dsl;

	make_platform(&pd, ncpus, 1);
	assert_int_equal(guest_mem_init(&gm, TEST_RAM), 0);
	assert_int_equal(acpi_build(&gm, &pd, &rsdp), 0);
	walk_tables(&gm, &w);
	check_fadt(&gm, &pd, &w, &dsdt);

	/* No RSDP: iasl 20200925 (Debian 12) disassembles no RSDP file at all,
	 * not even the one it compiles from its own `iasl -T RSDP` template. */
	for (unsigned i = 0; i <= w.ntables; i++) {
		const struct table *t = i < w.ntables ? &w.t[i] : &dsdt;

		snprintf(name, sizeof(name), "%s%u", t->sig, ncpus);
		snprintf(path, sizeof(path), "%s/%s.dat", dir, name);
		write_blob(path, t->p, t->len);
		dsl = iasl_disassemble(iasl, dir, name);
		if (!strcmp(t->sig, "DSDT")) {
			assert_non_null(strstr(dsl, "_S5"));
			assert_non_null(strstr(dsl, "PNP0501"));
			assert_non_null(strstr(dsl, "PNP0B00"));
		} else if (!strcmp(t->sig, "FACP")) {
			assert_non_null(strstr(dsl, "Hardware Reduced (V5) : 1"));
		} else if (!strcmp(t->sig, "APIC")) {
			char last[64];

			snprintf(last, sizeof(last), "Local Apic ID : %02X", pd.apic_id[ncpus - 1]);
			assert_non_null(strstr(dsl, last));
		}
		free(dsl);
	}
	guest_mem_free(&gm);
}

/* The path to a tool of acpica-tools, or NULL: then main reports the suite
 * as skipped. */
static const char *tool_path(const char *tool, char *path, size_t len)
{
	return find_in_path(tool, path, len) ? path : NULL;
}

static const char *iasl_path(void)
{
	static char path[512];

	return tool_path("iasl", path, sizeof(path));
}

static const char *acpiexec_path(void)
{
	static char path[512];

	return tool_path("acpiexec", path, sizeof(path));
}

/* A scratch directory per test, removed even when the test fails. */
static int make_tmpdir(void **state)
{
	char *dir = strdup("/tmp/drover-acpi-XXXXXX");

	if (!dir || !mkdtemp(dir)) {
		free(dir);
		return -1;
	}
	*state = dir;
	return 0;
}

static int remove_tmpdir(void **state)
{
	char cmd[128];
	int ret;

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", (char *)*state);
	ret = system(cmd);
	free(*state);
	return ret == 0 ? 0 : -1;
}

static void test_iasl_disassembles_every_table(void **state)
{
	const char *iasl = iasl_path();
	const char *dir = *state;

	if (!iasl)
		skip();
	dump_and_disassemble(iasl, dir, 1);
	dump_and_disassemble(iasl, dir, PLATFORM_MAX_CPUS);
}

/* GED0._EVT was evaluated twice, with another GSI and with the power
 * button's: only the second notified PWRB, with 0x80 (pressed). */
static bool power_button_notified(const char *out)
{
	const char *first = strstr(out, "Evaluating \\_SB.GED0._EVT");
	const char *second = first ? strstr(first + 1, "Evaluating \\_SB.GED0._EVT") : NULL;
	const char *notify = first ? strstr(first, "Notify") : NULL;
	const char *eol = notify ? strchr(notify, '\n') : NULL;
	const char *value = notify ? strstr(notify, "Value 0x80") : NULL;

	return second && notify && notify > second && !strstr(notify + 1, "Notify") &&
	       !strncmp(notify, "Notify on [PWRB]", 16) && value && eol && value < eol;
}

/* ACPICA's interpreter (the one inside Linux) loads the tables and
 * evaluates what Linux evaluates at boot, at power-off and when the power
 * button is pressed. */
static void test_acpica_evaluates_dsdt(void **state)
{
	const char *acpiexec = acpiexec_path();
	struct guest_mem gm;
	struct platform_desc pd;
	struct walk w;
	struct table dsdt;
	uint64_t rsdp;
	const char *dir = *state;
	char cmd[2048], path[512], *out;
	int status;

	if (!acpiexec)
		skip();
	make_platform(&pd, 8, 1);
	assert_int_equal(guest_mem_init(&gm, TEST_RAM), 0);
	assert_int_equal(acpi_build(&gm, &pd, &rsdp), 0);
	walk_tables(&gm, &w);
	check_fadt(&gm, &pd, &w, &dsdt);
	snprintf(path, sizeof(path), "%s/dsdt.dat", dir);
	write_blob(path, dsdt.p, dsdt.len);
	for (unsigned i = 0; i < w.ntables; i++) {
		snprintf(path, sizeof(path), "%s/%s.dat", dir, w.t[i].sig);
		write_blob(path, w.t[i].p, w.t[i].len);
	}
	snprintf(cmd, sizeof(cmd),
		 "cd '%s' && '%s' -b 'evaluate \\_S5; evaluate \\_SB.COM1._HID; "
		 "evaluate \\_SB.COM1._CRS; evaluate \\_SB.RTC._HID; evaluate \\_SB.RTC._CRS; "
		 "evaluate \\_SB.GED0._EVT 3; evaluate \\_SB.GED0._EVT %u' "
		 "dsdt.dat FACP.dat APIC.dat > acpiexec.log 2>&1 < /dev/null",
		 dir, acpiexec, GSI_POWER_BUTTON);
	status = system(cmd);
	snprintf(path, sizeof(path), "%s/acpiexec.log", dir);
	out = slurp(path);
	assert_non_null(out);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || strstr(out, "Error") ||
	    strstr(out, "AE_") || strstr(out, "Warning"))
		fail_msg("acpiexec failed (status %#x):\n%s", status, out);
	if (!strstr(out, "[Package] Contains 4 Elements:\n"
			 "    [Integer] = 0000000000000005\n"
			 "    [Integer] = 0000000000000005\n"
			 "    [Integer] = 0000000000000000\n"
			 "    [Integer] = 0000000000000000\n") ||
	    !strstr(out, "[Integer] = 000000000105D041") ||     /* PNP0501 */
	    !strstr(out, "[Integer] = 00000000000BD041") ||     /* PNP0B00 */
	    !strstr(out, "47 01 F8 03 F8 03 01 08 22 10 00 79 00") ||
	    !strstr(out, "47 01 70 00 70 00 01 02 22 00 01 79 00") ||
	    !power_button_notified(out))
		fail_msg("acpiexec evaluated something else:\n%s", out);
	free(out);
	guest_mem_free(&gm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_checksum),
		cmocka_unit_test(test_one_cpu),
		cmocka_unit_test(test_two_cpus_sparse_apic_ids),
		cmocka_unit_test(test_max_cpus),
		cmocka_unit_test(test_com_port_follows_platform),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test_setup_teardown(test_iasl_disassembles_every_table,
						make_tmpdir, remove_tmpdir),
		cmocka_unit_test_setup_teardown(test_acpica_evaluates_dsdt,
						make_tmpdir, remove_tmpdir),
	};
	int failed = cmocka_run_group_tests(tests, NULL, NULL);

	if (failed)
		return failed;
	if (!iasl_path() || !acpiexec_path()) {
		fprintf(stderr, "test_acpi: iasl or acpiexec not installed (Debian package "
				"acpica-tools): tables not checked with ACPICA, reporting skip\n");
		return 77;
	}
	return 0;
}
