/**
 * The arithmetic a prompt token costs: 2 FLOPs (one multiply-add) per weight-matrix element it is
 * multiplied by. Counted from the shapes in the model's own safetensors headers (the files the core says
 * a load reads) or, for a model given as GGUF only, its tensor infos, so every family and the project's
 * default model are counted the same way:
 * - a weight matrix is a rank-2 tensor named `*.weight` (projections, MLPs, x_proj/dt_proj), but not a
 *   conv or norm weight (GGUF stores the depthwise conv and Mamba-2's grouped norm as rank 2);
 * - the token embedding is a table lookup, not a product, and the LM head multiplies only the last
 *   prompt token, so both are left out (a tied head is the embedding itself: counted once, as a lookup);
 * - left out too: the scan / SSM state update, the depthwise conv, norms, and attention's score and
 *   value products (transformer and hybrid rows), which grow with position. The count is therefore a
 *   lower bound of the work a prefill does, and a share of the FMA peak built on it a lower bound too.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';

import { loadBinding } from '../../ts/index.js';
import { openRegularFile, readRange } from '../../ts/fs/regular-file.js';

/** One tensor as a safetensors header declares it. */
export interface TensorShape {
  name: string;
  shape: number[];
}

/** What a model's prompt tokens cost in matrix products. */
export interface MatmulCount {
  /** Elements of the weight matrices a prompt token is multiplied by. */
  matmul_params: number;
  /** 2 x matmul_params. */
  flops_per_token: number;
  /** Tensors named as the embedding / LM head and left out. */
  excluded: string[];
}

/** safetensors' own cap on the JSON header (its reference implementation refuses larger ones). */
const MAX_HEADER_BYTES = 100_000_000;

/** Token tables: the input embedding (a lookup) and the LM head (last prompt token only); HF and GGUF names. */
const TOKEN_TABLE = /(^|\.)(embed_tokens|embeddings|embedding|embed_in|embed_out|wte|word_embeddings|lm_head)\.weight$|^(token_embd|output)\.weight$/;
/** Rank-2 weights that are not matrix products: GGUF's squeezed depthwise conv and grouped norms. */
const NOT_A_PRODUCT = /conv|norm/;

/** Parses a safetensors JSON header (the bytes after its 8-byte length) into tensor shapes. */
export function parseSafetensorsHeader(json: string, file = 'safetensors header'): TensorShape[] {
  let header: unknown;
  try {
    header = JSON.parse(json);
  } catch {
    throw new Error(`${file}: the header is not JSON`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw new Error(`${file}: the header is not a JSON object`);
  const tensors: TensorShape[] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const shape = (entry as { shape?: unknown })?.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
      throw new Error(`${file}: tensor ${JSON.stringify(name)} has no valid shape`);
    }
    tensors.push({ name, shape: shape as number[] });
  }
  return tensors;
}

/** Counts the weight-matrix elements a prompt token is multiplied by (see the module comment). */
export function countMatmul(tensors: readonly TensorShape[]): MatmulCount {
  let params = 0;
  const excluded: string[] = [];
  for (const t of tensors) {
    if (t.shape.length !== 2 || !t.name.endsWith('.weight') || NOT_A_PRODUCT.test(t.name)) continue;
    if (TOKEN_TABLE.test(t.name)) {
      excluded.push(t.name);
      continue;
    }
    params += t.shape[0]! * t.shape[1]!;
    if (!Number.isSafeInteger(params)) throw new Error('weight matrices: element count overflows');
  }
  return { matmul_params: params, flops_per_token: 2 * params, excluded };
}

/** The tensor shapes of one safetensors file: 8-byte little-endian header length, then the JSON header. */
export async function readSafetensorsShapes(file: string): Promise<TensorShape[]> {
  const { handle, stats } = await openRegularFile(file);
  try {
    const prefix = await readRange(handle, 0, 8);
    if (prefix.length < 8) throw new Error(`${file}: shorter than a safetensors header`);
    const length = prefix.readBigUInt64LE(0);
    if (length > BigInt(Math.min(MAX_HEADER_BYTES, stats.size - 8))) throw new Error(`${file}: header length ${length} exceeds the file or safetensors' limit`);
    const json = await readRange(handle, 8, Number(length));
    if (json.length !== Number(length)) throw new Error(`${file}: header cut short`);
    return parseSafetensorsHeader(json.toString('utf8'), file);
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/** The tensor shapes of a GGUF file (node-llama-cpp's reader: the header only, no tensor data). */
export async function readGgufShapes(file: string): Promise<TensorShape[]> {
  const { readGgufFileInfo } = await import('node-llama-cpp');
  const info = await readGgufFileInfo(file, { sourceType: 'filesystem', logWarnings: false, spliceSplitFiles: false });
  return (info.tensorInfo ?? []).map((t) => ({ name: t.name, shape: t.dimensions.map(Number) }));
}

/**
 * The weight files of a Hugging Face folder: the ones the core says a load reads, or, when the core does
 * not run the family (llama.cpp-only rows) or no addon is built, the bench generators' single file.
 */
async function safetensorsFiles(hfDir: string): Promise<string[]> {
  try {
    const { binding } = await loadBinding({ backend: 'native' });
    const layout = await binding.describeModel(hfDir);
    if (!layout.format.includes('safetensors')) throw new Error(`weights are ${layout.format}, not safetensors`);
    return layout.weightFiles.map((f) => path.join(hfDir, f));
  } catch (error) {
    const single = path.join(hfDir, 'model.safetensors');
    if (existsSync(single)) return [single];
    throw error;
  }
}

async function shapesOf(hfDir: string, ggufPath: string | undefined): Promise<TensorShape[]> {
  try {
    const tensors: TensorShape[] = [];
    for (const file of await safetensorsFiles(hfDir)) tensors.push(...(await readSafetensorsShapes(file)));
    return tensors;
  } catch (error) {
    if (ggufPath && existsSync(ggufPath)) return readGgufShapes(ggufPath);
    throw error;
  }
}

/**
 * The matmul count of a model (its Hugging Face folder, else the same weights' GGUF), or why it is unknown
 * (the row's FLOP columns are then n/a).
 */
export async function modelMatmulCount(hfDir: string, ggufPath?: string): Promise<MatmulCount | string> {
  try {
    const count = countMatmul(await shapesOf(hfDir, ggufPath));
    if (count.matmul_params === 0) return `${hfDir}: no weight matrices found`;
    return count;
  } catch (error) {
    return (error as Error).message.split('\n')[0]!;
  }
}
