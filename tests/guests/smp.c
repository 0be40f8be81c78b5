/* smp: counts the CPUs the firmware tables describe and starts every AP
 * with INIT-SIPI-SIPI through the xAPIC (README.md). */
#include "lib/guest.h"

#define AP_MAX            256
#define LAPIC_ID          0x020
#define LAPIC_SVR         0x0f0
#define LAPIC_ICR_LO      0x300
#define LAPIC_ICR_HI      0x310
#define ICR_BUSY          (1u << 12)
#define ICR_INIT          0x00004500u   /* INIT, level assert */
#define ICR_STARTUP       0x00004600u   /* start-up, vector in bits 0-7 */
#define MADT_LAPIC        0
#define MADT_LAPIC_ADDR   5
#define MADT_ENABLED      1u
#define TRAMPOLINE_LO     0x1000ULL
#define TRAMPOLINE_HI     0x9f000ULL
#define CHECKIN_WAIT_NS   2000000000ULL

/* Shared with smp_ap.S; the APs write them. */
volatile uint64_t ap_lapic_base;
volatile uint32_t ap_next_slot, ap_checked_in;
volatile uint32_t ap_ids[AP_MAX];

extern char ap_trampoline_start[], ap_trampoline_end[], ap_trampoline_gdt_desc[];
extern char gdt_desc[];

struct cpus {
	unsigned n;
	uint8_t id[AP_MAX];
};

static int madt_read(uint64_t *lapic, struct cpus *c)
{
	const struct acpi_header *h = acpi_find_table("APIC", 0);
	if (!h)
		return -1;
	const uint8_t *m = (const uint8_t *)h, *end = m + h->length;
	*lapic = *(const uint32_t *)(m + 36);
	for (const uint8_t *e = m + 44; e + 2 <= end && e[1] >= 2 && e + e[1] <= end; e += e[1]) {
		if (e[0] == MADT_LAPIC && e[1] >= 8 &&
		    (*(const uint32_t *)(e + 4) & MADT_ENABLED) && c->n < AP_MAX)
			c->id[c->n++] = e[3];
		if (e[0] == MADT_LAPIC_ADDR && e[1] >= 12)
			*lapic = *(const uint64_t *)(e + 4);
	}
	return 0;
}

/* MP floating pointer: EBDA's first KiB, the last KiB of base memory, or
 * the BIOS area 0xf0000-0xfffff (MP specification 1.4, 4.0). */
static const uint8_t *mpf_scan(uint64_t lo, uint64_t hi)
{
	for (uint64_t a = lo; a + 16 <= hi; a += 16) {
		const uint8_t *p = phys(a);
		if (memcmp(p, "_MP_", 4) == 0 && p[8] == 1 && acpi_sum(p, 16) == 0)
			return p;
	}
	return NULL;
}

static int mptable_read(struct cpus *c)
{
	uint64_t ebda = (uint64_t)*(const volatile uint16_t *)phys(0x40e) << 4;
	const uint8_t *mpf = NULL;
	if (ebda >= 0x80000 && ebda < 0xa0000)
		mpf = mpf_scan(ebda, ebda + 1024);
	if (!mpf)
		mpf = mpf_scan(0x9fc00, 0xa0000);
	if (!mpf)
		mpf = mpf_scan(0xf0000, 0x100000);
	if (!mpf)
		return -1;
	uint32_t cfg_addr = *(const uint32_t *)(mpf + 4);
	if (!cfg_addr) {
		printf("smp: MP table uses default configuration %u\n", mpf[11]);
		return -1;
	}
	const uint8_t *cfg = phys(cfg_addr);
	uint16_t len = *(const uint16_t *)(cfg + 4);
	if (memcmp(cfg, "PCMP", 4) != 0 || len < 44 || acpi_sum(cfg, len) != 0) {
		printf("smp: FAIL MP configuration table at 0x%x is invalid\n", cfg_addr);
		return -2;
	}
	/* Walked by the base table length, not the entry count: QEMU's
	 * firmware (qboot) leaves the count 0, and Linux reads by length too. */
	const uint8_t *e = cfg + 44, *end = cfg + len;
	while (e < end) {
		if (e[0] == 0) {
			if (e + 20 > end)
				break;
			if ((e[3] & 1) && c->n < AP_MAX)
				c->id[c->n++] = e[1];
			e += 20;
		} else {
			e += 8;
		}
	}
	return 0;
}

static int same_ids(const struct cpus *a, const struct cpus *b)
{
	if (a->n != b->n)
		return 0;
	for (unsigned i = 0; i < a->n; i++) {
		unsigned j = 0;
		while (j < b->n && b->id[j] != a->id[i])
			j++;
		if (j == b->n)
			return 0;
	}
	return 1;
}

/* The lowest page below 1 MiB that usable RAM covers whole. */
static uint64_t trampoline_page(void)
{
	for (uint64_t a = TRAMPOLINE_LO; a < TRAMPOLINE_HI; a += 4096)
		for (unsigned i = 0; i < bootinfo.nmap; i++) {
			const struct memmap_entry *e = &bootinfo.map[i];
			if (e->type == E820_RAM && a >= e->addr && a + 4096 <= e->addr + e->size)
				return a;
		}
	return 0;
}

