/* The ACPI power-management ports and the debug-exit port (vmm/pm.c), as a
 * guest uses them: Linux writes SLP_TYPx | SLP_EN to the FADT's
 * SLEEP_CONTROL_REG to enter a sleep state (ACPI 6.x, 4.8.3.7: SLP_TYP in
 * bits 2-4, SLP_EN bit 5, the rest reserved), and RESET_VALUE to RESET_REG to
 * reboot; test guests write a status byte to the debug-exit port. drover's
 * DSDT says \_S5 is SLP_TYP 5 (checked in test_acpi). What the guest asks for
 * must reach the main loop through req_fd and vm_take_request, and nothing
 * else may. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "layout.h"
#include "util.h"
#include "vmfixture.h"

#define SLP_EN      0x20
#define SLP_TYP(t)  ((t) << 2)

static const struct device_type *const pm_devices[] = { &pm_device, &debugexit_device, NULL };

static struct vmfix *new_vm(void)
{
	struct vmfix *f = NULL;
	char err[256] = "";

	if (vmfix_create(&f, 16 * MiB, NULL, pm_devices, err, sizeof(err)) < 0)
		fail_msg("creating the test VM: %s", err);
	return f;
}

struct port_write_case {
	const char *what;
	uint16_t port;
	uint8_t value;
	enum vm_req expect;
	int code;
};

static const struct port_write_case port_writes[] = {
	{ "S5 with SLP_EN", PORT_ACPI_SLEEP_CTL, SLP_TYP(5) | SLP_EN, VM_REQ_POWEROFF, 0 },
	{ "S5 with SLP_EN and the reserved bits set", PORT_ACPI_SLEEP_CTL,
	  SLP_TYP(5) | SLP_EN | 0xc3, VM_REQ_POWEROFF, 0 },
	{ "S5 without SLP_EN", PORT_ACPI_SLEEP_CTL, SLP_TYP(5), VM_REQ_NONE, 0 },
	{ "S0 with SLP_EN", PORT_ACPI_SLEEP_CTL, SLP_TYP(0) | SLP_EN, VM_REQ_NONE, 0 },
	{ "S1 with SLP_EN", PORT_ACPI_SLEEP_CTL, SLP_TYP(1) | SLP_EN, VM_REQ_NONE, 0 },
	{ "S3 with SLP_EN", PORT_ACPI_SLEEP_CTL, SLP_TYP(3) | SLP_EN, VM_REQ_NONE, 0 },
	{ "S4 with SLP_EN", PORT_ACPI_SLEEP_CTL, SLP_TYP(4) | SLP_EN, VM_REQ_NONE, 0 },
	{ "SLP_TYP 7 with SLP_EN", PORT_ACPI_SLEEP_CTL, SLP_TYP(7) | SLP_EN, VM_REQ_NONE, 0 },
	{ "S5 with SLP_EN to the status register", PORT_ACPI_SLEEP_STS, SLP_TYP(5) | SLP_EN,
	  VM_REQ_NONE, 0 },
	{ "clearing WAK_STS", PORT_ACPI_SLEEP_STS, 0x80, VM_REQ_NONE, 0 },
	{ "the reset value", PORT_ACPI_RESET, ACPI_RESET_VALUE, VM_REQ_RESET, 0 },
	{ "reset register 0x00", PORT_ACPI_RESET, 0x00, VM_REQ_NONE, 0 },
	{ "reset register 0x02", PORT_ACPI_RESET, 0x02, VM_REQ_NONE, 0 },
	{ "reset register 0x06", PORT_ACPI_RESET, 0x06, VM_REQ_NONE, 0 },
	{ "reset register 0xff", PORT_ACPI_RESET, 0xff, VM_REQ_NONE, 0 },
	{ "the reset value to the sleep control register", PORT_ACPI_SLEEP_CTL,
	  ACPI_RESET_VALUE, VM_REQ_NONE, 0 },
	{ "debug exit 0", PORT_DEBUG_EXIT, 0, VM_REQ_DEBUG_EXIT, 0 },
	{ "debug exit 1", PORT_DEBUG_EXIT, 1, VM_REQ_DEBUG_EXIT, 1 },
	{ "debug exit 42", PORT_DEBUG_EXIT, 42, VM_REQ_DEBUG_EXIT, 42 },
	{ "debug exit 239", PORT_DEBUG_EXIT, 239, VM_REQ_DEBUG_EXIT, 239 },
	{ "debug exit 0x80", PORT_DEBUG_EXIT, 0x80, VM_REQ_DEBUG_EXIT, 0x80 },
};

static void test_port_writes(void **unused)
{
	for (size_t i = 0; i < ARRAY_SIZE(port_writes); i++) {
		const struct port_write_case *c = &port_writes[i];
		struct vmfix *f = new_vm();
		char detail[512] = "";
		int code = -1;
		enum vm_req req;

		vmfix_out(f, c->port, c->value);
		if (vmfix_request_signalled(f) != (c->expect != VM_REQ_NONE))
			fail_msg("%s (0x%02x to port 0x%x): main loop %s woken", c->what, c->value,
				 c->port, c->expect != VM_REQ_NONE ? "not" : "wrongly");
		req = vmfix_take_request(f, &code, detail, sizeof(detail));
		if (req != c->expect)
			fail_msg("%s (0x%02x to port 0x%x): request %d, expected %d", c->what,
				 c->value, c->port, req, c->expect);
		if (req != VM_REQ_NONE && req != VM_REQ_RESET && code != c->code)
			fail_msg("%s: code %d, expected %d", c->what, code, c->code);
		if (req != VM_REQ_NONE)
			assert_true(detail[0] != 0 || req == VM_REQ_RESET);
		vmfix_destroy(f);
	}
}

/* A reset is reported once; the main loop then restarts the guest, which
 * may ask again. */
