#include "agenttest.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "evloop.h"

uint64_t test_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- the fake controller ---- */

static Drover__Envelope *copy_env(const Drover__Envelope *env)
{
	size_t len = drover__envelope__get_packed_size(env);
	uint8_t *buf = malloc(len ? len : 1);
	Drover__Envelope *copy;

	if (!buf)
		return NULL;
	drover__envelope__pack(env, buf);
	copy = drover__envelope__unpack(NULL, len, buf);
	free(buf);
	return copy;
}

static void on_message(struct conn *c, const Drover__Envelope *env, void *opaque)
{
	struct fakectl *f = opaque;

	if (f->ninbox < FAKECTL_INBOX_MAX)
		f->inbox[f->ninbox++] = copy_env(env);
	if (env->body_case != DROVER__ENVELOPE__BODY_HELLO)
		return;
	if (f->mode == FAKECTL_REFUSE) {
		conn_send_error(c, env->seq, "refused", "this test controller refuses every agent");
		conn_close_after_flush(c);
		f->c = NULL;
		f->closes++;
		return;
	}
	Drover__Envelope out = DROVER__ENVELOPE__INIT;
	Drover__Welcome w = DROVER__WELCOME__INIT;

	w.controller_version = "fakectl";
	w.heartbeat_interval_ms = f->heartbeat_ms;
	w.host_id = env->hello->host_id;
	out.body_case = DROVER__ENVELOPE__BODY_WELCOME;
	out.welcome = &w;
	conn_send(c, &out);
}

static void on_closed(struct conn *c, int err, const char *why, void *opaque)
{
	struct fakectl *f = opaque;

	if (f->c == c)
		f->c = NULL;
	f->closes++;
	snprintf(f->last_close, sizeof(f->last_close), "%s", why);
}

static const struct conn_handler handler = { on_message, on_closed };

static void on_accept(void *opaque, int fd, uint32_t events)
{
	struct fakectl *f = opaque;
	int s = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (s < 0)
		return;
	if (f->accepted < 64)
		f->accept_ms[f->accepted] = test_now_ms();
	f->accepted++;
	if (f->mode == FAKECTL_RAW) {
		if (f->raw_fd >= 0)
			close(f->raw_fd);
		f->raw_fd = s;
		return;
	}
	if (f->c) {
		conn_close(f->c);
		f->c = NULL;
	}
	if (conn_open(f->loop, s, NULL, &handler, f, &f->c) < 0) {
		close(s);
		f->c = NULL;
	}
}

static int listen_on(struct fakectl *f, const char *addr)
{
	char err[256];
	int ret = conn_listen(addr, 16, &f->listen_fd, &f->port, err, sizeof(err));

	if (ret < 0) {
		fprintf(stderr, "fakectl: %s\n", err);
		return ret;
	}
	snprintf(f->addr, sizeof(f->addr), "127.0.0.1:%u", f->port);
	return evloop_add(f->loop, f->listen_fd, EPOLLIN, on_accept, f);
}

int fakectl_start(struct fakectl *f, uint32_t heartbeat_ms)
{
	memset(f, 0, sizeof(*f));
	f->listen_fd = -1;
	f->raw_fd = -1;
	f->heartbeat_ms = heartbeat_ms;
	if (evloop_new(&f->loop) < 0)
		return -1;
	return listen_on(f, "127.0.0.1:0");
}

void fakectl_unlisten(struct fakectl *f)
{
	if (f->listen_fd < 0)
		return;
	evloop_del(f->loop, f->listen_fd);
	close(f->listen_fd);
	f->listen_fd = -1;
}

int fakectl_relisten(struct fakectl *f)
{
	char addr[32];

	snprintf(addr, sizeof(addr), "127.0.0.1:%u", f->port);
	return listen_on(f, addr);
}

void fakectl_drop(struct fakectl *f)
{
	if (f->c) {
		conn_close(f->c);
		f->c = NULL;
		f->closes++;
	}
	if (f->raw_fd >= 0) {
		close(f->raw_fd);
		f->raw_fd = -1;
	}
}

