/* The drover-vmm driver (vmmdrv.h).
 *
 * One drover-vmm process per VM, started in a session of its own (it
 * outlives the agent), stdin /dev/null, stdout and stderr appended to
 * vmm.log, its configuration in vmm.json: the definition with the name, the
 * control socket and the serial console set by the agent.
 *
 * Watching a VMM: a pidfd (works for processes that are not our children,
 * so adopted VMMs are watched the same way) says when it ends; its control
 * socket says why (the SHUTDOWN event's reason and exit-status) and carries
 * pause, resume, reset and quit.
 *
 * A VMM is "verified" once we know the process is the VMM of this VM: we
 * spawned it ourselves, or its control socket's peer (SO_PEERCRED) is the
 * process and query-name answers the VM's id. Until then it is never
 * signalled.
 *
 *   attach:  connect control.sock (retried every ATTACH_RETRY_MS) ->
 *            SO_PEERCRED pid -> query-name -> query-commands -> query-status
 *            -> ready()
 *   end:     pidfd readable -> drain the socket (SHUTDOWN) -> waitid when
 *            it is our child -> exited() */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent_fs.h"
#include "config.h"
#include "evloop.h"
#include "log.h"
#include "qmpc.h"
#include "util.h"
#include "vmmdrv.h"

#define ATTACH_RETRY_MS   20
#define ADOPT_TIMEOUT_MS  5000
#define LOG_MARKER        "drover-agent: starting drover-vmm for VM "
#define LOG_TAIL_MAX      (256 * 1024)

/* drover-vmm's exit statuses (its README). */
#define EXIT_POWEROFF   0
#define EXIT_ERROR      1
#define EXIT_CRASH      2
#define EXIT_RESET      3
#define EXIT_QUIT       4
#define EXIT_DEBUG_BASE 16

struct vmm {
	struct evloop *loop;
	const struct vmm_listener *l;
	void *opaque;
	char *vm_id;
	char dir[PATH_MAX];
	char control[sizeof(((struct sockaddr_un *)0)->sun_path)];
	pid_t pid;
	uint64_t pid_start;
	int pidfd;
	bool child;                 /* we spawned it: waitid gives its status */
	bool verified;              /* ours to signal */
	bool ready;
	bool adopting;
	bool attach_timed_out;
	bool killed_by_us;
	bool has_powerdown;
	bool powerdown_sent, quit_sent;     /* by a graceful stop */
	uint64_t attach_deadline_ns;
	uint32_t attach_timeout_ms;
	struct evloop_timer *attach_timer;
	struct evloop_timer *kill_timer;
	struct qmpc *q;
	char attach_error[256];     /* set by a socket callback, acted on by the timer */
	char fail_detail[256];
	bool shutdown_seen;
	int shutdown_status;
	char shutdown_reason[48];
	char shutdown_detail[256];
};

struct control_op {
	struct vmm *v;
	vmm_done_fn done;
	void *opaque;
};

static void attach_schedule(struct vmm *v, uint64_t ms);
static void vmm_free(struct vmm *v);

/* ---- processes ---- */

/* /proc/PID/stat: the state letter and starttime (field 22); 0 or -errno. */
static int proc_stat(pid_t pid, char *state, uint64_t *start)
{
	char path[64], buf[1024];
	const char *p;
	ssize_t n;
	int fd;

	if (pid <= 0)
		return -ESRCH;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -ESRCH;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -ESRCH;
	buf[n] = 0;
	/* The command name (field 2) may hold spaces and parentheses: fields
	 * are counted from the last ')'. */
	p = strrchr(buf, ')');
	if (!p || p[1] != ' ')
		return -EINVAL;
	*state = p[2];
	for (int field = 2; field < 22 && p; field++)
		p = strchr(p + 1, ' ');
	if (!p)
		return -EINVAL;
	*start = strtoull(p + 1, NULL, 10);
	return 0;
}

uint64_t vmmdrv_proc_start(pid_t pid)
{
	uint64_t start = 0;
	char state;

	return proc_stat(pid, &state, &start) == 0 ? start : 0;
}

static bool pidfd_exited(int pidfd)
{
	struct pollfd pfd = { .fd = pidfd, .events = POLLIN };

	return poll(&pfd, 1, 0) == 1;
}

static void kill_now(struct vmm *v)
{
	if (!v->verified || v->pidfd < 0)
		return;
	v->killed_by_us = true;
	if (pidfd_send_signal(v->pidfd, SIGKILL, NULL, 0) < 0 && errno != ESRCH)
		log_warn("VM %s: SIGKILL to drover-vmm (pid %d): %s", v->vm_id, (int)v->pid,
			 strerror(errno));
}

