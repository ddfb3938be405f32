/** Turns worker results into result rows, phoenix/llama.cpp and WASM/native ratios, and the printed table. */
import type { EngineName, WorkerResult } from '../engines/types.js';
import { bandwidthShare, fitsInCache, weightGbps, type BandwidthSample } from './bandwidth.js';
import { computeShare, prefillAim, prefillGflops, type ComputeSample, type PrefillAim } from './compute.js';
import { median, round, spread } from './stats.js';
import type { Verification } from './verify.js';

export interface ResultRow {
  engine: EngineName;
  backend: string;
  model: string;
  dtype: string;
  threads: number;
  prefill_tps: number;
  /** phoenix-local on quantized weights: prefill with `int8Prompt` (8-bit activations, llama.cpp's arithmetic). */
  prefill_int8_tps?: number;
  /** phoenix-local on quantized weights: decode with an f16 KV cache (`kvCache: 'f16'`, llama.cpp's cache type). */
  decode_kv_f16_tps?: number;
  decode_tps: number;
  ttft_ms: number;
  load_ms: number;
  peak_rss_mb: number;
  /** Weight bytes the engine holds (and a decoded token streams), as the engine reports them. */
  weight_bytes: number | null;
  /** weight_bytes x decode_tps, GB/s (1e9). */
  weight_gbps: number | null;
  /** weight_gbps over the machine's measured read bandwidth at the same thread count. */
  bandwidth_share: number | null;
  /** The weights fit in the last-level cache: decode may read them from cache, above the DRAM limit. */
  weights_fit_in_cache: boolean;
  /** Matrix-product FLOPs per prompt token (benches/lib/matmul-flops.ts) x prefill_tps, GFLOP/s (1e9). */
  prefill_gflops: number | null;
  /** prefill_gflops over the machine's measured f32 FMA peak at the same thread count (a lower bound of the work). */
  compute_share: number | null;
  detail: {
    prompt_tokens: number;
    decode_tokens: number;
    runs: number;
    prefill_samples: number;
    decode_samples: number;
    /** (max-min)/median of the samples: above ~0.1 the machine was probably busy. */
    prefill_spread: number;
    decode_spread: number;
    load_breakdown_ms: Record<string, number>;
    rss_after_load_mb: number;
    engine: Record<string, unknown>;
    /** Every sample behind the medians. */
    samples: { prefill_tps: number[]; decode_tps: number[]; ttft_ms: number[]; load_ms: number[]; peak_rss_mb: number[] };
    /** Engine-internal timings (medians), phoenix only. */
    internal?: Record<string, number>;
  };
}

export interface Target {
  target: number;
  value: number | null;
  pass: boolean | null;
}

export interface RatioSet {
  threads: number;
  /** Weight dtype of both rows compared. */
  dtype: string;
  prefill: number | null;
  decode: number | null;
  /** The llama.cpp build each ratio is taken against: the faster one for that metric. */
  llama_cpp: { prefill: string | null; decode: string | null };
  targets: { decode: Target; prefill: Target };
}

/**
 * decode/prefill: phoenix-local (native) over the faster llama.cpp build at the same threads and dtype
 * (f32 targets; bf16 aims at decode only).
 * wasm_decode_vs_native_1t: phoenix-local on WASM over phoenix-local native at 1 thread (WASM is
 * single-threaded).
 * bf16_decode_vs_f32: phoenix bf16 decode over phoenix f32 decode (half the bytes per token).
 * decode_bandwidth_share: a decode row's weight GB/s over the machine's read bandwidth.
 */
export const TARGETS = {
  decode: 1.0,
  prefill: 3.0,
  /** Per model kind of the newer families (issue 10): Mamba-2 as Mamba-1; hybrid prefill 2x; transformer 1x. */
  by_kind: {
    ssm: { prefill: 3.0, decode: 1.0 },
    hybrid: { prefill: 2.0, decode: 1.0 },
    transformer: { prefill: 1.0, decode: 1.0 },
  },
  wasm_decode_vs_native_1t: 0.5,
  bf16_decode_vs_f32: 1.6,
  decode_bandwidth_share: 0.85,
} as const;

