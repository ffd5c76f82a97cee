/* loop.c: the broker's one io_uring loop: tick, signals, client pidfds. */
#include <sys/signalfd.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "broker.h"
#include "clock.h"
#include "log.h"

/* An SQE, submitting what is queued first if the ring is full. */
static struct io_uring_sqe *
sqe_get(struct broker *b)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);

	if (sqe == NULL) {
		io_uring_submit(&b->ring);
		sqe = io_uring_get_sqe(&b->ring);
	}
	return sqe;
}

static int
arm_tick(struct broker *b)
{
	struct io_uring_sqe *sqe = sqe_get(b);

	if (sqe == NULL)
		return -EBUSY;
	b->tick_ts.tv_sec = 0;
	b->tick_ts.tv_nsec = (long long)TICK_NS;
	io_uring_prep_timeout(sqe, &b->tick_ts, 0, 0);
	io_uring_sqe_set_data64(sqe, UD(EV_TICK, 0, 0));
	return 0;
}

static int
arm_signal(struct broker *b)
{
	struct io_uring_sqe *sqe = sqe_get(b);

	if (sqe == NULL)
		return -EBUSY;
	/* b->si, not the stack: the kernel writes it after we return. */
	io_uring_prep_read(sqe, b->sigfd, &b->si, sizeof(b->si), 0);
	io_uring_sqe_set_data64(sqe, UD(EV_SIGNAL, 0, 0));
	return 0;
}

int
loop_arm_pidfd(struct broker *b, uint32_t slot)
{
	struct io_uring_sqe *sqe = sqe_get(b);

	if (sqe == NULL)
		return -EBUSY;
	io_uring_prep_poll_add(sqe, b->cl[slot].pidfd, POLLIN);
	io_uring_sqe_set_data64(sqe, UD(EV_PIDFD, b->cl[slot].gen, slot));
	return 0;
}

void
loop_disarm_pidfd(struct broker *b, uint32_t slot)
{
	struct io_uring_sqe *sqe = sqe_get(b);

	if (sqe == NULL)
		return;		/* its completion is ignored by generation */
	io_uring_prep_poll_remove(sqe, UD(EV_PIDFD, b->cl[slot].gen, slot));
	io_uring_sqe_set_data64(sqe, UD(EV_CANCEL, 0, 0));
}

int
loop_init(struct broker *b)
{
	sigset_t mask;
	unsigned entries = 256;
	int r;

	/* Blocked first, read through the signalfd: no handlers. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		return -errno;
	if ((b->sigfd = signalfd(-1, &mask, SFD_CLOEXEC)) < 0)
		return -errno;
	if ((r = io_uring_queue_init(entries, &b->ring, 0)) < 0)
		return r;
	if ((r = arm_tick(b)) < 0 || (r = arm_signal(b)) < 0)
		return r;
	return 0;
}

static void
on_tick(struct broker *b)
{
	uint64_t now = now_ns();

	segment_tick(b, now);
	clients_scan(b, now);
	guard_check(b, now);
	feedback_tick(b, now);
	if (b->watchdog_ns && now - b->last_watchdog_ns >= b->watchdog_ns / 2) {
		notify_send("WATCHDOG=1");
		b->last_watchdog_ns = now;
	}
}

static void
on_signal(struct broker *b)
{
	switch (b->si.ssi_signo) {
	case SIGHUP:
		broker_reload(b);
		break;
	case SIGTERM:
	case SIGINT:
		log_info("signal %u: stopping; the segment stays for the "
		    "next broker", b->si.ssi_signo);
		notify_send("STOPPING=1");
		b->stopping = 1;
		break;
	}
}

static void
dispatch(struct broker *b, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);

	switch (UD_EV(ud)) {
	case EV_TICK:
		/* -ETIME is a timeout's normal end. */
		on_tick(b);
		if (arm_tick(b) < 0)
			log_warnx("cannot re-arm the tick");
		break;
	case EV_SIGNAL:
		if (cqe->res == (int)sizeof(b->si))
			on_signal(b);
		else if (cqe->res < 0 && cqe->res != -EINTR &&
		    cqe->res != -EAGAIN)
			log_warnx("signalfd read: %s", strerror(-cqe->res));
		if (!b->stopping && arm_signal(b) < 0)
			log_warnx("cannot re-arm the signalfd");
		break;
	case EV_PIDFD:
		if (cqe->res == -ECANCELED)
			break;
		clients_exited(b, UD_SLOT(ud), UD_GEN(ud), now_ns());
		break;
	case EV_CANCEL:
		break;
	default:
		log_warnx("completion with unknown user_data %#llx",
		    (unsigned long long)ud);
	}
}

/* Run until a signal asks us to stop.  Returns 0, or -errno from the ring. */
int
loop_run(struct broker *b)
{
	struct io_uring_cqe *cqe;
	unsigned head, n;
	int ret;

	while (!b->stopping) {
		if ((ret = io_uring_submit_and_wait(&b->ring, 1)) == -EINTR)
			continue;
		if (ret < 0)
			return ret;
		n = 0;
		io_uring_for_each_cqe(&b->ring, head, cqe) {
			dispatch(b, cqe);
			n++;
		}
		io_uring_cq_advance(&b->ring, n);
	}
	return 0;
}

void
loop_fini(struct broker *b)
{
	io_uring_queue_exit(&b->ring);
	if (b->sigfd >= 0)
		close(b->sigfd);
}
