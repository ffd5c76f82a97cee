/* tollrun.c: tollgate from the shell: take a ticket, run a command, release. */
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "access.h"
#include "client.h"
#include "config.h"
#include "seg.h"
#include "tollgate.h"

/*
 * Exit statuses of tollrun's own, kept apart from the usual ones of a
 * command (0, 1, and shells' 126, 127, 128+N) where sysexits.h has one,
 * one for each thing a script may want to tell apart (man/tollrun.1).
 */
#define EXIT_USAGE	2		/* a bad option or argument */
#define EXIT_NOEXEC	126		/* as shells: found, not executable */
#define EXIT_NOTFOUND	127		/* as shells: no such command */
/* EX_DATAERR (65): the cost never fits the key's limits */
/* EX_NOUSER (67): no such key in the segment */
/* EX_UNAVAILABLE (69): no such segment, or it cannot be used */
/* EX_OSERR (71): fork, wait or the --headers file failed */
/* EX_TEMPFAIL (75): no ticket within -t */
/* EX_PROTOCOL (76): a segment of another layout version */
/* EX_NOPERM (77): the segment is not ours to open (its group) */

#define HEADERS_MAX	(64 * 1024)	/* bytes of --headers we read */

static const int fwd_sigs[] = { SIGINT, SIGTERM, SIGHUP };
#define NFWD	(sizeof(fwd_sigs) / sizeof(fwd_sigs[0]))

static int got_sig;		/* the last forwarded signal */

static void
usage(FILE *f, int status)
{
	fprintf(f,
	    "usage: tollrun [-h] [-s SEGMENT] -k KEY [--requests N] "
	    "[--tokens N]\n"
	    "               [--images N] [-t TIMEOUT] [--headers FILE] "
	    "[--retry N]\n"
	    "               -- COMMAND [ARG ...]\n"
	    "Take a ticket on KEY (waiting as needed), run COMMAND, release "
	    "the ticket\nand exit with COMMAND's status.\n"
	    "  -s, --segment SEGMENT  the broker's segment "
	    "(default $TOLLGATE_SEGMENT, else \"tollgate\")\n"
	    "  -k, --key KEY          the key, as \"openai/gpt-image-1\"\n"
	    "      --requests N       the ticket's cost in requests "
	    "(default 1)\n"
	    "      --tokens N         its cost in tokens (default 0)\n"
	    "      --images N         its cost in images (default 0)\n"
	    "  -t, --timeout TIMEOUT  wait at most this long for each ticket "
	    "(30s, 500ms,\n"
	    "                         5m, 1.5h; 0: only a free one; "
	    "default: as long as\n"
	    "                         it takes)\n"
	    "      --headers FILE     the response headers COMMAND saves "
	    "(curl -D FILE):\n"
	    "                         emptied before each run, its last "
	    "response told to\n"
	    "                         tollgate after (a 429 pauses the key "
	    "for everyone)\n"
	    "      --retry N          run again, at most N times, while that "
	    "response says\n"
	    "                         retry (429, 5xx), after the shared "
	    "pause\n"
	    "  -h, --help             this help\n"
	    "      --version          the version\n"
	    "Exit status: COMMAND's, of its last run (128+N if signal N "
	    "killed it); 126\nnot executable, 127 not found; 2 usage; 65 the "
	    "cost never fits; 67 no such\nkey; 69 no such segment (no broker "
	    "made it); 71 a system error; 75 no\nticket within TIMEOUT; 76 a "
	    "segment of another version; 77 permission\ndenied (join the "
	    "segment's group).\n");
	exit(status);
}

/* A count for option opt, or a usage error naming it. */
static uint64_t
count_arg(const char *opt, const char *s, uint64_t max)
{
	unsigned long long v;
	char *end;

	errno = 0;
	if (*s < '0' || *s > '9')
		errx(EXIT_USAGE, "%s: not a count: \"%s\"", opt, s);
	v = strtoull(s, &end, 10);
	if (*end != '\0')
		errx(EXIT_USAGE, "%s: not a count: \"%s\"", opt, s);
	if (errno == ERANGE || v > max)
		errx(EXIT_USAGE, "%s: at most %" PRIu64 ": \"%s\"", opt, max,
		    s);
	return v;
}

