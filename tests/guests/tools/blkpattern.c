/* blkpattern: writes or checks, in a raw disk image, what blkcheck leaves on
 * a disk for a seed (blkpattern.h), independently of any VMM.
 *
 *   blkpattern write IMAGE SEED    the plan's regions get the pattern, the
 *                                  zeroed range zeroes (the image keeps its
 *                                  size; its capacity is size / 512)
 *   blkpattern check IMAGE SEED    the same bytes must be there
 *   blkpattern check-prefix IMAGE SEED BYTES
 *                                  [0, BYTES) holds the plain pattern (what
 *                                  blkcrash writes from the start of the
 *                                  disk, without the plan's zeroed range)
 *
 * Exit status 0 when done / matching, 1 on a mismatch, 2 on bad usage or
 * an I/O error. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blkpattern.h"

#define CHUNK (1u << 20)

struct image {
	const char *path;
	int fd;
	uint64_t capacity;          /* sectors */
	uint64_t seed;
	int plain;                  /* no zeroed range: the pattern alone */
	uint8_t *buf;
};

/* The expected bytes of [off, off + len): pattern, or zero in the zeroed range. */
static void expected(const struct image *im, uint8_t *buf, uint64_t off, uint64_t len)
{
	struct blk_range z = blkplan_zeroed();
	uint64_t zlo = z.start * BLK_SECTOR, zhi = (z.start + z.count) * BLK_SECTOR;

	blkpat_fill(buf, im->seed, off, len);
	if (im->plain)
		return;
	uint64_t lo = off > zlo ? off : zlo, hi = off + len < zhi ? off + len : zhi;
	if (lo < hi)
		memset(buf + (lo - off), 0, hi - lo);
}

static int write_range(struct image *im, struct blk_range r)
{
	uint64_t off = r.start * BLK_SECTOR, end = (r.start + r.count) * BLK_SECTOR;

	while (off < end) {
		size_t n = end - off < CHUNK ? (size_t)(end - off) : CHUNK;
		expected(im, im->buf, off, n);
		ssize_t w = pwrite(im->fd, im->buf, n, (off_t)off);
		if (w != (ssize_t)n) {
			fprintf(stderr, "blkpattern: %s: writing at byte %" PRIu64 ": %s\n", im->path,
				off, w < 0 ? strerror(errno) : "short write");
			return -EIO;
		}
		off += n;
	}
	return 0;
}

/* 0 when the range matches, 1 on the first mismatch (reported), -EIO. */
static int check_range(struct image *im, struct blk_range r, uint8_t *want)
{
	uint64_t off = r.start * BLK_SECTOR, end = (r.start + r.count) * BLK_SECTOR;

	while (off < end) {
		size_t n = end - off < CHUNK ? (size_t)(end - off) : CHUNK;
		ssize_t got = pread(im->fd, im->buf, n, (off_t)off);
		if (got != (ssize_t)n) {
			fprintf(stderr, "blkpattern: %s: reading at byte %" PRIu64 ": %s\n", im->path,
				off, got < 0 ? strerror(errno) : "short read");
			return -EIO;
		}
		expected(im, want, off, n);
		if (memcmp(im->buf, want, n) != 0) {
			size_t i = 0;
			while (im->buf[i] == want[i])
				i++;
			printf("blkpattern: %s: byte %" PRIu64 " (sector %" PRIu64 " + %" PRIu64
			       ") is 0x%02x, seed %" PRIu64 " wants 0x%02x\n", im->path, off + i,
			       (off + i) / BLK_SECTOR, (off + i) % BLK_SECTOR, im->buf[i], im->seed,
			       want[i]);
			return 1;
		}
		off += n;
	}
	return 0;
}

static int parse_u64(const char *s, uint64_t *v)
{
	char *end;

	errno = 0;
	unsigned long long x = strtoull(s, &end, 0);
	if (errno || end == s || *end)
		return -EINVAL;
	*v = x;
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: blkpattern write|check IMAGE SEED\n"
		"       blkpattern check-prefix IMAGE SEED BYTES\n");
	return 2;
}

