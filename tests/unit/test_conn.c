/* proto/conn.c: Envelopes between two real sockets on the event loop, and
 * what a misbehaving peer gets (drover.proto's rules). The peer side is
 * written by hand here (raw bytes on a socket), so that bad frames can be
 * sent. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "conn.h"
#include "evloop.h"
#include "frame.h"

struct side {
	struct conn *c;
	unsigned messages, closes;
	int close_err;
	char why[256];
	Drover__Envelope *last;     /* a copy of the last message */
	int close_in_message;       /* conn_close from inside message() */
};

static void on_message(struct conn *c, const Drover__Envelope *env, void *opaque)
{
	struct side *s = opaque;
	size_t len = drover__envelope__get_packed_size(env);
	uint8_t *buf = malloc(len ? len : 1);

	drover__envelope__pack(env, buf);
	if (s->last)
		drover__envelope__free_unpacked(s->last, NULL);
	s->last = drover__envelope__unpack(NULL, len, buf);
	free(buf);
	s->messages++;
	if (s->close_in_message) {
		conn_close(c);
		s->c = NULL;
	}
}

static void on_closed(struct conn *c, int err, const char *why, void *opaque)
{
	struct side *s = opaque;

	s->closes++;
	s->close_err = err;
	snprintf(s->why, sizeof(s->why), "%s", why);
	s->c = NULL;
}

static const struct conn_handler handler = { on_message, on_closed };

struct fixture {
	struct evloop *loop;
	struct side side;
	int peer;                   /* the raw end */
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	int sv[2];

