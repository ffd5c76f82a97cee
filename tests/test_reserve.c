/*
 * test_reserve.c: tg_reserve against a real broker.  It takes the place
 * in line tg_acquire would, in arrival order with tg_acquire's waiters in
 * other processes; refuses at once what would come too late, taking
 * nothing; takes a chain's limits all or none; refuses what cannot be
 * reserved ahead (a lease) as tg_try_acquire does; and a ticket released
 * before its time gives its slot back while it is the last in line.
 * That it makes no system call: test_seccomp.
 */
#include <errno.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "tollgate.h"

#define MS	1000000ull
#define SEC	1000000000ull

/*
 * A slot a second where only reservations are made (nothing sleeps), so
 * a reservation's wait tells slots apart however loaded the machine:
 * TOL is far below a slot.
 */
#define TOL	(300 * MS)

static const char conf[] =
    "[line]\n"
    "limit = 10 requests/s burst 1\n"
    "[order]\n"
    "limit = 1 requests/s burst 1\n"
    "[late]\n"
    "limit = 1 requests/s burst 1\n"
    "[back]\n"
    "limit = 1 requests/s burst 1\n"
    "[org]\n"
    "limit = 1 requests/s burst 1\n"
    "[org/model]\n"
    "limit = 1 requests/3s burst 1\n"
    "[lease]\n"
    "limit = 100 requests/s\n"
    "concurrency = 1\n"
    "[tokens]\n"
    "limit = 1000 tokens/s burst 3000\n"
    "[ready]\n"
    "limit = 2 requests/s burst 1\n"
    "[back429]\n"
    "limit = 2 requests/s burst 1\n"
    "limit = 1000 tokens/min\n"
    "[readynow]\n"
    "limit = 1 requests/s burst 2\n"
    "[readyreuse]\n"
    "limit = 2 requests/s burst 1\n"
    "[readyconc]\n"
    "concurrency = 1\n";

static int
setup(void **state)
{
	return tb_group_setup(state, conf);
}

/* Whether a wait is about `want' ns (within TOL either way). */
static int
about(uint64_t got, uint64_t want)
{
	return got + TOL >= want && got <= want + TOL;
}

static void
test_reserve_in_order(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "order");
	tg_ticket t[4];
	uint64_t in[4];

	memset(t, 0, sizeof(t));
	for (int i = 0; i < 4; i++) {
		assert_int_equal(tg_reserve(c, k, NULL, 10 * SEC, &t[i],
		    &in[i]), 0);
		assert_true(about(in[i], (uint64_t)i * SEC));
	}
	assert_int_equal(in[0], 0);
	/* Valid at once: used as a ticket of tg_try_acquire would be. */
	assert_int_equal(tg_observe(c, &t[0], 200, NULL, 0), TG_OK);
	for (int i = 0; i < 4; i++)
		tg_release(c, &t[i]);
	tg_close(c);
}

/*
 * Reservations and tg_acquire's waiters in other processes share one
 * line: a child that calls tg_acquire after our reservations is served
 * after them, and one that came before is served before ours.
 */
static void
test_reserve_shares_the_line_with_acquire(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "line");
	volatile uint64_t *at = tb_shared(2 * sizeof(uint64_t));
	tg_ticket t[3];
	uint64_t in[3], start;
	pid_t pid;

	memset(t, 0, sizeof(t));
	start = tb_now_ns();
	for (int i = 0; i < 3; i++)
		assert_int_equal(tg_reserve(c, k, NULL, SEC, &t[i], &in[i]), 0);
	if ((pid = fork()) == 0) {
		tg_client *cc = tb_client(tb);
		tg_ticket ct;

		at[0] = tb_now_ns();
		if (tg_acquire(cc, tb_key(cc, "line"), NULL, 5 * SEC, &ct) != 0)
			_exit(1);
		at[1] = tb_now_ns();
		tg_release(cc, &ct);
		tg_close(cc);
		_exit(0);
	}
	assert_int_equal(tb_wait_child(pid), 0);
	/* The child came fourth: after our three slots, 100 ms apart. */
	assert_true(at[0] >= start);
	assert_true(at[1] >= start + in[2] + 100 * MS - 5 * MS);
	print_message("reserved +%llu, +%llu, +%llu ms; the acquire after "
	    "them went at +%llu ms\n", (unsigned long long)(in[0] / MS),
	    (unsigned long long)(in[1] / MS), (unsigned long long)(in[2] / MS),
	    (unsigned long long)((at[1] - start) / MS));
	for (int i = 0; i < 3; i++)
		tg_release(c, &t[i]);
	tg_close(c);
}

