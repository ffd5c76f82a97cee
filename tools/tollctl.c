/*
 * tollctl.c: act on a live segment.  Pause, resume, reset, drain and
 * undrain a key through the broker's command socket (broker/ctl.c), which
 * checks who asks and logs it; show what tollctl changed (status); remove
 * a segment no broker serves (remove), under the broker's own lock so
 * that no broker starts on it meanwhile.
 */
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "clock.h"
#include "ctl.h"
#include "limit.h"
#include "seg.h"

#define EXIT_REFUSED	1	/* the broker said no; a broker runs */
#define EXIT_USAGE	2
#define REPLY_WAIT_MS	10000	/* a broker answers within a tick */
#define PIDS_SHOWN	8

static void
usage(FILE *f, int status)
{
	fprintf(f, "usage: tollctl [-s SEGMENT] pause KEY DURATION\n"
	    "       tollctl [-s SEGMENT] resume | reset | drain | undrain KEY\n"
	    "       tollctl [-s SEGMENT] status\n"
	    "       tollctl [-f] remove SEGMENT\n"
	    "  -s SEGMENT  the segment (default $TOLLGATE_SEGMENT, else "
	    "\"tollgate\")\n"
	    "  -f          remove: even while workers still map it\n"
	    "  -h, --help  this help\n"
	    "  --version   the version\n"
	    "pause: KEY and the keys under it take no ticket for DURATION "
	    "(30s, 10min, 2h).\n"
	    "resume: clear the pause and backoff of KEY and the keys under "
	    "it.\n"
	    "reset: KEY's limits full, learned values back to the config's.\n"
	    "drain: refuse new tickets of KEY and the keys under it; those "
	    "in flight\nfinish.  undrain: take them again.  status: the "
	    "broker, drained and\npaused keys, what tollctl did.  remove: "
	    "unlink the objects of a segment\nno broker serves.\n");
	exit(status);
}

/* "/dev/shm/<segment>.ctl" */
static void
ctl_path(const char *segment, char *buf, size_t len)
{
	if ((size_t)snprintf(buf, len, "/dev/shm/%s%s", segment,
	    CTL_SUFFIX) >= len)
		errx(EXIT_USAGE, "segment %s: name too long for a command "
		    "socket", segment);
}

/*
 * The owner of the segment's config object: the broker's user, whom the
 * command socket must belong to.  Exits when there is no segment.
 */
static uid_t
seg_owner(const char *segment)
{
	char conf[256], state[256];
	struct stat st;
	int fd, r;

	if ((r = seg_names(segment, conf, state, sizeof(conf))) < 0)
		errx(EXIT_USAGE, "segment %s: %s", segment, r == -EINVAL ?
		    "not a segment name (letters, digits, '.', '_', '-')" :
		    "name too long");
	if ((fd = shm_open(conf, O_RDONLY | O_CLOEXEC | O_NOFOLLOW, 0)) < 0) {
		if (errno == ENOENT)
			errx(EX_UNAVAILABLE, "no segment %s (is tollgated "
			    "running?)", segment);
		err(EX_UNAVAILABLE, "segment %s: /dev/shm%s", segment, conf);
	}
	if (fstat(fd, &st) < 0)
		err(EX_OSERR, "/dev/shm%s", conf);
	close(fd);
	return st.st_uid;
}

/*
 * Connect to the broker of segment.  Exits saying why when none answers
 * there, when we may not, or when whoever listens is not the segment's
 * owner: a socket someone else planted in /dev/shm must not hear a word.
 */
