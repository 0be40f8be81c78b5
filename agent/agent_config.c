/* drover-agent's configuration file (agent_config.h).
 *
 * One table lists every key with its kind; one function per kind checks the
 * JSON value's type and range, so every key is refused with the same words:
 * "agent.json: 'reserved.cpus' must be an integer, not a string". */
#include "agent_config.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent_fs.h"
#include "jsonutil.h"
#include "log.h"
#include "util.h"

#define CONFIG_MAX_BYTES (1 << 20)
#define HOST_NAME_MAX_LEN 253
#define LABEL_KEY_MAX 63
#define LABEL_VALUE_MAX 255
#define LABELS_MAX 64

/* A VM's control socket is <run-dir>/vms/<vm id>/control.sock and a unix
 * socket path holds at most sizeof(sun_path) - 1 bytes: with a UUID for the
 * id, this is how long run-dir may be. */
#define RUN_DIR_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1 - \
		     FS_STRLEN("/" FS_VMS_DIR "/") - AGENT_UUID_LEN - FS_STRLEN("/" FS_CONTROL))

void agent_config_init(struct agent_config *c)
{
	memset(c, 0, sizeof(*c));
	c->reconnect_min_ms = 500;
	c->reconnect_max_ms = 30000;
	c->start_timeout_ms = 10000;
	c->stop_timeout_ms = 30000;
	c->log_level = -1;
}

void agent_config_free(struct agent_config *c)
{
	free(c->controller);
	free(c->host_name);
	free(c->run_dir);
	free(c->state_dir);
	free(c->migration_address);
	for (size_t i = 0; i < c->nlabels; i++) {
		free(c->labels[i].key);
		free(c->labels[i].value);
	}
	free(c->labels);
	free(c->vmm_path);
	agent_config_init(c);
}

/* ---- values ---- */

struct parse_ctx {
	struct agent_config *c;
	const char *what;
	char *err;
	size_t errlen;
};

static int wrong_type(struct parse_ctx *p, const char *key, const char *expected, const json_t *v)
{
	errf(p->err, p->errlen, "%s: '%s' must be %s, not %s", p->what, key, expected,
	     json_type_name(v));
	return -EINVAL;
}

