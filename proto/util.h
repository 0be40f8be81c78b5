/* Small helpers shared by drover's programs. */
#ifndef DROVER_UTIL_H
#define DROVER_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define ALIGN_UP(x, a) (((x) + ((a) - 1)) & ~((__typeof__(x))(a) - 1))
#define ALIGN_DOWN(x, a) ((x) & ~((__typeof__(x))(a) - 1))
#define KiB (1024ULL)
#define MiB (1024ULL * KiB)
#define GiB (1024ULL * MiB)

/* Parses "512", "512K", "512M", "4G", "1T" (binary units; a bare number is
 * bytes unless default_unit says otherwise). Returns 0 or -EINVAL/-ERANGE. */
int parse_size(const char *s, uint64_t default_unit, uint64_t *out);

/* Parses a whole decimal unsigned number into [min, max]; 0 or -EINVAL/-ERANGE. */
int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Reads a whole file into a malloc'd buffer (at most max bytes). 0 or -errno
 * (-EFBIG past max). */
int read_file(const char *path, size_t max, void **data, size_t *len);

/* write() and read() that retry on EINTR and short transfers. 0 or -errno;
 * read_full returns -EIO on a premature end of file. */
int write_full(int fd, const void *buf, size_t len);
int pread_full(int fd, void *buf, size_t len, off_t off);

uint64_t monotonic_ns(void);

/* Writes one error message into err (when err is not NULL and errlen > 0):
 * what the "char *err, size_t errlen" parameters of drover's functions
 * take. */
void errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
