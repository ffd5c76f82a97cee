"""tollgate.httpx: a ticket for every request an httpx client sends, and so
for the OpenAI and Anthropic SDKs, which send theirs through httpx.

    import httpx, tollgate.httpx

    route = [tollgate.httpx.Rule("openai/gpt-image-1",
                                 host="api.openai.com", model="gpt-image-1"),
             tollgate.httpx.Rule("openai", host="api.openai.com"),
             tollgate.httpx.Rule("anthropic", host="api.anthropic.com")]
    http = httpx.AsyncClient(transport=tollgate.httpx.AsyncTransport(route))
    client = openai.AsyncOpenAI(http_client=http, max_retries=0)

For each request the transport picks a key (route), takes a ticket for
what the request will cost (requests 1; images the JSON body's `n' on an
images endpoint; tokens estimated from the prompt's length and its
max_tokens, max_completion_tokens or max_output_tokens, halved until it
fits where it is more than a bucket holds), sends it through
the transport it wraps, observes the response for the whole host, and
hands the response back.  The ticket is settled to the response's `usage'
and released when its body ends (a JSON body, or a stream of server-sent
events at its end) or is closed, whichever comes first.  On advice RETRY
(a 429, a 5xx) it waits out the pause the response set for every process
and sends again, up to max_tries in all, then hands back the last
response; on GIVE_UP (401, other 4xx) it hands it back at once.

Turn the SDKs' own retries off (max_retries=0 on openai.OpenAI,
AsyncOpenAI, anthropic.Anthropic, AsyncAnthropic): they would sleep on a
backoff of their own, blind to the host's pause, and each of their tries
would come through here again for max_tries more.  What the transport
raises (tollgate.TimedOut when timeout is set, Unrouted, tollgate.Error)
reaches the SDK's caller as the SDK wraps transport errors
(APIConnectionError, with the error as its __cause__).
"""
import fnmatch
import itertools
import json
import math
import threading
import zlib
from typing import NamedTuple, Optional

# The HTTP package, not this module: imports are absolute in Python 3, and
# this file is tollgate.httpx, never a top-level httpx.
import httpx

import tollgate

__all__ = ["Transport", "AsyncTransport", "Rule", "Unrouted", "estimate",
           "usage_tokens", "CHARS_PER_TOKEN"]

# The usual rule of thumb for English text and both providers' tokenizers;
# the estimate is settled to the response's usage anyway.
CHARS_PER_TOKEN = 4

# Bytes of a JSON body kept to read its usage (a generated image's base64
# is a few MB); a larger body is passed on unread and keeps its estimate.
BODY_MAX = 64 << 20

# JSON members whose text the model reads, at any depth below the top.
_PROMPT = ("messages", "system", "input", "prompt", "instructions", "tools")
_MAX_OUT = ("max_tokens", "max_completion_tokens", "max_output_tokens")


class Rule(NamedTuple):
    """Requests to `host' (a glob, case-insensitive; None: any) whose URL
    path starts with `path' (None: any) and whose JSON body's "model"
    matches `model' (a glob; None: any, with a body or not) take tickets
    on `key'.  Rules are tried in order; the first that matches wins."""
    key: str
    host: Optional[str] = None
    path: Optional[str] = None
    model: Optional[str] = None

    def matches(self, request, body):
        if self.host is not None and not fnmatch.fnmatchcase(
                request.url.host.lower(), self.host.lower()):
            return False
        if self.path is not None and \
                not request.url.path.startswith(self.path):
            return False
        if self.model is not None:
            model = body.get("model") if isinstance(body, dict) else None
            if not isinstance(model, str) or \
                    not fnmatch.fnmatchcase(model, self.model):
                return False
        return True


class Unrouted(LookupError):
    """A request no rule matched, with unmatched="refuse": not sent."""


def _text_len(v):
    """Characters of prompt text in v; inline images (data: URLs, base64
    blocks) are not text."""
    if isinstance(v, str):
        return 0 if v.startswith("data:") else len(v)
    if isinstance(v, dict):
        if v.get("type") == "base64":
            return 0
        return sum(_text_len(x) for x in v.values())
    if isinstance(v, list):
        return sum(_text_len(x) for x in v)
    return 0


