/* The MC146818 RTC and CMOS memory (vmm/rtc.c) as Linux's mc146818 helpers
 * and rtc-cmos read them: index on 0x70 (bit 7 is the PC's NMI mask, not
 * part of the address), data on 0x71; seconds/minutes/hours at 0/2/4, day of
 * week 6 (1 = Sunday), day 7, month 8, year 9, century 0x32; register B's
 * DM bit (2) selects binary over BCD, 24/12 (bit 1) the hour format with
 * bit 7 of the hour as PM, SET (bit 7) stops updates while the time is
 * written; register C (interrupt flags) clears on read; register D's VRT
 * (bit 7) says the battery is good. The clock keeps the host's UTC time. The
 * memory-size bytes are the PC/AT ones (0x15/0x16 base, 0x17/0x18 and
 * 0x30/0x31 extended in KiB) and those SeaBIOS-style firmware reads (0x34/0x35
 * RAM above 16 MiB and 0x5b-0x5d RAM above 4 GiB, in 64 KiB units). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "evloop.h"
#include "layout.h"
#include "util.h"
#include "vmfixture.h"

#define REG_SEC     0x00
#define REG_MIN     0x02
#define REG_HOUR    0x04
#define REG_WDAY    0x06
#define REG_MDAY    0x07
#define REG_MON     0x08
#define REG_YEAR    0x09
#define REG_A       0x0a
#define REG_B       0x0b
#define REG_C       0x0c
#define REG_D       0x0d
#define REG_CENTURY 0x32
#define B_SET       0x80
#define B_DM_BINARY 0x04
#define B_24H       0x02
#define D_VRT       0x80
#define HOUR_PM     0x80
#define NMI_MASK    0x80

static const struct device_type *const rtc_devices[] = { &rtc_device, NULL };

static struct vmfix *new_vm_with(uint64_t ram, unsigned cpus)
{
	struct vmm_config cfg;
	struct vmfix *f = NULL;
	char err[256] = "";

	vmm_config_init(&cfg);
	cfg.serial = SERIAL_NONE;
	cfg.cpus = cpus;
	if (vmfix_create(&f, ram, &cfg, rtc_devices, err, sizeof(err)) < 0)
		fail_msg("creating the test VM: %s", err);
	return f;
}

static struct vmfix *new_vm(void)
{
	return new_vm_with(16 * MiB, 1);
}

static uint8_t cmos_read(struct vmfix *f, uint8_t reg)
{
	int v;

	vmfix_out(f, PORT_CMOS_INDEX, reg);
	v = vmfix_in(f, PORT_CMOS_DATA);
	assert_true(v >= 0);
	return (uint8_t)v;
}

static void cmos_write(struct vmfix *f, uint8_t reg, uint8_t v)
{
	vmfix_out(f, PORT_CMOS_INDEX, reg);
	vmfix_out(f, PORT_CMOS_DATA, v);
}

/* A register value in the format register B selects; fails on a BCD digit
 * above 9. */
static unsigned decode(uint8_t v, uint8_t b)
{
	if (b & B_DM_BINARY)
		return v;
	if ((v & 0x0f) > 9 || (v >> 4) > 9)
		fail_msg("0x%02x is not BCD", v);
	return (v >> 4) * 10 + (v & 0x0f);
}

static uint8_t encode(unsigned v, uint8_t b)
{
	return (b & B_DM_BINARY) ? (uint8_t)v : (uint8_t)((v / 10) << 4 | (v % 10));
}

/* The guest's clock as Linux's mc146818_get_time reads it, in seconds since
 * the epoch (UTC), checking every field's range on the way. */
