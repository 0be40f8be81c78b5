/* blkcheck: drives the first virtio-blk PCI device by the virtio 1.2
 * specification and checks what a disk must do (README.md):
 *
 *   capacity      blkcheck.sectors=N equals the capacity
 *   get-id        VIRTIO_BLK_T_GET_ID: a NUL-padded string, blkcheck.serial=ID
 *   unsupported   an unknown request type completes with UNSUPP
 *   read-only     (blkcheck.readonly) RO offered, a write gets IOERR
 *   write         the seed's pattern over the plan's regions (blkpattern.h),
 *                 from every queue, several requests in flight on each,
 *                 scatter-gather requests of up to seg_max segments
 *   read          all of it read back (split differently) and compared
 *   write-zeroes  a range zeroed (unmap off, then on) reads back zero
 *   discard       a range discarded, written again, read back
 *   flush         VIRTIO_BLK_T_FLUSH completes OK
 *   verify        the whole plan read back as a later run expects it
 *   queues, used-len  every queue carried requests, several at a time; used
 *                 lengths count the bytes the device wrote
 *
 * blkcheck.verify_only and blkcheck.readonly only read: they check a disk a
 * previous run (or the host tool) wrote with the same seed. All of it runs
 * in ring 3; completions are polled. */
#include "blkdev.h"
#include "blkpattern.h"

#define MIB              ((uint64_t)1 << 20)
#define MAX_REQ_SECTORS  2048u                   /* 1 MiB, 16 qcow2 clusters */
#define SLOT_BUF_SIZE    (MAX_REQ_SECTORS * BLK_SECTOR + BLK_MAX_SEGS * 512 + 4096)
#define MAX_DEPTH        32
#define DEFAULT_DEPTH    8
#define STALL_NS         10000000000ULL          /* no completion for 10 s */
#define SINGLE_TIMEOUT_MS 10000
#define POISON           0xa5
#define UNKNOWN_TYPE     127

struct opts {
	uint64_t seed, sectors, depth;
	const char *serial;
	unsigned serial_len;
	int readonly, verify_only;
	enum pci_access access;
};

struct slot {
	struct blk_req req;
	uint8_t *buf;
	int busy, parked;           /* parked: built, not accepted by a full ring */
	unsigned k;                 /* the request's number in its job */
};

/* A run over a list of ranges: requests of sizes from a cycle, one queue
 * after the other. */
struct job {
	const char *name;
	uint32_t type;
	const struct blk_range *r;
	unsigned nr, ri;
	uint64_t pos;
	const uint16_t *sizes;
	unsigned nsizes, k;
	uint64_t errors;
	char first_error[200];
};

struct ctx {
	struct blkdev bd;
	struct opts o;
	struct pci pci;
	struct dma_pool pool;
	struct slot *slots;         /* nq * depth */
	struct blk_req *single;     /* for one-off requests */
	struct blk_dwz_seg *dwz;    /* discard / write-zeroes payload */
	uint8_t *small;             /* a small data buffer (GET_ID, RO write) */
	struct blk_range plan[BLKPLAN_MAX_RANGES];
	unsigned nplan;
	int zero_applied;           /* the zeroed range now reads zero */
	unsigned checks_failed;
	uint64_t bad_used_len;
	char used_len_error[160];
};

static const uint16_t write_sizes[] = { 8, 1, 129, 2048, 7, 256, 24, 1024, 3, 2048, 64, 515, 128, 8 };
static const uint16_t read_sizes[] = { 2048, 16, 5, 1024, 255, 8, 2048, 1, 130, 512 };
static const uint16_t seg_cycle[] = { 1, 3, 2, 8, 1, 17, 4, 64, 1, 5, 254, 2 };

static void check_ok(const char *name)
{
	printf("blkcheck: %s ok\n", name);
}

#define check_fail(c, name, ...) do { \
	printf("blkcheck: FAIL %s: ", name); \
	printf(__VA_ARGS__); \
	printf("\n"); \
	(c)->checks_failed++; \
} while (0)

/* ---- options ---- */

