/* The operation engine: every VM action is an operation row driven through
 * its steps (ops.c draws the state machine). Each step is persisted before
 * its command goes out, so droverd killed at any point resumes on restart
 * by sending the current step's command again (agent commands are
 * idempotent). */
#ifndef DROVER_OPS_H
#define DROVER_OPS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "ctl.h"
#include "drover.pb-c.h"
#include "store.h"
#include "vmdef.h"

#define OPS_DEFAULT_STOP_TIMEOUT_S 60

struct ops;

/* Loads the operations that were in flight and carries them on. */
int ops_start(struct ctl *ctl, struct ops **out);
void ops_stop(struct ops *ops);

/* Records a placed VM (state scheduling, on host_id) and its create
 * operation in one transaction, then starts it. vm_id and op_id receive
 * the new ids. -EEXIST: the name is taken. */
int ops_create(struct ops *ops, const struct vmdef *def, const char *host_id,
	       char vm_id[37], char op_id[37]);

/* start, stop, reboot, pause, resume or delete on vm. params: stop's
 * {"force", "timeout_s"} (NULL: defaults). -EBUSY: another operation is in
 * flight (err names it); -EPERM: not in this state (err says which it is
 * in and which it needs). delete supersedes an operation in flight. */
int ops_action(struct ops *ops, const struct store_vm *vm, const char *kind,
	       const json_t *params, char op_id[37], char *err, size_t errlen);

/* Is s one of the VM states (openapi.yaml's VmState)? */
bool ops_vm_state_valid(const char *s);

/* From agents.c. */
void ops_agent_connected(struct ops *ops, const char *host_id);
void ops_agent_disconnected(struct ops *ops, const char *host_id);
/* The answer to the command seq sent for op_id: a CommandResult, or an
 * Error (r NULL, code and message set). */
void ops_command_result(struct ops *ops, const char *op_id, uint64_t seq,
			const Drover__CommandResult *r, const char *code, const char *message);
/* Hello's list of every VM the agent knows: a VM placed on host_id that
 * settled there (defined, running, paused, stopped, crashed) but is not in
 * the list, with no operation on it, becomes unknown (event vm-lost). */
void ops_host_vms(struct ops *ops, const char *host_id, Drover__VmStatus *const *vms, size_t n);
/* A VM's state as its host's agent reports it (Hello, Heartbeat, VmEvent;
 * event and detail only for VmEvent). */
void ops_vm_report(struct ops *ops, const char *host_id, const Drover__VmStatus *st,
		   const char *event, const char *detail);

#endif
