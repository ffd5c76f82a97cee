/*
 * mp_ctl.c: tollctl against a real broker and real workers, each a
 * process of its own.  A pause stops tickets in other processes and a
 * resume restarts them at once, a tg_acquire asleep in the pause too; a
 * server's `retry-after: 3600' is lifted by a resume; a reset refills
 * rate and window limits and takes a learned count back to the config's;
 * a drain refuses new tickets (-ESHUTDOWN, a waiter too) while a held
 * lease finishes, and undrain takes them again; remove refuses while a
 * broker runs (naming it) or workers map the segment, and removes when
 * none does; a user who may not write the state object is refused, at the
 * socket and by the broker; malformed requests are refused and the broker
 * goes on; the log, tollstat -j and tollctl status say who did what,
 * with a pid of 0 for a caller outside the broker's PID namespace.
 *
 * The second user is uid 65534: as root only; that test says why when it
 * skips.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "seg.h"

#define NOBODY		65534
#define SEC		1000000000ull
#define WAIT_NS		(30 * SEC)	/* for what should come at once */
#define OUT_MAX		16384

static struct tbroker tb;

static int
teardown(void **state)
{
	(void)state;
	/* A broker under unshare goes with it: SIGKILL reaches both. */
	if (tb.wrap != NULL)
		tb_kill(&tb);
	if (tb.dir[0] != '\0')
		tb_cleanup(&tb);
	memset(&tb, 0, sizeof(tb));
	return 0;
}

/* Start tb on body, and wait for its command socket, made after. */
static void
start(const char *body)
{
	char path[PATH_MAX];
	struct stat st;
	uint64_t end;
	int r;

	if ((r = tb_start(&tb, body)) == -ENOSYS) {
		print_message("skipped: the broker cannot run io_uring here\n");
		skip();
	}
	assert_int_equal(r, 0);
	snprintf(path, sizeof(path), "/dev/shm/%s.ctl", tb.segment);
	end = tb_now_ns() + WAIT_NS;
	while (lstat(path, &st) < 0 && tb_now_ns() < end)
		tb_sleep_ns(5000000);
	assert_true(S_ISSOCK(st.st_mode));
}

/*
 * Run tollctl ARGS on tb's segment, named by TOLLGATE_SEGMENT (the tools'
 * default), stdout and stderr into out.  Returns its exit status.
 */
