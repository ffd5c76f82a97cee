"""test_example: the README's httpx worker, run for real against a local
server that answers 429 (retry-after: 1) once, then 200 with a usage."""
import http.server
import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import time
import unittest

from tgbroker import PACKAGE_DIR, BrokerCase

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "libclient",
                       "python", "examples", "httpx_worker.py")
README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")
USED = 7000     # tokens the server says the image took


class ReadmeShowsIt(unittest.TestCase):
    def test_readme_block_is_the_example(self):
        """The README's worker is this file, byte for byte: the one run."""
        with open(README) as f:
            readme = f.read()
        m = re.search(r"^## From Python$.*?^```python\n(.*?)^```$", readme,
                      re.M | re.S)
        self.assertIsNotNone(m, "README has no python block under "
                             "'## From Python'")
        with open(EXAMPLE) as f:
            self.assertEqual(m.group(1), f.read())


class Images(http.server.BaseHTTPRequestHandler):
    seen = []   # (monotonic time, path, authorization, body)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.seen.append((time.monotonic(), self.path,
                          self.headers["authorization"], body))
        if len(self.seen) == 1:
            self.answer(429, {"error": {"code": "rate_limit_exceeded"}},
                        [("retry-after", "1"),
                         ("x-ratelimit-remaining-images", "0")])
        else:
            self.answer(200, {"data": [{"b64_json": "aW1n"}], "usage": {
                "total_tokens": USED, "input_tokens": 50,
                "output_tokens": USED - 50}},
                [("x-ratelimit-remaining-images", "3"),
                 ("x-ratelimit-reset-images", "30s")])

    def answer(self, status, doc, headers):
        data = json.dumps(doc).encode()
        self.send_response(status)
        for name, value in headers + [("content-type", "application/json"),
                                      ("content-length", str(len(data)))]:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class TestExample(BrokerCase):
    CONF = ("[openai]\nlimit = 100000 tokens/min\n"
            "[openai/gpt-image-1]\nlimit = 50 images/min\nconcurrency = 4\n"
            # A 429 without its hint would pause 100 ms at most.
            "backoff = 50ms..100ms\n")

    def test_worker_retries_and_settles(self):
        if importlib.util.find_spec("httpx") is None:
            raise unittest.SkipTest(f"{sys.executable} cannot import httpx "
                                    "(Debian: apt-get install python3-httpx)")
        with open(EXAMPLE) as f:
            estimate = int(re.search(r"tokens=(\d+)", f.read()).group(1))
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Images)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        env = {k: v for k, v in os.environ.items()
               if not k.lower().endswith("_proxy")}
        env.update(PYTHONPATH=PACKAGE_DIR,
                   IMAGES_URL=f"http://127.0.0.1:{srv.server_port}/v1/images",
                   TOLLGATE_SEGMENT=self.b.segment,
                   TOLLGATE_KEY="openai/gpt-image-1",
                   OPENAI_API_KEY="sk-test")
        p = subprocess.run([sys.executable, EXAMPLE, "a red kite"], env=env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, "1 images\n")

        # It retried, after the pause the 429 set for the whole host.
        seen = Images.seen
        self.assertEqual(len(seen), 2)
        self.assertEqual([s[1] for s in seen], ["/v1/images"] * 2)
        self.assertEqual(seen[0][2], "Bearer sk-test")
        self.assertEqual(seen[1][3], {"model": "gpt-image-1",
                                      "prompt": "a red kite"})
        print(f"\n  retried {seen[1][0] - seen[0][0]:.3f} s after the 429",
              end=" ")
        self.assertGreaterEqual(seen[1][0] - seen[0][0], 0.9)

        # The broker saw both responses, each ticket and the settle.
        key = self.b.key("openai/gpt-image-1")
        self.assertEqual(key["status"]["limited"], 1)
        self.assertEqual(key["status"]["ok"], 1)
        self.assertEqual(key["granted"], 2)
        images = self.b.limit("openai/gpt-image-1", "rate")
        self.assertEqual(images["granted"], 2)
        # OpenAI's bucket refills all the time: remaining 3 leaves the
        # local bucket holding 3 (of 50), and caps nothing.
        self.assertIsNone(images["server"])
        self.assertLessEqual(images["available"], 3)
        tokens = self.b.limit("openai", "rate")
        # The 429's ticket kept its estimate; the 200's was settled up.
        self.assertEqual(tokens["granted"], estimate + USED)
        self.assertEqual(self.b.limit("openai/gpt-image-1",
                                      "concurrency")["in_flight"], 0)
