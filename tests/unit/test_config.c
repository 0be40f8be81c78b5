/* drover-vmm's command line and --config file (vmm/config.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

#define MAX_ARGS 16

/* Renders every setting so that a case can expect "memory=1073741824". */
static void describe(const struct vmm_config *c, char *buf, size_t len)
{
	static const char *const serial[] = { "stdio", "file", "unix", "none" };
	static const char *const reboot[] = { "reset", "exit" };
	static const char *const proto[] = { "auto", "pvh", "linux64" };

	snprintf(buf, len,
		 " name=%s kernel=%s initrd=%s cmdline=%s memory=%llu cpus=%u serial=%s:%s"
		 " control=%s features=%s reboot=%s boot=%s log=%d help=%d version=%d ",
		 c->name ? c->name : "-", c->kernel ? c->kernel : "-",
		 c->initrd ? c->initrd : "-", c->cmdline ? c->cmdline : "-",
		 (unsigned long long)c->memory, c->cpus, serial[c->serial],
		 c->serial_path ? c->serial_path : "-", c->control ? c->control : "-",
		 c->cpu_features ? c->cpu_features : "-", reboot[c->on_reboot],
		 proto[c->boot_protocol], c->log_level, c->show_help, c->show_version);
}

/* argv[0] is added here; args ends at the first NULL. */
static int parse(const char *const *args, struct vmm_config *cfg, char *err, size_t errlen)
{
	char *argv[MAX_ARGS + 2] = { "drover-vmm" };
	int argc = 1;

	for (int i = 0; i < MAX_ARGS && args[i]; i++)
		argv[argc++] = (char *)args[i];
	return vmm_config_from_args(cfg, argc, argv, err, errlen);
}

/* Writes text to a fresh temporary file; returns its malloc'd path. */
static char *temp_file(const char *text, size_t len)
{
	char *path = strdup("/tmp/drover-test-config-XXXXXX");
	int fd;

	assert_non_null(path);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	close(fd);
	return path;
}

/* ---- valid command lines ---- */

struct ok_case {
	const char *args[MAX_ARGS];
	const char *expect[4];      /* substrings of describe() */
};

static const struct ok_case ok_cases[] = {
	{ { "--kernel", "vmlinux" },
	  { " name=vm ", " kernel=vmlinux ", " memory=536870912 cpus=1 serial=stdio:- ",
	    " reboot=reset boot=auto log=2 " } },
	{ { "--kernel=vmlinux" }, { " kernel=vmlinux " } },
	{ { "--kernel", "k", "--initrd", "initrd.img" }, { " initrd=initrd.img " } },
	{ { "--kernel", "k", "--initrd=i.img" }, { " initrd=i.img " } },
	{ { "--kernel", "k", "--cmdline", "console=ttyS0 quiet" },
	  { " cmdline=console=ttyS0 quiet " } },
	{ { "--kernel", "k", "--cmdline=a=b c=d" }, { " cmdline=a=b c=d " } },
	{ { "--kernel", "k", "--cmdline=--not-an-option" }, { " cmdline=--not-an-option " } },
	{ { "--kernel", "k", "--cmdline", "" }, { " cmdline= " } },
	{ { "--kernel", "k", "--memory", "1G" }, { " memory=1073741824 " } },
	{ { "--kernel", "k", "--memory=1024" }, { " memory=1073741824 " } },
	{ { "--kernel", "k", "--memory", "2048M" }, { " memory=2147483648 " } },
	{ { "--kernel", "k", "--memory", "2048MiB" }, { " memory=2147483648 " } },
	{ { "--kernel", "k", "--memory", "2GB" }, { " memory=2147483648 " } },
	{ { "--kernel", "k", "--memory", "2g" }, { " memory=2147483648 " } },
	{ { "--kernel", "k", "--memory", "65536K" }, { " memory=67108864 " } },
	{ { "--kernel", "k", "--memory", "65536KiB" }, { " memory=67108864 " } },
	{ { "--kernel", "k", "--memory", "1048576B" }, { " memory=1048576 " } },
	{ { "--kernel", "k", "--memory", "1" }, { " memory=1048576 " } },
	{ { "--kernel", "k", "--memory", "1T" }, { " memory=1099511627776 " } },
	{ { "--kernel", "k", "--memory", "1TiB" }, { " memory=1099511627776 " } },
	{ { "--kernel", "k", "--cpus", "1" }, { " cpus=1 " } },
	{ { "--kernel", "k", "--cpus=8" }, { " cpus=8 " } },
	{ { "--kernel", "k", "--cpus", "1024" }, { " cpus=1024 " } },
	{ { "--kernel", "k", "--serial", "stdio" }, { " serial=stdio:- " } },
	{ { "--kernel", "k", "--serial", "none" }, { " serial=none:- " } },
	{ { "--kernel", "k", "--serial", "file:/tmp/console.log" },
	  { " serial=file:/tmp/console.log " } },
	{ { "--kernel", "k", "--serial=unix:/run/vm/serial.sock" },
	  { " serial=unix:/run/vm/serial.sock " } },
	{ { "--kernel", "k", "--serial", "file:a", "--serial", "none" }, { " serial=none:- " } },
	{ { "--kernel", "k", "--control", "/run/vm.sock" }, { " control=/run/vm.sock " } },
	{ { "--kernel", "k", "--name", "web-1" }, { " name=web-1 " } },
	{ { "--kernel", "k", "--name", "a name with spaces" }, { " name=a name with spaces " } },
	{ { "--kernel", "k", "--cpu-features", "-xsave,-cx16" }, { " features=-xsave,-cx16 " } },
	{ { "--kernel", "k", "--cpu-features=+x2apic" }, { " features=+x2apic " } },
	{ { "--kernel", "k", "--cpu-features", "" }, { " features=- " } },
	{ { "--kernel", "k", "--on-reboot", "exit" }, { " reboot=exit " } },
	{ { "--kernel", "k", "--on-reboot=reset" }, { " reboot=reset " } },
	{ { "--kernel", "k", "--boot-protocol", "pvh" }, { " boot=pvh " } },
	{ { "--kernel", "k", "--boot-protocol", "linux64" }, { " boot=linux64 " } },
	{ { "--kernel", "k", "--boot-protocol=auto" }, { " boot=auto " } },
	{ { "--kernel", "k", "--log-level", "error" }, { " log=0 " } },
	{ { "--kernel", "k", "--log-level", "warn" }, { " log=1 " } },
	{ { "--kernel", "k", "--log-level", "debug" }, { " log=3 " } },
	/* the last of a repeated option wins */
	{ { "--kernel", "k", "--memory", "1G", "--memory", "2G" }, { " memory=2147483648 " } },
	{ { "--kernel", "a", "--kernel", "b" }, { " kernel=b " } },
	/* --help and --version need nothing else and judge no value */
	{ { "--help" }, { " help=1 " } },
	{ { "-h" }, { " help=1 " } },
	{ { "--version" }, { " version=1 " } },
	{ { "--memory", "12X", "--help" }, { " help=1 " } },
	{ { "--config", "/nonexistent/vm.json", "--version" }, { " version=1 " } },
};

