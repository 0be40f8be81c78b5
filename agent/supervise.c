/* The VMs of this host and their lifecycle (supervise.h).
 *
 *                 define [sv_define]
 *   (no VM) ───────────────────────────▶ DEFINED ◀─┐
 *      ▲                                    │      │ define again (new definition)
 *      │ undefine [vm_undefine]             │ start [vm_launch]
 *      │ (DEFINED, STOPPED, CRASHED)        ▼
 *      │                                STARTING ──VMM ended first [on_exited]──▶ STOPPED
 *      │                                    │                                    (or CRASHED if
 *      │       control socket answers       │                                     the guest did)
 *      │       [on_ready]                   ▼
 *      │                   pause ┌──────▶ RUNNING ◀──────┐ resume
 *      │        [vm_control,     │          │   ▲         │ [vm_control,
 *      │         on_vmm_event]   │          │   │ reset   │  on_vmm_event]
 *      │                         └─────── PAUSED ────────┘
 *      │                                    │
 *      │        stop, destroy [vm_stop]     │ (also from STARTING: destroy, forced stop)
 *      │                                    ▼
 *      │                                STOPPING ──VMM ended [on_exited]──▶ STOPPED
 *      │                                                                       │
 *      │          RUNNING/PAUSED ──VMM ended on its own [on_exited]──▶ STOPPED │ or CRASHED
 *      └──────────────────────────────────────────────────────────────────────┘
 *                                 start again from STOPPED or CRASHED [vm_launch]
 *
 * Agent restart [sv_load -> vm_take_up]: a VM found STARTING, RUNNING,
 * PAUSED or STOPPING is adopted if its VMM still runs (on_ready: RUNNING or
 * PAUSED, event "adopted"; a STOPPING one is stopped again, as it was
 * asked), or recorded STOPPED/CRASHED from the VMM's files (driver
 * postmortem). Nothing is stopped because the agent restarted.
 *
 * Invariants:
 *   (1) state.json is written before the side effect of a transition: before
 *       a VMM is spawned (STARTING), before it is asked to quit or killed
 *       (STOPPING, with the kind of stop), before a run directory is removed
 *       (renamed to .<id>.deleting first). RUNNING and PAUSED are the VMM's
 *       own facts, recorded when it reports them; a restarted agent asks the
 *       VMM again anyway.
 *   (2) vm->vmm is non-NULL exactly while a VMM process is watched; the VM
 *       struct outlives it (undefine needs no VMM).
 *   (3) Every command gets one reply: at once, when its pending transition
 *       ends (waiters), or when the VMM answers (control ops).
 *   (4) A VMM is signalled only through the driver, which signals only a
 *       process it verified; a VM whose adoption is still in flight refuses
 *       commands that would signal it ("busy"). */
#include "supervise.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent_fs.h"
#include "config.h"
#include "log.h"
#include "util.h"
#include "vmmdrv.h"

#define DEFINITION_MAX (1 << 20)

struct waiter {
	enum sv_verb verb;
	sv_reply_fn fn;
	void *opaque;
	struct waiter *next;
};

struct vm {
	struct sv *s;
	char id[SV_VM_ID_MAX + 1];
	char dir[PATH_MAX];
	struct vmstate st;
	unsigned vcpus;
	uint64_t memory;
	struct vmm *vmm;
	bool adopting;
	struct waiter *waiters;
	char startup_event[16];        /* found at start-up, not yet told a controller */
	char startup_detail[256];
	struct vm *next;
};

struct sv {
	struct evloop *loop;
	struct sv_options opt;
	const struct sv_hooks *hooks;
	void *opaque;
	struct vm *vms;
	bool closing;
};

/* A pause, resume or reboot waiting for the VMM's answer. */
struct control_op {
	struct vm *vm;
	enum sv_verb verb;
	sv_reply_fn fn;
	void *opaque;
};

static const struct vmm_listener vm_listener;

/* ---- small things ---- */

bool sv_vm_id_valid(const char *id)
{
	size_t n = strlen(id);

	if (!n || n > SV_VM_ID_MAX || id[0] == '.')
		return false;
	for (; *id; id++) {
		if (!((*id >= 'a' && *id <= 'z') || (*id >= 'A' && *id <= 'Z') ||
		      (*id >= '0' && *id <= '9') || *id == '.' || *id == '_' || *id == '-'))
			return false;
	}
	return true;
}

