"""tollgate: tickets from the host's quota broker, for Python workers.

    import tollgate

    tg = tollgate.open()                    # once per process
    with tg.ticket("openai/gpt-image-1", images=1) as t:
        r = http.post(...)
        t.observe(r.status_code, r.headers)

A ticket is permission for one request: every limit of the key and its
ancestors, for the whole host, is charged before the request goes out.
Taking and releasing one is a few atomic instructions in shared memory
(libtollgate.so, through ctypes; no compiler needed).  Threads share one
Client: ctypes releases the GIL while a thread waits for its ticket.
asyncio code uses aticket(), which never blocks the event loop.

After fork() a child cannot use its parent's C client (releasing through
it would free the parent's leases), so a Client opens a fresh one for the
child on first use.  Tickets the child inherited stay the parent's: in the
child, release() does nothing and observe() and settle() raise Error.
"""
import asyncio
import concurrent.futures
import contextlib
import ctypes
import enum
import errno
import os
import threading
import time
from typing import NamedTuple

from . import _lib
from ._lib import Cost, TicketBuf

__all__ = ["open", "Client", "Ticket", "Key", "Advice", "Error", "TimedOut",
           "NoSegment", "UnknownKey", "AccessDenied", "InvalidArgument",
           "CostTooBig", "StaleKey", "NoClientSlot", "WrongVersion",
           "BadSegment", "OutOfMemory"]

_L = _lib.lib
library = _lib.path     # the libtollgate.so in use
_U64 = 1 << 64

# A concurrency wait runs tg_acquire in a thread this long at a time, so a
# cancelled task gives its thread back within it.
LEASE_SLICE = 0.1


class Advice(enum.IntEnum):
    """What tg_observe says to do about a response."""
    OK = 0          # it succeeded
    RETRY = 1       # worth retrying: the next ticket waits out the pause
    GIVE_UP = 2     # retrying will not help (401, 4xx)


# Errors: each a tollgate.Error and the builtin a caller would catch
# anyway, so `except TimeoutError' or `except KeyError' just works.

class Error(OSError):
    """A libtollgate result below 0; errno is its errno, strerror the
    library's message."""


class TimedOut(Error, TimeoutError):
    """No ticket within the timeout; nothing was taken."""


class NoSegment(Error, FileNotFoundError):
    """No broker publishes that segment (is tollgated running?)."""


class UnknownKey(Error, KeyError):
    """The broker's config has no key of that name."""


class AccessDenied(Error, PermissionError):
    """The segment is for another group (the broker's config: mode, group)."""


class InvalidArgument(Error, ValueError):
    pass


class CostTooBig(Error, ValueError):
    """The cost exceeds a limit's capacity: waiting would never help."""


class StaleKey(Error):
    """A reload removed the key; the next lookup of its name sees a key
    added back under it."""


class NoClientSlot(Error):
    """Every client slot is taken: raise max_clients, or open fewer."""


class WrongVersion(Error):
    """The broker's segment has another layout: library and broker differ."""


class BadSegment(Error):
    pass


class OutOfMemory(Error, MemoryError):
    pass


_ERRORS = {errno.ETIMEDOUT: TimedOut, errno.EACCES: AccessDenied,
           errno.EINVAL: InvalidArgument, errno.E2BIG: CostTooBig,
           errno.ESTALE: StaleKey, errno.ENOSPC: NoClientSlot,
           errno.EPROTO: WrongVersion, errno.EBADMSG: BadSegment,
           errno.ENOMEM: OutOfMemory}


def _error(r, name=None, enoent=(Error, None)):
    """The exception for result r; ENOENT means a segment or a key, as the
    caller says, and gets a message that says which."""
    if r == -errno.ENOENT:
        cls, msg = enoent
    else:
        cls, msg = _ERRORS.get(-r, Error), None
    args = (-r, msg or _lib.strerror(r)) + ((name,) if name else ())
    return cls(*args)


def _closed():
    return Error(errno.EBADF, "the tollgate client is closed")


# fork: a C client is good only in the process that opened it.  _forks
# counts the forks of this process's ancestry; an object remembers the
# count it was made under, so the check costs no system call.
_forks = 0
_lock = threading.Lock()        # reopening after fork; the waiters' pool
_pool = None


def _after_fork_in_child():
    global _forks, _lock, _pool
    _forks += 1
    # The parent's threads did not come along: neither a lock one of them
    # held nor a pool they ran is any use here.
    _lock, _pool = threading.Lock(), None


