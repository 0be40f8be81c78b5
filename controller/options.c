/* droverd serve's options. Each option has one setter that judges a text
 * value, shared by the command line and the JSON file, so both refuse the
 * same values with the same words. */
#include "options.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define CONFIG_MAX (1 << 20)

void ctl_options_init(struct ctl_options *o)
{
	memset(o, 0, sizeof(*o));
	o->heartbeat_timeout_s = CTL_DEFAULT_HEARTBEAT_S;
	o->op_timeout_s = CTL_DEFAULT_OP_TIMEOUT_S;
	o->policy.cpu_ratio = 4.0;
	o->policy.mem_ratio = 1.0;
	o->policy.weigher = SCHED_SPREAD;
	o->log_level = LOG_INFO;
}

void ctl_options_free(struct ctl_options *o)
{
	free(o->db);
	free(o->listen);
	free(o->agent_listen);
	ctl_options_init(o);
}

typedef int (*setter)(struct ctl_options *o, const char *val, char *msg, size_t msglen);

static int set_str(char **slot, const char *val, char *msg, size_t msglen)
{
	char *copy;

	if (!*val) {
		snprintf(msg, msglen, "empty value");
		return -EINVAL;
	}
	copy = strdup(val);
	if (!copy)
		return -ENOMEM;
	free(*slot);
	*slot = copy;
	return 0;
}

static int set_db(struct ctl_options *o, const char *v, char *m, size_t l)
{
	return set_str(&o->db, v, m, l);
}

/* HOST:PORT; the address itself is judged when droverd listens on it. */
static int set_addr(char **slot, const char *v, char *m, size_t l)
{
	const char *colon = strrchr(v, ':');
	uint64_t port;

	if (!colon || colon == v || parse_uint(colon + 1, 0, 65535, &port)) {
		snprintf(m, l, "'%s' is not HOST:PORT (port 0 to 65535)", v);
		return -EINVAL;
	}
	return set_str(slot, v, m, l);
}

static int set_listen(struct ctl_options *o, const char *v, char *m, size_t l)
{
	return set_addr(&o->listen, v, m, l);
}

static int set_agent_listen(struct ctl_options *o, const char *v, char *m, size_t l)
{
	return set_addr(&o->agent_listen, v, m, l);
}

static int set_seconds(unsigned *slot, const char *v, uint64_t min, uint64_t max, char *m,
		       size_t l)
{
	uint64_t n;

	if (parse_uint(v, min, max, &n)) {
		snprintf(m, l, "'%s' is not a whole number of seconds from %llu to %llu", v,
			 (unsigned long long)min, (unsigned long long)max);
		return -EINVAL;
	}
	*slot = (unsigned)n;
	return 0;
}

static int set_heartbeat(struct ctl_options *o, const char *v, char *m, size_t l)
{
	/* At least 1 s, so the interval (a third) is at least 333 ms. */
	return set_seconds(&o->heartbeat_timeout_s, v, 1, 3600, m, l);
}

static int set_op_timeout(struct ctl_options *o, const char *v, char *m, size_t l)
{
	return set_seconds(&o->op_timeout_s, v, 1, 86400, m, l);
}

static int set_ratio(double *slot, const char *v, char *m, size_t l)
{
	char *end;
	double r = strtod(v, &end);

	if (!*v || *end || !isfinite(r) || r < 0.1 || r > 100) {
		snprintf(m, l, "'%s' is not a ratio from 0.1 to 100", v);
		return -EINVAL;
	}
	*slot = r;
	return 0;
}

static int set_cpu_ratio(struct ctl_options *o, const char *v, char *m, size_t l)
{
	return set_ratio(&o->policy.cpu_ratio, v, m, l);
}

static int set_mem_ratio(struct ctl_options *o, const char *v, char *m, size_t l)
{
	return set_ratio(&o->policy.mem_ratio, v, m, l);
}

static int set_weigher(struct ctl_options *o, const char *v, char *m, size_t l)
{
	if (!strcmp(v, "spread"))
		o->policy.weigher = SCHED_SPREAD;
	else if (!strcmp(v, "pack"))
		o->policy.weigher = SCHED_PACK;
	else {
		snprintf(m, l, "'%s' is not one of spread, pack", v);
		return -EINVAL;
	}
	return 0;
}

