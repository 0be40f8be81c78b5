/* agent/supervise.c: the VM state machine over real drover-vmm processes,
 * and above all what a restarted agent makes of the run directory an
 * earlier one left, killed between any two steps: state files written as
 * that agent would have written them just before dying. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/prctl.h>

#include "agent_fs.h"
#include "log.h"
#include "supervise.h"
#include "test_agent_helpers.h"
#include "vmmdrv.h"
#include "vmstate.h"

static char vmm_bin[PATH_MAX], hello[PATH_MAX];

struct answer {
	bool got, ok, has_status;
	char code[32];
	char msg[768];
	enum vmstate_kind state;
	pid_t pid;
	int exit_status;
	char reason[48];
};

struct event {
	char vm[SV_VM_ID_MAX + 1];
	char event[16];
	enum vmstate_kind state;
	char reason[48];
};

struct fx {
	struct evloop *loop;
	char dir[64];
	struct sv *s;
	struct sv_options opt;
	bool connected;              /* what vm_event answers */
	struct event events[64];
	int nevents;
	pid_t pids[8];
	int npids;
};

static bool on_vm_event(void *opaque, const struct sv_status *st, const char *event,
			const char *detail)
{
	struct fx *x = opaque;

	if (!x->connected)
		return false;
	if (x->nevents < 64) {
		struct event *e = &x->events[x->nevents++];

		snprintf(e->vm, sizeof(e->vm), "%s", st->vm_id);
		snprintf(e->event, sizeof(e->event), "%s", event);
		snprintf(e->reason, sizeof(e->reason), "%s", st->exit_reason);
		e->state = st->state;
	}
	return true;
}

static const struct sv_hooks hooks = { on_vm_event };

static void on_reply(void *opaque, const struct sv_result *r)
{
	struct answer *a = opaque;

	assert_false(a->got);    /* exactly once */
	a->got = true;
	a->ok = r->ok;
	snprintf(a->code, sizeof(a->code), "%s", r->error_code ? r->error_code : "");
	snprintf(a->msg, sizeof(a->msg), "%s", r->message);
	a->has_status = r->has_status;
	if (r->has_status) {
		a->state = r->status.state;
		a->pid = r->status.pid;
		a->exit_status = r->status.exit_status;
		snprintf(a->reason, sizeof(a->reason), "%s", r->status.exit_reason);
	}
}

static void new_sv(struct fx *x)
{
	assert_int_equal(sv_new(x->loop, &x->opt, &hooks, x, &x->s), 0);
}

static int setup(void **state)
{
	struct fx *x = calloc(1, sizeof(*x));

	assert_int_equal(evloop_new(&x->loop), 0);
	th_tmpdir(x->dir, sizeof(x->dir));
	x->opt = (struct sv_options){ .run_dir = x->dir, .vmm_binary = vmm_bin,
				      .driver = &vmmdrv_drover, .start_timeout_ms = 5000,
				      /* a graceful stop's wait for the guest (which ignores
				       * the power button) before quit */
				      .stop_timeout_ms = 1000 };
	x->connected = true;
	new_sv(x);
	assert_int_equal(sv_load(x->s), 0);
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct fx *x = *state;

	sv_free(x->s);
	for (int i = 0; i < x->npids; i++)
		th_kill(x->pids[i]);
	evloop_free(x->loop);
	th_rmtree(x->dir);
	free(x);
	return 0;
}

/* Runs a command to its answer. */
static struct answer run(struct fx *x, enum sv_verb verb, const char *vm, const char *def)
{
	struct answer a = { 0 };
	struct sv_request req = { .verb = verb, .vm_id = vm, .definition = def,
				  .definition_len = def ? strlen(def) : 0 };

	sv_command(x->s, &req, on_reply, &a);
	assert_true(th_spin_until(x->loop, &a.got, 10000));
	if (a.has_status && a.pid > 0 && x->npids < 8)
		x->pids[x->npids++] = a.pid;
	return a;
}

static struct answer run_stop(struct fx *x, const char *vm, uint32_t timeout, bool force)
{
	struct answer a = { 0 };
	struct sv_request req = { .verb = SV_STOP, .vm_id = vm, .timeout_ms = timeout,
				  .force = force };

	sv_command(x->s, &req, on_reply, &a);
	assert_true(th_spin_until(x->loop, &a.got, 10000));
	return a;
}

static void ticker_def(char *out, size_t len)
{
	int n = snprintf(out, len, "{\"vcpus\": 1, \"memory\": \"64M\", \"boot\": {\"kernel\": \"%s\", "
		 "\"cmdline\": \"hello.ticks\"}}", hello);

	assert_true(n > 0 && (size_t)n < len);
}

