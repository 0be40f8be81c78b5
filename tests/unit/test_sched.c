/* controller/sched.c: each filter rejects with a sentence naming its
 * numbers; impossible (422) and not now (409) are told apart for every kind
 * of constraint; the choice is deterministic and independent of host order;
 * spread fills equal hosts evenly and pack fills one first; capacity limits
 * hold exactly at their boundaries; malformed requests are refused. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sched.h"

#define GiB (1ULL << 30)
#define MAXH 64
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static const struct sched_policy spread = { .cpu_ratio = 4.0, .mem_ratio = 1.0,
					    .weigher = SCHED_SPREAD };
static const struct sched_policy pack = { .cpu_ratio = 4.0, .mem_ratio = 1.0,
					  .weigher = SCHED_PACK };

static const char *const flags_avx2[] = { "aes", "avx2", "sse4_2" };
static const char *const flags_avx512[] = { "aes", "avx2", "avx512f", "sse4_2" };
static const struct sched_label labels_a[] = { { "ssd", "yes" }, { "zone", "a" } };
static const struct sched_label labels_b[] = { { "zone", "b" } };
static const char *const groups_web[] = { "web" };
static const char *const groups_db[] = { "db" };

static struct sched_host mkhost(const char *id, uint32_t cpus, uint64_t mem_gib)
{
	return (struct sched_host){ .id = id, .name = id, .up = true, .cpus = cpus,
				    .mem = mem_gib * GiB };
}

/* One placement; checks the invariants every call must keep. */
static int place(const struct sched_policy *p, const struct sched_host *h, size_t n,
		 const struct sched_request *req, struct sched_result *res,
		 struct sched_verdict *verdicts)
{
	memset(res, 0x5a, sizeof(*res));
	memset(verdicts, 0x5a, n * sizeof(*verdicts));
	res->verdicts = verdicts;
	int r = sched_place(p, h, n, req, res);
	if (r == 0) {
		assert_true(res->chosen >= -1 && res->chosen < (int)n);
		assert_true(strlen(res->summary) < SCHED_SUMMARY_MAX);
		if (res->chosen >= 0) {
			assert_true(verdicts[res->chosen].accepted);
			assert_false(res->impossible);
		}
		for (size_t i = 0; i < n; i++) {
			assert_true(strlen(verdicts[i].reason) < SCHED_REASON_MAX);
			assert_int_equal(verdicts[i].accepted, verdicts[i].reason[0] == '\0');
		}
	}
	return r;
}

/* ---- each filter alone: its reason text, and whether it is impossible ---- */

/* hosts[0] is the host under test: 4 cpus, 16 GiB, AVX2, zone=a, ssd=yes,
 * running group "web"; a row's setup changes it or adds hosts after it. */
struct filter_case {
	const char *name;
	size_t (*setup)(struct sched_host *h, struct sched_request *req);
	const char *reason;
	bool impossible;
	int chosen;
};

static size_t set_down(struct sched_host *h, struct sched_request *req)
{
	h[0].up = false;
	return 1;
}

static size_t set_maintenance(struct sched_host *h, struct sched_request *req)
{
	h[0].maintenance = true;
	return 1;
}

static size_t set_down_maintenance(struct sched_host *h, struct sched_request *req)
{
	h[0].up = false;
	h[0].maintenance = true;
	return 1;
}

static size_t set_pinned_elsewhere(struct sched_host *h, struct sched_request *req)
{
	h[1] = mkhost("host-2", 4, 16);
	req->pinned_host = "host-2";
	return 2;
}

static size_t set_pinned_missing(struct sched_host *h, struct sched_request *req)
{
	req->pinned_host = "host-9";
	return 1;
}

static size_t set_vcpus_full(struct sched_host *h, struct sched_request *req)
{
	h[0].vcpus_allocated = 14;
	req->vcpus = 4;
	return 1;
}

static size_t set_vcpus_reserved(struct sched_host *h, struct sched_request *req)
{
	h[0].cpus = 8;
	h[0].reserved_cpus = 2;
	h[0].vcpus_allocated = 20;
	req->vcpus = 5;
	return 1;
}

static size_t set_vcpus_too_many(struct sched_host *h, struct sched_request *req)
{
	req->vcpus = 17;
	return 1;
}

static size_t set_memory_full(struct sched_host *h, struct sched_request *req)
{
	h[0].reserved_mem = 2 * GiB;
	h[0].mem_allocated = 12 * GiB;
	req->mem = 3 * GiB;
	return 1;
}

static size_t set_memory_too_much(struct sched_host *h, struct sched_request *req)
{
	req->mem = 16 * GiB + 512 * 1024 * 1024;
	return 1;
}

static const char *const want_avx512_aes_sha[] = { "avx512f", "aes", "sha_ni" };

static size_t set_flags_missing(struct sched_host *h, struct sched_request *req)
{
	req->cpu_flags = want_avx512_aes_sha;
	req->ncpu_flags = 3;
	return 1;
}

static size_t set_flags_elsewhere(struct sched_host *h, struct sched_request *req)
{
	h[1] = mkhost("host-2", 4, 16);
	static const char *const only_avx512[] = { "avx512f" };

	h[1].cpu_flags = only_avx512;
	h[1].ncpu_flags = 1;
	req->cpu_flags = want_avx512_aes_sha;
	req->ncpu_flags = 1;
	return 2;
}

static const struct sched_label want_zone_b_gpu[] = { { "zone", "b" }, { "gpu", "yes" } };

static size_t set_labels_missing(struct sched_host *h, struct sched_request *req)
{
	req->host_labels = want_zone_b_gpu;
	req->nhost_labels = 2;
	return 1;
}

static size_t set_labels_elsewhere(struct sched_host *h, struct sched_request *req)
{
	h[1] = mkhost("host-2", 4, 16);
	h[1].labels = labels_b;
	h[1].nlabels = 1;
	req->host_labels = want_zone_b_gpu;
	req->nhost_labels = 1;
	return 2;
}

static size_t set_affinity_elsewhere(struct sched_host *h, struct sched_request *req)
{
	h[1] = mkhost("host-2", 4, 16);
	h[1].groups = groups_db;
	h[1].ngroups = 1;
	h[1].vcpus_allocated = 15;  /* spread alone would pick host-1 */
	req->affinity_group = "db";
	return 2;
}

static size_t set_affinity_two_hosts(struct sched_host *h, struct sched_request *req)
{
	/* Listed out of id order: the reason names the smallest id. */
	h[1] = mkhost("host-3", 4, 16);
	h[2] = mkhost("host-2", 4, 16);
	h[1].groups = h[2].groups = groups_db;
	h[1].ngroups = h[2].ngroups = 1;
	h[1].up = h[2].up = false;
	req->affinity_group = "db";
	return 3;
}

static size_t set_anti_affinity(struct sched_host *h, struct sched_request *req)
{
	req->anti_affinity_group = "web";
	return 1;
}

