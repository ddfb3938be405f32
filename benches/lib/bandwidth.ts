/**
 * The memory limit decode runs against. Decode streams every weight once per token, so its ceiling is
 * the machine's read bandwidth: measured in the same run by benches/native/read-bandwidth.c (a STREAM-
 * style sum over a buffer far larger than the caches, at each row's thread count), compiled here for
 * this CPU. Each decode row then reports the weight GB/s it achieved and its share of that limit.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { compileNativeTool } from './native-tool.js';

/** One measurement of the probe (GB = 1e9 bytes). */
export interface BandwidthSample {
  threads: number;
  bytes: number;
  repetitions: number;
  best_gbps: number;
  median_gbps: number;
}

export interface Bandwidth {
  /** What was measured, by thread count; the limit is best_gbps (STREAM's convention). */
  by_threads: Record<string, BandwidthSample>;
  method: string;
  /** Last-level cache as the OS reports it (null: unknown). Weights smaller than this may be served from cache. */
  last_level_cache_bytes: number | null;
  /** Why a thread count has no measurement (no C compiler, probe failed, ...). */
  errors: Record<string, string>;
}

const PROBE_REPETITIONS = 5;
const MIN_PROBE_MIB = 1024;
const MAX_PROBE_MIB = 4096;

/**
 * Buffer the probe sums: 4x the last-level cache (some VMs report a few hundred MiB of L3), at least
 * 1 GiB, at most 4 GiB and a quarter of the machine's memory.
 */
export function probeMiB(lastLevelCacheBytes: number | null, totalMemoryBytes: number): number {
  const fromCache = lastLevelCacheBytes ? Math.ceil((4 * lastLevelCacheBytes) / 2 ** 20) : 0;
  const cap = Math.min(MAX_PROBE_MIB, Math.floor(totalMemoryBytes / 4 / 2 ** 20));
  return Math.max(64, Math.min(cap, Math.max(MIN_PROBE_MIB, fromCache)));
}

/** Parses a sysfs cache size ("491520K", "32M", "1024"). */
export function parseCacheSize(text: string): number | null {
  const m = /^(\d+)([KMG]?)$/i.exec(text.trim());
  if (!m) return null;
  const unit = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30 }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G'];
  return Number(m[1]) * unit;
}

/** The largest cache of CPU 0 (Linux sysfs); null elsewhere. */
export function lastLevelCacheBytes(): number | null {
  const dir = '/sys/devices/system/cpu/cpu0/cache';
  let best: number | null = null;
  try {
    for (const entry of readdirSync(dir)) {
      if (!entry.startsWith('index')) continue;
      const size = parseCacheSize(readFileSync(path.join(dir, entry, 'size'), 'utf8'));
      if (size !== null && (best === null || size > best)) best = size;
    }
  } catch {
    return null; // not Linux, or no cache information
  }
  return best;
}

/** Whether a row's weights fit in the last-level cache (its share of DRAM bandwidth may then exceed 100%). */
export function fitsInCache(weightBytes: number | null, cacheBytes: number | null): boolean {
  return weightBytes !== null && cacheBytes !== null && weightBytes <= cacheBytes;
}

/** Parses and checks the probe's one JSON line. */
export function parseBandwidthLine(line: string): BandwidthSample {
  let value: unknown;
  try {
    value = JSON.parse(line.trim());
  } catch {
    throw new Error(`read-bandwidth printed no JSON: ${JSON.stringify(line.slice(0, 200))}`);
  }
  const v = value as Record<string, unknown>;
  for (const key of ['threads', 'bytes', 'repetitions', 'best_gbps', 'median_gbps']) {
    if (typeof v[key] !== 'number' || !Number.isFinite(v[key]) || (v[key] as number) <= 0) throw new Error(`read-bandwidth: field ${key} missing or not a positive number`);
  }
  if (v.checksum_ok !== true) throw new Error('read-bandwidth: checksum mismatch (the sum was not computed over the whole buffer)');
  return { threads: v.threads as number, bytes: v.bytes as number, repetitions: v.repetitions as number, best_gbps: v.best_gbps as number, median_gbps: v.median_gbps as number };
}

/** GB/s of weights a decode row streams: bytes per token x tokens per second. */
export function weightGbps(weightBytes: number | undefined, decodeTps: number): number | null {
  if (weightBytes === undefined || !(weightBytes > 0) || !(decodeTps > 0)) return null;
  return (weightBytes * decodeTps) / 1e9;
}

/** Achieved GB/s over the machine's limit at the same thread count (null when either is unknown). */
export function bandwidthShare(gbps: number | null, limit: BandwidthSample | undefined): number | null {
  if (gbps === null || !limit) return null;
  return gbps / limit.best_gbps;
}


export function measureBandwidth(repoRoot: string, threads: readonly number[]): Bandwidth {
  const cache = lastLevelCacheBytes();
  const mib = probeMiB(cache, os.totalmem());
  const result: Bandwidth = {
    by_threads: {},
    method: `STREAM-style read: sum of a ${mib} MiB buffer split across the threads, best of ${PROBE_REPETITIONS} (benches/native/read-bandwidth.c, cc -O3 -march=native)`,
    last_level_cache_bytes: cache,
    errors: {},
  };
  let exe: string;
  try {
    exe = compileNativeTool(repoRoot, 'read-bandwidth', ['-O3', '-march=native', '-pthread']);
  } catch (error) {
    for (const t of threads) result.errors[String(t)] = (error as Error).message;
    return result;
  }
  for (const t of [...new Set(threads)]) {
    const res = spawnSync(exe, [String(t), String(mib), String(PROBE_REPETITIONS)], { encoding: 'utf8', timeout: 300_000 });
    try {
      if (res.status !== 0) throw new Error(`read-bandwidth exited with ${res.status ?? res.signal}: ${res.stderr.trim()}`);
      result.by_threads[String(t)] = parseBandwidthLine(res.stdout);
    } catch (error) {
      result.errors[String(t)] = (error as Error).message;
    }
  }
  return result;
}

/**
 * The better of two probes per thread count (the bench measures before and after the engines, so a
 * burst of other load during one probe does not set a limit below what the machine delivers).
 */
export function mergeBandwidth(first: Bandwidth, second: Bandwidth): Bandwidth {
  const by_threads: Record<string, BandwidthSample> = { ...first.by_threads };
  for (const [t, sample] of Object.entries(second.by_threads)) {
    const prior = by_threads[t];
    if (!prior || sample.best_gbps > prior.best_gbps) by_threads[t] = sample;
  }
  const errors: Record<string, string> = {};
  for (const [t, error] of Object.entries({ ...second.errors, ...first.errors })) if (!by_threads[t]) errors[t] = error;
  return {
    by_threads,
    method: `${first.method}; measured before and after the engines, the better of the two`,
    last_level_cache_bytes: first.last_level_cache_bytes ?? second.last_level_cache_bytes,
    errors,
  };
}

export function formatBandwidth(b: Bandwidth): string {
  const parts = Object.values(b.by_threads).map((s) => `${s.threads} thread(s) ${s.best_gbps.toFixed(1)} GB/s`);
  const errors = Object.entries(b.errors).map(([t, e]) => `${t} thread(s) n/a (${e})`);
  const cache = b.last_level_cache_bytes === null ? '' : `; last-level cache ${(b.last_level_cache_bytes / 2 ** 20).toFixed(0)} MiB`;
  return `machine read bandwidth (${b.method}): ${[...parts, ...errors].join(', ')}${cache}`;
}
