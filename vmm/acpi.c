/* ACPI tables of a hardware-reduced ACPI 6.3 platform.
 *
 * Layout of [ACPI_TABLES_ADDR, +ACPI_TABLES_SIZE), in build order:
 *   RSDP (first, so a scan of 0xe0000-0xfffff meets it at the area's start)
 *   DSDT, then every table of acpi_tables[] (FADT, MADT, ...)
 *   XSDT and RSDT last: they list the tables built before them.
 * Every table starts on a 16-byte boundary. Adding a table takes a build
 * function and one line in acpi_tables[].
 *
 * Invariants: the area is zeroed before the build, so reserved fields and
 * padding read as zero; a table's checksum is computed only once its length
 * and contents are final (table_finish). */
#include "acpi.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "layout.h"
#include "log.h"
#include "pci.h"
#include "util.h"

#define ACPI_OEM_ID          "DROVER"
#define ACPI_OEM_TABLE_ID    "DRVRVMM "
#define ACPI_OEM_REVISION    1
#define ACPI_CREATOR_ID      "DRVR"
#define ACPI_CREATOR_REV     1
#define ACPI_HYPERVISOR_ID   "DROVER  "
#define ACPI_MAX_TABLES      16
#define ACPI_TABLE_ALIGN     16

struct acpi_header {
	char signature[4];
	uint32_t length;
	uint8_t revision;
	uint8_t checksum;
	char oem_id[6];
	char oem_table_id[8];
	uint32_t oem_revision;
	char creator_id[4];
	uint32_t creator_revision;
} __attribute__((packed));

struct acpi_rsdp {
	char signature[8];
	uint8_t checksum;          /* over the first 20 bytes (ACPI 1.0 part) */
	char oem_id[6];
	uint8_t revision;
	uint32_t rsdt_address;
	uint32_t length;
	uint64_t xsdt_address;
	uint8_t extended_checksum; /* over all 36 bytes */
	uint8_t reserved[3];
} __attribute__((packed));

#define ACPI_RSDP_V1_LEN 20

/* Generic Address Structure */
struct acpi_gas {
	uint8_t space_id;
	uint8_t bit_width;
	uint8_t bit_offset;
	uint8_t access_size;
	uint64_t address;
} __attribute__((packed));

#define ACPI_GAS_SYSTEM_IO   1
#define ACPI_GAS_ACCESS_BYTE 1

struct acpi_fadt {
	struct acpi_header h;
	uint32_t firmware_ctrl;
	uint32_t dsdt;
	uint8_t reserved0;
	uint8_t preferred_pm_profile;
	uint16_t sci_int;
	uint32_t smi_cmd;
	uint8_t acpi_enable;
	uint8_t acpi_disable;
	uint8_t s4bios_req;
	uint8_t pstate_cnt;
	uint32_t pm1a_evt_blk, pm1b_evt_blk, pm1a_cnt_blk, pm1b_cnt_blk;
	uint32_t pm2_cnt_blk, pm_tmr_blk, gpe0_blk, gpe1_blk;
	uint8_t pm1_evt_len, pm1_cnt_len, pm2_cnt_len, pm_tmr_len;
	uint8_t gpe0_blk_len, gpe1_blk_len, gpe1_base, cst_cnt;
	uint16_t p_lvl2_lat, p_lvl3_lat, flush_size, flush_stride;
	uint8_t duty_offset, duty_width, day_alrm, mon_alrm, century;
	uint16_t iapc_boot_arch;
	uint8_t reserved1;
	uint32_t flags;
	struct acpi_gas reset_reg;
	uint8_t reset_value;
	uint16_t arm_boot_arch;
	uint8_t minor_version;
	uint64_t x_firmware_ctrl;
	uint64_t x_dsdt;
	struct acpi_gas x_pm1a_evt_blk, x_pm1b_evt_blk, x_pm1a_cnt_blk, x_pm1b_cnt_blk;
	struct acpi_gas x_pm2_cnt_blk, x_pm_tmr_blk, x_gpe0_blk, x_gpe1_blk;
	struct acpi_gas sleep_control_reg;
	struct acpi_gas sleep_status_reg;
	char hypervisor_vendor_id[8];
} __attribute__((packed));

_Static_assert(sizeof(struct acpi_header) == 36, "ACPI table header is 36 bytes");
_Static_assert(sizeof(struct acpi_rsdp) == 36, "ACPI 2.0+ RSDP is 36 bytes");
_Static_assert(offsetof(struct acpi_fadt, flags) == 112, "FADT Flags at 112");
_Static_assert(offsetof(struct acpi_fadt, x_dsdt) == 140, "FADT X_DSDT at 140");
_Static_assert(offsetof(struct acpi_fadt, sleep_control_reg) == 244, "FADT SLEEP_CONTROL_REG at 244");
_Static_assert(sizeof(struct acpi_fadt) == 276, "ACPI 6.x FADT is 276 bytes");

