/* The scheduler (sched.h states the contract). One pass over the hosts runs
 * each through the filters in their table's order, scores the survivors and
 * keeps the best; only when no host survives does a second pass ask whether
 * any host could ever take the request (impossible vs not now), so the
 * common case costs one pass.
 *
 * Invariants the code rests on:
 *   (1) the result depends on the set of hosts, never on their order: scores
 *       are computed from one host's numbers alone, ties go to the smaller id,
 *       and the one host named in a reason on behalf of others (affinity) is
 *       the smallest id among them;
 *   (2) nothing is allocated and nothing outside *res is written; a reason is
 *       formatted only for a host that is rejected;
 *   (3) every string written to res is NUL-terminated and, when cut to fit,
 *       cut on a UTF-8 character boundary and ended with "...", so that it
 *       can go into JSON as it is. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched.h"

/* A sentence built into a fixed buffer without snprintf on the common
 * pieces (the scheduler formats one per rejected host, thousands per call). */
struct line {
	char *buf;
	size_t cap, len;
	bool cut;
};

static void line_init(struct line *l, char *buf, size_t cap)
{
	l->buf = buf;
	l->cap = cap;
	l->len = 0;
	l->cut = false;
	if (cap)
		buf[0] = '\0';
}

/* Inlined so that appending a literal copies a known length in a few moves. */
static inline __attribute__((always_inline)) void line_mem(struct line *l, const char *s,
							   size_t n)
{
	if (l->cut || !l->cap)
		return;
	size_t room = l->cap - 1 - l->len;
	if (n > room) {
		n = room;
		l->cut = true;
	}
	memcpy(l->buf + l->len, s, n);
	l->len += n;
	l->buf[l->len] = '\0';
}

static void line_str(struct line *l, const char *s)
{
	line_mem(l, s, strlen(s));
}

/* A string literal, its length known at compile time. */
#define line_lit(l, s) line_mem((l), "" s, sizeof(s) - 1)

static void line_u64(struct line *l, uint64_t v)
{
	char tmp[20];
	size_t i = sizeof(tmp);

	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	line_mem(l, tmp + i, sizeof(tmp) - i);
}

/* Exact, and as short as exactness allows: "64 GiB", "1536 MiB", "1073741825 B";
 * a boundary case one byte over must not read as equal. */
static void line_size(struct line *l, uint64_t bytes)
{
	static const struct { uint64_t unit; const char *name; } units[] = {
		{ 1ULL << 40, " TiB" }, { 1ULL << 30, " GiB" }, { 1ULL << 20, " MiB" },
		{ 1ULL << 10, " KiB" },
	};

	if (!bytes) {
		line_lit(l, "0");
		return;
	}
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (bytes % units[i].unit == 0) {
			line_u64(l, bytes / units[i].unit);
			line_str(l, units[i].name);
			return;
		}
	}
	line_u64(l, bytes);
	line_lit(l, " B");
}

/* A quoted name, as reasons show user-given strings. */
static void line_quoted(struct line *l, const char *s)
{
	line_lit(l, "'");
	line_str(l, s);
	line_lit(l, "'");
}

/* Invariant (3): a cut line loses whole characters and says so. */
static void line_end(struct line *l)
{
	static const char more[] = "...";

	if (!l->cut || l->cap < sizeof(more))
		return;
	size_t len = l->len;
	if (len > l->cap - sizeof(more))
		len = l->cap - sizeof(more);
	while (len && ((unsigned char)l->buf[len] & 0xc0) == 0x80)
		len--;
	memcpy(l->buf + len, more, sizeof(more));
	l->len = len + sizeof(more) - 1;
}

static const char *host_label(const struct sched_host *h)
{
	return h->name && h->name[0] ? h->name : h->id;
}

/* An overcommit ratio, read once per call: whole ratios (1, 2, 4...), the
 * common case, then multiply exactly in integers. (No libm here: the
 * controller library does not link it, and integers do the job exactly.) */
struct ratio {
	uint64_t whole;        /* the ratio when it is a whole number, else 0 */
	double value;
};

static bool ratio_valid(double r)
{
	return r > 0 && __builtin_isfinite(r);
}

