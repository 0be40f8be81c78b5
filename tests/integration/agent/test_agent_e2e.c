/* drover-agent as a controller sees it: this program plays the controller
 * over the real protocol (proto/conn.h on TCP) against the real drover-agent
 * binary, which runs real drover-vmm processes booting the hello test guest
 * (hello.ticks: "hello: tick N" every 50 ms on its console).
 *
 * Usage: test_agent_e2e DROVER_AGENT DROVER_VMM HELLO_ELF GROUP
 * GROUP: basic | restart | network | faults (one ctest test each). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cmocka.h>

#include "agenttest.h"
#include "frame.h"

#define TICK "hello: tick "
#define BANNER "hello: hello from a test guest"
#define HEARTBEAT_MS 300
#define CMD_MS 10000

static const char *agent_bin, *vmm_bin, *hello_elf;

struct fx {
	char dir[64];
	char config[128];
	char log[128];
	char run_dir[128];
	char state_dir[128];
	struct fakectl f;
	struct agentproc a;
	pid_t vmm_pids[32];
	int nvmm;
};

/* ---- fixture ---- */

static void write_config(struct fx *x, const char *extra)
{
	char text[2048];

	snprintf(text, sizeof(text),
		 "{\"controller\": \"%s\", \"host-name\": \"test-host\", \"run-dir\": \"%s\","
		 " \"state-dir\": \"%s\", \"vmm\": \"%s\", \"labels\": {\"rack\": \"r1\"},"
		 " \"reserved\": {\"cpus\": 1, \"memory\": \"256M\"},"
		 " \"migration-address\": \"127.0.0.1:7071\", \"reconnect-min-ms\": 100,"
		 " \"reconnect-max-ms\": 800, \"start-timeout-ms\": 5000,"
		 " \"stop-timeout-ms\": 5000%s}\n",
		 x->f.addr, x->run_dir, x->state_dir, vmm_bin, extra ? extra : "");
	assert_int_equal(test_write(x->config, text), 0);
}

static void start_agent(struct fx *x)
{
	unsigned before = x->f.accepted;

	assert_int_equal(agentproc_start(&x->a, agent_bin, x->config, x->log), 0);
	if (x->f.mode != FAKECTL_REFUSE)
		assert_true(fakectl_wait_connections(&x->f, before + 1, 10000));
}

static int setup(void **state)
{
	struct fx *x = calloc(1, sizeof(*x));

	assert_non_null(x);
	assert_int_equal(test_tmpdir(x->dir, sizeof(x->dir)), 0);
	snprintf(x->config, sizeof(x->config), "%s/agent.json", x->dir);
	snprintf(x->log, sizeof(x->log), "%s/agent.log", x->dir);
	snprintf(x->run_dir, sizeof(x->run_dir), "%s/run", x->dir);
	snprintf(x->state_dir, sizeof(x->state_dir), "%s/state", x->dir);
	assert_int_equal(fakectl_start(&x->f, HEARTBEAT_MS), 0);
	write_config(x, NULL);
	*state = x;
	return 0;
}

static void show_log(const struct fx *x)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "tail -n 40 %s >&2", x->log);
	if (system(cmd) != 0)
		fprintf(stderr, "(no agent log)\n");
}

/* A sanitizer's report in the agent's log (its stderr) fails the test. */
static bool log_has_sanitizer_report(const struct fx *x)
{
	return test_file_contains(x->log, "ERROR: AddressSanitizer") ||
	       test_file_contains(x->log, "ERROR: LeakSanitizer") ||
	       test_file_contains(x->log, "runtime error:");
}

static int teardown(void **state)
{
	struct fx *x = *state;
	bool sanitizer;

	if (x->a.pid > 0)
		agentproc_stop(&x->a, SIGTERM, 5000);
	sanitizer = log_has_sanitizer_report(x);
	if (sanitizer)
		show_log(x);
	/* The VMMs this test's agents started, and only those. */
	for (int i = 0; i < x->nvmm; i++)
		test_kill_pid(x->vmm_pids[i]);
	fakectl_stop(&x->f);
	if (getenv("DROVER_TEST_KEEP"))
		fprintf(stderr, "kept %s\n", x->dir);
	else
		test_rmtree(x->dir);
	free(x);
	if (sanitizer)
		fail_msg("the agent's log holds a sanitizer report (above)");
	return 0;
}

static void remember_pid(struct fx *x, pid_t pid)
{
	for (int i = 0; i < x->nvmm; i++) {
		if (x->vmm_pids[i] == pid)
			return;
	}
	if (pid > 0 && x->nvmm < 32)
		x->vmm_pids[x->nvmm++] = pid;
}

static void vm_file(const struct fx *x, const char *vm, const char *name, char *out, size_t len)
{
	snprintf(out, len, "%s/vms/%s/%s", x->run_dir, vm, name);
}

static void definition(char *out, size_t len, const char *name, const char *kernel,
		       const char *cmdline)
{
	snprintf(out, len, "{\"name\": \"%s\", \"vcpus\": 1, \"memory\": \"64M\", \"boot\": "
		 "{\"kernel\": \"%s\", \"cmdline\": \"%s\"}}", name, kernel, cmdline);
}

