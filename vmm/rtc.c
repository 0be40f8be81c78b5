/* MC146818 RTC and CMOS memory at ports 0x70/0x71, IRQ 8.
 *
 * The clock is the host's real-time clock plus an offset that the guest
 * changes by setting the time (register B's SET bit, then the time
 * registers, then clearing SET). Every read computes the time anew, so the
 * registers are always consistent; register A's UIP bit is still set during
 * the 244 us before each second's update, as on the chip, for guests that
 * wait for the update edge.
 *
 * Interrupts: the periodic (PF, rate from register A), alarm (AF, against
 * the alarm registers, 0xC0-0xFF meaning "any") and update-ended (UF, each
 * second) flags are raised by one timerfd on the main loop when their enable
 * bit in register B is set; register C reports them with IRQF, and reading
 * it clears them and lowers IRQ 8. The CMOS bytes that firmware reads for
 * the memory size and the CPU count are filled in.
 *
 * Lock: r->lock guards everything; the timer is re-armed (timerfd_settime,
 * safe from any thread) whenever register A or B changes. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "devices.h"
#include "evloop.h"
#include "layout.h"
#include "log.h"
#include "util.h"
#include "vm.h"

#define CMOS_SIZE    128
#define REG_SEC      0x00
#define REG_SEC_ALM  0x01
#define REG_MIN      0x02
#define REG_MIN_ALM  0x03
#define REG_HOUR     0x04
#define REG_HOUR_ALM 0x05
#define REG_WDAY     0x06
#define REG_MDAY     0x07
#define REG_MON      0x08
#define REG_YEAR     0x09
#define REG_A        0x0a
#define REG_B        0x0b
#define REG_C        0x0c
#define REG_D        0x0d
#define REG_CENTURY  0x32
#define A_UIP        0x80
#define A_RATE       0x0f
#define B_SET        0x80
#define B_PIE        0x40
#define B_AIE        0x20
#define B_UIE        0x10
#define B_BINARY     0x04
#define B_24H        0x02
#define C_IRQF       0x80
#define C_PF         0x40
#define C_AF         0x20
#define C_UF         0x10
#define D_VRT        0x80
#define NS           1000000000LL
#define UIP_NS       244000LL       /* UIP rises this long before the update */

struct rtc {
	struct vm *vm;
	pthread_mutex_t lock;
	uint8_t index;
	uint8_t cmos[CMOS_SIZE];
	int64_t offset;            /* guest time minus host time, in seconds */
	int timer_fd;              /* -1 until attached */
	struct evloop *loop;
	int64_t next_periodic;     /* CLOCK_MONOTONIC ns of the next PF, 0: none */
	int64_t last_second;       /* the guest second whose update was last seen */
	int irq_level;
};

static int64_t clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * NS + ts.tv_nsec;
}

static uint8_t to_reg(const struct rtc *r, unsigned v)
{
	return (r->cmos[REG_B] & B_BINARY) ? (uint8_t)v : (uint8_t)(((v / 10) << 4) | (v % 10));
}

static unsigned from_reg(const struct rtc *r, uint8_t v)
{
	return (r->cmos[REG_B] & B_BINARY) ? v : (unsigned)((v >> 4) * 10 + (v & 0x0f));
}

/* The precise clock, never time(): that one is the coarse clock, which
 * lags the second boundaries the timer is armed for. */
static int64_t host_seconds(void)
{
	return clock_ns(CLOCK_REALTIME) / NS;
}

static int64_t guest_seconds(const struct rtc *r)
{
	return host_seconds() + r->offset;
}

/* Fills the time registers from host time + offset. */
static void latch_time_locked(struct rtc *r)
{
	time_t now = (time_t)guest_seconds(r);
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
		r->offset = (int64_t)guest - host_seconds();
	r->last_second = guest_seconds(r);
}

/* Period of the periodic interrupt for register A's rate select, in ns
 * (0: off). Rates 1 and 2 repeat 8 and 9, as on the chip. */
