#include "boot.h"

#include <elf.h>
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layout.h"
#include "pci.h"
#include "util.h"

/* Linux boot protocol (Documentation/x86/boot.rst): offsets in the setup
 * header (as in the file and in boot_params) and in boot_params. */
#define BP_ACPI_RSDP_ADDR    0x070
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE  0x0c4
#define BP_EXT_CMD_LINE_PTR  0x0c8
#define BP_E820_ENTRIES      0x1e8
#define HDR_START            0x1f1
#define HDR_SETUP_SECTS      0x1f1
#define HDR_VID_MODE         0x1fa
#define HDR_BOOT_FLAG        0x1fe
#define HDR_JUMP             0x200
#define HDR_MAGIC            0x202
#define HDR_VERSION          0x206
#define HDR_TYPE_OF_LOADER   0x210
#define HDR_LOADFLAGS        0x211
#define HDR_CODE32_START     0x214
#define HDR_RAMDISK_IMAGE    0x218
#define HDR_RAMDISK_SIZE     0x21c
#define HDR_HEAP_END_PTR     0x224
#define HDR_CMD_LINE_PTR     0x228
#define HDR_INITRD_ADDR_MAX  0x22c
#define HDR_KERNEL_ALIGNMENT 0x230
#define HDR_RELOCATABLE      0x234
#define HDR_XLOADFLAGS       0x236
#define HDR_CMDLINE_SIZE     0x238
#define HDR_PREF_ADDRESS     0x258
#define HDR_INIT_SIZE        0x260
#define HDR_END_MAX          0x290
#define BP_E820_TABLE        0x2d0

#define LOADFLAG_LOADED_HIGH  0x01
#define LOADFLAG_CAN_USE_HEAP 0x80
#define XLF_KERNEL_64         0x01

/* PVH (xen/include/public/arch-x86/hvm/start_info.h). */
#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define HVM_START_MAGIC          0x336ec578
#define PVH_MODLIST_OFF          0x40
#define PVH_MEMMAP_OFF           0x80
#define PVH_MEMMAP_MAX           ((4096 - PVH_MEMMAP_OFF) / 24)

#define ELF_MAX_PHDRS 64
#define NOTE_MAX_SIZE (64 * 1024)

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

const char *boot_entry_name(enum boot_entry e)
{
	return e == BOOT_ENTRY_PVH ? "pvh" : "linux64";
}

unsigned boot_e820(const struct guest_mem *gm, struct e820_entry *out, unsigned max)
{
	uint64_t low_end = guest_mem_low_end(gm);
	struct e820_entry map[6];
	unsigned n = 0;

	map[n++] = (struct e820_entry){ 0, EBDA_ADDR, E820_RAM };
	map[n++] = (struct e820_entry){ EBDA_ADDR, LOW_RAM_END - EBDA_ADDR, E820_RESERVED };
	map[n++] = (struct e820_entry){ ACPI_TABLES_ADDR, BIOS_AREA_END - ACPI_TABLES_ADDR,
					E820_RESERVED };
	if (low_end > BIOS_AREA_END)
		map[n++] = (struct e820_entry){ BIOS_AREA_END, low_end - BIOS_AREA_END, E820_RAM };
	/* The PCI ECAM: an OS uses the MCFG table's area only when the
	 * firmware reserved it (Linux checks the e820 map). */
	map[n++] = (struct e820_entry){ PCI_ECAM_BASE, PCI_ECAM_SIZE, E820_RESERVED };
	for (unsigned i = 1; i < gm->nregions; i++)
		map[n++] = (struct e820_entry){ gm->region[i].gpa, gm->region[i].size, E820_RAM };
	if (n > max)
		n = max;
	memcpy(out, map, n * sizeof(map[0]));
	return n;
}