static void
test_reserve_too_late_takes_nothing(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "late");
	tg_ticket t[3];
	uint64_t in = 0;

	memset(t, 0, sizeof(t));
	assert_int_equal(tg_reserve(c, k, NULL, 0, &t[0], &in), 0);
	assert_int_equal(in, 0);
	/* The next slot is a second away: not within half of one. */
	assert_int_equal(tg_reserve(c, k, NULL, 500 * MS, &t[1], &in),
	    -ETIMEDOUT);
	assert_true(about(in, SEC));
	assert_int_equal(tg_reserve(c, k, NULL, 0, &t[1], &in), -ETIMEDOUT);
	/* Nothing was taken: the slot is still the next one, not later. */
	assert_int_equal(tg_reserve(c, k, NULL, 5 * SEC, &t[1], &in), 0);
	assert_true(about(in, SEC));
	/* Bad arguments. */
	assert_int_equal(tg_reserve(c, k, NULL, 0, &t[2], NULL), -EINVAL);
	assert_int_equal(tg_reserve(c, k, NULL, 0, NULL, &in), -EINVAL);
	assert_int_equal(tg_reserve(NULL, k, NULL, 0, &t[2], &in), -EINVAL);
	for (int i = 0; i < 2; i++)
		tg_release(c, &t[i]);
	tg_close(c);
}

/*
 * org allows a slot a second, org/model one per 3 s: a reservation that
 * org could give within 2 s but org/model only in 3 s takes neither.
 */
static void
test_reserve_chain_all_or_nothing(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t org = tb_key(c, "org"), model = tb_key(c, "org/model");
	tg_ticket t[4];
	uint64_t in = 0;

	memset(t, 0, sizeof(t));
	assert_int_equal(tg_reserve(c, model, NULL, 0, &t[0], &in), 0);
	assert_int_equal(in, 0);
	/* org's next slot is 1 s away, org/model's 3 s: refused. */
	assert_int_equal(tg_reserve(c, model, NULL, 2 * SEC, &t[1], &in),
	    -ETIMEDOUT);
	assert_true(about(in, 3 * SEC));
	/* org kept its slot at 1 s: the refusal took nothing from it. */
	assert_int_equal(tg_reserve(c, org, NULL, 10 * SEC, &t[1], &in), 0);
	assert_true(about(in, SEC));
	/* Both reserved: valid when the later of the two is, 3 s. */
	assert_int_equal(tg_reserve(c, model, NULL, 10 * SEC, &t[2], &in), 0);
	assert_true(about(in, 3 * SEC));
	for (int i = 0; i < 3; i++)
		tg_release(c, &t[i]);
	tg_close(c);
}

/* A lease is not reserved ahead: -EAGAIN and 0, as tg_try_acquire. */
static void
test_reserve_full_lease_is_eagain(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "lease");
	tg_ticket held, t;
	uint64_t in = 1, retry = 1;

	memset(&held, 0, sizeof(held));
	memset(&t, 0, sizeof(t));
	assert_int_equal(tg_reserve(c, k, NULL, SEC, &held, &in), 0);
	assert_int_equal(tg_reserve(c, k, NULL, SEC, &t, &in), -EAGAIN);
	assert_int_equal(in, 0);
	assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry), -EAGAIN);
	assert_int_equal(retry, 0);
	tg_release(c, &held);
	/* Given back: the next reservation gets the lease. */
	assert_int_equal(tg_reserve(c, k, NULL, SEC, &t, &in), 0);
	tg_release(c, &t);
	tg_close(c);
}

