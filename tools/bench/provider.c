/*
 * provider.c: a strict rate-limited API for goodput, in a forked process
 * speaking minimal HTTP/1.1 on 127.0.0.1 (a real socket and real header
 * blocks: what a worker hands tg_observe is what a server sent).  It
 * enforces, each if the model has it: a token bucket refilled
 * continuously, a fixed window, requests in flight, and a lockout when a
 * request finds the bucket dry.  A refused request gets a 429 at once
 * and costs nothing; an accepted one is answered 200 after the model's
 * service time.  Every request is logged in shared memory, for the
 * figures.  Limits are time-scaled (20 requests per 2 s, not per minute)
 * so a batch takes seconds; the headers carry fractions of a second.
 */
#include <sys/prctl.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define CONN_MAX	(GP_WORKERS + 8)
#define DUE_MAX		64
#define REQ_MAX		2048

struct conn {
	int		fd;
	size_t		len;
	char		buf[REQ_MAX];
};

/* An accepted request, answered when its service time is up. */
struct due {
	uint64_t	at_ns;
	int		fd;
};

/* What the provider keeps; only its process touches it. */
struct state {
	const struct gp_model *m;
	struct gp_log	*log;
	double		tokens;		/* the bucket, fractional */
	uint64_t	last_ns;	/* when tokens was right */
	uint64_t	lock_until_ns;
	uint64_t	win_start_ns;
	unsigned	win_count;
	struct due	due[DUE_MAX];
	unsigned	ndue;
	struct conn	conn[CONN_MAX];
};

static void
refill(struct state *s, uint64_t now)
{
	const struct gp_model *m = s->m;

	if (m->rate_n != 0) {
		s->tokens += (double)(now - s->last_ns) * m->rate_n /
		    (double)m->rate_ns;
		if (s->tokens > m->burst)
			s->tokens = m->burst;
		s->last_ns = now;
	}
	if (m->window_n != 0)
		while (now >= s->win_start_ns + m->window_ns) {
			s->win_start_ns += m->window_ns;
			s->win_count = 0;
		}
}

/* ns until the bucket holds n more units; 0 if it does. */
static uint64_t
bucket_wait(const struct state *s, double n)
{
	const struct gp_model *m = s->m;

	if (s->tokens >= n)
		return 0;
	return (uint64_t)((n - s->tokens) * (double)m->rate_ns / m->rate_n) +
	    1;
}

/* The earliest time an in-flight request is answered, from now. */
static uint64_t
next_done(const struct state *s, uint64_t now)
{
	uint64_t t = UINT64_MAX;

	for (unsigned i = 0; i < s->ndue; i++)
		if (s->due[i].at_ns < t)
			t = s->due[i].at_ns;
	return t == UINT64_MAX || t < now ? 0 : t - now;
}

/* A duration as OpenAI writes one (Go's time.Duration): 1.234s, 120ms. */
static void
go_duration(char *buf, size_t len, uint64_t ns)
{
	if (ns < 1000000000u)
		snprintf(buf, len, "%llums", (unsigned long long)(ns +
		    999999) / 1000000);
	else
		snprintf(buf, len, "%.3fs", (double)ns / 1e9);
}

/* The wall-clock time ns from now in RFC 3339, with milliseconds. */
static void
rfc3339(char *buf, size_t len, uint64_t ns)
{
	struct timespec ts;
	struct tm tm;
	uint64_t ms;
	time_t sec;

	clock_gettime(CLOCK_REALTIME, &ts);
	ms = ((uint64_t)ts.tv_nsec + ns + 999999) / 1000000;
	sec = ts.tv_sec + (time_t)(ms / 1000);
	gmtime_r(&sec, &tm);
	snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, (unsigned)(ms % 1000));
}

/*
 * The rate-limit headers of the model's style, for a response that
 * leaves the bucket as it is now; `retry' is a 429's hint in ns.
 */