static void test_valid_options(void **state)
{
	for (size_t i = 0; i < sizeof(ok_cases) / sizeof(ok_cases[0]); i++) {
		const struct ok_case *t = &ok_cases[i];
		struct vmm_config cfg;
		char err[512], desc[1024];
		int ret = parse(t->args, &cfg, err, sizeof(err));

		describe(&cfg, desc, sizeof(desc));
		if (ret != 0)
			fail_msg("case %zu (%s ...): %d %s", i, t->args[0], ret, err);
		for (int j = 0; j < 4 && t->expect[j]; j++) {
			if (!strstr(desc, t->expect[j]))
				fail_msg("case %zu (%s %s ...): want '%s' in '%s'", i, t->args[0],
					 t->args[1] ? t->args[1] : "", t->expect[j], desc);
		}
		vmm_config_free(&cfg);
	}
}

/* ---- invalid command lines ---- */

struct bad_case {
	const char *args[MAX_ARGS];
	const char *expect[3];      /* substrings of the error */
};

static const struct bad_case bad_cases[] = {
	{ { NULL }, { "--kernel is required" } },
	{ { "--memory", "1G" }, { "--kernel is required" } },
	{ { "--foo" }, { "unknown option '--foo'" } },
	{ { "--foo=bar", "--kernel", "k" }, { "unknown option '--foo'" } },
	{ { "--kernel", "k", "-m", "1G" }, { "unknown option '-m'" } },
	{ { "--kern", "k" }, { "unknown option '--kern'" } },
	{ { "--kernel", "k", "extra" }, { "unexpected argument 'extra'" } },
	{ { "--kernel", "k", "--" }, { "'--'" } },
	{ { "--kernel" }, { "option '--kernel' needs a value" } },
	{ { "--kernel", "k", "--memory" }, { "option '--memory' needs a value" } },
	{ { "--kernel", "--memory", "1G" }, { "option '--kernel' needs a value" } },
	{ { "--kernel", "k", "--cmdline", "--cpus=2" }, { "option '--cmdline' needs a value" } },
	{ { "--kernel", "k", "--help=yes" }, { "'--help' takes no value" } },
	{ { "--kernel", "" }, { "--kernel", "empty" } },
	{ { "--kernel=" }, { "--kernel", "empty" } },
	{ { "--kernel", "k", "--initrd", "" }, { "--initrd", "empty" } },
	{ { "--kernel", "k", "--memory", "12X" },
	  { "--memory: '12X' is not a size (use 512M, 2G...)" } },
	{ { "--kernel", "k", "--memory", "0" }, { "--memory", "'0'" } },
	{ { "--kernel", "k", "--memory", "0G" }, { "--memory", "'0G'" } },
	{ { "--kernel", "k", "--memory", "-1G" }, { "--memory", "'-1G'", "not a size" } },
	{ { "--kernel", "k", "--memory", "" }, { "--memory", "''", "not a size" } },
	{ { "--kernel", "k", "--memory", "1.5G" }, { "--memory", "'1.5G'", "not a size" } },
	{ { "--kernel", "k", "--memory", "1GG" }, { "--memory", "'1GG'", "not a size" } },
	{ { "--kernel", "k", "--memory", "1 G" }, { "--memory", "'1 G'", "not a size" } },
	{ { "--kernel", "k", "--memory", "2T" }, { "--memory", "'2T'", "maximum of 1T" } },
	{ { "--kernel", "k", "--memory", "1025G" }, { "--memory", "'1025G'", "maximum" } },
	{ { "--kernel", "k", "--memory", "99999999999999999999" },
	  { "--memory", "'99999999999999999999'", "maximum" } },
	{ { "--kernel", "k", "--memory", "17179869184T" }, { "--memory", "maximum" } },
	{ { "--kernel", "k", "--memory", "512K" }, { "--memory", "'512K'", "minimum" } },
	{ { "--kernel", "k", "--memory", "1048577B" }, { "--memory", "'1048577B'", "4K" } },
	{ { "--kernel", "k", "--cpus", "0" }, { "--cpus: '0' out of range 1..1024" } },
	{ { "--kernel", "k", "--cpus", "1025" }, { "--cpus: '1025' out of range 1..1024" } },
	{ { "--kernel", "k", "--cpus", "-1" }, { "--cpus", "'-1'" } },
	{ { "--kernel", "k", "--cpus", "two" }, { "--cpus", "'two'", "not a number" } },
	{ { "--kernel", "k", "--cpus", "2x" }, { "--cpus", "'2x'" } },
	{ { "--kernel", "k", "--cpus", "" }, { "--cpus", "''" } },
	{ { "--kernel", "k", "--serial", "tty" },
	  { "--serial", "'tty'", "stdio, file:PATH, unix:PATH, none" } },
	{ { "--kernel", "k", "--serial", "file:" }, { "--serial", "'file:'", "empty path" } },
	{ { "--kernel", "k", "--serial", "unix:" }, { "--serial", "'unix:'" } },
	{ { "--kernel", "k", "--serial", "STDIO" }, { "--serial", "'STDIO'" } },
	{ { "--kernel", "k", "--control", "" }, { "--control", "empty" } },
	{ { "--kernel", "k", "--control",
	    "/tmp/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock" },
	  { "--control", "longer than a unix socket path" } },
	{ { "--kernel", "k", "--name", "" }, { "--name", "''" } },
	{ { "--kernel", "k", "--name",
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" },
	  { "--name", "1 to 64" } },
	{ { "--kernel", "k", "--name", "a\nb" }, { "--name: 'a\\x0ab' contains a control character" } },
	{ { "--kernel", "k", "--cpu-features", "-xsave,,-cx16" },
	  { "--cpu-features", "'-xsave,,-cx16'", "empty item" } },
	{ { "--kernel", "k", "--cpu-features", "-xsave," }, { "--cpu-features", "empty item" } },
	{ { "--kernel", "k", "--on-reboot", "halt" }, { "--on-reboot", "'halt'", "reset, exit" } },
	{ { "--kernel", "k", "--boot-protocol", "bios" },
	  { "--boot-protocol", "'bios'", "auto, pvh, linux64" } },
	{ { "--kernel", "k", "--log-level", "verbose" },
	  { "--log-level", "'verbose'", "error, warn, info, debug" } },
	{ { "--kernel", "k", "--config", "" }, { "--config", "empty" } },
	/* the first bad value in order is the one reported */
	{ { "--kernel", "k", "--cpus", "0", "--memory", "12X" }, { "--cpus" } },
};

static void test_invalid_options(void **state)
{
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const struct bad_case *t = &bad_cases[i];
		struct vmm_config cfg;
		char err[512] = "";
		int ret = parse(t->args, &cfg, err, sizeof(err));

		if (ret != -EINVAL)
			fail_msg("case %zu (%s %s): want -EINVAL, got %d", i,
				 t->args[0] ? t->args[0] : "", t->args[1] ? t->args[1] : "", ret);
		if (strchr(err, '\n'))
			fail_msg("case %zu: error is not one line: '%s'", i, err);
		for (int j = 0; j < 3 && t->expect[j]; j++) {
			if (!strstr(err, t->expect[j]))
				fail_msg("case %zu: want '%s' in '%s'", i, t->expect[j], err);
		}
		vmm_config_free(&cfg);
	}
}

