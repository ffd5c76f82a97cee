/*
 * ctl.c: tollctl's command socket.  An operator acts on a live segment
 * (pause, resume, reset, drain, undrain a key) through the broker, never
 * by writing the segment: the broker checks who asks (SO_PEERCRED, which
 * the kernel fills in and no caller can forge), whether they may write
 * the state object, and every byte of the request, then acts, logs who
 * did it and counts it in the header, which only it writes.
 *
 * The socket is /dev/shm/<segment>.ctl, beside the segment's objects:
 * the one directory every party already shares (a container that is
 * given the segment is given /dev/shm), named from the segment alone (no
 * setting to agree on), cleared on reboot with the segment.  It has the
 * state object's owner, group and mode, so only those who may write the
 * state object can connect (connect(2) needs write permission on it); the
 * broker checks again on each request against the state object's mode of
 * the moment.  /dev/shm is sticky: a socket someone else made there
 * cannot be removed by us, and tollctl checks that whoever answers runs
 * as the owner of the config object before it sends a word.
 *
 * SOCK_SEQPACKET: a request is one message, never a stream to reassemble;
 * the loop's poll makes it readable, and the handler reads, acts and
 * answers without blocking.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker.h"
#include "ctl.h"
#include "futex.h"
#include "gcra.h"
#include "lease.h"
#include "limit.h"
#include "log.h"
#include "loop.h"
#include "window.h"

#define CTL_CONNS	16		/* connections at once */
#define CTL_IDLE_NS	UINT64_C(10000000000)	/* an idle one is closed */
#define CTL_SYNC_NS	UINT64_C(1000000000)	/* mode check, each 1 s */
#define CTL_GROUPS_MAX	256		/* a peer's groups we look at */
#define CTL_LOGS_MAX	10		/* refusals logged per second */
#define NS_PER_S	UINT64_C(1000000000)

static const char *const verbs[SEG_CTL_NACT] = {
	[SEG_CTL_PAUSE] = "pause", [SEG_CTL_RESUME] = "resume",
	[SEG_CTL_RESET] = "reset", [SEG_CTL_DRAIN] = "drain",
	[SEG_CTL_UNDRAIN] = "undrain",
};

struct conn {
	int		fd;		/* -1: free */
	uint32_t	gen;		/* of its watch */
	uint64_t	last_ns;	/* last request, or the accept */
	uid_t		uid;		/* SO_PEERCRED, at connect */
	gid_t		gid;
	pid_t		pid;		/* 0: not in our PID namespace */
	int		ngroups;	/* -1: SO_PEERGROUPS unknown */
	gid_t		groups[CTL_GROUPS_MAX];
};

struct ctl {
	struct broker	*b;
	struct loop	*loop;
	int		lfd;
	uint32_t	lgen;
	int		lwait;		/* out of descriptors: the next tick */
	char		path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	uid_t		uid;		/* the socket's owner, group, mode */
	gid_t		gid;
	mode_t		mode;
	uint64_t	synced_ns;
	uint8_t		*drained;	/* [max_keys]: the broker's word */
	uint64_t	log_sec;	/* refusals logged in this second */
	unsigned	logged;
	unsigned long	unlogged;
	struct conn	conns[CTL_CONNS];
};

/* "uid 1000 pid 42", or "uid 1000 pid 0 (another PID namespace)". */
static const char *
who(const struct conn *cn, char *buf, size_t len)
{
	snprintf(buf, len, "uid %u pid %d%s", (unsigned)cn->uid,
	    (int)cn->pid, cn->pid == 0 ? " (another PID namespace)" : "");
	return buf;
}

/*
 * Whether a refusal may be logged now: CTL_LOGS_MAX a second, the rest
 * counted and said once the next second begins.  A peer that may connect
 * could otherwise fill the log; the counts in the header see them all.
 */
static int
log_room(struct ctl *c, uint64_t now)
{
	if (now / NS_PER_S != c->log_sec) {
		if (c->unlogged)
			log_warnx("tollctl: %lu more refused requests not "
			    "logged", c->unlogged);
		c->log_sec = now / NS_PER_S;
		c->logged = 0;
		c->unlogged = 0;
	}
	if (c->logged < CTL_LOGS_MAX) {
		c->logged++;
		return 1;
	}
	c->unlogged++;
	return 0;
}