static void status_of(const struct vm *vm, struct sv_status *out)
{
	out->vm_id = vm->id;
	out->state = vm->st.state;
	out->pid = vmstate_has_vmm(vm->st.state) ? vm->st.pid : 0;
	out->exit_status = vm->st.exit_status;
	out->exit_reason = vm->st.exit_reason;
	out->detail = vm->st.detail;
	out->since_ms = vm->st.since_ms;
	out->vcpus = vm->vcpus;
	out->memory = vm->memory;
}

static void reply(sv_reply_fn fn, void *opaque, const struct vm *vm, const char *code,
		  const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void reply(sv_reply_fn fn, void *opaque, const struct vm *vm, const char *code,
		  const char *fmt, ...)
{
	struct sv_result r = { .ok = !code, .error_code = code };
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r.message, sizeof(r.message), fmt, ap);
	va_end(ap);
	if (vm) {
		r.has_status = true;
		status_of(vm, &r.status);
	}
	fn(opaque, &r);
}

static void emit(struct vm *vm, const char *event, const char *detail)
{
	struct sv_status st;

	status_of(vm, &st);
	vm->s->hooks->vm_event(vm->s->opaque, &st, event, detail ? detail : "");
}

/* An event found while taking VMs up at start-up: kept until a controller
 * has it. */
static void emit_startup(struct vm *vm, const char *event, const char *detail)
{
	struct sv_status st;

	status_of(vm, &st);
	if (vm->s->hooks->vm_event(vm->s->opaque, &st, event, detail ? detail : "")) {
		vm->startup_event[0] = 0;
		return;
	}
	snprintf(vm->startup_event, sizeof(vm->startup_event), "%s", event);
	snprintf(vm->startup_detail, sizeof(vm->startup_detail), "%s", detail ? detail : "");
}

static int vm_path(const struct vm *vm, const char *name, char *out, size_t len)
{
	return fs_join(out, len, vm->dir, name);
}

/* Writes the state file (invariant 1). */
static int persist(struct vm *vm)
{
	char path[PATH_MAX];
	int ret = vm_path(vm, FS_STATE, path, sizeof(path));

	if (ret == 0)
		ret = vmstate_write(path, &vm->st);
	if (ret < 0)
		log_error("VM %s: writing %s: %s", vm->id, FS_STATE, strerror(-ret));
	return ret;
}

static void set_state(struct vm *vm, enum vmstate_kind k)
{
	vm->st.state = k;
	vm->st.since_ms = vmstate_now_ms();
}

static void clear_exit(struct vm *vm)
{
	vm->st.exit_status = -1;
	vm->st.exit_reason[0] = 0;
	vm->st.detail[0] = 0;
}

static void add_waiter(struct vm *vm, enum sv_verb verb, sv_reply_fn fn, void *opaque)
{
	struct waiter *w = calloc(1, sizeof(*w)), **tail;

	if (!w) {
		reply(fn, opaque, vm, "host-error", "out of memory");
		return;
	}
	w->verb = verb;
	w->fn = fn;
	w->opaque = opaque;
	for (tail = &vm->waiters; *tail; tail = &(*tail)->next)
		;
	*tail = w;
}

/* Answers the waiters for verbs in mask (1 << verb); code NULL: success. */
static void answer_waiters(struct vm *vm, unsigned mask, const char *code, const char *msg)
{
	struct waiter **pp = &vm->waiters;

	while (*pp) {
		struct waiter *w = *pp;

		if (!(mask & (1u << w->verb))) {
			pp = &w->next;
			continue;
		}
		*pp = w->next;
		reply(w->fn, w->opaque, vm, code, "%s", msg);
		free(w);
	}
}

static struct vm *vm_find(struct sv *s, const char *id)
{
	for (struct vm *vm = s->vms; vm; vm = vm->next) {
		if (!strcmp(vm->id, id))
			return vm;
	}
	return NULL;
}

static void vm_free(struct vm *vm)
{
	answer_waiters(vm, ~0u, "agent-exiting", "the agent is exiting; the VM runs on");
	free(vm);
}

static int read_definition(const struct vm *vm, char **text, size_t *len)
{
	char path[PATH_MAX];
	void *data;
	int ret = vm_path(vm, FS_DEFINITION, path, sizeof(path));

	if (ret == 0)
		ret = read_file(path, DEFINITION_MAX, &data, len);
	if (ret == 0)
		*text = data;
	return ret;
}

/* Validates a definition as drover-vmm --config will; fills vcpus and
 * memory. 0 or -EINVAL with err. */
static int check_definition(const char *text, size_t len, unsigned *vcpus, uint64_t *memory,
			    char *err, size_t errlen)
{
	struct vmm_config cfg;
	int ret;

	vmm_config_init(&cfg);
	ret = vmm_config_from_json(&cfg, text, len, "definition", err, errlen);
	if (ret == 0) {
		if (!cfg.kernel) {
			snprintf(err, errlen, "definition: no kernel ('boot.kernel' or 'kernel')");
			ret = -EINVAL;
		}
		*vcpus = cfg.cpus;
		*memory = cfg.memory;
	}
	vmm_config_free(&cfg);
	return ret;
}

