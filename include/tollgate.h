/*
 * tollgate.h: the only public header of libtollgate, the client side of
 * the tollgate quota broker.  Results are >= 0, or a negative errno value.
 *
 * A program opens the broker's segment once (tg_open), looks its keys up
 * once (tg_key), and then takes a ticket before each request to the
 * rate-limited API and releases it after.  The ticket calls make no system
 * call: they are a few atomic instructions on shared memory.
 */
#ifndef TOLLGATE_H
#define TOLLGATE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tg_client tg_client;	/* opaque; one per process */

/* What one request costs; a limit counts the member named by its unit. */
typedef struct tg_cost {
	uint64_t	requests;
	uint64_t	tokens;
	uint64_t	images;
} tg_cost;

/*
 * One request's permission, in storage the caller owns (stack is fine).
 * Filled by tg_try_acquire, tg_acquire or tg_reserve, emptied by
 * tg_release.  A zeroed ticket is an empty one: releasing it does
 * nothing.
 */
typedef struct tg_ticket {
	uint64_t	priv[16];
} tg_ticket;

#define TG_OK		0	/* tg_observe: the request succeeded */
#define TG_RETRY	1	/* tg_observe: worth retrying after the pause */
#define TG_GIVE_UP	2	/* tg_observe: retrying will not help */

/*
 * Map the segment a tollgated broker publishes as `segment' (NULL: the
 * environment's TOLLGATE_SEGMENT, else "tollgate") and register this
 * process in it.  Returns 0 and sets *out,
 * or -ENOENT (no broker has created it), -EPROTO (another layout version),
 * -EACCES, -ENOSPC (every client slot taken), -EXDEV (a time namespace
 * whose clock offset cannot be read), -EINVAL, -ENOMEM.  Makes system
 * calls.  After fork(), a child may use the client it inherited: its
 * first ticket registers it anew (system calls, once); the tickets it
 * inherited stay the parent's, and release or settle nothing in it.
 */
int	tg_open(const char *segment, tg_client **out);

/*
 * Release every ticket this client still holds, unregister and unmap.
 * c may be NULL.  Tickets of c must not be used afterwards.
 */
void	tg_close(tg_client *c);

/*
 * Look up a key by name ("openai", "openai/gpt-image-1") and set *key to
 * its handle.  Returns 0, -ENOENT (no such key), -EINVAL.  No system call.
 * A handle stays valid across reloads while the key exists; once a reload
 * removes the key, calls with it return -ESTALE.
 */
int	tg_key(tg_client *c, const char *name, uint32_t *key);

/*
 * Take `cost' (NULL: one request) from every limit of `key' and of each of
 * its ancestors, or nothing, and fill *t.  Makes no system call.
 * Returns 0, or:
 *   -EAGAIN     not now; *retry_in_ns (if not NULL) is how long until it
 *               may succeed, rounded up, or 0 when it waits on a release
 *               of a concurrency lease;
 *   -E2BIG      the cost exceeds a limit's capacity: it never fits;
 *   -ESTALE     the key was removed by a reload;
 *   -ESHUTDOWN  the key or an ancestor is drained (tollctl drain): no
 *               new tickets until it is undrained; those taken before
 *               are not affected;
 *   -EINVAL     a bad argument (NULL client or ticket, unknown handle);
 *   -EBADMSG    the segment's config is malformed (a broker bug).
 */
int	tg_try_acquire(tg_client *c, uint32_t key, const tg_cost *cost,
	    tg_ticket *t, uint64_t *retry_in_ns);

/*
 * Like tg_try_acquire, but wait up to timeout_ns (< 0: forever) for the
 * ticket.  On a rate limit it reserves the next free slot and sleeps until
 * it, so waiters go in arrival order, through a pause too (from its end,
 * where a 429 left the bucket empty: they go one by one at the rate); on
 * a concurrency limit it sleeps until a release, or after a pause until
 * the limit's gradual return allows one more.  Returns 0, -ETIMEDOUT
 * (nothing is taken; returned at once when the wait is known to exceed
 * the timeout), or the errors of
 * tg_try_acquire other than -EAGAIN (-ESHUTDOWN at once, also when a
 * drain comes while it waits).  A signal does not end the wait.
 * Makes system calls only to sleep.
 */
int	tg_acquire(tg_client *c, uint32_t key, const tg_cost *cost,
	    int64_t timeout_ns, tg_ticket *t);

