/* The i8042 keyboard controller (vmm/i8042.c) as Linux's i8042 driver and
 * its reboot code use it (IBM PC/AT technical reference; 8042 status: OBF
 * bit 0, SYS bit 2, command/data bit 3, AUX data bit 5, time-out bit 6):
 * controller commands on port 0x64, their results on port 0x60 with OBF set,
 * the command byte, the output port whose bit 0 is the CPU reset line, and
 * pulse commands 0xF0-0xFF whose low nibble selects the lines to pulse low
 * (a 0 bit pulses; bit 0 is reset). No keyboard or mouse is attached. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "layout.h"
#include "util.h"
#include "vmfixture.h"

#define STS_OBF      0x01
#define STS_SYS      0x04
#define STS_CMD      0x08
#define STS_AUXDATA  0x20
#define STS_TIMEOUT  0x40
#define CTR_KBDINT   0x01
#define CTR_AUXINT   0x02
#define CTR_SYS      0x04
#define CTR_KBDDIS   0x10
#define CTR_AUXDIS   0x20
#define OUTP_RESET   0x01

static const struct device_type *const kbc_devices[] = { &i8042_device, NULL };

static struct vmfix *new_vm(void)
{
	struct vmfix *f = NULL;
	char err[256] = "";

	if (vmfix_create(&f, 16 * MiB, NULL, kbc_devices, err, sizeof(err)) < 0)
		fail_msg("creating the test VM: %s", err);
	return f;
}

static int status(struct vmfix *f)
{
	return vmfix_in(f, PORT_I8042_CMD);
}

/* Issues a controller command and returns the byte it answers with; fails
 * the test when the controller does not signal one through OBF. */
static int command_result(struct vmfix *f, uint8_t cmd)
{
	int v;

	vmfix_out(f, PORT_I8042_CMD, cmd);
	if (!(status(f) & STS_OBF))
		fail_msg("command 0x%02x: no result (status 0x%02x)", cmd, status(f));
	v = vmfix_in(f, PORT_I8042_DATA);
	if (status(f) & STS_OBF)
		fail_msg("command 0x%02x: OBF still set after reading the result", cmd);
	return v;
}

static int read_ctr(struct vmfix *f)
{
	return command_result(f, 0x20);
}

static void write_ctr(struct vmfix *f, uint8_t v)
{
	vmfix_out(f, PORT_I8042_CMD, 0x60);
	vmfix_out(f, PORT_I8042_DATA, v);
}

static enum vm_req take(struct vmfix *f)
{
	char detail[512];
	int code;

	return vmfix_take_request(f, &code, detail, sizeof(detail));
}

static void test_self_test(void **unused)
{
	struct vmfix *f = new_vm();

	assert_int_equal(status(f) & STS_OBF, 0);
	vmfix_out(f, PORT_I8042_CMD, 0xaa);
	assert_true(status(f) & STS_OBF);
	assert_true(status(f) & STS_CMD);        /* the last write went to 0x64 */
	assert_true(status(f) & STS_SYS);        /* a passed self test sets SYS */
	assert_int_equal(vmfix_in(f, PORT_I8042_DATA), 0x55);
	assert_int_equal(status(f) & STS_OBF, 0);
	assert_int_equal(take(f), VM_REQ_NONE);
	vmfix_destroy(f);
}

/* Linux reads the command byte, changes it and writes it back; the SYS
 * flag of the status follows the command byte's bit 2. */
static void test_command_byte(void **unused)
{
	static const uint8_t values[] = { 0x00, 0x01, 0x03, 0x04, 0x30, 0x45, 0x47, 0x65 };
	struct vmfix *f = new_vm();

	/* At power-on the keyboard interrupt is enabled and SYS set (POST done). */
	assert_true(read_ctr(f) & CTR_KBDINT);
	for (size_t i = 0; i < ARRAY_SIZE(values); i++) {
		write_ctr(f, values[i]);
		assert_int_equal(status(f) & STS_CMD, 0);   /* last write was data */
		assert_int_equal(status(f) & STS_OBF, 0);   /* 0x60 answers nothing */
		if (read_ctr(f) != values[i])
			fail_msg("command byte 0x%02x written, 0x%02x read", values[i], read_ctr(f));
		assert_int_equal(status(f) & STS_SYS, values[i] & CTR_SYS);
		assert_int_equal(status(f) & STS_TIMEOUT, 0);
	}
	assert_int_equal(take(f), VM_REQ_NONE);
	vmfix_destroy(f);
}

