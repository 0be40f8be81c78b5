/* Guest physical layout of a drover VM (x86-64 PC without firmware).
 *
 *   0x0000_0500  boot GDT (null, null, code64 0x10, data 0x18, code32 0x20, TSS 0x28)
 *   0x0000_0600  boot IDT (empty)
 *   0x0000_6000  PVH hvm_start_info, its module list and memory map (one page)
 *   0x0000_7000  Linux boot_params ("zero page")
 *   0x0000_9000  PML4, 0xa000 PDPT, 0xb000..0xefff four PDs: identity map of 4 GiB
 *   0x0002_0000  kernel command line (up to CMDLINE_MAX bytes)
 *   0x0009_fc00  EBDA (reserved up to 0xa0000)
 *   0x000e_0000  ACPI tables, RSDP first (reserved, 64 KiB)
 *   0x000f_0000  MP floating pointer and configuration table (reserved)
 *   0x000f_fff0  the real-mode reset vector (f000:fff0): a stub that resets
 *                through the ACPI reset port, for guests that reboot through
 *                "the BIOS" (Linux's reboot=b, its last resort)
 *   0x0010_0000  kernel (bzImage protected-mode part, or ELF segments where they ask)
 *   ...          initrd at the top of low RAM, below what the kernel header allows
 *   0xc000_0000  PCI hole (32-bit MMIO, ECAM, IOAPIC 0xfec00000, LAPIC 0xfee00000)
 *   0x1_0000_0000 RAM above 3 GiB continues here
 */
#ifndef DROVER_LAYOUT_H
#define DROVER_LAYOUT_H

#define BOOT_GDT_ADDR        0x500ULL
#define BOOT_IDT_ADDR        0x600ULL
#define PVH_INFO_ADDR        0x6000ULL
#define ZERO_PAGE_ADDR       0x7000ULL
#define PML4_ADDR            0x9000ULL
#define PDPT_ADDR            0xa000ULL
#define PD_ADDR              0xb000ULL
#define CMDLINE_ADDR         0x20000ULL
#define CMDLINE_MAX          (64 * 1024)
#define EBDA_ADDR            0x9fc00ULL
#define LOW_RAM_END          0xa0000ULL     /* end of conventional memory */
#define ACPI_TABLES_ADDR     0xe0000ULL
#define ACPI_TABLES_SIZE     0x10000ULL
#define MPTABLE_ADDR         0xf0000ULL
#define MPTABLE_SIZE         0xff00ULL
#define RESET_VECTOR_ADDR    0xffff0ULL
#define BIOS_AREA_END        0x100000ULL
#define KERNEL_DEFAULT_ADDR  0x100000ULL

#define PCI_HOLE_START       0xc0000000ULL  /* RAM above this moves above 4 GiB */
#define HIGH_RAM_START       0x100000000ULL
#define IOAPIC_ADDR          0xfec00000ULL
#define LAPIC_ADDR           0xfee00000ULL

#define BOOT_CS_CODE64       0x10
#define BOOT_DS              0x18
#define BOOT_CS_CODE32       0x20
#define BOOT_TSS             0x28

/* Fixed I/O ports of the platform. */
#define PORT_I8042_DATA      0x60
#define PORT_I8042_CMD       0x64
#define PORT_CMOS_INDEX      0x70
#define PORT_CMOS_DATA       0x71
#define PORT_COM1            0x3f8
#define PORT_DEBUG_EXIT      0x501          /* QEMU's isa-debug-exit default */
#define PORT_ACPI_SLEEP_CTL  0x600          /* FADT SLEEP_CONTROL_REG (hardware-reduced) */
#define PORT_ACPI_SLEEP_STS  0x601          /* FADT SLEEP_STATUS_REG */
#define PORT_ACPI_RESET      0x602          /* FADT RESET_REG, value ACPI_RESET_VALUE */
#define ACPI_RESET_VALUE     0x01
#define PORT_POST            0x80           /* POST codes and Linux's I/O delay */

#define IRQ_COM1             4
#define IRQ_RTC              8
#define GSI_POWER_BUTTON     10             /* the DSDT's GED0 (ACPI0013): power button */

#endif
