/* Intel MultiProcessor Specification 1.4 tables.
 *
 * Layout at MPTABLE_ADDR: the 16-byte floating pointer structure, then the
 * configuration table. The specification orders the base table's entries by
 * type: processors, buses, I/O APICs, I/O interrupt assignments, local
 * interrupt assignments; an OS may stop parsing at the first type it does not
 * expect, so this order is kept.
 *
 * Interrupt routing described here is the one KVM's in-kernel irqchip
 * implements by default, and the one the ACPI MADT (acpi.c) implies with no
 * interrupt source overrides: ISA IRQ n drives I/O APIC pin n. The 8259 PIC
 * reaches the CPUs through LINT0 in ExtINT mode (virtual wire mode), so the
 * platform has no IMCR. */
#include "mptable.h"

#include <errno.h>
#include <string.h>

#include "layout.h"
#include "log.h"

#define MP_SPEC_REV          4          /* version 1.4 */
#define MP_OEM_ID            "DROVER  "
#define MP_PRODUCT_ID        "DROVER-VMM  "
#define MP_LAPIC_VERSION     0x14       /* KVM's in-kernel local APIC */
#define MP_IOAPIC_VERSION    0x11       /* KVM's in-kernel I/O APIC */
#define MP_ISA_BUS_ID        0
#define MP_ISA_IRQS          16
#define MP_ISA_CASCADE_IRQ   2
#define MP_ALL_LAPICS        0xff

struct mp_floating_pointer {
	char signature[4];             /* "_MP_" */
	uint32_t config_table;
	uint8_t length;                /* in 16-byte paragraphs */
	uint8_t spec_rev;
	uint8_t checksum;
	uint8_t feature1;              /* 0: a configuration table is present */
	uint8_t feature2;              /* bit 7: IMCR present (PIC mode) */
	uint8_t feature3_5[3];
} __attribute__((packed));

struct mp_config_header {
	char signature[4];             /* "PCMP" */
	uint16_t base_length;
	uint8_t spec_rev;
	uint8_t checksum;
	char oem_id[8];
	char product_id[12];
	uint32_t oem_table;
	uint16_t oem_table_size;
	uint16_t entry_count;
	uint32_t lapic_address;
	uint16_t ext_length;
	uint8_t ext_checksum;
	uint8_t reserved;
} __attribute__((packed));

enum mp_entry_type {
	MP_PROCESSOR = 0,
	MP_BUS = 1,
	MP_IOAPIC = 2,
	MP_IO_INTERRUPT = 3,
	MP_LOCAL_INTERRUPT = 4,
};

struct mp_processor {
	uint8_t type;
	uint8_t lapic_id;
	uint8_t lapic_version;
	uint8_t flags;
	uint32_t signature;            /* stepping, model, family */
	uint32_t features;             /* CPUID.1:EDX */
	uint32_t reserved[2];
} __attribute__((packed));

#define MP_CPU_ENABLED       (1u << 0)
#define MP_CPU_BSP           (1u << 1)

struct mp_bus {
	uint8_t type;
	uint8_t bus_id;
	char bus_type[6];
} __attribute__((packed));

struct mp_ioapic {
	uint8_t type;
	uint8_t ioapic_id;
	uint8_t version;
	uint8_t flags;
	uint32_t address;
} __attribute__((packed));

#define MP_IOAPIC_ENABLED    (1u << 0)

/* Both I/O and local interrupt assignments have this shape. */
struct mp_interrupt {
	uint8_t type;
	uint8_t irq_type;
	uint16_t flags;                /* 0: polarity and trigger of the bus */
	uint8_t src_bus;
	uint8_t src_irq;
	uint8_t dst_apic;
	uint8_t dst_pin;
} __attribute__((packed));

enum mp_irq_type { MP_INT = 0, MP_NMI = 1, MP_SMI = 2, MP_EXTINT = 3 };