/** phoenix-local WASM against phoenix-local native, both at one thread. */
export interface WasmRatioSet {
  /** Thread count of the native row compared against (always 1). */
  native_threads: number;
  prefill: number | null;
  decode: number | null;
  targets: { decode: Target };
}

function medianOfKey(samples: readonly Record<string, number>[], key: string): number | undefined {
  const values = samples.map((s) => s[key]).filter((v): v is number => typeof v === 'number');
  return values.length ? median(values) : undefined;
}

export function summarise(
  results: readonly WorkerResult[],
  model: string,
  dtype: string,
  promptTokens: number,
  decodeTokens: number,
  /** The machine's read bandwidth at this row's thread count, when measured. */
  limit?: BandwidthSample,
  /** Last-level cache size, when known. */
  cacheBytes: number | null = null,
  /** The model's matrix-product FLOPs per prompt token and the machine's FMA peak at this row's thread count. */
  compute: { flopsPerToken: number | null; peak?: ComputeSample } = { flopsPerToken: null },
): ResultRow {
  const first = results[0]!;
  const prefillTps = results.flatMap((r) => r.prefillMs.map((ms) => (promptTokens / ms) * 1000));
  const gens = results.flatMap((r) => r.generations);
  const decodeTps = gens.map((g) => (g.decodeSteps / g.decodeMs) * 1000);
  const internalSamples = [
    ...results.flatMap((r) => r.prefillInternal.map((p) => ({ prefill_core_prefill_ms: p.core_prefill_ms! }))),
    ...gens.map((g) => ({ gen_core_prefill_ms: g.internal?.core_prefill_ms!, gen_core_decode_ms: g.internal?.core_decode_ms! })),
  ];
  const internal: Record<string, number> = {};
  for (const key of ['prefill_core_prefill_ms', 'gen_core_prefill_ms', 'gen_core_decode_ms']) {
    const m = medianOfKey(internalSamples as Record<string, number>[], key);
    if (m !== undefined && Number.isFinite(m)) internal[key] = round(m, 2);
  }
  const loadBreakdown: Record<string, number> = {};
  for (const key of Object.keys(first.load.breakdown)) {
    loadBreakdown[key] = round(median(results.map((r) => r.load.breakdown[key] ?? Number.NaN)), 1);
  }
  const decode = median(decodeTps);
  const reportedBytes = results.map((r) => r.weightBytes).filter((b): b is number => typeof b === 'number' && b > 0);
  const weightBytes = reportedBytes.length ? median(reportedBytes) : undefined;
  const gbps = weightGbps(weightBytes, decode);
  const share = bandwidthShare(gbps, limit);
  const prefill = median(prefillTps);
  const int8Tps = results.flatMap((r) => (r.prefillInt8Ms ?? []).map((ms) => (promptTokens / ms) * 1000));
  const kvF16Tps = results.flatMap((r) => (r.generationsKvF16 ?? []).map((g) => (g.decodeSteps / g.decodeMs) * 1000));
  const gflops = prefillGflops(compute.flopsPerToken, prefill);
  const computed = computeShare(gflops, compute.peak);
  return {
    engine: first.engine,
    backend: first.backend,
    model,
    dtype,
    threads: first.threads,
    prefill_tps: round(prefill, 1),
    ...(int8Tps.length ? { prefill_int8_tps: round(median(int8Tps), 1) } : {}),
    ...(kvF16Tps.length ? { decode_kv_f16_tps: round(median(kvF16Tps), 2) } : {}),
    decode_tps: round(decode, 2),
    ttft_ms: round(median(gens.map((g) => g.ttftMs)), 1),
    load_ms: round(median(results.map((r) => r.load.loadMs)), 1),
    peak_rss_mb: round(median(results.map((r) => r.peakRssMb)), 1),
    weight_bytes: weightBytes ?? null,
    weight_gbps: gbps === null ? null : round(gbps, 2),
    bandwidth_share: share === null ? null : round(share, 3),
    weights_fit_in_cache: fitsInCache(weightBytes ?? null, cacheBytes),
    prefill_gflops: gflops === null ? null : round(gflops, 2),
    compute_share: computed === null ? null : round(computed, 3),
    detail: {
      prompt_tokens: promptTokens,
      decode_tokens: decodeTokens,
      runs: results.length,
      prefill_samples: prefillTps.length,
      decode_samples: decodeTps.length,
      prefill_spread: round(spread(prefillTps), 3),
      decode_spread: round(spread(decodeTps), 3),
      load_breakdown_ms: loadBreakdown,
      rss_after_load_mb: round(median(results.map((r) => r.rssAfterLoadMb)), 1),
      engine: first.describe,
      samples: {
        prefill_tps: prefillTps.map((v) => round(v, 1)),
        decode_tps: decodeTps.map((v) => round(v, 2)),
        ttft_ms: gens.map((g) => round(g.ttftMs, 1)),
        load_ms: results.map((r) => round(r.load.loadMs, 1)),
        peak_rss_mb: results.map((r) => round(r.peakRssMb, 1)),
      },
      ...(Object.keys(internal).length ? { internal } : {}),
    },
  };
}