static int
ctl_connect(const char *segment)
{
	struct sockaddr_un sa;
	struct ucred uc;
	socklen_t len = sizeof(uc);
	char path[sizeof(sa.sun_path)];
	uid_t owner;
	int fd;

	owner = seg_owner(segment);
	ctl_path(segment, path, sizeof(path));
	if ((fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0)) < 0)
		err(EX_OSERR, "socket");
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		switch (errno) {
		case ENOENT:
			errx(EX_UNAVAILABLE, "segment %s has no command socket "
			    "%s: its broker is not running (or predates "
			    "tollctl)", segment, path);
		case ECONNREFUSED:
			errx(EX_UNAVAILABLE, "no broker listens on %s: "
			    "tollgated of segment %s is not running", path,
			    segment);
		case EACCES:
		case EPERM:
			errx(EX_NOPERM, "%s: permission denied: only users "
			    "who may write the state object /dev/shm/%s may "
			    "act (its owner, or its group if the config's "
			    "mode lets the group write)", path, segment);
		}
		err(EX_UNAVAILABLE, "connect %s", path);
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0)
		err(EX_OSERR, "SO_PEERCRED");
	if (uc.uid != owner)
		errx(EX_UNAVAILABLE, "%s is served by uid %u, but segment %s "
		    "is uid %u's: not its broker, not asked", path,
		    (unsigned)uc.uid, segment, (unsigned)owner);
	return fd;
}

/*
 * Send one request and print the broker's reply.  Returns the exit
 * status: 0 done, 1 refused (EX_NOPERM when for permission).
 */
static int
request(const char *segment, const char *req)
{
	char reply[CTL_REPLY_MAX + 1];
	struct pollfd pfd;
	ssize_t n;
	int fd, r;

	fd = ctl_connect(segment);
	if (send(fd, req, strlen(req), MSG_NOSIGNAL) < 0) {
		if (errno == ECONNRESET || errno == EPIPE)
			errx(EX_TEMPFAIL, "segment %s: the broker is busy (too "
			    "many tollctl connections at once); try again",
			    segment);
		err(EX_UNAVAILABLE, "segment %s: sending to its broker",
		    segment);
	}
	pfd.fd = fd;
	pfd.events = POLLIN;
	while ((r = poll(&pfd, 1, REPLY_WAIT_MS)) < 0 && errno == EINTR)
		;
	if (r == 0)
		errx(EX_TEMPFAIL, "segment %s: no answer from its broker within "
		    "%d s (does it hang? see tollstat's heartbeat)", segment,
		    REPLY_WAIT_MS / 1000);
	if ((n = recv(fd, reply, sizeof(reply) - 1, 0)) < 0 &&
	    errno == ECONNRESET)
		errx(EX_TEMPFAIL, "segment %s: the broker is busy (too many "
		    "tollctl connections at once); try again", segment);
	if (n <= 0)
		errx(EX_UNAVAILABLE, "segment %s: the broker closed the "
		    "connection without an answer", segment);
	close(fd);
	reply[n] = '\0';
	/* The broker's words, but print nothing a terminal would act on. */
	for (ssize_t i = 0; i < n; i++)
		if ((unsigned char)reply[i] < 0x20 || reply[i] == 0x7f)
			reply[i] = '?';
	if (strncmp(reply, "ok ", 3) == 0) {
		printf("%s\n", reply + 3);
		return 0;
	}
	if (strncmp(reply, "err ", 4) == 0) {
		const char *code = reply + 4, *text = strchr(code, ' ');

		warnx("%s", text != NULL ? text + 1 : code);
		return strncmp(code, "EACCES ", 7) == 0 ? EX_NOPERM :
		    EXIT_REFUSED;
	}
	errx(EX_PROTOCOL, "segment %s: an answer tollctl does not know: %s",
	    segment, reply);
}

/* A key name as the broker takes it: printable, no space, short. */
static void
key_check(const char *key)
{
	size_t n = strlen(key);

	if (n == 0 || n >= SEG_NAME_MAX)
		errx(EXIT_USAGE, "%s: not a key name (1 to %d bytes)", key,
		    SEG_NAME_MAX - 1);
	for (size_t i = 0; i < n; i++)
		if (key[i] <= 0x20 || key[i] >= 0x7f)
			errx(EXIT_USAGE, "%s: not a key name (printable ASCII, "
			    "no space)", key);
}

