/*
 * alt_redis.c: the way most fleets share a limit today, a GCRA in a Redis
 * Lua script (EVALSHA, the clock from Redis's own TIME) through hiredis,
 * against a redis-server the bench starts on a Unix socket in a temporary
 * directory (no TCP port, no persistence) and stops afterwards.  Without
 * redis-server the row is skipped with a note, not failed.
 */
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "bench.h"

/*
 * KEYS[1] the TAT in microseconds, ARGV[1] the cost, ARGV[2] tau, both
 * in microseconds.  Returns 0 (granted) or the retry in microseconds.
 * string.format: tostring would write 1.7e+15 and lose the digits.
 */
static const char gcra_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1])) or 0\n"
    "local cost = tonumber(ARGV[1])\n"
    "local tau = tonumber(ARGV[2])\n"
    "if tat < now then tat = now end\n"
    "local nxt = tat + cost\n"
    "if nxt - now > tau then return nxt - now - tau end\n"
    "redis.call('SET', KEYS[1], string.format('%d', nxt))\n"
    "return 0\n";

static struct {
	pid_t	pid;
	char	dir[PATH_MAX];
	char	sock[PATH_MAX + 16];
	char	sha[64];
	char	*cmd;		/* the EVALSHA, formatted once */
	int	cmdlen;
} rs;

/* The path of redis-server, or NULL. */
static const char *
find_redis(char *buf, size_t len)
{
	const char *path = getenv("PATH"), *p, *e;

	if (path == NULL || *path == '\0')
		path = "/usr/local/bin:/usr/bin:/bin";
	for (p = path; ; p = e + 1) {
		e = strchrnul(p, ':');
		snprintf(buf, len, "%.*s/redis-server", (int)(e - p), p);
		if (e > p && access(buf, X_OK) == 0)
			return buf;
		if (*e == '\0')
			break;
	}
	snprintf(buf, len, "/usr/sbin/redis-server");
	return access(buf, X_OK) == 0 ? buf : NULL;
}

static void
redis_cleanup(void *arg)
{
	(void)arg;
	/* SIGTERM: redis shuts down; with save '' it writes nothing. */
	stop_child(&rs.pid, SIGTERM, 10000000000ull);
	if (rs.dir[0] != '\0' && rm_tree(rs.dir) < 0)
		bench_warnx("cannot remove %s", rs.dir);
	if (rs.cmd != NULL)
		redisFreeCommand(rs.cmd);
	rs.cmd = NULL;
}

static redisContext *
connect_redis(void)
{
	struct timeval tv = { 2, 0 };
	redisContext *c = redisConnectUnixWithTimeout(rs.sock, tv);

	if (c != NULL && c->err) {
		redisFree(c);
		return NULL;
	}
	return c;
}

/* Start redis-server and wait until it answers PING; 0 or -errno. */
static int
redis_start(const char *bin)
{
	char log[PATH_MAX + 16];
	uint64_t deadline;
	redisContext *c;
	redisReply *rep;
	int fd, st;

	if (tmpdir_path(rs.dir, sizeof(rs.dir), "redis") < 0 ||
	    mkdir(rs.dir, 0700) < 0)
		return -errno;
	snprintf(rs.sock, sizeof(rs.sock), "%s/redis.sock", rs.dir);
	snprintf(log, sizeof(log), "%s/redis.log", rs.dir);
	if (cleanup_push(redis_cleanup, NULL) < 0)
		return -ENOSPC;
	if ((rs.pid = fork()) < 0)
		return -errno;
	if (rs.pid == 0) {
		setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if ((fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600)) >=
		    0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		execl(bin, "redis-server", "--port", "0", "--unixsocket",
		    rs.sock, "--unixsocketperm", "700", "--save", "",
		    "--appendonly", "no", "--dir", rs.dir, "--daemonize", "no",
		    (char *)NULL);
		_exit(127);
	}
	if (R.npids < sizeof(R.pids) / sizeof(R.pids[0]))
		R.pids[R.npids++] = rs.pid;
	deadline = now_ns_bench() + 10000000000ull;
	while (now_ns_bench() < deadline && !bench_signal) {
		if (waitpid(rs.pid, &st, WNOHANG) == rs.pid) {
			rs.pid = 0;
			bench_warnx("redis-server exited at start; see %s",
			    log);
			return -ECHILD;
		}
		if ((c = connect_redis()) != NULL) {
			rep = redisCommand(c, "PING");
			st = rep != NULL && rep->type == REDIS_REPLY_STATUS;
			if (rep != NULL)
				freeReplyObject(rep);
			redisFree(c);
			if (st)
				return 0;
		}
		sleep_ns(5000000);
	}
	return bench_signal ? -EINTR : -ETIMEDOUT;
}

