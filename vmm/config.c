/* drover-vmm's configuration from argv and from a JSON file.
 *
 * Precedence: vmm_config_from_args reads argv in three passes so that the
 * command line overrides the file wherever --config appears:
 *   1. syntax only: every argument is a known option with its value (or none);
 *      --help/--version stop here, before any value is judged;
 *   2. the --config file (the last one named), through vmm_config_from_json;
 *   3. every option's value, left to right, so a repeated option's last value
 *      wins.
 * Each setting has one setter that validates a text value; the command line
 * and the JSON file share them, so both reject the same values with the same
 * words. */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "jsonutil.h"
#include "log.h"
#include "util.h"

#define VMM_MIN_MEMORY      (1ULL << 20)   /* the kernel is loaded at 1 MiB */
#define VMM_MAX_MEMORY      (1ULL << 40)   /* 1 TiB: beyond it is a typo, not a VM */
#define VMM_MAX_CPUS        1024           /* KVM_CAP_MAX_VCPUS caps it again later */
#define VMM_MAX_NAME        64
#define CONFIG_FILE_MAX     (1 << 20)

/* Messages quote the values they reject, and a value may hold a newline or
 * an escape sequence; the message must stay one printable line. */
static void err_make_printable(char *err, size_t errlen)
{
	char out[1024];
	size_t o = 0;

	if (!err || !errlen)
		return;
	for (const unsigned char *p = (const unsigned char *)err; *p && o + 5 < sizeof(out); p++) {
		if (*p < 0x20 || *p == 0x7f)
			o += (size_t)snprintf(out + o, sizeof(out) - o, "\\x%02x", *p);
		else
			out[o++] = (char)*p;
	}
	out[o] = '\0';
	snprintf(err, errlen, "%s", out);
}

static void disk_free(struct vmm_disk *d)
{
	free(d->path);
	free(d->format);
	free(d->serial);
	free(d->id);
	memset(d, 0, sizeof(*d));
}

void vmm_config_init(struct vmm_config *cfg)
{
	/* Allocates nothing, so calling it twice leaks nothing; the default
	 * name is filled in once parsing is done. */
	memset(cfg, 0, sizeof(*cfg));
	cfg->memory = VMM_DEFAULT_MEMORY;
	cfg->cpus = 1;
	cfg->serial = SERIAL_STDIO;
	cfg->on_reboot = ON_REBOOT_RESET;
	cfg->boot_protocol = BOOT_AUTO;
	cfg->log_level = LOG_INFO;
}

void vmm_config_free(struct vmm_config *cfg)
{
	free(cfg->name);
	free(cfg->kernel);
	free(cfg->initrd);
	free(cfg->cmdline);
	free(cfg->serial_path);
	free(cfg->control);
	free(cfg->cpu_features);
	for (unsigned i = 0; i < cfg->ndisks; i++)
		disk_free(&cfg->disks[i]);
	vmm_config_init(cfg);
}

static int fill_defaults(struct vmm_config *cfg)
{
	if (!cfg->name) {
		cfg->name = strdup("vm");
		if (!cfg->name)
			return -ENOMEM;
	}
	return 0;
}

/* ---- setters: validate one text value; msg gets the complaint without the
 * option's name, which the caller prefixes. ---- */

typedef int (*setter_fn)(struct vmm_config *cfg, const char *val, char *msg, size_t msglen);

static int replace_str(char **slot, const char *val)
{
	char *copy = strdup(val);

	if (!copy)
		return -ENOMEM;
	free(*slot);
	*slot = copy;
	return 0;
}

static int set_path(char **slot, const char *val, char *msg, size_t msglen)
{
	if (!*val) {
		errf(msg, msglen, "empty path");
		return -EINVAL;
	}
	return replace_str(slot, val);
}

static int set_kernel(struct vmm_config *cfg, const char *val, char *msg, size_t msglen)
{
	return set_path(&cfg->kernel, val, msg, msglen);
}

static int set_initrd(struct vmm_config *cfg, const char *val, char *msg, size_t msglen)
{
	return set_path(&cfg->initrd, val, msg, msglen);
}

static int set_cmdline(struct vmm_config *cfg, const char *val, char *msg, size_t msglen)
{
	size_t len = strlen(val);

	if (len > VMM_MAX_CMDLINE) {
		errf(msg, msglen, "%zu bytes long, at most %d allowed", len, VMM_MAX_CMDLINE);
		return -EINVAL;
	}
	return replace_str(&cfg->cmdline, val);
}

static int check_memory(uint64_t bytes, const char *val, char *msg, size_t msglen)
{
	if (bytes == 0) {
		errf(msg, msglen, "'%s' is zero; a VM needs memory", val);
		return -EINVAL;
	}
	if (bytes < VMM_MIN_MEMORY) {
		errf(msg, msglen, "'%s' is below the minimum of 1M", val);
		return -EINVAL;
	}
	if (bytes > VMM_MAX_MEMORY) {
		errf(msg, msglen, "'%s' is above the maximum of 1T", val);
		return -EINVAL;
	}
	if (bytes % 4096) {
		errf(msg, msglen, "'%s' is not a multiple of 4K", val);
		return -EINVAL;
	}
	return 0;
}

static int set_memory(struct vmm_config *cfg, const char *val, char *msg, size_t msglen)
{
	uint64_t bytes;
	int ret = parse_size(val, MiB, &bytes);

	if (ret == -ERANGE) {
		errf(msg, msglen, "'%s' is above the maximum of 1T", val);
		return -EINVAL;
	}
	if (ret < 0) {
		errf(msg, msglen, "'%s' is not a size (use 512M, 2G...)", val);
		return -EINVAL;
	}
	ret = check_memory(bytes, val, msg, msglen);
	if (ret < 0)
		return ret;
	cfg->memory = bytes;
	return 0;
}

