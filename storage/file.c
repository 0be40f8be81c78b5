/* The "file" protocol driver: regular files and block devices.
 *
 * cache=none/directsync open with O_DIRECT, which takes only offsets,
 * lengths and buffers aligned to the device (s->align, s->mem_align).
 * Other requests go through an aligned bounce buffer; an unaligned write
 * is a read-modify-write of the blocks at its ends.
 *
 * Invariant: a read-modify-write holds the node's write lock exclusively
 * from its read to its write, and every other modification (aligned
 * writes, discard, write_zeroes, synchronous or on the ring) holds it
 * shared for as long as it runs; so a block that concurrent writers cover
 * ends up as one of them, never a mix of one writer's block with another's
 * stale copy. Without O_DIRECT the kernel orders writes itself and the
 * lock is not taken. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <liburing.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "blk_int.h"
#include "log.h"
#include "util.h"

#define BOUNCE_MAX (1 * MiB)
#define FALLBACK_ALIGN 4096
#define LOCK_BYTE 0               /* the byte the OFD image lock covers */

/* Aligned writes share it; read-modify-writes take it alone. Unlike a
 * pthread rwlock it may be released by another thread than the one that
 * took it: ring writes take it at submission and drop it at reaping. */
struct write_lock {
	pthread_mutex_t m;
	pthread_cond_t c;
	unsigned shared;
	unsigned excl_waiting;
	bool excl;
};

struct file_state {
	int fd;
	bool blkdev;
	bool direct;
	bool dsync;                   /* O_DSYNC: every write is durable already */
	uint32_t align;               /* O_DIRECT offsets and lengths, else 1 */
	uint32_t mem_align;           /* O_DIRECT buffer addresses, else 1 */
	uint32_t lbs;                 /* block device: logical block size */
	struct write_lock wl;
};

/* ---- the write lock ---- */

static void wl_init(struct write_lock *l)
{
	pthread_mutex_init(&l->m, NULL);
	pthread_cond_init(&l->c, NULL);
	l->shared = l->excl_waiting = 0;
	l->excl = false;
}

static void wl_destroy(struct write_lock *l)
{
	pthread_cond_destroy(&l->c);
	pthread_mutex_destroy(&l->m);
}

static void wl_shared(struct file_state *s)
{
	if (!s->direct)
		return;
	pthread_mutex_lock(&s->wl.m);
	while (s->wl.excl || s->wl.excl_waiting)
		pthread_cond_wait(&s->wl.c, &s->wl.m);
	s->wl.shared++;
	pthread_mutex_unlock(&s->wl.m);
}

/* For the ring: a submitter must not block. */
static bool wl_try_shared(struct file_state *s)
{
	bool ok;

	pthread_mutex_lock(&s->wl.m);
	ok = !s->wl.excl && !s->wl.excl_waiting;
	if (ok)
		s->wl.shared++;
	pthread_mutex_unlock(&s->wl.m);
	return ok;
}

static void wl_shared_end(struct file_state *s)
{
	pthread_mutex_lock(&s->wl.m);
	if (--s->wl.shared == 0)
		pthread_cond_broadcast(&s->wl.c);
	pthread_mutex_unlock(&s->wl.m);
}

static void wl_unshared(struct file_state *s)
{
	if (s->direct)
		wl_shared_end(s);
}

static void wl_excl(struct file_state *s)
{
	pthread_mutex_lock(&s->wl.m);
	s->wl.excl_waiting++;
	while (s->wl.excl || s->wl.shared)
		pthread_cond_wait(&s->wl.c, &s->wl.m);
	s->wl.excl_waiting--;
	s->wl.excl = true;
	pthread_mutex_unlock(&s->wl.m);
}

static void wl_excl_end(struct file_state *s)
{
	pthread_mutex_lock(&s->wl.m);
	s->wl.excl = false;
	pthread_cond_broadcast(&s->wl.c);
	pthread_mutex_unlock(&s->wl.m);
}

/* ---- an iovec being consumed ---- */

struct iov_cursor {
	struct iovec *iov;
	int cnt;
	struct iovec *alloc;          /* what cursor_init allocated, or NULL */
	struct iovec small[8];
};

