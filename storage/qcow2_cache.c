/* Write-back caches of one-cluster metadata tables (L2 tables, refcount
 * blocks). A table handed out by qcow2_cache_get stays put until
 * qcow2_cache_put: pinned entries are never evicted. Evicting a dirty table
 * goes through the cache's writeback hook, which knows what has to reach
 * the disk before that table may (see qcow2_refcount.c). Callers hold the
 * qcow2 lock. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

int qcow2_cache_init(struct qcow2_cache *c, const char *what, unsigned n, uint32_t table_size,
		     int (*writeback)(struct qcow2 *, struct qcow2_cache_entry *))
{
	memset(c, 0, sizeof(*c));
	c->what = what;
	c->n = n;
	c->table_size = table_size;
	c->writeback = writeback;
	c->e = calloc(n, sizeof(*c->e));
	if (posix_memalign((void **)&c->mem, 4096, (size_t)n * table_size) != 0)
		c->mem = NULL;
	if (!c->e || !c->mem) {
		free(c->e);
		free(c->mem);
		c->e = NULL;
		c->mem = NULL;
		return -ENOMEM;
	}
	for (unsigned i = 0; i < n; i++)
		c->e[i].data = c->mem + (size_t)i * table_size;
	return 0;
}

void qcow2_cache_destroy(struct qcow2_cache *c)
{
	free(c->e);
	free(c->mem);
	c->e = NULL;
	c->mem = NULL;
}

static struct qcow2_cache_entry *cache_find(struct qcow2_cache *c, uint64_t offset)
{
	for (unsigned i = 0; i < c->n; i++)
		if (c->e[i].offset == offset)
			return &c->e[i];
	return NULL;
}

static struct qcow2_cache_entry *cache_entry_of(struct qcow2_cache *c, const uint8_t *table)
{
	size_t i = (size_t)(table - c->mem) / c->table_size;
	return &c->e[i];
}

/* A slot to reuse: a free one, else the least recently used unpinned one,
 * written back first if dirty. */
static int cache_victim(struct qcow2 *s, struct qcow2_cache *c, struct qcow2_cache_entry **out)
{
	struct qcow2_cache_entry *best = NULL;

	for (unsigned i = 0; i < c->n; i++) {
		struct qcow2_cache_entry *e = &c->e[i];
		if (e->pins)
			continue;
		if (!e->offset) {
			best = e;
			break;
		}
		if (!best || e->lru < best->lru)
			best = e;
	}
	if (!best)
		return -ENOMEM;   /* every table pinned: a caller holds too many */
	if (best->offset && best->dirty) {
		int ret = c->writeback(s, best);
		if (ret < 0)
			return ret;
	}
	best->offset = 0;
	*out = best;
	return 0;
}

int qcow2_cache_get(struct qcow2 *s, struct qcow2_cache *c, uint64_t offset, bool fresh,
		    uint8_t **table)
{
	struct qcow2_cache_entry *e = cache_find(c, offset);
	int ret;

	if (!e) {
		ret = cache_victim(s, c, &e);
		if (ret < 0)
			return ret;
		if (fresh) {
			memset(e->data, 0, c->table_size);
		} else {
			ret = blk_pread(s->file, offset, e->data, c->table_size);
			if (ret < 0)
				return ret;
		}
		e->offset = offset;
		e->dirty = false;
	} else if (fresh) {
		memset(e->data, 0, c->table_size);
	}
	e->pins++;
	e->lru = ++c->tick;
	*table = e->data;
	return 0;
}

int qcow2_cache_peek(struct qcow2_cache *c, uint64_t offset, uint8_t **table)
{
	struct qcow2_cache_entry *e = offset ? cache_find(c, offset) : NULL;

	if (!e)
		return -ENOENT;
	e->pins++;
	e->lru = ++c->tick;
	*table = e->data;
	return 0;
}

void qcow2_cache_put(struct qcow2_cache *c, uint8_t *table)
{
	struct qcow2_cache_entry *e = cache_entry_of(c, table);
	if (e->pins)
		e->pins--;
}

void qcow2_cache_mark_dirty(struct qcow2_cache *c, uint8_t *table)
{
	struct qcow2_cache_entry *e = cache_entry_of(c, table);
	if (!e->dirty) {
		e->dirty = true;
		c->ndirty++;
	}
}

int qcow2_cache_write_all(struct qcow2 *s, struct qcow2_cache *c)
{
	if (!c->ndirty)
		return 0;
	/* Ascending offsets: fewer seeks on rotating media, same result. */
	for (;;) {
		struct qcow2_cache_entry *next = NULL;
		for (unsigned i = 0; i < c->n; i++) {
			struct qcow2_cache_entry *e = &c->e[i];
			if (e->offset && e->dirty && (!next || e->offset < next->offset))
				next = e;
		}
		if (!next)
			break;
		int ret = blk_pwrite(s->file, next->offset, next->data, c->table_size, 0);
		if (ret < 0)
			return ret;
		next->dirty = false;
		c->ndirty--;
	}
	return 0;
}

void qcow2_cache_discard(struct qcow2_cache *c, uint64_t offset)
{
	struct qcow2_cache_entry *e = cache_find(c, offset);
	if (!e || !offset)
		return;
	if (e->dirty)
		c->ndirty--;
	e->dirty = false;
	e->offset = 0;
}

int qcow2_cache_reset(struct qcow2 *s, struct qcow2_cache *c)
{
	int ret = qcow2_cache_write_all(s, c);
	for (unsigned i = 0; i < c->n; i++) {
		c->e[i].offset = 0;
		c->e[i].dirty = false;
	}
	c->ndirty = 0;
	return ret;
}
