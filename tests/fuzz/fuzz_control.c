/* fuzz_control: bytes -> one client of the real control server.
 *
 * The server (control_open on a unix socket, on drover's own event loop) is
 * the one drover-vmm runs; only the commands behind it are the fuzzer's: they
 * answer, fail with each error class, echo their arguments, send an event to
 * every client from inside the handler, and cut a description in the middle
 * of a UTF-8 sequence. Each input is the byte stream of a new connection:
 * written as the socket takes it, then the write side is shut down, and the
 * loop runs until the server has answered and closed.
 *
 * Beyond the sanitizers: everything the server sends is one JSON object per
 * line, the greeting first, and every complete non-blank line gets exactly
 * one reply ("return" or "error"), whatever it holds. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"
#include "evloop.h"

#define CHECK(cond, ...) do { \
	if (!(cond)) { \
		fprintf(stderr, "fuzz_control: broken invariant: " __VA_ARGS__); \
		fprintf(stderr, "\n"); \
		abort(); \
	} \
} while (0)

struct server {
	struct evloop *loop;
	struct control *ctl;
	struct sockaddr_un addr;
};

/* One connection's state while the loop runs. */
struct conn {
	struct server *srv;
	int fd;
	const uint8_t *data;
	size_t size, sent;
	char *in;
	size_t in_len, in_cap;
};

/* ---- the commands behind the server ---- */

static enum control_error cmd_status(void *ctx, json_t *args, json_t **ret, char *desc,
				     size_t len)
{
	*ret = json_pack("{s:b, s:s}", "running", 1, "status", "running");
	return CONTROL_OK;
}

static enum control_error cmd_echo(void *ctx, json_t *args, json_t **ret, char *desc,
				   size_t len)
{
	*ret = json_incref(args);
	return CONTROL_OK;
}

static enum control_error cmd_nothing(void *ctx, json_t *args, json_t **ret, char *desc,
				      size_t len)
{
	return CONTROL_OK;
}

/* Fails with the class and description the arguments ask for; the
 * description is cut to 5 bytes, wherever that falls in a UTF-8 sequence. */
static enum control_error cmd_fail(void *ctx, json_t *args, json_t **ret, char *desc,
				   size_t len)
{
	json_t *why = json_object_get(args, "why");
	json_int_t cls = json_integer_value(json_object_get(args, "class"));

	*ret = json_string("a reply that must not be sent");
	if (json_is_string(why))
		snprintf(desc, len < 6 ? len : 6, "%s", json_string_value(why));
	return cls >= 0 && cls < 1000 ? (enum control_error)cls : CONTROL_GENERIC_ERROR;
}

static enum control_error cmd_event(void *ctx, json_t *args, json_t **ret, char *desc,
				    size_t len)
{
	struct server *srv = ctx;
	json_t *name = json_object_get(args, "name");

	control_event(srv->ctl, json_is_string(name) ? json_string_value(name) : "TEST",
		      json_deep_copy(args));
	return CONTROL_OK;
}

static const struct control_command commands[] = {
	{ "query-status", cmd_status },
	{ "echo", cmd_echo },
	{ "stop", cmd_nothing },
	{ "fail", cmd_fail },
	{ "event", cmd_event },
};

/* ---- the client side ---- */

static void conn_cb(void *opaque, int fd, uint32_t events)
{
	struct conn *c = opaque;
	ssize_t n;

	if ((events & EPOLLOUT) && c->sent < c->size) {
		n = send(fd, c->data + c->sent, c->size - c->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0)
			c->sent += (size_t)n;
		else if (n < 0 && errno != EAGAIN && errno != EINTR)
			c->sent = c->size;      /* the server hung up; stop writing */
	}
	if (c->sent == c->size && (events & EPOLLOUT)) {
		shutdown(fd, SHUT_WR);
		evloop_mod(c->srv->loop, fd, EPOLLIN);
	}
	if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return;
	if (c->in_cap - c->in_len < 65536) {
		c->in_cap = c->in_cap * 2 + 65536;
		c->in = realloc(c->in, c->in_cap);
		if (!c->in)
			abort();
	}
	n = recv(fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
	if (n > 0)
		c->in_len += (size_t)n;
	else if (n == 0 || (errno != EAGAIN && errno != EINTR))
		evloop_stop(c->srv->loop);
}

static struct server server_state;

/* At the end of the run: control_close removes the socket file. */
static void server_close(void)
{
	control_close(server_state.ctl);
	evloop_free(server_state.loop);
}

static struct server *server_get(void)
{
	struct server *s = &server_state;

	if (s->loop)
		return s;
	s->addr.sun_family = AF_UNIX;
	snprintf(s->addr.sun_path, sizeof(s->addr.sun_path), "/tmp/drover-fuzz-control-%d.sock",
		 getpid());
	if (evloop_new(&s->loop) < 0 ||
	    control_open(&s->ctl, s->loop, s->addr.sun_path, commands,
			 sizeof(commands) / sizeof(commands[0]), s) < 0)
		abort();
	atexit(server_close);
	return s;
}

/* Complete lines holding something other than blanks: each gets a reply. */
static size_t requests_in(const uint8_t *data, size_t size)
{
	size_t n = 0;
	bool content = false;

	for (size_t i = 0; i < size; i++) {
		if (data[i] == '\n') {
			n += content;
			content = false;
		} else if (data[i] != ' ' && data[i] != '\t' && data[i] != '\r') {
			content = true;
		}
	}
	return n;
}

static void check_replies(const struct conn *c)
{
	size_t replies = 0, lines = 0, start = 0;

	for (size_t i = 0; i < c->in_len; i++) {
		json_error_t jerr;
		json_t *msg;

		if (c->in[i] != '\n')
			continue;
		msg = json_loadb(c->in + start, i - start, 0, &jerr);
		CHECK(json_is_object(msg), "line %zu is not a JSON object: %.*s (%s)", lines,
		      (int)(i - start), c->in + start, jerr.text);
		if (lines == 0)
			CHECK(json_object_get(msg, "QMP"), "no greeting first");
		else if (json_object_get(msg, "return") || json_object_get(msg, "error"))
			replies++;
		else
			CHECK(json_is_string(json_object_get(msg, "event")),
			      "line %zu is neither reply nor event", lines);
		json_decref(msg);
		lines++;
		start = i + 1;
	}
	CHECK(start == c->in_len, "the server's output ends in a partial line");
	CHECK(replies == requests_in(c->data, c->size), "%zu replies to %zu requests", replies,
	      requests_in(c->data, c->size));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct server *srv = server_get();
	struct conn c = { .srv = srv, .data = data, .size = size };

	c.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c.fd < 0 || connect(c.fd, (struct sockaddr *)&srv->addr, sizeof(srv->addr)) < 0)
		abort();
	fcntl(c.fd, F_SETFL, O_NONBLOCK);
	if (evloop_add(srv->loop, c.fd, EPOLLIN | EPOLLOUT, conn_cb, &c) < 0)
		abort();
	if (evloop_run(srv->loop) < 0)
		abort();
	evloop_del(srv->loop, c.fd);
	close(c.fd);
	check_replies(&c);
	free(c.in);
	return 0;
}