/* A time left or ago, for people: whole seconds, or ms below one. */
static void
dur_str(char *buf, size_t len, uint64_t ns)
{
	const uint64_t s = UINT64_C(1000000000), ms = UINT64_C(1000000);

	if (ns >= s)
		ns = ns / s * s;
	else
		ns = (ns + ms - 1) / ms * ms;
	duration_format(buf, len, ns);
}

static const char *const act_names[SEG_CTL_COUNT] = {
	[SEG_CTL_PAUSE] = "pause", [SEG_CTL_RESUME] = "resume",
	[SEG_CTL_RESET] = "reset", [SEG_CTL_DRAIN] = "drain",
	[SEG_CTL_UNDRAIN] = "undrain", [SEG_CTL_DENIED] = "denied",
	[SEG_CTL_BAD] = "malformed", [SEG_CTL_FAILED] = "failed",
};

/*
 * status: read the segment (read-only, as tollstat) and ask the broker
 * for a ping.  What tollctl changed: drained and paused keys, its
 * counts and last action.
 */
static int
status(const char *segment)
{
	struct seg_map m;
	struct seg_cfg *cfg;
	struct seg_kstate *ks;
	const struct seg_header *h;
	char (*names)[SEG_NAME_MAX];
	char key[SEG_NAME_MAX], dur[32];
	uint32_t seq, s2, uid = 0;
	uint64_t now, until, when = 0, arg = 0;
	int32_t pid = 0;
	unsigned act = 0, ndrained = 0, npaused = 0;
	int r, st;

	if ((r = seg_attach(segment, 0, &m)) < 0) {
		if (r == -ENOENT)
			errx(EX_UNAVAILABLE, "no segment %s (is tollgated "
			    "running?)", segment);
		if (r == -EACCES)
			errx(EX_NOPERM, "segment %s: permission denied (the "
			    "state object is for the workers' group)",
			    segment);
		errx(EX_UNAVAILABLE, "segment %s: %s", segment,
		    strerror(-r));
	}
	h = m.hdr;
	if ((names = calloc(h->max_keys, sizeof(*names))) == NULL)
		err(EX_OSERR, NULL);
	do {
		cfg = seg_read_begin(&m, &seq);
		for (uint32_t i = 0; i < h->max_keys; i++)
			memcpy(names[i], seg_keys(cfg)[i].name, SEG_NAME_MAX);
	} while (!seg_read_ok(cfg, seq));
	printf("%-9s %s\n", "segment", segment);
	fflush(stdout);
	/* The broker's own word on whether it answers and we may act. */
	printf("%-9s ", "broker");
	fflush(stdout);
	{
		pid_t p = fork();

		if (p < 0)
			err(EX_OSERR, "fork");
		/* Its error, if any, on this line too. */
		if (p == 0 && dup2(STDOUT_FILENO, STDERR_FILENO) >= 0) {
			st = request(segment, "ping");
			fflush(stdout);
			_exit(st);
		}
		if (p == 0)
			_exit(EX_OSERR);
		while (waitpid(p, &st, 0) < 0 && errno == EINTR)
			;
	}
	ks = seg_kstates(&m);
	now = now_ns();
	printf("%-9s", "drained");
	for (uint32_t i = 0; i < h->max_keys; i++) {
		names[i][SEG_NAME_MAX - 1] = '\0';
		if (names[i][0] == '\0' || atomic_load_explicit(
		    &ks[i].drained, memory_order_relaxed) == 0)
			continue;
		printf(" %s", names[i]);
		ndrained++;
	}
	printf("%s\n", ndrained ? "" : " none");
	printf("%-9s", "paused");
	for (uint32_t i = 0; i < h->max_keys; i++) {
		if (names[i][0] == '\0')
			continue;
		until = atomic_load_explicit(&ks[i].paused_until_ns,
		    memory_order_relaxed);
		if (until <= now)
			continue;
		dur_str(dur, sizeof(dur), until - now);
		printf(" %s (%s left)", names[i], dur);
		npaused++;
	}
	printf("%s\n", npaused ? "" : " none");
	printf("%-9s", "tollctl");
	for (unsigned i = 0; i < SEG_CTL_COUNT; i++)
		printf(" %s %" PRIu64 "%s", act_names[i], atomic_load_explicit(
		    &h->ctl_count[i], memory_order_relaxed),
		    i + 1 < SEG_CTL_COUNT ? "," : "\n");
	/* The last action, under its sequence counter (seg.h). */
	for (int tries = 0; tries < 1000; tries++) {
		seq = atomic_load_explicit(&h->ctl_seq, memory_order_acquire);
		if (seq & 1)
			continue;
		uid = h->ctl_uid;
		pid = h->ctl_pid;
		act = h->ctl_action;
		when = h->ctl_ns;
		arg = h->ctl_arg_ns;
		memcpy(key, h->ctl_key, sizeof(key));
		atomic_thread_fence(memory_order_acquire);
		s2 = atomic_load_explicit(&h->ctl_seq, memory_order_relaxed);
		if (s2 == seq)
			break;
	}
	key[SEG_NAME_MAX - 1] = '\0';
	for (char *p = key; *p != '\0'; p++)
		if ((unsigned char)*p < 0x21 || *p == 0x7f)
			*p = '?';
	if (seq == 0 || act >= SEG_CTL_NACT)
		printf("%-9s none\n", "last");
	else {
		dur_str(dur, sizeof(dur), now > when ? now - when : 0);
		printf("%-9s %s %s", "last", act_names[act], key);
		if (act == SEG_CTL_PAUSE) {
			char d2[32];

			duration_format(d2, sizeof(d2), arg);
			printf(" %s", d2);
		}
		printf(" by uid %" PRIu32 " pid %" PRId32 "%s, %s ago\n", uid,
		    pid, pid == 0 ? " (another PID namespace)" : "", dur);
	}
	free(names);
	seg_detach(&m);
	if (fflush(stdout) == EOF || ferror(stdout))
		err(EX_IOERR, "stdout");
	return WIFEXITED(st) ? WEXITSTATUS(st) : EX_SOFTWARE;
}

