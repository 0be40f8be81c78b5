/* The boot loader (vmm/boot.c) against the protocols it implements, on
 * kernel files the test writes itself:
 * - the Linux/x86 boot protocol (Documentation/arch/x86/boot.rst and
 *   zero-page.rst): the setup header and its end at 0x202 + the byte at
 *   0x201, boot_params offsets, the 64-bit entry at load address + 0x200 with
 *   %rsi = boot_params, CS 0x10 and DS/ES/SS 0x18 flat, paging on with the
 *   kernel, boot_params and command line identity-mapped; the kernel's
 *   runtime start (for a relocatable kernel the larger of load address and
 *   pref_address, aligned up to kernel_alignment) followed by init_size bytes
 *   it needs; the initrd wholly below initrd_addr_max;
 * - PVH (Xen's arch-x86/hvm/start_info.h and docs/misc/pvh.pandoc): the
 *   XEN_ELFNOTE_PHYS32_ENTRY (18) note, hvm_start_info version 1 with its
 *   module list and memory map, %ebx = start_info, 32-bit flat protected
 *   mode, paging off, CR4 clear, TR a busy 32-bit TSS base 0 limit 0x67;
 * - ELF64 program headers: PT_LOAD at p_paddr, p_memsz - p_filesz zeroed.
 * Offsets are written out here from those documents, independently of
 * boot.c's constants. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "acpi.h"
#include "boot.h"
#include "config.h"
#include "guest_mem.h"
#include "layout.h"
#include "mptable.h"
#include "platform.h"
#include "util.h"

/* boot_params (zero-page.rst) */
#define ZP_ACPI_RSDP_ADDR     0x070
#define ZP_EXT_RAMDISK_IMAGE  0x0c0
#define ZP_EXT_RAMDISK_SIZE   0x0c4
#define ZP_EXT_CMD_LINE_PTR   0x0c8
#define ZP_E820_ENTRIES       0x1e8
#define ZP_SENTINEL           0x1ef
#define ZP_E820_TABLE         0x2d0
#define ZP_E820_MAX           128
/* setup header (boot.rst), same offsets in the file and in boot_params */
#define H_START               0x1f1
#define H_SETUP_SECTS         0x1f1
#define H_VID_MODE            0x1fa
#define H_BOOT_FLAG           0x1fe
#define H_JUMP                0x200
#define H_MAGIC               0x202
#define H_VERSION             0x206
#define H_TYPE_OF_LOADER      0x210
#define H_LOADFLAGS           0x211
#define H_SETUP_MOVE_SIZE     0x212
#define H_CODE32_START        0x214
#define H_RAMDISK_IMAGE       0x218
#define H_RAMDISK_SIZE        0x21c
#define H_HEAP_END_PTR        0x224
#define H_EXT_LOADER_VER      0x226
#define H_EXT_LOADER_TYPE     0x227
#define H_CMD_LINE_PTR        0x228
#define H_INITRD_ADDR_MAX     0x22c
#define H_KERNEL_ALIGNMENT    0x230
#define H_RELOCATABLE         0x234
#define H_XLOADFLAGS          0x236
#define H_CMDLINE_SIZE        0x238
#define H_HW_SUBARCH          0x23c
#define H_SETUP_DATA          0x250
#define H_PREF_ADDRESS        0x258
#define H_INIT_SIZE           0x260
#define H_END_MAX             0x290   /* boot_params' edd_mbr_sig_buffer */
#define LF_LOADED_HIGH        0x01
#define LF_CAN_USE_HEAP       0x80
#define XLF_KERNEL_64         0x01
#define XLF_CAN_BE_LOADED_ABOVE_4G 0x02
/* hvm_start_info and its arrays */
#define SI_MAGIC_VALUE        0x336ec578
#define SI_MAGIC              0
#define SI_VERSION            4
#define SI_FLAGS              8
#define SI_NR_MODULES         12
#define SI_MODLIST_PADDR      16
#define SI_CMDLINE_PADDR      24
#define SI_RSDP_PADDR         32
#define SI_MEMMAP_PADDR       40
#define SI_MEMMAP_ENTRIES     48
#define SI_RESERVED           52
#define MOD_SIZE              32      /* paddr, size, cmdline_paddr, reserved */
#define MEMMAP_SIZE           24      /* addr, size, type, reserved */
#define XEN_ELFNOTE_PHYS32_ENTRY 18

#define TEST_RSDP             0xe0000ULL
#define PAGE                  4096ULL

static char tmpdir[64];

/* ---- little helpers ---- */

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)rd16(p) | (uint32_t)rd16(p + 2) << 16; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void wr32(uint8_t *p, uint32_t v) { wr16(p, (uint16_t)v); wr16(p + 2, (uint16_t)(v >> 16)); }
static void wr64(uint8_t *p, uint64_t v) { wr32(p, (uint32_t)v); wr32(p + 4, (uint32_t)(v >> 32)); }

/* A byte of a reproducible stream: file contents that no two places share. */
static uint8_t pat(uint32_t seed, uint64_t i)
{
	uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ULL ^ (uint64_t)(seed + 1) * 0xbf58476d1ce4e5b9ULL;

	x ^= x >> 29;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 32;
	return (uint8_t)x;
}

static int make_tmpdir(void **unused)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_boot.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **unused)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static const char *tmp_path(const char *name)
{
	static char path[4][128];
	static unsigned next;
	char *p = path[next++ % 4];

	snprintf(p, sizeof(path[0]), "%s/%s", tmpdir, name);
	return p;
}

static void write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}

static void write_pattern_file(const char *path, uint32_t seed, size_t len)
{
	uint8_t *buf = malloc(len ? len : 1);

	assert_non_null(buf);
	for (size_t i = 0; i < len; i++)
		buf[i] = pat(seed, i);
	write_file(path, buf, len);
	free(buf);
}

static void check_pattern(const struct guest_mem *gm, uint64_t gpa, uint32_t seed, uint64_t len,
			  const char *what)
{
	const uint8_t *p = guest_mem_ptr(gm, gpa, len);

	if (!p)
		fail_msg("%s: [0x%llx, +0x%llx) is not RAM", what, (unsigned long long)gpa,
			 (unsigned long long)len);
	for (uint64_t i = 0; i < len; i++)
		if (p[i] != pat(seed, i))
			fail_msg("%s: byte 0x%llx at 0x%llx differs from the file", what,
				 (unsigned long long)i, (unsigned long long)(gpa + i));
}

static void check_zero(const struct guest_mem *gm, uint64_t gpa, uint64_t len, const char *what)
{
	const uint8_t *p = guest_mem_ptr(gm, gpa, len);

	assert_non_null(p);
	for (uint64_t i = 0; i < len; i++)
		if (p[i])
			fail_msg("%s: byte 0x%llx at 0x%llx is 0x%02x, not zero", what,
				 (unsigned long long)i, (unsigned long long)(gpa + i), p[i]);
}

static void init_mem(struct guest_mem *gm, uint64_t ram)
{
	int ret = guest_mem_init(gm, ram);

	if (ret < 0)
		fail_msg("guest_mem_init(%llu MiB): %s", (unsigned long long)(ram >> 20),
			 strerror(-ret));
}

static void config(struct vmm_config *cfg, const char *kernel, const char *initrd,
		   const char *cmdline, enum boot_protocol proto)
{
	vmm_config_init(cfg);
	cfg->kernel = (char *)kernel;
	cfg->initrd = (char *)initrd;
	cfg->cmdline = (char *)cmdline;
	cfg->boot_protocol = proto;
}

/* boot_prepare that must succeed, then boot_load with the RSDP known. */
static void prepare_and_load(struct boot_plan *bp, const struct vmm_config *cfg,
			     const struct guest_mem *gm)
{
	char err[512] = "";

	if (boot_prepare(bp, cfg, gm, err, sizeof(err)) < 0)
		fail_msg("boot_prepare('%s'): %s", cfg->kernel, err);
	bp->rsdp_addr = TEST_RSDP;
	if (boot_load(bp, gm, err, sizeof(err)) < 0)
		fail_msg("boot_load('%s'): %s", cfg->kernel, err);
}

/* boot_prepare that must fail with ret; err must contain each word. */
static void expect_refusal(const struct vmm_config *cfg, const struct guest_mem *gm, int ret,
			   const char *word1, const char *word2, const char *what)
{
	struct boot_plan bp;
	char err[512] = "";
	int got = boot_prepare(&bp, cfg, gm, err, sizeof(err));

	if (got != ret)
		fail_msg("%s: boot_prepare returned %d (%s), expected %d", what, got, err, ret);
	if ((word1 && !strstr(err, word1)) || (word2 && !strstr(err, word2)))
		fail_msg("%s: message '%s' does not say '%s' and '%s'", what, err, word1,
			 word2 ? word2 : "");
	/* Nothing stays open after a refusal. */
	assert_int_equal(bp.kernel_fd, -1);
	assert_int_equal(bp.initrd_fd, -1);
}

