#include "mmio.h"

#include <errno.h>
#include <string.h>

int mmio_register(struct mmio_bus *bus, uint64_t base, uint64_t len, const char *name,
		  mmio_read_fn read, mmio_write_fn write, void *opaque)
{
	if (!len || base + len < base)
		return -EINVAL;
	for (unsigned i = 0; i < bus->n; i++) {
		const struct mmio_range *r = &bus->r[i];

		if (base < r->base + r->len && r->base < base + len)
			return -EBUSY;
	}
	if (bus->n == MMIO_MAX_RANGES)
		return -ENOSPC;
	bus->r[bus->n++] = (struct mmio_range){ base, len, name, read, write, opaque };
	return 0;
}

bool mmio_access(const struct mmio_bus *bus, uint64_t addr, bool is_write, uint8_t *data,
		 unsigned len)
{
	for (unsigned i = 0; i < bus->n; i++) {
		const struct mmio_range *r = &bus->r[i];

		if (addr < r->base || addr - r->base >= r->len)
			continue;
		if (is_write) {
			if (r->write)
				r->write(r->opaque, addr, data, len);
		} else if (r->read) {
			r->read(r->opaque, addr, data, len);
		} else {
			memset(data, 0xff, len);
		}
		return true;
	}
	if (!is_write)
		memset(data, 0xff, len);
	return false;
}
