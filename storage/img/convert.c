/* drover-img convert [-U] [-c] [-p] [-q] [-n] [-W] [-f fmt] [-t cache] [-T src_cache]
 *                    [-O output_fmt] [-B backing [-F backing_fmt]] [-o options]
 *                    [-S sparse_size] [-m workers] SRC... DST
 *
 * The sources are concatenated into one address space and copied in chunks
 * by a pool of worker threads:
 *
 *   dispatcher (under lock)          worker (no lock held while doing I/O)
 *   - hands out the next chunk;      - asks block status for its chunk and
 *     skips whole chunks that block    reads only the units with data;
 *     status says need no write      - zero-scans each unit (-S granularity,
 *     (holes, zero clusters, parts     at least the target's cluster size);
 *     left to the target's backing)  - waits for its turn (unless -W), then
 *                                      writes data runs, zero runs, or
 *                                      compressed clusters.
 *
 * Invariants: chunks and units start at multiples of the unit, which is a
 * multiple of the target's cluster size, so no two workers ever write into
 * the same target cluster. Without -W, writes happen in chunk order: each
 * chunk that writes anything takes a sequence number under the lock when it
 * is handed out and writes only when write_seq reaches it. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "img.h"
#include "util.h"

#define CV_CHUNK         (2 * MiB)
#define CV_MAX_WORKERS   32
/* Workers by default: twice the CPUs (I/O overlaps the copying), at most
 * 8 as qemu-img's coroutines; -m overrides. */
#define CV_DEF_WORKERS   8
#define CV_MAX_SPARSE    (16 * MiB)

enum seg_kind { SEG_DATA, SEG_ZERO, SEG_BACKING };
enum unit_kind { UNIT_DATA, UNIT_ZERO, UNIT_SKIP };

struct cv_src {
	struct blk *b;
	const char *path;
	uint64_t start, size;
};

struct cv_args {
	const char *fmt, *out_fmt, *backing, *backing_fmt;
	const char *dst_path;
	char **src_paths;
	unsigned nsrc;
	struct img_opts opts;
	bool compress, progress, quiet, no_create, out_of_order, share, out_fmt_given;
	uint64_t sparse;
	unsigned workers;
	enum blk_cache cache, src_cache;
};

struct cv {
	struct cv_src *src;
	unsigned nsrc;
	uint64_t total;
	struct blk *dst;
	const char *dst_path;
	bool compress, zero_init, target_backing, in_order, sparse;
	uint64_t unit, chunk;

	pthread_mutex_t lock;
	pthread_cond_t turn;
	uint64_t cursor;               /* next chunk to hand out */
	uint64_t next_seq, write_seq;  /* in-order writes */
	uint64_t done;
	int err;
	struct img_progress progress;
};

struct seg {
	enum seg_kind kind;
	uint64_t off, len;
};

/* ---- the sources as one address space ---- */

static const struct cv_src *src_at(const struct cv *c, uint64_t off)
{
	for (unsigned i = 0; i < c->nsrc; i++)
		if (off < c->src[i].start + c->src[i].size)
			return &c->src[i];
	return &c->src[c->nsrc - 1];
}

/* What [off, off+len) holds, for the run starting at off (never past the
 * end of the source it falls in). */
static int src_status(const struct cv *c, uint64_t off, uint64_t len, uint64_t *pnum,
		      enum seg_kind *kind)
{
	const struct cv_src *s = src_at(c, off);
	uint64_t local = off - s->start, n;
	unsigned st = 0;
	int depth, ret;

