"""test_async: aticket waits without blocking the event loop: asyncio.sleep
on a rate limit's hint, a worker thread on a concurrency limit, woken by
another process's release; a cancelled waiter holds nothing."""
import asyncio
import multiprocessing
import threading
import time

import tollgate
from tgbroker import BrokerCase, forked, in_child

mp = multiprocessing.get_context("fork")


class Ticker:
    """A coroutine that ticks every 10 ms: the largest gap between ticks is
    how long the loop was blocked."""

    def __init__(self):
        self.ticks, self.gap, self.last = 0, 0.0, None

    async def run(self):
        self.last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.gap = max(self.gap, now - self.last)
            self.last = now
            self.ticks += 1

    def start(self):
        self.task = asyncio.get_running_loop().create_task(self.run())
        return self

    async def stop(self):
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def hold(segment, key, seconds, taken, released_at):
    """In another process: take a ticket, say so, hold it, release it and
    note when (CLOCK_MONOTONIC is one clock for the whole host)."""
    with tollgate.open(segment) as c, c.ticket(key):
        taken.set()
        time.sleep(seconds)
        released_at.value = time.monotonic()


class TestAsync(BrokerCase):
    CONF = ("[rate]\nlimit = 5 requests/s burst 1\n"
            "[one]\nconcurrency = 1\n"
            "[one-b]\nconcurrency = 1\n"
            "[one-c]\nconcurrency = 1\n"
            "[one-d]\nconcurrency = 1\n"
            "[two]\nconcurrency = 2\n"
            "[pyr]\nconcurrency = 2\n"
            "[pyr/slow]\nlimit = 2 requests/s burst 1\n"
            "[pyr/free]\n")

    def in_flight(self, key):
        return self.b.limit(key, "concurrency")["in_flight"]

    def test_rate_wait_sleeps_on_the_hint(self):
        """Four tickets at 5/s: three waits of 200 ms, each an
        asyncio.sleep the ticker runs through."""
        # No thread is needed for it.
        self.addCleanup(setattr, tollgate, "_waiters", tollgate._waiters)
        tollgate._waiters = lambda: self.fail("a thread for a rate wait")

        async def main():
            ticker = Ticker().start()
            start = time.monotonic()
            for _ in range(4):
                async with self.c.aticket("rate", timeout=5) as t:
                    self.assertIsInstance(t, tollgate.Ticket)
            took = time.monotonic() - start
            await ticker.stop()
            return took, ticker

        took, ticker = asyncio.run(main())
        self.assertGreaterEqual(took, 0.55)
        self.assertLess(ticker.gap, 0.15)
        self.assertGreater(ticker.ticks, 0.55 / 0.01 / 3)

    def test_release_in_another_process_wakes_the_waiter(self):
        taken, released_at = mp.Event(), mp.Value("d", 0.0)
        p = forked(hold, self.b.segment, "one", 0.5, taken, released_at)
        self.addCleanup(p.kill)
        self.assertTrue(taken.wait(10))
        denied = self.b.key("one")["denied"]
        # One slice longer than the hold: only the futex wake is prompt.
        self.addCleanup(setattr, tollgate, "LEASE_SLICE",
                        tollgate.LEASE_SLICE)
        tollgate.LEASE_SLICE = 2.0

        async def main():
            ticker = Ticker().start()
            async with self.c.aticket("one", timeout=10):
                got = time.monotonic()
                self.assertEqual(self.in_flight("one"), 1)
            await ticker.stop()
            return got, ticker

        got, ticker = asyncio.run(main())
        p.join(10)
        self.assertEqual(p.exitcode, 0)
        late = got - released_at.value
        print(f"\n  woken {late * 1000:.1f} ms after the other process's "
              f"release; loop's longest gap {ticker.gap * 1000:.0f} ms",
              end=" ")
        self.assertGreaterEqual(late, 0)
        self.assertLess(late, 0.2)      # a wake, not the slice's end
        self.assertLess(ticker.gap, 0.15)
        # No busy poll: a try per 100 ms slice, not thousands.
        self.assertLess(self.b.key("one")["denied"] - denied, 30)
        self.assertEqual(self.in_flight("one"), 0)

    def test_cancelled_waiter_holds_nothing(self):
        async def main():
            held = self.c.acquire("one-b", timeout=5)
            waiter = asyncio.ensure_future(
                self.c.aacquire("one-b", timeout=5))
            await asyncio.sleep(0.25)       # asleep in its thread
            self.assertFalse(waiter.done())
            waiter.cancel()
            try:
                await waiter
            except asyncio.CancelledError:
                pass
            else:
                self.fail("not cancelled")
            held.release()
            await asyncio.sleep(0.25)       # the slice is over by now
            return self.in_flight("one-b")

        self.assertEqual(asyncio.run(main()), 0)
        self.assertIsNotNone(self.c.try_ticket("one-b")[0])

    def test_cancelled_just_as_it_got_the_lease(self):
        """The release wakes the waiter's thread, which takes the lease;
        the task is cancelled before it sees that.  The lease must come
        back, every round."""
        async def main():
            for _ in range(20):
                held = self.c.acquire("one-b", timeout=5)
                waiter = asyncio.ensure_future(
                self.c.aacquire("one-b", timeout=5))
                await asyncio.sleep(0.02)
                held.release()
                time.sleep(0.02)   # the thread takes it; the loop stays put
                waiter.cancel()
                await asyncio.gather(waiter, return_exceptions=True)
                for _ in range(100):
                    if self.in_flight("one-b") == 0:
                        break
                    await asyncio.sleep(0.01)
                self.assertEqual(self.in_flight("one-b"), 0)

        acquired = self.me()["acquired"]
        asyncio.run(main())
        me = self.me()
        # Most rounds did take the lease in the thread, and gave it back.
        print(f"\n  {me['acquired'] - acquired - 20} of 20 waiters took the "
              "lease after their task was cancelled", end=" ")
        self.assertGreater(me["acquired"] - acquired, 25)
        self.assertEqual(me["acquired"], me["released"])

    def test_close_waits_for_the_waiting_threads(self):
        """asyncio.run cancels what still waits, but the thread of a
        cancelled waiter is still in tg_acquire: closing the client under
        it would pull the segment from under its feet.  In a child: a
        crash must not take the test runner with it."""
        def child():
            c = tollgate.open(self.b.segment)
            held = c.acquire("one-c", timeout=5)

            async def main():
                asyncio.ensure_future(c.aacquire("one-c", timeout=5))
                await asyncio.sleep(0.05)

            asyncio.run(main())     # the waiter is cancelled, not its thread
            c.close()               # frees held's lease: the thread wakes
            held.release()
            time.sleep(0.2)

        self.assertEqual(in_child(child), 0)
        self.assertEqual(self.in_flight("one-c"), 0)

    def test_fork_while_a_coroutine_waits(self):
        """A thread of the parent waits in tg_acquire for a coroutine at
        fork time.  The child has neither that thread nor the pool it ran
        in: its own waits and its close() must not count on them."""
        held = self.c.acquire("one-d", timeout=5)

        async def two_waits():
            await asyncio.gather(*(self.c.aacquire("one-d", timeout=0.05)
                                   for _ in range(2)), return_exceptions=True)

        asyncio.run(two_waits())    # the pool has idle threads now
        got = []
        waiter = threading.Thread(target=lambda: got.append(asyncio.run(
            self.c.aacquire("one-d", timeout=10))))
        waiter.start()
        time.sleep(0.05)        # its slice is under way

        def child():
            async def wait():
                with self.assertRaises(TimeoutError):
                    await self.c.aacquire("one-d", timeout=0.3)
            asyncio.run(wait())     # in a pool of the child's
            self.c.close()

        code = in_child(child)
        held.release()
        waiter.join(10)
        self.assertEqual(code, 0)
        self.assertEqual(len(got), 1)
        got[0].release()
        self.assertEqual(self.in_flight("one-d"), 0)

    def test_timeout_while_a_lease_is_held(self):
        async def main():
            start = time.monotonic()
            with self.assertRaises(TimeoutError):
                async with self.c.aticket("one", timeout=0.3):
                    self.fail("entered")
            return time.monotonic() - start

        with self.c.ticket("one"):
            took = asyncio.run(main())
        self.assertGreaterEqual(took, 0.29)
        self.assertLess(took, 1.5)

    def test_gather_never_above_the_limit(self):
        state = {"now": 0, "max": 0}

        async def one():
            async with self.c.aticket("two", timeout=5):
                state["now"] += 1
                state["max"] = max(state["max"], state["now"])
                await asyncio.sleep(0.02)
                state["now"] -= 1

        async def main():
            await asyncio.gather(*(one() for _ in range(12)))

        asyncio.run(main())
        self.assertEqual(state["max"], 2)
        self.assertEqual(self.in_flight("two"), 0)

    def test_reserved_then_paused_goes_back_in_line(self):
        """A coroutine's reservation sleeps for its slot holding a lease of
        pyr; a 429 meanwhile pauses the key past that slot: tg_ready says
        no, and the coroutine releases the reservation (its lease with it)
        and reserves again, from the pause's end.  Kills an aacquire that
        skips tg_ready (it went at its old slot, into the pause) or that
        reserves again over a ticket it did not release (pyr's lease was
        then taken for good)."""
        out = {}

        async def main():
            t0, _ = self.c.try_ticket("pyr/slow")
            self.assertIsNotNone(t0)
            task = asyncio.get_running_loop().create_task(
                self.c.aacquire("pyr/slow", timeout=10))
            await asyncio.sleep(0.1)
            self.assertEqual(self.in_flight("pyr"), 2)
            t0.observe(429, {"retry-after": "1"})
            out["paused"] = time.monotonic()
            t0.release()
            t = await task
            out["went"] = time.monotonic()
            t.release()

        asyncio.run(main())
        self.assertGreaterEqual(out["went"] - out["paused"], 0.9)
        self.assertEqual(self.in_flight("pyr"), 0)

    def test_aticket_takes_and_releases(self):
        kept = []       # held on to: only the exit may release them

        async def main():
            async with self.c.aticket("two", timeout=5) as t:
                kept.append(t)
                self.assertEqual(self.in_flight("two"), 1)
            self.assertEqual(self.in_flight("two"), 0)
            async with self.c.aticket("two", timeout=5) as t:
                kept.append(t)
                self.assertEqual(self.in_flight("two"), 1)
                raise LookupError

        with self.assertRaises(LookupError):
            asyncio.run(main())
        self.assertEqual(self.in_flight("two"), 0)
        self.assertEqual(len(kept), 2)

