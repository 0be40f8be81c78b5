/* ctl-fakeagent: plays one or more drover agents against a real droverd,
 * over the real protocol (proto/conn.h: framing, Envelopes), so that the
 * controller's tests do not depend on drover-agent. A test drives it with
 * one JSON object per line on stdin and reads what happened, one JSON
 * object per line, on stdout.
 *
 * Commands (stdin), each naming the agent it is about ("agent"):
 *   {"op":"connect", "agent", "host_id", "host_name", "cpus", "mem_mib",
 *    "reserved_cpus", "reserved_mem_mib", "cpu_flags":[..], "labels":{..},
 *    "migration_address", "vms":[{"vm_id","state"}], "auto":true,
 *    "heartbeat":true, "first":"hello"|"heartbeat"}
 *        connects and sends Hello (or, with "first", something else first);
 *   {"op":"connect_many", "prefix", "count", "cpus", "mem_mib"}: count
 *        agents "PREFIX-N" (host ids and names alike), answering on their own;
 *   {"op":"close", "agent"}             closes the connection;
 *   {"op":"heartbeats", "agent", "on"}  stops or resumes its heartbeats;
 *   {"op":"auto", "agent", "on"}        on: commands are answered as an agent
 *        would (the VM table follows); off: reported, left for "answer";
 *   {"op":"answer", "agent", "seq", "ok", "state", "pid", "error_code",
 *    "message"}                          a CommandResult for command seq;
 *   {"op":"error", "agent", "reply_to", "code", "message"}  an Error;
 *   {"op":"vm_event", "agent", "vm_id", "state", "event", "pid",
 *    "exit_status", "exit_reason", "detail"}  a VmEvent (the table follows);
 *   {"op":"sync", "id"}                 answered {"ev":"sync","id"} in order.
 * Reports (stdout): welcome, command, error, closed, connected_many, sync,
 * bad (a command line it could not use). */
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conn.h"
#include "evloop.h"
#include "frame.h"

struct vm {
	char id[64];
	char state[16];
	int pid;
};

struct agent {
	struct agent *next;
	struct fake *fake;
	char name[64], host_id[80], host_name[80];
	struct conn *c;
	bool auto_answer, heartbeat, welcomed, quiet;
	uint32_t cpus, reserved_cpus;
	uint64_t mem, reserved_mem;
	json_t *cpu_flags, *labels;
	char migration_address[64];
	struct vm vms[64];
	size_t nvms;
	struct evloop_timer *beat;
	int next_pid;
};

struct fake {
	struct evloop *loop;
	const char *addr;
	struct agent *agents;
	char line[1 << 16];
	size_t len;
	unsigned many_pending;         /* connect_many: welcomes still to come */
};

static void emit(json_t *doc)
{
	char *text = json_dumps(doc, JSON_COMPACT);

	if (text) {
		printf("%s\n", text);
		fflush(stdout);
	}
	free(text);
	json_decref(doc);
}

static struct agent *find(struct fake *f, const char *name)
{
	for (struct agent *a = f->agents; a; a = a->next) {
		if (name && !strcmp(a->name, name))
			return a;
	}
	return NULL;
}

static struct vm *vm_find(struct agent *a, const char *id, bool create)
{
	for (size_t i = 0; i < a->nvms; i++) {
		if (!strcmp(a->vms[i].id, id))
			return &a->vms[i];
	}
	if (!create || a->nvms == sizeof(a->vms) / sizeof(a->vms[0]))
		return NULL;
	memset(&a->vms[a->nvms], 0, sizeof(a->vms[0]));
	snprintf(a->vms[a->nvms].id, sizeof(a->vms[0].id), "%s", id);
	snprintf(a->vms[a->nvms].state, sizeof(a->vms[0].state), "defined");
	return &a->vms[a->nvms++];
}

static void vm_forget(struct agent *a, struct vm *v)
{
	*v = a->vms[--a->nvms];
}

/* ---- messages out ---- */