static void test_cmdline_length(void **state)
{
	char *line = malloc(VMM_MAX_CMDLINE + 2);
	struct vmm_config cfg;
	char err[512];
	const char *args[] = { "--kernel", "k", "--cmdline", line, NULL };

	assert_non_null(line);
	memset(line, 'x', VMM_MAX_CMDLINE);
	line[VMM_MAX_CMDLINE] = '\0';
	assert_int_equal(parse(args, &cfg, err, sizeof(err)), 0);
	assert_int_equal(strlen(cfg.cmdline), VMM_MAX_CMDLINE);
	vmm_config_free(&cfg);

	line[VMM_MAX_CMDLINE] = 'x';
	line[VMM_MAX_CMDLINE + 1] = '\0';
	assert_int_equal(parse(args, &cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "--cmdline"));
	assert_non_null(strstr(err, "65536 bytes"));
	vmm_config_free(&cfg);
	free(line);
}

static void test_usage_text(void **state)
{
	const char *u = vmm_config_usage();
	static const char *const wanted[] = {
		"--kernel", "--initrd", "--cmdline", "--memory", "--cpus", "--serial",
		"--control", "--name", "--cpu-features", "--on-reboot", "--boot-protocol",
		"--log-level", "--config", "--help", "--version",
		"default: 512M", "default: stdio", "default: vm", "default: reset",
		"default: auto", "default: info", "last one wins", "vcpus", "\"boot\"",
		"16+N", "0x501", "SIGTERM",
	};

	for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++) {
		if (!strstr(u, wanted[i]))
			fail_msg("usage lacks '%s'", wanted[i]);
	}
	/* every exit status has its line */
	for (int s = 0; s <= 4; s++) {
		char line[8];

		snprintf(line, sizeof(line), "\n  %d ", s);
		if (!strstr(u, line))
			fail_msg("usage lacks exit status %d", s);
	}
}

