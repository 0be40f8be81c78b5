/* The 16550A UART at COM1 (vmm/serial.c), driven as Linux's 8250 driver
 * drives it (16550A data sheet register map: RBR/THR 0, IER 1, IIR/FCR 2,
 * LCR 3, MCR 4, LSR 5, MSR 6, SCR 7; DLL/DLM at 0/1 while LCR.DLAB is set).
 * Interrupt identification priorities: line status (0x06) > received data
 * (0x04) > THR empty (0x02) > modem status (0x00); bit 0 set means none
 * pending; bits 6-7 set while the FIFOs are enabled. On a PC, MCR.OUT2 gates
 * the UART's interrupt onto IRQ 4; the test reads that line from the
 * in-kernel I/O APIC. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "layout.h"
#include "serial.h"
#include "util.h"
#include "vmfixture.h"

#define RBR 0
#define THR 0
#define DLL 0
#define IER 1
#define DLM 1
#define IIR 2
#define FCR 2
#define LCR 3
#define MCR 4
#define LSR 5
#define MSR 6
#define SCR 7

#define IER_RDI   0x01
#define IER_THRI  0x02
#define IER_RLSI  0x04
#define IER_MSI   0x08
#define IIR_NONE  0x01
#define IIR_MSI   0x00
#define IIR_THRI  0x02
#define IIR_RDI   0x04
#define IIR_RLSI  0x06
#define IIR_ID    0x0f
#define IIR_FIFOS 0xc0
#define LCR_8N1   0x03
#define LCR_DLAB  0x80
#define MCR_DTR   0x01
#define MCR_RTS   0x02
#define MCR_OUT1  0x04
#define MCR_OUT2  0x08
#define MCR_LOOP  0x10
#define LSR_DR    0x01
#define LSR_OE    0x02
#define LSR_THRE  0x20
#define LSR_TEMT  0x40

static const struct device_type *const uart_devices[] = { &serial_device, NULL };

struct uart {
	struct vmfix *f;
	struct serial *s;
	char dir[64];
	char path[128];           /* --serial file:PATH */
};

static void uart_open(struct uart *u, bool to_file)
{
	struct vmm_config cfg;
	char err[256] = "";

	memset(u, 0, sizeof(*u));
	vmm_config_init(&cfg);
	cfg.serial = SERIAL_NONE;
	if (to_file) {
		snprintf(u->dir, sizeof(u->dir), "/tmp/test_serial.XXXXXX");
		assert_non_null(mkdtemp(u->dir));
		snprintf(u->path, sizeof(u->path), "%s/console.log", u->dir);
		cfg.serial = SERIAL_FILE;
		cfg.serial_path = u->path;
	}
	if (vmfix_create(&u->f, 16 * MiB, &cfg, uart_devices, err, sizeof(err)) < 0)
		fail_msg("creating the test VM: %s", err);
	u->s = vmfix_state(u->f, 0);
	assert_ptr_equal(u->s, u->f->vm->serial);
}

static void uart_close(struct uart *u)
{
	vmfix_destroy(u->f);
	if (u->path[0]) {
		unlink(u->path);
		rmdir(u->dir);
	}
}

static uint8_t in(struct uart *u, unsigned reg)
{
	int v = vmfix_in(u->f, (uint16_t)(PORT_COM1 + reg));

	assert_true(v >= 0);
	return (uint8_t)v;
}

static void out(struct uart *u, unsigned reg, uint8_t v)
{
	vmfix_out(u->f, (uint16_t)(PORT_COM1 + reg), v);
}

static int irq4(struct uart *u)
{
	return vmfix_irq_level(u->f, IRQ_COM1);
}

static uint8_t iir_id(struct uart *u)
{
	return in(u, IIR) & IIR_ID;
}

/* ---- detection, as Linux's autoconfig does it ---- */

enum uart_kind { UART_NONE, UART_8250, UART_16450, UART_16550, UART_16550A, UART_16650,
		 UART_16750, UART_XSCALE, UART_NS16550A };

static const char *const kind_names[] = { "none", "8250", "16450", "16550", "16550A",
					   "16650 (EFR)", "16750", "XScale", "NS16550A" };

