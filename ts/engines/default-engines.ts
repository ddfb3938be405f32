/**
 * The engines registered by default (pipeline, CLI): one per engine kind the core reports, on one
 * shared binding. The core decides a model's kind; this list only says which class runs each.
 */
import type { BindingEngine, BindingEngineOptions } from './binding-engine.js';
import { MambaSSMEngine } from './mamba-engine.js';
import { TransformerEngine } from './transformer-engine.js';

/** A state-space engine (`ssm`, `hybrid`) and a transformer engine (`transformer`) on one binding. */
export function defaultEngines(options: BindingEngineOptions = {}): BindingEngine[] {
  return [new MambaSSMEngine(options), new TransformerEngine(options)];
}
