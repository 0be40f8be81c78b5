/* agent/link.c: the reconnection backoff (exponential, capped, jittered in
 * the upper half so waits never shrink while they grow), and the link
 * against a real listening socket: Hello out, Welcome in, heartbeats at the
 * interval Welcome names, a refusal retried. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/socket.h>

#include "conn.h"
#include "link.h"
#include "log.h"
#include "test_agent_helpers.h"

static void test_backoff(void **state)
{
	/* No jitter drawn (r = 0): the full wait. */
	assert_int_equal(link_backoff_ms(500, 30000, 0, 0), 500);
	assert_int_equal(link_backoff_ms(500, 30000, 1, 0), 1000);
	assert_int_equal(link_backoff_ms(500, 30000, 5, 0), 16000);
	assert_int_equal(link_backoff_ms(500, 30000, 6, 0), 30000);
	assert_int_equal(link_backoff_ms(500, 30000, 31, 0), 30000);
	assert_int_equal(link_backoff_ms(500, 30000, 1000, 0), 30000);
	/* Jitter stays in the upper half, whatever r is. */
	for (uint32_t r = 0; r < 5000; r += 7) {
		for (unsigned n = 0; n < 10; n++) {
			uint32_t full = link_backoff_ms(100, 5000, n, 0);
			uint32_t w = link_backoff_ms(100, 5000, n, r * 2654435761u);

			assert_true(w <= full);
			assert_true(w >= full / 2);
			/* ...so while waits double (below the cap), the next never
			 * waits less than this one could have. */
			if (link_backoff_ms(100, 5000, n + 1, 0) == 2 * full)
				assert_true(link_backoff_ms(100, 5000, n + 1, r * 40503u) >= full);
		}
	}
	assert_true(link_backoff_ms(0, 0, 3, 1) <= 1);
}

/* ---- a link against a controller played by hand ---- */

struct ctl {
	struct evloop *loop;
	int lfd;
	struct conn *c;
	unsigned hellos, heartbeats, accepted;
	bool refuse;
	uint64_t beat_ms[8];
};

struct agent_side {
	unsigned hellos_sent, ups, beats;
};

static void ctl_message(struct conn *c, const Drover__Envelope *env, void *opaque)
{
	struct ctl *t = opaque;

	if (env->body_case == DROVER__ENVELOPE__BODY_HELLO) {
		Drover__Envelope out = DROVER__ENVELOPE__INIT;
		Drover__Welcome w = DROVER__WELCOME__INIT;

		t->hellos++;
		assert_string_equal(env->hello->host_id, "6f1c3b2a-0000-4000-8000-00000000abcd");
		if (t->refuse) {
			conn_send_error(c, env->seq, "refused", "not today");
			conn_close_after_flush(c);
			t->c = NULL;
			return;
		}
		w.heartbeat_interval_ms = 150;
		out.body_case = DROVER__ENVELOPE__BODY_WELCOME;
		out.welcome = &w;
		conn_send(c, &out);
	} else if (env->body_case == DROVER__ENVELOPE__BODY_HEARTBEAT) {
		if (t->heartbeats < 8)
			t->beat_ms[t->heartbeats] = th_now_ms();
		t->heartbeats++;
	}
}

static void ctl_closed(struct conn *c, int err, const char *why, void *opaque)
{
	struct ctl *t = opaque;

	t->c = NULL;
}

static const struct conn_handler ctl_handler = { ctl_message, ctl_closed };

static void ctl_accept(void *opaque, int fd, uint32_t events)
{
	struct ctl *t = opaque;
	int s = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (s < 0)
		return;
	t->accepted++;
	if (t->c)
		conn_close(t->c);
	assert_int_equal(conn_open(t->loop, s, NULL, &ctl_handler, t, &t->c), 0);
}

static void a_hello(void *opaque, struct link *l)
{
	struct agent_side *a = opaque;
	Drover__Envelope env = DROVER__ENVELOPE__INIT;
	Drover__Hello h = DROVER__HELLO__INIT;

	h.host_id = "6f1c3b2a-0000-4000-8000-00000000abcd";
	env.body_case = DROVER__ENVELOPE__BODY_HELLO;
	env.hello = &h;
	assert_true(link_send(l, &env) > 0);
	a->hellos_sent++;
}

static void a_up(void *opaque, struct link *l)
{
	struct agent_side *a = opaque;

	a->ups++;
}

static void a_beat(void *opaque, struct link *l)
{
	struct agent_side *a = opaque;
	Drover__Envelope env = DROVER__ENVELOPE__INIT;
	Drover__Heartbeat hb = DROVER__HEARTBEAT__INIT;

	env.body_case = DROVER__ENVELOPE__BODY_HEARTBEAT;
	env.heartbeat = &hb;
	link_send(l, &env);
	a->beats++;
}

static void a_message(void *opaque, struct link *l, const Drover__Envelope *env)
{
}

static const struct link_hooks hooks = { a_hello, a_up, a_beat, a_message };

static void test_link_welcome_heartbeat_refusal(void **state)
{
	struct ctl t = { 0 };
	struct agent_side a = { 0 };
	struct link *l;
	char err[256], addr[64];
	uint16_t port;
	uint64_t end;
	Drover__Envelope env = DROVER__ENVELOPE__INIT;

	assert_int_equal(evloop_new(&t.loop), 0);
	assert_int_equal(conn_listen("127.0.0.1:0", 8, &t.lfd, &port, err, sizeof(err)), 0);
	assert_int_equal(evloop_add(t.loop, t.lfd, EPOLLIN, ctl_accept, &t), 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
	struct link_options opt = { .controller = addr,
				    .host_id = "6f1c3b2a-0000-4000-8000-00000000abcd",
				    .reconnect_min_ms = 50, .reconnect_max_ms = 200 };
	assert_int_equal(link_new(t.loop, &opt, &hooks, &a, &l), 0);

	/* Before the first dial nothing can be sent. */
	env.body_case = DROVER__ENVELOPE__BODY_HEARTBEAT;
	assert_int_equal(link_send(l, &env), -ENOTCONN);
	link_start(l);
	end = th_now_ms() + 3000;
	while (t.heartbeats < 4 && th_now_ms() < end)
		evloop_run_once(t.loop, 10);
	assert_int_equal(a.ups, 1);
	assert_true(link_is_up(l));
	assert_int_equal(link_heartbeat_ms(l), 150);
	assert_true(t.heartbeats >= 4);
	for (int i = 1; i < 4; i++) {
		uint64_t gap = t.beat_ms[i] - t.beat_ms[i - 1];

		assert_true(gap >= 100 && gap <= 400);
	}

	/* Refused: retried with backoff, never up, the link object lives on. */
	t.refuse = true;
	conn_close(t.c);
	t.c = NULL;
	uint64_t gen = link_generation(l);
	end = th_now_ms() + 2000;
	while (t.accepted < 5 && th_now_ms() < end)
		evloop_run_once(t.loop, 10);
	assert_true(t.accepted >= 5);
	assert_false(link_is_up(l));
	assert_true(link_generation(l) > gen);
	assert_int_equal(a.ups, 1);

	/* Welcomed again. */
	t.refuse = false;
	end = th_now_ms() + 2000;
	while (a.ups < 2 && th_now_ms() < end)
		evloop_run_once(t.loop, 10);
	assert_int_equal(a.ups, 2);

	link_free(l);
	if (t.c)
		conn_close(t.c);
	evloop_del(t.loop, t.lfd);
	close(t.lfd);
	evloop_free(t.loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_link_welcome_heartbeat_refusal),
	};

	log_init("test_agent_link", LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
