/* controller/vmdef.c: good definitions and what they yield; every kind of
 * bad one, with its class (400 shape / 422 value) and its message. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "vmdef.h"

static json_t *load(const char *text)
{
	json_error_t e;
	json_t *doc = json_loads(text, JSON_DECODE_ANY, &e);

	if (!doc)
		fail_msg("test JSON broken: %s: %s", text, e.text);
	return doc;
}

static void parse_ok(const char *text, struct vmdef *def)
{
	json_t *doc = load(text);
	char err[512] = "";

	if (vmdef_parse(doc, def, err, sizeof(err)))
		fail_msg("%s: %s", text, err);
	json_decref(doc);
}

static void test_minimal(void **state)
{
	struct vmdef d;

	(void)state;
	parse_ok("{\"name\": \"web1\", \"boot\": {\"kernel\": \"/srv/vmlinux\"}}", &d);
	assert_string_equal(d.name, "web1");
	assert_int_equal(d.vcpus, 1);
	assert_int_equal(d.mem, 512ULL << 20);
	assert_true(d.start);
	assert_int_equal(d.nlabels, 0);
	assert_null(d.placement.host);
	vmdef_free(&d);
}

static void test_full(void **state)
{
	struct vmdef d;
	char *agent;
	json_t *back;

	(void)state;
	parse_ok("{\"name\": \"db-1.prod\", \"vcpus\": 4, \"memory\": \"2G\","
		 " \"boot\": {\"kernel\": \"/k\", \"initrd\": \"/i\", \"cmdline\": \"console=ttyS0\","
		 "          \"protocol\": \"pvh\"},"
		 " \"disks\": [{\"path\": \"/d.qcow2\", \"format\": \"qcow2\", \"cache\": \"none\","
		 "             \"readonly\": false, \"snapshot\": true, \"serial\": \"abc\","
		 "             \"id\": \"root\", \"queues\": 2}],"
		 " \"nics\": [], \"labels\": {\"team\": \"db\", \"env\": \"prod\"},"
		 " \"description\": \"the database\", \"cpu-features\": [\"-xsave\", \"+x2apic\"],"
		 " \"placement\": {\"host\": \"node1\", \"cpu_flags\": [\"sse4_2\", \"avx\"],"
		 "   \"host_labels\": {\"rack\": \"r1\"}, \"affinity_group\": \"g1\","
		 "   \"anti_affinity_group\": \"g2\"},"
		 " \"start\": false}", &d);
	assert_int_equal(d.vcpus, 4);
	assert_int_equal(d.mem, 2ULL << 30);
	assert_false(d.start);
	assert_int_equal(d.nlabels, 2);
	assert_string_equal(d.placement.host, "node1");
	assert_int_equal(d.placement.ncpu_flags, 2);
	assert_string_equal(d.placement.cpu_flags[0], "avx");      /* sorted */
	assert_string_equal(d.placement.cpu_flags[1], "sse4_2");
	assert_int_equal(d.placement.nhost_labels, 1);
	assert_string_equal(d.placement.host_labels[0].value, "r1");
	assert_string_equal(d.placement.affinity_group, "g1");
	assert_string_equal(d.placement.anti_affinity_group, "g2");
	/* "start" is an instruction, not part of the kept definition. */
	assert_null(json_object_get(d.doc, "start"));
	/* What the agent gets carries the id and still passes the VMM's parser. */
	agent = vmdef_agent_json(d.doc, "1234");
	assert_non_null(agent);
	back = load(agent);
	assert_string_equal(json_string_value(json_object_get(back, "id")), "1234");
	assert_string_equal(json_string_value(json_object_get(back, "name")), "db-1.prod");
	json_decref(back);
	free(agent);
	vmdef_free(&d);
}

static void test_memory_forms(void **state)
{
	struct vmdef d;

	(void)state;
	parse_ok("{\"name\": \"a\", \"memory\": 1024, \"boot\": {\"kernel\": \"/k\"}}", &d);
	assert_int_equal(d.mem, 1ULL << 30);      /* an integer is MiB, as drover-vmm */
	vmdef_free(&d);
	parse_ok("{\"name\": \"a\", \"memory\": \"256M\", \"boot\": {\"kernel\": \"/k\"}}", &d);
	assert_int_equal(d.mem, 256ULL << 20);
	vmdef_free(&d);
}

struct bad {
	const char *doc;
	int ret;                 /* -EBADMSG: 400, -EINVAL: 422 */
	const char *msg;         /* in the error */
};

#define K "\"boot\": {\"kernel\": \"/k\"}"