static int
ctl(char *out, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
ctl(char *out, size_t len, const char *fmt, ...)
{
	char bin[PATH_MAX], args[512], cmd[PATH_MAX + 700];
	va_list ap;
	int r;

	va_start(ap, fmt);
	vsnprintf(args, sizeof(args), fmt, ap);
	va_end(ap);
	snprintf(cmd, sizeof(cmd), "TOLLGATE_SEGMENT=%s %s %s 2>&1",
	    tb.segment, tb_bin("tollctl", bin, sizeof(bin)), args);
	r = tb_run(cmd, out, len);
	print_message("$ tollctl %s  -> %d: %s", args, r, out);
	return r;
}

/* What a worker child did, in memory it shares with the test. */
struct box {
	volatile int	ready;		/* about to make its call */
	volatile int	done;
	volatile int	go;		/* the test lets it go on */
	volatile int	r;
	volatile uint64_t retry_ns;
	volatile uint64_t took_ns;	/* from ready to done */
};

enum op {
	OP_TRY,			/* tg_try_acquire once */
	OP_ACQUIRE,		/* tg_acquire, 3 h: longer than a pause */
	OP_RESERVE,		/* tg_reserve */
	OP_HOLD,		/* tg_acquire, then hold until go, release */
	OP_OBSERVE_429,		/* a ticket, then a 429 retry-after 3600 */
	OP_OBSERVE_LIMIT,	/* a ticket, then a 200 with a server limit */
};

/* In a child: do op on key, into b; exits. */
static void
work(const char *key, enum op op, struct box *b)
{
	static const char h429[] = "HTTP/1.1 429 Too Many Requests\r\n"
	    "retry-after: 3600\r\n\r\n";
	static const char hlim[] = "HTTP/1.1 200 OK\r\n"
	    "x-ratelimit-limit-requests: 5\r\n\r\n";
	tg_client *c;
	tg_ticket t;
	uint64_t t0, valid = 0, retry = 0;
	uint32_t k;
	int r;

	alarm(180);
	c = tb_client(&tb);
	k = tb_key(c, key);
	memset(&t, 0, sizeof(t));
	t0 = tb_now_ns();
	b->ready = 1;
	switch (op) {
	case OP_TRY:
		r = tg_try_acquire(c, k, NULL, &t, &retry);
		break;
	case OP_ACQUIRE:
	case OP_HOLD:
		r = tg_acquire(c, k, NULL, 3 * 3600 * (int64_t)SEC, &t);
		break;
	case OP_RESERVE:
		r = tg_reserve(c, k, NULL, 120 * (int64_t)SEC, &t, &valid);
		break;
	case OP_OBSERVE_429:
	case OP_OBSERVE_LIMIT:
		if ((r = tg_try_acquire(c, k, NULL, &t, &retry)) == 0)
			r = op == OP_OBSERVE_429 ? tg_observe(c, &t, 429, h429,
			    sizeof(h429) - 1) : tg_observe(c, &t, 200, hlim,
			    sizeof(hlim) - 1);
		break;
	default:
		r = -EINVAL;
	}
	b->took_ns = tb_now_ns() - t0;
	b->retry_ns = retry;
	b->r = r;
	b->done = 1;
	if (op == OP_HOLD && r == 0)
		while (!b->go)
			tb_sleep_ns(10000000);
	tg_release(c, &t);
	tg_close(c);
	_exit(0);
}

/* Start a worker child; *pid its pid.  Returns its box. */
static struct box *
spawn(const char *key, enum op op, pid_t *pid)
{
	struct box *b = tb_shared(sizeof(*b));

	assert_non_null(b);
	if ((*pid = fork()) == 0)
		work(key, op, b);
	assert_true(*pid > 0);
	return b;
}

/* Until b's flag is set, WAIT_NS at most; whether it was. */
static int
wait_flag(volatile int *flag)
{
	uint64_t end = tb_now_ns() + WAIT_NS;

	while (!*flag && tb_now_ns() < end)
		tb_sleep_ns(5000000);
	return *flag;
}

/* One worker doing op on key to its end; its result, *retry_ns. */
static int
once(const char *key, enum op op, uint64_t *retry_ns)
{
	struct box *b;
	pid_t pid;

	b = spawn(key, op, &pid);
	assert_int_equal(tb_wait_child(pid), 0);
	assert_true(b->done);
	if (retry_ns != NULL)
		*retry_ns = b->retry_ns;
	return b->r;
}

/*
 * The value python3 prints for expression expr over `tollstat -j' of
 * tb's segment (d is the document, k(name) a key), into out.
 */
static void
stat_json(const char *expr, char *out, size_t len)
{
	char bin[PATH_MAX], cmd[PATH_MAX + 1024];
	const char *py = getenv("TG_PYTHON");
	size_t n;

	snprintf(cmd, sizeof(cmd), "%s -s %s -j | %s -c 'import json, sys\n"
	    "d = json.load(sys.stdin)\n"
	    "def k(n): return [x for x in d[\"keys\"] if x[\"name\"] == n][0]\n"
	    "print(%s)'", tb_bin("tollstat", bin, sizeof(bin)), tb.segment,
	    py != NULL && *py != '\0' ? py : "python3", expr);
	assert_int_equal(tb_run(cmd, out, len), 0);
	n = strlen(out);
	while (n > 0 && out[n - 1] == '\n')
		out[--n] = '\0';
}

/* Until stat_json(expr) prints want, WAIT_NS at most. */
static void
stat_until(const char *expr, const char *want)
{
	char out[512];
	uint64_t end = tb_now_ns() + WAIT_NS;

	for (;;) {
		stat_json(expr, out, sizeof(out));
		if (strcmp(out, want) == 0)
			return;
		if (tb_now_ns() > end)
			fail_msg("tollstat -j: %s is %s, want %s", expr, out,
			    want);
		tb_sleep_ns(50000000);
	}
}

/*
 * A pause stops tickets in every other process, of the key and the keys
 * under it; a resume restarts them at once, and a tg_acquire asleep in
 * the 10-minute pause returns with its ticket.
 */
static void
test_pause_resume(void **state)
{
	char out[OUT_MAX];
	uint64_t retry = 0;
	struct box *b;
	pid_t pid;

	(void)state;
	start("[k]\nlimit = 100 requests/s\nmax_pause = 2h\n\n"
	    "[k/sub]\nlimit = 100 requests/s\n");
	assert_int_equal(once("k/sub", OP_TRY, NULL), 0);
	assert_int_equal(ctl(out, sizeof(out), "pause k 10min"), 0);
	assert_non_null(strstr(out, "paused k for 600s"));
	/* Another process, at once: the pause, and its length. */
	assert_int_equal(once("k/sub", OP_TRY, &retry), -EAGAIN);
	assert_true(retry > 9 * 60 * SEC && retry <= 10 * 60 * SEC);
	assert_int_equal(once("k", OP_TRY, NULL), -EAGAIN);

	b = spawn("k/sub", OP_ACQUIRE, &pid);
	assert_true(wait_flag(&b->ready));
	tb_sleep_ns(300000000);
	assert_false(b->done);		/* asleep in the pause */
	assert_int_equal(ctl(out, sizeof(out), "resume k"), 0);
	assert_non_null(strstr(out, "resumed k"));
	assert_true(wait_flag(&b->done));
	assert_int_equal(b->r, 0);
	assert_true(b->took_ns < 5 * 60 * SEC);
	assert_int_equal(tb_wait_child(pid), 0);
	/*
	 * At the rate from now: the waiter's slot behind the pause was
	 * moved up with the line, so a ticket may wait a unit (10 ms).
	 */
	b = spawn("k/sub", OP_ACQUIRE, &pid);
	assert_int_equal(tb_wait_child(pid), 0);
	assert_int_equal(b->r, 0);
	assert_true(b->took_ns < 5 * 60 * SEC);
	assert_int_equal(once("k", OP_ACQUIRE, NULL), 0);
	/* A pause is clamped to the key's max_pause, and says so. */
	assert_int_equal(ctl(out, sizeof(out), "pause k/sub 2day"), 0);
	assert_non_null(strstr(out, "its max_pause"));
	assert_int_equal(ctl(out, sizeof(out), "resume k/sub"), 0);
	assert_int_equal(once("k/sub", OP_TRY, NULL), 0);
}

/*
 * A server's `retry-after: 3600' pauses the key for an hour (max_pause
 * 2h) and empties its bucket at the pause's end; a resume lifts both: a
 * waiter gets its ticket at once, and so does the next process.
 */
static void
test_retry_after_resumed(void **state)
{
	char out[OUT_MAX];
	uint64_t retry = 0;
	struct box *b;
	pid_t pid;

	(void)state;
	start("[k]\nlimit = 1 requests/s burst 4\nmax_pause = 2h\n");
	assert_int_equal(once("k", OP_OBSERVE_429, NULL), TG_RETRY);
	assert_int_equal(once("k", OP_TRY, &retry), -EAGAIN);
	assert_true(retry > 3500 * SEC);
	b = spawn("k", OP_ACQUIRE, &pid);
	assert_true(wait_flag(&b->ready));
	tb_sleep_ns(300000000);
	assert_false(b->done);
	assert_int_equal(ctl(out, sizeof(out), "resume k"), 0);
	assert_non_null(strstr(out, "1 pause cleared"));
	assert_non_null(strstr(out, "1 rate limit restarted"));
	assert_true(wait_flag(&b->done));
	assert_int_equal(b->r, 0);
	assert_int_equal(tb_wait_child(pid), 0);
	stat_until("k(\"k\")[\"paused_ns\"]", "0");
	/* The bucket goes on at its rate, not after the hour. */
	assert_int_equal(once("k", OP_ACQUIRE, NULL), 0);
}

/*
 * A reset puts a spent rate limit and a spent window back to full, and
 * a count learned from a server back to the config's.
 */
static void
test_reset(void **state)
{
	char out[OUT_MAX];

	(void)state;
	start("[r]\nlimit = 3 requests/h\n\n"
	    "[w]\nlimit = 2 requests/day window\n\n"
	    "[l]\nlimit = 10 requests/min\nlearn = yes\n");
	for (int i = 0; i < 3; i++)
		assert_int_equal(once("r", OP_TRY, NULL), 0);
	assert_int_equal(once("r", OP_TRY, NULL), -EAGAIN);
	for (int i = 0; i < 2; i++)
		assert_int_equal(once("w", OP_TRY, NULL), 0);
	assert_int_equal(once("w", OP_TRY, NULL), -EAGAIN);
	assert_int_equal(ctl(out, sizeof(out), "reset r"), 0);
	assert_non_null(strstr(out, "reset r: 1 limit full"));
	assert_int_equal(ctl(out, sizeof(out), "reset w"), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(once("r", OP_TRY, NULL), 0);
	assert_int_equal(once("r", OP_TRY, NULL), -EAGAIN);
	for (int i = 0; i < 2; i++)
		assert_int_equal(once("w", OP_TRY, NULL), 0);
	assert_int_equal(once("w", OP_TRY, NULL), -EAGAIN);

	/* The server says 5, the key learns it; a reset says 10 again. */
	assert_int_equal(once("l", OP_OBSERVE_LIMIT, NULL), TG_OK);
	stat_until("k(\"l\")[\"limits\"][0][\"count\"]", "5");
	assert_int_equal(ctl(out, sizeof(out), "reset l"), 0);
	assert_non_null(strstr(out, "learned counts back"));
	stat_until("k(\"l\")[\"limits\"][0][\"count\"]", "10");
}

/*
 * A drain refuses new tickets of the key and the keys under it, in every
 * call and to a waiter already asleep, with an errno and message of its
 * own, while a held lease finishes; tollstat shows it; undrain restores.
 */
static void
test_drain(void **state)
{
	char out[OUT_MAX];
	struct box *h, *w;
	pid_t hp, wp;

	(void)state;
	start("[d]\nconcurrency = 1\n\n[d/sub]\nlimit = 100 requests/s\n");
	h = spawn("d", OP_HOLD, &hp);
	assert_true(wait_flag(&h->done));
	assert_int_equal(h->r, 0);
	w = spawn("d", OP_ACQUIRE, &wp);	/* waits for the lease */
	assert_true(wait_flag(&w->ready));
	tb_sleep_ns(300000000);
	assert_false(w->done);

	assert_int_equal(ctl(out, sizeof(out), "drain d"), 0);
	assert_non_null(strstr(out, "drained d"));
	assert_non_null(strstr(out, "1 lease in flight"));
	assert_true(wait_flag(&w->done));
	assert_int_equal(w->r, -ESHUTDOWN);
	assert_int_equal(tb_wait_child(wp), 0);
	assert_int_equal(once("d", OP_TRY, NULL), -ESHUTDOWN);
	assert_int_equal(once("d/sub", OP_TRY, NULL), -ESHUTDOWN);
	assert_int_equal(once("d/sub", OP_ACQUIRE, NULL), -ESHUTDOWN);
	assert_int_equal(once("d/sub", OP_RESERVE, NULL), -ESHUTDOWN);
	assert_non_null(strstr(tg_strerror(-ESHUTDOWN), "drained"));
	stat_until("k(\"d\")[\"drained\"], k(\"d/sub\")[\"drained\"], "
	    "k(\"d\")[\"limits\"][0][\"in_flight\"]", "True False 1");

	/* The ticket in flight finishes as usual. */
	h->go = 1;
	assert_int_equal(tb_wait_child(hp), 0);
	stat_until("k(\"d\")[\"limits\"][0][\"in_flight\"]", "0");
	assert_int_equal(once("d", OP_TRY, NULL), -ESHUTDOWN);

	assert_int_equal(ctl(out, sizeof(out), "undrain d"), 0);
	assert_non_null(strstr(out, "undrained d"));
	assert_int_equal(once("d", OP_TRY, NULL), 0);
	assert_int_equal(once("d/sub", OP_TRY, NULL), 0);
	stat_until("k(\"d\")[\"drained\"]", "False");
}

/* Whether /dev/shm/<segment><suffix> exists. */
static int
shm_exists(const char *suffix)
{
	char path[PATH_MAX];
	struct stat st;

	snprintf(path, sizeof(path), "/dev/shm/%s%s", tb.segment, suffix);
	return lstat(path, &st) == 0;
}

/*
 * remove refuses while a broker runs, naming its pid, and while a worker
 * maps the segment, naming it; removes every object when none does.
 */
static void
test_remove(void **state)
{
	char out[OUT_MAX], want[64];
	tg_client *c;

	(void)state;
	start("[k]\nlimit = 10 requests/s\n");
	assert_true(shm_exists(".ctl"));
	assert_int_equal(ctl(out, sizeof(out), "remove %s", tb.segment), 1);
	snprintf(want, sizeof(want), "pid %d", (int)tb.pid);
	assert_non_null(strstr(out, want));
	assert_true(shm_exists("") && shm_exists(".conf") &&
	    shm_exists(".lock"));
	/* Named on the command line only. */
	assert_int_equal(ctl(out, sizeof(out), "remove"), 2);
	assert_int_equal(ctl(out, sizeof(out), "-s %s remove %s", tb.segment,
	    tb.segment), 2);

	assert_int_equal(tb_stop(&tb), 0);
	assert_false(shm_exists(".ctl"));	/* the broker took it along */
	c = tb_client(&tb);
	assert_int_equal(ctl(out, sizeof(out), "remove %s", tb.segment), 1);
	assert_non_null(strstr(out, "1 worker still maps it"));
	snprintf(want, sizeof(want), "pid %d", (int)getpid());
	assert_non_null(strstr(out, want));
	assert_true(shm_exists("") && shm_exists(".lock"));
	tg_close(c);
	assert_int_equal(ctl(out, sizeof(out), "remove %s", tb.segment), 0);
	assert_non_null(strstr(out, "removed segment"));
	assert_false(shm_exists("") || shm_exists(".conf") ||
	    shm_exists(".lock") || shm_exists(".ctl"));
	assert_int_equal(ctl(out, sizeof(out), "remove %s", tb.segment), 69);
	/* No broker, no socket: the actions say so. */
	assert_int_equal(ctl(out, sizeof(out), "resume k"), 69);
}

/*
 * Run tollctl ARGS as uid 65534 (no groups), stdout and stderr into out.
 * Returns its exit status, or -1 if we could not become that user.
 */
static int
ctl_as_nobody(char *out, size_t len, const char *args)
{
	char bin[PATH_MAX], cmd[PATH_MAX + 600];
	int p[2], st;
	pid_t pid;
	ssize_t n;
	size_t at = 0;

	assert_int_equal(pipe(p), 0);
	snprintf(cmd, sizeof(cmd), "TOLLGATE_SEGMENT=%s exec %s %s 2>&1",
	    tb.segment, tb_bin("tollctl", bin, sizeof(bin)), args);
	if ((pid = fork()) == 0) {
		close(p[0]);
		dup2(p[1], 1);
		if (setgroups(0, NULL) < 0 || setresgid(NOBODY, NOBODY,
		    NOBODY) < 0 || setresuid(NOBODY, NOBODY, NOBODY) < 0)
			_exit(126);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	assert_true(pid > 0);
	close(p[1]);
	while (at + 1 < len && (n = read(p[0], out + at, len - at - 1)) > 0)
		at += (size_t)n;
	out[at] = '\0';
	close(p[0]);
	st = tb_wait_child(pid);
	print_message("$ (uid %d) tollctl %s  -> %d: %s", NOBODY, args, st,
	    out);
	return st == 126 ? -1 : st;
}

/*
 * A user who may not write the state object is refused: by the socket's
 * mode, and by the broker's own check when the socket lets them in.
 */
static void
test_permission(void **state)
{
	char out[OUT_MAX], path[PATH_MAX];
	int r;

	(void)state;
	if (geteuid() != 0) {
		print_message("skipped: needs root, to act as uid %d\n",
		    NOBODY);
		skip();
	}
	start("[k]\nlimit = 10 requests/s\n");
	if ((r = ctl_as_nobody(out, sizeof(out), "pause k 10s")) < 0) {
		print_message("skipped: cannot act as uid %d\n", NOBODY);
		skip();
	}
	assert_int_equal(r, 77);
	assert_non_null(strstr(out, "permission denied"));
	/* Let them connect: the broker still says no, and counts it. */
	snprintf(path, sizeof(path), "/dev/shm/%s.ctl", tb.segment);
	assert_int_equal(chmod(path, 0666), 0);
	assert_int_equal(ctl_as_nobody(out, sizeof(out), "pause k 10s"), 77);
	assert_non_null(strstr(out, "uid 65534 may not write the state "
	    "object"));
	assert_int_equal(once("k", OP_TRY, NULL), 0);	/* not paused */
	assert_true(tb_log_count(&tb, "request of uid 65534 pid ") >= 1);
	stat_until("d[\"ctl\"][\"denied\"], d[\"ctl\"][\"pause\"]", "1 0");
	/* Nor may they remove it. */
	snprintf(path, sizeof(path), "remove %s", tb.segment);
	assert_int_equal(ctl_as_nobody(out, sizeof(out), path), 77);
	assert_true(shm_exists("") && shm_exists(".conf"));
}

/* A raw connection to tb's command socket. */
static int
raw_connect(void)
{
	struct sockaddr_un sa;
	int fd;

	assert_true((fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC,
	    0)) >= 0);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "/dev/shm/%s.ctl",
	    tb.segment);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

/* Send len bytes of req on fd, the reply into out (NUL-terminated). */
static ssize_t
raw_ask(int fd, const char *req, size_t len, char *out, size_t outlen)
{
	ssize_t n;

	assert_int_equal(send(fd, req, len, MSG_NOSIGNAL), (ssize_t)len);
	n = recv(fd, out, outlen - 1, 0);
	out[n > 0 ? n : 0] = '\0';
	if (n <= 0)
		print_message("recv: %zd (%s)\n", n, n < 0 ? strerror(errno) :
		    "closed");
	return n;
}

/*
 * Malformed requests get an answer that says so and change nothing; the
 * broker goes on answering, on the same connection, past a flood of
 * connections.
 */
static void
test_malformed(void **state)
{
	static const struct { const char *req; size_t len; } bad[] = {
		{ "\x01\x02", 2 }, { "pause", 5 }, { "pause k", 7 },
		{ "pause k abc", 11 }, { "pause k 0", 9 },
		{ "pause k -5", 10 }, { "pause  k 1000000000", 19 },
		{ "pause k 99999999999999999999999", 31 },
		{ "resume k extra", 14 }, { "bogus k", 7 }, { " resume k", 9 },
		{ "resume k ", 9 }, { "resume k\0x", 10 }, { "resume\tk", 8 },
		{ "pause k 1000000000 1", 20 }, { "ping x", 6 },
		{ "resume \xc3\xa9", 9 },
	};
	char out[1024], big[300], cnt[64];
	int fd, many[20];
	unsigned nbad = sizeof(bad) / sizeof(bad[0]);

	(void)state;
	start("[k]\nlimit = 10 requests/s\n");
	fd = raw_connect();
	for (unsigned i = 0; i < nbad; i++) {
		assert_true(raw_ask(fd, bad[i].req, bad[i].len, out,
		    sizeof(out)) > 0);
		if (strncmp(out, "err EINVAL malformed request", 28) != 0)
			fail_msg("request %u: %s", i, out);
	}
	memset(big, 'a', sizeof(big));
	assert_true(raw_ask(fd, big, sizeof(big), out, sizeof(out)) > 0);
	assert_non_null(strstr(out, "err EINVAL malformed request: 300 bytes"));
	assert_true(raw_ask(fd, "resume nokey", 12, out, sizeof(out)) > 0);
	assert_non_null(strstr(out, "err ENOENT no key nokey"));
	assert_true(raw_ask(fd, "ping\n", 5, out, sizeof(out)) > 0);
	assert_non_null(strstr(out, "ok tollgated"));
	close(fd);

	/* 20 at once: 16 served, the others told so; then one more. */
	for (int i = 0; i < 20; i++)
		many[i] = raw_connect();
	for (int i = 0; i < 20; i++)
		close(many[i]);
	/*
	 * Until the broker has seen the 16 go: "try again", it says, or it
	 * closed on our request unread (a reset).
	 */
	for (uint64_t end = tb_now_ns() + WAIT_NS;;) {
		ssize_t n;

		fd = raw_connect();
		out[0] = '\0';
		if (send(fd, "ping", 4, MSG_NOSIGNAL) == 4 &&
		    (n = recv(fd, out, sizeof(out) - 1, 0)) > 0)
			out[n] = '\0';
		close(fd);
		if ((out[0] != '\0' && strncmp(out, "err EBUSY", 9) != 0) ||
		    tb_now_ns() > end)
			break;
		tb_sleep_ns(20000000);
	}
	assert_non_null(strstr(out, "ok tollgated"));
	assert_true(tb_alive(&tb));
	assert_int_equal(once("k", OP_TRY, NULL), 0);	/* nothing done */
	snprintf(cnt, sizeof(cnt), "%u 1 0", nbad + 1);
	stat_until("d[\"ctl\"][\"malformed\"], d[\"ctl\"][\"failed\"], "
	    "sum(d[\"ctl\"][a] for a in (\"pause\", \"resume\", \"reset\", "
	    "\"drain\", \"undrain\"))", cnt);
}

/*
 * Each action is logged with the caller's uid and pid, counted, and
 * shown by tollstat -j, -p and the table, and by tollctl status;
 * -s wins over TOLLGATE_SEGMENT.
 */
static void
test_log_and_counts(void **state)
{
	char out[OUT_MAX], want[256], pid[64];

	(void)state;
	start("[k]\nlimit = 10 requests/s\nmax_pause = 2h\n");
	assert_int_equal(ctl(out, sizeof(out), "pause k 30s"), 0);
	assert_int_equal(ctl(out, sizeof(out), "resume k"), 0);
	assert_int_equal(ctl(out, sizeof(out), "drain k"), 0);
	assert_int_equal(ctl(out, sizeof(out), "undrain k"), 0);
	/* -s wins over the environment's segment. */
	{
		char bin[PATH_MAX], cmd[PATH_MAX + 200];

		snprintf(cmd, sizeof(cmd), "TOLLGATE_SEGMENT=tgtest-none-%d "
		    "%s -s %s reset k 2>&1", (int)getpid(),
		    tb_bin("tollctl", bin, sizeof(bin)), tb.segment);
		assert_int_equal(tb_run(cmd, out, sizeof(out)), 0);
		assert_non_null(strstr(out, "reset k"));
	}
	stat_json("d[\"ctl\"][\"pause\"], d[\"ctl\"][\"resume\"], "
	    "d[\"ctl\"][\"reset\"], d[\"ctl\"][\"drain\"], "
	    "d[\"ctl\"][\"undrain\"], d[\"ctl\"][\"denied\"]", out,
	    sizeof(out));
	assert_string_equal(out, "1 1 1 1 1 0");
	stat_json("d[\"ctl\"][\"last\"][\"action\"], "
	    "d[\"ctl\"][\"last\"][\"key\"], d[\"ctl\"][\"last\"][\"uid\"]",
	    out, sizeof(out));
	assert_string_equal(out, "reset k 0");
	stat_json("d[\"ctl\"][\"last\"][\"pid\"]", pid, sizeof(pid));
	assert_true(atoi(pid) > 0);
	/* The log names the same caller. */
	snprintf(want, sizeof(want), "tollctl: reset k by uid 0 pid %s: ",
	    pid);
	assert_int_equal(tb_log_count(&tb, want), 1);
	assert_int_equal(tb_log_count(&tb, "tollctl: pause k by uid 0 pid "),
	    1);
	assert_int_equal(tb_log_count(&tb, "tollctl: drain k by uid 0 pid "),
	    1);
	/* The table and -p. */
	{
		char bin[PATH_MAX], cmd[PATH_MAX + 100];

		snprintf(cmd, sizeof(cmd), "%s -s %s",
		    tb_bin("tollstat", bin, sizeof(bin)), tb.segment);
		assert_int_equal(tb_run(cmd, out, sizeof(out)), 0);
		assert_non_null(strstr(out, "tollctl    pause 1, resume 1, "
		    "reset 1, drain 1, undrain 1; refused 0"));
		snprintf(want, sizeof(want), "last ctl   reset k by uid 0 pid "
		    "%s, ", pid);
		assert_non_null(strstr(out, want));
		snprintf(cmd, sizeof(cmd), "%s -s %s -p",
		    tb_bin("tollstat", bin, sizeof(bin)), tb.segment);
		assert_int_equal(tb_run(cmd, out, sizeof(out)), 0);
		assert_non_null(strstr(out, "tollgate_ctl_requests_total{"
		    "request=\"reset\"} 1\n"));
		assert_non_null(strstr(out, "tollgate_key_drained{key=\"k\"} "
		    "0\n"));
	}
	assert_int_equal(ctl(out, sizeof(out), "status"), 0);
	assert_non_null(strstr(out, "may act"));
	snprintf(want, sizeof(want), "last      reset k by uid 0 pid %s, ",
	    pid);
	assert_non_null(strstr(out, want));
	/* Usage errors. */
	assert_int_equal(ctl(out, sizeof(out), "pause k"), 2);
	assert_int_equal(ctl(out, sizeof(out), "pause k soon"), 2);
	assert_int_equal(ctl(out, sizeof(out), "frobnicate k"), 2);
	assert_int_equal(ctl(out, sizeof(out), "resume 'a b'"), 2);
	assert_int_equal(ctl(out, sizeof(out), "resume nokey"), 1);
	assert_non_null(strstr(out, "no key nokey"));
}

/*
 * A caller the broker cannot see (the broker runs in a PID namespace of
 * its own, the caller outside it) is logged and recorded with pid 0 and
 * said to be so.
 */
static void
test_other_pid_namespace(void **state)
{
	static const char *const pidns[] = { "unshare", "--pid", "--fork",
	    "--kill-child", "--mount-proc", NULL };
	char out[OUT_MAX], path[PATH_MAX];
	struct stat st;
	uint64_t end;
	int r;

	(void)state;
	if (tb_run("unshare --pid --fork --mount-proc true 2>&1", out,
	    sizeof(out)) != 0) {
		print_message("skipped: unshare --pid cannot run here (not "
		    "root, or no user namespaces)\n");
		skip();
	}
	if ((r = tb_start_wrapped(&tb, "[k]\nlimit = 10 requests/s\n",
	    pidns)) == -ENOSYS) {
		print_message("skipped: the broker cannot run io_uring here\n");
		skip();
	}
	assert_int_equal(r, 0);
	snprintf(path, sizeof(path), "/dev/shm/%s.ctl", tb.segment);
	end = tb_now_ns() + WAIT_NS;
	while (lstat(path, &st) < 0 && tb_now_ns() < end)
		tb_sleep_ns(5000000);
	assert_int_equal(ctl(out, sizeof(out), "resume k"), 0);
	if (tb_log_count(&tb, "tollctl: resume k by uid 0 pid 0 ") != 1) {
		char cmd[PATH_MAX + 8];

		snprintf(cmd, sizeof(cmd), "cat %.*s", PATH_MAX - 1, tb.log);
		tb_run(cmd, out, sizeof(out));
		print_message("%s", out);
	}
	assert_int_equal(tb_log_count(&tb, "tollctl: resume k by uid 0 pid 0 "
	    "(another PID namespace): "), 1);
	stat_json("d[\"ctl\"][\"last\"][\"pid\"]", out, sizeof(out));
	assert_string_equal(out, "0");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_pause_resume, teardown),
		cmocka_unit_test_teardown(test_retry_after_resumed, teardown),
		cmocka_unit_test_teardown(test_reset, teardown),
		cmocka_unit_test_teardown(test_drain, teardown),
		cmocka_unit_test_teardown(test_remove, teardown),
		cmocka_unit_test_teardown(test_permission, teardown),
		cmocka_unit_test_teardown(test_malformed, teardown),
		cmocka_unit_test_teardown(test_log_and_counts, teardown),
		cmocka_unit_test_teardown(test_other_pid_namespace, teardown),
	};

	alarm(600);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