/* The result of a command; fails the test unless ok is as expected. */
static const Drover__CommandResult *result_of(struct fx *x, Drover__Envelope *env, bool ok,
					      const char *code)
{
	if (!env) {
		show_log(x);
		fail_msg("no CommandResult within the timeout");
	}
	assert_int_equal(env->body_case, DROVER__ENVELOPE__BODY_RESULT);
	if (env->result->ok != ok || (code && strcmp(env->result->error_code, code))) {
		show_log(x);
		fail_msg("result ok=%d code '%s' message '%s' (expected ok=%d code '%s')",
			 env->result->ok, env->result->error_code, env->result->message, ok,
			 code ? code : "");
	}
	return env->result;
}

static void expect_ok(struct fx *x, Drover__Envelope *env, const char *state)
{
	const Drover__CommandResult *r = result_of(x, env, true, NULL);

	if (state) {
		assert_non_null(r->status);
		assert_string_equal(r->status->state, state);
		if (r->status->pid > 0)
			remember_pid(x, r->status->pid);
	}
	fakectl_free(env);
}

static void expect_error(struct fx *x, Drover__Envelope *env, const char *code,
			 const char *in_message)
{
	const Drover__CommandResult *r = result_of(x, env, false, code);

	if (in_message && !strstr(r->message, in_message))
		fail_msg("message '%s' does not contain '%s'", r->message, in_message);
	fakectl_free(env);
}

static Drover__Envelope *wait_event(struct fx *x, const char *vm, const char *event)
{
	Drover__Envelope *env = fakectl_wait_event(&x->f, vm, event, CMD_MS);

	if (!env) {
		show_log(x);
		fail_msg("no VmEvent '%s' for VM %s", event, vm);
	}
	return env;
}

/* Defines and starts a ticking hello VM; returns its VMM's pid. */
static pid_t start_ticker(struct fx *x, const char *vm)
{
	char def[1024], console[256];
	Drover__Envelope *env;
	pid_t pid;

	definition(def, sizeof(def), vm, hello_elf, "hello.ticks");
	expect_ok(x, fakectl_define(&x->f, vm, def, CMD_MS), "defined");
	env = fakectl_vm(&x->f, DROVER__COMMAND__KIND_START, vm, CMD_MS);
	result_of(x, env, true, NULL);
	assert_string_equal(env->result->status->state, "running");
	pid = env->result->status->pid;
	assert_true(pid > 0);
	remember_pid(x, pid);
	fakectl_free(env);
	fakectl_free(wait_event(x, vm, "started"));
	vm_file(x, vm, "console.log", console, sizeof(console));
	assert_true(test_wait_lines(console, TICK, 2, 5000));
	return pid;
}

static void spin_until_lines(struct fx *x, const char *path, const char *prefix, int count)
{
	uint64_t end = test_now_ms() + 5000;

	while (test_count_lines(path, prefix) < count && test_now_ms() < end)
		fakectl_spin(&x->f, 20);
	assert_true(test_count_lines(path, prefix) >= count);
}

/* ---- basic: Hello, inventory, heartbeats, the whole lifecycle ---- */

static bool has_string(char **list, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(list[i], s))
			return true;
	}
	return false;
}

static void check_inventory(const Drover__Inventory *inv)
{
	struct utsname un;
	int kvm_fd;

	assert_non_null(inv);
	assert_true(inv->cpus > 0);
	assert_true(inv->cpus == (uint32_t)sysconf(_SC_NPROCESSORS_ONLN));
	assert_true(inv->mem_total > 64ULL << 20);
	assert_true(inv->mem_available > 0 && inv->mem_available <= inv->mem_total);
	assert_true(inv->cpu_model[0] != 0);
	assert_true(inv->n_cpu_flags > 10);
	assert_true(has_string(inv->cpu_flags, inv->n_cpu_flags, "fpu"));
	if (access("/sys/module/kvm_intel/parameters/ept", R_OK) != 0)
		assert_string_equal(inv->ept, "not available");
	else
		assert_true(!strcmp(inv->ept, "yes") || !strcmp(inv->ept, "no"));
	if (access("/sys/module/kvm_intel/parameters/vpid", R_OK) != 0)
		assert_string_equal(inv->vpid, "not available");
	if (has_string(inv->cpu_flags, inv->n_cpu_flags, "vmx"))
		assert_string_equal(inv->virt, "vmx");
	else if (has_string(inv->cpu_flags, inv->n_cpu_flags, "svm"))
		assert_string_equal(inv->virt, "svm");
	else if (access("/sys/module/kvm_pvm", F_OK) == 0)
		assert_string_equal(inv->virt, "kvm_pvm");
	kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	assert_int_equal(inv->kvm, kvm_fd >= 0);
	if (kvm_fd >= 0) {
		close(kvm_fd);
		assert_true(inv->kvm_max_vcpus > 0);
		assert_true(has_string(inv->kvm_caps, inv->n_kvm_caps, "irqfd"));
		assert_true(has_string(inv->kvm_caps, inv->n_kvm_caps, "ioeventfd"));
	}
	assert_int_equal(inv->reserved_cpus, 1);
	assert_int_equal(inv->reserved_mem, 256ULL << 20);
	assert_true(inv->load1 >= 0);
	assert_int_equal(uname(&un), 0);
	assert_string_equal(inv->kernel, un.release);
}

