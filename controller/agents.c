/* The agents' side (agents.h says what it does).
 *
 * Invariants:
 *   (1) An agent connection has no host until its Hello is accepted; after
 *       that, it is its host's `agent` and the only one: a newer Hello for
 *       the same host id closes the older connection first.
 *   (2) A host's liveness is kept here, in memory (`struct host_rt`, one
 *       per host the store knows), and its up/down flag in the store
 *       follows it: set down by tick() when nothing was heard for the
 *       heartbeat timeout, up again by the next Hello or Heartbeat. After a
 *       restart every host gets one timeout of grace to reconnect.
 *   (3) Everything written to JSON from the wire is checked first: ids and
 *       names against their patterns (refused), free text made printable
 *       (protobuf-c does not check UTF-8). */
#include "agents.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"
#include "conn.h"
#include "evloop.h"
#include "log.h"
#include "ops.h"
#include "store.h"
#include "util.h"

#define HOST_ID_MAX 64
#define TEXT_MAX 256

struct pending {
	uint64_t seq;
	char op_id[CTL_UUID_LEN + 1];
};

struct host_rt;

struct agent {
	struct agent *next;
	struct agents *owner;
	struct conn *c;
	struct host_rt *host;          /* NULL until Hello */
	struct pending *pending;
	size_t npending, cap;
};

struct host_rt {
	char *id, *name;
	bool up;
	uint64_t last_seen;            /* monotonic ms */
	struct agent *agent;           /* connected, or NULL */
};

struct agents {
	struct ctl *ctl;
	int lfd;
	struct agent *list;
	struct host_rt *hosts;
	size_t nhosts, hosts_cap;
	struct evloop_timer *tick;
};

static uint64_t mono_ms(void)
{
	return monotonic_ns() / 1000000;
}

static struct host_rt *host_find(struct agents *a, const char *id)
{
	for (size_t i = 0; i < a->nhosts; i++) {
		if (!strcmp(a->hosts[i].id, id))
			return &a->hosts[i];
	}
	return NULL;
}

static struct host_rt *host_add(struct agents *a, const char *id, const char *name, bool up)
{
	struct host_rt *h;

	if (a->nhosts == a->hosts_cap) {
		size_t cap = a->hosts_cap ? 2 * a->hosts_cap : 64;
		struct host_rt *p = realloc(a->hosts, cap * sizeof(*p));

		if (!p)
			return NULL;
		/* Agents point at their host: move those pointers along. */
		for (struct agent *ag = a->list; ag; ag = ag->next) {
			if (ag->host)
				ag->host = p + (ag->host - a->hosts);
		}
		a->hosts = p;
		a->hosts_cap = cap;
	}
	h = &a->hosts[a->nhosts];
	memset(h, 0, sizeof(*h));
	h->id = strdup(id);
	h->name = strdup(name);
	if (!h->id || !h->name) {
		free(h->id);
		free(h->name);
		return NULL;
	}
	h->up = up;
	h->last_seen = mono_ms();
	a->nhosts++;
	return h;
}

/* ---- checking what comes from the wire ---- */

static bool id_valid(const char *s)
{
	size_t len = s ? strlen(s) : 0;

	return len >= 1 && len <= HOST_ID_MAX &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-") == len;
}

static bool host_name_valid(const char *s)
{
	size_t len = s ? strlen(s) : 0;

	return len >= 1 && len <= 63 && s[0] != '.' && s[0] != '-' && s[0] != '_' &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == len;
}

/* CPU flags ("sse4_2") and KVM capability names ("dirty-log-ring"). */
static bool word_valid(const char *s)
{
	size_t len = s ? strlen(s) : 0;

	return len >= 1 && len <= 64 && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_.-") == len;
}

/* Printable ASCII, at most TEXT_MAX - 1 bytes; anything else becomes '?'. */
static const char *clean(const char *s, char buf[TEXT_MAX])
{
	size_t n = 0;

	for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p && n < TEXT_MAX - 1;
	     p++)
		buf[n++] = *p >= 0x20 && *p < 0x7f ? (char)*p : '?';
	buf[n] = '\0';
	return buf;
}

static json_int_t clamp64(uint64_t v)
{
	return v > (uint64_t)INT64_MAX ? (json_int_t)INT64_MAX : (json_int_t)v;
}

