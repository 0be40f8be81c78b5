/* The control socket server (see control.h for the wire shape).
 *
 * Everything runs on the main thread's event loop and nothing in here ever
 * blocks on a client: sockets are non-blocking, every client has its own
 * input buffer (one line at most CONTROL_MAX_LINE bytes) and output queue;
 * a client whose queue grows past CLIENT_MAX_QUEUED is disconnected.
 *
 * Invariant: a client is never freed while code further up the stack may
 * still hold it. Closing only marks it dead (its fd is closed and its watch
 * removed at once); dead clients are freed by reap(), which runs only when
 * ctl->depth is back at zero, i.e. when no callback, handler or control_event
 * of this server is in progress. A handler may therefore call control_event,
 * which may kill any client, including the one whose request is running. */
#include "control.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define CLIENT_MAX_QUEUED   (4u << 20)
#define CLIENT_READ_CHUNK   (64u << 10)
#define CLIENT_READS_PER_WAKEUP 16      /* then let the other fds have a turn */

struct client {
	struct control *ctl;
	int fd;
	bool dead;
	bool eof;               /* peer shut down its side: flush, then close */
	char *in;
	size_t in_len, in_cap;
	size_t in_scanned;      /* bytes of in[] known to hold no newline */
	char *out;
	size_t out_head, out_len, out_cap;  /* queued bytes are out[out_head, out_len) */
	bool want_out;          /* EPOLLOUT is being watched */
	struct client *next;
};

struct control {
	struct evloop *loop;
	int listen_fd;
	char *path;
	dev_t sock_dev;         /* what we bound, so close never unlinks a stranger's */
	ino_t sock_ino;
	const struct control_command *cmds;
	size_t ncmds;
	void *ctx;
	struct client *clients;
	unsigned nclients;
	unsigned depth;         /* nesting of entry points; reap only at zero */
	bool accept_paused;     /* out of file descriptors */
};

static const char *const error_class[] = {
	[CONTROL_OK] = "GenericError",
	[CONTROL_GENERIC_ERROR] = "GenericError",
	[CONTROL_COMMAND_NOT_FOUND] = "CommandNotFound",
	[CONTROL_DEVICE_NOT_FOUND] = "DeviceNotFound",
};

static void client_kill(struct client *c, const char *why)
{
	struct control *ctl = c->ctl;

	if (c->dead)
		return;
	log_debug("control: client %d closed: %s", c->fd, why);
	evloop_del(ctl->loop, c->fd);
	close(c->fd);
	c->fd = -1;
	c->dead = true;
	ctl->nclients--;
	if (ctl->accept_paused) {
		ctl->accept_paused = false;
		evloop_mod(ctl->loop, ctl->listen_fd, EPOLLIN);
	}
}

static void client_free(struct client *c)
{
	free(c->in);
	free(c->out);
	free(c);
}

static void reap(struct control *ctl)
{
	struct client **pp = &ctl->clients;

	if (ctl->depth)
		return;
	while (*pp) {
		struct client *c = *pp;

		if (c->dead) {
			*pp = c->next;
			client_free(c);
		} else {
			pp = &c->next;
		}
	}
}

static void enter(struct control *ctl)
{
	ctl->depth++;
}

static void leave(struct control *ctl)
{
	ctl->depth--;
	reap(ctl);
}

static void client_watch(struct client *c)
{
	uint32_t events = (c->eof ? 0 : EPOLLIN) | (c->want_out ? EPOLLOUT : 0);

	if (evloop_mod(c->ctl->loop, c->fd, events) < 0)
		client_kill(c, "epoll_ctl failed");
}

/* Sends what is queued without blocking; 0, or -errno when the client is
 * gone (it is killed then). */
static int client_flush(struct client *c)
{
	bool want;

	while (c->out_head < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_head, c->out_len - c->out_head,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			client_kill(c, strerror(errno));
			return -EPIPE;
		}
		c->out_head += (size_t)n;
	}
	if (c->out_head == c->out_len)
		c->out_head = c->out_len = 0;
	if (c->eof && !c->out_len) {
		client_kill(c, "end of input and output");
		return -EPIPE;
	}
	want = c->out_len != 0;
	if (want != c->want_out) {
		c->want_out = want;
		client_watch(c);
	}
	return 0;
}