static int parse_opts(struct opts *o)
{
	const char *cl = bootinfo.cmdline;
	int err = 0;

	o->seed = 1;
	o->depth = DEFAULT_DEPTH;
	if (cmdline_get_u64(cl, "blkcheck.seed", &o->seed) == -EINVAL ||
	    cmdline_get_u64(cl, "blkcheck.sectors", &o->sectors) == -EINVAL ||
	    cmdline_get_u64(cl, "blkcheck.depth", &o->depth) == -EINVAL)
		err = -EINVAL;
	if (o->depth < 1 || o->depth > MAX_DEPTH) {
		printf("blkcheck: FAIL blkcheck.depth=%lu: 1 to %d\n", o->depth, MAX_DEPTH);
		return -EINVAL;
	}
	o->serial = cmdline_get(cl, "blkcheck.serial");
	if (o->serial)
		while (o->serial[o->serial_len] && o->serial[o->serial_len] != ' ')
			o->serial_len++;
	o->readonly = cmdline_has(cl, "blkcheck.readonly");
	o->verify_only = cmdline_has(cl, "blkcheck.verify_only") || o->readonly;
	const char *pci = cmdline_get(cl, "blkcheck.pci");
	o->access = PCI_ACCESS_NONE;
	if (pci && strncmp(pci, "ecam", 4) == 0)
		o->access = PCI_ACCESS_ECAM;
	else if (pci && strncmp(pci, "cf8", 3) == 0)
		o->access = PCI_ACCESS_CF8;
	else if (pci)
		err = -EINVAL;
	if (err)
		printf("blkcheck: FAIL malformed option (seed, sectors, depth: numbers; pci: ecam|cf8)\n");
	return err;
}

/* ---- set-up ---- */

static void print_pci(const struct pci *p)
{
	printf("blkcheck: pci %s (%s), %u functions, %u bridges\n", pci_access_name(p->access),
	       p->ecam_source, p->ndevs, p->nbridges);
	for (unsigned k = 0; k < p->ndevs; k++) {
		const struct pci_dev *d = &p->devs[k];
		char line[256];
		int n = snprintf(line, sizeof(line), "blkcheck: pci %02x:%02x.%x %04x:%04x class %06x",
				 d->bus, d->dev, d->fn, d->vendor, d->device, d->class_rev >> 8);
		for (unsigned i = 0; i < PCI_NUM_BARS && n < (int)sizeof(line); i++) {
			const struct pci_bar *b = &d->bar[i];
			if (!b->size)
				continue;
			n += snprintf(line + n, sizeof(line) - (size_t)n, " bar%u %s 0x%lx+0x%lx%s%s", i,
				      b->is_io ? "io" : "mem", b->addr, b->size, b->is_64 ? " 64-bit" : "",
				      b->placed ? " placed" : "");
		}
		printf("%s\n", line);
	}
}

static const char *feature_name(unsigned bit)
{
	switch (bit) {
	case VIRTIO_BLK_F_SIZE_MAX: return "SIZE_MAX";
	case VIRTIO_BLK_F_SEG_MAX: return "SEG_MAX";
	case VIRTIO_BLK_F_GEOMETRY: return "GEOMETRY";
	case VIRTIO_BLK_F_RO: return "RO";
	case VIRTIO_BLK_F_BLK_SIZE: return "BLK_SIZE";
	case VIRTIO_BLK_F_FLUSH: return "FLUSH";
	case VIRTIO_BLK_F_TOPOLOGY: return "TOPOLOGY";
	case VIRTIO_BLK_F_CONFIG_WCE: return "CONFIG_WCE";
	case VIRTIO_BLK_F_MQ: return "MQ";
	case VIRTIO_BLK_F_DISCARD: return "DISCARD";
	case VIRTIO_BLK_F_WRITE_ZEROES: return "WRITE_ZEROES";
	case VIRTIO_F_INDIRECT_DESC: return "INDIRECT_DESC";
	case VIRTIO_F_EVENT_IDX: return "EVENT_IDX";
	case VIRTIO_F_VERSION_1: return "VERSION_1";
	case VIRTIO_F_ACCESS_PLATFORM: return "ACCESS_PLATFORM";
	case VIRTIO_F_RING_PACKED: return "RING_PACKED";
	}
	return NULL;
}

static void print_features(const char *what, uint64_t f)
{
	char line[400];
	int n = snprintf(line, sizeof(line), "blkcheck: %s 0x%lx", what, f);

	for (unsigned bit = 0; bit < 64 && n < (int)sizeof(line); bit++) {
		if (!((f >> bit) & 1))
			continue;
		const char *name = feature_name(bit);
		if (name)
			n += snprintf(line + n, sizeof(line) - (size_t)n, " %s", name);
		else
			n += snprintf(line + n, sizeof(line) - (size_t)n, " bit%u", bit);
	}
	printf("%s\n", line);
}

