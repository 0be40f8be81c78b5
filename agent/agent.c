/* drover-agent's core (agent.h): what goes into Hello and Heartbeat, how
 * the controller's Commands reach the supervisor and their results come
 * back, VmEvents, signals.
 *
 * Input from the controller is checked before it acts on anything: a
 * Command without a kind this agent knows, or naming no VM, is answered
 * with an error; a message an agent never takes is answered with Error
 * "unexpected-message"; the connection stays up. A reply is only sent on
 * the connection its command came on (link generation): after a reconnect
 * the controller learns the outcome from Hello and VmEvents instead. */
#include "agent.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "evloop.h"
#include "inventory.h"
#include "link.h"
#include "log.h"
#include "supervise.h"
#include "util.h"
#include "vmmdrv.h"

struct agent {
	const struct agent_config *cfg;
	struct evloop *loop;
	struct sv *sv;
	struct link *link;
	int sig_fd;
};

/* A command waiting for its result. */
struct pending_reply {
	struct agent *a;
	uint64_t seq;
	uint64_t generation;
};

/* ---- wire messages ---- */

static void wire_status(const struct sv_status *st, Drover__VmStatus *out)
{
	drover__vm_status__init(out);
	out->vm_id = (char *)st->vm_id;
	out->state = (char *)vmstate_name(st->state);
	out->pid = st->pid;
	out->exit_status = st->exit_status;
	out->exit_reason = (char *)st->exit_reason;
	out->since_ms = st->since_ms;
}

struct wire_vms {
	Drover__VmStatus *items;
	Drover__VmStatus **ptrs;
	size_t n, cap;
};

static void wire_vms_add(void *arg, const struct sv_status *st)
{
	struct wire_vms *w = arg;

	if (w->n < w->cap) {
		wire_status(st, &w->items[w->n]);
		w->ptrs[w->n] = &w->items[w->n];
		w->n++;
	}
}

static int wire_vms_fill(struct agent *a, struct wire_vms *w)
{
	w->cap = sv_count(a->sv);
	w->n = 0;
	w->items = calloc(w->cap ? w->cap : 1, sizeof(*w->items));
	w->ptrs = calloc(w->cap ? w->cap : 1, sizeof(*w->ptrs));
	if (!w->items || !w->ptrs) {
		free(w->items);
		free(w->ptrs);
		return -ENOMEM;
	}
	sv_foreach(a->sv, wire_vms_add, w);
	return 0;
}

static void wire_vms_free(struct wire_vms *w)
{
	free(w->items);
	free(w->ptrs);
}

/* The host as it is now; inv owns what m points to. */
static void wire_inventory(struct agent *a, struct inventory *inv, Drover__Inventory *m)
{
	inventory_init(inv);
	if (inventory_collect(inv, NULL) < 0)
		log_warn("inventory: out of memory; reporting what there is");
	inv->reserved_cpus = a->cfg->reserved_cpus;
	inv->reserved_mem = a->cfg->reserved_mem;
	sv_usage(a->sv, &inv->vcpus_used, &inv->mem_used);

	drover__inventory__init(m);
	m->cpu_model = inv->cpu_model;
	m->cpus = inv->cpus;
	m->n_cpu_flags = inv->ncpu_flags;
	m->cpu_flags = (char **)inv->cpu_flags;
	m->virt = inv->virt;
	m->ept = inv->ept;
	m->vpid = inv->vpid;
	m->mem_total = inv->mem_total;
	m->mem_available = inv->mem_available;
	m->hugepages_total = inv->hugepages_total;
	m->hugepages_free = inv->hugepages_free;
	m->hugepage_size = inv->hugepage_size;
	m->kvm = inv->kvm;
	m->kvm_max_vcpus = inv->kvm_max_vcpus;
	m->n_kvm_caps = inv->nkvm_caps;
	m->kvm_caps = (char **)inv->kvm_caps;
	m->reserved_cpus = inv->reserved_cpus;
	m->reserved_mem = inv->reserved_mem;
	m->vcpus_used = inv->vcpus_used;
	m->mem_used = inv->mem_used;
	m->load1 = inv->load1;
	m->kernel = inv->kernel;
}

