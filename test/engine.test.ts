/**
 * MambaSSMEngine over each binding (the native addon, and the WASM build when present) and the real
 * models: reference logits, greedy text, streaming, abort, snapshots, dispose, memory across
 * load/dispose cycles. The same assertions on both bindings are the WASM fallback's parity contract.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadBinding } from '../ts/binding/load.js';
import { MambaSSMEngine } from '../ts/engines/mamba-engine.js';
import type { LoadedModel, TokenChunk } from '../ts/engines/types.js';
import { LocalModelManager } from '../ts/models/manager.js';
import type { ModelMetadata } from '../ts/models/metadata.js';
import {
  LITE,
  TINY,
  TINY_ORIGINAL,
  expectCode,
  readJson,
  reliableGreedyPrefix,
  TEST_BACKENDS,
  requireBackend,
  settlesWithin as within,
  tempDir,
  type LiteReference,
  type TinyReference,
} from './helpers.js';

describe.each(TEST_BACKENDS)('on the %s binding', (backend) => {
  let engine: MambaSSMEngine;
  let manager: LocalModelManager;
  let liteMeta: ModelMetadata;
  let tinyMeta: ModelMetadata;
  let lite: LoadedModel;
  let liteRef: LiteReference;
  let tinyRef: TinyReference;
  let scratch: Awaited<ReturnType<typeof tempDir>>;

  beforeAll(async () => {
    requireBackend(backend);
    scratch = await tempDir();
    engine = new MambaSSMEngine({ binding: await loadBinding({ backend }) });
    manager = new LocalModelManager({ modelsDir: scratch.dir, engines: [engine], measurePerformance: false });
    liteMeta = await manager.getModelMetadataAt(LITE);
    tinyMeta = await manager.getModelMetadataAt(TINY);
    lite = await engine.loadModel(liteMeta);
    liteRef = await readJson<LiteReference>(path.join(LITE, 'reference.json'));
    tinyRef = await readJson<TinyReference>(path.join(TINY, 'reference.json'));
  });

  afterAll(async () => {
    lite?.dispose();
    await scratch?.cleanup();
  });

  function maxAbsDiff(actual: Float32Array, expected: number[]): number {
    let max = 0;
    expected.forEach((v, i) => {
      max = Math.max(max, Math.abs((actual[i] as number) - v));
    });
    return max;
  }

  describe('reference numerics through the TypeScript API', () => {
    it('mamba1-tiny logits match the float64 reference within 1e-3 at every position', async () => {
      const tiny = await engine.loadModel(tinyMeta);
      try {
        const scored = await engine.score(tiny, { ids: tinyRef.input_ids }, { includeLogits: true });
        expect(scored.ids).toEqual(tinyRef.input_ids);
        expect(scored.logits).toHaveLength(tinyRef.logits.length);
        expect(scored.vocabSize).toBe(512);
        const worst = Math.max(...tinyRef.logits.map((row, i) => maxAbsDiff(scored.logits?.[i] as Float32Array, row)));
        expect(worst).toBeLessThan(1e-3);
        expect(scored.tokenLogprobs).toHaveLength(tinyRef.input_ids.length - 1);
        expect(scored.perplexity).toBeGreaterThan(1);
      } finally {
        tiny.dispose();
      }
    });

    it('mamba1-tiny-original (state-spaces pytorch_model.bin) gives the same logits', async () => {
      const original = await engine.loadModel(await manager.getModelMetadataAt(TINY_ORIGINAL));
      try {
        expect(original.metadata.format).toBe('state-spaces-pth');
        const scored = await engine.score(original, { ids: tinyRef.input_ids }, { includeLogits: true });
        const worst = Math.max(...tinyRef.logits.map((row, i) => maxAbsDiff(scored.logits?.[i] as Float32Array, row)));
        expect(worst).toBeLessThan(1e-3);
      } finally {
        original.dispose();
      }
    });

    it('phoenix-ssm-lite logits match its reference within 1e-3', async () => {
      const scored = await engine.score(lite, { ids: liteRef.input_ids }, { includeLogits: true });
      const worst = Math.max(...liteRef.logits.map((row, i) => maxAbsDiff(scored.logits?.[i] as Float32Array, row)));
      expect(worst).toBeLessThan(1e-3);
    });

    it('tokenizes the reference prompt to the reference ids (BOS included)', async () => {
      expect(await lite.tokenize(liteRef.prompt)).toEqual(liteRef.input_ids);
      expect((await lite.tokenize(tinyRef.prompt, { addSpecialTokens: false })).length).toBeGreaterThan(0);
    });

    it('greedy generation of phoenix-ssm-lite equals the reference continuation (ids and decoded text)', async () => {
      const expected = reliableGreedyPrefix(liteRef.greedy_new_ids, liteRef.greedy_top1_top2_margin);
      const result = await engine.predict(lite, liteRef.prompt, { maxTokens: liteRef.greedy_new_ids.length, temperature: 0 });
      expect(result.tokenIds.slice(0, expected.length)).toEqual(expected);
      expect(result.promptTokens).toBe(liteRef.input_ids.length);
      expect(result.generatedTokens).toBe(liteRef.greedy_new_ids.length);
      expect(result.finishReason).toBe('length');
      expect(lite.detokenize(result.tokenIds)).toBe(liteRef.greedy_text);
      expect(result.text).toBe(liteRef.greedy_text);
      expect(result.tokensPerSecond).toBeGreaterThan(0);
      expect(result.timings.timeToFirstTokenMs).toBeGreaterThan(0);
    });

    it('mamba1-tiny greedy ids match the reference', async () => {
      const tiny = await engine.loadModel(tinyMeta);
      try {
        const expected = reliableGreedyPrefix(tinyRef.greedy.new_ids, tinyRef.greedy.top1_top2_margin);
        const result = await engine.predict(tiny, { ids: tinyRef.input_ids }, { maxTokens: expected.length, temperature: 0 });
        expect(result.tokenIds).toEqual(expected);
      } finally {
        tiny.dispose();
      }
    });
  });

  describe('streaming and sampling', () => {
    it('streams the same tokens and text as predict, one chunk per token', async () => {
      const stream = engine.stream(lite, liteRef.prompt, { maxTokens: 12, temperature: 0 });
      const chunks: TokenChunk[] = [];
      for await (const chunk of stream) chunks.push(chunk);
      const result = await stream.result;
      expect(chunks.filter((c) => c.tokenId !== null).map((c) => c.tokenId)).toEqual(result.tokenIds);
      expect(chunks.map((c) => c.text).join('')).toBe(result.text);
      expect(result.tokenIds).toEqual(liteRef.greedy_new_ids.slice(0, 12));
    });

    it('`result` alone drains the stream', async () => {
      const result = await engine.stream(lite, liteRef.prompt, { maxTokens: 5, temperature: 0 }).result;
      expect(result.generatedTokens).toBe(5);
    });

    it('the same seed gives the same sample; sampling options are honoured', async () => {
      const options = { maxTokens: 20, temperature: 0.9, topK: 40, topP: 0.9, minP: 0.02, repeatPenalty: 1.1, seed: 1234 };
      const a = await engine.predict(lite, 'The little dog', options);
      const b = await engine.predict(lite, 'The little dog', options);
      expect(a.tokenIds).toEqual(b.tokenIds);
      expect(a.text).toBe(b.text);
      const seeds = await Promise.all([1, 2, 3, 4].map((seed) => engine.predict(lite, 'The little dog', { ...options, temperature: 1.5, topK: 0, topP: 1, minP: 0, seed })));
      expect(new Set(seeds.map((r) => r.text)).size).toBeGreaterThan(1);
    });

    it('stop strings end the text before the stop string', async () => {
      const result = await engine.predict(lite, liteRef.prompt, { maxTokens: 40, temperature: 0, stop: ['.'] });
      expect(result.finishReason).toBe('stop');
      expect(result.text).toBe(' girl named Lily');
    });

    it('stopTokenIds end the generation at that token', async () => {
      const stopId = liteRef.greedy_new_ids[3] as number;
      const result = await engine.predict(lite, liteRef.prompt, { maxTokens: 40, temperature: 0, stopTokenIds: [stopId] });
      expect(result.finishReason).toBe('stop');
      expect(result.tokenIds).toEqual(liteRef.greedy_new_ids.slice(0, 4));
    });
  });

  describe('abort', () => {
    it('an AbortSignal stops the generation within one token', async () => {
      const controller = new AbortController();
      const stream = engine.stream(lite, liteRef.prompt, { maxTokens: 500, temperature: 0, signal: controller.signal });
      let seen = 0;
      for await (const chunk of stream) {
        if (chunk.tokenId !== null) seen++;
        if (seen === 3) controller.abort();
      }
      const result = await stream.result;
      expect(result.finishReason).toBe('abort');
      expect(result.generatedTokens).toBeGreaterThanOrEqual(3);
      expect(result.generatedTokens).toBeLessThanOrEqual(4);
    });

    it('an abort from a timer while steps run asynchronously also ends within one token', async () => {
      const controller = new AbortController();
      const stream = engine.stream(lite, liteRef.prompt, { maxTokens: 100_000, temperature: 0, signal: controller.signal });
      let countAtAbort = -1;
      let count = 0;
      setTimeout(() => {
        countAtAbort = count;
        controller.abort();
      }, 40);
      for await (const chunk of stream) if (chunk.tokenId !== null) count++;
      const result = await stream.result;
      expect(result.finishReason).toBe('abort');
      expect(countAtAbort).toBeGreaterThanOrEqual(0);
      expect(result.generatedTokens - countAtAbort).toBeLessThanOrEqual(1);
    });

    // Natively and on the WASM worker the prefill runs on another thread while JS waits, so the
    // abort arrives mid-prefill and the core stops between layers; WASM on the calling thread
    // (PHOENIX_WASM_THREAD=main) blocks JS until the step returns.
    it.runIf(backend === 'native' || (process.env.PHOENIX_WASM_THREAD ?? 'worker') === 'worker')('an abort during a long prefill ends it part-way, before any token', async () => {
      const controller = new AbortController();
      const ids = Array.from({ length: 100_000 }, (_, i) => 1 + (i % 1000));
      const stream = engine.stream(lite, { ids }, { maxTokens: 5, temperature: 0, signal: controller.signal });
      setTimeout(() => controller.abort(), 50);
      const result = await stream.result;
      expect(result.finishReason).toBe('abort');
      // Without cancellation inside the prefill, all 100k tokens would be fed and one sampled first.
      expect(result.generatedTokens).toBe(0);
    });

    it('an already-aborted signal generates nothing', async () => {
      const result = await engine.predict(lite, liteRef.prompt, { maxTokens: 50, signal: AbortSignal.abort() });
      expect(result.finishReason).toBe('abort');
      expect(result.generatedTokens).toBe(0);
    });

    it('a reader that stops pulling and cancels (or aborts) gets its result without another next()', async () => {
      const solo = await engine.predict(lite, liteRef.prompt, { maxTokens: 3, temperature: 0 });
      for (const how of ['cancel', 'abort', 'cancel, then resume'] as const) {
        const controller = new AbortController();
        const stream = engine.stream(lite, liteRef.prompt, { maxTokens: 500, temperature: 0, signal: controller.signal });
        const reader = stream[Symbol.asyncIterator]();
        const first = await reader.next();
        if (how === 'abort') controller.abort();
        else stream.cancel();
        const rest: string[] = [];
        if (how === 'cancel, then resume') for (let n = await reader.next(); !n.done; n = await reader.next()) rest.push(n.value.text);
        // Before, `result` waited for a next() that never came (a script exited with "unsettled top-level await").
        const result = await within(20_000, stream.result, `${how}: result`);
        expect({ how, finishReason: result.finishReason, tokenIds: result.tokenIds }).toEqual({ how, finishReason: 'abort', tokenIds: [first.value!.tokenId] });
        expect(result.text).toBe(first.value!.text + rest.join(''));
        expect(result.tokenIds).toEqual(solo.tokenIds.slice(0, 1));
        expect(result.generatedTokens).toBe(1);
        expect((await reader.next()).done).toBe(true);
      }
    });

    it('a cancel that comes after the step in flight finished elsewhere still settles the result', async () => {
      const stream = engine.stream(lite, liteRef.prompt.repeat(60), { maxTokens: 50, temperature: 0 });
      const reader = stream[Symbol.asyncIterator]();
      const pending = reader.next();
      // On the WASM worker a synchronous call waits behind the running prefill: when it returns, the
      // step's answer (a token) is on its way here, and the cancel below is too late for that step.
      await new Promise((resolve) => setTimeout(resolve, 20));
      lite.detokenize([1]);
      stream.cancel();
      const first = await pending;
      const result = await within(20_000, stream.result, 'result');
      expect(result.finishReason).toBe('abort');
      expect(result.tokenIds).toEqual(first.done ? [] : [first.value.tokenId]);
      expect((await reader.next()).done).toBe(true);
    });

    it('breaking out of the loop ends the generation and resolves the result', async () => {
      const stream = engine.stream(lite, liteRef.prompt, { maxTokens: 500, temperature: 0 });
      for await (const _ of stream) break;
      const result = await stream.result;
      expect(result.finishReason).toBe('abort');
      expect(result.generatedTokens).toBe(1);
    });
  });

  describe('state snapshots', () => {
    it('save after prompt + output, restore in a freshly loaded model: continues identically', async () => {
      const full = await engine.predict(lite, liteRef.prompt, { maxTokens: 24, temperature: 0 });
      const first = await engine.predict(lite, liteRef.prompt, { maxTokens: 10, temperature: 0, returnState: true });
      expect(first.state).toBeInstanceOf(Uint8Array);
      const fresh = await engine.loadModel(liteMeta);
      try {
        const rest = await engine.predict(fresh, '', { maxTokens: 14, temperature: 0, state: first.state });
        expect([...first.tokenIds, ...rest.tokenIds]).toEqual(full.tokenIds);
        expect(first.text + rest.text).toBe(full.text);
        expect(rest.promptTokens).toBe(0);
      } finally {
        fresh.dispose();
      }
    });

    it('a snapshot continues with extra prompt text, same as the whole text from scratch', async () => {
      const head = await engine.predict(lite, 'Once upon a time', { maxTokens: 1, temperature: 0, returnState: true });
      const continued = await engine.predict(lite, { ids: await lite.tokenize(' there was', { addSpecialTokens: false }) }, { maxTokens: 8, temperature: 0, state: head.state });
      const ids = [...(await lite.tokenize('Once upon a time')), ...head.tokenIds, ...(await lite.tokenize(' there was', { addSpecialTokens: false }))];
      const direct = await engine.predict(lite, { ids }, { maxTokens: 8, temperature: 0 });
      expect(continued.tokenIds).toEqual(direct.tokenIds);
    });

    it('exportState() of a stream mid-way equals returnState at that point', async () => {
      const stream = engine.stream(lite, liteRef.prompt, { maxTokens: 6, temperature: 0 });
      for await (const _ of stream) {
        // run to the end
      }
      const exported = stream.exportState();
      const again = await engine.predict(lite, liteRef.prompt, { maxTokens: 6, temperature: 0, returnState: true });
      expect(Buffer.from(exported).equals(Buffer.from(again.state as Uint8Array))).toBe(true);
    });

    it('a state from another model is rejected with E_STATE_MISMATCH', async () => {
      const { state } = await engine.predict(lite, liteRef.prompt, { maxTokens: 1, returnState: true });
      const tiny = await engine.loadModel(tinyMeta);
      try {
        await expectCode(engine.predict(tiny, { ids: [] }, { maxTokens: 3, state }), 'E_STATE_MISMATCH');
        await expectCode(engine.predict(tiny, { ids: [] }, { maxTokens: 3, state: new Uint8Array([1, 2, 3]) }), 'E_STATE_MISMATCH');
      } finally {
        tiny.dispose();
      }
    });
  });

  describe('lifecycle', () => {
    it('dispose frees the model; later calls throw E_INVALID_OPTION; dispose is idempotent', async () => {
      const tiny = await engine.loadModel(tinyMeta);
      expect(tiny.disposed).toBe(false);
      tiny.dispose();
      tiny.dispose();
      expect(tiny.disposed).toBe(true);
      await expectCode(engine.predict(tiny, { ids: [1, 2, 3] }), 'E_INVALID_OPTION');
      await expectCode(engine.score(tiny, { ids: [1, 2, 3] }), 'E_INVALID_OPTION');
      await expectCode(async () => tiny.tokenize('x'), 'E_INVALID_OPTION');
    });

    it('a stream\'s dispose() frees its state and ends it as a cancel; later exports throw E_INVALID_OPTION', async () => {
      const stream = engine.stream(lite, liteRef.prompt, { maxTokens: 6, temperature: 0 });
      const chunks: TokenChunk[] = [];
      for await (const chunk of stream) {
        chunks.push(chunk);
        if (chunks.length === 2) stream.dispose?.();
      }
      const result = await stream.result;
      // The step after the dispose is the cancelled one: two tokens, finish reason `abort`.
      expect([result.finishReason, result.generatedTokens]).toEqual(['abort', 2]);
      await expectCode(async () => stream.exportState(), 'E_INVALID_OPTION');
      stream.dispose?.(); // idempotent

      // A reader that stops pulling and disposes: `result` settles at once (abort, the tokens read so
      // far, no state even when asked for), without another next().
      const held = engine.stream(lite, liteRef.prompt, { maxTokens: 20, temperature: 0, returnState: true });
      const reader = held[Symbol.asyncIterator]();
      await reader.next();
      await reader.next();
      held.dispose?.();
      const heldResult = await held.result;
      expect([heldResult.finishReason, heldResult.tokenIds.length, heldResult.state]).toEqual(['abort', 2, undefined]);
      expect((await reader.next()).done).toBe(true); // a resumed loop ends
      expect(heldResult.tokenIds).toHaveLength(2);

      // A stream disposed before anyone iterated it ends as an already-cancelled one: nothing generated.
      const unread = engine.stream(lite, liteRef.prompt, { maxTokens: 2 });
      unread.dispose?.();
      expect(await unread.result).toMatchObject({ finishReason: 'abort', generatedTokens: 0, text: '' });
      await expectCode(async () => unread.exportState(), 'E_INVALID_OPTION');
      // A dispose while a step runs (the prefill of a long prompt): the loop still ends as cancelled.
      const long = engine.stream(lite, liteRef.prompt.repeat(40), { maxTokens: 4 });
      const iterator = long[Symbol.asyncIterator]();
      const pending = iterator.next();
      long.dispose?.();
      await pending;
      expect((await long.result).finishReason).toBe('abort');
    });

    it('work started before a model\'s dispose finishes on it (score tokenizes first, then scores); later calls are refused', async () => {
      for (const signal of [undefined, new AbortController().signal]) {
        const alone = await engine.score(lite, { text: liteRef.prompt });
        const model = await engine.loadModel(liteMeta);
        const scored = engine.score(model, { text: liteRef.prompt }, signal ? { signal } : {});
        const ids = engine.score(model, { ids: alone.ids }, signal ? { signal } : {});
        const tokens = model.tokenize('hello world');
        model.dispose(); // same tick: the three calls above hold the weights until they end
        expect(model.disposed).toBe(true);
        await expectCode(engine.score(model, { ids: [1, 2] }), 'E_INVALID_OPTION');
        expect((await scored).logLikelihood).toBe(alone.logLikelihood);
        expect((await ids).logLikelihood).toBe(alone.logLikelihood);
        expect(await tokens).toEqual(await lite.tokenize('hello world'));
      }
    });

    it('a dispose while a step runs counts only the tokens handed out', async () => {
      for (let round = 0; round < 3; round++) {
        const stream = engine.stream(lite, liteRef.prompt, { maxTokens: 50, temperature: 0 });
        const reader = stream[Symbol.asyncIterator]();
        await reader.next();
        const pending = reader.next();
        // Hold this thread while the step runs elsewhere and samples its token, unseen here: then dispose.
        for (const until = performance.now() + 30; performance.now() < until; );
        stream.dispose?.();
        const result = await stream.result;
        await pending;
        expect({ round, generated: result.generatedTokens }).toEqual({ round, generated: result.tokenIds.length });
      }
    });

    it('`using` disposes at the end of the block', async () => {
      let escaped: LoadedModel;
      {
        using tiny = await engine.loadModel(tinyMeta);
        escaped = tiny;
        expect((await engine.score(tiny, { ids: [5, 6] })).ids).toEqual([5, 6]);
      }
      expect(escaped.disposed).toBe(true);
    });

    /** Loads, runs `use`, disposes, `cycles` times after a warm-up; returns the RSS growth in bytes. */
    async function rssGrowth(cycles: number, use: (model: LoadedModel) => Promise<unknown>): Promise<number> {
      const cycle = async (): Promise<void> => {
        const model = await engine.loadModel(liteMeta);
        await use(model);
        model.dispose();
      };
      for (let i = 0; i < 5; i++) await cycle(); // warm-up: allocator pools, code paths
      const before = process.memoryUsage().rss;
      for (let i = 0; i < cycles; i++) await cycle();
      return process.memoryUsage().rss - before;
    }

    it('many load/score/dispose cycles do not grow RSS unreasonably', async () => {
      const grown = await rssGrowth(40, (model) => engine.score(model, { ids: [0, 393, 394] }));
      // 40 leaked copies of phoenix-ssm-lite would be ~560 MiB; allow a small fraction of one copy per cycle.
      expect(grown).toBeLessThan(3 * liteMeta.sizeBytes);
    });

    it('many load/generate/dispose cycles do not grow RSS unreasonably', async () => {
      const grown = await rssGrowth(40, (model) => engine.predict(model, { ids: [0, 393, 394] }, { maxTokens: 2 }));
      // dispose() promises to free the weights now. A finished generation must not keep them alive
      // until V8 happens to collect its handle (V8 does not see the native memory behind it).
      expect(grown, `RSS grew ${(grown / 2 ** 20).toFixed(0)} MiB over 40 cycles`).toBeLessThan(3 * liteMeta.sizeBytes);
    });
  });
});
