/* The MMIO bus: devices claim guest-physical ranges outside RAM; a vCPU's
 * KVM_EXIT_MMIO is dispatched to the device that owns the address. As with
 * the port bus (pio.h), ranges are registered before any vCPU runs, so
 * lookups need no lock. Ranges whose contents move at run time (PCI BARs)
 * are not registered one by one: the PCI bus claims its whole windows and
 * decodes them itself. */
#ifndef DROVER_MMIO_H
#define DROVER_MMIO_H

#include <stdbool.h>
#include <stdint.h>

#define MMIO_MAX_RANGES 16

/* len is 1, 2, 4 or 8; data is little-endian, as KVM hands it over. addr is
 * the guest-physical address of the access. */
typedef void (*mmio_read_fn)(void *opaque, uint64_t addr, uint8_t *data, unsigned len);
typedef void (*mmio_write_fn)(void *opaque, uint64_t addr, const uint8_t *data, unsigned len);

struct mmio_range {
	uint64_t base, len;
	const char *name;
	mmio_read_fn read;    /* NULL: reads return all ones */
	mmio_write_fn write;  /* NULL: writes are ignored */
	void *opaque;
};

struct mmio_bus {
	unsigned n;
	struct mmio_range r[MMIO_MAX_RANGES];
};

/* 0, -EINVAL (empty or wrapping range), -EBUSY if it overlaps a range
 * already claimed, -ENOSPC. */
int mmio_register(struct mmio_bus *bus, uint64_t base, uint64_t len, const char *name,
		  mmio_read_fn read, mmio_write_fn write, void *opaque);

/* Dispatches one access of len bytes (1..8); false when no device owns the
 * address (a read then returns all ones, as an unclaimed bus does). */
bool mmio_access(const struct mmio_bus *bus, uint64_t addr, bool is_write, uint8_t *data,
		 unsigned len);

#endif
