/* test_api.c: the public API against a real broker: results and errors. */
#include <sys/time.h>
#include <sys/wait.h>
#include <errno.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "seg.h"
#include "tollgate.h"

static const char conf[] =
    "[api]\n"
    "limit = 1 requests/165s burst 4 cooldown 120s\n"
    "concurrency = 2\n"
    "[api/child]\n"
    "limit = 10 tokens/min\n"
    "[gone]\n"
    "limit = 5 requests/s\n"
    "[huge]\n"
    "limit = 1 requests/s burst 18446744073709551615\n"
    "[hugetok]\n"
    "limit = 1000 tokens/day burst 18446744073709551615\n"
    "[fine]\n"
    "limit = 1000000000 requests/s burst 18446744073709551615\n"
    "[wrap]\n"
    "limit = 1 requests/min\n"
    "limit = 1 requests/36500day\n";

static int
setup(void **state)
{
	return tb_group_setup(state, conf);
}

static void
test_open_missing_segment(void **state)
{
	tg_client *c = NULL;

	(void)state;
	assert_int_equal(tg_open("tgtest-no-such-segment", &c), -ENOENT);
	assert_null(c);
	assert_int_equal(tg_open("bad/name", &c), -EINVAL);
	assert_int_equal(tg_open(NULL, NULL), -EINVAL);
}

static void
test_key_lookup(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k1 = 0, k2 = 0;

	assert_int_equal(tg_key(c, "api", &k1), 0);
	assert_int_equal(tg_key(c, "api/child", &k2), 0);
	assert_int_not_equal(k1, k2);
	assert_int_equal(tg_key(c, "nope", &k1), -ENOENT);
	assert_int_equal(tg_key(c, "", &k1), -ENOENT);
	assert_int_equal(tg_key(c, NULL, &k1), -EINVAL);
	assert_int_equal(tg_key(NULL, "api", &k1), -EINVAL);
	tg_close(c);
}

/* The worked example: four tickets of a 4-bucket, then a 165 s wait. */
static void
test_burst_then_eagain(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "api");
	tg_ticket t[5];
	uint64_t retry = 0;

	memset(t, 0, sizeof(t));
	for (int i = 0; i < 2; i++)
		assert_int_equal(tg_try_acquire(c, k, NULL, &t[i], &retry), 0);
	/* Concurrency 2: the third waits on a release, retry 0. */
	retry = 99;
	assert_int_equal(tg_try_acquire(c, k, NULL, &t[2], &retry), -EAGAIN);
	assert_int_equal(retry, 0);
	tg_release(c, &t[0]);
	tg_release(c, &t[1]);
	assert_int_equal(tg_try_acquire(c, k, NULL, &t[2], &retry), 0);
	tg_release(c, &t[2]);
	assert_int_equal(tg_try_acquire(c, k, NULL, &t[3], &retry), 0);
	tg_release(c, &t[3]);
	/* Four taken: the bucket is empty for about 165 s. */
	assert_int_equal(tg_try_acquire(c, k, NULL, &t[4], &retry), -EAGAIN);
	assert_true(retry > 160ull * 1000000000u);
	assert_true(retry <= 165ull * 1000000000u);
	tg_close(c);
}

static void
test_e2big(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "api/child");
	tg_cost cost = { 0, 11, 0 };
	tg_ticket t;
	uint64_t retry;

	assert_int_equal(tg_try_acquire(c, k, &cost, &t, &retry), -E2BIG);
	assert_int_equal(tg_acquire(c, k, &cost, -1, &t), -E2BIG);
	tg_close(c);
}

/*
 * A cost within the burst whose nanoseconds do not fit 64 bits never
 * fits either: -E2BIG, not -EAGAIN with a wait of 2^64 ns (584 years)
 * that would never come.  The bucket's nanoseconds overflow (a burst of
 * 2^64 - 1 at 1 s a request), the cost's (2^50 tokens at 86.4 us), or
 * only the cost added to the clock (2^64 - 1001 requests at 1 ns each).
 */
static void
test_e2big_cost_overflows(void **state)
{
	static const struct {
		const char	*key;
		tg_cost		cost;
	} r[] = {
		{ "huge", { UINT64_MAX, 0, 0 } },
		{ "huge", { UINT64_C(1) << 40, 0, 0 } },
		{ "hugetok", { 1, UINT64_C(1) << 50, 0 } },
		{ "hugetok", { 1, UINT64_MAX, 0 } },
		{ "fine", { UINT64_MAX - 1000, 0, 0 } },
	};
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	const tg_cost one = { 1, 1, 0 };
	uint64_t retry;
	tg_ticket t;
	int bad = 0, r1, r2;

	for (size_t i = 0; i < sizeof(r) / sizeof(r[0]); i++) {
		uint32_t k = tb_key(c, r[i].key);

		retry = 0;
		r1 = tg_try_acquire(c, k, &r[i].cost, &t, &retry);
		r2 = tg_acquire(c, k, &r[i].cost, -1, &t);
		if (r1 != -E2BIG || r2 != -E2BIG) {
			print_error("[%s] %llu requests, %llu tokens: "
			    "tg_try_acquire %s (retry %.3g s), tg_acquire %s\n",
			    r[i].key, (unsigned long long)r[i].cost.requests,
			    (unsigned long long)r[i].cost.tokens,
			    tg_strerror(r1), (double)retry / 1e9,
			    tg_strerror(r2));
			bad++;
		}
	}
	assert_int_equal(bad, 0);
	/* What does fit still does. */
	for (size_t i = 0; i < sizeof(r) / sizeof(r[0]); i++) {
		assert_int_equal(tg_try_acquire(c, tb_key(c, r[i].key), &one,
		    &t, &retry), 0);
		tg_release(c, &t);
	}
	tg_close(c);
}

/* The id of own limit i of key k, from the live config. */
static uint32_t
own_limit(const struct seg_map *m, uint32_t k, unsigned i)
{
	struct seg_cfg *cfg;
	uint32_t seq, id;

	do {
		cfg = seg_read_begin(m, &seq);
		id = seg_keys(cfg)[k & 0xffff].chain[i];
	} while (!seg_read_ok(cfg, seq));
	return id;
}

/*
 * A refusal says when every limit could take the cost, the later ones
 * by peeking at their TAT.  A TAT scribbled near 2^64 (the broker repairs
 * it on its next tick) plus the cost wraps: read as a small sum, it said
 * the limit was free.  It never fits while the TAT stands: retry 2^64-1.
 * The scribble is set so that the wrapped sum lands 1 s after now.
 */
static void
test_refusal_peek_does_not_wrap(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "wrap");
	const uint64_t cost = 36500ull * 86400 * 1000000000;
	struct seg_map m;
	_Atomic uint64_t *tat;
	uint64_t retry = 0, repairs;
	tg_ticket t;
	int r = 0;

	assert_int_equal(seg_attach(tb->segment, 1, &m), 0);
	tat = &seg_lstates(&m)[own_limit(&m, k, 1)].tat_ns;
	/* The first limit is spent for a minute; it refuses first. */
	assert_int_equal(tg_try_acquire(c, k, NULL, &t, NULL), 0);
	for (int i = 0; i < 20; i++) {
		repairs = atomic_load(&m.hdr->repairs);
		atomic_store(tat, UINT64_MAX - (cost - tb_now_ns() -
		    1000000000));
		r = tg_try_acquire(c, k, NULL, &t, &retry);
		/* Not if the broker's scrub came in between: again. */
		if (atomic_load(&m.hdr->repairs) == repairs)
			break;
	}
	atomic_store(tat, 0);
	assert_int_equal(r, -EAGAIN);
	print_message("retry in %.3g s\n", (double)retry / 1e9);
	assert_true(retry == UINT64_MAX);
	seg_detach(&m);
	tg_close(c);
}

static void
test_bad_arguments(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	tg_ticket t;
	uint64_t retry;

	assert_int_equal(tg_try_acquire(NULL, 1, NULL, &t, &retry), -EINVAL);
	assert_int_equal(tg_try_acquire(c, 1, NULL, NULL, &retry), -EINVAL);
	/* A handle that was never returned by tg_key. */
	assert_int_equal(tg_try_acquire(c, 0, NULL, &t, &retry), -EINVAL);
	assert_int_equal(tg_try_acquire(c, 0xffffffffu, NULL, &t, &retry),
	    -EINVAL);
	assert_int_equal(tg_acquire(c, 0, NULL, 0, &t), -EINVAL);
	/* Releasing nonsense does nothing and does not crash. */
	memset(&t, 0, sizeof(t));
	tg_release(c, &t);
	memset(&t, 0xa5, sizeof(t));
	tg_release(c, &t);
	tg_release(c, NULL);
	tg_release(NULL, &t);
	tg_close(NULL);
	tg_close(c);
}