_Static_assert(sizeof(struct mp_floating_pointer) == 16, "MP floating pointer is 16 bytes");
_Static_assert(sizeof(struct mp_config_header) == 44, "MP configuration header is 44 bytes");
_Static_assert(sizeof(struct mp_processor) == 20, "MP processor entry is 20 bytes");
_Static_assert(sizeof(struct mp_bus) == 8, "MP bus entry is 8 bytes");
_Static_assert(sizeof(struct mp_ioapic) == 8, "MP I/O APIC entry is 8 bytes");
_Static_assert(sizeof(struct mp_interrupt) == 8, "MP interrupt entry is 8 bytes");

/* ISA IRQs with an I/O APIC pin: all but the cascade, which no device
 * drives (pin 2 carries nothing under identity routing). */
#define MP_NUM_ISA_ROUTES    (MP_ISA_IRQS - 1)
#define MP_NUM_LOCAL_INTS    2

static uint8_t mp_checksum(const void *data, size_t len)
{
	const uint8_t *p = data;
	uint8_t sum = 0;

	while (len--)
		sum += *p++;
	return (uint8_t)-sum;
}

static size_t mp_tables_size(unsigned ncpus)
{
	return sizeof(struct mp_floating_pointer) + sizeof(struct mp_config_header) +
	       ncpus * sizeof(struct mp_processor) + sizeof(struct mp_bus) +
	       sizeof(struct mp_ioapic) +
	       (MP_NUM_ISA_ROUTES + MP_NUM_LOCAL_INTS) * sizeof(struct mp_interrupt);
}

/* The processor entries carry the family/model/stepping and feature flags
 * the guest's CPUID also shows (KVM passes the host's through). */
static void cpu_identity(uint32_t *signature, uint32_t *features)
{
	uint32_t eax = 1, ebx, ecx = 0, edx;

	/* Inline rather than the compiler's <cpuid.h>, which vmm/cpuid.h
	 * shadows on the include path. */
	__asm__ volatile("cpuid" : "+a"(eax), "=b"(ebx), "+c"(ecx), "=d"(edx));
	*signature = eax & 0xfff;
	*features = edx;
}

static int check_platform(const struct guest_mem *gm, const struct platform_desc *pd)
{
	if (pd->ncpus == 0 || pd->ncpus > PLATFORM_MAX_CPUS) {
		log_error("mptable: %u vCPUs: must be 1..%u", pd->ncpus, PLATFORM_MAX_CPUS);
		return -EINVAL;
	}
	if (pd->ioapic_pins < MP_ISA_IRQS) {
		log_error("mptable: I/O APIC with %u pins cannot take the %u ISA IRQs",
			  pd->ioapic_pins, MP_ISA_IRQS);
		return -EINVAL;
	}
	if (pd->lapic_addr > UINT32_MAX || pd->ioapic_addr > UINT32_MAX) {
		log_error("mptable: local APIC %#llx or I/O APIC %#llx above 4 GiB",
			  (unsigned long long)pd->lapic_addr, (unsigned long long)pd->ioapic_addr);
		return -ERANGE;
	}
	if (mp_tables_size(pd->ncpus) > MPTABLE_SIZE) {
		log_error("mptable: tables for %u vCPUs do not fit %#llx bytes",
			  pd->ncpus, MPTABLE_SIZE);
		return -ENOSPC;
	}
	if (!guest_mem_ptr(gm, MPTABLE_ADDR, MPTABLE_SIZE)) {
		log_error("mptable: area %#llx+%#llx is not guest RAM", MPTABLE_ADDR, MPTABLE_SIZE);
		return -EFAULT;
	}
	return 0;
}

static uint8_t *put_processors(uint8_t *p, const struct platform_desc *pd)
{
	uint32_t signature, features;

	cpu_identity(&signature, &features);
	for (unsigned i = 0; i < pd->ncpus; i++) {
		struct mp_processor e = {
			.type = MP_PROCESSOR,
			.lapic_id = pd->apic_id[i],
			.lapic_version = MP_LAPIC_VERSION,
			.flags = MP_CPU_ENABLED | (i == 0 ? MP_CPU_BSP : 0),
			.signature = signature,
			.features = features,
		};

		memcpy(p, &e, sizeof(e));
		p += sizeof(e);
	}
	return p;
}

