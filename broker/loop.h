/*
 * loop.h: private; the broker's one io_uring loop.  It watches a tick, a
 * signalfd and any number of descriptors, and calls back: it knows
 * nothing of what the broker does with them.
 */
#ifndef TG_LOOP_H
#define TG_LOOP_H

#include <sys/signalfd.h>
#include <linux/time_types.h>
#include <liburing.h>
#include <signal.h>
#include <stdint.h>

struct loop_ops {
	/* Every tick_ns, with CLOCK_MONOTONIC (the host's) now. */
	void	(*tick)(void *arg, uint64_t now_ns);
	/* One of the signals given to loop_init arrived. */
	void	(*signal)(void *arg, int signo);
	/* A descriptor watched under (id, gen) became readable. */
	void	(*ready)(void *arg, uint32_t id, uint32_t gen);
};

struct loop {
	struct io_uring	ring;
	int		sigfd;		/* -1 until loop_init made it */
	struct signalfd_siginfo si;	/* the kernel writes it after arming */
	struct __kernel_timespec tick_ts;
	const struct loop_ops *ops;
	void		*arg;
	int		stopping;
};

/*
 * Block sigs (terminated by 0) and read them through a signalfd, set up
 * the ring, arm the tick.  Returns 0 or -errno.
 */
int	loop_init(struct loop *l, uint64_t tick_ns, const int *sigs,
	    const struct loop_ops *ops, void *arg);

/*
 * Call ops->ready(arg, id, gen) once fd is readable (a poll, one shot).
 * id < 2^24, gen's low 24 bits name the watch.  Returns 0 or -EBUSY.
 */
int	loop_watch(struct loop *l, int fd, uint32_t id, uint32_t gen);

/* Cancel the watch (id, gen); a completion that races it is ignored. */
void	loop_unwatch(struct loop *l, uint32_t id, uint32_t gen);

/* Run until loop_stop.  Returns 0, or -errno from the ring. */
int	loop_run(struct loop *l);

/* Make loop_run return after the completions at hand. */
void	loop_stop(struct loop *l);

void	loop_fini(struct loop *l);

#endif /* TG_LOOP_H */
