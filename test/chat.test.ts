/**
 * Chat through the engines (native, and WASM when built), the pipeline and `phoenix-local run --chat`:
 * the prompt is the core's rendering of the model's template, the answer stops at the template's
 * end-of-turn token (not returned), and a model without a template is a typed error.
 */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadBinding } from '../ts/binding/load.js';
import { TransformerEngine } from '../ts/engines/transformer-engine.js';
import type { ChatMessage, LoadedModel } from '../ts/engines/types.js';
import { LocalModelManager } from '../ts/models/manager.js';
import { LocalAIPipeline } from '../ts/pipeline/pipeline.js';
import { ProcessingMode } from '../ts/pipeline/modes.js';
import { END_OF_TURN_ID, EOS_ID, LLAMA_TINY, chatml, makeChatModel } from './chat-support.js';
import { ROOT, TEST_BACKENDS, copyModel, expectCode, requireBackend, requireNativeAddon, tempDir } from './helpers.js';

const CONVERSATION: ChatMessage[] = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Hello there' },
  { role: 'assistant', content: 'Hi.' },
  { role: 'user', content: 'What is the capital of France?' },
];

let scratch: Awaited<ReturnType<typeof tempDir>>;
let modelsDir: string;

beforeAll(async () => {
  scratch = await tempDir();
  modelsDir = path.join(scratch.dir, 'models');
  await mkdir(modelsDir);
  await makeChatModel(path.join(modelsDir, 'chat-tiny'));
  await copyModel(LLAMA_TINY, path.join(modelsDir, 'plain-tiny'));
});

afterAll(async () => scratch?.cleanup());

