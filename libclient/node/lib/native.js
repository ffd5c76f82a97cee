'use strict';
/*
 * native: private; finds libtollgate.so and declares its functions through
 * koffi, for the main thread and for the waiter threads alike.
 *
 * Why koffi and not an N-API addon built by node-gyp: koffi's npm package
 * brings a prebuilt binary for each platform (an optional dependency per
 * platform), so `npm ci` needs neither a compiler nor Node's headers, and
 * nothing is fetched from outside the npm registry; the same binary works
 * on every Node version from 16 on, through Node-API.  An addon of ours
 * would be a second C library to build per machine, against headers that
 * Debian ships apart (libnode-dev) and node-gyp would otherwise download.
 * What koffi cannot give is a wait off the loop without tying up libuv's
 * four pool threads (its async calls run there, and so do fs and DNS):
 * the concurrency wait runs in a worker thread of ours (waiter.js).
 *
 * The client and each ticket are passed as addresses (uintptr_t): the
 * client is one per process, shared by its threads as the C library
 * allows, and a ticket lives in a SharedArrayBuffer both threads see.
 */
const fs = require('fs');
const path = require('path');
const koffi = require('koffi');

function candidates() {
	// An explicit path beats a build tree, and a build tree beats an
	// installed copy, so tests run the code they built.
	if (process.env.TOLLGATE_LIB)
		return [process.env.TOLLGATE_LIB];
	const c = [];
	if (process.env.TG_BUILD)
		c.push(path.resolve(process.env.TG_BUILD, 'libtollgate.so'));
	c.push(path.resolve(__dirname, '..', '..', '..', 'build',
	    'libtollgate.so'));
	c.push('libtollgate.so.0');	// the system loader's search
	return [...new Set(c)];
}

const PROTOS = [
	'int tg_open(const char *segment, _Out_ uintptr_t *out)',
	'void tg_close(uintptr_t c)',
	'int tg_key(uintptr_t c, const char *name, _Out_ uint32_t *key)',
	'int tg_try_acquire(uintptr_t c, uint32_t key, const tg_cost *cost, ' +
	    'void *t, _Out_ uint64_t *retry_in_ns)',
	'int tg_acquire(uintptr_t c, uint32_t key, const tg_cost *cost, ' +
	    'int64_t timeout_ns, void *t)',
	'int tg_reserve(uintptr_t c, uint32_t key, const tg_cost *cost, ' +
	    'int64_t timeout_ns, void *t, _Out_ uint64_t *valid_in_ns)',
	'int tg_ready(uintptr_t c, void *t, _Out_ uint64_t *retry_in_ns)',
	'int tg_observe(uintptr_t c, void *t, int status, const char *headers, ' +
	    'size_t len)',
	'int tg_settle(uintptr_t c, void *t, const tg_cost *actual)',
	'void tg_release(uintptr_t c, void *t)',
	'const char *tg_strerror(int err)',
];

function load() {
	koffi.struct('tg_cost', { requests: 'uint64_t', tokens: 'uint64_t',
	    images: 'uint64_t' });
	const tried = [];
	for (const p of candidates()) {
		// A name without a slash goes to the loader; a path must exist,
		// except $TOLLGATE_LIB, whose failure is worth its own message.
		if (p.includes('/') && !fs.existsSync(p) &&
		    !process.env.TOLLGATE_LIB) {
			tried.push(p);
			continue;
		}
		let lib;
		try {
			lib = koffi.load(p);
		} catch (e) {
			tried.push(`${p} (${e.message})`);
			continue;
		}
		const fn = {};
		try {
			for (const proto of PROTOS) {
				const name = proto.match(/(tg_[a-z_]+)\(/)[1];
				fn[name] = lib.func(proto);
			}
		} catch (e) {
			// An older library where the loader looks: not ours.
			tried.push(`${p} (an older libtollgate: ${e.message})`);
			lib.unload();
			continue;
		}
		return { fn, path: p };
	}
	throw new Error('libtollgate not found; tried ' + tried.join(', ') +
	    ' (set TOLLGATE_LIB to the .so)');
}

module.exports = load();
module.exports.TICKET_BYTES = 128;	/* sizeof(tg_ticket) */
