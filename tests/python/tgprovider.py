"""tgprovider: a local server that answers as the OpenAI and Anthropic
APIs do (chat completions, images, messages; JSON bodies and streams of
server-sent events, each with its provider's usage and rate-limit headers)
and holds the fleet to a provider's limits: per provider a bucket of
requests and a cap on requests in flight, refused with a 429 as the
provider refuses.  It answers 429 on a schedule too (the n-th request of a
provider), with each provider's headers and retry-after, and records
every request it saw.
"""
import datetime
import http.server
import itertools
import json
import threading
import time

PROVIDERS = ("openai", "anthropic")
EXTRA_PROMPT = 30       # tokens the server counts beyond our text
ANSWER = 12             # tokens of every answer (at most max_tokens)
WORDS = ["Hello", " from", " the", " local", " server", "."]


def provider_of(path):
    return "anthropic" if path.startswith("/v1/messages") else "openai"


class _State:
    """One provider's limits and counts.  Guarded by Provider.lock."""

    def __init__(self, rate, burst, concurrency, inject):
        self.rate, self.burst, self.concurrency = rate, burst, concurrency
        self.level, self.last = float(burst), time.monotonic()
        self.inject = set(inject)
        self.n = self.in_flight = self.max_in_flight = 0
        self.counts = {"requests": 0, "ok": 0, "injected": 0,
                       "over_rate": 0, "over_concurrency": 0, "refused": 0}

    def refill(self, now):
        self.level = min(self.burst, self.level + (now - self.last) *
                         self.rate)
        self.last = now

    def reset_s(self):
        """Seconds until the bucket is full."""
        return (self.burst - self.level) / self.rate


class Provider:
    """Provider(rate=8, burst=8, concurrency=3, inject=(10, 30)): serving
    on 127.0.0.1 in threads until close().  log: a dict per request."""

    def __init__(self, rate=8.0, burst=8, concurrency=3, inject=(),
                 retry_after=1, service=0.04, slow_chunks=40):
        self.lock = threading.Lock()
        self.state = {p: _State(rate, burst, concurrency, inject)
                      for p in PROVIDERS}
        self.retry_after, self.service = retry_after, service
        self.slow_chunks = slow_chunks
        self.log = []
        self.ids = itertools.count(1)
        handler = type("Handler", (_Handler,), {"provider": self})
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.srv.daemon_threads = True
        self.srv.block_on_close = False
        self.thread = threading.Thread(target=self.srv.serve_forever,
                                       daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.srv.server_port}"

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()

    def counts(self, p):
        with self.lock:
            s = self.state[p]
            return dict(s.counts, max_in_flight=s.max_in_flight,
                        in_flight=s.in_flight)

    def admit(self, p, entry):
        """The verdict on a request that just arrived: 200, or why 429."""
        with self.lock:
            s = self.state[p]
            now = time.monotonic()
            s.refill(now)
            s.n += 1
            s.counts["requests"] += 1
            entry["n"] = s.n
            if s.n in s.inject:
                kind = "injected"
            elif s.in_flight >= s.concurrency:
                kind = "over_concurrency"
            elif s.level < 1:
                kind = "over_rate"
            else:
                kind = "ok"
                s.level -= 1
                s.in_flight += 1
                s.max_in_flight = max(s.max_in_flight, s.in_flight)
            s.counts[kind] += 1
            entry["kind"] = kind
            self.log.append(entry)
            return kind

    def done(self, p):
        """The request's answer is going out: no longer in flight (before
        its last byte, which lets the client release its ticket)."""
        with self.lock:
            self.state[p].in_flight -= 1

    def limit_headers(self, p, tokens_out=False):
        """The provider's rate-limit headers, from its bucket now."""
        with self.lock:
            s = self.state[p]
            s.refill(time.monotonic())
            left, reset = int(s.level), s.reset_s()
        if p == "openai":
            h = [("x-ratelimit-limit-requests", str(s.burst)),
                 ("x-ratelimit-remaining-requests", str(left)),
                 ("x-ratelimit-reset-requests", f"{int(reset * 1000)}ms")]
            if tokens_out:
                h += [("x-ratelimit-limit-tokens", "1000000"),
                      ("x-ratelimit-remaining-tokens", "0"),
                      ("x-ratelimit-reset-tokens",
                       f"{self.retry_after}s")]
            return h

        def at(s):
            t = datetime.datetime.now(datetime.timezone.utc) + \
                datetime.timedelta(seconds=s)
            return t.strftime("%Y-%m-%dT%H:%M:%SZ")
        h = [("anthropic-ratelimit-requests-limit", str(s.burst)),
             ("anthropic-ratelimit-requests-remaining", str(left)),
             ("anthropic-ratelimit-requests-reset", at(reset))]
        if tokens_out:
            h += [("anthropic-ratelimit-tokens-limit", "1000000"),
                  ("anthropic-ratelimit-tokens-remaining", "0"),
                  ("anthropic-ratelimit-tokens-reset",
                   at(self.retry_after))]
        return h


