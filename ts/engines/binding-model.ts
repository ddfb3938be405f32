/**
 * A {@link LoadedModel} backed by a binding's `RawModel`. Owns the handle: `dispose()` frees the
 * weights in Rust now; a finaliser frees them if the caller forgets (safety net only).
 */
import { PhoenixError } from '../binding/errors.js';
import { refuseUnknownKeys } from './known-keys.js';
import type { RawModel, RawModelInfo } from '../binding/types.js';
import type { ModelMetadata } from '../models/metadata.js';
import type { LoadedModel } from './types.js';

const finalizer = new FinalizationRegistry<RawModel>((raw) => {
  try {
    raw.dispose();
  } catch {
    // Already disposed or the binding is gone: nothing left to free.
  }
});

/** A model loaded through a binding. Engines create these; callers use the {@link LoadedModel} interface. */
export class BindingLoadedModel implements LoadedModel {
  readonly name: string;
  readonly metadata: ModelMetadata;
  readonly info: RawModelInfo;
  readonly engine: string;
  #raw: RawModel | undefined;
  /** Calls running on the handle ({@link held}); a dispose meanwhile frees it when the last ends. */
  #running = 0;
  #disposeWhenIdle: RawModel | undefined;

  constructor(raw: RawModel, metadata: ModelMetadata, engine: string) {
    this.#raw = raw;
    this.name = metadata.name;
    this.metadata = metadata;
    this.engine = engine;
    this.info = raw.info();
    finalizer.register(this, raw, this);
  }

  get memoryBytes(): number {
    return this.info.weightBytes;
  }

  /**
   * True after `dispose()`, and once the binding lost the handle (a WASM instance that trapped takes
   * its models along): a manager then loads the model again instead of handing out a dead one.
   */
  get disposed(): boolean {
    return this.#raw === undefined || this.#raw.lost?.() != null;
  }

  /** The live handle; throws `E_INVALID_OPTION` once disposed (and the binding's error once lost). */
  get raw(): RawModel {
    if (!this.#raw) throw new PhoenixError('E_INVALID_OPTION', `model "${this.name}" is disposed`, { model: this.name });
    return this.#raw;
  }

  /**
   * Runs `work` on the live handle, which a `dispose()` meanwhile does not free before `work` ends: a
   * call made before the dispose finishes, even across its own awaits (a score tokenizes first), as
   * generations do. New calls after the dispose are refused at once.
   */
  async held<T>(work: (raw: RawModel) => Promise<T>): Promise<T> {
    const raw = this.raw;
    this.#running++;
    try {
      return await work(raw);
    } finally {
      if (--this.#running === 0 && this.#disposeWhenIdle) {
        const waiting = this.#disposeWhenIdle;
        this.#disposeWhenIdle = undefined;
        waiting.dispose();
      }
    }
  }

  async tokenize(text: string, options: { addSpecialTokens?: boolean } = {}): Promise<number[]> {
    if (typeof text !== 'string') throw new PhoenixError('E_INVALID_OPTION', 'tokenize(text): text must be a string', { option: 'text' });
    const addSpecialTokens = flag(options, 'addSpecialTokens', 'tokenize') ?? true;
    return this.held((raw) => raw.tokenize(text, addSpecialTokens));
  }

  snapshotLength(head: Uint8Array): number {
    return this.raw.snapshotLength(head);
  }

  detokenize(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): string {
    if (!Array.isArray(ids)) throw new PhoenixError('E_INVALID_OPTION', 'detokenize(ids): ids must be an array of token ids', { option: 'ids' });
    return this.raw.detokenize([...ids], flag(options, 'skipSpecialTokens', 'detokenize') ?? true);
  }

  dispose(): void {
    const raw = this.#raw;
    if (!raw) return;
    this.#raw = undefined;
    finalizer.unregister(this);
    // Calls still running keep the weights until they end (see `held`).
    if (this.#running > 0) this.#disposeWhenIdle = raw;
    else raw.dispose(); // a no-op for a lost handle (the binding's)
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** The one boolean option of `options` (an object with no other key), or undefined when absent. */
function flag<K extends string>(options: Partial<Record<K, boolean>>, key: K, call: string): boolean | undefined {
  refuseUnknownKeys(options, new Set([key]), `${call} option`);
  const value = options[key];
  if (value !== undefined && typeof value !== 'boolean') throw new PhoenixError('E_INVALID_OPTION', `${call}: option \`${key}\` must be a boolean`, { option: key });
  return value;
}
