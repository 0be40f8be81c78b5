/* The operation engine.
 *
 * Steps of each kind (every step but "remove" is one Command to the agent
 * of the VM's host; the VM's state while the step runs, then after it):
 *
 *   create  define  (scheduling -> defined) -> start when "start" -> done
 *   start   start   (starting -> running)   -> done
 *   stop    stop    (stopping -> stopped)   -> done
 *   reboot  reboot  (running -> running)    -> done
 *   pause   pause   (running -> paused)     -> done
 *   resume  resume  (paused -> running)     -> done
 *   delete  stop (deleting) -> undefine (deleting) -> remove (the row goes) -> done
 *
 * An operation's state:
 *
 *                       step_enter()                       step_enter(), agent connected
 *   ops_create/_action ─────────────▶ pending ─────────────────────────────▶ running
 *                                       ▲  │                                   │  │
 *     ops_agent_disconnected():         │  │ tick(): deadline passed           │  │
 *     the command is lost; re-sent by   └──┼───────────────────────────────────┘  │
 *     ops_agent_connected() -> step_enter()│                                      │
 *                                          ▼                                      │
 *                  failed ◀── fail() ── (result not ok, deadline, superseded) ◀───┤
 *                  succeeded ◀── finish() ◀── step_done(): no step left ◀─────────┘
 *                                             (else step_enter() of the next step)
 *
 * Invariants:
 *   (1) step_enter persists the operation's step and state (and the VM's
 *       state for that step) in one transaction before the command goes
 *       out; a restart re-enters the persisted step (ops_start), sending
 *       its command again: commands are idempotent on the agent.
 *   (2) An operation in memory is one in the store in state pending or
 *       running, and the other way round; finish() and fail() persist the
 *       end before dropping it.
 *   (3) One operation at a time per VM (ops_action refuses a second,
 *       except delete, which fails the one in flight first).
 *   (4) A result counts only for the seq the operation last sent: an
 *       answer to a command sent before a reconnect or a restart is
 *       ignored, since the command was sent again. */
#include "ops.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agents.h"
#include "common.h"
#include "evloop.h"
#include "log.h"
#include "store.h"
#include "util.h"

struct op {
	struct op *next;
	struct store_op row;           /* as persisted; its strings are owned */
	json_t *params;                /* row.params, parsed */
	uint64_t seq;                  /* of the command in flight; 0: none */
	const char *sent_state;        /* the reported VM state of the last result */
	Drover__VmStatus *status;      /* the last result's status (a copy), or NULL */
};

struct ops {
	struct ctl *ctl;
	struct op *active;
	struct evloop_timer *tick;
};

static const char *const vm_states[] = {
	"defined", "scheduling", "starting", "running", "paused", "stopping", "stopped",
	"crashed", "deleting", "error", "unknown",
};

bool ops_vm_state_valid(const char *s)
{
	for (size_t i = 0; i < ARRAY_SIZE(vm_states); i++) {
		if (!strcmp(vm_states[i], s))
			return true;
	}
	return false;
}

/* ---- steps ---- */

struct step {
	const char *name;
	const char *vm_during;         /* the VM's state while it runs (NULL: unchanged) */
	const char *vm_after;          /* and after it succeeded (NULL: unchanged) */
	const char *doing;             /* for messages: "defining" */
	int progress;                  /* when it starts */
};

static const struct step step_define = { "define", "scheduling", "defined", "defining", 10 };
static const struct step step_start = { "start", "starting", "running", "starting", 50 };
static const struct step step_stop = { "stop", "stopping", "stopped", "stopping", 10 };
static const struct step step_reboot = { "reboot", NULL, "running", "rebooting", 10 };
static const struct step step_pause = { "pause", NULL, "paused", "pausing", 10 };
static const struct step step_resume = { "resume", NULL, "running", "resuming", 10 };
static const struct step step_del_stop = { "stop", "deleting", "deleting", "stopping", 10 };
static const struct step step_undefine = { "undefine", "deleting", "deleting", "undefining",
					    60 };
static const struct step step_remove = { "remove", "deleting", NULL, "removing", 90 };

static bool is_kind(const struct op *op, const char *kind)
{
	return !strcmp(op->row.kind, kind);
}