static int bad_value(struct parse_ctx *p, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int bad_value(struct parse_ctx *p, const char *key, const char *fmt, ...)
{
	char why[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	errf(p->err, p->errlen, "%s: '%s': %s", p->what, key, why);
	return -EINVAL;
}

/* A string without NUL bytes or control characters (it ends up in logs,
 * paths and messages). */
static int get_text(struct parse_ctx *p, const char *key, const json_t *v, size_t max,
		    const char **out)
{
	const char *s;

	if (!json_is_string(v))
		return wrong_type(p, key, "a string", v);
	s = json_string_value(v);
	if (strlen(s) != json_string_length(v))
		return bad_value(p, key, "contains a NUL character");
	if (!*s)
		return bad_value(p, key, "is empty");
	if (strlen(s) > max)
		return bad_value(p, key, "%zu characters long, at most %zu allowed", strlen(s), max);
	for (const unsigned char *q = (const unsigned char *)s; *q; q++) {
		if (*q < 0x20 || *q == 0x7f)
			return bad_value(p, key, "contains a control character");
	}
	*out = s;
	return 0;
}

static int set_string(char **slot, const char *s)
{
	char *copy = strdup(s);

	if (!copy)
		return -ENOMEM;
	free(*slot);
	*slot = copy;
	return 0;
}

/* "HOST:PORT", "[V6]:PORT": checked for shape here, resolved when dialled. */
static int check_address(struct parse_ctx *p, const char *key, const char *s)
{
	const char *colon = strrchr(s, ':');
	uint64_t port;

	if (!colon || colon == s)
		return bad_value(p, key, "'%s' is not HOST:PORT", s);
	if (parse_uint(colon + 1, 1, 65535, &port) < 0)
		return bad_value(p, key, "'%s': port '%s' is not a number from 1 to 65535", s,
				 colon + 1);
	if (s[0] == '[' && colon[-1] != ']')
		return bad_value(p, key, "'%s': an IPv6 address goes in brackets, [::1]:7070", s);
	return 0;
}

static int key_address(struct parse_ctx *p, const char *key, const json_t *v, char **slot)
{
	const char *s;
	int ret = get_text(p, key, v, 300, &s);

	if (ret == 0)
		ret = check_address(p, key, s);
	return ret ? ret : set_string(slot, s);
}

static int key_dir(struct parse_ctx *p, const char *key, const json_t *v, char **slot)
{
	const char *s;
	int ret = get_text(p, key, v, PATH_MAX - 128, &s);

	if (ret)
		return ret;
	if (s[0] != '/')
		return bad_value(p, key, "'%s' is not an absolute path", s);
	return set_string(slot, s);
}

static int key_uint32(struct parse_ctx *p, const char *key, const json_t *v, uint32_t min,
		      uint32_t max, uint32_t *out)
{
	json_int_t n;

	if (!json_is_integer(v))
		return wrong_type(p, key, "an integer", v);
	n = json_integer_value(v);
	if (n < (json_int_t)min || n > (json_int_t)max)
		return bad_value(p, key, "%" JSON_INTEGER_FORMAT " is out of range (%u to %u)", n,
				 min, max);
	*out = (uint32_t)n;
	return 0;
}

/* "1G", "512M" (binary units, as drover-vmm's --memory), or an integer in MiB. */
static int key_size(struct parse_ctx *p, const char *key, const json_t *v, uint64_t *out)
{
	const char *s;
	int ret;

	if (json_is_integer(v)) {
		json_int_t mib = json_integer_value(v);

		if (mib < 0 || (uint64_t)mib > (UINT64_MAX >> 20))
			return bad_value(p, key, "%" JSON_INTEGER_FORMAT " MiB is out of range", mib);
		*out = (uint64_t)mib << 20;
		return 0;
	}
	if (!json_is_string(v))
		return wrong_type(p, key, "a size string (\"1G\") or an integer (MiB)", v);
	ret = get_text(p, key, v, 32, &s);
	if (ret)
		return ret;
	if (parse_size(s, MiB, out) < 0)
		return bad_value(p, key, "'%s' is not a size (use 512M, 2G...)", s);
	return 0;
}

static int key_reserved(struct parse_ctx *p, const char *key, const json_t *v)
{
	const char *k;
	json_t *val;

	if (!json_is_object(v))
		return wrong_type(p, key, "an object ({\"cpus\": 1, \"memory\": \"1G\"})", v);
	json_object_foreach((json_t *)v, k, val) {
		int ret;

		if (!strcmp(k, "cpus"))
			ret = key_uint32(p, "reserved.cpus", val, 0, 4096, &p->c->reserved_cpus);
		else if (!strcmp(k, "memory"))
			ret = key_size(p, "reserved.memory", val, &p->c->reserved_mem);
		else {
			errf(p->err, p->errlen, "%s: unknown key '%s' (in 'reserved'; known: cpus, "
			     "memory)", p->what, k);
			ret = -EINVAL;
		}
		if (ret)
			return ret;
	}
	return 0;
}

static bool label_key_ok(const char *k)
{
	size_t n = strlen(k);

	if (!n || n > LABEL_KEY_MAX)
		return false;
	for (; *k; k++) {
		if (!((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') ||
		      (*k >= '0' && *k <= '9') || strchr("._-/", *k)))
			return false;
	}
	return true;
}

static int key_labels(struct parse_ctx *p, const char *key, const json_t *v)
{
	struct agent_config *c = p->c;
	const char *k;
	json_t *val;

	if (!json_is_object(v))
		return wrong_type(p, key, "an object of strings", v);
	if (json_object_size(v) > LABELS_MAX)
		return bad_value(p, key, "%zu labels, at most %d allowed", json_object_size(v),
				 LABELS_MAX);
	json_object_foreach((json_t *)v, k, val) {
		char where[LABEL_KEY_MAX + 16];
		const char *s;
		struct agent_label *l;
		int ret;

		snprintf(where, sizeof(where), "labels.%.*s", LABEL_KEY_MAX, k);
		if (!label_key_ok(k))
			return bad_value(p, "labels", "label name '%s' must be 1 to %d characters "
					 "of A-Z a-z 0-9 . _ - /", k, LABEL_KEY_MAX);
		if (json_is_string(val) && json_string_length(val) == 0) {
			s = "";
		} else {
			ret = get_text(p, where, val, LABEL_VALUE_MAX, &s);
			if (ret)
				return ret;
		}
		l = realloc(c->labels, (c->nlabels + 1) * sizeof(*l));
		if (!l)
			return -ENOMEM;
		c->labels = l;
		l = &c->labels[c->nlabels];
		l->key = strdup(k);
		l->value = strdup(s);
		if (!l->key || !l->value) {
			free(l->key);
			free(l->value);
			return -ENOMEM;
		}
		c->nlabels++;
	}
	return 0;
}

static int key_log_level(struct parse_ctx *p, const char *key, const json_t *v)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };
	const char *s;
	int ret = get_text(p, key, v, 16, &s);

	if (ret)
		return ret;
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		if (!strcmp(s, names[i])) {
			p->c->log_level = (int)i;
			return 0;
		}
	}
	return bad_value(p, key, "'%s' is not one of error, warn, info, debug", s);
}

