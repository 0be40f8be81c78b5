/* What a host offers, as the controller's scheduler needs it (drover.proto's
 * Inventory): CPU model, count and flags, what kind of hardware
 * virtualization KVM runs on, EPT/VPID, memory and huge pages, /dev/kvm and
 * its capabilities, load, kernel release.
 *
 * The parsers take a file's text, so that tests feed captured /proc files;
 * inventory_collect reads the real ones under a root that tests may point
 * at a directory of their own. Nothing here fails because a file is absent
 * or unexpected on this kind of host: it says "not available" or leaves the
 * value at 0, as an operator reading the inventory would want. */
#ifndef DROVER_INVENTORY_H
#define DROVER_INVENTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define INVENTORY_NOT_AVAILABLE "not available"
#define INVENTORY_MAX_KVM_CAPS 32

struct inventory {
	char cpu_model[128];
	uint32_t cpus;                 /* online logical CPUs */
	char *flags_text;              /* the "flags" line's words, NUL-separated */
	const char **cpu_flags;        /* pointers into flags_text */
	size_t ncpu_flags;
	char virt[32];                 /* "vmx", "svm", "kvm_pvm"..., or "none" */
	char ept[16];                  /* "yes", "no", INVENTORY_NOT_AVAILABLE */
	char vpid[16];
	uint64_t mem_total;            /* bytes */
	uint64_t mem_available;
	uint64_t hugepages_total;
	uint64_t hugepages_free;
	uint64_t hugepage_size;        /* bytes */
	bool kvm;                      /* /dev/kvm opens and speaks API version 12 */
	uint32_t kvm_max_vcpus;
	const char *kvm_caps[INVENTORY_MAX_KVM_CAPS];   /* static names */
	size_t nkvm_caps;
	uint32_t reserved_cpus;        /* filled by the caller (configuration) */
	uint64_t reserved_mem;
	uint32_t vcpus_used;           /* filled by the caller (running VMs) */
	uint64_t mem_used;
	double load1;
	char kernel[65];
};

/* Where inventory_collect looks; NULL members take the real paths. */
struct inventory_sources {
	const char *proc;              /* "/proc" */
	const char *sys;               /* "/sys" */
	const char *kvm_dev;           /* "/dev/kvm" */
};

void inventory_init(struct inventory *inv);
void inventory_free(struct inventory *inv);

/* /proc/cpuinfo: model, logical CPU count, the first CPU's flags.
 * -EINVAL if the text names no processor. */
int inventory_parse_cpuinfo(struct inventory *inv, const char *text);
/* /proc/meminfo: MemTotal (required: -EINVAL without it), MemAvailable,
 * HugePages_Total, HugePages_Free, Hugepagesize. */
int inventory_parse_meminfo(struct inventory *inv, const char *text);
/* /proc/loadavg: the 1-minute load. -EINVAL if it is no number. */
int inventory_parse_loadavg(const char *text, double *load1);
/* A kvm_intel/kvm_amd boolean parameter's text ("Y\n", "N", "1", "0"):
 * "yes" or "no"; text NULL (no such file): INVENTORY_NOT_AVAILABLE. */
const char *inventory_parse_bool_param(const char *text);
/* What KVM runs on: "vmx" or "svm" from the CPU flags; otherwise the name of
 * the loaded KVM vendor module (kvm_module, e.g. "kvm_pvm"), or "none". */
const char *inventory_virt(const struct inventory *inv, const char *kvm_module);
/* True if the CPU flags hold flag. */
bool inventory_has_flag(const struct inventory *inv, const char *flag);

/* Opens kvm_dev and asks KVM_CHECK_EXTENSION; leaves inv->kvm false when it
 * cannot. */
void inventory_probe_kvm(struct inventory *inv, const char *kvm_dev);

/* Everything above from the host (src may be NULL). Returns 0 even when
 * parts are missing; -ENOMEM only. */
int inventory_collect(struct inventory *inv, const struct inventory_sources *src);

#endif
