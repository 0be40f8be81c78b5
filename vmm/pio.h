/* The I/O port bus: devices claim port ranges; a vCPU's KVM_EXIT_IO is
 * dispatched to the device that owns the port. Registration happens before
 * any vCPU runs, so lookups need no lock; each device locks its own state. */
#ifndef DROVER_PIO_H
#define DROVER_PIO_H

#include <stdbool.h>
#include <stdint.h>

#define PIO_MAX_RANGES 32

/* size is 1, 2 or 4; data is little-endian as KVM hands it over. */
typedef void (*pio_read_fn)(void *opaque, uint16_t port, uint8_t *data, unsigned size);
typedef void (*pio_write_fn)(void *opaque, uint16_t port, const uint8_t *data, unsigned size);

struct pio_range {
	uint16_t base, len;
	const char *name;
	pio_read_fn read;    /* NULL: reads return all ones */
	pio_write_fn write;  /* NULL: writes are ignored */
	void *opaque;
};

struct pio_bus {
	unsigned n;
	struct pio_range r[PIO_MAX_RANGES];
};

/* 0, -EBUSY if the range overlaps one already claimed, -ENOSPC. */
int pio_register(struct pio_bus *bus, uint16_t base, uint16_t len, const char *name,
		 pio_read_fn read, pio_write_fn write, void *opaque);

/* Dispatches one access; returns false when no device owns the port (the
 * read then returns all ones, as an empty ISA bus does). */
bool pio_access(const struct pio_bus *bus, uint16_t port, bool is_write, uint8_t *data,
		unsigned size);

#endif