static const struct filter_case filter_cases[] = {
	{ "down", set_down, "up: host is down (no heartbeat)", false, -1 },
	{ "maintenance", set_maintenance, "up: host is in maintenance", false, -1 },
	{ "down and maintenance", set_down_maintenance, "up: host is down and in maintenance",
	  false, -1 },
	{ "pinned elsewhere", set_pinned_elsewhere, "pinned: the VM is pinned to host 'host-2'",
	  false, 1 },
	{ "pinned to no host", set_pinned_missing, "pinned: the VM is pinned to host 'host-9'",
	  true, -1 },
	{ "vcpus full", set_vcpus_full,
	  "vcpus: 14 allocated + 4 requested > 16 allowed ((4 cpus - 0 reserved) x 4.0)", false, -1 },
	{ "vcpus reserved", set_vcpus_reserved,
	  "vcpus: 20 allocated + 5 requested > 24 allowed ((8 cpus - 2 reserved) x 4.0)", false, -1 },
	{ "vcpus above capacity", set_vcpus_too_many,
	  "vcpus: 0 allocated + 17 requested > 16 allowed ((4 cpus - 0 reserved) x 4.0)", true, -1 },
	{ "memory full", set_memory_full,
	  "memory: 12 GiB allocated + 3 GiB requested > 14 GiB allowed ((16 GiB - 2 GiB reserved) x 1.0)",
	  false, -1 },
	{ "memory above capacity", set_memory_too_much,
	  "memory: 0 allocated + 16896 MiB requested > 16 GiB allowed ((16 GiB - 0 reserved) x 1.0)",
	  true, -1 },
	{ "cpu flags missing", set_flags_missing, "cpu_flags: host lacks avx512f, sha_ni", true, -1 },
	{ "cpu flag elsewhere", set_flags_elsewhere, "cpu_flags: host lacks avx512f", false, 1 },
	{ "labels missing", set_labels_missing,
	  "host_labels: zone=b asked, host has zone=a; gpu=yes asked, host has no label gpu", true,
	  -1 },
	{ "label elsewhere", set_labels_elsewhere, "host_labels: zone=b asked, host has zone=a",
	  false, 1 },
	{ "affinity elsewhere", set_affinity_elsewhere,
	  "affinity: VMs of group 'db' run on 'host-2', not here", false, 1 },
	{ "affinity on two down hosts", set_affinity_two_hosts,
	  "affinity: VMs of group 'db' run on 'host-2' and 1 other host, not here", false, -1 },
	{ "anti-affinity", set_anti_affinity,
	  "anti_affinity: a VM of group 'web' already runs here", false, -1 },
};

static void test_filter_reasons(void **state)
{
	for (size_t c = 0; c < ARRAY_SIZE(filter_cases); c++) {
		const struct filter_case *fc = &filter_cases[c];
		struct sched_host h[3];
		struct sched_request req = { .vcpus = 1, .mem = GiB };
		struct sched_verdict v[3];
		struct sched_result res;

		h[0] = mkhost("host-1", 4, 16);
		h[0].cpu_flags = flags_avx2;
		h[0].ncpu_flags = ARRAY_SIZE(flags_avx2);
		h[0].labels = labels_a;
		h[0].nlabels = ARRAY_SIZE(labels_a);
		h[0].groups = groups_web;
		h[0].ngroups = 1;
		size_t n = fc->setup(h, &req);

		print_message("case %s\n", fc->name);
		assert_int_equal(place(&spread, h, n, &req, &res, v), 0);
		assert_false(v[0].accepted);
		assert_string_equal(v[0].reason, fc->reason);
		assert_int_equal(res.impossible, fc->impossible);
		assert_int_equal(res.chosen, fc->chosen);
		if (fc->chosen < 0)
			assert_non_null(strstr(res.summary, fc->impossible ? "impossible: "
									   : "no host can take it now"));
	}
}

/* The same request with the filter's constraint met is accepted: the
 * reasons above come from the constraint, not from the fixture. */
static void test_fixture_host_accepts(void **state)
{
	static const char *const want[] = { "aes", "sse4_2" };
	static const struct sched_label want_labels[] = { { "zone", "a" } };
	struct sched_host h = mkhost("host-1", 4, 16);
	struct sched_request req = { .vcpus = 16, .mem = 16 * GiB, .pinned_host = "host-1",
				     .cpu_flags = want, .ncpu_flags = 2,
				     .host_labels = want_labels, .nhost_labels = 1,
				     .affinity_group = "web", .anti_affinity_group = "db" };
	struct sched_verdict v[1];
	struct sched_result res;

	h.cpu_flags = flags_avx2;
	h.ncpu_flags = ARRAY_SIZE(flags_avx2);
	h.labels = labels_a;
	h.nlabels = ARRAY_SIZE(labels_a);
	h.groups = groups_web;
	h.ngroups = 1;
	assert_int_equal(place(&spread, &h, 1, &req, &res, v), 0);
	assert_int_equal(res.chosen, 0);
	assert_string_equal(v[0].reason, "");
	assert_non_null(strstr(res.summary, "chose 'host-1'"));
}

/* ---- impossible (422) versus not now (409), for every kind ---- */

/* small: 4 cpus 8 GiB zone=a; medium: 16 cpus 64 GiB AVX2; big: 64 cpus
 * 256 GiB AVX-512 zone=b. With cpu_ratio 4, big allows 256 vCPUs. */
struct kind_case {
	const char *name;
	void (*setup)(struct sched_host *h, size_t *n, struct sched_request *req);
	bool impossible;
	const char *summary;
};

static void k_vcpus_never(struct sched_host *h, size_t *n, struct sched_request *req)
{
	req->vcpus = 257;
}

/* medium as large as big: the message names the smaller id ("big"). */
static void k_vcpus_never_tie(struct sched_host *h, size_t *n, struct sched_request *req)
{
	h[1].cpus = 64;
	req->vcpus = 257;
}

static void k_vcpus_now(struct sched_host *h, size_t *n, struct sched_request *req)
{
	req->vcpus = 100;
	h[2].vcpus_allocated = 200;
}

static void k_memory_never(struct sched_host *h, size_t *n, struct sched_request *req)
{
	req->mem = 257 * GiB;
}

static void k_memory_now(struct sched_host *h, size_t *n, struct sched_request *req)
{
	req->mem = 100 * GiB;
	h[2].mem_allocated = 200 * GiB;
}

static const char *const want_amx[] = { "amx_tile", "avx512f" };

static void k_flag_never(struct sched_host *h, size_t *n, struct sched_request *req)
{
	req->cpu_flags = want_amx;
	req->ncpu_flags = 2;
}

static void k_flag_now(struct sched_host *h, size_t *n, struct sched_request *req)
{
	req->cpu_flags = want_amx + 1;
	req->ncpu_flags = 1;
	h[2].up = false;
}

static const struct sched_label want_zone_c[] = { { "zone", "c" } };
static const struct sched_label want_zone_a[] = { { "zone", "a" } };

static void k_label_never(struct sched_host *h, size_t *n, struct sched_request *req)
{
	req->host_labels = want_zone_c;
	req->nhost_labels = 1;
}

static void k_label_now(struct sched_host *h, size_t *n, struct sched_request *req)
{
	req->host_labels = want_zone_a;
	req->nhost_labels = 1;
	h[0].maintenance = true;
}

static void k_pinned_never(struct sched_host *h, size_t *n, struct sched_request *req)
{
	req->pinned_host = "nope";
}

static void k_pinned_now(struct sched_host *h, size_t *n, struct sched_request *req)
{
	req->pinned_host = "medium";
	h[1].up = false;
}

