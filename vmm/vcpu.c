#include "vcpu.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "emulate.h"
#include "layout.h"
#include "log.h"
#include "util.h"
#include "vm.h"

#define MSR_IA32_SYSENTER_CS    0x174
#define MSR_IA32_SYSENTER_ESP   0x175
#define MSR_IA32_SYSENTER_EIP   0x176
#define MSR_IA32_MISC_ENABLE    0x1a0
#define MSR_MTRR_DEF_TYPE       0x2ff
#define MSR_IA32_CR_PAT         0x277
#define MSR_STAR                0xc0000081
#define MSR_LSTAR               0xc0000082
#define MSR_CSTAR               0xc0000083
#define MSR_SYSCALL_MASK        0xc0000084
#define MSR_KERNEL_GS_BASE      0xc0000102
#define MSR_TSC_AUX             0xc0000103
#define MSR_KVM_SYSTEM_TIME     0x12
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01
#define MSR_KVM_ASYNC_PF_EN     0x4b564d02
#define MSR_KVM_STEAL_TIME      0x4b564d03
#define MSR_KVM_PV_EOI_EN       0x4b564d04
#define MSR_KVM_POLL_CONTROL    0x4b564d05
#define MSR_KVM_ASYNC_PF_INT    0x4b564d06

#define APIC_LVT0               0x350
#define APIC_LVT1               0x360
#define APIC_MODE_NMI           0x4
#define APIC_MODE_EXTINT        0x7

/* MSRs at power-on. The KVM paravirtual ones are cleared so that a guest
 * restarted by a reset does not find KVM still writing its clock or steal
 * time into memory that the previous boot chose. */
static const struct { uint32_t index; uint64_t value; } boot_msrs[] = {
	{ MSR_IA32_SYSENTER_CS, 0 },
	{ MSR_IA32_SYSENTER_ESP, 0 },
	{ MSR_IA32_SYSENTER_EIP, 0 },
	{ MSR_STAR, 0 },
	{ MSR_LSTAR, 0 },
	{ MSR_CSTAR, 0 },
	{ MSR_SYSCALL_MASK, 0 },
	{ MSR_KERNEL_GS_BASE, 0 },
	{ MSR_TSC_AUX, 0 },
	{ MSR_IA32_MISC_ENABLE, 1 },                     /* fast strings */
	{ MSR_MTRR_DEF_TYPE, (1 << 11) | 6 },            /* MTRRs on, default write-back */
	{ MSR_IA32_CR_PAT, 0x0007040600070406ULL },
	{ MSR_KVM_SYSTEM_TIME, 0 },
	{ MSR_KVM_SYSTEM_TIME_NEW, 0 },
	{ MSR_KVM_ASYNC_PF_EN, 0 },
	{ MSR_KVM_STEAL_TIME, 0 },
	{ MSR_KVM_PV_EOI_EN, 0 },
	{ MSR_KVM_ASYNC_PF_INT, 0 },
	{ MSR_KVM_POLL_CONTROL, 1 },
};

static int set_boot_msrs(struct vcpu *v)
{
	/* struct kvm_msrs ends in a flexible array: give it room for ours. */
	union {
		struct kvm_msrs hdr;
		uint8_t bytes[sizeof(struct kvm_msrs) +
			      ARRAY_SIZE(boot_msrs) * sizeof(struct kvm_msr_entry)];
	} msrs;
	unsigned n = 0;
	int ret;

	memset(&msrs, 0, sizeof(msrs));
	for (size_t i = 0; i < ARRAY_SIZE(boot_msrs); i++) {
		if (!kvm_msr_supported(&v->vm->kh, boot_msrs[i].index))
			continue;
		msrs.hdr.entries[n].index = boot_msrs[i].index;
		msrs.hdr.entries[n].data = boot_msrs[i].value;
		n++;
	}
	msrs.hdr.nmsrs = n;
	ret = ioctl(v->fd, KVM_SET_MSRS, &msrs);
	if (ret < 0)
		return -errno;
	if ((unsigned)ret != n) {
		log_error("vCPU %u: KVM refused MSR 0x%x", v->index, msrs.hdr.entries[ret].index);
		return -EINVAL;
	}
	return 0;
}

