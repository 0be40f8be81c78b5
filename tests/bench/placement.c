/* placement: the scheduler's speed and the shape of what it builds. A
 * simulated cluster (hosts of varied sizes, CPU generations and labels, a
 * few down or in maintenance) receives VMs one after another, each decision
 * added to the chosen host's allocation before the next, as droverd does;
 * the requests mix plain VMs, CPU flags, host labels, affinity and
 * anti-affinity groups and a few pinned hosts. Run once with spread and once
 * with pack on the same cluster and the same request sequence.
 *
 *   placement [-H HOSTS] [-n VMS] [-s SEED]      (defaults 1000, 10000, 1)
 *
 * Only sched_place is timed; the reasons for every rejected host are
 * formatted as in production. Prints decisions per second, mean, p50, p99
 * and max time per decision, per kind of request, and how evenly the hosts
 * are used at the end (per host: allocated / allowed, over hosts that are up
 * and not in maintenance). */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sched.h"

#define GiB (1ULL << 30)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Flags of four CPU generations: each one has the flags of the one before
 * and its own (names as in /proc/cpuinfo). */
static const char *const gen_flags[] = {
	"fpu", "vme", "de", "pse", "tsc", "msr", "pae", "mce", "cx8", "apic", "sep", "mtrr",
	"pge", "mca", "cmov", "pat", "pse36", "clflush", "mmx", "fxsr", "sse", "sse2", "ss",
	"ht", "syscall", "nx", "pdpe1gb", "rdtscp", "lm", "constant_tsc", "rep_good", "nopl",
	"xtopology", "cpuid", "tsc_known_freq", "pni", "pclmulqdq", "ssse3", "cx16", "pcid",
	"sse4_1", "sse4_2", "x2apic", "popcnt", "tsc_deadline_timer", "aes", "xsave", "avx",
	"f16c", "rdrand", "hypervisor", "lahf_lm", "abm", "cpuid_fault", "pti", "fsgsbase",
	"tsc_adjust", "smep", "erms", "xsaveopt", "arat", "vmx", "ept", "vpid", /* 64: gen 0 */
	"fma", "movbe", "avx2", "bmi1", "bmi2", "invpcid", "rdseed", "adx", "smap", "clflushopt",
	"xsavec", "xgetbv1", "xsaves", "3dnowprefetch", "ssbd", "ibrs", "ibpb", "stibp",
	"flush_l1d", "md_clear", /* 84: gen 1 */
	"avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl", "clwb", "pku", "ospke",
	"avx512_vnni", "arch_capabilities", "mpx", "tsc_scale", /* 96: gen 2 */
	"sha_ni", "vaes", "vpclmulqdq", "gfni", "avx512_bf16", "avx512_vbmi", "avx512_vbmi2",
	"avx512_bitalg", "avx512_vpopcntdq", "la57", "rdpid", "movdiri", "movdir64b",
	"serialize", "tsxldtrk", "amx_bf16", "amx_tile", "amx_int8", "avx_vnni", "fsrm", /* gen 3 */
};
static const size_t gen_nflags[] = { 64, 84, 96, ARRAY_SIZE(gen_flags) };
#define NGENS ARRAY_SIZE(gen_nflags)

enum kind { K_PLAIN, K_FLAGS, K_LABELS, K_AFFINITY, K_ANTI, K_PINNED, NKINDS };
static const char *const kind_names[NKINDS] = {
	"plain", "cpu_flags", "host_labels", "affinity", "anti_affinity", "pinned",
};

#define NZONES 4
#define NRACKS 50
#define NAFFINITY 400
#define NANTI 300

/* What a host's sched_host points to (droverd keeps the same in its view). */
struct sim_host {
	char id[32], name[32];
	struct sched_label labels[4];
	const char **groups;   /* distinct groups of the VMs placed here */
	size_t groups_cap;
};

struct sim_vm {
	enum kind kind;
	struct sched_request req;
	const char *flags[2];
	struct sched_label label;
};

