/* The control socket server (vmm/control.c), driven through real unix
 * sockets: the server runs on an evloop in its own thread, the test is the
 * clients. Whatever must happen on the loop's thread (control_event, stopping
 * the loop) is handed over through a pipe and waited for with a deadline, so a
 * server that ever blocks fails the test instead of hanging it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "evloop.h"

#define IO_TIMEOUT_MS 10000

struct server {
	struct evloop *loop;
	struct control *ctl;
	pthread_t thread;
	int pipe[2];            /* test -> loop thread: struct call * */
	sem_t done;
	char dir[64];
	char path[128];
	int calls;              /* of the "count" command; loop thread only */
};

struct call {
	void (*fn)(struct server *s, void *arg);
	void *arg;
};

/* ---- commands the tests register ---- */

static enum control_error cmd_add(void *ctx, json_t *args, json_t **ret, char *desc,
				  size_t desclen)
{
	json_t *a = json_object_get(args, "a"), *b = json_object_get(args, "b");

	if (!json_is_integer(a) || !json_is_integer(b)) {
		snprintf(desc, desclen, "add: 'a' and 'b' must be integers");
		return CONTROL_GENERIC_ERROR;
	}
	*ret = json_pack("{s:I}", "sum", json_integer_value(a) + json_integer_value(b));
	return CONTROL_OK;
}

static enum control_error cmd_echo(void *ctx, json_t *args, json_t **ret, char *desc,
				   size_t desclen)
{
	*ret = json_deep_copy(args);
	return CONTROL_OK;
}

static enum control_error cmd_count(void *ctx, json_t *args, json_t **ret, char *desc,
				    size_t desclen)
{
	struct server *s = ctx;

	*ret = json_pack("{s:i}", "calls", ++s->calls);
	return CONTROL_OK;
}

static enum control_error cmd_nodev(void *ctx, json_t *args, json_t **ret, char *desc,
				    size_t desclen)
{
	snprintf(desc, desclen, "Device '%s' not found",
		 json_string_value(json_object_get(args, "id")));
	return CONTROL_DEVICE_NOT_FOUND;
}

static enum control_error cmd_empty(void *ctx, json_t *args, json_t **ret, char *desc,
				    size_t desclen)
{
	return CONTROL_OK;      /* *ret left NULL: the reply is {} */
}

/* A handler that sends an event while its own request is being served. */
static enum control_error cmd_emit(void *ctx, json_t *args, json_t **ret, char *desc,
				   size_t desclen)
{
	struct server *s = ctx;

	control_event(s->ctl, "EMITTED", json_deep_copy(args));
	return CONTROL_OK;
}

static const struct control_command commands[] = {
	{ "add", cmd_add },
	{ "echo", cmd_echo },
	{ "count", cmd_count },
	{ "nodev", cmd_nodev },
	{ "empty", cmd_empty },
	{ "emit", cmd_emit },
};

/* ---- the server thread ---- */

static void pipe_cb(void *opaque, int fd, uint32_t events)
{
	struct server *s = opaque;
	struct call *c;

	if (read(fd, &c, sizeof(c)) != sizeof(c))
		return;
	c->fn(s, c->arg);
	sem_post(&s->done);
}

static void *loop_thread(void *arg)
{
	struct server *s = arg;

	evloop_run(s->loop);
	return NULL;
}

/* Runs fn on the loop's thread and waits for it. */
static void on_loop(struct server *s, void (*fn)(struct server *, void *), void *arg)
{
	struct call c = { fn, arg }, *cp = &c;
	struct timespec deadline;

	assert_int_equal(write(s->pipe[1], &cp, sizeof(cp)), sizeof(cp));
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += IO_TIMEOUT_MS / 1000;
	while (sem_timedwait(&s->done, &deadline) < 0) {
		if (errno != EINTR)
			fail_msg("the server's loop did not run a call within %d ms "
				 "(is it blocked?)", IO_TIMEOUT_MS);
	}
}

static void make_dir(struct server *s)
{
	snprintf(s->dir, sizeof(s->dir), "/tmp/drover-test-control-XXXXXX");
	assert_non_null(mkdtemp(s->dir));
	snprintf(s->path, sizeof(s->path), "%s/vm.sock", s->dir);
}

static void loop_setup(struct server *s)
{
	assert_int_equal(evloop_new(&s->loop), 0);
	assert_int_equal(pipe2(s->pipe, O_CLOEXEC), 0);
	assert_int_equal(sem_init(&s->done, 0, 0), 0);
	assert_int_equal(evloop_add(s->loop, s->pipe[0], EPOLLIN, pipe_cb, s), 0);
}

