/**
 * LocalModelManager: the single source of truth for local models — discovery, metadata, checksums,
 * loading through registered engines, caching, and unloading past a memory budget.
 */
import { realpath, readdir, stat } from 'node:fs/promises';
import path from 'node:path';

import { PhoenixError, toPhoenixError } from '../binding/errors.js';
import { getDefaultBinding, type BindingSelection } from '../binding/load.js';
import { optionKeys, refuseUnknownKeys } from '../engines/known-keys.js';
import { describeValue, everyIndex } from '../engines/options.js';
import type { InferenceEngine, LoadedModel } from '../engines/types.js';
import { abortable, throwIfAborted } from './abort.js';
import { combineChecksums, sha256Handle } from './checksum.js';
import { describeFolder } from './discovery.js';
import { filesOf, sameIdentity, sameStats, sideFileChange } from './file-identity.js';
import { filesFolderOf, isGgufFile, isGgufName } from './gguf-path.js';
import { Manifest, type ManifestEntry } from './manifest.js';
import type { ModelMetadata, ModelStatus, PerformanceProfile, WeightFileInfo } from './metadata.js';
import { openModelFile, type ModelFolder } from './model-files.js';
import { defaultManifestPath, defaultModelsDir, isDirectory, modelsDirCandidates } from './models-dir.js';
import { resolveModelFolder } from './names.js';

export { defaultModelsDir, modelsDirCandidates };

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
  /**
   * Manifest file. Default `<modelsDir>/.phoenix-manifest.json`; for a models dir inside `node_modules`
   * (an installed package's bundled models) a file in the user's cache (see `defaultManifestPath`).
   */
  manifestPath?: string;
  /**
   * Bytes of weights that may stay loaded; least-recently-used idle models beyond it are unloaded.
   * It evicts, never refuses: a model bigger than the whole budget still loads (alone). Default: unlimited.
   */
  memoryBudgetBytes?: number;
  /** Engines to register right away (more via {@link LocalModelManager.registerEngine}). */
  engines?: InferenceEngine[];
  /** Measure a performance profile after a model's first load on this machine (default true). */
  measurePerformance?: boolean;
  /** Called during long steps (checksumming, loading). */
  onProgress?: (event: ModelProgressEvent) => void;
  /**
   * The binding whose core describes model folders (family, format, the files a load reads).
   * Default: the process-wide binding (`getDefaultBinding()`, honouring `PHOENIX_BACKEND`). When none
   * loads, every model is listed with status `error` and `E_BACKEND_UNAVAILABLE`.
   */
  binding?: BindingSelection | Promise<BindingSelection>;
}

/** Filters of {@link LocalModelManager.getFallbackModel}. */
export interface FallbackOptions {
  /** Model names to skip (e.g. the one that failed). */
  exclude?: string | readonly string[];
  /** Largest acceptable weight size in bytes. */
  maxSizeBytes?: number;
  /** Only models with a tokenizer (for text prompts). */
  requireTokenizer?: boolean;
  /** Stops the listing (checksums) with `E_ABORTED`. */
  signal?: AbortSignal;
}

/**
 * A model held for the duration of some work; `release()` lets the LRU policy unload it again.
 * A leased model is never disposed by the manager (budget or `unloadModel`) until its last lease ends;
 * only `dispose()` of the whole manager ends it regardless.
 */
export interface ModelLease {
  readonly model: LoadedModel;
  release(): void;
}

/** The optional last argument of the manager's long-running methods. */
export interface ManagerCallOptions {
  /** Stops checksum hashing and waiting with `E_ABORTED`. A load already running in the core finishes in the background and stays cached. */
  signal?: AbortSignal;
}

type UnloadReason = 'request' | 'memory-budget' | 'dispose';

