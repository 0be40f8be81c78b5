/* The controller's SQLite store (store.h says what it promises).
 *
 * Invariants:
 *   (1) The schema version (PRAGMA user_version) and the tables always
 *       agree: each migration and the version bump commit together.
 *   (2) Every statement is prepared once and kept (stmt_get): a statement
 *       handed out is reset and unbound, so no earlier row leaks into it.
 *   (3) A VM's labels live in vm_labels beside its row (for filtering) and
 *       in its definition (for showing); both are written by
 *       store_vm_insert in one transaction and never change afterwards. */
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

/* ---- migrations: append only; never edit one that has shipped ---- */

static const char *const migrations[STORE_SCHEMA_VERSION] = {
	/* 1: hosts, VMs, operations, events */
	"CREATE TABLE hosts ("
	"  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  id TEXT NOT NULL UNIQUE,"
	"  name TEXT NOT NULL UNIQUE,"
	"  up INTEGER NOT NULL DEFAULT 0,"
	"  maintenance INTEGER NOT NULL DEFAULT 0,"
	"  address TEXT NOT NULL DEFAULT '',"
	"  migration_address TEXT NOT NULL DEFAULT '',"
	"  agent_version TEXT NOT NULL DEFAULT '',"
	"  labels TEXT NOT NULL DEFAULT '{}',"
	"  inventory TEXT NOT NULL DEFAULT '{}',"
	"  cpu_flags TEXT NOT NULL DEFAULT '',"
	"  cpus INTEGER NOT NULL DEFAULT 0,"
	"  reserved_cpus INTEGER NOT NULL DEFAULT 0,"
	"  mem INTEGER NOT NULL DEFAULT 0,"
	"  reserved_mem INTEGER NOT NULL DEFAULT 0,"
	"  last_heartbeat INTEGER,"
	"  created_at INTEGER NOT NULL,"
	"  updated_at INTEGER NOT NULL);"
	"CREATE TABLE vms ("
	"  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  id TEXT NOT NULL UNIQUE,"
	"  name TEXT NOT NULL UNIQUE,"
	"  state TEXT NOT NULL,"
	"  host_id TEXT REFERENCES hosts(id),"
	"  definition TEXT NOT NULL,"
	"  vcpus INTEGER NOT NULL,"
	"  mem INTEGER NOT NULL,"
	"  affinity_group TEXT,"
	"  anti_affinity_group TEXT,"
	"  pid INTEGER,"
	"  exit_status INTEGER,"
	"  exit_reason TEXT,"
	"  created_at INTEGER NOT NULL,"
	"  updated_at INTEGER NOT NULL);"
	"CREATE INDEX vms_host ON vms(host_id);"
	"CREATE INDEX vms_state ON vms(state);"
	"CREATE TABLE vm_labels ("
	"  vm_seq INTEGER NOT NULL REFERENCES vms(seq) ON DELETE CASCADE,"
	"  key TEXT NOT NULL,"
	"  value TEXT NOT NULL,"
	"  PRIMARY KEY (vm_seq, key));"
	"CREATE INDEX vm_labels_kv ON vm_labels(key, value);"
	/* An operation outlives its VM (delete): no foreign key on vm_id. */
	"CREATE TABLE operations ("
	"  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  id TEXT NOT NULL UNIQUE,"
	"  kind TEXT NOT NULL,"
	"  vm_id TEXT,"
	"  vm_name TEXT,"
	"  host_id TEXT,"
	"  state TEXT NOT NULL CHECK (state IN ('pending','running','succeeded','failed')),"
	"  step TEXT NOT NULL,"
	"  progress INTEGER NOT NULL DEFAULT 0,"
	"  params TEXT NOT NULL DEFAULT '{}',"
	"  message TEXT,"
	"  error_code TEXT,"
	"  error_message TEXT,"
	"  deadline INTEGER,"
	"  created_at INTEGER NOT NULL,"
	"  updated_at INTEGER NOT NULL);"
	"CREATE INDEX operations_vm ON operations(vm_id);"
	"CREATE INDEX operations_state ON operations(state);"
	"CREATE TABLE events ("
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  time INTEGER NOT NULL,"
	"  kind TEXT NOT NULL,"
	"  vm_id TEXT,"
	"  host_id TEXT,"
	"  message TEXT NOT NULL);"
	"CREATE INDEX events_vm ON events(vm_id);"
	"CREATE INDEX events_host ON events(host_id);",

	/* 2: API tokens, by hash */
	"CREATE TABLE tokens ("
	"  public_id TEXT PRIMARY KEY,"
	"  name TEXT NOT NULL,"
	"  role TEXT NOT NULL CHECK (role IN ('admin','reader')),"
	"  hash BLOB NOT NULL,"
	"  created_at INTEGER NOT NULL,"
	"  expires_at INTEGER,"
	"  revoked_at INTEGER);",

	/* 3: idempotency keys, per token */
	"CREATE TABLE idempotency_keys ("
	"  token TEXT NOT NULL,"
	"  key TEXT NOT NULL,"
	"  method TEXT NOT NULL,"
	"  path TEXT NOT NULL,"
	"  body_hash BLOB NOT NULL,"
	"  status INTEGER NOT NULL,"
	"  response TEXT NOT NULL,"
	"  created_at INTEGER NOT NULL,"
	"  PRIMARY KEY (token, key));"
	"CREATE INDEX idempotency_keys_created ON idempotency_keys(created_at);",

	/* 4: a host's allocations from the index alone (placement reads them
	 * for every host on every request) */
	("CREATE INDEX vms_host_alloc ON vms(host_id, vcpus, mem);"
	 "DROP INDEX vms_host;"),
};

/* ---- statements ---- */

#define HOST_COLS \
	"h.seq, h.id, h.name, h.up, h.maintenance, h.address, h.migration_address, " \
	"h.agent_version, h.labels, h.inventory, h.cpu_flags, h.cpus, h.reserved_cpus, " \
	"h.mem, h.reserved_mem, h.last_heartbeat, h.created_at, h.updated_at, " \
	"(SELECT coalesce(sum(vcpus), 0) FROM vms WHERE host_id = h.id), " \
	"(SELECT coalesce(sum(mem), 0) FROM vms WHERE host_id = h.id), " \
	"(SELECT count(*) FROM vms WHERE host_id = h.id)"
/* The allocations are per host, from the covering index vms_host_alloc:
 * reading one host never walks every VM, nor any VM's row. */
