/**
 * Runs the core's state-space families (Mamba-1 today: `mamba`, `falcon_mamba`) on the Rust core.
 */
import type { RawEngineKind } from '../binding/types.js';
import type { ModelMetadata } from '../models/metadata.js';
import { BindingEngine, type BindingEngineOptions } from './binding-engine.js';

/** The engine kind this engine runs, as the core's family registry names it (`supportedFamilies()`). */
const ENGINE_KIND: RawEngineKind = 'ssm';

/**
 * The engine for the core's state-space models: constant-size recurrent state, so generation memory
 * does not grow with context and a whole context can be snapshotted into a few hundred kilobytes.
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

  /** Whether the core reports the model's engine kind as `ssm` (metadata without one: `loadModel` asks the core). */
  canLoad(metadata: ModelMetadata): boolean {
    return metadata.engine === ENGINE_KIND;
  }
}
