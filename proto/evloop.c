/* The event loop every drover process runs on its main thread.
 *
 * Invariant: a watch that a callback deletes (its own or another) is
 * unlinked from the fd table at once and freed only after the current
 * batch of epoll events has been dispatched, so a later event of the same
 * batch that still points at it sees `deleted` and is skipped. */
#include "evloop.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

struct watch {
	int fd;
	bool deleted;
	evloop_cb cb;
	void *opaque;
	struct watch *next_dead;   /* in the graveyard once deleted */
};

struct evloop {
	int epfd;
	bool stop;
	struct watch **by_fd;      /* indexed by fd */
	size_t nfds;
	struct watch *graveyard;   /* freed after the current dispatch batch */
};

struct evloop_timer {
	struct evloop *loop;
	int fd;
	evloop_timer_cb cb;
	void *opaque;
};

int evloop_new(struct evloop **out)
{
	struct evloop *loop = calloc(1, sizeof(*loop));

	if (!loop)
		return -ENOMEM;
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd < 0) {
		int ret = -errno;

		free(loop);
		return ret;
	}
	*out = loop;
	return 0;
}

static void free_graveyard(struct evloop *loop)
{
	while (loop->graveyard) {
		struct watch *next = loop->graveyard->next_dead;

		free(loop->graveyard);
		loop->graveyard = next;
	}
}

void evloop_free(struct evloop *loop)
{
	if (!loop)
		return;
	close(loop->epfd);
	for (size_t i = 0; i < loop->nfds; i++)
		free(loop->by_fd[i]);
	free(loop->by_fd);
	free_graveyard(loop);
	free(loop);
}

static struct watch *find(struct evloop *loop, int fd)
{
	return fd >= 0 && (size_t)fd < loop->nfds ? loop->by_fd[fd] : NULL;
}

static int reserve(struct evloop *loop, int fd)
{
	size_t n = loop->nfds ? loop->nfds : 64;
	struct watch **p;

	if ((size_t)fd < loop->nfds)
		return 0;
	while (n <= (size_t)fd)
		n *= 2;
	p = realloc(loop->by_fd, n * sizeof(*p));
	if (!p)
		return -ENOMEM;
	memset(p + loop->nfds, 0, (n - loop->nfds) * sizeof(*p));
	loop->by_fd = p;
	loop->nfds = n;
	return 0;
}

int evloop_add(struct evloop *loop, int fd, uint32_t events, evloop_cb cb, void *opaque)
{
	struct epoll_event ev = { .events = events };
	struct watch *w;
	int ret;

	if (fd < 0)
		return -EBADF;
	if (find(loop, fd))
		return -EEXIST;
	ret = reserve(loop, fd);
	if (ret < 0)
		return ret;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->fd = fd;
	w->cb = cb;
	w->opaque = opaque;
	ev.data.ptr = w;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		ret = -errno;
		free(w);
		return ret;
	}
	loop->by_fd[fd] = w;
	return 0;
}

int evloop_mod(struct evloop *loop, int fd, uint32_t events)
{
	struct watch *w = find(loop, fd);
	struct epoll_event ev = { .events = events };

	if (!w)
		return -ENOENT;
	ev.data.ptr = w;
	return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

void evloop_del(struct evloop *loop, int fd)
{
	struct watch *w = find(loop, fd);

	if (!w)
		return;
	epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
	loop->by_fd[fd] = NULL;
	w->deleted = true;
	w->next_dead = loop->graveyard;
	loop->graveyard = w;
}

int evloop_run_once(struct evloop *loop, int timeout_ms)
{
	struct epoll_event evs[64];
	int n = epoll_wait(loop->epfd, evs, 64, timeout_ms);

	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (int i = 0; i < n && !loop->stop; i++) {
		struct watch *w = evs[i].data.ptr;

		if (!w->deleted)
			w->cb(w->opaque, w->fd, evs[i].events);
	}
	free_graveyard(loop);
	return n;
}

int evloop_run(struct evloop *loop)
{
	loop->stop = false;
	while (!loop->stop) {
		int ret = evloop_run_once(loop, -1);

		if (ret < 0)
			return ret;
	}
	return 0;
}

void evloop_stop(struct evloop *loop)
{
	loop->stop = true;
}

/* ---- timers ---- */

static void timer_fired(void *opaque, int fd, uint32_t events)
{
	struct evloop_timer *t = opaque;
	uint64_t expirations;

	if (read(fd, &expirations, sizeof(expirations)) != sizeof(expirations))
		return;    /* re-armed meanwhile: nothing due */
	t->cb(t->opaque, t);
}

int evloop_timer_add(struct evloop *loop, uint64_t first_ms, uint64_t period_ms,
		     evloop_timer_cb cb, void *opaque, struct evloop_timer **out)
{
	struct evloop_timer *t = calloc(1, sizeof(*t));
	int ret;

	if (!t)
		return -ENOMEM;
	t->loop = loop;
	t->cb = cb;
	t->opaque = opaque;
	t->fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (t->fd < 0) {
		ret = -errno;
		free(t);
		return ret;
	}
	ret = evloop_add(loop, t->fd, EPOLLIN, timer_fired, t);
	if (ret == 0)
		ret = evloop_timer_set(t, first_ms, period_ms);
	if (ret < 0) {
		evloop_timer_del(t);
		return ret;
	}
	*out = t;
	return 0;
}

int evloop_timer_set(struct evloop_timer *t, uint64_t first_ms, uint64_t period_ms)
{
	struct itimerspec its = {
		.it_value = { .tv_sec = (time_t)(first_ms / 1000),
			      .tv_nsec = (long)(first_ms % 1000) * 1000000 },
		.it_interval = { .tv_sec = (time_t)(period_ms / 1000),
				 .tv_nsec = (long)(period_ms % 1000) * 1000000 },
	};

	/* 0 would disarm it: "at once" is the next loop turn. */
	if (!first_ms)
		its.it_value.tv_nsec = 1;
	return timerfd_settime(t->fd, 0, &its, NULL) < 0 ? -errno : 0;
}

void evloop_timer_stop(struct evloop_timer *t)
{
	struct itimerspec its = { 0 };

	timerfd_settime(t->fd, 0, &its, NULL);
}

void evloop_timer_del(struct evloop_timer *t)
{
	if (!t)
		return;
	evloop_del(t->loop, t->fd);
	close(t->fd);
	free(t);
}
