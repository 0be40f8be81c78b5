#include "vm.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "acpi.h"
#include "devices.h"
#include "layout.h"
#include "log.h"
#include "mptable.h"
#include "serial.h"
#include "util.h"
#include "vcpu.h"

#define TSS_ADDR          0xfffbd000ULL
#define IDENTITY_MAP_ADDR 0xfffbc000ULL
#define MIN_MEMORY        (2 * MiB)

/* The in-kernel interrupt controllers as at power-on, restored at reset. */
struct irqchip_state {
	struct kvm_irqchip chip[3];   /* PIC master, PIC slave, I/O APIC */
	struct kvm_pit_state2 pit;
};
static struct irqchip_state *irqchip0_of(struct vm *vm);

static int check_limits(struct vm *vm, const struct vmm_config *cfg, char *err, size_t errlen)
{
	unsigned max = vm->kh.max_vcpus < PLATFORM_MAX_CPUS ? vm->kh.max_vcpus : PLATFORM_MAX_CPUS;
	struct sysinfo si;

	if (cfg->cpus < 1 || cfg->cpus > max) {
		snprintf(err, errlen, "--cpus %u: this host allows 1 to %u vCPUs per VM%s",
			 cfg->cpus, max,
			 max == PLATFORM_MAX_CPUS ? " (the limit of xAPIC ids)" : " (KVM's limit)");
		return -EINVAL;
	}
	if (cfg->cpus > vm->kh.nr_vcpus)
		log_info("%u vCPUs is more than the %u this host's KVM recommends "
			 "(its core count): they will share cores", cfg->cpus, vm->kh.nr_vcpus);
	if (cfg->memory < MIN_MEMORY) {
		snprintf(err, errlen, "--memory %llu KiB: a VM needs at least %llu KiB",
			 (unsigned long long)(cfg->memory >> 10),
			 (unsigned long long)(MIN_MEMORY >> 10));
		return -EINVAL;
	}
	if (sysinfo(&si) == 0) {
		uint64_t host = (uint64_t)si.totalram * si.mem_unit;

		if (cfg->memory > host) {
			snprintf(err, errlen, "--memory %llu MiB is more than this host's %llu MiB "
				 "of RAM", (unsigned long long)(cfg->memory >> 20),
				 (unsigned long long)(host >> 20));
			return -ENOMEM;
		}
	}
	return 0;
}

static int map_memory(struct vm *vm, char *err, size_t errlen)
{
	int ret = guest_mem_init(&vm->mem, vm->cfg->memory);

	if (ret < 0) {
		snprintf(err, errlen, "allocating %llu MiB of guest RAM: %s",
			 (unsigned long long)(vm->cfg->memory >> 20), strerror(-ret));
		return ret;
	}
	for (unsigned i = 0; i < vm->mem.nregions; i++) {
		struct kvm_userspace_memory_region r = {
			.slot = i,
			.guest_phys_addr = vm->mem.region[i].gpa,
			.memory_size = vm->mem.region[i].size,
			.userspace_addr = (uintptr_t)vm->mem.region[i].host,
		};

		if (ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
			snprintf(err, errlen, "registering guest RAM with KVM: %s", strerror(errno));
			return -errno;
		}
	}
	return 0;
}