/*
 * Released before its time, a reservation was never used: its slot goes
 * back while nobody stacked one on it, else it is spent (a gap, never a
 * slot given twice).  Released after its time, it was used: nothing.
 */
static void
test_release_before_time_gives_back(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "back");
	tg_ticket t[6];
	uint64_t in[6];

	memset(t, 0, sizeof(t));
	assert_int_equal(tg_reserve(c, k, NULL, 10 * SEC, &t[0], &in[0]), 0);
	assert_int_equal(tg_reserve(c, k, NULL, 10 * SEC, &t[1], &in[1]), 0);
	assert_true(about(in[1], SEC));
	/* The last in line, abandoned: its slot is the next one's. */
	tg_release(c, &t[1]);
	tg_release(c, &t[1]);		/* idempotent: no second refund */
	assert_int_equal(tg_reserve(c, k, NULL, 10 * SEC, &t[2], &in[2]), 0);
	assert_true(about(in[2], SEC));
	assert_int_equal(tg_reserve(c, k, NULL, 10 * SEC, &t[3], &in[3]), 0);
	assert_true(about(in[3], 2 * SEC));
	/* Not the last: spent.  The next slot is after t[3]'s, at 3 s. */
	tg_release(c, &t[2]);
	assert_int_equal(tg_reserve(c, k, NULL, 10 * SEC, &t[4], &in[4]), 0);
	assert_true(about(in[4], 3 * SEC));
	/* Released in reverse order of arrival, both come back. */
	tg_release(c, &t[4]);
	tg_release(c, &t[3]);
	assert_int_equal(tg_reserve(c, k, NULL, 10 * SEC, &t[5], &in[5]), 0);
	assert_true(about(in[5], 2 * SEC));
	/* t[0] was valid at once and used: its release gives nothing. */
	tg_release(c, &t[0]);
	assert_int_equal(tg_reserve(c, k, NULL, 10 * SEC, &t[4], &in[4]), 0);
	assert_true(about(in[4], 3 * SEC));
	tg_release(c, &t[4]);
	tg_release(c, &t[5]);
	tg_close(c);
}

/*
 * The case: a 3,000-token reservation among 1,000-token ones
 * takes its place and is not overtaken by those that came after it.
 */
static void
test_big_reservation_is_not_overtaken(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "tokens");
	tg_cost small = { 1, 1000, 0 }, big = { 1, 3000, 0 };
	tg_ticket t[8];
	uint64_t in[8], bigin = 0;

	memset(t, 0, sizeof(t));
	/* The bucket's 3,000 go to the first three small ones at once. */
	for (int i = 0; i < 3; i++)
		assert_int_equal(tg_reserve(c, k, &small, 10 * SEC, &t[i],
		    &in[i]), 0);
	assert_int_equal(tg_reserve(c, k, &big, 10 * SEC, &t[3], &bigin), 0);
	for (int i = 4; i < 8; i++)
		assert_int_equal(tg_reserve(c, k, &small, 10 * SEC, &t[i],
		    &in[i]), 0);
	/* 3 s for the big one to refill; each later one a second more. */
	assert_true(about(bigin, 3 * SEC));
	for (int i = 4; i < 8; i++)
		assert_true(in[i] >= bigin);
	assert_true(about(in[7], 7 * SEC));
	for (int i = 0; i < 8; i++)
		tg_release(c, &t[i]);
	tg_close(c);
}