/* tg_observe and tg_settle refuse nonsense with -EINVAL, change nothing. */
static void
test_feedback_bad_arguments(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "gone");
	const tg_cost cost = { 1, 0, 0 };
	tg_ticket t, empty;
	uint64_t retry;

	memset(&empty, 0, sizeof(empty));
	assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry), 0);
	assert_int_equal(tg_observe(NULL, &t, 200, NULL, 0), -EINVAL);
	assert_int_equal(tg_observe(c, NULL, 200, NULL, 0), -EINVAL);
	/* A status that is no final HTTP status. */
	assert_int_equal(tg_observe(c, &t, 0, NULL, 0), -EINVAL);
	assert_int_equal(tg_observe(c, &t, 100, NULL, 0), -EINVAL);
	assert_int_equal(tg_observe(c, &t, 199, NULL, 0), -EINVAL);
	assert_int_equal(tg_observe(c, &t, 600, NULL, 0), -EINVAL);
	assert_int_equal(tg_observe(c, &t, -429, NULL, 0), -EINVAL);
	/* Headers promised but not given. */
	assert_int_equal(tg_observe(c, &t, 429, NULL, 10), -EINVAL);
	/* A ticket never filled, or filled with garbage. */
	assert_int_equal(tg_observe(c, &empty, 429, NULL, 0), -EINVAL);
	assert_int_equal(tg_settle(c, &empty, &cost), -EINVAL);
	memset(&empty, 0x5a, sizeof(empty));
	assert_int_equal(tg_observe(c, &empty, 429, NULL, 0), -EINVAL);
	assert_int_equal(tg_settle(NULL, &t, &cost), -EINVAL);
	assert_int_equal(tg_settle(c, NULL, &cost), -EINVAL);
	assert_int_equal(tg_settle(c, &t, NULL), -EINVAL);
	/* None of it paused the key. */
	tg_release(c, &t);
	assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry), 0);
	/* Observe and settle still work once the ticket is released. */
	tg_release(c, &t);
	assert_int_equal(tg_observe(c, &t, 200, "", 0), TG_OK);
	assert_int_equal(tg_observe(c, &t, 401, NULL, 0), TG_GIVE_UP);
	assert_int_equal(tg_observe(c, &t, 404, NULL, 0), TG_GIVE_UP);
	assert_int_equal(tg_settle(c, &t, &cost), 0);
	tg_close(c);
}

static void
test_release_idempotent(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "gone");
	tg_ticket t;
	uint64_t retry;

	assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry), 0);
	tg_release(c, &t);
	tg_release(c, &t);
	tg_close(c);
}

static void
test_acquire_timeout_fails_fast(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "api");
	tg_ticket t;
	uint64_t t0 = tb_now_ns();

	/* The bucket is spent for minutes: a 1 s wait cannot succeed. */
	assert_int_equal(tg_acquire(c, k, NULL, 1000000000, &t), -ETIMEDOUT);
	assert_true(tb_now_ns() - t0 < 500000000ull);
	tg_close(c);
}

static void
test_strerror(void **state)
{
	(void)state;
	assert_string_equal(tg_strerror(0), "success");
	assert_non_null(strstr(tg_strerror(-E2BIG), "never"));
	assert_non_null(strstr(tg_strerror(-ESTALE), "reload"));
	/* One code, two causes: the text tells them apart by the call. */
	assert_non_null(strstr(tg_strerror(-ENOENT), "no such segment (from "
	    "tg_open: no broker made it"));
	assert_non_null(strstr(tg_strerror(-ENOENT), "key (from tg_key: not "
	    "in the broker's config)"));
	assert_non_null(strstr(tg_strerror(-EACCES), "`group ='"));
	assert_non_null(tg_strerror(-12345));
	assert_non_null(tg_strerror(7));
}

/*
 * A reload that changes a limit is seen by the very next ticket of a
 * client that just used the key (its cached chain is read again): 2 per
 * minute become 5, with a fresh bucket, then 1 again.
 */