static const struct step *step_of(const struct op *op, const char *name)
{
	static const struct step *const plain[] = {
		&step_start, &step_stop, &step_reboot, &step_pause, &step_resume,
	};

	if (is_kind(op, "delete")) {
		if (!strcmp(name, "stop"))
			return &step_del_stop;
		if (!strcmp(name, "undefine"))
			return &step_undefine;
		if (!strcmp(name, "remove"))
			return &step_remove;
		return NULL;
	}
	if (!strcmp(name, "define"))
		return is_kind(op, "create") ? &step_define : NULL;
	for (size_t i = 0; i < ARRAY_SIZE(plain); i++) {
		if (!strcmp(plain[i]->name, name))
			return plain[i];
	}
	return NULL;
}

/* The step after cur, or NULL when the operation is done. */
static const struct step *next_step(const struct op *op, const struct step *cur)
{
	if (cur == &step_define && json_is_true(json_object_get(op->params, "start")))
		return &step_start;
	if (cur == &step_del_stop)
		return &step_undefine;
	if (cur == &step_undefine)
		return &step_remove;
	return NULL;
}

/* ---- bookkeeping ---- */

static void op_free(struct op *op)
{
	store_op_clear(&op->row);
	json_decref(op->params);
	if (op->status)
		drover__vm_status__free_unpacked(op->status, NULL);
	free(op);
}

static void op_forget(struct ops *ops, struct op *op)
{
	for (struct op **p = &ops->active; *p; p = &(*p)->next) {
		if (*p == op) {
			*p = op->next;
			break;
		}
	}
	op_free(op);
}

static struct op *op_for_vm(struct ops *ops, const char *vm_id)
{
	for (struct op *op = ops->active; op; op = op->next) {
		if (op->row.vm_id && !strcmp(op->row.vm_id, vm_id))
			return op;
	}
	return NULL;
}

