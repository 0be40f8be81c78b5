/* drover-vmm given bad input: bad options, bad config files, crafted kernels
 * (made by mkbadkernel), files that do not fit, and a host without access to
 * /dev/kvm. For each case the real drover-vmm must exit with status 1
 * quickly and without a crash or sanitizer report, and say what is wrong in
 * exactly one line on stderr, followed only by the "Try --help" hint for
 * command-line mistakes. A few cases must succeed (the good kernels, and bad
 * invocations with the one bad thing fixed), so that the failures are known
 * to come from what each case breaks.
 *
 * Usage: test_vmm_badinput DROVER_VMM MKBADKERNEL */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "vmmproc.h"

#define GOOD_STATUS   21        /* the good kernels write 5 to the debug-exit port */
#define ERROR_STATUS  1
#define CASE_MAX_MS   5000      /* bad input is refused at once, even under ASan */
#define HINT_LINE     "Try 'drover-vmm --help' for the options."
#define UNREADABLE    "/proc/sys/vm/compact_memory"   /* write-only, even for root */
#define MAX_ARGS      16

enum expect {
	EXPECT_ERROR,           /* status 1, one error line */
	EXPECT_ERROR_HINT,      /* status 1, one error line and the --help hint */
	EXPECT_SUCCESS,         /* status GOOD_STATUS, no error */
};

enum child {
	CHILD_AS_IS,
	CHILD_AS_NOBODY,        /* drops root before exec: /dev/kvm is not its */
	CHILD_WITHOUT_DEV,      /* own mount namespace, an empty tmpfs on /dev */
};

struct bad_case {
	const char *name;
	/* "@NAME" stands for NAME in the case directory ("@" alone for the
	 * directory); "%KEY" for a value computed at run time (expand_arg). */
	const char *args[MAX_ARGS];
	enum expect expect;
	/* The error line must contain it; '*' separates fragments that must
	 * appear in this order, with anything between them. */
	const char *phrase;
	enum child child;
};

/* Set once by main and group_setup; read by every case. */
static const char *vmm_path, *mkbadkernel_path;
static char case_dir[64];
static uint64_t host_ram_mib;

/* ---- the cases ---- */

#define ERR(name_, phrase_, ...) \
	{ .name = name_, .args = { __VA_ARGS__ }, .expect = EXPECT_ERROR, .phrase = phrase_ }
#define ERR_HINT(name_, phrase_, ...) \
	{ .name = name_, .args = { __VA_ARGS__ }, .expect = EXPECT_ERROR_HINT, .phrase = phrase_ }
#define ERR_CHILD(child_, name_, phrase_, ...) \
	{ .name = name_, .args = { __VA_ARGS__ }, .expect = EXPECT_ERROR, .phrase = phrase_, \
	  .child = child_ }
#define OK(name_, ...) \
	{ .name = name_, .args = { __VA_ARGS__ }, .expect = EXPECT_SUCCESS }