static void
count(struct ctl *c, enum seg_ctl what)
{
	/* Relaxed: statistics for tollstat, which order nothing. */
	atomic_fetch_add_explicit(&c->b->m.hdr->ctl_count[what], 1,
	    memory_order_relaxed);
}

/* Write the last action into the header, under ctl_seq (seg.h). */
static void
record(struct ctl *c, const struct conn *cn, enum seg_ctl what,
    uint32_t key, uint64_t arg_ns, uint64_t now)
{
	struct seg_header *h = c->b->m.hdr;
	uint32_t seq = atomic_load_explicit(&h->ctl_seq, memory_order_relaxed);

	if (seq & 1)
		seq++;		/* a broker died writing it */
	atomic_store_explicit(&h->ctl_seq, seq + 1, memory_order_relaxed);
	/* Release fence: the odd seq is seen before any write below. */
	atomic_thread_fence(memory_order_release);
	h->ctl_uid = (uint32_t)cn->uid;
	h->ctl_pid = (int32_t)cn->pid;
	h->ctl_action = (uint8_t)what;
	h->ctl_ns = now;
	h->ctl_arg_ns = arg_ns;
	memcpy(h->ctl_key, c->b->keys[key].name, SEG_NAME_MAX);
	/* Release: a reader that sees the even seq sees the fields. */
	atomic_store_explicit(&h->ctl_seq, seq + 2, memory_order_release);
}

/* Whether key id is in use: named, and not on its way out. */
static int
key_live(const struct broker *b, uint32_t id)
{
	return b->keys[id].name[0] != '\0' && b->keys[id].quarantine == 0;
}

/* Whether key id is k or under it. */
static int
key_under(const struct broker *b, uint32_t k, uint32_t id)
{
	for (int depth = 0; id < b->m.hdr->max_keys &&
	    depth <= SEG_DEPTH_MAX; depth++) {
		if (id == k)
			return 1;
		id = b->keys[id].parent;
	}
	return 0;
}

/*
 * Wake the tg_acquire sleepers of key id: bump its ctl_wake, release (a
 * sleeper that sees the bump sees what the action wrote before it), and
 * wake every sleeper on it.  They look again and find the action.
 */
static void
wake_key(struct ctl *c, uint32_t id)
{
	_Atomic uint32_t *w = &seg_kstates(&c->b->m)[id].ctl_wake;

	atomic_fetch_add_explicit(w, 1, memory_order_release);
	(void)futex_wake(w, INT_MAX);
}

/* Wake the sleepers of k and of every key under it. */
static void
wake_under(struct ctl *c, uint32_t k)
{
	for (uint32_t id = 0; id < c->b->m.hdr->max_keys; id++)
		if (key_live(c->b, id) && key_under(c->b, k, id))
			wake_key(c, id);
}

/*
 * Wake whoever sleeps on a lease of a concurrency limit: a drain must
 * reach the waiters of a limit anywhere in a chain.  lease_wake makes a
 * system call only where someone sleeps.
 */
static void
wake_leases(struct ctl *c)
{
	for (uint32_t id = 0; id < c->b->m.hdr->max_limits; id++)
		if (c->b->lims[id].used && c->b->lims[id].spec.kind ==
		    LIM_CONC)
			lease_wake(&seg_lstates(&c->b->m)[id]);
}

/* The key's clamp on a pause, as the library and the guard use it. */
static uint64_t
max_pause(const struct broker *b, uint32_t k)
{
	return b->keys[k].max_pause_ns ? b->keys[k].max_pause_ns :
	    CFG_MAX_PAUSE_NS;
}

static void
pause_key(struct ctl *c, uint32_t k, uint64_t ns, uint64_t now, char *out,
    size_t len)
{
	struct seg_kstate *ks = &seg_kstates(&c->b->m)[k];
	uint64_t max = max_pause(c->b, k), d, until, old;
	char a[32], b[32];

	d = ns < max ? ns : max;
	until = now + d;
	/*
	 * As a 429's pause (seg_pause_key): a longer pause in force stays;
	 * no wake here: waiters with slots reserved take their places again
	 * when they wake (tg_acquire, paused_since).
	 */
	old = seg_pause_key(ks, now, until);
	duration_format(a, sizeof(a), d);
	if (old >= until) {
		duration_format(b, sizeof(b), (old - now) / NS_PER_S * NS_PER_S);
		snprintf(out, len, "%s stays paused: the pause in force is "
		    "longer (%s left)", c->b->keys[k].name, b);
	} else if (d < ns) {
		duration_format(b, sizeof(b), ns);
		snprintf(out, len, "paused %s for %s, its max_pause (%s "
		    "asked); tickets of it and the keys under it wait",
		    c->b->keys[k].name, a, b);
	} else
		snprintf(out, len, "paused %s for %s; tickets of it and the "
		    "keys under it wait", c->b->keys[k].name, a);
}

