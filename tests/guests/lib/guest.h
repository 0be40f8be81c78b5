/* The common runtime of drover's freestanding test guests.
 *
 * A guest's main() runs in ring 3 with interrupts off and every I/O port
 * open to it (TSS I/O bitmap; IOPL=3 too, which this host's PVM drops): this
 * host's KVM emulates ring-0 code at about 1 us per instruction but runs
 * ring 3 natively, so ring 0 only sets up paging, descriptors and the TSS
 * (head.S) and serves the few privileged requests below (sys_*).
 *
 * Boot information is copied out of hvm_start_info / boot_params into the
 * guest's own memory (struct bootinfo) before anything else runs, so that
 * low memory may be reused afterwards. */
#ifndef GUEST_H
#define GUEST_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define GUEST_EXIT_FAIL       1     /* a check failed */
#define GUEST_EXIT_EXCEPTION  0x70  /* unexpected CPU exception */

/* Linker-script symbols: the whole image, BSS and page tables included. */
extern char _image_start[], _image_end[], _bss_start[], _bss_end[];

/* ---- boot information ---- */
enum boot_kind { BOOT_KIND_PVH = 1, BOOT_KIND_LINUX64 = 2, BOOT_KIND_LINUX32 = 3 };

#define BOOTINFO_MAX_MAP      128
#define BOOTINFO_CMDLINE_MAX  4096  /* including the NUL; the bzImage says 4095 */

#define E820_RAM       1
#define E820_RESERVED  2
#define E820_ACPI      3
#define E820_NVS       4
#define E820_UNUSABLE  5

struct memmap_entry {
	uint64_t addr, size;
	uint32_t type;
};

struct bootinfo {
	enum boot_kind kind;
	uint64_t info_paddr;       /* hvm_start_info or boot_params */
	uint64_t cmdline_paddr;    /* 0: none given */
	uint64_t cmdline_len;      /* as found in memory, before truncation */
	char cmdline[BOOTINFO_CMDLINE_MAX];
	uint64_t initrd_paddr, initrd_size;  /* 0, 0: none */
	uint64_t rsdp_paddr;       /* 0: not given by the loader */
	unsigned nmap;
	struct memmap_entry map[BOOTINFO_MAX_MAP];
	int error;                 /* nonzero: boot information was unusable */
	char error_msg[96];
};

extern struct bootinfo bootinfo;

const char *boot_kind_name(enum boot_kind k);
const char *memmap_type_name(uint32_t type);
void bootinfo_save(struct bootinfo *bi);

/* ---- command line: "key=value" or bare "key", separated by blanks ---- */
/* The value of key (pointing into the command line, ending at a blank or
 * NUL), "" for a bare key, NULL when absent. */
const char *cmdline_get(const char *cmdline, const char *key);
int cmdline_has(const char *cmdline, const char *key);
/* Decimal or 0x-hex. 0, -2 (absent) or -22 (malformed). */
int cmdline_get_u64(const char *cmdline, const char *key, uint64_t *val);

/* ---- port I/O (allowed in ring 3 by the TSS I/O bitmap) and MMIO ---- */
static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}
static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline void outw(uint16_t port, uint16_t v)
{
	__asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}
static inline void outl(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}
static inline uint32_t mmio_read32(uint64_t addr)
{
	return *(volatile uint32_t *)addr;
}
static inline void mmio_write32(uint64_t addr, uint32_t v)
{
	*(volatile uint32_t *)addr = v;
}
/* A pointer to physical memory (identity mapped). The empty asm hides the
 * constant from GCC, which otherwise takes low addresses for NULL + offset. */
static inline void *phys(uint64_t addr)
{
	__asm__("" : "+r"(addr));
	return (void *)addr;
}
static inline void cpu_relax(void)
{
	__asm__ volatile("pause" ::: "memory");
}
static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}
static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
	__asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
			 : "a"(leaf), "c"(sub));
}

/* ---- ring-0 services (ud2 with a magic in %edx, see head.S) ---- */
#define SYS_HALT      0   /* cli; hlt forever */
#define SYS_CRASH     1   /* empty IDT, then int3: triple fault */
#define SYS_WRMSR     2   /* rdi = msr, rsi = value */
#define SYS_FLUSH_TLB 3   /* reload CR3 */

static inline uint64_t sys_call(uint64_t nr, uint64_t a0, uint64_t a1)
{
	uint64_t ret = nr, magic = 0x53595343;
	__asm__ volatile("ud2" : "+a"(ret), "+d"(magic) : "D"(a0), "S"(a1)
			 : "rcx", "memory");
	return ret;
}

/* ---- page tables (head.S): 0-4 GiB identity mapped with 2 MiB pages ---- */
extern uint64_t boot_pml4[512], boot_pdpt[512];
#define PTE_P    0x001ULL
#define PTE_RW   0x002ULL
#define PTE_US   0x004ULL
#define PTE_PWT  0x008ULL
#define PTE_PCD  0x010ULL
#define PTE_PS   0x080ULL

/* ---- serial console (COM1) and output ---- */
void serial_init(void);
void serial_putc(char c);
void serial_write(const char *s, size_t n);
/* The next received byte, or -1 when none is waiting (polled). */
int serial_getc(void);
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- exit ---- */
/* Writes code to the debug-exit port (QEMU isa-debug-exit, drover's
 * equivalent); if nothing stops the VM, halts for ever. */
void guest_exit(uint8_t code) __attribute__((noreturn));
void guest_halt(void) __attribute__((noreturn));

/* ---- time ---- */
/* Nanoseconds since an arbitrary origin: kvmclock when the hypervisor offers
 * it, else the TSC calibrated against the i8254 PIT. */
void time_init(void);
uint64_t time_ns(void);
void delay_us(uint64_t us);
const char *time_source(void);

/* ---- ACPI ---- */
struct acpi_header {
	char signature[4];
	uint32_t length;
	uint8_t revision, checksum;
	char oem_id[6], oem_table_id[8];
	uint32_t oem_revision, creator_id, creator_revision;
} __attribute__((packed));

struct acpi_gas {
	uint8_t space_id, bit_width, bit_offset, access_size;
	uint64_t address;
} __attribute__((packed));

#define ACPI_GAS_MEMORY 0
#define ACPI_GAS_IO     1

/* RSDP from the boot information, else from the EBDA or 0xe0000-0xfffff.
 * 0 when none is found. */
uint64_t acpi_find_rsdp(void);
/* The index-th table with this signature (XSDT, else RSDT), checksum
 * verified; NULL when absent. */
const struct acpi_header *acpi_find_table(const char *sig, unsigned index);
/* SLP_TYPa of \_S5 from the DSDT; -1 when not found. */
int acpi_s5_type(void);
/* Writes val to the register a GAS describes (I/O or memory space). */
int acpi_gas_write(const struct acpi_gas *g, uint64_t val);
uint8_t acpi_sum(const void *p, size_t len);

/* ---- string helpers ---- */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strncmp(const char *a, const char *b, size_t n);

/* CRC-32 (IEEE 802.3, reflected, as gzip's trailer holds it). */
uint32_t crc32_ieee(const void *data, uint64_t len);

/* The guest's own code, called in ring 3 once boot information is saved and
 * the console is ready; its return value is the exit code. */
int main(void);

#endif
