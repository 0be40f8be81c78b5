/* drover-agent: the per-host daemon. main() reads the command line and the
 * configuration file, then runs the agent (agent.c) until SIGTERM. */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "agent_config.h"
#include "log.h"

static const char usage[] =
"usage: drover-agent --config FILE [--log-level LEVEL]\n"
"\n"
"Runs the drover agent of this host: keeps one connection to the controller,\n"
"reports the host's inventory and its VMs, and starts, watches and stops one\n"
"drover-vmm process per VM. VMs outlive the agent: stopping or restarting it\n"
"leaves them running, and the next agent adopts them.\n"
"\n"
"  --config FILE       the agent's JSON configuration (see deploy/agent.example.json)\n"
"  --log-level LEVEL   error, warn, info or debug (overrides the file; default info)\n"
"  --help, -h          print this text and exit\n"
"  --version           print the version and exit\n"
"\n"
"Exit status: 0 after SIGTERM or SIGINT, 1 when it cannot start (the message\n"
"on stderr says why), 2 for a bad command line.\n";

static int parse_level(const char *s)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };

	for (int i = 0; i < 4; i++) {
		if (!strcmp(s, names[i]))
			return i;
	}
	return -1;
}

/* "--opt VALUE" or "--opt=VALUE": the value, or NULL if arg is not opt. */
static const char *option_value(int argc, char **argv, int *i, const char *opt, bool *missing)
{
	size_t n = strlen(opt);
	const char *arg = argv[*i];

	if (strncmp(arg, opt, n))
		return NULL;
	if (arg[n] == '=')
		return arg + n + 1;
	if (arg[n])
		return NULL;
	if (*i + 1 >= argc) {
		*missing = true;
		return NULL;
	}
	return argv[++*i];
}

int main(int argc, char **argv)
{
	const char *config_path = NULL, *level_arg = NULL;
	struct agent_config cfg;
	char err[1024], self[PATH_MAX];
	ssize_t n;
	int level = -1, status;

	log_init("drover-agent", LOG_INFO);
	for (int i = 1; i < argc; i++) {
		bool missing = false;
		const char *v;

		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			fputs(usage, stdout);
			return 0;
		}
		if (!strcmp(argv[i], "--version")) {
			printf("drover-agent %s\n", DROVER_VERSION);
			return 0;
		}
		if ((v = option_value(argc, argv, &i, "--config", &missing))) {
			config_path = v;
		} else if ((v = option_value(argc, argv, &i, "--log-level", &missing))) {
			level_arg = v;
		} else {
			fprintf(stderr, "drover-agent: %s '%s'\nTry 'drover-agent --help'.\n",
				missing ? "missing value for" : "unknown argument", argv[i]);
			return 2;
		}
	}
	if (level_arg && (level = parse_level(level_arg)) < 0) {
		fprintf(stderr, "drover-agent: --log-level: '%s' is not one of error, warn, info, "
			"debug\n", level_arg);
		return 2;
	}
	if (!config_path) {
		fprintf(stderr, "drover-agent: --config FILE is required\nTry 'drover-agent "
			"--help'.\n");
		return 2;
	}
	agent_config_init(&cfg);
	if (agent_config_load(&cfg, config_path, err, sizeof(err)) < 0) {
		fprintf(stderr, "drover-agent: %s\n", err);
		agent_config_free(&cfg);
		return 1;
	}
	if (level < 0)
		level = cfg.log_level;
	log_set_level(level >= 0 ? (enum log_level)level : LOG_INFO);
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	self[n > 0 ? n : 0] = 0;
	if (agent_config_resolve(&cfg, n > 0 ? self : NULL, err, sizeof(err)) < 0) {
		fprintf(stderr, "drover-agent: %s: %s\n", config_path, err);
		agent_config_free(&cfg);
		return 1;
	}
	status = agent_run(&cfg);
	agent_config_free(&cfg);
	return status;
}
