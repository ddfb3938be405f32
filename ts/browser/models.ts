/**
 * `ModelMetadata` for models a browser has: served over HTTP(S) under a base URL, or given as files
 * (a folder picker's `File`s, or bytes in memory). The core describes them (family, format, the
 * files a load reads) through the WASM binding's `describeModel`, as it does folders on disk
 * (ts/models/describe.ts); only the file access differs. No `node:` imports.
 */
import { PhoenixError } from '../binding/errors.js';
import type { BindingSelection } from '../binding/load.js';
import type { ModelFileData, ModelFileReader, RawModelLayout, RawModelSource } from '../binding/types.js';
import { combineChecksums, CONFIG_FILE, describeModel } from '../models/describe.js';
import type { ModelMetadata, WeightFileInfo } from '../models/metadata.js';
import { loadWasmBinding } from './binding.js';

/** Options of {@link modelFromUrl} and {@link modelFromFiles}. */
export interface BrowserModelOptions {
  /**
   * Compute the weights' sha256 (`crypto.subtle`). Default: `true` when the weights are already in
   * memory (`Uint8Array`s), `false` otherwise, since it reads every weight byte once more than the
   * load does; `checksum` and each `sha256` are then `''` (not computed).
   */
  checksum?: boolean;
  /** Called when the load reads a file given as a `Blob`, with its name and size (files it needs only). */
  onRead?: (name: string, bytes: number) => void;
  /**
   * The binding whose core describes the model (pass the engine's, to share its WASM instance).
   * Default: one {@link loadWasmBinding} shared by every call that gives none.
   */
  binding?: BindingSelection | Promise<BindingSelection>;
}

/** A model's files by name (no folders): bytes in memory, or `Blob`s / `File`s read on demand. */
export type BrowserModelFiles = Readonly<Record<string, ModelFileData>> | ReadonlyMap<string, ModelFileData>;