#define FADT_REVISION        6
#define FADT_MINOR_VERSION   3

/* FADT Flags */
#define FADT_WBINVD          (1u << 0)
#define FADT_PROC_C1         (1u << 2)
#define FADT_PWR_BUTTON      (1u << 4)   /* set: no fixed-feature power button */
#define FADT_SLP_BUTTON      (1u << 5)   /* set: no fixed-feature sleep button */
#define FADT_RESET_REG_SUP   (1u << 10)
#define FADT_HW_REDUCED_ACPI (1u << 20)

/* FADT IA-PC boot architecture flags */
#define BOOT_ARCH_LEGACY_DEVICES (1u << 0)
#define BOOT_ARCH_8042           (1u << 1)
#define BOOT_ARCH_VGA_NOT_PRESENT (1u << 2)

/* An ISA IRQ no device uses. Hardware-reduced ACPI has no SCI; an OS that
 * ignores HW_REDUCED_ACPI and wires one up anyway must not take the timer's
 * GSI 0 for it. */
#define FADT_UNUSED_SCI_IRQ  9

struct acpi_madt {
	struct acpi_header h;
	uint32_t lapic_address;
	uint32_t flags;
} __attribute__((packed));

struct madt_lapic {
	uint8_t type, length;
	uint8_t processor_uid;
	uint8_t apic_id;
	uint32_t flags;
} __attribute__((packed));

struct madt_ioapic {
	uint8_t type, length;
	uint8_t ioapic_id;
	uint8_t reserved;
	uint32_t address;
	uint32_t gsi_base;
} __attribute__((packed));

struct madt_lapic_nmi {
	uint8_t type, length;
	uint8_t processor_uid;
	uint16_t flags;
	uint8_t lint;
} __attribute__((packed));

_Static_assert(sizeof(struct madt_lapic) == 8, "MADT local APIC entry is 8 bytes");
_Static_assert(sizeof(struct madt_ioapic) == 12, "MADT I/O APIC entry is 12 bytes");
_Static_assert(sizeof(struct madt_lapic_nmi) == 6, "MADT local APIC NMI entry is 6 bytes");

#define MADT_REVISION        5
#define MADT_PCAT_COMPAT     (1u << 0)
#define MADT_TYPE_LAPIC      0
#define MADT_TYPE_IOAPIC     1
#define MADT_TYPE_LAPIC_NMI  4
#define MADT_LAPIC_ENABLED   (1u << 0)
#define MADT_ALL_PROCESSORS  0xff
#define MPS_INTI_CONFORMING  0   /* polarity and trigger as the bus defines them */

#define DSDT_REVISION        2   /* 2: AML integers are 64 bits */
#define XSDT_REVISION        1
#define RSDT_REVISION        1
#define RSDP_REVISION        2

/* The area being filled, and the tables the XSDT and RSDT will list. */
struct acpi_area {
	uint8_t *host;
	uint64_t gpa;
	uint32_t size;
	uint32_t used;
	uint64_t dsdt_gpa;
	uint64_t pci_mmio64_base;  /* the PCI host bridge's 64-bit window */
	unsigned ntables;
	uint64_t table_gpa[ACPI_MAX_TABLES];
};

uint8_t acpi_checksum(const void *data, unsigned len)
{
	const uint8_t *p = data;
	uint8_t sum = 0;

	for (unsigned i = 0; i < len; i++)
		sum += p[i];
	return (uint8_t)-sum;
}

/* Reserves len bytes on an ACPI_TABLE_ALIGN boundary; NULL when the area is
 * full. */
static void *area_alloc(struct acpi_area *a, uint32_t len, uint64_t *gpa)
{
	uint32_t off = ALIGN_UP(a->used, ACPI_TABLE_ALIGN);

	if (off > a->size || len > a->size - off)
		return NULL;
	a->used = off + len;
	*gpa = a->gpa + off;
	return a->host + off;
}

/* Grows the last allocation (the table being built) by len bytes. */
static void *area_extend(struct acpi_area *a, uint32_t len)
{
	uint8_t *p;

	if (len > a->size - a->used)
		return NULL;
	p = a->host + a->used;
	a->used += len;
	return p;
}

static void table_header_init(struct acpi_header *h, const char *sig, uint8_t revision)
{
	memcpy(h->signature, sig, sizeof(h->signature));
	h->revision = revision;
	memcpy(h->oem_id, ACPI_OEM_ID, sizeof(h->oem_id));
	memcpy(h->oem_table_id, ACPI_OEM_TABLE_ID, sizeof(h->oem_table_id));
	h->oem_revision = ACPI_OEM_REVISION;
	memcpy(h->creator_id, ACPI_CREATOR_ID, sizeof(h->creator_id));
	h->creator_revision = ACPI_CREATOR_REV;
}

/* Starts a table of fixed part `len` (header included). */
static void *table_begin(struct acpi_area *a, const char *sig, uint8_t revision,
			 uint32_t len, uint64_t *gpa)
{
	struct acpi_header *h = area_alloc(a, len, gpa);

	if (h)
		table_header_init(h, sig, revision);
	return h;
}

