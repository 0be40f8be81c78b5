/* The instructions drover-vmm performs when this host's KVM gives up on them
 * (vmm/emulate.c): a real KVM vCPU is given the exit that KVM leaves in its
 * run area (KVM_EXIT_INTERNAL_ERROR, suberror 1, the instruction's bytes),
 * then its registers and pending events are read back as the guest will find
 * them: int3 leaves RIP past the 0xcc with #BP injected (a trap), fwait is
 * skipped, clac/stac clear/set RFLAGS.AC; anything else is refused and leaves
 * the vCPU untouched, so that the VM ends with the report. KVM never runs the
 * vCPU here: on VT-x/AMD-V hosts these exits do not happen at all. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "emulate.h"
#include "util.h"
#include "vcpu.h"
#include "vmfixture.h"

#define RFLAGS_AC     (1ULL << 18)
#define RFLAGS_FIXED  0x2ULL
#define CODE_GPA      0x3000ULL
#define VEC_BP        3
#define STACK_TOP     0x8000ULL
#define BP_HANDLER_GPA 0x4000ULL
#define BP_HANDLER_PORT 0x80
#define BP_HANDLER_MARK 0xbb

struct emu {
	struct vmfix *f;
	struct vcpu v;
	size_t run_size;
};

static void emu_new(struct emu *e)
{
	char err[256] = "";
	int size;

	memset(e, 0, sizeof(*e));
	if (vmfix_create(&e->f, 16 * MiB, NULL, NULL, err, sizeof(err)) < 0)
		fail_msg("creating the test VM: %s", err);
	e->v.vm = e->f->vm;
	e->v.fd = ioctl(e->f->vm->fd, KVM_CREATE_VCPU, 0UL);
	if (e->v.fd < 0)
		fail_msg("KVM_CREATE_VCPU: %s", strerror(errno));
	size = ioctl(e->f->vm->kh.fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (size <= 0)
		fail_msg("KVM_GET_VCPU_MMAP_SIZE: %s", strerror(errno));
	e->run_size = (size_t)size;
	e->v.run = mmap(NULL, e->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, e->v.fd, 0);
	if (e->v.run == MAP_FAILED)
		fail_msg("mapping the run area: %s", strerror(errno));
}

static void emu_free(struct emu *e)
{
	munmap(e->v.run, e->run_size);
	close(e->v.fd);
	vmfix_destroy(e->f);
}

/* The vCPU at CODE_GPA, flat (CS base 0, paging off: linear = physical), with
 * recognisable values in the other registers. */
static void set_state(struct emu *e, uint64_t rflags)
{
	struct kvm_sregs s;
	struct kvm_regs r = { .rax = 0x1111, .rbx = 0x2222, .rcx = 0x3333, .rsp = STACK_TOP,
			      .rip = CODE_GPA, .rflags = RFLAGS_FIXED | rflags };

	assert_int_equal(ioctl(e->v.fd, KVM_GET_SREGS, &s), 0);
	s.cs.base = 0;
	s.cs.selector = 0;
	s.ss.base = 0;
	s.ss.selector = 0;
	s.idt.base = 0;
	s.idt.limit = 0x3ff;
	assert_int_equal(ioctl(e->v.fd, KVM_SET_SREGS, &s), 0);
	assert_int_equal(ioctl(e->v.fd, KVM_SET_REGS, &r), 0);
}

/* What KVM leaves in the run area for an emulation failure; with_bytes false
 * is an older host's exit, which carries no instruction bytes. */
static void set_exit(struct emu *e, const uint8_t *insn, unsigned n, bool with_bytes)
{
	struct kvm_run *run = e->v.run;

	run->exit_reason = KVM_EXIT_INTERNAL_ERROR;
	memset(&run->emulation_failure, 0, sizeof(run->emulation_failure));
	run->emulation_failure.suberror = KVM_INTERNAL_ERROR_EMULATION;
	if (with_bytes) {
		run->emulation_failure.ndata = 3;
		run->emulation_failure.flags = KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES;
		run->emulation_failure.insn_size = (uint8_t)n;
		memcpy(run->emulation_failure.insn_bytes, insn, n);
	}
}

/* Runs the vCPU (real mode, as set_state leaves it) into its #BP handler,
 * which reports through port 0x80; the return address it finds on its stack
 * must be the instruction after the int3. */