/* ---- files ---- */

static int path_in(const struct vmm *v, const char *name, char *out, size_t len)
{
	return fs_join(out, len, v->dir, name);
}

/* The text vmm.log holds since the agent last started a VMM there
 * (malloc'd), or NULL. */
static char *log_since_marker(const char *dir)
{
	char path[PATH_MAX], *text, *mark, *from, *nl;
	struct stat st;
	off_t off = 0;
	ssize_t n;
	int fd;

	if (fs_join(path, sizeof(path), dir, FS_VMM_LOG) < 0)
		return NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) == 0 && st.st_size > LOG_TAIL_MAX)
		off = st.st_size - LOG_TAIL_MAX;
	text = malloc(LOG_TAIL_MAX + 1);
	n = text ? pread(fd, text, LOG_TAIL_MAX, off) : -1;
	close(fd);
	if (n < 0) {
		free(text);
		return NULL;
	}
	text[n] = 0;
	from = text;
	for (mark = strstr(text, LOG_MARKER); mark; mark = strstr(mark + 1, LOG_MARKER))
		from = mark;
	if (from != text || !strncmp(text, LOG_MARKER, strlen(LOG_MARKER))) {
		nl = strchr(from, '\n');
		from = nl ? nl + 1 : from + strlen(from);
	}
	memmove(text, from, strlen(from) + 1);
	return text;
}

/* The first non-empty line of text into out. */
static void first_line(const char *text, char *out, size_t len)
{
	const char *p = text;

	out[0] = 0;
	while (p && *p == '\n')
		p++;
	if (p && *p)
		snprintf(out, len, "%.*s", (int)strcspn(p, "\n"), p);
}

/* A line of text that contains needle, into out (whole line); true if any. */
static bool find_line(const char *text, const char *needle, char *out, size_t len)
{
	const char *hit = text ? strstr(text, needle) : NULL;
	const char *start;

	if (!hit)
		return false;
	for (start = hit; start > text && start[-1] != '\n'; start--)
		;
	snprintf(out, len, "%.*s", (int)strcspn(start, "\n"), start);
	return true;
}

static void drover_postmortem(const struct vmm_spec *spec, struct vmm_exit *ex)
{
	char *log = log_since_marker(spec->dir);
	char line[256];

	memset(ex, 0, sizeof(*ex));
	ex->status = -1;
	/* The lines drover-vmm writes as it ends (vmm/main.c). */
	if (find_line(log, "guest crashed", line, sizeof(line))) {
		snprintf(ex->reason, sizeof(ex->reason), "guest-crash");
		snprintf(ex->detail, sizeof(ex->detail), "%s", line);
		ex->status = EXIT_CRASH;
		ex->guest_ran = true;
	} else if (find_line(log, "guest powered off", line, sizeof(line))) {
		snprintf(ex->reason, sizeof(ex->reason), "guest-shutdown");
		ex->status = EXIT_POWEROFF;
		ex->guest_ran = true;
	} else if (find_line(log, "exiting as --on-reboot exit asks", line, sizeof(line))) {
		snprintf(ex->reason, sizeof(ex->reason), "guest-reset");
		ex->status = EXIT_RESET;
		ex->guest_ran = true;
	} else if (find_line(log, "stopping the VM", line, sizeof(line))) {
		snprintf(ex->reason, sizeof(ex->reason), "host-signal");
		snprintf(ex->detail, sizeof(ex->detail), "%s", line);
		ex->status = EXIT_QUIT;
		ex->guest_ran = true;
	} else if (find_line(log, ": error: ", line, sizeof(line))) {
		snprintf(ex->reason, sizeof(ex->reason), "vmm-failed");
		snprintf(ex->detail, sizeof(ex->detail), "%s", line);
		ex->status = EXIT_ERROR;
	} else {
		snprintf(ex->reason, sizeof(ex->reason), "vanished");
		snprintf(ex->detail, sizeof(ex->detail), "drover-vmm ended while no agent watched "
			 "it; its log (%s) says nothing of why", FS_VMM_LOG);
	}
	free(log);
}

