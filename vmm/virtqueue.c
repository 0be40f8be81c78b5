/* Split virtqueues, device side (see virtqueue.h). */
#include "virtqueue.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define AVAIL_FLAGS  0
#define AVAIL_IDX    2
#define AVAIL_RING   4
#define USED_FLAGS   0
#define USED_IDX     2
#define USED_RING    4
#define USED_ELEM    8

static uint16_t load16(const uint8_t *p)
{
	return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE);
}

static void store16(uint8_t *p, uint16_t v)
{
	__atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE);
}

static int broken(struct virtq *vq, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int broken(struct virtq *vq, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(vq->err, sizeof(vq->err), fmt, ap);
	va_end(ap);
	vq->broken = true;
	return -EINVAL;
}

static void *area(const struct guest_mem *mem, uint64_t gpa, uint64_t len, unsigned align,
		  const char *what, char *err, size_t errlen)
{
	void *p;

	if (gpa & (align - 1)) {
		snprintf(err, errlen, "%s at 0x%llx is not %u-byte aligned", what,
			 (unsigned long long)gpa, align);
		return NULL;
	}
	p = guest_mem_ptr(mem, gpa, len);
	if (!p)
		snprintf(err, errlen, "%s [0x%llx, +%llu) is not guest RAM", what,
			 (unsigned long long)gpa, (unsigned long long)len);
	return p;
}

int virtq_init(struct virtq *vq, const struct guest_mem *mem, unsigned size, uint64_t desc,
	       uint64_t avail, uint64_t used, bool event_idx, bool indirect, char *err,
	       size_t errlen)
{
	memset(vq, 0, sizeof(*vq));
	if (size == 0 || size > VIRTQ_MAX_SIZE || (size & (size - 1))) {
		snprintf(err, errlen, "queue size %u is not a power of two in 1..%u", size,
			 VIRTQ_MAX_SIZE);
		return -EINVAL;
	}
	vq->desc = area(mem, desc, 16ULL * size, 16, "descriptor table", err, errlen);
	if (!vq->desc)
		return -EINVAL;
	vq->avail = area(mem, avail, 6ULL + 2ULL * size, 2, "driver area", err, errlen);
	if (!vq->avail)
		return -EINVAL;
	vq->used = area(mem, used, 6ULL + 8ULL * size, 4, "device area", err, errlen);
	if (!vq->used)
		return -EINVAL;
	vq->mem = mem;
	vq->size = (uint16_t)size;
	vq->event_idx = event_idx;
	vq->indirect = indirect;
	vq->desc_gpa = desc;
	vq->avail_gpa = avail;
	vq->used_gpa = used;
	return 0;
}

bool virtq_has_avail(struct virtq *vq)
{
	return !vq->broken && load16(vq->avail + AVAIL_IDX) != vq->last_avail;
}

static struct virtq_desc read_desc(const struct virtq_desc *table, unsigned i)
{
	struct virtq_desc d;

	/* The guest may rewrite it meanwhile: take one copy and judge that. */
	memcpy(&d, (const uint8_t *)table + 16 * (size_t)i, sizeof(d));
	return d;
}

static int add_buffer(struct virtq *vq, struct virtq_elem *e, const struct virtq_desc *d)
{
	void *p = guest_mem_ptr(vq->mem, d->addr, d->len);
	bool writable = d->flags & VIRTQ_DESC_F_WRITE;

	if (!p)
		return broken(vq, "buffer [0x%llx, +%u) of chain %u is not guest RAM",
			      (unsigned long long)d->addr, d->len, e->head);
	if (!writable && e->nin)
		return broken(vq, "chain %u has a device-readable buffer after a writable one",
			      e->head);
	if (d->len == 0)
		return 0;
	if (e->nout + e->nin >= e->cap) {
		broken(vq, "chain %u has more than %u buffers", e->head, e->cap);
		return -ENOSPC;
	}
	e->iov[e->nout + e->nin] = (struct iovec){ .iov_base = p, .iov_len = d->len };
	if (writable) {
		e->nin++;
		e->in_len += d->len;
	} else {
		e->nout++;
		e->out_len += d->len;
	}
	return 0;
}

int virtq_pop(struct virtq *vq, struct virtq_elem *e)
{
	const struct virtq_desc *table = vq->desc;
	unsigned table_len = vq->size, seen = 0, i;
	bool in_indirect = false;
	uint16_t avail_idx, head;
	int ret;

	if (vq->broken)
		return -EINVAL;
	avail_idx = load16(vq->avail + AVAIL_IDX);
	if (avail_idx == vq->last_avail)
		return 0;
	if ((uint16_t)(avail_idx - vq->last_avail) > vq->size)
		return broken(vq, "available index moved from %u to %u, more than the %u "
			      "entries of the queue", vq->last_avail, avail_idx, vq->size);
	head = load16(vq->avail + AVAIL_RING + 2 * (vq->last_avail % vq->size));
	if (head >= vq->size)
		return broken(vq, "available ring entry %u names descriptor %u of %u",
			      vq->last_avail % vq->size, head, vq->size);
	e->head = head;
	e->nout = e->nin = 0;
	e->out_len = e->in_len = 0;
	for (i = head;;) {
		struct virtq_desc d = read_desc(table, i);

		if (++seen > table_len)
			return broken(vq, "chain %u loops or is longer than its %s (%u "
				      "descriptors)", head, in_indirect ? "indirect table" : "queue",
				      table_len);
		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			if (!vq->indirect)
				return broken(vq, "chain %u uses an indirect table, but "
					      "VIRTIO_F_INDIRECT_DESC was not negotiated", head);
			if (in_indirect)
				return broken(vq, "chain %u has an indirect table inside an "
					      "indirect table", head);
			if (d.flags & VIRTQ_DESC_F_NEXT)
				return broken(vq, "chain %u: an indirect descriptor with NEXT set",
					      head);
			if (d.len == 0 || d.len % 16 || d.len / 16 > VIRTQ_MAX_INDIRECT)
				return broken(vq, "chain %u: indirect table of %u bytes (a multiple "
					      "of 16 in 16..%u expected)", head, d.len,
					      16 * VIRTQ_MAX_INDIRECT);
			table = guest_mem_ptr(vq->mem, d.addr, d.len);
			if (!table)
				return broken(vq, "chain %u: indirect table [0x%llx, +%u) is not "
					      "guest RAM", head, (unsigned long long)d.addr, d.len);
			in_indirect = true;
			table_len = d.len / 16;
			seen = 0;
			i = 0;
			continue;
		}
		ret = add_buffer(vq, e, &d);
		if (ret < 0)
			return ret;
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			break;
		if (d.next >= table_len)
			return broken(vq, "chain %u: next descriptor %u is outside its %s of %u",
				      head, d.next, in_indirect ? "indirect table" : "queue",
				      table_len);
		i = d.next;
	}
	vq->last_avail++;
	return 1;
}