static int create_kvm_vm(struct vm *vm, char *err, size_t errlen)
{
	struct kvm_pit_config pit = { .flags = 0 };
	uint64_t ident = IDENTITY_MAP_ADDR;
	int ret;

	do
		vm->fd = ioctl(vm->kh.fd, KVM_CREATE_VM, 0);
	while (vm->fd < 0 && errno == EINTR);
	if (vm->fd < 0) {
		snprintf(err, errlen, "KVM_CREATE_VM: %s", strerror(errno));
		return -errno;
	}
	if (ioctl(vm->fd, KVM_SET_TSS_ADDR, TSS_ADDR) < 0 ||
	    (kvm_check_extension(&vm->kh, KVM_CAP_SET_IDENTITY_MAP_ADDR) &&
	     ioctl(vm->fd, KVM_SET_IDENTITY_MAP_ADDR, &ident) < 0)) {
		snprintf(err, errlen, "setting KVM's TSS and identity map: %s", strerror(errno));
		return -errno;
	}
	/* RAM goes in before the interrupt controllers: a memory slot added
	 * once they exist waits for an SRCU grace period (about 6 ms here). */
	ret = map_memory(vm, err, errlen);
	if (ret < 0)
		return ret;
	if (ioctl(vm->fd, KVM_CREATE_IRQCHIP, 0) < 0) {
		snprintf(err, errlen, "KVM_CREATE_IRQCHIP: %s", strerror(errno));
		return -errno;
	}
	if (ioctl(vm->fd, KVM_CREATE_PIT2, &pit) < 0) {
		snprintf(err, errlen, "KVM_CREATE_PIT2: %s", strerror(errno));
		return -errno;
	}
	return 0;
}

/* Firmware tables and the kernel: at creation and again at every reset. */
static int load_guest(struct vm *vm, char *err, size_t errlen)
{
	int ret;

	ret = acpi_build(&vm->mem, &vm->pd, &vm->boot.rsdp_addr);
	if (ret < 0) {
		snprintf(err, errlen, "building ACPI tables: %s", strerror(-ret));
		return ret;
	}
	ret = mptable_build(&vm->mem, &vm->pd);
	if (ret < 0) {
		snprintf(err, errlen, "building the MP table: %s", strerror(-ret));
		return ret;
	}
	return boot_load(&vm->boot, &vm->mem, err, errlen);
}

static int save_irqchips(struct vm *vm, char *err, size_t errlen)
{
	struct irqchip_state *s = irqchip0_of(vm);

	for (unsigned i = 0; i < 3; i++) {
		s->chip[i].chip_id = i;
		if (ioctl(vm->fd, KVM_GET_IRQCHIP, &s->chip[i]) < 0)
			goto fail;
	}
	if (ioctl(vm->fd, KVM_GET_PIT2, &s->pit) < 0)
		goto fail;
	return 0;
fail:
	snprintf(err, errlen, "reading the interrupt controllers: %s", strerror(errno));
	return -errno;
}

static int restore_irqchips(struct vm *vm)
{
	struct irqchip_state *s = irqchip0_of(vm);

	for (unsigned i = 0; i < 3; i++)
		if (ioctl(vm->fd, KVM_SET_IRQCHIP, &s->chip[i]) < 0)
			return -errno;
	if (ioctl(vm->fd, KVM_SET_PIT2, &s->pit) < 0)
		return -errno;
	return 0;
}

/* The power-on irqchip state lives right after struct vm (one allocation). */
static struct irqchip_state *irqchip0_of(struct vm *vm)
{
	return (struct irqchip_state *)(vm + 1);
}

