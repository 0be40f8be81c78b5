/* fuzz_qcow2: bytes -> an image file -> blk_open with the qcow2 driver
 * (read-only, without its backing chain: a fuzzed backing name must not
 * reach the host's files), then what drover-img info/map/check and a
 * guest's reads do: info, snapshot list, block status over the whole
 * disk, reads at the start, the end and where block status points, and a
 * read-only check.
 *
 * Beyond the sanitizers: an image that opens reports a size a guest can
 * use; block status answers cover the disk exactly, each run within the
 * request; and check either answers or fails with an errno, never both
 * and never with a report it did not allocate. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "blk.h"
#include "blk_int.h"

static const struct blk_driver *const qcow2_linked __attribute__((used)) = &blk_driver_qcow2;

#define READ_LEN (64 * 1024)
#define MAX_STATUS_CALLS 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t buf[READ_LEN];
	char path[64], err[512];
	struct blk_open_opts o = { .format = "qcow2", .readonly = true, .no_backing = true,
				   .force_share = true };
	struct blk *b;

	int fd = memfd_create("fuzz_qcow2", 0);
	if (fd < 0)
		abort();
	if (size && write(fd, data, size) != (ssize_t)size)
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if (blk_open(&b, path, &o, err, sizeof(err)) < 0) {
		if (!err[0])
			abort();   /* a refusal always says why */
		close(fd);
		return 0;
	}

	uint64_t disk = blk_size(b);
	if (disk > INT64_MAX)
		abort();
	json_t *info = blk_info(b);
	json_decref(info);
	struct blk_snapshot_info *snaps;
	unsigned n;
	if (blk_snapshot_list(b, &snaps, &n) == 0)
		free(snaps);

	/* Block status over the disk, reading where it says data lives. */
	uint64_t off = 0;
	for (unsigned calls = 0; off < disk && calls < MAX_STATUS_CALLS; calls++) {
		uint64_t pnum = 0, map = 0;
		unsigned st = 0;
		struct blk *node = NULL;
		if (blk_block_status(b, off, disk - off, &pnum, &st, &map, &node) < 0)
			break;
		if (pnum == 0 || pnum > disk - off)
			abort();
		if ((st & BLK_STATUS_OFFSET_VALID) && !node)
			abort();
		if (st & (BLK_STATUS_DATA | BLK_STATUS_ZERO)) {
			uint64_t len = pnum < READ_LEN ? pnum : READ_LEN;
			(void)blk_pread(b, off, buf, len);
		}
		off += pnum;
	}
	if (disk) {
		uint64_t len = disk < READ_LEN ? disk : READ_LEN;
		(void)blk_pread(b, 0, buf, len);
		(void)blk_pread(b, disk - len, buf, len);
	}

	struct blk_check_result res;
	int r = blk_check(b, 0, &res);
	if (r < 0 && res.report)
		abort();
	blk_check_result_free(&res);
	blk_close(b);
	close(fd);
	return 0;
}
