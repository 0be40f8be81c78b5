/* fuzz_vmdef: bytes -> a REST body as droverd reads it (JSON), then the VM
 * definition checks (controller/vmdef.c), which lean on drover-vmm's own
 * parser.
 *
 * Beyond the sanitizers: a refusal is -EBADMSG or -EINVAL with a message;
 * and a definition the controller accepts, as the agent hands it to
 * drover-vmm (vmdef_agent_json), is accepted by drover-vmm's --config parser
 * too: the controller never places a VM its VMM would refuse. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "config.h"
#include "log.h"
#include "vmdef.h"

#define CHECK(cond, ...) do { \
	if (!(cond)) { \
		fprintf(stderr, "fuzz_vmdef: broken invariant: " __VA_ARGS__); \
		fprintf(stderr, "\n"); \
		abort(); \
	} \
} while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_init("fuzz_vmdef", LOG_ERROR);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *doc = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
	struct vmdef def;
	char err[512] = "";
	int ret;

	if (!doc)
		return 0;
	ret = vmdef_parse(doc, &def, err, sizeof(err));
	if (ret) {
		CHECK(ret == -EBADMSG || ret == -EINVAL || ret == -ENOMEM, "vmdef_parse: %d", ret);
		CHECK(ret == -ENOMEM || err[0], "a refusal without a message (%d)", ret);
	} else {
		char *text = vmdef_agent_json(def.doc, "00000000-0000-4000-8000-000000000000");
		struct vmm_config cfg;
		char verr[512] = "";

		CHECK(text, "vmdef_agent_json failed on an accepted definition");
		vmm_config_init(&cfg);
		CHECK(vmm_config_from_json(&cfg, text, strlen(text), "definition", verr,
					   sizeof(verr)) == 0,
		      "droverd accepted a definition drover-vmm refuses: %s\n%s", verr, text);
		CHECK(cfg.cpus == def.vcpus, "vCPUs: droverd %u, drover-vmm %u", def.vcpus, cfg.cpus);
		CHECK(cfg.memory == def.mem, "memory: droverd %llu, drover-vmm %llu",
		      (unsigned long long)def.mem, (unsigned long long)cfg.memory);
		vmm_config_free(&cfg);
		free(text);
		vmdef_free(&def);
	}
	json_decref(doc);
	return 0;
}