	if (len > s->start + s->size - off)
		len = s->start + s->size - off;
	if (c->target_backing) {
		/* The target's backing file holds what the source's backing
		 * chain holds: only the source's top layer is copied. */
		ret = blk_block_status(s->b, local, len, &n, &st, NULL, NULL);
		if (ret == 0 && !(st & BLK_STATUS_ALLOCATED)) {
			*kind = SEG_BACKING;
			*pnum = n && n <= len ? n : len;
			return 0;
		}
	} else {
		ret = blk_block_status_above(s->b, NULL, local, len, &n, &st, &depth);
		/* Allocated nowhere in the chain: reads return zeroes. */
		if (ret == 0 && !(st & (BLK_STATUS_ALLOCATED | BLK_STATUS_DATA)))
			st |= BLK_STATUS_ZERO;
	}
	if (ret == -ENOTSUP) {
		*kind = SEG_DATA;
		*pnum = len;
		return 0;
	}
	if (ret < 0)
		return ret;
	if (!n || n > len)
		n = len;
	*pnum = n;
	*kind = (st & BLK_STATUS_ZERO) ? SEG_ZERO : SEG_DATA;
	return 0;
}

static int src_read(const struct cv *c, uint64_t off, uint8_t *buf, uint64_t len)
{
	while (len) {
		const struct cv_src *s = src_at(c, off);
		uint64_t n = s->start + s->size - off;
		int ret;

		if (n > len)
			n = len;
		ret = blk_pread(s->b, off - s->start, buf, n);
		if (ret < 0) {
			img_err("%s: read at offset %llu failed: %s", s->path,
				(unsigned long long)(off - s->start), strerror(-ret));
			return ret;
		}
		off += n;
		buf += n;
		len -= n;
	}
	return 0;
}

/* ---- handing out chunks ---- */

static bool seg_needs_write(const struct cv *c, enum seg_kind k)
{
	if (k == SEG_BACKING)
		return false;
	if (k == SEG_ZERO)
		return !c->zero_init || c->target_backing || !c->sparse;
	return true;
}

/* Next chunk to copy, skipping whole chunks that need no write. Called
 * with the lock held. false: nothing left (or an error stopped the copy). */
static bool next_chunk(struct cv *c, uint64_t *off, uint64_t *len, uint64_t *seq)
{
	while (!c->err && c->cursor < c->total) {
		uint64_t pnum, skip;
		enum seg_kind kind;
		int ret;

		ret = src_status(c, c->cursor, c->total - c->cursor, &pnum, &kind);
		if (ret < 0) {
			img_err("%s: block status at offset %llu failed: %s",
				src_at(c, c->cursor)->path, (unsigned long long)c->cursor,
				strerror(-ret));
			c->err = ret;
			break;
		}
		skip = ALIGN_DOWN(c->cursor + pnum, c->chunk) - c->cursor;
		if (!seg_needs_write(c, kind) && skip) {
			c->cursor += skip;
			c->done += skip;
			img_progress_update(&c->progress, c->done, c->total);
			continue;
		}
		*off = c->cursor;
		*len = c->total - c->cursor < c->chunk ? c->total - c->cursor : c->chunk;
		c->cursor += *len;
		*seq = c->next_seq++;
		return true;
	}
	return false;
}

/* ---- one chunk ---- */

struct chunk {
	uint64_t off, len;
	uint8_t *buf;
	enum unit_kind *units;
	struct seg *segs;
	unsigned nsegs, maxsegs;
};

static int chunk_segments(const struct cv *c, struct chunk *k)
{
	uint64_t pos = k->off, end = k->off + k->len;

	k->nsegs = 0;
	while (pos < end) {
		uint64_t pnum;
		enum seg_kind kind;
		int ret = src_status(c, pos, end - pos, &pnum, &kind);

		if (ret < 0) {
			img_err("%s: block status at offset %llu failed: %s", src_at(c, pos)->path,
				(unsigned long long)pos, strerror(-ret));
			return ret;
		}
		if (!c->sparse && kind == SEG_ZERO)
			kind = SEG_DATA;
		if (k->nsegs && k->segs[k->nsegs - 1].kind == kind) {
			k->segs[k->nsegs - 1].len += pnum;
		} else {
			if (k->nsegs == k->maxsegs) {
				unsigned n = k->maxsegs ? k->maxsegs * 2 : 16;
				struct seg *s = realloc(k->segs, n * sizeof(*s));

				if (!s)
					return -ENOMEM;
				k->segs = s;
				k->maxsegs = n;
			}
			k->segs[k->nsegs++] = (struct seg){ kind, pos, pnum };
		}
		pos += pnum;
	}
	return 0;
}

