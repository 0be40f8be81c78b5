/* 16550A UART.
 *
 * Invariants: the state is guarded by s->lock (vCPU threads access the
 * registers, the main thread feeds input); the interrupt line is recomputed
 * after every change and only raised or lowered when its level changes, so
 * the edge-triggered ISA IRQ sees one edge per new cause. */
#include "serial.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include "devices.h"
#include "layout.h"
#include "log.h"
#include "util.h"
#include "vm.h"

#define RX_SIZE 4096

#define UART_RX   0
#define UART_IER  1
#define UART_IIR  2
#define UART_LCR  3
#define UART_MCR  4
#define UART_LSR  5
#define UART_MSR  6
#define UART_SCR  7

#define IER_RDI   0x01
#define IER_THRI  0x02
#define IER_RLSI  0x04
#define IER_MSI   0x08
#define IIR_NONE  0x01
#define IIR_MSI   0x00
#define IIR_THRI  0x02
#define IIR_RDI   0x04
#define IIR_RLSI  0x06
#define IIR_FIFO  0xc0
#define FCR_FIFO  0x01
#define FCR_CLRX  0x02
#define LCR_DLAB  0x80
#define MCR_DTR   0x01
#define MCR_RTS   0x02
#define MCR_OUT1  0x04
#define MCR_OUT2  0x08
#define MCR_LOOP  0x10
#define LSR_DR    0x01
#define LSR_OE    0x02
#define LSR_THRE  0x20
#define LSR_TEMT  0x40
#define MSR_DCTS  0x01
#define MSR_DDSR  0x02
#define MSR_TERI  0x04
#define MSR_DDCD  0x08
#define MSR_CTS   0x10
#define MSR_DSR   0x20
#define MSR_RI    0x40
#define MSR_DCD   0x80

#define ESCAPE_CHAR 0x01   /* Ctrl-A */

struct serial {
	struct vm *vm;
	pthread_mutex_t lock;
	/* registers */
	uint8_t ier, fcr, lcr, mcr, lsr, msr, scr, dll, dlm;
	bool thr_pending;          /* THR-empty interrupt not yet acknowledged */
	int irq_level;
	uint8_t rx[RX_SIZE];
	unsigned rx_head, rx_count;
	/* host side */
	enum serial_mode mode;
	int out_fd;                /* where guest output goes, -1: nowhere */
	int in_fd;                 /* where input comes from, -1: none */
	int listen_fd;             /* unix: the listening socket */
	int wake_fd;               /* eventfd: the guest made room in rx */
	bool in_blocked;           /* input paused until the guest reads */
	bool tty_raw;
	bool escape;
	struct termios saved_tio;
	struct evloop *loop;
	void (*on_quit)(void *);
	void *quit_opaque;
	char *sock_path;
};

/* ---- the UART ---- */

static uint8_t iir_locked(struct serial *s)
{
	uint8_t fifo = (s->fcr & FCR_FIFO) ? IIR_FIFO : 0;

	if ((s->ier & IER_RLSI) && (s->lsr & LSR_OE))
		return IIR_RLSI | fifo;
	if ((s->ier & IER_RDI) && s->rx_count)
		return IIR_RDI | fifo;
	if ((s->ier & IER_THRI) && s->thr_pending)
		return IIR_THRI | fifo;
	if ((s->ier & IER_MSI) && (s->msr & 0x0f))
		return IIR_MSI | fifo;
	return IIR_NONE | fifo;
}

static void update_irq_locked(struct serial *s)
{
	int level = !(iir_locked(s) & IIR_NONE);

	/* OUT2 gates the interrupt on PC UARTs. */
	if (!(s->mcr & MCR_OUT2))
		level = 0;
	if (level != s->irq_level) {
		s->irq_level = level;
		vm_irq_line(s->vm, IRQ_COM1, level);
	}
}

