/* The controller connection (link.h).
 *
 *            start / backoff timer [dial]
 *   IDLE ───────────────────────────────▶ CONNECTING
 *    ▲  ▲                                     │ connected [on_connect_ready]: Hello
 *    │  │ refused, unreachable [lost]         ▼
 *    │  └────────────────────────────── HELLO_SENT ──Welcome [on_welcome]──▶ UP
 *    │       Error, close, timeout [lost]     │                               │
 *    └────────────────────────────────────────┴───────── closed [lost] ───────┘
 *
 * lost() schedules the next dial after link_backoff_ms(attempt); attempt
 * grows with each failure and starts again at 0 once a connection was UP.
 * Nothing about the VMs depends on the link: losing it only stops the
 * heartbeats and makes pending replies moot. */
#include "link.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "conn.h"
#include "evloop.h"
#include "log.h"

#define DEFAULT_HEARTBEAT_MS 5000
#define DEFAULT_WELCOME_MS   10000
#define MIN_HEARTBEAT_MS     100
#define MAX_HEARTBEAT_MS     600000

enum link_state { LINK_IDLE, LINK_CONNECTING, LINK_HELLO_SENT, LINK_UP };

struct link {
	struct evloop *loop;
	struct link_options opt;
	const struct link_hooks *h;
	void *opaque;
	enum link_state state;
	int fd;                          /* CONNECTING */
	struct conn *c;                  /* HELLO_SENT, UP */
	unsigned attempt;
	uint64_t generation;
	uint32_t heartbeat_ms;
	uint64_t rng;
	struct evloop_timer *retry;      /* IDLE: next dial */
	struct evloop_timer *deadline;   /* CONNECTING, HELLO_SENT */
	struct evloop_timer *beat;       /* UP */
};

static void dial(void *opaque, struct evloop_timer *t);

uint32_t link_backoff_ms(uint32_t min_ms, uint32_t max_ms, unsigned attempt, uint32_t r)
{
	uint64_t d = min_ms ? min_ms : 1;

	for (unsigned i = 0; i < attempt && d < max_ms; i++)
		d *= 2;
	if (d > max_ms)
		d = max_ms;
	/* Upper half: never hammer, and agents that lost the same controller
	 * at the same moment spread out. */
	return (uint32_t)(d - (d / 2) * (r % 1024) / 1024);
}

static uint32_t next_random(struct link *l)
{
	/* xorshift64: jitter needs no more. */
	l->rng ^= l->rng << 13;
	l->rng ^= l->rng >> 7;
	l->rng ^= l->rng << 17;
	return (uint32_t)(l->rng >> 32);
}

static void stop_timers(struct link *l)
{
	evloop_timer_stop(l->deadline);
	evloop_timer_stop(l->beat);
}

/* Whatever the connection was doing, it is over: try again later. */
static void lost(struct link *l, const char *why)
{
	uint32_t wait;

	if (l->state == LINK_CONNECTING && l->fd >= 0) {
		evloop_del(l->loop, l->fd);
		close(l->fd);
		l->fd = -1;
	}
	if (l->c) {
		conn_close(l->c);
		l->c = NULL;
	}
	if (l->state == LINK_UP)
		l->attempt = 0;
	stop_timers(l);
	l->state = LINK_IDLE;
	wait = link_backoff_ms(l->opt.reconnect_min_ms, l->opt.reconnect_max_ms, l->attempt,
			       next_random(l));
	if (l->attempt < 32)
		l->attempt++;
	log_warn("controller %s: %s; trying again in %u ms", l->opt.controller, why, wait);
	evloop_timer_set(l->retry, wait, 0);
}

static void on_deadline(void *opaque, struct evloop_timer *t)
{
	struct link *l = opaque;

	lost(l, l->state == LINK_CONNECTING ? "no connection within the timeout"
					    : "no Welcome within the timeout");
}

static void on_beat(void *opaque, struct evloop_timer *t)
{
	struct link *l = opaque;

	if (l->state == LINK_UP)
		l->h->heartbeat(l->opaque, l);
}

static const char *body_name(const Drover__Envelope *env)
{
	const char *name = conn_body_name(env);

	return name ? name : "an unknown message";
}

static void on_welcome(struct link *l, const Drover__Welcome *w)
{
	uint32_t hb = w->heartbeat_interval_ms ? w->heartbeat_interval_ms :
		      l->opt.heartbeat_ms ? l->opt.heartbeat_ms : DEFAULT_HEARTBEAT_MS;

	if (w->host_id && *w->host_id && strcmp(w->host_id, l->opt.host_id))
		log_warn("controller %s: its Welcome names host id %s, this host is %s",
			 l->opt.controller, w->host_id, l->opt.host_id);
	if (hb < MIN_HEARTBEAT_MS || hb > MAX_HEARTBEAT_MS) {
		log_warn("controller %s: heartbeat interval %u ms is outside %u to %u ms; using %u",
			 l->opt.controller, hb, MIN_HEARTBEAT_MS, MAX_HEARTBEAT_MS,
			 hb < MIN_HEARTBEAT_MS ? MIN_HEARTBEAT_MS : MAX_HEARTBEAT_MS);
		hb = hb < MIN_HEARTBEAT_MS ? MIN_HEARTBEAT_MS : MAX_HEARTBEAT_MS;
	}
	l->heartbeat_ms = hb;
	l->state = LINK_UP;
	l->attempt = 0;
	evloop_timer_stop(l->deadline);
	evloop_timer_set(l->beat, hb, hb);
	log_info("controller %s: welcomed (controller %s), heartbeat every %u ms",
		 l->opt.controller, w->controller_version ? w->controller_version : "?", hb);
	l->h->up(l->opaque, l);
}

