/* The block layer's core: opening chains of nodes, and the synchronous
 * verbs every caller goes through before a driver sees a request.
 *
 * Invariants the wrappers keep for drivers (blk_int.h):
 *  (1) a format node's requests lie inside its size; a protocol node takes
 *      any offset (format drivers grow their file by writing past its end)
 *      and its size follows the furthest successful write;
 *  (2) nothing that changes data reaches a read-only node (-EROFS);
 *  (3) cache=unsafe never reaches a driver's flush nor asks for FUA;
 *      writethrough and directsync ask for FUA on every write and flush
 *      after write_zeroes, so each completes durable;
 *  (4) a node is opened as: protocol node, loop check, format probe,
 *      format open (which opens its backing chain below it); blk_close
 *      undoes that in reverse. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blk_int.h"
#include "log.h"
#include "util.h"

#define PROBE_BYTES 512
#define ZERO_CHUNK (1 * MiB)

/* ---- names ---- */

static const char *const cache_names[] = {
	[BLK_CACHE_WRITEBACK] = "writeback",
	[BLK_CACHE_NONE] = "none",
	[BLK_CACHE_WRITETHROUGH] = "writethrough",
	[BLK_CACHE_DIRECTSYNC] = "directsync",
	[BLK_CACHE_UNSAFE] = "unsafe",
};

static const char *const prealloc_names[] = {
	[BLK_PREALLOC_OFF] = "off",
	[BLK_PREALLOC_METADATA] = "metadata",
	[BLK_PREALLOC_FALLOC] = "falloc",
	[BLK_PREALLOC_FULL] = "full",
};

static int name_index(const char *const *names, size_t n, const char *s)
{
	for (size_t i = 0; s && i < n; i++)
		if (strcmp(names[i], s) == 0)
			return (int)i;
	return -EINVAL;
}

int blk_cache_parse(const char *s, enum blk_cache *out)
{
	int i = name_index(cache_names, ARRAY_SIZE(cache_names), s);

	if (i < 0)
		return i;
	*out = (enum blk_cache)i;
	return 0;
}

const char *blk_cache_name(enum blk_cache c)
{
	return (unsigned)c < ARRAY_SIZE(cache_names) ? cache_names[c] : "?";
}

int blk_prealloc_parse(const char *s, enum blk_prealloc *out)
{
	int i = name_index(prealloc_names, ARRAY_SIZE(prealloc_names), s);

	if (i < 0)
		return i;
	*out = (enum blk_prealloc)i;
	return 0;
}

const char *blk_prealloc_name(enum blk_prealloc p)
{
	return (unsigned)p < ARRAY_SIZE(prealloc_names) ? prealloc_names[p] : "?";
}

/* ---- what a node is ---- */

uint64_t blk_size(const struct blk *b)
{
	return __atomic_load_n(&b->size, __ATOMIC_RELAXED);
}

/* Protocol nodes grow with the writes past their end, from several
 * threads at once. */
void blk_size_grow(struct blk *b, uint64_t end)
{
	uint64_t cur = blk_size(b);

	while (cur < end &&
	       !__atomic_compare_exchange_n(&b->size, &cur, end, true, __ATOMIC_RELAXED,
					    __ATOMIC_RELAXED))
		;
}

const char *blk_filename(const struct blk *b) { return b->filename; }
const char *blk_format(const struct blk *b) { return b->drv->name; }
bool blk_readonly(const struct blk *b) { return b->readonly; }
enum blk_cache blk_cache_mode(const struct blk *b) { return b->cache; }
struct blk *blk_file(const struct blk *b) { return b->file; }
struct blk *blk_backing(const struct blk *b) { return b->backing; }

uint32_t blk_request_alignment(const struct blk *b)
{
	return b->request_alignment ? b->request_alignment : 1;
}

bool blk_can_discard(const struct blk *b)
{
	if (!b->drv->discard)
		return false;
	return b->file ? blk_can_discard(b->file) : true;
}

uint32_t blk_cluster_size(const struct blk *b)
{
	return b->drv->cluster_size ? b->drv->cluster_size(b) : 0;
}

size_t blk_iov_size(const struct iovec *iov, int iovcnt)
{
	size_t n = 0;

	for (int i = 0; i < iovcnt; i++)
		n += iov[i].iov_len;
	return n;
}