describe.each(TEST_BACKENDS)('engine chat on the %s binding', (backend) => {
  let engine: TransformerEngine;
  let chat: LoadedModel;
  let plain: LoadedModel;

  beforeAll(async () => {
    requireBackend(backend);
    engine = new TransformerEngine({ binding: await loadBinding({ backend }) });
    const manager = new LocalModelManager({ modelsDir, engines: [engine], measurePerformance: false });
    chat = await engine.loadModel(await manager.getModelMetadata('chat-tiny'));
    plain = await engine.loadModel(await manager.getModelMetadata('plain-tiny'));
  });

  afterAll(() => {
    chat?.dispose();
    plain?.dispose();
  });

  it('renders the conversation with the model template and reports its turn-ending ids', () => {
    expect(chat.info.hasChatTemplate).toBe(true);
    expect(plain.info.hasChatTemplate).toBe(false);
    const prompt = engine.renderChat(chat, CONVERSATION);
    expect(prompt.text).toBe(chatml(CONVERSATION));
    expect(prompt.stopTokenIds).toEqual([END_OF_TURN_ID, EOS_ID]);
    expect(engine.renderChat(chat, CONVERSATION, { addGenerationPrompt: false }).text).toBe(chatml(CONVERSATION, false));
    // An option renderChat does not take (chat's `tools`, a typo) is refused by name, as chat() refuses it.
    expect(() => engine.renderChat(chat, CONVERSATION, { tools: [] } as never)).toThrow('unknown renderChat option `tools` (known: addGenerationPrompt)');
  });

  it('chat is generation on the rendered prompt that also stops at the end-of-turn token', async () => {
    const rendered = chatml(CONVERSATION);
    const options = { maxTokens: 24, temperature: 0 };
    const answer = await engine.chat(chat, CONVERSATION, options);
    // The same as generating from the rendered text (no BOS added: the template writes its own) with
    // the turn-ending ids as stops.
    const same = await engine.predict(chat, rendered, { ...options, addSpecialTokens: false, stopTokenIds: [END_OF_TURN_ID] });
    expect(answer.tokenIds).toEqual(same.tokenIds);
    expect(answer.text).toBe(same.text);
    expect(answer.finishReason).toBe(same.finishReason);
    expect(answer.promptTokens).toBe((await chat.tokenize(rendered, { addSpecialTokens: false })).length);
    expect(answer.text).not.toContain('<|padding|>');
    expect(answer.tokenIds.slice(0, -1)).not.toContain(END_OF_TURN_ID);
    // Streaming gives the same text, chunk by chunk.
    const stream = engine.chatStream(chat, CONVERSATION, options);
    let streamed = '';
    for await (const chunk of stream) streamed += chunk.text;
    expect(streamed).toBe(answer.text);
    expect((await stream.result).tokenIds).toEqual(answer.tokenIds);
  });

  it('an abort signal stops a chat answer', async () => {
    const controller = new AbortController();
    const stream = engine.chatStream(chat, CONVERSATION, { maxTokens: 100, signal: controller.signal, temperature: 1, seed: 1 });
    let chunks = 0;
    for await (const _ of stream) if (++chunks === 2) controller.abort();
    const result = await stream.result;
    expect(['abort', 'stop']).toContain(result.finishReason);
    if (result.finishReason === 'abort') expect(result.generatedTokens).toBeLessThan(100);
  });

  it('refuses chat on a model without a template, bad messages and a state, with typed errors', async () => {
    const e = await expectCode(engine.chat(plain, CONVERSATION), 'E_INVALID_OPTION');
    expect(e.message).toContain('no chat template (none in tokenizer_config.json or chat_template.jinja)');
    await expectCode(() => engine.renderChat(plain, CONVERSATION), 'E_INVALID_OPTION');
    await expectCode(engine.chat(chat, [{ role: 'user' } as unknown as ChatMessage]), 'E_INVALID_OPTION');
    await expectCode(engine.chat(chat, 'hello' as unknown as ChatMessage[]), 'E_INVALID_OPTION');
    await expectCode(engine.chat(chat, []), 'E_INVALID_OPTION');
    // A state is an earlier turn's snapshot: four bytes are none.
    await expectCode(engine.chat(chat, CONVERSATION, { state: new Uint8Array(4) }), 'E_STATE_MISMATCH');
    await expectCode(engine.chat(chat, CONVERSATION, { state: [1, 2] as unknown as Uint8Array }), 'E_INVALID_OPTION');
    // A buffer transferred away reads as empty: the same code on both bindings (WASM failed copying it).
    const detached = new Uint8Array(8);
    structuredClone(detached.buffer, { transfer: [detached.buffer] });
    expect(detached.byteLength).toBe(0);
    await expectCode(engine.chat(chat, CONVERSATION, { state: detached }), 'E_STATE_MISMATCH');
    await expectCode(engine.predict(chat, 'x', { state: detached }), 'E_STATE_MISMATCH');
  });

  it("continues from an earlier turn's state: only the new turn is fed, as continuing that state with it would", async () => {
    const options = { maxTokens: 6, temperature: 0 };
    // The state a reply leaves: the conversation up to its answer, read. (Built from the rendered
    // turns here: this random-weight model's own answers are byte soup that does not tokenize back
    // to the same ids, and then the state is not reused — see below.)
    const earlier: ChatMessage[] = [...CONVERSATION, { role: 'assistant', content: 'Paris.' }];
    const read = engine.stream(chat, { ids: await chat.tokenize(engine.renderChat(chat, earlier, { addGenerationPrompt: false }).text, { addSpecialTokens: false }) }, options);
    const state = read.exportState();
    read.dispose?.();
    const next: ChatMessage[] = [...earlier, { role: 'user', content: 'And then?' }];
    const fresh = await engine.chat(chat, next, options);
    const continued = await engine.chat(chat, next, { ...options, state });
    expect(fresh.restoredTokens).toBe(0);
    expect(continued.restoredTokens).toBeGreaterThan(0);
    expect(continued.promptTokens).toBeGreaterThan(0);
    expect(continued.promptTokens + continued.restoredTokens!).toBe(fresh.promptTokens);
    // The same run as a generation continuing the state with the rest of the rendered conversation.
    const rendered = engine.renderChat(chat, next);
    const ids = await chat.tokenize(rendered.text, { addSpecialTokens: false });
    const rest = { ids: ids.slice(continued.restoredTokens) };
    const direct = await engine.predict(chat, rest, { ...options, state, stopTokenIds: rendered.stopTokenIds });
    expect([continued.tokenIds, continued.text]).toEqual([direct.tokenIds, direct.text]);
    // An earlier turn edited since, or an answer whose text does not tokenize back to its ids: the
    // conversation no longer begins with the state's tokens. This model's state is a KV cache, which
    // keeps the tokens both share and forgets the rest; the rest of the conversation is fed.
    const answer = await engine.chat(chat, CONVERSATION, { ...options, returnState: true });
    expect(answer.text).toContain('\uFFFD'); // a broken byte sequence: its ids do not come back
    const answerIds = [...(await chat.tokenize(engine.renderChat(chat, CONVERSATION).text, { addSpecialTokens: false })), ...answer.tokenIds];
    const edited: ChatMessage[] = [{ role: 'user', content: 'Something else' }, ...next.slice(1)];
    const afterAnswer: ChatMessage[] = [...CONVERSATION, { role: 'assistant', content: answer.text }, { role: 'user', content: 'And then?' }];
    for (const [messages, old, oldIds] of [[edited, state, ids.slice(0, ids.length - continued.promptTokens)], [afterAnswer, answer.state, answerIds]] as const) {
      const now = await chat.tokenize(engine.renderChat(chat, messages).text, { addSpecialTokens: false });
      let shared = 0;
      while (shared < now.length && now[shared] === oldIds[shared]) shared++;
      expect(shared).toBeLessThan(oldIds.length); // the state's tokens are not all the conversation's
      expect(shared).toBeGreaterThan(0);
      const [withState, without] = [await engine.chat(chat, messages, { ...options, state: old }), await engine.chat(chat, messages, options)];
      expect(withState.restoredTokens).toBe(shared);
      expect(withState.promptTokens).toBe(without.promptTokens - shared);
    }
  });
});

