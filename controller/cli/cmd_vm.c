/* drover vm ... */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli_int.h"
#include "util.h"

static const struct cli_column vm_columns[] = {
	{ "NAME", "name", NULL },
	{ "STATE", "state", NULL },
	{ "HOST", "host_name", NULL },
	{ "VCPUS", "vcpus", NULL },
	{ "MEMORY", "memory_mib", output_mib },
	{ "ID", "id", NULL },
};

static void disk_paths(const json_t *obj, const json_t *v, char *buf, size_t len)
{
	size_t i, n = 0;
	json_t *d;

	buf[0] = 0;
	json_array_foreach(v, i, d) {
		const char *p = json_string_value(json_object_get(d, "path"));
		n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "%s%s", n ? ", " : "",
				      p ? p : "?");
	}
	if (!n)
		snprintf(buf, len, "-");
}

static const struct cli_column vm_fields[] = {
	{ "ID", "id", NULL },
	{ "Name", "name", NULL },
	{ "State", "state", NULL },
	{ "Host", "host_name", NULL },
	{ "vCPUs", "vcpus", NULL },
	{ "Memory", "memory_mib", output_mib },
	{ "Kernel", "definition.boot.kernel", NULL },
	{ "Command line", "definition.boot.cmdline", NULL },
	{ "Disks", "definition.disks", disk_paths },
	{ "Labels", "definition.labels", NULL },
	{ "Placement", "definition.placement", NULL },
	{ "PID", "pid", NULL },
	{ "Exit status", "exit_status", NULL },
	{ "Exit reason", "exit_reason", NULL },
	{ "Created", "created_at", NULL },
	{ "Updated", "updated_at", NULL },
};

static int vm_list(struct cli *cli, int argc, char **argv);
static int vm_show(struct cli *cli, int argc, char **argv);
static int vm_create(struct cli *cli, int argc, char **argv);
static int vm_action(struct cli *cli, int argc, char **argv);
static int vm_delete(struct cli *cli, int argc, char **argv);

static const struct cli_verb vm_verbs[] = {
	{ "list", vm_list, "vm list [--state STATE] [--host HOST] [--name NAME] [--label K=V]...",
	  "the VMs, with filters (every --label must match)" },
	{ "show", vm_show, "vm show NAME|ID", "one VM and its definition" },
	{ "create", vm_create,
	  "vm create (-f FILE.json | --name NAME --kernel PATH [--initrd PATH] [--cmdline STR]\n"
	  "             [--vcpus N] [--memory SIZE] [--disk KEY=VALUE,...]... [--label K=V]...\n"
	  "             [--host HOST] [--cpu-flag FLAG]... [--host-label K=V]...\n"
	  "             [--affinity GROUP] [--anti-affinity GROUP]) [--no-start] [--wait]\n"
	  "             [--wait-timeout S]",
	  "define a VM from its definition document (or from flags), place it, start it" },
	{ "start", vm_action, "vm start NAME|ID [--wait] [--wait-timeout S]", "start a stopped VM" },
	{ "stop", vm_action, "vm stop NAME|ID [--force] [--stop-timeout S] [--wait] [--wait-timeout S]",
	  "press the ACPI power button; after --stop-timeout (default 60 s) the VMM quits; "
	  "--force: at once" },
	{ "reboot", vm_action, "vm reboot NAME|ID [--wait]", "reset the guest" },
	{ "pause", vm_action, "vm pause NAME|ID [--wait]", "stop its vCPUs" },
	{ "resume", vm_action, "vm resume NAME|ID [--wait]", "run its vCPUs again" },
	{ "delete", vm_delete, "vm delete NAME|ID [--wait] [--wait-timeout S]",
	  "power it off at once (stop it first for a clean shutdown) and forget it" },
};

const struct cli_object cli_object_vm = {
	"vm", vm_verbs, ARRAY_SIZE(vm_verbs), "virtual machines: create, list, act on, delete",
};

static const struct cli_verb *verb_of(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(vm_verbs); i++)
		if (!strcmp(vm_verbs[i].name, name))
			return &vm_verbs[i];
	return NULL;
}

