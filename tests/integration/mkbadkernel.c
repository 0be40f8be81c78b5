/* mkbadkernel: writes the kernel files that test_vmm_badinput feeds to
 * drover-vmm: one good ELF and one good bzImage, each of which boots and
 * ends the VM with debug-exit code 5 (exit status 21), and next to them
 * variants that each break exactly one thing in the good file, so a test
 * that sees a variant fail knows which field it failed on.
 *
 *   mkbadkernel OUTDIR
 *
 * The good ELF (256 bytes) is one PT_LOAD segment holding the whole file at
 * 1 MiB and a PT_NOTE with the Xen PVH entry note:
 *
 *   0x00  Elf64_Ehdr
 *   0x40  Elf64_Phdr[0]  PT_LOAD  offset 0, paddr 0x100000, filesz 256, memsz 8 KiB
 *   0x78  Elf64_Phdr[1]  PT_NOTE  offset 0xb0, 20 bytes
 *   0xb0  note: namesz 4, descsz 4, type 18 (PHYS32_ENTRY), "Xen", entry
 *   0xc8  code (both the PVH and the 64-bit ELF entry)
 *
 * The good bzImage (boot protocol 2.15) has one setup sector after the boot
 * sector; its protected-mode part holds the same code at offset 0x200, the
 * 64-bit entry. The code reads the same in 32-bit and 64-bit mode:
 * "mov $0x501, %dx; mov $5, %al; out %al, %dx; 1: hlt; jmp 1b". */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LOAD_ADDR        0x100000u
#define ELF_FILE_SIZE    256u
#define ELF_NOTE_OFF     0xb0u
#define ELF_NOTE_SIZE    20u
#define ELF_CODE_OFF     0xc8u
#define ELF_MEM_SIZE     0x2000u
#define XEN_PHYS32_ENTRY 18

/* bzImage setup header offsets (Documentation/x86/boot.rst) */
#define BZ_SETUP_SECTS   1u
#define BZ_PAYLOAD_OFF   ((BZ_SETUP_SECTS + 1) * 512u)
#define BZ_ENTRY64_OFF   0x200u
#define HDR_SETUP_SECTS  0x1f1
#define HDR_BOOT_FLAG    0x1fe
#define HDR_JUMP         0x200
#define HDR_MAGIC        0x202
#define HDR_VERSION      0x206
#define HDR_LOADFLAGS    0x211
#define HDR_INITRD_MAX   0x22c
#define HDR_RELOCATABLE  0x234
#define HDR_XLOADFLAGS   0x236
#define HDR_CMDLINE_SIZE 0x238
#define HDR_PREF_ADDRESS 0x258
#define HDR_PREF_ADDRESS 0x258
#define HDR_INIT_SIZE    0x260
#define HDR_END          0x290
#define BZ_CMDLINE_SIZE  255u

static const uint8_t guest_code[] = {
	0x66, 0xba, 0x01, 0x05,    /* mov $0x501, %dx */
	0xb0, 0x05,                /* mov $5, %al */
	0xee,                      /* out %al, %dx */
	0xf4,                      /* hlt */
	0xeb, 0xfd,                /* jmp back to hlt */
};

struct image {
	uint8_t data[4096];
	size_t len;
};

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static Elf64_Ehdr *ehdr(struct image *im) { return (Elf64_Ehdr *)im->data; }
static Elf64_Phdr *phdr(struct image *im, unsigned i)
{
	return (Elf64_Phdr *)(im->data + sizeof(Elf64_Ehdr)) + i;
}
static Elf64_Nhdr *note(struct image *im) { return (Elf64_Nhdr *)(im->data + ELF_NOTE_OFF); }