static void test_hello_heartbeat(void **state)
{
	struct fx *x = *state;
	Drover__Envelope *hello, *hb1, *hb2;
	char path[256], text[64] = "";
	uint64_t t1, t2;
	FILE *f;

	start_agent(x);
	hello = fakectl_wait(&x->f, DROVER__ENVELOPE__BODY_HELLO, 5000);
	assert_non_null(hello);
	assert_int_equal(strlen(hello->hello->host_id), 36);
	assert_string_equal(hello->hello->host_name, "test-host");
	assert_true(hello->hello->agent_version[0] != 0);
	assert_string_equal(hello->hello->migration_address, "127.0.0.1:7071");
	assert_int_equal(hello->hello->n_labels, 1);
	assert_string_equal(hello->hello->labels[0]->key, "rack");
	assert_string_equal(hello->hello->labels[0]->value, "r1");
	assert_int_equal(hello->hello->n_vms, 0);
	check_inventory(hello->hello->inventory);

	/* The generated host id is kept and survives a restart. */
	snprintf(path, sizeof(path), "%s/host-id", x->state_dir);
	f = fopen(path, "r");
	assert_non_null(f);
	assert_non_null(fgets(text, sizeof(text), f));
	fclose(f);
	assert_int_equal(strncmp(text, hello->hello->host_id, 36), 0);

	/* Heartbeats every HEARTBEAT_MS (Welcome's interval). */
	fakectl_discard(&x->f, DROVER__ENVELOPE__BODY_HEARTBEAT);
	hb1 = fakectl_wait(&x->f, DROVER__ENVELOPE__BODY_HEARTBEAT, 3000);
	t1 = test_now_ms();
	hb2 = fakectl_wait(&x->f, DROVER__ENVELOPE__BODY_HEARTBEAT, 3000);
	t2 = test_now_ms();
	assert_non_null(hb1);
	assert_non_null(hb2);
	assert_true(t2 - t1 >= HEARTBEAT_MS / 2 && t2 - t1 <= HEARTBEAT_MS * 3);
	check_inventory(hb2->heartbeat->inventory);
	fakectl_free(hb1);
	fakectl_free(hb2);

	assert_int_equal(agentproc_stop(&x->a, SIGTERM, 5000), 0);
	start_agent(x);
	hb1 = fakectl_wait(&x->f, DROVER__ENVELOPE__BODY_HELLO, 5000);
	assert_non_null(hb1);
	assert_string_equal(hb1->hello->host_id, hello->hello->host_id);
	fakectl_free(hb1);
	fakectl_free(hello);
}