static int64_t periodic_ns(uint8_t a)
{
	unsigned rs = a & A_RATE;

	if (rs == 0)
		return 0;
	if (rs < 3)
		rs += 7;
	return (NS << (rs - 1)) / 32768;
}

static void update_irq_locked(struct rtc *r)
{
	uint8_t c = r->cmos[REG_C] & (C_PF | C_AF | C_UF);
	uint8_t en = r->cmos[REG_B] & (B_PIE | B_AIE | B_UIE);   /* same bit positions */
	int level = (c & en) != 0;

	if (level)
		r->cmos[REG_C] |= C_IRQF;
	if (level != r->irq_level) {
		r->irq_level = level;
		vm_irq_line(r->vm, IRQ_RTC, level);
	}
}

static bool alarm_matches_locked(struct rtc *r)
{
	static const uint8_t alarm[3] = { REG_SEC_ALM, REG_MIN_ALM, REG_HOUR_ALM };
	static const uint8_t now[3] = { REG_SEC, REG_MIN, REG_HOUR };

	latch_time_locked(r);
	for (unsigned i = 0; i < 3; i++)
		if (r->cmos[alarm[i]] < 0xc0 && r->cmos[alarm[i]] != r->cmos[now[i]])
			return false;
	return true;
}

/* Raises the flags whose time has come (the clock does not run while SET). */
static void advance_locked(struct rtc *r)
{
	int64_t mono = clock_ns(CLOCK_MONOTONIC), secs;
	int64_t period = periodic_ns(r->cmos[REG_A]);

	if (r->next_periodic && mono >= r->next_periodic) {
		r->cmos[REG_C] |= C_PF;
		/* Catch up without a burst: the chip has one flag, not a queue. */
		r->next_periodic += ((mono - r->next_periodic) / period + 1) * period;
	}
	if (r->cmos[REG_B] & B_SET)
		return;
	secs = guest_seconds(r);
	if (secs != r->last_second) {
		r->last_second = secs;
		r->cmos[REG_C] |= C_UF;
		if (alarm_matches_locked(r))
			r->cmos[REG_C] |= C_AF;
	}
}

