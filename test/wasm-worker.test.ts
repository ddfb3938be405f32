/**
 * In Node the WASM binding runs the core in a worker thread (wasm/node-host.js ⇄ node-worker.js):
 * a long prefill must leave the main thread's event loop free (timers, AbortSignal.timeout), while
 * the binding keeps its exact `RawBinding` shape — synchronous methods stay synchronous, every model
 * source loads, errors keep their codes, a crashed worker fails calls instead of hanging them, and
 * an idle worker never keeps the process alive. PHOENIX_WASM_THREAD=main keeps the in-thread binding.
 */
import { spawn } from 'node:child_process';
import { existsSync, openAsBlob } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';

import { defaultWasmPath, loadBinding } from '../ts/binding/load.js';
import type { RawBinding, RawModel } from '../ts/binding/types.js';
import { LITE, MODELS_DIR, ROOT, TINY, WASM_BUILT, WASM_REQUIRED, expectCode, rawFailure, requireBackend } from './helpers.js';

interface WasmEntry extends RawBinding {
  instances(): number;
  injectFault(kind: string): void;
}

/** The long prefill runs on SmolLM2 (a transformer) when it is here, else on the bundled SSM. */
const SMOLLM2 = process.env.PHOENIX_SMOLLM2_GGUF ?? path.join(MODELS_DIR, 'SmolLM2-135M-Instruct.Q4_1.gguf');
const LONG_MODEL = existsSync(SMOLLM2) ? SMOLLM2 : LITE;
/** How long the measured prefill should take: long enough that a blocked loop cannot hide. */
const TARGET_PREFILL_MS = 2000;


/** Runs `code` as an ES module in a child Node; resolves its output and how long it lived after printing `done`. */
function child(code: string, env: Record<string, string> = {}, timeoutMs = 60_000): Promise<{ out: string; err: string; status: number | null; afterDoneMs: number | null }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, ['--input-type=module', '-e', code], { cwd: ROOT, env: { ...process.env, ...env, WASM: defaultWasmPath() } });
    let out = '';
    let err = '';
    let doneAt: number | null = null;
    proc.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (doneAt === null && out.includes('done')) doneAt = performance.now();
    });
    proc.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`child still running after ${timeoutMs} ms (out: ${out}; err: ${err})`));
    }, timeoutMs);
    proc.on('close', (status) => {
      clearTimeout(timer);
      resolve({ out, err, status, afterDoneMs: doneAt === null ? null : performance.now() - doneAt });
    });
  });
}