interface ModelRecord {
  folder: string;
  name: string;
  loaded?: LoadedModel;
  loading?: Promise<LoadedModel>;
  /** Aborts the shared load's checksum step once every caller waiting for it gave up. */
  loadAbort?: AbortController;
  loadWaiters: number;
  /** Files the loaded model was read from, as they were when hashed (re-stat'ed before handing it out again). */
  loadedFiles?: { file: string; info: WeightFileInfo }[];
  lastUsed: number;
  leases: number;
  /** `loadModel` results on their way to callers: an unload request waits for them (the budget does not). */
  handOvers: number;
  /** `unloadModel` was called while leased: unload at the last release (a new lease cancels it). */
  unloadPending?: boolean;
  loadError?: PhoenixError;
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
const MANAGER_OPTION_KEYS = optionKeys<LocalModelManagerOptions>({
  modelsDir: true,
  manifestPath: true,
  memoryBudgetBytes: true,
  engines: true,
  measurePerformance: true,
  onProgress: true,
  binding: true,
});

export class LocalModelManager {
  /** Absolute path of the models dir. */
  readonly modelsDir: string;
  /** The folders looked in for the models dir (named when a model is not found). */
  readonly #searched: readonly string[];
  readonly #engines: InferenceEngine[] = [];
  readonly #records = new Map<string, ModelRecord>();
  readonly #manifest: Promise<Manifest>;
  readonly #budget: number;
  readonly #measure: boolean;
  readonly #onProgress: ((event: ModelProgressEvent) => void) | undefined;
  readonly #binding: LocalModelManagerOptions['binding'];
  /** Monotonic use counter for LRU order (timestamps can tie). */
  #clock = 0;
  /** Set by dispose(): no model is handed out or cached afterwards. */
  #disposed = false;

  /** @throws `E_INVALID_OPTION` for an option it does not know, or a bad `modelsDir` / `memoryBudgetBytes`. */
  constructor(options: LocalModelManagerOptions = {}) {
    refuseUnknownKeys(options, MANAGER_OPTION_KEYS, 'manager option');
    if (options.modelsDir !== undefined && typeof options.modelsDir !== 'string') {
      throw new PhoenixError('E_INVALID_OPTION', `option modelsDir must be a path string, got a ${typeof options.modelsDir}`, { option: 'modelsDir' });
    }
    this.modelsDir = path.resolve(options.modelsDir ?? defaultModelsDir());
    this.#searched = options.modelsDir === undefined ? modelsDirCandidates() : [this.modelsDir];
    const budget = options.memoryBudgetBytes ?? Number.POSITIVE_INFINITY;
    if (typeof budget !== 'number' || Number.isNaN(budget) || budget < 0) {
      throw new PhoenixError('E_INVALID_OPTION', `option memoryBudgetBytes must be a number ≥ 0, got ${describeValue(budget)}`, { option: 'memoryBudgetBytes' });
    }
    this.#budget = budget;
    const kind = (option: string, value: unknown, type: string): void => {
      if (value !== undefined && typeof value !== type) throw new PhoenixError('E_INVALID_OPTION', `option ${option} must be a ${type}, got ${value === null ? 'null' : typeof value}`, { option });
    };
    kind('measurePerformance', options.measurePerformance, 'boolean');
    kind('onProgress', options.onProgress, 'function');
    kind('manifestPath', options.manifestPath, 'string');
    if (options.engines !== undefined && !Array.isArray(options.engines)) throw new PhoenixError('E_INVALID_OPTION', 'option engines must be an array of engines', { option: 'engines' });
    this.#measure = options.measurePerformance ?? true;
    this.#onProgress = options.onProgress;
    this.#binding = options.binding;
    this.#manifest = Manifest.open(options.manifestPath ?? defaultManifestPath(this.modelsDir));
    for (const engine of options.engines ?? []) this.registerEngine(engine);
  }