static int set_cpus(struct vmm_config *cfg, const char *val, char *msg, size_t msglen)
{
	uint64_t n;
	int ret = parse_uint(val, 1, VMM_MAX_CPUS, &n);

	if (ret == -ERANGE) {
		errf(msg, msglen, "'%s' out of range 1..%d", val, VMM_MAX_CPUS);
		return -EINVAL;
	}
	if (ret < 0) {
		errf(msg, msglen, "'%s' is not a number", val);
		return -EINVAL;
	}
	cfg->cpus = (unsigned)n;
	return 0;
}

static int set_serial(struct vmm_config *cfg, const char *val, char *msg, size_t msglen)
{
	static const struct { const char *prefix; enum serial_mode mode; } kinds[] = {
		{ "file:", SERIAL_FILE }, { "unix:", SERIAL_UNIX },
	};
	int ret;

	if (!strcmp(val, "stdio") || !strcmp(val, "none")) {
		cfg->serial = !strcmp(val, "stdio") ? SERIAL_STDIO : SERIAL_NONE;
		free(cfg->serial_path);
		cfg->serial_path = NULL;
		return 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(kinds); i++) {
		size_t plen = strlen(kinds[i].prefix);

		if (strncmp(val, kinds[i].prefix, plen))
			continue;
		if (!val[plen]) {
			errf(msg, msglen, "'%s' has an empty path", val);
			return -EINVAL;
		}
		ret = replace_str(&cfg->serial_path, val + plen);
		if (ret < 0)
			return ret;
		cfg->serial = kinds[i].mode;
		return 0;
	}
	errf(msg, msglen, "'%s' is not one of stdio, file:PATH, unix:PATH, none", val);
	return -EINVAL;
}

static int set_control(struct vmm_config *cfg, const char *val, char *msg, size_t msglen)
{
	size_t max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;

	if (strlen(val) > max) {
		errf(msg, msglen, "'%s' is longer than a unix socket path can be (%zu bytes)",
		     val, max);
		return -EINVAL;
	}
	return set_path(&cfg->control, val, msg, msglen);
}

static int set_name(struct vmm_config *cfg, const char *val, char *msg, size_t msglen)
{
	size_t len = strlen(val);

	if (!len || len > VMM_MAX_NAME) {
		errf(msg, msglen, "'%s' must be 1 to %d characters long", val, VMM_MAX_NAME);
		return -EINVAL;
	}
	/* The name shows up in logs and process listings, one line each. */
	for (const unsigned char *p = (const unsigned char *)val; *p; p++) {
		if (*p < 0x20 || *p == 0x7f) {
			errf(msg, msglen, "'%s' contains a control character", val);
			return -EINVAL;
		}
	}
	return replace_str(&cfg->name, val);
}

static int set_cpu_features(struct vmm_config *cfg, const char *val, char *msg, size_t msglen)
{
	/* The feature names are judged by cpuid_mask_parse, which knows them;
	 * here only the list's shape. */
	if (!*val) {
		free(cfg->cpu_features);
		cfg->cpu_features = NULL;
		return 0;
	}
	if (val[0] == ',' || val[strlen(val) - 1] == ',' || strstr(val, ",,")) {
		errf(msg, msglen, "'%s' has an empty item", val);
		return -EINVAL;
	}
	return replace_str(&cfg->cpu_features, val);
}

struct keyword {
	const char *word;
	int value;
};

static int set_keyword(int *out, const struct keyword *kw, size_t n, const char *val,
		       const char *choices, char *msg, size_t msglen)
{
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(kw[i].word, val)) {
			*out = kw[i].value;
			return 0;
		}
	}
	errf(msg, msglen, "'%s' is not one of %s", val, choices);
	return -EINVAL;
}

static int set_on_reboot(struct vmm_config *cfg, const char *val, char *msg, size_t msglen)
{
	static const struct keyword kw[] = {
		{ "reset", ON_REBOOT_RESET }, { "exit", ON_REBOOT_EXIT },
	};
	int v, ret = set_keyword(&v, kw, ARRAY_SIZE(kw), val, "reset, exit", msg, msglen);

	if (!ret)
		cfg->on_reboot = (enum on_reboot)v;
	return ret;
}

static int set_boot_protocol(struct vmm_config *cfg, const char *val, char *msg, size_t msglen)
{
	static const struct keyword kw[] = {
		{ "auto", BOOT_AUTO }, { "pvh", BOOT_PVH }, { "linux64", BOOT_LINUX64 },
	};
	int v, ret = set_keyword(&v, kw, ARRAY_SIZE(kw), val, "auto, pvh, linux64", msg, msglen);

	if (!ret)
		cfg->boot_protocol = (enum boot_protocol)v;
	return ret;
}

static int set_log_level(struct vmm_config *cfg, const char *val, char *msg, size_t msglen)
{
	static const struct keyword kw[] = {
		{ "error", LOG_ERROR }, { "warn", LOG_WARN }, { "warning", LOG_WARN },
		{ "info", LOG_INFO }, { "debug", LOG_DEBUG },
	};

	return set_keyword(&cfg->log_level, kw, ARRAY_SIZE(kw), val,
			   "error, warn, info, debug", msg, msglen);
}


/* ---- disks ---- */

static const char *const disk_cache_names[] = {
	[DISK_CACHE_WRITEBACK] = "writeback", [DISK_CACHE_NONE] = "none",
	[DISK_CACHE_WRITETHROUGH] = "writethrough", [DISK_CACHE_UNSAFE] = "unsafe",
};

const char *vmm_disk_cache_name(enum disk_cache c)
{
	return (unsigned)c < ARRAY_SIZE(disk_cache_names) ? disk_cache_names[c] : "unknown";
}

static int set_on_off(bool *out, const char *val, char *msg, size_t msglen)
{
	if (!strcmp(val, "on") || !strcmp(val, "off")) {
		*out = !strcmp(val, "on");
		return 0;
	}
	errf(msg, msglen, "'%s' is not on or off", val);
	return -EINVAL;
}

/* An id names the disk in the control socket and in logs: a letter, then
 * letters, digits, '-', '_' or '.'. */