/* SCRIPT LOAD, and the EVALSHA every operation sends. */
static int
redis_script(void)
{
	redisContext *c = connect_redis();
	redisReply *rep;
	int r = -EPROTO;

	if (c == NULL)
		return -ECONNREFUSED;
	rep = redisCommand(c, "SCRIPT LOAD %s", gcra_lua);
	if (rep != NULL && rep->type == REDIS_REPLY_STRING &&
	    rep->len < (int)sizeof(rs.sha)) {
		snprintf(rs.sha, sizeof(rs.sha), "%s", rep->str);
		/* cost 1 us, tau 1e9 us: it never refuses. */
		rs.cmdlen = redisFormatCommand(&rs.cmd, "EVALSHA %s 1 %s %s %s",
		    rs.sha, "tollbench:gcra", "1", "1000000000");
		r = rs.cmdlen > 0 ? 0 : -ENOMEM;
	} else if (rep != NULL && rep->type == REDIS_REPLY_ERROR)
		bench_warnx("SCRIPT LOAD: %s", rep->str);
	if (rep != NULL)
		freeReplyObject(rep);
	redisFree(c);
	return r;
}

static int
redis_setup(void *arg, void **ctxp)
{
	redisContext *c;

	(void)arg;
	if ((c = connect_redis()) == NULL)
		return -ECONNREFUSED;
	*ctxp = c;
	return 0;
}

static void
redis_teardown(void *ctx)
{
	redisFree(ctx);
}

static void
redis_loop(void *ctx, const _Atomic uint32_t *stop, struct loop_out *out)
{
	redisContext *c = ctx;
	redisReply *rep;
	uint64_t n = 0, refused = 0;

	while (!atomic_load_explicit(stop, memory_order_relaxed)) {
		if (redisAppendFormattedCommand(c, rs.cmd, (size_t)rs.cmdlen) !=
		    REDIS_OK || redisGetReply(c, (void **)&rep) != REDIS_OK) {
			refused++;
			break;
		}
		if (rep->type != REDIS_REPLY_INTEGER || rep->integer != 0)
			refused++;
		freeReplyObject(rep);
		n++;
	}
	out->ops = n;
	out->refused = refused;
}

/* Start redis-server and add its row; a missing server skips the row. */
int
redis_rows(struct results *res)
{
	char bin[PATH_MAX];
	struct row *r;
	int e;

	if ((r = row_add(res, "alt-redis", "alt: GCRA in a Redis Lua script "
	    "(EVALSHA)")) == NULL)
		return 0;
	if (find_redis(bin, sizeof(bin)) == NULL) {
		r->skipped = "redis-server not found (apt-get install "
		    "redis-server)";
		return 0;
	}
	if ((e = redis_start(bin)) < 0) {
		r->skipped = "redis-server did not start";
		return e;
	}
	if ((e = redis_script()) < 0) {
		r->skipped = "the Lua script did not load";
		return e;
	}
	r->setup = redis_setup;
	r->loop = redis_loop;
	r->teardown = redis_teardown;
	return 0;
}

/* Stop redis-server now (the rows are done), and remove its directory. */
void
redis_stop(void)
{
	cleanup_pop(redis_cleanup, NULL, 1);
}

/*
 * For goodput's shared GCRA: the same server and script, started if the
 * row did not start them.  0, -ENOENT (no redis-server), or -errno.
 */
int
redis_ensure(void)
{
	char bin[PATH_MAX];
	int e;

	if (rs.pid > 0 && rs.sha[0] != '\0')
		return 0;
	if (rs.pid > 0)
		return -EPROTO;		/* started, but the script failed */
	if (find_redis(bin, sizeof(bin)) == NULL)
		return -ENOENT;
	if ((e = redis_start(bin)) < 0 || (e = redis_script()) < 0)
		return e;
	return 0;
}

void *
redis_gcra_connect(void)
{
	return connect_redis();
}

void
redis_gcra_close(void *c)
{
	if (c != NULL)
		redisFree(c);
}

/*
 * Take one cost_us of the GCRA at key, with a bucket of tau_us.
 * Returns 0 (taken), the retry in microseconds, or -errno.
 */
int64_t
redis_gcra_take(void *c, const char *key, uint64_t cost_us, uint64_t tau_us)
{
	redisReply *rep;
	int64_t r = -EPROTO;

	rep = redisCommand(c, "EVALSHA %s 1 %s %llu %llu", rs.sha, key,
	    (unsigned long long)cost_us, (unsigned long long)tau_us);
	if (rep == NULL)
		return -ECONNRESET;
	if (rep->type == REDIS_REPLY_INTEGER && rep->integer >= 0)
		r = rep->integer;
	freeReplyObject(rep);
	return r;
}