static bool cache_writethrough(enum blk_cache c)
{
	return c == BLK_CACHE_WRITETHROUGH || c == BLK_CACHE_DIRECTSYNC;
}

/* ---- opening and closing ---- */

static struct blk *node_new(const struct blk_driver *drv, const char *filename,
			    const struct blk_open_opts *o, struct blk *overlay)
{
	struct blk *b = calloc(1, sizeof(*b));

	if (!b)
		return NULL;
	b->filename = strdup(filename);
	if (!b->filename) {
		free(b);
		return NULL;
	}
	b->drv = drv;
	b->readonly = o->readonly;
	b->cache = o->cache;
	b->force_share = o->force_share;
	b->overlay = overlay;
	b->chain_depth = overlay ? overlay->chain_depth + 1 : 0;
	b->request_alignment = 1;
	return b;
}

static void node_free(struct blk *b)
{
	free(b->filename);
	free(b->backing_name);
	free(b->backing_fmt);
	free(b);
}

void blk_close(struct blk *b)
{
	if (!b)
		return;
	if (b->drv->close)
		b->drv->close(b);
	blk_close(b->file);
	blk_close(b->backing);
	if (b->delete_on_close && unlink(b->filename) < 0 && errno != ENOENT)
		log_warn("%s: removing the temporary overlay: %s", b->filename, strerror(errno));
	node_free(b);
}

/* The new protocol node must not be any image above it in the chain. */
static int check_loop(const char *path, dev_t dev, ino_t ino, const struct blk *overlay,
		      char *err, size_t errlen)
{
	if (!dev && !ino)
		return 0;
	for (const struct blk *p = overlay; p; p = p->overlay) {
		if (p->dev == dev && p->ino == ino) {
			errf(err, errlen, "%s: backing chain loop: the file is already in the "
				"chain as %s", path, p->filename);
			return -ELOOP;
		}
	}
	return 0;
}

/* Before opening, where the name is a local file: a loop is reported as
 * one, not as the lock its own chain holds. */
static int check_loop_by_name(const char *path, const struct blk *overlay, char *err,
			      size_t errlen)
{
	struct stat st;

	if (!overlay || stat(path, &st) < 0)
		return 0;
	return check_loop(path, st.st_dev, st.st_ino, overlay, err, errlen);
}

static int probe_format(struct blk *file, const struct blk_driver **out, char *err,
			size_t errlen)
{
	uint8_t buf[PROBE_BYTES];
	const struct blk_driver *d, *best = NULL;
	int best_score = -1;
	int r;

	r = blk_pread(file, 0, buf, sizeof(buf));
	if (r < 0) {
		errf(err, errlen, "%s: reading its first sector to find the format: %s",
			file->filename, strerror(-r));
		return r;
	}
	for (size_t i = 0; (d = blk_driver_nth(i)); i++) {
		int score;

		if (d->protocol || !d->probe)
			continue;
		score = d->probe(buf, sizeof(buf));
		if (score > best_score) {
			best_score = score;
			best = d;
		}
	}
	if (!best || best_score <= 0) {
		errf(err, errlen, "%s: could not tell the image format", file->filename);
		return -EINVAL;
	}
	*out = best;
	return 0;
}

static int open_node(struct blk **out, const char *path, const struct blk_open_opts *o,
		     struct blk *overlay, char *err, size_t errlen)
{
	const struct blk_driver *fmt = NULL;
	struct blk *file, *node;
	int r;