static time_t read_clock_once(struct vmfix *f)
{
	uint8_t b = cmos_read(f, REG_B), hour_reg = cmos_read(f, REG_HOUR);
	unsigned hour = decode(hour_reg & (b & B_24H ? 0xff : 0x7f), b);
	struct tm tm = { 0 };
	time_t t;

	if (b & B_24H) {
		assert_true(hour <= 23);
	} else {
		assert_true(hour >= 1 && hour <= 12);
		hour = hour % 12 + ((hour_reg & HOUR_PM) ? 12 : 0);
	}
	tm.tm_sec = (int)decode(cmos_read(f, REG_SEC), b);
	tm.tm_min = (int)decode(cmos_read(f, REG_MIN), b);
	tm.tm_hour = (int)hour;
	tm.tm_mday = (int)decode(cmos_read(f, REG_MDAY), b);
	tm.tm_mon = (int)decode(cmos_read(f, REG_MON), b) - 1;
	tm.tm_year = (int)(decode(cmos_read(f, REG_CENTURY), b) * 100 +
			   decode(cmos_read(f, REG_YEAR), b)) - 1900;
	assert_true(tm.tm_sec <= 59 && tm.tm_min <= 59);
	assert_true(tm.tm_mday >= 1 && tm.tm_mday <= 31 && tm.tm_mon >= 0 && tm.tm_mon <= 11);
	t = timegm(&tm);
	/* Day of week: 1 = Sunday. */
	assert_int_equal(decode(cmos_read(f, REG_WDAY), b), (unsigned)tm.tm_wday + 1);
	return t;
}

/* Fields are read one at a time, so a read that straddles a minute's end can
 * mix two times; like Linux, read again until two reads agree. */
static time_t read_clock(struct vmfix *f)
{
	time_t a = read_clock_once(f), b;

	for (int tries = 0; tries < 5; tries++, a = b) {
		b = read_clock_once(f);
		if (b >= a && b - a <= 1)
			return b;
	}
	fail_msg("the clock reads differently every time");
	return 0;
}

static const struct format_case {
	const char *name;
	uint8_t b;
} formats[] = {
	{ "BCD, 24-hour", B_24H },
	{ "binary, 24-hour", B_DM_BINARY | B_24H },
	{ "BCD, 12-hour", 0 },
	{ "binary, 12-hour", B_DM_BINARY },
};

static void test_power_on_registers(void **unused)
{
	struct vmfix *f = new_vm();

	/* Linux's rtc-cmos wants 24-hour BCD; the divider must run. */
	assert_int_equal(cmos_read(f, REG_B) & (B_SET | B_DM_BINARY | B_24H), B_24H);
	assert_int_equal(cmos_read(f, REG_A) & 0x70, 0x20);
	assert_true(cmos_read(f, REG_D) & D_VRT);
	vmfix_destroy(f);
}

static void test_time_matches_host(void **unused)
{
	for (size_t i = 0; i < ARRAY_SIZE(formats); i++) {
		struct vmfix *f = new_vm();
		time_t before, guest, after;

		cmos_write(f, REG_B, formats[i].b);
		assert_int_equal(cmos_read(f, REG_B), formats[i].b);
		before = time(NULL);
		guest = read_clock(f);
		after = time(NULL);
		if (guest < before - 2 || guest > after + 2)
			fail_msg("%s: guest clock %lld, host %lld", formats[i].name, (long long)guest,
				 (long long)before);
		vmfix_destroy(f);
	}
}

struct set_case {
	const char *name;
	uint8_t b;
	unsigned year, mon, mday, hour, min, sec;
};

static const struct set_case settings[] = {
	{ "BCD 24h", B_24H, 2001, 2, 3, 4, 5, 6 },
	{ "binary 24h", B_DM_BINARY | B_24H, 2038, 1, 19, 3, 14, 8 },
	{ "BCD 12h, PM", 0, 1999, 12, 31, 23, 59, 30 },
	{ "binary 12h, midnight", B_DM_BINARY, 2024, 2, 29, 0, 0, 0 },
	{ "BCD 24h, future", B_24H, 2099, 7, 15, 12, 0, 0 },
};