#define HOST_FROM " FROM hosts h"
#define VM_COLS \
	"v.seq, v.id, v.name, v.state, v.host_id, h.name, v.definition, v.vcpus, v.mem, " \
	"v.affinity_group, v.anti_affinity_group, v.pid, v.exit_status, v.exit_reason, " \
	"v.created_at, v.updated_at"
#define VM_FROM " FROM vms v LEFT JOIN hosts h ON h.id = v.host_id"
#define OP_COLS \
	"seq, id, kind, vm_id, vm_name, host_id, state, step, progress, params, message, " \
	"error_code, error_message, deadline, created_at, updated_at"
#define EVENT_COLS "id, time, kind, vm_id, host_id, message"
#define TOKEN_COLS "public_id, name, role, hash, created_at, expires_at, revoked_at"

enum stmt_id {
	ST_BEGIN, ST_COMMIT, ST_ROLLBACK,
	ST_HOST_BY_ID, ST_HOST_BY_NAME, ST_HOST_NAME_OWNER, ST_HOST_UP, ST_HOST_INSERT, ST_HOST_HELLO,
	ST_HOST_HEARTBEAT, ST_HOST_SET_UP, ST_HOST_SET_MAINT, ST_HOST_LIST,
	ST_VM_BY_ID, ST_VM_BY_NAME, ST_VM_INSERT, ST_VM_LABEL_INSERT, ST_VM_SET_STATE,
	ST_VM_SET_STATUS, ST_VM_DELETE,
	ST_OP_INSERT, ST_OP_GET, ST_OP_UPDATE, ST_OP_LIST,
	ST_EVENT_ADD, ST_EVENT_LIST,
	ST_TOKEN_INSERT, ST_TOKEN_GET, ST_TOKEN_REVOKE, ST_TOKEN_LIST,
	ST_IDEM_GET, ST_IDEM_PUT, ST_IDEM_PURGE,
	ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
	[ST_BEGIN] = "BEGIN IMMEDIATE",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
	[ST_HOST_BY_ID] = "SELECT " HOST_COLS HOST_FROM " WHERE h.id = ?1",
	[ST_HOST_BY_NAME] = "SELECT " HOST_COLS HOST_FROM " WHERE h.name = ?1",
	[ST_HOST_NAME_OWNER] = "SELECT id FROM hosts WHERE name = ?1",
	[ST_HOST_UP] = "SELECT up, cpus, reserved_cpus, mem, reserved_mem, cpu_flags "
		"FROM hosts WHERE id = ?1",
	[ST_HOST_INSERT] =
		"INSERT INTO hosts (id, name, up, address, migration_address, agent_version, "
		"labels, inventory, cpu_flags, cpus, reserved_cpus, mem, reserved_mem, "
		"last_heartbeat, created_at, updated_at) "
		"VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13, ?13)",
	[ST_HOST_HELLO] =
		"UPDATE hosts SET name = ?2, up = 1, address = ?3, migration_address = ?4, "
		"agent_version = ?5, labels = ?6, inventory = ?7, cpu_flags = ?8, cpus = ?9, "
		"reserved_cpus = ?10, mem = ?11, reserved_mem = ?12, last_heartbeat = ?13, "
		"updated_at = ?13 WHERE id = ?1",
	[ST_HOST_HEARTBEAT] =
		"UPDATE hosts SET up = 1, inventory = ?2, cpu_flags = ?3, cpus = ?4, "
		"reserved_cpus = ?5, mem = ?6, reserved_mem = ?7, last_heartbeat = ?8, "
		"updated_at = ?8 WHERE id = ?1",
	[ST_HOST_SET_UP] = "UPDATE hosts SET up = ?2, updated_at = ?3 WHERE id = ?1",
	[ST_HOST_SET_MAINT] = "UPDATE hosts SET maintenance = ?2, updated_at = ?3 WHERE id = ?1",
	[ST_HOST_LIST] = "SELECT " HOST_COLS HOST_FROM
		" WHERE h.seq > ?1 AND (?2 < 0 OR h.up = ?2) ORDER BY h.seq LIMIT ?3",
	[ST_VM_BY_ID] = "SELECT " VM_COLS VM_FROM " WHERE v.id = ?1",
	[ST_VM_BY_NAME] = "SELECT " VM_COLS VM_FROM " WHERE v.name = ?1",
	[ST_VM_INSERT] =
		"INSERT INTO vms (id, name, state, host_id, definition, vcpus, mem, "
		"affinity_group, anti_affinity_group, created_at, updated_at) "
		"VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
	[ST_VM_LABEL_INSERT] = "INSERT INTO vm_labels (vm_seq, key, value) VALUES (?1, ?2, ?3)",
	[ST_VM_SET_STATE] = "UPDATE vms SET state = ?2, updated_at = ?3 WHERE id = ?1",
	[ST_VM_SET_STATUS] =
		"UPDATE vms SET state = ?2, pid = ?3, exit_status = ?4, exit_reason = ?5, "
		"updated_at = ?6 WHERE id = ?1",
	[ST_VM_DELETE] = "DELETE FROM vms WHERE id = ?1",
	[ST_OP_INSERT] =
		"INSERT INTO operations (id, kind, vm_id, vm_name, host_id, state, step, progress, "
		"params, message, error_code, error_message, deadline, created_at, updated_at) "
		"VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14)",
	[ST_OP_GET] = "SELECT " OP_COLS " FROM operations WHERE id = ?1",
	[ST_OP_UPDATE] =
		"UPDATE operations SET state = ?2, step = ?3, progress = ?4, message = ?5, "
		"error_code = ?6, error_message = ?7, deadline = ?8, host_id = ?9, updated_at = ?10 "
		"WHERE id = ?1",
	[ST_OP_LIST] = "SELECT " OP_COLS " FROM operations WHERE seq > ?1 "
		"AND (?2 IS NULL OR vm_id = ?2) AND (?3 IS NULL OR state = ?3) "
		"AND (?4 = 0 OR state IN ('pending', 'running')) ORDER BY seq LIMIT ?5",
	[ST_EVENT_ADD] =
		"INSERT INTO events (time, kind, vm_id, host_id, message) VALUES (?1, ?2, ?3, ?4, ?5)",
	[ST_EVENT_LIST] = "SELECT " EVENT_COLS " FROM events WHERE id > ?1 "
		"AND (?2 IS NULL OR vm_id = ?2) AND (?3 IS NULL OR host_id = ?3) ORDER BY id LIMIT ?4",
	[ST_TOKEN_INSERT] =
		"INSERT INTO tokens (" TOKEN_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
	[ST_TOKEN_GET] = "SELECT " TOKEN_COLS " FROM tokens WHERE public_id = ?1",
	[ST_TOKEN_REVOKE] =
		"UPDATE tokens SET revoked_at = coalesce(revoked_at, ?2) WHERE public_id = ?1",
	[ST_TOKEN_LIST] = "SELECT " TOKEN_COLS " FROM tokens ORDER BY created_at, public_id",
	[ST_IDEM_GET] = "SELECT method, path, body_hash, status, response, created_at "
		"FROM idempotency_keys WHERE token = ?1 AND key = ?2 AND created_at >= ?3",
	[ST_IDEM_PUT] =
		"INSERT OR REPLACE INTO idempotency_keys (token, key, method, path, body_hash, "
		"status, response, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
	[ST_IDEM_PURGE] = "DELETE FROM idempotency_keys WHERE created_at < ?1",
};

