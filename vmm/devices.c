#include "devices.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layout.h"
#include "log.h"
#include "util.h"
#include "vm.h"

/* Bring-up order; teardown runs backwards. */
static const struct device_type *const platform_devices[] = {
	&post_device,
	&serial_device,
	&i8042_device,
	&rtc_device,
	&pm_device,
	&debugexit_device,
	&pci_device,
	&virtio_blk_device,
};

#define NDEV ARRAY_SIZE(platform_devices)

struct device_set {
	unsigned n;
	void *state[NDEV];
};

int devices_create(struct vm *vm, char *err, size_t errlen)
{
	struct device_set *ds = calloc(1, sizeof(*ds));
	int ret;

	if (!ds)
		return -ENOMEM;
	vm->devices = ds;
	for (ds->n = 0; ds->n < NDEV; ds->n++) {
		ret = platform_devices[ds->n]->create(vm, &ds->state[ds->n], err, errlen);
		if (ret < 0) {
			devices_destroy(vm);
			return ret;
		}
	}
	return 0;
}

int devices_attach(struct vm *vm, struct evloop *loop, char *err, size_t errlen)
{
	struct device_set *ds = vm->devices;

	for (unsigned i = 0; i < ds->n; i++) {
		if (platform_devices[i]->attach) {
			int ret = platform_devices[i]->attach(ds->state[i], loop, err, errlen);

			if (ret < 0)
				return ret;
		}
	}
	return 0;
}

void devices_reset(struct vm *vm)
{
	struct device_set *ds = vm->devices;

	for (unsigned i = 0; i < ds->n; i++)
		if (platform_devices[i]->reset)
			platform_devices[i]->reset(ds->state[i]);
}

void devices_pause(struct vm *vm)
{
	struct device_set *ds = vm->devices;

	for (unsigned i = 0; ds && i < ds->n; i++)
		if (platform_devices[i]->pause)
			platform_devices[i]->pause(ds->state[i]);
}

void devices_resume(struct vm *vm)
{
	struct device_set *ds = vm->devices;

	for (unsigned i = 0; ds && i < ds->n; i++)
		if (platform_devices[i]->resume)
			platform_devices[i]->resume(ds->state[i]);
}

json_t *devices_save(struct vm *vm)
{
	struct device_set *ds = vm->devices;
	json_t *all = json_object();

	for (unsigned i = 0; all && i < ds->n; i++) {
		if (platform_devices[i]->save)
			json_object_set_new(all, platform_devices[i]->name,
					    platform_devices[i]->save(ds->state[i]));
	}
	return all;
}

int devices_load(struct vm *vm, json_t *saved, char *err, size_t errlen)
{
	struct device_set *ds = vm->devices;
	const char *key;
	json_t *val;

	if (!json_is_object(saved)) {
		snprintf(err, errlen, "device state: not an object");
		return -EINVAL;
	}
	json_object_foreach(saved, key, val) {
		if (!devices_state(vm, key)) {
			snprintf(err, errlen, "device state: unknown device '%s'", key);
			return -EINVAL;
		}
	}
	for (unsigned i = 0; i < ds->n; i++) {
		const struct device_type *t = platform_devices[i];
		char sub[256];
		int ret;

		val = json_object_get(saved, t->name);
		if (!t->load)
			continue;
		if (!val) {
			snprintf(err, errlen, "device state: '%s' missing", t->name);
			return -EINVAL;
		}
		ret = t->load(ds->state[i], val, sub, sizeof(sub));
		if (ret < 0) {
			snprintf(err, errlen, "device state '%s': %s", t->name, sub);
			return ret;
		}
	}
	return 0;
}

void devices_destroy(struct vm *vm)
{
	struct device_set *ds = vm->devices;

	if (!ds)
		return;
	while (ds->n > 0) {
		ds->n--;
		if (platform_devices[ds->n]->destroy)
			platform_devices[ds->n]->destroy(ds->state[ds->n]);
	}
	free(ds);
	vm->devices = NULL;
}

void *devices_state(struct vm *vm, const char *name)
{
	struct device_set *ds = vm->devices;

	for (unsigned i = 0; ds && i < ds->n; i++)
		if (!strcmp(platform_devices[i]->name, name))
			return ds->state[i];
	return NULL;
}

int dev_json_uint(json_t *obj, const char *key, uint64_t max, uint64_t *out, char *err,
		  size_t errlen)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) > max) {
		snprintf(err, errlen, "'%s' missing or not an integer in 0..%llu", key,
			 (unsigned long long)max);
		return -EINVAL;
	}
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

/* Port 0x80: POST codes, and the port Linux writes to for an I/O delay. */
static int post_create(struct vm *vm, void **state, char *err, size_t errlen)
{
	int ret = pio_register(&vm->pio, PORT_POST, 1, "post", NULL, NULL, NULL);

	if (ret < 0)
		snprintf(err, errlen, "port 0x80: %s", strerror(-ret));
	*state = NULL;
	return ret;
}

const struct device_type post_device = {
	.name = "post",
	.create = post_create,
};