static Drover__Inventory *inventory(struct agent *a, Drover__Inventory *inv, char **flags)
{
	size_t n = json_array_size(a->cpu_flags);

	drover__inventory__init(inv);
	inv->cpu_model = "Fake CPU @ 3.00GHz";
	inv->cpus = a->cpus;
	for (size_t i = 0; i < n && i < 64; i++)
		flags[i] = (char *)json_string_value(json_array_get(a->cpu_flags, i));
	inv->cpu_flags = flags;
	inv->n_cpu_flags = n < 64 ? n : 64;
	inv->virt = "none";
	inv->ept = "not available";
	inv->vpid = "not available";
	inv->mem_total = a->mem;
	inv->mem_available = a->mem / 2;
	inv->kvm = true;
	inv->kvm_max_vcpus = 1024;
	inv->reserved_cpus = a->reserved_cpus;
	inv->reserved_mem = a->reserved_mem;
	inv->load1 = 0.25;
	inv->kernel = "6.1.0-fake";
	return inv;
}

static void statuses(struct agent *a, Drover__VmStatus *st, Drover__VmStatus **ptrs, size_t *n)
{
	for (size_t i = 0; i < a->nvms; i++) {
		drover__vm_status__init(&st[i]);
		st[i].vm_id = a->vms[i].id;
		st[i].state = a->vms[i].state;
		st[i].pid = a->vms[i].pid;
		ptrs[i] = &st[i];
	}
	*n = a->nvms;
}

static void send_hello(struct agent *a)
{
	Drover__Envelope env = DROVER__ENVELOPE__INIT;
	Drover__Hello h = DROVER__HELLO__INIT;
	Drover__Inventory inv;
	Drover__VmStatus st[64], *ptrs[64];
	Drover__Hello__LabelsEntry entries[32], *eptrs[32];
	char *flags[64];
	const char *k;
	json_t *v;
	size_t n = 0;

	h.host_id = a->host_id;
	h.host_name = a->host_name;
	h.agent_version = "fake-0.1";
	h.migration_address = a->migration_address;
	h.inventory = inventory(a, &inv, flags);
	statuses(a, st, ptrs, &h.n_vms);
	h.vms = ptrs;
	json_object_foreach(a->labels, k, v) {
		if (n == 32)
			break;
		drover__hello__labels_entry__init(&entries[n]);
		entries[n].key = (char *)k;
		entries[n].value = (char *)json_string_value(v);
		eptrs[n] = &entries[n];
		n++;
	}
	h.labels = eptrs;
	h.n_labels = n;
	env.body_case = DROVER__ENVELOPE__BODY_HELLO;
	env.hello = &h;
	conn_send(a->c, &env);
}

static void send_heartbeat(struct agent *a)
{
	Drover__Envelope env = DROVER__ENVELOPE__INIT;
	Drover__Heartbeat hb = DROVER__HEARTBEAT__INIT;
	Drover__Inventory inv;
	Drover__VmStatus st[64], *ptrs[64];
	char *flags[64];

	hb.inventory = inventory(a, &inv, flags);
	statuses(a, st, ptrs, &hb.n_vms);
	hb.vms = ptrs;
	env.body_case = DROVER__ENVELOPE__BODY_HEARTBEAT;
	env.heartbeat = &hb;
	conn_send(a->c, &env);
}

static void send_result(struct agent *a, uint64_t reply_to, bool ok, const char *vm_id,
			const char *state, int pid, const char *code, const char *msg)
{
	Drover__Envelope env = DROVER__ENVELOPE__INIT;
	Drover__CommandResult r = DROVER__COMMAND_RESULT__INIT;
	Drover__VmStatus st = DROVER__VM_STATUS__INIT;

	r.ok = ok;
	r.error_code = (char *)(code ? code : "");
	r.message = (char *)(msg ? msg : "");
	if (state && *state) {
		st.vm_id = (char *)vm_id;
		st.state = (char *)state;
		st.pid = pid;
		if (!strcmp(state, "stopped"))
			st.exit_reason = "host-qmp-quit";
		r.status = &st;
	}
	env.reply_to = reply_to;
	env.body_case = DROVER__ENVELOPE__BODY_RESULT;
	env.result = &r;
	conn_send(a->c, &env);
}

