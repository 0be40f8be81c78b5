/* drover, the operator's command line: objects (vm, host, placement,
 * operation, event), each with its verbs, as iproute2's `ip` is laid out;
 * tables for people and the API's JSON with -o json. Names match exactly:
 * no prefix abbreviations, so a new verb never changes what an old
 * command line means.
 *
 * Settings come from flags, then the environment (DROVER_URL,
 * DROVER_TOKEN, DROVER_OUTPUT), then a config file (--config, else
 * $DROVER_CONFIG, else $XDG_CONFIG_HOME/drover/config.json or
 * ~/.config/drover/config.json: {"url": ..., "token": ..., "output": ...}).
 *
 * Exit status: 0 done; 1 droverd refused or the operation failed; 2 bad
 * usage; 3 droverd could not be reached. */
#ifndef DROVER_CLI_H
#define DROVER_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "client.h"

enum cli_exit { CLI_OK = 0, CLI_FAILED = 1, CLI_USAGE = 2, CLI_UNREACHABLE = 3 };
enum cli_format { CLI_TABLE, CLI_JSON };

struct cli {
	struct cli_client client;
	enum cli_format format;
	FILE *out, *err;
	bool tty;               /* progress redrawn in place on err */
	unsigned poll_ms;       /* how often --wait asks droverd */
};

/* The whole program without exit(): argv as main gets it; output to out
 * and err. getenv is the environment to read (tests pass their own). */
int cli_main(int argc, char **argv, FILE *out, FILE *err,
	     const char *(*getenv_fn)(const char *name));

#endif
