/* Intel MultiProcessor Specification 1.4 tables: the floating pointer
 * structure and the configuration table (processors, ISA bus, I/O APIC, ISA
 * interrupt assignments, local interrupts), for guests that boot with acpi=off
 * or predate ACPI. Built at MPTABLE_ADDR (inside 0xf0000-0xfffff, where the
 * specification tells the OS to search). */
#ifndef DROVER_MPTABLE_H
#define DROVER_MPTABLE_H

#include "guest_mem.h"
#include "platform.h"

int mptable_build(const struct guest_mem *gm, const struct platform_desc *pd);

#endif