static int open_file(const char *path, const char *what, int *fd, uint64_t *size,
		     char *err, size_t errlen)
{
	struct stat st;

	*fd = open(path, O_RDONLY | O_CLOEXEC);
	if (*fd < 0) {
		int ret = -errno;

		snprintf(err, errlen, "%s '%s': %s", what, path, strerror(-ret));
		return ret;
	}
	if (fstat(*fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s '%s': not a regular file", what, path);
		close(*fd);
		*fd = -1;
		return -EINVAL;
	}
	*size = (uint64_t)st.st_size;
	return 0;
}

static int check_ram(const struct guest_mem *gm, uint64_t addr, uint64_t len)
{
	return addr >= BIOS_AREA_END && guest_mem_ptr(gm, addr, len) ? 0 : -ERANGE;
}

/* Where a bzImage's kernel runs, which decides how much RAM it needs.
 * boot.rst: a relocatable kernel runs at its load address rounded up to
 * kernel_alignment, but its 64-bit startup code never goes below
 * pref_address (LOAD_PHYSICAL_ADDR), and it needs init_size bytes from
 * there; a kernel that is not relocatable runs at pref_address. Loading it
 * at pref_address is therefore always right, and the least RAM it can do
 * with is [pref_address, pref_address + init_size). */
static int prepare_bzimage(struct boot_plan *bp, const uint8_t *hdr, uint64_t fsize,
			   const struct guest_mem *gm, char *err, size_t errlen)
{
	unsigned setup_sects = hdr[HDR_SETUP_SECTS] ? hdr[HDR_SETUP_SECTS] : 4;
	uint64_t payload_off = (uint64_t)(setup_sects + 1) * 512;
	uint64_t payload_size, init_size, load = KERNEL_DEFAULT_ADDR, run;
	uint32_t align;
	unsigned hdr_end;

	bp->format = BOOT_FORMAT_BZIMAGE;
	bp->protocol = get16(hdr + HDR_VERSION);
	if (bp->protocol < 0x020c || !(get16(hdr + HDR_XLOADFLAGS) & XLF_KERNEL_64)) {
		snprintf(err, errlen, "kernel '%s': bzImage boot protocol %u.%02u has no 64-bit "
			 "entry (drover needs protocol 2.12 or later with XLF_KERNEL_64)",
			 bp->kernel_path, bp->protocol >> 8, bp->protocol & 0xff);
		return -EINVAL;
	}
	if (!(hdr[HDR_LOADFLAGS] & LOADFLAG_LOADED_HIGH)) {
		snprintf(err, errlen, "kernel '%s': a zImage (loaded low) is not supported",
			 bp->kernel_path);
		return -EINVAL;
	}
	if (payload_off + 0x200 >= fsize) {   /* the 64-bit entry must be in the file */
		snprintf(err, errlen, "kernel '%s': truncated bzImage (%u setup sectors, %llu "
			 "bytes)", bp->kernel_path, setup_sects, (unsigned long long)fsize);
		return -EINVAL;
	}
	payload_size = fsize - payload_off;
	init_size = get32(hdr + HDR_INIT_SIZE);
	if (init_size < payload_size)
		init_size = payload_size;
	if (get64(hdr + HDR_PREF_ADDRESS) > load)
		load = get64(hdr + HDR_PREF_ADDRESS);
	run = load;
	align = get32(hdr + HDR_KERNEL_ALIGNMENT);
	if (hdr[HDR_RELOCATABLE] && align && !(align & (align - 1)) && load <= UINT64_MAX - align)
		run = ALIGN_UP(load, (uint64_t)align);
	if (run + init_size > HIGH_RAM_START || run > UINT64_MAX - init_size) {
		snprintf(err, errlen, "kernel '%s' asks to run at 0x%llx, above 4 GiB, where the "
			 "64-bit boot protocol's identity map does not reach", bp->kernel_path,
			 (unsigned long long)run);
		return -EINVAL;
	}
	if (check_ram(gm, load, run - load + init_size)) {
		snprintf(err, errlen, "kernel '%s' runs at 0x%llx and needs %llu MiB of RAM from "
			 "there: give the VM more --memory", bp->kernel_path,
			 (unsigned long long)run, (unsigned long long)(init_size >> 20) + 1);
		return -ENOMEM;
	}
	bp->seg[0] = (struct boot_segment){ payload_off, payload_size, load, payload_size };
	bp->nsegments = 1;
	bp->kernel_start = load;
	bp->kernel_end = run + init_size;
	bp->entry = BOOT_ENTRY_LINUX64;
	bp->entry_addr = load + 0x200;
	hdr_end = HDR_JUMP + 2 + hdr[HDR_JUMP + 1];
	if (hdr_end > HDR_END_MAX)
		hdr_end = HDR_END_MAX;
	bp->setup_header_len = hdr_end - HDR_START;
	memcpy(bp->setup_header, hdr + HDR_START, bp->setup_header_len);
	return 0;
}

/* Finds the PVH entry in the ELF notes; 0 and *entry, -ENOENT, or -EINVAL. */
static int find_pvh_note(int fd, const Elf64_Phdr *ph, uint64_t fsize, uint64_t *entry)
{
	uint8_t *buf;
	uint64_t off = 0, len = ph->p_filesz;
	int ret = -ENOENT;

	if (len > NOTE_MAX_SIZE || ph->p_offset > fsize || len > fsize - ph->p_offset)
		return -EINVAL;
	buf = malloc(len ? len : 1);
	if (!buf)
		return -ENOMEM;
	if (pread_full(fd, buf, len, (off_t)ph->p_offset) < 0) {
		free(buf);
		return -EIO;
	}
	while (len - off >= sizeof(Elf64_Nhdr)) {
		Elf64_Nhdr nh;
		uint64_t name_off, desc_off, next;

		memcpy(&nh, buf + off, sizeof(nh));
		name_off = off + sizeof(nh);
		desc_off = name_off + ALIGN_UP((uint64_t)nh.n_namesz, 4);
		next = desc_off + ALIGN_UP((uint64_t)nh.n_descsz, 4);
		if (desc_off > len || next > len || nh.n_descsz > len) {
			ret = -EINVAL;      /* a note running past its segment */
			break;
		}
		if (nh.n_type == XEN_ELFNOTE_PHYS32_ENTRY && nh.n_namesz == 4 &&
		    !memcmp(buf + name_off, "Xen", 4)) {
			if (nh.n_descsz == 4)
				*entry = get32(buf + desc_off);
			else if (nh.n_descsz == 8)
				*entry = get64(buf + desc_off);
			else
				ret = -EINVAL;
			if (nh.n_descsz == 4 || nh.n_descsz == 8)
				ret = 0;
			break;
		}
		off = next;
	}
	free(buf);
	return ret;
}

static int prepare_elf(struct boot_plan *bp, int fd, uint64_t fsize, enum boot_protocol proto,
		       const struct guest_mem *gm, char *err, size_t errlen)
{
	Elf64_Ehdr eh;
	Elf64_Phdr ph[ELF_MAX_PHDRS];
	uint64_t pvh_entry = 0;
	bool has_pvh = false;
	int ret;

	bp->format = BOOT_FORMAT_ELF;
	if (pread_full(fd, &eh, sizeof(eh), 0) < 0 || eh.e_ident[EI_CLASS] != ELFCLASS64) {
		snprintf(err, errlen, "kernel '%s': not a 64-bit ELF file", bp->kernel_path);
		return -EINVAL;
	}
	if (eh.e_ident[EI_DATA] != ELFDATA2LSB || eh.e_machine != EM_X86_64) {
		snprintf(err, errlen, "kernel '%s': ELF file is not for x86-64", bp->kernel_path);
		return -EINVAL;
	}
	if (eh.e_type != ET_EXEC) {
		snprintf(err, errlen, "kernel '%s': ELF file is not an executable (type %u)",
			 bp->kernel_path, eh.e_type);
		return -EINVAL;
	}
	if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 ||
	    eh.e_phnum > ELF_MAX_PHDRS || eh.e_phoff > fsize ||
	    eh.e_phnum * sizeof(Elf64_Phdr) > fsize - eh.e_phoff ||
	    pread_full(fd, ph, eh.e_phnum * sizeof(Elf64_Phdr), (off_t)eh.e_phoff) < 0) {
		snprintf(err, errlen, "kernel '%s': bad ELF program headers (%u of %u bytes at "
			 "offset %llu)", bp->kernel_path, eh.e_phnum, eh.e_phentsize,
			 (unsigned long long)eh.e_phoff);
		return -EINVAL;
	}
	bp->kernel_start = UINT64_MAX;
	bp->kernel_end = 0;
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		const Elf64_Phdr *p = &ph[i];

		if (p->p_type == PT_NOTE && !has_pvh) {
			ret = find_pvh_note(fd, p, fsize, &pvh_entry);
			if (ret == 0)
				has_pvh = true;
			else if (ret != -ENOENT) {
				snprintf(err, errlen, "kernel '%s': malformed ELF note segment %u",
					 bp->kernel_path, i);
				return -EINVAL;
			}
		}
		if (p->p_type != PT_LOAD || p->p_memsz == 0)
			continue;
		if (p->p_filesz > p->p_memsz) {
			snprintf(err, errlen, "kernel '%s': ELF segment %u has more bytes in the file "
				 "(%llu) than in memory (%llu)", bp->kernel_path, i,
				 (unsigned long long)p->p_filesz, (unsigned long long)p->p_memsz);
			return -EINVAL;
		}
		if (p->p_offset > fsize || p->p_filesz > fsize - p->p_offset) {
			snprintf(err, errlen, "kernel '%s': ELF segment %u lies outside the file",
				 bp->kernel_path, i);
			return -EINVAL;
		}
		if (p->p_paddr < BIOS_AREA_END) {
			snprintf(err, errlen, "kernel '%s': ELF segment %u at 0x%llx is below 1 MiB, "
				 "where the boot information lives", bp->kernel_path, i,
				 (unsigned long long)p->p_paddr);
			return -EINVAL;
		}
		if (check_ram(gm, p->p_paddr, p->p_memsz)) {
			bool hole = p->p_paddr < HIGH_RAM_START &&
				    p->p_paddr + p->p_memsz > PCI_HOLE_START;

			snprintf(err, errlen, "kernel '%s': ELF segment %u [0x%llx, 0x%llx) is not "
				 "inside guest RAM: %s", bp->kernel_path, i,
				 (unsigned long long)p->p_paddr,
				 (unsigned long long)(p->p_paddr + p->p_memsz),
				 hole ? "it falls in the PCI hole [3 GiB, 4 GiB), where no VM has RAM"
				      : "give the VM more --memory");
			return hole ? -EINVAL : -ENOMEM;
		}
		if (bp->nsegments == BOOT_MAX_SEGMENTS) {
			snprintf(err, errlen, "kernel '%s': more than %d loadable ELF segments",
				 bp->kernel_path, BOOT_MAX_SEGMENTS);
			return -EINVAL;
		}
		bp->seg[bp->nsegments++] = (struct boot_segment){ p->p_offset, p->p_filesz,
								   p->p_paddr, p->p_memsz };
		if (p->p_paddr < bp->kernel_start)
			bp->kernel_start = p->p_paddr;
		if (p->p_paddr + p->p_memsz > bp->kernel_end)
			bp->kernel_end = p->p_paddr + p->p_memsz;
	}
	if (!bp->nsegments) {
		snprintf(err, errlen, "kernel '%s': ELF file has no loadable segment",
			 bp->kernel_path);
		return -EINVAL;
	}
	if (proto == BOOT_PVH && !has_pvh) {
		snprintf(err, errlen, "kernel '%s': --boot-protocol pvh, but the ELF file has no "
			 "PVH entry note", bp->kernel_path);
		return -EINVAL;
	}
	if (has_pvh && proto != BOOT_LINUX64) {
		bp->entry = BOOT_ENTRY_PVH;
		bp->entry_addr = pvh_entry;
	} else {
		bp->entry = BOOT_ENTRY_LINUX64;
		bp->entry_addr = eh.e_entry;
	}
	if (bp->entry == BOOT_ENTRY_LINUX64 && bp->kernel_end > HIGH_RAM_START) {
		snprintf(err, errlen, "kernel '%s': ELF segments end at 0x%llx, above 4 GiB, where "
			 "the 64-bit boot protocol's identity map does not reach", bp->kernel_path,
			 (unsigned long long)bp->kernel_end);
		return -EINVAL;
	}
	if (bp->entry_addr < bp->kernel_start || bp->entry_addr >= bp->kernel_end ||
	    (bp->entry == BOOT_ENTRY_PVH && bp->entry_addr > UINT32_MAX)) {
		snprintf(err, errlen, "kernel '%s': %s entry point 0x%llx is outside the loaded "
			 "image", bp->kernel_path, boot_entry_name(bp->entry),
			 (unsigned long long)bp->entry_addr);
		return -EINVAL;
	}
	return 0;
}