struct bench {
	size_t nhosts, nvms;
	uint64_t seed;
	const char *gens[NGENS][ARRAY_SIZE(gen_flags)];  /* each sorted by strcmp */
	char zone_values[NZONES][8], rack_values[NRACKS][8];
	char affinity_names[NAFFINITY][16], anti_names[NANTI][16];
	struct sched_host *view;       /* what droverd passes: one array of hosts */
	struct sim_host *hosts;        /* their strings and groups, by the same index */
	struct sched_verdict *verdicts;
	struct sim_vm *vms;
	double *wall_ns, *cpu_ns;      /* time of each decision */
	double *scratch;               /* one double per host */
};

static uint64_t rng(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dULL;
}

static size_t pick(uint64_t *s, size_t n)
{
	return (size_t)(rng(s) % n);
}

static int cmp_strp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double now_ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void make_names(struct bench *b)
{
	for (size_t g = 0; g < NGENS; g++) {
		memcpy(b->gens[g], gen_flags, gen_nflags[g] * sizeof(gen_flags[0]));
		qsort(b->gens[g], gen_nflags[g], sizeof(gen_flags[0]), cmp_strp);
	}
	for (size_t i = 0; i < NZONES; i++)
		snprintf(b->zone_values[i], sizeof(b->zone_values[i]), "z%zu", i);
	for (size_t i = 0; i < NRACKS; i++)
		snprintf(b->rack_values[i], sizeof(b->rack_values[i]), "r%02zu", i);
	for (size_t i = 0; i < NAFFINITY; i++)
		snprintf(b->affinity_names[i], sizeof(b->affinity_names[i]), "aff%zu", i);
	for (size_t i = 0; i < NANTI; i++)
		snprintf(b->anti_names[i], sizeof(b->anti_names[i]), "anti%zu", i);
}

/* Hosts of 4 to 64 cores with 2 to 8 GiB per core; newer generations are
 * rarer; 1% down, 1% in maintenance. */
static void make_hosts(struct bench *b, uint64_t *s)
{
	static const uint32_t cpus[] = { 4, 8, 8, 16, 16, 16, 24, 32, 32, 48, 64 };
	static const uint64_t gib_per_cpu[] = { 2, 4, 4, 8 };
	static const unsigned gen_weights[] = { 30, 35, 25, 10 };

	for (size_t i = 0; i < b->nhosts; i++) {
		struct sim_host *sh = &b->hosts[i];
		struct sched_host *h = &b->view[i];
		unsigned w = (unsigned)pick(s, 100), g = 0;
		size_t nl = 0;

		while (w >= gen_weights[g]) {
			w -= gen_weights[g];
			g++;
		}
		snprintf(sh->id, sizeof(sh->id), "%08zx-host", (size_t)((i * 2654435761u) & 0xffffffffu));
		snprintf(sh->name, sizeof(sh->name), "node%04zu", i);
		memset(h, 0, sizeof(*h));
		h->id = sh->id;
		h->name = sh->name;
		h->up = pick(s, 100) != 0;
		h->maintenance = pick(s, 100) == 0;
		h->cpus = cpus[pick(s, ARRAY_SIZE(cpus))];
		h->reserved_cpus = h->cpus >= 16 ? 2 : 1;
		h->mem = h->cpus * gib_per_cpu[pick(s, ARRAY_SIZE(gib_per_cpu))] * GiB;
		h->reserved_mem = (h->mem >= 64 * GiB ? 4 : 1) * GiB;
		h->cpu_flags = b->gens[g];
		h->ncpu_flags = gen_nflags[g];
		sh->labels[nl++] = (struct sched_label){ "zone", b->zone_values[pick(s, NZONES)] };
		sh->labels[nl++] = (struct sched_label){ "rack", b->rack_values[pick(s, NRACKS)] };
		if (pick(s, 2))
			sh->labels[nl++] = (struct sched_label){ "ssd", "yes" };
		if (pick(s, 20) == 0)
			sh->labels[nl++] = (struct sched_label){ "gpu", "yes" };
		h->labels = sh->labels;
		h->nlabels = nl;
	}
}

/* 50% plain, 15% flags, 13% labels, 10% affinity, 10% anti-affinity, 2%
 * pinned; sizes weighted to small VMs as clouds see them. */