static void test_lifecycle(void **state)
{
	struct fx *x = *state;
	char def[1024], console[256], dir[256];
	Drover__Envelope *env;
	const Drover__VmStatus *st;
	pid_t pid;
	int n, banners;

	start_agent(x);
	pid = start_ticker(x, "vm1");
	vm_file(x, "vm1", "console.log", console, sizeof(console));

	/* Defining it again with the same document changes nothing. */
	definition(def, sizeof(def), "vm1", hello_elf, "hello.ticks");
	expect_ok(x, fakectl_define(&x->f, "vm1", def, CMD_MS), "running");
	/* Starting a running VM succeeds and keeps it. */
	env = fakectl_vm(&x->f, DROVER__COMMAND__KIND_START, "vm1", CMD_MS);
	assert_int_equal(result_of(x, env, true, NULL)->status->pid, pid);
	fakectl_free(env);

	/* Heartbeats count its vCPU and memory. */
	fakectl_discard(&x->f, DROVER__ENVELOPE__BODY_HEARTBEAT);
	env = fakectl_wait(&x->f, DROVER__ENVELOPE__BODY_HEARTBEAT, 3000);
	assert_non_null(env);
	assert_int_equal(env->heartbeat->inventory->vcpus_used, 1);
	assert_int_equal(env->heartbeat->inventory->mem_used, 64ULL << 20);
	st = find_vm(env, "vm1");
	assert_non_null(st);
	assert_string_equal(st->state, "running");
	assert_int_equal(st->pid, pid);
	fakectl_free(env);

	/* Pause: the guest really stops ticking. */
	expect_ok(x, fakectl_vm(&x->f, DROVER__COMMAND__KIND_PAUSE, "vm1", CMD_MS), "paused");
	fakectl_free(wait_event(x, "vm1", "paused"));
	fakectl_spin(&x->f, 150);
	n = test_count_lines(console, TICK);
	fakectl_spin(&x->f, 400);
	assert_int_equal(test_count_lines(console, TICK), n);
	expect_ok(x, fakectl_vm(&x->f, DROVER__COMMAND__KIND_PAUSE, "vm1", CMD_MS), "paused");

	/* Resume: it ticks again. */
	expect_ok(x, fakectl_vm(&x->f, DROVER__COMMAND__KIND_RESUME, "vm1", CMD_MS), "running");
	fakectl_free(wait_event(x, "vm1", "resumed"));
	spin_until_lines(x, console, TICK, n + 3);

	/* Reboot: the guest starts over (its banner again). */
	banners = test_count_substr(console, BANNER);
	expect_ok(x, fakectl_vm(&x->f, DROVER__COMMAND__KIND_REBOOT, "vm1", CMD_MS), "running");
	fakectl_free(wait_event(x, "vm1", "reset"));
	{
		uint64_t end = test_now_ms() + 5000;

		while (test_count_substr(console, BANNER) < banners + 1 && test_now_ms() < end)
			fakectl_spin(&x->f, 20);
		assert_int_equal(test_count_substr(console, BANNER), banners + 1);
	}

	/* Undefining a running VM is refused. */
	expect_error(x, fakectl_vm(&x->f, DROVER__COMMAND__KIND_UNDEFINE, "vm1", CMD_MS),
		     "not-stopped", "stop or destroy it first");

	/* Graceful stop: drover-vmm quits (exit status 4). */
	env = fakectl_stopvm(&x->f, "vm1", 5000, false, CMD_MS);
	result_of(x, env, true, NULL);
	assert_string_equal(env->result->status->state, "stopped");
	assert_int_equal(env->result->status->pid, 0);
	assert_int_equal(env->result->status->exit_status, 4);
	assert_string_equal(env->result->status->exit_reason, "host-qmp-quit");
	fakectl_free(env);
	fakectl_free(wait_event(x, "vm1", "stopped"));
	assert_true(test_wait_pid_gone(pid, 3000));
	/* Stopping a stopped VM succeeds. */
	expect_ok(x, fakectl_stopvm(&x->f, "vm1", 0, false, CMD_MS), "stopped");

	/* Start again, then a forced stop. */
	env = fakectl_vm(&x->f, DROVER__COMMAND__KIND_START, "vm1", CMD_MS);
	pid = result_of(x, env, true, NULL)->status->pid;
	remember_pid(x, pid);
	assert_true(pid > 0);
	fakectl_free(env);
	env = fakectl_stopvm(&x->f, "vm1", 0, true, CMD_MS);
	result_of(x, env, true, NULL);
	assert_string_equal(env->result->status->state, "stopped");
	assert_string_equal(env->result->status->exit_reason, "forced-stop");
	fakectl_free(env);
	assert_true(test_wait_pid_gone(pid, 3000));

	/* Start, destroy: SIGKILL, definition kept. */
	env = fakectl_vm(&x->f, DROVER__COMMAND__KIND_START, "vm1", CMD_MS);
	pid = result_of(x, env, true, NULL)->status->pid;
	remember_pid(x, pid);
	fakectl_free(env);
	env = fakectl_vm(&x->f, DROVER__COMMAND__KIND_DESTROY, "vm1", CMD_MS);
	result_of(x, env, true, NULL);
	assert_string_equal(env->result->status->state, "stopped");
	assert_string_equal(env->result->status->exit_reason, "destroyed");
	fakectl_free(env);
	assert_true(test_wait_pid_gone(pid, 3000));
	expect_ok(x, fakectl_vm(&x->f, DROVER__COMMAND__KIND_DESTROY, "vm1", CMD_MS), "stopped");
	vm_file(x, "vm1", "definition.json", dir, sizeof(dir));
	assert_true(test_file_size(dir) > 0);

	/* Undefine: the run directory goes, the VM is unknown afterwards. */
	env = fakectl_vm(&x->f, DROVER__COMMAND__KIND_UNDEFINE, "vm1", CMD_MS);
	result_of(x, env, true, NULL);
	fakectl_free(env);
	fakectl_free(wait_event(x, "vm1", "undefined"));
	snprintf(dir, sizeof(dir), "%s/vms/vm1", x->run_dir);
	assert_true(access(dir, F_OK) != 0);
	expect_error(x, fakectl_vm(&x->f, DROVER__COMMAND__KIND_START, "vm1", CMD_MS),
		     "not-found", "vm1");

	/* The agent exits on SIGTERM with status 0. */
	assert_int_equal(agentproc_stop(&x->a, SIGTERM, 5000), 0);
}

/* ---- restart: the agent dies, VMs live on and are adopted ---- */