describe('pipeline requests with messages', () => {
  let pipeline: LocalAIPipeline;

  beforeAll(() => {
    requireNativeAddon();
    pipeline = new LocalAIPipeline({ modelsDir, maxConcurrency: 1, defaultMode: ProcessingMode.ENERGY_EFFICIENT });
  });

  afterAll(() => pipeline?.dispose());

  it('answers a conversation as engine.chat does', async () => {
    const result = await pipeline.process({ id: 'c1', messages: CONVERSATION, taskType: 'generation', modelPreference: 'chat-tiny', options: { maxTokens: 16, temperature: 0 } });
    expect(result.success).toBe(true);
    const engine = new TransformerEngine({ binding: await loadBinding({ backend: 'native' }) });
    const manager = new LocalModelManager({ modelsDir, engines: [engine], measurePerformance: false });
    const model = await engine.loadModel(await manager.getModelMetadata('chat-tiny'));
    try {
      const direct = await engine.chat(model, CONVERSATION, { maxTokens: 16, temperature: 0, returnState: true });
      expect(result.text).toBe(direct.text);
      expect(result.promptTokens).toBe(direct.promptTokens);
      expect(result.metadata.restoredTokens).toBeUndefined();
      // The next turn with the answer's state: the result says how many tokens it took from it.
      const next = [...CONVERSATION, { role: 'assistant' as const, content: direct.text }, { role: 'user' as const, content: 'More?' }];
      const [withState, without] = [
        await pipeline.process({ id: 'c2', messages: next, taskType: 'generation', modelPreference: 'chat-tiny', options: { maxTokens: 4, temperature: 0, state: direct.state } }),
        await pipeline.process({ id: 'c3', messages: next, taskType: 'generation', modelPreference: 'chat-tiny', options: { maxTokens: 4, temperature: 0 } }),
      ];
      expect(withState.success).toBe(true);
      expect(withState.metadata.restoredTokens).toBeGreaterThan(0);
      expect(withState.promptTokens + withState.metadata.restoredTokens!).toBe(without.promptTokens);
    } finally {
      model.dispose();
    }
  });

  it('refuses messages with input, messages for scoring, and chat on a model without a template', async () => {
    const both = await pipeline.process({ id: 'c2', input: 'x', messages: CONVERSATION, taskType: 'generation' });
    expect(both).toMatchObject({ success: false, errorCode: 'E_INVALID_OPTION' });
    const scoring = await pipeline.process({ id: 'c3', messages: CONVERSATION, taskType: 'scoring' });
    expect(scoring).toMatchObject({ success: false, errorCode: 'E_INVALID_OPTION' });
    const plain = await pipeline.process({ id: 'c4', messages: CONVERSATION, taskType: 'generation', modelPreference: 'plain-tiny', options: { maxTokens: 4 } });
    expect(plain).toMatchObject({ success: false, errorCode: 'E_INVALID_OPTION' });
    expect(plain.errorMessage).toContain('no chat template');
  });
});

