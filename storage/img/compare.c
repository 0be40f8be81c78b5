/* drover-img compare [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] FILE1 FILE2
 *
 * Exit status as qemu-img's: 0 identical, 1 different (the first differing
 * 512-byte sector is printed), 2 an image could not be read; argument
 * errors exit with 1 as qemu-img's do. Images of different sizes compare
 * equal when the larger one's extra part reads as zeroes (not with -s). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img.h"
#include "util.h"

#define CMP_CHUNK        (2 * MiB)
#define CMP_SECTOR       512
#define CMP_IDENTICAL    0
#define CMP_DIFFERENT    1
#define CMP_ERROR        2

struct cmp_args {
	const char *fmt1, *fmt2, *file1, *file2;
	bool strict, progress, quiet, share;
	enum blk_cache cache;
};

struct cmp_img {
	struct blk *b;
	const char *path;
	uint8_t *buf;
};

static int parse_args(int argc, char **argv, struct cmp_args *a)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":f:F:T:pqsUh", longopts, NULL)) != -1) {
		switch (c) {
		case 'f': a->fmt1 = optarg; break;
		case 'F': a->fmt2 = optarg; break;
		case 'p': a->progress = true; break;
		case 'q': a->quiet = true; break;
		case 's': a->strict = true; break;
		case 'U': a->share = true; break;
		case 'T':
			if (img_parse_cache(optarg, "-T", &a->cache) < 0)
				return -EINVAL;
			break;
		case 'h':
			printf("usage: " IMG_PROG " compare [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] "
			       "[-s] [-U] filename1 filename2\n");
			return 1;
		default:
			img_bad_option("compare", c, argv);
			return -EINVAL;
		}
	}
	if (argc - optind != 2) {
		img_err("compare: expects two image file names, got %d", argc - optind);
		return -EINVAL;
	}
	a->file1 = argv[optind];
	a->file2 = argv[optind + 1];
	return 0;
}

/* Status of the run at off: whether it reads as zeroes, and what -s
 * compares (allocated somewhere in the chain, data, zero). */
static int run_status(struct cmp_img *m, uint64_t off, uint64_t len, uint64_t *pnum,
		      bool *zero, unsigned *status)
{
	struct img_status e;
	int ret = img_chain_status(m->b, off, len, &e);

	if (ret < 0)
		return ret;
	*pnum = e.len;
	*zero = e.zero && !e.data;
	*status = (e.present ? 1 : 0) | (e.zero ? 2 : 0) | (e.data ? 4 : 0);
	return 0;
}

static int read_run(struct cmp_img *m, uint64_t off, uint64_t len)
{
	int ret = blk_pread(m->b, off, m->buf, len);

	if (ret < 0)
		img_err("%s: read at offset %llu failed: %s", m->path, (unsigned long long)off,
			strerror(-ret));
	return ret;
}

/* Offset of the first differing byte in [0, len), or len. */
static uint64_t first_diff(const uint8_t *a, const uint8_t *b, uint64_t len)
{
	uint64_t i = 0;

	/* Narrow down with memcmp, which is fast, before stepping bytes. */
	for (uint64_t step = 64 * KiB; step >= 64; step /= 16)
		while (i + step <= len && !memcmp(a + i, b + i, step))
			i += step;
	while (i < len && a[i] == b[i])
		i++;
	return i;
}

static uint64_t first_nonzero(const uint8_t *a, uint64_t len)
{
	uint64_t i = 0;

	for (uint64_t step = 64 * KiB; step >= 64; step /= 16)
		while (i + step <= len && img_is_zero(a + i, step))
			i += step;
	while (i < len && !a[i])
		i++;
	return i;
}

static void report_mismatch(const struct cmp_args *a, uint64_t off)
{
	if (!a->quiet)
		printf("Content mismatch at offset %llu!\n",
		       (unsigned long long)ALIGN_DOWN(off, CMP_SECTOR));
}