static void set_clock(struct vmfix *f, const struct set_case *c)
{
	uint8_t hour;

	if (c->b & B_24H)
		hour = encode(c->hour, c->b);
	else
		hour = (uint8_t)(encode(c->hour % 12 ? c->hour % 12 : 12, c->b) |
				 (c->hour >= 12 ? HOUR_PM : 0));
	cmos_write(f, REG_B, c->b | B_SET);
	cmos_write(f, REG_SEC, encode(c->sec, c->b));
	cmos_write(f, REG_MIN, encode(c->min, c->b));
	cmos_write(f, REG_HOUR, hour);
	cmos_write(f, REG_MDAY, encode(c->mday, c->b));
	cmos_write(f, REG_MON, encode(c->mon, c->b));
	cmos_write(f, REG_YEAR, encode(c->year % 100, c->b));
	cmos_write(f, REG_CENTURY, encode(c->year / 100, c->b));
	/* While SET holds the clock, reads return what was written. */
	assert_int_equal(cmos_read(f, REG_SEC), encode(c->sec, c->b));
	assert_int_equal(cmos_read(f, REG_HOUR), hour);
	cmos_write(f, REG_B, c->b);
}

static time_t set_case_time(const struct set_case *c)
{
	struct tm tm = { .tm_year = (int)c->year - 1900, .tm_mon = (int)c->mon - 1,
			 .tm_mday = (int)c->mday, .tm_hour = (int)c->hour,
			 .tm_min = (int)c->min, .tm_sec = (int)c->sec };

	return timegm(&tm);
}

/* 12-hour mode by the data sheet: 12 AM is 12, 1 PM is 1 with bit 7. Each
 * hour is set in 24-hour mode and read back after switching to 12-hour. */
static void test_12_hour_encoding(void **unused)
{
	static const struct { unsigned hour24; unsigned hour12; bool pm; } hours[] = {
		{ 0, 12, false }, { 1, 1, false }, { 11, 11, false },
		{ 12, 12, true }, { 13, 1, true }, { 23, 11, true },
	};

	for (size_t i = 0; i < ARRAY_SIZE(hours); i++) {
		for (uint8_t dm = 0; dm <= B_DM_BINARY; dm += B_DM_BINARY) {
			struct set_case c = { "", (uint8_t)(B_24H | dm), 2010, 6, 15,
					      hours[i].hour24, 30, 0 };
			struct vmfix *f = new_vm();
			uint8_t v;

			set_clock(f, &c);
			cmos_write(f, REG_B, dm);                     /* to 12-hour */
			v = cmos_read(f, REG_HOUR);
			if (decode(v & 0x7f, dm) != hours[i].hour12 || !!(v & HOUR_PM) != hours[i].pm)
				fail_msg("%u:30 (%s) reads 0x%02x in 12-hour mode", hours[i].hour24,
					 dm ? "binary" : "BCD", v);
			vmfix_destroy(f);
		}
	}
}

/* Setting the clock moves it; it then runs on from there. */
static void test_set_time(void **unused)
{
	for (size_t i = 0; i < ARRAY_SIZE(settings); i++) {
		const struct set_case *c = &settings[i];
		struct vmfix *f = new_vm();
		time_t want = set_case_time(c), got;

		set_clock(f, c);
		got = read_clock(f);
		if (got < want || got > want + 2)
			fail_msg("%s: set to %lld, reads %lld", c->name, (long long)want,
				 (long long)got);
		vmfix_destroy(f);
	}
}

static void test_set_time_keeps_running(void **unused)
{
	struct vmfix *f = new_vm();
	time_t want = set_case_time(&settings[0]), got;
	struct timespec pause = { 2, 100 * 1000 * 1000 };

	set_clock(f, &settings[0]);
	nanosleep(&pause, NULL);
	got = read_clock(f);
	if (got < want + 2 || got > want + 4)
		fail_msg("set to %lld, 2.1 s later reads %lld", (long long)want, (long long)got);
	/* Changing the format afterwards re-expresses the same time. */
	cmos_write(f, REG_B, B_DM_BINARY);
	got = read_clock(f);
	if (got < want + 2 || got > want + 4)
		fail_msg("after switching to binary 12-hour: %lld", (long long)got);
	vmfix_destroy(f);
}