struct store {
	sqlite3 *db;
	char *path;
	int version;
	int txn_depth;
	bool txn_failed;             /* an inner store_end(false): the outer one rolls back */
	uint64_t sched_gen;          /* see store_sched_generation */
	sqlite3_stmt *stmt[ST_COUNT];
};

static int db_fail(struct store *s, const char *what)
{
	log_error("database %s: %s: %s", s->path, what, sqlite3_errmsg(s->db));
	return -EIO;
}

static sqlite3_stmt *stmt_get(struct store *s, enum stmt_id id)
{
	sqlite3_stmt *st = s->stmt[id];

	if (!st) {
		if (sqlite3_prepare_v3(s->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &st,
				       NULL) != SQLITE_OK) {
			db_fail(s, stmt_sql[id]);
			return NULL;
		}
		s->stmt[id] = st;
	}
	return st;
}

static void stmt_done(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

/* Binding helpers: a NULL string binds SQL NULL. */
static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
	if (v)
		sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(st, i);
}

static void bind_i64(sqlite3_stmt *st, int i, int64_t v)
{
	sqlite3_bind_int64(st, i, v);
}

/* 0 for a nonzero-or-NULL optional time: the database keeps NULL. */
static void bind_opt_i64(sqlite3_stmt *st, int i, int64_t v)
{
	if (v)
		sqlite3_bind_int64(st, i, v);
	else
		sqlite3_bind_null(st, i);
}

/* Runs a statement that returns no rows; -EEXIST for a constraint on a
 * unique key, -ENOENT when it changed nothing and must_change. */
static int stmt_exec(struct store *s, sqlite3_stmt *st, bool must_change)
{
	int rc = sqlite3_step(st), ret = 0;

	/* A taken unique key is the caller's to report, not a failure. */
	if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
		ret = -EEXIST;
	else if (rc != SQLITE_DONE)
		ret = db_fail(s, sqlite3_sql(st));
	else if (must_change && sqlite3_changes(s->db) == 0)
		ret = -ENOENT;
	stmt_done(st);
	return ret;
}

static char *col_text(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);

	return t ? strdup((const char *)t) : NULL;
}

/* ---- open, migrate, close ---- */

static int exec_sql(struct store *s, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		log_error("database %s: %s", s->path, msg ? msg : sqlite3_errmsg(s->db));
		sqlite3_free(msg);
		return -EIO;
	}
	return 0;
}

static int pragma_int(struct store *s, const char *pragma, int *out)
{
	sqlite3_stmt *st;
	char sql[64];
	int ret = -EIO;

	snprintf(sql, sizeof(sql), "PRAGMA %s", pragma);
	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
		return db_fail(s, sql);
	if (sqlite3_step(st) == SQLITE_ROW) {
		*out = sqlite3_column_int(st, 0);
		ret = 0;
	}
	sqlite3_finalize(st);
	return ret;
}

static int table_count(struct store *s, int *out)
{
	sqlite3_stmt *st;
	int ret = -EIO;

	if (sqlite3_prepare_v2(s->db, "SELECT count(*) FROM sqlite_master", -1, &st, NULL))
		return db_fail(s, "reading the schema");
	if (sqlite3_step(st) == SQLITE_ROW) {
		*out = sqlite3_column_int(st, 0);
		ret = 0;
	}
	sqlite3_finalize(st);
	return ret;
}

static int migrate(struct store *s, int from, char *err, size_t errlen)
{
	for (int v = from + 1; v <= STORE_SCHEMA_VERSION; v++) {
		char bump[96];
		int ret;

		snprintf(bump, sizeof(bump), "PRAGMA user_version = %d; PRAGMA application_id = %d",
			 v, STORE_APPLICATION_ID);
		ret = exec_sql(s, "BEGIN IMMEDIATE");
		if (!ret)
			ret = exec_sql(s, migrations[v - 1]);
		if (!ret)
			ret = exec_sql(s, bump);
		if (!ret)
			ret = exec_sql(s, "COMMIT");
		if (ret) {
			exec_sql(s, "ROLLBACK");
			snprintf(err, errlen, "database %s: migration to schema version %d failed: %s",
				 s->path, v, sqlite3_errmsg(s->db));
			return ret;
		}
		if (from > 0)
			log_info("database %s: schema upgraded to version %d", s->path, v);
	}
	s->version = STORE_SCHEMA_VERSION;
	return 0;
}

static int configure(struct store *s, char *err, size_t errlen)
{
	sqlite3_stmt *st;
	bool wal = false;

	sqlite3_busy_timeout(s->db, 5000);
	if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &st, NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW)
			wal = !strcmp((const char *)sqlite3_column_text(st, 0), "wal");
		sqlite3_finalize(st);
	}
	if (!wal) {
		snprintf(err, errlen, "database %s: cannot use write-ahead logging: %s", s->path,
			 sqlite3_errmsg(s->db));
		return -EIO;
	}
	if (exec_sql(s, "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL")) {
		snprintf(err, errlen, "database %s: %s", s->path, sqlite3_errmsg(s->db));
		return -EIO;
	}
	return 0;
}

