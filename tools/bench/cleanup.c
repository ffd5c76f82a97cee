/*
 * cleanup.c: what the bench started (brokers, redis-server, the socket
 * broker, segments, the temp directory), undone in reverse order at the
 * end, on an error, or after SIGINT/SIGTERM/SIGHUP.  Signals only set a
 * flag: every wait in the bench is bounded and checks it, so the undoing
 * runs in ordinary code, not in a handler.
 */
#include <sys/stat.h>
#include <sys/wait.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#define CLEANUP_MAX	32

static struct {
	cleanup_fn	*fn;
	void		*arg;
} stack[CLEANUP_MAX];
static unsigned depth;
static char tmpdir[PATH_MAX];

volatile sig_atomic_t bench_signal;

static void
on_signal(int sig)
{
	bench_signal = sig;
}

void
signals_install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: a blocking wait returns EINTR and sees the flag. */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

int
cleanup_push(cleanup_fn *fn, void *arg)
{
	if (depth == CLEANUP_MAX)
		return -ENOSPC;
	stack[depth].fn = fn;
	stack[depth].arg = arg;
	depth++;
	return 0;
}

/* Forget fn(arg) (the owner undid it), or run it now if run is set. */
void
cleanup_pop(cleanup_fn *fn, void *arg, int run)
{
	for (unsigned i = depth; i-- > 0;) {
		if (stack[i].fn != fn || stack[i].arg != arg)
			continue;
		memmove(&stack[i], &stack[i + 1], (depth - i - 1) *
		    sizeof(stack[0]));
		depth--;
		if (run)
			fn(arg);
		return;
	}
}

void
cleanup_run(void)
{
	while (depth > 0) {
		depth--;
		stack[depth].fn(stack[depth].arg);
	}
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if ((flag == FTW_DP ? rmdir(path) : unlink(path)) < 0 &&
	    errno != ENOENT)
		bench_warnx("cannot remove %s: %s", path, strerror(errno));
	return 0;
}

/* rm -rf path, without a shell; 0 or -errno. */
int
rm_tree(const char *path)
{
	if (nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) < 0 &&
	    errno != ENOENT)
		return -errno;
	return 0;
}

static void
tmpdir_remove(void *arg)
{
	(void)arg;
	if (tmpdir[0] != '\0' && rm_tree(tmpdir) < 0)
		bench_warnx("cannot remove %s", tmpdir);
}

/* The bench's temp directory, in $TMPDIR or /tmp, made on first use. */
const char *
tmpdir_get(void)
{
	const char *base = getenv("TMPDIR");
	char tmpl[PATH_MAX];

	if (tmpdir[0] != '\0')
		return tmpdir;
	if (base == NULL || *base == '\0')
		base = "/tmp";
	/* Short: a Unix socket's path must fit in 108 bytes. */
	if (snprintf(tmpl, sizeof(tmpl), "%s/tollbench.XXXXXX", base) >= 64) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	if (mkdtemp(tmpl) == NULL)
		return NULL;
	snprintf(tmpdir, sizeof(tmpdir), "%s", tmpl);
	if (cleanup_push(tmpdir_remove, NULL) < 0) {
		rmdir(tmpdir);
		tmpdir[0] = '\0';
		return NULL;
	}
	return tmpdir;
}

/* DIR/name in buf; 0, or -ENAMETOOLONG, -errno of mkdtemp. */
int
tmpdir_path(char *buf, size_t len, const char *name)
{
	const char *d = tmpdir_get();
	int n;

	if (d == NULL)
		return -errno;
	n = snprintf(buf, len, "%s/%s", d, name);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* Send sig to *pid, wait for it up to timeout_ns (then SIGKILL); *pid = 0. */
void
stop_child(pid_t *pid, int sig, uint64_t timeout_ns)
{
	if (*pid <= 0)
		return;
	kill(*pid, sig);
	if (wait_child(*pid, timeout_ns) < 0)
		bench_warnx("cannot wait for pid %d", (int)*pid);
	*pid = 0;
}

void
bench_warnx(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "tollbench: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void
progress(const char *fmt, ...)
{
	va_list ap;

	if (!opt.verbose)
		return;
	fprintf(stderr, "tollbench: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}
