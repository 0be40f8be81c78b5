/* MSI-X vectors as KVM GSI routes and irqfds (see msix.h). */
#include "msix.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/kvm.h>

#include "log.h"
#include "pci.h"
#include "util.h"

#define IRQCHIP_GSIS      24      /* I/O APIC pins; the first 16 also reach a PIC */
#define ROUTER_MAX_ROUTES 1024

struct msi_router {
	int vm_fd;
	pthread_mutex_t lock;
	unsigned n;                   /* routes in use */
	unsigned next_gsi;
	struct kvm_irq_routing_entry e[ROUTER_MAX_ROUTES];
};

/* Router lock held. */
static int router_commit(struct msi_router *r)
{
	struct kvm_irq_routing *t = calloc(1, sizeof(*t) + r->n * sizeof(t->entries[0]));
	int ret = 0;

	if (!t)
		return -ENOMEM;
	t->nr = r->n;
	memcpy(t->entries, r->e, r->n * sizeof(r->e[0]));
	if (ioctl(r->vm_fd, KVM_SET_GSI_ROUTING, t) < 0)
		ret = -errno;
	free(t);
	return ret;
}

int msi_router_new(struct msi_router **out, int vm_fd)
{
	struct msi_router *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	r->vm_fd = vm_fd;
	pthread_mutex_init(&r->lock, NULL);
	/* KVM's routing after KVM_CREATE_IRQCHIP, which the MADT promises
	 * (ISA IRQ n = GSI n = I/O APIC pin n, and PIC pin n for n < 16). */
	for (unsigned gsi = 0; gsi < IRQCHIP_GSIS; gsi++) {
		r->e[r->n++] = (struct kvm_irq_routing_entry){
			.gsi = gsi, .type = KVM_IRQ_ROUTING_IRQCHIP,
			.u.irqchip = { .irqchip = KVM_IRQCHIP_IOAPIC, .pin = gsi },
		};
		if (gsi < 16)
			r->e[r->n++] = (struct kvm_irq_routing_entry){
				.gsi = gsi, .type = KVM_IRQ_ROUTING_IRQCHIP,
				.u.irqchip = { .irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER :
					       KVM_IRQCHIP_PIC_SLAVE, .pin = gsi % 8 },
			};
	}
	r->next_gsi = IRQCHIP_GSIS;
	*out = r;
	return 0;
}

void msi_router_free(struct msi_router *r)
{
	if (!r)
		return;
	pthread_mutex_destroy(&r->lock);
	free(r);
}

int msi_router_alloc(struct msi_router *r, unsigned *gsi)
{
	/* Not committed yet: an irqfd may be bound to a GSI without a route
	 * (it then delivers nothing), and each KVM_SET_GSI_ROUTING waits for
	 * an SRCU grace period; the route goes in when it gets a message. */
	pthread_mutex_lock(&r->lock);
	if (r->n == ROUTER_MAX_ROUTES) {
		pthread_mutex_unlock(&r->lock);
		return -ENOSPC;
	}
	r->e[r->n++] = (struct kvm_irq_routing_entry){ .gsi = r->next_gsi,
						       .type = KVM_IRQ_ROUTING_MSI };
	*gsi = r->next_gsi++;
	pthread_mutex_unlock(&r->lock);
	return 0;
}

int msi_router_set(struct msi_router *r, unsigned gsi, uint64_t addr, uint32_t data)
{
	int ret = -ENOENT;

	pthread_mutex_lock(&r->lock);
	for (unsigned i = 0; i < r->n; i++) {
		struct kvm_irq_routing_entry *e = &r->e[i];

		if (e->gsi != gsi || e->type != KVM_IRQ_ROUTING_MSI)
			continue;
		e->u.msi.address_lo = (uint32_t)addr;
		e->u.msi.address_hi = (uint32_t)(addr >> 32);
		e->u.msi.data = data;
		ret = router_commit(r);
		break;
	}
	pthread_mutex_unlock(&r->lock);
	return ret;
}

