/**
 * `npm run bench:cluster`: the same requests through the in-process pipeline and through a queue
 * (BullMQ on a private redis-server) with 1, 2, … worker processes (up to the machine's cores), each
 * worker holding the models (preloaded, warmed up). All requests are submitted at once; reported: wall
 * time, throughput (requests/s) and the latency each caller saw (submit → result) p50 / p95.
 * Needs `redis-server` on PATH (Debian: apt-get install redis-server) and `npm run build` done.
 * Options: --requests N (default 64), --max-tokens N (default 32), --workers 1,2 (default 1..cores).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { LocalAIPipeline, type ProcessingRequest, type ProcessingResult } from '../ts/index.js';
import { TestRedis } from '../test/cluster-redis.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const MODELS = { lite: path.join(ROOT, 'models/phoenix-ssm-lite'), tiny: path.join(ROOT, 'test/fixtures/mamba1-tiny') };

function option(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

const N = Number(option('requests', '64'));
const MAX_TOKENS = Number(option('max-tokens', '32'));
const WORKERS = option('workers', Array.from({ length: Math.max(1, os.availableParallelism()) }, (_, i) => i + 1).join(','))
  .split(',')
  .map(Number);

const requests = (tag: string): ProcessingRequest[] =>
  Array.from({ length: N }, (_, i) => ({
    id: `${tag}-${i}`,
    input: ['Once upon a time', 'One day, Lily', 'The cat sat'][i % 3]!,
    taskType: 'generation',
    modelPreference: i % 2 === 0 ? 'lite' : 'tiny',
    options: i % 4 < 2 ? { maxTokens: MAX_TOKENS, temperature: 0 } : { maxTokens: MAX_TOKENS, temperature: 0.8, seed: i },
  }));

interface Row {
  setup: string;
  wallMs: number;
  throughput: number;
  p50: number;
  p95: number;
  tokensPerSecond: number;
}

function percentile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

/** Submits every request at once; times each from submission to its result. */
async function measure(setup: string, pipeline: LocalAIPipeline, tag: string): Promise<Row> {
  const started = performance.now();
  const latencies: number[] = [];
  const results: ProcessingResult[] = await Promise.all(
    requests(tag).map(async (r) => {
      const t0 = performance.now();
      const result = await pipeline.process(r);
      latencies.push(performance.now() - t0);
      return result;
    }),
  );
  const wallMs = performance.now() - started;
  const failed = results.filter((r) => !r.success);
  if (failed.length > 0) throw new Error(`${setup}: ${failed.length} requests failed, e.g. ${failed[0]!.errorCode} ${failed[0]!.errorMessage}`);
  latencies.sort((a, b) => a - b);
  const tokens = results.reduce((a, r) => a + r.generatedTokens, 0);
  return { setup, wallMs, throughput: (N * 1000) / wallMs, p50: percentile(latencies, 0.5), p95: percentile(latencies, 0.95), tokensPerSecond: (tokens * 1000) / wallMs };
}

function startWorkerProcess(redisUrl: string, queue: string, modelsDir: string): Promise<ChildProcess> {
  const script = `import { startWorker } from ${JSON.stringify(path.join(ROOT, 'dist/index.js'))};
const worker = await startWorker({ redis: process.argv[1], queue: process.argv[2], modelsDir: process.argv[3], preload: ['lite', 'tiny'] });
process.stdout.write('ready\\n');
process.once('SIGTERM', () => void worker.close().then(() => process.exit(0)));`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script, redisUrl, queue, modelsDir], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve(child));
    child.once('exit', (code) => reject(new Error(`worker exited with ${code}`)));
  });
}

async function stopWorker(child: ChildProcess): Promise<void> {
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  await exited;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'phoenix-bench-cluster-'));
  const modelsDir = path.join(dir, 'models');
  for (const [name, folder] of Object.entries(MODELS)) cpSync(folder, path.join(modelsDir, name), { recursive: true }); // links out of the models dir are refused
  const redis = await TestRedis.create();
  const rows: Row[] = [];
  try {
    const local = new LocalAIPipeline({ modelsDir, maxQueueSize: N });
    await measure('warm-up', local, 'warm-local');
    rows.push(await measure('in-process (1 pipeline)', local, 'local'));
    local.dispose();
    for (const count of WORKERS) {
      const queue = `bench${count}`;
      const workers = await Promise.all(Array.from({ length: count }, () => startWorkerProcess(redis.url, queue, modelsDir)));
      const client = new LocalAIPipeline({ modelsDir: path.join(dir, 'none'), queue: { redis: redis.url, name: queue } });
      await measure('warm-up', client, `warm-${count}`);
      rows.push(await measure(`queue, ${count} worker${count > 1 ? 's' : ''}`, client, `q${count}`));
      client.dispose();
      await Promise.all(workers.map(stopWorker));
    }
  } finally {
    await redis.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
  console.log(`${N} requests (lite + tiny, greedy and seeded, ${MAX_TOKENS} tokens), all submitted at once; ${os.availableParallelism()} cores (${os.cpus()[0]?.model ?? '?'})\n`);
  console.log('| setup | wall s | requests/s | tokens/s | latency p50 ms | latency p95 ms |');
  console.log('|---|---:|---:|---:|---:|---:|');
  for (const r of rows) console.log(`| ${r.setup} | ${(r.wallMs / 1000).toFixed(2)} | ${r.throughput.toFixed(1)} | ${r.tokensPerSecond.toFixed(0)} | ${r.p50.toFixed(0)} | ${r.p95.toFixed(0)} |`);
}

await main();