static int cursor_init(struct iov_cursor *c, const struct iovec *iov, int cnt)
{
	c->alloc = NULL;
	c->iov = c->small;
	if (cnt > (int)ARRAY_SIZE(c->small))
		c->iov = c->alloc = malloc(sizeof(*iov) * cnt);
	if (!c->iov)
		return -ENOMEM;
	if (cnt)
		memcpy(c->iov, iov, sizeof(*iov) * cnt);
	c->cnt = cnt;
	return 0;
}

static void cursor_free(struct iov_cursor *c)
{
	free(c->alloc);
}

static void cursor_advance(struct iov_cursor *c, size_t n)
{
	while (c->cnt && n >= c->iov->iov_len) {
		n -= c->iov->iov_len;
		c->iov++;
		c->cnt--;
	}
	if (c->cnt && n) {
		c->iov->iov_base = (char *)c->iov->iov_base + n;
		c->iov->iov_len -= n;
	}
	/* skip empty entries so a preadv never sees only zero lengths */
	while (c->cnt && !c->iov->iov_len) {
		c->iov++;
		c->cnt--;
	}
}

/* Copies n bytes between buf and the cursor's memory, advancing it. */
static void cursor_copy(struct iov_cursor *c, void *buf, size_t n, bool to_iov)
{
	char *p = buf;

	while (n && c->cnt) {
		size_t k = c->iov->iov_len < n ? c->iov->iov_len : n;

		if (to_iov)
			memcpy(c->iov->iov_base, p, k);
		else
			memcpy(p, c->iov->iov_base, k);
		p += k;
		n -= k;
		cursor_advance(c, k);
	}
}

static void cursor_zero(struct iov_cursor *c)
{
	for (int i = 0; i < c->cnt; i++)
		memset(c->iov[i].iov_base, 0, c->iov[i].iov_len);
	c->cnt = 0;
}

/* ---- reading and writing whole requests ---- */

static bool at_or_past_eof(struct file_state *s, uint64_t off)
{
	struct stat st;

	return !s->blkdev && fstat(s->fd, &st) == 0 && off >= (uint64_t)st.st_size;
}

/* Reads all of [off, off+len) into iov; zeroes past the end of the file. */
static int read_all(struct file_state *s, uint64_t off, const struct iovec *iov, int cnt,
		    size_t len)
{
	struct iov_cursor c;
	size_t done = 0;
	int r = cursor_init(&c, iov, cnt);

	if (r < 0)
		return r;
	cursor_advance(&c, 0);
	while (done < len) {
		ssize_t n = preadv(s->fd, c.iov, c.cnt < IOV_MAX ? c.cnt : IOV_MAX,
				   (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			break;
		}
		if (n == 0) {
			cursor_zero(&c);
			break;
		}
		done += n;
		cursor_advance(&c, n);
		/* O_DIRECT stops mid-block only at the end of the file */
		if (done < len && s->direct && (off + done) % s->align) {
			if (at_or_past_eof(s, off + done))
				cursor_zero(&c);
			else
				r = -EIO;
			break;
		}
	}
	cursor_free(&c);
	return r;
}

static int write_all(struct file_state *s, uint64_t off, const struct iovec *iov, int cnt,
		     size_t len, int rwflags)
{
	struct iov_cursor c;
	size_t done = 0;
	bool sync_after = false;
	int r = cursor_init(&c, iov, cnt);

	if (r < 0)
		return r;
	cursor_advance(&c, 0);
	while (done < len) {
		ssize_t n = pwritev2(s->fd, c.iov, c.cnt < IOV_MAX ? c.cnt : IOV_MAX,
				     (off_t)(off + done), rwflags);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EOPNOTSUPP && rwflags) {
			rwflags = 0;      /* no RWF_DSYNC here: fdatasync afterwards */
			sync_after = true;
			continue;
		}
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			break;
		}
		done += n;
		cursor_advance(&c, n);
	}
	cursor_free(&c);
	if (r == 0 && sync_after && fdatasync(s->fd) < 0)
		r = -errno;
	return r;
}