static void print_config(const struct blkdev *bd)
{
	const struct blk_config *c = &bd->cfg;

	print_features("offered", bd->vd.offered);
	print_features("negotiated", bd->vd.features);
	printf("blkcheck: capacity %lu sectors (%lu MiB), blk_size %u, seg_max %u, size_max %u\n",
	       c->capacity, c->capacity * BLK_SECTOR / MIB, c->blk_size, c->seg_max, c->size_max);
	printf("blkcheck: %u queues (device has %u, num_queues %u), queue size %u\n", bd->nq,
	       bd->vd.max_queues, c->num_queues, bd->q[0].size);
	if (virtio_has(&bd->vd, VIRTIO_BLK_F_DISCARD))
		printf("blkcheck: discard max %u sectors, %u segments, alignment %u\n",
		       c->max_discard_sectors, c->max_discard_seg, c->discard_sector_alignment);
	if (virtio_has(&bd->vd, VIRTIO_BLK_F_WRITE_ZEROES))
		printf("blkcheck: write-zeroes max %u sectors, %u segments, may_unmap %u\n",
		       c->max_write_zeroes_sectors, c->max_write_zeroes_seg, c->write_zeroes_may_unmap);
}

static int setup(struct ctx *c)
{
	int err = pci_init(&c->pci, c->o.access, 0xc0000000ULL, 0xe0000000ULL);
	if (!err)
		err = pci_scan(&c->pci);
	if (err) {
		printf("blkcheck: FAIL pci: %s (%d)\n", c->pci.error, err);
		return err;
	}
	print_pci(&c->pci);
	if (dma_pool_init(&c->pool)) {
		printf("blkcheck: FAIL no usable RAM for rings and buffers\n");
		return -ENOMEM;
	}
	uint64_t wanted = 1ULL << VIRTIO_BLK_F_SIZE_MAX | 1ULL << VIRTIO_BLK_F_SEG_MAX |
			  1ULL << VIRTIO_BLK_F_RO | 1ULL << VIRTIO_BLK_F_BLK_SIZE |
			  1ULL << VIRTIO_BLK_F_FLUSH | 1ULL << VIRTIO_BLK_F_MQ |
			  1ULL << VIRTIO_BLK_F_DISCARD | 1ULL << VIRTIO_BLK_F_WRITE_ZEROES |
			  1ULL << VIRTIO_F_ACCESS_PLATFORM;
	err = blkdev_open(&c->bd, &c->pci, &c->pool, 0, wanted, BLK_MAX_QUEUES, VIRTQ_MAX_SIZE);
	if (err) {
		printf("blkcheck: FAIL virtio-blk: %s (%d)\n", c->bd.error, err);
		return err;
	}
	print_config(&c->bd);

	unsigned nslots = c->bd.nq * (unsigned)c->o.depth;
	c->slots = dma_alloc(&c->pool, sizeof(struct slot) * nslots, 64);
	c->single = dma_alloc(&c->pool, sizeof(struct blk_req), 64);
	c->dwz = dma_alloc(&c->pool, 4096, 4096);
	c->small = dma_alloc(&c->pool, 8 * BLK_SECTOR, 4096);
	if (!c->slots || !c->single || !c->dwz || !c->small) {
		printf("blkcheck: FAIL out of guest memory\n");
		return -ENOMEM;
	}
	for (unsigned i = 0; i < nslots; i++) {
		c->slots[i].buf = dma_alloc(&c->pool, SLOT_BUF_SIZE, 4096);
		if (!c->slots[i].buf) {
			printf("blkcheck: FAIL out of guest memory for %u request buffers of %lu KiB"
			       " (depth %lu)\n", nslots, (uint64_t)SLOT_BUF_SIZE >> 10, c->o.depth);
			return -ENOMEM;
		}
	}
	return 0;
}

/* ---- building requests ---- */

static int in_zero_range(const struct ctx *c, uint64_t sector)
{
	struct blk_range z = blkplan_zeroed();

	return c->zero_applied && sector >= z.start && sector < z.start + z.count;
}

/* Fills or checks len bytes of buf that hold the disk's bytes from
 * disk_off, splitting at the zeroed range's edges; returns the offset of
 * the first bad byte, or len. */
static uint64_t span_mismatch(const struct ctx *c, const uint8_t *buf, uint64_t disk_off,
			      uint64_t len)
{
	uint64_t done = 0;

	while (done < len) {
		uint64_t off = disk_off + done;
		uint64_t sector = off / BLK_SECTOR;
		int zero = in_zero_range(c, sector);
		/* the run up to the next sector whose zero-ness differs */
		uint64_t end = off + (BLK_SECTOR - off % BLK_SECTOR);
		while (end < disk_off + len && in_zero_range(c, end / BLK_SECTOR) == zero)
			end += BLK_SECTOR;
		if (end > disk_off + len)
			end = disk_off + len;
		uint64_t bad = blkpat_mismatch(buf + done, c->o.seed, off, end - off, zero);
		if (bad < end - off)
			return done + bad;
		done = end - disk_off;
	}
	return len;
}

