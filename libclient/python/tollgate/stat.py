"""tollgate.stat: a segment's counters as Python data, for notebooks and
dashboards.

    python3 -m tollgate.stat [-s SEGMENT] [-k KEY] [-c]

It runs `tollstat -j' and parses its JSON (schema 1, documented in
tollstat(1)) rather than read the segment itself: the layout is the C
code's to know, and tollstat already reads it consistently under a
changing broker.
"""
import argparse
import errno
import json
import os
import pprint
import shutil
import subprocess
import sys

from . import _lib
from . import Error, NoSegment, UnknownKey


def tollstat():
    """The tollstat that goes with the library in use: the build tree's
    beside a build tree's library, else the one on $PATH."""
    dirs = [os.environ.get("TG_BUILD"), os.path.dirname(_lib.path)]
    for d in dirs:
        if d and os.access(os.path.join(d, "tollstat"), os.X_OK):
            return os.path.join(d, "tollstat")
    found = shutil.which("tollstat")
    if found is None:
        raise FileNotFoundError("tollstat not found (in $TG_BUILD, beside "
                                f"{_lib.path}, or on $PATH)")
    return found


def read(segment=None, key=None):
    """What `tollstat -j -s SEGMENT [-k KEY]' prints, as a dict (None:
    $TOLLGATE_SEGMENT, else "tollgate", as tollstat itself)."""
    cmd = [tollstat(), "-j"] + (["-s", segment] if segment else []) + \
        (["-k", key] if key else [])
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        msg = p.stderr.strip() or f"tollstat exited {p.returncode}"
        if "no such segment" in msg:
            raise NoSegment(errno.ENOENT, msg, segment)
        if key and "no key" in msg:
            raise UnknownKey(errno.ENOENT, msg, key)
        raise Error(errno.EIO, msg)
    return json.loads(p.stdout)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m tollgate.stat",
                                 description="tollstat -j, as Python data")
    ap.add_argument("-s", dest="segment", default=None,
                    help='the segment (default $TOLLGATE_SEGMENT, else '
                    '"tollgate")')
    ap.add_argument("-k", dest="key", help="only KEY and the keys under it")
    ap.add_argument("-c", dest="clients", action="store_true",
                    help="only the client slots")
    a = ap.parse_args(argv)
    try:
        data = read(a.segment, a.key)
    except Error as e:
        sys.exit(f"tollgate.stat: {e.strerror}")
    pprint.pprint(data["clients"] if a.clients else data, sort_dicts=False)


if __name__ == "__main__":
    main()