static struct server *server_start(void)
{
	struct server *s = calloc(1, sizeof(*s));

	assert_non_null(s);
	make_dir(s);
	loop_setup(s);
	assert_int_equal(control_open(&s->ctl, s->loop, s->path, commands,
				      sizeof(commands) / sizeof(commands[0]), s), 0);
	assert_int_equal(pthread_create(&s->thread, NULL, loop_thread, s), 0);
	return s;
}

static void do_stop(struct server *s, void *arg)
{
	evloop_stop(s->loop);
}

static void do_close(struct server *s, void *arg)
{
	control_close(s->ctl);
	s->ctl = NULL;
}

static void server_stop(struct server *s)
{
	if (s->ctl)
		on_loop(s, do_close, NULL);
	on_loop(s, do_stop, NULL);
	pthread_join(s->thread, NULL);
	evloop_free(s->loop);
	close(s->pipe[0]);
	close(s->pipe[1]);
	sem_destroy(&s->done);
	unlink(s->path);
	rmdir(s->dir);
	free(s);
}

struct event_arg {
	const char *name;
	json_t *data;
};

static void do_event(struct server *s, void *arg)
{
	struct event_arg *e = arg;

	control_event(s->ctl, e->name, e->data);
}

static void server_event(struct server *s, const char *name, json_t *data)
{
	struct event_arg e = { name, data };

	on_loop(s, do_event, &e);
}

/* ---- clients ---- */

struct client {
	int fd;
	char *buf;
	size_t len, cap;
};

