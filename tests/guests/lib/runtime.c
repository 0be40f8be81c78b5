/* Ring-3 start-up, exit paths and the report of unexpected exceptions. */
#include "guest.h"

#define PORT_DEBUG_EXIT 0x501

struct bootinfo bootinfo;

void guest_ring3_start(void) __attribute__((noreturn, used));
void exception_report(const uint64_t *frame) __attribute__((noreturn, used));

void guest_ring3_start(void)
{
	/* The loader zeroes BSS in an ELF, but not necessarily in a bzImage
	 * (or after a reset that reloads only the file). Nothing below
	 * _bss_start is in use yet that lives in .bss (head.S keeps its state
	 * in .data). */
	memset(_bss_start, 0, (size_t)(_bss_end - _bss_start));
	bootinfo_save(&bootinfo);
	serial_init();
	if (bootinfo.error) {
		printf("guest: FAIL boot information: %s\n", bootinfo.error_msg);
		guest_exit(GUEST_EXIT_FAIL);
	}
	guest_exit((uint8_t)main());
}

void guest_halt(void)
{
	for (;;)
		sys_call(SYS_HALT, 0, 0);
}

void guest_exit(uint8_t code)
{
	outb(PORT_DEBUG_EXIT, code);
	guest_halt();
}

/* Runs in ring 0 (slowly), on the exception's way to a halt. */
void exception_report(const uint64_t *frame)
{
	uint64_t cr2;

	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	printf("guest: FAIL exception %lu error 0x%lx at rip 0x%lx (cs 0x%lx) "
	       "rflags 0x%lx rsp 0x%lx cr2 0x%lx\n",
	       frame[0], frame[1], frame[2], frame[3], frame[4], frame[5], cr2);
	outb(PORT_DEBUG_EXIT, GUEST_EXIT_EXCEPTION);
	for (;;)
		__asm__ volatile("cli; hlt");
}
