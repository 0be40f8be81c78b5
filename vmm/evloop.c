#include "evloop.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

struct watch {
	int fd;
	bool deleted;
	evloop_cb cb;
	void *opaque;
	struct watch *next;      /* all watches, or the graveyard once deleted */
};

struct evloop {
	int epfd;
	bool stop;
	struct watch *watches;
	struct watch *graveyard;   /* freed after the current dispatch batch */
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

static void free_list(struct watch *w)
{
	while (w) {
		struct watch *next = w->next;

		free(w);
		w = next;
	}
}

void evloop_free(struct evloop *loop)
{
	if (!loop)
		return;
	close(loop->epfd);
	free_list(loop->watches);
	free_list(loop->graveyard);
	free(loop);
}

static struct watch *find(struct evloop *loop, int fd, struct watch ***link)
{
	for (struct watch **pp = &loop->watches; *pp; pp = &(*pp)->next) {
		if ((*pp)->fd == fd) {
			if (link)
				*link = pp;
			return *pp;
		}
	}
	return NULL;
}

int evloop_add(struct evloop *loop, int fd, uint32_t events, evloop_cb cb, void *opaque)
{
	struct epoll_event ev = { .events = events };
	struct watch *w;

	if (find(loop, fd, NULL))
		return -EEXIST;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->fd = fd;
	w->cb = cb;
	w->opaque = opaque;
	ev.data.ptr = w;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int ret = -errno;

		free(w);
		return ret;
	}
	w->next = loop->watches;
	loop->watches = w;
	return 0;
}

int evloop_mod(struct evloop *loop, int fd, uint32_t events)
{
	struct watch *w = find(loop, fd, NULL);
	struct epoll_event ev = { .events = events };

	if (!w)
		return -ENOENT;
	ev.data.ptr = w;
	return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

void evloop_del(struct evloop *loop, int fd)
{
	struct watch **link, *w = find(loop, fd, &link);

	if (!w)
		return;
	epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
	*link = w->next;
	w->deleted = true;
	w->next = loop->graveyard;
	loop->graveyard = w;
}

int evloop_run_once(struct evloop *loop, int timeout_ms)
{
	struct epoll_event evs[32];
	int n = epoll_wait(loop->epfd, evs, 32, timeout_ms);

	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (int i = 0; i < n && !loop->stop; i++) {
		struct watch *w = evs[i].data.ptr;

		if (!w->deleted)
			w->cb(w->opaque, w->fd, evs[i].events);
	}
	free_list(loop->graveyard);
	loop->graveyard = NULL;
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