static void check_bp_delivered(struct emu *e, const char *what)
{
	static const uint8_t handler[] = { 0xb0, BP_HANDLER_MARK, 0xe6, BP_HANDLER_PORT, 0xf4 };
	static const uint8_t after_int3[] = { 0xe6, BP_HANDLER_PORT + 1, 0xf4 };
	const uint16_t ivt_bp[2] = { (uint16_t)BP_HANDLER_GPA, 0 };   /* offset, segment */
	struct kvm_run *run = e->v.run;
	uint16_t frame[3];
	struct kvm_userspace_memory_region slot = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = e->f->vm->mem.region[0].size,
		.userspace_addr = (uint64_t)(uintptr_t)e->f->vm->mem.region[0].host,
	};

	assert_int_equal(ioctl(e->f->vm->fd, KVM_SET_USER_MEMORY_REGION, &slot), 0);
	assert_int_equal(guest_mem_write(&e->f->vm->mem, VEC_BP * 4, ivt_bp, sizeof(ivt_bp)), 0);
	assert_int_equal(guest_mem_write(&e->f->vm->mem, BP_HANDLER_GPA, handler,
					 sizeof(handler)), 0);
	/* Without the #BP, the guest runs on after the int3 and says so. */
	assert_int_equal(guest_mem_write(&e->f->vm->mem, CODE_GPA + 1, after_int3,
					 sizeof(after_int3)), 0);
	if (ioctl(e->v.fd, KVM_RUN, 0) < 0)
		fail_msg("%s: KVM_RUN: %s", what, strerror(errno));
	if (run->exit_reason != KVM_EXIT_IO || run->io.port != BP_HANDLER_PORT ||
	    ((uint8_t *)run)[run->io.data_offset] != BP_HANDLER_MARK)
		fail_msg("%s: the guest did not reach its #BP handler (exit reason %u%s)", what,
			 run->exit_reason,
			 run->exit_reason == KVM_EXIT_IO && run->io.port == BP_HANDLER_PORT + 1 ?
			 ": it ran on after the int3" : "");
	assert_int_equal(guest_mem_read(&e->f->vm->mem, STACK_TOP - sizeof(frame), frame,
					sizeof(frame)), 0);
	if (frame[0] != CODE_GPA + 1 || frame[1] != 0)
		fail_msg("%s: #BP handler returns to %04x:%04x, expected 0000:%04llx", what,
			 frame[1], frame[0], CODE_GPA + 1);
}

static unsigned long count(struct emu *e, enum emul_kind k)
{
	return atomic_load(&e->f->vm->emul_count[k]);
}

struct insn_case {
	const char *what;
	uint8_t bytes[15];
	unsigned n;                  /* bytes in the exit */
	uint64_t rflags_before;
	bool handled;
	unsigned len;                /* how far RIP moves */
	uint64_t rflags_after;
	bool bp;                     /* #BP injected */
	enum emul_kind kind;
};

static const struct insn_case cases[] = {
	{ "int3", { 0xcc }, 1, 0, true, 1, 0, true, EMUL_INT3 },
	{ "int3 with the next instructions' bytes", { 0xcc, 0x0f, 0x01, 0xca, 0x90 }, 5, 0,
	  true, 1, 0, true, EMUL_INT3 },
	{ "fwait", { 0x9b }, 1, 0, true, 1, 0, false, EMUL_FWAIT },
	{ "fwait keeps AC", { 0x9b, 0xcc }, 2, RFLAGS_AC, true, 1, RFLAGS_AC, false, EMUL_FWAIT },
	{ "clac with AC set", { 0x0f, 0x01, 0xca }, 3, RFLAGS_AC, true, 3, 0, false, EMUL_CLAC },
	{ "clac with AC clear", { 0x0f, 0x01, 0xca, 0xcc }, 4, 0, true, 3, 0, false, EMUL_CLAC },
	{ "stac with AC clear", { 0x0f, 0x01, 0xcb }, 3, 0, true, 3, RFLAGS_AC, false, EMUL_STAC },
	{ "stac with AC set", { 0x0f, 0x01, 0xcb }, 3, RFLAGS_AC, true, 3, RFLAGS_AC, false,
	  EMUL_STAC },
	{ "ud2", { 0x0f, 0x0b }, 2, 0, false, 0, 0, false, 0 },
	{ "xrstor (%rdi)", { 0x0f, 0xae, 0x2f }, 3, 0, false, 0, 0, false, 0 },
	{ "int $3 (cd 03, not the one-byte int3)", { 0xcd, 0x03 }, 2, 0, false, 0, 0, false, 0 },
	{ "clac cut short (2 of 3 bytes)", { 0x0f, 0x01 }, 2, RFLAGS_AC, false, 0, RFLAGS_AC,
	  false, 0 },
	{ "vmcall (0f 01 c1)", { 0x0f, 0x01, 0xc1 }, 3, 0, false, 0, 0, false, 0 },
};

