/**
 * One engine in one process: `node --import tsx benches/worker.ts '<WorkerJob JSON>'`.
 * Running each engine in its own process keeps peak RSS per engine and stops one engine's thread
 * pools or caches from affecting the other. The result goes to `job.resultOut` as JSON (stdout is
 * left to the engines' own logging).
 */
import { readFileSync, writeFileSync } from 'node:fs';

import { LlamaCppEngine } from './engines/llamacpp.js';
import { LlamaCppNativeEngine } from './engines/llamacpp-native.js';
import { PhoenixEngine } from './engines/phoenix.js';
import type { BenchEngine, WorkerJob, WorkerResult } from './engines/types.js';

/** Resident-set figures of this process from /proc (Linux), MiB; falls back to Node's maxRSS. */
function rssMb(field: 'VmHWM' | 'VmRSS'): number {
  try {
    const status = readFileSync('/proc/self/status', 'utf8');
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
    if (match) return Number(match[1]) / 1024;
  } catch {
    // not Linux
  }
  return field === 'VmHWM' ? process.resourceUsage().maxRSS / 1024 : process.memoryUsage().rss / 2 ** 20;
}

function makeEngine(job: WorkerJob): BenchEngine {
  if (job.engine === 'phoenix-local') return new PhoenixEngine(job.hfDir, job.threads, 'native');
  if (job.engine === 'phoenix-local-wasm') return new PhoenixEngine(job.hfDir, job.threads, 'wasm');
  const contextTokens = job.promptIds.length + job.decodeSteps + 8;
  if (job.llamaBuild === 'native') {
    if (!job.llamaDriver) throw new Error('llama.cpp native build: no driver given');
    return new LlamaCppNativeEngine(job.llamaDriver, job.ggufPath, job.threads, contextTokens);
  }
  return new LlamaCppEngine(job.ggufPath, job.threads, contextTokens);
}

async function main(): Promise<void> {
  const job = JSON.parse(process.argv[2] ?? '') as WorkerJob;
  const engine = makeEngine(job);
  const load = await engine.load();
  const rssAfterLoadMb = engine.engineRssMb?.('VmRSS') ?? rssMb('VmRSS');
  const result: WorkerResult = {
    engine: engine.name,
    backend: engine.backend,
    threads: job.threads,
    describe: {},
    load,
    prefillMs: [],
    prefillInternal: [],
    generations: [],
    firstTokens: [],
    peakRssMb: 0,
    rssAfterLoadMb,
  };

  if (job.mode === 'logits') {
    const logits = await engine.logits(job.promptIds);
    writeFileSync(job.logitsOut!, Buffer.from(logits.buffer, logits.byteOffset, logits.byteLength));
    result.logitsShape = [job.promptIds.length, logits.length / job.promptIds.length];
  } else if (job.mode === 'context') {
    await engine.generate(job.promptIds.slice(0, 16), 4);
    const { tokens, ...timing } = await engine.generate(job.promptIds, job.decodeSteps);
    result.generations.push(timing);
    result.firstTokens = tokens;
  } else {
    // Warm-up with the measured prompt, as llama-bench does: first touch of the weights, thread-pool
    // start, and each engine's buffers grown to the prompt's size (a 16-token warm-up left a 512-token
    // prefill's first run paying for fresh pages: ~35 % slower than the next on a VM whose host
    // reclaims freed guest memory).
    await engine.generate(job.promptIds, 4);
    for (let i = 0; i < job.iterations; i++) {
      const p = await engine.prefill(job.promptIds);
      result.prefillMs.push(p.ms);
      result.prefillInternal.push(p.internal ?? {});
    }
    if (job.int8Prompt) {
      result.prefillInt8Ms = [];
      for (let i = 0; i < job.iterations; i++) result.prefillInt8Ms.push((await engine.prefill(job.promptIds, { int8Prompt: true })).ms);
    }
    for (let i = 0; i < job.iterations; i++) {
      const { tokens, ...timing } = await engine.generate(job.promptIds, job.decodeSteps);
      result.generations.push(timing);
      if (i === 0) result.firstTokens = tokens;
    }
    // Peak memory of the default load, before a second load for the f16 cache.
    result.peakRssMb = engine.engineRssMb?.('VmHWM') ?? rssMb('VmHWM');
    if (job.kvCacheF16 && engine.reloadWithF16Cache) {
      await engine.reloadWithF16Cache();
      await engine.generate(job.promptIds, 4);
      result.generationsKvF16 = [];
      for (let i = 0; i < job.iterations; i++) {
        const { tokens: _tokens, ...timing } = await engine.generate(job.promptIds, job.decodeSteps);
        result.generationsKvF16.push(timing);
      }
    }
  }

  result.describe = engine.describe();
  result.weightBytes = engine.weightBytes();
  if (!result.peakRssMb) result.peakRssMb = engine.engineRssMb?.('VmHWM') ?? rssMb('VmHWM');
  await engine.dispose();
  writeFileSync(job.resultOut, JSON.stringify(result));
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
    process.exit(1);
  },
);
