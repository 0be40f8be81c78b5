/* Copies what the loader handed over (PVH hvm_start_info or Linux
 * boot_params) into struct bootinfo, the one place the guests read it from.
 * Runs first in ring 3, before the guest writes anywhere outside its image,
 * so low memory is still as the loader left it. */
#include "guest.h"

extern uint32_t boot_kind;
extern uint64_t boot_ptr;

#define PVH_MAGIC 0x336ec578

struct hvm_start_info {
	uint32_t magic, version, flags, nr_modules;
	uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr;
	uint64_t memmap_paddr;      /* version >= 1 */
	uint32_t memmap_entries, reserved;
} __attribute__((packed));

struct hvm_modlist_entry {
	uint64_t paddr, size, cmdline_paddr, reserved;
} __attribute__((packed));

struct hvm_memmap_entry {
	uint64_t addr, size;
	uint32_t type, reserved;
} __attribute__((packed));

struct boot_e820_entry {
	uint64_t addr, size;
	uint32_t type;
} __attribute__((packed));

/* boot_params offsets (Documentation/x86/zero-page.rst, boot.rst) */
#define BP_ACPI_RSDP_ADDR     0x070
#define BP_EXT_RAMDISK_IMAGE  0x0c0
#define BP_EXT_RAMDISK_SIZE   0x0c4
#define BP_EXT_CMD_LINE_PTR   0x0c8
#define BP_E820_ENTRIES       0x1e8
#define BP_HDR_MAGIC          0x202
#define BP_RAMDISK_IMAGE      0x218
#define BP_RAMDISK_SIZE       0x21c
#define BP_CMD_LINE_PTR       0x228
#define BP_E820_TABLE         0x2d0
#define BP_E820_MAX           128

/* Only 0-4 GiB is mapped while boot information is read. */
#define MAPPED_LIMIT 0x100000000ULL

static int readable(uint64_t addr, uint64_t len)
{
	return addr != 0 && addr < MAPPED_LIMIT && len <= MAPPED_LIMIT - addr;
}

#define fail(bi, ...) \
	((bi)->error = 1, snprintf((bi)->error_msg, sizeof((bi)->error_msg), __VA_ARGS__))

static void save_cmdline(struct bootinfo *bi, uint64_t paddr)
{
	bi->cmdline_paddr = paddr;
	if (!paddr)
		return;
	if (!readable(paddr, 1)) {
		fail(bi, "command line at 0x%lx is not below 4 GiB", paddr);
		return;
	}
	const char *s = (const char *)paddr;
	uint64_t n = 0;
	while (paddr + n < MAPPED_LIMIT && s[n] && n < 0x100000)
		n++;
	bi->cmdline_len = n;
	if (n >= BOOTINFO_CMDLINE_MAX)
		n = BOOTINFO_CMDLINE_MAX - 1;
	memcpy(bi->cmdline, s, n);
	bi->cmdline[n] = '\0';
}

static void add_map(struct bootinfo *bi, uint64_t addr, uint64_t size, uint32_t type)
{
	if (bi->nmap == BOOTINFO_MAX_MAP) {
		fail(bi, "more than %d memory map entries", BOOTINFO_MAX_MAP);
		return;
	}
	bi->map[bi->nmap++] = (struct memmap_entry){ addr, size, type };
}

static void save_pvh(struct bootinfo *bi, uint64_t paddr)
{
	if (!readable(paddr, sizeof(struct hvm_start_info))) {
		fail(bi, "hvm_start_info at 0x%lx not readable", paddr);
		return;
	}
	const struct hvm_start_info *si = (const void *)paddr;
	if (si->magic != PVH_MAGIC) {
		fail(bi, "hvm_start_info magic 0x%x", si->magic);
		return;
	}
	save_cmdline(bi, si->cmdline_paddr);
	bi->rsdp_paddr = si->rsdp_paddr;
	if (si->nr_modules) {
		const struct hvm_modlist_entry *m = (const void *)si->modlist_paddr;
		if (!readable(si->modlist_paddr, sizeof(*m))) {
			fail(bi, "module list at 0x%lx not readable", si->modlist_paddr);
			return;
		}
		bi->initrd_paddr = m->paddr;
		bi->initrd_size = m->size;
	}
	if (si->version < 1) {
		fail(bi, "hvm_start_info version %u has no memory map", si->version);
		return;
	}
	const struct hvm_memmap_entry *e = (const void *)si->memmap_paddr;
	if (!readable(si->memmap_paddr, (uint64_t)si->memmap_entries * sizeof(*e))) {
		fail(bi, "memory map at 0x%lx not readable", si->memmap_paddr);
		return;
	}
	for (uint32_t i = 0; i < si->memmap_entries && !bi->error; i++)
		add_map(bi, e[i].addr, e[i].size, e[i].type);
}

