/**
 * A hostile chat template (from a GGUF header or tokenizer_config.json) that builds a huge value in a
 * few instructions must fail typed (E_BAD_CONFIG naming the template's source and the memory limit),
 * never abort Node on a failed allocation: through `phoenix-local run --chat` in a child process, and
 * through the engine in this process, which keeps chatting with other models afterwards. On WASM the
 * instance traps at the budget; the error is still E_BAD_CONFIG and a fresh instance chats.
 */
import { spawn, spawnSync } from 'node:child_process';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadBinding } from '../ts/binding/load.js';
import { TransformerEngine } from '../ts/engines/transformer-engine.js';
import { LocalModelManager } from '../ts/models/manager.js';
import { chatml, makeChatModel } from './chat-support.js';
import { ROOT, WASM_BUILT, WASM_REQUIRED, expectCode, requireBackend, requireNativeAddon, tempDir } from './helpers.js';

const BIN = path.join(ROOT, 'bin/phoenix-local.js');
const LLAMA_GGUF = path.join(ROOT, 'test/fixtures/gguf-llama-tiny/llama-tiny.f32.gguf');

/** Doubles a string 60 times: 2^60 bytes from ~300 instructions. */
const DOUBLING = "{% set ns = namespace(x='a') %}{% for i in range(60) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ ns.x | length }}";
/** Grows without any operator: `join` of a lazily repeated list (100 GB). */
const JOINED = "{{ ([('x' * 1000000)] * 100000) | join }}";
/** Cheap in fuel and memory, an hour of `replace` over a 1 MB string: stopped by the time limit. */
const SLOW = "{% set s = 'a' * 1000000 %}{% set ns = namespace(n=0) %}{% for i in range(100000) %}{% set ns.n = ns.n + (s.replace('a', 'bb') | length) %}{% endfor %}{{ ns.n }}";
/** A reversed slice of an empty list: minijinja 2.24 panics (index out of bounds) rendering it. */
const PANICKING = '{{ [][::-1] }}';

/** Writes `template` as `tokenizer.chat_template` into a copy of a GGUF file (the first key of its header). */
async function ggufWithTemplate(from: string, to: string, template: string): Promise<string> {
  const bytes = await readFile(from);
  expect(bytes.subarray(0, 4).toString('latin1')).toBe('GGUF');
  const key = Buffer.from('tokenizer.chat_template');
  // The inserted entry keeps the data section aligned when its length is a multiple of the
  // alignment (32 by default; 256 covers any power of two up to it): pad with a Jinja comment.
  const fixed = 8 + key.length + 4 + 8 + Buffer.byteLength(template) + 4;
  const value = Buffer.from(`${template}{#${'.'.repeat((256 - (fixed % 256)) % 256)}#}`);
  const entry = Buffer.alloc(8 + key.length + 4 + 8 + value.length);
  let at = entry.writeBigUInt64LE(BigInt(key.length), 0);
  at += key.copy(entry, at);
  at = entry.writeUInt32LE(8, at); // GGUF_TYPE_STRING
  at = entry.writeBigUInt64LE(BigInt(value.length), at);
  value.copy(entry, at);
  expect(entry.length % 256).toBe(0);
  const header = Buffer.from(bytes.subarray(0, 24));
  header.writeBigUInt64LE(header.readBigUInt64LE(16) + 1n, 16); // one more key-value pair
  await writeFile(to, Buffer.concat([header, entry, bytes.subarray(24)]));
  return to;
}