static int vm_list(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "state", required_argument, NULL, 's' },
		{ "host", required_argument, NULL, 'H' },
		{ "name", required_argument, NULL, 'n' },
		{ "label", required_argument, NULL, 'l' },
		{ 0 },
	};
	const struct cli_verb *v = verb_of("list");
	char *path = strdup("/v1/vms");
	int c;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		const char *key = c == 's' ? "state" : c == 'H' ? "host" : c == 'n' ? "name" :
				  c == 'l' ? "label" : NULL;

		if (!key) {
			free(path);
			return cli_usage(cli, v, "'%s': unknown option or missing value",
					 argv[optind - 1]);
		}
		if (c == 'l' && !strchr(optarg, '=')) {
			free(path);
			return cli_usage(cli, v, "--label '%s': KEY=VALUE", optarg);
		}
		cli_query_add(&path, key, optarg);
	}
	if (optind < argc) {
		free(path);
		return cli_usage(cli, v, "'%s': vm list takes no names (drover vm show NAME)",
				 argv[optind]);
	}
	return cli_list_print(cli, path, vm_columns, ARRAY_SIZE(vm_columns));
}

static int vm_show(struct cli *cli, int argc, char **argv)
{
	if (argc != 2)
		return cli_usage(cli, verb_of("show"), argc < 2 ? "which VM?" : "one VM at a time");
	return cli_show_print(cli, "/v1/vms/", argv[1], vm_fields, ARRAY_SIZE(vm_fields));
}

/* ---- create ---- */

/* "k=v" into obj; false if there is no '='. */
static bool set_pair(json_t *obj, const char *kv)
{
	const char *eq = strchr(kv, '=');
	char *k;

	if (!eq || eq == kv)
		return false;
	k = strndup(kv, (size_t)(eq - kv));
	json_object_set_new(obj, k, json_string(eq + 1));
	free(k);
	return true;
}

/* --disk path=...,format=qcow2,readonly=on,queues=2 into a disk object, as
 * drover-vmm's --disk reads it (",," is a comma inside a value). */
static int parse_disk(const char *spec, json_t **out, char *err, size_t errlen)
{
	json_t *d = json_object();
	char *s = strdup(spec), *w = s, *item = s;

	for (char *r = s;; r++) {
		if (*r == ',' && r[1] == ',') {
			*w++ = ',';
			r++;
			continue;
		}
		if (*r && *r != ',') {
			*w++ = *r;
			continue;
		}
		bool end = !*r;
		*w = 0;
		char *eq = strchr(item, '=');
		if (!eq) {
			snprintf(err, errlen, "'%s' is not KEY=VALUE", item);
			goto bad;
		}
		*eq = 0;
		const char *k = item, *val = eq + 1;
		if (!strcmp(k, "snapshot") || !strcmp(k, "readonly")) {
			if (strcmp(val, "on") && strcmp(val, "off")) {
				snprintf(err, errlen, "%s: '%s' is not on or off", k, val);
				goto bad;
			}
			json_object_set_new(d, k, json_boolean(!strcmp(val, "on")));
		} else if (!strcmp(k, "queues")) {
			uint64_t n;
			if (parse_uint(val, 1, 16, &n)) {
				snprintf(err, errlen, "queues: '%s' is not a number in 1..16", val);
				goto bad;
			}
			json_object_set_new(d, k, json_integer((json_int_t)n));
		} else if (!strcmp(k, "path") || !strcmp(k, "format") || !strcmp(k, "cache") ||
			   !strcmp(k, "serial") || !strcmp(k, "id")) {
			json_object_set_new(d, k, json_string(val));
		} else {
			snprintf(err, errlen, "unknown key '%s' (path, format, cache, snapshot, "
				 "readonly, serial, id, queues)", k);
			goto bad;
		}
		if (end)
			break;
		item = w = r + 1;
	}
	free(s);
	if (!json_object_get(d, "path")) {
		snprintf(err, errlen, "no path=");
		json_decref(d);
		return -EINVAL;
	}
	*out = d;
	return 0;
bad:
	free(s);
	json_decref(d);
	return -EINVAL;
}

/* The object at key in obj, made if missing. */
static json_t *sub(json_t *obj, const char *key)
{
	json_t *o = json_object_get(obj, key);

	if (!o) {
		o = json_object();
		json_object_set_new(obj, key, o);
	}
	return o;
}

static json_t *arr(json_t *obj, const char *key)
{
	json_t *a = json_object_get(obj, key);

	if (!a) {
		a = json_array();
		json_object_set_new(obj, key, a);
	}
	return a;
}

