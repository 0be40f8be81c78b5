/* The controller's state in SQLite. ALL of droverd's SQL lives in store.c:
 * a replicated SQLite may take its place later (DESIGN.md) without
 * touching the scheduler, the API or the operation engine.
 *
 * The database: WAL, foreign keys on, a busy timeout (droverd token ... may
 * write while droverd serve runs), synchronous=NORMAL (a killed process
 * loses nothing committed; a power cut may lose the last transactions,
 * never consistency). Its schema carries a version (PRAGMA user_version);
 * store_open runs the numbered migrations up to STORE_SCHEMA_VERSION, each
 * in its own transaction, and refuses a database that a newer droverd
 * wrote, or one that is not droverd's (PRAGMA application_id).
 *
 * Records come back with malloc'd strings (NULL where the column is NULL):
 * free them with the matching *_clear. List functions call a callback per
 * row, in ascending seq, at most `limit` times, and say whether more rows
 * follow; the row is cleared after the callback returns.
 *
 * Functions return 0 or -errno: -ENOENT (no such row), -EEXIST (a unique
 * key is taken), -EIO (SQLite failed; logged with the statement). */
#ifndef DROVER_STORE_H
#define DROVER_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_SCHEMA_VERSION 4
#define STORE_APPLICATION_ID 0x64726f76     /* "drov" */
#define STORE_HASH_LEN 32                    /* SHA-256 */

struct store;

/* Opens (creating if need be) and migrates the database at path. On error
 * err says what and with which file. */
int store_open(const char *path, struct store **out, char *err, size_t errlen);
void store_close(struct store *s);
/* The schema version of the open database (STORE_SCHEMA_VERSION once open). */
int store_schema_version(struct store *s);

/* A transaction around several writes (nestable: only the outermost one
 * commits). store_end commits when ok, else rolls back. */
int store_begin(struct store *s);
int store_end(struct store *s, bool ok);

/* Ends a transaction after work whose result is ret: commits when ret is
 * 0, else rolls back and keeps ret (the first error wins). */
static inline int store_end_with(struct store *s, int ret)
{
	int end = store_end(s, ret == 0);

	return ret ? ret : end;
}

/* A number that changes whenever something the scheduler reads may have
 * changed: a host's capacity, flags, labels, up or maintenance flag, or the
 * VMs placed on it (insert, delete). Equal numbers: the scheduler's view
 * built from the store is still current (place.c caches it). Counted in
 * this process only: each droverd starts afresh. */
uint64_t store_sched_generation(const struct store *s);

/* ---- hosts ---- */

struct store_host {
	int64_t seq;
	char *id, *name;
	bool up, maintenance;
	char *address, *migration_address, *agent_version;
	char *labels;                /* JSON object text */
	char *inventory;             /* JSON object text (proto Inventory's names) */
	char *cpu_flags;             /* space-separated, sorted */
	uint32_t cpus, reserved_cpus;
	uint64_t mem, reserved_mem;  /* bytes */
	int64_t last_heartbeat;      /* ms; 0: never */
	int64_t created_at, updated_at;
	/* Derived: the VMs placed here (any state; a VM holds its place until
	 * its row goes). */
	uint32_t vcpus_allocated, vms;
	uint64_t mem_allocated;
};
void store_host_clear(struct store_host *h);

/* What an agent says about its host (Hello and Heartbeat). */
struct store_host_report {
	const char *name, *address, *migration_address, *agent_version;
	const char *labels, *inventory, *cpu_flags;   /* JSON, JSON, space-separated */
	uint32_t cpus, reserved_cpus;
	uint64_t mem, reserved_mem;
};

/* Hello: creates the host the first time (*created), else updates it; it
 * is up from now on (*was_up says whether it already was). -EEXIST when
 * another host id already has that name. */
int store_host_hello(struct store *s, const char *id, const struct store_host_report *r,
		     int64_t now, bool *created, bool *was_up);
/* Heartbeat: inventory and last_heartbeat; r->name, labels and the
 * addresses are Hello's and not used here.
 * *was_up as above; the host is up afterwards. */
int store_host_heartbeat(struct store *s, const char *id, const struct store_host_report *r,
			 int64_t now, bool *was_up);
int store_host_set_up(struct store *s, const char *id, bool up, int64_t now);
int store_host_set_maintenance(struct store *s, const char *id, bool on, int64_t now);
/* By id, else by name. */
int store_host_get(struct store *s, const char *id_or_name, struct store_host *out);

struct store_host_filter {
	int up;                      /* -1 any, 0 down, 1 up */
};
typedef int (*store_host_cb)(const struct store_host *h, void *opaque);
int store_host_list(struct store *s, const struct store_host_filter *f, int64_t after_seq,
		    unsigned limit, store_host_cb cb, void *opaque, bool *more);

/* Per host, the affinity and anti-affinity groups of the VMs placed there,
 * restricted to the groups named (the scheduler needs no others). */
typedef int (*store_group_cb)(const char *host_id, const char *group, void *opaque);
int store_host_groups(struct store *s, const char *const *groups, size_t ngroups,
		      store_group_cb cb, void *opaque);

