"""_lib: private; finds libtollgate.so and declares its functions to ctypes.

CDLL (not PyDLL) on purpose: ctypes lets go of the GIL around each call, so
a thread asleep in tg_acquire does not stop the other threads.
"""
import ctypes
import os

_HERE = os.path.dirname(os.path.abspath(__file__))


class Cost(ctypes.Structure):
    _fields_ = [("requests", ctypes.c_uint64), ("tokens", ctypes.c_uint64),
                ("images", ctypes.c_uint64)]


# tg_ticket: 16 words the caller owns; one per Ticket object.
TicketBuf = ctypes.c_uint64 * 16

_client_p = ctypes.c_void_p
_ticket_p = ctypes.POINTER(TicketBuf)
_cost_p = ctypes.POINTER(Cost)

_PROTOS = {
    "tg_open": (ctypes.c_int, [ctypes.c_char_p,
                               ctypes.POINTER(_client_p)]),
    "tg_close": (None, [_client_p]),
    "tg_key": (ctypes.c_int, [_client_p, ctypes.c_char_p,
                              ctypes.POINTER(ctypes.c_uint32)]),
    "tg_try_acquire": (ctypes.c_int, [_client_p, ctypes.c_uint32, _cost_p,
                                      _ticket_p,
                                      ctypes.POINTER(ctypes.c_uint64)]),
    "tg_acquire": (ctypes.c_int, [_client_p, ctypes.c_uint32, _cost_p,
                                  ctypes.c_int64, _ticket_p]),
    "tg_reserve": (ctypes.c_int, [_client_p, ctypes.c_uint32, _cost_p,
                                  ctypes.c_int64, _ticket_p,
                                  ctypes.POINTER(ctypes.c_uint64)]),
    "tg_ready": (ctypes.c_int, [_client_p, _ticket_p,
                                ctypes.POINTER(ctypes.c_uint64)]),
    "tg_observe": (ctypes.c_int, [_client_p, _ticket_p, ctypes.c_int,
                                  ctypes.c_char_p, ctypes.c_size_t]),
    "tg_settle": (ctypes.c_int, [_client_p, _ticket_p, _cost_p]),
    "tg_release": (None, [_client_p, _ticket_p]),
    "tg_strerror": (ctypes.c_char_p, [ctypes.c_int]),
}


def candidates():
    """Where to look, in order: an explicit path beats a build tree, and a
    build tree beats an installed copy, so tests run the code they built."""
    if os.environ.get("TOLLGATE_LIB"):
        yield os.environ["TOLLGATE_LIB"]
        return
    if os.environ.get("TG_BUILD"):
        yield os.path.join(os.environ["TG_BUILD"], "libtollgate.so")
    yield os.path.normpath(os.path.join(_HERE, "..", "..", "..", "build",
                                        "libtollgate.so"))
    yield "libtollgate.so.0"            # the system loader's search


def _load():
    tried = []
    for path in candidates():
        # A name without a slash goes to the loader; a path must exist,
        # except $TOLLGATE_LIB, whose failure is worth its own message.
        if "/" in path and not os.path.exists(path) and \
                not os.environ.get("TOLLGATE_LIB"):
            tried.append(path)
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            tried.append(f"{path} ({e})")
            continue
        missing = [name for name in _PROTOS if not hasattr(lib, name)]
        if missing:
            # An older library, where the loader looks: not this package's.
            tried.append(f"{path} (an older libtollgate: no "
                         f"{', '.join(missing)})")
            continue
        for name, (restype, argtypes) in _PROTOS.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        return lib, path
    raise OSError("libtollgate not found; tried " + ", ".join(tried) +
                  " (set TOLLGATE_LIB to the .so)")


lib, path = _load()


def strerror(r):
    return lib.tg_strerror(r).decode()