static void check_case(const struct insn_case *c, bool with_bytes)
{
	unsigned long before[EMUL_NR_KINDS];
	struct kvm_vcpu_events ev;
	struct kvm_regs r;
	struct emu e;
	bool handled;

	emu_new(&e);
	set_state(&e, c->rflags_before);
	if (!with_bytes)
		assert_int_equal(guest_mem_write(&e.f->vm->mem, CODE_GPA, c->bytes, c->n), 0);
	set_exit(&e, c->bytes, c->n, with_bytes);
	for (unsigned k = 0; k < EMUL_NR_KINDS; k++)
		before[k] = count(&e, (enum emul_kind)k);

	handled = emulate_failure(&e.v);

	if (handled != c->handled)
		fail_msg("%s (bytes %s): %s, expected %s", c->what,
			 with_bytes ? "in the exit" : "read from guest memory",
			 handled ? "performed" : "refused", c->handled ? "performed" : "refused");
	assert_int_equal(ioctl(e.v.fd, KVM_GET_REGS, &r), 0);
	if (r.rip != CODE_GPA + c->len)
		fail_msg("%s: RIP 0x%llx, expected 0x%llx", c->what, (unsigned long long)r.rip,
			 (unsigned long long)(CODE_GPA + c->len));
	if (r.rflags != (RFLAGS_FIXED | c->rflags_after))
		fail_msg("%s: RFLAGS 0x%llx, expected 0x%llx", c->what,
			 (unsigned long long)r.rflags,
			 (unsigned long long)(RFLAGS_FIXED | c->rflags_after));
	assert_true(r.rax == 0x1111 && r.rbx == 0x2222 && r.rcx == 0x3333 && r.rsp == STACK_TOP);
	for (unsigned k = 0; k < EMUL_NR_KINDS; k++) {
		unsigned long want = before[k] + (c->handled && k == c->kind);

		if (count(&e, (enum emul_kind)k) != want)
			fail_msg("%s: count of kind %u is %lu, expected %lu", c->what, k,
				 count(&e, (enum emul_kind)k), want);
	}
	/* KVM_GET_VCPU_EVENTS hides software exceptions (#BP) by design, so the
	 * #BP is checked where it matters: the guest takes it. */
	if (c->bp) {
		check_bp_delivered(&e, c->what);
	} else {
		assert_int_equal(ioctl(e.v.fd, KVM_GET_VCPU_EVENTS, &ev), 0);
		if (ev.exception.injected || ev.exception.pending)
			fail_msg("%s: exception %u injected, expected none", c->what,
				 ev.exception.nr);
	}
	emu_free(&e);
}

static void test_bytes_in_exit(void **unused)
{
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
		check_case(&cases[i], true);
}

/* Hosts that give no bytes: they are read at RIP through the vCPU's
 * translation (here: paging off). */
static void test_bytes_from_guest_memory(void **unused)
{
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
		check_case(&cases[i], false);
}

/* The crash report prints what emulate_fetch returns: never more than the
 * caller's room, nor more than an x86 instruction's 15 bytes, whatever size
 * the host wrote. */
static void test_fetch_limits(void **unused)
{
	static const uint8_t fifteen[15] = { 0xcc, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14 };
	uint8_t buf[16];
	struct emu e;

	emu_new(&e);
	set_state(&e, 0);
	set_exit(&e, fifteen, 15, true);
	assert_int_equal(emulate_fetch(&e.v, buf, sizeof(buf)), 15);
	assert_memory_equal(buf, fifteen, 15);
	assert_int_equal(emulate_fetch(&e.v, buf, 4), 4);
	/* A host's insn_size above 15 is cut to the architectural maximum. */
	e.v.run->emulation_failure.insn_size = 200;
	assert_int_equal(emulate_fetch(&e.v, buf, sizeof(buf)), 15);
	emu_free(&e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bytes_in_exit),
		cmocka_unit_test(test_bytes_from_guest_memory),
		cmocka_unit_test(test_fetch_limits),
	};

	if (!vmfix_kvm_usable("test_emulate"))
		return VMFIX_SKIP;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