int vm_create(struct vm **out, const struct vmm_config *cfg, char *err, size_t errlen)
{
	struct vm *vm = calloc(1, sizeof(*vm) + sizeof(struct irqchip_state));
	int ret;

	if (!vm)
		return -ENOMEM;
	vm->cfg = cfg;
	vm->fd = -1;
	vm->boot.kernel_fd = vm->boot.initrd_fd = -1;
	vm->start_ns = monotonic_ns();
	pthread_mutex_init(&vm->lock, NULL);
	pthread_cond_init(&vm->cond, NULL);
	pthread_mutex_init(&vm->req_lock, NULL);
	vm->state = VM_PRELAUNCH;
	vm->req_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vm->req_fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "eventfd: %s", strerror(-ret));
		goto err;
	}
	ret = kvm_host_open(&vm->kh, err, errlen);
	if (ret < 0)
		goto err;
	ret = check_limits(vm, cfg, err, errlen);
	if (ret < 0)
		goto err;
	vm->ncpus = cfg->cpus;
	ret = cpuid_mask_parse(cfg->cpu_features, &vm->cpumask, err, errlen);
	if (ret < 0)
		goto err;
	platform_desc_init(&vm->pd, vm->ncpus);
	ret = create_kvm_vm(vm, err, errlen);
	if (ret < 0)
		goto err;
	ret = boot_prepare(&vm->boot, cfg, &vm->mem, err, errlen);
	if (ret < 0)
		goto err;
	ret = load_guest(vm, err, errlen);
	if (ret < 0)
		goto err;
	ret = devices_create(vm, err, errlen);
	if (ret < 0)
		goto err;
	vm->vcpus = calloc(vm->ncpus, sizeof(*vm->vcpus));
	if (!vm->vcpus) {
		ret = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto err;
	}
	for (unsigned i = 0; i < vm->ncpus; i++) {
		ret = vcpu_create(vm, i, &vm->vcpus[i], err, errlen);
		if (ret < 0)
			goto err;
	}
	ret = save_irqchips(vm, err, errlen);
	if (ret < 0)
		goto err;
	log_debug("VM '%s': %u vCPUs, %llu MiB, %s entry at 0x%llx", cfg->name, vm->ncpus,
		  (unsigned long long)(cfg->memory >> 20), boot_entry_name(vm->boot.entry),
		  (unsigned long long)vm->boot.entry_addr);
	*out = vm;
	return 0;

err:
	vm_destroy(vm);
	return ret;
}

void vm_destroy(struct vm *vm)
{
	if (!vm)
		return;
	vm_shutdown(vm);
	for (unsigned i = 0; vm->vcpus && i < vm->ncpus; i++)
		vcpu_destroy(vm->vcpus[i]);
	free(vm->vcpus);
	devices_destroy(vm);
	boot_close(&vm->boot);
	if (vm->fd >= 0)
		close(vm->fd);
	guest_mem_free(&vm->mem);
	if (vm->kh.fd > 0)
		kvm_host_close(&vm->kh);
	if (vm->req_fd >= 0)
		close(vm->req_fd);
	pthread_mutex_destroy(&vm->lock);
	pthread_cond_destroy(&vm->cond);
	pthread_mutex_destroy(&vm->req_lock);
	free(vm);
}