enum key_kind {
	K_ADDRESS, K_NAME, K_UUID, K_DIR, K_FILE, K_MS, K_RESERVED, K_LABELS, K_LOG_LEVEL,
};

struct key_def {
	const char *name;
	enum key_kind kind;
	size_t offset;          /* into struct agent_config */
	uint32_t min, max;      /* K_MS */
};

#define OFF(field) offsetof(struct agent_config, field)

static const struct key_def keys[] = {
	{ "controller",            K_ADDRESS,   OFF(controller), 0, 0 },
	{ "host-name",             K_NAME,      OFF(host_name), 0, 0 },
	{ "host-id",               K_UUID,      OFF(host_id), 0, 0 },
	{ "run-dir",               K_DIR,       OFF(run_dir), 0, 0 },
	{ "state-dir",             K_DIR,       OFF(state_dir), 0, 0 },
	{ "migration-address",     K_ADDRESS,   OFF(migration_address), 0, 0 },
	{ "reserved",              K_RESERVED,  0, 0, 0 },
	{ "labels",                K_LABELS,    0, 0, 0 },
	{ "vmm",                   K_FILE,      OFF(vmm_path), 0, 0 },
	{ "heartbeat-interval-ms", K_MS,        OFF(heartbeat_ms), 100, 600000 },
	{ "reconnect-min-ms",      K_MS,        OFF(reconnect_min_ms), 10, 600000 },
	{ "reconnect-max-ms",      K_MS,        OFF(reconnect_max_ms), 10, 3600000 },
	{ "start-timeout-ms",      K_MS,        OFF(start_timeout_ms), 100, 600000 },
	{ "stop-timeout-ms",       K_MS,        OFF(stop_timeout_ms), 0, 3600000 },
	{ "log-level",             K_LOG_LEVEL, 0, 0, 0 },
};

static void known_keys(char *out, size_t len)
{
	size_t o = 0;

	out[0] = 0;
	for (size_t i = 0; i < ARRAY_SIZE(keys) && o < len; i++)
		o += (size_t)snprintf(out + o, len - o, "%s%s", i ? ", " : "", keys[i].name);
}

static int apply_key(struct parse_ctx *p, const struct key_def *k, const json_t *v)
{
	char *base = (char *)p->c;
	const char *s;
	int ret;

	switch (k->kind) {
	case K_ADDRESS:
		return key_address(p, k->name, v, (char **)(base + k->offset));
	case K_NAME:
		ret = get_text(p, k->name, v, HOST_NAME_MAX_LEN, &s);
		return ret ? ret : set_string((char **)(base + k->offset), s);
	case K_UUID:
		ret = get_text(p, k->name, v, AGENT_UUID_LEN, &s);
		if (ret)
			return ret;
		if (!agent_uuid_valid(s))
			return bad_value(p, k->name, "'%s' is not a UUID "
					 "(xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", s);
		for (size_t i = 0; i <= AGENT_UUID_LEN; i++)
			p->c->host_id[i] = (char)((s[i] >= 'A' && s[i] <= 'F') ? s[i] + 32 : s[i]);
		return 0;
	case K_DIR:
		return key_dir(p, k->name, v, (char **)(base + k->offset));
	case K_FILE:
		ret = get_text(p, k->name, v, PATH_MAX - 1, &s);
		return ret ? ret : set_string((char **)(base + k->offset), s);
	case K_MS:
		return key_uint32(p, k->name, v, k->min, k->max, (uint32_t *)(base + k->offset));
	case K_RESERVED:
		return key_reserved(p, k->name, v);
	case K_LABELS:
		return key_labels(p, k->name, v);
	case K_LOG_LEVEL:
		return key_log_level(p, k->name, v);
	}
	return -EINVAL;
}