static int check_disk_id(const char *val, char *msg, size_t msglen)
{
	size_t len = strlen(val);

	if (!len || len > VMM_DISK_ID_MAX) {
		errf(msg, msglen, "'%s' must be 1 to %d characters long", val, VMM_DISK_ID_MAX);
		return -EINVAL;
	}
	if (!((val[0] >= 'a' && val[0] <= 'z') || (val[0] >= 'A' && val[0] <= 'Z'))) {
		errf(msg, msglen, "'%s' must start with a letter", val);
		return -EINVAL;
	}
	for (const char *p = val; *p; p++) {
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.", *p)) {
			errf(msg, msglen, "'%s' may hold only letters, digits, '-', '_' and '.'", val);
			return -EINVAL;
		}
	}
	return 0;
}

static int check_disk_serial(const char *val, char *msg, size_t msglen)
{
	if (strlen(val) > VMM_DISK_SERIAL_MAX) {
		errf(msg, msglen, "'%s' is longer than the %d bytes a virtio-blk serial holds",
		     val, VMM_DISK_SERIAL_MAX);
		return -EINVAL;
	}
	for (const unsigned char *p = (const unsigned char *)val; *p; p++) {
		if (*p < 0x20 || *p > 0x7e) {
			errf(msg, msglen, "'%s' holds a character that is not printable ASCII", val);
			return -EINVAL;
		}
	}
	return 0;
}

static const char disk_keys[] = "path, format, cache, snapshot, readonly, serial, id, queues";
static const char *const disk_key_names[] = {
	"path", "format", "cache", "snapshot", "readonly", "serial", "id", "queues",
};

/* The position of key in disk_key_names, or -1. */
static int disk_key_index(const char *key)
{
	for (size_t i = 0; i < ARRAY_SIZE(disk_key_names); i++)
		if (!strcmp(disk_key_names[i], key))
			return (int)i;
	return -1;
}

/* One key of a disk, as text; msg gets "KEY: complaint". */
static int disk_set(struct vmm_disk *d, const char *key, const char *val, char *msg,
		    size_t msglen)
{
	static const struct keyword formats[] = { { "raw", 0 }, { "qcow2", 1 } };
	static const struct keyword caches[] = {
		{ "none", DISK_CACHE_NONE }, { "writeback", DISK_CACHE_WRITEBACK },
		{ "writethrough", DISK_CACHE_WRITETHROUGH }, { "unsafe", DISK_CACHE_UNSAFE },
	};
	char sub[384];
	uint64_t n;
	int v, ret;

	if (!strcmp(key, "path")) {
		ret = set_path(&d->path, val, sub, sizeof(sub));
	} else if (!strcmp(key, "format")) {
		ret = set_keyword(&v, formats, ARRAY_SIZE(formats), val, "raw, qcow2", sub,
				  sizeof(sub));
		if (!ret)
			ret = replace_str(&d->format, val);
	} else if (!strcmp(key, "cache")) {
		ret = set_keyword(&v, caches, ARRAY_SIZE(caches), val,
				  "none, writeback, writethrough, unsafe", sub, sizeof(sub));
		if (!ret)
			d->cache = (enum disk_cache)v;
	} else if (!strcmp(key, "snapshot")) {
		ret = set_on_off(&d->snapshot, val, sub, sizeof(sub));
	} else if (!strcmp(key, "readonly")) {
		ret = set_on_off(&d->readonly, val, sub, sizeof(sub));
	} else if (!strcmp(key, "serial")) {
		ret = check_disk_serial(val, sub, sizeof(sub));
		if (!ret)
			ret = replace_str(&d->serial, val);
	} else if (!strcmp(key, "id")) {
		ret = check_disk_id(val, sub, sizeof(sub));
		if (!ret)
			ret = replace_str(&d->id, val);
	} else if (!strcmp(key, "queues")) {
		ret = parse_uint(val, 1, VMM_MAX_DISK_QUEUES, &n);
		if (ret < 0) {
			errf(sub, sizeof(sub), "'%s' is not a number in 1..%d", val,
			     VMM_MAX_DISK_QUEUES);
			ret = -EINVAL;
		} else {
			d->queues = (unsigned)n;
		}
	} else {
		errf(msg, msglen, "unknown key '%s' (known: %s)", key, disk_keys);
		return -EINVAL;
	}
	if (ret == -EINVAL)
		errf(msg, msglen, "%s: %s", key, sub);
	else if (ret < 0)
		errf(msg, msglen, "%s: %s", key, strerror(-ret));
	return ret;
}

static void disk_defaults(struct vmm_disk *d)
{
	memset(d, 0, sizeof(*d));
	d->cache = DISK_CACHE_WRITEBACK;
	d->queues = 1;
}

/* "disk 1 ('data')": how messages name disk i, by id, else by path. */
static void disk_label(const char *id, const char *path, unsigned i, char *buf, size_t len)
{
	if (id)
		snprintf(buf, len, "disk %u ('%s')", i, id);
	else if (path)
		snprintf(buf, len, "disk %u ('%s')", i, path);
	else
		snprintf(buf, len, "disk %u", i);
}

/* Once every disk is in: default ids, no id twice, a path each. */
static int disks_finish(struct vmm_config *cfg, char *msg, size_t msglen)
{
	char label[VMM_DISK_ID_MAX + 64];

	for (unsigned i = 0; i < cfg->ndisks; i++) {
		struct vmm_disk *d = &cfg->disks[i];

		disk_label(d->id, d->path, i, label, sizeof(label));
		if (!d->path) {
			errf(msg, msglen, "%s: path is missing (path=FILE)", label);
			return -EINVAL;
		}
		if (!d->id) {
			char id[16];

			snprintf(id, sizeof(id), "disk%u", i);
			if (replace_str(&d->id, id) < 0)
				return -ENOMEM;
		}
	}
	for (unsigned i = 0; i < cfg->ndisks; i++) {
		for (unsigned j = 0; j < i; j++) {
			if (strcmp(cfg->disks[i].id, cfg->disks[j].id))
				continue;
			errf(msg, msglen, "disk %u and disk %u are both called '%s' (id=)", j, i,
			     cfg->disks[i].id);
			return -EINVAL;
		}
	}
	return 0;
}

