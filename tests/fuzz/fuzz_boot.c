/* fuzz_boot: bytes -> a kernel file -> boot_prepare and boot_load into a small
 * guest RAM, as drover-vmm does before the guest's first instruction. The
 * same file is also given as the initrd when the settings byte says so.
 *
 * Input: one settings byte, then the file.
 *   bits 0-1  boot protocol (auto, pvh, linux64; 3 is auto)
 *   bit  2    the file is the initrd too
 *   bit  3    a long command line (1000 bytes) instead of a short one
 *   bits 4-5  guest RAM: 2, 8, 32 or 64 MiB
 *
 * Beyond the sanitizers, a plan boot_prepare accepts must be one that
 * boot_load can carry out and that stays inside guest RAM: every segment
 * above 1 MiB, within the file and within RAM, the entry point inside the
 * kernel, the initrd between the kernel's end and the end of low RAM. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "boot.h"
#include "layout.h"
#include "util.h"

static const uint64_t ram_sizes[] = { 2 * MiB, 8 * MiB, 32 * MiB, 64 * MiB };

/* Mapped once: mapping and unmapping 64 MiB per input would be most of the
 * run time. boot_load writes everything it relies on, so reuse is fair. */
static struct guest_mem *ram(unsigned i)
{
	static struct guest_mem mem[ARRAY_SIZE(ram_sizes)];
	static int ready[ARRAY_SIZE(ram_sizes)];

	if (!ready[i]) {
		if (guest_mem_init(&mem[i], ram_sizes[i]) < 0)
			abort();
		ready[i] = 1;
	}
	return &mem[i];
}

#define CHECK(cond, ...) do { \
	if (!(cond)) { \
		fprintf(stderr, "fuzz_boot: broken invariant: " __VA_ARGS__); \
		fprintf(stderr, "\n"); \
		abort(); \
	} \
} while (0)

static void check_plan(const struct boot_plan *bp, const struct guest_mem *gm, uint64_t fsize)
{
	CHECK(bp->nsegments >= 1 && bp->nsegments <= BOOT_MAX_SEGMENTS, "%u segments",
	      bp->nsegments);
	for (unsigned i = 0; i < bp->nsegments; i++) {
		const struct boot_segment *s = &bp->seg[i];

		CHECK(s->paddr >= BIOS_AREA_END, "segment %u at 0x%llx, below 1 MiB", i,
		      (unsigned long long)s->paddr);
		CHECK(s->file_size <= s->mem_size, "segment %u: file size above memory size", i);
		CHECK(s->file_offset <= fsize && s->file_size <= fsize - s->file_offset,
		      "segment %u: outside the file", i);
		CHECK(guest_mem_ptr(gm, s->paddr, s->mem_size), "segment %u: outside RAM", i);
		CHECK(s->paddr >= bp->kernel_start && s->paddr + s->mem_size <= bp->kernel_end,
		      "segment %u: outside [kernel_start, kernel_end)", i);
	}
	CHECK(bp->entry_addr >= bp->kernel_start && bp->entry_addr < bp->kernel_end,
	      "entry 0x%llx outside the kernel", (unsigned long long)bp->entry_addr);
	CHECK(bp->entry != BOOT_ENTRY_PVH || bp->entry_addr <= UINT32_MAX,
	      "PVH entry above 4 GiB");
	CHECK(guest_mem_ptr(gm, bp->kernel_start, bp->kernel_end - bp->kernel_start),
	      "kernel [0x%llx, 0x%llx) outside RAM", (unsigned long long)bp->kernel_start,
	      (unsigned long long)bp->kernel_end);
	if (bp->initrd_path) {
		CHECK(bp->initrd_size == fsize, "initrd size %llu, file %llu",
		      (unsigned long long)bp->initrd_size, (unsigned long long)fsize);
		CHECK(bp->initrd_addr >= bp->kernel_end, "initrd overlaps the kernel");
		CHECK(bp->initrd_addr + bp->initrd_size <= guest_mem_low_end(gm),
		      "initrd beyond low RAM");
		CHECK(bp->initrd_addr % 4096 == 0, "initrd not page-aligned");
	}
}

static void check_err(const char *err, const char *what)
{
	CHECK(err[0], "%s failed without a message", what);
	for (const char *p = err; *p; p++)
		CHECK(*p != '\n', "%s: message of several lines: %s", what, err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char long_cmdline[1001];
	struct vmm_config cfg;
	struct boot_plan bp;
	const struct guest_mem *gm;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	char path[64], err[1024];
	uint8_t settings;
	int fd, ret;

	if (size < 1)
		return 0;
	settings = data[0];
	data++;
	size--;
	if (!long_cmdline[0])
		memset(long_cmdline, 'c', sizeof(long_cmdline) - 1);

	fd = memfd_create("fuzz-kernel", MFD_CLOEXEC);
	if (fd < 0 || write_full(fd, data, size) < 0)
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);

	/* Filled by hand, not through vmm_config_from_args: the strings are
	 * not the config's to free. */
	vmm_config_init(&cfg);
	cfg.kernel = path;
	cfg.initrd = settings & 4 ? path : NULL;
	cfg.cmdline = settings & 8 ? long_cmdline : "console=ttyS0 quiet";
	cfg.boot_protocol = (settings & 3) == 3 ? BOOT_AUTO : (enum boot_protocol)(settings & 3);
	gm = ram((settings >> 4) & 3);

	err[0] = '\0';
	ret = boot_prepare(&bp, &cfg, gm, err, sizeof(err));
	if (ret < 0) {
		CHECK(bp.kernel_fd < 0 && bp.initrd_fd < 0, "failed boot_prepare left a file open");
		check_err(err, "boot_prepare");
	} else {
		check_plan(&bp, gm, size);
		bp.rsdp_addr = ACPI_TABLES_ADDR;
		ret = boot_load(&bp, gm, err, sizeof(err));
		CHECK(ret == 0, "boot_load failed after boot_prepare accepted the file: %s", err);
		sregs = (struct kvm_sregs){ 0 };
		boot_entry_state(&bp, &regs, &sregs);
		CHECK(regs.rip == bp.entry_addr, "RIP is not the entry point");
		boot_close(&bp);
	}
	close(fd);
	return 0;
}
