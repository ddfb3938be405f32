/**
 * Proof that every engine runs the same model: logits of the check prompt from phoenix-local (HF
 * safetensors) and llama.cpp (GGUF; both builds), each compared with phoenix and with the float64
 * numpy reference that make_weights.py / make_family_weights.py computed from the same weights (f32, and
 * the bf16-rounded ones), per model. llama.cpp agreeing with the reference also checks the GGUF conversion;
 * where phoenix is skipped (its family not in the core yet) llama.cpp is still checked against the reference.
 * Quantized files (no reference) are checked phoenix against llama.cpp on the same file (variant.crossCheckIds).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { WASM_THREADS } from '../engines/types.js';
import { MODEL_NAME } from './bench-model.js';
import type { PlannedWorker } from './plan.js';
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
  /** max |reference logit| per model/dtype checked. */
  referenceAbsMax: Record<string, number>;
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

/** Label of a worker's logits in the comparisons ("llama.cpp" is the prebuilt build, as before; other models named). */
export function logitsLabel(w: Pick<PlannedWorker, 'engine' | 'llamaBuild' | 'variant'>): string {
  const name = w.engine === 'llama.cpp' && w.llamaBuild === 'native' ? 'llama.cpp-native' : w.engine;
  const model = w.variant.model === MODEL_NAME ? '' : ` ${w.variant.model}`;
  return w.variant.dtype === 'f32' ? `${name}${model}` : `${name}${model} ${w.variant.dtype}`;
}

/** The weights a worker runs: one reference per model and dtype. */
const weightsKey = (w: Pick<PlannedWorker, 'variant'>) => `${w.variant.model}/${w.variant.dtype}`;

/**
 * Logits of the check prompt from every planned worker that has a float64 reference (the benchmark
 * model's f32 and bf16 weights), each compared with its reference and with phoenix-local native on
 * the same weights.
 */
export async function verifyLogits(
  repoRoot: string,
  checkIds: readonly number[],
  workers: readonly PlannedWorker[],
  threads: number,
  llamaDriver?: string,
): Promise<Verification> {
  const ids = [...checkIds];
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'phoenix-bench-logits-'));
  const got = new Map<string, Float32Array>();
  const errors: Record<string, string> = {};
  const checked = workers.filter((w) => w.variant.reference || w.variant.crossCheckIds);
  const idsOf = (w: Pick<PlannedWorker, 'variant'>) => (w.variant.reference ? ids : (w.variant.crossCheckIds ?? ids));
  try {
    for (const w of checked) {
      const label = logitsLabel(w);
      const logitsOut = path.join(tmp, `${label.replace(/[^a-z0-9.-]/gi, '_')}.f32`);
      try {
        await runWorker(
          repoRoot,
          {
            engine: w.engine,
            threads: w.engine === 'phoenix-local-wasm' ? WASM_THREADS : threads,
            hfDir: w.variant.hfDir,
            ggufPath: w.variant.ggufPath ?? '',
            llamaBuild: w.llamaBuild,
            llamaDriver,
            mode: 'logits',
            promptIds: idsOf(w),
            decodeSteps: 0,
            iterations: 0,
            logitsOut,
          },
          10 * 60_000,
        );
        const bytes = readFileSync(logitsOut);
        got.set(label, new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)));
      } catch (error) {
        errors[label] = (error as Error).message;
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  const comparisons: LogitComparison[] = [];
  const referenceAbsMax: Record<string, number> = {};
  for (const key of [...new Set(checked.map(weightsKey))]) {
    const group = checked.filter((w) => weightsKey(w) === key);
    const { model, dtype } = group[0]!.variant;
    const phoenixLabel = logitsLabel({ engine: 'phoenix-local', variant: group[0]!.variant });
    const phoenix = got.get(phoenixLabel);
    const others = group.map(logitsLabel).filter((l) => l !== phoenixLabel && got.has(l));
    const reference = group[0]!.variant.reference;
    if (!reference) {
      // A quantized file: phoenix against llama.cpp on the same file only.
      const rows = idsOf(group[0]!).length;
      for (const label of others) if (phoenix) comparisons.push(compare(label, got.get(label)!, phoenixLabel, phoenix, rows));
      continue;
    }
    referenceAbsMax[key] = reference.absMax;
    const refBytes = readFileSync(reference.file);
    const ref = new Float64Array(refBytes.buffer, refBytes.byteOffset, refBytes.byteLength / 8);
    const of = model === MODEL_NAME ? '' : ` of ${model}`;
    const refLabel = dtype === 'f32' ? `float64 reference${of}` : `float64 reference${of} (${dtype} weights)`;
    for (const label of others) if (phoenix) comparisons.push(compare(label, got.get(label)!, phoenixLabel, phoenix, ids.length));
    if (phoenix) comparisons.push(compare(phoenixLabel, phoenix, refLabel, ref, ids.length));
    for (const label of others) comparisons.push(compare(label, got.get(label)!, refLabel, ref, ids.length));
  }
  return { checkIds: ids, referenceAbsMax, comparisons, errors };
}