/* One --disk value: KEY=VALUE items separated by ',' (",," is a comma
 * inside a value, as with QEMU). */
static int set_disk(struct vmm_config *cfg, const char *val, char *msg, size_t msglen)
{
	unsigned index = cfg->ndisks, nitems = 0, seen_keys = 0;
	struct { char *key, *val; } items[16];
	char label[600], sub[512], *buf, *w;
	const char *id = NULL, *path = NULL;
	struct vmm_disk *d;
	int ret = 0;

	if (index == VMM_MAX_DISKS) {
		errf(msg, msglen, "'%s': at most %d disks", val, VMM_MAX_DISKS);
		return -EINVAL;
	}
	buf = malloc(strlen(val) + 1);
	if (!buf)
		return -ENOMEM;
	/* Split in place: unescape ",," and cut at single commas. */
	w = buf;
	items[0].key = w;
	for (const char *p = val;; p++) {
		if (*p == ',' && p[1] == ',') {
			*w++ = ',';
			p++;
			continue;
		}
		if (*p && *p != ',') {
			*w++ = *p;
			continue;
		}
		*w++ = '\0';
		items[nitems].val = strchr(items[nitems].key, '=');
		if (!items[nitems].val) {
			errf(msg, msglen, "disk %u: '%s' is not KEY=VALUE (keys: %s)", index,
			     items[nitems].key, disk_keys);
			ret = -EINVAL;
			goto out;
		}
		*items[nitems].val++ = '\0';
		if (!strcmp(items[nitems].key, "id"))
			id = items[nitems].val;
		else if (!strcmp(items[nitems].key, "path"))
			path = items[nitems].val;
		nitems++;
		if (!*p)
			break;
		if (nitems == ARRAY_SIZE(items)) {
			errf(msg, msglen, "disk %u: '%s' has too many items (at most %zu)", index,
			     val, ARRAY_SIZE(items));
			ret = -EINVAL;
			goto out;
		}
		items[nitems].key = w;
	}
	disk_label(id, path, index, label, sizeof(label));
	d = &cfg->disks[index];
	disk_defaults(d);
	for (unsigned i = 0; i < nitems; i++) {
		int k = disk_key_index(items[i].key);

		if (k >= 0 && (seen_keys & (1u << k))) {
			errf(msg, msglen, "%s: %s is given twice", label, items[i].key);
			ret = -EINVAL;
			break;
		}
		if (k >= 0)
			seen_keys |= 1u << k;
		ret = disk_set(d, items[i].key, items[i].val, sub, sizeof(sub));
		if (ret < 0) {
			errf(msg, msglen, "%s: %s", label, sub);
			break;
		}
	}
	if (!ret && !d->path) {
		errf(msg, msglen, "%s: path is missing (path=FILE)", label);
		ret = -EINVAL;
	}
	if (ret < 0)
		disk_free(d);
	else
		cfg->ndisks++;
out:
	free(buf);
	return ret;
}

/* ---- the command line ---- */

enum opt_id {
	OPT_KERNEL, OPT_INITRD, OPT_CMDLINE, OPT_MEMORY, OPT_CPUS, OPT_SERIAL,
	OPT_CONTROL, OPT_NAME, OPT_CPU_FEATURES, OPT_ON_REBOOT, OPT_BOOT_PROTOCOL,
	OPT_LOG_LEVEL, OPT_DISK, OPT_CONFIG, OPT_HELP, OPT_VERSION,
};

struct option_def {
	const char *name;       /* without the leading "--" */
	enum opt_id id;
	setter_fn set;          /* NULL: handled by from_args itself */
	bool takes_value;
};

static const struct option_def options[] = {
	{ "kernel",        OPT_KERNEL,        set_kernel,        true },
	{ "initrd",        OPT_INITRD,        set_initrd,        true },
	{ "cmdline",       OPT_CMDLINE,       set_cmdline,       true },
	{ "memory",        OPT_MEMORY,        set_memory,        true },
	{ "cpus",          OPT_CPUS,          set_cpus,          true },
	{ "serial",        OPT_SERIAL,        set_serial,        true },
	{ "control",       OPT_CONTROL,       set_control,       true },
	{ "name",          OPT_NAME,          set_name,          true },
	{ "cpu-features",  OPT_CPU_FEATURES,  set_cpu_features,  true },
	{ "on-reboot",     OPT_ON_REBOOT,     set_on_reboot,     true },
	{ "boot-protocol", OPT_BOOT_PROTOCOL, set_boot_protocol, true },
	{ "log-level",     OPT_LOG_LEVEL,     set_log_level,     true },
	{ "disk",          OPT_DISK,          set_disk,          true },
	{ "config",        OPT_CONFIG,        NULL,              true },
	{ "help",          OPT_HELP,          NULL,              false },
	{ "version",       OPT_VERSION,       NULL,              false },
};

/* Exact match only: no abbreviations, so a new option never changes what an
 * old command line means. */
static const struct option_def *option_find(const char *arg, size_t len)
{
	for (size_t i = 0; i < ARRAY_SIZE(options); i++) {
		if (strlen(options[i].name) == len && !strncmp(options[i].name, arg, len))
			return &options[i];
	}
	return NULL;
}

/* "--memory" or "--memory=..." naming a known option. */
static bool looks_like_option(const char *arg)
{
	if (strncmp(arg, "--", 2))
		return false;
	arg += 2;
	return option_find(arg, strcspn(arg, "=")) != NULL;
}

struct parsed_opt {
	const struct option_def *def;
	const char *value;
};

