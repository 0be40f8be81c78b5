/* fuzz_config: bytes -> drover-vmm's configuration parsers.
 *
 * Input: one mode byte, then
 *   mode even: a JSON document for vmm_config_from_json;
 *   mode odd:  the command line for vmm_config_from_args, its arguments
 *              separated by NUL bytes (argv can hold any other byte).
 *              --config options are dropped: they would make the fuzzer
 *              read files of its choosing, and the JSON side is fuzzed
 *              directly.
 *
 * Beyond the sanitizers: an accepted configuration is within the limits the
 * options promise (vmm_config_usage), and a refused one comes with one
 * printable line saying why. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "config.h"

#define MAX_ARGS 64

#define CHECK(cond, ...) do { \
	if (!(cond)) { \
		fprintf(stderr, "fuzz_config: broken invariant: " __VA_ARGS__); \
		fprintf(stderr, "\n"); \
		abort(); \
	} \
} while (0)

static bool printable_line(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p < 0x20 || *p == 0x7f)
			return false;
	}
	return true;
}

static void check_accepted(const struct vmm_config *cfg, bool from_args)
{
	size_t sun_path_max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;

	if (cfg->show_help || cfg->show_version)
		return;
	CHECK(!from_args || (cfg->kernel && cfg->kernel[0]), "accepted without a kernel");
	CHECK(cfg->name && cfg->name[0] && strlen(cfg->name) <= 64 && printable_line(cfg->name),
	      "bad name accepted");
	CHECK(cfg->memory >= (1ULL << 20) && cfg->memory <= (1ULL << 40) &&
	      cfg->memory % 4096 == 0, "memory %llu accepted", (unsigned long long)cfg->memory);
	CHECK(cfg->cpus >= 1 && cfg->cpus <= 1024, "cpus %u accepted", cfg->cpus);
	CHECK(!cfg->cmdline || strlen(cfg->cmdline) <= VMM_MAX_CMDLINE, "cmdline too long");
	CHECK(!cfg->control || (cfg->control[0] && strlen(cfg->control) <= sun_path_max),
	      "control path '%s' accepted", cfg->control);
	CHECK((cfg->serial == SERIAL_FILE || cfg->serial == SERIAL_UNIX) ==
	      (cfg->serial_path != NULL), "serial mode %d with path %s", cfg->serial,
	      cfg->serial_path ? cfg->serial_path : "(none)");
	CHECK(!cfg->serial_path || cfg->serial_path[0], "empty serial path accepted");
	CHECK(!cfg->kernel || cfg->kernel[0], "empty kernel path accepted");
	CHECK(!cfg->initrd || cfg->initrd[0], "empty initrd path accepted");
	CHECK(cfg->boot_protocol <= BOOT_LINUX64 && cfg->on_reboot <= ON_REBOOT_EXIT &&
	      cfg->log_level >= 0 && cfg->log_level <= 3, "enum out of range");
}

static void check_refused(const char *err)
{
	CHECK(err[0], "refused without a message");
	CHECK(printable_line(err), "message is not one printable line: %s", err);
}

static void fuzz_json(const uint8_t *data, size_t size)
{
	struct vmm_config cfg;
	char err[1024] = "";

	vmm_config_init(&cfg);
	if (vmm_config_from_json(&cfg, (const char *)data, size, "fuzz.json", err,
				 sizeof(err)) < 0)
		check_refused(err);
	else
		check_accepted(&cfg, false);
	vmm_config_free(&cfg);
}

static void fuzz_args(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1), *argv[MAX_ARGS + 1];
	struct vmm_config cfg;
	char err[1024] = "";
	int argc = 0;

	if (!text)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';
	argv[argc++] = "drover-vmm";
	for (char *arg = text; arg <= text + size && argc < MAX_ARGS; arg += strlen(arg) + 1) {
		if (!strncmp(arg, "--config", 8))
			continue;
		argv[argc++] = arg;
	}
	argv[argc] = NULL;
	if (vmm_config_from_args(&cfg, argc, argv, err, sizeof(err)) < 0)
		check_refused(err);
	else
		check_accepted(&cfg, true);
	vmm_config_free(&cfg);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] & 1)
		fuzz_args(data + 1, size - 1);
	else
		fuzz_json(data + 1, size - 1);
	return 0;
}
