/**
 * What phoenix-local knows about a local model folder before and after loading it.
 */
import type { RawEngineKind, RawGgufSummary, RawModelSource } from '../binding/types.js';

/**
 * On-disk layout of a model folder as the core names it: config dialect + weight container, e.g.
 * `hf-safetensors`, `hf-safetensors-sharded`, `hf-pth`, `state-spaces-pth` (the core's list is the
 * only one; see `describeModel` of the binding).
 */
export type ModelFormat = string;

/**
 * Lifecycle of a model in a {@link LocalModelManager}:
 * - `available` – found on disk, checksum consistent, not loaded;
 * - `loading` – a load is in progress;
 * - `loaded` – in memory;
 * - `error` – the folder cannot be used (see `error`);
 * - `corrupted` – weight files (or config.json, tokenizer.json, the shard index) changed since their
 *   checksum was recorded (loading throws `E_CHECKSUM`).
 */
export type ModelStatus = 'available' | 'loading' | 'loaded' | 'error' | 'corrupted';

/** Speed of a model measured on this machine right after its first load. */
export interface PerformanceProfile {
  /** Wall time of the load, in milliseconds. */
  loadMs: number;
  /** Prompt tokens per second during the probe's prefill. */
  prefillTokensPerSecond: number;
  /** Generated tokens per second during the probe's decode. */
  decodeTokensPerSecond: number;
  /** Tokens used by the probe (prompt, generated). */
  probePromptTokens: number;
  probeGeneratedTokens: number;
  /** ISO time of the measurement. */
  measuredAt: string;
  /** Backend that ran the probe (`native` / `wasm`). */
  backend?: string;
}

/** One weight file and its digest. */
export interface WeightFileInfo {
  /** File name relative to the model folder. */
  name: string;
  sizeBytes: number;
  mtimeMs: number;
  /**
   * Change time and inode at hashing time (on disk only). With size and mtime they tell whether the
   * file may have changed: `touch` can restore an mtime, not a ctime, and a replaced file has a new inode.
   */
  ctimeMs?: number;
  ino?: number;
  /** Hex sha256 of the file's bytes. */
  sha256: string;
}

/** Everything known about one local model. */
export interface ModelMetadata {
  /** Folder name (the model's id inside its models dir), or the folder's base name for explicit paths. */
  name: string;
  /** From `config.json` (`version` / `_name_or_path` revision) or the README; `"1"` when none is given. */
  version: string;
  /** `model_type` of `config.json` (`mamba`, `falcon_mamba`, …); `mamba` for the state-spaces layout. */
  modelType: string;
  /** On-disk layout, as the core names it; `unknown` when the folder could not be inspected (status `error`). */
  format: ModelFormat | 'unknown';
  /** The core family that loads it (e.g. `mamba`); absent when the folder could not be inspected. */
  family?: string;
  /**
   * Which kind of engine runs it (`ssm`, `transformer`, `hybrid`), as the core reports: engines accept
   * models by it. Absent when the folder could not be inspected.
   */
  engine?: RawEngineKind;
  /** Absolute path of the model folder (in a browser: the base URL or a display name of the files). */
  path: string;
  /**
   * Where the engine reads the files from when not a local folder: a base URL, in-memory files or a
   * reader (browser). Engines load `source ?? path`.
   */
  source?: RawModelSource;
  /** Total bytes of the weight files. */
  sizeBytes: number;
  /**
   * Hex sha256 identifying the weights: the file's sha256 for a single weight file; for several, the
   * sha256 of their `sha256sum`-style listing (`<hex>  <name>\n`, sorted by name).
   */
  checksum: string;
  /** The checksum recorded in the manifest when it differs from `checksum` (status `corrupted`). */
  expectedChecksum?: string;
  weightFiles: WeightFileInfo[];
  /**
   * The other files a load reads (config.json, tokenizer.json, the shard index) with their digests:
   * a change to one of them also makes the model `corrupted` (on disk only).
   */
  sideFiles?: WeightFileInfo[];
  status: ModelStatus;
  /** Why the status is `error` / `corrupted`. */
  error?: { code: string; message: string };
  /** Whether `tokenizer.json` exists (text prompts need it). */
  hasTokenizer: boolean;
  /** Measured after the first load on this machine, when available. */
  performance?: PerformanceProfile;
  /** For a `.gguf` model: what its header says (architecture, quantization, sizes, context length). */
  gguf?: RawGgufSummary;
}
