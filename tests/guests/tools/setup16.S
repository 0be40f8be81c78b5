/* Real-mode setup code of the test guests' bzImages (boot protocol 2.15).
 *
 * A loader that boots through the real-mode entry (QEMU's firmware does)
 * loads this area at seg:0 and jumps to (seg + 0x20):0, that is offset
 * 0x200, with DS = ES = SS = seg. This code then does what a kernel's setup
 * does for the test guests: it turns the area itself into boot_params (the
 * loader has filled the setup header at 0x1f1; everything else of the first
 * 4 KiB is zero in the file), fills the e820 table from BIOS int 0x15, and
 * enters the 32-bit boot protocol: flat segments 0x10/0x18, %esi =
 * boot_params, jump to code32_start.
 *
 *   0x0000-0x0fff  boot_params; mkbzimage fills the header at 0x1f1
 *   0x0200         2-byte jump over the header (boot protocol)
 *   0x1000         the code below, then its stack
 */
#define BP_E820_ENTRIES   0x1e8
#define BP_CODE32_START   0x214
#define BP_E820_TABLE     0x2d0
#define E820_MAX          128
#define SMAP              0x534d4150

	.code16
	.text
	.globl setup_start
setup_start:
	.org 0x200
	.byte	0xeb, after_header - setup_start - 0x202
	.org 0x26c			/* end of the 2.15 setup header */
after_header:
	jmp	setup_main

	.org 0x1000
setup_main:
	cli
	cld
	movw	%ds, %ax
	pushw	%ax			/* CS = DS, so labels are CS offsets too */
	pushw	$1f
	lretw
1:	movw	%ax, %es
	movw	%ax, %ss
	movw	$stack_top, %sp

	movb	$0, BP_E820_ENTRIES
	xorl	%ebx, %ebx
	movw	$BP_E820_TABLE, %di
2:	movl	$0xe820, %eax
	movl	$20, %ecx
	movl	$SMAP, %edx
	int	$0x15
	jc	3f
	cmpl	$SMAP, %eax
	jne	3f
	incb	BP_E820_ENTRIES
	addw	$20, %di
	testl	%ebx, %ebx
	jz	3f
	cmpb	$E820_MAX, BP_E820_ENTRIES
	jb	2b
3:
	movw	%ds, %ax
	movzwl	%ax, %esi
	shll	$4, %esi		/* boot_params, linear */
	addl	%esi, gdt_desc + 2
	movl	BP_CODE32_START, %eax
	movl	%eax, pm_entry
	lgdtl	gdt_desc
	movl	%cr0, %eax
	orl	$1, %eax
	movl	%eax, %cr0
	movw	$0x18, %ax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %fs
	movw	%ax, %gs
	movw	%ax, %ss
	ljmpl	*%cs:pm_entry

	.balign 8
gdt:
	.quad	0
	.quad	0
	.quad	0x00cf9a000000ffff	/* 0x10: code, 32-bit, flat */
	.quad	0x00cf92000000ffff	/* 0x18: data, flat */
gdt_end:
gdt_desc:
	.word	gdt_end - gdt - 1
	.long	gdt			/* plus the linear base, at run time */
pm_entry:
	.long	0
	.word	0x10

	.balign 16
stack:
	.fill	512, 1, 0
stack_top:
