"""test_httpx_transport: tollgate.httpx between httpx and a local server
that answers as OpenAI and Anthropic do (tgprovider): routing, the cost
taken and settled from usage (JSON bodies and streams, read to the end or
closed early), the advice followed, and a fleet of 4 processes x 4 tasks
that the server finds within its limits, every 429 pausing every process.
"""
import asyncio
import importlib.util
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import tollgate
from tgbroker import PACKAGE_DIR, BrokerCase, forked
import tgprovider

if importlib.util.find_spec("httpx") is None:
    WHY = (f"{sys.executable} cannot import httpx (Debian: apt-get install "
           "python3-httpx)")
    print(f"\n  test_httpx_transport skipped: {WHY}")
    raise unittest.SkipTest(WHY)
import httpx                    # noqa: E402
import tollgate.httpx as tgx    # noqa: E402

mp = multiprocessing.get_context("fork")

ROUTE = [tgx.Rule("anthropic", path="/v1/messages"),
         tgx.Rule("openai/gpt-image-1", path="/v1/images/",
                  model="gpt-image-*"),
         tgx.Rule("openai", path="/v1/")]
OPENAI = {"authorization": "Bearer sk-test"}
ANTHROPIC = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}


def chat(text, **kw):
    return dict({"model": "gpt-4o-mini",
                 "messages": [{"role": "user", "content": text}]}, **kw)


def message(text, **kw):
    return dict({"model": "claude-3-5-haiku-latest", "max_tokens": 16,
                 "system": "Be brief.",
                 "messages": [{"role": "user", "content": text}]}, **kw)


def ticket_of(response):
    return response.extensions["tollgate"]["ticket"]


class Stamped(httpx.AsyncBaseTransport, httpx.BaseTransport):
    """Wrapped by the tollgate transport: stamps each try just before it
    is sent with a time before its ticket was taken (x-tg-lq-ns: when the
    request came to the tollgate transport, or for a retry when the
    response before it came back, which tollgate observes before taking
    the next ticket) and the time it is sent; notes when its response came
    back (request.extensions)."""

    def __init__(self, inner):
        self.inner = inner

    def stamp(self, request):
        x = request.extensions
        request.headers["x-tg-pid"] = str(os.getpid())
        request.headers["x-tg-lq-ns"] = str(x.get("tg_resp_ns",
                                                  x.get("tg_entered_ns", 0)))
        request.headers["x-tg-sent-ns"] = str(time.monotonic_ns())

    async def handle_async_request(self, request):
        self.stamp(request)
        r = await self.inner.handle_async_request(request)
        request.extensions["tg_resp_ns"] = time.monotonic_ns()
        return r

    def handle_request(self, request):
        self.stamp(request)
        r = self.inner.handle_request(request)
        request.extensions["tg_resp_ns"] = time.monotonic_ns()
        return r

    async def aclose(self):
        await self.inner.aclose()

    def close(self):
        self.inner.close()


class Entered(httpx.AsyncBaseTransport):
    """Around the tollgate transport: when the request came to it."""

    def __init__(self, inner):
        self.inner = inner

    async def handle_async_request(self, request):
        request.extensions = dict(request.extensions,
                                  tg_entered_ns=time.monotonic_ns())
        return await self.inner.handle_async_request(request)

    async def aclose(self):
        await self.inner.aclose()


class ProviderCase(BrokerCase):
    PROVIDER = {}

    def setUp(self):
        super().setUp()
        self.p = tgprovider.Provider(**self.PROVIDER)
        self.addCleanup(self.p.close)

    def granted(self, key, unit):
        return next(lim for lim in self.b.key(key)["limits"]
                    if lim["unit"] == unit and lim["kind"] != "concurrency"
                    )["granted"]

    def in_flight(self, key):
        return self.b.limit(key, "concurrency")["in_flight"]


