/* Builds the scheduler's view of every host from the store, runs
 * sched_place, and turns its verdicts into JSON.
 *
 * The view is kept between requests (struct place_cache) for as long as
 * store_sched_generation says nothing it holds has changed: heartbeats that
 * only refresh an inventory's figures of the moment leave it alone, a new
 * VM or a host going down does not. Affinity groups are read afresh for
 * each request that names one (one query, the hosts found by binary
 * search on their ids). */
#include "place.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* One host, and the memory its sched_host points into. */
struct phost {
	char *id, *name;
	char *flags_text;              /* the store's space-separated flags, cut in place */
	const char **flags;
	json_t *labels_doc;
	struct sched_label *labels;
	const char **groups;
	size_t ngroups, groups_cap;
};

struct hosts {
	struct phost *ph;
	struct sched_host *sh;
	size_t n, cap;
	int64_t last_seq;              /* the page so far ends here */
};

struct place_cache {
	bool valid;
	uint64_t gen;                  /* store_sched_generation when built */
	struct hosts hs;
	size_t *by_id;                 /* indices into hs, sorted by host id */
};

static void phost_free(struct phost *p)
{
	free(p->id);
	free(p->name);
	free(p->flags_text);
	free(p->flags);
	json_decref(p->labels_doc);
	free(p->labels);
	free(p->groups);
}

static void hosts_free(struct hosts *hs)
{
	for (size_t i = 0; i < hs->n; i++)
		phost_free(&hs->ph[i]);
	free(hs->ph);
	free(hs->sh);
}

/* "avx sse4_2" -> sorted array; the store keeps them sorted already. */
static int split_flags(struct phost *p, struct sched_host *sh)
{
	size_t n = 0;
	char *save, *tok;

	for (const char *c = p->flags_text; *c; c++)
		n += *c == ' ';
	p->flags = calloc(n + 1, sizeof(*p->flags));
	if (!p->flags)
		return -ENOMEM;
	n = 0;
	for (tok = strtok_r(p->flags_text, " ", &save); tok; tok = strtok_r(NULL, " ", &save))
		p->flags[n++] = tok;
	sh->cpu_flags = p->flags;
	sh->ncpu_flags = n;
	return 0;
}

static int split_labels(struct phost *p, struct sched_host *sh, const char *labels)
{
	const char *key;
	json_t *v;
	size_t n = 0;

	p->labels_doc = json_loads(labels ? labels : "{}", 0, NULL);
	if (!json_is_object(p->labels_doc))
		return 0;
	p->labels = calloc(json_object_size(p->labels_doc) + 1, sizeof(*p->labels));
	if (!p->labels)
		return -ENOMEM;
	json_object_foreach(p->labels_doc, key, v) {
		if (!json_is_string(v))
			continue;
		p->labels[n].key = key;
		p->labels[n].value = json_string_value(v);
		n++;
	}
	sh->labels = p->labels;
	sh->nlabels = n;
	return 0;
}

static int add_host(const struct store_host *h, void *opaque)
{
	struct hosts *hs = opaque;
	struct phost *p;
	struct sched_host *sh;

	if (hs->n == hs->cap) {
		size_t cap = hs->cap ? 2 * hs->cap : 64;
		struct phost *ph = realloc(hs->ph, cap * sizeof(*ph));
		struct sched_host *s2;

		if (!ph)
			return -ENOMEM;
		hs->ph = ph;
		s2 = realloc(hs->sh, cap * sizeof(*s2));
		if (!s2)
			return -ENOMEM;
		hs->sh = s2;
		hs->cap = cap;
	}
	p = &hs->ph[hs->n];
	sh = &hs->sh[hs->n];
	memset(p, 0, sizeof(*p));
	memset(sh, 0, sizeof(*sh));
	hs->n++;
	hs->last_seq = h->seq;
	p->id = strdup(h->id);
	p->name = strdup(h->name);
	p->flags_text = strdup(h->cpu_flags ? h->cpu_flags : "");
	if (!p->id || !p->name || !p->flags_text)
		return -ENOMEM;
	sh->id = p->id;
	sh->name = p->name;
	sh->up = h->up;
	sh->maintenance = h->maintenance;
	sh->cpus = h->cpus;
	sh->reserved_cpus = h->reserved_cpus;
	sh->mem = h->mem;
	sh->reserved_mem = h->reserved_mem;
	sh->vcpus_allocated = h->vcpus_allocated;
	sh->mem_allocated = h->mem_allocated;
	sh->vms = h->vms;
	if (split_flags(p, sh) || split_labels(p, sh, h->labels))
		return -ENOMEM;
	return 0;
}

