/* A minimal real VM for the platform-device tests: a KVM VM with the
 * in-kernel PIC and I/O APIC (so that vm_irq_line reaches real interrupt
 * controllers whose state can be read back), guest RAM, the request eventfd
 * and locks of struct vm; no vCPU exists. Devices are brought up through
 * their device_type and driven with pio_access(), exactly as a vCPU's
 * KVM_EXIT_IO is dispatched.
 *
 * Device tests exit with VMFIX_SKIP (ctest's SKIP_RETURN_CODE) when
 * /dev/kvm cannot be opened, and only then. */
#ifndef DROVER_TEST_VMFIXTURE_H
#define DROVER_TEST_VMFIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "devices.h"
#include "vm.h"

#define VMFIX_SKIP 77
#define VMFIX_MAX_DEVICES 8

struct vmfix {
	struct vm *vm;
	struct vmm_config cfg;     /* vm->cfg points here */
	unsigned ndev;
	const struct device_type *type[VMFIX_MAX_DEVICES];
	void *state[VMFIX_MAX_DEVICES];
};

/* True when /dev/kvm can be opened read-write; otherwise says why on stderr. */
bool vmfix_kvm_usable(const char *test_name);

/* Builds the VM with ram bytes of RAM and cfg's settings (NULL: defaults
 * with --serial none), then creates each device of the NULL-terminated
 * list in order. 0 or -errno with err set. */
int vmfix_create(struct vmfix **out, uint64_t ram, const struct vmm_config *cfg,
		 const struct device_type *const *types, char *err, size_t errlen);
/* Tears the devices down in reverse, then the VM. NULL is fine. */
void vmfix_destroy(struct vmfix *f);

/* The state of the i-th device of the list given to vmfix_create. */
void *vmfix_state(const struct vmfix *f, unsigned i);

/* One port access, as a vCPU exit performs it; a port no device owns is a
 * test failure (reported through the return value: -1). */
int vmfix_in(struct vmfix *f, uint16_t port);
void vmfix_out(struct vmfix *f, uint16_t port, uint8_t v);

/* Level of ISA line irq as the I/O APIC sees it now (its IRR follows the
 * line while the pin is masked, as it is with no guest). */
int vmfix_irq_level(struct vmfix *f, unsigned irq);
/* Whether the PIC latched a rising edge on irq since the last
 * vmfix_irq_clear_edges (its IRR bit, edge-triggered mode). */
bool vmfix_irq_edge(struct vmfix *f, unsigned irq);
void vmfix_irq_clear_edges(struct vmfix *f);

/* What the main loop would see: whether req_fd is readable, and then the
 * request from vm_take_request. */
bool vmfix_request_signalled(struct vmfix *f);
enum vm_req vmfix_take_request(struct vmfix *f, int *code, char *detail, size_t len);

#endif