  /** Adds an engine; the first registered engine whose `canLoad` accepts a model loads it. */
  registerEngine(engine: InferenceEngine): void {
    const shape = engine as Partial<Record<keyof InferenceEngine, unknown>> | null;
    const missing = (['name', 'canLoad', 'loadModel', 'predict', 'stream', 'score'] as const).find((key) => (key === 'name' ? typeof shape?.name !== 'string' : typeof shape?.[key] !== 'function'));
    if (missing) throw new PhoenixError('E_INVALID_OPTION', `an engine must implement InferenceEngine: ${missing === 'name' ? 'a string `name`' : `\`${missing}()\``} is missing`, { option: 'engines' });
    if (!this.#engines.includes(engine)) this.#engines.push(engine);
  }

  /** Registered engines, in the order they are asked. */
  get engines(): readonly InferenceEngine[] {
    return this.#engines;
  }

  /** The registered engine that loaded `model` (to generate or score with it). */
  engineFor(model: LoadedModel): InferenceEngine {
    const engine = this.#engines.find((e) => e.name === model.engine);
    if (!engine) {
      const what = typeof model?.engine === 'string' ? `no registered engine is named ${model.engine} (model "${model.name}" was loaded elsewhere)` : 'engineFor needs a model this manager loaded';
      throw new PhoenixError('E_INVALID_OPTION', what, { option: 'model' });
    }
    return engine;
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

  /**
   * Every model folder (or loose `.gguf` file) in the models dir (hidden entries skipped), sorted by name.
   * Broken ones have status `error`. With a defaulted models dir (no `modelsDir`, no PHOENIX_MODELS_DIR),
   * the bundled models that `./models` lacks follow, as `loadModel` finds them by name.
   */
  async listModels(options: ManagerCallOptions = {}): Promise<ModelMetadata[]> {
    checkCall(options);
    const result: ModelMetadata[] = [];
    const seen = new Set<string>();
    for (const dir of [this.modelsDir, ...this.#searched.filter((d) => d !== this.modelsDir)]) {
      result.push(...(await this.#listDir(dir, seen, options.signal, dir === this.modelsDir)));
    }
    return result;
  }

  /** The models of one dir whose names are not in `seen` (added to it); `primary`: a dir that cannot be read is an error. */
  async #listDir(dir: string, seen: Set<string>, signal: AbortSignal | undefined, primary: boolean): Promise<ModelMetadata[]> {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT' || !primary) return [];
      throw new PhoenixError('E_MODEL_NOT_FOUND', `models dir ${dir} cannot be read (${(error as NodeJS.ErrnoException).code})`, {
        path: dir,
      });
    }
    // Any `.gguf` name is listed, whatever it is: a FIFO or device under that name is an error entry, not hidden.
    const names = entries
      .filter((e) => !e.name.startsWith('.') && !seen.has(e.name) && (e.isDirectory() || e.isSymbolicLink() || isGgufName(e.name)))
      .map((e) => e.name)
      .sort();
    const result: ModelMetadata[] = [];
    for (const name of names) {
      throwIfAborted(signal, 'listing models');
      const entry = path.join(dir, name);
      // What the entry is (through a link): a link to anything else (a file, nothing) is not a model.
      const target = await stat(entry).then((s) => (s.isDirectory() ? 'folder' : 'other'), () => 'missing' as const);
      if (target !== 'folder' && !isGgufName(name)) continue;
      seen.add(name);
      try {
        await resolveModelFolder(dir, name);
      } catch (thrown) {
        // A link leaving the models dir, or a dangling `.gguf` link: listed with why, as `run` would fail.
        const error = toPhoenixError(thrown, { model: name });
        result.push({ ...baseMeta(), name, path: entry, status: 'error', error: { code: error.code, message: error.message } });
        continue;
      }
      result.push(await this.#describe(name, entry, signal));
    }
    return result;
  }

  /**
   * Metadata of the model named `name` (a folder in the models dir). A folder that exists but cannot be
   * used is returned with status `error` (see `error`).
   * @throws `E_INVALID_OPTION` (name leaves the models dir), `E_MODEL_NOT_FOUND`, `E_ABORTED`.
   */
  async getModelMetadata(name: string, options: ManagerCallOptions = {}): Promise<ModelMetadata> {
    checkCall(options);
    const folder = await this.#resolve(name);
    return this.#describe(name, folder, options.signal);
  }

  /**
   * Metadata of the model folder (or `.gguf` file) at `folderPath` (any location; the name is its base
   * name). A link named here is followed as {@link loadModelAt} follows it, so both see the same model.
   */
  async getModelMetadataAt(folderPath: string, options: ManagerCallOptions = {}): Promise<ModelMetadata> {
    checkCall(options);
    const folder = await canonical(path.resolve(folderPath));
    return this.#describe(path.basename(path.resolve(folderPath)), folder, options.signal);
  }

  /**
   * Loads the model named `name` (cached: a loaded model is returned as long as its files are unchanged;
   * concurrent calls share one load). May unload least-recently-used idle models to stay within the
   * memory budget. The model is live when the promise resolves; to hold it across awaits without the
   * budget or `unloadModel` disposing it, use {@link acquireModel}.
   * @throws `E_INVALID_OPTION`, `E_MODEL_NOT_FOUND`, `E_BAD_CONFIG`, `E_BAD_WEIGHTS`, `E_UNSUPPORTED_MODEL`,
   * `E_CHECKSUM` (files changed since their checksum was recorded; see {@link acceptChecksum}), `E_ABORTED`, …
   */
  async loadModel(name: string, options: ManagerCallOptions = {}): Promise<LoadedModel> {
    checkCall(options);
    const folder = await canonical(await this.#resolve(name));
    return this.#handOver(name, folder, options.signal);
  }

  /** Loads the model folder at `folderPath` (outside or inside the models dir); as {@link loadModel}. */
  async loadModelAt(folderPath: string, options: ManagerCallOptions = {}): Promise<LoadedModel> {
    checkCall(options);
    const folder = await canonical(path.resolve(folderPath));
    return this.#handOver(path.basename(path.resolve(folderPath)), folder, options.signal);
  }

  /**
   * Loads `name` and holds it until `release()`: neither the memory budget nor `unloadModel` disposes it
   * mid-use (an unload requested meanwhile happens at the last release).
   */
  async acquireModel(name: string, options: ManagerCallOptions = {}): Promise<ModelLease> {
    checkCall(options);
    const folder = await canonical(await this.#resolve(name));
    const { model, release } = await this.#lease(name, folder, options.signal);
    return { model, release };
  }

  /**
   * Frees a loaded model (no-op when it is not loaded). A load in progress is waited for; a leased
   * model is freed when its last lease is released (unless it is leased again before that).
   */
  async unloadModel(name: string): Promise<void> {
    const folder = await this.#resolve(name);
    const record = this.#records.get(await canonical(folder));
    if (!record) return;
    await record.loading?.catch(() => undefined);
    record.unloadPending = true;
    this.#unloadIfPendingAndIdle(record);
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
    if (typeof options !== 'string') checkFallback(options);
    const { exclude = [], maxSizeBytes = Number.POSITIVE_INFINITY, requireTokenizer = false, signal } = typeof options === 'string' ? { exclude: options } : options;
    const excluded = new Set(typeof exclude === 'string' ? [exclude] : exclude);
    const candidates = (await this.listModels({ signal })).filter(
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
   * Trusts the model's files as they are now: records their current checksums so a `corrupted` model
   * can be loaded again. Use only after checking the new files are the intended ones.
   */
  async acceptChecksum(name: string): Promise<ModelMetadata> {
    const folder = await this.#resolve(name);
    const key = await canonical(folder);
    const described = await describeFolder(folder, [this.modelsDir], await this.#describer());
    const files = await this.#hashFiles(name, folder, described.weightFiles, undefined, undefined);
    const sideFiles = await this.#hashFiles(name, folder, described.sideFiles, undefined, undefined);
    const manifest = await this.#manifest;
    await manifest.set(key, { files, sideFiles, checksum: combineChecksums(files), updatedAt: new Date().toISOString() });
    return this.#describe(name, folder);
  }

  /**
   * Unloads every model, leased or not (the manager's end): loads in flight free their model and
   * reject, and later loads are `E_ABORTED`. Listing and metadata keep working.
   */
  dispose(): void {
    this.#disposed = true;
    for (const record of this.#records.values()) this.#unload(record, 'dispose');
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  // ── internals ─────────────────────────────────────────────────────────────

  /**
   * The folder of `name` in the models dir (or, when the models dir was not given, in the next default
   * dir that has it); a missing model's error names the folders searched.
   */
  async #resolve(name: string): Promise<string> {
    try {
      return await resolveModelFolder(this.modelsDir, name);
    } catch (thrown) {
      const error = toPhoenixError(thrown);
      if (error.code !== 'E_MODEL_NOT_FOUND') throw error;
      // A defaulted models dir (./models of some project) must not hide the package's bundled models:
      // a name it lacks is looked up in the other default dirs, in order.
      for (const dir of this.#searched) {
        if (dir === this.modelsDir) continue;
        const found = await resolveModelFolder(dir, name).catch(() => undefined);
        if (found !== undefined) return found;
      }
      const searched = this.#searched.length > 1 ? ` (models dirs searched: ${this.#searched.join(', ')})` : '';
      const dirMissing = isDirectory(this.modelsDir) ? '' : `; the models dir ${this.modelsDir} does not exist`;
      throw new PhoenixError('E_MODEL_NOT_FOUND', `${error.message}${dirMissing}${searched}`, { ...error.details, modelsDir: this.modelsDir });
    }
  }

  /** The record of a folder; `key` is its canonical (real) path. */
  #record(name: string, key: string): ModelRecord {
    let record = this.#records.get(key);
    if (!record) {
      record = { folder: key, name, lastUsed: 0, leases: 0, loadWaiters: 0, handOvers: 0 };
      this.#records.set(key, record);
    }
    return record;
  }

