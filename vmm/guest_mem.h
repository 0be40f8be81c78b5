/* Guest RAM: up to two regions (below the PCI hole, and from 4 GiB), each one
 * anonymous mapping registered with KVM as a memory slot. */
#ifndef DROVER_GUEST_MEM_H
#define DROVER_GUEST_MEM_H

#include <stddef.h>
#include <stdint.h>

#define GUEST_MEM_MAX_REGIONS 2

struct guest_mem_region {
	uint64_t gpa;
	uint64_t size;
	uint8_t *host;
};

struct guest_mem {
	struct guest_mem_region region[GUEST_MEM_MAX_REGIONS];
	unsigned nregions;
	uint64_t ram_size;      /* total bytes of RAM */
};

/* Maps ram_size bytes, split around the PCI hole. 0 or -errno. */
int guest_mem_init(struct guest_mem *gm, uint64_t ram_size);
void guest_mem_free(struct guest_mem *gm);

/* Host pointer for [gpa, gpa + len) when the whole range is RAM in one region,
 * NULL otherwise. */
void *guest_mem_ptr(const struct guest_mem *gm, uint64_t gpa, uint64_t len);

/* Copies to/from guest RAM; 0 or -EFAULT when the range is not RAM. */
int guest_mem_write(const struct guest_mem *gm, uint64_t gpa, const void *src, size_t len);
int guest_mem_read(const struct guest_mem *gm, uint64_t gpa, void *dst, size_t len);

/* End of RAM below the PCI hole (exclusive). */
uint64_t guest_mem_low_end(const struct guest_mem *gm);

#endif