/* ---- vectors ---- */

static uint64_t vec_addr(const struct msix_vector *v)
{
	return (uint64_t)pci_get32(v->entry) | (uint64_t)pci_get32(v->entry + 4) << 32;
}

static uint32_t vec_data(const struct msix_vector *v)
{
	return pci_get32(v->entry + 8);
}

static bool vec_masked(const struct msix *m, const struct msix_vector *v)
{
	return !m->enabled || m->func_masked || (v->entry[12] & MSIX_ENTRY_MASKED);
}

static void fire(struct msix_vector *v)
{
	uint64_t one = 1;

	if (write(v->efd, &one, sizeof(one)) < 0)
		log_warn("msix: signalling GSI %u: %s", v->gsi, strerror(errno));
}

/* Lock held. An unmasked vector gets its current message routed and its
 * pending interrupt delivered. */
static void vec_settle(struct msix *m, struct msix_vector *v)
{
	uint64_t addr = vec_addr(v);
	uint32_t data = vec_data(v);

	if (vec_masked(m, v))
		return;
	if (!v->routed || v->route_addr != addr || v->route_data != data) {
		int ret = msi_router_set(m->router, v->gsi, addr, data);

		if (ret < 0)
			log_warn("msix %s: routing GSI %u: %s", m->dev->name, v->gsi,
				 strerror(-ret));
		v->routed = ret == 0;
		v->route_addr = addr;
		v->route_data = data;
	}
	if (v->pending) {
		v->pending = false;
		fire(v);
	}
}

int msix_init(struct msix *m, struct pci_dev *dev, int vm_fd, struct msi_router *router,
	      unsigned nvec, unsigned bar, uint32_t table_off, uint32_t pba_off, char *err,
	      size_t errlen)
{
	int cap, ret;

	memset(m, 0, sizeof(*m));
	for (unsigned i = 0; i < MSIX_MAX_VECTORS; i++)
		m->vec[i].efd = -1;
	if (nvec == 0 || nvec > MSIX_MAX_VECTORS || (table_off | pba_off) & 7) {
		snprintf(err, errlen, "msix %s: %u vectors, table 0x%x, PBA 0x%x: invalid",
			 dev->name, nvec, table_off, pba_off);
		return -EINVAL;
	}
	m->dev = dev;
	m->router = router;
	m->vm_fd = vm_fd;
	m->nvec = nvec;
	m->bar = bar;
	m->table_off = table_off;
	m->pba_off = pba_off;
	pthread_mutex_init(&m->lock, NULL);
	cap = pci_dev_add_cap(dev, PCI_CAP_ID_MSIX, MSIX_CAP_LEN);
	if (cap < 0) {
		snprintf(err, errlen, "msix %s: no room for the capability", dev->name);
		return cap;
	}
	m->cap = (unsigned)cap;
	pci_put16(dev->cfg + cap + 2, (uint16_t)(nvec - 1));
	dev->wmask[cap + 3] = (MSIX_CTRL_ENABLE | MSIX_CTRL_MASKALL) >> 8;
	pci_put32(dev->cfg + cap + 4, table_off | bar);
	pci_put32(dev->cfg + cap + 8, pba_off | bar);
	for (unsigned i = 0; i < nvec; i++) {
		struct msix_vector *v = &m->vec[i];
		struct kvm_irqfd irqfd = { 0 };

		v->entry[12] = MSIX_ENTRY_MASKED;
		ret = msi_router_alloc(router, &v->gsi);
		if (ret < 0) {
			snprintf(err, errlen, "msix %s: a GSI for vector %u: %s", dev->name, i,
				 strerror(-ret));
			goto err;
		}
		v->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (v->efd < 0) {
			ret = -errno;
			snprintf(err, errlen, "msix %s: eventfd: %s", dev->name, strerror(-ret));
			goto err;
		}
		irqfd.fd = (uint32_t)v->efd;
		irqfd.gsi = v->gsi;
		if (ioctl(vm_fd, KVM_IRQFD, &irqfd) < 0) {
			ret = -errno;
			close(v->efd);
			v->efd = -1;
			snprintf(err, errlen, "msix %s: KVM_IRQFD for GSI %u: %s", dev->name, v->gsi,
				 strerror(-ret));
			goto err;
		}
	}
	return 0;
err:
	msix_destroy(m);
	return ret;
}

