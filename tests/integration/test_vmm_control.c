/* drover-vmm's control socket, driven as an operator's tool would, against a
 * running test guest: status, pause/resume (the guest really stops), reset
 * (the guest really restarts), quit, several clients, vCPU threads, signals
 * and guest-initiated ends.
 *
 * query-blockstats is checked against what the blkbench guest says it did.
 *
 * Usage: test_vmm_control DROVER_VMM HELLO_ELF BLKBENCH_ELF */
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "vmmproc.h"

static const char *vmm_path, *hello_path, *blkbench_path;

#define TICK "hello: tick "

static void start_ticker(struct vmmproc *p, struct qmp *q, const char *cpus)
{
	const char *args[] = { "--kernel", hello_path, "--cmdline", "hello.ticks", "--memory",
			       "64M", "--cpus", cpus, "--serial", "stdio", NULL };

	assert_int_equal(vmmproc_start(p, vmm_path, args, true), 0);
	assert_int_equal(qmp_connect(q, p->sock, 5000, NULL), 0);
	assert_true(vmmproc_wait_lines(p, TICK, 1, 10000));
}

static void stop_vm(struct vmmproc *p, struct qmp *q)
{
	json_t *r = qmp_execute(q, "quit", NULL, NULL);

	json_decref(r);
	vmmproc_wait_exit(p, 5000);
	qmp_close(q);
	vmmproc_cleanup(p);
}

static const char *str(json_t *o, const char *path1, const char *path2)
{
	json_t *v = json_object_get(o, path1);

	if (path2)
		v = json_object_get(v, path2);
	return json_is_string(v) ? json_string_value(v) : "";
}

static void test_greeting_and_status(void **state)
{
	struct vmmproc p;
	struct qmp q;
	json_t *greeting, *r;
	const char *args[] = { "--kernel", hello_path, "--cmdline", "hello.ticks", "--memory",
			       "64M", "--name", "ticker", NULL };

	assert_int_equal(vmmproc_start(&p, vmm_path, args, true), 0);
	assert_int_equal(qmp_connect(&q, p.sock, 5000, &greeting), 0);
	assert_non_null(json_object_get(greeting, "QMP"));
	json_decref(greeting);

	r = qmp_execute(&q, "qmp_capabilities", NULL, NULL);
	assert_true(json_is_object(json_object_get(r, "return")));
	json_decref(r);

	r = qmp_execute(&q, "query-status", NULL, NULL);
	assert_true(json_is_true(json_object_get(json_object_get(r, "return"), "running")));
	assert_string_equal(str(r, "return", "status"), "running");
	json_decref(r);

	r = qmp_execute(&q, "query-name", NULL, NULL);
	assert_string_equal(str(r, "return", "name"), "ticker");
	json_decref(r);

	r = qmp_execute(&q, "query-memory", NULL, NULL);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(r, "return"),
							       "base-memory")), 64 << 20);
	json_decref(r);

	r = qmp_execute(&q, "no-such-command", NULL, NULL);
	assert_string_equal(str(r, "error", "class"), "CommandNotFound");
	json_decref(r);
	stop_vm(&p, &q);
}

static void test_pause_resume(void **state)
{
	struct vmmproc p;
	struct qmp q;
	json_t *events = json_array(), *r, *e;
	int ticks;

	start_ticker(&p, &q, "1");
	r = qmp_execute(&q, "pause", NULL, events);
	assert_non_null(json_object_get(r, "return"));
	json_decref(r);
	e = qmp_wait_event(&q, "STOP", events, 5000);
	assert_non_null(e);
	assert_non_null(json_object_get(json_object_get(e, "timestamp"), "seconds"));
	json_decref(e);

	r = qmp_execute(&q, "query-status", NULL, events);
	assert_string_equal(str(r, "return", "status"), "paused");
	assert_true(json_is_false(json_object_get(json_object_get(r, "return"), "running")));
	json_decref(r);

	/* A paused guest prints nothing: wait long enough for several ticks. */
	vmmproc_pump(&p, 50);
	ticks = vmmproc_count_lines(p.out, TICK);
	for (int i = 0; i < 10; i++)
		vmmproc_pump(&p, 50);
	assert_int_equal(vmmproc_count_lines(p.out, TICK), ticks);

	r = qmp_execute(&q, "resume", NULL, events);
	json_decref(r);
	e = qmp_wait_event(&q, "RESUME", events, 5000);
	assert_non_null(e);
	json_decref(e);
	assert_true(vmmproc_wait_lines(&p, TICK, ticks + 2, 10000));
	json_decref(events);
	stop_vm(&p, &q);
}

