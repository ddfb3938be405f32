/**
 * The bench's small C tools (benches/native/*.c: read-bandwidth, fma-peak, evict-page-cache), compiled
 * for this machine into a bin folder on first use and again whenever the source is newer.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import path from 'node:path';

/** Compiles benches/native/<name>.c with `flags` into `binDir/<name>` when missing or stale; returns its path. */
export function compileNativeTool(repoRoot: string, name: string, flags: readonly string[], binDir = path.join(repoRoot, 'benches', '.work', 'bin')): string {
  const source = path.join(repoRoot, 'benches', 'native', `${name}.c`);
  const exe = path.join(binDir, name);
  if (existsSync(exe) && statSync(exe).mtimeMs >= statSync(source).mtimeMs) return exe;
  mkdirSync(binDir, { recursive: true });
  const cc = process.env.CC || 'cc';
  const res = spawnSync(cc, [...flags, source, '-o', exe], { encoding: 'utf8' });
  if (res.error) throw new Error(`${cc} could not start (${res.error.message}): install a C compiler for benches/native/${name}.c`);
  if (res.status !== 0) throw new Error(`${cc} failed to compile benches/native/${name}.c: ${res.stderr.trim().split('\n').slice(-3).join(' | ')}`);
  return exe;
}