/* ---- ELF kernels ---- */

struct elf_seg {
	uint64_t paddr, filesz, memsz;
};

struct elf_note {
	const char *name;
	uint32_t type;
	uint32_t descsz;
	uint64_t value;          /* desc: this value in descsz bytes, or a pattern */
};

struct elf_spec {
	uint8_t ei_class;        /* 0: ELFCLASS64 */
	uint16_t machine;        /* 0: EM_X86_64 */
	uint16_t type;           /* 0: ET_EXEC */
	uint64_t entry;
	unsigned nseg;
	struct elf_seg seg[4];
	unsigned nnotes;
	struct elf_note note[3];
	bool note_after_loads;   /* PT_NOTE after the PT_LOADs in the table */
	uint64_t bad_offset;     /* nonzero: segment 0's p_offset */
};

#define ELF_SEED(i) (100 + (i))

static size_t put_note(uint8_t *p, const struct elf_note *n)
{
	uint32_t namesz = (uint32_t)strlen(n->name) + 1;
	size_t off = 12;

	wr32(p, namesz);
	wr32(p + 4, n->descsz);
	wr32(p + 8, n->type);
	memcpy(p + off, n->name, namesz);
	off += ALIGN_UP(namesz, 4u);
	for (uint32_t i = 0; i < n->descsz; i++)
		p[off + i] = n->descsz <= 8 ? (uint8_t)(n->value >> (8 * i)) : pat(7, i);
	return off + ALIGN_UP(n->descsz, 4u);
}

/* Writes the ELF file: header, program headers, notes, then each segment's
 * file bytes (pattern ELF_SEED(i)) at 4 KiB-aligned offsets. */
static void write_elf(const char *path, const struct elf_spec *s)
{
	unsigned nph = s->nseg + (s->nnotes ? 1 : 0);
	size_t notes_off = 64 + nph * 56, notes_len = 0, off, size;
	uint8_t notes[1024] = { 0 };
	uint64_t seg_off[4];
	uint8_t *f;
	unsigned ph = 0;

	for (unsigned i = 0; i < s->nnotes; i++)
		notes_len += put_note(notes + notes_len, &s->note[i]);
	off = ALIGN_UP(notes_off + notes_len, PAGE);
	for (unsigned i = 0; i < s->nseg; i++) {
		seg_off[i] = off;
		off = ALIGN_UP(off + s->seg[i].filesz, PAGE);
	}
	size = off;
	f = calloc(1, size);
	assert_non_null(f);
	memcpy(f, ELFMAG, SELFMAG);
	f[EI_CLASS] = s->ei_class ? s->ei_class : ELFCLASS64;
	f[EI_DATA] = ELFDATA2LSB;
	f[EI_VERSION] = EV_CURRENT;
	wr16(f + 16, s->type ? s->type : ET_EXEC);
	wr16(f + 18, s->machine ? s->machine : EM_X86_64);
	wr32(f + 20, EV_CURRENT);
	wr64(f + 24, s->entry);
	wr64(f + 32, 64);                 /* e_phoff */
	wr16(f + 52, 64);                 /* e_ehsize */
	wr16(f + 54, 56);                 /* e_phentsize */
	wr16(f + 56, (uint16_t)nph);
	wr16(f + 58, 64);                 /* e_shentsize, no sections */
	for (unsigned k = 0; k < nph; k++) {
		bool is_note = s->nnotes && (s->note_after_loads ? k == nph - 1 : k == 0);
		uint8_t *p = f + 64 + 56 * ph++;

		if (is_note) {
			wr32(p, PT_NOTE);
			wr32(p + 4, PF_R);
			wr64(p + 8, notes_off);
			wr64(p + 32, notes_len);
			wr64(p + 40, notes_len);
			wr64(p + 48, 4);
			continue;
		}
		unsigned i = s->nnotes && !s->note_after_loads ? k - 1 : k;
		const struct elf_seg *g = &s->seg[i];

		wr32(p, PT_LOAD);
		wr32(p + 4, PF_R | PF_X | PF_W);
		wr64(p + 8, i == 0 && s->bad_offset ? s->bad_offset : seg_off[i]);
		wr64(p + 16, 0xffffffff80000000ULL + g->paddr);   /* p_vaddr: not used */
		wr64(p + 24, g->paddr);
		wr64(p + 32, g->filesz);
		wr64(p + 40, g->memsz);
		wr64(p + 48, PAGE);
	}
	memcpy(f + notes_off, notes, notes_len);
	for (unsigned i = 0; i < s->nseg; i++)
		for (uint64_t b = 0; b < s->seg[i].filesz; b++)
			f[seg_off[i] + b] = pat(ELF_SEED(i), b);
	write_file(path, f, size);
	free(f);
}

/* A kernel like Linux's vmlinux: text, data with a .bss, and a third
 * segment past a gap; the entry inside the first one. */
static struct elf_spec vmlinux_like(bool pvh, unsigned descsz)
{
	struct elf_spec s = {
		.entry = 0x1000000,
		.nseg = 3,
		.seg = {
			{ 0x1000000, 0x23456, 0x23456 },
			{ 0x1200000, 0x5001, 0x40000 },        /* .data + .bss */
			{ 0x1400000, 0x800, 0x3000 },
		},
		.nnotes = 1,
		.note = { { "GNU", 3, 20, 0 } },               /* build id */
	};

	if (pvh)
		s.note[s.nnotes++] = (struct elf_note){ "Xen", XEN_ELFNOTE_PHYS32_ENTRY, descsz,
							0x1000040 };
	return s;
}

static void check_elf_segments(const struct guest_mem *gm, const struct elf_spec *s)
{
	for (unsigned i = 0; i < s->nseg; i++) {
		const struct elf_seg *g = &s->seg[i];
		char what[64];

		snprintf(what, sizeof(what), "segment %u", i);
		check_pattern(gm, g->paddr, ELF_SEED(i), g->filesz, what);
		snprintf(what, sizeof(what), "segment %u's .bss", i);
		check_zero(gm, g->paddr + g->filesz, g->memsz - g->filesz, what);
	}
}

/* ---- bzImages ---- */

struct bz_spec {
	uint16_t version;
	uint8_t setup_sects;       /* 0 means 4, as the protocol says */
	uint8_t loadflags;
	uint16_t xloadflags;
	uint8_t relocatable;
	uint8_t jump_len;          /* the header ends at 0x202 + this */
	uint32_t kernel_alignment, init_size, initrd_addr_max, cmdline_size;
	uint64_t pref_address;
	uint32_t payload_size;
	uint32_t truncate_to;      /* nonzero: file cut to this many bytes */
};

#define BZ_HDR_SEED     11
#define BZ_PAYLOAD_SEED 12

static struct bz_spec linux_like(void)
{
	return (struct bz_spec){
		.version = 0x020f,
		.setup_sects = 27,
		.loadflags = LF_LOADED_HIGH,
		.xloadflags = XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G,
		.relocatable = 1,
		.jump_len = 0x66,            /* header through 0x267 */
		.kernel_alignment = 0x200000,
		.init_size = 24 << 20,
		.initrd_addr_max = 0x7fffffff,
		.cmdline_size = 2047,
		.pref_address = 0x1000000,
		.payload_size = 300000,
	};
}

static unsigned bz_setup_sects(const struct bz_spec *b)
{
	return b->setup_sects ? b->setup_sects : 4;
}

static void write_bzimage(const char *path, const struct bz_spec *b)
{
	size_t setup = (bz_setup_sects(b) + 1) * 512, size = setup + b->payload_size;
	uint8_t *f = malloc(size);

	assert_non_null(f);
	for (size_t i = 0; i < setup; i++)
		f[i] = pat(BZ_HDR_SEED, i);
	for (size_t i = 0; i < b->payload_size; i++)
		f[setup + i] = pat(BZ_PAYLOAD_SEED, i);
	f[H_SETUP_SECTS] = b->setup_sects;
	wr16(f + H_BOOT_FLAG, 0xaa55);
	f[H_JUMP] = 0xeb;
	f[H_JUMP + 1] = b->jump_len;
	memcpy(f + H_MAGIC, "HdrS", 4);
	wr16(f + H_VERSION, b->version);
	f[H_TYPE_OF_LOADER] = 0;
	f[H_LOADFLAGS] = b->loadflags;
	wr32(f + H_CODE32_START, 0x100000);
	wr64(f + H_RAMDISK_IMAGE, 0);
	wr32(f + H_HEAP_END_PTR, 0);
	wr32(f + H_CMD_LINE_PTR, 0);
	wr32(f + H_INITRD_ADDR_MAX, b->initrd_addr_max);
	wr32(f + H_KERNEL_ALIGNMENT, b->kernel_alignment);
	f[H_RELOCATABLE] = b->relocatable;
	wr16(f + H_XLOADFLAGS, b->xloadflags);
	wr32(f + H_CMDLINE_SIZE, b->cmdline_size);
	memset(f + H_HW_SUBARCH, 0, 12);
	wr64(f + H_SETUP_DATA, 0);
	wr64(f + H_PREF_ADDRESS, b->pref_address);
	wr32(f + H_INIT_SIZE, b->init_size);
	write_file(path, f, b->truncate_to ? b->truncate_to : size);
	free(f);
}

