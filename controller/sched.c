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
#include <math.h>
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

static void line_mem(struct line *l, const char *s, size_t n)
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
		line_str(l, "0");
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
	line_str(l, " B");
}

/* "4.0", "1.5", "1.25": as the operator wrote it in the configuration. */
static void line_ratio(struct line *l, double r)
{
	char tmp[32];

	snprintf(tmp, sizeof(tmp), r == floor(r) ? "%.1f" : "%g", r);
	line_str(l, tmp);
}

/* A quoted name, as reasons show user-given strings. */
static void line_quoted(struct line *l, const char *s)
{
	line_str(l, "'");
	line_str(l, s);
	line_str(l, "'");
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

/* floor(base x ratio), except that a product a rounding error below an
 * integer counts as that integer: 45 cpus x 1.4 allow 63 vCPUs, not 62
 * (the double product is 62.99999999999999). */
static uint64_t scaled(uint64_t base, double ratio)
{
	if (ratio == 1.0)
		return base;
	double v = (double)base * ratio;
	double r = nearbyint(v);
	v = fabs(v - r) <= v * 1e-12 ? r : floor(v);
	return v >= 18446744073709551616.0 ? UINT64_MAX : (uint64_t)v;
}

static uint64_t allowed_vcpus(const struct sched_policy *p, const struct sched_host *h)
{
	return scaled(h->cpus > h->reserved_cpus ? h->cpus - h->reserved_cpus : 0, p->cpu_ratio);
}

static uint64_t allowed_mem(const struct sched_policy *p, const struct sched_host *h)
{
	return scaled(h->mem > h->reserved_mem ? h->mem - h->reserved_mem : 0, p->mem_ratio);
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
	size_t affinity_hosts;                   /* hosts running the affinity group */
	const struct sched_host *affinity_first; /* the smallest id among them */
};

/* A filter passes h, or writes why not into why and fails it. */
typedef bool filter_fn(const struct place *pl, const struct sched_host *h, struct line *why);

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
	line_str(why, "pinned: the VM is pinned to host ");
	line_quoted(why, pinned);
	return false;
}

static bool filter_vcpus(const struct place *pl, const struct sched_host *h, struct line *why)
{
	uint64_t allowed = allowed_vcpus(pl->p, h);

	if (fits(h->vcpus_allocated, pl->req->vcpus, allowed))
		return true;
	line_str(why, "vcpus: ");
	line_u64(why, h->vcpus_allocated);
	line_str(why, " allocated + ");
	line_u64(why, pl->req->vcpus);
	line_str(why, " requested > ");
	line_u64(why, allowed);
	line_str(why, " allowed ((");
	line_u64(why, h->cpus);
	line_str(why, " cpus - ");
	line_u64(why, h->reserved_cpus);
	line_str(why, " reserved) x ");
	line_ratio(why, pl->p->cpu_ratio);
	line_str(why, ")");
	return false;
}

