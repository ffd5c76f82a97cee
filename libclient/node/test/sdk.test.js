'use strict';
/*
 * The real openai and @anthropic-ai/sdk packages in 4 Node processes at
 * once, each request through tollgate.fetch, against a local server that
 * enforces the providers' limits: the server never refuses a request for
 * its rate or for too many in flight, the one 429 it injects per provider
 * pauses every process, and the tokens charged are those the responses'
 * usage reported, streamed or not.
 */
const test = require('node:test');
const assert = require('node:assert');
const { execFile } = require('child_process');
const path = require('path');
const { broker } = require('./broker');
const { makeServer } = require('./fakeapi');
const { estimate } = require('../lib/fetch');

const PROCS = 4, ROUNDS = 3, CAP = 3;
const TOKENS_PER_DAY = 1000000;
const CONF = `[openai]
limit = 16 requests/s burst 2
limit = ${TOKENS_PER_DAY} tokens/day
concurrency = ${CAP}
rejected = free

[openai/gpt-image-1]
limit = 4 images/s burst 2

[anthropic]
limit = 16 requests/s burst 2
limit = ${TOKENS_PER_DAY} tokens/day
concurrency = ${CAP}
rejected = free
`;

function run(args) {
	return new Promise((resolve) => {
		execFile(process.execPath, [path.join(__dirname, 'sdk-worker.js'),
		    ...args], { timeout: 120000 }, (err, stdout, stderr) =>
		    resolve({ err, stdout, stderr }));
	});
}

test('4 processes with the real SDKs share the limits', async (t) => {
	const b = await broker(t, CONF);
	if (b === null)
		return;
	t.after(() => b.stop());
	// The server allows more than tollgate's config: what it refuses, the
	// fleet sent over the limit.
	const { server, stats } = makeServer({ rate: 20, burst: 4,
	    imageRate: 6, imageBurst: 4, cap: CAP,
	    inject429: { openai: 6, anthropic: 6 } });
	await new Promise((r) => server.listen(0, '127.0.0.1', r));
	t.after(() => server.close());
	const base = `http://127.0.0.1:${server.address().port}`;

	const t0 = Date.now();
	const results = await Promise.all(Array.from({ length: PROCS },
	    (_, i) => run([b.segment, base, `w${i}`, String(ROUNDS)])));
	const elapsed = (Date.now() - t0) / 1000;
	for (const r of results)
		assert.ifError(r.err && new Error(`${r.err.message}\n${r.stderr}`));
	const seen = results.map((r) => JSON.parse(r.stdout));
	for (const s of seen) {
		assert.deepStrictEqual(s.errors, []);
		assert.deepStrictEqual(s.text, ['Fastnet']);
		assert.strictEqual(s.chat, ROUNDS);
		assert.strictEqual(s.messages, ROUNDS);
		assert.strictEqual(s.streamed, 2 * ROUNDS);
		assert.strictEqual(s.images, 2 * Math.ceil(ROUNDS / 2));
	}

	const st = b.stat();
	t.diagnostic(`config generation ${st.config.generation}, broker repairs ${st.broker.repairs}`);
	for (const p of ['openai', 'anthropic']) {
		const s = stats[p];
		t.diagnostic(`server ${p}: ${s.requests} requests, ` +
		    `${s.injected + s.limited} 429s (${s.injected} injected, ` +
		    `${s.limited} over its limits), max ${s.maxInFlight} in flight ` +
		    `(cap ${CAP}), ${s.streams} streamed, ${s.tokens} tokens used` +
		    (p === 'openai' ? `, ${s.images} images` : ''));
		// The limits held server-side.
		assert.strictEqual(s.limited, 0, `${p}: refused over its limits`);
		assert.strictEqual(s.overCap, 0);
		assert.ok(s.maxInFlight <= CAP);
		assert.ok(s.maxInFlight > 1, `${p}: never concurrent`);
		assert.strictEqual(s.injected, 1);

		// The 429 paused every process: within 0.9 s of it only the
		// requests already in flight (CAP - 1 at most) reached the
		// server; the pause was 1 s (retry-after) from the observe.
		const a = stats.arrivals.filter((x) => x.provider === p);
		const hit = a.find((x) => x.injected);
		const after = a.filter((x) => x.t > hit.t);
		const during = after.filter((x) => x.t <= hit.t + 900);
		t.diagnostic(`${p} 429 from ${hit.worker}: then ` +
		    after.slice(0, CAP + 1).map((x) =>
		    `+${Math.round(x.t - hit.t)} ms (${x.worker})`).join(', '));
		assert.ok(during.length <= CAP - 1, `${p}: ${during.length} ` +
		    'requests during the pause');
		const resumed = new Set(after.filter((x) => x.t > hit.t + 900)
		    .map((x) => x.worker));
		assert.ok(resumed.size >= 2, `${p}: resumed by ${[...resumed]}`);

		// Tokens: what the responses' usage said, not the estimates
		// (505 each: 500 output tokens and the prompt's 5), less what
		// the bucket refilled.  A ticket that a 429 sent back in line
		// unsent (tg_acquire in the waiter thread, tg_ready after a
		// reservation's sleep) gives its estimate back; before, each
		// such ticket stayed charged (one estimate now and then, 8
		// once tg_ready sent reservations back too).  One is still
		// tolerated and printed, for a charge that the clock drained
		// before it came back; a binding that did not settle would be
		// 24 estimates over.
		const key = st.keys.find((k) => k.name === p);
		const tok = key.limits.find((l) => l.unit === 'tokens');
		const used = tok.burst - tok.available;
		const refill = TOKENS_PER_DAY / 86400 * (elapsed + 1);
		const est = estimate({ url: new URL(`${base}/v1/messages`), body: {
		    max_tokens: 500, messages: [{ role: 'user',
		    content: 'Name a lighthouse.' }] } }, {}).tokens;
		const extra = used > s.tokens ? used - s.tokens : 0;
		t.diagnostic(`${p} tokens: server reported ${s.tokens}, ` +
		    `tollgate charged ${used} (+ <= ${Math.ceil(refill)} ` +
		    `refilled)` + (extra > 0 ? `; ${extra} more than used ` +
		    `(one estimate is ${est})` : ''));
		assert.ok(used <= s.tokens + est && used >= s.tokens - refill,
		    `${p}: charged ${used}, used ${s.tokens}`);
		// On the key or its child (an image request's 429).
		assert.strictEqual(st.keys.filter((k) => k.name === p ||
		    k.name.startsWith(`${p}/`)).reduce((n, k) =>
		    n + k.status.limited, 0), 1);
		const conc = key.limits.find((l) => l.kind === 'concurrency');
		assert.strictEqual(conc.in_flight, 0);
	}
});
