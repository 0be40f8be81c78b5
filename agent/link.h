/* The agent's one long-lived connection to the controller (drover.proto):
 * dial, Hello, wait for Welcome, heartbeats, and reconnection with
 * exponential backoff (with jitter, capped) whenever the controller is gone,
 * refuses or breaks the protocol. What the messages say is the agent's
 * business (hooks); the link only keeps the connection. */
#ifndef DROVER_AGENT_LINK_H
#define DROVER_AGENT_LINK_H

#include <stdbool.h>
#include <stdint.h>

#include "drover.pb-c.h"

struct evloop;
struct link;

struct link_hooks {
	/* Connected: send the Hello now (link_send). */
	void (*hello)(void *opaque, struct link *l);
	/* The controller's Welcome came: the link is up. */
	void (*up)(void *opaque, struct link *l);
	/* Every heartbeat interval while up. */
	void (*heartbeat)(void *opaque, struct link *l);
	/* Any message but Welcome once up (Commands, Errors...). */
	void (*message)(void *opaque, struct link *l, const Drover__Envelope *env);
};

struct link_options {
	const char *controller;        /* HOST:PORT */
	const char *host_id;           /* Welcome echoes it */
	uint32_t heartbeat_ms;         /* when the Welcome names none (0: 5000) */
	uint32_t reconnect_min_ms;
	uint32_t reconnect_max_ms;
	uint32_t welcome_timeout_ms;   /* connect + Welcome (0: 10000) */
};

int link_new(struct evloop *loop, const struct link_options *opt, const struct link_hooks *h,
	     void *opaque, struct link **out);
void link_free(struct link *l);
/* Dials now (and again after every loss). */
void link_start(struct link *l);

/* Sends on the current connection: the seq, or -ENOTCONN when there is none
 * (or it is not up yet and env is no Hello). */
int64_t link_send(struct link *l, Drover__Envelope *env);
int64_t link_send_error(struct link *l, uint64_t reply_to, const char *code, const char *msg);
bool link_is_up(const struct link *l);
/* Changes with every new connection: a reply meant for an old one is moot. */
uint64_t link_generation(const struct link *l);
uint32_t link_heartbeat_ms(const struct link *l);

/* The wait before reconnection attempt n (0 = the first after a loss):
 * min * 2^n capped at max, then a uniform draw from its upper half. r is a
 * random 32-bit number. Exposed for the unit tests. */
uint32_t link_backoff_ms(uint32_t min_ms, uint32_t max_ms, unsigned attempt, uint32_t r);

#endif
