/*
 * broker.c: a real tollgated, the one built beside tollbench, on a config
 * of ours in the bench's temp directory and a segment name of its own;
 * stopped, and its segment unlinked, at the end whatever happens.
 */
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tollgate.h"

#include "bench.h"
#include "seg.h"


/* Stop it if it runs, unlink the segment; safe to call twice. */
static void
broker_cleanup(void *arg)
{
	struct broker *b = arg;
	char conf[128], state[128];

	stop_child(&b->pid, SIGTERM, 5000000000ull);
	if (b->segment[0] != '\0' && seg_names(b->segment, conf, state,
	    sizeof(conf)) == 0) {
		shm_unlink(conf);
		shm_unlink(state);
		/* The broker's lock file, which it leaves for the next. */
		strncat(state, ".lock", sizeof(state) - strlen(state) - 1);
		shm_unlink(state);
	}
}

static int
write_conf(const struct broker *b, const char *extra, const char *body)
{
	FILE *f;

	if ((f = fopen(b->conf, "w")) == NULL)
		return -errno;
	fprintf(f, "[broker]\nsegment = %s\npidfile = %s\nmode = 0600\n%s\n"
	    "%s", b->segment, b->pidfile, extra ? extra : "", body);
	return fclose(f) == 0 ? 0 : -errno;
}

/* The last lines of the broker's log on stderr, to say why it failed. */
static void
log_tail(const struct broker *b)
{
	char buf[2048];
	FILE *f;
	long sz;
	size_t n;

	if ((f = fopen(b->log, "r")) == NULL)
		return;
	fseek(f, 0, SEEK_END);
	sz = ftell(f);
	fseek(f, sz > 1500 ? sz - 1500 : 0, SEEK_SET);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	fprintf(stderr, "--- %s\n%s---\n", b->log, buf);
}

/*
 * Start tollgated on [broker] lines `extra' (may be NULL) and key
 * sections `body', with -d (its log says when it watches a client), and
 * wait until a client can open the segment.  tag names the segment
 * (tgbench-PID-TAG) and the files.  Returns 0 or -errno.
 */
int
broker_start(struct broker *b, const char *tag, const char *extra,
    const char *body)
{
	char bin[PATH_MAX + 16], name[96];
	uint64_t deadline;
	tg_client *c;
	int fd, r;

	memset(b, 0, sizeof(*b));
	snprintf(bin, sizeof(bin), "%s/tollgated", opt.build);
	if (access(bin, X_OK) < 0) {
		bench_warnx("%s: %s (set TG_BUILD to the build directory)",
		    bin, strerror(errno));
		return -ENOENT;
	}
	snprintf(b->segment, sizeof(b->segment), "tgbench-%d-%s",
	    (int)getpid(), tag);
	snprintf(name, sizeof(name), "%s.conf", tag);
	if ((r = tmpdir_path(b->conf, sizeof(b->conf), name)) < 0)
		return r;
	snprintf(name, sizeof(name), "%s.log", tag);
	tmpdir_path(b->log, sizeof(b->log), name);
	snprintf(name, sizeof(name), "%s.pid", tag);
	tmpdir_path(b->pidfile, sizeof(b->pidfile), name);
	if ((r = write_conf(b, extra, body)) < 0)
		return r;
	if ((r = cleanup_push(broker_cleanup, b)) < 0)
		return r;
	if (R.nsegments < sizeof(R.segments) / sizeof(R.segments[0]))
		snprintf(R.segments[R.nsegments++], sizeof(R.segments[0]),
		    "%s", b->segment);
	if ((b->pid = fork()) < 0)
		return -errno;
	if (b->pid == 0) {
		/* Our own group: a ^C is ours to handle, and we stop it. */
		setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if ((fd = open(b->log, O_WRONLY | O_CREAT | O_APPEND, 0600))
		    >= 0) {
			dup2(fd, 2);
			close(fd);
		}
		if ((fd = open("/dev/null", O_RDWR)) >= 0) {
			dup2(fd, 0);
			dup2(fd, 1);
			close(fd);
		}
		execl(bin, "tollgated", "-d", "-c", b->conf, (char *)NULL);
		_exit(127);
	}
	if (R.npids < sizeof(R.pids) / sizeof(R.pids[0]))
		R.pids[R.npids++] = b->pid;
	/* Ready when a client can open it and the broker is ours. */
	deadline = now_ns_bench() + 10000000000ull;
	while (now_ns_bench() < deadline && !bench_signal) {
		struct seg_map m;
		int32_t owner = 0;
		int st;

		if (waitpid(b->pid, &st, WNOHANG) == b->pid) {
			b->pid = 0;
			bench_warnx("tollgated exited at start");
			log_tail(b);
			return -ECHILD;
		}
		if (seg_attach(b->segment, 0, &m) == 0) {
			owner = atomic_load(&m.hdr->broker_pid);
			seg_detach(&m);
		}
		if (owner == b->pid && tg_open(b->segment, &c) == 0) {
			tg_close(c);
			return 0;
		}
		sleep_ns(2000000);
	}
	bench_warnx("tollgated did not come up on %s", b->segment);
	log_tail(b);
	return bench_signal ? -EINTR : -ETIMEDOUT;
}

/* Stop the broker, unlink its segment. */
void
broker_stop(struct broker *b)
{
	cleanup_pop(broker_cleanup, b, 1);
}

/* Whether the broker's log says it watches the client of pid. */
int
broker_tracks(const struct broker *b, pid_t pid)
{
	char line[512], want[64];
	FILE *f;
	int found = 0;

	snprintf(want, sizeof(want), "client pid %d in slot", (int)pid);
	if ((f = fopen(b->log, "r")) == NULL)
		return 0;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, want) != NULL;
	fclose(f);
	return found;
}
