"""test_errors: each library error as the exception a caller catches by
its builtin, with tg_strerror's message, sync and async."""
import asyncio
import errno
import os
import time
import unittest

import tollgate
from tgbroker import Broker, BrokerCase, in_child


class TestErrors(BrokerCase):
    CONF = ("[img]\nlimit = 10 images/min\n"
            "[solo]\nconcurrency = 1\n"
            "[slow]\nlimit = 1 requests/min\n")

    def check(self, cm, cls, builtin, err, name=None):
        e = cm.exception
        self.assertIs(type(e), cls)
        self.assertIsInstance(e, builtin)
        self.assertIsInstance(e, tollgate.Error)
        self.assertIsInstance(e, OSError)
        self.assertEqual(e.errno, err)
        if name is not None:
            self.assertEqual(e.filename, name)
            self.assertIn(repr(name), str(e))

    def test_unknown_key_is_a_key_error(self):
        with self.assertRaises(KeyError) as cm:
            self.c.key("no/such/key")
        self.check(cm, tollgate.UnknownKey, KeyError, errno.ENOENT,
                   "no/such/key")
        with self.assertRaises(KeyError):
            with self.c.ticket("no/such/key"):
                self.fail("entered")

    def test_missing_segment_is_file_not_found(self):
        seg = f"tgpy-{os.getpid()}-nobody"
        with self.assertRaises(FileNotFoundError) as cm:
            tollgate.open(seg)
        self.check(cm, tollgate.NoSegment, FileNotFoundError, errno.ENOENT,
                   seg)
        self.assertEqual(cm.exception.strerror,
                         "no broker publishes that segment")

    def test_timeout_is_a_timeout_error(self):
        with self.c.ticket("solo"):
            start = time.monotonic()
            with self.assertRaises(TimeoutError) as cm:
                with self.c.ticket("solo", timeout=0.1):
                    self.fail("entered")
            self.assertGreaterEqual(time.monotonic() - start, 0.09)
        self.check(cm, tollgate.TimedOut, TimeoutError, errno.ETIMEDOUT,
                   "solo")
        # The library's own words.
        self.assertEqual(cm.exception.strerror,
                         "timed out waiting for a ticket")

    def test_cost_too_big_is_a_value_error(self):
        with self.assertRaises(ValueError) as cm:
            self.c.acquire("img", images=11)
        self.check(cm, tollgate.CostTooBig, ValueError, errno.E2BIG, "img")
        self.assertIn("never fits", cm.exception.strerror)

    def test_invalid_arguments_are_value_errors(self):
        t = self.c.acquire("img", images=1)
        t.release()
        with self.assertRaises(ValueError) as cm:
            t.observe(99, {})
        self.check(cm, tollgate.InvalidArgument, ValueError, errno.EINVAL)
        with self.assertRaises(ValueError):
            self.c.acquire("img", images=-1)
        with self.assertRaises(ValueError):
            t.settle(tokens=1 << 64)

    def test_async_errors_are_the_same(self):
        async def take(key, **kw):
            async with self.c.aticket(key, **kw):
                self.fail("entered")

        with self.assertRaises(KeyError):
            asyncio.run(take("nope"))
        with self.assertRaises(tollgate.CostTooBig):
            asyncio.run(take("img", images=11))
        with self.c.ticket("solo"):
            with self.assertRaises(tollgate.TimedOut):
                asyncio.run(take("solo", timeout=0.05))
        self.c.acquire("slow").release()
        start = time.monotonic()
        with self.assertRaises(tollgate.TimedOut):  # known now: at once
            asyncio.run(take("slow", timeout=5))
        self.assertLess(time.monotonic() - start, 1)

    def test_closed_client(self):
        c = tollgate.open(self.b.segment)
        t = c.acquire("solo")
        self.assertEqual(self.b.limit("solo", "concurrency")["in_flight"], 1)
        c.close()       # releases what its tickets hold
        self.assertEqual(self.b.limit("solo", "concurrency")["in_flight"], 0)
        t.release()     # and then this must not touch freed memory
        c.close()
        with self.assertRaises(tollgate.Error) as cm:
            c.acquire("solo")
        self.assertEqual(cm.exception.errno, errno.EBADF)
        with self.assertRaises(tollgate.Error):
            t.observe(200)

    def test_every_errno_has_its_class(self):
        """The ones no test provokes, through the same map."""
        from tollgate import _error
        for err, cls, builtin in [
                (errno.EPROTO, tollgate.WrongVersion, tollgate.Error),
                (errno.EBADMSG, tollgate.BadSegment, tollgate.Error),
                (errno.ENOMEM, tollgate.OutOfMemory, MemoryError),
                (errno.EMFILE, tollgate.Error, OSError)]:
            e = _error(-err, "seg")
            self.assertIs(type(e), cls)
            self.assertIsInstance(e, builtin)
            self.assertEqual(e.errno, err)
            self.assertTrue(e.strerror)
            self.assertEqual(e.filename, "seg")


