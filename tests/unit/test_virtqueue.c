/* Split virtqueues (vmm/virtqueue.c) on rings crafted in guest RAM, and the
 * virtio-blk device on a real KVM VM given malformed rings: the device must
 * set DEVICE_NEEDS_RESET and go on, never crash, never touch memory outside
 * guest RAM. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "devices.h"
#include "log.h"
#include "mmio.h"
#include "pci.h"
#include "virtio_pci.h"
#include "virtqueue.h"
#include "vmfixture.h"

#define RAM        (16u << 20)
#define QSIZE      8
#define DESC       0x10000ULL
#define AVAIL      0x11000ULL
#define USED       0x12000ULL
#define INDIRECT   0x13000ULL
#define BUF        0x20000ULL
#define CAP        16

struct ring {
	struct guest_mem gm;
	struct virtq vq;
	struct virtq_elem e;
	struct iovec iov[CAP];
};

static uint8_t *gp(struct ring *r, uint64_t gpa)
{
	uint8_t *p = guest_mem_ptr(&r->gm, gpa, 1);

	assert_non_null(p);
	return p;
}

static void put_desc(struct ring *r, uint64_t table, unsigned i, uint64_t addr, uint32_t len,
		     uint16_t flags, uint16_t next)
{
	struct virtq_desc d = { addr, len, flags, next };

	memcpy(gp(r, table + 16 * i), &d, sizeof(d));
}

static void put16(struct ring *r, uint64_t gpa, uint16_t v)
{
	memcpy(gp(r, gpa), &v, 2);
}

static uint16_t get16(struct ring *r, uint64_t gpa)
{
	uint16_t v;

	memcpy(&v, gp(r, gpa), 2);
	return v;
}

/* Makes head available as avail ring entry n (the driver's idx then n+1). */
static void make_avail(struct ring *r, uint16_t n, uint16_t head)
{
	put16(r, AVAIL + 4 + 2 * (n % QSIZE), head);
	put16(r, AVAIL + 2, (uint16_t)(n + 1));
}

static int setup(void **state)
{
	struct ring *r = calloc(1, sizeof(*r));
	char err[160];

	assert_non_null(r);
	assert_int_equal(guest_mem_init(&r->gm, RAM), 0);
	assert_int_equal(virtq_init(&r->vq, &r->gm, QSIZE, DESC, AVAIL, USED, false, true, err,
				    sizeof(err)), 0);
	r->e.iov = r->iov;
	r->e.cap = CAP;
	*state = r;
	return 0;
}

static int teardown(void **state)
{
	struct ring *r = *state;

	guest_mem_free(&r->gm);
	free(r);
	return 0;
}

static void test_init_checks(void **state)
{
	struct ring *r = *state;
	struct virtq vq;
	char err[160];

	assert_int_equal(virtq_init(&vq, &r->gm, 6, DESC, AVAIL, USED, false, false, err,
				    sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "power of two"));
	assert_int_equal(virtq_init(&vq, &r->gm, QSIZE, DESC + 8, AVAIL, USED, false, false, err,
				    sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "descriptor table at 0x10008 is not 16-byte aligned"));
	assert_int_equal(virtq_init(&vq, &r->gm, QSIZE, DESC, RAM - 4, USED, false, false, err,
				    sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "driver area"));
	assert_int_equal(virtq_init(&vq, &r->gm, QSIZE, DESC, AVAIL, 0xd0000000ULL, false, false,
				    err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "device area [0xd0000000, +70) is not guest RAM"));
}

