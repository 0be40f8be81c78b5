/* Platform devices, brought up from one ordered list and torn down in
 * reverse. Every device can reset itself and save and load its state (live
 * migration and snapshots need it), behind one table of verbs. */
#ifndef DROVER_DEVICES_H
#define DROVER_DEVICES_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct vm;
struct evloop;

struct device_type {
	const char *name;
	/* Claims ports and builds the state. 0 or -errno with err set. */
	int (*create)(struct vm *vm, void **state, char *err, size_t errlen);
	/* Starts what the device does on the main loop (timers, host input),
	 * once that loop exists. Optional. 0 or -errno with err set. */
	int (*attach)(void *state, struct evloop *loop, char *err, size_t errlen);
	/* Back to power-on state (system reset); vCPUs are parked. */
	void (*reset)(void *state);
	/* The VM pauses (vCPUs parked) or ends: stop background work (I/O
	 * threads) once what is in flight has completed. Optional. */
	void (*pause)(void *state);
	/* The VM runs again after pause. Optional. */
	void (*resume)(void *state);
	/* The state a destination needs to continue; a new reference. */
	json_t *(*save)(void *state);
	/* Checks and applies saved state; 0 or -EINVAL with err naming the
	 * bad field. On error the device is unchanged. */
	int (*load)(void *state, json_t *saved, char *err, size_t errlen);
	void (*destroy)(void *state);
};

extern const struct device_type post_device;
extern const struct device_type serial_device;
extern const struct device_type i8042_device;
extern const struct device_type rtc_device;
extern const struct device_type pm_device;
extern const struct device_type debugexit_device;
extern const struct device_type pci_device;
extern const struct device_type virtio_blk_device;

int devices_create(struct vm *vm, char *err, size_t errlen);
int devices_attach(struct vm *vm, struct evloop *loop, char *err, size_t errlen);
void devices_reset(struct vm *vm);
void devices_pause(struct vm *vm);
void devices_resume(struct vm *vm);
/* {"serial": {...}, "rtc": {...}, ...} */
json_t *devices_save(struct vm *vm);
int devices_load(struct vm *vm, json_t *saved, char *err, size_t errlen);
void devices_destroy(struct vm *vm);
/* The state of the device called name, or NULL. */
void *devices_state(struct vm *vm, const char *name);

/* JSON helpers for save/load: fetch an integer field in [0, max]. */
int dev_json_uint(json_t *obj, const char *key, uint64_t max, uint64_t *out, char *err,
		  size_t errlen);

#endif