/* Pass 1: syntax. Fills opts (at most argc entries) and *nopts. */
static int args_scan(int argc, char **argv, struct parsed_opt *opts, int *nopts,
		     char *err, size_t errlen)
{
	int n = 0;

	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i], *eq;
		const struct option_def *def;
		const char *value = NULL;
		size_t len;

		if (!strcmp(arg, "-h"))
			arg = "--help";
		if (strncmp(arg, "--", 2) || !arg[2]) {
			errf(err, errlen, arg[0] == '-' ? "unknown option '%s'"
				: "unexpected argument '%s' (every setting is an option, see --help)",
			     arg);
			return -EINVAL;
		}
		eq = strchr(arg + 2, '=');
		len = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
		def = option_find(arg + 2, len);
		if (!def) {
			errf(err, errlen, "unknown option '%.*s'", (int)(len + 2), arg);
			return -EINVAL;
		}
		if (!def->takes_value) {
			if (eq) {
				errf(err, errlen, "option '--%s' takes no value", def->name);
				return -EINVAL;
			}
		} else if (eq) {
			value = eq + 1;
		} else {
			/* "--kernel --memory 1G" is a forgotten value, not a kernel
			 * called "--memory"; --kernel=--memory still says the latter. */
			if (i + 1 >= argc || looks_like_option(argv[i + 1])) {
				errf(err, errlen, "option '--%s' needs a value", def->name);
				return -EINVAL;
			}
			value = argv[++i];
		}
		opts[n].def = def;
		opts[n].value = value;
		n++;
	}
	*nopts = n;
	return 0;
}

static int config_file_load(struct vmm_config *cfg, const char *path, char *err, size_t errlen)
{
	void *data;
	size_t len;
	int ret;

	if (!*path) {
		errf(err, errlen, "--config: empty path");
		return -EINVAL;
	}
	ret = read_file(path, CONFIG_FILE_MAX, &data, &len);
	if (ret == -EFBIG) {
		errf(err, errlen, "%s: larger than the 1 MiB a config file may be", path);
		return -EINVAL;
	}
	if (ret < 0) {
		errf(err, errlen, "--config: cannot read '%s': %s", path, strerror(-ret));
		return ret;
	}
	ret = vmm_config_from_json(cfg, data, len, path, err, errlen);
	free(data);
	return ret;
}

int vmm_config_from_args(struct vmm_config *cfg, int argc, char **argv, char *err, size_t errlen)
{
	char msg[512];
	struct parsed_opt *opts;
	const char *config_path = NULL;
	int nopts, ret;

	vmm_config_init(cfg);
	errf(err, errlen, "%s", "");
	opts = calloc(argc > 0 ? (size_t)argc : 1, sizeof(*opts));
	if (!opts) {
		errf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	ret = args_scan(argc, argv, opts, &nopts, err, errlen);
	if (ret < 0)
		goto out;

	for (int i = 0; i < nopts; i++) {
		if (opts[i].def->id == OPT_HELP)
			cfg->show_help = 1;
		else if (opts[i].def->id == OPT_VERSION)
			cfg->show_version = 1;
		else if (opts[i].def->id == OPT_CONFIG)
			config_path = opts[i].value;
	}
	if (cfg->show_help || cfg->show_version)
		goto out;

	if (config_path) {
		ret = config_file_load(cfg, config_path, err, errlen);
		if (ret < 0)
			goto out;
	}

	/* Disks on the command line replace the file's list as a whole. */
	for (int i = 0; i < nopts; i++) {
		if (opts[i].def->id != OPT_DISK)
			continue;
		for (unsigned k = 0; k < cfg->ndisks; k++)
			disk_free(&cfg->disks[k]);
		cfg->ndisks = 0;
		break;
	}
	for (int i = 0; i < nopts; i++) {
		const struct option_def *def = opts[i].def;

		if (!def->set)
			continue;
		ret = def->set(cfg, opts[i].value, msg, sizeof(msg));
		if (ret == -EINVAL)
			errf(err, errlen, "--%s: %s", def->name, msg);
		else if (ret < 0)
			errf(err, errlen, "--%s: %s", def->name, strerror(-ret));
		if (ret < 0)
			goto out;
	}

	ret = disks_finish(cfg, msg, sizeof(msg));
	if (ret < 0) {
		errf(err, errlen, "--disk: %s", msg);
		goto out;
	}
	if (!cfg->kernel) {
		errf(err, errlen, "--kernel is required (or \"boot\": {\"kernel\": ...} in a "
		     "--config file)");
		ret = -EINVAL;
		goto out;
	}
out:
	free(opts);
	if (!ret)
		ret = fill_defaults(cfg);
	else
		err_make_printable(err, errlen);
	return ret;
}

/* ---- the JSON file ---- */

struct json_ctx {
	struct vmm_config *cfg;
	const char *what;       /* the file, for messages */
	char *err;
	size_t errlen;
	unsigned seen;          /* bit per opt_id set by this document */
};

static int cfg_json_wrong_type(struct json_ctx *jc, const char *key, const char *expected,
			   const json_t *v)
{
	errf(jc->err, jc->errlen, "%s: '%s' must be %s, not %s", jc->what, key, expected,
	     json_type_name(v));
	return -EINVAL;
}

static int cfg_json_apply(struct json_ctx *jc, const char *key, const struct option_def *def,
		      const char *val)
{
	char msg[512];
	int ret;

	/* "cpus" and "vcpus", "kernel" and "boot.kernel": one document, one
	 * value per setting. */
	if (jc->seen & (1u << def->id)) {
		errf(jc->err, jc->errlen, "%s: '%s' sets %s a second time", jc->what, key,
		     def->name);
		return -EINVAL;
	}
	jc->seen |= 1u << def->id;
	ret = def->set(jc->cfg, val, msg, sizeof(msg));
	if (ret == -EINVAL)
		errf(jc->err, jc->errlen, "%s: '%s': %s", jc->what, key, msg);
	else if (ret < 0)
		errf(jc->err, jc->errlen, "%s: '%s': %s", jc->what, key, strerror(-ret));
	return ret;
}

static int cfg_json_string(struct json_ctx *jc, const char *key, const struct option_def *def,
		       const json_t *v)
{
	if (!json_is_string(v))
		return cfg_json_wrong_type(jc, key, "a string", v);
	if (strlen(json_string_value(v)) != json_string_length(v)) {
		errf(jc->err, jc->errlen, "%s: '%s' contains a NUL character", jc->what, key);
		return -EINVAL;
	}
	return cfg_json_apply(jc, key, def, json_string_value(v));
}

static int cfg_json_memory(struct json_ctx *jc, const char *key, const struct option_def *def,
		       const json_t *v)
{
	char num[32];
	json_int_t mib;

	if (json_is_string(v))
		return cfg_json_string(jc, key, def, v);
	if (!json_is_integer(v))
		return cfg_json_wrong_type(jc, key, "a size string (\"512M\") or an integer (MiB)", v);
	mib = json_integer_value(v);
	if (mib < 0) {
		errf(jc->err, jc->errlen, "%s: '%s': %" JSON_INTEGER_FORMAT " is negative",
		     jc->what, key, mib);
		return -EINVAL;
	}
	snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, mib);
	return cfg_json_apply(jc, key, def, num);
}