static uint8_t *put_interrupt(uint8_t *p, enum mp_entry_type type, enum mp_irq_type irq_type,
			      uint8_t src_irq, uint8_t dst_apic, uint8_t dst_pin)
{
	struct mp_interrupt e = {
		.type = type,
		.irq_type = irq_type,
		.flags = 0,
		.src_bus = MP_ISA_BUS_ID,
		.src_irq = src_irq,
		.dst_apic = dst_apic,
		.dst_pin = dst_pin,
	};

	memcpy(p, &e, sizeof(e));
	return p + sizeof(e);
}

int mptable_build(const struct guest_mem *gm, const struct platform_desc *pd)
{
	uint8_t *base, *p;
	struct mp_floating_pointer *fp;
	struct mp_config_header *hdr;
	struct mp_bus bus = { .type = MP_BUS, .bus_id = MP_ISA_BUS_ID, .bus_type = "ISA   " };
	struct mp_ioapic ioapic = {
		.type = MP_IOAPIC, .ioapic_id = pd->ioapic_id, .version = MP_IOAPIC_VERSION,
		.flags = MP_IOAPIC_ENABLED, .address = (uint32_t)pd->ioapic_addr,
	};
	int ret;

	ret = check_platform(gm, pd);
	if (ret < 0)
		return ret;
	base = guest_mem_ptr(gm, MPTABLE_ADDR, MPTABLE_SIZE);
	/* Nothing from an earlier build may look like a floating pointer. */
	memset(base, 0, MPTABLE_SIZE);
	fp = (struct mp_floating_pointer *)base;
	hdr = (struct mp_config_header *)(fp + 1);

	p = put_processors((uint8_t *)(hdr + 1), pd);
	memcpy(p, &bus, sizeof(bus));
	p += sizeof(bus);
	memcpy(p, &ioapic, sizeof(ioapic));
	p += sizeof(ioapic);
	for (uint8_t irq = 0; irq < MP_ISA_IRQS; irq++) {
		if (irq != MP_ISA_CASCADE_IRQ)
			p = put_interrupt(p, MP_IO_INTERRUPT, MP_INT, irq, pd->ioapic_id, irq);
	}
	p = put_interrupt(p, MP_LOCAL_INTERRUPT, MP_EXTINT, 0, MP_ALL_LAPICS, 0);
	p = put_interrupt(p, MP_LOCAL_INTERRUPT, MP_NMI, 0, MP_ALL_LAPICS, 1);

	memcpy(hdr->signature, "PCMP", 4);
	hdr->base_length = (uint16_t)(p - (uint8_t *)hdr);
	hdr->spec_rev = MP_SPEC_REV;
	memcpy(hdr->oem_id, MP_OEM_ID, sizeof(hdr->oem_id));
	memcpy(hdr->product_id, MP_PRODUCT_ID, sizeof(hdr->product_id));
	hdr->entry_count = (uint16_t)(pd->ncpus + 2 + MP_NUM_ISA_ROUTES + MP_NUM_LOCAL_INTS);
	hdr->lapic_address = (uint32_t)pd->lapic_addr;
	hdr->checksum = mp_checksum(hdr, hdr->base_length);

	memcpy(fp->signature, "_MP_", 4);
	fp->config_table = (uint32_t)(MPTABLE_ADDR + sizeof(*fp));
	fp->length = 1;
	fp->spec_rev = MP_SPEC_REV;
	fp->feature1 = 0;
	fp->feature2 = 0;      /* no IMCR: virtual wire mode */
	fp->checksum = mp_checksum(fp, sizeof(*fp));
	return 0;
}
