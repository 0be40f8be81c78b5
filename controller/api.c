/* The REST API (api.h gives the order of checks; openapi.yaml the shapes).
 * Handlers answer through reply() or fail(); every status and error code
 * used here is listed in openapi.yaml. */
#include "api.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "agents.h"
#include "auth.h"
#include "common.h"
#include "jsonutil.h"
#include "ctl.h"
#include "log.h"
#include "ops.h"
#include "place.h"
#include "store.h"
#include "util.h"
#include "vmdef.h"

#define PATH_PARAMS_MAX 2

struct ctx {
	struct ctl *ctl;
	const struct http_request *req;
	struct http_response *resp;
	enum auth_role role;
	char token_id[AUTH_PUBLIC_ID_LEN + 1];
	const char *param[PATH_PARAMS_MAX];   /* {id}, {action} */
	char param_buf[PATH_PARAMS_MAX][256];
	json_t *body;                  /* parsed, or NULL */
};

/* ---- answers ---- */

static int reply(struct ctx *x, int status, json_t *doc)
{
	x->resp->status = status;
	x->resp->body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	if (!x->resp->body) {
		x->resp->status = 500;
		x->resp->body = http_error_body("internal", "out of memory");
	}
	return 0;
}

static int fail_details(struct ctx *x, int status, const char *code, json_t *details,
			const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int fail_details(struct ctx *x, int status, const char *code, json_t *details,
			const char *fmt, ...)
{
	char msg[1024];
	json_t *err;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ctl_text_clean(msg);
	err = json_pack("{s:s,s:s}", "code", code, "message", msg);
	if (err && details)
		json_object_set_new(err, "details", details);
	else
		json_decref(details);
	if (status == 401)
		x->resp->www_authenticate = true;
	return reply(x, status, err ? json_pack("{s:o}", "error", err) : NULL);
}

#define fail(x, status, code, ...) fail_details(x, status, code, NULL, __VA_ARGS__)

static int fail_store(struct ctx *x, int err)
{
	return fail(x, 500, "internal", "the controller's database failed (%s); see droverd's log",
		    strerror(-err));
}

/* ---- rendering ---- */

static json_t *time_or_null(int64_t ms)
{
	char buf[40];

	if (!ms)
		return json_null();
	ctl_time_format(ms, buf, sizeof(buf));
	return json_string(buf);
}

static json_t *str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

static json_t *parsed_or_empty(const char *text)
{
	json_t *doc = text ? json_loads(text, 0, NULL) : NULL;

	return doc ? doc : json_object();
}

static json_t *host_json(struct ctl *ctl, const struct store_host *h)
{
	uint64_t vcpus, mem;

	place_host_capacity(ctl, h, &vcpus, &mem);
	return json_pack("{s:s,s:s,s:s,s:b,s:b,s:s,s:s,s:s,s:o,s:o,s:{s:I,s:I},s:{s:I,s:I,s:I},"
			 "s:o,s:o,s:o}",
			 "id", h->id, "name", h->name, "state", h->up ? "up" : "down",
			 "maintenance", h->maintenance,
			 "connected", agents_connected(ctl->agents, h->id),
			 "address", h->address ? h->address : "",
			 "migration_address", h->migration_address ? h->migration_address : "",
			 "agent_version", h->agent_version ? h->agent_version : "",
			 "labels", parsed_or_empty(h->labels),
			 "inventory", parsed_or_empty(h->inventory),
			 "capacity", "vcpus", (json_int_t)vcpus, "memory_mib", (json_int_t)(mem >> 20),
			 "allocated", "vcpus", (json_int_t)h->vcpus_allocated,
			 "memory_mib", (json_int_t)(h->mem_allocated >> 20), "vms", (json_int_t)h->vms,
			 "last_heartbeat", time_or_null(h->last_heartbeat),
			 "created_at", time_or_null(h->created_at),
			 "updated_at", time_or_null(h->updated_at));
}

static json_t *vm_json(const struct store_vm *v)
{
	return json_pack("{s:s,s:s,s:s,s:o,s:o,s:o,s:I,s:I,s:o,s:o,s:o,s:o,s:o}",
			 "id", v->id, "name", v->name, "state", v->state,
			 "host", str_or_null(v->host_id), "host_name", str_or_null(v->host_name),
			 "definition", parsed_or_empty(v->definition),
			 "vcpus", (json_int_t)v->vcpus, "memory_mib", (json_int_t)(v->mem >> 20),
			 "pid", v->has_pid ? json_integer(v->pid) : json_null(),
			 "exit_status", v->has_exit ? json_integer(v->exit_status) : json_null(),
			 "exit_reason", str_or_null(v->exit_reason),
			 "created_at", time_or_null(v->created_at),
			 "updated_at", time_or_null(v->updated_at));
}

static json_t *op_json(const struct store_op *o)
{
	json_t *err = o->error_code ? json_pack("{s:s,s:s}", "code", o->error_code, "message",
						o->error_message ? o->error_message : "")
				    : json_null();

	return json_pack("{s:s,s:s,s:o,s:o,s:o,s:s,s:i,s:o,s:o,s:o,s:o}",
			 "id", o->id, "kind", o->kind, "vm", str_or_null(o->vm_id),
			 "vm_name", str_or_null(o->vm_name), "host", str_or_null(o->host_id),
			 "state", o->state, "progress", o->progress,
			 "message", str_or_null(o->message), "error", err,
			 "created_at", time_or_null(o->created_at),
			 "updated_at", time_or_null(o->updated_at));
}

static json_t *event_json(const struct store_event *e)
{
	return json_pack("{s:I,s:o,s:s,s:o,s:o,s:s}", "id", (json_int_t)e->id,
			 "time", time_or_null(e->time), "kind", e->kind, "vm", str_or_null(e->vm_id),
			 "host", str_or_null(e->host_id), "message", e->message);
}

/* ---- query parameters ---- */

static const char *arg(const struct ctx *x, const char *key)
{
	for (size_t i = 0; i < x->req->nargs; i++) {
		if (!strcmp(x->req->args[i].key, key))
			return x->req->args[i].value ? x->req->args[i].value : "";
	}
	return NULL;
}

/* Every parameter is one this route knows, and only "label" repeats. */
static int check_args(struct ctx *x, const char *const *allowed)
{
	if (x->req->too_many_args)
		return fail(x, 400, "bad-request", "more than %d query parameters", HTTP_ARGS_MAX);
	for (size_t i = 0; i < x->req->nargs; i++) {
		const char *k = x->req->args[i].key;
		bool known = false;

		for (size_t j = 0; allowed && allowed[j] && !known; j++)
			known = !strcmp(allowed[j], k);
		if (!known)
			return fail(x, 400, "bad-request", "unknown query parameter '%s'", k);
		for (size_t j = 0; j < i; j++) {
			if (!strcmp(x->req->args[j].key, k) && strcmp(k, "label"))
				return fail(x, 400, "bad-request", "query parameter '%s' is given twice", k);
		}
	}
	return 1;
}

struct page {
	unsigned limit;
	int64_t after;
	char kind;
};

static int page_args(struct ctx *x, char kind, struct page *pg)
{
	const char *limit = arg(x, "limit"), *cursor = arg(x, "cursor");
	uint64_t n;

	pg->kind = kind;
	pg->limit = API_LIMIT_DEFAULT;
	pg->after = 0;
	if (limit) {
		if (parse_uint(limit, 1, API_LIMIT_MAX, &n))
			return fail(x, 400, "bad-request", "limit '%s' is not a whole number from 1 "
				    "to %d", limit, API_LIMIT_MAX);
		pg->limit = (unsigned)n;
	}
	if (cursor) {
		char text[40];
		int len = strlen(cursor) < 40 ? ctl_b64url_decode(cursor, text, sizeof(text) - 1) : -1;
		uint64_t seq;

		if (len < 3 || (text[len] = 0, text[0] != kind) || text[1] != ':' ||
		    parse_uint(text + 2, 0, INT64_MAX, &seq))
			return fail(x, 400, "bad-request", "cursor '%s' is not one this list gave "
				    "(pass next_cursor back as it came)", cursor);
		pg->after = (int64_t)seq;
	}
	return 1;
}

static json_t *cursor_json(const struct page *pg, bool more, int64_t last)
{
	char text[32], out[48];

	if (!more)
		return json_null();
	snprintf(text, sizeof(text), "%c:%" PRId64, pg->kind, last);
	ctl_b64url_encode(text, strlen(text), out);
	return json_string(out);
}

/* A list being built: items, and the seq of the last one. */
struct listing {
	struct ctx *x;
	json_t *items;
	int64_t last;
};

static int list_reply(struct ctx *x, struct listing *l, const struct page *pg, int ret,
		      bool more)
{
	if (ret) {
		json_decref(l->items);
		return fail_store(x, ret);
	}
	return reply(x, 200, json_pack("{s:o,s:o}", "items", l->items, "next_cursor",
				       cursor_json(pg, more, l->last)));
}

/* ---- bodies ---- */

/* Fields of a small body: each known, of its type. 1 when fine. */
struct body_field {
	const char *name;
	int type;                      /* JSON_TRUE for a boolean, JSON_INTEGER */
	bool required;
};

static int check_body(struct ctx *x, const json_t *body, const struct body_field *fields,
		      size_t n, const char *context)
{
	const char *key;
	json_t *v;

	json_object_foreach((json_t *)body, key, v) {
		const struct body_field *f = NULL;

		for (size_t i = 0; i < n && !f; i++) {
			if (!strcmp(fields[i].name, key))
				f = &fields[i];
		}
		if (!f)
			return fail(x, 400, "bad-request", "unknown field '%s'%s", key, context);
		if (f->type == JSON_TRUE && !json_is_boolean(v))
			return fail(x, 400, "bad-request", "field '%s' must be a boolean, not %s", key,
				    json_type_name(v));
		if (f->type == JSON_INTEGER && !json_is_integer(v))
			return fail(x, 400, "bad-request", "field '%s' must be an integer, not %s", key,
				    json_type_name(v));
	}
	for (size_t i = 0; i < n; i++) {
		if (fields[i].required && !json_object_get(body, fields[i].name))
			return fail(x, 400, "bad-request", "missing field '%s'", fields[i].name);
	}
	return 1;
}

/* ---- handlers ---- */

static int h_health(struct ctx *x)
{
	return reply(x, 200, json_pack("{s:s,s:s}", "status", "ok", "version", DROVER_VERSION));
}

static int host_item(const struct store_host *h, void *opaque)
{
	struct listing *l = opaque;

	l->last = h->seq;
	return json_array_append_new(l->items, host_json(l->x->ctl, h)) ? -ENOMEM : 0;
}

static int h_hosts_list(struct ctx *x)
{
	struct store_host_filter f = { .up = -1 };
	struct listing l = { .x = x, .items = json_array() };
	struct page pg;
	const char *state;
	bool more = false;
	int ret;

	if (page_args(x, 'h', &pg) != 1)
		goto out;
	state = arg(x, "state");
	if (state && strcmp(state, "up") && strcmp(state, "down")) {
		fail(x, 400, "bad-request", "state '%s' is not one of up, down", state);
		goto out;
	}
	if (state)
		f.up = !strcmp(state, "up");
	ret = store_host_list(x->ctl->store, &f, pg.after, pg.limit, host_item, &l, &more);
	return list_reply(x, &l, &pg, ret, more);
out:
	json_decref(l.items);
	return 0;
}

static int h_host_show(struct ctx *x)
{
	struct store_host h = { 0 };
	int ret = store_host_get(x->ctl->store, x->param[0], &h);

	if (ret == -ENOENT)
		return fail(x, 404, "not-found", "no host has the id or name '%s'", x->param[0]);
	if (ret)
		return fail_store(x, ret);
	reply(x, 200, host_json(x->ctl, &h));
	store_host_clear(&h);
	return 0;
}

static int h_host_maintenance(struct ctx *x)
{
	static const struct body_field fields[] = { { "enabled", JSON_TRUE, true } };
	struct store *s = x->ctl->store;
	struct store_host h = { 0 };
	bool on;
	int ret;

	if (check_body(x, x->body, fields, ARRAY_SIZE(fields), "") != 1)
		return 0;
	on = json_is_true(json_object_get(x->body, "enabled"));
	ret = store_host_get(s, x->param[0], &h);
	if (ret == -ENOENT)
		return fail(x, 404, "not-found", "no host has the id or name '%s'", x->param[0]);
	if (ret)
		return fail_store(x, ret);
	if (h.maintenance != on) {
		int64_t now = ctl_now_ms();

		ret = store_begin(s);
		if (!ret)
			ret = store_host_set_maintenance(s, h.id, on, now);
		if (!ret)
			ret = store_event_add(s, "host-maintenance", NULL, h.id, now,
					      "host %s %s maintenance", h.name,
					      on ? "enters" : "leaves");
		ret = store_end_with(s, ret);
		store_host_clear(&h);
		if (!ret)
			ret = store_host_get(s, x->param[0], &h);
		if (ret)
			return fail_store(x, ret);
		log_info("host %s %s maintenance", h.name, on ? "enters" : "leaves");
	}
	reply(x, 200, host_json(x->ctl, &h));
	store_host_clear(&h);
	return 0;
}

static int vm_item(const struct store_vm *v, void *opaque)
{
	struct listing *l = opaque;

	l->last = v->seq;
	return json_array_append_new(l->items, vm_json(v)) ? -ENOMEM : 0;
}

static int h_vms_list(struct ctx *x)
{
	struct store_label labels[16];
	struct store_vm_filter f = { .labels = labels };
	struct listing l = { .x = x, .items = json_array() };
	struct store_host h = { 0 };
	char label_buf[16][256];
	const char *host;
	struct page pg;
	bool more = false;
	int ret;

	if (page_args(x, 'v', &pg) != 1)
		goto out;
	f.state = arg(x, "state");
	if (f.state && !ops_vm_state_valid(f.state)) {
		fail(x, 400, "bad-request", "state '%s' is not a VM state (defined, scheduling, "
		     "starting, running, paused, stopping, stopped, crashed, deleting, error, "
		     "unknown)", f.state);
		goto out;
	}
	f.name = arg(x, "name");
	for (size_t i = 0; i < x->req->nargs; i++) {
		const char *v = x->req->args[i].value, *eq;

		if (strcmp(x->req->args[i].key, "label"))
			continue;
		eq = v ? strchr(v, '=') : NULL;
		if (!eq || eq == v || strlen(v) >= sizeof(label_buf[0])) {
			fail(x, 400, "bad-request", "label '%s' is not KEY=VALUE", v ? v : "");
			goto out;
		}
		if (f.nlabels == ARRAY_SIZE(labels)) {
			fail(x, 400, "bad-request", "at most %zu label filters", ARRAY_SIZE(labels));
			goto out;
		}
		snprintf(label_buf[f.nlabels], sizeof(label_buf[0]), "%s", v);
		label_buf[f.nlabels][eq - v] = '\0';
		labels[f.nlabels].key = label_buf[f.nlabels];
		labels[f.nlabels].value = label_buf[f.nlabels] + (eq - v) + 1;
		f.nlabels++;
	}
	host = arg(x, "host");
	if (host) {
		ret = store_host_get(x->ctl->store, host, &h);
		if (ret && ret != -ENOENT) {
			json_decref(l.items);
			return fail_store(x, ret);
		}
		/* An unknown host has no VMs: an empty list, not an error. */
		f.host_id = ret ? host : h.id;
	}
	ret = store_vm_list(x->ctl->store, &f, pg.after, pg.limit, vm_item, &l, &more);
	store_host_clear(&h);
	return list_reply(x, &l, &pg, ret, more);
out:
	json_decref(l.items);
	return 0;
}

static int h_vm_show(struct ctx *x)
{
	struct store_vm v = { 0 };
	int ret = store_vm_get(x->ctl->store, x->param[0], &v);

	if (ret == -ENOENT)
		return fail(x, 404, "not-found", "no VM has the id or name '%s'", x->param[0]);
	if (ret)
		return fail_store(x, ret);
	reply(x, 200, vm_json(&v));
	store_vm_clear(&v);
	return 0;
}

/* The VM definition in the body: 1 with def filled, else answered. */
static int definition(struct ctx *x, struct vmdef *def)
{
	char err[512];
	int ret = vmdef_parse(x->body, def, err, sizeof(err));

	if (ret == -EBADMSG)
		return fail(x, 400, "bad-request", "%s", err);
	if (ret == -EINVAL)
		return fail(x, 422, "invalid-definition", "%s", err);
	if (ret)
		return fail(x, 500, "internal", "reading the definition: %s", strerror(-ret));
	return 1;
}

/* Placement failed (or the scheduler refused): answered here. */
static int placement_failed(struct ctx *x, struct place_outcome *po, int ret)
{
	json_t *details;

	if (ret == -EINVAL)
		return fail(x, 422, "invalid-definition", "the scheduler refused the request: %s",
			    po->summary);
	if (ret)
		return fail_store(x, ret);
	details = json_pack("{s:O}", "hosts", po->reasons);
	if (po->impossible)
		return fail_details(x, 422, "placement-impossible", details,
				    "no host could ever take it: %s", po->summary);
	return fail_details(x, 409, "placement-not-now", details, "%s", po->summary);
}

/* 202 with the operation and the VM as they are now. */
static int accepted(struct ctx *x, const char *op_id, const char *vm_id)
{
	struct store_op o = { 0 };
	struct store_vm v = { 0 };
	json_t *doc;
	char *loc = NULL;
	int ret = store_op_get(x->ctl->store, op_id, &o);

	if (ret)
		return fail_store(x, ret);
	doc = json_pack("{s:o}", "operation", op_json(&o));
	if (store_vm_get(x->ctl->store, vm_id, &v) == 0)
		json_object_set_new(doc, "vm", vm_json(&v));
	if (asprintf(&loc, "/v1/operations/%s", op_id) > 0)
		x->resp->location = loc;
	store_op_clear(&o);
	store_vm_clear(&v);
	return reply(x, 202, doc);
}

static int h_vm_create(struct ctx *x)
{
	struct place_outcome po;
	struct vmdef def;
	char vm_id[37], op_id[37];
	int ret;

	if (definition(x, &def) != 1)
		return 0;
	ret = place_vm(x->ctl, &def, &po);
	if (ret || !po.chosen) {
		placement_failed(x, &po, ret);
		goto out;
	}
	ret = ops_create(x->ctl->ops, &def, po.host_id, vm_id, op_id);
	if (!ret)
		place_note_vm(x->ctl, po.host_id, def.vcpus, def.mem);
	if (ret == -EEXIST)
		fail(x, 409, "name-taken", "a VM named '%s' exists already", def.name);
	else if (ret)
		fail_store(x, ret);
	else
		accepted(x, op_id, vm_id);
out:
	place_outcome_free(&po);
	vmdef_free(&def);
	return 0;
}

static int act(struct ctx *x, const char *kind, const json_t *params)
{
	struct store_vm v = { 0 };
	char op_id[37], err[512];
	int ret = store_vm_get(x->ctl->store, x->param[0], &v);

	if (ret == -ENOENT)
		return fail(x, 404, "not-found", "no VM has the id or name '%s'", x->param[0]);
	if (ret)
		return fail_store(x, ret);
	ret = ops_action(x->ctl->ops, &v, kind, params, op_id, err, sizeof(err));
	if (ret == -EBUSY)
		fail(x, 409, "vm-busy", "%s", err);
	else if (ret == -EPERM)
		fail(x, 409, "wrong-state", "%s", err);
	else if (ret)
		fail_store(x, ret);
	else
		accepted(x, op_id, v.id);
	store_vm_clear(&v);
	return 0;
}

/* As `virsh destroy` then undefine, or Nova's delete: the VM is powered
 * off at once (a clean shutdown is a stop first). */
static int h_vm_delete(struct ctx *x)
{
	json_t *params = json_pack("{s:b}", "force", 1);
	int ret = params ? act(x, "delete", params) : fail_store(x, -ENOMEM);

	json_decref(params);
	return ret;
}

static int h_vm_action(struct ctx *x)
{
	static const char *const actions[] = { "start", "stop", "reboot", "pause", "resume" };
	static const struct body_field stop_fields[] = {
		{ "force", JSON_TRUE, false }, { "timeout_s", JSON_INTEGER, false },
	};
	const char *action = x->param[1];
	bool known = false;
	json_t *t;

	for (size_t i = 0; i < ARRAY_SIZE(actions); i++)
		known |= !strcmp(actions[i], action);
	if (!known)
		return fail(x, 404, "not-found", "no action '%s' (actions: start, stop, reboot, "
			    "pause, resume)", action);
	if (x->body && strcmp(action, "stop")) {
		if (check_body(x, x->body, NULL, 0, " (only stop takes options)") != 1)
			return 0;
	} else if (x->body) {
		if (check_body(x, x->body, stop_fields, ARRAY_SIZE(stop_fields), "") != 1)
			return 0;
		t = json_object_get(x->body, "timeout_s");
		if (t && (json_integer_value(t) < 0 || json_integer_value(t) > 3600))
			return fail(x, 422, "unprocessable", "timeout_s %" JSON_INTEGER_FORMAT " is not "
				    "from 0 to 3600 seconds", json_integer_value(t));
	}
	return act(x, action, x->body);
}

static int h_placements(struct ctx *x)
{
	struct place_outcome po;
	struct vmdef def;
	int ret;

	if (definition(x, &def) != 1)
		return 0;
	ret = place_vm(x->ctl, &def, &po);
	if (ret || !po.chosen)
		placement_failed(x, &po, ret);
	else
		reply(x, 200, json_pack("{s:s,s:s,s:f,s:O,s:O,s:s}", "host", po.host_id,
					"host_name", po.host_name, "score", po.score,
					"scores", po.scores, "reasons", po.reasons,
					"summary", po.summary));
	place_outcome_free(&po);
	vmdef_free(&def);
	return 0;
}

static int op_item(const struct store_op *o, void *opaque)
{
	struct listing *l = opaque;

	l->last = o->seq;
	return json_array_append_new(l->items, op_json(o)) ? -ENOMEM : 0;
}

/* A VM by id or name; a VM already deleted is known by its id only. */
static const char *vm_ref(struct ctx *x, const char *ref, struct store_vm *v)
{
	return store_vm_get(x->ctl->store, ref, v) == 0 ? v->id : ref;
}

static int h_ops_list(struct ctx *x)
{
	static const char *const states[] = { "pending", "running", "succeeded", "failed" };
	struct store_op_filter f = { 0 };
	struct listing l = { .x = x, .items = json_array() };
	struct store_vm v = { 0 };
	struct page pg;
	bool more = false, ok = false;
	int ret;

	if (page_args(x, 'o', &pg) != 1)
		goto out;
	f.state = arg(x, "state");
	for (size_t i = 0; f.state && i < ARRAY_SIZE(states); i++)
		ok |= !strcmp(states[i], f.state);
	if (f.state && !ok) {
		fail(x, 400, "bad-request", "state '%s' is not one of pending, running, succeeded, "
		     "failed", f.state);
		goto out;
	}
	if (arg(x, "vm"))
		f.vm_id = vm_ref(x, arg(x, "vm"), &v);
	ret = store_op_list(x->ctl->store, &f, pg.after, pg.limit, op_item, &l, &more);
	store_vm_clear(&v);
	return list_reply(x, &l, &pg, ret, more);
out:
	json_decref(l.items);
	return 0;
}

static int h_op_show(struct ctx *x)
{
	struct store_op o = { 0 };
	int ret = store_op_get(x->ctl->store, x->param[0], &o);

	if (ret == -ENOENT)
		return fail(x, 404, "not-found", "no operation has the id '%s'", x->param[0]);
	if (ret)
		return fail_store(x, ret);
	reply(x, 200, op_json(&o));
	store_op_clear(&o);
	return 0;
}

static int event_item(const struct store_event *e, void *opaque)
{
	struct listing *l = opaque;

	l->last = e->id;
	return json_array_append_new(l->items, event_json(e)) ? -ENOMEM : 0;
}

static int h_events(struct ctx *x)
{
	struct store_event_filter f = { 0 };
	struct listing l = { .x = x, .items = json_array() };
	struct store_vm v = { 0 };
	struct store_host h = { 0 };
	const char *since = arg(x, "since");
	struct page pg;
	uint64_t after;
	bool more = false;
	int ret;

	if (page_args(x, 'e', &pg) != 1)
		goto out;
	if (since) {
		if (parse_uint(since, 0, INT64_MAX, &after)) {
			fail(x, 400, "bad-request", "since '%s' is not an event id (a whole number)",
			     since);
			goto out;
		}
		if ((int64_t)after > pg.after)
			pg.after = (int64_t)after;
	}
	if (arg(x, "vm"))
		f.vm_id = vm_ref(x, arg(x, "vm"), &v);
	if (arg(x, "host"))
		f.host_id = store_host_get(x->ctl->store, arg(x, "host"), &h) == 0 ? h.id
										   : arg(x, "host");
	ret = store_event_list(x->ctl->store, &f, pg.after, pg.limit, event_item, &l, &more);
	store_vm_clear(&v);
	store_host_clear(&h);
	return list_reply(x, &l, &pg, ret, more);
out:
	json_decref(l.items);
	return 0;
}

/* ---- routing ---- */

enum {
	R_PUBLIC = 1,       /* no token needed */
	R_BODY = 2,         /* a JSON body is required */
	R_BODY_OPTIONAL = 4,
	R_IDEMPOTENT = 8,   /* honours Idempotency-Key */
};

struct route {
	const char *method, *pattern;  /* "{}" matches one path segment */
	int (*fn)(struct ctx *x);
	unsigned flags;
	const char *const *query;      /* the query parameters it takes (NULL: none) */
};

static const char *const q_hosts[] = { "limit", "cursor", "state", NULL };
static const char *const q_vms[] = { "limit", "cursor", "state", "host", "label", "name", NULL };
static const char *const q_ops[] = { "limit", "cursor", "vm", "state", NULL };
static const char *const q_events[] = { "limit", "cursor", "since", "vm", "host", NULL };

static const struct route routes[] = {
	{ "GET", "/v1/health", h_health, R_PUBLIC, NULL },
	{ "GET", "/v1/hosts", h_hosts_list, 0, q_hosts },
	{ "GET", "/v1/hosts/{}", h_host_show, 0, NULL },
	{ "POST", "/v1/hosts/{}/maintenance", h_host_maintenance, R_BODY | R_IDEMPOTENT, NULL },
	{ "GET", "/v1/vms", h_vms_list, 0, q_vms },
	{ "POST", "/v1/vms", h_vm_create, R_BODY | R_IDEMPOTENT, NULL },
	{ "GET", "/v1/vms/{}", h_vm_show, 0, NULL },
	{ "DELETE", "/v1/vms/{}", h_vm_delete, 0, NULL },
	{ "POST", "/v1/vms/{}/actions/{}", h_vm_action, R_BODY_OPTIONAL | R_IDEMPOTENT, NULL },
	{ "POST", "/v1/placements", h_placements, R_BODY, NULL },
	{ "GET", "/v1/operations", h_ops_list, 0, q_ops },
	{ "GET", "/v1/operations/{}", h_op_show, 0, NULL },
	{ "GET", "/v1/events", h_events, 0, q_events },
};

/* Does path match pattern? Fills x's path parameters when it does. */
static bool match(struct ctx *x, const char *pattern, const char *path)
{
	size_t np = 0;

	while (*pattern && *path) {
		if (!strncmp(pattern, "{}", 2)) {
			size_t len = strcspn(path, "/");

			if (!len || len >= sizeof(x->param_buf[0]) || np == PATH_PARAMS_MAX)
				return false;
			memcpy(x->param_buf[np], path, len);
			x->param_buf[np][len] = '\0';
			x->param[np] = x->param_buf[np];
			np++;
			path += len;
			pattern += 2;
		} else if (*pattern++ != *path++) {
			return false;
		}
	}
	return !*pattern && !*path;
}

/* 1 when the request may go on; else answered. */
static int authenticate(struct ctx *x, const struct route *r)
{
	char why[256];
	int ret;

	if (r->flags & R_PUBLIC)
		return 1;
	ret = auth_check(x->ctl->store, x->req->authorization, ctl_now_ms(), &x->role,
			 x->token_id, why, sizeof(why));
	if (ret == -EACCES)
		return fail(x, 401, "unauthorized", "%s", why);
	if (ret)
		return fail_store(x, ret);
	if (x->role != AUTH_ADMIN && strcmp(x->req->method, "GET"))
		return fail(x, 403, "forbidden", "token %s has the role %s, which may only read "
			    "(GET)", x->token_id, auth_role_name(x->role));
	return 1;
}

static bool media_type_json(const char *ct)
{
	size_t len;

	if (!ct)
		return false;
	while (*ct == ' ')
		ct++;
	len = strcspn(ct, "; ");
	return len == strlen("application/json") && !strncasecmp(ct, "application/json", len);
}

static int parse_body(struct ctx *x, const struct route *r)
{
	json_error_t jerr;

	if (!x->req->body_len) {
		if (r->flags & R_BODY)
			return fail(x, 400, "bad-request", "%s %s needs a JSON body", x->req->method,
				    x->req->path);
		return 1;
	}
	if (!(r->flags & (R_BODY | R_BODY_OPTIONAL)))
		return fail(x, 400, "bad-request", "%s %s takes no body", x->req->method,
			    x->req->path);
	if (!media_type_json(x->req->content_type))
		return fail(x, 415, "unsupported-media-type", "the body must be application/json, "
			    "not '%s'", x->req->content_type ? x->req->content_type : "(none given)");
	x->body = json_loadb(x->req->body, x->req->body_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!x->body)
		return fail(x, 400, "bad-request", "the body is not JSON: line %d column %d: %s",
			    jerr.line, jerr.column, jerr.text);
	if (!json_is_object(x->body))
		return fail(x, 400, "bad-request", "the body must be a JSON object, not %s",
			    json_type_name(x->body));
	return 1;
}

/* The body's fingerprint for idempotency: its canonical form, so that
 * whitespace and key order do not make two equal bodies differ. */
static void body_hash(const struct ctx *x, uint8_t out[STORE_HASH_LEN])
{
	char *canon = x->body ? json_dumps(x->body, JSON_COMPACT | JSON_SORT_KEYS) : NULL;

	if (canon)
		auth_sha256(canon, strlen(canon), out);
	else
		auth_sha256(x->req->body ? x->req->body : "", x->req->body_len, out);
	free(canon);
}

/* 1 when the handler should run; 0 when answered (replayed or refused). */
static int idempotency_before(struct ctx *x, uint8_t hash[STORE_HASH_LEN])
{
	const char *key = x->req->idempotency_key;
	struct store_idem kept = { 0 };
	size_t len;
	int ret;

	len = strlen(key);
	if (!len || len > 128 || strspn(key, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
				       "0123456789-_.:") != len)
		return fail(x, 400, "bad-request", "Idempotency-Key must be 1 to 128 letters, "
			    "digits, '-', '_', '.' or ':'");
	body_hash(x, hash);
	ret = store_idem_get(x->ctl->store, x->token_id, key, ctl_now_ms() - API_IDEMPOTENCY_MS,
			     &kept);
	if (ret == -ENOENT)
		return 1;
	if (ret)
		return fail_store(x, ret);
	if (strcmp(kept.method, x->req->method) || strcmp(kept.path, x->req->path) ||
	    memcmp(kept.body_hash, hash, STORE_HASH_LEN)) {
		fail(x, 422, "idempotency-mismatch", "Idempotency-Key '%s' was used within 24 h for "
		     "another request (%s %s with another body)", key, kept.method, kept.path);
	} else {
		json_t *doc = json_loads(kept.response, 0, NULL);
		const char *op = json_string_value(json_object_get(json_object_get(doc, "operation"),
								    "id"));

		/* The first answer again, Location included. */
		if (op && asprintf(&x->resp->location, "/v1/operations/%s", op) < 0)
			x->resp->location = NULL;
		json_decref(doc);
		x->resp->status = kept.status;
		x->resp->body = kept.response;
		x->resp->replayed = true;
		kept.response = NULL;
	}
	store_idem_clear(&kept);
	return 0;
}

static void idempotency_after(struct ctx *x, const uint8_t hash[STORE_HASH_LEN])
{
	struct store_idem i = {
		.method = (char *)x->req->method, .path = (char *)x->req->path,
		.status = x->resp->status, .response = x->resp->body,
		.created_at = ctl_now_ms(),
	};
	int ret;

	/* Only what changed something is kept: a refused request may be
	 * retried with the same key and succeed once the cause is gone. */
	if (x->resp->status < 200 || x->resp->status > 299 || !x->resp->body)
		return;
	memcpy(i.body_hash, hash, STORE_HASH_LEN);
	ret = store_idem_put(x->ctl->store, x->token_id, x->req->idempotency_key, &i);
	if (ret)
		log_error("cannot keep the answer for Idempotency-Key '%s': %s",
			  x->req->idempotency_key, strerror(-ret));
}

static void dispatch(struct ctx *x)
{
	const struct route *r = NULL;
	char allow[64] = "";
	uint8_t hash[STORE_HASH_LEN];
	bool idem;

	for (size_t i = 0; i < ARRAY_SIZE(routes); i++) {
		if (!match(x, routes[i].pattern, x->req->path))
			continue;
		if (!strcmp(routes[i].method, x->req->method)) {
			r = &routes[i];
			break;
		}
		snprintf(allow + strlen(allow), sizeof(allow) - strlen(allow), "%s%s",
			 *allow ? ", " : "", routes[i].method);
	}
	if (!r && *allow) {
		x->resp->allow = strdup(allow);
		fail(x, 405, "method-not-allowed", "%s is not allowed on %s (allowed: %s)",
		     x->req->method, x->req->path, allow);
		return;
	}
	if (!r) {
		fail(x, 404, "not-found", "no such path: %s", x->req->path);
		return;
	}
	if (authenticate(x, r) != 1 || check_args(x, r->query) != 1 || parse_body(x, r) != 1)
		return;
	idem = (r->flags & R_IDEMPOTENT) && x->req->idempotency_key;
	if (idem && idempotency_before(x, hash) != 1)
		return;
	r->fn(x);
	if (idem)
		idempotency_after(x, hash);
}

void api_handle(void *opaque, const struct http_request *req, struct http_response *resp)
{
	struct ctx x = { .ctl = opaque, .req = req, .resp = resp };

	dispatch(&x);
	json_decref(x.body);
	log_debug("%s %s -> %d", req->method, req->path, resp->status);
}