static struct vmm_spec spec_of(const struct vm *vm, const char *definition, size_t len)
{
	struct vmm_spec spec = {
		.vm_id = vm->id,
		.dir = vm->dir,
		.binary = vm->s->opt.vmm_binary,
		.definition = definition,
		.definition_len = len,
		.ready_timeout_ms = vm->s->opt.start_timeout_ms,
	};

	return spec;
}

/* ---- what the VMM reports ---- */

static void vm_stop(struct vm *vm, enum vmstate_stop kind, uint32_t timeout_ms);

static void on_ready(void *opaque, bool paused, const struct vmm_proc *proc)
{
	struct vm *vm = opaque;
	bool was_adopting = vm->adopting;
	enum vmstate_kind before = vm->st.state;

	vm->adopting = false;
	vm->st.pid = proc->pid;
	vm->st.pid_start = proc->start;
	if (before == VMSTATE_STOPPING) {
		/* Stopping when the agent died: finish the job, as asked. */
		persist(vm);
		if (was_adopting) {
			emit_startup(vm, "adopted", "stopping it, as asked before the agent restarted");
			vm_stop(vm, vm->st.stop, vm->s->opt.stop_timeout_ms);
		}
		return;
	}
	set_state(vm, paused ? VMSTATE_PAUSED : VMSTATE_RUNNING);
	persist(vm);
	if (was_adopting) {
		log_info("VM %s: adopted drover-vmm (pid %d), %s", vm->id, (int)proc->pid,
			 vmstate_name(vm->st.state));
		emit_startup(vm, "adopted", "");
		return;
	}
	log_info("VM %s: running (drover-vmm pid %d)", vm->id, (int)proc->pid);
	answer_waiters(vm, 1u << SV_START, NULL, "started");
	emit(vm, "started", "");
}

static void on_vmm_event(void *opaque, const char *event, const char *detail)
{
	struct vm *vm = opaque;

	if (!strcmp(event, "paused") && vm->st.state == VMSTATE_RUNNING) {
		set_state(vm, VMSTATE_PAUSED);
		persist(vm);
		emit(vm, "paused", detail);
	} else if (!strcmp(event, "resumed") && vm->st.state == VMSTATE_PAUSED) {
		set_state(vm, VMSTATE_RUNNING);
		persist(vm);
		emit(vm, "resumed", detail);
	} else if (!strcmp(event, "reset") &&
		   (vm->st.state == VMSTATE_RUNNING || vm->st.state == VMSTATE_PAUSED)) {
		emit(vm, "reset", detail);
	}
}

/* Reasons that mean the guest or its VMM failed, rather than ended. */
static bool reason_is_crash(const char *reason)
{
	static const char *const crashes[] = {
		"guest-crash", "killed", "vmm-failed", "vanished", "unresponsive", "host-error",
	};

	for (size_t i = 0; i < ARRAY_SIZE(crashes); i++) {
		if (!strcmp(reason, crashes[i]))
			return true;
	}
	return false;
}

/* The VM's record once its VMM has ended, given the state it was in. */
static void record_end(struct vm *vm, enum vmstate_kind was, const struct vmm_exit *ex)
{
	const char *reason = ex->reason;

	vm->st.exit_status = ex->status;
	snprintf(vm->st.detail, sizeof(vm->st.detail), "%s", ex->detail);
	if (was == VMSTATE_STOPPING) {
		if (vm->st.stop == VMSTOP_DESTROY)
			reason = "destroyed";
		else if (vm->st.stop == VMSTOP_FORCE)
			reason = "forced-stop";
		else if (ex->signal)
			reason = "stop-timeout";
		set_state(vm, VMSTATE_STOPPED);
	} else if (was == VMSTATE_STARTING && !ex->guest_ran) {
		set_state(vm, VMSTATE_STOPPED);
		if (!strcmp(reason, "vanished") || !strcmp(reason, "unresponsive"))
			reason = "vmm-failed";
	} else {
		set_state(vm, reason_is_crash(reason) ? VMSTATE_CRASHED : VMSTATE_STOPPED);
	}
	snprintf(vm->st.exit_reason, sizeof(vm->st.exit_reason), "%s", reason);
	vm->st.stop = VMSTOP_NONE;
	vm->st.pid = 0;
	vm->st.pid_start = 0;
}

