/* segment.c: the broker's side of the segment: create, attach, publish. */
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker.h"
#include "clock.h"
#include "gcra.h"
#include "lease.h"
#include "log.h"
#include "own.h"
#include "window.h"

/* Capacities of a new segment: room to grow by reloads, ids stay 16 bits. */
#define DEF_MAX_KEYS	1024u
#define DEF_MAX_LIMITS	4096u
#define DEF_MAX_CELLS	65536u
#define QUARANTINE_TICKS 40	/* 2 s: no reader still uses a freed id */

static struct cell_hold *cells_hold(struct broker *, uint32_t, uint32_t);

static uint32_t
grow(uint32_t def, uint64_t need)
{
	uint64_t n = need * 2;

	if (n < def)
		n = def;
	return n > SEG_IDS_MAX ? SEG_IDS_MAX : (uint32_t)n;
}

/*
 * Pool words a limit needs: a window ring, or one cell per lease (a
 * count segment_plan has checked, before this is taken as 32 bits).
 */
static uint64_t
spec_cells(const struct limit_spec *l)
{
	switch (l->kind) {
	case LIM_WINDOW:
		return SEG_WIN_SLOTS;
	case LIM_CONC:
		return l->count;
	}
	return 0;
}

/*
 * The capacities of a fresh segment for cfg, with room to grow by
 * reloads, or why no segment can hold it: every limit segment_create,
 * segment_publish and seg_check apply to a fresh segment.  `tollgated
 * -n' applies them as the broker does, before it creates anything, and
 * each publish checks them again.  Returns 0, or -E2BIG with err set.
 */
int
segment_plan(const struct config *cfg, struct seg_plan *p, char *err,
    size_t errlen)
{
	uint64_t need = 0;

	if (cfg->nkeys > SEG_IDS_MAX) {
		snprintf(err, errlen, "%u keys: a segment holds at most %u "
		    "(key ids are 16 bits)", cfg->nkeys, SEG_IDS_MAX);
		return -E2BIG;
	}
	if (cfg->nlimits > SEG_IDS_MAX) {
		snprintf(err, errlen, "%u limits: a segment holds at most %u "
		    "(limit ids are 16 bits)", cfg->nlimits, SEG_IDS_MAX);
		return -E2BIG;
	}
	if (cfg->max_clients > SEG_IDS_MAX) {
		snprintf(err, errlen, "max_clients %u: a segment holds at "
		    "most %u client slots", cfg->max_clients, SEG_IDS_MAX);
		return -E2BIG;
	}
	for (unsigned i = 0; i < cfg->nlimits; i++)
		need += spec_cells(&cfg->limits[i]);
	/* Twice what it needs, as for keys and limits: see grow(). */
	if (need > SEG_CELLS_MAX / 2) {
		snprintf(err, errlen, "the limits need %llu cells (a window "
		    "ring is %u, a concurrency limit one per lease): a "
		    "segment holds at most %u", (unsigned long long)need,
		    SEG_WIN_SLOTS, SEG_CELLS_MAX / 2);
		return -E2BIG;
	}
	p->max_keys = grow(DEF_MAX_KEYS, cfg->nkeys);
	p->max_limits = grow(DEF_MAX_LIMITS, cfg->nlimits);
	p->max_cells = need * 2 > DEF_MAX_CELLS ? (uint32_t)(need * 2) :
	    DEF_MAX_CELLS;
	return 0;
}

/*
 * Back every page of fd now.  tmpfs gives a page on first touch, and one
 * it cannot give is a SIGBUS, in the broker or in a worker, long after the
 * object was made; posix_fallocate fails at once instead, and tmpfs takes
 * back what it gave.  `what': "create" or "restore", for the message.
 */
static int
reserve(int fd, const char *name, size_t size, const char *what)
{
	struct statvfs vfs;
	int e;

	while ((e = posix_fallocate(fd, 0, (off_t)size)) == EINTR)
		;
	if (e == 0)
		return 0;
	if (e == ENOSPC && fstatvfs(fd, &vfs) == 0)
		log_warnx("cannot %s /dev/shm%s: it needs %zu bytes, /dev/shm "
		    "has %llu free: %s; free some, or make /dev/shm larger "
		    "(mount -o remount,size=...)", what, name, size,
		    (unsigned long long)vfs.f_bavail * vfs.f_frsize,
		    strerror(e));
	else
		log_warnx("cannot %s /dev/shm%s (%zu bytes): %s", what, name,
		    size, strerror(e));
	return -e;
}

/*
 * Open one object of the segment, `kind', and map it.  create: make it,
 * mode `mode', `size' bytes, all of them backed.  Otherwise attach to the
 * one there, which must be ours and no wider than `mode' (own_check, on
 * the fd we map, not on a path); size 0 takes the size it has, another
 * puts that size back if a client cut or grew it.  Every failure but a
 * missing object (-ENOENT) and an empty one (-ENODATA: a broker died
 * making it) is logged, naming the object; a failed create leaves nothing.
 */
static int
map_object(const char *name, enum own_kind kind, int create, mode_t mode,
    size_t size, int *fdp, void **pp, size_t *sizep)
{
	struct stat st;
	void *p;
	int fd, r;

	/* O_NOFOLLOW: a symlink someone planted in /dev/shm is not ours. */
	fd = shm_open(name, O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ?
	    O_CREAT | O_EXCL : 0), mode);
	if (fd < 0) {
		r = -errno;
		if (r != -ENOENT || create)
			own_explain(name, create ? "create" : "open", -r);
		return r;
	}
	if (create) {
		/* shm_open's mode went through the umask: fchmod to ours. */
		if (fchmod(fd, mode) < 0) {
			r = -errno;
			log_warn("chmod /dev/shm%s", name);
			goto out_unlink;
		}
		if ((r = reserve(fd, name, size, "create")) < 0)
			goto out_unlink;
	} else {
		if ((r = own_check(fd, name, mode, kind)) < 0)
			goto out_close;
		if (fstat(fd, &st) < 0) {
			r = -errno;
			log_warn("/dev/shm%s", name);
			goto out_close;
		}
		if (size == 0 && st.st_size == 0) {
			r = -ENODATA;
			goto out_close;
		}
		if (size == 0)
			size = (size_t)st.st_size;
		else if ((size_t)st.st_size != size) {
			/* A client cut it: put the size back, cut part zero. */
			log_warnx("/dev/shm%s has %llu bytes, not %zu: "
			    "restored", name, (unsigned long long)st.st_size,
			    size);
			if (ftruncate(fd, (off_t)size) < 0) {
				r = -errno;
				log_warn("truncate /dev/shm%s", name);
				goto out_close;
			}
			if ((r = reserve(fd, name, size, "restore")) < 0)
				goto out_close;
		}
	}
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		r = -errno;
		log_warn("mmap /dev/shm%s", name);
		if (create)
			goto out_unlink;
		goto out_close;
	}
	*fdp = fd;
	*pp = p;
	*sizep = size;
	return 0;