enum { O_FILE = 'f', O_NAME = 256, O_KERNEL, O_INITRD, O_CMDLINE, O_VCPUS, O_MEMORY, O_DISK,
       O_LABEL, O_HOST, O_CPUFLAG, O_HOSTLABEL, O_AFF, O_ANTI, O_NOSTART, O_WAIT, O_WAITTO,
       O_FORCE, O_STOPTO };

static const struct option action_opts[] = {
	{ "wait", no_argument, NULL, O_WAIT },
	{ "wait-timeout", required_argument, NULL, O_WAITTO },
	{ "force", no_argument, NULL, O_FORCE },
	{ "stop-timeout", required_argument, NULL, O_STOPTO },
	{ 0 },
};

/* After a 202: the operation, waited for when asked; then the VM. */
static int follow(struct cli *cli, const json_t *accepted, const char *what, bool wait,
		  unsigned wait_s, const char *vm_ref, bool gone_ok)
{
	const char *op = json_string_value(output_get(accepted, "operation.id"));
	json_t *final = NULL;
	int ret;

	if (!op) {
		fprintf(cli->err, "drover: droverd accepted %s but named no operation\n", what);
		return CLI_FAILED;
	}
	if (!wait) {
		if (cli->format == CLI_JSON)
			output_json(cli->out, accepted);
		else
			fprintf(cli->out, "%s: accepted (operation %s; drover operation wait %s)\n",
				what, op, op);
		return CLI_OK;
	}
	fflush(cli->out);       /* what was said so far comes before the progress */
	ret = cli_wait(cli, op, wait_s, &final);
	if (ret == CLI_OK && !gone_ok) {
		struct cli_response r;
		char *path = cli_path("/v1/vms/", vm_ref, NULL);

		ret = cli_call(cli, "GET", path, NULL, &r);
		free(path);
		if (ret == CLI_OK) {
			if (cli->format == CLI_JSON)
				output_json(cli->out, r.body);
			else
				fprintf(cli->out, "%s: %s%s%s\n", what,
					json_string_value(json_object_get(r.body, "state")) ?: "?",
					json_is_string(json_object_get(r.body, "host_name")) ? " on " : "",
					json_string_value(json_object_get(r.body, "host_name")) ?: "");
			client_response_free(&r);
		}
	} else if (ret == CLI_OK) {
		if (cli->format == CLI_JSON)
			output_json(cli->out, final);
		else
			fprintf(cli->out, "%s: done\n", what);
	}
	json_decref(final);
	return ret;
}

static int wait_seconds(struct cli *cli, const struct cli_verb *v, const char *s, unsigned *out)
{
	uint64_t n;

	if (parse_uint(s, 1, 86400, &n))
		return cli_usage(cli, v, "--wait-timeout '%s': seconds from 1 to 86400", s);
	*out = (unsigned)n;
	return CLI_OK;
}

int cli_definition_args(struct cli *cli, const struct cli_verb *v, int argc, char **argv,
			struct cli_def_args *a)
{
	static const struct option opts[] = {
		{ "file", required_argument, NULL, O_FILE },
		{ "name", required_argument, NULL, O_NAME },
		{ "kernel", required_argument, NULL, O_KERNEL },
		{ "initrd", required_argument, NULL, O_INITRD },
		{ "cmdline", required_argument, NULL, O_CMDLINE },
		{ "vcpus", required_argument, NULL, O_VCPUS },
		{ "memory", required_argument, NULL, O_MEMORY },
		{ "disk", required_argument, NULL, O_DISK },
		{ "label", required_argument, NULL, O_LABEL },
		{ "host", required_argument, NULL, O_HOST },
		{ "cpu-flag", required_argument, NULL, O_CPUFLAG },
		{ "host-label", required_argument, NULL, O_HOSTLABEL },
		{ "affinity", required_argument, NULL, O_AFF },
		{ "anti-affinity", required_argument, NULL, O_ANTI },
		{ "no-start", no_argument, NULL, O_NOSTART },
		{ "wait", no_argument, NULL, O_WAIT },
		{ "wait-timeout", required_argument, NULL, O_WAITTO },
		{ 0 },
	};
	json_t *flags = json_object(), *file = NULL;
	char err[512];
	int c, ret = CLI_OK;
	uint64_t n;

