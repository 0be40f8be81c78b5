/* drover-img info [-f fmt] [--output human|json] [--backing-chain] [-U] FILE
 *
 * The JSON carries qemu-img's names so that scripts written for qemu-img
 * info --output=json read it unchanged; the driver's blk_info() provides the
 * format's fields and this file fills in what every image has. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "blk_int.h"   /* blk_backing_path */
#include "img.h"

static json_t *snapshots_json(struct blk *b)
{
	struct blk_snapshot_info *sn = NULL;
	unsigned n;
	json_t *arr;

	if (blk_snapshot_list(b, &sn, &n) < 0)
		return NULL;
	if (!n) {
		free(sn);
		return NULL;
	}
	arr = json_array();
	for (unsigned i = 0; arr && i < n; i++) {
		json_t *o = json_object();

		if (!o)
			break;
		if (sn[i].icount != UINT64_MAX)
			json_object_set_new(o, "icount", json_integer((json_int_t)sn[i].icount));
		json_object_set_new(o, "vm-clock-nsec",
				    json_integer((json_int_t)(sn[i].vm_clock_nsec % 1000000000ULL)));
		json_object_set_new(o, "name", json_string(sn[i].name));
		json_object_set_new(o, "date-sec", json_integer((json_int_t)sn[i].date_sec));
		json_object_set_new(o, "date-nsec", json_integer((json_int_t)sn[i].date_nsec));
		json_object_set_new(o, "vm-clock-sec",
				    json_integer((json_int_t)(sn[i].vm_clock_nsec / 1000000000ULL)));
		json_object_set_new(o, "id", json_string(sn[i].id));
		json_object_set_new(o, "vm-state-size", json_integer((json_int_t)sn[i].vm_state_size));
		json_array_append_new(arr, o);
	}
	free(sn);
	return arr;
}

static void set_default(json_t *o, const char *key, json_t *val)
{
	if (!val)
		return;
	if (json_object_get(o, key))
		json_decref(val);
	else
		json_object_set_new(o, key, val);
}

/* One image's object, as qemu-img info --output=json prints it. */
static json_t *image_info(struct blk *b, const char *path)
{
	json_t *o = blk_info(b);
	const char *bf;
	int64_t actual = blk_allocated_size(b);
	uint32_t cluster = blk_cluster_size(b);

	if (!o)
		o = json_object();
	if (!o)
		return NULL;
	/* The name the user gave, as qemu-img shows it, not the layer's. */
	json_object_set_new(o, "filename", json_string(path));
	set_default(o, "format", json_string(blk_format(b)));
	set_default(o, "virtual-size", json_integer((json_int_t)blk_size(b)));
	if (actual >= 0)
		set_default(o, "actual-size", json_integer(actual));
	if (cluster)
		set_default(o, "cluster-size", json_integer(cluster));
	set_default(o, "dirty-flag", json_false());
	if (!json_object_get(o, "snapshots"))
		set_default(o, "snapshots", snapshots_json(b));
	if (!json_object_get(o, "backing-filename") && blk_backing(b))
		json_object_set_new(o, "backing-filename", json_string(blk_filename(blk_backing(b))));
	bf = json_string_value(json_object_get(o, "backing-filename"));
	if (bf && !json_object_get(o, "full-backing-filename")) {
		char *full = blk_backing_path(path, bf);

		if (full)
			json_object_set_new(o, "full-backing-filename", json_string(full));
		free(full);
	}
	return o;
}

/* ---- human output ---- */

static void dump_value(const char *key, json_t *v, int indent);

static void dump_key(const char *key, int indent)
{
	printf("%*s", indent, "");
	for (const char *p = key; *p; p++)
		putchar(*p == '-' ? ' ' : *p);
	putchar(':');
}

static void dump_object(json_t *obj, int indent)
{
	const char *key;
	json_t *v;

	json_object_foreach(obj, key, v)
		dump_value(key, v, indent);
}

