/* agent/vmstate.c: the VM state file round trip, what a damaged one
 * says, and that writing it never leaves a torn or temporary file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>

#include "test_agent_helpers.h"
#include "vmstate.h"

static void test_round_trip(void **state)
{
	char dir[64], path[128], err[256];
	struct vmstate st, back;

	th_tmpdir(dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/state.json", dir);
	for (int k = VMSTATE_DEFINED; k <= VMSTATE_CRASHED; k++) {
		vmstate_init(&st);
		st.state = (enum vmstate_kind)k;
		st.pid = 4242 + k;
		st.pid_start = 81723ULL << 20;
		st.since_ms = 1764079200123ULL;
		st.exit_status = k == VMSTATE_STOPPED ? 4 : -1;
		snprintf(st.exit_reason, sizeof(st.exit_reason), "reason-%d", k);
		snprintf(st.detail, sizeof(st.detail), "detail with \"quotes\" and \\n %d", k);
		st.stop = (enum vmstate_stop)(k % 4);
		assert_int_equal(vmstate_write(path, &st), 0);
		assert_int_equal(vmstate_read(path, &back, err, sizeof(err)), 0);
		assert_int_equal(back.state, st.state);
		assert_int_equal(back.pid, st.pid);
		assert_int_equal(back.pid_start, st.pid_start);
		assert_int_equal(back.since_ms, st.since_ms);
		assert_int_equal(back.exit_status, st.exit_status);
		assert_string_equal(back.exit_reason, st.exit_reason);
		assert_string_equal(back.detail, st.detail);
		assert_int_equal(back.stop, st.stop);
	}
	/* Only the state file is left: the temporary one was renamed over it. */
	{
		DIR *d = opendir(dir);
		struct dirent *e;
		int files = 0;

		while ((e = readdir(d)))
			files += e->d_name[0] != '.';
		closedir(d);
		assert_int_equal(files, 1);
	}
	th_rmtree(dir);
}

static void test_names(void **state)
{
	enum vmstate_kind k;

	assert_string_equal(vmstate_name(VMSTATE_STARTING), "starting");
	assert_int_equal(vmstate_from_name("paused", &k), 0);
	assert_int_equal(k, VMSTATE_PAUSED);
	assert_int_equal(vmstate_from_name("Paused", &k), -EINVAL);
	assert_true(vmstate_has_vmm(VMSTATE_STOPPING));
	assert_false(vmstate_has_vmm(VMSTATE_CRASHED));
	assert_false(vmstate_has_vmm(VMSTATE_DEFINED));
}

static void test_damaged(void **state)
{
	static const struct {
		const char *text;
		const char *expect;
	} cases[] = {
		{ "", "line 1" },
		{ "{\"state\": ", "line 1" },
		{ "[]", "not a JSON object" },
		{ "{\"state\": \"flying\"}", "'state': 'flying' is not one of" },
		{ "{\"state\": 3}", "'state' is not a string" },
		{ "{\"state\": \"running\", \"pid\": \"12\"}", "'pid' is not an integer" },
		{ "{\"state\": \"running\", \"pid\": -5}", "'pid' is not an integer" },
		{ "{\"state\": \"stopped\", \"exit-status\": 300}", "'exit-status'" },
		{ "{\"state\": \"stopping\", \"stop\": \"gently\"}", "'stop': 'gently'" },
	};
	struct vmstate st;
	char err[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = 0;
		if (vmstate_parse(&st, cases[i].text, strlen(cases[i].text), err, sizeof(err)) !=
		    -EINVAL || !strstr(err, cases[i].expect))
			fail_msg("%s: '%s' (expected '%s')", cases[i].text, err, cases[i].expect);
	}
	/* Keys a newer agent adds are ignored; missing ones take defaults. */
	{
		const char *newer = "{\"state\": \"running\", \"future\": [1]}";

		assert_int_equal(vmstate_parse(&st, newer, strlen(newer), err, sizeof(err)), 0);
	}
	assert_int_equal(st.state, VMSTATE_RUNNING);
	assert_int_equal(st.pid, 0);
	assert_int_equal(st.exit_status, -1);
	assert_int_equal(vmstate_read("/nonexistent/state.json", &st, err, sizeof(err)), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_damaged),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
