/**
 * Shared machinery of engines that run on a phoenix binding (native or WASM): load, generate,
 * stream and score. Subclasses only say which models they accept.
 */
import { PhoenixError } from '../binding/errors.js';
// Type-only: load.ts is Node-only (fs, module); it is imported lazily below so this module graph
// also runs in browsers, where a binding is always passed in.
import type { BindingSelection } from '../binding/load.js';
import type { KvCacheType, RawLoadOptions } from '../binding/types.js';
import type { ModelMetadata } from '../models/metadata.js';
import { BindingLoadedModel } from './binding-model.js';
import { toRawMessages } from './chat.js';
import { BindingGenerationStream, FailedGenerationStream } from './generation-stream.js';
import { optionKeys, refuseUnknownKeys } from './known-keys.js';
import { toRawOptions, toRawPrompt } from './options.js';
import type {
  ChatMessage,
  ChatPrompt,
  GenerationInput,
  GenerationOptions,
  GenerationResult,
  GenerationStream,
  InferenceEngine,
  LoadedModel,
  ScoreOptions,
  ScoreResult,
} from './types.js';
import { listenAbort, unlistenAbort } from '../util/abort-listeners.js';

/** Options shared by binding-backed engines. */
export interface BindingEngineOptions {
  /**
   * The binding to use (from `loadBinding()`); default: the process-wide binding
   * (`getDefaultBinding()`, honouring `PHOENIX_BACKEND`).
   */
  binding?: BindingSelection | Promise<BindingSelection>;
  /**
   * What the KV cache of an attention model (transformer or hybrid) this engine loads holds: `f32`,
   * or `f16` (half the memory; decode reads half the bytes through attention; keys and values rounded
   * once as stored, as llama.cpp's default cache). Default `f32`: logits as close to a float64
   * reference as the weights allow, and the same on every binding. The loaded model's
   * `info.architecture.kvCacheDtype` says which it got. SSM-only models have no KV cache.
   */
  kvCache?: KvCacheType;
  /**
   * Native binding: memory-map weight files (default `true`, as llama.cpp: no copy, quick loads, pages
   * shared with the OS cache), or read them into memory (`false`, llama.cpp's `--no-mmap`): then
   * rewriting a model's file in place (`cp` over it) while it is loaded cannot kill the process
   * (`SIGBUS` on a truncated mapping). WASM holds the files in memory either way.
   */
  useMmap?: boolean;
}

const ENGINE_OPTION_KEYS = optionKeys<BindingEngineOptions>({ binding: true, kvCache: true, useMmap: true });
const SCORE_OPTION_KEYS = optionKeys<ScoreOptions>({ includeLogits: true, signal: true });
const RENDER_CHAT_OPTION_KEYS: ReadonlySet<string> = new Set(['addGenerationPrompt']);

/**
 * Base of engines that run on a phoenix binding: implements loading, `predict`, `stream` and
 * `score`; a subclass names itself and decides which models it accepts (`canLoad`).
 */
export abstract class BindingEngine implements InferenceEngine {
  abstract readonly name: string;
  readonly #binding: BindingEngineOptions['binding'];
  readonly #loadOptions: RawLoadOptions;

