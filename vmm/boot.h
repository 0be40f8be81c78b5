/* Loading a kernel: Linux bzImage through the 64-bit boot protocol, ELF
 * kernels through their PVH note (hvm_start_info, 32-bit entry) or their
 * 64-bit ELF entry (boot_params in %rsi, as the 64-bit boot protocol).
 * The format is read from the file's contents, never from its name.
 *
 * boot_prepare() parses and checks everything and decides where each piece
 * goes, so that every error is reported before the VM exists; boot_load()
 * then writes kernel, initrd, command line and boot information into guest
 * RAM, and can run again at each reset (the files stay open). */
#ifndef DROVER_BOOT_H
#define DROVER_BOOT_H

#include <stddef.h>
#include <stdint.h>
#include <linux/kvm.h>

#include "config.h"
#include "guest_mem.h"

#define BOOT_MAX_SEGMENTS 16
#define E820_MAX_ENTRIES  128

enum boot_format { BOOT_FORMAT_BZIMAGE, BOOT_FORMAT_ELF };
enum boot_entry { BOOT_ENTRY_PVH, BOOT_ENTRY_LINUX64 };

#define E820_RAM      1
#define E820_RESERVED 2
#define E820_ACPI     3

struct e820_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
} __attribute__((packed));

struct boot_segment {
	uint64_t file_offset, file_size;
	uint64_t paddr, mem_size;
};

struct boot_plan {
	enum boot_format format;
	enum boot_entry entry;
	uint64_t entry_addr;           /* RIP (64-bit entry) or EIP (PVH) */
	uint64_t kernel_start, kernel_end;
	unsigned nsegments;
	struct boot_segment seg[BOOT_MAX_SEGMENTS];
	uint8_t setup_header[0x290 - 0x1f1];  /* bzImage: header bytes to copy */
	unsigned setup_header_len;
	uint16_t protocol;             /* bzImage boot protocol version */
	uint64_t initrd_addr, initrd_size;
	uint64_t rsdp_addr;            /* set by the caller before boot_load */
	int kernel_fd, initrd_fd;
	const char *kernel_path, *initrd_path, *cmdline;
};

/* Opens and checks the kernel (and initrd), and places them in a guest whose
 * RAM is gm's. Returns 0, or -errno with one sentence in err naming the file
 * and the problem. */
int boot_prepare(struct boot_plan *bp, const struct vmm_config *cfg,
		 const struct guest_mem *gm, char *err, size_t errlen);

/* Writes kernel, initrd, command line, boot_params or hvm_start_info, the
 * memory map, the boot GDT and identity page tables into guest RAM. */
int boot_load(const struct boot_plan *bp, const struct guest_mem *gm, char *err, size_t errlen);

/* The BSP's registers at entry (sregs as read from the vCPU are adjusted). */
void boot_entry_state(const struct boot_plan *bp, struct kvm_regs *regs, struct kvm_sregs *sregs);

void boot_close(struct boot_plan *bp);

/* The memory map the guest is given; returns the number of entries. */
unsigned boot_e820(const struct guest_mem *gm, struct e820_entry *out, unsigned max);

const char *boot_entry_name(enum boot_entry e);

#endif