/* vmm.json: the definition with what the agent decides set over it. */
static int write_vmm_config(const struct vmm_spec *spec, const char *control, char *err,
			    size_t errlen)
{
	char path[PATH_MAX], console[PATH_MAX + 8], cpath[PATH_MAX];
	struct vmm_config cfg;
	json_error_t jerr;
	json_t *doc;
	char *text;
	int ret;

	doc = json_loadb(spec->definition, spec->definition_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!doc || !json_is_object(doc)) {
		snprintf(err, errlen, "the definition is no JSON object");
		json_decref(doc);
		return -EINVAL;
	}
	if (fs_join(cpath, sizeof(cpath), spec->dir, FS_CONSOLE) < 0 ||
	    fs_join(path, sizeof(path), spec->dir, FS_VMM_CONFIG) < 0) {
		json_decref(doc);
		snprintf(err, errlen, "run directory path too long");
		return -ENAMETOOLONG;
	}
	snprintf(console, sizeof(console), "file:%s", cpath);
	json_object_set_new(doc, "name", json_string(spec->vm_id));
	json_object_set_new(doc, "control", json_string(control));
	json_object_set_new(doc, "serial", json_string(console));
	text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(doc);
	if (!text)
		return -ENOMEM;
	vmm_config_init(&cfg);
	ret = vmm_config_from_json(&cfg, text, strlen(text), FS_VMM_CONFIG, err, errlen);
	vmm_config_free(&cfg);
	if (ret == 0) {
		ret = fs_write_atomic(path, text, strlen(text), 0644);
		if (ret < 0)
			snprintf(err, errlen, "writing %s: %s", path, strerror(-ret));
	}
	free(text);
	return ret;
}

/* ---- the control socket ----
 *
 * Lifetime rule: a struct vmm is freed only from the loop's own callbacks
 * for it (its pidfd, its attach timer) or by release(); never from inside
 * a control socket callback, which only records what happened and, when
 * something must be undone, wakes the attach timer. */

static void attach_wake(struct vmm *v, const char *why)
{
	if (!v->attach_error[0])
		snprintf(v->attach_error, sizeof(v->attach_error), "%s", why);
	attach_schedule(v, 0);
}

static void on_qmp_event(void *opaque, const char *name, json_t *data)
{
	struct vmm *v = opaque;
	const char *reason = json_string_value(json_object_get(data, "reason"));

	if (!strcmp(name, "SHUTDOWN")) {
		json_t *st = json_object_get(data, "exit-status");
		const char *detail = json_string_value(json_object_get(data, "detail"));

		v->shutdown_seen = true;
		v->shutdown_status = json_is_integer(st) ? (int)json_integer_value(st) : -1;
		snprintf(v->shutdown_reason, sizeof(v->shutdown_reason), "%s",
			 reason ? reason : "unknown");
		snprintf(v->shutdown_detail, sizeof(v->shutdown_detail), "%s", detail ? detail : "");
		return;
	}
	if (!v->ready)
		return;
	if (!strcmp(name, "STOP"))
		v->l->event(v->opaque, "paused", "");
	else if (!strcmp(name, "RESUME"))
		v->l->event(v->opaque, "resumed", "");
	else if (!strcmp(name, "RESET"))
		v->l->event(v->opaque, "reset", reason ? reason : "");
}

static void on_qmp_closed(void *opaque, const char *why)
{
	struct vmm *v = opaque;

	v->q = NULL;
	log_debug("VM %s: control socket: %s", v->vm_id, why);
	/* A VMM that ends closes its socket a moment before its pidfd says so:
	 * the timer looks again later and reconnects only if it still runs. */
	attach_schedule(v, v->ready ? 500 : ATTACH_RETRY_MS);
}

static const struct qmpc_handler qmp_handler = { on_qmp_event, on_qmp_closed };

/* Attaching failed for good (attach timer context): a VMM we launched is
 * killed (it is ours and useless); an adopted one is left alone and
 * reported unresponsive. */
static void attach_failed(struct vmm *v, const char *why)
{
	log_warn("VM %s: %s", v->vm_id, why);
	if (v->q) {
		struct qmpc *q = v->q;

		v->q = NULL;
		qmpc_close(q);
	}
	if (v->adopting) {
		struct vmm_exit ex = { .status = -1 };
		const struct vmm_listener *l = v->l;
		void *opaque = v->opaque;

		snprintf(ex.reason, sizeof(ex.reason), "unresponsive");
		snprintf(ex.detail, sizeof(ex.detail), "%s", why);
		vmm_free(v);
		l->exited(opaque, &ex);
		return;
	}
	v->attach_timed_out = true;
	snprintf(v->fail_detail, sizeof(v->fail_detail), "%.240s; killed", why);
	kill_now(v);
}

