/* What blkcheck writes on a disk, shared by the guest (blkcheck.c) and the
 * host tool that checks an image file (tools/blkpattern.c), so that both
 * sides compute the same bytes from the same inputs: the seed and the
 * disk's capacity. Plain C without a C library.
 *
 * The plan:
 *   - the regions: the whole disk up to BLKPLAN_FULL_MAX sectors; above
 *     that the first 4 MiB, the last 1 MiB (and 5 sectors), 640 KiB
 *     around each of 8 points spread over the disk (straddling 64 KiB
 *     cluster boundaries), and 1.25 MiB around each of the first 4
 *     multiples of 512 MiB (where a qcow2 image with 64 KiB clusters
 *     moves to its next L2 table);
 *   - every byte of the regions holds the pattern of the seed, but those
 *     of the zeroed range (write-zeroes), which read as zero;
 *   - the discarded range lies inside the first region too: blkcheck
 *     discards it, then writes the pattern there again.
 * Sector numbers are in 512-byte units whatever the device's block size. */
#ifndef BLKPATTERN_H
#define BLKPATTERN_H

#include <stdint.h>

#ifndef BLK_SECTOR
#define BLK_SECTOR            ((uint64_t)512)   /* the protocol's unit */
#endif
#define BLKPLAN_MIN_SECTORS   ((uint64_t)8192)   /* 4 MiB: the first region */
#define BLKPLAN_FULL_MAX      ((uint64_t)128 << 11) /* 128 MiB written whole */
#define BLKPLAN_MAX_RANGES    16

/* Unaligned on purpose: 2051 sectors from sector 2055. */
#define BLKPLAN_ZERO_START    2055ULL
#define BLKPLAN_ZERO_COUNT    2051ULL
/* Cluster aligned (64 KiB), so that a qcow2 image can drop clusters. */
#define BLKPLAN_DISCARD_START 4224ULL
#define BLKPLAN_DISCARD_COUNT 2048ULL

struct blk_range {
	uint64_t start, count;     /* sectors */
};

/* The 64-bit word at byte offset off (a multiple of 8) of the disk:
 * splitmix64's finaliser over the offset and the seed. */
static inline uint64_t blkpat_word(uint64_t seed, uint64_t off)
{
	uint64_t x = off + (seed + 1) * 0x9e3779b97f4a7c15ULL;

	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

static inline uint8_t blkpat_byte(uint64_t seed, uint64_t off)
{
	return (uint8_t)(blkpat_word(seed, off & ~7ULL) >> (8 * (off & 7)));
}

/* Fills buf with the bytes of the disk at [off, off + len). */
static inline void blkpat_fill(uint8_t *buf, uint64_t seed, uint64_t off, uint64_t len)
{
	for (; len && (off & 7); len--)
		*buf++ = blkpat_byte(seed, off++);
	for (; len >= 8; len -= 8, off += 8, buf += 8) {
		uint64_t w = blkpat_word(seed, off);
		__builtin_memcpy(buf, &w, 8);
	}
	for (; len; len--)
		*buf++ = blkpat_byte(seed, off++);
}

/* The first byte of buf (disk bytes [off, off + len)) that differs from
 * the pattern, or zero when zero is set; len when all match. */
static inline uint64_t blkpat_mismatch(const uint8_t *buf, uint64_t seed, uint64_t off,
				       uint64_t len, int zero)
{
	uint64_t i = 0;

	for (; i < len && ((off + i) & 7); i++)
		if (buf[i] != (zero ? 0 : blkpat_byte(seed, off + i)))
			return i;
	for (; i + 8 <= len; i += 8) {
		uint64_t w;
		__builtin_memcpy(&w, buf + i, 8);
		if (w != (zero ? 0 : blkpat_word(seed, off + i)))
			break;
	}
	for (; i < len; i++)
		if (buf[i] != (zero ? 0 : blkpat_byte(seed, off + i)))
			return i;
	return len;
}

static inline struct blk_range blkplan_zeroed(void)
{
	return (struct blk_range){ BLKPLAN_ZERO_START, BLKPLAN_ZERO_COUNT };
}

static inline struct blk_range blkplan_discarded(void)
{
	return (struct blk_range){ BLKPLAN_DISCARD_START, BLKPLAN_DISCARD_COUNT };
}

static inline unsigned blkplan_add(struct blk_range *r, unsigned n, uint64_t capacity,
				   uint64_t start, uint64_t count)
{
	if (start >= capacity || n == BLKPLAN_MAX_RANGES)
		return n;
	if (count > capacity - start)
		count = capacity - start;
	r[n].start = start;
	r[n].count = count;
	return n + 1;
}

/* The regions, sorted and without overlaps; 0 when the disk is smaller
 * than BLKPLAN_MIN_SECTORS. */
static inline unsigned blkplan_regions(uint64_t capacity, struct blk_range *r)
{
	unsigned n = 0;

	if (capacity < BLKPLAN_MIN_SECTORS)
		return 0;
	if (capacity <= BLKPLAN_FULL_MAX)
		return blkplan_add(r, 0, capacity, 0, capacity);
	n = blkplan_add(r, n, capacity, 0, BLKPLAN_MIN_SECTORS);
	for (uint64_t k = 1; k <= 8; k++) {
		uint64_t point = capacity * k / 9 & ~127ULL;
		n = blkplan_add(r, n, capacity, point - 9, 1283);
	}
	for (uint64_t b = 1ULL << 20; b < capacity && b <= 4ULL << 20; b += 1ULL << 20)
		n = blkplan_add(r, n, capacity, b - 515, 2563);
	n = blkplan_add(r, n, capacity, capacity - 2053, 2053);

	/* Sort by start (insertion: a handful), then merge overlaps. */
	for (unsigned i = 1; i < n; i++)
		for (unsigned j = i; j > 0 && r[j - 1].start > r[j].start; j--) {
			struct blk_range t = r[j];
			r[j] = r[j - 1];
			r[j - 1] = t;
		}
	unsigned m = 0;
	for (unsigned i = 0; i < n; i++) {
		if (m && r[i].start <= r[m - 1].start + r[m - 1].count) {
			uint64_t end = r[i].start + r[i].count;
			if (end > r[m - 1].start + r[m - 1].count)
				r[m - 1].count = end - r[m - 1].start;
			continue;
		}
		r[m++] = r[i];
	}
	return m;
}

#endif