int agent_config_parse(struct agent_config *c, const char *text, size_t len, const char *what,
		       char *err, size_t errlen)
{
	struct parse_ctx p = { .c = c, .what = what, .err = err, .errlen = errlen };
	json_error_t jerr;
	const char *key;
	json_t *doc, *v;
	int ret = 0;

	doc = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!doc) {
		errf(err, errlen, "%s: line %d column %d: %s", what, jerr.line, jerr.column, jerr.text);
		return -EINVAL;
	}
	if (!json_is_object(doc)) {
		errf(err, errlen, "%s: the configuration must be a JSON object, not %s", what,
		     json_type_name(doc));
		json_decref(doc);
		return -EINVAL;
	}
	json_object_foreach(doc, key, v) {
		const struct key_def *k = NULL;

		for (size_t i = 0; i < ARRAY_SIZE(keys) && !k; i++) {
			if (!strcmp(keys[i].name, key))
				k = &keys[i];
		}
		if (!k) {
			char known[512];

			known_keys(known, sizeof(known));
			errf(err, errlen, "%s: unknown key '%s' (known: %s)", what, key, known);
			ret = -EINVAL;
			break;
		}
		ret = apply_key(&p, k, v);
		if (ret)
			break;
	}
	json_decref(doc);
	if (ret)
		return ret == -ENOMEM ? ret : -EINVAL;
	if (!c->controller) {
		errf(err, errlen, "%s: 'controller' is missing: where droverd listens, HOST:PORT",
		     what);
		return -EINVAL;
	}
	if (c->reconnect_min_ms > c->reconnect_max_ms) {
		errf(err, errlen, "%s: 'reconnect-min-ms' (%u) is above 'reconnect-max-ms' (%u)",
		     what, c->reconnect_min_ms, c->reconnect_max_ms);
		return -EINVAL;
	}
	if (c->run_dir && strlen(c->run_dir) > RUN_DIR_MAX) {
		errf(err, errlen, "%s: 'run-dir': '%s' is %zu characters long; VM control sockets "
		     "under it need it at most %zu (unix socket paths hold 107 bytes)", what,
		     c->run_dir, strlen(c->run_dir), (size_t)RUN_DIR_MAX);
		return -EINVAL;
	}
	return 0;
}

int agent_config_load(struct agent_config *c, const char *path, char *err, size_t errlen)
{
	void *text;
	size_t len;
	int ret = read_file(path, CONFIG_MAX_BYTES, &text, &len);

	if (ret < 0) {
		errf(err, errlen, "%s: %s", path, ret == -EFBIG ? "larger than the 1 MiB a "
		     "configuration may be" : strerror(-ret));
		return ret;
	}
	ret = agent_config_parse(c, text, len, path, err, errlen);
	free(text);
	return ret;
}

/* ---- host id ---- */

int agent_uuid_valid(const char *s)
{
	for (int i = 0; i < AGENT_UUID_LEN; i++) {
		char ch = s[i];
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;

		if (dash ? ch != '-' : !((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') ||
					 (ch >= 'A' && ch <= 'F')))
			return 0;
	}
	return s[AGENT_UUID_LEN] == 0;
}

int agent_uuid_generate(char out[AGENT_UUID_LEN + 1])
{
	uint8_t b[16];
	ssize_t n = getrandom(b, sizeof(b), 0);

	if (n != (ssize_t)sizeof(b))
		return n < 0 ? -errno : -EIO;
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);   /* version 4 */
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);   /* RFC 4122 variant */
	snprintf(out, AGENT_UUID_LEN + 1,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
		 b[13], b[14], b[15]);
	return 0;
}