/* Segment lengths for total bytes in nseg pieces: sector multiples for
 * most requests, odd lengths at odd addresses for every fourth. */
static void split_segments(struct ctx *c, struct slot *s, unsigned qi, uint64_t total)
{
	struct blk_req *r = &s->req;
	uint32_t size_max = c->bd.cfg.size_max;
	unsigned max = blkdev_max_segs(&c->bd, qi);
	unsigned nseg = seg_cycle[s->k % (sizeof(seg_cycle) / sizeof(seg_cycle[0]))];
	int odd = s->k % 4 == 3;
	uint64_t unit = odd ? 1 : BLK_SECTOR;

	if (nseg > max)
		nseg = max;
	if (nseg > total / (odd ? 16 : BLK_SECTOR))
		nseg = (unsigned)(total / (odd ? 16 : BLK_SECTOR));
	if (size_max && nseg < (total + size_max - 1) / size_max)
		nseg = (unsigned)((total + size_max - 1) / size_max);
	if (nseg < 1)
		nseg = 1;

	uint64_t units = total / unit, base = units / nseg, extra = units % nseg;
	uint64_t mem = odd ? 3 : 0;
	for (unsigned i = 0; i < nseg; i++) {
		uint64_t len = (base + (i < extra)) * unit;
		/* shift some bytes between neighbours for uneven pieces */
		if (odd && i + 1 < nseg && len > 64 && !size_max)
			len -= (i * 37) % 61;
		if (i + 1 == nseg)
			len = total - (r->data_len);
		r->seg[i].addr = (uintptr_t)(s->buf + mem);
		r->seg[i].len = (uint32_t)len;
		r->data_len += len;
		mem += len + (odd ? 64 + i % 7 : BLK_SECTOR);
	}
	r->nseg = nseg;
}

static void build_data(struct ctx *c, struct slot *s, unsigned qi, uint32_t type, uint64_t sector,
		       uint32_t nsect)
{
	struct blk_req *r = &s->req;
	uint64_t total = (uint64_t)nsect * BLK_SECTOR, off = sector * BLK_SECTOR;

	r->hdr.type = type;
	r->hdr.reserved = 0;
	r->hdr.sector = sector;
	r->data_len = 0;
	split_segments(c, s, qi, total);
	for (unsigned i = 0; i < r->nseg; i++) {
		uint8_t *p = phys(r->seg[i].addr);
		if (type == VIRTIO_BLK_T_OUT)
			blkpat_fill(p, c->o.seed, off, r->seg[i].len);
		else
			memset(p, POISON, r->seg[i].len);
		off += r->seg[i].len;
	}
}

/* ---- running a job over all queues ---- */

static int job_next(struct ctx *c, struct job *j, uint64_t *sector, uint32_t *nsect)
{
	while (j->ri < j->nr && j->pos >= j->r[j->ri].count) {
		j->ri++;
		j->pos = 0;
	}
	if (j->ri == j->nr)
		return 0;
	uint64_t n = j->sizes[j->k % j->nsizes], left = j->r[j->ri].count - j->pos;
	uint64_t cap = MAX_REQ_SECTORS;
	if (c->bd.cfg.size_max) {
		uint64_t by_size = (uint64_t)blkdev_max_segs(&c->bd, 0) * c->bd.cfg.size_max / BLK_SECTOR;
		if (by_size < cap)
			cap = by_size ? by_size : 1;
	}
	if (n > cap)
		n = cap;
	if (n > left)
		n = left;
	*sector = j->r[j->ri].start + j->pos;
	*nsect = (uint32_t)n;
	j->pos += n;
	return 1;
}

