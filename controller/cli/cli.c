#include "cli_int.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

static const struct cli_object *const objects[] = {
	&cli_object_vm, &cli_object_host, &cli_object_placement, &cli_object_operation,
	&cli_object_event,
};

/* ---- shared helpers ---- */

int cli_usage(struct cli *cli, const struct cli_verb *v, const char *fmt, ...)
{
	va_list ap;

	fprintf(cli->err, "drover: ");
	va_start(ap, fmt);
	vfprintf(cli->err, fmt, ap);
	va_end(ap);
	fprintf(cli->err, "\n");
	if (v)
		fprintf(cli->err, "usage: drover %s\n", v->usage);
	return CLI_USAGE;
}

int cli_call(struct cli *cli, const char *method, const char *path, const json_t *body,
	     struct cli_response *r)
{
	char err[2048];
	int ret = client_request(&cli->client, method, path, body, r, err, sizeof(err));

	if (ret < 0) {
		fprintf(cli->err, "drover: %s\n", err);
		return CLI_UNREACHABLE;
	}
	if (r->status >= 200 && r->status < 300)
		return CLI_OK;
	client_format_error(r, err, sizeof(err));
	fprintf(cli->err, "drover: %s\n", err);
	if (r->status == 401)
		fprintf(cli->err, "drover: give a token with --token or DROVER_TOKEN "
			"(droverd token create makes one)\n");
	client_response_free(r);
	return CLI_FAILED;
}

int cli_query_add(char **path, const char *key, const char *value)
{
	char *v = client_escape(value), *p;
	int n;

	if (!v)
		return -ENOMEM;
	n = asprintf(&p, "%s%c%s=%s", *path, strchr(*path, '?') ? '&' : '?', key, v);
	free(v);
	if (n < 0)
		return -ENOMEM;
	free(*path);
	*path = p;
	return 0;
}

char *cli_path(const char *prefix, const char *id, const char *suffix)
{
	char *e = client_escape(id), *p = NULL;

	if (e && asprintf(&p, "%s%s%s", prefix, e, suffix ? suffix : "") < 0)
		p = NULL;
	free(e);
	return p;
}

int cli_list_all(struct cli *cli, const char *path, json_t **items)
{
	json_t *all = json_array();
	char *cursor = NULL;
	int ret = CLI_OK;

	for (int pages = 0; pages < 100000; pages++) {
		struct cli_response r;
		char *p = strdup(path);

		if (!p || cli_query_add(&p, "limit", "500") < 0 ||
		    (cursor && cli_query_add(&p, "cursor", cursor) < 0)) {
			free(p);
			ret = CLI_FAILED;
			break;
		}
		ret = cli_call(cli, "GET", p, NULL, &r);
		free(p);
		if (ret != CLI_OK)
			break;
		json_t *page = json_object_get(r.body, "items");
		if (!json_is_array(page)) {
			fprintf(cli->err, "drover: droverd's answer to GET %s has no \"items\"\n", path);
			client_response_free(&r);
			ret = CLI_FAILED;
			break;
		}
		json_array_extend(all, page);
		free(cursor);
		cursor = NULL;
		const char *next = json_string_value(json_object_get(r.body, "next_cursor"));
		if (next && *next)
			cursor = strdup(next);
		client_response_free(&r);
		if (!cursor)
			break;
	}
	free(cursor);
	if (ret != CLI_OK) {
		json_decref(all);
		return ret;
	}
	*items = all;
	return CLI_OK;
}

int cli_list_print(struct cli *cli, char *path, const struct cli_column *cols, size_t ncols)
{
	json_t *items;
	int ret = cli_list_all(cli, path, &items);

	free(path);
	if (ret != CLI_OK)
		return ret;
	if (cli->format == CLI_JSON)
		output_json(cli->out, items);
	else
		output_table(cli->out, items, cols, ncols);
	json_decref(items);
	return CLI_OK;
}

