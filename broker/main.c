/* main.c: tollgated, the tollgate broker: parse, own the segment, loop. */
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <bsd/libutil.h>
#include <bsd/string.h>
#include <bsd/unistd.h>
#include <err.h>
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker.h"
#include "clock.h"
#include "log.h"

extern char **environ;

static void
usage(void)
{
	fprintf(stderr, "usage: tollgated [-dn] [--reset] -c FILE\n");
	exit(2);
}

static void
report(void *arg, const char *msg)
{
	(void)arg;
	fprintf(stderr, "%s\n", msg);
}

static void
report_log(void *arg, const char *msg)
{
	(void)arg;
	log_warnx("reload: %s", msg);
}

/* SIGHUP: read the file again; a bad one changes nothing. */
void
broker_reload(struct broker *b)
{
	struct config cfg;
	char err[256], status[320];
	int n;

	notify_send("RELOADING=1");
	log_info("reloading %s", b->config_path);
	if ((n = config_load(b->config_path, &cfg, report_log, NULL)) != 0) {
		log_warnx("reload refused: %d error%s; the old config stays",
		    n, n == 1 ? "" : "s");
		goto out;
	}
	if (strcmp(cfg.segment, b->cfg.segment) != 0)
		log_warnx("reload: segment changes only on restart; "
		    "still serving %s", b->cfg.segment);
	if (segment_publish(b, &cfg, err, sizeof(err)) < 0) {
		log_warnx("reload refused: %s; the old config stays", err);
		config_free(&cfg);
		goto out;
	}
	/* What the segment already has stays: name, mode, capacities. */
	memcpy(cfg.segment, b->cfg.segment, sizeof(cfg.segment));
	config_free(&b->cfg);
	b->cfg = cfg;
	log_info("reloaded: %u keys, %u limits (generation %llu)",
	    cfg.nkeys, cfg.nlimits, (unsigned long long)seg_cfg(&b->m,
	    atomic_load(&b->m.hdr->config_idx))->gen);
out:
	snprintf(status, sizeof(status), "STATUS=serving %s: %u keys, "
	    "%u limits", b->cfg.segment, b->cfg.nkeys, b->cfg.nlimits);
	notify_send(status);
	notify_send("READY=1");
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
 * The broker holds a pidfd per client: with the usual soft limit of 1024
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

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "reset", no_argument, NULL, 'R' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct broker b;
	struct pidfh *pfh;
	pid_t other;
	char status[320];
	uint64_t st = 0;
	int ch, check = 0, n, r;

	memset(&b, 0, sizeof(b));
	b.sigfd = -1;
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
		default:
			usage();
		}
	}
	if (b.config_path == NULL || optind != argc)
		usage();
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
	if ((r = segment_open(&b)) < 0) {
		pidfile_remove(pfh);
		errx(1, "segment %s: %s", b.cfg.segment, strerror(-r));
	}
	/*
	 * A lock on the config object: two brokers with different pidfiles
	 * still cannot both own one segment.
	 */
	if (flock(b.m.hdr_fd, LOCK_EX | LOCK_NB) < 0) {
		pidfile_remove(pfh);
		errx(1, "segment %s is owned by another broker, pid %d",
		    b.cfg.segment, (int)atomic_load(&b.m.hdr->broker_pid));
	}
	if (segment_publish(&b, &b.cfg, status, sizeof(status)) < 0) {
		segment_discard(&b);
		pidfile_remove(pfh);
		errx(1, "segment %s: %s", b.cfg.segment, status);
	}
	pidfile_write(pfh);
	(void)proc_starttime(getpid(), &st);
	/* pid 0 first: no reader pairs the old pid with our start time. */
	atomic_store(&b.m.hdr->broker_pid, 0);
	atomic_store(&b.m.hdr->broker_start, st);
	atomic_store(&b.m.hdr->broker_since_ns, now_ns());
	atomic_store(&b.m.hdr->heartbeat_ns, now_ns());
	atomic_store(&b.m.hdr->broker_pid, (int32_t)getpid());

	clients_init(&b);
	guard_install(&b);
	if ((r = loop_init(&b)) < 0) {
		pidfile_remove(pfh);
		errx(1, "io_uring: %s", strerror(-r));
	}
	b.watchdog_ns = notify_watchdog_ns();
	setproctitle("segment %s", b.cfg.segment);
	log_info("serving segment %s: %u keys, %u limits, pid %d",
	    b.cfg.segment, b.cfg.nkeys, b.cfg.nlimits, (int)getpid());
	snprintf(status, sizeof(status), "STATUS=serving %s: %u keys, "
	    "%u limits", b.cfg.segment, b.cfg.nkeys, b.cfg.nlimits);
	notify_send(status);
	notify_send("READY=1");

	r = loop_run(&b);
	if (r < 0)
		log_warnx("loop: %s", strerror(-r));
	loop_fini(&b);
	clients_close(&b);
	atomic_store(&b.m.hdr->broker_pid, 0);
	segment_close(&b);
	config_free(&b.cfg);
	pidfile_remove(pfh);
	return r < 0 ? 1 : 0;
}