static bool needs_bounce(const struct file_state *s, uint64_t off, size_t len,
			 const struct iovec *iov, int cnt)
{
	if (!s->direct)
		return false;
	if ((off | len) & (s->align - 1))
		return true;
	for (int i = 0; i < cnt; i++)
		if (((uintptr_t)iov[i].iov_base & (s->mem_align - 1)) ||
		    (iov[i].iov_len & (s->align - 1)))
			return true;
	return false;
}

static void *bounce_alloc(const struct file_state *s, size_t len)
{
	void *p;
	size_t a = s->mem_align > s->align ? s->mem_align : s->align;

	if (a < sizeof(void *))
		a = sizeof(void *);
	return posix_memalign(&p, a, len) ? NULL : p;
}

static size_t bounce_size(const struct file_state *s)
{
	return BOUNCE_MAX > s->align ? BOUNCE_MAX : s->align;
}

/* [off, off+len) through aligned windows of the bounce buffer. */
static int read_bounced(struct file_state *s, uint64_t off, const struct iovec *iov, int cnt,
			size_t len)
{
	uint64_t start = ALIGN_DOWN(off, (uint64_t)s->align);
	uint64_t end = ALIGN_UP(off + len, (uint64_t)s->align);
	size_t wmax = bounce_size(s);
	struct iov_cursor c;
	char *buf;
	int r;

	buf = bounce_alloc(s, end - start < wmax ? end - start : wmax);
	if (!buf)
		return -ENOMEM;
	r = cursor_init(&c, iov, cnt);
	for (uint64_t w = start; r == 0 && w < end; w += wmax) {
		size_t wlen = end - w < wmax ? end - w : wmax;
		uint64_t us = w > off ? w : off;
		uint64_t ue = w + wlen < off + len ? w + wlen : off + len;

		r = read_all(s, w, &(struct iovec){ buf, wlen }, 1, wlen);
		if (r == 0)
			cursor_copy(&c, buf + (us - w), ue - us, true);
	}
	if (c.iov)
		cursor_free(&c);
	free(buf);
	return r;
}

static int write_bounced(struct file_state *s, uint64_t off, const struct iovec *iov, int cnt,
			 size_t len, int rwflags)
{
	uint64_t a = s->align;
	uint64_t start = ALIGN_DOWN(off, a), end = ALIGN_UP(off + len, a);
	size_t wmax = bounce_size(s);
	struct iov_cursor c;
	char *buf;
	int r;

	buf = bounce_alloc(s, end - start < wmax ? end - start : wmax);
	if (!buf)
		return -ENOMEM;
	r = cursor_init(&c, iov, cnt);
	for (uint64_t w = start; r == 0 && w < end; w += wmax) {
		size_t wlen = end - w < wmax ? end - w : wmax;
		uint64_t us = w > off ? w : off;
		uint64_t ue = w + wlen < off + len ? w + wlen : off + len;
		bool rmw = us > w || ue < w + wlen;

		if (rmw)
			wl_excl(s);
		else
			wl_shared(s);
		if (us > w)
			r = read_all(s, w, &(struct iovec){ buf, a }, 1, a);
		if (r == 0 && ue < w + wlen)
			r = read_all(s, w + wlen - a, &(struct iovec){ buf + wlen - a, a }, 1, a);
		if (r == 0) {
			cursor_copy(&c, buf + (us - w), ue - us, false);
			r = write_all(s, w, &(struct iovec){ buf, wlen }, 1, wlen, rwflags);
		}
		if (rmw)
			wl_excl_end(s);
		else
			wl_unshared(s);
	}
	if (c.iov)
		cursor_free(&c);
	free(buf);
	return r;
}

static int rw_flags(const struct file_state *s, unsigned flags)
{
	return (flags & BLK_WRITE_FUA) && !s->dsync ? RWF_DSYNC : 0;
}

static int file_preadv(struct blk *b, uint64_t off, const struct iovec *iov, int cnt)
{
	struct file_state *s = b->opaque;
	size_t len = blk_iov_size(iov, cnt);

	if (needs_bounce(s, off, len, iov, cnt))
		return read_bounced(s, off, iov, cnt, len);
	return read_all(s, off, iov, cnt, len);
}

