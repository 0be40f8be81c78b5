/* agent/vmmdrv_drover.c: the drover-vmm driver against real drover-vmm
 * processes booting the hello guest: launch, control, stops graceful and
 * forced, every way a VMM ends and the reason it is reported with,
 * adoption (and refusing to adopt what is not the VM's VMM), postmortem. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/prctl.h>

#include "agent_fs.h"
#include "log.h"
#include "test_agent_helpers.h"
#include "util.h"
#include "vmmdrv.h"

static char vmm_bin[PATH_MAX], hello[PATH_MAX];

struct watch {
	bool ready, paused, exited, done;
	int done_err;
	char done_msg[256];
	struct vmm_proc proc;
	struct vmm_exit ex;
	char events[512];
};

static void on_ready(void *opaque, bool paused, const struct vmm_proc *proc)
{
	struct watch *w = opaque;

	w->ready = true;
	w->paused = paused;
	w->proc = *proc;
}

static void on_event(void *opaque, const char *event, const char *detail)
{
	struct watch *w = opaque;
	size_t n = strlen(w->events);

	snprintf(w->events + n, sizeof(w->events) - n, "%s ", event);
}

static void on_exited(void *opaque, const struct vmm_exit *ex)
{
	struct watch *w = opaque;

	w->exited = true;
	w->ex = *ex;
}

static const struct vmm_listener listener = { on_ready, on_event, on_exited };

static void on_done(void *opaque, int err, const char *msg)
{
	struct watch *w = opaque;

	w->done = true;
	w->done_err = err;
	snprintf(w->done_msg, sizeof(w->done_msg), "%s", msg);
}

struct fx {
	struct evloop *loop;
	char dir[64];
	char vmdir[128];
	struct vmm *v;
	struct watch w;
	pid_t pid;
};

static int setup(void **state)
{
	struct fx *x = calloc(1, sizeof(*x));

	assert_int_equal(evloop_new(&x->loop), 0);
	th_tmpdir(x->dir, sizeof(x->dir));
	snprintf(x->vmdir, sizeof(x->vmdir), "%s/vm", x->dir);
	assert_int_equal(fs_mkdir_p(x->vmdir, 0755), 0);
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct fx *x = *state;

	if (x->v && !x->w.exited)
		vmmdrv_drover.release(x->v);
	th_kill(x->pid);
	evloop_free(x->loop);
	th_rmtree(x->dir);
	free(x);
	return 0;
}

static void def_text(char *out, size_t len, const char *kernel, const char *cmdline)
{
	int n = snprintf(out, len, "{\"vcpus\": 1, \"memory\": \"64M\", \"boot\": {\"kernel\": \"%s\", "
		 "\"cmdline\": \"%s\"}}", kernel, cmdline);

	assert_true(n > 0 && (size_t)n < len);
}

static struct vmm_spec spec_for(struct fx *x, const char *def, const char *id)
{
	struct vmm_spec spec = {
		.vm_id = id, .dir = x->vmdir, .binary = vmm_bin, .definition = def,
		.definition_len = def ? strlen(def) : 0, .ready_timeout_ms = 5000,
	};
	return spec;
}

/* Launches and waits until ready (or exited when expect_ready is false). */
static void launch(struct fx *x, const char *cmdline, bool expect_ready)
{
	char def[PATH_MAX + 512], err[512] = "";
	struct vmm_proc proc;
	struct vmm_spec spec;

	def_text(def, sizeof(def), hello, cmdline);
	spec = spec_for(x, def, "vm-under-test");
	memset(&x->w, 0, sizeof(x->w));
	assert_int_equal(vmmdrv_drover.launch(x->loop, &spec, &listener, &x->w, &x->v, &proc, err,
					      sizeof(err)), 0);
	x->pid = proc.pid;
	assert_true(proc.pid > 0);
	assert_true(proc.start > 0);
	assert_int_equal(proc.start, vmmdrv_proc_start(proc.pid));
	if (expect_ready) {
		assert_true(th_spin_until(x->loop, &x->w.ready, 5000));
		assert_int_equal(x->w.proc.pid, proc.pid);
	} else {
		assert_true(th_spin_until(x->loop, &x->w.exited, 5000));
	}
}

static void console(struct fx *x, char *out, size_t len)
{
	snprintf(out, len, "%s/%s", x->vmdir, FS_CONSOLE);
}

/* Spins the loop until the console holds at least min ticks (a loaded
 * host runs the guest slower); false after ms. */
static bool ticks_reach(struct fx *x, const char *path, int min, int ms)
{
	for (int waited = 0; waited < ms; waited += 50) {
		if (th_count_lines(path, "hello: tick ") >= min)
			return true;
		th_spin(x->loop, 50);
	}
	return th_count_lines(path, "hello: tick ") >= min;
}