class TestRoutingAndCost(ProviderCase):
    CONF = ("[openai]\nlimit = 1000 requests/s\nlimit = 1000000 tokens/min\n"
            "concurrency = 8\n"
            "[openai/gpt-image-1]\nlimit = 100 images/min\n"
            "[anthropic]\nlimit = 1000 requests/s\n"
            "limit = 1000000 tokens/min\nconcurrency = 8\n"
            "[small]\nlimit = 1000 tokens/min\n"
            "[tiny]\nlimit = 100 tokens/min\n[few]\nlimit = 2 images/min\n")

    def client(self, **kw):
        t = tgx.Transport(kw.pop("route", ROUTE), client=self.c, **kw)
        return httpx.Client(transport=t, base_url=self.p.url, timeout=30)

    def test_estimate(self):
        body = message("x" * 40, max_tokens=100)
        # "Be brief.", "user" and 40 characters: 53, 14 tokens; 100 out.
        self.assertEqual(tgx.estimate(body, "/v1/messages"),
                         {"requests": 1, "tokens": 14 + 100, "images": 0})
        self.assertEqual(tgx.estimate({"model": "gpt-image-1", "n": 3,
                                       "prompt": "a kite"},
                                      "/v1/images/generations"),
                         {"requests": 1, "tokens": 2, "images": 3})
        # Inline images are not text ("user", "image_url", "text", "abcd":
        # 21 characters, 6 tokens); chat's n is not images.
        img = chat([{"type": "image_url", "image_url": {
            "url": "data:image/png;base64," + "A" * 10000}},
            {"type": "text", "text": "abcd"}], n=2, max_completion_tokens=7)
        self.assertEqual(tgx.estimate(img, "/v1/chat/completions"),
                         {"requests": 1, "tokens": 6 + 7, "images": 0})
        self.assertEqual(tgx.usage_tokens({"input_tokens": 5,
                                           "output_tokens": 7}), 12)
        self.assertEqual(tgx.usage_tokens({"prompt_tokens": 5,
                                           "completion_tokens": 7,
                                           "total_tokens": 12}), 12)
        self.assertIsNone(tgx.usage_tokens({"foo": 1}))

    def test_rules_pick_the_key_and_settle_from_usage(self):
        before = {k: self.b.key(k)["granted"] for k in
                  ("openai", "openai/gpt-image-1", "anthropic")}
        with self.client() as http:
            r = http.post("/v1/chat/completions", json=chat("hi"),
                          headers=OPENAI)
            self.assertEqual(r.status_code, 200)
            x = r.extensions["tollgate"]
            self.assertEqual((x["key"], x["tries"], x["advice"]),
                             ("openai", 1, tollgate.Advice.OK))
            self.assertEqual(x["ticket"].cost["tokens"],
                             r.json()["usage"]["total_tokens"])
            r = http.post("/v1/images/generations", headers=OPENAI,
                          json={"model": "gpt-image-1", "prompt": "a kite",
                                "n": 2})
            x = r.extensions["tollgate"]
            self.assertEqual(x["key"], "openai/gpt-image-1")
            self.assertEqual(x["ticket"].cost, {"requests": 1, "images": 2,
                                                "tokens": 50 + 8000})
            r = http.post("/v1/messages", json=message("hi"),
                          headers=ANTHROPIC)
            u = r.json()["usage"]
            self.assertEqual(ticket_of(r).key.name, "anthropic")
            self.assertEqual(ticket_of(r).cost["tokens"],
                             u["input_tokens"] + u["output_tokens"])
        after = {k: self.b.key(k)["granted"] for k in before}
        self.assertEqual({k: after[k] - before[k] for k in before},
                         {"openai": 1, "openai/gpt-image-1": 1,
                          "anthropic": 1})
        self.assertEqual(self.in_flight("openai"), 0)
        self.assertEqual(self.in_flight("anthropic"), 0)

    def test_unmatched_passes_or_is_refused(self):
        before = self.b.key("openai")["granted"]
        route = [tgx.Rule("openai", host="api.openai.com")]
        with self.client(route=route) as http:
            r = http.post("/v1/chat/completions", json=chat("hi"),
                          headers=OPENAI)
            self.assertEqual(r.status_code, 200)
            self.assertNotIn("tollgate", r.extensions)
        n = self.p.counts("openai")["requests"]
        with self.client(route=route, unmatched="refuse") as http:
            with self.assertRaises(tgx.Unrouted):
                http.post("/v1/chat/completions", json=chat("hi"),
                          headers=OPENAI)
        self.assertEqual(self.p.counts("openai")["requests"], n)
        self.assertEqual(self.b.key("openai")["granted"], before)
        # A function routes too, and a string sends everything to one key.
        seen = []
        with self.client(route=lambda rq: seen.append(rq.url.path) or
                         "anthropic") as http:
            r = http.post("/v1/messages", json=message("hi"),
                          headers=ANTHROPIC)
            self.assertEqual(ticket_of(r).key.name, "anthropic")
        self.assertEqual(seen, ["/v1/messages"])
        with self.client(route="anthropic") as http:
            r = http.post("/v1/messages", json=message("hi"),
                          headers=ANTHROPIC)
            self.assertEqual(ticket_of(r).key.name, "anthropic")

    def test_give_up_returns_at_once(self):
        n = self.p.counts("openai")["refused"]
        with self.client() as http:
            r = http.post("/v1/chat/completions", json=chat("hi"))
        self.assertEqual(r.status_code, 401)
        self.assertEqual(r.extensions["tollgate"]["advice"],
                         tollgate.Advice.GIVE_UP)
        self.assertEqual(self.p.counts("openai")["refused"], n + 1)
        self.assertEqual(self.in_flight("openai"), 0)

    def test_an_over_estimate_comes_back(self):
        """A bucket of 1000 tokens: a request estimated at 900 that used
        about 60 leaves room for another 900 at once."""
        est = tgx.estimate(chat("hi", max_tokens=900), "/v1/chat/")
        self.assertGreater(est["tokens"], 900)
        with self.client(route="small") as http:
            r = http.post("/v1/chat/completions", headers=OPENAI,
                          json=chat("hi", max_tokens=900))
            used = r.json()["usage"]["total_tokens"]
            self.assertLess(used, 100)
            self.assertEqual(ticket_of(r).cost["tokens"], used)
        t, wait = self.c.try_ticket("small", tokens=est["tokens"])
        self.assertIsNotNone(t, f"no room for {est} after the settle: "
                             f"wait {wait}")
        t.release()


    def test_an_estimate_larger_than_the_bucket_is_halved(self):
        with self.client(route="tiny") as http:
            r = http.post("/v1/chat/completions", headers=OPENAI,
                          json=chat("hi", max_tokens=1000))
            self.assertEqual(r.status_code, 200)
            self.assertEqual(ticket_of(r).cost["tokens"],
                             r.json()["usage"]["total_tokens"])
        # Images are counted, not estimated: 3 of 2 never fit.
        with self.client(route="few") as http:
            with self.assertRaises(tollgate.CostTooBig):
                http.post("/v1/images/generations", headers=OPENAI,
                          json={"model": "gpt-image-1", "prompt": "x",
                                "n": 3})