static void on_status(void *opaque, json_t *ret, const char *err)
{
	struct vmm *v = opaque;
	const char *status = json_string_value(json_object_get(ret, "status"));
	struct vmm_proc proc;

	if (!v->q)
		return;    /* closing */
	if (err) {
		attach_wake(v, "query-status failed on the control socket");
		return;
	}
	if (v->ready) {
		/* Connected again after a lost connection: whatever changed
		 * meanwhile (the supervisor ignores what it already knows). */
		v->l->event(v->opaque, status && !strcmp(status, "paused") ? "paused" : "resumed",
			    "");
		return;
	}
	v->ready = true;
	v->adopting = false;
	proc.pid = v->pid;
	proc.start = v->pid_start;
	v->l->ready(v->opaque, status && !strcmp(status, "paused"), &proc);
}

static void on_commands(void *opaque, json_t *ret, const char *err)
{
	struct vmm *v = opaque;
	size_t i;
	json_t *c;

	if (!v->q)
		return;
	v->has_powerdown = false;
	json_array_foreach(ret, i, c) {
		const char *name = json_string_value(json_object_get(c, "name"));

		if (name && !strcmp(name, "system_powerdown"))
			v->has_powerdown = true;
	}
	if (qmpc_execute(v->q, "query-status", NULL, on_status, v) < 0)
		attach_wake(v, "cannot send query-status");
}

static void on_name(void *opaque, json_t *ret, const char *err)
{
	struct vmm *v = opaque;
	const char *name = json_string_value(json_object_get(ret, "name"));
	char why[256];

	if (!v->q)
		return;
	if (err || !name || strcmp(name, v->vm_id)) {
		snprintf(why, sizeof(why), "the VMM on %s (pid %d) is VM '%s', not this one",
			 v->control, (int)v->pid, name ? name : "?");
		attach_wake(v, why);
		return;
	}
	v->verified = true;
	if (qmpc_execute(v->q, "query-commands", NULL, on_commands, v) < 0)
		attach_wake(v, "cannot send query-commands");
}

static void on_pidfd(void *opaque, int fd, uint32_t events);

/* The process that owns a connected control socket. Adoption follows it
 * when no pid was recorded; a VMM we launched must be the one we spawned. */
static int take_peer(struct vmm *v, pid_t peer, char *why, size_t whylen)
{
	int fd, ret;

	if (v->pid == peer)
		return 0;
	if (!v->adopting || v->pid) {
		snprintf(why, whylen, "the control socket %s belongs to pid %d, not to drover-vmm "
			 "pid %d", v->control, (int)peer, (int)v->pid);
		return -ESTALE;
	}
	fd = pidfd_open(peer, 0);
	if (fd < 0) {
		snprintf(why, whylen, "pidfd_open(%d): %s", (int)peer, strerror(errno));
		return -errno;
	}
	ret = evloop_add(v->loop, fd, EPOLLIN, on_pidfd, v);
	if (ret < 0) {
		close(fd);
		snprintf(why, whylen, "watching pid %d: %s", (int)peer, strerror(-ret));
		return ret;
	}
	v->pidfd = fd;
	v->pid = peer;
	v->pid_start = vmmdrv_proc_start(peer);
	return 0;
}

/* Connects to the control socket: the connected fd and its peer's pid, or
 * -errno. */
static int control_connect(const char *path, int *fd_out, pid_t *peer)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	int fd, ret;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
		ret = -errno;
		close(fd);
		return ret;
	}
	*fd_out = fd;
	*peer = cred.pid;
	return 0;
}

/* Starts the verification chain on a connected socket. */
static void attach_fd(struct vmm *v, int fd, pid_t peer)
{
	char why[256];

	if (take_peer(v, peer, why, sizeof(why)) < 0) {
		close(fd);
		attach_wake(v, why);
		return;
	}
	if (qmpc_open(v->loop, fd, &qmp_handler, v, &v->q) < 0) {
		close(fd);
		attach_wake(v, "cannot watch the control socket");
		return;
	}
	if (qmpc_execute(v->q, "query-name", NULL, on_name, v) < 0) {
		attach_wake(v, "cannot send query-name");
		return;
	}
	if (!v->ready) {
		/* The watchdog: the answers must come before the deadline. */
		uint64_t now = monotonic_ns();

		attach_schedule(v, now < v->attach_deadline_ns ?
				(v->attach_deadline_ns - now) / 1000000 + 1 : 0);
	}
}