void fakectl_stop(struct fakectl *f)
{
	fakectl_drop(f);
	fakectl_unlisten(f);
	for (size_t i = 0; i < f->ninbox; i++)
		fakectl_free(f->inbox[i]);
	f->ninbox = 0;
	evloop_free(f->loop);
	f->loop = NULL;
}

void fakectl_spin(struct fakectl *f, int ms)
{
	uint64_t end = test_now_ms() + (uint64_t)ms;

	for (uint64_t now = test_now_ms(); now < end; now = test_now_ms())
		evloop_run_once(f->loop, (int)(end - now));
}

void fakectl_free(Drover__Envelope *env)
{
	if (env)
		drover__envelope__free_unpacked(env, NULL);
}

static size_t count_hellos(const struct fakectl *f)
{
	size_t n = 0;

	for (size_t i = 0; i < f->ninbox; i++)
		n += f->inbox[i]->body_case == DROVER__ENVELOPE__BODY_HELLO;
	return n;
}

bool fakectl_wait_connections(struct fakectl *f, unsigned n, int timeout_ms)
{
	uint64_t end = test_now_ms() + (uint64_t)timeout_ms;

	while (test_now_ms() < end) {
		if (f->accepted >= n && (f->mode == FAKECTL_RAW || (f->c && count_hellos(f))))
			return true;
		evloop_run_once(f->loop, 10);
	}
	return false;
}

typedef bool (*match_fn)(const Drover__Envelope *env, const void *arg);

static Drover__Envelope *wait_match(struct fakectl *f, match_fn match, const void *arg,
				    int timeout_ms)
{
	uint64_t end = test_now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		for (size_t i = 0; i < f->ninbox; i++) {
			Drover__Envelope *env = f->inbox[i];

			if (env && match(env, arg)) {
				memmove(&f->inbox[i], &f->inbox[i + 1],
					(f->ninbox - i - 1) * sizeof(f->inbox[0]));
				f->ninbox--;
				return env;
			}
		}
		if (test_now_ms() >= end)
			return NULL;
		evloop_run_once(f->loop, 10);
	}
}

static bool match_body(const Drover__Envelope *env, const void *arg)
{
	return env->body_case == *(const Drover__Envelope__BodyCase *)arg;
}

Drover__Envelope *fakectl_wait(struct fakectl *f, Drover__Envelope__BodyCase body,
			       int timeout_ms)
{
	return wait_match(f, match_body, &body, timeout_ms);
}

struct event_want {
	const char *vm_id;
	const char *event;
};

static bool match_event(const Drover__Envelope *env, const void *arg)
{
	const struct event_want *w = arg;

	return env->body_case == DROVER__ENVELOPE__BODY_VM_EVENT && env->vm_event &&
	       env->vm_event->status && !strcmp(env->vm_event->status->vm_id, w->vm_id) &&
	       !strcmp(env->vm_event->event, w->event);
}

Drover__Envelope *fakectl_wait_event(struct fakectl *f, const char *vm_id, const char *event,
				     int timeout_ms)
{
	struct event_want w = { vm_id, event };

	return wait_match(f, match_event, &w, timeout_ms);
}

void fakectl_discard(struct fakectl *f, Drover__Envelope__BodyCase body)
{
	size_t o = 0;

	for (size_t i = 0; i < f->ninbox; i++) {
		if (f->inbox[i]->body_case == body)
			fakectl_free(f->inbox[i]);
		else
			f->inbox[o++] = f->inbox[i];
	}
	f->ninbox = o;
}

int64_t fakectl_send(struct fakectl *f, Drover__Envelope *env)
{
	return f->c ? conn_send(f->c, env) : -ENOTCONN;
}

static bool match_reply(const Drover__Envelope *env, const void *arg)
{
	return env->body_case == DROVER__ENVELOPE__BODY_RESULT &&
	       env->reply_to == *(const uint64_t *)arg;
}