static void lapic_set_lvt(struct kvm_lapic_state *s, unsigned reg, unsigned mode)
{
	uint32_t v;

	memcpy(&v, s->regs + reg, 4);
	v = (v & ~0x700u & ~0x10000u) | (mode << 8);   /* delivery mode, unmasked */
	memcpy(s->regs + reg, &v, 4);
}

int vcpu_create(struct vm *vm, unsigned index, struct vcpu **out, char *err, size_t errlen)
{
	struct vcpu *v = calloc(1, sizeof(*v));
	int ret;

	if (!v)
		return -ENOMEM;
	v->vm = vm;
	v->index = index;
	v->apic_id = vm->pd.apic_id[index];
	v->reset_gen = (unsigned)-1;
	v->fd = ioctl(vm->fd, KVM_CREATE_VCPU, (unsigned long)v->apic_id);
	if (v->fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "creating vCPU %u: %s", index, strerror(-ret));
		goto err_free;
	}
	v->run = mmap(NULL, (size_t)vm->kh.vcpu_mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		      v->fd, 0);
	if (v->run == MAP_FAILED) {
		ret = -errno;
		snprintf(err, errlen, "mapping vCPU %u's run area: %s", index, strerror(-ret));
		goto err_close;
	}
	v->cpuid = kvm_cpuid_copy(&vm->kh, 2);
	if (!v->cpuid) {
		ret = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto err_unmap;
	}
	cpuid_add_topology_subleaves(v->cpuid);
	cpuid_setup_vcpu(v->cpuid, &vm->cpumask, index, vm->ncpus, v->apic_id);
	if (ioctl(v->fd, KVM_SET_CPUID2, v->cpuid) < 0) {
		ret = -errno;
		snprintf(err, errlen, "vCPU %u: KVM_SET_CPUID2: %s", index, strerror(-ret));
		goto err_cpuid;
	}
	if (ioctl(v->fd, KVM_GET_LAPIC, &v->lapic0) < 0) {
		ret = -errno;
		snprintf(err, errlen, "vCPU %u: KVM_GET_LAPIC: %s", index, strerror(-ret));
		goto err_cpuid;
	}
	/* Virtual wire: the PIC's output reaches LINT0, NMIs reach LINT1. */
	lapic_set_lvt(&v->lapic0, APIC_LVT0, APIC_MODE_EXTINT);
	lapic_set_lvt(&v->lapic0, APIC_LVT1, APIC_MODE_NMI);
	if (ioctl(v->fd, KVM_GET_SREGS, &v->sregs0) < 0) {
		ret = -errno;
		snprintf(err, errlen, "vCPU %u: KVM_GET_SREGS: %s", index, strerror(-ret));
		goto err_cpuid;
	}
	*out = v;
	return 0;

err_cpuid:
	free(v->cpuid);
err_unmap:
	munmap(v->run, (size_t)vm->kh.vcpu_mmap_size);
err_close:
	close(v->fd);
err_free:
	free(v);
	return ret;
}

void vcpu_destroy(struct vcpu *v)
{
	if (!v)
		return;
	free(v->cpuid);
	munmap(v->run, (size_t)v->vm->kh.vcpu_mmap_size);
	close(v->fd);
	free(v);
}

int vcpu_reset(struct vcpu *v)
{
	struct vm *vm = v->vm;
	struct kvm_sregs sregs = v->sregs0;
	struct kvm_regs regs;
	struct kvm_fpu fpu = { .fcw = 0x37f, .mxcsr = 0x1f80 };
	struct kvm_vcpu_events events;
	struct kvm_mp_state mp;
	bool bsp = v->index == 0;
	int ret;

	if (ioctl(v->fd, KVM_SET_LAPIC, &v->lapic0) < 0)
		return -errno;
	memset(&regs, 0, sizeof(regs));
	regs.rflags = 0x2;
	if (bsp) {
		boot_entry_state(&vm->boot, &regs, &sregs);
	} else {
		regs.rip = 0xfff0;
		regs.rdx = 0x600;      /* processor signature, as after RESET */
	}
	if (ioctl(v->fd, KVM_SET_SREGS, &sregs) < 0 || ioctl(v->fd, KVM_SET_REGS, &regs) < 0 ||
	    ioctl(v->fd, KVM_SET_FPU, &fpu) < 0)
		return -errno;
	if (kvm_check_extension(&vm->kh, KVM_CAP_XCRS)) {
		struct kvm_xcrs xcrs = { .nr_xcrs = 1, .xcrs[0] = { .xcr = 0, .value = 1 } };

		if (ioctl(v->fd, KVM_SET_XCRS, &xcrs) < 0)
			return -errno;
	}
	memset(&events, 0, sizeof(events));
	if (ioctl(v->fd, KVM_SET_VCPU_EVENTS, &events) < 0)
		return -errno;
	ret = set_boot_msrs(v);
	if (ret < 0)
		return ret;
	mp.mp_state = bsp ? KVM_MP_STATE_RUNNABLE : KVM_MP_STATE_UNINITIALIZED;
	if (ioctl(v->fd, KVM_SET_MP_STATE, &mp) < 0)
		return -errno;
	return 0;
}