/*
 * The live clients of segment, as the broker tells them: a slot whose
 * liveness lock is held (seg.h).  Their pids, as they see themselves,
 * into pids[PIDS_SHOWN].  Returns how many, or -1 when the segment
 * cannot be read (another layout: nothing to tell).
 */
static int
live_clients(const char *segment, int32_t *pids)
{
	struct seg_client *cl;
	struct seg_map m;
	int n = 0;

	if (seg_attach(segment, 0, &m) < 0)
		return -1;
	cl = seg_clients(&m);
	for (uint32_t i = 0; i < m.hdr->max_clients; i++) {
		if (CLIENT_STATE(atomic_load_explicit(&cl[i].owner,
		    memory_order_relaxed)) != CLIENT_LIVE ||
		    seg_slot_locked(m.state_fd, i) != 1)
			continue;
		if (n < PIDS_SHOWN)
			pids[n] = atomic_load_explicit(&cl[i].pid,
			    memory_order_relaxed);
		n++;
	}
	seg_detach(&m);
	return n;
}

/* Unlink shm object name if it is there; 1 removed, 0 absent. */
static int
unlink_obj(const char *name)
{
	if (shm_unlink(name) == 0)
		return 1;
	if (errno == ENOENT)
		return 0;
	if (errno == EPERM || errno == EACCES)
		errx(EX_NOPERM, "cannot remove /dev/shm%s: /dev/shm is sticky, "
		    "so only its owner or root can", name);
	err(EX_OSERR, "remove /dev/shm%s", name);
}

/*
 * Take the broker's lock of segment (broker/own.c), making the lock file
 * if there is none, so that no broker starts on it while we remove it.
 * Exits naming the broker that holds it.  Returns the open lock file;
 * *created says we made it.
 */