out_unlink:
	shm_unlink(name);
out_close:
	close(fd);
	return r;
}

static int
alloc_private(struct broker *b)
{
	const struct seg_header *h = b->m.hdr;

	b->keys = calloc(h->max_keys, sizeof(*b->keys));
	b->lims = calloc(h->max_limits, sizeof(*b->lims));
	b->cell_used = calloc(h->max_cells, 1);
	b->holds = calloc(h->max_limits, sizeof(*b->holds));
	b->lim_first = calloc(h->max_keys + 1, sizeof(*b->lim_first));
	b->lim_ids = calloc(h->max_limits, sizeof(*b->lim_ids));
	if (!b->keys || !b->lims || !b->cell_used || !b->holds ||
	    !b->lim_first || !b->lim_ids)
		return -ENOMEM;
	return 0;
}

/* Create both objects for the config's needs; the header goes live last. */
static int
segment_create(struct broker *b, const char *conf, const char *state)
{
	struct seg_header *h;
	struct seg_state *s;
	struct seg_plan plan;
	uint64_t offs[5], cfgsz, hsz, ssz;
	uint32_t mk, ml, mc;
	char err[256];
	void *p;
	int r;

	if ((r = segment_plan(&b->cfg, &plan, err, sizeof(err))) < 0) {
		log_warnx("%s", err);
		return r;
	}
	mk = plan.max_keys;
	ml = plan.max_limits;
	mc = plan.max_cells;
	cfgsz = seg_config_bytes(mk, ml);
	hsz = sizeof(*h) + 2 * ((cfgsz + SEG_LINE - 1) / SEG_LINE * SEG_LINE);
	ssz = seg_state_bytes(b->cfg.max_clients, mk, ml, mc, offs);

	if ((r = map_object(state, OWN_STATE, 1, b->cfg.mode, ssz,
	    &b->m.state_fd, &p, &b->m.state_size)) < 0)
		return r;
	b->m.state = p;
	(void)own_apply(b->m.state_fd, state, 0, b->cfg.has_group,
	    b->cfg.group);
	/* The config object: 0644, so clients can map it only to read. */
	if ((r = map_object(conf, OWN_CONF, 1, 0644, hsz, &b->m.hdr_fd, &p,
	    &b->m.hdr_size)) < 0)
		goto out_unlink_state;
	b->m.hdr = h = p;
	h->version = TG_SEG_VERSION;
	h->size = hsz;
	h->state_size = ssz;
	h->config_size = cfgsz;
	h->off_config[0] = sizeof(*h);
	h->off_config[1] = sizeof(*h) + (cfgsz + SEG_LINE - 1) / SEG_LINE *
	    SEG_LINE;
	h->max_clients = b->cfg.max_clients;
	h->max_keys = mk;
	h->max_limits = ml;
	h->max_cells = mc;
	h->off_clients = offs[0];
	h->off_keys = offs[1];
	h->off_limits = offs[2];
	h->off_cells = offs[3];
	h->off_grants = offs[4];
	h->created_ns = now_ns();
	s = (struct seg_state *)b->m.state;
	s->version = TG_SEG_VERSION;
	s->size = ssz;
	atomic_store_explicit(&s->magic, TG_SEG_MAGIC, memory_order_release);
	/* magic stays 0 until the first config is published: see publish. */
	log_info("created segment %s: %u clients, %u keys, %u limits, "
	    "%u cells, %llu + %llu bytes", b->cfg.segment, h->max_clients, mk,
	    ml, mc, (unsigned long long)hsz, (unsigned long long)ssz);
	if ((r = alloc_private(b)) < 0)
		goto out_unlink_conf;
	return 0;

	/* A segment we could not finish is no segment: leave nothing. */
out_unlink_conf:
	munmap(b->m.hdr, b->m.hdr_size);
	close(b->m.hdr_fd);
	shm_unlink(conf);
	b->m.hdr = NULL;
	b->m.hdr_fd = -1;
out_unlink_state:
	munmap(b->m.state, b->m.state_size);
	close(b->m.state_fd);
	shm_unlink(state);
	b->m.state = NULL;
	b->m.state_fd = -1;
	if (r == -ENOSPC)
		log_warnx("segment %s needs %llu bytes of /dev/shm in all "
		    "(%llu + %llu)", b->cfg.segment, (unsigned long long)(hsz +
		    ssz), (unsigned long long)hsz, (unsigned long long)ssz);
	return r;
}