/* r is valid (ratio_valid, checked first). */
static bool ratio_is_whole(double r)
{
	return r < 4294967296.0 && r == (double)(uint64_t)r;
}

static struct ratio ratio_make(double r)
{
	return (struct ratio){ .whole = ratio_is_whole(r) ? (uint64_t)r : 0, .value = r };
}

/* "4.0", "1.5", "1.25": as the operator wrote it in the configuration.
 * Formatted once per call, not once per rejected host. */
static void ratio_text(char *buf, size_t len, double r)
{
	snprintf(buf, len, ratio_is_whole(r) ? "%.1f" : "%g", r);
}

/* floor(base x ratio), except that a product a rounding error below an
 * integer counts as that integer: 45 cpus x 1.4 allow 63 vCPUs, not 62
 * (the double product is 62.99999999999999). */
static uint64_t scaled(uint64_t base, struct ratio r)
{
	if (r.whole)
		return base > UINT64_MAX / r.whole ? UINT64_MAX : base * r.whole;
	double v = (double)base * r.value;
	if (v >= 18446744073709551616.0)
		return UINT64_MAX;
	uint64_t below = (uint64_t)v;  /* truncation: the floor of a product >= 0 */
	if (below < UINT64_MAX && (double)(below + 1) - v <= v * 1e-12)
		return below + 1;
	return below;
}

static uint64_t allowed_vcpus(struct ratio r, const struct sched_host *h)
{
	return scaled(h->cpus > h->reserved_cpus ? h->cpus - h->reserved_cpus : 0, r);
}

static uint64_t allowed_mem(struct ratio r, const struct sched_host *h)
{
	return scaled(h->mem > h->reserved_mem ? h->mem - h->reserved_mem : 0, r);
}

/* allocated + requested <= allowed, without overflow whatever the inputs. */
static bool fits(uint64_t allocated, uint64_t requested, uint64_t allowed)
{
	return requested <= allowed && allocated <= allowed - requested;
}

static int cmp_str(const void *key, const void *elem)
{
	return strcmp(key, *(const char *const *)elem);
}

static bool host_has_flag(const struct sched_host *h, const char *flag)
{
	return h->ncpu_flags &&
	       bsearch(flag, h->cpu_flags, h->ncpu_flags, sizeof(h->cpu_flags[0]), cmp_str);
}

/* The host's value for key, or NULL. */
static const char *host_label_value(const struct sched_host *h, const char *key)
{
	for (size_t i = 0; i < h->nlabels; i++)
		if (!strcmp(h->labels[i].key, key))
			return h->labels[i].value;
	return NULL;
}

static bool host_has_label(const struct sched_host *h, const struct sched_label *want)
{
	const char *v = host_label_value(h, want->key);

	return v && !strcmp(v, want->value);
}

static bool host_has_group(const struct sched_host *h, const char *group)
{
	for (size_t i = 0; i < h->ngroups; i++)
		if (!strcmp(h->groups[i], group))
			return true;
	return false;
}

static bool host_is_pinned(const struct sched_host *h, const char *pinned)
{
	return !strcmp(h->id, pinned) || (h->name && !strcmp(h->name, pinned));
}

/* What one placement needs to know besides the host at hand. */
struct place {
	const struct sched_policy *p;
	const struct sched_request *req;
	struct ratio cpu, mem;
	char cpu_ratio[32], mem_ratio[32];       /* as reasons print them */
	size_t affinity_hosts;                   /* hosts running the affinity group */
	const struct sched_host *affinity_first; /* the smallest id among them */
};

/* A filter passes h, or writes why not into why and fails it. */
typedef bool filter_fn(const struct place *pl, const struct sched_host *h, struct line *why);

static bool uses_pinned(const struct sched_request *req)
{
	return req->pinned_host;
}

static bool uses_cpu_flags(const struct sched_request *req)
{
	return req->ncpu_flags;
}

static bool uses_host_labels(const struct sched_request *req)
{
	return req->nhost_labels;
}

static bool uses_affinity(const struct sched_request *req)
{
	return req->affinity_group;
}

static bool uses_anti_affinity(const struct sched_request *req)
{
	return req->anti_affinity_group;
}

