"""test_processes: one budget for many processes: a concurrency limit
across multiprocessing workers, a 429 seen by one pausing the others, and
a client used on both sides of a fork."""
import multiprocessing
import os
import sys
import time

import tollgate
from tgbroker import BrokerCase, forked, in_child

mp = multiprocessing.get_context("fork")
N = 3


def worker(client, rounds, lock, now, most):
    """Through the client the parent opened: the child opens its own."""
    for _ in range(rounds):
        with client.ticket("pool", timeout=30):
            with lock:
                now.value += 1
                most.value = max(most.value, now.value)
            time.sleep(0.005)
            with lock:
                now.value -= 1


def hit_429(segment, advice, at):
    with tollgate.open(segment) as c, c.ticket("paused") as t:
        advice.value = t.observe(429, {"retry-after": "1"})
        at.value = time.monotonic()     # one clock for the whole host


class TestProcesses(BrokerCase):
    CONF = (f"[pool]\nconcurrency = {N}\n"
            # A hint-less 429 would pause 100 ms at most: 1 s is the hint's.
            "[paused]\nlimit = 1000 requests/min\nbackoff = 50ms..100ms\n"
            "[forked]\nconcurrency = 2\n")

    def test_workers_never_above_the_limit(self):
        lock, now, most = mp.Lock(), mp.Value("i", 0), mp.Value("i", 0)
        procs = [forked(worker, self.c, 15, lock, now, most)
                 for _ in range(6)]
        for p in procs:
            self.addCleanup(p.kill)
            p.join(60)
        self.assertEqual([p.exitcode for p in procs], [0] * 6)
        print(f"\n  6 processes, concurrency {N}: at most {most.value} in "
              "flight", end=" ")
        self.assertLessEqual(most.value, N)
        self.assertGreater(most.value, 1)
        lim = self.b.limit("pool", "concurrency")
        self.assertEqual(lim["in_flight"], 0)
        self.assertEqual(lim["granted"], 6 * 15)

    def test_a_429_in_one_process_pauses_another(self):
        advice, at = mp.Value("i", -1), mp.Value("d", 0.0)
        self.assertEqual(in_child(hit_429, self.b.segment, advice, at), 0)
        self.assertEqual(advice.value, tollgate.Advice.RETRY)
        with self.c.ticket("paused", timeout=10):
            paused = time.monotonic() - at.value
        print(f"\n  paused {paused:.3f} s by the other process's 429 "
              "(retry-after: 1)", end=" ")
        self.assertGreaterEqual(paused, 0.9)
        self.assertLess(paused, 1.5)
        self.assertEqual(self.b.key("paused")["status"]["limited"], 1)

    def test_a_client_across_fork(self):
        """The child gets a C client of its own; the parent's ticket is
        inert there, and the parent's lease outlives the child's use."""
        t = self.c.acquire("forked")
        self.c.key("forked")
        self.assertEqual(in_child(lambda: sys.exit(self.child(t))), 0)
        lim = self.b.limit("forked", "concurrency")
        self.assertEqual(lim["holders"], [os.getpid()])
        self.assertEqual(lim["in_flight"], 1)
        t.release()
        self.assertEqual(self.b.limit("forked", "concurrency")["in_flight"],
                         0)
        self.c.acquire("forked").release()      # the parent's still works

    def child(self, t):
        """Each failed check has its own exit code."""
        me, parent = os.getpid(), os.getppid()
        t.release()                 # inert: the lease is the parent's
        try:
            t.observe(200)
            return 2
        except tollgate.Error:
            pass
        with self.c.ticket("forked") as u:     # a client of its own
            lim = self.b.limit("forked", "concurrency")
            if sorted(lim["holders"]) != sorted([me, parent]):
                return 3
            pids = [c["pid"] for c in self.b.stat()["clients"]["list"]]
            if me not in pids or parent not in pids:
                return 4
            if u.observe(200) != tollgate.Advice.OK:
                return 5
        self.c.close()              # must not close the parent's
        lim = self.b.limit("forked", "concurrency")
        return 0 if lim["holders"] == [parent] else 6
