/**
 * Two `phoenix-local worker` processes and a queue client on a private Redis: one worker is killed with
 * SIGKILL mid-run; its job is taken up by the other, and every request gets exactly one result whose
 * text equals the in-process pipeline's for the same request (greedy and seeded).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { PREFIX } from '../ts/pipeline/cluster/keys.js';
import { LocalAIPipeline } from '../ts/pipeline/pipeline.js';
import type { ProcessingRequest, ProcessingResult } from '../ts/pipeline/types.js';
import { TestRedis, clusterScene, skipWithoutRedis } from './cluster-redis.js';
import { LITE, ROOT, tempDir } from './helpers.js';

const BIN = path.join(ROOT, 'bin/phoenix-local.js');
const skip = skipWithoutRedis('test/cluster-reliability.test.ts');
const N = 60;

async function startWorkerProcess(redisUrl: string, modelsDir: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [BIN, 'worker', '--redis', redisUrl, '--queue', 'rel', '--models-dir', modelsDir], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  await new Promise<void>((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes('serving queue')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`worker exited with ${code}: ${stderr}`)));
  });
  return child;
}

describe.skipIf(skip)('workers dying mid-run', () => {
  let redis: TestRedis;
  let scratch: Awaited<ReturnType<typeof tempDir>>;
  let modelsDir: string;
  const workers: ChildProcess[] = [];

  beforeAll(async () => {
    ({ redis, scratch, modelsDir } = await clusterScene({ lite: LITE }));
    workers.push(await startWorkerProcess(redis.url, modelsDir), await startWorkerProcess(redis.url, modelsDir));
  }, 60_000);

  afterAll(async () => {
    for (const w of workers) if (w.exitCode === null && w.signalCode === null) w.kill('SIGKILL');
    await redis?.dispose();
    await scratch?.cleanup();
  });

  it(`${N} requests, one worker SIGKILLed: exactly one result each, texts as in-process`, async () => {
    const requests: ProcessingRequest[] = Array.from({ length: N }, (_, i) => ({
      id: `req-${i}`,
      input: ['Once upon a time', 'One day, Lily', 'The cat sat'][i % 3]!,
      taskType: 'generation',
      options: i % 2 === 0 ? { maxTokens: 48, temperature: 0 } : { maxTokens: 48, temperature: 0.8, seed: i },
    }));
    const local = new LocalAIPipeline({ modelsDir });
    const expected = new Map<string, string | undefined>();
    for (const r of requests) expected.set(r.id, (await local.process(r)).text);
    local.dispose();

    const client = new LocalAIPipeline({ modelsDir: path.join(scratch.dir, 'none'), queue: { redis: redis.url, name: 'rel' } });
    const results = Promise.all(requests.map((r) => client.process(r)));
    // Kill the first worker while it holds a job.
    const observer = new Queue('rel', { connection: { host: '127.0.0.1', port: redis.port }, prefix: PREFIX });
    while ((await observer.getActiveCount()) === 0) await new Promise((r) => setTimeout(r, 5));
    workers[0]!.kill('SIGKILL');
    const done: ProcessingResult[] = await results;
    const stuck = await observer.getJobCounts('waiting', 'active', 'delayed');
    // The killed worker's job was taken up again after its lock expired.
    const retried = (await observer.getJobs(['completed'])).filter((job) => job.stalledCounter > 0).map((job) => job.id);
    await observer.close();
    client.dispose();

    expect(done.map((r) => r.requestId)).toEqual(requests.map((r) => r.id));
    for (const r of done) {
      expect(r.success, `${r.requestId}: ${r.errorCode} ${r.errorMessage}`).toBe(true);
      expect(r.text, r.requestId).toBe(expected.get(r.requestId));
    }
    expect(retried.length).toBeGreaterThanOrEqual(1);
    expect(stuck).toMatchObject({ waiting: 0, active: 0, delayed: 0 });
  }, 90_000);
});
