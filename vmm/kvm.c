#include "kvm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_GUEST_PERM 0x1025
#define XFEATURE_XTILEDATA        18

static const struct {
	int cap;
	const char *name;
} required_caps[] = {
	{ KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP" },
	{ KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY" },
	{ KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR" },
	{ KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID" },
	{ KVM_CAP_PIT2, "KVM_CAP_PIT2" },
	{ KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT" },
	{ KVM_CAP_VCPU_EVENTS, "KVM_CAP_VCPU_EVENTS" },
	{ KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE" },
};

static struct kvm_cpuid2 *get_supported_cpuid(int fd)
{
	for (unsigned n = 256; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));

		if (!c)
			return NULL;
		c->nent = n;
		if (ioctl(fd, KVM_GET_SUPPORTED_CPUID, c) == 0)
			return c;
		free(c);
		if (errno != E2BIG)
			return NULL;
	}
	return NULL;
}

static struct kvm_msr_list *get_msr_list(int fd)
{
	struct kvm_msr_list probe = { .nmsrs = 0 }, *list;

	if (ioctl(fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
		return NULL;
	list = calloc(1, sizeof(*list) + probe.nmsrs * sizeof(list->indices[0]));
	if (!list)
		return NULL;
	list->nmsrs = probe.nmsrs;
	if (ioctl(fd, KVM_GET_MSR_INDEX_LIST, list) < 0) {
		free(list);
		return NULL;
	}
	return list;
}

int kvm_host_open(struct kvm_host *kh, char *err, size_t errlen)
{
	int ret, v;

	memset(kh, 0, sizeof(*kh));
	kh->fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kh->fd < 0) {
		ret = -errno;
		if (ret == -ENOENT)
			snprintf(err, errlen, "/dev/kvm does not exist: this host has no KVM "
				 "(load kvm_intel or kvm_amd, or enable virtualization in the firmware)");
		else if (ret == -EACCES || ret == -EPERM)
			snprintf(err, errlen, "no permission to open /dev/kvm "
				 "(run as root or as a member of the 'kvm' group)");
		else
			snprintf(err, errlen, "cannot open /dev/kvm: %s", strerror(-ret));
		return ret;
	}
	v = ioctl(kh->fd, KVM_GET_API_VERSION, 0);
	if (v != KVM_API_VERSION) {
		snprintf(err, errlen, "/dev/kvm speaks API version %d, drover needs %d", v,
			 KVM_API_VERSION);
		ret = -EINVAL;
		goto err_close;
	}
	for (size_t i = 0; i < sizeof(required_caps) / sizeof(required_caps[0]); i++) {
		if (ioctl(kh->fd, KVM_CHECK_EXTENSION, required_caps[i].cap) <= 0) {
			snprintf(err, errlen, "this host's KVM lacks %s, which drover needs",
				 required_caps[i].name);
			ret = -ENOTSUP;
			goto err_close;
		}
	}
	kh->vcpu_mmap_size = ioctl(kh->fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (kh->vcpu_mmap_size <= 0) {
		snprintf(err, errlen, "KVM_GET_VCPU_MMAP_SIZE failed: %s", strerror(errno));
		ret = -EINVAL;
		goto err_close;
	}
	v = ioctl(kh->fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	kh->nr_vcpus = v > 0 ? (unsigned)v : 4;
	v = ioctl(kh->fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
	kh->max_vcpus = v > 0 ? (unsigned)v : kh->nr_vcpus;
	/* On hosts with AMX, guests may use its tile data only once the process
	 * asks for the permission (else KVM_SET_CPUID2 refuses AMX bits). No AMX:
	 * the call fails, which is fine. */
	syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_GUEST_PERM, XFEATURE_XTILEDATA);
	kh->supported_cpuid = get_supported_cpuid(kh->fd);
	if (!kh->supported_cpuid) {
		ret = -errno ? -errno : -ENOMEM;
		snprintf(err, errlen, "KVM_GET_SUPPORTED_CPUID failed: %s", strerror(-ret));
		goto err_close;
	}
	kh->msr_list = get_msr_list(kh->fd);
	if (!kh->msr_list) {
		ret = -errno ? -errno : -ENOMEM;
		snprintf(err, errlen, "KVM_GET_MSR_INDEX_LIST failed: %s", strerror(-ret));
		goto err_cpuid;
	}
	return 0;

err_cpuid:
	free(kh->supported_cpuid);
err_close:
	close(kh->fd);
	kh->fd = -1;
	return ret;
}

void kvm_host_close(struct kvm_host *kh)
{
	free(kh->supported_cpuid);
	free(kh->msr_list);
	if (kh->fd >= 0)
		close(kh->fd);
	kh->fd = -1;
}

int kvm_check_extension(const struct kvm_host *kh, int cap)
{
	int v = ioctl(kh->fd, KVM_CHECK_EXTENSION, cap);

	return v < 0 ? 0 : v;
}

int kvm_msr_supported(const struct kvm_host *kh, unsigned index)
{
	for (unsigned i = 0; i < kh->msr_list->nmsrs; i++)
		if (kh->msr_list->indices[i] == index)
			return 1;
	return 0;
}

struct kvm_cpuid2 *kvm_cpuid_copy(const struct kvm_host *kh, unsigned extra)
{
	size_t sz = sizeof(*kh->supported_cpuid) +
		    kh->supported_cpuid->nent * sizeof(kh->supported_cpuid->entries[0]);
	struct kvm_cpuid2 *c = calloc(1, sz + extra * sizeof(c->entries[0]));

	if (c)
		memcpy(c, kh->supported_cpuid, sz);
	return c;
}
