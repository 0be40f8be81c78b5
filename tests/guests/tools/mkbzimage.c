/* mkbzimage: wraps a test guest ELF into a bzImage (Linux boot protocol
 * 2.15, Documentation/x86/boot.rst).
 *
 *   mkbzimage SETUP.bin GUEST.elf OUT.bzImage
 *
 * SETUP.bin is the real-mode setup code (setup16.S) with its header bytes
 * left zero; this tool fills the header in. The protected-mode part is the
 * guest's PT_LOAD segments laid out flat from 0x100000, where the guest is
 * linked: offset 0 holds its 32-bit entry, 0x200 its 64-bit entry (the
 * guest's head.S promises both, and kernel_info at 0x1c0). The guest is not
 * relocatable. */
#include <elf.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOAD_ADDR            0x100000u
#define ENTRY64_OFFSET       0x200u
#define KERNEL_INFO_OFFSET   0x1c0u
#define SETUP_MAX            (64u * 512u)
#define GUEST_CMDLINE_MAX    4095u     /* BOOTINFO_CMDLINE_MAX - 1 */

/* setup header offsets */
#define HDR_SETUP_SECTS      0x1f1
#define HDR_SYSSIZE          0x1f4
#define HDR_VID_MODE         0x1fa
#define HDR_BOOT_FLAG        0x1fe
#define HDR_JUMP             0x200
#define HDR_MAGIC            0x202
#define HDR_VERSION          0x206
#define HDR_LOADFLAGS        0x211
#define HDR_CODE32_START     0x214
#define HDR_INITRD_ADDR_MAX  0x22c
#define HDR_KERNEL_ALIGNMENT 0x230
#define HDR_RELOCATABLE      0x234
#define HDR_MIN_ALIGNMENT    0x235
#define HDR_XLOADFLAGS       0x236
#define HDR_CMDLINE_SIZE     0x238
#define HDR_PREF_ADDRESS     0x258
#define HDR_INIT_SIZE        0x260
#define HDR_KERNEL_INFO_OFF  0x268
#define HDR_END              0x26c

#define LOADED_HIGH          0x01
#define XLF_KERNEL_64        0x0001

struct buf {
	uint8_t *data;
	size_t len;
};

static int file_read(const char *path, struct buf *b)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "mkbzimage: %s: %s\n", path, strerror(errno));
		return -errno;
	}
	int ret = 0;
	if (fseek(f, 0, SEEK_END) != 0 || ftell(f) < 0) {
		ret = -EIO;
		goto err_close;
	}
	b->len = (size_t)ftell(f);
	rewind(f);
	b->data = malloc(b->len ? b->len : 1);
	if (!b->data) {
		ret = -ENOMEM;
		goto err_close;
	}
	if (fread(b->data, 1, b->len, f) != b->len) {
		ret = -EIO;
		goto err_free;
	}
	fclose(f);
	return 0;
err_free:
	free(b->data);
	b->data = NULL;
err_close:
	fprintf(stderr, "mkbzimage: %s: cannot read\n", path);
	fclose(f);
	return ret;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)v);
	put16(p + 2, (uint16_t)(v >> 16));
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

/* The guest's loadable bytes, flat from LOAD_ADDR; *init_size covers BSS. */
static int elf_flatten(const char *path, const struct buf *elf, struct buf *flat,
		       uint32_t *init_size)
{
	const Elf64_Ehdr *eh = (const void *)elf->data;
	if (elf->len < sizeof(*eh) || memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 ||
	    eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_machine != EM_X86_64 ||
	    eh->e_type != ET_EXEC) {
		fprintf(stderr, "mkbzimage: %s: not an x86-64 ELF64 executable\n", path);
		return -EINVAL;
	}
	if (eh->e_entry != LOAD_ADDR + ENTRY64_OFFSET) {
		fprintf(stderr, "mkbzimage: %s: entry 0x%llx, want 0x%x (64-bit entry at +0x200)\n",
			path, (unsigned long long)eh->e_entry, LOAD_ADDR + ENTRY64_OFFSET);
		return -EINVAL;
	}
	if (eh->e_phentsize != sizeof(Elf64_Phdr) ||
	    eh->e_phoff + (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr) > elf->len) {
		fprintf(stderr, "mkbzimage: %s: program headers out of the file\n", path);
		return -EINVAL;
	}
	const Elf64_Phdr *ph = (const void *)(elf->data + eh->e_phoff);
	uint64_t file_end = LOAD_ADDR, mem_end = LOAD_ADDR;
	int have_head = 0;
	for (unsigned i = 0; i < eh->e_phnum; i++) {
		if (ph[i].p_type != PT_LOAD)
			continue;
		if (ph[i].p_paddr < LOAD_ADDR || ph[i].p_filesz > ph[i].p_memsz ||
		    ph[i].p_offset + ph[i].p_filesz > elf->len ||
		    ph[i].p_paddr + ph[i].p_memsz > 0x40000000u) {
			fprintf(stderr, "mkbzimage: %s: segment %u (0x%llx) not loadable flat at 0x%x\n",
				path, i, (unsigned long long)ph[i].p_paddr, LOAD_ADDR);
			return -EINVAL;
		}
		if (ph[i].p_paddr == LOAD_ADDR)
			have_head = 1;
		if (ph[i].p_paddr + ph[i].p_filesz > file_end)
			file_end = ph[i].p_paddr + ph[i].p_filesz;
		if (ph[i].p_paddr + ph[i].p_memsz > mem_end)
			mem_end = ph[i].p_paddr + ph[i].p_memsz;
	}
	if (!have_head) {
		fprintf(stderr, "mkbzimage: %s: no segment starts at 0x%x\n", path, LOAD_ADDR);
		return -EINVAL;
	}
	flat->len = file_end - LOAD_ADDR;
	flat->data = calloc(1, flat->len);
	if (!flat->data)
		return -ENOMEM;
	for (unsigned i = 0; i < eh->e_phnum; i++)
		if (ph[i].p_type == PT_LOAD)
			memcpy(flat->data + (ph[i].p_paddr - LOAD_ADDR), elf->data + ph[i].p_offset,
			       ph[i].p_filesz);
	if (flat->len < KERNEL_INFO_OFFSET + 16 ||
	    memcmp(flat->data + KERNEL_INFO_OFFSET, "LToP", 4) != 0) {
		fprintf(stderr, "mkbzimage: %s: no kernel_info (\"LToP\") at +0x%x\n", path,
			KERNEL_INFO_OFFSET);
		free(flat->data);
		return -EINVAL;
	}
	*init_size = (uint32_t)(((mem_end - LOAD_ADDR) + 0xfff) & ~0xfffull);
	return 0;
}

