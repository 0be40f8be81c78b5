/* drover host ..., drover placement ..., drover operation ..., drover event ... */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli_int.h"
#include "util.h"

/* ---- host ---- */

static void used_of(const json_t *obj, const char *used, const char *cap, char *buf, size_t len,
		    bool mib)
{
	const json_t *u = output_get(obj, used), *c = output_get(obj, cap);
	char a[32], b[32];

	if (mib) {
		output_mib(obj, u, a, sizeof(a));
		output_mib(obj, c, b, sizeof(b));
	} else {
		output_value(u, a, sizeof(a));
		output_value(c, b, sizeof(b));
	}
	snprintf(buf, len, "%s/%s", a, b);
}

static void host_vcpus(const json_t *obj, const json_t *v, char *buf, size_t len)
{
	used_of(obj, "allocated.vcpus", "capacity.vcpus", buf, len, false);
}

static void host_memory(const json_t *obj, const json_t *v, char *buf, size_t len)
{
	used_of(obj, "allocated.memory_mib", "capacity.memory_mib", buf, len, true);
}

static const struct cli_column host_columns[] = {
	{ "NAME", "name", NULL },
	{ "STATE", "state", NULL },
	{ "MAINTENANCE", "maintenance", NULL },
	{ "VMS", "allocated.vms", NULL },
	{ "VCPUS", "allocated", host_vcpus },
	{ "MEMORY", "allocated", host_memory },
	{ "ADDRESS", "address", NULL },
	{ "HEARTBEAT", "last_heartbeat", output_age },
	{ "ID", "id", NULL },
};

static void inv_mib(const json_t *obj, const json_t *v, char *buf, size_t len)
{
	json_t *mib = json_is_integer(v) ? json_integer(json_integer_value(v) >> 20) : NULL;

	output_mib(obj, mib, buf, len);
	json_decref(mib);
}

static const struct cli_column host_fields[] = {
	{ "ID", "id", NULL },
	{ "Name", "name", NULL },
	{ "State", "state", NULL },
	{ "Maintenance", "maintenance", NULL },
	{ "Address", "address", NULL },
	{ "Migration address", "migration_address", NULL },
	{ "Labels", "labels", NULL },
	{ "Last heartbeat", "last_heartbeat", NULL },
	{ "VMs", "allocated.vms", NULL },
	{ "vCPUs (allocated)", "allocated", host_vcpus },
	{ "Memory (allocated)", "allocated", host_memory },
	{ "CPU", "inventory.cpu_model", NULL },
	{ "CPUs", "inventory.cpus", NULL },
	{ "Virtualization", "inventory.virt", NULL },
	{ "EPT", "inventory.ept", NULL },
	{ "VPID", "inventory.vpid", NULL },
	{ "KVM", "inventory.kvm", NULL },
	{ "KVM max vCPUs", "inventory.kvm_max_vcpus", NULL },
	{ "Memory total", "inventory.mem_total", inv_mib },
	{ "Memory available", "inventory.mem_available", inv_mib },
	{ "Reserved CPUs", "inventory.reserved_cpus", NULL },
	{ "Reserved memory", "inventory.reserved_mem", inv_mib },
	{ "Load", "inventory.load1", NULL },
	{ "Kernel", "inventory.kernel", NULL },
};

static int host_list(struct cli *cli, int argc, char **argv);
static int host_show(struct cli *cli, int argc, char **argv);
static int host_maintenance(struct cli *cli, int argc, char **argv);

static const struct cli_verb host_verbs[] = {
	{ "list", host_list, "host list [--state up|down]", "the hosts, their capacity and use" },
	{ "show", host_show, "host show NAME|ID", "one host with its inventory" },
	{ "maintenance", host_maintenance, "host maintenance NAME|ID on|off",
	  "on: no new VMs are placed there (the running ones stay)" },
};

const struct cli_object cli_object_host = {
	"host", host_verbs, ARRAY_SIZE(host_verbs), "hosts: list, show, maintenance",
};

static int host_list(struct cli *cli, int argc, char **argv)
{
	char *path = strdup("/v1/hosts");

	if (argc == 3 && !strcmp(argv[1], "--state")) {
		cli_query_add(&path, "state", argv[2]);
	} else if (argc != 1) {
		free(path);
		return cli_usage(cli, &host_verbs[0], "'%s': unexpected", argv[1]);
	}
	return cli_list_print(cli, path, host_columns, ARRAY_SIZE(host_columns));
}