static pid_t start_ticker(struct fx *x, const char *vm)
{
	char def[PATH_MAX + 512];
	struct answer a;

	ticker_def(def, sizeof(def));
	a = run(x, SV_DEFINE, vm, def);
	assert_true(a.ok);
	assert_int_equal(a.state, VMSTATE_DEFINED);
	a = run(x, SV_START, vm, NULL);
	if (!a.ok)
		fail_msg("start: %s: %s", a.code, a.msg);
	assert_int_equal(a.state, VMSTATE_RUNNING);
	assert_true(a.pid > 0);
	return a.pid;
}

struct find {
	const char *vm;
	struct sv_status st;
	bool found;
};

static void find_cb(void *arg, const struct sv_status *st)
{
	struct find *f = arg;

	if (!strcmp(st->vm_id, f->vm)) {
		f->st = *st;
		f->found = true;
	}
}

static struct sv_status status_of(struct fx *x, const char *vm)
{
	struct find f = { .vm = vm };

	sv_foreach(x->s, find_cb, &f);
	assert_true(f.found);
	return f.st;
}

static bool saw_event(struct fx *x, const char *vm, const char *event)
{
	for (int i = 0; i < x->nevents; i++) {
		if (!strcmp(x->events[i].vm, vm) && !strcmp(x->events[i].event, event))
			return true;
	}
	return false;
}

/* The agent "dies": its supervisor goes away, the VMMs do not. */
static void agent_dies(struct fx *x)
{
	sv_free(x->s);
	x->s = NULL;
}

static void agent_restarts(struct fx *x)
{
	uint64_t end = th_now_ms() + 8000;

	x->nevents = 0;
	new_sv(x);
	assert_int_equal(sv_load(x->s), 0);
	while (sv_adopting(x->s) && th_now_ms() < end)
		evloop_run_once(x->loop, 10);
	assert_false(sv_adopting(x->s));
	th_spin(x->loop, 50);
}

static void state_path(struct fx *x, const char *vm, char *out, size_t len)
{
	snprintf(out, len, "%s/vms/%s/%s", x->dir, vm, FS_STATE);
}

/* Rewrites the VM's state file as an agent killed at that point left it. */
static void rewrite_state(struct fx *x, const char *vm, enum vmstate_kind k,
			  enum vmstate_stop stop, bool keep_pid)
{
	char path[256], err[256];
	struct vmstate st;

	state_path(x, vm, path, sizeof(path));
	assert_int_equal(vmstate_read(path, &st, err, sizeof(err)), 0);
	st.state = k;
	st.stop = stop;
	if (!keep_pid) {
		st.pid = 0;
		st.pid_start = 0;
	}
	assert_int_equal(vmstate_write(path, &st), 0);
}

/* ---- tests ---- */

static void test_commands(void **state)
{
	struct fx *x = *state;
	char dir[256];
	struct answer a;
	pid_t pid;

	a = run(x, SV_DEFINE, "v", "{\"memory\": 64}");
	assert_false(a.ok);
	assert_string_equal(a.code, "bad-definition");
	assert_non_null(strstr(a.msg, "kernel"));
	a = run(x, SV_START, "v", NULL);
	assert_string_equal(a.code, "not-found");
	a = run(x, SV_DEFINE, ".hidden", "{}");
	assert_string_equal(a.code, "bad-request");

	pid = start_ticker(x, "v");
	assert_true(saw_event(x, "v", "defined"));
	assert_true(saw_event(x, "v", "started"));
	{
		uint32_t vcpus;
		uint64_t mem;

		sv_usage(x->s, &vcpus, &mem);
		assert_int_equal(vcpus, 1);
		assert_int_equal(mem, 64ULL << 20);
	}
	a = run(x, SV_UNDEFINE, "v", NULL);
	assert_string_equal(a.code, "not-stopped");
	a = run(x, SV_PAUSE, "v", NULL);
	assert_true(a.ok);
	assert_int_equal(a.state, VMSTATE_PAUSED);
	assert_int_equal(status_of(x, "v").state, VMSTATE_PAUSED);
	a = run(x, SV_START, "v", NULL);
	assert_true(a.ok);
	assert_int_equal(a.state, VMSTATE_PAUSED);
	a = run(x, SV_RESUME, "v", NULL);
	assert_int_equal(a.state, VMSTATE_RUNNING);
	/* Graceful: the power button, which the hello guest does not heed,
	 * then quit once the 300 ms are up. */
	a = run_stop(x, "v", 300, false);
	assert_true(a.ok);
	assert_int_equal(a.state, VMSTATE_STOPPED);
	assert_string_equal(a.reason, "host-qmp-quit");
	assert_true(th_wait_gone(pid, 3000));
	a = run(x, SV_REBOOT, "v", NULL);
	assert_string_equal(a.code, "not-running");
	a = run(x, SV_UNDEFINE, "v", NULL);
	assert_true(a.ok);
	assert_true(saw_event(x, "v", "undefined"));
	snprintf(dir, sizeof(dir), "%s/vms/v", x->dir);
	assert_true(access(dir, F_OK) != 0);
	assert_int_equal(sv_count(x->s), 0);
}