static const struct bad bad_cases[] = {
	/* shape: 400 */
	{ "[1, 2]", -EBADMSG, "must be a JSON object, not an array" },
	{ "\"vm\"", -EBADMSG, "must be a JSON object, not a string" },
	{ "{" K "}", -EBADMSG, "missing field 'name'" },
	{ "{\"name\": \"a\"}", -EBADMSG, "missing field 'boot'" },
	{ "{\"name\": \"a\", \"boot\": {}}", -EBADMSG, "missing field 'boot.kernel'" },
	{ "{\"name\": 7, " K "}", -EBADMSG, "field 'name' must be a string, not an integer" },
	{ "{\"name\": \"a\", \"vcpus\": \"2\", " K "}", -EBADMSG,
	  "field 'vcpus' must be an integer, not a string" },
	{ "{\"name\": \"a\", \"vcpus\": 2.5, " K "}", -EBADMSG, "field 'vcpus' must be an integer" },
	{ "{\"name\": \"a\", \"memory\": 1.5, " K "}", -EBADMSG, "field 'memory' must be a size" },
	{ "{\"name\": \"a\", \"memory\": null, " K "}", -EBADMSG, "not null" },
	{ "{\"name\": \"a\", \"cpus\": 2, " K "}", -EBADMSG, "unknown field 'cpus'" },
	{ "{\"name\": \"a\", \"id\": \"x\", " K "}", -EBADMSG, "unknown field 'id'" },
	{ "{\"name\": \"a\", \"control\": \"/s\", " K "}", -EBADMSG, "unknown field 'control'" },
	{ "{\"name\": \"a\", \"boot\": {\"kernel\": \"/k\", \"bios\": 1}}", -EBADMSG,
	  "unknown field 'boot.bios'" },
	{ "{\"name\": \"a\", \"boot\": \"/k\"}", -EBADMSG, "field 'boot' must be an object" },
	{ "{\"name\": \"a\", \"disks\": {}, " K "}", -EBADMSG, "field 'disks' must be an array" },
	{ "{\"name\": \"a\", \"disks\": [\"/d\"], " K "}", -EBADMSG,
	  "field 'disks[0]' must be an object" },
	{ "{\"name\": \"a\", \"disks\": [{\"path\": \"/d\"}, {}], " K "}", -EBADMSG,
	  "missing field 'disks[1].path'" },
	{ "{\"name\": \"a\", \"disks\": [{\"path\": \"/d\", \"size\": 1}], " K "}", -EBADMSG,
	  "unknown field 'disks[0].size'" },
	{ "{\"name\": \"a\", \"disks\": [{\"path\": \"/d\", \"readonly\": \"yes\"}], " K "}",
	  -EBADMSG, "field 'disks[0].readonly' must be a boolean" },
	{ "{\"name\": \"a\", \"labels\": {\"a\": 1}, " K "}", -EBADMSG,
	  "field 'labels' must be an object of strings" },
	{ "{\"name\": \"a\", \"nics\": {}, " K "}", -EBADMSG, "field 'nics' must be an array" },
	{ "{\"name\": \"a\", \"start\": \"yes\", " K "}", -EBADMSG, "field 'start' must be a boolean" },
	{ "{\"name\": \"a\", \"cpu-features\": [1], " K "}", -EBADMSG, "field 'cpu-features'" },
	{ "{\"name\": \"a\", \"placement\": {\"zone\": \"x\"}, " K "}", -EBADMSG,
	  "unknown field 'placement.zone'" },
	{ "{\"name\": \"a\", \"placement\": {\"cpu_flags\": \"avx\"}, " K "}", -EBADMSG,
	  "field 'placement.cpu_flags' must be an array of strings" },
	/* values: 422 */
	{ "{\"name\": \"1web\", " K "}", -EINVAL, "'name': '1web' must be 1 to 63" },
	{ "{\"name\": \"web one\", " K "}", -EINVAL, "'name': 'web one'" },
	{ "{\"name\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", " K "}",
	  -EINVAL, "must be 1 to 63" },
	{ "{\"name\": \"a\", \"vcpus\": 0, " K "}", -EINVAL, "'vcpus': '0' out of range 1..1024" },
	{ "{\"name\": \"a\", \"vcpus\": 5000, " K "}", -EINVAL, "out of range 1..1024" },
	{ "{\"name\": \"a\", \"vcpus\": -1, " K "}", -EINVAL, "out of range" },
	{ "{\"name\": \"a\", \"memory\": \"12X\", " K "}", -EINVAL, "'memory': '12X' is not a size" },
	{ "{\"name\": \"a\", \"memory\": 0, " K "}", -EINVAL, "'memory'" },
	{ "{\"name\": \"a\", \"memory\": \"2T\", " K "}", -EINVAL, "above the maximum of 1T" },
	{ "{\"name\": \"a\", \"memory\": \"1000K\", " K "}", -EINVAL, "below the minimum" },
	{ "{\"name\": \"a\", \"boot\": {\"kernel\": \"\"}}", -EINVAL, "'boot.kernel': empty path" },
	{ "{\"name\": \"a\", \"boot\": {\"kernel\": \"/k\", \"protocol\": \"efi\"}}", -EINVAL,
	  "'boot.protocol'" },
	{ "{\"name\": \"a\", \"disks\": [{\"path\": \"/d\", \"cache\": \"fast\"}], " K "}", -EINVAL,
	  "'disks[0].cache': 'fast' is not one of" },
	{ "{\"name\": \"a\", \"disks\": [{\"path\": \"/d\", \"queues\": 99}], " K "}", -EINVAL,
	  "'disks[0].queues'" },
	{ "{\"name\": \"a\", \"disks\": [{\"path\": \"/d\", \"format\": \"vmdk\"}], " K "}", -EINVAL,
	  "'disks[0].format'" },
	{ "{\"name\": \"a\", \"disks\": [{\"path\": \"/d\", \"id\": \"x\"}, {\"path\": \"/e\", "
	  "\"id\": \"x\"}], " K "}", -EINVAL, "disks" },
	{ "{\"name\": \"a\", \"nics\": [{}], " K "}", -EINVAL, "'nics': not supported yet" },
	{ "{\"name\": \"a\", \"labels\": {\"bad key\": \"x\"}, " K "}", -EINVAL,
	  "label key 'bad key'" },
	{ "{\"name\": \"a\", \"labels\": {\"k\": \"a\\nb\"}, " K "}", -EINVAL, "'labels.k'" },
	{ "{\"name\": \"a\", \"placement\": {\"host\": \"\"}, " K "}", -EINVAL,
	  "'placement.host': '' names no host" },
	{ "{\"name\": \"a\", \"placement\": {\"cpu_flags\": [\"AVX\"]}, " K "}", -EINVAL,
	  "'placement.cpu_flags[0]': 'AVX'" },
	{ "{\"name\": \"a\", \"placement\": {\"affinity_group\": \"-g\"}, " K "}", -EINVAL,
	  "'placement.affinity_group': '-g'" },
	{ "{\"name\": \"a\", \"placement\": {\"anti_affinity_group\": \"\"}, " K "}", -EINVAL,
	  "'placement.anti_affinity_group'" },
	{ "{\"name\": \"a\", \"placement\": {\"host_labels\": {\"a b\": \"c\"}}, " K "}", -EINVAL,
	  "'placement.host_labels': label key 'a b'" },
	{ "{\"name\": \"a\", \"cpu-features\": \"-xsave,,+x2apic\", " K "}", -EINVAL,
	  "'cpu-features'" },
};

