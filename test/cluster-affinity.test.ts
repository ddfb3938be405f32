/**
 * Model affinity and cluster figures: two workers on one queue, each holding a different model (and
 * able to load the other), take the jobs naming their model; a job for a model no worker holds still
 * completes; getSystemStatus()/getMetrics() of the client aggregate both workers' adverts.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { startWorker, type QueueWorker } from '../ts/pipeline/cluster/worker.js';
import { LocalAIPipeline } from '../ts/pipeline/pipeline.js';
import type { ProcessingRequest } from '../ts/pipeline/types.js';
import { TestRedis, clusterScene, skipWithoutRedis } from './cluster-redis.js';
import { LITE, TINY, copyModel, requireNativeAddon, tempDir } from './helpers.js';

const skip = skipWithoutRedis('test/cluster-affinity.test.ts');

describe.skipIf(skip)('jobs naming a model go to the worker holding it', () => {
  let redis: TestRedis;
  let scratch: Awaited<ReturnType<typeof tempDir>>;
  let holdsLite: QueueWorker;
  let holdsTiny: QueueWorker;
  let remote: LocalAIPipeline;

  beforeAll(async () => {
    const { modelsDir, ...scene } = await clusterScene({ lite: LITE, tiny: TINY, unheld: TINY });
    ({ redis, scratch } = scene);
    // A loaded machine (CI runs test files side by side) can hold a job past the default 2 s wait or a
    // heartbeat past its 3 s expiry, after which any worker may take it by design: room for both here.
    const patient = { affinityWaitMs: 60_000, heartbeatMs: 5_000 };
    holdsLite = await startWorker({ redis: redis.url, queue: 'aff', modelsDir, preload: ['lite'], ...patient });
    holdsTiny = await startWorker({ redis: redis.url, queue: 'aff', modelsDir, preload: ['tiny'], ...patient });
    remote = new LocalAIPipeline({ modelsDir: path.join(scratch.dir, 'none'), queue: { redis: redis.url, name: 'aff' } });
  }, 30_000);

  afterAll(async () => {
    remote?.dispose();
    await holdsLite?.close();
    await holdsTiny?.close();
    await redis?.dispose();
    await scratch?.cleanup();
  });

  const request = (id: string, model: string): ProcessingRequest => ({ id, input: 'Once upon a time', taskType: 'generation', modelPreference: model, options: { maxTokens: 8, temperature: 0 } });
  const loaded = (w: QueueWorker) => w.pipeline.manager.loadedModels().map((m) => m.name).sort();

  it('each request lands on the holder of its model; nobody reloads', async () => {
    // Not alternating: idle BullMQ workers are served in turn, which alone would match an alternating mix.
    const models = ['lite', 'lite', 'lite', 'tiny', 'tiny', 'tiny', 'lite', 'tiny', 'tiny', 'lite', 'lite', 'tiny'];
    for (const [i, model] of models.entries()) {
      const result = await remote.process(request(`a-${i}`, model));
      expect(result.success, `${result.errorCode} ${result.errorMessage}`).toBe(true);
      expect(result.modelUsed).toBe(model);
    }
    expect(holdsLite.pipeline.getMetrics().requestsByModel).toEqual({ lite: 6 });
    expect(holdsTiny.pipeline.getMetrics().requestsByModel).toEqual({ tiny: 6 });
    expect(loaded(holdsLite)).toEqual(['lite']);
    expect(loaded(holdsTiny)).toEqual(['tiny']);
  }, 60_000);

  it('a request for a model no worker holds still completes (its taker loads it)', async () => {
    const result = await remote.process(request('unheld-1', 'unheld'));
    expect(result.success, `${result.errorCode} ${result.errorMessage}`).toBe(true);
    expect(result.modelUsed).toBe('unheld');
    expect([...loaded(holdsLite), ...loaded(holdsTiny)].filter((m) => m === 'unheld')).toHaveLength(1);
  }, 30_000);

  it('getSystemStatus() and getMetrics() aggregate the workers', async () => {
    const status = await remote.getSystemStatus();
    const cluster = status.cluster!;
    expect(cluster, status.clusterError).toBeDefined();
    expect(cluster.jobs).toMatchObject({ waiting: 0, active: 0, completed: 13, failed: 0 });
    expect(cluster.workers.map((w) => w.id).sort()).toEqual([holdsLite.id, holdsTiny.id].sort());
    const byId = new Map(cluster.workers.map((w) => [w.id, w]));
    const lite = byId.get(holdsLite.id)!;
    const tiny = byId.get(holdsTiny.id)!;
    expect(lite.loadedModels.map((m) => m.name)).toContain('lite');
    expect(tiny.loadedModels.map((m) => m.name)).toContain('tiny');
    expect(lite.pid).toBe(process.pid);
    for (const w of [lite, tiny]) {
      expect(w.memory.rssBytes).toBeGreaterThan(0);
      expect(w.memory.loadedModelBytes).toBe(w.loadedModels.reduce((a, m) => a + m.memoryBytes, 0));
      expect(w.availableModels.sort()).toEqual(['lite', 'tiny', 'unheld']);
    }
    expect(lite.jobs.done + tiny.jobs.done).toBe(13);
    expect(lite.requestsByModel.lite).toBe(6);
    expect(tiny.requestsByModel.tiny).toBe(6);
    expect(cluster.latencyMs.count).toBe(13);
    expect(cluster.latencyMs.p95).toBeGreaterThanOrEqual(cluster.latencyMs.p50);
    expect(cluster.latencyMs.max).toBeGreaterThan(0);
    expect(cluster.throughputPerSecond).toBeGreaterThan(0);
    const metrics = remote.getMetrics();
    expect(metrics.requests).toBe(13); // the results this client received
    expect(metrics.succeeded).toBe(13);
    expect(metrics.cluster?.workers).toHaveLength(2);
  }, 30_000);
});

describe.skipIf(skip)('workers with different models dirs', () => {
  let redis: TestRedis;
  let scratch: Awaited<ReturnType<typeof tempDir>>;
  let liteOnly: QueueWorker;
  let both: QueueWorker;
  let remote: LocalAIPipeline;

  beforeAll(async () => {
    requireNativeAddon();
    redis = await TestRedis.create();
    scratch = await tempDir();
    const dirs = { liteOnly: path.join(scratch.dir, 'a'), both: path.join(scratch.dir, 'b') };
    await mkdir(dirs.liteOnly);
    await mkdir(dirs.both);
    await copyModel(LITE, path.join(dirs.liteOnly, 'lite'));
    await copyModel(LITE, path.join(dirs.both, 'lite'));
    await copyModel(TINY, path.join(dirs.both, 'tiny'));
    await mkdir(path.join(dirs.both, 'broken')); // a folder that is no model
    liteOnly = await startWorker({ redis: redis.url, queue: 'dirs', modelsDir: dirs.liteOnly });
    both = await startWorker({ redis: redis.url, queue: 'dirs', modelsDir: dirs.both });
    remote = new LocalAIPipeline({ modelsDir: path.join(scratch.dir, 'none'), queue: { redis: redis.url, name: 'dirs' } });
  }, 30_000);

  afterAll(async () => {
    remote?.dispose();
    await liteOnly?.close();
    await both?.close();
    await redis?.dispose();
    await scratch?.cleanup();
  });

  it('a job for a model only one worker has never fails on the other (which stays idle)', async () => {
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) => remote.process({ id: `t-${i}`, input: 'Once upon a time', taskType: 'generation', modelPreference: 'tiny', options: { maxTokens: 8, temperature: 0 } })),
    );
    for (const r of results) expect([r.success, r.modelUsed], `${r.errorCode} ${r.errorMessage}`).toEqual([true, 'tiny']);
    expect(liteOnly.pipeline.getMetrics().requests).toBe(0);
    expect(both.pipeline.getMetrics().requestsByModel).toEqual({ tiny: 8 });
  }, 60_000);

  it('a job preferring a broken model is served where that folder is, falling back as in-process — not failed where it is unknown', async () => {
    const ask = (id: string) => ({ id, input: 'Once upon a time', taskType: 'generation' as const, modelPreference: 'broken', options: { maxTokens: 4, temperature: 0 } });
    const local = new LocalAIPipeline({ modelsDir: path.join(scratch.dir, 'b') });
    const expected = await local.process(ask('broken-local'));
    local.dispose();
    expect([expected.success, expected.fallbackUsed]).toEqual([true, true]);
    const before = liteOnly.pipeline.getMetrics().requests;
    // Before, a worker without the folder took some of these and failed them E_MODEL_NOT_FOUND.
    const results = await Promise.all(Array.from({ length: 6 }, (_, i) => remote.process(ask(`broken-${i}`))));
    for (const r of results) expect([r.success, r.fallbackUsed, r.modelUsed], `${r.errorCode} ${r.errorMessage}`).toEqual([true, true, expected.modelUsed]);
    expect(liteOnly.pipeline.getMetrics().requests).toBe(before);
  }, 60_000);
});