static bool filter_memory(const struct place *pl, const struct sched_host *h, struct line *why)
{
	uint64_t allowed = allowed_mem(pl->p, h);

	if (fits(h->mem_allocated, pl->req->mem, allowed))
		return true;
	line_str(why, "memory: ");
	line_size(why, h->mem_allocated);
	line_str(why, " allocated + ");
	line_size(why, pl->req->mem);
	line_str(why, " requested > ");
	line_size(why, allowed);
	line_str(why, " allowed ((");
	line_size(why, h->mem);
	line_str(why, " - ");
	line_size(why, h->reserved_mem);
	line_str(why, " reserved) x ");
	line_ratio(why, pl->p->mem_ratio);
	line_str(why, ")");
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
		line_str(why, "=");
		line_str(why, want->value);
		line_str(why, " asked, host has ");
		if (have) {
			line_str(why, want->key);
			line_str(why, "=");
			line_str(why, have);
		} else {
			line_str(why, "no label ");
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
	line_str(why, "affinity: VMs of group ");
	line_quoted(why, group);
	line_str(why, " run on ");
	line_quoted(why, host_label(pl->affinity_first));
	if (pl->affinity_hosts > 1) {
		line_str(why, " and ");
		line_u64(why, pl->affinity_hosts - 1);
		line_str(why, pl->affinity_hosts > 2 ? " other hosts" : " other host");
	}
	line_str(why, ", not here");
	return false;
}

static bool filter_anti_affinity(const struct place *pl, const struct sched_host *h,
				 struct line *why)
{
	const char *group = pl->req->anti_affinity_group;

	if (!group || !host_has_group(h, group))
		return true;
	line_str(why, "anti_affinity: a VM of group ");
	line_quoted(why, group);
	line_str(why, " already runs here");
	return false;
}

/* The order of sched.h; a host rejected by one filter meets no other. */
static const struct filter {
	const char *name;
	filter_fn *pass;
} filters[] = {
	{ "up", filter_up },
	{ "pinned", filter_pinned },
	{ "vcpus", filter_vcpus },
	{ "memory", filter_memory },
	{ "cpu_flags", filter_cpu_flags },
	{ "host_labels", filter_host_labels },
	{ "affinity", filter_affinity },
	{ "anti_affinity", filter_anti_affinity },
};
#define NFILTERS (sizeof(filters) / sizeof(filters[0]))

/* Free capacity after this VM (not before), so that of two empty hosts the
 * larger one, which this VM fills less, ranks first under spread. */
static double host_score(const struct place *pl, const struct sched_host *h)
{
	const struct sched_request *req = pl->req;
	uint64_t av = allowed_vcpus(pl->p, h), am = allowed_mem(pl->p, h);
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
	line_str(&l, "malformed placement request: ");
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
	if (!(p->cpu_ratio > 0) || !isfinite(p->cpu_ratio))
		return malformed(res, "policy cpu_ratio must be a finite number above 0");
	if (!(p->mem_ratio > 0) || !isfinite(p->mem_ratio))
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
	if (req->vcpus > allowed_vcpus(pl->p, h) || req->mem > allowed_mem(pl->p, h))
		return false;
	for (size_t i = 0; i < req->ncpu_flags; i++)
		if (!host_has_flag(h, req->cpu_flags[i]))
			return false;
	for (size_t i = 0; i < req->nhost_labels; i++)
		if (!host_has_label(h, &req->host_labels[i]))
			return false;
	return true;
}

/* The one sentence of a 422: the first constraint, in filter order, that
 * no candidate host meets even alone. */
static void explain_impossible(const struct place *pl, const struct sched_host *hosts, size_t n,
			       struct line *l)
{
	const struct sched_request *req = pl->req;
	const struct sched_host *most_vcpus = NULL, *most_mem = NULL;
	uint64_t max_vcpus = 0, max_mem = 0;
	size_t missing = 0;

	for (size_t i = 0; i < n; i++) {
		const struct sched_host *h = &hosts[i];

		if (req->pinned_host && !host_is_pinned(h, req->pinned_host))
			continue;
		uint64_t v = allowed_vcpus(pl->p, h), m = allowed_mem(pl->p, h);
		if (!most_vcpus || v > max_vcpus || (v == max_vcpus && strcmp(h->id, most_vcpus->id) < 0)) {
			most_vcpus = h;
			max_vcpus = v;
		}
		if (!most_mem || m > max_mem || (m == max_mem && strcmp(h->id, most_mem->id) < 0)) {
			most_mem = h;
			max_mem = m;
		}
	}
	line_str(l, "impossible: ");
	if (!most_vcpus) {
		line_str(l, "pinned: no host has the id or name ");
		line_quoted(l, req->pinned_host);
		return;
	}
	const char *which = req->pinned_host ? " on the pinned host " : " even on host ";
	const char *tail = req->pinned_host ? " when empty" : ", the largest, when empty";
	if (req->vcpus > max_vcpus) {
		line_str(l, "vcpus: ");
		line_u64(l, req->vcpus);
		line_str(l, " requested > ");
		line_u64(l, max_vcpus);
		line_str(l, " allowed");
		line_str(l, which);
		line_quoted(l, host_label(most_vcpus));
		line_str(l, tail);
		return;
	}
	if (req->mem > max_mem) {
		line_str(l, "memory: ");
		line_size(l, req->mem);
		line_str(l, " requested > ");
		line_size(l, max_mem);
		line_str(l, " allowed");
		line_str(l, which);
		line_quoted(l, host_label(most_mem));
		line_str(l, tail);
		return;
	}
	for (size_t f = 0; f < req->ncpu_flags; f++) {
		size_t i;

		for (i = 0; i < n; i++)
			if ((!req->pinned_host || host_is_pinned(&hosts[i], req->pinned_host)) &&
			    host_has_flag(&hosts[i], req->cpu_flags[f]))
				break;
		if (i < n)
			continue;
		line_str(l, missing++ ? ", " : req->pinned_host ? "cpu_flags: the pinned host lacks "
								: "cpu_flags: no host has ");
		line_str(l, req->cpu_flags[f]);
	}
	if (missing)
		return;
	for (size_t k = 0; k < req->nhost_labels; k++) {
		size_t i;

		for (i = 0; i < n; i++)
			if ((!req->pinned_host || host_is_pinned(&hosts[i], req->pinned_host)) &&
			    host_has_label(&hosts[i], &req->host_labels[k]))
				break;
		if (i < n)
			continue;
		line_str(l, missing++ ? ", " : req->pinned_host ? "host_labels: the pinned host lacks "
								: "host_labels: no host has ");
		line_str(l, req->host_labels[k].key);
		line_str(l, "=");
		line_str(l, req->host_labels[k].value);
	}
	if (missing)
		return;
	line_str(l, "no single host has the vCPUs, memory, CPU flags and labels asked all together");
}

static void explain_not_now(const size_t rejected[NFILTERS], size_t n, struct line *l)
{
	bool first = true;

	if (!n) {
		line_str(l, "no host can take it now: no hosts are registered");
		return;
	}
	line_str(l, "no host can take it now: of ");
	line_u64(l, n);
	line_str(l, n > 1 ? " hosts, rejected by " : " host, rejected by ");
	for (size_t f = 0; f < NFILTERS; f++) {
		if (!rejected[f])
			continue;
		line_str(l, first ? "" : ", ");
		line_str(l, filters[f].name);
		line_str(l, " ");
		line_u64(l, rejected[f]);
		first = false;
	}
}

static void explain_chosen(const struct sched_host *h, double score, size_t accepted, size_t n,
			   struct line *l)
{
	char tmp[48];

	line_str(l, "chose ");
	line_quoted(l, host_label(h));
	line_str(l, " (id ");
	line_str(l, h->id);
	snprintf(tmp, sizeof(tmp), ", score %.6f", score);
	line_str(l, tmp);
	line_str(l, "), the best of ");
	line_u64(l, accepted);
	line_str(l, " hosts that passed, of ");
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
	size_t rejected[NFILTERS] = { 0 }, accepted = 0;
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

	for (size_t i = 0; i < n; i++) {
		const struct sched_host *h = &hosts[i];
		struct sched_verdict *v = &res->verdicts[i];
		size_t f;

		if (!host_usable(h)) {
			res->verdicts[i].accepted = false;
			line_init(&l, res->summary, sizeof(res->summary));
			line_str(&l, "malformed host array: host at index ");
			line_u64(&l, i);
			line_str(&l, h->id ? " has a count above 0 with no array" : " has no id");
			line_end(&l);
			res->chosen = -1;
			return -EINVAL;
		}
		line_init(&l, v->reason, sizeof(v->reason));
		for (f = 0; f < NFILTERS; f++)
			if (!filters[f].pass(&pl, h, &l))
				break;
		v->accepted = f == NFILTERS;
		v->score = 0;
		if (!v->accepted) {
			line_end(&l);
			rejected[f]++;
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
	if (!p || !h || !(p->cpu_ratio > 0) || !isfinite(p->cpu_ratio) || !(p->mem_ratio > 0) ||
	    !isfinite(p->mem_ratio))
		return -EINVAL;
	if (vcpus)
		*vcpus = allowed_vcpus(p, h);
	if (mem)
		*mem = allowed_mem(p, h);
	return 0;
}

static int host_bad(const struct sched_host *h, char *err, size_t errlen, const char *what,
		    const char *detail)
{
	struct line l;

	if (!errlen)
		return -EINVAL;
	line_init(&l, err, errlen);
	line_str(&l, "host ");
	line_quoted(&l, h && h->id ? h->id : "(no id)");
	line_str(&l, ": ");
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
