/* VMM drivers: how the agent drives one kind of VMM process, as one small
 * table of verbs (DESIGN.md; libvirt drives hypervisors the same way).
 * drover-vmm is the first driver (vmmdrv_drover.c); a QEMU driver (QMP) can
 * sit beside it without the supervisor changing.
 *
 * Verbs are asynchronous: they start work and return; the driver reports
 * through struct vmm_listener on the agent's event loop. Rules every driver
 * keeps:
 *   - launch, adopt and receive give a struct vmm, then exactly one of:
 *     ready() followed, some time later, by exited(); or exited() alone (the
 *     process ended, or could not be verified, before it was ready). After
 *     exited() the struct vmm is freed: the caller must drop it;
 *   - a verb's done() callback runs exactly once, before exited() if the
 *     process ends first;
 *   - release() forgets a VMM without touching the process (agent exit):
 *     done() callbacks still pending run with an error, exited() never;
 *   - listener callbacks must not call release();
 *   - a driver never signals a process it has not verified to be the VMM of
 *     that VM (adopt checks it first);
 *   - save, migrate_out and receive may be NULL: the caller answers "not
 *     supported". The others are required. */
#ifndef DROVER_AGENT_VMMDRV_H
#define DROVER_AGENT_VMMDRV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct evloop;
struct vmm;

/* How a VMM process ended. */
struct vmm_exit {
	int status;            /* its exit status, -1 when not known */
	int signal;            /* the signal that killed it, 0 if none or not known */
	bool guest_ran;        /* the guest ran (its own end, or stopped from outside) */
	char reason[48];       /* "guest-shutdown", "guest-crash", "guest-reset",
				  "guest-debug-exit", "host-qmp-quit", "host-signal",
				  "killed", "vmm-failed", "unresponsive", "vanished" */
	char detail[256];      /* the VMM's own words when it has any */
};

/* The process behind a struct vmm. */
struct vmm_proc {
	pid_t pid;
	uint64_t start;             /* /proc/PID/stat starttime */
};

struct vmm_listener {
	/* The VMM answers on its control socket; paused: its vCPUs are stopped;
	 * proc: the process (adoption may have learnt it only now). */
	void (*ready)(void *opaque, bool paused, const struct vmm_proc *proc);
	/* Something the VMM did on its own or as asked: "paused", "resumed",
	 * "reset"; detail from the VMM (may be ""). */
	void (*event)(void *opaque, const char *event, const char *detail);
	/* The process ended (or, before ready, was not the VMM we look for). */
	void (*exited)(void *opaque, const struct vmm_exit *ex);
};

/* What a driver needs to know about the VM. */
struct vmm_spec {
	const char *vm_id;          /* the VMM's name; adoption checks it */
	const char *dir;            /* <run-dir>/vms/<vm id> (agent_fs.h) */
	const char *binary;         /* the VMM program */
	const char *definition;     /* the VM definition JSON (launch) */
	size_t definition_len;
	uint32_t ready_timeout_ms;  /* launch: the control socket must answer by then */
};

enum vmm_control {
	VMM_CONTROL_PAUSE,
	VMM_CONTROL_RESUME,
	VMM_CONTROL_RESET,
};

/* err 0, or -errno with msg saying what the VMM answered. */
typedef void (*vmm_done_fn)(void *opaque, int err, const char *msg);

struct vmm_driver {
	const char *name;
	/* Starts a VMM for spec (its files under spec->dir). 0 with *out and
	 * *proc once the process exists, or -errno with err (nothing started). */
	int (*launch)(struct evloop *loop, const struct vmm_spec *spec,
		      const struct vmm_listener *l, void *opaque, struct vmm **out,
		      struct vmm_proc *proc, char *err, size_t errlen);
	/* Re-attaches to a VMM an earlier agent started: pid and its start time
	 * from the state file (pid 0: find it through the control socket).
	 * -ESRCH with err if no such process runs; otherwise as launch, and
	 * exited() with reason "unresponsive" if it cannot be verified. */
	int (*adopt)(struct evloop *loop, const struct vmm_spec *spec, pid_t pid,
		     uint64_t pid_start, const struct vmm_listener *l, void *opaque,
		     struct vmm **out, struct vmm_proc *proc, char *err, size_t errlen);
	/* Pause, resume, reset. */
	int (*control)(struct vmm *v, enum vmm_control what, vmm_done_fn done, void *opaque);
	/* Writes the VM's state to path (optional). */
	int (*save)(struct vmm *v, const char *path, vmm_done_fn done, void *opaque);
	/* Sends the VM to a receiving VMM at address (optional). */
	int (*migrate_out)(struct vmm *v, const char *address, vmm_done_fn done, void *opaque);
	/* Starts a VMM that waits for an incoming migration (optional). */
	int (*receive)(struct evloop *loop, const struct vmm_spec *spec,
		       const struct vmm_listener *l, void *opaque, struct vmm **out,
		       struct vmm_proc *proc, char *err, size_t errlen);
	/* Ends the VMM. Graceful: the guest's power button if the VMM offers
	 * one, else the VMM's own clean quit; SIGKILL after timeout_ms. force:
	 * SIGKILL at once. Calling it again (say, force after graceful) is
	 * allowed. exited() follows. */
	void (*stop)(struct vmm *v, bool force, uint32_t timeout_ms);
	/* Forgets v without touching the process. */
	void (*release)(struct vmm *v);
	/* Why a VMM that ended while no agent watched it ended, from what its
	 * files say (required). */
	void (*postmortem)(const struct vmm_spec *spec, struct vmm_exit *ex);
	/* Checks a definition beyond what the VM definition parser does (what
	 * this driver cannot run: a socket path too long...). 0 or -EINVAL with
	 * err (optional). */
	int (*check)(const struct vmm_spec *spec, char *err, size_t errlen);
};

extern const struct vmm_driver vmmdrv_drover;

/* /proc/PID/stat's starttime; 0 if the process does not exist. */
uint64_t vmmdrv_proc_start(pid_t pid);

#endif
