/* The scheduler: where a VM goes, and why not elsewhere. A pure function of
 * the hosts' state and the request: no I/O, no globals, deterministic (the
 * same input gives the same host; ties go to the smaller host id), so that
 * droverd can explain a decision and tests can pin it.
 *
 * Filters, in order (a host rejected by one is not tried by the next; each
 * adds one reason sentence naming the numbers):
 *   up            the host is up (heartbeats arrive) and not in maintenance
 *   pinned        placement.host, when given, names this host
 *   vcpus         vcpus_allocated + request <= (cpus - reserved_cpus) * cpu_ratio
 *   memory        mem_allocated + request <= (mem - reserved_mem) * mem_ratio
 *   cpu_flags     every requested flag is among the host's CPU flags
 *   host_labels   every requested label key=value is on the host
 *   affinity      if VMs of the affinity group already run somewhere, only there
 *   anti_affinity no VM of the anti-affinity group on the host
 * Weighers then score the survivors: spread (most free capacity: free vCPU
 * and memory fractions, averaged) or pack (least free capacity), plus a small
 * penalty per VM already placed there so that equal hosts fill evenly.
 *
 * A request that no host could ever take (more vCPUs or memory than any
 * host's capacity even empty, a CPU flag no host has) is "impossible"
 * (HTTP 422); one that fails only because of the current load, maintenance
 * or down hosts is "not now" (HTTP 409). */
#ifndef DROVER_SCHED_H
#define DROVER_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum sched_weigher { SCHED_SPREAD, SCHED_PACK };

struct sched_policy {
	double cpu_ratio;              /* vCPU overcommit, e.g. 4.0 */
	double mem_ratio;              /* memory overcommit, e.g. 1.0 */
	enum sched_weigher weigher;
};

struct sched_label {
	const char *key, *value;
};

struct sched_host {
	const char *id;                /* stable, unique; ties are broken on it */
	const char *name;
	bool up, maintenance;
	uint32_t cpus, reserved_cpus;
	uint64_t mem, reserved_mem;    /* bytes */
	uint32_t vcpus_allocated;      /* by the VMs placed here (running or not) */
	uint64_t mem_allocated;        /* bytes */
	uint32_t vms;                  /* how many VMs are placed here */
	const char *const *cpu_flags;  /* sorted (strcmp), ncpu_flags of them */
	size_t ncpu_flags;
	const struct sched_label *labels;
	size_t nlabels;
	const char *const *groups;     /* affinity/anti-affinity groups of the VMs here */
	size_t ngroups;
};

struct sched_request {
	uint32_t vcpus;
	uint64_t mem;                  /* bytes */
	const char *pinned_host;       /* id or name, or NULL */
	const char *const *cpu_flags;
	size_t ncpu_flags;
	const struct sched_label *host_labels;
	size_t nhost_labels;
	const char *affinity_group;    /* or NULL */
	const char *anti_affinity_group;
};

#define SCHED_REASON_MAX 160

struct sched_verdict {
	bool accepted;                 /* passed every filter */
	double score;                  /* higher is better; only when accepted */
	char reason[SCHED_REASON_MAX]; /* why it was rejected, when not accepted */
};

struct sched_result {
	int chosen;                    /* index into hosts, or -1 */
	bool impossible;               /* no host could ever take it (422 rather than 409) */
	struct sched_verdict *verdicts;  /* one per host, caller-allocated, n entries */
};

/* Places req among n hosts. verdicts must have room for n entries. 0, or
 * -EINVAL for a malformed request (vcpus 0...). */
int sched_place(const struct sched_policy *p, const struct sched_host *hosts, size_t n,
		const struct sched_request *req, struct sched_result *res);

#endif