describe.runIf(WASM_BUILT || WASM_REQUIRED)('the WASM binding runs in a worker thread', () => {
  let wasm: WasmEntry;
  let binding: RawBinding;
  let long: RawModel;
  /** A prompt whose prefill takes about TARGET_PREFILL_MS here. */
  let longIds: number[];
  /** Its prefill time, estimated from the calibration (linear in the length: an underestimate). */
  let longPrefillMs: number;

  beforeAll(async () => {
    requireBackend('wasm');
    expect(process.env.PHOENIX_WASM_THREAD ?? 'worker', 'these tests are about the worker').toBe('worker');
    wasm = (await import(pathToFileURL(defaultWasmPath()).href)) as WasmEntry;
    binding = (await loadBinding({ backend: 'wasm' })).binding;
    long = await binding.loadModel(LONG_MODEL);
    // Calibrate on this machine: a fixed length would prove nothing on a fast one, or time out on a slow one.
    const prompt = (length: number): number[] => Array.from({ length }, (_, i) => 1 + ((i * 37) % 1000));
    const room = (long.info().contextLength ?? Infinity) - 8;
    let probe = 64;
    let prefillMs = 0;
    for (;;) {
      const generation = long.generate({ ids: prompt(probe) }, { maxTokens: 1, temperature: 0 });
      await generation.next();
      prefillMs = generation.stats().prefillMs;
      generation.dispose();
      if (prefillMs >= 300 || probe * 2 > room) break;
      probe *= 2;
    }
    longIds = prompt(Math.min(room, Math.ceil((probe * TARGET_PREFILL_MS) / prefillMs)));
    longPrefillMs = (prefillMs * longIds.length) / probe;
  });

  it('a long prefill leaves the event loop free: timers keep firing; info, stats and lost answer at once', async () => {
    const generation = long.generate({ ids: longIds }, { maxTokens: 2, temperature: 0 });
    let last = performance.now();
    let maxGap = 0;
    let ticks = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      maxGap = Math.max(maxGap, now - last);
      last = now;
      ticks++;
    }, 10);
    const quick: number[] = [];
    const midway = setTimeout(() => {
      for (const call of [() => long.info(), () => generation.stats(), () => long.lost?.()]) {
        const started = performance.now();
        call();
        quick.push(performance.now() - started);
      }
    }, 200);
    const started = performance.now();
    const first = await generation.next();
    const wall = performance.now() - started;
    clearInterval(timer);
    maxGap = Math.max(maxGap, performance.now() - last); // a loop blocked to the end never ticked at all
    clearTimeout(midway);
    const { prefillMs, promptTokens } = generation.stats();
    const measured = { LONG_MODEL, promptTokens, prefillMs, wall, maxGap, ticks, quick };
    expect(first?.tokenId, JSON.stringify(measured)).toEqual(expect.any(Number));
    expect(prefillMs, JSON.stringify(measured)).toBeGreaterThan(1000);
    // Blocked, the largest gap would be the whole prefill (> 1 s); free, it is a timer period plus scheduling noise.
    expect(maxGap, JSON.stringify(measured)).toBeLessThan(Math.min(400, prefillMs / 3));
    expect(ticks, JSON.stringify(measured)).toBeGreaterThan(prefillMs / 50);
    expect(quick, JSON.stringify(measured)).toHaveLength(3);
    for (const ms of quick) expect(ms, JSON.stringify(measured)).toBeLessThan(100);
    generation.dispose();
  });

  it('an AbortSignal.timeout fired during the prefill stops it part-way (between two layers), before any token', async () => {
    const generation = long.generate({ ids: longIds }, { maxTokens: 50, temperature: 0 });
    const started = performance.now();
    let firedAfter = NaN;
    const signal = AbortSignal.timeout(150);
    signal.addEventListener('abort', () => {
      firedAfter = performance.now() - started;
      generation.cancel();
    });
    const first = await generation.next();
    const stoppedAfter = performance.now() - started;
    const { generatedTokens } = generation.stats();
    const measured = JSON.stringify({ LONG_MODEL, promptTokens: longIds.length, longPrefillMs, firedAfter, stoppedAfter });
    expect(first?.finishReason, measured).toBe('abort');
    expect(await generation.next()).toBeNull();
    // The timer ran on time, while the worker was still reading the prompt…
    expect(firedAfter, measured).toBeLessThan(longPrefillMs / 2);
    // …and the worker stopped the prefill within a layer's time, not at its end (the calibrated
    // prompt is one or a few prefill pieces of the model's ~30 layers).
    expect(stoppedAfter - firedAfter, measured).toBeLessThan(longPrefillMs / 3);
    expect(generatedTokens).toBe(0);
    // The generation still answers after the stop: its history is the prompt, nothing was sampled.
    expect(generation.tokenIds()).toHaveLength(longIds.length);
    generation.dispose();
  });

  it('a CancelFlag set while score runs stops it part-way with E_ABORTED', async () => {
    const flag = new binding.CancelFlag();
    const started = performance.now();
    const timer = setTimeout(() => flag.cancel(), 150);
    const error = await rawFailure(() => long.score(longIds, {}, flag));
    const stoppedAfter = performance.now() - started;
    clearTimeout(timer);
    const measured = JSON.stringify({ LONG_MODEL, ids: longIds.length, longPrefillMs, stoppedAfter, message: error.message });
    expect(error.code, measured).toBe('E_ABORTED');
    expect(error.message, measured).toMatch(new RegExp(`score: cancelled after \\d+ of ${longIds.length} ids`));
    // Run to its end, scoring would take at least the prefill's time.
    expect(stoppedAfter, measured).toBeLessThan(150 + longPrefillMs / 3);
    // Not cancelled, the same model scores (the stopped call left nothing behind).
    expect((await long.score(longIds.slice(0, 8), {}, new binding.CancelFlag())).tokenLogprobs).toHaveLength(7);
  });

  it('a generation started while another one\'s prefill runs does not wait for it; an error starting it comes from its first next()', async () => {
    const running = long.generate({ ids: longIds }, { maxTokens: 1, temperature: 0 });
    const first = running.next();
    await new Promise((resolve) => setTimeout(resolve, 200)); // the worker is inside the prefill now
    let started = performance.now();
    const second = long.generate({ ids: [1, 2, 3] }, { maxTokens: 2, temperature: 0 });
    const startMs = performance.now() - started;
    // A state of another model: refused when the worker starts the generation, after the prefill.
    started = performance.now();
    const refused = long.generate({ ids: [1] }, { maxTokens: 1 }, new Uint8Array(64));
    const refusedStartMs = performance.now() - started;
    const tokens: number[] = [];
    for (let step = await second.next(); step !== null; step = await second.next()) if (step.tokenId != null) tokens.push(step.tokenId);
    const error = await rawFailure(() => refused.next());
    const { prefillMs } = (await first, running.stats());
    // Waiting for the prefill would have taken about all of it (> 1 s).
    expect(startMs, `prefill ${prefillMs} ms`).toBeLessThan(Math.min(100, prefillMs / 10));
    expect(refusedStartMs, `prefill ${prefillMs} ms`).toBeLessThan(Math.min(100, prefillMs / 10));
    expect(tokens).toHaveLength(2);
    expect(error.code).toBe('E_STATE_MISMATCH');
    expect(() => refused.exportState()).toThrow(/E_STATE_MISMATCH|state/);
    for (const generation of [running, second, refused]) generation.dispose();
  });

  it('synchronous methods stay synchronous: generate, exportState, snapshotLength, detokenize, renderChat, tokenIds', async () => {
    // The raw module's model, to see its errors' wire form (`long` is wrapped: typed errors).
    const wasmModel = await wasm.loadModel(TINY);
    const ids = await long.tokenize('Once upon a time, there was a little', true);
    expect(long.detokenize(ids, true)).toBe('Once upon a time, there was a little');
    const generation = long.generate({ ids }, { maxTokens: 4, temperature: 0 });
    for (let step = await generation.next(); step !== null; step = await generation.next()) {
      // drain
    }
    const state = generation.exportState();
    expect(state).toBeInstanceOf(Uint8Array);
    expect(long.snapshotLength(state.subarray(0, long.info().snapshotHeaderBytes))).toBe(state.length);
    expect(generation.tokenIds()).toHaveLength(ids.length + 4);
    expect(generation.stats()).toMatchObject({ promptTokens: ids.length, generatedTokens: 4 });
    // A continuation from the exported state (copied over: the caller's bytes stay usable).
    const continued = long.generate({ ids: [] }, { maxTokens: 1, temperature: 0 }, state);
    expect(await continued.next()).not.toBeNull();
    expect(state.byteLength).toBeGreaterThan(0);
    const messages = [{ role: 'user', content: 'Hi' }];
    if (long.info().hasChatTemplate) {
      expect(long.renderChat(messages, true).text).toContain('Hi');
      const chat = long.generateChat(messages, { maxTokens: 1, temperature: 0 });
      expect(await chat.next()).not.toBeNull();
      chat.dispose();
    }
    // TINY has no chat template: refused at once, in the core's words.
    expect(() => wasmModel.renderChat(messages, true)).toThrow(/^\[E_INVALID_OPTION\]/);
    expect(() => wasmModel.generateChat(messages, {}, null)).toThrow(/^\[E_INVALID_OPTION\]/);
    // Bad options are refused by generate() itself, synchronously, with the core's code.
    expect(() => wasmModel.generate({ ids }, { maxTokens: 0 })).toThrow(/^\[E_INVALID_OPTION\] option `maxTokens`/);
    expect(() => wasm.checkGenerateOptions({ temperature: -1 })).toThrow(/^\[E_INVALID_OPTION\]/);
    expect(() => wasm.setThreads(-1)).toThrow(/^\[E_INVALID_OPTION\]/);
    generation.dispose();
    continued.dispose();
    wasmModel.dispose();
    // dispose() never waits; stats() still answers after it.
    expect(generation.stats()).toMatchObject({ generatedTokens: 4 });
    await expectCode(async () => generation.exportState(), 'E_INVALID_OPTION');
  });

  it('reader functions (bytes, Blobs, file-backed Blobs) and in-memory files load the same model', async () => {
    const folder = await binding.loadModel(TINY);
    const expected = Array.from(await folder.logits([0, 5, 17]));
    folder.dispose();
    const names = ['config.json', 'tokenizer.json', 'model.safetensors'];
    const bytes = Object.fromEntries(await Promise.all(names.map(async (name) => [name, new Uint8Array(await readFile(path.join(TINY, name)))] as const)));
    const asked: string[] = [];
    const sources = {
      reader: async (name: string) => {
        asked.push(name);
        return bytes[name] ?? null;
      },
      blobReader: async (name: string) => (bytes[name] ? new Blob([bytes[name]]) : null),
      fileBlobReader: async (name: string) => (names.includes(name) ? openAsBlob(path.join(TINY, name)) : null),
      object: bytes,
      map: new Map(Object.entries(bytes)),
    };
    for (const [kind, source] of Object.entries(sources)) {
      const model = await binding.loadModel(source);
      expect(Array.from(await model.logits([0, 5, 17])), kind).toEqual(expected);
      model.dispose();
    }
    expect(asked).toContain('model.safetensors');
    // The caller's buffers were copied, not moved.
    expect(bytes['model.safetensors']?.byteLength).toBeGreaterThan(0);
    expect((await binding.describeModel(sources.reader)).family).toBe('mamba');
  });

  it('errors keep their codes; a reader’s own error comes back as the same object', async () => {
    await expectCode(binding.loadModel(path.join(ROOT, 'no-such-model')), 'E_MODEL_NOT_FOUND');
    await expectCode(binding.loadModel({ 'config.json': 'not bytes' } as never), 'E_INVALID_OPTION');
    const mine = new Error('the disk is on fire');
    expect(await wasm.loadModel(async () => Promise.reject(mine)).catch((error: unknown) => error)).toBe(mine);
    const model = await binding.loadModel(TINY);
    await expectCode(model.logits([99_999]), 'E_INVALID_OPTION');
    const flag = new binding.CancelFlag();
    flag.cancel();
    await expectCode(model.score([0, 1, 2], {}, flag), 'E_ABORTED');
    model.dispose();
    await expectCode(model.logits([1]), 'E_INVALID_OPTION');
    await expectCode(async () => model.detokenize([1], true), 'E_INVALID_OPTION');
    await expectCode(async () => model.info(), 'E_INVALID_OPTION');
  });

  it.each(['worker-exit', 'worker-throw'])('a worker that dies (%s) fails outstanding and later calls with E_INTERNAL; the next load gets a fresh worker', async (how) => {
    const model = await wasm.loadModel(TINY);
    const before = wasm.instances();
    // A load waiting on its reader when the worker dies is outstanding: it must reject, not hang.
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const pending = wasm.loadModel(async () => {
      await gate;
      return null;
    });
    const died = await rawFailure(() => wasm.injectFault(how));
    expect(died.code).toBe('E_INTERNAL');
    expect(died.message).toContain('worker thread stopped');
    expect((await rawFailure(() => pending)).code).toBe('E_INTERNAL');
    release();
    expect((await rawFailure(() => model.logits([0]))).code).toBe('E_INTERNAL');
    expect((await rawFailure(() => model.detokenize([0], true))).code).toBe('E_INTERNAL');
    expect(model.lost?.()).toMatch(/stopped/);
    expect(() => model.dispose()).not.toThrow();

    const fresh = await wasm.loadModel(TINY);
    expect(fresh.lost?.()).toBeNull();
    expect(wasm.instances()).toBe(before + 1);
    expect((await fresh.logits([0, 1])).length).toBeGreaterThan(0);
    fresh.dispose();
  });

  it('an idle worker does not keep the process alive; a pending call does', async () => {
    const code = [
      'const wasm = await import(new URL(`file://${process.env.WASM}`).href);',
      `const model = await wasm.loadModel(${JSON.stringify(LITE)});`,
      "const generation = model.generate({ text: 'Once upon a time' }, { maxTokens: 5, temperature: 0 });",
      "let text = '';",
      'for (let step = await generation.next(); step; step = await generation.next()) text += step.text;',
      "console.log(JSON.stringify(text), 'done');",
    ].join('\n');
    const { out, err, status, afterDoneMs } = await child(code);
    expect(status, err).toBe(0);
    expect(out).toMatch(/^".+" done/);
    expect(afterDoneMs).not.toBeNull();
    expect(afterDoneMs as unknown as number).toBeLessThan(3000);
  });

  it('a load waiting on a reader that never settles does not keep the process alive (as on the calling thread)', async () => {
    const code = [
      'const wasm = await import(new URL(`file://${process.env.WASM}`).href);',
      "console.log('done');",
      'await wasm.loadModel(() => new Promise(() => {}));',
    ].join('\n');
    const worker = await child(code, {}, 30_000);
    const main = await child(code, { PHOENIX_WASM_THREAD: 'main' }, 30_000);
    // 13: Node's exit code for a top-level await that can never settle (nothing left to run).
    expect(main.status, main.err).toBe(13);
    expect(worker.status, worker.err).toBe(13);
    expect(worker.afterDoneMs as unknown as number).toBeLessThan(5000);
  });

  it('PHOENIX_WASM_THREAD=main runs the core on the calling thread (the loop waits for a prefill), with the same text', async () => {
    const code = [
      'const wasm = await import(new URL(`file://${process.env.WASM}`).href);',
      `const model = await wasm.loadModel(${JSON.stringify(LITE)});`,
      'const run = async (ids, maxTokens) => {',
      '  const generation = model.generate({ ids }, { maxTokens, temperature: 0 });',
      '  let last = performance.now(), maxGap = 0;',
      '  const timer = setInterval(() => { const now = performance.now(); maxGap = Math.max(maxGap, now - last); last = now; }, 10);',
      '  const out = [];',
      '  for (let step = await generation.next(); step; step = await generation.next()) out.push(step.tokenId);',
      '  clearInterval(timer);',
      '  maxGap = Math.max(maxGap, performance.now() - last);',
      '  return { out, maxGap, prefillMs: generation.stats().prefillMs };',
      '};',
      'const short = await run([1, 2, 3, 4, 5], 8);',
      'const long = await run(Array.from({ length: 1500 }, (_, i) => 1 + ((i * 37) % 1000)), 1);',
      "console.log(JSON.stringify({ ids: short.out, maxGap: long.maxGap, prefillMs: long.prefillMs }), 'done');",
    ].join('\n');
    const main = await child(code, { PHOENIX_WASM_THREAD: 'main' });
    const worker = await child(code, { PHOENIX_WASM_THREAD: 'worker' });
    expect(main.status, main.err).toBe(0);
    expect(worker.status, worker.err).toBe(0);
    const [onMain, onWorker] = [main, worker].map((run) => JSON.parse(run.out.slice(0, run.out.lastIndexOf(' done'))) as { ids: number[]; maxGap: number; prefillMs: number });
    expect(onMain?.ids).toEqual(onWorker?.ids);
    expect(onMain?.ids).toHaveLength(8);
    // In-thread, no timer fires while the prefill runs: the gap covers it.
    expect(onMain?.maxGap as number).toBeGreaterThanOrEqual((onMain?.prefillMs as number) * 0.9);

    const bogus = await child('await import(new URL(`file://${process.env.WASM}`).href);', { PHOENIX_WASM_THREAD: 'elsewhere' });
    expect(bogus.status).not.toBe(0);
    expect(bogus.err).toContain('[E_INVALID_OPTION] PHOENIX_WASM_THREAD must be "worker" or "main"');
  });
});