static bool filter_up(const struct place *pl, const struct sched_host *h, struct line *why)
{
	if (h->up && !h->maintenance)
		return true;
	line_str(why, !h->up && h->maintenance ? "up: host is down and in maintenance"
		      : !h->up ? "up: host is down (no heartbeat)" : "up: host is in maintenance");
	return false;
}

static bool filter_pinned(const struct place *pl, const struct sched_host *h, struct line *why)
{
	const char *pinned = pl->req->pinned_host;

	if (!pinned || host_is_pinned(h, pinned))
		return true;
	line_lit(why, "pinned: the VM is pinned to host ");
	line_quoted(why, pinned);
	return false;
}

static bool filter_vcpus(const struct place *pl, const struct sched_host *h, struct line *why)
{
	uint64_t allowed = allowed_vcpus(pl->cpu, h);

	if (fits(h->vcpus_allocated, pl->req->vcpus, allowed))
		return true;
	line_lit(why, "vcpus: ");
	line_u64(why, h->vcpus_allocated);
	line_lit(why, " allocated + ");
	line_u64(why, pl->req->vcpus);
	line_lit(why, " requested > ");
	line_u64(why, allowed);
	line_lit(why, " allowed ((");
	line_u64(why, h->cpus);
	line_lit(why, " cpus - ");
	line_u64(why, h->reserved_cpus);
	line_lit(why, " reserved) x ");
	line_str(why, pl->cpu_ratio);
	line_lit(why, ")");
	return false;
}

static bool filter_memory(const struct place *pl, const struct sched_host *h, struct line *why)
{
	uint64_t allowed = allowed_mem(pl->mem, h);

	if (fits(h->mem_allocated, pl->req->mem, allowed))
		return true;
	line_lit(why, "memory: ");
	line_size(why, h->mem_allocated);
	line_lit(why, " allocated + ");
	line_size(why, pl->req->mem);
	line_lit(why, " requested > ");
	line_size(why, allowed);
	line_lit(why, " allowed ((");
	line_size(why, h->mem);
	line_lit(why, " - ");
	line_size(why, h->reserved_mem);
	line_lit(why, " reserved) x ");
	line_str(why, pl->mem_ratio);
	line_lit(why, ")");
	return false;
}

static bool filter_cpu_flags(const struct place *pl, const struct sched_host *h, struct line *why)
{
	const struct sched_request *req = pl->req;
	size_t missing = 0;

	for (size_t i = 0; i < req->ncpu_flags; i++) {
		if (host_has_flag(h, req->cpu_flags[i]))
			continue;
		line_str(why, missing++ ? ", " : "cpu_flags: host lacks ");
		line_str(why, req->cpu_flags[i]);
	}
	return !missing;
}

static bool filter_host_labels(const struct place *pl, const struct sched_host *h,
			       struct line *why)
{
	const struct sched_request *req = pl->req;
	size_t missing = 0;

	for (size_t i = 0; i < req->nhost_labels; i++) {
		const struct sched_label *want = &req->host_labels[i];
		const char *have = host_label_value(h, want->key);

		if (have && !strcmp(have, want->value))
			continue;
		line_str(why, missing++ ? "; " : "host_labels: ");
		line_str(why, want->key);
		line_lit(why, "=");
		line_str(why, want->value);
		line_lit(why, " asked, host has ");
		if (have) {
			line_str(why, want->key);
			line_lit(why, "=");
			line_str(why, have);
		} else {
			line_lit(why, "no label ");
			line_str(why, want->key);
		}
	}
	return !missing;
}

static bool filter_affinity(const struct place *pl, const struct sched_host *h, struct line *why)
{
	const char *group = pl->req->affinity_group;

	if (!group || !pl->affinity_hosts || host_has_group(h, group))
		return true;
	line_lit(why, "affinity: VMs of group ");
	line_quoted(why, group);
	line_lit(why, " run on ");
	line_quoted(why, host_label(pl->affinity_first));
	if (pl->affinity_hosts > 1) {
		line_lit(why, " and ");
		line_u64(why, pl->affinity_hosts - 1);
		line_str(why, pl->affinity_hosts > 2 ? " other hosts" : " other host");
	}
	line_lit(why, ", not here");
	return false;
}

static bool filter_anti_affinity(const struct place *pl, const struct sched_host *h,
				 struct line *why)
{
	const char *group = pl->req->anti_affinity_group;

