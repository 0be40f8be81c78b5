/* droverd: the controller. `serve` runs it; `token` manages API tokens.
 *
 * serve brings its parts up in this order and takes them down in reverse:
 * the database (migrated), the agents' listener (knows the hosts), the
 * operation engine (resumes what was in flight), the REST API; then the
 * event loop runs until SIGTERM or SIGINT. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "agents.h"
#include "api.h"
#include "auth.h"
#include "common.h"
#include "ctl.h"
#include "evloop.h"
#include "http.h"
#include "log.h"
#include "ops.h"
#include "options.h"
#include "place.h"
#include "store.h"
#include "util.h"

/* Exit statuses. */
enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

struct signals {
	struct evloop *loop;
	int fd;
	int signo;
};

static void on_signal(void *opaque, int fd, uint32_t events)
{
	struct signals *sg = opaque;
	struct signalfd_siginfo si;

	if (read(fd, &si, sizeof(si)) == sizeof(si)) {
		sg->signo = (int)si.ssi_signo;
		evloop_stop(sg->loop);
	}
}

/* One droverd serve per database: a second one would send every command
 * twice. (droverd token may run beside it: SQLite serialises its writes.) */
static int lock_db(const char *db, int *fd_out)
{
	char path[4096];
	int fd;

	if (snprintf(path, sizeof(path), "%s.lock", db) >= (int)sizeof(path)) {
		log_error("database %s: the path is too long", db);
		return -ENAMETOOLONG;
	}
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		log_error("database %s: cannot open its lock file %s: %s", db, path, strerror(errno));
		return -errno;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int ret = -errno;

		if (ret == -EWOULDBLOCK)
			log_error("database %s is in use by another droverd serve (it holds %s); one "
				  "droverd per database", db, path);
		else
			log_error("database %s: locking %s: %s", db, path, strerror(-ret));
		close(fd);
		return ret;
	}
	*fd_out = fd;
	return 0;
}

static void on_idem_purge(void *opaque, struct evloop_timer *t)
{
	struct ctl *ctl = opaque;

	store_idem_purge(ctl->store, ctl_now_ms() - API_IDEMPOTENCY_MS);
}

static int serve(int argc, char **argv)
{
	struct ctl ctl = { 0 };
	struct signals sg = { .fd = -1 };
	int lock_fd = -1;
	struct evloop_timer *purge = NULL;
	uint16_t http_port = 0, agent_port = 0;
	char err[512];
	sigset_t mask;
	int ret, status = EXIT_FAIL;

	ctl_options_init(&ctl.opt);
	ret = ctl_options_parse(&ctl.opt, argc, argv, err, sizeof(err));
	if (ret == 1) {
		fputs(ctl_options_usage(), stdout);
		ctl_options_free(&ctl.opt);
		return EXIT_OK;
	}
	if (ret) {
		fprintf(stderr, "droverd serve: %s\n", err);
		ctl_options_free(&ctl.opt);
		return EXIT_USAGE;
	}
	log_set_level(ctl.opt.log_level);
	ctl.started_at = ctl_now_ms();
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	if ((ret = evloop_new(&ctl.loop))) {
		log_error("event loop: %s", strerror(-ret));
		goto out;
	}
	sg.loop = ctl.loop;
	sg.fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sg.fd < 0 || evloop_add(ctl.loop, sg.fd, EPOLLIN, on_signal, &sg)) {
		log_error("signals: %s", strerror(errno));
		goto out;
	}
	if (lock_db(ctl.opt.db, &lock_fd))
		goto out;
	if (store_open(ctl.opt.db, &ctl.store, err, sizeof(err))) {
		log_error("%s", err);
		goto out;
	}
	store_idem_purge(ctl.store, ctl_now_ms() - API_IDEMPOTENCY_MS);
	if (agents_start(&ctl, &ctl.agents, &agent_port, err, sizeof(err))) {
		log_error("--agent-listen %s", err);
		goto out;
	}
	if ((ret = ops_start(&ctl, &ctl.ops))) {
		log_error("resuming the operations in flight: %s", strerror(-ret));
		goto out;
	}
	if (http_start(ctl.loop, ctl.opt.listen, api_handle, &ctl, &ctl.http, &http_port, err,
		       sizeof(err))) {
		log_error("--listen %s", err);
		goto out;
	}
	if ((ret = evloop_timer_add(ctl.loop, 3600 * 1000, 3600 * 1000, on_idem_purge, &ctl,
				    &purge))) {
		log_error("timer: %s", strerror(-ret));
		goto out;
	}
	log_info("droverd %s: REST API on %s (port %u), agents on %s (port %u), database %s",
		 DROVER_VERSION, ctl.opt.listen, http_port, ctl.opt.agent_listen, agent_port,
		 ctl.opt.db);
	ret = evloop_run(ctl.loop);
	if (ret) {
		log_error("event loop: %s", strerror(-ret));
		goto out;
	}
	log_info("stopping (%s)", strsignal(sg.signo));
	status = EXIT_OK;
out:
	evloop_timer_del(purge);
	http_stop(ctl.http);
	ops_stop(ctl.ops);
	agents_stop(ctl.agents);
	place_cache_free(ctl.place);
	store_close(ctl.store);
	if (sg.fd >= 0) {
		if (ctl.loop)
			evloop_del(ctl.loop, sg.fd);
		close(sg.fd);
	}
	evloop_free(ctl.loop);
	if (lock_fd >= 0)
		close(lock_fd);
	ctl_options_free(&ctl.opt);
	return status;
}

