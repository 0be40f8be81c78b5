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
static inline uint16_t inw(uint16_t port)
{
	uint16_t v;
	__asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline uint32_t inl(uint16_t port)
{
	uint32_t v;
	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline uint8_t mmio_read8(uint64_t addr)
{
	return *(volatile uint8_t *)addr;
}
static inline uint16_t mmio_read16(uint64_t addr)
{
	return *(volatile uint16_t *)addr;
}
static inline void mmio_write8(uint64_t addr, uint8_t v)
{
	*(volatile uint8_t *)addr = v;
}
static inline void mmio_write16(uint64_t addr, uint16_t v)
{
	*(volatile uint16_t *)addr = v;
}
/* A full fence: stores to shared rings become visible before the loads
 * that follow (avail->idx before reading the device's used->flags). */
static inline void mb(void)
{
	__asm__ volatile("mfence" ::: "memory");
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

/* Error numbers as Linux has them (the lib returns 0 or -errno). */
#define ENOENT     2
#define EIO        5
#define ENOMEM     12
#define ENODEV     19
#define EINVAL     22
#define ENOSPC     28
#define ERANGE     34
#define ENOTSUP    95
#define ETIMEDOUT  110

/* ---- PCI (lib/pci.c) ----
 * Configuration space through ECAM (the ACPI MCFG table, else the host
 * bridge's _CBA in the DSDT) or, without either, configuration mechanism
 * #1 (ports 0xCF8/0xCFC). pci_scan() walks bus 0 and whatever sits behind
 * bridges, numbers the buses, sizes every BAR and places the memory BARs
 * nobody placed (no firmware runs before a PVH guest) inside the 32-bit
 * window given to pci_init(). ECAM and the window must lie in 3-4 GiB,
 * which head.S maps uncached for ring 3. */
#define PCI_MAX_DEVS     32
#define PCI_NUM_BARS     6

#define PCI_VENDOR_ID    0x00
#define PCI_DEVICE_ID    0x02
#define PCI_COMMAND      0x04
#define PCI_STATUS       0x06
#define PCI_CLASS_REV    0x08
#define PCI_HEADER_TYPE  0x0e
#define PCI_BAR0         0x10
#define PCI_CAP_PTR      0x34

#define PCI_COMMAND_IO      0x0001
#define PCI_COMMAND_MEMORY  0x0002
#define PCI_COMMAND_MASTER  0x0004
#define PCI_COMMAND_INTX_DISABLE 0x0400
#define PCI_STATUS_CAP_LIST 0x0010

#define PCI_CAP_ID_MSIX  0x11
#define PCI_CAP_ID_VNDR  0x09

enum pci_access { PCI_ACCESS_NONE, PCI_ACCESS_ECAM, PCI_ACCESS_CF8 };

struct pci_bar {
	uint64_t addr, size;        /* size 0: no BAR here */
	uint8_t is_io, is_64, prefetch;
	uint8_t placed;             /* 1: pci_scan() chose the address */
};

struct pci_dev {
	uint8_t bus, dev, fn;
	uint8_t header_type;        /* without the multi-function bit */
	uint16_t vendor, device;
	uint32_t class_rev;         /* class, subclass, prog-if, revision */
	struct pci_bar bar[PCI_NUM_BARS];
};

struct pci {
	enum pci_access access;
	const char *ecam_source;    /* which table or ports described it */
	uint64_t ecam_base;         /* the address of bus 0 */
	uint8_t bus_first, bus_last;
	uint64_t win_base, win_end; /* the 32-bit memory window, end exclusive */
	uint64_t win_next;          /* where the next BAR goes */
	uint8_t next_bus;
	unsigned ndevs, nbridges;
	struct pci_dev devs[PCI_MAX_DEVS];
	char error[128];            /* why the last call failed */
};

/* access: PCI_ACCESS_ECAM or _CF8 to insist on one, PCI_ACCESS_NONE for
 * ECAM when ACPI describes it, else 0xCF8/0xCFC. -ENODEV when neither
 * is there (0xCF8 reads back all ones). */
int pci_init(struct pci *p, enum pci_access access, uint64_t win_base, uint64_t win_end);
int pci_scan(struct pci *p);
const char *pci_access_name(enum pci_access a);
uint8_t pci_read8(const struct pci *p, const struct pci_dev *d, unsigned off);
uint16_t pci_read16(const struct pci *p, const struct pci_dev *d, unsigned off);
uint32_t pci_read32(const struct pci *p, const struct pci_dev *d, unsigned off);
void pci_write8(const struct pci *p, const struct pci_dev *d, unsigned off, uint8_t v);
void pci_write16(const struct pci *p, const struct pci_dev *d, unsigned off, uint16_t v);
void pci_write32(const struct pci *p, const struct pci_dev *d, unsigned off, uint32_t v);
/* The offset of the first capability with this id after `after` (0: from
 * the start of the list); 0 when there is none. */
unsigned pci_find_cap(const struct pci *p, const struct pci_dev *d, uint8_t id, unsigned after);
/* Memory decoding and bus mastering on, INTx off (the guests poll). */
void pci_enable(const struct pci *p, const struct pci_dev *d);
/* The index-th device with this vendor and device id; NULL if none. */
struct pci_dev *pci_find(struct pci *p, uint16_t vendor, uint16_t device, unsigned index);

/* ---- guest memory for devices (lib/virtio.c) ----
 * Bump allocation from the largest usable RAM range above the image and
 * below 4 GiB (identity mapped, so an address is also what a device DMAs
 * to). Nothing is ever freed. */
struct dma_pool {
	uint64_t next, end;
};
int dma_pool_init(struct dma_pool *pool);
/* Zeroed memory, align a power of two; NULL when the pool is exhausted. */
void *dma_alloc(struct dma_pool *pool, uint64_t size, uint64_t align);

/* ---- virtio over PCI, modern interface (lib/virtio.c) ----
 * virtio 1.2 §4.1 and §2.7 (split virtqueues). Completions are polled from
 * the used rings: the driver asks for no interrupts and leaves MSI-X off.
 * Device status, feature and queue registers follow the spec's
 * initialisation order (§3.1.1): reset, ACKNOWLEDGE, DRIVER, features,
 * FEATURES_OK (read back), queues, DRIVER_OK. */
#define VIRTIO_VENDOR_ID          0x1af4
#define VIRTIO_PCI_DEVICE_ID(t)   (0x1040 + (t))

#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER      2
#define VIRTIO_STATUS_DRIVER_OK   4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED      128

#define VIRTIO_F_INDIRECT_DESC    28
#define VIRTIO_F_EVENT_IDX        29
#define VIRTIO_F_VERSION_1        32
#define VIRTIO_F_ACCESS_PLATFORM  33
#define VIRTIO_F_RING_PACKED      34
#define VIRTIO_F_NOTIFICATION_DATA 38

#define VIRTQ_MAX_SIZE            256   /* the driver asks for no more */
#define VIRTQ_DESC_F_NEXT         1
#define VIRTQ_DESC_F_WRITE        2
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY    1

struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags, next;
};

struct virtq_used_elem {
	uint32_t id, len;
};

/* One buffer of a request: the device reads it, or writes it if
 * device_writes. */
struct virtq_buf {
	uint64_t addr;
	uint32_t len;
	int device_writes;
};

struct virtq {
	uint16_t index, size;
	volatile struct virtq_desc *desc;
	volatile uint16_t *avail;          /* flags, idx, ring[size] */
	volatile uint16_t *used;           /* flags, idx, then elements */
	volatile struct virtq_used_elem *used_ring;
	uint64_t notify;                   /* the queue's doorbell */
	uint16_t free_head, num_free;
	uint16_t avail_idx, last_used;
	uint16_t pending;                  /* added since the last kick */
	unsigned in_flight;                /* requests added, not yet used */
	void *token[VIRTQ_MAX_SIZE];       /* per head descriptor */
	uint16_t chain_len[VIRTQ_MAX_SIZE];
	uint64_t kicks, kicks_skipped;     /* doorbells written / not needed */
};

struct virtio_dev {
	const struct pci *pci;
	const struct pci_dev *pdev;
	uint64_t common, isr, device_cfg, notify_base;
	uint32_t notify_mult, notify_len, device_cfg_len;
	uint16_t max_queues;
	uint64_t offered, features;
	char error[128];
};

/* Finds the virtio structures, enables the function, resets the device
 * and sets ACKNOWLEDGE and DRIVER. Needs time_init() (reset timeout). */
int virtio_pci_open(struct virtio_dev *vd, const struct pci *p, const struct pci_dev *d);
/* Accepts offered & wanted (VIRTIO_F_VERSION_1 always), sets FEATURES_OK
 * and reads it back; -ENOTSUP (and FAILED set) when the device refuses or
 * lacks a bit of `required`. */
int virtio_negotiate(struct virtio_dev *vd, uint64_t wanted, uint64_t required);
int virtio_has(const struct virtio_dev *vd, unsigned bit);
/* Sets up virtqueue `index` with min(device's size, max_size) entries. */
int virtq_init(struct virtio_dev *vd, struct virtq *q, struct dma_pool *pool,
	       uint16_t index, uint16_t max_size);
void virtio_driver_ok(struct virtio_dev *vd);
/* Sets FAILED: the driver gives up on the device (§3.1.1 step 8). */
void virtio_set_failed(struct virtio_dev *vd);
uint8_t virtio_status(const struct virtio_dev *vd);
void virtio_reset(struct virtio_dev *vd);
/* Device-specific configuration, read with the access width the spec
 * wants; the 64-bit read retries until config_generation holds still. */
uint8_t virtio_cfg_read8(const struct virtio_dev *vd, unsigned off);
uint16_t virtio_cfg_read16(const struct virtio_dev *vd, unsigned off);
uint32_t virtio_cfg_read32(const struct virtio_dev *vd, unsigned off);
uint64_t virtio_cfg_read64(const struct virtio_dev *vd, unsigned off);

/* Adds one request (device-readable buffers before device-writable ones,
 * as §2.7.4 wants) without notifying; -ENOSPC when the ring lacks free
 * descriptors, -EINVAL for a malformed request. */
int virtq_add(struct virtq *q, const struct virtq_buf *bufs, unsigned n, void *token);
/* Makes what virtq_add() queued visible and rings the doorbell unless the
 * device said it does not need it. */
void virtq_kick(struct virtq *q);
/* 1 and the token and used length of one completed request (in the order
 * the device used them), 0 when none is waiting, -EIO when the device
 * handed back a descriptor that heads no request of the driver's. */
int virtq_poll(struct virtq *q, void **token, uint32_t *len);
/* Requests added and not yet completed. */
unsigned virtq_in_flight(const struct virtq *q);

/* The guest's own code, called in ring 3 once boot information is saved and
 * the console is ready; its return value is the exit code. */
int main(void);

#endif