	if (o->format) {
		fmt = blk_driver_by_name(o->format);
		if (!fmt) {
			errf(err, errlen, "%s: unknown format '%s'", path, o->format);
			return -EINVAL;
		}
	}
	r = check_loop_by_name(path, overlay, err, errlen);
	if (r < 0)
		return r;
	file = node_new(blk_protocol_for(path), path, o, overlay);
	if (!file)
		goto err_nomem;
	r = file->drv->open(file, o, err, errlen);
	if (r < 0) {
		node_free(file);
		return r;
	}
	r = check_loop(path, file->dev, file->ino, overlay, err, errlen);
	if (r < 0)
		goto err_file;
	if (fmt && fmt->protocol) {
		if (fmt != file->drv) {
			errf(err, errlen, "%s: protocol '%s' does not serve this name", path,
				fmt->name);
			r = -EINVAL;
			goto err_file;
		}
		*out = file;
		return 0;
	}
	if (!fmt) {
		r = probe_format(file, &fmt, err, errlen);
		if (r < 0)
			goto err_file;
	}
	node = node_new(fmt, path, o, overlay);
	if (!node) {
		r = -ENOMEM;
		errf(err, errlen, "%s: out of memory", path);
		goto err_file;
	}
	node->file = file;
	node->dev = file->dev;
	node->ino = file->ino;
	node->size = blk_size(file);
	node->request_alignment = blk_request_alignment(file);
	if (!o->format && fmt == &blk_driver_raw && !o->readonly) {
		node->probed_raw = true;
		log_warn("%s: no format given and the contents look like raw; writes that would "
			 "make its first %d bytes look like another format will fail (give the "
			 "format raw to lift this)", path, PROBE_BYTES);
	}
	r = fmt->open(node, o, err, errlen);
	if (r < 0) {
		node_free(node);
		goto err_file;
	}
	if (!node->request_alignment)
		node->request_alignment = 1;
	*out = node;
	return 0;

err_file:
	blk_close(file);
	return r;
err_nomem:
	errf(err, errlen, "%s: out of memory", path);
	return -ENOMEM;
}

static char *snapshot_template(void)
{
	const char *dir = getenv("TMPDIR");
	char *t;

	if (!dir || !*dir)
		dir = "/var/tmp";
	if (asprintf(&t, "%s/drover-snapshot-XXXXXX", dir) < 0)
		return NULL;
	return t;
}

/* snapshot=on: a temporary qcow2 whose backing is the image, opened in its
 * place and removed at close. */
static int open_snapshot(struct blk **out, const char *path, const struct blk_open_opts *o,
			 char *err, size_t errlen)
{
	struct blk_open_opts ro = *o, ov = *o;
	struct blk_create_opts c = { .format = "qcow2" };
	struct blk *img;
	char *abs = NULL, *tmp = NULL;
	int fd, r;

	if (!blk_driver_by_name("qcow2")) {
		errf(err, errlen, "%s: snapshot=on needs the qcow2 driver, which this build "
			"lacks", path);
		return -ENOTSUP;
	}
	ro.readonly = true;
	ro.snapshot = false;
	r = open_node(&img, path, &ro, NULL, err, errlen);
	if (r < 0)
		return r;
	c.size = blk_size(img);
	c.backing_format = blk_format(img);
	abs = realpath(path, NULL);
	tmp = snapshot_template();
	r = -ENOMEM;
	if (!abs || !tmp) {
		r = abs ? -ENOMEM : -errno;
		errf(err, errlen, "%s: %s", path, strerror(-r));
		goto err_img;
	}
	c.backing_file = abs;
	fd = mkstemp(tmp);
	if (fd < 0) {
		r = -errno;
		errf(err, errlen, "%s: creating the snapshot overlay: %s", tmp, strerror(-r));
		goto err_img;
	}
	close(fd);
	r = blk_create(tmp, &c, err, errlen);
	blk_close(img);
	img = NULL;
	if (r < 0)
		goto err_tmp;
	ov.format = "qcow2";
	ov.snapshot = false;
	r = open_node(out, tmp, &ov, NULL, err, errlen);
	if (r < 0)
		goto err_tmp;
	(*out)->delete_on_close = true;
	free(abs);
	free(tmp);
	return 0;

err_tmp:
	unlink(tmp);
err_img:
	blk_close(img);
	free(abs);
	free(tmp);
	return r;
}

int blk_open(struct blk **out, const char *path, const struct blk_open_opts *o, char *err,
	     size_t errlen)
{
	static const struct blk_open_opts defaults;

	if (!o)
		o = &defaults;
	if (!path || !*path) {
		errf(err, errlen, "no image file name given");
		return -EINVAL;
	}
	if (o->snapshot && !o->readonly)
		return open_snapshot(out, path, o, err, errlen);
	return open_node(out, path, o, NULL, err, errlen);
}

char *blk_backing_path(const char *image, const char *backing)
{
	const char *slash;
	char *p;

	if (!backing)
		return NULL;
	slash = image ? strrchr(image, '/') : NULL;
	if (backing[0] == '/' || strstr(backing, "://") || !slash)
		return strdup(backing);
	if (asprintf(&p, "%.*s/%s", (int)(slash - image), image, backing) < 0)
		return NULL;
	return p;
}