/* ---- droverd token ... ---- */

struct token_args {
	const char *db, *role, *name, *id;
	unsigned expires_days;
};

static int token_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int token_usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "droverd token: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n%s", ctl_options_usage());
	return EXIT_USAGE;
}

static int token_parse(int argc, char **argv, struct token_args *t)
{
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		const char **slot = !strcmp(a, "--db") ? &t->db : !strcmp(a, "--role") ? &t->role :
				    !strcmp(a, "--name") ? &t->name : NULL;

		if (slot || !strcmp(a, "--expires-days")) {
			uint64_t n;

			if (i + 1 >= argc)
				return token_usage("%s needs a value", a);
			if (slot) {
				*slot = argv[++i];
				continue;
			}
			if (parse_uint(argv[++i], 1, 36500, &n))
				return token_usage("--expires-days '%s': a whole number of days from 1 "
						   "to 36500", argv[i]);
			t->expires_days = (unsigned)n;
		} else if (a[0] == '-' || t->id) {
			return token_usage("unexpected argument '%s'", a);
		} else {
			t->id = a;
		}
	}
	if (!t->db)
		return token_usage("%s", "--db FILE is required");
	return 0;
}

static int print_token(const struct store_token *t, void *opaque)
{
	char created[40], expires[40] = "never", revoked[40] = "-";
	int64_t now = *(const int64_t *)opaque;

	ctl_time_format(t->created_at, created, sizeof(created));
	if (t->expires_at)
		ctl_time_format(t->expires_at, expires, sizeof(expires));
	if (t->revoked_at)
		ctl_time_format(t->revoked_at, revoked, sizeof(revoked));
	printf("%-12s  %-6s  %-8s  %-24s  %-24s  %-24s  %s\n", t->public_id, t->role,
	       t->revoked_at ? "revoked" : t->expires_at && t->expires_at <= now ? "expired" : "valid",
	       created, expires, revoked, t->name);
	return 0;
}

static int token_cmd(int argc, char **argv)
{
	struct token_args t = { 0 };
	struct store *s = NULL;
	char err[512], token[AUTH_TOKEN_MAX], id[AUTH_PUBLIC_ID_LEN + 1];
	int64_t now = ctl_now_ms();
	int ret, status = EXIT_FAIL;

	if (argc < 1)
		return token_usage("%s", "create, list or revoke?");
	ret = token_parse(argc - 1, argv + 1, &t);
	if (ret)
		return ret;
	if (!strcmp(argv[0], "create")) {
		if (t.id)
			return token_usage("unexpected argument '%s'", t.id);
		if (auth_role_parse(t.role) == AUTH_NONE)
			return token_usage("--role '%s': admin or reader", t.role ? t.role : "");
	} else if (!strcmp(argv[0], "revoke")) {
		if (!t.id)
			return token_usage("%s", "revoke which token? (its ID, from token list)");
	} else if (strcmp(argv[0], "list")) {
		return token_usage("'%s': create, list or revoke", argv[0]);
	} else if (t.id) {
		return token_usage("unexpected argument '%s'", t.id);
	}
	if (store_open(t.db, &s, err, sizeof(err))) {
		fprintf(stderr, "droverd token: %s\n", err);
		return EXIT_FAIL;
	}
	if (!strcmp(argv[0], "create")) {
		if (auth_token_create(s, auth_role_parse(t.role), t.name, t.expires_days, now, token,
				      id, err, sizeof(err))) {
			fprintf(stderr, "droverd token create: %s\n", err);
		} else {
			printf("%s\n", token);
			fprintf(stderr, "token %s (%s) created; it is shown only now: keep it\n", id,
				t.role);
			status = EXIT_OK;
		}
	} else if (!strcmp(argv[0], "revoke")) {
		ret = store_token_revoke(s, t.id, now);
		if (ret == -ENOENT)
			fprintf(stderr, "droverd token revoke: no token has the ID '%s' (see droverd "
				"token list)\n", t.id);
		else if (ret)
			fprintf(stderr, "droverd token revoke: %s\n", strerror(-ret));
		else
			status = EXIT_OK;
	} else {
		printf("%-12s  %-6s  %-8s  %-24s  %-24s  %-24s  %s\n", "ID", "ROLE", "STATE",
		       "CREATED", "EXPIRES", "REVOKED", "NAME");
		status = store_token_list(s, print_token, &now) ? EXIT_FAIL : EXIT_OK;
	}
	store_close(s);
	return status;
}

int main(int argc, char **argv)
{
	log_init("droverd", LOG_INFO);
	if (argc >= 2 && !strcmp(argv[1], "serve"))
		return serve(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "token"))
		return token_cmd(argc - 2, argv + 2);
	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
			  !strcmp(argv[1], "help"))) {
		fputs(ctl_options_usage(), stdout);
		return EXIT_OK;
	}
	if (argc >= 2 && !strcmp(argv[1], "--version")) {
		printf("droverd %s\n", DROVER_VERSION);
		return EXIT_OK;
	}
	fprintf(stderr, "droverd: %s%s%s\n%s", argc >= 2 ? "unknown command '" : "which command?",
		argc >= 2 ? argv[1] : "", argc >= 2 ? "'" : "", ctl_options_usage());
	return EXIT_USAGE;
}
