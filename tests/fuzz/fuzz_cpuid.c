/* fuzz_cpuid: bytes -> cpuid_mask_parse (the --cpu-features list), and the
 * mask it gives applied by cpuid_setup_vcpu to a CPUID table whose register
 * values come from the input too.
 *
 * Input: the feature list up to the first NUL byte; after it, one byte of
 * settings (bit 0: AMD vendor, else Intel; bit 1: leaf 0xB lists its core
 * subleaf), one byte for the vCPU count, then the table's register values
 * (repeated as needed; all ones when there are none).
 *
 * Beyond the sanitizers: a list that parses gives a mask within its bounds,
 * a refused one a message; and after cpuid_setup_vcpu a feature the mask
 * turns off is off (whatever the topology code set), a feature the mask
 * turns on is on only if the table had it or the topology sets it (the
 * hypervisor, HTT and CmpLegacy bits), and without XSAVE leaf 0xD is
 * empty. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpuid.h"

#define CHECK(cond, ...) do { \
	if (!(cond)) { \
		fprintf(stderr, "fuzz_cpuid: broken invariant: " __VA_ARGS__); \
		fprintf(stderr, "\n"); \
		abort(); \
	} \
} while (0)

#define SIG KVM_CPUID_FLAG_SIGNIFCANT_INDEX
#define MAX_ENTRIES 64

struct leaf_id {
	uint32_t function, index, flags;
};

/* The shape of a KVM_GET_SUPPORTED_CPUID answer, leaves the VMM touches. */
static const struct leaf_id table_shape[] = {
	{ 0, 0, 0 }, { 1, 0, 0 },
	{ 4, 0, SIG }, { 4, 1, SIG }, { 4, 2, SIG }, { 4, 3, SIG },
	{ 7, 0, SIG }, { 7, 1, SIG },
	{ 0xb, 0, SIG },
	{ 0xd, 0, SIG }, { 0xd, 1, SIG }, { 0xd, 2, SIG }, { 0xd, 3, SIG }, { 0xd, 4, SIG },
	{ 0xd, 5, SIG }, { 0xd, 6, SIG }, { 0xd, 7, SIG }, { 0xd, 9, SIG }, { 0xd, 17, SIG },
	{ 0xd, 18, SIG },
	{ 0x1f, 0, SIG },
	{ 0x40000000, 0, 0 }, { 0x40000001, 0, 0 },
	{ 0x80000000, 0, 0 }, { 0x80000001, 0, 0 }, { 0x80000007, 0, 0 }, { 0x80000008, 0, 0 },
	{ 0x8000001d, 0, SIG }, { 0x8000001d, 1, SIG }, { 0x8000001d, 2, SIG },
	{ 0x8000001e, 0, 0 },
};

static uint32_t *reg_of(struct kvm_cpuid_entry2 *e, enum cpuid_reg reg)
{
	switch (reg) {
	case CPUID_EAX: return &e->eax;
	case CPUID_EBX: return &e->ebx;
	case CPUID_ECX: return &e->ecx;
	case CPUID_EDX: break;
	}
	return &e->edx;
}

static struct kvm_cpuid2 *table_new(uint8_t settings, const uint8_t *regs, size_t nregs)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + MAX_ENTRIES * sizeof(c->entries[0]));
	size_t r = 0;

	if (!c)
		abort();
	for (size_t i = 0; i < sizeof(table_shape) / sizeof(table_shape[0]); i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[c->nent++];
		uint32_t v[4];

		for (unsigned k = 0; k < 4; k++) {
			v[k] = UINT32_MAX;
			if (nregs >= 4) {
				memcpy(&v[k], regs + r, 4);
				r = (r + 4) % (nregs - nregs % 4);
			}
		}
		*e = (struct kvm_cpuid_entry2){
			.function = table_shape[i].function, .index = table_shape[i].index,
			.flags = table_shape[i].flags,
			.eax = v[0], .ebx = v[1], .ecx = v[2], .edx = v[3],
		};
	}
	if (settings & 2)
		c->entries[c->nent++] = (struct kvm_cpuid_entry2){ .function = 0xb, .index = 1,
								   .flags = SIG };
	/* Vendor string in EBX, EDX, ECX. */
	memcpy(&c->entries[0].ebx, settings & 1 ? "Auth" : "Genu", 4);
	memcpy(&c->entries[0].edx, settings & 1 ? "enti" : "ineI", 4);
	memcpy(&c->entries[0].ecx, settings & 1 ? "cAMD" : "ntel", 4);
	return c;
}

