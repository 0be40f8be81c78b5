#include "guest_mem.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "layout.h"

#define HUGE_SIZE (2ull << 20)

/* Guest RAM starts on a 2 MiB boundary and asks for transparent huge pages
 * (as QEMU's does): fewer TLB misses for the guest, and a disk transfer with
 * O_DIRECT pins a few huge pages instead of hundreds of small ones (twice
 * the sequential throughput on these hosts). */
static int map_region(struct guest_mem_region *r, uint64_t gpa, uint64_t size)
{
	uint64_t pad = size >= HUGE_SIZE ? HUGE_SIZE : 0;
	uint8_t *p = mmap(NULL, size + pad, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	uint64_t head;

	if (p == MAP_FAILED)
		return -errno;
	head = pad ? (HUGE_SIZE - (uintptr_t)p % HUGE_SIZE) % HUGE_SIZE : 0;
	if (head)
		munmap(p, head);
	if (pad - head)
		munmap(p + head + size, pad - head);
	p += head;
	if (pad)
		madvise(p, size, MADV_HUGEPAGE);
	/* Guest RAM never goes into a core dump of the VMM, and a fork (there
	 * is none today) must not share it. */
	madvise(p, size, MADV_DONTDUMP);
	madvise(p, size, MADV_DONTFORK);
	r->gpa = gpa;
	r->size = size;
	r->host = p;
	return 0;
}

int guest_mem_init(struct guest_mem *gm, uint64_t ram_size)
{
	uint64_t low = ram_size < PCI_HOLE_START ? ram_size : PCI_HOLE_START;
	int ret;

	memset(gm, 0, sizeof(*gm));
	ret = map_region(&gm->region[0], 0, low);
	if (ret < 0)
		return ret;
	gm->nregions = 1;
	if (ram_size > low) {
		ret = map_region(&gm->region[1], HIGH_RAM_START, ram_size - low);
		if (ret < 0) {
			guest_mem_free(gm);
			return ret;
		}
		gm->nregions = 2;
	}
	gm->ram_size = ram_size;
	return 0;
}

void guest_mem_free(struct guest_mem *gm)
{
	for (unsigned i = 0; i < gm->nregions; i++)
		munmap(gm->region[i].host, gm->region[i].size);
	gm->nregions = 0;
}

void *guest_mem_ptr(const struct guest_mem *gm, uint64_t gpa, uint64_t len)
{
	for (unsigned i = 0; i < gm->nregions; i++) {
		const struct guest_mem_region *r = &gm->region[i];

		if (gpa >= r->gpa && gpa - r->gpa <= r->size && len <= r->size - (gpa - r->gpa))
			return r->host + (gpa - r->gpa);
	}
	return NULL;
}

int guest_mem_write(const struct guest_mem *gm, uint64_t gpa, const void *src, size_t len)
{
	void *p = guest_mem_ptr(gm, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(p, src, len);
	return 0;
}

int guest_mem_read(const struct guest_mem *gm, uint64_t gpa, void *dst, size_t len)
{
	const void *p = guest_mem_ptr(gm, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(dst, p, len);
	return 0;
}

uint64_t guest_mem_low_end(const struct guest_mem *gm)
{
	return gm->nregions ? gm->region[0].size : 0;
}