/* The table runs from its header to the end of the area's used part. */
static void table_finish(struct acpi_area *a, struct acpi_header *h)
{
	h->length = (uint32_t)(a->host + a->used - (uint8_t *)h);
	h->checksum = 0;
	h->checksum = acpi_checksum(h, h->length);
}

static struct acpi_gas gas_io8(uint16_t port)
{
	return (struct acpi_gas){
		.space_id = ACPI_GAS_SYSTEM_IO,
		.bit_width = 8,
		.bit_offset = 0,
		.access_size = ACPI_GAS_ACCESS_BYTE,
		.address = port,
	};
}

/* ---- AML emitter -----------------------------------------------------
 * Writes AML into a bounded buffer. Opcodes that carry a PkgLength (Scope,
 * Device, Package, Buffer) reserve the longest encoding when opened and move
 * their body down when closed, once its length is known. Any overflow sticks
 * and is reported by aml_end. */

#define AML_ZERO          0x00
#define AML_ONE           0x01
#define AML_NAME          0x08
#define AML_BYTE_PREFIX   0x0a
#define AML_WORD_PREFIX   0x0b
#define AML_DWORD_PREFIX  0x0c
#define AML_QWORD_PREFIX  0x0e
#define AML_SCOPE         0x10
#define AML_BUFFER        0x11
#define AML_PACKAGE       0x12
#define AML_STRING_PREFIX 0x0d
#define AML_METHOD        0x14
#define AML_ARG0          0x68
#define AML_LEQUAL        0x93
#define AML_NOTIFY        0x86
#define AML_IF            0xa0
#define AML_EXT_PREFIX    0x5b
#define AML_EXT_DEVICE    0x82
#define AML_ROOT_CHAR     '\\'
#define AML_ONES          0xff

#define AML_PKGLEN_MAX_BYTES 4
#define AML_MAX_DEPTH        8

/* Small resource descriptors (ACPI 6.3, 6.4.2) */
#define RES_IRQ_NO_FLAGS  0x22   /* type 0x04, length 2 */
#define RES_IO            0x47   /* type 0x08, length 7 */
#define RES_IO_DECODE16   0x01
#define RES_END_TAG       0x79   /* type 0x0f, length 1 */

/* Large resource descriptors (ACPI 6.3, 6.4.3) */
#define RES_DWORD_ADDR    0x87
#define RES_EXT_IRQ       0x89
#define RES_EXT_IRQ_CONSUMER_EDGE 0x03   /* consumer, edge, active-high, exclusive */
#define RES_WORD_ADDR     0x88
#define RES_QWORD_ADDR    0x8a
#define RES_ADDR_MEMORY   0
#define RES_ADDR_BUS      2
#define RES_ADDR_FIXED    0x0c   /* _MIF and _MAF set, positive decode, producer */
#define RES_MEM_RW        0x01   /* read-write, non-cacheable */

struct aml {
	uint8_t *buf;
	size_t cap, len;
	bool overflow;
	unsigned depth;
	size_t open[AML_MAX_DEPTH];  /* offset of each open PkgLength */
};

static void aml_bytes(struct aml *a, const void *data, size_t len)
{
	if (a->overflow || len > a->cap - a->len) {
		a->overflow = true;
		return;
	}
	memcpy(a->buf + a->len, data, len);
	a->len += len;
}

static void aml_byte(struct aml *a, uint8_t b)
{
	aml_bytes(a, &b, 1);
}

static void aml_le(struct aml *a, uint64_t v, unsigned nbytes)
{
	for (unsigned i = 0; i < nbytes; i++)
		aml_byte(a, (uint8_t)(v >> (8 * i)));
}

/* A NameString: an optional root prefix then dot-separated 4-character
 * segments, short ones padded with '_' ("\\_SB", "COM1", "_S5"). */
static void aml_name(struct aml *a, const char *name)
{
	const char *seg = name;
	unsigned nsegs = 1;

	if (*seg == AML_ROOT_CHAR)
		aml_byte(a, *seg++);
	for (const char *p = seg; *p; p++)
		nsegs += *p == '.';
	if (nsegs == 2)
		aml_byte(a, 0x2e);          /* DualNamePrefix */
	else if (nsegs > 2) {
		aml_byte(a, 0x2f);          /* MultiNamePrefix */
		aml_byte(a, (uint8_t)nsegs);
	}
	while (*seg) {
		char out[4] = { '_', '_', '_', '_' };
		unsigned n = 0;

		while (*seg && *seg != '.') {
			if (n < 4)
				out[n] = *seg;
			n++;
			seg++;
		}
		if (*seg == '.')
			seg++;
		aml_bytes(a, out, 4);
	}
}