static const struct bad_case cases[] = {
	/* The command line */
	ERR_HINT("no kernel option", "--kernel is required", "--memory", "64M"),
	ERR_HINT("unknown option", "unknown option '--bogus'", "--kernel", "@good.elf", "--bogus"),
	ERR_HINT("option without value", "option '--kernel' needs a value", "--kernel"),
	ERR_HINT("option value missing before next option", "option '--cpus' needs a value",
		 "--cpus", "--memory", "64M", "--kernel", "@good.elf"),
	ERR_HINT("stray argument", "unexpected argument '", "@good.elf"),
	ERR_HINT("cpus 0", "--cpus: '0' out of range 1..1024", "--kernel", "@good.elf",
		 "--cpus", "0"),
	ERR("cpus 255", "--cpus 255: this host allows 1 to ", "--kernel", "@good.elf",
	    "--cpus", "255"),
	ERR_HINT("cpus abc", "--cpus: 'abc' is not a number", "--kernel", "@good.elf",
		 "--cpus", "abc"),
	ERR_HINT("memory 0", "--memory: '0' is zero", "--kernel", "@good.elf", "--memory", "0"),
	ERR_HINT("memory 12X", "--memory: '12X' is not a size", "--kernel", "@good.elf",
		 "--memory", "12X"),
	ERR_HINT("memory 2T", "--memory: '2T' is above the maximum of 1T", "--kernel",
		 "@good.elf", "--memory", "2T"),
	ERR("memory above host RAM", "MiB is more than this host's", "--kernel", "@good.elf",
	    "--memory", "%hostram+1G"),
	ERR_HINT("serial bogus", "--serial: 'bogus' is not one of stdio, file:PATH, unix:PATH, "
		 "none", "--kernel", "@good.elf", "--serial", "bogus"),
	ERR("serial file in missing directory",
	    "--serial file:/nonexistent-dir/x: No such file or directory",
	    "--kernel", "@good.elf", "--serial", "file:/nonexistent-dir/x"),
	ERR_HINT("control path too long", "is longer than a unix socket path can be (107 bytes)",
		 "--kernel", "@good.elf", "--control", "%longsock"),
	ERR("control in missing directory",
	    "--control /nonexistent-dir/vm.sock: No such file or directory",
	    "--kernel", "@good.elf", "--control", "/nonexistent-dir/vm.sock"),
	ERR("cpu feature unknown", "unknown feature 'bogus'", "--kernel", "@good.elf",
	    "--cpu-features", "-bogus"),
	ERR("cpu features in conflict", "'+avx2' (item 2) conflicts with '-avx' (item 1)",
	    "--kernel", "@good.elf", "--cpu-features", "-avx,+avx2"),
	ERR_HINT("name with a newline", "--name: 'two\\x0alines' contains a control character",
		 "--kernel", "@good.elf", "--name", "two\nlines"),
	ERR_HINT("on-reboot bogus", "--on-reboot: 'halt' is not one of reset, exit",
		 "--kernel", "@good.elf", "--on-reboot", "halt"),
	ERR_HINT("boot-protocol bogus", "--boot-protocol: 'efi' is not one of auto, pvh, linux64",
		 "--kernel", "@good.elf", "--boot-protocol", "efi"),

	/* --config */
	ERR_HINT("config malformed JSON", "syntax.json: line 1 column", "--config",
		 "@syntax.json"),
	ERR_HINT("config unknown key", "unknown-key.json: unknown key 'bogus' (at top level)",
		 "--config", "@unknown-key.json"),
	ERR_HINT("config wrong type", "wrong-type.json: 'cpus' must be an integer, not a string",
		 "--config", "@wrong-type.json"),
	ERR_HINT("config file missing", "--config: cannot read '", "--config", "@missing.json"),
	ERR_HINT("config not an object",
		 "array.json: the document must be a JSON object, not an array",
		 "--config", "@array.json"),

	/* The kernel file */
	ERR("kernel missing", "missing.elf': No such file or directory", "--kernel",
	    "@missing.elf"),
	ERR("kernel is a directory", "': not a regular file", "--kernel", "@"),
	ERR("kernel not readable", "kernel '" UNREADABLE "': Permission denied", "--kernel",
	    UNREADABLE),
	ERR("kernel is a text file",
	    "not a kernel drover can boot (neither a Linux bzImage nor an x86-64 ELF file)",
	    "--kernel", "@text.txt"),
	ERR("kernel empty", "file too short (0 bytes)", "--kernel", "@empty"),
	ERR("kernel of 10 bytes", "file too short (10 bytes)", "--kernel", "@ten-bytes"),

	/* Crafted ELF files: each breaks one thing in good.elf */
	ERR("ELF header truncated", "file too short (40 bytes)", "--kernel", "@truncated.elf"),
	ERR("ELF 32-bit class", "not a 64-bit ELF file", "--kernel", "@class32.elf"),
	ERR("ELF big-endian", "ELF file is not for x86-64", "--kernel", "@bigendian.elf"),
	ERR("ELF wrong machine", "ELF file is not for x86-64", "--kernel", "@aarch64.elf"),
	ERR("ELF shared object", "ELF file is not an executable (type 3)", "--kernel",
	    "@dyn.elf"),
	ERR("ELF phnum 0", "bad ELF program headers (0 of 56 bytes at offset 64)", "--kernel",
	    "@phnum0.elf"),
	ERR("ELF phnum huge", "bad ELF program headers (65535 of 56 bytes at offset 64)",
	    "--kernel", "@phnum-huge.elf"),
	ERR("ELF phoff past EOF", "bad ELF program headers (2 of 56 bytes at offset 1048576)",
	    "--kernel", "@phoff-eof.elf"),
	ERR("ELF segment offset past EOF", "ELF segment 0 lies outside the file", "--kernel",
	    "@seg-offset-eof.elf"),
	ERR("ELF segment size past EOF", "ELF segment 0 lies outside the file", "--kernel",
	    "@seg-size-eof.elf"),
	ERR("ELF filesz above memsz", "ELF segment 0 *(256)*(16)", "--kernel",
	    "@filesz-gt-memsz.elf"),
	ERR("ELF segment below 1 MiB", "ELF segment 0 at 0x80000 is below 1 MiB", "--kernel",
	    "@below-1m.elf"),
	ERR("ELF segment beyond RAM",
	    "ELF segment 0 [0xc0000000, 0xc0002000) is not inside guest RAM",
	    "--kernel", "@at-3g.elf", "--memory", "64M"),
	ERR("ELF PVH entry outside the image",
	    "pvh entry point 0x200000 is outside the loaded image",
	    "--kernel", "@pvh-entry-outside.elf"),
	ERR("ELF entry outside the image",
	    "linux64 entry point 0x200000 is outside the loaded image",
	    "--kernel", "@entry-outside.elf"),
	ERR("ELF with 17 segments", "more than 16 loadable ELF segments", "--kernel",
	    "@17-segments.elf"),
	ERR("ELF PVH note desc size 2", "malformed ELF note segment 1", "--kernel",
	    "@pvh-descsz.elf"),
	ERR("ELF note segment past EOF", "malformed ELF note segment 1", "--kernel",
	    "@note-seg-eof.elf"),
	ERR("ELF note name size overrun, pvh", "malformed ELF note segment 1",
	    "--kernel", "@note-namesz-overrun.elf", "--boot-protocol", "pvh"),
	ERR("ELF note name size overrun, auto", "malformed ELF note segment 1",
	    "--kernel", "@note-namesz-overrun.elf"),
	ERR("ELF at 4 GiB through the 64-bit entry",
	    "above 4 GiB*identity map does not reach",
	    "--kernel", "@at-4g.elf", "--memory", "5G"),
	ERR("ELF without note, pvh", "--boot-protocol pvh, but the ELF file has no PVH entry note",
	    "--kernel", "@nonote.elf", "--boot-protocol", "pvh"),

	/* Crafted bzImages: each breaks one thing in good.bzImage */
	ERR("bzImage truncated after the header", "truncated bzImage (1 setup sectors, 768 bytes)",
	    "--kernel", "@truncated.bzImage"),
	ERR("bzImage protocol 2.11", "bzImage boot protocol 2.11 has no 64-bit entry",
	    "--kernel", "@protocol-211.bzImage"),
	ERR("bzImage without XLF_KERNEL_64", "bzImage boot protocol 2.15 has no 64-bit entry",
	    "--kernel", "@no-kernel64.bzImage"),
	ERR("bzImage setup_sects past EOF", "truncated bzImage (200 setup sectors, 1546 bytes)",
	    "--kernel", "@setup-past-eof.bzImage"),
	ERR("bzImage init_size above RAM",
	    "needs 2049 MiB*give the VM more --memory",
	    "--kernel", "@init-size-2g.bzImage", "--memory", "64M"),
	ERR("bzImage loaded low", "a zImage (loaded low) is not supported", "--kernel",
	    "@loaded-low.bzImage"),
	ERR("bzImage running at 4 GiB", "asks to run at 0x100000000, above 4 GiB",
	    "--kernel", "@pref-4g.bzImage", "--memory", "5G"),
	ERR("bzImage cmdline above cmdline_size", "--cmdline: 256 bytes, but kernel '",
	    "--kernel", "@good.bzImage", "--cmdline", "%cmdline256"),
	ERR("bzImage with pvh",
	    "--boot-protocol pvh needs an ELF kernel with a PVH note; this is a bzImage",
	    "--kernel", "@good.bzImage", "--boot-protocol", "pvh"),

	/* The initrd */
	ERR("initrd missing", "missing.img': No such file or directory", "--kernel",
	    "@good.elf", "--initrd", "@missing.img"),
	ERR("initrd is a directory", "': not a regular file", "--kernel", "@good.elf",
	    "--initrd", "@"),
	ERR("initrd does not fit", "(16384 KiB) does not fit between the kernel's end",
	    "--kernel", "@good.elf", "--memory", "8M", "--initrd", "@initrd-16M.img"),

	/* The host */
	ERR_CHILD(CHILD_AS_NOBODY, "no permission on /dev/kvm", "no permission to open /dev/kvm",
		  "--kernel", "@good.elf"),
	ERR_CHILD(CHILD_WITHOUT_DEV, "no /dev/kvm", "/dev/kvm does not exist",
		  "--kernel", "@good.elf"),

	/* The same, with the one bad thing fixed */
	OK("good ELF", "--kernel", "@good.elf", "--memory", "64M"),
	OK("good ELF, pvh", "--kernel", "@good.elf", "--boot-protocol", "pvh"),
	OK("good ELF, linux64", "--kernel", "@good.elf", "--boot-protocol", "linux64"),
	OK("ELF without note", "--kernel", "@nonote.elf"),
	OK("ELF with an 8-byte PVH entry", "--kernel", "@pvh-desc8.elf", "--boot-protocol", "pvh"),
	OK("good bzImage", "--kernel", "@good.bzImage", "--memory", "64M"),
	OK("bzImage cmdline of cmdline_size", "--kernel", "@good.bzImage", "--cmdline",
	   "%cmdline255"),
	OK("initrd that fits", "--kernel", "@good.elf", "--memory", "8M", "--initrd",
	   "@initrd-4M.img"),
	OK("options all valid", "--kernel", "@good.elf", "--cpus", "2", "--cpu-features",
	   "-avx,-avx2", "--serial", "file:@serial.out", "--control", "@vm.sock", "--name",
	   "one line", "--on-reboot", "exit"),
	OK("config valid", "--config", "@good.json"),

	/* --disk */
	ERR_HINT("disk without path", "--disk: disk 0: path is missing (path=FILE)",
		 "--kernel", "@good.elf", "--disk", "format=raw"),
	ERR_HINT("disk format vmdk",
		 "--disk: disk 0 (*initrd-4M.img'): format: 'vmdk' is not one of raw, qcow2",
		 "--kernel", "@good.elf", "--disk", "path=@initrd-4M.img,format=vmdk"),
	ERR_HINT("disk cache bogus", "--disk: disk 0 ('data'): cache: 'fast' is not one of none, "
		 "writeback, writethrough, unsafe",
		 "--kernel", "@good.elf", "--disk", "path=@initrd-4M.img,id=data,cache=fast"),
	ERR_HINT("disk snapshot maybe", "snapshot: 'maybe' is not on or off",
		 "--kernel", "@good.elf", "--disk", "path=@initrd-4M.img,snapshot=maybe"),
	ERR_HINT("disk readonly 1", "readonly: '1' is not on or off",
		 "--kernel", "@good.elf", "--disk", "path=@initrd-4M.img,readonly=1"),
	ERR_HINT("disk queues 0", "queues: '0' is not a number in 1..16",
		 "--kernel", "@good.elf", "--disk", "path=@initrd-4M.img,queues=0"),
	ERR_HINT("disk queues 17", "queues: '17' is not a number in 1..16",
		 "--kernel", "@good.elf", "--disk", "path=@initrd-4M.img,queues=17"),
	ERR_HINT("disk serial too long", "serial: '123456789012345678901' is longer than the 20",
		 "--kernel", "@good.elf", "--disk", "path=@initrd-4M.img,serial=123456789012345678901"),
	ERR_HINT("disk id with a space", "id: 'my disk' may hold only letters",
		 "--kernel", "@good.elf", "--disk", "path=@initrd-4M.img,id=my disk"),
	ERR_HINT("disk unknown key", "unknown key 'size' (known: path, format",
		 "--kernel", "@good.elf", "--disk", "path=@initrd-4M.img,size=1G"),
	ERR_HINT("disk key twice", "format is given twice",
		 "--kernel", "@good.elf", "--disk", "path=@initrd-4M.img,format=raw,format=raw"),
	ERR_HINT("disk item without value", "'readonly' is not KEY=VALUE",
		 "--kernel", "@good.elf", "--disk", "path=@initrd-4M.img,readonly"),
	ERR_HINT("disk ids twice", "--disk: disk 0 and disk 1 are both called 'a'",
		 "--kernel", "@good.elf", "--disk", "path=@initrd-4M.img,id=a,readonly=on",
		 "--disk", "path=@initrd-16M.img,id=a"),
	ERR("disk file missing", "disk 'disk0': *missing.img: No such file or directory",
	    "--kernel", "@good.elf", "--disk", "path=@missing.img"),
	ERR("disk is a directory", "disk 'disk0': *: Is a directory",
	    "--kernel", "@good.elf", "--disk", "path=@"),
	ERR("disk not readable", "disk 'disk0': " UNREADABLE ": Permission denied",
	    "--kernel", "@good.elf", "--disk", "path=" UNREADABLE ",format=raw"),
	ERR("disk raw file as qcow2", "disk 'd1': *initrd-4M.img: qcow2 header: bad magic",
	    "--kernel", "@good.elf", "--disk", "path=@initrd-4M.img,format=qcow2,id=d1"),
	ERR("disk given twice, writable", "disk 'disk1': *initrd-4M.img: image is in use",
	    "--kernel", "@good.elf", "--disk", "path=@initrd-4M.img,format=raw",
	    "--disk", "path=@initrd-4M.img,format=raw"),
	OK("disks valid", "--kernel", "@good.elf", "--disk",
	   "path=@initrd-4M.img,format=raw,cache=none,queues=4,serial=S1,id=root",
	   "--disk", "path=@initrd-16M.img,format=raw,readonly=on,snapshot=on"),
};

