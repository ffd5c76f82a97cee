/* helpers.c: a real tollgated for tests: start, reload, kill, clean up. */
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "helpers.h"
#include "seg.h"

static int tb_seq;

uint64_t
tb_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t
tb_rnd(uint64_t *s)
{
	uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

void
tb_sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000u),
	    (long)(ns % 1000000000u) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

const char *
tb_bin(const char *name, char *buf, size_t len)
{
	const char *b = getenv("TG_BUILD");

	snprintf(buf, len, "%s/%s", b && *b ? b : "build", name);
	return buf;
}

static int
write_conf(const struct tbroker *tb, const char *body)
{
	char tmp[PATH_MAX + 8];
	FILE *f;

	/* Write and rename: the broker never reads a half-written file. */
	snprintf(tmp, sizeof(tmp), "%s.tmp", tb->conf);
	if ((f = fopen(tmp, "w")) == NULL)
		return -errno;
	fprintf(f, "[broker]\nsegment = %s\npidfile = %s/tollgated.pid\n\n%s",
	    tb->segment, tb->dir, body);
	if (fclose(f) != 0)
		return -errno;
	return rename(tmp, tb->conf) < 0 ? -errno : 0;
}

uint64_t
tb_config_gen(const struct tbroker *tb)
{
	struct seg_map m;
	struct seg_cfg *c;
	uint64_t gen;
	uint32_t seq;

	if (seg_attach(tb->segment, 0, &m) < 0)
		return 0;
	do {
		c = seg_read_begin(&m, &seq);
		gen = c->gen;
	} while (!seg_read_ok(c, seq));
	seg_detach(&m);
	return gen;
}

int
tb_alive(struct tbroker *tb)
{
	int st;

	if (tb->pid <= 0)
		return 0;
	if (waitpid(tb->pid, &st, WNOHANG) == tb->pid) {
		tb->pid = 0;
		return 0;
	}
	return 1;
}

int
tb_log_count(const struct tbroker *tb, const char *s)
{
	char line[2048];
	FILE *f;
	int n = 0;

	if ((f = fopen(tb->log, "r")) == NULL)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, s))
			n++;
	fclose(f);
	return n;
}

/* Until no broker holds the pidfile's lock (libbsd's flock), 5 s at most. */
static void
wait_pidfile_free(const struct tbroker *tb)
{
	char path[PATH_MAX];
	uint64_t deadline = tb_now_ns() + 5000000000ull;
	int fd;

	snprintf(path, sizeof(path), "%s/tollgated.pid", tb->dir);
	while (tb_now_ns() < deadline) {
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
			return;
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			close(fd);
			return;
		}
		close(fd);
		tb_sleep_ns(5000000);
	}
}

int
tb_restart(struct tbroker *tb)
{
	char bin[PATH_MAX];
	uint64_t deadline, since;
	tg_client *c;
	int fd, r;

	tb_bin("tollgated", bin, sizeof(bin));
	since = tb_now_ns();
	/* A wrapped broker's SIGKILL reaches it through its parent's death. */
	if (tb->wrap != NULL)
		wait_pidfile_free(tb);
	if ((tb->pid = fork()) < 0)
		return -errno;
	if (tb->pid == 0) {
		const char *argv[32];
		unsigned n = 0;

		fd = open(tb->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, 2);
			close(fd);
		}
		for (; tb->wrap != NULL && tb->wrap[n] != NULL && n < 24; n++)
			argv[n] = tb->wrap[n];
		argv[n] = n == 0 ? "tollgated" : bin;
		n++;
		argv[n++] = "-d";
		argv[n++] = "-c";
		argv[n++] = tb->conf;
		argv[n++] = tb->extra;
		argv[n] = NULL;
		/* execvp's argv is char *const[] for C's sake, never written. */
		execvp(tb->wrap != NULL ? tb->wrap[0] : bin,
		    (char *const *)(uintptr_t)argv);
		_exit(127);
	}
	/* Ready when a client can open it and the broker is the new one. */
	deadline = tb_now_ns() + 10000000000ull;
	while (tb_now_ns() < deadline) {
		struct seg_map m;
		int32_t owner = 0;

		if (!tb_alive(tb)) {
			if (tb_log_count(tb, "io_uring") > 0)
				return -ENOSYS;
			return -ECHILD;
		}
		if (seg_attach(tb->segment, 0, &m) == 0) {
			owner = atomic_load(&m.hdr->broker_pid);
			/* Wrapped, it has a pid of its own namespace. */
			if (tb->wrap != NULL && owner != 0 &&
			    atomic_load(&m.hdr->broker_since_ns) >= since)
				owner = tb->pid;
			seg_detach(&m);
		}
		if (owner == tb->pid && (r = tg_open(tb->segment, &c)) == 0) {
			tg_close(c);
			return 0;
		}
		tb_sleep_ns(5000000);
	}
	return -ETIMEDOUT;
}

int
tb_start_wrapped(struct tbroker *tb, const char *body,
    const char *const *wrap)
{
	char tmpl[] = "/tmp/tgtest.XXXXXX";
	int r;

	memset(tb, 0, sizeof(*tb));
	tb->wrap = wrap;
	if (mkdtemp(tmpl) == NULL)
		return -errno;
	snprintf(tb->dir, sizeof(tb->dir), "%s", tmpl);
	snprintf(tb->segment, sizeof(tb->segment), "tgtest-%d-%d",
	    (int)getpid(), tb_seq++);
	snprintf(tb->conf, sizeof(tb->conf), "%s/tollgate.conf", tb->dir);
	snprintf(tb->log, sizeof(tb->log), "%s/tollgated.log", tb->dir);
	if ((r = write_conf(tb, body)) < 0)
		return r;
	return tb_restart(tb);
}