static void test_restart_adopts(void **state)
{
	struct fx *x = *state;
	char console[256], console2[256];
	Drover__Envelope *hello, *env;
	const Drover__VmStatus *st;
	long long size;
	pid_t pid, pid2;

	start_agent(x);
	pid = start_ticker(x, "keep");
	pid2 = start_ticker(x, "doomed");
	vm_file(x, "keep", "console.log", console, sizeof(console));
	vm_file(x, "doomed", "console.log", console2, sizeof(console2));

	/* Kill the agent outright; the VMs keep ticking. */
	assert_int_equal(agentproc_stop(&x->a, SIGKILL, 5000), 128 + SIGKILL);
	size = test_file_size(console);
	fakectl_spin(&x->f, 400);
	assert_true(test_pid_alive(pid));
	assert_true(test_file_size(console) > size);
	/* While no agent watches, the other VM's VMM dies. */
	kill(pid2, SIGKILL);
	assert_true(test_wait_pid_gone(pid2, 3000));

	fakectl_discard(&x->f, DROVER__ENVELOPE__BODY_HELLO);
	fakectl_discard(&x->f, DROVER__ENVELOPE__BODY_VM_EVENT);
	start_agent(x);
	hello = fakectl_wait(&x->f, DROVER__ENVELOPE__BODY_HELLO, 5000);
	assert_non_null(hello);
	st = find_vm(hello, "keep");
	assert_non_null(st);
	assert_string_equal(st->state, "running");
	assert_int_equal(st->pid, pid);
	assert_non_null(find_vm(hello, "doomed"));
	fakectl_free(hello);

	env = wait_event(x, "keep", "adopted");
	assert_string_equal(env->vm_event->status->state, "running");
	assert_int_equal(env->vm_event->status->pid, pid);
	fakectl_free(env);
	env = wait_event(x, "doomed", "crashed");
	assert_string_equal(env->vm_event->status->state, "crashed");
	assert_int_equal(env->vm_event->status->pid, 0);
	fakectl_free(env);

	/* The adopted VM is driven as before: pause, resume, stop. */
	size = test_file_size(console);
	fakectl_spin(&x->f, 200);
	assert_true(test_file_size(console) > size);
	expect_ok(x, fakectl_vm(&x->f, DROVER__COMMAND__KIND_PAUSE, "keep", CMD_MS), "paused");
	expect_ok(x, fakectl_vm(&x->f, DROVER__COMMAND__KIND_RESUME, "keep", CMD_MS), "running");
	env = fakectl_stopvm(&x->f, "keep", 5000, false, CMD_MS);
	result_of(x, env, true, NULL);
	assert_string_equal(env->result->status->state, "stopped");
	/* Not the agent's child any more: the reason comes from SHUTDOWN. */
	assert_string_equal(env->result->status->exit_reason, "host-qmp-quit");
	assert_int_equal(env->result->status->exit_status, 4);
	fakectl_free(env);
	assert_true(test_wait_pid_gone(pid, 3000));

	/* The dead one starts again. */
	env = fakectl_vm(&x->f, DROVER__COMMAND__KIND_START, "doomed", CMD_MS);
	result_of(x, env, true, NULL);
	remember_pid(x, env->result->status->pid);
	fakectl_free(env);
	expect_ok(x, fakectl_vm(&x->f, DROVER__COMMAND__KIND_DESTROY, "doomed", CMD_MS),
		  "stopped");
}

/* ---- network: the controller goes away, refuses, talks garbage ---- */

static void test_reconnect(void **state)
{
	struct fx *x = *state;
	char console[256];
	Drover__Envelope *hello;
	const Drover__VmStatus *st;
	long long size;
	pid_t pid;

	start_agent(x);
	pid = start_ticker(x, "steady");
	vm_file(x, "steady", "console.log", console, sizeof(console));

	/* The controller drops the connection: the agent comes back. */
	fakectl_discard(&x->f, DROVER__ENVELOPE__BODY_HELLO);
	fakectl_drop(&x->f);
	assert_true(fakectl_wait_connections(&x->f, 2, 5000));
	hello = fakectl_wait(&x->f, DROVER__ENVELOPE__BODY_HELLO, 5000);
	assert_non_null(hello);
	st = find_vm(hello, "steady");
	assert_non_null(st);
	assert_string_equal(st->state, "running");
	assert_int_equal(st->pid, pid);
	fakectl_free(hello);

	/* The controller is gone for a while (connections refused). */
	fakectl_drop(&x->f);
	fakectl_unlisten(&x->f);
	size = test_file_size(console);
	fakectl_spin(&x->f, 1500);
	assert_true(test_pid_alive(pid));
	assert_true(test_file_size(console) > size);
	assert_int_equal(fakectl_relisten(&x->f), 0);
	assert_true(fakectl_wait_connections(&x->f, 3, 5000));
	hello = fakectl_wait(&x->f, DROVER__ENVELOPE__BODY_HELLO, 5000);
	assert_non_null(hello);
	st = find_vm(hello, "steady");
	assert_non_null(st);
	assert_int_equal(st->pid, pid);
	fakectl_free(hello);
	/* And commands work on the new connection. */
	expect_ok(x, fakectl_vm(&x->f, DROVER__COMMAND__KIND_DESTROY, "steady", CMD_MS),
		  "stopped");
}

