/* What the firmware tables (ACPI, MP table) describe: the vCPUs and their
 * local APIC ids, the I/O APIC, and the fixed ports of the platform. */
#ifndef DROVER_PLATFORM_H
#define DROVER_PLATFORM_H

#include <stdint.h>

#define PLATFORM_MAX_CPUS 254  /* xAPIC ids 0..253; 0xff is broadcast, one id left for the I/O APIC */

struct platform_desc {
	unsigned ncpus;
	uint8_t apic_id[PLATFORM_MAX_CPUS];  /* local APIC id of vCPU i */
	uint8_t ioapic_id;                   /* not equal to any apic_id */
	uint64_t ioapic_addr;
	unsigned ioapic_pins;                /* 24 with KVM's in-kernel I/O APIC */
	uint64_t lapic_addr;
	uint16_t sleep_ctl_port;             /* hardware-reduced ACPI sleep control */
	uint16_t sleep_sts_port;
	uint16_t reset_port;                 /* FADT RESET_REG (I/O space) */
	uint8_t reset_value;
	uint16_t com1_port;
	uint8_t com1_irq;
};

/* drover's PC: vCPU i has APIC id i, the I/O APIC the next id, and the
 * fixed ports and addresses of layout.h. */
void platform_desc_init(struct platform_desc *pd, unsigned ncpus);

#endif