/* An integer in its shortest encoding. */
static void aml_integer(struct aml *a, uint64_t v)
{
	if (v == 0)
		aml_byte(a, AML_ZERO);
	else if (v == 1)
		aml_byte(a, AML_ONE);
	else if (v <= 0xff) {
		aml_byte(a, AML_BYTE_PREFIX);
		aml_le(a, v, 1);
	} else if (v <= 0xffff) {
		aml_byte(a, AML_WORD_PREFIX);
		aml_le(a, v, 2);
	} else if (v <= 0xffffffff) {
		aml_byte(a, AML_DWORD_PREFIX);
		aml_le(a, v, 4);
	} else {
		aml_byte(a, AML_QWORD_PREFIX);
		aml_le(a, v, 8);
	}
}

/* EISAID("PNP0501"): three letters of 5 bits each and four hex digits,
 * stored most significant byte first. */
static void aml_eisa_id(struct aml *a, const char *id)
{
	uint8_t c1 = id[0] - '@', c2 = id[1] - '@', c3 = id[2] - '@';
	uint8_t b[4];
	unsigned digits[4];

	for (unsigned i = 0; i < 4; i++) {
		char c = id[3 + i];

		digits[i] = c <= '9' ? (unsigned)(c - '0') : (unsigned)(c - 'A' + 10);
	}
	b[0] = (uint8_t)((c1 << 2) | (c2 >> 3));
	b[1] = (uint8_t)(((c2 & 7) << 5) | c3);
	b[2] = (uint8_t)((digits[0] << 4) | digits[1]);
	b[3] = (uint8_t)((digits[2] << 4) | digits[3]);
	aml_byte(a, AML_DWORD_PREFIX);
	aml_bytes(a, b, sizeof(b));
}

static void aml_open(struct aml *a)
{
	static const uint8_t reserve[AML_PKGLEN_MAX_BYTES];

	if (a->depth == AML_MAX_DEPTH) {
		a->overflow = true;
		return;
	}
	a->open[a->depth++] = a->len;
	aml_bytes(a, reserve, sizeof(reserve));
}

/* Encodes the PkgLength of the innermost open object; the length counts its
 * own bytes and the body. */
static void aml_close(struct aml *a)
{
	size_t at, body;
	uint32_t total;
	unsigned nbytes;

	if (a->overflow || a->depth == 0) {
		a->overflow = true;
		return;
	}
	at = a->open[--a->depth];
	body = a->len - at - AML_PKGLEN_MAX_BYTES;
	if (body + 1 < 0x40)
		nbytes = 1;
	else if (body + 2 < 0x1000)
		nbytes = 2;
	else if (body + 3 < 0x100000)
		nbytes = 3;
	else if (body + 4 < 0x10000000)
		nbytes = 4;
	else {
		a->overflow = true;
		return;
	}
	total = (uint32_t)(body + nbytes);
	if (nbytes == 1) {
		a->buf[at] = (uint8_t)total;
	} else {
		a->buf[at] = (uint8_t)(((nbytes - 1) << 6) | (total & 0xf));
		for (unsigned i = 1; i < nbytes; i++)
			a->buf[at + i] = (uint8_t)(total >> (4 + 8 * (i - 1)));
	}
	memmove(a->buf + at + nbytes, a->buf + at + AML_PKGLEN_MAX_BYTES, body);
	a->len -= AML_PKGLEN_MAX_BYTES - nbytes;
}

static void aml_scope_begin(struct aml *a, const char *name)
{
	aml_byte(a, AML_SCOPE);
	aml_open(a);
	aml_name(a, name);
}

static void aml_device_begin(struct aml *a, const char *name)
{
	aml_byte(a, AML_EXT_PREFIX);
	aml_byte(a, AML_EXT_DEVICE);
	aml_open(a);
	aml_name(a, name);
}

static void aml_name_begin(struct aml *a, const char *name)
{
	aml_byte(a, AML_NAME);
	aml_name(a, name);
}

/* Name (name, Package () { values... }) */
static void aml_name_package(struct aml *a, const char *name, const uint64_t *values, unsigned n)
{
	aml_name_begin(a, name);
	aml_byte(a, AML_PACKAGE);
	aml_open(a);
	aml_byte(a, (uint8_t)n);
	for (unsigned i = 0; i < n; i++)
		aml_integer(a, values[i]);
	aml_close(a);
}

/* Name (name, Buffer () { bytes }) */
static void aml_name_buffer(struct aml *a, const char *name, const uint8_t *bytes, size_t n)
{
	aml_name_begin(a, name);
	aml_byte(a, AML_BUFFER);
	aml_open(a);
	aml_integer(a, n);
	aml_bytes(a, bytes, n);
	aml_close(a);
}

static void aml_string(struct aml *a, const char *str)
{
	aml_byte(a, AML_STRING_PREFIX);
	aml_bytes(a, str, strlen(str) + 1);
}

