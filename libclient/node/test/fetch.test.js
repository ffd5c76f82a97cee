'use strict';
/*
 * tollgate.fetch's own rules, over a stand-in fetch on a real broker:
 * routing (rules, a function, no match passed or refused), the estimate,
 * the retry cap (the last 429 goes to the caller), GIVE_UP at once, and
 * the lease held until the body has been read or cancelled.
 */
const test = require('node:test');
const assert = require('node:assert');
const tollgate = require('..');
const { estimate } = require('../lib/fetch');
const { broker } = require('./broker');

const CONF = `[api]
limit = 1000 requests/s
concurrency = 1
[api/images]
limit = 1000 images/s
[other]
limit = 1000 requests/s
`;

/* A fetch that answers from a list, recording what it was sent. */
function standIn(answers) {
	const sent = [];
	const f = async (input, init = {}) => {
		sent.push({ url: String(input), body: init.body });
		const [status, headers, body] = answers.length > 1 ?
		    answers.shift() : answers[0];
		return new Response(body, { status, headers });
	};
	f.sent = sent;
	return f;
}

test('tollgate.fetch', async (t) => {
	const b = await broker(t, CONF);
	if (b === null)
		return;
	const client = tollgate.open(b.segment);
	t.after(async () => {
		await client.close();
		await b.stop();
	});
	const granted = (k) => b.key(k).granted;
	const inFlight = () => b.limit('api', 'concurrency').in_flight;

	await t.test('routes by rules, passes or refuses the rest', async () => {
		const base = standIn([[200, {}, '{}']]);
		const rules = [
			{ host: 'a.test', model: /^img-/, key: 'api/images' },
			{ host: 'a.test:8080', path: '/v1/', key: 'api' },
			{ path: (p) => p.startsWith('/other'), key: 'other' },
		];
		const f = tollgate.fetch({ client, fetch: base, rules });
		const before = [granted('api'), granted('api/images'),
		    granted('other')];
		await (await f('http://a.test:8080/v1/x', { method: 'POST',
		    body: JSON.stringify({ model: 'img-1', n: 3 }) })).text();
		await (await f('http://a.test:8080/v1/y')).text();
		await (await f('http://b.test/other')).text();
		await (await f('http://b.test/none')).text();	// passed
		assert.deepStrictEqual([granted('api') - before[0],
		    granted('api/images') - before[1], granted('other') -
		    before[2]], [1, 1, 1]);
		assert.strictEqual(base.sent.length, 4);
		const refusing = tollgate.fetch({ client, fetch: base, rules,
		    unmatched: 'refuse' });
		await assert.rejects(refusing('http://b.test/none'),
		    { code: 'ENOENT' });
		const byFn = tollgate.fetch({ client, fetch: base,
		    key: (req) => req.url.hostname === 'c.test' ? 'other' : null });
		await (await byFn(new Request('http://c.test/'))).text();
		assert.strictEqual(granted('other') - before[2], 2);
	});

	await t.test('estimates', () => {
		const req = (path, body) => ({ url: new URL(`http://x${path}`),
		    body });
		assert.deepStrictEqual(estimate(req('/v1/images/generations',
		    { n: 4 }), {}), { requests: 1, tokens: 0, images: 4 });
		assert.deepStrictEqual(estimate(req('/v1/chat/completions', {
		    messages: [{ role: 'user', content: 'x'.repeat(40) }],
		    max_tokens: 100 }), {}), { requests: 1, tokens: 110,
		    images: 0 });
		assert.deepStrictEqual(estimate(req('/v1/messages', {
		    system: 'abcd', messages: [{ role: 'user', content: [
		    { type: 'text', text: 'abcdefgh' }] }] }),
		    { outputTokens: 7 }), { requests: 1, tokens: 10, images: 0 });
	});

	await t.test('the last 429 goes back; 401 at once', async () => {
		const h429 = { 'retry-after': '0.2' };
		const base = standIn([[429, h429, 'slow down']]);
		const f = tollgate.fetch({ client, fetch: base, key: 'api',
		    tries: 3 });
		const r = await f('http://a.test/v1/', { method: 'POST',
		    body: '{}' });
		assert.strictEqual(r.status, 429);
		assert.strictEqual(await r.text(), 'slow down');
		assert.strictEqual(base.sent.length, 3);
		const once = standIn([[401, {}, 'who?']]);
		const g = tollgate.fetch({ client, fetch: once, key: 'api' });
		assert.strictEqual((await g('http://a.test/')).status, 401);
		assert.strictEqual(once.sent.length, 1);
		assert.strictEqual(inFlight(), 0);
		const retried = standIn([[503, {}, ''], [200, {}, 'ok']]);
		const h = tollgate.fetch({ client, fetch: retried, key: 'api' });
		assert.strictEqual(await (await h('http://a.test/')).text(), 'ok');
		assert.strictEqual(retried.sent.length, 2);
		const twice = standIn([[503, {}, ''], [200, {}, 'ok']]);
		const j = tollgate.fetch({ client, fetch: twice, key: 'api' });
		assert.strictEqual(await (await j(new Request('http://a.test/',
		    { method: 'POST', body: '{"n":1}' }))).text(), 'ok');
		assert.deepStrictEqual(twice.sent.map((x) => x.body),
		    ['{"n":1}', '{"n":1}']);
	});

	await t.test('the lease lasts until the body is read', async () => {
		const f = tollgate.fetch({ client, fetch: standIn([[200,
		    { 'content-type': 'application/json' },
		    '{"usage":{"total_tokens":3}}']]), key: 'api' });
		const r = await f('http://a.test/');
		assert.strictEqual(inFlight(), 1);
		assert.deepStrictEqual(await r.json(),
		    { usage: { total_tokens: 3 } });
		assert.strictEqual(inFlight(), 0);
		const r2 = await f('http://a.test/');
		assert.strictEqual(inFlight(), 1);
		await r2.body.cancel();
		assert.strictEqual(inFlight(), 0);
	});
});
