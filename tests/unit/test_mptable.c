/* The MP tables as an OS booted with acpi=off finds them: scan
 * 0xf0000-0xfffff on 16-byte boundaries for "_MP_" (Intel MP Specification
 * 1.4, section 4), follow it to the configuration table, check both
 * checksums and every entry. Offsets are written out from the
 * specification, independently of vmm/mptable.c's structures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <cmocka.h>

#include "guest_mem.h"
#include "layout.h"
#include "mptable.h"
#include "platform.h"

#define TEST_RAM (16ULL << 20)

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)rd16(p) | (uint32_t)rd16(p + 2) << 16; }

static uint8_t sum8(const uint8_t *p, size_t len)
{
	uint8_t s = 0;

	while (len--)
		s += *p++;
	return s;
}

static void make_platform(struct platform_desc *pd, unsigned ncpus)
{
	memset(pd, 0, sizeof(*pd));
	pd->ncpus = ncpus;
	/* Ids in reverse order: the BSP flag must follow vCPU 0, not id 0. */
	for (unsigned i = 0; i < ncpus; i++)
		pd->apic_id[i] = (uint8_t)(ncpus - 1 - i);
	pd->ioapic_id = (uint8_t)ncpus;
	pd->ioapic_addr = IOAPIC_ADDR;
	pd->ioapic_pins = 24;
	pd->lapic_addr = LAPIC_ADDR;
	pd->com1_port = PORT_COM1;
	pd->com1_irq = IRQ_COM1;
}

static uint64_t scan_floating_pointer(const struct guest_mem *gm)
{
	uint64_t found = 0;

	for (uint64_t gpa = 0xf0000; gpa < 0x100000; gpa += 16) {
		const uint8_t *p = guest_mem_ptr(gm, gpa, 16);

		if (p && !memcmp(p, "_MP_", 4) && p[8] == 1 && sum8(p, 16) == 0) {
			assert_int_equal(found, 0);    /* exactly one */
			found = gpa;
		}
	}
	return found;
}

struct seen {
	unsigned cpus, bsps, buses, ioapics, ints, locals;
	unsigned isa_irq_seen[16];
	int lint0_extint, lint1_nmi;
};

static void check_entries(const struct platform_desc *pd, const uint8_t *e, unsigned count,
			  const uint8_t *end, struct seen *s)
{
	int last_type = -1;

	for (unsigned i = 0; i < count; i++) {
		unsigned len = e[0] == 0 ? 20 : 8;

		assert_true(e + len <= end);
		/* Entries sorted by type, as the specification requires. */
		assert_true((int)e[0] >= last_type);
		last_type = e[0];
		switch (e[0]) {
		case 0:  /* processor */
			assert_int_equal(e[1], pd->apic_id[s->cpus]);
			assert_int_equal(e[2], 0x14);             /* KVM's local APIC */
			assert_true(e[3] & 1);                    /* enabled */
			if (e[3] & 2) {
				assert_int_equal(s->cpus, 0);     /* BSP is vCPU 0 */
				s->bsps++;
			}
			assert_int_not_equal(rd32(e + 4) & 0xf00, 0);  /* a family */
			assert_true(rd32(e + 8) & (1u << 9));     /* APIC on chip */
			s->cpus++;
			break;
		case 1:  /* bus */
			assert_int_equal(e[1], 0);
			assert_memory_equal(e + 2, "ISA   ", 6);
			s->buses++;
			break;
		case 2:  /* I/O APIC */
			assert_int_equal(e[1], pd->ioapic_id);
			assert_int_equal(e[2], 0x11);
			assert_true(e[3] & 1);
			assert_int_equal(rd32(e + 4), pd->ioapic_addr);
			s->ioapics++;
			break;
		case 3:  /* I/O interrupt assignment */
			assert_int_equal(e[1], 0);                /* INT */
			assert_int_equal(rd16(e + 2), 0);         /* conforms to ISA */
			assert_int_equal(e[4], 0);                /* ISA bus */
			assert_true(e[5] < 16);
			assert_int_equal(e[6], pd->ioapic_id);
			assert_int_equal(e[7], e[5]);             /* identity routing */
			s->isa_irq_seen[e[5]]++;
			s->ints++;
			break;
		case 4:  /* local interrupt assignment */
			assert_int_equal(e[6], 0xff);             /* every local APIC */
			if (e[1] == 3 && e[7] == 0)
				s->lint0_extint++;
			else if (e[1] == 1 && e[7] == 1)
				s->lint1_nmi++;
			else
				fail_msg("local interrupt type %u on LINT%u", e[1], e[7]);
			s->locals++;
			break;
		default:
			fail_msg("entry %u: type %u", i, e[0]);
		}
		e += len;
	}
	assert_ptr_equal(e, end);
}