struct command_case {
	uint8_t cmd;
	int result;              /* the byte answered, -1: none */
	uint8_t ctr_set, ctr_clear;
};

/* 0xAB/0xA9: keyboard/aux interface test, 0x00 = no error; 0xAD/0xAE,
 * 0xA7/0xA8: disable/enable the keyboard/aux clock (command-byte bits 4/5);
 * 0xC0: input port. */
static const struct command_case commands[] = {
	{ 0xab, 0x00, 0, 0 },
	{ 0xa9, 0x00, 0, 0 },
	{ 0xad, -1, CTR_KBDDIS, 0 },
	{ 0xae, -1, 0, CTR_KBDDIS },
	{ 0xa7, -1, CTR_AUXDIS, 0 },
	{ 0xa8, -1, 0, CTR_AUXDIS },
};

static void test_commands(void **unused)
{
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
		const struct command_case *c = &commands[i];
		struct vmfix *f = new_vm();
		int before, after;

		/* Start with both clocks in the state the command changes away from. */
		write_ctr(f, (uint8_t)(c->ctr_clear | CTR_SYS));
		before = read_ctr(f);
		if (c->result >= 0) {
			if (command_result(f, c->cmd) != c->result)
				fail_msg("command 0x%02x: wrong result", c->cmd);
		} else {
			vmfix_out(f, PORT_I8042_CMD, c->cmd);
			if (status(f) & STS_OBF)
				fail_msg("command 0x%02x answered 0x%02x", c->cmd,
					 vmfix_in(f, PORT_I8042_DATA));
		}
		after = read_ctr(f);
		if (after != ((before | c->ctr_set) & ~c->ctr_clear))
			fail_msg("command 0x%02x: command byte 0x%02x -> 0x%02x", c->cmd, before,
				 after);
		assert_int_equal(take(f), VM_REQ_NONE);
		vmfix_destroy(f);
	}
}

/* 0xD0 reads the output port, 0xD1 writes it: bit 0 low holds the CPU in
 * reset, which is how some kernels (Linux's reboot=k fallback among them on
 * old machines) reset the PC. */
static void test_output_port(void **unused)
{
	struct vmfix *f = new_vm();

	/* At power-on the CPU runs: the reset line is not asserted. */
	assert_true(command_result(f, 0xd0) & OUTP_RESET);
	vmfix_out(f, PORT_I8042_CMD, 0xd1);
	vmfix_out(f, PORT_I8042_DATA, 0x03);
	assert_int_equal(command_result(f, 0xd0), 0x03);
	assert_false(vmfix_request_signalled(f));
	assert_int_equal(take(f), VM_REQ_NONE);
	vmfix_out(f, PORT_I8042_CMD, 0xd1);
	vmfix_out(f, PORT_I8042_DATA, 0xdf);
	assert_int_equal(command_result(f, 0xd0), 0xdf);
	assert_int_equal(take(f), VM_REQ_NONE);

	vmfix_out(f, PORT_I8042_CMD, 0xd1);
	vmfix_out(f, PORT_I8042_DATA, 0x02);          /* bit 0 clear: reset */
	assert_true(vmfix_request_signalled(f));
	assert_int_equal(take(f), VM_REQ_RESET);
	assert_int_equal(take(f), VM_REQ_NONE);       /* reported once */
	vmfix_destroy(f);
}

/* Every pulse command: the low nibble's 0 bits pulse lines; bit 0 is the
 * reset line. 0xFE is what Linux's reboot=k writes. */
