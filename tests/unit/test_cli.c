/* The drover CLI without a server: argument checking (each mistake named,
 * exit 2), settings from flags, environment and config file, an unreachable
 * droverd (exit 3), and the printing of tables and errors. Against a real
 * droverd it is exercised by the cluster tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli.h"
#include "client.h"
#include "output.h"

/* The environment cli_main sees. */
static const char *env_vals[8][2];

static const char *fake_env(const char *name)
{
	for (size_t i = 0; i < 8 && env_vals[i][0]; i++)
		if (!strcmp(env_vals[i][0], name))
			return env_vals[i][1];
	return NULL;
}

struct run {
	int status;
	char *out, *err;
};

static void run(struct run *r, ...)
{
	char *argv[64];
	int argc = 0;
	size_t olen, elen;
	va_list ap;
	FILE *out = open_memstream(&r->out, &olen), *err = open_memstream(&r->err, &elen);

	argv[argc++] = "drover";
	va_start(ap, r);
	for (char *a; (a = va_arg(ap, char *)) && argc < 63;)
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;
	r->status = cli_main(argc, argv, out, err, fake_env);
	fclose(out);
	fclose(err);
}

static void run_free(struct run *r)
{
	free(r->out);
	free(r->err);
}

static int reset_env(void **state)
{
	memset(env_vals, 0, sizeof(env_vals));
	/* No config file from the machine running the test. */
	env_vals[0][0] = "HOME";
	env_vals[0][1] = "/nonexistent-home";
	return 0;
}

/* Mistakes caught before any request: each named, exit 2. */
static void test_usage_errors(void **state)
{
	static const struct { const char *args[8]; const char *want; } cases[] = {
		{ { NULL }, "usage: drover" },
		{ { "frob", NULL }, "'frob' is not an object" },
		{ { "vm", "frob", NULL }, "'frob' is not a verb of vm" },
		{ { "vm", "show", NULL }, "which VM?" },
		{ { "vm", "show", "a", "b", NULL }, "one VM at a time" },
		{ { "vm", "start", NULL }, "which VM?" },
		{ { "vm", "pause", "x", "--force", NULL }, "--force is for stop" },
		{ { "vm", "stop", "x", "--stop-timeout", "soon", NULL }, "--stop-timeout 'soon'" },
		{ { "vm", "create", NULL }, "give the definition" },
		{ { "vm", "create", "--vcpus", "0", NULL }, "--vcpus '0'" },
		{ { "vm", "create", "--disk", "format=raw", NULL }, "--disk 'format=raw': no path=" },
		{ { "vm", "create", "--disk", "path=a,readonly=maybe", NULL }, "readonly: 'maybe' is not on or off" },
		{ { "vm", "create", "--disk", "path=a,speed=9", NULL }, "unknown key 'speed'" },
		{ { "vm", "create", "--disk", "path=a,queues=99", NULL }, "queues: '99'" },
		{ { "vm", "create", "--label", "novalue", NULL }, "--label 'novalue': KEY=VALUE" },
		{ { "vm", "create", "-f", "/nonexistent/vm.json", NULL }, "/nonexistent/vm.json" },
		{ { "vm", "create", "--name", "a", "stray", NULL }, "'stray': unexpected" },
		{ { "vm", "list", "--label", "x", NULL }, "--label 'x': KEY=VALUE" },
		{ { "vm", "list", "web", NULL }, "takes no names" },
		{ { "host", "maintenance", "h1", "maybe", NULL }, "'maybe': on or off" },
		{ { "operation", "wait", "op", "--timeout", "x", NULL }, "--timeout 'x'" },
		{ { "event", "list", "--colour", "red", NULL }, "'--colour': unknown option" },
		{ { "--output", "yaml", "vm", "list", NULL }, "output 'yaml': table or json" },
		{ { "--url", "ftp://x", "vm", "list", NULL }, "only http:// and https://" },
		{ { "--timeout", "0", "vm", "list", NULL }, "--timeout '0'" },
		{ { "--bogus", "vm", "list", NULL }, "unknown option '--bogus'" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct run r;
		const char *const *a = cases[i].args;

		run(&r, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], NULL);
		if (r.status != CLI_USAGE || !strstr(r.err, cases[i].want))
			fail_msg("case %zu (%s ...): status %d, stderr '%s', wanted '%s'", i,
				 a[0] ? a[0] : "", r.status, r.err, cases[i].want);
		run_free(&r);
	}
}

static void test_help_and_version(void **state)
{
	struct run r;

	run(&r, "--help", NULL);
	assert_int_equal(r.status, CLI_OK);
	assert_non_null(strstr(r.out, "placement"));
	run_free(&r);
	run(&r, "vm", "help", NULL);
	assert_int_equal(r.status, CLI_OK);
	assert_non_null(strstr(r.out, "drover vm create"));
	run_free(&r);
	run(&r, "--version", NULL);
	assert_int_equal(r.status, CLI_OK);
	assert_non_null(strstr(r.out, "drover " DROVER_VERSION));
	run_free(&r);
}