/* Agent killed while the VM runs: adopted, reported once a controller
 * listens, and still driven. */
static void test_restart_adopts(void **state)
{
	struct fx *x = *state;
	struct sv_status st;
	pid_t pid = start_ticker(x, "r");

	agent_dies(x);
	th_spin(x->loop, 100);
	assert_true(th_pid_alive(pid));
	x->connected = false;
	agent_restarts(x);
	st = status_of(x, "r");
	assert_int_equal(st.state, VMSTATE_RUNNING);
	assert_int_equal(st.pid, pid);
	assert_int_equal(x->nevents, 0);
	/* Told when a controller listens, and only once. */
	x->connected = true;
	sv_replay_startup(x->s);
	assert_int_equal(x->nevents, 1);
	assert_string_equal(x->events[0].event, "adopted");
	sv_replay_startup(x->s);
	assert_int_equal(x->nevents, 1);
	assert_true(run(x, SV_PAUSE, "r", NULL).ok);
	assert_int_equal(run_stop(x, "r", 0, false).state, VMSTATE_STOPPED);
	assert_true(th_wait_gone(pid, 3000));
}

/* Killed after writing STOPPING, before asking the VMM to stop: the next
 * agent finishes the stop (power button, then quit after the timeout). */
static void test_restart_finishes_stop(void **state)
{
	struct fx *x = *state;
	struct sv_status st;
	pid_t pid = start_ticker(x, "s");
	uint64_t end;

	agent_dies(x);
	rewrite_state(x, "s", VMSTATE_STOPPING, VMSTOP_GRACEFUL, true);
	agent_restarts(x);
	end = th_now_ms() + 5000;
	while (status_of(x, "s").state != VMSTATE_STOPPED && th_now_ms() < end)
		evloop_run_once(x->loop, 10);
	st = status_of(x, "s");
	assert_int_equal(st.state, VMSTATE_STOPPED);
	assert_string_equal(st.exit_reason, "host-qmp-quit");
	assert_true(th_wait_gone(pid, 3000));
	assert_true(saw_event(x, "s", "adopted"));
	assert_true(saw_event(x, "s", "stopped"));
}

/* Killed between spawning the VMM and recording its pid: found through its
 * control socket. */
static void test_restart_starting_without_pid(void **state)
{
	struct fx *x = *state;
	pid_t pid = start_ticker(x, "p");

	agent_dies(x);
	rewrite_state(x, "p", VMSTATE_STARTING, VMSTOP_NONE, false);
	agent_restarts(x);
	assert_int_equal(status_of(x, "p").state, VMSTATE_RUNNING);
	assert_int_equal(status_of(x, "p").pid, pid);
	assert_true(saw_event(x, "p", "adopted"));
}

/* A state file that is no longer JSON: the VMM is still found and kept. */
static void test_restart_corrupt_state(void **state)
{
	struct fx *x = *state;
	char path[256];
	pid_t pid = start_ticker(x, "c");

	agent_dies(x);
	state_path(x, "c", path, sizeof(path));
	assert_int_equal(th_write(path, "{\"state\": "), 0);
	agent_restarts(x);
	assert_int_equal(status_of(x, "c").state, VMSTATE_RUNNING);
	assert_int_equal(status_of(x, "c").pid, pid);
}

/* VMMs that ended while no agent ran: recorded from their files. */
static void test_restart_dead_vmms(void **state)
{
	struct fx *x = *state;
	char log[256];
	pid_t killed = start_ticker(x, "killed");
	pid_t off = start_ticker(x, "off");
	FILE *f;

	agent_dies(x);
	kill(killed, SIGKILL);
	kill(off, SIGKILL);
	assert_true(th_wait_gone(killed, 3000));
	assert_true(th_wait_gone(off, 3000));
	/* As if that guest had powered off. */
	snprintf(log, sizeof(log), "%s/vms/off/%s", x->dir, FS_VMM_LOG);
	f = fopen(log, "a");
	assert_non_null(f);
	fputs("drover-vmm: info: guest powered off\n", f);
	fclose(f);
	agent_restarts(x);
	assert_int_equal(status_of(x, "killed").state, VMSTATE_CRASHED);
	assert_string_equal(status_of(x, "killed").exit_reason, "vanished");
	assert_int_equal(status_of(x, "killed").pid, 0);
	assert_int_equal(status_of(x, "off").state, VMSTATE_STOPPED);
	assert_string_equal(status_of(x, "off").exit_reason, "guest-shutdown");
	assert_true(saw_event(x, "killed", "crashed"));
	assert_true(saw_event(x, "off", "stopped"));
	/* And both start again. */
	assert_true(run(x, SV_START, "killed", NULL).ok);
	assert_true(run(x, SV_DESTROY, "killed", NULL).ok);
}