static void k_pinned_too_small(struct sched_host *h, size_t *n, struct sched_request *req)
{
	req->pinned_host = "small";
	req->vcpus = 17;
}

static void k_pinned_lacks_flag(struct sched_host *h, size_t *n, struct sched_request *req)
{
	req->pinned_host = "medium";
	req->cpu_flags = want_amx + 1;
	req->ncpu_flags = 1;
}

/* AVX-512 only on big, zone=a only on small: each exists, never together. */
static void k_combination(struct sched_host *h, size_t *n, struct sched_request *req)
{
	req->cpu_flags = want_amx + 1;
	req->ncpu_flags = 1;
	req->host_labels = want_zone_a;
	req->nhost_labels = 1;
}

/* Most vCPUs on big, most memory on medium: neither has both. */
static void k_capacity_apart(struct sched_host *h, size_t *n, struct sched_request *req)
{
	h[2].mem = 32 * GiB;
	h[1].mem = 512 * GiB;
	req->vcpus = 100;
	req->mem = 100 * GiB;
}

static const struct sched_label want_zone_c_gpu[] = { { "zone", "c" }, { "ssd", "yes" },
						      { "gpu", "yes" } };

static void k_flag_and_label_never(struct sched_host *h, size_t *n, struct sched_request *req)
{
	req->cpu_flags = want_amx;
	req->ncpu_flags = 2;
	req->host_labels = want_zone_c_gpu;
	req->nhost_labels = 3;
}

static void k_affinity_now(struct sched_host *h, size_t *n, struct sched_request *req)
{
	h[1].groups = groups_db;
	h[1].ngroups = 1;
	h[1].maintenance = true;
	req->affinity_group = "db";
}

static void k_anti_affinity_now(struct sched_host *h, size_t *n, struct sched_request *req)
{
	for (size_t i = 0; i < 3; i++) {
		h[i].groups = groups_web;
		h[i].ngroups = 1;
	}
	req->anti_affinity_group = "web";
}

static void k_all_down(struct sched_host *h, size_t *n, struct sched_request *req)
{
	h[0].up = h[1].up = h[2].up = false;
}

static void k_no_hosts(struct sched_host *h, size_t *n, struct sched_request *req)
{
	*n = 0;
}

static const struct kind_case kind_cases[] = {
	{ "vcpus never", k_vcpus_never, true,
	  "impossible: vcpus: 257 requested > 256 allowed even on host 'big', the largest, when empty" },
	{ "vcpus never, two largest", k_vcpus_never_tie, true,
	  "impossible: vcpus: 257 requested > 256 allowed even on host 'big', the largest, when empty" },
	{ "vcpus now", k_vcpus_now, false,
	  "no host can take it now: of 3 hosts, rejected by vcpus 3" },
	{ "memory never", k_memory_never, true,
	  "impossible: memory: 257 GiB requested > 256 GiB allowed even on host 'big', "
	  "the largest, when empty" },
	{ "memory now", k_memory_now, false,
	  "no host can take it now: of 3 hosts, rejected by memory 3" },
	{ "cpu flag never", k_flag_never, true, "impossible: cpu_flags: no host has amx_tile" },
	{ "cpu flag now", k_flag_now, false,
	  "no host can take it now: of 3 hosts, rejected by up 1, cpu_flags 2" },
	{ "label never", k_label_never, true, "impossible: host_labels: no host has zone=c" },
	{ "label now", k_label_now, false,
	  "no host can take it now: of 3 hosts, rejected by up 1, host_labels 2" },
	{ "pinned never", k_pinned_never, true,
	  "impossible: pinned: no host has the id or name 'nope'" },
	{ "pinned now", k_pinned_now, false,
	  "no host can take it now: of 3 hosts, rejected by up 1, pinned 2" },
	{ "pinned too small", k_pinned_too_small, true,
	  "impossible: vcpus: 17 requested > 16 allowed on the pinned host 'small' when empty" },
	{ "pinned lacks flag", k_pinned_lacks_flag, true,
	  "impossible: cpu_flags: the pinned host lacks avx512f" },
	{ "flag and label never together", k_combination, true,
	  "impossible: no single host meets vcpus, memory, cpu_flags, host_labels all at once, "
	  "though some host meets each" },
	{ "vcpus and memory never together", k_capacity_apart, true,
	  "impossible: no single host meets vcpus, memory all at once, though some host meets each" },
	{ "flag and label nowhere", k_flag_and_label_never, true,
	  "impossible: cpu_flags: no host has amx_tile; host_labels: no host has zone=c, gpu=yes" },
	{ "affinity now", k_affinity_now, false,
	  "no host can take it now: of 3 hosts, rejected by up 1, affinity 2" },
	{ "anti-affinity now", k_anti_affinity_now, false,
	  "no host can take it now: of 3 hosts, rejected by anti_affinity 3" },
	{ "all down", k_all_down, false, "no host can take it now: of 3 hosts, rejected by up 3" },
	{ "no hosts", k_no_hosts, false, "no host can take it now: no hosts are registered" },
};

static void test_impossible_vs_not_now(void **state)
{
	for (size_t c = 0; c < ARRAY_SIZE(kind_cases); c++) {
		const struct kind_case *kc = &kind_cases[c];
		struct sched_host h[3] = { mkhost("small", 4, 8), mkhost("medium", 16, 64),
					   mkhost("big", 64, 256) };
		struct sched_request req = { .vcpus = 2, .mem = 2 * GiB };
		struct sched_verdict v[3];
		struct sched_result res;
		size_t n = 3;

		h[0].labels = labels_a;
		h[0].nlabels = ARRAY_SIZE(labels_a);
		h[1].cpu_flags = flags_avx2;
		h[1].ncpu_flags = ARRAY_SIZE(flags_avx2);
		h[2].cpu_flags = flags_avx512;
		h[2].ncpu_flags = ARRAY_SIZE(flags_avx512);
		h[2].labels = labels_b;
		h[2].nlabels = 1;
		kc->setup(h, &n, &req);
		print_message("case %s\n", kc->name);
		assert_int_equal(place(&spread, h, n, &req, &res, v), 0);
		assert_int_equal(res.chosen, -1);
		assert_int_equal(res.impossible, kc->impossible);
		assert_string_equal(res.summary, kc->summary);
	}
}

/* ---- determinism ---- */

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

struct cluster {
	struct sched_host h[MAXH];
	char ids[MAXH][32];
	size_t n;
};

static const char *const group_names[] = { "g0", "g1", "g2", "g3" };

static void cluster_make(struct cluster *c, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++) {
		snprintf(c->ids[i], sizeof(c->ids[i]), "h%02zu", (i * 7) % n);
		c->h[i] = mkhost(c->ids[i], 8 << (rng_next(&seed) % 3), 32ULL << (rng_next(&seed) % 3));
		c->h[i].vcpus_allocated = (uint32_t)(rng_next(&seed) % 20);
		c->h[i].mem_allocated = (rng_next(&seed) % 24) * GiB;
		c->h[i].vms = (uint32_t)(rng_next(&seed) % 5);
		c->h[i].up = rng_next(&seed) % 8 != 0;
		c->h[i].cpu_flags = rng_next(&seed) % 2 ? flags_avx2 : flags_avx512;
		c->h[i].ncpu_flags = c->h[i].cpu_flags == flags_avx2 ? ARRAY_SIZE(flags_avx2)
								     : ARRAY_SIZE(flags_avx512);
		c->h[i].labels = rng_next(&seed) % 2 ? labels_a : labels_b;
		c->h[i].nlabels = c->h[i].labels == labels_a ? ARRAY_SIZE(labels_a) : 1;
		c->h[i].groups = group_names + rng_next(&seed) % 3;
		c->h[i].ngroups = 1 + rng_next(&seed) % 2;
	}
	c->n = n;
}