	memset(a, 0, sizeof(*a));
	optind = 0;
	opterr = 0;
	while (ret == CLI_OK && (c = getopt_long(argc, argv, "f:", opts, NULL)) != -1) {
		json_t *d;

		switch (c) {
		case O_FILE: {
			json_error_t je;
			json_decref(file);
			file = json_load_file(optarg, 0, &je);
			if (!file)
				ret = cli_usage(cli, NULL, "%s: line %d: %s", optarg, je.line, je.text);
			else if (!json_is_object(file))
				ret = cli_usage(cli, NULL, "%s: a VM definition is a JSON object", optarg);
			break;
		}
		case O_NAME: json_object_set_new(flags, "name", json_string(optarg)); break;
		case O_KERNEL: json_object_set_new(sub(flags, "boot"), "kernel", json_string(optarg)); break;
		case O_INITRD: json_object_set_new(sub(flags, "boot"), "initrd", json_string(optarg)); break;
		case O_CMDLINE: json_object_set_new(sub(flags, "boot"), "cmdline", json_string(optarg)); break;
		case O_VCPUS:
			if (parse_uint(optarg, 1, 1024, &n))
				ret = cli_usage(cli, v, "--vcpus '%s': a number from 1", optarg);
			else
				json_object_set_new(flags, "vcpus", json_integer((json_int_t)n));
			break;
		case O_MEMORY: json_object_set_new(flags, "memory", json_string(optarg)); break;
		case O_DISK:
			if (parse_disk(optarg, &d, err, sizeof(err)) < 0)
				ret = cli_usage(cli, v, "--disk '%s': %s", optarg, err);
			else
				json_array_append_new(arr(flags, "disks"), d);
			break;
		case O_LABEL:
			if (!set_pair(sub(flags, "labels"), optarg))
				ret = cli_usage(cli, v, "--label '%s': KEY=VALUE", optarg);
			break;
		case O_HOST: json_object_set_new(sub(flags, "placement"), "host", json_string(optarg)); break;
		case O_CPUFLAG: json_array_append_new(arr(sub(flags, "placement"), "cpu_flags"),
						      json_string(optarg)); break;
		case O_HOSTLABEL:
			if (!set_pair(sub(sub(flags, "placement"), "host_labels"), optarg))
				ret = cli_usage(cli, v, "--host-label '%s': KEY=VALUE", optarg);
			break;
		case O_AFF: json_object_set_new(sub(flags, "placement"), "affinity_group",
						json_string(optarg)); break;
		case O_ANTI: json_object_set_new(sub(flags, "placement"), "anti_affinity_group",
						 json_string(optarg)); break;
		case O_NOSTART: a->nostart = true; break;
		case O_WAIT: a->wait = true; break;
		case O_WAITTO: ret = wait_seconds(cli, v, optarg, &a->wait_s); a->wait = true; break;
		default:
			ret = cli_usage(cli, v, "'%s': unknown option or missing value", argv[optind - 1]);
		}
	}
	if (ret == CLI_OK && optind < argc)
		ret = cli_usage(cli, v, "'%s': unexpected (options only)", argv[optind]);
	if (ret == CLI_OK && !file && !json_object_size(flags))
		ret = cli_usage(cli, v, "give the definition: -f FILE.json, or --name and --kernel");
	if (ret == CLI_OK) {
		/* The file first, flags on top (objects merged one level down). */
		const char *key;
		json_t *val;

		a->def = file ? json_incref(file) : json_object();
		json_object_foreach(flags, key, val) {
			json_t *have = json_object_get(a->def, key);
			if (json_is_object(have) && json_is_object(val))
				json_object_update(have, val);
			else
				json_object_set(a->def, key, val);
		}
		if (a->nostart)
			json_object_set_new(a->def, "start", json_false());
	}
	json_decref(flags);
	json_decref(file);
	return ret;
}