static void modem_status_locked(struct serial *s)
{
	uint8_t old = s->msr, now;

	if (s->mcr & MCR_LOOP) {
		now = 0;
		if (s->mcr & MCR_RTS)
			now |= MSR_CTS;
		if (s->mcr & MCR_DTR)
			now |= MSR_DSR;
		if (s->mcr & MCR_OUT1)
			now |= MSR_RI;
		if (s->mcr & MCR_OUT2)
			now |= MSR_DCD;
	} else {
		now = MSR_DCD | MSR_DSR | MSR_CTS;
	}
	s->msr = (uint8_t)((now & 0xf0) | (old & 0x0f));
	if ((now ^ old) & MSR_CTS)
		s->msr |= MSR_DCTS;
	if ((now ^ old) & MSR_DSR)
		s->msr |= MSR_DDSR;
	if ((now ^ old) & MSR_DCD)
		s->msr |= MSR_DDCD;
	if ((old & MSR_RI) && !(now & MSR_RI))
		s->msr |= MSR_TERI;
}

static bool rx_push_locked(struct serial *s, uint8_t c)
{
	if (s->rx_count == RX_SIZE) {
		s->lsr |= LSR_OE;
		return false;
	}
	s->rx[(s->rx_head + s->rx_count) % RX_SIZE] = c;
	s->rx_count++;
	return true;
}

