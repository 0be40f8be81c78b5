/* boottime: runs a command N times and reports, for each run, the time from
 * exec to the first complete line on its stdout and to its exit, then the
 * medians. Used by tests/bench/boot.sh to compare drover-vmm with QEMU.
 *
 *   boottime [-n RUNS] [-m MARKER] -- COMMAND ARGS...
 *
 * -m: time to the first line that contains MARKER instead of the first line.
 * Prints "first_line_ms_median=X exit_ms_median=Y runs=N" on the last line. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int run_once(char **argv, const char *marker, double *first, double *total)
{
	char buf[65536];
	size_t used = 0;
	int pfd[2], status;
	double t0;
	pid_t pid;

	if (pipe(pfd) < 0)
		return -1;
	t0 = now_ms();
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		dup2(pfd[1], 1);
		close(pfd[0]);
		close(pfd[1]);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(pfd[1]);
	*first = -1;
	for (;;) {
		ssize_t n = read(pfd[0], buf + used, sizeof(buf) - 1 - used);

		if (n <= 0)
			break;
		used += (size_t)n;
		buf[used] = 0;
		if (*first < 0) {
			char *nl = memchr(buf, '\n', used);

			if (nl && (!marker || strstr(buf, marker)))
				*first = now_ms() - t0;
		}
		if (used > sizeof(buf) / 2) {
			/* keep the tail only: the marker is looked for in what is left */
			memmove(buf, buf + used - 1024, 1024);
			used = 1024;
		}
	}
	close(pfd[0]);
	waitpid(pid, &status, 0);
	*total = now_ms() - t0;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int main(int argc, char **argv)
{
	const char *marker = NULL;
	int runs = 20, opt, st = 0;
	double *first, *total;

	while ((opt = getopt(argc, argv, "n:m:")) != -1) {
		if (opt == 'n')
			runs = atoi(optarg);
		else if (opt == 'm')
			marker = optarg;
		else
			return 2;
	}
	if (optind >= argc || runs < 1) {
		fprintf(stderr, "usage: boottime [-n RUNS] [-m MARKER] -- COMMAND ARGS...\n");
		return 2;
	}
	first = calloc((size_t)runs, sizeof(double));
	total = calloc((size_t)runs, sizeof(double));
	for (int i = 0; i < runs; i++) {
		st = run_once(argv + optind, marker, &first[i], &total[i]);
		if (first[i] < 0) {
			fprintf(stderr, "boottime: run %d printed no line%s%s (exit status %d)\n", i,
				marker ? " containing " : "", marker ? marker : "", st);
			return 1;
		}
	}
	qsort(first, (size_t)runs, sizeof(double), cmp);
	qsort(total, (size_t)runs, sizeof(double), cmp);
	printf("first_line_ms_median=%.2f exit_ms_median=%.2f first_line_ms_min=%.2f runs=%d\n",
	       first[runs / 2], total[runs / 2], first[0], runs);
	return 0;
}
