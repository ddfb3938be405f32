/**
 * The WASM build's hot kernels really run on 128-bit SIMD: disassembles the shipped module
 * (wasm-objdump from wabt; function names come from its name section) and counts f32x4 arithmetic
 * in the selective scan, the decode mat-vec, the causal conv and RMSNorm. A build without
 * `+simd128`, or with loops the compiler stopped vectorising, fails here, not silently in a benchmark.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

import { ROOT, WASM_BUILT, WASM_REQUIRED } from './helpers.js';

const WASM_FILE = path.join(ROOT, 'wasm/node/phoenix_local_core_bg.wasm');
const OBJDUMP = process.env.PHOENIX_WASM_OBJDUMP ?? 'wasm-objdump';
const haveObjdump = spawnSync(OBJDUMP, ['--version'], { encoding: 'utf8' }).status === 0;

/**
 * Kernels (function-name fragments of crates/core/src/ops) that must contain f32x4 arithmetic. The
 * mat-vec's row kernel is inlined into its task closures (`matvec_with::{closure#…}`), so any
 * function of `ops::matvec` counts.
 */
const KERNELS = ['ops::scan::scan_block', 'ops::matvec::', 'ops::conv::conv_rows', 'ops::norm::rms_norm_rows'];
const F32X4_MATH = /\bf32x4\.(add|sub|mul|div|min|max|sqrt)\b/;

/** f32x4 arithmetic instructions per function name. */
function simdMathByFunction(disassembly: string): Map<string, number> {
  const counts = new Map<string, number>();
  let current = '';
  for (const line of disassembly.split('\n')) {
    const header = /^[0-9a-f]+ func\[\d+\] <(.*)>:$/.exec(line);
    if (header) current = header[1] as string;
    else if (F32X4_MATH.test(line)) counts.set(current, (counts.get(current) ?? 0) + 1);
  }
  return counts;
}

describe.runIf((WASM_BUILT || WASM_REQUIRED) && (haveObjdump || WASM_REQUIRED))('WASM SIMD', () => {
  it('the scan, mat-vec, conv and norm kernels use f32x4 arithmetic', () => {
    expect(WASM_BUILT, `no WASM build at ${WASM_FILE}: run \`npm run build:wasm\``).toBe(true);
    expect(haveObjdump, `${OBJDUMP} not found (apt-get install wabt, or set PHOENIX_WASM_OBJDUMP)`).toBe(true);
    const run = spawnSync(OBJDUMP, ['-d', WASM_FILE], { encoding: 'utf8', maxBuffer: 1 << 30 });
    expect(run.status, run.stderr).toBe(0);
    const counts = simdMathByFunction(run.stdout);
    expect([...counts.keys()].some((name) => name.includes('phoenix_core')), 'the module keeps its name section').toBe(true);
    for (const kernel of KERNELS) {
      const total = [...counts].filter(([name]) => name.includes(kernel)).reduce((sum, [, n]) => sum + n, 0);
      expect(total, `f32x4 arithmetic in ${kernel}`).toBeGreaterThan(8);
    }
  });
});
