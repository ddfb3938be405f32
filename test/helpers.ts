/**
 * Shared test helpers: paths of the real models and fixtures, temp dirs, and builders of broken model
 * folders (derived from the real fixtures, byte for byte, then damaged in one specific way).
 */
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { defaultNativePath, defaultWasmPath } from '../ts/binding/load.js';
import type { BackendKind } from '../ts/binding/types.js';
import { PhoenixError, toPhoenixError, type ErrorCode } from '../ts/binding/errors.js';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const MODELS_DIR = path.join(ROOT, 'models');
export const LITE = path.join(MODELS_DIR, 'phoenix-ssm-lite');
export const TINY = path.join(ROOT, 'test/fixtures/mamba1-tiny');
export const TINY_ORIGINAL = path.join(ROOT, 'test/fixtures/mamba1-tiny-original');
/** A WASM glue path that does not exist: for tests about a backend that cannot load. */
export const NO_WASM = '/nonexistent/phoenix-local.js';

/** Whether `npm run build:wasm` has been run in this checkout. */
export const WASM_BUILT = existsSync(defaultWasmPath());
/** PHOENIX_REQUIRE_WASM=1 (CI): a missing WASM build fails the WASM tests instead of skipping them. */
export const WASM_REQUIRED = process.env.PHOENIX_REQUIRE_WASM === '1';
/** Backends the binding-generic suites run on: native always, WASM when built (or required). */
export const TEST_BACKENDS: BackendKind[] = WASM_BUILT || WASM_REQUIRED ? ['native', 'wasm'] : ['native'];

/** Fails loudly (not a skip) when `backend`'s build is missing. */
export function requireBackend(backend: BackendKind): void {
  if (backend === 'native') return requireNativeAddon();
  if (!WASM_BUILT) throw new Error(`no WASM build at ${defaultWasmPath()}: run \`npm run build:wasm\``);
}

/** Fails loudly (not a skip) when the native addon has not been built. */
export function requireNativeAddon(): void {
  if (!existsSync(defaultNativePath())) {
    throw new Error(`native addon missing at ${defaultNativePath()}: run \`npm run build:native\` before \`npm run test:ts\``);
  }
}

export async function readJson<T>(file: string): Promise<T> {
  return JSON.parse(await readFile(file, 'utf8')) as T;
}

export interface LiteReference {
  prompt: string;
  input_ids: number[];
  vocab_size: number;
  logits: number[][];
  greedy_new_ids: number[];
  greedy_top1_top2_margin: number[];
  greedy_text: string;
}

export interface TinyReference {
  prompt: string;
  input_ids: number[];
  logits: number[][];
  greedy: { new_ids: number[]; top1_top2_margin: number[]; text: string };
}

/** Greedy ids that float32 must reproduce: up to the first step whose top1-top2 margin is ≤ 1e-3. */
export function reliableGreedyPrefix(ids: number[], margins: number[]): number[] {
  const cut = margins.findIndex((m) => m <= 1e-3);
  return cut < 0 ? ids : ids.slice(0, cut);
}

/** A fresh temp dir under the OS temp dir (world-traversable, for tests that drop privileges). */
export async function tempDir(prefix = 'phoenix-test-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Copies a model folder. */
export async function copyModel(from: string, to: string): Promise<string> {
  await cp(from, to, { recursive: true });
  return to;
}

/**
 * A temp folder holding `models/` with a copy of each model folder given (`{ name: source }`).
 * `cleanup()` removes the whole temp folder.
 */
export async function tempModelsDir(copies: Record<string, string>): Promise<{ dir: string; modelsDir: string; cleanup: () => Promise<void> }> {
  const scratch = await tempDir();
  const modelsDir = path.join(scratch.dir, 'models');
  await mkdir(modelsDir);
  for (const [name, source] of Object.entries(copies)) await copyModel(source, path.join(modelsDir, name));
  return { ...scratch, modelsDir };
}

/** Asserts `promise` rejects with a PhoenixError of `code`; returns it. */
export async function expectCode(promise: Promise<unknown> | (() => unknown), code: ErrorCode): Promise<PhoenixError> {
  let error: unknown;
  try {
    await (typeof promise === 'function' ? promise() : promise);
  } catch (e) {
    error = e;
  }
  if (!(error instanceof PhoenixError)) throw new Error(`expected PhoenixError ${code}, got ${error === undefined ? 'no error' : String(error)}`);
  if (error.code !== code) throw new Error(`expected ${code}, got ${error.code}: ${error.message}`);
  return error;
}

// ── safetensors surgery ─────────────────────────────────────────────────────

export interface TensorEntry {
  dtype: string;
  shape: number[];
  data: Buffer;
}

/** Reads a safetensors file into its tensors (and `__metadata__`). */
export async function readSafetensors(file: string): Promise<{ tensors: Map<string, TensorEntry>; metadata?: Record<string, string> }> {
  const bytes = await readFile(file);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, unknown>;
  const base = 8 + headerLength;
  const tensors = new Map<string, TensorEntry>();
  let metadata: Record<string, string> | undefined;
  for (const [name, value] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = value as Record<string, string>;
      continue;
    }
    const { dtype, shape, data_offsets } = value as { dtype: string; shape: number[]; data_offsets: [number, number] };
    tensors.set(name, { dtype, shape, data: Buffer.from(bytes.subarray(base + data_offsets[0], base + data_offsets[1])) });
  }
  return { tensors, metadata };
}