static void test_bad(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const struct bad *b = &bad_cases[i];
		json_t *doc;
		struct vmdef d;
		char err[512] = "";
		int ret;

		if (!b->msg)
			continue;
		doc = load(b->doc);
		ret = vmdef_parse(doc, &d, err, sizeof(err));
		json_decref(doc);
		if (ret != b->ret || !strstr(err, b->msg))
			fail_msg("%s:\n  got %d '%s'\n  want %d '%s'", b->doc, ret, err, b->ret, b->msg);
		assert_null(d.doc);
	}
}

static void test_too_many(void **state)
{
	json_t *doc = load("{\"name\": \"a\", " K "}");
	json_t *labels = json_object(), *disks = json_array();
	struct vmdef d;
	char err[512] = "";

	(void)state;
	for (int i = 0; i < VMDEF_LABELS_MAX + 1; i++) {
		char k[16];

		snprintf(k, sizeof(k), "k%d", i);
		json_object_set_new(labels, k, json_string("v"));
	}
	json_object_set_new(doc, "labels", labels);
	assert_int_equal(vmdef_parse(doc, &d, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "65 labels, at most 64"));
	json_object_del(doc, "labels");
	for (int i = 0; i < 17; i++)
		json_array_append_new(disks, json_pack("{s:s}", "path", "/d"));
	json_object_set_new(doc, "disks", disks);
	assert_int_equal(vmdef_parse(doc, &d, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "17 disks, at most 16"));
	json_object_del(doc, "disks");
	{
		char *desc = malloc(VMDEF_DESCRIPTION_MAX + 2);

		memset(desc, 'x', VMDEF_DESCRIPTION_MAX + 1);
		desc[VMDEF_DESCRIPTION_MAX + 1] = 0;
		json_object_set_new(doc, "description", json_string(desc));
		free(desc);
	}
	assert_int_equal(vmdef_parse(doc, &d, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "'description'"));
	json_decref(doc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_minimal),
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_memory_forms),
		cmocka_unit_test(test_bad),
		cmocka_unit_test(test_too_many),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