/*
 * A rate limit's TAT back to where a 429 leaves it when its pause ends
 * now: one unit fits now, the next a unit's cost later.  Returns 1 if it
 * moved.  A CAS from the value judged, so a take in between wins.
 */
static int
tat_to_now(struct ctl *c, uint32_t id, uint64_t now)
{
	const struct limit_spec *s = &c->b->lims[id].spec;
	_Atomic uint64_t *tatp = &seg_lstates(&c->b->m)[id].tat_ns;
	uint64_t one, tau, cap, tat;

	one = gcra_cost_ns(1, s->period_ns, s->count);
	tau = gcra_tau_margin_ns(s->burst, s->period_ns, s->count,
	    limit_margin_ns(s));
	if (tau < one || tau - one > UINT64_MAX - now)
		return 0;
	cap = now + (tau - one);
	tat = atomic_load_explicit(tatp, memory_order_relaxed);
	while (tat > cap)
		if (atomic_compare_exchange_weak_explicit(tatp, &tat, cap,
		    memory_order_relaxed, memory_order_relaxed))
			return 1;
	return 0;
}

/*
 * Clear the pause and the shared backoff of k and every key under it.
 * If a pause was in force, the rate limits its tickets take (those of
 * these keys and of their ancestors) may have been left empty at its
 * end, or queued behind it: they are put where the pause ending now
 * leaves them, and every key whose tickets take them is woken, so that
 * its waiters take their places in line again.
 */
static void
resume_key(struct ctl *c, uint32_t k, uint64_t now, char *out, size_t len)
{
	struct broker *b = c->b;
	const struct seg_header *h = b->m.hdr;
	struct seg_kstate *ks = seg_kstates(&b->m);
	uint64_t p, longest = 0;
	unsigned cleared = 0, moved = 0;
	char a[32];

	for (uint32_t id = 0; id < h->max_keys; id++) {
		if (!key_live(b, id) || !key_under(b, k, id))
			continue;
		/* Relaxed: as pause_key; the wake below publishes. */
		p = atomic_exchange_explicit(&ks[id].paused_until_ns, 0,
		    memory_order_relaxed);
		atomic_store_explicit(&ks[id].backoff_ns, 0,
		    memory_order_relaxed);
		if (p > now) {
			cleared++;
			if (p - now > longest)
				longest = p - now;
			/* A new round: see pause_key. */
			atomic_store_explicit(&ks[id].pause_set_ns, now,
			    memory_order_relaxed);
		}
	}
	if (cleared > 0) {
		for (uint32_t l = 0; l < h->max_limits; l++) {
			const struct lim_slot *ls = &b->lims[l];

			if (!ls->used || ls->spec.kind != LIM_RATE ||
			    (!key_under(b, k, ls->key) &&
			    !key_under(b, ls->key, k)) ||
			    !tat_to_now(c, l, now))
				continue;
			moved++;
			/* Its takers, here and in sibling keys, line up. */
			if (ls->key != k)
				wake_under(c, ls->key);
		}
	}
	wake_under(c, k);
	wake_leases(c);
	if (cleared == 0) {
		snprintf(out, len, "%s was not paused (its backoff, and "
		    "that of the keys under it, starts over)", b->keys[k].name);
		return;
	}
	/* Whole seconds: the ns of a pause's end say nothing to people. */
	duration_format(a, sizeof(a), longest / NS_PER_S * NS_PER_S);
	snprintf(out, len, "resumed %s: %u pause%s cleared (%s left at "
	    "most), %u rate limit%s restarted from one unit", b->keys[k].name,
	    cleared, cleared == 1 ? "" : "s", a, moved, moved == 1 ? "" : "s");
}

/*
 * Rate and window limits of k to full, its server counts forgotten, its
 * learned counts and adaptive concurrency back to the config's, its own
 * pause and backoff cleared.  Leases in flight are not touched.
 */