/* Compares [0, len) of both images. */
static int compare_common(const struct cmp_args *a, struct cmp_img *m, uint64_t len,
			  uint64_t total, struct img_progress *prog)
{
	uint64_t off = 0;

	while (off < len) {
		uint64_t n = len - off < CMP_CHUNK ? len - off : CMP_CHUNK, p1, p2, d;
		bool z1, z2;
		unsigned al1, al2;

		if (run_status(&m[0], off, n, &p1, &z1, &al1) < 0 ||
		    run_status(&m[1], off, n, &p2, &z2, &al2) < 0)
			return CMP_ERROR;
		n = p1 < p2 ? p1 : p2;
		if (a->strict && al1 != al2) {
			if (!a->quiet)
				printf("Strict mode: Offset %llu block status mismatch!\n",
				       (unsigned long long)off);
			return CMP_DIFFERENT;
		}
		if (z1 && z2) {
			off += n;
			img_progress_update(prog, off, total);
			continue;
		}
		if ((!z1 && read_run(&m[0], off, n) < 0) || (!z2 && read_run(&m[1], off, n) < 0))
			return CMP_ERROR;
		if (z1)
			d = first_nonzero(m[1].buf, n);
		else if (z2)
			d = first_nonzero(m[0].buf, n);
		else
			d = first_diff(m[0].buf, m[1].buf, n);
		if (d < n) {
			report_mismatch(a, off + d);
			return CMP_DIFFERENT;
		}
		off += n;
		img_progress_update(prog, off, total);
	}
	return CMP_IDENTICAL;
}

/* The larger image's part past the smaller's end must read as zeroes. */
static int compare_tail(const struct cmp_args *a, struct cmp_img *m, uint64_t off, uint64_t end,
			struct img_progress *prog)
{
	while (off < end) {
		uint64_t n = end - off < CMP_CHUNK ? end - off : CMP_CHUNK, p, d;
		bool z;
		unsigned al;

		if (run_status(m, off, n, &p, &z, &al) < 0)
			return CMP_ERROR;
		if (!z) {
			if (read_run(m, off, p) < 0)
				return CMP_ERROR;
			d = first_nonzero(m->buf, p);
			if (d < p) {
				report_mismatch(a, off + d);
				return CMP_DIFFERENT;
			}
		}
		off += p;
		img_progress_update(prog, off, end);
	}
	return CMP_IDENTICAL;
}

int img_compare(int argc, char **argv)
{
	struct cmp_args a = { .cache = BLK_CACHE_WRITEBACK };
	struct cmp_img m[2] = { { 0 } };
	struct img_progress prog;
	uint64_t s1, s2;
	unsigned flags;
	int ret, rc = CMP_ERROR;

	ret = parse_args(argc, argv, &a);
	if (ret)
		return ret > 0 ? 0 : 1;
	flags = a.share ? IMG_OPEN_SHARE : 0;
	m[0].path = a.file1;
	m[1].path = a.file2;
	if (img_open(&m[0].b, a.file1, a.fmt1, flags, a.cache) < 0 ||
	    img_open(&m[1].b, a.file2, a.fmt2, flags, a.cache) < 0)
		goto out;
	m[0].buf = img_alloc_buf(CMP_CHUNK);
	m[1].buf = img_alloc_buf(CMP_CHUNK);
	if (!m[0].buf || !m[1].buf) {
		img_err("compare: out of memory");
		goto out;
	}
	s1 = blk_size(m[0].b);
	s2 = blk_size(m[1].b);
	if (a.strict && s1 != s2) {
		if (!a.quiet)
			printf("Strict mode: Image size mismatch!\n");
		rc = CMP_DIFFERENT;
		goto out;
	}
	img_progress_init(&prog, a.progress && !a.quiet);
	rc = compare_common(&a, m, s1 < s2 ? s1 : s2, s1 > s2 ? s1 : s2, &prog);
	if (rc == CMP_IDENTICAL && s1 != s2) {
		if (!a.quiet)
			printf("Warning: Image size mismatch!\n");
		rc = compare_tail(&a, s1 > s2 ? &m[0] : &m[1], s1 < s2 ? s1 : s2,
				  s1 > s2 ? s1 : s2, &prog);
	}
	if (rc == CMP_IDENTICAL && !a.quiet)
		printf("Images are identical.\n");
	img_progress_end(&prog);
out:
	for (int i = 0; i < 2; i++) {
		free(m[i].buf);
		if (m[i].b)
			blk_close(m[i].b);
	}
	return rc;
}