/* Equal hosts (same numbers, so equal scores) make ties that only the id
 * can break: several of them, listed in an order unlike their ids. */
static void cluster_add_twins(struct cluster *c)
{
	for (size_t i = 0; i < 4; i++) {
		snprintf(c->ids[c->n], sizeof(c->ids[c->n]), "twin%zu", (i + 2) % 4);
		c->h[c->n] = mkhost(c->ids[c->n], 64, 256);
		c->n++;
	}
}

static const struct sched_request determinism_reqs[] = {
	{ .vcpus = 2, .mem = 4 * GiB },
	{ .vcpus = 30, .mem = 200 * GiB },
	{ .vcpus = 1, .mem = GiB, .cpu_flags = want_amx + 1, .ncpu_flags = 1 },
	{ .vcpus = 1, .mem = GiB, .host_labels = want_zone_a, .nhost_labels = 1 },
	{ .vcpus = 1, .mem = GiB, .affinity_group = "g1" },
	{ .vcpus = 1, .mem = GiB, .anti_affinity_group = "g2" },
	{ .vcpus = 4, .mem = 8 * GiB, .pinned_host = "h03" },
	{ .vcpus = 1000, .mem = GiB },  /* impossible: its summary names one of the twins */
};

static const struct sched_verdict *verdict_of(const struct cluster *c,
					      const struct sched_verdict *v, const char *id)
{
	for (size_t i = 0; i < c->n; i++)
		if (!strcmp(c->h[i].id, id))
			return &v[i];
	fail_msg("no host %s", id);
	return NULL;
}

static void test_deterministic_and_order_free(void **state)
{
	const struct sched_policy *policies[] = { &spread, &pack };

	for (size_t p = 0; p < 2; p++) {
		for (size_t r = 0; r < ARRAY_SIZE(determinism_reqs); r++) {
			struct cluster c, s;
			struct sched_verdict v1[MAXH], v2[MAXH], vs[MAXH];
			struct sched_result r1, r2, rs;
			uint64_t seed = 0x9e3779b97f4a7c15ULL;

			cluster_make(&c, 40, 42);
			cluster_add_twins(&c);
			assert_int_equal(place(policies[p], c.h, c.n, &determinism_reqs[r], &r1, v1), 0);
			assert_int_equal(place(policies[p], c.h, c.n, &determinism_reqs[r], &r2, v2), 0);
			assert_int_equal(r1.chosen, r2.chosen);
			assert_string_equal(r1.summary, r2.summary);
			assert_memory_equal(v1, v2, c.n * sizeof(v1[0]));
			assert_true(r1.chosen >= 0 || determinism_reqs[r].vcpus == 1000);
			if (determinism_reqs[r].vcpus == 1000)
				assert_string_equal(r1.summary, "impossible: vcpus: 1000 requested > 256 "
						    "allowed even on host 'twin0', the largest, when empty");

			for (int round = 0; round < 25; round++) {
				s = c;
				for (size_t i = s.n - 1; i > 0; i--) {
					size_t j = rng_next(&seed) % (i + 1);
					struct sched_host t = s.h[i];

					s.h[i] = s.h[j];
					s.h[j] = t;
				}
				assert_int_equal(place(policies[p], s.h, s.n, &determinism_reqs[r], &rs, vs), 0);
				if (r1.chosen < 0)
					assert_int_equal(rs.chosen, -1);
				else
					assert_string_equal(s.h[rs.chosen].id, c.h[r1.chosen].id);
				assert_string_equal(rs.summary, r1.summary);
				for (size_t i = 0; i < s.n; i++) {
					const struct sched_verdict *o = verdict_of(&c, v1, s.h[i].id);

					assert_int_equal(vs[i].accepted, o->accepted);
					assert_true(vs[i].score == o->score);
					assert_string_equal(vs[i].reason, o->reason);
				}
			}
		}
	}
}

static void test_tie_goes_to_smaller_id(void **state)
{
	const char *orders[][3] = { { "b", "a", "c" }, { "c", "b", "a" }, { "a", "c", "b" } };
	const struct sched_policy *policies[] = { &spread, &pack };
	struct sched_request req = { .vcpus = 2, .mem = 4 * GiB };

	for (size_t p = 0; p < 2; p++) {
		for (size_t o = 0; o < ARRAY_SIZE(orders); o++) {
			struct sched_host h[3];
			struct sched_verdict v[3];
			struct sched_result res;

			for (size_t i = 0; i < 3; i++)
				h[i] = mkhost(orders[o][i], 16, 64);
			assert_int_equal(place(policies[p], h, 3, &req, &res, v), 0);
			assert_string_equal(h[res.chosen].id, "a");
			assert_true(v[0].score == v[1].score && v[1].score == v[2].score);
		}
	}
}

/* ---- weighers ---- */

/* Place count VMs one after another, as the controller does: each
 * decision's allocation is added to the chosen host. */
static void place_sequence(const struct sched_policy *p, struct sched_host *h, size_t n,
			   const struct sched_request *req, size_t count, char *chosen_ids)
{
	struct sched_verdict v[MAXH];
	struct sched_result res;

	chosen_ids[0] = '\0';
	for (size_t i = 0; i < count; i++) {
		assert_int_equal(place(p, h, n, req, &res, v), 0);
		if (res.chosen < 0) {
			strcat(chosen_ids, "-");
			continue;
		}
		h[res.chosen].vcpus_allocated += req->vcpus;
		h[res.chosen].mem_allocated += req->mem;
		h[res.chosen].vms++;
		strcat(chosen_ids, h[res.chosen].id);
	}
}

static void test_spread_fills_evenly_pack_fills_first(void **state)
{
	const struct sched_policy ratio1_spread = { 1.0, 1.0, SCHED_SPREAD };
	const struct sched_policy ratio1_pack = { 1.0, 1.0, SCHED_PACK };
	struct sched_request req = { .vcpus = 2, .mem = 4 * GiB };
	struct sched_host h[3];
	char got[64];

	h[0] = mkhost("c", 8, 32), h[1] = mkhost("a", 8, 32), h[2] = mkhost("b", 8, 32);
	place_sequence(&ratio1_spread, h, 3, &req, 13, got);
	assert_string_equal(got, "abcabcabcabc-");

	h[0] = mkhost("c", 8, 32), h[1] = mkhost("a", 8, 32), h[2] = mkhost("b", 8, 32);
	place_sequence(&ratio1_pack, h, 3, &req, 13, got);
	assert_string_equal(got, "aaaabbbbcccc-");
}

/* Free capacity is counted after the VM: of two empty hosts spread takes
 * the larger (the VM fills less of it), pack the smaller. */