/* Is this droverd's database, and at a version this droverd can run? */
static int check_version(struct store *s, int *version, char *err, size_t errlen)
{
	int app = 0, tables = 0;

	if (pragma_int(s, "user_version", version) || pragma_int(s, "application_id", &app) ||
	    table_count(s, &tables)) {
		snprintf(err, errlen, "database %s: cannot read it: %s", s->path,
			 sqlite3_errmsg(s->db));
		return -EIO;
	}
	if ((app && app != STORE_APPLICATION_ID) || (!app && tables)) {
		snprintf(err, errlen, "database %s: not a droverd database (application id %#x, "
			 "%d schema objects); give droverd a database of its own", s->path,
			 (unsigned)app, tables);
		return -EINVAL;
	}
	if (*version > STORE_SCHEMA_VERSION) {
		snprintf(err, errlen, "database %s: schema version %d was written by a newer "
			 "droverd; this one knows versions up to %d: run the newer droverd (or "
			 "restore a backup taken before the upgrade)", s->path, *version,
			 STORE_SCHEMA_VERSION);
		return -EPROTO;
	}
	return 0;
}

uint64_t store_sched_generation(const struct store *s)
{
	return s->sched_gen;
}

int store_open(const char *path, struct store **out, char *err, size_t errlen)
{
	struct store *s = calloc(1, sizeof(*s));
	int version = 0, ret;

	if (!s || !(s->path = strdup(path))) {
		free(s);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
			    SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "database %s: cannot open it: %s", path,
			 s->db ? sqlite3_errmsg(s->db) : "out of memory");
		ret = -EIO;
		goto err_close;
	}
	sqlite3_extended_result_codes(s->db, 1);
	ret = configure(s, err, errlen);
	if (!ret)
		ret = check_version(s, &version, err, errlen);
	if (!ret)
		ret = migrate(s, version, err, errlen);
	if (ret)
		goto err_close;
	*out = s;
	return 0;

err_close:
	store_close(s);
	return ret;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	for (int i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(s->stmt[i]);
	sqlite3_close(s->db);
	free(s->path);
	free(s);
}

int store_schema_version(struct store *s)
{
	return s->version;
}

int store_begin(struct store *s)
{
	sqlite3_stmt *st;
	int ret;

	if (s->txn_depth++)
		return 0;
	s->txn_failed = false;
	st = stmt_get(s, ST_BEGIN);
	ret = st ? stmt_exec(s, st, false) : -EIO;
	if (ret)
		s->txn_depth = 0;
	return ret;
}

int store_end(struct store *s, bool ok)
{
	sqlite3_stmt *st;
	int ret;

	if (!ok)
		s->txn_failed = true;
	if (s->txn_depth == 0 || --s->txn_depth)
		return 0;
	st = stmt_get(s, s->txn_failed ? ST_ROLLBACK : ST_COMMIT);
	ret = st ? stmt_exec(s, st, false) : -EIO;
	if (ret && !s->txn_failed) {
		st = stmt_get(s, ST_ROLLBACK);
		if (st)
			stmt_exec(s, st, false);
	}
	return ret ? ret : (s->txn_failed ? -ECANCELED : 0);
}

/* ---- hosts ---- */

void store_host_clear(struct store_host *h)
{
	free(h->id);
	free(h->name);
	free(h->address);
	free(h->migration_address);
	free(h->agent_version);
	free(h->labels);
	free(h->inventory);
	free(h->cpu_flags);
	memset(h, 0, sizeof(*h));
}

static void host_row(sqlite3_stmt *st, struct store_host *h)
{
	h->seq = sqlite3_column_int64(st, 0);
	h->id = col_text(st, 1);
	h->name = col_text(st, 2);
	h->up = sqlite3_column_int(st, 3) != 0;
	h->maintenance = sqlite3_column_int(st, 4) != 0;
	h->address = col_text(st, 5);
	h->migration_address = col_text(st, 6);
	h->agent_version = col_text(st, 7);
	h->labels = col_text(st, 8);
	h->inventory = col_text(st, 9);
	h->cpu_flags = col_text(st, 10);
	h->cpus = (uint32_t)sqlite3_column_int64(st, 11);
	h->reserved_cpus = (uint32_t)sqlite3_column_int64(st, 12);
	h->mem = (uint64_t)sqlite3_column_int64(st, 13);
	h->reserved_mem = (uint64_t)sqlite3_column_int64(st, 14);
	h->last_heartbeat = sqlite3_column_int64(st, 15);
	h->created_at = sqlite3_column_int64(st, 16);
	h->updated_at = sqlite3_column_int64(st, 17);
	h->vcpus_allocated = (uint32_t)sqlite3_column_int64(st, 18);
	h->mem_allocated = (uint64_t)sqlite3_column_int64(st, 19);
	h->vms = (uint32_t)sqlite3_column_int64(st, 20);
}

/* Runs a statement that yields at most one row, decoded by row(); -ENOENT
 * when it yields none. */
static int get_one(struct store *s, sqlite3_stmt *st, void (*row)(sqlite3_stmt *, void *),
		   void *out)
{
	int rc = sqlite3_step(st), ret = 0;

	if (rc == SQLITE_ROW)
		row(st, out);
	else if (rc == SQLITE_DONE)
		ret = -ENOENT;
	else
		ret = db_fail(s, sqlite3_sql(st));
	stmt_done(st);
	return ret;
}

static void host_row_v(sqlite3_stmt *st, void *out) { host_row(st, out); }

static int host_get_by(struct store *s, enum stmt_id id, const char *key, struct store_host *out)
{
	sqlite3_stmt *st = stmt_get(s, id);

	if (!st)
		return -EIO;
	bind_text(st, 1, key);
	return get_one(s, st, host_row_v, out);
}

int store_host_get(struct store *s, const char *id_or_name, struct store_host *out)
{
	int ret = host_get_by(s, ST_HOST_BY_ID, id_or_name, out);

	return ret == -ENOENT ? host_get_by(s, ST_HOST_BY_NAME, id_or_name, out) : ret;
}

/* The host id that owns name: 0 and *owner (malloc'd), or -ENOENT. */
static int host_name_owner(struct store *s, const char *name, char **owner)
{
	sqlite3_stmt *st = stmt_get(s, ST_HOST_NAME_OWNER);
	int rc, ret = -ENOENT;

	if (!st)
		return -EIO;
	bind_text(st, 1, name);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*owner = col_text(st, 0);
		ret = *owner ? 0 : -ENOMEM;
	} else if (rc != SQLITE_DONE) {
		ret = db_fail(s, sqlite3_sql(st));
	}
	stmt_done(st);
	return ret;
}

