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
 * or down hosts is "not now" (HTTP 409).
 *
 * Precisely (sched.c holds the why of each choice):
 *   - allowed vCPUs = floor((cpus - reserved_cpus) x cpu_ratio), allowed
 *     memory = floor((mem - reserved_mem) x mem_ratio); a request fits when
 *     allocated + requested <= allowed (equal is allowed).
 *   - score, for a host that passed: free = the mean of the free vCPU and
 *     free memory fractions of its allowed capacity *after* this VM;
 *     spread scores free, pack scores 1 - free; both minus SCHED_VM_PENALTY
 *     per VM already there. The highest score wins; equal scores go to the
 *     smaller id (strcmp).
 *   - impossible: no host, even empty and up, passes pinned + vcpus +
 *     memory + cpu_flags + host_labels at once (so a pinned host that does
 *     not exist is impossible too). Affinity and anti-affinity are load:
 *     never impossible. No hosts at all (n == 0) is "not now": hosts come.
 *   - malformed (-EINVAL, res->summary says what): NULL p/req/res, NULL
 *     hosts or verdicts with n > 0, vcpus or mem 0, a ratio not > 0 or not
 *     finite, an unknown weigher, NULL arrays with counts > 0, NULL or empty
 *     flags, label keys, pinned host or group names (absent is NULL, not
 *     ""), the same group for affinity and anti-affinity, a host without id.
 *     Host arrays are trusted otherwise (sorted flags...): check a host with
 *     sched_host_check() once when its inventory changes, not per placement.
 *   - no allocation, no locks; cost is O(n) plus the flags, labels and
 *     groups compared. A reason is only formatted for a rejected host. */
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

#define SCHED_SUMMARY_MAX 256
#define SCHED_VM_PENALTY 1e-5          /* score lost per VM already on a host */

struct sched_result {
	int chosen;                    /* index into hosts, or -1 */
	bool impossible;               /* no host could ever take it (422 rather than 409) */
	struct sched_verdict *verdicts;  /* one per host, caller-allocated, n entries */
	/* Added: one sentence for a person: the host chosen; why no host can
	 * take it (now or ever: the error message of a 409 or 422); or what is
	 * malformed (-EINVAL). */
	char summary[SCHED_SUMMARY_MAX];
};

/* Places req among n hosts. verdicts must have room for n entries. 0, or
 * -EINVAL for a malformed request (vcpus 0...). */
int sched_place(const struct sched_policy *p, const struct sched_host *hosts, size_t n,
		const struct sched_request *req, struct sched_result *res);

/* Added: a host's allowed capacity under policy p, as the vcpus and memory
 * filters compute it (for the API's Host.capacity). 0, or -EINVAL. */
int sched_host_capacity(const struct sched_policy *p, const struct sched_host *h,
			uint64_t *vcpus, uint64_t *mem);

/* Added: whether h keeps the contract sched_place trusts (id set, no NULL
 * strings, array pointers set where counts are not 0, cpu_flags strictly
 * sorted by strcmp). 0, or -EINVAL with a sentence in err (errlen bytes,
 * may be 0) naming the host and what is wrong. */
int sched_host_check(const struct sched_host *h, char *err, size_t errlen);

#endif