/* Rebuild what the broker knows from the live config of a segment. */
static int
segment_adopt(struct broker *b)
{
	struct seg_header *h = b->m.hdr;
	/* Relaxed: the copy a dead broker published is all written. */
	struct seg_cfg *c = seg_cfg(&b->m, atomic_load_explicit(
	    &h->config_idx, memory_order_relaxed));
	const struct seg_key *k = seg_keys(c);
	const struct seg_limit *l = seg_limits(&b->m, c);
	int r;

	if ((r = alloc_private(b)) < 0)
		return r;
	for (uint32_t i = 0; i < h->max_keys; i++) {
		b->keys[i].gen = k[i].gen;
		b->keys[i].parent = k[i].parent < h->max_keys ? k[i].parent :
		    SEG_NONE;
		b->keys[i].learn = (k[i].flags & SEG_KEY_LEARN) != 0;
		b->keys[i].refund_rejected = (k[i].flags &
		    SEG_KEY_REFUND_REJECTED) != 0;
		b->keys[i].max_pause_ns = k[i].max_pause_ns;
		b->keys[i].backoff_min_ns = k[i].backoff_min_ns;
		b->keys[i].backoff_max_ns = k[i].backoff_max_ns;
		if (k[i].gen != 0)
			memcpy(b->keys[i].name, k[i].name, SEG_NAME_MAX - 1);
	}
	for (uint32_t i = 0; i < h->max_limits; i++) {
		struct lim_slot *ls = &b->lims[i];

		if (l[i].kind == 0)
			continue;
		if (l[i].key >= h->max_keys || (uint64_t)l[i].cells +
		    l[i].ncells > h->max_cells) {
			log_warnx("segment limit %u is malformed: dropped", i);
			continue;
		}
		ls->used = 1;
		ls->key = l[i].key;
		ls->spec.kind = l[i].kind;
		ls->spec.unit = l[i].unit;
		ls->spec.adaptive = (l[i].flags & LIMIT_F_ADAPTIVE) != 0;
		ls->spec.count = l[i].count;
		ls->spec.period_ns = l[i].period_ns;
		ls->spec.burst = l[i].burst;
		ls->spec.cooldown_ns = l[i].cooldown_ns;
		ls->cells = l[i].cells;
		ls->ncells = l[i].ncells;
		/* What the file said, for matching it on the next publish. */
		ls->conf = ls->spec;
		if (l[i].conf_count != 0 && l[i].conf_count != l[i].count) {
			ls->conf.count = l[i].conf_count;
			if (ls->spec.burst == ls->spec.count)
				ls->conf.burst = l[i].conf_count;
			ls->srv_seen = l[i].count;
		}
		memset(b->cell_used + ls->cells, 1, ls->ncells);
		/*
		 * Grown by a reload shortly before we came: reconcile its
		 * old cells from scratch for a quarantine (move_reconcile
		 * finds the copies already made).
		 */
		if (ls->spec.kind == LIM_CONC && l[i].was_ncells != 0 &&
		    (uint64_t)l[i].was_cells + l[i].was_ncells <=
		    h->max_cells && ((uint64_t)l[i].was_cells +
		    l[i].was_ncells <= ls->cells || l[i].was_cells >=
		    (uint64_t)ls->cells + ls->ncells)) {
			struct cell_hold *ch;
			uint32_t n = l[i].was_ncells;

			memset(b->cell_used + l[i].was_cells, 1, n);
			if ((ch = cells_hold(b, l[i].was_cells, n)) == NULL)
				continue;
			ch->carried = calloc(n, sizeof(*ch->carried));
			ch->at = calloc(n, sizeof(*ch->at));
			if (ch->carried == NULL || ch->at == NULL)
				return -ENOMEM;
			ch->lim = (uint16_t)i;
			ch->to = ls->cells;
			ch->nto = ls->ncells;
			ls->was_cells = l[i].was_cells;
			ls->was_ncells = n;
		}
	}
	return 0;
}

int
segment_open(struct broker *b)
{
	char conf[256], state[256];
	struct seg_header *h;
	void *p;
	int r;

	b->m.hdr_fd = b->m.state_fd = -1;
	if ((r = seg_names(b->cfg.segment, conf, state, sizeof(conf))) < 0)
		return r;
	/*
	 * main.c took the broker's lock first: no other broker removes or
	 * makes these objects while we do.
	 */
	if (b->reset && ((r = own_unlink(conf)) < 0 ||
	    (r = own_unlink(state)) < 0))
		return r;
	r = map_object(conf, OWN_CONF, 0, OWN_CONF_MODE_MAX, 0, &b->m.hdr_fd,
	    &p, &b->m.hdr_size);
	if (r == 0 && b->m.hdr_size >= sizeof(*h) &&
	    atomic_load_explicit(&((struct seg_header *)p)->magic,
	    memory_order_relaxed) == 0) {
		/*
		 * The first publish sets magic, and no client maps a header
		 * without it; under our lock, no broker is making this one.
		 */
		munmap(p, b->m.hdr_size);
		close(b->m.hdr_fd);
		b->m.hdr_fd = -1;
		r = -ENODATA;
	}
	if (r == -ENODATA) {
		log_warnx("segment %s was left half made by a broker that died "
		    "making it: made again", b->cfg.segment);
		if ((r = own_unlink(conf)) < 0)
			return r;
		r = -ENOENT;
	}
	if (r == -ENOENT) {
		/* A state object alone is a leftover. */
		if ((r = own_unlink(state)) < 0)
			return r;
		return segment_create(b, conf, state);
	}
	if (r < 0)
		return r;
	b->m.hdr = h = p;
	/*
	 * Relaxed: only a broker writes the header, and none runs now (we
	 * hold the lock); the one that did is gone, its stores all landed.
	 */
	if (b->m.hdr_size < sizeof(*h) || atomic_load_explicit(&h->magic,
	    memory_order_relaxed) !=
	    TG_SEG_MAGIC || h->version != TG_SEG_VERSION) {
		log_warnx("segment %s exists with another layout (version %u, "
		    "this broker writes %u); stop its clients and start with "
		    "--reset to recreate it", b->cfg.segment,
		    b->m.hdr_size >= sizeof(*h) ? h->version : 0,
		    TG_SEG_VERSION);
		return -EPROTO;
	}
	/* The header first: the state's size is the one it says. */
	if ((r = seg_check(h, b->m.hdr_size, h->state_size)) < 0) {
		log_warnx("segment %s is malformed; start with --reset to "
		    "recreate it", b->cfg.segment);
		return r;
	}
	if ((r = map_object(state, OWN_STATE, 0, b->cfg.mode, h->state_size,
	    &b->m.state_fd, &p, &b->m.state_size)) < 0) {
		if (r == -ENOENT)
			log_warnx("segment %s has no /dev/shm%s; start with "
			    "--reset to recreate it", b->cfg.segment, state);
		return r;
	}
	b->m.state = p;
	/*
	 * The config may have another `group' or `mode' than the one that
	 * made the segment: the workers must find what it says.  (A mode
	 * wider than the config's was refused above: see own_check.)
	 */
	(void)own_apply(b->m.state_fd, state, b->cfg.mode, b->cfg.has_group,
	    b->cfg.group);
	if (h->max_clients != b->cfg.max_clients)
		log_warnx("segment %s keeps its %u client slots; max_clients "
		    "= %u applies when it is recreated", b->cfg.segment,
		    h->max_clients, b->cfg.max_clients);
	log_info("attached to segment %s (config generation %llu)",
	    b->cfg.segment, (unsigned long long)seg_cfg(&b->m,
	    atomic_load_explicit(&h->config_idx, memory_order_relaxed))->gen);
	return segment_adopt(b);
}

/*
 * After the first publish failed: a segment that no client could attach
 * to yet (magic is set by the first publish, last) goes, so that it does
 * not stand in the way of the next start as one of another layout.
 */
