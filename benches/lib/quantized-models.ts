/**
 * The quantized benchmark rows: phoenix-local and llama.cpp load the SAME .gguf file. The Mamba-130M and
 * SmolLM-135M benchmark weights (their f32 model.gguf) are quantized to Q8_0 and Q4_K_M by llama.cpp's own
 * quantizer (llama_model_quantize, linked as phoenix-llama-quantize by scripts/build-llama-native.sh), so the
 * per-tensor type choices are llama.cpp's (SmolLM's 576-wide rows are not a multiple of 256: llama.cpp keeps
 * those in Q5_0/Q8_0 in a Q4_K_M file, as in the files people download). gguf-py 0.19 has no K-quant
 * quantizer, so without the from-source build these rows are skipped with a note. Files are cached in
 * benches/.work/quantized/ with a manifest and remade when the source weights or the quantizer change.
 * Plus the real SmolLM2-135M-Instruct Q4_1 file (`npm run models:fetch`), skipped with a note when absent.
 */
import { existsSync, mkdirSync, readFileSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';

import { loadBinding } from '../../ts/index.js';

import type { BenchModelManifest, BenchVariant } from './bench-model.js';
import { promptIds } from './prompt.js';

/** `--models=` names of the quantized rows. */
export const QUANTIZED_KEYS = ['mamba130m-q8_0', 'mamba130m-q4_k', 'smollm135m-q8_0', 'smollm135m-q4_k', 'smollm2-q4_1'] as const;
export type QuantizedKey = (typeof QUANTIZED_KEYS)[number];

/** A benchmark model quantized from its f32 GGUF. */
export interface QuantizedModelDef {
  key: Exclude<QuantizedKey, 'smollm2-q4_1'>;
  /** Which benchmark weights: the Mamba-1 model (make_weights.py) or SmolLM-135M (make_family_weights.py). */
  source: 'mamba130m' | 'smollm135m';
  /** llama.cpp's file type (llama-quantize's name). */
  type: 'Q8_0' | 'Q4_K_M';
  kind: 'transformer' | 'ssm';
}

export const QUANTIZED_MODELS: readonly QuantizedModelDef[] = [
  { key: 'mamba130m-q8_0', source: 'mamba130m', type: 'Q8_0', kind: 'ssm' },
  { key: 'mamba130m-q4_k', source: 'mamba130m', type: 'Q4_K_M', kind: 'ssm' },
  { key: 'smollm135m-q8_0', source: 'smollm135m', type: 'Q8_0', kind: 'transformer' },
  { key: 'smollm135m-q4_k', source: 'smollm135m', type: 'Q4_K_M', kind: 'transformer' },
];

/** The real instruct model `npm run models:fetch` places in models/. */
export const REAL_GGUF = { key: 'smollm2-q4_1' as const, model: 'SmolLM2-135M-Instruct', file: 'SmolLM2-135M-Instruct.Q4_1.gguf', vocabSize: 49152 };

/** Where a quantized file is cached and what its manifest must say to be reused. */
interface QuantizedManifest {
  source_gguf: string;
  source_bytes: number;
  source_generator_sha256: string;
  quantizer: string;
  quantizer_bytes: number;
  type: string;
  bytes: number;
}

/** The source of a quantized file: the f32 benchmark model it is made from. */
export interface QuantSource {
  /** Row label (the source model's name: the quantized rows differ from its f32 rows by dtype). */
  model: string;
  ggufPath: string;
  manifest: BenchModelManifest;
  vocabSize?: number;
}

/** Why the cached file cannot be reused (null: it can). */
export function staleReason(manifestPath: string, want: Omit<QuantizedManifest, 'bytes'>, outPath: string): string | null {
  if (!existsSync(manifestPath) || !existsSync(outPath)) return 'not made yet';
  let have: QuantizedManifest;
  try {
    have = JSON.parse(readFileSync(manifestPath, 'utf8')) as QuantizedManifest;
  } catch {
    return 'unreadable manifest';
  }
  for (const key of Object.keys(want) as (keyof typeof want)[]) {
    if (have[key] !== want[key]) return `${key} changed`;
  }
  if (statSync(outPath).size !== have.bytes) return 'file size differs from its manifest';
  return null;
}

/**
 * Makes (or reuses) benches/.work/quantized/<model>.<type>.gguf from the source's f32 GGUF with llama.cpp's
 * quantizer. Returns the file's path.
 */
export function ensureQuantizedFile(repoRoot: string, def: QuantizedModelDef, source: QuantSource, quantizer: string, threads: number): string {
  const dir = path.join(repoRoot, 'benches', '.work', 'quantized');
  const base = `${source.model}.${def.type}`;
  const outPath = path.join(dir, `${base}.gguf`);
  const manifestPath = path.join(dir, `${base}.json`);
  const want = {
    source_gguf: path.relative(repoRoot, source.ggufPath),
    source_bytes: statSync(source.ggufPath).size,
    source_generator_sha256: source.manifest.generator_sha256,
    quantizer,
    quantizer_bytes: statSync(quantizer).size,
    type: def.type,
  };
  const reason = staleReason(manifestPath, want, outPath);
  if (reason === null) return outPath;
  console.log(`bench: quantizing ${path.relative(repoRoot, source.ggufPath)} to ${def.type} with llama.cpp's quantizer (${reason})`);
  mkdirSync(dir, { recursive: true });
  const tmp = `${outPath}.tmp`;
  const res = spawnSync(quantizer, [source.ggufPath, tmp, def.type, String(threads)], { encoding: 'utf8', timeout: 10 * 60_000 });
  if (res.error || res.status !== 0) {
    rmSync(tmp, { force: true });
    throw new Error(`bench: ${path.basename(quantizer)} ${def.type} failed: ${res.error?.message ?? res.stderr.trim().split('\n').slice(-3).join(' | ')}`);
  }
  renameSync(tmp, outPath);
  writeFileSync(manifestPath, JSON.stringify({ ...want, bytes: statSync(outPath).size }, null, 2) + '\n');
  return outPath;
}

/** The row of a quantized file: phoenix loads the .gguf path (hfDir) llama.cpp loads (ggufPath). */
export function quantizedVariant(source: QuantSource, ggufPath: string, def: Pick<QuantizedModelDef, 'type' | 'kind'>): BenchVariant {
  return {
    model: source.model,
    dtype: def.type.toLowerCase(),
    hfDir: ggufPath,
    ggufPath,
    vocabSize: source.vocabSize,
    // Issue 11's WASM rows are Q8_0 (simd128); run.ts drops them where the WASM build cannot read the file.
    wasm: def.type === 'Q8_0',
    kind: def.kind,
    crossCheckIds: source.manifest.check_ids,
  };
}

/** The real SmolLM2 file's row, or why there is none (the file is not in models/). */
export function realGgufVariant(repoRoot: string): BenchVariant | string {
  const file = path.join(repoRoot, 'models', REAL_GGUF.file);
  if (!existsSync(file)) return `${path.relative(repoRoot, file)} not found (run \`npm run models:fetch\`)`;
  // Both engines get the file itself (models/ may hold a symlink to a shared copy).
  const real = realpathSync(file);
  return {
    model: REAL_GGUF.model,
    dtype: 'q4_1',
    hfDir: real,
    ggufPath: real,
    vocabSize: REAL_GGUF.vocabSize,
    wasm: false,
    kind: 'transformer',
    // No float64 reference for a real model: phoenix is checked against llama.cpp on seeded ids.
    crossCheckIds: promptIds(16, 99, REAL_GGUF.vocabSize),
  };
}

/** What the core reads from a GGUF header: llama.cpp's file type, tensors per stored type, weight bytes. */
export interface GgufFacts {
  quantization: string;
  tensorTypes: Record<string, number>;
  weightBytes: number;
  fileBytes: number;
}

/** The core's own summary of a GGUF file (describeModel), or why it is unavailable. */
export async function ggufFacts(file: string): Promise<GgufFacts | string> {
  try {
    const { binding } = await loadBinding({ backend: 'native' });
    const layout = await binding.describeModel(file);
    if (!layout.gguf) return `${file}: not described as GGUF`;
    const { quantization, tensorTypes, weightBytes, fileBytes } = layout.gguf;
    return { quantization, tensorTypes, weightBytes, fileBytes };
  } catch (error) {
    return (error as Error).message.split('\n')[0]!;
  }
}

/** "Q4_K_M: 72 Q4_K, 1 Q6_K, 24 F16, 145 F32 tensors, 88.1 MB of weights". */
export function formatGgufFacts(name: string, facts: GgufFacts | string): string {
  if (typeof facts === 'string') return `${name}: n/a (${facts})`;
  const types = Object.entries(facts.tensorTypes)
    .sort((a, b) => b[1] - a[1])
    .map(([t, n]) => `${n} ${t}`)
    .join(', ');
  return `${name}: ${facts.quantization}: ${types} tensors, ${(facts.weightBytes / 1e6).toFixed(1)} MB of weights`;
}