static void on_exited(void *opaque, const struct vmm_exit *ex)
{
	struct vm *vm = opaque;
	enum vmstate_kind was = vm->st.state;
	bool was_adopting = vm->adopting;
	const char *event;
	char msg[512];

	vm->vmm = NULL;
	vm->adopting = false;
	if (was_adopting && !strcmp(ex->reason, "unresponsive")) {
		/* Alive, maybe, but not provably ours: leave it, say so. */
		set_state(vm, VMSTATE_CRASHED);
		vm->st.exit_status = -1;
		snprintf(vm->st.exit_reason, sizeof(vm->st.exit_reason), "unresponsive");
		snprintf(vm->st.detail, sizeof(vm->st.detail), "%s", ex->detail);
		persist(vm);
		log_warn("VM %s: could not adopt its VMM: %s", vm->id, ex->detail);
		emit_startup(vm, "crashed", ex->detail);
		return;
	}
	record_end(vm, was, ex);
	persist(vm);
	event = vm->st.state == VMSTATE_CRASHED ? "crashed" : "stopped";
	snprintf(msg, sizeof(msg), "%s%s%s", vm->st.exit_reason, ex->detail[0] ? ": " : "",
		 ex->detail);
	log_info("VM %s: %s (%s, exit status %d)", vm->id, event, msg, ex->status);
	if (was == VMSTATE_STARTING) {
		if (ex->guest_ran)
			answer_waiters(vm, 1u << SV_START, NULL, msg);
		else
			answer_waiters(vm, 1u << SV_START, "vmm-failed", msg);
	}
	answer_waiters(vm, (1u << SV_STOP) | (1u << SV_DESTROY), NULL, msg);
	/* The status carries the reason: the event's detail is what else is
	 * known. */
	if (was_adopting)
		emit_startup(vm, event, ex->detail);
	else
		emit(vm, event, ex->detail);
}

static const struct vmm_listener vm_listener = { on_ready, on_vmm_event, on_exited };

/* ---- transitions ---- */

/* DEFINED/STOPPED/CRASHED -> STARTING: the state is written, then the VMM
 * spawned. */
static void vm_launch(struct vm *vm, sv_reply_fn fn, void *opaque)
{
	struct sv *s = vm->s;
	enum vmstate_kind before = vm->st.state;
	struct vmm_proc proc = { 0 };
	struct vmm_spec spec;
	char *def = NULL, err[512] = "";
	size_t len;
	int ret;

	ret = read_definition(vm, &def, &len);
	if (ret < 0) {
		reply(fn, opaque, vm, "host-error", "VM %s: reading its %s: %s", vm->id,
		      FS_DEFINITION, strerror(-ret));
		return;
	}
	if (check_definition(def, len, &vm->vcpus, &vm->memory, err, sizeof(err)) < 0) {
		/* Accepted once; an older agent's rules, or edited by hand since. */
		reply(fn, opaque, vm, "bad-definition", "VM %s: %s", vm->id, err);
		free(def);
		return;
	}
	set_state(vm, VMSTATE_STARTING);
	clear_exit(vm);
	vm->st.pid = 0;
	vm->st.pid_start = 0;
	vm->st.stop = VMSTOP_NONE;
	if (persist(vm) < 0) {
		set_state(vm, before);
		free(def);
		reply(fn, opaque, vm, "host-error", "VM %s: cannot write its state file", vm->id);
		return;
	}
	spec = spec_of(vm, def, len);
	ret = s->opt.driver->launch(s->loop, &spec, &vm_listener, vm, &vm->vmm, &proc, err,
				    sizeof(err));
	free(def);
	if (ret < 0) {
		vm->vmm = NULL;
		set_state(vm, VMSTATE_STOPPED);
		snprintf(vm->st.exit_reason, sizeof(vm->st.exit_reason), "vmm-failed");
		snprintf(vm->st.detail, sizeof(vm->st.detail), "%.250s", err);
		persist(vm);
		log_warn("VM %s: start failed: %s", vm->id, err);
		reply(fn, opaque, vm, "vmm-failed", "VM %s: %s", vm->id, err);
		emit(vm, "stopped", err);
		return;
	}
	vm->st.pid = proc.pid;
	vm->st.pid_start = proc.start;
	persist(vm);
	log_info("VM %s: starting (drover-vmm pid %d)", vm->id, (int)proc.pid);
	add_waiter(vm, SV_START, fn, opaque);
}

/* -> STOPPING: the state (with the kind of stop) is written, then the VMM
 * asked to quit or killed. */