/** Writes tensors as a valid safetensors file (contiguous offsets, 8-byte aligned header). */
export async function writeSafetensors(file: string, tensors: Map<string, TensorEntry>, metadata?: Record<string, string>): Promise<void> {
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  let offset = 0;
  for (const [name, t] of tensors) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.length] };
    offset += t.data.length;
  }
  let json = JSON.stringify(header);
  while ((8 + Buffer.byteLength(json)) % 8 !== 0) json += ' ';
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  await writeFile(file, Buffer.concat([length, Buffer.from(json), ...[...tensors.values()].map((t) => t.data)]));
}

/** Builds a copy of mamba1-tiny in `dir/name` damaged by `damage`. */
export async function brokenTiny(dir: string, name: string, damage: (folder: string) => Promise<void>): Promise<string> {
  const folder = await copyModel(TINY, path.join(dir, name));
  await damage(folder);
  return folder;
}

/** A fixed set of damaged model folders and the error code loading each must give. */
export const DAMAGES: { name: string; code: ErrorCode; damage: (folder: string) => Promise<void> }[] = [
  {
    name: 'malformed-config',
    code: 'E_BAD_CONFIG',
    damage: async (f) => writeFile(path.join(f, 'config.json'), '{ "model_type": "mamba", "hidden_size": 64,'),
  },
  {
    // The core's code for a missing config.json (crates/core/tests/integration/bad_models.rs); the manager now
    // reports what the core's describe says instead of a rule of its own.
    name: 'missing-config',
    code: 'E_MODEL_NOT_FOUND',
    damage: async (f) => rm(path.join(f, 'config.json')),
  },
  {
    name: 'unknown-model-type',
    code: 'E_UNSUPPORTED_MODEL',
    damage: async (f) => {
      const config = await readJson<Record<string, unknown>>(path.join(f, 'config.json'));
      await writeFile(path.join(f, 'config.json'), JSON.stringify({ ...config, model_type: 'quantum_lstm' }));
    },
  },
  {
    name: 'truncated-safetensors',
    code: 'E_BAD_WEIGHTS',
    damage: async (f) => {
      const file = path.join(f, 'model.safetensors');
      const bytes = await readFile(file);
      await writeFile(file, bytes.subarray(0, Math.floor(bytes.length / 2)));
    },
  },
  {
    name: 'missing-tensor',
    code: 'E_BAD_WEIGHTS',
    damage: async (f) => {
      const file = path.join(f, 'model.safetensors');
      const { tensors, metadata } = await readSafetensors(file);
      if (!tensors.delete('backbone.layers.1.mixer.x_proj.weight')) throw new Error('fixture lacks the tensor to delete');
      await writeSafetensors(file, tensors, metadata);
    },
  },
  {
    name: 'wrong-tensor-shape',
    code: 'E_BAD_WEIGHTS',
    damage: async (f) => {
      const file = path.join(f, 'model.safetensors');
      const { tensors, metadata } = await readSafetensors(file);
      const norm = tensors.get('backbone.norm_f.weight');
      if (!norm) throw new Error('fixture lacks backbone.norm_f.weight');
      // 64 → 32 values: a valid file whose tensor disagrees with hidden_size 64.
      tensors.set('backbone.norm_f.weight', { dtype: norm.dtype, shape: [32], data: norm.data.subarray(0, norm.data.length / 2) });
      await writeSafetensors(file, tensors, metadata);
    },
  },
  {
    // As the core says (and errors.ts documents: a missing weight file is E_MODEL_NOT_FOUND).
    name: 'no-weights',
    code: 'E_MODEL_NOT_FOUND',
    damage: async (f) => rm(path.join(f, 'model.safetensors')),
  },
];

/** A raw binding call's failure as a PhoenixError (what the TS wrapper would throw); fails when it succeeds. */
export async function rawFailure(fn: () => unknown): Promise<PhoenixError> {
  try {
    await fn();
  } catch (error) {
    return toPhoenixError(error);
  }
  throw new Error('expected the call to fail');
}

export { PhoenixError };

/** Fails (instead of hanging the suite) when `work` has not settled after `ms`. */
export async function settlesWithin<T>(ms: number, work: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not settled after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}