function target(goal: number, value: number | null): Target {
  return { target: goal, value: value === null ? null : round(value, 3), pass: value === null ? null : value >= goal };
}

/** Rows of one model and dtype (model undefined: any model). */
function sameWeights(rows: readonly ResultRow[], dtype: string, model?: string): ResultRow[] {
  return rows.filter((r) => r.dtype === dtype && (model === undefined || r.model === model));
}

/** The row with the highest value of `key` (the faster build), or undefined. */
function fastest(rows: readonly ResultRow[], key: 'prefill_tps' | 'decode_tps'): ResultRow | undefined {
  return rows.reduce<ResultRow | undefined>((best, r) => (best === undefined || r[key] > best[key] ? r : best), undefined);
}

const phoenixNative = (rows: readonly ResultRow[], threads: number) =>
  rows.find((r) => r.engine === 'phoenix-local' && r.backend === 'native' && r.threads === threads);

/**
 * phoenix-local (native) over llama.cpp at `threads`, same dtype (and model when given). With two
 * llama.cpp builds (prebuilt and -march=native), each metric is taken against the faster of them.
 */
export function ratios(
  rows: readonly ResultRow[],
  threads: number,
  dtype = 'f32',
  model?: string,
  goals: { prefill: number; decode: number } = TARGETS,
): RatioSet {
  const candidates = sameWeights(rows, dtype, model);
  const phoenix = phoenixNative(candidates, threads);
  const llamas = candidates.filter((r) => r.engine === 'llama.cpp' && r.threads === threads);
  const llamaPrefill = fastest(llamas, 'prefill_tps');
  const llamaDecode = fastest(llamas, 'decode_tps');
  const prefill = phoenix && llamaPrefill ? phoenix.prefill_tps / llamaPrefill.prefill_tps : null;
  const decode = phoenix && llamaDecode ? phoenix.decode_tps / llamaDecode.decode_tps : null;
  return {
    threads,
    dtype,
    prefill: prefill === null ? null : round(prefill, 3),
    decode: decode === null ? null : round(decode, 3),
    llama_cpp: { prefill: llamaPrefill?.backend ?? null, decode: llamaDecode?.backend ?? null },
    targets: { decode: target(goals.decode, decode), prefill: target(goals.prefill, prefill) },
  };
}

/**
 * What a prefill aim of `target` x llama.cpp (the faster build) asks of the machine for one model and dtype
 * at `threads`: the tok/s it needs and that rate's share of the FMA peak (see compute.ts prefillAim).
 */