static void bind_report(sqlite3_stmt *st, const struct store_host_report *r, int first)
{
	bind_text(st, first, r->inventory ? r->inventory : "{}");
	bind_text(st, first + 1, r->cpu_flags ? r->cpu_flags : "");
	bind_i64(st, first + 2, r->cpus);
	bind_i64(st, first + 3, r->reserved_cpus);
	bind_i64(st, first + 4, (int64_t)r->mem);
	bind_i64(st, first + 5, (int64_t)r->reserved_mem);
}

int store_host_hello(struct store *s, const char *id, const struct store_host_report *r,
		     int64_t now, bool *created, bool *was_up)
{
	struct store_host old = { 0 };
	sqlite3_stmt *st;
	char *owner = NULL;
	int ret = store_begin(s);

	s->sched_gen++;
	if (ret)
		return ret;
	ret = host_name_owner(s, r->name, &owner);
	if (ret == 0 && strcmp(owner, id))
		ret = -EEXIST;
	else if (ret == -ENOENT || ret == 0)
		ret = 0;
	free(owner);
	if (ret)
		goto out;
	ret = host_get_by(s, ST_HOST_BY_ID, id, &old);
	if (ret && ret != -ENOENT)
		goto out;
	*created = ret == -ENOENT;
	*was_up = !*created && old.up;
	st = stmt_get(s, *created ? ST_HOST_INSERT : ST_HOST_HELLO);
	if (!st) {
		ret = -EIO;
		goto out;
	}
	bind_text(st, 1, id);
	bind_text(st, 2, r->name);
	bind_text(st, 3, r->address ? r->address : "");
	bind_text(st, 4, r->migration_address ? r->migration_address : "");
	bind_text(st, 5, r->agent_version ? r->agent_version : "");
	bind_text(st, 6, r->labels ? r->labels : "{}");
	bind_report(st, r, 7);
	bind_i64(st, 13, now);
	ret = stmt_exec(s, st, true);
out:
	store_host_clear(&old);
	return store_end_with(s, ret);
}

/* What a heartbeat may change that the scheduler reads. */
struct host_sched_row {
	bool up;
	int64_t cpus, reserved_cpus, mem, reserved_mem;
	char *cpu_flags;
};

/* cpu_flags NULL (out of memory) counts as a change. */
static void sched_row(sqlite3_stmt *st, void *opaque)
{
	struct host_sched_row *r = opaque;
	const unsigned char *flags = sqlite3_column_text(st, 5);

	r->up = sqlite3_column_int64(st, 0) != 0;
	r->cpus = sqlite3_column_int64(st, 1);
	r->reserved_cpus = sqlite3_column_int64(st, 2);
	r->mem = sqlite3_column_int64(st, 3);
	r->reserved_mem = sqlite3_column_int64(st, 4);
	r->cpu_flags = strdup(flags ? (const char *)flags : "");
}

static int host_sched_now(struct store *s, const char *id, struct host_sched_row *r)
{
	sqlite3_stmt *st = stmt_get(s, ST_HOST_UP);

	if (!st)
		return -EIO;
	bind_text(st, 1, id);
	return get_one(s, st, sched_row, r);
}

int store_host_heartbeat(struct store *s, const char *id, const struct store_host_report *r,
			 int64_t now, bool *was_up)
{
	struct host_sched_row old = { 0 };
	sqlite3_stmt *st;
	int ret = host_sched_now(s, id, &old);

	if (ret)
		return ret;
	*was_up = old.up;
	/* Most heartbeats change only the inventory's figures of the moment. */
	if (!old.up || old.cpus != r->cpus || old.reserved_cpus != r->reserved_cpus ||
	    old.mem != (int64_t)r->mem || old.reserved_mem != (int64_t)r->reserved_mem ||
	    !old.cpu_flags || strcmp(old.cpu_flags, r->cpu_flags ? r->cpu_flags : ""))
		s->sched_gen++;
	free(old.cpu_flags);
	st = stmt_get(s, ST_HOST_HEARTBEAT);
	if (!st)
		return -EIO;
	bind_text(st, 1, id);
	bind_report(st, r, 2);
	bind_i64(st, 8, now);
	return stmt_exec(s, st, true);
}

static int host_set_flag(struct store *s, enum stmt_id id, const char *host, bool on,
			 int64_t now)
{
	sqlite3_stmt *st = stmt_get(s, id);

	s->sched_gen++;
	if (!st)
		return -EIO;
	bind_text(st, 1, host);
	bind_i64(st, 2, on);
	bind_i64(st, 3, now);
	return stmt_exec(s, st, true);
}

int store_host_set_up(struct store *s, const char *id, bool up, int64_t now)
{
	return host_set_flag(s, ST_HOST_SET_UP, id, up, now);
}

int store_host_set_maintenance(struct store *s, const char *id, bool on, int64_t now)
{
	return host_set_flag(s, ST_HOST_SET_MAINT, id, on, now);
}

/* Steps through a list statement: calls row()+cb for up to limit rows, and
 * says whether one more followed (the statement asked for limit + 1). */
static int list_rows(struct store *s, sqlite3_stmt *st, unsigned limit,
		     int (*each)(sqlite3_stmt *st, void *opaque), void *opaque, bool *more)
{
	unsigned n = 0;
	int rc, ret = 0;

	if (more)
		*more = false;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n++ == limit) {
			if (more)
				*more = true;
			break;
		}
		ret = each(st, opaque);
		if (ret)
			break;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		ret = db_fail(s, sqlite3_sql(st));
	stmt_done(st);
	return ret;
}

struct host_each { store_host_cb cb; void *opaque; };

static int host_each(sqlite3_stmt *st, void *opaque)
{
	struct host_each *he = opaque;
	struct store_host h = { 0 };
	int ret;

	host_row(st, &h);
	ret = he->cb(&h, he->opaque);
	store_host_clear(&h);
	return ret;
}

int store_host_list(struct store *s, const struct store_host_filter *f, int64_t after_seq,
		    unsigned limit, store_host_cb cb, void *opaque, bool *more)
{
	sqlite3_stmt *st = stmt_get(s, ST_HOST_LIST);
	struct host_each he = { cb, opaque };

	if (!st)
		return -EIO;
	bind_i64(st, 1, after_seq);
	bind_i64(st, 2, f ? f->up : -1);
	bind_i64(st, 3, (int64_t)limit + 1);
	return list_rows(s, st, limit, host_each, &he, more);
}

