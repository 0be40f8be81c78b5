/* fuzz_agent_config: bytes -> drover-agent's configuration file parser
 * (agent_config_parse: no file system, no defaults resolved).
 *
 * Beyond the sanitizers: a refusal is -EINVAL with a message naming the
 * source; an accepted file leaves the values the agent relies on in range
 * (the backoff's bounds in order, a host id that is a UUID or empty). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_config.h"
#include "log.h"

#define CHECK(cond, ...) do { \
	if (!(cond)) { \
		fprintf(stderr, "fuzz_agent_config: broken invariant: " __VA_ARGS__); \
		fprintf(stderr, "\n"); \
		abort(); \
	} \
} while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_init("fuzz_agent_config", LOG_ERROR);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct agent_config c;
	char err[512] = "";
	int ret;

	agent_config_init(&c);
	ret = agent_config_parse(&c, (const char *)data, size, "agent.json", err, sizeof(err));
	if (ret) {
		CHECK(ret == -EINVAL || ret == -ENOMEM, "agent_config_parse: %d", ret);
		CHECK(ret == -ENOMEM || strstr(err, "agent.json"), "refusal '%s' names no source",
		      err);
	} else {
		CHECK(!c.host_id[0] || agent_uuid_valid(c.host_id), "host id '%s'", c.host_id);
		CHECK(c.reconnect_min_ms <= c.reconnect_max_ms, "backoff %u > %u",
		      c.reconnect_min_ms, c.reconnect_max_ms);
	}
	agent_config_free(&c);
	return 0;
}
