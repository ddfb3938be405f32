/** Pure helpers of the benchmark harness (no engines, no model files). */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import { parseDriverReady, parseDriverToken } from './engines/llamacpp-native.js';
import type { WorkerResult } from './engines/types.js';
import { defaultWasmPath } from '../ts/index.js';
import { parseArgs } from './lib/args.js';
import { bandwidthShare, fitsInCache, formatBandwidth, mergeBandwidth, parseBandwidthLine, parseCacheSize, probeMiB, weightGbps, type BandwidthSample } from './lib/bandwidth.js';
import type { BenchModelManifest, BenchVariant } from './lib/bench-model.js';
import { formatQuantAim, quantAim } from './lib/quant-aims.js';
import { formatGgufFacts, quantizedVariant, realGgufVariant, staleReason } from './lib/quantized-models.js';
import {
  busyComputeProbes,
  computeShare,
  formatCompute,
  formatPrefillAim,
  measureCompute,
  mergeCompute,
  parseComputeLine,
  prefillAim,
  prefillGflops,
  type ComputeSample,
} from './lib/compute.js';
import { countMatmul, modelMatmulCount, parseSafetensorsHeader, readGgufShapes, readSafetensorsShapes } from './lib/matmul-flops.js';
import { contextRow, formatContextTable, withLlamaRatios } from './lib/context.js';
import { findNativeLlama } from './lib/llama-native.js';
import { phoenixSkipReason } from './lib/phoenix-support.js';
import { logitsLabel } from './lib/verify.js';
import { evictPageCache, formatEviction, weightFiles } from './lib/page-cache.js';
import { planWorkers } from './lib/plan.js';
import { promptIds } from './lib/prompt.js';
import { bandwidthShortfalls, formatHalfRatios, formatRatios, formatTable, formatWasmRatios, halfRatios, modelPrefillAim, ratios, summarise, TARGETS, wasmRatios } from './lib/report.js';
import { median, spread } from './lib/stats.js';

function fakeResult(engine: WorkerResult['engine'], threads: number, prefillMs: number[], decodeMs: number[], backend?: string): WorkerResult {
  return {
    engine,
    backend: backend ?? (engine === 'llama.cpp' ? 'cpu' : 'native'),
    threads,
    describe: {},
    load: { loadMs: 100, breakdown: { model_ms: 100 } },
    prefillMs,
    prefillInternal: prefillMs.map(() => ({})),
    generations: decodeMs.map((ms) => ({ ttftMs: 50, decodeMs: ms, decodeSteps: 10 })),
    firstTokens: [],
    peakRssMb: 600,
    rssAfterLoadMb: 550,
  };
}

describe('bench stats', () => {
  it('takes medians of odd and even samples', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
    expect(Number.isNaN(median([]))).toBe(true);
    expect(spread([90, 100, 110])).toBeCloseTo(0.2);
  });
});

describe('bench prompt', () => {
  it('is deterministic and avoids special / whitespace-added ids', () => {
    const a = promptIds(512);
    expect(a).toEqual(promptIds(512));
    expect(a).not.toEqual(promptIds(512, 99));
    expect(Math.min(...a)).toBeGreaterThanOrEqual(2);
    expect(Math.max(...a)).toBeLessThan(50254);
    expect(new Set(a).size).toBeGreaterThan(400);
  });
});

describe('bench args', () => {
  it('applies --quick defaults without overriding explicit flags', () => {
    const quick = parseArgs(['--quick', '--decode=8']);
    expect(quick).toMatchObject({ quick: true, promptTokens: 64, decodeTokens: 8, runs: 1, threads: [2] });
    expect(parseArgs(['--threads=4,2,1'])).toMatchObject({ threads: [4, 2, 1], promptTokens: 512 });
    expect(parseArgs(['--help'])).toBe('help');
  });
  it('runs every engine by default and WASM alone with --engines=phoenix-local-wasm', () => {
    expect(parseArgs([])).toMatchObject({ engines: ['phoenix-local', 'phoenix-local-wasm', 'llama.cpp'] });
    expect(parseArgs(['--engines=phoenix-local-wasm'])).toMatchObject({ engines: ['phoenix-local-wasm'] });
  });
  it('rejects bad values with the flag named', () => {
    expect(() => parseArgs(['--runs=0'])).toThrow(/--runs/);
    expect(() => parseArgs(['--engines=vllm'])).toThrow(/--engines/);
    expect(() => parseArgs(['--engines=wasm'])).toThrow(/phoenix-local-wasm/);
    expect(() => parseArgs(['--bogus'])).toThrow(/unknown option/);
  });
});

describe('bench report', () => {
  it('summarises medians and computes ratios against the targets', () => {
    const phoenix = summarise([fakeResult('phoenix-local', 2, [250, 260, 240], [100, 200, 100])], 'm', 'f32', 512, 10);
    const llama = summarise([fakeResult('llama.cpp', 2, [1000, 1000, 1000], [100, 100, 100])], 'm', 'f32', 512, 10);
    expect(phoenix.prefill_tps).toBeCloseTo(2048, 0);
    expect(phoenix.decode_tps).toBe(100);
    const r = ratios([phoenix, llama], 2);
    expect(r.prefill).toBeCloseTo(4.0, 2);
    expect(r.decode).toBe(1);
    expect(r.targets.prefill.pass).toBe(true);
    expect(r.targets.decode.pass).toBe(true);
    expect(formatRatios(r)).toContain('PASS');
    const missing = ratios([llama], 2);
    expect(missing.prefill).toBeNull();
    expect(missing.targets.decode.pass).toBeNull();
  });
  it('compares WASM with native at 1 thread and keeps it out of the llama.cpp ratios', () => {
    const native1 = summarise([fakeResult('phoenix-local', 1, [500, 500], [100, 100])], 'm', 'f32', 512, 10);
    const native2 = summarise([fakeResult('phoenix-local', 2, [250, 250], [50, 50])], 'm', 'f32', 512, 10);
    const wasm = summarise([fakeResult('phoenix-local', 1, [2000, 2000], [250, 250], 'wasm')], 'm', 'f32', 512, 10);
    const llama1 = summarise([fakeResult('llama.cpp', 1, [1000, 1000], [100, 100])], 'm', 'f32', 512, 10);
    expect(wasm.backend).toBe('wasm');
    expect(wasm.engine).toBe('phoenix-local');
    // The WASM row (also phoenix-local @ 1 thread) must not stand in for the native one.
    expect(ratios([wasm, native1, llama1], 1).prefill).toBeCloseTo(2.0, 3);
    const w = wasmRatios([native2, wasm, native1]);
    expect(w.native_threads).toBe(1);
    expect(w.prefill).toBeCloseTo(0.25, 3);
    expect(w.decode).toBeCloseTo(0.4, 3);
    expect(w.targets.decode).toEqual({ target: 0.5, value: 0.4, pass: false });
    expect(formatWasmRatios(w)).toContain('MISS');
    const none = wasmRatios([native2, wasm]);
    expect(none.decode).toBeNull();
    expect(none.targets.decode.pass).toBeNull();
    expect(formatWasmRatios(none)).toContain('n/a');
  });
});

