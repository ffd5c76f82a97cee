'use strict';
/*
 * tollgate.fetch(options): a fetch that takes a ticket for each request,
 * sends it through the fetch it wraps, observes the response for the
 * whole host, settles tokens from the response's usage and releases when
 * the body has been read.  For `new OpenAI({ fetch, maxRetries: 0 })' and
 * `new Anthropic({ fetch, maxRetries: 0 })': the SDKs' own retries would
 * send again without a ticket, on their own clock, so they are turned off
 * and this one retries on the host's advice instead.
 *
 * options:
 *   client     a tollgate Client (default: tollgate.open(segment))
 *   segment    the segment to open when no client is given
 *   key        one key for every request, or a function(request) -> key
 *              name (or null: not ours), request = { url, method,
 *              headers, body: the parsed JSON body or null }
 *   rules      [{ host, path, model, key }]: the first rule whose given
 *              fields match names the key; host and model match exactly
 *              (host with or without the port), path as a prefix, or a
 *              RegExp or a function(value) each
 *   unmatched  'pass' (default: sent untouched, no ticket) or 'refuse'
 *              (the call rejects, code ENOENT)
 *   cost       function(request) -> { requests, tokens, images } to
 *              replace the estimate below
 *   tries      sends at most, RETRY advice sending again (default 3);
 *              the last response goes to the caller whatever it is
 *   timeout    ms to wait for each ticket (default: forever); the
 *              request's own signal aborts a wait too
 *   fetch      the fetch to wrap (default: globalThis.fetch)
 *   outputTokens  the estimate of output tokens when the request names
 *              no maximum (default 1024)
 *   streamUsage   ask OpenAI's chat completions for usage in a stream
 *              (stream_options.include_usage), to settle it (default true)
 *
 * The estimate: requests 1; images the JSON body's n (default 1) on an
 * images path; tokens a quarter of the prompt's characters (messages,
 * input, prompt, system) plus max_tokens, max_completion_tokens or
 * max_output_tokens (else outputTokens).  After the response: OpenAI's
 * usage.total_tokens, or Anthropic's input_tokens + output_tokens, is
 * settled, for a streamed (server-sent events) response when the stream
 * ends.
 */
const tollgate = require('..');

const IMAGES = /\/images\/(generations|edits|variations)\b/;

function matches(want, value) {
	if (want === undefined)
		return true;
	if (value === undefined || value === null)
		return false;
	if (want instanceof RegExp)
		return want.test(value);
	if (typeof want === 'function')
		return Boolean(want(value));
	return false;
}

function ruleMatches(rule, req) {
	const host = rule.host;
	if (host !== undefined && !(typeof host === 'string' ?
	    host === req.url.host || host === req.url.hostname :
	    matches(host, req.url.host)))
		return false;
	if (rule.path !== undefined && !(typeof rule.path === 'string' ?
	    req.url.pathname.startsWith(rule.path) :
	    matches(rule.path, req.url.pathname)))
		return false;
	const model = req.body && typeof req.body.model === 'string' ?
	    req.body.model : undefined;
	if (rule.model !== undefined && !(typeof rule.model === 'string' ?
	    rule.model === model : matches(rule.model, model)))
		return false;
	return true;
}

function router(options) {
	if (typeof options.key === 'function')
		return options.key;
	if (typeof options.key === 'string')
		return () => options.key;
	const rules = options.rules || [];
	return (req) => {
		for (const r of rules)
			if (ruleMatches(r, req))
				return typeof r.key === 'function' ? r.key(req) : r.key;
		return null;
	};
}

function text(v) {
	if (typeof v === 'string')
		return v.length;
	if (Array.isArray(v))
		return v.reduce((n, x) => n + text(x), 0);
	if (v && typeof v === 'object') {
		let n = 0;
		for (const k of ['content', 'text', 'input', 'prompt'])
			if (k in v)
				n += text(v[k]);
		return n;
	}
	return 0;
}