static void test_backoff_when_refused(void **state)
{
	struct fx *x = *state;
	Drover__Envelope *hb;
	uint64_t end;
	unsigned n;

	/* reconnect-min-ms 100, max 800: after refusal k (from 0) the agent
	 * waits a draw from the upper half of min(100 * 2^k, 800) ms. Each gap
	 * between two connections is checked against its own window, with
	 * room for a loaded machine on the late side. */
	x->f.mode = FAKECTL_REFUSE;
	start_agent(x);
	end = test_now_ms() + 8000;
	while (x->f.accepted < 7 && test_now_ms() < end)
		fakectl_spin(&x->f, 5);
	n = x->f.accepted;
	assert_true(n >= 7);
	for (unsigned i = 1; i < 7; i++) {
		uint64_t gap = x->f.accept_ms[i] - x->f.accept_ms[i - 1];
		uint64_t full = 100ULL << (i - 1);

		if (full > 800)
			full = 800;
		if (gap + 15 < full / 2 || gap > full + 250)
			fail_msg("wait %u: %llu ms, expected %llu to %llu", i,
				 (unsigned long long)gap, (unsigned long long)full / 2,
				 (unsigned long long)full);
	}
	/* The agent lives on and gets in once the controller welcomes it:
	 * heartbeats flow only after a Welcome. */
	x->f.mode = FAKECTL_WELCOME;
	hb = fakectl_wait(&x->f, DROVER__ENVELOPE__BODY_HEARTBEAT, 5000);
	assert_non_null(hb);
	fakectl_free(hb);
	assert_true(test_pid_alive(x->a.pid));
}

/* Reads one frame's Envelope from a raw socket (NULL on timeout or close). */
static Drover__Envelope *raw_recv(struct fakectl *f, int timeout_ms)
{
	static uint8_t buf[1 << 20];
	static size_t have;
	uint64_t end = test_now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		if (have >= 4) {
			uint32_t len = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 |
				       (uint32_t)buf[2] << 8 | buf[3];

			if (have >= 4 + len) {
				Drover__Envelope *env = drover__envelope__unpack(NULL, len, buf + 4);

				memmove(buf, buf + 4 + len, have - 4 - len);
				have -= 4 + len;
				return env;
			}
		}
		if (test_now_ms() >= end)
			return NULL;
		ssize_t n = recv(f->raw_fd, buf + have, sizeof(buf) - have, MSG_DONTWAIT);
		if (n == 0) {
			have = 0;
			return NULL;
		}
		if (n > 0)
			have += (size_t)n;
		else
			usleep(5000);
	}
}

static void test_garbage(void **state)
{
	struct fx *x = *state;
	static const uint8_t junk[] = { 0, 0, 0, 12, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa, 0xf9,
					 0xf8, 0xf7, 0xf6, 0xf5, 0xf4 };
	static const uint8_t huge[] = { 0x7f, 0xff, 0xff, 0xff, 1, 2, 3 };
	Drover__Envelope *env;
	char console[256];
	long long size;
	pid_t pid;

	start_agent(x);
	pid = start_ticker(x, "witness");
	vm_file(x, "witness", "console.log", console, sizeof(console));

	/* A Heartbeat sent to the agent: answered, connection kept. */
	{
		Drover__Envelope e = DROVER__ENVELOPE__INIT;
		Drover__Heartbeat hb = DROVER__HEARTBEAT__INIT;

		e.body_case = DROVER__ENVELOPE__BODY_HEARTBEAT;
		e.heartbeat = &hb;
		int64_t seq = fakectl_send(&x->f, &e);
		assert_true(seq > 0);
		env = fakectl_wait(&x->f, DROVER__ENVELOPE__BODY_ERROR, 3000);
		assert_non_null(env);
		assert_string_equal(env->error->code, "unexpected-message");
		assert_int_equal(env->reply_to, (uint64_t)seq);
		fakectl_free(env);
	}
	/* A Command with no kind. */
	{
		Drover__Command cmd = DROVER__COMMAND__INIT;

		expect_error(x, fakectl_command(&x->f, &cmd, CMD_MS), "unknown-command", NULL);
	}
	unsigned conns = x->f.accepted;

	/* Raw garbage: the agent says bad-frame and hangs up, then dials again. */
	x->f.mode = FAKECTL_RAW;
	fakectl_drop(&x->f);
	assert_true(fakectl_wait_connections(&x->f, conns + 1, 5000));
	env = raw_recv(&x->f, 3000);
	assert_non_null(env);
	assert_int_equal(env->body_case, DROVER__ENVELOPE__BODY_HELLO);
	fakectl_free(env);
	assert_int_equal(send(x->f.raw_fd, junk, sizeof(junk), MSG_NOSIGNAL), (ssize_t)sizeof(junk));
	env = raw_recv(&x->f, 3000);
	assert_non_null(env);
	assert_int_equal(env->body_case, DROVER__ENVELOPE__BODY_ERROR);
	assert_string_equal(env->error->code, "bad-frame");
	fakectl_free(env);
	assert_null(raw_recv(&x->f, 3000));    /* closed */

	/* A frame length far beyond the limit. */
	assert_true(fakectl_wait_connections(&x->f, conns + 2, 5000));
	fakectl_free(raw_recv(&x->f, 3000));   /* its Hello */
	assert_int_equal(send(x->f.raw_fd, huge, sizeof(huge), MSG_NOSIGNAL), (ssize_t)sizeof(huge));
	env = raw_recv(&x->f, 3000);
	assert_non_null(env);
	assert_string_equal(env->error->code, "frame-too-large");
	fakectl_free(env);

	/* Back to a sane controller: the agent and its VM are fine. */
	x->f.mode = FAKECTL_WELCOME;
	fakectl_drop(&x->f);
	fakectl_discard(&x->f, DROVER__ENVELOPE__BODY_HELLO);
	assert_true(fakectl_wait_connections(&x->f, conns + 3, 5000));
	env = fakectl_wait(&x->f, DROVER__ENVELOPE__BODY_HELLO, 5000);
	assert_non_null(env);
	assert_int_equal(find_vm(env, "witness")->pid, pid);
	fakectl_free(env);
	size = test_file_size(console);
	fakectl_spin(&x->f, 200);
	assert_true(test_file_size(console) > size);
	assert_true(test_pid_alive(x->a.pid));
	expect_ok(x, fakectl_vm(&x->f, DROVER__COMMAND__KIND_DESTROY, "witness", CMD_MS),
		  "stopped");
}

