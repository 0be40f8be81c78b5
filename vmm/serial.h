/* The 16550A UART at COM1 (0x3f8, IRQ 4) and its host side: stdio (with a
 * raw terminal and QEMU's Ctrl-A escapes when stdin is a tty), a file, a unix
 * socket that one client at a time may attach to, or nothing. */
#ifndef DROVER_SERIAL_H
#define DROVER_SERIAL_H

#include <stddef.h>

#include "evloop.h"

struct serial;

/* Starts reading the host side (stdin or the socket) on the main loop.
 * on_quit runs when the operator types Ctrl-A x on the terminal. */
int serial_attach(struct serial *s, struct evloop *loop, void (*on_quit)(void *), void *opaque,
		  char *err, size_t errlen);

/* Hands bytes to the guest as if typed; returns how many fit (the rest must
 * wait: the UART's receive buffer is full). */
size_t serial_receive(struct serial *s, const void *buf, size_t len);

/* Restores the terminal if it was made raw. Safe to call more than once and
 * from an exit path. */
void serial_restore_terminal(struct serial *s);

#endif