static void attach_try(void *opaque, struct evloop_timer *t)
{
	struct vmm *v = opaque;
	char why[sizeof(v->attach_error) + 32];
	pid_t peer;
	int fd;

	if (v->attach_error[0]) {
		snprintf(why, sizeof(why), "%s", v->attach_error);
		v->attach_error[0] = 0;
		if (v->ready) {
			/* A VMM we already run: never killed for a failed reconnect. */
			log_warn("VM %s: control socket: %s; trying again", v->vm_id, why);
			if (v->q) {
				struct qmpc *q = v->q;

				v->q = NULL;
				qmpc_close(q);
			}
			attach_schedule(v, 1000);
			return;
		}
		attach_failed(v, why);
		return;
	}
	if (v->q) {
		uint64_t now = monotonic_ns();

		if (v->ready)
			return;
		if (now < v->attach_deadline_ns) {
			attach_schedule(v, (v->attach_deadline_ns - now) / 1000000 + 1);
			return;
		}
		snprintf(why, sizeof(why), "its control socket %s accepted a connection but did "
			 "not answer within %u ms", v->control, v->attach_timeout_ms);
		attach_failed(v, why);
		return;
	}
	if (v->ready)
		log_warn("VM %s: drover-vmm (pid %d) runs on without its control socket "
			 "connection; connecting again", v->vm_id, (int)v->pid);
	if (control_connect(v->control, &fd, &peer) < 0) {
		if (v->ready)
			attach_schedule(v, 1000);
		else if (monotonic_ns() < v->attach_deadline_ns)
			attach_schedule(v, ATTACH_RETRY_MS);
		else {
			snprintf(why, sizeof(why), "its control socket %s did not answer within "
				 "%u ms", v->control, v->attach_timeout_ms);
			attach_failed(v, why);
		}
		return;
	}
	attach_fd(v, fd, peer);
}

static void attach_schedule(struct vmm *v, uint64_t ms)
{
	if (!v->attach_timer) {
		if (evloop_timer_add(v->loop, ms, 0, attach_try, v, &v->attach_timer) < 0)
			log_error("VM %s: no timer to watch its VMM with", v->vm_id);
		return;
	}
	evloop_timer_set(v->attach_timer, ms, 0);
}

static void attach_start(struct vmm *v, uint32_t timeout_ms)
{
	v->attach_timeout_ms = timeout_ms;
	v->attach_deadline_ns = monotonic_ns() + (uint64_t)timeout_ms * 1000000;
	attach_schedule(v, 0);
}

/* ---- the end of a process ---- */

static const char *reason_for_status(int status)
{
	if (status == EXIT_POWEROFF)
		return "guest-shutdown";
	if (status == EXIT_ERROR)
		return "vmm-failed";
	if (status == EXIT_CRASH)
		return "guest-crash";
	if (status == EXIT_RESET)
		return "guest-reset";
	if (status == EXIT_QUIT)
		return "host-signal";
	if (status >= EXIT_DEBUG_BASE)
		return "guest-debug-exit";
	return "vmm-failed";
}

static void describe_exit(struct vmm *v, struct vmm_exit *ex)
{
	siginfo_t si = { 0 };
	char *log;

	memset(ex, 0, sizeof(*ex));
	ex->status = -1;
	if (v->child && waitid(P_PIDFD, (id_t)v->pidfd, &si, WEXITED | WNOHANG) == 0 &&
	    si.si_pid) {
		if (si.si_code == CLD_EXITED)
			ex->status = si.si_status;
		else
			ex->signal = si.si_status;
	}
	if (v->shutdown_seen) {
		snprintf(ex->reason, sizeof(ex->reason), "%s", v->shutdown_reason);
		snprintf(ex->detail, sizeof(ex->detail), "%s", v->shutdown_detail);
		if (ex->status < 0 && !ex->signal)
			ex->status = v->shutdown_status;
		ex->guest_ran = true;
		return;
	}
	if (ex->signal) {
		snprintf(ex->reason, sizeof(ex->reason), "killed");
		snprintf(ex->detail, sizeof(ex->detail), "drover-vmm (pid %d) was killed by SIG%s",
			 (int)v->pid, sigabbrev_np(ex->signal) ? sigabbrev_np(ex->signal) : "?");
	} else if (ex->status >= 0) {
		snprintf(ex->reason, sizeof(ex->reason), "%s", reason_for_status(ex->status));
		ex->guest_ran = ex->status != EXIT_ERROR;
		if (ex->status == EXIT_ERROR && (log = log_since_marker(v->dir))) {
			first_line(log, ex->detail, sizeof(ex->detail));
			free(log);
		}
	} else {
		/* Not our child: its log is all there is. */
		struct vmm_spec spec = { .vm_id = v->vm_id, .dir = v->dir };

		drover_postmortem(&spec, ex);
		if (!strcmp(ex->reason, "vanished"))
			snprintf(ex->detail, sizeof(ex->detail), "drover-vmm (pid %d) ended without a "
				 "word on its control socket or in its log (killed?)", (int)v->pid);
	}
	if (v->attach_timed_out) {
		snprintf(ex->reason, sizeof(ex->reason), "vmm-failed");
		snprintf(ex->detail, sizeof(ex->detail), "%s", v->fail_detail);
		ex->guest_ran = false;
	}
}