	if (!group || !host_has_group(h, group))
		return true;
	line_lit(why, "anti_affinity: a VM of group ");
	line_quoted(why, group);
	line_lit(why, " already runs here");
	return false;
}

/* The order of sched.h; a host rejected by one filter meets no other.
 * applies: whether the request uses the filter at all (NULL: always), so
 * that a plain request costs three filters per host, not eight. */
static const struct filter {
	const char *name;
	filter_fn *pass;
	bool (*applies)(const struct sched_request *req);
} filters[] = {
	{ "up", filter_up, NULL },
	{ "pinned", filter_pinned, uses_pinned },
	{ "vcpus", filter_vcpus, NULL },
	{ "memory", filter_memory, NULL },
	{ "cpu_flags", filter_cpu_flags, uses_cpu_flags },
	{ "host_labels", filter_host_labels, uses_host_labels },
	{ "affinity", filter_affinity, uses_affinity },
	{ "anti_affinity", filter_anti_affinity, uses_anti_affinity },
};
#define NFILTERS (sizeof(filters) / sizeof(filters[0]))

/* Free capacity after this VM (not before), so that of two empty hosts the
 * larger one, which this VM fills less, ranks first under spread. */
static double host_score(const struct place *pl, const struct sched_host *h)
{
	const struct sched_request *req = pl->req;
	uint64_t av = allowed_vcpus(pl->cpu, h), am = allowed_mem(pl->mem, h);
	double free_vcpus = (double)(av - h->vcpus_allocated - req->vcpus) / (double)av;
	double free_mem = (double)(am - h->mem_allocated - req->mem) / (double)am;
	double free = (free_vcpus + free_mem) / 2;
	double score = pl->p->weigher == SCHED_SPREAD ? free : 1.0 - free;

	return score - SCHED_VM_PENALTY * h->vms;
}

static bool better(double score, const struct sched_host *h, double best_score,
		   const struct sched_host *best)
{
	return !best || score > best_score || (score == best_score && strcmp(h->id, best->id) < 0);
}

static int malformed(struct sched_result *res, const char *what)
{
	struct line l;

	line_init(&l, res->summary, sizeof(res->summary));
	line_lit(&l, "malformed placement request: ");
	line_str(&l, what);
	line_end(&l);
	return -EINVAL;
}

static bool bad_name(const char *s)
{
	return s && !s[0];
}

static int check_request(const struct sched_policy *p, const struct sched_request *req,
			 struct sched_result *res)
{
	if (!p)
		return malformed(res, "no policy");
	if (!ratio_valid(p->cpu_ratio))
		return malformed(res, "policy cpu_ratio must be a finite number above 0");
	if (!ratio_valid(p->mem_ratio))
		return malformed(res, "policy mem_ratio must be a finite number above 0");
	if (p->weigher != SCHED_SPREAD && p->weigher != SCHED_PACK)
		return malformed(res, "policy weigher is neither spread nor pack");
	if (!req)
		return malformed(res, "no request");
	if (!req->vcpus)
		return malformed(res, "vcpus is 0; a VM needs at least 1");
	if (!req->mem)
		return malformed(res, "memory is 0; a VM needs some");
	if (req->ncpu_flags && !req->cpu_flags)
		return malformed(res, "cpu_flags: a count but no array");
	for (size_t i = 0; i < req->ncpu_flags; i++)
		if (!req->cpu_flags[i] || !req->cpu_flags[i][0])
			return malformed(res, "cpu_flags: an empty flag name");
	if (req->nhost_labels && !req->host_labels)
		return malformed(res, "host_labels: a count but no array");
	for (size_t i = 0; i < req->nhost_labels; i++)
		if (!req->host_labels[i].key || !req->host_labels[i].key[0] ||
		    !req->host_labels[i].value)
			return malformed(res, "host_labels: a label without key or value");
	if (bad_name(req->pinned_host))
		return malformed(res, "pinned host is an empty string (absent is NULL)");
	if (bad_name(req->affinity_group) || bad_name(req->anti_affinity_group))
		return malformed(res, "group name is an empty string (absent is NULL)");
	if (req->affinity_group && req->anti_affinity_group &&
	    !strcmp(req->affinity_group, req->anti_affinity_group))
		return malformed(res, "the same group for affinity and anti-affinity");
	return 0;
}

