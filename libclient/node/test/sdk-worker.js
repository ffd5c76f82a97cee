'use strict';
/*
 * sdk-worker: one process of the fleet in sdk.test.js: the real openai
 * and @anthropic-ai/sdk packages, SDK retries off, every request through
 * tollgate.fetch, several requests at once.  argv: segment, base URL
 * (the fake API), worker id, rounds.  Prints one JSON line of what it saw.
 */
const { OpenAI } = require('openai');
const { Anthropic } = require('@anthropic-ai/sdk');
const tollgate = require('..');

const [segment, base, id, roundsArg] = process.argv.slice(2);
const rounds = Number(roundsArg);

async function main() {
	const client = tollgate.open(segment);
	const fetch = tollgate.fetch({
		client,
		rules: [
			{ path: '/v1/messages', key: 'anthropic' },
			{ model: 'gpt-image-1', key: 'openai/gpt-image-1' },
			{ path: '/v1/', key: 'openai' },
		],
		tries: 5,
		timeout: 60000,
	});
	const headers = { 'x-worker': id };
	const openai = new OpenAI({ apiKey: 'test', baseURL: `${base}/v1`,
	    fetch, maxRetries: 0, defaultHeaders: headers });
	const anthropic = new Anthropic({ apiKey: 'test', baseURL: base,
	    fetch, maxRetries: 0, defaultHeaders: headers });
	const messages = [{ role: 'user', content: 'Name a lighthouse.' }];
	const seen = { chat: 0, streamed: 0, images: 0, messages: 0,
	    text: new Set() };

	const jobs = [];
	for (let i = 0; i < rounds; i++) {
		jobs.push(async () => {
			const r = await openai.chat.completions.create({
			    model: 'gpt-4o-mini', max_tokens: 500, messages });
			seen.text.add(r.choices[0].message.content);
			seen.chat++;
		});
		jobs.push(async () => {
			const s = await openai.chat.completions.create({
			    model: 'gpt-4o-mini', max_tokens: 500, messages,
			    stream: true });
			let text = '';
			for await (const c of s)
				text += c.choices[0]?.delta?.content || '';
			seen.text.add(text);
			seen.streamed++;
		});
		jobs.push(async () => {
			const r = await anthropic.messages.create({
			    model: 'claude-sonnet-4-5', max_tokens: 500, messages });
			seen.text.add(r.content[0].text);
			seen.messages++;
		});
		jobs.push(async () => {
			const s = await anthropic.messages.create({
			    model: 'claude-sonnet-4-5', max_tokens: 500, messages,
			    stream: true });
			let text = '';
			for await (const ev of s)
				if (ev.type === 'content_block_delta')
					text += ev.delta.text;
			seen.text.add(text);
			seen.streamed++;
		});
		if (i % 2 === 0) {
			jobs.push(async () => {
				const r = await openai.images.generate({
				    model: 'gpt-image-1', prompt: 'a lighthouse', n: 2 });
				seen.images += r.data.length;
			});
		}
	}
	// Three at a time, as a worker's async tasks.
	const errors = [];
	const lanes = Array.from({ length: 3 }, async () => {
		while (jobs.length) {
			try {
				await jobs.shift()();
			} catch (e) {
				errors.push(`${e.status || ''} ${e.code || ''} ${e.message}`);
			}
		}
	});
	await Promise.all(lanes);
	await client.close();
	seen.text = [...seen.text];
	seen.errors = errors;
	process.stdout.write(JSON.stringify(seen) + '\n');
}

main().catch((e) => {
	console.error(e);
	process.exit(1);
});