/* Bits the topology code sets whatever the table says. */
static bool topology_bit(const struct cpuid_override *o)
{
	return (o->leaf == 1 && o->reg == CPUID_ECX && o->bit == 31) ||
	       (o->leaf == 1 && o->reg == CPUID_EDX && o->bit == 28) ||
	       (o->leaf == 0x80000001 && o->reg == CPUID_ECX && o->bit == 1);
}

static void check_applied(const struct cpuid_mask *m, struct kvm_cpuid2 *before,
			  struct kvm_cpuid2 *after)
{
	struct kvm_cpuid_entry2 *l1;

	for (unsigned i = 0; i < m->n; i++) {
		const struct cpuid_override *o = &m->o[i];
		struct kvm_cpuid_entry2 *b = cpuid_find(before, o->leaf, o->subleaf);
		struct kvm_cpuid_entry2 *a = cpuid_find(after, o->leaf, o->subleaf);
		bool was, now;

		if (!a)
			continue;
		was = *reg_of(b, o->reg) >> o->bit & 1;
		now = *reg_of(a, o->reg) >> o->bit & 1;
		CHECK(o->enable || !now, "leaf 0x%x.%u reg %d bit %u turned off but still on",
		      o->leaf, o->subleaf, o->reg, o->bit);
		CHECK(!o->enable || !now || was || topology_bit(o),
		      "leaf 0x%x.%u reg %d bit %u turned on without the table offering it",
		      o->leaf, o->subleaf, o->reg, o->bit);
	}
	l1 = cpuid_find(after, 1, 0);
	if (l1 && !(l1->ecx & (1u << 26))) {
		CHECK(!(l1->ecx & (1u << 27)), "OSXSAVE without XSAVE");
		for (uint32_t i = 0; i < after->nent; i++) {
			const struct kvm_cpuid_entry2 *e = &after->entries[i];

			CHECK(e->function != 0xd || !(e->eax | e->ebx | e->ecx | e->edx),
			      "leaf 0xd.%u describes state without XSAVE", e->index);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, 0, size);
	size_t speclen = nul ? (size_t)(nul - data) : size;
	char *spec = malloc(speclen + 1), err[256] = "";
	struct cpuid_mask m;
	struct kvm_cpuid2 *before, *after;
	const uint8_t *rest = nul ? nul + 1 : data + size;
	size_t restlen = (size_t)(data + size - rest);
	uint8_t settings = restlen > 0 ? rest[0] : 0;
	unsigned ncpus = restlen > 1 ? rest[1] : 1;
	size_t table_bytes = sizeof(*before) + MAX_ENTRIES * sizeof(before->entries[0]);

	if (!spec)
		abort();
	memcpy(spec, data, speclen);
	spec[speclen] = '\0';
	if (cpuid_mask_parse(spec, &m, err, sizeof(err)) < 0) {
		CHECK(err[0], "refused '%s' without a message", spec);
		CHECK(m.n == 0, "refused list left %u overrides", m.n);
		free(spec);
		return 0;
	}
	CHECK(m.n <= CPUID_MAX_OVERRIDES, "%u overrides", m.n);
	for (unsigned i = 0; i < m.n; i++)
		CHECK(m.o[i].bit < 32 && m.o[i].reg <= CPUID_EDX && m.o[i].enable <= 1,
		      "override %u out of range", i);

	before = table_new(settings, restlen > 2 ? rest + 2 : NULL, restlen > 2 ? restlen - 2 : 0);
	cpuid_add_topology_subleaves(before);
	after = malloc(table_bytes);
	if (!after)
		abort();
	memcpy(after, before, table_bytes);
	cpuid_setup_vcpu(after, &m, ncpus ? ncpus - 1 : 0, ncpus, ncpus ? ncpus - 1 : 0);
	check_applied(&m, before, after);
	free(before);
	free(after);
	free(spec);
	return 0;
}
