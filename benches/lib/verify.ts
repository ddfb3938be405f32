/**
 * Proof that both engines run the same model: logits of the check prompt from phoenix-local (HF
 * safetensors) and llama.cpp (GGUF), each compared with the other and with the float64 numpy
 * reference that make_weights.py computed from the same weights.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { WASM_THREADS, type EngineId } from '../engines/types.js';
import type { BenchModel } from './bench-model.js';
import { runWorker } from './spawn-worker.js';

export interface LogitComparison {
  a: string;
  b: string;
  /** max |a - b| over every position and vocabulary entry. */
  maxAbsDiff: number;
  /** maxAbsDiff divided by max |b|. */
  relToMax: number;
  /** Positions whose argmax agrees. */
  argmaxAgree: string;
}

export interface Verification {
  checkIds: number[];
  referenceAbsMax: number;
  comparisons: LogitComparison[];
  errors: Record<string, string>;
}

function compare(a: string, x: Float32Array | Float64Array, b: string, y: Float32Array | Float64Array, rows: number): LogitComparison {
  if (x.length !== y.length) throw new Error(`${a} has ${x.length} logits, ${b} has ${y.length}`);
  const cols = x.length / rows;
  let maxAbsDiff = 0;
  let maxB = 0;
  let agree = 0;
  for (let r = 0; r < rows; r++) {
    let ax = 0;
    let ay = 0;
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      const d = Math.abs(x[i]! - y[i]!);
      if (!(d <= maxAbsDiff)) maxAbsDiff = Number.isNaN(d) ? Number.POSITIVE_INFINITY : d;
      maxB = Math.max(maxB, Math.abs(y[i]!));
      if (x[i]! > x[r * cols + ax]!) ax = c;
      if (y[i]! > y[r * cols + ay]!) ay = c;
    }
    if (ax === ay) agree += 1;
  }
  return { a, b, maxAbsDiff, relToMax: maxAbsDiff / maxB, argmaxAgree: `${agree}/${rows}` };
}

export async function verifyLogits(repoRoot: string, model: BenchModel, engines: readonly EngineId[], threads: number): Promise<Verification> {
  const ids = model.manifest.check_ids;
  const refBytes = readFileSync(path.join(model.dir, model.manifest.reference_logits.file));
  const reference = new Float64Array(refBytes.buffer, refBytes.byteOffset, refBytes.byteLength / 8);
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'phoenix-bench-logits-'));
  const got = new Map<string, Float32Array>();
  const errors: Record<string, string> = {};
  try {
    for (const engine of engines) {
      const logitsOut = path.join(tmp, `${engine}.f32`);
      try {
        await runWorker(
          repoRoot,
          { engine, threads: engine === 'phoenix-local-wasm' ? WASM_THREADS : threads, hfDir: model.hfDir, ggufPath: model.ggufPath, mode: 'logits', promptIds: ids, decodeSteps: 0, iterations: 0, logitsOut },
          10 * 60_000,
        );
        const bytes = readFileSync(logitsOut);
        got.set(engine, new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)));
      } catch (error) {
        errors[engine] = (error as Error).message;
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  const comparisons: LogitComparison[] = [];
  const phoenix = got.get('phoenix-local');
  const llama = got.get('llama.cpp');
  if (phoenix && llama) comparisons.push(compare('phoenix-local', phoenix, 'llama.cpp', llama, ids.length));
  if (phoenix) comparisons.push(compare('phoenix-local', phoenix, 'float64 reference', reference, ids.length));
  if (llama) comparisons.push(compare('llama.cpp', llama, 'float64 reference', reference, ids.length));
  const wasm = got.get('phoenix-local-wasm');
  if (wasm && phoenix) comparisons.push(compare('phoenix-local-wasm', wasm, 'phoenix-local', phoenix, ids.length));
  if (wasm) comparisons.push(compare('phoenix-local-wasm', wasm, 'float64 reference', reference, ids.length));
  return { checkIds: ids, referenceAbsMax: model.manifest.reference_logits.abs_max, comparisons, errors };
}
