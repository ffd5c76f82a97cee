/* helpers.h: private; a real tollgated for tests: start, reload, kill, clean. */
#ifndef TG_HELPERS_H
#define TG_HELPERS_H

#include <sys/types.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>

#include "tollgate.h"

/*
 * Built with ASan or TSan: a sanitized libtollgate.so cannot be loaded
 * into a Python that is not (its runtime must come first), so the tests
 * that load it from Python skip there; the plain build runs them.
 */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TB_UNDER_SAN	1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TB_UNDER_SAN	1
#endif
#endif

struct tbroker {
	pid_t	pid;			/* 0 when not running */
	char	segment[64];		/* tgtest-<pid>-<n>: unique per test */
	char	dir[64];		/* temp dir: config, pidfile, log */
	char	conf[PATH_MAX];
	char	log[PATH_MAX];
	const char *extra;		/* one more broker argument, or NULL */
	const char *const *wrap;	/* argv the broker runs under (unshare
					   ...), NULL-terminated; or NULL */
};

/*
 * Write `body' (key sections) under a [broker] section of our own and
 * start tollgated on it, waiting until a client can open the segment.
 * Returns 0, or -ENOSYS if the broker could not run io_uring here (the
 * caller skips), or another -errno.
 */
int	tb_start(struct tbroker *tb, const char *body);

/*
 * tb_start with the broker run under a command, such as
 * { "unshare", "--pid", "--fork", "--kill-child", "--mount-proc", NULL }:
 * SIGKILL of tb->pid must kill the broker too (--kill-child).
 */
int	tb_start_wrapped(struct tbroker *tb, const char *body,
	    const char *const *wrap);

/* Start again on the same config and segment (after tb_kill/tb_stop). */
int	tb_restart(struct tbroker *tb);

/* Rewrite the keys and send SIGHUP; wait until the broker has read it. */
int	tb_reload(struct tbroker *tb, const char *body);

/* SIGTERM and wait; returns the exit status (0 when it stopped cleanly). */
int	tb_stop(struct tbroker *tb);

/* SIGKILL and reap. */
void	tb_kill(struct tbroker *tb);

/* Whether the broker process is still running. */
int	tb_alive(struct tbroker *tb);

/* Stop if running, unlink the segment, remove the temp dir. */
void	tb_cleanup(struct tbroker *tb);

/* Count the lines of the broker's log containing s. */
int	tb_log_count(const struct tbroker *tb, const char *s);

/* Open a client and look one key up; abort the test on failure. */
tg_client *tb_client(const struct tbroker *tb);
uint32_t tb_key(tg_client *c, const char *name);

/* The path of a built program ("tollgated"), from $TG_BUILD. */
const char *tb_bin(const char *name, char *buf, size_t len);

/* The config generation the live segment publishes; 0 if none. */
uint64_t tb_config_gen(const struct tbroker *tb);

/* A fork()ed child's verdict: waitpid and return its exit code or 128+sig. */
int	tb_wait_child(pid_t pid);

/*
 * cmocka group setup and teardown: one broker on `body' for a file's
 * tests, in *state; NULL (every TB_NEED test skips) without io_uring.
 */
int	tb_group_setup(void **state, const char *body);
int	tb_group_teardown(void **state);

/* In a test: the broker of the group setup, or skip() without one. */
#define TB_NEED(state)	(*(state) != NULL ? (struct tbroker *)*(state) : \
	    (skip(), (struct tbroker *)NULL))

/* Read all of f (up to len - 1 bytes) into buf, NUL-terminated; bytes read. */
size_t	tb_slurp(FILE *f, char *buf, size_t len);

/*
 * Run cmd through the shell with what it writes on stdout (redirect in
 * cmd for stderr) in out, NUL-terminated.  Returns its exit status,
 * 128 + N if signal N killed it; the test fails if it cannot be run.
 */
int	tb_run(const char *cmd, char *out, size_t len);

/* size zeroed bytes that fork()ed children share with the parent. */
void	*tb_shared(size_t size);

uint64_t tb_now_ns(void);

/* splitmix64: a fixed seed makes every run see the same arrivals. */
uint64_t tb_rnd(uint64_t *seed);
void	tb_sleep_ns(uint64_t ns);

/*
 * Install a seccomp BPF filter that kills the whole process on any system
 * call but write and exit (and clock_nanosleep if allow_sleep), and on a
 * call of another architecture (a 32-bit number means something else).
 * A filter, not SECCOMP_MODE_STRICT: on some kernels strict mode also
 * disables rdtsc, the vDSO clock's instruction.  0, or -errno (-ENOSYS:
 * no filter for this architecture).
 */
int	tb_deny_syscalls(int allow_sleep);

#endif /* TG_HELPERS_H */
