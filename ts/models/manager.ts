/**
 * LocalModelManager: the single source of truth for local models — discovery, metadata, checksums,
 * loading through registered engines, caching, and unloading past a memory budget.
 */
import { realpath, readdir, stat } from 'node:fs/promises';
import path from 'node:path';

import { PhoenixError, toPhoenixError } from '../binding/errors.js';
import type { InferenceEngine, LoadedModel } from '../engines/types.js';
import { combineChecksums, sha256File } from './checksum.js';
import { describeFolder } from './discovery.js';
import { Manifest, MANIFEST_FILE_NAME, type ManifestEntry } from './manifest.js';
import type { ModelMetadata, ModelStatus, PerformanceProfile, WeightFileInfo } from './metadata.js';
import { resolveModelFolder } from './names.js';

/** Progress of a long step, for UIs and the CLI. */
export type ModelProgressEvent =
  | { kind: 'checksum'; model: string; file: string; bytesDone: number; bytesTotal: number }
  | { kind: 'load-start'; model: string; engine: string }
  | { kind: 'load-done'; model: string; loadMs: number }
  | { kind: 'probe-done'; model: string; profile: PerformanceProfile }
  | { kind: 'unload'; model: string; reason: 'request' | 'memory-budget' | 'dispose' };

/** Options of {@link LocalModelManager}. */
export interface LocalModelManagerOptions {
  /** Folder with one sub-folder per model. Default: `PHOENIX_MODELS_DIR`, else `models/` under the cwd. */
  modelsDir?: string;
  /** Manifest file. Default `<modelsDir>/.phoenix-manifest.json`. */
  manifestPath?: string;
  /** Bytes of weights that may stay loaded; least-recently-used models beyond it are unloaded. Default: unlimited. */
  memoryBudgetBytes?: number;
  /** Engines to register right away (more via {@link LocalModelManager.registerEngine}). */
  engines?: InferenceEngine[];
  /** Measure a performance profile after a model's first load on this machine (default true). */
  measurePerformance?: boolean;
  /** Called during long steps (checksumming, loading). */
  onProgress?: (event: ModelProgressEvent) => void;
}

/** Filters of {@link LocalModelManager.getFallbackModel}. */
export interface FallbackOptions {
  /** Model names to skip (e.g. the one that failed). */
  exclude?: string | readonly string[];
  /** Largest acceptable weight size in bytes. */
  maxSizeBytes?: number;
  /** Only models with a tokenizer (for text prompts). */
  requireTokenizer?: boolean;
}

/** A model held for the duration of some work; `release()` lets the LRU policy unload it again. */
export interface ModelLease {
  readonly model: LoadedModel;
  release(): void;
}

interface ModelRecord {
  folder: string;
  name: string;
  loaded?: LoadedModel;
  loading?: Promise<LoadedModel>;
  lastUsed: number;
  leases: number;
  loadError?: PhoenixError;
}

/** The default models dir: `PHOENIX_MODELS_DIR`, else `<cwd>/models`. */
export function defaultModelsDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(env.PHOENIX_MODELS_DIR || 'models');
}

/**
 * Finds, describes, verifies, loads and unloads local models.
 *
 * @example
 * ```ts
 * const manager = new LocalModelManager({ engines: [new MambaSSMEngine()] });
 * for (const m of await manager.listModels()) console.log(m.name, m.status, m.sizeBytes);
 * const model = await manager.loadModel('phoenix-ssm-lite');
 * ```
 */
export class LocalModelManager {
  /** Absolute path of the models dir. */
  readonly modelsDir: string;
  readonly #engines: InferenceEngine[] = [];
  readonly #records = new Map<string, ModelRecord>();
  readonly #manifest: Promise<Manifest>;
  readonly #budget: number;
  readonly #measure: boolean;
  readonly #onProgress: ((event: ModelProgressEvent) => void) | undefined;
  /** Monotonic use counter for LRU order (timestamps can tie). */
  #clock = 0;

