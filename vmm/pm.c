/* Hardware-reduced ACPI power management: the FADT's SLEEP_CONTROL_REG
 * (SLP_TYP 5 with SLP_EN powers off, as the DSDT's \_S5 says), its
 * SLEEP_STATUS_REG, and its RESET_REG. Also the debug-exit port that test
 * guests use to end the VM with a status (QEMU's isa-debug-exit, same port). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices.h"
#include "layout.h"
#include "log.h"
#include "vm.h"

#define SLP_EN       0x20
#define SLP_TYP(v)   (((v) >> 2) & 0x7)
#define SLP_TYP_S5   5

static void pm_read(void *opaque, uint16_t port, uint8_t *data, unsigned size)
{
	/* Sleep status: never woken from a sleep state, nothing pending. */
	memset(data, 0, size);
}

static void pm_write(void *opaque, uint16_t port, const uint8_t *data, unsigned size)
{
	struct vm *vm = opaque;
	uint8_t v = data[0];

	if (port == PORT_ACPI_RESET) {
		if (v == ACPI_RESET_VALUE)
			vm_request(vm, VM_REQ_RESET, 0, "ACPI reset register");
		return;
	}
	if (port != PORT_ACPI_SLEEP_CTL || !(v & SLP_EN))
		return;
	if (SLP_TYP(v) == SLP_TYP_S5)
		vm_request(vm, VM_REQ_POWEROFF, 0, "ACPI S5");
	else
		log_info("guest asked for ACPI sleep type %u, which drover does not offer",
			 SLP_TYP(v));
}

static int pm_create(struct vm *vm, void **state, char *err, size_t errlen)
{
	int ret = pio_register(&vm->pio, PORT_ACPI_SLEEP_CTL, 3, "acpi-pm", pm_read, pm_write, vm);

	if (ret < 0)
		snprintf(err, errlen, "ACPI PM ports: %s", strerror(-ret));
	*state = NULL;
	return ret;
}

const struct device_type pm_device = {
	.name = "acpi-pm",
	.create = pm_create,
};

static void debugexit_write(void *opaque, uint16_t port, const uint8_t *data, unsigned size)
{
	struct vm *vm = opaque;

	vm_request(vm, VM_REQ_DEBUG_EXIT, data[0], "debug exit code %u", data[0]);
}

static int debugexit_create(struct vm *vm, void **state, char *err, size_t errlen)
{
	int ret = pio_register(&vm->pio, PORT_DEBUG_EXIT, 2, "debug-exit", NULL,
			       debugexit_write, vm);

	if (ret < 0)
		snprintf(err, errlen, "debug-exit port: %s", strerror(-ret));
	*state = NULL;
	return ret;
}

const struct device_type debugexit_device = {
	.name = "debug-exit",
	.create = debugexit_create,
};
