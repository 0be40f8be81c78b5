/* One vCPU: its KVM fd and run area, its thread, and the state it returns to
 * at each reset. */
#ifndef DROVER_VCPU_H
#define DROVER_VCPU_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <linux/kvm.h>

struct vm;

struct vcpu {
	struct vm *vm;
	unsigned index;
	uint32_t apic_id;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	bool thread_started;
	atomic_int tid;
	unsigned reset_gen;             /* last vm->reset_gen this vCPU applied */
	struct kvm_cpuid2 *cpuid;
	struct kvm_lapic_state lapic0;  /* the local APIC as at power-on */
	struct kvm_sregs sregs0;
};

/* Creates vCPU `index` with its CPUID, MSRs, FPU and local APIC set up. */
int vcpu_create(struct vm *vm, unsigned index, struct vcpu **out, char *err, size_t errlen);
void vcpu_destroy(struct vcpu *vcpu);

/* Puts the vCPU in its power-on state (the BSP at the kernel entry, APs
 * waiting for INIT/SIPI). Called on the vCPU's own thread. */
int vcpu_reset(struct vcpu *vcpu);

int vcpu_start_thread(struct vcpu *vcpu);
/* Makes the vCPU leave KVM_RUN soon (from any thread). */
void vcpu_kick(struct vcpu *vcpu);

/* Writes the registers of a stopped vCPU into buf (one line each). */
void vcpu_dump(struct vcpu *vcpu, char *buf, size_t len);

/* The signal that kicks vCPU threads out of KVM_RUN; main installs a handler
 * for it (that does nothing) before any vCPU thread starts. */
#define VCPU_KICK_SIGNAL SIGUSR1

#endif