int store_host_groups(struct store *s, const char *const *groups, size_t ngroups,
		      store_group_cb cb, void *opaque)
{
	/* Built per call: the number of groups varies (two at most today). */
	char sql[512] = "SELECT DISTINCT host_id, g FROM (SELECT host_id, affinity_group AS g "
			"FROM vms UNION ALL SELECT host_id, anti_affinity_group FROM vms) "
			"WHERE host_id IS NOT NULL AND g IN (";
	sqlite3_stmt *st;
	int rc, ret = 0;

	if (!ngroups)
		return 0;
	if (ngroups > 16)
		return -E2BIG;
	for (size_t i = 0; i < ngroups; i++)
		strcat(sql, i ? ", ?" : "?");
	strcat(sql, ") ORDER BY host_id, g");
	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
		return db_fail(s, sql);
	for (size_t i = 0; i < ngroups; i++)
		bind_text(st, (int)i + 1, groups[i]);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		ret = cb((const char *)sqlite3_column_text(st, 0),
			 (const char *)sqlite3_column_text(st, 1), opaque);
		if (ret)
			break;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		ret = db_fail(s, sql);
	sqlite3_finalize(st);
	return ret;
}

/* ---- VMs ---- */

void store_vm_clear(struct store_vm *v)
{
	free(v->id);
	free(v->name);
	free(v->state);
	free(v->host_id);
	free(v->host_name);
	free(v->definition);
	free(v->affinity_group);
	free(v->anti_affinity_group);
	free(v->exit_reason);
	memset(v, 0, sizeof(*v));
}

static void vm_row(sqlite3_stmt *st, struct store_vm *v)
{
	v->seq = sqlite3_column_int64(st, 0);
	v->id = col_text(st, 1);
	v->name = col_text(st, 2);
	v->state = col_text(st, 3);
	v->host_id = col_text(st, 4);
	v->host_name = col_text(st, 5);
	v->definition = col_text(st, 6);
	v->vcpus = (uint32_t)sqlite3_column_int64(st, 7);
	v->mem = (uint64_t)sqlite3_column_int64(st, 8);
	v->affinity_group = col_text(st, 9);
	v->anti_affinity_group = col_text(st, 10);
	v->has_pid = sqlite3_column_type(st, 11) != SQLITE_NULL;
	v->pid = sqlite3_column_int(st, 11);
	v->has_exit = sqlite3_column_type(st, 12) != SQLITE_NULL;
	v->exit_status = sqlite3_column_int(st, 12);
	v->exit_reason = col_text(st, 13);
	v->created_at = sqlite3_column_int64(st, 14);
	v->updated_at = sqlite3_column_int64(st, 15);
}

static void vm_row_v(sqlite3_stmt *st, void *out) { vm_row(st, out); }

int store_vm_get(struct store *s, const char *id_or_name, struct store_vm *out)
{
	sqlite3_stmt *st = stmt_get(s, ST_VM_BY_ID);
	int ret;

	if (!st)
		return -EIO;
	bind_text(st, 1, id_or_name);
	ret = get_one(s, st, vm_row_v, out);
	if (ret != -ENOENT)
		return ret;
	st = stmt_get(s, ST_VM_BY_NAME);
	if (!st)
		return -EIO;
	bind_text(st, 1, id_or_name);
	return get_one(s, st, vm_row_v, out);
}

int store_vm_insert(struct store *s, const struct store_vm *v, const struct store_label *labels,
		    size_t nlabels, int64_t now)
{
	sqlite3_stmt *st;
	int64_t seq;
	int ret = store_begin(s);

	s->sched_gen++;
	if (ret)
		return ret;
	st = stmt_get(s, ST_VM_INSERT);
	if (!st) {
		ret = -EIO;
		goto out;
	}
	bind_text(st, 1, v->id);
	bind_text(st, 2, v->name);
	bind_text(st, 3, v->state);
	bind_text(st, 4, v->host_id);
	bind_text(st, 5, v->definition);
	bind_i64(st, 6, v->vcpus);
	bind_i64(st, 7, (int64_t)v->mem);
	bind_text(st, 8, v->affinity_group);
	bind_text(st, 9, v->anti_affinity_group);
	bind_i64(st, 10, now);
	ret = stmt_exec(s, st, false);
	seq = sqlite3_last_insert_rowid(s->db);
	for (size_t i = 0; !ret && i < nlabels; i++) {
		st = stmt_get(s, ST_VM_LABEL_INSERT);
		if (!st) {
			ret = -EIO;
			break;
		}
		bind_i64(st, 1, seq);
		bind_text(st, 2, labels[i].key);
		bind_text(st, 3, labels[i].value);
		ret = stmt_exec(s, st, false);
	}
out:
	return store_end_with(s, ret);
}

int store_vm_set_state(struct store *s, const char *id, const char *state, int64_t now)
{
	sqlite3_stmt *st = stmt_get(s, ST_VM_SET_STATE);

	if (!st)
		return -EIO;
	bind_text(st, 1, id);
	bind_text(st, 2, state);
	bind_i64(st, 3, now);
	return stmt_exec(s, st, true);
}

int store_vm_set_status(struct store *s, const char *id, const char *state, bool has_pid,
			int32_t pid, bool has_exit, int32_t exit_status, const char *exit_reason,
			int64_t now)
{
	sqlite3_stmt *st = stmt_get(s, ST_VM_SET_STATUS);

	if (!st)
		return -EIO;
	bind_text(st, 1, id);
	bind_text(st, 2, state);
	if (has_pid)
		bind_i64(st, 3, pid);
	if (has_exit)
		bind_i64(st, 4, exit_status);
	bind_text(st, 5, exit_reason);
	bind_i64(st, 6, now);
	return stmt_exec(s, st, true);
}

int store_vm_delete(struct store *s, const char *id)
{
	sqlite3_stmt *st = stmt_get(s, ST_VM_DELETE);

	s->sched_gen++;
	if (!st)
		return -EIO;
	bind_text(st, 1, id);
	return stmt_exec(s, st, true);
}

struct vm_each { store_vm_cb cb; void *opaque; };

static int vm_each(sqlite3_stmt *st, void *opaque)
{
	struct vm_each *ve = opaque;
	struct store_vm v = { 0 };
	int ret;

	vm_row(st, &v);
	ret = ve->cb(&v, ve->opaque);
	store_vm_clear(&v);
	return ret;
}

#define VM_FILTER_LABELS_MAX 16

