/* drover-img create [-q] [-f fmt] [-b backing [-F backing_fmt]] [-u] [-o options]
 *                   FILE [SIZE] */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blk_int.h"   /* blk_backing_path */
#include "img.h"

struct create_args {
	const char *fmt;
	const char *backing, *backing_fmt;
	const char *file, *size;
	struct img_opts opts;
	bool unsafe, quiet;
};

static int parse_args(int argc, char **argv, struct create_args *a)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 },
	};
	char err[256];
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":f:b:F:o:uqh", longopts, NULL)) != -1) {
		switch (c) {
		case 'f': a->fmt = optarg; break;
		case 'b': a->backing = optarg; break;
		case 'F': a->backing_fmt = optarg; break;
		case 'u': a->unsafe = true; break;
		case 'q': a->quiet = true; break;
		case 'o':
			if (img_opts_add(&a->opts, optarg, err, sizeof(err)) < 0) {
				img_err("create: -o: %s", err);
				return -EINVAL;
			}
			break;
		case 'h':
			printf("usage: " IMG_PROG " create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] "
			       "[-u] [-o options] filename [size]\n");
			return 1;
		default:
			img_bad_option("create", c, argv);
			return -EINVAL;
		}
	}
	if (a->opts.help)
		return 0;
	if (optind >= argc) {
		img_err("create: no file name given");
		return -EINVAL;
	}
	a->file = argv[optind++];
	if (optind < argc)
		a->size = argv[optind++];
	if (optind < argc) {
		img_err("create: unexpected argument '%s' after the size", argv[optind]);
		return -EINVAL;
	}
	return 0;
}

static int size_from_arg(const char *file, const char *s, uint64_t *out)
{
	int ret = img_parse_size(s, out);

	if (ret == -ERANGE)
		img_err("%s: size '%s' is above the maximum of 8E (2^63 - 1 bytes)", file, s);
	else if (ret < 0)
		img_err("%s: '%s' is not a size (a number with k, M, G, T, P or E)", file, s);
	return ret;
}

/* The backing file must exist and be of the stated format (unless -u);
 * without a size the image takes the backing file's. */
static int check_backing(const struct create_args *a, struct blk_create_opts *c)
{
	struct blk *bb;
	char *path;
	int ret;

	if (strcmp(c->format, "qcow2")) {
		img_err("%s: format %s cannot have a backing file", a->file, c->format);
		return -EINVAL;
	}
	if (!c->backing_format) {
		img_err("%s: backing file '%s' given without its format (-F raw or -F qcow2)",
			a->file, c->backing_file);
		return -EINVAL;
	}
	if (!img_format_known(c->backing_format)) {
		img_err("%s: unknown backing format '%s'", a->file, c->backing_format);
		return -EINVAL;
	}
	if (a->unsafe)
		return 0;
	path = blk_backing_path(a->file, c->backing_file);
	if (!path)
		return -ENOMEM;
	ret = img_open(&bb, path, c->backing_format, IMG_OPEN_SHARE | IMG_OPEN_NO_BACKING,
		       BLK_CACHE_WRITEBACK);
	free(path);
	if (ret < 0)
		return ret;
	if (!c->size)
		c->size = blk_size(bb);
	blk_close(bb);
	return 0;
}

static void print_formatting(const struct create_args *a, const struct blk_create_opts *c)
{
	const char *prealloc = img_opts_get(&a->opts, "preallocation");
	const char *compat = img_opts_get(&a->opts, "compat");

	printf("Formatting '%s', fmt=%s", a->file, c->format);
	if (strcmp(c->format, "qcow2")) {
		printf(" size=%llu", (unsigned long long)c->size);
		if (prealloc)
			printf(" preallocation=%s", prealloc);
		printf("\n");
		return;
	}
	printf(" cluster_size=%u extended_l2=%s", c->cluster_size ? c->cluster_size : 65536,
	       c->extended_l2 ? "on" : "off");
	if (prealloc)
		printf(" preallocation=%s", prealloc);
	printf(" compression_type=zlib size=%llu", (unsigned long long)c->size);
	if (c->backing_file)
		printf(" backing_file=%s", c->backing_file);
	if (c->backing_format)
		printf(" backing_fmt=%s", c->backing_format);
	if (compat)
		printf(" compat=%s", compat);
	printf(" lazy_refcounts=%s refcount_bits=%u\n", c->lazy_refcounts ? "on" : "off",
	       c->refcount_bits ? c->refcount_bits : 16);
	fflush(stdout);
}

int img_create(int argc, char **argv)
{
	struct create_args a = { .fmt = "raw" };
	struct blk_create_opts c = { 0 };
	char err[512] = "";
	int ret, rc = 1;

	ret = parse_args(argc, argv, &a);
	if (ret) {
		rc = ret > 0 ? 0 : 1;
		goto out;
	}
	if (!img_format_known(a.fmt)) {
		img_err("%s%sunknown format '%s'", a.file ? a.file : "", a.file ? ": " : "", a.fmt);
		goto out;
	}
	if (a.opts.help) {
		img_create_opts_help(a.fmt);
		rc = 0;
		goto out;
	}
	if (img_create_opts_fill(&c, &a.opts, a.fmt, err, sizeof(err)) < 0) {
		img_err("%s: %s", a.file, err);
		goto out;
	}
	if (a.backing)
		c.backing_file = a.backing;
	if (a.backing_fmt)
		c.backing_format = a.backing_fmt;
	if (c.backing_format && !c.backing_file) {
		img_err("%s: -F %s given without a backing file (-b)", a.file, c.backing_format);
		goto out;
	}
	if (a.size) {
		if (img_opts_has(&a.opts, "size")) {
			img_err("%s: size given twice (argument '%s' and -o size)", a.file, a.size);
			goto out;
		}
		if (size_from_arg(a.file, a.size, &c.size) < 0)
			goto out;
	}
	if (c.backing_file && *c.backing_file && check_backing(&a, &c) < 0)
		goto out;
	if (c.backing_file && !*c.backing_file)
		c.backing_file = NULL;
	if (!a.size && !img_opts_has(&a.opts, "size") && !(c.backing_file && c.size)) {
		img_err("%s: image creation needs a size", a.file);
		goto out;
	}
	if (!a.quiet)
		print_formatting(&a, &c);
	/* As qemu-img: images hold whole 512-byte sectors. */
	c.size = (c.size + 511) & ~511ULL;
	ret = blk_create(a.file, &c, err, sizeof(err));
	if (ret < 0) {
		img_blk_err(a.file, err, ret);
		goto out;
	}
	rc = 0;
out:
	img_opts_free(&a.opts);
	return rc;
}