int agent_host_id_load(const char *state_dir, char out[AGENT_UUID_LEN + 1], char *err,
		       size_t errlen)
{
	char path[PATH_MAX], line[AGENT_UUID_LEN + 2];
	void *text;
	size_t len;
	int ret;

	snprintf(path, sizeof(path), "%s/host-id", state_dir);
	ret = read_file(path, 4096, &text, &len);
	if (ret == 0) {
		size_t n = len;

		while (n && (((char *)text)[n - 1] == '\n' || ((char *)text)[n - 1] == ' '))
			n--;
		if (n == AGENT_UUID_LEN) {
			memcpy(out, text, n);
			out[n] = 0;
		}
		free(text);
		if (n != AGENT_UUID_LEN || !agent_uuid_valid(out)) {
			errf(err, errlen, "%s holds no host id (a UUID); fix or remove it, or set "
			     "'host-id' in the configuration", path);
			return -EINVAL;
		}
		for (char *q = out; *q; q++)
			*q = (char)((*q >= 'A' && *q <= 'F') ? *q + 32 : *q);
		return 0;
	}
	if (ret != -ENOENT) {
		errf(err, errlen, "%s: %s", path, strerror(-ret));
		return ret;
	}
	ret = agent_uuid_generate(out);
	if (ret < 0) {
		errf(err, errlen, "generating a host id: %s", strerror(-ret));
		return ret;
	}
	snprintf(line, sizeof(line), "%s\n", out);
	ret = fs_write_atomic(path, line, strlen(line), 0644);
	if (ret < 0) {
		errf(err, errlen, "writing the new host id to %s: %s", path, strerror(-ret));
		return ret;
	}
	log_info("generated host id %s (kept in %s)", out, path);
	return 0;
}

/* ---- resolve ---- */

static bool is_executable(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

static int find_vmm(struct agent_config *c, const char *self_exe, char *err, size_t errlen)
{
	char path[PATH_MAX];
	const char *env = getenv("PATH");

	if (c->vmm_path) {
		if (!is_executable(c->vmm_path)) {
			errf(err, errlen, "'vmm': '%s' is not an executable file", c->vmm_path);
			return -ENOENT;
		}
		return 0;
	}
	if (self_exe) {
		const char *slash = strrchr(self_exe, '/');

		if (slash) {
			snprintf(path, sizeof(path), "%.*s/drover-vmm", (int)(slash - self_exe),
				 self_exe);
			if (is_executable(path))
				return set_string(&c->vmm_path, path);
		}
	}
	for (const char *p = env ? env : "/usr/local/bin:/usr/bin:/bin"; p && *p;) {
		const char *end = strchr(p, ':');
		size_t n = end ? (size_t)(end - p) : strlen(p);

		if (n && n < sizeof(path) - 16) {
			snprintf(path, sizeof(path), "%.*s/drover-vmm", (int)n, p);
			if (path[0] == '/' && is_executable(path))
				return set_string(&c->vmm_path, path);
		}
		p = end ? end + 1 : NULL;
	}
	errf(err, errlen, "drover-vmm was found neither next to drover-agent nor in PATH; "
	     "set 'vmm' in the configuration");
	return -ENOENT;
}

int agent_config_resolve(struct agent_config *c, const char *self_exe, char *err, size_t errlen)
{
	char name[HOST_NAME_MAX_LEN + 2];
	int ret;

	if (!c->run_dir && (ret = set_string(&c->run_dir, AGENT_DEFAULT_RUN_DIR)) < 0)
		return ret;
	if (!c->state_dir && (ret = set_string(&c->state_dir, AGENT_DEFAULT_STATE_DIR)) < 0)
		return ret;
	if (!c->host_name) {
		if (gethostname(name, sizeof(name) - 1) < 0) {
			ret = -errno;
			errf(err, errlen, "gethostname: %s; set 'host-name'", strerror(-ret));
			return ret;
		}
		name[sizeof(name) - 1] = 0;
		if ((ret = set_string(&c->host_name, name)) < 0)
			return ret;
	}
	ret = fs_mkdir_p(c->state_dir, 0755);
	if (ret < 0) {
		errf(err, errlen, "'state-dir': creating %s: %s", c->state_dir, strerror(-ret));
		return ret;
	}
	ret = fs_mkdir_p(c->run_dir, 0755);
	if (ret < 0) {
		errf(err, errlen, "'run-dir': creating %s: %s", c->run_dir, strerror(-ret));
		return ret;
	}
	if (!c->host_id[0]) {
		ret = agent_host_id_load(c->state_dir, c->host_id, err, errlen);
		if (ret < 0)
			return ret;
	}
	return find_vmm(c, self_exe, err, errlen);
}