static int icr_send(uint64_t lapic, uint8_t dest, uint32_t lo)
{
	mmio_write32(lapic + LAPIC_ICR_HI, (uint32_t)dest << 24);
	mmio_write32(lapic + LAPIC_ICR_LO, lo);
	uint64_t end = time_ns() + 10000000;
	while (mmio_read32(lapic + LAPIC_ICR_LO) & ICR_BUSY)
		if (time_ns() > end)
			return -1;
	return 0;
}

static void start_aps(uint64_t lapic, const struct cpus *madt, uint8_t bsp, uint64_t page)
{
	for (unsigned i = 0; i < madt->n; i++)
		if (madt->id[i] != bsp && icr_send(lapic, madt->id[i], ICR_INIT) < 0)
			printf("smp: INIT to apic %u stays pending\n", madt->id[i]);
	delay_us(10000);
	for (int round = 0; round < 2; round++) {
		for (unsigned i = 0; i < madt->n; i++)
			if (madt->id[i] != bsp &&
			    icr_send(lapic, madt->id[i], ICR_STARTUP | (uint32_t)(page >> 12)) < 0)
				printf("smp: SIPI to apic %u stays pending\n", madt->id[i]);
		delay_us(200);
	}
}

static void sort_ids(uint32_t *ids, unsigned n)
{
	for (unsigned i = 1; i < n; i++)
		for (unsigned j = i; j > 0 && ids[j] < ids[j - 1]; j--) {
			uint32_t t = ids[j];
			ids[j] = ids[j - 1];
			ids[j - 1] = t;
		}
}

int main(void)
{
	static struct cpus madt, mpt, seen;
	const char *cl = bootinfo.cmdline;
	uint64_t lapic = 0, expect;
	int fail = 0;

	if (madt_read(&lapic, &madt) < 0) {
		printf("smp: FAIL no MADT found\n");
		return GUEST_EXIT_FAIL;
	}
	printf("smp: %u cpus in MADT, local APICs at 0x%lx\n", madt.n, lapic);
	int mp = mptable_read(&mpt);
	if (mp == 0) {
		printf("smp: %u cpus in MP table\n", mpt.n);
		if (!same_ids(&madt, &mpt)) {
			printf("smp: FAIL the MP table and the MADT list different CPUs\n");
			fail = 1;
		}
	} else if (mp == -2) {
		fail = 1;
	}
	if (!lapic || lapic >= 0x100000000ULL) {
		printf("smp: FAIL local APIC address 0x%lx is not usable\n", lapic);
		return GUEST_EXIT_FAIL;
	}
	uint64_t page = trampoline_page();
	if (!page) {
		printf("smp: FAIL no usable page below 1 MiB for the AP trampoline\n");
		return GUEST_EXIT_FAIL;
	}

	time_init();
	uint8_t bsp = (uint8_t)(mmio_read32(lapic + LAPIC_ID) >> 24);
	ap_lapic_base = lapic;
	ap_ids[0] = bsp;
	ap_next_slot = 1;
	ap_checked_in = 1;
	uint8_t *t = phys(page);
	memcpy(t, ap_trampoline_start, (size_t)(ap_trampoline_end - ap_trampoline_start));
	memcpy(t + (ap_trampoline_gdt_desc - ap_trampoline_start), gdt_desc, 6);
	mmio_write32(lapic + LAPIC_SVR, 0x1ff);   /* software-enable, spurious 0xff */
	printf("smp: bsp apic id %u, trampoline at 0x%lx\n", bsp, page);

	start_aps(lapic, &madt, bsp, page);
	uint64_t end = time_ns() + CHECKIN_WAIT_NS;
	while (ap_checked_in < madt.n && time_ns() < end)
		cpu_relax();

	unsigned n = ap_checked_in;
	printf("smp: %u/%u cpus checked in\n", n, madt.n);
	uint32_t ids[AP_MAX];
	for (unsigned i = 0; i < n && i < AP_MAX; i++)
		ids[i] = ap_ids[i];
	sort_ids(ids, n);
	char line[4 * AP_MAX + 1];
	size_t len = 0;
	for (unsigned i = 0; i < n; i++) {
		len += (size_t)snprintf(line + len, sizeof(line) - len, " %u", ids[i]);
		if (i < AP_MAX)
			seen.id[seen.n++] = (uint8_t)ids[i];
	}
	line[len] = '\0';
	printf("smp: apic ids%s\n", line);
	if (n != madt.n || !same_ids(&madt, &seen)) {
		printf("smp: FAIL the CPUs that checked in are not those of the MADT\n");
		fail = 1;
	}
	if (cmdline_get_u64(cl, "smp.expect", &expect) == 0 && expect != n) {
		printf("smp: FAIL smp.expect=%lu but %u cpus checked in\n", expect, n);
		fail = 1;
	}
	if (fail)
		return GUEST_EXIT_FAIL;
	printf("smp: ok\n");
	return 0;
}
