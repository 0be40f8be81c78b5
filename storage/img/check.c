/* drover-img check [-q] [-f fmt] [-r leaks|all] [--output human|json] [-T cache] [-U] FILE
 *
 * Exit status as qemu-img's: 0 consistent, 1 the check could not complete,
 * 2 corruptions, 3 only leaked clusters, 63 the format has nothing to check. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "img.h"

#define CHECK_NOT_SUPPORTED 63

struct check_args {
	const char *fmt, *file;
	unsigned fix;
	bool json, share, quiet;
	enum blk_cache cache;
};

static int parse_args(int argc, char **argv, struct check_args *a)
{
	enum { OPT_OUTPUT = 256 };
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "repair", required_argument, NULL, 'r' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":f:r:T:hqU", longopts, NULL)) != -1) {
		switch (c) {
		case 'f': a->fmt = optarg; break;
		case 'U': a->share = true; break;
		case 'q': a->quiet = true; break;
		case 'T':
			if (img_parse_cache(optarg, "-T", &a->cache) < 0)
				return -EINVAL;
			break;
		case 'r':
			if (!strcmp(optarg, "leaks")) {
				a->fix = BLK_CHECK_FIX_LEAKS;
			} else if (!strcmp(optarg, "all")) {
				a->fix = BLK_CHECK_FIX_LEAKS | BLK_CHECK_FIX_ERRORS;
			} else {
				img_err("check: -r: '%s' is not leaks or all", optarg);
				return -EINVAL;
			}
			break;
		case OPT_OUTPUT:
			if (img_parse_output(optarg, &a->json) < 0)
				return -EINVAL;
			break;
		case 'h':
			printf("usage: " IMG_PROG " check [-q] [-f fmt] [--output=ofmt] "
			       "[-r [leaks | all]] [-T src_cache] [-U] filename\n");
			return 1;
		default:
			img_bad_option("check", c, argv);
			return -EINVAL;
		}
	}
	if (optind != argc - 1) {
		img_err(optind >= argc ? "check: no file name given"
				       : "check: expects one file name, got more");
		return -EINVAL;
	}
	if (a->fix && a->share) {
		img_err("check: -U cannot be used with -r (repairs need the image lock)");
		return -EINVAL;
	}
	a->file = argv[optind];
	return 0;
}

static void print_human(const struct blk_check_result *r)
{
	if (!r->corruptions && !r->leaks && !r->check_errors)
		printf("No errors were found on the image.\n");
	if (r->corruptions)
		printf("\n%llu errors were found on the image.\n"
		       "Data may be corrupted, or further writes to the image may corrupt it.\n",
		       (unsigned long long)r->corruptions);
	if (r->leaks)
		printf("\n%llu leaked clusters were found on the image.\n"
		       "This means waste of disk space, but no harm to data.\n",
		       (unsigned long long)r->leaks);
	if (r->check_errors)
		printf("\n%llu internal errors have occurred during the check.\n",
		       (unsigned long long)r->check_errors);
	if (r->total_clusters && r->allocated_clusters) {
		double t = (double)r->total_clusters, a = (double)r->allocated_clusters;

		printf("%llu/%llu = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
		       (unsigned long long)r->allocated_clusters,
		       (unsigned long long)r->total_clusters, a * 100.0 / t,
		       (double)r->fragmented_clusters * 100.0 / a,
		       (double)r->compressed_clusters * 100.0 / a);
	}
	if (r->image_end_offset)
		printf("Image end offset: %llu\n", (unsigned long long)r->image_end_offset);
}

static void put_nonzero(json_t *o, const char *key, uint64_t v)
{
	if (v)
		json_object_set_new(o, key, json_integer((json_int_t)v));
}

static int print_json(const struct check_args *a, const char *format,
		      const struct blk_check_result *r)
{
	json_t *o = json_object();
	char *s;

	if (!o)
		return -ENOMEM;
	put_nonzero(o, "image-end-offset", r->image_end_offset);
	put_nonzero(o, "total-clusters", r->total_clusters);
	json_object_set_new(o, "check-errors", json_integer((json_int_t)r->check_errors));
	put_nonzero(o, "corruptions", r->corruptions);
	put_nonzero(o, "leaks", r->leaks);
	put_nonzero(o, "corruptions-fixed", r->corruptions_fixed);
	put_nonzero(o, "leaks-fixed", r->leaks_fixed);
	put_nonzero(o, "allocated-clusters", r->allocated_clusters);
	put_nonzero(o, "fragmented-clusters", r->fragmented_clusters);
	put_nonzero(o, "compressed-clusters", r->compressed_clusters);
	json_object_set_new(o, "filename", json_string(a->file));
	json_object_set_new(o, "format", json_string(format));
	s = json_dumps(o, JSON_INDENT(4) | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (!s)
		return -ENOMEM;
	printf("%s\n", s);
	free(s);
	return 0;
}

/* Repairs, then checks again: what is reported is the state after the
 * repair, with the counts of what was fixed. */
static int run_check(struct blk *b, const struct check_args *a, struct blk_check_result *res)
{
	struct blk_check_result again = { 0 };
	int ret;

	ret = blk_check(b, a->fix, res);
	if (ret < 0 || !a->fix || (!res->leaks_fixed && !res->corruptions_fixed))
		return ret;
	if (!a->json && !a->quiet)
		printf("The following inconsistencies were found and repaired:\n\n"
		       "    %llu leaked clusters\n    %llu corruptions\n\n"
		       "Double checking the fixed image now...\n",
		       (unsigned long long)res->leaks_fixed,
		       (unsigned long long)res->corruptions_fixed);
	ret = blk_check(b, 0, &again);
	if (ret < 0)
		return ret;
	again.leaks_fixed = res->leaks_fixed;
	again.corruptions_fixed = res->corruptions_fixed;
	blk_check_result_free(res);
	*res = again;
	return 0;
}

int img_check(int argc, char **argv)
{
	struct check_args a = { .cache = BLK_CACHE_WRITEBACK };
	struct blk_check_result res = { 0 };
	struct blk *b;
	unsigned flags;
	int ret, rc;

	ret = parse_args(argc, argv, &a);
	if (ret)
		return ret > 0 ? 0 : 1;
	flags = IMG_OPEN_NO_BACKING | (a.fix ? IMG_OPEN_RW : 0) | (a.share ? IMG_OPEN_SHARE : 0);
	if (img_open(&b, a.file, a.fmt, flags, a.cache) < 0)
		return 1;
	ret = run_check(b, &a, &res);
	if (ret == -ENOTSUP) {
		img_err("%s: format %s has nothing to check", a.file, blk_format(b));
		blk_close(b);
		return CHECK_NOT_SUPPORTED;
	}
	if (ret < 0) {
		img_err("%s: check failed: %s", a.file, strerror(-ret));
		blk_check_result_free(&res);
		blk_close(b);
		return 1;
	}
	/* The driver's findings ("Leaked cluster 10 refcount=1 reference=0")
	 * go to stderr, as qemu-img's do. */
	if (res.report && *res.report) {
		fflush(stdout);
		fputs(res.report, stderr);
		if (res.report[strlen(res.report) - 1] != '\n')
			fputc('\n', stderr);
	}
	if (a.json)
		print_json(&a, blk_format(b), &res);
	else if (!a.quiet)
		print_human(&res);
	if (res.check_errors)
		rc = 1;
	else if (res.corruptions)
		rc = 2;
	else if (res.leaks)
		rc = 3;
	else
		rc = 0;
	blk_check_result_free(&res);
	blk_close(b);
	return rc;
}
