"""tgbroker: a real tollgated for the binding's tests, as tests/helpers.c
starts one for the C tests: a temp config under a [broker] section of our
own, a segment name no other test uses, and everything undone afterwards,
even when a test fails.
"""
import atexit
import faulthandler
import itertools
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import tollgate
import tollgate.stat

BUILD = os.environ.get("TG_BUILD", "build")
# Where the tollgate under test comes from, for the programs tests run.
PACKAGE_DIR = os.path.dirname(os.path.dirname(tollgate.__file__))
_seq = itertools.count()
_running = set()


def bin_path(name):
    return os.path.join(BUILD, name)


class Broker:
    """tollgated on `body' (key sections).  Raises SkipTest where the broker
    cannot run io_uring, as the C tests skip."""

    def __init__(self, body, broker_extra=""):
        self.dir = tempfile.mkdtemp(prefix="tgpy.")
        self.segment = f"tgpy-{os.getpid()}-{next(_seq)}"
        self.conf = os.path.join(self.dir, "tollgate.conf")
        self.log = os.path.join(self.dir, "tollgated.log")
        self.extra = broker_extra
        self.proc = None
        self.owner = os.getpid()
        _running.add(self)
        try:
            self._write(body)
            self.start()
        except BaseException:
            self.cleanup()
            raise

    def _write(self, body):
        # Write and rename: the broker never reads a half-written file.
        with open(self.conf + ".tmp", "w") as f:
            f.write(f"[broker]\nsegment = {self.segment}\n"
                    f"pidfile = {self.dir}/tollgated.pid\n{self.extra}\n"
                    f"{body}")
        os.rename(self.conf + ".tmp", self.conf)

    def start(self):
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [bin_path("tollgated"), "-d", "-c", self.conf],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        # Ready when the segment is this broker's and a client opens it.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                text = self.log_text()
                if "io_uring" in text:
                    raise unittest.SkipTest("tollgated cannot use io_uring "
                                            "here")
                raise RuntimeError(f"tollgated exited: {text}")
            try:
                if tollgate.stat.read(self.segment)["broker"]["pid"] == \
                        self.proc.pid:
                    tollgate.open(self.segment).close()
                    return
            except OSError:
                pass
            time.sleep(0.005)
        raise RuntimeError(f"tollgated not ready: {self.log_text()}")

    def log_text(self):
        with open(self.log) as f:
            return f.read()

    def stat(self, key=None):
        return tollgate.stat.read(self.segment, key)

    def key(self, name):
        """The key's entry of tollstat -j."""
        return next(k for k in self.stat()["keys"] if k["name"] == name)

    def limit(self, name, kind):
        """The key's first limit of that kind ("rate", "concurrency")."""
        return next(lim for lim in self.key(name)["limits"]
                    if lim["kind"] == kind)

    def reload(self, body):
        """Rewrite the keys, SIGHUP, and wait until the broker published
        the new config (tb_reload)."""
        gen = self.stat()["config"]["generation"]
        refused = self.log_text().count("reload refused")
        self._write(body)
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.stat()["config"]["generation"] != gen:
                return
            if self.log_text().count("reload refused") > refused:
                raise RuntimeError("reload refused: " + self.log_text())
            time.sleep(0.005)
        raise RuntimeError("reload not seen")

    def stop(self):
        """SIGTERM and wait; the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.terminate()
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def cleanup(self):
        self.stop()
        for name in (self.segment, self.segment + ".conf",
                     self.segment + ".lock"):
            try:
                os.unlink("/dev/shm/" + name)
            except FileNotFoundError:
                pass
        if not os.environ.get("TG_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)
        _running.discard(self)


@atexit.register
def _leftovers():
    # Whatever a crash or ^C left running; a forked child's are not its own.
    for b in list(_running):
        if b.owner == os.getpid():
            b.cleanup()


def _terminated(signum, frame):
    # timeout(1) ends a run with SIGTERM: stop the brokers on the way out.
    _leftovers()
    os._exit(128 + signum)


if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
    signal.signal(signal.SIGTERM, _terminated)


def watchdog(seconds):
    """A test that hangs (on a lease a broken binding never gave back)
    fails the run, with every thread's stack and the brokers stopped,
    instead of hanging it.  Returns what disarms it."""
    def fire():
        print(f"\nno end after {seconds} s: stopping", file=sys.stderr)
        faulthandler.dump_traceback(all_threads=True)
        _leftovers()
        os._exit(1)
    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()
    return t.cancel


def forked(target, *args):
    """A started fork()ed process that the test's end kills if it hangs."""
    p = multiprocessing.get_context("fork").Process(target=target, args=args)
    p.start()
    return p


def in_child(target, *args, timeout=10):
    """Run target in a fork()ed child: its exit code, None if it hung."""
    p = forked(target, *args)
    p.join(timeout)
    if p.exitcode is None:
        p.kill()
        p.join()
        return None
    return p.exitcode


class BrokerCase(unittest.TestCase):
    """One broker on CONF for the class; self.b, self.c (a client)."""
    CONF = ""

    @classmethod
    def setUpClass(cls):
        cls.b = Broker(cls.CONF)
        cls.addClassCleanup(cls.b.cleanup)
        cls.c = tollgate.open(cls.b.segment)
        cls.addClassCleanup(cls.c.close)

    def setUp(self):
        self.addCleanup(watchdog(120))

    def me(self):
        """This process's client entry (its counters) in tollstat -j."""
        return next(c for c in self.b.stat()["clients"]["list"]
                    if c["pid"] == os.getpid())