/* ---- link hooks ---- */

static void send_hello(void *opaque, struct link *l)
{
	struct agent *a = opaque;
	const struct agent_config *cfg = a->cfg;
	Drover__Envelope env = DROVER__ENVELOPE__INIT;
	Drover__Hello hello = DROVER__HELLO__INIT;
	Drover__Inventory im;
	Drover__Hello__LabelsEntry *labels = NULL, **label_ptrs = NULL;
	struct inventory inv;
	struct wire_vms vms = { 0 };

	wire_inventory(a, &inv, &im);
	if (wire_vms_fill(a, &vms) < 0)
		goto out;
	if (cfg->nlabels) {
		labels = calloc(cfg->nlabels, sizeof(*labels));
		label_ptrs = calloc(cfg->nlabels, sizeof(*label_ptrs));
		if (!labels || !label_ptrs)
			goto out;
		for (size_t i = 0; i < cfg->nlabels; i++) {
			drover__hello__labels_entry__init(&labels[i]);
			labels[i].key = cfg->labels[i].key;
			labels[i].value = cfg->labels[i].value;
			label_ptrs[i] = &labels[i];
		}
	}
	hello.host_id = (char *)cfg->host_id;
	hello.host_name = cfg->host_name;
	hello.agent_version = DROVER_VERSION;
	hello.migration_address = cfg->migration_address ? cfg->migration_address : "";
	hello.inventory = &im;
	hello.n_vms = vms.n;
	hello.vms = vms.ptrs;
	hello.n_labels = cfg->nlabels;
	hello.labels = label_ptrs;
	env.body_case = DROVER__ENVELOPE__BODY_HELLO;
	env.hello = &hello;
	link_send(l, &env);
out:
	free(labels);
	free(label_ptrs);
	wire_vms_free(&vms);
	inventory_free(&inv);
}

static void link_up(void *opaque, struct link *l)
{
	struct agent *a = opaque;

	/* What start-up found (adoptions, VMMs that ended meanwhile). */
	sv_replay_startup(a->sv);
}

static void send_heartbeat(void *opaque, struct link *l)
{
	struct agent *a = opaque;
	Drover__Envelope env = DROVER__ENVELOPE__INIT;
	Drover__Heartbeat hb = DROVER__HEARTBEAT__INIT;
	Drover__Inventory im;
	struct inventory inv;
	struct wire_vms vms = { 0 };

	wire_inventory(a, &inv, &im);
	if (wire_vms_fill(a, &vms) == 0) {
		hb.inventory = &im;
		hb.n_vms = vms.n;
		hb.vms = vms.ptrs;
		env.body_case = DROVER__ENVELOPE__BODY_HEARTBEAT;
		env.heartbeat = &hb;
		link_send(l, &env);
		wire_vms_free(&vms);
	}
	inventory_free(&inv);
}

/* ---- commands ---- */

static void command_done(void *opaque, const struct sv_result *r)
{
	struct pending_reply *p = opaque;
	struct agent *a = p->a;
	Drover__Envelope env = DROVER__ENVELOPE__INIT;
	Drover__CommandResult res = DROVER__COMMAND_RESULT__INIT;
	Drover__VmStatus st;

	if (link_is_up(a->link) && link_generation(a->link) == p->generation) {
		res.ok = r->ok;
		res.error_code = (char *)(r->error_code ? r->error_code : "");
		res.message = (char *)r->message;
		if (r->has_status) {
			wire_status(&r->status, &st);
			res.status = &st;
		}
		env.reply_to = p->seq;
		env.body_case = DROVER__ENVELOPE__BODY_RESULT;
		env.result = &res;
		link_send(a->link, &env);
	} else {
		log_info("result of command %llu (%s%s%s) not sent: its connection is gone",
			 (unsigned long long)p->seq, r->ok ? "ok" : r->error_code,
			 r->message[0] ? ": " : "", r->message);
	}
	free(p);
}

