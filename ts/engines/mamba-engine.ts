/**
 * Runs the core's state-space families (`mamba`, `falcon_mamba`, `mamba2`) and the hybrids whose
 * stack is mostly state-space layers (`granitemoehybrid`) on the Rust core.
 */
import type { RawEngineKind } from '../binding/types.js';
import type { ModelMetadata } from '../models/metadata.js';
import { BindingEngine, type BindingEngineOptions } from './binding-engine.js';

/** The engine kinds this engine runs, as the core's family registry names them (`supportedFamilies()`). */
const ENGINE_KINDS: readonly RawEngineKind[] = ['ssm', 'hybrid'];

/**
 * The engine for the core's state-space models: constant-size recurrent state, so generation memory
 * does not grow with context and a whole context can be snapshotted into a few hundred kilobytes.
 * Hybrids (Mamba-2 layers with a few attention layers) add those layers' KV cache to the state and
 * the attention's context limit.
 * Which `model_type`s and formats that covers is the core's answer (`metadata.engine`, from the
 * binding's `describeModel`), not a list kept here.
 *
 * @example
 * ```ts
 * const engine = new MambaSSMEngine();
 * const model = await engine.loadModel(await manager.getModelMetadata('phoenix-ssm-lite'));
 * const { text } = await engine.predict(model, 'Once upon a time', { maxTokens: 32 });
 * model.dispose();
 * ```
 */
export class MambaSSMEngine extends BindingEngine {
  readonly name = 'mamba-ssm';

  constructor(options: BindingEngineOptions = {}) {
    super(options);
  }

  /** Whether the core reports the model's engine kind as `ssm` or `hybrid` (metadata without one: `loadModel` asks the core). */
  canLoad(metadata: ModelMetadata): boolean {
    return metadata.engine !== undefined && ENGINE_KINDS.includes(metadata.engine);
  }
}