static uint32_t bp32(const uint8_t *bp, unsigned off)
{
	return *(const uint32_t *)(bp + off);
}

static void save_linux(struct bootinfo *bi, uint64_t paddr)
{
	if (!readable(paddr, 4096)) {
		fail(bi, "boot_params at 0x%lx not readable", paddr);
		return;
	}
	const uint8_t *bp = (const void *)paddr;
	if (memcmp(bp + BP_HDR_MAGIC, "HdrS", 4) != 0) {
		fail(bi, "boot_params at 0x%lx lacks the HdrS magic", paddr);
		return;
	}
	save_cmdline(bi, bp32(bp, BP_CMD_LINE_PTR) |
			 (uint64_t)bp32(bp, BP_EXT_CMD_LINE_PTR) << 32);
	bi->initrd_paddr = bp32(bp, BP_RAMDISK_IMAGE) |
			   (uint64_t)bp32(bp, BP_EXT_RAMDISK_IMAGE) << 32;
	bi->initrd_size = bp32(bp, BP_RAMDISK_SIZE) |
			  (uint64_t)bp32(bp, BP_EXT_RAMDISK_SIZE) << 32;
	bi->rsdp_paddr = *(const uint64_t *)(bp + BP_ACPI_RSDP_ADDR);
	unsigned n = bp[BP_E820_ENTRIES];
	if (n > BP_E820_MAX) {
		fail(bi, "boot_params claims %u e820 entries", n);
		return;
	}
	const struct boot_e820_entry *e = (const void *)(bp + BP_E820_TABLE);
	for (unsigned i = 0; i < n && !bi->error; i++)
		add_map(bi, e[i].addr, e[i].size, e[i].type);
}

void bootinfo_save(struct bootinfo *bi)
{
	bi->kind = (enum boot_kind)boot_kind;
	bi->info_paddr = boot_ptr;
	switch (bi->kind) {
	case BOOT_KIND_PVH:
		save_pvh(bi, boot_ptr);
		break;
	case BOOT_KIND_LINUX64:
	case BOOT_KIND_LINUX32:
		save_linux(bi, boot_ptr);
		break;
	default:
		fail(bi, "unknown entry kind %u", boot_kind);
		break;
	}
}

const char *boot_kind_name(enum boot_kind k)
{
	switch (k) {
	case BOOT_KIND_PVH:
		return "pvh";
	case BOOT_KIND_LINUX64:
		return "linux64";
	case BOOT_KIND_LINUX32:
		return "linux32";
	}
	return "unknown";
}

const char *memmap_type_name(uint32_t type)
{
	switch (type) {
	case E820_RAM:
		return "usable";
	case E820_RESERVED:
		return "reserved";
	case E820_ACPI:
		return "acpi";
	case E820_NVS:
		return "nvs";
	case E820_UNUSABLE:
		return "unusable";
	}
	return "other";
}

/* ---- command line ---- */

static int is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

const char *cmdline_get(const char *cmdline, const char *key)
{
	size_t klen = strlen(key);
	const char *p = cmdline;

	while (*p) {
		while (is_blank(*p))
			p++;
		if (!*p)
			break;
		if (strncmp(p, key, klen) == 0) {
			if (p[klen] == '=')
				return p + klen + 1;
			if (p[klen] == '\0' || is_blank(p[klen]))
				return p + klen;
		}
		while (*p && !is_blank(*p))
			p++;
	}
	return NULL;
}

int cmdline_has(const char *cmdline, const char *key)
{
	return cmdline_get(cmdline, key) != NULL;
}

int cmdline_get_u64(const char *cmdline, const char *key, uint64_t *val)
{
	const char *p = cmdline_get(cmdline, key);
	unsigned base = 10;
	uint64_t v = 0;
	int digits = 0;

	if (!p)
		return -2;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		base = 16;
		p += 2;
	}
	for (; *p && !is_blank(*p); p++, digits++) {
		unsigned d;
		if (*p >= '0' && *p <= '9')
			d = (unsigned)(*p - '0');
		else if (base == 16 && *p >= 'a' && *p <= 'f')
			d = (unsigned)(*p - 'a' + 10);
		else if (base == 16 && *p >= 'A' && *p <= 'F')
			d = (unsigned)(*p - 'A' + 10);
		else
			return -22;
		v = v * base + d;
	}
	if (!digits)
		return -22;
	*val = v;
	return 0;
}