/* ---- running one case ---- */

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void expand_arg(const char *arg, char *out, size_t len)
{
	const char *at = strchr(arg, '@');

	if (!strcmp(arg, "%hostram+1G")) {
		snprintf(out, len, "%lluM", (unsigned long long)host_ram_mib + 1024);
	} else if (!strcmp(arg, "%longsock")) {
		snprintf(out, len, "%s/%0120d.sock", case_dir, 0);
	} else if (!strcmp(arg, "%cmdline255") || !strcmp(arg, "%cmdline256")) {
		size_t n = !strcmp(arg, "%cmdline255") ? 255 : 256;

		assert_true(n < len);
		memset(out, 'x', n);
		out[n] = '\0';
	} else if (at) {
		snprintf(out, len, "%.*s%s%s%s", (int)(at - arg), arg, case_dir, at[1] ? "/" : "",
			 at + 1);
	} else {
		snprintf(out, len, "%s", arg);
	}
}

struct nobody {
	uid_t uid;
	gid_t gid;
};

static int become_nobody(void *arg)
{
	const struct nobody *nb = arg;

	if (setgroups(0, NULL) < 0 || setresgid(nb->gid, nb->gid, nb->gid) < 0 ||
	    setresuid(nb->uid, nb->uid, nb->uid) < 0)
		return -errno;
	if (access(vmm_path, X_OK) < 0) {
		dprintf(2, "user nobody cannot run %s\n", vmm_path);
		return -errno;
	}
	return 0;
}

