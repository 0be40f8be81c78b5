/* QMP client (qmpc.h).
 *
 * Lifetime: callbacks may close the client, so a `dispatching` count keeps
 * the struct alive until the outermost callback returns; `dead` marks it
 * closed meanwhile (as proto/conn.c does). */
#include "qmpc.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "evloop.h"

struct pending {
	uint64_t id;
	qmpc_reply_fn fn;
	void *opaque;
	struct pending *next;
};

struct qmpc {
	struct evloop *loop;
	int fd;
	const struct qmpc_handler *h;
	void *opaque;
	char *in;                  /* bytes received, not yet a whole line */
	size_t in_len, in_cap;
	char *out;                 /* bytes not yet taken by the socket */
	size_t out_len, out_cap;
	uint64_t next_id;
	struct pending *pending;   /* oldest first */
	unsigned dispatching;
	bool dead;
	bool watching_out;
};

static void fail_pending(struct qmpc *q, const char *why)
{
	while (q->pending) {
		struct pending *p = q->pending;

		q->pending = p->next;
		p->fn(p->opaque, NULL, why);
		free(p);
	}
}

static void qmpc_free(struct qmpc *q)
{
	free(q->in);
	free(q->out);
	free(q);
}

static void shut(struct qmpc *q, const char *why, bool tell)
{
	if (q->dead)
		return;
	q->dead = true;
	evloop_del(q->loop, q->fd);
	close(q->fd);
	q->fd = -1;
	q->dispatching++;
	/* The owner hears first, so that the failing callbacks below can tell
	 * a closed connection from an error the peer answered. */
	if (tell && q->h->closed)
		q->h->closed(q->opaque, why);
	fail_pending(q, why);
	q->dispatching--;
	if (!q->dispatching)
		qmpc_free(q);
}

void qmpc_close(struct qmpc *q)
{
	if (q)
		shut(q, "connection closed", false);
}

static void watch_out(struct qmpc *q, bool on)
{
	if (q->dead || q->watching_out == on)
		return;
	if (evloop_mod(q->loop, q->fd, EPOLLIN | (on ? EPOLLOUT : 0)) == 0)
		q->watching_out = on;
}

static int flush_out(struct qmpc *q)
{
	size_t done = 0;

	while (done < q->out_len) {
		ssize_t n = send(q->fd, q->out + done, q->out_len - done, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0)
			return n < 0 ? -errno : -EPIPE;
		done += (size_t)n;
	}
	memmove(q->out, q->out + done, q->out_len - done);
	q->out_len -= done;
	watch_out(q, q->out_len > 0);
	return 0;
}

int qmpc_execute(struct qmpc *q, const char *cmd, json_t *args, qmpc_reply_fn fn, void *opaque)
{
	struct pending *p, **tail;
	json_t *req;
	char *line;
	size_t len;

	if (q->dead) {
		json_decref(args);
		return -ENOTCONN;
	}
	p = calloc(1, sizeof(*p));
	req = json_pack("{s:s, s:I}", "execute", cmd, "id", (json_int_t)(q->next_id + 1));
	if (!p || !req) {
		free(p);
		json_decref(req);
		json_decref(args);
		return -ENOMEM;
	}
	if (args)
		json_object_set_new(req, "arguments", args);
	line = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (!line) {
		free(p);
		return -ENOMEM;
	}
	len = strlen(line);
	if (q->out_cap - q->out_len < len + 1) {
		size_t cap = q->out_len + len + 1 + 4096;
		char *o = realloc(q->out, cap);

		if (!o) {
			free(line);
			free(p);
			return -ENOMEM;
		}
		q->out = o;
		q->out_cap = cap;
	}
	memcpy(q->out + q->out_len, line, len);
	q->out[q->out_len + len] = '\n';
	q->out_len += len + 1;
	free(line);
	p->id = ++q->next_id;
	p->fn = fn;
	p->opaque = opaque;
	for (tail = &q->pending; *tail; tail = &(*tail)->next)
		;
	*tail = p;
	/* A socket that fails now reports it through the loop (EPOLLERR), where
	 * callbacks may run; the caller's own must not run before we return. */
	if (flush_out(q) < 0)
		watch_out(q, true);
	return 0;
}