/* Where a bzImage loaded at `load` runs, by boot.rst's init_size algorithm. */
static uint64_t runtime_start(const struct bz_spec *b, uint64_t load)
{
	if (!b->relocatable)
		return b->pref_address;
	if (load < b->pref_address)
		load = b->pref_address;
	return ALIGN_UP(load, (uint64_t)b->kernel_alignment);
}

/* ---- memory map ---- */

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

/* Checks what any e820 map given to a guest of gm's RAM must satisfy. */
static void check_e820(const struct guest_mem *gm, const struct e820_entry *map, unsigned n)
{
	uint64_t ram_above_1m = 0, ram_total = gm->ram_size;

	assert_true(n > 0);
	/* Conventional memory from 0, up to the EBDA. */
	assert_int_equal(map[0].addr, 0);
	assert_int_equal(map[0].type, E820_RAM);
	assert_true(map[0].size >= 0x9f000 && map[0].size <= 0xa0000);
	for (unsigned i = 0; i < n; i++) {
		const struct e820_entry *e = &map[i];

		if (e->size == 0)
			fail_msg("entry %u is empty", i);
		if (e->type < 1 || e->type > 5)
			fail_msg("entry %u has type %u", i, e->type);
		if (i > 0 && e->addr < map[i - 1].addr + map[i - 1].size)
			fail_msg("entry %u [0x%llx, +0x%llx) overlaps or precedes entry %u", i,
				 (unsigned long long)e->addr, (unsigned long long)e->size, i - 1);
		if (e->type != E820_RAM)
			continue;
		/* RAM that the guest is told about exists. */
		if (!guest_mem_ptr(gm, e->addr, e->size))
			fail_msg("RAM entry [0x%llx, +0x%llx) is not backed by guest RAM",
				 (unsigned long long)e->addr, (unsigned long long)e->size);
		if (overlaps(e->addr, e->size, PCI_HOLE_START, HIGH_RAM_START - PCI_HOLE_START))
			fail_msg("RAM entry [0x%llx, +0x%llx) in the PCI hole",
				 (unsigned long long)e->addr, (unsigned long long)e->size);
		/* The legacy VGA/BIOS area is never RAM. */
		if (overlaps(e->addr, e->size, LOW_RAM_END, BIOS_AREA_END - LOW_RAM_END))
			fail_msg("RAM entry [0x%llx, +0x%llx) covers 0xa0000-0xfffff",
				 (unsigned long long)e->addr, (unsigned long long)e->size);
		if (e->addr >= BIOS_AREA_END)
			ram_above_1m += e->size;
	}
	/* Every byte of RAM above 1 MiB is offered to the guest. */
	if (ram_above_1m != ram_total - BIOS_AREA_END)
		fail_msg("%llu MiB of RAM: the map offers %llu bytes above 1 MiB, not %llu",
			 (unsigned long long)(ram_total >> 20), (unsigned long long)ram_above_1m,
			 (unsigned long long)(ram_total - BIOS_AREA_END));
}

static bool is_ram(const struct e820_entry *map, unsigned n, uint64_t addr, uint64_t len)
{
	for (unsigned i = 0; i < n; i++)
		if (map[i].type == E820_RAM && overlaps(map[i].addr, map[i].size, addr, len))
			return true;
	return false;
}

/* Firmware tables must sit in memory the map reports as reserved or as
 * ACPI data (ACPI 6.x, 15: "System Address Map Interfaces"), whole. */
static bool reserved_for_firmware(const struct e820_entry *map, unsigned n, uint64_t addr,
				  uint64_t len)
{
	for (unsigned i = 0; i < n; i++)
		if ((map[i].type == E820_RESERVED || map[i].type == E820_ACPI || map[i].type == 4) &&
		    addr >= map[i].addr && addr + len <= map[i].addr + map[i].size)
			return true;
	return false;
}

static void check_firmware_area(const struct e820_entry *map, unsigned n, uint64_t addr,
				uint64_t len, const char *what)
{
	if (is_ram(map, n, addr, len) || !reserved_for_firmware(map, n, addr, len))
		fail_msg("%s [0x%llx, +0x%llx) is not in a reserved or ACPI entry of the map", what,
			 (unsigned long long)addr, (unsigned long long)len);
}

/* The firmware tables a guest reads must lie outside RAM it may reuse:
 * the RSDP and every table the XSDT lists, the MP floating pointer and the
 * MP configuration table (built here as vm.c builds them). */
static void check_tables_not_ram(const struct guest_mem *gm, const struct e820_entry *map,
				 unsigned n)
{
	struct platform_desc pd;
	uint64_t rsdp = 0, xsdt, mpc = 0;
	const uint8_t *p;
	unsigned found_mp = 0;

	platform_desc_init(&pd, 2);
	assert_int_equal(acpi_build(gm, &pd, &rsdp), 0);
	assert_int_equal(mptable_build(gm, &pd), 0);
	check_firmware_area(map, n, rsdp, 36, "the RSDP");
	p = guest_mem_ptr(gm, rsdp, 36);
	assert_non_null(p);
	xsdt = rd64(p + 24);
	p = guest_mem_ptr(gm, xsdt, 36);
	assert_non_null(p);
	check_firmware_area(map, n, xsdt, rd32(p + 4), "the XSDT");
	for (uint32_t off = 36; off + 8 <= rd32(p + 4); off += 8) {
		uint64_t t = rd64(p + off);
		const uint8_t *tp = guest_mem_ptr(gm, t, 8);
		char name[8];

		assert_non_null(tp);
		snprintf(name, sizeof(name), "%.4s", (const char *)tp);
		check_firmware_area(map, n, t, rd32(tp + 4), name);
		if (!memcmp(tp, "FACP", 4)) {      /* the FADT points at the DSDT */
			const uint8_t *f = guest_mem_ptr(gm, t, 148);
			uint64_t dsdt = rd64(f + 140) ? rd64(f + 140) : rd32(f + 40);

			check_firmware_area(map, n, dsdt, rd32(guest_mem_ptr(gm, dsdt, 8) + 4),
					    "the DSDT");
		}
	}
	for (uint64_t a = 0xf0000; a < 0x100000; a += 16) {
		p = guest_mem_ptr(gm, a, 16);
		if (memcmp(p, "_MP_", 4))
			continue;
		found_mp++;
		check_firmware_area(map, n, a, 16, "the MP floating pointer");
		mpc = rd32(p + 4);
	}
	assert_int_equal(found_mp, 1);
	p = guest_mem_ptr(gm, mpc, 8);
	assert_non_null(p);
	assert_memory_equal(p, "PCMP", 4);
	check_firmware_area(map, n, mpc, rd16(p + 4), "the MP configuration table");
}

static void test_e820_maps(void **unused)
{
	static const struct { const char *name; uint64_t ram; } sizes[] = {
		{ "64 MiB", 64 * MiB },
		{ "2 GiB", 2 * GiB },
		{ "3 GiB - 4 KiB", 3 * GiB - 4 * KiB },
		{ "3 GiB", 3 * GiB },
		{ "3 GiB + 4 KiB", 3 * GiB + 4 * KiB },
		{ "3 GiB + 2 MiB", 3 * GiB + 2 * MiB },
		{ "5 GiB", 5 * GiB },
	};

	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
		struct e820_entry map[E820_MAX_ENTRIES];
		uint64_t low = sizes[i].ram < PCI_HOLE_START ? sizes[i].ram : PCI_HOLE_START;
		struct guest_mem gm;
		unsigned n, highs = 0;

		init_mem(&gm, sizes[i].ram);
		n = boot_e820(&gm, map, E820_MAX_ENTRIES);
		print_message("%s: %u entries\n", sizes[i].name, n);
		check_e820(&gm, map, n);
		check_tables_not_ram(&gm, map, n);
		/* Low RAM runs to the end of RAM or to the hole, whichever first. */
		assert_true(is_ram(map, n, low - 1, 1));
		assert_false(is_ram(map, n, low, 1));
		for (unsigned k = 0; k < n; k++) {
			if (map[k].type != E820_RAM || map[k].addr < HIGH_RAM_START)
				continue;
			/* RAM above the hole starts right at 4 GiB, holds the rest. */
			highs++;
			assert_int_equal(map[k].addr, HIGH_RAM_START);
			assert_int_equal(map[k].size, sizes[i].ram - low);
		}
		assert_int_equal(highs, sizes[i].ram > PCI_HOLE_START ? 1 : 0);
		/* A caller with less room gets a prefix, never an overflow. */
		assert_int_equal(boot_e820(&gm, map, 2), 2);
		guest_mem_free(&gm);
	}
}