static int set_str(char **slot, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int set_str(char **slot, const char *fmt, ...)
{
	char *s = NULL;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -ENOMEM;
	free(*slot);
	*slot = s;
	return 0;
}

static const char *host_label(struct ops *ops, const char *host_id, char *buf, size_t len)
{
	struct store_host h = { 0 };

	if (host_id && !store_host_get(ops->ctl->store, host_id, &h))
		snprintf(buf, len, "%s", h.name);
	else
		snprintf(buf, len, "%s", host_id ? host_id : "(none)");
	store_host_clear(&h);
	return buf;
}

/* Persists op's row (and the VM's state when vm_state is set) together. */
static int persist(struct ops *ops, struct op *op, const char *vm_state)
{
	struct store *s = ops->ctl->store;
	int64_t now = ctl_now_ms();
	int ret = store_begin(s);

	if (ret)
		return ret;
	ret = store_op_update(s, &op->row, now);
	if (!ret && vm_state && op->row.vm_id) {
		ret = store_vm_set_state(s, op->row.vm_id, vm_state, now);
		if (ret == -ENOENT)
			ret = 0;        /* a delete that already removed it */
	}
	ret = store_end_with(s, ret);
	if (ret)
		log_error("operation %s: cannot record its state: %s", op->row.id, strerror(-ret));
	return ret;
}

/* ---- agent commands ---- */

static int build_and_send(struct ops *ops, struct op *op, const struct step *st)
{
	Drover__Command cmd = DROVER__COMMAND__INIT;
	Drover__VmRef ref = DROVER__VM_REF__INIT;
	Drover__StopVm stop = DROVER__STOP_VM__INIT;
	Drover__DefineVm def = DROVER__DEFINE_VM__INIT;
	struct store_vm vm = { 0 };
	char *definition = NULL;
	json_t *doc = NULL;
	int ret = 0;

	ref.vm_id = op->row.vm_id;
	if (st == &step_define) {
		ret = store_vm_get(ops->ctl->store, op->row.vm_id, &vm);
		if (!ret) {
			doc = json_loads(vm.definition, 0, NULL);
			definition = doc ? vmdef_agent_json(doc, vm.id) : NULL;
			ret = definition ? 0 : -ENOMEM;
		}
		def.vm_id = op->row.vm_id;
		def.definition_json = definition;
		cmd.kind_case = DROVER__COMMAND__KIND_DEFINE;
		cmd.define = &def;
	} else if (!strcmp(st->name, "stop")) {
		json_t *t = json_object_get(op->params, "timeout_s");

		stop.vm_id = op->row.vm_id;
		stop.force = json_is_true(json_object_get(op->params, "force"));
		stop.timeout_ms = (uint32_t)(json_is_integer(t) ? json_integer_value(t)
								 : OPS_DEFAULT_STOP_TIMEOUT_S) * 1000u;
		cmd.kind_case = DROVER__COMMAND__KIND_STOP;
		cmd.stop = &stop;
	} else if (st == &step_start) {
		cmd.kind_case = DROVER__COMMAND__KIND_START;
		cmd.start = &ref;
	} else if (st == &step_reboot) {
		cmd.kind_case = DROVER__COMMAND__KIND_REBOOT;
		cmd.reboot = &ref;
	} else if (st == &step_pause) {
		cmd.kind_case = DROVER__COMMAND__KIND_PAUSE;
		cmd.pause = &ref;
	} else if (st == &step_resume) {
		cmd.kind_case = DROVER__COMMAND__KIND_RESUME;
		cmd.resume = &ref;
	} else if (st == &step_undefine) {
		cmd.kind_case = DROVER__COMMAND__KIND_UNDEFINE;
		cmd.undefine = &ref;
	} else {
		ret = -EINVAL;
	}
	if (!ret)
		ret = agents_command(ops->ctl->agents, op->row.host_id, &cmd, op->row.id, &op->seq);
	free(definition);
	json_decref(doc);
	store_vm_clear(&vm);
	return ret;
}

static void fail(struct ops *ops, struct op *op, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void finish(struct ops *ops, struct op *op, const struct step *last);
static void remove_vm(struct ops *ops, struct op *op);

/* Enters step st (or re-enters it after a restart or a reconnect):
 * persisted first, then its command sent if the agent is there. */
static void step_enter(struct ops *ops, struct op *op, const struct step *st)
{
	bool connected = agents_connected(ops->ctl->agents, op->row.host_id);
	char host[80];
	int ret;

	if (st == &step_remove) {
		remove_vm(ops, op);
		return;
	}
	host_label(ops, op->row.host_id, host, sizeof(host));
	op->seq = 0;
	set_str(&op->row.step, "%s", st->name);
	set_str(&op->row.state, "%s", connected ? "running" : "pending");
	op->row.progress = st->progress;
	if (connected)
		set_str(&op->row.message, "%s: waiting for host %s's answer", st->doing, host);
	else
		set_str(&op->row.message, "%s: waiting for host %s's agent to connect", st->doing,
			host);
	if (persist(ops, op, st->vm_during))
		return;     /* nothing sent; the deadline ends it if the store stays broken */
	if (!connected)
		return;
	ret = build_and_send(ops, op, st);
	if (ret == -ENOENT) {
		fail(ops, op, "not-found", "the VM is gone from the database");
	} else if (ret) {
		op->seq = 0;
		set_str(&op->row.state, "pending");
		set_str(&op->row.message, "%s: could not send the command to host %s (%s); "
			"sent again when its agent reconnects", st->doing, host, strerror(-ret));
		persist(ops, op, NULL);
	}
}

/* Maps an agent's state word to the VM's, or NULL for one we do not know. */
static const char *reported_state(const char *agent_state)
{
	static const char *const ok[] = { "defined", "starting", "running", "paused", "stopping",
					  "stopped", "crashed" };

	for (size_t i = 0; agent_state && i < ARRAY_SIZE(ok); i++) {
		if (!strcmp(ok[i], agent_state))
			return ok[i];
	}
	return NULL;
}

/* Writes what the agent said about the VM (pid, exit) with state. */
static int vm_status_write(struct store *s, const char *vm_id, const char *state,
			   const Drover__VmStatus *st, int64_t now)
{
	bool ended = st && (!strcmp(state, "stopped") || !strcmp(state, "crashed"));

	if (!st)
		return store_vm_set_state(s, vm_id, state, now);
	return store_vm_set_status(s, vm_id, state, st->pid > 0, st->pid, ended,
				   st->exit_status, ended && st->exit_reason && *st->exit_reason ?
				   st->exit_reason : NULL, now);
}

static const char *success_event(const struct op *op)
{
	static const struct { const char *kind, *event; } map[] = {
		{ "start", "vm-started" }, { "stop", "vm-stopped" }, { "reboot", "vm-rebooted" },
		{ "pause", "vm-paused" }, { "resume", "vm-resumed" },
	};

	if (is_kind(op, "create"))
		return json_is_true(json_object_get(op->params, "start")) ? "vm-started"
									  : "vm-defined";
	for (size_t i = 0; i < ARRAY_SIZE(map); i++) {
		if (is_kind(op, map[i].kind))
			return map[i].event;
	}
	return NULL;
}

/* The last step succeeded: the VM takes the state it reached (as the
 * agent reported it, else as expected), the operation succeeds. */
static void finish(struct ops *ops, struct op *op, const struct step *last)
{
	struct store *s = ops->ctl->store;
	const char *state = op->sent_state ? op->sent_state : last->vm_after;
	const char *event = success_event(op);
	int64_t now = ctl_now_ms();
	int ret;

	set_str(&op->row.state, "succeeded");
	op->row.progress = 100;
	set_str(&op->row.message, "done");
	ret = store_begin(s);
	if (!ret)
		ret = store_op_update(s, &op->row, now);
	if (!ret && state)
		ret = vm_status_write(s, op->row.vm_id, state, op->status, now);
	if (!ret && event)
		ret = store_event_add(s, event, op->row.vm_id, op->row.host_id, now,
				      "vm %s: %s succeeded (operation %s); it is %s", op->row.vm_name,
				      op->row.kind, op->row.id, state ? state : "unchanged");
	ret = store_end_with(s, ret);
	if (ret) {
		log_error("operation %s: cannot record its success: %s", op->row.id, strerror(-ret));
		return;     /* stays active; the deadline or a restart settles it */
	}
	log_info("operation %s (%s of vm %s) succeeded", op->row.id, op->row.kind, op->row.vm_name);
	op_forget(ops, op);
}

static void remove_vm(struct ops *ops, struct op *op)
{
	struct store *s = ops->ctl->store;
	int64_t now = ctl_now_ms();
	int ret;

	set_str(&op->row.step, "remove");
	set_str(&op->row.state, "succeeded");
	op->row.progress = 100;
	set_str(&op->row.message, "done: the VM is deleted");
	ret = store_begin(s);
	if (!ret) {
		ret = store_vm_delete(s, op->row.vm_id);
		if (ret == -ENOENT)
			ret = 0;
	}
	if (!ret)
		ret = store_op_update(s, &op->row, now);
	if (!ret)
		ret = store_event_add(s, "vm-deleted", op->row.vm_id, op->row.host_id, now,
				      "vm %s deleted (operation %s)", op->row.vm_name, op->row.id);
	ret = store_end_with(s, ret);
	if (ret) {
		log_error("operation %s: cannot remove vm %s: %s", op->row.id, op->row.vm_name,
			  strerror(-ret));
		return;
	}
	log_info("operation %s: vm %s deleted", op->row.id, op->row.vm_name);
	op_forget(ops, op);
}

/* Ends op as failed. The VM takes the state the agent reported, else
 * "error" when it never got defined, else the state it had before. */
static void fail(struct ops *ops, struct op *op, const char *code, const char *fmt, ...)
{
	struct store *s = ops->ctl->store;
	const char *prev = json_string_value(json_object_get(op->params, "prev_state"));
	const char *state;
	char msg[512];
	int64_t now = ctl_now_ms();
	va_list ap;
	int ret;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (op->sent_state)
		state = op->sent_state;
	else if (!strcmp(op->row.step, "define"))
		state = "error";
	else
		state = prev;
	set_str(&op->row.state, "failed");
	set_str(&op->row.error_code, "%s", code);
	set_str(&op->row.error_message, "%s", msg);
	set_str(&op->row.message, "failed while %s", step_of(op, op->row.step) ?
		step_of(op, op->row.step)->doing : op->row.step);
	ret = store_begin(s);
	if (!ret)
		ret = store_op_update(s, &op->row, now);
	if (!ret && state && op->row.vm_id) {
		ret = vm_status_write(s, op->row.vm_id, state, op->status, now);
		if (ret == -ENOENT)
			ret = 0;
	}
	if (!ret)
		ret = store_event_add(s, "operation-failed", op->row.vm_id, op->row.host_id, now,
				      "%s of vm %s failed (operation %s): %s: %s", op->row.kind,
				      op->row.vm_name, op->row.id, code, msg);
	ret = store_end_with(s, ret);
	if (ret) {
		log_error("operation %s: cannot record its failure: %s", op->row.id, strerror(-ret));
		return;
	}
	log_warn("operation %s (%s of vm %s) failed: %s: %s", op->row.id, op->row.kind,
		 op->row.vm_name, code, msg);
	op_forget(ops, op);
}

/* ---- what the agents say ---- */

static struct op *op_by_id(struct ops *ops, const char *id)
{
	for (struct op *op = ops->active; op; op = op->next) {
		if (!strcmp(op->row.id, id))
			return op;
	}
	return NULL;
}

void ops_command_result(struct ops *ops, const char *op_id, uint64_t seq,
			const Drover__CommandResult *r, const char *code, const char *message)
{
	struct op *op = op_by_id(ops, op_id);
	const struct step *st, *next;
	bool ok;

	if (!op || op->seq != seq) {
		log_debug("a result for operation %s (command %llu) that no longer waits for it",
			  op_id, (unsigned long long)seq);
		return;
	}
	op->seq = 0;
	st = step_of(op, op->row.step);
	if (op->status) {
		drover__vm_status__free_unpacked(op->status, NULL);
		op->status = NULL;
	}
	op->sent_state = NULL;
	if (r && r->status) {
		size_t len = drover__vm_status__get_packed_size(r->status);
		uint8_t *buf = malloc(len + 1);

		if (buf) {
			drover__vm_status__pack(r->status, buf);
			op->status = drover__vm_status__unpack(NULL, len, buf);
			free(buf);
		}
		op->sent_state = reported_state(r->status->state);
	}
	ok = r && r->ok;
	if (!ok && r)
		code = r->error_code && *r->error_code ? r->error_code : "agent-error";
	if (!ok && r)
		message = r->message && *r->message ? r->message : "the agent gave no reason";
	/* Deleting something the host no longer has is what delete wanted. */
	if (!ok && is_kind(op, "delete") && code && !strcmp(code, "not-found")) {
		ok = true;
		op->sent_state = NULL;
	}
	if (!ok) {
		fail(ops, op, code ? code : "agent-error", "%s", message ? message : "?");
		return;
	}
	if (!st) {
		fail(ops, op, "internal", "unknown step '%s'", op->row.step);
		return;
	}
	next = next_step(op, st);
	if (!next) {
		finish(ops, op, st);
		return;
	}
	/* The VM reached the step's state (as reported, or as expected). */
	if (op->sent_state || st->vm_after) {
		int ret = vm_status_write(ops->ctl->store, op->row.vm_id,
					  op->sent_state ? op->sent_state : st->vm_after, op->status,
					  ctl_now_ms());
		if (ret && ret != -ENOENT)
			log_error("vm %s: cannot record its state: %s", op->row.vm_name, strerror(-ret));
	}
	op->sent_state = NULL;
	step_enter(ops, op, next);
}

static const char *state_event(const char *state)
{
	if (!strcmp(state, "running"))
		return "vm-started";
	if (!strcmp(state, "stopped"))
		return "vm-stopped";
	if (!strcmp(state, "crashed"))
		return "vm-crashed";
	if (!strcmp(state, "paused"))
		return "vm-paused";
	return NULL;
}

void ops_vm_report(struct ops *ops, const char *host_id, const Drover__VmStatus *st,
		   const char *event, const char *detail)
{
	struct store *s = ops->ctl->store;
	struct store_vm vm = { 0 };
	const char *state = reported_state(st->state), *ev;
	bool ended;
	int64_t now = ctl_now_ms();
	int ret;

	if (!st->vm_id || !*st->vm_id)
		return;
	if (!state) {
		log_warn("host %s reports vm %s in state '%s', which droverd does not know; "
			 "ignored", host_id, st->vm_id, st->state ? st->state : "");
		return;
	}
	ret = store_vm_get(s, st->vm_id, &vm);
	if (ret) {
		if (ret == -ENOENT)
			log_debug("host %s reports vm %s, which droverd does not know", host_id,
				  st->vm_id);
		return;
	}
	if (!vm.host_id || strcmp(vm.host_id, host_id)) {
		log_warn("host %s reports vm %s (%s), which is placed on %s; ignored", host_id,
			 vm.name, vm.id, vm.host_id ? vm.host_id : "no host");
		goto out;
	}
	/* While an operation drives the VM, its result says where it ends. */
	if (op_for_vm(ops, vm.id))
		goto out;
	ended = !strcmp(state, "stopped") || !strcmp(state, "crashed");
	if (!strcmp(vm.state, state) && vm.has_pid == (st->pid > 0) &&
	    (!vm.has_pid || vm.pid == st->pid) && (!ended || vm.has_exit))
		goto out;      /* nothing new: heartbeats repeat themselves */
	ev = strcmp(vm.state, state) ? state_event(state) : NULL;
	ret = store_begin(s);
	if (!ret)
		ret = vm_status_write(s, vm.id, state, st, now);
	if (!ret && ev)
		ret = store_event_add(s, ev, vm.id, host_id, now, "vm %s is %s%s%s%s%s (was %s)",
				      vm.name, state, ended && st->exit_reason && *st->exit_reason ?
				      ": " : "", ended && st->exit_reason ? st->exit_reason : "",
				      detail && *detail ? "; " : "", detail ? detail : "", vm.state);
	ret = store_end_with(s, ret);
	if (ret)
		log_error("vm %s: cannot record its reported state: %s", vm.name, strerror(-ret));
	else if (ev)
		log_info("vm %s: %s -> %s (reported by its host%s%s)", vm.name, vm.state, state,
			 event ? ", " : "", event ? event : "");
out:
	store_vm_clear(&vm);
}

struct host_vms {
	char **ids, **names;
	size_t n, cap;
	int64_t last;
};

static int collect_vm(const struct store_vm *v, void *opaque)
{
	static const char *const settled[] = { "defined", "running", "paused", "stopped",
					       "crashed" };
	struct host_vms *hv = opaque;
	bool take = false;

	hv->last = v->seq;
	for (size_t i = 0; i < ARRAY_SIZE(settled); i++)
		take |= !strcmp(settled[i], v->state);
	if (!take)
		return 0;
	if (hv->n == hv->cap) {
		size_t cap = hv->cap ? 2 * hv->cap : 16;
		char **ids = realloc(hv->ids, cap * sizeof(*ids));

		if (!ids)
			return -ENOMEM;
		hv->ids = ids;
		ids = realloc(hv->names, cap * sizeof(*ids));
		if (!ids)
			return -ENOMEM;
		hv->names = ids;
		hv->cap = cap;
	}
	hv->ids[hv->n] = strdup(v->id);
	hv->names[hv->n] = strdup(v->name);
	hv->n++;
	return 0;
}

void ops_host_vms(struct ops *ops, const char *host_id, Drover__VmStatus *const *vms, size_t n)
{
	struct store *s = ops->ctl->store;
	struct store_vm_filter f = { .host_id = host_id };
	struct host_vms hv = { 0 };
	bool more = true;
	int ret = 0;

	while (more && !ret)
		ret = store_vm_list(s, &f, hv.last, 500, collect_vm, &hv, &more);
	for (size_t i = 0; !ret && i < hv.n; i++) {
		bool known = false;
		int64_t now = ctl_now_ms();

		if (!hv.ids[i] || !hv.names[i])
			break;
		for (size_t j = 0; j < n && !known; j++)
			known = vms[j] && vms[j]->vm_id && !strcmp(vms[j]->vm_id, hv.ids[i]);
		if (known || op_for_vm(ops, hv.ids[i]))
			continue;
		ret = store_begin(s);
		if (!ret)
			ret = store_vm_set_status(s, hv.ids[i], "unknown", false, 0, false, 0, NULL, now);
		if (!ret)
			ret = store_event_add(s, "vm-lost", hv.ids[i], host_id, now, "vm %s: its host's "
					      "agent does not know it (it said Hello without it)",
					      hv.names[i]);
		ret = store_end_with(s, ret);
		if (!ret)
			log_warn("vm %s: host %s's agent does not know it; its state is unknown",
				 hv.names[i], host_id);
	}
	if (ret)
		log_error("host %s: cannot compare its VMs with the database: %s", host_id,
			  strerror(-ret));
	for (size_t i = 0; i < hv.n; i++) {
		free(hv.ids[i]);
		free(hv.names[i]);
	}
	free(hv.ids);
	free(hv.names);
}

void ops_agent_connected(struct ops *ops, const char *host_id)
{
	struct op *op, *next;

	for (op = ops->active; op; op = next) {
		next = op->next;
		if (op->row.host_id && !strcmp(op->row.host_id, host_id) && !op->seq) {
			const struct step *st = step_of(op, op->row.step);

			if (st)
				step_enter(ops, op, st);
		}
	}
}

void ops_agent_disconnected(struct ops *ops, const char *host_id)
{
	char host[80];

	for (struct op *op = ops->active; op; op = op->next) {
		if (!op->row.host_id || strcmp(op->row.host_id, host_id) || !op->seq)
			continue;
		op->seq = 0;
		set_str(&op->row.state, "pending");
		set_str(&op->row.message, "host %s's agent disconnected before answering; the "
			"command is sent again when it reconnects",
			host_label(ops, host_id, host, sizeof(host)));
		persist(ops, op, NULL);
	}
}

/* ---- deadlines ---- */

static void tick(void *opaque, struct evloop_timer *t)
{
	struct ops *ops = opaque;
	int64_t now = ctl_now_ms();
	struct op *op, *next;
	char host[80];

	for (op = ops->active; op; op = next) {
		next = op->next;
		if (!op->row.deadline || now < op->row.deadline)
			continue;
		host_label(ops, op->row.host_id, host, sizeof(host));
		if (op->seq)
			fail(ops, op, "timeout", "host %s's agent did not answer the %s command in time",
			     host, op->row.step);
		else
			fail(ops, op, "timeout", "host %s's agent was not connected before the "
			     "operation's deadline (%s step)", host, op->row.step);
	}
}

/* ---- new operations ---- */

static struct op *op_new(const char *kind, const struct store_vm *vm, const char *host_id,
			 json_t *params, int64_t deadline)
{
	struct op *op = calloc(1, sizeof(*op));
	char id[CTL_UUID_LEN + 1];

	if (!op || ctl_uuid(id)) {
		free(op);
		json_decref(params);
		return NULL;
	}
	op->params = params;
	op->row.id = strdup(id);
	op->row.kind = strdup(kind);
	op->row.vm_id = strdup(vm->id);
	op->row.vm_name = strdup(vm->name);
	op->row.host_id = host_id ? strdup(host_id) : NULL;
	op->row.state = strdup("pending");
	op->row.step = strdup("new");
	op->row.params = json_dumps(params, JSON_COMPACT | JSON_SORT_KEYS);
	op->row.deadline = deadline;
	if (!op->row.id || !op->row.kind || !op->row.vm_id || !op->row.vm_name ||
	    !op->row.state || !op->row.step || !op->row.params || (host_id && !op->row.host_id)) {
		op_free(op);
		return NULL;
	}
	return op;
}

static int64_t deadline_for(struct ops *ops, const json_t *params, bool stops)
{
	json_t *t = json_object_get(params, "timeout_s");
	int64_t stop_s = stops ? (json_is_integer(t) ? json_integer_value(t)
						     : OPS_DEFAULT_STOP_TIMEOUT_S) : 0;

	return ctl_now_ms() + ((int64_t)ops->ctl->opt.op_timeout_s + stop_s) * 1000;
}

int ops_create(struct ops *ops, const struct vmdef *def, const char *host_id,
	       char vm_id[37], char op_id[37])
{
	struct store *s = ops->ctl->store;
	struct store_label labels[VMDEF_LABELS_MAX];
	struct store_vm vm = { 0 };
	struct op *op;
	int64_t now = ctl_now_ms();
	char *text;
	int ret;

	if (ctl_uuid(vm_id))
		return -EIO;
	text = json_dumps(def->doc, JSON_COMPACT | JSON_SORT_KEYS);
	if (!text)
		return -ENOMEM;
	vm.id = vm_id;
	vm.name = (char *)def->name;
	vm.state = "scheduling";
	vm.host_id = (char *)host_id;
	vm.definition = text;
	vm.vcpus = def->vcpus;
	vm.mem = def->mem;
	vm.affinity_group = (char *)def->placement.affinity_group;
	vm.anti_affinity_group = (char *)def->placement.anti_affinity_group;
	for (size_t i = 0; i < def->nlabels; i++) {
		labels[i].key = def->labels[i].key;
		labels[i].value = def->labels[i].value;
	}
	op = op_new("create", &vm, host_id, json_pack("{s:b,s:s}", "start", def->start,
						     "prev_state", "scheduling"),
		    deadline_for(ops, NULL, false));
	if (!op) {
		free(text);
		return -ENOMEM;
	}
	set_str(&op->row.step, "define");
	ret = store_begin(s);
	if (!ret)
		ret = store_vm_insert(s, &vm, labels, def->nlabels, now);
	if (!ret)
		ret = store_op_insert(s, &op->row, now);
	if (!ret)
		ret = store_event_add(s, "vm-created", vm_id, host_id, now,
				      "vm %s created (%u vCPUs, %llu MiB), placed on host %s",
				      def->name, def->vcpus, (unsigned long long)(def->mem >> 20),
				      host_id);
	ret = store_end_with(s, ret);
	free(text);
	if (ret) {
		op_free(op);
		return ret;
	}
	snprintf(op_id, 37, "%s", op->row.id);
	op->next = ops->active;
	ops->active = op;
	step_enter(ops, op, &step_define);
	return 0;
}

struct action_rule {
	const char *kind;
	const struct step *first;
	const char *const allowed[4];  /* VM states it may start from */
};

static const struct action_rule rules[] = {
	{ "start", &step_start, { "defined", "stopped", "crashed", NULL } },
	{ "stop", &step_stop, { "running", "paused", "unknown", NULL } },
	{ "reboot", &step_reboot, { "running", NULL } },
	{ "pause", &step_pause, { "running", NULL } },
	{ "resume", &step_resume, { "paused", NULL } },
	{ "delete", &step_del_stop, { NULL } },        /* from any state */
};

int ops_action(struct ops *ops, const struct store_vm *vm, const char *kind,
	       const json_t *params, char op_id[37], char *err, size_t errlen)
{
	const struct action_rule *rule = NULL;
	struct op *busy = op_for_vm(ops, vm->id), *op;
	json_t *p;
	int64_t now = ctl_now_ms();
	int ret;

	for (size_t i = 0; i < ARRAY_SIZE(rules) && !rule; i++) {
		if (!strcmp(rules[i].kind, kind))
			rule = &rules[i];
	}
	if (!rule) {
		snprintf(err, errlen, "no action '%s'", kind);
		return -EINVAL;
	}
	if (busy && strcmp(kind, "delete")) {
		snprintf(err, errlen, "vm %s is busy: operation %s (%s) is %s; wait for it to end",
			 vm->name, busy->row.id, busy->row.kind, busy->row.state);
		return -EBUSY;
	}
	if (rule->allowed[0]) {
		bool ok = false;
		char want[128] = "";

		for (size_t i = 0; rule->allowed[i]; i++) {
			ok |= !strcmp(rule->allowed[i], vm->state);
			snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%s",
				 i ? (rule->allowed[i + 1] ? ", " : " or ") : "", rule->allowed[i]);
		}
		if (!ok) {
			snprintf(err, errlen, "vm %s is %s; %s needs it %s", vm->name, vm->state, kind,
				 want);
			return -EPERM;
		}
	}
	if (busy)
		fail(ops, busy, "superseded", "a delete of the VM was asked while it ran");
	p = params ? json_deep_copy(params) : json_object();
	if (!p)
		return -ENOMEM;
	json_object_set_new(p, "prev_state", json_string(vm->state));
	op = op_new(kind, vm, vm->host_id, p,
		    deadline_for(ops, p, !strcmp(kind, "stop") || !strcmp(kind, "delete")));
	if (!op)
		return -ENOMEM;
	set_str(&op->row.step, "%s", rule->first->name);
	ret = store_op_insert(ops->ctl->store, &op->row, now);
	if (ret) {
		op_free(op);
		return ret;
	}
	snprintf(op_id, 37, "%s", op->row.id);
	op->next = ops->active;
	ops->active = op;
	step_enter(ops, op, rule->first);
	return 0;
}

/* ---- start-up and shut-down ---- */

static int load_active(const struct store_op *row, void *opaque)
{
	struct ops *ops = opaque;
	struct op *op = calloc(1, sizeof(*op));

	if (!op)
		return -ENOMEM;
#define DUP(f) op->row.f = row->f ? strdup(row->f) : NULL
	op->row = *row;
	DUP(id); DUP(kind); DUP(vm_id); DUP(vm_name); DUP(host_id); DUP(state); DUP(step);
	DUP(params); DUP(message); DUP(error_code); DUP(error_message);
#undef DUP
	op->params = json_loads(row->params ? row->params : "{}", 0, NULL);
	if (!op->params)
		op->params = json_object();
	/* Appended: the list is walked newest first elsewhere; order does not matter. */
	op->next = ops->active;
	ops->active = op;
	return 0;
}

int ops_start(struct ctl *ctl, struct ops **out)
{
	struct store_op_filter active = { .active = true };
	struct ops *ops = calloc(1, sizeof(*ops));
	struct op *op, *next;
	bool more = true;
	int64_t after = 0;
	int ret;

	if (!ops)
		return -ENOMEM;
	ops->ctl = ctl;
	while (more) {
		ret = store_op_list(ctl->store, &active, after, 500, load_active, ops, &more);
		if (ret)
			goto err;
		if (ops->active)
			after = ops->active->row.seq;
	}
	ret = evloop_timer_add(ctl->loop, 1000, 1000, tick, ops, &ops->tick);
	if (ret)
		goto err;
	*out = ops;
	ctl->ops = ops;
	for (op = ops->active; op; op = next) {
		const struct step *st = step_of(op, op->row.step);

		next = op->next;
		log_info("operation %s (%s of vm %s) resumes at its %s step", op->row.id,
			 op->row.kind, op->row.vm_name, op->row.step);
		if (st)
			step_enter(ops, op, st);
		else
			fail(ops, op, "internal", "unknown step '%s' after a restart", op->row.step);
	}
	return 0;
err:
	ops_stop(ops);
	return ret;
}

void ops_stop(struct ops *ops)
{
	if (!ops)
		return;
	evloop_timer_del(ops->tick);
	while (ops->active) {
		struct op *op = ops->active;

		ops->active = op->next;
		op_free(op);
	}
	free(ops);
}
