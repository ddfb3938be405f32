/**
 * Reads what a model folder is (family, format, weight files, version) without loading weights.
 * Every problem is a typed error naming the file at fault.
 */
import { readFile, readdir, stat } from 'node:fs/promises';
import path from 'node:path';

import { PhoenixError } from '../binding/errors.js';
import type { ModelFormat } from './metadata.js';

/** What a folder's files say about the model in it. */
export interface FolderDescription {
  modelType: string;
  format: ModelFormat;
  version: string;
  /** Weight file names relative to the folder. */
  weightFiles: string[];
  hasTokenizer: boolean;
}

const SHARD_INDEX = 'model.safetensors.index.json';
const SAFETENSORS = 'model.safetensors';
const PYTORCH = 'pytorch_model.bin';

async function readJson(file: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new PhoenixError('E_BAD_CONFIG', `${file} is missing`, { file });
    throw new PhoenixError('E_BAD_CONFIG', `${file} cannot be read (${code ?? String(error)})`, { file });
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new PhoenixError('E_BAD_CONFIG', `${file} is not valid JSON: ${(error as Error).message}`, { file });
  }
}

async function listFolder(dir: string): Promise<Set<string>> {
  let info;
  try {
    info = await stat(dir);
  } catch {
    throw new PhoenixError('E_MODEL_NOT_FOUND', `model folder ${dir} does not exist`, { path: dir });
  }
  if (!info.isDirectory()) throw new PhoenixError('E_MODEL_NOT_FOUND', `${dir} is not a folder`, { path: dir });
  try {
    return new Set(await readdir(dir));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new PhoenixError('E_MODEL_NOT_FOUND', `model folder ${dir} cannot be read (${code})`, { path: dir });
  }
}

function modelTypeOf(config: Record<string, unknown>, file: string): string {
  if (typeof config.model_type === 'string' && config.model_type.length > 0) return config.model_type;
  // The original state-spaces layout (`d_model`, `n_layer`, `ssm_cfg`) is always Mamba.
  if (typeof config.d_model === 'number' && typeof config.n_layer === 'number') return 'mamba';
  throw new PhoenixError('E_BAD_CONFIG', `${file} has no "model_type" field (and is not a state-spaces config with d_model/n_layer)`, {
    file,
    field: 'model_type',
  });
}

async function versionOf(dir: string, files: Set<string>, config: Record<string, unknown>): Promise<string> {
  for (const key of ['version', 'model_version']) {
    const value = config[key];
    if (typeof value === 'string' && value.trim()) return value.trim();
    if (typeof value === 'number') return String(value);
  }
  if (files.has('README.md')) {
    const readme = await readFile(path.join(dir, 'README.md'), 'utf8').catch(() => '');
    const match = /^[\s*_-]*version[*_]*\s*[:=]\s*`?v?([0-9][\w.+-]*)/im.exec(readme);
    if (match?.[1]) return match[1];
  }
  return '1';
}

async function shardFiles(dir: string, files: Set<string>): Promise<string[]> {
  const indexFile = path.join(dir, SHARD_INDEX);
  const index = (await readJson(indexFile)) as { weight_map?: unknown } | null;
  const map = index?.weight_map;
  if (!map || typeof map !== 'object') {
    throw new PhoenixError('E_BAD_CONFIG', `${indexFile} has no "weight_map" object`, { file: indexFile, field: 'weight_map' });
  }
  const shards = [...new Set(Object.values(map as Record<string, unknown>).map(String))].sort();
  for (const shard of shards) {
    if (shard.includes('/') || shard.includes('\\') || shard.startsWith('.')) {
      throw new PhoenixError('E_BAD_CONFIG', `${indexFile} lists shard ${JSON.stringify(shard)} outside the model folder`, { file: indexFile });
    }
    if (!files.has(shard)) throw new PhoenixError('E_BAD_WEIGHTS', `${path.join(dir, shard)} (listed in ${SHARD_INDEX}) is missing`, { file: shard });
  }
  if (shards.length === 0) throw new PhoenixError('E_BAD_CONFIG', `${indexFile} lists no shards`, { file: indexFile });
  return shards;
}

/**
 * Describes the model folder `dir`.
 * @throws `E_MODEL_NOT_FOUND` (no such / unreadable folder), `E_BAD_CONFIG` (config.json missing or
 * malformed), `E_BAD_WEIGHTS` (no weight file, missing shard).
 */
export async function describeFolder(dir: string): Promise<FolderDescription> {
  const files = await listFolder(dir);
  const configFile = path.join(dir, 'config.json');
  const config = await readJson(configFile);
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw new PhoenixError('E_BAD_CONFIG', `${configFile} must contain a JSON object`, { file: configFile });
  }
  const record = config as Record<string, unknown>;
  const modelType = modelTypeOf(record, configFile);
  let format: ModelFormat;
  let weightFiles: string[];
  if (files.has(SHARD_INDEX)) {
    format = 'hf-safetensors-sharded';
    weightFiles = await shardFiles(dir, files);
  } else if (files.has(SAFETENSORS)) {
    format = 'hf-safetensors';
    weightFiles = [SAFETENSORS];
  } else if (files.has(PYTORCH)) {
    format = 'state-spaces-pth';
    weightFiles = [PYTORCH];
  } else {
    throw new PhoenixError('E_BAD_WEIGHTS', `${dir} has no weight file (${SAFETENSORS}, ${SHARD_INDEX} or ${PYTORCH})`, { path: dir });
  }
  return { modelType, format, version: await versionOf(dir, files, record), weightFiles, hasTokenizer: files.has('tokenizer.json') };
}