static int
lock_segment(const char *segment, const char *lock, int *created)
{
	struct flock fl;
	struct stat st;
	int fd;

	for (;;) {
		*created = 0;
		fd = shm_open(lock, O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0);
		if (fd < 0 && errno == ENOENT) {
			*created = 1;
			fd = shm_open(lock, O_RDWR | O_CREAT | O_EXCL |
			    O_NOFOLLOW | O_CLOEXEC, 0600);
		}
		if (fd < 0 && (errno == ENOENT || errno == EEXIST))
			continue;	/* made or removed meanwhile */
		if (fd < 0 && (errno == EACCES || errno == EPERM))
			errx(EX_NOPERM, "segment %s: cannot open its lock "
			    "/dev/shm%s: only the broker's user or root may "
			    "remove the segment", segment, lock);
		if (fd < 0)
			err(EX_OSERR, "/dev/shm%s", lock);
		memset(&fl, 0, sizeof(fl));
		fl.l_type = F_WRLCK;
		fl.l_whence = SEEK_SET;
		if (fcntl(fd, F_SETLK, &fl) < 0) {
			if (errno != EAGAIN && errno != EACCES)
				err(EX_OSERR, "lock /dev/shm%s", lock);
			memset(&fl, 0, sizeof(fl));
			fl.l_type = F_WRLCK;
			fl.l_whence = SEEK_SET;
			if (fcntl(fd, F_GETLK, &fl) == 0 &&
			    fl.l_type == F_UNLCK) {
				close(fd);	/* let go of meanwhile */
				continue;
			}
			if (fl.l_type == F_WRLCK && fl.l_pid > 0)
				errx(EXIT_REFUSED, "segment %s is served by a "
				    "running broker, pid %d: stop it first",
				    segment, (int)fl.l_pid);
			errx(EXIT_REFUSED, "segment %s is served by a running "
			    "broker in another PID namespace (it holds "
			    "/dev/shm%s): stop it first", segment, lock);
		}
		/* Removed between our open and our lock: guards nothing. */
		if (fstat(fd, &st) < 0)
			err(EX_OSERR, "/dev/shm%s", lock);
		if (st.st_nlink > 0)
			return fd;
		close(fd);
	}
}

/* Append " what" to the list of what was removed. */
static void
removed(char *done, size_t len, const char *what)
{
	size_t n = strlen(done);

	snprintf(done + n, len - n, " %s", what);
}

