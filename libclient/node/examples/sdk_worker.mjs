// sdk_worker.mjs: npm install openai @anthropic-ai/sdk /usr/local/lib/node_modules/tollgate
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import tollgate from 'tollgate';

// The key that pays for a request: the first rule that matches it.
const fetch = tollgate.fetch({
  rules: [
    { path: '/v1/messages', key: 'anthropic' },
    { model: 'gpt-image-1', key: 'openai/gpt-image-1' },
    { path: '/v1/', key: 'openai' },
  ],
  tries: 5,        // RETRY advice: wait out the host's pause, send again
});
// maxRetries: 0, so that only tollgate retries, on the whole host's clock.
const openai = new OpenAI({ fetch, maxRetries: 0 });
const anthropic = new Anthropic({ fetch, maxRetries: 0 });

const messages = [{ role: 'user', content: 'Name a lighthouse.' }];
const [chat, images, message] = await Promise.all([
  openai.chat.completions.create({ model: 'gpt-4o-mini', max_tokens: 200, messages }),
  openai.images.generate({ model: 'gpt-image-1', prompt: 'a lighthouse at dusk', n: 2 }),
  anthropic.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 200, messages }),
]);
let streamed = '';    // settled when the stream ends, from its usage
const stream = await anthropic.messages.create({
  model: 'claude-sonnet-4-5', max_tokens: 200, messages, stream: true });
for await (const event of stream)
  if (event.type === 'content_block_delta') streamed += event.delta.text;
console.log(chat.choices[0].message.content, images.data.length, message.content[0].text, streamed);