static void dump_value(const char *key, json_t *v, int indent)
{
	dump_key(key, indent);
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		putchar('\n');
		dump_object(v, indent + 4);
		break;
	case JSON_ARRAY: {
		size_t i;
		json_t *e;

		putchar('\n');
		json_array_foreach(v, i, e) {
			char idx[32];

			snprintf(idx, sizeof(idx), "[%zu]", i);
			dump_value(idx, e, indent + 4);
		}
		break;
	}
	case JSON_STRING:
		printf(" %s\n", json_string_value(v));
		break;
	case JSON_INTEGER:
		printf(" %lld\n", (long long)json_integer_value(v));
		break;
	case JSON_REAL:
		printf(" %g\n", json_real_value(v));
		break;
	case JSON_TRUE:
		printf(" true\n");
		break;
	case JSON_FALSE:
		printf(" false\n");
		break;
	case JSON_NULL:
		printf(" null\n");
		break;
	}
}

static void print_snapshot_table(json_t *arr)
{
	size_t n = json_array_size(arr), i;
	struct blk_snapshot_info *sn = calloc(n ? n : 1, sizeof(*sn));
	json_t *e;

	if (!sn)
		return;
	json_array_foreach(arr, i, e) {
		json_t *ic = json_object_get(e, "icount");

		snprintf(sn[i].id, sizeof(sn[i].id), "%s",
			 json_string_value(json_object_get(e, "id")) ?: "");
		snprintf(sn[i].name, sizeof(sn[i].name), "%s",
			 json_string_value(json_object_get(e, "name")) ?: "");
		sn[i].vm_state_size = (uint64_t)json_integer_value(json_object_get(e, "vm-state-size"));
		sn[i].date_sec = (uint64_t)json_integer_value(json_object_get(e, "date-sec"));
		sn[i].vm_clock_nsec =
			(uint64_t)json_integer_value(json_object_get(e, "vm-clock-sec")) * 1000000000ULL +
			(uint64_t)json_integer_value(json_object_get(e, "vm-clock-nsec"));
		sn[i].icount = ic ? (uint64_t)json_integer_value(ic) : UINT64_MAX;
	}
	img_print_snapshots(sn, (unsigned)n);
	free(sn);
}

static void print_human(json_t *o)
{
	json_t *v, *fs;
	const char *bf, *full;
	char size[32];

	printf("image: %s\n", json_string_value(json_object_get(o, "filename")));
	printf("file format: %s\n", json_string_value(json_object_get(o, "format")));
	img_size_str((uint64_t)json_integer_value(json_object_get(o, "virtual-size")), size,
		     sizeof(size));
	printf("virtual size: %s (%lld bytes)\n", size,
	       (long long)json_integer_value(json_object_get(o, "virtual-size")));
	v = json_object_get(o, "actual-size");
	if (v) {
		img_size_str((uint64_t)json_integer_value(v), size, sizeof(size));
		printf("disk size: %s\n", size);
	} else {
		printf("disk size: unavailable\n");
	}
	if ((v = json_object_get(o, "cluster-size")))
		printf("cluster_size: %lld\n", (long long)json_integer_value(v));
	if (json_is_true(json_object_get(o, "encrypted")))
		printf("encrypted: yes\n");
	if (json_is_true(json_object_get(o, "dirty-flag")))
		printf("cleanly shut down: no\n");
	bf = json_string_value(json_object_get(o, "backing-filename"));
	full = json_string_value(json_object_get(o, "full-backing-filename"));
	if (bf) {
		if (full && strcmp(full, bf))
			printf("backing file: %s (actual path: %s)\n", bf, full);
		else
			printf("backing file: %s\n", bf);
	}
	if ((v = json_object_get(o, "backing-filename-format")))
		printf("backing file format: %s\n", json_string_value(v));
	if ((v = json_object_get(o, "snapshots")) && json_array_size(v))
		print_snapshot_table(v);
	fs = json_object_get(o, "format-specific");
	if (fs && (v = json_object_get(fs, "data")) && json_object_size(v)) {
		printf("Format specific information:\n");
		dump_object(v, 4);
	}
}

