/* test_lease.c: concurrency lease cells and their futex, a behaviour a test. */
#include <sys/mman.h>
#include <sys/wait.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "lease.h"
#include "seg.h"

#define NCELLS	8

/* The limit's line where no test looks at its wake-ups. */
static struct seg_lstate nobody;

static uint64_t
mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void
sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000u),
	    (long)(ns % 1000000000u) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/*
 * N takers (slots 0..N-1) fill N cells, each its own cell, each cell
 * holding exactly its taker's value; the next taker finds none.
 */
static void
test_lease_take_fills_cells_then_eagain(void **state)
{
	_Atomic uint64_t cells[NCELLS] = { 0 };
	uint32_t cell, seen = 0;

	(void)state;
	for (uint32_t s = 0; s < NCELLS; s++) {
		assert_int_equal(lease_take(&nobody, cells, NCELLS, NCELLS,
		    LEASE_VAL(s, 1), s * 3, &cell), 0);
		assert_true(cell < NCELLS);
		assert_false(seen & 1u << cell);	/* distinct cells */
		seen |= 1u << cell;
		assert_int_equal(atomic_load(&cells[cell]), LEASE_VAL(s, 1));
	}
	assert_int_equal(lease_take(&nobody, cells, NCELLS, NCELLS,
	    LEASE_VAL(NCELLS, 1), 0, &cell), -EAGAIN);
	for (uint32_t i = 0; i < NCELLS; i++)
		assert_true(LEASE_SLOT(atomic_load(&cells[i])) < NCELLS);
}

/* The search starts at hint (mod ncells): takers spread over the cells. */
static void
test_lease_take_starts_at_hint(void **state)
{
	_Atomic uint64_t cells[NCELLS] = { 0 };
	uint32_t cell;

	(void)state;
	assert_int_equal(lease_take(&nobody, cells, NCELLS, NCELLS,
	    LEASE_VAL(5, 1), 5, &cell), 0);
	assert_int_equal(cell, 5);
	/* Held: the next free one after it, wrapping past the end. */
	assert_int_equal(lease_take(&nobody, cells, NCELLS, NCELLS,
	    LEASE_VAL(6, 1), 5 + NCELLS, &cell), 0);
	assert_int_equal(cell, 6);
	atomic_store(&cells[7], LEASE_VAL(9, 9));
	assert_int_equal(lease_take(&nobody, cells, NCELLS, NCELLS,
	    LEASE_VAL(7, 1), 6, &cell), 0);
	assert_int_equal(cell, 0);
}

/* Putting the exact value back frees the cell, once. */
static void
test_lease_put_exact_value_frees(void **state)
{
	_Atomic uint64_t cells[NCELLS] = { 0 };
	const uint64_t v = LEASE_VAL(3, 42);
	uint32_t cell;

	(void)state;
	assert_int_equal(lease_take(&nobody, cells, NCELLS, NCELLS, v, 0,
	    &cell), 0);
	assert_int_equal(lease_put(cells, NCELLS, cell, v), 1);
	assert_int_equal(atomic_load(&cells[cell]), 0);
	/* A doubled release finds nothing to free. */
	assert_int_equal(lease_put(cells, NCELLS, cell, v), 0);
}

/*
 * ABA: slot 3 released generation 41, and its generation 42 holds the
 * same cell now.  A late put of 41 must not free 42's lease.
 */
static void
test_lease_put_stale_generation_does_not_free(void **state)
{
	_Atomic uint64_t cells[NCELLS] = { 0 };
	const uint64_t old = LEASE_VAL(3, 41), cur = LEASE_VAL(3, 42);
	uint32_t cell, cell2;

	(void)state;
	assert_int_equal(lease_take(&nobody, cells, NCELLS, NCELLS, old, 2,
	    &cell), 0);
	assert_int_equal(lease_put(cells, NCELLS, cell, old), 1);
	assert_int_equal(lease_take(&nobody, cells, NCELLS, NCELLS, cur, 2,
	    &cell2), 0);
	assert_int_equal(cell2, cell);
	assert_int_equal(lease_put(cells, NCELLS, cell, old), 0);
	assert_int_equal(atomic_load(&cells[cell]), cur);
	assert_int_equal(lease_count(cells, NCELLS), 1);
}

/*
 * The broker may move a lease to another cell (a reload resized the
 * limit): a put naming the old cell still finds and frees it, and
 * leaves whatever now holds the old cell alone.
 */