/** A worker result with fixed timings: prefill `prefillMs` for 512 tokens, 10 decode steps in `decodeMs`. */
function timed(engine: WorkerResult['engine'], backend: string, threads: number, prefillMs: number, decodeMs: number, weightBytes?: number): WorkerResult {
  return { ...fakeResult(engine, threads, [prefillMs], [decodeMs], backend), weightBytes };
}

const row = (r: WorkerResult, dtype = 'f32', model = 'm', limit?: BandwidthSample, cache: number | null = null) => summarise([r], model, dtype, 512, 10, limit, cache);

describe('bench bandwidth', () => {
  const sample: BandwidthSample = { threads: 2, bytes: 2 ** 30, repetitions: 5, best_gbps: 20, median_gbps: 19 };

  it('parses the probe line and refuses incomplete or unchecked ones', () => {
    const line = '{"threads":2,"bytes":1073741824,"repetitions":5,"best_gbps":17.4,"median_gbps":16.9,"checksum_ok":true}\n';
    expect(parseBandwidthLine(line)).toEqual({ threads: 2, bytes: 1073741824, repetitions: 5, best_gbps: 17.4, median_gbps: 16.9 });
    expect(() => parseBandwidthLine(line.replace('"checksum_ok":true', '"checksum_ok":false'))).toThrow(/checksum/);
    expect(() => parseBandwidthLine(line.replace('"best_gbps":17.4,', ''))).toThrow(/best_gbps/);
    expect(() => parseBandwidthLine(line.replace('17.4', '-1'))).toThrow(/best_gbps/);
    expect(() => parseBandwidthLine('Segmentation fault')).toThrow(/no JSON/);
  });

  it('turns weight bytes and tokens/s into GB/s and a share of the limit', () => {
    expect(weightGbps(500e6, 30)).toBeCloseTo(15, 6);
    expect(weightGbps(undefined, 30)).toBeNull();
    expect(weightGbps(500e6, 0)).toBeNull();
    expect(bandwidthShare(15, sample)).toBeCloseTo(0.75, 6);
    expect(bandwidthShare(15, undefined)).toBeNull();
    expect(bandwidthShare(null, sample)).toBeNull();
  });

  it('sizes the probe from the last-level cache within 1-4 GiB and a quarter of memory', () => {
    expect(parseCacheSize('491520K')).toBe(480 * 2 ** 20);
    expect(parseCacheSize('32M\n')).toBe(32 * 2 ** 20);
    expect(parseCacheSize('1024')).toBe(1024);
    expect(parseCacheSize('big')).toBeNull();
    expect(probeMiB(null, 64 * 2 ** 30)).toBe(1024);
    expect(probeMiB(32 * 2 ** 20, 64 * 2 ** 30)).toBe(1024);
    expect(probeMiB(480 * 2 ** 20, 64 * 2 ** 30)).toBe(1920);
    expect(probeMiB(2 ** 30, 64 * 2 ** 30)).toBe(4096);
    expect(probeMiB(480 * 2 ** 20, 4 * 2 ** 30)).toBe(1024);
    expect(fitsInCache(258e6, 480 * 2 ** 20)).toBe(true);
    expect(fitsInCache(516e6, 480 * 2 ** 20)).toBe(false);
    expect(fitsInCache(516e6, null)).toBe(false);
  });

  it('takes the better of the probes before and after the engines, per thread count', () => {
    const one = (threads: number, gbps: number): BandwidthSample => ({ ...sample, threads, best_gbps: gbps });
    const before = { by_threads: { '1': one(1, 9), '2': one(2, 6) }, method: 'probe', last_level_cache_bytes: 1, errors: {} };
    const after = { by_threads: { '1': one(1, 8), '2': one(2, 10) }, method: 'probe', last_level_cache_bytes: 1, errors: { '4': 'failed' } };
    const merged = mergeBandwidth(before, after);
    expect(merged.by_threads['1']!.best_gbps).toBe(9);
    expect(merged.by_threads['2']!.best_gbps).toBe(10);
    expect(merged.errors).toEqual({ '4': 'failed' });
    expect(merged.method).toContain('before and after');
    const failedOnce = mergeBandwidth({ ...before, by_threads: {}, errors: { '1': 'busy' } }, { ...after, errors: {} });
    expect(failedOnce.errors).toEqual({});
    expect(failedOnce.by_threads['1']!.best_gbps).toBe(8);
  });

  it('puts weight GB/s and the share in each decode row, marking cache-resident weights', () => {
    const big = row(timed('phoenix-local', 'native', 2, 200, 400, 516e6), 'f32', 'm', sample, 480 * 2 ** 20);
    // 10 steps in 400 ms = 25 tok/s x 516 MB = 12.9 GB/s of a 20 GB/s limit.
    expect(big.weight_bytes).toBe(516e6);
    expect(big.weight_gbps).toBeCloseTo(12.9, 2);
    expect(big.bandwidth_share).toBeCloseTo(0.645, 3);
    expect(big.weights_fit_in_cache).toBe(false);
    const small = row(timed('phoenix-local', 'native', 2, 10, 10, 14.7e6), 'f32', 'lite', sample, 480 * 2 ** 20);
    expect(small.weights_fit_in_cache).toBe(true);
    const unknown = row(timed('llama.cpp', 'cpu-prebuilt', 2, 200, 400), 'f32', 'm', sample);
    expect(unknown.weight_gbps).toBeNull();
    expect(unknown.bandwidth_share).toBeNull();
    // Short of the 85% aim: only rows whose weights really stream from DRAM.
    expect(bandwidthShortfalls([big, small, unknown])).toEqual([big]);
    const table = formatTable([big, small, unknown]);
    expect(table).toContain('65%');
    expect(table).toMatch(/\d+%\*/);
    expect(table).toContain('weights fit in the last-level cache');
    expect(formatBandwidth({ by_threads: { '2': sample }, method: 'probe', last_level_cache_bytes: null, errors: { '1': 'no cc' } })).toMatch(/2 thread\(s\) 20\.0 GB\/s, 1 thread\(s\) n\/a \(no cc\)/);
  });
});

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