static int host_show(struct cli *cli, int argc, char **argv)
{
	if (argc != 2)
		return cli_usage(cli, &host_verbs[1], argc < 2 ? "which host?" : "one host at a time");
	return cli_show_print(cli, "/v1/hosts/", argv[1], host_fields, ARRAY_SIZE(host_fields));
}

static int host_maintenance(struct cli *cli, int argc, char **argv)
{
	struct cli_response r;
	json_t *body;
	char *path;
	int ret;

	if (argc != 3 || (strcmp(argv[2], "on") && strcmp(argv[2], "off")))
		return cli_usage(cli, &host_verbs[2], argc == 3 ? "'%s': on or off" :
				 "which host, and on or off?", argc == 3 ? argv[2] : "");
	body = json_pack("{s:b}", "enabled", !strcmp(argv[2], "on"));
	path = cli_path("/v1/hosts/", argv[1], "/maintenance");
	ret = cli_call(cli, "POST", path, body, &r);
	free(path);
	json_decref(body);
	if (ret != CLI_OK)
		return ret;
	if (cli->format == CLI_JSON)
		output_json(cli->out, r.body);
	else
		fprintf(cli->out, "host %s: maintenance %s\n", argv[1], argv[2]);
	client_response_free(&r);
	return CLI_OK;
}

/* ---- placement ---- */

static int placement_ask(struct cli *cli, int argc, char **argv);

static const struct cli_verb placement_verbs[] = {
	{ "ask", placement_ask,
	  "placement [ask] (-f FILE.json | --vcpus N --memory SIZE [--cpu-flag F]... "
	  "[--host-label K=V]... [--host H] [--affinity G] [--anti-affinity G] ...)",
	  "where would this VM go, and why not elsewhere? Nothing is created." },
};

const struct cli_object cli_object_placement = {
	"placement", placement_verbs, ARRAY_SIZE(placement_verbs),
	"ask the scheduler where a VM would go",
};

static void print_reasons(struct cli *cli, const json_t *reasons)
{
	const char *host;
	json_t *list;

	json_object_foreach((json_t *)reasons, host, list) {
		size_t i;
		json_t *why;

		json_array_foreach(list, i, why)
			fprintf(cli->out, "  %-20s %s\n", host, json_string_value(why) ?: "?");
	}
}

static int placement_ask(struct cli *cli, int argc, char **argv)
{
	struct cli_def_args a;
	struct cli_response r;
	int ret;

	ret = cli_definition_args(cli, &placement_verbs[0], argc, argv, &a);
	if (ret != CLI_OK)
		return ret;
	/* A definition needs a name and a kernel; a question may leave them out. */
	if (!json_object_get(a.def, "name"))
		json_object_set_new(a.def, "name", json_string("placement-query"));
	if (!json_object_get(a.def, "boot"))
		json_object_set_new(a.def, "boot", json_pack("{s:s}", "kernel", "/nonexistent"));
	json_object_del(a.def, "start");
	ret = cli_call(cli, "POST", "/v1/placements", a.def, &r);
	json_decref(a.def);
	if (ret != CLI_OK)
		return ret;
	if (cli->format == CLI_JSON) {
		output_json(cli->out, r.body);
	} else {
		const json_t *reasons = json_object_get(r.body, "reasons");

		fprintf(cli->out, "would go to %s (score %.3f)\n",
			json_string_value(json_object_get(r.body, "host_name")) ?: "?",
			json_number_value(json_object_get(r.body, "score")));
		if (json_object_size(reasons)) {
			fprintf(cli->out, "hosts that could not take it:\n");
			print_reasons(cli, reasons);
		}
	}
	client_response_free(&r);
	return CLI_OK;
}

/* ---- operation ---- */

static const struct cli_column op_columns[] = {
	{ "ID", "id", NULL },
	{ "KIND", "kind", NULL },
	{ "VM", "vm", NULL },
	{ "STATE", "state", NULL },
	{ "PROGRESS", "progress", NULL },
	{ "MESSAGE", "message", NULL },
	{ "UPDATED", "updated_at", output_age },
};