/* Pads the setup code to whole sectors and fills in the setup header. */
static int setup_build(const char *path, const struct buf *code, size_t payload_len,
		       uint32_t init_size, struct buf *setup)
{
	if (code->len <= HDR_END || code->len > SETUP_MAX || code->data[HDR_JUMP] != 0xeb) {
		fprintf(stderr, "mkbzimage: %s: not setup code (%zu bytes, want a jump at 0x200)\n",
			path, code->len);
		return -EINVAL;
	}
	for (size_t i = HDR_SETUP_SECTS; i < HDR_END; i++)
		if (i != HDR_JUMP && i != HDR_JUMP + 1 && code->data[i]) {
			fprintf(stderr, "mkbzimage: %s: byte 0x%zx of the setup header is not zero\n",
				path, i);
			return -EINVAL;
		}
	setup->len = (code->len + 511) & ~(size_t)511;
	setup->data = calloc(1, setup->len);
	if (!setup->data)
		return -ENOMEM;
	memcpy(setup->data, code->data, code->len);

	uint8_t *h = setup->data;
	h[HDR_SETUP_SECTS] = (uint8_t)(setup->len / 512 - 1);
	put32(h + HDR_SYSSIZE, (uint32_t)((payload_len + 15) / 16));
	put16(h + HDR_VID_MODE, 0xffff);
	put16(h + HDR_BOOT_FLAG, 0xaa55);
	memcpy(h + HDR_MAGIC, "HdrS", 4);
	put16(h + HDR_VERSION, 0x020f);
	h[HDR_LOADFLAGS] = LOADED_HIGH;
	put32(h + HDR_CODE32_START, LOAD_ADDR);
	put32(h + HDR_INITRD_ADDR_MAX, 0x7fffffff);
	put32(h + HDR_KERNEL_ALIGNMENT, 0x100000);
	h[HDR_RELOCATABLE] = 0;
	h[HDR_MIN_ALIGNMENT] = 20;
	put16(h + HDR_XLOADFLAGS, XLF_KERNEL_64);
	put32(h + HDR_CMDLINE_SIZE, GUEST_CMDLINE_MAX);
	put64(h + HDR_PREF_ADDRESS, LOAD_ADDR);
	put32(h + HDR_INIT_SIZE, init_size);
	put32(h + HDR_KERNEL_INFO_OFF, KERNEL_INFO_OFFSET);
	return 0;
}

static int file_write(const char *path, const struct buf *a, const struct buf *b)
{
	FILE *f = fopen(path, "wb");
	if (!f) {
		fprintf(stderr, "mkbzimage: %s: %s\n", path, strerror(errno));
		return -errno;
	}
	if (fwrite(a->data, 1, a->len, f) != a->len || fwrite(b->data, 1, b->len, f) != b->len) {
		fprintf(stderr, "mkbzimage: %s: write failed\n", path);
		fclose(f);
		return -EIO;
	}
	if (fclose(f) != 0) {
		fprintf(stderr, "mkbzimage: %s: %s\n", path, strerror(errno));
		return -EIO;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct buf code = { 0 }, elf = { 0 }, flat = { 0 }, setup = { 0 };
	uint32_t init_size;
	int ret = 1;

	if (argc != 4) {
		fprintf(stderr, "usage: mkbzimage SETUP.bin GUEST.elf OUT.bzImage\n");
		return 2;
	}
	if (file_read(argv[1], &code) < 0 || file_read(argv[2], &elf) < 0)
		goto out;
	if (elf_flatten(argv[2], &elf, &flat, &init_size) < 0)
		goto out;
	if (setup_build(argv[1], &code, flat.len, init_size, &setup) < 0)
		goto out;
	if (file_write(argv[3], &setup, &flat) < 0) {
		remove(argv[3]);
		goto out;
	}
	ret = 0;
out:
	free(code.data);
	free(elf.data);
	free(flat.data);
	free(setup.data);
	return ret;
}