/* Arms the timer for the next event an enabled interrupt waits for. */
static void rearm_locked(struct rtc *r)
{
	struct itimerspec its = { 0 };
	int64_t period = periodic_ns(r->cmos[REG_A]), next = 0, mono;

	if (r->timer_fd < 0)
		return;
	mono = clock_ns(CLOCK_MONOTONIC);
	if ((r->cmos[REG_B] & B_PIE) && period) {
		if (!r->next_periodic)
			r->next_periodic = mono + period;
		next = r->next_periodic;
	} else {
		r->next_periodic = 0;
	}
	if ((r->cmos[REG_B] & (B_UIE | B_AIE)) && !(r->cmos[REG_B] & B_SET)) {
		int64_t real = clock_ns(CLOCK_REALTIME);
		int64_t second = mono + (NS - real % NS);

		if (!next || second < next)
			next = second;
	}
	if (next) {
		its.it_value.tv_sec = next / NS;
		its.it_value.tv_nsec = next % NS;
	}
	timerfd_settime(r->timer_fd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void timer_cb(void *opaque, int fd, uint32_t events)
{
	struct rtc *r = opaque;
	uint64_t expirations;

	if (read(fd, &expirations, sizeof(expirations)) < 0)
		return;
	pthread_mutex_lock(&r->lock);
	advance_locked(r);
	update_irq_locked(r);
	rearm_locked(r);
	pthread_mutex_unlock(&r->lock);
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
	if (i == REG_A && !(r->cmos[REG_B] & B_SET) &&
	    clock_ns(CLOCK_REALTIME) % NS >= NS - UIP_NS)
		data[0] |= A_UIP;
	if (i == REG_C) {
		/* Flags that came due since the last timer tick count too. */
		advance_locked(r);
		data[0] = r->cmos[REG_C];
		if (data[0] & (C_PF | C_AF | C_UF) & r->cmos[REG_B])
			data[0] |= C_IRQF;
		r->cmos[REG_C] = 0;
		update_irq_locked(r);
	}
out:
	pthread_mutex_unlock(&r->lock);
}

static void rtc_write(void *opaque, uint16_t port, const uint8_t *data, unsigned size)
{
	struct rtc *r = opaque;
	uint8_t i, v = data[0], old;

	pthread_mutex_lock(&r->lock);
	if (port == PORT_CMOS_INDEX) {
		r->index = v;              /* bit 7 masks NMIs on a PC; nothing to do */
		goto out;
	}
	i = r->index & 0x7f;
	switch (i) {
	case REG_A:
		old = r->cmos[REG_A];
		r->cmos[REG_A] = v & 0x7f;  /* UIP is read-only */
		if ((old ^ v) & A_RATE)
			r->next_periodic = 0;   /* a new rate starts a new period */
		rearm_locked(r);
		break;
	case REG_B:
		old = r->cmos[REG_B];
		if ((v & B_SET) == 0 && (old & B_SET))
			commit_time_locked(r);
		else if ((v & B_SET) && !(old & B_SET))
			latch_time_locked(r);
		/* Changing the format re-expresses the time in it. */
		r->cmos[REG_B] = v;
		if ((v ^ old) & (B_BINARY | B_24H) && !(v & B_SET))
			latch_time_locked(r);
		update_irq_locked(r);
		rearm_locked(r);
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
	r->last_second = guest_seconds(r);
}

static void rtc_reset(void *state)
{
	struct rtc *r = state;

	/* The clock keeps its time across a reset, as a battery-backed one does;
	 * RESET clears the interrupt enables and flags. */
	pthread_mutex_lock(&r->lock);
	r->cmos[REG_B] &= (uint8_t)~(B_SET | B_PIE | B_AIE | B_UIE);
	r->cmos[REG_C] = 0;
	r->index = 0;
	r->next_periodic = 0;
	update_irq_locked(r);
	rearm_locked(r);
	pthread_mutex_unlock(&r->lock);
}

static int rtc_create(struct vm *vm, void **state, char *err, size_t errlen)
{
	struct rtc *r = calloc(1, sizeof(*r));
	int ret;

	if (!r)
		return -ENOMEM;
	r->vm = vm;
	r->timer_fd = -1;
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

static int rtc_attach(void *state, struct evloop *loop, char *err, size_t errlen)
{
	struct rtc *r = state;
	int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK), ret;

	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "rtc: timerfd: %s", strerror(-ret));
		return ret;
	}
	ret = evloop_add(loop, fd, EPOLLIN, timer_cb, r);
	if (ret < 0) {
		close(fd);
		snprintf(err, errlen, "rtc: %s", strerror(-ret));
		return ret;
	}
	pthread_mutex_lock(&r->lock);
	r->loop = loop;
	r->timer_fd = fd;
	rearm_locked(r);
	pthread_mutex_unlock(&r->lock);
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
	r->cmos[REG_A] &= 0x7f;
	r->last_second = guest_seconds(r);
	r->next_periodic = 0;
	update_irq_locked(r);
	rearm_locked(r);
	pthread_mutex_unlock(&r->lock);
	return 0;
}

static void rtc_destroy(void *state)
{
	struct rtc *r = state;

	if (r->timer_fd >= 0) {
		evloop_del(r->loop, r->timer_fd);
		close(r->timer_fd);
	}
	pthread_mutex_destroy(&r->lock);
	free(r);
}

const struct device_type rtc_device = {
	.name = "rtc",
	.create = rtc_create,
	.attach = rtc_attach,
	.reset = rtc_reset,
	.save = rtc_save,
	.load = rtc_load,
	.destroy = rtc_destroy,
};