/* ---- messages in ---- */

static void on_beat(void *opaque, struct evloop_timer *t)
{
	struct agent *a = opaque;

	if (a->c && a->heartbeat)
		send_heartbeat(a);
}

/* What a well-behaved agent does with a command (all idempotent). */
static void answer_auto(struct agent *a, uint64_t seq, const Drover__Command *cmd)
{
	const char *id = NULL;
	struct vm *v;

	switch (cmd->kind_case) {
	case DROVER__COMMAND__KIND_DEFINE:
		v = vm_find(a, cmd->define->vm_id, true);
		send_result(a, seq, v != NULL, cmd->define->vm_id, v ? v->state : NULL, 0,
			    v ? NULL : "no-room", v ? NULL : "the fake agent's VM table is full");
		return;
	case DROVER__COMMAND__KIND_START: id = cmd->start->vm_id; break;
	case DROVER__COMMAND__KIND_STOP: id = cmd->stop->vm_id; break;
	case DROVER__COMMAND__KIND_REBOOT: id = cmd->reboot->vm_id; break;
	case DROVER__COMMAND__KIND_PAUSE: id = cmd->pause->vm_id; break;
	case DROVER__COMMAND__KIND_RESUME: id = cmd->resume->vm_id; break;
	case DROVER__COMMAND__KIND_DESTROY: id = cmd->destroy->vm_id; break;
	case DROVER__COMMAND__KIND_UNDEFINE: id = cmd->undefine->vm_id; break;
	default:
		send_result(a, seq, false, NULL, NULL, 0, "unknown-command", "no such command");
		return;
	}
	v = vm_find(a, id, false);
	if (!v) {
		send_result(a, seq, false, id, NULL, 0, "not-found", "no such VM on this host");
		return;
	}
	switch (cmd->kind_case) {
	case DROVER__COMMAND__KIND_START:
	case DROVER__COMMAND__KIND_RESUME:
	case DROVER__COMMAND__KIND_REBOOT:
		if (!v->pid)
			v->pid = a->next_pid++;
		snprintf(v->state, sizeof(v->state), "running");
		break;
	case DROVER__COMMAND__KIND_PAUSE:
		snprintf(v->state, sizeof(v->state), "paused");
		break;
	case DROVER__COMMAND__KIND_STOP:
	case DROVER__COMMAND__KIND_DESTROY:
		v->pid = 0;
		snprintf(v->state, sizeof(v->state), "stopped");
		break;
	case DROVER__COMMAND__KIND_UNDEFINE:
		send_result(a, seq, true, id, NULL, 0, NULL, NULL);
		vm_forget(a, v);
		return;
	default:
		break;
	}
	send_result(a, seq, true, id, v->state, v->pid, NULL, NULL);
}

static const char *command_kind(const Drover__Command *cmd, const char **vm_id)
{
	switch (cmd->kind_case) {
	case DROVER__COMMAND__KIND_DEFINE: *vm_id = cmd->define->vm_id; return "define";
	case DROVER__COMMAND__KIND_START: *vm_id = cmd->start->vm_id; return "start";
	case DROVER__COMMAND__KIND_STOP: *vm_id = cmd->stop->vm_id; return "stop";
	case DROVER__COMMAND__KIND_REBOOT: *vm_id = cmd->reboot->vm_id; return "reboot";
	case DROVER__COMMAND__KIND_PAUSE: *vm_id = cmd->pause->vm_id; return "pause";
	case DROVER__COMMAND__KIND_RESUME: *vm_id = cmd->resume->vm_id; return "resume";
	case DROVER__COMMAND__KIND_DESTROY: *vm_id = cmd->destroy->vm_id; return "destroy";
	case DROVER__COMMAND__KIND_UNDEFINE: *vm_id = cmd->undefine->vm_id; return "undefine";
	default: *vm_id = ""; return "unknown";
	}
}