int vm_start(struct vm *vm)
{
	int ret;

	pthread_mutex_lock(&vm->lock);
	vm->state = VM_RUNNING;
	pthread_mutex_unlock(&vm->lock);
	for (unsigned i = 0; i < vm->ncpus; i++) {
		ret = vcpu_start_thread(vm->vcpus[i]);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* With vm->lock held: asks every vCPU to park and waits until all have. */
static void park_all_locked(struct vm *vm)
{
	vm->pause_req = true;
	for (unsigned i = 0; i < vm->ncpus; i++)
		vcpu_kick(vm->vcpus[i]);
	while (vm->parked < vm->ncpus)
		pthread_cond_wait(&vm->cond, &vm->lock);
}

void vm_pause(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	if (vm->state == VM_RUNNING) {
		park_all_locked(vm);
		vm->state = VM_PAUSED;
		/* With the vCPUs parked, the disks finish what is in flight
		 * and start nothing new. */
		devices_pause(vm);
	}
	pthread_mutex_unlock(&vm->lock);
}

void vm_resume(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	if (vm->state == VM_PAUSED) {
		devices_resume(vm);
		vm->pause_req = false;
		vm->state = VM_RUNNING;
		pthread_cond_broadcast(&vm->cond);
	}
	pthread_mutex_unlock(&vm->lock);
}

int vm_reset(struct vm *vm, char *err, size_t errlen)
{
	int ret;

	pthread_mutex_lock(&vm->lock);
	if (vm->state != VM_RUNNING && vm->state != VM_PAUSED) {
		pthread_mutex_unlock(&vm->lock);
		snprintf(err, errlen, "the VM is not running");
		return -EINVAL;
	}
	if (vm->state == VM_RUNNING)
		park_all_locked(vm);
	vm->guest_halted = false;
	ret = load_guest(vm, err, errlen);
	if (ret == 0) {
		devices_reset(vm);
		ret = restore_irqchips(vm);
		if (ret < 0)
			snprintf(err, errlen, "resetting the interrupt controllers: %s",
				 strerror(-ret));
	}
	vm->reset_gen++;
	if (vm->state == VM_RUNNING)
		vm->pause_req = false;
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	return ret;
}

void vm_shutdown(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	vm->stop_req = true;
	for (unsigned i = 0; vm->vcpus && i < vm->ncpus; i++)
		if (vm->vcpus[i])
			vcpu_kick(vm->vcpus[i]);
	pthread_cond_broadcast(&vm->cond);
	vm->state = VM_SHUTDOWN;
	pthread_mutex_unlock(&vm->lock);
	for (unsigned i = 0; vm->vcpus && i < vm->ncpus; i++) {
		if (vm->vcpus[i] && vm->vcpus[i]->thread_started) {
			pthread_join(vm->vcpus[i]->thread, NULL);
			vm->vcpus[i]->thread_started = false;
		}
	}
	/* No vCPU runs: let the disks complete what is in flight before the
	 * process goes. */
	devices_pause(vm);
}

void vm_request(struct vm *vm, enum vm_req req, int code, const char *fmt, ...)
{
	uint64_t one = 1;
	va_list ap;

	if (req != VM_REQ_CRASH) {
		/* The vCPU that crashed parks itself; here every vCPU must stop. */
		pthread_mutex_lock(&vm->lock);
		vm->guest_halted = true;
		for (unsigned i = 0; vm->vcpus && i < vm->ncpus; i++)
			if (vm->vcpus[i])
				vcpu_kick(vm->vcpus[i]);
		pthread_mutex_unlock(&vm->lock);
	}
	pthread_mutex_lock(&vm->req_lock);
	if (req == VM_REQ_RESET) {
		vm->reset_pending = true;
	} else if (vm->end_req == VM_REQ_NONE) {
		vm->end_req = req;
		vm->end_code = code;
		va_start(ap, fmt);
		vsnprintf(vm->end_detail, sizeof(vm->end_detail), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&vm->req_lock);
	if (write(vm->req_fd, &one, sizeof(one)) < 0) {
		/* the counter cannot overflow in practice; nothing to do */
	}
}

enum vm_req vm_take_request(struct vm *vm, int *code, char *detail, size_t len)
{
	enum vm_req req = VM_REQ_NONE;
	uint64_t cnt;

	if (read(vm->req_fd, &cnt, sizeof(cnt)) < 0) {
		/* EAGAIN: nothing new, but a request may still be pending */
	}
	pthread_mutex_lock(&vm->req_lock);
	if (vm->end_req != VM_REQ_NONE) {
		req = vm->end_req;
		*code = vm->end_code;
		snprintf(detail, len, "%s", vm->end_detail);
	} else if (vm->reset_pending) {
		vm->reset_pending = false;
		req = VM_REQ_RESET;
		*code = 0;
		detail[0] = 0;
	}
	pthread_mutex_unlock(&vm->req_lock);
	return req;
}

void vm_irq_line(struct vm *vm, unsigned irq, int level)
{
	struct kvm_irq_level l = { .irq = irq, .level = level };

	if (ioctl(vm->fd, KVM_IRQ_LINE, &l) < 0)
		log_warn("raising IRQ %u: %s", irq, strerror(errno));
}

int vm_vcpu_tid(const struct vm *vm, unsigned index)
{
	return index < vm->ncpus ? atomic_load(&vm->vcpus[index]->tid) : -1;
}