static struct client *client_connect_raw(const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct client *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	c->cap = 1 << 16;
	c->buf = malloc(c->cap);
	assert_non_null(c->buf);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(c->fd >= 0);
	if (connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		fail_msg("connect %s: %s", path, strerror(errno));
	return c;
}

static void client_free(struct client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	free(c->buf);
	free(c);
}

/* Reads one line (without its newline) into a malloc'd string; NULL at end
 * of stream or on a reset connection. Fails the test on a timeout. */
static char *client_line(struct client *c)
{
	for (;;) {
		char *nl = memchr(c->buf, '\n', c->len);
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
		ssize_t n;

		if (nl) {
			size_t llen = (size_t)(nl - c->buf);
			char *line = strndup(c->buf, llen);

			assert_non_null(line);
			memmove(c->buf, nl + 1, c->len - llen - 1);
			c->len -= llen + 1;
			return line;
		}
		if (c->len == c->cap) {
			c->cap *= 2;
			c->buf = realloc(c->buf, c->cap);
			assert_non_null(c->buf);
		}
		if (poll(&pfd, 1, IO_TIMEOUT_MS) != 1)
			fail_msg("no line from the server within %d ms", IO_TIMEOUT_MS);
		n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
		if (n < 0 && errno == ECONNRESET)
			return NULL;
		if (n < 0)
			fail_msg("recv: %s", strerror(errno));
		if (n == 0)
			return NULL;
		c->len += (size_t)n;
	}
}

static json_t *client_json(struct client *c)
{
	char *line = client_line(c);
	json_error_t jerr;
	json_t *msg;

	if (!line)
		fail_msg("the server closed the connection instead of replying");
	msg = json_loads(line, 0, &jerr);
	if (!msg)
		fail_msg("the server sent a line that is not JSON: %s (%s)", line, jerr.text);
	if (!json_is_object(msg))
		fail_msg("the server sent a line that is not an object: %s", line);
	free(line);
	return msg;
}

static void client_send(struct client *c, const char *text)
{
	size_t len = strlen(text);

	assert_int_equal(send(c->fd, text, len, MSG_NOSIGNAL), (ssize_t)len);
}

static struct client *client_connect(const char *path)
{
	struct client *c = client_connect_raw(path);
	json_t *greeting = client_json(c);

	assert_non_null(json_object_get(greeting, "QMP"));
	json_decref(greeting);
	return c;
}

/* Sends a request line and returns the next message. */
static json_t *client_ask(struct client *c, const char *line)
{
	client_send(c, line);
	return client_json(c);
}

static void assert_closed(struct client *c)
{
	char *line;

	/* Whatever was already on its way may still arrive before the end. */
	while ((line = client_line(c)))
		free(line);
}

/* {"return": want, "id"?} */
static void assert_return(json_t *msg, const char *want)
{
	json_t *expect = json_loads(want, JSON_DECODE_ANY, NULL);
	char *got = json_dumps(msg, JSON_COMPACT);

	assert_non_null(expect);
	if (!json_equal(json_object_get(msg, "return"), expect))
		fail_msg("want return %s, got %s", want, got);
	free(got);
	json_decref(expect);
}

static void assert_error(json_t *msg, const char *cls, const char *desc)
{
	json_t *err = json_object_get(msg, "error");
	char *got = json_dumps(msg, JSON_COMPACT);

	if (!err || json_object_get(msg, "return"))
		fail_msg("want an error, got %s", got);
	if (strcmp(json_string_value(json_object_get(err, "class")), cls))
		fail_msg("want class %s, got %s", cls, got);
	if (!strstr(json_string_value(json_object_get(err, "desc")), desc))
		fail_msg("want desc containing '%s', got %s", desc, got);
	free(got);
}

static void assert_id(json_t *msg, const char *want)
{
	json_t *expect = want ? json_loads(want, JSON_DECODE_ANY, NULL) : NULL;
	json_t *id = json_object_get(msg, "id");
	char *got = json_dumps(msg, JSON_COMPACT);

	if (!want && id)
		fail_msg("want no id, got %s", got);
	if (want && !json_equal(id, expect))
		fail_msg("want id %s, got %s", want, got);
	free(got);
	json_decref(expect);
}

/* ---- the protocol ---- */

static void test_greeting_and_capabilities(void **state)
{
	struct server *s = server_start();
	struct client *c = client_connect_raw(s->path);
	json_t *msg = client_json(c);
	int major = -1, minor = -1, micro = -1;
	const char *package = NULL;
	json_t *caps = NULL;

	assert_int_equal(json_unpack(msg, "{s:{s:{s:{s:i,s:i,s:i},s:s},s:o}}", "QMP",
				     "version", "qemu", "major", &major, "minor", &minor,
				     "micro", &micro, "package", &package,
				     "capabilities", &caps), 0);
	assert_int_equal(major, 0);
	assert_int_equal(minor, 1);
	assert_int_equal(micro, 0);
	assert_string_equal(package, "drover");
	assert_true(json_is_array(caps) && json_array_size(caps) == 0);
	json_decref(msg);

	msg = client_ask(c, "{\"execute\": \"qmp_capabilities\"}\n");
	assert_return(msg, "{}");
	assert_id(msg, NULL);
	json_decref(msg);
	/* not required, and harmless twice */
	msg = client_ask(c, "{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": []}, "
			    "\"id\": 7}\n");
	assert_return(msg, "{}");
	assert_id(msg, "7");
	json_decref(msg);
	/* no capability exists to be enabled */
	msg = client_ask(c, "{\"execute\": \"qmp_capabilities\", "
			    "\"arguments\": {\"enable\": [\"oob\"]}}\n");
	assert_error(msg, "GenericError", "'oob'");
	json_decref(msg);
	msg = client_ask(c, "{\"execute\": \"qmp_capabilities\", "
			    "\"arguments\": {\"enable\": \"oob\"}}\n");
	assert_error(msg, "GenericError", "'enable'");
	json_decref(msg);

	client_free(c);
	server_stop(s);
}

