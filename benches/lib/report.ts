/** Turns worker results into result rows, phoenix/llama.cpp and WASM/native ratios, and the printed table. */
import type { EngineName, WorkerResult } from '../engines/types.js';
import { median, round, spread } from './stats.js';
import type { Verification } from './verify.js';

export interface ResultRow {
  engine: EngineName;
  backend: string;
  model: string;
  dtype: string;
  threads: number;
  prefill_tps: number;
  decode_tps: number;
  ttft_ms: number;
  load_ms: number;
  peak_rss_mb: number;
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
  prefill: number | null;
  decode: number | null;
  targets: { decode: Target; prefill: Target };
}

/**
 * decode/prefill: phoenix-local (native) over llama.cpp at the same threads.
 * wasm_decode_vs_native_1t: phoenix-local on WASM over phoenix-local native at 1 thread (WASM is
 * single-threaded).
 */
export const TARGETS = { decode: 1.0, prefill: 2.0, wasm_decode_vs_native_1t: 0.5 } as const;

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

export function summarise(results: readonly WorkerResult[], model: string, dtype: string, promptTokens: number, decodeTokens: number): ResultRow {
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
  return {
    engine: first.engine,
    backend: first.backend,
    model,
    dtype,
    threads: first.threads,
    prefill_tps: round(median(prefillTps), 1),
    decode_tps: round(median(decodeTps), 2),
    ttft_ms: round(median(gens.map((g) => g.ttftMs)), 1),
    load_ms: round(median(results.map((r) => r.load.loadMs)), 1),
    peak_rss_mb: round(median(results.map((r) => r.peakRssMb)), 1),
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

export function ratios(rows: readonly ResultRow[], threads: number): RatioSet {
  const phoenix = rows.find((r) => r.engine === 'phoenix-local' && r.backend === 'native' && r.threads === threads);
  const llama = rows.find((r) => r.engine === 'llama.cpp' && r.threads === threads);
  const prefill = phoenix && llama ? phoenix.prefill_tps / llama.prefill_tps : null;
  const decode = phoenix && llama ? phoenix.decode_tps / llama.decode_tps : null;
  return {
    threads,
    prefill: prefill === null ? null : round(prefill, 3),
    decode: decode === null ? null : round(decode, 3),
    targets: { decode: target(TARGETS.decode, decode), prefill: target(TARGETS.prefill, prefill) },
  };
}

/** WASM/native ratios (prefill, decode) of phoenix-local, native at 1 thread; null where a row is missing. */
export function wasmRatios(rows: readonly ResultRow[]): WasmRatioSet {
  const native = rows.find((r) => r.engine === 'phoenix-local' && r.backend === 'native' && r.threads === 1);
  const wasm = rows.find((r) => r.engine === 'phoenix-local' && r.backend === 'wasm');
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
  return cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
}

export function formatTable(rows: readonly ResultRow[]): string {
  const header = ['engine', 'backend', 'threads', 'load ms', 'prefill tok/s', 'TTFT ms', 'decode tok/s', 'peak RSS MB'];
  const body = rows.map((r) => [
    r.engine,
    r.backend,
    String(r.threads),
    r.load_ms.toFixed(0),
    r.prefill_tps.toFixed(1),
    r.ttft_ms.toFixed(0),
    r.decode_tps.toFixed(1),
    r.peak_rss_mb.toFixed(0),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = widths.map((w) => '-'.repeat(w)).join('  ');
  return [pad(header, widths), line, ...body.map((b) => pad(b, widths))].join('\n');
}

export function formatRatios(set: RatioSet): string {
  const fmt = (name: string, t: Target) =>
    t.value === null ? `${name} n/a` : `${name} ${t.value.toFixed(2)}x (target >= ${t.target.toFixed(1)}x: ${t.pass ? 'PASS' : 'MISS'})`;
  return `phoenix-local / llama.cpp @ ${set.threads} thread(s): ${fmt('prefill', set.targets.prefill)}, ${fmt('decode', set.targets.decode)}`;
}

export function formatWasmRatios(set: WasmRatioSet): string {
  const head = `phoenix-local wasm / native @ ${set.native_threads} thread:`;
  if (set.prefill === null || set.decode === null) return `${head} n/a (needs a wasm row and a native row at 1 thread; e.g. --threads=2,1)`;
  const t = set.targets.decode;
  return `${head} prefill ${set.prefill.toFixed(2)}x, decode ${set.decode.toFixed(2)}x (aim decode >= ${t.target.toFixed(1)}x native single-thread: ${t.pass ? 'PASS' : 'MISS'})`;
}

export function formatVerification(v: Verification): string {
  const lines = [`logit agreement on ${v.checkIds.length} check tokens (reference |logit| max ${v.referenceAbsMax.toFixed(3)}):`];
  for (const c of v.comparisons) {
    lines.push(`  ${c.a} vs ${c.b}: max |Δ| = ${c.maxAbsDiff.toExponential(2)} (rel ${c.relToMax.toExponential(1)}), argmax agrees ${c.argmaxAgree}`);
  }
  for (const [engine, error] of Object.entries(v.errors)) lines.push(`  ${engine}: logits unavailable: ${error.split('\n')[0]}`);
  return lines.join('\n');
}