/** A copy of the chat fixture model whose tokenizer_config.json carries `template`. */
async function folderWithTemplate(to: string, template: string): Promise<string> {
  await makeChatModel(to);
  const config = JSON.parse(await readFile(path.join(to, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  await writeFile(path.join(to, 'tokenizer_config.json'), JSON.stringify({ ...config, chat_template: template }));
  return to;
}

let scratch: Awaited<ReturnType<typeof tempDir>>;
let modelsDir: string;

beforeAll(async () => {
  requireNativeAddon();
  scratch = await tempDir();
  modelsDir = path.join(scratch.dir, 'models');
  await mkdir(modelsDir);
  await ggufWithTemplate(LLAMA_GGUF, path.join(modelsDir, 'doubling.gguf'), DOUBLING);
  await folderWithTemplate(path.join(modelsDir, 'doubling-folder'), DOUBLING);
  await folderWithTemplate(path.join(modelsDir, 'joined-folder'), JOINED);
  await makeChatModel(path.join(modelsDir, 'chat-tiny'));
  await folderWithTemplate(path.join(modelsDir, 'panicking-folder'), PANICKING);
  await folderWithTemplate(path.join(modelsDir, 'slow-folder'), SLOW);
});

afterAll(async () => scratch?.cleanup());

describe('phoenix-local run --chat with a template that grows a huge value', () => {
  beforeAll(() => {
    const build = spawnSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', path.join(ROOT, 'tsconfig.json')], { cwd: ROOT, encoding: 'utf8' });
    if (build.status !== 0) throw new Error(`tsc failed:\n${build.stdout}${build.stderr}`);
  });

  function cli(args: string[]): Promise<{ status: number | null; signal: NodeJS.Signals | null; stderr: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [BIN, ...args], { cwd: scratch.dir, env: { ...process.env, PHOENIX_MODELS_DIR: modelsDir } });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', reject);
      child.on('close', (status, signal) => resolve({ status, signal, stderr }));
    });
  }

  it.each([
    ['a GGUF header', path.join('models', 'doubling.gguf'), 'tokenizer.chat_template'],
    ['tokenizer_config.json', path.join('models', 'doubling-folder'), 'tokenizer_config.json'],
    ['tokenizer_config.json (join)', path.join('models', 'joined-folder'), 'tokenizer_config.json'],
  ])('from %s: E_BAD_CONFIG naming the source and the limit, exit code 1, no signal', async (_, model, source) => {
    const run = await cli(['run', model, '--chat', 'hi', '-q', '-n', '2']);
    expect(run.signal).toBeNull();
    expect(run.status).toBe(1);
    expect(run.stderr).toContain('E_BAD_CONFIG');
    expect(run.stderr).toContain(source);
    expect(run.stderr).toMatch(/past the \d+ MiB a render may hold/);
    expect(run.stderr).not.toContain('ns.x');
  }, 60_000);
});

describe('phoenix-local run --chat with a template the renderer panics on', () => {
  it('is E_BAD_CONFIG on one line of stderr: the panic is not printed, even with RUST_BACKTRACE set', async () => {
    const run = spawnSync(process.execPath, [BIN, 'run', path.join('models', 'panicking-folder'), '--chat', 'hi', '-q', '-n', '2'], {
      cwd: scratch.dir,
      encoding: 'utf8',
      env: { ...process.env, PHOENIX_MODELS_DIR: modelsDir, RUST_BACKTRACE: '1' },
    });
    expect(run.signal).toBeNull();
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/^phoenix-local: E_BAD_CONFIG: .*tokenizer_config\.json/m);
    expect(run.stderr).not.toMatch(/panicked|backtrace|\.cargo/);
  }, 60_000);
});

describe('engine chat with a template that grows a huge value (native binding, this process)', () => {
  it('fails typed, fails again at once without rendering, and other models still chat', async () => {
    const engine = new TransformerEngine({ binding: await loadBinding({ backend: 'native' }) });
    const manager = new LocalModelManager({ modelsDir, engines: [engine], measurePerformance: false });
    const hostile = await engine.loadModel(await manager.getModelMetadata('doubling-folder'));
    const fine = await engine.loadModel(await manager.getModelMetadata('chat-tiny'));
    try {
      const conversation = [{ role: 'user', content: 'hi' }];
      const first = await expectCode(engine.chat(hostile, conversation, { maxTokens: 2 }), 'E_BAD_CONFIG');
      expect(first.message).toContain('tokenizer_config.json');
      const started = performance.now();
      const again = await expectCode(engine.chat(hostile, conversation, { maxTokens: 2 }), 'E_BAD_CONFIG');
      expect(performance.now() - started).toBeLessThan(1000);
      expect(again.message).toBe(first.message);
      expect(engine.renderChat(fine, conversation).text).toBe(chatml(conversation));
      expect((await engine.chat(fine, conversation, { maxTokens: 2, temperature: 0 })).tokenIds.length).toBeGreaterThan(0);
    } finally {
      hostile.dispose();
      fine.dispose();
    }
  });
});

