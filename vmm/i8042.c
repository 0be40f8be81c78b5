/* The i8042 keyboard controller, for its reset line: command 0xFE (or any
 * output-port write that drops bit 0) resets the machine, as on a PC. The
 * controller answers the commands a guest uses to probe it (self test,
 * command byte, port tests) so that probing ends quickly; no keyboard or
 * mouse is attached. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices.h"
#include "layout.h"
#include "log.h"
#include "vm.h"

#define STS_OBF     0x01
#define STS_SYS     0x04
#define STS_CMD     0x08
#define STS_AUXDATA 0x20
#define STS_TIMEOUT 0x40
#define CTR_KBDINT  0x01
#define CTR_AUXINT  0x02
#define CTR_SYS     0x04
#define CTR_KBDDIS  0x10
#define CTR_AUXDIS  0x20
#define CTR_XLATE   0x40
#define OUTP_RESET  0x01   /* low: CPU held in reset */
#define OUTP_A20    0x02
#define IRQ_KBD     1
#define IRQ_AUX     12

struct i8042 {
	struct vm *vm;
	pthread_mutex_t lock;
	uint8_t status, ctr, outport, out, pending_cmd;
};

static void put_out_locked(struct i8042 *k, uint8_t v, bool aux)
{
	k->out = v;
	k->status |= STS_OBF;
	if (aux)
		k->status |= STS_AUXDATA;
	else
		k->status &= (uint8_t)~STS_AUXDATA;
}

static void i8042_read(void *opaque, uint16_t port, uint8_t *data, unsigned size)
{
	struct i8042 *k = opaque;

	memset(data, 0, size);
	pthread_mutex_lock(&k->lock);
	if (port == PORT_I8042_DATA) {
		data[0] = k->out;
		k->status &= (uint8_t)~(STS_OBF | STS_AUXDATA);
	} else {
		data[0] = k->status;
	}
	pthread_mutex_unlock(&k->lock);
}

/* Returns true when the write asks for a machine reset. */
static bool command_locked(struct i8042 *k, uint8_t cmd)
{
	k->status |= STS_CMD;
	switch (cmd) {
	case 0x20:
		put_out_locked(k, k->ctr, false);
		break;
	case 0x60: case 0xd1: case 0xd2: case 0xd3: case 0xd4:
		k->pending_cmd = cmd;
		break;
	case 0xa7: k->ctr |= CTR_AUXDIS; break;
	case 0xa8: k->ctr &= (uint8_t)~CTR_AUXDIS; break;
	case 0xad: k->ctr |= CTR_KBDDIS; break;
	case 0xae: k->ctr &= (uint8_t)~CTR_KBDDIS; break;
	case 0xa9: case 0xab:
		put_out_locked(k, 0x00, false);   /* port test passed */
		break;
	case 0xaa:
		k->status |= STS_SYS;
		put_out_locked(k, 0x55, false);   /* controller self test passed */
		break;
	case 0xc0:
		put_out_locked(k, 0x00, false);
		break;
	case 0xd0:
		put_out_locked(k, k->outport, false);
		break;
	default:
		/* 0xf0-0xff pulse output lines low for a moment; bit 0 is reset. */
		if (cmd >= 0xf0 && !(cmd & 0x01))
			return true;
		break;
	}
	return false;
}

/* Returns true when the write asks for a machine reset. */
static bool data_locked(struct i8042 *k, uint8_t v, int *irq)
{
	uint8_t cmd = k->pending_cmd;

	k->pending_cmd = 0;
	k->status &= (uint8_t)~STS_CMD;
	switch (cmd) {
	case 0x60:
		k->ctr = v;
		k->status = (uint8_t)((k->status & ~STS_SYS) | (v & CTR_SYS));
		break;
	case 0xd1:
		k->outport = v;
		return !(v & OUTP_RESET);
	case 0xd2:
		put_out_locked(k, v, false);
		if (k->ctr & CTR_KBDINT)
			*irq = IRQ_KBD;
		break;
	case 0xd3:
		put_out_locked(k, v, true);
		if (k->ctr & CTR_AUXINT)
			*irq = IRQ_AUX;
		break;
	default:
		/* A byte for a keyboard (or, after 0xd4, a mouse) that is not
		 * there: the controller reports a time-out. */
		k->status |= STS_TIMEOUT;
		break;
	}
	return false;
}