/* The decisions of Linux's 8250 autoconfig, in its order, from what each
 * register read tells about the chip. */
static enum uart_kind probe(struct uart *u)
{
	uint8_t save, a, b, c;

	/* IER: bits 4-7 read as zero, bits 0-3 hold what is written. */
	save = in(u, IER);
	out(u, IER, 0);
	a = in(u, IER) & 0x0f;
	out(u, IER, 0x0f);
	b = in(u, IER) & 0x0f;
	out(u, IER, save);
	if (a != 0 || b != 0x0f)
		return UART_NONE;

	/* Loopback: RTS|OUT2 come back as CTS|DCD. */
	save = in(u, MCR);
	out(u, MCR, MCR_LOOP | MCR_OUT2 | MCR_RTS);
	a = in(u, MSR) & 0xf0;
	out(u, MCR, save);
	if (a != 0x90)
		return UART_NONE;

	/* FIFO control: the two IIR FIFO bits tell 8250/16450, 16550, 16550A. */
	out(u, LCR, 0xbf);
	out(u, 2, 0);                  /* EFR, on chips that have one */
	out(u, LCR, 0);
	out(u, FCR, 0x01);
	a = in(u, IIR) >> 6;
	out(u, LCR, LCR_8N1);
	if (a == 0) {
		out(u, SCR, 0xa5);
		b = in(u, SCR);
		out(u, SCR, 0x5a);
		c = in(u, SCR);
		return b == 0xa5 && c == 0x5a ? UART_16450 : UART_8250;
	}
	if (a == 2)
		return UART_16550;
	if (a != 3)
		return UART_NONE;

	/* 16550A or a later chip: EFR readable as 0 under LCR 0xBF → 16650. */
	out(u, LCR, 0xbf);
	if (in(u, 2) == 0)
		return UART_16650;
	out(u, LCR, 0x80);
	if (in(u, 2) == 0)
		return UART_16650;
	/* National's SuperIO mirrors MCR.LOOP in EXCR1 (offset 2 in bank 2). */
	out(u, LCR, 0);
	save = in(u, MCR);
	out(u, LCR, 0xe0);
	a = in(u, 2);
	if (!((a ^ save) & MCR_LOOP)) {
		out(u, LCR, 0);
		out(u, MCR, save ^ MCR_LOOP);
		out(u, LCR, 0xe0);
		a = in(u, 2);
		out(u, LCR, 0);
		out(u, MCR, save);
		if ((a ^ save) & MCR_LOOP)
			return UART_NS16550A;
	}
	/* TI16750: IIR bit 5 follows FCR bit 5 only while DLAB is set. */
	out(u, LCR, 0);
	out(u, FCR, 0x21);
	a = in(u, IIR) & 0xe0;
	out(u, FCR, 0x01);
	out(u, LCR, 0x80);
	out(u, FCR, 0x21);
	b = in(u, IIR) & 0xe0;
	out(u, LCR, 0);
	if (a == 0xc0 && b == 0xe0)
		return UART_16750;
	out(u, FCR, 0x01);
	/* XScale: IER bit 6 (UUE) holds a value. */
	save = in(u, IER);
	out(u, IER, save & (uint8_t)~0x40);
	if (!(in(u, IER) & 0x40)) {
		out(u, IER, save | 0x40);
		if (in(u, IER) & 0x40)
			return UART_XSCALE;
	}
	out(u, IER, save);
	return UART_16550A;
}

static void test_detected_as_16550a(void **unused)
{
	struct uart u;
	enum uart_kind k;

	uart_open(&u, false);
	k = probe(&u);
	if (k != UART_16550A)
		fail_msg("Linux would take COM1 for a %s", kind_names[k]);
	/* Once more, as after a guest reboot. */
	assert_int_equal(probe(&u), UART_16550A);
	uart_close(&u);
}

/* FCR 0xE7 (Linux's setting: FIFOs on, both cleared, 64-byte mode bit,
 * trigger at 14) shows in IIR's bits 6-7; FCR 0 turns them off again. */
