/* The CLI's HTTP client: one droverd, JSON both ways, over libcurl. */
#ifndef DROVER_CLI_CLIENT_H
#define DROVER_CLI_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct cli_client {
	char *url;              /* "http://127.0.0.1:8080", no trailing slash */
	char *token;            /* NULL: none */
	long timeout_ms;
	bool verbose;           /* each request and status on stderr */
	void *curl;             /* CURL *, reused between requests */
};

struct cli_response {
	long status;
	json_t *body;           /* NULL when the body is no JSON */
	char *raw;              /* the body as received */
	size_t raw_len;
};

/* 0, or -EINVAL with err ("--url 'ftp://x': only http:// and https://"). */
int client_init(struct cli_client *c, const char *url, const char *token, char *err,
		size_t errlen);
void client_free(struct cli_client *c);

/* method path (path holds the query, already escaped), body or NULL. 0 with
 * resp filled (any HTTP status), or -errno when droverd could not be
 * reached, with err saying why ("cannot reach droverd at http://...:
 * Connection refused"). resp must be freed with client_response_free. */
int client_request(struct cli_client *c, const char *method, const char *path,
		   const json_t *body, struct cli_response *resp, char *err, size_t errlen);
void client_response_free(struct cli_response *r);

/* An error answer in one line: "404 not-found: VM 'web-1' not found", then
 * each host's reasons of a placement failure on lines of their own. */
void client_format_error(const struct cli_response *r, char *out, size_t len);

/* s %-escaped for a URL path segment or query value. Free it. */
char *client_escape(const char *s);

#endif