/* A virtio-blk-shaped chain: header (readable), data and status (writable). */
static void test_chain(void **state)
{
	struct ring *r = *state;
	uint32_t used[2];

	assert_int_equal(virtq_pop(&r->vq, &r->e), 0);
	put_desc(r, DESC, 3, BUF, 16, VIRTQ_DESC_F_NEXT, 5);
	put_desc(r, DESC, 5, BUF + 0x1000, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 0);
	put_desc(r, DESC, 0, BUF + 0x2000, 1, VIRTQ_DESC_F_WRITE, 0);
	make_avail(r, 0, 3);
	assert_true(virtq_has_avail(&r->vq));
	assert_int_equal(virtq_pop(&r->vq, &r->e), 1);
	assert_int_equal(r->e.head, 3);
	assert_int_equal(r->e.nout, 1);
	assert_int_equal(r->e.nin, 2);
	assert_int_equal(r->e.out_len, 16);
	assert_int_equal(r->e.in_len, 513);
	assert_ptr_equal(r->e.iov[1].iov_base, gp(r, BUF + 0x1000));
	assert_false(virtq_has_avail(&r->vq));
	assert_int_equal(virtq_pop(&r->vq, &r->e), 0);

	/* Reading and writing the parts by offset, across buffers. */
	memcpy(gp(r, BUF), "0123456789abcdef", 16);
	{
		char hdr[8];

		assert_true(virtq_elem_read(&r->e, 8, hdr, 8));
		assert_memory_equal(hdr, "89abcdef", 8);
		assert_false(virtq_elem_read(&r->e, 9, hdr, 8));
		assert_true(virtq_elem_write(&r->e, 510, "xyz", 3));
		assert_memory_equal(gp(r, BUF + 0x1000 + 510), "xy", 2);
		assert_int_equal(*gp(r, BUF + 0x2000), 'z');
		assert_false(virtq_elem_write(&r->e, 511, "xyz", 3));
	}

	virtq_push(&r->vq, 3, 513);
	assert_int_equal(get16(r, USED + 2), 1);
	memcpy(used, gp(r, USED + 4), 8);
	assert_int_equal(used[0], 3);
	assert_int_equal(used[1], 513);
	/* Without EVENT_IDX: an interrupt unless the driver said no. */
	assert_true(virtq_should_notify(&r->vq));
	assert_false(virtq_should_notify(&r->vq));      /* nothing new */
	put16(r, AVAIL, VIRTQ_AVAIL_F_NO_INTERRUPT);
	virtq_push(&r->vq, 3, 1);
	assert_false(virtq_should_notify(&r->vq));
	/* Suppressing notifications sets the used ring's flag. */
	virtq_set_notify(&r->vq, false);
	assert_int_equal(get16(r, USED), VIRTQ_USED_F_NO_NOTIFY);
	virtq_set_notify(&r->vq, true);
	assert_int_equal(get16(r, USED), 0);
}

static void test_indirect(void **state)
{
	struct ring *r = *state;
	char err[160];

	put_desc(r, INDIRECT, 0, BUF, 16, VIRTQ_DESC_F_NEXT, 1);
	put_desc(r, INDIRECT, 1, BUF + 0x100, 4096, VIRTQ_DESC_F_NEXT, 2);
	put_desc(r, INDIRECT, 2, BUF + 0x2000, 1, VIRTQ_DESC_F_WRITE, 0);
	/* A direct buffer, then the indirect table at the end of the chain. */
	put_desc(r, DESC, 1, BUF + 0x3000, 8, VIRTQ_DESC_F_NEXT, 2);
	put_desc(r, DESC, 2, INDIRECT, 3 * 16, VIRTQ_DESC_F_INDIRECT, 0);
	make_avail(r, 0, 1);
	assert_int_equal(virtq_pop(&r->vq, &r->e), 1);
	assert_int_equal(r->e.nout, 3);
	assert_int_equal(r->e.nin, 1);
	assert_int_equal(r->e.out_len, 8 + 16 + 4096);

	/* Without VIRTIO_F_INDIRECT_DESC the same chain is malformed. */
	assert_int_equal(virtq_init(&r->vq, &r->gm, QSIZE, DESC, AVAIL, USED, false, false, err,
				    sizeof(err)), 0);
	assert_int_equal(virtq_pop(&r->vq, &r->e), -EINVAL);
	assert_true(r->vq.broken);
	assert_non_null(strstr(r->vq.err, "VIRTIO_F_INDIRECT_DESC was not negotiated"));
	/* A broken queue stays broken. */
	assert_int_equal(virtq_pop(&r->vq, &r->e), -EINVAL);
	assert_false(virtq_has_avail(&r->vq));
}