def estimate(body, path="/"):
    """What a request with this JSON body (a dict, or None) to this URL
    path is taken for: {"requests": 1, "tokens": prompt characters /
    CHARS_PER_TOKEN, rounded up, plus the most it may answer
    (max_tokens, max_completion_tokens or max_output_tokens), "images":
    the body's n (1 without it) on an /images/ endpoint, else 0}."""
    tokens = images = 0
    if isinstance(body, dict):
        chars = sum(_text_len(body[k]) for k in _PROMPT if k in body)
        tokens = math.ceil(chars / CHARS_PER_TOKEN)
        for k in _MAX_OUT:
            v = body.get(k)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                tokens += v
                break
    if "/images/" in path + "/":
        n = body.get("n") if isinstance(body, dict) else None
        images = n if isinstance(n, int) and not isinstance(n, bool) and \
            n > 0 else 1
    return {"requests": 1, "tokens": tokens, "images": images}


def usage_tokens(usage):
    """The tokens a response's usage object says the request used:
    OpenAI's total_tokens, else prompt + completion (OpenAI) or input +
    output (Anthropic, with the cache writes its input limits count too);
    None if it says nothing of tokens."""
    if not isinstance(usage, dict):
        return None

    def n(name):
        v = usage.get(name)
        return v if isinstance(v, int) and not isinstance(v, bool) and \
            v >= 0 else None

    if n("total_tokens") is not None:
        return n("total_tokens")
    parts = [n("prompt_tokens"), n("completion_tokens"), n("input_tokens"),
             n("output_tokens"), n("cache_creation_input_tokens")]
    if all(p is None for p in parts):
        return None
    return sum(p for p in parts if p is not None)


def _json_body(request):
    """The request's JSON body as Python data, or None; read already."""
    ctype = request.headers.get("content-type", "")
    if "json" not in ctype.lower():
        return None
    try:
        return json.loads(request.content)
    except (httpx.RequestNotRead, ValueError, UnicodeDecodeError):
        return None


def _wants_body(request):
    return "json" in request.headers.get("content-type", "").lower()


class _Meter:
    """Reads a response body as it passes by, for its usage: a JSON body
    whole (up to BODY_MAX), server-sent events one at a time.  Usage
    members of successive events add up as Anthropic sends them (input in
    message_start, output in message_delta); OpenAI's last chunk (with
    stream_options include_usage) and the Responses API's
    response.completed carry it whole."""

    def __init__(self, headers):
        ctype = headers.get("content-type", "").lower()
        self.sse = ctype.startswith("text/event-stream")
        self.json = not self.sse and "json" in ctype
        enc = headers.get("content-encoding", "").strip().lower()
        self.dec = None
        if enc in ("gzip", "x-gzip"):
            self.dec = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif enc == "deflate":
            self.dec = zlib.decompressobj()
        elif enc not in ("", "identity"):
            self.json = self.sse = False    # br, zstd: not read
        self.buf = bytearray()
        self.data = []          # the data lines of the event under way
        self.usage = {}
        self.final = False      # a usage past message_start was seen

    def feed(self, chunk):
        if not (self.json or self.sse):
            return
        try:
            if self.dec is not None:
                chunk = self.dec.decompress(chunk)
        except zlib.error:
            self.json = self.sse = False
            return
        self.buf += chunk
        if self.sse:
            self._lines()
        if len(self.buf) > BODY_MAX:
            self.json = self.sse = False
            self.buf = bytearray()

    def _lines(self):
        start = 0
        while (i := self.buf.find(b"\n", start)) >= 0:
            line = bytes(self.buf[start:i]).rstrip(b"\r")
            start = i + 1
            if not line:
                self._event()
            elif line.startswith(b"data:"):
                d = line[5:]
                self.data.append(d[1:] if d.startswith(b" ") else d)
        del self.buf[:start]

    def _event(self):
        data, self.data = b"\n".join(self.data), []
        try:
            obj = json.loads(data) if data.startswith(b"{") else None
        except (ValueError, UnicodeDecodeError):
            return
        if not isinstance(obj, dict):
            return
        for u in (obj.get("usage"), _member(obj, "response", "usage"),
                  _member(obj, "message", "usage")):
            if isinstance(u, dict):
                self.usage.update((k, v) for k, v in u.items()
                                  if isinstance(v, int))
                if obj.get("type") != "message_start":
                    self.final = True

    def tokens(self, complete):
        """The tokens to settle to: at the body's end what its usage says;
        closed before it, a final usage already seen, else None (the
        estimate stands)."""
        if complete and self.json:
            try:
                if self.dec is not None:
                    self.buf += self.dec.flush()
                obj = json.loads(self.buf)
            except (ValueError, UnicodeDecodeError, zlib.error):
                return None
            return usage_tokens(obj.get("usage")) if isinstance(obj, dict) \
                else None
        if complete and self.sse:
            if self.buf:
                self.buf += b"\n"
                self._lines()
            self._event()
        if self.usage and (complete or self.final):
            return usage_tokens(self.usage)
        return None


