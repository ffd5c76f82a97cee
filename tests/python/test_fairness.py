"""test_fairness: one line for every waiter (issue 13, section 4).  An
aticket() takes its place in the line that acquire()'s waiters in every
process stand in, so a large cost is not overtaken by small ones that came
after it, and sync and async waiters are served in the order they came;
waiting is not counted as being refused; a cancelled waiter gives its slot
back if nobody came after it."""
import asyncio
import multiprocessing
import time

import tollgate
from tgbroker import BrokerCase, forked

mp = multiprocessing.get_context("fork")

# Two waiters whose grants are this close are in order whichever came
# first: the wake-ups of a loop and of a process are that precise.
TOL = 0.025


def sync_waiter(segment, key, at, arrived, granted, i):
    """In another process: wait until `at', then acquire() (which sleeps
    in tg_acquire) and note when it came and when it was granted."""
    with tollgate.open(segment) as c:
        time.sleep(max(0.0, at - time.monotonic()))
        arrived[i] = time.monotonic()
        with c.ticket(key, timeout=10):
            granted[i] = time.monotonic()


class TestFairness(BrokerCase):
    CONF = ("[tok]\nlimit = 10000 tokens/s burst 3000\n"
            "[line]\nlimit = 20 requests/s burst 1\n"
            "[quiet]\nlimit = 5 requests/s burst 1\n"
            "[cancel]\nlimit = 1 requests/s burst 1\n")

    def test_big_ticket_not_starved_by_small_ones(self):
        """The issue's case: a 3,000-token ticket among 1,000-token async
        callers that keep the bucket busy.  Polling, the small ones took
        every refill first and the big one timed out after 6 s; in line,
        it goes after those that came before it (at most one per caller,
        8,000 tokens: 1.1 s with its own) and before all that came after
        it."""
        log = []        # (arrived, granted, tokens)
        big = {}

        async def small(stop):
            while not stop.is_set():
                arrived = time.monotonic()
                async with self.c.aticket("tok", requests=1, tokens=1000,
                                          timeout=10):
                    log.append((arrived, time.monotonic(), 1000))

        async def main():
            stop = asyncio.Event()
            smalls = [asyncio.ensure_future(small(stop)) for _ in range(8)]
            await asyncio.sleep(0.5)    # the line is long by now
            big["arrived"] = time.monotonic()
            try:
                async with self.c.aticket("tok", requests=1, tokens=3000,
                                          timeout=6):
                    big["granted"] = time.monotonic()
            except TimeoutError:
                big["granted"] = None
            await asyncio.sleep(0.3)    # some that came after it, served
            stop.set()
            await asyncio.gather(*smalls)

        asyncio.run(main())
        self.assertIsNotNone(big["granted"], "the big ticket timed out")
        wait = big["granted"] - big["arrived"]
        after = [g for a, g, _ in log if a > big["arrived"]]
        print(f"\n  3,000 tokens among 8 callers of 1,000: served in "
              f"{wait:.2f} s (first come first served: at most 1.10 s); "
              f"{len(after)} that came after it served after it", end=" ")
        self.assertLess(wait, 1.1 + 0.5)
        self.assertGreater(len(after), 0)
        for g in after:
            self.assertGreaterEqual(g, big["granted"] - TOL)

    def test_sync_and_async_waiters_in_arrival_order(self):
        """16 waiters 25 ms apart, at 20/s: every other one a process
        asleep in tg_acquire, the others coroutines of this loop.  Each
        is granted after every one that came before it."""
        n, step = 16, 0.025
        arrived = mp.Array("d", n, lock=False)
        granted = mp.Array("d", n, lock=False)
        t0 = time.monotonic() + 0.5     # the processes are up by then
        procs = []
        for i in range(1, n, 2):
            p = forked(sync_waiter, self.b.segment, "line", t0 + i * step,
                       arrived, granted, i)
            self.addCleanup(p.kill)
            procs.append(p)

        async def coro(i):
            await asyncio.sleep(max(0.0, t0 + i * step - time.monotonic()))
            arrived[i] = time.monotonic()
            async with self.c.aticket("line", timeout=10):
                granted[i] = time.monotonic()

        async def main():
            await asyncio.gather(*(coro(i) for i in range(0, n, 2)))

        asyncio.run(main())
        for p in procs:
            p.join(15)
            self.assertEqual(p.exitcode, 0)
        order = sorted(range(n), key=lambda i: arrived[i])
        late = []
        for x, i in enumerate(order):
            for j in order[x + 1:]:
                # Came first by a clear margin, granted clearly after.
                if arrived[j] - arrived[i] > 0.002 and \
                        granted[i] > granted[j] + TOL:
                    late.append((i, j))
        span = max(granted) - min(arrived)
        print(f"\n  16 waiters, 8 sync and 8 async, at 20/s: served in "
              f"{span:.2f} s, {len(late)} pairs out of arrival order",
              end=" ")
        kind = ("async", "sync")
        self.assertEqual(len(late), 0, "served before one that came first: " +
                         ", ".join(f"{kind[j % 2]} {j} before {kind[i % 2]}"
                                   f" {i}" for i, j in late[:5]))

    def test_waiting_is_not_denied(self):
        """Ten coroutines at 5/s: nine wait, none is refused.  Polling
        counted a refusal for every try."""
        before = self.b.key("quiet")["denied"]

        async def one():
            async with self.c.aticket("quiet", timeout=10):
                pass

        async def main():
            await asyncio.gather(*(one() for _ in range(10)))

        start = time.monotonic()
        asyncio.run(main())
        took = time.monotonic() - start
        denied = self.b.key("quiet")["denied"] - before
        print(f"\n  10 tickets at 5/s in {took:.2f} s: {denied} denied",
              end=" ")
        self.assertGreaterEqual(took, 9 * 0.2 - 0.05)
        self.assertEqual(denied, 0)

    def test_cancelled_waiter_gives_its_slot_back(self):
        """At 1/s: one ticket now, a waiter for the next slot is cancelled
        0.1 s into its wait.  Nobody came after it, so the slot is free
        again: the next waiter has it, within a 1.5 s timeout."""
        async def main():
            async with self.c.aticket("cancel", timeout=0):
                pass
            waiter = asyncio.ensure_future(
                self.c.aacquire("cancel", timeout=5))
            await asyncio.sleep(0.1)
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
            self.assertTrue(waiter.cancelled())
            start = time.monotonic()
            async with self.c.aticket("cancel", timeout=1.5):
                return time.monotonic() - start

        took = asyncio.run(main())
        print(f"\n  the cancelled waiter's slot: the next one's, "
              f"{took:.2f} s later", end=" ")
        self.assertLess(took, 1.2)


if __name__ == "__main__":
    import unittest
    unittest.main()