/* The 16-bit indices wrap; ring slots are taken modulo the size. */
static void test_wrap_around(void **state)
{
	struct ring *r = *state;

	for (unsigned i = 0; i < QSIZE; i++)
		put_desc(r, DESC, i, BUF + 0x100 * i, 64, VIRTQ_DESC_F_WRITE, 0);
	r->vq.last_avail = 65534;
	r->vq.used_idx = 65534;
	r->vq.signalled_used = 65534;
	for (uint16_t n = 65534, k = 0; k < 4; n++, k++)
		make_avail(r, n, (uint16_t)(k + 2));
	assert_int_equal(get16(r, AVAIL + 2), 2);       /* 65534 + 4, wrapped */
	for (unsigned k = 0; k < 4; k++) {
		assert_int_equal(virtq_pop(&r->vq, &r->e), 1);
		assert_int_equal(r->e.head, k + 2);
		virtq_push(&r->vq, r->e.head, 64);
	}
	assert_int_equal(virtq_pop(&r->vq, &r->e), 0);
	assert_int_equal(r->vq.last_avail, 2);
	assert_int_equal(get16(r, USED + 2), 2);
	/* Entry 65535 % 8 = 7 holds the second chain. */
	assert_int_equal(*(uint32_t *)gp(r, USED + 4 + 8 * 7), 3);
	assert_int_equal(*(uint32_t *)gp(r, USED + 4 + 8 * 0), 4);
}

/* VIRTIO_F_EVENT_IDX: interrupts when used_event is crossed, and
 * avail_event tells the driver where to notify. */
static void test_event_idx(void **state)
{
	struct ring *r = *state;
	char err[160];

	assert_int_equal(virtq_init(&r->vq, &r->gm, QSIZE, DESC, AVAIL, USED, true, true, err,
				    sizeof(err)), 0);
	for (unsigned i = 0; i < QSIZE; i++)
		put_desc(r, DESC, i, BUF, 64, VIRTQ_DESC_F_WRITE, 0);
	for (uint16_t n = 0; n < 5; n++)
		make_avail(r, n, n);
	/* used_event = 2: the driver wants an interrupt once entry 2 is used. */
	put16(r, AVAIL + 4 + 2 * QSIZE, 2);
	assert_int_equal(virtq_pop(&r->vq, &r->e), 1);
	virtq_push(&r->vq, r->e.head, 0);               /* used idx 1 */
	assert_false(virtq_should_notify(&r->vq));
	assert_int_equal(virtq_pop(&r->vq, &r->e), 1);
	virtq_push(&r->vq, r->e.head, 0);               /* 2 */
	assert_false(virtq_should_notify(&r->vq));
	assert_int_equal(virtq_pop(&r->vq, &r->e), 1);
	virtq_push(&r->vq, r->e.head, 0);               /* 3: entry 2 is used */
	assert_true(virtq_should_notify(&r->vq));
	/* Two at once, crossing used_event = 3 between them. */
	put16(r, AVAIL + 4 + 2 * QSIZE, 3);
	assert_int_equal(virtq_pop(&r->vq, &r->e), 1);
	virtq_push(&r->vq, r->e.head, 0);
	assert_int_equal(virtq_pop(&r->vq, &r->e), 1);
	virtq_push(&r->vq, r->e.head, 0);
	assert_true(virtq_should_notify(&r->vq));
	/* Notifications on: avail_event = the next entry the device takes. */
	virtq_set_notify(&r->vq, true);
	assert_int_equal(get16(r, USED + 4 + 8 * QSIZE), 5);
	/* EVENT_IDX leaves the used ring's flags alone. */
	virtq_set_notify(&r->vq, false);
	assert_int_equal(get16(r, USED), 0);
}

/* ---- malformed rings: each returns -EINVAL (or -ENOSPC), says why, and
 * leaves the queue broken ---- */

struct bad_ring {
	const char *name;
	void (*build)(struct ring *r);
	int ret;
	const char *phrase;
};

static void bad_loop(struct ring *r)
{
	put_desc(r, DESC, 0, BUF, 16, VIRTQ_DESC_F_NEXT, 1);
	put_desc(r, DESC, 1, BUF, 16, VIRTQ_DESC_F_NEXT, 0);
	make_avail(r, 0, 0);
}

