/* The control socket: a unix stream socket speaking QMP's wire shape, one JSON
 * object per line, several clients at once.
 *
 *   greeting  {"QMP": {"version": {...}, "capabilities": []}}
 *   request   {"execute": "NAME", "arguments": {...}, "id": ANY}
 *   reply     {"return": {...}, "id": ...}
 *           | {"error": {"class": "...", "desc": "..."}, "id": ...}
 *   event     {"event": "NAME", "data": {...},
 *              "timestamp": {"seconds": N, "microseconds": N}}
 *
 * "qmp_capabilities" is accepted (and not required) so that QMP clients work
 * unchanged. Malformed lines get an error reply and the connection stays up;
 * a line longer than CONTROL_MAX_LINE closes that client only. Runs on the
 * main thread's event loop; handlers run there too. */
#ifndef DROVER_CONTROL_H
#define DROVER_CONTROL_H

#include <jansson.h>
#include <stddef.h>

#include "evloop.h"

#define CONTROL_MAX_LINE   (1024 * 1024)
#define CONTROL_MAX_CLIENTS 64

enum control_error {
	CONTROL_OK = 0,
	CONTROL_GENERIC_ERROR,     /* "GenericError" */
	CONTROL_COMMAND_NOT_FOUND, /* "CommandNotFound" */
	CONTROL_DEVICE_NOT_FOUND,  /* "DeviceNotFound" */
};

/* A command handler: on success sets *ret (a new reference; NULL means {})
 * and returns CONTROL_OK; on failure writes a description to desc. args is
 * never NULL (an empty object when the request had none). */
typedef enum control_error (*control_handler)(void *ctx, json_t *args, json_t **ret,
					      char *desc, size_t desclen);

struct control_command {
	const char *name;
	control_handler fn;
};

struct control;

/* Binds and listens on path (an existing socket file there is replaced; any
 * other file is an error), mode 0600. cmds must outlive the server.
 * 0 or -errno. */
int control_open(struct control **out, struct evloop *loop, const char *path,
		 const struct control_command *cmds, size_t ncmds, void *ctx);

/* Sends an event to every connected client; steals the reference to data
 * (NULL means {}). */
void control_event(struct control *ctl, const char *name, json_t *data);

/* Writes what is still queued to clients, closes every connection and
 * removes the socket file. */
void control_close(struct control *ctl);

#endif