/* Classifies each unit of the chunk from the segments: any data makes it a
 * data unit (read, then zero-scanned); a unit the target's backing covers
 * entirely is skipped; zeroes only make it a zero unit. A unit that mixes
 * zeroes with backing data is read too, so the backing part stays right. */
static void chunk_units(const struct cv *c, struct chunk *k)
{
	uint64_t nunits = (k->len + c->unit - 1) / c->unit;
	unsigned si = 0;

	for (uint64_t u = 0; u < nunits; u++) {
		uint64_t ustart = k->off + u * c->unit;
		uint64_t uend = ustart + c->unit < k->off + k->len ? ustart + c->unit : k->off + k->len;
		bool data = false, zero = false, backing = false;

		while (si < k->nsegs && k->segs[si].off + k->segs[si].len <= ustart)
			si++;
		for (unsigned j = si; j < k->nsegs && k->segs[j].off < uend; j++) {
			data |= k->segs[j].kind == SEG_DATA;
			zero |= k->segs[j].kind == SEG_ZERO;
			backing |= k->segs[j].kind == SEG_BACKING;
		}
		if (data || (zero && backing))
			k->units[u] = UNIT_DATA;
		else if (backing)
			k->units[u] = UNIT_SKIP;
		else
			k->units[u] = UNIT_ZERO;
	}
}

static uint64_t unit_len(const struct cv *c, const struct chunk *k, uint64_t u)
{
	uint64_t start = u * c->unit;

	return k->len - start < c->unit ? k->len - start : c->unit;
}

static int chunk_read(const struct cv *c, struct chunk *k)
{
	uint64_t nunits = (k->len + c->unit - 1) / c->unit;

	for (uint64_t u = 0; u < nunits;) {
		uint64_t v = u, len = 0;
		int ret;

		if (k->units[u] != UNIT_DATA) {
			u++;
			continue;
		}
		while (v < nunits && k->units[v] == UNIT_DATA)
			len += unit_len(c, k, v++);
		ret = src_read(c, k->off + u * c->unit, k->buf + u * c->unit, len);
		if (ret < 0)
			return ret;
		if (c->sparse)
			for (; u < v; u++)
				if (img_is_zero(k->buf + u * c->unit, unit_len(c, k, u)))
					k->units[u] = UNIT_ZERO;
		u = v;
	}
	return 0;
}

static int dst_fail(const struct cv *c, const char *what, uint64_t off, int ret)
{
	img_err("%s: %s at offset %llu failed: %s", c->dst_path, what, (unsigned long long)off,
		strerror(-ret));
	return ret;
}

static int chunk_write(const struct cv *c, const struct chunk *k)
{
	uint64_t nunits = (k->len + c->unit - 1) / c->unit;

	for (uint64_t u = 0; u < nunits;) {
		enum unit_kind kind = k->units[u];
		uint64_t v = u, len = 0, off = k->off + u * c->unit;
		int ret = 0;

		while (v < nunits && k->units[v] == kind && !(c->compress && kind == UNIT_DATA && v > u))
			len += unit_len(c, k, v++);
		if (kind == UNIT_DATA && c->compress) {
			ret = blk_pwrite_compressed(c->dst, off, k->buf + u * c->unit, len);
			if (ret < 0)
				return dst_fail(c, "compressed write", off, ret);
		} else if (kind == UNIT_DATA) {
			ret = blk_pwrite(c->dst, off, k->buf + u * c->unit, len, 0);
			if (ret < 0)
				return dst_fail(c, "write", off, ret);
		} else if (kind == UNIT_ZERO && (!c->zero_init || c->target_backing)) {
			ret = blk_write_zeroes(c->dst, off, len, BLK_ZERO_MAY_UNMAP);
			if (ret < 0)
				return dst_fail(c, "writing zeroes", off, ret);
		}
		u = v;
	}
	return 0;
}