static int by_id_cmp(const void *a, const void *b, void *opaque)
{
	const struct hosts *hs = opaque;

	return strcmp(hs->ph[*(const size_t *)a].id, hs->ph[*(const size_t *)b].id);
}

/* The index of host_id in c's hosts, or -1. */
static ssize_t find_host(const struct place_cache *c, const char *host_id)
{
	size_t lo = 0, hi = c->hs.n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int d = strcmp(c->hs.ph[c->by_id[mid]].id, host_id);

		if (!d)
			return (ssize_t)c->by_id[mid];
		if (d < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

static int add_group(const struct place_cache *c, const char *host_id, const char *group)
{
	ssize_t i = find_host(c, host_id);

	if (i >= 0) {
		struct phost *p = &c->hs.ph[i];

		if (p->ngroups == p->groups_cap) {
			size_t cap = p->groups_cap ? 2 * p->groups_cap : 4;
			const char **g = realloc(p->groups, cap * sizeof(*g));

			if (!g)
				return -ENOMEM;
			p->groups = g;
			p->groups_cap = cap;
		}
		/* The group names live in the request, which outlives this call. */
		p->groups[p->ngroups++] = group;
	}
	return 0;
}

/* Groups come back as the store's strings, valid only in the callback: map
 * each to the request's own copy of the same name. */
struct group_map {
	const struct place_cache *c;
	const char *const *names;
	size_t n;
};

static int add_group_mapped(const char *host_id, const char *group, void *opaque)
{
	struct group_map *gm = opaque;

	for (size_t i = 0; i < gm->n; i++) {
		if (!strcmp(gm->names[i], group))
			return add_group(gm->c, host_id, gm->names[i]);
	}
	return 0;
}

/* The hosts as the store has them now, unless the cache still holds that. */
static int refresh(struct ctl *ctl, struct place_cache *c)
{
	uint64_t gen = store_sched_generation(ctl->store);
	struct hosts hs = { 0 };
	bool more = true;
	int ret = 0;

	if (c->valid && c->gen == gen)
		return 0;
	while (more && !ret)
		ret = store_host_list(ctl->store, NULL, hs.last_seq, 500, add_host, &hs, &more);
	if (!ret && !(c->by_id = realloc(c->by_id, (hs.n + 1) * sizeof(*c->by_id))))
		ret = -ENOMEM;
	if (ret) {
		hosts_free(&hs);
		c->valid = false;
		return ret;
	}
	for (size_t i = 0; i < hs.n; i++) {
		char err[256];

		c->by_id[i] = i;
		if (sched_host_check(&hs.sh[i], err, sizeof(err)))
			log_warn("host %s: %s", hs.ph[i].name, err);
	}
	qsort_r(c->by_id, hs.n, sizeof(*c->by_id), by_id_cmp, &hs);
	hosts_free(&c->hs);
	c->hs = hs;
	c->gen = gen;
	c->valid = true;
	return 0;
}

/* The request's groups on each host (none when it names no group). */
static int load_groups(struct ctl *ctl, struct place_cache *c, const struct vmdef *def)
{
	const char *groups[2];
	struct group_map gm = { .c = c, .names = groups };
	int ret = 0;

	for (size_t i = 0; i < c->hs.n; i++)
		c->hs.ph[i].ngroups = 0;
	if (def->placement.affinity_group)
		groups[gm.n++] = def->placement.affinity_group;
	if (def->placement.anti_affinity_group)
		groups[gm.n++] = def->placement.anti_affinity_group;
	if (gm.n)
		ret = store_host_groups(ctl->store, groups, gm.n, add_group_mapped, &gm);
	for (size_t i = 0; i < c->hs.n; i++) {
		c->hs.sh[i].groups = c->hs.ph[i].groups;
		c->hs.sh[i].ngroups = c->hs.ph[i].ngroups;
	}
	return ret;
}

void place_note_vm(struct ctl *ctl, const char *host_id, uint32_t vcpus, uint64_t mem)
{
	struct place_cache *c = ctl->place;
	ssize_t i;

	if (!c || !c->valid)
		return;
	/* The insert moved the generation by one; anything more, and the view
	 * is rebuilt next time. */
	i = store_sched_generation(ctl->store) == c->gen + 1 ? find_host(c, host_id) : -1;
	if (i < 0) {
		c->valid = false;
		return;
	}
	c->hs.sh[i].vcpus_allocated += vcpus;
	c->hs.sh[i].mem_allocated += mem;
	c->hs.sh[i].vms++;
	c->gen++;
}

void place_cache_free(struct place_cache *c)
{
	if (!c)
		return;
	hosts_free(&c->hs);
	free(c->by_id);
	free(c);
}

int place_vm(struct ctl *ctl, const struct vmdef *def, struct place_outcome *out)
{
	struct sched_label labels[VMDEF_LABELS_MAX];
	struct sched_request req = {
		.vcpus = def->vcpus,
		.mem = def->mem,
		.pinned_host = def->placement.host,
		.cpu_flags = def->placement.cpu_flags,
		.ncpu_flags = def->placement.ncpu_flags,
		.host_labels = labels,
		.nhost_labels = def->placement.nhost_labels,
		.affinity_group = def->placement.affinity_group,
		.anti_affinity_group = def->placement.anti_affinity_group,
	};
	struct sched_result res = { 0 };
	struct place_cache *c = NULL;
	int ret;

	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < def->placement.nhost_labels; i++) {
		labels[i].key = def->placement.host_labels[i].key;
		labels[i].value = def->placement.host_labels[i].value;
	}
	if (!ctl->place && !(ctl->place = calloc(1, sizeof(*ctl->place)))) {
		ret = -ENOMEM;
		goto out;
	}
	c = ctl->place;
	ret = refresh(ctl, c);
	if (!ret)
		ret = load_groups(ctl, c, def);
	if (ret)
		goto out;
	res.verdicts = calloc(c->hs.n + 1, sizeof(*res.verdicts));
	if (!res.verdicts) {
		ret = -ENOMEM;
		goto out;
	}
	ret = sched_place(&ctl->opt.policy, c->hs.sh, c->hs.n, &req, &res);
	snprintf(out->summary, sizeof(out->summary), "%s", res.summary);
	if (ret)
		goto out;
	out->scores = json_object();
	out->reasons = json_object();
	if (!out->scores || !out->reasons) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < c->hs.n; i++) {
		const struct sched_verdict *v = &res.verdicts[i];

		if (v->accepted)
			json_object_set_new(out->scores, c->hs.ph[i].name, json_real(v->score));
		else
			json_object_set_new(out->reasons, c->hs.ph[i].name,
					    json_pack("[s]", v->reason));
	}
	out->impossible = res.impossible;
	if (res.chosen >= 0) {
		out->chosen = true;
		out->host_id = strdup(c->hs.ph[res.chosen].id);
		out->host_name = strdup(c->hs.ph[res.chosen].name);
		out->score = res.verdicts[res.chosen].score;
		if (!out->host_id || !out->host_name)
			ret = -ENOMEM;
	}
out:
	free(res.verdicts);
	if (ret && ret != -EINVAL)
		log_error("placing '%s': %s", def->name, strerror(-ret));
	return ret;
}

void place_outcome_free(struct place_outcome *out)
{
	free(out->host_id);
	free(out->host_name);
	json_decref(out->scores);
	json_decref(out->reasons);
	memset(out, 0, sizeof(*out));
}

void place_host_capacity(const struct ctl *ctl, const struct store_host *h, uint64_t *vcpus,
			 uint64_t *mem)
{
	struct sched_host sh = {
		.id = h->id, .name = h->name, .cpus = h->cpus, .reserved_cpus = h->reserved_cpus,
		.mem = h->mem, .reserved_mem = h->reserved_mem,
	};

	if (sched_host_capacity(&ctl->opt.policy, &sh, vcpus, mem)) {
		*vcpus = 0;
		*mem = 0;
	}
}