static void test_launch_control_quit(void **state)
{
	struct fx *x = *state;
	char path[256];
	int n;

	launch(x, "hello.ticks", true);
	assert_false(x->w.paused);
	console(x, path, sizeof(path));
	assert_true(ticks_reach(x, path, 2, 10000));

	/* Pause: the guest stops; the VMM says so (STOP -> "paused"). */
	assert_int_equal(vmmdrv_drover.control(x->v, VMM_CONTROL_PAUSE, on_done, &x->w), 0);
	assert_true(th_spin_until(x->loop, &x->w.done, 3000));
	assert_int_equal(x->w.done_err, 0);
	th_spin(x->loop, 100);
	assert_non_null(strstr(x->w.events, "paused"));
	n = th_count_lines(path, "hello: tick ");
	th_spin(x->loop, 300);
	assert_int_equal(th_count_lines(path, "hello: tick "), n);

	x->w.done = false;
	assert_int_equal(vmmdrv_drover.control(x->v, VMM_CONTROL_RESUME, on_done, &x->w), 0);
	assert_true(th_spin_until(x->loop, &x->w.done, 3000));
	assert_true(ticks_reach(x, path, n + 1, 10000));
	assert_non_null(strstr(x->w.events, "resumed"));

	x->w.done = false;
	assert_int_equal(vmmdrv_drover.control(x->v, VMM_CONTROL_RESET, on_done, &x->w), 0);
	assert_true(th_spin_until(x->loop, &x->w.done, 3000));
	th_spin(x->loop, 200);
	assert_non_null(strstr(x->w.events, "reset"));
	/* The reset may cut a line: count the banner wherever it is. */
	{
		FILE *f = fopen(path, "r");
		char line[1024];
		int banners = 0;

		assert_non_null(f);
		while (fgets(line, sizeof(line), f))
			banners += strstr(line, "hello: hello from a test guest") != NULL;
		fclose(f);
		assert_int_equal(banners, 2);
	}

	/* Graceful stop: the ACPI power button, which the hello guest does not
	 * heed; after the stop timeout drover-vmm is asked to quit. */
	uint64_t t0 = monotonic_ns();
	vmmdrv_drover.stop(x->v, false, 500);
	assert_true(th_spin_until(x->loop, &x->w.exited, 7000));
	assert_true(monotonic_ns() - t0 >= 500000000ull);
	assert_int_equal(x->w.ex.status, 4);
	assert_int_equal(x->w.ex.signal, 0);
	assert_string_equal(x->w.ex.reason, "host-qmp-quit");
	assert_true(x->w.ex.guest_ran);
	assert_false(th_pid_alive(x->pid));
}

static void test_force_stop(void **state)
{
	struct fx *x = *state;

	launch(x, "hello.ticks", true);
	vmmdrv_drover.stop(x->v, true, 0);
	assert_true(th_spin_until(x->loop, &x->w.exited, 5000));
	assert_int_equal(x->w.ex.signal, SIGKILL);
	assert_string_equal(x->w.ex.reason, "killed");
	assert_non_null(strstr(x->w.ex.detail, "SIGKILL"));
}