static int hide_dev(void *arg)
{
	if (unshare(CLONE_NEWNS) < 0 ||
	    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("drover-test", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755") < 0)
		return -errno;
	return 0;
}

/* Whether this machine can run the case; why not in why. */
static bool case_possible(const struct bad_case *c, char *why, size_t len)
{
	struct stat st;
	int fd;

	for (size_t i = 0; i < MAX_ARGS && c->args[i]; i++) {
		if (!strcmp(c->args[i], "%hostram+1G") && host_ram_mib + 1024 > (1u << 20)) {
			snprintf(why, len, "this host has 1 TiB of RAM or more, the most --memory "
				 "takes");
			return false;
		}
		if (strcmp(c->args[i], UNREADABLE))
			continue;
		fd = open(UNREADABLE, O_RDONLY | O_CLOEXEC);
		if (fd >= 0 || errno != EACCES) {
			snprintf(why, len, "%s is readable here (or missing): no file to test with",
				 UNREADABLE);
			if (fd >= 0)
				close(fd);
			return false;
		}
	}
	if (c->child == CHILD_AS_IS)
		return true;
	if (geteuid() != 0) {
		snprintf(why, len, "needs root to drop privileges or enter a mount namespace");
		return false;
	}
	if (c->child == CHILD_AS_NOBODY && stat("/dev/kvm", &st) == 0 &&
	    (st.st_mode & (S_IROTH | S_IWOTH)) == (S_IROTH | S_IWOTH)) {
		snprintf(why, len, "/dev/kvm is open to every user here");
		return false;
	}
	return true;
}

/* Whether line holds the fragments of phrase (split at '*') in order. */
static bool line_matches(const char *line, const char *phrase)
{
	while (*phrase) {
		size_t len = strcspn(phrase, "*");
		const char *at;
		char *frag = strndup(phrase, len);

		assert_non_null(frag);
		at = strstr(line, frag);
		free(frag);
		if (!at)
			return false;
		line = at + len;
		phrase += len;
		if (*phrase == '*')
			phrase++;
	}
	return true;
}

/* The complete lines of text, at most max; returns how many there are. */
static int split_lines(char *text, char **line, int max)
{
	int n = 0;

	for (char *s = text, *nl; *s && (nl = strchr(s, '\n')); s = nl + 1) {
		*nl = '\0';
		if (n < max)
			line[n] = s;
		n++;
	}
	return n;
}

/* Whether drover-vmm did what the case expects; what it did instead in why. */
static bool output_ok(const struct bad_case *c, const struct vmmproc *p, long ms, char *why,
		      size_t len)
{
	int want = c->expect == EXPECT_SUCCESS ? GOOD_STATUS : ERROR_STATUS;
	bool sanitizer = strstr(p->err, "Sanitizer") || strstr(p->err, "runtime error:");
	char *copy, *line[4];
	bool ok;
	int n;

	if (p->status != want || sanitizer || ms > CASE_MAX_MS) {
		snprintf(why, len, "exit status %d (want %d) after %ld ms; stderr:\n%s",
			 p->status, want, ms, p->err);
		return false;
	}
	if (c->expect == EXPECT_SUCCESS) {
		snprintf(why, len, "succeeded but logged an error:\n%s", p->err);
		return !strstr(p->err, "error");
	}
	copy = strdup(p->err);
	assert_non_null(copy);
	n = split_lines(copy, line, 4);
	/* The whole of stderr is complete lines: no message without its end. */
	ok = p->err_len > 0 && p->err[p->err_len - 1] == '\n' &&
	     n == (c->expect == EXPECT_ERROR_HINT ? 2 : 1) &&
	     !strncmp(line[0], "drover-vmm: ", 12) && line_matches(line[0], c->phrase) &&
	     (n == 1 || !strcmp(line[1], HINT_LINE));
	free(copy);
	snprintf(why, len, "want one line with \"%s\"%s; stderr:\n%s", c->phrase,
		 c->expect == EXPECT_ERROR_HINT ? " and the --help hint" : "", p->err);
	return ok;
}

static void run_case(void **state)
{
	const struct bad_case *c = *state;
	char argbuf[MAX_ARGS][512], why[8192];
	const char *args[MAX_ARGS + 1];
	struct nobody nb = { 65534, 65534 };
	const struct passwd *pw;
	vmmproc_setup_fn setup = NULL;
	void *setup_arg = NULL;
	struct vmmproc p;
	long start;
	size_t n;
	bool ok;

	if (!case_possible(c, why, sizeof(why))) {
		print_message("%s: skipped: %s\n", c->name, why);
		skip();
	}
	for (n = 0; n < MAX_ARGS && c->args[n]; n++) {
		expand_arg(c->args[n], argbuf[n], sizeof(argbuf[n]));
		args[n] = argbuf[n];
	}
	args[n] = NULL;
	if (c->child == CHILD_AS_NOBODY) {
		pw = getpwnam("nobody");
		if (pw)
			nb = (struct nobody){ pw->pw_uid, pw->pw_gid };
		setup = become_nobody;
		setup_arg = &nb;
	} else if (c->child == CHILD_WITHOUT_DEV) {
		setup = hide_dev;
	}

	start = now_ms();
	assert_int_equal(vmmproc_start_setup(&p, vmm_path, args, false, setup, setup_arg), 0);
	if (vmmproc_wait_exit(&p, CASE_MAX_MS * 2) < 0) {
		vmmproc_cleanup(&p);
		fail_msg("%s: drover-vmm still runs after %d ms", c->name, CASE_MAX_MS * 2);
	}
	if (p.status == VMMPROC_SETUP_FAILED && setup) {
		print_message("%s: skipped: cannot set the child up here: %s", c->name, p.err);
		vmmproc_cleanup(&p);
		skip();
	}
	ok = output_ok(c, &p, now_ms() - start, why, sizeof(why));
	vmmproc_cleanup(&p);
	if (!ok)
		fail_msg("%s: %s", c->name, why);
}

/* ---- the case directory ---- */

static int write_text(const char *name, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int write_text(const char *name, const char *fmt, ...)
{
	char path[256];
	va_list ap;
	FILE *f;
	int ret;

	snprintf(path, sizeof(path), "%s/%s", case_dir, name);
	f = fopen(path, "w");
	if (!f)
		return -errno;
	va_start(ap, fmt);
	ret = vfprintf(f, fmt, ap) < 0 ? -EIO : 0;
	va_end(ap);
	if (fclose(f) != 0)
		ret = -EIO;
	return ret;
}

/* A sparse file: placement needs only its size. */
static int write_sized(const char *name, off_t size)
{
	char path[256];
	int fd, ret = 0;

	snprintf(path, sizeof(path), "%s/%s", case_dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, size) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

static int run_mkbadkernel(void)
{
	int st;
	pid_t pid = fork();

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		execl(mkbadkernel_path, mkbadkernel_path, case_dir, (char *)NULL);
		_exit(127);
	}
	if (waitpid(pid, &st, 0) < 0)
		return -errno;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EIO;
}

static uint64_t read_host_ram_mib(void)
{
	unsigned long long kib = 0;
	char line[256];
	FILE *f = fopen("/proc/meminfo", "r");

	while (f && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "MemTotal: %llu kB", &kib) == 1)
			break;
	}
	if (f)
		fclose(f);
	return kib >> 10;
}

static int group_setup(void **state)
{
	snprintf(case_dir, sizeof(case_dir), "/tmp/drover-badinput-XXXXXX");
	if (!mkdtemp(case_dir))
		return -1;
	/* User nobody reads the kernel too. */
	if (chmod(case_dir, 0755) < 0 || run_mkbadkernel() < 0)
		return -1;
	host_ram_mib = read_host_ram_mib();
	if (!host_ram_mib)
		return -1;
	if (write_sized("initrd-16M.img", 16 << 20) < 0 ||
	    write_sized("initrd-4M.img", 4 << 20) < 0)
		return -1;
	if (write_text("syntax.json", "{\"kernel\": \"%s/good.elf\", \"memory\": }\n",
		       case_dir) < 0 ||
	    write_text("unknown-key.json", "{\"kernel\": \"%s/good.elf\", \"bogus\": 1}\n",
		       case_dir) < 0 ||
	    write_text("wrong-type.json", "{\"kernel\": \"%s/good.elf\", \"cpus\": \"two\"}\n",
		       case_dir) < 0 ||
	    write_text("array.json", "[\"%s/good.elf\"]\n", case_dir) < 0 ||
	    write_text("good.json", "{\"name\": \"ok\", \"vcpus\": 2, \"memory\": \"64M\", "
		       "\"boot\": {\"kernel\": \"%s/good.elf\", \"cmdline\": \"a b\"}}\n",
		       case_dir) < 0)
		return -1;
	return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int group_teardown(void **state)
{
	if (case_dir[0])
		nftw(case_dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
	return 0;
}

int main(int argc, char **argv)
{
	struct CMUnitTest tests[sizeof(cases) / sizeof(cases[0])];

	if (argc != 3) {
		fprintf(stderr, "usage: %s DROVER_VMM MKBADKERNEL\n", argv[0]);
		return 2;
	}
	vmm_path = argv[1];
	mkbadkernel_path = argv[2];
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		tests[i] = (struct CMUnitTest){ .name = cases[i].name, .test_func = run_case,
						.initial_state = (void *)&cases[i] };
	return cmocka_run_group_tests_name("vmm_badinput", tests, group_setup, group_teardown);
}
