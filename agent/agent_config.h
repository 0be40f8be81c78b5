/* drover-agent's configuration: one JSON object (drover-agent --config FILE).
 *
 *   {
 *     "controller": "10.0.0.1:7070",          required: where droverd listens
 *     "host-name": "node1",                   default: gethostname()
 *     "host-id": "UUID",                      default: generated once, kept in
 *                                              <state-dir>/host-id
 *     "run-dir": "/run/drover-agent",         VMs' run directories (vms/<id>/)
 *     "state-dir": "/var/lib/drover-agent",   what survives a reboot (host-id)
 *     "migration-address": "10.0.0.2:7071",   reported in Hello (nothing listens yet)
 *     "reserved": {"cpus": 1, "memory": "1G"}, kept for the host itself
 *     "labels": {"rack": "r1"},
 *     "vmm": "/usr/bin/drover-vmm",           default: next to drover-agent, then PATH
 *     "heartbeat-interval-ms": 5000,          used when the controller's Welcome
 *                                              names none
 *     "reconnect-min-ms": 500, "reconnect-max-ms": 30000,
 *     "start-timeout-ms": 10000,              a new VMM's control socket must answer
 *     "stop-timeout-ms": 30000,               graceful stop when the controller
 *                                              gives no timeout
 *     "log-level": "info"
 *   }
 *
 * Unknown keys and wrong types are errors that name the key. Parsing
 * (agent_config_parse) touches no file; agent_config_resolve then fills the
 * defaults that need the system (host name, host id, drover-vmm's path) and
 * creates the directories. */
#ifndef DROVER_AGENT_CONFIG_H
#define DROVER_AGENT_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define AGENT_UUID_LEN 36
#define AGENT_DEFAULT_RUN_DIR   "/run/drover-agent"
#define AGENT_DEFAULT_STATE_DIR "/var/lib/drover-agent"

struct agent_label {
	char *key;
	char *value;
};

struct agent_config {
	char *controller;
	char *host_name;
	char host_id[AGENT_UUID_LEN + 1];   /* "" until given or resolved */
	char *run_dir;
	char *state_dir;
	char *migration_address;            /* NULL: none */
	uint32_t reserved_cpus;
	uint64_t reserved_mem;              /* bytes */
	struct agent_label *labels;
	size_t nlabels;
	char *vmm_path;                     /* NULL until given or resolved */
	uint32_t heartbeat_ms;              /* 0: the controller decides */
	uint32_t reconnect_min_ms;
	uint32_t reconnect_max_ms;
	uint32_t start_timeout_ms;
	uint32_t stop_timeout_ms;
	int log_level;                      /* enum log_level, or -1: not set */
};

void agent_config_init(struct agent_config *c);
void agent_config_free(struct agent_config *c);

/* Applies the JSON document text on top of c. what names the source in
 * messages ("agent.json"). 0, or -EINVAL with one line in err. */
int agent_config_parse(struct agent_config *c, const char *text, size_t len, const char *what,
		       char *err, size_t errlen);
/* Reads path and parses it. 0 or -errno with err set. */
int agent_config_load(struct agent_config *c, const char *path, char *err, size_t errlen);

/* Fills what the file left out and needs the system: host name, host id
 * (from <state-dir>/host-id, generated and written there the first time),
 * drover-vmm's path (self_exe's directory, then PATH); creates run-dir and
 * state-dir. 0 or -errno with err set. */
int agent_config_resolve(struct agent_config *c, const char *self_exe, char *err, size_t errlen);

/* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" in hex digits: true if s is one. */
int agent_uuid_valid(const char *s);
/* A random (version 4) UUID, lower case. 0 or -errno. */
int agent_uuid_generate(char out[AGENT_UUID_LEN + 1]);

/* The host id kept in state_dir/host-id: read, or generated and written
 * (atomically) when the file does not exist. A file that holds no UUID is an
 * error, not silently replaced: the controller knows the host by it. */
int agent_host_id_load(const char *state_dir, char out[AGENT_UUID_LEN + 1], char *err,
		       size_t errlen);

#endif
