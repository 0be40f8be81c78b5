/* The CPUID table each vCPU gets: what KVM supports, with per-vCPU APIC ids,
 * a topology of one socket with ncpus cores of one thread each, the
 * hypervisor bit and KVM's leaves, and the operator's feature masks
 * (--cpu-features -xsave,-cx16,+x2apic). */
#ifndef DROVER_CPUID_H
#define DROVER_CPUID_H

#include <stddef.h>
#include <stdint.h>
#include <linux/kvm.h>

#define CPUID_MAX_OVERRIDES 64

enum cpuid_reg { CPUID_EAX, CPUID_EBX, CPUID_ECX, CPUID_EDX };

struct cpuid_override {
	uint32_t leaf, subleaf;
	enum cpuid_reg reg;
	uint8_t bit;
	uint8_t enable;     /* 1: force on (only if KVM supports it), 0: force off */
};

struct cpuid_mask {
	unsigned n;
	struct cpuid_override o[CPUID_MAX_OVERRIDES];
};

/* Parses "-xsave,-cx16,+x2apic" (names as /proc/cpuinfo spells them; '-', '_'
 * and '.' are interchangeable; "sse4.1" works). A feature with dependants
 * takes them along when turned off (-xsave also turns off avx, avx2, ...).
 * An empty or NULL spec gives an empty mask. 0, or -EINVAL with a message in
 * err naming the bad item. */
int cpuid_mask_parse(const char *spec, struct cpuid_mask *m, char *err, size_t errlen);

/* Looks a feature up by name; 0 or -ENOENT. */
int cpuid_feature_lookup(const char *name, uint32_t *leaf, uint32_t *subleaf,
			 enum cpuid_reg *reg, uint8_t *bit);

/* Rewrites a copy of KVM_GET_SUPPORTED_CPUID (in place) into what vCPU
 * `index` of `ncpus` sees, its APIC id being `apic_id`. Entries that must
 * exist for the topology and are missing are not invented. */
void cpuid_setup_vcpu(struct kvm_cpuid2 *cpuid, const struct cpuid_mask *m,
		      unsigned index, unsigned ncpus, uint32_t apic_id);

/* KVM lists leaves 0xB and 0x1F with their SMT subleaf only; appends the
 * core-level subleaf 1 (zeroed, for cpuid_setup_vcpu to fill) to each that
 * lacks it. The table must have room for two more entries. */
void cpuid_add_topology_subleaves(struct kvm_cpuid2 *cpuid);

/* Entry for (function, index) or NULL. */
struct kvm_cpuid_entry2 *cpuid_find(struct kvm_cpuid2 *cpuid, uint32_t function, uint32_t index);

#endif