static void build_and_check(unsigned ncpus)
{
	struct guest_mem gm;
	struct platform_desc pd;
	struct seen s = { 0 };
	const uint8_t *fp, *cfg;
	uint64_t fp_gpa, cfg_gpa;
	uint16_t len;

	make_platform(&pd, ncpus);
	assert_int_equal(guest_mem_init(&gm, TEST_RAM), 0);
	memset(guest_mem_ptr(&gm, MPTABLE_ADDR, MPTABLE_SIZE), 0x5a, MPTABLE_SIZE);
	assert_int_equal(mptable_build(&gm, &pd), 0);

	fp_gpa = scan_floating_pointer(&gm);
	assert_int_not_equal(fp_gpa, 0);
	fp = guest_mem_ptr(&gm, fp_gpa, 16);
	assert_int_equal(fp[9], 4);                 /* spec revision 1.4 */
	assert_int_equal(fp[11], 0);                /* feature 1: table present */
	assert_int_equal(fp[12] & 0x80, 0);         /* no IMCR */

	cfg_gpa = rd32(fp + 4);
	assert_true(cfg_gpa >= MPTABLE_ADDR && cfg_gpa + 44 <= MPTABLE_ADDR + MPTABLE_SIZE);
	cfg = guest_mem_ptr(&gm, cfg_gpa, 44);
	assert_memory_equal(cfg, "PCMP", 4);
	len = rd16(cfg + 4);
	assert_true(cfg_gpa + len <= MPTABLE_ADDR + MPTABLE_SIZE);
	cfg = guest_mem_ptr(&gm, cfg_gpa, len);
	assert_int_equal(cfg[6], 4);
	assert_int_equal(sum8(cfg, len), 0);
	assert_memory_equal(cfg + 8, "DROVER  ", 8);
	assert_int_equal(rd32(cfg + 36), pd.lapic_addr);
	assert_int_equal(rd16(cfg + 40), 0);        /* no extended table */
	assert_int_equal(cfg[42], 0);

	check_entries(&pd, cfg + 44, rd16(cfg + 34), cfg + len, &s);
	assert_int_equal(s.cpus, ncpus);
	assert_int_equal(s.bsps, 1);
	assert_int_equal(s.buses, 1);
	assert_int_equal(s.ioapics, 1);
	for (unsigned irq = 0; irq < 16; irq++)
		assert_int_equal(s.isa_irq_seen[irq], irq == 2 ? 0 : 1);
	assert_int_equal(s.ints, 15);
	assert_int_equal(s.lint0_extint, 1);
	assert_int_equal(s.lint1_nmi, 1);
	assert_int_equal(s.locals, 2);
	guest_mem_free(&gm);
}

static void test_one_cpu(void **state) { build_and_check(1); }
static void test_three_cpus(void **state) { build_and_check(3); }
static void test_max_cpus(void **state) { build_and_check(PLATFORM_MAX_CPUS); }

/* Rebuilding for fewer vCPUs leaves no trace of the bigger table. */
static void test_rebuild_smaller(void **state)
{
	struct guest_mem gm;
	struct platform_desc pd;
	const uint8_t *fp, *cfg;

	assert_int_equal(guest_mem_init(&gm, TEST_RAM), 0);
	make_platform(&pd, 200);
	assert_int_equal(mptable_build(&gm, &pd), 0);
	make_platform(&pd, 2);
	assert_int_equal(mptable_build(&gm, &pd), 0);
	fp = guest_mem_ptr(&gm, scan_floating_pointer(&gm), 16);
	cfg = guest_mem_ptr(&gm, rd32(fp + 4), 44);
	assert_int_equal(rd16(cfg + 34), 2 + 1 + 1 + 15 + 2);
	assert_int_equal(cfg[44 + 1], 1);        /* vCPU 0's APIC id */
	guest_mem_free(&gm);
}

static void test_bad_input(void **state)
{
	struct guest_mem gm;
	struct platform_desc pd;

	assert_int_equal(guest_mem_init(&gm, TEST_RAM), 0);
	make_platform(&pd, 1);
	pd.ncpus = 0;
	assert_int_equal(mptable_build(&gm, &pd), -EINVAL);
	pd.ncpus = PLATFORM_MAX_CPUS + 1;
	assert_int_equal(mptable_build(&gm, &pd), -EINVAL);
	make_platform(&pd, 1);
	pd.ioapic_pins = 8;
	assert_int_equal(mptable_build(&gm, &pd), -EINVAL);
	make_platform(&pd, 1);
	pd.lapic_addr = 1ULL << 32;
	assert_int_equal(mptable_build(&gm, &pd), -ERANGE);
	guest_mem_free(&gm);

	/* 960 KiB of RAM ends inside the MP table area. */
	assert_int_equal(guest_mem_init(&gm, 960 << 10), 0);
	make_platform(&pd, 1);
	assert_int_equal(mptable_build(&gm, &pd), -EFAULT);
	guest_mem_free(&gm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_cpu),
		cmocka_unit_test(test_three_cpus),
		cmocka_unit_test(test_max_cpus),
		cmocka_unit_test(test_rebuild_smaller),
		cmocka_unit_test(test_bad_input),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