static void vm_stop(struct vm *vm, enum vmstate_stop kind, uint32_t timeout_ms)
{
	/* A stop only gets harder: force after graceful kills at once. */
	if (kind > vm->st.stop)
		vm->st.stop = kind;
	if (vm->st.state != VMSTATE_STOPPING)
		set_state(vm, VMSTATE_STOPPING);
	persist(vm);
	if (vm->vmm)
		vm->s->opt.driver->stop(vm->vmm, vm->st.stop != VMSTOP_GRACEFUL, timeout_ms);
}

/* Removes a VM: its run directory is renamed out of the way first, so a
 * restart never finds half of it. */
static int vm_undefine(struct sv *s, struct vm *vm, char *err, size_t errlen)
{
	char gone[PATH_MAX];
	int ret;

	if (snprintf(gone, sizeof(gone), "%s/%s/.%s.deleting", s->opt.run_dir, FS_VMS_DIR,
		     vm->id) >= (int)sizeof(gone)) {
		snprintf(err, errlen, "run directory path too long");
		return -ENAMETOOLONG;
	}
	fs_remove_tree(gone);
	if (rename(vm->dir, gone) < 0) {
		ret = -errno;
		snprintf(err, errlen, "renaming %.300s: %s", vm->dir, strerror(-ret));
		return ret;
	}
	ret = fs_remove_tree(gone);
	if (ret < 0)
		log_warn("VM %s: removing %s: %s (it is out of the way; removed at the next "
			 "start)", vm->id, gone, strerror(-ret));
	for (struct vm **pp = &s->vms; *pp; pp = &(*pp)->next) {
		if (*pp == vm) {
			*pp = vm->next;
			break;
		}
	}
	return 0;
}

/* ---- commands ---- */

static void cmd_define(struct sv *s, struct vm *vm, const struct sv_request *req,
		       sv_reply_fn fn, void *opaque)
{
	char err[600], path[PATH_MAX], *old = NULL;
	unsigned vcpus = 0;
	uint64_t memory = 0;
	size_t old_len;
	struct vm *fresh = NULL;
	int ret;

	if (check_definition(req->definition, req->definition_len, &vcpus, &memory, err,
			     sizeof(err)) < 0) {
		reply(fn, opaque, vm, "bad-definition", "VM %s: %s", req->vm_id, err);
		return;
	}
	if (vm && read_definition(vm, &old, &old_len) == 0 && old_len == req->definition_len &&
	    !memcmp(old, req->definition, old_len)) {
		free(old);
		reply(fn, opaque, vm, NULL, "VM %s: already defined so", vm->id);
		return;
	}
	free(old);
	if (!vm) {
		fresh = calloc(1, sizeof(*fresh));
		if (!fresh) {
			reply(fn, opaque, NULL, "host-error", "out of memory");
			return;
		}
		fresh->s = s;
		snprintf(fresh->id, sizeof(fresh->id), "%s", req->vm_id);
		snprintf(fresh->dir, sizeof(fresh->dir), "%s/%s/%s", s->opt.run_dir, FS_VMS_DIR,
			 req->vm_id);
		vmstate_init(&fresh->st);
		struct vmm_spec spec = spec_of(fresh, NULL, 0);
		if (s->opt.driver->check && s->opt.driver->check(&spec, err, sizeof(err)) < 0) {
			free(fresh);
			reply(fn, opaque, NULL, "bad-request", "VM %s: %s", req->vm_id, err);
			return;
		}
		ret = fs_mkdir_p(fresh->dir, 0755);
		if (ret < 0) {
			reply(fn, opaque, NULL, "host-error", "VM %s: creating %s: %s", req->vm_id,
			      fresh->dir, strerror(-ret));
			free(fresh);
			return;
		}
		vm = fresh;
	}
	ret = vm_path(vm, FS_DEFINITION, path, sizeof(path));
	if (ret == 0)
		ret = fs_write_atomic(path, req->definition, req->definition_len, 0644);
	if (ret == 0 && fresh)
		ret = persist(fresh);
	if (ret < 0) {
		if (fresh) {
			fs_remove_tree(fresh->dir);
			free(fresh);
			vm = NULL;
		}
		reply(fn, opaque, vm, "host-error", "VM %s: writing its definition: %s", req->vm_id,
		      strerror(-ret));
		return;
	}
	/* A running VMM keeps the old definition's size until its next start
	 * (vm_launch reads it again). */
	if (!vm->vmm) {
		vm->vcpus = vcpus;
		vm->memory = memory;
	}
	if (fresh) {
		fresh->next = s->vms;
		s->vms = fresh;
		log_info("VM %s: defined (%u vCPUs, %llu MiB)", vm->id, vcpus,
			 (unsigned long long)(memory >> 20));
		reply(fn, opaque, vm, NULL, "VM %s: defined", vm->id);
		emit(vm, "defined", "");
		return;
	}
	reply(fn, opaque, vm, NULL, "VM %s: definition replaced%s", vm->id,
	      vm->vmm ? "; it takes effect at the next start" : "");
}