static void on_message(struct conn *c, const Drover__Envelope *env, void *opaque)
{
	struct agent *a = opaque;
	struct fake *f = a->fake;

	switch (env->body_case) {
	case DROVER__ENVELOPE__BODY_WELCOME:
		a->welcomed = true;
		if (!a->quiet)
			emit(json_pack("{s:s,s:s,s:i,s:s}", "ev", "welcome", "agent", a->name,
				       "interval_ms", (int)env->welcome->heartbeat_interval_ms,
				       "host_id", env->welcome->host_id));
		evloop_timer_add(f->loop, env->welcome->heartbeat_interval_ms,
					 env->welcome->heartbeat_interval_ms, on_beat, a, &a->beat);
		if (a->quiet && f->many_pending && !--f->many_pending)
			emit(json_pack("{s:s}", "ev", "connected_many"));
		break;
	case DROVER__ENVELOPE__BODY_COMMAND: {
		const char *vm_id, *kind = command_kind(env->command, &vm_id);
		json_t *ev = json_pack("{s:s,s:s,s:I,s:s,s:s}", "ev", "command", "agent", a->name,
				       "seq", (json_int_t)env->seq, "kind", kind, "vm_id", vm_id);

		if (env->command->kind_case == DROVER__COMMAND__KIND_DEFINE)
			json_object_set_new(ev, "definition",
					    json_string(env->command->define->definition_json));
		if (env->command->kind_case == DROVER__COMMAND__KIND_STOP) {
			json_object_set_new(ev, "timeout_ms",
					    json_integer(env->command->stop->timeout_ms));
			json_object_set_new(ev, "force", json_boolean(env->command->stop->force));
		}
		if (!a->quiet)
			emit(ev);
		else
			json_decref(ev);
		if (a->auto_answer)
			answer_auto(a, env->seq, env->command);
		break;
	}
	case DROVER__ENVELOPE__BODY_ERROR:
		emit(json_pack("{s:s,s:s,s:s,s:s,s:I}", "ev", "error", "agent", a->name, "code",
			       env->error->code, "message", env->error->message, "reply_to",
			       (json_int_t)env->reply_to));
		break;
	default:
		break;
	}
}

static void on_closed(struct conn *c, int err, const char *why, void *opaque)
{
	struct agent *a = opaque;

	a->c = NULL;
	evloop_timer_del(a->beat);
	a->beat = NULL;
	emit(json_pack("{s:s,s:s,s:s}", "ev", "closed", "agent", a->name, "why", why));
}

static const struct conn_handler handler = { on_message, on_closed };

/* ---- commands ---- */

static void bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void bad(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	emit(json_pack("{s:s,s:s}", "ev", "bad", "why", msg));
}

static int dial(struct fake *f, struct agent *a)
{
	char err[256];
	struct pollfd p;
	int fd;

	if (conn_connect_start(f->addr, &fd, err, sizeof(err)))
		return -1;
	p.fd = fd;
	p.events = POLLOUT;
	if (poll(&p, 1, 5000) != 1 || conn_connect_result(fd)) {
		close(fd);
		return -1;
	}
	return conn_open(f->loop, fd, NULL, &handler, a, &a->c);
}

static const char *str(const json_t *cmd, const char *key, const char *dflt)
{
	const char *s = json_string_value(json_object_get(cmd, key));

	return s ? s : dflt;
}

static json_int_t num(const json_t *cmd, const char *key, json_int_t dflt)
{
	json_t *v = json_object_get(cmd, key);

	return json_is_integer(v) ? json_integer_value(v) : dflt;
}

