/* drover-vmm's configuration: from the command line, from a JSON file
 * (--config vm.json), or both (options given on the command line override
 * the file, wherever they appear).
 *
 * The JSON file uses the command line's names ("kernel", "initrd",
 * "cmdline", "memory", "cpus", "serial", "control", "name",
 * "cpu-features", "on-reboot", "boot-protocol", "log-level", and "disks":
 * an array of objects with --disk's keys), and also
 * accepts the VM definition document that the controller's REST API and the
 * CLI use: "vcpus" for "cpus", and "boot": {"kernel", "initrd", "cmdline",
 * "protocol"}. Unknown keys are errors. */
#ifndef DROVER_VMM_CONFIG_H
#define DROVER_VMM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum serial_mode { SERIAL_STDIO, SERIAL_FILE, SERIAL_UNIX, SERIAL_NONE };
enum on_reboot { ON_REBOOT_RESET, ON_REBOOT_EXIT };
enum boot_protocol { BOOT_AUTO, BOOT_PVH, BOOT_LINUX64 };

#define VMM_DEFAULT_MEMORY   (512ULL << 20)
#define VMM_MAX_CMDLINE      (64 * 1024 - 1)
#define VMM_MAX_DISKS        16
#define VMM_MAX_DISK_QUEUES  16
#define VMM_DISK_ID_MAX      32
#define VMM_DISK_SERIAL_MAX  20     /* virtio-blk's GET_ID string */

/* Cache modes with QEMU's meaning (blk.h's enum blk_cache, same order). */
enum disk_cache { DISK_CACHE_WRITEBACK, DISK_CACHE_NONE, DISK_CACHE_WRITETHROUGH,
		  DISK_CACHE_UNSAFE };

/* --disk path=FILE,format=raw|qcow2,cache=...,snapshot=on|off,readonly=on|off,
 *        serial=ID,id=NAME,queues=N */
struct vmm_disk {
	char *path;             /* required */
	char *format;           /* "raw" or "qcow2"; NULL: probed from the contents */
	enum disk_cache cache;  /* default writeback */
	bool snapshot;          /* writes go to a temporary overlay */
	bool readonly;
	char *serial;           /* NULL: none */
	char *id;               /* default "disk<N>", N its position from 0 */
	unsigned queues;        /* 1..VMM_MAX_DISK_QUEUES, default 1 */
};

struct vmm_config {
	char *name;             /* default "vm" */
	char *kernel;           /* required */
	char *initrd;           /* NULL: none */
	char *cmdline;          /* NULL: empty */
	uint64_t memory;        /* bytes; a bare number means MiB, as with QEMU's -m */
	unsigned cpus;          /* >= 1; the upper bound is checked against KVM later */
	enum serial_mode serial;
	char *serial_path;      /* SERIAL_FILE and SERIAL_UNIX */
	char *control;          /* control socket path or NULL */
	char *cpu_features;     /* raw spec, e.g. "-xsave,-cx16"; NULL: none */
	enum on_reboot on_reboot;
	enum boot_protocol boot_protocol;
	int log_level;          /* enum log_level; default LOG_INFO */
	unsigned ndisks;        /* --disk, repeatable, in order (PCI slots 1, 2, ...) */
	struct vmm_disk disks[VMM_MAX_DISKS];
	int show_help;          /* --help was given: print usage, exit 0 */
	int show_version;       /* --version */
};

/* Fills cfg from argv (and from the --config file if one is named). On error
 * returns -EINVAL (or -errno for an unreadable config file) and writes one
 * line naming the problem to err ("--memory: '12X' is not a size",
 * "vm.json: line 3: ...", "unknown option '--foo'"). cfg must be freed with
 * vmm_config_free in either case. */
int vmm_config_from_args(struct vmm_config *cfg, int argc, char **argv, char *err, size_t errlen);

/* Applies a JSON document (the text of a config file) on top of cfg. `what`
 * names the source in error messages. 0 or -EINVAL with err set. */
int vmm_config_from_json(struct vmm_config *cfg, const char *json, size_t len,
			 const char *what, char *err, size_t errlen);

void vmm_config_init(struct vmm_config *cfg);
void vmm_config_free(struct vmm_config *cfg);

/* The name of a cache mode ("none", "writeback", ...). */
const char *vmm_disk_cache_name(enum disk_cache c);

/* The --help text. */
const char *vmm_config_usage(void);

#endif