describe('phoenix-local run --chat', () => {
  const BIN = path.join(ROOT, 'bin/phoenix-local.js');

  beforeAll(() => {
    requireNativeAddon();
    const build = spawnSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', path.join(ROOT, 'tsconfig.json')], { cwd: ROOT, encoding: 'utf8' });
    if (build.status !== 0) throw new Error(`tsc failed:\n${build.stdout}${build.stderr}`);
  });

  function cli(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [BIN, ...args], { cwd: scratch.dir, env: { ...process.env, PHOENIX_MODELS_DIR: modelsDir } });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', reject);
      child.on('close', (status) => resolve({ status, stdout, stderr }));
    });
  }

  it('asks one user message (after --system) and prints the rendered prompt with --verbose', async () => {
    const run = await cli(['run', 'chat-tiny', '--chat', 'What is the capital of France?', '--system', 'Be brief.', '--verbose', '-n', '8', '-q']);
    expect(run.stderr).toContain(`prompt ${JSON.stringify(chatml([{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'What is the capital of France?' }]))}`);
    expect(run.status).toBe(0);
    expect(run.stderr).toMatch(/\d+ generated, \d+ prompt tokens/);
    expect(run.stdout).not.toContain('<|padding|>');
  });

  it('fails typed on a model without a template and on --chat with a prompt', async () => {
    const plain = await cli(['run', 'plain-tiny', '--chat', 'hi', '-q']);
    expect(plain.status).toBe(1);
    expect(plain.stderr).toContain('E_INVALID_OPTION');
    expect(plain.stderr).toContain('no chat template');
    const both = await cli(['run', 'chat-tiny', '--chat', 'hi', 'extra prompt']);
    expect(both.status).toBe(2);
    const system = await cli(['run', 'chat-tiny', 'plain prompt', '--system', 'x']);
    expect(system.status).toBe(2);
  });

  it('chat: --help describes the commands; a model without a template is refused before the prompt', async () => {
    const help = await cli(['chat', '--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/\/reset/);
    expect(help.stdout).toMatch(/Ctrl-C/);
    const plain = await cli(['chat', 'plain-tiny', '-q']);
    expect(plain.status).toBe(1);
    expect(plain.stderr).toContain('E_INVALID_OPTION');
    expect(plain.stderr).toContain('no chat template');
    expect(plain.stdout).toBe('');
    // A folder as standard input reads as empty in Node: refused, not a silent end of the chat.
    const folder = openSync(scratch.dir, 'r');
    try {
      const run = spawnSync(process.execPath, [BIN, 'chat', 'chat-tiny', '-q'], { cwd: scratch.dir, encoding: 'utf8', stdio: [folder, 'pipe', 'pipe'], env: { ...process.env, PHOENIX_MODELS_DIR: modelsDir } });
      expect([run.status, run.stderr.trim()]).toEqual([1, 'phoenix-local: E_INVALID_OPTION: standard input is a folder: chat reads questions from a terminal, a pipe or a file']);
    } finally {
      closeSync(folder);
    }
    // Lines piped in (no terminal) are answered in turn; end of input ends the program.
    // `chat` with `input` piped to its stdin.
    const chatPiped = (args: string[], input: string) =>
      new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve, reject) => {
        const child = spawn(process.execPath, [BIN, 'chat', 'chat-tiny', ...args], { cwd: scratch.dir, env: { ...process.env, PHOENIX_MODELS_DIR: modelsDir } });
        let [stdout, stderr] = ['', ''];
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        child.on('error', reject);
        child.on('close', (status) => resolve({ status, stdout, stderr }));
        child.stdin.end(input);
      });
    const piped = await chatPiped(['--verbose', '-q', '-n', '3'], 'first\n/reset\n/rset\nsecond\n');
    expect(piped.status).toBe(0);
    const prompts = piped.stderr.split('\n').filter((l) => l.startsWith('prompt '));
    expect(prompts).toEqual([`prompt ${JSON.stringify(chatml([{ role: 'user', content: 'first' }]))}`, `prompt ${JSON.stringify(chatml([{ role: 'user', content: 'second' }]))}`]);
    expect(piped.stderr).toContain('(conversation cleared)');
    // No `> ` prompts between the answers when nobody types them.
    expect(piped.stdout.startsWith('> ')).toBe(false);
    // A maxTokens that fills the whole context is refused at the start, not on every question.
    const full = await chatPiped(['-q', '-n', '1000000'], 'hello\n');
    expect(full.status).toBe(2);
    expect(full.stderr).toMatch(/E_INVALID_OPTION: --max-tokens 1000000 leaves no room for a question in the model's \d+-token context/);
    // A mistyped command is said so, not sent to the model (the two prompts above are all there were).
    expect(piped.stderr).toContain('unknown command /rset: /reset clears the conversation, /exit quits');
  });

  it('chat: without -n an answer may fill the context (the help\'s default), not the library\'s 256 tokens', async () => {
    // chat-tiny with a 1024-token context: greedy, its answer to "hello" runs past 256 tokens.
    const long = await makeChatModel(path.join(modelsDir, 'chat-long'));
    const config = path.join(long, 'config.json');
    await writeFile(config, (await readFile(config, 'utf8')).replace('"max_position_embeddings": 256', '"max_position_embeddings": 1024'));
    const run = spawnSync(process.execPath, [BIN, 'chat', 'chat-long', '-q', '--verbose'], { cwd: scratch.dir, encoding: 'utf8', input: 'hello\n', env: { ...process.env, PHOENIX_MODELS_DIR: modelsDir } });
    expect(run.status).toBe(0);
    const stats = /(\d+) generated, (\d+) prompt tokens.*finish (\w+)/.exec(run.stderr);
    expect(stats).not.toBeNull();
    const [generated, prompt, finish] = [Number(stats![1]), Number(stats![2]), stats![3]];
    expect(generated).toBeGreaterThan(256);
    // It ends at the model's end of turn, or where the context is full.
    if (finish === 'length') expect(generated + prompt).toBe(1024);
    else expect(finish).toBe('stop');
    // -n still caps it.
    const capped = spawnSync(process.execPath, [BIN, 'chat', 'chat-long', '-q', '--verbose', '-n', '5'], { cwd: scratch.dir, encoding: 'utf8', input: 'hello\n', env: { ...process.env, PHOENIX_MODELS_DIR: modelsDir } });
    expect(capped.stderr).toMatch(/ 5 generated, .*finish length/);
  });
});
