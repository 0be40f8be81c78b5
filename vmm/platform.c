#include "platform.h"

#include <string.h>

#include "layout.h"

void platform_desc_init(struct platform_desc *pd, unsigned ncpus)
{
	memset(pd, 0, sizeof(*pd));
	pd->ncpus = ncpus;
	for (unsigned i = 0; i < ncpus; i++)
		pd->apic_id[i] = (uint8_t)i;
	pd->ioapic_id = (uint8_t)ncpus;
	pd->ioapic_addr = IOAPIC_ADDR;
	pd->ioapic_pins = 24;
	pd->lapic_addr = LAPIC_ADDR;
	pd->sleep_ctl_port = PORT_ACPI_SLEEP_CTL;
	pd->sleep_sts_port = PORT_ACPI_SLEEP_STS;
	pd->reset_port = PORT_ACPI_RESET;
	pd->reset_value = ACPI_RESET_VALUE;
	pd->com1_port = PORT_COM1;
	pd->com1_irq = IRQ_COM1;
}
