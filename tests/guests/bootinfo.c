/* bootinfo: prints what the loader passed and checks it (README.md). */
#include "lib/guest.h"

#define MIB        (1UL << 20)
#define GIB        (1UL << 30)
#define LEGACY_LO  0xa0000ULL
#define LEGACY_HI  0x100000ULL

static unsigned failures;

static void check(int ok, const char *what, const char *detail)
{
	if (ok) {
		printf("bootinfo: %s ok\n", what);
	} else {
		printf("bootinfo: FAIL %s: %s\n", what, detail);
		failures++;
	}
}

static uint64_t entry_end(const struct memmap_entry *e)
{
	return e->addr + e->size;
}

/* Bytes of [lo, hi) covered by entries of type `type`. */
static uint64_t covered(const struct memmap_entry *m, unsigned n, uint32_t type,
			uint64_t lo, uint64_t hi)
{
	uint64_t sum = 0;

	for (unsigned i = 0; i < n; i++) {
		if (m[i].type != type)
			continue;
		uint64_t a = m[i].addr > lo ? m[i].addr : lo;
		uint64_t b = entry_end(&m[i]) < hi ? entry_end(&m[i]) : hi;
		if (a < b)
			sum += b - a;
	}
	return sum;
}

/* The entry that holds all of [addr, addr + len), or NULL. */
static const struct memmap_entry *holder(const struct memmap_entry *m, unsigned n,
					 uint64_t addr, uint64_t len)
{
	for (unsigned i = 0; i < n; i++)
		if (m[i].size && addr >= m[i].addr && addr + len <= entry_end(&m[i]))
			return &m[i];
	return NULL;
}

static unsigned print_map(struct memmap_entry *sorted)
{
	unsigned n = 0;

	for (unsigned i = 0; i < bootinfo.nmap; i++) {
		const struct memmap_entry *e = &bootinfo.map[i];
		if (!e->size) {
			printf("bootinfo: map %2u empty entry (type %u), ignored\n", i, e->type);
			continue;
		}
		printf("bootinfo: map %2u 0x%016lx-0x%016lx %s\n", i, e->addr,
		       entry_end(e) - 1, memmap_type_name(e->type));
		sorted[n++] = *e;
	}
	for (unsigned i = 1; i < n; i++)
		for (unsigned j = i; j > 0 && sorted[j].addr < sorted[j - 1].addr; j--) {
			struct memmap_entry t = sorted[j];
			sorted[j] = sorted[j - 1];
			sorted[j - 1] = t;
		}
	return n;
}

static void check_map(const struct memmap_entry *m, unsigned n, const char *cl)
{
	char msg[96];
	int sorted = 1, overlap = -1;

	for (unsigned i = 0, k = 0; i < bootinfo.nmap; i++) {
		if (!bootinfo.map[i].size)
			continue;
		if (bootinfo.map[i].addr != m[k++].addr)
			sorted = 0;
	}
	for (unsigned i = 1; i < n; i++)
		if (m[i].addr < entry_end(&m[i - 1]))
			overlap = (int)i;
	check(n > 0, "map has entries", "the memory map is empty");
	snprintf(msg, sizeof(msg), "0x%lx-0x%lx overlaps 0x%lx",
		 overlap > 0 ? m[overlap - 1].addr : 0,
		 overlap > 0 ? entry_end(&m[overlap - 1]) - 1 : 0,
		 overlap > 0 ? m[overlap].addr : 0);
	check(overlap < 0, "map non-overlapping", msg);
	if (sorted)
		check(1, "map sorted", "");
	else if (cmdline_has(cl, "bootinfo.sorted_map"))
		check(0, "map sorted", "entries are not in address order");
	else
		printf("bootinfo: map not sorted (the boot protocols allow it)\n");
}

