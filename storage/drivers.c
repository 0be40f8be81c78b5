/* The block drivers the layer knows: protocols first (file serves whatever
 * no other protocol claims), then formats in probing order. A new driver is
 * one line here. */
#include <stddef.h>
#include <string.h>

#include "blk_int.h"
#include "util.h"

static const struct blk_driver *const drivers[] = {
	&blk_driver_file,
	&blk_driver_raw,
	&blk_driver_qcow2,
};

const struct blk_driver *blk_driver_nth(size_t i)
{
	return i < ARRAY_SIZE(drivers) ? drivers[i] : NULL;
}

const struct blk_driver *blk_driver_by_name(const char *name)
{
	const struct blk_driver *d;

	for (size_t i = 0; name && (d = blk_driver_nth(i)); i++)
		if (strcmp(d->name, name) == 0)
			return d;
	return NULL;
}

const struct blk_driver *blk_protocol_for(const char *filename)
{
	const struct blk_driver *d;

	for (size_t i = 0; (d = blk_driver_nth(i)); i++)
		if (d->protocol && d->handles && d->handles(filename))
			return d;
	return &blk_driver_file;
}
