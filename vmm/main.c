/* drover-vmm: one VM per process. main() parses the configuration, builds
 * the VM, runs the event loop (control socket, serial input, signals,
 * requests from vCPUs) and exits with a status that says how the guest
 * ended (see vm.h). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/time.h>
#include <unistd.h>

#include "config.h"
#include "control.h"
#include "devices.h"
#include "emulate.h"
#include "evloop.h"
#include "layout.h"
#include "log.h"
#include "serial.h"
#include "util.h"
#include "vcpu.h"
#include "virtio_blk.h"
#include "vm.h"

struct vmm {
	struct vmm_config cfg;
	struct vm *vm;
	struct evloop *loop;
	struct control *ctl;
	int sig_fd;
	int defer_fd;             /* wakes the loop for work queued by a handler */
	bool quit_requested;
	int exit_status;
	bool ending;
};

static json_t *shutdown_data(bool guest, const char *reason, int status)
{
	return json_pack("{s:b, s:s, s:i}", "guest", guest, "reason", reason, "exit-status", status);
}

static void emit(struct vmm *m, const char *name, json_t *data)
{
	if (m->ctl)
		control_event(m->ctl, name, data);
	else
		json_decref(data);
}

/* Events from devices (vm->emit_event), on the main thread. */
static void emit_device_event(void *opaque, const char *name, json_t *data)
{
	emit(opaque, name, data);
}

/* Ends the VMM: stops the vCPUs, tells the clients, leaves the loop. */
static void finish(struct vmm *m, int status, json_t *shutdown_event)
{
	if (m->ending) {
		json_decref(shutdown_event);
		return;
	}
	m->ending = true;
	m->exit_status = status;
	vm_shutdown(m->vm);
	emulate_log_counts(m->vm);
	emit(m, "SHUTDOWN", shutdown_event);
	evloop_stop(m->loop);
}

static void do_reset(struct vmm *m, bool guest, const char *reason)
{
	char err[256];

	if (vm_reset(m->vm, err, sizeof(err)) < 0) {
		log_error("reset failed: %s", err);
		finish(m, VMM_EXIT_ERROR, shutdown_data(false, "host-error", VMM_EXIT_ERROR));
		return;
	}
	emit(m, "RESET", json_pack("{s:b, s:s}", "guest", guest, "reason", reason));
}

static void handle_requests(void *opaque, int fd, uint32_t events)
{
	struct vmm *m = opaque;
	char detail[4096];
	json_t *ev;
	int code = 0;
	enum vm_req req = vm_take_request(m->vm, &code, detail, sizeof(detail));

	switch (req) {
	case VM_REQ_NONE:
		break;
	case VM_REQ_RESET:
		if (m->cfg.on_reboot == ON_REBOOT_EXIT) {
			log_info("guest reset; exiting as --on-reboot exit asks");
			finish(m, VMM_EXIT_RESET, shutdown_data(true, "guest-reset", VMM_EXIT_RESET));
		} else {
			do_reset(m, true, "guest-reset");
		}
		break;
	case VM_REQ_POWEROFF:
		log_info("guest powered off");
		finish(m, VMM_EXIT_POWEROFF, shutdown_data(true, "guest-shutdown",
							   VMM_EXIT_POWEROFF));
		break;
	case VM_REQ_DEBUG_EXIT: {
		int status = VMM_EXIT_DEBUG_BASE + (code > VMM_DEBUG_CODE_MAX ? VMM_DEBUG_CODE_MAX : code);

		if (code > VMM_DEBUG_CODE_MAX)
			log_warn("debug exit code %d is above %d; exiting with %d", code,
				 VMM_DEBUG_CODE_MAX, status);
		ev = shutdown_data(true, "guest-debug-exit", status);
		json_object_set_new(ev, "debug-code", json_integer(code));
		finish(m, status, ev);
		break;
	}
	case VM_REQ_CRASH:
		log_error("guest crashed: %s", detail);
		ev = shutdown_data(true, "guest-crash", VMM_EXIT_CRASH);
		json_object_set_new(ev, "detail", json_string(detail));
		finish(m, VMM_EXIT_CRASH, ev);
		break;
	}
}

