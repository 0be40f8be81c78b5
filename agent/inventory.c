#include "inventory.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "util.h"

#define PROC_FILE_MAX (4 << 20)

void inventory_init(struct inventory *inv)
{
	memset(inv, 0, sizeof(*inv));
	snprintf(inv->virt, sizeof(inv->virt), "none");
	snprintf(inv->ept, sizeof(inv->ept), INVENTORY_NOT_AVAILABLE);
	snprintf(inv->vpid, sizeof(inv->vpid), INVENTORY_NOT_AVAILABLE);
}

void inventory_free(struct inventory *inv)
{
	free(inv->flags_text);
	free(inv->cpu_flags);
	inventory_init(inv);
}

/* The value of a "key<spaces/tabs>: value" line, or NULL when line is not
 * about key. */
static const char *line_value(const char *line, const char *key)
{
	size_t n = strlen(key);

	if (strncmp(line, key, n))
		return NULL;
	line += n;
	while (*line == ' ' || *line == '\t')
		line++;
	if (*line != ':')
		return NULL;
	line++;
	while (*line == ' ' || *line == '\t')
		line++;
	return line;
}

/* Calls fn for each line (without its newline, copied so it ends in NUL). */
static void for_each_line(const char *text, void (*fn)(const char *line, void *arg), void *arg)
{
	char line[8192];

	while (text && *text) {
		const char *end = strchr(text, '\n');
		size_t n = end ? (size_t)(end - text) : strlen(text);

		if (n >= sizeof(line)) {
			/* A flags line longer than this is no cpuinfo we know. */
			n = sizeof(line) - 1;
		}
		memcpy(line, text, n);
		line[n] = 0;
		fn(line, arg);
		text = end ? end + 1 : NULL;
	}
}

struct cpuinfo_scan {
	struct inventory *inv;
	const char *flags;             /* first "flags" line, in a copy */
	char *flags_copy;
	int err;
};

static void cpuinfo_line(const char *line, void *arg)
{
	struct cpuinfo_scan *s = arg;
	const char *v;

	if (line_value(line, "processor")) {
		s->inv->cpus++;
	} else if ((v = line_value(line, "model name")) && !s->inv->cpu_model[0]) {
		snprintf(s->inv->cpu_model, sizeof(s->inv->cpu_model), "%s", v);
	} else if ((v = line_value(line, "flags")) && !s->flags_copy) {
		s->flags_copy = strdup(v);
		if (!s->flags_copy)
			s->err = -ENOMEM;
	}
}

static int split_flags(struct inventory *inv, char *text)
{
	size_t n = 0, cap = 0;
	const char **list = NULL;

	for (char *p = text; *p;) {
		while (*p == ' ' || *p == '\t')
			*p++ = 0;
		if (!*p)
			break;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			const char **l = realloc(list, cap * sizeof(*l));
			if (!l) {
				free(list);
				return -ENOMEM;
			}
			list = l;
		}
		list[n++] = p;
		while (*p && *p != ' ' && *p != '\t')
			p++;
	}
	free(inv->flags_text);
	free(inv->cpu_flags);
	inv->flags_text = text;
	inv->cpu_flags = list;
	inv->ncpu_flags = n;
	return 0;
}

int inventory_parse_cpuinfo(struct inventory *inv, const char *text)
{
	struct cpuinfo_scan s = { .inv = inv };
	int ret;

	inv->cpus = 0;
	inv->cpu_model[0] = 0;
	for_each_line(text, cpuinfo_line, &s);
	if (s.err) {
		free(s.flags_copy);
		return s.err;
	}
	if (!inv->cpus) {
		free(s.flags_copy);
		return -EINVAL;
	}
	if (!s.flags_copy)
		s.flags_copy = strdup("");
	if (!s.flags_copy)
		return -ENOMEM;
	ret = split_flags(inv, s.flags_copy);
	if (ret < 0)
		free(s.flags_copy);
	return ret;
}

bool inventory_has_flag(const struct inventory *inv, const char *flag)
{
	for (size_t i = 0; i < inv->ncpu_flags; i++) {
		if (!strcmp(inv->cpu_flags[i], flag))
			return true;
	}
	return false;
}

