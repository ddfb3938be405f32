/**
 * Runs the core's attention decoders (Llama-style: `llama`, `qwen2`) on the Rust core.
 */
import type { RawEngineKind } from '../binding/types.js';
import type { ModelMetadata } from '../models/metadata.js';
import { BindingEngine, type BindingEngineOptions } from './binding-engine.js';

/** The engine kind this engine runs, as the core's family registry names it (`supportedFamilies()`). */
const ENGINE_KINDS: readonly RawEngineKind[] = ['transformer'];

/**
 * The engine for the core's transformer decoders: a KV cache per sequence that grows with the
 * context (its snapshot is the cache of the tokens seen so far), and a context limit
 * (`info.contextLength`): a prompt plus an asked-for `maxTokens` beyond it is `E_INVALID_OPTION`
 * before any work; without `maxTokens` the generation stops with finish reason `length` when the
 * context is full. Which `model_type`s that covers is the core's answer (`metadata.engine`).
 *
 * @example
 * ```ts
 * const engine = new TransformerEngine();
 * const model = await engine.loadModel(await manager.getModelMetadata('smollm2-135m'));
 * const { text } = await engine.predict(model, 'Once upon a time', { maxTokens: 32 });
 * model.dispose();
 * ```
 */
export class TransformerEngine extends BindingEngine {
  readonly name = 'transformer';

  constructor(options: BindingEngineOptions = {}) {
    super(options);
  }

  /** Whether the core reports the model's engine kind as `transformer`. */
  canLoad(metadata: ModelMetadata): boolean {
    return metadata.engine !== undefined && ENGINE_KINDS.includes(metadata.engine);
  }
}