os.register_at_fork(after_in_child=_after_fork_in_child)


def _waiters():
    """Threads that sleep in tg_acquire for coroutines.  Not the loop's
    default executor, which waiters would starve (getaddrinfo runs there)."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                32, thread_name_prefix="tollgate-wait")
        return _pool


def _open(segment):
    c = ctypes.c_void_p()
    r = _L.tg_open(segment.encode(), ctypes.byref(c))
    if r < 0:
        raise _error(r, segment,
                     (NoSegment, "no broker publishes that segment"))
    return c.value


def _timeout_ns(timeout):
    if timeout is None:
        return -1
    return min(max(0, int(timeout * 1e9)), (1 << 63) - 1)


def _cost(requests, tokens, images):
    for v in (requests, tokens, images):
        if not 0 <= v < _U64:
            raise InvalidArgument(errno.EINVAL, "a cost is 0 to 2**64 - 1",
                                  str(v))
    return Cost(requests, tokens, images)


# Header values may carry CR or LF only to forge another header line.
_NO_EOL = bytes.maketrans(b"\r\n", b"  ")


def _field(s):
    if not isinstance(s, (bytes, bytearray)):
        s = str(s).encode("utf-8", "surrogateescape")
    return bytes(s).translate(_NO_EOL)


def _header_block(headers):
    """The raw block tg_observe parses.  Repeated names must survive (the
    parser picks among repeats), so multi_items() (httpx) comes before
    items(), which aiohttp and http.client repeat but httpx joins."""
    if headers is None:
        return b""
    if isinstance(headers, (bytes, bytearray, memoryview)):
        return bytes(headers)
    if isinstance(headers, str):
        return headers.encode("utf-8", "surrogateescape")
    if hasattr(headers, "multi_items"):
        pairs = headers.multi_items()
    elif hasattr(headers, "items"):
        pairs = headers.items()
    else:
        pairs = headers
    return b"".join(_field(n) + b": " + _field(v) + b"\r\n" for n, v in pairs)


class Key(NamedTuple):
    """A key's handle, good across reloads until one removes the key."""
    name: str
    handle: int


class Ticket:
    """One request's permission.  Release it when the request is done
    (the context managers do); observe and settle work before or after."""

    __slots__ = ("key", "_client", "_buf", "_cost", "_fork", "_live")

    def __init__(self, client, key, cost):
        self.key, self._client, self._cost = key, client, cost
        self._buf = TicketBuf()
        self._fork, self._live = _forks, False

    @property
    def cost(self):
        """What the ticket is charged with: taken, or as last settled."""
        c = self._cost
        return {"requests": c.requests, "tokens": c.tokens,
                "images": c.images}

    def _c(self):
        c = self._client
        if self._fork != _forks:
            raise Error(errno.EINVAL, "this ticket is another process's "
                        "(inherited through fork): take one here")
        if c._ptr is None:
            raise _closed()
        return c._ptr

    def observe(self, status, headers=None):
        """Tell the whole host what the response said, before it returns:
        a 429 pauses the key for everyone and empties its bucket at the
        pause's end, remaining counts tighten it as each provider means
        them (a window's until its reset, a refilling bucket's now).
        headers: a mapping, an object with multi_items() or items(),
        (name, value) pairs, or a raw str/bytes block."""
        block = _header_block(headers)
        r = _L.tg_observe(self._c(), self._buf, int(status), block,
                          len(block))
        if r < 0:
            raise self._client._fail(r, self.key)
        return Advice(r)

    def settle(self, *, tokens=None, images=None, requests=None):
        """Charge what the request really used instead of the estimate:
        an over-estimate comes back to the bucket at once.  A member left
        out stays as the ticket has it."""
        c = self._cost
        actual = _cost(c.requests if requests is None else requests,
                       c.tokens if tokens is None else tokens,
                       c.images if images is None else images)
        r = _L.tg_settle(self._c(), self._buf, actual)
        if r < 0:
            raise self._client._fail(r, self.key)
        self._cost = actual

    def release(self):
        """Give back the concurrency leases; idempotent.  No-op for a
        ticket of another process, or of a closed client (tg_close
        released its leases)."""
        if not self._live:
            return
        self._live = False
        c = self._client
        if self._fork == _forks == c._fork and c._ptr is not None:
            _L.tg_release(c._ptr, self._buf)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def __del__(self):
        # A ticket nobody released would hold its lease until exit.
        try:
            self.release()
        except Exception:
            pass

    def __repr__(self):
        cost = " ".join(f"{k}={v}" for k, v in self.cost.items() if v)
        state = "live" if self._live else "released"
        return f"<tollgate.Ticket {self.key.name} {cost} {state}>"