class TestStale(unittest.TestCase):
    KEYS = "[keep]\nlimit = 100 requests/min\n"

    def setUp(self):
        self.b = Broker(self.KEYS + "[gone]\nlimit = 100 requests/min\n")
        self.addCleanup(self.b.cleanup)
        self.c = tollgate.open(self.b.segment)
        self.addCleanup(self.c.close)

    def test_removed_key_is_stale(self):
        k = self.c.key("gone")
        t = self.c.acquire(k)
        self.b.reload(self.KEYS)
        with self.assertRaises(tollgate.StaleKey) as cm:
            self.c.acquire(k)
        self.assertEqual(cm.exception.errno, errno.ESTALE)
        self.assertEqual(cm.exception.strerror,
                         "the key was removed by a reload")
        with self.assertRaises(tollgate.StaleKey):
            t.observe(200)
        with self.assertRaises(tollgate.StaleKey):
            t.settle(requests=0)
        t.release()
        # The name was dropped from the cache: a lookup now asks again.
        with self.assertRaises(tollgate.UnknownKey):
            self.c.key("gone")
        self.c.acquire("keep").release()

    def test_key_added_back_is_found_by_name(self):
        old = self.c.key("gone")
        self.b.reload(self.KEYS)
        with self.assertRaises(tollgate.StaleKey):
            self.c.acquire("gone")
        self.b.reload(self.KEYS + "[gone]\nlimit = 5 requests/min\n")
        t = self.c.acquire("gone")
        self.assertEqual(t.key.name, "gone")
        self.assertNotEqual(t.key.handle, old.handle)
        t.release()
        self.assertEqual(self.b.limit("gone", "rate")["granted"], 1)


class TestNoSlot(unittest.TestCase):
    def test_every_slot_taken(self):
        b = Broker("[k]\nconcurrency = 1\n", broker_extra="max_clients = 1")
        self.addCleanup(b.cleanup)
        c = tollgate.open(b.segment)
        self.addCleanup(c.close)
        with self.assertRaises(tollgate.NoClientSlot) as cm:
            tollgate.open(b.segment)
        self.assertEqual(cm.exception.errno, errno.ENOSPC)


class TestAccess(unittest.TestCase):
    def test_no_permission_is_a_permission_error(self):
        """A worker outside the segment's group: root drops to nobody in a
        child to be one."""
        if os.getuid() != 0:
            self.skipTest("needs root, to become another user")
        b = Broker("[k]\nconcurrency = 1\n", broker_extra="mode = 0600")
        self.addCleanup(b.cleanup)

        def child():
            os.setgid(65534)
            os.setuid(65534)
            try:
                tollgate.open(b.segment)
            except PermissionError as e:
                ok = type(e) is tollgate.AccessDenied and \
                    e.errno == errno.EACCES and e.filename == b.segment
                os._exit(0 if ok else 2)
            os._exit(1)

        self.assertEqual(in_child(child), 0)
