/*
 * ctl.h: private; tollctl's command socket, /dev/shm/<segment>.ctl, served
 * by the broker's loop (ctl.c).  The wire format is here because tollctl
 * speaks it too.
 */
#ifndef TG_CTL_H
#define TG_CTL_H

#include <stdint.h>

struct broker;
struct loop;

/*
 * One request is one SOCK_SEQPACKET message of printable ASCII words
 * separated by single spaces, at most CTL_REQ_MAX bytes, no NUL:
 *
 *	ping
 *	pause KEY NS		(NS: the pause in ns, decimal, > 0)
 *	resume KEY | reset KEY | drain KEY | undrain KEY
 *
 * The reply is one message: "ok TEXT" or "err ERRNO TEXT", where ERRNO is
 * the symbolic name of the reason (EACCES, ENOENT, EINVAL, EBUSY) and
 * TEXT says it for a person.
 */
#define CTL_REQ_MAX	128
#define CTL_REPLY_MAX	512
#define CTL_SUFFIX	".ctl"		/* /dev/shm/<segment>.ctl */
#define CTL_PAUSE_MIN_NS UINT64_C(1000000)	/* 1 ms */

/* Watch ids of the loop from here on are ctl.c's; below, the clients'. */
#define CTL_ID_BASE	0x100000u

struct ctl;

/*
 * Make the socket beside b's segment (owner, group and mode of its state
 * object) and watch it on l.  Returns the server, or NULL having logged
 * why: the broker then runs without one, and tollctl says so.
 */
struct ctl *ctl_open(struct broker *b, struct loop *l);

/* A watch of ours (id >= CTL_ID_BASE) is readable. */
void	ctl_ready(struct ctl *c, uint32_t id, uint32_t gen, uint64_t now);

/*
 * Every tick: close idle connections, keep the socket's mode in step with
 * the state object's, and put back drain flags a worker scribbled over.
 */
void	ctl_tick(struct ctl *c, uint64_t now);

/* Close every connection and remove the socket; c may be NULL. */
void	ctl_close(struct ctl *c);

#endif /* TG_CTL_H */