def _member(obj, *names):
    for n in names:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(n)
    return obj


class _Metered(httpx.SyncByteStream, httpx.AsyncByteStream):
    """The response's body, passed through: at its end the ticket is
    settled to the usage it carried and released; closed before the end,
    released (and settled only to a usage already complete).  httpx
    closes a response it read to the end; a stream the caller leaves
    early is closed by its `with' block or close() (the SDKs' Stream
    objects too), else its ticket is released when it is collected."""

    def __init__(self, stream, ticket, headers):
        self._stream, self._ticket = stream, ticket
        self._meter = _Meter(headers)

    def __iter__(self):
        for chunk in self._stream:
            self._meter.feed(chunk)
            yield chunk
        self._end(True)

    async def __aiter__(self):
        async for chunk in self._stream:
            self._meter.feed(chunk)
            yield chunk
        self._end(True)

    def close(self):
        try:
            self._stream.close()
        finally:
            self._end(False)

    async def aclose(self):
        try:
            await self._stream.aclose()
        finally:
            self._end(False)

    def _end(self, complete):
        t, self._ticket = self._ticket, None
        if t is None:
            return
        try:
            tokens = self._meter.tokens(complete)
            if tokens is not None:
                t.settle(tokens=tokens)
        except tollgate.Error:
            # A key a reload removed, a ticket of the parent: the
            # response is still the caller's, and closing must not fail.
            pass
        finally:
            t.release()