Drover__Envelope *fakectl_command(struct fakectl *f, Drover__Command *cmd, int timeout_ms)
{
	Drover__Envelope env = DROVER__ENVELOPE__INIT;
	int64_t seq;
	uint64_t want;

	env.body_case = DROVER__ENVELOPE__BODY_COMMAND;
	env.command = cmd;
	seq = fakectl_send(f, &env);
	if (seq <= 0)
		return NULL;
	want = (uint64_t)seq;
	return wait_match(f, match_reply, &want, timeout_ms);
}

Drover__Envelope *fakectl_vm(struct fakectl *f, Drover__Command__KindCase kind,
			     const char *vm_id, int timeout_ms)
{
	Drover__Command cmd = DROVER__COMMAND__INIT;
	Drover__VmRef ref = DROVER__VM_REF__INIT;

	ref.vm_id = (char *)vm_id;
	cmd.kind_case = kind;
	switch (kind) {
	case DROVER__COMMAND__KIND_START: cmd.start = &ref; break;
	case DROVER__COMMAND__KIND_REBOOT: cmd.reboot = &ref; break;
	case DROVER__COMMAND__KIND_PAUSE: cmd.pause = &ref; break;
	case DROVER__COMMAND__KIND_RESUME: cmd.resume = &ref; break;
	case DROVER__COMMAND__KIND_DESTROY: cmd.destroy = &ref; break;
	case DROVER__COMMAND__KIND_UNDEFINE: cmd.undefine = &ref; break;
	default: return NULL;
	}
	return fakectl_command(f, &cmd, timeout_ms);
}

Drover__Envelope *fakectl_define(struct fakectl *f, const char *vm_id, const char *json,
				 int timeout_ms)
{
	Drover__Command cmd = DROVER__COMMAND__INIT;
	Drover__DefineVm d = DROVER__DEFINE_VM__INIT;

	d.vm_id = (char *)vm_id;
	d.definition_json = (char *)json;
	cmd.kind_case = DROVER__COMMAND__KIND_DEFINE;
	cmd.define = &d;
	return fakectl_command(f, &cmd, timeout_ms);
}

Drover__Envelope *fakectl_stopvm(struct fakectl *f, const char *vm_id, uint32_t timeout_ms,
				 bool force, int wait_ms)
{
	Drover__Command cmd = DROVER__COMMAND__INIT;
	Drover__StopVm s = DROVER__STOP_VM__INIT;

	s.vm_id = (char *)vm_id;
	s.timeout_ms = timeout_ms;
	s.force = force;
	cmd.kind_case = DROVER__COMMAND__KIND_STOP;
	cmd.stop = &s;
	return fakectl_command(f, &cmd, wait_ms);
}

const Drover__VmStatus *find_vm(const Drover__Envelope *env, const char *vm_id)
{
	Drover__VmStatus **vms = NULL;
	size_t n = 0;

	if (env->body_case == DROVER__ENVELOPE__BODY_HELLO && env->hello) {
		vms = env->hello->vms;
		n = env->hello->n_vms;
	} else if (env->body_case == DROVER__ENVELOPE__BODY_HEARTBEAT && env->heartbeat) {
		vms = env->heartbeat->vms;
		n = env->heartbeat->n_vms;
	}
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(vms[i]->vm_id, vm_id))
			return vms[i];
	}
	return NULL;
}

/* ---- the agent process ---- */

int agentproc_start(struct agentproc *p, const char *agent, const char *config,
		    const char *log)
{
	pid_t pid;

	snprintf(p->log, sizeof(p->log), "%s", log);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

		if (fd < 0 || null < 0)
			_exit(126);
		dup2(null, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		execl(agent, "drover-agent", "--config", config, "--log-level", "debug", (char *)NULL);
		_exit(127);
	}
	p->pid = pid;
	return 0;
}

static int wait_child(pid_t pid, int timeout_ms)
{
	uint64_t end = test_now_ms() + (uint64_t)timeout_ms;
	int status;

	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		if (r < 0 || test_now_ms() >= end)
			return -1;
		usleep(5000);
	}
}