/* ---- the chain ---- */

struct info_args {
	const char *fmt, *file;
	bool json, chain, share;
};

static int parse_args(int argc, char **argv, struct info_args *a)
{
	enum { OPT_OUTPUT = 256, OPT_CHAIN };
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "backing-chain", no_argument, NULL, OPT_CHAIN },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":f:hU", longopts, NULL)) != -1) {
		switch (c) {
		case 'f': a->fmt = optarg; break;
		case 'U': a->share = true; break;
		case OPT_CHAIN: a->chain = true; break;
		case OPT_OUTPUT:
			if (img_parse_output(optarg, &a->json) < 0)
				return -EINVAL;
			break;
		case 'h':
			printf("usage: " IMG_PROG " info [-f fmt] [--output=ofmt] [--backing-chain] "
			       "[-U] filename\n");
			return 1;
		default:
			img_bad_option("info", c, argv);
			return -EINVAL;
		}
	}
	if (optind != argc - 1) {
		img_err(optind >= argc ? "info: no file name given"
				       : "info: expects one file name, got more");
		return -EINVAL;
	}
	a->file = argv[optind];
	return 0;
}

struct seen {
	dev_t dev;
	ino_t ino;
};

int img_info(int argc, char **argv)
{
	struct info_args a = { 0 };
	json_t *list = NULL;
	struct seen *seen = NULL;
	unsigned nseen = 0;
	char *path = NULL;
	const char *fmt;
	int ret, rc = 1;

	ret = parse_args(argc, argv, &a);
	if (ret)
		return ret > 0 ? 0 : 1;
	list = json_array();
	path = strdup(a.file);
	if (!list || !path)
		goto out;
	fmt = a.fmt;
	/* Each image is opened alone (no backing chain), so info works on an
	 * image whose backing file is missing; --backing-chain then follows
	 * the names recorded in each image. */
	for (;;) {
		unsigned flags = IMG_OPEN_NO_BACKING | (a.share ? IMG_OPEN_SHARE : 0);
		struct blk *b;
		struct stat st;
		struct seen *ns;
		json_t *o, *next_fmt;
		const char *next;

		if (stat(path, &st) == 0) {
			for (unsigned i = 0; i < nseen; i++) {
				if (seen[i].dev == st.st_dev && seen[i].ino == st.st_ino) {
					img_err("%s: backing file loop: '%s' appears twice in the chain",
						a.file, path);
					goto out;
				}
			}
			ns = realloc(seen, (nseen + 1) * sizeof(*seen));
			if (!ns)
				goto out;
			seen = ns;
			seen[nseen++] = (struct seen){ st.st_dev, st.st_ino };
		}
		if (img_open(&b, path, fmt, flags, BLK_CACHE_WRITEBACK) < 0)
			goto out;
		o = image_info(b, path);
		blk_close(b);
		if (!o)
			goto out;
		json_array_append_new(list, o);
		if (!a.chain)
			break;
		next = json_string_value(json_object_get(o, "full-backing-filename"));
		if (!next)
			break;
		next_fmt = json_object_get(o, "backing-filename-format");
		free(path);
		path = strdup(next);
		if (!path)
			goto out;
		fmt = json_string_value(next_fmt);
	}
	if (a.json) {
		json_t *out = a.chain ? list : json_array_get(list, 0);
		char *s = json_dumps(out, JSON_INDENT(4) | JSON_PRESERVE_ORDER);

		if (!s)
			goto out;
		printf("%s\n", s);
		free(s);
	} else {
		size_t i;
		json_t *o;

		json_array_foreach(list, i, o) {
			if (i)
				printf("\n");
			print_human(o);
		}
	}
	rc = 0;
out:
	fflush(stdout);
	free(seen);
	free(path);
	json_decref(list);
	return rc;
}