static void test_weighers_on_unequal_hosts(void **state)
{
	struct sched_host h[2] = { mkhost("a-small", 4, 16), mkhost("b-big", 64, 256) };
	struct sched_request req = { .vcpus = 2, .mem = 4 * GiB };
	struct sched_verdict v[2];
	struct sched_result res;

	assert_int_equal(place(&spread, h, 2, &req, &res, v), 0);
	assert_string_equal(h[res.chosen].id, "b-big");
	assert_true(fabs(v[1].score - (1.0 - (2.0 / 256 + 4.0 / 256) / 2)) < 1e-12);
	assert_int_equal(place(&pack, h, 2, &req, &res, v), 0);
	assert_string_equal(h[res.chosen].id, "a-small");
	assert_true(fabs(v[0].score - (2.0 / 16 + 4.0 / 16) / 2) < 1e-12);
}

/* Equal free capacity: the host with fewer VMs wins even with the larger
 * id; the penalty never outweighs a real difference in capacity. */
static void test_vm_penalty(void **state)
{
	const struct sched_policy *policies[] = { &spread, &pack };
	struct sched_request req = { .vcpus = 1, .mem = GiB };

	for (size_t p = 0; p < 2; p++) {
		struct sched_host h[2] = { mkhost("a", 16, 64), mkhost("b", 16, 64) };
		struct sched_verdict v[2];
		struct sched_result res;

		h[0].vcpus_allocated = h[1].vcpus_allocated = 8;
		h[0].mem_allocated = h[1].mem_allocated = 8 * GiB;
		h[0].vms = 8;
		h[1].vms = 1;
		assert_int_equal(place(policies[p], h, 2, &req, &res, v), 0);
		assert_string_equal(h[res.chosen].id, "b");
		assert_true(fabs(v[0].score - v[1].score + 7 * SCHED_VM_PENALTY) < 1e-12);

		/* One vCPU less allocated on "a" outweighs 50 more VMs there. */
		h[0].vms = 51;
		h[0].vcpus_allocated = p == 0 ? 7 : 9;
		assert_int_equal(place(policies[p], h, 2, &req, &res, v), 0);
		assert_string_equal(h[res.chosen].id, "a");
	}
}

/* ---- capacity at its boundaries ---- */

struct boundary_case {
	uint32_t cpus, reserved_cpus;
	double cpu_ratio;
	uint32_t vcpus_allocated, vcpus;
	uint64_t mem, reserved_mem;
	double mem_ratio;
	uint64_t mem_allocated, req_mem;
	bool accepted;
	const char *reason;
};

static const struct boundary_case boundary_cases[] = {
	{ 4, 0, 4.0, 12, 4, 16 * GiB, 0, 1.0, 0, GiB, true, "" },
	{ 4, 0, 4.0, 13, 4, 16 * GiB, 0, 1.0, 0, GiB, false,
	  "vcpus: 13 allocated + 4 requested > 16 allowed ((4 cpus - 0 reserved) x 4.0)" },
	{ 8, 2, 1.5, 5, 4, 16 * GiB, 0, 1.0, 0, GiB, true, "" },
	{ 8, 2, 1.5, 6, 4, 16 * GiB, 0, 1.0, 0, GiB, false,
	  "vcpus: 6 allocated + 4 requested > 9 allowed ((8 cpus - 2 reserved) x 1.5)" },
	/* 45 x 1.4 is 62.99999999999999 in binary: 63 vCPUs all the same. */
	{ 45, 0, 1.4, 59, 4, 16 * GiB, 0, 1.0, 0, GiB, true, "" },
	{ 45, 0, 1.4, 60, 4, 16 * GiB, 0, 1.0, 0, GiB, false,
	  "vcpus: 60 allocated + 4 requested > 63 allowed ((45 cpus - 0 reserved) x 1.4)" },
	{ 7, 0, 1.25, 0, 8, 16 * GiB, 0, 1.0, 0, GiB, true, "" },
	{ 7, 0, 1.25, 0, 9, 16 * GiB, 0, 1.0, 0, GiB, false,
	  "vcpus: 0 allocated + 9 requested > 8 allowed ((7 cpus - 0 reserved) x 1.25)" },
	{ 4, 4, 4.0, 0, 1, 16 * GiB, 0, 1.0, 0, GiB, false,
	  "vcpus: 0 allocated + 1 requested > 0 allowed ((4 cpus - 4 reserved) x 4.0)" },
	{ 4, 9, 4.0, 0, 1, 16 * GiB, 0, 1.0, 0, GiB, false,
	  "vcpus: 0 allocated + 1 requested > 0 allowed ((4 cpus - 9 reserved) x 4.0)" },
	{ 4, 0, 4.0, UINT32_MAX, 1, 16 * GiB, 0, 1.0, 0, GiB, false,
	  "vcpus: 4294967295 allocated + 1 requested > 16 allowed ((4 cpus - 0 reserved) x 4.0)" },
	{ 4, 0, 4.0, 0, 1, 16 * GiB, GiB, 1.0, 11 * GiB, 4 * GiB, true, "" },
	{ 4, 0, 4.0, 0, 1, 16 * GiB, GiB, 1.0, 11 * GiB + 1, 4 * GiB, false,
	  "memory: 11811160065 B allocated + 4 GiB requested > 15 GiB allowed "
	  "((16 GiB - 1 GiB reserved) x 1.0)" },
	{ 4, 0, 4.0, 0, 1, 16 * GiB, 0, 1.5, 20 * GiB, 4 * GiB, true, "" },
	{ 4, 0, 4.0, 0, 1, 16 * GiB, 0, 1.5, 20 * GiB, 4 * GiB + 1024, false,
	  "memory: 20 GiB allocated + 4194305 KiB requested > 24 GiB allowed "
	  "((16 GiB - 0 reserved) x 1.5)" },
	{ 4, 0, 4.0, 0, 1, 16 * GiB, 0, 0.5, 0, 8 * GiB, true, "" },
	{ 4, 0, 4.0, 0, 1, 16 * GiB, 0, 0.5, 0, 8 * GiB + 1, false,
	  "memory: 0 allocated + 8589934593 B requested > 8 GiB allowed ((16 GiB - 0 reserved) x 0.5)" },
	{ 4, 0, 4.0, 0, 1, 16 * GiB, 0, 1.0, UINT64_MAX - 1, 4 * GiB, false,
	  "memory: 18446744073709551614 B allocated + 4 GiB requested > 16 GiB allowed "
	  "((16 GiB - 0 reserved) x 1.0)" },
	/* (2^63 bytes) x 4 is more than 64 bits hold: capacity is the most there is. */
	{ 4, 0, 4.0, 0, 1, 1ULL << 63, 0, 4.0, UINT64_MAX - 4 * GiB, 4 * GiB, true, "" },
	{ 4, 0, 4.0, 0, 1, 1ULL << 63, 0, 4.0, UINT64_MAX - 4 * GiB + 1, 4 * GiB, false,
	  "memory: 17179869180 GiB allocated + 4 GiB requested > 18446744073709551615 B "
	  "allowed ((8388608 TiB - 0 reserved) x 4.0)" },
	{ 4, 0, 4.0, 0, 1, 16 * GiB, 0, 1.0, 0, UINT64_MAX, false,
	  "memory: 0 allocated + 18446744073709551615 B requested > 16 GiB allowed "
	  "((16 GiB - 0 reserved) x 1.0)" },
};