static int vm_create(struct cli *cli, int argc, char **argv)
{
	struct cli_def_args a;
	struct cli_response r;
	char what[256];
	int ret = cli_definition_args(cli, verb_of("create"), argc, argv, &a);

	if (ret != CLI_OK)
		return ret;
	ret = cli_call(cli, "POST", "/v1/vms", a.def, &r);
	if (ret != CLI_OK)
		goto out;
	const char *name = json_string_value(json_object_get(a.def, "name"));
	snprintf(what, sizeof(what), "vm %s", name ? name : "?");
	if (r.status == 202) {
		const char *id = json_string_value(output_get(r.body, "vm.id"));
		const char *host = json_string_value(output_get(r.body, "vm.host_name"));
		if (cli->format == CLI_TABLE && host)
			fprintf(cli->out, "%s: placed on %s\n", what, host);
		ret = follow(cli, r.body, what, a.wait, a.wait_s, id ? id : name, false);
	} else if (cli->format == CLI_JSON) {
		output_json(cli->out, r.body);
	} else {
		fprintf(cli->out, "%s: defined on %s (not started)\n", what,
			json_string_value(json_object_get(r.body, "host_name")) ?: "?");
	}
	client_response_free(&r);
out:
	json_decref(a.def);
	return ret;
}

static int vm_action(struct cli *cli, int argc, char **argv)
{
	const struct cli_verb *v = verb_of(argv[0]);
	bool wait = false, force = false, stop = !strcmp(argv[0], "stop");
	json_t *body = json_object();
	unsigned wait_s = 0;
	char what[256];
	struct cli_response r;
	int c, ret = CLI_OK;
	uint64_t n;

	optind = 0;
	opterr = 0;
	while (ret == CLI_OK && (c = getopt_long(argc, argv, "", action_opts, NULL)) != -1) {
		switch (c) {
		case O_WAIT: wait = true; break;
		case O_WAITTO: ret = wait_seconds(cli, v, optarg, &wait_s); wait = true; break;
		case O_FORCE:
			if (!stop)
				ret = cli_usage(cli, v, "--force is for stop");
			force = true;
			json_object_set_new(body, "force", json_true());
			break;
		case O_STOPTO:
			if (!stop)
				ret = cli_usage(cli, v, "--stop-timeout is for stop");
			else if (parse_uint(optarg, 0, 3600, &n))
				ret = cli_usage(cli, v, "--stop-timeout '%s': seconds from 0 to 3600",
						optarg);
			else
				json_object_set_new(body, "timeout_s", json_integer((json_int_t)n));
			break;
		default:
			ret = cli_usage(cli, v, "'%s': unknown option or missing value", argv[optind - 1]);
		}
	}
	(void)force;
	if (ret == CLI_OK && argc - optind != 1)
		ret = cli_usage(cli, v, argc - optind < 1 ? "which VM?" : "one VM at a time");
	if (ret != CLI_OK) {
		json_decref(body);
		return ret;
	}
	char suffix[64];
	snprintf(suffix, sizeof(suffix), "/actions/%s", argv[0]);
	char *path = cli_path("/v1/vms/", argv[optind], suffix);
	ret = cli_call(cli, "POST", path, body, &r);
	free(path);
	json_decref(body);
	if (ret != CLI_OK)
		return ret;
	snprintf(what, sizeof(what), "vm %s %s", argv[optind], argv[0]);
	ret = follow(cli, r.body, what, wait, wait_s, argv[optind], false);
	client_response_free(&r);
	return ret;
}

static int vm_delete(struct cli *cli, int argc, char **argv)
{
	const struct cli_verb *v = verb_of("delete");
	bool wait = false;
	unsigned wait_s = 0;
	char what[256];
	struct cli_response r;
	int c, ret = CLI_OK;

	optind = 0;
	opterr = 0;
	while (ret == CLI_OK && (c = getopt_long(argc, argv, "", action_opts, NULL)) != -1) {
		if (c == O_WAIT)
			wait = true;
		else if (c == O_WAITTO)
			ret = wait_seconds(cli, v, optarg, &wait_s), wait = true;
		else
			ret = cli_usage(cli, v, "'%s': unknown option or missing value", argv[optind - 1]);
	}
	if (ret == CLI_OK && argc - optind != 1)
		ret = cli_usage(cli, v, argc - optind < 1 ? "which VM?" : "one VM at a time");
	if (ret != CLI_OK)
		return ret;
	char *path = cli_path("/v1/vms/", argv[optind], NULL);
	ret = cli_call(cli, "DELETE", path, NULL, &r);
	free(path);
	if (ret != CLI_OK)
		return ret;
	snprintf(what, sizeof(what), "vm %s delete", argv[optind]);
	ret = follow(cli, r.body, what, wait, wait_s, argv[optind], true);
	client_response_free(&r);
	return ret;
}