static void make_vms(struct bench *b, uint64_t *s)
{
	static const uint32_t vcpus[] = { 1, 1, 1, 2, 2, 2, 2, 4, 4, 8 };
	static const uint64_t mem_gib[] = { 1, 1, 2, 2, 2, 4, 4, 4, 8, 16 };
	static const char *const wanted_flags[] = { "avx2", "aes", "avx512f", "sha_ni", "vaes",
						    "amx_tile" };
	static const char *const labels_ssd_gpu[] = { "ssd", "gpu" };

	for (size_t i = 0; i < b->nvms; i++) {
		struct sim_vm *vm = &b->vms[i];
		struct sched_request *r = &vm->req;
		unsigned k = (unsigned)pick(s, 100);
		size_t size = pick(s, ARRAY_SIZE(vcpus));

		memset(r, 0, sizeof(*r));
		r->vcpus = vcpus[size];
		r->mem = mem_gib[pick(s, ARRAY_SIZE(mem_gib))] * GiB;
		if (k < 50) {
			vm->kind = K_PLAIN;
		} else if (k < 65) {
			vm->kind = K_FLAGS;
			vm->flags[0] = wanted_flags[pick(s, ARRAY_SIZE(wanted_flags))];
			vm->flags[1] = wanted_flags[pick(s, 3)];
			r->cpu_flags = vm->flags;
			r->ncpu_flags = vm->flags[0] == vm->flags[1] ? 1 : 2;
		} else if (k < 78) {
			vm->kind = K_LABELS;
			if (pick(s, 2))
				vm->label = (struct sched_label){ "zone", b->zone_values[pick(s, NZONES)] };
			else
				vm->label = (struct sched_label){ labels_ssd_gpu[pick(s, 4) == 0], "yes" };
			r->host_labels = &vm->label;
			r->nhost_labels = 1;
		} else if (k < 88) {
			vm->kind = K_AFFINITY;
			r->affinity_group = b->affinity_names[pick(s, NAFFINITY)];
		} else if (k < 98) {
			vm->kind = K_ANTI;
			r->anti_affinity_group = b->anti_names[pick(s, NANTI)];
		} else {
			vm->kind = K_PINNED;
			r->pinned_host = b->hosts[pick(s, b->nhosts)].name;
		}
	}
}

static void reset_allocations(struct bench *b)
{
	for (size_t i = 0; i < b->nhosts; i++) {
		struct sched_host *h = &b->view[i];

		h->vcpus_allocated = 0;
		h->mem_allocated = 0;
		h->vms = 0;
		h->ngroups = 0;
		h->groups = b->hosts[i].groups;
	}
}

/* What droverd records after a decision (outside the timed call). */
static int commit_vm(struct sched_host *h, struct sim_host *sh, const struct sched_request *r)
{
	const char *group = r->affinity_group ? r->affinity_group : r->anti_affinity_group;

	h->vcpus_allocated += r->vcpus;
	h->mem_allocated += r->mem;
	h->vms++;
	if (!group)
		return 0;
	for (size_t i = 0; i < h->ngroups; i++)
		if (h->groups[i] == group)
			return 0;
	if (h->ngroups == sh->groups_cap) {
		size_t cap = sh->groups_cap ? 2 * sh->groups_cap : 4;
		const char **g = realloc(sh->groups, cap * sizeof(*g));

		if (!g)
			return -ENOMEM;
		sh->groups = g;
		sh->groups_cap = cap;
	}
	sh->groups[h->ngroups++] = group;
	h->groups = sh->groups;
	return 0;
}

/* Per-host usage (allocated / allowed) over hosts that are up and out of
 * maintenance, and the whole cluster's (sum allocated / sum allowed). */
struct spread_stats {
	double mean, sd, min, p10, p90, max, cluster;
};

enum usage_of { USE_MEM, USE_VCPUS, USE_BOTH };

/* USE_BOTH: the mean of the two fractions, what the weighers balance. */
static struct spread_stats usage(const struct bench *b, const struct sched_policy *p,
				 enum usage_of what)
{
	struct spread_stats st = { 0 };
	double sum = 0, sum2 = 0, alloc = 0, allowed = 0;
	size_t n = 0;

