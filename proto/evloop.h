/* A small epoll event loop for a drover process's main thread (the VMM's
 * control socket, serial input, signals, requests from vCPU threads; the
 * agent's and the controller's connections and timers). Callbacks may add
 * and delete watches, including their own: a deleted watch is only marked
 * and freed once the current batch of events has been dispatched. */
#ifndef DROVER_EVLOOP_H
#define DROVER_EVLOOP_H

#include <stdint.h>
#include <sys/epoll.h>

struct evloop;
typedef void (*evloop_cb)(void *opaque, int fd, uint32_t events);

int evloop_new(struct evloop **out);
void evloop_free(struct evloop *loop);

/* Watches fd for EPOLLIN/EPOLLOUT/...; 0 or -errno (-EEXIST if watched). */
int evloop_add(struct evloop *loop, int fd, uint32_t events, evloop_cb cb, void *opaque);
int evloop_mod(struct evloop *loop, int fd, uint32_t events);
/* Stops watching fd (does not close it). */
void evloop_del(struct evloop *loop, int fd);

/* Runs until evloop_stop; 0, or -errno if epoll itself failed. */
int evloop_run(struct evloop *loop);
/* Waits up to timeout_ms for events and dispatches one batch; the number of
 * events, or -errno. */
int evloop_run_once(struct evloop *loop, int timeout_ms);
void evloop_stop(struct evloop *loop);

/* Timers (a timerfd each): cb runs first_ms from now, then every period_ms
 * (0: once). A callback may set, stop or delete its own timer. */
struct evloop_timer;
typedef void (*evloop_timer_cb)(void *opaque, struct evloop_timer *t);
int evloop_timer_add(struct evloop *loop, uint64_t first_ms, uint64_t period_ms,
		     evloop_timer_cb cb, void *opaque, struct evloop_timer **out);
/* Re-arms: first_ms from now (0: on the next turn of the loop). */
int evloop_timer_set(struct evloop_timer *t, uint64_t first_ms, uint64_t period_ms);
void evloop_timer_stop(struct evloop_timer *t);
void evloop_timer_del(struct evloop_timer *t);

#endif
