/* blkbench: a virtio-blk benchmark (README.md). Random 4 KiB reads and
 * writes at queue depth 1 and 32, sequential 1 MiB reads and writes, each
 * for blkbench.ms milliseconds (default 1000) or blkbench.ops requests,
 * whichever ends first, on the first queue of the first virtio-blk device;
 * blkbench.only=NAME (randread, randwrite, seqread, seqwrite) runs the rows
 * of that name alone. One line per row:
 *
 *   blkbench: randread qd1 bs 4096 ops N ms T iops I mbps M.M lat_us L
 *
 * It writes over the whole disk: give it a scratch image. No assertion on
 * speed; a request that fails ends the run with exit code 1. The hot loop
 * runs in ring 3 and polls; time comes from kvmclock or the TSC. */
#include "blkdev.h"

#define KIB              1024u
#define MIB              (1024u * 1024u)
#define MAX_QD           32
#define DEFAULT_MS       1000
#define DEFAULT_SEQ_QD   4
#define STALL_NS         10000000000ULL

struct row {
	const char *name;
	uint32_t type;
	int sequential;
	uint32_t bs;
	unsigned qd;                /* 0: blkbench.seq_qd */
};

static const struct row rows[] = {
	{ "randread", VIRTIO_BLK_T_IN, 0, 4 * KIB, 1 },
	{ "randread", VIRTIO_BLK_T_IN, 0, 4 * KIB, 32 },
	{ "randwrite", VIRTIO_BLK_T_OUT, 0, 4 * KIB, 1 },
	{ "randwrite", VIRTIO_BLK_T_OUT, 0, 4 * KIB, 32 },
	{ "seqread", VIRTIO_BLK_T_IN, 1, MIB, 0 },
	{ "seqwrite", VIRTIO_BLK_T_OUT, 1, MIB, 0 },
};

struct slot {
	struct blk_req req;
	uint8_t *buf;
	uint64_t t_submit;
	int busy;
};

struct bench {
	struct blkdev bd;
	struct pci pci;
	struct dma_pool pool;
	struct slot slots[MAX_QD];
	uint64_t ms, max_ops, seq_qd, rng;
	uint64_t seq_next;          /* byte offset of the next sequential request */
	const char *only;           /* blkbench.only=NAME: the rows of that name alone */
};

struct result {
	uint64_t ops, bytes, ns, lat_ns;
	unsigned errors;
	char error[160];
};

static uint64_t rng_next(uint64_t *s)
{
	/* xorshift64* */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dULL;
}

static int parse_opts(struct bench *b)
{
	const char *cl = bootinfo.cmdline;

	b->ms = DEFAULT_MS;
	b->seq_qd = DEFAULT_SEQ_QD;
	b->rng = 0x853c49e6748fea9bULL;
	if (cmdline_get_u64(cl, "blkbench.ms", &b->ms) == -EINVAL ||
	    cmdline_get_u64(cl, "blkbench.ops", &b->max_ops) == -EINVAL ||
	    cmdline_get_u64(cl, "blkbench.seq_qd", &b->seq_qd) == -EINVAL ||
	    cmdline_get_u64(cl, "blkbench.seed", &b->rng) == -EINVAL) {
		printf("blkbench: FAIL malformed option (ms, ops, seq_qd, seed take numbers)\n");
		return -EINVAL;
	}
	b->only = cmdline_get(cl, "blkbench.only");
	if (b->seq_qd < 1 || b->seq_qd > MAX_QD || !b->rng) {
		printf("blkbench: FAIL blkbench.seq_qd=%lu: 1 to %d; blkbench.seed: not 0\n",
		       b->seq_qd, MAX_QD);
		return -EINVAL;
	}
	return 0;
}

static int setup(struct bench *b)
{
	int err = pci_init(&b->pci, PCI_ACCESS_NONE, 0xc0000000ULL, 0xe0000000ULL);
	if (!err)
		err = pci_scan(&b->pci);
	if (err) {
		printf("blkbench: FAIL pci: %s (%d)\n", b->pci.error, err);
		return err;
	}
	if (dma_pool_init(&b->pool)) {
		printf("blkbench: FAIL no usable RAM for rings and buffers\n");
		return -ENOMEM;
	}
	uint64_t wanted = 1ULL << VIRTIO_BLK_F_SIZE_MAX | 1ULL << VIRTIO_BLK_F_SEG_MAX |
			  1ULL << VIRTIO_BLK_F_RO | 1ULL << VIRTIO_BLK_F_BLK_SIZE |
			  1ULL << VIRTIO_BLK_F_FLUSH | 1ULL << VIRTIO_F_ACCESS_PLATFORM;
	err = blkdev_open(&b->bd, &b->pci, &b->pool, 0, wanted, 1, VIRTQ_MAX_SIZE);
	if (err) {
		printf("blkbench: FAIL virtio-blk: %s (%d)\n", b->bd.error, err);
		return err;
	}
	if (virtio_has(&b->bd.vd, VIRTIO_BLK_F_RO)) {
		printf("blkbench: FAIL the disk is read-only\n");
		return -EINVAL;
	}
	if (b->bd.cfg.capacity * BLK_SECTOR < 2 * MIB) {
		printf("blkbench: FAIL capacity %lu sectors: at least 2 MiB needed\n",
		       b->bd.cfg.capacity);
		return -EINVAL;
	}
	uint32_t size_max = b->bd.cfg.size_max;
	if (size_max ? (MIB + size_max - 1) / size_max > blkdev_max_segs(&b->bd, 0)
		     : blkdev_max_segs(&b->bd, 0) < 1) {
		printf("blkbench: FAIL 1 MiB does not fit %u segments of %u bytes\n",
		       blkdev_max_segs(&b->bd, 0), size_max);
		return -EINVAL;
	}
	for (unsigned i = 0; i < MAX_QD; i++) {
		b->slots[i].buf = dma_alloc(&b->pool, MIB, 4096);
		if (!b->slots[i].buf) {
			printf("blkbench: FAIL out of guest memory for %d buffers of 1 MiB\n", MAX_QD);
			return -ENOMEM;
		}
		/* Data that no format stores as a hole. */
		for (unsigned k = 0; k < MIB; k += 8)
			*(uint64_t *)(b->slots[i].buf + k) = rng_next(&b->rng) | 1;
	}
	return 0;
}