/* ---- VMs ---- */

struct store_label {
	const char *key, *value;
};

struct store_vm {
	int64_t seq;
	char *id, *name, *state;
	char *host_id, *host_name;   /* NULL: not placed */
	char *definition;            /* JSON text, as the API shows it */
	uint32_t vcpus;
	uint64_t mem;                /* bytes */
	char *affinity_group, *anti_affinity_group;
	bool has_pid, has_exit;
	int32_t pid, exit_status;
	char *exit_reason;
	int64_t created_at, updated_at;
};
void store_vm_clear(struct store_vm *v);

/* Inserts v (its seq, host_name, created_at and updated_at are ignored)
 * with its labels. -EEXIST when the name is taken. */
int store_vm_insert(struct store *s, const struct store_vm *v, const struct store_label *labels,
		    size_t nlabels, int64_t now);
/* By id, else by name. */
int store_vm_get(struct store *s, const char *id_or_name, struct store_vm *out);
int store_vm_set_state(struct store *s, const char *id, const char *state, int64_t now);
/* What the agent reports: state, pid (has_pid false: NULL), exit status and
 * reason (has_exit false: NULL). */
int store_vm_set_status(struct store *s, const char *id, const char *state, bool has_pid,
			int32_t pid, bool has_exit, int32_t exit_status, const char *exit_reason,
			int64_t now);
int store_vm_delete(struct store *s, const char *id);

struct store_vm_filter {
	const char *state;           /* NULL: any */
	const char *host_id;         /* NULL: any */
	const char *name;            /* NULL: any */
	const struct store_label *labels;   /* all must match */
	size_t nlabels;
};
typedef int (*store_vm_cb)(const struct store_vm *v, void *opaque);
int store_vm_list(struct store *s, const struct store_vm_filter *f, int64_t after_seq,
		  unsigned limit, store_vm_cb cb, void *opaque, bool *more);

/* ---- operations ---- */

struct store_op {
	int64_t seq;
	char *id, *kind, *vm_id, *vm_name, *host_id;
	char *state;                 /* pending, running, succeeded, failed */
	char *step;                  /* the engine's step (ops.c) */
	int progress;                /* 0..100 */
	char *params;                /* JSON object text */
	char *message;               /* what it is doing or waiting for */
	char *error_code, *error_message;
	int64_t deadline;            /* ms; 0: none */
	int64_t created_at, updated_at;
};
void store_op_clear(struct store_op *o);

int store_op_insert(struct store *s, const struct store_op *o, int64_t now);
int store_op_get(struct store *s, const char *id, struct store_op *out);
/* Writes state, step, progress, message, error and deadline of o. */
int store_op_update(struct store *s, const struct store_op *o, int64_t now);

struct store_op_filter {
	const char *vm_id;           /* NULL: any */
	const char *state;           /* NULL: any */
	bool active;                 /* only pending and running ones */
};
typedef int (*store_op_cb)(const struct store_op *o, void *opaque);
int store_op_list(struct store *s, const struct store_op_filter *f, int64_t after_seq,
		  unsigned limit, store_op_cb cb, void *opaque, bool *more);

/* ---- events ---- */

struct store_event {
	int64_t id, time;
	char *kind, *vm_id, *host_id, *message;
};
void store_event_clear(struct store_event *e);

int store_event_add(struct store *s, const char *kind, const char *vm_id, const char *host_id,
		    int64_t now, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

struct store_event_filter {
	const char *vm_id, *host_id; /* NULL: any */
};
typedef int (*store_event_cb)(const struct store_event *e, void *opaque);
int store_event_list(struct store *s, const struct store_event_filter *f, int64_t after_id,
		     unsigned limit, store_event_cb cb, void *opaque, bool *more);

/* ---- API tokens (only their hashes are kept) ---- */

struct store_token {
	char *public_id, *name, *role;
	uint8_t hash[STORE_HASH_LEN];
	int64_t created_at;
	int64_t expires_at, revoked_at;    /* 0: never, not */
};
void store_token_clear(struct store_token *t);

int store_token_insert(struct store *s, const struct store_token *t);
int store_token_get(struct store *s, const char *public_id, struct store_token *out);
int store_token_revoke(struct store *s, const char *public_id, int64_t now);
typedef int (*store_token_cb)(const struct store_token *t, void *opaque);
int store_token_list(struct store *s, store_token_cb cb, void *opaque);

/* ---- idempotency keys ---- */

struct store_idem {
	char *method, *path;
	uint8_t body_hash[STORE_HASH_LEN];
	int status;
	char *response;              /* the body that was sent */
	int64_t created_at;
};
void store_idem_clear(struct store_idem *i);

/* The answer kept for (token, key), if younger than not_before. */
int store_idem_get(struct store *s, const char *token, const char *key, int64_t not_before,
		   struct store_idem *out);
int store_idem_put(struct store *s, const char *token, const char *key,
		   const struct store_idem *i);
/* Forgets answers older than before. */
int store_idem_purge(struct store *s, int64_t before);

#endif
