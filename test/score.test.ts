/**
 * `score` on each binding: the log-probs, log-likelihood, perplexity and argmax come from the core
 * and equal what the TypeScript side used to compute from the full logits (a float64 log-softmax in
 * JavaScript, kept below as the reference); the logits cross the binding only when asked for.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadBinding } from '../ts/binding/load.js';
import type { RawModel } from '../ts/binding/types.js';
import { BindingLoadedModel } from '../ts/engines/binding-model.js';
import { MambaSSMEngine } from '../ts/engines/mamba-engine.js';
import type { LoadedModel } from '../ts/engines/types.js';
import { LocalModelManager } from '../ts/models/manager.js';
import { LITE, TINY, TEST_BACKENDS, expectCode, readJson, requireBackend, tempDir, type LiteReference, type TinyReference } from './helpers.js';

/** The JavaScript computation `score` did before the core did it: `log softmax(row)[index]` in float64. */
function oldLogSoftmaxAt(row: Float32Array, index: number): number {
  let max = -Infinity;
  for (const v of row) if (v > max) max = v;
  let sum = 0;
  for (const v of row) sum += Math.exp(v - max);
  return (row[index] as number) - max - Math.log(sum);
}

function firstArgmax(row: Float32Array): number {
  let best = 0;
  for (let j = 1; j < row.length; j++) if ((row[j] as number) > (row[best] as number)) best = j;
  return best;
}

function rawOf(model: LoadedModel): RawModel {
  if (!(model instanceof BindingLoadedModel)) throw new Error('not a binding model');
  return model.raw;
}