int blk_set_backing_name(struct blk *b, const char *name, const char *fmt)
{
	char *n = name ? strdup(name) : NULL;
	char *f = fmt ? strdup(fmt) : NULL;

	if ((name && !n) || (fmt && !f)) {
		free(n);
		free(f);
		return -ENOMEM;
	}
	free(b->backing_name);
	free(b->backing_fmt);
	b->backing_name = n;
	b->backing_fmt = f;
	return 0;
}

int blk_open_backing(struct blk *of, const char *name, const char *fmt, struct blk **out,
		     char *err, size_t errlen)
{
	struct blk_open_opts o = {
		.format = fmt,
		.cache = of->cache,
		.readonly = true,
		.force_share = of->force_share,
	};
	char *path;
	int r;

	if (!name || !*name) {
		errf(err, errlen, "%s: empty backing file name", of->filename);
		return -EINVAL;
	}
	if (of->chain_depth + 1 > BLK_MAX_CHAIN) {
		errf(err, errlen, "%s: backing chain deeper than %d images", of->filename,
			BLK_MAX_CHAIN);
		return -ELOOP;
	}
	r = blk_set_backing_name(of, name, fmt);
	path = blk_backing_path(of->filename, name);
	if (r < 0 || !path) {
		free(path);
		errf(err, errlen, "%s: out of memory", of->filename);
		return -ENOMEM;
	}
	r = open_node(out, path, &o, of, err, errlen);
	free(path);
	return r;
}

/* ---- synchronous verbs ---- */

/* Invariant (1): format nodes are bounded; protocol nodes are not. */
static int check_range(const struct blk *b, uint64_t off, uint64_t len)
{
	if (off > INT64_MAX || len > INT64_MAX - off)
		return -EINVAL;
	if (!b->drv->protocol && off + len > blk_size(b))
		return -EINVAL;
	return 0;
}

static int check_iov(const struct iovec *iov, int iovcnt)
{
	return iovcnt < 0 || (iovcnt > 0 && !iov) ? -EINVAL : 0;
}

int blk_preadv(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt)
{
	size_t len;
	int r;

	r = check_iov(iov, iovcnt);
	if (r < 0)
		return r;
	len = blk_iov_size(iov, iovcnt);
	r = check_range(b, off, len);
	if (r < 0)
		return r;
	if (!len)
		return 0;
	if (!b->drv->preadv)
		return -ENOTSUP;
	return b->drv->preadv(b, off, iov, iovcnt);
}

int blk_pread(struct blk *b, uint64_t off, void *buf, size_t len)
{
	struct iovec v = { .iov_base = buf, .iov_len = len };

	return blk_preadv(b, off, &v, 1);
}

/* A probed raw image must keep probing as raw: otherwise a guest could
 * write a qcow2 header into it and have the next open read the host's
 * files as its backing. */
static int check_block0(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt)
{
	uint8_t head[PROBE_BYTES] = { 0 };
	uint64_t have = blk_size(b) < PROBE_BYTES ? blk_size(b) : PROBE_BYTES;
	const struct blk_driver *d;
	size_t pos = off;
	int r;

	if (have) {
		r = b->drv->preadv(b, 0, &(struct iovec){ head, have }, 1);
		if (r < 0)
			return r;
	}
	for (int i = 0; i < iovcnt && pos < PROBE_BYTES; i++) {
		size_t n = iov[i].iov_len;

		if (n > PROBE_BYTES - pos)
			n = PROBE_BYTES - pos;
		memcpy(head + pos, iov[i].iov_base, n);
		pos += iov[i].iov_len;
	}
	for (size_t i = 0; (d = blk_driver_nth(i)); i++) {
		if (d->protocol || !d->probe || d == &blk_driver_raw)
			continue;
		if (d->probe(head, sizeof(head)) > blk_driver_raw.probe(head, sizeof(head))) {
			log_warn("%s: refused a write that would make the probed raw image look "
				 "like %s", b->filename, d->name);
			return -EPERM;
		}
	}
	return 0;
}