/* Method (name, nargs, NotSerialized) { ... }: close with aml_close. */
static void aml_method_begin(struct aml *a, const char *name, unsigned nargs)
{
	aml_byte(a, AML_METHOD);
	aml_open(a);
	aml_name(a, name);
	aml_byte(a, (uint8_t)(nargs & 7));
}

/* If (LEqual (Arg0, value)) { ... }: close with aml_close. */
static void aml_if_arg0_equals(struct aml *a, uint64_t value)
{
	aml_byte(a, AML_IF);
	aml_open(a);
	aml_byte(a, AML_LEQUAL);
	aml_byte(a, AML_ARG0);
	aml_integer(a, value);
}

/* Notify (object, value) */
static void aml_notify(struct aml *a, const char *object, uint8_t value)
{
	aml_byte(a, AML_NOTIFY);
	aml_name(a, object);
	aml_integer(a, value);
}

/* A resource template being assembled before it goes out as a Buffer. */
struct aml_resources {
	uint8_t b[128];
	size_t len;
	bool overflow;
};

static void res_bytes(struct aml_resources *r, const uint8_t *data, size_t len)
{
	if (r->overflow || len > sizeof(r->b) - r->len) {
		r->overflow = true;
		return;
	}
	memcpy(r->b + r->len, data, len);
	r->len += len;
}

/* IO (Decode16, port, port, 1, len): a fixed range. */
static void res_io(struct aml_resources *r, uint16_t port, uint8_t len)
{
	const uint8_t d[] = {
		RES_IO, RES_IO_DECODE16,
		(uint8_t)port, (uint8_t)(port >> 8),
		(uint8_t)port, (uint8_t)(port >> 8),
		1, len,
	};

	res_bytes(r, d, sizeof(d));
}

/* IRQNoFlags () { irq }: edge-triggered, active-high, exclusive ISA IRQ. */
static void res_irq(struct aml_resources *r, uint8_t irq)
{
	uint16_t mask = (uint16_t)(1u << irq);
	const uint8_t d[] = { RES_IRQ_NO_FLAGS, (uint8_t)mask, (uint8_t)(mask >> 8) };

	res_bytes(r, d, sizeof(d));
}

/* Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { gsi } */
static void res_ext_irq(struct aml_resources *r, uint32_t gsi)
{
	const uint8_t d[] = {
		RES_EXT_IRQ, 6, 0, RES_EXT_IRQ_CONSUMER_EDGE, 1,
		(uint8_t)gsi, (uint8_t)(gsi >> 8), (uint8_t)(gsi >> 16), (uint8_t)(gsi >> 24),
	};

	res_bytes(r, d, sizeof(d));
}

/* A Word/DWord/QWord Address Space Descriptor of `width` bytes per field:
 * a fixed window [min, max] with no translation. */
static void res_addr(struct aml_resources *r, uint8_t tag, unsigned width, uint8_t type,
		     uint8_t type_flags, uint64_t min, uint64_t max)
{
	uint8_t d[3 + 3 + 5 * 8];
	size_t n = 0;
	uint16_t body = (uint16_t)(3 + 5 * width);
	const uint64_t fields[5] = { 0, min, max, 0, max - min + 1 };

	d[n++] = tag;
	d[n++] = (uint8_t)body;
	d[n++] = (uint8_t)(body >> 8);
	d[n++] = type;
	d[n++] = RES_ADDR_FIXED;
	d[n++] = type_flags;
	for (unsigned f = 0; f < 5; f++)
		for (unsigned i = 0; i < width; i++)
			d[n++] = (uint8_t)(fields[f] >> (8 * i));
	res_bytes(r, d, n);
}

/* Name (_CRS, ResourceTemplate () { ... }); a zero end-tag checksum means
 * "treat as valid". */
static void aml_crs(struct aml *a, struct aml_resources *r)
{
	const uint8_t end[] = { RES_END_TAG, 0 };

	res_bytes(r, end, sizeof(end));
	if (r->overflow) {
		a->overflow = true;
		return;
	}
	aml_name_buffer(a, "_CRS", r->b, r->len);
}

/* A legacy ISA device with one I/O range and one IRQ. */
static void aml_isa_device(struct aml *a, const char *name, const char *eisa_id, unsigned uid,
			   uint16_t port, uint8_t nports, uint8_t irq)
{
	struct aml_resources r = { .len = 0 };

	aml_device_begin(a, name);
	aml_name_begin(a, "_HID");
	aml_eisa_id(a, eisa_id);
	aml_name_begin(a, "_UID");
	aml_integer(a, uid);
	res_io(&r, port, nports);
	res_irq(&r, irq);
	aml_crs(a, &r);
	aml_close(a);
}

/* The PCI host bridge (pci.h): ECAM segment 0, bus 0..255, the I/O ports of
 * configuration mechanism #1, both MMIO windows, and a _PRT that wires pin
 * p of slot s to GSI 16 + (s + p) % 4 (level-triggered, shared). */
