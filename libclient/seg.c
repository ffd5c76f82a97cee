/* seg.c: naming, mapping and checking the shared-memory segment. */
#include <sys/mman.h>
#include <sys/stat.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "seg.h"

static int
name_ok(const char *s)
{
	if (*s == '\0')
		return 0;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '.' && *s != '_' &&
		    *s != '-')
			return 0;
	return 1;
}

int
seg_names(const char *segment, char *conf, char *state, size_t len)
{
	int n;

	if (segment == NULL || !name_ok(segment))
		return -EINVAL;
	n = snprintf(conf, len, "/%s.conf", segment);
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	n = snprintf(state, len, "/%s", segment);
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	return 0;
}

uint64_t
seg_config_bytes(uint32_t max_keys, uint32_t max_limits)
{
	return sizeof(struct seg_cfg) +
	    (uint64_t)max_keys * sizeof(struct seg_key) +
	    (uint64_t)max_limits * sizeof(struct seg_limit);
}

uint64_t
seg_state_bytes(uint32_t max_clients, uint32_t max_keys, uint32_t max_limits,
    uint32_t max_cells, uint64_t offs[5])
{
	uint64_t off = sizeof(struct seg_state);

	offs[0] = off;
	off += (uint64_t)max_clients * sizeof(struct seg_client);
	offs[1] = off;
	off += (uint64_t)max_keys * sizeof(struct seg_kstate);
	offs[2] = off;
	off += (uint64_t)max_limits * sizeof(struct seg_lstate);
	offs[3] = off;
	off += (uint64_t)max_cells * sizeof(uint64_t);
	/* On a line of their own, like every region before them. */
	off = (off + SEG_LINE - 1) & ~(uint64_t)(SEG_LINE - 1);
	offs[4] = off;
	off += SEG_STRIPES * seg_grant_stride(max_keys, max_limits) *
	    sizeof(uint64_t);
	return off;
}

int
seg_check(const struct seg_header *h, size_t hdr_size, size_t state_size)
{
	uint64_t cfg, offs[5], st;

	if (h->max_keys == 0 || h->max_keys > SEG_IDS_MAX ||
	    h->max_limits == 0 || h->max_limits > SEG_IDS_MAX ||
	    h->max_clients == 0 || h->max_clients > SEG_IDS_MAX ||
	    h->max_cells > SEG_CELLS_MAX)
		return -EBADMSG;
	cfg = seg_config_bytes(h->max_keys, h->max_limits);
	st = seg_state_bytes(h->max_clients, h->max_keys, h->max_limits,
	    h->max_cells, offs);
	if (h->size != hdr_size || h->state_size != state_size ||
	    h->config_size != cfg || st != state_size ||
	    h->off_clients != offs[0] || h->off_keys != offs[1] ||
	    h->off_limits != offs[2] || h->off_cells != offs[3] ||
	    h->off_grants != offs[4])
		return -EBADMSG;
	for (int i = 0; i < 2; i++)
		if (h->off_config[i] < sizeof(*h) ||
		    h->off_config[i] % SEG_LINE != 0 ||
		    h->off_config[i] > hdr_size ||
		    hdr_size - h->off_config[i] < cfg)
			return -EBADMSG;
	return 0;
}

const char *
seg_default(void)
{
	const char *e = secure_getenv("TOLLGATE_SEGMENT");

	return e != NULL && *e != '\0' ? e : "tollgate";
}

int
seg_attach(const char *segment, int writable, struct seg_map *m)
{
	char conf[256], state[256];
	struct seg_header *h;
	struct stat st;
	void *p;
	int r;

	memset(m, 0, sizeof(*m));
	m->hdr_fd = m->state_fd = -1;
	if ((r = seg_names(segment, conf, state, sizeof(conf))) < 0)
		return r;
	/* Times in the segment are the host's: know our namespace's offset. */
	(void)clock_init();
	/* The config object read-only: no client can write or truncate it. */
	if ((m->hdr_fd = shm_open(conf, O_RDONLY | O_CLOEXEC, 0)) < 0)
		return -errno;
	if (fstat(m->hdr_fd, &st) < 0) {
		r = -errno;
		goto out_close;
	}
	if ((size_t)st.st_size < sizeof(struct seg_header)) {
		r = st.st_size == 0 ? -ENOENT : -EBADMSG; /* being created */
		goto out_close;
	}
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, m->hdr_fd,
	    0);
	if (p == MAP_FAILED) {
		r = -errno;
		goto out_close;
	}
	m->hdr = h = p;
	m->hdr_size = (size_t)st.st_size;
	/* Acquire: pairs with the broker's release store of magic, last. */
	if (atomic_load_explicit(&h->magic, memory_order_acquire) !=
	    TG_SEG_MAGIC) {
		r = h->magic == 0 ? -ENOENT : -EPROTO;
		goto out_unmap;
	}
	if (h->version != TG_SEG_VERSION) {
		r = -EPROTO;
		goto out_unmap;
	}
	m->state_fd = shm_open(state, (writable ? O_RDWR : O_RDONLY) |
	    O_CLOEXEC, 0);
	if (m->state_fd < 0) {
		r = -errno;
		goto out_unmap;
	}
	if (fstat(m->state_fd, &st) < 0) {
		r = -errno;
		goto out_close_state;
	}
	if ((r = seg_check(h, m->hdr_size, (size_t)st.st_size)) < 0)
		goto out_close_state;
	p = mmap(NULL, (size_t)st.st_size, writable ? PROT_READ | PROT_WRITE :
	    PROT_READ, MAP_SHARED, m->state_fd, 0);
	if (p == MAP_FAILED) {
		r = -errno;
		goto out_close_state;
	}
	m->state = p;
	m->state_size = (size_t)st.st_size;
	return 0;