/*
 * Empty the headers file, if there is one, so that what we read after the
 * run was written by it.  In place, not unlinked: a file the user set up
 * keeps its owner, mode and any symlink to it; a missing one stays missing
 * (the command creates it).  Returns 0 or -1 (warned).
 */
static int
headers_clear(const char *path)
{
	if (truncate(path, 0) < 0 && errno != ENOENT) {
		warn("%s: cannot empty it", path);
		return -1;
	}
	return 0;
}

/* The last line of buf that starts "HTTP/": the last response's. */
static const char *
last_status_line(const char *buf, size_t len)
{
	size_t i;

	for (i = len; i-- > 0;)
		if ((i == 0 || buf[i - 1] == '\n') && len - i >= 5 &&
		    memcmp(buf + i, "HTTP/", 5) == 0)
			return buf + i;
	return NULL;
}

/*
 * The code of a status line, "HTTP/1.1 429 Too Many Requests" or
 * "HTTP/2 200", ending at or before end; -1 if it is not one.
 */
static int
status_code(const char *p, const char *end)
{
	const char *v;
	int code = 0;

	/* The version: 1.0, 1.1, 2, 3. */
	p += 5;
	for (v = p; p < end && ((*p >= '0' && *p <= '9') || *p == '.'); p++)
		;
	if (p == v || p == end || (*p != ' ' && *p != '\t'))
		return -1;
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	for (int i = 0; i < 3; i++, p++) {
		if (p == end || *p < '0' || *p > '9')
			return -1;
		code = code * 10 + (*p - '0');
	}
	if (p < end && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
		return -1;
	return code >= 100 && code <= 599 ? code : -1;
}

/*
 * Tell tollgate what the last response in the headers file said.  curl -D
 * writes a block per response (a 100 Continue, each redirect): the last
 * one is the answer.  Returns tg_observe's advice, with *code its status,
 * or -1 when there was nothing to observe (warned: the run's status
 * stands).
 */
static int
observe(tg_client *c, tg_ticket *t, const char *path, int *code)
{
	static char buf[HEADERS_MAX + 1];
	const char *line;
	struct stat st;
	size_t len = 0;
	ssize_t n;
	int fd, r;

	/* O_NONBLOCK: should the command leave a FIFO there, don't hang. */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY |
	    O_NONBLOCK)) < 0) {
		if (errno == ENOENT)
			warnx("%s: no response headers: not written", path);
		else
			warn("%s", path);
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		warnx("%s: not a regular file: not read", path);
		close(fd);
		return -1;
	}
	/* One byte more than we take tells a file that is too big. */
	while (len < sizeof(buf) && (n = read(fd, buf + len,
	    sizeof(buf) - len)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			warn("%s", path);
			close(fd);
			return -1;
		}
		len += (size_t)n;
	}
	close(fd);
	if (len > HEADERS_MAX) {
		warnx("%s: over %d KiB: not response headers, not read", path,
		    HEADERS_MAX / 1024);
		return -1;
	}
	if (len == 0) {
		warnx("%s: no response headers: empty", path);
		return -1;
	}
	if ((line = last_status_line(buf, len)) == NULL ||
	    (*code = status_code(line, buf + len)) < 0) {
		warnx("%s: no HTTP status line", path);
		return -1;
	}
	if (*code < 200) {
		warnx("%s: the last response is a %d, not a final one", path,
		    *code);
		return -1;
	}
	/* The status line too: tg_observe skips it. */
	if ((r = tg_observe(c, t, *code, line, len - (size_t)(line - buf))) <
	    0) {
		warnx("%s: tg_observe: %s", path, tg_strerror(r));
		return -1;
	}
	return r;
}

/* Whether path is a file exec could run: 0, -ENOENT or -EACCES. */
static int
runnable(const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return errno == EACCES ? -EACCES : -ENOENT;
	if (!S_ISREG(st.st_mode) || access(path, X_OK) < 0)
		return -EACCES;
	return 0;
}