struct meminfo_scan {
	struct inventory *inv;
	bool have_total;
};

/* "12345 kB" -> bytes; a bare number (HugePages_*) is a count. */
static uint64_t meminfo_number(const char *v)
{
	char *end;
	unsigned long long n = strtoull(v, &end, 10);

	while (*end == ' ')
		end++;
	if (!strcmp(end, "kB"))
		return n > UINT64_MAX / 1024 ? UINT64_MAX : n * 1024;
	return n;
}

static void meminfo_line(const char *line, void *arg)
{
	struct meminfo_scan *s = arg;
	const char *v;

	if ((v = line_value(line, "MemTotal"))) {
		s->inv->mem_total = meminfo_number(v);
		s->have_total = true;
	} else if ((v = line_value(line, "MemAvailable"))) {
		s->inv->mem_available = meminfo_number(v);
	} else if ((v = line_value(line, "HugePages_Total"))) {
		s->inv->hugepages_total = meminfo_number(v);
	} else if ((v = line_value(line, "HugePages_Free"))) {
		s->inv->hugepages_free = meminfo_number(v);
	} else if ((v = line_value(line, "Hugepagesize"))) {
		s->inv->hugepage_size = meminfo_number(v);
	}
}

int inventory_parse_meminfo(struct inventory *inv, const char *text)
{
	struct meminfo_scan s = { .inv = inv };

	for_each_line(text, meminfo_line, &s);
	return s.have_total && inv->mem_total ? 0 : -EINVAL;
}

int inventory_parse_loadavg(const char *text, double *load1)
{
	char *end;
	double v;

	if (!text)
		return -EINVAL;
	errno = 0;
	v = strtod(text, &end);
	if (end == text || errno || v < 0 || (*end && *end != ' ' && *end != '\n'))
		return -EINVAL;
	*load1 = v;
	return 0;
}

const char *inventory_parse_bool_param(const char *text)
{
	if (!text)
		return INVENTORY_NOT_AVAILABLE;
	if (text[0] == 'Y' || text[0] == 'y' || text[0] == '1')
		return "yes";
	if (text[0] == 'N' || text[0] == 'n' || text[0] == '0')
		return "no";
	return INVENTORY_NOT_AVAILABLE;
}

const char *inventory_virt(const struct inventory *inv, const char *kvm_module)
{
	if (inventory_has_flag(inv, "vmx"))
		return "vmx";
	if (inventory_has_flag(inv, "svm"))
		return "svm";
	return kvm_module && *kvm_module ? kvm_module : "none";
}

/* ---- KVM ---- */

static const struct { long cap; const char *name; } kvm_caps[] = {
	{ KVM_CAP_IRQFD, "irqfd" },
	{ KVM_CAP_IOEVENTFD, "ioeventfd" },
	{ KVM_CAP_SIGNAL_MSI, "signal-msi" },
	{ KVM_CAP_IRQ_ROUTING, "irq-routing" },
	{ KVM_CAP_SPLIT_IRQCHIP, "split-irqchip" },
	{ KVM_CAP_X2APIC_API, "x2apic-api" },
	{ KVM_CAP_XSAVE, "xsave" },
	{ KVM_CAP_XCRS, "xcrs" },
	{ KVM_CAP_VCPU_EVENTS, "vcpu-events" },
	{ KVM_CAP_ADJUST_CLOCK, "adjust-clock" },
	{ KVM_CAP_KVMCLOCK_CTRL, "kvmclock-ctrl" },
	{ KVM_CAP_READONLY_MEM, "readonly-mem" },
	{ KVM_CAP_GET_MSR_FEATURES, "get-msr-features" },
	{ KVM_CAP_TSC_CONTROL, "tsc-control" },
	{ KVM_CAP_IMMEDIATE_EXIT, "immediate-exit" },
	{ KVM_CAP_DIRTY_LOG_RING, "dirty-log-ring" },
	{ KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, "manual-dirty-log-protect" },
	{ KVM_CAP_NESTED_STATE, "nested-state" },
	{ KVM_CAP_HYPERV, "hyperv" },
};