/* Invariant (3) for writes. */
static unsigned write_flags(const struct blk *b, unsigned flags)
{
	if (b->cache == BLK_CACHE_UNSAFE)
		return flags & ~BLK_WRITE_FUA;
	if (cache_writethrough(b->cache))
		return flags | BLK_WRITE_FUA;
	return flags;
}

int blk_pwritev(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
		unsigned flags)
{
	size_t len;
	int r;

	if (b->readonly)
		return -EROFS;
	r = check_iov(iov, iovcnt);
	if (r < 0)
		return r;
	len = blk_iov_size(iov, iovcnt);
	r = check_range(b, off, len);
	if (r < 0)
		return r;
	if (!len)
		return 0;
	if (!b->drv->pwritev)
		return -ENOTSUP;
	if (b->probed_raw && off < PROBE_BYTES) {
		r = check_block0(b, off, iov, iovcnt);
		if (r < 0)
			return r;
	}
	r = b->drv->pwritev(b, off, iov, iovcnt, write_flags(b, flags));
	if (r == 0 && b->drv->protocol)
		blk_size_grow(b, off + len);
	return r;
}

int blk_pwrite(struct blk *b, uint64_t off, const void *buf, size_t len, unsigned flags)
{
	struct iovec v = { .iov_base = (void *)buf, .iov_len = len };

	return blk_pwritev(b, off, &v, 1, flags);
}

int blk_flush(struct blk *b)
{
	int r = 0;

	if (b->readonly || b->cache == BLK_CACHE_UNSAFE)
		return 0;
	if (b->drv->flush)
		r = b->drv->flush(b);
	if (r == 0 && b->file)
		r = blk_flush(b->file);
	return r;
}

int blk_discard(struct blk *b, uint64_t off, uint64_t len)
{
	int r;

	if (b->readonly)
		return -EROFS;
	r = check_range(b, off, len);
	if (r < 0 || !len || !b->drv->discard)
		return r;
	return b->drv->discard(b, off, len);
}

static int write_zero_buffer(struct blk *b, uint64_t off, uint64_t len, unsigned flags)
{
	uint64_t chunk = len < ZERO_CHUNK ? len : ZERO_CHUNK;
	void *zero = calloc(1, chunk);
	int r = 0;

	if (!zero)
		return -ENOMEM;
	while (len && r == 0) {
		struct iovec v = { zero, len < chunk ? len : chunk };

		r = b->drv->pwritev(b, off, &v, 1, flags);
		off += v.iov_len;
		len -= v.iov_len;
	}
	free(zero);
	return r;
}

int blk_write_zeroes(struct blk *b, uint64_t off, uint64_t len, unsigned flags)
{
	int r;

	if (b->readonly)
		return -EROFS;
	r = check_range(b, off, len);
	if (r < 0 || !len)
		return r;
	if (b->drv->write_zeroes)
		r = b->drv->write_zeroes(b, off, len, flags);
	else if (b->drv->pwritev)
		r = write_zero_buffer(b, off, len, flags & ~BLK_ZERO_MAY_UNMAP);
	else
		r = -ENOTSUP;
	if (r == 0 && b->drv->protocol)
		blk_size_grow(b, off + len);
	if (r == 0 && cache_writethrough(b->cache))
		r = blk_flush(b);
	return r;
}

int blk_block_status(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum,
		     unsigned *status, uint64_t *map, struct blk **map_node)
{
	int r;

	if (!len || off > INT64_MAX || len > INT64_MAX - off)
		return -EINVAL;
	if (!b->drv->protocol) {
		if (off >= blk_size(b))
			return -EINVAL;
		if (len > blk_size(b) - off)
			len = blk_size(b) - off;
	}
	if (map)
		*map = 0;
	if (map_node)
		*map_node = NULL;
	if (!b->drv->block_status) {
		*pnum = len;
		*status = BLK_STATUS_DATA | BLK_STATUS_ALLOCATED;
		return 0;
	}
	r = b->drv->block_status(b, off, len, pnum, status, map, map_node);
	if (r < 0)
		return r;
	if (*pnum == 0)
		return -EIO;
	if (*pnum > len)
		*pnum = len;
	if (b->drv->protocol)
		*status |= BLK_STATUS_ALLOCATED;
	return 0;
}

