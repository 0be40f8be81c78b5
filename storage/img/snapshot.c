/* drover-img snapshot [-U] [-q] [-l | -c NAME | -a NAME | -d NAME] FILE */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img.h"

enum snap_action { SNAP_NONE, SNAP_LIST, SNAP_CREATE, SNAP_APPLY, SNAP_DELETE };

struct snap_args {
	enum snap_action action;
	const char *name, *file;
	bool share, quiet;
};

static int parse_args(int argc, char **argv, struct snap_args *a)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":la:c:d:qUh", longopts, NULL)) != -1) {
		enum snap_action act = SNAP_NONE;

		switch (c) {
		case 'l': act = SNAP_LIST; break;
		case 'c': act = SNAP_CREATE; break;
		case 'a': act = SNAP_APPLY; break;
		case 'd': act = SNAP_DELETE; break;
		case 'q': a->quiet = true; break;
		case 'U': a->share = true; break;
		case 'h':
			printf("usage: " IMG_PROG " snapshot [-U] [-q] [-l | -a snapshot | "
			       "-c snapshot | -d snapshot] filename\n");
			return 1;
		default:
			img_bad_option("snapshot", c, argv);
			return -EINVAL;
		}
		if (act == SNAP_NONE)
			continue;
		if (a->action != SNAP_NONE) {
			img_err("snapshot: give one of -l, -a, -c, -d");
			return -EINVAL;
		}
		a->action = act;
		if (act != SNAP_LIST) {
			if (!*optarg) {
				img_err("snapshot: -%c needs a snapshot name, got ''", c);
				return -EINVAL;
			}
			a->name = optarg;
		}
	}
	if (optind != argc - 1) {
		img_err(optind >= argc ? "snapshot: no file name given"
				       : "snapshot: expects one file name, got more");
		return -EINVAL;
	}
	if (a->action == SNAP_NONE)
		a->action = SNAP_LIST;
	if (a->share && a->action != SNAP_LIST) {
		img_err("snapshot: -U only goes with -l (changes need the image lock)");
		return -EINVAL;
	}
	a->file = argv[optind];
	return 0;
}

static int list(struct blk *b, const struct snap_args *a)
{
	struct blk_snapshot_info *sn = NULL;
	unsigned n = 0;
	int ret = blk_snapshot_list(b, &sn, &n);

	/* A format without internal snapshots simply has none to list. */
	if (ret == -ENOTSUP)
		return 0;
	if (ret < 0) {
		img_err("%s: could not list snapshots: %s", a->file, strerror(-ret));
		return ret;
	}
	if (n)
		img_print_snapshots(sn, n);
	free(sn);
	return 0;
}

int img_snapshot(int argc, char **argv)
{
	static const char *const verb[] = {
		[SNAP_CREATE] = "create", [SNAP_APPLY] = "apply", [SNAP_DELETE] = "delete",
	};
	struct snap_args a = { 0 };
	char err[512] = "";
	struct blk *b;
	unsigned flags = IMG_OPEN_NO_BACKING;
	int ret;

	ret = parse_args(argc, argv, &a);
	if (ret)
		return ret > 0 ? 0 : 1;
	if (a.action != SNAP_LIST)
		flags |= IMG_OPEN_RW;
	else if (a.share)
		flags |= IMG_OPEN_SHARE;
	if (img_open(&b, a.file, NULL, flags, BLK_CACHE_WRITEBACK) < 0)
		return 1;
	switch (a.action) {
	case SNAP_CREATE:
		ret = blk_snapshot_create(b, a.name, err, sizeof(err));
		break;
	case SNAP_APPLY:
		ret = blk_snapshot_apply(b, a.name, err, sizeof(err));
		break;
	case SNAP_DELETE:
		ret = blk_snapshot_delete(b, a.name, err, sizeof(err));
		break;
	default:
		ret = list(b, &a);
		blk_close(b);
		return ret < 0 ? 1 : 0;
	}
	if (ret == -ENOTSUP && !*err)
		img_err("%s: could not %s snapshot '%s': format %s has no internal snapshots",
			a.file, verb[a.action], a.name, blk_format(b));
	else if (ret < 0 && *err)
		img_err("%s: could not %s snapshot '%s': %s", a.file, verb[a.action], a.name,
			img_strip_path(err, a.file));
	else if (ret < 0)
		img_err("%s: could not %s snapshot '%s': %s", a.file, verb[a.action], a.name,
			strerror(-ret));
	if (ret == 0) {
		ret = blk_flush(b);
		if (ret < 0)
			img_err("%s: flush failed: %s", a.file, strerror(-ret));
	}
	blk_close(b);
	return ret < 0 ? 1 : 0;
}