static int cfg_json_cpus(struct json_ctx *jc, const char *key, const struct option_def *def,
		     const json_t *v)
{
	char num[32];

	if (!json_is_integer(v))
		return cfg_json_wrong_type(jc, key, "an integer", v);
	snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
	if (json_integer_value(v) < 0) {
		errf(jc->err, jc->errlen, "%s: '%s': '%s' out of range 1..%d", jc->what, key,
		     num, VMM_MAX_CPUS);
		return -EINVAL;
	}
	return cfg_json_apply(jc, key, def, num);
}

static int cfg_json_features(struct json_ctx *jc, const char *key, const struct option_def *def,
			 const json_t *v)
{
	const char *expected = "a string or an array of strings";
	size_t i, len = 1;
	json_t *item;
	char *joined;
	int ret;

	if (json_is_string(v))
		return cfg_json_string(jc, key, def, v);
	if (!json_is_array(v))
		return cfg_json_wrong_type(jc, key, expected, v);
	json_array_foreach(v, i, item) {
		if (!json_is_string(item)) {
			errf(jc->err, jc->errlen, "%s: '%s[%zu]' must be a string, not %s",
			     jc->what, key, i, json_type_name(item));
			return -EINVAL;
		}
		if (!json_string_length(item) || strchr(json_string_value(item), ',')) {
			errf(jc->err, jc->errlen, "%s: '%s[%zu]': '%s' is not one feature",
			     jc->what, key, i, json_string_value(item));
			return -EINVAL;
		}
		len += json_string_length(item) + 1;
	}
	joined = calloc(1, len);
	if (!joined)
		return -ENOMEM;
	json_array_foreach(v, i, item) {
		if (i)
			strcat(joined, ",");
		strcat(joined, json_string_value(item));
	}
	ret = cfg_json_apply(jc, key, def, joined);
	free(joined);
	return ret;
}

static int cfg_json_empty_array(struct json_ctx *jc, const char *key, const json_t *v)
{
	if (!json_is_array(v))
		return cfg_json_wrong_type(jc, key, "an array", v);
	if (json_array_size(v)) {
		errf(jc->err, jc->errlen, "%s: '%s': not supported yet (drover-vmm has no such "
		     "devices yet; leave the array empty)", jc->what, key);
		return -EINVAL;
	}
	return 0;
}

/* "disks": [{"path": ..., "format": ..., "snapshot": true, "queues": 4}, ...] */
static int cfg_json_disks(struct json_ctx *jc, const char *key, const json_t *v)
{
	size_t i;
	json_t *item;

	if (!json_is_array(v))
		return cfg_json_wrong_type(jc, key, "an array of objects", v);
	if (json_array_size(v) > VMM_MAX_DISKS) {
		errf(jc->err, jc->errlen, "%s: '%s': %zu disks, at most %d", jc->what, key,
		     json_array_size(v), VMM_MAX_DISKS);
		return -EINVAL;
	}
	for (unsigned k = 0; k < jc->cfg->ndisks; k++)
		disk_free(&jc->cfg->disks[k]);
	jc->cfg->ndisks = 0;
	json_array_foreach(v, i, item) {
		struct vmm_disk *d = &jc->cfg->disks[i];
		const char *dk;
		json_t *dv;
		char path[300];

		snprintf(path, sizeof(path), "%s[%zu]", key, i);
		if (!json_is_object(item))
			return cfg_json_wrong_type(jc, path, "an object", item);
		disk_defaults(d);
		jc->cfg->ndisks++;
		json_object_foreach(item, dk, dv) {
			char text[32], msg[512], where[400];
			const char *val = text;
			bool is_bool = !strcmp(dk, "snapshot") || !strcmp(dk, "readonly");
			int ret;

			snprintf(where, sizeof(where), "%s.%s", path, dk);
			if (disk_key_index(dk) < 0) {
				errf(jc->err, jc->errlen, "%s: unknown key '%s' (in '%s'; known: %s)",
				     jc->what, dk, path, disk_keys);
				return -EINVAL;
			}
			if (is_bool) {
				if (!json_is_boolean(dv))
					return cfg_json_wrong_type(jc, where, "a boolean", dv);
				val = json_is_true(dv) ? "on" : "off";
			} else if (!strcmp(dk, "queues")) {
				if (!json_is_integer(dv))
					return cfg_json_wrong_type(jc, where, "an integer", dv);
				snprintf(text, sizeof(text), "%" JSON_INTEGER_FORMAT,
					 json_integer_value(dv));
			} else {
				if (!json_is_string(dv))
					return cfg_json_wrong_type(jc, where, "a string", dv);
				if (strlen(json_string_value(dv)) != json_string_length(dv)) {
					errf(jc->err, jc->errlen, "%s: '%s' contains a NUL character",
					     jc->what, where);
					return -EINVAL;
				}
				val = json_string_value(dv);
			}
			ret = disk_set(d, dk, val, msg, sizeof(msg));
			if (ret < 0) {
				/* msg is "KEY: complaint"; the path names the key. */
				const char *why = strchr(msg, ':');

				errf(jc->err, jc->errlen, "%s: '%s': %s", jc->what, where,
				     why ? why + 2 : msg);
				return ret;
			}
		}
	}
	return 0;
}