static int cmp_str(const void *x, const void *y)
{
	return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* The inventory as JSON (proto field names) and its CPU flags as the
 * store keeps them: valid ones only, sorted, unique, space-separated. */
static int inventory_convert(const Drover__Inventory *inv, char **json_text, char **flags_text)
{
	static const Drover__Inventory empty = DROVER__INVENTORY__INIT;
	json_t *doc, *flags = json_array(), *caps = json_array();
	const char **sorted;
	char b1[TEXT_MAX], b2[TEXT_MAX], b3[TEXT_MAX], b4[TEXT_MAX], b5[TEXT_MAX];
	size_t n = 0, len = 1, o = 0;

	if (!inv)
		inv = &empty;
	sorted = calloc(inv->n_cpu_flags + 1, sizeof(*sorted));
	if (!sorted || !flags || !caps)
		goto nomem;
	for (size_t i = 0; i < inv->n_cpu_flags; i++) {
		if (word_valid(inv->cpu_flags[i]))
			sorted[n++] = inv->cpu_flags[i];
	}
	qsort(sorted, n, sizeof(*sorted), cmp_str);
	for (size_t i = 0; i < n; i++)
		len += strlen(sorted[i]) + 1;
	*flags_text = malloc(len);
	if (!*flags_text)
		goto nomem;
	(*flags_text)[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		if (i && !strcmp(sorted[i], sorted[i - 1]))
			continue;
		o += (size_t)sprintf(*flags_text + o, "%s%s", o ? " " : "", sorted[i]);
		json_array_append_new(flags, json_string(sorted[i]));
	}
	for (size_t i = 0; i < inv->n_kvm_caps; i++) {
		if (word_valid(inv->kvm_caps[i]))
			json_array_append_new(caps, json_string(inv->kvm_caps[i]));
	}
	free(sorted);
	doc = json_pack("{s:s,s:I,s:o,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:b,s:I,s:o,s:I,s:I,s:I,"
			"s:I,s:f,s:s}",
			"cpu_model", clean(inv->cpu_model, b1), "cpus", (json_int_t)inv->cpus,
			"cpu_flags", flags, "virt", clean(inv->virt, b2), "ept", clean(inv->ept, b3),
			"vpid", clean(inv->vpid, b4), "mem_total", clamp64(inv->mem_total),
			"mem_available", clamp64(inv->mem_available),
			"hugepages_total", clamp64(inv->hugepages_total),
			"hugepages_free", clamp64(inv->hugepages_free),
			"hugepage_size", clamp64(inv->hugepage_size), "kvm", inv->kvm,
			"kvm_max_vcpus", (json_int_t)inv->kvm_max_vcpus, "kvm_caps", caps,
			"reserved_cpus", (json_int_t)inv->reserved_cpus,
			"reserved_mem", clamp64(inv->reserved_mem),
			"vcpus_used", (json_int_t)inv->vcpus_used, "mem_used", clamp64(inv->mem_used),
			"load1", inv->load1 == inv->load1 ? inv->load1 : 0.0,
			"kernel", clean(inv->kernel, b5));
	*json_text = doc ? json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(doc);
	if (!*json_text) {
		free(*flags_text);
		*flags_text = NULL;
		return -ENOMEM;
	}
	return 0;
nomem:
	free(sorted);
	json_decref(flags);
	json_decref(caps);
	return -ENOMEM;
}

static void report_fill(struct store_host_report *r, const Drover__Inventory *inv)
{
	if (!inv)
		return;
	r->cpus = inv->cpus;
	r->reserved_cpus = inv->reserved_cpus;
	r->mem = inv->mem_total;
	r->reserved_mem = inv->reserved_mem;
}

/* ---- connections ---- */

static void agent_free(struct agent *ag)
{
	free(ag->pending);
	free(ag);
}

static void agent_unlink(struct agents *a, struct agent *ag)
{
	for (struct agent **p = &a->list; *p; p = &(*p)->next) {
		if (*p == ag) {
			*p = ag->next;
			break;
		}
	}
}

/* The connection is gone (closed by either side): forget it, and tell the
 * operations whose commands it carried. */
static void agent_gone(struct agents *a, struct agent *ag)
{
	char *host_id = NULL;

	agent_unlink(a, ag);
	if (ag->host && ag->host->agent == ag) {
		ag->host->agent = NULL;
		host_id = strdup(ag->host->id);
	}
	agent_free(ag);
	if (host_id) {
		ops_agent_disconnected(a->ctl->ops, host_id);
		free(host_id);
	}
}

static void agent_drop(struct agents *a, struct agent *ag, bool flush)
{
	struct conn *c = ag->c;

	agent_gone(a, ag);
	if (flush)
		conn_close_after_flush(c);
	else
		conn_close(c);
}

static int event(struct agents *a, const char *kind, const char *host_id, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int event(struct agents *a, const char *kind, const char *host_id, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_info("%s", msg);
	return store_event_add(a->ctl->store, kind, NULL, host_id, ctl_now_ms(), "%s", msg);
}

static void refuse(struct agents *a, struct agent *ag, uint64_t reply_to, const char *code,
		   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void refuse(struct agents *a, struct agent *ag, uint64_t reply_to, const char *code,
		   const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_warn("agent %s refused: %s: %s", conn_peer(ag->c), code, msg);
	conn_send_error(ag->c, reply_to, code, "%s", msg);
	agent_drop(a, ag, true);
}

static void vm_reports(struct agents *a, const char *host_id, Drover__VmStatus **vms, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (vms[i])
			ops_vm_report(a->ctl->ops, host_id, vms[i], NULL, NULL);
	}
}

static int labels_json(const Drover__Hello *h, char **out, char *why, size_t whylen)
{
	json_t *doc = json_object();

	if (!doc)
		return -ENOMEM;
	for (size_t i = 0; i < h->n_labels; i++) {
		const char *k = h->labels[i]->key, *v = h->labels[i]->value;
		char buf[TEXT_MAX];

		if (!ctl_label_key_valid(k)) {
			snprintf(why, whylen, "label key '%.64s' must be 1 to 63 letters, digits, '.', "
				 "'_', '/' or '-'", clean(k, buf));
			json_decref(doc);
			return -EINVAL;
		}
		if (strlen(v ? v : "") > 255 || strcmp(clean(v, buf), v ? v : "")) {
			snprintf(why, whylen, "label '%.64s': a value is at most 255 printable ASCII "
				 "characters", k);
			json_decref(doc);
			return -EINVAL;
		}
		json_object_set_new(doc, k, json_string(v ? v : ""));
	}
	*out = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(doc);
	return *out ? 0 : -ENOMEM;
}

/* "10.0.0.2:41234" -> "10.0.0.2"; "[::1]:5" -> "::1". */
static void peer_ip(const char *peer, char *out, size_t len)
{
	const char *colon = strrchr(peer, ':');
	size_t n = colon ? (size_t)(colon - peer) : strlen(peer);

	if (n >= 2 && peer[0] == '[' && peer[n - 1] == ']') {
		peer++;
		n -= 2;
	}
	snprintf(out, len, "%.*s", (int)n, peer);
}

static void on_hello(struct agents *a, struct agent *ag, const Drover__Envelope *env)
{
	const Drover__Hello *h = env->hello;
	Drover__Envelope reply = DROVER__ENVELOPE__INIT;
	Drover__Welcome w = DROVER__WELCOME__INIT;
	struct store_host_report r = { 0 };
	struct host_rt *hr;
	char why[300], addr[64], mig[TEXT_MAX], ver[TEXT_MAX], buf[TEXT_MAX];
	char *labels = NULL, *inventory = NULL, *flags = NULL;
	bool created, was_up;
	int ret;

	if (ag->host) {
		conn_send_error(ag->c, env->seq, "unexpected-hello", "this connection already said "
				"Hello (host %s)", ag->host->name);
		return;
	}
	if (!id_valid(h->host_id)) {
		refuse(a, ag, env->seq, "bad-hello", "host_id '%s' must be 1 to %d letters, digits, "
		       "'.', '_', ':' or '-'", clean(h->host_id, buf), HOST_ID_MAX);
		return;
	}
	if (!host_name_valid(h->host_name)) {
		refuse(a, ag, env->seq, "bad-hello", "host_name '%s' must be 1 to 63 letters, "
		       "digits, '.', '_' or '-', starting with a letter or digit",
		       clean(h->host_name, buf));
		return;
	}
	if (labels_json(h, &labels, why, sizeof(why)) == -EINVAL) {
		refuse(a, ag, env->seq, "bad-hello", "%s", why);
		return;
	}
	ret = labels ? inventory_convert(h->inventory, &inventory, &flags) : -ENOMEM;
	if (ret) {
		refuse(a, ag, env->seq, "internal", "out of memory reading the Hello");
		goto out;
	}
	peer_ip(conn_peer(ag->c), addr, sizeof(addr));
	r.name = h->host_name;
	r.address = addr;
	r.migration_address = clean(h->migration_address, mig);
	r.agent_version = clean(h->agent_version, ver);
	r.labels = labels;
	r.inventory = inventory;
	r.cpu_flags = flags;
	report_fill(&r, h->inventory);
	ret = store_host_hello(a->ctl->store, h->host_id, &r, ctl_now_ms(), &created, &was_up);
	if (ret == -EEXIST) {
		refuse(a, ag, env->seq, "host-name-taken", "host name '%s' belongs to another host "
		       "id; give this host another name or its old host_id", h->host_name);
		goto out;
	}
	if (ret) {
		refuse(a, ag, env->seq, "internal", "the controller could not record the host: %s",
		       strerror(-ret));
		goto out;
	}
	hr = host_find(a, h->host_id);
	if (!hr)
		hr = host_add(a, h->host_id, h->host_name, true);
	if (!hr) {
		refuse(a, ag, env->seq, "internal", "out of memory");
		goto out;
	}
	if (strcmp(hr->name, h->host_name)) {
		char *n = strdup(h->host_name);

		if (n) {
			free(hr->name);
			hr->name = n;
		}
	}
	if (created)
		event(a, "host-registered", hr->id, "host %s (id %s) registered from %s", hr->name,
		      hr->id, addr);
	if (hr->agent) {
		event(a, "agent-replaced", hr->id, "host %s: a new agent connection from %s replaces "
		      "the one from %s", hr->name, conn_peer(ag->c), conn_peer(hr->agent->c));
		agent_drop(a, hr->agent, false);
	}
	if (!was_up)
		event(a, "host-up", hr->id, "host %s is up (agent %s connected from %s)", hr->name,
		      r.agent_version, addr);
	ag->host = hr;
	hr->agent = ag;
	hr->up = true;
	hr->last_seen = mono_ms();
	w.controller_version = DROVER_VERSION;
	w.heartbeat_interval_ms = ctl_heartbeat_interval_ms(&a->ctl->opt);
	w.host_id = h->host_id;
	reply.reply_to = env->seq;
	reply.body_case = DROVER__ENVELOPE__BODY_WELCOME;
	reply.welcome = &w;
	if (conn_send(ag->c, &reply) < 0)
		goto out;       /* closed() ran and forgot it */
	vm_reports(a, hr->id, h->vms, h->n_vms);
	ops_host_vms(a->ctl->ops, hr->id, h->vms, h->n_vms);
	ops_agent_connected(a->ctl->ops, hr->id);
out:
	free(labels);
	free(inventory);
	free(flags);
}

static void on_heartbeat(struct agents *a, struct agent *ag, const Drover__Envelope *env)
{
	const Drover__Heartbeat *hb = env->heartbeat;
	struct store_host_report r = { 0 };
	char *inventory = NULL, *flags = NULL;
	bool was_up;
	int ret;

	if (inventory_convert(hb->inventory, &inventory, &flags))
		return;
	r.inventory = inventory;
	r.cpu_flags = flags;
	report_fill(&r, hb->inventory);
	ret = store_host_heartbeat(a->ctl->store, ag->host->id, &r, ctl_now_ms(), &was_up);
	free(inventory);
	free(flags);
	if (ret) {
		log_error("host %s: cannot record its heartbeat: %s", ag->host->name, strerror(-ret));
		return;
	}
	ag->host->last_seen = mono_ms();
	if (!was_up || !ag->host->up) {
		ag->host->up = true;
		event(a, "host-up", ag->host->id, "host %s is up again (heartbeats arrive)",
		      ag->host->name);
	}
	vm_reports(a, ag->host->id, hb->vms, hb->n_vms);
}

/* The pending command that reply_to answers: 1 with its op id copied out. */
static int take_pending(struct agent *ag, uint64_t seq, char op_id[CTL_UUID_LEN + 1])
{
	for (size_t i = 0; i < ag->npending; i++) {
		if (ag->pending[i].seq == seq) {
			memcpy(op_id, ag->pending[i].op_id, CTL_UUID_LEN + 1);
			ag->pending[i] = ag->pending[--ag->npending];
			return 1;
		}
	}
	return 0;
}

static void on_result(struct agents *a, struct agent *ag, const Drover__Envelope *env)
{
	char op_id[CTL_UUID_LEN + 1];

	if (!take_pending(ag, env->reply_to, op_id)) {
		log_debug("host %s answered command %llu, which nothing waits for", ag->host->name,
			  (unsigned long long)env->reply_to);
		return;
	}
	ops_command_result(a->ctl->ops, op_id, env->reply_to, env->result, NULL, NULL);
}

static void on_error(struct agents *a, struct agent *ag, const Drover__Envelope *env)
{
	char op_id[CTL_UUID_LEN + 1], code[TEXT_MAX], msg[TEXT_MAX];

	clean(env->error->code, code);
	clean(env->error->message, msg);
	if (env->reply_to && ag->host && take_pending(ag, env->reply_to, op_id)) {
		ops_command_result(a->ctl->ops, op_id, env->reply_to, NULL, *code ? code : "agent-error",
				   msg);
		return;
	}
	log_warn("agent %s (%s) sent an error: %s: %s", conn_peer(ag->c),
		 ag->host ? ag->host->name : "before Hello", code, msg);
}

static const char *body_name(const Drover__Envelope *env)
{
	const char *name = conn_body_name(env);

	return name ? name : "an unknown message";
}

static void on_message(struct conn *c, const Drover__Envelope *env, void *opaque)
{
	struct agent *ag = opaque;
	struct agents *a = ag->owner;

	if (env->body_case == DROVER__ENVELOPE__BODY_HELLO) {
		on_hello(a, ag, env);
		return;
	}
	if (!ag->host) {
		refuse(a, ag, env->seq, "not-hello", "the first message must be Hello, not %s",
		       body_name(env));
		return;
	}
	switch (env->body_case) {
	case DROVER__ENVELOPE__BODY_HEARTBEAT:
		on_heartbeat(a, ag, env);
		break;
	case DROVER__ENVELOPE__BODY_RESULT:
		on_result(a, ag, env);
		break;
	case DROVER__ENVELOPE__BODY_VM_EVENT:
		if (env->vm_event->status)
			ops_vm_report(a->ctl->ops, ag->host->id, env->vm_event->status,
				      env->vm_event->event, env->vm_event->detail);
		break;
	case DROVER__ENVELOPE__BODY_ERROR:
		on_error(a, ag, env);
		break;
	default:
		conn_send_error(c, env->seq, "unexpected-message", "%s is the controller's to send, "
				"not an agent's", body_name(env));
		break;
	}
}

static void on_closed(struct conn *c, int err, const char *why, void *opaque)
{
	struct agent *ag = opaque;

	log_info("agent %s (%s) disconnected: %s", conn_peer(c),
		 ag->host ? ag->host->name : "before Hello", why);
	agent_gone(ag->owner, ag);
}

static const struct conn_handler handler = { on_message, on_closed };

static void on_accept(void *opaque, int fd, uint32_t events)
{
	struct agents *a = opaque;

	for (int i = 0; i < 64; i++) {
		int s = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct agent *ag;

		if (s < 0) {
			if (errno != EAGAIN && errno != EINTR)
				log_warn("accepting an agent: %s", strerror(errno));
			return;
		}
		ag = calloc(1, sizeof(*ag));
		if (!ag || conn_open(a->ctl->loop, s, NULL, &handler, ag, &ag->c)) {
			free(ag);
			close(s);
			continue;
		}
		ag->owner = a;
		ag->next = a->list;
		a->list = ag;
		log_debug("agent connection from %s", conn_peer(ag->c));
	}
}

/* ---- liveness ---- */

static void tick(void *opaque, struct evloop_timer *t)
{
	struct agents *a = opaque;
	uint64_t now = mono_ms(), timeout = (uint64_t)a->ctl->opt.heartbeat_timeout_s * 1000;

	for (size_t i = 0; i < a->nhosts; i++) {
		struct host_rt *h = &a->hosts[i];
		int ret;

		if (!h->up || now - h->last_seen <= timeout)
			continue;
		ret = store_host_set_up(a->ctl->store, h->id, false, ctl_now_ms());
		if (ret) {
			log_error("host %s: cannot mark it down: %s", h->name, strerror(-ret));
			continue;
		}
		h->up = false;
		event(a, "host-down", h->id, "host %s is down: no heartbeat for %llu s (%s)", h->name,
		      (unsigned long long)((now - h->last_seen) / 1000),
		      h->agent ? "its agent is connected but silent" : "no agent connected");
	}
}

struct loading {
	struct agents *a;
	int64_t last_seq;
};

static int load_host(const struct store_host *h, void *opaque)
{
	struct loading *l = opaque;

	l->last_seq = h->seq;
	return host_add(l->a, h->id, h->name, h->up) ? 0 : -ENOMEM;
}

int agents_start(struct ctl *ctl, struct agents **out, uint16_t *port, char *err, size_t errlen)
{
	struct agents *a = calloc(1, sizeof(*a));
	struct loading l = { .a = a };
	bool more = true;
	uint32_t period;
	int ret = 0;

	if (!a)
		return -ENOMEM;
	a->ctl = ctl;
	a->lfd = -1;
	while (more && !ret)
		ret = store_host_list(ctl->store, NULL, l.last_seq, 500, load_host, &l, &more);
	if (ret) {
		snprintf(err, errlen, "reading the hosts from the database: %s", strerror(-ret));
		goto err;
	}
	ret = conn_listen(ctl->opt.agent_listen, 1024, &a->lfd, port, err, errlen);
	if (ret)
		goto err;
	ret = evloop_add(ctl->loop, a->lfd, EPOLLIN, on_accept, a);
	period = ctl_heartbeat_interval_ms(&ctl->opt);
	if (period > 1000)
		period = 1000;
	if (!ret)
		ret = evloop_timer_add(ctl->loop, period, period, tick, a, &a->tick);
	if (ret) {
		snprintf(err, errlen, "agent listener: %s", strerror(-ret));
		goto err;
	}
	*out = a;
	return 0;
err:
	agents_stop(a);
	return ret;
}

void agents_stop(struct agents *a)
{
	if (!a)
		return;
	while (a->list) {
		struct agent *ag = a->list;

		a->list = ag->next;
		conn_close(ag->c);
		agent_free(ag);
	}
	evloop_timer_del(a->tick);
	if (a->lfd >= 0) {
		evloop_del(a->ctl->loop, a->lfd);
		close(a->lfd);
	}
	for (size_t i = 0; i < a->nhosts; i++) {
		free(a->hosts[i].id);
		free(a->hosts[i].name);
	}
	free(a->hosts);
	free(a);
}

bool agents_connected(const struct agents *a, const char *host_id)
{
	const struct host_rt *h = host_id ? host_find((struct agents *)a, host_id) : NULL;

	return h && h->agent;
}

int agents_command(struct agents *a, const char *host_id, Drover__Command *cmd,
		   const char *op_id, uint64_t *seq)
{
	struct host_rt *h = host_id ? host_find(a, host_id) : NULL;
	Drover__Envelope env = DROVER__ENVELOPE__INIT;
	struct agent *ag;
	int64_t sent;

	if (!h || !h->agent)
		return -ENOTCONN;
	ag = h->agent;
	if (ag->npending == ag->cap) {
		size_t cap = ag->cap ? 2 * ag->cap : 8;
		struct pending *p = realloc(ag->pending, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		ag->pending = p;
		ag->cap = cap;
	}
	env.body_case = DROVER__ENVELOPE__BODY_COMMAND;
	env.command = cmd;
	sent = conn_send(ag->c, &env);
	if (sent < 0)
		return (int)sent;      /* -ENOBUFS: closed() ran; the agent is gone */
	ag->pending[ag->npending].seq = (uint64_t)sent;
	snprintf(ag->pending[ag->npending].op_id, sizeof(ag->pending[0].op_id), "%s", op_id);
	ag->npending++;
	*seq = (uint64_t)sent;
	return 0;
}