/* ---- faults: crashes, bad input ---- */

static void test_crashes(void **state)
{
	struct fx *x = *state;
	char def[1024];
	Drover__Envelope *env;
	pid_t pid;

	start_agent(x);
	/* Its VMM killed from outside: crashed, with the reason. */
	pid = start_ticker(x, "victim");
	kill(pid, SIGKILL);
	env = wait_event(x, "victim", "crashed");
	assert_string_equal(env->vm_event->status->state, "crashed");
	assert_string_equal(env->vm_event->status->exit_reason, "killed");
	assert_non_null(strstr(env->vm_event->detail, "SIGKILL"));
	fakectl_free(env);
	test_wait_pid_gone(pid, 3000);
	/* It starts again. */
	env = fakectl_vm(&x->f, DROVER__COMMAND__KIND_START, "victim", CMD_MS);
	result_of(x, env, true, NULL);
	remember_pid(x, env->result->status->pid);
	fakectl_free(env);
	expect_ok(x, fakectl_vm(&x->f, DROVER__COMMAND__KIND_DESTROY, "victim", CMD_MS),
		  "stopped");

	/* A guest that triple-faults: crashed, guest-crash. */
	definition(def, sizeof(def), "crasher", hello_elf, "hello.crash");
	expect_ok(x, fakectl_define(&x->f, "crasher", def, CMD_MS), "defined");
	env = fakectl_vm(&x->f, DROVER__COMMAND__KIND_START, "crasher", CMD_MS);
	result_of(x, env, true, NULL);
	remember_pid(x, env->result->status->pid);
	fakectl_free(env);
	env = wait_event(x, "crasher", "crashed");
	assert_string_equal(env->vm_event->status->exit_reason, "guest-crash");
	assert_int_equal(env->vm_event->status->exit_status, 2);
	fakectl_free(env);

	/* A guest that powers off: stopped, guest-shutdown, status 0. */
	definition(def, sizeof(def), "quitter", hello_elf, "hello.poweroff");
	expect_ok(x, fakectl_define(&x->f, "quitter", def, CMD_MS), "defined");
	env = fakectl_vm(&x->f, DROVER__COMMAND__KIND_START, "quitter", CMD_MS);
	result_of(x, env, true, NULL);
	remember_pid(x, env->result->status->pid);
	fakectl_free(env);
	env = wait_event(x, "quitter", "stopped");
	assert_string_equal(env->vm_event->status->exit_reason, "guest-shutdown");
	assert_int_equal(env->vm_event->status->exit_status, 0);
	fakectl_free(env);
}

static void test_bad_input(void **state)
{
	struct fx *x = *state;
	char def[1024];
	Drover__Envelope *env;

	start_agent(x);
	expect_error(x, fakectl_define(&x->f, "bad", "this is no JSON", CMD_MS),
		     "bad-definition", "line 1");
	expect_error(x, fakectl_define(&x->f, "bad", "{\"memory\": \"64M\", \"boot\": "
				       "{\"kernel\": \"/k\"}, \"colour\": \"red\"}", CMD_MS),
		     "bad-definition", "unknown key 'colour'");
	expect_error(x, fakectl_define(&x->f, "bad", "{\"memory\": \"12X\", \"boot\": "
				       "{\"kernel\": \"/k\"}}", CMD_MS),
		     "bad-definition", "12X");
	expect_error(x, fakectl_define(&x->f, "bad", "{\"memory\": \"64M\"}", CMD_MS),
		     "bad-definition", "kernel");
	/* Refused definitions leave nothing behind. */
	expect_error(x, fakectl_vm(&x->f, DROVER__COMMAND__KIND_START, "bad", CMD_MS),
		     "not-found", NULL);
	expect_error(x, fakectl_vm(&x->f, DROVER__COMMAND__KIND_PAUSE, "nobody", CMD_MS),
		     "not-found", "nobody");
	expect_error(x, fakectl_stopvm(&x->f, "nobody", 0, false, CMD_MS), "not-found", NULL);
	expect_error(x, fakectl_define(&x->f, "../escape", "{}", CMD_MS), "bad-request",
		     "../escape");
	expect_error(x, fakectl_vm(&x->f, DROVER__COMMAND__KIND_START, "", CMD_MS),
		     "bad-request", NULL);

	/* A kernel that is not there: drover-vmm exits at once; its first line. */
	definition(def, sizeof(def), "nokernel", "/nonexistent/vmlinux", "");
	expect_ok(x, fakectl_define(&x->f, "nokernel", def, CMD_MS), "defined");
	env = fakectl_vm(&x->f, DROVER__COMMAND__KIND_START, "nokernel", CMD_MS);
	result_of(x, env, false, "vmm-failed");
	assert_non_null(strstr(env->result->message, "/nonexistent/vmlinux"));
	assert_non_null(strstr(env->result->message, "drover-vmm: error:"));
	assert_string_equal(env->result->status->state, "stopped");
	fakectl_free(env);
	/* Pausing what does not run. */
	expect_error(x, fakectl_vm(&x->f, DROVER__COMMAND__KIND_PAUSE, "nokernel", CMD_MS),
		     "not-running", NULL);
	assert_true(test_pid_alive(x->a.pid));
}