static void emit(struct serial *s, uint8_t c)
{
	ssize_t n;

	if (s->out_fd < 0)
		return;
	if (s->mode == SERIAL_UNIX) {
		/* A slow or absent client loses output rather than stall a vCPU. */
		n = send(s->out_fd, &c, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
		(void)n;
		return;
	}
	if (write_full(s->out_fd, &c, 1) < 0 && s->mode == SERIAL_STDIO) {
		/* stdout went away (closed pipe): stop writing there */
		s->out_fd = -1;
	}
}

static void serial_read(void *opaque, uint16_t port, uint8_t *data, unsigned size)
{
	struct serial *s = opaque;
	uint8_t v = 0xff;
	bool woke = false;

	memset(data, 0xff, size);
	pthread_mutex_lock(&s->lock);
	switch (port - PORT_COM1) {
	case UART_RX:
		if (s->lcr & LCR_DLAB) {
			v = s->dll;
			break;
		}
		v = 0;
		if (s->rx_count) {
			v = s->rx[s->rx_head];
			s->rx_head = (s->rx_head + 1) % RX_SIZE;
			s->rx_count--;
			woke = s->in_blocked && s->rx_count <= RX_SIZE / 2;
		}
		break;
	case UART_IER:
		v = (s->lcr & LCR_DLAB) ? s->dlm : s->ier;
		break;
	case UART_IIR:
		v = iir_locked(s);
		if ((v & 0x0f) == IIR_THRI)
			s->thr_pending = false;
		break;
	case UART_LCR:
		v = s->lcr;
		break;
	case UART_MCR:
		v = s->mcr;
		break;
	case UART_LSR:
		v = (uint8_t)(s->lsr | LSR_THRE | LSR_TEMT | (s->rx_count ? LSR_DR : 0));
		s->lsr &= (uint8_t)~LSR_OE;
		break;
	case UART_MSR:
		v = s->msr;
		s->msr &= 0xf0;
		break;
	case UART_SCR:
		v = s->scr;
		break;
	}
	update_irq_locked(s);
	pthread_mutex_unlock(&s->lock);
	data[0] = v;
	if (woke) {
		uint64_t one = 1;

		if (write(s->wake_fd, &one, sizeof(one)) < 0) {
			/* the main loop will see the earlier wake-up */
		}
	}
}

static void serial_write(void *opaque, uint16_t port, const uint8_t *data, unsigned size)
{
	struct serial *s = opaque;
	uint8_t v = data[0], out = 0;
	bool do_emit = false;

	pthread_mutex_lock(&s->lock);
	switch (port - PORT_COM1) {
	case UART_RX:
		if (s->lcr & LCR_DLAB) {
			s->dll = v;
			break;
		}
		if (s->mcr & MCR_LOOP)
			rx_push_locked(s, v);
		else {
			out = v;
			do_emit = true;
		}
		s->thr_pending = true;   /* sent at once: THR is empty again */
		break;
	case UART_IER:
		if (s->lcr & LCR_DLAB) {
			s->dlm = v;
			break;
		}
		if ((v & IER_THRI) && !(s->ier & IER_THRI))
			s->thr_pending = true;
		s->ier = v & 0x0f;
		break;
	case UART_IIR:     /* FCR */
		if (v & FCR_CLRX) {
			s->rx_head = s->rx_count = 0;
			s->lsr &= (uint8_t)~LSR_OE;
		}
		s->fcr = v & 0xc9;
		break;
	case UART_LCR:
		s->lcr = v;
		break;
	case UART_MCR:
		s->mcr = v & 0x1f;
		modem_status_locked(s);
		break;
	case UART_SCR:
		s->scr = v;
		break;
	default:           /* LSR and MSR are read-only */
		break;
	}
	update_irq_locked(s);
	pthread_mutex_unlock(&s->lock);
	/* Outside the lock: a blocked stdout must not stall the input side. */
	if (do_emit)
		emit(s, out);
}

static void uart_reset_locked(struct serial *s)
{
	s->ier = s->fcr = s->lcr = s->mcr = s->lsr = s->scr = 0;
	s->dll = 12;                 /* 9600 baud */
	s->dlm = 0;
	s->thr_pending = false;
	s->rx_head = s->rx_count = 0;
	s->msr = 0;
	modem_status_locked(s);
	s->msr &= 0xf0;
	update_irq_locked(s);
}

size_t serial_receive(struct serial *s, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	size_t n = 0;

	pthread_mutex_lock(&s->lock);
	if (!(s->mcr & MCR_LOOP)) {
		while (n < len && s->rx_count < RX_SIZE)
			rx_push_locked(s, p[n++]);
	}
	update_irq_locked(s);
	pthread_mutex_unlock(&s->lock);
	return n;
}

/* ---- the host side ---- */

static void input_cb(void *opaque, int fd, uint32_t events);

static void stop_input(struct serial *s)
{
	if (s->in_fd < 0)
		return;
	evloop_del(s->loop, s->in_fd);
	if (s->mode == SERIAL_UNIX) {
		close(s->in_fd);
		s->out_fd = -1;
	}
	s->in_fd = -1;
}

static void print_help(struct serial *s)
{
	static const char help[] =
		"\r\nC-a x    quit drover-vmm\r\nC-a h    this help\r\n"
		"C-a C-a  send C-a to the guest\r\n";

	if (write_full(STDOUT_FILENO, help, sizeof(help) - 1) < 0) {
		/* nowhere to print it */
	}
}

/* Feeds bytes to the guest, applying the terminal escapes when stdin is a
 * tty; returns how many bytes of buf were consumed. */
static size_t feed(struct serial *s, const uint8_t *buf, size_t len)
{
	size_t i = 0;

	if (!s->tty_raw)
		return serial_receive(s, buf, len);
	for (; i < len; i++) {
		uint8_t c = buf[i];

		if (s->escape) {
			s->escape = false;
			if (c == 'x' || c == 'X') {
				if (s->on_quit)
					s->on_quit(s->quit_opaque);
				return len;
			}
			if (c == 'h' || c == 'H' || c == '?') {
				print_help(s);
				continue;
			}
			if (c != ESCAPE_CHAR)
				continue;
		} else if (c == ESCAPE_CHAR) {
			s->escape = true;
			continue;
		}
		if (serial_receive(s, &c, 1) == 0)
			break;
	}
	return i;
}

static void input_cb(void *opaque, int fd, uint32_t events)
{
	struct serial *s = opaque;
	uint8_t buf[512];
	size_t room, used;
	ssize_t n;

	pthread_mutex_lock(&s->lock);
	room = RX_SIZE - s->rx_count;
	pthread_mutex_unlock(&s->lock);
	if (room == 0) {
		s->in_blocked = true;
		evloop_mod(s->loop, fd, 0);
		return;
	}
	n = read(fd, buf, room < sizeof(buf) ? room : sizeof(buf));
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		/* End of input: a closed stdin is fine, a client may come back. */
		stop_input(s);
		return;
	}
	used = feed(s, buf, (size_t)n);
	if (used < (size_t)n)
		log_debug("serial: guest receive buffer full, %zd bytes dropped", n - (ssize_t)used);
}

static void wake_cb(void *opaque, int fd, uint32_t events)
{
	struct serial *s = opaque;
	uint64_t cnt;

	if (read(fd, &cnt, sizeof(cnt)) < 0) {
		/* spurious */
	}
	if (s->in_blocked && s->in_fd >= 0) {
		s->in_blocked = false;
		evloop_mod(s->loop, s->in_fd, EPOLLIN);
	}
}