static void
reset_key(struct ctl *c, uint32_t k, uint64_t now, char *out, size_t len)
{
	struct broker *b = c->b;
	struct seg_kstate *ks = &seg_kstates(&b->m)[k];
	_Atomic uint64_t *cells = seg_cells(&b->m);
	unsigned nlim = 0, learned = 0;

	for (uint32_t id = 0; id < b->m.hdr->max_limits; id++) {
		struct lim_slot *l = &b->lims[id];
		struct seg_lstate *ls = &seg_lstates(&b->m)[id];

		if (!l->used || l->key != k)
			continue;
		nlim++;
		/*
		 * Relaxed, every store: each word stands alone, and a take
		 * racing with it either came before the reset (and is
		 * forgotten with the rest) or after it.
		 */
		atomic_store_explicit(&ls->srv_cap, 0, memory_order_relaxed);
		atomic_store_explicit(&ls->srv_limit, 0, memory_order_relaxed);
		l->srv_seen = 0;
		if (l->spec.count != l->conf.count ||
		    l->spec.burst != l->conf.burst) {
			l->spec.count = l->conf.count;
			l->spec.burst = l->conf.burst;
			learned++;
		}
		switch (l->spec.kind) {
		case LIM_RATE:
			atomic_store_explicit(&ls->tat_ns, 0,
			    memory_order_relaxed);
			break;
		case LIM_WINDOW:
			for (uint32_t i = 0; i < l->ncells; i++)
				atomic_store_explicit(&cells[l->cells + i], 0,
				    memory_order_relaxed);
			break;
		case LIM_CONC:
			/* AIMD starts over from the full count (feedback.c). */
			l->aimd_on = 0;
			l->eff = (uint32_t)l->spec.count;
			l->acc = 0;
			if (lim_adaptive(b, l))
				atomic_store_explicit(&ls->eff,
				    (uint32_t)l->spec.count,
				    memory_order_relaxed);
			atomic_store_explicit(&ls->probe_from, 0,
			    memory_order_relaxed);
			break;
		}
	}
	atomic_store_explicit(&ks->paused_until_ns, 0, memory_order_relaxed);
	atomic_store_explicit(&ks->backoff_ns, 0, memory_order_relaxed);
	atomic_store_explicit(&ks->pause_set_ns, now, memory_order_relaxed);
	if (learned > 0)
		segment_republish(b);
	wake_under(c, k);
	wake_leases(c);
	snprintf(out, len, "reset %s: %u limit%s full%s; leases in flight "
	    "kept", b->keys[k].name, nlim, nlim == 1 ? "" : "s", learned ?
	    ", learned counts back to the config's" : "");
}

/* Leases held now on the concurrency limits of k and the keys under it. */
static uint32_t
leases_under(struct ctl *c, uint32_t k)
{
	const struct broker *b = c->b;
	uint32_t n = 0;

	for (uint32_t id = 0; id < b->m.hdr->max_limits; id++)
		if (b->lims[id].used && b->lims[id].spec.kind == LIM_CONC &&
		    key_under(b, k, b->lims[id].key))
			n += lease_count(&seg_cells(&b->m)[b->lims[id].cells],
			    b->lims[id].ncells);
	return n;
}

static void
drain_key(struct ctl *c, uint32_t k, int on, char *out, size_t len)
{
	struct seg_kstate *ks = &seg_kstates(&c->b->m)[k];
	int was = c->drained[k];
	uint32_t held;

	c->drained[k] = (uint8_t)on;
	/*
	 * seq_cst: before the wakes below and the reply, so a ticket begun
	 * once tollctl has the answer sees it.  Takes read it relaxed: a
	 * flag that guards no other data.
	 */
	atomic_store_explicit(&ks->drained, (uint32_t)on, memory_order_seq_cst);
	wake_under(c, k);
	if (on)
		wake_leases(c);
	held = leases_under(c, k);
	if (on)
		snprintf(out, len, "%s %s: new tickets of it and the keys "
		    "under it are refused; %u lease%s in flight finish",
		    was ? "still drained" : "drained", c->b->keys[k].name,
		    held, held == 1 ? "" : "s");
	else
		snprintf(out, len, "%s %s: it takes new tickets",
		    was ? "undrained" : "was not drained:", c->b->keys[k].name);
}

/*
 * Whether the peer may write the state object as its mode is now: the
 * owner's bits for its owner, the group's for a member of its group, the
 * others' otherwise (as the kernel decides an open), and root always.
 */