static int client_queue(struct client *c, const char *data, size_t len)
{
	size_t queued = c->out_len - c->out_head;

	if (c->dead)
		return -EPIPE;
	if (queued + len > CLIENT_MAX_QUEUED) {
		client_kill(c, "output queue full (client is not reading)");
		return -ENOBUFS;
	}
	if (c->out_head && c->out_len + len > c->out_cap) {
		memmove(c->out, c->out + c->out_head, queued);
		c->out_head = 0;
		c->out_len = queued;
	}
	if (c->out_len + len > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		char *p;

		while (cap < c->out_len + len)
			cap *= 2;
		p = realloc(c->out, cap);
		if (!p) {
			client_kill(c, "out of memory");
			return -ENOMEM;
		}
		c->out = p;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, data, len);
	c->out_len += len;
	return client_flush(c);
}

/* Serialises msg as one line and queues it; steals msg. */
static int client_send_json(struct client *c, json_t *msg)
{
	char *text;
	size_t len;
	int ret;

	if (!msg)
		return -ENOMEM;
	/* Compact output holds no raw newline: strings escape theirs. */
	text = json_dumps(msg, JSON_COMPACT);
	json_decref(msg);
	if (!text)
		return -ENOMEM;
	len = strlen(text);
	text[len] = '\n';       /* overwrites the NUL; len + 1 bytes go out */
	ret = client_queue(c, text, len + 1);
	free(text);
	return ret;
}

/* desc may quote the client's bytes (a parser's "near '...'") or be cut in the
 * middle of a UTF-8 sequence by snprintf; JSON strings must be valid UTF-8. */
static json_t *desc_string(const char *desc)
{
	json_t *s = json_string(desc);
	char *copy;

	if (s)
		return s;
	copy = strdup(desc);
	if (!copy)
		return NULL;
	for (char *p = copy; *p; p++) {
		if ((unsigned char)*p >= 0x80)
			*p = '?';
	}
	s = json_string(copy);
	free(copy);
	return s;
}

static void reply_error(struct client *c, json_t *id, enum control_error cls, const char *desc)
{
	json_t *msg = json_pack("{s:{s:s,s:o}}", "error", "class", error_class[cls],
				"desc", desc_string(desc));

	if (msg && id)
		json_object_set(msg, "id", id);
	client_send_json(c, msg);
}

static void reply_return(struct client *c, json_t *id, json_t *ret)
{
	json_t *msg = json_object();

	if (msg) {
		json_object_set_new(msg, "return", ret ? ret : json_object());
		if (id)
			json_object_set(msg, "id", id);
	} else {
		json_decref(ret);
	}
	client_send_json(c, msg);
}

/* ---- commands ---- */

static const char *const builtin_commands[] = { "qmp_capabilities", "query-commands" };

static bool is_builtin(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(builtin_commands); i++) {
		if (!strcmp(builtin_commands[i], name))
			return true;
	}
	return false;
}

static json_t *list_commands(struct control *ctl)
{
	json_t *list = json_array();

	for (size_t i = 0; list && i < ARRAY_SIZE(builtin_commands); i++)
		json_array_append_new(list, json_pack("{s:s}", "name", builtin_commands[i]));
	for (size_t i = 0; list && i < ctl->ncmds; i++)
		json_array_append_new(list, json_pack("{s:s}", "name", ctl->cmds[i].name));
	return list;
}

static void run_builtin(struct client *c, const char *name, json_t *args, json_t *id)
{
	json_t *enable = json_object_get(args, "enable");

	if (!strcmp(name, "query-commands")) {
		reply_return(c, id, list_commands(c->ctl));
		return;
	}
	/* qmp_capabilities: there are no optional capabilities to turn on, and
	 * saying yes to one ("oob") would be a lie. */
	if (enable && !json_is_array(enable)) {
		reply_error(c, id, CONTROL_GENERIC_ERROR,
			    "Parameter 'enable' expects an array of capabilities");
		return;
	}
	if (enable && json_array_size(enable)) {
		json_t *first = json_array_get(enable, 0);
		char desc[160];

		snprintf(desc, sizeof(desc), "Capability '%s' not available",
			 json_is_string(first) ? json_string_value(first) : "?");
		reply_error(c, id, CONTROL_GENERIC_ERROR, desc);
		return;
	}
	reply_return(c, id, NULL);
}