static void test_commands_and_ids(void **state)
{
	static const struct {
		const char *request;
		const char *ret;        /* NULL: an error of class cls with desc */
		const char *cls, *desc;
		const char *id;         /* expected "id", NULL: none */
	} cases[] = {
		{ "{\"execute\": \"add\", \"arguments\": {\"a\": 2, \"b\": 40}, \"id\": \"req-1\"}",
		  "{\"sum\": 42}", NULL, NULL, "\"req-1\"" },
		{ "{\"execute\": \"add\", \"arguments\": {\"a\": 1, \"b\": 1}, \"id\": 12345}",
		  "{\"sum\": 2}", NULL, NULL, "12345" },
		{ "{\"id\": {\"seq\": 3, \"tag\": [1, \"x\"]}, \"execute\": \"add\", "
		  "\"arguments\": {\"a\": -5, \"b\": 2}}",
		  "{\"sum\": -3}", NULL, NULL, "{\"seq\": 3, \"tag\": [1, \"x\"]}" },
		{ "{\"execute\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}, \"id\": 1.5}",
		  "{\"sum\": 3}", NULL, NULL, "1.5" },
		{ "{\"execute\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}, \"id\": null}",
		  "{\"sum\": 3}", NULL, NULL, "null" },
		{ "{\"execute\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}",
		  "{\"sum\": 3}", NULL, NULL, NULL },
		/* a handler's own error, with the id */
		{ "{\"execute\": \"add\", \"arguments\": {\"a\": \"1\"}, \"id\": \"bad\"}",
		  NULL, "GenericError", "'a' and 'b' must be integers", "\"bad\"" },
		{ "{\"execute\": \"nodev\", \"arguments\": {\"id\": \"disk9\"}, \"id\": 4}",
		  NULL, "DeviceNotFound", "Device 'disk9' not found", "4" },
		/* no arguments: the handler sees an empty object */
		{ "{\"execute\": \"echo\"}", "{}", NULL, NULL, NULL },
		{ "{\"execute\": \"echo\", \"arguments\": {\"k\": [1, {\"n\": null}]}}",
		  "{\"k\": [1, {\"n\": null}]}", NULL, NULL, NULL },
		{ "{\"execute\": \"empty\", \"id\": \"e\"}", "{}", NULL, NULL, "\"e\"" },
		/* what QMP calls wrong requests */
		{ "{\"execute\": \"no-such-thing\", \"id\": \"u\"}", NULL, "CommandNotFound",
		  "The command no-such-thing has not been found", "\"u\"" },
		{ "{\"arguments\": {}, \"id\": 9}", NULL, "GenericError",
		  "QMP input lacks member 'execute'", "9" },
		{ "{\"execute\": 42, \"id\": 10}", NULL, "GenericError",
		  "QMP input member 'execute' must be a string", "10" },
		{ "{\"execute\": \"add\", \"arguments\": [1, 2], \"id\": \"arr\"}", NULL,
		  "GenericError", "QMP input member 'arguments' must be an object", "\"arr\"" },
		{ "{\"execute\": \"add\", \"arguments\": null}", NULL,
		  "GenericError", "QMP input member 'arguments' must be an object", NULL },
		{ "{\"execute\": \"add\", \"argument\": {}, \"id\": 11}", NULL, "GenericError",
		  "QMP input member 'argument' is unexpected", "11" },
		{ "[\"execute\", \"add\"]", NULL, "GenericError", "QMP input must be a JSON object",
		  NULL },
		{ "42", NULL, "GenericError", "QMP input must be a JSON object", NULL },
		{ "{\"execute\": \"add\", \"execute\": \"echo\"}", NULL, "GenericError",
		  "JSON parse error", NULL },
		/* \r\n endings */
		{ "{\"execute\": \"add\", \"arguments\": {\"a\": 3, \"b\": 4}, \"id\": \"crlf\"}\r",
		  "{\"sum\": 7}", NULL, NULL, "\"crlf\"" },
	};
	struct server *s = server_start();
	struct client *c = client_connect(s->path);

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char line[512];
		json_t *msg;

		snprintf(line, sizeof(line), "%s\n", cases[i].request);
		msg = client_ask(c, line);
		if (cases[i].ret)
			assert_return(msg, cases[i].ret);
		else
			assert_error(msg, cases[i].cls, cases[i].desc);
		assert_id(msg, cases[i].id);
		json_decref(msg);
	}
	client_free(c);
	server_stop(s);
}

static void test_query_commands(void **state)
{
	static const char *const want[] = {
		"qmp_capabilities", "query-commands", "add", "echo", "count", "nodev", "empty",
		"emit",
	};
	struct server *s = server_start();
	struct client *c = client_connect(s->path);
	json_t *msg = client_ask(c, "{\"execute\": \"query-commands\", \"id\": 1}\n");
	json_t *list = json_object_get(msg, "return");

	assert_true(json_is_array(list));
	assert_int_equal(json_array_size(list), sizeof(want) / sizeof(want[0]));
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		size_t j;
		json_t *entry;
		bool found = false;

		json_array_foreach(list, j, entry) {
			const char *name = json_string_value(json_object_get(entry, "name"));

			if (name && !strcmp(name, want[i]))
				found = true;
		}
		if (!found)
			fail_msg("query-commands lacks %s", want[i]);
	}
	json_decref(msg);
	client_free(c);
	server_stop(s);
}