describe.each(TEST_BACKENDS)('score on the %s binding', (backend) => {
  let engine: MambaSSMEngine;
  let scratch: Awaited<ReturnType<typeof tempDir>>;
  let models: { name: string; model: LoadedModel; ids: number[] }[] = [];

  beforeAll(async () => {
    requireBackend(backend);
    scratch = await tempDir();
    engine = new MambaSSMEngine({ binding: await loadBinding({ backend }) });
    const manager = new LocalModelManager({ modelsDir: scratch.dir, engines: [engine], measurePerformance: false });
    const liteRef = await readJson<LiteReference>(path.join(LITE, 'reference.json'));
    const tinyRef = await readJson<TinyReference>(path.join(TINY, 'reference.json'));
    models = [
      { name: 'phoenix-ssm-lite', model: await engine.loadModel(await manager.getModelMetadataAt(LITE)), ids: liteRef.input_ids },
      { name: 'mamba1-tiny', model: await engine.loadModel(await manager.getModelMetadataAt(TINY)), ids: tinyRef.input_ids },
    ];
  });

  afterAll(async () => {
    for (const { model } of models) model.dispose();
    await scratch?.cleanup();
  });

  it('log-probs, log-likelihood, perplexity and argmax equal the old JavaScript computation within 1e-6', async () => {
    for (const { name, model, ids } of models) {
      const vocab = model.info.vocabSize;
      const flat = await rawOf(model).logits(ids);
      const rows = ids.map((_, i) => flat.subarray(i * vocab, (i + 1) * vocab));
      const expected = ids.slice(1).map((id, i) => oldLogSoftmaxAt(rows[i] as Float32Array, id));
      const expectedPerplexity = Math.exp(-expected.reduce((a, b) => a + b, 0) / expected.length);

      const scored = await engine.score(model, { ids });
      expect(scored.ids, name).toEqual(ids);
      expect(scored.vocabSize).toBe(vocab);
      expect(scored.tokenLogprobs).toHaveLength(expected.length);
      scored.tokenLogprobs.forEach((lp, i) => expect(Math.abs(lp - (expected[i] as number)), `${name} position ${i + 1}`).toBeLessThan(1e-6));
      expect(Math.abs(scored.logLikelihood - expected.reduce((a, b) => a + b, 0))).toBeLessThan(1e-6);
      expect(Math.abs((scored.perplexity as number) - expectedPerplexity) / expectedPerplexity).toBeLessThan(1e-6);
      expect(scored.nextArgmax).toEqual(rows.map(firstArgmax));
    }
  });

  it('logits are absent unless asked for, at the binding and in the result', async () => {
    for (const { name, model, ids } of models) {
      const raw = await rawOf(model).score(ids);
      expect(raw.logits, name).toBeUndefined();
      expect((await rawOf(model).score(ids, { includeLogits: false })).logits).toBeUndefined();
      const scored = await engine.score(model, { ids });
      expect('logits' in scored).toBe(false);

      const withLogits = await engine.score(model, { ids }, { includeLogits: true });
      const flat = await rawOf(model).logits(ids);
      expect(withLogits.logits).toHaveLength(ids.length);
      const vocab = model.info.vocabSize;
      withLogits.logits?.forEach((row, i) => expect(Array.from(row)).toEqual(Array.from(flat.subarray(i * vocab, (i + 1) * vocab))));
      expect(withLogits.tokenLogprobs).toEqual(scored.tokenLogprobs);
    }
  });

  it('a text input is tokenized with special tokens; one token has no perplexity', async () => {
    const [lite] = models;
    const { model } = lite as (typeof models)[number];
    const text = await engine.score(model, 'Once upon a time');
    expect(text.ids).toEqual(await model.tokenize('Once upon a time', { addSpecialTokens: true }));
    expect((await rawOf(model).score([5])).perplexity, 'the binding itself gives null').toBeNull();
    const single = await engine.score(model, { ids: [5] });
    expect(single.tokenLogprobs).toEqual([]);
    expect(single.logLikelihood).toBe(0);
    expect(single.perplexity).toBeNull();
    expect(single.nextArgmax).toHaveLength(1);
  });

  it('refuses bad ids and a non-boolean includeLogits with E_INVALID_OPTION', async () => {
    const { model } = models[0] as (typeof models)[number];
    await expectCode(engine.score(model, { ids: [] }), 'E_INVALID_OPTION');
    await expectCode(engine.score(model, { ids: [1, 99999] }, { includeLogits: true }), 'E_INVALID_OPTION');
    await expectCode(engine.score(model, { ids: [1, 1.5] }), 'E_INVALID_OPTION');
    await expectCode(engine.score(model, { ids: [1, 2] }, { includeLogits: 'yes' as unknown as boolean }), 'E_INVALID_OPTION');
    await expectCode(engine.score(model, { ids: [1, 2] }, { signal: 'stop' as unknown as AbortSignal }), 'E_INVALID_OPTION');
  });

  it('a signal stops scoring: E_ABORTED before it starts, and part-way (natively and on the WASM worker)', async () => {
    const { model, ids } = models[0] as (typeof models)[number];
    const long = Array.from({ length: 8192 }, (_, i) => ids[i % ids.length] as number);
    const controller = new AbortController();
    controller.abort();
    const before = await expectCode(engine.score(model, { ids: long }, { signal: controller.signal }), 'E_ABORTED');
    expect(before.message).toBe('score: cancelled after 0 of 8192 ids');
    if (backend === 'native' || (process.env.PHOENIX_WASM_THREAD ?? 'worker') === 'worker') {
      // Aborted as the worker starts: it stops between two layers, not after all 8192 ids.
      const running = new AbortController();
      const scoring = engine.score(model, { ids: long }, { signal: running.signal });
      setImmediate(() => running.abort());
      const during = await expectCode(scoring, 'E_ABORTED');
      const at = Number(/cancelled after (\d+) of 8192 ids/.exec(during.message)?.[1]);
      expect(at).toBeLessThan(8192);
    }
    // Not aborted: the same call completes.
    expect((await engine.score(model, { ids: long.slice(0, 64) }, { signal: new AbortController().signal })).tokenLogprobs).toHaveLength(63);
  });
});