static void cmd_start(struct vm *vm, sv_reply_fn fn, void *opaque)
{
	switch (vm->st.state) {
	case VMSTATE_RUNNING:
	case VMSTATE_PAUSED:
		reply(fn, opaque, vm, NULL, "VM %s: already %s", vm->id, vmstate_name(vm->st.state));
		return;
	case VMSTATE_STARTING:
		add_waiter(vm, SV_START, fn, opaque);
		return;
	case VMSTATE_STOPPING:
		reply(fn, opaque, vm, "busy", "VM %s is stopping; start it once it has stopped",
		      vm->id);
		return;
	case VMSTATE_CRASHED:
		/* Adoption failed: its VMM may live on, unverified. A second VMM on
		 * the same files and disks would be worse than none. */
		if (!strcmp(vm->st.exit_reason, "unresponsive") && vm->st.pid > 0 &&
		    vmmdrv_proc_start(vm->st.pid) == vm->st.pid_start) {
			reply(fn, opaque, vm, "vmm-alive", "VM %s: its drover-vmm (pid %d) still "
			      "runs but does not answer on its control socket; end that process "
			      "first", vm->id, (int)vm->st.pid);
			return;
		}
		vm_launch(vm, fn, opaque);
		return;
	case VMSTATE_DEFINED:
	case VMSTATE_STOPPED:
		vm_launch(vm, fn, opaque);
		return;
	}
}

static void cmd_stop(struct vm *vm, const struct sv_request *req, sv_reply_fn fn, void *opaque)
{
	enum vmstate_stop kind = req->verb == SV_DESTROY ? VMSTOP_DESTROY :
				 req->force ? VMSTOP_FORCE : VMSTOP_GRACEFUL;
	uint32_t timeout = req->timeout_ms ? req->timeout_ms : vm->s->opt.stop_timeout_ms;

	if (!vmstate_has_vmm(vm->st.state) || !vm->vmm) {
		reply(fn, opaque, vm, NULL, "VM %s: already %s", vm->id, vmstate_name(vm->st.state));
		return;
	}
	if (vm->st.state == VMSTATE_STARTING && kind == VMSTOP_GRACEFUL) {
		reply(fn, opaque, vm, "busy", "VM %s is starting; stop it once it runs, or force "
		      "the stop", vm->id);
		return;
	}
	if (vm->st.state == VMSTATE_STARTING)
		answer_waiters(vm, 1u << SV_START, "interrupted",
			       kind == VMSTOP_DESTROY ? "destroyed while starting" :
			       "stopped while starting");
	add_waiter(vm, req->verb, fn, opaque);
	vm_stop(vm, kind, timeout);
}

static void on_control_done(void *opaque, int err, const char *msg)
{
	struct control_op *op = opaque;
	struct vm *vm = op->vm;

	if (vm->s->closing) {
		reply(op->fn, op->opaque, vm, "agent-exiting", "VM %s: the agent is exiting; "
		      "the VM runs on", vm->id);
		free(op);
		return;
	}
	if (err) {
		reply(op->fn, op->opaque, vm, "vmm-error", "VM %s: drover-vmm answered: %s", vm->id,
		      msg);
		free(op);
		return;
	}
	if (op->verb == SV_PAUSE)
		on_vmm_event(vm, "paused", "");
	else if (op->verb == SV_RESUME)
		on_vmm_event(vm, "resumed", "");
	reply(op->fn, op->opaque, vm, NULL, "VM %s: %s", vm->id,
	      op->verb == SV_REBOOT ? "reset" : vmstate_name(vm->st.state));
	free(op);
}