static void
test_lease_put_finds_moved_value(void **state)
{
	_Atomic uint64_t cells[NCELLS] = { 0 };
	const uint64_t v = LEASE_VAL(1, 7), other = LEASE_VAL(2, 7);

	(void)state;
	atomic_store(&cells[6], v);		/* moved from 0 to 6 */
	atomic_store(&cells[0], other);		/* 0 taken by another */
	assert_int_equal(lease_put(cells, NCELLS, 0, v), 1);
	assert_int_equal(atomic_load(&cells[6]), 0);
	assert_int_equal(atomic_load(&cells[0]), other);
	/* A cell index out of range (a smaller limit now) searches too. */
	atomic_store(&cells[4], v);
	assert_int_equal(lease_put(cells, NCELLS, NCELLS + 3, v), 1);
	assert_int_equal(atomic_load(&cells[4]), 0);
}

/*
 * More cells than the limit allows (a shrunk or grown limit, adaptive
 * concurrency cut): takes stop at allowed, whatever cells are free, and
 * a release lets exactly one more in.
 */
static void
test_lease_take_stops_at_allowed(void **state)
{
	_Atomic uint64_t cells[NCELLS] = { 0 };
	uint32_t c[3], cell;

	(void)state;
	for (uint32_t s = 0; s < 3; s++)
		assert_int_equal(lease_take(&nobody, cells, NCELLS, 3,
		    LEASE_VAL(s, 1), s * 2, &c[s]), 0);
	assert_int_equal(lease_take(&nobody, cells, NCELLS, 3,
	    LEASE_VAL(7, 1), 7, &cell), -EAGAIN);
	/* The refusal wrote nothing: five cells still free. */
	assert_int_equal(lease_count(cells, NCELLS), 3);
	/* Allowed one now (a shrink): held ones stay, nothing more. */
	assert_int_equal(lease_take(&nobody, cells, NCELLS, 1,
	    LEASE_VAL(7, 1), 7, &cell), -EAGAIN);
	assert_int_equal(lease_put(cells, NCELLS, c[0], LEASE_VAL(0, 1)), 1);
	assert_int_equal(lease_take(&nobody, cells, NCELLS, 1,
	    LEASE_VAL(7, 1), 7, &cell), -EAGAIN);
	assert_int_equal(lease_take(&nobody, cells, NCELLS, 3,
	    LEASE_VAL(7, 1), 7, &cell), 0);
	assert_int_equal(lease_take(&nobody, cells, NCELLS, 3,
	    LEASE_VAL(8, 1), 0, &cell), -EAGAIN);
	assert_int_equal(lease_count(cells, NCELLS), 3);
}

/*
 * Retired cells (a reload moved the limit): a taker that meets one gets
 * -ESTALE, so that it reads the config again, and claims nothing.  One
 * that counts meets them all; one that does not (allowed == ncells)
 * meets those before a free cell, and may take a cell its holder freed
 * after the retirement (the broker accounts for it: segment.c).
 */
static void
test_lease_take_sealed_is_stale(void **state)
{
	_Atomic uint64_t cells[NCELLS] = { 0 };
	uint32_t cell;

	(void)state;
	atomic_store(&cells[3], LEASE_SEALED);
	assert_int_equal(lease_take(&nobody, cells, NCELLS, NCELLS - 1,
	    LEASE_VAL(1, 1), 0, &cell), -ESTALE);
	assert_int_equal(lease_take(&nobody, cells, NCELLS, NCELLS,
	    LEASE_VAL(1, 1), 3, &cell), -ESTALE);
	assert_int_equal(lease_count(cells, NCELLS), 1);
	assert_int_equal(lease_take(&nobody, cells, NCELLS, NCELLS,
	    LEASE_VAL(1, 1), 4, &cell), 0);
	assert_int_equal(cell, 4);
	/* A release never frees a retired cell: it is no lease. */
	assert_int_equal(lease_put(cells, NCELLS, 3, LEASE_SEALED), 0);
	assert_int_equal(atomic_load(&cells[3]), LEASE_SEALED);
}

/*
 * The litmus test of the count after the claim: processes race for one
 * lease of many cells (allowed = 1 of 8, and 2 of 8), each counting
 * itself in a shared word of holders while it holds; that word never
 * goes over the allowed, the lease is granted again and again, and a
 * refusal under the race never leaves a claim behind.  And 2 of 2, the
 * claim without a count.
 */
#define LIT_PROCS	6
struct litmus {
	struct seg_lstate	ls;
	_Atomic uint64_t	cells[NCELLS];
	_Atomic int		go;
	_Atomic int		holders;
	_Atomic int		over;
	_Atomic uint64_t	granted;
	_Atomic uint64_t	refused;
};

