/* A virtual machine: the KVM VM, its RAM, platform devices and vCPU threads,
 * and the run state that the control socket drives.
 *
 * Threads: the main thread runs the event loop (control socket, serial
 * input, signals) and alone changes the run state; each vCPU thread runs
 * KVM_RUN and dispatches its exits to devices. A vCPU never acts on the whole
 * VM itself: what the guest asks for (power off, reset, debug exit) or what
 * went wrong (triple fault) is posted with vm_request() and the main thread
 * performs it.
 *
 * Run state (vm->state), changed only by the main thread:
 *
 *   PRELAUNCH --vm_start--> RUNNING <--vm_pause / vm_resume--> PAUSED
 *        RUNNING|PAUSED --vm_reset--> (same state, guest restarted)
 *        RUNNING|PAUSED --vm_shutdown--> SHUTDOWN (vCPU threads joined)
 *
 * Pausing: vm_pause sets pause_req and kicks every vCPU out of KVM_RUN (an
 * immediate_exit flag plus a signal); each vCPU thread parks on vm->cond and
 * counts itself in vm->parked; vm_pause returns when all are parked.
 *
 * A guest that asks for a reset, a power-off or a debug exit stops there, as
 * a machine whose reset line is pulled does: vm_request sets guest_halted and
 * kicks every vCPU, and each parks until the main thread has acted (vm_reset
 * clears the flag; an end joins the threads). Nothing the guest runs after
 * the request (a fallback reboot method, a crash) can overtake it. */
#ifndef DROVER_VM_H
#define DROVER_VM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "boot.h"
#include "config.h"
#include "cpuid.h"
#include "guest_mem.h"
#include "kvm.h"
#include "mmio.h"
#include "pio.h"
#include "platform.h"

/* drover-vmm's exit statuses: how the guest ended. */
#define VMM_EXIT_POWEROFF    0
#define VMM_EXIT_ERROR       1
#define VMM_EXIT_CRASH       2
#define VMM_EXIT_RESET       3
#define VMM_EXIT_QUIT        4
#define VMM_EXIT_DEBUG_BASE  16
#define VMM_DEBUG_CODE_MAX   239

enum vm_state { VM_PRELAUNCH, VM_RUNNING, VM_PAUSED, VM_SHUTDOWN };

/* What a vCPU (or a device on its behalf) asks the main thread to do. */
enum vm_req {
	VM_REQ_NONE,
	VM_REQ_RESET,          /* guest reset (i8042, ACPI reset register) */
	VM_REQ_POWEROFF,       /* ACPI S5 */
	VM_REQ_DEBUG_EXIT,     /* debug-exit port; code = the byte written */
	VM_REQ_CRASH,          /* triple fault, emulation failure, KVM error */
};

/* Emulation-failure exits handled in the VMM, by kind (see emulate.c). */
enum emul_kind { EMUL_INT3, EMUL_FWAIT, EMUL_CLAC, EMUL_STAC, EMUL_NR_KINDS };

struct vcpu;
struct serial;
struct device_set;
struct pci_bus;

struct vm {
	const struct vmm_config *cfg;
	struct kvm_host kh;
	int fd;
	struct guest_mem mem;
	struct pio_bus pio;
	struct mmio_bus mmio;
	struct pci_bus *pci;          /* made by the "pci" device */
	struct platform_desc pd;
	struct boot_plan boot;
	struct cpuid_mask cpumask;
	unsigned ncpus;
	struct vcpu **vcpus;
	struct device_set *devices;
	struct serial *serial;

	/* Run control (see the diagram above). */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool pause_req;
	bool stop_req;
	unsigned parked;
	unsigned reset_gen;       /* bumped by vm_reset; each vCPU resets itself once */
	bool guest_halted;        /* the guest asked for an end or a reset (above) */
	enum vm_state state;

	/* Requests from vCPU threads: the first terminal one wins. */
	int req_fd;               /* eventfd the main loop watches */
	pthread_mutex_t req_lock;
	bool reset_pending;
	enum vm_req end_req;
	int end_code;
	char end_detail[4096];

	/* Events for the control socket's clients (BLOCK_IO_ERROR, ...),
	 * called on the main thread; steals data. main.c sets it; NULL: none. */
	void (*emit_event)(void *opaque, const char *name, json_t *data);
	void *emit_opaque;

	atomic_ulong emul_count[EMUL_NR_KINDS];
	uint64_t start_ns;
};

/* Builds the VM described by cfg: checks it against the host (KVM limits,
 * host memory), creates the KVM VM, RAM, devices and vCPUs, loads the kernel.
 * Nothing runs yet. On failure, err holds one sentence for the operator. */
int vm_create(struct vm **out, const struct vmm_config *cfg, char *err, size_t errlen);
void vm_destroy(struct vm *vm);

int vm_start(struct vm *vm);
void vm_pause(struct vm *vm);
void vm_resume(struct vm *vm);
/* Restarts the guest as at power-on (kernel reloaded, devices and vCPUs
 * reset); keeps the run state. 0 or -errno (the VM is then unusable). */
int vm_reset(struct vm *vm, char *err, size_t errlen);
/* Stops and joins every vCPU thread. */
void vm_shutdown(struct vm *vm);

/* Called from vCPU threads and devices. */
void vm_request(struct vm *vm, enum vm_req req, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Called by the main thread when req_fd is readable: takes the pending
 * request (resets are reported once each, terminal requests stay). */
enum vm_req vm_take_request(struct vm *vm, int *code, char *detail, size_t len);

/* Raises or lowers an ISA interrupt line of the in-kernel PIC and I/O APIC. */
void vm_irq_line(struct vm *vm, unsigned irq, int level);

/* Host thread id of each vCPU, for query-cpus. */
int vm_vcpu_tid(const struct vm *vm, unsigned index);

#endif