static void aml_pci_host_bridge(struct aml *a, uint64_t mmio64_base)
{
	struct aml_resources r = { .len = 0 };

	aml_device_begin(a, "PCI0");
	aml_name_begin(a, "_HID");
	aml_eisa_id(a, "PNP0A08");
	aml_name_begin(a, "_CID");
	aml_eisa_id(a, "PNP0A03");
	aml_name_begin(a, "_SEG");
	aml_integer(a, 0);
	aml_name_begin(a, "_BBN");
	aml_integer(a, 0);
	aml_name_begin(a, "_UID");
	aml_integer(a, 0);
	res_addr(&r, RES_WORD_ADDR, 2, RES_ADDR_BUS, 0, 0, 0xff);
	res_io(&r, PCI_CONFIG_ADDR_PORT, 8);
	res_addr(&r, RES_DWORD_ADDR, 4, RES_ADDR_MEMORY, RES_MEM_RW, PCI_MMIO32_BASE,
		 PCI_MMIO32_BASE + PCI_MMIO32_SIZE - 1);
	res_addr(&r, RES_QWORD_ADDR, 8, RES_ADDR_MEMORY, RES_MEM_RW, mmio64_base,
		 mmio64_base + PCI_MMIO64_SIZE - 1);
	aml_crs(a, &r);

	aml_name_begin(a, "_PRT");
	aml_byte(a, AML_PACKAGE);
	aml_open(a);
	aml_byte(a, (PCI_MAX_SLOTS - 1) * 4);
	for (unsigned slot = 1; slot < PCI_MAX_SLOTS; slot++) {
		for (unsigned pin = 0; pin < 4; pin++) {
			aml_byte(a, AML_PACKAGE);
			aml_open(a);
			aml_byte(a, 4);
			aml_integer(a, (uint64_t)slot << 16 | 0xffff);
			aml_integer(a, pin);
			aml_integer(a, 0);
			aml_integer(a, PCI_INTX_GSI_BASE + (slot + pin) % 4);
			aml_close(a);
		}
	}
	aml_close(a);
	aml_close(a);
}

/* The power button of a hardware-reduced platform (ACPI 6.3, 4.8.2.2.1.2
 * and 5.6.9): a control-method power button (PNP0C0C) that a Generic Event
 * Device (ACPI0013) notifies when its interrupt fires. The interrupt line
 * is the button's alone, so _EVT needs no event register: the GSI it is
 * called with says which event came. system_powerdown pulses it. */
static void aml_power_button(struct aml *a)
{
	struct aml_resources r = { .len = 0 };

	aml_device_begin(a, "PWRB");
	aml_name_begin(a, "_HID");
	aml_eisa_id(a, "PNP0C0C");
	aml_name_begin(a, "_UID");
	aml_integer(a, 0);
	aml_close(a);

	aml_device_begin(a, "GED0");
	aml_name_begin(a, "_HID");
	aml_string(a, "ACPI0013");
	aml_name_begin(a, "_UID");
	aml_integer(a, 0);
	res_ext_irq(&r, GSI_POWER_BUTTON);
	aml_crs(a, &r);
	aml_method_begin(a, "_EVT", 1);
	aml_if_arg0_equals(a, GSI_POWER_BUTTON);
	aml_notify(a, "\\_SB.PWRB", 0x80);     /* 0x80: the button was pressed */
	aml_close(a);
	aml_close(a);
	aml_close(a);
}

/* ---- tables ---------------------------------------------------------- */

/* The VMM's sleep control register powers off on SLP_TYP 5 (in both the
 * PM1a and PM1b positions of the package). */
#define SLP_TYP_POWER_OFF 5

static int build_dsdt(struct acpi_area *a, const struct platform_desc *pd, uint64_t *gpa)
{
	static const uint64_t s5[] = { SLP_TYP_POWER_OFF, SLP_TYP_POWER_OFF, 0, 0 };
	struct acpi_header *h = table_begin(a, "DSDT", DSDT_REVISION, sizeof(*h), gpa);
	struct aml aml;

	if (!h)
		return -ENOSPC;
	aml = (struct aml){ .buf = a->host + a->used, .cap = a->size - a->used };

	aml_scope_begin(&aml, "\\_SB");
	aml_isa_device(&aml, "COM1", "PNP0501", 0, pd->com1_port, 8, pd->com1_irq);
	aml_isa_device(&aml, "RTC", "PNP0B00", 0, PORT_CMOS_INDEX, 2, IRQ_RTC);
	aml_pci_host_bridge(&aml, a->pci_mmio64_base);
	aml_power_button(&aml);
	aml_close(&aml);
	aml_name_package(&aml, "\\_S5", s5, ARRAY_SIZE(s5));

	if (aml.overflow || aml.depth != 0)
		return -ENOSPC;
	area_extend(a, (uint32_t)aml.len);
	table_finish(a, h);
	a->dsdt_gpa = *gpa;
	return 0;
}