int agentproc_stop(struct agentproc *p, int sig, int timeout_ms)
{
	int ret;

	if (p->pid <= 0)
		return -1;
	kill(p->pid, sig);
	ret = wait_child(p->pid, timeout_ms);
	if (ret < 0) {
		kill(p->pid, SIGKILL);
		wait_child(p->pid, 5000);
	}
	p->pid = 0;
	return ret;
}

int agentproc_run(const char *agent, const char *const *args, char *err, size_t errlen,
		  int timeout_ms)
{
	char path[] = "/tmp/drover-agent-run-XXXXXX";
	const char *argv[16] = { "drover-agent" };
	int fd = mkstemp(path), n = 1, ret;
	pid_t pid;

	if (fd < 0)
		return -1;
	for (int i = 0; args[i] && n < 15; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	pid = fork();
	if (pid == 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		execv(agent, (char *const *)argv);
		_exit(127);
	}
	ret = wait_child(pid, timeout_ms);
	if (ret < 0) {
		kill(pid, SIGKILL);
		wait_child(pid, 5000);
	}
	ssize_t got = pread(fd, err, errlen - 1, 0);
	err[got > 0 ? got : 0] = 0;
	close(fd);
	unlink(path);
	return ret;
}

/* ---- files and processes ---- */

int test_tmpdir(char *out, size_t len)
{
	snprintf(out, len, "/tmp/dra-XXXXXX");
	return mkdtemp(out) ? 0 : -errno;
}

void test_rmtree(const char *path)
{
	pid_t pid = fork();

	if (pid == 0) {
		execlp("rm", "rm", "-rf", "--", path, (char *)NULL);
		_exit(127);
	}
	if (pid > 0)
		waitpid(pid, NULL, 0);
}

int test_write(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	int ret;

	if (!f)
		return -errno;
	ret = fputs(text, f) < 0 ? -EIO : 0;
	if (fclose(f) != 0)
		ret = -EIO;
	return ret;
}

long long test_file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

bool test_file_contains(const char *path, const char *needle)
{
	FILE *f = fopen(path, "r");
	char line[4096];
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, needle) != NULL;
	fclose(f);
	return found;
}

int test_count_substr(const char *path, const char *needle)
{
	FILE *f = fopen(path, "r");
	char line[4096];
	int n = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		for (const char *p = strstr(line, needle); p; p = strstr(p + 1, needle))
			n++;
	}
	fclose(f);
	return n;
}

int test_count_lines(const char *path, const char *prefix)
{
	FILE *f = fopen(path, "r");
	char line[4096];
	int n = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, prefix, strlen(prefix)) && strchr(line, '\n'))
			n++;
	}
	fclose(f);
	return n;
}

bool test_wait_lines(const char *path, const char *prefix, int count, int timeout_ms)
{
	uint64_t end = test_now_ms() + (uint64_t)timeout_ms;

	while (test_count_lines(path, prefix) < count) {
		if (test_now_ms() >= end)
			return false;
		usleep(20000);
	}
	return true;
}

bool test_pid_alive(pid_t pid)
{
	char path[64], buf[512];
	const char *p;
	ssize_t n;
	int fd;

	if (pid <= 0)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = 0;
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

bool test_wait_pid_gone(pid_t pid, int timeout_ms)
{
	uint64_t end = test_now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		/* Orphaned VMMs come to this test (subreaper): reap those. */
		pid_t r = waitpid(pid, NULL, WNOHANG);

		if (r == pid || (r < 0 && errno == ECHILD && !test_pid_alive(pid)))
			return true;
		if (test_now_ms() >= end)
			return false;
		usleep(10000);
	}
}

void test_kill_pid(pid_t pid)
{
	if (pid > 0 && test_pid_alive(pid)) {
		kill(pid, SIGKILL);
		test_wait_pid_gone(pid, 5000);
	}
}
