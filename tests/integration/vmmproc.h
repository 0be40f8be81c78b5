/* Test helpers: run drover-vmm as a child process, collect its serial
 * output (stdout) and log (stderr), and talk to its control socket. */
#ifndef DROVER_TEST_VMMPROC_H
#define DROVER_TEST_VMMPROC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct vmmproc {
	pid_t pid;
	int out_fd, err_fd;
	char *out;            /* everything the guest printed so far */
	size_t out_len;
	char *err;            /* everything drover-vmm logged so far */
	size_t err_len;
	char sock[108];
	int status;           /* exit status once reaped, -1 before */
};

/* Starts `vmm` with argv (NULL-terminated, without argv[0]); when
 * with_control, adds --control with a fresh socket path. */
int vmmproc_start(struct vmmproc *p, const char *vmm, const char *const *args, bool with_control);
/* Reads what is available from stdout/stderr for up to ms milliseconds. */
void vmmproc_pump(struct vmmproc *p, int ms);
/* Waits until the output contains `needle` at least `count` times; true if so. */
bool vmmproc_wait_output(struct vmmproc *p, const char *needle, int count, int timeout_ms);
int vmmproc_count(const char *haystack, const char *needle);
/* Counts the complete lines (ended by a newline) that start with prefix. */
int vmmproc_count_lines(const char *text, const char *prefix);
/* Waits until `count` complete lines start with prefix; true if so. */
bool vmmproc_wait_lines(struct vmmproc *p, const char *prefix, int count, int timeout_ms);
/* Waits for the process to exit; returns its exit status or -1 on timeout. */
int vmmproc_wait_exit(struct vmmproc *p, int timeout_ms);
/* Kills (SIGKILL) and reaps a process still running, frees buffers. */
void vmmproc_cleanup(struct vmmproc *p);

/* A control-socket client. */
struct qmp {
	int fd;
	char buf[65536];
	size_t len;
};

/* Connects (retrying until the socket exists) and reads the greeting. */
int qmp_connect(struct qmp *q, const char *path, int timeout_ms, json_t **greeting);
void qmp_close(struct qmp *q);
int qmp_send_raw(struct qmp *q, const char *line);
/* Next JSON object from the server, or NULL on timeout/EOF. */
json_t *qmp_recv(struct qmp *q, int timeout_ms);
/* Sends a command and returns its reply (skipping events, which are
 * appended to *events if events is not NULL). */
json_t *qmp_execute(struct qmp *q, const char *cmd, json_t *args, json_t *events);
/* Waits for an event called name (looking first at the events gathered so
 * far, removing it from there); NULL on timeout. */
json_t *qmp_wait_event(struct qmp *q, const char *name, json_t *events, int timeout_ms);

/* Runs in the child between fork and exec, once its stdin, stdout and stderr
 * are in place: drops privileges, enters a namespace, ... 0 or -errno; on
 * failure the child says why on stderr and exits with VMMPROC_SETUP_FAILED. */
typedef int (*vmmproc_setup_fn)(void *arg);
#define VMMPROC_SETUP_FAILED 126

/* vmmproc_start with a setup step in the child (setup may be NULL). */
int vmmproc_start_setup(struct vmmproc *p, const char *vmm, const char *const *args,
			bool with_control, vmmproc_setup_fn setup, void *arg);

#endif
