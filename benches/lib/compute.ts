/**
 * The arithmetic limit prefill runs against. Prefill multiplies every weight matrix by a block of prompt
 * tokens, so its ceiling is the machine's multiply-add throughput, not its read bandwidth: measured in the
 * same run by benches/native/fma-peak.c (independent f32 FMA chains in the widest vectors this CPU has, at
 * each row's thread count), compiled here for this CPU. Each prefill row then reports the GFLOP/s its
 * matrix products achieved (benches/lib/matmul-flops.ts: a lower bound of its work) and their share of
 * that limit, and each prefill aim ("3x llama.cpp") the share of the limit it would take.
 */
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';

import { compileNativeTool } from './native-tool.js';
import { round } from './stats.js';

/** One measurement of the probe (1 FMA = 2 FLOPs, GFLOP = 1e9). */
export interface ComputeSample {
  threads: number;
  /** Width of the vectors the probe's FMAs use (512: AVX-512, 256: AVX2/FMA, 128: SSE/NEON). */
  vector_bits: number;
  repetitions: number;
  /** Over wall time: the limit (best, as STREAM does for bandwidth). */
  best_gflops: number;
  median_gflops: number;
  /**
   * Over the probe threads' own CPU time: what the cores do while ours run. Well above best_gflops means
   * other processes shared the cores during the probe (a busy machine), and the limit is understated.
   */
  cpu_time_gflops: number;
}

export interface Compute {
  by_threads: Record<string, ComputeSample>;
  method: string;
  /** Why a thread count has no measurement (no C compiler, probe failed, ...). */
  errors: Record<string, string>;
}

const PROBE_REPETITIONS = 5;
/** Long enough for the cores' wide-vector clock to settle and timer noise to vanish; 5 x 6 runs ~1.2 s per thread count. */
const PROBE_MS = 200;
const COMPILE_FLAGS = ['-O3', '-march=native', '-ffp-contract=fast', '-pthread'];

/** Parses and checks the probe's one JSON line. */
export function parseComputeLine(line: string): ComputeSample {
  let value: unknown;
  try {
    value = JSON.parse(line.trim());
  } catch {
    throw new Error(`fma-peak printed no JSON: ${JSON.stringify(line.slice(0, 200))}`);
  }
  const v = value as Record<string, unknown>;
  for (const key of ['threads', 'vector_bits', 'repetitions', 'best_gflops', 'median_gflops', 'best_cpu_time_gflops']) {
    if (typeof v[key] !== 'number' || !Number.isFinite(v[key]) || (v[key] as number) <= 0) throw new Error(`fma-peak: field ${key} missing or not a positive number`);
  }
  if (v.checksum_ok !== true) throw new Error('fma-peak: checksum mismatch (the multiply-add chains did not compute what they should)');
  return {
    threads: v.threads as number,
    vector_bits: v.vector_bits as number,
    repetitions: v.repetitions as number,
    best_gflops: v.best_gflops as number,
    median_gflops: v.median_gflops as number,
    cpu_time_gflops: v.best_cpu_time_gflops as number,
  };
}

/** GFLOP/s of matrix products a prefill row achieved: FLOPs per prompt token x prompt tokens per second. */
export function prefillGflops(flopsPerToken: number | null | undefined, prefillTps: number): number | null {
  if (!flopsPerToken || !(flopsPerToken > 0) || !(prefillTps > 0)) return null;
  return (flopsPerToken * prefillTps) / 1e9;
}

/** Achieved GFLOP/s over the machine's FMA peak at the same thread count (null when either is unknown). */
export function computeShare(gflops: number | null, peak: ComputeSample | undefined): number | null {
  if (gflops === null || !peak) return null;
  return gflops / peak.best_gflops;
}

/** What a prefill aim asks of the machine. */
export interface PrefillAim {
  threads: number;
  /** Aimed multiple of the faster llama.cpp build's prefill. */
  target: number;
  llama_cpp_tps: number;
  /** target x llama_cpp_tps. */
  needed_tps: number;
  /** needed_tps x FLOPs per token (matrix products only). */
  needed_gflops: number;
  /** needed_gflops over the measured FMA peak at these threads (> 1: beyond the machine). */
  needed_share: number | null;
  /** phoenix-local's prefill now and its share of the peak. */
  phoenix_tps: number | null;
  phoenix_share: number | null;
}

/**
 * The prefill tok/s an aim of `target` x llama.cpp's (faster build's) prefill would need, and what share of
 * the measured FMA peak its matrix products alone would take; null without a llama.cpp row or a FLOP count.
 */
export function prefillAim(
  target: number,
  llamaTps: number | undefined,
  phoenixTps: number | undefined,
  flopsPerToken: number | null | undefined,
  peak: ComputeSample | undefined,
  threads: number,
): PrefillAim | null {
  if (!llamaTps || !(llamaTps > 0)) return null;
  const neededTps = target * llamaTps;
  const neededGflops = prefillGflops(flopsPerToken, neededTps);
  if (neededGflops === null) return null;
  const phoenixGflops = phoenixTps === undefined ? null : prefillGflops(flopsPerToken, phoenixTps);
  const share = (gflops: number | null) => {
    const s = computeShare(gflops, peak);
    return s === null ? null : round(s, 3);
  };
  return {
    threads,
    target,
    llama_cpp_tps: llamaTps,
    needed_tps: round(neededTps, 1),
    needed_gflops: round(neededGflops, 2),
    needed_share: share(neededGflops),
    phoenix_tps: phoenixTps ?? null,
    phoenix_share: share(phoenixGflops),
  };
}