	assert_int_equal(evloop_new(&f->loop), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(conn_open(f->loop, sv[0], NULL, &handler, &f->side, &f->side.c), 0);
	f->peer = sv[1];
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	if (f->side.c)
		conn_close(f->side.c);
	if (f->side.last)
		drover__envelope__free_unpacked(f->side.last, NULL);
	close(f->peer);
	evloop_free(f->loop);
	free(f);
	return 0;
}

static void spin(struct fixture *f, int turns)
{
	for (int i = 0; i < turns; i++)
		evloop_run_once(f->loop, 5);
}

static void peer_send(struct fixture *f, const void *data, size_t len)
{
	assert_int_equal(send(f->peer, data, len, MSG_NOSIGNAL), (ssize_t)len);
}

static void peer_send_env(struct fixture *f, Drover__Envelope *env)
{
	size_t len = drover__envelope__get_packed_size(env);
	uint8_t *buf = malloc(FRAME_HDR + len);

	frame_put_header(buf, (uint32_t)len);
	drover__envelope__pack(env, buf + FRAME_HDR);
	peer_send(f, buf, FRAME_HDR + len);
	free(buf);
}

/* The next Envelope conn wrote to the peer, or NULL. */
static Drover__Envelope *peer_recv(struct fixture *f)
{
	static struct frame_buf b;
	const uint8_t *p;
	size_t len;

	for (int i = 0; i < 100; i++) {
		uint8_t buf[4096];
		ssize_t n = recv(f->peer, buf, sizeof(buf), MSG_DONTWAIT);

		if (n > 0)
			assert_int_equal(frame_buf_append(&b, buf, (size_t)n), 0);
		if (frame_next(&b, &p, &len) == 1)
			return drover__envelope__unpack(NULL, len, p);
		spin(f, 1);
	}
	return NULL;
}

static void hello(Drover__Envelope *env, Drover__Hello *h, uint64_t seq)
{
	drover__envelope__init(env);
	drover__hello__init(h);
	h->host_id = "host-1";
	h->host_name = "alpha";
	env->version = CONN_PROTO_VERSION;
	env->seq = seq;
	env->body_case = DROVER__ENVELOPE__BODY_HELLO;
	env->hello = h;
}

static void test_message_both_ways(void **state)
{
	struct fixture *f = *state;
	Drover__Envelope env, *got;
	Drover__Hello h;
	Drover__Welcome w = DROVER__WELCOME__INIT;

	hello(&env, &h, 1);
	peer_send_env(f, &env);
	spin(f, 3);
	assert_int_equal(f->side.messages, 1);
	assert_int_equal(f->side.last->body_case, DROVER__ENVELOPE__BODY_HELLO);
	assert_string_equal(f->side.last->hello->host_name, "alpha");

	drover__envelope__init(&env);
	w.heartbeat_interval_ms = 2000;
	env.body_case = DROVER__ENVELOPE__BODY_WELCOME;
	env.welcome = &w;
	assert_int_equal(conn_send(f->side.c, &env), 1);
	assert_int_equal(conn_send(f->side.c, &env), 2);
	got = peer_recv(f);
	assert_non_null(got);
	assert_int_equal(got->version, CONN_PROTO_VERSION);
	assert_int_equal(got->seq, 1);
	assert_int_equal(got->welcome->heartbeat_interval_ms, 2000);
	drover__envelope__free_unpacked(got, NULL);
	got = peer_recv(f);
	assert_non_null(got);
	assert_int_equal(got->seq, 2);
	drover__envelope__free_unpacked(got, NULL);
	assert_int_equal(f->side.closes, 0);
}

/* Frames cut anywhere arrive whole. */
static void test_split_delivery(void **state)
{
	struct fixture *f = *state;
	Drover__Envelope env;
	Drover__Hello h;
	size_t len;
	uint8_t *buf;

	hello(&env, &h, 7);
	len = drover__envelope__get_packed_size(&env);
	buf = malloc(2 * (FRAME_HDR + len));
	frame_put_header(buf, (uint32_t)len);
	drover__envelope__pack(&env, buf + FRAME_HDR);
	memcpy(buf + FRAME_HDR + len, buf, FRAME_HDR + len);
	for (size_t i = 0; i < 2 * (FRAME_HDR + len); i++) {
		peer_send(f, buf + i, 1);
		spin(f, 1);
		assert_int_equal(f->side.messages, i >= 2 * (FRAME_HDR + len) - 1 ? 2 :
				 i >= FRAME_HDR + len - 1 ? 1 : 0);
	}
	free(buf);
}

/* A newer message type: an error naming it, and the connection stays. */
static void test_unknown_message_type(void **state)
{
	struct fixture *f = *state;
	/* version 1, seq 5, field 99 (length-delimited, 2 bytes) */
	static const uint8_t frame[] = { 0, 0, 0, 9, 0x08, 1, 0x10, 5, 0x9a, 0x06, 2, 'x', 'y' };
	Drover__Envelope env, *got;
	Drover__Hello h;

	peer_send(f, frame, sizeof(frame));
	got = peer_recv(f);
	assert_non_null(got);
	assert_int_equal(got->body_case, DROVER__ENVELOPE__BODY_ERROR);
	assert_string_equal(got->error->code, "unknown-message");
	assert_int_equal(got->reply_to, 5);
	drover__envelope__free_unpacked(got, NULL);
	assert_int_equal(f->side.messages, 0);
	assert_int_equal(f->side.closes, 0);
	hello(&env, &h, 6);
	peer_send_env(f, &env);
	spin(f, 3);
	assert_int_equal(f->side.messages, 1);
}

struct bad_case {
	const char *name;
	uint8_t bytes[16];
	size_t len;
	const char *code;
	const char *why;
};

static void run_bad(void **state, const struct bad_case *bc)
{
	struct fixture *f = *state;
	Drover__Envelope *got;

	peer_send(f, bc->bytes, bc->len);
	got = peer_recv(f);
	assert_non_null(got);
	assert_int_equal(got->body_case, DROVER__ENVELOPE__BODY_ERROR);
	assert_string_equal(got->error->code, bc->code);
	drover__envelope__free_unpacked(got, NULL);
	spin(f, 2);
	assert_int_equal(f->side.closes, 1);
	assert_int_equal(f->side.close_err, -EPROTO);
	assert_non_null(strstr(f->side.why, bc->why));
	assert_int_equal(f->side.messages, 0);
}

static void test_frame_too_large(void **state)
{
	static const struct bad_case bc = { "too large", { 0x7f, 0xff, 0xff, 0xff, 1 }, 5,
					    "frame-too-large", "2147483647 bytes" };
	run_bad(state, &bc);
}

static void test_zero_length_frame(void **state)
{
	static const struct bad_case bc = { "zero", { 0, 0, 0, 0 }, 4, "frame-too-large",
					    "a frame of 0 bytes" };
	run_bad(state, &bc);
}

static void test_garbage(void **state)
{
	static const struct bad_case bc = { "garbage", { 0, 0, 0, 3, 0xff, 0xff, 0xff }, 7,
					    "bad-frame", "is no Envelope" };
	run_bad(state, &bc);
}

static void test_old_version(void **state)
{
	/* version 0 (absent), seq 1, hello {} */
	static const struct bad_case bc = { "version 0", { 0, 0, 0, 4, 0x10, 1, 0x52, 0 }, 8,
					    "bad-version", "protocol version 0" };
	run_bad(state, &bc);
}

static void test_peer_closes(void **state)
{
	struct fixture *f = *state;

	shutdown(f->peer, SHUT_WR);
	spin(f, 3);
	assert_int_equal(f->side.closes, 1);
	assert_int_equal(f->side.close_err, 0);
	assert_non_null(strstr(f->side.why, "closed the connection"));
}

/* conn_close from inside message(): the rest of the batch is dropped. */
static void test_close_inside_handler(void **state)
{
	struct fixture *f = *state;
	Drover__Envelope env;
	Drover__Hello h;

	f->side.close_in_message = 1;
	hello(&env, &h, 1);
	peer_send_env(f, &env);
	peer_send_env(f, &env);
	spin(f, 3);
	assert_int_equal(f->side.messages, 1);
	assert_int_equal(f->side.closes, 0);
	assert_null(f->side.c);
}

/* Real TCP on loopback: listen on port 0, connect, exchange one message. */
static void test_tcp_listen_connect(void **state)
{
	struct evloop *loop;
	struct side a = { 0 };
	char err[256];
	uint16_t port = 0;
	int lfd, cfd, sfd;
	char addr[64];
	Drover__Envelope env;
	Drover__Hello h;

	assert_int_equal(evloop_new(&loop), 0);
	assert_int_equal(conn_listen("127.0.0.1:0", 16, &lfd, &port, err, sizeof(err)), 0);
	assert_true(port > 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
	assert_int_equal(conn_connect_start(addr, &cfd, err, sizeof(err)), 0);
	for (int i = 0; i < 100 && (sfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) < 0; i++)
		usleep(1000);
	assert_true(sfd >= 0);
	assert_int_equal(conn_connect_result(cfd), 0);
	assert_int_equal(conn_open(loop, sfd, NULL, &handler, &a, &a.c), 0);
	assert_non_null(strstr(conn_peer(a.c), "127.0.0.1:"));
	hello(&env, &h, 1);
	size_t len = drover__envelope__get_packed_size(&env);
	uint8_t buf[256];
	frame_put_header(buf, (uint32_t)len);
	drover__envelope__pack(&env, buf + FRAME_HDR);
	assert_int_equal(send(cfd, buf, FRAME_HDR + len, 0), (ssize_t)(FRAME_HDR + len));
	for (int i = 0; i < 50 && !a.messages; i++)
		evloop_run_once(loop, 10);
	assert_int_equal(a.messages, 1);
	conn_close(a.c);
	drover__envelope__free_unpacked(a.last, NULL);
	close(cfd);
	close(lfd);
	evloop_free(loop);
}

static void test_bad_addresses(void **state)
{
	static const struct { const char *addr, *want; } cases[] = {
		{ "127.0.0.1", "expected HOST:PORT" },
		{ "127.0.0.1:", "expected HOST:PORT" },
		{ "127.0.0.1:http", "is not a number" },
		{ "127.0.0.1:70000", "is not a number" },
		{ "127.0.0.1:-1", "is not a number" },
	};
	char err[256];
	int fd;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = 0;
		assert_int_equal(conn_connect_start(cases[i].addr, &fd, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, cases[i].want));
		assert_non_null(strstr(err, cases[i].addr));
	}
	/* Nobody listens on port 1: refused at once (loopback) or later. */
	int ret = conn_connect_start("127.0.0.1:1", &fd, err, sizeof(err));
	if (ret == 0) {
		/* SO_ERROR is reported once. */
		for (int i = 0; i < 100 && (ret = conn_connect_result(fd)) == 0; i++)
			usleep(1000);
		assert_int_equal(ret, -ECONNREFUSED);
		close(fd);
	} else {
		assert_int_equal(ret, -ECONNREFUSED);
		assert_non_null(strstr(err, "connecting to '127.0.0.1:1'"));
	}
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_message_both_ways),
		T(test_split_delivery),
		T(test_unknown_message_type),
		T(test_frame_too_large),
		T(test_zero_length_frame),
		T(test_garbage),
		T(test_old_version),
		T(test_peer_closes),
		T(test_close_inside_handler),
		cmocka_unit_test(test_tcp_listen_connect),
		cmocka_unit_test(test_bad_addresses),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