int cli_show_print(struct cli *cli, const char *prefix, const char *id,
		   const struct cli_column *fields, size_t nfields)
{
	struct cli_response r;
	char *path = cli_path(prefix, id, NULL);
	int ret = path ? cli_call(cli, "GET", path, NULL, &r) : CLI_FAILED;

	free(path);
	if (ret != CLI_OK)
		return ret;
	if (cli->format == CLI_JSON)
		output_json(cli->out, r.body);
	else
		output_fields(cli->out, r.body, fields, nfields);
	client_response_free(&r);
	return CLI_OK;
}

static void show_progress(struct cli *cli, const json_t *op, char *last, size_t lastlen)
{
	char line[512];
	const char *msg = json_string_value(json_object_get(op, "message"));
	const char *state = json_string_value(json_object_get(op, "state"));

	snprintf(line, sizeof(line), "[%3d%%] %s%s%s",
		 (int)json_integer_value(json_object_get(op, "progress")), state ? state : "?",
		 msg && *msg ? ": " : "", msg && *msg ? msg : "");
	if (!strcmp(line, last))
		return;
	snprintf(last, lastlen, "%s", line);
	if (cli->tty)
		fprintf(cli->err, "\r\033[K%s", line);
	else
		fprintf(cli->err, "%s\n", line);
	fflush(cli->err);
}

int cli_wait(struct cli *cli, const char *op_id, unsigned timeout_s, json_t **final)
{
	char *path = cli_path("/v1/operations/", op_id, NULL), last[512] = "";
	uint64_t deadline = monotonic_ns() + (uint64_t)timeout_s * 1000000000ull;
	int ret = CLI_FAILED;

	if (!path)
		return CLI_FAILED;
	for (;;) {
		struct cli_response r;

		ret = cli_call(cli, "GET", path, NULL, &r);
		if (ret != CLI_OK)
			break;
		const char *state = json_string_value(json_object_get(r.body, "state"));
		if (cli->format == CLI_TABLE)
			show_progress(cli, r.body, last, sizeof(last));
		if (state && (!strcmp(state, "succeeded") || !strcmp(state, "failed"))) {
			if (cli->tty && cli->format == CLI_TABLE)
				fprintf(cli->err, "\n");
			ret = CLI_OK;
			if (!strcmp(state, "failed")) {
				json_t *e = json_object_get(r.body, "error");
				fprintf(cli->err, "drover: operation %s failed: %s: %s\n", op_id,
					json_string_value(json_object_get(e, "code")) ?: "?",
					json_string_value(json_object_get(e, "message")) ?: "?");
				ret = CLI_FAILED;
			}
			if (final)
				*final = json_incref(r.body);
			client_response_free(&r);
			break;
		}
		client_response_free(&r);
		if (timeout_s && monotonic_ns() > deadline) {
			if (cli->tty && cli->format == CLI_TABLE)
				fprintf(cli->err, "\n");
			fprintf(cli->err, "drover: operation %s did not end within %u s (it goes on: "
				"drover operation wait %s)\n", op_id, timeout_s, op_id);
			ret = CLI_FAILED;
			break;
		}
		usleep(cli->poll_ms * 1000);
	}
	free(path);
	return ret;
}

/* ---- settings ---- */

struct settings {
	char *url, *token, *output, *config;
	bool verbose, help, version;
	unsigned long timeout_s;
};

static void settings_free(struct settings *s)
{
	free(s->url);
	free(s->token);
	free(s->output);
	free(s->config);
}

static void set_str(char **dst, const char *v)
{
	if (!*dst && v && *v)
		*dst = strdup(v);
}

/* The config file fills what flags and the environment left unset. A file
 * that was named must exist; the default one may not. */
static int settings_from_file(struct settings *s, const char *path, bool named, FILE *err)
{
	json_error_t je;
	json_t *j, *v;
	const char *key;

	if (access(path, F_OK) && !named)
		return 0;
	j = json_load_file(path, 0, &je);
	if (!j) {
		fprintf(err, "drover: config %s: line %d: %s\n", path, je.line, je.text);
		return CLI_USAGE;
	}
	if (!json_is_object(j)) {
		fprintf(err, "drover: config %s: not a JSON object\n", path);
		json_decref(j);
		return CLI_USAGE;
	}
	json_object_foreach(j, key, v) {
		char **dst = !strcmp(key, "url") ? &s->url : !strcmp(key, "token") ? &s->token :
			     !strcmp(key, "output") ? &s->output : NULL;

		if (!dst) {
			fprintf(err, "drover: config %s: unknown key '%s' (known: url, token, "
				"output)\n", path, key);
			json_decref(j);
			return CLI_USAGE;
		}
		if (!json_is_string(v)) {
			fprintf(err, "drover: config %s: '%s' must be a string\n", path, key);
			json_decref(j);
			return CLI_USAGE;
		}
		set_str(dst, json_string_value(v));
	}
	json_decref(j);
	return 0;
}

