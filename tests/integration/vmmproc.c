#include "vmmproc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

int vmmproc_start(struct vmmproc *p, const char *vmm, const char *const *args, bool with_control)
{
	return vmmproc_start_setup(p, vmm, args, with_control, NULL, NULL);
}

static void drain(int *fd, char **buf, size_t *len)
{
	char tmp[4096];

	for (;;) {
		ssize_t n = *fd >= 0 ? read(*fd, tmp, sizeof(tmp)) : -1;

		if (n > 0) {
			*buf = realloc(*buf, *len + (size_t)n + 1);
			memcpy(*buf + *len, tmp, (size_t)n);
			*len += (size_t)n;
			(*buf)[*len] = 0;
			continue;
		}
		if (n == 0) {
			close(*fd);
			*fd = -1;
		}
		return;
	}
}

void vmmproc_pump(struct vmmproc *p, int ms)
{
	struct pollfd pf[2] = { { p->out_fd, POLLIN, 0 }, { p->err_fd, POLLIN, 0 } };

	if (p->out_fd < 0 && p->err_fd < 0) {
		if (ms > 0)
			usleep((useconds_t)ms * 1000);
		return;
	}
	poll(pf, 2, ms);
	drain(&p->out_fd, &p->out, &p->out_len);
	drain(&p->err_fd, &p->err, &p->err_len);
}

int vmmproc_count(const char *h, const char *needle)
{
	int c = 0;

	for (const char *s = h; (s = strstr(s, needle)); s += strlen(needle))
		c++;
	return c;
}

int vmmproc_count_lines(const char *text, const char *prefix)
{
	size_t plen = strlen(prefix);
	int c = 0;

	for (const char *s = text; *s;) {
		const char *nl = strchr(s, '\n');

		if (!nl)
			break;
		if ((size_t)(nl - s) >= plen && !strncmp(s, prefix, plen))
			c++;
		s = nl + 1;
	}
	return c;
}

bool vmmproc_wait_lines(struct vmmproc *p, const char *prefix, int count, int timeout_ms)
{
	long end = now_ms() + timeout_ms;

	while (vmmproc_count_lines(p->out, prefix) < count) {
		if (now_ms() > end)
			return false;
		vmmproc_pump(p, 20);
	}
	return true;
}

bool vmmproc_wait_output(struct vmmproc *p, const char *needle, int count, int timeout_ms)
{
	long end = now_ms() + timeout_ms;

	while (vmmproc_count(p->out, needle) < count) {
		if (now_ms() > end)
			return false;
		vmmproc_pump(p, 20);
	}
	return true;
}

int vmmproc_wait_exit(struct vmmproc *p, int timeout_ms)
{
	long end = now_ms() + timeout_ms;
	int st;

	if (p->status >= 0)
		return p->status;
	while (now_ms() <= end) {
		pid_t r = waitpid(p->pid, &st, WNOHANG);

		if (r == p->pid) {
			vmmproc_pump(p, 0);
			p->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
			return p->status;
		}
		vmmproc_pump(p, 10);
	}
	return -1;
}

void vmmproc_cleanup(struct vmmproc *p)
{
	if (p->pid > 0 && p->status < 0) {
		kill(p->pid, SIGKILL);
		waitpid(p->pid, NULL, 0);
	}
	if (p->out_fd >= 0)
		close(p->out_fd);
	if (p->err_fd >= 0)
		close(p->err_fd);
	if (p->sock[0])
		unlink(p->sock);
	free(p->out);
	free(p->err);
	p->out = p->err = NULL;
}

