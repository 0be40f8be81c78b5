/* Instructions this host's KVM emulator gives up on (KVM_EXIT_INTERNAL_ERROR,
 * suberror KVM_INTERNAL_ERROR_EMULATION) that the VMM performs itself: int3,
 * fwait, clac, stac. Anything else stays a crash. */
#ifndef DROVER_EMULATE_H
#define DROVER_EMULATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vcpu;
struct vm;

/* Reads the faulting instruction's bytes (from the exit, or from guest
 * memory through the vCPU's page tables); returns how many, 0 if none. */
unsigned emulate_fetch(struct vcpu *vcpu, uint8_t *buf, unsigned max);

/* Handles the emulation failure the vCPU just exited with; true if the
 * instruction was performed and the vCPU can run on. */
bool emulate_failure(struct vcpu *vcpu);

/* Logs (info) how many instructions were performed for the guest, by kind;
 * nothing when there were none. Call once the vCPUs have stopped. */
void emulate_log_counts(struct vm *vm);

#endif
