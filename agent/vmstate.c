#include "vmstate.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent_fs.h"
#include "util.h"

static const char *const state_names[] = {
	[VMSTATE_DEFINED] = "defined",
	[VMSTATE_STARTING] = "starting",
	[VMSTATE_RUNNING] = "running",
	[VMSTATE_PAUSED] = "paused",
	[VMSTATE_STOPPING] = "stopping",
	[VMSTATE_STOPPED] = "stopped",
	[VMSTATE_CRASHED] = "crashed",
};

static const char *const stop_names[] = {
	[VMSTOP_NONE] = "",
	[VMSTOP_GRACEFUL] = "graceful",
	[VMSTOP_FORCE] = "force",
	[VMSTOP_DESTROY] = "destroy",
};

void vmstate_init(struct vmstate *st)
{
	memset(st, 0, sizeof(*st));
	st->state = VMSTATE_DEFINED;
	st->exit_status = -1;
	st->since_ms = vmstate_now_ms();
}

const char *vmstate_name(enum vmstate_kind k)
{
	return (size_t)k < ARRAY_SIZE(state_names) ? state_names[k] : "unknown";
}

int vmstate_from_name(const char *name, enum vmstate_kind *out)
{
	for (size_t i = 0; i < ARRAY_SIZE(state_names); i++) {
		if (!strcmp(name, state_names[i])) {
			*out = (enum vmstate_kind)i;
			return 0;
		}
	}
	return -EINVAL;
}

bool vmstate_has_vmm(enum vmstate_kind k)
{
	return k == VMSTATE_STARTING || k == VMSTATE_RUNNING || k == VMSTATE_PAUSED ||
	       k == VMSTATE_STOPPING;
}

uint64_t vmstate_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

char *vmstate_format(const struct vmstate *st)
{
	json_t *o = json_pack("{s:s, s:I, s:I, s:I, s:i, s:s, s:s, s:s}",
			      "state", vmstate_name(st->state),
			      "pid", (json_int_t)st->pid,
			      "pid-start", (json_int_t)st->pid_start,
			      "since-ms", (json_int_t)st->since_ms,
			      "exit-status", st->exit_status,
			      "exit-reason", st->exit_reason,
			      "detail", st->detail,
			      "stop", stop_names[st->stop]);
	char *text;

	if (!o)
		return NULL;
	text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return text;
}

static int get_int(json_t *doc, const char *key, json_int_t min, json_int_t max, json_int_t *out,
		   char *err, size_t errlen)
{
	json_t *v = json_object_get(doc, key);

	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
		snprintf(err, errlen, "'%s' is not an integer from %lld to %lld", key,
			 (long long)min, (long long)max);
		return -EINVAL;
	}
	*out = json_integer_value(v);
	return 0;
}

static int get_str(json_t *doc, const char *key, char *out, size_t outlen, char *err,
		   size_t errlen)
{
	json_t *v = json_object_get(doc, key);

	if (!v)
		return 0;
	if (!json_is_string(v)) {
		snprintf(err, errlen, "'%s' is not a string", key);
		return -EINVAL;
	}
	snprintf(out, outlen, "%s", json_string_value(v));
	return 0;
}

int vmstate_parse(struct vmstate *st, const char *text, size_t len, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *doc = json_loadb(text, len, 0, &jerr);
	char state[32] = "", stop[32] = "";
	json_int_t pid = 0, pid_start = 0, since = 0, status = -1;
	int ret = -EINVAL;

	vmstate_init(st);
	if (!doc) {
		snprintf(err, errlen, "line %d column %d: %s", jerr.line, jerr.column, jerr.text);
		return -EINVAL;
	}
	if (!json_is_object(doc)) {
		snprintf(err, errlen, "not a JSON object");
		goto out;
	}
	if (get_str(doc, "state", state, sizeof(state), err, errlen) ||
	    get_str(doc, "exit-reason", st->exit_reason, sizeof(st->exit_reason), err, errlen) ||
	    get_str(doc, "detail", st->detail, sizeof(st->detail), err, errlen) ||
	    get_str(doc, "stop", stop, sizeof(stop), err, errlen) ||
	    get_int(doc, "pid", 0, INT32_MAX, &pid, err, errlen) ||
	    get_int(doc, "pid-start", 0, INT64_MAX, &pid_start, err, errlen) ||
	    get_int(doc, "since-ms", 0, INT64_MAX, &since, err, errlen) ||
	    get_int(doc, "exit-status", -1, 255, &status, err, errlen))
		goto out;
	if (vmstate_from_name(state, &st->state) < 0) {
		snprintf(err, errlen, "'state': '%s' is not one of defined, starting, running, "
			 "paused, stopping, stopped, crashed", state);
		goto out;
	}
	st->stop = ARRAY_SIZE(stop_names);
	for (size_t i = 0; i < ARRAY_SIZE(stop_names); i++) {
		if (!strcmp(stop, stop_names[i]))
			st->stop = (enum vmstate_stop)i;
	}
	if ((size_t)st->stop >= ARRAY_SIZE(stop_names)) {
		snprintf(err, errlen, "'stop': '%s' is not one of \"\", graceful, force, destroy",
			 stop);
		st->stop = VMSTOP_NONE;
		goto out;
	}
	st->pid = (pid_t)pid;
	st->pid_start = (uint64_t)pid_start;
	st->since_ms = (uint64_t)since;
	st->exit_status = (int)status;
	ret = 0;
out:
	json_decref(doc);
	return ret;
}

int vmstate_write(const char *path, const struct vmstate *st)
{
	char *text = vmstate_format(st);
	int ret;

	if (!text)
		return -ENOMEM;
	ret = fs_write_atomic(path, text, strlen(text), 0644);
	free(text);
	return ret;
}

int vmstate_read(const char *path, struct vmstate *st, char *err, size_t errlen)
{
	void *text;
	size_t len;
	int ret = read_file(path, 65536, &text, &len);

	if (ret < 0) {
		snprintf(err, errlen, "%s", strerror(-ret));
		return ret;
	}
	ret = vmstate_parse(st, text, len, err, errlen);
	free(text);
	return ret;
}
