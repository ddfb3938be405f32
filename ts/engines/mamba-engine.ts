/**
 * Runs Mamba-family selective state-space models (`mamba`, `falcon_mamba`) on the Rust core.
 */
import type { ModelFormat, ModelMetadata } from '../models/metadata.js';
import { BindingEngine, type BindingEngineOptions } from './binding-engine.js';

/** `model_type`s the Mamba engine runs. */
export const MAMBA_MODEL_TYPES: readonly string[] = ['mamba', 'falcon_mamba'];
const FORMATS: readonly string[] = ['hf-safetensors', 'hf-safetensors-sharded', 'state-spaces-pth'] satisfies ModelFormat[];

/**
 * The engine for Mamba-1 models: constant-size recurrent state, so generation memory does not grow
 * with context and a whole context can be snapshotted into a few hundred kilobytes.
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

  canLoad(metadata: ModelMetadata): boolean {
    return MAMBA_MODEL_TYPES.includes(metadata.modelType) && FORMATS.includes(metadata.format);
  }
}