static void test_system_reset(void **state)
{
	struct vmmproc p;
	struct qmp q;
	json_t *events = json_array(), *r, *e;
	int banners, ticks;

	start_ticker(&p, &q, "2");
	banners = vmmproc_count(p.out, "hello: hello");
	assert_int_equal(banners, 1);
	ticks = vmmproc_count_lines(p.out, TICK);
	r = qmp_execute(&q, "system-reset", NULL, events);
	assert_non_null(json_object_get(r, "return"));
	json_decref(r);
	e = qmp_wait_event(&q, "RESET", events, 5000);
	assert_non_null(e);
	assert_true(json_is_false(json_object_get(json_object_get(e, "data"), "guest")));
	json_decref(e);
	/* The guest boots again from its entry point and ticks again. */
	if (!vmmproc_wait_output(&p, "hello: hello", 2, 10000) ||
	    !vmmproc_wait_lines(&p, TICK, ticks + 2, 10000))
		fail_msg("no tick after the reset; guest output:\n%s\nlog:\n%s", p.out, p.err);

	/* A reset while paused keeps the VM paused. */
	json_decref(qmp_execute(&q, "pause", NULL, events));
	json_decref(qmp_execute(&q, "system-reset", NULL, events));
	r = qmp_execute(&q, "query-status", NULL, events);
	assert_string_equal(str(r, "return", "status"), "paused");
	json_decref(r);
	json_decref(qmp_execute(&q, "cont", NULL, events));
	assert_true(vmmproc_wait_output(&p, "hello: hello", 3, 10000));
	json_decref(events);
	stop_vm(&p, &q);
}

/* The ACPI power button: accepted, announced (POWERDOWN), listed in
 * query-commands; the hello guest has no ACPI driver and runs on. */
static void test_system_powerdown(void **state)
{
	struct vmmproc p;
	struct qmp q;
	json_t *events = json_array(), *r, *ev;
	size_t i;
	json_t *c;
	bool listed = false;

	start_ticker(&p, &q, "1");
	r = qmp_execute(&q, "query-commands", NULL, NULL);
	json_array_foreach(json_object_get(r, "return"), i, c)
		listed |= !strcmp(str(c, "name", NULL), "system_powerdown");
	json_decref(r);
	assert_true(listed);
	r = qmp_execute(&q, "system_powerdown", NULL, events);
	assert_true(json_is_object(json_object_get(r, "return")));
	json_decref(r);
	ev = qmp_wait_event(&q, "POWERDOWN", events, 5000);
	assert_non_null(ev);
	json_decref(ev);
	int ticks = vmmproc_count_lines(p.out, TICK);
	assert_true(vmmproc_wait_lines(&p, TICK, ticks + 2, 10000));
	json_decref(events);
	stop_vm(&p, &q);
}

static void test_quit(void **state)
{
	struct vmmproc p;
	struct qmp q;
	struct stat st;
	json_t *r, *e;

	start_ticker(&p, &q, "1");
	r = qmp_execute(&q, "quit", NULL, NULL);
	assert_non_null(json_object_get(r, "return"));
	json_decref(r);
	e = qmp_wait_event(&q, "SHUTDOWN", NULL, 5000);
	assert_non_null(e);
	assert_string_equal(str(e, "data", "reason"), "host-qmp-quit");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(e, "data"),
							       "exit-status")), 4);
	json_decref(e);
	assert_int_equal(vmmproc_wait_exit(&p, 5000), 4);
	assert_int_not_equal(stat(p.sock, &st), 0);   /* socket removed */
	qmp_close(&q);
	vmmproc_cleanup(&p);
}