static int cfg_json_labels(struct json_ctx *jc, const char *key, const json_t *v)
{
	const char *label;
	json_t *value;

	if (!json_is_object(v))
		return cfg_json_wrong_type(jc, key, "an object of strings", v);
	json_object_foreach((json_t *)v, label, value) {
		if (!json_is_string(value)) {
			errf(jc->err, jc->errlen, "%s: '%s.%s' must be a string, not %s",
			     jc->what, key, label, json_type_name(value));
			return -EINVAL;
		}
	}
	return 0;
}

enum json_kind {
	JK_STRING, JK_MEMORY, JK_CPUS, JK_FEATURES, JK_BOOT,
	JK_EMPTY_ARRAY, JK_DISKS, JK_LABELS, JK_IGNORED_STRING, JK_IGNORED_OBJECT,
	JK_IGNORED_BOOL,
};

struct json_key {
	const char *key;
	enum json_kind kind;
	enum opt_id opt;
};

/* Top level: the command line's names, then the definition's own. Keys the
 * VMM has no use for yet are checked for shape and otherwise ignored:
 * "placement" is the scheduler's business, "id" and "start" the
 * controller's. */
static const struct json_key top_keys[] = {
	{ "kernel",        JK_STRING,   OPT_KERNEL },
	{ "initrd",        JK_STRING,   OPT_INITRD },
	{ "cmdline",       JK_STRING,   OPT_CMDLINE },
	{ "memory",        JK_MEMORY,   OPT_MEMORY },
	{ "cpus",          JK_CPUS,     OPT_CPUS },
	{ "vcpus",         JK_CPUS,     OPT_CPUS },
	{ "serial",        JK_STRING,   OPT_SERIAL },
	{ "control",       JK_STRING,   OPT_CONTROL },
	{ "name",          JK_STRING,   OPT_NAME },
	{ "cpu-features",  JK_FEATURES, OPT_CPU_FEATURES },
	{ "on-reboot",     JK_STRING,   OPT_ON_REBOOT },
	{ "boot-protocol", JK_STRING,   OPT_BOOT_PROTOCOL },
	{ "log-level",     JK_STRING,   OPT_LOG_LEVEL },
	{ "boot",          JK_BOOT,     0 },
	{ "disks",         JK_DISKS,    0 },
	{ "nics",          JK_EMPTY_ARRAY, 0 },
	{ "labels",        JK_LABELS,   0 },
	{ "description",   JK_IGNORED_STRING, 0 },
	{ "id",            JK_IGNORED_STRING, 0 },
	{ "placement",     JK_IGNORED_OBJECT, 0 },
	{ "start",         JK_IGNORED_BOOL, 0 },
};

static const struct json_key boot_keys[] = {
	{ "kernel",   JK_STRING, OPT_KERNEL },
	{ "initrd",   JK_STRING, OPT_INITRD },
	{ "cmdline",  JK_STRING, OPT_CMDLINE },
	{ "protocol", JK_STRING, OPT_BOOT_PROTOCOL },
};

static const struct option_def *option_by_id(enum opt_id id)
{
	for (size_t i = 0; i < ARRAY_SIZE(options); i++) {
		if (options[i].id == id)
			return &options[i];
	}
	return NULL;
}

static int cfg_json_object_apply(struct json_ctx *jc, const json_t *obj, const char *where,
			     const struct json_key *keys, size_t nkeys);

static int cfg_json_key_apply(struct json_ctx *jc, const struct json_key *k, const char *path,
			  const json_t *v)
{
	const struct option_def *def = option_by_id(k->opt);

	switch (k->kind) {
	case JK_STRING:
		return cfg_json_string(jc, path, def, v);
	case JK_MEMORY:
		return cfg_json_memory(jc, path, def, v);
	case JK_CPUS:
		return cfg_json_cpus(jc, path, def, v);
	case JK_FEATURES:
		return cfg_json_features(jc, path, def, v);
	case JK_BOOT:
		if (!json_is_object(v))
			return cfg_json_wrong_type(jc, path, "an object", v);
		return cfg_json_object_apply(jc, v, "boot", boot_keys, ARRAY_SIZE(boot_keys));
	case JK_EMPTY_ARRAY:
		return cfg_json_empty_array(jc, path, v);
	case JK_DISKS:
		return cfg_json_disks(jc, path, v);
	case JK_LABELS:
		return cfg_json_labels(jc, path, v);
	case JK_IGNORED_STRING:
		return json_is_string(v) ? 0 : cfg_json_wrong_type(jc, path, "a string", v);
	case JK_IGNORED_OBJECT:
		return json_is_object(v) ? 0 : cfg_json_wrong_type(jc, path, "an object", v);
	case JK_IGNORED_BOOL:
		return json_is_boolean(v) ? 0 : cfg_json_wrong_type(jc, path, "true or false", v);
	}
	return -EINVAL;
}

/* where: NULL at top level, else the enclosing key ("boot"). */
static int cfg_json_object_apply(struct json_ctx *jc, const json_t *obj, const char *where,
			     const struct json_key *keys, size_t nkeys)
{
	const char *key;
	json_t *v;

	json_object_foreach((json_t *)obj, key, v) {
		const struct json_key *k = NULL;
		char path[256];
		int ret;

		for (size_t i = 0; i < nkeys && !k; i++) {
			if (!strcmp(keys[i].key, key))
				k = &keys[i];
		}
		if (!k) {
			if (where)
				errf(jc->err, jc->errlen, "%s: unknown key '%s' (in '%s')",
				     jc->what, key, where);
			else
				errf(jc->err, jc->errlen, "%s: unknown key '%s' (at top level)",
				     jc->what, key);
			return -EINVAL;
		}
		if (where)
			snprintf(path, sizeof(path), "%s.%s", where, key);
		else
			snprintf(path, sizeof(path), "%s", key);
		ret = cfg_json_key_apply(jc, k, path, v);
		if (ret < 0)
			return ret;
	}
	return 0;
}