void
segment_discard(struct broker *b)
{
	char conf[256], state[256];

	if (b->m.hdr == NULL || atomic_load_explicit(&b->m.hdr->magic,
	    memory_order_relaxed) == TG_SEG_MAGIC ||
	    seg_names(b->cfg.segment, conf, state, sizeof(conf)) < 0)
		return;
	shm_unlink(conf);
	shm_unlink(state);
}

/*
 * Key names to ids, for a publish: open addressing over a power of two
 * at least twice the ids, 0 empty, else id + 1.  A search per key of the
 * config would make a publish quadratic in keys.
 */
struct key_index {
	uint32_t	*slot;
	uint32_t	mask;
};

static uint32_t
name_hash(const char *s)
{
	uint32_t h = 2166136261u;	/* FNV-1a */

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

/* Index every named id of keys[0..n), live or quarantined; 0, -ENOMEM. */
static int
key_index_build(struct key_index *x, const struct key_slot *keys,
    uint32_t n)
{
	uint32_t size = 16, i;

	while (size < 2 * n)
		size <<= 1;
	if ((x->slot = calloc(size, sizeof(*x->slot))) == NULL)
		return -ENOMEM;
	x->mask = size - 1;
	for (uint32_t id = 0; id < n; id++) {
		if (keys[id].name[0] == '\0')
			continue;
		for (i = name_hash(keys[id].name) & x->mask; x->slot[i] != 0;
		    i = (i + 1) & x->mask)
			;
		x->slot[i] = id + 1;
	}
	return 0;
}

/* The id of key `name', live or quarantined, or -1. */
static int
key_find(const struct key_index *x, const struct key_slot *keys,
    const char *name)
{
	for (uint32_t i = name_hash(name) & x->mask; x->slot[i] != 0;
	    i = (i + 1) & x->mask)
		if (strcmp(keys[x->slot[i] - 1].name, name) == 0)
			return (int)x->slot[i] - 1;
	return -1;
}

/*
 * The used limits of lims[0..nl) by owning key, ids ascending: those of
 * key k are ids[first[k]..first[k + 1]) (a counting sort, first has
 * nk + 1 entries).  A scan of every limit per key would make a publish
 * and cfg_write quadratic.
 */
static void
lims_by_key(const struct lim_slot *lims, uint32_t nl, uint32_t nk,
    uint32_t *first, uint16_t *ids)
{
	memset(first, 0, (nk + 1) * sizeof(*first));
	for (uint32_t x = 0; x < nl; x++)
		if (lims[x].used && lims[x].key < nk)
			first[lims[x].key + 1]++;
	for (uint32_t k = 0; k < nk; k++)
		first[k + 1] += first[k];
	/* Fill with first[k] as k's cursor: it ends at k + 1's start. */
	for (uint32_t x = 0; x < nl; x++)
		if (lims[x].used && lims[x].key < nk)
			ids[first[lims[x].key]++] = (uint16_t)x;
	memmove(first + 1, first, nk * sizeof(*first));
	first[0] = 0;
}

/* A free id, next-fit from *next so that a freed id is reused late. */
static int
key_alloc(struct key_slot *keys, uint32_t n, uint16_t *next)
{
	for (uint32_t k = 0; k < n; k++) {
		uint32_t i = (*next + k) % n;

		if (keys[i].name[0] == '\0' && keys[i].quarantine == 0) {
			*next = (uint16_t)((i + 1) % n);
			return (int)i;
		}
	}
	return -1;
}

static int
lim_alloc(struct lim_slot *lims, uint32_t n, uint16_t *next)
{
	for (uint32_t k = 0; k < n; k++) {
		uint32_t i = (*next + k) % n;

		if (!lims[i].used && lims[i].quarantine == 0) {
			*next = (uint16_t)((i + 1) % n);
			return (int)i;
		}
	}
	return -1;
}

/*
 * First fit of n free pool words from *from, then from the start;
 * returns the first, or -1.  *from moves past what it found, so that a
 * publish allocating for many limits scans the pool about once.
 */
static int64_t
cells_alloc(uint8_t *used, uint32_t max, uint32_t n, uint32_t *from)
{
	uint32_t run = 0;

	if (n == 0)
		return 0;
	for (int pass = 0; pass < 2; pass++) {
		run = 0;
		for (uint32_t i = pass ? 0 : *from; i < max; i++) {
			run = used[i] ? 0 : run + 1;
			if (run == n) {
				memset(used + i + 1 - n, 1, n);
				*from = i + 1;
				return (int64_t)(i + 1 - n);
			}
		}
	}
	return -1;
}

/*
 * Same limit, same state: everything but cooldown and adaptive match.
 * a is what the file said before (lim_slot.conf), not a learned value.
 */
static int
spec_same(const struct limit_spec *a, const struct limit_spec *b)
{
	return a->kind == b->kind && a->unit == b->unit &&
	    a->count == b->count && a->period_ns == b->period_ns &&
	    a->burst == b->burst;
}

/* Write config copy idx from what the broker knows, under its seqlock. */
static void
cfg_write(struct broker *b, unsigned idx, uint64_t gen)
{
	const struct seg_header *h = b->m.hdr;
	struct seg_cfg *c = seg_cfg(&b->m, idx);
	struct seg_key *k = seg_keys(c);
	struct seg_limit *l = seg_limits(&b->m, c);
	uint32_t seq = atomic_load_explicit(&c->seq, memory_order_relaxed);
	uint32_t nkeys = 0, nlims = 0;

	if (seq & 1)		/* a broker died writing it */
		seq++;
	atomic_store_explicit(&c->seq, seq + 1, memory_order_relaxed);
	/* Release fence: the odd seq is visible before any write below. */
	atomic_thread_fence(memory_order_release);
	memset(k, 0, (size_t)h->max_keys * sizeof(*k));
	memset(l, 0, (size_t)h->max_limits * sizeof(*l));
	for (uint32_t i = 0; i < h->max_limits; i++) {
		const struct lim_slot *s = &b->lims[i];

		if (!s->used)
			continue;
		nlims++;
		l[i].kind = s->spec.kind;
		l[i].unit = s->spec.unit;
		l[i].flags = lim_adaptive(b, s) ? LIMIT_F_ADAPTIVE : 0;
		l[i].key = s->key;
		l[i].count = s->spec.count;
		l[i].period_ns = s->spec.period_ns;
		l[i].burst = s->spec.burst;
		l[i].cooldown_ns = s->spec.cooldown_ns;
		if (s->spec.kind == LIM_RATE)
			l[i].tau_ns = gcra_tau_margin_ns(s->spec.burst,
			    s->spec.period_ns, s->spec.count,
			    limit_margin_ns(&s->spec));
		else if (s->spec.kind == LIM_WINDOW)
			l[i].tau_ns = win_sub_ns(s->spec.period_ns);
		else if (s->spec.kind == LIM_CONC) {
			l[i].was_cells = s->was_cells;
			l[i].was_ncells = s->was_ncells;
		}
		l[i].cells = s->cells;
		l[i].ncells = s->ncells;
		l[i].conf_count = s->conf.count;
	}
	/* Keys: own limits in id order, then each ancestor's. */
	lims_by_key(b->lims, h->max_limits, h->max_keys, b->lim_first,
	    b->lim_ids);
	for (uint32_t i = 0; i < h->max_keys; i++) {
		struct seg_key *kk = &k[i];
		uint32_t at = i;

		if (b->keys[i].name[0] == '\0' || b->keys[i].quarantine)
			continue;
		nkeys++;
		memcpy(kk->name, b->keys[i].name, SEG_NAME_MAX);
		kk->gen = b->keys[i].gen;
		kk->parent = SEG_NONE;
		kk->flags = (b->keys[i].learn ? SEG_KEY_LEARN : 0) |
		    (b->keys[i].refund_rejected ? SEG_KEY_REFUND_REJECTED : 0);
		kk->max_pause_ns = b->keys[i].max_pause_ns ?
		    b->keys[i].max_pause_ns : CFG_MAX_PAUSE_NS;
		kk->backoff_min_ns = b->keys[i].backoff_min_ns ?
		    b->keys[i].backoff_min_ns : CFG_BACKOFF_MIN_NS;
		kk->backoff_max_ns = b->keys[i].backoff_max_ns ?
		    b->keys[i].backoff_max_ns : CFG_BACKOFF_MAX_NS;
		while (at < h->max_keys && kk->depth < SEG_DEPTH_MAX) {
			kk->kchain[kk->depth++] = (uint16_t)at;
			for (uint32_t j = b->lim_first[at]; j <
			    b->lim_first[at + 1] && kk->nchain < SEG_CHAIN_MAX;
			    j++)
				kk->chain[kk->nchain++] = b->lim_ids[j];
			if (at == i)
				kk->nown = kk->nchain;
			at = b->keys[at].parent;
			if (kk->depth == 1)
				kk->parent = (uint16_t)at;
		}
	}
	c->nkeys = nkeys;
	c->nlimits = nlims;
	c->gen = gen;
	/* Release: a reader that sees the even seq sees every write above. */
	atomic_store_explicit(&c->seq, seq + 2, memory_order_release);
}

/*
 * Resizing a concurrency limit.  A shrink, and a grow within the cells
 * it has, change only its count: lease_take counts the held cells, so
 * the leases in flight stay where they are and nothing is granted until
 * fewer than the new count are held.  A grow beyond them moves it to
 * count + old cells new cells, and the old cells are held for
 * QUARANTINE_TICKS, since a client that read the config before the flip
 * may still take or release there:
 *
 * Before the flip, move_begin copies each lease held in an old cell to
 * the same index of the new cells, and retires each free old cell
 * (LEASE_SEALED: a taker there reads the config again).  An old cell can
 * then be taken only after its holder released it there, and the
 * released lease's copy, still in the new cells, stands for the taker's:
 * the new cells count every lease in flight all along, so a taker of the
 * new config is as exact as lease_take, and one of the old config is
 * admitted by the old count only to replace a lease.
 *
 * Every tick after, move_reconcile brings the copies in line: a lease
 * released in its old cell frees its copy, one released through the new
 * config (its copy freed) retires its old cell, and a lease taken in an
 * old cell takes the copy over (or, if a reclaim freed that copy, has a
 * free cell claimed for it).  The config says where the old cells are
 * (seg_limit.was_cells) so that a release of such a lease, before the
 * broker got to it, finds it.  Once the quarantine ends, every lease
 * left in the old cells is in the new ones under its own value, where
 * its release finds it.
 *
 * Each old cell is cell_hold.carried[i] into at[i]; the new cells have
 * room for a copy of every old cell besides count leases of their own.
 */
static void
move_begin(struct broker *b, struct cell_hold *h)
{
	_Atomic uint64_t *old = &seg_cells(&b->m)[h->first];
	_Atomic uint64_t *to = &seg_cells(&b->m)[h->to];
	uint64_t v;

	/* Relaxed: nobody reads the new cells before the flip publishes. */
	for (uint32_t i = 0; i < h->nto; i++)
		atomic_store_explicit(&to[i], 0, memory_order_relaxed);
	for (uint32_t i = 0; i < h->n; i++) {
		/* seq_cst, as every access to lease cells (lease.c). */
		v = atomic_load_explicit(&old[i], memory_order_seq_cst);
		while (v == 0 && !atomic_compare_exchange_strong_explicit(
		    &old[i], &v, LEASE_SEALED, memory_order_seq_cst,
		    memory_order_seq_cst))
			;
		h->carried[i] = v == LEASE_SEALED ? 0 : v;
		h->at[i] = i;
		if (h->carried[i] != 0)
			atomic_store_explicit(&to[i], v, memory_order_relaxed);
	}
}

/* Whether lease value v names a client slot that is live. */
static int
lease_owned(struct broker *b, uint64_t v)
{
	uint32_t slot = LEASE_SLOT(v);

	/* Relaxed: guard.c's reading of an orphan, and the same race. */
	return slot < b->m.hdr->max_clients && atomic_load_explicit(
	    &seg_clients(&b->m)[slot].owner, memory_order_relaxed) != 0;
}

/* A tick of a move: see above.  Returns whether it freed a copy. */
static int
move_reconcile(struct broker *b, struct cell_hold *h)
{
	_Atomic uint64_t *old = &seg_cells(&b->m)[h->first];
	_Atomic uint64_t *to = &seg_cells(&b->m)[h->to];
	struct seg_lstate *ls = &seg_lstates(&b->m)[h->lim];
	int freed = 0;

	/* Every access seq_cst, as every access to lease cells (lease.c). */
	for (uint32_t i = 0; i < h->n; i++) {
		uint64_t c = h->carried[i], v, e;
		uint32_t cell;

		v = atomic_load_explicit(&old[i], memory_order_seq_cst);
		if (v == LEASE_SEALED)
			continue;
		if (v != 0 && v == c) {
			/* In flight, unless released through its copy. */
			if (atomic_load_explicit(&to[h->at[i]],
			    memory_order_seq_cst) == c)
				continue;
			if (atomic_compare_exchange_strong_explicit(&old[i], &v,
			    LEASE_SEALED, memory_order_seq_cst,
			    memory_order_seq_cst))
				h->carried[i] = 0;
			continue;
		}
		if (v == 0 || !lease_owned(b, v)) {
			/*
			 * Released there (or its client is gone, as guard.c
			 * judges an orphan): retire the cell first, then
			 * free the copy, so that a claim in between keeps
			 * the copy, below.
			 */
			if (atomic_compare_exchange_strong_explicit(&old[i], &v,
			    LEASE_SEALED, memory_order_seq_cst,
			    memory_order_seq_cst)) {
				e = c;
				if (c != 0 &&
				    atomic_compare_exchange_strong_explicit(
				    &to[h->at[i]], &e, 0, memory_order_seq_cst,
				    memory_order_relaxed))
					freed = 1;
				h->carried[i] = 0;
				continue;
			}
			if (v == LEASE_SEALED || v == c)
				continue;
		}
		/* Taken there since the copy: it takes the copy over. */
		e = c;
		if (c != 0 && atomic_compare_exchange_strong_explicit(
		    &to[h->at[i]], &e, v, memory_order_seq_cst,
		    memory_order_relaxed)) {
			h->carried[i] = v;
			continue;
		}
		/* No copy (a reclaim freed it, or a broker restarted). */
		h->carried[i] = 0;
		for (cell = 0; cell < h->nto; cell++)
			if (atomic_load_explicit(&to[cell],
			    memory_order_seq_cst) == v)
				break;
		/* Any free cell: it is in flight already, not admitted now. */
		if (cell < h->nto || lease_take(ls, to, h->nto, h->nto, v, i,
		    &cell) == 0) {
			h->carried[i] = v;
			h->at[i] = cell;
		}
	}
	return freed;
}

/*
 * Put freed pool words on hold until no client can still be using them.
 * Returns the hold, or NULL if there was no room and they are free now.
 */
static struct cell_hold *
cells_hold(struct broker *b, uint32_t first, uint32_t n)
{
	if (n == 0)
		return NULL;
	/* holds[0..nholds) are all held: no search, as segment_tick. */
	if (b->nholds < b->m.hdr->max_limits) {
		b->holds[b->nholds] = (struct cell_hold){ first, n,
		    QUARANTINE_TICKS, SEG_NONE, 0, 0, NULL, NULL };
		return &b->holds[b->nholds++];
	}
	memset(b->cell_used + first, 0, n);	/* no room to wait: free now */
	return NULL;
}

/*
 * Make config copy idx the live one.  seq_cst, not only the release that
 * seg_read_begin's acquire pairs with: a taker orders its check that the
 * config did not change under its take against it (client.c).
 */
static void
cfg_flip(struct broker *b, unsigned idx)
{
	atomic_store_explicit(&b->m.hdr->config_idx, idx,
	    memory_order_seq_cst);
}

/* Write what the broker knows into the spare config copy and flip to it. */
void
segment_republish(struct broker *b)
{
	unsigned idx;

	idx = atomic_load_explicit(&b->m.hdr->config_idx,
	    memory_order_relaxed) ^ 1;
	cfg_write(b, idx, seg_cfg(&b->m, idx ^ 1)->gen + 1);
	cfg_flip(b, idx);
}

int
segment_publish(struct broker *b, const struct config *cfg, char *err,
    size_t errlen)
{
	const struct seg_header *h = b->m.hdr;
	struct key_slot *keys = NULL;
	struct lim_slot *lims = NULL;
	struct key_index names = { NULL, 0 };
	uint8_t *used = NULL, *live = NULL;
	int *kid = NULL, *lid = NULL, *matched = NULL, r = -ENOSPC;
	uint16_t next_key = b->next_key, next_lim = b->next_lim;
	uint32_t *lfirst = b->lim_first, cursor = 0;
	uint16_t *lids = b->lim_ids;
	/* Concurrency limits that grow out of their cells: see move_begin. */
	struct { uint32_t id, from, n, to, nto; uint64_t *carried;
	    uint32_t *at; struct cell_hold *hold; } *moves = NULL;
	unsigned nmoves = 0, idx;

	/* What no segment holds: a count too large for 32 bits, say. */
	if ((r = segment_plan(cfg, &(struct seg_plan){ 0 }, err,
	    errlen)) < 0)
		return r;
	r = -ENOSPC;
	keys = malloc(h->max_keys * sizeof(*keys));
	lims = malloc(h->max_limits * sizeof(*lims));
	used = malloc(h->max_cells);
	kid = calloc(cfg->nkeys + 1, sizeof(*kid));
	lid = calloc(cfg->nlimits + 1, sizeof(*lid));
	matched = calloc(h->max_limits, sizeof(*matched));
	moves = calloc(cfg->nlimits + 1, sizeof(*moves));
	live = calloc(h->max_keys, 1);
	if (!keys || !lims || !used || !kid || !lid || !matched || !moves ||
	    !live || key_index_build(&names, b->keys, h->max_keys) < 0) {
		snprintf(err, errlen, "out of memory");
		r = -ENOMEM;
		goto out;
	}
	/* Work on copies: a config that does not fit changes nothing. */
	memcpy(keys, b->keys, h->max_keys * sizeof(*keys));
	memcpy(lims, b->lims, h->max_limits * sizeof(*lims));
	memcpy(used, b->cell_used, h->max_cells);

	/*
	 * Names are unique in a config, so a name this loop gives a fresh
	 * id is never looked up again: the index of the old names serves.
	 */
	for (unsigned i = 0; i < cfg->nkeys; i++) {
		const struct key_spec *ks = &cfg->keys[i];
		int id = key_find(&names, keys, ks->name);

		if (id >= 0 && keys[id].quarantine) {
			keys[id].quarantine = 0;	/* back: a new handle */
			if (++keys[id].gen == 0)
				keys[id].gen = 1;
		}
		if (id < 0) {
			if ((id = key_alloc(keys, h->max_keys,
			    &next_key)) < 0) {
				snprintf(err, errlen, "more than %u keys: "
				    "restart with --reset to grow the segment",
				    h->max_keys);
				goto out;
			}
			memcpy(keys[id].name, ks->name, SEG_NAME_MAX);
			if (++keys[id].gen == 0)
				keys[id].gen = 1;
			/* A fresh id: no pause or counts of its last owner. */
			memset(&seg_kstates(&b->m)[id], 0,
			    sizeof(struct seg_kstate));
			seg_grant_zero(&b->m, (uint64_t)id);
		}
		kid[i] = id;
		live[id] = 1;
		keys[id].learn = ks->learn;
		keys[id].refund_rejected = ks->refund_rejected;
		keys[id].max_pause_ns = ks->max_pause_ns;
		keys[id].backoff_min_ns = ks->backoff_min_ns;
		keys[id].backoff_max_ns = ks->backoff_max_ns;
		/* Parents come first in cfg->keys, so kid[parent] is set. */
		keys[id].parent = ks->parent >= 0 ? (uint16_t)kid[ks->parent] :
		    SEG_NONE;
	}
	/* Keys that are gone: hidden now, their id free after quarantine. */
	for (uint32_t id = 0; id < h->max_keys; id++)
		if (!live[id] && keys[id].name[0] && !keys[id].quarantine)
			keys[id].quarantine = QUARANTINE_TICKS;
	/*
	 * Limits: an unchanged one keeps its id and so its state.  Only the
	 * key's own are candidates (lims_by_key; cfg_write rebuilds these
	 * arrays from what is committed before it reads them).
	 */
	lims_by_key(lims, h->max_limits, h->max_keys, lfirst, lids);
	for (unsigned i = 0; i < cfg->nkeys; i++) {
		const struct key_spec *ks = &cfg->keys[i];
		uint32_t from = lfirst[kid[i]], to = lfirst[kid[i] + 1];

		for (unsigned j = ks->first_limit; j < ks->first_limit +
		    ks->nlimits; j++) {
			const struct limit_spec *sp = &cfg->limits[j];
			int id = -1;

			for (uint32_t y = from; y < to && id < 0; y++)
				if (!matched[lids[y]] &&
				    spec_same(&lims[lids[y]].conf, sp))
					id = lids[y];
			/* A concurrency limit that changed size stays. */
			for (uint32_t y = from; y < to && id < 0 &&
			    sp->kind == LIM_CONC; y++)
				if (!matched[lids[y]] &&
				    lims[lids[y]].spec.kind == LIM_CONC)
					id = lids[y];
			lid[j] = id;
			if (id >= 0)
				matched[id] = 1;
		}
	}
	for (uint32_t x = 0; x < h->max_limits; x++)
		if (lims[x].used && !matched[x]) {
			lims[x].used = 0;
			lims[x].quarantine = QUARANTINE_TICKS;
		}
	for (unsigned i = 0; i < cfg->nkeys; i++) {
		const struct key_spec *ks = &cfg->keys[i];

		for (unsigned j = ks->first_limit; j < ks->first_limit +
		    ks->nlimits; j++) {
			const struct limit_spec *sp = &cfg->limits[j];
			uint32_t need = (uint32_t)spec_cells(sp);
			int64_t first;
			int id = lid[j];

			if (id >= 0 && sp->kind == LIM_CONC &&
			    sp->count <= lims[id].ncells) {
				/*
				 * Resized within its cells: the count alone
				 * (see move_begin).  Sleepers may fit now.
				 */
				if (sp->count > lims[id].spec.count)
					lims[id].rewake = 1;
				lims[id].spec = *sp;
				lims[id].conf = *sp;
				continue;
			}
			/* Grown: room for the old cells' copies too. */
			if (id >= 0 && sp->kind == LIM_CONC)
				need += lims[id].ncells;
			if (id >= 0 && lims[id].ncells == need) {
				struct limit_spec was = lims[id].spec;

				lims[id].spec = *sp;	/* cooldown, adaptive */
				lims[id].conf = *sp;
				/* A learned count stays while the key learns. */
				if (keys[kid[i]].learn && was.count != sp->count) {
					lims[id].spec.count = was.count;
					lims[id].spec.burst = was.burst;
				}
				continue;
			}
			if (id < 0 && (id = lim_alloc(lims, h->max_limits,
			    &next_lim)) < 0) {
				snprintf(err, errlen, "more than %u limits: "
				    "restart with --reset to grow the segment",
				    h->max_limits);
				goto out;
			}
			if ((first = cells_alloc(used, h->max_cells,
			    need, &cursor)) < 0) {
				snprintf(err, errlen, "the cell pool (%u words)"
				    " is full: restart with --reset to grow "
				    "the segment", h->max_cells);
				goto out;
			}
			if (lid[j] >= 0) {	/* a grown concurrency */
				moves[nmoves].id = (uint32_t)id;
				moves[nmoves].from = lims[id].cells;
				moves[nmoves].n = lims[id].ncells;
				moves[nmoves].to = (uint32_t)first;
				moves[nmoves].nto = need;
				moves[nmoves].carried = calloc(
				    lims[id].ncells, sizeof(uint64_t));
				moves[nmoves].at = calloc(lims[id].ncells,
				    sizeof(uint32_t));
				if (moves[nmoves].carried == NULL ||
				    moves[nmoves].at == NULL) {
					nmoves++;
					snprintf(err, errlen, "out of memory");
					r = -ENOMEM;
					goto out;
				}
				nmoves++;
				lims[id].was_cells = lims[id].cells;
				lims[id].was_ncells = lims[id].ncells;
			} else {
				lid[j] = id;
				lims[id].was_cells = lims[id].was_ncells = 0;
			}
			lims[id].used = 1;
			lims[id].quarantine = 0;
			lims[id].key = (uint16_t)kid[i];
			lims[id].spec = *sp;
			lims[id].conf = *sp;
			lims[id].srv_seen = 0;
			/* Its state is zeroed below: AIMD counts from zero. */
			lims[id].aimd_on = lid[j] == id && !matched[id];
			lims[id].eff = (uint32_t)sp->count;
			lims[id].acc = lims[id].last_ok = 0;
			lims[id].last_limited = 0;
			lims[id].cells = (uint32_t)first;
			lims[id].ncells = need;
			if (lid[j] == id && !matched[id]) {
				/* New state: a full bucket, an empty ring. */
				struct seg_lstate *st =
				    &seg_lstates(&b->m)[id];

				memset(st, 0, sizeof(*st));
				seg_grant_zero(&b->m, (uint64_t)h->max_keys +
				    (uint64_t)id);
				memset(&seg_cells(&b->m)[first], 0,
				    need * sizeof(uint64_t));
			}
		}
	}

	/* It fits: commit, write the spare copy, move leases, flip. */
	for (uint32_t x = 0; x < h->max_limits; x++) {
		/* Cells of limits gone or moved wait out their quarantine. */
		if (b->lims[x].used && (!lims[x].used ||
		    lims[x].cells != b->lims[x].cells))
			cells_hold(b, b->lims[x].cells, b->lims[x].ncells);
	}
	/* The hold of a grown limit's old cells reconciles them too. */
	for (unsigned i = 0; i < nmoves; i++)
		for (unsigned j = 0; j < b->nholds; j++) {
			struct cell_hold *ch = &b->holds[j];

			if (ch->n == 0 || ch->first != moves[i].from ||
			    ch->lim != SEG_NONE)
				continue;
			ch->lim = (uint16_t)moves[i].id;
			ch->to = moves[i].to;
			ch->nto = moves[i].nto;
			ch->carried = moves[i].carried;
			ch->at = moves[i].at;
			moves[i].carried = NULL;
			moves[i].at = NULL;
			moves[i].hold = ch;
			break;
		}
	memcpy(b->keys, keys, h->max_keys * sizeof(*keys));
	memcpy(b->lims, lims, h->max_limits * sizeof(*lims));
	/* Held runs stay marked used in `used' until they are released. */
	memcpy(b->cell_used, used, h->max_cells);
	for (unsigned i = 0; i < b->nholds; i++)
		if (b->holds[i].n)
			memset(b->cell_used + b->holds[i].first, 1,
			    b->holds[i].n);
	b->next_key = next_key;
	b->next_lim = next_lim;

	idx = atomic_load_explicit(&h->config_idx, memory_order_relaxed) ^ 1;
	cfg_write(b, idx, seg_cfg(&b->m, idx ^ 1)->gen + 1);
	/*
	 * Copy and retire the old cells last before the flip: the time a
	 * taker of the old config spends refused (lease.h) is the shortest.
	 */
	for (unsigned i = 0; i < nmoves; i++) {
		struct cell_hold tmp = { moves[i].from, moves[i].n, 0,
		    (uint16_t)moves[i].id, moves[i].to, moves[i].nto,
		    moves[i].carried, moves[i].at };

		if (moves[i].hold == NULL)	/* no room to hold them */
			log_warnx("[%s] concurrency grown: leases taken in "
			    "its old cells during the reload may be lost",
			    b->keys[b->lims[moves[i].id].key].name);
		move_begin(b, moves[i].hold != NULL ? moves[i].hold : &tmp);
	}
	cfg_flip(b, idx);
	/* Sleepers on the old size retry against the new one. */
	for (unsigned i = 0; i < nmoves; i++)
		lease_wake(&seg_lstates(&b->m)[moves[i].id]);
	for (uint32_t x = 0; x < h->max_limits; x++)
		if (b->lims[x].rewake)
			lease_wake(&seg_lstates(&b->m)[x]);
	/* Release, last: a new segment is usable once it has a config. */
	if (atomic_load_explicit(&b->m.hdr->magic, memory_order_relaxed) !=
	    TG_SEG_MAGIC)
		atomic_store_explicit(&b->m.hdr->magic, TG_SEG_MAGIC,
		    memory_order_release);
	r = 0;
out:
	free(keys);
	free(lims);
	free(used);
	free(kid);
	free(lid);
	free(matched);
	free(live);
	free(names.slot);
	for (unsigned i = 0; i < nmoves; i++) {
		free(moves[i].carried);
		free(moves[i].at);
	}
	free(moves);
	return r;
}

/*
 * Per tick: reconcile the old cells of grown concurrency limits, count
 * quarantines down and free what they held.
 */
void
segment_tick(struct broker *b, uint64_t now)
{
	const struct seg_header *h = b->m.hdr;
	int republish = 0;

	for (uint32_t i = 0; i < h->max_keys; i++)
		if (b->keys[i].quarantine && --b->keys[i].quarantine == 0)
			b->keys[i].name[0] = '\0';
	for (uint32_t i = 0; i < h->max_limits; i++) {
		if (b->lims[i].quarantine)
			b->lims[i].quarantine--;
		/*
		 * Again a tick after the flip: a sleeper that read the old
		 * config may have announced itself after the first wake.
		 */
		if (b->lims[i].rewake) {
			b->lims[i].rewake = 0;
			if (b->lims[i].used)
				lease_wake(&seg_lstates(&b->m)[i]);
		}
	}
	for (unsigned i = 0; i < b->nholds; i++) {
		struct cell_hold *ch = &b->holds[i];
		struct lim_slot *l = ch->lim != SEG_NONE ? &b->lims[ch->lim] :
		    NULL;

		/* The first tick wakes again, as above. */
		if (l != NULL && l->used && (move_reconcile(b, ch) ||
		    ch->quarantine == QUARANTINE_TICKS))
			lease_wake(&seg_lstates(&b->m)[ch->lim]);
		if (--ch->quarantine != 0)
			continue;
		/* Every lease left there is in the new cells: forget them. */
		if (l != NULL && l->was_ncells == ch->n &&
		    l->was_cells == ch->first) {
			l->was_cells = l->was_ncells = 0;
			republish |= l->used;
		}
		memset(b->cell_used + ch->first, 0, ch->n);
		free(ch->carried);
		free(ch->at);
		/* The last takes its place, and is looked at next. */
		*ch = b->holds[--b->nholds];
		i--;
	}
	if (republish)
		segment_republish(b);
	/* Relaxed: a reading of liveness, publishing nothing else. */
	atomic_store_explicit(&b->m.hdr->heartbeat_ns, now,
	    memory_order_relaxed);
}

void
segment_close(struct broker *b)
{
	seg_detach(&b->m);
	free(b->keys);
	free(b->lims);
	free(b->cell_used);
	for (unsigned i = 0; b->holds != NULL && i < b->nholds; i++) {
		free(b->holds[i].carried);
		free(b->holds[i].at);
	}
	free(b->holds);
	free(b->lim_first);
	free(b->lim_ids);
}
