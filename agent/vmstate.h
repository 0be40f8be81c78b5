/* A VM's state file, <run-dir>/vms/<id>/state.json: the agent's record of
 * where the VM is in its lifecycle (supervise.c draws the state machine),
 * written atomically before each transition's side effect, so that an agent
 * killed at any moment finds on restart what it was doing:
 *
 *   {"state": "running", "pid": 4242, "pid-start": 81723, "since-ms": 1764...,
 *    "exit-status": -1, "exit-reason": "", "detail": "", "stop": ""}
 *
 * pid-start is the process's start time (/proc/PID/stat field 22), so that a
 * pid reused by another process after a reboot or a long downtime is not
 * taken for the VMM. Unknown keys are ignored (a newer agent may add some);
 * known keys of the wrong type make the file unreadable, with the key named. */
#ifndef DROVER_VMSTATE_H
#define DROVER_VMSTATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum vmstate_kind {
	VMSTATE_DEFINED,
	VMSTATE_STARTING,
	VMSTATE_RUNNING,
	VMSTATE_PAUSED,
	VMSTATE_STOPPING,
	VMSTATE_STOPPED,
	VMSTATE_CRASHED,
};

/* Why a VM is stopping, kept so that a restarted agent finishes the job and
 * names the right reason. */
enum vmstate_stop {
	VMSTOP_NONE,
	VMSTOP_GRACEFUL,   /* stop: power-off or quit, then SIGKILL after a timeout */
	VMSTOP_FORCE,      /* stop with force: SIGKILL */
	VMSTOP_DESTROY,    /* destroy: SIGKILL */
};

struct vmstate {
	enum vmstate_kind state;
	pid_t pid;                 /* drover-vmm's pid; 0: none known */
	uint64_t pid_start;        /* its start time in clock ticks since boot */
	uint64_t since_ms;         /* wall clock of the last change */
	int exit_status;           /* -1: not known / not ended */
	char exit_reason[48];
	char detail[256];
	enum vmstate_stop stop;
};

void vmstate_init(struct vmstate *st);
const char *vmstate_name(enum vmstate_kind k);
int vmstate_from_name(const char *name, enum vmstate_kind *out);
/* True while a VMM process may exist for the VM. */
bool vmstate_has_vmm(enum vmstate_kind k);

/* The JSON text of st (malloc'd), and back. vmstate_parse: 0, or -EINVAL
 * with err naming what was wrong. */
char *vmstate_format(const struct vmstate *st);
int vmstate_parse(struct vmstate *st, const char *text, size_t len, char *err, size_t errlen);

/* path: the state file. write: atomic (fs_write_atomic). read: -ENOENT if
 * there is none; -EINVAL with err if it holds no state. */
int vmstate_write(const char *path, const struct vmstate *st);
int vmstate_read(const char *path, struct vmstate *st, char *err, size_t errlen);

/* Wall clock in milliseconds. */
uint64_t vmstate_now_ms(void);

#endif