static void test_fifo_bits(void **unused)
{
	static const struct { uint8_t fcr, fifo_bits; } cases[] = {
		{ 0xe7, IIR_FIFOS }, { 0x00, 0 }, { 0x01, IIR_FIFOS }, { 0xc1, IIR_FIFOS },
		{ 0x06, 0 },
	};
	struct uart u;

	uart_open(&u, false);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		out(&u, FCR, cases[i].fcr);
		if ((in(&u, IIR) & IIR_FIFOS) != cases[i].fifo_bits)
			fail_msg("FCR 0x%02x: IIR 0x%02x", cases[i].fcr, in(&u, IIR));
		assert_int_equal(iir_id(&u), IIR_NONE);
	}
	uart_close(&u);
}

static void test_scratch_register(void **unused)
{
	struct uart u;

	uart_open(&u, false);
	for (unsigned v = 0; v < 256; v++) {
		out(&u, SCR, (uint8_t)v);
		assert_int_equal(in(&u, SCR), v);
	}
	uart_close(&u);
}

/* ---- divisor latch ---- */

static void test_divisor_latch(void **unused)
{
	static const struct { uint8_t dll, dlm; } divisors[] = {
		{ 0x01, 0x00 },     /* 115200 baud */
		{ 0x0c, 0x00 },     /* 9600 */
		{ 0x80, 0x01 },     /* 300 */
		{ 0xff, 0xff },
	};
	struct uart u;

	uart_open(&u, true);
	out(&u, IER, IER_RDI | IER_RLSI);
	for (size_t i = 0; i < ARRAY_SIZE(divisors); i++) {
		struct stat st;

		out(&u, LCR, LCR_DLAB | LCR_8N1);
		out(&u, DLL, divisors[i].dll);
		out(&u, DLM, divisors[i].dlm);
		assert_int_equal(in(&u, DLL), divisors[i].dll);
		assert_int_equal(in(&u, DLM), divisors[i].dlm);
		assert_int_equal(in(&u, LCR), LCR_DLAB | LCR_8N1);
		out(&u, LCR, LCR_8N1);
		/* With DLAB clear, offsets 0 and 1 are the data and IER again,
		 * untouched by the divisor writes. */
		assert_int_equal(in(&u, IER), IER_RDI | IER_RLSI);
		assert_int_equal(in(&u, LSR) & LSR_DR, 0);
		assert_int_equal(stat(u.path, &st), 0);
		if (st.st_size != 0)
			fail_msg("divisor byte 0x%02x went out as data", divisors[i].dll);
		out(&u, LCR, LCR_DLAB | LCR_8N1);
		assert_int_equal(in(&u, DLL), divisors[i].dll);
		assert_int_equal(in(&u, DLM), divisors[i].dlm);
		out(&u, LCR, LCR_8N1);
	}
	uart_close(&u);
}

/* ---- transmit and the THR-empty interrupt ---- */