static void run_command(struct client *c, const char *name, json_t *args, json_t *id)
{
	struct control *ctl = c->ctl;
	const struct control_command *cmd = NULL;
	enum control_error err;
	json_t *ret = NULL;
	char desc[512];

	if (is_builtin(name)) {
		run_builtin(c, name, args, id);
		return;
	}
	for (size_t i = 0; i < ctl->ncmds && !cmd; i++) {
		if (!strcmp(ctl->cmds[i].name, name))
			cmd = &ctl->cmds[i];
	}
	if (!cmd) {
		snprintf(desc, sizeof(desc), "The command %s has not been found", name);
		reply_error(c, id, CONTROL_COMMAND_NOT_FOUND, desc);
		return;
	}
	desc[0] = '\0';
	err = cmd->fn(ctl->ctx, args, &ret, desc, sizeof(desc));
	if (err == CONTROL_OK) {
		reply_return(c, id, ret);
		return;
	}
	json_decref(ret);
	desc[sizeof(desc) - 1] = '\0';
	if ((unsigned)err >= ARRAY_SIZE(error_class))
		err = CONTROL_GENERIC_ERROR;
	reply_error(c, id, err, desc[0] ? desc : "command failed");
}

/* Checks the request's shape the way QMP does and runs it. */
static void handle_request(struct client *c, json_t *req)
{
	json_t *id, *exec, *args, *v;
	json_t *empty = NULL;
	const char *key;
	char desc[256];

	if (!json_is_object(req)) {
		reply_error(c, NULL, CONTROL_GENERIC_ERROR, "QMP input must be a JSON object");
		return;
	}
	id = json_object_get(req, "id");
	json_object_foreach(req, key, v) {
		if (strcmp(key, "execute") && strcmp(key, "arguments") && strcmp(key, "id")) {
			snprintf(desc, sizeof(desc), "QMP input member '%s' is unexpected", key);
			reply_error(c, id, CONTROL_GENERIC_ERROR, desc);
			return;
		}
	}
	exec = json_object_get(req, "execute");
	if (!exec) {
		reply_error(c, id, CONTROL_GENERIC_ERROR, "QMP input lacks member 'execute'");
		return;
	}
	if (!json_is_string(exec)) {
		reply_error(c, id, CONTROL_GENERIC_ERROR,
			    "QMP input member 'execute' must be a string");
		return;
	}
	args = json_object_get(req, "arguments");
	if (args && !json_is_object(args)) {
		reply_error(c, id, CONTROL_GENERIC_ERROR,
			    "QMP input member 'arguments' must be an object");
		return;
	}
	if (!args) {
		args = empty = json_object();
		if (!args) {
			reply_error(c, id, CONTROL_GENERIC_ERROR, "out of memory");
			return;
		}
	}
	run_command(c, json_string_value(exec), args, id);
	json_decref(empty);
}

static void handle_line(struct client *c, char *line, size_t len)
{
	json_error_t jerr;
	json_t *req;
	char desc[300];
	size_t i;

	if (len && line[len - 1] == '\r')
		len--;
	for (i = 0; i < len; i++) {
		if (line[i] != ' ' && line[i] != '\t' && line[i] != '\r')
			break;
	}
	if (i == len)
		return;
	req = json_loadb(line, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
	if (!req) {
		snprintf(desc, sizeof(desc), "JSON parse error at column %d: %s",
			 jerr.column, jerr.text);
		reply_error(c, NULL, CONTROL_GENERIC_ERROR, desc);
		return;
	}
	handle_request(c, req);
	json_decref(req);
}

/* Runs every complete line in the input buffer and keeps the rest. */
static void client_process(struct client *c)
{
	size_t start = 0;

	while (!c->dead) {
		char *nl = memchr(c->in + c->in_scanned, '\n', c->in_len - c->in_scanned);
		size_t end;

		if (!nl) {
			c->in_scanned = c->in_len;
			break;
		}
		end = (size_t)(nl - c->in);
		c->in_scanned = end + 1;
		if (end - start > CONTROL_MAX_LINE) {
			client_kill(c, "line too long");
			return;
		}
		handle_line(c, c->in + start, end - start);
		start = end + 1;
	}
	if (c->dead)
		return;
	memmove(c->in, c->in + start, c->in_len - start);
	c->in_len -= start;
	c->in_scanned -= start;
	if (c->in_len > CONTROL_MAX_LINE) {
		reply_error(c, NULL, CONTROL_GENERIC_ERROR,
			    "line longer than 1 MiB; closing the connection");
		client_kill(c, "line too long");
	}
}

static int client_read(struct client *c)
{
	for (unsigned i = 0; i < CLIENT_READS_PER_WAKEUP; i++) {
		ssize_t n;

		/* Room for a whole maximal line, its newline, and no more. */
		if (c->in_cap - c->in_len < CLIENT_READ_CHUNK &&
		    c->in_cap < CONTROL_MAX_LINE + 1 + CLIENT_READ_CHUNK) {
			size_t cap = c->in_cap ? c->in_cap * 2 : CLIENT_READ_CHUNK;
			char *p;

			if (cap < c->in_len + CLIENT_READ_CHUNK)
				cap = c->in_len + CLIENT_READ_CHUNK;
			p = realloc(c->in, cap);
			if (!p)
				return -ENOMEM;
			c->in = p;
			c->in_cap = cap;
		}
		n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -errno;
		}
		if (n == 0) {
			/* A request counts once its newline has arrived; a
			 * partial last line is dropped. */
			c->eof = true;
			c->in_len = c->in_scanned = 0;
			return 0;
		}
		c->in_len += (size_t)n;
		client_process(c);
		if (c->dead)
			return 0;
	}
	return 0;
}

