#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "evloop.h"
#include "frame.h"

struct conn {
	struct evloop *loop;
	int fd;
	const struct conn_transport *tr;
	const struct conn_handler *h;
	void *opaque;
	char peer[64];
	struct frame_buf in;
	uint8_t *out;              /* queued bytes [out_start, out_len) */
	size_t out_len, out_cap, out_start;
	uint64_t next_seq;
	uint32_t events;           /* what we watch for */
	unsigned dispatching;      /* inside on_ready: freeing waits */
	bool dead;                 /* closed; freed when dispatching ends */
	bool close_when_flushed;
};

/* ---- plain TCP ---- */

static ssize_t plain_read(struct conn *c, int fd, void *buf, size_t len)
{
	ssize_t n = recv(fd, buf, len, 0);

	return n < 0 ? -errno : n;
}

static ssize_t plain_write(struct conn *c, int fd, const void *buf, size_t len)
{
	ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

	return n < 0 ? -errno : n;
}

const struct conn_transport conn_transport_plain = {
	.name = "tcp",
	.read = plain_read,
	.write = plain_write,
};

/* ---- lifetime ---- */

static void conn_free(struct conn *c)
{
	frame_buf_free(&c->in);
	free(c->out);
	free(c);
}

static void shut(struct conn *c)
{
	if (c->dead)
		return;
	c->dead = true;
	evloop_del(c->loop, c->fd);
	close(c->fd);
	c->fd = -1;
	if (!c->dispatching)
		conn_free(c);
}

