/* controller/store.c on real SQLite files: schema creation, migration of a
 * database an older droverd wrote (built here with that version's own
 * SQL), refusal of newer and foreign databases, CRUD of every table,
 * pagination, transactions. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "store.h"

struct fx {
	char dir[64];
	char path[128];
	struct store *s;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "/tmp/drover-test-store-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/droverd.db", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[160];

	store_close(f->s);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static void open_ok(struct fx *f)
{
	char err[512] = "";

	if (store_open(f->path, &f->s, err, sizeof(err)))
		fail_msg("store_open: %s", err);
}

static void raw_exec(const char *path, const char *sql)
{
	sqlite3 *db;
	char *msg = NULL;

	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg);
	sqlite3_close(db);
}

static int raw_int(const char *path, const char *sql)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int v = -1;

	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

static void test_new_database(void **state)
{
	struct fx *f = *state;

	open_ok(f);
	assert_int_equal(store_schema_version(f->s), STORE_SCHEMA_VERSION);
	assert_int_equal(raw_int(f->path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
	assert_int_equal(raw_int(f->path, "PRAGMA application_id"), STORE_APPLICATION_ID);
	assert_int_equal(raw_int(f->path, "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
				 "AND name IN ('hosts', 'vms', 'vm_labels', 'operations', 'events', "
				 "'tokens', 'idempotency_keys')"), 7);
	/* WAL is a property of the file: another connection sees it. */
	assert_int_equal(raw_int(f->path, "SELECT journal_mode = 'wal' FROM pragma_journal_mode"), 1);
	/* Reopening migrates nothing and keeps the version. */
	store_close(f->s);
	f->s = NULL;
	open_ok(f);
	assert_int_equal(store_schema_version(f->s), STORE_SCHEMA_VERSION);
}

/* Schema version 1 exactly as the first droverd wrote it. */
static const char v1_schema[] =
	"CREATE TABLE hosts (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
	" name TEXT NOT NULL UNIQUE, up INTEGER NOT NULL DEFAULT 0,"
	" maintenance INTEGER NOT NULL DEFAULT 0, address TEXT NOT NULL DEFAULT '',"
	" migration_address TEXT NOT NULL DEFAULT '', agent_version TEXT NOT NULL DEFAULT '',"
	" labels TEXT NOT NULL DEFAULT '{}', inventory TEXT NOT NULL DEFAULT '{}',"
	" cpu_flags TEXT NOT NULL DEFAULT '', cpus INTEGER NOT NULL DEFAULT 0,"
	" reserved_cpus INTEGER NOT NULL DEFAULT 0, mem INTEGER NOT NULL DEFAULT 0,"
	" reserved_mem INTEGER NOT NULL DEFAULT 0, last_heartbeat INTEGER,"
	" created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
	"CREATE TABLE vms (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
	" name TEXT NOT NULL UNIQUE, state TEXT NOT NULL, host_id TEXT REFERENCES hosts(id),"
	" definition TEXT NOT NULL, vcpus INTEGER NOT NULL, mem INTEGER NOT NULL,"
	" affinity_group TEXT, anti_affinity_group TEXT, pid INTEGER, exit_status INTEGER,"
	" exit_reason TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
	"CREATE INDEX vms_host ON vms(host_id); CREATE INDEX vms_state ON vms(state);"
	"CREATE TABLE vm_labels (vm_seq INTEGER NOT NULL REFERENCES vms(seq) ON DELETE CASCADE,"
	" key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (vm_seq, key));"
	"CREATE INDEX vm_labels_kv ON vm_labels(key, value);"
	"CREATE TABLE operations (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
	" kind TEXT NOT NULL, vm_id TEXT, vm_name TEXT, host_id TEXT, state TEXT NOT NULL CHECK"
	" (state IN ('pending','running','succeeded','failed')), step TEXT NOT NULL,"
	" progress INTEGER NOT NULL DEFAULT 0, params TEXT NOT NULL DEFAULT '{}', message TEXT,"
	" error_code TEXT, error_message TEXT, deadline INTEGER, created_at INTEGER NOT NULL,"
	" updated_at INTEGER NOT NULL);"
	"CREATE INDEX operations_vm ON operations(vm_id);"
	"CREATE INDEX operations_state ON operations(state);"
	"CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL,"
	" kind TEXT NOT NULL, vm_id TEXT, host_id TEXT, message TEXT NOT NULL);"
	"CREATE INDEX events_vm ON events(vm_id); CREATE INDEX events_host ON events(host_id);"
	"INSERT INTO hosts (id, name, up, cpus, mem, created_at, updated_at)"
	" VALUES ('h-old', 'oldhost', 1, 8, 17179869184, 1000, 1000);"
	"INSERT INTO vms (id, name, state, host_id, definition, vcpus, mem, created_at, updated_at)"
	" VALUES ('v-old', 'oldvm', 'running', 'h-old', '{\"name\":\"oldvm\"}', 2, 1073741824,"
	" 1000, 1000);"
	"INSERT INTO events (time, kind, vm_id, message) VALUES (1000, 'vm-created', 'v-old', 'x');"
	"PRAGMA application_id = 1685221238; PRAGMA user_version = 1;";