static int
headers(const struct state *s, char *buf, size_t len, int status,
    uint64_t retry)
{
	const struct gp_model *m = s->m;
	unsigned left = s->tokens > 0 ? (unsigned)s->tokens : 0;
	/* Rounded up, as servers do: a client that obeys is never early. */
	double ra = (double)((retry + 999999) / 1000000) / 1e3;
	uint64_t full = s->m->rate_n ? bucket_wait(s, m->burst) : 0;
	char reset[64];
	int n = 0;

	switch (m->style) {
	case GP_RETRY_AFTER:
		if (status == 429)
			n = snprintf(buf, len, "retry-after: %.3f\r\n", ra);
		break;
	case GP_OPENAI:
		/* A continuous bucket: reset is the time until full. */
		go_duration(reset, sizeof(reset), full);
		n = snprintf(buf, len, "x-ratelimit-limit-requests: %u\r\n"
		    "x-ratelimit-remaining-requests: %u\r\n"
		    "x-ratelimit-reset-requests: %s\r\n", m->burst, left,
		    reset);
		break;
	case GP_ANTHROPIC:
		rfc3339(reset, sizeof(reset), full);
		n = snprintf(buf, len, "anthropic-ratelimit-requests-limit: "
		    "%u\r\nanthropic-ratelimit-requests-remaining: %u\r\n"
		    "anthropic-ratelimit-requests-reset: %s\r\n", m->burst,
		    left, reset);
		if (status == 429 && n > 0 && (size_t)n < len)
			n += snprintf(buf + n, len - (size_t)n,
			    "retry-after: %.3f\r\n", ra);
		break;
	}
	return n < 0 || (size_t)n >= len ? 0 : n;
}

static void
respond(const struct state *s, int fd, int status, uint64_t retry)
{
	char buf[1024], h[512];

	headers(s, h, sizeof(h), status, retry);
	snprintf(buf, sizeof(buf), "HTTP/1.1 %d %s\r\n"
	    "content-type: application/json\r\n%s"
	    "content-length: 2\r\n\r\n{}", status, status == 200 ? "OK" :
	    "Too Many Requests", h);
	/* Small, to a reader that waits for it: never blocks for long. */
	if (write(fd, buf, strlen(buf)) < 0)
		return;
}

/* The worker number a request names in x-worker, else 0. */
static unsigned
worker_of(const char *req)
{
	const char *p = strstr(req, "\r\nx-worker: ");

	return p != NULL ? (unsigned)atoi(p + 12) : 0;
}

/* Decide on the request at hand: accept it, or 429 and why. */
static void
request(struct state *s, int fd, unsigned worker)
{
	const struct gp_model *m = s->m;
	uint64_t now = clock_ns(), ready = 0;
	struct gp_log *log = s->log;
	int status = 200;
	uint32_t i;

	refill(s, now);
	if (s->lock_until_ns > now) {
		status = 429;
		ready = s->lock_until_ns - now;
	} else if (m->conc != 0 && s->ndue >= m->conc) {
		status = 429;
		ready = next_done(s, now);
	} else if (m->rate_n != 0 && s->tokens < 1) {
		status = 429;
		ready = bucket_wait(s, 1);
		if (m->cooldown_ns != 0) {
			s->lock_until_ns = now + m->cooldown_ns;
			if (ready < m->cooldown_ns)
				ready = m->cooldown_ns;
		}
	} else if (m->window_n != 0 && s->win_count >= m->window_n) {
		status = 429;
		ready = s->win_start_ns + m->window_ns - now;
	} else if (s->ndue == DUE_MAX) {
		status = 503;	/* cannot happen with GP_WORKERS clients */
	}
	if (status == 200) {
		if (m->rate_n != 0)
			s->tokens -= 1;
		s->win_count++;
		s->due[s->ndue].at_ns = now + m->service_ns;
		s->due[s->ndue++].fd = fd;
	}
	i = atomic_load_explicit(&log->n, memory_order_relaxed);
	if (i < GP_EVENTS_MAX) {
		log->ev[i] = (struct gp_event){ now, ready, (uint16_t)worker,
		    (uint16_t)status };
		/* Release: the parent reads the entry after the count. */
		atomic_store_explicit(&log->n, i + 1, memory_order_release);
	} else
		log->dropped++;
	if (status != 200)
		respond(s, fd, status, ready);
}

