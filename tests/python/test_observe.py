"""test_observe: every header form reaches tg_observe whole (caps, pauses,
repeated names), the advice comes back as an enum, and the broker counts
the responses."""
import http
import http.client
import io
import unittest

import tollgate
from tgbroker import BrokerCase

# A window's remaining (GitHub's fields): a cap until its reset.  OpenAI's
# x-ratelimit-*-requests would tighten the bucket instead (issue 13).
CAP = [("x-ratelimit-remaining", "2"),
       ("x-ratelimit-reset", "60")]
# Repeated hints: the parser takes the longest; joined into one "5, 30"
# (what httpx's and requests' items() do) it reads none.
PAUSE = [("Retry-After", "5"), ("retry-after", "30")]


class MultiItems:
    """httpx.Headers: multi_items() repeats names; items() joins them."""

    def __init__(self, pairs):
        self.pairs = pairs

    def multi_items(self):
        return list(self.pairs)

    def items(self):
        joined = {}
        for n, v in self.pairs:
            joined[n.lower()] = joined[n.lower()] + ", " + v \
                if n.lower() in joined else v
        return joined.items()


class RepeatingItems:
    """aiohttp's CIMultiDict, http.client's HTTPMessage: items() repeats."""

    def __init__(self, pairs):
        self.pairs = pairs

    def items(self):
        return iter(self.pairs)


def forms(pairs, repeats=True):
    """The same headers in each shape a caller may hand over."""
    block = "".join(f"{n}: {v}\r\n" for n, v in pairs)
    out = {
        "str pairs": list(pairs),
        "bytes pairs": [(n.encode(), v.encode()) for n, v in pairs],
        "tuple of pairs": tuple(pairs),
        "generator": ((n, v) for n, v in pairs),
        "bytes block": b"HTTP/1.1 200 OK\r\n" + block.encode(),
        "bytearray block": bytearray(block.encode()),
        "LF str block": block.replace("\r\n", "\n"),
        "multi_items": MultiItems(pairs),
        "repeating items()": RepeatingItems(pairs),
        # urllib's response.headers
        "http.client.HTTPMessage": http.client.parse_headers(
            io.BytesIO(block.encode() + b"\r\n")),
    }
    if not repeats:
        out["dict"] = dict(pairs)
    try:
        import httpx
        out["httpx.Headers"] = httpx.Headers(list(pairs))
    except ImportError:
        pass
    return out


class TestObserve(BrokerCase):
    NKEYS = 40
    CONF = "".join(f"[k{i}]\nlimit = 100 requests/min\n"
                   for i in range(NKEYS)) + "[counted]\n[counted/child]\n"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.free = iter(range(cls.NKEYS))

    def key(self):
        return f"k{next(self.free)}"

    def test_a_cap_in_every_form(self):
        for form, headers in forms(CAP, repeats=False).items():
            with self.subTest(form=form):
                k = self.key()
                with self.c.ticket(k) as t:
                    advice = t.observe(200, headers)
                self.assertIs(advice, tollgate.Advice.OK)
                self.assertEqual(self.b.limit(k, "rate")["server"]
                                 ["remaining"], 2)
                for _ in range(2):
                    self.assertIsNotNone(self.c.try_ticket(k)[0])
                t, retry = self.c.try_ticket(k)
                self.assertIsNone(t)
                self.assertTrue(50 < retry <= 60, retry)

    def test_repeated_hints_survive_every_form(self):
        for form, headers in forms(PAUSE).items():
            with self.subTest(form=form):
                k = self.key()
                with self.c.ticket(k) as t:
                    advice = t.observe(429, headers)
                self.assertIs(advice, tollgate.Advice.RETRY)
                t, retry = self.c.try_ticket(k)
                self.assertIsNone(t)
                self.assertTrue(29 < retry <= 30, (form, retry))

    def test_joined_repeats_read_no_hint(self):
        """The control: what items() of httpx would have said, had
        observe preferred it; a hint-less 429 gets the 1 s backoff."""
        k = self.key()
        with self.c.ticket(k) as t:
            t.observe(429, MultiItems(PAUSE).items())
        self.assertLess(self.c.try_ticket(k)[1], 2)

    def test_a_value_cannot_forge_a_line(self):
        k = self.key()
        with self.c.ticket(k) as t:
            t.observe(429, {"x-note": "a\r\nretry-after: 30",
                            b"x-other": b"b\nretry-after: 30"})
        retry = self.c.try_ticket(k)[1]
        self.assertGreater(retry, 0)
        self.assertLess(retry, 2)      # the backoff, not 30 s

    def test_advice_and_counts(self):
        before = self.b.key("counted/child")["status"]
        t = self.c.acquire("counted/child")
        t.release()     # observe works after release
        cases = [(200, tollgate.Advice.OK), (304, tollgate.Advice.OK),
                 (http.HTTPStatus.UNAUTHORIZED, tollgate.Advice.GIVE_UP),
                 (404, tollgate.Advice.GIVE_UP),
                 (500, tollgate.Advice.RETRY)]
        for status, want in cases:
            with self.subTest(status=status):
                advice = t.observe(status, None)
                self.assertIs(advice, want)
                self.assertIsInstance(advice, int)
        after = self.b.key("counted/child")["status"]
        self.assertEqual(after["ok"] - before["ok"], 2)
        self.assertEqual(after["auth"] - before["auth"], 1)
        self.assertEqual(after["client_error"] - before["client_error"], 1)
        self.assertEqual(after["server_error"] - before["server_error"], 1)
        self.assertEqual(after["limited"], before["limited"])
        # The 500 set a backoff pause on the key: try_ticket says so.
        self.assertGreater(self.c.try_ticket("counted/child")[1], 0)

    def test_advice_values_match_tollgate_h(self):
        self.assertEqual([int(a) for a in tollgate.Advice], [0, 1, 2])
        self.assertEqual([a.name for a in tollgate.Advice],
                         ["OK", "RETRY", "GIVE_UP"])


if __name__ == "__main__":
    unittest.main()