static void
test_reload_seen_at_once(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "gone");
	tg_ticket t;
	int n;
	static const char two[] = "[api]\nconcurrency = 2\n"
	    "[gone]\nlimit = 2 requests/min\n";
	static const char five[] = "[api]\nconcurrency = 2\n"
	    "[gone]\nlimit = 5 requests/min\n";
	static const char one[] = "[api]\nconcurrency = 2\n"
	    "[gone]\nlimit = 1 requests/min\n";

	assert_int_equal(tb_reload(tb, two), 0);
	for (n = 0; tg_try_acquire(c, k, NULL, &t, NULL) == 0; n++)
		tg_release(c, &t);
	assert_int_equal(n, 2);
	assert_int_equal(tb_reload(tb, five), 0);
	for (n = 0; tg_try_acquire(c, k, NULL, &t, NULL) == 0; n++)
		tg_release(c, &t);
	assert_int_equal(n, 5);
	assert_int_equal(tb_reload(tb, one), 0);
	for (n = 0; tg_acquire(c, k, NULL, 0, &t) == 0; n++)
		tg_release(c, &t);
	assert_int_equal(n, 1);
	assert_int_equal(tb_reload(tb, conf), 0);
	tg_close(c);
}

/* A test's broker of its own: cleaned up by own_teardown, failed or not. */
static struct tbroker *own;

static struct tbroker *
own_start(const char *body)
{
	int r;

	assert_non_null(own = calloc(1, sizeof(*own)));
	if ((r = tb_start(own, body)) == -ENOSYS)
		skip();
	assert_int_equal(r, 0);
	return own;
}

static int
own_teardown(void **state)
{
	(void)state;
	if (own != NULL) {
		tb_cleanup(own);
		free(own);
		own = NULL;
	}
	return 0;
}

static tg_client *sig_c;
static uint32_t sig_k;
static volatile sig_atomic_t sig_got;

static void
on_alarm(int sig)
{
	tg_ticket t;

	(void)sig;
	if (tg_try_acquire(sig_c, sig_k, NULL, &t, NULL) == 0) {
		tg_release(sig_c, &t);
		sig_got++;
	}
}

/*
 * A signal handler takes tickets on key b while the code it interrupts
 * takes them on key a, on one client: each key's grants are exactly its
 * own (the handler never uses, nor refills, the chain the interrupted
 * call holds).  In a child, so that a broken library that hangs fails
 * the test instead of hanging it.  Exit 0, or which check failed.
 */
static int
signal_tickets(const struct tbroker *tb)
{
	struct itimerval it = { { 0, 200 }, { 0, 200 } };
	struct sigaction sa;
	struct seg_map m;
	uint64_t got = 0, end;
	uint32_t ka;
	tg_ticket t;
	int bad = 0;

	if (tg_open(tb->segment, &sig_c) < 0 || tg_key(sig_c, "a", &ka) < 0 ||
	    tg_key(sig_c, "b", &sig_k) < 0)
		return 2;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;
	if (sigaction(SIGALRM, &sa, NULL) < 0 ||
	    setitimer(ITIMER_REAL, &it, NULL) < 0)
		return 3;
	for (end = tb_now_ns() + 500000000ull; tb_now_ns() < end; )
		if (tg_try_acquire(sig_c, ka, NULL, &t, NULL) == 0) {
			tg_release(sig_c, &t);
			got++;
		}
	memset(&it, 0, sizeof(it));
	setitimer(ITIMER_REAL, &it, NULL);
	signal(SIGALRM, SIG_DFL);
	printf("%llu tickets on a, %d on b from the handler\n",
	    (unsigned long long)got, (int)sig_got);
	if (sig_got < 100)
		return 4;
	if (seg_attach(tb->segment, 0, &m) < 0)
		return 5;
	/* key ids are the handles' low 16 bits */
	if (seg_grant_sum(&m, ka & 0xffff) != got)
		bad = 6;
	else if (seg_grant_sum(&m, sig_k & 0xffff) != (uint64_t)sig_got)
		bad = 7;
	/* Our slot's counters, which both paths write too. */
	for (uint32_t i = 0; i < m.hdr->max_clients && bad == 0; i++) {
		struct seg_client *sc = &seg_clients(&m)[i];

		if (CLIENT_STATE(atomic_load(&sc->owner)) != CLIENT_LIVE ||
		    atomic_load(&sc->pid) != getpid())
			continue;
		printf("slot %u: %llu acquired, %llu released\n", i,
		    (unsigned long long)atomic_load(&sc->acquired),
		    (unsigned long long)atomic_load(&sc->released));
		if (atomic_load(&sc->acquired) != got + (uint64_t)sig_got)
			bad = 8;
		else if (atomic_load(&sc->released) != got +
		    (uint64_t)sig_got)
			bad = 9;
	}
	seg_detach(&m);
	tg_close(sig_c);
	return bad;
}