/* What sched_place trusts of a host on every call (the cheap part of
 * sched_host_check). */
static bool host_usable(const struct sched_host *h)
{
	return h->id && (!h->ncpu_flags || h->cpu_flags) && (!h->nlabels || h->labels) &&
	       (!h->ngroups || h->groups);
}

/* Could h take req if it were empty, up and out of maintenance? */
static bool host_could_ever(const struct place *pl, const struct sched_host *h)
{
	const struct sched_request *req = pl->req;

	if (req->pinned_host && !host_is_pinned(h, req->pinned_host))
		return false;
	if (req->vcpus > allowed_vcpus(pl->cpu, h) || req->mem > allowed_mem(pl->mem, h))
		return false;
	for (size_t i = 0; i < req->ncpu_flags; i++)
		if (!host_has_flag(h, req->cpu_flags[i]))
			return false;
	for (size_t i = 0; i < req->nhost_labels; i++)
		if (!host_has_label(h, &req->host_labels[i]))
			return false;
	return true;
}

/* A host the request could name: the pinned one, or any. */
static bool candidate(const struct place *pl, const struct sched_host *h)
{
	return !pl->req->pinned_host || host_is_pinned(h, pl->req->pinned_host);
}

/* The candidate allowing the most vCPUs and the one allowing the most
 * memory (ties: the smaller id); NULL when there is no candidate. */
struct largest {
	const struct sched_host *vcpus_host, *mem_host;
	uint64_t vcpus, mem;
};

static struct largest find_largest(const struct place *pl, const struct sched_host *hosts,
				   size_t n)
{
	struct largest big = { 0 };

	for (size_t i = 0; i < n; i++) {
		const struct sched_host *h = &hosts[i];

		if (!candidate(pl, h))
			continue;
		uint64_t v = allowed_vcpus(pl->cpu, h), m = allowed_mem(pl->mem, h);
		if (!big.vcpus_host || v > big.vcpus ||
		    (v == big.vcpus && strcmp(h->id, big.vcpus_host->id) < 0)) {
			big.vcpus_host = h;
			big.vcpus = v;
		}
		if (!big.mem_host || m > big.mem ||
		    (m == big.mem && strcmp(h->id, big.mem_host->id) < 0)) {
			big.mem_host = h;
			big.mem = m;
		}
	}
	return big;
}

/* "... allowed even on host 'big', the largest, when empty" */
static void explain_largest(const struct place *pl, const struct sched_host *h, struct line *l)
{
	line_str(l, pl->req->pinned_host ? " allowed on the pinned host " : " allowed even on host ");
	line_quoted(l, host_label(h));
	line_str(l, pl->req->pinned_host ? " when empty" : ", the largest, when empty");
}

/* The requested flags and labels that no candidate has; false if none. */
static bool explain_missing(const struct place *pl, const struct sched_host *hosts, size_t n,
			    struct line *l)
{
	const struct sched_request *req = pl->req;
	const char *no_host = req->pinned_host ? "the pinned host lacks " : "no host has ";
	size_t missing = 0, i;

	for (size_t f = 0; f < req->ncpu_flags; f++) {
		for (i = 0; i < n; i++)
			if (candidate(pl, &hosts[i]) && host_has_flag(&hosts[i], req->cpu_flags[f]))
				break;
		if (i < n)
			continue;
		line_str(l, missing++ ? ", " : "cpu_flags: ");
		line_str(l, missing == 1 ? no_host : "");
		line_str(l, req->cpu_flags[f]);
	}
	size_t flags_missing = missing;
	for (size_t k = 0; k < req->nhost_labels; k++) {
		for (i = 0; i < n; i++)
			if (candidate(pl, &hosts[i]) && host_has_label(&hosts[i], &req->host_labels[k]))
				break;
		if (i < n)
			continue;
		line_str(l, missing == flags_missing ? (missing ? "; host_labels: " : "host_labels: ")
						     : ", ");
		line_str(l, missing++ == flags_missing ? no_host : "");
		line_str(l, req->host_labels[k].key);
		line_lit(l, "=");
		line_str(l, req->host_labels[k].value);
	}
	return missing;
}