static void vmm_free(struct vmm *v)
{
	if (v->q) {
		struct qmpc *q = v->q;

		v->q = NULL;
		qmpc_close(q);
	}
	evloop_timer_del(v->attach_timer);
	evloop_timer_del(v->kill_timer);
	if (v->pidfd >= 0) {
		evloop_del(v->loop, v->pidfd);
		close(v->pidfd);
	}
	free(v->vm_id);
	free(v);
}

static void process_ended(struct vmm *v)
{
	const struct vmm_listener *l = v->l;
	void *opaque = v->opaque;
	struct vmm_exit ex;

	if (v->q) {
		/* Its last words (SHUTDOWN) are in the socket's buffer. */
		qmpc_drain(v->q);
	}
	if (v->q) {
		struct qmpc *q = v->q;

		v->q = NULL;
		qmpc_close(q);
	}
	describe_exit(v, &ex);
	vmm_free(v);
	l->exited(opaque, &ex);
}

static void on_pidfd(void *opaque, int fd, uint32_t events)
{
	process_ended(opaque);
}

/* ---- verbs ---- */

static struct vmm *vmm_new(struct evloop *loop, const struct vmm_spec *spec,
			   const struct vmm_listener *l, void *opaque, char *err, size_t errlen)
{
	struct vmm *v = calloc(1, sizeof(*v));

	if (!v || !(v->vm_id = strdup(spec->vm_id))) {
		free(v);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	v->loop = loop;
	v->l = l;
	v->opaque = opaque;
	v->pidfd = -1;
	snprintf(v->dir, sizeof(v->dir), "%s", spec->dir);
	if (path_in(v, FS_CONTROL, v->control, sizeof(v->control)) < 0) {
		free(v->vm_id);
		free(v);
		snprintf(err, errlen, "the control socket path %s/%s is longer than the %zu bytes a "
			 "unix socket path may be", spec->dir, FS_CONTROL,
			 sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
		return NULL;
	}
	return v;
}

static int drover_check(const struct vmm_spec *spec, char *err, size_t errlen)
{
	size_t max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;
	size_t len = strlen(spec->dir) + FS_STRLEN("/" FS_CONTROL);

	if (len > max) {
		snprintf(err, errlen, "its control socket %s/%s would be %zu bytes long, over the "
			 "%zu a unix socket path may be (a shorter VM id or run-dir)", spec->dir,
			 FS_CONTROL, len, max);
		return -EINVAL;
	}
	return 0;
}

static int spawn(struct vmm *v, const struct vmm_spec *spec, char *err, size_t errlen)
{
	char config[PATH_MAX], logpath[PATH_MAX], marker[256], stamp[64];
	char *argv[] = { (char *)spec->binary, "--config", config, NULL };
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, all;
	time_t now = time(NULL);
	struct tm tm;
	int logfd, ret;
	pid_t pid;

	if (path_in(v, FS_VMM_CONFIG, config, sizeof(config)) < 0 ||
	    path_in(v, FS_VMM_LOG, logpath, sizeof(logpath)) < 0)
		return -ENAMETOOLONG;
	logfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (logfd < 0) {
		ret = -errno;
		snprintf(err, errlen, "opening %s: %s", logpath, strerror(-ret));
		return ret;
	}
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
	snprintf(marker, sizeof(marker), LOG_MARKER "%s at %s\n", spec->vm_id, stamp);
	write_full(logfd, marker, strlen(marker));

	sigemptyset(&none);
	sigfillset(&all);
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&attr);
	posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, logfd, STDOUT_FILENO);
	posix_spawn_file_actions_adddup2(&fa, logfd, STDERR_FILENO);
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	/* Its own session: no signal meant for the agent's reaches it. The
	 * agent's blocked and ignored signals must not be inherited either. */
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK |
					POSIX_SPAWN_SETSIGDEF);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &all);
	ret = -posix_spawn(&pid, spec->binary, &fa, &attr, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	close(logfd);
	if (ret < 0) {
		snprintf(err, errlen, "cannot run %s: %s", spec->binary, strerror(-ret));
		return ret;
	}
	v->pid = pid;
	v->child = true;
	v->verified = true;
	v->pidfd = pidfd_open(pid, 0);
	if (v->pidfd < 0) {
		ret = -errno;
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		snprintf(err, errlen, "pidfd_open(%d): %s", (int)pid, strerror(-ret));
		return ret;
	}
	v->pid_start = vmmdrv_proc_start(pid);
	return 0;
}