/* ---- the JSON file ---- */

struct json_ok_case {
	const char *json;
	const char *expect[4];
};

static const struct json_ok_case json_ok_cases[] = {
	/* flat: the options' own names */
	{ "{\"kernel\": \"vmlinux\", \"initrd\": \"i\", \"cmdline\": \"quiet\", "
	  "\"memory\": \"1G\", \"cpus\": 4, \"serial\": \"file:/tmp/s\", "
	  "\"control\": \"/tmp/c.sock\", \"name\": \"web\", \"cpu-features\": \"-xsave\", "
	  "\"on-reboot\": \"exit\", \"boot-protocol\": \"pvh\", \"log-level\": \"debug\"}",
	  { " name=web kernel=vmlinux initrd=i cmdline=quiet memory=1073741824 cpus=4 "
	    "serial=file:/tmp/s control=/tmp/c.sock features=-xsave reboot=exit boot=pvh "
	    "log=3 " } },
	{ "{\"kernel\": \"k\", \"memory\": 2048}", { " memory=2147483648 " } },
	{ "{\"kernel\": \"k\", \"memory\": \"256\"}", { " memory=268435456 " } },
	{ "{\"kernel\": \"k\", \"cpu-features\": [\"-xsave\", \"-cx16\", \"+x2apic\"]}",
	  { " features=-xsave,-cx16,+x2apic " } },
	{ "{\"kernel\": \"k\", \"cpu-features\": []}", { " features=- " } },
	/* the controller's VM definition */
	{ "{\"name\": \"db1\", \"vcpus\": 2, \"memory\": \"4G\", \"boot\": {\"kernel\": "
	  "\"/img/vmlinux\", \"initrd\": \"/img/initrd\", \"cmdline\": \"console=ttyS0\", "
	  "\"protocol\": \"linux64\"}, \"disks\": [], \"nics\": [], \"labels\": {\"team\": "
	  "\"db\"}, \"description\": \"the database\", \"id\": \"3f2a\", \"placement\": "
	  "{\"host\": \"h1\"}}",
	  { " name=db1 kernel=/img/vmlinux initrd=/img/initrd cmdline=console=ttyS0 "
	    "memory=4294967296 cpus=2 ", " boot=linux64 " } },
	{ "{\"boot\": {\"kernel\": \"k\"}}", { " kernel=k ", " name=vm " } },
	{ "{\"boot\": {\"kernel\": \"k\"}, \"labels\": {}}", { " kernel=k " } },
	{ "  \n{\"kernel\": \"k\"}\n\n", { " kernel=k " } },
};

