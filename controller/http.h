/* droverd's HTTP server: libmicrohttpd without a thread of its own, driven
 * by the process's event loop (MHD_USE_EPOLL: MHD's epoll fd is watched by
 * our loop, MHD_run runs when it is readable, and a timer follows
 * MHD_get_timeout). Every request is answered from inside MHD_run, so the
 * handler runs on the loop's thread like everything else.
 *
 * What this layer decides before the handler sees a request: a body above
 * HTTP_BODY_MAX is answered 413 (at once when Content-Length says so). */
#ifndef DROVER_HTTP_H
#define DROVER_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_BODY_MAX (1u << 20)
#define HTTP_ARGS_MAX 32

struct evloop;
struct http;

struct http_arg {
	const char *key, *value;       /* value NULL for "?flag" */
};

struct http_request {
	const char *method, *path;
	struct http_arg args[HTTP_ARGS_MAX];
	size_t nargs;
	bool too_many_args;
	const char *authorization, *content_type, *idempotency_key;  /* NULL: absent */
	const char *body;              /* NUL-terminated copy; NULL without a body */
	size_t body_len;
};

struct http_response {
	int status;
	char *body;                    /* malloc'd JSON text; freed by the server */
	char *allow;                   /* 405: the Allow header (malloc'd; freed by the server) */
	char *location;                /* 202: Location (likewise) */
	bool www_authenticate;         /* 401 */
	bool replayed;                 /* Idempotent-Replayed: true */
};

typedef void (*http_handler)(void *opaque, const struct http_request *req,
			     struct http_response *resp);

/* Serves HTTP on listen_addr ("HOST:PORT"; port 0 picks one, written to
 * *port). 0 or -errno with err set. */
int http_start(struct evloop *loop, const char *listen_addr, http_handler h, void *opaque,
	       struct http **out, uint16_t *port, char *err, size_t errlen);
void http_stop(struct http *h);

/* A JSON error body {"error": {"code", "message"}}: malloc'd. */
char *http_error_body(const char *code, const char *message);

#endif