export function modelPrefillAim(
  rows: readonly ResultRow[],
  threads: number,
  dtype: string,
  model: string,
  target: number,
  flopsPerToken: number | null,
  peak: ComputeSample | undefined,
): PrefillAim | null {
  const candidates = sameWeights(rows, dtype, model);
  const llama = fastest(candidates.filter((r) => r.engine === 'llama.cpp' && r.threads === threads), 'prefill_tps');
  const phoenix = phoenixNative(candidates, threads);
  return prefillAim(target, llama?.prefill_tps, phoenix?.prefill_tps, flopsPerToken, peak, threads);
}

/** phoenix-local bf16 against phoenix-local f32 of the same weights, native, at `threads`. */
export interface HalfRatioSet {
  threads: number;
  prefill_vs_f32: number | null;
  decode_vs_f32: number | null;
  /** Weight bytes bf16 / f32 as the engine reports them (about 0.5 once bf16 stays bf16). */
  weight_bytes_vs_f32: number | null;
  targets: { decode_vs_f32: Target };
}

export function halfRatios(rows: readonly ResultRow[], threads: number, model?: string, half = 'bf16'): HalfRatioSet {
  const h = phoenixNative(sameWeights(rows, half, model), threads);
  const f = phoenixNative(sameWeights(rows, 'f32', model), threads);
  const prefill = h && f ? h.prefill_tps / f.prefill_tps : null;
  const decode = h && f ? h.decode_tps / f.decode_tps : null;
  const bytes = h?.weight_bytes && f?.weight_bytes ? h.weight_bytes / f.weight_bytes : null;
  return {
    threads,
    prefill_vs_f32: prefill === null ? null : round(prefill, 3),
    decode_vs_f32: decode === null ? null : round(decode, 3),
    weight_bytes_vs_f32: bytes === null ? null : round(bytes, 3),
    targets: { decode_vs_f32: target(TARGETS.bf16_decode_vs_f32, decode) },
  };
}

/** WASM/native ratios (prefill, decode) of phoenix-local, native at 1 thread; null where a row is missing. */
export function wasmRatios(rows: readonly ResultRow[], model?: string): WasmRatioSet {
  const f32 = sameWeights(rows, 'f32', model);
  const native = phoenixNative(f32, 1);
  const wasm = f32.find((r) => r.engine === 'phoenix-local' && r.backend === 'wasm');
  const prefill = native && wasm ? wasm.prefill_tps / native.prefill_tps : null;
  const decode = native && wasm ? wasm.decode_tps / native.decode_tps : null;
  return {
    native_threads: 1,
    prefill: prefill === null ? null : round(prefill, 3),
    decode: decode === null ? null : round(decode, 3),
    targets: { decode: target(TARGETS.wasm_decode_vs_native_1t, decode) },
  };
}