static int place_initrd(struct boot_plan *bp, const struct guest_mem *gm, uint64_t max_addr,
			char *err, size_t errlen)
{
	uint64_t top = guest_mem_low_end(gm), lowest = ALIGN_UP(bp->kernel_end, 4096);

	if (top > max_addr + 1)
		top = max_addr + 1;
	if (bp->initrd_size > top || ALIGN_DOWN(top - bp->initrd_size, 4096) < lowest) {
		snprintf(err, errlen, "initrd '%s' (%llu KiB) does not fit between the kernel's "
			 "end (0x%llx) and 0x%llx: give the VM more --memory", bp->initrd_path,
			 (unsigned long long)(bp->initrd_size >> 10), (unsigned long long)lowest,
			 (unsigned long long)top);
		return -ENOMEM;
	}
	bp->initrd_addr = ALIGN_DOWN(top - bp->initrd_size, 4096);
	return 0;
}

int boot_prepare(struct boot_plan *bp, const struct vmm_config *cfg,
		 const struct guest_mem *gm, char *err, size_t errlen)
{
	uint8_t hdr[HDR_END_MAX];
	uint64_t fsize, max_initrd = UINT32_MAX;
	int ret;

	memset(bp, 0, sizeof(*bp));
	bp->kernel_fd = bp->initrd_fd = -1;
	bp->kernel_path = cfg->kernel;
	bp->initrd_path = cfg->initrd;
	bp->cmdline = cfg->cmdline ? cfg->cmdline : "";
	ret = open_file(cfg->kernel, "kernel", &bp->kernel_fd, &fsize, err, errlen);
	if (ret < 0)
		return ret;
	memset(hdr, 0, sizeof(hdr));
	if (fsize < 64 || pread_full(bp->kernel_fd, hdr, fsize < sizeof(hdr) ? fsize : sizeof(hdr),
				     0) < 0) {
		snprintf(err, errlen, "kernel '%s': file too short (%llu bytes) to be a kernel",
			 cfg->kernel, (unsigned long long)fsize);
		ret = -EINVAL;
		goto err;
	}
	if (!memcmp(hdr, ELFMAG, SELFMAG)) {
		ret = prepare_elf(bp, bp->kernel_fd, fsize, cfg->boot_protocol, gm, err, errlen);
	} else if (fsize > HDR_END_MAX && get16(hdr + HDR_BOOT_FLAG) == 0xaa55 &&
		   !memcmp(hdr + HDR_MAGIC, "HdrS", 4)) {
		if (cfg->boot_protocol == BOOT_PVH) {
			snprintf(err, errlen, "kernel '%s': --boot-protocol pvh needs an ELF kernel "
				 "with a PVH note; this is a bzImage", cfg->kernel);
			ret = -EINVAL;
			goto err;
		}
		ret = prepare_bzimage(bp, hdr, fsize, gm, err, errlen);
		if (!ret && bp->protocol >= 0x0203)
			max_initrd = get32(hdr + HDR_INITRD_ADDR_MAX);
	} else {
		snprintf(err, errlen, "kernel '%s': not a kernel drover can boot (neither a Linux "
			 "bzImage nor an x86-64 ELF file)", cfg->kernel);
		ret = -EINVAL;
	}
	if (ret < 0)
		goto err;
	if (bp->format == BOOT_FORMAT_BZIMAGE && bp->protocol >= 0x0206) {
		uint32_t max_cmd = get32(hdr + HDR_CMDLINE_SIZE);

		if (strlen(bp->cmdline) > max_cmd) {
			snprintf(err, errlen, "--cmdline: %zu bytes, but kernel '%s' takes at most %u",
				 strlen(bp->cmdline), cfg->kernel, max_cmd);
			ret = -EINVAL;
			goto err;
		}
	}
	if (cfg->initrd) {
		ret = open_file(cfg->initrd, "initrd", &bp->initrd_fd, &bp->initrd_size, err, errlen);
		if (ret < 0)
			goto err;
		ret = place_initrd(bp, gm, max_initrd, err, errlen);
		if (ret < 0)
			goto err;
	}
	return 0;

err:
	boot_close(bp);
	return ret;
}

