/**
 * Engine routing across the core's families: the default engines (one per engine kind the core
 * reports), which engine the manager picks through `canLoad`, and the options every family shares.
 */
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadBinding } from '../ts/binding/load.js';
import { defaultEngines } from '../ts/engines/default-engines.js';
import { MambaSSMEngine } from '../ts/engines/mamba-engine.js';
import { TransformerEngine } from '../ts/engines/transformer-engine.js';
import { LocalModelManager } from '../ts/models/manager.js';
import type { ModelMetadata } from '../ts/models/metadata.js';
import type { BindingEngine } from '../ts/engines/binding-engine.js';
import type { LoadedModel } from '../ts/engines/types.js';
import { ROOT, TEST_BACKENDS, TINY, WASM_BUILT, WASM_REQUIRED, expectCode, readJson, reliableGreedyPrefix, requireBackend, tempModelsDir, type TinyReference } from './helpers.js';

/** The float64 reference fixtures of each new family, with the engine that must run them. */
const FAMILY_FIXTURES = [
  { name: 'llama-tiny', family: 'llama', engine: 'transformer', kind: 'transformer' },
  { name: 'qwen2-tiny-bias', family: 'llama', engine: 'transformer', kind: 'transformer' },
  { name: 'mamba2-tiny', family: 'mamba2', engine: 'mamba-ssm', kind: 'ssm' },
  { name: 'granite-hybrid-tiny', family: 'granitemoehybrid', engine: 'mamba-ssm', kind: 'hybrid' },
  { name: 'granite-moe-tiny', family: 'granitemoehybrid', engine: 'mamba-ssm', kind: 'hybrid' },
] as const;
const fixtureDir = (name: string): string => path.join(ROOT, 'test/fixtures', name);

function maxAbsDiff(got: Float32Array, want: number[]): number {
  return want.reduce((worst, w, i) => Math.max(worst, Math.abs((got[i] as number) - w)), 0);
}

const meta = (engine: ModelMetadata['engine']): ModelMetadata =>
  ({ name: 'm', path: '/nowhere', modelType: 'x', format: 'hf-safetensors', engine }) as unknown as ModelMetadata;

describe('engine kinds', () => {
  it('the transformer engine takes transformer models only; the SSM engine takes SSMs and hybrids', () => {
    const [ssm, transformer] = [new MambaSSMEngine(), new TransformerEngine()];
    expect([ssm.canLoad(meta('ssm')), ssm.canLoad(meta('hybrid')), ssm.canLoad(meta('transformer'))]).toEqual([true, true, false]);
    expect([transformer.canLoad(meta('ssm')), transformer.canLoad(meta('hybrid')), transformer.canLoad(meta('transformer'))]).toEqual([false, false, true]);
    expect(ssm.canLoad(meta(undefined)) || transformer.canLoad(meta(undefined))).toBe(false);
  });

  it('the default engines cover every engine kind the core reports', async () => {
    const { binding } = await loadBinding({ backend: 'native' });
    const engines = defaultEngines();
    for (const family of binding.supportedFamilies()) {
      const takers = engines.filter((e) => e.canLoad(meta(family.engine)));
      expect(takers.length, `${family.name} (${family.engine})`).toBe(1);
    }
  });
});

