/* Entry points, descriptor tables, page tables and ring-0 services of the
 * test guests. Linked at physical 0x100000 (guest.ld); .head comes first:
 *
 *   +0x000  32-bit Linux boot protocol entry (bzImage code32_start):
 *           flat 32-bit protected mode, %esi = boot_params
 *   +0x040  PVH entry (XEN_ELFNOTE_PHYS32_ENTRY): flat 32-bit protected
 *           mode, paging off, %ebx = hvm_start_info, no stack
 *   +0x1c0  kernel_info ("LToP") that boot protocol 2.15 points to
 *   +0x200  64-bit Linux boot protocol entry (ELF e_entry, and the bzImage
 *           64-bit entry): long mode, %rsi = boot_params, no valid stack
 *
 * Every path loads the guest's own GDT and page tables before touching
 * anything else, so nothing the loader set up is needed afterwards. Ring 0
 * then sets up the TSS and IDT and drops to ring 3 (IF=0, all ports open),
 * where all of the guest's C code runs: ring-0 instructions are emulated
 * here at about 1 us each, ring 3 runs natively. Keep ring-0 paths short. */

#define KERNEL_CS32  0x08
#define KERNEL_CS64  0x10
#define KERNEL_DS    0x18
#define USER_CS      0x23
#define USER_DS      0x2b
#define TSS_SEL      0x30

#define BOOT_KIND_PVH      1
#define BOOT_KIND_LINUX64  2
#define BOOT_KIND_LINUX32  3

#define CR0_PE   0x00000001
#define CR0_PG   0x80000000
#define CR4_PAE  0x00000020
#define MSR_EFER 0xc0000080
#define EFER_LME 0x00000100

#define IDT_ENTRIES    32
#define SYS_MAGIC      0x53595343	/* "CSYS" in %edx marks a ud2 as a call */

	.section .head, "ax"
	.code32
	.globl linux32_entry
linux32_entry:
	cli
	movl	$BOOT_KIND_LINUX32, boot_kind
	movl	%esi, boot_ptr
	jmp	enter_long_mode

	.org 0x40
	.globl pvh_entry
pvh_entry:
	cli
	movl	$BOOT_KIND_PVH, boot_kind
	movl	%ebx, boot_ptr

enter_long_mode:
	movl	$0, boot_ptr + 4
	lgdt	gdt_desc
	ljmp	$KERNEL_CS32, $1f
1:	movl	$KERNEL_DS, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movl	%eax, %fs
	movl	%eax, %gs
	movl	%cr4, %eax
	orl	$CR4_PAE, %eax
	movl	%eax, %cr4
	movl	$boot_pml4, %eax
	movl	%eax, %cr3
	movl	$MSR_EFER, %ecx
	rdmsr
	orl	$EFER_LME, %eax
	wrmsr
	movl	%cr0, %eax
	orl	$(CR0_PG | CR0_PE), %eax
	movl	%eax, %cr0
	ljmp	$KERNEL_CS64, $long_mode_start

	/* Boot protocol 2.15 kernel_info: magic, size, size_total,
	 * setup_type_max (this guest ignores setup_data altogether). */
	.org 0x1c0
	.globl kernel_info
kernel_info:
	.ascii	"LToP"
	.long	16
	.long	16
	.long	0x80000009

	.org 0x200
	.code64
	.globl linux64_entry
linux64_entry:
	cli
	movl	$BOOT_KIND_LINUX64, boot_kind(%rip)
	movq	%rsi, boot_ptr(%rip)
	lgdt	gdt_desc(%rip)
	movl	$boot_pml4, %eax
	movq	%rax, %cr3
	movl	$kernel_stack_top, %esp		/* the loader promises no stack */
	pushq	$KERNEL_CS64
	pushq	$long_mode_start
	lretq

	.text
long_mode_start:
	movl	$KERNEL_DS, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	xorl	%eax, %eax
	movl	%eax, %fs
	movl	%eax, %gs
	movl	$kernel_stack_top, %esp

	/* TSS descriptor: base split over three fields, known only at link
	 * time as a whole, so put together here. */
	movl	$tss, %eax
	movl	%eax, %edx
	shll	$16, %edx
	orl	$(tss_end - tss - 1), %edx
	movl	%edx, gdt_tss
	movl	%eax, %edx
	shrl	$16, %edx
	andl	$0xff, %edx
	andl	$0xff000000, %eax
	orl	%edx, %eax
	orl	$0x00008900, %eax		/* present, 64-bit available TSS */
	movl	%eax, gdt_tss + 4
	movl	$kernel_stack_top, %eax
	movq	%rax, tss + 4			/* RSP0 */
	movw	$(tss_iobitmap - tss), tss + 102
	movw	$TSS_SEL, %ax
	ltr	%ax

	/* IDT: exception stubs 0-31 (16 bytes apart); #UD also serves the
	 * ring-0 calls (ud_entry). */
	movl	$idt, %edi
	movl	$isr_stubs, %esi
	movl	$32, %ecx
	movl	$0x8e00, %edx			/* interrupt gate, DPL 0 */
2:	call	set_gate
	addl	$16, %esi
	addl	$16, %edi
	decl	%ecx
	jnz	2b
	movl	$(idt + 6 * 16), %edi
	movl	$ud_entry, %esi
	movl	$0x8e00, %edx
	call	set_gate
	lidt	idt_desc

	/* To ring 3 with IF=0 and IOPL=3 (the I/O bitmap opens the ports
	 * where, as under PVM, IOPL does not reach ring 3). */
	pushq	$USER_DS
	pushq	$user_stack_top
	pushq	$0x3002
	pushq	$USER_CS
	pushq	$guest_ring3_start
	iretq

