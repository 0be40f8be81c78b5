#include "client.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BODY (64u << 20)

int client_init(struct cli_client *c, const char *url, const char *token, char *err,
		size_t errlen)
{
	size_t n;

	memset(c, 0, sizeof(*c));
	if (strncmp(url, "http://", 7) && strncmp(url, "https://", 8)) {
		snprintf(err, errlen, "URL '%s': only http:// and https:// are understood", url);
		return -EINVAL;
	}
	c->url = strdup(url);
	if (!c->url)
		return -ENOMEM;
	n = strlen(c->url);
	while (n > 8 && c->url[n - 1] == '/')
		c->url[--n] = 0;
	if (token && *token) {
		c->token = strdup(token);
		if (!c->token) {
			client_free(c);
			return -ENOMEM;
		}
	}
	c->timeout_ms = 30000;
	c->curl = curl_easy_init();
	if (!c->curl) {
		client_free(c);
		snprintf(err, errlen, "libcurl could not start");
		return -ENOMEM;
	}
	return 0;
}

void client_free(struct cli_client *c)
{
	if (c->curl)
		curl_easy_cleanup(c->curl);
	free(c->url);
	free(c->token);
	memset(c, 0, sizeof(*c));
}

void client_response_free(struct cli_response *r)
{
	json_decref(r->body);
	free(r->raw);
	memset(r, 0, sizeof(*r));
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *opaque)
{
	struct cli_response *r = opaque;
	size_t n = size * nmemb;
	char *p;

	if (r->raw_len + n > MAX_BODY)
		return 0;           /* aborts the transfer */
	p = realloc(r->raw, r->raw_len + n + 1);
	if (!p)
		return 0;
	memcpy(p + r->raw_len, ptr, n);
	r->raw = p;
	r->raw_len += n;
	r->raw[r->raw_len] = 0;
	return n;
}

int client_request(struct cli_client *c, const char *method, const char *path,
		   const json_t *body, struct cli_response *resp, char *err, size_t errlen)
{
	CURL *curl = c->curl;
	struct curl_slist *hdrs = NULL;
	char *url = NULL, *text = NULL, *auth = NULL;
	CURLcode cc;
	int ret = 0;

	memset(resp, 0, sizeof(*resp));
	if (asprintf(&url, "%s%s", c->url, path) < 0)
		return -ENOMEM;
	curl_easy_reset(curl);
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, c->timeout_ms);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, resp);
	curl_easy_setopt(curl, CURLOPT_USERAGENT, "drover/" DROVER_VERSION);
	/* The operator's proxy settings are for the web, not for droverd. */
	curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
	hdrs = curl_slist_append(hdrs, "Accept: application/json");
	if (c->token) {
		if (asprintf(&auth, "Authorization: Bearer %s", c->token) < 0) {
			ret = -ENOMEM;
			goto out;
		}
		hdrs = curl_slist_append(hdrs, auth);
	}
	if (body) {
		text = json_dumps(body, JSON_COMPACT);
		if (!text) {
			ret = -ENOMEM;
			goto out;
		}
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, text);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(text));
	}
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
	if (c->verbose)
		fprintf(stderr, "> %s %s%s%s\n", method, url, text ? " " : "", text ? text : "");
	cc = curl_easy_perform(curl);
	if (cc != CURLE_OK) {
		snprintf(err, errlen, "cannot reach droverd at %s: %s", c->url,
			 cc == CURLE_WRITE_ERROR ? "answer too large" : curl_easy_strerror(cc));
		ret = cc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -ECONNREFUSED;
		client_response_free(resp);
		goto out;
	}
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &resp->status);
	if (resp->raw)
		resp->body = json_loadb(resp->raw, resp->raw_len, 0, NULL);
	if (c->verbose)
		fprintf(stderr, "< %ld %s\n", resp->status, resp->raw ? resp->raw : "");
out:
	curl_slist_free_all(hdrs);
	free(url);
	free(text);
	free(auth);
	return ret;
}

void client_format_error(const struct cli_response *r, char *out, size_t len)
{
	json_t *e = json_object_get(r->body, "error");
	const char *code = json_string_value(json_object_get(e, "code"));
	const char *msg = json_string_value(json_object_get(e, "message"));
	json_t *hosts = json_object_get(json_object_get(e, "details"), "hosts");
	size_t n;

	if (!code || !msg) {
		/* Not droverd's error shape: a proxy, or something else on the port. */
		snprintf(out, len, "HTTP %ld from droverd, not a drover error document%s%.200s",
			 r->status, r->raw ? ": " : "", r->raw ? r->raw : "");
		return;
	}
	n = (size_t)snprintf(out, len, "%ld %s: %s", r->status, code, msg);
	if (json_is_object(hosts)) {
		const char *host;
		json_t *reasons;

		json_object_foreach(hosts, host, reasons) {
			size_t i;
			json_t *why;

			json_array_foreach(reasons, i, why) {
				if (n >= len)
					return;
				n += (size_t)snprintf(out + n, len - n, "\n  %s: %s", host,
						      json_string_value(why) ? json_string_value(why) : "?");
			}
		}
	}
}

char *client_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	char *out = malloc(strlen(s) * 3 + 1), *p = out;

	if (!out)
		return NULL;
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		    ch == '-' || ch == '_' || ch == '.' || ch == '~') {
			*p++ = (char)ch;
		} else {
			*p++ = '%';
			*p++ = hex[ch >> 4];
			*p++ = hex[ch & 15];
		}
	}
	*p = 0;
	return out;
}