static void test_pulse_commands(void **unused)
{
	for (unsigned cmd = 0xf0; cmd <= 0xff; cmd++) {
		struct vmfix *f = new_vm();
		enum vm_req want = (cmd & 0x01) ? VM_REQ_NONE : VM_REQ_RESET;

		vmfix_out(f, PORT_I8042_CMD, (uint8_t)cmd);
		if (take(f) != want)
			fail_msg("pulse command 0x%02x: %s", cmd,
				 want == VM_REQ_RESET ? "no reset" : "reset requested");
		vmfix_destroy(f);
	}
}

/* A byte written to port 0x60 with no command pending goes to the keyboard,
 * and after 0xD4 to the mouse. Neither is there: the controller reports a
 * time-out and no answer, so that Linux's probe gives up at once. */
static void test_absent_devices_time_out(void **unused)
{
	static const struct { uint8_t prefix_cmd; uint8_t byte; } writes[] = {
		{ 0, 0xff },       /* keyboard reset */
		{ 0, 0xf2 },       /* keyboard get id */
		{ 0, 0xed },       /* set LEDs */
		{ 0xd4, 0xf2 },    /* mouse get id */
		{ 0xd4, 0xff },    /* mouse reset */
	};

	for (size_t i = 0; i < ARRAY_SIZE(writes); i++) {
		struct vmfix *f = new_vm();

		assert_int_equal(status(f) & STS_TIMEOUT, 0);
		if (writes[i].prefix_cmd)
			vmfix_out(f, PORT_I8042_CMD, writes[i].prefix_cmd);
		vmfix_out(f, PORT_I8042_DATA, writes[i].byte);
		if (!(status(f) & STS_TIMEOUT))
			fail_msg("write 0x%02x (after 0x%02x): no time-out", writes[i].byte,
				 writes[i].prefix_cmd);
		assert_int_equal(status(f) & STS_OBF, 0);
		assert_int_equal(take(f), VM_REQ_NONE);
		vmfix_destroy(f);
	}
}

/* 0xD2/0xD3 put a byte in the output buffer as if the keyboard/mouse sent
 * it (Linux's AUX loopback probe relies on 0xD3), with the matching IRQ (1 or
 * 12) when the command byte enables it. */
static void test_loopback_writes(void **unused)
{
	static const struct {
		uint8_t cmd, ctr;
		bool aux;
		unsigned irq;
		bool irq_expected;
	} cases[] = {
		{ 0xd2, CTR_SYS | CTR_KBDINT, false, 1, true },
		{ 0xd2, CTR_SYS, false, 1, false },
		{ 0xd3, CTR_SYS | CTR_AUXINT, true, 12, true },
		{ 0xd3, CTR_SYS, true, 12, false },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct vmfix *f = new_vm();

		write_ctr(f, cases[i].ctr);
		vmfix_irq_clear_edges(f);
		vmfix_out(f, PORT_I8042_CMD, cases[i].cmd);
		vmfix_out(f, PORT_I8042_DATA, 0x5a);
		assert_true(status(f) & STS_OBF);
		assert_int_equal(!!(status(f) & STS_AUXDATA), cases[i].aux);
		assert_int_equal(status(f) & STS_TIMEOUT, 0);
		if (vmfix_irq_edge(f, cases[i].irq) != cases[i].irq_expected)
			fail_msg("command 0x%02x, command byte 0x%02x: IRQ %u %s", cases[i].cmd,
				 cases[i].ctr, cases[i].irq,
				 cases[i].irq_expected ? "not raised" : "raised");
		/* A pulse, not a level left high. */
		assert_int_equal(vmfix_irq_level(f, cases[i].irq), 0);
		assert_int_equal(vmfix_in(f, PORT_I8042_DATA), 0x5a);
		assert_int_equal(status(f) & (STS_OBF | STS_AUXDATA), 0);
		vmfix_destroy(f);
	}
}