void msix_destroy(struct msix *m)
{
	for (unsigned i = 0; i < MSIX_MAX_VECTORS; i++) {
		struct msix_vector *v = &m->vec[i];
		struct kvm_irqfd irqfd = { .gsi = v->gsi, .flags = KVM_IRQFD_FLAG_DEASSIGN };

		if (v->efd < 0)
			continue;
		irqfd.fd = (uint32_t)v->efd;
		if (ioctl(m->vm_fd, KVM_IRQFD, &irqfd) < 0)
			log_debug("msix: releasing the irqfd of GSI %u: %s", v->gsi,
				  strerror(errno));
		close(v->efd);
		v->efd = -1;
	}
	if (m->dev)
		pthread_mutex_destroy(&m->lock);
	m->dev = NULL;
}

bool msix_bar_access(struct msix *m, unsigned bar, uint64_t off, bool is_write, uint8_t *data,
		     unsigned len)
{
	uint64_t table_len = (uint64_t)m->nvec * MSIX_ENTRY_SIZE;
	uint64_t pba_len = ALIGN_UP((uint64_t)m->nvec, 64) / 8;

	if (bar != m->bar)
		return false;
	pthread_mutex_lock(&m->lock);
	if (off >= m->table_off && off - m->table_off < table_len) {
		uint64_t t = off - m->table_off;
		bool touched[MSIX_MAX_VECTORS] = { false };

		for (unsigned i = 0; i < len; i++, t++) {
			struct msix_vector *v;
			unsigned b = (unsigned)(t % MSIX_ENTRY_SIZE);

			if (t >= table_len) {
				if (!is_write)
					data[i] = 0xff;
				continue;
			}
			v = &m->vec[t / MSIX_ENTRY_SIZE];
			if (!is_write) {
				data[i] = v->entry[b];
			} else if (b < 12) {
				v->entry[b] = data[i];
				touched[t / MSIX_ENTRY_SIZE] = true;
			} else if (b == 12) {
				v->entry[b] = data[i] & MSIX_ENTRY_MASKED;
				touched[t / MSIX_ENTRY_SIZE] = true;
			}
		}
		for (unsigned i = 0; is_write && i < m->nvec; i++)
			if (touched[i])
				vec_settle(m, &m->vec[i]);
	} else if (off >= m->pba_off && off - m->pba_off < pba_len) {
		uint64_t p = off - m->pba_off;

		/* The PBA is read-only. */
		for (unsigned i = 0; !is_write && i < len; i++, p++) {
			uint8_t byte = 0;

			for (unsigned bit = 0; bit < 8; bit++) {
				uint64_t n = p * 8 + bit;

				if (n < m->nvec && m->vec[n].pending)
					byte |= (uint8_t)(1u << bit);
			}
			data[i] = byte;
		}
	} else {
		pthread_mutex_unlock(&m->lock);
		return false;
	}
	pthread_mutex_unlock(&m->lock);
	return true;
}

/* Lock held: takes the control word from configuration space. */
static void read_control(struct msix *m)
{
	uint16_t ctrl = pci_get16(m->dev->cfg + m->cap + 2);

	m->enabled = ctrl & MSIX_CTRL_ENABLE;
	m->func_masked = ctrl & MSIX_CTRL_MASKALL;
}

void msix_cfg_write(struct msix *m, unsigned off, unsigned len)
{
	if (off > m->cap + 3 || off + len <= m->cap + 2)
		return;
	pthread_mutex_lock(&m->lock);
	read_control(m);
	for (unsigned i = 0; i < m->nvec; i++)
		vec_settle(m, &m->vec[i]);
	pthread_mutex_unlock(&m->lock);
}