static void seg_line(char *buf, size_t len, const char *name, const struct kvm_segment *s)
{
	snprintf(buf, len, "%s=%04x base=%016llx limit=%08x type=%x dpl=%u db=%u l=%u p=%u\n",
		 name, s->selector, (unsigned long long)s->base, s->limit, s->type, s->dpl, s->db,
		 s->l, s->present);
}

void vcpu_dump(struct vcpu *v, char *buf, size_t len)
{
	struct kvm_regs r;
	struct kvm_sregs s;
	size_t n;

	if (ioctl(v->fd, KVM_GET_REGS, &r) < 0 || ioctl(v->fd, KVM_GET_SREGS, &s) < 0) {
		snprintf(buf, len, "(registers unavailable: %s)\n", strerror(errno));
		return;
	}
	n = (size_t)snprintf(buf, len,
		 "rip=%016llx rsp=%016llx rflags=%016llx\n"
		 "rax=%016llx rbx=%016llx rcx=%016llx rdx=%016llx\n"
		 "rsi=%016llx rdi=%016llx rbp=%016llx\n"
		 "r8 =%016llx r9 =%016llx r10=%016llx r11=%016llx\n"
		 "r12=%016llx r13=%016llx r14=%016llx r15=%016llx\n"
		 "cr0=%016llx cr2=%016llx cr3=%016llx cr4=%016llx efer=%016llx\n"
		 "gdt=%016llx/%04x idt=%016llx/%04x\n",
		 r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp,
		 r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15,
		 s.cr0, s.cr2, s.cr3, s.cr4, s.efer,
		 s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit);
	if (n < len)
		seg_line(buf + n, len - n, "cs", &s.cs);
	n = strlen(buf);
	if (n < len)
		seg_line(buf + n, len - n, "ss", &s.ss);
}

/* Parks a vCPU that cannot run on (after a fatal exit) until the VM is reset
 * or stopped. */
static void park_until_reset(struct vcpu *v)
{
	struct vm *vm = v->vm;

	pthread_mutex_lock(&vm->lock);
	vm->parked++;
	pthread_cond_broadcast(&vm->cond);
	while (!vm->stop_req && v->reset_gen == vm->reset_gen)
		pthread_cond_wait(&vm->cond, &vm->lock);
	vm->parked--;
	pthread_mutex_unlock(&vm->lock);
}

/* Waits while the VM is paused; false when the thread must end. Applies a
 * pending reset on this thread. */
static bool wait_turn(struct vcpu *v)
{
	struct vm *vm = v->vm;
	unsigned gen;
	bool stop, halted;

	pthread_mutex_lock(&vm->lock);
	while (vm->pause_req && !vm->stop_req) {
		vm->parked++;
		pthread_cond_broadcast(&vm->cond);
		pthread_cond_wait(&vm->cond, &vm->lock);
		vm->parked--;
	}
	stop = vm->stop_req;
	gen = vm->reset_gen;
	halted = vm->guest_halted && v->reset_gen == gen;
	pthread_mutex_unlock(&vm->lock);
	if (stop)
		return false;
	if (halted) {
		park_until_reset(v);
		return wait_turn(v);
	}
	if (v->reset_gen != gen) {
		int ret = vcpu_reset(v);

		v->reset_gen = gen;
		if (ret < 0) {
			vm_request(vm, VM_REQ_CRASH, 0, "vCPU %u: reset failed: %s", v->index,
				   strerror(-ret));
			park_until_reset(v);
		}
	}
	return true;
}

static void crash(struct vcpu *v, const char *what)
{
	char regs[2048];

	vcpu_dump(v, regs, sizeof(regs));
	vm_request(v->vm, VM_REQ_CRASH, 0, "vCPU %u: %s\n%s", v->index, what, regs);
	park_until_reset(v);
}

