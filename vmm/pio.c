#include "pio.h"

#include <errno.h>
#include <string.h>

int pio_register(struct pio_bus *bus, uint16_t base, uint16_t len, const char *name,
		 pio_read_fn read, pio_write_fn write, void *opaque)
{
	uint32_t end = (uint32_t)base + len;

	if (!len || end > 0x10000)
		return -EINVAL;
	for (unsigned i = 0; i < bus->n; i++) {
		const struct pio_range *r = &bus->r[i];

		if (base < (uint32_t)r->base + r->len && r->base < end)
			return -EBUSY;
	}
	if (bus->n == PIO_MAX_RANGES)
		return -ENOSPC;
	bus->r[bus->n++] = (struct pio_range){ base, len, name, read, write, opaque };
	return 0;
}

bool pio_access(const struct pio_bus *bus, uint16_t port, bool is_write, uint8_t *data,
		unsigned size)
{
	for (unsigned i = 0; i < bus->n; i++) {
		const struct pio_range *r = &bus->r[i];

		if (port < r->base || port - r->base >= r->len)
			continue;
		if (is_write) {
			if (r->write)
				r->write(r->opaque, port, data, size);
		} else if (r->read) {
			r->read(r->opaque, port, data, size);
		} else {
			memset(data, 0xff, size);
		}
		return true;
	}
	if (!is_write)
		memset(data, 0xff, size);
	return false;
}
