#include "vmfixture.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/kvm.h>

bool vmfix_kvm_usable(const char *test_name)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		fprintf(stderr, "%s: /dev/kvm: %s: the devices need a KVM VM, reporting skip\n",
			test_name, strerror(errno));
		return false;
	}
	close(fd);
	return true;
}

static int create_vm(struct vmfix *f, uint64_t ram, char *err, size_t errlen)
{
	struct vm *vm = f->vm;
	int ret;

	vm->cfg = &f->cfg;
	vm->ncpus = f->cfg.cpus;
	vm->fd = -1;
	vm->boot.kernel_fd = vm->boot.initrd_fd = -1;
	pthread_mutex_init(&vm->lock, NULL);
	pthread_cond_init(&vm->cond, NULL);
	pthread_mutex_init(&vm->req_lock, NULL);
	vm->state = VM_PRELAUNCH;
	vm->req_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vm->req_fd < 0)
		goto err_errno;
	vm->kh.fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kh.fd < 0)
		goto err_errno;
	vm->fd = ioctl(vm->kh.fd, KVM_CREATE_VM, 0);
	if (vm->fd < 0)
		goto err_errno;
	if (ioctl(vm->fd, KVM_CREATE_IRQCHIP, 0) < 0)
		goto err_errno;
	ret = guest_mem_init(&vm->mem, ram);
	if (ret < 0) {
		snprintf(err, errlen, "guest_mem_init(%llu): %s", (unsigned long long)ram,
			 strerror(-ret));
		return ret;
	}
	return 0;
err_errno:
	ret = -errno;
	snprintf(err, errlen, "building the test VM: %s", strerror(-ret));
	return ret;
}

int vmfix_create(struct vmfix **out, uint64_t ram, const struct vmm_config *cfg,
		 const struct device_type *const *types, char *err, size_t errlen)
{
	struct vmfix *f = calloc(1, sizeof(*f));
	int ret;

	if (!f)
		return -ENOMEM;
	f->vm = calloc(1, sizeof(*f->vm));
	if (!f->vm) {
		free(f);
		return -ENOMEM;
	}
	if (cfg) {
		f->cfg = *cfg;
	} else {
		vmm_config_init(&f->cfg);
		f->cfg.serial = SERIAL_NONE;
	}
	f->cfg.memory = ram;
	ret = create_vm(f, ram, err, errlen);
	if (ret < 0)
		goto err_destroy;
	for (; types && types[f->ndev]; f->ndev++) {
		if (f->ndev == VMFIX_MAX_DEVICES) {
			snprintf(err, errlen, "more than %d devices", VMFIX_MAX_DEVICES);
			ret = -E2BIG;
			goto err_destroy;
		}
		f->type[f->ndev] = types[f->ndev];
		ret = types[f->ndev]->create(f->vm, &f->state[f->ndev], err, errlen);
		if (ret < 0)
			goto err_destroy;
	}
	*out = f;
	return 0;
err_destroy:
	vmfix_destroy(f);
	return ret;
}

void vmfix_destroy(struct vmfix *f)
{
	struct vm *vm;

	if (!f)
		return;
	vm = f->vm;
	while (f->ndev > 0) {
		f->ndev--;
		if (f->type[f->ndev]->destroy)
			f->type[f->ndev]->destroy(f->state[f->ndev]);
	}
	guest_mem_free(&vm->mem);
	if (vm->fd >= 0)
		close(vm->fd);
	if (vm->kh.fd > 0)
		close(vm->kh.fd);
	if (vm->req_fd > 0)
		close(vm->req_fd);
	pthread_mutex_destroy(&vm->lock);
	pthread_cond_destroy(&vm->cond);
	pthread_mutex_destroy(&vm->req_lock);
	free(vm);
	free(f);
}

void *vmfix_state(const struct vmfix *f, unsigned i)
{
	return i < f->ndev ? f->state[i] : NULL;
}

int vmfix_in(struct vmfix *f, uint16_t port)
{
	uint8_t v = 0;

	if (!pio_access(&f->vm->pio, port, false, &v, 1))
		return -1;
	return v;
}

void vmfix_out(struct vmfix *f, uint16_t port, uint8_t v)
{
	pio_access(&f->vm->pio, port, true, &v, 1);
}

static int get_chip(struct vmfix *f, unsigned id, struct kvm_irqchip *chip)
{
	memset(chip, 0, sizeof(*chip));
	chip->chip_id = id;
	return ioctl(f->vm->fd, KVM_GET_IRQCHIP, chip);
}

int vmfix_irq_level(struct vmfix *f, unsigned irq)
{
	struct kvm_irqchip chip;

	if (get_chip(f, KVM_IRQCHIP_IOAPIC, &chip) < 0)
		return -1;
	return (chip.chip.ioapic.irr >> irq) & 1;
}

bool vmfix_irq_edge(struct vmfix *f, unsigned irq)
{
	struct kvm_irqchip chip;

	if (get_chip(f, irq < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE, &chip) < 0)
		return false;
	return (chip.chip.pic.irr >> (irq & 7)) & 1;
}

void vmfix_irq_clear_edges(struct vmfix *f)
{
	struct kvm_irqchip chip;

	for (unsigned id = KVM_IRQCHIP_PIC_MASTER; id <= KVM_IRQCHIP_PIC_SLAVE; id++) {
		if (get_chip(f, id, &chip) < 0)
			continue;
		/* Keep last_irr (the line levels), forget the latched edges. */
		chip.chip.pic.irr = 0;
		if (ioctl(f->vm->fd, KVM_SET_IRQCHIP, &chip) < 0)
			fprintf(stderr, "vmfixture: KVM_SET_IRQCHIP: %s\n", strerror(errno));
	}
}

bool vmfix_request_signalled(struct vmfix *f)
{
	struct pollfd p = { .fd = f->vm->req_fd, .events = POLLIN };

	return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

enum vm_req vmfix_take_request(struct vmfix *f, int *code, char *detail, size_t len)
{
	return vm_take_request(f->vm, code, detail, len);
}
