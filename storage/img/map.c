/* drover-img map [-f fmt] [--output human|json] [--start-offset=N] [--max-length=N] [-U] FILE
 *
 * Entries come from img_chain_status (common.c), merged while they
 * continue one another, printed as qemu-img map prints them. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "img.h"

struct map_args {
	const char *fmt, *file;
	bool json, share;
	uint64_t start, max_len;
};


static int parse_offset(const char *opt, const char *s, uint64_t *out)
{
	if (img_parse_size(s, out) < 0) {
		img_err("map: %s: '%s' is not an offset or length", opt, s);
		return -EINVAL;
	}
	return 0;
}

static int parse_args(int argc, char **argv, struct map_args *a)
{
	enum { OPT_OUTPUT = 256, OPT_START, OPT_MAXLEN };
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "start-offset", required_argument, NULL, OPT_START },
		{ "max-length", required_argument, NULL, OPT_MAXLEN },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":f:hU", longopts, NULL)) != -1) {
		switch (c) {
		case 'f': a->fmt = optarg; break;
		case 'U': a->share = true; break;
		case OPT_OUTPUT:
			if (img_parse_output(optarg, &a->json) < 0)
				return -EINVAL;
			break;
		case OPT_START:
			if (parse_offset("--start-offset", optarg, &a->start) < 0)
				return -EINVAL;
			break;
		case OPT_MAXLEN:
			if (parse_offset("--max-length", optarg, &a->max_len) < 0)
				return -EINVAL;
			break;
		case 'h':
			printf("usage: " IMG_PROG " map [-f fmt] [--output=ofmt] [--start-offset=offset] "
			       "[--max-length=len] [-U] filename\n");
			return 1;
		default:
			img_bad_option("map", c, argv);
			return -EINVAL;
		}
	}
	if (optind != argc - 1) {
		img_err(optind >= argc ? "map: no file name given"
				       : "map: expects one file name, got more");
		return -EINVAL;
	}
	a->file = argv[optind];
	return 0;
}

static bool mergeable(const struct img_status *a, const struct img_status *b)
{
	if (a->depth != b->depth || a->present != b->present || a->zero != b->zero ||
	    a->data != b->data || a->has_offset != b->has_offset)
		return false;
	if (a->has_offset && (a->offset + a->len != b->offset || strcmp(a->filename, b->filename)))
		return false;
	return true;
}

static int print_entry(const struct map_args *a, const struct img_status *e, bool first)
{
	if (a->json) {
		printf("%s{ \"start\": %llu, \"length\": %llu, \"depth\": %u, \"present\": %s, "
		       "\"zero\": %s, \"data\": %s",
		       first ? "[" : ",\n", (unsigned long long)e->start, (unsigned long long)e->len,
		       e->depth, e->present ? "true" : "false", e->zero ? "true" : "false",
		       e->data ? "true" : "false");
		if (e->has_offset)
			printf(", \"offset\": %llu", (unsigned long long)e->offset);
		printf("}");
		return 0;
	}
	/* Only data that is not known to read as zeroes is shown. */
	if (!e->data || e->zero)
		return 0;
	if (!e->has_offset) {
		img_err("%s: data at offset %llu is compressed or elsewhere: no offset to show "
			"(use --output=json)", a->file, (unsigned long long)e->start);
		return -EINVAL;
	}
	printf("%#-16llx%#-16llx%#-16llx%s\n", (unsigned long long)e->start,
	       (unsigned long long)e->len, (unsigned long long)e->offset, e->filename);
	return 0;
}

int img_map(int argc, char **argv)
{
	struct map_args a = { 0 };
	struct img_status cur, next;
	struct blk *b;
	uint64_t off, end;
	bool have = false, first = true;
	int ret;

	ret = parse_args(argc, argv, &a);
	if (ret)
		return ret > 0 ? 0 : 1;
	if (img_open(&b, a.file, a.fmt, a.share ? IMG_OPEN_SHARE : 0, BLK_CACHE_WRITEBACK) < 0)
		return 1;
	end = blk_size(b);
	if (a.max_len && a.start + a.max_len < end && a.start + a.max_len > a.start)
		end = a.start + a.max_len;
	if (!a.json)
		printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
	ret = 0;
	for (off = a.start; off < end; off += next.len) {
		ret = img_chain_status(b, off, end - off, &next);
		if (ret < 0)
			break;
		if (have && mergeable(&cur, &next)) {
			cur.len += next.len;
			continue;
		}
		if (have && (ret = print_entry(&a, &cur, first)) < 0)
			break;
		first = first && !have;
		cur = next;
		have = true;
	}
	if (ret == 0 && have)
		ret = print_entry(&a, &cur, first);
	if (a.json)
		printf(have ? "]\n" : "[]\n");
	fflush(stdout);
	blk_close(b);
	return ret < 0 ? 1 : 0;
}