static void test_capacity_boundaries(void **state)
{
	for (size_t c = 0; c < ARRAY_SIZE(boundary_cases); c++) {
		const struct boundary_case *bc = &boundary_cases[c];
		struct sched_policy p = { bc->cpu_ratio, bc->mem_ratio, SCHED_SPREAD };
		struct sched_host h = mkhost("h", bc->cpus, 0);
		struct sched_request req = { .vcpus = bc->vcpus, .mem = bc->req_mem };
		struct sched_verdict v[1];
		struct sched_result res;

		h.reserved_cpus = bc->reserved_cpus;
		h.vcpus_allocated = bc->vcpus_allocated;
		h.mem = bc->mem;
		h.reserved_mem = bc->reserved_mem;
		h.mem_allocated = bc->mem_allocated;
		print_message("case %zu\n", c);
		assert_int_equal(place(&p, &h, 1, &req, &res, v), 0);
		assert_int_equal(v[0].accepted, bc->accepted);
		assert_int_equal(res.chosen, bc->accepted ? 0 : -1);
		assert_string_equal(v[0].reason, bc->reason);
		if (bc->accepted)
			assert_true(v[0].score >= 0 && v[0].score <= 1);
	}
}

static void test_host_capacity(void **state)
{
	struct sched_policy p = { 1.5, 0.5, SCHED_PACK };
	struct sched_host h = mkhost("h", 8, 64);
	uint64_t vcpus, mem;

	h.reserved_cpus = 2;
	h.reserved_mem = 4 * GiB;
	assert_int_equal(sched_host_capacity(&p, &h, &vcpus, &mem), 0);
	assert_int_equal(vcpus, 9);
	assert_int_equal(mem, 30 * GiB);
	p.cpu_ratio = 0;
	assert_int_equal(sched_host_capacity(&p, &h, &vcpus, &mem), -EINVAL);
}

/* ---- affinity, anti-affinity, pinned ---- */

/* Each host keeps the groups of the VMs placed on it, as the controller's
 * view does. */
struct group_hosts {
	struct sched_host h[4];
	const char *groups[4][8];
};

static int place_in_group(struct group_hosts *g, size_t n, const struct sched_policy *p,
			  const struct sched_request *req, struct sched_result *res,
			  struct sched_verdict *v)
{
	assert_int_equal(place(p, g->h, n, req, res, v), 0);
	if (res->chosen >= 0) {
		struct sched_host *h = &g->h[res->chosen];
		const char *group = req->affinity_group ? req->affinity_group
							: req->anti_affinity_group;

		h->vcpus_allocated += req->vcpus;
		h->mem_allocated += req->mem;
		h->vms++;
		g->groups[res->chosen][h->ngroups++] = group;
		h->groups = g->groups[res->chosen];
	}
	return res->chosen;
}

static void test_affinity(void **state)
{
	struct group_hosts g = { .h = { mkhost("a", 4, 16), mkhost("b", 16, 64), mkhost("c", 16, 64) } };
	struct sched_request req = { .vcpus = 4, .mem = 16 * GiB, .affinity_group = "db" };
	struct sched_request other = { .vcpus = 1, .mem = GiB };
	struct sched_verdict v[3];
	struct sched_result res;

	/* The first VM of the group goes where spread sends any VM... */
	assert_int_equal(place_in_group(&g, 3, &spread, &req, &res, v), 1);
	assert_string_equal(v[0].reason, "");
	/* ...the next ones only there, though "c" is now emptier. */
	for (int i = 0; i < 3; i++) {
		assert_int_equal(place_in_group(&g, 3, &spread, &req, &res, v), 1);
		assert_string_equal(v[0].reason, "affinity: VMs of group 'db' run on 'b', not here");
		assert_string_equal(v[2].reason, "affinity: VMs of group 'db' run on 'b', not here");
	}
	/* Full: not now, whatever room elsewhere. */
	assert_int_equal(place_in_group(&g, 3, &spread, &req, &res, v), -1);
	assert_false(res.impossible);
	assert_string_equal(v[1].reason,
			    "memory: 64 GiB allocated + 16 GiB requested > 64 GiB allowed "
			    "((64 GiB - 0 reserved) x 1.0)");
	assert_string_equal(res.summary,
			    "no host can take it now: of 3 hosts, rejected by memory 1, affinity 2");
	/* A VM outside the group is not held to it. */
	assert_int_equal(place(&spread, g.h, 3, &other, &res, v), 0);
	assert_int_equal(res.chosen, 2);
}

static void test_affinity_full_host(void **state)
{
	struct group_hosts g = { .h = { mkhost("a", 1, 16), mkhost("b", 1, 16) } };
	struct sched_request req = { .vcpus = 2, .mem = GiB, .affinity_group = "db" };
	struct sched_verdict v[2];
	struct sched_result res;

	assert_int_equal(place_in_group(&g, 2, &pack, &req, &res, v), 0);
	assert_int_equal(place_in_group(&g, 2, &pack, &req, &res, v), 0);
	assert_int_equal(place_in_group(&g, 2, &pack, &req, &res, v), -1);
	assert_false(res.impossible);
	assert_string_equal(v[0].reason,
			    "vcpus: 4 allocated + 2 requested > 4 allowed ((1 cpus - 0 reserved) x 4.0)");
	assert_string_equal(v[1].reason, "affinity: VMs of group 'db' run on 'a', not here");
}

static void test_anti_affinity(void **state)
{
	struct group_hosts g = { .h = { mkhost("a", 16, 64), mkhost("b", 16, 64), mkhost("c", 16, 64) } };
	struct sched_request req = { .vcpus = 1, .mem = GiB, .anti_affinity_group = "web" };
	struct sched_verdict v[3];
	struct sched_result res;
	bool used[3] = { false };

	/* Pack would put them all on one host; the group forbids it. */
	for (int i = 0; i < 3; i++) {
		int c = place_in_group(&g, 3, &pack, &req, &res, v);

		assert_true(c >= 0);
		assert_false(used[c]);
		used[c] = true;
	}
	assert_int_equal(place_in_group(&g, 3, &pack, &req, &res, v), -1);
	assert_false(res.impossible);
	for (int i = 0; i < 3; i++)
		assert_string_equal(v[i].reason, "anti_affinity: a VM of group 'web' already runs here");
	assert_string_equal(res.summary,
			    "no host can take it now: of 3 hosts, rejected by anti_affinity 3");
}