static void print_help(FILE *f)
{
	fprintf(f, "usage: drover [OPTIONS] OBJECT VERB [ARGS]\n\n"
		"options:\n"
		"  --url URL          droverd's REST address (DROVER_URL; default "
		"http://127.0.0.1:8080)\n"
		"  --token TOKEN      bearer token (DROVER_TOKEN)\n"
		"  -o, --output F     table or json (DROVER_OUTPUT)\n"
		"  --config FILE      settings file (DROVER_CONFIG; default "
		"~/.config/drover/config.json)\n"
		"  --timeout S        per-request timeout in seconds (default 30)\n"
		"  -v, --verbose      show each request and answer\n"
		"  -h, --help         this text; `drover OBJECT help` lists its verbs\n"
		"  --version\n\nobjects:\n");
	for (size_t i = 0; i < sizeof(objects) / sizeof(objects[0]); i++)
		fprintf(f, "  %-10s %s\n", objects[i]->name, objects[i]->summary);
}

static void print_object_help(FILE *f, const struct cli_object *o)
{
	fprintf(f, "drover %s: %s\n\n", o->name, o->summary);
	for (size_t i = 0; i < o->nverbs; i++)
		fprintf(f, "  drover %s\n      %s\n", o->verbs[i].usage, o->verbs[i].summary);
}