void virtq_fill(struct virtq *vq, uint16_t head, uint32_t len)
{
	uint8_t *elem = vq->used + USED_RING + USED_ELEM * (vq->used_idx % vq->size);
	uint32_t id = head;

	memcpy(elem, &id, 4);
	memcpy(elem + 4, &len, 4);
	vq->used_idx++;
}

void virtq_flush(struct virtq *vq)
{
	/* Release: the elements are visible before the index that covers them. */
	store16(vq->used + USED_IDX, vq->used_idx);
}

void virtq_push(struct virtq *vq, uint16_t head, uint32_t len)
{
	virtq_fill(vq, head, len);
	virtq_flush(vq);
}

bool virtq_should_notify(struct virtq *vq)
{
	uint16_t old = vq->signalled_used, now = vq->used_idx, event;

	virtq_flush(vq);
	/* used->idx must be visible before we read what the driver wants. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (old == now)
		return false;
	vq->signalled_used = now;
	if (!vq->event_idx)
		return !(load16(vq->avail + AVAIL_FLAGS) & VIRTQ_AVAIL_F_NO_INTERRUPT);
	event = load16(vq->avail + AVAIL_RING + 2 * vq->size);
	/* virtio 1.2, 2.7.10: interrupt when used_event lies in [old, now). */
	return (uint16_t)(now - event - 1) < (uint16_t)(now - old);
}

void virtq_set_notify(struct virtq *vq, bool enable)
{
	if (vq->event_idx) {
		if (enable)
			store16(vq->used + USED_RING + USED_ELEM * vq->size, vq->last_avail);
	} else {
		store16(vq->used + USED_FLAGS, enable ? 0 : VIRTQ_USED_F_NO_NOTIFY);
	}
	/* The flag or event index is visible before avail->idx is re-read. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

int virtq_elem_slice(const struct virtq_elem *e, bool writable, uint64_t off, uint64_t len,
		     struct iovec *dst, int max)
{
	unsigned first = writable ? e->nout : 0, n = writable ? e->nin : e->nout;
	int out = 0;

	for (unsigned k = 0; k < n && len; k++) {
		const struct iovec *v = &e->iov[first + k];
		uint64_t take;

		if (off >= v->iov_len) {
			off -= v->iov_len;
			continue;
		}
		if (out == max)
			return -1;
		take = v->iov_len - off < len ? v->iov_len - off : len;
		dst[out++] = (struct iovec){ .iov_base = (uint8_t *)v->iov_base + off,
					     .iov_len = take };
		len -= take;
		off = 0;
	}
	return len ? -1 : out;
}

static bool elem_copy(const struct virtq_elem *e, bool writable, uint64_t off, void *buf,
		      size_t len)
{
	unsigned first = writable ? e->nout : 0, n = writable ? e->nin : e->nout;
	uint8_t *p = buf;

	for (unsigned k = 0; k < n && len; k++) {
		const struct iovec *v = &e->iov[first + k];
		size_t take;

		if (off >= v->iov_len) {
			off -= v->iov_len;
			continue;
		}
		take = v->iov_len - off < len ? v->iov_len - off : len;
		if (writable)
			memcpy((uint8_t *)v->iov_base + off, p, take);
		else
			memcpy(p, (uint8_t *)v->iov_base + off, take);
		p += take;
		len -= take;
		off = 0;
	}
	return len == 0;
}

bool virtq_elem_read(const struct virtq_elem *e, uint64_t off, void *buf, size_t len)
{
	return elem_copy(e, false, off, buf, len);
}

bool virtq_elem_write(const struct virtq_elem *e, uint64_t off, const void *buf, size_t len)
{
	return elem_copy(e, true, off, (void *)buf, len);
}
