'use strict';
/*
 * fakeapi: a local HTTP server in the shapes of OpenAI's and Anthropic's
 * APIs, enforcing limits of its own the way the providers do, so a test
 * sees what a real fleet would cause:
 *   POST /v1/chat/completions   OpenAI chat, JSON or SSE (stream: true;
 *                               usage in the stream only when asked with
 *                               stream_options.include_usage, as OpenAI)
 *   POST /v1/images/generations OpenAI images, n of them
 *   POST /v1/messages           Anthropic messages, JSON or SSE
 * Each provider has a request bucket (rate/s, burst) and images one; a
 * request over either gets a 429 with that provider's headers, and one
 * over `cap' in flight gets one too.  inject429[provider] = k answers the
 * k-th request of that provider 429 (retry-after: 1) whatever the
 * buckets say.  Everything seen is counted in `stats'.
 */
const http = require('http');

class Bucket {
	constructor(rate, burst) {
		this.rate = rate;
		this.burst = burst;
		this.level = burst;
		this.at = process.hrtime.bigint();
	}

	take(n) {
		const now = process.hrtime.bigint();
		this.level = Math.min(this.burst, this.level +
		    Number(now - this.at) / 1e9 * this.rate);
		this.at = now;
		if (this.level + 1e-9 < n)
			return false;
		this.level -= n;
		return true;
	}
}

const PROVIDER = { '/v1/chat/completions': 'openai',
    '/v1/images/generations': 'openai', '/v1/messages': 'anthropic' };

