/* The host's /dev/kvm: what it can do, checked once at start-up, with errors
 * that tell an operator what to fix. */
#ifndef DROVER_KVM_H
#define DROVER_KVM_H

#include <stddef.h>
#include <linux/kvm.h>

struct kvm_host {
	int fd;
	int vcpu_mmap_size;
	unsigned max_vcpus;               /* KVM_CAP_MAX_VCPUS */
	unsigned nr_vcpus;                /* KVM_CAP_NR_VCPUS (recommended) */
	struct kvm_cpuid2 *supported_cpuid;
	struct kvm_msr_list *msr_list;    /* MSRs KVM saves and restores */
};

/* Opens /dev/kvm and checks the API version and every capability drover
 * needs. On failure returns -errno and writes a sentence to err. */
int kvm_host_open(struct kvm_host *kh, char *err, size_t errlen);
void kvm_host_close(struct kvm_host *kh);

int kvm_check_extension(const struct kvm_host *kh, int cap);
int kvm_msr_supported(const struct kvm_host *kh, unsigned index);

/* A copy of the supported CPUID table that the caller may rewrite, with
 * room for `extra` more entries (free()). */
struct kvm_cpuid2 *kvm_cpuid_copy(const struct kvm_host *kh, unsigned extra);

#endif