	for (size_t i = 0; i < b->nhosts; i++) {
		const struct sched_host *h = &b->view[i];
		uint64_t av, am;

		if (!h->up || h->maintenance || sched_host_capacity(p, h, &av, &am))
			continue;
		double um = (double)h->mem_allocated / (double)am;
		double uv = (double)h->vcpus_allocated / (double)av;
		double u = what == USE_MEM ? um : what == USE_VCPUS ? uv : (um + uv) / 2;
		sum += u;
		sum2 += u * u;
		alloc += what == USE_MEM ? (double)h->mem_allocated : h->vcpus_allocated;
		allowed += what == USE_MEM ? (double)am : (double)av;
		b->scratch[n++] = u;
	}
	if (!n)
		return st;
	qsort(b->scratch, n, sizeof(b->scratch[0]), cmp_double);
	st.mean = sum / n;
	st.sd = sqrt(fmax(0, sum2 / n - st.mean * st.mean));
	st.min = b->scratch[0];
	st.p10 = b->scratch[n / 10];
	st.p90 = b->scratch[n * 9 / 10];
	st.max = b->scratch[n - 1];
	st.cluster = what == USE_BOTH ? NAN : alloc / allowed;
	return st;
}

static void print_usage(const char *what, struct spread_stats st)
{
	char cluster[16] = "     -";

	if (!isnan(st.cluster))
		snprintf(cluster, sizeof(cluster), "%5.1f%%", st.cluster * 100);
	printf("%-6s used: cluster %s; per host mean %5.1f%% sd %4.1f pts, "
	       "min %5.1f%% p10 %5.1f%% p90 %5.1f%% max %5.1f%%\n",
	       what, cluster, st.mean * 100, st.sd * 100, st.min * 100, st.p10 * 100,
	       st.p90 * 100, st.max * 100);
}

/* Mean, p50, p99 and max of n times in ns, sorted in place. */
static void print_times(const char *what, double *ns, size_t n)
{
	double total = 0;

	for (size_t i = 0; i < n; i++)
		total += ns[i];
	qsort(ns, n, sizeof(ns[0]), cmp_double);
	printf("%-11s %9.0f/s   mean %6.1f us   p50 %6.1f us   p99 %6.1f us   max %7.1f us\n",
	       what, n / (total / 1e9), total / n / 1e3, ns[n / 2] / 1e3,
	       ns[(size_t)(n * 0.99)] / 1e3, ns[n - 1] / 1e3);
}

static int run(struct bench *b, const struct sched_policy *p, const char *title)
{
	size_t placed = 0, not_now = 0, impossible = 0, used = 0;
	size_t kind_count[NKINDS] = { 0 }, kind_failed[NKINDS] = { 0 };
	char first_failure[NKINDS][SCHED_SUMMARY_MAX] = { { 0 } };
	double kind_ns[NKINDS] = { 0 };
	struct sched_result res = { .verdicts = b->verdicts };

	reset_allocations(b);
	for (size_t i = 0; i < b->nvms; i++) {
		const struct sim_vm *vm = &b->vms[i];

		double c0 = now_ns(CLOCK_THREAD_CPUTIME_ID), t0 = now_ns(CLOCK_MONOTONIC);
		int err = sched_place(p, b->view, b->nhosts, &vm->req, &res);
		double t1 = now_ns(CLOCK_MONOTONIC), c1 = now_ns(CLOCK_THREAD_CPUTIME_ID);

		if (err) {
			fprintf(stderr, "placement: VM %zu: %s\n", i, res.summary);
			return err;
		}
		b->wall_ns[i] = t1 - t0;
		b->cpu_ns[i] = c1 - c0;
		kind_count[vm->kind]++;
		kind_ns[vm->kind] += c1 - c0;
		if (res.chosen >= 0) {
			placed++;
			err = commit_vm(&b->view[res.chosen], &b->hosts[res.chosen], &vm->req);
			if (err)
				return err;
		} else {
			if (!kind_failed[vm->kind]++)
				snprintf(first_failure[vm->kind], sizeof(first_failure[0]), "%s",
					 res.summary);
			if (res.impossible)
				impossible++;
			else
				not_now++;
		}
	}
	for (size_t i = 0; i < b->nhosts; i++)
		used += b->view[i].vms > 0;
	printf("== %s: %zu hosts, %zu VMs placed one after another\n", title, b->nhosts, b->nvms);
	printf("decisions (CPU time of the thread, what the scheduler costs; wall time adds\n"
	       "whatever else this machine runs):\n");
	print_times("  cpu time", b->cpu_ns, b->nvms);
	print_times("  wall time", b->wall_ns, b->nvms);
	printf("placed %zu, not now %zu, impossible %zu; hosts holding VMs %zu of %zu\n", placed,
	       not_now, impossible, used, b->nhosts);
	print_usage("memory", usage(b, p, USE_MEM));
	print_usage("vCPUs", usage(b, p, USE_VCPUS));
	print_usage("mean", usage(b, p, USE_BOTH));
	printf("%-14s %8s %8s %12s\n", "request", "count", "failed", "mean cpu us");
	for (size_t k = 0; k < NKINDS; k++)
		printf("%-14s %8zu %8zu %12.1f\n", kind_names[k], kind_count[k], kind_failed[k],
		       kind_count[k] ? kind_ns[k] / kind_count[k] / 1e3 : 0.0);
	for (size_t k = 0; k < NKINDS; k++)
		if (kind_failed[k])
			printf("first %s failure: %s\n", kind_names[k], first_failure[k]);
	printf("\n");
	return 0;
}