void boot_close(struct boot_plan *bp)
{
	if (bp->kernel_fd >= 0)
		close(bp->kernel_fd);
	if (bp->initrd_fd >= 0)
		close(bp->initrd_fd);
	bp->kernel_fd = bp->initrd_fd = -1;
}

static int load_file(int fd, const char *path, const struct guest_mem *gm, uint64_t off,
		     uint64_t len, uint64_t gpa, char *err, size_t errlen)
{
	void *dst = guest_mem_ptr(gm, gpa, len);
	int ret;

	if (!dst)
		return -EFAULT;
	ret = pread_full(fd, dst, len, (off_t)off);
	if (ret < 0)
		snprintf(err, errlen, "reading '%s': %s", path,
			 ret == -EIO ? "file shrank since it was checked" : strerror(-ret));
	return ret;
}

static void write_gdt_and_page_tables(const struct guest_mem *gm)
{
	static const uint64_t gdt[] = {
		0,
		0,
		0x00af9b000000ffffULL,   /* 0x10: 64-bit code */
		0x00cf93000000ffffULL,   /* 0x18: data, 4 GiB */
		0x00cf9b000000ffffULL,   /* 0x20: 32-bit code, 4 GiB */
		0x0000890000000067ULL,   /* 0x28: 64-bit TSS (low half), base 0 */
		0,                       /*       (high half) */
	};
	uint64_t *pml4 = guest_mem_ptr(gm, PML4_ADDR, 4096);
	uint64_t *pdpt = guest_mem_ptr(gm, PDPT_ADDR, 4096);
	uint64_t *pd = guest_mem_ptr(gm, PD_ADDR, 4 * 4096);

	/* At f000:fff0: mov $PORT_ACPI_RESET, %dx; mov $ACPI_RESET_VALUE, %al;
	 * out %al, %dx; 1: cli; hlt; jmp 1b. */
	static const uint8_t reset_stub[] = {
		0xba, PORT_ACPI_RESET & 0xff, PORT_ACPI_RESET >> 8,
		0xb0, ACPI_RESET_VALUE, 0xee, 0xfa, 0xf4, 0xeb, 0xfc,
	};

	guest_mem_write(gm, RESET_VECTOR_ADDR, reset_stub, sizeof(reset_stub));
	guest_mem_write(gm, BOOT_GDT_ADDR, gdt, sizeof(gdt));
	memset(guest_mem_ptr(gm, BOOT_IDT_ADDR, 16), 0, 16);
	memset(pml4, 0, 4096);
	memset(pdpt, 0, 4096);
	pml4[0] = PDPT_ADDR | 0x3;
	for (unsigned i = 0; i < 4; i++)
		pdpt[i] = (PD_ADDR + i * 4096) | 0x3;
	for (unsigned i = 0; i < 4 * 512; i++)
		pd[i] = ((uint64_t)i << 21) | 0x83;   /* present, writable, 2 MiB */
}