static void on_message(struct conn *c, const Drover__Envelope *env, void *opaque)
{
	struct link *l = opaque;
	const Drover__Error *e = env->error;

	if (env->body_case == DROVER__ENVELOPE__BODY_ERROR) {
		if (l->state == LINK_HELLO_SENT) {
			char why[600];

			snprintf(why, sizeof(why), "refused: %s: %s", e && e->code ? e->code : "?",
				 e && e->message ? e->message : "");
			lost(l, why);
			return;
		}
		log_warn("controller %s: error %s: %s (reply to %llu)", l->opt.controller,
			 e && e->code ? e->code : "?", e && e->message ? e->message : "",
			 (unsigned long long)env->reply_to);
		return;
	}
	if (env->body_case == DROVER__ENVELOPE__BODY_WELCOME) {
		if (l->state == LINK_HELLO_SENT && env->welcome)
			on_welcome(l, env->welcome);
		else
			log_warn("controller %s: a second Welcome; ignored", l->opt.controller);
		return;
	}
	if (l->state != LINK_UP) {
		char msg[128];

		snprintf(msg, sizeof(msg), "%s before Welcome: the agent waits for Welcome first",
			 body_name(env));
		conn_send_error(c, env->seq, "not-welcomed", "%s", msg);
		return;
	}
	l->h->message(l->opaque, l, env);
}

static void on_closed(struct conn *c, int err, const char *why, void *opaque)
{
	struct link *l = opaque;

	l->c = NULL;    /* conn frees itself */
	lost(l, why);
}

static const struct conn_handler conn_handler = { on_message, on_closed };

static void on_connect_ready(void *opaque, int fd, uint32_t events)
{
	struct link *l = opaque;
	int ret = conn_connect_result(fd);
	char why[256];

	evloop_del(l->loop, fd);
	if (ret < 0) {
		snprintf(why, sizeof(why), "connecting: %s", strerror(-ret));
		lost(l, why);
		return;
	}
	l->fd = -1;
	ret = conn_open(l->loop, fd, &conn_transport_plain, &conn_handler, l, &l->c);
	if (ret < 0) {
		close(fd);
		snprintf(why, sizeof(why), "setting up the connection: %s", strerror(-ret));
		l->state = LINK_IDLE;
		lost(l, why);
		return;
	}
	l->state = LINK_HELLO_SENT;
	l->generation++;
	log_info("controller %s: connected; sending Hello", l->opt.controller);
	l->h->hello(l->opaque, l);
}

static void dial(void *opaque, struct evloop_timer *t)
{
	struct link *l = opaque;
	char err[256];
	int fd, ret;

	if (l->state != LINK_IDLE)
		return;
	ret = conn_connect_start(l->opt.controller, &fd, err, sizeof(err));
	if (ret < 0) {
		lost(l, err);
		return;
	}
	ret = evloop_add(l->loop, fd, EPOLLOUT, on_connect_ready, l);
	if (ret < 0) {
		close(fd);
		lost(l, "cannot watch the socket");
		return;
	}
	l->fd = fd;
	l->state = LINK_CONNECTING;
	evloop_timer_set(l->deadline, l->opt.welcome_timeout_ms, 0);
}

int link_new(struct evloop *loop, const struct link_options *opt, const struct link_hooks *h,
	     void *opaque, struct link **out)
{
	struct link *l = calloc(1, sizeof(*l));
	int ret;

	if (!l)
		return -ENOMEM;
	l->loop = loop;
	l->opt = *opt;
	if (!l->opt.welcome_timeout_ms)
		l->opt.welcome_timeout_ms = DEFAULT_WELCOME_MS;
	l->h = h;
	l->opaque = opaque;
	l->fd = -1;
	if (getrandom(&l->rng, sizeof(l->rng), 0) != sizeof(l->rng) || !l->rng)
		l->rng = 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid();
	ret = evloop_timer_add(loop, 3600000, 0, dial, l, &l->retry);
	if (ret == 0)
		ret = evloop_timer_add(loop, 3600000, 0, on_deadline, l, &l->deadline);
	if (ret == 0)
		ret = evloop_timer_add(loop, 3600000, 0, on_beat, l, &l->beat);
	if (ret < 0) {
		link_free(l);
		return ret;
	}
	stop_timers(l);
	evloop_timer_stop(l->retry);
	*out = l;
	return 0;
}

void link_free(struct link *l)
{
	if (!l)
		return;
	if (l->c)
		conn_close(l->c);
	if (l->fd >= 0) {
		evloop_del(l->loop, l->fd);
		close(l->fd);
	}
	evloop_timer_del(l->retry);
	evloop_timer_del(l->deadline);
	evloop_timer_del(l->beat);
	free(l);
}

void link_start(struct link *l)
{
	evloop_timer_set(l->retry, 0, 0);
}

int64_t link_send(struct link *l, Drover__Envelope *env)
{
	if (!l->c || (l->state != LINK_UP && env->body_case != DROVER__ENVELOPE__BODY_HELLO))
		return -ENOTCONN;
	/* A failed send closes the conn and runs on_closed (lost) already. */
	return conn_send(l->c, env);
}

int64_t link_send_error(struct link *l, uint64_t reply_to, const char *code, const char *msg)
{
	if (!l->c)
		return -ENOTCONN;
	return conn_send_error(l->c, reply_to, code, "%s", msg);
}

bool link_is_up(const struct link *l)
{
	return l->state == LINK_UP;
}

uint64_t link_generation(const struct link *l)
{
	return l->generation;
}

uint32_t link_heartbeat_ms(const struct link *l)
{
	return l->heartbeat_ms;
}