static void test_two_clients(void **state)
{
	struct vmmproc p;
	struct qmp a, b;
	json_t *e;

	start_ticker(&p, &a, "1");
	assert_int_equal(qmp_connect(&b, p.sock, 5000, NULL), 0);
	json_decref(qmp_execute(&a, "pause", NULL, NULL));
	e = qmp_wait_event(&b, "STOP", NULL, 5000);
	assert_non_null(e);
	json_decref(e);
	json_decref(qmp_execute(&b, "resume", NULL, NULL));
	e = qmp_wait_event(&a, "RESUME", NULL, 5000);
	assert_non_null(e);
	json_decref(e);
	qmp_close(&b);
	stop_vm(&p, &a);
}

static void test_query_cpus(void **state)
{
	struct vmmproc p;
	struct qmp q;
	json_t *r, *list;
	char path[64];
	long tids[2];

	start_ticker(&p, &q, "2");
	r = qmp_execute(&q, "query-cpus", NULL, NULL);
	list = json_object_get(r, "return");
	assert_int_equal(json_array_size(list), 2);
	for (size_t i = 0; i < 2; i++) {
		json_t *c = json_array_get(list, i);
		struct stat st;

		assert_int_equal(json_integer_value(json_object_get(c, "cpu-index")), (long)i);
		assert_int_equal(json_integer_value(json_object_get(c, "apic-id")), (long)i);
		tids[i] = (long)json_integer_value(json_object_get(c, "thread-id"));
		assert_true(tids[i] > 0);
		snprintf(path, sizeof(path), "/proc/%d/task/%ld", p.pid, tids[i]);
		assert_int_equal(stat(path, &st), 0);   /* a real thread of the VMM */
	}
	assert_true(tids[0] != tids[1]);
	json_decref(r);
	stop_vm(&p, &q);
}

static void test_sigterm(void **state)
{
	struct vmmproc p;
	struct qmp q;
	json_t *e;

	start_ticker(&p, &q, "1");
	kill(p.pid, SIGTERM);
	e = qmp_wait_event(&q, "SHUTDOWN", NULL, 5000);
	assert_non_null(e);
	assert_string_equal(str(e, "data", "reason"), "host-signal");
	json_decref(e);
	assert_int_equal(vmmproc_wait_exit(&p, 5000), 4);
	qmp_close(&q);
	vmmproc_cleanup(&p);
}

/* A guest that resets itself restarts (RESET events from the guest) under
 * the default --on-reboot reset, and ends the VMM with status 3 under exit. */
static void test_guest_reset(void **state)
{
	struct vmmproc p;
	struct qmp q;
	json_t *e;
	const char *args[] = { "--kernel", hello_path, "--cmdline", "hello.reset", "--memory",
			       "64M", NULL };
	const char *args_exit[] = { "--kernel", hello_path, "--cmdline", "hello.reset",
				    "--memory", "64M", "--on-reboot", "exit", NULL };

	assert_int_equal(vmmproc_start(&p, vmm_path, args, true), 0);
	assert_int_equal(qmp_connect(&q, p.sock, 5000, NULL), 0);
	for (int i = 0; i < 2; i++) {
		e = qmp_wait_event(&q, "RESET", NULL, 10000);
		assert_non_null(e);
		assert_true(json_is_true(json_object_get(json_object_get(e, "data"), "guest")));
		json_decref(e);
	}
	assert_true(vmmproc_wait_output(&p, "hello: hello", 2, 10000));
	stop_vm(&p, &q);

	assert_int_equal(vmmproc_start(&p, vmm_path, args_exit, false), 0);
	assert_int_equal(vmmproc_wait_exit(&p, 10000), 3);
	vmmproc_cleanup(&p);
}