/*
 * tg_ready, after a reservation's sleep: not yet (-EAGAIN, how long),
 * ready (0), or a 429 came since it was reserved (-ECANCELED): its slot
 * was reckoned at the pace before, so in line again.  Before tg_ready an
 * event loop had no way to tell, and sent into the pause: 2 requests a
 * 429 in the Python transport's fleet test.
 */
static void
test_ready_after_a_pause(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "ready");
	static const char ra[] = "retry-after: 0.2\r\n";
	tg_ticket t0, t1, t2;
	uint64_t in0, in1, in2, left;

	assert_int_equal(tg_ready(NULL, &t0, &left), -EINVAL);
	memset(&t0, 0, sizeof(t0));
	assert_int_equal(tg_ready(c, &t0, &left), -EINVAL);	/* empty */
	assert_int_equal(tg_reserve(c, k, NULL, 10 * SEC, &t0, &in0), 0);
	assert_int_equal(tg_reserve(c, k, NULL, 10 * SEC, &t1, &in1), 0);
	assert_int_equal(in0, 0);
	assert_true(about(in1, SEC / 2));
	assert_int_equal(tg_ready(c, &t0, &left), 0);
	assert_int_equal(tg_ready(c, &t1, &left), -EAGAIN);
	assert_true(left > 0 && left <= in1);
	/* t0's request met a 429: the key pauses. */
	assert_int_equal(tg_observe(c, &t0, 429, ra, sizeof(ra) - 1),
	    TG_RETRY);
	tg_release(c, &t0);
	tb_sleep_ns(in1 + 50 * MS);
	/* t1's time has come, but it was reckoned before the 429. */
	assert_int_equal(tg_ready(c, &t1, &left), -ECANCELED);
	tg_release(c, &t1);
	assert_int_equal(tg_ready(c, &t1, &left), -EINVAL);	/* spent */
	/* Reserved after the 429: from the pause's end, and then ready. */
	assert_int_equal(tg_reserve(c, k, NULL, 10 * SEC, &t2, &in2), 0);
	tb_sleep_ns(in2);
	while (tg_ready(c, &t2, &left) == -EAGAIN)
		tb_sleep_ns(left);
	assert_int_equal(tg_ready(c, &t2, &left), 0);
	tg_release(c, &t2);
	tg_close(c);
}

/*
 * A ticket that tg_ready sends back in line gives back its charge: the
 * tokens it reserved come back to a bucket the 429 did not empty (the
 * server said 900 tokens were left), so that going back in line does
 * not charge its estimate twice.  Before, the 400 stayed spent: 200 of
 * the 1000 left, and a 600-token ticket was refused.
 */
static void
test_ready_gives_back_what_was_not_sent(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "back429");
	static const char h[] = "retry-after: 0.2\r\n"
	    "x-ratelimit-limit-tokens: 1000\r\n"
	    "x-ratelimit-remaining-tokens: 900\r\n"
	    "x-ratelimit-reset-tokens: 6s\r\n";
	tg_cost est = { 1, 400, 0 }, big = { 0, 600, 0 };
	tg_ticket t0, t1, t2;
	uint64_t in0, in1, left;

	assert_int_equal(tg_reserve(c, k, &est, 10 * SEC, &t0, &in0), 0);
	assert_int_equal(tg_reserve(c, k, &est, 10 * SEC, &t1, &in1), 0);
	assert_true(in1 > 0);
	assert_int_equal(tg_observe(c, &t0, 429, h, sizeof(h) - 1), TG_RETRY);
	tg_release(c, &t0);
	tb_sleep_ns(in1 + 50 * MS);
	assert_int_equal(tg_ready(c, &t1, &left), -ECANCELED);
	tg_release(c, &t1);
	/* t0's 400 (the server counted it), t1's back: 600 are left. */
	assert_int_equal(tg_try_acquire(c, k, &big, &t2, &left), 0);
	tg_release(c, &t2);
	tg_close(c);
}