/* Register C: interrupt flags, cleared by reading; registers C and D are
 * read-only, as are A's UIP bit. Flags are only set by the device, so the
 * test puts them there through a state load, as a migration would. */
static void test_status_registers(void **unused)
{
	struct vmfix *f = new_vm();
	char err[256] = "";
	json_t *s = rtc_device.save(vmfix_state(f, 0)), *cmos;

	cmos = json_object_get(s, "cmos");
	assert_true(json_is_array(cmos));
	json_array_set_new(cmos, REG_C, json_integer(0xf0));
	assert_int_equal(rtc_device.load(vmfix_state(f, 0), s, err, sizeof(err)), 0);
	json_decref(s);
	assert_int_equal(cmos_read(f, REG_C), 0xf0);
	assert_int_equal(cmos_read(f, REG_C), 0x00);

	cmos_write(f, REG_C, 0xff);
	assert_int_equal(cmos_read(f, REG_C), 0x00);
	cmos_write(f, REG_D, 0x00);
	assert_int_equal(cmos_read(f, REG_D), D_VRT);
	cmos_write(f, REG_A, 0xa6);
	assert_int_equal(cmos_read(f, REG_A) & 0x7f, 0x26);   /* UIP may be up */
	vmfix_destroy(f);
}

/* Bit 7 of the index port masks NMIs on a PC; it does not select a
 * register, and guests that keep NMIs masked while they touch the RTC write
 * the index with it set. */
static void test_nmi_bit_ignored(void **unused)
{
	static const uint8_t regs[] = { REG_B, REG_D, 0x0e, 0x40, 0x7f };
	struct vmfix *f = new_vm();

	for (size_t i = 0; i < ARRAY_SIZE(regs); i++) {
		uint8_t plain = cmos_read(f, regs[i]);

		assert_int_equal(cmos_read(f, (uint8_t)(regs[i] | NMI_MASK)), plain);
	}
	/* Writes through the masked index reach the same byte. */
	cmos_write(f, 0x40 | NMI_MASK, 0x5a);
	assert_int_equal(cmos_read(f, 0x40), 0x5a);
	cmos_write(f, 0x41, 0xa5);
	assert_int_equal(cmos_read(f, 0x41 | NMI_MASK), 0xa5);
	vmfix_destroy(f);
}

/* General-purpose CMOS bytes keep what the guest stores. */
static void test_cmos_memory(void **unused)
{
	struct vmfix *f = new_vm();

	for (unsigned r = 0x0e; r < 0x80; r++) {
		if (r == REG_CENTURY)
			continue;
		cmos_write(f, (uint8_t)r, (uint8_t)(r * 37 + 11));
	}
	for (unsigned r = 0x0e; r < 0x80; r++) {
		if (r == REG_CENTURY)
			continue;
		if (cmos_read(f, (uint8_t)r) != (uint8_t)(r * 37 + 11))
			fail_msg("CMOS byte 0x%02x lost what was written", r);
	}
	vmfix_destroy(f);
}

static unsigned rd16(struct vmfix *f, uint8_t lo)
{
	return cmos_read(f, lo) | (unsigned)cmos_read(f, (uint8_t)(lo + 1)) << 8;
}

