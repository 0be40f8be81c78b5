/* Placement: the hosts as the store knows them, handed to the scheduler
 * (sched.h) with the policy from droverd's options, and the answer put in
 * the API's words: the chosen host, every accepted host's score, every
 * rejected host's reasons. */
#ifndef DROVER_PLACE_H
#define DROVER_PLACE_H

#include <jansson.h>
#include <stdbool.h>

#include "ctl.h"
#include "store.h"
#include "vmdef.h"

struct place_outcome {
	bool chosen;
	bool impossible;               /* not chosen: 422 rather than 409 */
	char *host_id, *host_name;     /* chosen */
	double score;
	json_t *scores;                /* {HOST NAME: score} of the accepted hosts */
	json_t *reasons;               /* {HOST NAME: [reason]} of the rejected ones */
	char summary[SCHED_SUMMARY_MAX];
};

/* 0 with out filled (chosen or not), or -errno (-EIO: the store failed,
 * -EINVAL: the scheduler refused the request, out->summary says why). */
int place_vm(struct ctl *ctl, const struct vmdef *def, struct place_outcome *out);
void place_outcome_free(struct place_outcome *out);

/* The hosts as the scheduler saw them last (ctl->place), kept while the
 * store says nothing they hold changed. */
struct place_cache;
void place_cache_free(struct place_cache *c);
/* A VM was just stored on host_id (store_vm_insert, nothing else since
 * place_vm): the view takes its allocation without a rebuild. */
void place_note_vm(struct ctl *ctl, const char *host_id, uint32_t vcpus, uint64_t mem);

/* A host's capacity under the policy, as the scheduler computes it. */
void place_host_capacity(const struct ctl *ctl, const struct store_host *h, uint64_t *vcpus,
			 uint64_t *mem);

#endif