static void handle_signal(void *opaque, int fd, uint32_t events)
{
	struct vmm *m = opaque;
	struct signalfd_siginfo si;

	if (read(fd, &si, sizeof(si)) != sizeof(si))
		return;
	log_info("received signal %u: stopping the VM", si.ssi_signo);
	finish(m, VMM_EXIT_QUIT, shutdown_data(false, "host-signal", VMM_EXIT_QUIT));
}

static void serial_quit(void *opaque)
{
	struct vmm *m = opaque;

	finish(m, VMM_EXIT_QUIT, shutdown_data(false, "host-console-quit", VMM_EXIT_QUIT));
}

/* ---- control commands ---- */

static const char *state_name(enum vm_state s)
{
	switch (s) {
	case VM_PRELAUNCH: return "prelaunch";
	case VM_RUNNING: return "running";
	case VM_PAUSED: return "paused";
	case VM_SHUTDOWN: return "shutdown";
	}
	return "unknown";
}

static enum control_error cmd_query_status(void *ctx, json_t *args, json_t **ret, char *desc,
					   size_t len)
{
	struct vmm *m = ctx;
	enum vm_state s = m->vm->state;
	json_t *emul = json_pack("{s:I, s:I, s:I, s:I}",
		"int3", (json_int_t)atomic_load(&m->vm->emul_count[EMUL_INT3]),
		"fwait", (json_int_t)atomic_load(&m->vm->emul_count[EMUL_FWAIT]),
		"clac", (json_int_t)atomic_load(&m->vm->emul_count[EMUL_CLAC]),
		"stac", (json_int_t)atomic_load(&m->vm->emul_count[EMUL_STAC]));

	*ret = json_pack("{s:b, s:s, s:b, s:o}", "running", s == VM_RUNNING, "status",
			 state_name(s), "singlestep", 0, "emulated-instructions", emul);
	return CONTROL_OK;
}

static enum control_error cmd_pause(void *ctx, json_t *args, json_t **ret, char *desc,
				    size_t len)
{
	struct vmm *m = ctx;

	if (m->vm->state == VM_RUNNING) {
		vm_pause(m->vm);
		emit(m, "STOP", NULL);
	}
	return CONTROL_OK;
}

static enum control_error cmd_resume(void *ctx, json_t *args, json_t **ret, char *desc,
				     size_t len)
{
	struct vmm *m = ctx;

	if (m->vm->state == VM_PAUSED) {
		vm_resume(m->vm);
		emit(m, "RESUME", NULL);
	}
	return CONTROL_OK;
}

static enum control_error cmd_system_reset(void *ctx, json_t *args, json_t **ret, char *desc,
					   size_t len)
{
	struct vmm *m = ctx;

	do_reset(m, false, "host-qmp-system-reset");
	return CONTROL_OK;
}

/* The ACPI power button (the DSDT's GED0 and PWRB): a guest with an ACPI
 * driver shuts down in its own time, one without ignores it. */
static enum control_error cmd_system_powerdown(void *ctx, json_t *args, json_t **ret,
					       char *desc, size_t len)
{
	struct vmm *m = ctx;

	vm_irq_line(m->vm, GSI_POWER_BUTTON, 1);
	vm_irq_line(m->vm, GSI_POWER_BUTTON, 0);
	emit(m, "POWERDOWN", json_object());
	return CONTROL_OK;
}

static enum control_error cmd_quit(void *ctx, json_t *args, json_t **ret, char *desc,
				   size_t len)
{
	struct vmm *m = ctx;
	uint64_t one = 1;

	/* The reply goes out first; the SHUTDOWN event and the exit follow on
	 * the next turn of the loop. */
	m->quit_requested = true;
	if (write(m->defer_fd, &one, sizeof(one)) < 0)
		return CONTROL_GENERIC_ERROR;
	return CONTROL_OK;
}