/* Ends that the guest chooses, with their exit statuses and SHUTDOWN data. */
static void test_guest_ends(void **state)
{
	static const struct {
		const char *cmdline;
		int status;
		const char *log;
	} cases[] = {
		{ "hello.exit=7", 16 + 7, NULL },
		{ "hello.poweroff", 0, "powered off" },
		{ "hello.crash", 2, "triple fault" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct vmmproc p;
		const char *args[] = { "--kernel", hello_path, "--cmdline", cases[i].cmdline,
				       "--memory", "64M", NULL };

		assert_int_equal(vmmproc_start(&p, vmm_path, args, false), 0);
		assert_int_equal(vmmproc_wait_exit(&p, 10000), cases[i].status);
		if (cases[i].log)
			assert_non_null(strstr(p.err, cases[i].log));
		if (cases[i].status == 2)   /* the crash report has the registers */
			assert_non_null(strstr(p.err, "rip="));
		vmmproc_cleanup(&p);
	}
}

/* --serial file:PATH writes the console to a file; --serial unix:PATH lets a
 * client connect, read the console and type into it. */
static void test_serial_backends(void **state)
{
	char path[128], sock[108], buf[4096];
	struct vmmproc p;
	size_t len = 0;
	FILE *f;
	int fd;

	snprintf(path, sizeof(path), "/tmp/drover-test-%d-serial.log", getpid());
	{
		const char *args[] = { "--kernel", hello_path, "--memory", "64M", "--serial", NULL,
				       NULL };
		char spec[160];

		snprintf(spec, sizeof(spec), "file:%s", path);
		args[5] = spec;
		assert_int_equal(vmmproc_start(&p, vmm_path, args, false), 0);
		assert_int_equal(vmmproc_wait_exit(&p, 10000), 16);
		assert_int_equal(p.out_len, 0);      /* nothing on stdout */
		vmmproc_cleanup(&p);
		f = fopen(path, "r");
		assert_non_null(f);
		len = fread(buf, 1, sizeof(buf) - 1, f);
		buf[len] = 0;
		fclose(f);
		unlink(path);
		assert_non_null(strstr(buf, "hello: hello from a test guest\n"));
	}
	{
		const char *args[] = { "--kernel", hello_path, "--cmdline", "hello.echo", "--memory",
				       "64M", "--serial", NULL, NULL };
		char spec[160];
		struct qmp con;   /* the console is a stream of lines too */

		snprintf(sock, sizeof(sock), "/tmp/drover-test-%d-console.sock", getpid());
		snprintf(spec, sizeof(spec), "unix:%s", sock);
		args[7] = spec;
		assert_int_equal(vmmproc_start(&p, vmm_path, args, false), 0);
		/* Reuse the line reader: connect, then read raw lines. */
		for (int i = 0; i < 500; i++) {
			struct sockaddr_un sa = { .sun_family = AF_UNIX };

			fd = socket(AF_UNIX, SOCK_STREAM, 0);
			snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
			if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
				break;
			close(fd);
			fd = -1;
			usleep(10000);
		}
		assert_true(fd >= 0);
		con.fd = fd;
		con.len = 0;
		/* Output before the client came is not kept (as with QEMU's
		 * nowait sockets): the client connects at once, so it normally
		 * sees the prompt, and then types; the guest flushes its UART
		 * when it starts, so typing before the prompt could be lost. */
		len = 0;
		buf[0] = 0;
		for (int i = 0; i < 500 && !strstr(buf, "hello: type a line"); i++) {
			ssize_t n = recv(fd, buf + len, sizeof(buf) - 1 - len, MSG_DONTWAIT);

			if (n > 0)
				len += (size_t)n;
			buf[len] = 0;
			usleep(10000);
		}
		assert_int_equal(qmp_send_raw(&con, "via the socket\n"), 0);
		len = 0;
		for (int i = 0; i < 500 && !strstr(buf, "hello: echo 'via the socket'"); i++) {
			ssize_t n = recv(fd, buf + len, sizeof(buf) - 1 - len, MSG_DONTWAIT);

			if (n > 0)
				len += (size_t)n;
			buf[len] = 0;
			usleep(10000);
		}
		assert_non_null(strstr(buf, "hello: echo 'via the socket'"));
		close(fd);
		assert_int_equal(vmmproc_wait_exit(&p, 10000), 16);
		vmmproc_cleanup(&p);
		unlink(sock);
	}
}

/* The ops the guest reported for its rows named like prefix ("rand" or
 * "seq", reads or writes). */
static uint64_t guest_ops(const char *out, const char *row)
{
	uint64_t sum = 0;
	char needle[64];

	snprintf(needle, sizeof(needle), "blkbench: %s ", row);
	for (const char *p = strstr(out, needle); p; p = strstr(p + 1, needle)) {
		const char *ops = strstr(p, " ops ");

		assert_non_null(ops);
		sum += strtoull(ops + 5, NULL, 10);
	}
	return sum;
}

static json_int_t stat_of(json_t *stats, const char *name)
{
	json_t *v = json_object_get(stats, name);

	assert_true(json_is_integer(v));
	return json_integer_value(v);
}

/* Counters that agree with what the guest did, and reads that the guest
 * submitted together merged into one: the sequential row alone makes four
 * 1 MiB reads available at once, and again whenever they have completed
 * together. The guest ends right after its row, so the counters are read
 * while the VM is paused in the middle of it. */
static void test_blockstats(void **state)
{
	char dir[] = "/tmp/drover-blockstats.XXXXXX", disk[64], diskarg[128];
	struct vmmproc p;
	struct qmp q;
	json_t *r = NULL, *stats = NULL;
	json_int_t ops = 0;
	int fd;

	assert_non_null(mkdtemp(dir));
	snprintf(disk, sizeof(disk), "%s/disk.raw", dir);
	fd = open(disk, O_CREAT | O_RDWR, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 64 << 20), 0);
	close(fd);
	snprintf(diskarg, sizeof(diskarg), "path=%s,format=raw,id=data", disk);
	const char *args[] = { "--kernel", blkbench_path, "--cmdline",
			       "blkbench.ms=2000 blkbench.only=seqread", "--memory", "128M",
			       "--disk", diskarg, "--serial", "stdio", NULL };

	assert_int_equal(vmmproc_start(&p, vmm_path, args, true), 0);
	assert_int_equal(qmp_connect(&q, p.sock, 5000, NULL), 0);
	assert_true(vmmproc_wait_lines(&p, "blkbench: capacity ", 1, 30000));
	/* Paused, nothing moves: the counters hold still while they are read. */
	for (int tries = 0; tries < 100 && ops < 16; tries++) {
		usleep(20000);
		json_decref(qmp_execute(&q, "stop", NULL, NULL));
		json_decref(r);
		r = qmp_execute(&q, "query-blockstats", NULL, NULL);
		stats = json_object_get(json_array_get(json_object_get(r, "return"), 0), "stats");
		ops = stats ? stat_of(stats, "rd_operations") : 0;
		if (ops < 16)
			json_decref(qmp_execute(&q, "cont", NULL, NULL));
	}
	assert_non_null(stats);
	assert_string_equal(json_string_value(json_object_get(json_array_get(
			    json_object_get(r, "return"), 0), "device")), "data");
	assert_true(ops >= 16);
	/* Every read is one of the row's 1 MiB reads; nothing else happened. */
	assert_int_equal(stat_of(stats, "rd_bytes"), ops << 20);
	assert_true(stat_of(stats, "rd_merged") >= 3);
	assert_int_equal(stat_of(stats, "wr_operations"), 0);
	assert_int_equal(stat_of(stats, "failed_rd_operations"), 0);
	assert_int_equal(stat_of(stats, "failed_wr_operations"), 0);
	assert_int_equal(stat_of(stats, "flush_operations"), 0);
	json_decref(r);
	json_decref(qmp_execute(&q, "cont", NULL, NULL));

	/* The guest saw at least as many complete (a few may have been in
	 * flight when it was paused). */
	assert_true(vmmproc_wait_lines(&p, "blkbench: seqread ", 1, 30000));
	assert_true((json_int_t)guest_ops(p.out, "seqread") >= ops - 4);
	assert_int_equal(vmmproc_wait_exit(&p, 20000), 16);
	qmp_close(&q);
	vmmproc_cleanup(&p);
	unlink(disk);
	rmdir(dir);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_greeting_and_status),
		cmocka_unit_test(test_pause_resume),
		cmocka_unit_test(test_system_reset),
		cmocka_unit_test(test_system_powerdown),
		cmocka_unit_test(test_quit),
		cmocka_unit_test(test_two_clients),
		cmocka_unit_test(test_query_cpus),
		cmocka_unit_test(test_sigterm),
		cmocka_unit_test(test_guest_reset),
		cmocka_unit_test(test_guest_ends),
		cmocka_unit_test(test_serial_backends),
		cmocka_unit_test(test_blockstats),
	};

	if (argc != 4) {
		fprintf(stderr, "usage: %s DROVER_VMM HELLO_ELF BLKBENCH_ELF\n", argv[0]);
		return 2;
	}
	vmm_path = argv[1];
	hello_path = argv[2];
	blkbench_path = argv[3];
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
