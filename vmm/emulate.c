/* The few instructions that this host's KVM (PVM, nested) fails to emulate
 * and that Linux executes early: int3 (its self test and jump-label
 * patching), fwait, and clac/stac (SMAP). Each is performed exactly as the
 * CPU would, then the vCPU resumes. Counts per kind are kept in vm->emul_count,
 * reported by query-status and logged when the VM ends (emulate_log_counts). */
#include "emulate.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include "log.h"
#include "vcpu.h"
#include "vm.h"

#define RFLAGS_AC   (1ULL << 18)
#define VEC_BP      3

static const char *const kind_names[EMUL_NR_KINDS] = {
	[EMUL_INT3] = "int3", [EMUL_FWAIT] = "fwait", [EMUL_CLAC] = "clac", [EMUL_STAC] = "stac",
};

unsigned emulate_fetch(struct vcpu *v, uint8_t *buf, unsigned max)
{
	struct kvm_run *run = v->run;
	struct kvm_translation tr;
	struct kvm_regs regs;
	unsigned n;

	if (run->emulation_failure.ndata >= 3 &&
	    (run->emulation_failure.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) &&
	    run->emulation_failure.insn_size) {
		n = run->emulation_failure.insn_size;
		if (n > 15)
			n = 15;
		if (n > max)
			n = max;
		memcpy(buf, run->emulation_failure.insn_bytes, n);
		return n;
	}
	/* Older hosts give no bytes: read them through the guest's page tables,
	 * up to the end of the page. */
	if (ioctl(v->fd, KVM_GET_REGS, &regs) < 0)
		return 0;
	memset(&tr, 0, sizeof(tr));
	tr.linear_address = regs.rip;
	if (ioctl(v->fd, KVM_TRANSLATE, &tr) < 0 || !tr.valid)
		return 0;
	n = 4096 - (unsigned)(tr.physical_address & 4095);
	if (n > max)
		n = max;
	if (n > 15)
		n = 15;
	return guest_mem_read(&v->vm->mem, tr.physical_address, buf, n) == 0 ? n : 0;
}

static bool advance_rip(struct vcpu *v, unsigned len, uint64_t set_flags, uint64_t clear_flags)
{
	struct kvm_regs regs;

	if (ioctl(v->fd, KVM_GET_REGS, &regs) < 0)
		return false;
	regs.rip += len;
	regs.rflags = (regs.rflags | set_flags) & ~clear_flags;
	return ioctl(v->fd, KVM_SET_REGS, &regs) == 0;
}

static bool inject_bp(struct vcpu *v)
{
	struct kvm_vcpu_events ev;

	if (ioctl(v->fd, KVM_GET_VCPU_EVENTS, &ev) < 0)
		return false;
	ev.exception.injected = 1;
	ev.exception.nr = VEC_BP;
	ev.exception.has_error_code = 0;
	ev.exception.error_code = 0;
	ev.flags = 0;
	return ioctl(v->fd, KVM_SET_VCPU_EVENTS, &ev) == 0;
}

bool emulate_failure(struct vcpu *v)
{
	uint8_t insn[15];
	unsigned n = emulate_fetch(v, insn, sizeof(insn));
	enum emul_kind kind;
	bool ok;

	if (n >= 1 && insn[0] == 0xcc) {
		/* #BP is a trap: the saved RIP is the next instruction's. */
		kind = EMUL_INT3;
		ok = advance_rip(v, 1, 0, 0) && inject_bp(v);
	} else if (n >= 1 && insn[0] == 0x9b) {
		kind = EMUL_FWAIT;           /* no x87 exception can be pending here */
		ok = advance_rip(v, 1, 0, 0);
	} else if (n >= 3 && insn[0] == 0x0f && insn[1] == 0x01 && insn[2] == 0xca) {
		kind = EMUL_CLAC;
		ok = advance_rip(v, 3, 0, RFLAGS_AC);
	} else if (n >= 3 && insn[0] == 0x0f && insn[1] == 0x01 && insn[2] == 0xcb) {
		kind = EMUL_STAC;
		ok = advance_rip(v, 3, RFLAGS_AC, 0);
	} else {
		return false;
	}
	if (!ok) {
		log_warn("vCPU %u: emulating an instruction failed: %s", v->index, strerror(errno));
		return false;
	}
	if (atomic_fetch_add(&v->vm->emul_count[kind], 1) == 0)
		log_info("vCPU %u: emulating %s for the guest (KVM could not)", v->index,
			 kind_names[kind]);
	return true;
}

void emulate_log_counts(struct vm *vm)
{
	unsigned long n[EMUL_NR_KINDS], total = 0;

	for (unsigned k = 0; k < EMUL_NR_KINDS; k++) {
		n[k] = atomic_load(&vm->emul_count[k]);
		total += n[k];
	}
	/* Silent for guests that never needed it: on VT-x/AMD-V hosts, all of them. */
	if (!total)
		return;
	log_info("instructions emulated for the guest: %s %lu, %s %lu, %s %lu, %s %lu",
		 kind_names[EMUL_INT3], n[EMUL_INT3], kind_names[EMUL_FWAIT], n[EMUL_FWAIT],
		 kind_names[EMUL_CLAC], n[EMUL_CLAC], kind_names[EMUL_STAC], n[EMUL_STAC]);
}
