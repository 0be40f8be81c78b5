/* drover-img: the subcommands (one file each) and the helpers they share
 * (common.c): messages, sizes, -o option lists, progress, opening images.
 *
 * Every subcommand is `int img_NAME(int argc, char **argv)` with argv[0] the
 * subcommand's name; it returns the process exit status, qemu-img's codes:
 * 0 success, 1 error (and per command: check 2/3/63, compare 1/2). Nothing
 * calls exit() below main. */
#ifndef DROVER_IMG_H
#define DROVER_IMG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blk.h"

#define IMG_PROG "drover-img"

int img_create(int argc, char **argv);
int img_info(int argc, char **argv);
int img_check(int argc, char **argv);
int img_convert(int argc, char **argv);
int img_resize(int argc, char **argv);
int img_snapshot(int argc, char **argv);
int img_compare(int argc, char **argv);
int img_map(int argc, char **argv);
int img_rebase(int argc, char **argv);
int img_commit(int argc, char **argv);

/* ---- messages: one line on stderr, "drover-img: ..." ---- */
void img_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* An error from the block layer: err as the layer wrote it (it names the
 * file), else "path: strerror(-ret)". */
void img_blk_err(const char *path, const char *err, int ret);
/* err without a leading "path: " (for messages that name the file first). */
const char *img_strip_path(const char *err, const char *path);
/* getopt's complaint for the option at optind, with the subcommand's name;
 * returns 1 (the exit status). */
int img_bad_option(const char *cmd, int opt, char **argv);

/* ---- sizes ---- */
/* qemu-img's size syntax: a number with an optional suffix k, M, G, T, P, E
 * (binary; "b"/"B" means bytes, "KiB"/"KB" allowed), fractions with a
 * suffix ("1.5G"). 0, -EINVAL (not a size) or -ERANGE (above 2^63 - 1). */
int img_parse_size(const char *s, uint64_t *out);
/* "64 MiB", "396 KiB", "2.27 MiB": three significant digits. */
void img_size_str(uint64_t v, char *buf, size_t len);

/* ---- -o option lists: "a=b,c=d" (",," is a comma inside a value) ---- */
struct img_opt {
	char *key;
	char *val;                     /* NULL: "key" without "=" */
};
struct img_opts {
	struct img_opt *v;
	unsigned n;
	bool help;                     /* "help" or "?" appeared */
};
/* Appends the options in s (several -o accumulate); a later key replaces an
 * earlier one. -EINVAL with a message for malformed lists. */
int img_opts_add(struct img_opts *o, const char *s, char *err, size_t errlen);
const char *img_opts_get(const struct img_opts *o, const char *key);
bool img_opts_has(const struct img_opts *o, const char *key);
void img_opts_free(struct img_opts *o);

/* Fills c from the options for format fmt ("raw", "qcow2", ...): size,
 * backing_file, backing_fmt, cluster_size, preallocation, compat,
 * lazy_refcounts, refcount_bits, extended_l2, compression_type. Rejects keys
 * the format does not take and values out of range with a message naming
 * the option. Strings in c point into o. */
int img_create_opts_fill(struct blk_create_opts *c, const struct img_opts *o, const char *fmt,
			 char *err, size_t errlen);
/* Prints the options fmt takes (-o help). */
void img_create_opts_help(const char *fmt);
/* Whether the block layer knows a driver by this name. */
bool img_format_known(const char *fmt);

/* ---- where data is, through the backing chain (map, compare -s) ---- */
struct img_status {
	uint64_t start, len;
	unsigned depth;                /* layer that decides: 0 the top image */
	bool present;                  /* some layer allocates it */
	bool zero;                     /* reads as zeroes */
	bool data;                     /* stored as data (maybe zeroes in a hole) */
	bool has_offset;
	uint64_t offset;               /* where in `filename` (has_offset) */
	const char *filename;          /* node holding the data */
};
/* The run starting at off (at most len long) as qemu-img map reports it. */
int img_chain_status(struct blk *top, uint64_t off, uint64_t len, struct img_status *e);

/* qemu-img's "Snapshot list:" table (info, snapshot -l). */
void img_print_snapshots(const struct blk_snapshot_info *sn, unsigned n);

/* ---- progress: "    (NN.NN/100%)\r" on stdout, like qemu-img -p ---- */
struct img_progress {
	bool on;
	double last;
};
void img_progress_init(struct img_progress *p, bool on);
void img_progress_update(struct img_progress *p, uint64_t done, uint64_t total);
void img_progress_end(struct img_progress *p);

/* ---- opening images ---- */
#define IMG_OPEN_RW          0x1
#define IMG_OPEN_NO_BACKING  0x2
#define IMG_OPEN_SHARE       0x4   /* -U: no image lock */
/* Opens path (fmt NULL: probe); prints the error itself. 0 or -errno. */
int img_open(struct blk **out, const char *path, const char *fmt, unsigned flags,
	     enum blk_cache cache);
/* Validates --output=human|json; prints the error. */
int img_parse_output(const char *s, bool *json);
/* Parses -t/-T; prints the error naming the option. */
int img_parse_cache(const char *s, const char *opt, enum blk_cache *out);
/* Whether every byte of buf is zero. */
bool img_is_zero(const void *buf, size_t len);
/* A buffer aligned for O_DIRECT (cache=none); free() it. NULL on ENOMEM. */
void *img_alloc_buf(size_t len);

#endif