  constructor(options: LocalModelManagerOptions = {}) {
    this.modelsDir = path.resolve(options.modelsDir ?? defaultModelsDir());
    const budget = options.memoryBudgetBytes ?? Number.POSITIVE_INFINITY;
    if (typeof budget !== 'number' || Number.isNaN(budget) || budget < 0) {
      throw new PhoenixError('E_INVALID_OPTION', `option memoryBudgetBytes must be a number ≥ 0, got ${String(budget)}`, { option: 'memoryBudgetBytes' });
    }
    this.#budget = budget;
    this.#measure = options.measurePerformance ?? true;
    this.#onProgress = options.onProgress;
    this.#manifest = Manifest.open(options.manifestPath ?? path.join(this.modelsDir, MANIFEST_FILE_NAME));
    for (const engine of options.engines ?? []) this.registerEngine(engine);
  }

  /** Adds an engine; the first registered engine whose `canLoad` accepts a model loads it. */
  registerEngine(engine: InferenceEngine): void {
    if (!this.#engines.includes(engine)) this.#engines.push(engine);
  }

  /** Registered engines, in the order they are asked. */
  get engines(): readonly InferenceEngine[] {
    return this.#engines;
  }

  /** The configured memory budget in bytes (`Infinity` = none). */
  get memoryBudgetBytes(): number {
    return this.#budget;
  }

  /** Set when the manifest cannot be read or written (checksums then live in memory only). */
  async manifestStatus(): Promise<{ file: string; persistent: boolean; warning?: string }> {
    const manifest = await this.#manifest;
    const warning = manifest.warning;
    return { file: manifest.file, persistent: manifest.persistent, ...(warning ? { warning } : {}) };
  }

  /** Every model folder in the models dir (hidden entries skipped), sorted by name. Broken folders have status `error`. */
  async listModels(): Promise<ModelMetadata[]> {
    let entries;
    try {
      entries = await readdir(this.modelsDir, { withFileTypes: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new PhoenixError('E_MODEL_NOT_FOUND', `models dir ${this.modelsDir} cannot be read (${(error as NodeJS.ErrnoException).code})`, {
        path: this.modelsDir,
      });
    }
    const names = entries
      .filter((e) => !e.name.startsWith('.') && (e.isDirectory() || e.isSymbolicLink()))
      .map((e) => e.name)
      .sort();
    const result: ModelMetadata[] = [];
    for (const name of names) {
      let folder: string;
      try {
        folder = await resolveModelFolder(this.modelsDir, name);
      } catch {
        continue; // symlinks escaping the models dir are not models of this dir
      }
      if (!(await stat(folder).then((s) => s.isDirectory(), () => false))) continue;
      result.push(await this.#describe(name, folder));
    }
    return result;
  }

  /**
   * Metadata of the model named `name` (a folder in the models dir). A folder that exists but cannot be
   * used is returned with status `error` (see `error`).
   * @throws `E_INVALID_OPTION` (name leaves the models dir), `E_MODEL_NOT_FOUND`.
   */
  async getModelMetadata(name: string): Promise<ModelMetadata> {
    const folder = await resolveModelFolder(this.modelsDir, name);
    return this.#describe(name, folder);
  }

  /** Metadata of the model folder at `folderPath` (any location; the name is the folder's base name). */
  async getModelMetadataAt(folderPath: string): Promise<ModelMetadata> {
    const folder = path.resolve(folderPath);
    return this.#describe(path.basename(folder), folder);
  }

  /**
   * Loads the model named `name` (cached: a loaded model is returned as is; concurrent calls share one
   * load). May unload least-recently-used models to stay within the memory budget.
   * @throws `E_INVALID_OPTION`, `E_MODEL_NOT_FOUND`, `E_BAD_CONFIG`, `E_BAD_WEIGHTS`, `E_UNSUPPORTED_MODEL`,
   * `E_CHECKSUM` (weights changed since their checksum was recorded; see {@link acceptChecksum}), …
   */
  async loadModel(name: string): Promise<LoadedModel> {
    const folder = await canonical(await resolveModelFolder(this.modelsDir, name));
    return this.#load(name, folder);
  }

  /** Loads the model folder at `folderPath` (outside or inside the models dir). */
  async loadModelAt(folderPath: string): Promise<LoadedModel> {
    const folder = await canonical(path.resolve(folderPath));
    return this.#load(path.basename(path.resolve(folderPath)), folder);
  }

  /**
   * Loads `name` and holds it until `release()`, so the memory budget never unloads it mid-use.
   */
  async acquireModel(name: string): Promise<ModelLease> {
    const folder = await canonical(await resolveModelFolder(this.modelsDir, name));
    const record = this.#record(name, folder);
    record.leases++;
    try {
      const model = await this.#load(name, folder);
      let released = false;
      return {
        model,
        release: () => {
          if (released) return;
          released = true;
          record.leases--;
          record.lastUsed = ++this.#clock;
          this.#enforceBudget();
        },
      };
    } catch (error) {
      record.leases--;
      throw error;
    }
  }

  /** Frees a loaded model (no-op when it is not loaded). */
  async unloadModel(name: string): Promise<void> {
    const folder = await resolveModelFolder(this.modelsDir, name);
    const record = this.#records.get(await canonical(folder));
    if (!record) return;
    await record.loading?.catch(() => undefined);
    this.#unload(record, 'request');
  }

  /** Every model currently in memory, most recently used first. */
  loadedModels(): LoadedModel[] {
    return [...this.#records.values()]
      .filter((r) => r.loaded && !r.loaded.disposed)
      .sort((a, b) => b.lastUsed - a.lastUsed)
      .map((r) => r.loaded as LoadedModel);
  }

  /** Bytes of weights currently loaded. */
  loadedBytes(): number {
    return this.loadedModels().reduce((sum, m) => sum + m.memoryBytes, 0);
  }

  /**
   * The smallest usable (available or loaded) model of `modelType`, skipping the excluded names, or
   * `undefined`. Used to fall back when a model fails to load.
   * @param options - a name to exclude, or `{ exclude, maxSizeBytes, requireTokenizer }`.
   */
  async getFallbackModel(modelType: string, options: string | FallbackOptions = {}): Promise<ModelMetadata | undefined> {
    const { exclude = [], maxSizeBytes = Number.POSITIVE_INFINITY, requireTokenizer = false } = typeof options === 'string' ? { exclude: options } : options;
    const excluded = new Set(typeof exclude === 'string' ? [exclude] : exclude);
    const candidates = (await this.listModels()).filter(
      (m) =>
        m.modelType === modelType &&
        !excluded.has(m.name) &&
        (m.status === 'available' || m.status === 'loaded') &&
        m.sizeBytes <= maxSizeBytes &&
        (!requireTokenizer || m.hasTokenizer),
    );
    candidates.sort((a, b) => a.sizeBytes - b.sizeBytes || a.name.localeCompare(b.name));
    return candidates[0];
  }

  /**
   * Trusts the weights as they are now: records their current checksum so a `corrupted` model can be
   * loaded again. Use only after checking the new files are the intended ones.
   */
  async acceptChecksum(name: string): Promise<ModelMetadata> {
    const folder = await resolveModelFolder(this.modelsDir, name);
    const described = await describeFolder(folder);
    const key = await canonical(folder);
    const files = await this.#hashFiles(name, folder, described.weightFiles, undefined);
    const manifest = await this.#manifest;
    await manifest.set(key, { files, checksum: combineChecksums(files), updatedAt: new Date().toISOString() });
    return this.#describe(name, folder);
  }

  /** Unloads every model. */
  dispose(): void {
    for (const record of this.#records.values()) this.#unload(record, 'dispose');
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  // ── internals ─────────────────────────────────────────────────────────────

  /** The record of a folder; `key` is its canonical (real) path. */
  #record(name: string, key: string): ModelRecord {
    let record = this.#records.get(key);
    if (!record) {
      record = { folder: key, name, lastUsed: 0, leases: 0 };
      this.#records.set(key, record);
    }
    return record;
  }

  #statusOf(record: ModelRecord | undefined): ModelStatus | undefined {
    if (!record) return undefined;
    if (record.loading) return 'loading';
    if (record.loaded && !record.loaded.disposed) return 'loaded';
    return undefined;
  }

  async #describe(name: string, folder: string): Promise<ModelMetadata> {
    const key = await canonical(folder);
    const record = this.#records.get(key);
    try {
      const described = await describeFolder(folder);
      const manifest = await this.#manifest;
      const entry = manifest.get(key);
      const files = await this.#hashFiles(name, folder, described.weightFiles, entry);
      const checksum = combineChecksums(files);
      const sizeBytes = files.reduce((sum, f) => sum + f.sizeBytes, 0);
      let status: ModelStatus = 'available';
      let expectedChecksum: string | undefined;
      let error: ModelMetadata['error'];
      if (!entry) {
        await manifest.set(key, { files, checksum, updatedAt: new Date().toISOString() });
      } else if (entry.checksum !== checksum) {
        status = 'corrupted';
        expectedChecksum = entry.checksum;
        error = {
          code: 'E_CHECKSUM',
          message: `weights of "${name}" changed: sha256 ${checksum} differs from the recorded ${entry.checksum} (${manifest.file}); call acceptChecksum("${name}") if the change is intended`,
        };
      } else if (!sameStats(entry.files, files)) {
        await manifest.set(key, { ...entry, files, updatedAt: new Date().toISOString() });
      }
      if (status === 'available' && !this.#engines.some((e) => e.canLoad({ ...baseMeta(), modelType: described.modelType, format: described.format }))) {
        if (this.#engines.length > 0) {
          status = 'error';
          error = { code: 'E_UNSUPPORTED_MODEL', message: `no registered engine runs model_type "${described.modelType}" (${described.format}) of "${name}"` };
        }
      }
      if (status === 'available' && record?.loadError) {
        status = 'error';
        error = { code: record.loadError.code, message: record.loadError.message };
      }
      const performance = entry && entry.checksum === checksum ? entry.performance : undefined;
      return {
        name,
        version: described.version,
        modelType: described.modelType,
        format: described.format,
        path: folder,
        sizeBytes,
        checksum,
        ...(expectedChecksum ? { expectedChecksum } : {}),
        weightFiles: files,
        status: status === 'available' ? (this.#statusOf(record) ?? status) : status,
        ...(error ? { error } : {}),
        hasTokenizer: described.hasTokenizer,
        ...(performance ? { performance } : {}),
      };
    } catch (thrown) {
      const error = toPhoenixError(thrown, { model: name });
      if (error.code === 'E_MODEL_NOT_FOUND' && !(await stat(folder).then(() => true, () => false))) throw error;
      return { ...baseMeta(), name, path: folder, status: 'error', error: { code: error.code, message: error.message } };
    }
  }

  /** Stats every weight file and hashes those whose size/mtime differ from the manifest entry. */
  async #hashFiles(name: string, folder: string, names: string[], entry: ManifestEntry | undefined): Promise<WeightFileInfo[]> {
    const files: WeightFileInfo[] = [];
    for (const file of names) {
      const full = path.join(folder, file);
      let info;
      try {
        info = await stat(full);
      } catch {
        throw new PhoenixError('E_BAD_WEIGHTS', `${full} is missing`, { file: full });
      }
      const known = entry?.files.find((f) => f.name === file && f.sizeBytes === info.size && f.mtimeMs === info.mtimeMs);
      const sha256 =
        known?.sha256 ??
        (await sha256File(full, info.size, (bytesDone, bytesTotal) =>
          this.#onProgress?.({ kind: 'checksum', model: name, file: full, bytesDone, bytesTotal }),
        ));
      files.push({ name: file, sizeBytes: info.size, mtimeMs: info.mtimeMs, sha256 });
    }
    return files;
  }

  #load(name: string, folder: string): Promise<LoadedModel> {
    const record = this.#record(name, folder);
    record.lastUsed = ++this.#clock;
    if (record.loaded && !record.loaded.disposed) return Promise.resolve(record.loaded);
    if (record.loading) return record.loading;
    const loading = this.#loadFresh(record).finally(() => {
      if (record.loading === loading) record.loading = undefined;
    });
    record.loading = loading;
    return loading;
  }

  async #loadFresh(record: ModelRecord): Promise<LoadedModel> {
    record.loadError = undefined;
    const metadata = await this.#describe(record.name, record.folder);
    if (metadata.status === 'corrupted' || metadata.status === 'error') {
      const { code, message } = metadata.error ?? { code: 'E_INTERNAL', message: `model "${record.name}" is unusable` };
      throw new PhoenixError(code as PhoenixError['code'], message, { model: record.name, path: record.folder });
    }
    const engine = this.#engines.find((e) => e.canLoad(metadata));
    if (!engine) {
      const why = this.#engines.length === 0 ? 'no engine is registered' : `no registered engine runs model_type "${metadata.modelType}"`;
      throw new PhoenixError('E_UNSUPPORTED_MODEL', `cannot load "${record.name}": ${why}`, { model: record.name, modelType: metadata.modelType });
    }
    this.#onProgress?.({ kind: 'load-start', model: record.name, engine: engine.name });
    const started = performance.now();
    let model: LoadedModel;
    try {
      model = await engine.loadModel({ ...metadata, status: 'loading' });
    } catch (error) {
      const typed = toPhoenixError(error, { model: record.name });
      record.loadError = typed;
      throw typed;
    }
    const loadMs = performance.now() - started;
    record.loaded = model;
    record.lastUsed = ++this.#clock;
    this.#onProgress?.({ kind: 'load-done', model: record.name, loadMs });
    if (this.#measure && !metadata.performance) await this.#probe(record, engine, model, metadata, loadMs);
    this.#enforceBudget(record);
    return model;
  }

  /** A tiny prefill + decode run, timed, stored in the manifest for this checksum. */
  async #probe(record: ModelRecord, engine: InferenceEngine, model: LoadedModel, metadata: ModelMetadata, loadMs: number): Promise<void> {
    const vocab = model.info.vocabSize;
    const ids = Array.from({ length: 16 }, (_, i) => (i * 7 + 3) % vocab);
    const result = await engine.predict(model, { ids }, { maxTokens: 8, temperature: 0, stopTokenIds: [] });
    const perSecond = (tokens: number, ms: number): number => (ms > 0 ? (tokens * 1000) / ms : 0);
    const profile: PerformanceProfile = {
      loadMs,
      prefillTokensPerSecond: perSecond(result.promptTokens, result.timings.prefillMs),
      decodeTokensPerSecond: perSecond(result.generatedTokens, result.timings.decodeMs),
      probePromptTokens: result.promptTokens,
      probeGeneratedTokens: result.generatedTokens,
      measuredAt: new Date().toISOString(),
    };
    const manifest = await this.#manifest;
    const key = await canonical(record.folder);
    const entry = manifest.get(key);
    if (entry && entry.checksum === metadata.checksum) await manifest.set(key, { ...entry, performance: profile });
    this.#onProgress?.({ kind: 'probe-done', model: record.name, profile });
  }

