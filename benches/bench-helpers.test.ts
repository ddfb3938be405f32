/** Pure helpers of the benchmark harness (no engines, no model files). */
import { describe, expect, it } from 'vitest';

import type { WorkerResult } from './engines/types.js';
import { parseArgs } from './lib/args.js';
import { promptIds } from './lib/prompt.js';
import { formatRatios, formatWasmRatios, ratios, summarise, wasmRatios } from './lib/report.js';
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