static void dispatch_reply(struct qmpc *q, json_t *msg)
{
	json_t *id = json_object_get(msg, "id");
	struct pending **pp, *p;
	char err[512];

	if (!json_is_integer(id))
		return;    /* not ours: another client's id-less command cannot reach us */
	for (pp = &q->pending; *pp && (*pp)->id != (uint64_t)json_integer_value(id); pp = &(*pp)->next)
		;
	p = *pp;
	if (!p)
		return;
	*pp = p->next;
	if (json_object_get(msg, "error")) {
		json_t *e = json_object_get(msg, "error");
		const char *cls = json_string_value(json_object_get(e, "class"));
		const char *desc = json_string_value(json_object_get(e, "desc"));

		snprintf(err, sizeof(err), "%s: %s", cls ? cls : "Error", desc ? desc : "no description");
		p->fn(p->opaque, NULL, err);
	} else {
		p->fn(p->opaque, json_object_get(msg, "return"), NULL);
	}
	free(p);
}

static void dispatch_line(struct qmpc *q, const char *line, size_t len)
{
	json_error_t jerr;
	json_t *msg = json_loadb(line, len, 0, &jerr);
	json_t *ev;

	if (!msg || !json_is_object(msg)) {
		json_decref(msg);
		shut(q, "the control socket sent a line that is no JSON object", true);
		return;
	}
	if ((ev = json_object_get(msg, "event")) && json_is_string(ev)) {
		json_t *data = json_object_get(msg, "data");

		if (q->h->event)
			q->h->event(q->opaque, json_string_value(ev), data);
	} else if (json_object_get(msg, "return") || json_object_get(msg, "error")) {
		dispatch_reply(q, msg);
	}
	/* Anything else ({"QMP": ...}, the greeting) carries nothing we need. */
	json_decref(msg);
}

/* Reads what is there: 1 if there may be more, 0 when the socket has
 * nothing more for now, -1 once the connection is gone. */
static int read_some(struct qmpc *q)
{
	for (int rounds = 0; rounds < 64 && !q->dead; rounds++) {
		ssize_t n;
		char *nl;
		size_t start = 0;

		if (q->in_cap - q->in_len < 4096) {
			size_t cap = q->in_cap ? q->in_cap * 2 : 8192;
			char *b;

			if (cap > QMPC_MAX_LINE + 8192) {
				shut(q, "the control socket sent a line longer than 1 MiB", true);
				return -1;
			}
			b = realloc(q->in, cap);
			if (!b) {
				shut(q, "out of memory reading the control socket", true);
				return -1;
			}
			q->in = b;
			q->in_cap = cap;
		}
		n = recv(q->fd, q->in + q->in_len, q->in_cap - q->in_len, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		if (n <= 0) {
			shut(q, n == 0 ? "the VMM closed its control socket" : strerror(errno), true);
			return -1;
		}
		q->in_len += (size_t)n;
		while (!q->dead && (nl = memchr(q->in + start, '\n', q->in_len - start))) {
			size_t len = (size_t)(nl - (q->in + start));

			dispatch_line(q, q->in + start, len);
			start += len + 1;
		}
		if (q->dead)
			return -1;
		memmove(q->in, q->in + start, q->in_len - start);
		q->in_len -= start;
	}
	return q->dead ? -1 : 1;
}

static void on_ready(void *opaque, int fd, uint32_t events)
{
	struct qmpc *q = opaque;

	q->dispatching++;
	if ((events & EPOLLOUT) && flush_out(q) < 0)
		shut(q, "the VMM stopped reading its control socket", true);
	if (!q->dead && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		read_some(q);
	q->dispatching--;
	if (q->dead && !q->dispatching)
		qmpc_free(q);
}

void qmpc_drain(struct qmpc *q)
{
	q->dispatching++;
	while (read_some(q) > 0)
		;
	q->dispatching--;
	if (q->dead && !q->dispatching)
		qmpc_free(q);
}

int qmpc_open(struct evloop *loop, int fd, const struct qmpc_handler *h, void *opaque,
	      struct qmpc **out)
{
	struct qmpc *q = calloc(1, sizeof(*q));
	int ret;

	if (!q)
		return -ENOMEM;
	q->loop = loop;
	q->fd = fd;
	q->h = h;
	q->opaque = opaque;
	ret = evloop_add(loop, fd, EPOLLIN, on_ready, q);
	if (ret < 0) {
		free(q);
		return ret;
	}
	*out = q;
	return 0;
}
