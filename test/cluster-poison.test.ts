/**
 * A poisoned job (its worker dies every time it runs it) ends after a bounded number of take-ups with a
 * typed error for the caller, instead of looping. Workers here are child processes of the library call
 * with a 1 s lock, so each death is noticed quickly (needs dist/: npm run build:ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { PREFIX } from '../ts/pipeline/cluster/keys.js';
import { LocalAIPipeline } from '../ts/pipeline/pipeline.js';
import { TestRedis, clusterScene, skipWithoutRedis } from './cluster-redis.js';
import { LITE, ROOT, tempDir } from './helpers.js';

const skip = skipWithoutRedis('test/cluster-poison.test.ts');

function startFastWorker(redisUrl: string, modelsDir: string): ChildProcess {
  const script = `import { startWorker } from ${JSON.stringify(path.join(ROOT, 'dist/index.js'))};
await startWorker({ redis: process.argv[1], queue: 'poison', modelsDir: process.argv[2], lockDurationMs: 1000 });`;
  return spawn(process.execPath, ['--input-type=module', '-e', script, redisUrl, modelsDir], { stdio: 'ignore' });
}

describe.skipIf(skip)('a poisoned job', () => {
  let redis: TestRedis;
  let scratch: Awaited<ReturnType<typeof tempDir>>;
  let modelsDir: string;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    ({ redis, scratch, modelsDir } = await clusterScene({ lite: LITE }));
  }, 30_000);

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await redis?.dispose();
    await scratch?.cleanup();
  });

  it('ends with a typed error after a bounded number of worker deaths', async () => {
    const client = new LocalAIPipeline({ modelsDir: path.join(scratch.dir, 'none'), queue: { redis: redis.url, name: 'poison' } });
    const observer = new Queue('poison', { connection: { host: '127.0.0.1', port: redis.port }, prefix: PREFIX });
    const result = client.process({ id: 'poison', input: 'Once upon a time', taskType: 'generation', options: { maxTokens: 100_000, temperature: 0 } });
    let settled = false;
    void result.then(() => (settled = true));
    let deaths = 0;
    const deadline = Date.now() + 40_000;
    const takenUpAgain = async (): Promise<boolean> => {
      const job = await observer.getJob('poison');
      // A job past the limit is taken up once more only to be failed at once (BullMQ's deferred
      // failure), without running: that is not a run.
      return (await observer.getJobState('poison')) === 'active' && (job?.stalledCounter ?? 0) >= deaths && !job?.deferredFailure;
    };
    while (!settled && Date.now() < deadline) {
      // A live worker notices the dead one's job (its stalled-job check) and runs it again.
      const worker = startFastWorker(redis.url, modelsDir);
      children.push(worker);
      while (!settled && !(await takenUpAgain()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      if (settled) break;
      // Soon after it is taken up: a kill 200 ms later once found the job already finished (a fresh CI
      // run where the job succeeded), so the generation may end sooner than it looks.
      await new Promise((r) => setTimeout(r, 50)); // mid-run
      worker.kill('SIGKILL'); // the job "kills" every worker that runs it
      deaths++;
    }
    const done = await result;
    await observer.close();
    client.dispose();
    expect(done.success).toBe(false);
    expect(done.errorCode).toBe('E_INTERNAL');
    expect(done.errorMessage).toMatch(/stalled/);
    // Run, taken up twice (maxStalledCount 2), then failed. Under load the observer can still catch
    // the final take-up (the one BullMQ fails at once) active before its deferred failure shows, and
    // kill that worker too: a fourth kill, never a fourth run that goes on.
    expect(deaths).toBeGreaterThanOrEqual(3);
    expect(deaths).toBeLessThanOrEqual(4);
  }, 60_000);
});