static int
may_write(const struct conn *cn, const struct stat *st)
{
	int member = cn->gid == st->st_gid;

	if (cn->uid == 0)
		return 1;
	if (cn->uid == st->st_uid)
		return (st->st_mode & S_IWUSR) != 0;
	for (int i = 0; i < cn->ngroups && !member; i++)
		member = cn->groups[i] == st->st_gid;
	if (member)
		return (st->st_mode & S_IWGRP) != 0;
	return (st->st_mode & S_IWOTH) != 0;
}

/*
 * Split a request into at most 3 words, in place.  Every byte must be
 * printable ASCII, words separated by one space; one trailing newline
 * is allowed.  Returns the count of words, or -1 with *why set.
 */
static int
split(char *req, size_t n, char *w[3], const char **why)
{
	int nw = 0;

	if (n > 0 && req[n - 1] == '\n')
		n--;
	req[n] = '\0';
	if (n == 0) {
		*why = "an empty request";
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (req[i] == ' ') {
			if (i == 0 || req[i - 1] == '\0' || i + 1 == n) {
				*why = "words are separated by one space";
				return -1;
			}
			req[i] = '\0';
			continue;
		}
		if (req[i] < 0x21 || req[i] > 0x7e) {
			*why = "a byte that is not printable ASCII";
			return -1;
		}
		if (i == 0 || req[i - 1] == '\0') {
			if (nw == 3) {
				*why = "too many words";
				return -1;
			}
			w[nw++] = &req[i];
		}
	}
	return nw;
}

/* The id of the live key named name, or -1. */
static int
key_by_name(const struct broker *b, const char *name)
{
	if (strlen(name) >= SEG_NAME_MAX)
		return -1;
	for (uint32_t id = 0; id < b->m.hdr->max_keys; id++)
		if (key_live(b, id) && strcmp(b->keys[id].name, name) == 0)
			return (int)id;
	return -1;
}

/* Refuse a request: count, log (within log_room) and say why. */
static void
refuse(struct ctl *c, const struct conn *cn, enum seg_ctl what,
    const char *code, uint64_t now, char *out, size_t len,
    const char *fmt, ...) __attribute__((format(printf, 8, 9)));

static void
refuse(struct ctl *c, const struct conn *cn, enum seg_ctl what,
    const char *code, uint64_t now, char *out, size_t len,
    const char *fmt, ...)
{
	char msg[CTL_REPLY_MAX - 16], w[96];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	count(c, what);
	if (log_room(c, now))
		log_warnx("tollctl: request of %s refused: %s",
		    who(cn, w, sizeof(w)), msg);
	snprintf(out, len, "err %s %s", code, msg);
}