int blk_block_status_above(struct blk *b, struct blk *base, uint64_t off, uint64_t len,
			   uint64_t *pnum, unsigned *status, int *depth)
{
	struct blk *p;
	int d = 0;

	if (!len || off >= blk_size(b))
		return -EINVAL;
	if (len > blk_size(b) - off)
		len = blk_size(b) - off;
	for (p = b; p && p != base; p = p->backing, d++) {
		uint64_t n;
		unsigned st;
		int r;

		if (off >= blk_size(p))
			break;      /* a shorter backing file reads as zeroes past its end */
		r = blk_block_status(p, off, len, &n, &st, NULL, NULL);
		if (r < 0)
			return r;
		if (st & BLK_STATUS_ALLOCATED) {
			*pnum = n;
			*status = st;
			if (depth)
				*depth = d;
			return 0;
		}
		len = n;
	}
	*pnum = len;
	*status = p && p == base ? 0 : BLK_STATUS_ZERO;
	if (depth)
		*depth = d;
	return 0;
}

int blk_truncate(struct blk *b, uint64_t size, enum blk_prealloc prealloc, char *err,
		 size_t errlen)
{
	int r;

	if (b->readonly) {
		errf(err, errlen, "%s: image is read-only", b->filename);
		return -EROFS;
	}
	if (size > INT64_MAX) {
		errf(err, errlen, "%s: size %llu too large", b->filename,
			(unsigned long long)size);
		return -EINVAL;
	}
	if (!b->drv->truncate) {
		errf(err, errlen, "%s: format %s cannot be resized", b->filename,
			b->drv->name);
		return -ENOTSUP;
	}
	r = b->drv->truncate(b, size, prealloc, err, errlen);
	if (r == 0)
		__atomic_store_n(&b->size, size, __ATOMIC_RELAXED);
	return r;
}

int blk_pwrite_compressed(struct blk *b, uint64_t off, const void *buf, size_t len)
{
	uint32_t cs = blk_cluster_size(b);
	int r;

	if (b->readonly)
		return -EROFS;
	r = check_range(b, off, len);
	if (r < 0)
		return r;
	if (!b->drv->pwrite_compressed)
		return -ENOTSUP;
	if (cs && (off % cs || len > cs || (len < cs && off + len != blk_size(b))))
		return -EINVAL;
	return b->drv->pwrite_compressed(b, off, buf, len);
}

int64_t blk_allocated_size(struct blk *b)
{
	if (b->drv->allocated_size)
		return b->drv->allocated_size(b);
	return b->file ? blk_allocated_size(b->file) : -ENOTSUP;
}

/* ---- creating ---- */

int blk_create(const char *path, const struct blk_create_opts *o, char *err, size_t errlen)
{
	const struct blk_driver *d;

	if (!path || !*path) {
		errf(err, errlen, "no image file name given");
		return -EINVAL;
	}
	if (!o || !o->format) {
		errf(err, errlen, "%s: no image format given", path);
		return -EINVAL;
	}
	d = blk_driver_by_name(o->format);
	if (!d) {
		errf(err, errlen, "%s: unknown format '%s'", path, o->format);
		return -EINVAL;
	}
	if (!d->create) {
		errf(err, errlen, "%s: format %s cannot create images", path, d->name);
		return -ENOTSUP;
	}
	if (o->size > INT64_MAX) {
		errf(err, errlen, "%s: size %llu too large", path, (unsigned long long)o->size);
		return -EINVAL;
	}
	return d->create(path, o, err, errlen);
}

/* ---- format-specific verbs ---- */

int blk_snapshot_list(struct blk *b, struct blk_snapshot_info **out, unsigned *n)
{
	*out = NULL;
	*n = 0;
	return b->drv->snapshot_list ? b->drv->snapshot_list(b, out, n) : -ENOTSUP;
}

static int check_writable_verb(struct blk *b, bool present, const char *what, char *err,
			       size_t errlen)
{
	if (!present) {
		errf(err, errlen, "%s: format %s does not support %s", b->filename,
			b->drv->name, what);
		return -ENOTSUP;
	}
	if (b->readonly) {
		errf(err, errlen, "%s: image is read-only", b->filename);
		return -EROFS;
	}
	return 0;
}

