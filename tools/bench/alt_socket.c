/*
 * alt_socket.c: the classic daemon way.  One broker process the bench
 * forks keeps the GCRA and serves every worker over a Unix stream socket,
 * epoll over the clients; a worker sends the cost (8 bytes) and reads the
 * answer (8 bytes: 0 granted, else the retry in ns).
 */
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#define SOCK_COST_NS	UINT64_C(1)
#define SOCK_TAU_NS	UINT64_C(1000000000)
#define SOCK_FDS	1024

static struct {
	pid_t			pid;
	struct sockaddr_un	sun;
} srv;

/* The server's GCRA, on its own memory: no atomics needed. */
static uint64_t
serve_one(uint64_t *tat, uint64_t cost_ns)
{
	uint64_t now = clock_ns(), next;

	next = (*tat > now ? *tat : now) + cost_ns;
	if (next - now > SOCK_TAU_NS)
		return next - now - SOCK_TAU_NS;
	*tat = next;
	return 0;
}

static void __attribute__((noreturn))
server(int lfd, int ready)
{
	static unsigned char part[SOCK_FDS][8];
	static unsigned plen[SOCK_FDS];
	struct epoll_event ev, evs[64];
	unsigned char buf[4096];
	uint64_t tat = 0, cost, reply;
	ssize_t got;
	int ep, n, fd;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
		_exit(1);
	ev.events = EPOLLIN;
	ev.data.fd = lfd;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
		_exit(1);
	if (write(ready, "r", 1) != 1)
		_exit(1);
	close(ready);
	for (;;) {
		if ((n = epoll_wait(ep, evs, 64, -1)) < 0) {
			if (errno == EINTR)
				continue;
			_exit(1);
		}
		for (int i = 0; i < n; i++) {
			if ((fd = evs[i].data.fd) == lfd) {
				while ((fd = accept4(lfd, NULL, NULL,
				    SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
					if (fd >= SOCK_FDS) {
						close(fd);
						continue;
					}
					plen[fd] = 0;
					ev.events = EPOLLIN;
					ev.data.fd = fd;
					if (epoll_ctl(ep, EPOLL_CTL_ADD, fd,
					    &ev) < 0)
						close(fd);
				}
				continue;
			}
			got = read(fd, buf, sizeof(buf));
			if (got < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (got <= 0) {
				close(fd);	/* leaves the epoll set too */
				continue;
			}
			/* Whole requests of 8 bytes; a part waits for more. */
			for (ssize_t k = 0; k < got; k++) {
				part[fd][plen[fd]++] = buf[k];
				if (plen[fd] < 8)
					continue;
				plen[fd] = 0;
				memcpy(&cost, part[fd], 8);
				reply = serve_one(&tat, cost);
				if (write(fd, &reply, 8) != 8) {
					close(fd);
					break;
				}
			}
		}
	}
}

static void
socket_cleanup(void *arg)
{
	(void)arg;
	stop_child(&srv.pid, SIGTERM, 5000000000ull);
	if (srv.sun.sun_path[0] != '\0')
		unlink(srv.sun.sun_path);
}

struct sockctx {
	int	fd;
};

static int
socket_setup(void *arg, void **ctxp)
{
	struct sockctx *x;
	int e;

	(void)arg;
	if ((x = malloc(sizeof(*x))) == NULL)
		return -ENOMEM;
	if ((x->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    connect(x->fd, (struct sockaddr *)&srv.sun, sizeof(srv.sun)) < 0) {
		e = -errno;
		if (x->fd >= 0)
			close(x->fd);
		free(x);
		return e;
	}
	*ctxp = x;
	return 0;
}

static void
socket_teardown(void *ctx)
{
	struct sockctx *x = ctx;

	close(x->fd);
	free(x);
}

/* Read exactly len bytes; 0 or -1. */
static int
read_full(int fd, void *p, size_t len)
{
	size_t done = 0;
	ssize_t n;

	while (done < len) {
		n = read(fd, (char *)p + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		done += (size_t)n;
	}
	return 0;
}

static void
socket_loop(void *ctx, const _Atomic uint32_t *stop, struct loop_out *out)
{
	struct sockctx *x = ctx;
	uint64_t n = 0, refused = 0, cost = SOCK_COST_NS, reply;

	while (!atomic_load_explicit(stop, memory_order_relaxed)) {
		if (write(x->fd, &cost, 8) != 8 ||
		    read_full(x->fd, &reply, 8) < 0) {
			refused++;
			break;
		}
		if (reply != 0)
			refused++;
		n++;
	}
	out->ops = n;
	out->refused = refused;
}

/* Fork the socket broker and add its row. */
int
socket_rows(struct results *res)
{
	struct row *r;
	int lfd, p[2], e;
	char c;

	if ((r = row_add(res, "alt-socket", "alt: GCRA in a broker over a "
	    "Unix socket")) == NULL)
		return 0;
	srv.sun.sun_family = AF_UNIX;
	if ((e = tmpdir_path(srv.sun.sun_path, sizeof(srv.sun.sun_path),
	    "gcra.sock")) < 0) {
		r->skipped = "no socket path";
		return e;
	}
	if ((lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC |
	    SOCK_NONBLOCK, 0)) < 0)
		goto fail;
	if (bind(lfd, (struct sockaddr *)&srv.sun, sizeof(srv.sun)) < 0 ||
	    listen(lfd, 256) < 0 || pipe(p) < 0) {
		close(lfd);
		goto fail;
	}
	if (cleanup_push(socket_cleanup, NULL) < 0 ||
	    (srv.pid = fork()) < 0) {
		close(lfd);
		close(p[0]);
		close(p[1]);
		goto fail;
	}
	if (srv.pid == 0) {
		close(p[0]);
		server(lfd, p[1]);
	}
	close(lfd);
	close(p[1]);
	/* The server listens before it says so. */
	while ((e = (int)read(p[0], &c, 1)) < 0 && errno == EINTR &&
	    !bench_signal)
		;
	close(p[0]);
	if (e != 1) {
		r->skipped = "the socket broker did not start";
		return -ECHILD;
	}
	r->setup = socket_setup;
	r->loop = socket_loop;
	r->teardown = socket_teardown;
	return 0;
fail:
	e = -errno;
	r->skipped = "cannot set the socket broker up";
	return e;
}

/* Stop the socket broker now: its row is done. */
void
socket_stop(void)
{
	cleanup_pop(socket_cleanup, NULL, 1);
}