static void accept_cb(void *opaque, int fd, uint32_t events)
{
	struct serial *s = opaque;
	int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

	if (c < 0)
		return;
	/* One client at a time: a new one takes over the console. */
	stop_input(s);
	s->in_fd = c;
	s->out_fd = c;
	s->in_blocked = false;
	if (evloop_add(s->loop, c, EPOLLIN, input_cb, s) < 0) {
		close(c);
		s->in_fd = s->out_fd = -1;
	}
}

static int make_raw(struct serial *s)
{
	struct termios tio;

	if (tcgetattr(STDIN_FILENO, &s->saved_tio) < 0)
		return -errno;
	tio = s->saved_tio;
	tio.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
	tio.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
	tio.c_cflag &= ~(tcflag_t)(CSIZE | PARENB);
	tio.c_cflag |= CS8;
	tio.c_cc[VMIN] = 1;
	tio.c_cc[VTIME] = 0;
	if (tcsetattr(STDIN_FILENO, TCSANOW, &tio) < 0)
		return -errno;
	s->tty_raw = true;
	return 0;
}

void serial_restore_terminal(struct serial *s)
{
	if (s && s->tty_raw) {
		tcsetattr(STDIN_FILENO, TCSANOW, &s->saved_tio);
		s->tty_raw = false;
	}
}

static int listen_unix(struct serial *s, const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, ret;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "--serial unix:%s: path longer than %zu bytes", path,
			 sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "--serial unix:%s: exists and is not a socket", path);
			return -EEXIST;
		}
		unlink(path);
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(path, 0600) < 0 ||
	    listen(fd, 4) < 0) {
		ret = -errno;
		snprintf(err, errlen, "--serial unix:%s: %s", path, strerror(-ret));
		close(fd);
		return ret;
	}
	s->listen_fd = fd;
	s->sock_path = strdup(path);
	return 0;
}

int serial_attach(struct serial *s, struct evloop *loop, void (*on_quit)(void *), void *opaque,
		  char *err, size_t errlen)
{
	int ret;

	s->loop = loop;
	s->on_quit = on_quit;
	s->quit_opaque = opaque;
	ret = evloop_add(loop, s->wake_fd, EPOLLIN, wake_cb, s);
	if (ret < 0)
		goto fail;
	switch (s->mode) {
	case SERIAL_STDIO:
		if (isatty(STDIN_FILENO) && make_raw(s) < 0)
			log_warn("serial: cannot put the terminal in raw mode");
		/* A regular file or /dev/null on stdin cannot be polled: no input. */
		if (evloop_add(loop, STDIN_FILENO, EPOLLIN, input_cb, s) == 0)
			s->in_fd = STDIN_FILENO;
		break;
	case SERIAL_UNIX:
		ret = evloop_add(loop, s->listen_fd, EPOLLIN, accept_cb, s);
		if (ret < 0)
			goto fail;
		break;
	default:
		break;
	}
	return 0;
fail:
	snprintf(err, errlen, "serial: %s", strerror(-ret));
	return ret;
}

/* ---- device verbs ---- */

static int serial_create(struct vm *vm, void **state, char *err, size_t errlen)
{
	const struct vmm_config *cfg = vm->cfg;
	struct serial *s = calloc(1, sizeof(*s));
	int ret;

	if (!s)
		return -ENOMEM;
	s->vm = vm;
	pthread_mutex_init(&s->lock, NULL);
	s->out_fd = s->in_fd = s->listen_fd = -1;
	s->mode = cfg->serial;
	s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->wake_fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "serial: eventfd: %s", strerror(-ret));
		goto err;
	}
	switch (s->mode) {
	case SERIAL_STDIO:
		s->out_fd = STDOUT_FILENO;
		break;
	case SERIAL_FILE:
		s->out_fd = open(cfg->serial_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (s->out_fd < 0) {
			ret = -errno;
			snprintf(err, errlen, "--serial file:%s: %s", cfg->serial_path,
				 strerror(-ret));
			goto err;
		}
		break;
	case SERIAL_UNIX:
		ret = listen_unix(s, cfg->serial_path, err, errlen);
		if (ret < 0)
			goto err;
		break;
	case SERIAL_NONE:
		break;
	}
	ret = pio_register(&vm->pio, PORT_COM1, 8, "com1", serial_read, serial_write, s);
	if (ret < 0) {
		snprintf(err, errlen, "serial: port 0x%x: %s", PORT_COM1, strerror(-ret));
		goto err;
	}
	pthread_mutex_lock(&s->lock);
	uart_reset_locked(s);
	pthread_mutex_unlock(&s->lock);
	vm->serial = s;
	*state = s;
	return 0;
err:
	if (s->wake_fd >= 0)
		close(s->wake_fd);
	if (s->mode == SERIAL_FILE && s->out_fd >= 0)
		close(s->out_fd);
	free(s);
	return ret;
}