function estimate(req, options) {
	const b = req.body || {};
	const cost = { requests: 1, tokens: 0, images: 0 };
	if (IMAGES.test(req.url.pathname)) {
		cost.images = Number.isSafeInteger(b.n) && b.n > 0 ? b.n : 1;
		return cost;
	}
	if (!req.body)
		return cost;
	const chars = text(b.messages) + text(b.input) + text(b.prompt) +
	    text(b.system);
	const out = b.max_tokens ?? b.max_completion_tokens ??
	    b.max_output_tokens ?? options.outputTokens ?? 1024;
	cost.tokens = Math.ceil(chars / 4) + (Number.isSafeInteger(out) ?
	    out : 0);
	return cost;
}

/* What a JSON body (or one SSE event) says was used, merged into u. */
function usageOf(obj, u) {
	if (!obj || typeof obj !== 'object')
		return;
	for (const us of [obj.usage, obj.message && obj.message.usage,
	    obj.response && obj.response.usage]) {
		if (!us || typeof us !== 'object')
			continue;
		if (Number.isSafeInteger(us.total_tokens))
			u.total = us.total_tokens;
		// Anthropic: message_start has the input, message_delta the
		// output so far (cumulative).
		if (Number.isSafeInteger(us.input_tokens))
			u.input = us.input_tokens;
		if (Number.isSafeInteger(us.output_tokens))
			u.output = us.output_tokens;
	}
}

function usedTokens(u) {
	if (u.total !== undefined)
		return u.total;
	if (u.input !== undefined || u.output !== undefined)
		return (u.input || 0) + (u.output || 0);
	return undefined;
}

/* The request as the SDKs hand it over: (url, init) or a Request. */
async function describe(input, init) {
	let url, method, headers, body;
	if (typeof Request !== 'undefined' && input instanceof Request) {
		url = input.url;
		method = init.method || input.method;
		headers = new Headers(init.headers || input.headers);
		body = init.body;
		if (body === undefined && method !== 'GET' && method !== 'HEAD')
			body = await input.clone().text();
	} else {
		url = String(input instanceof URL ? input.href : input);
		method = init.method || 'GET';
		headers = new Headers(init.headers || {});
		body = init.body;
	}
	let json = null;
	const raw = typeof body === 'string' ? body :
	    body instanceof Uint8Array ? Buffer.from(body).toString() : null;
	if (raw !== null) {
		try {
			json = JSON.parse(raw);
		} catch (e) {
			json = null;
		}
	}
	// A stream cannot be sent twice.
	const resendable = body === undefined || body === null ||
	    typeof body === 'string' || body instanceof Uint8Array ||
	    body instanceof ArrayBuffer || body instanceof URLSearchParams ||
	    (typeof Blob !== 'undefined' && body instanceof Blob) ||
	    (typeof FormData !== 'undefined' && body instanceof FormData);
	return { url: new URL(url), method: method.toUpperCase(), headers,
	    body: json, raw, resendable };
}

/*
 * The response, its body passed through as it is read: SSE events or the
 * JSON body are read for usage, settled at the end, and the ticket
 * released then (or when the body is cancelled or fails).
 */