/* Answer the accepted requests whose service time is up. */
static void
answer_due(struct state *s)
{
	uint64_t now = clock_ns();

	for (unsigned i = 0; i < s->ndue;) {
		if (s->due[i].at_ns > now) {
			i++;
			continue;
		}
		refill(s, now);
		respond(s, s->due[i].fd, 200, 0);
		s->due[i] = s->due[--s->ndue];
	}
}

/* Read what a connection sent, handle each whole request; -1: closed. */
static int
conn_read(struct state *s, struct conn *c)
{
	ssize_t n;
	char *end;

	n = read(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
	if (n <= 0)
		return -1;
	c->len += (size_t)n;
	c->buf[c->len] = '\0';
	/* Requests have no body: each ends at its blank line. */
	while ((end = strstr(c->buf, "\r\n\r\n")) != NULL) {
		size_t used = (size_t)(end + 4 - c->buf);

		*end = '\0';
		request(s, c->fd, worker_of(c->buf));
		memmove(c->buf, c->buf + used, c->len - used + 1);
		c->len -= used;
	}
	return c->len == sizeof(c->buf) - 1 ? -1 : 0;
}

static void __attribute__((noreturn))
serve(const struct gp_model *m, int lfd, struct gp_log *log)
{
	static struct state s;
	struct pollfd pfd[CONN_MAX + 1];
	unsigned i;
	int one = 1;

	s.m = m;
	s.log = log;
	s.tokens = m->burst;
	s.last_ns = s.win_start_ns = log->origin_ns;
	for (i = 0; i < CONN_MAX; i++)
		s.conn[i].fd = -1;
	for (;;) {
		uint64_t wait = next_done(&s, clock_ns());
		int timeout = s.ndue ? (int)((wait + 999999) / 1000000) : 1000;

		pfd[0] = (struct pollfd){ lfd, POLLIN, 0 };
		for (i = 0; i < CONN_MAX; i++)
			pfd[i + 1] = (struct pollfd){ s.conn[i].fd, POLLIN,
			    0 };
		if (poll(pfd, CONN_MAX + 1, timeout) < 0 && errno != EINTR)
			_exit(1);
		answer_due(&s);
		for (i = 0; i < CONN_MAX; i++) {
			struct conn *c = &s.conn[i];

			if (c->fd < 0 || !(pfd[i + 1].revents & (POLLIN |
			    POLLHUP | POLLERR)))
				continue;
			if (conn_read(&s, c) < 0) {
				for (unsigned k = 0; k < s.ndue;)
					if (s.due[k].fd == c->fd)
						s.due[k] = s.due[--s.ndue];
					else
						k++;
				close(c->fd);
				c->fd = -1;
				c->len = 0;
			}
		}
		if (pfd[0].revents & POLLIN) {
			int fd = accept(lfd, NULL, NULL);

			for (i = 0; fd >= 0 && i < CONN_MAX; i++)
				if (s.conn[i].fd < 0) {
					setsockopt(fd, IPPROTO_TCP,
					    TCP_NODELAY, &one, sizeof(one));
					s.conn[i].fd = fd;
					fd = -1;
				}
			if (fd >= 0)
				close(fd);
		}
	}
}

/*
 * Listen on an ephemeral port of 127.0.0.1 and fork the provider of
 * model m, logging into log (reset here).  0, or -errno.
 */
int
provider_start(struct provider *p, const struct gp_model *m,
    struct gp_log *log)
{
	struct sockaddr_in a;
	socklen_t alen = sizeof(a);
	int lfd, e;

	memset(p, 0, sizeof(*p));
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -errno;
	if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(lfd, 64) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&a, &alen) < 0) {
		e = -errno;
		close(lfd);
		return e;
	}
	p->port = ntohs(a.sin_port);
	atomic_store(&log->n, 0);
	log->dropped = 0;
	log->origin_ns = clock_ns();
	if ((p->pid = fork()) < 0) {
		e = -errno;
		close(lfd);
		return e;
	}
	if (p->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		signal(SIGINT, SIG_IGN);	/* the parent stops us */
		signal(SIGTERM, SIG_DFL);
		serve(m, lfd, log);
	}
	close(lfd);
	return 0;
}

void
provider_stop(struct provider *p)
{
	stop_child(&p->pid, SIGKILL, 2000000000ull);
}