static void command_refuse(struct agent *a, uint64_t seq, const char *code, const char *msg)
{
	struct pending_reply *p = calloc(1, sizeof(*p));
	struct sv_result r = { .ok = false, .error_code = code };

	if (!p)
		return;
	*p = (struct pending_reply){ .a = a, .seq = seq, .generation = link_generation(a->link) };
	snprintf(r.message, sizeof(r.message), "%s", msg);
	command_done(p, &r);
}

/* The request a Command asks for; false if it asks for nothing we know. */
static bool command_request(const Drover__Command *c, struct sv_request *req)
{
	const Drover__VmRef *ref = NULL;

	memset(req, 0, sizeof(*req));
	switch (c->kind_case) {
	case DROVER__COMMAND__KIND_DEFINE:
		if (!c->define)
			return false;
		req->verb = SV_DEFINE;
		req->vm_id = c->define->vm_id;
		req->definition = c->define->definition_json ? c->define->definition_json : "";
		req->definition_len = strlen(req->definition);
		return true;
	case DROVER__COMMAND__KIND_STOP:
		if (!c->stop)
			return false;
		req->verb = SV_STOP;
		req->vm_id = c->stop->vm_id;
		req->timeout_ms = c->stop->timeout_ms;
		req->force = c->stop->force;
		return true;
	case DROVER__COMMAND__KIND_START: req->verb = SV_START; ref = c->start; break;
	case DROVER__COMMAND__KIND_REBOOT: req->verb = SV_REBOOT; ref = c->reboot; break;
	case DROVER__COMMAND__KIND_PAUSE: req->verb = SV_PAUSE; ref = c->pause; break;
	case DROVER__COMMAND__KIND_RESUME: req->verb = SV_RESUME; ref = c->resume; break;
	case DROVER__COMMAND__KIND_DESTROY: req->verb = SV_DESTROY; ref = c->destroy; break;
	case DROVER__COMMAND__KIND_UNDEFINE: req->verb = SV_UNDEFINE; ref = c->undefine; break;
	default:
		return false;
	}
	if (!ref)
		return false;
	req->vm_id = ref->vm_id;
	return true;
}

static void on_command(struct agent *a, const Drover__Envelope *env)
{
	static const char *const verbs[] = { "define", "start", "stop", "reboot", "pause",
					     "resume", "destroy", "undefine" };
	struct pending_reply *p;
	struct sv_request req;

	if (!env->command || !command_request(env->command, &req)) {
		command_refuse(a, env->seq, "unknown-command", "the Command carries no kind this "
			       "agent knows (a newer controller?)");
		return;
	}
	if (!req.vm_id || !*req.vm_id) {
		command_refuse(a, env->seq, "bad-request", "the Command names no VM (vm_id is empty)");
		return;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		command_refuse(a, env->seq, "host-error", "out of memory");
		return;
	}
	*p = (struct pending_reply){ .a = a, .seq = env->seq,
				     .generation = link_generation(a->link) };
	log_debug("command %llu: %s %s", (unsigned long long)env->seq, verbs[req.verb], req.vm_id);
	sv_command(a->sv, &req, command_done, p);
}

static void on_message(void *opaque, struct link *l, const Drover__Envelope *env)
{
	struct agent *a = opaque;

	switch (env->body_case) {
	case DROVER__ENVELOPE__BODY_COMMAND:
		on_command(a, env);
		break;
	case DROVER__ENVELOPE__BODY_HELLO:
	case DROVER__ENVELOPE__BODY_HEARTBEAT:
	case DROVER__ENVELOPE__BODY_RESULT:
	case DROVER__ENVELOPE__BODY_VM_EVENT:
	default:
		link_send_error(l, env->seq, "unexpected-message",
				"an agent takes Welcome, Command and Error from its controller");
		break;
	}
}