static void cmd_control(struct vm *vm, enum sv_verb verb, sv_reply_fn fn, void *opaque)
{
	static const enum vmm_control what[] = {
		[SV_PAUSE] = VMM_CONTROL_PAUSE,
		[SV_RESUME] = VMM_CONTROL_RESUME,
		[SV_REBOOT] = VMM_CONTROL_RESET,
	};
	struct control_op *op;
	int ret;

	if (vm->st.state != VMSTATE_RUNNING && vm->st.state != VMSTATE_PAUSED) {
		reply(fn, opaque, vm, "not-running", "VM %s is %s, not running", vm->id,
		      vmstate_name(vm->st.state));
		return;
	}
	if ((verb == SV_PAUSE && vm->st.state == VMSTATE_PAUSED) ||
	    (verb == SV_RESUME && vm->st.state == VMSTATE_RUNNING)) {
		reply(fn, opaque, vm, NULL, "VM %s: already %s", vm->id, vmstate_name(vm->st.state));
		return;
	}
	op = calloc(1, sizeof(*op));
	if (!op) {
		reply(fn, opaque, vm, "host-error", "out of memory");
		return;
	}
	*op = (struct control_op){ .vm = vm, .verb = verb, .fn = fn, .opaque = opaque };
	ret = vm->vmm ? vm->s->opt.driver->control(vm->vmm, what[verb], on_control_done, op)
		      : -ENOTCONN;
	if (ret < 0) {
		free(op);
		reply(fn, opaque, vm, "vmm-error", "VM %s: its control socket is not connected "
		      "(%s)", vm->id, strerror(-ret));
	}
}

static void cmd_undefine(struct sv *s, struct vm *vm, sv_reply_fn fn, void *opaque)
{
	char err[512];
	struct sv_status st;

	if (vmstate_has_vmm(vm->st.state) || vm->vmm) {
		reply(fn, opaque, vm, "not-stopped", "VM %s is %s; stop or destroy it first", vm->id,
		      vmstate_name(vm->st.state));
		return;
	}
	if (vm_undefine(s, vm, err, sizeof(err)) < 0) {
		reply(fn, opaque, vm, "host-error", "VM %s: %s", vm->id, err);
		return;
	}
	log_info("VM %s: undefined", vm->id);
	reply(fn, opaque, NULL, NULL, "VM %s: undefined", vm->id);
	status_of(vm, &st);
	s->hooks->vm_event(s->opaque, &st, "undefined", "");
	vm_free(vm);
}

void sv_command(struct sv *s, const struct sv_request *req, sv_reply_fn fn, void *opaque)
{
	struct vm *vm;

	if (!req->vm_id || !sv_vm_id_valid(req->vm_id)) {
		reply(fn, opaque, NULL, "bad-request", "VM id '%.80s' must be 1 to %d characters of "
		      "A-Z a-z 0-9 . _ - and not start with '.'", req->vm_id ? req->vm_id : "",
		      SV_VM_ID_MAX);
		return;
	}
	vm = vm_find(s, req->vm_id);
	if (req->verb == SV_DEFINE) {
		cmd_define(s, vm, req, fn, opaque);
		return;
	}
	if (!vm) {
		reply(fn, opaque, NULL, "not-found", "no VM '%s' on this host", req->vm_id);
		return;
	}
	if (vm->adopting) {
		reply(fn, opaque, vm, "busy", "VM %s: its VMM is being adopted; try again shortly",
		      vm->id);
		return;
	}
	switch (req->verb) {
	case SV_START:
		cmd_start(vm, fn, opaque);
		break;
	case SV_STOP:
	case SV_DESTROY:
		cmd_stop(vm, req, fn, opaque);
		break;
	case SV_PAUSE:
	case SV_RESUME:
	case SV_REBOOT:
		cmd_control(vm, req->verb, fn, opaque);
		break;
	case SV_UNDEFINE:
		cmd_undefine(s, vm, fn, opaque);
		break;
	case SV_DEFINE:
		break;
	}
}

/* ---- start-up ---- */

/* A VM found with a VMM recorded: adopt it, or record how it ended. */
static void vm_take_up(struct vm *vm)
{
	struct sv *s = vm->s;
	struct vmm_spec spec = spec_of(vm, NULL, 0);
	struct vmm_proc proc = { 0 };
	struct vmm_exit ex;
	enum vmstate_kind was = vm->st.state;
	char err[512] = "";
	int ret;

	ret = s->opt.driver->adopt(s->loop, &spec, vm->st.pid, vm->st.pid_start, &vm_listener, vm,
				   &vm->vmm, &proc, err, sizeof(err));
	if (ret == 0) {
		vm->adopting = true;
		if (proc.pid && proc.pid != vm->st.pid) {
			vm->st.pid = proc.pid;
			vm->st.pid_start = proc.start;
			persist(vm);
		}
		return;
	}
	vm->vmm = NULL;
	s->opt.driver->postmortem(&spec, &ex);
	log_info("VM %s: its VMM ended while the agent was away (%s): %s%s%s", vm->id, err,
		 ex.reason, ex.detail[0] ? ": " : "", ex.detail);
	if (was == VMSTATE_STARTING && !ex.guest_ran)
		snprintf(ex.reason, sizeof(ex.reason), "vmm-failed");
	record_end(vm, was, &ex);
	persist(vm);
	emit_startup(vm, vm->st.state == VMSTATE_CRASHED ? "crashed" : "stopped", vm->st.detail);
}

