#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Process-wide by nature: set once in main before any thread starts. */
static const char *log_prog = "drover";
static enum log_level log_level_cur = LOG_INFO;

void log_init(const char *progname, enum log_level level)
{
	log_prog = progname;
	log_level_cur = level;
}

void log_set_level(enum log_level level) { log_level_cur = level; }
enum log_level log_get_level(void) { return log_level_cur; }

void log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	char line[1024];
	int n, saved = errno;

	if (level > log_level_cur)
		return;
	n = snprintf(line, sizeof(line), "%s: %s: ", log_prog, names[level]);
	if (n < 0)
		return;
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	n = (int)strlen(line);
	if (n > 0 && line[n - 1] != '\n' && n < (int)sizeof(line) - 1)
		line[n++] = '\n';
	/* One write per line so that lines from several threads never interleave. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0) {
		/* nowhere left to report it */
	}
	errno = saved;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}