static void test_pinned_by_id_and_name(void **state)
{
	struct sched_host h[3] = { mkhost("id-1", 64, 256), mkhost("id-2", 4, 16),
				   mkhost("id-3", 4, 16) };
	struct sched_request req = { .vcpus = 1, .mem = GiB };
	struct sched_verdict v[3];
	struct sched_result res;

	h[0].name = "alpha";
	h[1].name = "beta";
	h[2].name = NULL;
	assert_int_equal(place(&spread, h, 3, &req, &res, v), 0);
	assert_int_equal(res.chosen, 0);
	req.pinned_host = "beta";
	assert_int_equal(place(&spread, h, 3, &req, &res, v), 0);
	assert_int_equal(res.chosen, 1);
	assert_string_equal(v[0].reason, "pinned: the VM is pinned to host 'beta'");
	req.pinned_host = "id-3";
	assert_int_equal(place(&spread, h, 3, &req, &res, v), 0);
	assert_int_equal(res.chosen, 2);
	assert_non_null(strstr(res.summary, "chose 'id-3' (id id-3"));
	req.pinned_host = "id-1";
	assert_int_equal(place(&spread, h, 3, &req, &res, v), 0);
	assert_int_equal(res.chosen, 0);
	/* Pinned to a host in maintenance: not now. */
	h[0].maintenance = true;
	assert_int_equal(place(&spread, h, 3, &req, &res, v), 0);
	assert_int_equal(res.chosen, -1);
	assert_false(res.impossible);
	assert_string_equal(v[0].reason, "up: host is in maintenance");
}

/* A down or maintenance host is passed over for the next best. */
static void test_down_and_maintenance_passed_over(void **state)
{
	struct sched_host h[3] = { mkhost("a", 64, 256), mkhost("b", 32, 128), mkhost("c", 8, 32) };
	struct sched_request req = { .vcpus = 1, .mem = GiB };
	struct sched_verdict v[3];
	struct sched_result res;

	assert_int_equal(place(&spread, h, 3, &req, &res, v), 0);
	assert_int_equal(res.chosen, 0);
	h[0].up = false;
	assert_int_equal(place(&spread, h, 3, &req, &res, v), 0);
	assert_int_equal(res.chosen, 1);
	h[1].maintenance = true;
	assert_int_equal(place(&spread, h, 3, &req, &res, v), 0);
	assert_int_equal(res.chosen, 2);
	assert_string_equal(res.summary,
			    "chose 'c' (id c, score 0.968750), the best of 1 hosts that passed, of 3");
}

/* ---- malformed requests ---- */

struct malformed_case {
	const char *name;
	void (*setup)(struct sched_policy *p, struct sched_host **h, size_t *n,
		      struct sched_request **req, struct sched_result *res);
	const char *summary;
};

static void m_vcpus0(struct sched_policy *p, struct sched_host **h, size_t *n,
		     struct sched_request **req, struct sched_result *res)
{
	(*req)->vcpus = 0;
}

static void m_mem0(struct sched_policy *p, struct sched_host **h, size_t *n,
		   struct sched_request **req, struct sched_result *res)
{
	(*req)->mem = 0;
}

static void m_no_hosts(struct sched_policy *p, struct sched_host **h, size_t *n,
		       struct sched_request **req, struct sched_result *res)
{
	*h = NULL;
}

static void m_no_verdicts(struct sched_policy *p, struct sched_host **h, size_t *n,
			  struct sched_request **req, struct sched_result *res)
{
	res->verdicts = NULL;
}

static void m_no_request(struct sched_policy *p, struct sched_host **h, size_t *n,
			 struct sched_request **req, struct sched_result *res)
{
	*req = NULL;
}

static void m_cpu_ratio0(struct sched_policy *p, struct sched_host **h, size_t *n,
			 struct sched_request **req, struct sched_result *res)
{
	p->cpu_ratio = 0;
}

static void m_cpu_ratio_nan(struct sched_policy *p, struct sched_host **h, size_t *n,
			    struct sched_request **req, struct sched_result *res)
{
	p->cpu_ratio = NAN;
}

static void m_mem_ratio_inf(struct sched_policy *p, struct sched_host **h, size_t *n,
			    struct sched_request **req, struct sched_result *res)
{
	p->mem_ratio = INFINITY;
}

static void m_mem_ratio_neg(struct sched_policy *p, struct sched_host **h, size_t *n,
			    struct sched_request **req, struct sched_result *res)
{
	p->mem_ratio = -1;
}

static void m_weigher(struct sched_policy *p, struct sched_host **h, size_t *n,
		      struct sched_request **req, struct sched_result *res)
{
	p->weigher = (enum sched_weigher)7;
}

static void m_flags_no_array(struct sched_policy *p, struct sched_host **h, size_t *n,
			     struct sched_request **req, struct sched_result *res)
{
	(*req)->ncpu_flags = 2;
}

static const char *const flags_with_null[] = { "aes", NULL };
static const char *const flags_with_empty[] = { "" };

static void m_flag_null(struct sched_policy *p, struct sched_host **h, size_t *n,
			struct sched_request **req, struct sched_result *res)
{
	(*req)->cpu_flags = flags_with_null;
	(*req)->ncpu_flags = 2;
}

static void m_flag_empty(struct sched_policy *p, struct sched_host **h, size_t *n,
			 struct sched_request **req, struct sched_result *res)
{
	(*req)->cpu_flags = flags_with_empty;
	(*req)->ncpu_flags = 1;
}

static void m_labels_no_array(struct sched_policy *p, struct sched_host **h, size_t *n,
			      struct sched_request **req, struct sched_result *res)
{
	(*req)->nhost_labels = 1;
}

static const struct sched_label label_null_key[] = { { NULL, "x" } };
static const struct sched_label label_null_value[] = { { "zone", NULL } };

static void m_label_null_key(struct sched_policy *p, struct sched_host **h, size_t *n,
			     struct sched_request **req, struct sched_result *res)
{
	(*req)->host_labels = label_null_key;
	(*req)->nhost_labels = 1;
}

static void m_label_null_value(struct sched_policy *p, struct sched_host **h, size_t *n,
			       struct sched_request **req, struct sched_result *res)
{
	(*req)->host_labels = label_null_value;
	(*req)->nhost_labels = 1;
}

static void m_pinned_empty(struct sched_policy *p, struct sched_host **h, size_t *n,
			   struct sched_request **req, struct sched_result *res)
{
	(*req)->pinned_host = "";
}

static void m_group_empty(struct sched_policy *p, struct sched_host **h, size_t *n,
			  struct sched_request **req, struct sched_result *res)
{
	(*req)->anti_affinity_group = "";
}

static void m_same_group(struct sched_policy *p, struct sched_host **h, size_t *n,
			 struct sched_request **req, struct sched_result *res)
{
	(*req)->affinity_group = "g";
	(*req)->anti_affinity_group = "g";
}

static void m_host_no_id(struct sched_policy *p, struct sched_host **h, size_t *n,
			 struct sched_request **req, struct sched_result *res)
{
	(*h)[1].id = NULL;
}

static void m_host_flags_no_array(struct sched_policy *p, struct sched_host **h, size_t *n,
				  struct sched_request **req, struct sched_result *res)
{
	(*h)[0].ncpu_flags = 3;
}