static void test_json_valid(void **state)
{
	for (size_t i = 0; i < sizeof(json_ok_cases) / sizeof(json_ok_cases[0]); i++) {
		const struct json_ok_case *t = &json_ok_cases[i];
		struct vmm_config cfg;
		char err[512], desc[1024];
		int ret;

		vmm_config_init(&cfg);
		ret = vmm_config_from_json(&cfg, t->json, strlen(t->json), "vm.json", err,
					   sizeof(err));
		if (ret)
			fail_msg("case %zu: %d %s", i, ret, err);
		describe(&cfg, desc, sizeof(desc));
		for (int j = 0; j < 4 && t->expect[j]; j++) {
			if (!strstr(desc, t->expect[j]))
				fail_msg("case %zu: want '%s' in '%s'", i, t->expect[j], desc);
		}
		vmm_config_free(&cfg);
	}
}

static const struct bad_case json_bad_cases[] = {
	{ { "{\"kernel\": \"k\", \"bot\": {}}" }, { "vm.json: unknown key 'bot' (at top level)" } },
	{ { "{\"boot\": {\"kernal\": \"k\"}}" }, { "vm.json: unknown key 'kernal' (in 'boot')" } },
	{ { "{\"kernel\": 42}" }, { "vm.json: ", "'kernel' must be a string, not an integer" } },
	{ { "{\"cpus\": \"2\"}" }, { "'cpus' must be an integer, not a string" } },
	{ { "{\"vcpus\": 2.5}" }, { "'vcpus' must be an integer" } },
	{ { "{\"cpus\": 0}" }, { "'cpus'", "'0' out of range 1..1024" } },
	{ { "{\"vcpus\": -3}" }, { "'vcpus'", "out of range" } },
	{ { "{\"vcpus\": 5000}" }, { "'vcpus'", "'5000' out of range" } },
	{ { "{\"memory\": true}" }, { "'memory' must be a size string", "integer (MiB)",
				     "not a boolean" } },
	{ { "{\"memory\": \"12X\"}" }, { "vm.json: 'memory': '12X' is not a size" } },
	{ { "{\"memory\": 0}" }, { "'memory'", "'0'" } },
	{ { "{\"memory\": -512}" }, { "'memory'", "negative" } },
	{ { "{\"memory\": 2000000}" }, { "'memory'", "maximum" } },
	{ { "{\"memory\": 9223372036854775807}" }, { "'memory'", "maximum" } },
	{ { "{\"boot\": \"vmlinux\"}" }, { "'boot' must be an object, not a string" } },
	{ { "{\"boot\": {\"kernel\": null}}" }, { "'boot.kernel' must be a string, not null" } },
	{ { "{\"boot\": {\"protocol\": \"bios\"}}" }, { "'boot.protocol'", "'bios'" } },
	{ { "{\"serial\": \"tty\"}" }, { "'serial'", "'tty'" } },
	{ { "{\"on-reboot\": false}" }, { "'on-reboot' must be a string, not a boolean" } },
	{ { "{\"cpu-features\": 3}" }, { "'cpu-features' must be a string or an array" } },
	{ { "{\"cpu-features\": [\"-xsave\", 7]}" }, { "'cpu-features[1]' must be a string" } },
	{ { "{\"cpu-features\": [\"-xsave,-cx16\"]}" }, { "'cpu-features[0]'", "not one feature" } },
	{ { "{\"disks\": [{\"pool\": \"p\"}]}" }, { "unknown key 'pool' (in 'disks[0]'" } },
	{ { "{\"disks\": [{\"format\": \"raw\"}]}" },
	  { "vm.json: 'disks': disk 0: path is missing" } },
	{ { "{\"disks\": [{\"path\": \"a\", \"format\": \"vmdk\"}]}" },
	  { "'disks[0].format': 'vmdk' is not one of raw, qcow2" } },
	{ { "{\"disks\": [{\"path\": \"a\", \"readonly\": \"yes\"}]}" },
	  { "'disks[0].readonly' must be a boolean, not a string" } },
	{ { "{\"disks\": [{\"path\": \"a\", \"queues\": 0}]}" },
	  { "'disks[0].queues': '0' is not a number in 1..16" } },
	{ { "{\"disks\": [{\"path\": \"a\"}, {\"path\": \"b\", \"id\": \"disk0\"}]}" },
	  { "disk 0 and disk 1 are both called 'disk0'" } },
	{ { "{\"disks\": [3]}" }, { "'disks[0]' must be an object, not an integer" } },
	{ { "{\"nics\": [{}]}" }, { "'nics'", "not supported yet" } },
	{ { "{\"disks\": {}}" }, { "'disks' must be an array" } },
	{ { "{\"labels\": {\"a\": 1}}" }, { "'labels.a' must be a string, not an integer" } },
	{ { "{\"labels\": []}" }, { "'labels' must be an object" } },
	{ { "{\"description\": 5}" }, { "'description' must be a string" } },
	{ { "{\"id\": {}}" }, { "'id' must be a string" } },
	{ { "{\"placement\": \"h1\"}" }, { "'placement' must be an object" } },
	/* one setting, two keys */
	{ { "{\"cpus\": 2, \"vcpus\": 2}" }, { "'vcpus' sets cpus a second time" } },
	{ { "{\"kernel\": \"a\", \"boot\": {\"kernel\": \"b\"}}" },
	  { "'boot.kernel' sets kernel a second time" } },
	{ { "{\"kernel\": \"a\", \"kernel\": \"b\"}" }, { "vm.json: line 1", "duplicate" } },
	/* not JSON, or not an object */
	{ { "{\n  \"kernel\": \"k\",\n    \"memory\": ,\n}" }, { "vm.json: line 3 column " } },
	{ { "{\"kernel\": \"k\"" }, { "vm.json: line 1 column" } },
	{ { "" }, { "vm.json: line " } },
	{ { "[\"kernel\"]" }, { "vm.json: the document must be a JSON object, not an array" } },
	{ { "\"kernel\"" }, { "must be a JSON object, not a string" } },
	{ { "{\"kernel\": \"k\"} {}" }, { "vm.json: line 1 column" } },
};