int store_vm_list(struct store *s, const struct store_vm_filter *f, int64_t after_seq,
		  unsigned limit, store_vm_cb cb, void *opaque, bool *more)
{
	static const struct store_vm_filter none;
	struct vm_each ve = { cb, opaque };
	sqlite3_stmt *st;
	char sql[2048];
	size_t n;
	int ret;

	if (!f)
		f = &none;
	if (f->nlabels > VM_FILTER_LABELS_MAX)
		return -E2BIG;
	/* One statement text per number of label filters; SQLite's own cache
	 * makes preparing it cheap, and the plan walks the rowid from the
	 * cursor on. */
	n = (size_t)snprintf(sql, sizeof(sql), "SELECT " VM_COLS VM_FROM " WHERE v.seq > ?1 "
			     "AND (?2 IS NULL OR v.state = ?2) AND (?3 IS NULL OR v.host_id = ?3) "
			     "AND (?4 IS NULL OR v.name = ?4)");
	for (size_t i = 0; i < f->nlabels; i++)
		n += (size_t)snprintf(sql + n, sizeof(sql) - n, " AND v.seq IN (SELECT vm_seq FROM "
				      "vm_labels WHERE key = ?%zu AND value = ?%zu)",
				      6 + 2 * i, 7 + 2 * i);
	snprintf(sql + n, sizeof(sql) - n, " ORDER BY v.seq LIMIT ?5");
	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
		return db_fail(s, sql);
	bind_i64(st, 1, after_seq);
	bind_text(st, 2, f->state);
	bind_text(st, 3, f->host_id);
	bind_text(st, 4, f->name);
	bind_i64(st, 5, (int64_t)limit + 1);
	for (size_t i = 0; i < f->nlabels; i++) {
		bind_text(st, 6 + 2 * (int)i, f->labels[i].key);
		bind_text(st, 7 + 2 * (int)i, f->labels[i].value);
	}
	ret = list_rows(s, st, limit, vm_each, &ve, more);
	sqlite3_finalize(st);
	return ret;
}

/* ---- operations ---- */

void store_op_clear(struct store_op *o)
{
	free(o->id);
	free(o->kind);
	free(o->vm_id);
	free(o->vm_name);
	free(o->host_id);
	free(o->state);
	free(o->step);
	free(o->params);
	free(o->message);
	free(o->error_code);
	free(o->error_message);
	memset(o, 0, sizeof(*o));
}

static void op_row(sqlite3_stmt *st, struct store_op *o)
{
	o->seq = sqlite3_column_int64(st, 0);
	o->id = col_text(st, 1);
	o->kind = col_text(st, 2);
	o->vm_id = col_text(st, 3);
	o->vm_name = col_text(st, 4);
	o->host_id = col_text(st, 5);
	o->state = col_text(st, 6);
	o->step = col_text(st, 7);
	o->progress = sqlite3_column_int(st, 8);
	o->params = col_text(st, 9);
	o->message = col_text(st, 10);
	o->error_code = col_text(st, 11);
	o->error_message = col_text(st, 12);
	o->deadline = sqlite3_column_int64(st, 13);
	o->created_at = sqlite3_column_int64(st, 14);
	o->updated_at = sqlite3_column_int64(st, 15);
}

static void op_row_v(sqlite3_stmt *st, void *out) { op_row(st, out); }

int store_op_insert(struct store *s, const struct store_op *o, int64_t now)
{
	sqlite3_stmt *st = stmt_get(s, ST_OP_INSERT);

	if (!st)
		return -EIO;
	bind_text(st, 1, o->id);
	bind_text(st, 2, o->kind);
	bind_text(st, 3, o->vm_id);
	bind_text(st, 4, o->vm_name);
	bind_text(st, 5, o->host_id);
	bind_text(st, 6, o->state);
	bind_text(st, 7, o->step);
	bind_i64(st, 8, o->progress);
	bind_text(st, 9, o->params ? o->params : "{}");
	bind_text(st, 10, o->message);
	bind_text(st, 11, o->error_code);
	bind_text(st, 12, o->error_message);
	bind_opt_i64(st, 13, o->deadline);
	bind_i64(st, 14, now);
	return stmt_exec(s, st, false);
}

int store_op_get(struct store *s, const char *id, struct store_op *out)
{
	sqlite3_stmt *st = stmt_get(s, ST_OP_GET);

	if (!st)
		return -EIO;
	bind_text(st, 1, id);
	return get_one(s, st, op_row_v, out);
}

int store_op_update(struct store *s, const struct store_op *o, int64_t now)
{
	sqlite3_stmt *st = stmt_get(s, ST_OP_UPDATE);

	if (!st)
		return -EIO;
	bind_text(st, 1, o->id);
	bind_text(st, 2, o->state);
	bind_text(st, 3, o->step);
	bind_i64(st, 4, o->progress);
	bind_text(st, 5, o->message);
	bind_text(st, 6, o->error_code);
	bind_text(st, 7, o->error_message);
	bind_opt_i64(st, 8, o->deadline);
	bind_text(st, 9, o->host_id);
	bind_i64(st, 10, now);
	return stmt_exec(s, st, true);
}

struct op_each { store_op_cb cb; void *opaque; };

static int op_each(sqlite3_stmt *st, void *opaque)
{
	struct op_each *oe = opaque;
	struct store_op o = { 0 };
	int ret;

	op_row(st, &o);
	ret = oe->cb(&o, oe->opaque);
	store_op_clear(&o);
	return ret;
}

int store_op_list(struct store *s, const struct store_op_filter *f, int64_t after_seq,
		  unsigned limit, store_op_cb cb, void *opaque, bool *more)
{
	sqlite3_stmt *st = stmt_get(s, ST_OP_LIST);
	struct op_each oe = { cb, opaque };

	if (!st)
		return -EIO;
	bind_i64(st, 1, after_seq);
	bind_text(st, 2, f ? f->vm_id : NULL);
	bind_text(st, 3, f ? f->state : NULL);
	bind_i64(st, 4, f && f->active);
	bind_i64(st, 5, (int64_t)limit + 1);
	return list_rows(s, st, limit, op_each, &oe, more);
}

/* ---- events ---- */

void store_event_clear(struct store_event *e)
{
	free(e->kind);
	free(e->vm_id);
	free(e->host_id);
	free(e->message);
	memset(e, 0, sizeof(*e));
}

int store_event_add(struct store *s, const char *kind, const char *vm_id, const char *host_id,
		    int64_t now, const char *fmt, ...)
{
	sqlite3_stmt *st = stmt_get(s, ST_EVENT_ADD);
	char msg[512];
	va_list ap;

	if (!st)
		return -EIO;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	bind_i64(st, 1, now);
	bind_text(st, 2, kind);
	bind_text(st, 3, vm_id);
	bind_text(st, 4, host_id);
	bind_text(st, 5, msg);
	return stmt_exec(s, st, false);
}