static void test_output_reaches_file(void **unused)
{
	static const char text[] = "Linux version 6.1\r\nconsole [ttyS0] enabled\r\n\x00\xff";
	char buf[128] = "";
	struct uart u;
	int fd;
	ssize_t n;

	uart_open(&u, true);
	out(&u, LCR, LCR_8N1);
	for (size_t i = 0; i < sizeof(text) - 1; i++) {
		/* Linux waits for THRE before each byte. */
		assert_true(in(&u, LSR) & LSR_THRE);
		out(&u, THR, (uint8_t)text[i]);
	}
	assert_int_equal(in(&u, LSR) & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
	/* In loopback the transmitter is cut off from the line. */
	out(&u, MCR, MCR_LOOP);
	out(&u, THR, 'L');
	out(&u, MCR, 0);
	fd = open(u.path, O_RDONLY);
	assert_true(fd >= 0);
	n = read(fd, buf, sizeof(buf));
	close(fd);
	assert_int_equal(n, sizeof(text) - 1);
	assert_memory_equal(buf, text, sizeof(text) - 1);
	uart_close(&u);
}

/* Enabling ETBEI while THR is empty raises the THR-empty interrupt; reading
 * IIR while it is the reported cause clears it; writing THR re-arms it (the
 * byte leaves at once, so THR is empty again). This is also Linux's
 * UART_BUG_THRE test: it must see the interrupt on both enables. */
static void test_thr_empty_interrupt(void **unused)
{
	struct uart u;

	uart_open(&u, false);
	out(&u, MCR, MCR_OUT2 | MCR_RTS | MCR_DTR);
	assert_int_equal(iir_id(&u), IIR_NONE);
	assert_int_equal(irq4(&u), 0);

	out(&u, IER, IER_THRI);
	assert_int_equal(irq4(&u), 1);
	assert_int_equal(iir_id(&u), IIR_THRI);      /* reported: now cleared */
	assert_int_equal(iir_id(&u), IIR_NONE);
	assert_int_equal(irq4(&u), 0);
	out(&u, IER, 0);
	out(&u, IER, IER_THRI);
	assert_int_equal(iir_id(&u), IIR_THRI);
	assert_int_equal(irq4(&u), 0);

	/* Writing THR: a new edge. */
	vmfix_irq_clear_edges(u.f);
	out(&u, THR, 'x');
	assert_true(vmfix_irq_edge(u.f, IRQ_COM1));
	assert_int_equal(irq4(&u), 1);
	/* Reading LSR or MSR does not acknowledge it. */
	in(&u, LSR);
	in(&u, MSR);
	assert_int_equal(irq4(&u), 1);
	/* Disabling ETBEI drops the line; the condition is still there. */
	out(&u, IER, 0);
	assert_int_equal(irq4(&u), 0);
	assert_int_equal(iir_id(&u), IIR_NONE);
	uart_close(&u);
}

/* IIR clears the THR-empty interrupt only when it reports it: with received
 * data pending (higher priority), reading IIR leaves THRI pending. */
static void test_thr_empty_survives_higher_priority(void **unused)
{
	struct uart u;

	uart_open(&u, false);
	out(&u, MCR, MCR_OUT2);
	assert_int_equal(serial_receive(u.s, "ab", 2), 2);
	out(&u, IER, IER_RDI | IER_THRI);
	assert_int_equal(iir_id(&u), IIR_RDI);
	assert_int_equal(iir_id(&u), IIR_RDI);
	assert_int_equal(in(&u, RBR), 'a');
	assert_int_equal(iir_id(&u), IIR_RDI);
	assert_int_equal(in(&u, RBR), 'b');
	assert_int_equal(irq4(&u), 1);
	assert_int_equal(iir_id(&u), IIR_THRI);
	assert_int_equal(iir_id(&u), IIR_NONE);
	assert_int_equal(irq4(&u), 0);
	uart_close(&u);
}

/* ---- receive ---- */

static void test_receive_order_and_status(void **unused)
{
	static const char typed[] = "root\r\x03\x00\xff";
	struct uart u;

	uart_open(&u, false);
	out(&u, MCR, MCR_OUT2 | MCR_DTR | MCR_RTS);
	out(&u, IER, IER_RDI);
	assert_int_equal(in(&u, LSR) & LSR_DR, 0);
	assert_int_equal(irq4(&u), 0);

	assert_int_equal(serial_receive(u.s, typed, sizeof(typed) - 1), sizeof(typed) - 1);
	assert_int_equal(irq4(&u), 1);
	for (size_t i = 0; i < sizeof(typed) - 1; i++) {
		assert_true(in(&u, LSR) & LSR_DR);
		assert_int_equal(iir_id(&u), IIR_RDI);
		if (in(&u, RBR) != (uint8_t)typed[i])
			fail_msg("byte %zu read out of order", i);
	}
	assert_int_equal(in(&u, LSR) & (LSR_DR | LSR_OE), 0);
	assert_int_equal(iir_id(&u), IIR_NONE);
	assert_int_equal(irq4(&u), 0);
	uart_close(&u);
}

/* The interrupt reaches IRQ 4 only with OUT2 set and the cause enabled;
 * the UART's own IIR reports the cause either way. */
static void test_irq_gated_by_out2(void **unused)
{
	static const struct { uint8_t mcr, ier; int line; uint8_t iir; } cases[] = {
		{ MCR_OUT2, IER_RDI, 1, IIR_RDI },
		{ MCR_OUT2 | MCR_DTR | MCR_RTS, IER_RDI, 1, IIR_RDI },
		{ MCR_DTR | MCR_RTS, IER_RDI, 0, IIR_RDI },
		{ MCR_OUT1, IER_RDI, 0, IIR_RDI },
		{ MCR_OUT2, 0, 0, IIR_NONE },
		{ MCR_OUT2, IER_RLSI | IER_MSI, 0, IIR_NONE },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct uart u;

		uart_open(&u, false);
		out(&u, IER, cases[i].ier);
		in(&u, MSR);                          /* no stale modem deltas */
		assert_int_equal(serial_receive(u.s, "z", 1), 1);
		out(&u, MCR, cases[i].mcr);
		in(&u, MSR);
		if (irq4(&u) != cases[i].line || iir_id(&u) != cases[i].iir)
			fail_msg("MCR 0x%02x IER 0x%02x: IRQ 4 %d, IIR 0x%02x", cases[i].mcr,
				 cases[i].ier, irq4(&u), iir_id(&u));
		/* Turning OUT2 on or off moves the line at once. */
		out(&u, MCR, cases[i].mcr ^ MCR_OUT2);
		assert_int_equal(irq4(&u), cases[i].iir != IIR_NONE && !(cases[i].mcr & MCR_OUT2));
		uart_close(&u);
	}
}

/* Loopback: what the guest transmits comes back as received data, and
 * DTR/RTS/OUT1/OUT2 come back as DSR/CTS/RI/DCD. */
static void test_loopback(void **unused)
{
	static const struct { uint8_t mcr, msr; } lines[] = {
		{ 0, 0x00 }, { MCR_DTR, 0x20 }, { MCR_RTS, 0x10 }, { MCR_OUT1, 0x40 },
		{ MCR_OUT2, 0x80 }, { 0x0f, 0xf0 },
	};
	struct uart u;

	uart_open(&u, false);
	for (size_t i = 0; i < ARRAY_SIZE(lines); i++) {
		out(&u, MCR, MCR_LOOP | lines[i].mcr);
		if ((in(&u, MSR) & 0xf0) != lines[i].msr)
			fail_msg("loopback MCR 0x%02x: MSR 0x%02x", lines[i].mcr, in(&u, MSR));
	}
	out(&u, MCR, MCR_LOOP);
	out(&u, THR, 0x5a);
	out(&u, THR, 0xa5);
	assert_true(in(&u, LSR) & LSR_DR);
	assert_int_equal(in(&u, RBR), 0x5a);
	assert_int_equal(in(&u, RBR), 0xa5);
	assert_int_equal(in(&u, LSR) & LSR_DR, 0);
	/* The receiver is cut off from the line meanwhile. */
	assert_int_equal(serial_receive(u.s, "q", 1), 0);
	assert_int_equal(in(&u, LSR) & LSR_DR, 0);
	out(&u, MCR, 0);
	assert_int_equal(serial_receive(u.s, "q", 1), 1);
	assert_int_equal(in(&u, RBR), 'q');
	uart_close(&u);
}

/* The receive buffer holds what it can; serial_receive says how much fit.
 * One more character arriving (here through loopback) is an overrun:
 * LSR.OE once, the line-status interrupt while it is pending, and what was
 * already received is intact. */
static void test_overrun(void **unused)
{
	uint8_t chunk[256];
	size_t total = 0, n;
	struct uart u;

	uart_open(&u, false);
	for (size_t i = 0; i < sizeof(chunk); i++)
		chunk[i] = (uint8_t)i;
	do {
		n = serial_receive(u.s, chunk, sizeof(chunk));
		total += n;
	} while (n == sizeof(chunk) && total < (1u << 20));
	assert_true(total >= 16);              /* at least a 16550A's FIFO */
	assert_true(total < (1u << 20));
	assert_int_equal(serial_receive(u.s, chunk, 1), 0);
	assert_int_equal(in(&u, LSR) & LSR_OE, 0);

	out(&u, MCR, MCR_LOOP | MCR_OUT2);
	out(&u, IER, IER_RLSI | IER_RDI);
	out(&u, THR, 0xee);
	assert_int_equal(iir_id(&u), IIR_RLSI);
	assert_int_equal(in(&u, LSR) & (LSR_OE | LSR_DR), LSR_OE | LSR_DR);
	assert_int_equal(in(&u, LSR) & LSR_OE, 0);          /* reported once */
	assert_int_equal(iir_id(&u), IIR_RDI);
	for (size_t i = 0; i < total; i++) {
		if (in(&u, RBR) != (uint8_t)(i % sizeof(chunk)))
			fail_msg("byte %zu of %zu damaged by the overrun", i, total);
	}
	assert_int_equal(in(&u, LSR) & LSR_DR, 0);
	uart_close(&u);
}

/* FCR bit 1 empties the receive FIFO. */
static void test_fifo_clear(void **unused)
{
	struct uart u;

	uart_open(&u, false);
	out(&u, FCR, 0x01);
	assert_int_equal(serial_receive(u.s, "abc", 3), 3);
	out(&u, FCR, 0x03);
	assert_int_equal(in(&u, LSR) & LSR_DR, 0);
	assert_int_equal(serial_receive(u.s, "d", 1), 1);
	assert_int_equal(in(&u, RBR), 'd');
	uart_close(&u);
}

/* ---- save and load ---- */

static json_t *save_text(struct uart *u)
{
	json_t *s = serial_device.save(u->s), *back;
	char *text = json_dumps(s, JSON_COMPACT);

	assert_non_null(text);
	back = json_loads(text, 0, NULL);
	assert_non_null(back);
	free(text);
	json_decref(s);
	return back;
}

struct regs {
	uint8_t ier, lcr, mcr, scr, dll, dlm;
};

/* Reads what a guest can see without consuming anything but IIR's THRI. */
static void read_regs(struct uart *u, struct regs *r)
{
	uint8_t lcr = in(u, LCR);

	memset(r, 0, sizeof(*r));
	r->lcr = lcr;
	out(u, LCR, lcr | LCR_DLAB);
	r->dll = in(u, DLL);
	r->dlm = in(u, DLM);
	out(u, LCR, lcr & (uint8_t)~LCR_DLAB);
	r->ier = in(u, IER);
	out(u, LCR, lcr);
	r->mcr = in(u, MCR);
	r->scr = in(u, SCR);
}

static void test_save_load(void **unused)
{
	struct uart src, dst;
	struct regs a, b;
	char err[256] = "";
	json_t *s;

	uart_open(&src, false);
	uart_open(&dst, false);
	out(&src, LCR, LCR_DLAB | 0x1b);
	out(&src, DLL, 0x03);
	out(&src, DLM, 0x00);
	out(&src, LCR, 0x1b);                       /* 8E1 */
	out(&src, FCR, 0xc7);
	out(&src, MCR, MCR_OUT2 | MCR_RTS | MCR_DTR);
	out(&src, SCR, 0x77);
	out(&src, IER, IER_RDI | IER_THRI);
	assert_int_equal(serial_receive(src.s, "xyz", 3), 3);
	assert_int_equal(irq4(&src), 1);

	s = save_text(&src);
	assert_int_equal(irq4(&dst), 0);
	assert_int_equal(serial_device.load(dst.s, s, err, sizeof(err)), 0);
	json_decref(s);
	/* The destination's interrupt line follows the loaded state at once,
	 * before the guest touches a register. */
	assert_int_equal(irq4(&dst), 1);
	read_regs(&src, &a);
	read_regs(&dst, &b);
	assert_memory_equal(&a, &b, sizeof(a));
	assert_int_equal(in(&dst, IIR), in(&src, IIR));
	assert_int_equal(in(&dst, RBR), 'x');
	assert_int_equal(in(&dst, RBR), 'y');
	assert_int_equal(in(&dst, RBR), 'z');
	assert_int_equal(in(&dst, LSR) & LSR_DR, 0);
	/* THR-empty was still pending in the source: it is in the destination. */
	assert_int_equal(iir_id(&dst), IIR_THRI);
	assert_int_equal(irq4(&dst), 0);
	uart_close(&src);
	uart_close(&dst);
}

enum mutation { SET_INT, DELETE, SET_STRING, SET_ARRAY_BYTE, APPEND_RX, SET_BOOL_INT };

static void test_load_rejects_malformed(void **unused)
{
	static const struct { const char *what, *key; enum mutation m; long v; } bad[] = {
		{ "ier 256", "ier", SET_INT, 256 },
		{ "lcr -1", "lcr", SET_INT, -1 },
		{ "mcr missing", "mcr", DELETE, 0 },
		{ "dll a string", "dll", SET_STRING, 0 },
		{ "rx missing", "rx", DELETE, 0 },
		{ "rx a string", "rx", SET_STRING, 0 },
		{ "rx byte 300", "rx", SET_ARRAY_BYTE, 300 },
		{ "rx byte -2", "rx", SET_ARRAY_BYTE, -2 },
		{ "rx longer than the buffer", "rx", APPEND_RX, 1 << 16 },
		{ "thr-pending an integer", "thr-pending", SET_BOOL_INT, 1 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct uart u;
		char err[256] = "";
		json_t *s, *arr;
		struct regs before, after;

		uart_open(&u, false);
		out(&u, SCR, 0x3c);
		out(&u, IER, IER_RDI);
		assert_int_equal(serial_receive(u.s, "k", 1), 1);
		s = save_text(&u);
		arr = json_object_get(s, bad[i].key);
		switch (bad[i].m) {
		case SET_INT:
			json_object_set_new(s, bad[i].key, json_integer(bad[i].v));
			break;
		case DELETE:
			json_object_del(s, bad[i].key);
			break;
		case SET_STRING:
			json_object_set_new(s, bad[i].key, json_string("12"));
			break;
		case SET_ARRAY_BYTE:
			json_array_set_new(arr, 0, json_integer(bad[i].v));
			break;
		case APPEND_RX:
			for (long k = 0; k < bad[i].v; k++)
				json_array_append_new(arr, json_integer(1));
			break;
		case SET_BOOL_INT:
			json_object_set_new(s, bad[i].key, json_integer(bad[i].v));
			break;
		}
		read_regs(&u, &before);
		assert_int_equal(serial_device.load(u.s, s, err, sizeof(err)), -EINVAL);
		if (!strstr(err, bad[i].key))
			fail_msg("%s: message '%s' does not name '%s'", bad[i].what, err, bad[i].key);
		read_regs(&u, &after);
		assert_memory_equal(&before, &after, sizeof(before));
		assert_int_equal(in(&u, RBR), 'k');
		assert_int_equal(in(&u, LSR) & LSR_DR, 0);
		json_decref(s);
		uart_close(&u);
	}
}

/* A reset puts the UART back at power-on: nothing pending, line low. */
static void test_reset(void **unused)
{
	struct uart u;

	uart_open(&u, false);
	out(&u, MCR, MCR_OUT2);
	out(&u, IER, IER_RDI | IER_THRI);
	assert_int_equal(serial_receive(u.s, "abc", 3), 3);
	assert_int_equal(irq4(&u), 1);
	serial_device.reset(u.s);
	assert_int_equal(irq4(&u), 0);
	assert_int_equal(in(&u, IER), 0);
	assert_int_equal(in(&u, MCR), 0);
	assert_int_equal(in(&u, LCR), 0);
	assert_int_equal(in(&u, LSR) & LSR_DR, 0);
	assert_int_equal(in(&u, IIR), IIR_NONE);
	assert_int_equal(probe(&u), UART_16550A);
	uart_close(&u);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_detected_as_16550a),
		cmocka_unit_test(test_fifo_bits),
		cmocka_unit_test(test_scratch_register),
		cmocka_unit_test(test_divisor_latch),
		cmocka_unit_test(test_output_reaches_file),
		cmocka_unit_test(test_thr_empty_interrupt),
		cmocka_unit_test(test_thr_empty_survives_higher_priority),
		cmocka_unit_test(test_receive_order_and_status),
		cmocka_unit_test(test_irq_gated_by_out2),
		cmocka_unit_test(test_loopback),
		cmocka_unit_test(test_overrun),
		cmocka_unit_test(test_fifo_clear),
		cmocka_unit_test(test_save_load),
		cmocka_unit_test(test_load_rejects_malformed),
		cmocka_unit_test(test_reset),
	};

	if (!vmfix_kvm_usable("test_serial"))
		return VMFIX_SKIP;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
