/* fuzz_frame: bytes -> the controller<->agent connection (proto/conn.c).
 *
 * Each input is the byte stream a peer sends on a new connection: written
 * into one end of a socket pair as the socket takes it, then the write side
 * is shut, and the loop runs until conn reports the connection closed.
 *
 * Beyond the sanitizers: message() sees only Envelopes of a known type and
 * a supported version; closed() runs exactly once; everything conn sends
 * back parses as frames of Error envelopes (nothing else: the handler here
 * never sends). */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "evloop.h"
#include "frame.h"

#define CHECK(cond, ...) do { \
	if (!(cond)) { \
		fprintf(stderr, "fuzz_frame: broken invariant: " __VA_ARGS__); \
		fprintf(stderr, "\n"); \
		abort(); \
	} \
} while (0)

struct state {
	unsigned messages, closes;
};

static void on_message(struct conn *c, const Drover__Envelope *env, void *opaque)
{
	struct state *st = opaque;

	CHECK(env->version >= CONN_PROTO_MIN_VERSION, "version %u delivered", env->version);
	CHECK(env->body_case != DROVER__ENVELOPE__BODY__NOT_SET, "an Envelope without body");
	st->messages++;
}

static void on_closed(struct conn *c, int err, const char *why, void *opaque)
{
	struct state *st = opaque;

	CHECK(why && *why, "closed without a reason");
	st->closes++;
}

static const struct conn_handler handler = { on_message, on_closed };

/* What conn sent back: whole frames, each an Error envelope. */
static void check_replies(int fd)
{
	struct frame_buf b;
	const uint8_t *p;
	size_t len;
	int r;

	frame_buf_init(&b);
	for (;;) {
		uint8_t buf[65536];
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n <= 0)
			break;
		CHECK(frame_buf_append(&b, buf, (size_t)n) == 0, "reply buffer");
	}
	while ((r = frame_next(&b, &p, &len)) == 1) {
		Drover__Envelope *env = drover__envelope__unpack(NULL, len, p);

		CHECK(env, "a reply that is no Envelope");
		CHECK(env->body_case == DROVER__ENVELOPE__BODY_ERROR && env->error &&
		      env->error->code && *env->error->code, "a reply that is no Error");
		drover__envelope__free_unpacked(env, NULL);
	}
	CHECK(r == 0, "a reply frame of bad length");
	frame_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct state st = { 0 };
	struct evloop *loop;
	struct conn *c;
	int sv[2];
	size_t off = 0;

	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0,
	      "socketpair: %s", strerror(errno));
	CHECK(evloop_new(&loop) == 0, "evloop");
	CHECK(conn_open(loop, sv[0], NULL, &handler, &st, &c) == 0, "conn_open");
	while (!st.closes) {
		if (off < size) {
			ssize_t n = send(sv[1], data + off, size - off, MSG_NOSIGNAL);
			if (n > 0)
				off += (size_t)n;
			if (off == size)
				shutdown(sv[1], SHUT_WR);
		} else if (off == 0) {
			shutdown(sv[1], SHUT_WR);
			off = 1;
		}
		evloop_run_once(loop, 10);
		check_replies(sv[1]);
	}
	CHECK(st.closes == 1, "closed() ran %u times", st.closes);
	check_replies(sv[1]);
	close(sv[1]);
	evloop_free(loop);
	return 0;
}