static void test_json_invalid(void **state)
{
	for (size_t i = 0; i < sizeof(json_bad_cases) / sizeof(json_bad_cases[0]); i++) {
		const struct bad_case *t = &json_bad_cases[i];
		struct vmm_config cfg;
		char err[512] = "";
		int ret;

		vmm_config_init(&cfg);
		ret = vmm_config_from_json(&cfg, t->args[0], strlen(t->args[0]), "vm.json", err,
					   sizeof(err));
		if (ret != -EINVAL)
			fail_msg("case %zu (%s): want -EINVAL, got %d", i, t->args[0], ret);
		if (strchr(err, '\n'))
			fail_msg("case %zu: error is not one line: '%s'", i, err);
		for (int j = 0; j < 3 && t->expect[j]; j++) {
			if (!strstr(err, t->expect[j]))
				fail_msg("case %zu (%s): want '%s' in '%s'", i, t->args[0],
					 t->expect[j], err);
		}
		vmm_config_free(&cfg);
	}
}

/* --disk: keys, defaults, escapes, and what replaces what. */
static void test_disks(void **state)
{
	static const char *const ok[] = {
		"--kernel", "k", "--disk", "path=/a,,b.img,format=qcow2,cache=none,snapshot=on,"
		"readonly=on,serial=S-1,id=root,queues=4", "--disk", "path=/c.img", NULL,
	};
	static const struct { const char *disk, *phrase; } bad[] = {
		{ "format=raw", "--disk: disk 0: path is missing (path=FILE)" },
		{ "path=a,format=vmdk", "--disk: disk 0 ('a'): format: 'vmdk' is not one of raw, qcow2" },
		{ "path=a,id=data,cache=fast", "disk 0 ('data'): cache: 'fast' is not one of none" },
		{ "path=a,snapshot=yes", "snapshot: 'yes' is not on or off" },
		{ "path=a,queues=17", "queues: '17' is not a number in 1..16" },
		{ "path=a,serial=123456789012345678901", "longer than the 20 bytes" },
		{ "path=a,id=9lives", "id: '9lives' must start with a letter" },
		{ "path=a,bogus=1", "unknown key 'bogus'" },
		{ "path=a,path=b", "path is given twice" },
		{ "path=a,readonly", "'readonly' is not KEY=VALUE" },
		{ "path=", "path: empty path" },
		/* 17 items: one more than a disk can have (found by fuzz_config). */
		{ "path=a,a=1,b=2,c=3,d=4,e=5,f=6,g=7,h=8,i=9,j=10,k=11,l=12,m=13,n=14,o=15,p=16",
		  "has too many items (at most 16)" },
	};
	const char *args[MAX_ARGS] = { NULL };
	struct vmm_config cfg;
	char err[512], *file;
	int n = 0;

	assert_int_equal(parse(ok, &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg.ndisks, 2);
	assert_string_equal(cfg.disks[0].path, "/a,b.img");
	assert_string_equal(cfg.disks[0].format, "qcow2");
	assert_int_equal(cfg.disks[0].cache, DISK_CACHE_NONE);
	assert_true(cfg.disks[0].snapshot && cfg.disks[0].readonly);
	assert_string_equal(cfg.disks[0].serial, "S-1");
	assert_string_equal(cfg.disks[0].id, "root");
	assert_int_equal(cfg.disks[0].queues, 4);
	/* defaults */
	assert_null(cfg.disks[1].format);
	assert_int_equal(cfg.disks[1].cache, DISK_CACHE_WRITEBACK);
	assert_false(cfg.disks[1].snapshot || cfg.disks[1].readonly);
	assert_null(cfg.disks[1].serial);
	assert_string_equal(cfg.disks[1].id, "disk1");
	assert_int_equal(cfg.disks[1].queues, 1);
	vmm_config_free(&cfg);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *a[] = { "--kernel", "k", "--disk", bad[i].disk, NULL };

		assert_int_equal(parse(a, &cfg, err, sizeof(err)), -EINVAL);
		if (!strstr(err, bad[i].phrase))
			fail_msg("--disk %s: want '%s' in '%s'", bad[i].disk, bad[i].phrase, err);
		vmm_config_free(&cfg);
	}

	/* 16 disks, not 17 */
	args[n++] = "--kernel";
	args[n++] = "k";
	for (int i = 0; i < 7; i++) {
		args[n++] = "--disk";
		args[n++] = "path=x";
	}
	assert_int_equal(parse(args, &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg.ndisks, 7);
	vmm_config_free(&cfg);
	{
		char *argv[40] = { "drover-vmm", "--kernel", "k" };
		int argc = 3;

		for (int i = 0; i < 17; i++) {
			argv[argc++] = "--disk";
			argv[argc++] = "path=x";
		}
		assert_int_equal(vmm_config_from_args(&cfg, argc, argv, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "at most 16 disks"));
		vmm_config_free(&cfg);
	}

	/* --disk on the command line replaces the file's disks. */
	file = temp_file("{\"kernel\": \"k\", \"disks\": [{\"path\": \"f1\"}, {\"path\": \"f2\"}]}",
			 strlen("{\"kernel\": \"k\", \"disks\": [{\"path\": \"f1\"}, {\"path\": \"f2\"}]}"));
	{
		const char *only_file[] = { "--config", file, NULL };
		const char *both[] = { "--config", file, "--disk", "path=cli", NULL };

		assert_int_equal(parse(only_file, &cfg, err, sizeof(err)), 0);
		assert_int_equal(cfg.ndisks, 2);
		assert_string_equal(cfg.disks[1].path, "f2");
		assert_string_equal(cfg.disks[1].id, "disk1");
		vmm_config_free(&cfg);
		assert_int_equal(parse(both, &cfg, err, sizeof(err)), 0);
		assert_int_equal(cfg.ndisks, 1);
		assert_string_equal(cfg.disks[0].path, "cli");
		vmm_config_free(&cfg);
	}
	unlink(file);
	free(file);
}

static void test_json_nul_in_string(void **state)
{
	/* jansson decodes \u0000 only on request; either way the path must not
	 * silently turn into a shorter one. */
	static const char doc[] = "{\"kernel\": \"vmlinux\\u0000.bak\"}";
	struct vmm_config cfg;
	char err[512];

	vmm_config_init(&cfg);
	assert_int_equal(vmm_config_from_json(&cfg, doc, strlen(doc), "vm.json", err,
					      sizeof(err)), -EINVAL);
	assert_null(cfg.kernel);
	vmm_config_free(&cfg);
}

/* ---- the file and the command line together ---- */

static void test_config_file_precedence(void **state)
{
	static const char doc[] =
		"{\"name\": \"fromfile\", \"vcpus\": 2, \"memory\": \"1G\", "
		"\"boot\": {\"kernel\": \"file-kernel\", \"cmdline\": \"file\"}}";
	char *path = temp_file(doc, strlen(doc));
	struct {
		const char *args[MAX_ARGS];
		const char *expect[4];
	} cases[] = {
		{ { "--config", path },
		  { " name=fromfile kernel=file-kernel ", " cmdline=file memory=1073741824 cpus=2 " } },
		/* the command line wins, before and after --config alike */
		{ { "--memory", "2G", "--config", path, "--cpus", "3" },
		  { " memory=2147483648 cpus=3 ", " name=fromfile " } },
		{ { "--config", path, "--kernel", "cli-kernel", "--name=cli" },
		  { " name=cli kernel=cli-kernel ", " cmdline=file " } },
		/* the last --config is the one read */
		{ { "--config", "/nonexistent.json", "--config", path }, { " name=fromfile " } },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct vmm_config cfg;
		char err[512], desc[1024];
		int ret = parse(cases[i].args, &cfg, err, sizeof(err));

		if (ret)
			fail_msg("case %zu: %d %s", i, ret, err);
		describe(&cfg, desc, sizeof(desc));
		for (int j = 0; j < 4 && cases[i].expect[j]; j++) {
			if (!strstr(desc, cases[i].expect[j]))
				fail_msg("case %zu: want '%s' in '%s'", i, cases[i].expect[j], desc);
		}
		vmm_config_free(&cfg);
	}
	unlink(path);
	free(path);
}

static void test_config_file_errors(void **state)
{
	static const char bad[] = "{\n\"kernel\": \"k\",\n\"bot\": {}\n}\n";
	char *path = temp_file(bad, strlen(bad));
	struct vmm_config cfg;
	char err[512], want[600];
	const char *args[] = { "--config", path, NULL };
	const char *missing[] = { "--config", "/nonexistent/dir/vm.json", NULL };
	const char *nokernel[] = { "--config", NULL, NULL };
	char *empty_obj;

	/* errors in the file name the file */
	assert_int_equal(parse(args, &cfg, err, sizeof(err)), -EINVAL);
	snprintf(want, sizeof(want), "%s: unknown key 'bot' (at top level)", path);
	assert_string_equal(err, want);
	vmm_config_free(&cfg);
	unlink(path);
	free(path);

	/* a file that cannot be read: its errno, and the path */
	assert_int_equal(parse(missing, &cfg, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "/nonexistent/dir/vm.json"));
	assert_non_null(strstr(err, "No such file"));
	vmm_config_free(&cfg);

	/* a directory */
	missing[1] = "/tmp";
	assert_int_equal(parse(missing, &cfg, err, sizeof(err)), -EISDIR);
	assert_non_null(strstr(err, "'/tmp'"));
	vmm_config_free(&cfg);

	/* a file without a kernel still needs one */
	empty_obj = temp_file("{}", 2);
	nokernel[1] = empty_obj;
	assert_int_equal(parse(nokernel, &cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "--kernel is required"));
	vmm_config_free(&cfg);
	unlink(empty_obj);
	free(empty_obj);
}

static void test_config_file_too_big(void **state)
{
	size_t len = (1 << 20) + 1;
	char *doc = malloc(len);
	char *path;
	struct vmm_config cfg;
	char err[512];
	const char *args[] = { "--config", NULL, NULL };

	/* valid JSON, only too long: a whitespace-padded object */
	assert_non_null(doc);
	memset(doc, ' ', len);
	memcpy(doc, "{\"kernel\": \"k\"}", 15);
	path = temp_file(doc, len);
	args[1] = path;
	assert_int_equal(parse(args, &cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, "1 MiB"));
	vmm_config_free(&cfg);
	unlink(path);
	free(path);

	/* exactly 1 MiB is fine */
	path = temp_file(doc, len - 1);
	args[1] = path;
	assert_int_equal(parse(args, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg.kernel, "k");
	vmm_config_free(&cfg);
	unlink(path);
	free(path);

	/* and the same limit through the direct entry point */
	vmm_config_init(&cfg);
	assert_int_equal(vmm_config_from_json(&cfg, doc, len, "big.json", err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "big.json"));
	vmm_config_free(&cfg);
	free(doc);
}

static void test_json_on_top_of_config(void **state)
{
	/* from_json only changes what the document names */
	static const char doc[] = "{\"vcpus\": 3}";
	struct vmm_config cfg;
	char err[512];

	vmm_config_init(&cfg);
	cfg.memory = 64ULL << 20;
	cfg.on_reboot = ON_REBOOT_EXIT;
	assert_int_equal(vmm_config_from_json(&cfg, doc, strlen(doc), "x", err, sizeof(err)), 0);
	assert_int_equal(cfg.cpus, 3);
	assert_int_equal(cfg.memory, 64ULL << 20);
	assert_int_equal(cfg.on_reboot, ON_REBOOT_EXIT);
	assert_string_equal(cfg.name, "vm");
	vmm_config_free(&cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_options),
		cmocka_unit_test(test_invalid_options),
		cmocka_unit_test(test_cmdline_length),
		cmocka_unit_test(test_usage_text),
		cmocka_unit_test(test_json_valid),
		cmocka_unit_test(test_json_invalid),
		cmocka_unit_test(test_json_nul_in_string),
		cmocka_unit_test(test_disks),
		cmocka_unit_test(test_config_file_precedence),
		cmocka_unit_test(test_config_file_errors),
		cmocka_unit_test(test_config_file_too_big),
		cmocka_unit_test(test_json_on_top_of_config),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