static void good_elf(struct image *im)
{
	Elf64_Ehdr *eh = ehdr(im);

	memset(im, 0, sizeof(*im));
	im->len = ELF_FILE_SIZE;
	memcpy(eh->e_ident, ELFMAG, SELFMAG);
	eh->e_ident[EI_CLASS] = ELFCLASS64;
	eh->e_ident[EI_DATA] = ELFDATA2LSB;
	eh->e_ident[EI_VERSION] = EV_CURRENT;
	eh->e_type = ET_EXEC;
	eh->e_machine = EM_X86_64;
	eh->e_version = EV_CURRENT;
	eh->e_entry = LOAD_ADDR + ELF_CODE_OFF;
	eh->e_phoff = sizeof(Elf64_Ehdr);
	eh->e_ehsize = sizeof(Elf64_Ehdr);
	eh->e_phentsize = sizeof(Elf64_Phdr);
	eh->e_phnum = 2;
	*phdr(im, 0) = (Elf64_Phdr){ .p_type = PT_LOAD, .p_flags = PF_R | PF_W | PF_X,
				     .p_offset = 0, .p_vaddr = LOAD_ADDR, .p_paddr = LOAD_ADDR,
				     .p_filesz = ELF_FILE_SIZE, .p_memsz = ELF_MEM_SIZE,
				     .p_align = 4096 };
	*phdr(im, 1) = (Elf64_Phdr){ .p_type = PT_NOTE, .p_flags = PF_R,
				     .p_offset = ELF_NOTE_OFF, .p_vaddr = LOAD_ADDR + ELF_NOTE_OFF,
				     .p_paddr = LOAD_ADDR + ELF_NOTE_OFF,
				     .p_filesz = ELF_NOTE_SIZE, .p_memsz = ELF_NOTE_SIZE,
				     .p_align = 4 };
	*note(im) = (Elf64_Nhdr){ .n_namesz = 4, .n_descsz = 4, .n_type = XEN_PHYS32_ENTRY };
	memcpy(im->data + ELF_NOTE_OFF + sizeof(Elf64_Nhdr), "Xen", 4);
	put32(im->data + ELF_NOTE_OFF + sizeof(Elf64_Nhdr) + 4, LOAD_ADDR + ELF_CODE_OFF);
	memcpy(im->data + ELF_CODE_OFF, guest_code, sizeof(guest_code));
}

static void good_bzimage(struct image *im)
{
	uint8_t *h = im->data;

	memset(im, 0, sizeof(*im));
	im->len = BZ_PAYLOAD_OFF + BZ_ENTRY64_OFF + sizeof(guest_code);
	h[HDR_SETUP_SECTS] = BZ_SETUP_SECTS;
	put16(h + HDR_BOOT_FLAG, 0xaa55);
	h[HDR_JUMP] = 0xeb;                                 /* jmp past the header */
	h[HDR_JUMP + 1] = HDR_END - (HDR_JUMP + 2);
	memcpy(h + HDR_MAGIC, "HdrS", 4);
	put16(h + HDR_VERSION, 0x020f);
	h[HDR_LOADFLAGS] = 0x01;                            /* LOADED_HIGH */
	put32(h + HDR_INITRD_MAX, 0x7fffffff);
	h[HDR_RELOCATABLE] = 0;
	put16(h + HDR_XLOADFLAGS, 0x0001);                  /* XLF_KERNEL_64 */
	put32(h + HDR_CMDLINE_SIZE, BZ_CMDLINE_SIZE);
	put64(h + HDR_PREF_ADDRESS, LOAD_ADDR);
	put32(h + HDR_INIT_SIZE, 0x10000);
	memcpy(h + BZ_PAYLOAD_OFF + BZ_ENTRY64_OFF, guest_code, sizeof(guest_code));
}

/* ---- one change each ---- */