/*
 * Find cmd as execvp will, before a ticket is taken for it: a command
 * that cannot run must not spend the fleet's quota.  Returns 0, or the
 * exit status a shell gives (127 not found, 126 not executable), warned.
 * exec can still fail later (the file changes); run() reports that.
 */
static int
command_check(const char *cmd)
{
	const char *path = getenv("PATH"), *p, *colon;
	char buf[PATH_MAX], def[256];
	int r, denied = 0;

	if (strchr(cmd, '/') != NULL)
		r = runnable(cmd);
	else {
		if (path == NULL) {
			/* execvp's default search path */
			confstr(_CS_PATH, def, sizeof(def));
			path = def;
		}
		r = -ENOENT;
		for (p = path; r != 0; p = colon + 1) {
			size_t n;

			colon = strchrnul(p, ':');
			n = (size_t)(colon - p);
			/* an empty entry is the current directory */
			if (snprintf(buf, sizeof(buf), "%.*s%s%s", (int)n, p,
			    n == 0 ? "" : "/", cmd) < (int)sizeof(buf) &&
			    (r = runnable(buf)) == -EACCES)
				denied = 1;
			if (*colon == '\0')
				break;
		}
		if (r != 0 && denied)
			r = -EACCES;
	}
	if (r == 0)
		return 0;
	warnx("%s: %s", cmd, r == -EACCES ? "not executable" :
	    "command not found");
	return r == -EACCES ? EXIT_NOEXEC : EXIT_NOTFOUND;
}

/*
 * Run argv with fork and execvp, stdin, stdout and stderr its own, the
 * forwarded signals going to it while it runs.  Returns its status as a
 * shell gives it (exit code, or 128+N if signal N killed it), or -1 if it
 * could not run (warned).  Called and returns with fwd blocked, so that a
 * signal between two runs waits for the caller's check.
 */
static int
run(char *const argv[], const sigset_t *fwd, const sigset_t *orig)
{
	sigset_t wait_set, was;
	siginfo_t si, info;
	pid_t pid;
	int e, sig;

	sigprocmask(SIG_SETMASK, NULL, &was);
	if ((pid = fork()) < 0) {
		warn("fork");
		return -1;
	}
	if (pid == 0) {
		/*
		 * The dispositions are the ones tollrun got (no handler is
		 * installed yet, and exec keeps an ignored signal ignored);
		 * the mask too.  _exit: the parent's client is not ours.
		 */
		sigprocmask(SIG_SETMASK, orig, NULL);
		execvp(argv[0], argv);
		e = errno;
		fprintf(stderr, "tollrun: %s: %s\n", argv[0], strerror(e));
		_exit(e == ENOENT || e == ENOTDIR ? EXIT_NOTFOUND :
		    EXIT_NOEXEC);
	}

	/*
	 * Wait for the child and the forwarded signals synchronously, all
	 * of them blocked (SIGCHLD too: blocked, it stays pending though
	 * its default is to be ignored): no handler runs inside a restarted
	 * wait, which sanitizer runtimes would hold back until the child
	 * exits of its own accord.
	 */
	sigemptyset(&wait_set);
	sigaddset(&wait_set, SIGCHLD);
	for (size_t i = 0; i < NFWD; i++) {
		struct sigaction cur;

		/* As a shell: a signal ignored when we started stays so. */
		sigaction(fwd_sigs[i], NULL, &cur);
		if (cur.sa_handler != SIG_IGN)
			sigaddset(&wait_set, fwd_sigs[i]);
	}
	sigprocmask(SIG_BLOCK, &wait_set, NULL);
	for (;;) {
		/* Don't reap yet: until we do, no other process has its pid. */
		si.si_pid = 0;
		if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT |
		    WNOHANG) < 0 && errno != EINTR)
			err(EX_OSERR, "waitid %d", (int)pid);
		if (si.si_pid == pid)
			break;
		if ((sig = sigwaitinfo(&wait_set, &info)) < 0 || sig == SIGCHLD)
			continue;
		got_sig = sig;
		/*
		 * One the kernel sent (SI_KERNEL: a terminal's ^C, ^\,
		 * hangup) went to the whole foreground process group, the
		 * command included: sending it again would make a second ^C.
		 */
		if (info.si_code != SI_KERNEL)
			(void)kill(pid, sig);
	}
	while (waitpid(pid, NULL, 0) < 0)
		if (errno != EINTR)
			err(EX_OSERR, "waitpid %d", (int)pid);
	sigprocmask(SIG_SETMASK, &was, NULL);
	sigprocmask(SIG_BLOCK, fwd, NULL);
	return si.si_code == CLD_EXITED ? si.si_status : 128 + si.si_status;
}