/* The one sentence of a 422: the first constraint, in filter order, that
 * no candidate host meets even alone, or else that none meets them all. */
static void explain_impossible(const struct place *pl, const struct sched_host *hosts, size_t n,
			       struct line *l)
{
	const struct sched_request *req = pl->req;
	struct largest big = find_largest(pl, hosts, n);

	line_lit(l, "impossible: ");
	if (!big.vcpus_host) {
		line_lit(l, "pinned: no host has the id or name ");
		line_quoted(l, req->pinned_host);
	} else if (req->vcpus > big.vcpus) {
		line_lit(l, "vcpus: ");
		line_u64(l, req->vcpus);
		line_lit(l, " requested > ");
		line_u64(l, big.vcpus);
		explain_largest(pl, big.vcpus_host, l);
	} else if (req->mem > big.mem) {
		line_lit(l, "memory: ");
		line_size(l, req->mem);
		line_lit(l, " requested > ");
		line_size(l, big.mem);
		explain_largest(pl, big.mem_host, l);
	} else if (!explain_missing(pl, hosts, n, l)) {
		line_lit(l, "no single host meets vcpus, memory");
		line_str(l, req->ncpu_flags ? ", cpu_flags" : "");
		line_str(l, req->nhost_labels ? ", host_labels" : "");
		line_lit(l, " all at once, though some host meets each");
	}
}

static void explain_not_now(const size_t rejected[NFILTERS], size_t n, struct line *l)
{
	bool first = true;

	if (!n) {
		line_lit(l, "no host can take it now: no hosts are registered");
		return;
	}
	line_lit(l, "no host can take it now: of ");
	line_u64(l, n);
	line_str(l, n > 1 ? " hosts, rejected by " : " host, rejected by ");
	for (size_t f = 0; f < NFILTERS; f++) {
		if (!rejected[f])
			continue;
		line_str(l, first ? "" : ", ");
		line_str(l, filters[f].name);
		line_lit(l, " ");
		line_u64(l, rejected[f]);
		first = false;
	}
}

static void explain_chosen(const struct sched_host *h, double score, size_t accepted, size_t n,
			   struct line *l)
{
	char tmp[48];

	line_lit(l, "chose ");
	line_quoted(l, host_label(h));
	line_lit(l, " (id ");
	line_str(l, h->id);
	snprintf(tmp, sizeof(tmp), ", score %.6f", score);
	line_str(l, tmp);
	line_lit(l, "), the best of ");
	line_u64(l, accepted);
	line_lit(l, " hosts that passed, of ");
	line_u64(l, n);
}

/* Where the affinity group runs; the smallest id among those hosts is the
 * one a reason names (invariant (1)). */
static void find_affinity(struct place *pl, const struct sched_host *hosts, size_t n)
{
	const char *group = pl->req->affinity_group;

	if (!group)
		return;
	for (size_t i = 0; i < n; i++) {
		if (!host_usable(&hosts[i]) || !host_has_group(&hosts[i], group))
			continue;
		pl->affinity_hosts++;
		if (!pl->affinity_first || strcmp(hosts[i].id, pl->affinity_first->id) < 0)
			pl->affinity_first = &hosts[i];
	}
}

