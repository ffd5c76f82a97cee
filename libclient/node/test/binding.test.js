'use strict';
/*
 * The binding on a real broker: errors with their errno names, waits
 * that leave the event loop running (a rate limit on a timer, a
 * concurrency limit in a worker thread), timeouts and aborts that leave
 * nothing held, observe, settle and stat.
 */
const test = require('node:test');
const assert = require('node:assert');
const tollgate = require('..');
const { broker } = require('./broker');

const CONF = `[rate]
limit = 10 requests/s burst 1

[pool]
concurrency = 1

[tokens]
limit = 100000 tokens/day

[paused]
limit = 1000 requests/min
`;

/* Counts the event loop's turns while p runs: a blocked loop counts none. */
async function ticking(p) {
	let ticks = 0;
	const iv = setInterval(() => ticks++, 5);
	try {
		return { value: await p, ticks };
	} finally {
		clearInterval(iv);
	}
}

test('the binding', async (t) => {
	const b = await broker(t, CONF);
	if (b === null)
		return;
	const tg = tollgate.open(b.segment);
	t.after(async () => {
		await tg.close();
		await b.stop();
	});

	await t.test('errors carry the errno name', () => {
		assert.throws(() => tollgate.open(`${b.segment}-none`),
		    (e) => e instanceof tollgate.TollgateError &&
		    e.code === 'ENOENT' && e.errno === -2 &&
		    /no broker publishes/.test(e.message));
		assert.throws(() => tg.key('none'), { code: 'ENOENT',
		    message: /no such key: none/ });
		assert.throws(() => tg.tryTicket('rate', { requests: 5 }),
		    { code: 'E2BIG' });
		assert.throws(() => tg.tryTicket('rate', { tokens: -1 }),
		    { code: 'EINVAL' });
		assert.throws(() => tg.tryTicket('rate', { tokens: 1.5 }),
		    { code: 'EINVAL' });
		assert.strictEqual(tg.key('rate'), tg.key('rate'));
	});

	await t.test('a rate wait sleeps on a timer, in order', async () => {
		const t0 = process.hrtime.bigint();
		const { value, ticks } = await ticking(Promise.all(
		    Array.from({ length: 4 }, () => tg.ticket('rate'))));
		const ms = Number(process.hrtime.bigint() - t0) / 1e6;
		t.diagnostic(`4 tickets at 10/s burst 1: ${ms.toFixed(0)} ms, ` +
		    `the loop turned ${ticks} times meanwhile`);
		value.forEach((x) => x.release());
		assert.ok(ms >= 250, `${ms} ms`);
		assert.ok(ticks >= 10, `${ticks} turns`);
		const { ticket, retryIn } = tg.tryTicket('rate');
		assert.strictEqual(ticket, null);
		assert.ok(retryIn > 0 && retryIn <= 100, `${retryIn}`);
	});

	await t.test('a concurrency wait runs off the main thread', async () => {
		const held = await tg.ticket('pool');
		assert.strictEqual(b.limit('pool', 'concurrency').in_flight, 1);
		const waiting = ticking(tg.ticket('pool', {}, { timeout: 20000 }));
		setTimeout(() => held.release(), 300);
		const { value, ticks } = await waiting;
		t.diagnostic(`the loop turned ${ticks} times while a lease was ` +
		    'awaited');
		assert.ok(ticks >= 20, `${ticks} turns`);
		assert.ok(value.live);
		// Timed out and aborted waits take nothing.
		await assert.rejects(tg.ticket('pool', {}, { timeout: 150 }),
		    { code: 'ETIMEDOUT' });
		const ac = new AbortController();
		const aborted = tg.ticket('pool', {}, { signal: ac.signal });
		setTimeout(() => ac.abort(), 100);
		setTimeout(() => value.release(), 150);
		await assert.rejects(aborted, { name: 'AbortError' });
		await new Promise((r) => setTimeout(r, 300));
		assert.strictEqual(b.limit('pool', 'concurrency').in_flight, 0);
		const again = tg.ticketSync('pool', {}, { timeout: 1000 });
		again.release();
		again.release();	// idempotent
		assert.strictEqual(b.limit('pool', 'concurrency').in_flight, 0);
	});

	await t.test('observe takes each kind of headers', async () => {
		const forms = [new Headers({ 'retry-after': '1' }),
		    { 'retry-after': '1' }, [['retry-after', '1']],
		    ['Retry-After', '1'], 'retry-after: 1\r\n',
		    new Map([['retry-after', '1']])];
		for (const h of forms) {
			const x = await tg.ticket('tokens');
			assert.strictEqual(x.observe(200, h), tollgate.Advice.OK);
			x.release();
		}
		const x = await tg.ticket('tokens');
		assert.strictEqual(x.observe(401, {}), tollgate.Advice.GIVE_UP);
		x.release();
		const p = await tg.ticket('paused');
		assert.strictEqual(p.observe(429, new Headers({
		    'retry-after': '1' })), tollgate.Advice.RETRY);
		p.release();
		const k = b.key('paused');
		assert.strictEqual(k.status.limited, 1);
		assert.ok(k.paused_ns > 500e6, `${k.paused_ns}`);
		// The next waits out the pause, on a timer.
		const t0 = Date.now();
		(await tg.ticket('paused', {}, { timeout: 5000 })).release();
		assert.ok(Date.now() - t0 >= 400, `${Date.now() - t0} ms`);
	});

	await t.test('settle gives an over-estimate back', async () => {
		const before = b.limit('tokens', 'rate').available;
		await tg.withTicket('tokens', { tokens: 5000 }, async (x) => {
			assert.ok(b.limit('tokens', 'rate').available <= before - 5000);
			x.settle({ tokens: 40 });
			assert.deepStrictEqual(x.cost, { requests: 1, tokens: 40,
			    images: 0 });
		});
		const after = b.limit('tokens', 'rate').available;
		assert.ok(after <= before - 40 && after >= before - 45,
		    `${before} -> ${after}`);
	});

	await t.test('stat reads tollstat -j', async () => {
		const s = await tg.stat();
		assert.strictEqual(s.schema, 1);
		assert.deepStrictEqual(s.keys.map((k) => k.name).sort(),
		    ['paused', 'pool', 'rate', 'tokens']);
		assert.ok(s.clients.list.some((c) => c.pid === process.pid));
		assert.deepStrictEqual(tg.statSync({ key: 'pool' }).keys
		    .map((k) => k.name), ['pool']);
		await assert.rejects(tollgate.stat(`${b.segment}-none`),
		    { code: 'ENOENT' });
	});

	await t.test('a closed client refuses, and frees its leases', async () => {
		const c2 = tollgate.open(b.segment);
		const x = await c2.ticket('pool');
		const waiting = c2.ticket('pool');
		await new Promise((r) => setTimeout(r, 50));
		await c2.close();
		await assert.rejects(waiting, { code: 'EBADF' });
		assert.throws(() => c2.key('rate'), { code: 'EBADF' });
		x.release();		// nothing: tg_close gave it back
		assert.strictEqual(b.limit('pool', 'concurrency').in_flight, 0);
	});
});