static int set_log_level(struct ctl_options *o, const char *v, char *m, size_t l)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };

	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		if (!strcmp(v, names[i])) {
			o->log_level = (enum log_level)i;
			return 0;
		}
	}
	snprintf(m, l, "'%s' is not one of error, warn, info, debug", v);
	return -EINVAL;
}

enum kind { K_STRING, K_INTEGER, K_NUMBER };

static const struct option {
	const char *name;              /* without "--"; the config file's key */
	enum kind kind;                /* its JSON type in the config file */
	setter set;
} options[] = {
	{ "db", K_STRING, set_db },
	{ "listen", K_STRING, set_listen },
	{ "agent-listen", K_STRING, set_agent_listen },
	{ "heartbeat-timeout-s", K_INTEGER, set_heartbeat },
	{ "op-timeout-s", K_INTEGER, set_op_timeout },
	{ "cpu-ratio", K_NUMBER, set_cpu_ratio },
	{ "mem-ratio", K_NUMBER, set_mem_ratio },
	{ "weigher", K_STRING, set_weigher },
	{ "log-level", K_STRING, set_log_level },
};

static const struct option *find_option(const char *name, size_t len)
{
	for (size_t i = 0; i < ARRAY_SIZE(options); i++) {
		if (strlen(options[i].name) == len && !strncmp(options[i].name, name, len))
			return &options[i];
	}
	return NULL;
}

static int apply(struct ctl_options *o, const struct option *opt, const char *val,
		 const char *where, char *err, size_t errlen)
{
	char msg[300];
	int ret = opt->set(o, val, msg, sizeof(msg));

	if (ret == -EINVAL)
		snprintf(err, errlen, "%s%s: %s", where, opt->name, msg);
	return ret;
}

static int config_file(struct ctl_options *o, const char *path, char *err, size_t errlen)
{
	json_error_t jerr;
	const char *key;
	json_t *doc, *v;
	void *data;
	size_t len;
	char where[300];
	int ret = read_file(path, CONFIG_MAX, &data, &len);

	if (ret) {
		snprintf(err, errlen, "--config %s: %s", path,
			 ret == -EFBIG ? "larger than 1 MiB" : strerror(-ret));
		return -EINVAL;
	}
	doc = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
	free(data);
	if (!doc) {
		snprintf(err, errlen, "%s: line %d column %d: %s", path, jerr.line, jerr.column,
			 jerr.text);
		return -EINVAL;
	}
	if (!json_is_object(doc)) {
		snprintf(err, errlen, "%s: the file must hold one JSON object of options", path);
		json_decref(doc);
		return -EINVAL;
	}
	snprintf(where, sizeof(where), "%s: ", path);
	json_object_foreach(doc, key, v) {
		const struct option *opt = find_option(key, strlen(key));
		char num[64];
		const char *val = num;

		if (!opt) {
			snprintf(err, errlen, "%s: unknown key '%s'", path, key);
			ret = -EINVAL;
			break;
		}
		if (opt->kind == K_STRING && json_is_string(v))
			val = json_string_value(v);
		else if (opt->kind != K_STRING && json_is_integer(v))
			snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		else if (opt->kind == K_NUMBER && json_is_real(v))
			snprintf(num, sizeof(num), "%.17g", json_real_value(v));
		else {
			snprintf(err, errlen, "%s: '%s' must be %s", path, key,
				 opt->kind == K_STRING ? "a string" :
				 opt->kind == K_INTEGER ? "an integer" : "a number");
			ret = -EINVAL;
			break;
		}
		ret = apply(o, opt, val, where, err, errlen);
		if (ret)
			break;
	}
	json_decref(doc);
	return ret;
}

/* The option at argv[i] ("--name VALUE" or "--name=VALUE"): its table entry
 * and value; *i moves past what it used. */