struct event_each { store_event_cb cb; void *opaque; };

static int event_each(sqlite3_stmt *st, void *opaque)
{
	struct event_each *ee = opaque;
	struct store_event e = {
		.id = sqlite3_column_int64(st, 0),
		.time = sqlite3_column_int64(st, 1),
		.kind = col_text(st, 2),
		.vm_id = col_text(st, 3),
		.host_id = col_text(st, 4),
		.message = col_text(st, 5),
	};
	int ret = ee->cb(&e, ee->opaque);

	store_event_clear(&e);
	return ret;
}

int store_event_list(struct store *s, const struct store_event_filter *f, int64_t after_id,
		     unsigned limit, store_event_cb cb, void *opaque, bool *more)
{
	sqlite3_stmt *st = stmt_get(s, ST_EVENT_LIST);
	struct event_each ee = { cb, opaque };

	if (!st)
		return -EIO;
	bind_i64(st, 1, after_id);
	bind_text(st, 2, f ? f->vm_id : NULL);
	bind_text(st, 3, f ? f->host_id : NULL);
	bind_i64(st, 4, (int64_t)limit + 1);
	return list_rows(s, st, limit, event_each, &ee, more);
}

/* ---- tokens ---- */

void store_token_clear(struct store_token *t)
{
	free(t->public_id);
	free(t->name);
	free(t->role);
	memset(t, 0, sizeof(*t));
}

static void token_row(sqlite3_stmt *st, struct store_token *t)
{
	const void *hash = sqlite3_column_blob(st, 3);

	t->public_id = col_text(st, 0);
	t->name = col_text(st, 1);
	t->role = col_text(st, 2);
	memset(t->hash, 0, sizeof(t->hash));
	if (hash && sqlite3_column_bytes(st, 3) == STORE_HASH_LEN)
		memcpy(t->hash, hash, STORE_HASH_LEN);
	t->created_at = sqlite3_column_int64(st, 4);
	t->expires_at = sqlite3_column_int64(st, 5);
	t->revoked_at = sqlite3_column_int64(st, 6);
}

static void token_row_v(sqlite3_stmt *st, void *out) { token_row(st, out); }

int store_token_insert(struct store *s, const struct store_token *t)
{
	sqlite3_stmt *st = stmt_get(s, ST_TOKEN_INSERT);

	if (!st)
		return -EIO;
	bind_text(st, 1, t->public_id);
	bind_text(st, 2, t->name);
	bind_text(st, 3, t->role);
	sqlite3_bind_blob(st, 4, t->hash, STORE_HASH_LEN, SQLITE_TRANSIENT);
	bind_i64(st, 5, t->created_at);
	bind_opt_i64(st, 6, t->expires_at);
	bind_opt_i64(st, 7, t->revoked_at);
	return stmt_exec(s, st, false);
}

int store_token_get(struct store *s, const char *public_id, struct store_token *out)
{
	sqlite3_stmt *st = stmt_get(s, ST_TOKEN_GET);

	if (!st)
		return -EIO;
	bind_text(st, 1, public_id);
	return get_one(s, st, token_row_v, out);
}

int store_token_revoke(struct store *s, const char *public_id, int64_t now)
{
	sqlite3_stmt *st = stmt_get(s, ST_TOKEN_REVOKE);

	if (!st)
		return -EIO;
	bind_text(st, 1, public_id);
	bind_i64(st, 2, now);
	return stmt_exec(s, st, true);
}

struct token_each { store_token_cb cb; void *opaque; };

static int token_each(sqlite3_stmt *st, void *opaque)
{
	struct token_each *te = opaque;
	struct store_token t = { 0 };
	int ret;

	token_row(st, &t);
	ret = te->cb(&t, te->opaque);
	store_token_clear(&t);
	return ret;
}

int store_token_list(struct store *s, store_token_cb cb, void *opaque)
{
	sqlite3_stmt *st = stmt_get(s, ST_TOKEN_LIST);
	struct token_each te = { cb, opaque };

	if (!st)
		return -EIO;
	return list_rows(s, st, UINT32_MAX, token_each, &te, NULL);
}

/* ---- idempotency keys ---- */

void store_idem_clear(struct store_idem *i)
{
	free(i->method);
	free(i->path);
	free(i->response);
	memset(i, 0, sizeof(*i));
}

static void idem_row(sqlite3_stmt *st, void *out)
{
	struct store_idem *i = out;
	const void *hash = sqlite3_column_blob(st, 2);

	i->method = col_text(st, 0);
	i->path = col_text(st, 1);
	memset(i->body_hash, 0, sizeof(i->body_hash));
	if (hash && sqlite3_column_bytes(st, 2) == STORE_HASH_LEN)
		memcpy(i->body_hash, hash, STORE_HASH_LEN);
	i->status = sqlite3_column_int(st, 3);
	i->response = col_text(st, 4);
	i->created_at = sqlite3_column_int64(st, 5);
}

int store_idem_get(struct store *s, const char *token, const char *key, int64_t not_before,
		   struct store_idem *out)
{
	sqlite3_stmt *st = stmt_get(s, ST_IDEM_GET);

	if (!st)
		return -EIO;
	bind_text(st, 1, token);
	bind_text(st, 2, key);
	bind_i64(st, 3, not_before);
	return get_one(s, st, idem_row, out);
}

int store_idem_put(struct store *s, const char *token, const char *key,
		   const struct store_idem *i)
{
	sqlite3_stmt *st = stmt_get(s, ST_IDEM_PUT);

	if (!st)
		return -EIO;
	bind_text(st, 1, token);
	bind_text(st, 2, key);
	bind_text(st, 3, i->method);
	bind_text(st, 4, i->path);
	sqlite3_bind_blob(st, 5, i->body_hash, STORE_HASH_LEN, SQLITE_TRANSIENT);
	bind_i64(st, 6, i->status);
	bind_text(st, 7, i->response);
	bind_i64(st, 8, i->created_at);
	return stmt_exec(s, st, false);
}

int store_idem_purge(struct store *s, int64_t before)
{
	sqlite3_stmt *st = stmt_get(s, ST_IDEM_PURGE);

	if (!st)
		return -EIO;
	bind_i64(st, 1, before);
	return stmt_exec(s, st, false);
}