def _smaller(cost, err):
    """A token estimate larger than a bucket never fits (CostTooBig, at
    once, before any wait): half of it, to be settled up to the usage
    (the rest a debt later tickets wait out).  Images are counted, not
    estimated: too many is the caller's error."""
    if cost.get("tokens", 0) == 0:
        raise err
    return dict(cost, tokens=cost["tokens"] // 2)


def _router(route):
    """route as a function of (request, body) -> key name or None."""
    if route is None:
        return lambda request, body: None
    if isinstance(route, str):
        return lambda request, body: route
    if callable(route):
        return lambda request, body: route(request)
    rules = [r if isinstance(r, Rule) else
             Rule(**r) if isinstance(r, dict) else Rule(*r) for r in route]

    def first(request, body):
        for r in rules:
            if r.matches(request, body):
                return r.key
        return None
    return first


class _Gate:
    """What both transports share: routing, costs, the client."""

    def __init__(self, route, *, client, segment, unmatched, max_tries,
                 timeout, cost, observed):
        if unmatched not in ("pass", "refuse"):
            raise ValueError("unmatched is 'pass' or 'refuse'")
        if max_tries < 1:
            raise ValueError("max_tries is 1 or more")
        self._route = _router(route)
        self.unmatched, self.max_tries, self.timeout = unmatched, max_tries, \
            timeout
        self._cost, self._observed = cost, observed
        self._tg, self._own, self._segment = client, client is None, segment
        self._lock = threading.Lock()

    @property
    def client(self):
        """The tollgate.Client tickets come from: the one given, else one
        opened on first use ($TOLLGATE_SEGMENT, else "tollgate", or the
        segment given)."""
        if self._tg is None:
            with self._lock:
                if self._tg is None:
                    self._tg = tollgate.open(self._segment)
        return self._tg

    def _plan(self, request):
        """(key, cost) for the request, or None to pass it on untouched."""
        body = _json_body(request)
        key = self._route(request, body)
        if key is None:
            if self.unmatched == "refuse":
                raise Unrouted(f"no tollgate route for {request.method} "
                               f"{request.url}")
            return None
        cost = self._cost(request, body) if self._cost is not None else \
            estimate(body, request.url.path)
        return key, cost

    def _seen(self, request, response, advice, tries):
        if self._observed is not None:
            self._observed(request, response, advice, tries)

    def _hand_back(self, response, ticket, key, tries, advice):
        response.stream = _Metered(response.stream, ticket, response.headers)
        response.extensions = dict(response.extensions, tollgate={
            "key": key, "tries": tries, "advice": advice, "ticket": ticket})
        return response

    def _close_client(self):
        """Close the client this transport opened; one given stays."""
        if self._own:
            tg, self._tg = self._tg, None
            if tg is not None:
                tg.close()


class Transport(_Gate, httpx.BaseTransport):
    """httpx.Client(transport=tollgate.httpx.Transport(route, ...)).

    route: a key name for every request; a function of the httpx.Request
    returning a key name or None (the request's JSON body is read:
    json.loads(request.content)); or a list of Rule (or of their fields
    as tuples or dicts), the first match's key.
    transport: the httpx transport to send through (default
    httpx.HTTPTransport()); closed with this one.
    client: a tollgate.Client (default: one opened on first use, on
    segment, and closed with the transport).
    unmatched: "pass" sends a request no route matched untouched,
    "refuse" raises Unrouted.
    max_tries: tries in all while the advice is RETRY.
    timeout: seconds to wait for a ticket (None: as long as it takes);
    tollgate.TimedOut past it.
    cost: a function of (request, body) returning the dict of requests,
    tokens and images to take, instead of estimate(body, path).
    observed: called with (request, response, advice, tries) after each
    response is observed, before any retry.
    A response that took a ticket has extensions["tollgate"]: its key
    name, tries, advice and ticket (whose cost says what it was settled
    to)."""

    def __init__(self, route, *, transport=None, client=None, segment=None,
                 unmatched="pass", max_tries=5, timeout=None, cost=None,
                 observed=None):
        super().__init__(route, client=client, segment=segment,
                         unmatched=unmatched, max_tries=max_tries,
                         timeout=timeout, cost=cost, observed=observed)
        self._inner = transport if transport is not None else \
            httpx.HTTPTransport()

    def handle_request(self, request):
        if _wants_body(request):
            request.read()
        plan = self._plan(request)
        if plan is None:
            return self._inner.handle_request(request)
        key, cost = plan
        tg = self.client
        for tries in itertools.count(1):
            while True:
                try:
                    t = tg.acquire(key, timeout=self.timeout, **cost)
                    break
                except tollgate.CostTooBig as e:
                    cost = _smaller(cost, e)
            try:
                response = self._inner.handle_request(request)
            except BaseException:
                t.release()
                raise
            try:
                advice = t.observe(response.status_code, response.headers)
                self._seen(request, response, advice, tries)
            except BaseException:
                response.close()
                t.release()
                raise
            if advice is tollgate.Advice.RETRY and tries < self.max_tries:
                try:
                    response.read()     # so the connection is kept
                except httpx.HTTPError:
                    pass
                finally:
                    response.close()
                    t.release()
                continue
            return self._hand_back(response, t, key, tries, advice)

    def close(self):
        try:
            self._inner.close()
        finally:
            self._close_client()


class AsyncTransport(_Gate, httpx.AsyncBaseTransport):
    """httpx.AsyncClient(transport=tollgate.httpx.AsyncTransport(route,
    ...)): Transport for asyncio, waiting on aacquire (the event loop is
    never blocked).  transport defaults to httpx.AsyncHTTPTransport();
    the rest is as Transport's."""

    def __init__(self, route, *, transport=None, client=None, segment=None,
                 unmatched="pass", max_tries=5, timeout=None, cost=None,
                 observed=None):
        super().__init__(route, client=client, segment=segment,
                         unmatched=unmatched, max_tries=max_tries,
                         timeout=timeout, cost=cost, observed=observed)
        self._inner = transport if transport is not None else \
            httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request):
        if _wants_body(request):
            await request.aread()
        plan = self._plan(request)
        if plan is None:
            return await self._inner.handle_async_request(request)
        key, cost = plan
        tg = self.client
        for tries in itertools.count(1):
            while True:
                try:
                    t = await tg.aacquire(key, timeout=self.timeout, **cost)
                    break
                except tollgate.CostTooBig as e:
                    cost = _smaller(cost, e)
            try:
                response = await self._inner.handle_async_request(request)
            except BaseException:
                t.release()
                raise
            try:
                # Before any other coroutine runs: a 429 pauses the host
                # before this process sends anything more.
                advice = t.observe(response.status_code, response.headers)
                self._seen(request, response, advice, tries)
            except BaseException:
                await response.aclose()
                t.release()
                raise
            if advice is tollgate.Advice.RETRY and tries < self.max_tries:
                try:
                    await response.aread()
                except httpx.HTTPError:
                    pass
                finally:
                    await response.aclose()
                    t.release()
                continue
            return self._hand_back(response, t, key, tries, advice)

    async def aclose(self):
        try:
            await self._inner.aclose()
        finally:
            self._close_client()