/* An undefine interrupted after the rename is finished at start-up;
 * directories that are no VM are left alone. */
static void test_restart_cleans_up(void **state)
{
	struct fx *x = *state;
	char path[256];

	agent_dies(x);
	snprintf(path, sizeof(path), "%s/vms/.gone.deleting/sub", x->dir);
	assert_int_equal(fs_mkdir_p(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/vms/not a vm", x->dir);
	assert_int_equal(fs_mkdir_p(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/vms/nodef", x->dir);
	assert_int_equal(fs_mkdir_p(path, 0755), 0);
	agent_restarts(x);
	snprintf(path, sizeof(path), "%s/vms/.gone.deleting", x->dir);
	assert_true(access(path, F_OK) != 0);
	snprintf(path, sizeof(path), "%s/vms/not a vm", x->dir);
	assert_int_equal(access(path, F_OK), 0);
	assert_int_equal(sv_count(x->s), 0);
}

/* A VMM that ignores quit (stopped with SIGSTOP here) is killed after the
 * timeout; a forced stop during a graceful one kills at once. */
static void test_stop_escalation(void **state)
{
	struct fx *x = *state;
	struct answer a1 = { 0 }, a2 = { 0 };
	struct sv_request graceful = { .verb = SV_STOP, .vm_id = "e", .timeout_ms = 60000 };
	struct sv_request force = { .verb = SV_STOP, .vm_id = "e", .force = true };
	uint64_t t0;
	pid_t pid = start_ticker(x, "e");
	struct answer a;

	kill(pid, SIGSTOP);
	t0 = th_now_ms();
	a = run_stop(x, "e", 400, false);
	assert_true(a.ok);
	assert_string_equal(a.reason, "stop-timeout");
	assert_true(th_now_ms() - t0 >= 350);
	assert_true(th_wait_gone(pid, 3000));

	assert_true(run(x, SV_START, "e", NULL).ok);
	pid = status_of(x, "e").pid;
	x->pids[x->npids++] = pid;
	kill(pid, SIGSTOP);
	sv_command(x->s, &graceful, on_reply, &a1);
	th_spin(x->loop, 100);
	assert_false(a1.got);
	assert_int_equal(status_of(x, "e").state, VMSTATE_STOPPING);
	sv_command(x->s, &force, on_reply, &a2);
	assert_true(th_spin_until(x->loop, &a2.got, 3000));
	assert_true(a1.got);
	assert_true(a1.ok && a2.ok);
	assert_string_equal(a2.reason, "forced-stop");
	assert_true(th_wait_gone(pid, 3000));
}

/* A VMM that cannot answer (stopped here with SIGSTOP) is not adopted,
 * not signalled, and no second VMM is started beside it. */
static void test_restart_unresponsive(void **state)
{
	struct fx *x = *state;
	struct answer a;
	pid_t pid = start_ticker(x, "u");

	agent_dies(x);
	kill(pid, SIGSTOP);
	agent_restarts(x);
	assert_int_equal(status_of(x, "u").state, VMSTATE_CRASHED);
	assert_string_equal(status_of(x, "u").exit_reason, "unresponsive");
	assert_true(saw_event(x, "u", "crashed"));
	assert_true(th_pid_alive(pid));
	a = run(x, SV_START, "u", NULL);
	assert_false(a.ok);
	assert_string_equal(a.code, "vmm-alive");
	/* Once that process is gone, the VM starts again. */
	kill(pid, SIGKILL);
	assert_true(th_wait_gone(pid, 3000));
	a = run(x, SV_START, "u", NULL);
	assert_true(a.ok);
	assert_int_equal(a.state, VMSTATE_RUNNING);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_commands, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_adopts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_finishes_stop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_starting_without_pid, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_corrupt_state, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_dead_vmms, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_cleans_up, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stop_escalation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_unresponsive, setup, teardown),
	};

	log_init("test_supervise", LOG_ERROR);
	th_find_vmm(vmm_bin, hello, sizeof(vmm_bin));
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