  /** Unloads least-recently-used, unleased models until the loaded bytes fit the budget. */
  #enforceBudget(keep?: ModelRecord): void {
    if (!Number.isFinite(this.#budget)) return;
    const loaded = [...this.#records.values()].filter((r) => r.loaded && !r.loaded.disposed).sort((a, b) => a.lastUsed - b.lastUsed);
    let total = loaded.reduce((sum, r) => sum + (r.loaded as LoadedModel).memoryBytes, 0);
    for (const record of loaded) {
      if (total <= this.#budget) break;
      if (record === keep || record.leases > 0) continue;
      total -= (record.loaded as LoadedModel).memoryBytes;
      this.#unload(record, 'memory-budget');
    }
  }

  #unload(record: ModelRecord, reason: 'request' | 'memory-budget' | 'dispose'): void {
    const model = record.loaded;
    record.loaded = undefined;
    if (model && !model.disposed) {
      model.dispose();
      this.#onProgress?.({ kind: 'unload', model: record.name, reason });
    }
  }
}

function baseMeta(): ModelMetadata {
  return { name: '', version: '1', modelType: 'unknown', format: 'unknown', path: '', sizeBytes: 0, checksum: '', weightFiles: [], status: 'error', hasTokenizer: false };
}

function sameStats(a: readonly WeightFileInfo[], b: readonly WeightFileInfo[]): boolean {
  return a.length === b.length && a.every((f, i) => f.name === b[i]?.name && f.sizeBytes === b[i]?.sizeBytes && f.mtimeMs === b[i]?.mtimeMs);
}

/** The real path of a folder when it exists (so symlinked and direct names share one record). */
async function canonical(folder: string): Promise<string> {
  return realpath(folder).catch(() => path.resolve(folder));
}