function makeServer({ rate, burst, imageRate, imageBurst, cap,
    inject429 = {}, delayMs = 40 }) {
	const buckets = {
		openai: new Bucket(rate, burst),
		anthropic: new Bucket(rate, burst),
		images: new Bucket(imageRate, imageBurst),
	};
	const side = () => ({ requests: 0, ok: 0, limited: 0, injected: 0,
	    overCap: 0, inFlight: 0, maxInFlight: 0, tokens: 0, images: 0,
	    streams: 0 });
	const stats = { openai: side(), anthropic: side(), arrivals: [] };

	function refuse(res, provider, why) {
		const h = { 'content-type': 'application/json',
		    'retry-after': '1' };
		if (provider === 'openai') {
			Object.assign(h, { 'x-ratelimit-limit-requests': String(rate),
			    'x-ratelimit-remaining-requests': '0',
			    'x-ratelimit-reset-requests': '1s' });
			res.writeHead(429, h);
			res.end(JSON.stringify({ error: { message: why,
			    type: 'requests', code: 'rate_limit_exceeded' } }));
		} else {
			Object.assign(h, {
			    'anthropic-ratelimit-requests-limit': String(rate),
			    'anthropic-ratelimit-requests-remaining': '0',
			    'anthropic-ratelimit-requests-reset':
			    new Date(Date.now() + 1000).toISOString() });
			res.writeHead(429, h);
			res.end(JSON.stringify({ type: 'error', error: {
			    type: 'rate_limit_error', message: why } }));
		}
	}

	function sse(res, provider, events) {
		res.writeHead(200, { 'content-type': 'text/event-stream',
		    'cache-control': 'no-cache' });
		stats[provider].streams++;
		let i = 0;
		const next = () => {
			if (i === events.length) {
				res.end();
				return;
			}
			const [name, data] = events[i++];
			res.write((name ? `event: ${name}\n` : '') +
			    `data: ${typeof data === 'string' ? data :
			    JSON.stringify(data)}\n\n`);
			setTimeout(next, 5);
		};
		next();
	}

	function answer(req, res, provider, body, n) {
		const model = body.model || 'unknown';
		const input = 10 + (n % 7), output = 20 + (n % 5);
		if (req.url === '/v1/images/generations') {
			const k = Number.isSafeInteger(body.n) ? body.n : 1;
			stats.openai.images += k;
			res.writeHead(200, { 'content-type': 'application/json' });
			res.end(JSON.stringify({ created: 1, data: Array.from(
			    { length: k }, () => ({ b64_json: 'aW1hZ2U=' })),
			    usage: { input_tokens: input, output_tokens: 0,
			    total_tokens: input } }));
			return;
		}
		stats[provider].tokens += input + output;
		if (provider === 'openai') {
			const base = { id: `chatcmpl-${n}`, created: 1, model };
			const usage = { prompt_tokens: input,
			    completion_tokens: output,
			    total_tokens: input + output };
			if (!body.stream) {
				res.writeHead(200, { 'content-type': 'application/json',
				    'x-ratelimit-limit-requests': String(rate) });
				res.end(JSON.stringify({ ...base,
				    object: 'chat.completion', choices: [{ index: 0,
				    message: { role: 'assistant', content: 'Fastnet',
				    refusal: null }, logprobs: null,
				    finish_reason: 'stop' }], usage }));
				return;
			}
			const chunk = (delta, finish) => ['', { ...base,
			    object: 'chat.completion.chunk', choices: [{ index: 0,
			    delta, logprobs: null, finish_reason: finish }] }];
			const ev = [chunk({ role: 'assistant', content: 'Fast' }, null),
			    chunk({ content: 'net' }, null), chunk({}, 'stop')];
			if (body.stream_options && body.stream_options.include_usage)
				ev.push(['', { ...base, object: 'chat.completion.chunk',
				    choices: [], usage }]);
			else
				stats[provider].tokens -= input + output; /* unseen */
			ev.push(['', '[DONE]']);
			sse(res, provider, ev);
			return;
		}
		const msg = { id: `msg_${n}`, type: 'message', role: 'assistant',
		    model, stop_sequence: null };
		if (!body.stream) {
			res.writeHead(200, { 'content-type': 'application/json',
			    'anthropic-ratelimit-requests-limit': String(rate) });
			res.end(JSON.stringify({ ...msg, content: [{ type: 'text',
			    text: 'Fastnet' }], stop_reason: 'end_turn',
			    usage: { input_tokens: input, output_tokens: output } }));
			return;
		}
		sse(res, provider, [
			['message_start', { type: 'message_start', message: {
			    ...msg, content: [], stop_reason: null, usage: {
			    input_tokens: input, output_tokens: 1 } } }],
			['content_block_start', { type: 'content_block_start',
			    index: 0, content_block: { type: 'text', text: '' } }],
			['content_block_delta', { type: 'content_block_delta',
			    index: 0, delta: { type: 'text_delta', text: 'Fast' } }],
			['content_block_delta', { type: 'content_block_delta',
			    index: 0, delta: { type: 'text_delta', text: 'net' } }],
			['content_block_stop', { type: 'content_block_stop',
			    index: 0 }],
			['message_delta', { type: 'message_delta', delta: {
			    stop_reason: 'end_turn', stop_sequence: null },
			    usage: { output_tokens: output } }],
			['message_stop', { type: 'message_stop' }],
		]);
	}

	const server = http.createServer((req, res) => {
		const provider = PROVIDER[req.url];
		let raw = '';
		req.on('data', (c) => raw += c);
		req.on('end', () => {
			if (!provider || req.method !== 'POST') {
				res.writeHead(404).end();
				return;
			}
			const st = stats[provider];
			const n = ++st.requests;
			stats.arrivals.push({ t: Number(process.hrtime.bigint()) /
			    1e6, provider, worker: req.headers['x-worker'] || '',
			    n });
			st.inFlight++;
			st.maxInFlight = Math.max(st.maxInFlight, st.inFlight);
			let done = false;
			const end = () => {
				if (!done) {
					done = true;
					st.inFlight--;
				}
			};
			res.on('finish', end);
			res.on('close', end);
			let body = {};
			try {
				body = JSON.parse(raw);
			} catch (e) {
				/* not JSON */
			}
			if (inject429[provider] === n) {
				st.injected++;
				stats.arrivals[stats.arrivals.length - 1].injected = true;
				refuse(res, provider, 'injected');
				return;
			}
			const images = req.url === '/v1/images/generations' ?
			    (Number.isSafeInteger(body.n) ? body.n : 1) : 0;
			if (st.inFlight > cap) {
				st.overCap++;
				st.limited++;
				refuse(res, provider, 'too many in flight');
				return;
			}
			if (!buckets[provider].take(1) ||
			    (images && !buckets.images.take(images))) {
				st.limited++;
				refuse(res, provider, 'over the rate');
				return;
			}
			st.ok++;
			setTimeout(() => answer(req, res, provider, body, n),
			    delayMs);
		});
	});
	return { server, stats };
}

module.exports = { makeServer };
