/* drover-img rebase [-U] [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u]
 *                   -b backing [-F backing_fmt] FILE
 *
 * Safe mode keeps what the guest sees: every part of FILE that it does not
 * allocate itself and where the old backing chain and the new one differ
 * gets the old data copied into FILE before the header changes. Writing
 * through FILE while the old chain is still attached makes partial-cluster
 * writes copy the rest of the cluster from the old chain, which is right.
 * -u changes the header only. -b '' removes the backing file. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blk_int.h"   /* blk_backing_path */
#include "img.h"
#include "util.h"

#define RB_CHUNK (1 * MiB)

struct rebase_args {
	const char *fmt, *backing, *backing_fmt, *file;
	bool unsafe, progress, quiet, share;
	enum blk_cache cache, src_cache;
};

static int parse_args(int argc, char **argv, struct rebase_args *a)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":f:b:F:t:T:upqUh", longopts, NULL)) != -1) {
		switch (c) {
		case 'f': a->fmt = optarg; break;
		case 'b': a->backing = optarg; break;
		case 'F': a->backing_fmt = optarg; break;
		case 'u': a->unsafe = true; break;
		case 'p': a->progress = true; break;
		case 'q': a->quiet = true; break;
		case 'U': a->share = true; break;
		case 't':
			if (img_parse_cache(optarg, "-t", &a->cache) < 0)
				return -EINVAL;
			break;
		case 'T':
			if (img_parse_cache(optarg, "-T", &a->src_cache) < 0)
				return -EINVAL;
			break;
		case 'h':
			printf("usage: " IMG_PROG " rebase [-U] [-q] [-f fmt] [-t cache] [-T src_cache] "
			       "[-p] [-u] -b backing_file [-F backing_fmt] filename\n");
			return 1;
		default:
			img_bad_option("rebase", c, argv);
			return -EINVAL;
		}
	}
	if (optind != argc - 1) {
		img_err(optind >= argc ? "rebase: no file name given"
				       : "rebase: expects one file name, got more");
		return -EINVAL;
	}
	a->file = argv[optind];
	if (!a->backing) {
		img_err("%s: rebase needs the new backing file (-b FILE, or -b '' for none)",
			a->file);
		return -EINVAL;
	}
	if (a->backing_fmt && !img_format_known(a->backing_fmt)) {
		img_err("%s: -F: unknown format '%s'", a->file, a->backing_fmt);
		return -EINVAL;
	}
	return 0;
}

static int rebase_unsafe(const struct rebase_args *a)
{
	char err[512] = "";
	struct blk *b;
	const char *fmt = *a->backing ? a->backing_fmt : NULL;
	int ret;

	if (*a->backing && !fmt) {
		img_err("%s: the new backing file's format must be given with -u (-F raw or -F qcow2)",
			a->file);
		return -EINVAL;
	}
	if (img_open(&b, a->file, a->fmt, IMG_OPEN_RW | IMG_OPEN_NO_BACKING, a->cache) < 0)
		return -EINVAL;
	ret = blk_change_backing(b, *a->backing ? a->backing : NULL, fmt, err, sizeof(err));
	if (ret < 0)
		img_blk_err(a->file, err, ret);
	else if ((ret = blk_flush(b)) < 0)
		img_err("%s: flush failed: %s", a->file, strerror(-ret));
	blk_close(b);
	return ret;
}

/* Reads [off, off+len) of a chain, zeroes past its end (or all zeroes when
 * there is no chain). */
static int read_chain(struct blk *b, const char *name, uint64_t off, uint8_t *buf, uint64_t len)
{
	uint64_t n = 0;
	int ret;

	if (b && off < blk_size(b)) {
		n = blk_size(b) - off < len ? blk_size(b) - off : len;
		ret = blk_pread(b, off, buf, n);
		if (ret < 0) {
			img_err("%s: read at offset %llu failed: %s", name, (unsigned long long)off,
				strerror(-ret));
			return ret;
		}
	}
	memset(buf + n, 0, len - n);
	return 0;
}

/* Whether a chain surely reads zeroes over [off, off+len); *pnum bounds
 * the run the answer holds for. */
static bool chain_zero(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum)
{
	unsigned st = 0;
	int depth;

	if (!b || off >= blk_size(b)) {
		*pnum = len;
		return true;
	}
	if (len > blk_size(b) - off)
		len = blk_size(b) - off;
	if (blk_block_status_above(b, NULL, off, len, pnum, &st, &depth) < 0) {
		*pnum = len;
		return false;
	}
	if (!*pnum || *pnum > len)
		*pnum = len;
	return (st & BLK_STATUS_ZERO) || !(st & (BLK_STATUS_DATA | BLK_STATUS_ALLOCATED));
}

