/* agent/agent_config.c: the agent's configuration file, good and bad (every
 * key refused for a wrong type or value, with the key named), and the host
 * id kept in the state directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "agent_config.h"
#include "log.h"
#include "test_agent_helpers.h"

static int parse(const char *text, struct agent_config *c, char *err, size_t errlen)
{
	agent_config_init(c);
	err[0] = 0;
	return agent_config_parse(c, text, strlen(text), "agent.json", err, errlen);
}

static void test_full(void **state)
{
	struct agent_config c;
	char err[512];

	assert_int_equal(parse("{\"controller\": \"10.0.0.1:7070\", \"host-name\": \"node1\","
			       " \"host-id\": \"6F1C3B2A-0000-4000-8000-00000000ABCD\","
			       " \"run-dir\": \"/run/x\", \"state-dir\": \"/var/lib/x\","
			       " \"migration-address\": \"[::1]:7071\","
			       " \"reserved\": {\"cpus\": 2, \"memory\": \"1G\"},"
			       " \"labels\": {\"rack\": \"r1\", \"ssd\": \"\"},"
			       " \"vmm\": \"/usr/bin/drover-vmm\", \"heartbeat-interval-ms\": 2000,"
			       " \"reconnect-min-ms\": 250, \"reconnect-max-ms\": 10000,"
			       " \"start-timeout-ms\": 3000, \"stop-timeout-ms\": 0,"
			       " \"log-level\": \"debug\"}", &c, err, sizeof(err)), 0);
	assert_string_equal(c.controller, "10.0.0.1:7070");
	assert_string_equal(c.host_name, "node1");
	assert_string_equal(c.host_id, "6f1c3b2a-0000-4000-8000-00000000abcd");
	assert_string_equal(c.run_dir, "/run/x");
	assert_string_equal(c.state_dir, "/var/lib/x");
	assert_string_equal(c.migration_address, "[::1]:7071");
	assert_int_equal(c.reserved_cpus, 2);
	assert_int_equal(c.reserved_mem, 1ULL << 30);
	assert_int_equal(c.nlabels, 2);
	assert_string_equal(c.labels[0].key, "rack");
	assert_string_equal(c.labels[0].value, "r1");
	assert_string_equal(c.labels[1].value, "");
	assert_string_equal(c.vmm_path, "/usr/bin/drover-vmm");
	assert_int_equal(c.heartbeat_ms, 2000);
	assert_int_equal(c.reconnect_min_ms, 250);
	assert_int_equal(c.reconnect_max_ms, 10000);
	assert_int_equal(c.start_timeout_ms, 3000);
	assert_int_equal(c.stop_timeout_ms, 0);
	assert_int_equal(c.log_level, LOG_DEBUG);
	agent_config_free(&c);
}

static void test_defaults(void **state)
{
	struct agent_config c;
	char err[512];

	assert_int_equal(parse("{\"controller\": \"ctl.example:7070\", \"reserved\": "
			       "{\"memory\": 512}}", &c, err, sizeof(err)), 0);
	assert_null(c.host_name);
	assert_string_equal(c.host_id, "");
	assert_null(c.run_dir);
	assert_null(c.migration_address);
	assert_int_equal(c.reserved_mem, 512ULL << 20);
	assert_int_equal(c.heartbeat_ms, 0);
	assert_int_equal(c.reconnect_min_ms, 500);
	assert_int_equal(c.reconnect_max_ms, 30000);
	assert_int_equal(c.log_level, -1);
	agent_config_free(&c);
}

/* Each bad key and wrong type, refused with the key named. */
static void test_bad(void **state)
{
	static const struct {
		const char *text;
		const char *expect;
	} cases[] = {
		{ "", "agent.json: line 1" },
		{ "{\"controller\": \"h:1\",}", "agent.json: line 1" },
		{ "[]", "must be a JSON object, not an array" },
		{ "{}", "'controller' is missing" },
		{ "{\"controller\": \"h:1\", \"controler\": \"h:1\"}", "unknown key 'controler'" },
		{ "{\"controller\": \"h:1\", \"controller\": \"h:2\"}", "duplicate" },
		{ "{\"controller\": 7070}", "'controller' must be a string, not an integer" },
		{ "{\"controller\": \"\"}", "'controller': is empty" },
		{ "{\"controller\": \"host\"}", "'controller': 'host' is not HOST:PORT" },
		{ "{\"controller\": \"host:http\"}", "port 'http'" },
		{ "{\"controller\": \"host:70000\"}", "port '70000'" },
		{ "{\"controller\": \"h:1\", \"host-name\": true}",
		  "'host-name' must be a string, not a boolean" },
		{ "{\"controller\": \"h:1\", \"host-name\": \"a\\nb\"}", "control character" },
		{ "{\"controller\": \"h:1\", \"host-id\": \"1234\"}", "'host-id': '1234' is not a UUID" },
		{ "{\"controller\": \"h:1\", \"host-id\": \"6f1c3b2a-0000-4000-8000-00000000abcg\"}",
		  "is not a UUID" },
		{ "{\"controller\": \"h:1\", \"run-dir\": \"run\"}", "'run-dir': 'run' is not an absolute" },
		{ "{\"controller\": \"h:1\", \"run-dir\": "
		  "\"/a/very/long/run/directory/that/cannot/hold/control/sockets\"}",
		  "unix socket paths hold 107 bytes" },
		{ "{\"controller\": \"h:1\", \"state-dir\": []}", "'state-dir' must be a string, not an array" },
		{ "{\"controller\": \"h:1\", \"migration-address\": \"nope\"}", "'migration-address'" },
		{ "{\"controller\": \"h:1\", \"reserved\": 1}", "'reserved' must be an object" },
		{ "{\"controller\": \"h:1\", \"reserved\": {\"cpus\": -1}}", "'reserved.cpus': -1 is out of range" },
		{ "{\"controller\": \"h:1\", \"reserved\": {\"cpus\": 1.5}}",
		  "'reserved.cpus' must be an integer, not a number with a fraction" },
		{ "{\"controller\": \"h:1\", \"reserved\": {\"memory\": \"lots\"}}",
		  "'reserved.memory': 'lots' is not a size" },
		{ "{\"controller\": \"h:1\", \"reserved\": {\"memory\": null}}",
		  "'reserved.memory' must be a size string" },
		{ "{\"controller\": \"h:1\", \"reserved\": {\"disk\": 1}}", "unknown key 'disk' (in 'reserved'" },
		{ "{\"controller\": \"h:1\", \"labels\": [\"a\"]}", "'labels' must be an object of strings" },
		{ "{\"controller\": \"h:1\", \"labels\": {\"a\": 1}}", "'labels.a' must be a string" },
		{ "{\"controller\": \"h:1\", \"labels\": {\"a b\": \"x\"}}", "label name 'a b'" },
		{ "{\"controller\": \"h:1\", \"vmm\": 1}", "'vmm' must be a string" },
		{ "{\"controller\": \"h:1\", \"heartbeat-interval-ms\": \"5s\"}",
		  "'heartbeat-interval-ms' must be an integer, not a string" },
		{ "{\"controller\": \"h:1\", \"heartbeat-interval-ms\": 10}",
		  "'heartbeat-interval-ms': 10 is out of range (100 to 600000)" },
		{ "{\"controller\": \"h:1\", \"reconnect-min-ms\": 5000, \"reconnect-max-ms\": 100}",
		  "'reconnect-min-ms' (5000) is above 'reconnect-max-ms' (100)" },
		{ "{\"controller\": \"h:1\", \"start-timeout-ms\": 0}", "'start-timeout-ms': 0 is out of range" },
		{ "{\"controller\": \"h:1\", \"log-level\": \"loud\"}",
		  "'log-level': 'loud' is not one of error, warn, info, debug" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct agent_config c;
		char err[512];
		int ret = parse(cases[i].text, &c, err, sizeof(err));

		if (ret != -EINVAL || !strstr(err, cases[i].expect))
			fail_msg("%s: got %d '%s', expected '%s'", cases[i].text, ret, err,
				 cases[i].expect);
		agent_config_free(&c);
	}
}

static void test_load_file(void **state)
{
	char dir[64], path[128], err[512];
	struct agent_config c;

	th_tmpdir(dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/agent.json", dir);
	agent_config_init(&c);
	assert_int_equal(agent_config_load(&c, path, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, path));
	assert_int_equal(th_write(path, "{\"controller\": \"h:1\", \"nope\": 1}"), 0);
	assert_int_equal(agent_config_load(&c, path, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, "unknown key 'nope'"));
	agent_config_free(&c);
	th_rmtree(dir);
}

static void test_uuid(void **state)
{
	char a[AGENT_UUID_LEN + 1], b[AGENT_UUID_LEN + 1];

	assert_int_equal(agent_uuid_generate(a), 0);
	assert_int_equal(agent_uuid_generate(b), 0);
	assert_true(agent_uuid_valid(a));
	assert_string_not_equal(a, b);
	assert_int_equal(a[14], '4');
	assert_true(strchr("89ab", a[19]) != NULL);
	assert_false(agent_uuid_valid(""));
	assert_false(agent_uuid_valid("6f1c3b2a-0000-4000-8000-00000000abcd0"));
	assert_false(agent_uuid_valid("6f1c3b2a00000-4000-8000-00000000abcd"));
}

/* Generated once, then read back; a damaged file is an error, never
 * silently replaced (the controller knows the host by it). */
static void test_host_id_kept(void **state)
{
	char dir[64], path[128], err[512];
	char first[AGENT_UUID_LEN + 1], again[AGENT_UUID_LEN + 1];

	th_tmpdir(dir, sizeof(dir));
	assert_int_equal(agent_host_id_load(dir, first, err, sizeof(err)), 0);
	assert_true(agent_uuid_valid(first));
	assert_int_equal(agent_host_id_load(dir, again, err, sizeof(err)), 0);
	assert_string_equal(first, again);
	snprintf(path, sizeof(path), "%s/host-id", dir);
	assert_int_equal(th_write(path, "not a uuid\n"), 0);
	assert_int_equal(agent_host_id_load(dir, again, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, path));
	th_rmtree(dir);
}

static void test_resolve(void **state)
{
	char dir[64], text[512], err[512], vmm[PATH_MAX], hello[PATH_MAX], state_dir[128];
	struct agent_config c;

	th_tmpdir(dir, sizeof(dir));
	th_find_vmm(vmm, hello, sizeof(vmm));
	snprintf(state_dir, sizeof(state_dir), "%s/state/deep", dir);
	snprintf(text, sizeof(text), "{\"controller\": \"h:1\", \"run-dir\": \"%s/run\", "
		 "\"state-dir\": \"%s\", \"vmm\": \"%s/nonexistent\"}", dir, state_dir, dir);
	assert_int_equal(parse(text, &c, err, sizeof(err)), 0);
	assert_int_equal(agent_config_resolve(&c, NULL, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "'vmm'"));
	agent_config_free(&c);

	/* drover-vmm found next to the agent's own binary. */
	snprintf(text, sizeof(text), "{\"controller\": \"h:1\", \"run-dir\": \"%s/run\", "
		 "\"state-dir\": \"%s\"}", dir, state_dir);
	assert_int_equal(parse(text, &c, err, sizeof(err)), 0);
	{
		char self[PATH_MAX + 16];
		char *slash;

		snprintf(self, sizeof(self), "%s", vmm);
		slash = strrchr(self, '/');
		snprintf(slash, sizeof(self) - (size_t)(slash - self), "/drover-agent");
		assert_int_equal(agent_config_resolve(&c, self, err, sizeof(err)), 0);
	}
	assert_string_equal(c.vmm_path, vmm);
	assert_true(agent_uuid_valid(c.host_id));
	assert_non_null(c.host_name);
	assert_int_equal(access(state_dir, F_OK), 0);
	agent_config_free(&c);
	th_rmtree(dir);
}

/* deploy/agent.example.json, found through the build's CMakeCache. */
static void test_example_file(void **state)
{
	char cache[PATH_MAX], line[PATH_MAX + 64], path[PATH_MAX + 64] = "", err[512];
	struct agent_config c;
	FILE *f;

	th_build_path("DROVER_BUILD_CACHE", "CMakeCache.txt", cache, sizeof(cache));
	f = fopen(cache, "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "CMAKE_HOME_DIRECTORY:INTERNAL=", 30)) {
			line[strcspn(line, "\n")] = 0;
			snprintf(path, sizeof(path), "%s/deploy/agent.example.json", line + 30);
		}
	}
	fclose(f);
	assert_true(path[0] != 0);
	agent_config_init(&c);
	if (agent_config_load(&c, path, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_string_equal(c.run_dir, AGENT_DEFAULT_RUN_DIR);
	assert_string_equal(c.state_dir, AGENT_DEFAULT_STATE_DIR);
	assert_true(c.reserved_cpus > 0 && c.reserved_mem > 0);
	agent_config_free(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_bad),
		cmocka_unit_test(test_load_file),
		cmocka_unit_test(test_uuid),
		cmocka_unit_test(test_host_id_kept),
		cmocka_unit_test(test_resolve),
		cmocka_unit_test(test_example_file),
	};

	log_init("test_agent_config", LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
