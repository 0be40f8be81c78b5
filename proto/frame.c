#include "frame.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void frame_buf_init(struct frame_buf *b)
{
	memset(b, 0, sizeof(*b));
}

void frame_buf_free(struct frame_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

int frame_buf_reserve(struct frame_buf *b, size_t want)
{
	size_t cap;
	uint8_t *p;

	/* Consumed bytes at the front go first. */
	if (b->start) {
		memmove(b->data, b->data + b->start, b->len - b->start);
		b->len -= b->start;
		b->start = 0;
	}
	if (b->cap - b->len >= want)
		return 0;
	if (want > FRAME_HDR + FRAME_MAX - b->len)
		want = FRAME_HDR + FRAME_MAX - b->len;
	cap = b->cap ? b->cap : 4096;
	while (cap - b->len < want)
		cap *= 2;
	if (cap > FRAME_HDR + FRAME_MAX)
		cap = FRAME_HDR + FRAME_MAX;
	if (cap <= b->cap)
		return b->cap > b->len ? 0 : -ENOMEM;
	p = realloc(b->data, cap);
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

uint8_t *frame_buf_tail(struct frame_buf *b, size_t *room)
{
	*room = b->cap - b->len;
	return b->data + b->len;
}

void frame_buf_commit(struct frame_buf *b, size_t n)
{
	b->len += n;
}

int frame_buf_append(struct frame_buf *b, const void *data, size_t n)
{
	while (n) {
		size_t room;
		uint8_t *tail;
		int ret = frame_buf_reserve(b, n);

		if (ret < 0)
			return ret;
		tail = frame_buf_tail(b, &room);
		if (!room)
			return -ENOBUFS;
		if (room > n)
			room = n;
		memcpy(tail, data, room);
		frame_buf_commit(b, room);
		data = (const uint8_t *)data + room;
		n -= room;
	}
	return 0;
}

int frame_next(struct frame_buf *b, const uint8_t **payload, size_t *len)
{
	size_t have = b->len - b->start;
	const uint8_t *p;
	uint32_t n;

	if (have < FRAME_HDR)
		return 0;
	p = b->data + b->start;
	n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	if (n == 0 || n > FRAME_MAX) {
		*len = n;
		return -EMSGSIZE;
	}
	if (have - FRAME_HDR < n)
		return 0;
	*payload = p + FRAME_HDR;
	*len = n;
	b->start += FRAME_HDR + n;
	if (b->start == b->len)
		b->start = b->len = 0;
	return 1;
}

void frame_put_header(uint8_t hdr[FRAME_HDR], uint32_t len)
{
	hdr[0] = (uint8_t)(len >> 24);
	hdr[1] = (uint8_t)(len >> 16);
	hdr[2] = (uint8_t)(len >> 8);
	hdr[3] = (uint8_t)len;
}
