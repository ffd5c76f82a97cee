/* loop.c: the broker's one io_uring loop: a tick, signals, descriptors. */
#include <sys/signalfd.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "loop.h"

/* user_data: event << 56 | watch generation << 24 | watch id. */
enum ev {
	EV_TICK = 1,
	EV_SIGNAL = 2,
	EV_READY = 3,
	EV_CANCEL = 4,		/* a poll removal: nothing to do */
};
#define UD(ev, gen, id)		((uint64_t)(ev) << 56 | \
	    (uint64_t)((gen) & 0xffffffu) << 24 | ((id) & 0xffffffu))
#define UD_EV(u)		((unsigned)((u) >> 56))
#define UD_GEN(u)		((uint32_t)((u) >> 24) & 0xffffffu)
#define UD_ID(u)		((uint32_t)(u) & 0xffffffu)

/* An SQE, submitting what is queued first if the ring is full. */
static struct io_uring_sqe *
sqe_get(struct loop *l)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);

	if (sqe == NULL) {
		io_uring_submit(&l->ring);
		sqe = io_uring_get_sqe(&l->ring);
	}
	return sqe;
}

static int
arm_tick(struct loop *l)
{
	struct io_uring_sqe *sqe = sqe_get(l);

	if (sqe == NULL)
		return -EBUSY;
	io_uring_prep_timeout(sqe, &l->tick_ts, 0, 0);
	io_uring_sqe_set_data64(sqe, UD(EV_TICK, 0, 0));
	return 0;
}

static int
arm_signal(struct loop *l)
{
	struct io_uring_sqe *sqe = sqe_get(l);

	if (sqe == NULL)
		return -EBUSY;
	/* l->si, not the stack: the kernel writes it after we return. */
	io_uring_prep_read(sqe, l->sigfd, &l->si, sizeof(l->si), 0);
	io_uring_sqe_set_data64(sqe, UD(EV_SIGNAL, 0, 0));
	return 0;
}

int
loop_watch(struct loop *l, int fd, uint32_t id, uint32_t gen)
{
	struct io_uring_sqe *sqe = sqe_get(l);

	if (sqe == NULL)
		return -EBUSY;
	io_uring_prep_poll_add(sqe, fd, POLLIN);
	io_uring_sqe_set_data64(sqe, UD(EV_READY, gen, id));
	return 0;
}

void
loop_unwatch(struct loop *l, uint32_t id, uint32_t gen)
{
	struct io_uring_sqe *sqe = sqe_get(l);

	if (sqe == NULL)
		return;		/* its completion is ignored by generation */
	io_uring_prep_poll_remove(sqe, UD(EV_READY, gen, id));
	io_uring_sqe_set_data64(sqe, UD(EV_CANCEL, 0, 0));
}

int
loop_init(struct loop *l, uint64_t tick_ns, const int *sigs,
    const struct loop_ops *ops, void *arg)
{
	sigset_t mask;
	int r;

	memset(l, 0, sizeof(*l));
	l->sigfd = -1;
	l->ops = ops;
	l->arg = arg;
	l->tick_ts.tv_sec = (long long)(tick_ns / 1000000000u);
	l->tick_ts.tv_nsec = (long long)(tick_ns % 1000000000u);
	/* Blocked first, read through the signalfd: no handlers. */
	sigemptyset(&mask);
	for (; *sigs != 0; sigs++)
		sigaddset(&mask, *sigs);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		return -errno;
	if ((l->sigfd = signalfd(-1, &mask, SFD_CLOEXEC)) < 0)
		return -errno;
	if ((r = io_uring_queue_init(256, &l->ring, 0)) < 0)
		return r;
	if ((r = arm_tick(l)) < 0 || (r = arm_signal(l)) < 0)
		return r;
	return 0;
}

static void
dispatch(struct loop *l, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);

	switch (UD_EV(ud)) {
	case EV_TICK:
		/* -ETIME is a timeout's normal end. */
		l->ops->tick(l->arg, now_ns());
		if (arm_tick(l) < 0)
			log_warnx("cannot re-arm the tick");
		break;
	case EV_SIGNAL:
		if (cqe->res == (int)sizeof(l->si))
			l->ops->signal(l->arg, (int)l->si.ssi_signo);
		else if (cqe->res < 0 && cqe->res != -EINTR &&
		    cqe->res != -EAGAIN)
			log_warnx("signalfd read: %s", strerror(-cqe->res));
		if (!l->stopping && arm_signal(l) < 0)
			log_warnx("cannot re-arm the signalfd");
		break;
	case EV_READY:
		if (cqe->res != -ECANCELED)
			l->ops->ready(l->arg, UD_ID(ud), UD_GEN(ud));
		break;
	case EV_CANCEL:
		break;
	default:
		log_warnx("completion with unknown user_data %#llx",
		    (unsigned long long)ud);
	}
}

int
loop_run(struct loop *l)
{
	struct io_uring_cqe *cqe;
	unsigned head, n;
	int ret;

	while (!l->stopping) {
		if ((ret = io_uring_submit_and_wait(&l->ring, 1)) == -EINTR)
			continue;
		if (ret < 0)
			return ret;
		n = 0;
		io_uring_for_each_cqe(&l->ring, head, cqe) {
			dispatch(l, cqe);
			n++;
		}
		io_uring_cq_advance(&l->ring, n);
	}
	return 0;
}

void
loop_stop(struct loop *l)
{
	l->stopping = 1;
}

void
loop_fini(struct loop *l)
{
	if (l->ring.ring_fd > 0)
		io_uring_queue_exit(&l->ring);
	if (l->sigfd >= 0)
		close(l->sigfd);
}
