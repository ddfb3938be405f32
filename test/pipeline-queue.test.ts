/**
 * Pipeline ordering logic with a scripted engine: which model is tried first, the fallback order,
 * and FIFO queueing. (The only test that does not use the real binding: it checks orchestration,
 * not inference; pipeline.test.ts covers the real path.)
 */
import { copyFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LocalModelManager } from '../ts/models/manager.js';
import { LocalAIPipeline } from '../ts/pipeline/pipeline.js';
import { ProcessingMode } from '../ts/pipeline/modes.js';
import { BoundedQueue } from '../ts/pipeline/queue.js';
import { TINY, TINY_ORIGINAL, expectCode, tempModelsDir } from './helpers.js';
import { ScriptedEngine } from './scripted-engine.js';

let scratch: Awaited<ReturnType<typeof tempModelsDir>>;
let modelsDir: string;

beforeAll(async () => {
  // Real folders (sizes differ: the .bin is larger than the safetensors).
  scratch = await tempModelsDir({ 'a-small': TINY, 'b-large': TINY_ORIGINAL, 'c-small-too': TINY });
  modelsDir = scratch.modelsDir;
  // b-large (the state-spaces fixture) takes text prompts too, so text requests can fall back to it.
  await copyFile(path.join(TINY, 'tokenizer.json'), path.join(modelsDir, 'b-large', 'tokenizer.json'));
});

afterAll(async () => scratch?.cleanup());

describe('pipeline orchestration', () => {
  it('tries the largest first in FULL_CAPABILITY, then falls back in the mode\'s ranking', async () => {
    const engine = new ScriptedEngine(new Set(['b-large', 'a-small']), 5);
    const manager = new LocalModelManager({ modelsDir, engines: [engine], measurePerformance: false });
    const pipeline = new LocalAIPipeline({ manager });
    const result = await pipeline.process({ id: '1', input: 'Once', taskType: 'generation', mode: ProcessingMode.FULL_CAPABILITY });
    expect(engine.loadAttempts).toEqual(['b-large', 'a-small', 'c-small-too']);
    expect(result).toMatchObject({ success: true, modelUsed: 'c-small-too', fallbackUsed: true });
    expect(result.metadata.fallbackReasons).toHaveLength(2);
  });

  it('reports the first failure when every candidate fails', async () => {
    const engine = new ScriptedEngine(new Set(['a-small', 'b-large', 'c-small-too']), 5);
    const pipeline = new LocalAIPipeline({ manager: new LocalModelManager({ modelsDir, engines: [engine], measurePerformance: false }) });
    const result = await pipeline.process({ id: '1', input: 'Once', taskType: 'generation', mode: ProcessingMode.MINIMAL_RESOURCES });
    expect(engine.loadAttempts[0]).toBe('a-small');
    expect(result).toMatchObject({ success: false, errorCode: 'E_BAD_WEIGHTS', fallbackUsed: false });
    expect(result.errorMessage).toMatch(/fallbacks failed too/);
    expect(result.errorMessage).toContain(`no other model in ${modelsDir} can serve the request`);
  });

  it('runs queued requests with bounded concurrency', async () => {
    const engine = new ScriptedEngine(new Set(), 20);
    const pipeline = new LocalAIPipeline({ manager: new LocalModelManager({ modelsDir, engines: [engine], measurePerformance: false }), maxConcurrency: 2, maxQueueSize: 10 });
    const results = await Promise.all(['p0', 'p1', 'p2', 'p3', 'p4', 'p5'].map((p) => pipeline.process({ id: p, input: p, taskType: 'generation', modelPreference: 'a-small' })));
    expect(results.every((r) => r.success)).toBe(true);
    expect(engine.started.sort()).toEqual(['p0', 'p1', 'p2', 'p3', 'p4', 'p5']);
    expect(engine.maxActive).toBe(2);
    const metrics = pipeline.getMetrics();
    expect(metrics.requests).toBe(6);
    expect(metrics.latencyMs.max).toBeGreaterThanOrEqual(3 * 20 * 0.9); // third wave waited for two
  });

  it('a deadline that passes while queued aborts the waiting request', async () => {
    const engine = new ScriptedEngine(new Set(), 200);
    const pipeline = new LocalAIPipeline({ manager: new LocalModelManager({ modelsDir, engines: [engine], measurePerformance: false }) });
    const first = pipeline.process({ id: 'long', input: 'x', taskType: 'generation', modelPreference: 'a-small' });
    const second = await pipeline.process({ id: 'short', input: 'y', taskType: 'generation', modelPreference: 'a-small', maxProcessingTime: 50 });
    expect(second).toMatchObject({ success: false, errorCode: 'E_ABORTED' });
    expect(second.errorMessage).toMatch(/while queued/);
    expect((await first).success).toBe(true);
  });
});

describe('BoundedQueue', () => {
  it('admits waiting tasks in FIFO order, at most maxConcurrency at once', async () => {
    const queue = new BoundedQueue(2, 10);
    const admitted: number[] = [];
    let active = 0;
    let maxActive = 0;
    await Promise.all(
      [0, 1, 2, 3, 4, 5, 6].map((i) =>
        queue.run(async () => {
          admitted.push(i);
          active++;
          maxActive = Math.max(maxActive, active);
          await new Promise((r) => setTimeout(r, 10 + (i % 3) * 7));
          active--;
        }),
      ),
    );
    expect(admitted).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(maxActive).toBe(2);
    expect(queue.status()).toEqual({ running: 0, waiting: 0, maxConcurrency: 2, maxQueueSize: 10 });
  });

  it('rejects beyond maxQueueSize with E_ABORTED; a slot freed by a failing task is reused', async () => {
    const queue = new BoundedQueue(1, 1);
    const first = queue.run(async () => {
      await new Promise((r) => setTimeout(r, 20));
      throw new Error('task failed');
    });
    const second = queue.run(async () => 'second');
    await expectCode(queue.run(async () => 'third'), 'E_ABORTED');
    await expect(first).rejects.toThrow('task failed');
    expect(await second).toBe('second');
    expect(queue.status().running).toBe(0);
  });

  it('a task may hold its slot for work still running after it returns; the slot then passes on', async () => {
    const queue = new BoundedQueue(1, 5);
    let finishWork!: () => void;
    const work = new Promise<void>((resolve) => (finishWork = resolve));
    expect(await queue.run(async (holdSlot) => (holdSlot(work), 'first'))).toBe('first');
    expect(queue.status().running).toBe(1);
    let secondStarted = false;
    const second = queue.run(async () => {
      secondStarted = true;
    });
    await new Promise((r) => setTimeout(r, 20));
    expect(secondStarted).toBe(false);
    finishWork();
    await second;
    expect(secondStarted).toBe(true);
    expect(queue.status()).toMatchObject({ running: 0, waiting: 0 });
  });

  it('validates its limits', async () => {
    await expectCode(async () => new BoundedQueue(0, 1), 'E_INVALID_OPTION');
    await expectCode(async () => new BoundedQueue(1, -1), 'E_INVALID_OPTION');
  });
});