static int build_fadt(struct acpi_area *a, const struct platform_desc *pd, uint64_t *gpa)
{
	struct acpi_fadt *f = table_begin(a, "FACP", FADT_REVISION, sizeof(*f), gpa);

	if (!f)
		return -ENOSPC;
	f->dsdt = (uint32_t)a->dsdt_gpa;
	f->x_dsdt = a->dsdt_gpa;
	f->sci_int = FADT_UNUSED_SCI_IRQ;
	f->flags = FADT_WBINVD | FADT_PROC_C1 | FADT_PWR_BUTTON | FADT_SLP_BUTTON |
		   FADT_RESET_REG_SUP | FADT_HW_REDUCED_ACPI;
	/* Serial port and RTC are ISA devices; the i8042 only carries the
	 * reset line, so no OS may probe it for a keyboard. */
	f->iapc_boot_arch = BOOT_ARCH_LEGACY_DEVICES | BOOT_ARCH_VGA_NOT_PRESENT;
	f->reset_reg = gas_io8(pd->reset_port);
	f->reset_value = pd->reset_value;
	f->minor_version = FADT_MINOR_VERSION;
	f->sleep_control_reg = gas_io8(pd->sleep_ctl_port);
	f->sleep_status_reg = gas_io8(pd->sleep_sts_port);
	memcpy(f->hypervisor_vendor_id, ACPI_HYPERVISOR_ID, sizeof(f->hypervisor_vendor_id));
	table_finish(a, &f->h);
	return 0;
}

static int build_madt(struct acpi_area *a, const struct platform_desc *pd, uint64_t *gpa)
{
	struct acpi_madt *m = table_begin(a, "APIC", MADT_REVISION, sizeof(*m), gpa);
	struct madt_ioapic *io;
	struct madt_lapic_nmi *nmi;

	if (!m)
		return -ENOSPC;
	m->lapic_address = (uint32_t)pd->lapic_addr;
	/* The 8259 PICs exist (KVM's in-kernel irqchip): the OS masks them. */
	m->flags = MADT_PCAT_COMPAT;

	for (unsigned i = 0; i < pd->ncpus; i++) {
		struct madt_lapic *l = area_extend(a, sizeof(*l));

		if (!l)
			return -ENOSPC;
		*l = (struct madt_lapic){
			.type = MADT_TYPE_LAPIC, .length = sizeof(*l),
			.processor_uid = (uint8_t)i, .apic_id = pd->apic_id[i],
			.flags = MADT_LAPIC_ENABLED,
		};
	}

	/* GSI n is I/O APIC pin n and ISA IRQ n is GSI n (KVM's default
	 * routing), which is what an OS assumes without interrupt source
	 * overrides: so there are none, not even the usual IRQ0 -> GSI2. */
	io = area_extend(a, sizeof(*io));
	if (!io)
		return -ENOSPC;
	*io = (struct madt_ioapic){
		.type = MADT_TYPE_IOAPIC, .length = sizeof(*io),
		.ioapic_id = pd->ioapic_id, .address = (uint32_t)pd->ioapic_addr, .gsi_base = 0,
	};

	nmi = area_extend(a, sizeof(*nmi));
	if (!nmi)
		return -ENOSPC;
	*nmi = (struct madt_lapic_nmi){
		.type = MADT_TYPE_LAPIC_NMI, .length = sizeof(*nmi),
		.processor_uid = MADT_ALL_PROCESSORS, .flags = MPS_INTI_CONFORMING, .lint = 1,
	};
	table_finish(a, &m->h);
	return 0;
}

struct acpi_mcfg_entry {
	uint64_t base;
	uint16_t segment;
	uint8_t start_bus, end_bus;
	uint32_t reserved;
} __attribute__((packed));

_Static_assert(sizeof(struct acpi_mcfg_entry) == 16, "MCFG allocation entry is 16 bytes");

#define MCFG_REVISION        1

/* PCI Firmware Specification 3.0, 4.1.2: one ECAM area, segment 0. */
static int build_mcfg(struct acpi_area *a, const struct platform_desc *pd, uint64_t *gpa)
{
	struct acpi_header *h = table_begin(a, "MCFG", MCFG_REVISION, sizeof(*h) + 8, gpa);
	struct acpi_mcfg_entry *e;

	if (!h)
		return -ENOSPC;
	e = area_extend(a, sizeof(*e));
	if (!e)
		return -ENOSPC;
	*e = (struct acpi_mcfg_entry){
		.base = PCI_ECAM_BASE, .segment = 0, .start_bus = 0,
		.end_bus = (uint8_t)(PCI_ECAM_SIZE / (1 << 20) - 1),
	};
	table_finish(a, h);
	return 0;
}

/* Tables listed in the XSDT and RSDT, in this order. The DSDT is not among
 * them (the FADT points to it) and is built before them. */
static const struct acpi_table_builder {
	const char *signature;
	int (*build)(struct acpi_area *a, const struct platform_desc *pd, uint64_t *gpa);
} acpi_tables[] = {
	{ "FACP", build_fadt },
	{ "APIC", build_madt },
	{ "MCFG", build_mcfg },
};

