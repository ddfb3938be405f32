/**
 * LocalAIPipeline on real models: modes and selection, fallback, deadline, energy budget, queue
 * limits, scoring, metrics, system status.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LocalAIPipeline } from '../ts/pipeline/pipeline.js';
import { ProcessingMode } from '../ts/pipeline/modes.js';
import type { ProcessingRequest, ProcessingResult } from '../ts/pipeline/types.js';
import { LITE, TINY, copyModel, readJson, readSafetensors, requireNativeAddon, tempDir, writeSafetensors, type LiteReference, type TinyReference } from './helpers.js';

let scratch: Awaited<ReturnType<typeof tempDir>>;
let modelsDir: string;
let pipeline: LocalAIPipeline;
let liteRef: LiteReference;
let tinyRef: TinyReference;

beforeAll(async () => {
  requireNativeAddon();
  scratch = await tempDir();
  modelsDir = path.join(scratch.dir, 'models');
  await mkdir(modelsDir);
  await copyModel(LITE, path.join(modelsDir, 'lite'));
  await copyModel(TINY, path.join(modelsDir, 'tiny'));
  // Same type as lite, bigger on disk, but its weights are broken: a well-formed file (so it is listed)
  // lacking a tensor the model needs, padded past lite's size: loading it fails.
  const broken = await copyModel(LITE, path.join(modelsDir, 'lite-broken'));
  const weights = path.join(broken, 'model.safetensors');
  const { tensors, metadata } = await readSafetensors(weights);
  const missing = [...tensors.keys()].find((name) => name.endsWith('norm_f.weight'));
  if (!missing || !tensors.delete(missing)) throw new Error('lite lacks norm_f');
  tensors.set('padding', { dtype: 'F32', shape: [5_000_000], data: Buffer.alloc(20_000_000) });
  await writeSafetensors(weights, tensors, metadata);
  liteRef = await readJson<LiteReference>(path.join(LITE, 'reference.json'));
  tinyRef = await readJson<TinyReference>(path.join(TINY, 'reference.json'));
  pipeline = new LocalAIPipeline({ modelsDir, maxConcurrency: 1, maxQueueSize: 2, defaultMode: ProcessingMode.ENERGY_EFFICIENT });
});

afterAll(async () => {
  pipeline?.dispose();
  await scratch?.cleanup();
});

function generation(id: string, extra: Partial<ProcessingRequest> = {}): ProcessingRequest {
  return { id, input: liteRef.prompt, taskType: 'generation', options: { maxTokens: 12, temperature: 0 }, ...extra };
}

describe('generation', () => {
  it('serves a request with every result field filled', async () => {
    const result = await pipeline.process(generation('r1', { modelPreference: 'lite' }));
    expect(result).toMatchObject({ requestId: 'r1', success: true, modelUsed: 'lite', fallbackUsed: false, promptTokens: liteRef.input_ids.length, generatedTokens: 12 });
    expect(result.text).toBe(liteRef.greedy_text.slice(0, result.text?.length));
    expect(result.text?.length).toBeGreaterThan(20);
    expect(result.processingTime).toBeGreaterThan(0);
    expect(result.tokensPerSecond).toBeGreaterThan(0);
    expect(result.energyConsumed).toBeGreaterThan(0);
    expect(['rapl', 'estimate']).toContain(result.energySource);
    expect(result.metadata.finishReason).toBe('length');
    expect(result.errorCode).toBeUndefined();
    // The model is loaded now: the next request loads nothing, and says 0, not the lease's bookkeeping.
    const again = await pipeline.process(generation('r1-again', { modelPreference: 'lite' }));
    expect(again.metadata.loadMs).toBe(0);
  });

  it('streams tokens, and the result matches the streamed text', async () => {
    const stream = pipeline.stream(generation('r-stream', { modelPreference: 'lite' }));
    let text = '';
    let chunks = 0;
    for await (const chunk of stream) {
      text += chunk.text;
      chunks++;
    }
    const result = await stream.result;
    expect(chunks).toBe(12);
    expect(result.text).toBe(text);
  });

  it('text input needs a tokenizer: the selection skips models without one', async () => {
    const result = await pipeline.process({ id: 'ids', input: { ids: tinyRef.input_ids }, taskType: 'generation', mode: ProcessingMode.MINIMAL_RESOURCES, options: { maxTokens: 4 } });
    expect(result.success).toBe(true);
    expect(result.modelUsed).toBe('tiny'); // smallest
  });
});

describe('modes', () => {
  it('FULL_CAPABILITY takes the largest usable model, MINIMAL_RESOURCES the smallest that fits', async () => {
    const full = await pipeline.process(generation('full', { mode: ProcessingMode.FULL_CAPABILITY }));
    // lite-broken is largest but fails to load → fallback to the next model in the mode's ranking
    expect(full.success).toBe(true);
    expect(full.modelUsed).not.toBe('lite-broken');
    expect(full.metadata.selection).toContain('lite-broken');
    const small = await pipeline.process({ id: 'min', input: { ids: [1, 2, 3] }, taskType: 'generation', mode: ProcessingMode.MINIMAL_RESOURCES, options: { maxTokens: 2 } });
    expect(small.modelUsed).toBe('tiny');
  });

  it('mode limits bound model size and tokens', async () => {
    const limited = new LocalAIPipeline({ modelsDir, modeLimits: { MINIMAL_RESOURCES: { maxModelBytes: 1_000_000, maxTokens: 5 } } });
    try {
      const result = await limited.process(generation('clamp', { mode: ProcessingMode.MINIMAL_RESOURCES, options: { maxTokens: 100 } }));
      // Text prompt, but the only model ≤ 1 MB with a tokenizer is tiny.
      expect(result.modelUsed).toBe('tiny');
      expect(result.generatedTokens).toBeLessThanOrEqual(5);
      expect(result.metadata.maxTokens).toBe(5);
      // The cap applies to valid asks; one the engine refuses is refused here too, not capped into a valid one.
      for (const maxTokens of [1e300, Number.POSITIVE_INFINITY, 2 ** 21]) {
        const refused = await limited.process(generation('huge', { mode: ProcessingMode.MINIMAL_RESOURCES, options: { maxTokens } }));
        expect({ maxTokens, success: refused.success, code: refused.errorCode }).toEqual({ maxTokens, success: false, code: 'E_INVALID_OPTION' });
        expect(refused.errorMessage).toMatch(/maxTokens/);
      }
      const none = await limited.process(generation('none', { mode: ProcessingMode.MINIMAL_RESOURCES, modelPreference: 'lite' }));
      expect(none.modelUsed).toBe('tiny'); // preference does not fit the mode: ignored, and said so
      expect(none.metadata.selection).toMatch(/preferred "lite" does not fit/);
      const tooSmall = new LocalAIPipeline({ modelsDir, modeLimits: { MINIMAL_RESOURCES: { maxModelBytes: 1000 } } });
      const failed = await tooSmall.process(generation('nothing', { mode: ProcessingMode.MINIMAL_RESOURCES }));
      expect(failed).toMatchObject({ success: false, errorCode: 'E_MODEL_NOT_FOUND' });
    } finally {
      limited.dispose();
    }
  });
});

describe('fallback', () => {
  it('when the preferred model fails to load, another model that fits the mode serves the request', async () => {
    const result = await pipeline.process(generation('fb', { modelPreference: 'lite-broken' }));
    expect(result.success).toBe(true);
    expect(result.fallbackUsed).toBe(true);
    expect(result.modelUsed).toBe('tiny'); // ENERGY_EFFICIENT ranks smallest first (with a tokenizer: text prompt)
    expect(result.metadata.fallbackFrom).toBe('lite-broken');
    expect(result.metadata.fallbackReasons?.[0]).toMatch(/^lite-broken: \[E_BAD_WEIGHTS\]/);
  });

  it('an unknown or escaping preference fails with its code (no fallback: there is no type to fall back within)', async () => {
    expect(await pipeline.process(generation('unknown', { modelPreference: 'nope' }))).toMatchObject({ success: false, errorCode: 'E_MODEL_NOT_FOUND' });
    expect(await pipeline.process(generation('escape', { modelPreference: '../models' }))).toMatchObject({ success: false, errorCode: 'E_INVALID_OPTION' });
  });
});

describe('limits', () => {
  it('maxProcessingTime stops a long generation: finish reason abort, E_ABORTED, partial text', async () => {
    // mamba1-tiny's greedy continuation repeats one token and never emits EOS: only the deadline can stop it.
    const endless = new LocalAIPipeline({ modelsDir, modeLimits: { FULL_CAPABILITY: { maxTokens: 1 << 20 } } });
    try {
      const result = await endless.process({
        id: 'deadline',
        input: { ids: tinyRef.input_ids },
        taskType: 'generation',
        modelPreference: 'tiny',
        mode: ProcessingMode.FULL_CAPABILITY,
        maxProcessingTime: 300,
        options: { maxTokens: 1 << 20, temperature: 0 },
      });
      expect(result.success).toBe(false);
      expect(result.errorCode).toBe('E_ABORTED');
      expect(result.errorMessage).toMatch(/maxProcessingTime of 300 ms exceeded/);
      expect(result.metadata.finishReason).toBe('abort');
      expect(result.metadata.stoppedBy).toBe('deadline');
      expect(result.generatedTokens).toBeGreaterThan(10);
      expect(result.text?.length).toBeGreaterThan(10);
      expect(result.processingTime).toBeGreaterThanOrEqual(300);
      expect(result.processingTime).toBeLessThan(300 + 500);
    } finally {
      endless.dispose();
    }
  });

  it('energyBudget stops generation once exceeded and reports it', async () => {
    const result = await pipeline.process(generation('energy', { modelPreference: 'lite', energyBudget: 1e-6, options: { maxTokens: 200, temperature: 0 } }));
    expect(result.success).toBe(false);
    expect(result.metadata.stoppedBy).toBe('energy-budget');
    expect(result.errorMessage).toMatch(/energyBudget of 0.000001 J exceeded/);
    expect(result.generatedTokens).toBeLessThanOrEqual(2);
    expect(result.energyConsumed).toBeGreaterThan(1e-6);
  });

  it('energyBudget stops scoring too, between layers, once exceeded', async () => {
    const ids = Array.from({ length: 20_000 }, (_, i) => 1 + (i % 1000));
    const result = await pipeline.process({ id: 'energy-score', input: { ids }, taskType: 'scoring', modelPreference: 'lite', energyBudget: 1e-6 });
    // Before, the budget was not looked at: the whole sequence was scored (success, 30+ J on a long one).
    expect([result.success, result.errorCode, result.metadata.stoppedBy, result.metadata.stoppedDuring]).toEqual([false, 'E_ABORTED', 'energy-budget', 'scoring']);
    expect(result.errorMessage).toMatch(/^energyBudget of 0.000001 J exceeded \(\d+\.\d+ J used\) during scoring/);
    // One shorter than the 20 ms between reads is held to it as well.
    const short = await pipeline.process({ id: 'energy-score-short', input: { ids: [1, 2, 3] }, taskType: 'scoring', modelPreference: 'lite', energyBudget: 1e-9 });
    expect([short.success, short.metadata.stoppedBy]).toEqual([false, 'energy-budget']);
  });

  it('the caller signal stops a request', async () => {
    const controller = new AbortController();
    const stream = pipeline.stream(generation('caller', { modelPreference: 'lite', options: { maxTokens: 500, signal: controller.signal } }));
    for await (const _ of stream) controller.abort();
    const result = await stream.result;
    expect(result).toMatchObject({ success: false, errorCode: 'E_ABORTED' });
    expect(result.metadata.stoppedBy).toBe('signal');
    expect(result.metadata.finishReason).toBe('abort');
    expect(result.generatedTokens).toBeLessThan(500);
  });

  it('the queue bounds concurrency and rejects requests beyond maxQueueSize', async () => {
    await pipeline.process(generation('warm', { modelPreference: 'lite', options: { maxTokens: 1 } }));
    let running = 0;
    let maxRunning = 0;
    const requests = Array.from({ length: 5 }, (_, i) => {
      const stream = pipeline.stream(generation(`q${i}`, { modelPreference: 'lite', options: { maxTokens: 8 } }));
      return (async (): Promise<ProcessingResult> => {
        let counted = false;
        for await (const _ of stream) {
          if (!counted) {
            counted = true;
            running++;
            maxRunning = Math.max(maxRunning, running);
          }
        }
        if (counted) running--;
        return stream.result;
      })();
    });
    expect((await pipeline.getSystemStatus()).queue).toMatchObject({ running: 1, waiting: 2, maxConcurrency: 1, maxQueueSize: 2 });
    const results = await Promise.all(requests);
    expect(results.filter((r) => r.success)).toHaveLength(3); // 1 running + 2 queued
    const rejected = results.filter((r) => !r.success);
    expect(rejected).toHaveLength(2);
    for (const r of rejected) {
      expect(r.errorCode).toBe('E_ABORTED');
      expect(r.errorMessage).toMatch(/queue is full/);
    }
    expect(maxRunning).toBe(1);
  });

  it('invalid requests are results with E_INVALID_OPTION, not exceptions', async () => {
    const bad: unknown[] = [
      { id: '', input: 'x', taskType: 'generation' },
      { id: 'a', input: 5, taskType: 'generation' },
      { id: 'a', input: 'x', taskType: 'translate' },
      { id: 'a', input: 'x', taskType: 'generation', mode: 'TURBO' },
      { id: 'a', input: 'x', taskType: 'generation', maxProcessingTime: -1 },
      { id: 'a', input: 'x', taskType: 'generation', energyBudget: 0 },
      { id: 'a', input: 'x', taskType: 'generation', modelPreference: 'lite', options: { temperature: -2 } },
    ];
    for (const request of bad) {
      const result = await pipeline.process(request as ProcessingRequest);
      expect(result.success).toBe(false);
      expect(result.errorCode).toBe('E_INVALID_OPTION');
    }
    // Options a request's task would ignore are refused by name, as unknown ones are.
    const ignored: [unknown, string][] = [
      [{ id: 'a', input: 'x', taskType: 'scoring', options: { maxTokens: 5 } }, 'request.options.maxTokens shapes a generation; a scoring request takes returnLogits and signal only'],
      [{ id: 'a', input: 'x', taskType: 'scoring', options: { temperature: 0.5, seed: 1 } }, 'request.options.temperature shapes a generation'],
      [{ id: 'a', input: 'x', taskType: 'scoring', options: { returnLogits: 'yes' } }, 'request.options.returnLogits must be a boolean, got string'],
      [{ id: 'a', input: 'x', taskType: 'generation', options: { returnLogits: true } }, 'request.options.returnLogits is for taskType "scoring" only'],
      [null, 'the request must be an object'],
      // Fields that throw when read (a getter, a proxy) make a refused request, not a rejected promise.
      [{ id: 'a', taskType: 'generation', get input() { throw new Error('no input here'); } }, 'the request could not be read (no input here)'],
      [{ id: 'a', input: 'x', taskType: 'generation', options: new Proxy({}, { ownKeys: () => { throw new Error('no keys'); } }) }, 'the request could not be read (no keys)'],
    ];
    for (const [request, message] of ignored) {
      const result = await pipeline.process(request as ProcessingRequest);
      expect([result.success, result.errorCode]).toEqual([false, 'E_INVALID_OPTION']);
      expect(result.errorMessage).toContain(message);
    }
  });
});

describe('scoring', () => {
  it('returns per-token logprobs, perplexity and (on request) logits matching the reference', async () => {
    const result = await pipeline.process({ id: 's', input: { ids: tinyRef.input_ids }, taskType: 'scoring', modelPreference: 'tiny', options: { returnLogits: true } });
    expect(result.success).toBe(true);
    expect(result.result?.ids).toEqual(tinyRef.input_ids);
    expect(result.result?.tokenLogprobs).toHaveLength(tinyRef.input_ids.length - 1);
    expect(result.result?.perplexity).toBeGreaterThan(1);
    const logits = result.result?.logits as number[][];
    expect(logits).toHaveLength(tinyRef.input_ids.length);
    let worst = 0;
    tinyRef.logits.forEach((row, i) => row.forEach((v, j) => (worst = Math.max(worst, Math.abs((logits[i]?.[j] as number) - v)))));
    expect(worst).toBeLessThan(1e-3);
    expect(result.promptTokens).toBe(tinyRef.input_ids.length);
    const text = await pipeline.process({ id: 's2', input: liteRef.prompt, taskType: 'scoring', modelPreference: 'lite' });
    expect(text.result?.ids).toEqual(liteRef.input_ids);
    expect(text.result?.logits).toBeUndefined();
  });
});

describe('metrics and status', () => {
  it('counts requests, outcomes, fallbacks, tokens, latency and energy', () => {
    const m = pipeline.getMetrics();
    expect(m.requests).toBeGreaterThan(10);
    expect(m.succeeded + m.failed).toBe(m.requests);
    expect(m.fallbacks).toBeGreaterThanOrEqual(2);
    expect(m.aborted).toBeGreaterThanOrEqual(4); // energy, signal, 2 × queue full
    expect(m.errorsByCode.E_INVALID_OPTION).toBeGreaterThanOrEqual(7);
    expect(m.requestsByModel.lite).toBeGreaterThan(3);
    // Only modes that exist are counted under a mode (a request refused for its mode is counted as failed).
    expect(Object.keys(m.requestsByMode).every((mode) => (Object.values(ProcessingMode) as string[]).includes(mode))).toBe(true);
    expect(m.generatedTokens).toBeGreaterThan(50);
    expect(m.latencyMs.count).toBe(m.requests);
    expect(m.latencyMs.p95).toBeGreaterThanOrEqual(m.latencyMs.p50);
    expect(m.tokensPerSecond.mean).toBeGreaterThan(0);
    expect(m.energyJoules).toBeGreaterThan(0);
  });

  it('getSystemStatus reports backend and why, loaded models, memory, queue, offline state', async () => {
    const status = await pipeline.getSystemStatus();
    expect(status.backend).toMatchObject({ available: true, kind: 'native' });
    expect(status.backend.available && status.backend.reason).toBeTruthy();
    expect(status.loadedModels.map((m) => m.name)).toContain('lite');
    expect(status.memory.loadedModelBytes).toBeGreaterThan(0);
    expect(status.memory.rssBytes).toBeGreaterThan(status.memory.loadedModelBytes);
    expect(status.queue).toMatchObject({ running: 0, waiting: 0 });
    expect(status.offline.probed).toBe(true);
    expect(status.defaultMode).toBe('ENERGY_EFFICIENT');
    expect(status.metrics.requests).toBeGreaterThan(0);
    expect(status.manifest.persistent).toBe(true);
  });
});

describe('transformer models', () => {
  it('are served by the default TransformerEngine; the mode limit is a cap cut to the context, an asked-for maxTokens is strict', async () => {
    const dir = await tempDir();
    try {
      const models = path.join(dir.dir, 'models');
      await mkdir(models);
      await copyModel(path.join(path.dirname(TINY), 'llama-tiny'), path.join(models, 'llama'));
      const p = new LocalAIPipeline({ modelsDir: models, defaultMode: ProcessingMode.FULL_CAPABILITY });
      try {
        const ids = Array.from({ length: 250 }, (_, i) => (i * 37) % 500);
        // FULL_CAPABILITY allows 2048 tokens; the model's context (256) leaves room for 6.
        const capped = await p.process({ id: 't1', input: { ids }, taskType: 'generation', options: { temperature: 0 } });
        expect(capped).toMatchObject({ success: true, modelUsed: 'llama', generatedTokens: 6 });
        expect(capped.metadata.finishReason).toBe('length');
        const strict = await p.process({ id: 't2', input: { ids }, taskType: 'generation', options: { maxTokens: 20 } });
        expect(strict.success).toBe(false);
        expect(strict.errorCode).toBe('E_INVALID_OPTION');
      } finally {
        p.dispose();
      }
    } finally {
      await dir.cleanup();
    }
  });
});