static void serial_reset(void *state)
{
	struct serial *s = state;

	pthread_mutex_lock(&s->lock);
	uart_reset_locked(s);
	pthread_mutex_unlock(&s->lock);
}

static json_t *serial_save(void *state)
{
	struct serial *s = state;
	json_t *rx, *o;

	pthread_mutex_lock(&s->lock);
	rx = json_array();
	for (unsigned i = 0; i < s->rx_count; i++)
		json_array_append_new(rx, json_integer(s->rx[(s->rx_head + i) % RX_SIZE]));
	o = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:b, s:o}",
		      "ier", s->ier, "fcr", s->fcr, "lcr", s->lcr, "mcr", s->mcr,
		      "lsr", s->lsr, "msr", s->msr, "scr", s->scr, "dll", s->dll, "dlm", s->dlm,
		      "thr-pending", s->thr_pending, "rx", rx);
	pthread_mutex_unlock(&s->lock);
	return o;
}

static int serial_load(void *state, json_t *saved, char *err, size_t errlen)
{
	static const char *const keys[] = { "ier", "fcr", "lcr", "mcr", "lsr", "msr", "scr",
					     "dll", "dlm" };
	struct serial *s = state;
	uint64_t v[ARRAY_SIZE(keys)];
	json_t *rx = json_object_get(saved, "rx"), *tp = json_object_get(saved, "thr-pending");
	uint8_t buf[RX_SIZE];
	size_t i;
	json_t *e;

	for (i = 0; i < ARRAY_SIZE(keys); i++)
		if (dev_json_uint(saved, keys[i], 0xff, &v[i], err, errlen) < 0)
			return -EINVAL;
	if (!json_is_boolean(tp) || !json_is_array(rx) || json_array_size(rx) > RX_SIZE) {
		snprintf(err, errlen, "'thr-pending' or 'rx' missing or malformed");
		return -EINVAL;
	}
	json_array_foreach(rx, i, e) {
		if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > 255) {
			snprintf(err, errlen, "'rx'[%zu] is not a byte", i);
			return -EINVAL;
		}
		buf[i] = (uint8_t)json_integer_value(e);
	}
	pthread_mutex_lock(&s->lock);
	/* Only bits a 16550A can hold: a saved state never shows others. */
	s->ier = (uint8_t)v[0] & 0x0f; s->fcr = (uint8_t)v[1] & 0xc9; s->lcr = (uint8_t)v[2];
	s->mcr = (uint8_t)v[3] & 0x1f; s->lsr = (uint8_t)v[4] & LSR_OE; s->msr = (uint8_t)v[5];
	s->scr = (uint8_t)v[6]; s->dll = (uint8_t)v[7]; s->dlm = (uint8_t)v[8];
	s->thr_pending = json_is_true(tp);
	memcpy(s->rx, buf, json_array_size(rx));
	s->rx_head = 0;
	s->rx_count = (unsigned)json_array_size(rx);
	update_irq_locked(s);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

static void serial_destroy(void *state)
{
	struct serial *s = state;

	serial_restore_terminal(s);
	if (s->loop) {
		stop_input(s);
		evloop_del(s->loop, s->wake_fd);
		if (s->listen_fd >= 0)
			evloop_del(s->loop, s->listen_fd);
	}
	if (s->listen_fd >= 0) {
		close(s->listen_fd);
		unlink(s->sock_path);
	}
	if (s->mode == SERIAL_FILE && s->out_fd >= 0)
		close(s->out_fd);
	close(s->wake_fd);
	free(s->sock_path);
	s->vm->serial = NULL;
	pthread_mutex_destroy(&s->lock);
	free(s);
}

const struct device_type serial_device = {
	.name = "serial",
	.create = serial_create,
	.reset = serial_reset,
	.save = serial_save,
	.load = serial_load,
	.destroy = serial_destroy,
};
