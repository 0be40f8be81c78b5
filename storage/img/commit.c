/* drover-img commit [-q] [-f fmt] [-t cache] [-b base] [-d] [-p] FILE
 *
 * Copies what the layers above base (FILE and the images between) allocate
 * into base, then empties FILE unless -d. With -b the intermediate images no
 * longer match their backing, so FILE is kept as it is (-b implies -d), as
 * qemu-img does.
 *
 * The chain is read through FILE opened read-only; base is written through
 * a second, writable node of its own. Only regions allocated above base
 * are read, so the read-only node of base (whose caches go stale) is never
 * consulted for them. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "img.h"
#include "util.h"

#define CM_CHUNK (2 * MiB)

struct commit_args {
	const char *fmt, *base, *file;
	bool drop, progress, quiet;
	enum blk_cache cache;
};

static int parse_args(int argc, char **argv, struct commit_args *a)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":f:t:b:dpqh", longopts, NULL)) != -1) {
		switch (c) {
		case 'f': a->fmt = optarg; break;
		case 'b': a->base = optarg; break;
		case 'd': a->drop = true; break;
		case 'p': a->progress = true; break;
		case 'q': a->quiet = true; break;
		case 't':
			if (img_parse_cache(optarg, "-t", &a->cache) < 0)
				return -EINVAL;
			break;
		case 'h':
			printf("usage: " IMG_PROG " commit [-q] [-f fmt] [-t cache] [-b base] [-d] [-p] "
			       "filename\n");
			return 1;
		default:
			img_bad_option("commit", c, argv);
			return -EINVAL;
		}
	}
	if (optind != argc - 1) {
		img_err(optind >= argc ? "commit: no file name given"
				       : "commit: expects one file name, got more");
		return -EINVAL;
	}
	a->file = argv[optind];
	if (a->base)
		a->drop = true;
	return 0;
}

static bool same_file(const char *p1, const char *p2)
{
	struct stat s1, s2;

	if (stat(p1, &s1) == 0 && stat(p2, &s2) == 0)
		return s1.st_dev == s2.st_dev && s1.st_ino == s2.st_ino;
	return !strcmp(p1, p2);
}

static struct blk *find_base(struct blk *top, const struct commit_args *a)
{
	struct blk *n = blk_backing(top);

	if (!n) {
		img_err("%s: the image has no backing file to commit into", a->file);
		return NULL;
	}
	if (!a->base)
		return n;
	for (; n; n = blk_backing(n)) {
		struct blk *file = blk_file(n);

		if (same_file(a->base, blk_filename(n)) ||
		    (file && same_file(a->base, blk_filename(file))))
			return n;
	}
	img_err("%s: '%s' is not in the image's backing chain", a->file, a->base);
	return NULL;
}

static int copy_above(const struct commit_args *a, struct blk *top, struct blk *base_ro,
		      struct blk *base, const char *base_path)
{
	uint64_t size = blk_size(top), off = 0;
	struct img_progress prog;
	uint8_t *buf = img_alloc_buf(CM_CHUNK);
	int ret = 0;

	if (!buf) {
		img_err("commit: out of memory");
		return -ENOMEM;
	}
	img_progress_init(&prog, a->progress && !a->quiet);
	while (off < size) {
		uint64_t len = size - off < CM_CHUNK ? size - off : CM_CHUNK, pnum = 0;
		unsigned st = 0;
		int depth;

		ret = blk_block_status_above(top, base_ro, off, len, &pnum, &st, &depth);
		if (ret == -ENOTSUP) {
			st = BLK_STATUS_ALLOCATED | BLK_STATUS_DATA;
			pnum = len;
		} else if (ret < 0) {
			img_err("%s: block status at offset %llu failed: %s", a->file,
				(unsigned long long)off, strerror(-ret));
			break;
		}
		if (!pnum || pnum > len)
			pnum = len;
		ret = 0;
		if (st & BLK_STATUS_ALLOCATED) {
			bool zero = st & BLK_STATUS_ZERO;

			if (!zero) {
				ret = blk_pread(top, off, buf, pnum);
				if (ret < 0) {
					img_err("%s: read at offset %llu failed: %s", a->file,
						(unsigned long long)off, strerror(-ret));
					break;
				}
				zero = img_is_zero(buf, pnum);
			}
			ret = zero ? blk_write_zeroes(base, off, pnum, BLK_ZERO_MAY_UNMAP)
				   : blk_pwrite(base, off, buf, pnum, 0);
			if (ret < 0) {
				img_err("%s: write at offset %llu failed: %s", base_path,
					(unsigned long long)off, strerror(-ret));
				break;
			}
		}
		off += pnum;
		img_progress_update(&prog, off, size);
	}
	img_progress_end(&prog);
	free(buf);
	return ret;
}

/* Empties FILE: every cluster back to "unallocated", so that it reads
 * from base again (internal snapshots keep their clusters). */
static int make_empty(const struct commit_args *a)
{
	struct blk *b;
	int ret;

	if (img_open(&b, a->file, a->fmt, IMG_OPEN_RW | IMG_OPEN_NO_BACKING, a->cache) < 0)
		return -EINVAL;
	ret = blk_make_empty(b);
	if (ret == -ENOTSUP)
		img_err("%s: warning: format %s cannot be emptied after the commit (it still "
			"reads the same)", a->file, blk_format(b));
	else if (ret < 0)
		img_err("%s: emptying the image after the commit failed: %s", a->file,
			strerror(-ret));
	blk_close(b);
	return ret == -ENOTSUP ? 0 : ret;
}

int img_commit(int argc, char **argv)
{
	struct commit_args a = { .cache = BLK_CACHE_WRITEBACK };
	struct blk *top = NULL, *base_ro, *base = NULL;
	char err[512] = "";
	char *base_path = NULL, *base_fmt = NULL;
	int ret, rc = 1;

	ret = parse_args(argc, argv, &a);
	if (ret)
		return ret > 0 ? 0 : 1;
	if (img_open(&top, a.file, a.fmt, IMG_OPEN_SHARE, a.cache) < 0)
		return 1;
	base_ro = find_base(top, &a);
	if (!base_ro)
		goto out;
	base_path = strdup(blk_filename(base_ro));
	base_fmt = strdup(blk_format(base_ro));
	if (!base_path || !base_fmt)
		goto out;
	if (img_open(&base, base_path, base_fmt, IMG_OPEN_RW, a.cache) < 0)
		goto out;
	/* A smaller base grows to the top's size; a larger one keeps its. */
	if (blk_size(base) < blk_size(top)) {
		ret = blk_truncate(base, blk_size(top), BLK_PREALLOC_OFF, err, sizeof(err));
		if (ret < 0) {
			img_blk_err(base_path, err, ret);
			goto out;
		}
	}
	if (copy_above(&a, top, base_ro, base, base_path) < 0)
		goto out;
	ret = blk_flush(base);
	if (ret < 0) {
		img_err("%s: flush failed: %s", base_path, strerror(-ret));
		goto out;
	}
	blk_close(base);
	base = NULL;
	blk_close(top);
	top = NULL;
	if (!a.drop && make_empty(&a) < 0)
		goto out;
	if (!a.quiet)
		printf("Image committed.\n");
	rc = 0;
out:
	if (base)
		blk_close(base);
	if (top)
		blk_close(top);
	free(base_path);
	free(base_fmt);
	return rc;
}