static void job_error(struct job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void job_error(struct job *j, const char *fmt, ...)
{
	va_list ap;

	if (j->errors++)
		return;
	va_start(ap, fmt);
	vsnprintf(j->first_error, sizeof(j->first_error), fmt, ap);
	va_end(ap);
}

static void check_used_len(struct ctx *c, const struct blk_req *r)
{
	uint64_t want = blk_type_reads_disk(r->hdr.type) ? r->data_len + 1 : 1;

	if (r->used_len == want)
		return;
	if (!c->bad_used_len++)
		snprintf(c->used_len_error, sizeof(c->used_len_error),
			 "type %u sector %lu: used length %u, the device wrote %lu bytes",
			 r->hdr.type, r->hdr.sector, r->used_len, want);
}

static void complete(struct ctx *c, struct job *j, struct slot *s)
{
	struct blk_req *r = &s->req;

	check_used_len(c, r);
	if (r->status != VIRTIO_BLK_S_OK) {
		job_error(j, "queue %u: %s of %lu bytes at sector %lu: status %u (%s)", r->queue,
			  j->name, r->data_len, r->hdr.sector, r->status, blk_status_name(r->status));
		return;
	}
	if (r->hdr.type != VIRTIO_BLK_T_IN)
		return;
	uint64_t off = r->hdr.sector * BLK_SECTOR;
	for (unsigned i = 0; i < r->nseg; i++) {
		const uint8_t *p = phys(r->seg[i].addr);
		uint64_t bad = span_mismatch(c, p, off, r->seg[i].len);
		if (bad < r->seg[i].len) {
			uint64_t at = off + bad;
			int zero = in_zero_range(c, at / BLK_SECTOR);
			job_error(j, "queue %u: byte %lu (sector %lu + %lu) read 0x%02x, expected 0x%02x"
				  " (request at sector %lu, %lu bytes, segment %u of %u)", r->queue, at,
				  at / BLK_SECTOR, at % BLK_SECTOR, p[bad],
				  zero ? 0 : blkpat_byte(c->o.seed, at), r->hdr.sector, r->data_len, i,
				  r->nseg);
			return;
		}
		off += r->seg[i].len;
	}
}

static struct slot *slot_for(struct ctx *c, unsigned qi)
{
	struct slot *first_free = NULL;

	for (unsigned i = 0; i < c->o.depth; i++) {
		struct slot *s = &c->slots[qi * c->o.depth + i];
		if (s->parked)
			return s;
		if (!s->busy && !first_free)
			first_free = s;
	}
	return first_free;
}

/* Submits what fits on every queue, round robin; returns the number
 * submitted, or -errno. */
static int submit_round(struct ctx *c, struct job *j, int *more, unsigned *parked)
{
	int count = 0;

	for (unsigned qi = 0; qi < c->bd.nq; qi++) {
		struct slot *s = slot_for(c, qi);
		if (!s || (!s->parked && !*more))
			continue;
		if (!s->parked) {
			uint64_t sector;
			uint32_t nsect;
			if (!job_next(c, j, &sector, &nsect)) {
				*more = 0;
				continue;
			}
			s->k = j->k++;
			build_data(c, s, qi, j->type, sector, nsect);
		}
		int err = blkdev_submit(&c->bd, qi, &s->req);
		if (err == -ENOSPC) {
			if (!s->parked)
				(*parked)++;
			s->parked = 1;
			continue;
		}
		if (err)
			return err;
		if (s->parked)
			(*parked)--;
		s->parked = 0;
		s->busy = 1;
		count++;
	}
	return count;
}

static int run_job(struct ctx *c, struct job *j)
{
	unsigned in_flight = 0, parked = 0;
	int more = 1;
	uint64_t last_progress = time_ns();

	for (unsigned i = 0; i < c->bd.nq * c->o.depth; i++)
		c->slots[i].busy = c->slots[i].parked = 0;
	while (more || parked || in_flight) {
		int n, progress = 0;
		while ((n = submit_round(c, j, &more, &parked)) > 0) {
			in_flight += (unsigned)n;
			progress = 1;
		}
		if (n < 0) {
			job_error(j, "submitting: %d", n);
			return n;
		}
		for (unsigned qi = 0; qi < c->bd.nq; qi++)
			blkdev_kick(&c->bd, qi);
		for (unsigned qi = 0; qi < c->bd.nq; qi++) {
			struct blk_req *r;
			while ((r = blkdev_poll(&c->bd, qi))) {
				struct slot *s = (struct slot *)r;   /* req is the slot's first member */
				complete(c, j, s);
				s->busy = 0;
				in_flight--;
				progress = 1;
			}
		}
		if (progress) {
			last_progress = time_ns();
		} else if (time_ns() - last_progress > STALL_NS) {
			job_error(j, "%u requests not completed after %llu s", in_flight,
				  STALL_NS / 1000000000ULL);
			return -ETIMEDOUT;
		} else {
			cpu_relax();
		}
	}
	return 0;
}

static int run_ranges(struct ctx *c, const char *check, const char *name, uint32_t type,
		      const struct blk_range *r, unsigned nr, int report_ok)
{
	struct job j = { .name = name, .type = type, .r = r, .nr = nr };

	if (type == VIRTIO_BLK_T_OUT) {
		j.sizes = write_sizes;
		j.nsizes = sizeof(write_sizes) / sizeof(write_sizes[0]);
	} else {
		j.sizes = read_sizes;
		j.nsizes = sizeof(read_sizes) / sizeof(read_sizes[0]);
	}
	run_job(c, &j);
	if (j.errors) {
		check_fail(c, check, "%s (%lu bad requests)", j.first_error, j.errors);
		return -EIO;
	}
	if (report_ok)
		check_ok(check);
	return 0;
}

/* ---- one-off requests ---- */

static int run_single(struct ctx *c, uint32_t type, uint64_t sector, void *data, uint32_t len,
		      uint8_t *status)
{
	struct blk_req *r = c->single;
	unsigned qi = c->bd.nq - 1;     /* the last queue, for variety */

	memset(r, 0, sizeof(*r));
	r->hdr.type = type;
	r->hdr.sector = sector;
	if (data) {
		r->nseg = 1;
		r->seg[0].addr = (uintptr_t)data;
		r->seg[0].len = len;
	}
	int err = blkdev_run(&c->bd, qi, r, SINGLE_TIMEOUT_MS);
	if (err)
		return err;
	check_used_len(c, r);
	*status = r->status;
	return 0;
}

static void check_capacity(struct ctx *c)
{
	uint64_t cap = c->bd.cfg.capacity;

	if (c->o.sectors && cap != c->o.sectors)
		check_fail(c, "capacity", "%lu sectors, blkcheck.sectors=%lu", cap, c->o.sectors);
	else if (c->o.sectors)
		check_ok("capacity");
}

static void check_get_id(struct ctx *c)
{
	uint8_t *id = c->small, status;

	memset(id, 0xff, VIRTIO_BLK_ID_BYTES);
	int err = run_single(c, VIRTIO_BLK_T_GET_ID, 0, id, VIRTIO_BLK_ID_BYTES, &status);
	if (err || status != VIRTIO_BLK_S_OK) {
		check_fail(c, "get-id", "request: %s", err ? "timed out" : blk_status_name(status));
		return;
	}
	char s[VIRTIO_BLK_ID_BYTES + 1];
	unsigned n = 0;
	while (n < VIRTIO_BLK_ID_BYTES && id[n])
		n++;
	memcpy(s, id, n);
	s[n] = '\0';
	printf("blkcheck: serial '%s'\n", s);
	/* NUL-terminated when shorter than 20 bytes; what follows the NUL
	 * devices leave alone (QEMU) or pad with NULs: either will do. */
	if (n == VIRTIO_BLK_ID_BYTES && id[n - 1] == 0xff) {
		check_fail(c, "get-id", "the device wrote no string (20 bytes, no NUL, 0xff at the end)");
		return;
	}
	/* The device keeps the first 20 bytes of a longer serial. */
	unsigned want = c->o.serial_len < VIRTIO_BLK_ID_BYTES ? c->o.serial_len : VIRTIO_BLK_ID_BYTES;
	char w[VIRTIO_BLK_ID_BYTES + 1];
	memcpy(w, c->o.serial ? c->o.serial : "", want);
	w[want] = '\0';
	if (c->o.serial && (n != want || memcmp(s, w, want) != 0)) {
		check_fail(c, "get-id", "serial '%s', blkcheck.serial wants '%s'", s, w);
		return;
	}
	check_ok("get-id");
}

static void check_unsupported(struct ctx *c)
{
	uint8_t status;

	int err = run_single(c, UNKNOWN_TYPE, 0, NULL, 0, &status);
	if (err)
		check_fail(c, "unsupported", "request type %u not completed", UNKNOWN_TYPE);
	else if (status != VIRTIO_BLK_S_UNSUPP)
		check_fail(c, "unsupported", "request type %u: status %u (%s), not UNSUPP",
			   UNKNOWN_TYPE, status, blk_status_name(status));
	else
		check_ok("unsupported");
}

static void check_readonly(struct ctx *c)
{
	uint8_t status;

	if (!virtio_has(&c->bd.vd, VIRTIO_BLK_F_RO)) {
		check_fail(c, "read-only", "the device does not offer RO");
		return;
	}
	/* Another seed's bytes: if the write went through, the image changed. */
	blkpat_fill(c->small, c->o.seed + 1, 0, 8 * BLK_SECTOR);
	int err = run_single(c, VIRTIO_BLK_T_OUT, 0, c->small, 8 * BLK_SECTOR, &status);
	if (err)
		check_fail(c, "read-only", "write to sector 0 not completed");
	else if (status != VIRTIO_BLK_S_IOERR)
		check_fail(c, "read-only", "write to sector 0: status %u (%s), not IOERR", status,
			   blk_status_name(status));
	else
		check_ok("read-only");
}

static void check_flush(struct ctx *c)
{
	uint8_t status;

	if (!virtio_has(&c->bd.vd, VIRTIO_BLK_F_FLUSH)) {
		printf("blkcheck: flush skipped (not offered)\n");
		return;
	}
	int err = run_single(c, VIRTIO_BLK_T_FLUSH, 0, NULL, 0, &status);
	if (err || status != VIRTIO_BLK_S_OK)
		check_fail(c, "flush", "%s", err ? "not completed" : blk_status_name(status));
	else
		check_ok("flush");
}

/* Discard or write-zeroes over range, in requests of at most max_sectors
 * and max_seg segments (up to 8), all with the given flags. */
static int dwz_range(struct ctx *c, uint32_t type, struct blk_range range, uint32_t max_sectors,
		     uint32_t max_seg, uint32_t flags, char *why, size_t why_len)
{
	uint64_t pos = range.start, end = range.start + range.count;

	if (max_seg > 8)
		max_seg = 8;
	if (!max_sectors || !max_seg) {
		snprintf(why, why_len, "the device allows %u sectors in %u segments", max_sectors,
			 max_seg);
		return -EINVAL;
	}
	while (pos < end) {
		unsigned n = 0;
		/* more than one segment when allowed: split the chunk in two */
		for (; n < max_seg && pos < end; n++) {
			uint64_t len = end - pos;
			if (len > max_sectors)
				len = max_sectors;
			if (max_seg > 1 && n == 0 && len > 1)
				len /= 2;
			c->dwz[n] = (struct blk_dwz_seg){ pos, (uint32_t)len, flags };
			pos += len;
		}
		uint8_t status;
		int err = run_single(c, type, 0, c->dwz, n * (uint32_t)sizeof(struct blk_dwz_seg),
				     &status);
		if (err || status != VIRTIO_BLK_S_OK) {
			snprintf(why, why_len, "request of %u segments from sector %lu: %s", n,
				 c->dwz[0].sector, err ? "not completed" : blk_status_name(status));
			return -EIO;
		}
	}
	return 0;
}

/* The range and 9 sectors either side, where the disk holds something. */
static struct blk_range with_margin(struct blk_range r, uint64_t capacity)
{
	uint64_t start = r.start > 9 ? r.start - 9 : 0, end = r.start + r.count + 9;

	if (end > capacity)
		end = capacity;
	return (struct blk_range){ start, end - start };
}

static void check_write_zeroes(struct ctx *c)
{
	const struct blk_config *cfg = &c->bd.cfg;
	struct blk_range z = blkplan_zeroed(), first = { z.start, z.count / 2 };
	struct blk_range second = { z.start + first.count, z.count - first.count };
	char why[160];

	if (!virtio_has(&c->bd.vd, VIRTIO_BLK_F_WRITE_ZEROES)) {
		printf("blkcheck: write-zeroes skipped (not offered)\n");
		return;
	}
	/* unmap off, then on: both must read back zero */
	if (dwz_range(c, VIRTIO_BLK_T_WRITE_ZEROES, first, cfg->max_write_zeroes_sectors,
		      cfg->max_write_zeroes_seg, 0, why, sizeof(why)) ||
	    dwz_range(c, VIRTIO_BLK_T_WRITE_ZEROES, second, cfg->max_write_zeroes_sectors,
		      cfg->max_write_zeroes_seg, 1, why, sizeof(why))) {
		check_fail(c, "write-zeroes", "%s", why);
		return;
	}
	c->zero_applied = 1;
	struct blk_range around = with_margin(z, cfg->capacity);
	run_ranges(c, "write-zeroes", "read after write-zeroes", VIRTIO_BLK_T_IN, &around, 1, 1);
}

static void check_discard(struct ctx *c)
{
	const struct blk_config *cfg = &c->bd.cfg;
	struct blk_range d = blkplan_discarded();
	char why[160];

	if (!virtio_has(&c->bd.vd, VIRTIO_BLK_F_DISCARD)) {
		printf("blkcheck: discard skipped (not offered)\n");
		return;
	}
	if (dwz_range(c, VIRTIO_BLK_T_DISCARD, d, cfg->max_discard_sectors, cfg->max_discard_seg, 0,
		      why, sizeof(why))) {
		check_fail(c, "discard", "%s", why);
		return;
	}
	/* What a discarded range reads is undefined; writing it again must
	 * work, and leave its neighbours alone. */
	struct blk_range around = with_margin(d, cfg->capacity);
	if (run_ranges(c, "discard", "write after discard", VIRTIO_BLK_T_OUT, &d, 1, 0) == 0)
		run_ranges(c, "discard", "read after discard", VIRTIO_BLK_T_IN, &around, 1, 1);
}

/* ---- report ---- */

static void report_queues(struct ctx *c)
{
	uint64_t reqs = 0, bytes = 0;
	unsigned used = 0, shallow = 0;

	for (unsigned qi = 0; qi < c->bd.nq; qi++) {
		const struct blk_queue_stats *st = &c->bd.st[qi];
		printf("blkcheck: queue %u: %lu requests, %lu bytes, max %u in flight, %lu overtaken,"
		       " %lu doorbells (%lu not needed)\n", qi, st->completed, st->bytes,
		       st->max_in_flight, st->overtaken, c->bd.q[qi].kicks, c->bd.q[qi].kicks_skipped);
		reqs += st->completed;
		bytes += st->bytes;
		used += st->completed > 0;
		shallow += st->max_in_flight < 2 && c->o.depth >= 2;
	}
	if (used != c->bd.nq || shallow)
		check_fail(c, "queues", "%u of %u queues used, %u never had 2 requests in flight",
			   used, c->bd.nq, shallow);
	else if (c->bd.bad_used)
		check_fail(c, "queues", "%lu used ring entries named no request", c->bd.bad_used);
	else
		check_ok("queues");
	if (c->bad_used_len)
		check_fail(c, "used-len", "%s (%lu requests)", c->used_len_error, c->bad_used_len);
	else
		check_ok("used-len");
	printf("blkcheck: totals: %lu requests, %lu bytes, %u queues used\n", reqs, bytes, used);
}

int main(void)
{
	static struct ctx c;

	if (parse_opts(&c.o))
		return GUEST_EXIT_FAIL;
	time_init();
	printf("blkcheck: seed %lu, %s, depth %lu per queue\n", c.o.seed,
	       c.o.readonly ? "read-only" : c.o.verify_only ? "verify only" : "write and verify",
	       c.o.depth);
	if (setup(&c))
		return GUEST_EXIT_FAIL;
	c.nplan = blkplan_regions(c.bd.cfg.capacity, c.plan);
	if (!c.nplan) {
		printf("blkcheck: FAIL capacity %lu sectors: at least %lu needed\n",
		       c.bd.cfg.capacity, BLKPLAN_MIN_SECTORS);
		return GUEST_EXIT_FAIL;
	}
	uint64_t plan_sectors = 0;
	for (unsigned i = 0; i < c.nplan; i++)
		plan_sectors += c.plan[i].count;
	printf("blkcheck: plan %u regions, %lu sectors (%s)\n", c.nplan, plan_sectors,
	       c.nplan == 1 && plan_sectors == c.bd.cfg.capacity ? "whole disk" : "spread");

	uint64_t t0 = time_ns();
	check_capacity(&c);
	check_get_id(&c);
	check_unsupported(&c);
	if (c.o.readonly)
		check_readonly(&c);
	if (!c.o.verify_only) {
		if (virtio_has(&c.bd.vd, VIRTIO_BLK_F_RO)) {
			check_fail(&c, "write", "the device is read-only (RO offered)");
		} else if (run_ranges(&c, "write", "write", VIRTIO_BLK_T_OUT, c.plan, c.nplan, 1) == 0) {
			run_ranges(&c, "read", "read", VIRTIO_BLK_T_IN, c.plan, c.nplan, 1);
			check_write_zeroes(&c);
			check_discard(&c);
			check_flush(&c);
		}
	}
	c.zero_applied = 1;
	run_ranges(&c, "verify", "verify", VIRTIO_BLK_T_IN, c.plan, c.nplan, 1);
	uint64_t ms = (time_ns() - t0) / 1000000;
	report_queues(&c);
	printf("blkcheck: %lu ms (%s)\n", ms, time_source());
	if (virtio_status(&c.bd.vd) & (VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED))
		check_fail(&c, "status", "device status 0x%x", virtio_status(&c.bd.vd));
	virtio_reset(&c.bd.vd);
	if (c.checks_failed) {
		printf("blkcheck: %u checks failed\n", c.checks_failed);
		return GUEST_EXIT_FAIL;
	}
	printf("blkcheck: all checks passed\n");
	return 0;
}