/* A signal that came while we held fwd blocked: got_sig, as if caught. */
static void
drain(const sigset_t *fwd)
{
	struct timespec zero = { 0, 0 };
	int s;

	while ((s = sigtimedwait(fwd, NULL, &zero)) > 0)
		got_sig = s;
}

int
main(int argc, char *argv[])
{
	static const struct option longs[] = {
		{ "segment",	required_argument, NULL, 's' },
		{ "key",	required_argument, NULL, 'k' },
		{ "timeout",	required_argument, NULL, 't' },
		{ "help",	no_argument,	   NULL, 'h' },
		{ "version",	no_argument,	   NULL, 'V' },
		{ "requests",	required_argument, NULL, 'R' },
		{ "tokens",	required_argument, NULL, 'T' },
		{ "images",	required_argument, NULL, 'I' },
		{ "headers",	required_argument, NULL, 'H' },
		{ "retry",	required_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 },
	};
	const char *segment = NULL, *keyname = NULL, *headers = NULL;
	const char *targ = NULL, *segname;
	char why[512];
	tg_cost cost = { 1, 0, 0 };
	sigset_t fwd, orig;
	tg_client *c;
	tg_ticket t;
	struct stat st;
	int64_t timeout_ns = -1;
	uint64_t ns;
	unsigned retry_max = 0, retried = 0;
	uint32_t key;
	int ch, r, status, advice, code = 0, warned = 0;

	/* '+': stop at COMMAND, whose options are its own, `--' or not. */
	while ((ch = getopt_long(argc, argv, "+hk:s:t:", longs, NULL)) != -1) {
		switch (ch) {
		case 's':
			segment = optarg;
			break;
		case 'k':
			keyname = optarg;
			break;
		case 't':
			targ = optarg;
			/* 0: a ticket only if one is free now. */
			if (duration_arg(optarg, 0, UINT64_MAX, &ns, why,
			    sizeof(why)) < 0)
				errx(EXIT_USAGE, "-t \"%s\": %s", optarg,
				    why);
			timeout_ns = ns > INT64_MAX ? INT64_MAX : (int64_t)ns;
			break;
		case 'R':
			cost.requests = count_arg("--requests", optarg,
			    UINT64_MAX);
			break;
		case 'T':
			cost.tokens = count_arg("--tokens", optarg,
			    UINT64_MAX);
			break;
		case 'I':
			cost.images = count_arg("--images", optarg,
			    UINT64_MAX);
			break;
		case 'H':
			headers = optarg;
			break;
		case 'r':
			retry_max = (unsigned)count_arg("--retry", optarg,
			    1000000);
			break;
		case 'h':
			usage(stdout, 0);
			break;
		case 'V':
			printf("tollrun %s\n", TG_VERSION);
			return 0;
		default:
			usage(stderr, EXIT_USAGE);
		}
	}
	argc -= optind;
	argv += optind;
	if (keyname == NULL)
		errx(EXIT_USAGE, "no key: -k KEY (tollrun -h for help)");
	if (argc == 0)
		errx(EXIT_USAGE, "no command: -- COMMAND [ARG ...] (tollrun -h "
		    "for help)");
	if (headers != NULL && *headers == '\0')
		errx(EXIT_USAGE, "--headers: an empty file name");
	/* We empty it before each run: only ever a regular file. */
	if (headers != NULL && stat(headers, &st) == 0 &&
	    !S_ISREG(st.st_mode))
		errx(EXIT_USAGE, "--headers %s: not a regular file", headers);
	if ((r = command_check(argv[0])) != 0)
		return r;

	segname = segment != NULL ? segment : seg_default();
	if ((r = tg_open(segment, &c)) < 0) {
		if (r == -ENOENT)
			errx(EX_UNAVAILABLE, "segment \"%s\": no such segment: "
			    "no broker made it (is tollgated running? is the "
			    "name right? -s or $TOLLGATE_SEGMENT)", segname);
		if (r == -EACCES) {
			access_why(segname, why, sizeof(why));
			errx(EX_NOPERM, "segment \"%s\": %s", segname, why);
		}
		errx(r == -EINVAL ? EXIT_USAGE : r == -EPROTO ? EX_PROTOCOL :
		    EX_UNAVAILABLE, "segment \"%s\": %s", segname,
		    tg_strerror(r));
	}
	if ((r = tg_key(c, keyname, &key)) < 0) {
		tg_close(c);
		if (r == -ENOENT)
			errx(EX_NOUSER, "segment \"%s\" has no key \"%s\" "
			    "(no [%s] in its broker's config)", segname,
			    keyname, keyname);
		errx(r == -EINVAL ? EXIT_USAGE : EX_UNAVAILABLE,
		    "key \"%s\": %s", keyname, tg_strerror(r));
	}

	/*
	 * The forwarded signals are blocked except while the command runs:
	 * one that comes between runs ends the loop after the release below
	 * (drain) instead of killing us with a ticket in hand.  While we
	 * wait for a ticket they are not blocked, and end tollrun at once
	 * (tg_acquire sleeps through handled ones); what it holds then the
	 * broker takes back from a dead client.
	 */
	sigemptyset(&fwd);
	for (size_t i = 0; i < NFWD; i++)
		sigaddset(&fwd, fwd_sigs[i]);
	sigprocmask(SIG_SETMASK, NULL, &orig);

	for (;;) {
		/* Once: every run would say the same. */
		if (!warned && !access_broker(&c->m, why, sizeof(why))) {
			warnx("segment \"%s\": %s; tickets still work, but "
			    "nothing takes back those of a worker that dies "
			    "and nobody reloads the config", segname, why);
			warned = 1;
		}
		if (headers != NULL && headers_clear(headers) < 0) {
			status = EX_OSERR;
			break;
		}
		memset(&t, 0, sizeof(t));
		if ((r = tg_acquire(c, key, &cost, timeout_ns, &t)) < 0) {
			if (r == -ETIMEDOUT) {
				warnx("key \"%s\": no ticket within %s",
				    keyname, targ != NULL ? targ : "-t");
				status = EX_TEMPFAIL;
			} else if (r == -E2BIG) {
				warnx("key \"%s\": a cost of %" PRIu64
				    " requests, %" PRIu64 " tokens, %" PRIu64
				    " images never fits its limits", keyname,
				    cost.requests, cost.tokens, cost.images);
				status = EX_DATAERR;
			} else {
				warnx("key \"%s\": %s", keyname,
				    tg_strerror(r));
				status = EX_UNAVAILABLE;
			}
			break;
		}
		sigprocmask(SIG_BLOCK, &fwd, NULL);
		status = run(argv, &fwd, &orig);
		advice = -1;
		if (status >= 0 && headers != NULL)
			advice = observe(c, &t, headers, &code);
		tg_release(c, &t);
		drain(&fwd);
		sigprocmask(SIG_SETMASK, &orig, NULL);
		if (status < 0) {
			status = EX_OSERR;
			break;
		}
		if (got_sig != 0 || advice != TG_RETRY || retried >= retry_max)
			break;
		retried++;
		fprintf(stderr, "tollrun: %d, retry %u of %u\n", code, retried,
		    retry_max);
	}
	tg_close(c);
	return status;
}
