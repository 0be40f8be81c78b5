/* What the CLI's object files share (cli.c implements it). */
#ifndef DROVER_CLI_INT_H
#define DROVER_CLI_INT_H

#include <jansson.h>

#include "cli.h"
#include "output.h"

struct cli_verb {
	const char *name;
	int (*run)(struct cli *cli, int argc, char **argv);   /* argv[0] is the verb */
	const char *usage;      /* "vm start NAME [--wait]" */
	const char *summary;
};

struct cli_object {
	const char *name;
	const struct cli_verb *verbs;
	size_t nverbs;
	const char *summary;
};

extern const struct cli_object cli_object_vm, cli_object_host, cli_object_placement,
	cli_object_operation, cli_object_event;

/* Prints "drover: MESSAGE" and the verb's usage; returns CLI_USAGE. */
int cli_usage(struct cli *cli, const struct cli_verb *v, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* One request. 2xx: CLI_OK with *r filled (free it). Otherwise the error is
 * printed ("drover: 404 not-found: ...") and CLI_FAILED or CLI_UNREACHABLE
 * returned, *r already freed. */
int cli_call(struct cli *cli, const char *method, const char *path, const json_t *body,
	     struct cli_response *r);
/* GET path (which may hold a query) page after page; *items is every item. */
int cli_list_all(struct cli *cli, const char *path, json_t **items);
/* cli_list_all, then the items as a table of cols (or JSON with -o json);
 * path is freed. */
int cli_list_print(struct cli *cli, char *path, const struct cli_column *cols, size_t ncols);
/* GET prefix+id, then the object as "Field: value" lines (or JSON). */
int cli_show_print(struct cli *cli, const char *prefix, const char *id,
		   const struct cli_column *fields, size_t nfields);
/* Polls an operation until it ends, showing its progress; CLI_OK when it
 * succeeded (*final: the operation, if wanted), CLI_FAILED when it failed
 * or timeout_s passed (0: no limit). */
int cli_wait(struct cli *cli, const char *op_id, unsigned timeout_s, json_t **final);
/* "/v1/vms/" + escaped id + suffix. Free it. */
char *cli_path(const char *prefix, const char *id, const char *suffix);
/* Appends "&key=escaped(value)" (or "?..." first) to a growing query. */
int cli_query_add(char **path, const char *key, const char *value);

/* A VM definition from -f FILE and/or flags (vm create, placement). */
struct cli_def_args {
	json_t *def;            /* the document to send (a new reference) */
	bool nostart, wait;
	unsigned wait_s;
};
int cli_definition_args(struct cli *cli, const struct cli_verb *v, int argc, char **argv,
			struct cli_def_args *a);

#endif