bool msix_enabled(struct msix *m)
{
	bool on;

	pthread_mutex_lock(&m->lock);
	on = m->enabled;
	pthread_mutex_unlock(&m->lock);
	return on;
}

int msix_notify(struct msix *m, unsigned vi)
{
	struct msix_vector *v;
	int ret = 0;

	pthread_mutex_lock(&m->lock);
	if (!m->enabled) {
		ret = -EPERM;
	} else if (vi >= m->nvec) {
		ret = -ENOENT;
	} else {
		v = &m->vec[vi];
		if (vec_masked(m, v)) {
			v->pending = true;
		} else {
			vec_settle(m, v);
			fire(v);
		}
	}
	pthread_mutex_unlock(&m->lock);
	return ret;
}

void msix_reset(struct msix *m)
{
	pthread_mutex_lock(&m->lock);
	m->enabled = m->func_masked = false;
	for (unsigned i = 0; i < m->nvec; i++) {
		memset(m->vec[i].entry, 0, MSIX_ENTRY_SIZE);
		m->vec[i].entry[12] = MSIX_ENTRY_MASKED;
		m->vec[i].pending = false;
	}
	pthread_mutex_unlock(&m->lock);
}

json_t *msix_save(struct msix *m)
{
	json_t *vecs = json_array();

	pthread_mutex_lock(&m->lock);
	for (unsigned i = 0; i < m->nvec; i++) {
		const struct msix_vector *v = &m->vec[i];

		json_array_append_new(vecs, json_pack("{s:I, s:I, s:b, s:b}",
			"address", (json_int_t)vec_addr(v), "data", (json_int_t)vec_data(v),
			"masked", v->entry[12] & MSIX_ENTRY_MASKED, "pending", v->pending));
	}
	pthread_mutex_unlock(&m->lock);
	return json_pack("{s:o}", "vectors", vecs);
}

int msix_load(struct msix *m, json_t *saved, char *err, size_t errlen)
{
	json_t *vecs = json_object_get(saved, "vectors"), *e;
	struct { uint64_t addr; uint32_t data; bool masked, pending; } in[MSIX_MAX_VECTORS];
	size_t i;

	if (!json_is_array(vecs) || json_array_size(vecs) != m->nvec) {
		snprintf(err, errlen, "'vectors' missing or not an array of %u", m->nvec);
		return -EINVAL;
	}
	json_array_foreach(vecs, i, e) {
		json_t *a = json_object_get(e, "address"), *d = json_object_get(e, "data");
		json_t *mk = json_object_get(e, "masked"), *p = json_object_get(e, "pending");

		if (!json_is_integer(a) || !json_is_integer(d) || !json_is_boolean(mk) ||
		    !json_is_boolean(p) || json_integer_value(d) < 0 ||
		    json_integer_value(d) > UINT32_MAX) {
			snprintf(err, errlen, "'vectors'[%zu]: needs integer 'address' and 'data' "
				 "(32 bits) and boolean 'masked' and 'pending'", i);
			return -EINVAL;
		}
		in[i].addr = (uint64_t)json_integer_value(a);
		in[i].data = (uint32_t)json_integer_value(d);
		in[i].masked = json_is_true(mk);
		in[i].pending = json_is_true(p);
	}
	pthread_mutex_lock(&m->lock);
	read_control(m);
	for (i = 0; i < m->nvec; i++) {
		struct msix_vector *v = &m->vec[i];

		pci_put32(v->entry, (uint32_t)in[i].addr);
		pci_put32(v->entry + 4, (uint32_t)(in[i].addr >> 32));
		pci_put32(v->entry + 8, in[i].data);
		pci_put32(v->entry + 12, in[i].masked ? MSIX_ENTRY_MASKED : 0);
		v->pending = in[i].pending;
		v->routed = false;
		vec_settle(m, v);
	}
	pthread_mutex_unlock(&m->lock);
	return 0;
}
