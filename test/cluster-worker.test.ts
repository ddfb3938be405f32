/**
 * A queue worker on a private Redis: a job runs through the worker's own pipeline and returns the same
 * text as the in-process pipeline, its chunks land in order in the job's Redis stream, a malformed job
 * fails once (no retries) with a typed error, and close() lets an active job finish.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';

import { Queue, QueueEvents } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { encodeJob } from '../ts/pipeline/cluster/job.js';
import { PREFIX, cancelChannel, chunkStreamKey } from '../ts/pipeline/cluster/keys.js';
import { decodeChunk, decodeError, decodeResult } from '../ts/pipeline/cluster/wire.js';
import { startWorker, type QueueWorker } from '../ts/pipeline/cluster/worker.js';
import { LocalAIPipeline } from '../ts/pipeline/pipeline.js';
import type { ProcessingRequest } from '../ts/pipeline/types.js';
import { TestRedis, clusterScene, skipWithoutRedis } from './cluster-redis.js';
import { LITE, ROOT, copyModel, expectCode, tempDir } from './helpers.js';

const skip = skipWithoutRedis('test/cluster-worker.test.ts');
const QUEUE = 'worker-test';

describe.skipIf(skip)('startWorker', () => {
  let redis: TestRedis;
  let scratch: Awaited<ReturnType<typeof tempDir>>;
  let modelsDir: string;
  let worker: QueueWorker | undefined;
  let queue: Queue;
  let events: QueueEvents;
  let local: LocalAIPipeline;

  beforeAll(async () => {
    ({ redis, scratch, modelsDir } = await clusterScene({ lite: LITE }));
    const connection = { host: '127.0.0.1', port: redis.port, maxRetriesPerRequest: null };
    queue = new Queue(QUEUE, { connection, prefix: PREFIX });
    events = new QueueEvents(QUEUE, { connection, prefix: PREFIX });
    await events.waitUntilReady();
    local = new LocalAIPipeline({ modelsDir });
    worker = await startWorker({ redis: redis.url, queue: QUEUE, modelsDir, concurrency: 1 });
  }, 30_000);

  afterAll(async () => {
    await worker?.close();
    await events?.close();
    await queue?.close();
    local?.dispose();
    await redis?.dispose();
    await scratch?.cleanup();
  });

  it('returns the in-process text, with the chunks in order in the job stream', async () => {
    const request: ProcessingRequest = { id: 'w1', input: 'Once upon a time, there was a little', taskType: 'generation', options: { maxTokens: 16, temperature: 0 } };
    const expected = await local.process(request);
    const job = await queue.add('process', encodeJob(request), { jobId: request.id });
    const result = decodeResult(await job.waitUntilFinished(events, 30_000));
    expect(result.success).toBe(true);
    expect(result.requestId).toBe('w1');
    expect(result.text).toBe(expected.text);
    expect(result.modelUsed).toBe('lite');
    const reader = new Redis(redis.url);
    const entries = await reader.xrange(chunkStreamKey(QUEUE, 'w1'), '-', '+');
    reader.disconnect();
    const chunks = entries.map(([, fields]) => decodeChunk(JSON.parse(fields[1]!)));
    expect(chunks.map((c) => c.seq)).toEqual(chunks.map((_, i) => i));
    expect(chunks.map((c) => c.text).join('')).toBe(expected.text);
  }, 60_000);

  it('fails a malformed job once, with a typed error and no retries', async () => {
    const job = await queue.add('process', { id: 'bad', input: 'x', taskType: 'generation', modelPreference: '../../etc' }, { jobId: 'bad', attempts: 3 });
    await expect(job.waitUntilFinished(events, 30_000)).rejects.toThrow();
    const failed = await queue.getJob('bad');
    expect(failed?.attemptsMade).toBe(1);
    const error = decodeError(JSON.parse(failed!.failedReason));
    expect(error.code).toBe('E_INVALID_OPTION');
    expect(error.message).toMatch(/job\.modelPreference/);
  }, 30_000);

  it('aborts a running job whose id is published on the cancel channel', async () => {
    const request: ProcessingRequest = { id: 'w-cancel', input: 'Once upon a time', taskType: 'generation', options: { maxTokens: 4000, temperature: 0 } };
    const job = await queue.add('process', encodeJob(request), { jobId: request.id });
    const finished = job.waitUntilFinished(events, 30_000);
    while ((await queue.getJobState(request.id)) !== 'active') await new Promise((r) => setTimeout(r, 5));
    const publisher = new Redis(redis.url);
    await publisher.publish(cancelChannel(QUEUE), request.id);
    publisher.disconnect();
    const result = decodeResult(await finished);
    expect(result.success).toBe(false);
    expect(result.errorCode).toBe('E_ABORTED');
    expect(result.generatedTokens).toBeLessThan(4000);
  }, 60_000);

  it('gives its own pipeline the kvCache asked for, and refuses kvCache or modelsDir beside a pipeline', async () => {
    const llamaDir = path.join(scratch.dir, 'llama-models');
    await mkdir(llamaDir);
    await copyModel(path.join(ROOT, 'test/fixtures/llama-tiny'), path.join(llamaDir, 'llama'));
    const half = await startWorker({ redis: redis.url, queue: 'kv-cache-test', modelsDir: llamaDir, kvCache: 'f16', preload: ['llama'] });
    try {
      expect(half.pipeline.manager.loadedModels().map((m) => m.info.architecture.kvCacheDtype)).toEqual(['f16']);
    } finally {
      await half.close();
    }
    const kv = await expectCode(startWorker({ redis: redis.url, pipeline: local, kvCache: 'f16' }), 'E_INVALID_OPTION');
    expect(kv.message).toMatch(/kvCache/);
    const dir = await expectCode(startWorker({ redis: redis.url, pipeline: local, modelsDir }), 'E_INVALID_OPTION');
    expect(dir.message).toMatch(/modelsDir/);
    // What would fail every job is refused at start: a kvCache the core does not know, a models dir that is not there.
    const f8 = await expectCode(startWorker({ redis: redis.url, queue: 'kv-f8', modelsDir: llamaDir, kvCache: 'f8' as 'f16' }), 'E_INVALID_OPTION');
    expect(f8.message).toMatch(/option `kvCache` must be "f32" or "f16", got "f8"/);
    const missing = path.join(scratch.dir, 'no-models-here');
    const gone = await expectCode(startWorker({ redis: redis.url, queue: 'no-dir', modelsDir: missing }), 'E_MODEL_NOT_FOUND');
    expect(gone.message).toBe(`worker: models dir ${missing} does not exist or is not a folder`);
  }, 60_000);

  it('close() lets the active job finish', async () => {
    const request: ProcessingRequest = { id: 'w2', input: 'One day', taskType: 'generation', options: { maxTokens: 64, temperature: 0 } };
    const job = await queue.add('process', encodeJob(request), { jobId: request.id });
    const finished = job.waitUntilFinished(events, 30_000);
    while ((await queue.getJobState('w2')) !== 'active') await new Promise((r) => setTimeout(r, 5));
    await worker!.close();
    worker = undefined;
    const result = decodeResult(await finished);
    expect(result.success).toBe(true);
    expect(result.generatedTokens).toBeGreaterThan(0);
  }, 60_000);
});
