/* Wall-clock time for delays and bounded waits, read in ring 3: kvmclock's
 * per-vCPU time structure when the hypervisor offers it (one WRMSR through
 * ring 0 to register it), else the TSC calibrated against the i8254 PIT
 * (this host's AMD CPU has no CPUID leaf 0x15/0x16 frequency). */
#include "guest.h"

#define KVM_CPUID_SIGNATURE        0x40000000
#define KVM_CPUID_FEATURES         0x40000001
#define KVM_FEATURE_CLOCKSOURCE    (1u << 0)
#define KVM_FEATURE_CLOCKSOURCE2   (1u << 3)
#define MSR_KVM_SYSTEM_TIME        0x12
#define MSR_KVM_SYSTEM_TIME_NEW    0x4b564d01

#define PIT_CH0      0x40
#define PIT_CMD      0x43
#define PIT_HZ       1193182ULL

struct pvclock_time {
	uint32_t version, pad0;
	uint64_t tsc_timestamp, system_time;
	uint32_t tsc_to_system_mul;
	int8_t tsc_shift;
	uint8_t flags, pad[2];
} __attribute__((packed, aligned(64)));

static struct pvclock_time pvclock;
static int use_pvclock;
static uint64_t tsc_base, tsc_mult;   /* ns = (tsc - base) * mult >> 32 */
static const char *source = "none";

static int kvmclock_msr(uint32_t *msr)
{
	uint32_t r[4];

	cpuid(1, 0, r);
	if (!(r[2] & (1u << 31)))          /* no hypervisor */
		return -1;
	cpuid(KVM_CPUID_SIGNATURE, 0, r);
	if (r[1] != 0x4b4d564b || r[2] != 0x564b4d56 || r[3] != 0x0000004d)
		return -1;                  /* "KVMKVMKVM\0\0\0" */
	if (r[0] < KVM_CPUID_FEATURES)
		return -1;
	cpuid(KVM_CPUID_FEATURES, 0, r);
	if (r[0] & KVM_FEATURE_CLOCKSOURCE2)
		*msr = MSR_KVM_SYSTEM_TIME_NEW;
	else if (r[0] & KVM_FEATURE_CLOCKSOURCE)
		*msr = MSR_KVM_SYSTEM_TIME;
	else
		return -1;
	return 0;
}

static uint64_t pvclock_ns(void)
{
	const volatile struct pvclock_time *p = &pvclock;
	uint32_t v;
	uint64_t ns;

	do {
		v = p->version;
		__asm__ volatile("" ::: "memory");
		uint64_t delta = rdtsc() - p->tsc_timestamp;
		int shift = p->tsc_shift;
		delta = shift < 0 ? delta >> -shift : delta << shift;
		ns = p->system_time + (uint64_t)(((unsigned __int128)delta * p->tsc_to_system_mul) >> 32);
		__asm__ volatile("" ::: "memory");
	} while ((v & 1) || v != p->version);
	return ns;
}

static uint16_t pit_read(void)
{
	outb(PIT_CMD, 0x00);                /* latch channel 0 */
	uint8_t lo = inb(PIT_CH0);
	uint8_t hi = inb(PIT_CH0);
	return (uint16_t)(lo | hi << 8);
}

/* TSC ticks per second measured over about 10 ms of PIT counts; 0 when
 * the PIT does not count. */
static uint64_t pit_calibrate(void)
{
	outb(PIT_CMD, 0x34);                /* channel 0, lo/hi, mode 2 */
	outb(PIT_CH0, 0);
	outb(PIT_CH0, 0);                   /* reload 65536 */
	uint16_t prev = pit_read();
	uint64_t t0 = rdtsc(), ticks = 0;
	unsigned stuck = 0;

	while (ticks < PIT_HZ / 100) {
		uint16_t cur = pit_read();
		if (cur == prev) {
			if (++stuck > 100000)
				return 0;
			continue;
		}
		stuck = 0;
		ticks += (uint16_t)(prev - cur);
		prev = cur;
	}
	return (rdtsc() - t0) * PIT_HZ / ticks;
}

void time_init(void)
{
	uint32_t msr;

	if (kvmclock_msr(&msr) == 0) {
		sys_call(SYS_WRMSR, msr, (uint64_t)(uintptr_t)&pvclock | 1);
		if (pvclock.tsc_to_system_mul) {
			use_pvclock = 1;
			source = "kvmclock";
			return;
		}
	}
	uint64_t hz = pit_calibrate();
	source = "tsc/pit";
	if (!hz) {
		hz = 2000000000ULL;
		source = "tsc (frequency assumed)";
	}
	tsc_mult = (1000000000ULL << 32) / hz;   /* fits: 1e9 << 32 < 2^64 */
	tsc_base = rdtsc();
}

uint64_t time_ns(void)
{
	if (use_pvclock)
		return pvclock_ns();
	return (uint64_t)(((unsigned __int128)(rdtsc() - tsc_base) * tsc_mult) >> 32);
}

void delay_us(uint64_t us)
{
	uint64_t end = time_ns() + us * 1000;

	while (time_ns() < end)
		cpu_relax();
}

const char *time_source(void)
{
	return source;
}