static void fail(struct conn *c, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(struct conn *c, int err, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	if (c->dead)
		return;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	c->dispatching++;
	c->h->closed(c, err, why, c->opaque);
	c->dispatching--;
	shut(c);
}

void conn_close(struct conn *c)
{
	shut(c);
}

/* ---- output ---- */

static void watch(struct conn *c)
{
	uint32_t ev = EPOLLIN | (c->out_len > c->out_start ? EPOLLOUT : 0);

	if (!c->dead && ev != c->events && evloop_mod(c->loop, c->fd, ev) == 0)
		c->events = ev;
}

/* Writes what the socket takes; 0, or -errno after which the conn failed. */
static int flush_out(struct conn *c)
{
	while (c->out_start < c->out_len) {
		ssize_t n = c->tr->write(c, c->fd, c->out + c->out_start, c->out_len - c->out_start);

		if (n == -EAGAIN || n == -EINTR) {
			if (n == -EINTR)
				continue;
			break;
		}
		if (n <= 0) {
			int err = n < 0 ? (int)n : -EPIPE;

			fail(c, err, "writing to %s: %s", c->peer, strerror(-err));
			return err;
		}
		c->out_start += (size_t)n;
	}
	if (c->out_start == c->out_len) {
		c->out_start = c->out_len = 0;
		if (c->close_when_flushed) {
			shut(c);
			return -ECONNRESET;
		}
	}
	watch(c);
	return 0;
}

static int queue_bytes(struct conn *c, size_t need, uint8_t **at)
{
	if (c->out_start && c->out_start == c->out_len)
		c->out_start = c->out_len = 0;
	if (c->out_len - c->out_start + need > CONN_OUT_MAX) {
		fail(c, -ENOBUFS, "%s is not reading: more than %u bytes queued for it",
		     c->peer, CONN_OUT_MAX);
		return -ENOBUFS;
	}
	if (c->out_cap - c->out_len < need) {
		if (c->out_start) {
			memmove(c->out, c->out + c->out_start, c->out_len - c->out_start);
			c->out_len -= c->out_start;
			c->out_start = 0;
		}
		size_t cap = c->out_cap ? c->out_cap : 4096;
		while (cap - c->out_len < need)
			cap *= 2;
		if (cap != c->out_cap) {
			uint8_t *p = realloc(c->out, cap);
			if (!p)
				return -ENOMEM;
			c->out = p;
			c->out_cap = cap;
		}
	}
	*at = c->out + c->out_len;
	c->out_len += need;
	return 0;
}

int64_t conn_send(struct conn *c, Drover__Envelope *env)
{
	size_t len;
	uint8_t *at;
	int ret;

	if (c->dead || c->close_when_flushed)
		return -ENOTCONN;
	env->version = CONN_PROTO_VERSION;
	env->seq = ++c->next_seq;
	len = drover__envelope__get_packed_size(env);
	if (len == 0 || len > FRAME_MAX)
		return -EMSGSIZE;
	ret = queue_bytes(c, FRAME_HDR + len, &at);
	if (ret < 0)
		return ret;
	frame_put_header(at, (uint32_t)len);
	drover__envelope__pack(env, at + FRAME_HDR);
	ret = flush_out(c);
	return ret < 0 ? ret : (int64_t)env->seq;
}

int64_t conn_send_error(struct conn *c, uint64_t reply_to, const char *code, const char *fmt, ...)
{
	Drover__Envelope env = DROVER__ENVELOPE__INIT;
	Drover__Error e = DROVER__ERROR__INIT;
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	e.code = (char *)code;
	e.message = msg;
	env.reply_to = reply_to;
	env.body_case = DROVER__ENVELOPE__BODY_ERROR;
	env.error = &e;
	return conn_send(c, &env);
}

void conn_close_after_flush(struct conn *c)
{
	if (c->dead)
		return;
	c->close_when_flushed = true;
	if (c->out_start == c->out_len)
		shut(c);
}

/* ---- input ---- */

/* A protocol error: tell the peer, then close. */
static void protocol_error(struct conn *c, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void protocol_error(struct conn *c, const char *code, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	conn_send_error(c, 0, code, "%s", why);
	if (!c->dead) {
		/* What we just queued goes out if the socket takes it now. */
		c->dispatching++;
		c->h->closed(c, -EPROTO, why, c->opaque);
		c->dispatching--;
		shut(c);
	}
}

const char *conn_body_name(const Drover__Envelope *env)
{
	switch (env->body_case) {
	case DROVER__ENVELOPE__BODY_HELLO: return "Hello";
	case DROVER__ENVELOPE__BODY_WELCOME: return "Welcome";
	case DROVER__ENVELOPE__BODY_HEARTBEAT: return "Heartbeat";
	case DROVER__ENVELOPE__BODY_COMMAND: return "Command";
	case DROVER__ENVELOPE__BODY_RESULT: return "CommandResult";
	case DROVER__ENVELOPE__BODY_VM_EVENT: return "VmEvent";
	case DROVER__ENVELOPE__BODY_ERROR: return "Error";
	default: return NULL;
	}
}

static void handle_frame(struct conn *c, const uint8_t *p, size_t len)
{
	Drover__Envelope *env = drover__envelope__unpack(NULL, len, p);

	if (!env) {
		protocol_error(c, "bad-frame", "a frame of %zu bytes from %s is no Envelope", len,
			       c->peer);
		return;
	}
	if (env->version < CONN_PROTO_MIN_VERSION) {
		protocol_error(c, "bad-version", "protocol version %u from %s: this side speaks "
			       "%u to %u", env->version, c->peer, CONN_PROTO_MIN_VERSION,
			       CONN_PROTO_VERSION);
	} else if (!conn_body_name(env)) {
		conn_send_error(c, env->seq, "unknown-message", "message %llu carries no message "
				"type this side (protocol version %u) knows",
				(unsigned long long)env->seq, CONN_PROTO_VERSION);
	} else {
		c->h->message(c, env, c->opaque);
	}
	drover__envelope__free_unpacked(env, NULL);
}

static void read_ready(struct conn *c)
{
	for (int rounds = 0; !c->dead && rounds < 64; rounds++) {
		size_t room;
		uint8_t *tail;
		const uint8_t *payload;
		size_t len;
		ssize_t n;
		int r;

		if (frame_buf_reserve(&c->in, 64 * 1024) < 0) {
			fail(c, -ENOMEM, "out of memory reading from %s", c->peer);
			return;
		}
		tail = frame_buf_tail(&c->in, &room);
		n = room ? c->tr->read(c, c->fd, tail, room) : -ENOBUFS;
		if (n == -EAGAIN)
			return;
		if (n == -EINTR)
			continue;
		if (n == 0) {
			fail(c, 0, "%s closed the connection", c->peer);
			return;
		}
		if (n < 0 && n != -ENOBUFS) {
			fail(c, (int)n, "reading from %s: %s", c->peer, strerror((int)-n));
			return;
		}
		if (n > 0)
			frame_buf_commit(&c->in, (size_t)n);
		while (!c->dead && (r = frame_next(&c->in, &payload, &len)) != 0) {
			if (r < 0) {
				protocol_error(c, "frame-too-large", "a frame of %zu bytes from %s "
					       "(1 to %u allowed)", len, c->peer, FRAME_MAX);
				return;
			}
			handle_frame(c, payload, len);
		}
	}
}

static void on_ready(void *opaque, int fd, uint32_t events)
{
	struct conn *c = opaque;

	c->dispatching++;
	if (events & EPOLLOUT)
		flush_out(c);
	if (!c->dead && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		read_ready(c);
	c->dispatching--;
	if (c->dead && !c->dispatching)
		conn_free(c);
}

/* ---- set-up ---- */

static void describe_peer(int fd, char *out, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *a = (struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
			port = ntohs(a->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
			inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
			port = ntohs(a->sin6_port);
		}
	}
	snprintf(out, len, ss.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host, port);
}

int conn_open(struct evloop *loop, int fd, const struct conn_transport *tr,
	      const struct conn_handler *h, void *opaque, struct conn **out)
{
	struct conn *c = calloc(1, sizeof(*c));
	int one = 1, ret;

	if (!c)
		return -ENOMEM;
	c->loop = loop;
	c->fd = fd;
	c->tr = tr ? tr : &conn_transport_plain;
	c->h = h;
	c->opaque = opaque;
	c->events = EPOLLIN;
	frame_buf_init(&c->in);
	describe_peer(fd, c->peer, sizeof(c->peer));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	ret = evloop_add(loop, fd, c->events, on_ready, c);
	if (ret < 0) {
		conn_free(c);
		return ret;
	}
	*out = c;
	return 0;
}

const char *conn_peer(const struct conn *c)
{
	return c->peer;
}

size_t conn_queued(const struct conn *c)
{
	return c->out_len - c->out_start;
}

void conn_set_opaque(struct conn *c, void *opaque)
{
	c->opaque = opaque;
}

void *conn_opaque(const struct conn *c)
{
	return c->opaque;
}

/* ---- sockets ---- */

/* "HOST:PORT", "[V6]:PORT" or ":PORT" (any address). */
static int resolve(const char *addr, bool passive, struct addrinfo **res, char *err, size_t errlen)
{
	char host[256];
	const char *colon = strrchr(addr, ':');
	const char *h = host;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0) };
	size_t hl;
	int r;

	if (!colon || !colon[1]) {
		snprintf(err, errlen, "'%s': expected HOST:PORT", addr);
		return -EINVAL;
	}
	hl = (size_t)(colon - addr);
	if (hl >= sizeof(host)) {
		snprintf(err, errlen, "'%s': host name too long", addr);
		return -EINVAL;
	}
	memcpy(host, addr, hl);
	host[hl] = 0;
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
		host[hl - 1] = 0;
		h = host + 1;
	}
	for (const char *p = colon + 1; *p; p++) {
		if (*p < '0' || *p > '9' || p - colon > 5) {
			snprintf(err, errlen, "'%s': port '%s' is not a number from 0 to 65535",
				 addr, colon + 1);
			return -EINVAL;
		}
	}
	if (atoi(colon + 1) > 65535) {
		snprintf(err, errlen, "'%s': port '%s' is not a number from 0 to 65535", addr,
			 colon + 1);
		return -EINVAL;
	}
	r = getaddrinfo(*h ? h : NULL, colon + 1, &hints, res);
	if (r) {
		snprintf(err, errlen, "'%s': %s", addr, gai_strerror(r));
		return -EINVAL;
	}
	return 0;
}