class TestStreams(ProviderCase):
    CONF = ("[openai]\nlimit = 1000 requests/s\nlimit = 1000000 tokens/min\n"
            "concurrency = 4\n"
            "[anthropic]\nlimit = 1000 requests/s\n"
            "limit = 1000000 tokens/min\nconcurrency = 4\n")

    def run_async(self, coro_fn):
        async def main():
            t = tgx.AsyncTransport(ROUTE, client=self.c)
            async with httpx.AsyncClient(transport=t, base_url=self.p.url,
                                         timeout=30) as http:
                return await coro_fn(http)
        return asyncio.run(main())

    def test_streams_settle_at_their_end(self):
        async def go(http):
            out = []
            for path, body, h in (
                    ("/v1/chat/completions", chat("hi", stream=True,
                     stream_options={"include_usage": True}), OPENAI),
                    ("/v1/messages", message("hi", stream=True), ANTHROPIC)):
                async with http.stream("POST", path, json=body,
                                       headers=h) as r:
                    self.assertEqual(r.headers["content-type"],
                                     "text/event-stream")
                    t = ticket_of(r)
                    est = t.cost["tokens"]
                    self.assertEqual(self.in_flight(t.key.name), 1)
                    lines = [line async for line in r.aiter_lines()]
                    # Settled and released at the end, before the close.
                    out.append((t.key.name, est, t.cost["tokens"],
                                self.in_flight(t.key.name), len(lines)))
            return out

        before = {k: self.granted(k, "tokens") for k in ("openai",
                                                          "anthropic")}
        out = self.run_async(go)
        used = [e["usage"] for e in self.p.log[-2:]]
        self.assertEqual([o[2] for o in out], used)
        for (key, est, settled, flying, lines), u in zip(out, used):
            self.assertLess(est, u)
            self.assertEqual(flying, 0, key)
            self.assertGreater(lines, 8)
            self.assertEqual(self.granted(key, "tokens") - before[key], u)

    def test_stream_closed_early_is_released(self):
        """The caller stops after the first event: the lease is back at
        the close, the estimate stands (the usage never came)."""
        async def go(http):
            out = []
            for path, body, h in (
                    ("/v1/chat/completions", chat("hi", model="gpt-slow",
                     stream=True, stream_options={"include_usage": True}),
                     OPENAI),
                    ("/v1/messages", message("hi", model="claude-slow",
                                             stream=True), ANTHROPIC)):
                async with http.stream("POST", path, json=body,
                                       headers=h) as r:
                    t = ticket_of(r)
                    est = t.cost["tokens"]
                    async for line in r.aiter_lines():
                        if line.startswith("data:"):
                            break
                    self.assertEqual(self.in_flight(t.key.name), 1)
                out.append((t.key.name, est, t.cost["tokens"],
                            self.in_flight(t.key.name), t))
            return out

        start = time.monotonic()
        for key, est, settled, flying, t in self.run_async(go):
            self.assertEqual(flying, 0, key)
            self.assertEqual(settled, est, key)
            self.assertIn("released", repr(t))
        # Closed early: not the 240 slow events' 12 s each.
        self.assertLess(time.monotonic() - start, 10)

    def test_sync_stream_closed_early_is_released(self):
        t = tgx.Transport(ROUTE, client=self.c)
        with httpx.Client(transport=t, base_url=self.p.url,
                          timeout=30) as http:
            with http.stream("POST", "/v1/messages", headers=ANTHROPIC,
                             json=message("hi", model="claude-slow",
                                          stream=True)) as r:
                next(r.iter_lines())
                self.assertEqual(self.in_flight("anthropic"), 1)
            self.assertEqual(self.in_flight("anthropic"), 0)
            with http.stream("POST", "/v1/messages", headers=ANTHROPIC,
                             json=message("hi", stream=True)) as r:
                r.read()
                self.assertEqual(ticket_of(r).cost["tokens"],
                                 self.p.log[-1]["usage"])


