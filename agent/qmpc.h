/* A client of a VMM's control socket (QMP's wire shape: one JSON object per
 * line; drover-vmm's README) on the agent's event loop, never blocking it:
 * commands go out with an id, replies come back to the callback given with
 * each command, events to the handler.
 *
 * Every command's callback runs exactly once: with the reply, or with an
 * error when the connection ends first (qmpc_close included). The handler's
 * closed() runs once when the peer goes away (not after qmpc_close), before
 * the pending callbacks fail. Both may call qmpc_close. */
#ifndef DROVER_AGENT_QMPC_H
#define DROVER_AGENT_QMPC_H

#include <jansson.h>
#include <stddef.h>

#define QMPC_MAX_LINE (1024 * 1024)

struct evloop;
struct qmpc;

struct qmpc_handler {
	/* An event ({"event": name, "data": data}); data is borrowed. */
	void (*event)(void *opaque, const char *name, json_t *data);
	/* The peer closed the connection or sent something that is no QMP. */
	void (*closed)(void *opaque, const char *why);
};

/* ret: the "return" value (borrowed) or NULL; err: NULL on success, else
 * "Class: description" or why the connection ended. */
typedef void (*qmpc_reply_fn)(void *opaque, json_t *ret, const char *err);

/* Takes fd (a connected, non-blocking unix stream socket). */
int qmpc_open(struct evloop *loop, int fd, const struct qmpc_handler *h, void *opaque,
	      struct qmpc **out);
/* Sends {"execute": cmd, "arguments": args, "id": N}; args is stolen (NULL:
 * none). 0 or -errno (then fn is not called). */
int qmpc_execute(struct qmpc *q, const char *cmd, json_t *args, qmpc_reply_fn fn, void *opaque);
/* Reads and dispatches what the peer has sent so far, without waiting: used
 * when its process is known to have ended, so its last words (SHUTDOWN) are
 * read before it is declared gone. */
void qmpc_drain(struct qmpc *q);
/* Ends the connection; pending callbacks get err "connection closed". */
void qmpc_close(struct qmpc *q);

#endif
