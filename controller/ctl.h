/* droverd's context: everything the process holds, passed explicitly to
 * each module (no globals). One thread touches it: the event loop's. */
#ifndef DROVER_CTL_H
#define DROVER_CTL_H

#include <stdbool.h>
#include <stdint.h>

#include "log.h"
#include "sched.h"

struct evloop;
struct store;
struct http;
struct agents;
struct ops;
struct place_cache;

struct ctl_options {
	char *db;                      /* required */
	char *listen;                  /* REST: HOST:PORT */
	char *agent_listen;            /* agents: HOST:PORT */
	unsigned heartbeat_timeout_s;  /* a host without heartbeat this long is down */
	unsigned op_timeout_s;         /* an operation's command gets this long (+ its stop timeout) */
	struct sched_policy policy;
	enum log_level log_level;
};

struct ctl {
	struct evloop *loop;
	struct store *store;
	struct ctl_options opt;
	struct http *http;
	struct agents *agents;
	struct ops *ops;
	struct place_cache *place;     /* place.c's view of the hosts */
	int64_t started_at;            /* ms: hosts get a heartbeat timeout of grace from here */
};

/* Heartbeats come three times per timeout. */
static inline uint32_t ctl_heartbeat_interval_ms(const struct ctl_options *o)
{
	return o->heartbeat_timeout_s * 1000u / 3u;
}

#endif