static void i8042_write(void *opaque, uint16_t port, const uint8_t *data, unsigned size)
{
	struct i8042 *k = opaque;
	bool reset;
	int irq = -1;

	pthread_mutex_lock(&k->lock);
	k->status &= (uint8_t)~STS_TIMEOUT;   /* it reports the previous byte only */
	if (port == PORT_I8042_CMD)
		reset = command_locked(k, data[0]);
	else
		reset = data_locked(k, data[0], &irq);
	pthread_mutex_unlock(&k->lock);
	if (irq >= 0) {
		vm_irq_line(k->vm, (unsigned)irq, 1);
		vm_irq_line(k->vm, (unsigned)irq, 0);
	}
	if (reset)
		vm_request(k->vm, VM_REQ_RESET, 0, "i8042 reset line");
}

static void i8042_reset(void *state)
{
	struct i8042 *k = state;

	pthread_mutex_lock(&k->lock);
	k->status = 0;
	k->ctr = CTR_KBDINT | CTR_SYS | CTR_XLATE;
	k->outport = OUTP_RESET | OUTP_A20;
	k->out = 0;
	k->pending_cmd = 0;
	pthread_mutex_unlock(&k->lock);
}

static int i8042_create(struct vm *vm, void **state, char *err, size_t errlen)
{
	struct i8042 *k = calloc(1, sizeof(*k));
	int ret;

	if (!k)
		return -ENOMEM;
	k->vm = vm;
	pthread_mutex_init(&k->lock, NULL);
	i8042_reset(k);
	ret = pio_register(&vm->pio, PORT_I8042_DATA, 1, "i8042", i8042_read, i8042_write, k);
	if (ret == 0)
		ret = pio_register(&vm->pio, PORT_I8042_CMD, 1, "i8042", i8042_read, i8042_write, k);
	if (ret < 0) {
		snprintf(err, errlen, "i8042: %s", strerror(-ret));
		free(k);
		return ret;
	}
	*state = k;
	return 0;
}

static json_t *i8042_save(void *state)
{
	struct i8042 *k = state;
	json_t *o;

	pthread_mutex_lock(&k->lock);
	o = json_pack("{s:i, s:i, s:i, s:i, s:i}", "status", k->status, "ctr", k->ctr,
		      "outport", k->outport, "out", k->out, "pending-cmd", k->pending_cmd);
	pthread_mutex_unlock(&k->lock);
	return o;
}

static int i8042_load(void *state, json_t *saved, char *err, size_t errlen)
{
	static const char *const keys[] = { "status", "ctr", "outport", "out", "pending-cmd" };
	struct i8042 *k = state;
	uint64_t v[5];

	for (unsigned i = 0; i < 5; i++)
		if (dev_json_uint(saved, keys[i], 0xff, &v[i], err, errlen) < 0)
			return -EINVAL;
	pthread_mutex_lock(&k->lock);
	k->status = (uint8_t)v[0];
	k->ctr = (uint8_t)v[1];
	k->outport = (uint8_t)v[2];
	k->out = (uint8_t)v[3];
	k->pending_cmd = (uint8_t)v[4];
	pthread_mutex_unlock(&k->lock);
	return 0;
}

static void i8042_destroy(void *state)
{
	struct i8042 *k = state;

	pthread_mutex_destroy(&k->lock);
	free(k);
}

const struct device_type i8042_device = {
	.name = "i8042",
	.create = i8042_create,
	.reset = i8042_reset,
	.save = i8042_save,
	.load = i8042_load,
	.destroy = i8042_destroy,
};
