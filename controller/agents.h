/* The agents' side of droverd: a listener on --agent-listen, one
 * connection per agent (proto/conn.h does framing and protocol checks),
 * and host liveness.
 *
 *   Hello      -> the host is found by host_id (created the first time),
 *                 its name, address (the peer's IP), migration address,
 *                 labels and inventory recorded; Welcome with the heartbeat
 *                 interval. A second connection for the same host id
 *                 replaces the first (event agent-replaced).
 *   Heartbeat  -> inventory, last heartbeat, VM statuses (ops.c).
 *   CommandResult / Error with reply_to -> the operation that sent it.
 *   VmEvent    -> the VM's state (ops.c).
 *   anything before Hello -> Error "not-hello", connection closed.
 * A host without a heartbeat for --heartbeat-timeout-s is marked down
 * (event host-down) and up again when one arrives (host-up). */
#ifndef DROVER_AGENTS_H
#define DROVER_AGENTS_H

#include <stdbool.h>
#include <stdint.h>

#include "ctl.h"
#include "drover.pb-c.h"

struct agents;

/* Listens on ctl->opt.agent_listen (the port taken goes to *port) and
 * loads the known hosts. 0 or -errno with err set. */
int agents_start(struct ctl *ctl, struct agents **out, uint16_t *port, char *err, size_t errlen);
void agents_stop(struct agents *a);

/* Is host_id's agent connected (Hello done) right now? */
bool agents_connected(const struct agents *a, const char *host_id);

/* Sends cmd to host_id's agent for operation op_id; its CommandResult (or
 * an Error answering it) reaches ops_command_result with the same seq.
 * -ENOTCONN when the agent is not connected, or another -errno. */
int agents_command(struct agents *a, const char *host_id, Drover__Command *cmd,
		   const char *op_id, uint64_t *seq);

#endif
