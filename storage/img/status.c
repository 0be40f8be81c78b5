/* Where an image's data is, layer by layer through its backing chain, as
 * qemu-img map reports it (map, compare -s). Walks the chain itself rather
 * than asking for status "above": an entry needs the depth of the layer that
 * decides it and where that layer keeps the data (offset, file). */
#include <errno.h>
#include <string.h>

#include "img.h"

/* Whether data a format node maps into its protocol file should be looked
 * up there too, for holes that read as zeroes. qemu-img does so (and map
 * shows "zero": true, "data": true) when the image looks preallocated:
 * clearly more clusters below the end of the file than the file has
 * blocks. Asking the same question gives the same map. */
static bool looks_preallocated(struct blk *node, struct blk *file)
{
	uint64_t cs = blk_cluster_size(node);
	int64_t real = blk_allocated_size(file);
	uint64_t clusters, real_clusters, threshold;

	if (!cs || real < 0)
		return false;
	clusters = (blk_size(file) + cs - 1) / cs;
	real_clusters = (uint64_t)real / cs;
	threshold = real_clusters * 10 / 9;
	if (threshold < real_clusters + 2)
		threshold = real_clusters + 2;
	return clusters >= threshold;
}

static void refine_by_file(struct blk *file, uint64_t map, uint64_t *pnum, unsigned *st)
{
	uint64_t fnum = 0;
	unsigned fst = 0;

	if (map >= blk_size(file)) {
		*st |= BLK_STATUS_ZERO;
		return;
	}
	if (*pnum > blk_size(file) - map)
		*pnum = blk_size(file) - map;
	if (blk_block_status(file, map, *pnum, &fnum, &fst, NULL, NULL) < 0 || !fnum)
		return;
	if (fnum < *pnum)
		*pnum = fnum;
	if (fst & BLK_STATUS_ZERO)
		*st |= BLK_STATUS_ZERO;
}

int img_chain_status(struct blk *top, uint64_t off, uint64_t len, struct img_status *e)
{
	struct blk *node = top;

	memset(e, 0, sizeof(*e));
	e->start = off;
	for (;;) {
		uint64_t pnum = 0, map = 0;
		struct blk *map_node = NULL, *backing;
		unsigned st = 0;
		int ret;

		if (off >= blk_size(node)) {
			/* A backing file shorter than its overlay: zeroes. */
			e->len = len;
			e->zero = true;
			return 0;
		}
		if (len > blk_size(node) - off)
			len = blk_size(node) - off;
		ret = blk_block_status(node, off, len, &pnum, &st, &map, &map_node);
		if (ret == -ENOTSUP) {
			pnum = len;
			st = BLK_STATUS_DATA | BLK_STATUS_ALLOCATED;
		} else if (ret < 0) {
			img_err("%s: block status at offset %llu failed: %s", blk_filename(node),
				(unsigned long long)off, strerror(-ret));
			return ret;
		}
		if (!pnum || pnum > len)
			pnum = len;
		if ((st & BLK_STATUS_DATA) && (st & BLK_STATUS_OFFSET_VALID) && map_node &&
		    !blk_file(map_node) && looks_preallocated(node, map_node))
			refine_by_file(map_node, map, &pnum, &st);
		e->len = pnum;
		backing = blk_backing(node);
		if ((st & BLK_STATUS_ALLOCATED) || !backing) {
			e->present = st & BLK_STATUS_ALLOCATED;
			e->zero = (st & BLK_STATUS_ZERO) || !e->present;
			e->data = e->present && (st & BLK_STATUS_DATA);
			e->has_offset = e->present && (st & BLK_STATUS_OFFSET_VALID);
			e->offset = map;
			e->filename = blk_filename(map_node ? map_node : node);
			return 0;
		}
		len = pnum;
		node = backing;
		e->depth++;
	}
}