static void wait_turn(struct cv *c, uint64_t seq)
{
	while (!c->err && c->write_seq != seq)
		pthread_cond_wait(&c->turn, &c->lock);
}

static void *worker(void *opaque)
{
	struct cv *c = opaque;
	struct chunk k = { 0 };
	uint64_t seq;
	int ret = 0;

	k.buf = img_alloc_buf(c->chunk);
	k.units = malloc((c->chunk / c->unit + 1) * sizeof(*k.units));
	pthread_mutex_lock(&c->lock);
	if (!k.buf || !k.units) {
		if (!c->err)
			c->err = -ENOMEM;
		img_err("convert: out of memory for the copy buffers");
		pthread_cond_broadcast(&c->turn);
	}
	while (next_chunk(c, &k.off, &k.len, &seq)) {
		pthread_mutex_unlock(&c->lock);
		ret = chunk_segments(c, &k);
		if (ret == 0) {
			chunk_units(c, &k);
			ret = chunk_read(c, &k);
		}
		if (ret == 0 && c->in_order) {
			pthread_mutex_lock(&c->lock);
			wait_turn(c, seq);
			pthread_mutex_unlock(&c->lock);
		}
		if (ret == 0)
			ret = chunk_write(c, &k);
		pthread_mutex_lock(&c->lock);
		if (ret < 0 && !c->err)
			c->err = ret;
		c->write_seq++;
		c->done += k.len;
		img_progress_update(&c->progress, c->done, c->total);
		pthread_cond_broadcast(&c->turn);
	}
	pthread_mutex_unlock(&c->lock);
	free(k.buf);
	free(k.units);
	free(k.segs);
	return NULL;
}

static int run_copy(struct cv *c, unsigned nworkers)
{
	pthread_t tid[CV_MAX_WORKERS];
	uint64_t nchunks = (c->total + c->chunk - 1) / c->chunk;
	unsigned started = 0;

	if (nworkers > nchunks)
		nworkers = nchunks ? (unsigned)nchunks : 1;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->turn, NULL);
	for (; started < nworkers; started++)
		if (pthread_create(&tid[started], NULL, worker, c))
			break;
	if (!started)
		worker(c);
	for (unsigned i = 0; i < started; i++)
		pthread_join(tid[i], NULL);
	pthread_cond_destroy(&c->turn);
	pthread_mutex_destroy(&c->lock);
	return c->err;
}

/* ---- arguments ---- */

static unsigned default_workers(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n > 0 && 2 * n < CV_DEF_WORKERS ? (unsigned)(2 * n) : CV_DEF_WORKERS;
}