  /** The binding that describes folders (loaded on first use; a failure is retried next time). */
  async #describer(): Promise<BindingSelection['binding']> {
    return (await (this.#binding ?? getDefaultBinding())).binding;
  }

  #statusOf(record: ModelRecord | undefined): ModelStatus | undefined {
    if (!record) return undefined;
    if (record.loading) return 'loading';
    if (record.loaded && !record.loaded.disposed) return 'loaded';
    return undefined;
  }

  async #describe(name: string, folder: string, signal?: AbortSignal): Promise<ModelMetadata> {
    const key = await canonical(folder);
    const record = this.#records.get(key);
    try {
      const described = await describeFolder(folder, [this.modelsDir], await this.#describer());
      const manifest = await this.#manifest;
      const entry = manifest.get(key);
      const files = await this.#hashFiles(name, folder, described.weightFiles, entry?.files, signal);
      const sideFiles = await this.#hashFiles(name, folder, described.sideFiles, entry?.sideFiles, signal);
      const checksum = combineChecksums(files);
      const sizeBytes = files.reduce((sum, f) => sum + f.sizeBytes, 0);
      let status: ModelStatus = 'available';
      let expectedChecksum: string | undefined;
      let error: ModelMetadata['error'];
      const changedSide = entry?.sideFiles ? sideFileChange(entry.sideFiles, sideFiles, Date.parse(entry.updatedAt)) : undefined;
      if (!entry) {
        await manifest.set(key, { files, sideFiles, checksum, updatedAt: new Date().toISOString() });
      } else if (entry.checksum !== checksum) {
        status = 'corrupted';
        expectedChecksum = entry.checksum;
        error = {
          code: 'E_CHECKSUM',
          message: `weights of "${name}" changed: sha256 ${checksum} differs from the recorded ${entry.checksum} (${manifest.file}); call acceptChecksum("${name}") if the change is intended`,
        };
      } else if (changedSide) {
        status = 'corrupted';
        error = {
          code: 'E_CHECKSUM',
          message: `${path.join(folder, changedSide)} of "${name}" changed since its checksum was recorded (${manifest.file}); call acceptChecksum("${name}") if the change is intended`,
        };
      } else if (!entry.sideFiles || !sameStats(entry.files, files) || !sameStats(entry.sideFiles, sideFiles)) {
        await manifest.set(key, { ...entry, files, sideFiles, updatedAt: new Date().toISOString() });
      }
      const kind = { modelType: described.modelType, format: described.format, family: described.family, engine: described.engine };
      if (status === 'available' && !this.#engines.some((e) => e.canLoad({ ...baseMeta(), ...kind }))) {
        if (this.#engines.length > 0) {
          status = 'error';
          error = {
            code: 'E_UNSUPPORTED_MODEL',
            message: `no registered engine runs ${described.engine} models (family ${described.family}, model_type "${described.modelType}", ${described.format}) of "${name}"`,
          };
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
        family: described.family,
        engine: described.engine,
        path: folder,
        sizeBytes,
        checksum,
        ...(expectedChecksum ? { expectedChecksum } : {}),
        weightFiles: files,
        sideFiles,
        status: status === 'available' ? (this.#statusOf(record) ?? status) : status,
        ...(error ? { error } : {}),
        hasTokenizer: described.hasTokenizer,
        ...(performance ? { performance } : {}),
        ...(described.gguf ? { gguf: described.gguf } : {}),
      };
    } catch (thrown) {
      const error = toPhoenixError(thrown, { model: name });
      if (error.code === 'E_ABORTED') throw error;
      if (error.code === 'E_MODEL_NOT_FOUND' && !(await stat(folder).then(() => true, () => false))) throw error;
      return { ...baseMeta(), name, path: folder, status: 'error', error: { code: error.code, message: error.message } };
    }
  }

  /**
   * Opens every file (regular files inside the model folder only), and hashes through the opened
   * descriptor those whose size, mtime, ctime or inode differ from the recorded ones.
   */
  async #hashFiles(name: string, folder: string, names: string[], recorded: readonly WeightFileInfo[] | undefined, signal: AbortSignal | undefined): Promise<WeightFileInfo[]> {
    const model: ModelFolder = { folder: filesFolderOf(folder), roots: [this.modelsDir], ...(isGgufFile(folder) ? { namedFile: path.basename(folder) } : {}) };
    const files: WeightFileInfo[] = [];
    for (const file of names) {
      throwIfAborted(signal, `checking the files of "${name}"`);
      const full = path.join(model.folder, file);
      const { handle, stats } = await openModelFile(model, file);
      try {
        const now: WeightFileInfo = { name: file, sizeBytes: stats.size, mtimeMs: stats.mtimeMs, ctimeMs: stats.ctimeMs, ino: stats.ino, sha256: '' };
        const known = recorded?.find((f) => f.name === file && sameIdentity(f, now));
        now.sha256 =
          known?.sha256 ??
          (await sha256Handle(handle, stats.size, {
            signal,
            what: `hashing ${full}`,
            onProgress: (bytesDone, bytesTotal) => this.#onProgress?.({ kind: 'checksum', model: name, file: full, bytesDone, bytesTotal }),
          }));
        files.push(now);
      } finally {
        await handle.close().catch(() => undefined);
      }
    }
    return files;
  }

  /** Takes a lease on the model at `key` (loading it if needed); the lease is dropped again if the load fails. */
  async #lease(name: string, key: string, signal: AbortSignal | undefined): Promise<ModelLease & { releaseKeeping(): void }> {
    if (this.#disposed) throw disposedError(name);
    const record = this.#record(name, key);
    record.leases++;
    record.unloadPending = false; // a new user outranks an earlier unload request
    let released = false;
    /** `keepForCaller`: the model was just handed to a `loadModel` caller; the budget evicts others first. */
    const release = (keepForCaller = false): void => {
      if (released) return;
      released = true;
      record.leases--;
      record.lastUsed = ++this.#clock;
      this.#unloadIfPendingAndIdle(record);
      this.#enforceBudget(keepForCaller ? record : undefined);
    };
    try {
      const model = await this.#load(record, signal);
      return { model, release: () => release(), releaseKeeping: () => release(true) };
    } catch (error) {
      release();
      throw error;
    }
  }

  /**
   * `loadModel`: a model that is live when the caller receives it. The lease ends at once (the budget
   * may evict the model later, as documented), but an unload request that raced the load waits until
   * the caller's `await` has resumed: microtasks run before setImmediate.
   */
  async #handOver(name: string, key: string, signal: AbortSignal | undefined): Promise<LoadedModel> {
    const lease = await this.#lease(name, key, signal);
    const record = this.#record(name, key);
    record.handOvers++;
    lease.releaseKeeping();
    setImmediate(() => {
      record.handOvers--;
      this.#unloadIfPendingAndIdle(record);
    });
    return lease.model;
  }