class TestRetry(ProviderCase):
    CONF = ("[openai]\nlimit = 1000 requests/s\nconcurrency = 4\n"
            "[anthropic]\nlimit = 1000 requests/s\nconcurrency = 4\n")
    # The first two requests of each provider are refused.
    PROVIDER = {"inject": (1, 2), "retry_after": 1}

    def test_retry_waits_out_the_pause_then_succeeds(self):
        t = tgx.Transport(ROUTE, client=self.c, transport=Stamped(
            httpx.HTTPTransport()))
        with httpx.Client(transport=t, base_url=self.p.url,
                          timeout=30) as http:
            r = http.post("/v1/messages", json=message("hi"),
                          headers=ANTHROPIC)
        self.assertEqual(r.status_code, 200)
        self.assertEqual(r.extensions["tollgate"]["tries"], 3)
        log = [e for e in self.p.log if e["provider"] == "anthropic"]
        self.assertEqual([e["kind"] for e in log],
                         ["injected", "injected", "ok"])
        gaps = [(b["arrival"] - a["arrival"]) / 1e9
                for a, b in zip(log, log[1:])]
        print(f"\n  retried after {gaps[0]:.3f} s, {gaps[1]:.3f} s "
              "(retry-after: 1)", end=" ")
        self.assertGreaterEqual(min(gaps), 0.99)

    def test_max_tries_then_the_last_response(self):
        seen = []

        async def go():
            t = tgx.AsyncTransport(ROUTE, client=self.c, max_tries=2,
                                   observed=lambda *a: seen.append(a[2:]))
            async with httpx.AsyncClient(transport=t, base_url=self.p.url,
                                         timeout=30) as http:
                return await http.post("/v1/chat/completions",
                                       json=chat("hi"), headers=OPENAI)

        r = asyncio.run(go())
        self.assertEqual(r.status_code, 429)
        self.assertEqual(r.json()["error"]["code"], "rate_limit_exceeded")
        self.assertEqual(seen, [(tollgate.Advice.RETRY, 1),
                                (tollgate.Advice.RETRY, 2)])
        self.assertEqual(self.p.counts("openai")["requests"], 2)
        self.assertEqual(self.in_flight("openai"), 0)