void inventory_probe_kvm(struct inventory *inv, const char *kvm_dev)
{
	int fd = open(kvm_dev ? kvm_dev : "/dev/kvm", O_RDWR | O_CLOEXEC);
	int n;

	inv->kvm = false;
	inv->kvm_max_vcpus = 0;
	inv->nkvm_caps = 0;
	if (fd < 0)
		return;
	if (ioctl(fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
		close(fd);
		return;
	}
	inv->kvm = true;
	n = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
	if (n <= 0)
		n = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	inv->kvm_max_vcpus = n > 0 ? (uint32_t)n : 0;
	for (size_t i = 0; i < ARRAY_SIZE(kvm_caps) && inv->nkvm_caps < INVENTORY_MAX_KVM_CAPS; i++) {
		if (ioctl(fd, KVM_CHECK_EXTENSION, kvm_caps[i].cap) > 0)
			inv->kvm_caps[inv->nkvm_caps++] = kvm_caps[i].name;
	}
	close(fd);
}

/* ---- the host ---- */

/* /proc files report a size of 0: read until the end, whatever stat says. */
static char *read_text(const char *root, const char *rel)
{
	char path[PATH_MAX], *text = NULL;
	size_t cap = 0, n = 0;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	for (;;) {
		ssize_t r;

		if (cap - n < 4096) {
			char *t = cap < PROC_FILE_MAX ? realloc(text, (cap ? cap * 2 : 16384) + 1) : NULL;

			if (!t)
				goto fail;
			text = t;
			cap = cap ? cap * 2 : 16384;
		}
		r = read(fd, text + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			goto fail;
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	text[n] = 0;
	return text;
fail:
	close(fd);
	free(text);
	return NULL;
}

static const char *const kvm_vendor_modules[] = { "kvm_intel", "kvm_amd", "kvm_pvm", "kvm_hv" };

int inventory_collect(struct inventory *inv, const struct inventory_sources *src)
{
	const char *proc = src && src->proc ? src->proc : "/proc";
	const char *sys = src && src->sys ? src->sys : "/sys";
	const char *module = NULL;
	char path[PATH_MAX], *text;
	struct utsname un;
	struct stat st;
	int ret;

	text = read_text(proc, "cpuinfo");
	if (text) {
		ret = inventory_parse_cpuinfo(inv, text);
		free(text);
		if (ret == -ENOMEM)
			return ret;
	}
	text = read_text(proc, "meminfo");
	if (text) {
		inventory_parse_meminfo(inv, text);
		free(text);
	}
	text = read_text(proc, "loadavg");
	if (text) {
		inventory_parse_loadavg(text, &inv->load1);
		free(text);
	}
	for (size_t i = 0; i < ARRAY_SIZE(kvm_vendor_modules) && !module; i++) {
		snprintf(path, sizeof(path), "%s/module/%s", sys, kvm_vendor_modules[i]);
		if (stat(path, &st) == 0)
			module = kvm_vendor_modules[i];
	}
	snprintf(inv->virt, sizeof(inv->virt), "%s", inventory_virt(inv, module));
	/* EPT and VPID are VT-x features; kvm_intel says whether it uses them. */
	text = read_text(sys, "module/kvm_intel/parameters/ept");
	snprintf(inv->ept, sizeof(inv->ept), "%s", inventory_parse_bool_param(text));
	free(text);
	text = read_text(sys, "module/kvm_intel/parameters/vpid");
	snprintf(inv->vpid, sizeof(inv->vpid), "%s", inventory_parse_bool_param(text));
	free(text);
	if (!src || !src->proc) {
		long online = sysconf(_SC_NPROCESSORS_ONLN);

		if (online > 0)
			inv->cpus = (uint32_t)online;
	}
	if (uname(&un) == 0)
		snprintf(inv->kernel, sizeof(inv->kernel), "%s", un.release);
	inventory_probe_kvm(inv, src ? src->kvm_dev : NULL);
	return 0;
}