static void client_cb(void *opaque, int fd, uint32_t events)
{
	struct client *c = opaque;
	struct control *ctl = c->ctl;
	int ret;

	enter(ctl);
	if (events & EPOLLIN) {
		ret = client_read(c);
		if (ret < 0)
			client_kill(c, strerror(-ret));
	}
	if (!c->dead && (events & EPOLLOUT))
		client_flush(c);
	if (!c->dead && c->eof) {
		client_watch(c);
		client_flush(c);      /* closes at once when nothing is queued */
	} else if (!c->dead && (events & (EPOLLERR | EPOLLHUP)) && !(events & EPOLLIN)) {
		client_kill(c, "hang-up");
	}
	leave(ctl);
}

static json_t *greeting(void)
{
	return json_pack("{s:{s:{s:{s:i,s:i,s:i},s:s},s:[]}}", "QMP", "version", "qemu",
			 "major", 0, "minor", 1, "micro", 0, "package", "drover",
			 "capabilities");
}

static void refuse(int fd, const char *desc)
{
	json_t *msg = json_pack("{s:{s:s,s:s}}", "error", "class", "GenericError", "desc", desc);
	char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;

	if (text) {
		size_t len = strlen(text);

		text[len] = '\n';
		if (send(fd, text, len + 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
			/* it is going away anyway */
		}
	}
	free(text);
	json_decref(msg);
	close(fd);
}

static void client_add(struct control *ctl, int fd)
{
	struct client *c;
	char desc[96];

	if (ctl->nclients >= CONTROL_MAX_CLIENTS) {
		snprintf(desc, sizeof(desc), "too many clients (%d connected)",
			 CONTROL_MAX_CLIENTS);
		refuse(fd, desc);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		refuse(fd, "out of memory");
		return;
	}
	c->ctl = ctl;
	c->fd = fd;
	if (evloop_add(ctl->loop, fd, EPOLLIN, client_cb, c) < 0) {
		free(c);
		refuse(fd, "cannot watch the connection");
		return;
	}
	c->next = ctl->clients;
	ctl->clients = c;
	ctl->nclients++;
	client_send_json(c, greeting());
}

static void listen_cb(void *opaque, int fd, uint32_t events)
{
	struct control *ctl = opaque;

	enter(ctl);
	for (;;) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (cfd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE) {
				/* Level-triggered epoll would spin; wait until a
				 * client closes and frees a descriptor. */
				log_warn("control: cannot accept a client: %s", strerror(errno));
				ctl->accept_paused = true;
				evloop_mod(ctl->loop, fd, 0);
			}
			break;
		}
		client_add(ctl, cfd);
	}
	leave(ctl);
}

/* ---- opening and closing ---- */

static int check_commands(const struct control_command *cmds, size_t ncmds)
{
	for (size_t i = 0; i < ncmds; i++) {
		if (!cmds[i].name || !cmds[i].fn || is_builtin(cmds[i].name)) {
			log_error("control: command %zu ('%s') has no name, no handler or a "
				  "built-in's name", i, cmds[i].name ? cmds[i].name : "");
			return -EINVAL;
		}
		for (size_t j = 0; j < i; j++) {
			if (!strcmp(cmds[i].name, cmds[j].name)) {
				log_error("control: command '%s' registered twice", cmds[i].name);
				return -EINVAL;
			}
		}
	}
	return 0;
}