/* Answer one request of cn, req[0..n) (n <= CTL_REQ_MAX), into out. */
static void
handle(struct ctl *c, const struct conn *cn, char *req, size_t n,
    uint64_t now, char *out, size_t len)
{
	struct broker *b = c->b;
	struct stat st;
	char *w[3], msg[CTL_REPLY_MAX - 16], whom[96];
	const char *why = NULL;
	uint64_t ns = 0;
	int nw, act, k;

	if (fstat(b->m.state_fd, &st) < 0) {
		snprintf(out, len, "err EIO the broker cannot stat its state "
		    "object: %s", strerror(errno));
		return;
	}
	if (!may_write(cn, &st)) {
		refuse(c, cn, SEG_CTL_DENIED, "EACCES", now, out, len,
		    "uid %u may not write the state object /dev/shm/%s "
		    "(owner uid %u, group %u, mode %04o)", (unsigned)cn->uid,
		    b->cfg.segment, (unsigned)st.st_uid, (unsigned)st.st_gid,
		    (unsigned)(st.st_mode & 07777));
		return;
	}
	if ((nw = split(req, n, w, &why)) < 0) {
		refuse(c, cn, SEG_CTL_BAD, "EINVAL", now, out, len,
		    "malformed request: %s", why);
		return;
	}
	if (strcmp(w[0], "ping") == 0 && nw == 1) {
		snprintf(out, len, "ok tollgated %s, pid %d, serves segment "
		    "%s; %s may act", TG_VERSION, (int)getpid(),
		    b->cfg.segment, who(cn, whom, sizeof(whom)));
		return;
	}
	for (act = 0; act < SEG_CTL_NACT && strcmp(w[0], verbs[act]) != 0;
	    act++)
		;
	if (act == SEG_CTL_NACT || nw != (act == SEG_CTL_PAUSE ? 3 : 2)) {
		refuse(c, cn, SEG_CTL_BAD, "EINVAL", now, out, len,
		    "malformed request: not `ping', `pause KEY NS' or `%s "
		    "KEY'", act < SEG_CTL_NACT ? verbs[act] :
		    "resume|reset|drain|undrain");
		return;
	}
	if (act == SEG_CTL_PAUSE && (dec_parse(w[2], w[2] + strlen(w[2]),
	    &ns) < 0 || ns < CTL_PAUSE_MIN_NS)) {
		refuse(c, cn, SEG_CTL_BAD, "EINVAL", now, out, len,
		    "malformed request: the pause is a count of ns, "
		    "1000000 (1 ms) or more");
		return;
	}
	if ((k = key_by_name(b, w[1])) < 0) {
		refuse(c, cn, SEG_CTL_FAILED, "ENOENT", now, out, len,
		    "no key %.*s in segment %s", SEG_NAME_MAX, w[1],
		    b->cfg.segment);
		return;
	}
	switch (act) {
	case SEG_CTL_PAUSE:
		pause_key(c, (uint32_t)k, ns, now, msg, sizeof(msg));
		break;
	case SEG_CTL_RESUME:
		resume_key(c, (uint32_t)k, now, msg, sizeof(msg));
		break;
	case SEG_CTL_RESET:
		reset_key(c, (uint32_t)k, now, msg, sizeof(msg));
		break;
	case SEG_CTL_DRAIN:
	case SEG_CTL_UNDRAIN:
		drain_key(c, (uint32_t)k, act == SEG_CTL_DRAIN, msg,
		    sizeof(msg));
		break;
	}
	count(c, (enum seg_ctl)act);
	record(c, cn, (enum seg_ctl)act, (uint32_t)k, ns, now);
	log_info("tollctl: %s %s by %s: %s", verbs[act], b->keys[k].name,
	    who(cn, whom, sizeof(whom)), msg);
	snprintf(out, len, "ok %s", msg);
}

static void
conn_close(struct ctl *c, struct conn *cn)
{
	if (cn->fd < 0)
		return;
	loop_unwatch(c->loop, CTL_ID_BASE + 1 + (uint32_t)(cn - c->conns),
	    cn->gen);
	close(cn->fd);
	cn->fd = -1;
	cn->gen++;
}

static int
conn_watch(struct ctl *c, struct conn *cn)
{
	return loop_watch(c->loop, cn->fd,
	    CTL_ID_BASE + 1 + (uint32_t)(cn - c->conns), cn->gen);
}

/* A connection is readable: a request, the end, or nothing yet. */
static void
serve(struct ctl *c, struct conn *cn, uint64_t now)
{
	char req[CTL_REQ_MAX + 1], out[CTL_REPLY_MAX], whom[96];
	ssize_t n;

	/* MSG_TRUNC: the message's real length, to refuse a long one. */
	n = recv(cn->fd, req, CTL_REQ_MAX, MSG_DONTWAIT | MSG_TRUNC);
	if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
		if (conn_watch(c, cn) < 0)
			conn_close(c, cn);
		return;
	}
	if (n <= 0) {
		conn_close(c, cn);
		return;
	}
	cn->last_ns = now;
	if (n > CTL_REQ_MAX)
		refuse(c, cn, SEG_CTL_BAD, "EINVAL", now, out, sizeof(out),
		    "malformed request: %zd bytes, more than %d", n,
		    CTL_REQ_MAX);
	else
		handle(c, cn, req, (size_t)n, now, out, sizeof(out));
	/* The socket's buffer holds a reply: one never waits for room. */
	if (send(cn->fd, out, strlen(out), MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
		log_debug("tollctl: reply to %s: %s", who(cn, whom,
		    sizeof(whom)), strerror(errno));
		conn_close(c, cn);
		return;
	}
	if (conn_watch(c, cn) < 0)
		conn_close(c, cn);
}

