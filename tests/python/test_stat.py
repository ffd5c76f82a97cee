"""test_stat: `python3 -m tollgate.stat' prints tollstat -j as Python data,
and tollgate.stat.read returns it."""
import ast
import json
import os
import subprocess
import sys

import tollgate
import tollgate.stat
from tgbroker import PACKAGE_DIR, BrokerCase, bin_path

# What moves between two reads of a quiet segment (windows, not rates:
# a window's available count stays put for a 64th of its period).
CLOCKS = ("now_ns", "uptime_ns", "heartbeat_age_ns", "next_ns")


def still(data):
    """data without its clocks."""
    if isinstance(data, dict):
        return {k: still(v) for k, v in data.items() if k not in CLOCKS}
    if isinstance(data, list):
        return [still(v) for v in data]
    return data


class TestStat(BrokerCase):
    CONF = ("[api]\nlimit = 100 requests/day window\nconcurrency = 2\n"
            "[api/chat]\nlimit = 1000 tokens/day window\n"
            "[other]\nlimit = 5 images/min window\n")

    def run_module(self, *args):
        env = dict(os.environ, PYTHONPATH=PACKAGE_DIR)
        return subprocess.run([sys.executable, "-m", "tollgate.stat",
                               "-s", self.b.segment, *args], env=env,
                              capture_output=True, text=True)

    def tollstat(self, *args):
        out = subprocess.run([bin_path("tollstat"), "-j", "-s",
                              self.b.segment, *args], check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out)

    def test_module_prints_tollstat_j_as_python(self):
        t = self.c.acquire("api/chat", tokens=7)     # something to see
        self.addCleanup(t.release)
        p = self.run_module()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, "")
        printed = ast.literal_eval(p.stdout)
        want = self.tollstat()
        self.assertEqual(still(printed), still(want))
        # Python's own None and True, tollstat's order.
        self.assertIn("'key_filter': None", p.stdout)
        self.assertEqual(list(printed), list(want))
        self.assertEqual(printed["keys"][0]["limits"][1]["in_flight"], 1)

    def test_key_and_clients(self):
        p = self.run_module("-k", "api")
        self.assertEqual(p.returncode, 0, p.stderr)
        printed = ast.literal_eval(p.stdout)
        self.assertEqual([k["name"] for k in printed["keys"]],
                         ["api", "api/chat"])
        self.assertEqual(still(printed), still(self.tollstat("-k", "api")))
        p = self.run_module("-c")
        self.assertEqual(p.returncode, 0, p.stderr)
        clients = ast.literal_eval(p.stdout)
        self.assertEqual(still(clients), still(self.tollstat()["clients"]))
        self.assertIn(os.getpid(), [c["pid"] for c in clients["list"]])

    def test_read(self):
        data = tollgate.stat.read(self.b.segment)
        self.assertEqual(data["schema"], 1)
        self.assertEqual(data["segment"], self.b.segment)
        self.assertEqual(data["broker"]["pid"], self.b.proc.pid)
        self.assertEqual(still(data), still(self.tollstat()))
        self.assertEqual(tollgate.stat.read(self.b.segment, "other")
                         ["key_filter"], "other")

    def test_errors(self):
        with self.assertRaises(FileNotFoundError):
            tollgate.stat.read(self.b.segment + "-none")
        with self.assertRaises(KeyError):
            tollgate.stat.read(self.b.segment, "none")
        p = self.run_module("-k", "none")
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stdout, "")
        self.assertIn("no key none", p.stderr)