static int parse_global(int argc, char **argv, struct settings *s, FILE *err)
{
	static const struct option opts[] = {
		{ "url", required_argument, NULL, 'U' },
		{ "token", required_argument, NULL, 'T' },
		{ "output", required_argument, NULL, 'o' },
		{ "config", required_argument, NULL, 'C' },
		{ "timeout", required_argument, NULL, 't' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	int c;

	optind = 0;
	opterr = 0;
	/* "+": options stop at the object's name. */
	while ((c = getopt_long(argc, argv, "+o:vh", opts, NULL)) != -1) {
		uint64_t n;

		switch (c) {
		case 'U': free(s->url); s->url = strdup(optarg); break;
		case 'T': free(s->token); s->token = strdup(optarg); break;
		case 'o': free(s->output); s->output = strdup(optarg); break;
		case 'C': free(s->config); s->config = strdup(optarg); break;
		case 't':
			if (parse_uint(optarg, 1, 3600, &n)) {
				fprintf(err, "drover: --timeout '%s': a number of seconds from 1 to "
					"3600\n", optarg);
				return CLI_USAGE;
			}
			s->timeout_s = n;
			break;
		case 'v': s->verbose = true; break;
		case 'h': s->help = true; break;
		case 'V': s->version = true; break;
		default:
			if (optopt)
				fprintf(err, "drover: option -%c needs a value or is unknown\n", optopt);
			else
				fprintf(err, "drover: unknown option '%s'\n", argv[optind - 1]);
			fprintf(err, "usage: drover [OPTIONS] OBJECT VERB [ARGS] (drover --help)\n");
			return CLI_USAGE;
		}
	}
	return 0;
}

static const struct cli_object *find_object(const char *name)
{
	for (size_t i = 0; i < sizeof(objects) / sizeof(objects[0]); i++)
		if (!strcmp(objects[i]->name, name))
			return objects[i];
	/* the plural a person types naturally */
	if (!strcmp(name, "vms"))
		return &cli_object_vm;
	if (!strcmp(name, "hosts"))
		return &cli_object_host;
	if (!strcmp(name, "events"))
		return &cli_object_event;
	if (!strcmp(name, "operations") || !strcmp(name, "op"))
		return &cli_object_operation;
	return NULL;
}

static int dispatch(struct cli *cli, const struct cli_object *o, int argc, char **argv)
{
	if (argc < 1 || !strcmp(argv[0], "help") || !strcmp(argv[0], "--help") ||
	    !strcmp(argv[0], "-h")) {
		print_object_help(argc < 1 ? cli->err : cli->out, o);
		return argc < 1 ? CLI_USAGE : CLI_OK;
	}
	for (size_t i = 0; i < o->nverbs; i++)
		if (!strcmp(o->verbs[i].name, argv[0]))
			return o->verbs[i].run(cli, argc, argv);
	/* An object with one verb takes its options directly
	 * (`drover placement -f vm.json`). */
	if (o->nverbs == 1 && argv[0][0] == '-') {
		char **args = calloc((size_t)argc + 2, sizeof(*args));
		int ret;

		if (!args)
			return CLI_FAILED;
		args[0] = (char *)o->verbs[0].name;
		memcpy(args + 1, argv, sizeof(*args) * (size_t)argc);
		ret = o->verbs[0].run(cli, argc + 1, args);
		free(args);
		return ret;
	}
	fprintf(cli->err, "drover: '%s' is not a verb of %s (verbs:", argv[0], o->name);
	for (size_t i = 0; i < o->nverbs; i++)
		fprintf(cli->err, " %s", o->verbs[i].name);
	fprintf(cli->err, ")\n");
	return CLI_USAGE;
}

int cli_main(int argc, char **argv, FILE *out, FILE *err,
	     const char *(*getenv_fn)(const char *name))
{
	struct settings s = { 0 };
	struct cli cli = { .out = out, .err = err, .poll_ms = 200 };
	char msg[512], defconf[4096];
	const struct cli_object *o;
	int ret = parse_global(argc, argv, &s, err);

	if (ret)
		goto out;
	if (s.version) {
		fprintf(out, "drover %s\n", DROVER_VERSION);
		goto out;
	}
	if (s.help || optind >= argc) {
		print_help(s.help ? out : err);
		ret = s.help ? CLI_OK : CLI_USAGE;
		goto out;
	}
	o = find_object(argv[optind]);
	if (!o) {
		fprintf(err, "drover: '%s' is not an object (drover --help lists them)\n",
			argv[optind]);
		ret = CLI_USAGE;
		goto out;
	}
	set_str(&s.url, getenv_fn("DROVER_URL"));
	set_str(&s.token, getenv_fn("DROVER_TOKEN"));
	set_str(&s.output, getenv_fn("DROVER_OUTPUT"));
	set_str(&s.config, getenv_fn("DROVER_CONFIG"));
	if (s.config) {
		ret = settings_from_file(&s, s.config, true, err);
	} else {
		const char *xdg = getenv_fn("XDG_CONFIG_HOME"), *home = getenv_fn("HOME");

		defconf[0] = 0;
		if (xdg && *xdg)
			snprintf(defconf, sizeof(defconf), "%s/drover/config.json", xdg);
		else if (home && *home)
			snprintf(defconf, sizeof(defconf), "%s/.config/drover/config.json", home);
		if (defconf[0])
			ret = settings_from_file(&s, defconf, false, err);
	}
	if (ret)
		goto out;
	if (!s.output || !strcmp(s.output, "table")) {
		cli.format = CLI_TABLE;
	} else if (!strcmp(s.output, "json")) {
		cli.format = CLI_JSON;
	} else {
		fprintf(err, "drover: output '%s': table or json\n", s.output);
		ret = CLI_USAGE;
		goto out;
	}
	if (client_init(&cli.client, s.url ? s.url : "http://127.0.0.1:8080", s.token, msg,
			sizeof(msg)) < 0) {
		fprintf(err, "drover: %s\n", msg);
		ret = CLI_USAGE;
		goto out;
	}
	cli.client.verbose = s.verbose;
	if (s.timeout_s)
		cli.client.timeout_ms = (long)s.timeout_s * 1000;
	cli.tty = isatty(fileno(err));
	ret = dispatch(&cli, o, argc - optind - 1, argv + optind + 1);
	client_free(&cli.client);
out:
	settings_free(&s);
	fflush(out);
	fflush(err);
	return ret;
}