int conn_listen(const char *addr, int backlog, int *fd, uint16_t *port, char *err, size_t errlen)
{
	struct addrinfo *res, *ai;
	int ret = resolve(addr, true, &res, err, errlen), s = -1, one = 1;

	if (ret < 0)
		return ret;
	ret = -EADDRNOTAVAIL;
	for (ai = res; ai; ai = ai->ai_next) {
		s = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (s < 0) {
			ret = -errno;
			continue;
		}
		setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(s, ai->ai_addr, ai->ai_addrlen) == 0 && listen(s, backlog) == 0)
			break;
		ret = -errno;
		close(s);
		s = -1;
	}
	freeaddrinfo(res);
	if (s < 0) {
		snprintf(err, errlen, "listening on '%s': %s", addr, strerror(-ret));
		return ret;
	}
	if (port) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);

		getsockname(s, (struct sockaddr *)&ss, &sl);
		*port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						       : ((struct sockaddr_in *)&ss)->sin_port);
	}
	*fd = s;
	return 0;
}

int conn_connect_start(const char *addr, int *fd, char *err, size_t errlen)
{
	struct addrinfo *res;
	int ret = resolve(addr, false, &res, err, errlen), s;

	if (ret < 0)
		return ret;
	s = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s < 0) {
		ret = -errno;
		freeaddrinfo(res);
		snprintf(err, errlen, "socket: %s", strerror(-ret));
		return ret;
	}
	if (connect(s, res->ai_addr, res->ai_addrlen) < 0 && errno != EINPROGRESS) {
		ret = -errno;
		freeaddrinfo(res);
		close(s);
		snprintf(err, errlen, "connecting to '%s': %s", addr, strerror(-ret));
		return ret;
	}
	freeaddrinfo(res);
	*fd = s;
	return 0;
}

int conn_connect_result(int fd)
{
	int e = 0;
	socklen_t l = sizeof(e);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l) < 0)
		return -errno;
	return -e;
}
