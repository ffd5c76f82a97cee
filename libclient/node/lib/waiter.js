'use strict';
/*
 * waiter: private; a worker thread that sleeps in tg_acquire for the main
 * thread's concurrency waits, one key per thread, so a wait for a lease
 * (which only a futex reports without polling) never blocks the event
 * loop, nor ties up libuv's pool, where fs and DNS run.
 *
 * Jobs come in order and are served in order, so a process's waiters on
 * a key go in the order they came.  Each job has a state word in shared
 * memory: WAITING, then GRANTED (this thread took the ticket) or
 * ABANDONED (the main thread gave up: timeout, abort, close).  Whoever
 * moves it last gives the ticket back, so an abandoned grant never holds
 * a lease.  tg_acquire runs in slices of SLICE_NS, so an abandoned job or
 * a closing client frees the thread within one.
 */
const { parentPort, workerData } = require('worker_threads');
const { fn } = require('./native');

const WAITING = 0, GRANTED = 1, ABANDONED = 2;
const SLICE_NS = 100000000n;
const ETIMEDOUT = -110;

function nowNs() {
	return process.hrtime.bigint();
}

parentPort.on('message', (job) => {
	const { id, cost, ticket, state, deadline } = job;
	const c = workerData.client;
	let r = ETIMEDOUT;

	for (;;) {
		if (Atomics.load(state, 0) !== WAITING)
			break;
		let slice = SLICE_NS;
		if (deadline !== null) {
			const left = BigInt(deadline) - nowNs();
			if (left <= 0n)
				break;
			if (left < slice)
				slice = left;
		}
		r = fn.tg_acquire(c, workerData.key, cost, slice, ticket);
		if (r !== ETIMEDOUT)
			break;
	}
	if (r === 0 && Atomics.compareExchange(state, 0, WAITING, GRANTED) !==
	    WAITING) {
		fn.tg_release(c, ticket);	/* abandoned meanwhile */
		r = ETIMEDOUT;
	}
	parentPort.postMessage({ id, r });
});