  /** Carries out a deferred `unloadModel` once nobody holds or is being handed the model. */
  #unloadIfPendingAndIdle(record: ModelRecord): void {
    if (!record.unloadPending || record.leases > 0 || record.handOvers > 0) return;
    record.unloadPending = false;
    this.#unload(record, 'request');
  }

  async #load(record: ModelRecord, signal: AbortSignal | undefined): Promise<LoadedModel> {
    record.lastUsed = ++this.#clock;
    throwIfAborted(signal, `loading "${record.name}"`);
    if (record.loaded && !record.loaded.disposed) {
      const cached = record.loaded;
      await this.#checkUnchanged(record, signal);
      if (record.loaded === cached && !cached.disposed) return cached;
      // Unloaded while checking (by a change or a request): load afresh below.
    }
    if (!record.loading) {
      const controller = new AbortController();
      const loading = this.#loadFresh(record, controller.signal).finally(() => {
        if (record.loading === loading) {
          record.loading = undefined;
          record.loadAbort = undefined;
        }
      });
      loading.catch(() => undefined); // waiters get the error; a load nobody waits for anymore must not be an unhandled rejection
      record.loading = loading;
      record.loadAbort = controller;
    }
    const loading = record.loading;
    record.loadWaiters++;
    try {
      return await abortable(loading, signal, `loading "${record.name}"`);
    } finally {
      record.loadWaiters--;
      // Everyone gave up: stop the checksum step (a load already in the engine finishes and stays cached).
      if (record.loadWaiters === 0 && record.loading === loading && signal?.aborted) record.loadAbort?.abort();
    }
  }

  /**
   * Re-stats the files a cached model was loaded from (cheap). When one may have changed, it is
   * rehashed: unchanged bytes keep the model; changed ones unload it (when idle) and throw, as
   * `listModels` then says `corrupted`.
   */
  async #checkUnchanged(record: ModelRecord, signal: AbortSignal | undefined): Promise<void> {
    const files = record.loadedFiles ?? [];
    const stats = await Promise.all(files.map(({ file }) => stat(file).catch(() => undefined)));
    const same = files.every(({ info }, i) => {
      const s = stats[i];
      return s !== undefined && sameIdentity(info, { ...info, sizeBytes: s.size, mtimeMs: s.mtimeMs, ctimeMs: s.ctimeMs, ino: s.ino });
    });
    if (same) return;
    const metadata = await this.#describe(record.name, record.folder, signal);
    if (metadata.status === 'corrupted' || metadata.status === 'error') {
      // Current holders keep their model until they release it; then it goes. New callers are refused.
      record.unloadPending = true;
      const { code, message } = metadata.error ?? { code: 'E_INTERNAL', message: `model "${record.name}" is unusable` };
      throw new PhoenixError(code as PhoenixError['code'], message, { model: record.name, path: record.folder });
    }
    record.loadedFiles = filesOf(filesFolderOf(record.folder), metadata);
  }

  async #loadFresh(record: ModelRecord, signal: AbortSignal): Promise<LoadedModel> {
    record.loadError = undefined;
    const metadata = await this.#describe(record.name, record.folder, signal);
    if (metadata.status === 'corrupted' || metadata.status === 'error') {
      const { code, message } = metadata.error ?? { code: 'E_INTERNAL', message: `model "${record.name}" is unusable` };
      throw new PhoenixError(code as PhoenixError['code'], message, { model: record.name, path: record.folder });
    }
    const engine = this.#engines.find((e) => e.canLoad(metadata));
    if (!engine) {
      const why = this.#engines.length === 0 ? 'no engine is registered' : `no registered engine runs ${metadata.engine} models (model_type "${metadata.modelType}")`;
      throw new PhoenixError('E_UNSUPPORTED_MODEL', `cannot load "${record.name}": ${why}`, { model: record.name, modelType: metadata.modelType });
    }
    throwIfAborted(signal, `loading "${record.name}"`);
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
    // The engine read the files by path after they were hashed: one edited or swapped meanwhile must
    // not be served (the same re-stat, and rehash on doubt, as for a cached model).
    record.loadedFiles = filesOf(filesFolderOf(record.folder), metadata);
    try {
      await this.#checkUnchanged(record, signal);
      this.#onProgress?.({ kind: 'load-done', model: record.name, loadMs });
      if (this.#measure && !metadata.performance) await this.#probeOrFail(record, engine, model, metadata, loadMs);
      // dispose() ran meanwhile: it could not free a model it did not have yet, so this load frees it.
      if (this.#disposed) throw disposedError(record.name);
    } catch (error) {
      // Nothing half-loaded stays cached: the record is marked loaded only once all of the above held.
      record.loadedFiles = undefined;
      model.dispose();
      throw error;
    }
    record.loaded = model;
    record.lastUsed = ++this.#clock;
    this.#enforceBudget(record);
    return model;
  }

  /**
   * The speed probe, whose failure fails the load: a model that cannot generate (non-finite weights,
   * a core failure) would only fail later, so it fails now and on every retry until its files change.
   */
  async #probeOrFail(record: ModelRecord, engine: InferenceEngine, model: LoadedModel, metadata: ModelMetadata, loadMs: number): Promise<void> {
    try {
      await this.#probe(record, engine, model, metadata, loadMs);
    } catch (error) {
      const typed = toPhoenixError(error, { model: record.name });
      record.loadError = new PhoenixError(typed.code, `"${record.name}" loaded but could not generate its first tokens (the speed probe): ${typed.message}`, typed.details);
      throw record.loadError;
    }
  }

  /**
   * A tiny prefill + decode run (16 + 8 tokens, fewer in a shorter context; none in one under 2 tokens),
   * timed, stored in the manifest for this checksum.
   */
  async #probe(record: ModelRecord, engine: InferenceEngine, model: LoadedModel, metadata: ModelMetadata, loadMs: number): Promise<void> {
    const { vocabSize: vocab, contextLength } = model.info;
    const context = contextLength ?? Number.POSITIVE_INFINITY;
    if (context < 2) return;
    const promptTokens = Math.min(16, Math.ceil(context / 2));
    const ids = Array.from({ length: promptTokens }, (_, i) => (i * 7 + 3) % vocab);
    const result = await engine.predict(model, { ids }, { maxTokens: Math.min(8, context - promptTokens), temperature: 0, stopTokenIds: [] });
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

