/* memtest: writes an address-derived pattern over all usable RAM at and
 * above 1 MiB (but the guest's own image), reads it back (README.md).
 * memtest.stride_kib=K tests only the first 4 KiB of every K KiB: the
 * first touch of a page costs the host a fault (about 7 us here), which
 * dominates a full pass over gigabytes.
 * Everything runs in ring 3, natively; ring 0 only reloads CR3 once RAM
 * above 4 GiB is mapped. */
#include "lib/guest.h"

#define MIB            (1UL << 20)
#define GIB            (1UL << 30)
#define MAP_LIMIT_GIB  64              /* RAM beyond this is not tested */
#define MAX_RANGES     (2 * BOOTINFO_MAX_MAP)

struct range {
	uint64_t lo, hi;
};

/* Page directories for 4 GiB - 64 GiB, filled before they are linked in. */
static uint64_t high_pd[MAP_LIMIT_GIB - 4][512] __attribute__((aligned(4096)));

static uint64_t pattern(uint64_t a)
{
	return a * 0x9e3779b97f4a7c15ULL ^ 0x5851f42d4c957f2dULL;
}

static unsigned add_range(struct range *r, unsigned n, uint64_t lo, uint64_t hi)
{
	lo = (lo + 7) & ~7ULL;
	hi &= ~7ULL;
	if (lo < hi && n < MAX_RANGES)
		r[n++] = (struct range){ lo, hi };
	return n;
}

/* Usable RAM from 1 MiB up to the mapping limit, without the image. */
static unsigned collect(struct range *r)
{
	uint64_t img_lo = (uintptr_t)_image_start, img_hi = (uintptr_t)_image_end;
	unsigned n = 0;

	for (unsigned i = 0; i < bootinfo.nmap; i++) {
		const struct memmap_entry *e = &bootinfo.map[i];
		if (e->type != E820_RAM || !e->size)
			continue;
		uint64_t lo = e->addr > MIB ? e->addr : MIB;
		uint64_t hi = e->addr + e->size;
		if (hi > MAP_LIMIT_GIB * GIB)
			hi = MAP_LIMIT_GIB * GIB;
		if (lo >= hi)
			continue;
		if (img_hi <= lo || img_lo >= hi) {
			n = add_range(r, n, lo, hi);
		} else {
			n = add_range(r, n, lo, img_lo);
			n = add_range(r, n, img_hi, hi);
		}
	}
	return n;
}

static void map_high(const struct range *r, unsigned n)
{
	int changed = 0;

	for (unsigned i = 0; i < n; i++) {
		if (r[i].hi <= 4 * GIB)
			continue;
		uint64_t first = (r[i].lo > 4 * GIB ? r[i].lo : 4 * GIB) / GIB;
		uint64_t last = (r[i].hi - 1) / GIB;
		for (uint64_t g = first; g <= last; g++) {
			if (boot_pdpt[g] & PTE_P)
				continue;
			uint64_t *pd = high_pd[g - 4];
			for (uint64_t k = 0; k < 512; k++)
				pd[k] = (g * GIB + k * (2 * MIB)) | PTE_P | PTE_RW | PTE_US | PTE_PS;
			boot_pdpt[g] = (uintptr_t)pd | PTE_P | PTE_RW | PTE_US;
			changed = 1;
		}
	}
	if (changed)
		sys_call(SYS_FLUSH_TLB, 0, 0);
}

/* The pieces of a range a stride selects: the first 4 KiB (at most) of
 * every stride-aligned block, or the whole range for stride 0. */
struct walk {
	const struct range *r;
	uint64_t stride, base;
};

static int walk_next(struct walk *w, uint64_t *lo, uint64_t *hi)
{
	const struct range *r = w->r;

	while (w->base < r->hi) {
		uint64_t b = w->base;
		if (!w->stride) {
			w->base = r->hi;
			*lo = r->lo;
			*hi = r->hi;
			return 1;
		}
		w->base += w->stride;
		*lo = b > r->lo ? b : r->lo;
		*hi = b + 4096 < r->hi ? b + 4096 : r->hi;
		if (*lo < *hi)
			return 1;
	}
	return 0;
}

static struct walk walk_start(const struct range *r, uint64_t stride)
{
	return (struct walk){ r, stride, stride ? r->lo & ~(stride - 1) : r->lo };
}

/* Returns the bytes written. */
static uint64_t fill(const struct range *r, unsigned n, uint64_t stride)
{
	uint64_t bytes = 0, lo, hi;

	for (unsigned i = 0; i < n; i++)
		for (struct walk w = walk_start(&r[i], stride); walk_next(&w, &lo, &hi);) {
			for (uint64_t a = lo; a < hi; a += 8)
				*(volatile uint64_t *)a = pattern(a);
			bytes += hi - lo;
		}
	return bytes;
}

/* 0 and the checksum of all words, or the first address that differs. */
static uint64_t verify(const struct range *r, unsigned n, uint64_t stride, uint64_t *sum)
{
	uint64_t s = 0, lo, hi;

	for (unsigned i = 0; i < n; i++)
		for (struct walk w = walk_start(&r[i], stride); walk_next(&w, &lo, &hi);)
			for (uint64_t a = lo; a < hi; a += 8) {
				uint64_t v = *(volatile uint64_t *)a;
				if (v != pattern(a))
					return a;
				s = (s << 1 | s >> 63) ^ v;
			}
	*sum = s;
	return 0;
}

int main(void)
{
	static struct range r[MAX_RANGES];
	uint64_t total = 0, sum = 0, stride_kib = 0, tested;

	if (cmdline_get_u64(bootinfo.cmdline, "memtest.stride_kib", &stride_kib) == -22 ||
	    (stride_kib && (stride_kib < 4 || (stride_kib & (stride_kib - 1))))) {
		printf("memtest: FAIL memtest.stride_kib wants a power of two >= 4\n");
		return GUEST_EXIT_FAIL;
	}
	time_init();
	unsigned n = collect(r);
	for (unsigned i = 0; i < n; i++) {
		printf("memtest: range 0x%010lx-0x%010lx\n", r[i].lo, r[i].hi - 1);
		total += r[i].hi - r[i].lo;
	}
	if (!n) {
		printf("memtest: FAIL no usable RAM above 1 MiB\n");
		return GUEST_EXIT_FAIL;
	}
	map_high(r, n);
	uint64_t t0 = time_ns();
	tested = fill(r, n, stride_kib << 10);
	uint64_t t1 = time_ns();
	uint64_t bad = verify(r, n, stride_kib << 10, &sum);
	uint64_t t2 = time_ns();
	if (stride_kib)
		printf("memtest: tested %lu MiB in %u ranges (4 KiB in every %lu KiB of %lu MiB)\n",
		       tested / MIB, n, stride_kib, total / MIB);
	else
		printf("memtest: tested %lu MiB in %u ranges\n", total / MIB, n);
	printf("memtest: write %lu ms, verify %lu ms (%s)\n", (t1 - t0) / 1000000,
	       (t2 - t1) / 1000000, time_source());
	if (bad) {
		printf("memtest: FAIL at 0x%lx: read 0x%016lx, wrote 0x%016lx\n", bad,
		       *(volatile uint64_t *)bad, pattern(bad));
		return GUEST_EXIT_FAIL;
	}
	printf("memtest: checksum 0x%016lx\n", sum);
	printf("memtest: ok\n");
	return 0;
}
