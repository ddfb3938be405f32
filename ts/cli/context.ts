/**
 * What every command needs: a manager over the models dir, the engine, progress output, and the
 * resolution of `<model>` (a name in the models dir, or a path to a folder).
 */
import { existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import path from 'node:path';

import { PhoenixError, toPhoenixError } from '../binding/errors.js';
import { loadBinding, requestedBackend, type BindingSelection } from '../binding/load.js';
import type { BackendKind, KvCacheType } from '../binding/types.js';
import type { BindingEngine } from '../engines/binding-engine.js';
import { defaultEngines } from '../engines/default-engines.js';
import type { LoadedModel } from '../engines/types.js';
import { LocalModelManager, type ModelProgressEvent } from '../models/manager.js';
import type { ModelMetadata } from '../models/metadata.js';
import { countFlag, type ParsedFlags } from './args.js';
import { printable } from './printable.js';

export interface Output {
  write(text: string): void;
  /** Resolves once what was written has been handed on (backpressure for large outputs); optional. */
  drained?(): Promise<void>;
}

export interface CliIO {
  stdout: Output;
  stderr: Output;
}

export class CliContext {
  readonly manager: LocalModelManager;
  /** The default engines (one per engine kind), on the binding chosen by --backend. */
  readonly engines: readonly BindingEngine[];
  readonly flags: ParsedFlags;
  readonly io: CliIO;
  readonly #binding: Promise<BindingSelection>;

  constructor(flags: ParsedFlags, io: CliIO) {
    this.flags = flags;
    this.io = io;
    const backend = flags.backend as BackendKind | 'auto' | undefined;
    if (backend !== undefined && backend !== 'native' && backend !== 'wasm' && backend !== 'auto') {
      throw new PhoenixError('E_INVALID_OPTION', `--backend must be native, wasm or auto, got ${JSON.stringify(backend)}`, { option: 'backend', usage: true });
    }
    // A PHOENIX_BACKEND naming no backend is the same usage error as such a --backend.
    try {
      requestedBackend(backend ? { backend } : {});
    } catch (error) {
      throw new PhoenixError('E_INVALID_OPTION', toPhoenixError(error).message, { option: 'PHOENIX_BACKEND', usage: true });
    }
    const threads = countFlag(flags, 'threads');
    this.#binding = loadBinding(backend ? { backend } : {});
    this.#binding.catch(() => undefined); // reported by the command that needs it
    // A bad --threads fails what runs the model (typed error, exit 1), not the backend report of `info`.
    const configured = this.#binding.then((selection) => {
      if (threads !== undefined) {
        selection.binding.setThreads(threads);
        const cpus = availableParallelism();
        // More threads than CPUs only adds waiting: 32 on 2 CPUs decoded ~25× slower than 2.
        if (threads > cpus) io.stderr.write(`phoenix-local: note: --threads ${threads} is more than the ${cpus} CPUs here; expect it to run slower than --threads ${cpus}\n`);
      }
      return selection;
    });
    configured.catch(() => undefined);
    // --kv-cache's value is checked by the core when a model loads (E_INVALID_OPTION).
    const kvCache = flags['kv-cache'] as KvCacheType | undefined;
    this.engines = defaultEngines({ binding: configured, ...(kvCache !== undefined ? { kvCache } : {}), ...(flags['no-mmap'] ? { useMmap: false } : {}) });
    this.manager = new LocalModelManager({
      modelsDir: flags['models-dir'],
      // Folders are described by the backend the engines run on: a forced one that cannot load lists
      // every model as `error` (E_BACKEND_UNAVAILABLE), not as available through another backend.
      binding: this.#binding,
      engines: [...this.engines],
      onProgress: (event) => this.#progress(event),
    });
  }

  binding(): Promise<BindingSelection> {
    return this.#binding;
  }

  /** A line of progress on stderr (unless --quiet). */
  note(text: string): void {
    if (!this.flags.quiet) this.io.stderr.write(`${printable(text)}\n`);
  }

  #progress(event: ModelProgressEvent): void {
    switch (event.kind) {
      case 'checksum':
        this.note(`checksumming ${path.basename(event.file)}: ${Math.round((100 * event.bytesDone) / Math.max(1, event.bytesTotal))}% of ${formatBytes(event.bytesTotal)}`);
        break;
      case 'load-start':
        this.note(`loading ${event.model} (${event.engine})…`);
        break;
      case 'load-done':
        this.note(`loaded ${event.model} in ${event.loadMs.toFixed(0)} ms`);
        break;
      case 'probe-done':
        this.note(`measured ${event.model}: prefill ${event.profile.prefillTokensPerSecond.toFixed(0)} tok/s, decode ${event.profile.decodeTokensPerSecond.toFixed(0)} tok/s`);
        break;
      case 'unload':
        break;
    }
  }

  /** Fails unless the models dir is an existing folder, naming it and where its path came from. */
  async requireModelsDir(): Promise<void> {
    const dir = this.manager.modelsDir;
    const from =
      this.flags['models-dir'] !== undefined ? '--models-dir' : process.env.PHOENIX_MODELS_DIR ? '$PHOENIX_MODELS_DIR' : 'the default ./models; give --models-dir';
    let info;
    try {
      info = await stat(dir);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' || code === 'ENOTDIR' ? 'does not exist' : `cannot be read (${code})`;
      throw new PhoenixError('E_MODEL_NOT_FOUND', `models dir ${dir} (${from}) ${why}`, { path: dir });
    }
    if (!info.isDirectory()) throw new PhoenixError('E_MODEL_NOT_FOUND', `models dir ${dir} (${from}) is not a folder`, { path: dir });
  }

  /** Whether `<model>` should be read as a path rather than a name in the models dir. */
  #isPath(arg: string): boolean {
    if (path.isAbsolute(arg) || arg.includes('/') || arg.includes(path.sep) || arg.startsWith('.')) return true;
    return !existsSync(path.join(this.manager.modelsDir, arg)) && existsSync(arg);
  }

  async metadata(arg: string | undefined): Promise<ModelMetadata> {
    const model = requireModelArg(arg);
    return this.#isPath(model) ? this.manager.getModelMetadataAt(model) : this.manager.getModelMetadata(model);
  }

  /** Any engine, for what does not depend on the model (option checks). */
  get anyEngine(): BindingEngine {
    return this.engines[0] as BindingEngine;
  }

  async load(arg: string | undefined): Promise<LoadedModel> {
    const model = requireModelArg(arg);
    return this.#isPath(model) ? this.manager.loadModelAt(model) : this.manager.loadModel(model);
  }
}

function requireModelArg(arg: string | undefined): string {
  if (!arg) throw new PhoenixError('E_INVALID_OPTION', 'missing <model> (a name in the models dir or a path to a model folder)', { usage: true });
  // A URL would otherwise be read as a relative path (`http:/host/...`): say what is meant instead.
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(arg)) {
    throw new PhoenixError('E_INVALID_OPTION', `<model> ${JSON.stringify(arg)} is a URL: phoenix-local runs local files only (download the model, then name its folder or .gguf file)`, { usage: true });
  }
  return arg;
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}
