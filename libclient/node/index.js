'use strict';
/*
 * tollgate: tickets from the host's quota broker, for Node.js workers.
 *
 *     const tollgate = require('tollgate');
 *     const tg = tollgate.open();                  // once per process
 *     const t = await tg.ticket('openai/gpt-image-1', { images: 1 });
 *     try {
 *         const r = await fetch(...);
 *         t.observe(r.status, r.headers);
 *     } finally {
 *         t.release();
 *     }
 *
 * A ticket is permission for one request: every limit of the key and its
 * ancestors, for the whole host, is charged before the request goes out,
 * with a few atomic instructions in shared memory (libtollgate.so,
 * through koffi: see lib/native.js for why).  ticket() never blocks the
 * event loop: a rate limit or a pause takes its place in the host's one
 * line (tg_reserve) and sleeps on a timer until its slot; a concurrency
 * limit waits for a release in a worker thread (lib/waiter.js).
 *
 * tollgate.fetch() (lib/fetch.js) wraps a fetch for the OpenAI and
 * Anthropic SDKs.
 */
const { execFile, execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const { Worker } = require('worker_threads');
const koffi = require('koffi');
const native = require('./lib/native');

const L = native.fn;
const ERRNO = koffi.os.errno;			/* name -> number */
const NAMES = {};				/* number -> name */
for (const [name, n] of Object.entries(ERRNO))
	if (!(n in NAMES))
		NAMES[n] = name;

const Advice = Object.freeze({ OK: 'OK', RETRY: 'RETRY',
    GIVE_UP: 'GIVE_UP' });
const ADVICE = [Advice.OK, Advice.RETRY, Advice.GIVE_UP];

const WAITING = 0, ABANDONED = 2;
const U64_MAX = (1n << 64n) - 1n;
const I64_MAX = (1n << 63n) - 1n;

/*
 * A libtollgate result below 0: code is the errno's name ('ETIMEDOUT',
 * 'ENOENT'), errno the negative number, as Node's own system errors.
 */
class TollgateError extends Error {
	constructor(r, detail, message) {
		const code = NAMES[-r] || `E${-r}`;
		super((message || L.tg_strerror(r)) +
		    (detail ? `: ${detail}` : ''));
		this.name = 'TollgateError';
		this.code = code;
		this.errno = r;
		if (detail)
			this.detail = detail;
	}
}

function fail(r, detail, message) {
	return new TollgateError(r, detail, message);
}

function u64(v, what) {
	if (typeof v === 'bigint' ? v >= 0n && v <= U64_MAX :
	    Number.isSafeInteger(v) && v >= 0)
		return v;
	throw fail(-ERRNO.EINVAL, `${what} = ${v}`,
	    'a cost is an integer 0 to 2**64 - 1');
}

function makeCost(c) {
	c = c || {};
	return { requests: u64(c.requests ?? 1, 'requests'),
	    tokens: u64(c.tokens ?? 0, 'tokens'),
	    images: u64(c.images ?? 0, 'images') };
}

/* milliseconds (undefined, null or Infinity: forever) -> ns for C */
function timeoutNs(ms) {
	if (ms === undefined || ms === null || ms === Infinity)
		return -1n;
	if (typeof ms !== 'number' || Number.isNaN(ms))
		throw fail(-ERRNO.EINVAL, `timeout = ${ms}`, 'a timeout is ms');
	const ns = BigInt(Math.max(0, Math.floor(ms * 1e6)));
	return ns > I64_MAX ? I64_MAX : ns;
}

/* Header values may carry CR or LF only to forge another header line. */
function field(s) {
	return String(s).replace(/[\r\n]/g, ' ');
}

/*
 * The raw block tg_observe parses, from a fetch Headers, a Map, a plain
 * object, [name, value] pairs, Node's flat rawHeaders, or a raw block.
 */
function headerBlock(h) {
	if (h === undefined || h === null)
		return '';
	if (typeof h === 'string')
		return h;
	if (Buffer.isBuffer(h) || h instanceof Uint8Array)
		return Buffer.from(h).toString('latin1');
	let pairs;
	if (Array.isArray(h)) {
		if (h.length > 0 && !Array.isArray(h[0])) {
			pairs = [];
			for (let i = 0; i + 1 < h.length; i += 2)
				pairs.push([h[i], h[i + 1]]);
		} else {
			pairs = h;
		}
	} else if (typeof h.entries === 'function' &&
	    typeof h[Symbol.iterator] === 'function') {
		pairs = h.entries();
	} else {
		pairs = Object.entries(h);
	}
	let out = '';
	for (const [n, v] of pairs) {
		for (const one of Array.isArray(v) ? v : [v])
			out += `${field(n)}: ${field(one)}\r\n`;
	}
	return out;
}

function nowNs() {
	return process.hrtime.bigint();
}

function abortError(signal) {
	if (signal.reason instanceof Error)
		return signal.reason;
	const e = new Error('the wait for a ticket was aborted');
	e.name = 'AbortError';
	e.code = 'ABORT_ERR';
	return e;
}

/*
 * Sleep until nowNs() reaches until, never a moment before: a ticket
 * released before its time is taken for unused, and its slot given back.
 * Rejects with the signal's reason on abort.
 */
function sleepUntil(until, signal) {
	return new Promise((resolve, reject) => {
		let timer = null;
		const onAbort = () => {
			clearTimeout(timer);
			reject(abortError(signal));
		};
		const tick = () => {
			const left = until - nowNs();
			if (left <= 0n) {
				if (signal)
					signal.removeEventListener('abort', onAbort);
				resolve();
				return;
			}
			timer = setTimeout(tick, Math.ceil(Number(left) / 1e6));
		};
		if (signal) {
			if (signal.aborted) {
				reject(abortError(signal));
				return;
			}
			signal.addEventListener('abort', onAbort, { once: true });
		}
		tick();
	});
}

/* A ticket nobody released would hold its lease until exit. */
const orphans = new FinalizationRegistry(({ client, buf, live }) => {
	if (live.v && client._ptr !== null)
		L.tg_release(client._ptr, buf);
});

/*
 * One request's permission.  Release it when the request is done;
 * observe and settle work before or after.
 */
class Ticket {
	constructor(client, key, cost) {
		this.key = key;
		this._client = client;
		this._cost = cost;
		// Shared memory, so a waiter thread can fill it.
		this._buf = new BigUint64Array(new SharedArrayBuffer(
		    native.TICKET_BYTES));
		this._live = { v: false };
	}

	_grant() {
		this._live.v = true;
		orphans.register(this, { client: this._client, buf: this._buf,
		    live: this._live }, this);
	}

	/* What the ticket is charged with: taken, or as last settled. */
	get cost() {
		return { ...this._cost };
	}

	get live() {
		return this._live.v;
	}

	/*
	 * Tell the whole host what the response said (status, headers), before
	 * it returns: a 429 pauses the key for everyone.  Returns
	 * Advice.OK, Advice.RETRY (the pause is in place: the next ticket
	 * waits it out) or Advice.GIVE_UP.
	 */
	observe(status, headers) {
		const block = Buffer.from(headerBlock(headers), 'latin1');
		const r = L.tg_observe(this._client._c(), this._buf,
		    Number(status) | 0, block.length ? block : null,
		    block.length);
		if (r < 0)
			throw this._client._fail(r, this.key);
		return ADVICE[r];
	}

	/*
	 * Charge what the request really used instead of the estimate: an
	 * over-estimate comes back at once.  A member left out stays.
	 */
	settle(actual) {
		const c = makeCost({ ...this._cost, ...actual });
		const r = L.tg_settle(this._client._c(), this._buf, c);
		if (r < 0)
			throw this._client._fail(r, this.key);
		this._cost = c;
	}

	/*
	 * Give back the concurrency leases; idempotent.  Does nothing once
	 * the client is closed (tg_close released its leases).
	 */
	release() {
		if (!this._live.v)
			return;
		this._live.v = false;
		orphans.unregister(this);
		if (this._client._ptr !== null)
			L.tg_release(this._client._ptr, this._buf);
	}

	toString() {
		const c = Object.entries(this._cost).filter(([, v]) => v)
		    .map(([k, v]) => `${k}=${v}`).join(' ');
		return `<tollgate.Ticket ${this.key.name} ${c} ` +
		    `${this._live.v ? 'live' : 'released'}>`;
	}
}

/* One waiter thread per key handle, started on the first wait. */
class Waiter {
	constructor(client, handle) {
		this.jobs = new Map();
		this.seq = 0;
		this.worker = new Worker(path.join(__dirname, 'lib', 'waiter.js'),
		    { workerData: { client: client._ptr, key: handle } });
		this.worker.unref();
		this.worker.on('message', ({ id, r }) => {
			const job = this.jobs.get(id);
			this.jobs.delete(id);
			if (this.jobs.size === 0)
				this.worker.unref();
			job.done(r);
		});
		this.worker.on('error', (e) => {
			for (const job of this.jobs.values())
				job.done(null, e);
			this.jobs.clear();
			this.dead = e;
		});
	}

	/* tg_acquire in the thread; resolves to its result. */
	wait(ticket, deadline, signal) {
		if (this.dead)
			return Promise.reject(this.dead);
		const state = new Int32Array(new SharedArrayBuffer(4));
		return new Promise((resolve, reject) => {
			const id = this.seq++;
			const onAbort = () => {
				if (Atomics.compareExchange(state, 0, WAITING,
				    ABANDONED) === WAITING)
					return;	/* the thread gives it back */
				// Granted already: ours to give back.
				L.tg_release(ticket._client._ptr, ticket._buf);
			};
			if (signal)
				signal.addEventListener('abort', onAbort,
				    { once: true });
			this.jobs.set(id, { state, done: (r, err) => {
				if (signal)
					signal.removeEventListener('abort', onAbort);
				if (err)
					reject(err);
				else if (signal && signal.aborted)
					reject(abortError(signal));
				else
					resolve(r);
			}, abandon: onAbort });
			if (this.jobs.size === 1)
				this.worker.ref();
			this.worker.postMessage({ id, cost: ticket._cost,
			    ticket: ticket._buf, state, deadline: deadline ===
			    null ? null : deadline.toString() });
		});
	}

	/* On close: every job gives up; resolves when the thread is idle. */
	drain() {
		for (const job of this.jobs.values())
			Atomics.compareExchange(job.state, 0, WAITING, ABANDONED);
		if (this.jobs.size === 0 || this.dead)
			return Promise.resolve();
		return new Promise((resolve) => {
			const check = () => {
				if (this.jobs.size === 0) {
					this.worker.off('message', check);
					resolve();
				}
			};
			this.worker.on('message', check);
		});
	}
}

/* A key's handle, good across reloads until one removes the key. */
class Key {
	constructor(name, handle) {
		this.name = name;
		this.handle = handle;
		Object.freeze(this);
	}
}

/* A process's handle on one broker's segment. */
class Client {
	constructor(segment) {
		// undefined: $TOLLGATE_SEGMENT, else "tollgate", as tg_open(NULL).
		this.segment = segment ?? (process.env.TOLLGATE_SEGMENT ||
		    'tollgate');
		this._keys = new Map();
		this._waiters = new Map();
		this._ptr = null;
		const out = [0];
		const r = L.tg_open(this.segment, out);
		if (r < 0) {
			throw fail(r, this.segment, r === -ERRNO.ENOENT ?
			    'no broker publishes that segment (is tollgated ' +
			    'running?)' : undefined);
		}
		this._ptr = out[0];
		this._pid = process.pid;
	}

	_c() {
		if (this._ptr === null)
			throw fail(-ERRNO.EBADF, this.segment,
			    'the tollgate client is closed');
		return this._ptr;
	}

	_fail(r, key) {
		if (r === -ERRNO.ESTALE && this._keys.get(key.name) === key)
			this._keys.delete(key.name);	// a key added back is found
		return fail(r, key.name);
	}

	/* Look a key up once; later calls are a Map lookup. */
	key(name) {
		if (name instanceof Key)
			return name;
		let k = this._keys.get(name);
		if (k === undefined) {
			const out = [0];
			const r = L.tg_key(this._c(), String(name), out);
			if (r < 0)
				throw fail(r, name, r === -ERRNO.ENOENT ?
				    'no such key' : undefined);
			k = new Key(String(name), out[0]);
			this._keys.set(k.name, k);
		}
		return k;
	}

	_ticket(key, cost) {
		return new Ticket(this, this.key(key), makeCost(cost));
	}

	/*
	 * A ticket if one is free now, else null and retryIn (ms until one
	 * may be; 0 when it waits for a ticket in flight to be released).
	 * Never waits; makes no system call.
	 */
	tryTicket(key, cost) {
		const t = this._ticket(key, cost);
		const retry = [0];
		const r = L.tg_try_acquire(this._c(), t.key.handle, t._cost, t._buf,
		    retry);
		if (r === -ERRNO.EAGAIN)
			return { ticket: null, retryIn: Number(retry[0]) / 1e6 };
		if (r < 0)
			throw this._fail(r, t.key);
		t._grant();
		return { ticket: t, retryIn: 0 };
	}

	/*
	 * Wait in this thread (timeout in ms; none: forever) for a ticket:
	 * blocks the event loop, for scripts and worker threads.  Event-loop
	 * code awaits ticket().
	 */
	ticketSync(key, cost, { timeout } = {}) {
		const t = this._ticket(key, cost);
		const r = L.tg_acquire(this._c(), t.key.handle, t._cost,
		    timeoutNs(timeout), t._buf);
		if (r < 0)
			throw this._fail(r, t.key);
		t._grant();
		return t;
	}

	/*
	 * Wait for a ticket without blocking the event loop (timeout in ms;
	 * signal: an AbortSignal).  A rate limit or a pause: tg_reserve takes
	 * this waiter's place in the line every process's waiters stand in,
	 * and a timer sleeps until its slot; aborted before it, the ticket is
	 * released, which gives the slot back unless a later waiter stacked
	 * on it.  A concurrency limit: a worker thread waits for a release.
	 */
	async ticket(key, cost, { timeout, signal } = {}) {
		const t = this._ticket(key, cost);
		const h = t.key.handle;
		const deadline = timeout === undefined || timeout === null ||
		    timeout === Infinity ? null :
		    nowNs() + timeoutNs(timeout);
		const valid = [0];
		for (;;) {
			if (signal && signal.aborted)
				throw abortError(signal);
			const left = deadline === null ? -1n :
			    (deadline > nowNs() ? deadline - nowNs() : 0n);
			const r = L.tg_reserve(this._c(), h, t._cost, left, t._buf,
			    valid);
			if (r === 0) {
				// From after the call: the library's wait began before.
				let until = nowNs() + BigInt(valid[0]);
				let ready;
				t._grant();
				try {
					for (;;) {
						await sleepUntil(until, signal);
						// A 429 while it slept: its slot was
						// reckoned at the pace before; in line
						// again, as tg_acquire does.
						ready = L.tg_ready(this._c(), t._buf,
						    valid);
						if (ready !== -ERRNO.EAGAIN)
							break;
						until = nowNs() + BigInt(valid[0]);
					}
				} catch (e) {
					t.release();	// never used: the slot may go back
					throw e;
				}
				if (ready === 0)
					return t;
				t.release();
				if (ready !== -ERRNO.ECANCELED)
					throw this._fail(ready, t.key);
				continue;
			}
			if (r !== -ERRNO.EAGAIN)
				throw this._fail(r, t.key);	// ETIMEDOUT too
			if (Number(valid[0]) > 0) {
				// Not to be reserved ahead (a window, a server's count,
				// a lease's return after a pause): try again then.
				await sleepUntil(nowNs() + BigInt(valid[0]), signal);
				continue;
			}
			if (deadline !== null && left <= 0n)
				throw fail(-ERRNO.ETIMEDOUT, t.key.name);
			let w = this._waiters.get(h);
			if (w === undefined || w.dead) {
				w = new Waiter(this, h);
				this._waiters.set(h, w);
			}
			const got = await w.wait(t, deadline, signal);
			if (got === 0) {
				if (this._ptr === null) {
					// Closed meanwhile: tg_close gave it back.
					throw fail(-ERRNO.EBADF, this.segment,
					    'the tollgate client is closed');
				}
				t._grant();
				return t;
			}
			if (got !== -ERRNO.ETIMEDOUT)
				throw this._fail(got, t.key);
			if (this._ptr === null)
				throw fail(-ERRNO.EBADF, this.segment,
				    'the tollgate client is closed');
			if (deadline !== null && nowNs() >= deadline)
				throw fail(-ERRNO.ETIMEDOUT, t.key.name);
		}
	}

	/*
	 * await client.withTicket(key, cost, async (t) => ...): one request,
	 * released however fn ends; resolves to what fn returns.
	 */
	async withTicket(key, cost, fn, options) {
		const t = await this.ticket(key, cost, options);
		try {
			return await fn(t);
		} finally {
			t.release();
		}
	}

	/* The segment's counters: what `tollstat -j' prints, parsed. */
	stat(options) {
		return stat(this.segment, options);
	}

	statSync(options) {
		return statSync(this.segment, options);
	}

	/*
	 * Release every lease of this client's tickets and free its slot.
	 * Waits in progress end with EBADF; the slot is freed once the waiter
	 * threads are out of tg_acquire (a slice, 100 ms, at most): await the
	 * result to know it is.
	 */
	close() {
		const ptr = this._ptr;
		if (ptr === null)
			return Promise.resolve();
		this._ptr = null;
		const waiters = [...this._waiters.values()];
		this._waiters.clear();
		return Promise.all(waiters.map((w) => w.drain())).then(() => {
			for (const w of waiters)
				w.worker.terminate();
			L.tg_close(ptr);
		});
	}

	toString() {
		return `<tollgate.Client ${JSON.stringify(this.segment)} ` +
		    `${this._ptr === null ? 'closed' : 'open'}>`;
	}
}

/*
 * Open the segment a tollgated publishes (undefined: $TOLLGATE_SEGMENT,
 * else "tollgate"); one Client per process serves all its code.
 */
function open(segment) {
	return new Client(segment);
}

/*
 * The tollstat that goes with the library in use: $TG_BUILD's, the one
 * beside a build tree's library, else the one on $PATH.
 */
function tollstat() {
	const dirs = [process.env.TG_BUILD, path.dirname(native.path)];
	for (const d of dirs) {
		if (!d || !native.path.includes('/') && d === dirs[1])
			continue;
		const p = path.resolve(d, 'tollstat');
		try {
			fs.accessSync(p, fs.constants.X_OK);
			return p;
		} catch (e) {
			/* next */
		}
	}
	return 'tollstat';
}

function statArgs(segment, options) {
	const a = ['-j'];
	if (segment ?? process.env.TOLLGATE_SEGMENT)
		a.push('-s', segment ?? process.env.TOLLGATE_SEGMENT);
	if (options && options.key)
		a.push('-k', options.key);
	return a;
}

function statError(err, stderr, segment, key) {
	const msg = String(stderr || '').trim() || err.message;
	if (err.code === 'ENOENT')
		return fail(-ERRNO.ENOENT, 'tollstat', 'tollstat not found ' +
		    '(in $TG_BUILD, beside the library, or on $PATH)');
	if (msg.includes('no such segment'))
		return fail(-ERRNO.ENOENT, segment, msg);
	if (key && msg.includes('no key'))
		return fail(-ERRNO.ENOENT, key, msg);
	return fail(-ERRNO.EIO, undefined, msg);
}

/*
 * What `tollstat -j -s SEGMENT [-k KEY]' prints (schema 1, tollstat(1)),
 * parsed.  It runs tollstat rather than read the segment itself: the
 * layout is the C code's to know, and tollstat reads it consistently
 * under a changing broker.  A promise; statSync() waits in this thread.
 */
function stat(segment, options) {
	return new Promise((resolve, reject) => {
		execFile(tollstat(), statArgs(segment, options),
		    { maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
			if (err)
				reject(statError(err, stderr, segment,
				    options && options.key));
			else
				resolve(JSON.parse(stdout));
		});
	});
}

function statSync(segment, options) {
	let out;
	try {
		out = execFileSync(tollstat(), statArgs(segment, options),
		    { maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'pipe'] });
	} catch (e) {
		throw statError(e, e.stderr, segment, options && options.key);
	}
	return JSON.parse(out);
}

module.exports = {
	open, Client, Key, Ticket, TollgateError, Advice, stat, statSync,
	library: native.path, headerBlock,
};
// After the exports it needs: fetch.js requires this module.
module.exports.fetch = require('./lib/fetch').tollgateFetch;