PROCS, TASKS, ROUNDS = 4, 4, 8
RATE, CONC = 8, 3


def fleet_worker(segment, base, conn):
    """One process of the fleet: TASKS coroutines, ROUNDS requests each,
    in turn OpenAI and Anthropic, JSON and streamed; sends back the 429s
    it observed (when its response came back, when observe returned) and
    what went wrong."""
    seen, wrong = [], []

    def observed(request, response, advice, tries):
        if response.status_code == 429:
            seen.append({"provider": tgprovider.provider_of(
                request.url.path), "resp": request.extensions["tg_resp_ns"],
                "observed": time.monotonic_ns(), "pid": os.getpid(),
                "retry_after": float(response.headers["retry-after"])})

    async def one(http, i, r):
        kind = (i + r) % 4
        if kind % 2 == 0:
            path, h = "/v1/chat/completions", OPENAI
            body = chat(f"task {i} round {r}: say hello")
        else:
            path, h = "/v1/messages", ANTHROPIC
            body = message(f"task {i} round {r}: say hello")
        if kind >= 2:
            body["stream"] = True
            if kind == 2:
                body["stream_options"] = {"include_usage": True}
        async with http.stream("POST", path, json=body, headers=h) as resp:
            events = [line async for line in resp.aiter_lines()]
            t = ticket_of(resp)
        if resp.status_code != 200:
            wrong.append(f"{path}: {resp.status_code}")
        elif t.cost["tokens"] == tgx.estimate(body, path)["tokens"]:
            wrong.append(f"{path} {kind}: not settled ({len(events)})")

    async def task(http, i):
        for r in range(ROUNDS):
            await one(http, i, r)

    async def main():
        t = tgx.AsyncTransport(ROUTE, segment=segment, timeout=60,
                               transport=Stamped(
                                   httpx.AsyncHTTPTransport()),
                               observed=observed)
        async with httpx.AsyncClient(transport=Entered(t), base_url=base,
                                     timeout=60) as http:
            await asyncio.gather(*(task(http, i) for i in range(TASKS)))

    try:
        asyncio.run(main())
    except BaseException as e:
        wrong.append(repr(e))
    conn.send((seen, wrong))
    conn.close()