static void test_malformed_then_valid(void **state)
{
	struct server *s = server_start();
	struct client *c = client_connect(s->path);
	json_t *msg;

	msg = client_ask(c, "{\"execute\": \"add\", \"arguments\": {\"a\": 1,\n");
	assert_error(msg, "GenericError", "JSON parse error");
	assert_id(msg, NULL);
	json_decref(msg);
	msg = client_ask(c, "this is not json\n");
	assert_error(msg, "GenericError", "JSON parse error");
	json_decref(msg);
	msg = client_ask(c, "{\"execute\": \"add\", \"arguments\": {\"a\": \"\xff\"}}\n");
	assert_error(msg, "GenericError", "JSON parse error");
	json_decref(msg);
	/* the parser quotes what it choked on; that must not spoil the reply */
	msg = client_ask(c, "{\"execute\": \xc3\xa9\xff\xfe}\n");
	assert_error(msg, "GenericError", "JSON parse error");
	json_decref(msg);
	msg = client_ask(c, "{\"execute\": tru\xe2\x82}\n");
	assert_error(msg, "GenericError", "JSON parse error");
	json_decref(msg);
	/* a long name of two-byte characters, quoted back in a message of
	 * bounded length: the cut must not make the reply invalid UTF-8 */
	for (int odd = 0; odd < 2; odd++) {
		char req[2048];
		size_t n = (size_t)snprintf(req, sizeof(req), "{\"%s", odd ? "x" : "");

		for (int i = 0; i < 400; i++)
			n += (size_t)snprintf(req + n, sizeof(req) - n, "\xc3\xa9");
		snprintf(req + n, sizeof(req) - n, "\": 1, \"execute\": \"x\"}\n");
		msg = client_ask(c, req);
		assert_error(msg, "GenericError", "QMP input member '");
		json_decref(msg);
	}
	/* the connection is still up and in step */
	msg = client_ask(c, "{\"execute\": \"add\", \"arguments\": {\"a\": 20, \"b\": 22}, "
			    "\"id\": \"after\"}\n");
	assert_return(msg, "{\"sum\": 42}");
	assert_id(msg, "\"after\"");
	json_decref(msg);
	client_free(c);
	server_stop(s);
}

static void test_blank_lines_and_split_writes(void **state)
{
	struct server *s = server_start();
	struct client *c = client_connect(s->path);
	json_t *msg;

	/* blank lines get no reply: the next message answers the command */
	msg = client_ask(c, "\n   \n\r\n\t\r\n{\"execute\": \"count\", \"id\": \"first\"}\n");
	assert_id(msg, "\"first\"");
	assert_return(msg, "{\"calls\": 1}");
	json_decref(msg);

	/* a request split over several writes runs once, when complete */
	client_send(c, "{\"execute\": ");
	usleep(20000);
	client_send(c, "\"count\", \"id\"");
	usleep(20000);
	msg = client_ask(c, ": \"split\"}\n{\"execute\": \"count\", \"id\": \"second\"}\n");
	assert_id(msg, "\"split\"");
	assert_return(msg, "{\"calls\": 2}");
	json_decref(msg);
	msg = client_json(c);
	assert_id(msg, "\"second\"");
	assert_return(msg, "{\"calls\": 3}");
	json_decref(msg);
	client_free(c);
	server_stop(s);
}

/* ---- events and several clients ---- */

static void assert_event(json_t *msg, const char *name, const char *data)
{
	json_t *expect = json_loads(data, 0, NULL);
	json_int_t sec = -1, usec = -1;
	char *got = json_dumps(msg, JSON_COMPACT);
	time_t now = time(NULL);

	if (strcmp(json_string_value(json_object_get(msg, "event")) ?: "", name))
		fail_msg("want event %s, got %s", name, got);
	if (!json_equal(json_object_get(msg, "data"), expect))
		fail_msg("want data %s, got %s", data, got);
	if (json_unpack(msg, "{s:{s:I,s:I}}", "timestamp", "seconds", &sec,
			"microseconds", &usec))
		fail_msg("no timestamp in %s", got);
	/* the real-time clock, not the monotonic one */
	if (sec < now - 5 || sec > now + 1 || usec < 0 || usec > 999999)
		fail_msg("timestamp %lld.%06lld is not now (%lld)", (long long)sec,
			 (long long)usec, (long long)now);
	free(got);
	json_decref(expect);
}