static void bad_self_loop_indirect(struct ring *r)
{
	put_desc(r, INDIRECT, 0, BUF, 16, VIRTQ_DESC_F_NEXT, 0);
	put_desc(r, DESC, 0, INDIRECT, 16, VIRTQ_DESC_F_INDIRECT, 0);
	make_avail(r, 0, 0);
}

static void bad_out_of_ram(struct ring *r)
{
	put_desc(r, DESC, 0, RAM - 8, 16, 0, 0);
	make_avail(r, 0, 0);
}

static void bad_in_pci_hole(struct ring *r)
{
	put_desc(r, DESC, 0, 0xc0000000ULL, 4096, VIRTQ_DESC_F_WRITE, 0);
	make_avail(r, 0, 0);
}

static void bad_wrapping_address(struct ring *r)
{
	put_desc(r, DESC, 0, ~0ULL - 4, 4096, 0, 0);
	make_avail(r, 0, 0);
}

static void bad_too_long(struct ring *r)
{
	/* An indirect table of 32 buffers: more than the 16 the element
	 * holds (the device's SEG_MAX promise broken). */
	for (unsigned i = 0; i < 32; i++)
		put_desc(r, INDIRECT, i, BUF, 512, i < 31 ? VIRTQ_DESC_F_NEXT : 0,
			 (uint16_t)(i + 1));
	put_desc(r, DESC, 0, INDIRECT, 32 * 16, VIRTQ_DESC_F_INDIRECT, 0);
	make_avail(r, 0, 0);
}

static void bad_head_index(struct ring *r)
{
	make_avail(r, 0, QSIZE);
}

static void bad_next_index(struct ring *r)
{
	put_desc(r, DESC, 0, BUF, 16, VIRTQ_DESC_F_NEXT, 200);
	make_avail(r, 0, 0);
}

static void bad_avail_jump(struct ring *r)
{
	put_desc(r, DESC, 0, BUF, 16, 0, 0);
	put16(r, AVAIL + 2, QSIZE + 1);
}

static void bad_zero_length_indirect(struct ring *r)
{
	put_desc(r, DESC, 0, INDIRECT, 0, VIRTQ_DESC_F_INDIRECT, 0);
	make_avail(r, 0, 0);
}

static void bad_odd_length_indirect(struct ring *r)
{
	put_desc(r, DESC, 0, INDIRECT, 24, VIRTQ_DESC_F_INDIRECT, 0);
	make_avail(r, 0, 0);
}

static void bad_nested_indirect(struct ring *r)
{
	put_desc(r, INDIRECT, 0, INDIRECT + 0x100, 16, VIRTQ_DESC_F_INDIRECT, 0);
	put_desc(r, DESC, 0, INDIRECT, 16, VIRTQ_DESC_F_INDIRECT, 0);
	make_avail(r, 0, 0);
}

static void bad_indirect_with_next(struct ring *r)
{
	put_desc(r, INDIRECT, 0, BUF, 16, 0, 0);
	put_desc(r, DESC, 0, INDIRECT, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1);
	make_avail(r, 0, 0);
}

static void bad_indirect_out_of_ram(struct ring *r)
{
	put_desc(r, DESC, 0, RAM - 16, 64, VIRTQ_DESC_F_INDIRECT, 0);
	make_avail(r, 0, 0);
}