static void
test_signal_handler_tickets(void **state)
{
	struct tbroker *tb;
	uint64_t end;
	pid_t pid;
	int r, st;

	(void)state;
	tb = own_start("[a]\nlimit = 1000000000 requests/s\n"
	    "[b]\nlimit = 1000000000 requests/s\n");
	fflush(stdout);
	if ((pid = fork()) == 0) {
		r = signal_tickets(tb);
		fflush(stdout);
		_exit(r);
	}
	assert_true(pid > 0);
	for (end = tb_now_ns() + 60000000000ull; waitpid(pid, &st, WNOHANG) !=
	    pid; tb_sleep_ns(10000000))
		if (tb_now_ns() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			fail_msg("the child hung");
		}
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

/*
 * A key of one rate limit takes the library's straight path; a pause and
 * a server cap must stop it all the same, with the time to wait.
 */
static void
test_one_rate_pause_and_cap(void **state)
{
	struct tbroker *tb;
	static const char paused[] = "HTTP/1.1 429\r\nretry-after: 2\r\n";
	/* A window's figures (GitHub's): a cap until the reset. */
	static const char capped[] = "HTTP/1.1 200\r\n"
	    "x-ratelimit-remaining: 0\r\n"
	    "x-ratelimit-reset: 30\r\n";
	tg_client *c;
	uint32_t kp, kc;
	uint64_t retry = 0;
	tg_ticket t;

	(void)state;
	tb = own_start("[p]\nlimit = 100 requests/s\n"
	    "[c]\nlimit = 100 requests/s\n");
	c = tb_client(tb);
	kp = tb_key(c, "p");
	kc = tb_key(c, "c");
	assert_int_equal(tg_try_acquire(c, kp, NULL, &t, NULL), 0);
	assert_int_equal(tg_observe(c, &t, 429, paused, sizeof(paused) - 1),
	    TG_RETRY);
	tg_release(c, &t);
	assert_int_equal(tg_try_acquire(c, kp, NULL, &t, &retry), -EAGAIN);
	assert_true(retry > 1500000000ull && retry <= 2000000000ull);
	assert_int_equal(tg_try_acquire(c, kc, NULL, &t, NULL), 0);
	assert_int_equal(tg_observe(c, &t, 200, capped, sizeof(capped) - 1),
	    TG_OK);
	tg_release(c, &t);
	assert_int_equal(tg_try_acquire(c, kc, NULL, &t, &retry), -EAGAIN);
	assert_true(retry > 25000000000ull && retry <= 31000000000ull);
	tg_close(c);
}

/* Runs last: removes a key by a reload, so its handle goes stale. */
static void
test_removed_key_is_stale(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "gone"), k2;
	const tg_cost one = { 1, 0, 0 };
	tg_ticket t;
	uint64_t retry;
	static const char without[] =
	    "[api]\n"
	    "limit = 1 requests/165s burst 4 cooldown 120s\n"
	    "concurrency = 2\n"
	    "[api/child]\n"
	    "limit = 10 tokens/min\n";

	assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry), 0);
	assert_int_equal(tb_reload(tb, without), 0);
	/* A response to a ticket of a removed key: nowhere to land. */
	assert_int_equal(tg_observe(c, &t, 429, NULL, 0), -ESTALE);
	assert_int_equal(tg_settle(c, &t, &one), -ESTALE);
	tg_release(c, &t);
	assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry), -ESTALE);
	assert_int_equal(tg_key(c, "gone", &k2), -ENOENT);
	tg_close(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_missing_segment),
		cmocka_unit_test(test_key_lookup),
		cmocka_unit_test(test_burst_then_eagain),
		cmocka_unit_test(test_e2big),
		cmocka_unit_test(test_e2big_cost_overflows),
		cmocka_unit_test(test_refusal_peek_does_not_wrap),
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test(test_feedback_bad_arguments),
		cmocka_unit_test(test_release_idempotent),
		cmocka_unit_test(test_acquire_timeout_fails_fast),
		cmocka_unit_test(test_strerror),
		cmocka_unit_test(test_reload_seen_at_once),
		cmocka_unit_test_teardown(test_signal_handler_tickets,
		    own_teardown),
		cmocka_unit_test_teardown(test_one_rate_pause_and_cap,
		    own_teardown),
		cmocka_unit_test(test_removed_key_is_stale),
	};

	return cmocka_run_group_tests(tests, setup, tb_group_teardown);
}