function watch(res, t, settleTokens) {
	if (res.body === null) {
		t.release();
		return res;
	}
	const type = res.headers.get('content-type') || '';
	const sse = type.includes('text/event-stream');
	const json = !sse && type.includes('json');
	const decoder = new TextDecoder();
	const u = {};
	let buf = '', kept = '', over = false, done = false;
	const LIMIT = 8 << 20;
	const finish = () => {
		if (done)
			return;
		done = true;
		try {
			if (settleTokens) {
				if (json && !over) {
					try {
						usageOf(JSON.parse(kept), u);
					} catch (e) {
						/* not JSON after all */
					}
				}
				const n = usedTokens(u);
				if (n !== undefined)
					t.settle({ tokens: n });
			}
		} finally {
			t.release();
		}
	};
	const event = (line) => {
		if (!line.startsWith('data:'))
			return;
		const data = line.slice(5).trim();
		if (data === '' || data === '[DONE]')
			return;
		try {
			usageOf(JSON.parse(data), u);
		} catch (e) {
			/* a data line of another kind */
		}
	};
	const inspect = (chunk) => {
		if (!settleTokens || !(sse || json))
			return;
		const s = decoder.decode(chunk, { stream: true });
		if (json) {
			if (kept.length + s.length > LIMIT)
				over = true;
			else
				kept += s;
			return;
		}
		buf += s;
		let i;
		while ((i = buf.indexOf('\n')) >= 0) {
			event(buf.slice(0, i).replace(/\r$/, ''));
			buf = buf.slice(i + 1);
		}
	};
	// Read through, so that the end, a cancel or an error all end the
	// request: settle and release.
	const reader = res.body.getReader();
	const body = new ReadableStream({
		async pull(ctl) {
			let r;
			try {
				r = await reader.read();
			} catch (e) {
				finish();
				ctl.error(e);
				return;
			}
			if (r.done) {
				if (sse && buf)
					event(buf.replace(/\r$/, ''));
				finish();
				ctl.close();
				return;
			}
			inspect(r.value);
			ctl.enqueue(r.value);
		},
		cancel(why) {
			finish();
			return reader.cancel(why);
		},
	});
	const out = new Response(body, { status: res.status,
	    statusText: res.statusText, headers: res.headers });
	Object.defineProperty(out, 'url', { value: res.url });
	Object.defineProperty(out, 'redirected', { value: res.redirected });
	return out;
}

function tollgateFetch(options = {}) {
	const base = options.fetch || globalThis.fetch;
	if (typeof base !== 'function')
		throw new TypeError('tollgate.fetch: no fetch to wrap');
	let client = options.client || null;
	const route = router(options);
	const tries = Math.max(1, options.tries ?? 3);
	const unmatched = options.unmatched || 'pass';
	const streamUsage = options.streamUsage ?? true;

	return async function fetch(input, init = {}) {
		const req = await describe(input, init);
		if (typeof Request !== 'undefined' && input instanceof Request) {
			// Sent again on RETRY: a Request's body reads only once.
			init = { method: req.method, headers: req.headers,
			    body: req.raw ?? init.body, signal: input.signal,
			    ...init };
			input = req.url.href;
		}
		const name = route(req);
		if (name === null || name === undefined || name === false) {
			if (unmatched === 'refuse') {
				const e = new tollgate.TollgateError(-2,
				    `${req.method} ${req.url.href}`,
				    'no tollgate rule matches the request');
				throw e;
			}
			return base(input, init);
		}
		if (client === null)
			client = tollgate.open(options.segment);
		const cost = options.cost ? options.cost(req) :
		    estimate(req, options);
		const settleTokens = (cost.tokens ?? 0) > 0;
		if (streamUsage && req.body && req.body.stream === true &&
		    req.url.pathname.endsWith('/chat/completions') &&
		    req.body.stream_options === undefined) {
			req.body.stream_options = { include_usage: true };
			init = { ...init, body: JSON.stringify(req.body) };
		}
		const signal = init.signal || undefined;
		for (let n = 1; ; n++) {
			const t = await client.ticket(name, cost,
			    { timeout: options.timeout, signal });
			let res;
			try {
				res = await base(input, init);
			} catch (e) {
				t.release();
				throw e;
			}
			let advice;
			try {
				advice = t.observe(res.status, res.headers);
			} catch (e) {
				t.release();
				throw e;
			}
			if (advice === tollgate.Advice.RETRY && n < tries &&
			    req.resendable) {
				t.release();
				// Read the refusal out, so the connection is reused.
				await res.arrayBuffer().catch(() => {});
				continue;
			}
			if (advice !== tollgate.Advice.OK) {
				t.release();
				return res;
			}
			return watch(res, t, settleTokens);
		}
	};
}

module.exports = { tollgateFetch, estimate, usageOf, usedTokens };