static void
litmus_run(struct litmus *l, uint32_t slot, uint32_t allowed,
    uint32_t ncells)
{
	uint64_t end, gen = 0;
	uint32_t cell;
	int h;

	while (!atomic_load(&l->go))
		;
	end = mono_ns() + 300000000u;
	while (mono_ns() < end) {
		uint64_t v = LEASE_VAL(slot, ++gen);

		if (lease_take(&l->ls, l->cells, ncells, allowed, v, slot,
		    &cell) != 0) {
			atomic_fetch_add(&l->refused, 1);
			continue;
		}
		h = atomic_fetch_add(&l->holders, 1) + 1;
		if ((uint32_t)h > allowed)
			atomic_fetch_add(&l->over, 1);
		atomic_fetch_add(&l->granted, 1);
		for (volatile int spin = 0; spin < 200; spin++)
			;
		atomic_fetch_sub(&l->holders, 1);
		if (lease_put(l->cells, ncells, cell, v) != 1)
			atomic_fetch_add(&l->over, 1000);
		lease_wake(&l->ls);
	}
}

static void
test_lease_take_litmus(void **state)
{
	static const uint32_t runs[][2] = { { 1, NCELLS }, { 2, NCELLS },
	    { 2, 2 } };

	(void)state;
	for (unsigned r = 0; r < sizeof(runs) / sizeof(runs[0]); r++) {
		uint32_t allowed = runs[r][0], ncells = runs[r][1];
		struct litmus *l = mmap(NULL, sizeof(*l), PROT_READ |
		    PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		pid_t pid[LIT_PROCS];
		int st;

		assert_true(l != MAP_FAILED);
		for (uint32_t i = 0; i < LIT_PROCS; i++) {
			pid[i] = fork();
			assert_true(pid[i] >= 0);
			if (pid[i] == 0) {
				litmus_run(l, i, allowed, ncells);
				_exit(0);
			}
		}
		atomic_store(&l->go, 1);
		for (uint32_t i = 0; i < LIT_PROCS; i++) {
			assert_int_equal(waitpid(pid[i], &st, 0), pid[i]);
			assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
		}
		print_message("allowed %u of %u: %llu granted, %llu refused, "
		    "%d over\n", allowed, ncells,
		    (unsigned long long)atomic_load(&l->granted),
		    (unsigned long long)atomic_load(&l->refused),
		    atomic_load(&l->over));
		assert_int_equal(atomic_load(&l->over), 0);
		assert_true(atomic_load(&l->granted) > 1000);
		assert_int_equal(lease_count(l->cells, NCELLS), 0);
		assert_int_equal(munmap(l, sizeof(*l)), 0);
	}
}

/* lease_count counts held cells, whoever holds them. */
static void
test_lease_count_counts_held_cells(void **state)
{
	_Atomic uint64_t cells[NCELLS] = { 0 };
	uint32_t c[3];

	(void)state;
	assert_int_equal(lease_count(cells, NCELLS), 0);
	for (uint32_t s = 0; s < 3; s++)
		assert_int_equal(lease_take(&nobody, cells, NCELLS, NCELLS,
		    LEASE_VAL(s, 1), s, &c[s]), 0);
	assert_int_equal(lease_count(cells, NCELLS), 3);
	assert_int_equal(lease_put(cells, NCELLS, c[1], LEASE_VAL(1, 1)), 1);
	assert_int_equal(lease_count(cells, NCELLS), 2);
	assert_int_equal(lease_count(cells, 0), 0);
}

/*
 * With nobody announced as waiting, a release's wake does nothing: not
 * even a write to the line, so `wake' stays where it was (and no futex
 * call is made, since that follows the bump).
 */
static void
test_lease_wake_without_waiters_leaves_wake(void **state)
{
	struct seg_lstate ls = { 0 };

	(void)state;
	atomic_store(&ls.wake, 17);
	lease_wake(&ls);
	assert_int_equal(atomic_load(&ls.wake), 17);
	assert_int_equal(atomic_load(&ls.waiting), 0);
}

/*
 * A release that lands between a sleeper's lease_wait_prepare and its
 * futex wait is not lost: the bump of `wake' makes the wait return at
 * once instead of sleeping to its deadline.
 */
static void
test_lease_wake_before_wait_is_not_lost(void **state)
{
	_Atomic uint64_t cells[1] = { LEASE_VAL(1, 1) };
	struct seg_lstate ls = { 0 };
	struct timespec abs;
	uint64_t t0, deadline;
	uint32_t seen, cell;

	(void)state;
	seen = lease_wait_prepare(&ls);
	assert_int_equal(atomic_load(&ls.waiting), 1);
	assert_int_equal(lease_take(&ls, cells, 1, 1, LEASE_VAL(2, 1), 0,
	    &cell), -EAGAIN);
	/* The holder releases now, before we sleep. */
	assert_int_equal(lease_put(cells, 1, 0, LEASE_VAL(1, 1)), 1);
	lease_wake(&ls);
	assert_int_equal(atomic_load(&ls.wake), seen + 1);
	assert_int_equal(atomic_load(&ls.waiting), 0);
	t0 = mono_ns();
	deadline = t0 + 2000000000u;
	abs = (struct timespec){ (time_t)(deadline / 1000000000u),
	    (long)(deadline % 1000000000u) };
	assert_int_equal(lease_wait(&ls, seen, &abs), 0);
	assert_true(mono_ns() - t0 < 1000000000u);
	assert_int_equal(lease_take(&ls, cells, 1, 1, LEASE_VAL(2, 1), 0,
	    &cell), 0);
}

/* What parent and child share: the limit's line and its cells. */
struct shared {
	struct seg_lstate	ls;
	_Atomic uint64_t	cells[2];
};

/*
 * The child, in a forked process: wait for a lease of the full limit the
 * way the library does, for at most 2 s.  Its exit status is the verdict:
 * 0 woken and took a lease, 1 timed out, 2 took one before sleeping
 * (the limit was not full), 3 a futex error.
 */
static int
child_wait(struct shared *sh)
{
	struct timespec abs;
	uint64_t deadline = mono_ns() + 2000000000u;
	uint32_t seen, cell;
	int r;

	abs = (struct timespec){ (time_t)(deadline / 1000000000u),
	    (long)(deadline % 1000000000u) };
	seen = lease_wait_prepare(&sh->ls);
	if (lease_take(&sh->ls, sh->cells, 2, 2, LEASE_VAL(9, 1), 0,
	    &cell) == 0)
		return 2;
	for (;;) {
		r = lease_wait(&sh->ls, seen, &abs);
		if (r == -ETIMEDOUT)
			return 1;
		if (r != 0 && r != -EINTR)
			return 3;
		/* Woken: try again, and sleep again if someone beat us. */
		seen = lease_wait_prepare(&sh->ls);
		if (lease_take(&sh->ls, sh->cells, 2, 2, LEASE_VAL(9, 1), 0,
		    &cell) == 0)
			return 0;
	}
}

/* Whether process pid is asleep (state S in /proc/PID/stat). */
static int
proc_sleeping(pid_t pid)
{
	char path[64], buf[256], *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The state follows the ")" that ends the command name. */
	if ((p = strrchr(buf, ')')) == NULL || p[1] == '\0')
		return 0;
	return p[2] == 'S';
}

/*
 * Two processes on a MAP_SHARED mapping, as clients share the segment:
 * the child sleeps in lease_wait on the full limit; the parent's
 * lease_put and lease_wake wake it (a futex on shared memory, so never
 * FUTEX_PRIVATE_FLAG) and it takes the freed lease within 2 s.
 */
static void
test_lease_wake_wakes_sleeper_in_other_process(void **state)
{
	const uint64_t held = LEASE_VAL(1, 1);
	struct shared *sh;
	uint64_t t0;
	pid_t pid;
	int st;

	(void)state;
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(sh != MAP_FAILED);
	atomic_store(&sh->cells[0], held);
	atomic_store(&sh->cells[1], LEASE_VAL(2, 1));
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(child_wait(sh));
	/*
	 * Release only once the child is asleep in the futex, so the test
	 * is of a wake and not of the no-lost-wakeup path: it counted the
	 * wait, then the kernel shows it sleeping.
	 */
	t0 = mono_ns();
	while ((atomic_load(&sh->ls.waits) == 0 || !proc_sleeping(pid)) &&
	    mono_ns() - t0 < 1000000000u)
		sleep_ns(1000000);
	assert_int_equal(atomic_load(&sh->ls.waits), 1);
	assert_int_equal(lease_put(sh->cells, 2, 0, held), 1);
	lease_wake(&sh->ls);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	assert_int_equal(atomic_load(&sh->cells[0]), LEASE_VAL(9, 1));
	assert_int_equal(atomic_load(&sh->ls.wake), 1);
	assert_int_equal(munmap(sh, sizeof(*sh)), 0);
}

/*
 * The sleep protocol as a litmus test, store buffering: in each round a
 * sleeper announces itself (lease_wait_prepare) and retries the one held
 * cell (lease_take), while a releaser frees it (lease_put) and looks for
 * sleepers (lease_wake).  Both missing each other, the retry seeing the
 * cell held and the wake seeing nobody, is a lost wake-up: the sleeper
 * would sleep to its deadline with the cell free.  lease_wait_prepare's
 * seq_cst fence forbids it; without it a weakly ordered CPU (ARM64,
 * POWER) may show it.  x86 cannot: the seq_cst store is an XCHG, a full
 * barrier, so there the test passes with or without the fence; made a
 * release store (a MOV, which x86 buffers as ARM64 does its STLR before
 * a plain load), it loses hundreds of wake-ups in 200000 rounds here,
 * and none once the fence follows it.
 */
#define LITMUS_ROUNDS	200000
#define LITMUS_NS	500000000ull

struct sb_litmus {
	struct seg_lstate	ls;
	_Atomic uint64_t	cell[1];
	_Atomic unsigned	arrived[2];	/* rounds each side reached */
	_Atomic unsigned	stop;		/* the last round to run */
	unsigned		rounds, lost;
};

/*
 * Both sides at step r: a two-thread spin barrier.  It spins before it
 * yields, so that both sides leave it within nanoseconds of each other,
 * as the race needs; the yield is for a machine with one free CPU.
 */
static void
sb_meet(struct sb_litmus *l, int me, unsigned r)
{
	atomic_store(&l->arrived[me], r);
	for (unsigned spin = 0; atomic_load(&l->arrived[!me]) < r; spin++)
		if (spin > 10000)
			sched_yield();
}

static void *
sb_releaser(void *arg)
{
	struct sb_litmus *l = arg;

	for (unsigned r = 1; r <= atomic_load(&l->stop); r++) {
		sb_meet(l, 1, 3 * r);
		(void)lease_put(l->cell, 1, 0, LEASE_VAL(1, r));
		lease_wake(&l->ls);
		sb_meet(l, 1, 3 * r + 1);
		sb_meet(l, 1, 3 * r + 2);	/* the sleeper resets */
	}
	return NULL;
}

static void
test_lease_wake_is_not_lost_litmus(void **state)
{
	struct sb_litmus *l;
	pthread_t th;
	uint64_t t0 = mono_ns();
	uint32_t seen, cell;
	unsigned r;
	int took;

	(void)state;
	l = calloc(1, sizeof(*l));
	assert_non_null(l);
	atomic_store(&l->stop, LITMUS_ROUNDS);
	atomic_store(&l->cell[0], LEASE_VAL(1, 1));
	assert_int_equal(pthread_create(&th, NULL, sb_releaser, l), 0);
	for (r = 1; r <= atomic_load(&l->stop); r++) {
		sb_meet(l, 0, 3 * r);
		seen = lease_wait_prepare(&l->ls);
		took = lease_take(&l->ls, l->cell, 1, 1, LEASE_VAL(2, r), 0,
		    &cell) == 0;
		sb_meet(l, 0, 3 * r + 1);
		/* Neither the cell nor a bump of `wake': lost. */
		if (!took && atomic_load(&l->ls.wake) == seen)
			l->lost++;
		l->rounds++;
		atomic_store(&l->ls.waiting, 0);
		atomic_store(&l->cell[0], LEASE_VAL(1, r + 1));
		/* Bounded in time: others build beside us. */
		if (r == atomic_load(&l->stop) || mono_ns() - t0 > LITMUS_NS)
			atomic_store(&l->stop, r);
		sb_meet(l, 0, 3 * r + 2);
	}
	assert_int_equal(pthread_join(th, NULL), 0);
	print_message("%u rounds, %u lost wake-ups\n", l->rounds, l->lost);
	assert_true(l->rounds > 0);
	assert_int_equal(l->lost, 0);
	free(l);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lease_take_fills_cells_then_eagain),
		cmocka_unit_test(test_lease_take_starts_at_hint),
		cmocka_unit_test(test_lease_put_exact_value_frees),
		cmocka_unit_test(test_lease_put_stale_generation_does_not_free),
		cmocka_unit_test(test_lease_put_finds_moved_value),
		cmocka_unit_test(test_lease_take_stops_at_allowed),
		cmocka_unit_test(test_lease_take_sealed_is_stale),
		cmocka_unit_test(test_lease_take_litmus),
		cmocka_unit_test(test_lease_count_counts_held_cells),
		cmocka_unit_test(test_lease_wake_without_waiters_leaves_wake),
		cmocka_unit_test(test_lease_wake_before_wait_is_not_lost),
		cmocka_unit_test(
		    test_lease_wake_wakes_sleeper_in_other_process),
		cmocka_unit_test(test_lease_wake_is_not_lost_litmus),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
