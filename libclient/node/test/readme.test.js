'use strict';
/*
 * The README's Node.js program is examples/sdk_worker.mjs byte for byte,
 * and runs as printed: the real SDKs read OPENAI_BASE_URL and
 * ANTHROPIC_BASE_URL, pointed at the local server, which answers the
 * first OpenAI request 429 (retry-after: 1); tollgate opens
 * $TOLLGATE_SEGMENT.  `tollgate', `openai' and `@anthropic-ai/sdk' are
 * found as a user's project finds them: in a node_modules beside it.
 * Then the staged `make install' (build/stage, when there) serves the
 * same program, libtollgate.so.0 found by the loader.
 */
const test = require('node:test');
const assert = require('node:assert');
const { execFile } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { broker, BUILD } = require('./broker');
const { makeServer } = require('./fakeapi');

const PKG = path.join(__dirname, '..');
const EXAMPLE = path.join(PKG, 'examples', 'sdk_worker.mjs');
const README = path.join(PKG, '..', '..', 'README.md');

test('the README block is examples/sdk_worker.mjs', () => {
	const readme = fs.readFileSync(README, 'utf8');
	const m = readme.match(/^## With the OpenAI \/ Anthropic SDK \(Node\.js\)$[^]*?^```js\n([^]*?)^```$/m);
	assert.ok(m, 'README has no js block under its Node.js SDK section');
	assert.strictEqual(m[1], fs.readFileSync(EXAMPLE, 'utf8'));
});

/* A project directory: the program and a node_modules of links. */
function project(tollgateDir) {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tgnode-readme.'));
	const nm = path.join(dir, 'node_modules');
	fs.mkdirSync(path.join(nm, '@anthropic-ai'), { recursive: true });
	fs.symlinkSync(tollgateDir, path.join(nm, 'tollgate'));
	fs.symlinkSync(path.join(PKG, 'node_modules', 'openai'),
	    path.join(nm, 'openai'));
	fs.symlinkSync(path.join(PKG, 'node_modules', '@anthropic-ai', 'sdk'),
	    path.join(nm, '@anthropic-ai', 'sdk'));
	fs.copyFileSync(EXAMPLE, path.join(dir, 'sdk_worker.mjs'));
	return dir;
}

function runIn(dir, env) {
	return new Promise((resolve) => {
		execFile(process.execPath, ['sdk_worker.mjs'], { cwd: dir, env,
		    timeout: 60000 }, (err, stdout, stderr) =>
		    resolve({ err, stdout, stderr }));
	});
}

async function runOnce(t, b, tollgateDir, extraEnv, label) {
	const { server, stats } = makeServer({ rate: 20, burst: 4,
	    imageRate: 6, imageBurst: 4, cap: 4, inject429: { openai: 1 } });
	await new Promise((r) => server.listen(0, '127.0.0.1', r));
	const base = `http://127.0.0.1:${server.address().port}`;
	const dir = project(tollgateDir);
	try {
		const env = { PATH: process.env.PATH, HOME: os.tmpdir(),
		    TOLLGATE_SEGMENT: b.segment, OPENAI_API_KEY: 'test',
		    ANTHROPIC_API_KEY: 'test', OPENAI_BASE_URL: `${base}/v1`,
		    ANTHROPIC_BASE_URL: base, ...extraEnv };
		// A node that needs it (one unpacked by hand) keeps its own.
		const ld = [extraEnv.LD_LIBRARY_PATH, process.env.LD_LIBRARY_PATH]
		    .filter(Boolean).join(':');
		if (ld)
			env.LD_LIBRARY_PATH = ld;
		const r = await runIn(dir, env);
		assert.ifError(r.err && new Error(`${r.err.message}\n${r.stderr}`));
		assert.strictEqual(r.stdout, 'Fastnet 2 Fastnet Fastnet\n');
		t.diagnostic(`${label}: server saw ${stats.openai.requests} OpenAI ` +
		    'requests ' +
		    `(${stats.openai.injected} answered 429, then retried), ` +
		    `${stats.anthropic.requests} Anthropic (` +
		    `${stats.anthropic.streams} streamed), max in flight ` +
		    `${stats.openai.maxInFlight} + ` +
		    `${stats.anthropic.maxInFlight}`);
		assert.strictEqual(stats.openai.requests, 3);
		assert.strictEqual(stats.openai.injected, 1);
		assert.strictEqual(stats.openai.limited, 0);
		assert.strictEqual(stats.anthropic.requests, 2);
		return stats;
	} finally {
		server.close();
		fs.rmSync(dir, { recursive: true, force: true });
	}
}

test('the README program runs as printed', async (t) => {
	const b = await broker(t, `[openai]
limit = 100 requests/min burst 10
limit = 1000000 tokens/7day
rejected = free
[openai/gpt-image-1]
limit = 10 images/min
[anthropic]
limit = 100 requests/min burst 10
limit = 1000000 tokens/7day
`);
	if (b === null)
		return;
	t.after(() => b.stop());
	const t0 = Date.now();
	const stats = await runOnce(t, b, PKG, { TG_BUILD: BUILD },
	    'from the source tree');
	const refill = 1000000 / (7 * 86400) * ((Date.now() - t0) / 1000 + 1);
	// The tokens the chat and the stream used, not the estimates (the
	// 429's given back: rejected = free).
	for (const p of ['openai', 'anthropic']) {
		const tok = b.key(p).limits.find((l) => l.unit === 'tokens');
		const used = tok.burst - tok.available;
		assert.ok(used <= stats[p].tokens && used >= stats[p].tokens - refill,
		    `${p}: charged ${used}, used ${stats[p].tokens}`);
	}
	assert.strictEqual(b.key('openai').status.limited +
	    b.key('openai/gpt-image-1').status.limited, 1);

	const staged = path.join(BUILD, 'stage', 'usr', 'lib', 'node_modules',
	    'tollgate');
	if (!fs.existsSync(path.join(staged, 'index.js'))) {
		t.diagnostic(`no staged install at ${staged}: not run from it`);
		return;
	}
	await runOnce(t, b, staged, { LD_LIBRARY_PATH:
	    path.join(BUILD, 'stage', 'usr', 'lib') }, 'from make install');
});