static void test_events_reach_every_client(void **state)
{
	struct server *s = server_start();
	struct client *a = client_connect(s->path), *b = client_connect(s->path);
	json_t *msg;

	server_event(s, "SHUTDOWN", json_pack("{s:b,s:s}", "guest", 1, "reason",
					      "guest-shutdown"));
	server_event(s, "RESET", NULL);
	for (int i = 0; i < 2; i++) {
		struct client *c = i ? b : a;

		msg = client_json(c);
		assert_event(msg, "SHUTDOWN", "{\"guest\": true, \"reason\": \"guest-shutdown\"}");
		json_decref(msg);
		msg = client_json(c);
		assert_event(msg, "RESET", "{}");
		json_decref(msg);
	}

	/* a handler's event goes to everyone, its requester first, then the reply */
	msg = client_ask(a, "{\"execute\": \"emit\", \"arguments\": {\"n\": 1}, \"id\": 5}\n");
	assert_event(msg, "EMITTED", "{\"n\": 1}");
	json_decref(msg);
	msg = client_json(a);
	assert_id(msg, "5");
	assert_return(msg, "{}");
	json_decref(msg);
	msg = client_json(b);
	assert_event(msg, "EMITTED", "{\"n\": 1}");
	json_decref(msg);

	/* both keep working independently */
	msg = client_ask(b, "{\"execute\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}\n");
	assert_return(msg, "{\"sum\": 3}");
	json_decref(msg);
	client_free(a);
	client_free(b);
	server_stop(s);
}

struct count_arg {
	int calls;
};

static void do_read_calls(struct server *s, void *arg)
{
	((struct count_arg *)arg)->calls = s->calls;
}

static void test_disconnect_mid_line(void **state)
{
	struct server *s = server_start();
	struct client *a = client_connect(s->path), *b = client_connect(s->path);
	struct count_arg n;
	json_t *msg;

	/* a complete object, but its newline never comes */
	client_send(a, "{\"execute\": \"count\"}");
	client_free(a);
	a = client_connect(s->path);
	client_send(a, "{\"execute\": \"cou");
	client_free(a);

	msg = client_ask(b, "{\"execute\": \"add\", \"arguments\": {\"a\": 1, \"b\": 1}}\n");
	assert_return(msg, "{\"sum\": 2}");
	json_decref(msg);
	on_loop(s, do_read_calls, &n);
	assert_int_equal(n.calls, 0);
	client_free(b);
	server_stop(s);
}

static void test_request_then_hang_up(void **state)
{
	struct server *s = server_start();
	struct client *a = client_connect(s->path), *b;
	struct count_arg n;
	json_t *msg;

	/* The reply goes to a socket whose peer is gone (EPIPE); with SIGPIPE at
	 * its default this process would die unless the server suppresses it. */
	signal(SIGPIPE, SIG_DFL);
	client_send(a, "{\"execute\": \"count\"}\n");
	client_free(a);

	b = client_connect(s->path);
	msg = client_ask(b, "{\"execute\": \"count\"}\n");
	json_decref(msg);
	on_loop(s, do_read_calls, &n);
	assert_int_equal(n.calls, 2);

	/* half-closed: the request still gets its reply before the close */
	a = client_connect(s->path);
	client_send(a, "{\"execute\": \"count\", \"id\": \"half\"}\n");
	shutdown(a->fd, SHUT_WR);
	msg = client_json(a);
	assert_id(msg, "\"half\"");
	assert_return(msg, "{\"calls\": 3}");
	json_decref(msg);
	assert_closed(a);
	client_free(a);
	client_free(b);
	server_stop(s);
}

static void test_line_limit(void **state)
{
	size_t body = CONTROL_MAX_LINE;
	char *line = malloc(body + 2);
	struct server *s = server_start();
	struct client *a = client_connect(s->path), *b = client_connect(s->path);
	const char *head = "{\"execute\": \"echo\", \"arguments\": {\"s\": \"";
	const char *tail = "\"}, \"id\": \"big\"}";
	json_t *msg;
	ssize_t sent = 0;

	/* exactly CONTROL_MAX_LINE bytes before the newline: accepted */
	assert_non_null(line);
	memset(line, 'x', body);
	memcpy(line, head, strlen(head));
	memcpy(line + body - strlen(tail), tail, strlen(tail));
	line[body] = '\n';
	line[body + 1] = '\0';
	msg = client_ask(a, line);
	assert_id(msg, "\"big\"");
	assert_int_equal(json_string_length(json_object_get(json_object_get(msg, "return"), "s")),
			 body - strlen(head) - strlen(tail));
	json_decref(msg);

	/* one byte more: that client is closed, the other one is not */
	memset(line, 'y', body + 1);
	line[body + 1] = '\n';
	while (sent < (ssize_t)body + 2) {
		ssize_t n = send(a->fd, line + sent, body + 2 - (size_t)sent, MSG_NOSIGNAL);

		if (n < 0)
			break;  /* closed by the server while we were still writing */
		sent += n;
	}
	assert_closed(a);
	msg = client_ask(b, "{\"execute\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}\n");
	assert_return(msg, "{\"sum\": 3}");
	json_decref(msg);

	/* the same without any newline at all */
	client_free(a);
	a = client_connect(s->path);
	sent = 0;
	while (sent < (ssize_t)body + 1) {
		ssize_t n = send(a->fd, line + sent, body + 1 - (size_t)sent, MSG_NOSIGNAL);

		if (n < 0)
			break;
		sent += n;
	}
	assert_closed(a);
	msg = client_ask(b, "{\"execute\": \"add\", \"arguments\": {\"a\": 2, \"b\": 2}}\n");
	assert_return(msg, "{\"sum\": 4}");
	json_decref(msg);

	client_free(a);
	client_free(b);
	server_stop(s);
	free(line);
}