  /**
   * `kvCache` is checked when a model loads (`E_INVALID_OPTION` from `loadModel`).
   * @throws `E_INVALID_OPTION` for an option it does not know (a misspelt `kvcache` is not ignored).
   */
  constructor(options: BindingEngineOptions = {}) {
    refuseUnknownKeys(options, ENGINE_OPTION_KEYS, 'engine option');
    this.#binding = options.binding;
    this.#loadOptions = {
      ...(options.kvCache === undefined ? {} : { kvCache: options.kvCache }),
      ...(options.useMmap === undefined ? {} : { useMmap: options.useMmap }),
    };
  }

  abstract canLoad(metadata: ModelMetadata): boolean;

  /** The binding this engine runs on (loads the default one on first use). */
  async binding(): Promise<BindingSelection> {
    if (this.#binding) return this.#binding;
    const { getDefaultBinding } = await import('../binding/load.js');
    return getDefaultBinding();
  }

  async loadModel(metadata: ModelMetadata): Promise<LoadedModel> {
    const source = metadata.source ?? metadata.path;
    // Metadata built by hand may not say which engine kind runs the model: the core does (from
    // config.json, without reading weights), and its errors are the ones the load would give.
    const described = metadata.engine === undefined ? await this.#described(metadata, source) : metadata;
    if (!this.canLoad(described)) {
      throw new PhoenixError(
        'E_UNSUPPORTED_MODEL',
        `engine ${this.name} cannot run model "${metadata.name}" (${described.engine ?? 'unknown'} engine kind, model_type "${described.modelType}", format ${described.format})`,
        { model: metadata.name, modelType: described.modelType },
      );
    }
    const { binding } = await this.binding();
    const raw = await binding.loadModel(source, this.#loadOptions);
    return new BindingLoadedModel(raw, described, this.name);
  }

  /** `metadata` with the core's family, engine kind, model type and format for `source`. */
  async #described(metadata: ModelMetadata, source: NonNullable<ModelMetadata['source']>): Promise<ModelMetadata> {
    const { binding } = await this.binding();
    const { modelType, family, engine, format } = await binding.describeModel(source);
    return { ...metadata, modelType, family, engine, format };
  }

  /**
   * Checks this engine's load options (`kvCache`, `useMmap`) with the core, without a model: a caller
   * that loads models later (a queue worker) can refuse a bad value at start, not on every job.
   * @throws `E_INVALID_OPTION` naming the option.
   */
  async checkLoadOptions(): Promise<void> {
    const { binding } = await this.binding();
    binding.checkLoadOptions(this.#loadOptions);
  }

  /**
   * Checks generation options without a model (types and ranges; only stop-token ids need the model's
   * vocabulary), so a caller can refuse bad options before loading one.
   * @throws `E_INVALID_OPTION` naming the option.
   */
  async checkOptions(options: GenerationOptions): Promise<void> {
    const { binding } = await this.binding();
    binding.checkGenerateOptions(toRawOptions(options));
  }

  /** Never throws: every error (options, prompt, model) surfaces from the iterator and from `result`. */
  stream(model: LoadedModel, input: GenerationInput, options: GenerationOptions = {}): GenerationStream {
    const startedAt = performance.now();
    try {
      const own = this.#own(model);
      const opts = options ?? {};
      const rawOptions = toRawOptions(opts);
      const prompt = toRawPrompt(input, opts.state !== undefined);
      const generation = own.raw.generate(prompt, rawOptions, opts.state ?? null);
      return new BindingGenerationStream(generation, { signal: opts.signal, returnState: opts.returnState, startedAt });
    } catch (error) {
      return new FailedGenerationStream(error);
    }
  }

  async predict(model: LoadedModel, input: GenerationInput, options: GenerationOptions = {}): Promise<GenerationResult> {
    return settleAndDispose(this.stream(model, input, options));
  }

  /** Never throws: every error (no template, messages, options) surfaces from the iterator and from `result`. */
  chatStream(model: LoadedModel, messages: readonly ChatMessage[], options: GenerationOptions = {}): GenerationStream {
    const startedAt = performance.now();
    try {
      const own = this.#own(model);
      const opts = options ?? {};
      const generation = own.raw.generateChat(toRawMessages(messages), toRawOptions(opts), opts.state ?? null);
      return new BindingGenerationStream(generation, { signal: opts.signal, returnState: opts.returnState, startedAt });
    } catch (error) {
      return new FailedGenerationStream(error);
    }
  }

  async chat(model: LoadedModel, messages: readonly ChatMessage[], options: GenerationOptions = {}): Promise<GenerationResult> {
    return settleAndDispose(this.chatStream(model, messages, options));
  }

  /** The core's rendering of `messages` with the model's template (what {@link chat} feeds the model). */
  renderChat(model: LoadedModel, messages: readonly ChatMessage[], options: { addGenerationPrompt?: boolean } = {}): ChatPrompt {
    refuseUnknownKeys(options, RENDER_CHAT_OPTION_KEYS, 'renderChat option');
    const addGenerationPrompt = options.addGenerationPrompt ?? true;
    if (typeof addGenerationPrompt !== 'boolean') {
      throw new PhoenixError('E_INVALID_OPTION', 'renderChat: option `addGenerationPrompt` must be a boolean', { option: 'addGenerationPrompt' });
    }
    return this.#own(model).raw.renderChat(toRawMessages(messages), addGenerationPrompt);
  }

  /** Log-probs, log-likelihood and perplexity come from the core; logits only with `includeLogits`. */
  async score(model: LoadedModel, input: GenerationInput, options: ScoreOptions = {}): Promise<ScoreResult> {
    const own = this.#own(model);
    refuseUnknownKeys(options, SCORE_OPTION_KEYS, 'score option');
    const includeLogits = options.includeLogits ?? false;
    if (typeof includeLogits !== 'boolean') {
      throw new PhoenixError('E_INVALID_OPTION', 'score: option `includeLogits` must be a boolean', { option: 'includeLogits' });
    }
    const { signal } = options;
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw new PhoenixError('E_INVALID_OPTION', 'score: option `signal` must be an AbortSignal', { option: 'signal' });
    const vocabSize = own.info.vocabSize;
    const prompt = toRawPrompt(input);
    // Held across the tokenization and the binding's await: a dispose (an unload) meanwhile lets it finish.
    const { ids, scored } = await own.held(async (raw) => {
      const ids = prompt.ids ?? (await raw.tokenize(prompt.text ?? '', true));
      // The core checks the flag between the layers of each prefill piece: a long scoring stops within a layer's time.
      const cancel = signal ? new (await this.binding()).binding.CancelFlag() : undefined;
      const onAbort = (): void => cancel?.cancel();
      if (signal?.aborted) onAbort();
      if (signal) listenAbort(signal, onAbort);
      try {
        return { ids, scored: await raw.score(ids, { includeLogits }, cancel) };
      } finally {
        if (signal) unlistenAbort(signal, onAbort);
      }
    });
    const result: ScoreResult = {
      ids,
      vocabSize,
      tokenLogprobs: scored.tokenLogprobs,
      logLikelihood: scored.logLikelihood,
      perplexity: scored.perplexity,
      nextArgmax: scored.nextArgmax,
    };
    if (includeLogits) result.logits = rowsOf(scored.logits, ids.length, vocabSize);
    return result;
  }

  #own(model: LoadedModel): BindingLoadedModel {
    if (!(model instanceof BindingLoadedModel)) {
      throw new PhoenixError('E_INVALID_OPTION', `engine ${this.name} was given a model it did not load`, { option: 'model' });
    }
    return model;
  }
}

/**
 * Runs `stream` to its end and frees its state as soon as the result (with `state`, when asked for)
 * is built: nobody can reach the stream after `predict` / `chat` return.
 */
async function settleAndDispose(stream: GenerationStream): Promise<GenerationResult> {
  try {
    for await (const _ of stream) {
      // the stream accumulates text and ids itself
    }
    return await stream.result;
  } finally {
    stream.dispose?.();
  }
}

/** `count` rows of `width` values, as views of the binding's flat array (no copy). */
function rowsOf(flat: Float32Array | undefined, count: number, width: number): Float32Array[] {
  if (!flat || flat.length !== count * width) {
    throw new PhoenixError('E_INTERNAL', `binding returned ${flat?.length ?? 'no'} logits for ${count} ids × vocab ${width}`);
  }
  return Array.from({ length: count }, (_, i) => flat.subarray(i * width, (i + 1) * width));
}
