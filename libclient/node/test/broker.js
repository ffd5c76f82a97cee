'use strict';
/*
 * broker: a real tollgated for the Node tests, as tests/helpers.c starts
 * one for the C tests: a temp config under a [broker] section of our own,
 * a segment name no other test uses, everything undone afterwards.
 */
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const tollgate = require('..');

const BUILD = path.resolve(process.env.TG_BUILD ||
    path.join(__dirname, '..', '..', '..', 'build'));
let seq = 0;
const running = new Set();

class Broker {
	constructor(body) {
		this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tgnode.'));
		this.segment = `tgnode-${process.pid}-${seq++}`;
		this.conf = path.join(this.dir, 'tollgate.conf');
		this.log = path.join(this.dir, 'tollgated.log');
		fs.writeFileSync(this.conf, `[broker]\nsegment = ${this.segment}\n` +
		    `pidfile = ${this.dir}/tollgated.pid\n\n${body}`);
		this.proc = null;
		running.add(this);
	}

	/* Resolves when the segment is this broker's and a client opens it;
	   null where tollgated cannot use io_uring (the caller skips). */
	async start() {
		const log = fs.openSync(this.log, 'a');
		this.proc = spawn(path.join(BUILD, 'tollgated'),
		    ['-d', '-c', this.conf], { stdio: ['ignore', log, log] });
		fs.closeSync(log);
		this.exited = new Promise((r) => this.proc.on('exit', r));
		const deadline = Date.now() + 10000;
		while (Date.now() < deadline) {
			if (this.proc.exitCode !== null) {
				const text = this.logText();
				if (text.includes('io_uring'))
					return null;
				throw new Error(`tollgated exited: ${text}`);
			}
			try {
				if (tollgate.statSync(this.segment).broker.pid ===
				    this.proc.pid) {
					await tollgate.open(this.segment).close();
					return this;
				}
			} catch (e) {
				/* not yet */
			}
			await new Promise((r) => setTimeout(r, 10));
		}
		throw new Error(`tollgated not ready: ${this.logText()}`);
	}

	logText() {
		return fs.readFileSync(this.log, 'utf8');
	}

	stat() {
		return tollgate.statSync(this.segment);
	}

	key(name) {
		return this.stat().keys.find((k) => k.name === name);
	}

	limit(name, kind) {
		return this.key(name).limits.find((l) => l.kind === kind);
	}

	async stop() {
		if (this.proc && this.proc.exitCode === null &&
		    this.proc.signalCode === null) {
			this.proc.kill('SIGTERM');
			await this.exited;
		}
		for (const n of [this.segment, this.segment + '.conf',
		    this.segment + '.lock'])
			fs.rmSync(`/dev/shm/${n}`, { force: true });
		if (!process.env.TG_KEEP)
			fs.rmSync(this.dir, { recursive: true, force: true });
		running.delete(this);
	}
}

/* Whatever a failed test left running. */
process.on('exit', () => {
	for (const b of running) {
		if (b.proc && b.proc.exitCode === null)
			b.proc.kill('SIGKILL');
		for (const n of [b.segment, b.segment + '.conf',
		    b.segment + '.lock'])
			fs.rmSync(`/dev/shm/${n}`, { force: true });
	}
});

/* A started broker on body, or null (t.skip with the reason). */
async function broker(t, body) {
	const b = new Broker(body);
	if (await b.start() === null) {
		await b.stop();
		t.skip('tollgated cannot use io_uring here');
		return null;
	}
	return b;
}

module.exports = { Broker, broker, BUILD };