struct rebase_ctx {
	const struct rebase_args *a;
	struct blk *top, *old, *new;
	uint8_t *obuf, *nbuf;
	uint64_t unit;
};

/* Copies into the top image the units of [off, off+len) (none of which the
 * top allocates) where old and new chains differ. */
static int rebase_run(struct rebase_ctx *r, uint64_t off, uint64_t len)
{
	uint64_t p1, p2;
	int ret;

	if (chain_zero(r->old, off, len, &p1) && chain_zero(r->new, off, len, &p2) && p1 >= len &&
	    p2 >= len)
		return 0;
	ret = read_chain(r->top, r->a->file, off, r->obuf, len);
	if (ret == 0)
		ret = read_chain(r->new, r->a->backing, off, r->nbuf, len);
	if (ret < 0)
		return ret;
	for (uint64_t pos = 0; pos < len; pos += r->unit) {
		uint64_t n = len - pos < r->unit ? len - pos : r->unit;

		if (!memcmp(r->obuf + pos, r->nbuf + pos, n))
			continue;
		ret = blk_pwrite(r->top, off + pos, r->obuf + pos, n, 0);
		if (ret < 0) {
			img_err("%s: write at offset %llu failed: %s", r->a->file,
				(unsigned long long)(off + pos), strerror(-ret));
			return ret;
		}
	}
	return 0;
}

static int rebase_copy(struct rebase_ctx *r)
{
	struct img_progress prog;
	uint64_t size = blk_size(r->top), off = 0;
	int ret = 0;

	img_progress_init(&prog, r->a->progress && !r->a->quiet);
	while (off < size) {
		uint64_t len = size - off < RB_CHUNK ? size - off : RB_CHUNK, pnum = 0;
		unsigned st = 0;

		ret = blk_block_status(r->top, off, len, &pnum, &st, NULL, NULL);
		if (ret < 0 && ret != -ENOTSUP) {
			img_err("%s: block status at offset %llu failed: %s", r->a->file,
				(unsigned long long)off, strerror(-ret));
			break;
		}
		if (ret == -ENOTSUP)
			st = BLK_STATUS_ALLOCATED;
		if (!pnum || pnum > len)
			pnum = len;
		ret = 0;
		if (!(st & BLK_STATUS_ALLOCATED) && (ret = rebase_run(r, off, pnum)) < 0)
			break;
		off += pnum;
		img_progress_update(&prog, off, size);
	}
	img_progress_end(&prog);
	return ret;
}

static int rebase_safe(const struct rebase_args *a)
{
	struct rebase_ctx r = { .a = a };
	char err[512] = "";
	const char *new_fmt = NULL;
	int ret = -EINVAL;

	if (img_open(&r.top, a->file, a->fmt, IMG_OPEN_RW, a->cache) < 0)
		return -EINVAL;
	r.old = blk_backing(r.top);
	if (*a->backing) {
		char *path = blk_backing_path(a->file, a->backing);

		if (!path)
			goto out;
		ret = img_open(&r.new, path, a->backing_fmt, a->share ? IMG_OPEN_SHARE : 0,
			       a->src_cache);
		free(path);
		if (ret < 0)
			goto out;
		new_fmt = a->backing_fmt ? a->backing_fmt : blk_format(r.new);
	}
	r.unit = blk_cluster_size(r.top) ? blk_cluster_size(r.top) : 64 * KiB;
	if (r.unit > RB_CHUNK)
		r.unit = RB_CHUNK;
	r.obuf = img_alloc_buf(RB_CHUNK);
	r.nbuf = img_alloc_buf(RB_CHUNK);
	ret = -ENOMEM;
	if (!r.obuf || !r.nbuf) {
		img_err("rebase: out of memory");
		goto out;
	}
	ret = rebase_copy(&r);
	if (ret < 0)
		goto out;
	ret = blk_change_backing(r.top, *a->backing ? a->backing : NULL, new_fmt, err, sizeof(err));
	if (ret < 0) {
		img_blk_err(a->file, err, ret);
		goto out;
	}
	ret = blk_flush(r.top);
	if (ret < 0)
		img_err("%s: flush failed: %s", a->file, strerror(-ret));
out:
	free(r.obuf);
	free(r.nbuf);
	if (r.new)
		blk_close(r.new);
	blk_close(r.top);
	return ret;
}

int img_rebase(int argc, char **argv)
{
	struct rebase_args a = { .cache = BLK_CACHE_WRITEBACK, .src_cache = BLK_CACHE_WRITEBACK };
	int ret = parse_args(argc, argv, &a);

	if (ret)
		return ret > 0 ? 0 : 1;
	ret = a.unsafe ? rebase_unsafe(&a) : rebase_safe(&a);
	return ret < 0 ? 1 : 0;
}