/* %rdi = gate, %esi = handler (below 4 GiB), %edx = type bits. */
set_gate:
	movl	%esi, %eax
	andl	$0xffff, %eax
	orl	$(KERNEL_CS64 << 16), %eax
	movl	%eax, (%rdi)
	movl	%esi, %eax
	andl	$0xffff0000, %eax
	orl	%edx, %eax
	movl	%eax, 4(%rdi)
	ret

/* Exception stubs: push a dummy error code where the CPU pushes none. */
	.balign 16
isr_stubs:
	.set vec, 0
	.rept 32
	.balign 16
	.if (vec == 8) || (vec >= 10 && vec <= 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
	pushq	$vec
	.else
	pushq	$0
	pushq	$vec
	.endif
	jmp	isr_common
	.set vec, vec + 1
	.endr

isr_common:
	movq	%rsp, %rdi		/* vector, error, rip, cs, rflags, rsp, ss */
	andq	$-16, %rsp
	call	exception_report	/* does not return */
3:	cli
	hlt
	jmp	3b

/* Ring-0 services for ring 3 (see guest.h): %rax = number, %rdi, %rsi,
 * %edx = SYS_MAGIC, then ud2. A software interrupt would be the usual way,
 * but this host's KVM (PVM) turns every "int N" in ring 3 into #UD. */
ud_entry:
	cmpl	$SYS_MAGIC, %edx
	jne	1f
	pushq	%rax
	movq	8(%rsp), %rax
	cmpw	$0x0b0f, (%rax)
	popq	%rax
	jne	1f
	addq	$2, (%rsp)
	jmp	syscall_dispatch
1:	pushq	$0
	pushq	$6
	jmp	isr_common

syscall_dispatch:
	cmpq	$0, %rax
	je	sys_halt
	cmpq	$1, %rax
	je	sys_crash
	cmpq	$2, %rax
	je	sys_wrmsr
	cmpq	$3, %rax
	je	sys_flush_tlb
	movq	$-38, %rax
	iretq
sys_halt:
	cli
	hlt
	jmp	sys_halt
sys_crash:
	lidt	empty_idt_desc
	ud2
	jmp	sys_halt
sys_wrmsr:
	movl	%edi, %ecx
	movl	%esi, %eax
	movq	%rsi, %rdx
	shrq	$32, %rdx
	wrmsr
	xorl	%eax, %eax
	iretq
sys_flush_tlb:
	movq	%cr3, %rax
	movq	%rax, %cr3
	xorl	%eax, %eax
	iretq

/* Descriptor tables and everything ring 0 touches live in .data, not .bss:
 * the ring-3 start-up code clears .bss while they are in use. */
	.data
	.balign 16
	.globl gdt
gdt:
	.quad	0
	.quad	0x00cf9a000000ffff	/* 0x08 kernel code, 32-bit */
	.quad	0x00af9a000000ffff	/* 0x10 kernel code, 64-bit */
	.quad	0x00cf92000000ffff	/* 0x18 kernel data */
	.quad	0x00affa000000ffff	/* 0x20 user code, 64-bit */
	.quad	0x00cff2000000ffff	/* 0x28 user data */
gdt_tss:
	.quad	0			/* 0x30 TSS (16 bytes) */
	.quad	0
gdt_end:

	.balign 16
	.globl gdt_desc
gdt_desc:
	.word	gdt_end - gdt - 1
	.quad	gdt
	.balign 16
idt_desc:
	.word	IDT_ENTRIES * 16 - 1
	.quad	idt
	.balign 16
empty_idt_desc:
	.word	0
	.quad	0

	.balign 8
	.globl boot_kind, boot_ptr
boot_kind:
	.long	0
	.long	0
boot_ptr:
	.quad	0

	.balign 16
tss:
	.fill	104, 1, 0
/* Every port allowed to ring 3: this host's KVM (PVM) keeps IOPL at 0 in
 * ring 3 whatever iretq loads, so the permission comes from the bitmap. */
tss_iobitmap:
	.fill	8192, 1, 0
	.byte	0xff
tss_end:

	.balign 16
idt:
	.fill	IDT_ENTRIES * 16, 1, 0

	.balign 16
kernel_stack:
	.fill	8192, 1, 0
kernel_stack_top:
	.globl user_stack_top
user_stack:
	.fill	32768, 1, 0
user_stack_top:

/* Identity map of 0-4 GiB with 2 MiB pages, user-accessible at every level
 * (ring 3 runs everything); 3-4 GiB (MMIO) uncached. Built at assembly time
 * so that no ring-0 loop fills it. PDPT entries 4 and up are free for
 * guests that map RAM above 4 GiB. */
	.section .data.pagetables, "aw"
	.balign 4096
	.globl boot_pml4, boot_pdpt
boot_pml4:
	.quad	boot_pdpt + 0x7
	.fill	511, 8, 0
boot_pdpt:
	.quad	boot_pd + 0x0007
	.quad	boot_pd + 0x1007
	.quad	boot_pd + 0x2007
	.quad	boot_pd + 0x3007
	.fill	508, 8, 0
boot_pd:
	.set addr, 0
	.rept 2048
	.if addr >= 0xc0000000
	.quad	addr + 0x9f		/* P RW US PWT PCD PS */
	.else
	.quad	addr + 0x87		/* P RW US PS */
	.endif
	.set addr, addr + 0x200000
	.endr

/* PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY = 18): name "Xen", 8-byte value. */
	.section .note.Xen, "a", @note
	.balign 4
	.long	4
	.long	8
	.long	18
	.asciz	"Xen"
	.balign 4
	.quad	pvh_entry
	.balign 4