static int parse_args(int argc, char **argv, struct cv_args *a)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	char err[256];
	uint64_t n;
	int c, ret;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":f:O:B:F:o:S:t:T:m:cpqnWUh", longopts, NULL)) != -1) {
		switch (c) {
		case 'f': a->fmt = optarg; break;
		case 'O':
			a->out_fmt = optarg;
			a->out_fmt_given = true;
			break;
		case 'B': a->backing = optarg; break;
		case 'F': a->backing_fmt = optarg; break;
		case 'c': a->compress = true; break;
		case 'p': a->progress = true; break;
		case 'q': a->quiet = true; break;
		case 'n': a->no_create = true; break;
		case 'W': a->out_of_order = true; break;
		case 'U': a->share = true; break;
		case 'o':
			if (img_opts_add(&a->opts, optarg, err, sizeof(err)) < 0) {
				img_err("convert: -o: %s", err);
				return -EINVAL;
			}
			break;
		case 'S':
			ret = img_parse_size(optarg, &a->sparse);
			if (ret < 0 || a->sparse % 512 || a->sparse > CV_MAX_SPARSE) {
				img_err("convert: -S: '%s' is not a multiple of 512 up to 16M "
					"(0 disables sparse detection)", optarg);
				return -EINVAL;
			}
			break;
		case 't':
			if (img_parse_cache(optarg, "-t", &a->cache) < 0)
				return -EINVAL;
			break;
		case 'T':
			if (img_parse_cache(optarg, "-T", &a->src_cache) < 0)
				return -EINVAL;
			break;
		case 'm':
			if (parse_uint(optarg, 1, CV_MAX_WORKERS, &n) < 0) {
				img_err("convert: -m: '%s' is not a number of workers from 1 to %d", optarg,
					CV_MAX_WORKERS);
				return -EINVAL;
			}
			a->workers = (unsigned)n;
			break;
		case 'h':
			printf("usage: " IMG_PROG " convert [-U] [-c] [-p] [-q] [-n] [-W] [-f fmt] "
			       "[-t cache] [-T src_cache] [-O output_fmt] [-B backing_file "
			       "[-F backing_fmt]] [-o options] [-S sparse_size] [-m num_workers] "
			       "filename [filename2 [...]] output_filename\n");
			return 1;
		default:
			img_bad_option("convert", c, argv);
			return -EINVAL;
		}
	}
	if (a->opts.help)
		return 0;
	if (argc - optind < 2) {
		img_err(optind >= argc ? "convert: no source and output file names given"
				       : "convert: no output file name given");
		return -EINVAL;
	}
	a->src_paths = argv + optind;
	a->nsrc = (unsigned)(argc - optind - 1);
	a->dst_path = argv[argc - 1];
	return 0;
}

/* ---- the target ---- */

static int create_target(const struct cv_args *a, struct cv *c, bool *zero_init)
{
	struct blk_create_opts co = { 0 };
	char err[512] = "";
	struct stat st;
	int ret;

	if (img_create_opts_fill(&co, &a->opts, a->out_fmt, err, sizeof(err)) < 0) {
		img_err("%s: %s", a->dst_path, err);
		return -EINVAL;
	}
	/* The size comes from the sources, whatever -o size says. */
	co.size = c->total;
	if (a->backing)
		co.backing_file = a->backing;
	if (a->backing_fmt)
		co.backing_format = a->backing_fmt;
	if (co.backing_file && strcmp(a->out_fmt, "qcow2")) {
		img_err("%s: format %s cannot have a backing file (-B)", a->dst_path, a->out_fmt);
		return -EINVAL;
	}
	if (co.backing_file && !co.backing_format) {
		img_err("%s: backing file '%s' given without its format (-F raw or -F qcow2)",
			a->dst_path, co.backing_file);
		return -EINVAL;
	}
	ret = blk_create(a->dst_path, &co, err, sizeof(err));
	if (ret < 0) {
		img_blk_err(a->dst_path, err, ret);
		return ret;
	}
	/* A new image reads as zeroes, unless "creating" only truncated a
	 * device that keeps its old contents. */
	*zero_init = !(stat(a->dst_path, &st) == 0 && S_ISBLK(st.st_mode));
	return 0;
}

static int open_sources(const struct cv_args *a, struct cv *c)
{
	c->src = calloc(a->nsrc, sizeof(*c->src));
	if (!c->src)
		return -ENOMEM;
	for (unsigned i = 0; i < a->nsrc; i++) {
		struct cv_src *s = &c->src[i];
		int ret = img_open(&s->b, a->src_paths[i], a->fmt, a->share ? IMG_OPEN_SHARE : 0,
				   a->src_cache);

		if (ret < 0)
			return ret;
		c->nsrc++;
		s->path = a->src_paths[i];
		s->start = c->total;
		s->size = blk_size(s->b);
		c->total += s->size;
	}
	return 0;
}

