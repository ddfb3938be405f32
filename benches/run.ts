/**
 * `npm run bench`: phoenix-local (native addon) against llama.cpp (node-llama-cpp, CPU) on the same
 * Mamba-130M-shaped f32 model with the same token ids, same threads, one engine at a time, each in
 * its own process; plus phoenix-local on its WASM binding (single-threaded: one 1-thread row,
 * compared with native at 1 thread). Prints a table and writes bench-results.json at the repo root.
 * Options: `npm run bench -- --help`.
 */
import { existsSync, renameSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { defaultWasmPath } from '../ts/index.js';

import { WASM_THREADS, type EngineId, type WorkerResult } from './engines/types.js';
import { parseArgs, USAGE, type BenchOptions } from './lib/args.js';
import { ensureBenchModel, MODEL_NAME, type BenchModel } from './lib/bench-model.js';
import { machineInfo } from './lib/machine.js';
import { promptIds } from './lib/prompt.js';
import { formatRatios, formatTable, formatVerification, formatWasmRatios, ratios, summarise, TARGETS, wasmRatios, type ResultRow } from './lib/report.js';
import { runWorker } from './lib/spawn-worker.js';
import { verifyLogits, type Verification } from './lib/verify.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const WORKER_TIMEOUT_MS = 20 * 60_000;

/** How many leading greedy tokens two engines agree on (decode-path cross-check). */
function greedyAgreement(a: readonly number[], b: readonly number[]): { identicalPrefix: number; compared: number } {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return { identicalPrefix: i, compared: n };
}

/**
 * More threads running slower than one thread means the cores were shared with other work: spinning
 * thread pools (llama.cpp's in particular) collapse when oversubscribed, which distorts the ratios.
 */
function oversubscriptionWarnings(rows: readonly ResultRow[]): string[] {
  const warnings: string[] = [];
  for (const row of rows) {
    const single = rows.find((r) => r.engine === row.engine && r.backend === row.backend && r.threads === 1);
    if (!single || row.threads <= 1) continue;
    if (row.decode_tps < single.decode_tps || row.prefill_tps < single.prefill_tps) {
      warnings.push(`${row.engine} is slower at ${row.threads} threads than at 1: the cores were busy (oversubscribed); these numbers are not representative`);
    }
  }
  return warnings;
}

const WASM: EngineId = 'phoenix-local-wasm';

/** Thread count a worker of `engine` runs with in the `threads` pass (WASM: always 1). */
const workerThreads = (engine: EngineId, threads: number) => (engine === WASM ? WASM_THREADS : threads);

async function benchmark(opts: BenchOptions, model: BenchModel, ids: number[]) {
  const results = new Map<string, WorkerResult[]>();
  const errors: Record<string, string> = {};
  const failed = new Set<EngineId>();
  // WASM runs in one pass only: the 1-thread pass if there is one, else the last.
  const wasmPass = opts.threads.includes(WASM_THREADS) ? WASM_THREADS : opts.threads[opts.threads.length - 1]!;
  for (const passThreads of opts.threads) {
    for (let run = 0; run < opts.runs; run++) {
      // Alternate the order so slow drifts in machine load hit both engines alike.
      const engines = opts.engines.filter((e) => e !== WASM || passThreads === wasmPass);
      const order = run % 2 === 0 ? engines : [...engines].reverse();
      for (const engine of order) {
        if (failed.has(engine)) continue;
        const threads = workerThreads(engine, passThreads);
        process.stdout.write(`[bench] ${engine} threads=${threads} run ${run + 1}/${opts.runs} ... `);
        try {
          const r = await runWorker(
            REPO_ROOT,
            { engine, threads, hfDir: model.hfDir, ggufPath: model.ggufPath, mode: 'bench', promptIds: ids, decodeSteps: opts.decodeTokens, iterations: opts.iterations },
            WORKER_TIMEOUT_MS,
          );
          const key = `${engine}@${threads}`;
          results.set(key, [...(results.get(key) ?? []), r]);
          const pre = r.prefillMs.map((ms) => ((ids.length / ms) * 1000).toFixed(1)).join('/');
          const dec = r.generations.map((g) => ((g.decodeSteps / g.decodeMs) * 1000).toFixed(1)).join('/');
          console.log(`load ${r.load.loadMs.toFixed(0)} ms, prefill ${pre} tok/s, decode ${dec} tok/s, peak RSS ${r.peakRssMb.toFixed(0)} MB`);
        } catch (error) {
          console.log('FAILED');
          errors[engine] = (error as Error).message;
          failed.add(engine);
          console.error(`[bench] ${(error as Error).message}`);
        }
      }
    }
  }
  return { results, errors };
}

async function main(): Promise<number> {
  const parsed = parseArgs(process.argv.slice(2));
  if (parsed === 'help') {
    console.log(USAGE);
    return 0;
  }
  const opts = parsed;
  const machine = machineInfo(REPO_ROOT);
  const model = ensureBenchModel(REPO_ROOT);
  const ids = promptIds(opts.promptTokens);
  const headline = opts.threads[0]!;
  const skipped: Record<string, string> = {};
  if (opts.engines.includes(WASM)) {
    const wasmPath = process.env.PHOENIX_WASM_PATH || defaultWasmPath();
    if (!existsSync(wasmPath)) {
      skipped[WASM] = `WASM build not found at ${wasmPath} (run \`npm run build:wasm\`)`;
      console.log(`[bench] note: skipping phoenix-local WASM rows: ${skipped[WASM]}`);
      opts.engines = opts.engines.filter((e) => e !== WASM);
    }
  }
  if (!opts.engines.length) {
    console.log('[bench] nothing to run');
    return 0;
  }
  console.log(
    `[bench] model ${MODEL_NAME} (${(model.manifest.param_count / 1e6).toFixed(1)}M params, ${model.manifest.dtype}, random weights, ` +
      `${model.generated ? 'generated now' : 'reused'}); prompt ${ids.length} tokens, decode ${opts.decodeTokens}, ` +
      `threads ${opts.threads.join(',')}, ${opts.runs} run(s) x ${opts.iterations} iteration(s); ${machine.cpu}, ${machine.logicalCores} cores`,
  );

  let verification: Verification | undefined;
  if (opts.verify) {
    console.log(`[bench] checking logits of ${opts.engines.join(', ')} against each other and the float64 reference ...`);
    verification = await verifyLogits(REPO_ROOT, model, opts.engines, headline);
  }

  const { results, errors } = await benchmark(opts, model, ids);
  const rows: ResultRow[] = [];
  for (const threads of opts.threads) {
    for (const engine of opts.engines) {
      if (engine === WASM) continue;
      const r = results.get(`${engine}@${threads}`);
      if (r?.length) rows.push(summarise(r, MODEL_NAME, model.manifest.dtype, ids.length, opts.decodeTokens));
    }
  }
  const wasmResults = results.get(`${WASM}@${WASM_THREADS}`);
  if (wasmResults?.length) rows.push(summarise(wasmResults, MODEL_NAME, model.manifest.dtype, ids.length, opts.decodeTokens));
  const byThreads = Object.fromEntries(opts.threads.map((t) => [String(t), ratios(rows, t)]));
  const wasm = opts.engines.includes(WASM) ? wasmRatios(rows) : undefined;
  const headlineRatios = byThreads[String(headline)]!;

  const phoenixTokens = results.get(`phoenix-local@${headline}`)?.[0]?.firstTokens;
  const llamaTokens = results.get(`llama.cpp@${headline}`)?.[0]?.firstTokens;
  const greedy = phoenixTokens && llamaTokens ? greedyAgreement(phoenixTokens, llamaTokens) : undefined;

  machine.loadAvgEnd = os.loadavg()[0]!;
  const noisy = rows.filter((r) => r.detail.prefill_spread > 0.15 || r.detail.decode_spread > 0.15);
  const busy = machine.loadAvgStart > 0.5 * machine.logicalCores;
  const oversubscribed = oversubscriptionWarnings(rows);
  const caveats = [
    ...(busy ? [`machine busy at start (load average ${machine.loadAvgStart.toFixed(2)} on ${machine.logicalCores} cores)`] : []),
    ...(noisy.length ? [`sample spread > 15% in ${noisy.length} row(s)`] : []),
    ...oversubscribed,
  ];
  const output = {
    rows,
    // reliable=false: the ratios were measured on a busy machine and must not be quoted.
    ratios: { ...headlineRatios, by_threads: byThreads, ...(wasm ? { wasm_vs_native: wasm } : {}), reliable: caveats.length === 0, caveats },
    machine,
    verification: verification && {
      ...verification,
      greedy_tokens: greedy && {
        ...greedy,
        threads: headline,
        phoenix_first: phoenixTokens!.slice(0, 16),
        llama_cpp_first: llamaTokens!.slice(0, 16),
      },
    },
    config: {
      model: MODEL_NAME,
      model_spec: model.manifest.spec,
      seed: model.manifest.seed,
      prompt_tokens: ids.length,
      decode_tokens: opts.decodeTokens,
      threads: opts.threads,
      runs: opts.runs,
      iterations: opts.iterations,
      quick: opts.quick,
      targets: TARGETS,
      definitions: {
        load_ms: 'model load until tokens can be evaluated (llama.cpp: loadModel + createContext; phoenix: loadModel)',
        prefill_tps: 'prompt tokens / wall time to consume the prompt from an empty state and pick the next token by argmax',
        ttft_ms: 'wall time from starting a greedy generation on the prompt to receiving its first token',
        decode_tps: 'greedy tokens after the first / their wall time, one token per step',
        peak_rss_mb: 'VmHWM of the engine\'s own worker process (includes Node itself)',
      },
    },
    errors,
    ...(Object.keys(skipped).length ? { skipped } : {}),
  };
  const outPath = path.resolve(REPO_ROOT, opts.out);
  writeFileSync(`${outPath}.tmp`, JSON.stringify(output, null, 2) + '\n');
  renameSync(`${outPath}.tmp`, outPath);

  console.log('');
  console.log(formatTable(rows));
  if (rows.some((r) => r.backend === 'wasm')) console.log('(backend wasm = phoenix-local on its WASM binding: single-threaded, one row at 1 thread whatever --threads says)');
  console.log('');
  const unreliable = caveats.length ? '  [UNRELIABLE: busy machine]' : '';
  for (const t of opts.threads) console.log(formatRatios(byThreads[String(t)]!) + unreliable);
  if (wasm) console.log(formatWasmRatios(wasm) + unreliable);
  for (const [engine, why] of Object.entries(skipped)) console.log(`note: ${engine} skipped: ${why}`);
  if (verification) console.log(formatVerification(verification));
  if (greedy) console.log(`greedy continuation @ ${headline} threads: first ${greedy.identicalPrefix} of ${greedy.compared} tokens identical`);
  if (opts.profile) {
    for (const row of rows.filter((r) => r.detail.internal)) {
      const i = row.detail.internal!;
      const parts = Object.entries(i).map(([k, v]) => `${k} ${v}`).join(', ');
      console.log(`profile ${row.engine} @ ${row.threads} thread(s): ${parts}; wall prefill ${(ids.length / row.prefill_tps * 1000).toFixed(1)} ms`);
    }
    if (!rows.some((r) => r.detail.internal)) console.log('profile: no engine reported internal timings');
  }
  for (const caveat of caveats) console.log(`note: ${caveat}`);
  if (caveats.length) console.log('note: timings are not representative; rerun `npm run bench` on a quiet machine for numbers to quote');
  for (const [engine, error] of Object.entries(errors)) console.log(`error: ${engine} did not run: ${error.split('\n')[0]}`);
  console.log(`wrote ${path.relative(process.cwd(), outPath) || outPath}`);
  return Object.keys(errors).length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error instanceof Error ? error.message : String(error));
    process.exit(1);
  },
);