static int
remove_segment(const char *segment, int force)
{
	char conf[256], state[256], lock[256], sock[256], done[1024];
	char path[300];
	int32_t pids[PIDS_SHOWN];
	struct stat st;
	int fd, n, r, created;

	if ((r = seg_names(segment, conf, state, sizeof(conf))) < 0)
		errx(EXIT_USAGE, "segment %s: %s", segment, r == -EINVAL ?
		    "not a segment name (letters, digits, '.', '_', '-')" :
		    "name too long");
	if ((size_t)snprintf(lock, sizeof(lock), "/%s.lock", segment) >=
	    sizeof(lock))
		errx(EXIT_USAGE, "segment %s: name too long", segment);
	snprintf(sock, sizeof(sock), "/dev/shm/%s%s", segment, CTL_SUFFIX);
	snprintf(done, sizeof(done), "/dev/shm%s", conf);
	if (lstat(done, &st) < 0) {
		snprintf(done, sizeof(done), "/dev/shm%s", state);
		if (lstat(done, &st) < 0)
			errx(EX_UNAVAILABLE, "no segment %s: nothing to remove",
			    segment);
	}
	fd = lock_segment(segment, lock, &created);
	/*
	 * Workers that still map it would keep a copy no broker serves (a
	 * new broker makes new objects): their limits would hold among
	 * themselves only, and dead ones' leases would never come back.
	 */
	if ((n = live_clients(segment, pids)) > 0 && !force) {
		char list[PIDS_SHOWN * 12 + 8];
		size_t at = 0;

		list[0] = '\0';
		for (int i = 0; i < n && i < PIDS_SHOWN; i++)
			at += (size_t)snprintf(list + at, sizeof(list) - at,
			    "%s%d", i ? ", " : "", (int)pids[i]);
		if (n > PIDS_SHOWN)
			snprintf(list + at, sizeof(list) - at, ", ...");
		if (created)
			shm_unlink(lock);
		errx(EXIT_REFUSED, "segment %s: %d worker%s still map%s it "
		    "(pid %s, as each sees itself): stop them first, or "
		    "remove with -f", segment, n, n == 1 ? "" : "s",
		    n == 1 ? "s" : "", list);
	}
	done[0] = '\0';
	snprintf(path, sizeof(path), "/dev/shm%s", state);
	if (unlink_obj(state))
		removed(done, sizeof(done), path);
	snprintf(path, sizeof(path), "/dev/shm%s", conf);
	if (unlink_obj(conf))
		removed(done, sizeof(done), path);
	/* A dead broker's socket: ours to remove with its segment. */
	if (lstat(sock, &st) == 0 && S_ISSOCK(st.st_mode) &&
	    unlink(sock) == 0)
		removed(done, sizeof(done), sock);
	/* Unlinked before the close that lets go: see broker/own.c. */
	snprintf(path, sizeof(path), "/dev/shm%s", lock);
	if (unlink_obj(lock))
		removed(done, sizeof(done), path);
	close(fd);
	printf("removed segment %s:%s\n", segment, done);
	return 0;
}

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "help",	no_argument,	NULL, 'h' },
		{ "version",	no_argument,	NULL, 'V' },
		{ NULL,		0,		NULL, 0 },
	};
	const char *segment = seg_default(), *verb, *key;
	char req[CTL_REQ_MAX + 1];
	uint64_t ns;
	int ch, force = 0, sset = 0;

	while ((ch = getopt_long(argc, argv, "+fhs:", longopts, NULL)) != -1) {
		switch (ch) {
		case 'f':
			force = 1;
			break;
		case 's':
			segment = optarg;
			sset = 1;
			break;
		case 'V':
			printf("tollctl %s\n", TG_VERSION);
			return 0;
		case 'h':
			usage(stdout, 0);
			break;
		default:
			usage(stderr, EXIT_USAGE);
		}
	}
	if (optind >= argc)
		usage(stderr, EXIT_USAGE);
	verb = argv[optind++];
	if (strcmp(verb, "remove") == 0) {
		/* Named, never the default: a typo must not remove one. */
		if (sset || optind != argc - 1)
			usage(stderr, EXIT_USAGE);
		return remove_segment(argv[optind], force);
	}
	if (force)
		usage(stderr, EXIT_USAGE);
	if (strcmp(verb, "status") == 0) {
		if (optind != argc)
			usage(stderr, EXIT_USAGE);
		return status(segment);
	}
	if (strcmp(verb, "pause") == 0) {
		if (optind != argc - 2)
			usage(stderr, EXIT_USAGE);
		key = argv[optind];
		key_check(key);
		if (config_parse_duration(argv[optind + 1], &ns) < 0 ||
		    ns < CTL_PAUSE_MIN_NS)
			errx(EXIT_USAGE, "%s: not a duration of 1ms or more "
			    "(30s, 10min, 1.5h)", argv[optind + 1]);
		snprintf(req, sizeof(req), "pause %s %" PRIu64, key, ns);
		return request(segment, req);
	}
	if (strcmp(verb, "resume") != 0 && strcmp(verb, "reset") != 0 &&
	    strcmp(verb, "drain") != 0 && strcmp(verb, "undrain") != 0)
		usage(stderr, EXIT_USAGE);
	if (optind != argc - 1)
		usage(stderr, EXIT_USAGE);
	key = argv[optind];
	key_check(key);
	snprintf(req, sizeof(req), "%s %s", verb, key);
	return request(segment, req);
}
