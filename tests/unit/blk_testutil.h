/* Helpers shared by the block layer's unit tests (test_blk*, test_file,
 * test_raw): a scratch directory per test, files with known contents, and
 * what the kernel says about an open descriptor. */
#ifndef DROVER_BLK_TESTUTIL_H
#define DROVER_BLK_TESTUTIL_H

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blk_int.h"

struct scratch {
	char dir[1024];
	char loopdev[64];             /* a loop device to detach at teardown */
};

static inline void scratch_path(const struct scratch *s, const char *name, char *out)
{
	snprintf(out, PATH_MAX, "%s/%s", s->dir, name);
}

static int scratch_setup(void **state)
{
	struct scratch *s = calloc(1, sizeof(*s));
	const char *tmp = getenv("TMPDIR");

	assert_non_null(s);
	snprintf(s->dir, sizeof(s->dir), "%s/drover-blktest-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(s->dir));
	*state = s;
	return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int scratch_teardown(void **state)
{
	struct scratch *s = *state;

	if (s->loopdev[0]) {
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "losetup -d '%s'", s->loopdev);
		if (system(cmd) != 0)
			fprintf(stderr, "warning: %s not detached\n", s->loopdev);
	}
	nftw(s->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(s);
	return 0;
}

/* Writes len bytes of pattern(i) = seed + i*7 at the start of a new file. */
static inline void make_file(const char *path, size_t len, uint8_t seed)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	uint8_t *buf = malloc(len ? len : 1);

	assert_true(fd >= 0);
	assert_non_null(buf);
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(seed + i * 7);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	assert_int_equal(fsync(fd), 0);
	close(fd);
	free(buf);
}

static inline uint8_t pattern_at(uint8_t seed, size_t i)
{
	return (uint8_t)(seed + i * 7);
}

/* Reads a file through a plain descriptor (not the layer). */
static inline void slurp(const char *path, void *buf, size_t len, off_t off)
{
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	memset(buf, 0xee, len);
	assert_true(pread(fd, buf, len, off) >= 0);
	close(fd);
}

static inline uint64_t file_blocks_bytes(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return (uint64_t)st.st_blocks * 512;
}

static inline uint64_t file_size_of(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return (uint64_t)st.st_size;
}

static inline bool all_bytes(const void *buf, size_t len, uint8_t v)
{
	const uint8_t *p = buf;

	for (size_t i = 0; i < len; i++)
		if (p[i] != v)
			return false;
	return true;
}

/* The open flags (fdinfo "flags:", octal) of this process's descriptor on
 * path that was opened last (highest fd); -1 if none. */
static inline long fd_flags_of(const char *path)
{
	char real[PATH_MAX], link[PATH_MAX], p[300], line[256];
	struct dirent *e;
	long flags = -1;
	int best = -1;
	DIR *d;

	assert_non_null(realpath(path, real));
	d = opendir("/proc/self/fd");
	assert_non_null(d);
	while ((e = readdir(d))) {
		int fd = atoi(e->d_name);
		ssize_t n;

		snprintf(p, sizeof(p), "/proc/self/fd/%s", e->d_name);
		n = readlink(p, link, sizeof(link) - 1);
		if (n < 0)
			continue;
		link[n] = 0;
		if (strcmp(link, real) == 0 && fd > best)
			best = fd;
	}
	closedir(d);
	if (best >= 0) {
		FILE *f;

		snprintf(p, sizeof(p), "/proc/self/fdinfo/%d", best);
		f = fopen(p, "r");
		assert_non_null(f);
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "flags: %lo", &flags) == 1)
				break;
		fclose(f);
	}
	return flags;
}

#endif