static void test_memory_size_bytes(void **unused)
{
	static const struct {
		uint64_t ram;
		unsigned cpus;
		unsigned above_16m;      /* 64 KiB units */
		uint64_t above_4g;       /* 64 KiB units */
	} cases[] = {
		{ 64 * MiB, 1, (64 - 16) * 16, 0 },
		{ 5 * GiB, 4, (3 * 1024 - 16) * 16, 2 * 1024 * 16 },
		{ 3 * GiB, 2, (3 * 1024 - 16) * 16, 0 },
		{ 8 * MiB, 1, 0, 0 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct vmfix *f = new_vm_with(cases[i].ram, cases[i].cpus);
		uint64_t low = cases[i].ram < 3 * GiB ? cases[i].ram : 3 * GiB;
		uint64_t ext_kib = (low - MiB) >> 10;
		unsigned ext = rd16(f, 0x17);
		uint64_t high = cmos_read(f, 0x5b) | (uint64_t)cmos_read(f, 0x5c) << 8 |
				(uint64_t)cmos_read(f, 0x5d) << 16;

		assert_int_equal(rd16(f, 0x15), 640);
		assert_int_equal(rd16(f, 0x30), ext);
		/* The 16-bit field saturates: at 0xFFFF or, as many BIOSes do, at
		 * 63 MiB (0xFC00). */
		if (ext_kib < 0xfc00 ? ext != ext_kib : ext != 0xfc00 && ext != 0xffff)
			fail_msg("%llu MiB: extended memory %u KiB", (unsigned long long)
				 (cases[i].ram >> 20), ext);
		if (rd16(f, 0x34) != cases[i].above_16m)
			fail_msg("%llu MiB: RAM above 16 MiB %u x 64 KiB, expected %u",
				 (unsigned long long)(cases[i].ram >> 20), rd16(f, 0x34),
				 cases[i].above_16m);
		if (high != cases[i].above_4g)
			fail_msg("%llu MiB: RAM above 4 GiB %llu x 64 KiB, expected %llu",
				 (unsigned long long)(cases[i].ram >> 20), (unsigned long long)high,
				 (unsigned long long)cases[i].above_4g);
		assert_int_equal(cmos_read(f, 0x5f), cases[i].cpus - 1);
		vmfix_destroy(f);
	}
}

static json_t *save_text(struct vmfix *f)
{
	json_t *s = rtc_device.save(vmfix_state(f, 0)), *back;
	char *text = json_dumps(s, JSON_COMPACT);

	assert_non_null(text);
	back = json_loads(text, 0, NULL);
	assert_non_null(back);
	free(text);
	json_decref(s);
	return back;
}

/* The guest's clock offset, its format and its CMOS bytes move with it. */
static void test_save_load(void **unused)
{
	const struct set_case *c = &settings[2];
	struct vmfix *src = new_vm(), *dst = new_vm();
	char err[256] = "";
	time_t want = set_case_time(c), got;
	json_t *s;

	set_clock(src, c);
	for (unsigned r = 0x40; r < 0x80; r++)
		cmos_write(src, (uint8_t)r, (uint8_t)(r ^ 0xa5));
	vmfix_out(src, PORT_CMOS_INDEX, 0x50);        /* index left selected */
	s = save_text(src);
	assert_int_equal(rtc_device.load(vmfix_state(dst, 0), s, err, sizeof(err)), 0);
	json_decref(s);
	assert_int_equal(vmfix_in(dst, PORT_CMOS_DATA), 0x50 ^ 0xa5);
	assert_int_equal(cmos_read(dst, REG_B), c->b);
	got = read_clock(dst);
	if (got < want || got > want + 3)
		fail_msg("set to %lld before the move, reads %lld after", (long long)want,
			 (long long)got);
	for (unsigned r = REG_A; r < 0x80; r++) {
		if (r == REG_C || r == REG_CENTURY)
			continue;
		if (cmos_read(dst, (uint8_t)r) != cmos_read(src, (uint8_t)r))
			fail_msg("CMOS byte 0x%02x differs after the move", r);
	}
	vmfix_destroy(src);
	vmfix_destroy(dst);
}

static void test_load_rejects_malformed(void **unused)
{
	static const struct { const char *what, *key; int kind; const char *names; } bad[] = {
		{ "index 256", "index", 0, "index" },
		{ "index missing", "index", 1, "index" },
		{ "offset a string", "offset", 2, "offset" },
		{ "cmos with 127 bytes", "cmos", 3, "cmos" },
		{ "cmos with 129 bytes", "cmos", 4, "cmos" },
		{ "cmos byte 256", "cmos", 5, "cmos" },
		{ "cmos byte -1", "cmos", 6, "cmos" },
		{ "cmos an object", "cmos", 7, "cmos" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct vmfix *f = new_vm();
		json_t *s = save_text(f), *cmos = json_object_get(s, bad[i].key);
		char err[256] = "";

		cmos_write(f, 0x60, 0x99);
		switch (bad[i].kind) {
		case 0: json_object_set_new(s, bad[i].key, json_integer(256)); break;
		case 1: json_object_del(s, bad[i].key); break;
		case 2: json_object_set_new(s, bad[i].key, json_string("0")); break;
		case 3: json_array_remove(cmos, 0); break;
		case 4: json_array_append_new(cmos, json_integer(0)); break;
		case 5: json_array_set_new(cmos, 0x60, json_integer(256)); break;
		case 6: json_array_set_new(cmos, 0x60, json_integer(-1)); break;
		case 7: json_object_set_new(s, bad[i].key, json_object()); break;
		}
		assert_int_equal(rtc_device.load(vmfix_state(f, 0), s, err, sizeof(err)), -EINVAL);
		if (!strstr(err, bad[i].names))
			fail_msg("%s: message '%s' does not name '%s'", bad[i].what, err, bad[i].names);
		assert_int_equal(cmos_read(f, 0x60), 0x99);
		json_decref(s);
		vmfix_destroy(f);
	}
}

/* ---- interrupts ---- */

#define B_PIE  0x40
#define B_AIE  0x20
#define B_UIE  0x10
#define C_IRQF 0x80
#define C_PF   0x40
#define C_AF   0x20
#define C_UF   0x10

/* Runs the main loop (where the RTC's timer lives) until IRQ 8 is up or
 * timeout_ms passed; true if it came up. */
static bool wait_irq8(struct vmfix *f, struct evloop *loop, int timeout_ms)
{
	for (int waited = 0; waited < timeout_ms; waited += 10) {
		if (vmfix_irq_level(f, 8))
			return true;
		evloop_run_once(loop, 10);
	}
	return vmfix_irq_level(f, 8);
}

static struct vmfix *new_attached(struct evloop **loop)
{
	struct vmfix *f = new_vm();
	char err[256] = "";

	assert_int_equal(evloop_new(loop), 0);
	assert_int_equal(rtc_device.attach(vmfix_state(f, 0), *loop, err, sizeof(err)), 0);
	return f;
}

/* Each enabled source raises IRQ 8 when its time comes, register C says
 * which with IRQF, and reading C lowers the line. */
static void test_interrupts(void **unused)
{
	static const struct {
		const char *name;
		uint8_t b, a, expect;
		int within_ms;
	} cases[] = {
		{ "update-ended", B_UIE, 0x26, C_UF, 1500 },
		{ "periodic 2 Hz", B_PIE, 0x2f, C_PF, 1000 },
		{ "periodic 1024 Hz", B_PIE, 0x26, C_PF, 100 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct evloop *loop;
		struct vmfix *f = new_attached(&loop);
		uint8_t c;

		cmos_write(f, REG_A, cases[i].a);
		cmos_read(f, REG_C);
		assert_int_equal(vmfix_irq_level(f, 8), 0);
		cmos_write(f, REG_B, B_24H | cases[i].b);
		if (!wait_irq8(f, loop, cases[i].within_ms))
			fail_msg("%s: no IRQ 8 within %d ms", cases[i].name, cases[i].within_ms);
		c = (uint8_t)cmos_read(f, REG_C);
		if (!(c & C_IRQF) || !(c & cases[i].expect))
			fail_msg("%s: register C 0x%02x lacks IRQF or 0x%02x", cases[i].name, c,
				 cases[i].expect);
		assert_int_equal(vmfix_irq_level(f, 8), 0);
		/* Disabled again: the line stays down. */
		cmos_write(f, REG_B, B_24H);
		cmos_read(f, REG_C);
		for (int t = 0; t < 60; t++)
			evloop_run_once(loop, 10);
		assert_int_equal(vmfix_irq_level(f, 8), 0);
		vmfix_destroy(f);
		evloop_free(loop);
	}
}

/* The alarm fires when seconds, minutes and hours match, 0xC0-0xFF in an
 * alarm register meaning "any". */
static void test_alarm(void **unused)
{
	struct evloop *loop;
	struct vmfix *f = new_attached(&loop);
	unsigned sec;
	uint8_t c = 0;

	cmos_write(f, REG_B, B_24H | B_DM_BINARY);
	sec = (unsigned)cmos_read(f, REG_SEC);
	cmos_write(f, 0x01, (uint8_t)((sec + 2) % 60));   /* seconds alarm */
	cmos_write(f, 0x03, 0xc0);                        /* any minute */
	cmos_write(f, 0x05, 0xff);                        /* any hour */
	cmos_read(f, REG_C);
	cmos_write(f, REG_B, B_24H | B_DM_BINARY | B_AIE);
	assert_true(wait_irq8(f, loop, 3500));
	c = (uint8_t)cmos_read(f, REG_C);
	assert_true(c & C_IRQF);
	assert_true(c & C_AF);
	assert_int_equal((unsigned)cmos_read(f, REG_SEC), (sec + 2) % 60);
	/* Not again within the same minute's other seconds. */
	for (int t = 0; t < 120; t++)
		evloop_run_once(loop, 10);
	assert_int_equal(vmfix_irq_level(f, 8), 0);
	vmfix_destroy(f);
	evloop_free(loop);
}

/* UIP is set only in the 244 us before an update: over many reads it is
 * mostly clear, and it is seen when reads are made just before a second
 * boundary. */
static void test_update_in_progress(void **unused)
{
	struct vmfix *f = new_vm();
	int seen = 0, clear = 0;

	/* Wake 400 us before a second boundary and read through it; a late
	 * wake-up (a busy host) just tries the next second. */
	/* Both within one attempt: a wake-up that comes inside the window
	 * sees only its set bit, and proves nothing about the bit's clearing. */
	for (int attempt = 0; attempt < 20 && !(seen && clear); attempt++) {
		struct timespec ts, now;

		seen = clear = 0;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		ts.tv_nsec = 999600000;
		clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, NULL);
		do {
			if (cmos_read(f, REG_A) & 0x80)
				seen++;
			else
				clear++;
			clock_gettime(CLOCK_REALTIME, &now);
		} while (now.tv_sec == ts.tv_sec);
	}
	assert_true(seen > 0);
	assert_true(clear > 0);      /* and clear before it */
	vmfix_destroy(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_power_on_registers),
		cmocka_unit_test(test_time_matches_host),
		cmocka_unit_test(test_12_hour_encoding),
		cmocka_unit_test(test_set_time),
		cmocka_unit_test(test_set_time_keeps_running),
		cmocka_unit_test(test_status_registers),
		cmocka_unit_test(test_nmi_bit_ignored),
		cmocka_unit_test(test_cmos_memory),
		cmocka_unit_test(test_memory_size_bytes),
		cmocka_unit_test(test_save_load),
		cmocka_unit_test(test_load_rejects_malformed),
		cmocka_unit_test(test_interrupts),
		cmocka_unit_test(test_alarm),
		cmocka_unit_test(test_update_in_progress),
	};

	if (!vmfix_kvm_usable("test_rtc"))
		return VMFIX_SKIP;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