/* ---- boot_params ---- */

static const uint8_t *zero_page(const struct guest_mem *gm)
{
	const uint8_t *zp = guest_mem_ptr(gm, ZERO_PAGE_ADDR, PAGE);

	assert_non_null(zp);
	return zp;
}

static void check_zp_e820(const struct guest_mem *gm, const uint8_t *zp)
{
	struct e820_entry map[E820_MAX_ENTRIES];
	unsigned n = boot_e820(gm, map, E820_MAX_ENTRIES);

	assert_true(n <= ZP_E820_MAX);
	assert_int_equal(zp[ZP_E820_ENTRIES], n);
	for (unsigned i = 0; i < n; i++) {
		const uint8_t *e = zp + ZP_E820_TABLE + 20 * i;

		assert_int_equal(rd64(e), map[i].addr);
		assert_int_equal(rd64(e + 8), map[i].size);
		assert_int_equal(rd32(e + 16), map[i].type);
	}
}

/* Whether off lies in a field the boot loader writes (boot.rst: write, modify). */
static bool loader_field(unsigned off)
{
	static const struct { unsigned off, len; } fields[] = {
		{ H_VID_MODE, 2 }, { H_TYPE_OF_LOADER, 1 }, { H_LOADFLAGS, 1 },
		{ H_SETUP_MOVE_SIZE, 2 }, { H_CODE32_START, 4 }, { H_RAMDISK_IMAGE, 8 },
		{ H_HEAP_END_PTR, 2 }, { H_EXT_LOADER_VER, 1 }, { H_EXT_LOADER_TYPE, 1 },
		{ H_CMD_LINE_PTR, 4 }, { H_HW_SUBARCH, 12 }, { H_SETUP_DATA, 8 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(fields); i++)
		if (off >= fields[i].off && off < fields[i].off + fields[i].len)
			return true;
	return false;
}

static void test_bzimage_boot_params(void **unused)
{
	static const char cmdline[] = "console=ttyS0 root=/dev/vda rw quiet";
	struct bz_spec b = linux_like();
	const char *kernel = tmp_path("bzImage"), *initrd = tmp_path("initrd");
	struct vmm_config cfg;
	struct boot_plan bp;
	struct guest_mem gm;
	const uint8_t *zp, *file_hdr;
	uint8_t hdr[H_END_MAX];
	unsigned hdr_end = 0x202 + b.jump_len;
	uint64_t initrd_addr, initrd_size = 1234567;
	int fd;

	write_bzimage(kernel, &b);
	write_pattern_file(initrd, 21, initrd_size);
	init_mem(&gm, 256 * MiB);
	/* Whatever the page held before must not leak into boot_params. */
	memset(guest_mem_ptr(&gm, ZERO_PAGE_ADDR, PAGE), 0xaa, PAGE);
	config(&cfg, kernel, initrd, cmdline, BOOT_AUTO);
	prepare_and_load(&bp, &cfg, &gm);
	assert_int_equal(bp.format, BOOT_FORMAT_BZIMAGE);
	assert_int_equal(bp.entry, BOOT_ENTRY_LINUX64);
	zp = zero_page(&gm);

	/* The setup header, as far as it goes, copied from the file, except
	 * the fields a loader writes. */
	fd = open(kernel, O_RDONLY);
	assert_int_equal(pread(fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
	close(fd);
	file_hdr = hdr;
	for (unsigned off = H_START; off < hdr_end; off++)
		if (!loader_field(off) && zp[off] != file_hdr[off])
			fail_msg("setup header byte 0x%x: 0x%02x in boot_params, 0x%02x in the file",
				 off, zp[off], file_hdr[off]);
	for (unsigned off = hdr_end; off < H_END_MAX; off++)
		if (zp[off])
			fail_msg("byte 0x%x past the header's end (0x%x) is 0x%02x", off, hdr_end,
				 zp[off]);

	/* The loader's fields. */
	assert_int_equal(rd16(zp + H_VID_MODE), 0xffff);          /* "normal" */
	assert_int_not_equal(zp[H_TYPE_OF_LOADER], 0);           /* must be set */
	assert_true(zp[H_LOADFLAGS] & LF_LOADED_HIGH);
	if (zp[H_LOADFLAGS] & LF_CAN_USE_HEAP)
		assert_true(rd16(zp + H_HEAP_END_PTR) != 0);
	assert_int_equal(rd64(zp + H_SETUP_DATA), 0);             /* no setup_data list */
	assert_int_equal(zp[ZP_SENTINEL], 0);    /* else the kernel distrusts boot_params */

	/* Command line: cmd_line_ptr | ext_cmd_line_ptr << 32, NUL-terminated. */
	{
		uint64_t ptr = rd32(zp + H_CMD_LINE_PTR) |
			       (uint64_t)rd32(zp + ZP_EXT_CMD_LINE_PTR) << 32;
		const char *cl = guest_mem_ptr(&gm, ptr, sizeof(cmdline));

		assert_non_null(cl);
		assert_memory_equal(cl, cmdline, sizeof(cmdline));
	}
	/* The initrd: ramdisk_image | ext_ramdisk_image << 32, sizes likewise. */
	initrd_addr = rd32(zp + H_RAMDISK_IMAGE) | (uint64_t)rd32(zp + ZP_EXT_RAMDISK_IMAGE) << 32;
	assert_int_equal(rd32(zp + H_RAMDISK_SIZE) |
			 (uint64_t)rd32(zp + ZP_EXT_RAMDISK_SIZE) << 32, initrd_size);
	assert_int_equal(initrd_addr, bp.initrd_addr);
	check_pattern(&gm, initrd_addr, 21, initrd_size, "initrd");
	assert_int_equal(rd64(zp + ZP_ACPI_RSDP_ADDR), TEST_RSDP);
	check_zp_e820(&gm, zp);

	/* The protected-mode part, at the load address. */
	check_pattern(&gm, bp.kernel_start, BZ_PAYLOAD_SEED, b.payload_size, "kernel payload");
	assert_int_equal(bp.entry_addr, bp.kernel_start + 0x200);

	/* Nothing else in boot_params: the rest stays zero. */
	for (unsigned off = 0; off < PAGE; off++) {
		if ((off >= H_START && off < H_END_MAX) ||
		    (off >= ZP_ACPI_RSDP_ADDR && off < ZP_ACPI_RSDP_ADDR + 8) ||
		    (off >= ZP_EXT_RAMDISK_IMAGE && off < ZP_EXT_CMD_LINE_PTR + 4) ||
		    off == ZP_E820_ENTRIES ||
		    (off >= ZP_E820_TABLE && off < ZP_E820_TABLE + 20u * zp[ZP_E820_ENTRIES]))
			continue;
		if (zp[off])
			fail_msg("boot_params byte 0x%x is 0x%02x", off, zp[off]);
	}
	boot_close(&bp);
	guest_mem_free(&gm);
}

struct placement_case {
	const char *name;
	uint64_t ram;
	uint64_t pref;
	uint32_t init_size, align;
	uint8_t relocatable;
	int ret;
};

static const struct placement_case placements[] = {
	{ "relocatable, room at pref_address", 64 * MiB, 16 * MiB, 24 << 20, 2 << 20, 1, 0 },
	{ "relocatable, pref_address 1 MiB", 32 * MiB, 1 * MiB, 8 << 20, 2 << 20, 1, 0 },
	{ "relocatable, pref 2 MiB aligned 2 MiB", 32 * MiB, 2 * MiB, 8 << 20, 2 << 20, 1, 0 },
	{ "fixed at pref_address, room there", 64 * MiB, 16 * MiB, 24 << 20, 2 << 20, 0, 0 },
	{ "fixed at pref_address, RAM ends first", 32 * MiB, 16 * MiB, 24 << 20, 2 << 20, 0,
	  -ENOMEM },
	{ "relocatable, too big for any RAM", 16 * MiB, 1 * MiB, 32 << 20, 2 << 20, 1, -ENOMEM },
};

static void check_placement(const struct placement_case *c)
{
	struct bz_spec b = linux_like();
	const char *kernel = tmp_path("bzImage-placement");
	struct vmm_config cfg;
	struct boot_plan bp;
	struct guest_mem gm;
	char err[512] = "";
	uint64_t run;
	int ret;

	b.pref_address = c->pref;
	b.init_size = c->init_size;
	b.kernel_alignment = c->align;
	b.relocatable = c->relocatable;
	b.payload_size = 200000;
	write_bzimage(kernel, &b);
	init_mem(&gm, c->ram);
	config(&cfg, kernel, NULL, "", BOOT_AUTO);
	ret = boot_prepare(&bp, &cfg, &gm, err, sizeof(err));
	if (ret != c->ret) {
		if (ret == 0)
			fail_msg("%s: accepted, loaded at 0x%llx, but the kernel runs at "
				 "0x%llx and needs up to 0x%llx (RAM ends at 0x%llx)", c->name,
				 (unsigned long long)bp.kernel_start,
				 (unsigned long long)runtime_start(&b, bp.kernel_start),
				 (unsigned long long)(runtime_start(&b, bp.kernel_start) +
						      b.init_size),
				 (unsigned long long)c->ram);
		fail_msg("%s: boot_prepare returned %d (%s), expected %d", c->name, ret, err,
			 c->ret);
	}
	if (ret < 0) {
		if (!strstr(err, kernel) || !strstr(err, "--memory"))
			fail_msg("%s: message '%s' names neither the kernel nor --memory",
				 c->name, err);
		guest_mem_free(&gm);
		return;
	}
	/* Loaded where the kernel prefers when there is room there. */
	assert_int_equal(bp.kernel_start, c->pref);
	assert_int_equal(bp.entry_addr, bp.kernel_start + 0x200);
	assert_int_equal(bp.entry, BOOT_ENTRY_LINUX64);
	run = runtime_start(&b, bp.kernel_start);
	if (!guest_mem_ptr(&gm, run, b.init_size))
		fail_msg("%s: the kernel runs at 0x%llx and needs 0x%x bytes of RAM there",
			 c->name, (unsigned long long)run, b.init_size);
	bp.rsdp_addr = TEST_RSDP;
	assert_int_equal(boot_load(&bp, &gm, err, sizeof(err)), 0);
	check_pattern(&gm, bp.kernel_start, BZ_PAYLOAD_SEED, b.payload_size, c->name);
	boot_close(&bp);
	guest_mem_free(&gm);
}

static void test_bzimage_placement(void **unused)
{
	for (size_t i = 0; i < ARRAY_SIZE(placements); i++)
		check_placement(&placements[i]);
}

/* A relocatable kernel moves itself up to pref_address (aligned) before it
 * decompresses, whatever address it was loaded at (boot.rst, init_size; the
 * kernel's commit be4ca6c53e66 spells it out after kexec-tools got it
 * wrong). Where RAM ends before pref_address + init_size the kernel cannot
 * run, and the VM must not be built as if it could. */
static void test_bzimage_runs_at_pref_address(void **unused)
{
	static const struct placement_case cases[] = {
		{ "relocatable, RAM ends before pref_address + init_size", 36 * MiB, 16 * MiB,
		  24 << 20, 2 << 20, 1, -ENOMEM },
		{ "relocatable, RAM smaller than pref_address", 12 * MiB, 16 * MiB, 8 << 20,
		  2 << 20, 1, -ENOMEM },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
		check_placement(&cases[i]);
}

struct bz_reject_case {
	const char *name;
	void (*mutate)(struct bz_spec *b);
	const char *says;
};

static void bz_old_protocol(struct bz_spec *b) { b->version = 0x020b; b->xloadflags = 0; }
static void bz_no_64bit_entry(struct bz_spec *b) { b->xloadflags = 0; }
static void bz_zimage(struct bz_spec *b) { b->loadflags = 0; }
static void bz_truncated(struct bz_spec *b) { b->setup_sects = 60; b->truncate_to = 60 * 512; }

static const struct bz_reject_case bz_rejects[] = {
	{ "protocol 2.11", bz_old_protocol, "2.11" },
	{ "no XLF_KERNEL_64", bz_no_64bit_entry, "64-bit" },
	{ "zImage", bz_zimage, "zImage" },
	{ "truncated setup", bz_truncated, "truncated" },
};

static void test_bzimage_rejected(void **unused)
{
	for (size_t i = 0; i < ARRAY_SIZE(bz_rejects); i++) {
		struct bz_spec b = linux_like();
		const char *kernel = tmp_path("bzImage-bad");
		struct vmm_config cfg;
		struct guest_mem gm;

		bz_rejects[i].mutate(&b);
		write_bzimage(kernel, &b);
		init_mem(&gm, 128 * MiB);
		config(&cfg, kernel, NULL, NULL, BOOT_AUTO);
		expect_refusal(&cfg, &gm, -EINVAL, kernel, bz_rejects[i].says, bz_rejects[i].name);
		/* PVH needs an ELF file. */
		if (i == 0) {
			b = linux_like();
			write_bzimage(kernel, &b);
			config(&cfg, kernel, NULL, NULL, BOOT_PVH);
			expect_refusal(&cfg, &gm, -EINVAL, kernel, "pvh",
				       "bzImage with --boot-protocol pvh");
		}
		guest_mem_free(&gm);
	}
}

/* cmdline_size is the longest command line without its NUL. */
static void test_bzimage_cmdline_size(void **unused)
{
	struct bz_spec b = linux_like();
	const char *kernel = tmp_path("bzImage-cmdline");
	char longest[256], too_long[258];
	struct vmm_config cfg;
	struct boot_plan bp;
	struct guest_mem gm;

	b.cmdline_size = 255;
	write_bzimage(kernel, &b);
	memset(longest, 'a', 255);
	longest[255] = 0;
	memset(too_long, 'b', 256);
	too_long[256] = 0;
	init_mem(&gm, 128 * MiB);
	config(&cfg, kernel, NULL, longest, BOOT_AUTO);
	prepare_and_load(&bp, &cfg, &gm);
	assert_string_equal((const char *)guest_mem_ptr(&gm, rd32(zero_page(&gm) + H_CMD_LINE_PTR),
							 256), longest);
	boot_close(&bp);
	config(&cfg, kernel, NULL, too_long, BOOT_AUTO);
	expect_refusal(&cfg, &gm, -EINVAL, "--cmdline", "255", "command line over cmdline_size");
	/* No command line: an empty string, not garbage. */
	memset(guest_mem_ptr(&gm, CMDLINE_ADDR, 16), 'x', 16);
	config(&cfg, kernel, NULL, NULL, BOOT_AUTO);
	prepare_and_load(&bp, &cfg, &gm);
	assert_string_equal((const char *)guest_mem_ptr(&gm, rd32(zero_page(&gm) + H_CMD_LINE_PTR),
							 1), "");
	boot_close(&bp);
	guest_mem_free(&gm);
}

/* ---- initrd placement ---- */

struct initrd_case {
	const char *name;
	bool elf;
	uint64_t ram;
	uint32_t initrd_addr_max;     /* bzImage only */
	uint64_t size;
};

static const struct initrd_case initrds[] = {
	{ "bzImage, 256 MiB", false, 256 * MiB, 0x7fffffff, 5 * MiB + 123 },
	{ "bzImage, 4 GiB, initrd_addr_max 2 GiB", false, 4 * GiB, 0x7fffffff, 3 * MiB },
	{ "bzImage, initrd_addr_max not page aligned", false, 512 * MiB, 0x0ffff7ff, 100000 },
	{ "bzImage, 5 GiB, initrd_addr_max 4 GiB", false, 5 * GiB, 0xffffffff, 40 * MiB + 1 },
	{ "bzImage, initrd fills the gap", false, 64 * MiB, 0x7fffffff,
	  64 * MiB - (16 * MiB + (24 << 20)) },
	{ "ELF, 128 MiB", true, 128 * MiB, 0, 7777777 },
	{ "ELF, 5 GiB", true, 5 * GiB, 0, 16 * MiB },
};

static void test_initrd_placement(void **unused)
{
	for (size_t i = 0; i < ARRAY_SIZE(initrds); i++) {
		const struct initrd_case *c = &initrds[i];
		const char *kernel = tmp_path("kernel-initrd"), *initrd = tmp_path("initrd-place");
		uint64_t low, top, run = 0, run_end = 0;
		struct vmm_config cfg;
		struct boot_plan bp;
		struct guest_mem gm;

		if (c->elf) {
			struct elf_spec e = vmlinux_like(true, 4);

			write_elf(kernel, &e);
			run = e.seg[0].paddr;
			run_end = e.seg[2].paddr + e.seg[2].memsz;
		} else {
			struct bz_spec b = linux_like();

			b.initrd_addr_max = c->initrd_addr_max;
			write_bzimage(kernel, &b);
			run = runtime_start(&b, b.pref_address);
			run_end = run + b.init_size;
		}
		write_pattern_file(initrd, 33, c->size);
		init_mem(&gm, c->ram);
		config(&cfg, kernel, initrd, "", BOOT_AUTO);
		prepare_and_load(&bp, &cfg, &gm);
		low = guest_mem_low_end(&gm);
		top = c->elf ? low : (c->initrd_addr_max + 1ULL < low ? c->initrd_addr_max + 1ULL : low);
		if (bp.initrd_addr % PAGE)
			fail_msg("%s: initrd at 0x%llx, not page-aligned", c->name,
				 (unsigned long long)bp.initrd_addr);
		if (bp.initrd_addr + c->size > top)
			fail_msg("%s: initrd [0x%llx, +0x%llx) goes past 0x%llx", c->name,
				 (unsigned long long)bp.initrd_addr, (unsigned long long)c->size,
				 (unsigned long long)top);
		if (overlaps(bp.initrd_addr, c->size, run, run_end - run) || bp.initrd_addr < run_end)
			fail_msg("%s: initrd at 0x%llx, below the kernel's end 0x%llx", c->name,
				 (unsigned long long)bp.initrd_addr, (unsigned long long)run_end);
		/* As high as it goes (boot.rst recommends it): with a page-aligned
		 * start and a top that need not be aligned, less than two pages
		 * stay free above it. */
		if (top - (bp.initrd_addr + c->size) >= 2 * PAGE)
			fail_msg("%s: initrd ends at 0x%llx, 0x%llx below the top", c->name,
				 (unsigned long long)(bp.initrd_addr + c->size),
				 (unsigned long long)(top - (bp.initrd_addr + c->size)));
		check_pattern(&gm, bp.initrd_addr, 33, c->size, c->name);
		boot_close(&bp);
		guest_mem_free(&gm);
	}
}

static void test_initrd_does_not_fit(void **unused)
{
	struct bz_spec b = linux_like();
	const char *kernel = tmp_path("bzImage-bigrd"), *initrd = tmp_path("initrd-big");
	struct elf_spec e = vmlinux_like(true, 8);
	struct vmm_config cfg;
	struct guest_mem gm;

	write_bzimage(kernel, &b);
	/* 64 MiB of RAM, the kernel up to 40 MiB: 24 MiB + 1 page cannot fit. */
	write_pattern_file(initrd, 34, 24 * MiB + PAGE);
	init_mem(&gm, 64 * MiB);
	config(&cfg, kernel, initrd, "", BOOT_AUTO);
	expect_refusal(&cfg, &gm, -ENOMEM, initrd, "--memory", "initrd too big for the gap");
	/* Nor below initrd_addr_max when RAM above it would have room. */
	b.initrd_addr_max = 0x2fffffff;
	write_bzimage(kernel, &b);
	write_pattern_file(initrd, 34, 0x30000000 - 0x2800000 + PAGE);
	guest_mem_free(&gm);
	init_mem(&gm, 2 * GiB);
	expect_refusal(&cfg, &gm, -ENOMEM, initrd, NULL, "initrd too big for initrd_addr_max");
	guest_mem_free(&gm);
	/* A missing initrd file is named. */
	write_elf(kernel, &e);
	init_mem(&gm, 64 * MiB);
	config(&cfg, kernel, tmp_path("no-such-initrd"), "", BOOT_AUTO);
	expect_refusal(&cfg, &gm, -ENOENT, "no-such-initrd", NULL, "missing initrd");
	guest_mem_free(&gm);
}

/* ---- ELF loading, PVH ---- */

static void test_elf_segments_loaded(void **unused)
{
	static const struct { const char *name; unsigned descsz; bool note_last; } cases[] = {
		{ "PVH note, 4-byte entry", 4, false },
		{ "PVH note, 8-byte entry", 8, false },
		{ "PVH note after the PT_LOADs", 8, true },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct elf_spec e = vmlinux_like(true, cases[i].descsz);
		const char *kernel = tmp_path("vmlinux-segs");
		struct vmm_config cfg;
		struct boot_plan bp;
		struct guest_mem gm;
		char err[256] = "";

		e.note_after_loads = cases[i].note_last;
		write_elf(kernel, &e);
		init_mem(&gm, 64 * MiB);
		/* RAM as a previous boot left it: .bss must not inherit it. */
		for (unsigned s = 0; s < e.nseg; s++)
			memset(guest_mem_ptr(&gm, e.seg[s].paddr, e.seg[s].memsz), 0xcc,
			       e.seg[s].memsz);
		config(&cfg, kernel, NULL, "console=hvc0", BOOT_AUTO);
		prepare_and_load(&bp, &cfg, &gm);
		assert_int_equal(bp.format, BOOT_FORMAT_ELF);
		if (bp.entry != BOOT_ENTRY_PVH || bp.entry_addr != 0x1000040)
			fail_msg("%s: entry %s at 0x%llx, expected PVH at 0x1000040", cases[i].name,
				 boot_entry_name(bp.entry), (unsigned long long)bp.entry_addr);
		check_elf_segments(&gm, &e);
		/* Reset: the guest scribbled over everything; loading again
		 * restores the image exactly. */
		for (unsigned s = 0; s < e.nseg; s++)
			memset(guest_mem_ptr(&gm, e.seg[s].paddr, e.seg[s].memsz), 0x5a,
			       e.seg[s].memsz);
		memset(guest_mem_ptr(&gm, PVH_INFO_ADDR, PAGE), 0x5a, PAGE);
		assert_int_equal(boot_load(&bp, &gm, err, sizeof(err)), 0);
		check_elf_segments(&gm, &e);
		assert_int_equal(rd32(guest_mem_ptr(&gm, PVH_INFO_ADDR, 4)), SI_MAGIC_VALUE);
		boot_close(&bp);
		guest_mem_free(&gm);
	}
}

static void test_pvh_start_info(void **unused)
{
	static const char cmdline[] = "console=ttyS0 earlyprintk=serial";
	struct elf_spec e = vmlinux_like(true, 8);
	const char *kernel = tmp_path("vmlinux-pvh"), *initrd = tmp_path("initrd-pvh");
	struct e820_entry map[E820_MAX_ENTRIES];
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct vmm_config cfg;
	struct boot_plan bp;
	struct guest_mem gm;
	const uint8_t *si, *mod, *mm;
	unsigned n;

	write_elf(kernel, &e);
	write_pattern_file(initrd, 44, 3 * MiB + 5);
	init_mem(&gm, 5 * GiB);
	memset(guest_mem_ptr(&gm, PVH_INFO_ADDR, PAGE), 0xee, PAGE);
	config(&cfg, kernel, initrd, cmdline, BOOT_AUTO);
	prepare_and_load(&bp, &cfg, &gm);
	memset(&sregs, 0, sizeof(sregs));
	boot_entry_state(&bp, &regs, &sregs);
	/* %ebx holds start_info's address. */
	si = guest_mem_ptr(&gm, regs.rbx, 56);
	assert_non_null(si);
	assert_int_equal(rd32(si + SI_MAGIC), SI_MAGIC_VALUE);
	assert_true(rd32(si + SI_VERSION) >= 1);                   /* has the memory map */
	assert_int_equal(rd32(si + SI_FLAGS), 0);
	assert_int_equal(rd32(si + SI_RESERVED), 0);
	assert_int_equal(rd64(si + SI_RSDP_PADDR), TEST_RSDP);
	assert_string_equal((const char *)guest_mem_ptr(&gm, rd64(si + SI_CMDLINE_PADDR),
							 sizeof(cmdline)), cmdline);
	/* The initrd is module 0. */
	assert_int_equal(rd32(si + SI_NR_MODULES), 1);
	mod = guest_mem_ptr(&gm, rd64(si + SI_MODLIST_PADDR), MOD_SIZE);
	assert_non_null(mod);
	assert_int_equal(rd64(mod + 8), 3 * MiB + 5);
	assert_int_equal(rd64(mod + 24), 0);
	check_pattern(&gm, rd64(mod), 44, 3 * MiB + 5, "PVH module 0");
	assert_true(rd64(mod) >= e.seg[2].paddr + e.seg[2].memsz);
	assert_true(rd64(mod) + 3 * MiB + 5 <= guest_mem_low_end(&gm));
	/* The memory map, in hvm_memmap_table_entry form: the e820 map. */
	n = boot_e820(&gm, map, E820_MAX_ENTRIES);
	assert_int_equal(rd32(si + SI_MEMMAP_ENTRIES), n);
	mm = guest_mem_ptr(&gm, rd64(si + SI_MEMMAP_PADDR), n * MEMMAP_SIZE);
	assert_non_null(mm);
	for (unsigned i = 0; i < n; i++, mm += MEMMAP_SIZE) {
		assert_int_equal(rd64(mm), map[i].addr);
		assert_int_equal(rd64(mm + 8), map[i].size);
		assert_int_equal(rd32(mm + 16), map[i].type);
		assert_int_equal(rd32(mm + 20), 0);
	}
	check_e820(&gm, map, n);
	/* start_info, its arrays and the command line are outside the kernel
	 * and the module, and in RAM the map offers (the guest copies them). */
	assert_true(is_ram(map, n, regs.rbx, 56));
	assert_false(overlaps(rd64(si + SI_MEMMAP_PADDR), n * MEMMAP_SIZE, rd64(mod), 3 * MiB));
	boot_close(&bp);

	/* Without an initrd there is no module. */
	config(&cfg, kernel, NULL, cmdline, BOOT_AUTO);
	prepare_and_load(&bp, &cfg, &gm);
	assert_int_equal(rd32(guest_mem_ptr(&gm, PVH_INFO_ADDR, 16) + SI_NR_MODULES), 0);
	boot_close(&bp);
	guest_mem_free(&gm);
}

struct entry_choice_case {
	const char *name;
	bool pvh_note;
	enum boot_protocol proto;
	int ret;
	enum boot_entry entry;
	uint64_t rip;
};

static const struct entry_choice_case entry_choices[] = {
	{ "note, auto", true, BOOT_AUTO, 0, BOOT_ENTRY_PVH, 0x1000040 },
	{ "note, pvh", true, BOOT_PVH, 0, BOOT_ENTRY_PVH, 0x1000040 },
	{ "note, linux64", true, BOOT_LINUX64, 0, BOOT_ENTRY_LINUX64, 0x1000000 },
	{ "no note, auto", false, BOOT_AUTO, 0, BOOT_ENTRY_LINUX64, 0x1000000 },
	{ "no note, linux64", false, BOOT_LINUX64, 0, BOOT_ENTRY_LINUX64, 0x1000000 },
	{ "no note, pvh", false, BOOT_PVH, -EINVAL, 0, 0 },
};

static void test_elf_entry_choice(void **unused)
{
	for (size_t i = 0; i < ARRAY_SIZE(entry_choices); i++) {
		const struct entry_choice_case *c = &entry_choices[i];
		struct elf_spec e = vmlinux_like(c->pvh_note, 8);
		const char *kernel = tmp_path("vmlinux-choice");
		struct vmm_config cfg;
		struct boot_plan bp;
		struct guest_mem gm;

		write_elf(kernel, &e);
		init_mem(&gm, 64 * MiB);
		config(&cfg, kernel, NULL, NULL, c->proto);
		if (c->ret) {
			expect_refusal(&cfg, &gm, c->ret, kernel, "PVH", c->name);
			guest_mem_free(&gm);
			continue;
		}
		prepare_and_load(&bp, &cfg, &gm);
		if (bp.entry != c->entry || bp.entry_addr != c->rip)
			fail_msg("%s: %s entry at 0x%llx", c->name, boot_entry_name(bp.entry),
				 (unsigned long long)bp.entry_addr);
		boot_close(&bp);
		guest_mem_free(&gm);
	}
}

struct elf_reject_case {
	const char *name;
	void (*mutate)(struct elf_spec *e);
	int ret;
	const char *says;
};

static void elf32(struct elf_spec *e) { e->ei_class = ELFCLASS32; }
static void elf_arm(struct elf_spec *e) { e->machine = EM_AARCH64; }
static void elf_dyn(struct elf_spec *e) { e->type = ET_DYN; }
static void elf_low(struct elf_spec *e) { e->seg[0].paddr = 0x8000; e->entry = 0x8000; }
static void elf_beyond_ram(struct elf_spec *e) { e->seg[2].paddr = 70 * MiB; }
static void elf_in_hole(struct elf_spec *e) { e->seg[2].paddr = 0xc0000000; }
static void elf_entry_out(struct elf_spec *e) { e->entry = 0x2000000; e->nnotes = 1; }
static void elf_pvh_entry_out(struct elf_spec *e) { e->note[1].value = 0x3000000; }
static void elf_past_eof(struct elf_spec *e) { e->bad_offset = 1ULL << 40; }
static void elf_no_load(struct elf_spec *e) { e->nseg = 0; }
static void elf_filesz_over_memsz(struct elf_spec *e) { e->seg[1].memsz = e->seg[1].filesz - 1; }

static const struct elf_reject_case elf_rejects[] = {
	{ "32-bit ELF", elf32, -EINVAL, "64-bit" },
	{ "AArch64 ELF", elf_arm, -EINVAL, "x86-64" },
	{ "shared object", elf_dyn, -EINVAL, "executable" },
	{ "segment below 1 MiB", elf_low, -EINVAL, "1 MiB" },
	{ "segment past the end of RAM", elf_beyond_ram, -ENOMEM, "--memory" },
	{ "segment in the PCI hole", elf_in_hole, -EINVAL, "PCI hole" },
	{ "64-bit entry outside the image", elf_entry_out, -EINVAL, "entry" },
	{ "PVH entry outside the image", elf_pvh_entry_out, -EINVAL, "entry" },
	{ "segment past the end of the file", elf_past_eof, -EINVAL, "segment" },
	{ "no PT_LOAD", elf_no_load, -EINVAL, "loadable" },
	{ "p_filesz above p_memsz", elf_filesz_over_memsz, -EINVAL, "segment" },
};

static void test_elf_rejected(void **unused)
{
	for (size_t i = 0; i < ARRAY_SIZE(elf_rejects); i++) {
		struct elf_spec e = vmlinux_like(true, 8);
		const char *kernel = tmp_path("vmlinux-bad");
		struct vmm_config cfg;
		struct guest_mem gm;

		elf_rejects[i].mutate(&e);
		write_elf(kernel, &e);
		init_mem(&gm, 64 * MiB);
		config(&cfg, kernel, NULL, NULL, BOOT_AUTO);
		expect_refusal(&cfg, &gm, elf_rejects[i].ret, kernel, elf_rejects[i].says,
			       elf_rejects[i].name);
		guest_mem_free(&gm);
	}
}

static void test_not_a_kernel(void **unused)
{
	const char *junk = tmp_path("junk"), *tiny = tmp_path("tiny");
	struct vmm_config cfg;
	struct guest_mem gm;

	write_pattern_file(junk, 55, 100000);
	write_file(tiny, "\x7f" "ELF", 4);
	init_mem(&gm, 64 * MiB);
	config(&cfg, junk, NULL, NULL, BOOT_AUTO);
	expect_refusal(&cfg, &gm, -EINVAL, junk, "not a kernel", "random bytes");
	config(&cfg, tiny, NULL, NULL, BOOT_AUTO);
	expect_refusal(&cfg, &gm, -EINVAL, tiny, "short", "4-byte file");
	config(&cfg, tmpdir, NULL, NULL, BOOT_AUTO);
	expect_refusal(&cfg, &gm, -EINVAL, tmpdir, "regular file", "a directory");
	config(&cfg, tmp_path("missing"), NULL, NULL, BOOT_AUTO);
	expect_refusal(&cfg, &gm, -ENOENT, "missing", NULL, "a missing file");
	guest_mem_free(&gm);
}

/* ---- entry state, GDT and page tables ---- */

struct desc {
	uint64_t base, limit;
	unsigned type, s, dpl, p, l, db;
};

static struct desc gdt_entry(const struct guest_mem *gm, const struct kvm_sregs *sr,
			     uint16_t sel)
{
	const uint8_t *p;
	uint64_t d;
	struct desc r;

	if ((unsigned)(sel & ~7) + 7 > sr->gdt.limit)
		fail_msg("selector 0x%x beyond the GDT limit 0x%x", sel, sr->gdt.limit);
	p = guest_mem_ptr(gm, sr->gdt.base + (sel & ~7), 8);
	assert_non_null(p);
	d = rd64(p);
	r.base = ((d >> 16) & 0xffffff) | ((d >> 56) & 0xff) << 24;
	r.limit = (d & 0xffff) | ((d >> 48) & 0xf) << 16;
	if (d & (1ULL << 55))
		r.limit = r.limit << 12 | 0xfff;
	r.type = (d >> 40) & 0xf;
	r.s = (d >> 44) & 1;
	r.dpl = (d >> 45) & 3;
	r.p = (d >> 47) & 1;
	r.l = (d >> 53) & 1;
	r.db = (d >> 54) & 1;
	return r;
}

/* The loaded segment and the GDT descriptor it was loaded from agree (the
 * kernel reloads its selectors from that GDT), and it is flat 4 GiB. */
static void check_flat_segment(const struct guest_mem *gm, const struct kvm_sregs *sr,
			       const struct kvm_segment *seg, bool code, const char *what)
{
	struct desc d = gdt_entry(gm, sr, seg->selector);

	if (seg->base != 0 || seg->limit != 0xffffffff || !seg->present || !seg->s || seg->dpl)
		fail_msg("%s: not a present flat ring-0 segment", what);
	if (code ? (seg->type & 0xa) != 0xa : (seg->type & 0xa) != 0x2)
		fail_msg("%s: type 0x%x is not %s", what, seg->type,
			 code ? "execute/read code" : "read/write data");
	if (d.base != 0 || d.limit != 0xffffffff || !d.p || !d.s || d.dpl != 0 ||
	    (d.type | 1) != (seg->type | 1u) || d.l != seg->l || (!d.l && d.db != seg->db))
		fail_msg("%s: GDT entry 0x%x does not match the loaded segment", what,
			 seg->selector);
}

/* Translates va through 4-level page tables; 0 if mapped, writable and
 * present at every level, with *pa set. */
static int walk(const struct guest_mem *gm, uint64_t cr3, uint64_t va, uint64_t *pa)
{
	const uint64_t addr_mask = 0x000ffffffffff000ULL;
	uint64_t table = cr3 & addr_mask;

	for (int level = 4; level >= 1; level--) {
		unsigned shift = 12 + 9 * (unsigned)(level - 1);
		const uint8_t *t = guest_mem_ptr(gm, table, PAGE);
		uint64_t e;

		if (!t)
			return -EFAULT;
		e = rd64(t + 8 * ((va >> shift) & 511));
		if (!(e & 1) || !(e & 2))
			return -ENOENT;
		if (level == 1 || ((level == 2 || level == 3) && (e & 0x80))) {
			uint64_t page_mask = (1ULL << shift) - 1;

			*pa = (e & addr_mask & ~page_mask) | (va & page_mask);
			return 0;
		}
		table = e & addr_mask;
	}
	return -ENOENT;
}

static void check_identity(const struct guest_mem *gm, uint64_t cr3, uint64_t start,
			   uint64_t len, const char *what)
{
	for (uint64_t a = start & ~(PAGE - 1); a < start + len; a += PAGE) {
		uint64_t pa = 0;

		if (walk(gm, cr3, a, &pa) < 0 || pa != a)
			fail_msg("%s: 0x%llx is not identity-mapped (-> 0x%llx)", what,
				 (unsigned long long)a, (unsigned long long)pa);
	}
}

enum kernel_kind { KIND_PVH_ELF, KIND_LINUX64_ELF, KIND_BZIMAGE };

static void test_entry_state(void **unused)
{
	static const char cmdline[] = "console=ttyS0";
	static const struct { const char *name; enum kernel_kind kind; } kinds[] = {
		{ "PVH ELF", KIND_PVH_ELF },
		{ "64-bit ELF", KIND_LINUX64_ELF },
		{ "bzImage", KIND_BZIMAGE },
	};

	for (size_t i = 0; i < ARRAY_SIZE(kinds); i++) {
		const char *kernel = tmp_path("kernel-entry");
		struct elf_spec e = vmlinux_like(kinds[i].kind == KIND_PVH_ELF, 8);
		struct bz_spec b = linux_like();
		struct kvm_regs regs;
		struct kvm_sregs sregs;
		struct vmm_config cfg;
		struct boot_plan bp;
		struct guest_mem gm;

		if (kinds[i].kind == KIND_BZIMAGE)
			write_bzimage(kernel, &b);
		else
			write_elf(kernel, &e);
		init_mem(&gm, 256 * MiB);
		config(&cfg, kernel, NULL, cmdline, BOOT_AUTO);
		prepare_and_load(&bp, &cfg, &gm);
		memset(&regs, 0x77, sizeof(regs));
		memset(&sregs, 0, sizeof(sregs));
		boot_entry_state(&bp, &regs, &sregs);
		print_message("%s: entry 0x%llx\n", kinds[i].name, (unsigned long long)regs.rip);

		assert_int_equal(regs.rip, bp.entry_addr);
		/* Interrupts off, no trap flag, no virtual-8086 mode; bit 1 is 1. */
		assert_int_equal(regs.rflags & ((1 << 9) | (1 << 8) | (1 << 17)), 0);
		assert_true(regs.rflags & 2);
		check_flat_segment(&gm, &sregs, &sregs.cs, true, "CS");
		check_flat_segment(&gm, &sregs, &sregs.ds, false, "DS");
		check_flat_segment(&gm, &sregs, &sregs.es, false, "ES");
		check_flat_segment(&gm, &sregs, &sregs.ss, false, "SS");
		/* TR: a busy TSS, base 0, limit 0x67. */
		assert_int_equal(sregs.tr.type, 0xb);
		assert_true(sregs.tr.present);
		assert_int_equal(sregs.tr.base, 0);
		assert_int_equal(sregs.tr.limit, 0x67);

		if (kinds[i].kind == KIND_PVH_ELF) {
			assert_int_equal(bp.entry, BOOT_ENTRY_PVH);
			assert_int_equal(regs.rip, 0x1000040);
			assert_int_equal(regs.rbx, PVH_INFO_ADDR);
			/* 32-bit protected mode: PE only (ET reads as 1), CR4 clear,
			 * no long mode. */
			assert_int_equal(sregs.cr0 & ~0x10ULL, 0x1);
			assert_int_equal(sregs.cr4, 0);
			assert_int_equal(sregs.efer & 0x500, 0);
			assert_int_equal(sregs.cs.l, 0);
			assert_int_equal(sregs.cs.db, 1);
		} else {
			const uint8_t *zp = zero_page(&gm);
			uint64_t cl = rd32(zp + H_CMD_LINE_PTR);

			assert_int_equal(bp.entry, BOOT_ENTRY_LINUX64);
			/* %rsi: boot_params. */
			assert_int_equal(regs.rsi, ZERO_PAGE_ADDR);
			assert_memory_equal(zp + H_MAGIC, "HdrS", 4);
			assert_int_equal(rd16(zp + H_BOOT_FLAG), 0xaa55);
			assert_true(rd16(zp + H_VERSION) >= 0x020c);
			assert_true(zp[H_LOADFLAGS] & LF_LOADED_HIGH);
			assert_int_not_equal(zp[H_TYPE_OF_LOADER], 0);
			check_zp_e820(&gm, zp);
			assert_string_equal((const char *)guest_mem_ptr(&gm, cl, sizeof(cmdline)),
					    cmdline);
			/* 64-bit mode with paging. */
			assert_int_equal(sregs.cs.selector, 0x10);
			assert_int_equal(sregs.ds.selector, 0x18);
			assert_int_equal(sregs.es.selector, 0x18);
			assert_int_equal(sregs.ss.selector, 0x18);
			assert_int_equal(sregs.cs.l, 1);
			assert_int_equal(sregs.cs.db, 0);
			assert_true(sregs.cr0 & 0x1);             /* PE */
			assert_true(sregs.cr0 & 0x80000000ULL);   /* PG */
			assert_true(sregs.cr4 & 0x20);            /* PAE */
			assert_int_equal(sregs.efer & 0x500, 0x500);   /* LME, LMA */
			/* Identity-mapped: the kernel's whole runtime range,
			 * boot_params, the command line, the GDT. */
			if (kinds[i].kind == KIND_BZIMAGE) {
				uint64_t run = runtime_start(&b, bp.kernel_start);

				assert_int_equal(regs.rip, b.pref_address + 0x200);
				check_identity(&gm, sregs.cr3, run, b.init_size, "kernel");
			} else {
				assert_int_equal(regs.rip, e.entry);
				for (unsigned s = 0; s < e.nseg; s++)
					check_identity(&gm, sregs.cr3, e.seg[s].paddr, e.seg[s].memsz,
						       "ELF segment");
			}
			check_identity(&gm, sregs.cr3, ZERO_PAGE_ADDR, PAGE, "boot_params");
			check_identity(&gm, sregs.cr3, cl, sizeof(cmdline), "command line");
			check_identity(&gm, sregs.cr3, sregs.gdt.base, sregs.gdt.limit + 1u, "GDT");
		}
		boot_close(&bp);
		guest_mem_free(&gm);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_e820_maps),
		cmocka_unit_test(test_bzimage_boot_params),
		cmocka_unit_test(test_bzimage_placement),
		cmocka_unit_test(test_bzimage_runs_at_pref_address),
		cmocka_unit_test(test_bzimage_rejected),
		cmocka_unit_test(test_bzimage_cmdline_size),
		cmocka_unit_test(test_initrd_placement),
		cmocka_unit_test(test_initrd_does_not_fit),
		cmocka_unit_test(test_elf_segments_loaded),
		cmocka_unit_test(test_pvh_start_info),
		cmocka_unit_test(test_elf_entry_choice),
		cmocka_unit_test(test_elf_rejected),
		cmocka_unit_test(test_not_a_kernel),
		cmocka_unit_test(test_entry_state),
	};

	return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