static const struct cli_column op_fields[] = {
	{ "ID", "id", NULL },
	{ "Kind", "kind", NULL },
	{ "VM", "vm", NULL },
	{ "Host", "host", NULL },
	{ "State", "state", NULL },
	{ "Progress", "progress", NULL },
	{ "Message", "message", NULL },
	{ "Error", "error.message", NULL },
	{ "Created", "created_at", NULL },
	{ "Updated", "updated_at", NULL },
};

static int op_show(struct cli *cli, int argc, char **argv);
static int op_wait(struct cli *cli, int argc, char **argv);
static int op_list(struct cli *cli, int argc, char **argv);

static const struct cli_verb op_verbs[] = {
	{ "show", op_show, "operation show ID", "one operation: state, progress, error" },
	{ "wait", op_wait, "operation wait ID [--timeout S]",
	  "follow an operation's progress until it ends (exit 1 if it failed)" },
	{ "list", op_list, "operation list [--vm NAME] [--state STATE]", "recent operations" },
};

const struct cli_object cli_object_operation = {
	"operation", op_verbs, ARRAY_SIZE(op_verbs), "long actions: show, wait, list",
};

static int op_show(struct cli *cli, int argc, char **argv)
{
	if (argc != 2)
		return cli_usage(cli, &op_verbs[0], "which operation?");
	return cli_show_print(cli, "/v1/operations/", argv[1], op_fields, ARRAY_SIZE(op_fields));
}

static int op_wait(struct cli *cli, int argc, char **argv)
{
	uint64_t t = 0;
	json_t *final = NULL;
	int ret;

	if (argc == 4 && !strcmp(argv[2], "--timeout")) {
		if (parse_uint(argv[3], 1, 86400, &t))
			return cli_usage(cli, &op_verbs[1], "--timeout '%s': seconds from 1 to 86400",
					 argv[3]);
	} else if (argc != 2) {
		return cli_usage(cli, &op_verbs[1], "which operation?");
	}
	ret = cli_wait(cli, argv[1], (unsigned)t, &final);
	if (final) {
		if (cli->format == CLI_JSON)
			output_json(cli->out, final);
		else if (ret == CLI_OK)
			fprintf(cli->out, "operation %s: succeeded\n", argv[1]);
	}
	json_decref(final);
	return ret;
}

/* "--key value" pairs into a query; usage error for anything else. */
static int query_opts(struct cli *cli, const struct cli_verb *v, int argc, char **argv,
		      const char *const *keys, char **path)
{
	for (int i = 1; i < argc; i += 2) {
		const char *k = NULL;

		for (const char *const *p = keys; *p; p++)
			if (!strncmp(argv[i], "--", 2) && !strcmp(argv[i] + 2, *p))
				k = *p;
		if (!k)
			return cli_usage(cli, v, "'%s': unknown option", argv[i]);
		if (i + 1 >= argc)
			return cli_usage(cli, v, "%s needs a value", argv[i]);
		cli_query_add(path, k, argv[i + 1]);
	}
	return CLI_OK;
}

static int op_list(struct cli *cli, int argc, char **argv)
{
	static const char *const keys[] = { "vm", "state", NULL };
	char *path = strdup("/v1/operations");
	int ret = query_opts(cli, &op_verbs[2], argc, argv, keys, &path);

	if (ret != CLI_OK) {
		free(path);
		return ret;
	}
	return cli_list_print(cli, path, op_columns, ARRAY_SIZE(op_columns));
}

/* ---- event ---- */

/* The message names the VM and the host; their ids are in -o json. */
static const struct cli_column event_columns[] = {
	{ "ID", "id", NULL },
	{ "TIME", "time", NULL },
	{ "KIND", "kind", NULL },
	{ "MESSAGE", "message", NULL },
};

static int event_list(struct cli *cli, int argc, char **argv);

static const struct cli_verb event_verbs[] = {
	{ "list", event_list, "event list [--since ID] [--vm NAME] [--host NAME]",
	  "what happened, oldest first" },
};

const struct cli_object cli_object_event = {
	"event", event_verbs, ARRAY_SIZE(event_verbs), "the cluster's recent history",
};

static int event_list(struct cli *cli, int argc, char **argv)
{
	static const char *const keys[] = { "since", "vm", "host", NULL };
	char *path = strdup("/v1/events");
	int ret = query_opts(cli, &event_verbs[0], argc, argv, keys, &path);

	if (ret != CLI_OK) {
		free(path);
		return ret;
	}
	return cli_list_print(cli, path, event_columns, ARRAY_SIZE(event_columns));
}