static void elf_no_note(struct image *im) { ehdr(im)->e_phnum = 1; }
static void elf_truncated(struct image *im) { im->len = 40; }
static void elf_class32(struct image *im) { ehdr(im)->e_ident[EI_CLASS] = ELFCLASS32; }
static void elf_big_endian(struct image *im) { ehdr(im)->e_ident[EI_DATA] = ELFDATA2MSB; }
static void elf_aarch64(struct image *im) { ehdr(im)->e_machine = EM_AARCH64; }
static void elf_dyn(struct image *im) { ehdr(im)->e_type = ET_DYN; }
static void elf_phnum0(struct image *im) { ehdr(im)->e_phnum = 0; }
static void elf_phnum_huge(struct image *im) { ehdr(im)->e_phnum = 0xffff; }
static void elf_phoff_eof(struct image *im) { ehdr(im)->e_phoff = 1u << 20; }
static void elf_seg_offset_eof(struct image *im) { phdr(im, 0)->p_offset = 1u << 20; }
static void elf_seg_size_eof(struct image *im)
{
	phdr(im, 0)->p_filesz = 1u << 20;
	phdr(im, 0)->p_memsz = 1u << 20;
}
static void elf_filesz_gt_memsz(struct image *im) { phdr(im, 0)->p_memsz = 16; }
static void elf_below_1m(struct image *im) { phdr(im, 0)->p_paddr = 0x80000; }
static void elf_at_3g(struct image *im) { phdr(im, 0)->p_paddr = 0xc0000000u; }
/* Loaded and entered at 4 GiB, through the 64-bit entry (no PVH note). */
static void elf_at_4g(struct image *im)
{
	uint64_t delta = 0x100000000ull - phdr(im, 0)->p_paddr;

	elf_no_note(im);
	phdr(im, 0)->p_paddr += delta;
	ehdr(im)->e_entry += delta;
}
static void elf_pvh_entry_outside(struct image *im)
{
	put32(im->data + ELF_NOTE_OFF + sizeof(Elf64_Nhdr) + 4, 0x200000);
}
static void elf_entry_outside(struct image *im)
{
	elf_no_note(im);
	ehdr(im)->e_entry = 0x200000;
}
static void elf_pvh_descsz(struct image *im) { note(im)->n_descsz = 2; }
static void elf_note_seg_eof(struct image *im) { phdr(im, 1)->p_filesz = 1u << 20; }
static void elf_note_namesz_overrun(struct image *im) { note(im)->n_namesz = 0xfffffff0u; }

/* The entry as an 8-byte value, as QEMU reads it too: still good. */
static void elf_pvh_desc8(struct image *im)
{
	note(im)->n_descsz = 8;
	phdr(im, 1)->p_filesz = phdr(im, 1)->p_memsz = ELF_NOTE_SIZE + 4;
	put64(im->data + ELF_NOTE_OFF + sizeof(Elf64_Nhdr) + 4, LOAD_ADDR + ELF_CODE_OFF);
}

/* One PT_LOAD more than drover-vmm takes: 17 pages of the file at 1 MiB up,
 * the program headers moved behind the code to make room. */
static void elf_17_segments(struct image *im)
{
	const unsigned n = 17, phoff = 0x200;

	im->len = phoff + n * sizeof(Elf64_Phdr);
	ehdr(im)->e_phoff = phoff;
	ehdr(im)->e_phnum = n;
	for (unsigned i = 0; i < n; i++)
		*(Elf64_Phdr *)(im->data + phoff + i * sizeof(Elf64_Phdr)) = (Elf64_Phdr){
			.p_type = PT_LOAD, .p_flags = PF_R | PF_X, .p_offset = 0,
			.p_vaddr = LOAD_ADDR + i * 4096, .p_paddr = LOAD_ADDR + i * 4096,
			.p_filesz = ELF_FILE_SIZE, .p_memsz = 4096, .p_align = 4096 };
}

static void bz_truncated(struct image *im) { im->len = 0x300; }
static void bz_protocol_211(struct image *im) { put16(im->data + HDR_VERSION, 0x020b); }
static void bz_no_kernel64(struct image *im) { put16(im->data + HDR_XLOADFLAGS, 0); }
static void bz_setup_past_eof(struct image *im) { im->data[HDR_SETUP_SECTS] = 200; }
static void bz_init_size_2g(struct image *im) { put32(im->data + HDR_INIT_SIZE, 0x80000000u); }
static void bz_loaded_low(struct image *im) { im->data[HDR_LOADFLAGS] = 0; }
static void bz_pref_4g(struct image *im)
{
	put32(im->data + HDR_PREF_ADDRESS, 0);
	put32(im->data + HDR_PREF_ADDRESS + 4, 1);   /* 0x1_0000_0000 */
}