static void test_client_that_never_reads(void **state)
{
	enum { EVENTS = 100, PAYLOAD = 64 * 1024 };
	char *blob = malloc(PAYLOAD + 1);
	struct server *s = server_start();
	struct client *idle = client_connect(s->path), *live = client_connect(s->path), *late;
	size_t received = 0;
	json_t *msg;
	char *line;

	/* 6.4 MiB of events: more than any client may leave unread. Each
	 * on_loop has a deadline, so a server blocked on the idle client fails
	 * here, and the live client must get every event in time. */
	assert_non_null(blob);
	memset(blob, 'e', PAYLOAD);
	blob[PAYLOAD] = '\0';
	for (int i = 0; i < EVENTS; i++) {
		server_event(s, "BLOB", json_pack("{s:i,s:s}", "i", i, "blob", blob));
		msg = client_json(live);
		assert_int_equal(json_integer_value(json_object_get(json_object_get(msg, "data"),
								    "i")), i);
		json_decref(msg);
	}
	msg = client_ask(live, "{\"execute\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}\n");
	assert_return(msg, "{\"sum\": 3}");
	json_decref(msg);
	late = client_connect(s->path);

	/* The idle client was dropped: it finds the end of the stream after
	 * what had been queued, not all of it. */
	while ((line = client_line(idle))) {
		received += strlen(line) + 1;
		free(line);
	}
	assert_true(received < (size_t)EVENTS * PAYLOAD);
	assert_true(received > 0);

	client_free(idle);
	client_free(live);
	client_free(late);
	server_stop(s);
	free(blob);
}

static void test_too_many_clients(void **state)
{
	struct server *s = server_start();
	struct client *c[CONTROL_MAX_CLIENTS], *extra;
	json_t *msg;
	bool admitted = false;

	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
		c[i] = client_connect(s->path);
	extra = client_connect_raw(s->path);
	msg = client_json(extra);
	assert_error(msg, "GenericError", "too many clients");
	json_decref(msg);
	assert_closed(extra);
	client_free(extra);

	/* one leaves, and there is room again (once the server has noticed) */
	client_free(c[0]);
	for (int tries = 0; tries < 100 && !admitted; tries++) {
		extra = client_connect_raw(s->path);
		msg = client_json(extra);
		admitted = json_object_get(msg, "QMP") != NULL;
		json_decref(msg);
		if (!admitted) {
			client_free(extra);
			usleep(10000);
		}
	}
	assert_true(admitted);
	msg = client_ask(extra, "{\"execute\": \"count\"}\n");
	assert_return(msg, "{\"calls\": 1}");
	json_decref(msg);
	client_free(extra);
	for (int i = 1; i < CONTROL_MAX_CLIENTS; i++)
		client_free(c[i]);
	server_stop(s);
}

static void test_close_flushes_and_unlinks(void **state)
{
	struct server *s = server_start();
	struct client *c = client_connect(s->path);
	struct stat st;
	json_t *msg;

	assert_int_equal(lstat(s->path, &st), 0);
	/* an event queued, then the server shuts down at once */
	server_event(s, "SHUTDOWN", NULL);
	on_loop(s, do_close, NULL);
	msg = client_json(c);
	assert_event(msg, "SHUTDOWN", "{}");
	json_decref(msg);
	assert_closed(c);
	assert_int_equal(lstat(s->path, &st), -1);
	assert_int_equal(errno, ENOENT);
	client_free(c);
	server_stop(s);
}

/* ---- binding ---- */