static int build_xsdt(struct acpi_area *a, uint64_t *gpa)
{
	struct acpi_header *h = table_begin(a, "XSDT", XSDT_REVISION, sizeof(*h), gpa);

	if (!h)
		return -ENOSPC;
	for (unsigned i = 0; i < a->ntables; i++) {
		/* Entries are only 4-byte aligned: copy, do not dereference. */
		void *e = area_extend(a, sizeof(uint64_t));

		if (!e)
			return -ENOSPC;
		memcpy(e, &a->table_gpa[i], sizeof(uint64_t));
	}
	table_finish(a, h);
	return 0;
}

static int build_rsdt(struct acpi_area *a, uint64_t *gpa)
{
	struct acpi_header *h = table_begin(a, "RSDT", RSDT_REVISION, sizeof(*h), gpa);

	if (!h)
		return -ENOSPC;
	for (unsigned i = 0; i < a->ntables; i++) {
		uint32_t addr = (uint32_t)a->table_gpa[i];
		void *e = area_extend(a, sizeof(addr));

		if (!e)
			return -ENOSPC;
		memcpy(e, &addr, sizeof(addr));
	}
	table_finish(a, h);
	return 0;
}

static void fill_rsdp(struct acpi_rsdp *r, uint64_t rsdt, uint64_t xsdt)
{
	memcpy(r->signature, "RSD PTR ", sizeof(r->signature));
	memcpy(r->oem_id, ACPI_OEM_ID, sizeof(r->oem_id));
	r->revision = RSDP_REVISION;
	r->rsdt_address = (uint32_t)rsdt;
	r->length = sizeof(*r);
	r->xsdt_address = xsdt;
	r->checksum = acpi_checksum(r, ACPI_RSDP_V1_LEN);
	r->extended_checksum = acpi_checksum(r, sizeof(*r));
}

static int check_platform(const struct platform_desc *pd)
{
	if (pd->ncpus == 0 || pd->ncpus > PLATFORM_MAX_CPUS) {
		log_error("acpi: %u vCPUs: must be 1..%u", pd->ncpus, PLATFORM_MAX_CPUS);
		return -EINVAL;
	}
	/* The 32-bit fields of the MADT hold these. */
	if (pd->lapic_addr > UINT32_MAX || pd->ioapic_addr > UINT32_MAX) {
		log_error("acpi: local APIC %#llx or I/O APIC %#llx above 4 GiB",
			  (unsigned long long)pd->lapic_addr, (unsigned long long)pd->ioapic_addr);
		return -ERANGE;
	}
	return 0;
}

static int build_tables(struct acpi_area *a, const struct platform_desc *pd, uint64_t *rsdp_gpa)
{
	struct acpi_rsdp *rsdp = area_alloc(a, sizeof(*rsdp), rsdp_gpa);
	uint64_t gpa, rsdt, xsdt;

	if (!rsdp || build_dsdt(a, pd, &gpa) < 0)
		return -ENOSPC;
	for (unsigned i = 0; i < ARRAY_SIZE(acpi_tables); i++) {
		if (acpi_tables[i].build(a, pd, &gpa) < 0)
			return -ENOSPC;
		a->table_gpa[a->ntables++] = gpa;
	}
	if (build_xsdt(a, &xsdt) < 0 || build_rsdt(a, &rsdt) < 0)
		return -ENOSPC;
	fill_rsdp(rsdp, rsdt, xsdt);
	return 0;
}

int acpi_build(const struct guest_mem *gm, const struct platform_desc *pd, uint64_t *rsdp_gpa)
{
	struct acpi_area a = { .gpa = ACPI_TABLES_ADDR, .size = ACPI_TABLES_SIZE,
			       .pci_mmio64_base = pci_mmio64_base(gm) };
	int ret;

	_Static_assert(ARRAY_SIZE(acpi_tables) <= ACPI_MAX_TABLES, "XSDT list too short");
	ret = check_platform(pd);
	if (ret < 0)
		return ret;
	a.host = guest_mem_ptr(gm, ACPI_TABLES_ADDR, ACPI_TABLES_SIZE);
	if (!a.host) {
		log_error("acpi: table area %#llx+%#llx is not guest RAM",
			  ACPI_TABLES_ADDR, ACPI_TABLES_SIZE);
		return -EFAULT;
	}
	memset(a.host, 0, a.size);
	ret = build_tables(&a, pd, rsdp_gpa);
	if (ret < 0) {
		log_error("acpi: tables for %u vCPUs do not fit %#llx bytes at %#llx",
			  pd->ncpus, ACPI_TABLES_SIZE, ACPI_TABLES_ADDR);
		return ret;
	}
	log_debug("acpi: %u bytes of tables at %#llx for %u vCPUs", a.used,
		  ACPI_TABLES_ADDR, pd->ncpus);
	return 0;
}