/* How the guest ends decides the status and the reason. */
static void test_exit_reasons(void **state)
{
	struct fx *x = *state;
	static const struct {
		const char *cmdline;
		int status;
		const char *reason;
	} cases[] = {
		{ "hello.poweroff", 0, "guest-shutdown" },
		{ "hello.crash", 2, "guest-crash" },
		{ "hello.exit=7", 16 + 7, "guest-debug-exit" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char def[PATH_MAX + 512], err[512];
		struct vmm_proc proc;
		struct vmm_spec spec;

		def_text(def, sizeof(def), hello, cases[i].cmdline);
		spec = spec_for(x, def, "ender");
		memset(&x->w, 0, sizeof(x->w));
		assert_int_equal(vmmdrv_drover.launch(x->loop, &spec, &listener, &x->w, &x->v, &proc,
						      err, sizeof(err)), 0);
		x->pid = proc.pid;
		assert_true(th_spin_until(x->loop, &x->w.exited, 5000));
		if (x->w.ex.status != cases[i].status || strcmp(x->w.ex.reason, cases[i].reason))
			fail_msg("%s: status %d reason %s", cases[i].cmdline, x->w.ex.status,
				 x->w.ex.reason);
		assert_true(x->w.ex.guest_ran);
	}
}

static void test_missing_kernel(void **state)
{
	struct fx *x = *state;
	char def[PATH_MAX + 512], err[512];
	struct vmm_proc proc;
	struct vmm_spec spec;

	def_text(def, sizeof(def), "/nonexistent/kernel", "");
	spec = spec_for(x, def, "broken");
	assert_int_equal(vmmdrv_drover.launch(x->loop, &spec, &listener, &x->w, &x->v, &proc, err,
					      sizeof(err)), 0);
	x->pid = proc.pid;
	assert_true(th_spin_until(x->loop, &x->w.exited, 5000));
	assert_false(x->w.ready);
	assert_int_equal(x->w.ex.status, 1);
	assert_string_equal(x->w.ex.reason, "vmm-failed");
	assert_false(x->w.ex.guest_ran);
	/* drover-vmm's own first line, naming the file. */
	assert_non_null(strstr(x->w.ex.detail, "drover-vmm: error:"));
	assert_non_null(strstr(x->w.ex.detail, "/nonexistent/kernel"));
}

static void test_launch_refuses_bad_input(void **state)
{
	struct fx *x = *state;
	char err[512] = "";
	struct vmm_proc proc;
	struct vmm_spec spec = spec_for(x, "{\"memory\": \"64M\"", "x");
	char longdir[200];

	assert_true(vmmdrv_drover.launch(x->loop, &spec, &listener, &x->w, &x->v, &proc, err,
					 sizeof(err)) < 0);
	assert_non_null(strstr(err, "no JSON"));
	spec.binary = "/nonexistent/drover-vmm";
	spec.definition = "{\"memory\": \"64M\", \"boot\": {\"kernel\": \"/k\"}}";
	spec.definition_len = strlen(spec.definition);
	assert_true(vmmdrv_drover.launch(x->loop, &spec, &listener, &x->w, &x->v, &proc, err,
					 sizeof(err)) < 0);
	assert_non_null(strstr(err, "/nonexistent/drover-vmm"));
	memset(longdir, 'd', sizeof(longdir) - 1);
	longdir[0] = '/';
	longdir[sizeof(longdir) - 1] = 0;
	spec.dir = longdir;
	assert_int_equal(vmmdrv_drover.check(&spec, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "control.sock"));
	x->v = NULL;
}

/* A VMM left running by a "dead agent" is adopted by pid, or through its
 * socket when no pid was recorded; after release nothing touches it. */
static void test_adopt(void **state)
{
	struct fx *x = *state;
	struct vmm_spec spec = spec_for(x, NULL, "vm-under-test");
	struct vmm_proc proc, launched;
	char err[512];

	launch(x, "hello.ticks", true);
	launched = x->w.proc;
	vmmdrv_drover.release(x->v);
	x->v = NULL;
	th_spin(x->loop, 100);
	assert_true(th_pid_alive(launched.pid));

	/* By pid and start time. */
	memset(&x->w, 0, sizeof(x->w));
	assert_int_equal(vmmdrv_drover.adopt(x->loop, &spec, launched.pid, launched.start,
					     &listener, &x->w, &x->v, &proc, err, sizeof(err)), 0);
	assert_true(th_spin_until(x->loop, &x->w.ready, 5000));
	assert_int_equal(x->w.proc.pid, launched.pid);
	vmmdrv_drover.release(x->v);

	/* A pid whose start time differs is another process: not adopted. */
	assert_int_equal(vmmdrv_drover.adopt(x->loop, &spec, launched.pid, launched.start + 1,
					     &listener, &x->w, &x->v, &proc, err, sizeof(err)),
			 -ESRCH);
	assert_non_null(strstr(err, "another process"));

	/* No pid recorded: the control socket names it. */
	memset(&x->w, 0, sizeof(x->w));
	assert_int_equal(vmmdrv_drover.adopt(x->loop, &spec, 0, 0, &listener, &x->w, &x->v, &proc,
					     err, sizeof(err)), 0);
	assert_int_equal(proc.pid, launched.pid);
	assert_true(th_spin_until(x->loop, &x->w.ready, 5000));

	/* Adopted: pause works, and its end is reported with SHUTDOWN's reason
	 * (it is no child of ours, so there is no wait status). */
	assert_int_equal(vmmdrv_drover.control(x->v, VMM_CONTROL_PAUSE, on_done, &x->w), 0);
	assert_true(th_spin_until(x->loop, &x->w.done, 3000));
	th_spin(x->loop, 100);
	assert_non_null(strstr(x->w.events, "paused"));
	vmmdrv_drover.stop(x->v, false, 300);
	assert_true(th_spin_until(x->loop, &x->w.exited, 7000));
	assert_string_equal(x->w.ex.reason, "host-qmp-quit");
	assert_int_equal(x->w.ex.status, 4);
	x->v = NULL;
}

/* The VMM on the socket answers another VM's name: not ours, never signalled. */
static void test_adopt_refuses_stranger(void **state)
{
	struct fx *x = *state;
	struct vmm_spec spec = spec_for(x, NULL, "someone-else");
	struct vmm_proc proc, launched;
	char err[512];

	launch(x, "hello.ticks", true);
	launched = x->w.proc;
	vmmdrv_drover.release(x->v);
	x->v = NULL;
	memset(&x->w, 0, sizeof(x->w));
	assert_int_equal(vmmdrv_drover.adopt(x->loop, &spec, launched.pid, launched.start,
					     &listener, &x->w, &x->v, &proc, err, sizeof(err)), 0);
	assert_true(th_spin_until(x->loop, &x->w.exited, 7000));
	assert_false(x->w.ready);
	assert_string_equal(x->w.ex.reason, "unresponsive");
	assert_non_null(strstr(x->w.ex.detail, "vm-under-test"));
	th_spin(x->loop, 100);
	assert_true(th_pid_alive(launched.pid));
	x->v = NULL;
}

static void test_adopt_gone(void **state)
{
	struct fx *x = *state;
	struct vmm_spec spec = spec_for(x, NULL, "vm-under-test");
	struct vmm_proc proc, launched;
	char err[512];

	launch(x, "hello.ticks", true);
	launched = x->w.proc;
	vmmdrv_drover.release(x->v);
	x->v = NULL;
	kill(launched.pid, SIGKILL);
	assert_true(th_wait_gone(launched.pid, 3000));
	assert_int_equal(vmmdrv_drover.adopt(x->loop, &spec, launched.pid, launched.start,
					     &listener, &x->w, &x->v, &proc, err, sizeof(err)),
			 -ESRCH);
	/* Socket file left behind, nobody answering: not adoptable either. */
	assert_int_equal(vmmdrv_drover.adopt(x->loop, &spec, 0, 0, &listener, &x->w, &x->v, &proc,
					     err, sizeof(err)), -ESRCH);
	x->v = NULL;
}

/* What the logs of VMMs that ended unwatched say. */
static void test_postmortem(void **state)
{
	struct fx *x = *state;
	static const struct {
		const char *log;
		const char *reason;
		int status;
	} cases[] = {
		{ "drover-agent: starting drover-vmm for VM a at T\n"
		  "drover-vmm: info: guest powered off\n", "guest-shutdown", 0 },
		{ "drover-agent: starting drover-vmm for VM a at T\n"
		  "drover-vmm: error: guest crashed: triple fault\n", "guest-crash", 2 },
		/* Only the last run counts. */
		{ "drover-agent: starting drover-vmm for VM a at T\n"
		  "drover-vmm: error: guest crashed: triple fault\n"
		  "drover-agent: starting drover-vmm for VM a at T2\n"
		  "drover-vmm: info: received signal 15: stopping the VM\n", "host-signal", 4 },
		{ "drover-agent: starting drover-vmm for VM a at T\n"
		  "drover-vmm: error: kernel '/k': No such file or directory\n", "vmm-failed", 1 },
		{ "drover-agent: starting drover-vmm for VM a at T\n", "vanished", -1 },
		{ "", "vanished", -1 },
	};
	struct vmm_spec spec = spec_for(x, NULL, "a");
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", x->vmdir, FS_VMM_LOG);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct vmm_exit ex;

		assert_int_equal(th_write(path, cases[i].log), 0);
		vmmdrv_drover.postmortem(&spec, &ex);
		if (strcmp(ex.reason, cases[i].reason) || ex.status != cases[i].status)
			fail_msg("case %zu: reason %s status %d", i, ex.reason, ex.status);
	}
	unlink(path);
	{
		struct vmm_exit ex;

		vmmdrv_drover.postmortem(&spec, &ex);
		assert_string_equal(ex.reason, "vanished");
	}
}

static void test_optional_verbs(void **state)
{
	/* The table's contract: these may be NULL, the rest may not. */
	assert_non_null(vmmdrv_drover.launch);
	assert_non_null(vmmdrv_drover.adopt);
	assert_non_null(vmmdrv_drover.control);
	assert_non_null(vmmdrv_drover.stop);
	assert_non_null(vmmdrv_drover.release);
	assert_non_null(vmmdrv_drover.postmortem);
	assert_null(vmmdrv_drover.save);
	assert_null(vmmdrv_drover.migrate_out);
	assert_null(vmmdrv_drover.receive);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_launch_control_quit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_force_stop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exit_reasons, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_kernel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_launch_refuses_bad_input, setup, teardown),
		cmocka_unit_test_setup_teardown(test_adopt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_adopt_refuses_stranger, setup, teardown),
		cmocka_unit_test_setup_teardown(test_adopt_gone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_postmortem, setup, teardown),
		cmocka_unit_test(test_optional_verbs),
	};

	log_init("test_vmmdrv", LOG_ERROR);
	th_find_vmm(vmm_bin, hello, sizeof(vmm_bin));
	/* Released VMMs are reaped here rather than left to pid 1. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
