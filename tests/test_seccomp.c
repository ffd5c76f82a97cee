/*
 * test_seccomp.c: the hot path makes no system call.  A child takes and
 * releases a million tickets, observing a response and settling the cost
 * of each it gets, under a seccomp BPF filter that allows write and exit
 * and kills the process (SIGSYS) on any other system call.  Some of them
 * are reservations (tg_reserve), half of those abandoned before their
 * time (a release that gives the slot back), half waited for by spinning
 * on the clock, as an event loop's timer would.
 *
 * Not SECCOMP_MODE_STRICT: on some kernels strict mode also sets x86's
 * TIF_NOTSC, so rdtsc faults and the vDSO's clock_gettime dies with
 * SIGSEGV.  A filter refuses exactly the same system calls and leaves the
 * TSC alone.
 */
#include <sys/syscall.h>
#include <errno.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "tollgate.h"

#define ROUNDS	1000000

/*
 * ThreadSanitizer's runtime makes system calls of its own (it maps shadow
 * memory on demand), which the filter would punish.  The claim is about the library, which the
 * plain and ASan builds check.
 */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN	1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN	1
#endif
#endif

static const char conf[] =
    "[org]\n"
    "limit = 100000 requests/s\n"
    "limit = 1000000000 tokens/day window\n"
    "[org/model]\n"
    "limit = 50000 requests/s burst 1000\n"
    "concurrency = 4\n";

static int
setup(void **state)
{
	return tb_group_setup(state, conf);
}

struct counts {
	uint64_t	ok, again, other, observed, settled, retry;
	uint64_t	reserved, abandoned;
};

/* What OpenAI sends with a 200, and a 429 that pauses for 1 ms. */
static const char ok_headers[] =
    "HTTP/2 200\r\n"
    "date: Mon, 23 Nov 2026 10:00:00 GMT\r\n"
    "content-type: application/json\r\n"
    "openai-processing-ms: 312\r\n"
    "x-ratelimit-limit-requests: 100000\r\n"
    "x-ratelimit-limit-tokens: 2000000\r\n"
    "x-ratelimit-remaining-requests: 99999\r\n"
    "x-ratelimit-remaining-tokens: 1999000\r\n"
    "x-ratelimit-reset-requests: 1ms\r\n"
    "x-ratelimit-reset-tokens: 30ms\r\n"
    "x-request-id: req_7f2c1e0b9d\r\n\r\n";
static const char limited_headers[] =
    "HTTP/1.1 429 Too Many Requests\r\n"
    "retry-after-ms: 1\r\n"
    "retry-after: Mon, 23 Nov 2020 10:00:01 GMT\r\n\r\n";

/* Spin until valid_in_ns from now: the clock is the vDSO's, no call. */
static void
spin_for(uint64_t valid_in_ns)
{
	uint64_t until = tb_now_ns() + valid_in_ns;

	while (tb_now_ns() < until)
		;
}

/* In the child: install the filter, hammer, report through the pipe. */
static void
child(const struct tbroker *tb, int fd, int mode)
{
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "org/model");
	tg_cost cost = { 1, 7, 0 }, actual = { 1, 5, 0 };
	struct counts n = { 0, 0, 0, 0, 0, 0, 0, 0 };
	tg_ticket t;
	uint64_t retry, valid;
	int r;

	if (tb_deny_syscalls(0) != 0)
		_exit(3);
	if (mode == 1)
		(void)getppid();	/* the control: this must kill us */
	for (int i = 0; i < ROUNDS; i++) {
		if (i % 16 == 15) {
			/* A few slots (20 us each) ahead, no more. */
			r = tg_reserve(c, k, &cost, 100000, &t, &valid);
			if (r == 0 && valid > 0 && i % 32 == 31) {
				tg_release(c, &t);
				n.abandoned++;
				continue;
			}
			if (r == 0) {
				n.reserved++;
				spin_for(valid);
				while (tg_ready(c, &t, &valid) == -EAGAIN)
					spin_for(valid);
			}
		} else if (i % 2 == 0)
			r = tg_try_acquire(c, k, &cost, &t, &retry);
		else
			r = tg_acquire(c, k, &cost, 0, &t);
		if (r == 0) {
			n.ok++;
			if (n.ok % 1000 == 0)
				r = tg_observe(c, &t, 429, limited_headers,
				    sizeof(limited_headers) - 1);
			else
				r = tg_observe(c, &t, 200, ok_headers,
				    sizeof(ok_headers) - 1);
			n.observed += r == TG_OK || r == TG_RETRY;
			n.retry += r == TG_RETRY;
			n.settled += tg_settle(c, &t, &actual) == 0;
			tg_release(c, &t);
		} else if (r == -EAGAIN || r == -ETIMEDOUT)
			n.again++;
		else
			n.other++;
	}
	if (write(fd, &n, sizeof(n)) != (ssize_t)sizeof(n))
		syscall(SYS_exit, 4);
	/* exit_group is not allowed by the filter: plain exit. */
	syscall(SYS_exit, 0);
}

static void
test_hot_path_makes_no_syscall(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	struct counts n;

#ifdef UNDER_TSAN
	skip();
#endif
	int p[2];
	pid_t pid;

	assert_int_equal(pipe(p), 0);
	if ((pid = fork()) == 0) {
		close(p[0]);
		child(tb, p[1], 0);
	}
	close(p[1]);
	assert_int_equal(read(p[0], &n, sizeof(n)), (ssize_t)sizeof(n));
	close(p[0]);
	assert_int_equal(tb_wait_child(pid), 0);
	/* Both paths ran: grants and refusals (the bucket runs dry). */
	assert_true(n.ok > 1000);
	assert_true(n.again > 0);
	assert_int_equal(n.other, 0);
	/* Every grant was observed and settled; some 429s paused the key. */
	assert_int_equal(n.observed, n.ok);
	assert_int_equal(n.settled, n.ok);
	assert_true(n.retry > 0);
	/* Reservations used, and abandoned ones given back. */
	assert_true(n.reserved > 100);
	assert_true(n.abandoned > 100);
	print_message("%llu granted (each observed and settled, %llu 429s; "
	    "%llu reserved, %llu more abandoned), %llu refused, no system "
	    "call\n", (unsigned long long)n.ok, (unsigned long long)n.retry,
	    (unsigned long long)n.reserved, (unsigned long long)n.abandoned,
	    (unsigned long long)n.again);
}

/* The check can fail: one system call in the child and it is killed. */
static void
test_control_syscall_is_fatal(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	int p[2];
	pid_t pid;

#ifdef UNDER_TSAN
	skip();
#endif
	assert_int_equal(pipe(p), 0);
	if ((pid = fork()) == 0) {
		close(p[0]);
		child(tb, p[1], 1);
	}
	close(p[1]);
	close(p[0]);
	assert_int_equal(tb_wait_child(pid), 128 + SIGSYS);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hot_path_makes_no_syscall),
		cmocka_unit_test(test_control_syscall_is_fatal),
	};

	return cmocka_run_group_tests(tests, setup, tb_group_teardown);
}