static void write_pvh_info(const struct boot_plan *bp, const struct guest_mem *gm)
{
	uint8_t *page = guest_mem_ptr(gm, PVH_INFO_ADDR, 4096);
	struct e820_entry map[E820_MAX_ENTRIES];
	unsigned n = boot_e820(gm, map, PVH_MEMMAP_MAX);
	uint8_t *mod = page + PVH_MODLIST_OFF, *mm = page + PVH_MEMMAP_OFF;

	memset(page, 0, 4096);
	put32(page + 0, HVM_START_MAGIC);
	put32(page + 4, 1);                         /* version: has the memory map */
	put32(page + 12, bp->initrd_size ? 1 : 0);  /* nr_modules */
	put64(page + 16, PVH_INFO_ADDR + PVH_MODLIST_OFF);
	put64(page + 24, CMDLINE_ADDR);
	put64(page + 32, bp->rsdp_addr);
	put64(page + 40, PVH_INFO_ADDR + PVH_MEMMAP_OFF);
	put32(page + 48, n);
	put64(mod + 0, bp->initrd_addr);
	put64(mod + 8, bp->initrd_size);
	for (unsigned i = 0; i < n; i++, mm += 24) {
		put64(mm + 0, map[i].addr);
		put64(mm + 8, map[i].size);
		put32(mm + 16, map[i].type);
	}
}