static json_t *save(struct vmfix *f)
{
	json_t *s = i8042_device.save(vmfix_state(f, 0));
	char *text;
	json_t *back;

	/* What a migration stream carries is text. */
	assert_non_null(s);
	text = json_dumps(s, JSON_COMPACT);
	assert_non_null(text);
	back = json_loads(text, 0, NULL);
	assert_non_null(back);
	free(text);
	json_decref(s);
	return back;
}

/* A half-done command (0xD1 waiting for its data byte) and an unread result
 * survive the move; the destination completes them. */
static void test_save_load(void **unused)
{
	struct vmfix *src = new_vm(), *dst = new_vm();
	char err[256] = "";
	json_t *s;

	write_ctr(src, 0x65);
	vmfix_out(src, PORT_I8042_CMD, 0xaa);          /* result 0x55 left unread */
	s = save(src);
	assert_int_equal(i8042_device.load(vmfix_state(dst, 0), s, err, sizeof(err)), 0);
	json_decref(s);
	assert_int_equal(status(dst), status(src));
	assert_int_equal(vmfix_in(dst, PORT_I8042_DATA), 0x55);
	assert_int_equal(read_ctr(dst), 0x65);

	vmfix_out(src, PORT_I8042_CMD, 0xd1);          /* data byte still to come */
	s = save(src);
	assert_int_equal(i8042_device.load(vmfix_state(dst, 0), s, err, sizeof(err)), 0);
	json_decref(s);
	vmfix_out(dst, PORT_I8042_DATA, 0x00);
	assert_int_equal(take(dst), VM_REQ_RESET);
	assert_int_equal(take(src), VM_REQ_NONE);
	vmfix_destroy(src);
	vmfix_destroy(dst);
}

static void test_load_rejects_malformed(void **unused)
{
	static const struct { const char *json, *names; } bad[] = {
		{ "{\"ctr\": 69, \"outport\": 3, \"out\": 0, \"pending-cmd\": 0}", "status" },
		{ "{\"status\": 256, \"ctr\": 69, \"outport\": 3, \"out\": 0, \"pending-cmd\": 0}",
		  "status" },
		{ "{\"status\": 0, \"ctr\": -1, \"outport\": 3, \"out\": 0, \"pending-cmd\": 0}",
		  "ctr" },
		{ "{\"status\": 0, \"ctr\": 69, \"outport\": \"3\", \"out\": 0, \"pending-cmd\": 0}",
		  "outport" },
		{ "{\"status\": 0, \"ctr\": 69, \"outport\": 3, \"out\": 1.5, \"pending-cmd\": 0}",
		  "out" },
		{ "{\"status\": 0, \"ctr\": 69, \"outport\": 3, \"out\": 0}", "pending-cmd" },
		{ "[1, 2, 3]", "status" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct vmfix *f = new_vm();
		json_t *j = json_loads(bad[i].json, JSON_DECODE_ANY, NULL);
		char err[256] = "";
		int ctr;

		write_ctr(f, 0x47);
		ctr = read_ctr(f);
		assert_non_null(j);
		assert_int_equal(i8042_device.load(vmfix_state(f, 0), j, err, sizeof(err)), -EINVAL);
		if (!strstr(err, bad[i].names))
			fail_msg("%s: message '%s' does not name '%s'", bad[i].json, err, bad[i].names);
		/* Refused state leaves the device as it was. */
		assert_int_equal(read_ctr(f), ctr);
		json_decref(j);
		vmfix_destroy(f);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_self_test),
		cmocka_unit_test(test_command_byte),
		cmocka_unit_test(test_commands),
		cmocka_unit_test(test_output_port),
		cmocka_unit_test(test_pulse_commands),
		cmocka_unit_test(test_absent_devices_time_out),
		cmocka_unit_test(test_loopback_writes),
		cmocka_unit_test(test_save_load),
		cmocka_unit_test(test_load_rejects_malformed),
	};

	if (!vmfix_kvm_usable("test_i8042"))
		return VMFIX_SKIP;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
