/**
 * Shared machinery of engines that run on a phoenix binding (native or WASM): load, generate,
 * stream and score. Subclasses only say which models they accept.
 */
import { PhoenixError } from '../binding/errors.js';
// Type-only: load.ts is Node-only (fs, module); it is imported lazily below so this module graph
// also runs in browsers, where a binding is always passed in.
import type { BindingSelection } from '../binding/load.js';
import type { ModelMetadata } from '../models/metadata.js';
import { BindingLoadedModel } from './binding-model.js';
import { BindingGenerationStream, FailedGenerationStream } from './generation-stream.js';
import { toRawOptions, toRawPrompt } from './options.js';
import type {
  GenerationInput,
  GenerationOptions,
  GenerationResult,
  GenerationStream,
  InferenceEngine,
  LoadedModel,
  ScoreResult,
} from './types.js';

/** Options shared by binding-backed engines. */
export interface BindingEngineOptions {
  /**
   * The binding to use (from `loadBinding()`); default: the process-wide binding
   * (`getDefaultBinding()`, honouring `PHOENIX_BACKEND`).
   */
  binding?: BindingSelection | Promise<BindingSelection>;
}

/**
 * Base of engines that run on a phoenix binding: implements loading, `predict`, `stream` and
 * `score`; a subclass names itself and decides which models it accepts (`canLoad`).
 */
export abstract class BindingEngine implements InferenceEngine {
  abstract readonly name: string;
  readonly #binding: BindingEngineOptions['binding'];

  constructor(options: BindingEngineOptions = {}) {
    this.#binding = options.binding;
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
    const raw = await binding.loadModel(source);
    return new BindingLoadedModel(raw, described, this.name);
  }

  /** `metadata` with the core's family, engine kind, model type and format for `source`. */
  async #described(metadata: ModelMetadata, source: NonNullable<ModelMetadata['source']>): Promise<ModelMetadata> {
    const { binding } = await this.binding();
    const { modelType, family, engine, format } = await binding.describeModel(source);
    return { ...metadata, modelType, family, engine, format };
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
    const stream = this.stream(model, input, options);
    for await (const _ of stream) {
      // the stream accumulates text and ids itself
    }
    return stream.result;
  }

  async score(model: LoadedModel, input: GenerationInput): Promise<ScoreResult> {
    const own = this.#own(model);
    const vocabSize = own.info.vocabSize;
    const prompt = toRawPrompt(input);
    const ids = prompt.ids ?? (await own.tokenize(prompt.text ?? '', { addSpecialTokens: true }));
    const flat = await own.raw.logits(ids);
    if (flat.length !== ids.length * vocabSize) {
      throw new PhoenixError('E_INTERNAL', `binding returned ${flat.length} logits for ${ids.length} ids × vocab ${vocabSize}`);
    }
    const logits = ids.map((_, i) => flat.subarray(i * vocabSize, (i + 1) * vocabSize));
    const tokenLogprobs = ids.slice(1).map((id, i) => logSoftmaxAt(logits[i] as Float32Array, id));
    const perplexity = tokenLogprobs.length ? Math.exp(-tokenLogprobs.reduce((a, b) => a + b, 0) / tokenLogprobs.length) : null;
    return { ids, vocabSize, logits, tokenLogprobs, perplexity };
  }

  #own(model: LoadedModel): BindingLoadedModel {
    if (!(model instanceof BindingLoadedModel)) {
      throw new PhoenixError('E_INVALID_OPTION', `engine ${this.name} was given a model it did not load`, { option: 'model' });
    }
    return model;
  }
}

/** `log softmax(row)[index]`, computed stably in float64. */
function logSoftmaxAt(row: Float32Array, index: number): number {
  let max = -Infinity;
  for (const v of row) if (v > max) max = v;
  let sum = 0;
  for (const v of row) sum += Math.exp(v - max);
  return (row[index] as number) - max - Math.log(sum);
}