int sched_place(const struct sched_policy *p, const struct sched_host *hosts, size_t n,
		const struct sched_request *req, struct sched_result *res)
{
	struct place pl = { .p = p, .req = req };
	size_t rejected[NFILTERS] = { 0 }, accepted = 0, nactive = 0;
	uint8_t active[NFILTERS];
	const struct sched_host *best = NULL;
	double best_score = 0;
	struct line l;
	int err;

	if (!res)
		return -EINVAL;
	res->chosen = -1;
	res->impossible = false;
	res->summary[0] = '\0';
	err = check_request(p, req, res);
	if (err)
		return err;
	if (n && !hosts)
		return malformed(res, "no host array with a host count above 0");
	if (n && !res->verdicts)
		return malformed(res, "no verdict array with a host count above 0");
	if (n > INT32_MAX)
		return malformed(res, "more hosts than an int can index");
	find_affinity(&pl, hosts, n);
	pl.cpu = ratio_make(p->cpu_ratio);
	pl.mem = ratio_make(p->mem_ratio);
	ratio_text(pl.cpu_ratio, sizeof(pl.cpu_ratio), p->cpu_ratio);
	ratio_text(pl.mem_ratio, sizeof(pl.mem_ratio), p->mem_ratio);
	for (size_t f = 0; f < NFILTERS; f++)
		if (!filters[f].applies || filters[f].applies(req))
			active[nactive++] = (uint8_t)f;

	for (size_t i = 0; i < n; i++) {
		const struct sched_host *h = &hosts[i];
		struct sched_verdict *v = &res->verdicts[i];
		size_t a;

		if (!host_usable(h)) {
			res->verdicts[i].accepted = false;
			line_init(&l, res->summary, sizeof(res->summary));
			line_lit(&l, "malformed host array: host at index ");
			line_u64(&l, i);
			line_str(&l, h->id ? " has a count above 0 with no array" : " has no id");
			line_end(&l);
			res->chosen = -1;
			return -EINVAL;
		}
		line_init(&l, v->reason, sizeof(v->reason));
		for (a = 0; a < nactive; a++)
			if (!filters[active[a]].pass(&pl, h, &l))
				break;
		v->accepted = a == nactive;
		v->score = 0;
		if (!v->accepted) {
			line_end(&l);
			rejected[active[a]]++;
			continue;
		}
		accepted++;
		v->score = host_score(&pl, h);
		if (better(v->score, h, best_score, best)) {
			best = h;
			best_score = v->score;
			res->chosen = (int)i;
		}
	}

	line_init(&l, res->summary, sizeof(res->summary));
	if (best) {
		explain_chosen(best, best_score, accepted, n, &l);
	} else {
		size_t i;

		for (i = 0; i < n; i++)
			if (host_could_ever(&pl, &hosts[i]))
				break;
		res->impossible = n && i == n;
		if (res->impossible)
			explain_impossible(&pl, hosts, n, &l);
		else
			explain_not_now(rejected, n, &l);
	}
	line_end(&l);
	return 0;
}

int sched_host_capacity(const struct sched_policy *p, const struct sched_host *h,
			uint64_t *vcpus, uint64_t *mem)
{
	if (!p || !h || !ratio_valid(p->cpu_ratio) || !ratio_valid(p->mem_ratio))
		return -EINVAL;
	if (vcpus)
		*vcpus = allowed_vcpus(ratio_make(p->cpu_ratio), h);
	if (mem)
		*mem = allowed_mem(ratio_make(p->mem_ratio), h);
	return 0;
}

static int host_bad(const struct sched_host *h, char *err, size_t errlen, const char *what,
		    const char *detail)
{
	struct line l;

	if (!errlen)
		return -EINVAL;
	line_init(&l, err, errlen);
	line_lit(&l, "host ");
	line_quoted(&l, h && h->id ? h->id : "(no id)");
	line_lit(&l, ": ");
	line_str(&l, what);
	if (detail)
		line_quoted(&l, detail);
	line_end(&l);
	return -EINVAL;
}

int sched_host_check(const struct sched_host *h, char *err, size_t errlen)
{
	if (!h)
		return host_bad(h, err, errlen, "no host", NULL);
	if (!h->id || !h->id[0])
		return host_bad(h, err, errlen, "no id", NULL);
	if (!host_usable(h))
		return host_bad(h, err, errlen, "a count above 0 with no array", NULL);
	for (size_t i = 0; i < h->ncpu_flags; i++) {
		if (!h->cpu_flags[i] || !h->cpu_flags[i][0])
			return host_bad(h, err, errlen, "an empty CPU flag", NULL);
		if (i && strcmp(h->cpu_flags[i - 1], h->cpu_flags[i]) >= 0)
			return host_bad(h, err, errlen,
					"CPU flags not sorted (strcmp) or repeated at ",
					h->cpu_flags[i]);
	}
	for (size_t i = 0; i < h->nlabels; i++)
		if (!h->labels[i].key || !h->labels[i].key[0] || !h->labels[i].value)
			return host_bad(h, err, errlen, "a label without key or value", NULL);
	for (size_t i = 0; i < h->ngroups; i++)
		if (!h->groups[i] || !h->groups[i][0])
			return host_bad(h, err, errlen, "an empty group name", NULL);
	return 0;
}