/** What metadata needs beyond the core's description: config.json's text (the version), sizes, bytes, times. */
interface BrowserFiles {
  /** How to name the whole model (its base URL or a display name). */
  readonly where: string;
  /** The text of a file the core found. */
  readText(name: string): Promise<string>;
  /** Size in bytes (`NaN` when the server does not say); the file is known to exist. */
  size(name: string): Promise<number>;
  bytes(name: string): Promise<Uint8Array>;
  mtime(name: string): number;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

async function sha256Hex(data: Uint8Array | string): Promise<string> {
  const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
  const digest = await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

let sharedBinding: Promise<BindingSelection> | undefined;

/** The binding of `options`, else one WASM binding shared by calls that give none (a failed load is retried). */
function bindingOf(options: BrowserModelOptions): Promise<BindingSelection> {
  if (options.binding) return Promise.resolve(options.binding);
  sharedBinding ??= loadWasmBinding().catch((error: unknown) => {
    sharedBinding = undefined;
    throw error;
  });
  return sharedBinding;
}

/**
 * Metadata of the model whose files `filesOf(layout)` reads: described by the core from
 * `describeSource` (the same files, in a form the binding reads), loaded later by the engine from
 * `source`. The files depend on the layout where a URL may name a folder or one `.gguf` file.
 */
async function metadataOf(
  name: string,
  filesOf: (layout: RawModelLayout) => BrowserFiles,
  describeSource: RawModelSource,
  source: RawModelSource,
  checksum: boolean,
  options: BrowserModelOptions,
): Promise<ModelMetadata> {
  const { binding } = await bindingOf(options);
  let files: BrowserFiles | undefined;
  // A GGUF model has no config.json (its header is its config): only a folder's is read for the version.
  const described = await describeModel(binding, describeSource, async (layout) => {
    files = filesOf(layout);
    return layout.sideFiles.includes(CONFIG_FILE) ? files.readText(CONFIG_FILE) : '';
  });
  if (!files) throw new PhoenixError('E_INTERNAL', 'describeModel did not report the layout');
  const weightFiles: WeightFileInfo[] = [];
  for (const file of described.weightFiles) {
    const size = await files.size(file);
    const sha256 = checksum ? await sha256Hex(await files.bytes(file)) : '';
    weightFiles.push({ name: file, sizeBytes: Number.isFinite(size) ? size : 0, mtimeMs: files.mtime(file), sha256 });
  }
  return {
    name,
    version: described.version,
    modelType: described.modelType,
    format: described.format,
    family: described.family,
    engine: described.engine,
    path: files.where,
    source,
    sizeBytes: weightFiles.reduce((sum, f) => sum + f.sizeBytes, 0),
    checksum: checksum ? await combineChecksums(weightFiles, sha256Hex) : '',
    weightFiles,
    status: 'available',
    hasTokenizer: described.hasTokenizer,
    ...(described.gguf ? { gguf: described.gguf } : {}),
  };
}

/**
 * Metadata of a model served over HTTP(S): `config.json`, `tokenizer.json` and the weights relative
 * to `baseUrl` (HEAD requests for presence and sizes; weights are fetched only by the load, or for
 * `checksum`). The engine then loads it from that URL. A URL to a `.gguf` file (no final `/`) is that
 * GGUF model; describing it reads the file's header, which needs the whole file (its tensor index is
 * checked against the file's length).
 *
 * @throws {@link PhoenixError} with the core's code for the files, as a load would fail first:
 * `E_MODEL_NOT_FOUND` (no config.json or weights; the server cannot be reached or fails),
 * `E_BAD_CONFIG` (config.json malformed), `E_UNSUPPORTED_MODEL` (a family the core does not run).
 */
export async function modelFromUrl(baseUrl: string | URL, options: BrowserModelOptions = {}): Promise<ModelMetadata> {
  let given: URL;
  try {
    given = new URL(baseUrl, globalThis.location?.href);
  } catch (error) {
    // The URL constructor's TypeError, as every other failure here: typed, naming what was given.
    throw new PhoenixError('E_INVALID_OPTION', `modelFromUrl: ${JSON.stringify(String(baseUrl))} is not a URL (${messageOf(error)})`, { option: 'baseUrl' });
  }
  const last = decodeURIComponent(given.pathname.split('/').pop() ?? '');
  let base = new URL(given.href);
  if (!base.pathname.endsWith('/')) base.pathname += '/';
  let name = decodeURIComponent(base.pathname.split('/').filter(Boolean).pop() ?? base.host);
  const filesOf = (layout: RawModelLayout): BrowserFiles => {
    // The binding read a URL ending in a .gguf name as that file (the core's rule): its files are
    // the folder's, the model is named after the file.
    if (layout.gguf && last !== '' && !given.pathname.endsWith('/') && layout.weightFiles[0] === last) {
      base = new URL('./', given);
      name = last;
    }
    return urlFiles(base);
  };
  const source = given.pathname.endsWith('/') ? given.href : base.href;
  return metadataOf(name, (layout) => filesOf(layout), given.href, source, options.checksum ?? false, options).then((metadata) =>
    // A .gguf URL loads as given (the binding reads it as the file); a folder loads from its base.
    metadata.gguf && !given.pathname.endsWith('/') ? { ...metadata, name, path: given.href, source: given.href } : metadata,
  );
}

/** The files of a model folder served under `base` (one HEAD per file for presence and size). */
function urlFiles(base: URL): BrowserFiles {
  const request = async (name: string, method: 'GET' | 'HEAD'): Promise<Response | null> => {
    const url = new URL(name, base);
    let response: Response;
    try {
      response = await fetch(url, { method });
    } catch (error) {
      throw new PhoenixError('E_MODEL_NOT_FOUND', `cannot fetch ${url.href}: ${messageOf(error)}`, { url: url.href });
    }
    if (response.status === 404) return null;
    if (!response.ok) throw new PhoenixError('E_MODEL_NOT_FOUND', `cannot fetch ${url.href}: HTTP ${response.status}`, { url: url.href });
    return response;
  };
  const get = async (name: string): Promise<Response> => {
    const response = await request(name, 'GET');
    if (!response) throw new PhoenixError('E_MODEL_NOT_FOUND', `${new URL(name, base).href} vanished`, { file: name });
    return response;
  };
  // Presence and size come from one HEAD per file.
  const heads = new Map<string, Promise<Response | null>>();
  const head = (name: string): Promise<Response | null> => {
    let response = heads.get(name);
    if (!response) heads.set(name, (response = request(name, 'HEAD')));
    return response;
  };
  return {
    where: base.href,
    readText: async (file) => (await get(file)).text(),
    size: async (file) => Number((await head(file))?.headers.get('content-length') ?? Number.NaN),
    bytes: async (file) => new Uint8Array(await (await get(file)).arrayBuffer()),
    mtime: () => 0,
  };
}

/**
 * Metadata of a model given as files, e.g. from `<input type="file" webkitdirectory>` (a `File` per
 * name) or already in memory. `Blob`s are read only when the core asks for them (the reader form of
 * the binding's `loadModel`) and streamed into WASM memory, so extra files in a folder cost nothing.
 *
 * @throws {@link PhoenixError} with the core's code for the files, as a load would fail first:
 * `E_MODEL_NOT_FOUND` (no config.json or weights), `E_BAD_CONFIG`, `E_UNSUPPORTED_MODEL`.
 */
export async function modelFromFiles(name: string, fileSet: BrowserModelFiles, options: BrowserModelOptions = {}): Promise<ModelMetadata> {
  const entries: ReadonlyMap<string, ModelFileData> = fileSet instanceof Map ? fileSet : new Map(Object.entries(fileSet));
  const entry = (file: string): ModelFileData => {
    const data = entries.get(file);
    if (data === undefined) throw new PhoenixError('E_MODEL_NOT_FOUND', `${name}/${file} is missing`, { file });
    return data;
  };
  const bytes = async (file: string): Promise<Uint8Array> => {
    const data = entry(file);
    return data instanceof Uint8Array ? data : new Uint8Array(await data.arrayBuffer());
  };
  const files: BrowserFiles = {
    where: `${name}/`,
    readText: async (file) => new TextDecoder().decode(await bytes(file)),
    size: async (file) => {
      const data = entry(file);
      return data instanceof Uint8Array ? data.byteLength : data.size;
    },
    bytes,
    mtime: (file) => {
      const data = entries.get(file);
      return typeof File !== 'undefined' && data instanceof File ? data.lastModified : 0;
    },
  };
  // What the engine's load reads: the core asks for each file it needs, once. It lists the names,
  // so a lone `.gguf` (one file picked) is the model.
  const reader: ModelFileReader = Object.assign(
    async (file: string) => {
      const data = entries.get(file);
      if (data === undefined) return null;
      if (!(data instanceof Uint8Array)) options.onRead?.(file, data.size);
      return data;
    },
    { fileNames: [...entries.keys()] },
  );
  const inMemory = [...entries.values()].every((data) => data instanceof Uint8Array);
  return metadataOf(name, () => files, entries, inMemory ? entries : reader, options.checksum ?? inMemory, options);
}