static int check_prefix(const char *path, const char *seed, const char *bytes)
{
	struct image im = { .path = path, .plain = 1 };
	uint64_t len;
	uint8_t *want;
	int ret;

	if (parse_u64(seed, &im.seed) || parse_u64(bytes, &len) || len % BLK_SECTOR) {
		fprintf(stderr, "blkpattern: seed '%s' or byte count '%s' (a multiple of 512) "
			"is not a number\n", seed, bytes);
		return usage();
	}
	im.fd = open(path, O_RDONLY);
	if (im.fd < 0) {
		fprintf(stderr, "blkpattern: %s: %s\n", path, strerror(errno));
		return 2;
	}
	im.buf = malloc(CHUNK);
	want = malloc(CHUNK);
	if (!im.buf || !want) {
		fprintf(stderr, "blkpattern: out of memory\n");
		ret = 2;
	} else {
		ret = len ? check_range(&im, (struct blk_range){ 0, len / BLK_SECTOR }, want) : 0;
		ret = ret < 0 ? 2 : ret;
	}
	if (ret == 0)
		printf("blkpattern: %s: the first %" PRIu64 " bytes hold seed %" PRIu64 "\n", path,
		       len, im.seed);
	free(want);
	free(im.buf);
	close(im.fd);
	return ret;
}

int main(int argc, char **argv)
{
	struct image im = { 0 };
	struct blk_range r[BLKPLAN_MAX_RANGES];
	struct stat st;
	uint8_t *want = NULL;
	int writing, ret = 2;

	if (argc == 5 && !strcmp(argv[1], "check-prefix"))
		return check_prefix(argv[2], argv[3], argv[4]);
	if (argc != 4 || (strcmp(argv[1], "write") && strcmp(argv[1], "check")))
		return usage();
	writing = strcmp(argv[1], "write") == 0;
	im.path = argv[2];
	if (parse_u64(argv[3], &im.seed)) {
		fprintf(stderr, "blkpattern: seed '%s' is not a number\n", argv[3]);
		return usage();
	}
	im.fd = open(im.path, writing ? O_RDWR : O_RDONLY);
	if (im.fd < 0 || fstat(im.fd, &st) < 0) {
		fprintf(stderr, "blkpattern: %s: %s\n", im.path, strerror(errno));
		return 2;
	}
	im.capacity = (uint64_t)st.st_size / BLK_SECTOR;
	unsigned n = blkplan_regions(im.capacity, r);
	if (!n) {
		fprintf(stderr, "blkpattern: %s: %" PRIu64 " sectors, at least %" PRIu64 " needed\n",
			im.path, im.capacity, BLKPLAN_MIN_SECTORS);
		goto err_close;
	}
	im.buf = malloc(CHUNK);
	want = malloc(CHUNK);
	if (!im.buf || !want) {
		fprintf(stderr, "blkpattern: out of memory\n");
		goto err_free;
	}
	uint64_t bytes = 0;
	ret = 0;
	for (unsigned i = 0; i < n && ret == 0; i++) {
		int err = writing ? write_range(&im, r[i]) : check_range(&im, r[i], want);
		ret = err < 0 ? 2 : err;
		bytes += r[i].count * BLK_SECTOR;
	}
	if (ret == 0 && writing && fsync(im.fd) < 0) {
		fprintf(stderr, "blkpattern: %s: fsync: %s\n", im.path, strerror(errno));
		ret = 2;
	}
	if (ret == 0)
		printf("blkpattern: %s: %s %u regions, %" PRIu64 " bytes, seed %" PRIu64 "\n", im.path,
		       writing ? "wrote" : "checked", n, bytes, im.seed);
err_free:
	free(want);
	free(im.buf);
err_close:
	close(im.fd);
	return ret;
}