describe('bench compute limit', () => {
  const peak: ComputeSample = { threads: 2, vector_bits: 512, repetitions: 5, best_gflops: 400, median_gflops: 390, cpu_time_gflops: 410 };

  it('parses the FMA probe line and refuses incomplete or unchecked ones', () => {
    const line =
      '{"threads":2,"vector_bits":512,"accumulators":12,"milliseconds":200,"repetitions":5,"best_gflops":412.5,"median_gflops":401.2,"best_cpu_time_gflops":414.1,"checksum":18336.0,"checksum_ok":true}\n';
    expect(parseComputeLine(line)).toEqual({ threads: 2, vector_bits: 512, repetitions: 5, best_gflops: 412.5, median_gflops: 401.2, cpu_time_gflops: 414.1 });
    expect(() => parseComputeLine(line.replace('"checksum_ok":true', '"checksum_ok":false'))).toThrow(/checksum/);
    expect(() => parseComputeLine(line.replace('"best_gflops":412.5,', ''))).toThrow(/best_gflops/);
    expect(() => parseComputeLine(line.replace('"vector_bits":512', '"vector_bits":0'))).toThrow(/vector_bits/);
    expect(() => parseComputeLine(line.replace('412.5', '"fast"'))).toThrow(/best_gflops/);
    expect(() => parseComputeLine('Illegal instruction')).toThrow(/no JSON/);
  });

  it('compiles and runs the probe for this CPU: register-only FMAs, the checksum known in advance', () => {
    const bin = mkdtempSync(path.join(os.tmpdir(), 'phoenix-fma-peak-'));
    try {
      const c = measureCompute(REPO_ROOT, [1], { binDir: bin, ms: 20, repetitions: 2 });
      expect(c.errors).toEqual({});
      const s = c.by_threads['1']!;
      expect(s.threads).toBe(1);
      expect([128, 256, 512]).toContain(s.vector_bits);
      // At least one 128-bit FMA per ns at the median: far below any core that compiles this; a broken timer or
      // a loop the compiler removed would give nonsense on one side or the other of these bounds.
      expect(s.best_gflops).toBeGreaterThan(1);
      expect(s.best_gflops).toBeLessThanOrEqual(s.cpu_time_gflops * 1.05);
      expect(c.method).toContain('-ffp-contract=fast');
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });

  it('turns FLOPs per token and tokens/s into GFLOP/s and a share of the peak, per row and in the table', () => {
    expect(prefillGflops(180e6, 500)).toBeCloseTo(90, 6);
    expect(prefillGflops(null, 500)).toBeNull();
    expect(prefillGflops(180e6, 0)).toBeNull();
    expect(computeShare(90, peak)).toBeCloseTo(0.225, 6);
    expect(computeShare(90, undefined)).toBeNull();
    expect(computeShare(null, peak)).toBeNull();
    // 512 tokens in 200 ms = 2560 tok/s x 100 MFLOP = 256 GFLOP/s of a 400 GFLOP/s peak.
    const r = summarise([timed('phoenix-local', 'native', 2, 200, 400)], 'm', 'f32', 512, 10, undefined, null, { flopsPerToken: 100e6, peak });
    expect(r.prefill_gflops).toBeCloseTo(256, 2);
    expect(r.compute_share).toBeCloseTo(0.64, 3);
    const unknown = summarise([timed('llama.cpp', 'cpu-native', 2, 200, 400)], 'm', 'f32', 512, 10);
    expect(unknown.prefill_gflops).toBeNull();
    expect(unknown.compute_share).toBeNull();
    const table = formatTable([r, unknown]);
    expect(table).toMatch(/prefill GFLOP\/s\s+of FMA peak/);
    expect(table).toMatch(/256\.0\s+64%/);
  });

  it('states what a prefill aim needs of the machine, and when it is beyond it', () => {
    const flops = 200e6;
    const rows = [
      row(timed('phoenix-local', 'native', 2, 1000, 400)), // 512 tok/s
      row(timed('llama.cpp', 'cpu-prebuilt', 2, 2000, 400)), // 256 tok/s
      row(timed('llama.cpp', 'cpu-native', 2, 1600, 400)), // 320 tok/s: the faster build
      row(timed('llama.cpp', 'cpu-native', 1, 800, 400)), // another thread count: not compared
    ];
    const aim = modelPrefillAim(rows, 2, 'f32', 'm', 3, flops, peak)!;
    expect(aim.llama_cpp_tps).toBeCloseTo(320, 6);
    expect(aim.needed_tps).toBeCloseTo(960, 6);
    expect(aim.needed_gflops).toBeCloseTo(192, 6);
    expect(aim.needed_share).toBeCloseTo(0.48, 6);
    expect(aim.phoenix_tps).toBeCloseTo(512, 6);
    expect(aim.phoenix_share).toBeCloseTo(0.256, 6);
    expect(formatPrefillAim('m', aim)).toMatch(/3\.0x llama\.cpp \(320\.0 tok\/s\) needs 960 tok\/s = 192\.0 GFLOP\/s .* = 48% of the measured FMA peak; phoenix-local now 512\.0 tok\/s = 26%/);
    expect(formatPrefillAim('m', aim)).not.toContain('BEYOND');
    const small = { ...peak, best_gflops: 150 };
    expect(formatPrefillAim('m', modelPrefillAim(rows, 2, 'f32', 'm', 3, flops, small))).toContain('128% of the measured FMA peak — BEYOND the machine');
    expect(modelPrefillAim(rows, 2, 'f32', 'other', 3, flops, peak)).toBeNull();
    expect(prefillAim(3, 320, undefined, null, peak, 2)).toBeNull();
    expect(prefillAim(3, 320, undefined, flops, undefined, 2)).toMatchObject({ needed_share: null, phoenix_tps: null });
    expect(formatPrefillAim('m', null)).toContain('n/a');
  });

  it('takes the better probe per thread count and flags probes whose cores were shared', () => {
    const one = (threads: number, gflops: number, cpu = gflops): ComputeSample => ({ ...peak, threads, best_gflops: gflops, cpu_time_gflops: cpu });
    const before = { by_threads: { '1': one(1, 200), '2': one(2, 150, 410) }, method: 'fma', errors: {} };
    const after = { by_threads: { '1': one(1, 190), '2': one(2, 405, 410) }, method: 'fma', errors: { '4': 'failed' } };
    const merged = mergeCompute(before, after);
    expect(merged.by_threads['1']!.best_gflops).toBe(200);
    expect(merged.by_threads['2']!.best_gflops).toBe(405);
    expect(merged.errors).toEqual({ '4': 'failed' });
    expect(busyComputeProbes(before, 2)).toEqual([2]);
    expect(busyComputeProbes(merged, 2)).toEqual([]);
    // More threads than cores: the probe's threads share the cores among themselves, not with other work.
    expect(busyComputeProbes(before, 1)).toEqual([]);
    expect(formatCompute(before, 2)).toMatch(/1 thread\(s\) 200\.0 GFLOP\/s, 2 thread\(s\) 150\.0 GFLOP\/s \(cores shared: 410 per CPU-second/);
    expect(formatCompute({ ...after, by_threads: {} })).toContain('4 thread(s) n/a (failed)');
  });
});

describe('bench matrix-product FLOPs per token', () => {
  /** A safetensors header with Mamba-1 tensors of one layer (names and shapes as transformers writes them). */
  const mambaHeader = (untiedHead: boolean) =>
    JSON.stringify({
      __metadata__: { format: 'pt' },
      'backbone.embeddings.weight': { dtype: 'F32', shape: [1000, 64], data_offsets: [0, 0] },
      'backbone.layers.0.norm.weight': { dtype: 'F32', shape: [64], data_offsets: [0, 0] },
      'backbone.layers.0.mixer.in_proj.weight': { dtype: 'F32', shape: [256, 64], data_offsets: [0, 0] },
      'backbone.layers.0.mixer.conv1d.weight': { dtype: 'F32', shape: [128, 1, 4], data_offsets: [0, 0] },
      'backbone.layers.0.mixer.conv1d.bias': { dtype: 'F32', shape: [128], data_offsets: [0, 0] },
      'backbone.layers.0.mixer.x_proj.weight': { dtype: 'F32', shape: [36, 128], data_offsets: [0, 0] },
      'backbone.layers.0.mixer.dt_proj.weight': { dtype: 'F32', shape: [128, 4], data_offsets: [0, 0] },
      'backbone.layers.0.mixer.dt_proj.bias': { dtype: 'F32', shape: [128], data_offsets: [0, 0] },
      'backbone.layers.0.mixer.A_log': { dtype: 'F32', shape: [128, 16], data_offsets: [0, 0] },
      'backbone.layers.0.mixer.D': { dtype: 'F32', shape: [128], data_offsets: [0, 0] },
      'backbone.layers.0.mixer.out_proj.weight': { dtype: 'F32', shape: [64, 128], data_offsets: [0, 0] },
      'backbone.norm_f.weight': { dtype: 'F32', shape: [64], data_offsets: [0, 0] },
      ...(untiedHead ? { 'lm_head.weight': { dtype: 'F32', shape: [1000, 64], data_offsets: [0, 0] } } : {}),
    });

  it('counts the projections, not the embedding, LM head, A_log, conv or norms', () => {
    // in_proj 256x64 + x_proj 36x128 + dt_proj 128x4 + out_proj 64x128.
    const params = 256 * 64 + 36 * 128 + 128 * 4 + 64 * 128;
    for (const untied of [false, true]) {
      const c = countMatmul(parseSafetensorsHeader(mambaHeader(untied)));
      expect(c.matmul_params).toBe(params);
      expect(c.flops_per_token).toBe(2 * params);
      expect(c.excluded).toEqual(untied ? ['backbone.embeddings.weight', 'lm_head.weight'] : ['backbone.embeddings.weight']);
    }
    const llama = {
      'model.embed_tokens.weight': { shape: [500, 32] },
      'model.layers.0.self_attn.q_proj.weight': { shape: [32, 32] },
      'model.layers.0.self_attn.k_proj.weight': { shape: [16, 32] },
      'model.layers.0.mlp.down_proj.weight': { shape: [32, 96] },
    };
    expect(countMatmul(parseSafetensorsHeader(JSON.stringify(llama))).matmul_params).toBe(32 * 32 + 16 * 32 + 32 * 96);
  });

  it('counts GGUF tensor names alike: token_embd/output out, squeezed conv and grouped norm out', () => {
    const gguf = [
      { name: 'token_embd.weight', shape: [64, 1000] },
      { name: 'output.weight', shape: [64, 1000] },
      { name: 'output_norm.weight', shape: [64] },
      { name: 'blk.0.ssm_in.weight', shape: [64, 256] },
      { name: 'blk.0.ssm_conv1d.weight', shape: [4, 128] },
      { name: 'blk.0.ssm_a', shape: [16, 128] },
      { name: 'blk.0.ssm_norm.weight', shape: [64, 2] },
      { name: 'blk.0.ssm_out.weight', shape: [128, 64] },
      { name: 'blk.1.attn_output.weight', shape: [64, 64] },
    ];
    const c = countMatmul(gguf);
    expect(c.matmul_params).toBe(64 * 256 + 128 * 64 + 64 * 64);
    expect(c.excluded).toEqual(['token_embd.weight', 'output.weight']);
  });

  // The bench's generated models (benches/.work, written by the first `npm run bench`): the same weights as a
  // Hugging Face folder and as GGUF must give the same count, whichever way llama.cpp's converter laid them out.
  const work = path.join(REPO_ROOT, 'benches', '.work');
  for (const name of ['mamba-130m-random', 'mamba2-130m-random', 'smollm-135m-random', 'granite-h-350m-random']) {
    it.skipIf(!existsSync(path.join(work, name, 'model.gguf')))(`counts ${name} the same from its safetensors and its GGUF`, async () => {
      const fromHf = await modelMatmulCount(path.join(work, name, 'hf'));
      expect(fromHf).toMatchObject({ matmul_params: expect.any(Number) });
      expect(countMatmul(await readGgufShapes(path.join(work, name, 'model.gguf'))).matmul_params).toBe((fromHf as { matmul_params: number }).matmul_params);
      // No Hugging Face folder: the GGUF answers.
      expect(await modelMatmulCount(path.join(work, name, 'no-such-folder'), path.join(work, name, 'model.gguf'))).toEqual({
        ...(fromHf as object),
        excluded: ['token_embd.weight'],
      });
    });
  }

  it('refuses headers that are not a tensor table', () => {
    expect(() => parseSafetensorsHeader('not json', 'x.safetensors')).toThrow(/x\.safetensors: the header is not JSON/);
    expect(() => parseSafetensorsHeader('[1,2]')).toThrow(/not a JSON object/);
    expect(() => parseSafetensorsHeader(JSON.stringify({ 'a.weight': { shape: [2, -1] } }))).toThrow(/a\.weight.*no valid shape/);
    expect(() => parseSafetensorsHeader(JSON.stringify({ 'a.weight': { dtype: 'F32' } }))).toThrow(/no valid shape/);
  });

  it('reads a safetensors file\'s header within bounds', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'phoenix-bench-flops-'));
    try {
      const json = Buffer.from(mambaHeader(false));
      const prefix = Buffer.alloc(8);
      prefix.writeBigUInt64LE(BigInt(json.length));
      const file = path.join(dir, 'model.safetensors');
      writeFileSync(file, Buffer.concat([prefix, json]));
      expect((await readSafetensorsShapes(file)).length).toBe(12);
      // A header length past the end of the file (or a huge one) is refused before any allocation of that size.
      prefix.writeBigUInt64LE(2n ** 62n);
      writeFileSync(file, Buffer.concat([prefix, json]));
      await expect(readSafetensorsShapes(file)).rejects.toThrow(/header length/);
      writeFileSync(file, Buffer.from([1, 2, 3]));
      await expect(readSafetensorsShapes(file)).rejects.toThrow(/shorter than a safetensors header/);
      expect(await modelMatmulCount(path.join(dir, 'absent'))).toEqual(expect.any(String));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('matches the Mamba-1 shape formula on the project\'s default model', async () => {
    const dir = path.join(REPO_ROOT, 'models', 'phoenix-ssm-lite');
    const cfg = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')) as Record<string, number>;
    const d = cfg.hidden_size!, e = cfg.intermediate_size!, n = cfg.state_size!, r = cfg.time_step_rank!;
    // Per layer: in_proj (2e x d), x_proj ((r + 2n) x e), dt_proj (e x r), out_proj (d x e).
    const perLayer = 2 * e * d + (r + 2 * n) * e + e * r + d * e;
    const count = await modelMatmulCount(dir);
    expect(count).toMatchObject({ matmul_params: cfg.num_hidden_layers! * perLayer, excluded: ['backbone.embeddings.weight'] });
  });
});

describe('bench ratios with two llama.cpp builds, dtypes and models', () => {
  it('takes each metric against the faster llama.cpp build', () => {
    const phoenix = row(timed('phoenix-local', 'native', 2, 100, 200));
    // prebuilt: faster prefill, slower decode; native: the reverse. Listed prebuilt first.
    const prebuilt = row(timed('llama.cpp', 'cpu-prebuilt', 2, 300, 800));
    const native = row(timed('llama.cpp', 'cpu-native', 2, 400, 400));
    const r = ratios([phoenix, prebuilt, native], 2);
    expect(r.prefill).toBeCloseTo(3.0, 3);
    expect(r.decode).toBeCloseTo(2.0, 3);
    expect(r.llama_cpp).toEqual({ prefill: 'cpu-prebuilt', decode: 'cpu-native' });
    expect(formatRatios(r)).toContain('decode 2.00x vs cpu-native');
  });

  it('compares only rows of the same dtype and model', () => {
    const f32 = row(timed('phoenix-local', 'native', 2, 100, 400));
    const bf16 = row(timed('phoenix-local', 'native', 2, 100, 200), 'bf16');
    const lite = row(timed('phoenix-local', 'native', 2, 1, 1), 'f32', 'lite');
    const llamaF32 = row(timed('llama.cpp', 'cpu-native', 2, 300, 400));
    const llamaBf16 = row(timed('llama.cpp', 'cpu-native', 2, 300, 300), 'bf16');
    const rows = [lite, bf16, llamaBf16, f32, llamaF32];
    expect(ratios(rows, 2, 'f32', 'm')).toMatchObject({ prefill: 3, decode: 1, dtype: 'f32' });
    expect(ratios(rows, 2, 'bf16', 'm')).toMatchObject({ prefill: 3, decode: 1.5, dtype: 'bf16' });
    expect(formatRatios(ratios(rows, 2, 'bf16', 'm'))).toContain('llama.cpp bf16 @ 2');
    const half = halfRatios(rows, 2, 'm');
    expect(half).toMatchObject({ decode_vs_f32: 2, prefill_vs_f32: 1 });
    expect(half.targets.decode_vs_f32.pass).toBe(true);
    expect(formatHalfRatios(half)).toContain('decode 2.00x (aim >= 1.6x: PASS)');
    expect(halfRatios([f32], 2, 'm').decode_vs_f32).toBeNull();
    // The default model's phoenix row at 1 thread must not stand in for the benchmark model's.
    const lite1 = row(timed('phoenix-local', 'native', 1, 1, 1), 'f32', 'lite');
    const wasm = row(timed('phoenix-local', 'wasm', 1, 400, 400));
    expect(wasmRatios([lite1, wasm], 'm').decode).toBeNull();
  });

  it('reports the weight-byte ratio of bf16 to f32 as the engine states it', () => {
    const f32 = row(timed('phoenix-local', 'native', 2, 100, 400, 516e6));
    const bf16 = row(timed('phoenix-local', 'native', 2, 100, 250, 258e6), 'bf16');
    expect(halfRatios([f32, bf16], 2).weight_bytes_vs_f32).toBe(0.5);
  });
});

describe('bench plan', () => {
  const variant = (dtype: string, extra: Partial<BenchVariant> = {}): BenchVariant => ({ model: 'm', dtype, hfDir: `/hf-${dtype}`, ggufPath: `/m-${dtype}.gguf`, wasm: dtype === 'f32', ...extra });

  it('runs llama.cpp as every build on every GGUF, WASM and phoenix-only models where they apply', () => {
    const lite = variant('f32', { model: 'lite', ggufPath: undefined, wasm: false });
    const plan = planWorkers(['phoenix-local', 'phoenix-local-wasm', 'llama.cpp'], [variant('f32'), variant('bf16'), lite], ['prebuilt', 'native']);
    expect(plan.map((w) => w.id)).toEqual([
      'phoenix-local m/f32',
      'phoenix-local-wasm m/f32',
      'llama.cpp-prebuilt m/f32',
      'llama.cpp-native m/f32',
      'phoenix-local m/bf16',
      'llama.cpp-prebuilt m/bf16',
      'llama.cpp-native m/bf16',
      'phoenix-local lite/f32',
    ]);
    expect(plan.find((w) => w.id === 'llama.cpp-native m/bf16')).toMatchObject({ llamaBuild: 'native', variant: { ggufPath: '/m-bf16.gguf' } });
    expect(planWorkers(['llama.cpp'], [variant('f32')], ['prebuilt']).map((w) => w.id)).toEqual(['llama.cpp-prebuilt m/f32']);
  });
});

describe('bench rows of the newer families', () => {
  const variant = (extra: Partial<BenchVariant> = {}): BenchVariant => ({ model: 'granite', dtype: 'f32', hfDir: '/hf', ggufPath: '/g.gguf', wasm: false, ...extra });

  it('gives a model whose family phoenix does not load llama.cpp rows only', () => {
    const plan = planWorkers(['phoenix-local', 'phoenix-local-wasm', 'llama.cpp'], [variant({ phoenixSkip: 'E_UNSUPPORTED_MODEL: no', wasm: true }), variant({ model: 'smollm' })], ['prebuilt']);
    expect(plan.map((w) => w.id)).toEqual(['llama.cpp-prebuilt granite/f32', 'phoenix-local smollm/f32', 'llama.cpp-prebuilt smollm/f32']);
  });

  it('names the model in the logit labels of every model but the Mamba-1 one', () => {
    expect(logitsLabel({ engine: 'llama.cpp', llamaBuild: 'native', variant: variant() })).toBe('llama.cpp-native granite');
    expect(logitsLabel({ engine: 'phoenix-local', variant: variant({ model: 'mamba-130m-random', dtype: 'bf16' }) })).toBe('phoenix-local bf16');
  });

  it('takes each kind\'s targets: hybrid prefill 2x, Mamba-2 prefill 3x', () => {
    const phoenix = row(timed('phoenix-local', 'native', 2, 200, 400), 'f32', 'granite');
    const llama = row(timed('llama.cpp', 'cpu-native', 2, 500, 400), 'f32', 'granite');
    const hybrid = ratios([phoenix, llama], 2, 'f32', 'granite', TARGETS.by_kind.hybrid);
    expect(hybrid.prefill).toBeCloseTo(2.5, 3);
    expect(hybrid.targets.prefill).toEqual({ target: 2, value: 2.5, pass: true });
    expect(ratios([phoenix, llama], 2, 'f32', 'granite', TARGETS.by_kind.ssm).targets.prefill.pass).toBe(false);
  });

  it('parses --context and defaults it to 4096 (512 with --quick)', () => {
    expect(parseArgs([])).toMatchObject({ contextTokens: 4096 });
    expect(parseArgs(['--quick'])).toMatchObject({ contextTokens: 512 });
    expect(parseArgs(['--quick', '--context=0'])).toMatchObject({ contextTokens: 0 });
    expect(parseArgs(['--models=smollm135m,granite350m'])).toMatchObject({ models: ['smollm135m', 'granite350m'] });
    expect(() => parseArgs(['--context=-1'])).toThrow(/--context/);
  });

  it('puts decode at depth next to the same engine\'s short-prompt decode and llama.cpp', () => {
    const main = [row(timed('phoenix-local', 'native', 2, 100, 100), 'f32', 'smollm'), row(timed('llama.cpp', 'cpu-native', 2, 100, 200), 'f32', 'smollm')];
    // 10 decode steps: 250 ms -> 40 tok/s; 4096 tokens in 2048 ms -> 2000 tok/s prefill.
    const deep = (engine: WorkerResult['engine'], backend: string, decodeMs: number): WorkerResult => ({
      ...fakeResult(engine, 2, [], [], backend),
      generations: [{ ttftMs: 2048, decodeMs, decodeSteps: 10 }],
    });
    const rows = withLlamaRatios([
      contextRow(deep('phoenix-local', 'native', 250), 'smollm', 'transformer', 4096, main),
      contextRow(deep('llama.cpp', 'cpu-native', 500), 'smollm', 'transformer', 4096, main),
      contextRow(deep('llama.cpp', 'cpu-prebuilt', 400), 'smollm', 'transformer', 4096, main),
    ]);
    expect(rows[0]).toMatchObject({ decode_tps: 40, prefill_tps: 2000, short_decode_tps: 100, vs_short: 0.4, vs_llama_cpp: 1.6 });
    expect(rows[1]).toMatchObject({ decode_tps: 20, short_decode_tps: 50, vs_short: 0.4, vs_llama_cpp: null });
    // No main row for the prebuilt build: no short-prompt figure rather than another engine's.
    expect(rows[2]).toMatchObject({ short_decode_tps: null, vs_short: null });
    expect(formatContextTable(rows)).toContain('1.60x');
  });

  it('skips phoenix rows with the core\'s own reason when it does not load a model type', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'phoenix-bench-support-'));
    try {
      writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'not-a-family', hidden_size: 8 }));
      const why = await phoenixSkipReason(variant({ hfDir: dir }));
      expect(why).toMatch(/^E_UNSUPPORTED_MODEL: .*not-a-family/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('bench llama.cpp native driver protocol', () => {
  it('parses the ready and token lines and names anything else', () => {
    expect(parseDriverReady('ready 812.5 516070656 129135360 50280\n')).toEqual({ loadMs: 812.5, weightBytes: 516070656, params: 129135360, vocab: 50280 });
    expect(() => parseDriverReady('error: could not load')).toThrow(/expected a "ready" line/);
    expect(parseDriverToken('tok 42')).toBe(42);
    expect(() => parseDriverToken('tok -1')).toThrow(/tok <id>/);
  });
});

describe('bench args and prompt for the new rows', () => {
  it('selects llama.cpp builds and model sets, refusing unknown ones', () => {
    // The newer families' shapes are part of the default run (issue 10).
    expect(parseArgs([])).toMatchObject({ llamaBuilds: ['prebuilt', 'native'], models: ['f32', 'bf16', 'default', 'smollm135m', 'mamba2-130m', 'granite350m'] });
    expect(parseArgs(['--llama-builds=native', '--models=bf16,f32'])).toMatchObject({ llamaBuilds: ['native'], models: ['bf16', 'f32'] });
    expect(() => parseArgs(['--llama-builds=cuda'])).toThrow(/--llama-builds/);
    expect(() => parseArgs(['--models=q4'])).toThrow(/--models/);
  });
  it('keeps prompt ids inside a small vocabulary', () => {
    const ids = promptIds(512, 1234, 4096);
    expect(Math.max(...ids)).toBeLessThan(4096);
    expect(Math.min(...ids)).toBeGreaterThanOrEqual(2);
    expect(new Set(ids).size).toBeGreaterThan(400);
    expect(promptIds(512, 1234, 1e9)).toEqual(promptIds(512));
    expect(() => promptIds(4, 1234, 2)).toThrow(/no ordinary ids/);
  });
});

describe('bench llama.cpp native build lookup', () => {
  it('reports a missing build without starting one', () => {
    const cache = mkdtempSync(path.join(os.tmpdir(), 'phoenix-llama-native-'));
    const saved = process.env.PHOENIX_LLAMA_NATIVE_DIR;
    process.env.PHOENIX_LLAMA_NATIVE_DIR = cache;
    try {
      const found = findNativeLlama(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..'));
      expect(found).toEqual({ missing: expect.stringMatching(/not built .*scripts\/build-llama-native\.sh/) });
      expect(readdirSync(cache)).toEqual([]); // nothing fetched, nothing built
    } finally {
      if (saved === undefined) delete process.env.PHOENIX_LLAMA_NATIVE_DIR;
      else process.env.PHOENIX_LLAMA_NATIVE_DIR = saved;
      rmSync(cache, { recursive: true, force: true });
    }
  });
});

describe('bench quantized rows (issue 11)', () => {
  const limit = (gbps: number): BandwidthSample => ({ threads: 2, bytes: 1, repetitions: 1, best_gbps: gbps, median_gbps: gbps });
  // 10 decode steps: decodeMs 100 -> 100 tok/s; 512 prompt tokens: prefillMs 256 -> 2000 tok/s.
  const q = (engine: WorkerResult['engine'], backend: string, prefillMs: number, decodeMs: number, bytes: number, bw: number, cache: number | null = null) =>
    row(timed(engine, backend, 2, prefillMs, decodeMs, bytes), 'q8_0', 'm', limit(bw), cache);

  it('aims decode at 1.2x the faster llama.cpp build and prefill at 2x', () => {
    // phoenix 100 tok/s x 100 MB = 10 GB/s of 100 GB/s: far from the limit, so 1.2x applies.
    const rows = [q('phoenix-local', 'native', 100, 100, 100e6, 100), q('llama.cpp', 'cpu-prebuilt', 300, 125, 100e6, 100), q('llama.cpp', 'cpu-native', 250, 200, 100e6, 100)];
    const a = quantAim(rows, 2, 'q8_0', 'm')!;
    expect(a.decode).toMatchObject({ basis: 'vs_llama_cpp', llama_cpp_backend: 'cpu-prebuilt', ratio: 1.25, needed_tps: 96, pass: true });
    expect(a.prefill).toMatchObject({ llama_cpp_backend: 'cpu-native', ratio: 2.5, target: 2, pass: true });
    expect(formatQuantAim(a)).toMatch(/decode 100\.0 vs 80\.0 tok\/s \(cpu-prebuilt\) = 1\.25x.*aim >= 1\.2x = 96\.0 tok\/s: HIT.*prefill .* = 2\.50x \(aim >= 2x\): HIT/);
    // 1.1x decode and 1.5x prefill miss.
    const slow = quantAim([q('phoenix-local', 'native', 200, 100, 100e6, 100), q('llama.cpp', 'cpu-native', 300, 110, 100e6, 100)], 2, 'q8_0', 'm')!;
    expect(slow.decode.pass).toBe(false);
    expect(slow.prefill.pass).toBe(false);
    expect(formatQuantAim(slow)).toMatch(/MISS.*MISS/);
    expect(slow.prefill.int8).toBeUndefined();
  });

  it('judges the int8Prompt prefill beside the default one when the worker timed it', () => {
    const timedRow = timed('phoenix-local', 'native', 2, 200, 100, 100e6);
    // Default prompt 2560 tok/s (1.07x of 2400); int8 prompt 512 tokens in 100 ms = 5120 tok/s (2.13x).
    const phoenix = row({ ...timedRow, prefillInt8Ms: [100, 100] }, 'q8_0', 'm', limit(100));
    expect(phoenix.prefill_int8_tps).toBe(5120);
    const a = quantAim([phoenix, q('llama.cpp', 'cpu-native', 213.33, 110, 100e6, 100)], 2, 'q8_0', 'm')!;
    expect(a.prefill.pass).toBe(false);
    expect(a.prefill.int8).toMatchObject({ phoenix_tps: 5120, pass: true });
    expect(a.prefill.int8!.ratio).toBeCloseTo(2.13, 2);
    expect(formatQuantAim(a)).toMatch(/= 1\.07x \(aim >= 2x\): MISS; int8Prompt 5120\.0 tok\/s = 2\.13x: HIT$/);
  });

  it('judges the decode with an f16 KV cache beside the default one when the worker timed it', () => {
    const timedRow = timed('phoenix-local', 'native', 2, 100, 100, 100e6);
    // Default decode 100 tok/s (1.1x of 90.9); with the f16 cache 10 steps in 80 ms = 125 tok/s (1.375x).
    const f16 = timedRow.generations.map((g) => ({ ...g, decodeMs: 80 }));
    const phoenix = row({ ...timedRow, generationsKvF16: f16 }, 'q8_0', 'm', limit(100));
    expect(phoenix.decode_kv_f16_tps).toBe(125);
    const a = quantAim([phoenix, q('llama.cpp', 'cpu-native', 300, 110, 100e6, 100)], 2, 'q8_0', 'm')!;
    expect(a.decode.pass).toBe(false);
    expect(a.decode.kvF16).toMatchObject({ phoenix_tps: 125, ratio: 1.375, pass: true });
    expect(formatQuantAim(a)).toMatch(/= 1\.10x, .*aim >= 1\.2x = 109\.1 tok\/s: MISS; kvCache f16 125\.0 tok\/s = 1\.38x: HIT; prefill/);
    expect(quantAim([row(timedRow, 'q8_0', 'm', limit(100)), q('llama.cpp', 'cpu-native', 300, 110, 100e6, 100)], 2, 'q8_0', 'm')!.decode.kvF16).toBeUndefined();
  });

  it('aims at 85% of the read bandwidth where 1.2x llama.cpp would exceed it', () => {
    // llama.cpp 80 tok/s x 100 MB = 8 GB/s of 10 GB/s; 1.2x = 96 tok/s = 96% of the limit: the aim is 85 tok/s.
    const llama = q('llama.cpp', 'cpu-native', 300, 125, 100e6, 10);
    const hit = quantAim([q('phoenix-local', 'native', 100, 10000 / 90, 100e6, 10), llama], 2, 'q8_0', 'm')!;
    expect(hit.decode).toMatchObject({ basis: 'read_bandwidth', needed_tps: 85, llama_cpp_bandwidth_share: 0.8, pass: true });
    expect(formatQuantAim(hit)).toContain('aim >= 85% of read BW = 85.0 tok/s (llama.cpp streams 80% of it');
    const miss = quantAim([q('phoenix-local', 'native', 100, 10000 / 84, 100e6, 10), llama], 2, 'q8_0', 'm')!;
    expect(miss.decode).toMatchObject({ basis: 'read_bandwidth', pass: false });
    // The limit is taken with phoenix's own weight bytes: holding twice the bytes halves the rate at 85%.
    const fat = quantAim([q('phoenix-local', 'native', 100, 10000 / 50, 200e6, 10), llama], 2, 'q8_0', 'm')!;
    expect(fat.decode.needed_tps).toBeCloseTo(42.5, 2);
  });

  it('keeps the 1.2x aim when the weights fit in the last-level cache (no DRAM limit to stream against)', () => {
    const cache = 480 * 2 ** 20;
    const a = quantAim([q('phoenix-local', 'native', 100, 10000 / 90, 100e6, 10, cache), q('llama.cpp', 'cpu-native', 300, 125, 100e6, 10, cache)], 2, 'q8_0', 'm')!;
    expect(a.decode).toMatchObject({ basis: 'vs_llama_cpp', needed_tps: 96, phoenix_bandwidth_share: null, pass: false });
  });

  it('needs a phoenix row and a llama.cpp row of the same file, dtype and threads', () => {
    const phoenix = q('phoenix-local', 'native', 100, 100, 100e6, 100);
    const llama = q('llama.cpp', 'cpu-native', 300, 125, 100e6, 100);
    expect(quantAim([phoenix], 2, 'q8_0', 'm')).toBeNull();
    expect(quantAim([phoenix, llama], 1, 'q8_0', 'm')).toBeNull();
    expect(quantAim([phoenix, llama], 2, 'q4_k_m', 'm')).toBeNull();
    expect(quantAim([phoenix, { ...llama, model: 'other' }], 2, 'q8_0', 'm')).toBeNull();
  });

  it('selects the quantized rows by name or as `quantized`, and leaves them out of the default run', () => {
    expect(parseArgs(['--models=quantized'])).toMatchObject({ models: ['mamba130m-q8_0', 'mamba130m-q4_k', 'smollm135m-q8_0', 'smollm135m-q4_k', 'smollm2-q4_1'] });
    expect(parseArgs(['--models=f32,smollm2-q4_1,mamba130m-q4_k'])).toMatchObject({ models: ['f32', 'smollm2-q4_1', 'mamba130m-q4_k'] });
    expect((parseArgs([]) as { models: string[] }).models.some((m) => m.includes('q'))).toBe(false);
    expect(() => parseArgs(['--models=mamba130m-q2_k'])).toThrow(/--models/);
  });

  it('gives both engines the same .gguf file and checks them against each other', () => {
    const manifest = { check_ids: [5, 6, 7] } as BenchModelManifest;
    const v = quantizedVariant({ model: 'smollm', ggufPath: '/w/smollm.Q4_K_M.gguf', manifest, vocabSize: 49152 }, '/w/q/smollm.Q4_K_M.gguf', { type: 'Q4_K_M', kind: 'transformer' });
    expect(v).toMatchObject({ model: 'smollm', dtype: 'q4_k_m', hfDir: '/w/q/smollm.Q4_K_M.gguf', ggufPath: '/w/q/smollm.Q4_K_M.gguf', vocabSize: 49152, crossCheckIds: [5, 6, 7], wasm: false });
    expect(v.reference).toBeUndefined();
    // Q8_0 files also get a WASM row (simd128), where the WASM build reads them.
    const q8 = quantizedVariant({ model: 'smollm', ggufPath: '/w/s.gguf', manifest, vocabSize: 49152 }, '/w/q/smollm.Q8_0.gguf', { type: 'Q8_0', kind: 'transformer' });
    expect(q8).toMatchObject({ dtype: 'q8_0', wasm: true });
    expect(planWorkers(['phoenix-local-wasm'], [q8], ['prebuilt']).map((w) => [w.id, w.variant.hfDir])).toEqual([['phoenix-local-wasm smollm/q8_0', '/w/q/smollm.Q8_0.gguf']]);
    const plan = planWorkers(['phoenix-local', 'phoenix-local-wasm', 'llama.cpp'], [v], ['prebuilt', 'native']);
    expect(plan.map((w) => [w.id, w.variant.hfDir === w.variant.ggufPath])).toEqual([
      ['phoenix-local smollm/q4_k_m', true],
      ['llama.cpp-prebuilt smollm/q4_k_m', true],
      ['llama.cpp-native smollm/q4_k_m', true],
    ]);
  });

  it('skips the real SmolLM2 file visibly when absent and gives both engines the file itself, not its symlink', () => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'phoenix-bench-real-'));
    try {
      expect(realGgufVariant(root)).toMatch(/models\/SmolLM2-135M-Instruct\.Q4_1\.gguf not found \(run `npm run models:fetch`\)/);
      mkdirSync(path.join(root, 'models'));
      mkdirSync(path.join(root, 'shared'));
      writeFileSync(path.join(root, 'shared', 'real.gguf'), 'GGUF');
      symlinkSync(path.join(root, 'shared', 'real.gguf'), path.join(root, 'models', 'SmolLM2-135M-Instruct.Q4_1.gguf'));
      const v = realGgufVariant(root) as BenchVariant;
      expect(v).toMatchObject({ model: 'SmolLM2-135M-Instruct', dtype: 'q4_1', hfDir: realpathSync(path.join(root, 'shared', 'real.gguf')), kind: 'transformer' });
      expect(v.ggufPath).toBe(v.hfDir);
      expect(Math.max(...v.crossCheckIds!)).toBeLessThan(49152);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('asks the WASM binding, not the native addon, about a WASM row', async () => {
    const saved = process.env.PHOENIX_WASM_PATH;
    process.env.PHOENIX_WASM_PATH = path.join(os.tmpdir(), 'phoenix-no-such-wasm', 'phoenix-local.js');
    try {
      const v: BenchVariant = { model: 'm', dtype: 'q8_0', hfDir: '/nowhere', wasm: true };
      expect(await phoenixSkipReason(v, 'wasm')).toMatch(/^WASM binding unavailable: /);
      expect(await phoenixSkipReason(v)).not.toMatch(/WASM/);
    } finally {
      if (saved === undefined) delete process.env.PHOENIX_WASM_PATH;
      else process.env.PHOENIX_WASM_PATH = saved;
    }
  });

  it.skipIf(!existsSync(defaultWasmPath()))('takes the WASM binding\'s own reason when it cannot run a model', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'phoenix-bench-wasm-support-'));
    try {
      writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'not-a-family', hidden_size: 8 }));
      const v: BenchVariant = { model: 'm', dtype: 'q8_0', hfDir: dir, wasm: true };
      expect(await phoenixSkipReason(v, 'wasm')).toMatch(/^E_UNSUPPORTED_MODEL: .*not-a-family/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('remakes a cached quantized file when its source, quantizer or size changed', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'phoenix-bench-quant-'));
    try {
      const out = path.join(dir, 'm.Q8_0.gguf');
      const manifest = path.join(dir, 'm.Q8_0.json');
      const want = { source_gguf: 'm.gguf', source_bytes: 10, source_generator_sha256: 'abc', quantizer: '/q', quantizer_bytes: 5, type: 'Q8_0' };
      expect(staleReason(manifest, want, out)).toBe('not made yet');
      writeFileSync(out, 'GGUF0123');
      writeFileSync(manifest, JSON.stringify({ ...want, bytes: 8 }));
      expect(staleReason(manifest, want, out)).toBeNull();
      expect(staleReason(manifest, { ...want, source_generator_sha256: 'def' }, out)).toBe('source_generator_sha256 changed');
      expect(staleReason(manifest, { ...want, quantizer_bytes: 6 }, out)).toBe('quantizer_bytes changed');
      writeFileSync(out, 'GGUF');
      expect(staleReason(manifest, want, out)).toBe('file size differs from its manifest');
      writeFileSync(manifest, '{');
      expect(staleReason(manifest, want, out)).toBe('unreadable manifest');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('states each file\'s type mix as the core reads it', () => {
    expect(formatGgufFacts('m q4_k_m', { quantization: 'Q4_K_M', tensorTypes: { F32: 145, Q4_K: 72, Q6_K: 1 }, weightBytes: 88.1e6, fileBytes: 9e7 })).toBe(
      'm q4_k_m: Q4_K_M: 145 F32, 72 Q4_K, 1 Q6_K tensors, 88.1 MB of weights',
    );
    expect(formatGgufFacts('m', 'E_BAD_WEIGHTS: nope')).toBe('m: n/a (E_BAD_WEIGHTS: nope)');
  });
});

describe('page cache eviction before the engines', () => {
  const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

  it('lists a folder\'s weight files and the GGUF, nothing else', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'phoenix-evict-'));
    try {
      for (const f of ['model-00001.safetensors', 'pytorch_model.bin', 'config.json', 'tokenizer.json']) writeFileSync(path.join(dir, f), 'x');
      const gguf = path.join(dir, 'model.gguf');
      writeFileSync(gguf, 'x');
      expect(weightFiles(dir, gguf).map((f) => path.basename(f)).sort()).toEqual(['model-00001.safetensors', 'model.gguf', 'pytorch_model.bin']);
      expect(weightFiles(path.join(dir, 'missing'), undefined)).toEqual([]);
      // A quantized row's model is the GGUF file itself, not a folder.
      expect(weightFiles(gguf, gguf)).toEqual([gguf, gguf]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(os.platform() !== 'linux')('drops a just-written file from the page cache (Linux)', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'phoenix-evict-'));
    try {
      const file = path.join(dir, 'w.safetensors');
      writeFileSync(file, Buffer.alloc(8 << 20, 7));
      const e = evictPageCache(repoRoot, [file, file]);
      expect(e.problem).toBeUndefined();
      expect(e.files).toBe(1);
      expect(e.bytes).toBe(8 << 20);
      expect(e.cachedBefore).toBeGreaterThan(0);
      expect(e.cachedAfter).toBe(0);
      expect(formatEviction(e)).toMatch(/dropped 1 weight file/);
      const missing = evictPageCache(repoRoot, [path.join(dir, 'gone.gguf')]);
      expect(missing.problem).toMatch(/exited with 1/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