export function formatPrefillAim(model: string, aim: PrefillAim | null): string {
  const head = `prefill aim ${model}`;
  if (!aim) return `${head}: n/a (needs a llama.cpp row and the model's FLOP count)`;
  const pct = (share: number | null) => (share === null ? 'n/a' : `${(share * 100).toFixed(0)}%`);
  const beyond = aim.needed_share !== null && aim.needed_share > 1 ? ' — BEYOND the machine' : '';
  const now = aim.phoenix_tps === null ? '' : `; phoenix-local now ${aim.phoenix_tps.toFixed(1)} tok/s = ${pct(aim.phoenix_share)}`;
  return (
    `${head} @ ${aim.threads} thread(s): ${aim.target.toFixed(1)}x llama.cpp (${aim.llama_cpp_tps.toFixed(1)} tok/s) needs ` +
    `${aim.needed_tps.toFixed(0)} tok/s = ${aim.needed_gflops.toFixed(1)} GFLOP/s of matrix products = ${pct(aim.needed_share)} of the measured FMA peak${beyond}${now}`
  );
}


export interface ComputeProbeOptions {
  /** Where the probe is compiled to (default benches/.work/bin, next to read-bandwidth). */
  binDir?: string;
  /** Milliseconds per repetition and repetitions (defaults: the bench's). */
  ms?: number;
  repetitions?: number;
}

export function measureCompute(repoRoot: string, threads: readonly number[], options: ComputeProbeOptions = {}): Compute {
  const { binDir = path.join(repoRoot, 'benches', '.work', 'bin'), ms = PROBE_MS, repetitions = PROBE_REPETITIONS } = options;
  const result: Compute = {
    by_threads: {},
    method: `f32 FMA chains: independent vector multiply-adds in registers on each thread, ${ms} ms per repetition, best of ${repetitions} (benches/native/fma-peak.c, cc ${COMPILE_FLAGS.join(' ')})`,
    errors: {},
  };
  let exe: string;
  try {
    exe = compileNativeTool(repoRoot, 'fma-peak', COMPILE_FLAGS, binDir);
  } catch (error) {
    for (const t of threads) result.errors[String(t)] = (error as Error).message;
    return result;
  }
  for (const t of [...new Set(threads)]) {
    const res = spawnSync(exe, [String(t), String(ms), String(repetitions)], { encoding: 'utf8', timeout: 120_000 });
    try {
      if (res.status !== 0) throw new Error(`fma-peak exited with ${res.status ?? res.signal}: ${(res.stderr ?? '').trim()}`);
      result.by_threads[String(t)] = parseComputeLine(res.stdout);
    } catch (error) {
      result.errors[String(t)] = (error as Error).message;
    }
  }
  return result;
}

/** The better of two probes per thread count (measured before and after the engines, like the bandwidth). */
export function mergeCompute(first: Compute, second: Compute): Compute {
  const by_threads: Record<string, ComputeSample> = { ...first.by_threads };
  for (const [t, sample] of Object.entries(second.by_threads)) {
    const prior = by_threads[t];
    if (!prior || sample.best_gflops > prior.best_gflops) by_threads[t] = sample;
  }
  const errors: Record<string, string> = {};
  for (const [t, error] of Object.entries({ ...second.errors, ...first.errors })) if (!by_threads[t]) errors[t] = error;
  return { by_threads, method: `${first.method}; measured before and after the engines, the better of the two`, errors };
}

/** Wall-time rate below this share of the CPU-time rate: the cores were shared during the probe. */
const BUSY_PROBE_RATIO = 0.85;

/**
 * Whether other work shared the cores during this probe. Only meaningful with no more threads than cores:
 * beyond that the probe's own threads take turns, and their CPU-time rates add up past the machine.
 */
function coresShared(s: ComputeSample, cores: number): boolean {
  return s.threads <= cores && s.best_gflops < BUSY_PROBE_RATIO * s.cpu_time_gflops;
}

/** Thread counts whose probe ran on shared cores (its limit understates the machine). */
export function busyComputeProbes(c: Compute, cores = os.availableParallelism()): number[] {
  return Object.values(c.by_threads)
    .filter((s) => coresShared(s, cores))
    .map((s) => s.threads);
}

export function formatCompute(c: Compute, cores = os.availableParallelism()): string {
  const parts = Object.values(c.by_threads).map((s) => {
    const busy = coresShared(s, cores) ? ` (cores shared: ${s.cpu_time_gflops.toFixed(0)} per CPU-second of the probe)` : '';
    return `${s.threads} thread(s) ${s.best_gflops.toFixed(1)} GFLOP/s${busy}`;
  });
  const errors = Object.entries(c.errors).map(([t, e]) => `${t} thread(s) n/a (${e})`);
  const bits = Object.values(c.by_threads)[0]?.vector_bits;
  return `machine f32 FMA peak (${c.method}${bits ? `; ${bits}-bit vectors` : ''}): ${[...parts, ...errors].join(', ')}`;
}