static void write_zero_page(const struct boot_plan *bp, const struct guest_mem *gm)
{
	uint8_t *zp = guest_mem_ptr(gm, ZERO_PAGE_ADDR, 4096);
	struct e820_entry map[E820_MAX_ENTRIES];
	unsigned n = boot_e820(gm, map, E820_MAX_ENTRIES);

	memset(zp, 0, 4096);
	if (bp->format == BOOT_FORMAT_BZIMAGE) {
		memcpy(zp + HDR_START, bp->setup_header, bp->setup_header_len);
	} else {
		/* An ELF kernel has no setup header: describe what a loader of the
		 * 64-bit protocol would have found. */
		put16(zp + HDR_BOOT_FLAG, 0xaa55);
		memcpy(zp + HDR_MAGIC, "HdrS", 4);
		put16(zp + HDR_VERSION, 0x020f);
		put32(zp + HDR_KERNEL_ALIGNMENT, 0x1000000);
		put32(zp + HDR_CMDLINE_SIZE, CMDLINE_MAX - 1);
		put32(zp + HDR_INITRD_ADDR_MAX, UINT32_MAX);
	}
	put16(zp + HDR_VID_MODE, 0xffff);                 /* "normal" */
	zp[HDR_TYPE_OF_LOADER] = 0xff;                      /* undefined loader */
	zp[HDR_LOADFLAGS] |= LOADFLAG_LOADED_HIGH | LOADFLAG_CAN_USE_HEAP;
	put16(zp + HDR_HEAP_END_PTR, 0xfe00);
	put32(zp + HDR_CMD_LINE_PTR, (uint32_t)CMDLINE_ADDR);
	put32(zp + BP_EXT_CMD_LINE_PTR, 0);
	put32(zp + HDR_RAMDISK_IMAGE, (uint32_t)bp->initrd_addr);
	put32(zp + HDR_RAMDISK_SIZE, (uint32_t)bp->initrd_size);
	put32(zp + BP_EXT_RAMDISK_IMAGE, (uint32_t)(bp->initrd_addr >> 32));
	put32(zp + BP_EXT_RAMDISK_SIZE, (uint32_t)(bp->initrd_size >> 32));
	put64(zp + BP_ACPI_RSDP_ADDR, bp->rsdp_addr);
	zp[BP_E820_ENTRIES] = (uint8_t)n;
	memcpy(zp + BP_E820_TABLE, map, n * sizeof(map[0]));
}