/* A socket file nobody listens on is left over from a VMM that died; one
 * somebody does listen on belongs to a running VMM and stays. */
static int clear_path(const char *path, const struct sockaddr_un *addr)
{
	struct stat st;
	int fd, ret;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	ret = connect(fd, (const struct sockaddr *)addr, sizeof(*addr));
	close(fd);
	if (ret == 0)
		return -EADDRINUSE;
	if (errno != ECONNREFUSED)
		return -errno;
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

static int bind_listen(const char *path, dev_t *dev, ino_t *ino)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, ret;

	if (strlen(path) >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	if (!*path)
		return -EINVAL;
	strcpy(addr.sun_path, path);
	ret = clear_path(path, &addr);
	if (ret < 0)
		return ret;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		ret = -errno;
		goto err_close;
	}
	/* bind() honours the umask, and changing the umask is not safe with
	 * threads around; nobody can connect before listen(), so tightening
	 * the mode in between leaves no window. */
	if (chmod(path, 0600) < 0 || lstat(path, &st) < 0) {
		ret = -errno;
		goto err_unlink;
	}
	if (listen(fd, 16) < 0) {
		ret = -errno;
		goto err_unlink;
	}
	*dev = st.st_dev;
	*ino = st.st_ino;
	return fd;

err_unlink:
	unlink(path);
err_close:
	close(fd);
	return ret;
}

int control_open(struct control **out, struct evloop *loop, const char *path,
		 const struct control_command *cmds, size_t ncmds, void *ctx)
{
	struct control *ctl;
	int ret;

	ret = check_commands(cmds, ncmds);
	if (ret < 0)
		return ret;
	ctl = calloc(1, sizeof(*ctl));
	if (!ctl)
		return -ENOMEM;
	ctl->loop = loop;
	ctl->cmds = cmds;
	ctl->ncmds = ncmds;
	ctl->ctx = ctx;
	ctl->path = strdup(path);
	if (!ctl->path) {
		ret = -ENOMEM;
		goto err_free;
	}
	ctl->listen_fd = bind_listen(path, &ctl->sock_dev, &ctl->sock_ino);
	if (ctl->listen_fd < 0) {
		ret = ctl->listen_fd;
		goto err_free;
	}
	ret = evloop_add(loop, ctl->listen_fd, EPOLLIN, listen_cb, ctl);
	if (ret < 0)
		goto err_close;
	*out = ctl;
	return 0;

err_close:
	close(ctl->listen_fd);
	unlink(path);
err_free:
	free(ctl->path);
	free(ctl);
	return ret;
}

void control_event(struct control *ctl, const char *name, json_t *data)
{
	struct timespec now;
	json_t *msg;
	char *text;
	size_t len;

	clock_gettime(CLOCK_REALTIME, &now);
	msg = json_pack("{s:s,s:o,s:{s:I,s:I}}", "event", name,
			"data", data ? data : json_object(),
			"timestamp", "seconds", (json_int_t)now.tv_sec,
			"microseconds", (json_int_t)(now.tv_nsec / 1000));
	if (!msg) {
		log_warn("control: event %s dropped: out of memory", name);
		return;
	}
	text = json_dumps(msg, JSON_COMPACT);
	json_decref(msg);
	if (!text) {
		log_warn("control: event %s dropped: out of memory", name);
		return;
	}
	len = strlen(text);
	text[len] = '\n';
	enter(ctl);
	for (struct client *c = ctl->clients; c; c = c->next) {
		if (!c->dead && !c->eof)
			client_queue(c, text, len + 1);
	}
	leave(ctl);
	free(text);
}

void control_close(struct control *ctl)
{
	struct stat st;

	if (!ctl)
		return;
	enter(ctl);
	for (struct client *c = ctl->clients; c; c = c->next) {
		if (!c->dead)
			client_flush(c);
		client_kill(c, "server closing");
	}
	evloop_del(ctl->loop, ctl->listen_fd);
	close(ctl->listen_fd);
	/* Only our own socket: a newer VMM may have replaced it meanwhile. */
	if (lstat(ctl->path, &st) == 0 && st.st_dev == ctl->sock_dev &&
	    st.st_ino == ctl->sock_ino)
		unlink(ctl->path);
	/* Not from inside one of this server's handlers: nothing may hold a
	 * client any more, dead or not. */
	ctl->depth = 0;
	reap(ctl);
	free(ctl->path);
	free(ctl);
}