static enum control_error cmd_query_cpus(void *ctx, json_t *args, json_t **ret, char *desc,
					 size_t len)
{
	struct vmm *m = ctx;
	json_t *list = json_array();

	for (unsigned i = 0; i < m->vm->ncpus; i++) {
		json_t *props = json_pack("{s:i, s:i, s:i}", "socket-id", 0, "core-id", (int)i,
					  "thread-id", 0);

		json_array_append_new(list, json_pack("{s:i, s:i, s:i, s:s, s:s, s:o}",
			"cpu-index", (int)i, "thread-id", vm_vcpu_tid(m->vm, i),
			"apic-id", (int)m->vm->pd.apic_id[i], "target", "x86_64",
			"qom-path", "/machine/cpu", "props", props));
	}
	*ret = list;
	return CONTROL_OK;
}

static enum control_error cmd_query_memory(void *ctx, json_t *args, json_t **ret, char *desc,
					   size_t len)
{
	struct vmm *m = ctx;
	json_t *regions = json_array();

	for (unsigned i = 0; i < m->vm->mem.nregions; i++)
		json_array_append_new(regions, json_pack("{s:I, s:I}",
			"guest-address", (json_int_t)m->vm->mem.region[i].gpa,
			"size", (json_int_t)m->vm->mem.region[i].size));
	*ret = json_pack("{s:I, s:I, s:o}", "base-memory", (json_int_t)m->vm->mem.ram_size,
			 "plugged-memory", (json_int_t)0, "regions", regions);
	return CONTROL_OK;
}

static enum control_error cmd_query_name(void *ctx, json_t *args, json_t **ret, char *desc,
					 size_t len)
{
	struct vmm *m = ctx;

	*ret = json_pack("{s:s}", "name", m->cfg.name);
	return CONTROL_OK;
}

static enum control_error cmd_query_version(void *ctx, json_t *args, json_t **ret, char *desc,
					    size_t len)
{
	*ret = json_pack("{s:{s:i, s:i, s:i}, s:s}", "qemu", "major", 0, "minor", 1, "micro", 0,
			 "package", "drover-vmm " DROVER_VERSION);
	return CONTROL_OK;
}

static enum control_error cmd_query_block(void *ctx, json_t *args, json_t **ret, char *desc,
					  size_t len)
{
	struct vmm *m = ctx;

	*ret = virtio_blk_query(m->vm);
	return CONTROL_OK;
}

static enum control_error cmd_query_blockstats(void *ctx, json_t *args, json_t **ret,
					       char *desc, size_t len)
{
	struct vmm *m = ctx;

	*ret = virtio_blk_query_stats(m->vm);
	return CONTROL_OK;
}

static enum control_error cmd_query_kvm(void *ctx, json_t *args, json_t **ret, char *desc,
					size_t len)
{
	*ret = json_pack("{s:b, s:b}", "enabled", 1, "present", 1);
	return CONTROL_OK;
}

static const struct control_command commands[] = {
	{ "query-status", cmd_query_status },
	{ "pause", cmd_pause },
	{ "stop", cmd_pause },
	{ "resume", cmd_resume },
	{ "cont", cmd_resume },
	{ "system-reset", cmd_system_reset },
	{ "system_reset", cmd_system_reset },
	{ "system_powerdown", cmd_system_powerdown },
	{ "quit", cmd_quit },
	{ "query-cpus", cmd_query_cpus },
	{ "query-cpus-fast", cmd_query_cpus },
	{ "query-memory", cmd_query_memory },
	{ "query-memory-size-summary", cmd_query_memory },
	{ "query-name", cmd_query_name },
	{ "query-version", cmd_query_version },
	{ "query-kvm", cmd_query_kvm },
	{ "query-block", cmd_query_block },
	{ "query-blockstats", cmd_query_blockstats },
};

static void handle_deferred(void *opaque, int fd, uint32_t events)
{
	struct vmm *m = opaque;
	uint64_t cnt;

	if (read(fd, &cnt, sizeof(cnt)) < 0) {
		/* spurious wake-up */
	}
	if (m->quit_requested)
		finish(m, VMM_EXIT_QUIT, shutdown_data(false, "host-qmp-quit", VMM_EXIT_QUIT));
}

static void kick_handler(int sig)
{
	/* Only interrupts KVM_RUN; the vCPU loop looks at its flags. */
}

/* Every signal is blocked in every thread: SIGTERM and friends arrive on
 * the main loop through a signalfd, and vCPU threads unblock only the kick. */