int boot_load(const struct boot_plan *bp, const struct guest_mem *gm, char *err, size_t errlen)
{
	size_t cmdlen = strlen(bp->cmdline);
	int ret;

	for (unsigned i = 0; i < bp->nsegments; i++) {
		const struct boot_segment *s = &bp->seg[i];
		uint8_t *dst = guest_mem_ptr(gm, s->paddr, s->mem_size);

		ret = load_file(bp->kernel_fd, bp->kernel_path, gm, s->file_offset, s->file_size,
				s->paddr, err, errlen);
		if (ret < 0)
			return ret;
		/* .bss: fresh RAM is zero, but not after a reset. */
		memset(dst + s->file_size, 0, s->mem_size - s->file_size);
	}
	if (bp->initrd_size) {
		ret = load_file(bp->initrd_fd, bp->initrd_path, gm, 0, bp->initrd_size,
				bp->initrd_addr, err, errlen);
		if (ret < 0)
			return ret;
	}
	if (cmdlen >= CMDLINE_MAX) {
		snprintf(err, errlen, "--cmdline: %zu bytes, at most %d", cmdlen, CMDLINE_MAX - 1);
		return -EINVAL;
	}
	guest_mem_write(gm, CMDLINE_ADDR, bp->cmdline, cmdlen + 1);
	write_gdt_and_page_tables(gm);
	if (bp->entry == BOOT_ENTRY_PVH)
		write_pvh_info(bp, gm);
	write_zero_page(bp, gm);
	return 0;
}