async def _sleep_until_ns(until):
    """asyncio.sleep until time.monotonic_ns() reaches until, never a
    moment before: a ticket released before its time is taken for unused,
    and its slot given back."""
    while (d := until - time.monotonic_ns()) > 0:
        await asyncio.sleep(d / 1e9)


class _Slice:
    """One slice of a concurrency wait: tg_acquire in a worker thread.  If
    the coroutine is cancelled, nobody will release what the thread takes,
    so whichever of the two comes last gives it back."""

    def __init__(self, c, h, cost, timeout, buf):
        self.args = (c, h, cost, _timeout_ns(timeout), buf)
        self.lock = threading.Lock()
        self.r = self.abandoned = None

    def __call__(self):
        r = _L.tg_acquire(*self.args)
        with self.lock:
            self.r = r
            if self.abandoned and r == 0:
                _L.tg_release(self.args[0], self.args[4])
        return r

    def abandon(self):
        with self.lock:
            self.abandoned = True
            if self.r == 0:
                _L.tg_release(self.args[0], self.args[4])


class Client:
    """A process's handle on one broker's segment; threads share it."""

    def __init__(self, segment=None):
        # None: $TOLLGATE_SEGMENT, else "tollgate", as tg_open(NULL).
        self.segment = segment if segment is not None else \
            (os.environ.get("TOLLGATE_SEGMENT") or "tollgate")
        self._keys = {}
        self._fork = _forks
        self._slices = set()    # futures of threads in tg_acquire for us
        self._ptr = None
        self._ptr = _open(self.segment)

    def _c(self):
        """The C client of this process: a forked child opens its own on
        first use, and never tg_closes the parent's, which would free the
        parent's leases."""
        if self._fork == _forks:
            if self._ptr is None:
                raise _closed()
            return self._ptr
        with _lock:
            if self._fork != _forks:
                if self._ptr is None:
                    raise _closed()
                self._ptr = _open(self.segment)
                self._slices = set()    # the parent's threads: not here
                self._fork = _forks
        return self._ptr

    def close(self):
        """Release every lease of this client's tickets and free its slot.
        No thread may be using the client; the threads that wait for
        cancelled coroutines are waited for (a slice at most)."""
        ptr, self._ptr = self._ptr, None
        if ptr is not None and self._fork == _forks:
            concurrent.futures.wait(list(self._slices))
            _L.tg_close(ptr)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def key(self, name):
        """Look a key up once; later calls are a dict lookup."""
        k = self._keys.get(name)
        if k is None:
            h = ctypes.c_uint32()
            r = _L.tg_key(self._c(), name.encode(), ctypes.byref(h))
            if r < 0:
                raise _error(r, name, (UnknownKey, "no such key"))
            k = self._keys[name] = Key(name, h.value)
        return k

    def _fail(self, r, key):
        if r == -errno.ESTALE and self._keys.get(key.name) == key:
            del self._keys[key.name]    # so a key added back is found
        return _error(r, key.name)

    def _ticket(self, key, requests, tokens, images):
        if not isinstance(key, Key):
            key = self.key(key)
        return Ticket(self, key, _cost(requests, tokens, images))

    def try_ticket(self, key, requests=1, tokens=0, images=0):
        """(ticket, None) if one is free now, else (None, seconds until one
        may be; 0.0 when it waits for a ticket in flight to be released).
        Never waits; makes no system call."""
        t = self._ticket(key, requests, tokens, images)
        retry = ctypes.c_uint64()
        r = _L.tg_try_acquire(self._c(), t.key.handle, t._cost, t._buf,
                              ctypes.byref(retry))
        if r == -errno.EAGAIN:
            return None, retry.value / 1e9
        if r < 0:
            raise self._fail(r, t.key)
        t._live = True
        return t, None

    def acquire(self, key, requests=1, tokens=0, images=0, timeout=None):
        """Wait (timeout in seconds; None: forever) for a ticket; release
        it yourself, or use ticket().  Waiters go in arrival order.  A
        signal does not end the wait (Ctrl-C acts once it is over): give a
        timeout where that matters."""
        t = self._ticket(key, requests, tokens, images)
        r = _L.tg_acquire(self._c(), t.key.handle, t._cost,
                          _timeout_ns(timeout), t._buf)
        if r < 0:
            raise self._fail(r, t.key)
        t._live = True
        return t

    async def aacquire(self, key, requests=1, tokens=0, images=0,
                       timeout=None):
        """acquire() for asyncio, without blocking the loop.  A rate limit
        or a pause: tg_reserve takes the coroutine's place in the line
        that acquire()'s waiters in every process stand in (first come,
        first served: a large cost is not overtaken by smaller ones that
        came after it), and the coroutine sleeps until its slot on the
        loop's timer; cancelled before it, the ticket is released, which
        gives the slot back unless a later waiter stacked on it.  A
        concurrency limit waits for a release, which only a futex can
        report without polling, so a worker thread sleeps on it."""
        t = self._ticket(key, requests, tokens, images)
        h, buf = t.key.handle, t._buf
        deadline = None if timeout is None else \
            time.monotonic() + max(0.0, timeout)
        valid = ctypes.c_uint64()
        while True:
            left = None if deadline is None else \
                max(0.0, deadline - time.monotonic())
            # self._c() each round: close() in between must raise, not
            # crash.
            r = _L.tg_reserve(self._c(), h, t._cost, _timeout_ns(left), buf,
                              ctypes.byref(valid))
            if r == 0:
                # From after the call: the library's wait began before.
                until = time.monotonic_ns() + valid.value
                t._live = True
                try:
                    while True:
                        await _sleep_until_ns(until)
                        # A 429 while it slept: its slot was reckoned at
                        # the pace before; in line again, as tg_acquire.
                        r = _L.tg_ready(self._c(), buf, ctypes.byref(valid))
                        if r != -errno.EAGAIN:
                            break
                        until = time.monotonic_ns() + valid.value
                except BaseException:
                    t.release()     # never used: the slot may go back
                    raise
                if r == 0:
                    return t
                t.release()
                if r != -errno.ECANCELED:
                    raise self._fail(r, t.key)
                continue
            if r != -errno.EAGAIN:
                raise self._fail(r, t.key)     # -ETIMEDOUT: TimedOut
            if valid.value > 0:
                # Not to be reserved ahead (a window, a server's count, a
                # lease's return after a pause): the time to try again,
                # within the timeout, or tg_reserve said -ETIMEDOUT.
                await asyncio.sleep(valid.value / 1e9)
                continue
            if left is not None and left <= 0:
                raise _error(-errno.ETIMEDOUT, t.key.name)
            job = _Slice(self._c(), h, t._cost,
                         LEASE_SLICE if left is None else
                         min(LEASE_SLICE, left), buf)
            fut = _waiters().submit(job)
            self._slices.add(fut)
            fut.add_done_callback(self._slices.discard)
            try:
                r = await asyncio.wrap_future(fut)
            except asyncio.CancelledError:
                job.abandon()
                raise
            if r == 0:
                t._live = True
                return t
            if r != -errno.ETIMEDOUT:
                raise self._fail(r, t.key)

    @contextlib.contextmanager
    def ticket(self, key, requests=1, tokens=0, images=0, timeout=None):
        """with client.ticket(key, ...) as t: one request, released on exit
        however the block ends."""
        t = self.acquire(key, requests, tokens, images, timeout)
        try:
            yield t
        finally:
            t.release()

    @contextlib.asynccontextmanager
    async def aticket(self, key, requests=1, tokens=0, images=0,
                      timeout=None):
        """async with client.aticket(key, ...) as t: ticket() for asyncio."""
        t = await self.aacquire(key, requests, tokens, images, timeout)
        try:
            yield t
        finally:
            t.release()

    def __repr__(self):
        state = "closed" if self._ptr is None else "open"
        return f"<tollgate.Client {self.segment!r} {state}>"


def open(segment=None):
    """Open the segment a tollgated publishes (None: $TOLLGATE_SEGMENT,
    else "tollgate"); one Client per process is enough for all its
    threads and coroutines."""
    return Client(segment)


def __getattr__(name):
    # tollgate.stat on demand: imported here, `python3 -m tollgate.stat'
    # would find it imported already and warn.  tollgate.httpx on demand
    # too: only its users need the httpx package.
    if name in ("stat", "httpx"):
        import importlib
        return importlib.import_module("." + name, __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
