/* The block drivers the layer knows: protocols first (file serves whatever
 * no other protocol claims), then formats in probing order.
 *
 * qcow2 is written beside the layer. While its sources are absent it is
 * referenced weakly (address NULL: skipped) so that the library still
 * links; once they are in the tree the reference is strong, because a weak
 * reference alone does not pull an object out of a static library and
 * qcow2 would silently be missing from every program. */
#include <stddef.h>
#include <string.h>

#include "blk_int.h"
#include "util.h"

#if !__has_include("qcow2.h")
extern const struct blk_driver blk_driver_qcow2 __attribute__((weak));
#endif

static const struct blk_driver *const drivers[] = {
	&blk_driver_file,
	&blk_driver_raw,
	&blk_driver_qcow2,
};

const struct blk_driver *blk_driver_nth(size_t i)
{
	for (size_t k = 0; k < ARRAY_SIZE(drivers); k++) {
		if (!drivers[k])
			continue;
		if (i-- == 0)
			return drivers[k];
	}
	return NULL;
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