int qmp_connect(struct qmp *q, const char *path, int timeout_ms, json_t **greeting)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	long end = now_ms() + timeout_ms;
	json_t *g;

	memset(q, 0, sizeof(*q));
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	for (;;) {
		q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (q->fd < 0)
			return -errno;
		if (connect(q->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		close(q->fd);
		q->fd = -1;
		if (now_ms() > end)
			return -ETIMEDOUT;
		usleep(5000);
	}
	g = qmp_recv(q, timeout_ms);
	if (!g)
		return -EPROTO;
	if (greeting)
		*greeting = g;
	else
		json_decref(g);
	return 0;
}

void qmp_close(struct qmp *q)
{
	if (q->fd >= 0)
		close(q->fd);
	q->fd = -1;
}

int qmp_send_raw(struct qmp *q, const char *line)
{
	size_t len = strlen(line);

	if (send(q->fd, line, len, MSG_NOSIGNAL) != (ssize_t)len)
		return -EIO;
	return 0;
}

json_t *qmp_recv(struct qmp *q, int timeout_ms)
{
	long end = now_ms() + timeout_ms;

	for (;;) {
		char *nl = memchr(q->buf, '\n', q->len);

		if (nl) {
			json_error_t e;
			size_t linelen = (size_t)(nl - q->buf);
			json_t *j = json_loadb(q->buf, linelen, 0, &e);

			memmove(q->buf, nl + 1, q->len - linelen - 1);
			q->len -= linelen + 1;
			if (j)
				return j;
			continue;
		}
		long left = end - now_ms();
		struct pollfd pf = { q->fd, POLLIN, 0 };

		if (left <= 0 || q->len == sizeof(q->buf))
			return NULL;
		if (poll(&pf, 1, (int)left) <= 0)
			return NULL;
		ssize_t n = read(q->fd, q->buf + q->len, sizeof(q->buf) - q->len);

		if (n <= 0)
			return NULL;
		q->len += (size_t)n;
	}
}

json_t *qmp_execute(struct qmp *q, const char *cmd, json_t *args, json_t *events)
{
	json_t *req = json_pack("{s:s}", "execute", cmd);
	char *line;

	if (args)
		json_object_set(req, "arguments", args);
	line = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (!line)
		return NULL;
	if (qmp_send_raw(q, line) < 0 || qmp_send_raw(q, "\n") < 0) {
		free(line);
		return NULL;
	}
	free(line);
	for (;;) {
		json_t *r = qmp_recv(q, 10000);

		if (!r)
			return NULL;
		if (json_object_get(r, "event")) {
			if (events)
				json_array_append_new(events, r);
			else
				json_decref(r);
			continue;
		}
		return r;
	}
}

json_t *qmp_wait_event(struct qmp *q, const char *name, json_t *events, int timeout_ms)
{
	long end = now_ms() + timeout_ms;
	size_t i;
	json_t *e;

	if (events) {
		json_array_foreach(events, i, e) {
			if (!strcmp(json_string_value(json_object_get(e, "event")), name)) {
				json_incref(e);
				json_array_remove(events, i);
				return e;
			}
		}
	}
	for (;;) {
		long left = end - now_ms();

		if (left <= 0)
			return NULL;
		e = qmp_recv(q, (int)left);
		if (!e)
			return NULL;
		if (json_is_string(json_object_get(e, "event")) &&
		    !strcmp(json_string_value(json_object_get(e, "event")), name))
			return e;
		if (events)
			json_array_append_new(events, e);
		else
			json_decref(e);
	}
}

int vmmproc_start_setup(struct vmmproc *p, const char *vmm, const char *const *args,
			bool with_control, vmmproc_setup_fn setup, void *arg)
{
	static int seq;
	const char *argv[64];
	int out[2], err[2], n = 0;

	memset(p, 0, sizeof(*p));
	p->status = -1;
	p->out_fd = p->err_fd = -1;
	if (with_control)
		snprintf(p->sock, sizeof(p->sock), "/tmp/drover-test-%d-%d.sock", getpid(), seq++);
	argv[n++] = vmm;
	for (int i = 0; args[i] && n < 60; i++)
		argv[n++] = args[i];
	if (with_control) {
		argv[n++] = "--control";
		argv[n++] = p->sock;
	}
	argv[n] = NULL;
	if (pipe2(out, O_CLOEXEC) < 0)
		return -errno;
	if (pipe2(err, O_CLOEXEC) < 0) {
		close(out[0]);
		close(out[1]);
		return -errno;
	}
	p->pid = fork();
	if (p->pid < 0) {
		int ret = -errno;

		close(out[0]);
		close(out[1]);
		close(err[0]);
		close(err[1]);
		return ret;
	}
	if (p->pid == 0) {
		int devnull = open("/dev/null", O_RDONLY), ret;

		dup2(devnull, 0);
		dup2(out[1], 1);
		dup2(err[1], 2);
		ret = setup ? setup(arg) : 0;
		if (ret < 0) {
			dprintf(2, "vmmproc: setting up the child: %s\n", strerror(-ret));
			_exit(VMMPROC_SETUP_FAILED);
		}
		/* After the setup: a change of credentials clears it. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execv(vmm, (char *const *)argv);
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	p->out_fd = out[0];
	p->err_fd = err[0];
	fcntl(p->out_fd, F_SETFL, O_NONBLOCK);
	fcntl(p->err_fd, F_SETFL, O_NONBLOCK);
	p->out = calloc(1, 1);
	p->err = calloc(1, 1);
	return 0;
}