static int setup_signals(int *sig_fd)
{
	struct sigaction sa = { .sa_handler = kick_handler };
	sigset_t set;

	sigemptyset(&sa.sa_mask);
	if (sigaction(VCPU_KICK_SIGNAL, &sa, NULL) < 0)
		return -errno;
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGQUIT);
	*sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (*sig_fd < 0)
		return -errno;
	sigaddset(&set, VCPU_KICK_SIGNAL);
	return -pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static int setup_loop(struct vmm *m, char *err, size_t errlen)
{
	int ret;

	ret = evloop_new(&m->loop);
	if (ret < 0)
		goto fail;
	m->defer_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (m->defer_fd < 0) {
		ret = -errno;
		goto fail;
	}
	ret = evloop_add(m->loop, m->sig_fd, EPOLLIN, handle_signal, m);
	if (ret == 0)
		ret = evloop_add(m->loop, m->vm->req_fd, EPOLLIN, handle_requests, m);
	if (ret == 0)
		ret = evloop_add(m->loop, m->defer_fd, EPOLLIN, handle_deferred, m);
	if (ret < 0)
		goto fail;
	ret = serial_attach(m->vm->serial, m->loop, serial_quit, m, err, errlen);
	if (ret < 0)
		return ret;
	ret = devices_attach(m->vm, m->loop, err, errlen);
	if (ret < 0)
		return ret;
	if (m->cfg.control) {
		ret = control_open(&m->ctl, m->loop, m->cfg.control, commands,
				   ARRAY_SIZE(commands), m);
		if (ret < 0) {
			snprintf(err, errlen, "--control %s: %s", m->cfg.control, strerror(-ret));
			return ret;
		}
	}
	return 0;
fail:
	snprintf(err, errlen, "setting up the event loop: %s", strerror(-ret));
	return ret;
}

int main(int argc, char **argv)
{
	struct vmm m = { .sig_fd = -1, .defer_fd = -1, .exit_status = VMM_EXIT_ERROR };
	char err[1024] = "";
	int ret;

	log_init("drover-vmm", LOG_INFO);
	vmm_config_init(&m.cfg);
	ret = vmm_config_from_args(&m.cfg, argc, argv, err, sizeof(err));
	if (ret < 0) {
		fprintf(stderr, "drover-vmm: %s\n", err);
		fprintf(stderr, "Try 'drover-vmm --help' for the options.\n");
		goto out;
	}
	if (m.cfg.show_help) {
		fputs(vmm_config_usage(), stdout);
		m.exit_status = 0;
		goto out;
	}
	if (m.cfg.show_version) {
		printf("drover-vmm %s\n", DROVER_VERSION);
		m.exit_status = 0;
		goto out;
	}
	log_set_level((enum log_level)m.cfg.log_level);
	ret = setup_signals(&m.sig_fd);
	if (ret < 0) {
		log_error("setting up signals: %s", strerror(-ret));
		goto out;
	}
	ret = vm_create(&m.vm, &m.cfg, err, sizeof(err));
	if (ret < 0) {
		log_error("%s", err);
		goto out;
	}
	m.vm->emit_event = emit_device_event;
	m.vm->emit_opaque = &m;
	ret = setup_loop(&m, err, sizeof(err));
	if (ret < 0) {
		log_error("%s", err);
		goto out;
	}
	ret = vm_start(m.vm);
	if (ret < 0) {
		log_error("starting vCPU threads: %s", strerror(-ret));
		goto out;
	}
	ret = evloop_run(m.loop);
	if (ret < 0) {
		log_error("event loop: %s", strerror(-ret));
		m.exit_status = VMM_EXIT_ERROR;
	}
out:
	if (m.vm && m.vm->serial)
		serial_restore_terminal(m.vm->serial);
	if (m.ctl)
		control_close(m.ctl);
	vm_destroy(m.vm);
	evloop_free(m.loop);
	if (m.sig_fd >= 0)
		close(m.sig_fd);
	if (m.defer_fd >= 0)
		close(m.defer_fd);
	vmm_config_free(&m.cfg);
	return m.exit_status;
}
