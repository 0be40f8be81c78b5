/* MC146818 RTC and CMOS memory at ports 0x70/0x71.
 *
 * The clock is the host's real-time clock plus an offset that the guest
 * changes by setting the time (register B's SET bit, then the time
 * registers, then clearing SET). Reads never see an update in progress:
 * every read computes the time anew. The CMOS bytes that firmware reads for
 * the memory size and the CPU count are filled in. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "devices.h"
#include "layout.h"
#include "util.h"
#include "vm.h"

#define CMOS_SIZE    128
#define REG_SEC      0x00
#define REG_MIN      0x02
#define REG_HOUR     0x04
#define REG_WDAY     0x06
#define REG_MDAY     0x07
#define REG_MON      0x08
#define REG_YEAR     0x09
#define REG_A        0x0a
#define REG_B        0x0b
#define REG_C        0x0c
#define REG_D        0x0d
#define REG_CENTURY  0x32
#define B_SET        0x80
#define B_BINARY     0x04
#define B_24H        0x02
#define D_VRT        0x80

struct rtc {
	struct vm *vm;
	pthread_mutex_t lock;
	uint8_t index;
	uint8_t cmos[CMOS_SIZE];
	int64_t offset;            /* guest time minus host time, in seconds */
};

static uint8_t to_reg(const struct rtc *r, unsigned v)
{
	return (r->cmos[REG_B] & B_BINARY) ? (uint8_t)v : (uint8_t)(((v / 10) << 4) | (v % 10));
}

static unsigned from_reg(const struct rtc *r, uint8_t v)
{
	return (r->cmos[REG_B] & B_BINARY) ? v : (unsigned)((v >> 4) * 10 + (v & 0x0f));
}

/* Fills the time registers from host time + offset. */
static void latch_time_locked(struct rtc *r)
{
	time_t now = time(NULL) + (time_t)r->offset;
	struct tm tm;
	unsigned hour;

	gmtime_r(&now, &tm);
	hour = (unsigned)tm.tm_hour;
	r->cmos[REG_SEC] = to_reg(r, (unsigned)tm.tm_sec);
	r->cmos[REG_MIN] = to_reg(r, (unsigned)tm.tm_min);
	if (r->cmos[REG_B] & B_24H) {
		r->cmos[REG_HOUR] = to_reg(r, hour);
	} else {
		unsigned h12 = hour % 12 ? hour % 12 : 12;

		r->cmos[REG_HOUR] = (uint8_t)(to_reg(r, h12) | (hour >= 12 ? 0x80 : 0));
	}
	r->cmos[REG_WDAY] = to_reg(r, (unsigned)tm.tm_wday + 1);
	r->cmos[REG_MDAY] = to_reg(r, (unsigned)tm.tm_mday);
	r->cmos[REG_MON] = to_reg(r, (unsigned)tm.tm_mon + 1);
	r->cmos[REG_YEAR] = to_reg(r, (unsigned)(tm.tm_year + 1900) % 100);
	r->cmos[REG_CENTURY] = to_reg(r, (unsigned)(tm.tm_year + 1900) / 100);
}

/* The guest finished setting the clock: keep the difference to host time. */
static void commit_time_locked(struct rtc *r)
{
	struct tm tm = { 0 };
	unsigned hour = from_reg(r, r->cmos[REG_HOUR] & 0x7f);
	time_t guest;

	if (!(r->cmos[REG_B] & B_24H)) {
		hour %= 12;
		if (r->cmos[REG_HOUR] & 0x80)
			hour += 12;
	}
	tm.tm_sec = (int)from_reg(r, r->cmos[REG_SEC]);
	tm.tm_min = (int)from_reg(r, r->cmos[REG_MIN]);
	tm.tm_hour = (int)hour;
	tm.tm_mday = (int)from_reg(r, r->cmos[REG_MDAY]);
	tm.tm_mon = (int)from_reg(r, r->cmos[REG_MON]) - 1;
	tm.tm_year = (int)(from_reg(r, r->cmos[REG_CENTURY]) * 100 +
			   from_reg(r, r->cmos[REG_YEAR])) - 1900;
	guest = timegm(&tm);
	if (guest != (time_t)-1)
		r->offset = (int64_t)(guest - time(NULL));
}

static void rtc_read(void *opaque, uint16_t port, uint8_t *data, unsigned size)
{
	struct rtc *r = opaque;
	uint8_t i;

	memset(data, 0xff, size);
	pthread_mutex_lock(&r->lock);
	if (port == PORT_CMOS_INDEX) {
		data[0] = r->index;
		goto out;
	}
	i = r->index & 0x7f;
	if ((i <= REG_YEAR || i == REG_CENTURY) && !(r->cmos[REG_B] & B_SET))
		latch_time_locked(r);
	data[0] = r->cmos[i];
	if (i == REG_C)
		r->cmos[REG_C] = 0;        /* interrupt flags clear on read */
out:
	pthread_mutex_unlock(&r->lock);
}