int vmm_config_from_json(struct vmm_config *cfg, const char *json, size_t len,
			 const char *what, char *err, size_t errlen)
{
	struct json_ctx jc = { .cfg = cfg, .what = what, .err = err, .errlen = errlen };
	json_error_t jerr;
	json_t *doc;
	int ret;

	if (len > CONFIG_FILE_MAX) {
		errf(err, errlen, "%s: larger than the 1 MiB a config file may be", what);
		return -EINVAL;
	}
	doc = json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!doc) {
		errf(err, errlen, "%s: line %d column %d: %s", what, jerr.line, jerr.column,
		     jerr.text);
		err_make_printable(err, errlen);
		return -EINVAL;
	}
	if (!json_is_object(doc)) {
		errf(err, errlen, "%s: the document must be a JSON object, not %s", what,
		     json_type_name(doc));
		ret = -EINVAL;
	} else {
		ret = cfg_json_object_apply(&jc, doc, NULL, top_keys, ARRAY_SIZE(top_keys));
	}
	json_decref(doc);
	if (!ret) {
		char msg[512];

		ret = disks_finish(cfg, msg, sizeof(msg));
		if (ret == -EINVAL)
			errf(err, errlen, "%s: 'disks': %s", what, msg);
	}
	if (!ret)
		ret = fill_defaults(cfg);
	else
		err_make_printable(err, errlen);
	return ret;
}

const char *vmm_config_usage(void)
{
	return
"usage: drover-vmm --kernel FILE [options]\n"
"       drover-vmm --config vm.json [options]\n"
"\n"
"Runs one KVM virtual machine until its guest powers off.\n"
"\n"
"Options (--opt VALUE and --opt=VALUE both work; if an option is given twice,\n"
"the last one wins; options are matched exactly, never abbreviated):\n"
"  --kernel FILE           guest kernel: ELF with a PVH note, or bzImage (required)\n"
"  --initrd FILE           initial ramdisk (default: none)\n"
"  --cmdline STR           kernel command line, at most 65535 bytes (default: empty)\n"
"  --memory SIZE           guest RAM: 512M, 2G, 1048576K...; a bare number is MiB;\n"
"                          1M to 1T, a multiple of 4K (default: 512M)\n"
"  --cpus N                vCPUs, 1..1024, and no more than KVM allows (default: 1)\n"
"  --serial MODE           COM1: stdio, file:PATH, unix:PATH or none (default: stdio)\n"
"  --control PATH          control socket (QMP-style JSON lines) (default: none)\n"
"  --name NAME             VM name for logs, 1..64 characters (default: vm)\n"
"  --cpu-features LIST     CPUID changes, e.g. -xsave,-cx16,+x2apic (default: none)\n"
"  --on-reboot ACTION      on guest reset: reset (reboot in place) or exit\n"
"                          (default: reset)\n"
"  --boot-protocol P       auto, pvh or linux64 (default: auto: PVH if the kernel\n"
"                          has a PVH note, else the 64-bit Linux boot protocol)\n"
"  --log-level LEVEL       error, warn, info or debug (default: info)\n"
"  --disk KEY=VALUE,...    a virtio-blk disk (repeatable, up to 16; PCI slots 1, 2...):\n"
"                          path=FILE (required), format=raw|qcow2 (default: probed),\n"
"                          cache=none|writeback|writethrough|unsafe (writeback),\n"
"                          snapshot=on|off (off: on sends writes to a temporary\n"
"                          overlay), readonly=on|off (off), serial=ID (up to 20\n"
"                          characters), id=NAME (disk0, disk1...), queues=N (1..16,\n"
"                          default 1); ',,' is a comma inside a value\n"
"  --config FILE           read settings from a JSON file (at most 1 MiB); options\n"
"                          on the command line override it wherever they appear\n"
"  --help, -h              print this text and exit\n"
"  --version               print the version and exit\n"
"\n"
"An option's value may not itself look like an option (--kernel --memory is\n"
"taken as a missing value); write --cmdline=--foo for such a value.\n"
"\n"
"--config FILE is one JSON object. It takes the options' names as keys\n"
"(\"memory\" a string like \"512M\" or an integer in MiB, \"cpus\" an integer,\n"
"\"cpu-features\" a string or an array of strings, the rest strings), and the\n"
"VM definition that the controller and the drover CLI use:\n"
"  {\"name\": \"web1\", \"vcpus\": 2, \"memory\": \"1G\",\n"
"   \"boot\": {\"kernel\": \"vmlinux\", \"initrd\": \"initrd.img\",\n"
"            \"cmdline\": \"console=ttyS0\", \"protocol\": \"pvh\"},\n"
"   \"disks\": [{\"path\": \"/srv/web1.qcow2\", \"format\": \"qcow2\", \"cache\": \"none\",\n"
"              \"readonly\": false, \"queues\": 2}],\n"
"   \"nics\": [], \"labels\": {\"team\": \"web\"}, \"description\": \"...\"}\n"
"\"disks\" takes --disk's keys (\"snapshot\" and \"readonly\" booleans, \"queues\" an\n"
"integer); --disk options replace the file's disks. \"nics\" must be empty for now;\n"
"\"labels\", \"description\", \"id\" and\n"
"\"placement\" are accepted and ignored. Unknown keys are errors, and a setting\n"
"may appear only once (\"cpus\" or \"vcpus\", \"kernel\" or \"boot.kernel\").\n"
"\n"
"Exit status:\n"
"  0       the guest powered off\n"
"  1       error: bad input or a set-up failure\n"
"  2       the guest crashed (triple fault, emulation failure)\n"
"  3       the guest reset, with --on-reboot exit\n"
"  4       stopped by the control socket's quit command, or SIGTERM/SIGINT\n"
"  16+N    the guest wrote N (0..239) to the debug-exit port 0x501\n";
}