static const struct malformed_case malformed_cases[] = {
	{ "vcpus 0", m_vcpus0, "malformed placement request: vcpus is 0; a VM needs at least 1" },
	{ "memory 0", m_mem0, "malformed placement request: memory is 0; a VM needs some" },
	{ "NULL hosts", m_no_hosts,
	  "malformed placement request: no host array with a host count above 0" },
	{ "NULL verdicts", m_no_verdicts,
	  "malformed placement request: no verdict array with a host count above 0" },
	{ "NULL request", m_no_request, "malformed placement request: no request" },
	{ "cpu ratio 0", m_cpu_ratio0,
	  "malformed placement request: policy cpu_ratio must be a finite number above 0" },
	{ "cpu ratio NaN", m_cpu_ratio_nan,
	  "malformed placement request: policy cpu_ratio must be a finite number above 0" },
	{ "mem ratio inf", m_mem_ratio_inf,
	  "malformed placement request: policy mem_ratio must be a finite number above 0" },
	{ "mem ratio -1", m_mem_ratio_neg,
	  "malformed placement request: policy mem_ratio must be a finite number above 0" },
	{ "weigher 7", m_weigher,
	  "malformed placement request: policy weigher is neither spread nor pack" },
	{ "flags count", m_flags_no_array,
	  "malformed placement request: cpu_flags: a count but no array" },
	{ "NULL flag", m_flag_null, "malformed placement request: cpu_flags: an empty flag name" },
	{ "empty flag", m_flag_empty, "malformed placement request: cpu_flags: an empty flag name" },
	{ "labels count", m_labels_no_array,
	  "malformed placement request: host_labels: a count but no array" },
	{ "label NULL key", m_label_null_key,
	  "malformed placement request: host_labels: a label without key or value" },
	{ "label NULL value", m_label_null_value,
	  "malformed placement request: host_labels: a label without key or value" },
	{ "pinned empty", m_pinned_empty,
	  "malformed placement request: pinned host is an empty string (absent is NULL)" },
	{ "group empty", m_group_empty,
	  "malformed placement request: group name is an empty string (absent is NULL)" },
	{ "same group", m_same_group,
	  "malformed placement request: the same group for affinity and anti-affinity" },
	{ "host without id", m_host_no_id, "malformed host array: host at index 1 has no id" },
	{ "host flags count", m_host_flags_no_array,
	  "malformed host array: host at index 0 has a count above 0 with no array" },
};

static void test_malformed(void **state)
{
	for (size_t c = 0; c < ARRAY_SIZE(malformed_cases); c++) {
		struct sched_policy p = spread;
		struct sched_host hosts[2] = { mkhost("a", 4, 16), mkhost("b", 4, 16) };
		struct sched_host *h = hosts;
		struct sched_request r = { .vcpus = 1, .mem = GiB }, *req = &r;
		struct sched_verdict v[2];
		struct sched_result res = { .verdicts = v };
		size_t n = 2;

		print_message("case %s\n", malformed_cases[c].name);
		malformed_cases[c].setup(&p, &h, &n, &req, &res);
		assert_int_equal(sched_place(&p, h, n, req, &res), -EINVAL);
		assert_int_equal(res.chosen, -1);
		assert_string_equal(res.summary, malformed_cases[c].summary);
	}
	struct sched_host h = mkhost("a", 4, 16);
	struct sched_request req = { .vcpus = 1, .mem = GiB };
	struct sched_result res = { 0 };

	assert_int_equal(sched_place(&spread, &h, 1, &req, NULL), -EINVAL);
	assert_int_equal(sched_place(NULL, &h, 1, &req, &res), -EINVAL);
	assert_string_equal(res.summary, "malformed placement request: no policy");
	/* n == 0 needs no arrays at all. */
	assert_int_equal(sched_place(&spread, NULL, 0, &req, &res), 0);
	assert_int_equal(res.chosen, -1);
}

/* ---- reasons cut to fit stay valid UTF-8 ---- */

static bool valid_utf8(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p) {
		size_t len = *p < 0x80 ? 1 : (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3
			     : (*p & 0xf8) == 0xf0 ? 4 : 0;
		if (!len)
			return false;
		for (size_t i = 1; i < len; i++)
			if ((p[i] & 0xc0) != 0x80)
				return false;
		p += len;
	}
	return true;
}

static void test_long_reason_cut_on_character(void **state)
{
	/* "é" is two bytes; every offset of the cut is tried. */
	for (size_t pad = 0; pad < 4; pad++) {
		char value[400];
		struct sched_label want[1] = { { "zone", value } };
		struct sched_host h = mkhost("h", 4, 16);
		struct sched_request req = { .vcpus = 1, .mem = GiB, .host_labels = want,
					     .nhost_labels = 1 };
		struct sched_verdict v[1];
		struct sched_result res;
		size_t len = 0;

		memset(value, 'x', pad);
		len = pad;
		while (len + 3 < sizeof(value)) {
			memcpy(value + len, "\xc3\xa9", 2);
			len += 2;
		}
		value[len] = '\0';
		h.labels = labels_a;
		h.nlabels = ARRAY_SIZE(labels_a);
		assert_int_equal(place(&spread, &h, 1, &req, &res, v), 0);
		len = strlen(v[0].reason);
		assert_true(len >= SCHED_REASON_MAX - 5 && len < SCHED_REASON_MAX);
		assert_string_equal(v[0].reason + len - 3, "...");
		assert_true(valid_utf8(v[0].reason));
		assert_true(valid_utf8(res.summary));
		assert_true(strlen(res.summary) >= SCHED_SUMMARY_MAX - 5);
		assert_string_equal(res.summary + strlen(res.summary) - 3, "...");
		assert_memory_equal(res.summary, "impossible: host_labels: no host has zone=", 42);
	}
}

/* ---- sched_host_check ---- */

static void test_host_check(void **state)
{
	static const char *const unsorted[] = { "avx2", "aes" };
	static const char *const repeated[] = { "aes", "aes" };
	struct sched_host h = mkhost("h1", 4, 16);
	char err[128];

	h.cpu_flags = flags_avx512;
	h.ncpu_flags = ARRAY_SIZE(flags_avx512);
	assert_int_equal(sched_host_check(&h, err, sizeof(err)), 0);
	h.cpu_flags = unsorted;
	h.ncpu_flags = 2;
	assert_int_equal(sched_host_check(&h, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "host 'h1': CPU flags not sorted (strcmp) or repeated at 'aes'");
	h.cpu_flags = repeated;
	assert_int_equal(sched_host_check(&h, err, sizeof(err)), -EINVAL);
	h.cpu_flags = flags_avx2;
	h.groups = flags_with_null;
	h.ngroups = 2;
	assert_int_equal(sched_host_check(&h, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "host 'h1': an empty group name");
	h.ngroups = 0;
	h.id = NULL;
	assert_int_equal(sched_host_check(&h, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "host '(no id)': no id");
	assert_int_equal(sched_host_check(NULL, NULL, 0), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_filter_reasons),
		cmocka_unit_test(test_fixture_host_accepts),
		cmocka_unit_test(test_impossible_vs_not_now),
		cmocka_unit_test(test_deterministic_and_order_free),
		cmocka_unit_test(test_tie_goes_to_smaller_id),
		cmocka_unit_test(test_spread_fills_evenly_pack_fills_first),
		cmocka_unit_test(test_weighers_on_unequal_hosts),
		cmocka_unit_test(test_vm_penalty),
		cmocka_unit_test(test_capacity_boundaries),
		cmocka_unit_test(test_host_capacity),
		cmocka_unit_test(test_affinity),
		cmocka_unit_test(test_affinity_full_host),
		cmocka_unit_test(test_anti_affinity),
		cmocka_unit_test(test_pinned_by_id_and_name),
		cmocka_unit_test(test_down_and_maintenance_passed_over),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_long_reason_cut_on_character),
		cmocka_unit_test(test_host_check),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