static void rtc_write(void *opaque, uint16_t port, const uint8_t *data, unsigned size)
{
	struct rtc *r = opaque;
	uint8_t i, v = data[0];

	pthread_mutex_lock(&r->lock);
	if (port == PORT_CMOS_INDEX) {
		r->index = v;              /* bit 7 masks NMIs on a PC; nothing to do */
		goto out;
	}
	i = r->index & 0x7f;
	switch (i) {
	case REG_A:
		r->cmos[REG_A] = v & 0x7f;  /* UIP is read-only */
		break;
	case REG_B:
		if ((v & B_SET) == 0 && (r->cmos[REG_B] & B_SET))
			commit_time_locked(r);
		else if ((v & B_SET) && !(r->cmos[REG_B] & B_SET))
			latch_time_locked(r);
		/* Changing the format re-expresses the time in it. */
		if ((v ^ r->cmos[REG_B]) & (B_BINARY | B_24H) && !(v & B_SET)) {
			r->cmos[REG_B] = v;
			latch_time_locked(r);
		}
		r->cmos[REG_B] = v;
		break;
	case REG_C:
	case REG_D:
		break;                      /* read-only */
	default:
		r->cmos[i] = v;
		break;
	}
out:
	pthread_mutex_unlock(&r->lock);
}

static void fill_cmos(struct rtc *r)
{
	const struct guest_mem *gm = &r->vm->mem;
	uint64_t low = guest_mem_low_end(gm), high = gm->ram_size - low;
	uint64_t ext_kib = low > MiB ? (low - MiB) >> 10 : 0, above16;

	memset(r->cmos, 0, sizeof(r->cmos));
	r->cmos[REG_A] = 0x26;                    /* 32.768 kHz base, 1024 Hz rate */
	r->cmos[REG_B] = B_24H;
	r->cmos[REG_D] = D_VRT;
	r->cmos[0x15] = (640) & 0xff;             /* base memory, KiB */
	r->cmos[0x16] = (640) >> 8;
	if (ext_kib > 0xfc00)
		ext_kib = 0xfc00;                     /* the 16-bit field caps at 63 MiB */
	r->cmos[0x17] = r->cmos[0x30] = (uint8_t)ext_kib;
	r->cmos[0x18] = r->cmos[0x31] = (uint8_t)(ext_kib >> 8);
	above16 = low > 16 * MiB ? (low - 16 * MiB) >> 16 : 0;
	if (above16 > 0xffff)
		above16 = 0xffff;
	r->cmos[0x34] = (uint8_t)above16;         /* RAM 16 MiB-4 GiB, 64 KiB units */
	r->cmos[0x35] = (uint8_t)(above16 >> 8);
	r->cmos[0x5b] = (uint8_t)(high >> 16);    /* RAM above 4 GiB, 64 KiB units */
	r->cmos[0x5c] = (uint8_t)(high >> 24);
	r->cmos[0x5d] = (uint8_t)(high >> 32);
	r->cmos[0x5f] = (uint8_t)(r->vm->ncpus - 1);
	latch_time_locked(r);
}

static void rtc_reset(void *state)
{
	struct rtc *r = state;

	/* The clock keeps its time across a reset, as a battery-backed one does. */
	pthread_mutex_lock(&r->lock);
	r->cmos[REG_B] &= (uint8_t)~(B_SET | 0x70);   /* SET and the interrupt enables */
	r->cmos[REG_C] = 0;
	r->index = 0;
	pthread_mutex_unlock(&r->lock);
}

static int rtc_create(struct vm *vm, void **state, char *err, size_t errlen)
{
	struct rtc *r = calloc(1, sizeof(*r));
	int ret;

	if (!r)
		return -ENOMEM;
	r->vm = vm;
	pthread_mutex_init(&r->lock, NULL);
	fill_cmos(r);
	ret = pio_register(&vm->pio, PORT_CMOS_INDEX, 2, "rtc", rtc_read, rtc_write, r);
	if (ret < 0) {
		snprintf(err, errlen, "rtc: %s", strerror(-ret));
		free(r);
		return ret;
	}
	*state = r;
	return 0;
}

static json_t *rtc_save(void *state)
{
	struct rtc *r = state;
	json_t *cmos = json_array(), *o;

	pthread_mutex_lock(&r->lock);
	for (unsigned i = 0; i < CMOS_SIZE; i++)
		json_array_append_new(cmos, json_integer(r->cmos[i]));
	o = json_pack("{s:i, s:I, s:o}", "index", r->index, "offset", (json_int_t)r->offset,
		      "cmos", cmos);
	pthread_mutex_unlock(&r->lock);
	return o;
}

static int rtc_load(void *state, json_t *saved, char *err, size_t errlen)
{
	struct rtc *r = state;
	json_t *cmos = json_object_get(saved, "cmos"), *off = json_object_get(saved, "offset"), *e;
	uint8_t bytes[CMOS_SIZE];
	uint64_t index;
	size_t i;

	if (dev_json_uint(saved, "index", 0xff, &index, err, errlen) < 0)
		return -EINVAL;
	if (!json_is_integer(off) || !json_is_array(cmos) || json_array_size(cmos) != CMOS_SIZE) {
		snprintf(err, errlen, "'offset' or 'cmos' (%d bytes) missing or malformed",
			 CMOS_SIZE);
		return -EINVAL;
	}
	json_array_foreach(cmos, i, e) {
		if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > 255) {
			snprintf(err, errlen, "'cmos'[%zu] is not a byte", i);
			return -EINVAL;
		}
		bytes[i] = (uint8_t)json_integer_value(e);
	}
	pthread_mutex_lock(&r->lock);
	r->index = (uint8_t)index;
	r->offset = json_integer_value(off);
	memcpy(r->cmos, bytes, sizeof(bytes));
	pthread_mutex_unlock(&r->lock);
	return 0;
}

static void rtc_destroy(void *state)
{
	struct rtc *r = state;

	pthread_mutex_destroy(&r->lock);
	free(r);
}

const struct device_type rtc_device = {
	.name = "rtc",
	.create = rtc_create,
	.reset = rtc_reset,
	.save = rtc_save,
	.load = rtc_load,
	.destroy = rtc_destroy,
};
