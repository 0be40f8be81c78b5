/* libmicrohttpd on droverd's event loop (http.h).
 *
 * Invariant: MHD_get_timeout is asked again after every MHD_run, and only
 * MHD_run changes MHD's state (requests are answered inside it), so the
 * timer always reflects what MHD needs next. MHD's epoll is edge-triggered
 * inside; when it has work left it says so with a timeout of 0, which the
 * timer turns into "on the next turn of the loop". */
#include "http.h"

#include <errno.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "conn.h"
#include "evloop.h"
#include "log.h"

struct http {
	struct evloop *loop;
	struct MHD_Daemon *d;
	int epfd;
	struct evloop_timer *timer;
	http_handler handler;
	void *opaque;
};

/* Per request: the body as it arrives. */
struct req_state {
	char *body;
	size_t len, cap;
	bool too_large;
};

char *http_error_body(const char *code, const char *message)
{
	json_t *doc = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);
	char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;

	json_decref(doc);
	return text;
}

static void reschedule(struct http *h)
{
	MHD_UNSIGNED_LONG_LONG ms;

	if (MHD_get_timeout(h->d, &ms) == MHD_YES)
		evloop_timer_set(h->timer, ms, 0);
	else
		evloop_timer_stop(h->timer);
}

static void run(struct http *h)
{
	MHD_run(h->d);
	reschedule(h);
}

static void on_epoll(void *opaque, int fd, uint32_t events)
{
	run(opaque);
}

static void on_timer(void *opaque, struct evloop_timer *t)
{
	run(opaque);
}

static enum MHD_Result send_response(struct MHD_Connection *c, struct http_response *r)
{
	const char *body = r->body ? r->body : "{}";
	struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(body), (void *)body,
								   MHD_RESPMEM_MUST_COPY);
	enum MHD_Result ret = MHD_NO;

	if (!resp)
		goto out;
	MHD_add_response_header(resp, "Content-Type", "application/json");
	if (r->allow)
		MHD_add_response_header(resp, "Allow", r->allow);
	if (r->location)
		MHD_add_response_header(resp, "Location", r->location);
	if (r->www_authenticate)
		MHD_add_response_header(resp, "WWW-Authenticate", "Bearer realm=\"drover\"");
	if (r->replayed)
		MHD_add_response_header(resp, "Idempotent-Replayed", "true");
	ret = MHD_queue_response(c, (unsigned)r->status, resp);
	MHD_destroy_response(resp);
out:
	free(r->body);
	free(r->allow);
	free(r->location);
	r->body = r->allow = r->location = NULL;
	return resp ? ret : MHD_NO;
}

static enum MHD_Result too_large(struct MHD_Connection *c)
{
	char msg[128];
	struct http_response r = { .status = 413 };

	snprintf(msg, sizeof(msg), "the request body is larger than %u bytes (1 MiB)",
		 HTTP_BODY_MAX);
	r.body = http_error_body("too-large", msg);
	return send_response(c, &r);
}

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key,
				   const char *value)
{
	struct http_request *req = cls;

	if (req->nargs == HTTP_ARGS_MAX) {
		req->too_many_args = true;
		return MHD_NO;
	}
	req->args[req->nargs].key = key;
	req->args[req->nargs].value = value;
	req->nargs++;
	return MHD_YES;
}

static int append(struct req_state *rs, const char *data, size_t n)
{
	if (rs->len + n > HTTP_BODY_MAX) {
		rs->too_large = true;
		free(rs->body);
		rs->body = NULL;
		rs->len = rs->cap = 0;
		return 0;
	}
	if (rs->len + n + 1 > rs->cap) {
		size_t cap = rs->cap ? rs->cap : 4096;
		char *p;

		while (cap < rs->len + n + 1)
			cap *= 2;
		p = realloc(rs->body, cap);
		if (!p)
			return -ENOMEM;
		rs->body = p;
		rs->cap = cap;
	}
	memcpy(rs->body + rs->len, data, n);
	rs->len += n;
	rs->body[rs->len] = '\0';
	return 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version,
				  const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	struct http *h = cls;
	struct req_state *rs = *con_cls;
	struct http_request req = { .method = method, .path = url };
	struct http_response resp = { .status = 500 };

	if (!rs) {
		const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
							     MHD_HTTP_HEADER_CONTENT_LENGTH);

		rs = calloc(1, sizeof(*rs));
		if (!rs)
			return MHD_NO;
		*con_cls = rs;
		/* Refused before a byte of it is read. */
		if (cl && strtoull(cl, NULL, 10) > HTTP_BODY_MAX)
			return too_large(c);
		return MHD_YES;
	}
	if (*upload_data_size) {
		if (!rs->too_large && append(rs, upload_data, *upload_data_size) < 0)
			return MHD_NO;
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (rs->too_large)
		return too_large(c);
	req.authorization = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
							MHD_HTTP_HEADER_AUTHORIZATION);
	req.content_type = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
						       MHD_HTTP_HEADER_CONTENT_TYPE);
	req.idempotency_key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Idempotency-Key");
	MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_arg, &req);
	req.body = rs->body;
	req.body_len = rs->len;
	h->handler(h->opaque, &req, &resp);
	return send_response(c, &resp);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct req_state *rs = *con_cls;

	if (rs) {
		free(rs->body);
		free(rs);
		*con_cls = NULL;
	}
}

/* MHD's own messages; their formats are MHD's literals. */
static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	log_vmsg(LOG_WARN, fmt, ap);
}

int http_start(struct evloop *loop, const char *listen_addr, http_handler handler, void *opaque,
	       struct http **out, uint16_t *port, char *err, size_t errlen)
{
	struct http *h = calloc(1, sizeof(*h));
	const union MHD_DaemonInfo *info;
	int fd = -1, ret;

	if (!h)
		return -ENOMEM;
	h->loop = loop;
	h->handler = handler;
	h->opaque = opaque;
	ret = conn_listen(listen_addr, 1024, &fd, port, err, errlen);
	if (ret)
		goto err_free;
	h->d = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL,
				on_request, h,
				MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
				MHD_OPTION_LISTEN_SOCKET, fd,
				MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
				MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
				MHD_OPTION_CONNECTION_LIMIT, (unsigned)4000,
				MHD_OPTION_END);
	if (!h->d) {
		close(fd);
		snprintf(err, errlen, "HTTP server on '%s' did not start (libmicrohttpd)",
			 listen_addr);
		ret = -EIO;
		goto err_free;
	}
	info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_EPOLL_FD);
	h->epfd = info ? info->epoll_fd : -1;
	ret = evloop_add(loop, h->epfd, EPOLLIN, on_epoll, h);
	if (!ret)
		ret = evloop_timer_add(loop, 0, 0, on_timer, h, &h->timer);
	if (ret) {
		snprintf(err, errlen, "HTTP server on '%s': %s", listen_addr, strerror(-ret));
		goto err_stop;
	}
	*out = h;
	return 0;

err_stop:
	evloop_del(loop, h->epfd);
	MHD_stop_daemon(h->d);
err_free:
	free(h);
	return ret;
}

void http_stop(struct http *h)
{
	if (!h)
		return;
	evloop_timer_del(h->timer);
	evloop_del(h->loop, h->epfd);
	/* MHD_stop_daemon closes the listening socket we gave it. */
	MHD_stop_daemon(h->d);
	free(h);
}