/* Nothing listens on port 1: exit 3, naming the address. */
static void test_unreachable(void **state)
{
	struct run r;

	run(&r, "--url", "http://127.0.0.1:1", "vm", "list", NULL);
	assert_int_equal(r.status, CLI_UNREACHABLE);
	assert_non_null(strstr(r.err, "cannot reach droverd at http://127.0.0.1:1"));
	run_free(&r);
	/* the same address from the environment, then from a config file */
	env_vals[1][0] = "DROVER_URL";
	env_vals[1][1] = "http://127.0.0.1:1/";
	run(&r, "host", "list", NULL);
	assert_int_equal(r.status, CLI_UNREACHABLE);
	assert_non_null(strstr(r.err, "at http://127.0.0.1:1:"));
	run_free(&r);
}

static void test_config_file(void **state)
{
	char dir[] = "/tmp/drover-cli-test.XXXXXX", path[128];
	struct run r;
	FILE *f;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/config.json", dir);
	env_vals[1][0] = "DROVER_CONFIG";
	env_vals[1][1] = path;

	f = fopen(path, "w");
	fputs("{\"url\": \"http://127.0.0.1:1\", \"token\": \"t\"}", f);
	fclose(f);
	run(&r, "vm", "list", NULL);
	assert_int_equal(r.status, CLI_UNREACHABLE);
	assert_non_null(strstr(r.err, "http://127.0.0.1:1"));
	run_free(&r);
	/* a flag wins over the file */
	run(&r, "--url", "http://127.0.0.1:2", "vm", "list", NULL);
	assert_non_null(strstr(r.err, "http://127.0.0.1:2"));
	run_free(&r);

	static const struct { const char *text, *want; } bad[] = {
		{ "{\"url\": 5}", "'url' must be a string" },
		{ "{\"colour\": \"red\"}", "unknown key 'colour'" },
		{ "[1]", "not a JSON object" },
		{ "{\"url\": ", "line 1" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		f = fopen(path, "w");
		fputs(bad[i].text, f);
		fclose(f);
		run(&r, "vm", "list", NULL);
		assert_int_equal(r.status, CLI_USAGE);
		if (!strstr(r.err, bad[i].want) || !strstr(r.err, path))
			fail_msg("config '%s': stderr '%s'", bad[i].text, r.err);
		run_free(&r);
	}
	/* a named file that does not exist is an error; the default one is not */
	unlink(path);
	run(&r, "vm", "list", NULL);
	assert_int_equal(r.status, CLI_USAGE);
	run_free(&r);
	rmdir(dir);
}

static void test_error_format(void **state)
{
	struct cli_response r = { .status = 409 };
	char buf[1024];

	r.raw = strdup("{\"error\": {\"code\": \"conflict\", \"message\": \"no host can take it "
		       "now\", \"details\": {\"hosts\": {\"h1\": [\"host is down\"], \"h2\": "
		       "[\"vcpus: 8 allocated + 4 requested > 8 allowed\"]}}}}");
	r.raw_len = strlen(r.raw);
	r.body = json_loads(r.raw, 0, NULL);
	client_format_error(&r, buf, sizeof(buf));
	assert_string_equal(buf, "409 conflict: no host can take it now\n  h1: host is down\n"
			    "  h2: vcpus: 8 allocated + 4 requested > 8 allowed");
	client_response_free(&r);

	r.status = 502;
	r.raw = strdup("<html>Bad Gateway</html>");
	r.raw_len = strlen(r.raw);
	client_format_error(&r, buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP 502 from droverd, not a drover error document"));
	assert_non_null(strstr(buf, "Bad Gateway"));
	client_response_free(&r);
}

static void test_table(void **state)
{
	static const struct cli_column cols[] = {
		{ "NAME", "name", NULL },
		{ "MEMORY", "memory_mib", output_mib },
		{ "LABELS", "definition.labels", NULL },
		{ "HOST", "host_name", NULL },
	};
	json_t *items = json_loads(
		"[{\"name\": \"web-1\", \"memory_mib\": 2048, \"definition\": {\"labels\": "
		"{\"app\": \"web\", \"tier\": \"1\"}}, \"host_name\": null},"
		" {\"name\": \"db\", \"memory_mib\": 1536, \"host_name\": \"host\\nb\"}]", 0, NULL);
	char *text;
	size_t len;
	FILE *f = open_memstream(&text, &len);

	output_table(f, items, cols, 4);
	fclose(f);
	assert_string_equal(text,
			    "NAME   MEMORY  LABELS          HOST\n"
			    "web-1  2G      app=web,tier=1  -\n"
			    "db     1.5G    -               host b\n");
	free(text);
	json_decref(items);
}

static void test_escape(void **state)
{
	char *e = client_escape("web 1/../x?y=z&ü");

	assert_string_equal(e, "web%201%2F..%2Fx%3Fy%3Dz%26%C3%BC");
	free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_usage_errors, reset_env),
		cmocka_unit_test_setup(test_help_and_version, reset_env),
		cmocka_unit_test_setup(test_unreachable, reset_env),
		cmocka_unit_test_setup(test_config_file, reset_env),
		cmocka_unit_test(test_error_format),
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_escape),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