const CALL_OPTION_KEYS = optionKeys<ManagerCallOptions>({ signal: true });

/** A manager call's options: an object with at most an `AbortSignal` (`E_INVALID_OPTION` otherwise). */
function checkCall(options: ManagerCallOptions): void {
  refuseUnknownKeys(options, CALL_OPTION_KEYS, 'call option');
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) throw new PhoenixError('E_INVALID_OPTION', 'option `signal` must be an AbortSignal', { option: 'signal' });
}

const FALLBACK_OPTION_KEYS = optionKeys<FallbackOptions>({ exclude: true, maxSizeBytes: true, requireTokenizer: true, signal: true });

/** `getFallbackModel`'s options (a NaN size would have matched nothing, a typo been ignored). */
function checkFallback(options: FallbackOptions): void {
  refuseUnknownKeys(options, FALLBACK_OPTION_KEYS, 'getFallbackModel option');
  const { exclude, maxSizeBytes, requireTokenizer, signal } = options;
  const bad = (option: string, rule: string): PhoenixError => new PhoenixError('E_INVALID_OPTION', `getFallbackModel: option \`${option}\` must be ${rule}`, { option });
  if (exclude !== undefined && typeof exclude !== 'string' && !(Array.isArray(exclude) && everyIndex(exclude, (n) => typeof n === 'string'))) throw bad('exclude', 'a model name or an array of names');
  if (maxSizeBytes !== undefined && (typeof maxSizeBytes !== 'number' || Number.isNaN(maxSizeBytes) || maxSizeBytes < 0)) throw bad('maxSizeBytes', 'a number ≥ 0');
  if (requireTokenizer !== undefined && typeof requireTokenizer !== 'boolean') throw bad('requireTokenizer', 'a boolean');
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw bad('signal', 'an AbortSignal');
}

/** `E_ABORTED` for a load asked of, or finishing on, a disposed manager. */
function disposedError(name: string): PhoenixError {
  return new PhoenixError('E_ABORTED', `loading "${name}" was aborted: the model manager was disposed`, { model: name });
}

function baseMeta(): ModelMetadata {
  return { name: '', version: '1', modelType: 'unknown', format: 'unknown', path: '', sizeBytes: 0, checksum: '', weightFiles: [], status: 'error', hasTokenizer: false };
}

/**
 * The real path of a folder when it exists (so symlinked and direct names share one record). A `.gguf`
 * file keeps its own name in its real folder: it may be a link to a file named otherwise (a Hugging
 * Face cache snapshot links `model.gguf` to `../../blobs/<hash>`), and its name is what makes it a GGUF model.
 */
async function canonical(folder: string): Promise<string> {
  if (isGgufFile(folder)) {
    const dir = path.dirname(path.resolve(folder));
    return path.join(await realpath(dir).catch(() => dir), path.basename(folder));
  }
  return realpath(folder).catch(() => path.resolve(folder));
}

