/**
 * The cluster tests' Redis: a private redis-server with persistence on, and BullMQ over it. Jobs queued
 * before a restart are still there after it (the append-only file), which the scale-out reliability
 * tests build on.
 */
import { Queue, Worker, type Job } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { TestRedis, skipWithoutRedis } from './cluster-redis.js';

const skip = skipWithoutRedis('test/cluster-redis.test.ts');

describe.skipIf(skip)('a private redis-server for the cluster tests', () => {
  let redis: TestRedis;
  beforeAll(async () => {
    redis = await TestRedis.create();
  }, 20_000);
  afterAll(async () => {
    await redis?.dispose();
  });

  const connection = (): { host: string; port: number; maxRetriesPerRequest: null } => ({ host: '127.0.0.1', port: redis.port, maxRetriesPerRequest: null });

  it('listens on 127.0.0.1 only, on the port it picked, and keeps queued BullMQ jobs across a restart', async () => {
    expect(redis.url).toBe(`redis://127.0.0.1:${redis.port}`);
    const producer = new Queue('restart-check', { connection: connection() });
    const ids = ['a', 'b', 'c'];
    for (const id of ids) await producer.add('echo', { value: id }, { jobId: id });
    expect(await producer.getWaitingCount()).toBe(3);
    await producer.close();

    await redis.stop();
    expect(redis.running).toBe(false);
    await redis.start();

    const done = new Map<string, unknown>();
    const all = new Promise<void>((resolve) => {
      const worker = new Worker(
        'restart-check',
        async (job: Job<{ value: string }>) => `echo:${job.data.value}`,
        { connection: connection() },
      );
      worker.on('completed', (job, value) => {
        done.set(job.id!, value);
        if (done.size === ids.length) void worker.close().then(resolve);
      });
    });
    await all;
    expect(Object.fromEntries(done)).toEqual({ a: 'echo:a', b: 'echo:b', c: 'echo:c' });
  }, 30_000);
});