static void test_bad_config(void **state)
{
	struct fx *x = *state;
	char err[4096], path[256];
	struct {
		const char *text;
		const char *expect;
	} cases[] = {
		{ "{\"controller\": \"h:1\", \"colour\": 1}", "unknown key 'colour'" },
		{ "{\"controller\": 7}", "'controller' must be a string, not an integer" },
		{ "{\"controller\": \"nohostport\"}", "'controller'" },
		{ "{\"host-name\": \"x\"}", "'controller' is missing" },
		{ "{\"controller\": \"h:1\", \"host-id\": \"not-a-uuid\"}", "'host-id'" },
		{ "{\"controller\": \"h:1\", \"reserved\": {\"cpus\": \"two\"}}",
		  "'reserved.cpus' must be an integer" },
		{ "{\"controller\": \"h:1\", \"labels\": {\"a\": 1}}", "'labels.a' must be a string" },
		{ "{\"controller\": \"h:1\", \"run-dir\": \"relative\"}", "absolute" },
		{ "{\"controller\": \"h:1\", \"heartbeat-interval-ms\": 5}", "out of range" },
		{ "[1, 2]", "must be a JSON object" },
		{ "{\"controller\": ", "line 1" },
	};
	const char *args_help[] = { "--help", NULL };
	const char *args_bad[] = { "--bogus", NULL };
	const char *args_missing[] = { "--config", "/nonexistent/agent.json", NULL };

	snprintf(path, sizeof(path), "%s/bad.json", x->dir);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *args[] = { "--config", path, NULL };

		assert_int_equal(test_write(path, cases[i].text), 0);
		assert_int_equal(agentproc_run(agent_bin, args, err, sizeof(err), 5000), 1);
		if (!strstr(err, cases[i].expect))
			fail_msg("config %s: message '%s' lacks '%s'", cases[i].text, err,
				 cases[i].expect);
	}
	assert_int_equal(agentproc_run(agent_bin, args_help, err, sizeof(err), 5000), 0);
	assert_non_null(strstr(err, "--config FILE"));
	assert_int_equal(agentproc_run(agent_bin, args_bad, err, sizeof(err), 5000), 2);
	assert_non_null(strstr(err, "--bogus"));
	assert_int_equal(agentproc_run(agent_bin, args_missing, err, sizeof(err), 5000), 1);
	assert_non_null(strstr(err, "/nonexistent/agent.json"));
}

int main(int argc, char **argv)
{
	const struct CMUnitTest basic[] = {
		cmocka_unit_test_setup_teardown(test_hello_heartbeat, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lifecycle, setup, teardown),
	};
	const struct CMUnitTest restart[] = {
		cmocka_unit_test_setup_teardown(test_restart_adopts, setup, teardown),
	};
	const struct CMUnitTest network[] = {
		cmocka_unit_test_setup_teardown(test_reconnect, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backoff_when_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
	};
	const struct CMUnitTest faults[] = {
		cmocka_unit_test_setup_teardown(test_crashes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_config, setup, teardown),
	};

	if (argc != 5) {
		fprintf(stderr, "usage: %s DROVER_AGENT DROVER_VMM HELLO_ELF "
			"basic|restart|network|faults\n", argv[0]);
		return 2;
	}
	agent_bin = argv[1];
	vmm_bin = argv[2];
	hello_elf = argv[3];
	/* VMMs outlive a killed agent: as their reaper, this test can reap
	 * them instead of leaving zombies to whatever pid 1 is. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	signal(SIGPIPE, SIG_IGN);
	if (!strcmp(argv[4], "basic"))
		return cmocka_run_group_tests_name("agent basic", basic, NULL, NULL);
	if (!strcmp(argv[4], "restart"))
		return cmocka_run_group_tests_name("agent restart", restart, NULL, NULL);
	if (!strcmp(argv[4], "network"))
		return cmocka_run_group_tests_name("agent network", network, NULL, NULL);
	if (!strcmp(argv[4], "faults"))
		return cmocka_run_group_tests_name("agent faults", faults, NULL, NULL);
	fprintf(stderr, "unknown group '%s'\n", argv[4]);
	return 2;
}
