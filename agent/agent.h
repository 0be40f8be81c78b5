/* drover-agent, the per-host daemon: the VMs of this host (supervise.h)
 * and the link to the controller (link.h), on one event loop, until SIGTERM
 * or SIGINT. VMMs outlive the agent: it exits without stopping them, and
 * the next agent adopts them. */
#ifndef DROVER_AGENT_H
#define DROVER_AGENT_H

#include "agent_config.h"

/* Runs the agent on a resolved configuration; returns the process's exit
 * status (0 after SIGTERM/SIGINT, 1 when it could not start). */
int agent_run(const struct agent_config *cfg);

#endif