static bool flag(const json_t *cmd, const char *key, bool dflt)
{
	json_t *v = json_object_get(cmd, key);

	return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static struct agent *agent_new(struct fake *f, const char *name)
{
	struct agent *a = find(f, name);

	if (!a) {
		a = calloc(1, sizeof(*a));
		if (!a)
			return NULL;
		a->fake = f;
		a->next = f->agents;
		f->agents = a;
		a->next_pid = 1000;
		snprintf(a->name, sizeof(a->name), "%s", name);
	}
	return a;
}

static void cmd_connect(struct fake *f, const json_t *cmd, const char *name)
{
	struct agent *a = agent_new(f, name);
	const char *first = str(cmd, "first", "hello");
	json_t *vms = json_object_get(cmd, "vms"), *v;
	size_t i;

	if (!a || a->c) {
		bad("agent %s is connected already", name);
		return;
	}
	snprintf(a->host_id, sizeof(a->host_id), "%s", str(cmd, "host_id", name));
	snprintf(a->host_name, sizeof(a->host_name), "%s", str(cmd, "host_name", name));
	snprintf(a->migration_address, sizeof(a->migration_address), "%s",
		 str(cmd, "migration_address", "127.0.0.1:7100"));
	a->cpus = (uint32_t)num(cmd, "cpus", 8);
	a->mem = (uint64_t)num(cmd, "mem_mib", 16384) << 20;
	a->reserved_cpus = (uint32_t)num(cmd, "reserved_cpus", 0);
	a->reserved_mem = (uint64_t)num(cmd, "reserved_mem_mib", 0) << 20;
	a->auto_answer = flag(cmd, "auto", true);
	a->heartbeat = flag(cmd, "heartbeat", true);
	json_decref(a->cpu_flags);
	json_decref(a->labels);
	a->cpu_flags = json_incref(json_object_get(cmd, "cpu_flags") ?: json_array());
	a->labels = json_incref(json_object_get(cmd, "labels") ?: json_object());
	if (json_is_array(vms)) {
		a->nvms = 0;
		json_array_foreach(vms, i, v) {
			struct vm *vm = vm_find(a, str(v, "vm_id", "?"), true);

			if (vm) {
				snprintf(vm->state, sizeof(vm->state), "%s", str(v, "state", "defined"));
				vm->pid = (int)num(v, "pid", 0);
			}
		}
	}
	if (dial(f, a)) {
		bad("agent %s: cannot connect to %s", name, f->addr);
		return;
	}
	if (!strcmp(first, "heartbeat"))
		send_heartbeat(a);
	else
		send_hello(a);
}

static void cmd_connect_many(struct fake *f, const json_t *cmd)
{
	const char *prefix = str(cmd, "prefix", "bench");
	json_int_t count = num(cmd, "count", 1);

	for (json_int_t i = 0; i < count; i++) {
		char name[64];
		struct agent *a;

		snprintf(name, sizeof(name), "%s-%04lld", prefix, (long long)i);
		a = agent_new(f, name);
		if (!a || a->c)
			continue;
		snprintf(a->host_id, sizeof(a->host_id), "%s", name);
		snprintf(a->host_name, sizeof(a->host_name), "%s", name);
		snprintf(a->migration_address, sizeof(a->migration_address), "127.0.0.1:7100");
		a->cpus = (uint32_t)num(cmd, "cpus", 64);
		a->mem = (uint64_t)num(cmd, "mem_mib", 262144) << 20;
		a->auto_answer = true;
		a->heartbeat = true;
		a->quiet = true;
		a->cpu_flags = json_array();
		a->labels = json_object();
		if (dial(f, a)) {
			bad("agent %s: cannot connect to %s", name, f->addr);
			continue;
		}
		f->many_pending++;
		send_hello(a);
	}
}

static void cmd_vm_event(struct agent *a, const json_t *cmd)
{
	Drover__Envelope env = DROVER__ENVELOPE__INIT;
	Drover__VmEvent ev = DROVER__VM_EVENT__INIT;
	Drover__VmStatus st = DROVER__VM_STATUS__INIT;
	struct vm *v = vm_find(a, str(cmd, "vm_id", ""), true);

	st.vm_id = (char *)str(cmd, "vm_id", "");
	st.state = (char *)str(cmd, "state", "stopped");
	st.pid = (int32_t)num(cmd, "pid", 0);
	st.exit_status = (int32_t)num(cmd, "exit_status", 0);
	st.exit_reason = (char *)str(cmd, "exit_reason", "");
	if (v) {
		snprintf(v->state, sizeof(v->state), "%s", st.state);
		v->pid = st.pid;
	}
	ev.status = &st;
	ev.event = (char *)str(cmd, "event", st.state);
	ev.detail = (char *)str(cmd, "detail", "");
	env.body_case = DROVER__ENVELOPE__BODY_VM_EVENT;
	env.vm_event = &ev;
	conn_send(a->c, &env);
}

static void cmd_error(struct agent *a, const json_t *cmd)
{
	conn_send_error(a->c, (uint64_t)num(cmd, "reply_to", 0), str(cmd, "code", "x"), "%s",
			str(cmd, "message", ""));
}

static void command(struct fake *f, const char *line)
{
	json_t *cmd = json_loads(line, 0, NULL);
	const char *op = str(cmd, "op", ""), *name = str(cmd, "agent", NULL);
	struct agent *a = find(f, name);

	if (!cmd) {
		bad("not JSON: %s", line);
		return;
	}
	if (!strcmp(op, "connect")) {
		cmd_connect(f, cmd, name ? name : "agent");
	} else if (!strcmp(op, "connect_many")) {
		cmd_connect_many(f, cmd);
	} else if (!strcmp(op, "sync")) {
		emit(json_pack("{s:s,s:I}", "ev", "sync", "id", num(cmd, "id", 0)));
	} else if (!a || !a->c) {
		bad("%s: agent %s is not connected", op, name ? name : "(none)");
	} else if (!strcmp(op, "close")) {
		struct conn *c = a->c;

		a->c = NULL;
		evloop_timer_del(a->beat);
		a->beat = NULL;
		conn_close(c);
	} else if (!strcmp(op, "heartbeats")) {
		a->heartbeat = flag(cmd, "on", true);
	} else if (!strcmp(op, "auto")) {
		a->auto_answer = flag(cmd, "on", true);
	} else if (!strcmp(op, "answer")) {
		const char *vm_id = str(cmd, "vm_id", "");
		const char *state = str(cmd, "state", NULL);
		struct vm *v = *vm_id ? vm_find(a, vm_id, true) : NULL;

		if (v && state)
			snprintf(v->state, sizeof(v->state), "%s", state);
		send_result(a, (uint64_t)num(cmd, "seq", 0), flag(cmd, "ok", true), vm_id, state,
			    (int)num(cmd, "pid", 0), str(cmd, "error_code", NULL),
			    str(cmd, "message", NULL));
	} else if (!strcmp(op, "error")) {
		cmd_error(a, cmd);
	} else if (!strcmp(op, "vm_event")) {
		cmd_vm_event(a, cmd);
	} else if (!strcmp(op, "heartbeat_now")) {
		send_heartbeat(a);
	} else {
		bad("unknown op '%s'", op);
	}
	json_decref(cmd);
}

static void on_stdin(void *opaque, int fd, uint32_t events)
{
	struct fake *f = opaque;
	ssize_t n = read(fd, f->line + f->len, sizeof(f->line) - 1 - f->len);
	char *nl;

	if (n <= 0) {
		evloop_stop(f->loop);
		return;
	}
	f->len += (size_t)n;
	f->line[f->len] = '\0';
	while ((nl = strchr(f->line, '\n'))) {
		*nl = '\0';
		if (*f->line)
			command(f, f->line);
		f->len -= (size_t)(nl + 1 - f->line);
		memmove(f->line, nl + 1, f->len + 1);
	}
	if (f->len == sizeof(f->line) - 1)
		f->len = 0;     /* a line too long for anyone: dropped */
}

int main(int argc, char **argv)
{
	struct fake f = { 0 };

	if (argc != 2) {
		fprintf(stderr, "usage: ctl-fakeagent HOST:PORT (commands on stdin)\n");
		return 2;
	}
	f.addr = argv[1];
	if (evloop_new(&f.loop) || evloop_add(f.loop, 0, EPOLLIN, on_stdin, &f))
		return 1;
	evloop_run(f.loop);
	while (f.agents) {
		struct agent *a = f.agents;

		f.agents = a->next;
		if (a->c)
			conn_close(a->c);
		evloop_timer_del(a->beat);
		json_decref(a->cpu_flags);
		json_decref(a->labels);
		free(a);
	}
	evloop_free(f.loop);
	return 0;
}
