/* The VMs of this host: their definitions, their lifecycle (the state
 * machine drawn at the top of supervise.c), the commands that move them and
 * the events they report. One VMM process per running VM, driven through a
 * VMM driver (vmmdrv.h); the supervisor never blocks the event loop: long
 * commands (start, stop) are answered when they are done.
 *
 * Every command is answered exactly once through its reply function, maybe
 * before sv_command returns; commands still pending when the supervisor is
 * freed are answered "agent-exiting" (their VMs run on). */
#ifndef DROVER_AGENT_SUPERVISE_H
#define DROVER_AGENT_SUPERVISE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "vmstate.h"

#define SV_VM_ID_MAX 64

struct evloop;
struct vmm_driver;
struct sv;

struct sv_status {
	const char *vm_id;
	enum vmstate_kind state;
	pid_t pid;                 /* while a VMM runs, else 0 */
	int exit_status;           /* -1: not known / not ended */
	const char *exit_reason;
	const char *detail;
	uint64_t since_ms;
	unsigned vcpus;            /* from the definition */
	uint64_t memory;           /* bytes, from the definition */
};

struct sv_result {
	bool ok;
	const char *error_code;    /* NULL when ok: "not-found", "bad-definition", ... */
	char message[768];
	bool has_status;           /* false once the VM is gone (undefine) or unknown */
	struct sv_status status;
};

typedef void (*sv_reply_fn)(void *opaque, const struct sv_result *r);

struct sv_hooks {
	/* A VM changed state, on its own or by a command: event is one of
	 * "defined", "started", "paused", "resumed", "reset", "stopped",
	 * "crashed", "adopted", "undefined". Returns whether a controller got
	 * it: what happened at start-up (adoption) and did not reach one is
	 * kept for sv_replay_startup. */
	bool (*vm_event)(void *opaque, const struct sv_status *st, const char *event,
			 const char *detail);
};

struct sv_options {
	const char *run_dir;
	const char *vmm_binary;
	const struct vmm_driver *driver;
	uint32_t start_timeout_ms;     /* the VMM's control socket must answer by then */
	uint32_t stop_timeout_ms;      /* graceful stop when the command gives none */
};

enum sv_verb {
	SV_DEFINE, SV_START, SV_STOP, SV_REBOOT, SV_PAUSE, SV_RESUME, SV_DESTROY, SV_UNDEFINE,
};

struct sv_request {
	enum sv_verb verb;
	const char *vm_id;
	const char *definition;        /* SV_DEFINE */
	size_t definition_len;
	uint32_t timeout_ms;           /* SV_STOP: 0 = the configured default */
	bool force;                    /* SV_STOP */
};

int sv_new(struct evloop *loop, const struct sv_options *opt, const struct sv_hooks *hooks,
	   void *opaque, struct sv **out);
/* Reads <run-dir>/vms and takes every VM up again: VMMs still running are
 * adopted, those that ended meanwhile are recorded stopped or crashed from
 * what their files say. Nothing is stopped. 0 or -errno (the run directory
 * cannot be read). */
int sv_load(struct sv *s);
/* Forgets the VMMs without stopping them (the agent exits; they run on). */
void sv_free(struct sv *s);

void sv_command(struct sv *s, const struct sv_request *req, sv_reply_fn fn, void *opaque);

/* Every VM, for Hello and Heartbeat. */
void sv_foreach(struct sv *s, void (*fn)(void *arg, const struct sv_status *st), void *arg);
size_t sv_count(const struct sv *s);
/* vCPUs and guest memory of the VMs whose VMM runs. */
void sv_usage(const struct sv *s, uint32_t *vcpus, uint64_t *memory);
/* Sends again, through vm_event, what start-up found and no controller got. */
void sv_replay_startup(struct sv *s);
/* True while adoptions started by sv_load are still in flight. */
bool sv_adopting(const struct sv *s);

/* "web-1": 1 to SV_VM_ID_MAX of A-Z a-z 0-9 . _ -, not starting with '.'. */
bool sv_vm_id_valid(const char *id);

#endif