static void text_file(struct image *im)
{
	static const char text[] =
		"This is a text file, not a kernel. It is long enough to hold an ELF\n"
		"header and a Linux setup header, so only its contents can tell.\n";

	memset(im, 0, sizeof(*im));
	memcpy(im->data, text, sizeof(text) - 1);
	im->len = sizeof(text) - 1;
}
static void empty_file(struct image *im) { memset(im, 0, sizeof(*im)); }
static void ten_bytes(struct image *im)
{
	memset(im, 0, sizeof(*im));
	memcpy(im->data, "0123456789", 10);
	im->len = 10;
}

struct variant {
	const char *name;
	void (*base)(struct image *);
	void (*change)(struct image *);     /* NULL: the base as it is */
};

static const struct variant variants[] = {
	{ "good.elf",                good_elf, NULL },
	{ "nonote.elf",              good_elf, elf_no_note },
	{ "truncated.elf",           good_elf, elf_truncated },
	{ "class32.elf",             good_elf, elf_class32 },
	{ "bigendian.elf",           good_elf, elf_big_endian },
	{ "aarch64.elf",             good_elf, elf_aarch64 },
	{ "dyn.elf",                 good_elf, elf_dyn },
	{ "phnum0.elf",              good_elf, elf_phnum0 },
	{ "phnum-huge.elf",          good_elf, elf_phnum_huge },
	{ "phoff-eof.elf",           good_elf, elf_phoff_eof },
	{ "seg-offset-eof.elf",      good_elf, elf_seg_offset_eof },
	{ "seg-size-eof.elf",        good_elf, elf_seg_size_eof },
	{ "filesz-gt-memsz.elf",     good_elf, elf_filesz_gt_memsz },
	{ "below-1m.elf",            good_elf, elf_below_1m },
	{ "at-3g.elf",               good_elf, elf_at_3g },
	{ "at-4g.elf",               good_elf, elf_at_4g },
	{ "pvh-entry-outside.elf",   good_elf, elf_pvh_entry_outside },
	{ "entry-outside.elf",       good_elf, elf_entry_outside },
	{ "pvh-descsz.elf",          good_elf, elf_pvh_descsz },
	{ "note-seg-eof.elf",        good_elf, elf_note_seg_eof },
	{ "note-namesz-overrun.elf", good_elf, elf_note_namesz_overrun },
	{ "pvh-desc8.elf",           good_elf, elf_pvh_desc8 },
	{ "17-segments.elf",         good_elf, elf_17_segments },
	{ "good.bzImage",            good_bzimage, NULL },
	{ "truncated.bzImage",       good_bzimage, bz_truncated },
	{ "protocol-211.bzImage",    good_bzimage, bz_protocol_211 },
	{ "no-kernel64.bzImage",     good_bzimage, bz_no_kernel64 },
	{ "setup-past-eof.bzImage",  good_bzimage, bz_setup_past_eof },
	{ "init-size-2g.bzImage",    good_bzimage, bz_init_size_2g },
	{ "loaded-low.bzImage",      good_bzimage, bz_loaded_low },
	{ "pref-4g.bzImage",         good_bzimage, bz_pref_4g },
	{ "text.txt",                text_file, NULL },
	{ "empty",                   empty_file, NULL },
	{ "ten-bytes",               ten_bytes, NULL },
};

static int write_image(const char *dir, const char *name, const struct image *im)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, im->data, im->len) != (ssize_t)im->len) {
		fprintf(stderr, "mkbadkernel: %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return close(fd);
}

int main(int argc, char **argv)
{
	struct image im;

	if (argc != 2) {
		fprintf(stderr, "usage: mkbadkernel OUTDIR\n");
		return 2;
	}
	for (size_t i = 0; i < sizeof(variants) / sizeof(variants[0]); i++) {
		variants[i].base(&im);
		if (variants[i].change)
			variants[i].change(&im);
		if (write_image(argv[1], variants[i].name, &im) < 0)
			return 1;
	}
	return 0;
}