static void load_one(struct sv *s, const char *vms, const char *name)
{
	char err[512], path[PATH_MAX], *def = NULL;
	struct vm *vm;
	size_t len;
	int ret;

	if (name[0] == '.') {
		if (strstr(name, ".deleting") && fs_join(path, sizeof(path), vms, name) == 0)
			fs_remove_tree(path);
		return;
	}
	if (!sv_vm_id_valid(name)) {
		log_warn("%s/%s: not a VM id; left alone", vms, name);
		return;
	}
	vm = calloc(1, sizeof(*vm));
	if (!vm)
		return;
	vm->s = s;
	memcpy(vm->id, name, strlen(name) + 1);    /* valid: at most SV_VM_ID_MAX */
	if (fs_join(vm->dir, sizeof(vm->dir), vms, name) < 0) {
		free(vm);
		return;
	}
	ret = read_definition(vm, &def, &len);
	if (ret < 0) {
		log_warn("VM %s: no readable %s (%s); left alone", name, FS_DEFINITION,
			 strerror(-ret));
		free(vm);
		return;
	}
	if (check_definition(def, len, &vm->vcpus, &vm->memory, err, sizeof(err)) < 0)
		log_warn("VM %s: its definition no longer passes: %s", name, err);
	free(def);
	vm_path(vm, FS_STATE, path, sizeof(path));
	ret = vmstate_read(path, &vm->st, err, sizeof(err));
	if (ret == -ENOENT) {
		vmstate_init(&vm->st);    /* defined, and killed before the state file */
		persist(vm);
	} else if (ret < 0) {
		/* Look for a VMM through its control socket all the same. */
		log_error("VM %s: %s: %s; looking for its VMM", name, path, err);
		vmstate_init(&vm->st);
		vm->st.state = VMSTATE_STARTING;
	}
	vm->next = s->vms;
	s->vms = vm;
	if (vmstate_has_vmm(vm->st.state))
		vm_take_up(vm);
}

int sv_load(struct sv *s)
{
	char vms[PATH_MAX];
	struct dirent *e;
	DIR *d;
	int ret;

	snprintf(vms, sizeof(vms), "%s/%s", s->opt.run_dir, FS_VMS_DIR);
	ret = fs_mkdir_p(vms, 0755);
	if (ret < 0)
		return ret;
	d = opendir(vms);
	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			load_one(s, vms, e->d_name);
	}
	closedir(d);
	return 0;
}

/* ---- the rest ---- */

int sv_new(struct evloop *loop, const struct sv_options *opt, const struct sv_hooks *hooks,
	   void *opaque, struct sv **out)
{
	struct sv *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->loop = loop;
	s->opt = *opt;
	s->hooks = hooks;
	s->opaque = opaque;
	*out = s;
	return 0;
}

void sv_free(struct sv *s)
{
	if (!s)
		return;
	s->closing = true;
	while (s->vms) {
		struct vm *vm = s->vms;

		s->vms = vm->next;
		if (vm->vmm)
			s->opt.driver->release(vm->vmm);
		vm_free(vm);
	}
	free(s);
}

void sv_foreach(struct sv *s, void (*fn)(void *arg, const struct sv_status *st), void *arg)
{
	for (struct vm *vm = s->vms; vm; vm = vm->next) {
		struct sv_status st;

		status_of(vm, &st);
		fn(arg, &st);
	}
}

size_t sv_count(const struct sv *s)
{
	size_t n = 0;

	for (const struct vm *vm = s->vms; vm; vm = vm->next)
		n++;
	return n;
}

void sv_usage(const struct sv *s, uint32_t *vcpus, uint64_t *memory)
{
	*vcpus = 0;
	*memory = 0;
	for (const struct vm *vm = s->vms; vm; vm = vm->next) {
		if (vmstate_has_vmm(vm->st.state)) {
			*vcpus += vm->vcpus;
			*memory += vm->memory;
		}
	}
}

void sv_replay_startup(struct sv *s)
{
	for (struct vm *vm = s->vms; vm; vm = vm->next) {
		if (vm->startup_event[0]) {
			char event[sizeof(vm->startup_event)], detail[sizeof(vm->startup_detail)];

			memcpy(event, vm->startup_event, sizeof(event));
			memcpy(detail, vm->startup_detail, sizeof(detail));
			emit_startup(vm, event, detail);
		}
	}
}

bool sv_adopting(const struct sv *s)
{
	for (const struct vm *vm = s->vms; vm; vm = vm->next) {
		if (vm->adopting)
			return true;
	}
	return false;
}
