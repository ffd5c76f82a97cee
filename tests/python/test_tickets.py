"""test_tickets: sync tickets on a real broker: taken, counted, released
however the block ends; try_ticket's hints; settle; threads."""
import os
import threading
import time

import tollgate
from tgbroker import BrokerCase


class TestTickets(BrokerCase):
    CONF = ("[api]\nlimit = 1000 requests/min\nconcurrency = 3\n"
            "[api/chat]\nlimit = 1000 tokens/min\n"
            "[slow]\nlimit = 2 requests/min\n"
            "[pair]\nconcurrency = 2\n"
            "[tok]\nlimit = 1000 tokens/min\n")

    def test_ticket_takes_and_releases(self):
        before = self.b.key("api")
        conc = self.b.limit("api", "concurrency")
        self.assertEqual(conc["in_flight"], 0)
        with self.c.ticket("api") as t:
            self.assertIsInstance(t, tollgate.Ticket)
            now = self.b.limit("api", "concurrency")
            self.assertEqual(now["in_flight"], 1)
            self.assertEqual(now["holders"], [os.getpid()])
            self.assertEqual(self.b.key("api")["granted"],
                             before["granted"] + 1)
        after = self.b.limit("api", "concurrency")
        self.assertEqual(after["in_flight"], 0)
        self.assertEqual(after["holders"], [])
        self.assertEqual(after["granted"], conc["granted"] + 1)

    def test_released_when_the_block_raises(self):
        with self.assertRaises(ZeroDivisionError):
            with self.c.ticket("api") as t:     # t kept: no __del__ to help
                self.assertEqual(
                    self.b.limit("api", "concurrency")["in_flight"], 1)
                1 / 0
        self.assertEqual(self.b.limit("api", "concurrency")["in_flight"], 0)
        self.assertIsInstance(t, tollgate.Ticket)

    def test_child_key_charges_the_parent(self):
        parent = self.b.limit("api", "rate")["granted"]
        chat = self.b.limit("api/chat", "rate")["granted"]
        with self.c.ticket("api/chat", tokens=10):
            self.assertEqual(self.b.limit("api", "concurrency")["in_flight"],
                             1)
        self.assertEqual(self.b.limit("api", "rate")["granted"], parent + 1)
        self.assertEqual(self.b.limit("api/chat", "rate")["granted"],
                         chat + 10)

    def test_release_is_idempotent(self):
        released = self.me()["released"]
        t = self.c.acquire("api")
        t.release()
        t.release()
        with t:         # a Ticket is its own context manager too
            pass
        self.assertEqual(self.me()["released"], released + 1)
        self.assertEqual(self.b.limit("api", "concurrency")["in_flight"], 0)

    def test_a_dropped_ticket_gives_its_lease_back(self):
        self.c.acquire("api")       # nobody holds it: __del__ releases
        self.assertEqual(self.b.limit("api", "concurrency")["in_flight"], 0)

    def test_concurrency_refuses_then_waits(self):
        held = [self.c.acquire("api") for _ in range(3)]
        try:
            t, retry = self.c.try_ticket("api")
            self.assertIsNone(t)
            self.assertEqual(retry, 0.0)        # waits for a release
            start = time.monotonic()
            with self.assertRaises(tollgate.TimedOut):
                self.c.acquire("api", timeout=0.2)
            self.assertGreaterEqual(time.monotonic() - start, 0.19)
            held.pop().release()
            t, retry = self.c.try_ticket("api")
            self.assertIsNotNone(t)
            self.assertIsNone(retry)
            held.append(t)
        finally:
            for t in held:
                t.release()

    def test_try_ticket_says_when(self):
        a, _ = self.c.try_ticket("slow")
        b, _ = self.c.try_ticket("slow")
        self.assertIsNotNone(a)
        self.assertIsNotNone(b)
        t, retry = self.c.try_ticket("slow")
        self.assertIsNone(t)
        # 2 a minute: one back every 30 s.
        self.assertTrue(25 < retry <= 30, retry)
        # tg_acquire knows it cannot come in a second: it says so at once.
        start = time.monotonic()
        with self.assertRaises(TimeoutError):
            self.c.acquire("slow", timeout=1)
        self.assertLess(time.monotonic() - start, 0.5)

    def test_settle_refunds_and_charges(self):
        tok = self.b.limit("tok", "rate")
        self.assertEqual(tok["available"], 1000)
        t = self.c.acquire("tok", tokens=600)
        t.release()                 # settle works after release
        self.assertEqual(t.cost, {"requests": 1, "tokens": 600,
                                  "images": 0})
        self.assertIsNone(self.c.try_ticket("tok", tokens=600)[0])
        t.settle(tokens=100)        # an over-estimate comes back
        self.assertEqual(t.cost["tokens"], 100)
        self.assertEqual(t.cost["requests"], 1)
        self.assertGreaterEqual(self.b.limit("tok", "rate")["available"],
                                899)
        u, _ = self.c.try_ticket("tok", tokens=600)
        self.assertIsNotNone(u)
        u.release()
        granted = self.b.limit("tok", "rate")["granted"]
        u.settle(tokens=650)        # an under-estimate is charged
        self.assertEqual(self.b.limit("tok", "rate")["granted"],
                         granted + 50)

    def test_threads_share_a_client_without_the_gil(self):
        """A thread asleep in tg_acquire lets the others run, and wakes
        when another thread releases."""
        a, b = self.c.acquire("pair"), self.c.acquire("pair")
        got = []
        th = threading.Thread(target=lambda: got.append(
            (self.c.acquire("pair", timeout=10), time.monotonic())))
        th.start()
        spins, end = 0, time.monotonic() + 0.3
        while time.monotonic() < end:
            spins += 1
        self.assertEqual(got, [])
        # Under the GIL a blocked C call would have frozen this loop.
        self.assertGreater(spins, 10000)
        released = time.monotonic()
        a.release()
        th.join(5)
        self.assertEqual(len(got), 1)
        self.assertLess(got[0][1] - released, 0.5)
        got[0][0].release()
        b.release()
        self.assertEqual(self.b.limit("pair", "concurrency")["in_flight"], 0)