describe.each(TEST_BACKENDS)('on the %s binding', (backend) => {
  let models: Awaited<ReturnType<typeof tempModelsDir>>;
  let manager: LocalModelManager;
  const engineOf = (model: LoadedModel) => manager.engineFor(model);

  beforeAll(async () => {
    requireBackend(backend);
    models = await tempModelsDir({ 'mamba1-tiny': TINY, ...Object.fromEntries(FAMILY_FIXTURES.map((f) => [f.name, fixtureDir(f.name)])) });
    const binding = loadBinding({ backend });
    manager = new LocalModelManager({ modelsDir: models.modelsDir, engines: defaultEngines({ binding }) });
  });
  afterAll(async () => {
    await manager?.unloadModel("mamba1-tiny").catch(() => undefined);
    await models?.cleanup();
  });

  it('the manager loads each model with the engine of its kind', async () => {
    const model = await manager.loadModel('mamba1-tiny');
    expect(model.engine).toBe('mamba-ssm');
    expect(model.info.engine).toBe('ssm');
    expect(model.info.contextLength).toBeNull();
  });

  it.each(FAMILY_FIXTURES)('$name runs on the $engine engine: reference logits, greedy tokens', async ({ name, family, engine, kind }) => {
    const model = await manager.loadModel(name);
    expect([model.engine, model.info.family, model.info.engine]).toEqual([engine, family, kind]);
    const ref = await readJson<TinyReference>(path.join(fixtureDir(name), 'reference.json'));
    const scored = await engineOf(model).score(model, { ids: ref.input_ids }, { includeLogits: true });
    const worst = Math.max(...ref.logits.map((row, i) => maxAbsDiff(scored.logits?.[i] as Float32Array, row)));
    expect(worst).toBeLessThan(1e-3);
    const want = reliableGreedyPrefix(ref.greedy.new_ids, ref.greedy.top1_top2_margin);
    const r = await engineOf(model).predict(model, { ids: ref.input_ids }, { maxTokens: want.length, temperature: 0 });
    expect(r.tokenIds).toEqual(want);
    await manager.unloadModel(name);
  });

  it('a transformer refuses a prompt plus maxTokens beyond its context before any work, and fills it without maxTokens', async () => {
    const model = await manager.loadModel('llama-tiny');
    expect(model.info.contextLength).toBe(256);
    const engine = engineOf(model);
    const ids = Array.from({ length: 250 }, (_, i) => (i * 37) % 500);
    const error = await expectCode(engine.predict(model, { ids }, { maxTokens: 7 }), 'E_INVALID_OPTION');
    expect(error.message).toMatch(/256/);
    const filled = await engine.predict(model, { ids }, { temperature: 0 });
    expect([filled.generatedTokens, filled.finishReason]).toEqual([6, 'length']);
    const capped = await engine.predict(model, { ids }, { maxTokens: 100, fitToContext: true });
    expect([capped.generatedTokens, capped.finishReason]).toEqual([6, 'length']);
    const fits = await engine.predict(model, { ids }, { maxTokens: 6, returnState: true });
    expect(fits.generatedTokens).toBe(6);
    // Its snapshot holds the KV cache of the tokens seen: 250 + 5 fed (the last sampled one is not).
    expect(fits.state?.length).toBe(model.info.snapshotHeaderBytes + 4 * 256 + 255 * model.info.stateBytesPerToken);
    await expectCode(engine.predict(model, '', { state: fits.state, maxTokens: 1 }), 'E_INVALID_OPTION');
  });

  it('fitToContext must be a boolean', async () => {
    const model = await manager.loadModel('mamba1-tiny');
    const engine = engineOf(model);
    await expectCode(engine.predict(model, { ids: [0, 1] }, { maxTokens: 2, fitToContext: 'yes' as unknown as boolean }), 'E_INVALID_OPTION');
    const r = await engine.predict(model, { ids: [0, 1] }, { maxTokens: 3, fitToContext: true });
    expect(r.generatedTokens).toBe(3); // no context limit on an SSM: nothing to cut
  });
});

describe.runIf(WASM_BUILT || WASM_REQUIRED)('native ↔ WASM on every family', () => {
  it.each(FAMILY_FIXTURES)('$name: the same logits (1e-4) and greedy tokens, and a snapshot continues across bindings', async ({ name }) => {
    requireBackend('wasm');
    const dir = fixtureDir(name);
    const meta = { name, path: dir } as unknown as ModelMetadata;
    const [nativeEngines, wasmEngines] = [defaultEngines({ binding: loadBinding({ backend: 'native' }) }), defaultEngines({ binding: loadBinding({ backend: 'wasm' }) })];
    const probe = await nativeEngines[0]!.binding();
    const { engine: kind } = await probe.binding.describeModel(dir);
    const pick = (engines: BindingEngine[]) => engines.find((e) => e.canLoad({ ...meta, engine: kind })) as BindingEngine;
    const [ne, we] = [pick(nativeEngines), pick(wasmEngines)];
    const [n, w] = [await ne.loadModel({ ...meta, engine: kind }), await we.loadModel({ ...meta, engine: kind })];
    try {
      const ref = await readJson<TinyReference>(path.join(dir, 'reference.json'));
      const [sn, sw] = [await ne.score(n, { ids: ref.input_ids }, { includeLogits: true }), await we.score(w, { ids: ref.input_ids }, { includeLogits: true })];
      ref.logits.forEach((row, i) => {
        expect(maxAbsDiff(sw.logits?.[i] as Float32Array, Array.from(sn.logits?.[i] as Float32Array))).toBeLessThan(1e-4);
        expect(maxAbsDiff(sw.logits?.[i] as Float32Array, row)).toBeLessThan(1e-3);
      });
      const first = await ne.predict(n, { ids: ref.input_ids.slice(0, 20) }, { maxTokens: 4, returnState: true });
      const onNative = await ne.predict(n, '', { state: first.state, maxTokens: 6 });
      const onWasm = await we.predict(w, '', { state: first.state, maxTokens: 6, returnState: true });
      expect(onWasm.tokenIds).toEqual(onNative.tokenIds);
      const back = await ne.predict(n, '', { state: onWasm.state, maxTokens: 3 });
      expect(back.generatedTokens).toBe(3);
    } finally {
      n.dispose();
      w.dispose();
    }
  });
});
