/* Helpers of the qcow2 integration tests: a scratch directory, commands
 * (the real qemu-img and qemu-io) with their output kept for failure
 * messages, deterministic random numbers, and a raw "model" file holding
 * what the guest must read back. */
#ifndef DROVER_QCOW2_TESTUTIL_H
#define DROVER_QCOW2_TESTUTIL_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "blk_int.h"

/* The driver lives in a static library that nothing else references yet:
 * naming it here links it in. */
static const struct blk_driver *const qcow2_linked __attribute__((used)) = &blk_driver_qcow2;

struct qt {
	char dir[512];
	char out[65536];                  /* output of the last command */
};

static int qt_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int qt_setup(void **state)
{
	struct qt *t = calloc(1, sizeof(*t));
	const char *tmp = getenv("TMPDIR");

	if (!t)
		return -1;
	snprintf(t->dir, sizeof(t->dir), "%s/drover-qcow2-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(t->dir))
		return -1;
	*state = t;
	return 0;
}

static int qt_teardown(void **state)
{
	struct qt *t = *state;
	if (!getenv("QCOW2_KEEP"))
		nftw(t->dir, qt_rm, 16, FTW_DEPTH | FTW_PHYS);
	else
		fprintf(stderr, "kept %s\n", t->dir);
	free(t);
	return 0;
}

static inline void qt_path(const struct qt *t, const char *name, char *out)
{
	snprintf(out, PATH_MAX, "%s/%s", t->dir, name);
}

/* Runs a shell command; returns its exit status, output in t->out. */
static int qt_run(struct qt *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int qt_run(struct qt *t, const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	FILE *p;
	size_t n = 0;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	strncat(cmd, " 2>&1", sizeof(cmd) - strlen(cmd) - 1);
	p = popen(cmd, "r");
	if (!p)
		return -1;
	while (n < sizeof(t->out) - 1) {
		size_t r = fread(t->out + n, 1, sizeof(t->out) - 1 - n, p);
		if (!r)
			break;
		n += r;
	}
	t->out[n] = 0;
	int st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

#define qt_must(t, ...)                                                                   \
	do {                                                                              \
		int rc_ = qt_run(t, __VA_ARGS__);                                         \
		if (rc_ != 0)                                                             \
			fail_msg("command failed (%d): %s", rc_, (t)->out);               \
	} while (0)

/* qemu-img check: no corruption, no leak. */
static inline void qt_qemu_check(struct qt *t, const char *img)
{
	int rc = qt_run(t, "qemu-img check -f qcow2 '%s'", img);
	if (rc != 0 || !strstr(t->out, "No errors were found"))
		fail_msg("qemu-img check %s: exit %d: %s", img, rc, t->out);
}

/* qemu-img compare against the expected raw contents. */
static inline void qt_qemu_compare(struct qt *t, const char *raw, const char *img)
{
	int rc = qt_run(t, "qemu-img compare -f raw -F qcow2 '%s' '%s'", raw, img);
	if (rc != 0)
		fail_msg("qemu-img compare %s %s: exit %d: %s", raw, img, rc, t->out);
}

/* xorshift64*: the same sequence on every run for one seed. */
static inline uint64_t qt_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

/* Bytes that compress somewhat (runs) or not at all. */
static inline void qt_fill(uint8_t *buf, size_t len, uint64_t *seed, bool compressible)
{
	for (size_t i = 0; i < len;) {
		uint64_t r = qt_rand(seed);
		if (compressible) {
			size_t run = 1 + (r % 64);
			for (size_t k = 0; k < run && i < len; k++)
				buf[i++] = (uint8_t)(r >> 8);
		} else {
			for (int k = 0; k < 8 && i < len; k++, r >>= 8)
				buf[i++] = (uint8_t)r;
		}
	}
}

/* The model: a raw file with what the image must read as. */
struct qt_model {
	uint8_t *data;
	uint64_t size;
};

static inline void qt_model_save(const struct qt_model *m, const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	for (uint64_t off = 0; off < m->size;) {
		ssize_t n = pwrite(fd, m->data + off, m->size - off, (off_t)off);
		assert_true(n > 0);
		off += (uint64_t)n;
	}
	close(fd);
}

static inline void qt_model_load(struct qt_model *m, const char *path)
{
	struct stat st;
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	m->size = (uint64_t)st.st_size;
	m->data = realloc(m->data, m->size ? m->size : 1);
	assert_non_null(m->data);
	for (uint64_t off = 0; off < m->size;) {
		ssize_t n = pread(fd, m->data + off, m->size - off, (off_t)off);
		assert_true(n > 0);
		off += (uint64_t)n;
	}
	close(fd);
}

static inline struct blk *qt_open(const char *path, const char *fmt, bool ro)
{
	struct blk_open_opts o = { .format = fmt, .readonly = ro };
	struct blk *b = NULL;
	char err[512] = "";
	if (blk_open(&b, path, &o, err, sizeof(err)) < 0)
		fail_msg("opening %s: %s", path, err);
	return b;
}

/* Reads the whole image through drover and compares with the model. */
static inline void qt_expect_contents(struct blk *b, const struct qt_model *m)
{
	const size_t chunk = 1 << 20;
	uint8_t *buf = malloc(chunk);
	assert_non_null(buf);
	assert_int_equal(blk_size(b), m->size);
	for (uint64_t off = 0; off < m->size; off += chunk) {
		size_t n = m->size - off < chunk ? (size_t)(m->size - off) : chunk;
		assert_int_equal(blk_pread(b, off, buf, n), 0);
		if (memcmp(buf, m->data + off, n)) {
			size_t i = 0;
			while (buf[i] == m->data[off + i])
				i++;
			fail_msg("%s: byte %llu reads %#x, expected %#x", blk_filename(b),
				 (unsigned long long)(off + i), buf[i], m->data[off + i]);
		}
	}
	free(buf);
}

#endif
