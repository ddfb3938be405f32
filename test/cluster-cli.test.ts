/**
 * `phoenix-local worker` as users run it (node bin/phoenix-local.js, needs dist/: npm run build:ts):
 * usage errors before connecting, jobs served with the in-process text, SIGTERM finishes the active
 * job and exits 0.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { Queue, QueueEvents } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { encodeJob } from '../ts/pipeline/cluster/job.js';
import { PREFIX } from '../ts/pipeline/cluster/keys.js';
import { decodeResult } from '../ts/pipeline/cluster/wire.js';
import { LocalAIPipeline } from '../ts/pipeline/pipeline.js';
import type { ProcessingRequest } from '../ts/pipeline/types.js';
import { TestRedis, clusterScene, skipWithoutRedis } from './cluster-redis.js';
import { LITE, ROOT, tempDir } from './helpers.js';

const BIN = path.join(ROOT, 'bin/phoenix-local.js');
const skip = skipWithoutRedis('test/cluster-cli.test.ts');

describe('phoenix-local worker: usage', () => {
  it.each([
    [[], /--redis <url>/],
    [['--redis', 'http://127.0.0.1:1'], /redis:\/\//],
    [['--redis', 'redis://127.0.0.1:1', '--concurrency', '0'], /--concurrency must be an integer/],
    [['--redis', 'redis://127.0.0.1:1', '--queue', 'a:b'], /--queue must be/],
    [['--redis', 'redis://127.0.0.1:1', '--preload', 'lite,'], /--preload must be model names/],
    [['--redis', 'redis://127.0.0.1:1', '--preload', '../x'], /--preload: model name "\.\.\/x" is not a folder name inside the models dir/],
    // Refused at start (the core's check), not on every job it would take.
    [['--redis', 'redis://127.0.0.1:1', '--models-dir', path.dirname(LITE), '--kv-cache', 'f8'], /--kv-cache must be "f32" or "f16", got "f8"/],
  ])('refuses %j with exit 2', (args, message) => {
    const run = spawnSync(process.execPath, [BIN, 'worker', ...args], { encoding: 'utf8', timeout: 20_000 });
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(/^phoenix-local: E_INVALID_OPTION: /);
    expect(run.stderr).toMatch(message);
  });
});

describe('phoenix-local worker --preload', () => {
  it('loads the named models before connecting: a model that is not there is its typed error', () => {
    const run = spawnSync(process.execPath, [BIN, 'worker', '--redis', 'redis://127.0.0.1:1', '--models-dir', path.dirname(LITE), '--preload', 'no-such-model'], { encoding: 'utf8', timeout: 20_000 });
    expect(run.status).not.toBe(0);
    expect(run.stderr).toMatch(/^phoenix-local: E_MODEL_NOT_FOUND: .*no-such-model/);
  });
});

describe('phoenix-local worker without its models dir', () => {
  it('refuses to start (it would take jobs workers with models can serve), before contacting Redis', () => {
    const missing = path.join(path.dirname(LITE), 'no-such-models-dir');
    const run = spawnSync(process.execPath, [BIN, 'worker', '--redis', 'redis://127.0.0.1:1', '--models-dir', missing], { encoding: 'utf8', timeout: 20_000 });
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(new RegExp(`^phoenix-local: E_MODEL_NOT_FOUND: models dir ${missing.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} \\(--models-dir\\) does not exist`));
    expect(run.stderr).not.toMatch(/waiting for Redis/);
  });
});

describe('phoenix-local worker with Redis unreachable', () => {
  it('says it is waiting for Redis instead of sitting silent', () => {
    const run = spawnSync(process.execPath, [BIN, 'worker', '--redis', 'redis://127.0.0.1:1', '--models-dir', path.dirname(LITE)], { encoding: 'utf8', timeout: 6_000 });
    expect(run.stderr).toMatch(/^phoenix-local worker: waiting for Redis at redis:\/\/127\.0\.0\.1:1 /m);
  });
});

describe.skipIf(skip)('phoenix-local worker on a private Redis', () => {
  let redis: TestRedis;
  let scratch: Awaited<ReturnType<typeof tempDir>>;
  let modelsDir: string;
  let child: ChildProcess;
  let stderr = '';
  let queue: Queue;
  let events: QueueEvents;

  beforeAll(async () => {
    ({ redis, scratch, modelsDir } = await clusterScene({ lite: LITE }));
    const connection = { host: '127.0.0.1', port: redis.port, maxRetriesPerRequest: null };
    queue = new Queue('cli', { connection, prefix: PREFIX });
    events = new QueueEvents('cli', { connection, prefix: PREFIX });
    await events.waitUntilReady();
    child = spawn(process.execPath, [BIN, 'worker', '--redis', redis.url, '--queue', 'cli', '--models-dir', modelsDir, '--preload', 'lite'], { stdio: ['ignore', 'ignore', 'pipe'] });
    await new Promise<void>((resolve, reject) => {
      child.stderr!.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (stderr.includes('serving queue')) resolve();
      });
      child.once('exit', (code) => reject(new Error(`worker exited with ${code}: ${stderr}`)));
    });
  }, 30_000);

  afterAll(async () => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
    await events?.close();
    await queue?.close();
    await redis?.dispose();
    await scratch?.cleanup();
  });

  it('serves a job with the in-process text, then on SIGTERM finishes the active job and exits 0', async () => {
    const local = new LocalAIPipeline({ modelsDir });
    const first: ProcessingRequest = { id: 'c1', input: 'Once upon a time, there was a little', taskType: 'generation', options: { maxTokens: 12, temperature: 0 } };
    const second: ProcessingRequest = { id: 'c2', input: 'One day', taskType: 'generation', options: { maxTokens: 200, temperature: 0 } };
    const [expected1, expected2] = [await local.process(first), await local.process(second)];
    local.dispose();
    const job1 = await queue.add('process', encodeJob(first), { jobId: 'c1' });
    expect(decodeResult(await job1.waitUntilFinished(events, 30_000)).text).toBe(expected1.text);
    expect(stderr).toMatch(/holding lite/);

    const job2 = await queue.add('process', encodeJob(second), { jobId: 'c2' });
    const finished = job2.waitUntilFinished(events, 30_000);
    while ((await queue.getJobState('c2')) !== 'active') await new Promise((r) => setTimeout(r, 2));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    expect(decodeResult(await finished).text).toBe(expected2.text);
    expect(await exited).toBe(0);
    expect(stderr).toMatch(/finishing active jobs/);
  }, 60_000);

  it('-q silences its progress lines (serving, stopping), as every command\'s', async () => {
    const quiet = spawn(process.execPath, [BIN, 'worker', '--redis', redis.url, '--queue', 'cli-quiet', '--models-dir', modelsDir, '-q'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let said = '';
    quiet.stderr!.on('data', (d: Buffer) => (said += d.toString()));
    const exited = new Promise<number | null>((resolve) => quiet.once('exit', (code) => resolve(code)));
    // It serves (a job comes back), and says nothing.
    const quietQueue = new Queue('cli-quiet', { connection: { host: '127.0.0.1', port: redis.port, maxRetriesPerRequest: null }, prefix: PREFIX });
    const quietEvents = new QueueEvents('cli-quiet', { connection: { host: '127.0.0.1', port: redis.port, maxRetriesPerRequest: null }, prefix: PREFIX });
    try {
      await quietEvents.waitUntilReady();
      const served = await quietQueue.add('process', encodeJob({ id: 'quiet-2', input: 'One day', taskType: 'generation', options: { maxTokens: 2, temperature: 0 } }), { jobId: 'quiet-2' });
      expect(decodeResult(await served.waitUntilFinished(quietEvents, 30_000)).success).toBe(true);
      quiet.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(said).toBe('');
    } finally {
      if (quiet.exitCode === null) quiet.kill('SIGKILL');
      await quietEvents.close();
      await quietQueue.close();
    }
  }, 60_000);
});