static int write_pid_file(struct vmm *v)
{
	char path[PATH_MAX], text[32];

	if (path_in(v, FS_PID, path, sizeof(path)) < 0)
		return -ENAMETOOLONG;
	snprintf(text, sizeof(text), "%d\n", (int)v->pid);
	return fs_write_atomic(path, text, strlen(text), 0644);
}

static int drover_launch(struct evloop *loop, const struct vmm_spec *spec,
			 const struct vmm_listener *l, void *opaque, struct vmm **out,
			 struct vmm_proc *proc, char *err, size_t errlen)
{
	struct vmm *v;
	int ret = drover_check(spec, err, errlen);

	if (ret < 0)
		return ret;
	v = vmm_new(loop, spec, l, opaque, err, errlen);
	if (!v)
		return -ENOMEM;
	ret = write_vmm_config(spec, v->control, err, errlen);
	if (ret < 0)
		goto fail;
	/* A socket file left by an earlier run must not be mistaken for the new
	 * VMM's (SO_PEERCRED would catch it, but later). */
	unlink(v->control);
	ret = spawn(v, spec, err, errlen);
	if (ret < 0)
		goto fail;
	ret = write_pid_file(v);
	if (ret < 0)
		log_warn("VM %s: writing its pid file: %s", v->vm_id, strerror(-ret));
	ret = evloop_add(loop, v->pidfd, EPOLLIN, on_pidfd, v);
	if (ret < 0) {
		snprintf(err, errlen, "watching drover-vmm (pid %d): %s", (int)v->pid,
			 strerror(-ret));
		kill_now(v);
		waitpid(v->pid, NULL, 0);
		goto fail;
	}
	attach_start(v, spec->ready_timeout_ms);
	proc->pid = v->pid;
	proc->start = v->pid_start;
	*out = v;
	return 0;
fail:
	vmm_free(v);
	return ret;
}

static int drover_adopt(struct evloop *loop, const struct vmm_spec *spec, pid_t pid,
			uint64_t pid_start, const struct vmm_listener *l, void *opaque,
			struct vmm **out, struct vmm_proc *proc, char *err, size_t errlen)
{
	struct vmm *v = vmm_new(loop, spec, l, opaque, err, errlen);
	pid_t peer;
	int ret, fd;

	if (!v)
		return -ENOMEM;
	v->adopting = true;
	if (pid <= 0) {
		/* No pid recorded (the agent died right after starting it): the
		 * control socket, if anything answers there, names the process. */
		if (control_connect(v->control, &fd, &peer) < 0) {
			snprintf(err, errlen, "no pid recorded and nothing answers on %s", v->control);
			vmm_free(v);
			return -ESRCH;
		}
		v->attach_timeout_ms = ADOPT_TIMEOUT_MS;
		v->attach_deadline_ns = monotonic_ns() + ADOPT_TIMEOUT_MS * 1000000ULL;
		attach_fd(v, fd, peer);
		if (!v->pid) {
			snprintf(err, errlen, "%s", v->attach_error);
			vmm_free(v);
			return -ESRCH;
		}
	} else {
		uint64_t start = 0;
		char pstate = 0;

		/* A zombie leader is a process on its way out, even while its
		 * other threads still end (its pidfd is not readable yet). */
		if (proc_stat(pid, &pstate, &start) < 0 || pstate == 'Z' || pstate == 'X' ||
		    (pid_start && start != pid_start)) {
			snprintf(err, errlen, "drover-vmm (pid %d) is gone%s", (int)pid,
				 start && start != pid_start ? " (that pid is another process now)"
							     : "");
			vmm_free(v);
			return -ESRCH;
		}
		v->pidfd = pidfd_open(pid, 0);
		if (v->pidfd < 0 || pidfd_exited(v->pidfd)) {
			snprintf(err, errlen, "drover-vmm (pid %d) is gone", (int)pid);
			vmm_free(v);
			return -ESRCH;
		}
		v->pid = pid;
		v->pid_start = start;
		ret = evloop_add(loop, v->pidfd, EPOLLIN, on_pidfd, v);
		if (ret < 0) {
			snprintf(err, errlen, "watching drover-vmm (pid %d): %s", (int)pid,
				 strerror(-ret));
			vmm_free(v);
			return ret;
		}
		attach_start(v, ADOPT_TIMEOUT_MS);
	}
	proc->pid = v->pid;
	proc->start = v->pid_start;
	*out = v;
	return 0;
}