out_close_state:
	close(m->state_fd);
out_unmap:
	munmap(m->hdr, m->hdr_size);
out_close:
	close(m->hdr_fd);
	memset(m, 0, sizeof(*m));
	m->hdr_fd = m->state_fd = -1;
	return r;
}

void
seg_detach(struct seg_map *m)
{
	if (m->state != NULL)
		munmap(m->state, m->state_size);
	if (m->hdr != NULL)
		munmap(m->hdr, m->hdr_size);
	/* A zeroed map has fds of 0: close only what was mapped. */
	if (m->state != NULL && m->state_fd >= 0)
		close(m->state_fd);
	if (m->hdr != NULL && m->hdr_fd >= 0)
		close(m->hdr_fd);
	memset(m, 0, sizeof(*m));
	m->hdr_fd = m->state_fd = -1;
}

int
proc_starttime(int pid, uint64_t *out)
{
	char path[64], buf[1024], *p;
	ssize_t n;
	int fd, field;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return n < 0 ? -errno : -EIO;
	buf[n] = '\0';
	/* comm may hold spaces and parentheses: count from the last ')'. */
	if ((p = strrchr(buf, ')')) == NULL)
		return -EIO;
	for (field = 2; *p && field < 22; p++)
		if (*p == ' ')
			field++;
	if (field != 22)
		return -EIO;
	*out = strtoull(p, NULL, 10);
	return 0;
}

static void
slot_range(struct flock *l, short type, uint32_t slot)
{
	memset(l, 0, sizeof(*l));
	l->l_type = type;
	l->l_whence = SEEK_SET;
	l->l_start = (off_t)(SEG_LOCK_BASE + slot);
	l->l_len = 1;
}

int
seg_slot_lock(int fd, uint32_t slot)
{
	struct flock l;

	slot_range(&l, F_WRLCK, slot);
	if (fcntl(fd, F_OFD_SETLK, &l) < 0)
		return errno == EACCES ? -EAGAIN : -errno;
	return 0;
}

int
seg_slot_unlock(int fd, uint32_t slot)
{
	struct flock l;

	slot_range(&l, F_UNLCK, slot);
	return fcntl(fd, F_OFD_SETLK, &l) < 0 ? -errno : 0;
}

int
seg_slot_locked(int fd, uint32_t slot)
{
	struct flock l;

	/* A query needs no write access: tollstat asks on a read-only fd. */
	slot_range(&l, F_WRLCK, slot);
	if (fcntl(fd, F_OFD_GETLK, &l) < 0)
		return -errno;
	return l.l_type != F_UNLCK;
}

uint64_t
seg_pause_key(struct seg_kstate *ks, uint64_t now, uint64_t until)
{
	uint64_t old, set;

	old = atomic_load_explicit(&ks->paused_until_ns, memory_order_relaxed);
	do {
		if (old >= until)
			return old;
	} while (!atomic_compare_exchange_weak_explicit(&ks->paused_until_ns,
	    &old, until, memory_order_relaxed, memory_order_relaxed));
	atomic_fetch_add_explicit(&ks->status[ST_PAUSED_NS],
	    until - (old > now ? old : now), memory_order_relaxed);
	set = atomic_load_explicit(&ks->pause_set_ns, memory_order_relaxed);
	while (set < now && !atomic_compare_exchange_weak_explicit(
	    &ks->pause_set_ns, &set, now, memory_order_relaxed,
	    memory_order_relaxed))
		;
	return old;
}