static void test_reset_reported_once_each(void **unused)
{
	struct vmfix *f = new_vm();
	char detail[512];
	int code;

	vmfix_out(f, PORT_ACPI_RESET, ACPI_RESET_VALUE);
	assert_int_equal(vmfix_take_request(f, &code, detail, sizeof(detail)), VM_REQ_RESET);
	assert_int_equal(vmfix_take_request(f, &code, detail, sizeof(detail)), VM_REQ_NONE);
	assert_false(vmfix_request_signalled(f));
	vmfix_out(f, PORT_ACPI_RESET, ACPI_RESET_VALUE);
	assert_true(vmfix_request_signalled(f));
	assert_int_equal(vmfix_take_request(f, &code, detail, sizeof(detail)), VM_REQ_RESET);
	vmfix_destroy(f);
}

/* The first way the guest ends wins: a debug exit after S5 does not change
 * the VM's exit status, and it stays reported until the VM is gone. */
static void test_first_end_wins(void **unused)
{
	struct vmfix *f = new_vm();
	char detail[512];
	int code = -1;

	vmfix_out(f, PORT_DEBUG_EXIT, 7);
	vmfix_out(f, PORT_ACPI_SLEEP_CTL, SLP_TYP(5) | SLP_EN);
	vmfix_out(f, PORT_DEBUG_EXIT, 9);
	assert_int_equal(vmfix_take_request(f, &code, detail, sizeof(detail)), VM_REQ_DEBUG_EXIT);
	assert_int_equal(code, 7);
	assert_non_null(strstr(detail, "7"));
	code = -1;
	assert_int_equal(vmfix_take_request(f, &code, detail, sizeof(detail)), VM_REQ_DEBUG_EXIT);
	assert_int_equal(code, 7);
	vmfix_destroy(f);
}

/* Linux polls WAK_STS in SLEEP_STATUS_REG after a sleep; a machine that
 * never sleeps reports no wake event and nothing else pending. The ports
 * exist (a read of an empty ISA port would return 0xff). */
static void test_status_reads(void **unused)
{
	struct vmfix *f = new_vm();

	assert_int_equal(vmfix_in(f, PORT_ACPI_SLEEP_STS), 0x00);
	assert_int_equal(vmfix_in(f, PORT_ACPI_SLEEP_CTL), 0x00);
	assert_false(vmfix_request_signalled(f));
	vmfix_destroy(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_port_writes),
		cmocka_unit_test(test_reset_reported_once_each),
		cmocka_unit_test(test_first_end_wins),
		cmocka_unit_test(test_status_reads),
	};

	if (!vmfix_kvm_usable("test_pm"))
		return VMFIX_SKIP;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