static int next_option(int argc, char **argv, int *i, const struct option **opt,
		       const char **val, bool *is_config, char *err, size_t errlen)
{
	const char *arg = argv[*i], *eq;
	size_t len;

	if (strncmp(arg, "--", 2)) {
		snprintf(err, errlen, "unexpected argument '%s'", arg);
		return -EINVAL;
	}
	eq = strchr(arg, '=');
	len = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
	*is_config = len == 6 && !strncmp(arg + 2, "config", 6);
	*opt = *is_config ? NULL : find_option(arg + 2, len);
	if (!*is_config && !*opt) {
		snprintf(err, errlen, "unknown option '%.*s'", (int)len + 2, arg);
		return -EINVAL;
	}
	if (eq) {
		*val = eq + 1;
	} else if (*i + 1 < argc) {
		*val = argv[++*i];
	} else {
		snprintf(err, errlen, "%s needs a value", arg);
		return -EINVAL;
	}
	(*i)++;
	return 0;
}

int ctl_options_parse(struct ctl_options *o, int argc, char **argv, char *err, size_t errlen)
{
	const char *config = NULL;
	int ret;

	/* Pass 1: syntax, --help, and the config file's name. */
	for (int i = 0; i < argc;) {
		const struct option *opt;
		const char *val;
		bool is_config;

		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			return 1;
		ret = next_option(argc, argv, &i, &opt, &val, &is_config, err, errlen);
		if (ret)
			return ret;
		if (is_config)
			config = val;
	}
	if (config) {
		ret = config_file(o, config, err, errlen);
		if (ret)
			return ret;
	}
	/* Pass 2: the command line's values win. */
	for (int i = 0; i < argc;) {
		const struct option *opt;
		const char *val;
		bool is_config;

		next_option(argc, argv, &i, &opt, &val, &is_config, err, errlen);
		if (!is_config) {
			char where[4] = "--";

			ret = apply(o, opt, val, where, err, errlen);
			if (ret)
				return ret;
		}
	}
	if (!o->db) {
		snprintf(err, errlen, "--db FILE is required (the SQLite database droverd keeps its "
			 "state in)");
		return -EINVAL;
	}
	if ((!o->listen && (ret = set_str(&o->listen, CTL_DEFAULT_LISTEN, err, errlen))) ||
	    (!o->agent_listen &&
	     (ret = set_str(&o->agent_listen, CTL_DEFAULT_AGENT_LISTEN, err, errlen))))
		return ret;
	return 0;
}

const char *ctl_options_usage(void)
{
	return
"usage: droverd serve --db FILE [options]\n"
"       droverd token create --db FILE --role admin|reader [--name NAME] [--expires-days N]\n"
"       droverd token list --db FILE\n"
"       droverd token revoke --db FILE ID\n"
"\n"
"serve runs the controller: the REST API, the agents' listener, the scheduler\n"
"and the operation engine, with its state in the SQLite database FILE.\n"
"\n"
"  --db FILE                  the database (created and migrated as needed)\n"
"  --listen HOST:PORT         REST API (default " CTL_DEFAULT_LISTEN ")\n"
"  --agent-listen HOST:PORT   where agents connect (default " CTL_DEFAULT_AGENT_LISTEN ")\n"
"  --config FILE.json         options as a JSON object, keys without \"--\"\n"
"                             (the command line wins)\n"
"  --heartbeat-timeout-s N    a host without a heartbeat for N s is down; agents\n"
"                             beat every N/3 s (1..3600, default 15)\n"
"  --op-timeout-s N           an operation fails when its host's agent has not\n"
"                             answered within N s, plus the stop timeout for\n"
"                             stop and delete (1..86400, default 120)\n"
"  --cpu-ratio R              vCPU overcommit (0.1..100, default 4)\n"
"  --mem-ratio R              memory overcommit (0.1..100, default 1)\n"
"  --weigher spread|pack      prefer the emptiest or the fullest host (default spread)\n"
"  --log-level LEVEL          error, warn, info, debug (default info)\n"
"\n"
"token create prints the new token once; the database keeps only its hash.\n"
"SIGTERM or SIGINT stops droverd cleanly.\n";
}