static int file_pwritev(struct blk *b, uint64_t off, const struct iovec *iov, int cnt,
			unsigned flags)
{
	struct file_state *s = b->opaque;
	size_t len = blk_iov_size(iov, cnt);
	int r;

	if (needs_bounce(s, off, len, iov, cnt))
		return write_bounced(s, off, iov, cnt, len, rw_flags(s, flags));
	wl_shared(s);
	r = write_all(s, off, iov, cnt, len, rw_flags(s, flags));
	wl_unshared(s);
	return r;
}

static int file_flush(struct blk *b)
{
	struct file_state *s = b->opaque;

	return fdatasync(s->fd) < 0 ? -errno : 0;
}

/* ---- discard, zeroes, holes ---- */

static int falloc_shared(struct file_state *s, int mode, uint64_t off, uint64_t len)
{
	int r;

	wl_shared(s);
	r = fallocate(s->fd, mode, (off_t)off, (off_t)len) < 0 ? -errno : 0;
	wl_unshared(s);
	return r;
}

static bool unsupported(int r)
{
	return r == -EOPNOTSUPP || r == -ENOSYS || r == -EINVAL;
}

static int file_discard(struct blk *b, uint64_t off, uint64_t len)
{
	struct file_state *s = b->opaque;
	int r;

	if (s->blkdev) {
		uint64_t start = ALIGN_UP(off, (uint64_t)s->lbs);
		uint64_t end = ALIGN_DOWN(off + len, (uint64_t)s->lbs);
		uint64_t range[2] = { start, end - start };

		if (end <= start)
			return 0;
		wl_shared(s);
		r = ioctl(s->fd, BLKDISCARD, range) < 0 ? -errno : 0;
		wl_unshared(s);
	} else {
		r = falloc_shared(s, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
	}
	/* discard is advisory: a file system without holes keeps the data */
	return unsupported(r) ? 0 : r;
}

static int write_zero_buffer(struct blk *b, uint64_t off, uint64_t len)
{
	struct file_state *s = b->opaque;
	size_t chunk = len < BOUNCE_MAX ? ALIGN_UP(len, (uint64_t)s->align) : BOUNCE_MAX;
	void *zero = bounce_alloc(s, chunk);
	int r = 0;

	if (!zero)
		return -ENOMEM;
	memset(zero, 0, chunk);
	while (len && r == 0) {
		size_t n = len < chunk ? len : chunk;

		r = file_pwritev(b, off, &(struct iovec){ zero, n }, 1, 0);
		off += n;
		len -= n;
	}
	free(zero);
	return r;
}

static int file_write_zeroes(struct blk *b, uint64_t off, uint64_t len, unsigned flags)
{
	struct file_state *s = b->opaque;
	bool unmap = flags & BLK_ZERO_MAY_UNMAP;
	int r;

	if (s->blkdev) {
		if ((off | len) & (s->lbs - 1))
			return write_zero_buffer(b, off, len);
		r = -EOPNOTSUPP;
		if (unmap)
			r = falloc_shared(s, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
		if (unsupported(r))
			r = falloc_shared(s, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len);
	} else if (unmap) {
		struct stat st;

		/* grow the file first (ZERO_RANGE never shrinks it, unlike a
		 * racing ftruncate), then free the whole range */
		r = fstat(s->fd, &st) < 0 ? -errno : 0;
		if (r == 0 && off + len > (uint64_t)st.st_size) {
			uint64_t from = off > (uint64_t)st.st_size ? off : (uint64_t)st.st_size;

			r = falloc_shared(s, FALLOC_FL_ZERO_RANGE, from, off + len - from);
		}
		if (r == 0)
			r = falloc_shared(s, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
		if (unsupported(r))
			r = falloc_shared(s, FALLOC_FL_ZERO_RANGE, off, len);
	} else {
		r = falloc_shared(s, FALLOC_FL_ZERO_RANGE, off, len);
	}
	if (unsupported(r))
		r = write_zero_buffer(b, off, len);
	return r;
}

static int file_block_status(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum,
			     unsigned *status, uint64_t *map, struct blk **map_node)
{
	struct file_state *s = b->opaque;
	off_t data, hole;

	*pnum = len;
	*status = BLK_STATUS_DATA;
	if (!s->blkdev) {
		data = lseek(s->fd, (off_t)off, SEEK_DATA);
		if (data < 0 && errno == ENXIO) {
			*status = BLK_STATUS_ZERO;        /* a hole up to the end, or past it */
		} else if (data > (off_t)off) {
			*status = BLK_STATUS_ZERO;
			if ((uint64_t)data - off < len)
				*pnum = (uint64_t)data - off;
		} else if (data == (off_t)off) {
			hole = lseek(s->fd, (off_t)off, SEEK_HOLE);
			if (hole > (off_t)off && (uint64_t)hole - off < len)
				*pnum = (uint64_t)hole - off;
		}
	}
	*status |= BLK_STATUS_OFFSET_VALID;
	if (map)
		*map = off;
	if (map_node)
		*map_node = b;
	return 0;
}

/* ---- size ---- */

static int resize_fd(struct file_state *s, const char *path, uint64_t size,
		     enum blk_prealloc prealloc, struct blk *b, char *err, size_t errlen)
{
	struct stat st;
	int r = 0;

	if (fstat(s->fd, &st) < 0) {
		r = -errno;
		errf(err, errlen, "%s: %s", path, strerror(-r));
		return r;
	}
	if (size <= (uint64_t)st.st_size || prealloc == BLK_PREALLOC_OFF ||
	    prealloc == BLK_PREALLOC_METADATA) {
		if (ftruncate(s->fd, (off_t)size) < 0) {
			r = -errno;
			errf(err, errlen, "%s: resizing to %llu bytes: %s", path,
				(unsigned long long)size, strerror(-r));
		}
		return r;
	}
	if (prealloc == BLK_PREALLOC_FALLOC) {
		if (fallocate(s->fd, 0, st.st_size, (off_t)(size - st.st_size)) < 0) {
			r = -errno;
			errf(err, errlen, "%s: preallocation=falloc: %s", path,
				r == -EOPNOTSUPP ? "the file system cannot preallocate"
						 : strerror(-r));
		}
		return r;
	}
	/* full: write the zeroes, through the O_DIRECT-safe path when open */
	if (b) {
		r = write_zero_buffer(b, st.st_size, size - st.st_size);
	} else {
		void *zero = calloc(1, BOUNCE_MAX);
		uint64_t off = st.st_size;

		r = zero ? 0 : -ENOMEM;
		while (r == 0 && off < size) {
			size_t n = size - off < BOUNCE_MAX ? size - off : BOUNCE_MAX;

			r = write_all(s, off, &(struct iovec){ zero, n }, 1, n, 0);
			off += n;
		}
		free(zero);
	}
	if (r == 0 && fdatasync(s->fd) < 0)
		r = -errno;
	if (r < 0) {
		errf(err, errlen, "%s: preallocation=full: %s", path, strerror(-r));
		if (ftruncate(s->fd, st.st_size) < 0)
			log_warn("%s: restoring the size after a failed preallocation: %s",
				 path, strerror(errno));
	}
	return r;
}

static int blkdev_size(int fd, uint64_t *size)
{
	return ioctl(fd, BLKGETSIZE64, size) < 0 ? -errno : 0;
}

static int file_truncate(struct blk *b, uint64_t size, enum blk_prealloc prealloc, char *err,
			 size_t errlen)
{
	struct file_state *s = b->opaque;
	uint64_t dev;
	int r;

	if (s->blkdev) {
		r = blkdev_size(s->fd, &dev);
		if (r == 0 && size > dev) {
			errf(err, errlen, "%s: cannot grow a block device (%llu bytes) to %llu",
				b->filename, (unsigned long long)dev, (unsigned long long)size);
			r = -ENOTSUP;
		}
		return r;
	}
	return resize_fd(s, b->filename, size, prealloc, b, err, errlen);
}

static int64_t file_allocated_size(struct blk *b)
{
	struct file_state *s = b->opaque;
	struct stat st;
	uint64_t dev;

	if (s->blkdev)
		return blkdev_size(s->fd, &dev) < 0 ? -EIO : (int64_t)dev;
	if (fstat(s->fd, &st) < 0)
		return -errno;
	return (int64_t)st.st_blocks * 512;
}

/* ---- opening ---- */

/* OFD locks: a writer holds the byte exclusively, readers share it. */
static int lock_image(int fd, const char *path, bool shared, char *err, size_t errlen)
{
	struct flock fl = {
		.l_type = shared ? F_RDLCK : F_WRLCK,
		.l_whence = SEEK_SET,
		.l_start = LOCK_BYTE,
		.l_len = 1,
	};

	if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
		return 0;
	if (errno == EAGAIN || errno == EACCES) {
		errf(err, errlen, shared ? "%s: image is in use by another process that writes "
				     "it (force-share reads it anyway)"
				   : "%s: image is in use by another process", path);
		return -EBUSY;
	}
	/* a file system without locks: nothing to guard with */
	log_debug("%s: not locked: %s", path, strerror(errno));
	return 0;
}

/* O_DIRECT's alignment: what the kernel says (statx), else what a read
 * accepts, else the largest common block size. */
static void probe_alignment(struct file_state *s)
{
	struct statx stx;
	void *buf;

	s->align = s->mem_align = FALLBACK_ALIGN;
	if (s->blkdev) {
		int lbs = 0;

		if (ioctl(s->fd, BLKSSZGET, &lbs) == 0 && lbs > 0)
			s->align = s->mem_align = (uint32_t)lbs;
		return;
	}
	if (statx(s->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
	    (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align) {
		s->align = stx.stx_dio_offset_align;
		s->mem_align = stx.stx_dio_mem_align ? stx.stx_dio_mem_align : s->align;
		return;
	}
	if (posix_memalign(&buf, FALLBACK_ALIGN, FALLBACK_ALIGN))
		return;
	for (uint32_t a = 512; a < FALLBACK_ALIGN; a *= 2) {
		/* a read at the end of the file succeeds whatever its size */
		if (pread(s->fd, buf, a, 0) == (ssize_t)a) {
			s->align = s->mem_align = a;
			break;
		}
	}
	free(buf);
}

static int file_open(struct blk *b, const struct blk_open_opts *o, char *err, size_t errlen)
{
	struct file_state *s;
	struct stat st;
	int flags = (b->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
	bool direct = b->cache == BLK_CACHE_NONE || b->cache == BLK_CACHE_DIRECTSYNC;
	bool dsync = b->cache == BLK_CACHE_WRITETHROUGH || b->cache == BLK_CACHE_DIRECTSYNC;
	int r;

	s = calloc(1, sizeof(*s));
	if (!s) {
		errf(err, errlen, "%s: out of memory", b->filename);
		return -ENOMEM;
	}
	s->fd = open(b->filename, flags | (direct ? O_DIRECT : 0) | (dsync ? O_DSYNC : 0));
	if (s->fd < 0) {
		r = -errno;
		if (r == -EINVAL && direct)
			errf(err, errlen, "%s: the file system does not support O_DIRECT "
				"(cache=%s)", b->filename, blk_cache_name(b->cache));
		else
			errf(err, errlen, "%s: %s", b->filename, strerror(-r));
		goto err_free;
	}
	if (fstat(s->fd, &st) < 0) {
		r = -errno;
		errf(err, errlen, "%s: %s", b->filename, strerror(-r));
		goto err_close;
	}
	s->blkdev = S_ISBLK(st.st_mode);
	if (!s->blkdev && !S_ISREG(st.st_mode)) {
		errf(err, errlen, "%s: not a regular file or a block device", b->filename);
		r = -EINVAL;
		goto err_close;
	}
	b->size = (uint64_t)st.st_size;
	if (s->blkdev) {
		int lbs = 512;

		r = blkdev_size(s->fd, &b->size);
		if (r < 0) {
			errf(err, errlen, "%s: reading the device size: %s", b->filename,
				strerror(-r));
			goto err_close;
		}
		if (ioctl(s->fd, BLKSSZGET, &lbs) < 0 || lbs <= 0)
			lbs = 512;
		s->lbs = (uint32_t)lbs;
	}
	if (!o->force_share) {
		r = lock_image(s->fd, b->filename, b->readonly, err, errlen);
		if (r < 0)
			goto err_close;
	}
	s->direct = direct;
	s->dsync = dsync;
	s->align = s->mem_align = 1;
	if (direct)
		probe_alignment(s);
	wl_init(&s->wl);
	b->request_alignment = s->align > s->mem_align ? s->align : s->mem_align;
	b->dev = st.st_dev;
	b->ino = st.st_ino;
	b->opaque = s;
	return 0;

err_close:
	close(s->fd);
err_free:
	free(s);
	return r;
}

static void file_close(struct blk *b)
{
	struct file_state *s = b->opaque;

	if (!s)
		return;
	wl_destroy(&s->wl);
	close(s->fd);
	free(s);
	b->opaque = NULL;
}

/* ---- creating ---- */

static int create_blkdev(int fd, const char *path, const struct blk_create_opts *o, char *err,
			 size_t errlen)
{
	uint64_t dev;
	int r = blkdev_size(fd, &dev);

	if (r == 0 && o->size > dev) {
		errf(err, errlen, "%s: the device (%llu bytes) is smaller than %llu bytes",
			path, (unsigned long long)dev, (unsigned long long)o->size);
		r = -ENOSPC;
	}
	return r;
}

static int file_create(const char *path, const struct blk_create_opts *o, char *err,
		       size_t errlen)
{
	struct file_state s = { .align = 1, .mem_align = 1 };
	struct stat st;
	bool created = true;
	int r;

	s.fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (s.fd < 0 && errno == EEXIST) {
		created = false;
		s.fd = open(path, O_RDWR | O_CLOEXEC);
	}
	if (s.fd < 0) {
		r = -errno;
		errf(err, errlen, "%s: %s", path, strerror(-r));
		return r;
	}
	r = lock_image(s.fd, path, false, err, errlen);
	if (r < 0)
		goto out;
	if (fstat(s.fd, &st) < 0) {
		r = -errno;
		errf(err, errlen, "%s: %s", path, strerror(-r));
		goto out;
	}
	if (S_ISBLK(st.st_mode)) {
		r = create_blkdev(s.fd, path, o, err, errlen);
		goto out;
	}
	if (ftruncate(s.fd, 0) < 0) {
		r = -errno;
		errf(err, errlen, "%s: %s", path, strerror(-r));
		goto out;
	}
	r = resize_fd(&s, path, o->size, o->prealloc, NULL, err, errlen);
out:
	close(s.fd);
	if (r < 0 && created)
		unlink(path);
	return r;
}

/* ---- the ring ---- */

/* Finishes on a worker what the ring left: the rest of a short transfer, or
 * a request the ring's operation could not do (priv[3]: bytes done). */
static int finish_on_worker(struct blk_req *req)
{
	struct blk *b = req->priv[2];
	uint64_t done = (uintptr_t)req->priv[3];
	struct iov_cursor c;
	int r;

	switch (req->op) {
	case BLK_OP_READ:
	case BLK_OP_WRITE:
		r = cursor_init(&c, req->iov, req->iovcnt);
		if (r < 0)
			return r;
		cursor_advance(&c, done);
		if (req->op == BLK_OP_READ)
			r = file_preadv(b, req->offset + done, c.iov, c.cnt);
		else
			r = file_pwritev(b, req->offset + done, c.iov, c.cnt, req->flags);
		cursor_free(&c);
		break;
	case BLK_OP_WRITE_ZEROES:
		r = file_write_zeroes(b, req->offset, req->len, req->flags);
		break;
	default:
		r = -EINVAL;
		break;
	}
	if (r == 0 && req->op != BLK_OP_READ)
		blk_size_grow(b, req->offset + req->len);
	return r;
}

static int hand_to_worker(struct blk_aio *a, struct blk_req *req, uint64_t done)
{
	req->priv[3] = (void *)(uintptr_t)done;
	return blk_aio_offload(a, req, finish_on_worker) < 0 ? -EIO : BLK_AIO_HANDED_ON;
}

static int file_ring_done(struct blk_aio *a, struct blk_req *req, int res)
{
	struct blk *b = req->priv[2];
	struct file_state *s = b->opaque;

	if (req->priv[3])
		wl_shared_end(s);
	switch (req->op) {
	case BLK_OP_READ:
	case BLK_OP_WRITE:
		if (res == -EOPNOTSUPP)
			return hand_to_worker(a, req, 0);
		if (res < 0)
			return res;
		if ((uint64_t)res < req->len)
			return hand_to_worker(a, req, (uint64_t)res);
		break;
	case BLK_OP_DISCARD:
		return unsupported(res) ? 0 : res;
	case BLK_OP_WRITE_ZEROES:
		if (unsupported(res))
			return hand_to_worker(a, req, 0);
		break;
	case BLK_OP_FLUSH:
		break;
	}
	if (res >= 0 && req->op != BLK_OP_READ && req->op != BLK_OP_FLUSH)
		blk_size_grow(b, req->offset + req->len);
	return res < 0 ? res : 0;
}

/* -ENOTSUP sends the request to a worker: no ring, O_DIRECT needing a
 * bounce, block-device discard and zeroes (ioctls), hole punching past the
 * end, or a read-modify-write holding the write lock. */
static int file_aio_submit(struct blk *b, struct blk_aio *a, struct blk_req *req)
{
	struct file_state *s = b->opaque;
	struct io_uring *ring = blk_aio_ring(a);
	struct io_uring_sqe *sqe;
	bool modifies = req->op != BLK_OP_READ && req->op != BLK_OP_FLUSH;
	bool unmap = req->flags & BLK_ZERO_MAY_UNMAP;
	bool locked = false;

	if (!ring)
		return -ENOTSUP;
	switch (req->op) {
	case BLK_OP_READ:
	case BLK_OP_WRITE:
		if (req->iovcnt > IOV_MAX ||
		    needs_bounce(s, req->offset, req->len, req->iov, req->iovcnt))
			return -ENOTSUP;
		break;
	case BLK_OP_DISCARD:
	case BLK_OP_WRITE_ZEROES:
		if (s->blkdev || (unmap && req->offset + req->len > blk_size(b)))
			return -ENOTSUP;
		break;
	case BLK_OP_FLUSH:
		break;
	}
	if (modifies && s->direct) {
		if (!wl_try_shared(s))
			return -ENOTSUP;
		locked = true;
	}
	sqe = io_uring_get_sqe(ring);
	if (!sqe) {
		if (locked)
			wl_shared_end(s);
		return -ENOTSUP;
	}
	switch (req->op) {
	case BLK_OP_READ:
		io_uring_prep_readv(sqe, s->fd, req->iov, req->iovcnt, req->offset);
		break;
	case BLK_OP_WRITE:
		io_uring_prep_writev(sqe, s->fd, req->iov, req->iovcnt, req->offset);
		sqe->rw_flags = rw_flags(s, req->flags);
		break;
	case BLK_OP_FLUSH:
		io_uring_prep_fsync(sqe, s->fd, IORING_FSYNC_DATASYNC);
		break;
	case BLK_OP_DISCARD:
		io_uring_prep_fallocate(sqe, s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					req->offset, req->len);
		break;
	case BLK_OP_WRITE_ZEROES:
		io_uring_prep_fallocate(sqe, s->fd,
					unmap ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
					      : FALLOC_FL_ZERO_RANGE,
					req->offset, req->len);
		break;
	}
	io_uring_sqe_set_data(sqe, req);
	req->priv[2] = b;
	req->priv[3] = (void *)(uintptr_t)locked;
	blk_aio_ring_added_hook(a, req, file_ring_done);
	return 0;
}

const struct blk_driver blk_driver_file = {
	.name = "file",
	.protocol = true,
	.open = file_open,
	.close = file_close,
	.create = file_create,
	.preadv = file_preadv,
	.pwritev = file_pwritev,
	.flush = file_flush,
	.discard = file_discard,
	.write_zeroes = file_write_zeroes,
	.block_status = file_block_status,
	.truncate = file_truncate,
	.allocated_size = file_allocated_size,
	.aio_submit = file_aio_submit,
};
