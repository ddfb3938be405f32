/**
 * LocalAIPipeline({ queue }) against a worker on a private Redis: the same results and streamed chunks
 * as in-process, one job and one result per request id, typed errors rebuilt, the caller's signal
 * cancelling the job on its worker, and a full queue refused as in-process.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { startWorker, type QueueWorker } from '../ts/pipeline/cluster/worker.js';
import { LocalAIPipeline } from '../ts/pipeline/pipeline.js';
import type { ProcessingRequest } from '../ts/pipeline/types.js';
import { TestRedis, clusterScene, skipWithoutRedis } from './cluster-redis.js';
import { LITE, ROOT, copyModel, settlesWithin as within, tempDir } from './helpers.js';

const skip = skipWithoutRedis('test/cluster-client.test.ts');

describe.skipIf(skip)('LocalAIPipeline over a queue', () => {
  let redis: TestRedis;
  let scratch: Awaited<ReturnType<typeof tempDir>>;
  let worker: QueueWorker;
  let local: LocalAIPipeline;
  let remote: LocalAIPipeline;

  beforeAll(async () => {
    const { modelsDir, ...scene } = await clusterScene({ lite: LITE });
    ({ redis, scratch } = scene);
    local = new LocalAIPipeline({ modelsDir });
    worker = await startWorker({ redis: redis.url, queue: 'client', modelsDir });
    // The client has no models of its own.
    remote = new LocalAIPipeline({ modelsDir: path.join(scratch.dir, 'none'), queue: { redis: redis.url, name: 'client' } });
  }, 30_000);

  afterAll(async () => {
    remote?.dispose();
    await worker?.close();
    local?.dispose();
    await redis?.dispose();
    await scratch?.cleanup();
  });

  const request = (id: string, extra: Partial<ProcessingRequest['options']> = {}): ProcessingRequest => ({
    id,
    input: 'Once upon a time, there was a little',
    taskType: 'generation',
    options: { maxTokens: 24, temperature: 0, ...extra },
  });

  it('process and stream give the in-process text; chunks arrive in order', async () => {
    const expected = await local.process(request('same-local'));
    const processed = await remote.process(request('p1'));
    expect(processed.success).toBe(true);
    expect([processed.requestId, processed.text, processed.modelUsed]).toEqual(['p1', expected.text, 'lite']);
    const seeded = { temperature: 0.8, seed: 42 };
    const expectedSeeded = await local.process(request('seeded-local', seeded));
    const stream = remote.stream(request('s1', seeded));
    const chunks: string[] = [];
    for await (const chunk of stream) chunks.push(chunk.text);
    const result = await stream.result;
    expect(chunks.join('')).toBe(expectedSeeded.text);
    expect(result.text).toBe(expectedSeeded.text);
  }, 60_000);

  it('a duplicate request id gets the one result of the one job', async () => {
    const [a, b] = await Promise.all([remote.process(request('dup')), remote.process(request('dup'))]);
    expect(a.success).toBe(true);
    // The one result; only each caller's own wall time (and so its wait) differs.
    const ownTime = ({ processingTime: _t, metadata: { queueWaitMs: _q, ...metadata }, ...rest }: typeof a) => ({ ...rest, metadata });
    expect(ownTime(b)).toEqual(ownTime(a));
    const again = await remote.process(request('dup'));
    expect(ownTime(again)).toEqual(ownTime(a));
    // The same id for a different request is refused, not answered with the first request's result.
    const other = await remote.process({ ...request('dup', { maxTokens: 5 }), input: 'One day' });
    expect([other.success, other.errorCode]).toEqual([false, 'E_INVALID_OPTION']);
    expect(other.errorMessage).toMatch(/request id "dup" is taken by a different request on queue "client"/);
    // BullMQ's key separator in an id is a typed refusal naming the field, as any other bad id.
    const colon = await remote.process(request('a:b'));
    expect([colon.success, colon.errorCode]).toEqual([false, 'E_INVALID_OPTION']);
    expect(colon.errorMessage).toMatch(/job\.id must not contain ":"/);
  }, 60_000);

  it('rebuilds typed errors from the worker', async () => {
    const missing = await remote.process({ ...request('missing'), modelPreference: 'nope' });
    expect([missing.success, missing.errorCode]).toEqual([false, 'E_MODEL_NOT_FOUND']);
    const hostile = await remote.process({ ...request('hostile'), modelPreference: '../../etc' });
    expect(hostile.errorCode).toBe('E_INVALID_OPTION');
    expect(hostile.errorMessage).toMatch(/job\.modelPreference/);
  }, 60_000);

  it('the caller\'s signal cancels the job on its worker', async () => {
    const controller = new AbortController();
    const stream = remote.stream(request('cancel-me', { maxTokens: 4000, signal: controller.signal }));
    let seen = 0;
    for await (const _ of stream) {
      if (++seen === 3) controller.abort();
    }
    const result = await stream.result;
    expect(result.success).toBe(false);
    expect(result.errorCode).toBe('E_ABORTED');
    expect(result.generatedTokens).toBeLessThan(4000);
  }, 60_000);

  it('a request stopped while its job waits for a worker settles at once (E_ABORTED), and so does one that joined its id', async () => {
    // No worker serves this queue: every job stays waiting.
    const idle = new LocalAIPipeline({ modelsDir: path.join(scratch.dir, 'none'), queue: { redis: redis.url, name: 'no-worker' } });
    try {
      const controller = new AbortController();
      const started = performance.now();
      const deadline = idle.process({ ...request('waits-deadline'), maxProcessingTime: 300 });
      const signalled = idle.process(request('waits-signal', { signal: controller.signal }));
      const joined = idle.process(request('waits-signal')); // the same id and request: joins that job
      const stream = idle.stream(request('waits-stream'));
      // Long enough for the joiner to have found the job (a few Redis round trips) on a loaded machine.
      setTimeout(() => {
        controller.abort();
        stream.cancel();
      }, 1000);
      const results = await within(6_000, Promise.all([deadline, signalled, joined, stream.result]), 'stopped requests');
      // Before, each waited for a job that was removed and never finished (and polled Redis meanwhile).
      expect(results.map((r) => [r.success, r.errorCode])).toEqual(Array(4).fill([false, 'E_ABORTED']));
      expect(results[0]!.errorMessage).toMatch(/maxProcessingTime of 300 ms exceeded/);
      expect(results[2]!.errorMessage).toMatch(/removed before a worker took it/);
      expect(results[0]!.metadata).toMatchObject({ stoppedBy: 'deadline', stoppedDuring: 'queue', deadlineMs: 300 });
      expect(performance.now() - started).toBeLessThan(4_000);
    } finally {
      idle.dispose();
    }
  }, 30_000);

  it('a request joining a job from another client ends when the first client\'s cancel removes it', async () => {
    const first = new LocalAIPipeline({ modelsDir: path.join(scratch.dir, 'none'), queue: { redis: redis.url, name: 'no-worker-join' } });
    const second = new LocalAIPipeline({ modelsDir: path.join(scratch.dir, 'none'), queue: { redis: redis.url, name: 'no-worker-join' } });
    try {
      const controller = new AbortController();
      const owner = first.process(request('shared-id', { signal: controller.signal }));
      await new Promise((resolve) => setTimeout(resolve, 500));
      const joiner = second.process(request('shared-id'));
      await new Promise((resolve) => setTimeout(resolve, 1000));
      controller.abort();
      // Before, only the cancelling client's own waits ended: this joiner polled Redis forever.
      const [a, b] = await within(6_000, Promise.all([owner, joiner]), 'owner and joiner');
      expect([a.errorCode, a.errorMessage]).toEqual(['E_ABORTED', 'aborted by the caller']);
      expect([b.errorCode, b.errorMessage]).toEqual(['E_ABORTED', 'the job was removed before a worker took it (cancelled, or past a full queue)']);
    } finally {
      first.dispose();
      second.dispose();
    }
  }, 30_000);

  it('dispose() ends requests running on a worker and waiting in the queue: "the pipeline was disposed"', async () => {
    const disposing = new LocalAIPipeline({ modelsDir: path.join(scratch.dir, 'none'), queue: { redis: redis.url, name: 'client' } });
    const waiting = new LocalAIPipeline({ modelsDir: path.join(scratch.dir, 'none'), queue: { redis: redis.url, name: 'no-worker-2' } });
    const running = disposing.stream(request('disposed-running', { maxTokens: 4000 }));
    const queued = waiting.process(request('disposed-waiting'));
    for await (const _ of running) break; // a token came: it runs on the worker
    const at = performance.now();
    disposing.dispose();
    waiting.dispose();
    const results = await within(4_000, Promise.all([running.result, queued]), 'disposed requests');
    expect(results.map((r) => [r.success, r.errorCode])).toEqual([
      [false, 'E_ABORTED'],
      [false, 'E_ABORTED'],
    ]);
    for (const r of results) expect(r.errorMessage).toMatch(/the pipeline was disposed/);
    expect(performance.now() - at).toBeLessThan(3_000);
  }, 30_000);

  it('processingTime is the caller\'s wall time: the wait for a worker counts (queueWaitMs says how much)', async () => {
    const t0 = performance.now();
    const [first, second] = await Promise.all([remote.process(request('wall-first', { maxTokens: 120 })), remote.process(request('wall-second', { maxTokens: 2 }))]);
    const wall = performance.now() - t0;
    // The one worker runs them in turn: the second waited for the first, which its time must show.
    const later = first!.processingTime < second!.processingTime ? second! : first!;
    expect(later.processingTime).toBeGreaterThan(0.8 * wall);
    expect(later.processingTime).toBeLessThanOrEqual(wall + 1);
    expect(later.metadata.queueWaitMs).toBeGreaterThan(0);
  }, 60_000);

  it('maxQueueSize holds for requests arriving together: the newest past it are refused, the others queued', async () => {
    const burst = new LocalAIPipeline({ modelsDir: path.join(scratch.dir, 'none'), queue: { redis: redis.url, name: 'no-worker-burst', maxQueueSize: 3 } });
    try {
      // No worker: whatever is admitted waits until its deadline.
      const results = await within(15_000, Promise.all(Array.from({ length: 6 }, (_, i) => burst.process({ ...request(`burst-${i}`), maxProcessingTime: 1500 }))), 'burst');
      const full = results.filter((r) => /queue is full/.test(r.errorMessage ?? ''));
      const waited = results.filter((r) => /maxProcessingTime of 1500 ms exceeded/.test(r.errorMessage ?? ''));
      // Before, all six were admitted (each counted 0–2 jobs before any was added).
      expect([full.length, waited.length]).toEqual([3, 3]);
    } finally {
      burst.dispose();
    }
  }, 30_000);

  it('getSystemStatus() of a queue pipeline lists no local models (its workers\' are in cluster)', async () => {
    const modelsDir = path.join(scratch.dir, 'status-models');
    await copyModel(LITE, path.join(modelsDir, 'lite'));
    const withFolder = new LocalAIPipeline({ modelsDir, queue: { redis: redis.url, name: 'client' } });
    try {
      const status = await withFolder.getSystemStatus();
      // Before, it listed (and checksummed) this folder, which a queue pipeline never uses.
      expect(status.models).toEqual([]);
      expect(status.cluster?.workers.flatMap((w) => w.availableModels)).toContain('lite');
    } finally {
      withFolder.dispose();
    }
  }, 30_000);

  it('a malformed request is refused by the client as in-process, before any job is queued', async () => {
    const typo = { ...request('typo-remote'), options: { maxToken: 5 } } as unknown as ProcessingRequest;
    const [there, here] = [await remote.process(typo), await local.process({ ...typo, id: 'typo-local' })];
    expect([there.success, there.errorCode, there.errorMessage]).toEqual([false, 'E_INVALID_OPTION', here.errorMessage]);
    expect(there.errorMessage).toMatch(/did you mean `maxTokens`/);
    // No job holds the id: the corrected request runs under it.
    const fixed = await remote.process(request('typo-remote'));
    expect(fixed.success, fixed.errorMessage).toBe(true);
  }, 30_000);

  it('a full queue is E_ABORTED, as in-process', async () => {
    const full = new LocalAIPipeline({ modelsDir: path.join(scratch.dir, 'none'), queue: { redis: redis.url, name: 'client', maxQueueSize: 0 } });
    const result = await full.process(request('never'));
    full.dispose();
    expect([result.success, result.errorCode]).toEqual([false, 'E_ABORTED']);
    expect(result.errorMessage).toMatch(/queue is full/);
  }, 30_000);

  it('a disposed queue pipeline closes its connections: its process exits by itself', async () => {
    const script = `import { LocalAIPipeline } from ${JSON.stringify(path.join(ROOT, 'dist/index.js'))};
const client = new LocalAIPipeline({ modelsDir: '/nonexistent', queue: { redis: process.argv[1], name: 'client' } });
const result = await client.process({ id: 'exits', input: 'Once upon a time', taskType: 'generation', options: { maxTokens: 4, temperature: 0 } });
client.dispose();
console.log(result.success);`;
    // Asynchronously: the worker serving it runs in this process.
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, redis.url], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const killer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once('exit', (c, s) => resolve([c, s])));
    clearTimeout(killer);
    expect([signal, code, out.trim()], err).toEqual([null, 0, 'true']);
  }, 30_000);
});
