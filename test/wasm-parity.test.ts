/**
 * Native ⇄ WASM parity: the same engine code over both bindings must give the same numbers, the same
 * text, interchangeable state snapshots and the same error codes.
 *
 * Runs whenever the WASM build exists (`npm run build:wasm` → wasm/); with PHOENIX_REQUIRE_WASM=1 a
 * missing build is a failure, not a skip.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadBinding } from '../ts/binding/load.js';
import type { RawGenerationStats } from '../ts/binding/types.js';
import { BindingLoadedModel } from '../ts/engines/binding-model.js';
import { MambaSSMEngine } from '../ts/engines/mamba-engine.js';
import type { LoadedModel } from '../ts/engines/types.js';
import { LocalModelManager } from '../ts/models/manager.js';
import {
  LITE,
  TINY,
  WASM_BUILT,
  WASM_REQUIRED,
  expectCode,
  readJson,
  requireBackend,
  tempDir,
  type LiteReference,
  type TinyReference,
} from './helpers.js';


function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let max = 0;
  for (let i = 0; i < b.length; i++) max = Math.max(max, Math.abs((a[i] as number) - (b[i] as number)));
  return max;
}

describe.runIf(WASM_BUILT || WASM_REQUIRED)('native and WASM bindings agree', () => {
  const engines: Record<'native' | 'wasm', MambaSSMEngine> = {} as never;
  const lite: Partial<Record<'native' | 'wasm', LoadedModel>> = {};
  let manager: LocalModelManager;
  let scratch: Awaited<ReturnType<typeof tempDir>>;
  let liteRef: LiteReference;
  let tinyRef: TinyReference;

  beforeAll(async () => {
    requireBackend('native');
    requireBackend('wasm');
    engines.native = new MambaSSMEngine({ binding: await loadBinding({ backend: 'native' }) });
    engines.wasm = new MambaSSMEngine({ binding: await loadBinding({ backend: 'wasm' }) });
    scratch = await tempDir();
    manager = new LocalModelManager({ modelsDir: scratch.dir, engines: [engines.native], measurePerformance: false });
    const meta = await manager.getModelMetadataAt(LITE);
    lite.native = await engines.native.loadModel(meta);
    lite.wasm = await engines.wasm.loadModel(meta);
    liteRef = await readJson<LiteReference>(path.join(LITE, 'reference.json'));
    tinyRef = await readJson<TinyReference>(path.join(TINY, 'reference.json'));
  });

  afterAll(async () => {
    lite.native?.dispose();
    lite.wasm?.dispose();
    await scratch?.cleanup();
  });

  it('the WASM binding reports itself as such', async () => {
    expect((await loadBinding({ backend: 'wasm' })).backend).toBe('wasm');
    expect(lite.wasm?.info.modelType).toBe('mamba');
  });

  it('logits: WASM within 1e-4 of native and both within 1e-3 of the float64 reference', async () => {
    for (const [model, ref] of [
      [LITE, liteRef],
      [TINY, tinyRef],
    ] as const) {
      const meta = await manager.getModelMetadataAt(model);
      const [n, w] = [await engines.native.loadModel(meta), await engines.wasm.loadModel(meta)];
      try {
        const withLogits = { includeLogits: true };
        const [sn, sw] = [await engines.native.score(n, { ids: ref.input_ids }, withLogits), await engines.wasm.score(w, { ids: ref.input_ids }, withLogits)];
        ref.logits.forEach((row, i) => {
          expect(maxAbsDiff(sw.logits?.[i] as Float32Array, sn.logits?.[i] as Float32Array)).toBeLessThan(1e-4);
          expect(maxAbsDiff(sw.logits?.[i] as Float32Array, row)).toBeLessThan(1e-3);
          expect(maxAbsDiff(sn.logits?.[i] as Float32Array, row)).toBeLessThan(1e-3);
        });
      } finally {
        n.dispose();
        w.dispose();
      }
    }
  });

  it('greedy and seeded sampling give identical text on both', async () => {
    for (const options of [{ temperature: 0 }, { temperature: 0.8, topP: 0.9, topK: 40, minP: 0.02, repeatPenalty: 1.1, seed: 42 }]) {
      const n = await engines.native.predict(lite.native!, liteRef.prompt, { ...options, maxTokens: 48 });
      const w = await engines.wasm.predict(lite.wasm!, liteRef.prompt, { ...options, maxTokens: 48 });
      expect(w.tokenIds).toEqual(n.tokenIds);
      expect(w.text).toBe(n.text);
    }
  });

  it('a snapshot taken on native continues on WASM, and back, identically', async () => {
    const whole = await engines.native.predict(lite.native!, liteRef.prompt, { maxTokens: 30 });
    const first = await engines.native.predict(lite.native!, liteRef.prompt, { maxTokens: 10, returnState: true });
    const onWasm = await engines.wasm.predict(lite.wasm!, '', { state: first.state, maxTokens: 10, returnState: true });
    const backOnNative = await engines.native.predict(lite.native!, '', { state: onWasm.state, maxTokens: 10 });
    expect([...first.tokenIds, ...onWasm.tokenIds, ...backOnNative.tokenIds]).toEqual(whole.tokenIds);
    expect(first.text + onWasm.text + backOnNative.text).toBe(whole.text);
  });

  it('score: the core computes the same log-probs and perplexity on both', async () => {
    const [n, w] = [await engines.native.score(lite.native!, { ids: liteRef.input_ids }), await engines.wasm.score(lite.wasm!, { ids: liteRef.input_ids })];
    expect(maxAbsDiff(w.tokenLogprobs, n.tokenLogprobs)).toBeLessThan(1e-4);
    expect(Math.abs((w.perplexity as number) / (n.perplexity as number) - 1)).toBeLessThan(1e-4);
    expect(w.nextArgmax).toEqual(n.nextArgmax);
    expect(Object.keys(w).sort()).toEqual(Object.keys(n).sort());
  });

  it('generation stats come from the core on both: same fields and counts, measured prefill and decode times', async () => {
    const stats: RawGenerationStats[] = [];
    for (const kind of ['native', 'wasm'] as const) {
      const raw = (lite[kind] as BindingLoadedModel).raw;
      const generation = raw.generate({ ids: liteRef.input_ids }, { maxTokens: 6, temperature: 0 });
      while ((await generation.next()) !== null) {
        // run to the end
      }
      stats.push(generation.stats());
    }
    const [n, w] = stats as [RawGenerationStats, RawGenerationStats];
    expect(Object.keys(w).sort()).toEqual(Object.keys(n).sort());
    expect([w.promptTokens, w.generatedTokens]).toEqual([n.promptTokens, n.generatedTokens]);
    for (const s of [n, w]) {
      expect(s.prefillMs).toBeGreaterThan(0);
      expect(s.decodeMs).toBeGreaterThan(0);
    }

    // A generation cancelled before its first step ran no model call: the core times nothing (a
    // clock around the whole binding call, as the WASM glue had, counted the call itself), and it
    // fed none of its prompt tokens.
    for (const kind of ['native', 'wasm'] as const) {
      const generation = (lite[kind] as BindingLoadedModel).raw.generate({ ids: liteRef.input_ids }, { maxTokens: 6 });
      generation.cancel();
      expect((await generation.next())?.finishReason, kind).toBe('abort');
      expect(generation.stats(), kind).toEqual({ promptTokens: 0, restoredTokens: 0, generatedTokens: 0, prefillMs: 0, decodeMs: 0 });
    }
  });

  it('the core words handle errors and thread rules for both bindings', async () => {
    const messages: Record<string, string[]> = { native: [], wasm: [] };
    for (const kind of ['native', 'wasm'] as const) {
      const { binding } = await loadBinding({ backend: kind });
      const model = await binding.loadModel(TINY);
      model.dispose();
      messages[kind]?.push((await expectCode(() => model.info(), 'E_INVALID_OPTION')).message);
      messages[kind]?.push((await expectCode(() => binding.setThreads(-1), 'E_INVALID_OPTION')).message);
      messages[kind]?.push((await expectCode(() => binding.setThreads(1e9), 'E_INVALID_OPTION')).message);
    }
    expect(messages.wasm).toEqual(messages.native);
    expect((await loadBinding({ backend: 'wasm' })).binding.buildInfo().threads).toBe(1);
  });

  it('bad input gives the same error codes on both', async () => {
    for (const kind of ['native', 'wasm'] as const) {
      const engine = engines[kind];
      const model = lite[kind]!;
      await expectCode(engine.predict(model, '', {}), 'E_INVALID_OPTION');
      await expectCode(engine.predict(model, 'x', { topP: 1.5 }), 'E_INVALID_OPTION');
      await expectCode(engine.predict(model, 'x', { state: new Uint8Array([1, 2, 3]) }), 'E_STATE_MISMATCH');
      await expectCode(engine.score(model, { ids: [model.info.vocabSize + 5] }), 'E_INVALID_OPTION');
    }
  });
});