static const struct link_hooks link_hooks = { send_hello, link_up, send_heartbeat, on_message };

/* ---- VM events ---- */

static bool vm_event(void *opaque, const struct sv_status *st, const char *event,
		     const char *detail)
{
	struct agent *a = opaque;
	Drover__Envelope env = DROVER__ENVELOPE__INIT;
	Drover__VmEvent ev = DROVER__VM_EVENT__INIT;
	Drover__VmStatus ws;

	if (!link_is_up(a->link))
		return false;
	wire_status(st, &ws);
	ev.status = &ws;
	ev.event = (char *)event;
	ev.detail = (char *)detail;
	env.body_case = DROVER__ENVELOPE__BODY_VM_EVENT;
	env.vm_event = &ev;
	return link_send(a->link, &env) > 0;
}

static const struct sv_hooks sv_hooks = { vm_event };

/* ---- signals ---- */

static void on_signal(void *opaque, int fd, uint32_t events)
{
	struct agent *a = opaque;
	struct signalfd_siginfo si;

	if (read(fd, &si, sizeof(si)) != sizeof(si))
		return;
	if (si.ssi_signo == SIGHUP) {
		log_info("SIGHUP: nothing to reload; restart the agent to read its configuration "
			 "again (VMs keep running)");
		return;
	}
	log_info("signal %u: exiting; the VMs keep running", si.ssi_signo);
	evloop_stop(a->loop);
}

static int setup_signals(struct agent *a)
{
	sigset_t set;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -errno;
	a->sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (a->sig_fd < 0)
		return -errno;
	return evloop_add(a->loop, a->sig_fd, EPOLLIN, on_signal, a);
}

int agent_run(const struct agent_config *cfg)
{
	struct agent a = { .cfg = cfg, .sig_fd = -1 };
	struct sv_options svo = {
		.run_dir = cfg->run_dir,
		.vmm_binary = cfg->vmm_path,
		.driver = &vmmdrv_drover,
		.start_timeout_ms = cfg->start_timeout_ms,
		.stop_timeout_ms = cfg->stop_timeout_ms,
	};
	struct link_options lo = {
		.controller = cfg->controller,
		.host_id = cfg->host_id,
		.heartbeat_ms = cfg->heartbeat_ms,
		.reconnect_min_ms = cfg->reconnect_min_ms,
		.reconnect_max_ms = cfg->reconnect_max_ms,
	};
	int ret, status = 1;

	ret = evloop_new(&a.loop);
	if (ret < 0) {
		log_error("creating the event loop: %s", strerror(-ret));
		return 1;
	}
	ret = setup_signals(&a);
	if (ret < 0) {
		log_error("setting up signals: %s", strerror(-ret));
		goto out;
	}
	ret = sv_new(a.loop, &svo, &sv_hooks, &a, &a.sv);
	if (ret == 0)
		ret = link_new(a.loop, &lo, &link_hooks, &a, &a.link);
	if (ret < 0) {
		log_error("setting up: %s", strerror(-ret));
		goto out;
	}
	ret = sv_load(a.sv);
	if (ret < 0) {
		log_error("reading %s/vms: %s", cfg->run_dir, strerror(-ret));
		goto out;
	}
	log_info("host %s (%s): %zu VMs known; controller %s", cfg->host_name, cfg->host_id,
		 sv_count(a.sv), cfg->controller);
	link_start(a.link);
	ret = evloop_run(a.loop);
	if (ret < 0) {
		log_error("event loop: %s", strerror(-ret));
		goto out;
	}
	status = 0;
out:
	sv_free(a.sv);
	link_free(a.link);
	if (a.sig_fd >= 0) {
		evloop_del(a.loop, a.sig_fd);
		close(a.sig_fd);
	}
	evloop_free(a.loop);
	return status;
}