static void handle_io(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	bool is_write = run->io.direction == KVM_EXIT_IO_OUT;

	for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size) {
		if (!pio_access(&v->vm->pio, run->io.port, is_write, data, run->io.size))
			log_debug("vCPU %u: %s of %u bytes at unclaimed port 0x%x", v->index,
				  is_write ? "write" : "read", run->io.size, run->io.port);
	}
}

static void handle_mmio(struct vcpu *v)
{
	struct kvm_run *run = v->run;

	if (!mmio_access(&v->vm->mmio, run->mmio.phys_addr, run->mmio.is_write, run->mmio.data,
			 run->mmio.len))
		log_debug("vCPU %u: MMIO %s of %u bytes at 0x%llx (nothing there)", v->index,
			  run->mmio.is_write ? "write" : "read", run->mmio.len,
			  (unsigned long long)run->mmio.phys_addr);
}

static void handle_internal_error(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	char what[256];
	uint8_t insn[16];
	unsigned n;
	int off;

	if (run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION && emulate_failure(v))
		return;
	off = snprintf(what, sizeof(what), "KVM internal error (suberror %u%s)",
		       run->internal.suberror,
		       run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION ?
		       ": emulation failure" : "");
	if (run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION) {
		n = emulate_fetch(v, insn, sizeof(insn));
		if (n)
			off += snprintf(what + off, sizeof(what) - (size_t)off, ", instruction bytes");
		for (unsigned i = 0; i < n && off < (int)sizeof(what) - 4; i++)
			off += snprintf(what + off, sizeof(what) - (size_t)off, " %02x", insn[i]);
	}
	crash(v, what);
}

static void handle_system_event(struct vcpu *v)
{
	switch (v->run->system_event.type) {
	case KVM_SYSTEM_EVENT_SHUTDOWN:
		vm_request(v->vm, VM_REQ_POWEROFF, 0, "system event: shutdown");
		break;
	case KVM_SYSTEM_EVENT_RESET:
		vm_request(v->vm, VM_REQ_RESET, 0, "system event: reset");
		break;
	default:
		crash(v, "system event: crash");
		break;
	}
}

static void run_once(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	char what[128];

	if (ioctl(v->fd, KVM_RUN, 0) < 0) {
		if (errno == EINTR || errno == EAGAIN) {
			run->immediate_exit = 0;
			return;
		}
		snprintf(what, sizeof(what), "KVM_RUN failed: %s", strerror(errno));
		crash(v, what);
		return;
	}
	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		handle_io(v);
		break;
	case KVM_EXIT_MMIO:
		handle_mmio(v);
		break;
	case KVM_EXIT_HLT:
	case KVM_EXIT_INTR:
	case KVM_EXIT_DEBUG:
		break;
	case KVM_EXIT_SHUTDOWN:
		crash(v, "triple fault (KVM_EXIT_SHUTDOWN)");
		break;
	case KVM_EXIT_INTERNAL_ERROR:
		handle_internal_error(v);
		break;
	case KVM_EXIT_FAIL_ENTRY:
		snprintf(what, sizeof(what), "VM entry failed (hardware reason 0x%llx)",
			 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		crash(v, what);
		break;
	case KVM_EXIT_SYSTEM_EVENT:
		handle_system_event(v);
		break;
	default:
		snprintf(what, sizeof(what), "unexpected KVM exit reason %u", run->exit_reason);
		crash(v, what);
		break;
	}
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	sigset_t set;
	char name[16];

	atomic_store(&v->tid, (int)syscall(SYS_gettid));
	snprintf(name, sizeof(name), "vcpu%u", v->index);
	pthread_setname_np(pthread_self(), name);
	sigemptyset(&set);
	sigaddset(&set, VCPU_KICK_SIGNAL);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	while (wait_turn(v))
		run_once(v);
	return NULL;
}

int vcpu_start_thread(struct vcpu *v)
{
	int ret = pthread_create(&v->thread, NULL, vcpu_thread, v);

	if (ret)
		return -ret;
	v->thread_started = true;
	return 0;
}

void vcpu_kick(struct vcpu *v)
{
	v->run->immediate_exit = 1;
	if (v->thread_started)
		pthread_kill(v->thread, VCPU_KICK_SIGNAL);
}
