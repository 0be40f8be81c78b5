/* drover-img resize [-q] [-f fmt] [--shrink] [--preallocation=mode] FILE [+|-]SIZE */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "img.h"

struct resize_args {
	const char *fmt, *file, *size;
	bool shrink, quiet, has_prealloc;
	enum blk_prealloc prealloc;
};

static int parse_args(int argc, char **argv, struct resize_args *a)
{
	enum { OPT_SHRINK = 256, OPT_PREALLOC };
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "shrink", no_argument, NULL, OPT_SHRINK },
		{ "preallocation", required_argument, NULL, OPT_PREALLOC },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	/* "-1G" is a size, not an option: take it out before getopt sees it. */
	if (argc > 1 && argv[argc - 1][0] == '-' && isdigit((unsigned char)argv[argc - 1][1]))
		a->size = argv[--argc];
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":f:qh", longopts, NULL)) != -1) {
		switch (c) {
		case 'f': a->fmt = optarg; break;
		case 'q': a->quiet = true; break;
		case OPT_SHRINK: a->shrink = true; break;
		case OPT_PREALLOC:
			if (blk_prealloc_parse(optarg, &a->prealloc) < 0) {
				img_err("resize: --preallocation: '%s' is not off, metadata, falloc or full",
					optarg);
				return -EINVAL;
			}
			a->has_prealloc = true;
			break;
		case 'h':
			printf("usage: " IMG_PROG " resize [-q] [-f fmt] [--shrink] "
			       "[--preallocation=prealloc] filename [+ | -]size\n");
			return 1;
		default:
			img_bad_option("resize", c, argv);
			return -EINVAL;
		}
	}
	if (!a->size && optind < argc)
		a->size = argv[--argc];
	if (optind >= argc || !a->size) {
		img_err("resize: expects a file name and a size");
		return -EINVAL;
	}
	if (optind != argc - 1) {
		img_err("resize: unexpected argument '%s'", argv[optind + 1]);
		return -EINVAL;
	}
	a->file = argv[optind];
	return 0;
}

/* "[+|-]SIZE": the sign (0, '+' or '-') and the number. */
static int parse_new_size(const struct resize_args *a, char *sign, uint64_t *v)
{
	const char *s = a->size;

	*sign = (*s == '+' || *s == '-') ? *s++ : 0;
	if (img_parse_size(s, v) < 0) {
		img_err("%s: '%s' is not a size (a number with k, M, G, T, P or E; + or - "
			"for a relative change)", a->file, a->size);
		return -EINVAL;
	}
	return 0;
}

/* The new size relative to cur. */
static int new_size(const struct resize_args *a, char sign, uint64_t v, uint64_t cur,
		    uint64_t *out)
{
	if (sign == '+' && v > (uint64_t)INT64_MAX - cur) {
		img_err("%s: %s would make the image larger than 8E", a->file, a->size);
		return -ERANGE;
	}
	if ((sign == '-' && v >= cur) || (!sign && v == 0)) {
		img_err("%s: the new size must be positive (%s of %llu bytes)", a->file, a->size,
			(unsigned long long)cur);
		return -EINVAL;
	}
	*out = sign == '+' ? cur + v : sign == '-' ? cur - v : v;
	return 0;
}

int img_resize(int argc, char **argv)
{
	struct resize_args a = { .prealloc = BLK_PREALLOC_OFF };
	char err[512] = "";
	struct blk *b;
	uint64_t cur, size, v;
	char sign;
	int ret, rc = 1;

	ret = parse_args(argc, argv, &a);
	if (ret)
		return ret > 0 ? 0 : 1;
	/* A typo in the size is reported before the image is touched. */
	if (parse_new_size(&a, &sign, &v) < 0)
		return 1;
	if (img_open(&b, a.file, a.fmt, IMG_OPEN_RW | IMG_OPEN_NO_BACKING, BLK_CACHE_WRITEBACK) < 0)
		return 1;
	cur = blk_size(b);
	if (new_size(&a, sign, v, cur, &size) < 0)
		goto out;
	if (size < cur && !a.shrink) {
		img_err("%s: shrinking from %llu to %llu bytes deletes the data past the new end: "
			"use --shrink", a.file, (unsigned long long)cur, (unsigned long long)size);
		goto out;
	}
	if (size < cur && a.has_prealloc && a.prealloc != BLK_PREALLOC_OFF) {
		img_err("%s: --preallocation applies to growing an image, not shrinking it", a.file);
		goto out;
	}
	/* The block layer shrinks only over an unused tail: free it first. */
	if (size < cur) {
		ret = blk_discard(b, size, cur - size);
		if (ret < 0 && ret != -ENOTSUP) {
			img_err("%s: freeing the data past the new end failed: %s", a.file,
				strerror(-ret));
			goto out;
		}
	}
	ret = blk_truncate(b, size, a.prealloc, err, sizeof(err));
	if (ret < 0) {
		img_blk_err(a.file, err, ret);
		goto out;
	}
	ret = blk_flush(b);
	if (ret < 0) {
		img_err("%s: flush after resizing failed: %s", a.file, strerror(-ret));
		goto out;
	}
	if (!a.quiet)
		printf("Image resized.\n");
	rc = 0;
out:
	blk_close(b);
	return rc;
}