static void bad_read_after_write(struct ring *r)
{
	put_desc(r, DESC, 0, BUF, 1, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	put_desc(r, DESC, 1, BUF + 16, 16, 0, 0);
	make_avail(r, 0, 0);
}

static const struct bad_ring bad_rings[] = {
	{ "loop", bad_loop, -EINVAL, "loops or is longer than its queue" },
	{ "loop in an indirect table", bad_self_loop_indirect, -EINVAL,
	  "loops or is longer than its indirect table" },
	{ "buffer past the end of RAM", bad_out_of_ram, -EINVAL, "is not guest RAM" },
	{ "buffer in the PCI hole", bad_in_pci_hole, -EINVAL, "[0xc0000000, +4096) of chain 0" },
	{ "buffer address wrapping", bad_wrapping_address, -EINVAL, "is not guest RAM" },
	{ "chain longer than the element", bad_too_long, -ENOSPC, "more than 16 buffers" },
	{ "head index out of range", bad_head_index, -EINVAL, "names descriptor 8 of 8" },
	{ "next index out of range", bad_next_index, -EINVAL, "next descriptor 200" },
	{ "avail index jumps past the size", bad_avail_jump, -EINVAL, "from 0 to 9" },
	{ "zero-length indirect table", bad_zero_length_indirect, -EINVAL,
	  "indirect table of 0 bytes" },
	{ "indirect table of 24 bytes", bad_odd_length_indirect, -EINVAL,
	  "indirect table of 24 bytes" },
	{ "nested indirect table", bad_nested_indirect, -EINVAL, "inside an indirect table" },
	{ "indirect with NEXT", bad_indirect_with_next, -EINVAL, "indirect descriptor with NEXT" },
	{ "indirect table outside RAM", bad_indirect_out_of_ram, -EINVAL,
	  "indirect table [0xfffff0, +64) is not guest RAM" },
	{ "readable after writable", bad_read_after_write, -EINVAL,
	  "device-readable buffer after a writable one" },
};

static void test_malformed(void **state)
{
	for (size_t i = 0; i < sizeof(bad_rings) / sizeof(bad_rings[0]); i++) {
		struct ring *r;
		int ret;

		setup((void **)&r);
		bad_rings[i].build(r);
		ret = virtq_pop(&r->vq, &r->e);
		if (ret != bad_rings[i].ret || !r->vq.broken ||
		    !strstr(r->vq.err, bad_rings[i].phrase))
			fail_msg("%s: virtq_pop %d (want %d), broken %d, '%s' (want '%s')",
				 bad_rings[i].name, ret, bad_rings[i].ret, r->vq.broken, r->vq.err,
				 bad_rings[i].phrase);
		/* Nothing was taken: the used ring is untouched. */
		assert_int_equal(get16(r, USED + 2), 0);
		teardown((void **)&r);
	}
}

/* ---- the virtio-blk device with malformed requests ---- */

#define BAR0       PCI_MMIO32_BASE
#define DEV_RAM    (64u << 20)

struct devfix {
	struct vmfix *f;
	char path[64];
};

static void mw(struct vmfix *f, uint64_t off, uint64_t v, unsigned len)
{
	uint8_t b[8];

	for (unsigned i = 0; i < len; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	assert_true(mmio_access(&f->vm->mmio, BAR0 + off, true, b, len));
}

static uint64_t mr(struct vmfix *f, uint64_t off, unsigned len)
{
	uint8_t b[8] = { 0 };
	uint64_t v = 0;

	assert_true(mmio_access(&f->vm->mmio, BAR0 + off, false, b, len));
	for (unsigned i = 0; i < len; i++)
		v |= (uint64_t)b[i] << (8 * i);
	return v;
}

static int dev_setup(void **state)
{
	static const struct device_type *const types[] = { &pci_device, &virtio_blk_device, NULL };
	struct devfix *d = calloc(1, sizeof(*d));
	struct vmm_config cfg;
	char err[512];
	int fd;

	if (!vmfix_kvm_usable("test_virtqueue"))
		return 0;
	assert_non_null(d);
	snprintf(d->path, sizeof(d->path), "/tmp/drover-test-vq-XXXXXX");
	fd = mkstemp(d->path);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	assert_int_equal(pwrite(fd, "sector zero", 11, 0), 11);
	close(fd);
	vmm_config_init(&cfg);
	cfg.serial = SERIAL_NONE;
	cfg.ndisks = 1;
	cfg.disks[0] = (struct vmm_disk){ .path = d->path, .format = "raw", .id = "d0",
					  .queues = 1, .cache = DISK_CACHE_WRITEBACK };
	if (vmfix_create(&d->f, DEV_RAM, &cfg, types, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	*state = d;
	return 0;
}

static int dev_teardown(void **state)
{
	struct devfix *d = *state;

	if (!d)
		return 0;
	vmfix_destroy(d->f);
	unlink(d->path);
	free(d);
	return 0;
}

/* The driver's side of initialisation (3.1.1) with one queue of QSIZE. */
static void driver_init(struct vmfix *f)
{
	mw(f, 0x14, 0, 1);                                 /* reset */
	assert_int_equal(mr(f, 0x14, 1), 0);
	mw(f, 0x14, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER, 1);
	mw(f, 0x08, 0, 4);                                 /* driver features, low word */
	mw(f, 0x0c, 1u << VIRTIO_F_INDIRECT_DESC, 4);
	mw(f, 0x08, 1, 4);                                 /* high word */
	mw(f, 0x0c, 1, 4);                                 /* VERSION_1 */
	mw(f, 0x14, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
	   VIRTIO_STATUS_FEATURES_OK, 1);
	assert_true(mr(f, 0x14, 1) & VIRTIO_STATUS_FEATURES_OK);
	mw(f, 0x16, 0, 2);                                 /* queue_select */
	mw(f, 0x18, QSIZE, 2);
	mw(f, 0x20, DESC, 8);
	mw(f, 0x28, AVAIL, 8);
	mw(f, 0x30, USED, 8);
	mw(f, 0x1c, 1, 2);                                 /* queue_enable */
	mw(f, 0x14, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
	   VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK, 1);
}

static void kick(struct vmfix *f)
{
	mw(f, VIRTIO_NOTIFY_OFF, 0, 2);
}

static uint16_t used_idx(struct vmfix *f)
{
	uint16_t v;

	assert_int_equal(guest_mem_read(&f->vm->mem, USED + 2, &v, 2), 0);
	return v;
}

/* Waits up to 2 s for the device's status to have bit, or the used index to
 * reach idx; returns the status. */
static uint8_t wait_device(struct vmfix *f, uint8_t bit, uint16_t idx)
{
	for (int i = 0; i < 2000; i++) {
		uint8_t st = (uint8_t)mr(f, 0x14, 1);

		if ((bit && (st & bit)) || (!bit && used_idx(f) == idx))
			return st;
		usleep(1000);
	}
	return (uint8_t)mr(f, 0x14, 1);
}

static void dput_desc(struct vmfix *f, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
		      uint16_t next)
{
	struct virtq_desc d = { addr, len, flags, next };

	assert_int_equal(guest_mem_write(&f->vm->mem, DESC + 16 * i, &d, sizeof(d)), 0);
}

static void dmake_avail(struct vmfix *f, uint16_t n, uint16_t head)
{
	uint16_t idx = (uint16_t)(n + 1);

	assert_int_equal(guest_mem_write(&f->vm->mem, AVAIL + 4 + 2 * (n % QSIZE), &head, 2), 0);
	assert_int_equal(guest_mem_write(&f->vm->mem, AVAIL + 2, &idx, 2), 0);
}

/* A good read first: the device works; then a malformed chain. */
static void read_sector0(struct vmfix *f, uint16_t n)
{
	uint32_t hdr[4] = { 0, 0, 0, 0 };           /* IN, sector 0 */
	uint8_t status = 0xff;
	char data[16] = "";

	assert_int_equal(guest_mem_write(&f->vm->mem, BUF, hdr, 16), 0);
	assert_int_equal(guest_mem_write(&f->vm->mem, BUF + 0x2000, &status, 1), 0);
	dput_desc(f, 0, BUF, 16, VIRTQ_DESC_F_NEXT, 1);
	dput_desc(f, 1, BUF + 0x1000, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
	dput_desc(f, 2, BUF + 0x2000, 1, VIRTQ_DESC_F_WRITE, 0);
	dmake_avail(f, n, 0);
	kick(f);
	assert_int_equal(wait_device(f, 0, (uint16_t)(n + 1)) & VIRTIO_STATUS_NEEDS_RESET, 0);
	assert_int_equal(used_idx(f), n + 1);
	assert_int_equal(guest_mem_read(&f->vm->mem, BUF + 0x2000, &status, 1), 0);
	assert_int_equal(status, 0);
	assert_int_equal(guest_mem_read(&f->vm->mem, BUF + 0x1000, data, 11), 0);
	assert_memory_equal(data, "sector zero", 11);
}

struct bad_request {
	const char *name;
	void (*build)(struct vmfix *f);
};

static void req_loop(struct vmfix *f)
{
	dput_desc(f, 3, BUF, 16, VIRTQ_DESC_F_NEXT, 4);
	dput_desc(f, 4, BUF + 0x1000, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 5);
	dput_desc(f, 5, BUF + 0x2000, 1, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 4);
}

static void req_out_of_ram(struct vmfix *f)
{
	dput_desc(f, 3, BUF, 16, VIRTQ_DESC_F_NEXT, 4);
	dput_desc(f, 4, DEV_RAM - 256, 4096, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 5);
	dput_desc(f, 5, BUF + 0x2000, 1, VIRTQ_DESC_F_WRITE, 0);
}

static void req_header_writable(struct vmfix *f)
{
	/* The header where only the device may write: nothing to read. */
	dput_desc(f, 3, BUF, 16, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 4);
	dput_desc(f, 4, BUF + 0x2000, 1, VIRTQ_DESC_F_WRITE, 0);
}

static void req_zero_length(struct vmfix *f)
{
	dput_desc(f, 3, BUF, 0, VIRTQ_DESC_F_NEXT, 4);
	dput_desc(f, 4, BUF + 0x2000, 1, VIRTQ_DESC_F_WRITE, 0);
}

static void req_no_status(struct vmfix *f)
{
	dput_desc(f, 3, BUF, 16, 0, 0);
}

static void req_too_long(struct vmfix *f)
{
	/* An indirect table of 300 buffers: more than SEG_MAX + 2. */
	uint64_t table = 0x40000;

	for (unsigned i = 0; i < 300; i++) {
		struct virtq_desc d = { BUF + 0x1000, 512, VIRTQ_DESC_F_NEXT, (uint16_t)(i + 1) };

		if (i == 0)
			d = (struct virtq_desc){ BUF, 16, VIRTQ_DESC_F_NEXT, 1 };
		if (i == 299)
			d = (struct virtq_desc){ BUF + 0x2000, 1, VIRTQ_DESC_F_WRITE, 0 };
		else if (i > 0)
			d.flags |= VIRTQ_DESC_F_WRITE;
		assert_int_equal(guest_mem_write(&f->vm->mem, table + 16 * i, &d, 16), 0);
	}
	dput_desc(f, 3, table, 300 * 16, VIRTQ_DESC_F_INDIRECT, 0);
}

static const struct bad_request bad_requests[] = {
	{ "descriptor loop", req_loop },
	{ "buffer outside RAM", req_out_of_ram },
	{ "header in a writable buffer", req_header_writable },
	{ "zero-length header", req_zero_length },
	{ "no status byte", req_no_status },
	{ "chain longer than SEG_MAX", req_too_long },
};

static void test_device_needs_reset(void **state)
{
	struct devfix *d = *state;

	if (!d)
		skip();
	for (size_t i = 0; i < sizeof(bad_requests) / sizeof(bad_requests[0]); i++) {
		struct vmfix *f = d->f;
		uint8_t st;

		driver_init(f);
		read_sector0(f, 0);
		bad_requests[i].build(f);
		dmake_avail(f, 1, 3);
		kick(f);
		st = wait_device(f, VIRTIO_STATUS_NEEDS_RESET, 0);
		if (!(st & VIRTIO_STATUS_NEEDS_RESET))
			fail_msg("%s: status 0x%x, DEVICE_NEEDS_RESET not set", bad_requests[i].name,
				 st);
		/* The bad chain was not completed. */
		assert_int_equal(used_idx(f), 1);
		/* A reset brings the device back. */
		memset(guest_mem_ptr(&f->vm->mem, USED, 4096), 0, 4096);
		memset(guest_mem_ptr(&f->vm->mem, AVAIL, 4096), 0, 4096);
		driver_init(f);
		assert_int_equal(mr(f, 0x14, 1) & VIRTIO_STATUS_NEEDS_RESET, 0);
		read_sector0(f, 0);
		memset(guest_mem_ptr(&f->vm->mem, USED, 4096), 0, 4096);
		memset(guest_mem_ptr(&f->vm->mem, AVAIL, 4096), 0, 4096);
	}
}

/* A queue whose rings lie outside RAM is refused at DRIVER_OK. */
static void test_device_bad_queue_address(void **state)
{
	struct devfix *d = *state;
	struct vmfix *f;

	if (!d)
		skip();
	f = d->f;
	mw(f, 0x14, 0, 1);
	mw(f, 0x14, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER, 1);
	mw(f, 0x08, 1, 4);
	mw(f, 0x0c, 1, 4);
	mw(f, 0x14, 0x0b, 1);
	mw(f, 0x16, 0, 2);
	mw(f, 0x18, QSIZE, 2);
	mw(f, 0x20, 0xfee00000ULL, 8);                     /* the local APIC */
	mw(f, 0x28, AVAIL, 8);
	mw(f, 0x30, USED, 8);
	mw(f, 0x1c, 1, 2);
	mw(f, 0x14, 0x0f, 1);
	assert_true(mr(f, 0x14, 1) & VIRTIO_STATUS_NEEDS_RESET);
	/* Features without VERSION_1 are refused: FEATURES_OK does not stick. */
	mw(f, 0x14, 0, 1);
	mw(f, 0x14, 0x03, 1);
	mw(f, 0x08, 0, 4);
	mw(f, 0x0c, 1u << 9, 4);                           /* FLUSH only */
	mw(f, 0x14, 0x0b, 1);
	assert_false(mr(f, 0x14, 1) & VIRTIO_STATUS_FEATURES_OK);
}

/* VIRTIO_PCI_CAP_PCI_CFG: BAR 0 reached through configuration space. */
static void test_device_pci_cfg_window(void **state)
{
	struct devfix *d = *state;
	struct pci_bus *bus;
	unsigned cap = 0, types = 0;

	if (!d)
		skip();
	bus = d->f->vm->pci;
	assert_int_equal(pci_cfg_read(bus, 0, 1, 0, 0, 4), 0x10421af4);
	for (unsigned p = pci_cfg_read(bus, 0, 1, 0, 0x34, 1); p; p = pci_cfg_read(bus, 0, 1, 0,
										 p + 1, 1)) {
		if (pci_cfg_read(bus, 0, 1, 0, p, 1) != PCI_CAP_ID_VNDR)
			continue;
		types |= 1u << pci_cfg_read(bus, 0, 1, 0, p + 3, 1);
		if (pci_cfg_read(bus, 0, 1, 0, p + 3, 1) == 5)
			cap = p;
	}
	/* common, notify, ISR, device and PCI configuration access */
	assert_int_equal(types, 0x3e);
	assert_int_not_equal(cap, 0);
	pci_cfg_write(bus, 0, 1, 0, cap + 4, 1, 0);                 /* BAR 0 */
	pci_cfg_write(bus, 0, 1, 0, cap + 8, 4, 0x12);              /* num_queues */
	pci_cfg_write(bus, 0, 1, 0, cap + 12, 4, 2);
	assert_int_equal(pci_cfg_read(bus, 0, 1, 0, cap + 16, 2), 1);
	/* A write through the window: device status. */
	pci_cfg_write(bus, 0, 1, 0, cap + 8, 4, 0x14);
	pci_cfg_write(bus, 0, 1, 0, cap + 12, 4, 1);
	pci_cfg_write(bus, 0, 1, 0, cap + 16, 1, VIRTIO_STATUS_ACKNOWLEDGE);
	assert_int_equal(mr(d->f, 0x14, 1), VIRTIO_STATUS_ACKNOWLEDGE);
	/* Device configuration: the capacity of the 1 MiB disk in sectors. */
	pci_cfg_write(bus, 0, 1, 0, cap + 8, 4, VIRTIO_DEVCFG_OFF);
	pci_cfg_write(bus, 0, 1, 0, cap + 12, 4, 4);
	assert_int_equal(pci_cfg_read(bus, 0, 1, 0, cap + 16, 4), 2048);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_init_checks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_indirect, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrap_around, setup, teardown),
		cmocka_unit_test_setup_teardown(test_event_idx, setup, teardown),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test_setup_teardown(test_device_needs_reset, dev_setup, dev_teardown),
		cmocka_unit_test_setup_teardown(test_device_bad_queue_address, dev_setup,
						dev_teardown),
		cmocka_unit_test_setup_teardown(test_device_pci_cfg_window, dev_setup,
						dev_teardown),
	};

	log_init("test_virtqueue", LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