static void bind_at(const char *path, bool keep_listening, int *fd_out)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	if (keep_listening) {
		assert_int_equal(listen(fd, 1), 0);
		*fd_out = fd;
	} else {
		close(fd);      /* the file stays: a stale socket */
	}
}

static struct server *server_unstarted(void)
{
	struct server *s = calloc(1, sizeof(*s));

	assert_non_null(s);
	make_dir(s);
	loop_setup(s);
	return s;
}

static void test_stale_socket_replaced(void **state)
{
	struct server *s = server_unstarted();
	struct client *c;
	json_t *msg;
	struct stat st;

	bind_at(s->path, false, NULL);
	assert_int_equal(lstat(s->path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(control_open(&s->ctl, s->loop, s->path, commands,
				      sizeof(commands) / sizeof(commands[0]), s), 0);
	assert_int_equal(pthread_create(&s->thread, NULL, loop_thread, s), 0);
	c = client_connect(s->path);
	msg = client_ask(c, "{\"execute\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}\n");
	assert_return(msg, "{\"sum\": 3}");
	json_decref(msg);
	client_free(c);
	server_stop(s);
}

static void test_refusals(void **state)
{
	struct server *s = server_unstarted();
	char buf[32] = "";
	char longpath[200];
	struct stat st;
	int fd, live = -1;

	/* a regular file is somebody's data */
	fd = open(s->path, O_CREAT | O_WRONLY | O_EXCL, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "keep me", 7), 7);
	close(fd);
	assert_int_equal(control_open(&s->ctl, s->loop, s->path, commands, 1, s), -EEXIST);
	fd = open(s->path, O_RDONLY);
	assert_int_equal(read(fd, buf, sizeof(buf)), 7);
	assert_string_equal(buf, "keep me");
	close(fd);
	unlink(s->path);

	/* so is a directory */
	assert_int_equal(mkdir(s->path, 0700), 0);
	assert_int_equal(control_open(&s->ctl, s->loop, s->path, commands, 1, s), -EEXIST);
	rmdir(s->path);

	/* a socket somebody listens on belongs to a running VMM */
	bind_at(s->path, true, &live);
	assert_int_equal(control_open(&s->ctl, s->loop, s->path, commands, 1, s), -EADDRINUSE);
	assert_int_equal(lstat(s->path, &st), 0);
	close(live);
	unlink(s->path);

	/* longer than sun_path */
	memset(longpath, 'p', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	assert_int_equal(control_open(&s->ctl, s->loop, longpath, commands, 1, s),
			 -ENAMETOOLONG);

	/* commands that could never be reached, or reached ambiguously */
	{
		static const struct control_command dup[] = {
			{ "add", cmd_add }, { "add", cmd_echo },
		};
		static const struct control_command builtin[] = {
			{ "query-commands", cmd_echo },
		};

		assert_int_equal(control_open(&s->ctl, s->loop, s->path, dup, 2, s), -EINVAL);
		assert_int_equal(control_open(&s->ctl, s->loop, s->path, builtin, 1, s), -EINVAL);
		assert_int_equal(lstat(s->path, &st), -1);
	}

	evloop_free(s->loop);
	close(s->pipe[0]);
	close(s->pipe[1]);
	sem_destroy(&s->done);
	rmdir(s->dir);
	free(s);
}

static void test_socket_mode(void **state)
{
	struct server *s = server_unstarted();
	mode_t old = umask(0);
	struct stat st;

	/* even with a permissive umask, only the owner may connect */
	assert_int_equal(control_open(&s->ctl, s->loop, s->path, commands, 1, s), 0);
	umask(old);
	assert_int_equal(lstat(s->path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(pthread_create(&s->thread, NULL, loop_thread, s), 0);
	server_stop(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_greeting_and_capabilities),
		cmocka_unit_test(test_commands_and_ids),
		cmocka_unit_test(test_query_commands),
		cmocka_unit_test(test_malformed_then_valid),
		cmocka_unit_test(test_blank_lines_and_split_writes),
		cmocka_unit_test(test_events_reach_every_client),
		cmocka_unit_test(test_disconnect_mid_line),
		cmocka_unit_test(test_request_then_hang_up),
		cmocka_unit_test(test_line_limit),
		cmocka_unit_test(test_client_that_never_reads),
		cmocka_unit_test(test_too_many_clients),
		cmocka_unit_test(test_close_flushes_and_unlinks),
		cmocka_unit_test(test_stale_socket_replaced),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_socket_mode),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