static void test_migrate_from_v1(void **state)
{
	struct fx *f = *state;
	struct store_host h = { 0 };
	struct store_vm v = { 0 };
	struct store_token t = { .public_id = "abc", .name = "n", .role = "admin",
				 .created_at = 5 };
	struct store_idem i = { .method = "POST", .path = "/v1/vms", .status = 202,
				.response = "{}", .created_at = 5 };
	struct store_idem got = { 0 };

	raw_exec(f->path, v1_schema);
	assert_int_equal(raw_int(f->path, "PRAGMA user_version"), 1);
	open_ok(f);
	assert_int_equal(store_schema_version(f->s), STORE_SCHEMA_VERSION);
	assert_int_equal(raw_int(f->path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
	/* The old rows are intact and readable through the new code. */
	assert_int_equal(store_host_get(f->s, "oldhost", &h), 0);
	assert_string_equal(h.id, "h-old");
	assert_int_equal(h.cpus, 8);
	assert_int_equal(h.vcpus_allocated, 2);
	assert_int_equal(h.vms, 1);
	assert_int_equal(store_vm_get(f->s, "v-old", &v), 0);
	assert_string_equal(v.state, "running");
	assert_string_equal(v.host_name, "oldhost");
	/* Version 4's index replaced version 1's. */
	assert_int_equal(raw_int(f->path, "SELECT count(*) FROM sqlite_master WHERE type = 'index' "
				 "AND name = 'vms_host_alloc'"), 1);
	assert_int_equal(raw_int(f->path, "SELECT count(*) FROM sqlite_master WHERE type = 'index' "
				 "AND name = 'vms_host'"), 0);
	/* The tables of versions 2 and 3 work. */
	assert_int_equal(store_token_insert(f->s, &t), 0);
	assert_int_equal(store_idem_put(f->s, "abc", "k1", &i), 0);
	assert_int_equal(store_idem_get(f->s, "abc", "k1", 0, &got), 0);
	assert_int_equal(got.status, 202);
	store_idem_clear(&got);
	store_host_clear(&h);
	store_vm_clear(&v);
}

static void test_refuse_newer(void **state)
{
	struct fx *f = *state;
	char err[512] = "";

	raw_exec(f->path, "CREATE TABLE future (x); PRAGMA application_id = 1685221238;"
		 "PRAGMA user_version = 99;");
	assert_int_equal(store_open(f->path, &f->s, err, sizeof(err)), -EPROTO);
	assert_null(f->s);
	assert_non_null(strstr(err, "schema version 99"));
	assert_non_null(strstr(err, "newer droverd"));
	assert_non_null(strstr(err, f->path));
	/* Refusing it changed nothing. */
	assert_int_equal(raw_int(f->path, "PRAGMA user_version"), 99);
}

static void test_refuse_foreign(void **state)
{
	struct fx *f = *state;
	char err[512] = "";

	raw_exec(f->path, "CREATE TABLE customers (id INTEGER, name TEXT);");
	assert_int_equal(store_open(f->path, &f->s, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not a droverd database"));
	assert_int_equal(raw_int(f->path, "SELECT count(*) FROM sqlite_master"), 1);
}

static void test_unopenable(void **state)
{
	struct store *s = NULL;
	char err[512] = "";

	(void)state;
	assert_int_not_equal(store_open("/nonexistent-dir/x/droverd.db", &s, err, sizeof(err)), 0);
	assert_null(s);
	assert_non_null(strstr(err, "/nonexistent-dir/x/droverd.db"));
}

static const struct store_host_report report = {
	.name = "node1", .address = "10.0.0.1", .migration_address = "10.0.0.1:7100",
	.agent_version = "0.1.0", .labels = "{\"rack\":\"r1\"}",
	.inventory = "{\"cpus\":8}", .cpu_flags = "avx sse4_2",
	.cpus = 8, .reserved_cpus = 1, .mem = 16ULL << 30, .reserved_mem = 1ULL << 30,
};

static void test_hosts(void **state)
{
	struct fx *f = *state;
	struct store_host_report r2 = report;
	struct store_host h = { 0 };
	bool created, was_up;

	open_ok(f);
	assert_int_equal(store_host_hello(f->s, "id-1", &report, 100, &created, &was_up), 0);
	assert_true(created);
	assert_false(was_up);
	assert_int_equal(store_host_get(f->s, "node1", &h), 0);
	assert_string_equal(h.id, "id-1");
	assert_true(h.up);
	assert_false(h.maintenance);
	assert_string_equal(h.labels, "{\"rack\":\"r1\"}");
	assert_string_equal(h.cpu_flags, "avx sse4_2");
	assert_int_equal(h.mem, 16ULL << 30);
	assert_int_equal(h.last_heartbeat, 100);
	store_host_clear(&h);

	/* Another host id may not take the name. */
	assert_int_equal(store_host_hello(f->s, "id-2", &report, 100, &created, &was_up), -EEXIST);
	r2.name = "node2";
	assert_int_equal(store_host_hello(f->s, "id-2", &r2, 100, &created, &was_up), 0);

	/* Down, then a heartbeat brings it up again and says it was down. */
	assert_int_equal(store_host_set_up(f->s, "id-1", false, 150), 0);
	r2.cpus = 16;
	assert_int_equal(store_host_heartbeat(f->s, "id-1", &r2, 200, &was_up), 0);
	assert_false(was_up);
	assert_int_equal(store_host_get(f->s, "id-1", &h), 0);
	assert_true(h.up);
	assert_int_equal(h.cpus, 16);
	assert_string_equal(h.name, "node1");   /* heartbeats do not rename */
	assert_int_equal(h.last_heartbeat, 200);
	store_host_clear(&h);
	assert_int_equal(store_host_heartbeat(f->s, "id-9", &r2, 200, &was_up), -ENOENT);

	/* A reconnecting agent (same id) may rename its host. */
	r2.name = "node1b";
	assert_int_equal(store_host_hello(f->s, "id-1", &r2, 300, &created, &was_up), 0);
	assert_false(created);
	assert_true(was_up);
	assert_int_equal(store_host_get(f->s, "node1b", &h), 0);
	store_host_clear(&h);

	assert_int_equal(store_host_set_maintenance(f->s, "id-2", true, 400), 0);
	assert_int_equal(store_host_get(f->s, "node2", &h), 0);
	assert_true(h.maintenance);
	assert_int_equal(h.updated_at, 400);
	store_host_clear(&h);
	assert_int_equal(store_host_set_maintenance(f->s, "nope", true, 400), -ENOENT);
	assert_int_equal(store_host_get(f->s, "nope", &h), -ENOENT);
}

static int count_host(const struct store_host *h, void *opaque)
{
	(*(int *)opaque)++;
	return 0;
}

static void add_host(struct store *s, const char *id, const char *name)
{
	struct store_host_report r = report;
	bool c, u;

	r.name = name;
	assert_int_equal(store_host_hello(s, id, &r, 1, &c, &u), 0);
}

static void add_vm(struct store *s, const char *id, const char *name, const char *host,
		   const char *state, uint32_t vcpus, const struct store_label *labels,
		   size_t nlabels)
{
	struct store_vm v = { .id = (char *)id, .name = (char *)name, .state = (char *)state,
			      .host_id = (char *)host, .definition = "{}", .vcpus = vcpus,
			      .mem = (uint64_t)vcpus << 30 };

	assert_int_equal(store_vm_insert(s, &v, labels, nlabels, 10), 0);
}

/* The scheduler's view (place.c) is rebuilt only when this number moves:
 * it must move on every write the scheduler could see, and a heartbeat that
 * only refreshes the inventory's figures of the moment must leave it. */
static void test_sched_generation(void **state)
{
	struct fx *f = *state;
	struct store_host_report r = report;
	uint64_t g;
	bool was_up;

	open_ok(f);
#define MOVES(what, call) do { g = store_sched_generation(f->s); call; \
	if (store_sched_generation(f->s) == g) fail_msg("%s did not move it", what); } while (0)
#define STAYS(what, call) do { g = store_sched_generation(f->s); call; \
	if (store_sched_generation(f->s) != g) fail_msg("%s moved it", what); } while (0)
	MOVES("a new host", add_host(f->s, "h1", "node1"));
	r.name = "node1";
	r.inventory = "{\"load1\": 0.5}";
	STAYS("a heartbeat with new load figures",
	      assert_int_equal(store_host_heartbeat(f->s, "h1", &r, 5, &was_up), 0));
	r.cpus++;
	MOVES("more CPUs", assert_int_equal(store_host_heartbeat(f->s, "h1", &r, 6, &was_up), 0));
	r.reserved_mem += 1 << 20;
	MOVES("more reserved memory",
	      assert_int_equal(store_host_heartbeat(f->s, "h1", &r, 7, &was_up), 0));
	r.cpu_flags = "avx sse2 vmx";
	MOVES("other CPU flags", assert_int_equal(store_host_heartbeat(f->s, "h1", &r, 8, &was_up), 0));
	MOVES("host down", assert_int_equal(store_host_set_up(f->s, "h1", false, 9), 0));
	MOVES("a heartbeat bringing it up",
	      assert_int_equal(store_host_heartbeat(f->s, "h1", &r, 10, &was_up), 0));
	STAYS("the next heartbeat", assert_int_equal(store_host_heartbeat(f->s, "h1", &r, 11, &was_up), 0));
	MOVES("maintenance", assert_int_equal(store_host_set_maintenance(f->s, "h1", true, 12), 0));
	r.labels = "{\"rack\": \"r9\"}";
	MOVES("a Hello with new labels",
	      assert_int_equal(store_host_hello(f->s, "h1", &r, 13, &(bool){ 0 }, &was_up), 0));
	MOVES("a VM placed", add_vm(f->s, "v1", "vm1", "h1", "defined", 2, NULL, 0));
	STAYS("a VM's state", assert_int_equal(store_vm_set_state(f->s, "v1", "running", 14), 0));
	MOVES("a VM deleted", assert_int_equal(store_vm_delete(f->s, "v1"), 0));
#undef MOVES
#undef STAYS
}

static void test_host_list_filters(void **state)
{
	struct fx *f = *state;
	struct store_host_filter up = { .up = 1 }, down = { .up = 0 }, any = { .up = -1 };
	int n = 0;
	bool more;

	open_ok(f);
	add_host(f->s, "a", "ha");
	add_host(f->s, "b", "hb");
	add_host(f->s, "c", "hc");
	assert_int_equal(store_host_set_up(f->s, "b", false, 5), 0);
	assert_int_equal(store_host_list(f->s, &up, 0, 100, count_host, &n, &more), 0);
	assert_int_equal(n, 2);
	assert_false(more);
	n = 0;
	assert_int_equal(store_host_list(f->s, &down, 0, 100, count_host, &n, &more), 0);
	assert_int_equal(n, 1);
	n = 0;
	assert_int_equal(store_host_list(f->s, &any, 0, 2, count_host, &n, &more), 0);
	assert_int_equal(n, 2);
	assert_true(more);
}

struct names {
	char list[32][16];
	int64_t last_seq;
	int n;
};

static int collect_vm(const struct store_vm *v, void *opaque)
{
	struct names *nm = opaque;

	snprintf(nm->list[nm->n++], sizeof(nm->list[0]), "%s", v->name);
	nm->last_seq = v->seq;
	return 0;
}

static void test_vms(void **state)
{
	struct fx *f = *state;
	struct store_label web[] = { { "team", "web" }, { "tier", "front" } };
	struct store_label db[] = { { "team", "db" } };
	struct store_label want_web_front[] = { { "team", "web" }, { "tier", "front" } };
	struct store_vm_filter filt = { 0 };
	struct store_vm v = { 0 };
	struct store_host h = { 0 };
	struct names nm = { 0 };
	bool more;

	open_ok(f);
	add_host(f->s, "h1", "node1");
	add_host(f->s, "h2", "node2");
	add_vm(f->s, "v1", "web1", "h1", "running", 2, web, 2);
	add_vm(f->s, "v2", "web2", "h2", "stopped", 1, web, 1);
	add_vm(f->s, "v3", "db1", "h1", "running", 4, db, 1);
	/* Names are unique. */
	{
		struct store_vm dup = { .id = "v4", .name = "web1", .state = "defined",
					.definition = "{}", .vcpus = 1, .mem = 1 };
		assert_int_equal(store_vm_insert(f->s, &dup, NULL, 0, 10), -EEXIST);
	}
	assert_int_equal(store_vm_get(f->s, "web1", &v), 0);
	assert_string_equal(v.id, "v1");
	assert_string_equal(v.host_name, "node1");
	assert_false(v.has_pid);
	store_vm_clear(&v);

	/* Allocations follow the VMs placed on the host. */
	assert_int_equal(store_host_get(f->s, "h1", &h), 0);
	assert_int_equal(h.vcpus_allocated, 6);
	assert_int_equal(h.mem_allocated, 6ULL << 30);
	assert_int_equal(h.vms, 2);
	store_host_clear(&h);

	filt.state = "running";
	assert_int_equal(store_vm_list(f->s, &filt, 0, 100, collect_vm, &nm, &more), 0);
	assert_int_equal(nm.n, 2);
	memset(&nm, 0, sizeof(nm));
	filt = (struct store_vm_filter){ .host_id = "h2" };
	assert_int_equal(store_vm_list(f->s, &filt, 0, 100, collect_vm, &nm, &more), 0);
	assert_int_equal(nm.n, 1);
	assert_string_equal(nm.list[0], "web2");
	memset(&nm, 0, sizeof(nm));
	filt = (struct store_vm_filter){ .labels = want_web_front, .nlabels = 2 };
	assert_int_equal(store_vm_list(f->s, &filt, 0, 100, collect_vm, &nm, &more), 0);
	assert_int_equal(nm.n, 1);
	assert_string_equal(nm.list[0], "web1");
	memset(&nm, 0, sizeof(nm));
	filt = (struct store_vm_filter){ .labels = want_web_front, .nlabels = 1 };
	assert_int_equal(store_vm_list(f->s, &filt, 0, 100, collect_vm, &nm, &more), 0);
	assert_int_equal(nm.n, 2);
	memset(&nm, 0, sizeof(nm));
	filt = (struct store_vm_filter){ .name = "db1" };
	assert_int_equal(store_vm_list(f->s, &filt, 0, 100, collect_vm, &nm, &more), 0);
	assert_int_equal(nm.n, 1);

	/* Status from the agent, then back to no pid. */
	assert_int_equal(store_vm_set_status(f->s, "v3", "crashed", false, 0, true, 2,
					     "guest-crash", 50), 0);
	assert_int_equal(store_vm_get(f->s, "v3", &v), 0);
	assert_string_equal(v.state, "crashed");
	assert_true(v.has_exit);
	assert_int_equal(v.exit_status, 2);
	assert_string_equal(v.exit_reason, "guest-crash");
	assert_int_equal(v.updated_at, 50);
	store_vm_clear(&v);
	assert_int_equal(store_vm_set_state(f->s, "v3", "starting", 60), 0);
	assert_int_equal(store_vm_set_state(f->s, "zz", "starting", 60), -ENOENT);

	/* Deleting takes the labels along (the label filter finds nothing). */
	assert_int_equal(store_vm_delete(f->s, "v1"), 0);
	assert_int_equal(store_vm_delete(f->s, "v1"), -ENOENT);
	memset(&nm, 0, sizeof(nm));
	filt = (struct store_vm_filter){ .labels = want_web_front, .nlabels = 2 };
	assert_int_equal(store_vm_list(f->s, &filt, 0, 100, collect_vm, &nm, &more), 0);
	assert_int_equal(nm.n, 0);
	assert_int_equal(raw_int(f->path, "SELECT count(*) FROM vm_labels"), 2);
}

static void test_pagination(void **state)
{
	struct fx *f = *state;
	struct names nm = { 0 };
	int64_t after = 0;
	int pages = 0, total = 0;
	bool more = true;

	open_ok(f);
	add_host(f->s, "h1", "node1");
	for (int i = 0; i < 25; i++) {
		char id[16], name[16];

		snprintf(id, sizeof(id), "id%02d", i);
		snprintf(name, sizeof(name), "vm%02d", i);
		add_vm(f->s, id, name, "h1", "defined", 1, NULL, 0);
	}
	while (more) {
		memset(&nm, 0, sizeof(nm));
		assert_int_equal(store_vm_list(f->s, NULL, after, 10, collect_vm, &nm, &more), 0);
		/* Each page continues exactly where the last one stopped. */
		{
			char want[16];

			snprintf(want, sizeof(want), "vm%02d", total);
			assert_string_equal(nm.list[0], want);
		}
		total += nm.n;
		after = nm.last_seq;
		pages++;
	}
	assert_int_equal(pages, 3);
	assert_int_equal(total, 25);
	/* A page that ends exactly at the last row says there is no more. */
	memset(&nm, 0, sizeof(nm));
	assert_int_equal(store_vm_list(f->s, NULL, 0, 25, collect_vm, &nm, &more), 0);
	assert_int_equal(nm.n, 25);
	assert_false(more);
}

static int collect_op(const struct store_op *o, void *opaque)
{
	struct names *nm = opaque;

	snprintf(nm->list[nm->n++], sizeof(nm->list[0]), "%s", o->id);
	return 0;
}

static void test_operations(void **state)
{
	struct fx *f = *state;
	struct store_op o = { .id = "op1", .kind = "create", .vm_id = "v1", .vm_name = "web1",
			      .host_id = "h1", .state = "pending", .step = "define",
			      .params = "{\"start\":true}", .deadline = 9000 };
	struct store_op o2 = { .id = "op2", .kind = "stop", .vm_id = "v2", .state = "succeeded",
			       .step = "done", .progress = 100 };
	struct store_op_filter active = { .active = true }, byvm = { .vm_id = "v2" };
	struct store_op got = { 0 };
	struct names nm = { 0 };
	bool more;

	open_ok(f);
	assert_int_equal(store_op_insert(f->s, &o, 10), 0);
	assert_int_equal(store_op_insert(f->s, &o2, 11), 0);
	assert_int_equal(store_op_insert(f->s, &o2, 11), -EEXIST);
	assert_int_equal(store_op_get(f->s, "op1", &got), 0);
	assert_string_equal(got.step, "define");
	assert_string_equal(got.params, "{\"start\":true}");
	assert_int_equal(got.deadline, 9000);
	assert_null(got.error_code);
	store_op_clear(&got);

	o.state = "failed";
	o.step = "done";
	o.progress = 40;
	o.error_code = "vmm-failed";
	o.error_message = "drover-vmm exited with status 1";
	o.message = NULL;
	assert_int_equal(store_op_update(f->s, &o, 20), 0);
	assert_int_equal(store_op_get(f->s, "op1", &got), 0);
	assert_string_equal(got.state, "failed");
	assert_string_equal(got.error_code, "vmm-failed");
	assert_int_equal(got.progress, 40);
	assert_int_equal(got.updated_at, 20);
	assert_int_equal(got.created_at, 10);
	store_op_clear(&got);

	assert_int_equal(store_op_list(f->s, &active, 0, 100, collect_op, &nm, &more), 0);
	assert_int_equal(nm.n, 0);
	assert_int_equal(store_op_list(f->s, &byvm, 0, 100, collect_op, &nm, &more), 0);
	assert_int_equal(nm.n, 1);
	assert_string_equal(nm.list[0], "op2");
	/* A state outside the four is refused by the schema itself. */
	o.state = "exploded";
	assert_int_not_equal(store_op_update(f->s, &o, 30), 0);
}

static int collect_event(const struct store_event *e, void *opaque)
{
	struct names *nm = opaque;

	snprintf(nm->list[nm->n++], sizeof(nm->list[0]), "%s", e->kind);
	nm->last_seq = e->id;
	return 0;
}

static void test_events(void **state)
{
	struct fx *f = *state;
	struct store_event_filter byhost = { .host_id = "h1" };
	struct names nm = { 0 };
	bool more;
	int64_t first;

	open_ok(f);
	assert_int_equal(store_event_add(f->s, "host-up", NULL, "h1", 1, "host %s is up", "n1"), 0);
	assert_int_equal(store_event_add(f->s, "vm-created", "v1", "h1", 2, "vm created"), 0);
	assert_int_equal(store_event_add(f->s, "vm-started", "v1", "h2", 3, "vm started"), 0);
	assert_int_equal(store_event_list(f->s, NULL, 0, 1, collect_event, &nm, &more), 0);
	assert_true(more);
	assert_string_equal(nm.list[0], "host-up");
	first = nm.last_seq;
	memset(&nm, 0, sizeof(nm));
	assert_int_equal(store_event_list(f->s, NULL, first, 100, collect_event, &nm, &more), 0);
	assert_int_equal(nm.n, 2);
	assert_string_equal(nm.list[0], "vm-created");
	memset(&nm, 0, sizeof(nm));
	assert_int_equal(store_event_list(f->s, &byhost, 0, 100, collect_event, &nm, &more), 0);
	assert_int_equal(nm.n, 2);
}

static int count_token(const struct store_token *t, void *opaque)
{
	(*(int *)opaque)++;
	return 0;
}

static void test_tokens(void **state)
{
	struct fx *f = *state;
	struct store_token t = { .public_id = "0123456789ab", .name = "ci", .role = "reader",
				 .created_at = 100, .expires_at = 500 };
	struct store_token got = { 0 };
	int n = 0;

	memset(t.hash, 0xab, sizeof(t.hash));
	open_ok(f);
	assert_int_equal(store_token_insert(f->s, &t), 0);
	assert_int_equal(store_token_insert(f->s, &t), -EEXIST);
	t.role = "root";
	t.public_id = "ffffffffffff";
	assert_int_not_equal(store_token_insert(f->s, &t), 0);   /* CHECK on roles */
	assert_int_equal(store_token_get(f->s, "0123456789ab", &got), 0);
	assert_string_equal(got.role, "reader");
	assert_int_equal(got.expires_at, 500);
	assert_int_equal(got.revoked_at, 0);
	assert_memory_equal(got.hash, t.hash, STORE_HASH_LEN);
	store_token_clear(&got);
	assert_int_equal(store_token_revoke(f->s, "0123456789ab", 700), 0);
	assert_int_equal(store_token_revoke(f->s, "0123456789ab", 800), 0);
	assert_int_equal(store_token_get(f->s, "0123456789ab", &got), 0);
	assert_int_equal(got.revoked_at, 700);   /* the first revocation stands */
	store_token_clear(&got);
	assert_int_equal(store_token_revoke(f->s, "nope", 800), -ENOENT);
	assert_int_equal(store_token_list(f->s, count_token, &n), 0);
	assert_int_equal(n, 1);
}

static void test_idempotency(void **state)
{
	struct fx *f = *state;
	struct store_idem i = { .method = "POST", .path = "/v1/vms", .status = 202,
				.response = "{\"a\":1}", .created_at = 1000 };
	struct store_idem got = { 0 };

	memset(i.body_hash, 7, sizeof(i.body_hash));
	open_ok(f);
	assert_int_equal(store_idem_put(f->s, "tokA", "key1", &i), 0);
	assert_int_equal(store_idem_get(f->s, "tokA", "key1", 500, &got), 0);
	assert_string_equal(got.response, "{\"a\":1}");
	assert_memory_equal(got.body_hash, i.body_hash, STORE_HASH_LEN);
	store_idem_clear(&got);
	/* Keys are per token, and too old an answer is not found. */
	assert_int_equal(store_idem_get(f->s, "tokB", "key1", 500, &got), -ENOENT);
	assert_int_equal(store_idem_get(f->s, "tokA", "key1", 1001, &got), -ENOENT);
	assert_int_equal(store_idem_purge(f->s, 1001), 0);
	assert_int_equal(store_idem_get(f->s, "tokA", "key1", 0, &got), -ENOENT);
}

static void test_transactions(void **state)
{
	struct fx *f = *state;
	struct store_vm v = { 0 };

	open_ok(f);
	add_host(f->s, "h1", "node1");
	assert_int_equal(store_begin(f->s), 0);
	add_vm(f->s, "v1", "a", "h1", "defined", 1, NULL, 0);   /* nested transaction inside */
	assert_int_equal(store_event_add(f->s, "vm-created", "v1", NULL, 1, "x"), 0);
	assert_int_equal(store_end(f->s, false), -ECANCELED);
	assert_int_equal(store_vm_get(f->s, "v1", &v), -ENOENT);
	assert_int_equal(raw_int(f->path, "SELECT count(*) FROM events"), 0);

	/* A failed inner step rolls the outer transaction back too. */
	assert_int_equal(store_begin(f->s), 0);
	add_vm(f->s, "v2", "b", "h1", "defined", 1, NULL, 0);
	{
		struct store_vm dup = { .id = "v3", .name = "b", .state = "defined",
					.definition = "{}", .vcpus = 1, .mem = 1 };
		assert_int_equal(store_vm_insert(f->s, &dup, NULL, 0, 1), -EEXIST);
	}
	assert_int_not_equal(store_end(f->s, true), 0);
	assert_int_equal(store_vm_get(f->s, "v2", &v), -ENOENT);

	/* Committed work survives closing and reopening. */
	assert_int_equal(store_begin(f->s), 0);
	add_vm(f->s, "v4", "c", "h1", "defined", 1, NULL, 0);
	assert_int_equal(store_end(f->s, true), 0);
	store_close(f->s);
	f->s = NULL;
	open_ok(f);
	assert_int_equal(store_vm_get(f->s, "c", &v), 0);
	store_vm_clear(&v);
}

static void test_foreign_keys(void **state)
{
	struct fx *f = *state;
	struct store_vm v = { .id = "v1", .name = "a", .state = "defined", .host_id = "no-such-host",
			      .definition = "{}", .vcpus = 1, .mem = 1 };

	open_ok(f);
	/* A VM cannot point at a host that does not exist. */
	assert_int_not_equal(store_vm_insert(f->s, &v, NULL, 0, 1), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_new_database, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migrate_from_v1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refuse_newer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refuse_foreign, setup, teardown),
		cmocka_unit_test(test_unopenable),
		cmocka_unit_test_setup_teardown(test_hosts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sched_generation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_list_filters, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vms, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pagination, setup, teardown),
		cmocka_unit_test_setup_teardown(test_operations, setup, teardown),
		cmocka_unit_test_setup_teardown(test_events, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tokens, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idempotency, setup, teardown),
		cmocka_unit_test_setup_teardown(test_transactions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_foreign_keys, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
