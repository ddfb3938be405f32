/**
 * Every engine reads its weights cold. A weight file whose cached pages were written (by the
 * converter, a download, a copy) sits in 4 KiB pages; read back cold, Linux caches it in large
 * folios that map as 2 MiB pages. Decode streams every weight per token, and 4 KiB pages slowed it
 * by up to a third here (a TLB walk and a hardware-prefetch restart every 4 KiB), for whichever
 * engine's file happened to be in that state. So before the engines run, the bench drops every
 * weight file from the page cache (benches/native/evict-page-cache.c: fdatasync + posix_fadvise
 * DONTNEED), Linux only; elsewhere it says so and goes on.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { compileNativeTool } from './native-tool.js';

export interface Eviction {
  files: number;
  bytes: number;
  /** Bytes that were cached before / are still cached after. */
  cachedBefore: number;
  cachedAfter: number;
  /** Why nothing (or not everything) was evicted. */
  problem?: string;
}

/**
 * The weight files of a model (safetensors shards and PyTorch checkpoints of a folder; a quantized
 * row's model is the `.gguf` file itself) and a GGUF file.
 */
export function weightFiles(hfDir: string | undefined, ggufPath: string | undefined): string[] {
  const files: string[] = [];
  if (hfDir && existsSync(hfDir) && statSync(hfDir).isFile()) {
    files.push(hfDir);
  } else if (hfDir && existsSync(hfDir)) {
    for (const name of readdirSync(hfDir)) if (/\.(safetensors|bin)$/.test(name)) files.push(path.join(hfDir, name));
  }
  if (ggufPath && existsSync(ggufPath)) files.push(ggufPath);
  return files;
}

/** Drops `files` from the page cache; never throws (a failure is reported in `problem`). */
export function evictPageCache(repoRoot: string, files: readonly string[]): Eviction {
  const unique = [...new Set(files)];
  const result: Eviction = { files: unique.length, bytes: 0, cachedBefore: 0, cachedAfter: 0 };
  if (os.platform() !== 'linux') return { ...result, problem: `not on Linux (${os.platform()}): page cache left as it is` };
  if (!unique.length) return result;
  let exe: string;
  try {
    exe = compileNativeTool(repoRoot, 'evict-page-cache', ['-O2']);
  } catch (error) {
    return { ...result, problem: (error as Error).message };
  }
  const res = spawnSync(exe, unique, { encoding: 'utf8', timeout: 120_000 });
  for (const line of res.stdout.split('\n').filter(Boolean)) {
    try {
      const v = JSON.parse(line) as { bytes: number; cached_before: number; cached_after: number };
      result.bytes += v.bytes;
      result.cachedBefore += Math.max(0, v.cached_before);
      result.cachedAfter += Math.max(0, v.cached_after);
    } catch {
      result.problem = `unexpected output from evict-page-cache: ${JSON.stringify(line.slice(0, 120))}`;
    }
  }
  if (res.status !== 0) result.problem = `evict-page-cache exited with ${res.status ?? res.signal}: ${res.stderr.trim().split('\n').slice(-2).join(' | ')}`;
  return result;
}

export function formatEviction(e: Eviction): string {
  const mb = (b: number) => `${(b / 1e6).toFixed(0)} MB`;
  const what = `dropped ${e.files} weight file(s) (${mb(e.bytes)}; ${mb(e.cachedBefore)} were cached, ${mb(e.cachedAfter)} still are) from the page cache, so every engine reads its weights cold, into large pages`;
  return e.problem ? `${what} — ${e.problem}` : what;
}