static void on_control_reply(void *opaque, json_t *ret, const char *err)
{
	struct control_op *op = opaque;

	op->done(op->opaque, err ? -EIO : 0, err ? err : "");
	free(op);
}

static int drover_control(struct vmm *v, enum vmm_control what, vmm_done_fn done, void *opaque)
{
	static const char *const cmds[] = {
		[VMM_CONTROL_PAUSE] = "stop",
		[VMM_CONTROL_RESUME] = "cont",
		[VMM_CONTROL_RESET] = "system_reset",
	};
	struct control_op *op;
	int ret;

	if (!v->q || !v->ready)
		return -ENOTCONN;
	op = calloc(1, sizeof(*op));
	if (!op)
		return -ENOMEM;
	op->v = v;
	op->done = done;
	op->opaque = opaque;
	ret = qmpc_execute(v->q, cmds[what], NULL, on_control_reply, op);
	if (ret < 0)
		free(op);
	return ret;
}

static void on_stop_reply(void *opaque, json_t *ret, const char *err)
{
	/* The process's end is what counts; a refused quit is left to the timer. */
	if (err && strcmp(err, "connection closed"))
		log_debug("stop request: %s", err);
}

/* After system_powerdown, the guest has the stop timeout to power off;
 * then drover-vmm is asked to quit (it flushes the disks and exits), and
 * SIGKILL comes only if even that does not end it within QUIT_GRACE_MS. */
#define QUIT_GRACE_MS 5000

static void kill_timer_fired(void *opaque, struct evloop_timer *t)
{
	struct vmm *v = opaque;

	if (v->powerdown_sent && !v->quit_sent && v->q && v->ready &&
	    qmpc_execute(v->q, "quit", NULL, on_stop_reply, v) == 0) {
		log_warn("VM %s: the guest did not power off within the stop timeout; asking "
			 "drover-vmm (pid %d) to quit", v->vm_id, (int)v->pid);
		v->quit_sent = true;
		if (evloop_timer_set(t, QUIT_GRACE_MS, 0) == 0)
			return;
	}
	log_warn("VM %s: drover-vmm (pid %d) still runs after the stop timeout; killing it",
		 v->vm_id, (int)v->pid);
	kill_now(v);
}

/* Graceful: the ACPI power button when the VMM has one (the guest shuts
 * down in its own time), else quit; see kill_timer_fired for what follows. */
static void drover_stop(struct vmm *v, bool force, uint32_t timeout_ms)
{
	if (!v->verified)
		return;
	if (force || timeout_ms == 0) {
		kill_now(v);
		return;
	}
	if (v->q && v->ready) {
		if (!v->powerdown_sent && !v->quit_sent) {
			v->powerdown_sent = v->has_powerdown;
			v->quit_sent = !v->has_powerdown;
			qmpc_execute(v->q, v->has_powerdown ? "system_powerdown" : "quit", NULL,
				     on_stop_reply, v);
		}
	} else if (pidfd_send_signal(v->pidfd, SIGTERM, NULL, 0) < 0) {
		/* drover-vmm ends cleanly on SIGTERM as on quit. */
		kill_now(v);
		return;
	}
	if (v->kill_timer)
		return;    /* the first stop's deadline stands */
	if (evloop_timer_add(v->loop, timeout_ms, 0, kill_timer_fired, v, &v->kill_timer) < 0)
		kill_now(v);
}

static void drover_release(struct vmm *v)
{
	vmm_free(v);
}

const struct vmm_driver vmmdrv_drover = {
	.name = "drover-vmm",
	.launch = drover_launch,
	.adopt = drover_adopt,
	.control = drover_control,
	.save = NULL,
	.migrate_out = NULL,
	.receive = NULL,
	.stop = drover_stop,
	.release = drover_release,
	.postmortem = drover_postmortem,
	.check = drover_check,
};
