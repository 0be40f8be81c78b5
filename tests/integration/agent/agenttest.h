/* Helpers for the agent's integration tests: a controller played over the
 * real protocol (proto/conn.h on a real TCP socket), the real drover-agent
 * binary as a child process, and the files it keeps.
 *
 * The fake controller listens on 127.0.0.1, answers Hello with Welcome
 * (or refuses, or keeps the raw socket for bytes of the test's choosing),
 * keeps every message the agent sends in an inbox, and lets a test wait
 * for one of a kind. */
#ifndef DROVER_TEST_AGENTTEST_H
#define DROVER_TEST_AGENTTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "drover.pb-c.h"

struct evloop;
struct conn;

#define FAKECTL_INBOX_MAX 4096

enum fakectl_mode {
	FAKECTL_WELCOME,     /* answer Hello with Welcome */
	FAKECTL_REFUSE,      /* answer Hello with Error "refused", then close */
	FAKECTL_RAW,         /* accept and keep the socket raw: no conn, no answers */
};

struct fakectl {
	struct evloop *loop;
	int listen_fd;
	uint16_t port;
	char addr[32];                   /* "127.0.0.1:PORT" */
	enum fakectl_mode mode;
	uint32_t heartbeat_ms;           /* what Welcome says */
	struct conn *c;                  /* the agent's connection, once accepted */
	int raw_fd;                      /* FAKECTL_RAW */
	unsigned accepted;               /* connections accepted so far */
	uint64_t accept_ms[64];          /* when (monotonic ms) */
	unsigned closes;                 /* connections that ended */
	char last_close[256];
	Drover__Envelope *inbox[FAKECTL_INBOX_MAX];
	size_t ninbox;
};

int fakectl_start(struct fakectl *f, uint32_t heartbeat_ms);
void fakectl_stop(struct fakectl *f);
/* Runs the event loop for ms milliseconds. */
void fakectl_spin(struct fakectl *f, int ms);
/* Closes the listening socket (connections are refused) / listens again on
 * the same port. */
void fakectl_unlisten(struct fakectl *f);
int fakectl_relisten(struct fakectl *f);
/* Drops the current connection as a crashed controller would. */
void fakectl_drop(struct fakectl *f);
/* Waits until the agent is connected (and, in WELCOME mode, Hello has come
 * and Welcome gone out) for the n-th time. */
bool fakectl_wait_connections(struct fakectl *f, unsigned n, int timeout_ms);

/* The first message in the inbox with that body (removed from it), waiting
 * up to timeout_ms; NULL on timeout. Free with fakectl_free. */
Drover__Envelope *fakectl_wait(struct fakectl *f, Drover__Envelope__BodyCase body,
			       int timeout_ms);
/* The first VmEvent for vm_id whose event is `event`. */
Drover__Envelope *fakectl_wait_event(struct fakectl *f, const char *vm_id, const char *event,
				     int timeout_ms);
/* Drops every message of that body from the inbox. */
void fakectl_discard(struct fakectl *f, Drover__Envelope__BodyCase body);
void fakectl_free(Drover__Envelope *env);

/* Sends a Command and waits for the CommandResult answering it (NULL on
 * timeout). */
Drover__Envelope *fakectl_command(struct fakectl *f, Drover__Command *cmd, int timeout_ms);
/* Shorthands: a command with a VmRef, a define, a stop. */
Drover__Envelope *fakectl_vm(struct fakectl *f, Drover__Command__KindCase kind,
			     const char *vm_id, int timeout_ms);
Drover__Envelope *fakectl_define(struct fakectl *f, const char *vm_id, const char *json,
				 int timeout_ms);
Drover__Envelope *fakectl_stopvm(struct fakectl *f, const char *vm_id, uint32_t timeout_ms,
				 bool force, int wait_ms);
/* Sends any Envelope on the agent's connection. */
int64_t fakectl_send(struct fakectl *f, Drover__Envelope *env);

/* A VmStatus for vm_id in a Hello or Heartbeat, or NULL. */
const Drover__VmStatus *find_vm(const Drover__Envelope *env, const char *vm_id);

/* ---- the agent process ---- */

struct agentproc {
	pid_t pid;
	char log[512];                   /* its stderr */
};

/* Starts drover-agent --config config, stderr appended to log. */
int agentproc_start(struct agentproc *p, const char *agent, const char *config,
		    const char *log);
/* Sends sig and reaps it; its exit status (or 128+signal), -1 on timeout. */
int agentproc_stop(struct agentproc *p, int sig, int timeout_ms);
/* Runs drover-agent with args to the end: its exit status, stderr in err. */
int agentproc_run(const char *agent, const char *const *args, char *err, size_t errlen,
		  int timeout_ms);

/* ---- files and processes ---- */

/* A fresh directory under /tmp (short: VM control sockets live below it). */
int test_tmpdir(char *out, size_t len);
void test_rmtree(const char *path);
int test_write(const char *path, const char *text);
/* The file's size, -1 if it does not exist. */
long long test_file_size(const char *path);
/* True if the file holds needle anywhere. */
bool test_file_contains(const char *path, const char *needle);
/* How many times needle occurs in the file (a reset may cut a line, so
 * what the guest prints first after one may not start a line). */
int test_count_substr(const char *path, const char *needle);
/* How many lines of the file start with prefix. */
int test_count_lines(const char *path, const char *prefix);
/* Waits until the file has at least count lines starting with prefix. */
bool test_wait_lines(const char *path, const char *prefix, int count, int timeout_ms);
/* True while pid runs (not a zombie). */
bool test_pid_alive(pid_t pid);
/* Waits until pid no longer runs; reaps it if it is our child. */
bool test_wait_pid_gone(pid_t pid, int timeout_ms);
/* Kills and reaps a VMM the test's agent started (cleanup), if it runs. */
void test_kill_pid(pid_t pid);
uint64_t test_now_ms(void);

#endif