static int parse_size(const char *opt, const char *arg, size_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(arg, &end, 10);
	if (errno || end == arg || *end || v == 0 || v > 10000000) {
		fprintf(stderr, "placement: %s: '%s' is not a count from 1 to 10000000\n", opt, arg);
		return -EINVAL;
	}
	*out = (size_t)v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct sched_policy spread = { 4.0, 1.0, SCHED_SPREAD };
	static const struct sched_policy pack = { 4.0, 1.0, SCHED_PACK };
	struct bench *b = calloc(1, sizeof(*b));
	size_t seed = 1;
	int opt, err = 0;

	if (!b)
		return 1;
	b->nhosts = 1000;
	b->nvms = 10000;
	while ((opt = getopt(argc, argv, "H:n:s:")) != -1) {
		switch (opt) {
		case 'H': err = parse_size("-H", optarg, &b->nhosts); break;
		case 'n': err = parse_size("-n", optarg, &b->nvms); break;
		case 's': err = parse_size("-s", optarg, &seed); break;
		default: err = -EINVAL;
		}
		if (err) {
			fprintf(stderr, "usage: placement [-H HOSTS] [-n VMS] [-s SEED]\n");
			return 1;
		}
	}
	b->seed = seed * 0x9e3779b97f4a7c15ULL;
	b->hosts = calloc(b->nhosts, sizeof(*b->hosts));
	b->view = calloc(b->nhosts, sizeof(*b->view));
	b->verdicts = calloc(b->nhosts, sizeof(*b->verdicts));
	b->vms = calloc(b->nvms, sizeof(*b->vms));
	b->wall_ns = calloc(b->nvms, sizeof(*b->wall_ns));
	b->cpu_ns = calloc(b->nvms, sizeof(*b->cpu_ns));
	b->scratch = calloc(b->nhosts, sizeof(*b->scratch));
	if (!b->hosts || !b->view || !b->verdicts || !b->vms || !b->wall_ns || !b->cpu_ns ||
	    !b->scratch) {
		fprintf(stderr, "placement: out of memory for %zu hosts and %zu VMs\n", b->nhosts,
			b->nvms);
		return 1;
	}
	make_names(b);
	make_hosts(b, &b->seed);
	make_vms(b, &b->seed);
	for (size_t i = 0; i < b->nhosts; i++) {
		char why[160];

		if (sched_host_check(&b->view[i], why, sizeof(why))) {
			fprintf(stderr, "placement: %s\n", why);
			return 1;
		}
	}
	err = run(b, &spread, "spread");
	if (!err)
		err = run(b, &pack, "pack");
	for (size_t i = 0; i < b->nhosts; i++)
		free(b->hosts[i].groups);
	free(b->hosts);
	free(b->view);
	free(b->verdicts);
	free(b->vms);
	free(b->wall_ns);
	free(b->cpu_ns);
	free(b->scratch);
	free(b);
	return err ? 1 : 0;
}