/* Who is on the other end, as the kernel says; 0 or -errno. */
static int
peer(struct conn *cn)
{
	struct ucred uc;
	socklen_t len = sizeof(uc);

	if (getsockopt(cn->fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0)
		return -errno;
	cn->uid = uc.uid;
	cn->gid = uc.gid;
	cn->pid = uc.pid;
	len = sizeof(cn->groups);
	/* Its supplementary groups, for the group's bits (Linux 4.13). */
	if (getsockopt(cn->fd, SOL_SOCKET, SO_PEERGROUPS, cn->groups,
	    &len) < 0)
		cn->ngroups = -1;
	else
		cn->ngroups = (int)(len / sizeof(gid_t));
	return 0;
}

/* The socket is readable: take every connection waiting. */
static void
accept_all(struct ctl *c, uint64_t now)
{
	struct conn *cn;
	int fd;

	for (;;) {
		fd = accept4(c->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0 && (errno == EINTR || errno == ECONNABORTED))
			continue;
		if (fd < 0 && (errno == EMFILE || errno == ENFILE ||
		    errno == ENOBUFS || errno == ENOMEM)) {
			/*
			 * The connection stays queued and the socket readable:
			 * watched again now, it would spin.  The next tick.
			 */
			log_warn("tollctl: accept");
			c->lwait = 1;
			return;
		}
		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				log_warn("tollctl: accept");
			break;
		}
		for (cn = c->conns; cn < c->conns + CTL_CONNS && cn->fd >= 0;
		    cn++)
			;
		if (cn == c->conns + CTL_CONNS) {
			static const char busy[] = "err EBUSY too many tollctl "
			    "connections at once; try again";

			(void)send(fd, busy, sizeof(busy) - 1,
			    MSG_DONTWAIT | MSG_NOSIGNAL);
			close(fd);
			continue;
		}
		cn->fd = fd;
		cn->last_ns = now;
		if (peer(cn) < 0) {
			log_warn("tollctl: SO_PEERCRED");
			close(fd);
			cn->fd = -1;
			continue;
		}
		if (conn_watch(c, cn) < 0) {
			close(fd);
			cn->fd = -1;
		}
	}
	if (loop_watch(c->loop, c->lfd, CTL_ID_BASE, c->lgen) < 0)
		log_warnx("tollctl: cannot watch %s: tollctl gets no answer",
		    c->path);
}

void
ctl_ready(struct ctl *c, uint32_t id, uint32_t gen, uint64_t now)
{
	struct conn *cn;

	if (c == NULL)
		return;
	if (id == CTL_ID_BASE) {
		if (gen == c->lgen)
			accept_all(c, now);
		return;
	}
	if (id - CTL_ID_BASE - 1 >= CTL_CONNS)
		return;
	cn = &c->conns[id - CTL_ID_BASE - 1];
	/* A completion of a watch cancelled since: not this connection's. */
	if (cn->fd >= 0 && (cn->gen & 0xffffffu) == gen)
		serve(c, cn, now);
}

/* Give the socket the state object's owner, group and mode; 0 or -errno. */
static int
sync_mode(struct ctl *c)
{
	struct stat st;
	mode_t mode;

	if (fstat(c->b->m.state_fd, &st) < 0)
		return -errno;
	mode = st.st_mode & 0666;
	if (st.st_uid == c->uid && st.st_gid == c->gid && mode == c->mode)
		return 0;
	/*
	 * By path: a socket has no descriptor to fchmod.  The path is ours
	 * in a sticky directory, so nobody else can put another file there.
	 */
	if (fchownat(AT_FDCWD, c->path, st.st_uid, st.st_gid,
	    AT_SYMLINK_NOFOLLOW) < 0 || chmod(c->path, mode) < 0)
		return -errno;
	c->uid = st.st_uid;
	c->gid = st.st_gid;
	c->mode = mode;
	return 0;
}

