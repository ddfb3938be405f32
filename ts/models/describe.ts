/**
 * What a model's files say about it (family, format, weight files, version) without loading weights,
 * from any file source: a folder on disk (ts/models/discovery.ts) or files in a browser
 * (ts/browser/models.ts). Imports no `node:` module. Every problem is a typed error naming the file.
 */
import { PhoenixError } from '../binding/errors.js';
import type { ModelFormat } from './metadata.js';

export const CONFIG_FILE = 'config.json';
export const TOKENIZER_FILE = 'tokenizer.json';
export const SHARD_INDEX_FILE = 'model.safetensors.index.json';
export const SAFETENSORS_FILE = 'model.safetensors';
export const PYTORCH_FILE = 'pytorch_model.bin';

/** Read access to one model's files, by their names inside the model folder. */
export interface ModelFileAccess {
  /** How to name `file` in messages (e.g. its full path or URL). */
  describe(file: string): string;
  /** How to name the whole model in messages. */
  readonly where: string;
  has(file: string): Promise<boolean>;
  /** The text of a file known to exist; a read failure is an `E_BAD_CONFIG` naming it. */
  readText(file: string): Promise<string>;
}

/** What a model's files say about it. */
export interface ModelDescription {
  modelType: string;
  format: ModelFormat;
  version: string;
  /** Weight file names relative to the model folder. */
  weightFiles: string[];
  /** The other files a load reads (config.json, tokenizer.json when present, the shard index): integrity covers them too. */
  sideFiles: string[];
  hasTokenizer: boolean;
}

/** Where JSON.parse stopped, without quoting the text (engines put a snippet of it in their message). */
function jsonErrorPosition(error: unknown): string {
  const position = /position (\d+)/.exec(error instanceof Error ? error.message : '')?.[1];
  return position === undefined ? '' : ` (at character ${position})`;
}

async function readJson(files: ModelFileAccess, name: string): Promise<unknown> {
  const file = files.describe(name);
  if (!(await files.has(name))) throw new PhoenixError('E_BAD_CONFIG', `${file} is missing`, { file });
  const text = await files.readText(name);
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new PhoenixError('E_BAD_CONFIG', `${file} is not valid JSON${jsonErrorPosition(error)}`, { file });
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

function configVersion(config: Record<string, unknown>): string | undefined {
  for (const key of ['version', 'model_version']) {
    const value = config[key];
    if (typeof value === 'string' && value.trim()) return value.trim();
    if (typeof value === 'number') return String(value);
  }
  return undefined;
}

async function shardFiles(files: ModelFileAccess): Promise<string[]> {
  const indexFile = files.describe(SHARD_INDEX_FILE);
  const index = (await readJson(files, SHARD_INDEX_FILE)) as { weight_map?: unknown } | null;
  const map = index?.weight_map;
  if (!map || typeof map !== 'object') {
    throw new PhoenixError('E_BAD_CONFIG', `${indexFile} has no "weight_map" object`, { file: indexFile, field: 'weight_map' });
  }
  const shards = [...new Set(Object.values(map as Record<string, unknown>).map(String))].sort();
  for (const shard of shards) {
    if (shard.includes('/') || shard.includes('\\') || shard.startsWith('.')) {
      throw new PhoenixError('E_BAD_CONFIG', `${indexFile} lists shard ${JSON.stringify(shard)} outside the model folder`, { file: indexFile });
    }
    if (!(await files.has(shard))) {
      throw new PhoenixError('E_BAD_WEIGHTS', `${files.describe(shard)} (listed in ${SHARD_INDEX_FILE}) is missing`, { file: shard });
    }
  }
  if (shards.length === 0) throw new PhoenixError('E_BAD_CONFIG', `${indexFile} lists no shards`, { file: indexFile });
  return shards;
}

/**
 * Describes the model in `files`. `fallbackVersion` is asked when config.json names no version
 * (the folder reader looks at README.md); the default is `"1"`.
 * @throws `E_BAD_CONFIG` (config.json missing or malformed), `E_BAD_WEIGHTS` (no weight file, missing shard).
 */
export async function describeModel(files: ModelFileAccess, fallbackVersion?: () => Promise<string | undefined>): Promise<ModelDescription> {
  const configFile = files.describe(CONFIG_FILE);
  const config = await readJson(files, CONFIG_FILE);
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw new PhoenixError('E_BAD_CONFIG', `${configFile} must contain a JSON object`, { file: configFile });
  }
  const record = config as Record<string, unknown>;
  const modelType = modelTypeOf(record, configFile);
  let format: ModelFormat;
  let weightFiles: string[];
  // The core's detection order (crates/core/src/loader.rs WEIGHT_CONTAINERS).
  if (await files.has(SHARD_INDEX_FILE)) {
    format = 'hf-safetensors-sharded';
    weightFiles = await shardFiles(files);
  } else if (await files.has(SAFETENSORS_FILE)) {
    format = 'hf-safetensors';
    weightFiles = [SAFETENSORS_FILE];
  } else if (await files.has(PYTORCH_FILE)) {
    format = 'state-spaces-pth';
    weightFiles = [PYTORCH_FILE];
  } else {
    throw new PhoenixError(
      'E_BAD_WEIGHTS',
      `${files.where} has no weight file (${SAFETENSORS_FILE}, ${SHARD_INDEX_FILE} or ${PYTORCH_FILE})`,
      { path: files.where },
    );
  }
  const version = configVersion(record) ?? (await fallbackVersion?.()) ?? '1';
  const hasTokenizer = await files.has(TOKENIZER_FILE);
  const sideFiles = [CONFIG_FILE, ...(hasTokenizer ? [TOKENIZER_FILE] : []), ...(format === 'hf-safetensors-sharded' ? [SHARD_INDEX_FILE] : [])];
  return { modelType, format, version, weightFiles, sideFiles, hasTokenizer };
}

/**
 * The checksum of a set of weight files: the file's own sha256 when there is one file, otherwise the
 * sha256 (by `hashText`) of a `sha256sum`-style listing (`<hex>  <name>\n`, sorted by name).
 */
export function combineChecksums<T extends string | Promise<string>>(
  files: readonly { name: string; sha256: string }[],
  hashText: (text: string) => T,
): string | T {
  if (files.length === 1) return (files[0] as { sha256: string }).sha256;
  const listing = [...files]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((f) => `${f.sha256}  ${f.name}\n`)
    .join('');
  return hashText(listing);
}