static int setup_target(const struct cv_args *a, struct cv *c)
{
	bool zero_init = false;
	uint32_t cluster;
	int ret;

	if (!a->no_create) {
		ret = create_target(a, c, &zero_init);
		if (ret < 0)
			return ret;
	}
	/* -n without -O: probe the existing output rather than overwrite a
	 * qcow2's metadata as raw data. */
	ret = img_open(&c->dst, a->dst_path, a->no_create && !a->out_fmt_given ? NULL : a->out_fmt,
		       IMG_OPEN_RW, a->cache);
	if (ret < 0)
		return ret;
	if (a->no_create && blk_size(c->dst) < c->total) {
		img_err("%s: output is %llu bytes, smaller than the %llu bytes to copy",
			a->dst_path, (unsigned long long)blk_size(c->dst),
			(unsigned long long)c->total);
		return -EINVAL;
	}
	cluster = blk_cluster_size(c->dst);
	if (a->compress && !cluster) {
		img_err("%s: format %s does not support compression (-c)", a->dst_path,
			blk_format(c->dst));
		return -EINVAL;
	}
	c->zero_init = zero_init;
	/* A backing file given for the new image holds what the source's
	 * backing chain holds; an existing output's (-n) holds anything. */
	c->target_backing = !a->no_create && blk_backing(c->dst) != NULL;
	c->compress = a->compress;
	c->sparse = a->sparse != 0;
	/* Zero detection at -S granularity, but never finer than the target's
	 * cluster: a cluster written at all is written whole, by one worker. */
	c->unit = a->sparse ? a->sparse : 64 * KiB;
	if (c->compress || c->unit < cluster)
		c->unit = cluster;
	c->chunk = c->unit >= CV_CHUNK ? c->unit : ALIGN_UP(CV_CHUNK, c->unit);
	c->chunk -= c->chunk % c->unit;
	c->in_order = !a->out_of_order;
	c->dst_path = a->dst_path;
	return 0;
}

int img_convert(int argc, char **argv)
{
	struct cv_args a = {
		.out_fmt = "raw",
		.sparse = 4 * KiB,
		.workers = default_workers(),
		.cache = BLK_CACHE_UNSAFE,
		.src_cache = BLK_CACHE_WRITEBACK,
	};
	struct cv c = { 0 };
	int ret, rc = 1;

	ret = parse_args(argc, argv, &a);
	if (ret) {
		rc = ret > 0 ? 0 : 1;
		goto out;
	}
	if (!img_format_known(a.out_fmt)) {
		img_err("convert: -O: unknown format '%s'", a.out_fmt);
		goto out;
	}
	if (a.opts.help) {
		img_create_opts_help(a.out_fmt);
		rc = 0;
		goto out;
	}
	if (a.compress && strcmp(a.out_fmt, "qcow2")) {
		img_err("%s: format %s does not support compression (-c)", a.dst_path, a.out_fmt);
		goto out;
	}
	if (a.no_create && (a.opts.n || a.backing)) {
		img_err("convert: -n uses the output as it is: -o and -B cannot be given with it");
		goto out;
	}
	if (open_sources(&a, &c) < 0 || setup_target(&a, &c) < 0)
		goto out;
	img_progress_init(&c.progress, a.progress && !a.quiet);
	ret = run_copy(&c, a.workers);
	if (ret == 0) {
		ret = blk_flush(c.dst);
		if (ret < 0)
			dst_fail(&c, "flush", 0, ret);
	}
	if (ret == 0)
		img_progress_update(&c.progress, c.total, c.total);
	img_progress_end(&c.progress);
	rc = ret < 0 ? 1 : 0;
out:
	if (c.dst)
		blk_close(c.dst);
	for (unsigned i = 0; i < c.nsrc; i++)
		blk_close(c.src[i].b);
	free(c.src);
	img_opts_free(&a.opts);
	return rc;
}