class TestFleet(ProviderCase):
    """4 processes x 4 tasks against a provider of RATE requests/s (a
    bucket of RATE) and CONC in flight, for each of OpenAI and Anthropic;
    the 10th and 30th request of each are refused (retry-after: 1)."""
    CONF = "".join(f"[{p}]\nlimit = {RATE} requests/s margin 20%\n"
                   "limit = 1000000 tokens/min\n"
                   f"concurrency = {CONC}\n" for p in tgprovider.PROVIDERS)
    PROVIDER = {"rate": RATE, "burst": RATE, "concurrency": CONC,
                "inject": (10, 30), "retry_after": 1}

    def test_fleet_within_limits_and_paused_by_every_429(self):
        pipes = [mp.Pipe(duplex=False) for _ in range(PROCS)]
        procs = [forked(fleet_worker, self.b.segment, self.p.url, w)
                 for _, w in pipes]
        for p in procs:
            self.addCleanup(p.kill)
        results = []
        for (r, w), p in zip(pipes, procs):
            w.close()
            self.assertTrue(r.poll(240), "a worker hung")
            results.append(r.recv())
            p.join(30)
        self.assertEqual([p.exitcode for p in procs], [0] * PROCS)
        for _, wrong in results:
            self.assertEqual(wrong, [])
        seen = [s for ss, _ in results for s in ss]
        log = self.p.log
        total = PROCS * TASKS * ROUNDS

        for prov in tgprovider.PROVIDERS:
            c = self.p.counts(prov)
            print(f"\n  {prov}: {c['requests']} requests, "
                  f"{c['injected'] + c['over_rate'] + c['over_concurrency']}"
                  f" 429s ({c['injected']} injected, {c['over_rate']} over "
                  f"the rate, {c['over_concurrency']} over concurrency), "
                  f"at most {c['max_in_flight']} in flight of {CONC}",
                  end="")
            self.assertEqual(c["over_rate"], 0)
            self.assertEqual(c["over_concurrency"], 0)
            self.assertLessEqual(c["max_in_flight"], CONC)
            self.assertEqual(c["injected"], 2)
            self.assertEqual(c["ok"], total // 2)
            self.assertEqual(c["requests"], total // 2 + 2)
            self.assertEqual(len([s for s in seen if s["provider"] == prov]),
                             2)
            # Tokens as the responses said, and the 429s' estimates.
            mine = [e for e in log if e["provider"] == prov]
            want = sum(e["usage"] for e in mine if e["kind"] == "ok") + \
                sum(tgx.estimate(e["body"], e["path"])["tokens"]
                    for e in mine if e["kind"] == "injected")
            # Plus the tickets that a 429 sent back in line (tg_ready:
            # reckoned before it, released unsent, reserved again): a
            # grant each, of their estimate.
            extra = self.granted(prov, "requests") - len(mine)
            extra_tokens = self.granted(prov, "tokens") - want
            most = max(tgx.estimate(e["body"], e["path"])["tokens"]
                       for e in mine)
            self.assertGreaterEqual(extra, 0)
            self.assertGreaterEqual(extra_tokens, 0)
            self.assertLessEqual(extra_tokens, extra * most)
            print(f"; {extra} back in line", end="")
            self.assertEqual(self.in_flight(prov), 0)

        # Every 429 paused every process: a ticket taken after the 429
        # was observed (its request came to the transport after that) is
        # not sent before the pause's end (retry-after from the time the
        # response came back, at the earliest).
        early = 0
        for s in seen:
            end = s["resp"] + int(s["retry_after"] * 1e9)
            mine = [e for e in log if e["provider"] == s["provider"]]
            after = [e for e in mine if e["lq"] > s["observed"]]
            bad = [e for e in after if e["arrival"] < end]
            self.assertEqual(bad, [], f"sent in the pause of {s}")
            # Not vacuous: the other processes had requests waiting.
            self.assertGreaterEqual(len({e["pid"] for e in after}), 3)
            # And those in line before the 429, sent after it was
            # observed: aacquire() checks its reserved slot (tg_ready)
            # after the sleep and takes its place in line again, as
            # tg_acquire does.  Before, it sent when the slot came: 2
            # into each pause.  Only a ticket checked just before the 429
            # was observed and sent just after may go (a race of
            # microseconds).
            early += sum(1 for e in mine if e["lq"] <= s["observed"] <
                         e["sent"] and e["arrival"] < end)
        print(f"\n  {len(seen)} 429s observed; sent into their pauses: 0 "
              f"of the tickets taken after them, {early} reserved before",
              end=" ")
        self.assertLessEqual(early, len(seen) // 2)


README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")
SECTION = "## With the OpenAI / Anthropic SDK (Python)"


def readme_programs():
    """The section's python blocks, as printed: the SDK one, the httpx
    one."""
    with open(README) as f:
        text = f.read()
    m = re.search("^" + re.escape(SECTION) + r"$(.*?)(?=^## )", text,
                  re.M | re.S)
    if m is None:
        raise AssertionError(f"README has no section {SECTION!r}")
    return re.findall(r"^```python\n(.*?)^```$", m.group(1), re.M | re.S)


class TestReadme(ProviderCase):
    """The README's programs, byte for byte, against the local server,
    its first request of each provider refused (retry-after: 1)."""
    CONF = ("[openai]\nlimit = 100 requests/s\nlimit = 100000 tokens/min\n"
            "concurrency = 4\n"
            "[anthropic]\nlimit = 100 requests/s\n"
            "limit = 100000 tokens/min\nconcurrency = 4\n")
    PROVIDER = {"inject": (1,), "retry_after": 1}

    def setUp(self):
        super().setUp()
        self.tokens0 = {p: self.granted(p, "tokens")
                        for p in tgprovider.PROVIDERS}

    def run_program(self, code, *args):
        d = tempfile.mkdtemp(prefix="tgpy-readme.")
        self.addCleanup(shutil.rmtree, d, ignore_errors=True)
        path = os.path.join(d, "program.py")
        with open(path, "w") as f:
            f.write(code)
        env = {k: v for k, v in os.environ.items()
               if not k.lower().endswith("_proxy")}
        # The SDKs, if at all, where this interpreter finds them.
        env.update(PYTHONPATH=os.pathsep.join([PACKAGE_DIR] + sys.path[1:]),
                   TOLLGATE_SEGMENT=self.b.segment,
                   OPENAI_BASE_URL=self.p.url + "/v1",
                   ANTHROPIC_BASE_URL=self.p.url,
                   OPENAI_API_KEY="sk-test", ANTHROPIC_API_KEY="sk-ant-test")
        return subprocess.run([sys.executable, path, *args], env=env,
                              capture_output=True, text=True, timeout=120)

    def check_settled(self, provider):
        """The 429's ticket kept its estimate, the others were settled to
        the usage the server said."""
        log = [e for e in self.p.log if e["provider"] == provider]
        self.assertEqual(log[0]["kind"], "injected")
        # A settle up is charged; one down refunds, but a limit's granted
        # count keeps what was taken.
        est = [tgx.estimate(e["body"], e["path"])["tokens"] for e in log]
        want = est[0] + sum(max(x, e["usage"]) for x, e in
                            zip(est[1:], log[1:]))
        self.assertEqual(self.granted(provider, "tokens") -
                         self.tokens0[provider], want)
        self.assertEqual(self.in_flight(provider), 0)
        return log, est

    def test_two_programs(self):
        self.assertEqual(len(readme_programs()), 2)

    def test_httpx_program(self):
        code = readme_programs()[1]
        p = self.run_program(code, "What is 2+2?", "Name a colour.",
                             "Say hello.")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, "3 answers\n")
        log, est = self.check_settled("openai")
        self.assertEqual([e["kind"] for e in log], ["injected"] + ["ok"] * 3)
        # Settled up: the usage is more than the estimate.
        self.assertLess(est[1], log[1]["usage"])
        # The refused one went again after the pause its 429 set.
        self.assertGreaterEqual(log[-1]["arrival"] - log[0]["arrival"],
                                0.99e9)
        c = self.p.counts("openai")
        print(f"\n  README httpx program: {c['requests']} requests, "
              f"{c['injected']} 429s, at most {c['max_in_flight']} in "
              "flight", end=" ")

    def test_sdk_program(self):
        missing = [m for m in ("openai", "anthropic")
                   if importlib.util.find_spec(m) is None]
        if missing:
            why = (f"{sys.executable} cannot import {' and '.join(missing)}"
                   " (not in Debian; pip install openai anthropic)")
            print(f"\n  README's SDK program skipped: {why}", end=" ")
            raise unittest.SkipTest(why)
        p = self.run_program(readme_programs()[0])
        self.assertEqual(p.returncode, 0, p.stderr)
        hello = "".join(tgprovider.WORDS)
        self.assertEqual(p.stdout, f"{hello} {hello}\n")
        for provider in tgprovider.PROVIDERS:
            log, _ = self.check_settled(provider)
            self.assertEqual([e["kind"] for e in log], ["injected", "ok"])
            self.assertGreaterEqual(log[1]["arrival"] - log[0]["arrival"],
                                    0.99e9)
        c = {p: self.p.counts(p) for p in tgprovider.PROVIDERS}
        print("\n  README SDK program: " + ", ".join(
            f"{p} {c[p]['requests']} requests, {c[p]['injected']} 429s"
            for p in c), end=" ")