/*
 * tg_ready on a reservation valid at once (it kept no time: nothing to
 * wait for) when a 429 on another of the key's tickets paused it since:
 * the pause on now says no, and how long it lasts.  Kills a tg_ready
 * that asks only about pauses set after a kept time, or reports 0 s.
 */
static void
test_ready_paused_now(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "readynow");
	static const char ra[] = "retry-after: 5\r\n";
	tg_ticket t0, t1;
	uint64_t in0, in1, left;

	memset(&t0, 0, sizeof(t0));
	memset(&t1, 0, sizeof(t1));
	assert_int_equal(tg_reserve(c, k, NULL, 10 * SEC, &t0, &in0), 0);
	assert_int_equal(tg_reserve(c, k, NULL, 10 * SEC, &t1, &in1), 0);
	assert_int_equal(in0, 0);
	assert_int_equal(in1, 0);
	assert_int_equal(tg_ready(c, &t0, &left), 0);
	assert_int_equal(tg_observe(c, &t1, 429, ra, sizeof(ra) - 1),
	    TG_RETRY);
	tg_release(c, &t1);
	assert_int_equal(tg_ready(c, &t0, &left), -ECANCELED);
	assert_true(left > 0 && left <= 5 * SEC);
	tg_release(c, &t0);
	tg_close(c);
}

/*
 * A ticket reused: tg_reserve into the buffer of an earlier reservation
 * that waited.  Valid at once, the new one keeps no time, and a pause
 * set after the old one's slot (over by now) is none of its business:
 * tg_ready says 0.  Kills a tg_reserve that leaves the word it would
 * keep the time in as it found it when there is no wait.
 */
static void
test_ready_reused_ticket(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t ka = tb_key(c, "readyreuse"), kb = tb_key(c, "readyconc");
	static const char ra[] = "retry-after: 0.2\r\n";
	tg_ticket t, u;
	uint64_t in, left;

	memset(&t, 0, sizeof(t));
	memset(&u, 0, sizeof(u));
	/* t waits for a slot 0.5 s ahead; released before it, unused. */
	assert_int_equal(tg_reserve(c, ka, NULL, 10 * SEC, &u, &in), 0);
	assert_int_equal(in, 0);
	assert_int_equal(tg_reserve(c, ka, NULL, 10 * SEC, &t, &in), 0);
	assert_true(in > 0);
	tg_release(c, &t);
	tg_release(c, &u);
	/* After every time t held: a 429 pauses kb, and the pause ends. */
	tb_sleep_ns(2 * SEC);
	assert_int_equal(tg_try_acquire(c, kb, NULL, &u, NULL), 0);
	assert_int_equal(tg_observe(c, &u, 429, ra, sizeof(ra) - 1),
	    TG_RETRY);
	tg_release(c, &u);
	tb_sleep_ns(600 * MS);
	/* The same buffer, valid at once (the ramp's first lease). */
	assert_int_equal(tg_reserve(c, kb, NULL, 10 * SEC, &t, &in), 0);
	assert_int_equal(in, 0);
	assert_int_equal(tg_ready(c, &t, &left), 0);
	tg_release(c, &t);
	tg_close(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reserve_in_order),
		cmocka_unit_test(test_reserve_shares_the_line_with_acquire),
		cmocka_unit_test(test_reserve_too_late_takes_nothing),
		cmocka_unit_test(test_reserve_chain_all_or_nothing),
		cmocka_unit_test(test_reserve_full_lease_is_eagain),
		cmocka_unit_test(test_release_before_time_gives_back),
		cmocka_unit_test(test_big_reservation_is_not_overtaken),
		cmocka_unit_test(test_ready_after_a_pause),
		cmocka_unit_test(test_ready_gives_back_what_was_not_sent),
		cmocka_unit_test(test_ready_paused_now),
		cmocka_unit_test(test_ready_reused_ticket),
	};

	return cmocka_run_group_tests(tests, setup, tb_group_teardown);
}
