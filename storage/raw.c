/* The "raw" format driver: the image is the file, byte for byte. Every
 * verb goes to the protocol node below (flush too: the layer flushes
 * b->file after a format's flush, so raw needs none of its own). */
#include <errno.h>
#include <stdio.h>

#include "blk_int.h"

/* Anything can be raw: the lowest score that still counts. */
static int raw_probe(const uint8_t *buf, size_t len)
{
	return 1;
}

static int raw_open(struct blk *b, const struct blk_open_opts *o, char *err, size_t errlen)
{
	b->size = blk_size(b->file);
	b->request_alignment = blk_request_alignment(b->file);
	return 0;
}

static int raw_preadv(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt)
{
	return blk_preadv(b->file, off, iov, iovcnt);
}

static int raw_pwritev(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
		       unsigned flags)
{
	return blk_pwritev(b->file, off, iov, iovcnt, flags);
}

static int raw_discard(struct blk *b, uint64_t off, uint64_t len)
{
	return blk_discard(b->file, off, len);
}

static int raw_write_zeroes(struct blk *b, uint64_t off, uint64_t len, unsigned flags)
{
	return blk_write_zeroes(b->file, off, len, flags);
}

static int raw_block_status(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum,
			    unsigned *status, uint64_t *map, struct blk **map_node)
{
	int r = blk_block_status(b->file, off, len, pnum, status, map, map_node);

	if (r == 0)
		*status |= BLK_STATUS_ALLOCATED;
	return r;
}

static int raw_truncate(struct blk *b, uint64_t size, enum blk_prealloc prealloc, char *err,
			size_t errlen)
{
	if (prealloc == BLK_PREALLOC_METADATA)
		prealloc = BLK_PREALLOC_OFF;
	return blk_truncate(b->file, size, prealloc, err, errlen);
}

static int64_t raw_allocated_size(struct blk *b)
{
	return blk_allocated_size(b->file);
}

static int raw_create(const char *path, const struct blk_create_opts *o, char *err,
		      size_t errlen)
{
	const struct blk_driver *proto = blk_protocol_for(path);
	struct blk_create_opts fo = *o;

	if (o->backing_file) {
		snprintf(err, errlen, "%s: a raw image cannot have a backing file", path);
		return -EINVAL;
	}
	if (!proto->create) {
		snprintf(err, errlen, "%s: protocol %s cannot create files", path, proto->name);
		return -ENOTSUP;
	}
	if (fo.prealloc == BLK_PREALLOC_METADATA)
		fo.prealloc = BLK_PREALLOC_OFF;
	fo.format = proto->name;
	return proto->create(path, &fo, err, errlen);
}

static int raw_aio_submit(struct blk *b, struct blk_aio *a, struct blk_req *req)
{
	struct blk *f = b->file;

	return f->drv->aio_submit ? f->drv->aio_submit(f, a, req) : -ENOTSUP;
}

const struct blk_driver blk_driver_raw = {
	.name = "raw",
	.probe = raw_probe,
	.open = raw_open,
	.create = raw_create,
	.preadv = raw_preadv,
	.pwritev = raw_pwritev,
	.discard = raw_discard,
	.write_zeroes = raw_write_zeroes,
	.block_status = raw_block_status,
	.truncate = raw_truncate,
	.allocated_size = raw_allocated_size,
	.aio_submit = raw_aio_submit,
};
