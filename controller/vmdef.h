/* VM definitions as the controller takes them (POST /v1/vms, POST
 * /v1/placements): the same document as drover-vmm --config (README), so
 * it is checked by the VMM's own parser (vmm_config_from_json) and refused
 * exactly where the VMM would refuse it, plus the controller's rules: the
 * name's pattern, labels, and the placement block. Paths are on the hosts:
 * nothing here looks at them.
 *
 * Two kinds of refusal, because the API answers them differently:
 *   -EBADMSG  the document's shape: not an object, a field of the wrong
 *             JSON type, an unknown field, a required field missing (400);
 *   -EINVAL   a value the VMM or the controller refuses: a bad size, too
 *             many vCPUs, a name outside the pattern (422).
 * Either way err names the field and the value. */
#ifndef DROVER_VMDEF_H
#define DROVER_VMDEF_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VMDEF_LABELS_MAX     64
#define VMDEF_CPU_FLAGS_MAX  64
#define VMDEF_DESCRIPTION_MAX 4096

struct vmdef_label {
	const char *key, *value;       /* point into doc */
};

struct vmdef {
	json_t *doc;                   /* the definition as kept and shown ("start" removed) */
	const char *name;              /* the strings below point into doc */
	uint32_t vcpus;
	uint64_t mem;                  /* bytes */
	bool start;                    /* POST /v1/vms: start it once defined (default true) */
	struct vmdef_label labels[VMDEF_LABELS_MAX];
	size_t nlabels;
	struct {
		const char *host;      /* NULL: anywhere */
		const char *cpu_flags[VMDEF_CPU_FLAGS_MAX];   /* sorted (strcmp) */
		size_t ncpu_flags;
		struct vmdef_label host_labels[VMDEF_LABELS_MAX];
		size_t nhost_labels;
		const char *affinity_group, *anti_affinity_group;
	} placement;
};

/* Checks doc (a parsed request body; borrowed) and fills def, which keeps
 * its own reference to a copy. 0, -EBADMSG or -EINVAL (above), -ENOMEM. */
int vmdef_parse(const json_t *doc, struct vmdef *def, char *err, size_t errlen);
void vmdef_free(struct vmdef *def);

/* The document the agent hands drover-vmm (--config): the definition with
 * the VM's id. A malloc'd string, or NULL. */
char *vmdef_agent_json(const json_t *definition, const char *vm_id);

#endif