int blk_snapshot_create(struct blk *b, const char *name, char *err, size_t errlen)
{
	int r = check_writable_verb(b, b->drv->snapshot_create, "internal snapshots", err,
				    errlen);

	return r < 0 ? r : b->drv->snapshot_create(b, name, err, errlen);
}

int blk_snapshot_apply(struct blk *b, const char *name_or_id, char *err, size_t errlen)
{
	int r = check_writable_verb(b, b->drv->snapshot_apply, "internal snapshots", err,
				    errlen);

	return r < 0 ? r : b->drv->snapshot_apply(b, name_or_id, err, errlen);
}

int blk_snapshot_delete(struct blk *b, const char *name_or_id, char *err, size_t errlen)
{
	int r = check_writable_verb(b, b->drv->snapshot_delete, "internal snapshots", err,
				    errlen);

	return r < 0 ? r : b->drv->snapshot_delete(b, name_or_id, err, errlen);
}

int blk_check(struct blk *b, unsigned fix, struct blk_check_result *res)
{
	memset(res, 0, sizeof(*res));
	if (!b->drv->check)
		return -ENOTSUP;
	if (fix && b->readonly)
		return -EROFS;
	return b->drv->check(b, fix, res);
}

void blk_check_result_free(struct blk_check_result *res)
{
	free(res->report);
	res->report = NULL;
}

int blk_make_empty(struct blk *b)
{
	if (!b->drv->make_empty)
		return -ENOTSUP;
	if (b->readonly)
		return -EROFS;
	return b->drv->make_empty(b);
}

int blk_change_backing(struct blk *b, const char *backing_file, const char *backing_format,
		       char *err, size_t errlen)
{
	int r = check_writable_verb(b, b->drv->change_backing, "backing files", err, errlen);

	if (r < 0)
		return r;
	r = b->drv->change_backing(b, backing_file, backing_format, err, errlen);
	if (r == 0 && blk_set_backing_name(b, backing_file, backing_format) < 0)
		log_warn("%s: out of memory recording the new backing file", b->filename);
	return r;
}

static json_t *snapshot_json(const struct blk_snapshot_info *s)
{
	json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I}",
			      "id", s->id, "name", s->name,
			      "vm-state-size", (json_int_t)s->vm_state_size,
			      "date-sec", (json_int_t)s->date_sec,
			      "date-nsec", (json_int_t)s->date_nsec,
			      "vm-clock-sec", (json_int_t)(s->vm_clock_nsec / 1000000000),
			      "vm-clock-nsec", (json_int_t)(s->vm_clock_nsec % 1000000000));

	if (o && s->icount != UINT64_MAX)
		json_object_set_new(o, "icount", json_integer((json_int_t)s->icount));
	return o;
}

static void info_snapshots(struct blk *b, json_t *info)
{
	struct blk_snapshot_info *s;
	unsigned n;
	json_t *arr;

	if (blk_snapshot_list(b, &s, &n) < 0)
		return;
	if (n) {
		arr = json_array();
		for (unsigned i = 0; arr && i < n; i++)
			json_array_append_new(arr, snapshot_json(&s[i]));
		json_object_set_new(info, "snapshots", arr);
	}
	free(s);
}

json_t *blk_info(struct blk *b)
{
	json_t *info = json_object();
	int64_t actual = blk_allocated_size(b);
	uint32_t cs = blk_cluster_size(b);

	if (!info)
		return NULL;
	json_object_set_new(info, "filename", json_string(b->filename));
	json_object_set_new(info, "format", json_string(b->drv->name));
	json_object_set_new(info, "virtual-size", json_integer((json_int_t)blk_size(b)));
	if (actual >= 0)
		json_object_set_new(info, "actual-size", json_integer(actual));
	if (cs)
		json_object_set_new(info, "cluster-size", json_integer(cs));
	if (b->backing_name) {
		char *full = blk_backing_path(b->filename, b->backing_name);

		json_object_set_new(info, "backing-filename", json_string(b->backing_name));
		if (full)
			json_object_set_new(info, "full-backing-filename", json_string(full));
		free(full);
		if (b->backing_fmt)
			json_object_set_new(info, "backing-filename-format",
					    json_string(b->backing_fmt));
	}
	json_object_set_new(info, "dirty-flag", json_false());
	info_snapshots(b, info);
	if (b->drv->info)
		b->drv->info(b, info);
	return info;
}
