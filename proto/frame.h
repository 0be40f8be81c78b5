/* Length-prefixed framing for the controller<->agent stream: every frame is
 * a 4-byte big-endian length, then that many bytes (one serialized
 * Envelope). A length of 0 or above FRAME_MAX is a protocol error: the
 * stream cannot be resynchronised and must be closed.
 *
 * struct frame_buf collects bytes as they arrive and hands out whole
 * frames; it never grows past FRAME_HDR + FRAME_MAX. */
#ifndef DROVER_FRAME_H
#define DROVER_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_HDR 4u
#define FRAME_MAX (4u << 20)

struct frame_buf {
	uint8_t *data;
	size_t len;      /* bytes held */
	size_t cap;
	size_t start;    /* where the unconsumed bytes begin */
};

void frame_buf_init(struct frame_buf *b);
void frame_buf_free(struct frame_buf *b);
/* Room for at least want more bytes at frame_buf_tail; 0 or -ENOMEM. */
int frame_buf_reserve(struct frame_buf *b, size_t want);
/* Where the next bytes read from the peer go, and how many fit. */
uint8_t *frame_buf_tail(struct frame_buf *b, size_t *room);
/* n bytes were written at the tail. */
void frame_buf_commit(struct frame_buf *b, size_t n);
/* Copies n bytes in (frame_buf_reserve + memcpy + commit). */
int frame_buf_append(struct frame_buf *b, const void *data, size_t n);

/* The next whole frame: 1 with *payload and *len (valid until the next call
 * on b), 0 when more bytes are needed, -EMSGSIZE for a length of 0 or above
 * FRAME_MAX (the announced length in *len). The frame is consumed. */
int frame_next(struct frame_buf *b, const uint8_t **payload, size_t *len);

/* Writes the 4-byte header for a payload of len bytes. */
void frame_put_header(uint8_t hdr[FRAME_HDR], uint32_t len);

#endif