static void set_seg(struct kvm_segment *s, uint16_t sel, uint8_t type, bool code64, bool big)
{
	*s = (struct kvm_segment){
		.base = 0, .limit = 0xffffffff, .selector = sel, .type = type,
		.present = 1, .dpl = 0, .db = big, .s = 1, .l = code64, .g = 1,
	};
}

void boot_entry_state(const struct boot_plan *bp, struct kvm_regs *regs, struct kvm_sregs *sregs)
{
	bool lm = bp->entry == BOOT_ENTRY_LINUX64;
	struct kvm_segment data;

	memset(regs, 0, sizeof(*regs));
	regs->rflags = 0x2;
	regs->rip = bp->entry_addr;
	if (lm)
		regs->rsi = ZERO_PAGE_ADDR;
	else
		regs->rbx = PVH_INFO_ADDR;

	if (lm)
		set_seg(&sregs->cs, BOOT_CS_CODE64, 0xb, true, false);
	else
		set_seg(&sregs->cs, BOOT_CS_CODE32, 0xb, false, true);
	set_seg(&data, BOOT_DS, 0x3, false, true);
	sregs->ds = sregs->es = sregs->fs = sregs->gs = sregs->ss = data;
	sregs->tr = (struct kvm_segment){ .base = 0, .limit = 0x67, .selector = BOOT_TSS,
					  .type = 0xb, .present = 1, .s = 0 };
	sregs->ldt = (struct kvm_segment){ .type = 0x2, .present = 1, .unusable = 1 };
	sregs->gdt.base = BOOT_GDT_ADDR;
	sregs->gdt.limit = 7 * 8 - 1;
	sregs->idt.base = BOOT_IDT_ADDR;
	sregs->idt.limit = 0;
	if (lm) {
		sregs->cr3 = PML4_ADDR;
		sregs->cr4 = 0x20;                       /* PAE */
		sregs->efer = 0x500;                     /* LME | LMA */
		sregs->cr0 = 0x80050033;                 /* PG AM WP NE ET MP PE */
	} else {
		sregs->cr3 = 0;
		sregs->cr4 = 0;
		sregs->efer = 0;
		sregs->cr0 = 0x11;                       /* ET PE */
	}
}