int
tb_start(struct tbroker *tb, const char *body)
{
	return tb_start_wrapped(tb, body, NULL);
}

int
tb_reload(struct tbroker *tb, const char *body)
{
	uint64_t gen = tb_config_gen(tb), deadline;
	int refused = tb_log_count(tb, "reload refused"), r;

	if ((r = write_conf(tb, body)) < 0)
		return r;
	if (kill(tb->pid, SIGHUP) < 0)
		return -errno;
	/* Done when a new generation is out, or the broker said no. */
	deadline = tb_now_ns() + 10000000000ull;
	while (tb_now_ns() < deadline) {
		if (tb_config_gen(tb) != gen)
			return 0;
		if (tb_log_count(tb, "reload refused") > refused)
			return -EINVAL;
		tb_sleep_ns(5000000);
	}
	return -ETIMEDOUT;
}

int
tb_stop(struct tbroker *tb)
{
	int st;

	if (tb->pid <= 0)
		return -ECHILD;
	kill(tb->pid, SIGTERM);
	if (waitpid(tb->pid, &st, 0) < 0)
		return -errno;
	tb->pid = 0;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void
tb_kill(struct tbroker *tb)
{
	if (tb->pid <= 0)
		return;
	kill(tb->pid, SIGKILL);
	waitpid(tb->pid, NULL, 0);
	tb->pid = 0;
}

void
tb_cleanup(struct tbroker *tb)
{
	char conf[256], state[256], cmd[PATH_MAX + 16];

	if (tb->pid > 0)
		tb_stop(tb);
	if (seg_names(tb->segment, conf, state, sizeof(conf)) == 0) {
		shm_unlink(conf);
		shm_unlink(state);
		/* The broker's lock file, which it leaves for the next. */
		strncat(state, ".lock", sizeof(state) - strlen(state) - 1);
		shm_unlink(state);
	}
	/* The command socket of a broker that was killed (tollctl's). */
	snprintf(cmd, sizeof(cmd), "/dev/shm/%s.ctl", tb->segment);
	if (tb->segment[0] != '\0')
		(void)unlink(cmd);
	/* Keep the log of a failed run where a human can read it. */
	if (getenv("TG_KEEP") == NULL && tb->dir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tb->dir);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", tb->dir);
	}
}

tg_client *
tb_client(const struct tbroker *tb)
{
	tg_client *c = NULL;
	int r = tg_open(tb->segment, &c);

	if (r < 0) {
		fprintf(stderr, "tg_open %s: %s\n", tb->segment,
		    tg_strerror(r));
		abort();
	}
	return c;
}

uint32_t
tb_key(tg_client *c, const char *name)
{
	uint32_t k = 0;
	int r = tg_key(c, name, &k);

	if (r < 0) {
		fprintf(stderr, "tg_key %s: %s\n", name, tg_strerror(r));
		abort();
	}
	return k;
}

int
tb_wait_child(pid_t pid)
{
	int st;

	if (waitpid(pid, &st, 0) < 0)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int
tb_group_setup(void **state, const char *body)
{
	struct tbroker *tb = calloc(1, sizeof(*tb));
	int r;

	assert_non_null(tb);
	*state = NULL;
	if ((r = tb_start(tb, body)) == -ENOSYS) {
		tb_cleanup(tb);
		free(tb);
		return 0;	/* no io_uring here: every test skips */
	}
	assert_int_equal(r, 0);
	*state = tb;
	return 0;
}

int
tb_group_teardown(void **state)
{
	struct tbroker *tb = *state;

	if (tb == NULL)
		return 0;
	/* A test may have stopped it; a clean stop is 0, none is -ECHILD. */
	if (tb->pid > 0)
		assert_int_equal(tb_stop(tb), 0);
	tb_cleanup(tb);
	free(tb);
	return 0;
}

size_t
tb_slurp(FILE *f, char *buf, size_t len)
{
	size_t n = 0, got;

	while (n + 1 < len && (got = fread(buf + n, 1, len - 1 - n, f)) > 0)
		n += got;
	buf[n] = '\0';
	return n;
}

int
tb_run(const char *cmd, char *out, size_t len)
{
	FILE *p;
	int st;

	if ((p = popen(cmd, "r")) == NULL)
		fail_msg("cannot run %s", cmd);
	tb_slurp(p, out, len);
	st = pclose(p);
	if (st == -1)
		fail_msg("cannot wait for %s", cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void *
tb_shared(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED |
	    MAP_ANONYMOUS, -1, 0);

	assert_true(p != MAP_FAILED);
	memset(p, 0, size);
	return p;
}

#if defined(__x86_64__)
#define TB_ARCH	AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define TB_ARCH	AUDIT_ARCH_AARCH64
#endif

int
tb_deny_syscalls(int allow_sleep)
{
#ifdef TB_ARCH
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
		    offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TB_ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
		    offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_write, 3, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_exit, 2, 0),
		/* Never matches without allow_sleep: no call is numbered ~0. */
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, allow_sleep ?
		    (uint32_t)SYS_clock_nanosleep : UINT32_MAX, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {
		.len = sizeof(f) / sizeof(f[0]),
		.filter = f,
	};

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		return -errno;
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0)
		return -errno;
	return 0;
#else
	(void)allow_sleep;
	return -ENOSYS;
#endif
}
