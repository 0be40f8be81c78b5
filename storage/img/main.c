/* drover-img: qemu-img's subcommands over drover's block layer.
 *
 * Subcommands are matched by their exact name (no abbreviations: a new
 * subcommand must never change what an old abbreviation meant). */
#include <stdio.h>
#include <string.h>

#include "img.h"
#include "util.h"

struct img_cmd {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *usage;
};

static const struct img_cmd img_cmds[] = {
	{ "check", img_check, "check [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] [-T src_cache] [-U] filename" },
	{ "commit", img_commit, "commit [-q] [-f fmt] [-t cache] [-b base] [-d] [-p] filename" },
	{ "compare", img_compare, "compare [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] filename1 filename2" },
	{ "convert", img_convert, "convert [-U] [-c] [-p] [-q] [-n] [-W] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] [-B backing_file [-F backing_fmt]] [-o options] [-S sparse_size] [-m num_workers] filename [filename2 [...]] output_filename" },
	{ "create", img_create, "create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]" },
	{ "info", img_info, "info [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename" },
	{ "map", img_map, "map [-f fmt] [--output=ofmt] [-U] filename" },
	{ "rebase", img_rebase, "rebase [-U] [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u] -b backing_file [-F backing_fmt] filename" },
	{ "resize", img_resize, "resize [-f fmt] [--preallocation=prealloc] [-q] [--shrink] filename [+ | -]size" },
	{ "snapshot", img_snapshot, "snapshot [-U] [-q] [-l | -a snapshot | -c snapshot | -d snapshot] filename" },
};

static void usage(void)
{
	printf("usage: " IMG_PROG " [-h | -V] command [command options]\n"
	       "drover disk image utility (qemu-img's commands, options and exit codes)\n\n"
	       "Command syntax:\n");
	for (unsigned i = 0; i < ARRAY_SIZE(img_cmds); i++)
		printf("  %s\n", img_cmds[i].usage);
	printf("\n'fmt' is raw or qcow2 (probed when not given); 'size' takes the suffixes\n"
	       "k, M, G, T, P, E (binary); '-o help' lists a format's creation options;\n"
	       "'cache' is none, writeback, writethrough, directsync or unsafe.\n");
}

int main(int argc, char **argv)
{
	const char *name;

	if (argc < 2) {
		img_err("no command given (try '" IMG_PROG " --help')");
		return 1;
	}
	name = argv[1];
	if (!strcmp(name, "-h") || !strcmp(name, "--help") || !strcmp(name, "help")) {
		usage();
		return 0;
	}
	if (!strcmp(name, "-V") || !strcmp(name, "--version")) {
		printf(IMG_PROG " version " DROVER_VERSION "\n");
		return 0;
	}
	for (unsigned i = 0; i < ARRAY_SIZE(img_cmds); i++)
		if (!strcmp(name, img_cmds[i].name))
			return img_cmds[i].run(argc - 1, argv + 1);
	img_err("unknown command '%s' (try '" IMG_PROG " --help')", name);
	return 1;
}