describe.runIf(WASM_BUILT || WASM_REQUIRED)('engine chat with a template that grows a huge value (WASM binding)', () => {
  it('is E_BAD_CONFIG from the stopped instance, and a model loaded afterwards chats', async () => {
    requireBackend('wasm');
    const engine = new TransformerEngine({ binding: await loadBinding({ backend: 'wasm' }) });
    const manager = new LocalModelManager({ modelsDir, engines: [engine], measurePerformance: false });
    const conversation = [{ role: 'user', content: 'hi' }];
    const hostile = await engine.loadModel(await manager.getModelMetadata('doubling-folder'));
    const error = await expectCode(engine.chat(hostile, conversation, { maxTokens: 2 }), 'E_BAD_CONFIG');
    expect(error.message).toContain('tokenizer_config.json');
    expect(error.message).toMatch(/past the \d+ MiB a render may hold/);
    const fine = await engine.loadModel(await manager.getModelMetadata('chat-tiny'));
    try {
      expect(engine.renderChat(fine, conversation).text).toBe(chatml(conversation));
      expect((await engine.chat(fine, conversation, { maxTokens: 2, temperature: 0 })).tokenIds.length).toBeGreaterThan(0);
    } finally {
      fine.dispose(); // (the hostile model's handle died with its instance)
    }
  });

  it('a template that runs past the render time limit is E_BAD_CONFIG at about 5 s (the host clock reaches the core)', async () => {
    requireBackend('wasm');
    const engine = new TransformerEngine({ binding: await loadBinding({ backend: 'wasm' }) });
    const manager = new LocalModelManager({ modelsDir, engines: [engine], measurePerformance: false });
    const slow = await engine.loadModel(await manager.getModelMetadata('slow-folder'));
    const started = performance.now();
    const error = await expectCode(engine.chat(slow, [{ role: 'user', content: 'hi' }], { maxTokens: 2 }), 'E_BAD_CONFIG');
    const took = performance.now() - started;
    expect(error.message).toMatch(/slow-folder.*ran past the 5 s a render may take/);
    expect(took).toBeGreaterThan(4_900);
    expect(took).toBeLessThan(9_000);
  }, 30_000);
});

describe('engine chat with a template that runs past the render time limit (native binding)', () => {
  it('is E_BAD_CONFIG at about 5 s, and again at once', async () => {
    const engine = new TransformerEngine({ binding: await loadBinding({ backend: 'native' }) });
    const manager = new LocalModelManager({ modelsDir, engines: [engine], measurePerformance: false });
    const slow = await engine.loadModel(await manager.getModelMetadata('slow-folder'));
    try {
      const conversation = [{ role: 'user', content: 'hi' }];
      const started = performance.now();
      const first = await expectCode(engine.chat(slow, conversation, { maxTokens: 2 }), 'E_BAD_CONFIG');
      const took = performance.now() - started;
      expect(first.message).toMatch(/slow-folder.*ran past the 5 s a render may take/);
      expect(took).toBeGreaterThan(4_900);
      expect(took).toBeLessThan(7_000);
      const again = performance.now();
      await expectCode(engine.chat(slow, conversation, { maxTokens: 2 }), 'E_BAD_CONFIG');
      expect(performance.now() - again).toBeLessThan(1000);
    } finally {
      slow.dispose();
    }
  }, 30_000);
});