/* The request's data as segments of at most size_max bytes. */
static void build(struct bench *b, struct slot *s, const struct row *row)
{
	struct blk_req *r = &s->req;
	uint64_t blocks = b->bd.cfg.capacity * BLK_SECTOR / row->bs, off;
	uint32_t seg = b->bd.cfg.size_max && b->bd.cfg.size_max < row->bs ? b->bd.cfg.size_max : row->bs;

	if (row->sequential) {
		if (b->seq_next + row->bs > blocks * row->bs)
			b->seq_next = 0;
		off = b->seq_next;
		b->seq_next += row->bs;
	} else {
		off = rng_next(&b->rng) % blocks * row->bs;
	}
	r->hdr.type = row->type;
	r->hdr.reserved = 0;
	r->hdr.sector = off / BLK_SECTOR;
	r->nseg = 0;
	for (uint32_t done = 0; done < row->bs; done += seg) {
		r->seg[r->nseg].addr = (uintptr_t)(s->buf + done);
		r->seg[r->nseg].len = row->bs - done < seg ? row->bs - done : seg;
		r->nseg++;
	}
}

static void run_row(struct bench *b, const struct row *row, unsigned qd, struct result *res)
{
	uint64_t t0 = time_ns(), end = t0 + b->ms * 1000000, issued = 0, now = t0;
	uint64_t last_progress = t0;
	unsigned in_flight = 0;

	memset(res, 0, sizeof(*res));
	b->seq_next = 0;
	for (;;) {
		int stop = now >= end || (b->max_ops && issued >= b->max_ops);
		for (unsigned i = 0; i < qd && !stop; i++) {
			struct slot *s = &b->slots[i];
			if (s->busy)
				continue;
			build(b, s, row);
			s->t_submit = now;
			if (blkdev_submit(&b->bd, 0, &s->req))
				break;          /* ring full: wait for completions */
			s->busy = 1;
			in_flight++;
			if (b->max_ops && ++issued >= b->max_ops)
				break;
		}
		blkdev_kick(&b->bd, 0);
		struct blk_req *r;
		now = time_ns();
		while ((r = blkdev_poll(&b->bd, 0))) {
			struct slot *s = (struct slot *)r;
			s->busy = 0;
			in_flight--;
			res->ops++;
			res->bytes += row->bs;
			res->lat_ns += now - s->t_submit;
			last_progress = now;
			if (r->status != VIRTIO_BLK_S_OK && !res->errors++)
				snprintf(res->error, sizeof(res->error), "%s at sector %lu: status %u (%s)",
					 row->name, r->hdr.sector, r->status, blk_status_name(r->status));
		}
		if (!in_flight && (now >= end || (b->max_ops && issued >= b->max_ops)))
			break;
		if (now - last_progress > STALL_NS) {
			snprintf(res->error, sizeof(res->error), "%u requests not completed after 10 s",
				 in_flight);
			res->errors++;
			break;
		}
	}
	res->ns = time_ns() - t0;
}

static int selected(const struct bench *b, const struct row *row)
{
	size_t n = strlen(row->name);

	return !b->only || (!strncmp(b->only, row->name, n) &&
			    (b->only[n] == 0 || b->only[n] == ' '));
}

static void print_row(const struct row *row, unsigned qd, const struct result *res)
{
	uint64_t ns = res->ns ? res->ns : 1;
	uint64_t iops = (uint64_t)((unsigned __int128)res->ops * 1000000000ULL / ns);
	uint64_t mbps10 = (uint64_t)((unsigned __int128)res->bytes * 10000 / ns);  /* 0.1 MB/s */
	uint64_t lat_us = res->ops ? res->lat_ns / res->ops / 1000 : 0;

	printf("blkbench: %s qd%u bs %u ops %lu ms %lu iops %lu mbps %lu.%lu lat_us %lu\n", row->name,
	       qd, row->bs, res->ops, res->ns / 1000000, iops, mbps10 / 10, mbps10 % 10, lat_us);
}

int main(void)
{
	static struct bench b;

	if (parse_opts(&b))
		return GUEST_EXIT_FAIL;
	time_init();
	if (setup(&b))
		return GUEST_EXIT_FAIL;
	printf("blkbench: capacity %lu MiB, queue size %u, %lu ms or %lu ops per row (%s)\n",
	       b.bd.cfg.capacity * BLK_SECTOR / MIB, b.bd.q[0].size, b.ms, b.max_ops, time_source());
	for (unsigned i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		unsigned qd = rows[i].qd ? rows[i].qd : (unsigned)b.seq_qd;
		struct result res;
		if (!selected(&b, &rows[i]))
			continue;
		run_row(&b, &rows[i], qd, &res);
		print_row(&rows[i], qd, &res);
		if (res.errors) {
			printf("blkbench: FAIL %s (%u requests)\n", res.error, res.errors);
			virtio_reset(&b.bd.vd);
			return GUEST_EXIT_FAIL;
		}
	}
	virtio_reset(&b.bd.vd);
	printf("blkbench: done\n");
	return 0;
}
