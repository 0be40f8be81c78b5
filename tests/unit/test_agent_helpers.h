/* Shared by the agent's unit tests that run real drover-vmm processes
 * (test_vmmdrv.c, test_supervise.c): where drover-vmm and the hello guest
 * are, temporary run directories, and spinning an event loop until
 * something happened. */
#ifndef DROVER_TEST_AGENT_HELPERS_H
#define DROVER_TEST_AGENT_HELPERS_H

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "evloop.h"

/* <build>/tests/unit/<test> -> <build>/<rel>, unless the environment
 * variable env names the file. */
static inline void th_build_path(const char *env, const char *rel, char *out, size_t len)
{
	char self[PATH_MAX];
	ssize_t n;
	char *p;

	if (getenv(env)) {
		snprintf(out, len, "%s", getenv(env));
		return;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	self[n > 0 ? n : 0] = 0;
	for (int up = 0; up < 3 && (p = strrchr(self, '/')); up++)
		*p = 0;
	if (snprintf(out, len, "%s/%s", self, rel) >= (int)len) {
		fprintf(stderr, "build path too long: %s/%s\n", self, rel);
		exit(1);
	}
}

/* drover-vmm and hello.elf of this build; fails loudly when they are not
 * built (a test that cannot run its VMM must not pass). */
static inline void th_find_vmm(char *vmm, char *hello, size_t len)
{
	th_build_path("DROVER_VMM", "vmm/drover-vmm", vmm, len);
	th_build_path("DROVER_HELLO_ELF", "tests/guests/hello.elf", hello, len);
	if (access(vmm, X_OK) || access(hello, R_OK)) {
		fprintf(stderr, "this test needs %s and %s (build them, or set DROVER_VMM and "
			"DROVER_HELLO_ELF)\n", vmm, hello);
		exit(1);
	}
}

static inline uint64_t th_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Runs the loop until *flag is true or timeout_ms passed; returns *flag. */
static inline bool th_spin_until(struct evloop *loop, const bool *flag, int timeout_ms)
{
	uint64_t end = th_now_ms() + (uint64_t)timeout_ms;

	while (!*flag && th_now_ms() < end)
		evloop_run_once(loop, 10);
	return *flag;
}

static inline void th_spin(struct evloop *loop, int ms)
{
	uint64_t end = th_now_ms() + (uint64_t)ms;

	while (th_now_ms() < end)
		evloop_run_once(loop, 10);
}

/* A short directory under /tmp (control sockets live below it). */
static inline void th_tmpdir(char *out, size_t len)
{
	snprintf(out, len, "/tmp/drt-XXXXXX");
	if (!mkdtemp(out)) {
		perror("mkdtemp");
		exit(1);
	}
}

static inline void th_rmtree(const char *path)
{
	pid_t pid = fork();

	if (pid == 0) {
		execlp("rm", "rm", "-rf", "--", path, (char *)NULL);
		_exit(127);
	}
	if (pid > 0)
		waitpid(pid, NULL, 0);
}

static inline bool th_pid_alive(pid_t pid)
{
	char path[64], buf[512];
	FILE *f;
	char *p;
	bool alive = false;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return false;
	if (fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')')) && p[1] == ' ')
		alive = p[2] != 'Z' && p[2] != 'X';
	fclose(f);
	return alive;
}

/* Waits until pid is gone (and reaped, if it is our child); true if so. */
static inline bool th_wait_gone(pid_t pid, int timeout_ms)
{
	uint64_t end = th_now_ms() + (uint64_t)timeout_ms;

	while (th_now_ms() < end) {
		pid_t r = waitpid(pid, NULL, WNOHANG);

		if (r == pid || (r < 0 && errno == ECHILD && !th_pid_alive(pid)))
			return true;
		usleep(10000);
	}
	return false;
}

/* Cleanup of a VMM this test started, by pid. */
static inline void th_kill(pid_t pid)
{
	if (pid > 0 && th_pid_alive(pid)) {
		kill(pid, SIGKILL);
		th_wait_gone(pid, 5000);
	}
}

static inline int th_write(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return -errno;
	fputs(text, f);
	return fclose(f) == 0 ? 0 : -EIO;
}

static inline int th_count_lines(const char *path, const char *prefix)
{
	FILE *f = fopen(path, "r");
	char line[1024];
	int n = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		n += !strncmp(line, prefix, strlen(prefix)) && strchr(line, '\n');
	fclose(f);
	return n;
}

#endif
