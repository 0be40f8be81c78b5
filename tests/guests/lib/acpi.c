/* Finding ACPI tables: RSDP (from the loader, else the EBDA or the BIOS
 * area), then XSDT or RSDT, every table's checksum verified. */
#include "guest.h"

struct acpi_rsdp {
	char signature[8];
	uint8_t checksum;
	char oem_id[6];
	uint8_t revision;
	uint32_t rsdt;
	uint32_t length;
	uint64_t xsdt;
	uint8_t ext_checksum, reserved[3];
} __attribute__((packed));

#define FADT_DSDT          40
#define FADT_X_DSDT        140

#define MAPPED_LIMIT 0x100000000ULL

uint8_t acpi_sum(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint8_t s = 0;

	for (size_t i = 0; i < len; i++)
		s = (uint8_t)(s + b[i]);
	return s;
}

static int rsdp_valid(uint64_t addr)
{
	if (!addr || addr + sizeof(struct acpi_rsdp) > MAPPED_LIMIT)
		return 0;
	const struct acpi_rsdp *r = (const void *)addr;
	if (memcmp(r->signature, "RSD PTR ", 8) != 0 || acpi_sum(r, 20) != 0)
		return 0;
	if (r->revision >= 2 && (r->length < sizeof(*r) || acpi_sum(r, r->length) != 0))
		return 0;
	return 1;
}

static uint64_t rsdp_scan(uint64_t start, uint64_t end)
{
	for (uint64_t a = start; a + 20 <= end; a += 16)
		if (rsdp_valid(a))
			return a;
	return 0;
}

uint64_t acpi_find_rsdp(void)
{
	if (rsdp_valid(bootinfo.rsdp_paddr))
		return bootinfo.rsdp_paddr;
	uint64_t ebda = (uint64_t)*(const volatile uint16_t *)phys(0x40e) << 4;
	uint64_t r = 0;
	if (ebda >= 0x80000 && ebda < 0xa0000)
		r = rsdp_scan(ebda, ebda + 1024);
	if (!r)
		r = rsdp_scan(0xe0000, 0x100000);
	return r;
}

static const struct acpi_header *table_at(uint64_t addr)
{
	if (!addr || addr + sizeof(struct acpi_header) > MAPPED_LIMIT)
		return NULL;
	const struct acpi_header *h = (const void *)addr;
	if (h->length < sizeof(*h) || addr + h->length > MAPPED_LIMIT)
		return NULL;
	if (acpi_sum(h, h->length) != 0)
		return NULL;
	return h;
}

static const struct acpi_header *find_dsdt(void)
{
	const struct acpi_header *fadt = acpi_find_table("FACP", 0);
	if (!fadt)
		return NULL;
	const uint8_t *f = (const void *)fadt;
	uint64_t addr = 0;
	if (fadt->length >= FADT_X_DSDT + 8)
		addr = *(const uint64_t *)(f + FADT_X_DSDT);
	if (!addr)
		addr = *(const uint32_t *)(f + FADT_DSDT);
	return table_at(addr);
}

const struct acpi_header *acpi_find_table(const char *sig, unsigned index)
{
	if (memcmp(sig, "DSDT", 4) == 0)
		return index == 0 ? find_dsdt() : NULL;
	uint64_t ra = acpi_find_rsdp();
	if (!ra)
		return NULL;
	const struct acpi_rsdp *r = (const void *)ra;
	const struct acpi_header *sdt = NULL;
	unsigned width = 8;
	if (r->revision >= 2 && r->xsdt)
		sdt = table_at(r->xsdt);
	if (!sdt) {
		sdt = table_at(r->rsdt);
		width = 4;
	}
	if (!sdt)
		return NULL;
	const uint8_t *ent = (const uint8_t *)sdt + sizeof(*sdt);
	unsigned n = (sdt->length - (unsigned)sizeof(*sdt)) / width;
	for (unsigned i = 0; i < n; i++) {
		uint64_t a = width == 8 ? *(const uint64_t *)(ent + 8 * i)
					: *(const uint32_t *)(ent + 4 * i);
		const struct acpi_header *h = table_at(a);
		if (h && memcmp(h->signature, sig, 4) == 0 && index-- == 0)
			return h;
	}
	return NULL;
}

/* \_S5 is "Name (_S5, Package () { SLP_TYPa, ... })": NameOp, the name,
 * PackageOp, PkgLength, NumElements, then the first element. */
int acpi_s5_type(void)
{
	const struct acpi_header *dsdt = acpi_find_table("DSDT", 0);
	if (!dsdt)
		return -1;
	const uint8_t *aml = (const uint8_t *)dsdt, *end = aml + dsdt->length;
	for (const uint8_t *n = aml + sizeof(*dsdt) + 1; n + 4 <= end; n++) {
		if (memcmp(n, "_S5_", 4) != 0)
			continue;
		if (n[-1] != 0x08 && !(n[-1] == '\\' && n[-2] == 0x08))
			continue;
		const uint8_t *p = n + 4;
		if (p + 2 > end || *p++ != 0x12)
			continue;
		p += 1 + (*p >> 6);         /* PkgLength */
		p++;                        /* NumElements */
		if (p + 2 > end)
			return -1;
		switch (*p) {
		case 0x00:                  /* ZeroOp */
			return 0;
		case 0x01:                  /* OneOp */
			return 1;
		case 0x0a:                  /* BytePrefix */
		case 0x0b:                  /* WordPrefix */
		case 0x0c:                  /* DWordPrefix */
			return p[1];
		default:
			return -1;
		}
	}
	return -1;
}

int acpi_gas_write(const struct acpi_gas *g, uint64_t val)
{
	unsigned width = g->bit_width ? g->bit_width : 8;

	if (g->space_id == ACPI_GAS_IO) {
		uint16_t port = (uint16_t)g->address;
		if (width == 8)
			outb(port, (uint8_t)val);
		else if (width == 16)
			outw(port, (uint16_t)val);
		else if (width == 32)
			outl(port, (uint32_t)val);
		else
			return -22;
		return 0;
	}
	if (g->space_id == ACPI_GAS_MEMORY) {
		if (!g->address || g->address >= MAPPED_LIMIT)
			return -22;
		if (width == 8)
			*(volatile uint8_t *)g->address = (uint8_t)val;
		else if (width == 16)
			*(volatile uint16_t *)g->address = (uint16_t)val;
		else if (width == 32)
			*(volatile uint32_t *)g->address = (uint32_t)val;
		else if (width == 64)
			*(volatile uint64_t *)g->address = val;
		else
			return -22;
		return 0;
	}
	return -95;
}