function pad(cells: readonly string[], widths: readonly number[]): string {
  return cells.map((c, i) => (i < LEFT_COLUMNS ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
}

const LEFT_COLUMNS = 4;

export function formatTable(rows: readonly ResultRow[]): string {
  const header = ['engine', 'backend', 'model', 'dtype', 'threads', 'load ms', 'prefill tok/s', 'prefill GFLOP/s', 'of FMA peak', 'TTFT ms', 'decode tok/s', 'weight GB/s', 'of read BW', 'peak RSS MB'];
  const body = rows.map((r) => [
    r.engine,
    r.backend,
    r.model,
    r.dtype,
    String(r.threads),
    r.load_ms.toFixed(0),
    r.prefill_tps.toFixed(1),
    r.prefill_gflops === null ? 'n/a' : r.prefill_gflops.toFixed(1),
    r.compute_share === null ? 'n/a' : `${(r.compute_share * 100).toFixed(0)}%`,
    r.ttft_ms.toFixed(0),
    r.decode_tps.toFixed(1),
    r.weight_gbps === null ? 'n/a' : r.weight_gbps.toFixed(2),
    r.bandwidth_share === null ? 'n/a' : `${(r.bandwidth_share * 100).toFixed(0)}%${r.weights_fit_in_cache ? '*' : ''}`,
    r.peak_rss_mb.toFixed(0),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = widths.map((w) => '-'.repeat(w)).join('  ');
  const note = rows.some((r) => r.weights_fit_in_cache) ? ['* weights fit in the last-level cache: decode may read them from cache, so the share of DRAM bandwidth says little'] : [];
  return [pad(header, widths), line, ...body.map((b) => pad(b, widths)), ...note].join('\n');
}

export function formatRatios(set: RatioSet): string {
  const against = (build: string | null) => (build ? ` vs ${build}` : '');
  const fmt = (name: string, t: Target, build: string | null) =>
    t.value === null ? `${name} n/a` : `${name} ${t.value.toFixed(2)}x${against(build)} (target >= ${t.target.toFixed(1)}x: ${t.pass ? 'PASS' : 'MISS'})`;
  const dtype = set.dtype && set.dtype !== 'f32' ? ` ${set.dtype}` : '';
  return `phoenix-local / faster llama.cpp${dtype} @ ${set.threads} thread(s): ${fmt('prefill', set.targets.prefill, set.llama_cpp?.prefill ?? null)}, ${fmt('decode', set.targets.decode, set.llama_cpp?.decode ?? null)}`;
}

export function formatHalfRatios(set: HalfRatioSet): string {
  const head = `phoenix-local bf16 / f32 @ ${set.threads} thread(s):`;
  if (set.decode_vs_f32 === null || set.prefill_vs_f32 === null) return `${head} n/a`;
  const t = set.targets.decode_vs_f32;
  const bytes = set.weight_bytes_vs_f32 === null ? '' : `, weight bytes ${set.weight_bytes_vs_f32.toFixed(2)}x`;
  return `${head} prefill ${set.prefill_vs_f32.toFixed(2)}x, decode ${set.decode_vs_f32.toFixed(2)}x (aim >= ${t.target.toFixed(1)}x: ${t.pass ? 'PASS' : 'MISS'})${bytes}`;
}

/** Decode rows below the aimed share of the machine's read bandwidth. */
export function bandwidthShortfalls(rows: readonly ResultRow[]): ResultRow[] {
  return rows.filter((r) => r.bandwidth_share !== null && !r.weights_fit_in_cache && r.bandwidth_share < TARGETS.decode_bandwidth_share);
}

export function formatWasmRatios(set: WasmRatioSet): string {
  const head = `phoenix-local wasm / native @ ${set.native_threads} thread:`;
  if (set.prefill === null || set.decode === null) return `${head} n/a (needs a wasm row and a native row at 1 thread; e.g. --threads=2,1)`;
  const t = set.targets.decode;
  return `${head} prefill ${set.prefill.toFixed(2)}x, decode ${set.decode.toFixed(2)}x (aim decode >= ${t.target.toFixed(1)}x native single-thread: ${t.pass ? 'PASS' : 'MISS'})`;
}

export function formatVerification(v: Verification): string {
  const maxima = Object.entries(v.referenceAbsMax).map(([key, max]) => `${key} ${max.toFixed(3)}`).join(', ');
  // Quantized files have no float64 reference: phoenix and llama.cpp are compared on their own check ids.
  const lines = [maxima ? `logit agreement on ${v.checkIds.length} check tokens (reference |logit| max: ${maxima}):` : 'logit agreement (phoenix-local vs llama.cpp on the same file):'];
  for (const c of v.comparisons) {
    lines.push(`  ${c.a} vs ${c.b}: max |Δ| = ${c.maxAbsDiff.toExponential(2)} (rel ${c.relToMax.toExponential(1)}), argmax agrees ${c.argmaxAgree}`);
  }
  for (const [engine, error] of Object.entries(v.errors)) lines.push(`  ${engine}: logits unavailable: ${error.split('\n')[0]}`);
  return lines.join('\n');
}