struct ctl *
ctl_open(struct broker *b, struct loop *l)
{
	struct sockaddr_un sa;
	struct stat st;
	struct ctl *c;
	mode_t um;
	int r;

	if ((c = calloc(1, sizeof(*c))) == NULL ||
	    (c->drained = calloc(b->m.hdr->max_keys, 1)) == NULL) {
		if (c != NULL)
			free(c);
		log_warnx("tollctl: out of memory: no command socket");
		return NULL;
	}
	c->b = b;
	c->loop = l;
	c->lfd = -1;
	c->uid = (uid_t)-1;
	for (int i = 0; i < CTL_CONNS; i++)
		c->conns[i].fd = -1;
	if ((size_t)snprintf(c->path, sizeof(c->path), "/dev/shm/%s%s",
	    b->cfg.segment, CTL_SUFFIX) >= sizeof(c->path)) {
		log_warnx("tollctl: /dev/shm/%s%s is longer than a socket's "
		    "path may be: no command socket (a shorter segment name "
		    "has one)", b->cfg.segment, CTL_SUFFIX);
		goto out_free;
	}
	/*
	 * We hold the segment's lock (main.c): a socket of ours there is a
	 * dead broker's.  One of someone else's we can neither use nor, in
	 * sticky /dev/shm, remove.
	 */
	if (lstat(c->path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode) || st.st_uid != geteuid()) {
			log_warnx("tollctl: %s is not a socket of this broker's "
			    "user (uid %u, mode %04o): no command socket; "
			    "remove it (as its owner or root) and restart",
			    c->path, (unsigned)st.st_uid,
			    (unsigned)(st.st_mode & 07777));
			goto out_free;
		}
		(void)unlink(c->path);
	}
	if ((c->lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0)) < 0) {
		log_warn("tollctl: socket");
		goto out_free;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, c->path, strlen(c->path));
	/* Made 0600 (nobody connects before sync_mode), then widened. */
	um = umask(0177);
	r = bind(c->lfd, (struct sockaddr *)&sa, sizeof(sa));
	umask(um);
	if (r < 0) {
		log_warn("tollctl: bind %s", c->path);
		goto out_close;
	}
	if ((r = sync_mode(c)) < 0) {
		log_warnx("tollctl: chown or chmod %s: %s", c->path,
		    strerror(-r));
		goto out_unlink;
	}
	if (listen(c->lfd, CTL_CONNS) < 0 ||
	    loop_watch(l, c->lfd, CTL_ID_BASE, c->lgen) < 0) {
		log_warn("tollctl: listen on %s", c->path);
		goto out_unlink;
	}
	/* A drain outlives a broker restart: the segment says so. */
	for (uint32_t id = 0; id < b->m.hdr->max_keys; id++)
		if (key_live(b, id) && atomic_load_explicit(
		    &seg_kstates(&b->m)[id].drained, memory_order_relaxed) ==
		    1) {
			c->drained[id] = 1;
			log_info("tollctl: key %s stays drained", b->keys[id].name);
		}
	log_info("tollctl socket %s, mode %04o, group %u", c->path,
	    (unsigned)c->mode, (unsigned)c->gid);
	return c;

out_unlink:
	unlink(c->path);
out_close:
	close(c->lfd);
out_free:
	free(c->drained);
	free(c);
	return NULL;
}

void
ctl_tick(struct ctl *c, uint64_t now)
{
	struct seg_kstate *ks;
	unsigned long bad = 0;
	uint32_t want;
	int r;

	if (c == NULL)
		return;
	for (int i = 0; i < CTL_CONNS; i++)
		if (c->conns[i].fd >= 0 && now - c->conns[i].last_ns >
		    CTL_IDLE_NS)
			conn_close(c, &c->conns[i]);
	if (c->lwait) {
		c->lwait = 0;
		if (loop_watch(c->loop, c->lfd, CTL_ID_BASE, c->lgen) < 0)
			log_warnx("tollctl: cannot watch %s: tollctl gets no "
			    "answer", c->path);
	}
	if (now - c->synced_ns >= CTL_SYNC_NS) {
		c->synced_ns = now;
		if ((r = sync_mode(c)) < 0)
			log_warnx("tollctl: chown or chmod %s: %s", c->path,
			    strerror(-r));
	}
	/*
	 * The drain flags are ours: a worker may scribble on them (the state
	 * object is theirs to write), and the next tick puts them back.  A
	 * key removed by a reload takes its drain with it.
	 */
	ks = seg_kstates(&c->b->m);
	for (uint32_t id = 0; id < c->b->m.hdr->max_keys; id++) {
		if (c->b->keys[id].name[0] == '\0')
			c->drained[id] = 0;
		want = c->drained[id];
		if (atomic_load_explicit(&ks[id].drained,
		    memory_order_relaxed) != want) {
			atomic_store_explicit(&ks[id].drained, want,
			    memory_order_relaxed);
			bad++;
		}
	}
	guard_count(&c->b->m, "key drain flag", bad);
}

void
ctl_close(struct ctl *c)
{
	if (c == NULL)
		return;
	for (int i = 0; i < CTL_CONNS; i++)
		if (c->conns[i].fd >= 0) {
			close(c->conns[i].fd);
			c->conns[i].fd = -1;
		}
	close(c->lfd);
	/* The segment stays for the next broker; its socket goes with us. */
	unlink(c->path);
	free(c->drained);
	free(c);
}
