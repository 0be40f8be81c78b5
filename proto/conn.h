/* A protocol connection between the controller and an agent: one byte
 * stream (TCP today; TLS can wrap it later through struct conn_transport
 * without touching anything above), framed Envelopes (frame.h) both ways,
 * driven by an evloop.
 *
 * What conn checks before a message reaches its handler (drover.proto):
 *   - a frame of 0 bytes or above FRAME_MAX: Error "frame-too-large" to the
 *     peer, then the connection closes (the stream cannot be resynced);
 *   - bytes that are no Envelope: Error "bad-frame", then it closes;
 *   - an Envelope whose version is below CONN_PROTO_MIN_VERSION: Error
 *     "bad-version", then it closes;
 *   - an Envelope with no body this build knows (a newer message type):
 *     Error "unknown-message" with reply_to = its seq; the connection stays.
 * Outgoing frames queue in memory and go out as the socket takes them; a
 * peer that lets more than CONN_OUT_MAX bytes pile up is disconnected.
 *
 * Lifetime: the handler's closed() runs once when the connection ends for
 * any reason but conn_close(); after either, the conn is gone. Both may be
 * called from inside the handler's message(). */
#ifndef DROVER_CONN_H
#define DROVER_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "drover.pb-c.h"

#define CONN_PROTO_VERSION     1u
#define CONN_PROTO_MIN_VERSION 1u
#define CONN_OUT_MAX           (64u << 20)

struct evloop;
struct conn;

/* How bytes move. read/write return bytes, 0 at end of stream (read), or
 * -errno (-EAGAIN: try when the fd is ready again). */
struct conn_transport {
	const char *name;
	ssize_t (*read)(struct conn *c, int fd, void *buf, size_t len);
	ssize_t (*write)(struct conn *c, int fd, const void *buf, size_t len);
};
extern const struct conn_transport conn_transport_plain;

struct conn_handler {
	/* A checked Envelope; it is freed when message() returns. */
	void (*message)(struct conn *c, const Drover__Envelope *env, void *opaque);
	/* The connection ended: err 0 for the peer's orderly close, -errno for
	 * a socket error, -EPROTO for a protocol error; why says which in
	 * words ("peer closed the connection", "frame of 9000000 bytes ..."). */
	void (*closed)(struct conn *c, int err, const char *why, void *opaque);
};

/* Takes fd (a connected, non-blocking stream socket; closed with the conn). */
int conn_open(struct evloop *loop, int fd, const struct conn_transport *tr,
	      const struct conn_handler *h, void *opaque, struct conn **out);
/* Queues env: its version and seq are set here (seq from 1, per conn).
 * Returns the seq (> 0), or -errno (-ENOBUFS: the peer is not reading and
 * the connection was closed; closed() has run). */
int64_t conn_send(struct conn *c, Drover__Envelope *env);
/* Sends Error{code, message} with reply_to. */
int64_t conn_send_error(struct conn *c, uint64_t reply_to, const char *code,
			const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Closes at once (queued output is dropped) without calling closed(). */
void conn_close(struct conn *c);
/* Sends what is queued, then closes (closed() is not called). */
void conn_close_after_flush(struct conn *c);

const char *conn_peer(const struct conn *c);     /* "10.0.0.2:41234" */
/* The message type an Envelope carries ("Hello", "CommandResult"...), or
 * NULL for one this build does not know. */
const char *conn_body_name(const Drover__Envelope *env);
size_t conn_queued(const struct conn *c);        /* bytes not sent yet */
void conn_set_opaque(struct conn *c, void *opaque);
void *conn_opaque(const struct conn *c);

/* Non-blocking TCP helpers: a listening socket on "HOST:PORT" (port 0: any;
 * the port taken is written back into *port), and a connection started to
 * "HOST:PORT" (EINPROGRESS is success: wait for EPOLLOUT, then
 * conn_connect_result). 0 or -errno; err says what failed. */
int conn_listen(const char *addr, int backlog, int *fd, uint16_t *port, char *err, size_t errlen);
int conn_connect_start(const char *addr, int *fd, char *err, size_t errlen);
int conn_connect_result(int fd);

#endif
