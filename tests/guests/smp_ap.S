/* Application processor start-up for the smp guest. smp.c copies the
 * real-mode part [ap_trampoline_start, ap_trampoline_end) to a page below
 * 1 MiB (the SIPI vector names it) and patches in the GDT descriptor; the
 * rest runs in place in the image. An AP takes a slot, records its local
 * APIC id there, counts itself in, and halts; it needs no stack. */
#define KERNEL_CS32  0x08
#define KERNEL_CS64  0x10
#define KERNEL_DS    0x18
#define AP_MAX       256

	.text
	.code16
	.globl ap_trampoline_start, ap_trampoline_end, ap_trampoline_gdt_desc
ap_trampoline_start:
	cli
	movw	%cs, %ax
	movw	%ax, %ds
	lgdtl	ap_trampoline_gdt_desc - ap_trampoline_start
	movl	%cr0, %eax
	orl	$1, %eax
	movl	%eax, %cr0
	ljmpl	$KERNEL_CS32, $ap_entry32
	.balign 8
ap_trampoline_gdt_desc:
	.word	0
	.long	0
ap_trampoline_end:

	.code32
ap_entry32:
	movl	$KERNEL_DS, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movl	%cr4, %eax
	orl	$0x20, %eax		/* PAE */
	movl	%eax, %cr4
	movl	$boot_pml4, %eax
	movl	%eax, %cr3
	movl	$0xc0000080, %ecx	/* EFER.LME */
	rdmsr
	orl	$0x100, %eax
	wrmsr
	movl	%cr0, %eax
	orl	$0x80000001, %eax	/* PG, PE */
	movl	%eax, %cr0
	ljmp	$KERNEL_CS64, $ap_entry64

	.code64
ap_entry64:
	movq	ap_lapic_base(%rip), %rdx
	movl	0x20(%rdx), %eax	/* local APIC ID register */
	shrl	$24, %eax
	movl	$1, %ecx
	lock xaddl %ecx, ap_next_slot(%rip)
	cmpl	$AP_MAX, %ecx
	jae	1f
	movl	%eax, ap_ids(,%rcx,4)
	lock incl ap_checked_in(%rip)
1:	cli
	hlt
	jmp	1b