/*
 * Take the place in line tg_acquire would take, and return at once: rate
 * slots are reserved ahead, up to timeout_ns (< 0: however far), in every
 * limit of the chain or none, and *t is filled; *valid_in_ns is how long
 * until the ticket may be used (0: now).  Waiters of tg_reserve and
 * tg_acquire, in any process, go in the order they came.  For an event
 * loop: reserve, sleep *valid_in_ns on the loop's timer, send.
 * Returns 0, or:
 *   -EAGAIN     a limit that cannot be reserved ahead is full: a
 *               concurrency limit (*valid_in_ns 0: wait on a release, as
 *               tg_acquire does, or poll tg_try_acquire), else a window,
 *               a server's remaining count or a pause (*valid_in_ns: when
 *               to try again);
 *   -ETIMEDOUT  the wait would exceed timeout_ns (*valid_in_ns: the wait
 *               it would need); nothing is taken;
 *   the other errors of tg_try_acquire.
 * A ticket released before it became valid was never used: each rate
 * slot it reserved goes back to its bucket if no later reservation was
 * stacked on it, and is otherwise spent, an idle gap a server never sees
 * (never an excess); its leases go back; a window or a server's count
 * keeps it until the window moves on.  Makes no system call.
 */
int	tg_reserve(tg_client *c, uint32_t key, const tg_cost *cost,
	    int64_t timeout_ns, tg_ticket *t, uint64_t *valid_in_ns);

/*
 * After sleeping a reservation's wait, before sending: whether ticket t
 * of tg_reserve may be used now.  Returns 0 if so; -EAGAIN if its time
 * has not come (*retry_in_ns: until it has); -ECANCELED if a key of it
 * was paused since it was reserved (a 429 came: the slot was reckoned at
 * the pace before, and a request sent now goes into the same wall): its
 * rate charges are given back (not below a bucket the 429 emptied),
 * release it and reserve again (*retry_in_ns: until the pause ends, 0 if
 * it has); -EINVAL.  tg_acquire does the same after its sleep.  Makes no
 * system call.
 */
int	tg_ready(tg_client *c, tg_ticket *t, uint64_t *retry_in_ns);

/*
 * Tell tollgate what the response to the request of *t said: its HTTP
 * status (200..599) and its raw header block (`Name: value' lines ended
 * by CRLF or LF, as curl -D writes them or an HTTP client hands them over;
 * a status line is skipped; headers may be NULL when len is 0).  The whole
 * fleet on the host reacts before it returns:
 *   429 (or 403/503 with rate-limit evidence: a retry hint or a remaining
 *       count of 0) pauses t's key and its descendants for the server's
 *       hint (one of 0 or in the past counts as none; a refilling
 *       bucket's count of 0 has a unit again in reset / limit), else the
 *       lockout of a limit with `cooldown', else a shared
 *       backoff that grows with each round of 429s (one round however
 *       many workers saw it) and resets on a success; the rate limits of
 *       the units at 0 (all, if none is named) are left empty at the
 *       pause's end; with `rejected = free' the ticket's charge is given
 *       back first; a 429 of an adaptive concurrency probe pauses nothing;
 *   5xx pauses for the hint, or the shared backoff;
 *   `remaining' tightens the key's limits of that unit as its provider
 *       means it: a window's (GitHub, IETF drafts) is at most that many
 *       more until its reset; a refilling bucket's (OpenAI, Azure, Groq,
 *       Anthropic) leaves at most that many in the bucket, its reset the
 *       time until full (never more than the config allows);
 *   a server `limit' unlike the config's is posted for the broker; where
 *       the key learns, 429s without figures teach it a lower rate.
 * Returns TG_OK (2xx, 3xx), TG_RETRY (429, 5xx, rate-limited 403: the
 * pause is in place, so the next tg_acquire waits the right time),
 * TG_GIVE_UP (401, other 403 and 4xx), or -EINVAL (a bad argument, or a
 * ticket never filled), -ESTALE (its key was removed).  Works on a ticket
 * before or after tg_release.  Makes no system call.
 */
int	tg_observe(tg_client *c, tg_ticket *t, int http_status,
	    const char *headers, size_t len);

/*
 * Reconcile the cost *t was taken with (an estimate: tokens are known
 * after the response) with what it actually used: an over-estimate is
 * refunded to every rate and window limit the ticket charged, as much of
 * it as those limits have not yet let expire (a settle after the bucket
 * refilled gives nothing back), never beyond a full bucket; an
 * under-estimate is charged (a debt of at most a bucket and a period per
 * limit, waited out by later tickets).  Later calls settle against the
 * last actual.  Returns 0, -EINVAL, -ESTALE, -EPERM (a ticket inherited
 * across fork: the parent's to settle).
 * Works before or after tg_release.  Makes no system call.
 */
int	tg_settle(tg_client *c, tg_ticket *t, const tg_cost *actual);

/*
 * Give back the concurrency leases of *t and mark it spent.  Rate and
 * window limits are not refunded: the request was made (see tg_settle),
 * unless a tg_reserve ticket is released before it became valid (see
 * there).  Idempotent; a ticket that was never filled, or was released
 * already, is left alone.  Makes no system call unless a waiter sleeps on
 * a freed lease (then one futex wake).
 */
void	tg_release(tg_client *c, tg_ticket *t);

/* A static English message for a result of this library (0 or -errno). */
const char *tg_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif /* TOLLGATE_H */
