/* ACPI tables for a hardware-reduced ACPI platform (ACPI 6.x): RSDP (rev 2),
 * XSDT and RSDT, FADT (HW_REDUCED_ACPI, sleep control/status registers, reset
 * register), DSDT (\_S5, the legacy devices, the PCI host bridge), MADT (local
 * APICs, I/O APIC), MCFG (PCI ECAM). Built into guest RAM at ACPI_TABLES_ADDR. */
#ifndef DROVER_ACPI_H
#define DROVER_ACPI_H

#include <stdint.h>

#include "guest_mem.h"
#include "platform.h"

/* Writes every table into [ACPI_TABLES_ADDR, +ACPI_TABLES_SIZE); the RSDP
 * comes first, 16-byte aligned, so that a guest scanning 0xe0000-0xfffff
 * finds it. *rsdp_gpa receives its address. 0 or -errno. */
int acpi_build(const struct guest_mem *gm, const struct platform_desc *pd, uint64_t *rsdp_gpa);

/* The 8-bit checksum over len bytes (the sum that makes the total zero). */
uint8_t acpi_checksum(const void *data, unsigned len);

#endif