static void check_ram(const struct memmap_entry *m, unsigned n, const char *cl)
{
	char msg[128];
	uint64_t total = covered(m, n, E820_RAM, 0, ~0ULL), mib;

	printf("bootinfo: usable RAM %lu KiB\n", total >> 10);
	if (cmdline_get_u64(cl, "bootinfo.mem_mib", &mib) == 0) {
		snprintf(msg, sizeof(msg), "%lu KiB usable, want %lu MiB less at most 1 MiB",
			 total >> 10, mib);
		check(total <= mib * MIB && total + MIB >= mib * MIB,
		      "usable RAM matches bootinfo.mem_mib", msg);
	}
	uint64_t legacy = covered(m, n, E820_RAM, LEGACY_LO, LEGACY_HI);
	snprintf(msg, sizeof(msg), "%lu bytes usable there", legacy);
	check(legacy == 0, "no usable RAM in [0xa0000, 0x100000)", msg);
	uint64_t hole = covered(m, n, E820_RAM, 3 * GIB, 4 * GIB);
	snprintf(msg, sizeof(msg), "%lu bytes usable there", hole);
	check(hole == 0, "no usable RAM in [3 GiB, 4 GiB)", msg);
	uint64_t high = covered(m, n, E820_RAM, 4 * GIB, ~0ULL);
	if (cmdline_get_u64(cl, "bootinfo.mem_mib", &mib) != 0) {
		printf("bootinfo: usable RAM above 4 GiB %lu MiB\n", high / MIB);
	} else if (mib > 3072) {
		snprintf(msg, sizeof(msg), "%lu MiB there, want %lu MiB", high / MIB,
			 mib - 3072);
		/* The VMM may end low RAM below 3 GiB (drover does at the PCI
		 * hole, 3 GiB): at least what does not fit under 3 GiB. */
		check(high + MIB >= (mib - 3072) * MIB, "RAM above 4 GiB present", msg);
	} else {
		snprintf(msg, sizeof(msg), "%lu MiB there", high / MIB);
		check(high == 0, "no RAM above 4 GiB", msg);
	}
}

static void check_initrd(const struct memmap_entry *m, unsigned n, const char *cl)
{
	char msg[128];
	uint64_t want_size, want_crc;
	int have_size = cmdline_get_u64(cl, "bootinfo.initrd_size", &want_size) == 0;
	int have_crc = cmdline_get_u64(cl, "bootinfo.initrd_crc32", &want_crc) == 0;
	uint64_t a = bootinfo.initrd_paddr, len = bootinfo.initrd_size;

	if (!a && !len) {
		printf("bootinfo: no initrd\n");
		check(!have_size && !have_crc, "initrd present", "the loader passed none");
		return;
	}
	printf("bootinfo: initrd 0x%lx-0x%lx (%lu bytes)\n", a, a + len - 1, len);
	const struct memmap_entry *e = holder(m, n, a, len);
	snprintf(msg, sizeof(msg), "it is in %s", e ? memmap_type_name(e->type) : "no map entry");
	check(e && e->type == E820_RAM, "initrd in usable RAM", msg);
	uint64_t img_lo = (uintptr_t)_image_start, img_hi = (uintptr_t)_image_end;
	snprintf(msg, sizeof(msg), "the image is at 0x%lx-0x%lx", img_lo, img_hi - 1);
	check(a + len <= img_lo || a >= img_hi, "initrd clear of the guest image", msg);
	if (have_size) {
		snprintf(msg, sizeof(msg), "%lu bytes, want %lu", len, want_size);
		check(len == want_size, "initrd size", msg);
	}
	if (have_crc) {
		if (a + len > 0x100000000ULL) {
			check(0, "initrd crc32", "it lies above 4 GiB, which this guest does not map");
			return;
		}
		uint32_t crc = crc32_ieee(phys(a), len);
		snprintf(msg, sizeof(msg), "0x%08x, want 0x%08lx", crc, want_crc);
		check(crc == want_crc, "initrd crc32", msg);
	}
}

static void check_cmdline(const struct memmap_entry *m, unsigned n)
{
	char msg[96];
	uint64_t a = bootinfo.cmdline_paddr;

	if (!a) {
		printf("bootinfo: no command line\n");
		return;
	}
	const struct memmap_entry *e = holder(m, n, a, bootinfo.cmdline_len + 1);
	int ram = e && (e->type == E820_RAM || e->type == E820_ACPI || e->type == E820_NVS);
	snprintf(msg, sizeof(msg), "0x%lx is in %s", a, e ? memmap_type_name(e->type) : "no map entry");
	check(ram, "command line in RAM", msg);
}

int main(void)
{
	static struct memmap_entry sorted[BOOTINFO_MAX_MAP];
	const char *cl = bootinfo.cmdline;

	printf("bootinfo: entry %s\n", boot_kind_name(bootinfo.kind));
	printf("bootinfo: cmdline '%s'\n", cl);
	unsigned n = print_map(sorted);
	check_map(sorted, n, cl);
	check_ram(sorted, n, cl);
	check_initrd(sorted, n, cl);
	check_cmdline(sorted, n);
	if (failures) {
		printf("bootinfo: %u checks failed\n", failures);
		return GUEST_EXIT_FAIL;
	}
	printf("bootinfo: all checks passed\n");
	return 0;
}