def prompt_tokens(body):
    text = json.dumps([body.get("system"), body.get("messages"),
                       body.get("prompt")])
    return len(text) // 4 + EXTRA_PROMPT


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    provider = None     # the Provider, set by a subclass

    def log_message(self, *args):
        pass

    def do_POST(self):
        arrival = time.monotonic_ns()
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        path = self.path.split("?")[0]
        p = provider_of(path)
        prov = self.provider
        entry = {"provider": p, "path": path, "arrival": arrival,
                 "body": body, "usage": None,
                 "pid": int(self.headers.get("x-tg-pid", 0)),
                 "lq": int(self.headers.get("x-tg-lq-ns", 0)),
                 "sent": int(self.headers.get("x-tg-sent-ns", 0))}
        if p == "openai" and not self.headers.get("authorization"):
            return self.refuse(p, entry, 401, "invalid_api_key")
        if p == "anthropic" and not self.headers.get("x-api-key"):
            return self.refuse(p, entry, 401, "authentication_error")
        kind = prov.admit(p, entry)
        if kind != "ok":
            return self.limited(p, kind)
        try:
            time.sleep(prov.service)
            model = body.get("model", "")
            out = min(ANSWER, body.get("max_tokens") or ANSWER)
            inp = prompt_tokens(body)
            if path.startswith("/v1/images/"):
                n = body.get("n", 1)
                entry["usage"] = 50 + 4000 * n
                doc = {"created": int(time.time()),
                       "data": [{"b64_json": "aW1n"}] * n,
                       "usage": {"total_tokens": 50 + 4000 * n,
                                 "input_tokens": 50,
                                 "output_tokens": 4000 * n}}
            elif p == "anthropic" and body.get("stream"):
                entry["usage"] = inp + out
                return self.anthropic_stream(model, inp, out)
            elif p == "anthropic":
                entry["usage"] = inp + out
                doc = {"id": "msg_01", "type": "message",
                       "role": "assistant", "model": model,
                       "content": [{"type": "text",
                                    "text": "".join(WORDS)}],
                       "stop_reason": "end_turn", "stop_sequence": None,
                       "usage": {"input_tokens": inp,
                                 "output_tokens": out}}
            elif body.get("stream"):
                usage = (body.get("stream_options") or {}).get(
                    "include_usage")
                entry["usage"] = inp + out if usage else None
                return self.openai_stream(model, inp, out, usage)
            else:
                entry["usage"] = inp + out
                doc = {"id": "chatcmpl-1", "object": "chat.completion",
                       "created": int(time.time()), "model": model,
                       "choices": [{"index": 0, "message": {
                           "role": "assistant", "content": "".join(WORDS)},
                           "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": inp,
                                 "completion_tokens": out,
                                 "total_tokens": inp + out}}
            headers = prov.limit_headers(p)
        except BaseException:
            prov.done(p)
            raise
        prov.done(p)
        self.json(200, doc, headers)

    def json(self, status, doc, headers=()):
        data = json.dumps(doc).encode()
        self.send_response(status)
        for n, v in list(headers) + [("content-type", "application/json"),
                                     ("content-length", str(len(data)))]:
            self.send_header(n, v)
        self.end_headers()
        self.wfile.write(data)

    def refuse(self, p, entry, status, code):
        with self.provider.lock:
            self.provider.state[p].counts["refused"] += 1
            entry["kind"] = "refused"
            self.provider.log.append(entry)
        self.json(status, {"error": {"type": code, "message": code}})

    def limited(self, p, kind):
        prov = self.provider
        if p == "openai":
            doc = {"error": {"message": "Rate limit reached", "type":
                             "tokens" if kind == "injected" else "requests",
                             "code": "rate_limit_exceeded"}}
        else:
            doc = {"type": "error", "error": {"type": "rate_limit_error",
                                              "message": "Rate limited"}}
        headers = [("retry-after", str(prov.retry_after))] + \
            prov.limit_headers(p, tokens_out=kind == "injected")
        self.json(429, doc, headers)

    # Streams: chunked, an event per chunk; out of flight before the last.

    def start_stream(self, p):
        self.send_response(200)
        for n, v in self.provider.limit_headers(p) + [
                ("content-type", "text/event-stream"),
                ("cache-control", "no-cache"),
                ("transfer-encoding", "chunked")]:
            self.send_header(n, v)
        self.end_headers()

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def events(self, p, events):
        """Send events (bytes), the last one after leaving flight; a slow
        model's stream pauses between them, for a client to close early."""
        prov = self.provider
        slow = any(b"slow" in e for e in events[:1])
        flying = True
        try:
            self.start_stream(p)
            for i, e in enumerate(events):
                if i == len(events) - 1:
                    flying = False
                    prov.done(p)
                self.chunk(e)
                if slow and i < len(events) - 1:
                    time.sleep(0.05)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            if flying:
                prov.done(p)

    def openai_stream(self, model, inp, out, usage):
        words = WORDS * (self.provider.slow_chunks if "slow" in model else 1)
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model}
        extra = {"usage": None} if usage else {}
        ev = [dict(base, choices=[{"index": 0, "delta": {
            "role": "assistant", "content": ""}, "finish_reason": None}],
            **extra)]
        ev += [dict(base, choices=[{"index": 0, "delta": {"content": w},
                                    "finish_reason": None}], **extra)
               for w in words]
        ev += [dict(base, choices=[{"index": 0, "delta": {},
                                    "finish_reason": "stop"}], **extra)]
        if usage:
            ev += [dict(base, choices=[], usage={
                "prompt_tokens": inp, "completion_tokens": out,
                "total_tokens": inp + out})]
        data = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in ev]
        self.events("openai", data + [b"data: [DONE]\n\n"])

    def anthropic_stream(self, model, inp, out):
        words = WORDS * (self.provider.slow_chunks if "slow" in model else 1)

        def ev(name, doc):
            return (f"event: {name}\ndata: " + json.dumps(doc) +
                    "\n\n").encode()
        data = [ev("message_start", {"type": "message_start", "message": {
            "id": "msg_01", "type": "message", "role": "assistant",
            "content": [], "model": model, "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": inp, "output_tokens": 1}}}),
            ev("content_block_start", {"type": "content_block_start",
                                       "index": 0, "content_block": {
                                           "type": "text", "text": ""}}),
            ev("ping", {"type": "ping"})]
        data += [ev("content_block_delta", {
            "type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": w}}) for w in words]
        data += [ev("content_block_stop", {"type": "content_block_stop",
                                           "index": 0}),
                 ev("message_delta", {"type": "message_delta", "delta": {
                     "stop_reason": "end_turn", "stop_sequence": None},
                     "usage": {"output_tokens": out}}),
                 ev("message_stop", {"type": "message_stop"})]
        self.events("anthropic", data)
