/* main.c: tollgated, the tollgate broker: parse, own the segment, loop. */
#include <sys/resource.h>
#include <sys/stat.h>
#include <bsd/libutil.h>
#include <bsd/string.h>
#include <bsd/unistd.h>
#include <err.h>
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker.h"
#include "clients.h"
#include "clock.h"
#include "ctl.h"
#include "fed.h"
#include "log.h"
#include "loop.h"
#include "own.h"

extern char **environ;

static void
usage(FILE *f, int status)
{
	fprintf(f, "usage: tollgated [-dn] [--reset] -c FILE\n"
	    "  -c FILE    the config (tollgate.conf(5))\n"
	    "  -n         check the config and exit\n"
	    "  -d         log debug messages too\n"
	    "  --reset    remove and recreate the segment's objects\n"
	    "  --version  print the version and exit\n");
	exit(status);
}

static void
report(void *arg, const char *msg)
{
	(void)arg;
	fprintf(stderr, "%s\n", msg);
}

/* mkdir -p of the pidfile's directory, so /run/tollgate may not exist. */
static void
pidfile_dir(const char *path)
{
	char buf[PATH_MAX], *d;

	if (strlcpy(buf, path, sizeof(buf)) >= sizeof(buf))
		return;
	d = dirname(buf);
	for (char *p = d + 1; *p; p++)
		if (*p == '/') {
			*p = '\0';
			(void)mkdir(d, 0755);
			*p = '/';
		}
	(void)mkdir(d, 0755);
}

/*
 * The broker holds a pidfd per client of its PID namespace (a hint that
 * it exited, clients.c): with the usual soft limit of 1024
 * open files, max_clients = 1024 would run out.  Raise the soft limit as
 * far as the hard one allows, and say so if that is still too few.
 */
static void
fd_limit(uint32_t max_clients)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)max_clients + 64;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= want)
		return;
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ?
	    want : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < want)
		log_warnx("open files limited to %llu: fewer than max_clients "
		    "= %u clients can be watched", (unsigned long long)
		    rl.rlim_cur, max_clients);
}

/* The broker's parts, as the loop's callbacks see them. */
struct daemon {
	struct broker	*b;
	struct loop	loop;
	struct clients	*clients;
	struct ctl	*ctl;		/* tollctl's socket; NULL: none */
	struct fed	*fed;		/* NULL: no federation */
	uint64_t	watchdog_ns;	/* 0: no watchdog */
	uint64_t	last_watchdog_ns;
};

/* Every tick: the broker's duties, in order. */
static void
on_tick(void *arg, uint64_t now)
{
	struct daemon *d = arg;

	segment_tick(d->b, now);
	clients_scan(d->clients, now);
	guard_check(d->b, now);
	feedback_tick(d->b, now);
	ctl_tick(d->ctl, now);
	if (d->watchdog_ns && now - d->last_watchdog_ns >= d->watchdog_ns / 2) {
		notify_send("WATCHDOG=1");
		d->last_watchdog_ns = now;
	}
}

static void
on_signal(void *arg, int signo)
{
	struct daemon *d = arg;

	switch (signo) {
	case SIGHUP:
		reload_run(d->b);
		fed_configure(d->fed, d->b);
		break;
	case SIGTERM:
	case SIGINT:
		log_info("signal %d: stopping; the segment stays for the "
		    "next broker", signo);
		notify_send("STOPPING=1");
		loop_stop(&d->loop);
		break;
	}
}

/* A client's pidfd: that process exited; or tollctl's socket. */
static void
on_ready(void *arg, uint32_t id, uint32_t gen)
{
	struct daemon *d = arg;

	if (id >= CTL_ID_BASE)
		ctl_ready(d->ctl, id, gen, now_ns());
	else
		clients_exited(d->clients, id, gen, now_ns());
}

/*
 * Say in the header that we own the segment now.  The pid is the
 * sequence: 0 while the rest changes, ours last.  tollstat reads pid,
 * start time and since, then the pid again, and takes them only if both
 * reads of the pid agree (and are not 0).
 */
static void
attach_as_owner(struct broker *b)
{
	struct seg_header *h = b->m.hdr;
	uint64_t st = 0;

	(void)proc_starttime(getpid(), &st);
	atomic_store_explicit(&h->broker_pid, 0, memory_order_relaxed);
	/* Release fence: a reader that sees a field below sees the 0. */
	atomic_thread_fence(memory_order_release);
	atomic_store_explicit(&h->broker_start, st, memory_order_relaxed);
	atomic_store_explicit(&h->broker_since_ns, now_ns(),
	    memory_order_relaxed);
	atomic_store_explicit(&h->heartbeat_ns, now_ns(),
	    memory_order_relaxed);
	/* Release: a reader that sees our pid sees the fields above. */
	atomic_store_explicit(&h->broker_pid, (int32_t)getpid(),
	    memory_order_release);
}

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "reset", no_argument, NULL, 'R' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	static const int sigs[] = { SIGHUP, SIGTERM, SIGINT, 0 };
	static const struct loop_ops ops = { on_tick, on_signal, on_ready };
	struct daemon d;
	struct broker b;
	struct seglock lk;
	struct pidfh *pfh;
	pid_t other;
	char status[320];
	int ch, check = 0, n, r;

	memset(&b, 0, sizeof(b));
	memset(&d, 0, sizeof(d));
	d.b = &b;
	setproctitle_init(argc, argv, environ);
	while ((ch = getopt_long(argc, argv, "c:dnh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			b.config_path = optarg;
			break;
		case 'd':
			log_verbose = 1;
			break;
		case 'n':
			check = 1;
			break;
		case 'R':
			b.reset = 1;
			break;
		case 'h':
			usage(stdout, 0);
			break;
		case 'V':
			printf("tollgated %s\n", TG_VERSION);
			return 0;
		default:
			usage(stderr, 2);
		}
	}
	if (b.config_path == NULL || optind != argc)
		usage(stderr, 2);
	/* Times in the segment are the host's: know our namespace's offset. */
	if ((r = clock_init()) < 0)
		warnx("cannot read the time namespace offset (%s): the clock "
		    "is taken as the host's", strerror(-r));
	if ((n = config_load(b.config_path, &b.cfg, report, NULL)) != 0) {
		fprintf(stderr, "tollgated: %s: %d error%s\n", b.config_path,
		    n, n == 1 ? "" : "s");
		return 1;
	}
	/* What no segment holds, before anything is created (or -n OK). */
	if (segment_plan(&b.cfg, &(struct seg_plan){ 0 }, status,
	    sizeof(status)) < 0) {
		fprintf(stderr, "%s: %s\ntollgated: %s: 1 error\n",
		    b.config_path, status, b.config_path);
		config_free(&b.cfg);
		return 1;
	}
	if (check) {
		printf("configuration OK\n");
		config_free(&b.cfg);
		return 0;
	}

	fd_limit(b.cfg.max_clients);
	pidfile_dir(b.cfg.pidfile);
	if ((pfh = pidfile_open(b.cfg.pidfile, 0644, &other)) == NULL) {
		if (errno == EEXIST)
			errx(1, "already running as pid %d (pidfile %s)",
			    (int)other, b.cfg.pidfile);
		err(1, "pidfile %s", b.cfg.pidfile);
	}
	/*
	 * One broker per segment, whatever its pidfile: a lock file of the
	 * broker's own, 0600, taken before anything of the segment is
	 * removed (--reset) or made.  Not a lock on the config object, which
	 * every user can open and lock.
	 */
	if ((r = seglock_take(&lk, b.cfg.segment, &other)) < 0) {
		pidfile_remove(pfh);
		if (r == -EAGAIN && other > 0)
			errx(1, "segment %s is owned by another broker, pid %d "
			    "(it holds /dev/shm%s)", b.cfg.segment, (int)other,
			    lk.name);
		if (r == -EAGAIN)
			errx(1, "segment %s is owned by another broker, whose "
			    "pid is not visible here (it holds /dev/shm%s)",
			    b.cfg.segment, lk.name);
		errx(1, "segment %s: %s", b.cfg.segment, strerror(-r));
	}
	/* The lock carries the segment's group too; it stays 0600. */
	(void)own_apply(lk.fd, lk.name, 0, b.cfg.has_group, b.cfg.group);
	/* A lock file we made for a segment we could not make: remove it. */
	if ((r = segment_open(&b)) < 0) {
		seglock_drop(&lk, lk.created);
		pidfile_remove(pfh);
		errx(1, "segment %s: %s", b.cfg.segment, strerror(-r));
	}
	if (segment_publish(&b, &b.cfg, status, sizeof(status)) < 0) {
		segment_discard(&b);
		pidfile_remove(pfh);
		errx(1, "segment %s: %s", b.cfg.segment, status);
	}
	pidfile_write(pfh);
	attach_as_owner(&b);

	guard_install(&b);
	if ((r = loop_init(&d.loop, TICK_NS, sigs, &ops, &d)) < 0) {
		pidfile_remove(pfh);
		errx(1, "io_uring: %s", strerror(-r));
	}
	if ((d.clients = clients_new(&b.m, &d.loop)) == NULL) {
		pidfile_remove(pfh);
		errx(1, "out of memory");
	}
	d.ctl = ctl_open(&b, &d.loop);
	/* After loop_init: the thread inherits the blocked signals. */
	d.fed = fed_start(&b, &r);
	if (d.fed == NULL && r < 0) {
		pidfile_remove(pfh);
		errx(1, "federation: %s", strerror(-r));
	}
	d.watchdog_ns = notify_watchdog_ns();
	setproctitle("segment %s", b.cfg.segment);
	log_info("serving segment %s: %u keys, %u limits, pid %d",
	    b.cfg.segment, b.cfg.nkeys, b.cfg.nlimits, (int)getpid());
	snprintf(status, sizeof(status), "STATUS=serving %s: %u keys, "
	    "%u limits", b.cfg.segment, b.cfg.nkeys, b.cfg.nlimits);
	notify_send(status);
	notify_send("READY=1");

	r = loop_run(&d.loop);
	if (r < 0)
		log_warnx("loop: %s", strerror(-r));
	fed_stop(d.fed);
	loop_fini(&d.loop);
	ctl_close(d.ctl);
	clients_free(d.clients);
	/* Release: tollstat's acquire load of the pid reads "none". */
	atomic_store_explicit(&b.m.hdr->broker_pid, 0, memory_order_release);
	segment_close(&b);
	/* The lock file stays: no other user can make it while it is there. */
	seglock_drop(&lk, 0);
	config_free(&b.cfg);
	pidfile_remove(pfh);
	return r < 0 ? 1 : 0;
}
